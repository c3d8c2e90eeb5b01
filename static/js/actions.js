// What can be done to a message: edit it in place, delete it (after an in-page
// confirmation), react with the emoji picker or toggle a reaction chip, open its thread.
// The server's answer is applied at once; the same change arriving as an event is harmless.

import { api, describeError } from './api.js';
import { $, state, announceStatus } from './state.js';
import { h } from './views.js';
import { fileActions } from './filecards.js';
import { applyUpdate, applyDelete, applyReaction } from './pane.js';
import { openThread } from './thread.js';
import { limits } from './files.js';

export const EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀', '🔥', '✅'];

const current = (message) => state.messages.get(message.id) || message;

function userName(id) {
  if (id === state.me?.id) return 'You';
  const user = state.members.get(state.current)?.get(id);
  return user ? user.display_name || user.username : 'Someone';
}

// ---------------------------------------------------------------------------------------
// Edit in place

function startEdit(message, item) {
  message = current(message);
  const row = item || document.getElementById(`message-${message.id}`);
  if (!row || row.classList.contains('editing') || message.user_id !== state.me.id) return;
  row.classList.add('editing');
  const body = row.querySelector('.message-body');
  const input = h('textarea', {
    class: 'edit-input', rows: 2, maxlength: String(limits.maxMessageChars), 'aria-label': 'Edit message',
  });
  input.value = message.content || '';
  const status = h('p', { class: 'form-error', role: 'alert' });
  const done = (focusRow = true) => {
    form.remove();
    row.classList.remove('editing');
    applyUpdate(current(message)); // draws the text as it now is
    if (focusRow) row.focus();
  };
  const save = async () => {
    const content = input.value;
    if (content === (current(message).content || '')) {
      done();
      return;
    }
    if (!content.trim() && !(current(message).files || []).length) {
      status.textContent = 'A message cannot be empty. Delete it instead.';
      return;
    }
    input.disabled = true;
    try {
      const updated = await api.editMessage(message.channel_id, message.id, content);
      done();
      applyUpdate(updated);
      announceStatus('Message edited.');
    } catch (err) {
      input.disabled = false;
      input.focus();
      status.textContent = `Not saved. ${describeError(err)}`;
    }
  };
  const form = h('form', {
    class: 'edit-form',
    onsubmit: (e) => {
      e.preventDefault();
      save();
    },
  },
  input,
  status,
  h('p', { class: 'edit-help' },
    h('span', { class: 'muted' }, 'Enter to save · Shift+Enter for a new line · Escape to cancel'),
    h('button', { type: 'button', class: 'small secondary', onclick: () => done() }, 'Cancel'),
    h('button', { type: 'submit', class: 'small primary' }, 'Save')));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      save();
    } else if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      done();
    }
  });
  const text = body.querySelector(':scope > .message-text');
  if (text) text.remove();
  body.querySelector('.message-meta').after(form);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

/** Up in an empty composer: edit my last message in the timeline. */
export function editLastMessage() {
  const mine = [...document.querySelectorAll('#message-list .message.mine')].at(-1);
  if (!mine) return false;
  const message = state.messages.get(Number(mine.dataset.id));
  if (!message || !message.content) return false;
  mine.scrollIntoView({ block: 'nearest' });
  startEdit(message, mine);
  return true;
}

// ---------------------------------------------------------------------------------------
// Delete, after an in-page confirmation (never window.confirm)

/** Asks in the page's own dialog; resolves true when confirmed. */
export function confirmDialog({ title, text, confirm }) {
  const dialog = $('confirm-dialog');
  const opener = document.activeElement;
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = confirm;
  dialog.returnValue = '';
  dialog.showModal();
  $('confirm-cancel').focus(); // the safe choice is the default
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      if (opener && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === 'confirm');
    }, { once: true });
  });
}

async function removeMessage(message, item) {
  message = current(message);
  const thread = !message.thread_id && message.reply_count
    ? ` Its ${message.reply_count} ${message.reply_count === 1 ? 'reply goes' : 'replies go'} too.` : '';
  const files = message.files?.length ? ' Its files are deleted too.' : '';
  const ok = await confirmDialog({
    title: 'Delete this message?',
    text: `It is deleted for everyone and cannot be brought back.${files}${thread}`,
    confirm: 'Delete',
  });
  if (!ok) return;
  try {
    await api.deleteMessage(message.channel_id, message.id);
    applyDelete({ id: message.id });
    announceStatus('Message deleted.');
  } catch (err) {
    if (err.code === 'not_found') applyDelete({ id: message.id });
    else announceStatus(`Could not delete. ${describeError(err)}`);
    if (item?.isConnected) item.focus();
  }
}

// ---------------------------------------------------------------------------------------
// Reactions

async function toggleReaction(message, emoji) {
  message = current(message);
  const mine = (message.reactions || []).some((r) => r.emoji === emoji && r.user_ids.includes(state.me.id));
  try {
    if (mine) await api.unreact(message.channel_id, message.id, emoji);
    else await api.react(message.channel_id, message.id, emoji);
    applyReaction({ message_id: message.id, emoji, user_id: state.me.id }, !mine);
  } catch (err) {
    announceStatus(`Could not ${mine ? 'remove the reaction' : 'react'}. ${describeError(err)}`);
  }
}

let picking = null; // {message, opener}

function pickReaction(message, opener) {
  const picker = $('emoji-picker');
  if (!picker.hidden && picking?.message.id === message.id) {
    closePicker();
    return;
  }
  picking = { message: current(message), opener };
  picker.hidden = false;
  // Next to the button that opened it, inside the window (inline style through CSSOM).
  const rect = opener.getBoundingClientRect();
  const width = picker.offsetWidth;
  const height = picker.offsetHeight;
  const left = Math.max(8, Math.min(rect.right - width, window.innerWidth - width - 8));
  const below = rect.bottom + 4 + height < window.innerHeight;
  picker.style.left = `${left}px`;
  picker.style.top = `${below ? rect.bottom + 4 : Math.max(8, rect.top - height - 4)}px`;
  picker.querySelector('button').focus();
}

function closePicker({ restoreFocus = true } = {}) {
  const picker = $('emoji-picker');
  if (picker.hidden) return;
  picker.hidden = true;
  const opener = picking?.opener;
  picking = null;
  if (restoreFocus && opener?.isConnected) opener.focus();
}

function setupPicker() {
  const picker = $('emoji-picker');
  picker.replaceChildren(...EMOJI.map((emoji) => h('button', {
    type: 'button',
    class: 'emoji',
    'aria-label': `React with ${emoji}`,
    onclick: () => {
      const { message } = picking || {};
      closePicker();
      if (!message) return;
      const mine = (current(message).reactions || [])
        .some((r) => r.emoji === emoji && r.user_ids.includes(state.me.id));
      if (!mine) toggleReaction(message, emoji);
    },
  }, emoji)));
  picker.addEventListener('keydown', (e) => {
    const buttons = [...picker.querySelectorAll('button')];
    const index = buttons.indexOf(document.activeElement);
    const step = { ArrowRight: 1, ArrowDown: 5, ArrowLeft: -1, ArrowUp: -5 }[e.key];
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      closePicker();
    } else if (step) {
      e.preventDefault();
      buttons[(index + step + buttons.length) % buttons.length].focus();
    } else if (e.key === 'Tab') {
      closePicker({ restoreFocus: false });
    }
  });
  document.addEventListener('pointerdown', (e) => {
    if (!picker.hidden && !picker.contains(e.target) && !e.target.closest('.action-react')) {
      closePicker({ restoreFocus: false });
    }
  });
}

// ---------------------------------------------------------------------------------------

const contexts = new Map();

/** What message rows do, for the timeline (false) or the thread panel (true). */
export function messageContext(inThread) {
  if (!contexts.has(inThread)) {
    contexts.set(inThread, {
      inThread,
      get meId() { return state.me?.id; },
      download: fileActions.download,
      askDelete: fileActions.askDelete,
      fullSizeLink: fileActions.fullSizeLink,
      mediaFailed: fileActions.mediaFailed,
      userName,
      toggleReaction,
      pickReaction,
      openThread: (message) => openThread(current(message)),
      edit: startEdit,
      remove: removeMessage,
    });
  }
  return contexts.get(inThread);
}

export function setupActions() {
  setupPicker();
  const dialog = $('confirm-dialog');
  $('confirm-cancel').addEventListener('click', () => dialog.close('cancel'));
  $('confirm-ok').addEventListener('click', () => dialog.close('confirm'));
}
