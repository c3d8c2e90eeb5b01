// Search across the user's channels (GET /api/search): a box in the top bar, results in a
// side panel with the matched words marked, a files-only filter, and a click that opens the
// message in its channel (loading older history until it is there) or the file's message.

import { api, describeError } from './api.js';
import { $, state, announceStatus } from './state.js';
import { h, authorName, formatTime } from './views.js';
import { channelTitle } from './sidebar.js';
import { openChannel, loadOlder } from './pane.js';
import { closeThread, openThread } from './thread.js';

const MAX_HISTORY_PAGES = 40; // how far back a jump may load (50 messages a page)

let current = null; // {query, results: [{kind, item}], nextBefore, hasMore}

/** Words of the query, as the server cuts them: runs of letters and digits. */
function termsOf(query) {
  return (query.match(/[\p{L}\p{N}]+/gu) || []).filter((t) => [...t].length >= 3);
}

/** `text` as nodes, with every case-insensitive occurrence of a term in a <mark>. */
function marked(text, terms) {
  if (!terms.length) return [text];
  const escaped = terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const pattern = new RegExp(`(${escaped.join('|')})`, 'giu');
  return text.split(pattern).map((part, i) => (i % 2 === 1 ? h('mark', {}, part) : part));
}

function channelLabel(channelId) {
  return channelTitle(state.channels.get(channelId)) || `#${channelId}`;
}

function resultItem({ kind, item }, terms) {
  const when = formatTime(kind === 'file' ? item.uploaded_at : item.created_at);
  const meta = kind === 'file'
    ? `File in ${channelLabel(item.channel_id)} · ${when}`
    : `${authorName(item)} in ${channelLabel(item.channel_id)} · ${when}${item.thread_id ? ' · in a thread' : ''}`;
  // Markdown's markers are noise in a one-line result.
  const text = kind === 'file'
    ? item.file_name
    : (item.content.replace(/\*\*|~~|`+/g, '') || '(files only)');
  const button = h('button', { type: 'button' },
    h('span', { class: 'search-meta' }, meta),
    h('span', { class: 'search-text' }, ...marked(text, terms)));
  button.addEventListener('click', () => goTo(kind === 'file' ? item.message_id : item.id, item));
  return h('li', { class: `search-result search-${kind}` }, button);
}

function render() {
  const list = $('search-results');
  if (!current) return;
  const filesOnly = $('search-files-only').checked;
  const terms = termsOf(current.query);
  const shown = current.results.filter((r) => !filesOnly || r.kind === 'file');
  list.replaceChildren(...shown.map((r) => resultItem(r, terms)));
  $('search-more').hidden = !current.hasMore;
  const count = shown.length;
  $('search-status').textContent = count
    ? `${count}${current.hasMore ? '+' : ''} ${count === 1 ? 'result' : 'results'} for “${current.query}”`
    : `Nothing found for “${current.query}”`;
}

/** Merges messages and files newest first (by message id, then file id). */
function merge(page) {
  const results = [
    ...page.messages.map((m) => ({ kind: 'message', item: m, key: [m.id, 0] })),
    ...page.files.map((f) => ({ kind: 'file', item: f, key: [f.message_id, f.id] })),
  ];
  results.sort((a, b) => b.key[0] - a.key[0] || b.key[1] - a.key[1]);
  return results;
}

async function run(query, more = false) {
  const panel = $('search-panel');
  panel.hidden = false;
  closeThread();
  document.dispatchEvent(new CustomEvent('chat:panel', { detail: 'search' }));
  if (!more) {
    current = { query, results: [], nextBefore: null, hasMore: false };
    $('search-results').replaceChildren();
    $('search-status').textContent = 'Searching…';
  }
  const mine = current;
  try {
    const page = await api.search(query, more ? mine.nextBefore : null);
    if (current !== mine) return;
    mine.results.push(...merge(page));
    mine.hasMore = page.has_more;
    mine.nextBefore = page.next_before;
    render();
  } catch (err) {
    if (current !== mine) return;
    $('search-status').textContent = err.code === 'bad_request'
      ? 'Search for words of 3 or more letters.'
      : describeError(err);
  }
}

/** Opens the message `id` in its channel (a reply: its thread) and points it out. */
export async function goTo(id, item) {
  const channelId = item.channel_id;
  if (!state.channels.has(channelId)) return;
  if (state.current !== channelId) await openChannel(channelId);
  const rootId = item.thread_id || id;
  let pages = 0;
  while (!document.getElementById(`message-${rootId}`) && state.view?.hasOlder && pages < MAX_HISTORY_PAGES) {
    await loadOlder();
    pages += 1;
  }
  const found = document.getElementById(`message-${rootId}`);
  if (!found) {
    announceStatus('That message is further back than the history loaded.');
    return;
  }
  found.scrollIntoView({ block: 'center' });
  found.classList.remove('flash');
  void found.offsetWidth; // restart the animation
  found.classList.add('flash');
  found.focus({ preventScroll: true });
  if (item.thread_id) {
    // One side panel at a time: the thread takes the search's place.
    const root = state.messages.get(rootId);
    if (root) await openThread(root);
  } else if (window.matchMedia('(max-width: 760px)').matches) {
    $('search-panel').hidden = true; // full screen on a phone: show the message
  }
}

export function closeSearch() {
  $('search-panel').hidden = true;
  current = null;
}

export function setupSearch() {
  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const query = $('search-input').value.trim();
    if (query) run(query);
  });
  $('search-files-only').addEventListener('change', render);
  $('search-more').addEventListener('click', () => current && run(current.query, true));
  $('search-close').addEventListener('click', () => {
    closeSearch();
    $('search-input').focus();
  });
}
