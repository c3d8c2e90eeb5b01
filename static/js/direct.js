// Direct uploads (docs/api.md, "Direct uploads"): big files go to the store in parts, with
// presigned part URLs, never through the chat server. Parts go up a few at a time over
// XMLHttpRequest (for progress), each retried with backoff; what was sent is remembered in
// localStorage so that, after a reload, picking the same file again sends only what is missing.

import { api, ApiError, session } from './api.js';
import { limits } from './files.js';

const MiB = 1024 * 1024;
const IN_FLIGHT = 4;
const ATTEMPTS = 5; // per part, before the send fails
const URL_BATCH = 100; // the most part URLs one call hands out
const STORE_KEY = 'chat.direct';
// Tests (and curious users) may lower the threshold: localStorage['chat.directThreshold'].
const THRESHOLD_KEY = 'chat.directThreshold';

/** Files at least this big go direct (8 MiB unless overridden). */
export function directThreshold() {
  const override = Number(localStorage.getItem(THRESHOLD_KEY));
  return Number.isFinite(override) && override > 0 ? override : 8 * MiB;
}

/** A message goes direct when the server takes direct uploads and one of its files is big. */
export function goesDirect(files) {
  return limits.directUploads && files.some((f) => f.size >= directThreshold());
}

export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// What is remembered, per signed-in user: `uploads` (one per file: the upload id, the file's
// identity, its part size and the ETags of the parts sent) and `sends` (one per message:
// its key, channel, text and files), so a reload can offer to finish them.
function load() {
  try {
    const all = JSON.parse(localStorage.getItem(STORE_KEY)) || {};
    return all[session.user?.id] || { uploads: [], sends: [] };
  } catch {
    return { uploads: [], sends: [] };
  }
}

function save(mine) {
  let all;
  try {
    all = JSON.parse(localStorage.getItem(STORE_KEY)) || {};
  } catch {
    all = {};
  }
  all[session.user?.id] = mine;
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(all));
  } catch {
    // Storage full or refused: the upload goes on, it just cannot be resumed after a reload.
  }
}

const sameFile = (rec, channelId, file) => rec.channel_id === channelId && rec.name === file.name
  && rec.size === file.size && rec.lastModified === file.lastModified;

function findUpload(channelId, file) {
  return load().uploads.find((rec) => sameFile(rec, channelId, file)) || null;
}

function putUpload(rec) {
  const mine = load();
  mine.uploads = mine.uploads.filter((r) => r.upload_id !== rec.upload_id).concat(rec);
  save(mine);
}

function dropUpload(uploadId) {
  const mine = load();
  mine.uploads = mine.uploads.filter((r) => r.upload_id !== uploadId);
  save(mine);
}

/** The sends a reload interrupted (or a failure left), for the outbox to offer again. */
export function rememberedSends() {
  return load().sends;
}

export function rememberSend(send) {
  const mine = load();
  mine.sends = mine.sends.filter((s) => s.key !== send.key).concat(send);
  save(mine);
}

/** Forgets a send (another send took its files over), keeping their uploads. */
export function dropSend(key) {
  const mine = load();
  mine.sends = mine.sends.filter((s) => s.key !== key);
  save(mine);
}

/** Forgets a send and the uploads of its files. */
export function forgetSend(key, channelId, files) {
  const mine = load();
  mine.sends = mine.sends.filter((s) => s.key !== key);
  mine.uploads = mine.uploads.filter((rec) => !files.some((f) => sameFile(rec, channelId, f)));
  save(mine);
}

/** How much of a remembered file is stored already (0..1), from its remembered ETags. */
export function rememberedFraction(channelId, file) {
  const rec = findUpload(channelId, file);
  if (!rec) return 0;
  const bytes = Object.keys(rec.etags).reduce((sum, n) => sum + partLength(rec, Number(n)), 0);
  return file.size ? Math.min(1, bytes / file.size) : 0;
}

function partLength(rec, n) {
  return Math.max(0, Math.min(rec.part_size, rec.size - (n - 1) * rec.part_size));
}

/** Ends the remembered uploads of these files (cancel, dismiss); errors are not the user's concern. */
export async function abandonUploads(channelId, files) {
  const ids = files.map((f) => findUpload(channelId, f)?.upload_id).filter(Boolean);
  for (const id of ids) dropUpload(id);
  await Promise.all(ids.map((id) => api.cancelUpload(id).catch(() => {})));
}

/**
 * Sends a message whose files go direct. `onProgress(index, fraction)` per file, `onPhase(text)`
 * for what is going on. Returns `{promise, pause, stop}`: `pause()` aborts the parts in
 * flight (resuming sends only the missing ones), the promise then rejects with code `paused`.
 */
export function sendDirect({ key, channelId, content, files, onProgress, onPhase }) {
  const ctl = { stopped: null, xhrs: new Set(), sleepers: new Set() };
  const stop = (why) => {
    if (ctl.stopped) return;
    ctl.stopped = why;
    for (const xhr of ctl.xhrs) xhr.abort();
    for (const wake of ctl.sleepers) wake();
  };
  const promise = (async () => {
    const ids = [];
    for (const [index, file] of files.entries()) {
      ids.push(await uploadFile(ctl, channelId, file, (fraction) => onProgress(index, fraction)));
    }
    check(ctl);
    onPhase('posting');
    const message = await api.postWithUploads(channelId, content, ids, key);
    forgetSend(key, channelId, files);
    return message;
  })();
  promise.catch(() => {}); // the caller handles it; a pause must not log an unhandled rejection
  return { promise, pause: () => stop('paused'), abort: () => stop('aborted') };
}

function check(ctl) {
  if (ctl.stopped) throw new ApiError(0, ctl.stopped, '');
}

function sleep(ctl, ms) {
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      ctl.sleepers.delete(wake);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    ctl.sleepers.add(wake);
  });
}

/** One file: create (or find) its upload, send the parts it lacks, complete it. Returns its id. */
async function uploadFile(ctl, channelId, file, report) {
  check(ctl);
  let rec = findUpload(channelId, file);
  let upload = null;
  if (rec) {
    try {
      upload = await api.getUpload(rec.upload_id);
    } catch (err) {
      if (err.status !== 404) throw err;
    }
    if (!upload || !['pending', 'ready'].includes(upload.state) || upload.file_size !== file.size
      || upload.part_size !== rec.part_size) {
      dropUpload(rec.upload_id);
      rec = null;
      upload = null;
    }
  }
  if (!upload) {
    check(ctl);
    const fields = { channel_id: channelId, file_name: file.name, file_size: file.size };
    if (file.type) fields.content_type = file.type;
    upload = await api.createUpload(fields);
    rec = {
      upload_id: upload.id, channel_id: channelId, name: file.name, size: file.size,
      lastModified: file.lastModified, part_size: upload.part_size, part_count: upload.part_count, etags: {},
    };
    putUpload(rec);
  }
  if (upload.state === 'ready') {
    report(1);
    return upload.id;
  }

  // Parts the store holds and whose ETag we know are done; any other is sent (again).
  const stored = new Set(upload.parts_done || []);
  for (const n of Object.keys(rec.etags)) if (!stored.has(Number(n))) delete rec.etags[n];
  putUpload(rec);
  const sent = new Map(); // part number -> bytes sent
  const show = () => report(Math.min(1, [...sent.values()].reduce((a, b) => a + b, 0) / file.size));
  const todo = [];
  for (let n = 1; n <= rec.part_count; n += 1) {
    if (rec.etags[n]) sent.set(n, partLength(rec, n));
    else todo.push(n);
  }
  show();

  const urls = new Map(); // part number -> {url, expires}
  const fetchUrls = async (from) => {
    // This part and the next ones without a fresh URL, in one call.
    const wanted = todo.slice(todo.indexOf(from)).filter((n) => n === from || !fresh(urls.get(n))).slice(0, URL_BATCH);
    const answer = await api.partUrls(rec.upload_id, wanted);
    for (const p of answer.parts) urls.set(p.part_number, { url: p.url, expires: Date.parse(p.expires_at) });
  };

  const sendPart = async (n) => {
    const start = (n - 1) * rec.part_size;
    const blob = file.slice(start, start + partLength(rec, n));
    for (let attempt = 1; ; attempt += 1) {
      check(ctl);
      try {
        if (!fresh(urls.get(n))) await fetchUrls(n);
        check(ctl);
        const etag = await putPart(ctl, urls.get(n).url, blob, (loaded) => {
          sent.set(n, loaded);
          show();
        });
        rec.etags[n] = etag;
        putUpload(rec);
        sent.set(n, blob.size);
        show();
        return;
      } catch (err) {
        sent.set(n, 0);
        show();
        if (ctl.stopped || attempt >= ATTEMPTS || !retryable(err)) throw err;
        if (err.status === 403) urls.delete(n); // expired or refused: ask for a new URL
        await sleep(ctl, 500 * 2 ** (attempt - 1));
      }
    }
  };

  let next = 0;
  const worker = async () => {
    while (next < todo.length && !ctl.stopped) {
      const n = todo[next];
      next += 1;
      await sendPart(n);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, todo.length) }, worker));
  } catch (err) {
    if (!ctl.stopped) ctl.stopped = 'failed';
    for (const xhr of ctl.xhrs) xhr.abort();
    throw err.code === 'aborted' && ctl.stopped !== 'failed' ? new ApiError(0, ctl.stopped, '') : err;
  }
  check(ctl);

  const parts = [];
  for (let n = 1; n <= rec.part_count; n += 1) parts.push({ part_number: n, etag: rec.etags[n] });
  try {
    await api.completeUpload(rec.upload_id, parts);
  } catch (err) {
    // Refused for good (wrong type, wrong size): the server deleted it; a retry starts over.
    if ([413, 415, 422].includes(err.status)) dropUpload(rec.upload_id);
    throw err;
  }
  return rec.upload_id;
}

const fresh = (u) => Boolean(u) && u.expires - Date.now() > 30_000;

function retryable(err) {
  if (!(err instanceof ApiError)) return false;
  return err.code === 'network' || err.status === 403 || err.status === 408 || err.status === 429
    || err.status >= 500;
}

/** PUTs one part; resolves with the ETag the store answered. */
function putPart(ctl, url, blob, onProgress) {
  const xhr = new XMLHttpRequest();
  ctl.xhrs.add(xhr);
  return new Promise((resolve, reject) => {
    xhr.open('PUT', url);
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      ctl.xhrs.delete(xhr);
      const etag = xhr.getResponseHeader('ETag');
      if (xhr.status >= 200 && xhr.status < 300 && etag) resolve(etag);
      else if (xhr.status >= 200 && xhr.status < 300) {
        // S3 without the CORS rule that exposes ETag (see README, "Bucket setup").
        reject(new ApiError(0, 'no_etag', 'the file store did not say what it stored'));
      } else reject(new ApiError(xhr.status, `http_${xhr.status}`, ''));
    };
    xhr.onerror = () => {
      ctl.xhrs.delete(xhr);
      reject(new ApiError(0, 'network', ''));
    };
    xhr.onabort = () => {
      ctl.xhrs.delete(xhr);
      reject(new ApiError(0, 'aborted', ''));
    };
    xhr.send(blob);
  });
}
