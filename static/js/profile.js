// The reader's display name (PATCH /api/me, from the "Signed in as" button), and renames
// arriving live (`user_updated`): members' names, shown messages, the header.

import { api, session, describeError } from './api.js';
import { $, state, announceStatus } from './state.js';
import { updateMessageItem } from './views.js';
import { messageContext } from './actions.js';
import { renderChannels } from './sidebar.js';

/** Someone (perhaps the reader) has a new display name. */
export function applyUserUpdate(user) {
  for (const members of state.members.values()) {
    if (members.has(user.id)) members.set(user.id, user);
  }
  if (state.me && user.id === state.me.id) {
    state.me.display_name = user.display_name;
    session.save(session.token, state.me);
    $('me-name').textContent = user.display_name || user.username;
  }
  for (const message of state.messages.values()) {
    if (message.user_id !== user.id || message.display_name === user.display_name) continue;
    message.display_name = user.display_name;
    for (const item of document.querySelectorAll(`.message[data-id="${message.id}"]`)) {
      updateMessageItem(item, message, messageContext(item.closest('#thread-panel') !== null));
    }
  }
  renderChannels();
}

function openForm(open) {
  $('profile-form').hidden = !open;
  $('profile-toggle').setAttribute('aria-expanded', String(open));
  $('profile-error').textContent = '';
  if (open) {
    $('profile-name').value = state.me?.display_name || '';
    $('profile-name').focus();
    $('profile-name').select();
  }
}

async function save(event) {
  event.preventDefault();
  const name = $('profile-name').value.trim();
  if (!name) {
    $('profile-error').textContent = 'A display name is 1 to 64 characters.';
    return;
  }
  try {
    const user = await api.updateMe(name);
    applyUserUpdate(user);
    openForm(false);
    $('profile-toggle').focus();
    announceStatus(`Your display name is now ${user.display_name}.`);
  } catch (err) {
    $('profile-error').textContent = describeError(err);
  }
}

export function setupProfile() {
  $('profile-toggle').addEventListener('click', () => openForm($('profile-form').hidden));
  $('profile-form').addEventListener('submit', save);
  $('profile-form').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      e.stopPropagation();
      openForm(false);
      $('profile-toggle').focus();
    }
  });
  $('profile-cancel').addEventListener('click', () => {
    openForm(false);
    $('profile-toggle').focus();
  });
}
