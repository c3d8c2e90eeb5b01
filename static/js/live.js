// Live events over the socket: the connection indicator, the catch-up after every
// (re)connection, and what each event changes on the page.

import { api, describeError, session } from './api.js';
import { ChatSocket } from './socket.js';
import { $, state, announceStatus } from './state.js';
import { fileCard, noticeItem } from './views.js';
import { fileActions, removeFileCard } from './filecards.js';
import { refreshStorage } from './storage.js';
import {
  catchUp, noteSeen, showNewMessage, showTyping, stopTyping, applyUpdate, applyDelete, applyReaction,
} from './pane.js';
import { showReply, catchUpThread } from './thread.js';
import {
  loadChannels, renderChannels, renderChannelMeta, forgetChannel, memberMap, loadMembers, dmHidden,
} from './sidebar.js';
import { fileAdded, fileGone } from './channelfiles.js';
import { notifyMessage, offerNotifications } from './notify.js';
import { applyUserUpdate } from './profile.js';

const CATCH_UP_PAGE = 100;

export const socket = new ChatSocket(() => session.token);

/**
 * The connection indicator. Its words change only between Connecting, Live and Offline (a
 * status region announces them); the reconnect countdown is shown beside them, unannounced.
 */
function renderConnection({ state: connection, retryIn }) {
  const el = $('connection');
  const text = $('connection-text');
  const detail = $('connection-detail');
  const wasOffline = el.dataset.state === 'offline' || el.dataset.retrying === 'yes';
  clearInterval(renderConnection.timer);
  detail.textContent = '';
  if (connection === 'online') {
    el.dataset.state = 'online';
    el.dataset.retrying = '';
    text.textContent = 'Live';
  } else if (connection === 'connecting' && !wasOffline) {
    el.dataset.state = 'connecting';
    text.textContent = 'Connecting…';
  } else {
    // Offline, or trying again after being offline: stay "Offline" until it works.
    el.dataset.state = 'offline';
    el.dataset.retrying = 'yes';
    text.textContent = 'Offline';
    if (connection === 'connecting') {
      detail.textContent = '· reconnecting…';
    } else if (retryIn) {
      const until = Date.now() + retryIn;
      const tick = () => {
        const seconds = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        detail.textContent = `· retrying in ${seconds} s`;
      };
      tick();
      renderConnection.timer = setInterval(tick, 1000);
    }
  }
}

async function onReady({ channel_ids: channelIds }) {
  const known = [...state.channels.keys()].sort().join(',');
  if ([...channelIds].sort().join(',') !== known) await loadChannels();
  if (state.current && !state.channels.has(state.current)) forgetChannel(state.current);
  try {
    if (state.view) await catchUp(state.view);
    catchUpThread();
    // Channels not on screen: count what arrived while we were away.
    for (const [id, last] of state.lastSeen) {
      if (id === state.current || !state.channels.has(id)) continue;
      const page = await api.messages(id, { after: last, limit: CATCH_UP_PAGE });
      const others = page.messages.filter((m) => m.user_id !== state.me.id).length;
      for (const m of page.messages) noteSeen(id, m.id);
      if (others) state.unread.set(id, (state.unread.get(id) || 0) + others);
    }
    renderChannels();
  } catch (err) {
    announceStatus(`Could not catch up. ${describeError(err)}`);
  }
}

function onEvent({ type, channel_id: channelId, data }) {
  const open = channelId === state.current && state.view;
  switch (type) {
    case 'message_created':
      noteAttention(channelId, data, open);
      if (data.thread_id) {
        // A reply: shown in its open thread; the timeline hears of it as the root's update.
        // It does not count as unread (the channel's listing holds top-level messages only).
        if (open) showReply(data, { announce: true });
      } else if (open) {
        showNewMessage(data, { announce: true });
      } else if (state.channels.has(channelId)) {
        noteSeen(channelId, data.id);
        if (data.user_id !== state.me.id) {
          state.unread.set(channelId, (state.unread.get(channelId) || 0) + 1);
          if ((data.mentions || []).includes(state.me.id)) {
            state.mentions.set(channelId, (state.mentions.get(channelId) || 0) + 1);
          }
          renderChannels();
        }
      }
      break;
    case 'read_updated': {
      // Read in another tab (or on another device) of this user.
      const channel = state.channels.get(channelId);
      if (channel) channel.last_read_id = Math.max(channel.last_read_id || 0, data.last_read_id);
      state.mentions.delete(channelId);
      if (state.unread.delete(channelId)) renderChannels();
      break;
    }
    case 'dm_hidden':
      dmHidden(channelId);
      break;
    case 'user_updated':
      applyUserUpdate(data.user);
      break;
    case 'file_upload_complete': {
      if (data.uploaded_by === state.me.id) refreshStorage();
      fileAdded(data);
      if (!open || document.querySelector(`.file-card[data-file-id="${data.id}"]`)) break;
      for (const item of document.querySelectorAll(`.message[data-id="${data.message_id}"]`)) {
        const list = item.querySelector('.attachments');
        list.append(fileCard({ ...data }, fileActions));
        list.hidden = false;
      }
      break;
    }
    case 'file_updated':
      // Previews are ready: the card's preview is rebuilt with the placeholder and the
      // thumbnail (its box takes the image's proportions; the pane stays pinned to the
      // bottom). Only the preview: the rest of the card keeps its focus and any delete
      // confirmation the user has open.
      for (const card of document.querySelectorAll(`.file-card[data-file-id="${data.id}"]`)) {
        const fresh = fileCard({ ...data }, fileActions);
        const info = card.querySelector('.card-info');
        if (!info) {
          card.replaceWith(fresh);
          continue;
        }
        for (const el of [...card.children]) {
          if (el === info) break;
          el.remove();
        }
        for (const el of [...fresh.children]) {
          if (el.classList.contains('card-info')) break;
          card.insertBefore(el, info);
        }
      }
      {
        // A message drawn again later (an edit, a reaction) keeps the previews.
        const files = state.messages.get(data.message_id)?.files;
        const at = files ? files.findIndex((f) => f.id === data.id) : -1;
        if (at >= 0) files[at] = { ...data };
      }
      break;
    case 'message_updated':
      if (open) applyUpdate(data);
      break;
    case 'message_deleted':
      if (open) applyDelete(data);
      break;
    case 'reaction_added':
    case 'reaction_removed':
      if (open) applyReaction(data, type === 'reaction_added');
      break;
    case 'file_deleted':
      // The event does not say whose file it was: ask (at most once a second).
      if (state.storage && state.storage.quota_bytes != null) refreshStorage();
      removeFileCard(data.id, { placeholder: data.reason !== 'message_deleted' });
      fileGone(data.id);
      break;
    case 'member_joined':
      if (data.user.id === state.me.id) {
        if (!state.channels.has(channelId)) loadChannels();
      } else if (state.members.has(channelId)) {
        memberMap(channelId).set(data.user.id, data.user);
        if (open && state.channels.get(channelId)?.kind !== 'dm') {
          $('message-list').append(noticeItem(`${data.user.display_name || data.user.username} joined.`));
          renderChannelMeta();
        }
      }
      break;
    case 'member_left':
      if (data.user.id === state.me.id) {
        forgetChannel(channelId);
        loadChannels();
      } else {
        state.members.get(channelId)?.delete(data.user.id);
        if (open) {
          stopTyping(data.user.id);
          $('message-list').append(noticeItem(`${data.user.display_name || data.user.username} left.`));
          renderChannelMeta();
        }
      }
      break;
    case 'typing':
      if (open) {
        if (!memberMap(channelId).has(data.user_id)) loadMembers(channelId);
        showTyping(data.user_id);
      }
      break;
    default:
      break; // events added later are ignored
  }
}

/**
 * A new message, wherever it goes: a hidden DM comes back, a hidden tab counts what the
 * open channel receives (for its title and icon), the reader may be notified, and after
 * their own first message they are offered notifications.
 */
function noteAttention(channelId, message, open) {
  const channel = state.channels.get(channelId);
  if (!channel) return;
  if (channel.hidden) {
    channel.hidden = false; // the server shows it again too
    renderChannels();
  }
  if (message.user_id === state.me.id) {
    offerNotifications();
    return;
  }
  if (open && !message.thread_id && document.visibilityState === 'hidden') {
    state.unread.set(channelId, (state.unread.get(channelId) || 0) + 1);
    if ((message.mentions || []).includes(state.me.id)) {
      state.mentions.set(channelId, (state.mentions.get(channelId) || 0) + 1);
    }
    renderChannels();
  }
  notifyMessage(message);
}

// Back on the tab: what the open channel received meanwhile is on screen now.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible' || !state.current) return;
  const counted = state.unread.delete(state.current);
  if (state.mentions.delete(state.current) || counted) renderChannels();
});

export function setupLive() {
  socket.addEventListener('state', (e) => renderConnection(e.detail));
  socket.addEventListener('ready', (e) => onReady(e.detail));
  socket.addEventListener('event', (e) => onEvent(e.detail));
}
