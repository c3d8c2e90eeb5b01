// End-to-end tests of conversations (issue 18, client part): Markdown, grouping and date
// dividers, edit and delete, threads, reactions, direct messages, the session shared by tabs.
// Every scenario here needs live events: skipped without GET /api/ws, failed with
// E2E_REQUIRE_WS=1.

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, hasWebSocket, Api, uniqueName } from '../lib/server.js';
import {
  launchBrowser, openPage, openTab, logIn, openChannel, messageLocator, screenshot, SCREENSHOTS,
} from '../lib/browser.js';

let server;
let browser;
let root;
let ws = false;
const pages = [];

before(async () => {
  server = await startServer();
  ws = await hasWebSocket(server);
  browser = await launchBrowser();
  root = new Api(server);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  console.log(`screenshots: ${SCREENSHOTS}`);
});

afterEach(async () => {
  const open = pages.splice(0);
  const errors = open.flatMap((p) => p.errors);
  await Promise.all([...new Set(open.map((p) => p.context()))].map((c) => c.close()));
  assert.deepEqual(errors, [], 'the browser logged errors');
});

function needsWebSocket(t) {
  if (ws) return false;
  if (process.env.E2E_REQUIRE_WS === '1') assert.fail('GET /api/ws answers 404');
  t.skip('waits for GET /api/ws (the server answers 404)');
  return true;
}

async function page(options = {}) {
  const p = await openPage(browser, server, { wsMissing: !ws, ...options });
  pages.push(p);
  return p;
}

/** Two users (with display names) in a new public channel, both pages live in it. */
async function pair({ viewport } = {}) {
  const alice = await root.register(uniqueName('alice'));
  const bob = await root.register(uniqueName('bob'));
  await alice.call('PATCH', '/api/me', { display_name: 'Alice Archer' });
  await bob.call('PATCH', '/api/me', { display_name: 'Bob Baker' });
  const channel = await alice.call('POST', '/api/channels', { name: uniqueName('room') });
  await bob.call('POST', `/api/channels/${channel.id}/join`);
  const pageA = await page({ viewport });
  const pageB = await page({ viewport });
  await logIn(pageA, alice);
  await logIn(pageB, bob);
  for (const p of [pageA, pageB]) {
    // On a phone the channel list is a closed drawer: the only channel opens by itself.
    if (viewport) await p.locator('#channel-title', { hasText: `#${channel.name}` }).waitFor();
    else await openChannel(p, channel.name);
  }
  await pageA.locator('#connection[data-state="online"]').waitFor();
  await pageB.locator('#connection[data-state="online"]').waitFor();
  return { alice, bob, channel, pageA, pageB };
}

/** Sends through the composer; waits for `shown` (the text as rendered, default: as typed). */
async function send(p, text, shown = text) {
  await p.fill('#message-input', text);
  await p.keyboard.press('Enter');
  await messageLocator(p, shown).first().waitFor();
}

/** Hovers a message (its actions show on hover or focus) and presses one of them. */
async function action(p, message, name) {
  await message.hover();
  await message.getByRole('button', { name }).click();
}

describe('timeline', () => {
  it('renders Markdown safely, groups consecutive messages, and shows a date divider', async (t) => {
    if (needsWebSocket(t)) return;
    const { pageA, pageB, alice, channel } = await pair();
    await send(pageA, 'This is **bold**, *italic*, ~~gone~~ and `x < y`, see https://example.com/a?b=1', 'This is bold');
    await send(pageA, '```\n<img src=x onerror=alert(1)>\n```', '<img src=x onerror=alert(1)>');
    await send(pageA, '> a quote\n- one\n- two\n\n[click](javascript:alert(1)) [docs](https://example.com/docs)', 'a quote');
    for (let i = 1; i <= 15; i += 1) {
      await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: `line ${i} of a short chat` });
    }
    for (const p of [pageA, pageB]) {
      const first = messageLocator(p, 'This is bold');
      await first.locator('strong', { hasText: 'bold' }).waitFor();
      assert.equal(await first.locator('em').textContent(), 'italic');
      assert.equal(await first.locator('del').textContent(), 'gone');
      assert.equal(await first.locator('code').textContent(), 'x < y');
      const link = first.locator('a');
      assert.equal(await link.getAttribute('href'), 'https://example.com/a?b=1');
      assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
      assert.equal(await link.getAttribute('target'), '_blank');
      const code = p.locator('#message-list pre code');
      assert.equal(await code.textContent(), '<img src=x onerror=alert(1)>');
      assert.equal(await p.locator('#message-list img[src="x"], #message-list script').count(), 0);
      const third = messageLocator(p, 'a quote');
      await third.locator('blockquote', { hasText: 'a quote' }).waitFor();
      assert.equal(await third.locator('ul li').count(), 2);
      assert.equal(await third.locator('a').count(), 1, 'the javascript: link stays text');
      assert.match(await third.textContent(), /\[click\]\(javascript:alert\(1\)\)/);

      // One header for the group; the author's display name; one divider for today.
      await messageLocator(p, 'line 15 of a short chat').waitFor();
      const items = p.locator('#message-list .message');
      assert.equal(await items.count(), 18);
      assert.equal(await p.locator('#message-list .message:not(.continued)').count(), 1);
      assert.equal(await p.locator('#message-list .message .author').first().textContent(), 'Alice Archer');
      assert.deepEqual(await p.locator('#message-list .date-divider').allTextContents(), ['Today']);
    }
    // Dense: the short lines all fit at 1280×800 along with the rest.
    const visible = await pageB.evaluate(() => {
      const box = document.getElementById('messages').getBoundingClientRect();
      return [...document.querySelectorAll('#message-list .message')].filter((m) => {
        const r = m.getBoundingClientRect();
        return r.top >= box.top && r.bottom <= box.bottom;
      }).length;
    });
    assert.ok(visible >= 15, `only ${visible} messages fit`);
    await screenshot(pageB, 'desktop-timeline-markdown');
    // Pinned to the bottom while the content above grows (an edit that adds lines).
    const last = await alice.messages(channel.id);
    const firstId = last.messages[0].id;
    await alice.call('PATCH', `/api/channels/${channel.id}/messages/${firstId}`, {
      content: Array.from({ length: 8 }, (_, i) => `grown line ${i}`).join('\n'),
    });
    await messageLocator(pageB, 'grown line 7').waitFor();
    await pageB.waitForFunction(() => {
      const s = document.getElementById('messages');
      return s.scrollHeight - s.scrollTop - s.clientHeight < 5;
    });
  });

  it('A edits and deletes; B sees both live; Up in an empty composer edits the last message', async (t) => {
    if (needsWebSocket(t)) return;
    const { pageA, pageB } = await pair();
    await send(pageA, 'first draft');
    await send(pageA, 'to be removed');
    await messageLocator(pageB, 'to be removed').waitFor();

    // Edit with the toolbar: Enter saves.
    await action(pageA, messageLocator(pageA, 'first draft'), 'Edit message');
    const editor = pageA.locator('.message.editing textarea');
    await editor.fill('final *text*');
    await editor.press('Enter');
    for (const p of [pageA, pageB]) {
      const edited = messageLocator(p, 'final text');
      await edited.locator('em', { hasText: 'text' }).waitFor();
      await edited.locator('.edited', { hasText: '(edited)' }).waitFor();
    }
    assert.equal(await messageLocator(pageB, 'first draft').count(), 0);

    // Up in the empty composer edits my last message; Escape cancels.
    await pageA.focus('#message-input');
    await pageA.keyboard.press('ArrowUp');
    const lastEditor = messageLocator(pageA, '').last().locator('textarea');
    await lastEditor.waitFor();
    assert.equal(await lastEditor.inputValue(), 'to be removed');
    await lastEditor.press('Escape');
    await pageA.locator('.message.editing').waitFor({ state: 'detached' });
    await messageLocator(pageA, 'to be removed').locator('.message-text').waitFor();

    // Delete asks in the page (a native dialog would be an error), then goes for everyone.
    const doomed = messageLocator(pageA, 'to be removed');
    await action(pageA, doomed, 'Delete message');
    await pageA.locator('#confirm-dialog[open]').waitFor();
    await screenshot(pageA, 'desktop-delete-confirm');
    await pageA.click('#confirm-cancel');
    await pageA.locator('#confirm-dialog[open]').waitFor({ state: 'detached' });
    await action(pageA, doomed, 'Delete message');
    await pageA.click('#confirm-ok');
    await messageLocator(pageA, 'to be removed').waitFor({ state: 'detached' });
    await messageLocator(pageB, 'to be removed').waitFor({ state: 'detached' });
    await messageLocator(pageB, 'final text').waitFor();
  });
});

describe('threads and reactions', () => {
  it('B replies in a thread and reacts; A sees the reply count and the reaction live', async (t) => {
    if (needsWebSocket(t)) return;
    const { pageA, pageB, alice, channel } = await pair();
    await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: 'Lunch at noon?' });
    const rootB = messageLocator(pageB, 'Lunch at noon?');
    await rootB.waitFor();
    const rootA = messageLocator(pageA, 'Lunch at noon?');
    await rootA.waitFor();

    // B opens the thread from the toolbar and replies.
    await action(pageB, rootB, 'Reply in thread');
    await pageB.locator('#thread-panel').waitFor();
    assert.equal(await pageB.locator('#thread-root .message-text').textContent(), 'Lunch at noon?');
    assert.equal(await pageB.evaluate(() => document.activeElement?.id), 'thread-input');
    await pageB.fill('#thread-input', 'Yes, **count me in**');
    await pageB.keyboard.press('Enter');
    await pageB.locator('#thread-list .message', { hasText: 'Yes, count me in' }).waitFor();

    // A: "1 reply" under the root, live; the reply is not in the timeline.
    await rootA.getByRole('button', { name: '1 reply' }).waitFor();
    assert.equal(await messageLocator(pageA, 'count me in').count(), 0);
    await rootA.getByRole('button', { name: '1 reply' }).click();
    await pageA.locator('#thread-list .message', { hasText: 'Yes, count me in' }).waitFor();

    // A second reply appears live in A's open panel, and the count follows.
    await pageB.fill('#thread-input', 'I will book a table');
    await pageB.keyboard.press('Enter');
    await pageA.locator('#thread-list .message', { hasText: 'I will book a table' }).waitFor();
    await pageA.locator('#thread-count', { hasText: '2 replies' }).waitFor();
    await rootA.getByRole('button', { name: '2 replies' }).waitFor();
    await rootB.getByRole('button', { name: '2 replies' }).waitFor();
    await screenshot(pageA, 'desktop-thread-panel');

    // B reacts with the picker; A sees the chip and adds to it; both see the count.
    await action(pageB, rootB, 'Add reaction');
    await pageB.locator('#emoji-picker:not([hidden])').waitFor();
    assert.ok((await pageB.locator('#emoji-picker button').count()) >= 8);
    await screenshot(pageB, 'desktop-emoji-picker');
    await pageB.getByRole('button', { name: 'React with 👍' }).click();
    await pageB.locator('#emoji-picker').waitFor({ state: 'hidden' });
    const chip = (p) => messageLocator(p, 'Lunch at noon?').first().locator('button.reaction[data-emoji="👍"]');
    await chip(pageB).and(pageB.locator('[aria-pressed="true"]')).waitFor();
    await chip(pageA).and(pageA.locator('[aria-pressed="false"]')).waitFor();
    assert.equal(await chip(pageA).locator('.reaction-count').textContent(), '1');
    await chip(pageA).click();
    for (const p of [pageA, pageB]) {
      await chip(p).locator('.reaction-count', { hasText: '2' }).waitFor();
    }
    assert.equal(await chip(pageA).getAttribute('aria-pressed'), 'true');
    // The panel's copy of the root follows as well.
    await pageA.locator('#thread-root button.reaction[data-emoji="👍"] .reaction-count', { hasText: '2' }).waitFor();
    // Clicking my chip again takes my reaction back.
    await chip(pageA).click();
    for (const p of [pageA, pageB]) {
      await chip(p).locator('.reaction-count', { hasText: '1' }).waitFor();
    }
    assert.equal(await chip(pageA).getAttribute('aria-pressed'), 'false');

    // The keyboard: focus the message, R opens the picker, Escape closes it.
    await rootA.focus();
    await pageA.keyboard.press('r');
    await pageA.locator('#emoji-picker:not([hidden])').waitFor();
    await pageA.keyboard.press('Escape');
    await pageA.locator('#emoji-picker').waitFor({ state: 'hidden' });

    // B deletes a reply: it leaves A's panel and the count drops.
    const reply = pageB.locator('#thread-list .message', { hasText: 'I will book a table' });
    await action(pageB, reply, 'Delete message');
    await pageB.click('#confirm-ok');
    await pageA.locator('#thread-list .message', { hasText: 'I will book a table' }).waitFor({ state: 'detached' });
    await rootA.getByRole('button', { name: '1 reply' }).waitFor();
  });

  it('fits a phone: the thread panel covers the timeline', async (t) => {
    if (needsWebSocket(t)) return;
    const { pageA, pageB, alice, channel } = await pair({ viewport: { width: 390, height: 844 } });
    await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: 'Plans for **Friday**:\n- lunch\n- a walk' });
    await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: 'and `code` at https://example.com' });
    await messageLocator(pageB, 'Plans for Friday').waitFor();
    await messageLocator(pageB, 'and code').waitFor();
    await screenshot(pageB, 'phone-timeline-markdown');
    await action(pageB, messageLocator(pageB, 'Plans for Friday'), 'Reply in thread');
    await pageB.fill('#thread-input', 'Sounds good');
    await pageB.keyboard.press('Enter');
    await pageB.locator('#thread-list .message', { hasText: 'Sounds good' }).waitFor();
    await messageLocator(pageA, 'Plans for Friday').getByRole('button', { name: '1 reply' }).waitFor();
    await screenshot(pageB, 'phone-thread-panel');
    const width = await pageB.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `page is ${width} px wide`);
    await pageB.getByRole('button', { name: 'Close thread' }).click();
    await pageB.locator('#thread-panel').waitFor({ state: 'hidden' });
  });
});

describe('direct messages', () => {
  it('A opens a DM with B by username; B sees it appear and reads it', async (t) => {
    if (needsWebSocket(t)) return;
    const { pageA, pageB, alice, bob } = await pair();
    await pageA.getByRole('button', { name: 'New message' }).click();
    await pageA.fill('#new-dm-username', 'nobody-at-all');
    pageA.allowErrors(/status of 404/);
    await pageA.keyboard.press('Enter');
    await pageA.locator('#new-dm-status', { hasText: 'There is no user named' }).waitFor();
    await pageA.fill('#new-dm-username', bob.user.username);
    await pageA.keyboard.press('Enter');
    await pageA.locator('#channel-title', { hasText: `@${bob.user.username}` }).waitFor();
    await pageA.locator('#channel-meta', { hasText: 'Direct message' }).waitFor();
    // Focus moves to the composer once the conversation has loaded (after the title shows).
    await pageA.waitForFunction(() => document.activeElement?.id === 'message-input');
    assert.ok(await pageA.locator('#leave-channel').isHidden(), 'a DM cannot be left');
    await send(pageA, 'Psst, a private word');

    const dmB = pageB.locator('#dm-list .channel-button', { hasText: alice.user.username });
    await dmB.waitFor();
    await dmB.locator('.unread-badge', { hasText: '1' }).waitFor();
    await screenshot(pageB, 'desktop-dm-list');
    await dmB.click();
    await pageB.locator('#channel-title', { hasText: `@${alice.user.username}` }).waitFor();
    await messageLocator(pageB, 'Psst, a private word').waitFor();
    // Opening it again by name gives the same conversation.
    await pageB.getByRole('button', { name: 'New message' }).click();
    await pageB.fill('#new-dm-username', alice.user.username);
    await pageB.keyboard.press('Enter');
    await messageLocator(pageB, 'Psst, a private word').waitFor();
    assert.equal(await pageB.locator('#dm-list .channel-button').count(), 1);
    assert.equal(await pageB.locator('#my-channels .channel-button', { hasText: alice.user.username }).count(), 0);
  });

  it('shows the DM list in the phone drawer', async (t) => {
    if (needsWebSocket(t)) return;
    const alice = await root.register(uniqueName('alice'));
    const bob = await root.register(uniqueName('bob'));
    const dm = await alice.call('POST', '/api/dms', { username: bob.user.username });
    await alice.call('POST', `/api/channels/${dm.id}/messages`, { content: 'hello from a DM' });
    const p = await page({ viewport: { width: 390, height: 844 } });
    await logIn(p, bob);
    // The DM, Bob's only conversation, opens by itself; then the drawer.
    await p.locator('#channel-title', { hasText: `@${alice.user.username}` }).waitFor();
    await messageLocator(p, 'hello from a DM').waitFor();
    await p.click('#sidebar-toggle');
    await p.locator('#dm-list .channel-button', { hasText: alice.user.username }).waitFor({ state: 'visible' });
    await p.waitForFunction(() => getComputedStyle(document.getElementById('sidebar')).transform === 'none');
    await screenshot(p, 'phone-dm-list');
  });
});

describe('session', () => {
  it('a second tab is signed in without the form; logging out in one tab logs out both', async (t) => {
    if (needsWebSocket(t)) return;
    const alice = await root.register(uniqueName('alice'));
    await alice.call('POST', '/api/channels', { name: uniqueName('tabs') });
    const first = await page();
    await logIn(first, alice);
    await first.locator('#channel-title:not(:empty)').waitFor();
    // Focus after signing in: the message box.
    await first.waitForFunction(() => document.activeElement?.id === 'message-input');

    const second = await openTab(first, server, { wsMissing: !ws });
    pages.push(second);
    await second.locator('#app-view').waitFor();
    assert.ok(await second.locator('#auth-view').isHidden());
    await second.locator('#connection[data-state="online"]').waitFor();

    await second.click('#logout');
    await second.locator('#auth-view').waitFor();
    await first.locator('#auth-view').waitFor();
    assert.ok(await first.locator('#app-view').isHidden());

    // Signing in again in one tab signs the other in too.
    await logIn(first, alice);
    await second.locator('#app-view').waitFor();
  });
});

describe('sending', () => {
  it('a "Not sent" error goes away when the connection is back', async (t) => {
    if (needsWebSocket(t)) return;
    const { pageA, pageB } = await pair();
    pageA.allowErrors(/ERR_INTERNET_DISCONNECTED|Failed to fetch|net::ERR/);
    await pageA.context().setOffline(true);
    await pageA.locator('#connection[data-state="offline"]').waitFor();
    await pageA.fill('#message-input', 'sent when back');
    await pageA.keyboard.press('Enter');
    await pageA.locator('#composer-error', { hasText: 'Not sent.' }).waitFor();
    assert.equal(await pageA.inputValue('#message-input'), 'sent when back', 'the text is kept');
    await pageA.context().setOffline(false);
    await pageA.locator('#connection[data-state="online"]').waitFor({ timeout: 40_000 });
    await pageA.locator('#composer-error').filter({ hasText: 'Not sent.' }).waitFor({ state: 'detached' })
      .catch(async () => {
        assert.equal(await pageA.textContent('#composer-error'), '');
      });
    assert.equal(await pageA.textContent('#composer-error'), '');
    await pageA.keyboard.press('Enter');
    await messageLocator(pageB, 'sent when back').waitFor();
  });
});
