// Headless Chromium (Debian's `chromium`, never a downloaded browser) for
// the browser tests: launched in its own process group with a fresh
// profile, driven over the DevTools protocol, ended by its group id.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import WebSocket from 'ws';

// CHROMIUM=/path chooses the browser (and nothing else is looked for).
const CANDIDATES = process.env.CHROMIUM ? [process.env.CHROMIUM]
  : ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
export const CHROMIUM = CANDIDATES.find((path) => existsSync(path));
export const NO_CHROMIUM = 'Chromium not found: install it with `apt-get install -y chromium` '
  + '(or set CHROMIUM=/path/to/chromium)';

function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (e) {
    return false;
  }
}

export async function launch(url) {
  const profile = mkdtempSync(join(tmpdir(), 'muxframe-chromium-'));
  const child = spawn(CHROMIUM, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-extensions', '--no-default-browser-check', `--user-data-dir=${profile}`,
    '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0', url,
  ], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  const browser = { child, stderr: '' };
  browser.devtools = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no DevTools address from Chromium:\n${browser.stderr}`)), 30000);
    child.stderr.on('data', (d) => {
      browser.stderr = (browser.stderr + d).slice(-8000);
      const m = /DevTools listening on (ws:\/\/[^\s]+)/.exec(browser.stderr);
      if (m) {
        clearTimeout(timer);
        resolve(new URL(m[1]).host);
      }
    });
    child.on('exit', (code) => reject(new Error(`Chromium exited (${code}):\n${browser.stderr}`)));
  });
  browser.devtools.catch(() => {});
  browser.stop = async () => {
    const signal = (name) => { try { process.kill(-child.pid, name); } catch (e) { /* gone */ } };
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((resolve) => child.on('exit', resolve));
      signal('SIGTERM');
      const killer = setTimeout(() => signal('SIGKILL'), 5000);
      await gone;
      clearTimeout(killer);
    }
    for (let i = 0; i < 50 && groupAlive(child.pid); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    signal('SIGKILL');
    rmSync(profile, { recursive: true, force: true });
  };
  return browser;
}

// A DevTools session on the first page target: call(method, params).
export async function pageSession(browser) {
  const host = await browser.devtools;
  let target;
  for (let i = 0; i < 100 && !target; i++) {
    const list = await (await fetch(`http://${host}/json/list`)).json();
    target = list.find((t) => t.type === 'page');
    if (!target) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (!target) throw new Error('Chromium shows no page');
  const socket = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject); });
  let id = 0;
  const waiting = new Map();
  socket.on('message', (data) => {
    const reply = JSON.parse(data);
    const w = waiting.get(reply.id);
    if (!w) return;
    waiting.delete(reply.id);
    if (reply.error) w.reject(new Error(reply.error.message));
    else w.resolve(reply.result);
  });
  return {
    call(method, params = {}) {
      id += 1;
      socket.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
    },
    async evaluate(expression) {
      const result = await this.call('Runtime.evaluate', { expression, returnByValue: true });
      return result.result.value;
    },
    close() { socket.close(); },
  };
}
