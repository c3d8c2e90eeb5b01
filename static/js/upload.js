// Files in the composer (chips, checked before sending) and sends with files in flight
// (the outbox): per-file progress, cancel, retry after a failure.

import { uploadMessage, describeError, ApiError } from './api.js';
import { checkFile, humanSize, limits } from './files.js';
import { h, fileChip, typeIcon } from './views.js';
import { storageLeft } from './storage.js';
import {
  goesDirect, sendDirect, newKey, rememberSend, rememberedSends, dropSend, forgetSend,
  abandonUploads, rememberedFraction,
} from './direct.js';

/** The files chosen for the next message, shown as chips. */
export class Attachments {
  constructor({ list, error, announce }) {
    this.list = list;
    this.error = error;
    this.announce = announce;
    this.files = [];
  }

  /** Adds what passes the checks; says why the rest cannot be sent. */
  add(fileList) {
    const problems = [];
    let added = 0;
    for (const file of Array.from(fileList || [])) {
      const problem = checkFile(file);
      const queued = this.files.reduce((sum, f) => sum + f.size, 0);
      if (problem) {
        problems.push(problem);
      } else if (queued + file.size > storageLeft()) {
        problems.push(`“${file.name}” was not added: it does not fit in your storage quota (${humanSize(storageLeft() - queued)} left). Delete some of your files first.`);
      } else if (this.files.length >= limits.maxFilesPerMessage) {
        problems.push(`“${file.name}” was not added: at most ${limits.maxFilesPerMessage} files per message.`);
      } else {
        this.files.push(file);
        added += 1;
      }
    }
    this.error.textContent = problems.join(' ');
    this.render();
    if (added) this.announce(`${added} ${added === 1 ? 'file' : 'files'} ready to send.`);
    return added;
  }

  remove(file) {
    const index = this.files.indexOf(file);
    if (index >= 0) this.files.splice(index, 1);
    this.announce(`Removed ${file.name}.`);
    this.render();
  }

  clear() {
    this.files = [];
    this.error.textContent = '';
    this.render();
  }

  render() {
    const chips = this.files.map((file) => fileChip(file, () => {
      // Keep keyboard focus in the composer once the chip (and its button) is gone.
      const next = this.list.querySelector('.chip-remove:not(:focus)');
      this.remove(file);
      (next && next.isConnected ? next : document.getElementById('message-input')).focus();
    }));
    this.list.replaceChildren(...chips);
    this.list.hidden = chips.length === 0;
  }
}

/** Sends with files, one entry each, until they are delivered or dismissed. */
export class Outbox {
  constructor({ list, announce, onDelivered, onDismissed = () => {}, channelName }) {
    this.list = list;
    this.onDismissed = onDismissed;
    this.announce = announce;
    this.onDelivered = onDelivered;
    this.channelName = channelName;
    this.entries = new Set();
    this.list.hidden = true;
  }

  send(channelId, content, files) {
    let text = content;
    if (goesDirect(files)) {
      // The same file picked again: the interrupted send it belonged to is taken over.
      for (const old of this.entries) {
        if (old.state !== 'interrupted' || old.channelId !== channelId) continue;
        if (!old.files.some((f) => files.some((n) => n.name === f.name && n.size === f.size))) continue;
        if (!text.trim()) text = old.content;
        dropSend(old.key);
        this.forget(old);
      }
    }
    const entry = new OutboxEntry(this, channelId, text, files);
    this.add(entry);
    entry.start();
    return entry;
  }

  add(entry) {
    this.entries.add(entry);
    this.list.append(entry.node);
    this.list.hidden = false;
  }

  /** After a reload: the direct sends that were under way, to be finished by picking the files again. */
  restore(knownChannel) {
    for (const send of rememberedSends()) {
      if ([...this.entries].some((e) => e.key === send.key) || !knownChannel(send.channel_id)) continue;
      const entry = new OutboxEntry(this, send.channel_id, send.content, send.files, { key: send.key, interrupted: true });
      this.add(entry);
      entry.interrupted();
    }
  }

  /** Drops every entry (log out), cancelling uploads still running. */
  abortAll() {
    for (const entry of this.entries) entry.dismiss({ quiet: true });
  }

  forget(entry) {
    this.entries.delete(entry);
    entry.node.remove();
    this.list.hidden = this.entries.size === 0;
  }
}

class OutboxEntry {
  constructor(outbox, channelId, content, files, { key = newKey(), interrupted = false } = {}) {
    this.key = key; // the message's Idempotency-Key (direct sends)
    this.direct = interrupted || goesDirect(files);
    this.outbox = outbox;
    this.channelId = channelId;
    this.content = content;
    this.files = files;
    this.request = null;
    const total = files.reduce((sum, f) => sum + f.size, 0);
    const count = `${files.length} ${files.length === 1 ? 'file' : 'files'}`;
    this.label = `${count} (${humanSize(total)}) to ${outbox.channelName(channelId)}`;

    this.rows = files.map((file) => {
      const bar = h('progress', { max: 1, value: 0, 'aria-label': `Upload of ${file.name}` });
      const pct = h('span', { class: 'upload-pct' }, '0%');
      const row = h('li', { class: 'upload-file' },
        typeIcon(file.type, file.name),
        h('span', { class: 'upload-name', title: file.name }, file.name),
        h('span', { class: 'upload-size' }, humanSize(file.size)),
        bar, pct);
      return { file, row, bar, pct };
    });
    this.title = h('p', { class: 'upload-title' });
    this.error = h('p', { class: 'upload-error', role: 'alert' });
    this.actions = h('div', { class: 'upload-actions' });
    this.node = h('li', { class: 'upload' },
      this.title,
      content.trim() ? h('p', { class: 'upload-text' }, content) : null, // the message, shown while its files go
      h('ul', { class: 'upload-files' }, this.rows.map((r) => r.row)),
      this.error,
      this.actions);
  }

  start() {
    if (this.direct) {
      this.startDirect();
      return;
    }
    this.setState('uploading', `Sending ${this.label}`);
    this.error.textContent = '';
    this.setActions(h('button', {
      type: 'button', class: 'small secondary cancel', onclick: () => this.cancel(),
    }, 'Cancel upload'));
    this.progress(0, 1);
    this.outbox.announce(`Uploading ${this.label}.`);

    this.request = uploadMessage(this.channelId, this.content, this.files, {
      onProgress: (loaded, total) => this.progress(loaded, total),
      onSent: () => this.setState('processing', `Storing ${this.label}…`),
    });
    this.request.promise.then(
      (message) => {
        this.request = null;
        this.outbox.announce('Sent.');
        this.outbox.forget(this);
        this.outbox.onDelivered(message);
      },
      (err) => {
        this.request = null;
        if (this.state === 'dismissed') return;
        const text = describeError(err);
        const cancelled = err.code === 'aborted';
        this.setState(cancelled ? 'cancelled' : 'failed', cancelled
          ? `Upload cancelled: ${this.label}`
          : `Not sent: ${this.label}`);
        this.error.textContent = cancelled ? 'Cancelled. Nothing was sent.' : text;
        this.outbox.announce(cancelled ? 'Upload cancelled. Nothing was sent.' : `Upload failed. ${text}`);
        const retry = h('button', { type: 'button', class: 'small primary retry', onclick: () => this.start() }, 'Retry');
        this.setActions(retry,
          h('button', { type: 'button', class: 'small secondary dismiss', onclick: () => this.dismiss() }, 'Dismiss'));
        retry.focus();
      },
    );
  }

  /**
   * The body is the content part, then the files in order: place the bytes sent so far on
   * the files to show each one's progress (the multipart framing is a few hundred bytes).
   */
  progress(loaded, total) {
    const fileBytes = this.files.reduce((sum, f) => sum + f.size, 0);
    const overhead = Math.max(0, total - fileBytes);
    let done = Math.max(0, loaded - overhead / 2);
    for (const { file, bar, pct } of this.rows) {
      const fraction = file.size ? Math.min(1, done / file.size) : 1;
      done = Math.max(0, done - file.size);
      bar.value = fraction;
      pct.textContent = `${Math.floor(fraction * 100)}%`;
    }
  }

  /** Big files: straight to the store in parts, then the message (direct.js). */
  startDirect() {
    const meta = this.files.map((f) => ({ name: f.name, size: f.size, type: f.type, lastModified: f.lastModified }));
    rememberSend({ key: this.key, channel_id: this.channelId, content: this.content, files: meta });
    this.setState('uploading', `Sending ${this.label}`);
    this.error.textContent = '';
    this.setActions(
      h('button', { type: 'button', class: 'small secondary pause', onclick: () => this.request?.pause() }, 'Pause'),
      h('button', { type: 'button', class: 'small secondary cancel', onclick: () => this.cancel() }, 'Cancel upload'),
    );
    this.outbox.announce(`Uploading ${this.label}.`);
    const request = sendDirect({
      key: this.key,
      channelId: this.channelId,
      content: this.content,
      files: this.files,
      onProgress: (index, fraction) => this.fileProgress(index, fraction),
      onPhase: () => this.setState('processing', `Posting ${this.label}…`),
    });
    this.request = request;
    request.promise.then(
      (message) => {
        this.request = null;
        this.outbox.announce('Sent.');
        this.outbox.forget(this);
        this.outbox.onDelivered(message);
      },
      async (err) => {
        if (this.request === request) this.request = null;
        if (this.state === 'dismissed') return;
        if (err.code === 'paused') {
          this.setState('paused', `Paused: ${this.label}`);
          this.outbox.announce('Upload paused.');
          const resume = h('button', { type: 'button', class: 'small primary resume', onclick: () => this.start() }, 'Resume');
          this.setActions(resume,
            h('button', { type: 'button', class: 'small secondary cancel', onclick: () => this.cancelPaused() }, 'Cancel upload'));
          resume.focus();
          return;
        }
        const cancelled = err.code === 'aborted';
        if (cancelled) {
          await abandonUploads(this.channelId, this.files);
          forgetSend(this.key, this.channelId, this.files); // nothing to resume after a reload
        }
        this.failed(err, cancelled);
      },
    );
  }

  /** The same failure display as multipart sends: the reason, Retry and Dismiss. */
  failed(err, cancelled) {
    const text = describeError(err);
    this.setState(cancelled ? 'cancelled' : 'failed', cancelled
      ? `Upload cancelled: ${this.label}`
      : `Not sent: ${this.label}`);
    this.error.textContent = cancelled ? 'Cancelled. Nothing was sent.' : text;
    this.outbox.announce(cancelled ? 'Upload cancelled. Nothing was sent.' : `Upload failed. ${text}`);
    const retry = h('button', { type: 'button', class: 'small primary retry', onclick: () => this.start() }, 'Retry');
    this.setActions(retry,
      h('button', { type: 'button', class: 'small secondary dismiss', onclick: () => this.dismiss() }, 'Dismiss'));
    retry.focus();
  }

  async cancelPaused() {
    await abandonUploads(this.channelId, this.files);
    forgetSend(this.key, this.channelId, this.files);
    this.failed(new ApiError(0, 'aborted', ''), true);
  }

  /** Restored after a reload: the files must be picked again (a page cannot keep them). */
  interrupted() {
    this.setState('interrupted', `Interrupted: ${this.label}`);
    this.files.forEach((file, i) => this.fileProgress(i, rememberedFraction(this.channelId, file)));
    const names = this.files.map((f) => `“${f.name}”`).join(', ');
    this.error.textContent = `The page was closed during this upload. Choose ${names} again to send the rest.`;
    const input = h('input', { type: 'file', multiple: true, hidden: true });
    input.addEventListener('change', () => this.pickedAgain(Array.from(input.files)));
    const choose = h('button', { type: 'button', class: 'small primary resume', onclick: () => input.click() },
      this.files.length === 1 ? 'Choose the file to resume' : 'Choose the files to resume');
    this.setActions(choose,
      h('button', { type: 'button', class: 'small secondary dismiss', onclick: () => this.dismiss() }, 'Dismiss'), input);
  }

  pickedAgain(picked) {
    const matched = this.files.map((f) => picked.find((p) => p.name === f.name && p.size === f.size
      && (!f.lastModified || p.lastModified === f.lastModified)));
    if (matched.some((f) => !f)) {
      this.error.textContent = `Those are not the same files. Choose ${this.files.map((f) => `“${f.name}” (${humanSize(f.size)})`).join(', ')}.`;
      return;
    }
    this.files = matched;
    this.start();
  }

  fileProgress(index, fraction) {
    const { bar, pct } = this.rows[index];
    bar.value = fraction;
    pct.textContent = `${Math.floor(fraction * 100)}%`;
  }

  cancel() {
    if (this.request) this.request.abort();
  }

  /** Drops the entry; its text goes back to the composer (unless logging out). */
  dismiss({ quiet = false } = {}) {
    const wasDirect = this.direct && this.state !== 'dismissed';
    this.state = 'dismissed';
    if (this.request) {
      if (this.direct && quiet) this.request.pause(); // logging out: resumable after the next login
      else this.request.abort();
    }
    if (wasDirect && !quiet) {
      abandonUploads(this.channelId, this.files);
      forgetSend(this.key, this.channelId, this.files);
    }
    this.outbox.forget(this);
    if (quiet) return;
    this.outbox.onDismissed(this);
    const input = document.getElementById('message-input');
    if (input) input.focus();
  }

  setState(state, title) {
    this.state = state;
    this.node.dataset.state = state;
    this.title.textContent = title;
  }

  setActions(...buttons) {
    const hadFocus = this.actions.contains(document.activeElement);
    this.actions.replaceChildren(...buttons);
    if (hadFocus) buttons[0].focus();
  }
}
