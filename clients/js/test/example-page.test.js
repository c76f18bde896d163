// examples/web_live.html in headless Chromium, served by
// examples/web_live.py's own web endpoint: read over the DevTools protocol,
// the page shows an open session, its cipher, the pinned server key, live
// messages of the subject and a measured RTT.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';

import { CHROMIUM, NO_CHROMIUM, launch, pageSession } from './chromium.js';
import { HERE, REPO } from './helpers.js';
import { PYTHON } from './pyserver.js';

const BUNDLE = join(HERE, '..', 'dist', 'xtmp.js');
const skip = !CHROMIUM ? NO_CHROMIUM
  : !existsSync(BUNDLE) ? 'dist/xtmp.js is not built: run `npm test` (or `node build.mjs`) first' : false;

function startExample() {
  const child = spawn(PYTHON, [join(REPO, 'examples', 'web_live.py'), '--port', '0', '--interval', '0.2'], {
    cwd: REPO, env: { ...process.env, PYTHONPATH: REPO }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the example did not start:\n${stderr}`)), 30000);
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /serving (http:\/\/127\.0\.0\.1:\d+\/) .*server key ([0-9a-f]{64})/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], fingerprint: m[2] });
      }
    });
    exited.then((code) => reject(new Error(`the example exited (${code}):\n${stderr}`)));
  });
  ready.catch(() => {});
  return {
    ready,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(killer);
      }
    },
  };
}

test('the live example page in Chromium', { skip, timeout: 120000 }, async () => {
  const example = startExample();
  let browser = null;
  let page = null;
  try {
    const { url, fingerprint } = await example.ready;
    browser = await launch(url);
    page = await pageSession(browser);
    const read = () => page.evaluate(`JSON.stringify(Object.fromEntries(
      ['state', 'cipher', 'fingerprint', 'rtt', 'count', 'handshake'].map((id) =>
        [id, document.getElementById(id) && document.getElementById(id).textContent]).concat(
      [['messages', [...document.querySelectorAll('#messages li')].map((li) => li.textContent)]])))`);
    let shown = null;
    for (let i = 0; i < 300; i++) {
      const text = await read();
      shown = text ? JSON.parse(text) : null;
      if (shown && Number(shown.count) >= 3 && /ms/.test(shown.rtt)) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(shown, 'the page never rendered');
    assert.equal(shown.state, 'open', JSON.stringify(shown));
    assert.equal(shown.cipher, 'AES-256-GCM');
    assert.equal(shown.fingerprint, fingerprint);
    assert.ok(Number(shown.count) >= 3, JSON.stringify(shown));
    assert.match(shown.messages[0], /tick \d+ at \d+\.\d+/);
    assert.match(shown.rtt, /^\d+\.\d ms \(smoothed \d+\.\d ms\)$/);
    if (process.env.XTMP_SCREENSHOT) {
      const shot = await page.call('Page.captureScreenshot', { format: 'png' });
      writeFileSync(process.env.XTMP_SCREENSHOT, Buffer.from(shot.data, 'base64'));
    }
  } finally {
    if (page) page.close();
    if (browser) await browser.stop();
    await example.stop();
  }
});
