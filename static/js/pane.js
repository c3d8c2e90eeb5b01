// The message pane: a channel's history in pages (older ones as the reader scrolls up), new
// messages merged in id order from every source (live events, catch-up, our own sends),
// and the typing indicator.

import { markRead } from './read.js';
import { api, describeError } from './api.js';
import { $, state, announceMessage, announceStatus } from './state.js';
import {
  messageItem, updateMessageItem, cancelConfirm, dateDivider, authorName, h,
} from './views.js';
import { messageContext } from './actions.js';
import { closeThread, threadRootId, threadRootUpdated } from './thread.js';
import {
  renderChannels, renderChannelMeta, loadMembers, closeSidebar, channelTitle,
} from './sidebar.js';

const PAGE_SIZE = 50;
const CATCH_UP_PAGE = 100;
const TYPING_SHOWN_MS = 6000;
const NEAR_BOTTOM_PX = 120;
const GROUP_WITHIN_MS = 5 * 60 * 1000;
const MAX_UNREAD_PAGES = 40; // how far back "jump to first unread" may load

export function showChannelView(open) {
  $('channel-view').hidden = !open;
  $('no-channel').hidden = open;
}

export async function openChannel(id) {
  if (!state.channels.has(id)) return;
  closeSidebar();
  // The reader's place before this visit (the server's read state, kept in step by
  // read.js and read_updated): the "New messages" divider goes after it.
  const known = state.channels.get(id);
  const unreadCount = state.unread.get(id) || 0;
  const view = {
    id, oldest: null, newest: null, hasOlder: false, loadingOlder: false, loaded: false, catchUpPending: false,
    unreadAfter: unreadCount > 0 ? (known.last_read_id ?? 0) : null,
    unreadCount,
  };
  document.dispatchEvent(new CustomEvent('chat:panel', { detail: 'channel' }));
  state.current = id;
  state.view = view;
  state.messages = new Map();
  closeThread();
  sessionStorage.setItem('chat.channel', String(id)); // this tab's
  localStorage.setItem('chat.channel', String(id)); // a new tab's
  state.unread.delete(id);
  state.mentions.delete(id);
  clearTyping();
  renderChannels();

  const channel = state.channels.get(id);
  $('channel-title').textContent = channelTitle(channel);
  const dm = channel.kind === 'dm';
  $('add-member-toggle').hidden = dm; // nobody joins a DM or leaves it
  $('leave-channel').hidden = dm;
  $('message-input').placeholder = `Message ${channelTitle(channel)}…`;
  renderChannelMeta();
  $('add-member-form').hidden = true;
  $('add-member-toggle').setAttribute('aria-expanded', 'false');
  $('add-member-status').textContent = '';
  cancelConfirm($('leave-channel'), $('channel-status'));
  $('message-list').replaceChildren();
  $('load-older').hidden = true;
  $('history-start').hidden = true;
  $('jump-latest').hidden = true;
  $('jump-unread').hidden = true;
  $('composer-error').textContent = '';
  showChannelView(true);
  loadMembers(id);

  try {
    const page = await api.messages(id, { limit: PAGE_SIZE });
    if (state.view !== view) return; // another channel was opened meanwhile
    for (const message of page.messages) insertMessage(message);
    view.hasOlder = page.has_more;
    view.loaded = true;
    renderHistoryTop();
    placeUnreadDivider();
    scrollToBottom();
    renderJumpUnread();
    // Live events that arrive while the page loads are merged in id order. If the socket
    // (re)connected meanwhile, what was posted between the page and the connection is
    // fetched now.
    if (view.catchUpPending) await catchUp(view);
    // A short page that does not fill the pane cannot be scrolled up: fetch older ones
    // until it can.
    const scroller = $('messages');
    let oldest = null;
    while (state.view === view && view.hasOlder && view.oldest !== oldest
      && scroller.scrollHeight <= scroller.clientHeight) {
      oldest = view.oldest;
      await loadOlder();
    }
  } catch (err) {
    if (state.view === view) announceStatus(`Could not load messages. ${describeError(err)}`);
  }
}

// ---------------------------------------------------------------------------------------
// "New messages": a divider above the first message that arrived since the reader's last
// visit, and a button to jump up to it while it is off screen.

/** The first unread message shown: after the read position, not the reader's own. */
function firstUnreadItem(view) {
  return [...$('message-list').children].find((li) => li.classList.contains('message')
    && Number(li.dataset.id) > view.unreadAfter && Number(li.dataset.userId) !== state.me.id) || null;
}

/** Whether the message just before the first unread one is loaded (or there is none). */
function unreadStartKnown(view) {
  return !view.hasOlder || (view.oldest !== null && view.oldest <= view.unreadAfter);
}

function placeUnreadDivider() {
  const view = state.view;
  if (!view || view.unreadAfter === null) return;
  const list = $('message-list');
  list.querySelector(':scope > .unread-divider')?.remove();
  const first = unreadStartKnown(view) ? firstUnreadItem(view) : null;
  if (!first) return;
  list.insertBefore(h('li', { class: 'unread-divider', id: 'unread-divider' },
    h('span', {}, 'New messages')), first);
  regroup(list);
}

/** Shows "Jump to first unread" while the divider is above the visible part. */
function renderJumpUnread() {
  const view = state.view;
  const button = $('jump-unread');
  if (!view || view.unreadAfter === null || view.unreadSeen) {
    button.hidden = true;
    return;
  }
  const divider = $('unread-divider');
  let above;
  if (divider) {
    const scroller = $('messages');
    above = divider.getBoundingClientRect().bottom < scroller.getBoundingClientRect().top + 4;
    if (!above) view.unreadSeen = true; // it has been on screen: no need to offer it again
  } else {
    above = !unreadStartKnown(view); // older than the pages loaded
  }
  const count = view.unreadCount;
  button.textContent = `↑ Jump to first unread${count ? ` (${count} new)` : ''}`;
  button.hidden = !above;
}

export async function jumpToFirstUnread() {
  const view = state.view;
  if (!view || view.unreadAfter === null) return;
  let pages = 0;
  while (state.view === view && !unreadStartKnown(view) && pages < MAX_UNREAD_PAGES) {
    await loadOlder();
    pages += 1;
  }
  if (state.view !== view) return;
  const divider = $('unread-divider');
  if (!divider) {
    announceStatus('The first unread message is further back than the history loaded.');
    return;
  }
  divider.scrollIntoView({ block: 'start' });
  pinned = isNearBottom();
  view.unreadSeen = true;
  $('jump-unread').hidden = true;
  const first = firstUnreadItem(view);
  if (first) first.focus({ preventScroll: true });
}

function renderHistoryTop() {
  const view = state.view;
  $('load-older').hidden = !view || !view.hasOlder;
  $('history-start').hidden = !view || !view.loaded || view.hasOlder;
}

export async function loadOlder() {
  const view = state.view;
  if (!view || !view.hasOlder || view.loadingOlder || view.oldest === null) return;
  view.loadingOlder = true;
  const button = $('load-older');
  button.textContent = 'Loading…';
  const scroller = $('messages');
  try {
    const page = await api.messages(view.id, { before: view.oldest, limit: PAGE_SIZE });
    if (state.view !== view) return;
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    for (const message of page.messages) insertMessage(message);
    view.hasOlder = page.has_more;
    placeUnreadDivider();
    scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep the reader's place
    renderJumpUnread();
  } catch (err) {
    announceStatus(`Could not load older messages. ${describeError(err)}`);
  } finally {
    view.loadingOlder = false;
    button.textContent = 'Load older messages';
    renderHistoryTop();
  }
}

/** Fetches everything after the newest message shown (after a reconnect, say). */
export async function catchUp(view) {
  if (!view.loaded) {
    // The first page is still on its way; it may predate the connection: catch up after it.
    view.catchUpPending = true;
    return;
  }
  let more = true;
  while (more && state.view === view) {
    const page = await api.messages(view.id, { after: view.newest ?? 0, limit: CATCH_UP_PAGE });
    if (state.view !== view) return;
    for (const message of page.messages) showNewMessage(message, { announce: true });
    more = page.has_more && page.messages.length > 0;
  }
}

/** Puts a top-level message in id order; false when it is already shown (or a reply). */
function insertMessage(message) {
  const view = state.view;
  if (!view || message.channel_id !== view.id || message.thread_id) return false;
  const list = $('message-list');
  if (document.getElementById(`message-${message.id}`)) return false;
  state.messages.set(message.id, message);
  const item = messageItem(message, messageContext(false));
  if (view.newest === null || message.id > view.newest) {
    list.append(item);
  } else {
    const after = [...list.children].find((li) => li.dataset.id && Number(li.dataset.id) > message.id);
    list.insertBefore(item, after || null);
  }
  view.newest = view.newest === null ? message.id : Math.max(view.newest, message.id);
  view.oldest = view.oldest === null ? message.id : Math.min(view.oldest, message.id);
  noteSeen(message.channel_id, message.id);
  markRead(view.id, view.newest);
  regroup(list);
  return true;
}

/**
 * Date dividers and grouping: a divider before each day's first message; a message by the
 * author of the one just above, within five minutes, is `continued` (no header of its own).
 */
export function regroup(list) {
  for (const divider of list.querySelectorAll(':scope > .date-divider')) divider.remove();
  let previous = null;
  let day = null;
  for (const item of [...list.children]) {
    if (!item.classList.contains('message')) {
      previous = null; // a notice breaks a group
      continue;
    }
    const created = new Date(item.dataset.created);
    const thisDay = created.toDateString();
    if (thisDay !== day) {
      list.insertBefore(dateDivider(created), item);
      day = thisDay;
      previous = null;
    }
    const continued = previous !== null
      && previous.dataset.userId === item.dataset.userId
      && created - new Date(previous.dataset.created) < GROUP_WITHIN_MS;
    item.classList.toggle('continued', continued);
    previous = item;
  }
}

/** Every shown copy of a message (timeline, thread panel), with the context it was built in. */
function shownItems(id) {
  return [...document.querySelectorAll(`.message[data-id="${id}"]`)];
}

function refreshShown(message) {
  for (const item of shownItems(message.id)) {
    updateMessageItem(item, message, messageContext(item.closest('#thread-panel') !== null));
  }
}

/** An edit, a new reply count (message_updated, or our own PATCH's answer). */
export function applyUpdate(message) {
  if (!state.messages.has(message.id)) return;
  const known = state.messages.get(message.id);
  Object.assign(known, message);
  refreshShown(known);
  threadRootUpdated(known.id);
}

/** A message is gone (message_deleted, or our own DELETE). */
export function applyDelete({ id }) {
  state.messages.delete(id);
  for (const item of shownItems(id)) {
    const list = item.parentElement;
    const hadFocus = item.contains(document.activeElement);
    const next = item.nextElementSibling?.classList.contains('message') ? item.nextElementSibling
      : item.previousElementSibling?.classList.contains('message') ? item.previousElementSibling : null;
    item.remove();
    if (list.id === 'message-list') regroup(list);
    if (hadFocus) (next || $('message-input')).focus();
  }
  if (threadRootId() === id) closeThread('This thread was deleted.');
}

/** Someone reacted, or took a reaction back. */
export function applyReaction({ message_id: id, emoji, user_id: userId }, added) {
  const message = state.messages.get(id);
  if (!message) return;
  message.reactions = message.reactions || [];
  let entry = message.reactions.find((r) => r.emoji === emoji);
  if (added) {
    if (!entry) {
      entry = { emoji, count: 0, user_ids: [] };
      message.reactions.push(entry);
    }
    if (!entry.user_ids.includes(userId)) entry.user_ids.push(userId);
  } else if (entry) {
    entry.user_ids = entry.user_ids.filter((u) => u !== userId);
  }
  if (entry) entry.count = entry.user_ids.length;
  message.reactions = message.reactions.filter((r) => r.count > 0);
  refreshShown(message);
}

export function noteSeen(channelId, id) {
  if (id > (state.lastSeen.get(channelId) || 0)) state.lastSeen.set(channelId, id);
}

function isNearBottom() {
  const s = $('messages');
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
}

function scrollToBottom() {
  const s = $('messages');
  s.scrollTop = s.scrollHeight;
  pinned = true;
  $('jump-latest').hidden = true;
}

// Whether the reader is at the bottom: content that grows above (an image loading, an edit,
// a reaction) keeps them there.
let pinned = true;

/** A message that arrived after the pane was loaded (live, catch-up, or our own send). */
export function showNewMessage(message, { announce }) {
  const follow = isNearBottom() || message.user_id === state.me.id;
  if (!insertMessage(message)) return;
  if (follow) scrollToBottom();
  else $('jump-latest').hidden = false;
  stopTyping(message.user_id);
  if (announce && message.user_id !== state.me.id) {
    const files = message.files?.length;
    const extra = files ? ` (${files} ${files === 1 ? 'file' : 'files'})` : '';
    announceMessage(`${authorName(message)}: ${message.content || ''}${extra}`);
  }
}

// ---------------------------------------------------------------------------------------
// Typing indicator

export function showTyping(userId) {
  if (userId === state.me.id) return;
  clearTimeout(state.typing.get(userId));
  state.typing.set(userId, setTimeout(() => stopTyping(userId), TYPING_SHOWN_MS));
  renderTyping();
}

export function stopTyping(userId) {
  if (!state.typing.has(userId)) return;
  clearTimeout(state.typing.get(userId));
  state.typing.delete(userId);
  renderTyping();
}

export function clearTyping() {
  for (const timer of state.typing.values()) clearTimeout(timer);
  state.typing.clear();
  renderTyping();
}

function renderTyping() {
  const members = state.current ? state.members.get(state.current) : null;
  const names = [...state.typing.keys()].map((id) => members?.get(id)?.display_name || members?.get(id)?.username || 'Someone');
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  $('typing').textContent = text;
}

export function setupPane() {
  const scroller = $('messages');
  $('load-older').addEventListener('click', loadOlder);
  // Only the reader scrolling up unpins. A scroll event read as "not at the bottom" can also
  // come from our own re-pinning while more content grows (three images getting their
  // previews at once): that one must not unpin, or the list stops following.
  let lastTop = scroller.scrollTop;
  scroller.addEventListener('scroll', () => {
    const top = scroller.scrollTop;
    if (top < 200) loadOlder();
    if (isNearBottom()) pinned = true;
    else if (top < lastTop) pinned = false;
    lastTop = top;
    if (pinned) $('jump-latest').hidden = true;
    if (!$('jump-unread').hidden) renderJumpUnread();
  }, { passive: true });
  // The list or the pane changed size (images, edits, the thread panel opening): stay at the
  // bottom if the reader was there.
  const keepPinned = new ResizeObserver(() => {
    if (pinned && state.view?.loaded) scroller.scrollTop = scroller.scrollHeight;
  });
  keepPinned.observe($('message-list'));
  keepPinned.observe(scroller);
  scroller.addEventListener('keydown', (e) => moveBetweenMessages(e, scroller));
  $('jump-unread').addEventListener('click', jumpToFirstUnread);
  $('jump-latest').addEventListener('click', () => {
    scrollToBottom();
    scroller.focus();
  });
}

/**
 * The keyboard in a message list: Up and Down go from message to message (the messages are
 * focusable, not in the tab order); Tab from a message reaches its actions; E edits one's
 * own message, Delete deletes it, T opens its thread, R reacts.
 */
export function moveBetweenMessages(event, scroller) {
  if (event.target.closest('textarea, input, .reactions, .attachments, .message-actions')) return;
  const items = [...scroller.querySelectorAll('.message')];
  if (items.length === 0) return;
  const current = event.target.closest('.message');
  const index = items.indexOf(current);
  const inThread = scroller.closest('#thread-panel') !== null;
  let next = null;
  if (event.key === 'ArrowUp') next = index === -1 ? items.at(-1) : items[Math.max(0, index - 1)];
  else if (event.key === 'ArrowDown') next = index === -1 ? null : items[Math.min(items.length - 1, index + 1)];
  else if (event.key === 'Home' && current) next = items[0];
  else if (event.key === 'End' && current) next = items.at(-1);
  if (next) {
    event.preventDefault();
    next.focus();
    return;
  }
  if (!current || event.altKey || event.ctrlKey || event.metaKey) return;
  const message = state.messages.get(Number(current.dataset.id));
  if (!message) return;
  const ctx = messageContext(inThread);
  const mine = message.user_id === state.me.id;
  const key = event.key.toLowerCase();
  if (key === 'e' && mine) ctx.edit(message, current);
  else if ((event.key === 'Delete' || event.key === 'Backspace') && mine) ctx.remove(message, current);
  else if (key === 't' && !inThread) ctx.openThread(message);
  else if (key === 'r') ctx.pickReaction(message, current.querySelector('.action-react'));
  else return;
  event.preventDefault();
}
