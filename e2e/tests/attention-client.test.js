// The attention features of the client: the "New messages" divider with its jump button,
// mention highlights, the tab title and icon from the server's counts, the channel's Files
// panel, a rename seen live, a hidden DM coming back, a thread reply with a file, and the
// notification offer. Desktop and 390 px screenshots of the new views.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, Api, uniqueName } from '../lib/server.js';
import {
  launchBrowser, openPage, openTab, logIn, openChannel, screenshot, thumbnailShown,
} from '../lib/browser.js';
import { png } from '../lib/fixtures.js';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const PHONE = { width: 390, height: 844 };

const channelButton = (page, name) => page.locator('#my-channels .channel-button', { hasText: name });

async function postFile(api, channelId, name, content = '') {
  const form = new FormData();
  form.append('content', content);
  form.append('file', new Blob([png(40, 30)], { type: 'image/png' }), name);
  const res = await fetch(`${server.url}/api/channels/${channelId}/messages`, {
    method: 'POST', headers: { Authorization: `Bearer ${api.token}` }, body: form,
  });
  const text = await res.text();
  assert.equal(res.status, 201, text);
  return JSON.parse(text);
}

/** alice and bob in a new channel, and a second channel for bob to sit in. */
async function setup() {
  const root = new Api(server);
  const alice = await root.register(uniqueName('alice'));
  const bob = await root.register(uniqueName('bob'));
  const main = await alice.call('POST', '/api/channels', { name: uniqueName('main') });
  const lobby = await alice.call('POST', '/api/channels', { name: uniqueName('lobby') });
  for (const channel of [main, lobby]) await bob.call('POST', `/api/channels/${channel.id}/join`);
  return { alice, bob, main, lobby };
}

it('shows unread, mentions and the New messages divider from the server after a reload', async () => {
  const { alice, bob, main, lobby } = await setup();
  for (let n = 0; n < 5; n += 1) {
    await alice.call('POST', `/api/channels/${main.id}/messages`, { content: `seen before ${n}` });
  }
  const page = await openPage(browser, server);
  await logIn(page, bob);
  await openChannel(page, main.name); // read up to here
  await page.locator('#message-list .message', { hasText: 'seen before 4' }).waitFor();
  await openChannel(page, lobby.name);
  // What bob has read is on the server before the page goes away.
  for (let i = 0; i < 50; i += 1) {
    const listed = (await bob.call('GET', '/api/channels')).find((c) => c.id === main.id);
    if (listed.last_read_id > 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const context = page.context();
  await page.close();

  const first = await alice.call('POST', `/api/channels/${main.id}/messages`, {
    content: `@${bob.user.username} can you check the **numbers**? \`@${bob.user.username}\` in code stays plain`,
  });
  for (let n = 0; n < 40; n += 1) {
    await alice.call('POST', `/api/channels/${main.id}/messages`, { content: `later line ${n}` });
  }

  const again = await openTab(page, server); // the same browser: the session outlived the tab
  await again.locator('#app-view').waitFor();
  const badge = channelButton(again, main.name).locator('.unread-badge');
  await badge.filter({ hasText: '@1' }).waitFor();
  assert.match(await badge.getAttribute('class'), /mention-badge/);
  await again.waitForFunction(() => document.title.startsWith('(@1 · 41)'));
  assert.equal(await again.locator('link[rel="icon"]').getAttribute('data-badge'), '1/true');
  await screenshot(again, 'desktop-unread-mention-badge');

  await channelButton(again, main.name).click();
  await again.locator('#channel-title', { hasText: main.name }).waitFor();
  const divider = again.locator('#unread-divider');
  await divider.waitFor();
  // The divider sits right above the first unread message, which mentions bob.
  const next = again.locator('#unread-divider + .date-divider + .message, #unread-divider + .message');
  assert.equal(await next.getAttribute('data-id'), String(first.id));
  assert.match(await next.getAttribute('class'), /mentions-me/);
  const mention = next.locator('.message-text .mention-me');
  assert.equal(await mention.textContent(), `@${bob.user.username}`);
  assert.equal(await next.locator('.message-text code .mention').count(), 0);

  // 41 new lines do not fit: the divider is above the fold and the jump button says so.
  const jump = again.locator('#jump-unread');
  await jump.waitFor();
  assert.match(await jump.textContent(), /Jump to first unread \(41 new\)/);
  await screenshot(again, 'desktop-new-messages-jump');
  await jump.click();
  await jump.waitFor({ state: 'hidden' });
  await again.waitForFunction((id) => document.activeElement?.id === `message-${id}`, first.id);
  const box = await divider.boundingBox();
  const pane = await again.locator('#messages').boundingBox();
  assert.ok(box.y >= pane.y - 1 && box.y < pane.y + pane.height, 'the divider is in view');
  await screenshot(again, 'desktop-new-messages-divider');

  // Read now: the counts are gone from the title and the icon.
  await again.waitForFunction(() => !document.title.startsWith('('));
  assert.equal(await again.locator('link[rel="icon"]').getAttribute('data-badge'), '0/false');
  assert.deepEqual(again.errors, []);
  await context.close();
});

it('shows the divider and the mention on a phone too', async () => {
  const { alice, bob, main, lobby } = await setup();
  await alice.call('POST', `/api/channels/${main.id}/messages`, { content: 'old news' });
  await bob.call('POST', `/api/channels/${main.id}/read`, {
    message_id: (await bob.messages(main.id)).messages.at(-1).id,
  });
  await alice.call('POST', `/api/channels/${main.id}/messages`, { content: `morning @${bob.user.username}, and @channel` });
  await alice.call('POST', `/api/channels/${lobby.id}/messages`, { content: 'elsewhere' });
  const page = await openPage(browser, server, { viewport: PHONE });
  await logIn(page, bob);
  // The first channel opens by itself after logging in: main (created first).
  await page.locator('#channel-title', { hasText: main.name }).waitFor();
  await page.locator('#unread-divider').waitFor();
  await page.locator('.message.mentions-me .mention-me').first().waitFor();
  assert.equal(await page.locator('.message.mentions-me .mention-me').count(), 2);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `page is ${width} px wide`);
  await screenshot(page, 'phone-new-messages-mention');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

it('lists the channel files newest first in the Files panel, live, and opens a file message', async () => {
  const { alice, bob, main } = await setup();
  const older = await postFile(alice, main.id, 'floor-plan.png', 'the plan');
  for (let n = 0; n < 60; n += 1) {
    await alice.call('POST', `/api/channels/${main.id}/messages`, { content: `chatter ${n}` });
  }
  await postFile(bob, main.id, 'budget-chart.png');

  const page = await openPage(browser, server);
  await logIn(page, bob);
  await openChannel(page, main.name);
  const toggle = page.locator('#files-toggle');
  await toggle.click();
  assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
  const rows = page.locator('#files-list .files-row');
  await rows.nth(1).waitFor();
  assert.deepEqual(await rows.locator('.files-row-name').allTextContents(), ['budget-chart.png', 'floor-plan.png']);
  assert.match(await rows.first().locator('.files-row-meta').textContent(), /you/);
  assert.match(await page.locator('#files-status').textContent(), /2 files/);

  // A file posted now appears at the top; one deleted goes.
  const live = await postFile(alice, main.id, 'live-photo.png');
  await rows.first().filter({ hasText: 'live-photo.png' }).waitFor();
  await screenshot(page, 'desktop-files-panel');
  await thumbnailShown(page, 'live-photo.png');
  await alice.call('DELETE', `/api/files/${live.files[0].id}`);
  await page.locator('#files-list .files-row', { hasText: 'live-photo.png' }).waitFor({ state: 'detached' });

  // The keyboard: Escape closes and gives the focus back to the toggle.
  await page.locator('#files-close').focus();
  await page.keyboard.press('Escape');
  await page.locator('#files-panel').waitFor({ state: 'hidden' });
  assert.equal(await page.evaluate(() => document.activeElement.id), 'files-toggle');

  // The name of an old file opens its message, far up the history.
  await toggle.click();
  await page.locator('#files-list .files-row-name', { hasText: 'floor-plan.png' }).click();
  const message = page.locator(`#message-${older.id}`);
  await message.waitFor();
  assert.match(await message.getAttribute('class'), /flash/);
  assert.deepEqual(page.errors, []);
  await page.context().close();

  const phone = await openPage(browser, server, { viewport: PHONE });
  await logIn(phone, bob);
  // The first channel (main) opens by itself after logging in.
  await phone.locator('#channel-title', { hasText: main.name }).waitFor();
  await phone.locator('#history-start:not([hidden]), #load-older:not([hidden])').first().waitFor();
  await phone.locator('#files-toggle').click();
  await phone.locator('#files-list .files-row').nth(1).waitFor();
  await screenshot(phone, 'phone-files-panel');
  await phone.locator('#files-close').click();
  await phone.locator('#files-panel').waitFor({ state: 'hidden' });
  assert.deepEqual(phone.errors, []);
  await phone.context().close();
});

it('shows a rename live to the other member', async () => {
  const { alice, bob, main } = await setup();
  await alice.call('POST', `/api/channels/${main.id}/messages`, { content: 'hello from alice' });
  const pageA = await openPage(browser, server);
  await logIn(pageA, alice);
  await openChannel(pageA, main.name);
  const pageB = await openPage(browser, server);
  await logIn(pageB, bob);
  await openChannel(pageB, main.name);
  const author = pageB.locator('#message-list .message', { hasText: 'hello from alice' }).locator('.author');
  assert.equal(await author.textContent(), alice.user.username);
  await pageA.locator('#connection[data-state="online"]').waitFor();
  await pageB.locator('#connection[data-state="online"]').waitFor();

  await pageA.click('#profile-toggle');
  await pageA.fill('#profile-name', 'Alice Liddell');
  await pageA.press('#profile-name', 'Enter');
  await pageA.locator('#me-name', { hasText: 'Alice Liddell' }).waitFor();
  await author.filter({ hasText: 'Alice Liddell' }).waitFor();
  await screenshot(pageB, 'desktop-rename-live');
  assert.deepEqual(pageA.errors, []);
  assert.deepEqual(pageB.errors, []);
  await pageA.context().close();
  await pageB.context().close();
});

it('hides a DM until its next message, replies in a thread with a file, offers notifications once', async () => {
  const { alice, bob, main } = await setup();
  const dm = await alice.call('POST', '/api/dms', { username: bob.user.username });
  await alice.call('POST', `/api/channels/${dm.id}/messages`, { content: 'psst' });
  const root = await alice.call('POST', `/api/channels/${main.id}/messages`, { content: 'thread root' });

  const page = await openPage(browser, server);
  await logIn(page, bob);
  await openChannel(page, main.name);
  const dmButton = page.locator('#dm-list .channel-button', { hasText: alice.user.username });
  await dmButton.waitFor();
  await page.locator('#connection[data-state="online"]').waitFor();
  await page.locator('#dm-list li', { hasText: alice.user.username }).hover();
  await page.locator('#dm-list .hide-dm').click();
  await dmButton.waitFor({ state: 'detached' });
  const listed = (await bob.call('GET', '/api/channels')).find((c) => c.id === dm.id);
  assert.equal(listed.hidden, true);
  await alice.call('POST', `/api/channels/${dm.id}/messages`, { content: 'are you there?' });
  await dmButton.locator('.unread-badge').waitFor();

  // A reply with a file, from the thread panel.
  await page.locator(`#message-${root.id}`).hover();
  await page.locator(`#message-${root.id} .action-reply`).click();
  await page.locator('#thread-panel').waitFor();
  await page.setInputFiles('#thread-file-input', {
    name: 'sketch.png', mimeType: 'image/png', buffer: png(30, 20),
  });
  await page.locator('#thread-chips .chip', { hasText: 'sketch.png' }).waitFor();
  await page.fill('#thread-input', 'here is the sketch');
  await page.press('#thread-input', 'Enter');
  const reply = page.locator('#thread-list .message', { hasText: 'here is the sketch' });
  await reply.locator('.file-card', { hasText: 'sketch.png' }).waitFor();
  assert.equal(await page.locator('#thread-chips .chip').count(), 0);
  const thread = await bob.call('GET', `/api/channels/${main.id}/messages/${root.id}/thread`);
  assert.equal(thread.messages[0].files[0].file_name, 'sketch.png');
  await screenshot(page, 'desktop-thread-reply-file');
  await page.click('#thread-close');

  // After bob's first message, the one-time offer (if the browser has not decided yet).
  const permission = await page.evaluate(() => (typeof Notification === 'undefined' ? 'none' : Notification.permission));
  await page.fill('#message-input', 'first words');
  await page.press('#message-input', 'Enter');
  await page.locator('#message-list .message', { hasText: 'first words' }).waitFor();
  if (permission === 'default') {
    await page.locator('#notify-banner').waitFor();
    await screenshot(page, 'desktop-notify-banner');
    await page.click('#notify-banner-no');
    await page.locator('#notify-banner').waitFor({ state: 'hidden' });
    await page.fill('#message-input', 'second words');
    await page.press('#message-input', 'Enter');
    await page.locator('#message-list .message', { hasText: 'second words' }).waitFor();
    assert.equal(await page.locator('#notify-banner').isHidden(), true);
  }
  // The sound setting is kept in this browser.
  await page.check('#notify-sound');
  assert.equal(await page.evaluate(() => localStorage.getItem('chat.notify.sound')), '1');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
