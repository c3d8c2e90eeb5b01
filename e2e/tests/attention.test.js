// Read state kept on the server: unread counts survive a reload, and reading in one tab
// clears the badge in the user's other tabs (read_updated).

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, Api, uniqueName } from '../lib/server.js';
import { launchBrowser, openPage, logIn, openChannel, screenshot } from '../lib/browser.js';

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

const badge = (page, name) => page.locator('#my-channels .channel-button', { hasText: name }).locator('.unread-badge');

it('keeps unread counts across a reload and clears them in every tab when read', async () => {
  const root = new Api(server);
  const alice = await root.register(uniqueName('alice'));
  const bob = await root.register(uniqueName('bob'));
  const main = await alice.call('POST', '/api/channels', { name: uniqueName('main') });
  const other = await alice.call('POST', '/api/channels', { name: uniqueName('other') });
  for (const channel of [main, other]) await bob.call('POST', `/api/channels/${channel.id}/join`);

  const tab1 = await openPage(browser, server);
  await logIn(tab1, bob);
  await openChannel(tab1, main.name);
  for (const n of [1, 2, 3]) {
    await alice.call('POST', `/api/channels/${other.id}/messages`, { content: `news ${n}` });
  }
  await badge(tab1, other.name).filter({ hasText: '3' }).waitFor();

  // The count comes from the server after a reload, not from the page's memory.
  await tab1.reload();
  await badge(tab1, other.name).filter({ hasText: '3' }).waitFor();
  const listed = (await bob.call('GET', '/api/channels')).find((c) => c.id === other.id);
  assert.equal(listed.unread_count, 3);

  // A second tab of the same browser: signed in, same badge.
  const tab2 = await tab1.context().newPage();
  await tab2.goto(server.url);
  await badge(tab2, other.name).filter({ hasText: '3' }).waitFor();
  await screenshot(tab2, 'desktop-unread-from-server');

  // Reading in tab 1 clears tab 2's badge, live, and the server's count.
  await openChannel(tab1, other.name);
  await badge(tab2, other.name).waitFor({ state: 'detached' });
  const after = (await bob.call('GET', '/api/channels')).find((c) => c.id === other.id);
  assert.equal(after.unread_count, 0);
  await tab2.reload();
  await tab2.locator('#my-channels .channel-button', { hasText: other.name }).waitFor();
  assert.equal(await badge(tab2, other.name).count(), 0);
  assert.deepEqual(tab1.errors, []);
  await tab1.context().close();
});

it('finds a message and a file by a word, marks it, and opens the message in its channel', async () => {
  const root = new Api(server);
  const alice = await root.register(uniqueName('alice'));
  const bob = await root.register(uniqueName('bob'));
  const room = await alice.call('POST', '/api/channels', { name: uniqueName('plans') });
  const other = await alice.call('POST', '/api/channels', { name: uniqueName('chatter') });
  for (const channel of [room, other]) await bob.call('POST', `/api/channels/${channel.id}/join`);
  const target = await alice.call('POST', `/api/channels/${room.id}/messages`, { content: 'The quarterly budget is **approved**' });
  // Enough later messages that the target is not on the first page of history.
  for (let n = 0; n < 60; n += 1) {
    await alice.call('POST', `/api/channels/${room.id}/messages`, { content: `filler ${n}` });
  }
  const form = new FormData();
  form.append('content', 'the plan');
  form.append('file', new Blob([Buffer.from('%PDF-1.4\n%%EOF\n')], { type: 'application/pdf' }), 'roadmap-2027.pdf');
  const res = await fetch(`${server.url}/api/channels/${other.id}/messages`, {
    method: 'POST', headers: { Authorization: `Bearer ${alice.token}` }, body: form,
  });
  assert.equal(res.status, 201);

  const page = await openPage(browser, server);
  await logIn(page, bob);
  await openChannel(page, other.name);
  await page.fill('#search-input', 'budg');
  await page.press('#search-input', 'Enter');
  const hit = page.locator('#search-results .search-message', { hasText: 'quarterly' });
  await hit.waitFor();
  assert.equal(await hit.locator('mark').first().textContent(), 'budg');
  await screenshot(page, 'desktop-search');
  await hit.locator('button').click();
  await page.locator('#channel-title', { hasText: room.name }).waitFor();
  const message = page.locator(`#message-${target.id}`);
  await message.waitFor();
  assert.match(await message.getAttribute('class'), /flash/);
  await message.locator('strong', { hasText: 'approved' }).waitFor();

  // Files only: the PDF by a word of its name.
  await page.fill('#search-input', 'roadmap');
  await page.press('#search-input', 'Enter');
  await page.locator('#search-results .search-file', { hasText: 'roadmap-2027.pdf' }).waitFor();
  await page.check('#search-files-only');
  assert.equal(await page.locator('#search-results .search-message').count(), 0);
  assert.equal(await page.locator('#search-results .search-file').count(), 1);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
