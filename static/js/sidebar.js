// The channel list: my channels with unread counts, public ones to join, creating a
// channel, adding a member, leaving; on narrow screens it is a drawer.

import { api, describeError } from './api.js';
import { $, state, announceStatus } from './state.js';
import { h, lockIcon, confirmPress } from './views.js';
import { openChannel, showChannelView } from './pane.js';
import { setFaviconBadge, titleFor } from './favicon.js';

export async function loadChannels() {
  try {
    const [mine, open] = await Promise.all([api.myChannels(), api.publicChannels()]);
    state.channels = new Map(mine.map((c) => [c.id, c]));
    state.publicChannels = open;
    // The server's unread counts (read state is kept there), for channels this page has
    // not counted itself yet.
    for (const channel of mine) {
      if (channel.id !== state.current && channel.unread_count > 0 && !state.unread.has(channel.id)) {
        state.unread.set(channel.id, channel.unread_count);
        if (channel.mention_count > 0) state.mentions.set(channel.id, channel.mention_count);
      }
    }
  } catch (err) {
    announceStatus(`Could not load channels. ${describeError(err)}`);
  }
  renderChannels();
}

/** A DM is named after the other person (its name is "alice, bobby": both usernames). */
export function dmPartner(channel) {
  const names = channel.name.split(',').map((n) => n.trim()).filter(Boolean);
  const me = state.me?.username;
  return names.find((n) => n !== me) || names[0] || channel.name;
}

/** The name a channel is listed under: its name, or the other person's for a DM. */
export function channelName(id) {
  const channel = state.channels.get(id) || state.publicChannels.find((c) => c.id === id);
  if (!channel) return String(id);
  return channel.kind === 'dm' ? dmPartner(channel) : channel.name;
}

/** "#design", or "@bobby" for a DM. */
export function channelTitle(channel) {
  if (!channel) return '';
  return channel.kind === 'dm' ? `@${dmPartner(channel)}` : `#${channel.name}`;
}

/** Redraws both lists; a button that had the focus keeps it (its twin in the new list). */
export function renderChannels() {
  const focusKey = $('sidebar').contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
  const all = [...state.channels.values()];
  const mine = all.filter((c) => c.kind !== 'dm');
  // A hidden DM stays out of the list until a message arrives in it (or it is open).
  const dms = all.filter((c) => c.kind === 'dm' && (!c.hidden || c.id === state.current));
  const button = (channel) => {
    const unread = state.unread.get(channel.id) || 0;
    const mentions = state.mentions.get(channel.id) || 0;
    const current = channel.id === state.current;
    const dm = channel.kind === 'dm';
    return h('li', {},
      h('button', {
        type: 'button',
        class: `channel-button${unread ? ' has-unread' : ''}${dm ? ' dm-button' : ''}`,
        'aria-current': current ? 'page' : null,
        dataset: { focusKey: `open-${channel.id}` },
        onclick: () => openChannel(channel.id),
      },
      h('span', { class: 'channel-hash', 'aria-hidden': 'true' },
        dm ? '@' : channel.is_private ? lockIcon() : '#'),
      h('span', { class: 'channel-name' }, dm ? dmPartner(channel) : channel.name),
      channel.is_private && !dm ? h('span', { class: 'visually-hidden' }, ' (private)') : null,
      unread
        ? h('span', { class: `unread-badge${mentions ? ' mention-badge' : ''}` },
          mentions ? `@${mentions}` : String(unread),
          h('span', { class: 'visually-hidden' },
            mentions ? ` mentions, ${unread} unread` : ' unread'))
        : null),
      dm ? h('button', {
        type: 'button',
        class: 'hide-dm',
        'aria-label': `Hide the conversation with ${dmPartner(channel)}`,
        title: 'Hide (it comes back with the next message)',
        dataset: { focusKey: `hide-${channel.id}` },
        onclick: () => hideDm(channel.id),
      }, '×') : null);
  };
  $('my-channels').replaceChildren(...mine.map(button));
  $('dm-list').replaceChildren(...dms.map(button));
  $('dm-empty').hidden = dms.length > 0;
  $('my-channels-empty').hidden = mine.length > 0;

  const joinable = state.publicChannels.filter((c) => !state.channels.has(c.id));
  $('public-channels').replaceChildren(...joinable.map((channel) => h('li', { class: 'joinable' },
    h('span', { class: 'channel-hash', 'aria-hidden': 'true' }, '#'),
    h('span', { class: 'channel-name' }, channel.name),
    h('button', {
      type: 'button', class: 'small secondary', 'aria-label': `Join ${channel.name}`,
      dataset: { focusKey: `join-${channel.id}` },
      onclick: () => joinChannel(channel.id),
    }, 'Join'))));
  $('public-channels-empty').hidden = joinable.length > 0;
  if (focusKey) $('sidebar').querySelector(`[data-focus-key="${focusKey}"]`)?.focus();
  updateTitle();
}

/** The tab's title and icon, from the unread and mention counts (the server's, kept live). */
export function updateTitle() {
  const sum = (map) => [...map.values()].reduce((a, b) => a + b, 0);
  const unread = sum(state.unread);
  const mentions = sum(state.mentions);
  const channel = state.current ? channelTitle(state.channels.get(state.current)) : '';
  document.title = titleFor({ unread, mentions, channel });
  setFaviconBadge({ unread, mentions });
}

/** Hides a DM from the list until its next message; the server remembers it for every tab. */
async function hideDm(id) {
  const name = channelName(id);
  try {
    await api.hideDm(id);
  } catch (err) {
    announceStatus(`Could not hide it. ${describeError(err)}`);
    return;
  }
  dmHidden(id);
  announceStatus(`Hid the conversation with ${name}. It comes back when a message arrives.`);
  ($('dm-list').querySelector('.channel-button') || $('new-dm-toggle')).focus();
}

/** A DM was hidden (here, or in another tab: `dm_hidden`). */
export function dmHidden(id) {
  const channel = state.channels.get(id);
  if (!channel) return;
  channel.hidden = true;
  if (state.current === id) {
    state.current = null;
    state.view = null;
    sessionStorage.removeItem('chat.channel');
    localStorage.removeItem('chat.channel');
    showChannelView(false);
  }
  renderChannels();
}

async function joinChannel(id) {
  try {
    const channel = await api.joinChannel(id);
    state.channels.set(channel.id, channel);
    renderChannels();
    await openChannel(channel.id);
    $('sidebar').querySelector(`[data-focus-key="open-${channel.id}"]`)?.focus();
    announceStatus(`Joined #${channel.name}.`);
  } catch (err) {
    announceStatus(`Could not join. ${describeError(err)}`);
  }
}

async function createChannel(event) {
  event.preventDefault();
  const input = $('new-channel-name');
  const error = $('create-channel-error');
  const name = input.value.trim();
  if (!name) {
    error.textContent = 'Give the channel a name.';
    input.focus();
    return;
  }
  error.textContent = '';
  try {
    const channel = await api.createChannel(name, $('new-channel-private').checked);
    state.channels.set(channel.id, channel);
    input.value = '';
    $('new-channel-private').checked = false;
    renderChannels();
    await openChannel(channel.id);
    announceStatus(`Created #${channel.name}.`);
  } catch (err) {
    error.textContent = describeError(err);
  }
}

async function addMember(event) {
  event.preventDefault();
  const input = $('add-member-username');
  const status = $('add-member-status');
  const username = input.value.trim();
  if (!username || !state.current) return;
  try {
    const user = await api.addMember(state.current, username);
    memberMap(state.current).set(user.id, user);
    status.textContent = `Added ${user.username}.`;
    input.value = '';
  } catch (err) {
    status.textContent = err.code === 'not_found' ? `There is no user named “${username}”.` : describeError(err);
  }
}

/** "New message": a direct message with someone, by exact username. */
async function startDm(event) {
  event.preventDefault();
  const input = $('new-dm-username');
  const status = $('new-dm-status');
  const username = input.value.trim().toLowerCase();
  if (!username) {
    status.textContent = 'Enter a username.';
    input.focus();
    return;
  }
  if (username === state.me.username) {
    status.textContent = 'That is you. Pick someone else.';
    return;
  }
  status.textContent = '';
  try {
    const channel = await api.openDm(username);
    state.channels.set(channel.id, channel);
    input.value = '';
    toggleDmForm(false);
    renderChannels();
    await openChannel(channel.id);
    $('message-input').focus();
  } catch (err) {
    status.textContent = err.code === 'not_found' ? `There is no user named “${username}”.` : describeError(err);
  }
}

function toggleDmForm(open) {
  const form = $('new-dm-form');
  form.hidden = !open;
  $('new-dm-toggle').setAttribute('aria-expanded', String(open));
  $('new-dm-status').textContent = '';
  if (open) $('new-dm-username').focus();
}

async function leaveChannel() {
  const id = state.current;
  if (!id) return;
  const name = channelName(id);
  const confirmed = confirmPress($('leave-channel'), {
    text: 'Confirm leave',
    label: `Confirm: leave #${name}`,
    hint: state.channels.get(id)?.is_private
      ? 'Press again to leave. Only a member can add you back to a private channel.'
      : 'Press again to leave this channel.',
    status: $('channel-status'),
  });
  if (!confirmed) return;
  try {
    await api.leaveChannel(id);
  } catch (err) {
    if (err.code !== 'not_found') {
      announceStatus(`Could not leave. ${describeError(err)}`);
      return;
    }
  }
  forgetChannel(id);
  announceStatus(`You left #${name}.`);
  await loadChannels();
  $('my-channels').querySelector('button')?.focus();
}

/** The channel is no longer ours: drop it and close it if it was open. */
export function forgetChannel(id) {
  state.channels.delete(id);
  state.unread.delete(id);
  state.lastSeen.delete(id);
  state.members.delete(id);
  if (state.current === id) {
    state.current = null;
    state.view = null;
    sessionStorage.removeItem('chat.channel');
    localStorage.removeItem('chat.channel');
    showChannelView(false);
  }
  renderChannels();
}

export function memberMap(channelId) {
  if (!state.members.has(channelId)) state.members.set(channelId, new Map());
  return state.members.get(channelId);
}

export async function loadMembers(channelId) {
  try {
    const users = await api.members(channelId);
    const map = memberMap(channelId);
    map.clear();
    for (const user of users) map.set(user.id, user);
    if (state.current === channelId) renderChannelMeta();
  } catch {
    // Names fall back to what messages carry.
  }
}

/** How long the channel's files are kept: the shorter of its own and the server's. */
function retentionDays(channel) {
  const limits = [channel.retention_days, state.config?.file_retention_days]
    .filter((days) => Number.isInteger(days) && days > 0);
  return limits.length ? Math.min(...limits) : null;
}

export function renderChannelMeta() {
  const channel = state.channels.get(state.current);
  if (!channel) return;
  const count = state.members.get(channel.id)?.size;
  if (channel.kind === 'dm') {
    $('channel-meta').textContent = 'Direct message';
    return;
  }
  const kind = channel.is_private ? 'Private channel' : 'Public channel';
  const parts = [kind];
  if (count) parts.push(`${count} ${count === 1 ? 'member' : 'members'}`);
  const days = retentionDays(channel);
  if (days) parts.push(`files kept ${days} ${days === 1 ? 'day' : 'days'}`);
  $('channel-meta').textContent = parts.join(' · ');
}

// Narrow screens: the channel list slides in.

const narrow = window.matchMedia('(max-width: 760px)');

function openSidebar() {
  document.body.classList.add('sidebar-open');
  $('sidebar-toggle').setAttribute('aria-expanded', 'true');
  $('sidebar-toggle').setAttribute('aria-label', 'Hide channels');
  $('sidebar-backdrop').hidden = false;
  ($('sidebar').querySelector('button, input') || $('sidebar')).focus();
}

export function closeSidebar() {
  if (!document.body.classList.contains('sidebar-open')) return;
  document.body.classList.remove('sidebar-open');
  $('sidebar-toggle').setAttribute('aria-expanded', 'false');
  $('sidebar-toggle').setAttribute('aria-label', 'Show channels');
  $('sidebar-backdrop').hidden = true;
  if (narrow.matches) $('sidebar-toggle').focus();
}

export function setupSidebar() {
  $('create-channel-form').addEventListener('submit', createChannel);
  $('new-dm-toggle').addEventListener('click', () => toggleDmForm($('new-dm-form').hidden));
  $('new-dm-form').addEventListener('submit', startDm);
  $('new-dm-form').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      e.stopPropagation();
      toggleDmForm(false);
      $('new-dm-toggle').focus();
    }
  });
  $('add-member-toggle').addEventListener('click', () => {
    const form = $('add-member-form');
    form.hidden = !form.hidden;
    $('add-member-toggle').setAttribute('aria-expanded', String(!form.hidden));
    if (!form.hidden) $('add-member-username').focus();
  });
  $('add-member-form').addEventListener('submit', addMember);
  $('leave-channel').addEventListener('click', leaveChannel);
  $('sidebar-toggle').addEventListener('click', () => {
    if (document.body.classList.contains('sidebar-open')) closeSidebar();
    else openSidebar();
  });
  $('sidebar-backdrop').addEventListener('click', closeSidebar);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('sidebar-open')) closeSidebar();
  });
}
