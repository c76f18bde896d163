// The Node client against the XTMP server role (muxframe.server: broker,
// router, registry) in a Python subprocess on 127.0.0.1 (random port,
// always stopped): requests to a subject served by another client through
// a queue group, NO_RESPONDERS and BAD_SUBJECT by name, wildcard
// subscriptions, and the server's heartbeat probes answered by the client
// (the server's registry then knows the session's round trip).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import { ErrorCode, Identity, PeerError, connect } from '../src/index.js';
import { hex } from '../src/bytes.js';
import { startServer } from './pyserver.js';

const alice = Identity.generate();
const bob = Identity.generate();
let server;

before(async () => {
  server = await startServer(['--authorize', `alice=${hex(alice.public.encode())}`,
    '--authorize', `bob=${hex(bob.public.encode())}`, '--heartbeat-interval', '0.2'],
  { script: 'xtmp_server_role.py' });
});

after(async () => {
  if (server) await server.stop();
});

function client(identity) {
  return connect(server.url, { WebSocket, serverKey: server.serverKey, identity, settings: { heartbeatInterval: 30 } });
}

async function eventually(condition, what, { tries = 200, pause = 50 } = {}) {
  for (let i = 0; i < tries; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
  assert.fail(`timed out waiting for ${what}`);
}

test('request/reply between two browsers-to-be, through the server', async () => {
  const a = await client(alice);
  const b = await client(bob);
  try {
    const served = [];
    await b.subscribe('svc.*', (message, c) => {
      served.push(message.streamName);
      if (message.isRequest) c.respond(message, `quote for ${message.text}`);
    }, { group: 'workers' });
    const reply = await a.request(0x30, 'ACME', { subject: 'svc.quote', timeout: 10 });
    assert.equal(reply.text, 'quote for ACME');
    assert.deepEqual(served, ['svc.quote']);
    // Nobody serves this subject: NO_RESPONDERS, by name.
    await assert.rejects(a.request(0x30, 'x', { subject: 'nobody.here', timeout: 10 }),
      (e) => e instanceof PeerError && e.code === ErrorCode.NO_RESPONDERS && e.codeName === 'NO_RESPONDERS');
    // Not a subject: BAD_SUBJECT.
    await assert.rejects(a.subscribe('a..b', () => {}),
      (e) => e instanceof PeerError && e.codeName === 'BAD_SUBJECT');
    // A wildcard subscription gets what another client publishes.
    const seen = [];
    await a.subscribe('feed.>', (message) => seen.push([message.streamName, message.text]));
    b.publish('feed.x.y', 'tick');
    await eventually(() => seen.length === 1, 'the published message');
    assert.deepEqual(seen, [['feed.x.y', 'tick']]);
  } finally {
    await a.close();
    await b.close();
  }
});

test('the server probes idle sessions; the client answers, and the registry has its round trip', async () => {
  const a = await client(alice);
  try {
    await eventually(async () => {
      const listing = JSON.parse((await a.request(0x33, '')).text);
      const mine = listing.find((s) => s.name === 'alice');
      return mine && typeof mine.rtt === 'number';
      // Quiet in between, so that the server has an idle interval to probe
      // (its session timers run on a coarse clock, one slot a second).
    }, 'the server to measure the round trip', { tries: 20, pause: 1500 });
    assert.ok(a.counters.heartbeatsAnswered >= 1, `answered ${a.counters.heartbeatsAnswered}`);
    assert.equal(a.counters.heartbeatsSent, 0);
    assert.equal(a.isOpen, true);
  } finally {
    await a.close();
  }
});
