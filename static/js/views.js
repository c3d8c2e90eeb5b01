// DOM building. Everything a user wrote (messages, names, file names) goes in as text nodes
// or attribute values, never as markup: there is no innerHTML in this client.

import { fileKind, humanSize, KIND_LABEL } from './files.js';
import { imagePreview, audioPlayer, textPreview } from './media.js';
import { renderMarkdown, ALLOWED } from './markdown.js';
import { markMentions } from './mentions.js';

// Mention spans (mentions.js) besides the Markdown subset.
const RENDERABLE = { ...ALLOWED, span: ['class'] };

// How a message's mentions are read: `(message) => {classify(name), mentionsMe}`, set by
// the app once it knows who is signed in (views.js knows nothing of the page's state).
let mentionReader = null;
export function setMentionReader(reader) {
  mentionReader = reader;
}

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
 * fullSizeLink(file), mediaFailed(file, element)}.
 */
export function fileCard(file, actions) {
  const kind = fileKind(file.content_type, file.file_name);
  const name = file.file_name;
  let media = null;
  if (kind === 'image') {
    media = imagePreview(file, actions);
  } else if (kind === 'audio') {
    media = audioPlayer(file, actions);
  } else if (kind === 'text' || kind === 'csv') {
    media = textPreview(file);
  } else if (kind === 'video') {
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

/** Turns a tree from markdown.js into DOM nodes (allowed tags and attributes only). */
export function renderTree(nodes) {
  return nodes.map((n) => {
    if (typeof n === 'string') return document.createTextNode(n);
    if (!(n.tag in RENDERABLE)) return document.createTextNode('');
    const el = document.createElement(n.tag);
    for (const [key, value] of Object.entries(n.attrs || {})) {
      if (RENDERABLE[n.tag].includes(key)) el.setAttribute(key, value);
    }
    el.append(...renderTree(n.children || []));
    return el;
  });
}

export const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: 'long', month: 'long', day: 'numeric', year: 'numeric',
});

/** "Today", "Yesterday", or the date in words, for a date divider. */
export function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (date.toDateString() === today.toDateString()) return 'Today';
  if (date.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return dayFormat.format(date);
}

function mentionsReader(message) {
  return Boolean(mentionReader && mentionReader(message).mentionsMe);
}

/** The name to show for a message's author. */
export function authorName(message) {
  return message.display_name || message.username || 'Someone';
}

/** A message's text, as Markdown; "(edited)" after it. */
export function messageContent(message) {
  if (!message.content) return null;
  let tree = renderMarkdown(message.content);
  if (mentionReader) tree = markMentions(tree, mentionReader(message).classify);
  const box = h('div', { class: 'message-text' }, renderTree(tree));
  if (message.edited_at) {
    const mark = h('span', {
      class: 'edited', title: `Edited ${new Date(message.edited_at).toLocaleString()}`,
    }, '(edited)');
    const last = box.lastElementChild;
    if (last && last.tagName === 'P') last.append(' ', mark);
    else box.append(mark);
  }
  return box;
}

/** The reaction chips: pressed when I reacted; a click toggles mine. */
export function reactionList(message, ctx) {
  const reactions = message.reactions || [];
  return h('ul', { class: 'reactions', 'aria-label': 'Reactions', hidden: reactions.length === 0 },
    reactions.map((r) => {
      const mine = r.user_ids.includes(ctx.meId);
      const names = r.user_ids.map((id) => ctx.userName(id)).join(', ');
      return h('li', {},
        h('button', {
          type: 'button',
          class: 'reaction',
          'aria-pressed': String(mine),
          'aria-label': `${r.emoji} ${r.count}: ${mine ? 'remove your reaction' : 'react too'}`,
          title: names ? `${names} reacted with ${r.emoji}` : null,
          dataset: { emoji: r.emoji },
          onclick: () => ctx.toggleReaction(message, r.emoji),
        }, h('span', { class: 'reaction-emoji', 'aria-hidden': 'true' }, r.emoji),
        h('span', { class: 'reaction-count', 'aria-hidden': 'true' }, String(r.count))));
    }));
}

/** "3 replies" under a thread's root, opening the thread. */
export function threadSummary(message, ctx) {
  const count = message.reply_count || 0;
  if (ctx.inThread || count === 0) return h('p', { class: 'thread-summary', hidden: true });
  return h('p', { class: 'thread-summary' },
    h('button', {
      type: 'button', class: 'link-button thread-link', onclick: () => ctx.openThread(message),
    }, `${count} ${count === 1 ? 'reply' : 'replies'}`),
    message.last_reply_at
      ? h('span', { class: 'muted' }, ` · last ${formatTime(message.last_reply_at)}`)
      : null);
}

const ICONS = {
  react: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm-3.5 7a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zm7 0a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zM7 14h10a5 5 0 0 1-10 0z',
  reply: 'M4 4h16v11H8l-4 4V4z',
  edit: 'M4 17.3V20h2.7L17.8 8.9l-2.7-2.7L4 17.3zM20.7 6a1 1 0 0 0 0-1.4l-1.3-1.3a1 1 0 0 0-1.4 0l-1.1 1.1 2.7 2.7L20.7 6z',
  delete: 'M6 7h12l-1 13H7L6 7zm3-3h6l1 2h4v2H4V6h4l1-2z',
};

function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '16');
  svg.setAttribute('height', '16');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name]);
  path.setAttribute('fill', 'currentColor');
  svg.append(path);
  return svg;
}

/**
 * A message row. `ctx` = the file card actions, plus {meId, inThread, userName(id),
 * toggleReaction(message, emoji), pickReaction(message, button), openThread(message),
 * edit(message), remove(message)}. Consecutive messages are grouped by the pane (the class
 * `continued` hides the header); the row is focusable and shows its actions on hover or focus.
 */
export function messageItem(message, ctx) {
  const mine = message.user_id === ctx.meId;
  const files = message.files || [];
  const name = authorName(message);
  const time = new Date(message.created_at);
  const tool = (kind, label, onclick) => h('button', {
    type: 'button', class: `icon-button action-${kind}`, 'aria-label': label, title: label, onclick,
  }, icon(kind));
  return h('li', {
    class: `message${mine ? ' mine' : ''}${mentionsReader(message) ? ' mentions-me' : ''}`,
    id: `${ctx.inThread ? 'reply' : 'message'}-${message.id}`,
    tabindex: '-1',
    dataset: { id: String(message.id), userId: String(message.user_id), created: message.created_at },
  },
  h('span', { class: 'avatar', 'aria-hidden': 'true' }, name.slice(0, 1).toUpperCase()),
  h('time', { class: 'gutter-time', datetime: message.created_at, title: time.toLocaleString() },
    timeFormat.format(time)),
  h('div', { class: 'message-body' },
    h('p', { class: 'message-meta' },
      h('span', { class: 'author', title: message.username }, name),
      ' ',
      h('time', { datetime: message.created_at, title: time.toLocaleString() }, formatTime(message.created_at))),
    messageContent(message),
    h('ul', { class: 'attachments', 'aria-label': 'Attachments', hidden: files.length === 0 },
      files.map((file) => fileCard(file, ctx))),
    reactionList(message, ctx),
    threadSummary(message, ctx),
  ),
  h('div', { class: 'message-actions', role: 'toolbar', 'aria-label': `Actions for the message by ${name}` },
    tool('react', 'Add reaction', (e) => ctx.pickReaction(message, e.currentTarget)),
    ctx.inThread ? null : tool('reply', 'Reply in thread', () => ctx.openThread(message)),
    mine ? tool('edit', 'Edit message', (e) => ctx.edit(message, e.currentTarget.closest('.message'))) : null,
    mine ? tool('delete', 'Delete message', (e) => ctx.remove(message, e.currentTarget.closest('.message'))) : null,
  ));
}

/** Redraws what can change in a shown message: its text, reactions and reply count. */
export function updateMessageItem(item, message, ctx) {
  const body = item.querySelector('.message-body');
  item.classList.toggle('mentions-me', mentionsReader(message));
  const author = body.querySelector('.message-meta .author');
  if (author) author.textContent = authorName(message); // a rename
  item.querySelector(':scope > .avatar').textContent = authorName(message).slice(0, 1).toUpperCase();
  if (!item.classList.contains('editing')) {
    const old = body.querySelector(':scope > .message-text');
    const fresh = messageContent(message);
    if (old && fresh) old.replaceWith(fresh);
    else if (old) old.remove();
    else if (fresh) body.querySelector('.message-meta').after(fresh);
  }
  body.querySelector(':scope > .reactions').replaceWith(reactionList(message, ctx));
  body.querySelector(':scope > .thread-summary').replaceWith(threadSummary(message, ctx));
}

/** A day's divider in the timeline. */
export function dateDivider(date) {
  return h('li', { class: 'date-divider', dataset: { day: date.toDateString() } },
    h('span', {}, dayLabel(date)));
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
