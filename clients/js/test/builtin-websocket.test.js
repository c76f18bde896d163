// Node's own WebSocket (behind --experimental-websocket on Node 20, global
// from Node 22): the client uses it when it is there.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

import { HERE } from './helpers.js';
import { startServer } from './pyserver.js';

const FLAG = typeof globalThis.WebSocket === 'function' ? [] : ['--experimental-websocket'];
const probe = spawnSync(process.execPath, [...FLAG, '-e', 'process.exit(typeof WebSocket === "function" ? 0 : 1)']);
const skip = probe.status === 0 ? false : `this Node (${process.version}) has no built-in WebSocket`;

test('the client over Node\'s built-in WebSocket', { skip, timeout: 60000 }, async () => {
  const server = await startServer(['--token', 'node-builtin']);
  try {
    const script = `
      import { connect } from ${JSON.stringify(join(HERE, '..', 'src', 'index.js'))};
      const client = await connect(process.argv[1], { serverKey: process.argv[2], token: 'node-builtin' });
      const reply = await client.request(0x30, 'built-in');
      console.log(JSON.stringify({ reply: reply.text, builtin: typeof WebSocket, cipher: client.cipherName }));
      await client.close();
    `;
    const run = spawnSync(process.execPath, [...FLAG, '--no-warnings', '--input-type=module', '-e', script,
      server.url, server.serverKey], { encoding: 'utf8', timeout: 30000 });
    assert.equal(run.status, 0, run.stderr);
    const result = JSON.parse(run.stdout.trim().split('\n').pop());
    assert.deepEqual(result, { reply: 'pong:built-in', builtin: 'function', cipher: 'AES-256-GCM' });
  } finally {
    await server.stop();
  }
});
