// Unit tests of mention highlighting (static/js/mentions.js) and the tab title
// (static/js/favicon.js), in Node: both work on plain values, no DOM needed.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  findMentions, splitMentions, markMentions, mentionClassifier, mentionReader,
} from '../../static/js/mentions.js';
import { renderMarkdown } from '../../static/js/markdown.js';
import { titleFor } from '../../static/js/favicon.js';

const me = { id: 2, username: 'bobby' };
const span = (text, mine = false) => ({
  tag: 'span', attrs: { class: mine ? 'mention mention-me' : 'mention' }, children: [text],
});
const everyone = () => 'other';

describe('findMentions', () => {
  const names = (text) => findMentions(text).map((m) => m.name);
  it('finds names as the server reads them', () => {
    assert.deepEqual(names('@bobby hi'), ['bobby']);
    assert.deepEqual(names('hi @Bobby, and @carol.'), ['bobby', 'carol']);
    assert.deepEqual(names('ask @first.last-name now'), ['first.last-name']);
    assert.deepEqual(names('(@bobby)'), ['bobby']);
  });
  it('an email address or a lone @ is no mention', () => {
    assert.deepEqual(names('write to me@example.com'), []);
    assert.deepEqual(names('@ alone, @. and @-'), []);
  });
  it('gives exact offsets, the trailing dot left out', () => {
    assert.deepEqual(findMentions('hey @bobby.'), [{ start: 4, end: 10, name: 'bobby' }]);
  });
});

describe('splitMentions', () => {
  it('splits a string into text and spans', () => {
    assert.deepEqual(splitMentions('hi @bobby and @carol!', (n) => (n === 'bobby' ? 'me' : 'other')),
      ['hi ', span('@bobby', true), ' and ', span('@carol'), '!']);
  });
  it('leaves unknown names as text', () => {
    assert.deepEqual(splitMentions('hi @nobody', () => null), ['hi @nobody']);
  });
  it('keeps the original case and what follows', () => {
    assert.deepEqual(splitMentions('@Bobby.', everyone), [span('@Bobby'), '.']);
  });
  it('markup-looking text stays a string, never a tag', () => {
    const out = splitMentions('@bobby <img src=x onerror=alert(1)>', everyone);
    assert.deepEqual(out, [span('@bobby'), ' <img src=x onerror=alert(1)>']);
    assert.equal(typeof out[1], 'string');
  });
});

describe('markMentions on the Markdown tree', () => {
  it('marks text inside emphasis, not in code or links', () => {
    const tree = renderMarkdown('**@bobby** `@bobby` [@bobby](https://x.example) @bobby');
    const marked = markMentions(tree, (n) => (n === 'bobby' ? 'me' : null));
    const p = marked[0];
    assert.equal(p.tag, 'p');
    assert.deepEqual(p.children[0], { tag: 'strong', attrs: {}, children: [span('@bobby', true)] });
    assert.deepEqual(p.children[2], { tag: 'code', attrs: {}, children: ['@bobby'] });
    assert.equal(p.children[4].tag, 'a');
    assert.deepEqual(p.children[4].children, ['@bobby']);
    assert.deepEqual(p.children.at(-1), span('@bobby', true));
  });
  it('leaves fenced code alone', () => {
    const tree = renderMarkdown('```\n@bobby\n```');
    assert.deepEqual(markMentions(tree, everyone), tree);
  });
});

describe('who a mention is for', () => {
  const known = new Set(['carol', 'bobby']);
  it('the reader, @channel when it reached them, and members', () => {
    const classify = mentionClassifier({ mentions: [2] }, me, known);
    assert.equal(classify('bobby'), 'me');
    assert.equal(classify('channel'), 'me');
    assert.equal(classify('carol'), 'other');
    assert.equal(classify('stranger'), null);
    assert.equal(mentionClassifier({ mentions: [] }, me, known)('channel'), 'other');
  });
  it('a message mentioning the reader is highlighted, unless they wrote it', () => {
    const read = mentionReader(me, () => known);
    assert.equal(read({ user_id: 1, channel_id: 5, mentions: [2] }).mentionsMe, true);
    assert.equal(read({ user_id: 1, channel_id: 5, mentions: [3] }).mentionsMe, false);
    assert.equal(read({ user_id: 2, channel_id: 5, mentions: [2] }).mentionsMe, false);
  });
});

describe('the tab title', () => {
  it('counts unread messages, mentions first', () => {
    assert.equal(titleFor({ unread: 0, mentions: 0, channel: '#general' }), '#general · Chat');
    assert.equal(titleFor({ unread: 3, mentions: 0, channel: '#general' }), '(3) #general · Chat');
    assert.equal(titleFor({ unread: 3, mentions: 1, channel: '' }), '(@1 · 3) Chat');
    assert.equal(titleFor({ unread: 2, mentions: 2, channel: '@bobby' }), '(@2) @bobby · Chat');
  });
});
