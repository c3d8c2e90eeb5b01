// Debian's Chromium driven by playwright-core (no downloaded browser), pages that record
// console errors, and the steps most tests share.

import { mkdirSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const SCREENSHOTS = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'artifacts', 'screenshots');

/** `extraArgs`: more Chromium flags (a fake microphone, for the voice note test). */
export function launchBrowser({ extraArgs = [] } = {}) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      ...extraArgs,
    ],
  });
}

// What the browser logs while /api/ws does not exist yet: the handshake's 404.
const WS_MISSING = /WebSocket connection to .*\/api\/ws.* failed/;

/**
 * A new context and page. `page.errors` collects console errors and uncaught exceptions;
 * `page.allowErrors(regex)` accepts the ones a test provokes on purpose.
 */
export async function openPage(browser, server, { viewport = { width: 1280, height: 800 }, wsMissing = false } = {}) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  watchErrors(page, { wsMissing });
  await page.goto(server.url);
  return page;
}

/** Another tab in the same context (same storage), watched like the first. */
export async function openTab(page, server, { wsMissing = false } = {}) {
  const tab = await page.context().newPage();
  watchErrors(tab, { wsMissing });
  await tab.goto(server.url);
  return tab;
}

function watchErrors(page, { wsMissing }) {
  page.errors = [];
  const allowed = wsMissing ? [WS_MISSING] : [];
  page.allowErrors = (pattern) => allowed.push(pattern);
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (!allowed.some((p) => p.test(text))) page.errors.push(`console: ${text}`);
  });
  page.on('pageerror', (err) => page.errors.push(`exception: ${err.message}`));
  page.on('dialog', (dialog) => {
    page.errors.push(`dialog: ${dialog.type()} ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
}

/** Logs in through the form. */
export async function logIn(page, api) {
  await page.locator('#auth-view').waitFor();
  await page.fill('#auth-username', api.user.username);
  await page.fill('#auth-password', api.password);
  await page.click('#auth-submit');
  await page.locator('#app-view').waitFor();
}

/** Opens a channel from the sidebar and waits for its history. */
export async function openChannel(page, name) {
  await page.locator('#my-channels .channel-button', { hasText: name }).click();
  await page.locator('#channel-title', { hasText: `#${name}` }).waitFor();
  await page.locator('#history-start:not([hidden]), #load-older:not([hidden])').first().waitFor();
}

export function messageLocator(page, text) {
  return page.locator('#message-list .message', { hasText: text });
}

export function card(page, fileName) {
  return page.locator('.file-card', { has: page.locator('.file-name', { hasText: fileName }) });
}

/**
 * Waits until the card shows the server's thumbnail (its `file_updated` arrived and the
 * thumbnail loaded). Deleting an image before that races the thumbnail's own request: the
 * browser logs that request's 404 (the link dies with the file), which is right, but is an
 * error in the page's log.
 */
export async function thumbnailShown(page, fileName) {
  await card(page, fileName).locator('img.thumb.loaded').waitFor();
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

/** Throttles the page's uploads (bytes per second) through the DevTools protocol. */
export async function throttleUploads(page, bytesPerSecond) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: bytesPerSecond,
  });
  return async () => {
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
    });
    await cdp.detach();
  };
}
