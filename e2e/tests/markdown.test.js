// Unit tests of the Markdown subset (static/js/markdown.js), in Node: the renderer returns
// plain objects, so no browser or DOM is needed.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { renderMarkdown, ALLOWED } from '../../static/js/markdown.js';

// Shorthands for expected trees.
const el = (tag, children = [], attrs = {}) => ({ tag, attrs, children });
const p = (...children) => el('p', children);
const strong = (...c) => el('strong', c);
const em = (...c) => el('em', c);
const del = (...c) => el('del', c);
const code = (text) => el('code', [text]);
const br = () => el('br');
const a = (href, ...c) => el('a', c.length ? c : [href], { href, rel: 'noopener noreferrer', target: '_blank' });

const CASES = [
  ['plain text', 'hello world', [p('hello world')]],
  ['HTML is text', '<script>alert(1)</script>', [p('<script>alert(1)</script>')]],
  ['HTML with attributes is text', '<b onclick="x()">hi</b> & <i>', [p('<b onclick="x()">hi</b> & <i>')]],
  ['bold', 'a **b** c', [p('a ', strong('b'), ' c')]],
  ['italic with stars', 'a *b* c', [p('a ', em('b'), ' c')]],
  ['italic with underscores', 'a _b_ c', [p('a ', em('b'), ' c')]],
  ['snake_case is not italic', 'my_var_name and _x_', [p('my_var_name and ', em('x'))]],
  ['strikethrough', '~~gone~~ here', [p(del('gone'), ' here')]],
  ['nested emphasis', '**bold *both* bold**', [p(strong('bold ', em('both'), ' bold'))]],
  ['italic around bold', '*a **b** c*', [p(em('a ', strong('b'), ' c'))]],
  ['unclosed bold', '**bold', [p('**bold')]],
  ['unclosed italic and strike', '*a ~~b', [p('*a ~~b')]],
  ['a lone star', '2 * 3 = 6', [p('2 * 3 = 6')]],
  ['spaced markers are not emphasis', 'a ** b ** c', [p('a ** b ** c')]],
  ['escaped markers', '\\*not italic\\*', [p('*not italic*')]],
  ['inline code', 'run `ls -la` now', [p('run ', code('ls -la'), ' now')]],
  ['no formatting in code', '`**x** <img onerror=alert(1)>`', [p(code('**x** <img onerror=alert(1)>'))]],
  ['double backticks', '``a ` b``', [p(code('a ` b'))]],
  ['unclosed backtick', 'a `b', [p('a `b')]],
  ['fenced code, verbatim', '```\n<img onerror=alert(1)>\n**x** [y](https://z.example)\n```',
    [el('pre', [code('<img onerror=alert(1)>\n**x** [y](https://z.example)')])]],
  ['fenced code with a language, unclosed', 'see\n```js\nlet a = 1;', [p('see'), el('pre', [code('let a = 1;')])]],
  ['line breaks', 'one\ntwo', [p('one', br(), 'two')]],
  ['paragraphs', 'one\n\n\ntwo', [p('one'), p('two')]],
  ['quote', '> quoted *text*\n> more\nafter', [el('blockquote', [p('quoted ', em('text'), br(), 'more')]), p('after')]],
  ['bullet list', '- one\n- **two**', [el('ul', [el('li', ['one']), el('li', [strong('two')])])]],
  ['numbered list', '1. one\n2. two', [el('ol', [el('li', ['one']), el('li', ['two'])])]],
  ['numbered list from 3', '3. three\n4. four', [el('ol', [el('li', ['three']), el('li', ['four'])], { start: '3' })]],
  ['a bare URL', 'go to https://example.com/a?b=1&c=2.', [p('go to ', a('https://example.com/a?b=1&c=2'), '.')]],
  ['a bare URL in parentheses', '(see http://example.com/x)', [p('(see ', a('http://example.com/x'), ')')]],
  ['a bare URL with balanced parentheses', 'https://en.wikipedia.org/wiki/Rust_(language)',
    [p(a('https://en.wikipedia.org/wiki/Rust_(language)'))]],
  ['a link', '[the docs](https://example.com/docs?q=a+b&x=1)', [p(a('https://example.com/docs?q=a+b&x=1', 'the docs'))]],
  ['a link with ) in its URL', '[wiki](https://en.wikipedia.org/wiki/Foo_(bar)) ok',
    [p(a('https://en.wikipedia.org/wiki/Foo_(bar)', 'wiki'), ' ok')]],
  ['a link with formatted text', '[**bold** link](https://example.com)', [p(a('https://example.com', strong('bold'), ' link'))]],
  ['javascript: link is text', '[x](javascript:alert(1))', [p('[x](javascript:alert(1))')]],
  ['data: link is text', '[x](data:text/html,<script>alert(1)</script>)', [p('[x](data:text/html,<script>alert(1)</script>)')]],
  ['bare javascript: is text', 'javascript:alert(1)', [p('javascript:alert(1)')]],
  ['relative link is text', '[x](/api/me)', [p('[x](/api/me)')]],
  ['mixed-case scheme trick is text', '[x](JaVaScRiPt:alert(1))', [p('[x](JaVaScRiPt:alert(1))')]],
  ['URL inside a word is text', 'xhttps://example.com', [p('xhttps://example.com')]],
  ['link text holds no links', '[https://a.example](https://b.example)', [p(a('https://b.example', 'https://a.example'))]],
  ['brackets without a URL', '[not a link] (x)', [p('[not a link] (x)')]],
  ['empty input', '', []],
];

describe('markdown subset', () => {
  for (const [name, input, expected] of CASES) {
    it(name, () => {
      assert.deepEqual(renderMarkdown(input), expected);
    });
  }

  it('builds only allowed tags and attributes, and never a non-http(s) href', () => {
    const walk = (nodes) => {
      for (const n of nodes) {
        if (typeof n === 'string') continue;
        assert.ok(n.tag in ALLOWED, `tag ${n.tag}`);
        for (const key of Object.keys(n.attrs)) assert.ok(ALLOWED[n.tag].includes(key), `${n.tag}[${key}]`);
        if (n.tag === 'a') assert.match(n.attrs.href, /^https?:\/\//);
        walk(n.children);
      }
    };
    for (const [, input] of CASES) walk(renderMarkdown(input));
  });
});
