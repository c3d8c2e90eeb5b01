// What a file card's actions do: download through the listed link or a fresh one, a link
// for the gallery to show an image full size (media.js), recover a preview whose link expired, and delete (uploader only).

import { api, describeError } from './api.js';
import { $, state, announceStatus } from './state.js';
import { h, confirmPress } from './views.js';

function linkExpired(file) {
  const expires = Date.parse(file.url_expires_at);
  return !file.url || !Number.isFinite(expires) || expires - 5000 < Date.now();
}

/** A fresh link for a file, kept on the file so its card uses it from now on. */
async function freshLink(file) {
  const answer = await api.downloadLink(file.id);
  file.url = answer.url;
  file.url_expires_at = answer.expires_at;
  return answer.url;
}

/** Whether a link still answers (same-origin links only; a redirect to S3 counts as yes). */
async function linkWorks(url) {
  if (new URL(url, location.href).origin !== location.origin) return true;
  try {
    const res = await fetch(url, { headers: { Range: 'bytes=0-0' }, redirect: 'manual', cache: 'no-store' });
    return res.ok || res.type === 'opaqueredirect';
  } catch {
    return false;
  }
}

function setCardStatus(card, text) {
  const status = card.querySelector('.card-status');
  if (status) status.textContent = text;
}

export function removeFileCard(fileId, { placeholder = true } = {}) {
  for (const card of document.querySelectorAll(`.file-card[data-file-id="${fileId}"]`)) {
    const list = card.parentElement;
    const hadFocus = card.contains(document.activeElement);
    card.remove();
    if (list && list.childElementCount === 0) {
      list.hidden = true;
      const body = list.parentElement;
      if (placeholder && !body.querySelector('.message-text')) {
        list.before(h('p', { class: 'message-text muted' }, 'Attachment deleted.'));
      }
    }
    if (hadFocus) $('message-input').focus();
  }
}

export const fileActions = {
  get meId() {
    return state.me?.id;
  },

  async download(file, card) {
    setCardStatus(card, '');
    try {
      let url = file.url;
      if (linkExpired(file) || !(await linkWorks(url))) url = await freshLink(file);
      const link = h('a', { href: url, download: file.file_name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (err) {
      if (err.code === 'not_found') {
        removeFileCard(file.id);
        announceStatus(`${file.file_name} is no longer available.`);
      } else {
        setCardStatus(card, `Download failed. ${describeError(err)}`);
      }
    }
  },

  /** Two presses: the first asks, the second deletes. */
  async askDelete(file, card) {
    const button = card.querySelector('.delete');
    const confirmed = confirmPress(button, {
      text: 'Confirm delete',
      label: `Confirm: delete ${file.file_name}`,
      hint: 'Press again to delete this file for everyone.',
      status: card.querySelector('.card-status'),
    });
    if (!confirmed) return;
    button.disabled = true;
    try {
      await api.deleteFile(file.id);
      removeFileCard(file.id);
      announceStatus(`Deleted ${file.file_name}.`);
    } catch (err) {
      if (err.code === 'not_found') {
        removeFileCard(file.id);
      } else {
        button.disabled = false;
        setCardStatus(card, `Could not delete. ${describeError(err)}`);
      }
    }
  },

  /** A working link to the full-size file (for the gallery), or null when it is gone. */
  async fullSizeLink(file) {
    try {
      return linkExpired(file) ? await freshLink(file) : file.url;
    } catch (err) {
      if (err.code === 'not_found') removeFileCard(file.id);
      announceStatus(describeError(err));
      return null;
    }
  },

  /** A preview or player failed to load: its link may have expired; try one fresh link. */
  async mediaFailed(file, element) {
    // Its card is gone (the file was deleted while it loaded): nothing to retry.
    if (!element.isConnected) return;
    if (element.dataset.retried) {
      element.closest('.file-card')?.classList.add('preview-failed');
      return;
    }
    element.dataset.retried = '1';
    try {
      element.src = await freshLink(file);
    } catch (err) {
      if (err.code === 'not_found') removeFileCard(file.id);
    }
  },
};

