// Direct uploads in the browser (issue 15): a big file goes to the store in parts (the e2e
// server uses the local store, whose part URLs are the server's own
// PUT /api/uploads/{id}/parts/{n}?token=), with progress, pause and resume; a reload in the
// middle, then the same file picked again, sends only the missing parts; the other user sees
// the file live and downloads the same bytes; a refusal at `complete` keeps the typed text.
//
// Then the same straight to a real S3 server (SeaweedFS in CI: E2E_S3_ENDPOINT and friends,
// see e2e/README.md), cross-origin: the bucket's CORS rule is the one the server applies at
// start from AWS_S3_CORS_ORIGINS, and the client reads each part's ETag through it.

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startServer, hasWebSocket, Api, uniqueName } from '../lib/server.js';
import {
  launchBrowser, openPage, logIn, openChannel, messageLocator, card, screenshot,
  throttleUploads, SCREENSHOTS,
} from '../lib/browser.js';
import { executable } from '../lib/fixtures.js';

const MiB = 1024 * 1024;
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };
const PART = /\/api\/uploads\/([^/?]+)\/parts\/(\d+)\?token=/;

let server;
let browser;
let root;
let ws = false;
let scratch;
const pages = [];

before(async () => {
  server = await startServer();
  ws = await hasWebSocket(server);
  browser = await launchBrowser();
  root = new Api(server);
  scratch = mkdtempSync(join(tmpdir(), 'chat-e2e-direct-'));
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  console.log(`screenshots: ${SCREENSHOTS}`);
});

afterEach(async () => {
  const open = pages.splice(0);
  const errors = open.flatMap((p) => p.errors);
  await Promise.all(open.map((p) => p.context().close()));
  assert.deepEqual(errors, [], 'the browser logged errors');
});

function needsWebSocket(t) {
  if (ws) return false;
  if (process.env.E2E_REQUIRE_WS === '1') assert.fail('GET /api/ws answers 404');
  t.skip('waits for GET /api/ws (the server answers 404)');
  return true;
}

/** Two users in a new channel of `on` (the local-store server by default), pages open. */
async function pair(on = server) {
  const api = on === server ? root : new Api(on);
  const alice = await api.register(uniqueName('alice'));
  const bob = await api.register(uniqueName('bob'));
  const channel = await alice.call('POST', '/api/channels', { name: uniqueName('big') });
  await bob.call('POST', `/api/channels/${channel.id}/join`);
  const pageA = await openPage(browser, on);
  const pageB = await openPage(browser, on);
  pages.push(pageA, pageB);
  await logIn(pageA, alice);
  await logIn(pageB, bob);
  await openChannel(pageA, channel.name);
  await openChannel(pageB, channel.name);
  return { alice, bob, channel, pageA, pageB };
}

/** A PDF of exactly `size` bytes (random inside), written to disk: the picker reads files. */
function bigPdf(name, size) {
  const head = Buffer.from('%PDF-1.4\n%', 'latin1');
  const tail = Buffer.from('\n%%EOF\n', 'latin1');
  const bytes = Buffer.concat([head, randomBytes(size - head.length - tail.length), tail]);
  const path = join(scratch, name);
  writeFileSync(path, bytes);
  return { path, bytes };
}

/**
 * Every part PUT the page makes (`seen`: {upload, part}) and those the store answered 200 to
 * (`stored`: {upload, part, bytes, etag}, with the bytes each request carried).
 */
function watchParts(page) {
  const seen = [];
  const stored = [];
  page.on('request', (request) => {
    const m = PART.exec(request.url());
    if (request.method() === 'PUT' && m) seen.push({ upload: m[1], part: Number(m[2]) });
  });
  page.on('requestfinished', async (request) => {
    const m = PART.exec(request.url());
    if (request.method() !== 'PUT' || !m) return;
    const response = await request.response();
    if (response?.status() !== 200) return;
    const { requestBodySize } = await request.sizes();
    stored.push({ upload: m[1], part: Number(m[2]), bytes: requestBodySize, etag: response.headers().etag });
  });
  return { seen, stored };
}

const partNumbers = (list) => list.map((p) => p.part).sort((a, b) => a - b);

/**
 * Holds the PUT of part `n` (a stalled connection): `held` gets its route, `release()` lets
 * later ones through. `pattern` finds the part number in capture group `group`.
 */
async function holdPart(page, n, pattern = PART, group = 2) {
  const held = [];
  let holding = true;
  await page.route(pattern, (route) => {
    if (holding && pattern.exec(route.request().url())[group] === String(n)) held.push(route);
    else route.continue();
  });
  return { held, release: () => { holding = false; } };
}

/** A screenshot at 390 px wide, then back to the desktop size (no drawer caught sliding). */
async function phoneScreenshot(p, name) {
  await p.emulateMedia({ reducedMotion: 'reduce' });
  await p.setViewportSize(PHONE);
  await p.waitForFunction(() => getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden');
  await screenshot(p, name);
  await p.setViewportSize(DESKTOP);
  await p.emulateMedia({ reducedMotion: null });
}

async function attach(p, files, button = '#attach') {
  const chooser = p.waitForEvent('filechooser');
  await p.evaluate(() => 0); // the chooser listener is in force before the click
  await p.click(button);
  await (await chooser).setFiles(files);
}

async function downloadBytes(p, fileName) {
  const [download] = await Promise.all([
    p.waitForEvent('download'),
    card(p, fileName).getByRole('button', { name: `Download ${fileName}` }).click(),
  ]);
  return readFileSync(await download.path());
}

describe('direct uploads', () => {
  it('a 20 MiB file goes to the store in parts with progress, pauses and resumes; B gets it live', async (t) => {
    if (needsWebSocket(t)) return;
    const config = await root.call('GET', '/api/config');
    assert.equal(config.direct_uploads, true);
    const { pageA, pageB, alice, channel } = await pair();
    const file = bigPdf('survey.pdf', 20 * MiB);
    const parts = watchParts(pageA);
    const posts = [];
    pageA.on('request', (r) => {
      if (r.method() === 'POST' && r.url().endsWith(`/api/channels/${channel.id}/messages`)) posts.push(r);
    });

    const restore = await throttleUploads(pageA, 3 * MiB); // several seconds: progress to see
    await attach(pageA, [file.path]);
    await pageA.fill('#message-input', 'the survey, all of it');
    await pageA.click('#send');
    const upload = pageA.locator('#outbox .upload');
    await pageA.waitForFunction(() => {
      const bar = document.querySelector('#outbox .upload progress');
      return bar && bar.value > 0.1 && bar.value < 0.9;
    });
    await screenshot(pageA, 'desktop-direct-upload-progress');
    await phoneScreenshot(pageA, 'phone-direct-upload-progress');

    // Pause: the parts in flight stop; Resume carries on from what was stored.
    await upload.getByRole('button', { name: 'Pause' }).click();
    await pageA.locator('#outbox .upload[data-state="paused"]').waitFor();
    assert.equal((await alice.messages(channel.id)).messages.length, 0);
    await restore();
    await upload.getByRole('button', { name: 'Resume' }).click();
    await card(pageA, 'survey.pdf').waitFor();
    assert.equal(await pageA.locator('#outbox .upload').count(), 0);

    // The bytes went as part PUTs, 8 MiB parts (the server's default): 1, 2 and 3 stored.
    const { stored } = parts;
    assert.deepEqual([...new Set(partNumbers(stored))], [1, 2, 3]);
    assert.equal(new Set(parts.seen.map((p) => p.upload)).size, 1, 'one upload, resumed');
    for (const p of stored) assert.ok(p.etag, `part ${p.part} answered an ETag`);
    // The message itself is JSON naming the upload, with an Idempotency-Key.
    assert.equal(posts.length, 1);
    assert.match(posts[0].headers()['content-type'], /application\/json/);
    assert.ok(posts[0].headers()['idempotency-key']);
    assert.deepEqual(JSON.parse(posts[0].postData()), {
      content: 'the survey, all of it', upload_ids: [parts.seen[0].upload],
    });

    // B: live, and the same bytes.
    await card(pageB, 'survey.pdf').waitFor();
    await messageLocator(pageB, 'the survey, all of it').waitFor();
    const bytes = await downloadBytes(pageB, 'survey.pdf');
    assert.equal(bytes.length, file.bytes.length);
    assert.ok(bytes.equals(file.bytes), 'B downloads the bytes A sent');
    const { messages } = await alice.messages(channel.id);
    assert.equal(messages.length, 1);
    assert.equal(messages[0].files[0].file_size, 20 * MiB);
  });

  it('after a reload mid-upload, picking the same file again sends only the missing parts', async (t) => {
    if (needsWebSocket(t)) return;
    const { pageA, pageB, alice, channel } = await pair();
    const file = bigPdf('archive.pdf', 20 * MiB);
    const first = watchParts(pageA);

    // Part 3 is held (a stalled connection) while parts 1 and 2 are stored.
    const { held, release } = await holdPart(pageA, 3);
    await attach(pageA, [file.path]);
    await pageA.fill('#message-input', 'the archive');
    await pageA.click('#send');
    const deadline = Date.now() + 30_000;
    while (first.stored.length < 2 || held.length < 1) {
      assert.ok(Date.now() < deadline, 'parts 1 and 2 were not stored');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(partNumbers(first.stored), [1, 2]);
    assert.equal(held.length, 1);
    const firstBytes = first.stored.reduce((s, p) => s + p.bytes, 0);

    release();
    await pageA.reload();
    for (const route of held) await route.abort().catch(() => {}); // its page is gone
    // The same listeners count the second time, from zero.
    first.seen.length = 0;
    first.stored.length = 0;
    const second = first;

    // The outbox remembers the send: 16 of 20 MiB stored, the text kept.
    const entry = pageA.locator('#outbox .upload[data-state="interrupted"]');
    await entry.waitFor();
    await entry.getByText('Choose “archive.pdf” again to send the rest.').waitFor();
    assert.equal(await entry.locator('.upload-text').textContent(), 'the archive');
    assert.equal(await entry.locator('.upload-pct').textContent(), '80%');
    await screenshot(pageA, 'desktop-direct-upload-interrupted');
    await phoneScreenshot(pageA, 'phone-direct-upload-interrupted');
    assert.equal((await alice.messages(channel.id)).messages.length, 0);

    await attach(pageA, [file.path], '#outbox .upload button.resume');
    await card(pageA, 'archive.pdf').waitFor();
    await messageLocator(pageA, 'the archive').waitFor();

    // Only part 3 went the second time: 4 MiB instead of 20.
    const again = second.stored;
    assert.deepEqual(partNumbers(again), [3]);
    assert.deepEqual(partNumbers(second.seen), [3]);
    const secondBytes = again.reduce((s, p) => s + p.bytes, 0);
    assert.equal(firstBytes, 16 * MiB);
    assert.equal(secondBytes, 4 * MiB);
    assert.ok(secondBytes < file.bytes.length);
    assert.equal(again[0].upload, held[0].request().url().match(PART)[1], 'the same upload was resumed');

    await card(pageB, 'archive.pdf').waitFor();
    const bytes = await downloadBytes(pageB, 'archive.pdf');
    assert.ok(bytes.equals(file.bytes), 'B downloads the bytes A sent, across the reload');
    const { messages } = await alice.messages(channel.id);
    assert.equal(messages.length, 1);
    assert.equal(messages[0].content, 'the archive');
    // Nothing is left to resume.
    assert.equal(await pageA.locator('#outbox .upload').count(), 0);
    assert.deepEqual(await pageA.evaluate(() => Object.values(JSON.parse(localStorage.getItem('chat.direct')))
      .flatMap((m) => [...m.uploads, ...m.sends])), []);
  });

  it('the same file picked again with the paperclip after a reload resumes too; the text comes along', async (t) => {
    if (needsWebSocket(t)) return;
    const { pageA, pageB, alice, channel } = await pair();
    const file = bigPdf('slides.pdf', 12 * MiB); // 8 + 4 MiB
    const parts = watchParts(pageA);
    const { held, release } = await holdPart(pageA, 2);
    await attach(pageA, [file.path]);
    await pageA.fill('#message-input', 'slides for friday');
    await pageA.click('#send');
    const deadline = Date.now() + 30_000;
    while (parts.stored.length < 1 || held.length < 1) {
      assert.ok(Date.now() < deadline, 'part 1 was not stored');
      await new Promise((r) => setTimeout(r, 100));
    }
    release();
    await pageA.reload();
    for (const route of held) await route.abort().catch(() => {});
    parts.seen.length = 0;
    parts.stored.length = 0;
    await pageA.locator('#outbox .upload[data-state="interrupted"]').waitFor();

    // Through the composer this time, with no text typed: the interrupted send's text is used.
    await attach(pageA, [file.path]);
    await pageA.locator('#chips .chip', { hasText: 'slides.pdf' }).waitFor();
    await pageA.click('#send');
    await card(pageA, 'slides.pdf').waitFor();
    assert.deepEqual(partNumbers(parts.seen), [2]);
    assert.equal(parts.stored.reduce((s, p) => s + p.bytes, 0), 4 * MiB);
    assert.equal(await pageA.locator('#outbox .upload').count(), 0);
    await messageLocator(pageB, 'slides for friday').locator('.file-card').waitFor();
    const { messages } = await alice.messages(channel.id);
    assert.deepEqual(messages.map((m) => [m.content, m.files.map((f) => f.file_size)]), [['slides for friday', [12 * MiB]]]);
  });

  it("shows the server's refusal at complete (an executable named .pdf) and keeps the text", async () => {
    const { pageA, alice, channel } = await pair();
    pageA.allowErrors(/status of 415/);
    const path = join(scratch, 'manual.pdf');
    writeFileSync(path, executable(9 * MiB)); // over the 8 MiB threshold: direct
    await attach(pageA, [path]);
    await pageA.fill('#message-input', 'the manual');
    await pageA.click('#send');
    const failed = pageA.locator('#outbox .upload[data-state="failed"]');
    await failed.locator('.upload-error', { hasText: "a file's contents are of a type it does not accept" }).waitFor();
    await failed.getByRole('button', { name: 'Dismiss' }).click();
    assert.equal(await pageA.inputValue('#message-input'), 'the manual');
    assert.equal((await alice.messages(channel.id)).messages.length, 0);
  });
});

// ---------------------------------------------------------------------------------------
// Straight to S3

const S3 = {
  endpoint: process.env.E2E_S3_ENDPOINT,
  bucket: process.env.E2E_S3_BUCKET,
  accessKey: process.env.E2E_S3_ACCESS_KEY,
  secretKey: process.env.E2E_S3_SECRET_KEY,
};
// A presigned UploadPart (or PutObject) URL on the S3 server.
const S3_PART = /[?&]partNumber=(\d+)&uploadId=/;

describe('direct uploads straight to S3, cross-origin', () => {
  let s3server;

  before(async () => {
    if (!S3.endpoint) return;
    // CORS for this server's origin only: the rule the browser's PUTs depend on.
    s3server = await startServer((url) => ({
      AWS_S3_BUCKET_NAME: S3.bucket,
      AWS_S3_ENDPOINT: S3.endpoint,
      AWS_ACCESS_KEY_ID: S3.accessKey,
      AWS_SECRET_ACCESS_KEY: S3.secretKey,
      AWS_S3_CORS_ORIGINS: url,
    }));
  });

  after(async () => {
    await s3server?.stop();
  });

  it('a 20 MiB file goes to S3 in parts; after a reload only the missing part is sent; B gets it live', async (t) => {
    if (!S3.endpoint) {
      if (process.env.E2E_REQUIRE_S3 === '1') assert.fail('E2E_S3_ENDPOINT is not set');
      t.skip('needs an S3 server: E2E_S3_ENDPOINT, E2E_S3_BUCKET, E2E_S3_ACCESS_KEY, E2E_S3_SECRET_KEY');
      return;
    }
    if (needsWebSocket(t)) return;
    const { pageA, pageB, alice, channel } = await pair(s3server);

    const file = bigPdf('s3-survey.pdf', 20 * MiB);
    const toS3 = (request) => request.method() === 'PUT' && request.url().startsWith(S3.endpoint);
    const stored = [];
    pageA.on('requestfinished', async (request) => {
      if (!toS3(request)) return;
      const response = await request.response();
      if (response?.status() !== 200) return;
      const { requestBodySize } = await request.sizes();
      const part = Number(S3_PART.exec(request.url())[1]);
      // The ETag is read by the page through the CORS rule's ExposeHeaders.
      stored.push({ part, bytes: requestBodySize, url: request.url() });
    });
    // Part 3 is held (a stalled connection) while parts 1 and 2 are stored in the bucket.
    const { held, release } = await holdPart(pageA, 3, S3_PART, 1);
    await attach(pageA, [file.path]);
    await pageA.fill('#message-input', 'the survey, via S3');
    await pageA.click('#send');
    await pageA.waitForFunction(() => {
      const bar = document.querySelector('#outbox .upload progress');
      return bar && bar.value > 0;
    });
    const deadline = Date.now() + 30_000;
    while (stored.length < 2 || held.length < 1) {
      assert.ok(Date.now() < deadline, 'parts 1 and 2 were not stored in S3');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(stored.map((p) => p.part).sort(), [1, 2]);
    assert.equal(stored.reduce((sum, p) => sum + p.bytes, 0), 16 * MiB);
    // Signed for the S3 server itself: the chat server carried none of the bytes.
    for (const p of stored) assert.match(p.url, /X-Amz-Signature=/);
    await screenshot(pageA, 'desktop-direct-upload-s3-progress');

    release();
    await pageA.reload();
    for (const route of held) await route.abort().catch(() => {});
    stored.length = 0;
    const entry = pageA.locator('#outbox .upload[data-state="interrupted"]');
    await entry.waitFor();
    await attach(pageA, [file.path], '#outbox .upload button.resume');
    await card(pageA, 's3-survey.pdf').waitFor();

    // The second time, only part 3: 4 of the 20 MiB.
    assert.deepEqual(stored.map((p) => p.part), [3]);
    assert.equal(stored[0].bytes, 4 * MiB);

    await card(pageB, 's3-survey.pdf').waitFor();
    await messageLocator(pageB, 'the survey, via S3').waitFor();
    const bytes = await downloadBytes(pageB, 's3-survey.pdf');
    assert.ok(bytes.equals(file.bytes), 'B downloads from S3 the bytes A sent');
    const { messages } = await alice.messages(channel.id);
    assert.equal(messages.length, 1);
    assert.equal(messages[0].files[0].file_size, 20 * MiB);
  });
});
