// Media in the timeline: image thumbnails over their ThumbHash placeholder (the size
// reserved from the file's width and height, so nothing jumps when they load), the gallery
// lightbox, audio with its duration, small text files shown as text, and voice notes.

import { $, announceStatus } from './state.js';
import { h } from './views.js';
import { thumbHashCanvas } from './thumbhash.js';

// The file behind each image preview, for the gallery (which walks the previews in order).
const previewFiles = new WeakMap();

/**
 * An image's preview button. With previews made (`thumbnail_url`): the placeholder painted
 * at once in a box of the image's proportions, the thumbnail faded in over it. Before (or
 * when the image has none): the image itself, as before.
 */
export function imagePreview(file, actions) {
  const name = file.file_name;
  const button = h('button', {
    type: 'button',
    class: 'card-preview',
    'aria-label': `Open ${name} full size`,
    onclick: () => openGallery(file, actions),
  });
  previewFiles.set(button, file);
  if (file.width > 0 && file.height > 0) {
    button.classList.add('card-thumb');
    button.style.aspectRatio = `${file.width} / ${file.height}`;
  }
  if (file.preview) {
    const canvas = thumbHashCanvas(file.preview);
    if (canvas) {
      canvas.className = 'thumb-placeholder';
      canvas.setAttribute('aria-hidden', 'true');
      button.append(canvas);
    }
  }
  const src = file.thumbnail_url || file.url;
  const img = h('img', {
    src, alt: name, loading: 'lazy', decoding: 'async', class: file.thumbnail_url ? 'thumb' : null,
  });
  img.addEventListener('load', () => img.classList.add('loaded'));
  img.addEventListener('error', () => actions.mediaFailed(file, img));
  button.append(img);
  return button;
}

// ---------------------------------------------------------------------------------------
// Gallery

let gallery = null; // { files, index, actions }

function galleryFiles() {
  return [...document.querySelectorAll('#message-list .card-preview')]
    .map((b) => previewFiles.get(b))
    .filter(Boolean);
}

async function showInGallery() {
  const { files, index, actions } = gallery;
  const file = files[index];
  const url = await actions.fullSizeLink(file);
  if (!url || gallery?.files !== files) return;
  $('lightbox-title').textContent = file.file_name;
  $('lightbox-count').textContent = files.length > 1 ? `${index + 1} of ${files.length}` : '';
  const img = $('lightbox-img');
  img.alt = file.file_name;
  img.src = url;
  const download = $('lightbox-download');
  download.href = url;
  download.setAttribute('download', file.file_name);
  for (const [id, disabled] of [['lightbox-prev', index === 0], ['lightbox-next', index === files.length - 1]]) {
    const button = $(id);
    if (disabled && document.activeElement === button) $('lightbox-close').focus();
    button.disabled = disabled;
  }
}

export function openGallery(file, actions) {
  const files = galleryFiles();
  let index = files.findIndex((f) => f.id === file.id);
  if (index < 0) {
    files.push(file);
    index = files.length - 1;
  }
  gallery = { files, index, actions };
  showInGallery();
  const dialog = $('lightbox');
  if (!dialog.open) dialog.showModal();
  $('lightbox-close').focus();
}

function step(by) {
  if (!gallery) return;
  const next = gallery.index + by;
  if (next < 0 || next >= gallery.files.length) return;
  gallery.index = next;
  showInGallery();
}

export function setupGallery() {
  const dialog = $('lightbox');
  $('lightbox-close').addEventListener('click', () => dialog.close());
  $('lightbox-prev').addEventListener('click', () => step(-1));
  $('lightbox-next').addEventListener('click', () => step(1));
  dialog.addEventListener('click', (e) => {
    if (e.target === dialog) dialog.close(); // a click on the backdrop
  });
  // On the document: a step button that just got disabled (the last image) drops the focus.
  document.addEventListener('keydown', (e) => {
    if (!dialog.open) return;
    if (e.key === 'ArrowLeft') step(-1);
    else if (e.key === 'ArrowRight') step(1);
    else return;
    e.preventDefault();
  });
  dialog.addEventListener('close', () => {
    gallery = null;
    $('lightbox-img').removeAttribute('src');
  });
}

// ---------------------------------------------------------------------------------------
// Audio and text

function clock(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '';
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/**
 * An audio player with its duration shown. A recording straight from `MediaRecorder` (WebM)
 * states no duration: seeking far past the end makes the browser find it.
 */
export function audioPlayer(file, actions) {
  const player = h('audio', { src: file.url, controls: true, preload: 'metadata', 'aria-label': file.file_name });
  const duration = h('span', { class: 'audio-duration' });
  const show = () => {
    if (Number.isFinite(player.duration)) duration.textContent = clock(player.duration);
  };
  player.addEventListener('loadedmetadata', () => {
    if (player.duration === Infinity) {
      const found = () => {
        if (!Number.isFinite(player.duration)) return;
        player.removeEventListener('durationchange', found);
        player.currentTime = 0;
        show();
      };
      player.addEventListener('durationchange', found);
      player.currentTime = 1e101;
    } else {
      show();
    }
  });
  player.addEventListener('durationchange', show);
  player.addEventListener('error', () => actions.mediaFailed(file, player));
  return h('div', { class: 'card-player card-audio' }, player, duration);
}

/** Text files up to this size show their text in the card. */
const TEXT_PREVIEW_BYTES = 64 * 1024;
const TEXT_PREVIEW_LINES = 12;

/** A small text file's first lines, fetched when the card is shown; null for others. */
export function textPreview(file) {
  if (!(file.file_size > 0 && file.file_size <= TEXT_PREVIEW_BYTES)) return null;
  const pre = h('pre', { class: 'card-text-preview', 'aria-label': `Text of ${file.file_name}` });
  fetch(file.url, { cache: 'no-store' })
    .then((res) => (res.ok ? res.text() : Promise.reject(new Error(String(res.status)))))
    .then((text) => {
      const lines = text.split('\n');
      pre.textContent = lines.slice(0, TEXT_PREVIEW_LINES).join('\n') + (lines.length > TEXT_PREVIEW_LINES ? '\n…' : '');
    })
    .catch(() => pre.remove());
  return pre;
}

// ---------------------------------------------------------------------------------------
// Voice notes

/** Prefers Opus in WebM (Chromium, Firefox), then Ogg, then whatever the browser records. */
function recordingType() {
  const types = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/webm', 'audio/mp4'];
  return types.find((t) => window.MediaRecorder?.isTypeSupported?.(t)) || '';
}

/**
 * The record button: a click starts recording (the button turns into a stop button with a
 * timer), another stops and sends the note to `send(file)` as an audio attachment.
 */
export function setupVoiceNotes({ canRecord, send }) {
  const button = $('record');
  const timer = $('record-timer');
  if (!window.MediaRecorder || !navigator.mediaDevices?.getUserMedia) {
    button.hidden = true;
    return;
  }
  let recording = null;

  const stopTimer = () => {
    clearInterval(recording?.tick);
    timer.hidden = true;
    timer.textContent = '';
    button.classList.remove('recording');
    button.setAttribute('aria-label', 'Record a voice note');
    button.setAttribute('aria-pressed', 'false');
  };

  async function start() {
    if (!canRecord()) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch {
      announceStatus('The microphone is not available.');
      return;
    }
    const mimeType = recordingType();
    const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
    const chunks = [];
    const startedAt = Date.now();
    recording = { recorder, stream, startedAt };
    recorder.addEventListener('dataavailable', (e) => { if (e.data.size) chunks.push(e.data); });
    recorder.addEventListener('stop', () => {
      stream.getTracks().forEach((t) => t.stop());
      const type = (recorder.mimeType || mimeType || 'audio/webm').split(';')[0];
      const extension = type.includes('ogg') ? 'ogg' : type.includes('mp4') ? 'm4a' : 'webm';
      const stamp = new Date(startedAt).toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
      const blob = new Blob(chunks, { type });
      recording = null;
      if (blob.size > 0) send(new File([blob], `voice-note-${stamp}.${extension}`, { type }));
    });
    recorder.start(250);
    button.classList.add('recording');
    button.setAttribute('aria-label', 'Stop and send the voice note');
    button.setAttribute('aria-pressed', 'true');
    timer.hidden = false;
    timer.textContent = '0:00';
    recording.tick = setInterval(() => { timer.textContent = clock((Date.now() - startedAt) / 1000); }, 250);
    announceStatus('Recording a voice note.');
  }

  button.addEventListener('click', () => {
    if (recording) {
      stopTimer();
      recording.recorder.stop();
    } else {
      start();
    }
  });
}
