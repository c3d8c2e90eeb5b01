// A small, safe Markdown subset for messages. It returns a tree of plain objects
// (`{tag, attrs, children}`, text as strings) that views.js turns into DOM nodes with
// createElement and text nodes: user text is never parsed as HTML. Node runs it as is (the
// unit test in e2e/tests/markdown.test.js needs no DOM).
//
// Blocks: paragraphs (single newlines become <br>), ``` fenced code ```, `> ` quotes,
// `- `/`* ` and `1. ` lists. Inline: **bold**, *italic* / _italic_, ~~strike~~, `code`,
// [text](http(s) url) and bare http(s) URLs. Links to any other scheme stay text.

/** The tags (and attributes) the tree may hold; views.js builds nothing else. */
export const ALLOWED = {
  p: [], br: [], strong: [], em: [], del: [], code: [], pre: [], blockquote: [],
  ul: [], ol: ['start'], li: [], a: ['href', 'rel', 'target'],
};

const node = (tag, children = [], attrs = {}) => ({ tag, attrs, children });

/** Only absolute http(s) URLs without spaces or control characters become links. */
export function safeUrl(url) {
  if (!/^https?:\/\/[^\s/?#]/i.test(url)) return null;
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f<>"]/.test(url)) return null;
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null;
  } catch {
    return null;
  }
  return url;
}

function link(href, children) {
  return node('a', children, { href, rel: 'noopener noreferrer', target: '_blank' });
}

// ---------------------------------------------------------------------------------------
// Blocks

const FENCE = /^ {0,3}```/;
const QUOTE = /^ {0,3}>(?: |$)/;
const BULLET = /^ {0,3}[-*] +(.*)$/;
const NUMBERED = /^ {0,3}(\d{1,9})[.)] +(.*)$/;

/** The whole message as a list of block nodes. */
export function renderMarkdown(text) {
  return blocks(String(text ?? '').replace(/\r\n?/g, '\n').split('\n'));
}

function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === '') {
      i += 1;
    } else if (FENCE.test(line)) {
      // Everything up to the closing fence (or the end) verbatim.
      const body = [];
      i += 1;
      while (i < lines.length && !/^ {0,3}```\s*$/.test(lines[i])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence
      out.push(node('pre', [node('code', body.length ? [body.join('\n')] : [])]));
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        inner.push(lines[i].replace(/^ {0,3}> ?/, ''));
        i += 1;
      }
      out.push(node('blockquote', blocks(inner)));
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = !BULLET.test(line);
      const pattern = ordered ? NUMBERED : BULLET;
      const items = [];
      const start = ordered ? Number(line.match(NUMBERED)[1]) : 1;
      while (i < lines.length && pattern.test(lines[i])) {
        const m = lines[i].match(pattern);
        items.push(node('li', inline(ordered ? m[2] : m[1])));
        i += 1;
      }
      out.push(ordered && start !== 1 ? node('ol', items, { start: String(start) }) : node(ordered ? 'ol' : 'ul', items));
    } else {
      const children = [];
      while (i < lines.length && lines[i].trim() !== '' && !startsBlock(lines[i])) {
        if (children.length) children.push(node('br'));
        children.push(...inline(lines[i]));
        i += 1;
      }
      out.push(node('p', children));
    }
  }
  return out;
}

function startsBlock(line) {
  return FENCE.test(line) || QUOTE.test(line) || BULLET.test(line) || NUMBERED.test(line);
}

// ---------------------------------------------------------------------------------------
// Inline

const PUNCTUATION = '\\`*_~[]()>#-.!';
const WORD = /[\p{L}\p{N}]/u;

/** The end of the code span opened at `i` (a run of backticks), or -1. */
function codeSpanEnd(s, i) {
  let run = 0;
  while (s[i + run] === '`') run += 1;
  const fence = '`'.repeat(run);
  let j = s.indexOf(fence, i + run);
  while (j !== -1) {
    let len = 0;
    while (s[j + len] === '`') len += 1;
    if (len === run) return j;
    j = s.indexOf(fence, j + len);
  }
  return -1;
}

/**
 * Where the emphasis opened by `marker` at `from` closes, or -1: the closing marker must
 * follow a non-space, code spans and escapes are skipped, and a single `*` or `_` skips
 * doubled ones (so `*a **b** c*` nests).
 */
function findClose(s, from, marker) {
  const single = marker.length === 1;
  for (let j = from; j < s.length; j += 1) {
    const c = s[j];
    if (c === '\\') {
      j += 1;
    } else if (c === '`') {
      const end = codeSpanEnd(s, j);
      if (end !== -1) {
        j = end;
        while (s[j + 1] === '`') j += 1;
      }
    } else if (s.startsWith(marker, j)) {
      if (single && s[j + 1] === marker) {
        j += 1; // a doubled marker belongs to another emphasis
        continue;
      }
      if (j === from || /\s/.test(s[j - 1])) continue;
      if (marker === '_' && WORD.test(s[j + 1] || '')) continue; // snake_case stays
      return j;
    }
  }
  return -1;
}

/** The `]` matching the `[` at `i`, or -1. */
function closingBracket(s, i) {
  let depth = 0;
  for (let j = i; j < s.length; j += 1) {
    if (s[j] === '\\') j += 1;
    else if (s[j] === '[') depth += 1;
    else if (s[j] === ']') {
      depth -= 1;
      if (depth === 0) return j;
    }
  }
  return -1;
}

/** The `)` matching the `(` at `i` (parentheses inside a URL balance), or -1. */
function closingParen(s, i) {
  let depth = 0;
  for (let j = i; j < s.length; j += 1) {
    if (s[j] === '(') depth += 1;
    else if (s[j] === ')') {
      depth -= 1;
      if (depth === 0) return j;
    } else if (/\s/.test(s[j])) return -1;
  }
  return -1;
}

/** A bare URL starting at `i`: trailing punctuation and unbalanced `)` stay outside. */
function bareUrlEnd(s, i) {
  let end = i;
  while (end < s.length && !/[\s<>"]/.test(s[end])) end += 1;
  for (;;) {
    const last = s[end - 1];
    if ('.,;:!?\'*_~'.includes(last)) {
      end -= 1;
    } else if (last === ')') {
      const url = s.slice(i, end);
      const open = (url.match(/\(/g) || []).length;
      const close = (url.match(/\)/g) || []).length;
      if (close > open) end -= 1;
      else break;
    } else {
      break;
    }
  }
  return end;
}

const EMPHASIS = [
  ['**', 'strong'], ['__', 'strong'], ['~~', 'del'], ['*', 'em'], ['_', 'em'],
];

/** One line of text as inline nodes; `inLink` keeps links out of a link's text. */
export function inline(s, inLink = false) {
  const out = [];
  let text = '';
  const flush = () => {
    if (text) out.push(text);
    text = '';
  };
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length && PUNCTUATION.includes(s[i + 1])) {
      text += s[i + 1];
      i += 2;
      continue;
    }
    if (c === '`') {
      const end = codeSpanEnd(s, i);
      let run = 0;
      while (s[i + run] === '`') run += 1;
      if (end === -1) {
        text += '`'.repeat(run);
        i += run;
        continue;
      }
      let code = s.slice(i + run, end);
      if (code.length > 2 && code.startsWith(' ') && code.endsWith(' ') && code.trim()) code = code.slice(1, -1);
      flush();
      out.push(node('code', [code]));
      i = end + run;
      continue;
    }
    if (c === '[' && !inLink) {
      const close = closingBracket(s, i);
      if (close !== -1 && s[close + 1] === '(') {
        const paren = closingParen(s, close + 1);
        if (paren !== -1) {
          const label = s.slice(i + 1, close);
          const href = safeUrl(s.slice(close + 2, paren));
          if (href && label.trim()) {
            flush();
            out.push(link(href, inline(label, true)));
          } else {
            text += s.slice(i, paren + 1); // not a link: the source, as text
          }
          i = paren + 1;
          continue;
        }
      }
    }
    if (!inLink && (c === 'h' || c === 'H') && /^https?:\/\//i.test(s.slice(i, i + 8))
      && (i === 0 || !WORD.test(s[i - 1]))) {
      const end = bareUrlEnd(s, i);
      const href = safeUrl(s.slice(i, end));
      if (href) {
        flush();
        out.push(link(href, [href]));
        i = end;
        continue;
      }
    }
    const emphasis = EMPHASIS.find(([marker]) => s.startsWith(marker, i));
    if (emphasis) {
      const [marker, tag] = emphasis;
      const after = s[i + marker.length];
      const opens = after !== undefined && !/\s/.test(after)
        && !(marker[0] === '_' && i > 0 && WORD.test(s[i - 1]));
      const close = opens ? findClose(s, i + marker.length, marker) : -1;
      if (close > i + marker.length) {
        flush();
        out.push(node(tag, inline(s.slice(i + marker.length, close), inLink)));
        i = close + marker.length;
        continue;
      }
      text += marker;
      i += marker.length;
      continue;
    }
    text += c;
    i += 1;
  }
  flush();
  return out;
}
