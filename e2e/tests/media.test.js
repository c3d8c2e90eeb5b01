// Media in the browser client: an image's ThumbHash placeholder in a box of its size, then its
// thumbnail, the timeline staying at the bottom; the gallery stepping through the channel's
// images; a voice note recorded with Chromium's fake microphone, sent and played.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, Api, uniqueName } from '../lib/server.js';
import { launchBrowser, openPage, logIn, openChannel, card, screenshot } from '../lib/browser.js';
import { png } from '../lib/fixtures.js';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser({
    extraArgs: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function postImage(api, channelId, name, width, height) {
  const form = new FormData();
  form.append('content', `picture ${name}`);
  form.append('file', new Blob([png(width, height)], { type: 'image/png' }), name);
  const res = await fetch(`${server.url}/api/channels/${channelId}/messages`, {
    method: 'POST', headers: { Authorization: `Bearer ${api.token}` }, body: form,
  });
  assert.equal(res.status, 201);
  return res.json();
}

/** Distance of the message list from its bottom, in pixels. */
function fromBottom(page) {
  return page.evaluate(() => {
    const s = document.getElementById('messages');
    return s.scrollHeight - s.scrollTop - s.clientHeight;
  });
}

it('shows the placeholder, then the thumbnail, staying at the bottom; the gallery steps through images', async () => {
  const alice = await new Api(server).register(uniqueName('alice'));
  const channel = await alice.call('POST', '/api/channels', { name: uniqueName('pictures') });
  for (let n = 0; n < 30; n += 1) {
    await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: `line ${n}` });
  }
  const page = await openPage(browser, server);
  await logIn(page, alice);
  await openChannel(page, channel.name);

  // Thumbnails wait until the test lets them through: the placeholder must show first.
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  await page.route('**/api/files/*/thumbnail?*', async (route) => {
    await gate;
    await route.continue();
  });

  const first = await postImage(alice, channel.id, 'wide.png', 1200, 600);
  const wide = card(page, 'wide.png');
  const placeholder = wide.locator('.card-thumb canvas.thumb-placeholder');
  await placeholder.waitFor();
  const thumb = wide.locator('.card-thumb img.thumb');
  assert.equal(await thumb.evaluate((img) => img.classList.contains('loaded')), false);
  // The box has the picture's proportions before any pixel of it has arrived.
  const box = await wide.locator('.card-thumb').boundingBox();
  assert.ok(Math.abs(box.width / box.height - 2) < 0.05, `box ${box.width}x${box.height}`);
  assert.ok(await fromBottom(page) < 4, 'the list is at the bottom with the placeholder');
  await screenshot(page, 'media-placeholder');

  release();
  await wide.locator('.card-thumb img.thumb.loaded').waitFor();
  const natural = await thumb.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  assert.deepEqual(natural, [400, 200], 'the thumbnail, not the full image');
  const after = await wide.locator('.card-thumb').boundingBox();
  assert.equal(Math.round(after.height), Math.round(box.height), 'no layout jump');
  assert.ok(await fromBottom(page) < 4, 'still at the bottom after the thumbnail loaded');
  await screenshot(page, 'media-thumbnail');

  await postImage(alice, channel.id, 'tall.png', 300, 600);
  await postImage(alice, channel.id, 'square.png', 500, 500);
  // Each card grows when its previews arrive; the list follows it down (a resize observer:
  // after layout, so polled rather than read once at an arbitrary moment).
  await card(page, 'tall.png').locator('.card-thumb img.thumb.loaded').waitFor();
  await card(page, 'square.png').locator('.card-thumb img.thumb.loaded').waitFor();
  await page.waitForFunction(() => {
    const s = document.getElementById('messages');
    return s.scrollHeight - s.scrollTop - s.clientHeight < 4;
  }, null, { timeout: 3000 });

  await wide.locator('.card-preview').click();
  const dialog = page.locator('#lightbox');
  await dialog.waitFor();
  assert.equal(await page.textContent('#lightbox-title'), 'wide.png');
  assert.equal(await page.textContent('#lightbox-count'), '1 of 3');
  assert.equal(await page.isDisabled('#lightbox-prev'), true);
  await page.keyboard.press('ArrowRight');
  await page.locator('#lightbox-title', { hasText: 'tall.png' }).waitFor();
  assert.equal(await page.textContent('#lightbox-count'), '2 of 3');
  await page.click('#lightbox-next');
  await page.locator('#lightbox-title', { hasText: 'square.png' }).waitFor();
  assert.equal(await page.isDisabled('#lightbox-next'), true);
  // The full image, with a download of it.
  await page.locator('#lightbox-img').evaluate((img) => img.decode());
  const shown = await page.locator('#lightbox-img').evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  assert.deepEqual(shown, [500, 500]);
  assert.equal(await page.getAttribute('#lightbox-download', 'download'), 'square.png');
  await screenshot(page, 'media-gallery');
  await page.keyboard.press('ArrowLeft');
  await page.locator('#lightbox-title', { hasText: 'tall.png' }).waitFor();
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  assert.ok(first.files[0].id > 0);
  assert.deepEqual(page.errors, []);
  await page.close();
});

it('records a voice note that arrives and plays', async () => {
  const alice = await new Api(server).register(uniqueName('alice'));
  const channel = await alice.call('POST', '/api/channels', { name: uniqueName('voices') });
  const page = await openPage(browser, server);
  await page.context().grantPermissions(['microphone'], { origin: server.url });
  await logIn(page, alice);
  await openChannel(page, channel.name);

  await page.click('#record');
  await page.locator('#record[aria-pressed="true"]').waitFor();
  await page.locator('#record-timer', { hasText: '0:02' }).waitFor();
  await screenshot(page, 'media-recording');
  await page.click('#record');
  assert.equal(await page.isHidden('#record-timer'), true);

  const note = page.locator('#message-list .file-card.kind-audio');
  await note.waitFor();
  const name = await note.locator('.file-name').textContent();
  assert.match(name, /^voice-note-.*\.webm$/);
  const history = await alice.messages(channel.id);
  const file = history.messages.at(-1).files[0];
  assert.equal(file.content_type, 'audio/webm', 'sniffed as audio, not video');
  // Its duration is shown, and it plays.
  await note.locator('.audio-duration', { hasText: /^0:0[1-4]$/ }).waitFor();
  const audio = note.locator('audio');
  await audio.evaluate((a) => { a.muted = true; return a.play(); });
  await page.waitForFunction(() => document.querySelector('#message-list .file-card.kind-audio audio').currentTime > 0.2);
  await screenshot(page, 'media-voice-note');
  assert.deepEqual(page.errors, []);
  await page.close();
});
