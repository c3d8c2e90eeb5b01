// What the client knows about files: the checks made before anything is sent, sizes in
// human units, and the kind of a file (which icon, whether it previews inline).

// The server's limits (GET /api/config, fetched at boot: see applyConfig). The server
// enforces them anyway (413, 415); the client checks them to spare the user a doomed upload.
// Until the config arrives, the server's defaults apply.
export const limits = {
  maxFileBytes: 50 * 1024 * 1024,
  maxFilesPerMessage: 10,
  // ALLOWED_FILE_TYPES: exact types and `family/*` patterns.
  allowedTypes: [
    'image/*', 'application/pdf',
    'application/msword', 'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
    'application/vnd.ms-excel', 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
    'application/vnd.ms-powerpoint', 'application/vnd.openxmlformats-officedocument.presentationml.presentation',
    'application/vnd.oasis.opendocument.text', 'application/vnd.oasis.opendocument.spreadsheet',
    'application/vnd.oasis.opendocument.presentation',
    'text/plain', 'text/csv', 'application/zip', 'audio/*', 'video/*',
  ],
  maxMessageChars: 4000,
  directUploads: false, // the server takes direct uploads (see direct.js)
};

/** Takes the server's GET /api/config answer. */
export function applyConfig(config) {
  if (!config) return;
  if (Number.isFinite(config.max_file_size_bytes)) limits.maxFileBytes = config.max_file_size_bytes;
  if (Number.isFinite(config.max_files_per_message)) limits.maxFilesPerMessage = config.max_files_per_message;
  if (Array.isArray(config.allowed_file_types)) limits.allowedTypes = config.allowed_file_types.map((t) => String(t).toLowerCase());
  if (Number.isFinite(config.max_message_chars)) limits.maxMessageChars = config.max_message_chars;
  limits.directUploads = config.direct_uploads === true;
}

// Browsers declare some allowed types under other names, or none at all.
const TYPE_ALIASES = {
  'application/x-zip-compressed': 'application/zip',
  'text/markdown': 'text/plain',
  'text/tab-separated-values': 'text/csv',
};
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

// For a file the browser gives no type: the type its extension stands for.
const KIND_TYPE = {
  image: 'image/png', audio: 'audio/mpeg', video: 'video/mp4', pdf: 'application/pdf',
  doc: 'application/msword', sheet: 'application/vnd.ms-excel', slides: 'application/vnd.ms-powerpoint',
  text: 'text/plain', csv: 'text/csv', zip: 'application/zip',
};

const FAMILY_WORDS = { image: 'images', audio: 'audio', video: 'video', text: 'text' };
const TYPE_WORDS = [
  [/pdf$/, 'PDF'], [/word|msword|opendocument\.text/, 'Office documents'],
  [/excel|spreadsheet/, 'Office documents'], [/powerpoint|presentation/, 'Office documents'],
  [/^text\/plain$/, 'text'], [/csv/, 'CSV'], [/zip/, 'zip'],
];

/** The allowed types in words: "images, PDF, Office documents, text, CSV, zip, audio and video". */
export function allowedSummary() {
  const words = [];
  for (const type of limits.allowedTypes) {
    const family = type.endsWith('/*') ? FAMILY_WORDS[type.slice(0, -2)] || type : null;
    const word = family || TYPE_WORDS.find(([re]) => re.test(type))?.[1] || type;
    if (!words.includes(word)) words.push(word);
  }
  if (words.length < 2) return words.join('');
  return `${words.slice(0, -1).join(', ')} and ${words.at(-1)}`;
}

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

function matches(type) {
  return limits.allowedTypes.some((allowed) => (allowed.endsWith('/*')
    ? type.startsWith(allowed.slice(0, -1))
    : allowed === type));
}

function typeAllowed(file) {
  let type = (file.type || '').toLowerCase();
  if (REFUSED_TYPES.has(type)) return false;
  type = TYPE_ALIASES[type] || type;
  if (type && type !== 'application/octet-stream') return matches(type);
  // Browsers leave `type` empty or generic for many files: go by the extension then.
  const kind = EXTENSION_KIND[extensionOf(file.name)];
  return Boolean(kind) && matches(KIND_TYPE[kind]);
}

/** Why a file cannot be sent, in plain words, or null when it may be. */
export function checkFile(file) {
  if (file.size === 0) return `“${file.name}” is empty.`;
  if (file.size > limits.maxFileBytes) {
    return `“${file.name}” is ${humanSize(file.size)}; files can be at most ${humanSize(limits.maxFileBytes)}.`;
  }
  if (!typeAllowed(file)) {
    return `“${file.name}” is not a type that can be sent. Allowed: ${allowedSummary()}.`;
  }
  return null;
}
