// Read state kept on the server (POST /api/channels/{id}/read): what the user has seen of
// the open channel is marked read there, so unread counts survive a reload and every tab
// agrees (the server tells the user's other sockets with `read_updated`). Only while the
// page is visible: a message arriving in a hidden tab is not read yet.

import { api } from './api.js';
import { state } from './state.js';

const DELAY_MS = 400; // one request for a burst of messages
const sent = new Map(); // channel id -> highest message id marked read from this tab
const wanted = new Map(); // channel id -> highest message id shown, not yet sent
let timer = null;

/** The open channel shows messages up to `messageId`. */
export function markRead(channelId, messageId) {
  if (!messageId || (sent.get(channelId) ?? 0) >= messageId) return;
  wanted.set(channelId, Math.max(wanted.get(channelId) ?? 0, messageId));
  schedule();
}

function schedule() {
  if (timer || document.visibilityState !== 'visible') return;
  timer = setTimeout(flush, DELAY_MS);
}

async function flush() {
  timer = null;
  const batch = [...wanted];
  wanted.clear();
  for (const [channelId, messageId] of batch) {
    if (!state.channels.has(channelId)) continue;
    try {
      await api.markRead(channelId, messageId);
      sent.set(channelId, Math.max(sent.get(channelId) ?? 0, messageId));
      // The next visit's "New messages" divider starts after this.
      const channel = state.channels.get(channelId);
      if (channel) channel.last_read_id = Math.max(channel.last_read_id || 0, messageId);
    } catch {
      // Not fatal: the next message shown tries again.
    }
  }
}

document.addEventListener('visibilitychange', () => {
  if (wanted.size) schedule();
});

/** Forgets what this tab sent (log out). */
export function resetRead() {
  sent.clear();
  wanted.clear();
  clearTimeout(timer);
  timer = null;
}
