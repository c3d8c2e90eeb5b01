// The chat client's entry point: signing in and out, and wiring the page's controls to the
// modules that do the work.

import { api, session, describeError, setUnauthorizedHandler } from './api.js';
import { $, state, resetState } from './state.js';
import { socket, setupLive } from './live.js';
import { setupPane, showChannelView, openChannel, clearTyping } from './pane.js';
import { setupSidebar, loadChannels } from './sidebar.js';
import { setupComposer, attachments, outbox } from './composer.js';
import { setupLightbox } from './filecards.js';
import { refreshStorage } from './storage.js';

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
    startApp(answer.user);
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

function logOut(message = '') {
  socket.stop();
  outbox.abortAll();
  attachments.clear();
  session.clear();
  sessionStorage.removeItem('chat.channel');
  clearTyping();
  resetState();
  $('my-channels').replaceChildren();
  $('public-channels').replaceChildren();
  $('message-list').replaceChildren();
  showChannelView(false);
  showAuth(message);
}

async function startApp(user) {
  state.me = user;
  $('auth-view').hidden = true;
  $('app-view').hidden = false;
  $('me-name').textContent = user.display_name || user.username;
  Object.assign($('connection').dataset, { state: 'connecting', retrying: '' });
  refreshStorage();
  // The server's public limits (retention shown in channel headers).
  state.config = await api.config().catch(() => null);
  await loadChannels();
  socket.start();
  const remembered = Number(sessionStorage.getItem('chat.channel'));
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
  setupLightbox();
  setupLive();
  const ended = () => logOut('Your session has ended. Please log in again.');
  socket.addEventListener('unauthorized', ended);
  setUnauthorizedHandler(ended);
}

async function boot() {
  wire();
  setAuthMode('login');
  if (!session.token) {
    showAuth();
    return;
  }
  try {
    const user = await api.me();
    session.save(session.token, user);
    await startApp(user);
  } catch (err) {
    if (session.token) logOut(err.status === 401 ? '' : describeError(err));
  }
}

boot();
