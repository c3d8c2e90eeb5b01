// Files in the composer (chips, checked before sending) and sends with files in flight
// (the outbox): per-file progress, cancel, retry after a failure.

import { uploadMessage, describeError } from './api.js';
import { checkFile, humanSize, limits } from './files.js';
import { h, fileChip, typeIcon } from './views.js';
import { storageLeft } from './storage.js';

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
    const entry = new OutboxEntry(this, channelId, content, files);
    this.entries.add(entry);
    this.list.append(entry.node);
    this.list.hidden = false;
    entry.start();
    return entry;
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
  constructor(outbox, channelId, content, files) {
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
      h('ul', { class: 'upload-files' }, this.rows.map((r) => r.row)),
      this.error,
      this.actions);
  }

  start() {
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

  cancel() {
    if (this.request) this.request.abort();
  }

  /** Drops the entry; its text goes back to the composer (unless logging out). */
  dismiss({ quiet = false } = {}) {
    this.state = 'dismissed';
    if (this.request) this.request.abort();
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
