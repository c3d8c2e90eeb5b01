// The message pane: a channel's history in pages (older ones as the reader scrolls up), new
// messages merged in id order from every source (live events, catch-up, our own sends),
// and the typing indicator.

import { api, describeError } from './api.js';
import { $, state, announceMessage, announceStatus } from './state.js';
import { messageItem, cancelConfirm } from './views.js';
import { fileActions } from './filecards.js';
import { renderChannels, renderChannelMeta, loadMembers, closeSidebar } from './sidebar.js';

const PAGE_SIZE = 50;
const CATCH_UP_PAGE = 100;
const TYPING_SHOWN_MS = 6000;
const NEAR_BOTTOM_PX = 120;

export function showChannelView(open) {
  $('channel-view').hidden = !open;
  $('no-channel').hidden = open;
}

export async function openChannel(id) {
  if (!state.channels.has(id)) return;
  closeSidebar();
  const view = {
    id, oldest: null, newest: null, hasOlder: false, loadingOlder: false, loaded: false, catchUpPending: false,
  };
  state.current = id;
  state.view = view;
  sessionStorage.setItem('chat.channel', String(id));
  state.unread.delete(id);
  clearTyping();
  renderChannels();

  const channel = state.channels.get(id);
  $('channel-title').textContent = `#${channel.name}`;
  renderChannelMeta();
  $('add-member-form').hidden = true;
  $('add-member-toggle').setAttribute('aria-expanded', 'false');
  $('add-member-status').textContent = '';
  cancelConfirm($('leave-channel'), $('channel-status'));
  $('message-list').replaceChildren();
  $('load-older').hidden = true;
  $('history-start').hidden = true;
  $('jump-latest').hidden = true;
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
    scrollToBottom();
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

function renderHistoryTop() {
  const view = state.view;
  $('load-older').hidden = !view || !view.hasOlder;
  $('history-start').hidden = !view || !view.loaded || view.hasOlder;
}

async function loadOlder() {
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
    scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep the reader's place
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

/** Puts a message in id order; false when it is already shown. */
function insertMessage(message) {
  const view = state.view;
  if (!view || message.channel_id !== view.id) return false;
  const list = $('message-list');
  if (document.getElementById(`message-${message.id}`)) return false;
  const item = messageItem(message, fileActions);
  if (view.newest === null || message.id > view.newest) {
    list.append(item);
  } else {
    const after = [...list.children].find((li) => li.dataset.id && Number(li.dataset.id) > message.id);
    list.insertBefore(item, after || null);
  }
  view.newest = view.newest === null ? message.id : Math.max(view.newest, message.id);
  view.oldest = view.oldest === null ? message.id : Math.min(view.oldest, message.id);
  noteSeen(message.channel_id, message.id);
  return true;
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
  $('jump-latest').hidden = true;
}

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
    announceMessage(`${message.username}: ${message.content || ''}${extra}`);
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
  const names = [...state.typing.keys()].map((id) => members?.get(id)?.username || 'Someone');
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  $('typing').textContent = text;
}

export function setupPane() {
  const scroller = $('messages');
  $('load-older').addEventListener('click', loadOlder);
  scroller.addEventListener('scroll', () => {
    if (scroller.scrollTop < 200) loadOlder();
    if (isNearBottom()) $('jump-latest').hidden = true;
  }, { passive: true });
  $('jump-latest').addEventListener('click', () => {
    scrollToBottom();
    scroller.focus();
  });
}
