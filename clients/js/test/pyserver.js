// Start clients/js/test/xtmp_server.py (a real muxframe server) as a
// subprocess on 127.0.0.1 with random ports; always stopped by stop().

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { HERE, REPO } from './helpers.js';

export const PYTHON = process.env.PYTHON || 'python3';

export async function startServer(args = [], { timeout = 60000 } = {}) {
  const child = spawn(PYTHON, [join(HERE, 'xtmp_server.py'), ...args], {
    cwd: REPO,
    env: { ...process.env, PYTHONPATH: REPO + (process.env.PYTHONPATH ? ':' + process.env.PYTHONPATH : '') },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const server = { child, events: [], waiters: [], stderr: '' };
  child.stderr.on('data', (d) => { server.stderr = (server.stderr + d).slice(-20000); });
  const lines = createInterface({ input: child.stdout });
  lines.on('line', (line) => {
    let event;
    try {
      event = JSON.parse(line);
    } catch (e) {
      return;
    }
    server.events.push(event);
    for (const w of [...server.waiters]) w();
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  server.exited = exited;
  server.waitFor = (predicate, what, ms = 20000) => new Promise((resolve, reject) => {
    const check = () => {
      const found = server.events.find(predicate);
      if (found) {
        server.waiters.splice(server.waiters.indexOf(check), 1);
        clearTimeout(timer);
        resolve(found);
      }
    };
    const timer = setTimeout(() => {
      server.waiters.splice(server.waiters.indexOf(check), 1);
      reject(new Error(`timed out waiting for ${what}; events: ${JSON.stringify(server.events.slice(-8))}; server stderr:\n${server.stderr}`));
    }, ms);
    server.waiters.push(check);
    check();
  });
  server.stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.stdin.end();
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    }
  };
  try {
    const failed = exited.then(({ code }) => {
      throw new Error(`the server exited (${code}):\n${server.stderr}`);
    });
    failed.catch(() => {});
    const listening = await Promise.race([
      server.waitFor((e) => e.event === 'listening' || e.event === 'failed', 'the server to listen', timeout),
      failed]);
    if (listening.event === 'failed') throw new Error(listening.error);
    Object.assign(server, listening);
    server.url = `ws://127.0.0.1:${listening.port}/xtmp`;
    server.tamperUrl = `ws://127.0.0.1:${listening.tamperPort}/tamper`;
  } catch (e) {
    await server.stop();
    throw e;
  }
  return server;
}
