// DOM building. Everything a user wrote (messages, names, file names) goes in as text nodes
// or attribute values, never as markup: there is no innerHTML in this client.

import { fileKind, humanSize, KIND_LABEL } from './files.js';

/**
 * h('button', {class: 'x', onclick: fn, 'aria-label': 'Close'}, 'text', child, ...)
 * Strings become text nodes; null, undefined and false are skipped; arrays are flattened.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      node.className = value;
    } else if (key === 'dataset') {
      Object.assign(node.dataset, value);
    } else if (key in node && typeof value !== 'string') {
      node[key] = value; // properties such as `value`, `hidden`, `max`
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});

export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? timeFormat.format(date)
    : dateTimeFormat.format(date);
}

/** A small padlock, for private channels (drawn, so it needs no emoji font). */
export function lockIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '13');
  svg.setAttribute('height', '13');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', 'M4 7V5a4 4 0 0 1 8 0v2h1v8H3V7h1zm2 0h4V5a2 2 0 0 0-4 0v2z');
  path.setAttribute('fill', 'currentColor');
  svg.append(path);
  return svg;
}

/** The coloured type badge of a file. */
export function typeIcon(contentType, name) {
  const kind = fileKind(contentType, name);
  return h('span', { class: `type-icon type-${kind}`, 'aria-hidden': 'true' }, KIND_LABEL[kind]);
}

/**
 * One attachment as a card. `actions` = {meId, download(file, card), askDelete(file, card),
 * openImage(file), mediaFailed(file, element)}.
 */
export function fileCard(file, actions) {
  const kind = fileKind(file.content_type, file.file_name);
  const name = file.file_name;
  let media = null;
  if (kind === 'image') {
    const img = h('img', { src: file.url, alt: name, loading: 'lazy', decoding: 'async' });
    img.addEventListener('error', () => actions.mediaFailed(file, img));
    media = h('button', {
      type: 'button',
      class: 'card-preview',
      'aria-label': `Open ${name} full size`,
      onclick: () => actions.openImage(file),
    }, img);
  } else if (kind === 'audio' || kind === 'video') {
    const player = h(kind, { src: file.url, controls: true, preload: 'metadata', 'aria-label': name });
    player.addEventListener('error', () => actions.mediaFailed(file, player));
    media = h('div', { class: `card-player card-${kind}` }, player);
  }
  const card = h('li', { class: `file-card kind-${kind}`, dataset: { fileId: String(file.id) } },
    media,
    h('div', { class: 'card-info' },
      typeIcon(file.content_type, name),
      h('div', { class: 'card-text' },
        h('span', { class: 'file-name', title: name }, name),
        h('span', { class: 'file-size' }, humanSize(file.file_size))),
    ),
    h('div', { class: 'card-actions' },
      h('button', {
        type: 'button', class: 'small download',
        'aria-label': `Download ${name}`,
        onclick: () => actions.download(file, card),
      }, 'Download'),
      file.uploaded_by === actions.meId
        ? h('button', {
          type: 'button', class: 'small danger delete',
          'aria-label': `Delete ${name}`,
          onclick: () => actions.askDelete(file, card),
        }, 'Delete')
        : null,
    ),
    h('p', { class: 'card-status', role: 'status' }),
  );
  return card;
}

/** A message row. */
export function messageItem(message, actions) {
  const mine = message.user_id === actions.meId;
  const files = message.files || [];
  return h('li', {
    class: `message${mine ? ' mine' : ''}`,
    id: `message-${message.id}`,
    dataset: { id: String(message.id), userId: String(message.user_id) },
  },
  h('span', { class: 'avatar', 'aria-hidden': 'true' }, (message.username || '?').slice(0, 1).toUpperCase()),
  h('div', { class: 'message-body' },
    h('p', { class: 'message-meta' },
      h('span', { class: 'author' }, message.username),
      ' ',
      h('time', { datetime: message.created_at, title: new Date(message.created_at).toLocaleString() },
        formatTime(message.created_at))),
    message.content ? h('p', { class: 'message-text' }, message.content) : null,
    h('ul', { class: 'attachments', 'aria-label': 'Attachments', hidden: files.length === 0 },
      files.map((file) => fileCard(file, actions))),
  ));
}

/** A short line in the message list for things that happened (joins, leaves). */
export function noticeItem(text) {
  return h('li', { class: 'notice' }, text);
}

/** A file chosen in the composer, before sending. */
export function fileChip(file, onRemove) {
  return h('li', { class: 'chip' },
    typeIcon(file.type, file.name),
    h('span', { class: 'chip-name', title: file.name }, file.name),
    h('span', { class: 'chip-size' }, humanSize(file.size)),
    h('button', {
      type: 'button', class: 'chip-remove', 'aria-label': `Remove ${file.name}`, onclick: onRemove,
    }, '×'));
}

/**
 * A two-press confirmation for actions that cannot be undone. The first press relabels the
 * button (and says why in `status`, if given) and answers false; a second press within
 * five seconds answers true. After that the button goes back to how it was.
 */
export function confirmPress(button, { text, label, hint = '', status = null }) {
  if (button.dataset.confirming === 'yes') {
    clearTimeout(Number(button.dataset.confirmTimer));
    cancelConfirm(button, status);
    return true;
  }
  button.dataset.confirming = 'yes';
  button.dataset.originalText = button.textContent;
  button.dataset.originalLabel = button.getAttribute('aria-label') || '';
  button.textContent = text;
  if (label) button.setAttribute('aria-label', label);
  if (status) status.textContent = hint;
  button.dataset.confirmTimer = String(setTimeout(() => cancelConfirm(button, status), 5000));
  return false;
}

/** Puts a button left asking for confirmation back as it was. */
export function cancelConfirm(button, status = null) {
  if (button.dataset.confirming !== 'yes') return;
  button.dataset.confirming = '';
  button.textContent = button.dataset.originalText;
  if (button.dataset.originalLabel) button.setAttribute('aria-label', button.dataset.originalLabel);
  else button.removeAttribute('aria-label');
  if (status) status.textContent = '';
}
