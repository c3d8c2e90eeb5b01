// The chat client's entry point: signing in and out, and wiring the page's controls to the
// modules that do the work.

import { api, session, describeError, setUnauthorizedHandler, SESSION_KEYS } from './api.js';
import { $, state, resetState } from './state.js';
import { socket, setupLive } from './live.js';
import { setupPane, showChannelView, openChannel, clearTyping } from './pane.js';
import { setupSidebar, loadChannels } from './sidebar.js';
import {
  setupComposer, attachments, outbox, clearSendError, showLimits,
} from './composer.js';
import { applyConfig } from './files.js';
import { setupGallery, setupVoiceNotes } from './media.js';
import { refreshStorage } from './storage.js';
import { resetRead } from './read.js';
import { setupSearch, closeSearch } from './search.js';
import { setupActions } from './actions.js';
import { setupThread, closeThread } from './thread.js';
import { setupChannelFiles, closeFiles } from './channelfiles.js';
import { setupNotify, onNotificationClick } from './notify.js';
import { mentionReader } from './mentions.js';
import { setMentionReader } from './views.js';
import { setupProfile } from './profile.js';

let authMode = 'login';

function setAuthMode(mode) {
  authMode = mode;
  const register = mode === 'register';
  $('mode-login').setAttribute('aria-pressed', String(!register));
  $('mode-register').setAttribute('aria-pressed', String(register));
  $('auth-title').textContent = register ? 'Register' : 'Log in';
  $('auth-submit').textContent = register ? 'Create account' : 'Log in';
  $('display-name-field').hidden = !register;
  $('auth-username-hint').hidden = !register;
  $('auth-password-hint').hidden = !register;
  $('auth-password').autocomplete = register ? 'new-password' : 'current-password';
  $('auth-error').textContent = '';
}

async function submitAuth(event) {
  event.preventDefault();
  const username = $('auth-username').value.trim();
  const password = $('auth-password').value;
  const error = $('auth-error');
  if (!username || !password) {
    error.textContent = 'Enter a username and a password.';
    return;
  }
  const button = $('auth-submit');
  button.disabled = true;
  error.textContent = '';
  try {
    const answer = authMode === 'register'
      ? await api.register(username, password, $('auth-display-name').value.trim() || undefined)
      : await api.login(username, password);
    session.save(answer.token, answer.user);
    $('auth-password').value = '';
    await startApp(answer.user);
    focusAfterLogin();
  } catch (err) {
    error.textContent = describeError(err);
  } finally {
    button.disabled = false;
  }
}

function showAuth(message = '') {
  $('app-view').hidden = true;
  $('auth-view').hidden = false;
  $('auth-error').textContent = message;
  document.title = 'Chat';
  $('auth-username').focus();
}

/** After signing in: the message box of the open channel, or the first thing to do. */
function focusAfterLogin() {
  if (!$('channel-view').hidden) $('message-input').focus();
  else ($('sidebar').querySelector('.channel-button') || $('new-channel-name')).focus();
}

function logOut(message = '') {
  if (state.me === null && !$('auth-view').hidden) {
    if (message) $('auth-error').textContent = message;
    return; // already signed out (another tab did it, say)
  }
  socket.stop();
  outbox.abortAll();
  attachments.clear();
  session.clear(); // other tabs hear of it (the storage event) and sign out too
  sessionStorage.removeItem('chat.channel');
  localStorage.removeItem('chat.channel');
  clearTyping();
  closeThread();
  closeFiles(false);
  resetState();
  resetRead();
  closeSearch();
  $('search-input').value = '';
  $('my-channels').replaceChildren();
  $('dm-list').replaceChildren();
  $('public-channels').replaceChildren();
  $('message-list').replaceChildren();
  showChannelView(false);
  showAuth(message);
}

async function startApp(user) {
  state.me = user;
  setMentionReader(mentionReader(user, (channelId) => new Set(
    [...(state.members.get(channelId)?.values() || [])].map((u) => u.username),
  )));
  $('auth-view').hidden = true;
  $('app-view').hidden = false;
  $('me-name').textContent = user.display_name || user.username;
  Object.assign($('connection').dataset, { state: 'connecting', retrying: '' });
  refreshStorage();
  await loadChannels();
  outbox.restore((id) => state.channels.has(id)); // direct uploads a reload interrupted
  socket.start();
  const remembered = Number(sessionStorage.getItem('chat.channel') || localStorage.getItem('chat.channel'));
  const first = state.channels.has(remembered) ? remembered : state.channels.keys().next().value;
  if (first !== undefined) await openChannel(first);
  else showChannelView(false);
}

// Wiring

function wire() {
  $('mode-login').addEventListener('click', () => setAuthMode('login'));
  $('mode-register').addEventListener('click', () => setAuthMode('register'));
  $('auth-form').addEventListener('submit', submitAuth);
  $('logout').addEventListener('click', () => logOut());

  setupSidebar();
  setupPane();
  setupComposer();
  setupGallery();
  setupVoiceNotes({
    canRecord: () => Boolean(state.current),
    send: (file) => outbox.send(state.current, '', [file]),
  });
  setupActions();
  setupThread();
  setupSearch();
  setupChannelFiles();
  setupNotify();
  setupProfile();
  onNotificationClick((channelId) => openChannel(channelId));
  setupLive();
  const ended = () => logOut('Your session has ended. Please log in again.');
  socket.addEventListener('unauthorized', ended);
  socket.addEventListener('ready', clearSendError);
  setUnauthorizedHandler(ended);
  window.addEventListener('storage', onSessionChanged);
}

/** Another tab signed in or out: follow it. */
function onSessionChanged(event) {
  if (event.key !== SESSION_KEYS.token && event.key !== null) return;
  const token = session.token;
  if (!token) {
    if (state.me) logOut();
  } else if (!state.me) {
    resume();
  } else if (event.key === SESSION_KEYS.token && event.oldValue && event.newValue !== event.oldValue) {
    // Someone else signed in on another tab: start over as them.
    location.reload();
  }
}

/** Signs in with the stored token (a reload, a new tab, another tab's login). */
async function resume() {
  try {
    const user = await api.me();
    session.save(session.token, user);
    await startApp(user);
  } catch (err) {
    if (session.token) logOut(err.status === 401 ? '' : describeError(err));
  }
}

async function loadConfig() {
  try {
    state.config = await api.config(); // retention, shown in channel headers
    applyConfig(state.config);
  } catch {
    // The defaults stand; the server still enforces its own limits.
  }
  showLimits();
}

async function boot() {
  wire();
  setAuthMode('login');
  showLimits();
  const config = loadConfig();
  if (!session.token) {
    showAuth();
    return;
  }
  await config;
  await resume();
}

boot();
