// The composer: text, files chosen with the paperclip, dropped or pasted (shown as chips),
// and sending: plain JSON for text, the multipart upload (in the outbox) with files.

import { api, describeError } from './api.js';
import { $, state, announceStatus } from './state.js';
import { Attachments, Outbox } from './upload.js';
import { showNewMessage, noteSeen } from './pane.js';
import { channelTitle } from './sidebar.js';
import { editLastMessage } from './actions.js';
import { socket } from './live.js';
import { limits, allowedSummary, humanSize } from './files.js';

const TYPING_SEND_EVERY_MS = 3000;

export const attachments = new Attachments({
  list: $('chips'),
  error: $('composer-error'),
  announce: announceStatus,
});

export const outbox = new Outbox({
  list: $('outbox'),
  announce: announceStatus,
  channelName: (id) => channelTitle(state.channels.get(id)) || String(id),
  onDelivered: (message) => {
    noteSeen(message.channel_id, message.id);
    showNewMessage(message, { announce: false });
    clearSendError();
  },
  // A send that failed and is dismissed gives its text back, so nothing typed is lost.
  onDismissed: (entry) => {
    const input = $('message-input');
    if (!entry.content || state.current !== entry.channelId) return;
    if (input.value.trim() === '') input.value = entry.content;
    else if (!input.value.includes(entry.content)) input.value = `${entry.content}\n${input.value}`;
    autoGrow();
  },
});

/** Clears a "Not sent" error: the connection is back, or a later send went through. */
export function clearSendError() {
  const error = $('composer-error');
  if (error.textContent.startsWith('Not sent.')) error.textContent = '';
}

/** The paperclip's tooltip and the message box's limit, from GET /api/config. */
export function showLimits() {
  const each = humanSize(limits.maxFileBytes);
  $('attach').title = `Attach files (${allowedSummary()}; up to ${each} each, ${limits.maxFilesPerMessage} per message)`;
  $('message-input').maxLength = limits.maxMessageChars;
}

async function submitMessage(event) {
  event.preventDefault();
  const channelId = state.current;
  const send = $('send');
  if (!channelId || send.disabled) return; // Enter again while a text is on its way
  const input = $('message-input');
  const content = input.value;
  const files = attachments.files.slice();
  const error = $('composer-error');
  if (files.length > 0) {
    outbox.send(channelId, content, files);
    attachments.clear();
    input.value = '';
    autoGrow();
    return;
  }
  if (!content.trim()) {
    error.textContent = 'Write a message or attach a file first.';
    return;
  }
  error.textContent = '';
  send.disabled = true;
  try {
    const message = await api.postMessage(channelId, content);
    if (input.value === content) input.value = '';
    autoGrow();
    showNewMessage(message, { announce: false });
  } catch (err) {
    error.textContent = `Not sent. ${describeError(err)}`;
  } finally {
    send.disabled = false;
  }
}

function onComposerKey(event) {
  // Up in an empty box edits my last message.
  if (event.key === 'ArrowUp' && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey
    && event.target.value === '' && attachments.files.length === 0) {
    if (editLastMessage()) event.preventDefault();
    return;
  }
  if (event.key === 'Enter' && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.isComposing) {
    event.preventDefault();
    $('composer').requestSubmit();
  }
}

function onComposerInput() {
  autoGrow();
  const now = Date.now();
  if (state.current && now - state.lastTypingSent > TYPING_SEND_EVERY_MS && $('message-input').value) {
    if (socket.send({ type: 'typing', channel_id: state.current })) state.lastTypingSent = now;
  }
}

function autoGrow() {
  const input = $('message-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

function onPaste(event) {
  const files = Array.from(event.clipboardData?.files || []);
  if (files.length === 0) return;
  if (!event.clipboardData.types.includes('text/plain')) event.preventDefault();
  // A pasted screenshot arrives as "image.png": give it a name worth keeping.
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
  attachments.add(files.map((file, i) => (/^image\.\w+$/.test(file.name)
    ? new File([file], `pasted-${stamp}${i ? `-${i + 1}` : ''}.${file.name.split('.').pop()}`, { type: file.type })
    : file)));
}

// Drag and drop onto the pane, with a visible drop zone.
let dragDepth = 0;
const carriesFiles = (event) => Array.from(event.dataTransfer?.types || []).includes('Files');

function setupDropZone() {
  const pane = $('channel-view');
  const zone = $('drop-zone');
  pane.addEventListener('dragenter', (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    dragDepth += 1;
    zone.hidden = false;
  });
  pane.addEventListener('dragover', (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  pane.addEventListener('dragleave', (e) => {
    if (!carriesFiles(e)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) zone.hidden = true;
  });
  pane.addEventListener('drop', (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    zone.hidden = true;
    if (attachments.add(e.dataTransfer.files)) $('message-input').focus();
  });
  // A file dropped anywhere else must not replace the page.
  window.addEventListener('dragover', (e) => { if (carriesFiles(e)) e.preventDefault(); });
  window.addEventListener('drop', (e) => { if (carriesFiles(e)) e.preventDefault(); });
}

export function setupComposer() {
  $('composer').addEventListener('submit', submitMessage);
  $('message-input').addEventListener('keydown', onComposerKey);
  $('message-input').addEventListener('input', onComposerInput);
  $('channel-view').addEventListener('paste', onPaste);
  $('attach').addEventListener('click', () => $('file-input').click());
  $('file-input').addEventListener('change', () => {
    const input = $('file-input');
    attachments.add(input.files);
    input.value = ''; // choosing the same file again fires `change` again
    $('message-input').focus();
  });
  setupDropZone();
}
