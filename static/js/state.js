// Shared by the client's modules: the page's state, a DOM shortcut, and announcements for
// screen readers.

import { h } from './views.js';

export const $ = (id) => document.getElementById(id);

export const state = {
  me: null,
  channels: new Map(), // my channels, by id
  publicChannels: [],
  unread: new Map(), // channel id -> count of messages not yet seen
  mentions: new Map(), // channel id -> of those, how many mention me
  lastSeen: new Map(), // channel id -> highest message id known to this client
  members: new Map(), // channel id -> Map(user id -> user)
  current: null, // the open channel's id
  view: null, // the open channel's pane: {id, oldest, newest, hasOlder, loadingOlder, loaded}
  messages: new Map(), // id -> message, for the messages shown (timeline and thread panel)
  typing: new Map(), // user id -> timer, for the open channel
  lastTypingSent: 0,
  storage: null, // {used_bytes, quota_bytes, file_count} from GET /api/me/storage
  config: null, // GET /api/config: the server's public limits
};

/** Forgets everything about the signed-in user (log out). */
export function resetState() {
  Object.assign(state, {
    me: null, channels: new Map(), publicChannels: [], unread: new Map(), mentions: new Map(), lastSeen: new Map(),
    members: new Map(), current: null, view: null, messages: new Map(), lastTypingSent: 0, storage: null,
  });
}

export function announceMessage(text) {
  const region = $('announce-messages');
  region.append(h('p', {}, text));
  while (region.childElementCount > 5) region.firstElementChild.remove();
}

export function announceStatus(text) {
  const region = $('announce-status');
  region.textContent = '';
  // A fresh node after a tick, so the same words are announced again.
  requestAnimationFrame(() => { region.textContent = text; });
}
