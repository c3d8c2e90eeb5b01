// What the client knows about files: the checks made before anything is sent, sizes in
// human units, and the kind of a file (which icon, whether it previews inline).

// The server's limit is MAX_FILE_SIZE_MB (default 50) and it enforces it while the upload
// streams (413 file_too_large). The API does not publish the setting, so the client checks
// the default here only to spare the user a doomed upload; a server set lower still refuses
// with 413, which the client shows in plain words.
export const MAX_FILE_BYTES = 50 * 1024 * 1024;
export const MAX_FILES_PER_MESSAGE = 10;

// The default ALLOWED_FILE_TYPES: images, PDF, Office documents, text, CSV, zip, audio and
// video. The server decides from the bytes (magic numbers); this check goes by the browser's
// declared type and the name's extension, to refuse the obvious cases early.
const ALLOWED_TYPES = new Set([
  'application/pdf',
  'application/msword',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
  'application/vnd.ms-excel',
  'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  'application/vnd.ms-powerpoint',
  'application/vnd.openxmlformats-officedocument.presentationml.presentation',
  'application/vnd.oasis.opendocument.text',
  'application/vnd.oasis.opendocument.spreadsheet',
  'application/vnd.oasis.opendocument.presentation',
  'text/plain',
  'text/csv',
  'text/markdown',
  'text/tab-separated-values',
  'application/zip',
  'application/x-zip-compressed',
]);
const ALLOWED_FAMILIES = ['image/', 'audio/', 'video/'];
// Types the browser would run as a document: refused even inside an allowed family.
const REFUSED_TYPES = new Set(['image/svg+xml', 'text/html', 'application/xhtml+xml', 'text/xml', 'application/xml']);

const EXTENSION_KIND = {
  png: 'image', jpg: 'image', jpeg: 'image', gif: 'image', webp: 'image', bmp: 'image',
  avif: 'image', heic: 'image', tif: 'image', tiff: 'image', ico: 'image',
  pdf: 'pdf',
  doc: 'doc', docx: 'doc', odt: 'doc', rtf: 'doc',
  xls: 'sheet', xlsx: 'sheet', ods: 'sheet',
  ppt: 'slides', pptx: 'slides', odp: 'slides',
  txt: 'text', text: 'text', md: 'text', log: 'text',
  csv: 'csv', tsv: 'csv',
  zip: 'zip',
  mp3: 'audio', wav: 'audio', ogg: 'audio', oga: 'audio', m4a: 'audio', flac: 'audio', aac: 'audio', opus: 'audio',
  mp4: 'video', webm: 'video', mov: 'video', mkv: 'video', ogv: 'video', m4v: 'video', avi: 'video',
};

export const ALLOWED_SUMMARY = 'images, PDF, Office documents, text, CSV, zip, audio and video';

function extensionOf(name) {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(dot + 1).toLowerCase() : '';
}

/** `image`, `audio`, `video`, `pdf`, `doc`, `sheet`, `slides`, `text`, `csv`, `zip` or `file`. */
export function fileKind(contentType, name = '') {
  const type = (contentType || '').toLowerCase();
  if (type.startsWith('image/') && !REFUSED_TYPES.has(type)) return 'image';
  if (type.startsWith('audio/')) return 'audio';
  if (type.startsWith('video/')) return 'video';
  if (type === 'application/pdf') return 'pdf';
  if (type === 'text/csv' || type === 'text/tab-separated-values') return 'csv';
  if (type.startsWith('text/')) return 'text';
  if (type.includes('zip')) return 'zip';
  if (type.includes('spreadsheet') || type.includes('excel')) return 'sheet';
  if (type.includes('presentation') || type.includes('powerpoint')) return 'slides';
  if (type.includes('word') || type.includes('opendocument.text')) return 'doc';
  return EXTENSION_KIND[extensionOf(name)] || 'file';
}

/** The short label shown in a file's type icon. */
export const KIND_LABEL = {
  image: 'IMG', audio: 'AUD', video: 'VID', pdf: 'PDF', doc: 'DOC', sheet: 'XLS',
  slides: 'PPT', text: 'TXT', csv: 'CSV', zip: 'ZIP', file: 'FILE',
};

/** 1536 -> "1.5 KB" (binary units, as the server counts MAX_FILE_SIZE_MB). */
export function humanSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = value < 10 ? 1 : 0;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

function typeAllowed(file) {
  const type = (file.type || '').toLowerCase();
  if (REFUSED_TYPES.has(type)) return false;
  if (type && (ALLOWED_TYPES.has(type) || ALLOWED_FAMILIES.some((f) => type.startsWith(f)))) return true;
  // Browsers leave `type` empty or generic for many files: go by the extension then.
  if (!type || type === 'application/octet-stream') return extensionOf(file.name) in EXTENSION_KIND;
  return false;
}

/** Why a file cannot be sent, in plain words, or null when it may be. */
export function checkFile(file) {
  if (file.size === 0) return `“${file.name}” is empty.`;
  if (file.size > MAX_FILE_BYTES) {
    return `“${file.name}” is ${humanSize(file.size)}; files can be at most ${humanSize(MAX_FILE_BYTES)}.`;
  }
  if (!typeAllowed(file)) {
    return `“${file.name}” is not a type that can be sent. Allowed: ${ALLOWED_SUMMARY}.`;
  }
  return null;
}
