// The signed-in user's storage against their quota (USER_QUOTA_MB): shown in the top bar
// when there is a quota, and used to refuse files that cannot fit before they are sent.

import { api } from './api.js';
import { $, state } from './state.js';
import { humanSize } from './files.js';

let pending = null;

/** Asks the server again (at most once a second, however many events ask for it). */
export function refreshStorage() {
  if (pending) return pending;
  pending = new Promise((resolve) => setTimeout(resolve, state.storage ? 1000 : 0))
    .then(() => api.myStorage())
    .then((storage) => {
      state.storage = storage;
      render();
    })
    .catch(() => {}) // the meter just stays as it was
    .finally(() => { pending = null; });
  return pending;
}

/** Bytes the user may still upload; Infinity without a quota (or before it is known). */
export function storageLeft() {
  const storage = state.storage;
  if (!storage || storage.quota_bytes == null) return Infinity;
  return Math.max(0, storage.quota_bytes - storage.used_bytes);
}

function render() {
  const storage = state.storage;
  const box = $('storage');
  if (!storage || storage.quota_bytes == null) {
    box.hidden = true;
    return;
  }
  const used = humanSize(storage.used_bytes) || '0 B';
  const text = `${used} of ${humanSize(storage.quota_bytes)} used`;
  $('storage-text').textContent = text;
  const meter = $('storage-meter');
  meter.max = storage.quota_bytes;
  meter.value = Math.min(storage.used_bytes, storage.quota_bytes);
  meter.high = storage.quota_bytes * 0.9;
  box.title = `Your files: ${text} (${storage.file_count} files)`;
  box.hidden = false;
}
