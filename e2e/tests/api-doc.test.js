// The readable API reference (static/api.html), rendered from GET /api/openapi.json.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer } from '../lib/server.js';
import { launchBrowser, openPage, screenshot } from '../lib/browser.js';

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

it('lists every operation of the OpenAPI document, under the page CSP, without errors', async () => {
  const page = await openPage(browser, server);
  await page.goto(`${server.url}/api.html`);
  const doc = await (await fetch(`${server.url}/api/openapi.json`)).json();
  const expected = Object.values(doc.paths).flatMap((item) => Object.keys(item)).length;
  await page.locator('section.op').nth(expected - 1).waitFor();
  assert.equal(await page.locator('section.op').count(), expected);
  const login = page.locator('section.op', { hasText: '/api/auth/login' });
  assert.match(await login.textContent(), /invalid_credentials/);
  assert.match(await login.textContent(), /Session/);
  // Operations behind a token say so; the health check does not.
  assert.match(await page.locator('section.op#get-api-me').textContent(), /\(token\)/);
  assert.doesNotMatch(await page.locator('section.op', { hasText: '/healthz' }).textContent(), /\(token\)/);
  await screenshot(page, 'api-reference');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
