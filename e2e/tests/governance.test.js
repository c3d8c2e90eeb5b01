// Storage governance in the browser client: the quota meter, files refused before they are
// sent when they cannot fit, and a channel's retention in its header.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, Api, uniqueName } from '../lib/server.js';
import { launchBrowser, openPage, logIn, openChannel, card, screenshot } from '../lib/browser.js';
import { pdf } from '../lib/fixtures.js';

let server;
let browser;

before(async () => {
  server = await startServer({ USER_QUOTA_MB: '1', FILE_RETENTION_DAYS: '30' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function attach(page, files) {
  const chooser = page.waitForEvent('filechooser');
  await page.evaluate(() => 0);
  await page.click('#attach');
  await (await chooser).setFiles(files);
}

const file = (name, bytes) => ({ name, mimeType: 'application/pdf', buffer: pdf(bytes) });

it('shows the quota, refuses a file that cannot fit before sending, and the retention', async () => {
  const alice = await new Api(server).register(uniqueName('alice'));
  const channel = await alice.call('POST', '/api/channels', { name: uniqueName('kept') });
  await alice.call('PATCH', `/api/channels/${channel.id}`, { retention_days: 7 });
  const page = await openPage(browser, server);
  await logIn(page, alice);
  await openChannel(page, channel.name);

  // The shorter of the channel's 7 days and the server's 30.
  await page.locator('#channel-meta', { hasText: 'files kept 7 days' }).waitFor();
  await page.locator('#storage:not([hidden])', { hasText: '0 B of 1.0 MB used' }).waitFor();

  await attach(page, [file('first.pdf', 600 * 1024)]);
  await page.fill('#message-input', 'the first');
  await page.click('#send');
  await card(page, 'first.pdf').waitFor();
  await page.locator('#storage', { hasText: '600 KB of 1.0 MB used' }).waitFor();

  // 600 KB more does not fit: refused in the composer, nothing sent.
  await attach(page, [file('second.pdf', 600 * 1024)]);
  await page.locator('#composer-error', { hasText: 'does not fit in your storage quota' }).waitFor();
  assert.equal(await page.locator('#chips .chip').count(), 0);
  await screenshot(page, 'desktop-quota-refused');
  const stored = await alice.call('GET', '/api/me/storage');
  assert.equal(stored.file_count, 1);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
