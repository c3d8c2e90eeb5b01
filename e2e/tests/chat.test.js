// End-to-end tests of the browser client (static/) against the real server, in Chromium.
// Scenarios that need live events over GET /api/ws are skipped, with a note, while the
// server answers that path with 404; E2E_REQUIRE_WS=1 makes them fail instead.

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startServer, hasWebSocket, storedObjects, tempFiles, Api, uniqueName } from '../lib/server.js';
import {
  launchBrowser, openPage, logIn, openChannel, messageLocator, card, screenshot,
  throttleUploads, thumbnailShown, SCREENSHOTS,
} from '../lib/browser.js';
import { png, pdf, executable, pngSized } from '../lib/fixtures.js';

let server;
let browser;
let root; // an Api without a token, for registering
let ws = false; // does the server have /api/ws yet?
let scratch; // a temporary folder for files handed to the browser
const pages = [];

before(async () => {
  server = await startServer();
  ws = await hasWebSocket(server);
  if (!ws) console.log('note: /api/ws answers 404: scenarios with live events are skipped');
  browser = await launchBrowser();
  root = new Api(server);
  scratch = mkdtempSync(join(tmpdir(), 'chat-e2e-files-'));
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  console.log(`screenshots: ${SCREENSHOTS}`);
});

// Every page a test opened must have logged no error; then its context closes.
afterEach(closePages);

/** Closes the pages the test opened, failing it if any logged an error. */
async function closePages() {
  const open = pages.splice(0);
  const errors = open.flatMap((p) => p.errors);
  await Promise.all(open.map((p) => p.context().close()));
  assert.deepEqual(errors, [], 'the browser logged errors');
}

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

/** Two users in a new public channel; their pages logged in with the channel open. */
async function pair({ pages: withPages = true } = {}) {
  const alice = await root.register(uniqueName('alice'));
  const bob = await root.register(uniqueName('bob'));
  const channel = await alice.call('POST', '/api/channels', { name: uniqueName('room') });
  await bob.call('POST', `/api/channels/${channel.id}/join`);
  if (!withPages) return { alice, bob, channel };
  const pageA = await page();
  const pageB = await page();
  await logIn(pageA, alice);
  await logIn(pageB, bob);
  await openChannel(pageA, channel.name);
  await openChannel(pageB, channel.name);
  return { alice, bob, channel, pageA, pageB };
}

/** Chooses files through the paperclip button (the system dialog is answered by the test). */
async function attachWithPaperclip(p, files) {
  const { chooser } = await expectFileChooser(p);
  await p.click('#attach');
  await (await chooser).setFiles(files);
}

/**
 * Waits for the next file chooser. Playwright starts intercepting choosers when the first
 * listener is added; the round trip after it makes sure that is in force before the test
 * presses anything (a single key press can otherwise beat it).
 */
async function expectFileChooser(p) {
  const chooser = p.waitForEvent('filechooser');
  await p.evaluate(() => 0);
  return { chooser }; // wrapped: an async function returning the promise would wait for it
}

const PNG = { name: 'diagram.png', mimeType: 'image/png', buffer: png(320, 200) };
const PDF = { name: 'report.pdf', mimeType: 'application/pdf', buffer: pdf(300_000) };

async function expectImageLoaded(locator) {
  await locator.waitFor();
  await locator.page().waitForFunction((img) => img.complete && img.naturalWidth > 0, await locator.elementHandle());
}

async function downloadBytes(p, fileName) {
  const [download] = await Promise.all([
    p.waitForEvent('download'),
    card(p, fileName).getByRole('button', { name: `Download ${fileName}` }).click(),
  ]);
  assert.equal(download.suggestedFilename(), fileName);
  return readFileSync(await download.path());
}

async function deleteFile(p, fileName) {
  await card(p, fileName).getByRole('button', { name: `Delete ${fileName}` }).click();
  await card(p, fileName).getByRole('button', { name: `Confirm: delete ${fileName}` }).click();
  await card(p, fileName).waitFor({ state: 'detached' });
}

describe('accounts and channels', () => {
  it('registers, creates channels, keeps the session on reload, logs out and in', async () => {
    const p = await page();
    await screenshot(p, 'desktop-login');
    const username = uniqueName('carol');
    await p.click('#mode-register');
    await p.fill('#auth-username', username);
    await p.fill('#auth-password', 'a good password');
    await p.fill('#auth-display-name', 'Carol');
    await p.click('#auth-submit');
    await p.locator('#app-view').waitFor();
    assert.equal(await p.textContent('#me-name'), 'Carol');
    assert.ok(await p.evaluate(() => localStorage.getItem('chat.token')));
    // The live connection is reported; without /api/ws it stays offline and retries.
    await p.locator(ws ? '#connection[data-state="online"]' : '#connection[data-state="offline"]').waitFor();

    await p.fill('#new-channel-name', 'design');
    await p.click('#create-channel-form button[type=submit]');
    await p.locator('#channel-title', { hasText: '#design' }).waitFor();
    await p.fill('#new-channel-name', 'secret plans');
    await p.check('#new-channel-private');
    await p.click('#create-channel-form button[type=submit]');
    await p.locator('#channel-title', { hasText: '#secret plans' }).waitFor();
    assert.match(await p.textContent('#channel-meta'), /Private channel/);

    await p.fill('#message-input', 'first!');
    await p.keyboard.press('Enter');
    await messageLocator(p, 'first!').waitFor();

    await p.reload();
    await p.locator('#channel-title', { hasText: '#secret plans' }).waitFor();
    await messageLocator(p, 'first!').waitFor();

    await p.click('#logout');
    await p.locator('#auth-view').waitFor();
    assert.equal(await p.evaluate(() => localStorage.getItem('chat.token')), null);
    await p.fill('#auth-username', username);
    await p.fill('#auth-password', 'a good password');
    await p.click('#auth-submit');
    await p.locator('#my-channels .channel-button', { hasText: 'secret plans' }).waitFor();
  });

  it('joins a public channel, adds a member by username, and leaves', async () => {
    const owner = await root.register(uniqueName('dave'));
    const other = await root.register(uniqueName('erin'));
    const open = await owner.call('POST', '/api/channels', { name: uniqueName('lobby') });
    const closed = await owner.call('POST', '/api/channels', { name: uniqueName('vault'), is_private: true });

    const p = await page();
    await logIn(p, other);
    assert.equal(await p.locator('#public-channels li', { hasText: closed.name }).count(), 0);
    await p.getByRole('button', { name: `Join ${open.name}` }).click();
    await p.locator('#channel-title', { hasText: `#${open.name}` }).waitFor();

    // The private channel's owner adds `other` through the API; `other` adds a third user here.
    await owner.call('POST', `/api/channels/${closed.id}/members`, { username: other.user.username });
    const third = await root.register(uniqueName('frank'));
    await p.click('#add-member-toggle');
    await p.fill('#add-member-username', third.user.username);
    await p.keyboard.press('Enter');
    await p.locator('#add-member-status', { hasText: `Added ${third.user.username}` }).waitFor();
    const members = await third.call('GET', `/api/channels/${open.id}/members`);
    assert.ok(members.some((u) => u.username === third.user.username));

    p.allowErrors(/status of 404/); // the answer to an unknown username
    await p.fill('#add-member-username', 'nobody-here');
    await p.keyboard.press('Enter');
    await p.locator('#add-member-status', { hasText: 'There is no user named' }).waitFor();

    await p.click('#leave-channel');
    await p.locator('#channel-status', { hasText: 'Press again to leave' }).waitFor();
    await p.getByRole('button', { name: `Confirm: leave #${open.name}` }).click();
    await p.locator('#my-channels .channel-button', { hasText: open.name }).waitFor({ state: 'detached' });
    await p.locator('#public-channels li', { hasText: open.name }).waitFor();
  });

  it('pages through history as the user scrolls up', async () => {
    const { alice, channel } = await pair({ pages: false });
    for (let i = 1; i <= 120; i += 1) {
      await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: `history ${i}` });
    }
    const p = await page();
    await logIn(p, alice);
    await openChannel(p, channel.name);
    const items = p.locator('#message-list .message');
    assert.equal(await items.count(), 50);
    assert.equal(await items.last().locator('.message-text').textContent(), 'history 120');
    for (const expected of [100, 120]) {
      await p.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
      await p.waitForFunction((n) => document.querySelectorAll('#message-list .message').length === n, expected);
    }
    await p.locator('#history-start').waitFor();
    assert.equal(await items.first().locator('.message-text').textContent(), 'history 1');
  });
});

describe('attachments', () => {
  it('sends a PNG and a PDF with the paperclip: progress, cards, preview, download, delete', async () => {
    const { pageA, pageB, channel, alice } = await pair();
    const restore = await throttleUploads(pageA, 400_000); // about a second for the PDF
    await attachWithPaperclip(pageA, [PNG, PDF]);
    await pageA.locator('#chips .chip', { hasText: 'diagram.png' }).waitFor();
    await pageA.locator('#chips .chip', { hasText: 'report.pdf' }).waitFor();
    await screenshot(pageA, 'desktop-composer-chips');
    await pageA.fill('#message-input', 'the figures');
    await pageA.click('#send');
    // Progress while the body goes out, then the cards.
    await pageA.waitForFunction(() => document.querySelector('#outbox .upload progress')?.value > 0.2);
    await screenshot(pageA, 'desktop-upload-progress');
    await card(pageA, 'report.pdf').waitFor();
    await card(pageA, 'diagram.png').waitFor();
    await restore();
    assert.equal(await pageA.locator('#outbox .upload').count(), 0);
    assert.match(await card(pageA, 'report.pdf').locator('.file-size').textContent(), /KB/);

    // B: live if the socket exists; from history otherwise.
    if (!ws) await pageB.reload();
    await card(pageB, 'diagram.png').waitFor();
    await expectImageLoaded(card(pageB, 'diagram.png').locator('img'));
    await card(pageB, 'diagram.png').getByRole('button', { name: 'Open diagram.png full size' }).click();
    await pageB.locator('#lightbox[open]').waitFor();
    await expectImageLoaded(pageB.locator('#lightbox-img'));
    await pageB.keyboard.press('Escape');
    await pageB.locator('#lightbox[open]').waitFor({ state: 'detached' });
    // B sees no delete action on A's files.
    assert.equal(await card(pageB, 'report.pdf').getByRole('button', { name: /Delete/ }).count(), 0);

    const bytes = await downloadBytes(pageB, 'report.pdf');
    assert.ok(bytes.equals(PDF.buffer), 'the downloaded PDF has the uploaded bytes');
    await screenshot(pageB, 'desktop-channel-attachments');

    if (ws) {
      await thumbnailShown(pageA, 'diagram.png');
      await thumbnailShown(pageB, 'diagram.png');
    }
    await deleteFile(pageA, 'diagram.png');
    if (!ws) await pageB.reload();
    await card(pageB, 'diagram.png').waitFor({ state: 'detached' });
    await card(pageB, 'report.pdf').waitFor();
    const page1 = await alice.messages(channel.id);
    assert.deepEqual(page1.messages.at(-1).files.map((f) => f.file_name), ['report.pdf']);
  });

  it('B sees files arrive and a deleted file disappear live, without reloading', async (t) => {
    if (needsWebSocket(t)) return;
    const { pageA, pageB } = await pair();
    await pageB.locator('#connection[data-state="online"]').waitFor();
    await attachWithPaperclip(pageA, [PNG, PDF]);
    await pageA.fill('#message-input', 'live files');
    await pageA.click('#send');
    await card(pageB, 'diagram.png').waitFor();
    await card(pageB, 'report.pdf').waitFor();
    await pageB.locator('#announce-messages', { hasText: 'live files (2 files)' }).waitFor({ state: 'attached' });
    await expectImageLoaded(card(pageB, 'diagram.png').locator('img'));
    const bytes = await downloadBytes(pageB, 'report.pdf');
    assert.ok(bytes.equals(PDF.buffer));
    await thumbnailShown(pageA, 'diagram.png');
    await thumbnailShown(pageB, 'diagram.png');
    await deleteFile(pageA, 'diagram.png');
    await card(pageB, 'diagram.png').waitFor({ state: 'detached' });
    await card(pageB, 'report.pdf').waitFor();
  });

  it('refuses, before sending, a file over 50 MB and a file of a refused type', async () => {
    const { pageA, alice, channel } = await pair();
    const huge = join(scratch, 'huge-video.mp4');
    writeFileSync(huge, '');
    truncateSync(huge, 51 * 1024 * 1024); // sparse: no disk used
    const program = join(scratch, 'setup.exe');
    writeFileSync(program, executable());
    await attachWithPaperclip(pageA, [huge, program]);
    const error = pageA.locator('#composer-error');
    await error.filter({ hasText: '“huge-video.mp4” is 51 MB; files can be at most 50 MB.' }).waitFor();
    await error.filter({ hasText: '“setup.exe” is not a type that can be sent.' }).waitFor();
    assert.equal(await pageA.locator('#chips .chip').count(), 0);
    await screenshot(pageA, 'desktop-refused-files');
    await pageA.click('#send');
    await error.filter({ hasText: 'Write a message or attach a file first.' }).waitFor();
    assert.equal((await alice.messages(channel.id)).messages.length, 0);
  });

  it("follows the server's limits (GET /api/config); shows its 415 in plain words; keeps the text", async () => {
    const small = await startServer({ MAX_FILE_SIZE_MB: '1' });
    let p;
    try {
      const alice = await new Api(small).register(uniqueName('gina'));
      const channel = await alice.call('POST', '/api/channels', { name: 'limits' });
      p = await openPage(browser, small, { wsMissing: !(await hasWebSocket(small)) });
      pages.push(p);
      p.allowErrors(/status of 415/);
      await logIn(p, alice);
      await openChannel(p, 'limits');
      assert.match(await p.getAttribute('#attach', 'title'), /up to 1\.0 MB each/);

      // 2 MB: over this server's 1 MB, refused before anything is sent; the text stays.
      await p.fill('#message-input', 'too big');
      await attachWithPaperclip(p, [{ name: 'large.png', mimeType: 'image/png', buffer: pngSized(2 * 1024 * 1024) }]);
      await p.locator('#composer-error', { hasText: '“large.png” is 2.0 MB; files can be at most 1.0 MB.' }).waitFor();
      assert.equal(await p.locator('#chips .chip').count(), 0);
      assert.equal(await p.inputValue('#message-input'), 'too big');
      await p.fill('#message-input', '');

      // Named like a PDF, so the browser lets it through; the bytes are an executable.
      await attachWithPaperclip(p, [{ name: 'notes.pdf', mimeType: 'application/pdf', buffer: executable() }]);
      await p.fill('#message-input', 'the notes, as promised');
      await p.click('#send');
      const failed = p.locator('#outbox .upload[data-state="failed"]');
      await failed.locator('.upload-error', { hasText: "The server refused the upload: a file's contents are of a type it does not accept" }).waitFor();
      await screenshot(p, 'desktop-server-refusal');
      await failed.getByRole('button', { name: 'Dismiss' }).click();
      // What was typed comes back to the composer.
      assert.equal(await p.inputValue('#message-input'), 'the notes, as promised');

      assert.equal((await alice.messages(channel.id)).messages.length, 0);
      assert.deepEqual(storedObjects(small), []);
    } finally {
      await p?.context().close(); // before the server goes: no reconnect attempts to log
      await small.stop();
    }
  });

  it('attaches a pasted image', async () => {
    const { pageA } = await pair();
    await pageA.focus('#message-input');
    await pageA.evaluate((base64) => {
      const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], 'image.png', { type: 'image/png' }));
      document.activeElement.dispatchEvent(new ClipboardEvent('paste', {
        clipboardData: transfer, bubbles: true, cancelable: true,
      }));
    }, png(40, 30).toString('base64'));
    await pageA.locator('#chips .chip', { hasText: /^IMGpasted-\d{8}-\d{6}\.png/ }).waitFor();
    await pageA.keyboard.press('Enter');
    await expectImageLoaded(pageA.locator('.file-card.kind-image img'));
  });

  it('replaces an expired download link with a fresh one', async () => {
    const shortLinks = await startServer({ DOWNLOAD_URL_TTL_SECONDS: '2' });
    let p;
    try {
      const alice = await new Api(shortLinks).register(uniqueName('hana'));
      const channel = await alice.call('POST', '/api/channels', { name: 'links' });
      const form = new FormData();
      form.append('content', 'links expire');
      form.append('file', new Blob([PNG.buffer], { type: 'image/png' }), PNG.name);
      form.append('file', new Blob([PDF.buffer], { type: 'application/pdf' }), PDF.name);
      const res = await fetch(`${shortLinks.url}/api/channels/${channel.id}/messages`, {
        method: 'POST', headers: { Authorization: `Bearer ${alice.token}` }, body: form,
      });
      assert.equal(res.status, 201);
      p = await openPage(browser, shortLinks, { wsMissing: !(await hasWebSocket(shortLinks)) });
      pages.push(p);
      await logIn(p, alice);
      await expectImageLoaded(card(p, PNG.name).locator('img'));
      await p.waitForTimeout(3000); // the links listed with the messages are now expired
      const bytes = await downloadBytes(p, PDF.name);
      assert.ok(bytes.equals(PDF.buffer));
      await card(p, PNG.name).getByRole('button', { name: `Open ${PNG.name} full size` }).click();
      await expectImageLoaded(p.locator('#lightbox[open] #lightbox-img'));
    } finally {
      await p?.context().close(); // before the server goes: no reconnect attempts to log
      await shortLinks.stop();
    }
  });

  it('attaches a dropped file, with a visible drop zone', async () => {
    const { pageA, pageB } = await pair();
    const data = await pageA.evaluateHandle(() => {
      const transfer = new DataTransfer();
      transfer.items.add(new File(['name,score\nada,10\n'], 'scores.csv', { type: 'text/csv' }));
      return transfer;
    });
    await pageA.dispatchEvent('#messages', 'dragenter', { dataTransfer: data });
    await pageA.locator('#drop-zone').waitFor();
    await screenshot(pageA, 'desktop-drop-zone');
    await pageA.dispatchEvent('#messages', 'drop', { dataTransfer: data });
    await pageA.locator('#drop-zone').waitFor({ state: 'hidden' });
    await pageA.locator('#chips .chip', { hasText: 'scores.csv' }).waitFor();
    await pageA.keyboard.press('Enter'); // the drop put the focus in the message box
    await card(pageA, 'scores.csv').waitFor();
    if (!ws) await pageB.reload();
    await card(pageB, 'scores.csv').waitFor();
  });

  it('cancelling a slow upload leaves nothing on the server; retry sends it', async () => {
    const { pageA, alice, channel } = await pair();
    const restore = await throttleUploads(pageA, 64 * 1024);
    await attachWithPaperclip(pageA, [{ name: 'slow.png', mimeType: 'image/png', buffer: pngSized(1024 * 1024) }]);
    await pageA.fill('#message-input', 'slowly');
    await pageA.click('#send');
    const upload = pageA.locator('#outbox .upload');
    await pageA.waitForFunction(() => {
      const bar = document.querySelector('#outbox .upload progress');
      return bar && bar.value > 0.05;
    });
    // Cancel once the server is writing the file (its temporary file exists), so the check
    // below is about cleaning it up, not about a file that never was.
    const writing = Date.now() + 10_000;
    while (tempFiles(server).length === 0 && Date.now() < writing) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(tempFiles(server).length, 1, 'the upload never reached the store');
    await upload.getByRole('button', { name: 'Cancel upload' }).click();
    await upload.locator('.upload-error', { hasText: 'Cancelled. Nothing was sent.' }).waitFor();

    // The server drops what it had stored for the request (in the background).
    // Both the objects and the temporary file the upload was being written to (tests run
    // one at a time, so no other upload has one open).
    const leftovers = () => [
      ...storedObjects(server).filter((f) => f.includes(`/channels/${channel.id}/`)),
      ...tempFiles(server),
    ];
    const deadline = Date.now() + 10_000;
    while (leftovers().length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(leftovers(), []);
    assert.equal((await alice.messages(channel.id)).messages.length, 0);

    await restore();
    await upload.getByRole('button', { name: 'Retry' }).click();
    await card(pageA, 'slow.png').waitFor();
    const { messages } = await alice.messages(channel.id);
    assert.equal(messages.length, 1);
    assert.equal(messages[0].files[0].file_name, 'slow.png');
  });
});

describe('live events', () => {
  it('B catches up with messages posted while its connection was cut', async (t) => {
    if (needsWebSocket(t)) return;
    const { alice, pageB, channel } = await pair();
    await pageB.locator('#connection[data-state="online"]').waitFor();
    await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: 'before the cut' });
    await messageLocator(pageB, 'before the cut').waitFor();

    await pageB.context().setOffline(true);
    await pageB.locator('#connection[data-state="offline"]').waitFor();
    for (const n of [1, 2, 3]) {
      await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: `during the cut ${n}` });
    }
    await pageB.context().setOffline(false);
    await pageB.locator('#connection[data-state="online"]').waitFor({ timeout: 40_000 });
    for (const n of [1, 2, 3]) await messageLocator(pageB, `during the cut ${n}`).waitFor();
    await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: 'after the cut' });
    await messageLocator(pageB, 'after the cut').waitFor();
    const texts = await pageB.locator('#message-list .message .message-text').allTextContents();
    assert.deepEqual(texts, ['before the cut', 'during the cut 1', 'during the cut 2', 'during the cut 3', 'after the cut']);
  });

  it('marks channels with new messages as unread and shows who is typing', async (t) => {
    if (needsWebSocket(t)) return;
    const { alice, bob, pageA, pageB, channel } = await pair();
    const other = await alice.call('POST', '/api/channels', { name: uniqueName('side') });
    await bob.call('POST', `/api/channels/${other.id}/join`);
    await pageB.reload();
    await openChannel(pageB, channel.name);
    await pageB.locator('#connection[data-state="online"]').waitFor();

    await alice.call('POST', `/api/channels/${other.id}/messages`, { content: 'over here' });
    const sideButton = pageB.locator('#my-channels .channel-button', { hasText: other.name });
    await sideButton.locator('.unread-badge', { hasText: '1' }).waitFor();
    await sideButton.click();
    await messageLocator(pageB, 'over here').waitFor();
    assert.equal(await sideButton.locator('.unread-badge').count(), 0);

    await pageA.reload(); // `other` was made through the API, after this page loaded
    await openChannel(pageA, other.name);
    await pageA.locator('#connection[data-state="online"]').waitFor();
    await pageA.type('#message-input', 'typing something');
    await pageB.locator('#typing', { hasText: `${alice.user.username} is typing…` }).waitFor();
  });
});

describe('safety and accessibility', () => {
  it('shows file names and messages with HTML as text', async () => {
    const { pageA, pageB } = await pair();
    const evilName = '<img src=x onerror=alert(1)>.png';
    const evilText = '<script>alert(2)</script><b>bold?</b> & <i>friends</i>';
    await attachWithPaperclip(pageA, [{ name: evilName, mimeType: 'image/png', buffer: png(16, 16) }]);
    await pageA.locator('#chips .chip-name', { hasText: evilName }).waitFor();
    await pageA.fill('#message-input', evilText);
    await pageA.keyboard.press('Enter');
    for (const p of [pageA, pageB]) {
      if (p === pageB && !ws) await p.reload();
      await card(p, evilName).waitFor();
      assert.equal(await card(p, evilName).locator('.file-name').textContent(), evilName);
      await messageLocator(p, evilText).waitFor();
      assert.equal(await messageLocator(p, evilText).locator('.message-text').textContent(), evilText);
      assert.equal(await p.locator('#message-list script, #message-list b, #message-list i, img[src="x"]').count(), 0);
    }
    // page.errors holds any dialog an injected script opened; afterEach checks it is empty.
  });

  it('keyboard only: attach a file with the paperclip and send', async () => {
    const { pageA } = await pair();
    const { chooser } = await expectFileChooser(pageA);
    await pageA.locator('body').focus();
    // Tab to the paperclip; the first stop past the sidebar is in the pane.
    let found = false;
    for (let i = 0; i < 40 && !found; i += 1) {
      await pageA.keyboard.press('Tab');
      found = await pageA.evaluate(() => document.activeElement?.id === 'attach');
    }
    assert.ok(found, 'the paperclip is reachable with Tab');
    assert.equal(await pageA.getAttribute('#attach', 'aria-label'), 'Attach files');
    await pageA.keyboard.press('Enter');
    await (await chooser).setFiles([{ name: 'keys.txt', mimeType: 'text/plain', buffer: Buffer.from('typed, not clicked\n') }]);
    await pageA.locator('#chips .chip', { hasText: 'keys.txt' }).waitFor();
    assert.equal(await pageA.evaluate(() => document.activeElement?.id), 'message-input');
    await pageA.keyboard.type('sent from the keyboard');
    await pageA.keyboard.press('Enter');
    await card(pageA, 'keys.txt').waitFor();
    await messageLocator(pageA, 'sent from the keyboard').waitFor();
    // The upload status was announced to screen readers.
    await pageA.locator('#announce-status', { hasText: 'Sent.' }).waitFor({ state: 'attached' });
  });

  it('fits a 390 px wide phone: drawer for channels, no sideways scrolling', async () => {
    const { alice, channel } = await pair({ pages: false });
    await alice.call('POST', `/api/channels/${channel.id}/messages`, { content: 'hello from a phone-sized screen' });
    const form = new FormData();
    form.append('content', 'a picture and a sheet');
    form.append('file', new Blob([png(640, 360)], { type: 'image/png' }), 'landscape.png');
    form.append('file', new Blob([pdf()], { type: 'application/pdf' }), 'a-rather-long-file-name-for-a-small-screen.pdf');
    const res = await fetch(`${server.url}/api/channels/${channel.id}/messages`, {
      method: 'POST', headers: { Authorization: `Bearer ${alice.token}` }, body: form,
    });
    assert.equal(res.status, 201);

    const p = await page({ viewport: { width: 390, height: 844 } });
    await screenshot(p, 'phone-login');
    await logIn(p, alice);
    await messageLocator(p, 'hello from a phone-sized screen').waitFor();
    await expectImageLoaded(card(p, 'landscape.png').locator('img'));
    await screenshot(p, 'phone-channel');
    const width = await p.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `page is ${width} px wide`);

    await p.locator('#sidebar-toggle').focus();
    await p.keyboard.press('Enter');
    await p.locator('#sidebar-toggle[aria-expanded="true"]').waitFor();
    await p.locator('#my-channels .channel-button').first().waitFor({ state: 'visible' });
    await p.waitForFunction(() => getComputedStyle(document.getElementById('sidebar')).transform === 'none');
    assert.equal(await p.evaluate(() => document.activeElement?.closest('#sidebar') !== null), true,
      'opening the drawer moves the focus into it');
    await screenshot(p, 'phone-channels-drawer');
    await p.keyboard.press('Escape');
    await p.locator('#sidebar-toggle[aria-expanded="false"]').waitFor();
  });
});
