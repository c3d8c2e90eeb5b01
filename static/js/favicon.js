// The tab's icon, drawn on a canvas: a chat bubble, with a red count of unread mentions or a
// dot for other unread messages, so a background tab says whether it needs the reader.

const SIZE = 32;
let drawn = null; // what the icon shows now, to skip needless redraws

/** `{unread, mentions}`: totals over the user's channels (the server's counts, kept live). */
export function setFaviconBadge({ unread, mentions }) {
  const key = `${mentions}/${unread > 0}`;
  if (key === drawn) return;
  drawn = key;
  const canvas = document.createElement('canvas');
  canvas.width = SIZE;
  canvas.height = SIZE;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  // The bubble.
  ctx.fillStyle = '#4a154b';
  ctx.beginPath();
  // roundRect is recent (2023 browsers): a plain rectangle elsewhere.
  if (ctx.roundRect) ctx.roundRect(2, 3, 24, 19, 6);
  else ctx.rect(2, 3, 24, 19);
  ctx.moveTo(8, 20);
  ctx.lineTo(6, 28);
  ctx.lineTo(15, 21);
  ctx.fill();
  if (mentions > 0) {
    const text = mentions > 9 ? '9+' : String(mentions);
    ctx.fillStyle = '#e01e5a';
    ctx.beginPath();
    ctx.arc(SIZE - 10, SIZE - 10, 10, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = '#fff';
    ctx.font = `bold ${text.length > 1 ? 11 : 14}px sans-serif`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(text, SIZE - 10, SIZE - 9);
  } else if (unread > 0) {
    ctx.fillStyle = '#1d9bd1';
    ctx.beginPath();
    ctx.arc(SIZE - 7, 7, 6, 0, Math.PI * 2);
    ctx.fill();
  }
  let link = document.querySelector('link[rel="icon"]');
  if (!link) {
    link = document.createElement('link');
    link.rel = 'icon';
    document.head.append(link);
  }
  link.href = canvas.toDataURL('image/png');
  link.dataset.badge = key; // for tests and the curious
}

/** The tab's title: "(3) #general · Chat", with mentions first when there are any. */
export function titleFor({ unread, mentions, channel }) {
  let count = '';
  if (mentions > 0) count = `(@${mentions}${unread > mentions ? ` · ${unread}` : ''}) `;
  else if (unread > 0) count = `(${unread}) `;
  return `${count}${channel ? `${channel} · ` : ''}Chat`;
}
