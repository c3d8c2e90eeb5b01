// Getting the reader's attention while the tab is hidden: a browser notification for a
// mention or a direct message, and an optional chime (WebAudio, no sound file). The
// permission is asked only when the reader says yes: a one-time banner offered after they
// first send a message, or the button in the sidebar; never on page load.

import { $, state, announceStatus } from './state.js';
import { authorName } from './views.js';

const SOUND_KEY = 'chat.notify.sound';
const OFFERED_KEY = 'chat.notify.offered';

const supported = () => typeof Notification !== 'undefined';

export function soundOn() {
  return localStorage.getItem(SOUND_KEY) === '1';
}

/** Whether a message is one the reader would want to be told about. */
export function wantsAttention(message, me, channel) {
  if (!me || message.user_id === me.id) return false;
  return (message.mentions || []).includes(me.id) || channel?.kind === 'dm';
}

let audio = null;

function audioContext() {
  if (!audio) {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return null;
    audio = new Context();
  }
  return audio;
}

/** Two short soft tones, made by oscillators. */
export function chime() {
  const ctx = audioContext();
  if (!ctx) return;
  if (ctx.state === 'suspended') ctx.resume().catch(() => {});
  const start = ctx.currentTime + 0.01;
  for (const [frequency, delay] of [[880, 0], [1318.5, 0.13]]) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.value = frequency;
    gain.gain.setValueAtTime(0.0001, start + delay);
    gain.gain.exponentialRampToValueAtTime(0.18, start + delay + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + delay + 0.3);
    osc.connect(gain).connect(ctx.destination);
    osc.start(start + delay);
    osc.stop(start + delay + 0.35);
  }
}

let openChannelHandler = () => {};
/** What clicking a notification does (set by the app: open the channel). */
export function onNotificationClick(handler) {
  openChannelHandler = handler;
}

/** A message arrived: tell the reader if it is for them and they are looking elsewhere. */
export function notifyMessage(message) {
  const channel = state.channels.get(message.channel_id);
  if (!wantsAttention(message, state.me, channel)) return;
  if (document.visibilityState === 'visible' && document.hasFocus()) return;
  if (supported() && Notification.permission === 'granted') {
    const where = channel?.kind === 'dm' ? 'Direct message' : `#${channel?.name ?? ''}`;
    const files = message.files?.length ? ` (${message.files.length} file${message.files.length === 1 ? '' : 's'})` : '';
    const body = `${(message.content || '').slice(0, 180)}${files}`;
    try {
      const note = new Notification(`${authorName(message)} · ${where}`, {
        body, tag: `chat-${message.channel_id}`,
      });
      note.onclick = () => {
        window.focus();
        openChannelHandler(message.channel_id);
        note.close();
      };
    } catch {
      // Some browsers allow notifications from a service worker only: the chime still plays.
    }
  }
  if (soundOn()) chime();
}

async function askPermission() {
  localStorage.setItem(OFFERED_KEY, '1');
  hideBanner();
  if (!supported()) return;
  try {
    await Notification.requestPermission();
  } catch {
    // Old Safari: callback form only; nothing else to do here.
  }
  renderSettings();
  announceStatus(Notification.permission === 'granted'
    ? 'Notifications are on for mentions and direct messages.'
    : 'Notifications are off. You can allow them in the browser’s site settings.');
}

function hideBanner() {
  const banner = $('notify-banner');
  const hadFocus = banner.contains(document.activeElement);
  banner.hidden = true;
  if (hadFocus) $('message-input').focus();
}

/** After the reader sends a message: offer notifications once, if still undecided. */
export function offerNotifications() {
  if (!supported() || Notification.permission !== 'default') return;
  if (localStorage.getItem(OFFERED_KEY)) return;
  $('notify-banner').hidden = false;
}

function renderSettings() {
  $('notify-sound').checked = soundOn();
  const button = $('notify-allow');
  const status = $('notify-state');
  if (!supported()) {
    button.hidden = true;
    status.textContent = 'This browser cannot show notifications.';
  } else if (Notification.permission === 'default') {
    button.hidden = false;
    status.textContent = '';
  } else {
    button.hidden = true;
    status.textContent = Notification.permission === 'granted'
      ? 'Desktop notifications are on.'
      : 'Desktop notifications are blocked in this browser.';
  }
}

export function setupNotify() {
  renderSettings();
  $('notify-sound').addEventListener('change', (e) => {
    localStorage.setItem(SOUND_KEY, e.target.checked ? '1' : '0');
    if (e.target.checked) chime(); // a sample, and it unlocks audio on a user gesture
  });
  $('notify-allow').addEventListener('click', askPermission);
  $('notify-banner-yes').addEventListener('click', askPermission);
  $('notify-banner-no').addEventListener('click', () => {
    localStorage.setItem(OFFERED_KEY, '1');
    hideBanner();
  });
}
