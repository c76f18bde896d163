// The Node client against a real muxframe server (a Python subprocess on
// 127.0.0.1, random ports, always stopped), over WebSocket (`ws`).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import {
  Cipher, ErrorCode, Identity, PeerDisconnected, PeerError, RequestTimeout, XTMPError, connect,
} from '../src/index.js';
import { hex } from '../src/bytes.js';
import { startServer } from './pyserver.js';

const identity = Identity.generate();
let server;

before(async () => {
  server = await startServer(['--token', 'letmein', '--authorize', hex(identity.public.encode()),
    '--key-update-messages', '5']);
});

after(async () => {
  if (server) await server.stop();
});

function options(extra = {}) {
  return { WebSocket, serverKey: server.serverKey, identity, settings: { keyUpdateMessages: 5 }, ...extra };
}

test('identity: handshake, request, subscribe to a stream published by a Python client', async () => {
  const client = await connect(server.url, options());
  assert.equal(client.cipherName, 'AES-256-GCM');
  assert.equal(client.peerIdentity.fingerprint, server.fingerprint);
  assert.ok(client.rtt > 0);
  const reply = await client.request(0x30, 'from node', { timeout: 10 });
  assert.equal(reply.text, 'pong:from node');
  const seen = [];
  let all;
  const three = new Promise((resolve) => { all = resolve; });
  await client.subscribe('prices', (message) => {
    seen.push(message.text);
    if (seen.length === 3) all();
  });
  await three;
  assert.equal(seen.length, 3);
  assert.match(seen[0], /^price \d+$/);
  // Many requests: both sides rotate keys every 5 messages.
  const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => client.request(0x30, `n${i}`)));
  assert.deepEqual(replies.map((r) => r.text), Array.from({ length: 30 }, (_, i) => `pong:n${i}`));
  assert.ok(client.counters.keyUpdates >= 5, `keyUpdates ${client.counters.keyUpdates}`);
  const why = await client.close();
  assert.equal(why, null);
  assert.equal(client.isOpen, false);
  // The server read our Disconnect (GOING_AWAY): a clean close.
  const ended = await server.waitFor((e) => e.event === 'sessionClosed' && e.sessionId === client.sessionId.toString(16),
    'the server to see the close');
  assert.equal(ended.reason, 'ConnectionDone');
});

test('bearer token and ChaCha20-Poly1305', async () => {
  const client = await connect(server.url, options({
    identity: undefined, token: 'letmein', ciphers: [Cipher.CHACHA20_POLY1305, Cipher.AES_256_GCM],
    serverKey: undefined, serverFingerprint: server.fingerprint,
  }));
  assert.equal(client.cipherName, 'ChaCha20-Poly1305');
  const reply = await client.request(0x30, 'chacha');
  assert.equal(reply.text, 'pong:chacha');
  await client.close();
});

test('a refused token: the server sends Error/Disconnect UNAUTHORIZED', async () => {
  const client = await connect(server.url, options({ identity: undefined, token: 'wrong' }));
  const why = await client.closed;
  assert.ok(why instanceof PeerDisconnected, String(why));
  assert.equal(why.code, ErrorCode.UNAUTHORIZED);
  await assert.rejects(client.request(0x30, 'x'), XTMPError);
});

test('a server key that is not the pinned one is refused', async () => {
  await assert.rejects(connect(server.url, options({ serverKey: Identity.generate().public })),
    (e) => e.code === ErrorCode.UNAUTHORIZED);
});

test('large messages are fragmented and reassembled both ways', async () => {
  const client = await connect(server.url, options());
  const big = new Uint8Array(300 * 1024).map((_, i) => i % 251);
  const reply = await client.request(0x30, big, { timeout: 20 });
  assert.equal(reply.data.length, big.length + 5);
  assert.deepEqual(reply.data.subarray(5), big);
  await client.close();
});

test('REQUIRES_ACK: the server acknowledges; compressed send', async () => {
  const client = await connect(server.url, options());
  const acked = await client.send(0x10, new Uint8Array(5000), { requireAck: true, compress: true });
  assert.equal(acked, 1n);
  const recorded = await server.waitFor((e) => e.event === 'recorded' && e.size === 5000, 'the record');
  assert.equal(recorded.deliveryId, 1);
  await client.close();
});

test('an unanswered request times out; an unknown type is answered UNKNOWN_TYPE', async () => {
  const client = await connect(server.url, options());
  await assert.rejects(client.request(0x32, 'hello?', { timeout: 0.3 }), RequestTimeout);
  await assert.rejects(client.request(0x77, 'nobody'), (e) => e instanceof PeerError && e.code === ErrorCode.UNKNOWN_TYPE);
  assert.equal(client.isOpen, true);
  await client.close();
});

test('a tampered frame from the server is rejected: DECRYPT_FAILED, nothing delivered', async () => {
  const client = await connect(server.tamperUrl, options());
  const reply = client.request(0x31, 'tamper with this');
  await assert.rejects(reply, (e) => e.code === ErrorCode.DECRYPT_FAILED);
  const why = await client.closed;
  assert.equal(why.code, ErrorCode.DECRYPT_FAILED);
  assert.equal(client.counters.messagesReceived, 0);
  // Our Error and Disconnect reached the server before the socket closed.
  const seen = await server.waitFor((e) => e.event === 'sessionClosed' && e.sessionId === client.sessionId.toString(16),
    'the server to see the failure');
  assert.equal(seen.reason, 'PeerDisconnected');
  assert.equal(seen.code, ErrorCode.DECRYPT_FAILED);
});

test('heartbeats keep a quiet session alive', async () => {
  const quiet = await startServer(['--authorize', hex(identity.public.encode()), '--heartbeat-interval', '0.2']);
  try {
    const client = await connect(quiet.url, {
      WebSocket, serverKey: quiet.serverKey, identity, settings: { heartbeatInterval: 0.3 } });
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assert.equal(client.isOpen, true);
    assert.ok(client.counters.heartbeatsSent >= 2, `heartbeats ${client.counters.heartbeatsSent}`);
    const reply = await client.request(0x30, 'still here');
    assert.equal(reply.text, 'pong:still here');
    await client.close();
  } finally {
    await quiet.stop();
  }
});

test('ML-DSA-65 identities on both sides (hybrid signatures verified across implementations)', async () => {
  const hybrid = Identity.generate({ withMLDSA: true });
  const pq = await startServer(['--mldsa', '--authorize', hex(hybrid.public.encode())]);
  try {
    const client = await connect(pq.url, { WebSocket, serverKey: pq.serverKey, identity: hybrid });
    assert.ok(client.peerIdentity.mldsa, 'the server presented an ML-DSA-65 key');
    assert.equal(client.peerIdentity.fingerprint, pq.fingerprint);
    const reply = await client.request(0x30, 'post-quantum');
    assert.equal(reply.text, 'pong:post-quantum');
    await client.close();
  } finally {
    await pq.stop();
  }
});
