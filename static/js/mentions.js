// Mentions in a message's text: `@username` and `@channel` become highlighted spans, the
// ones naming the reader in a stronger colour (as Slack does). Pure: it works on the tree
// markdown.js builds (strings and {tag, attrs, children}), so Node's test runner checks it
// without a DOM, and the text stays text (a span's child string), never markup.

// As the server reads them (src/db/mentions.rs): an `@` at the start or after a character
// that cannot be in a username (so `me@example.com` mentions nobody), then username
// characters; a trailing `.` or `-` ends a sentence rather than the name.
const NAME_CHAR = /[a-z0-9_.-]/i;

/** Where `@names` are in `text`: [{start, end, name}] (end exclusive, name lowercased). */
export function findMentions(text) {
  const found = [];
  for (let i = 0; i < text.length; i += 1) {
    if (text[i] !== '@' || (i > 0 && NAME_CHAR.test(text[i - 1]))) continue;
    let end = i + 1;
    while (end < text.length && NAME_CHAR.test(text[end]) && end - i <= 64) end += 1;
    while (end > i + 1 && /[.-]/.test(text[end - 1])) end -= 1;
    if (end > i + 1) found.push({ start: i, end, name: text.slice(i + 1, end).toLowerCase() });
    i = end - 1;
  }
  return found;
}

/**
 * Splits one string into strings and mention spans. `classify(name)` answers 'me' (it
 * names the reader, or `@channel` when the message mentions them), 'other' (someone else
 * known), or null (not a mention: left as text).
 */
export function splitMentions(text, classify) {
  const out = [];
  let at = 0;
  for (const { start, end, name } of findMentions(text)) {
    const kind = classify(name);
    if (!kind) continue;
    if (start > at) out.push(text.slice(at, start));
    out.push({
      tag: 'span',
      attrs: { class: kind === 'me' ? 'mention mention-me' : 'mention' },
      children: [text.slice(start, end)],
    });
    at = end;
  }
  if (at < text.length) out.push(text.slice(at));
  return out.length ? out : [text];
}

// Code and links keep their text as written.
const VERBATIM = new Set(['code', 'pre', 'a']);

/** The tree with mentions marked in its text, outside code and links. */
export function markMentions(nodes, classify) {
  return nodes.flatMap((node) => {
    if (typeof node === 'string') return splitMentions(node, classify);
    if (VERBATIM.has(node.tag)) return [node];
    return [{ ...node, children: markMentions(node.children || [], classify) }];
  });
}

/**
 * The classifier for a message read by `me`: `@me` and, when the message mentions the
 * reader, `@channel` are 'me'; a username in `known` (a Set) is 'other'.
 */
export function mentionClassifier(message, me, known) {
  const mentionsMe = (message.mentions || []).includes(me.id);
  return (name) => {
    if (name === me.username) return 'me';
    if (name === 'channel') return mentionsMe ? 'me' : 'other';
    return known.has(name) ? 'other' : null;
  };
}

/**
 * What views.js needs for one message: the classifier, and whether the message mentions
 * the reader (its row is highlighted). `usernamesOf(channelId)` gives a Set of the
 * channel's known usernames.
 */
export function mentionReader(me, usernamesOf) {
  return (message) => ({
    classify: mentionClassifier(message, me, usernamesOf(message.channel_id)),
    mentionsMe: message.user_id !== me.id && (message.mentions || []).includes(me.id),
  });
}
