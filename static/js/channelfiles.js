// The channel's "Files" panel (GET /api/channels/{id}/files): its files newest first, in
// pages, beside the timeline in the thread panel's place. A file's name opens its message;
// files posted or deleted while the panel is open appear and go live.

import { api, describeError } from './api.js';
import { $, state, announceStatus } from './state.js';
import { h, typeIcon, formatTime } from './views.js';
import { humanSize } from './files.js';
import { fileActions } from './filecards.js';
import { channelTitle } from './sidebar.js';
import { closeThread } from './thread.js';
import { closeSearch, goTo } from './search.js';

const PAGE = 30;

let shown = null; // {channelId, nextBefore, hasMore, loading}

function uploaderName(file) {
  if (file.uploaded_by === state.me?.id) return 'you';
  const user = state.members.get(file.channel_id)?.get(file.uploaded_by);
  return user ? user.display_name || user.username : 'someone';
}

function fileRow(file) {
  const row = h('li', { class: 'files-row', dataset: { fileId: String(file.id) } });
  row.append(
    typeIcon(file.content_type, file.file_name),
    h('div', { class: 'files-row-text' },
      h('button', {
        type: 'button',
        class: 'link-button files-row-name',
        title: `Show the message of ${file.file_name}`,
        onclick: () => showMessage(file),
      }, file.file_name),
      h('span', { class: 'files-row-meta' },
        `${humanSize(file.file_size)} · ${uploaderName(file)} · ${formatTime(file.uploaded_at)}`)),
    h('button', {
      type: 'button',
      class: 'small secondary',
      'aria-label': `Download ${file.file_name}`,
      onclick: () => fileActions.download(file, row),
    }, 'Download'),
    h('p', { class: 'card-status', role: 'status' }),
  );
  return row;
}

async function showMessage(file) {
  if (window.matchMedia('(max-width: 760px)').matches) closeFiles(false);
  await goTo(file.message_id, { channel_id: file.channel_id, thread_id: null });
}

function renderStatus() {
  const count = $('files-list').childElementCount;
  $('files-more').hidden = !shown?.hasMore;
  $('files-status').textContent = shown?.loading && !count ? 'Loading…'
    : count ? `${count}${shown?.hasMore ? '+' : ''} ${count === 1 ? 'file' : 'files'}`
      : 'No files in this channel yet.';
}

async function loadPage(which) {
  if (which.loading) return;
  which.loading = true;
  renderStatus();
  try {
    const page = await api.channelFiles(which.channelId, { before: which.nextBefore ?? undefined, limit: PAGE });
    if (shown !== which) return;
    const list = $('files-list');
    for (const file of page.files) {
      if (!list.querySelector(`[data-file-id="${file.id}"]`)) list.append(fileRow(file));
    }
    which.hasMore = page.has_more;
    which.nextBefore = page.next_before;
  } catch (err) {
    if (shown === which) $('files-status').textContent = `Could not load the files. ${describeError(err)}`;
    return;
  } finally {
    which.loading = false;
  }
  renderStatus();
}

export function filesOpen() {
  return shown !== null;
}

/** Opens the panel for the open channel (a second press closes it). */
export async function toggleFiles() {
  if (shown && shown.channelId === state.current) {
    closeFiles();
    return;
  }
  if (!state.current) return;
  closeThread();
  closeSearch();
  document.dispatchEvent(new CustomEvent('chat:panel', { detail: 'files' }));
  const which = { channelId: state.current, nextBefore: null, hasMore: false, loading: false };
  shown = which;
  $('files-panel').hidden = false;
  $('files-toggle').setAttribute('aria-expanded', 'true');
  document.body.classList.add('thread-open');
  $('files-channel').textContent = `in ${channelTitle(state.channels.get(which.channelId))}`;
  $('files-list').replaceChildren();
  $('files-close').focus();
  await loadPage(which);
}

export function closeFiles(restoreFocus = true) {
  if (!shown) return;
  const hadFocus = $('files-panel').contains(document.activeElement);
  shown = null;
  $('files-panel').hidden = true;
  $('files-toggle').setAttribute('aria-expanded', 'false');
  if ($('thread-panel').hidden) document.body.classList.remove('thread-open');
  $('files-list').replaceChildren();
  if (hadFocus && restoreFocus) $('files-toggle').focus();
}

/** A file was attached in a channel (live): newest first, at the top. */
export function fileAdded(file) {
  if (!shown || file.channel_id !== shown.channelId) return;
  const list = $('files-list');
  if (list.querySelector(`[data-file-id="${file.id}"]`)) return;
  list.prepend(fileRow(file));
  renderStatus();
}

/** A file was deleted (live). */
export function fileGone(id) {
  const row = $('files-list').querySelector(`[data-file-id="${id}"]`);
  if (!row) return;
  const hadFocus = row.contains(document.activeElement);
  row.remove();
  renderStatus();
  if (hadFocus) $('files-close').focus();
  announceStatus('A file was deleted.');
}

export function setupChannelFiles() {
  // One side panel at a time; another channel closes it too.
  document.addEventListener('chat:panel', (e) => {
    if (e.detail !== 'files') closeFiles(false);
  });
  $('files-toggle').addEventListener('click', toggleFiles);
  $('files-close').addEventListener('click', () => closeFiles());
  $('files-more').addEventListener('click', () => shown && loadPage(shown));
  $('files-panel').addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !e.defaultPrevented) {
      e.preventDefault();
      closeFiles();
    }
  });
}
