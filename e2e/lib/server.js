// Builds and starts the real chatserver for the tests: a fresh temporary database and local
// file store per server, a free port on 127.0.0.1, and /healthz awaited.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync, statSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const JWT_SECRET = 'e2e-secret-0123456789-0123456789-0123456789';

let built = null;

/** `cargo build` once per run; CHATSERVER_BIN names a ready binary instead. */
export function serverBinary() {
  if (process.env.CHATSERVER_BIN) return process.env.CHATSERVER_BIN;
  if (!built) {
    const result = spawnSync('cargo', ['build', '--quiet', '--bin', 'chatserver'], {
      cwd: REPO,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (result.status !== 0) throw new Error(`cargo build failed (exit ${result.status})`);
    // Where cargo put it: CARGO_TARGET_DIR (relative to the repository) when set.
    const targetDir = process.env.CARGO_TARGET_DIR
      ? resolve(REPO, process.env.CARGO_TARGET_DIR)
      : join(REPO, 'target');
    built = join(targetDir, 'debug', 'chatserver');
  }
  return built;
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/**
 * Starts a server; `env` adds to or overrides the defaults (MAX_FILE_SIZE_MB, say). It may
 * be a function of the server's `url`, for settings that name it (AWS_S3_CORS_ORIGINS).
 * Returns {url, port, dataDir, log(), stop()}.
 */
export async function startServer(env = {}) {
  const binary = serverBinary();
  const dataDir = mkdtempSync(join(tmpdir(), 'chat-e2e-'));
  const port = await freePort();
  if (typeof env === 'function') env = env(`http://127.0.0.1:${port}`);
  const output = [];
  const child = spawn(binary, ['serve'], {
    cwd: dataDir, // not the repository: a developer's .env there must not leak in
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      BIND_ADDR: `127.0.0.1:${port}`,
      DATABASE_URL: `sqlite://${join(dataDir, 'chat.db')}`,
      DATA_DIR: dataDir,
      JWT_SECRET,
      GC_INTERVAL_SECONDS: '0',
      STATIC_DIR: join(REPO, 'static'),
      WORKERS: '2',
      RUST_LOG: 'warn',
      // Every test user registers from 127.0.0.1: one address, many people.
      REGISTRATIONS_PER_MINUTE_PER_ADDRESS: '1000',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => output.push(d.toString()));
  child.stderr.on('data', (d) => output.push(d.toString()));
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`chatserver exited (${JSON.stringify(exited)}):\n${output.join('')}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`chatserver did not answer /healthz in 30 s:\n${output.join('')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    url,
    port,
    dataDir,
    log: () => output.join(''),
    async stop() {
      if (!exited) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await gone;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Whether the server has the WebSocket endpoint yet (a plain GET answers 404 without it). */
export async function hasWebSocket(server) {
  const res = await fetch(`${server.url}/api/ws`);
  await res.arrayBuffer();
  return res.status !== 404;
}

/**
 * The local store's uploads in progress (DATA_DIR/files/tmp): a cancelled upload must leave
 * none behind. (storedObjects lists them too, but under names no channel filter matches.)
 */
export function tempFiles(server) {
  const tmp = join(server.dataDir, 'files', 'tmp');
  return existsSync(tmp) ? readdirSync(tmp) : [];
}

/** Every object in the server's local file store (DATA_DIR/files). */
export function storedObjects(server) {
  const root = join(server.dataDir, 'files');
  const found = [];
  const walk = (dir) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else found.push(path);
    }
  };
  walk(root);
  return found;
}

/** A small REST client for setting up and checking from outside the browser. */
export class Api {
  constructor(server, token = null) {
    this.base = server.url;
    this.token = token;
  }

  async call(method, path, body) {
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(`${this.base}${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  /** Registers a new user; returns an Api signed in as that user, with `.user` and `.password`. */
  async register(username, password = 'correct horse battery') {
    const answer = await this.call('POST', '/api/auth/register', { username, password });
    const api = new Api({ url: this.base }, answer.token);
    api.user = answer.user;
    api.password = password;
    return api;
  }

  messages(channelId, query = '') {
    return this.call('GET', `/api/channels/${channelId}/messages${query}`);
  }
}

let counter = 0;
/** A username no other test uses. */
export function uniqueName(prefix) {
  counter += 1;
  return `${prefix}${counter}${Date.now().toString(36).slice(-4)}`;
}
