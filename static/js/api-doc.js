// Renders /api/openapi.json as a readable list of operations. Builds DOM nodes with
// textContent only: nothing from the document is ever parsed as HTML.

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child != null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A short name for a schema: `Message`, `Message[]`, `string`. */
function schemaName(schema) {
  if (!schema) return '';
  if (schema.$ref) return schema.$ref.split('/').pop();
  if (schema.type === 'array') return `${schemaName(schema.items)}[]`;
  if (Array.isArray(schema.type)) return schema.type.join(' | ');
  return schema.type || 'object';
}

function bodyOf(content) {
  if (!content) return null;
  return Object.entries(content)
    .map(([type, media]) => `${schemaName(media.schema)} (${type})`)
    .join(', ');
}

function operation(path, method, op) {
  const id = `${method}-${path}`.replace(/[^a-z0-9]+/gi, '-');
  const title = el('h3', {},
    el('span', { class: `method ${method}` }, method), ' ', path,
    op.security ? el('span', { class: 'lock', title: 'needs a bearer token' }, '(token)') : null);
  const box = el('section', { class: 'op', id }, title);
  if (op.summary) box.append(el('p', {}, op.summary));
  if (op.description && op.description !== op.summary) box.append(el('p', {}, op.description));
  const params = op.parameters || [];
  if (params.length) {
    const rows = params.map((p) => el('tr', {},
      el('td', {}, el('code', {}, p.name)), el('td', {}, p.in),
      el('td', {}, schemaName(p.schema)), el('td', {}, p.description || '')));
    box.append(el('table', {}, el('tbody', {}, ...rows)));
  }
  const request = op.requestBody && bodyOf(op.requestBody.content);
  if (request) box.append(el('p', {}, 'Body: ', el('span', { class: 'schema' }, request)));
  const responses = Object.entries(op.responses || {}).map(([status, r]) => el('tr', {},
    el('td', {}, el('code', {}, status)), el('td', {}, r.description || ''),
    el('td', { class: 'schema' }, bodyOf(r.content) || '')));
  box.append(el('table', {}, el('tbody', {}, ...responses)));
  return [id, box];
}

async function main() {
  const target = document.getElementById('operations');
  const toc = document.getElementById('toc');
  const response = await fetch('/api/openapi.json');
  if (!response.ok) {
    target.textContent = `Could not load the document (${response.status}).`;
    return;
  }
  const doc = await response.json();
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || 'other';
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op));
    }
  }
  target.replaceChildren();
  for (const [tag, ops] of byTag) {
    target.append(el('h2', {}, tag));
    for (const [id, box] of ops) {
      target.append(box);
      const title = box.querySelector('h3').textContent.replace('(token)', '');
      toc.append(el('li', {}, el('a', { href: `#${id}` }, title)));
    }
  }
}

main();
