// A real browser: headless Chromium (Debian's `chromium`) loads a page
// served by muxframe's own web endpoint; the page's client completes the
// hybrid handshake over WebSocket, subscribes, receives a stream message
// published by a Python client, makes a request, and has a tampered frame
// refused; it POSTs what it saw, and this test asserts on that report.

import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { CHROMIUM, NO_CHROMIUM, launch } from './chromium.js';
import { HERE } from './helpers.js';
import { startServer } from './pyserver.js';

const BUNDLE = join(HERE, '..', 'dist', 'xtmp.js');

const skip = !CHROMIUM ? NO_CHROMIUM
  : !existsSync(BUNDLE) ? 'dist/xtmp.js is not built: run `npm test` (or `node build.mjs`) first' : false;

test('a page in headless Chromium talks XTMP to the Python server', { skip, timeout: 120000 }, async () => {
  const site = mkdtempSync(join(tmpdir(), 'muxframe-site-'));
  copyFileSync(join(HERE, 'browser', 'page.html'), join(site, 'index.html'));
  copyFileSync(BUNDLE, join(site, 'xtmp.js'));
  const server = await startServer(['--token', 'browser-token', '--static', site]);
  let browser = null;
  try {
    const query = new URLSearchParams({
      fingerprint: server.fingerprint, token: 'browser-token', tamper: server.tamperUrl });
    browser = await launch(`http://127.0.0.1:${server.port}/index.html?${query}`);
    const { report } = await server.waitFor((e) => e.event === 'report', 'the page\'s report', 90000)
      .catch((e) => { throw new Error(`${e.message}\nchromium stderr:\n${browser.stderr}`); });

    if (process.env.XTMP_SHOW_REPORT) console.log(JSON.stringify(report, null, 1));
    assert.equal(report.error, undefined, report.error);
    assert.equal(report.uncaught, undefined, report.uncaught);
    assert.ok(report.done);
    assert.match(report.userAgent, /Chrome/);
    // The hybrid handshake completed, the server key pinned by fingerprint.
    assert.equal(report.serverFingerprint, server.fingerprint);
    assert.equal(report.cipher, 'AES-256-GCM');
    assert.match(report.sessionId, /^[0-9a-f]+$/);
    // Three stream messages published by the Python client.
    const published = server.events.filter((e) => e.event === 'published').map((e) => e.payload);
    assert.deepEqual(report.prices.map((p) => p.text), published.slice(0, 3));
    assert.deepEqual(report.prices.map((p) => p.stream), ['prices', 'prices', 'prices']);
    // A request and its answer.
    assert.equal(report.reply, 'pong:hello from the browser');
    assert.ok(server.events.some((e) => e.event === 'request' && e.payload === 'hello from the browser'));
    assert.ok(report.rttMs > 0);
    assert.ok(report.closedCleanly);
    // The tampered answer was refused, never delivered.
    assert.equal(report.tamper.code, report.decryptFailedCode, JSON.stringify(report.tamper));
    assert.equal(report.tamper.codeName, 'DECRYPT_FAILED');
    assert.equal(report.tamperClosedCode, report.decryptFailedCode);
    assert.equal(report.tamperDelivered, 0);
  } finally {
    if (browser) await browser.stop();
    await server.stop();
    rmSync(site, { recursive: true, force: true });
  }
});
