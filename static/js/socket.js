// The live connection, `GET /api/ws` (shared/API.md, WebSocket section): authenticate with
// the first frame, wait for `ready`, hand each event on, keep the connection checked with
// pings, and reconnect with exponential backoff after any drop. The app backfills what it
// missed over REST (`?after=<last id>`) on every `ready`, so a drop loses nothing.
//
// Events dispatched on the ChatSocket (an EventTarget):
//   state        detail {state: 'connecting'|'online'|'offline', retryIn?: ms}
//   ready        detail {user_id, channel_ids}
//   event        detail {type, channel_id, data}
//   unauthorized the server refused the token (close code 4001)

const AUTH_TIMEOUT_MS = 10_000; // the server allows 10 s for the auth frame; wait as long for ready
const PING_EVERY_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

export const CLOSE_BAD_TOKEN = 4001;
export const CLOSE_TOO_SLOW = 4008;
export const CLOSE_RESYNC = 4009;

export class ChatSocket extends EventTarget {
  constructor(getToken) {
    super();
    this.getToken = getToken;
    this.ws = null;
    this.state = 'offline';
    this.attempt = 0;
    this.stopped = true;
    this.timers = {};
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.drop('the browser went offline');
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    this.clearTimers();
    this.closeSocket();
    this.setState('offline');
  }

  /** Sends a client frame; false when not connected (the caller decides what to do). */
  send(frame) {
    if (this.state !== 'online') return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  connect() {
    this.clearTimers();
    this.closeSocket();
    if (this.stopped) return;
    this.setState('connecting');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/api/ws`);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'auth', token: this.getToken() }));
      this.timers.auth = setTimeout(() => this.drop('no ready frame in time'), AUTH_TIMEOUT_MS);
    };
    ws.onmessage = (e) => this.receive(e.data);
    ws.onclose = (e) => {
      if (ws !== this.ws) return; // an old socket we already gave up on
      this.ws = null;
      if (e.code === CLOSE_BAD_TOKEN) {
        this.stop();
        this.dispatchEvent(new CustomEvent('unauthorized'));
        return;
      }
      // 4008: we fell behind; 4009: the server lost events we should have had. Either way
      // come back soon (the first, jittered backoff) and backfill. Anything else: back off.
      if (e.code === CLOSE_TOO_SLOW || e.code === CLOSE_RESYNC) this.attempt = 0;
      this.scheduleReconnect();
    };
    // onerror is always followed by onclose, which does the work.
    ws.onerror = () => {};
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    this.armPing(); // any frame shows the connection is alive
    switch (frame.type) {
      case 'ready':
        clearTimeout(this.timers.auth);
        this.attempt = 0;
        this.setState('online');
        this.dispatchEvent(new CustomEvent('ready', { detail: frame }));
        break;
      case 'pong':
        break;
      case 'error':
        console.warn('chat socket:', frame.code, frame.message);
        break;
      default:
        if (frame.channel_id !== undefined) this.dispatchEvent(new CustomEvent('event', { detail: frame }));
    }
  }

  /** After a quiet spell, ping; no answer in time means the connection is dead. */
  armPing() {
    clearTimeout(this.timers.ping);
    clearTimeout(this.timers.pong);
    this.timers.ping = setTimeout(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      this.ws.send(JSON.stringify({ type: 'ping' }));
      this.timers.pong = setTimeout(() => this.drop('no pong'), PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  /** Gives up on the current connection and schedules the next try. */
  drop(reason) {
    if (this.stopped) return;
    if (this.ws) console.info(`chat socket: reconnecting (${reason})`);
    this.closeSocket();
    this.scheduleReconnect();
  }

  reconnectNow() {
    if (this.stopped || this.state === 'online') return;
    if (this.ws && this.ws.readyState === WebSocket.CONNECTING) return; // already trying
    this.attempt = 0;
    this.connect();
  }

  scheduleReconnect() {
    this.clearTimers();
    if (this.stopped) return;
    // Exponential backoff with jitter: 1 s, 2 s, 4 s, ... up to 30 s.
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this.attempt += 1;
    this.setState('offline', delay);
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  closeSocket() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === WebSocket.CONNECTING) {
        // Closing a socket that is still connecting logs a browser error: close it once open.
        ws.onopen = () => ws.close(1000);
      } else {
        ws.onopen = null;
        if (ws.readyState === WebSocket.OPEN) ws.close(1000);
      }
    }
  }

  clearTimers() {
    for (const id of Object.values(this.timers)) clearTimeout(id);
    this.timers = {};
  }

  setState(state, retryIn) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, retryIn } }));
  }
}
