// The thread panel: a top-level message and its replies beside the timeline (over it on a
// phone), with its own composer. Replies arrive live (`message_created` with `thread_id`);
// the root's reply count is kept by `message_updated`.

import { api, describeError, postReplyWithFiles } from './api.js';
import { $, state, announceStatus, announceMessage } from './state.js';
import { messageItem, authorName, fileChip } from './views.js';
import { checkFile, limits } from './files.js';
import { messageContext } from './actions.js';
import { applyUpdate, moveBetweenMessages } from './pane.js';
import { channelTitle } from './sidebar.js';

const PAGE = 100;

let thread = null; // {root (id), channelId, loaded, pending: [messages that came while loading]}
let replyFiles = []; // File objects chosen for the next reply

function renderChips() {
  $('thread-chips').replaceChildren(...replyFiles.map((file, i) => fileChip(file, () => {
    replyFiles.splice(i, 1);
    renderChips();
    $('thread-attach').focus();
  })));
}

function addReplyFiles(files) {
  const error = $('thread-error');
  error.textContent = '';
  for (const file of files) {
    const problem = checkFile(file);
    if (problem) {
      error.textContent = problem;
      continue;
    }
    if (replyFiles.length >= (limits.maxFilesPerMessage || 10)) {
      error.textContent = 'That is as many files as one reply can carry.';
      break;
    }
    replyFiles.push(file);
  }
  renderChips();
}

export function threadRootId() {
  return thread ? thread.root : null;
}

function renderCount() {
  const root = state.messages.get(thread?.root);
  const count = root?.reply_count ?? $('thread-list').childElementCount;
  $('thread-count').textContent = count ? `${count} ${count === 1 ? 'reply' : 'replies'}` : 'No replies yet';
}

function insertReply(message) {
  const list = $('thread-list');
  if (document.getElementById(`reply-${message.id}`)) return false;
  state.messages.set(message.id, message);
  const item = messageItem(message, messageContext(true));
  const after = [...list.children].find((li) => Number(li.dataset.id) > message.id);
  list.insertBefore(item, after || null);
  return true;
}

function scrollToEnd() {
  const scroller = $('thread-scroller');
  scroller.scrollTop = scroller.scrollHeight;
}

export async function openThread(root) {
  if (!root || root.thread_id) return;
  if (thread?.root === root.id) {
    $('thread-input').focus();
    return;
  }
  const mine = { root: root.id, channelId: root.channel_id, loaded: false };
  thread = mine;
  state.messages.set(root.id, state.messages.get(root.id) || root);
  const panel = $('thread-panel');
  panel.hidden = false;
  $('search-panel').hidden = true; // one side panel at a time
  document.dispatchEvent(new CustomEvent('chat:panel', { detail: 'thread' }));
  document.body.classList.add('thread-open');
  $('thread-channel').textContent = `in ${channelTitle(state.channels.get(root.channel_id))}`;
  $('thread-root').replaceChildren(messageItem(state.messages.get(root.id), messageContext(true)));
  $('thread-list').replaceChildren();
  $('thread-error').textContent = '';
  $('thread-input').value = '';
  replyFiles = [];
  renderChips();
  renderCount();
  $('thread-input').focus();
  await loadReplies(mine);
}

async function loadReplies(which, after = undefined) {
  try {
    let more = true;
    while (more && thread === which) {
      const page = await api.thread(which.channelId, which.root, { after, limit: PAGE });
      if (thread !== which) return;
      for (const reply of page.messages) insertReply(reply);
      after = page.messages.at(-1)?.id ?? after;
      more = page.has_more && page.messages.length > 0;
    }
    which.loaded = true;
    renderCount();
    scrollToEnd();
  } catch (err) {
    if (thread !== which) return;
    if (err.code === 'not_found') closeThread('This thread is no longer available.');
    else $('thread-error').textContent = `Could not load the replies. ${describeError(err)}`;
  }
}

/** After a reconnect: replies posted while the connection was down. */
export function catchUpThread() {
  if (!thread || !thread.loaded) return;
  const last = [...$('thread-list').children].at(-1);
  loadReplies(thread, last ? Number(last.dataset.id) : undefined);
}

export function closeThread(notice = '') {
  if (!thread) return;
  const hadFocus = $('thread-panel').contains(document.activeElement);
  thread = null;
  $('thread-panel').hidden = true;
  document.body.classList.remove('thread-open');
  $('thread-root').replaceChildren();
  $('thread-list').replaceChildren();
  if (notice) announceStatus(notice);
  if (hadFocus) $('message-input').focus();
}

/** A reply arrived (live, or our own post). */
export function showReply(message, { announce = false } = {}) {
  if (!thread || message.thread_id !== thread.root) return;
  const scroller = $('thread-scroller');
  const atEnd = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  if (!insertReply(message)) return;
  renderCount();
  if (atEnd || message.user_id === state.me.id) scrollToEnd();
  if (announce && message.user_id !== state.me.id) {
    announceMessage(`${authorName(message)} replied in the thread: ${message.content || ''}`);
  }
}

async function sendReply(event) {
  event.preventDefault();
  if (!thread) return;
  const input = $('thread-input');
  const send = $('thread-send');
  const content = input.value;
  const error = $('thread-error');
  if (send.disabled) return;
  const files = replyFiles;
  if (!content.trim() && !files.length) {
    error.textContent = 'Write a reply first.';
    return;
  }
  error.textContent = '';
  send.disabled = true;
  const which = thread;
  try {
    const reply = files.length
      ? await postReplyWithFiles(which.channelId, which.root, content, files)
      : await api.postReply(which.channelId, which.root, content);
    if (input.value === content) input.value = '';
    if (replyFiles === files) {
      replyFiles = [];
      renderChips();
    }
    const known = document.getElementById(`reply-${reply.id}`) !== null;
    showReply(reply);
    // Count it at once, unless the live events already did (they carry the true count).
    const root = state.messages.get(which.root);
    if (root && !known) {
      applyUpdate({ ...root, reply_count: (root.reply_count || 0) + 1, last_reply_at: reply.created_at });
      renderCount();
    }
  } catch (err) {
    error.textContent = `Not sent. ${describeError(err)}`;
  } finally {
    send.disabled = false;
  }
}

/** The root's count changed: the panel's heading follows. */
export function threadRootUpdated(id) {
  if (thread && thread.root === id) renderCount();
}

export function setupThread() {
  $('thread-close').addEventListener('click', () => {
    const root = thread && document.getElementById(`message-${thread.root}`);
    closeThread();
    if (root) root.focus();
  });
  $('thread-composer').addEventListener('submit', sendReply);
  $('thread-attach').addEventListener('click', () => $('thread-file-input').click());
  $('thread-file-input').addEventListener('change', (e) => {
    addReplyFiles([...e.target.files]);
    e.target.value = '';
    $('thread-input').focus();
  });
  $('thread-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.isComposing) {
      e.preventDefault();
      $('thread-composer').requestSubmit();
    }
  });
  $('thread-input').addEventListener('input', () => {
    if ($('thread-error').textContent.startsWith('Write a reply')) $('thread-error').textContent = '';
  });
  $('thread-panel').addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !e.defaultPrevented && !e.target.closest('.edit-form')) {
      e.preventDefault();
      $('thread-close').click();
    }
  });
  const scroller = $('thread-scroller');
  scroller.addEventListener('keydown', (e) => moveBetweenMessages(e, scroller));
}
