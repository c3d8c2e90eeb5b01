// The REST API (docs/api.md): a fetch wrapper with the bearer token, the session kept in
// localStorage (shared by the browser's tabs, kept across restarts), errors turned into plain words, and the multipart upload over
// XMLHttpRequest (fetch cannot report upload progress).

import { limits } from './files.js';

const TOKEN_KEY = 'chat.token';
const USER_KEY = 'chat.user';

/**
 * The signed-in session, in localStorage: every tab of the browser shares it and it outlives
 * a restart. A change made by another tab arrives as a `storage` event (see app.js).
 */
export const SESSION_KEYS = { token: TOKEN_KEY, user: USER_KEY };
export const session = {
  get token() {
    return localStorage.getItem(TOKEN_KEY);
  },
  get user() {
    try {
      return JSON.parse(localStorage.getItem(USER_KEY));
    } catch {
      return null;
    }
  },
  save(token, user) {
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  clear() {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
  },
};

/** Called when the server says the token is no longer good (set by the app). */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** A sentence a person can act on, for any failed call. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return 'Something went wrong. Please try again.';
  const detail = err.message ? ` (${err.message})` : '';
  switch (err.code) {
    case 'network':
      return 'The server could not be reached. Check your connection and try again.';
    case 'aborted':
      return 'Cancelled. Nothing was sent.';
    case 'file_too_large':
      return `The server refused the upload: a file is larger than it accepts${detail}. Nothing was sent.`;
    case 'unsupported_file_type':
      return `The server refused the upload: a file's contents are of a type it does not accept${detail}. Nothing was sent.`;
    case 'storage_unavailable':
      return 'File storage is unavailable right now. Nothing was sent; try again in a moment.';
    case 'database_unavailable':
      return 'The server cannot reach its database right now. Try again in a moment.';
    case 'rate_limited':
      return `Too many requests. Try again in ${err.retryAfter || 'a few'} seconds.`;
    case 'quota_exceeded':
      return 'This would take you over your storage quota. Delete some of your files first; nothing was sent.';
    case 'too_many_files':
      return `At most ${limits.maxFilesPerMessage} files can be sent in one message.`;
    case 'invalid_credentials':
      return 'Wrong username or password.';
    case 'username_taken':
      return 'That username is taken. Pick another one.';
    case 'invalid_username':
      return 'Usernames have 3 to 32 characters: lowercase letters, digits, "_", "." or "-".';
    case 'weak_password':
      return 'The password needs at least 8 characters.';
    case 'already_member':
      return 'That user is already a member of this channel.';
    case 'not_found':
      return 'Not found, or no longer available to you.';
    case 'forbidden':
      return `That is not allowed${detail}.`;
    default:
      if (err.status === 413) return 'The server refused the upload: it is too large. Nothing was sent.';
      if (err.status === 415) return 'The server refused the upload: a file type is not accepted. Nothing was sent.';
      if (err.status === 503) return 'The server is temporarily unavailable. Try again in a moment.';
      if (err.status >= 500) return 'The server had a problem. Try again in a moment.';
      return err.message || 'The request failed.';
  }
}

/** Builds an ApiError from a status and the body text of an error answer. */
function errorFrom(status, bodyText, retryAfter) {
  let code = `http_${status}`;
  let message = '';
  try {
    const body = JSON.parse(bodyText);
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || '';
    }
  } catch {
    // Not JSON (a proxy's page, say): keep the status.
  }
  const err = new ApiError(status, code, message, retryAfter);
  if (status === 401 && session.token && code !== 'invalid_credentials') onUnauthorized(err);
  return err;
}

async function request(method, path, body, extraHeaders = {}) {
  const headers = { ...extraHeaders };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'network', '');
  }
  if (response.status === 204) return null;
  const text = await response.text();
  if (!response.ok) throw errorFrom(response.status, text, response.headers.get('Retry-After'));
  return text ? JSON.parse(text) : null;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) q.set(key, String(value));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

const enc = encodeURIComponent;

export const api = {
  /** Limits for uploads and messages; needs no token. */
  config: () => request('GET', '/api/config'),
  register: (username, password, displayName) =>
    request('POST', '/api/auth/register', displayName
      ? { username, password, display_name: displayName }
      : { username, password }),
  login: (username, password) => request('POST', '/api/auth/login', { username, password }),
  me: () => request('GET', '/api/me'),
  myStorage: () => request('GET', '/api/me/storage'),

  myChannels: () => request('GET', '/api/channels'),
  search: (q, before) => request('GET', `/api/search?q=${encodeURIComponent(q)}&limit=20${before ? `&before=${before}` : ''}`),
  markRead: (id, messageId) => request('POST', `/api/channels/${id}/read`, { message_id: messageId }),
  publicChannels: () => request('GET', '/api/channels/public'),
  createChannel: (name, isPrivate) => request('POST', '/api/channels', { name, is_private: isPrivate }),
  joinChannel: (id) => request('POST', `/api/channels/${id}/join`),
  addMember: (id, username) => request('POST', `/api/channels/${id}/members`, { username }),
  leaveChannel: (id) => request('DELETE', `/api/channels/${id}/members/me`),
  members: (id) => request('GET', `/api/channels/${id}/members`),

  /** `{messages, has_more}`; `before`/`after` are exclusive message ids. */
  messages: (id, { before, after, limit } = {}) =>
    request('GET', `/api/channels/${id}/messages${query({ before, after, limit })}`),
  postMessage: (id, content) => request('POST', `/api/channels/${id}/messages`, { content }),
  postReply: (id, threadId, content) =>
    request('POST', `/api/channels/${id}/messages`, { content, thread_id: threadId }),
  editMessage: (id, messageId, content) =>
    request('PATCH', `/api/channels/${id}/messages/${messageId}`, { content }),
  deleteMessage: (id, messageId) => request('DELETE', `/api/channels/${id}/messages/${messageId}`),
  /** A thread's replies, ascending: `{messages, has_more}`. */
  thread: (id, messageId, { after, limit } = {}) =>
    request('GET', `/api/channels/${id}/messages/${messageId}/thread${query({ after, limit })}`),
  react: (id, messageId, emoji) =>
    request('PUT', `/api/channels/${id}/messages/${messageId}/reactions/${enc(emoji)}`),
  unreact: (id, messageId, emoji) =>
    request('DELETE', `/api/channels/${id}/messages/${messageId}/reactions/${enc(emoji)}`),
  /** The direct-message channel with that user (made on first use). */
  openDm: (username) => request('POST', '/api/dms', { username }),
  /** Hides a DM from the sidebar until its next message. */
  hideDm: (id) => request('POST', `/api/dms/${id}/hide`),
  /** A channel's files, newest first: `{files, has_more, next_before}`. */
  channelFiles: (id, { before, limit } = {}) =>
    request('GET', `/api/channels/${id}/files${query({ before, limit })}`),
  updateMe: (displayName) => request('PATCH', '/api/me', { display_name: displayName }),

  // Direct uploads (docs/api.md, "Direct uploads"): see direct.js.
  createUpload: (fields) => request('POST', '/api/uploads', fields),
  getUpload: (id) => request('GET', `/api/uploads/${enc(id)}`),
  /** `{parts: [{part_number, url, expires_at}]}`, at most 100 per call. */
  partUrls: (id, partNumbers) => request('POST', `/api/uploads/${enc(id)}/parts`, { part_numbers: partNumbers }),
  completeUpload: (id, parts) => request('POST', `/api/uploads/${enc(id)}/complete`, { parts }),
  cancelUpload: (id) => request('DELETE', `/api/uploads/${enc(id)}`),
  /** A message with finished direct uploads; the key makes a retry safe. */
  postWithUploads: (id, content, uploadIds, idempotencyKey) =>
    request('POST', `/api/channels/${id}/messages`, { content, upload_ids: uploadIds },
      { 'Idempotency-Key': idempotencyKey }),

  /** A fresh download link: `{url, expires_at, file}`. */
  downloadLink: (fileId) => request('GET', `/api/files/download/${fileId}`),
  deleteFile: (fileId) => request('DELETE', `/api/files/${fileId}`),
};

/**
 * Posts a message with files as `multipart/form-data` (a `content` part, then `file` parts).
 * Returns `{promise, abort}`; `onProgress(loaded, total)` follows the request body, and
 * `onSent()` fires when the body is out and the server is storing it.
 */
export function uploadMessage(channelId, content, files, { onProgress, onSent } = {}) {
  const form = new FormData();
  form.append('content', content);
  for (const file of files) form.append('file', file, file.name);

  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open('POST', `/api/channels/${channelId}/messages`);
    if (session.token) xhr.setRequestHeader('Authorization', `Bearer ${session.token}`);
    xhr.responseType = 'text';
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && onProgress) onProgress(e.loaded, e.total);
    };
    xhr.upload.onload = () => onSent && onSent();
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(JSON.parse(xhr.responseText));
      } else {
        reject(errorFrom(xhr.status, xhr.responseText, xhr.getResponseHeader('Retry-After')));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', ''));
    xhr.onabort = () => reject(new ApiError(0, 'aborted', ''));
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

/**
 * A thread reply with files: `multipart/form-data` with `thread_id` first, then `content`,
 * then the files (small ones; no progress is shown in the thread panel).
 */
export async function postReplyWithFiles(channelId, threadId, content, files) {
  const form = new FormData();
  form.append('thread_id', String(threadId));
  form.append('content', content);
  for (const file of files) form.append('file', file, file.name);
  let response;
  try {
    response = await fetch(`/api/channels/${channelId}/messages`, {
      method: 'POST',
      headers: session.token ? { Authorization: `Bearer ${session.token}` } : {},
      body: form,
    });
  } catch {
    throw new ApiError(0, 'network', '');
  }
  const text = await response.text();
  if (!response.ok) throw errorFrom(response.status, text, response.headers.get('Retry-After'));
  return JSON.parse(text);
}
