// The session engine with time passed in (no sockets): the receive checks
// of docs/xtmp.md 8.2 and 10, every byte of a message tampered with,
// fragments, acks, key updates, heartbeats and timeouts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deflateSync } from 'node:zlib';

import {
  Cipher, ClientSession, Decoder, ErrorCode, Flags, MessageType, TrafficKey, encodeBody, encodeName, encodeReason,
} from '../src/index.js';
import { u32, u64 } from '../src/bytes.js';
import { VECTORS, h, openSession, vectorHandshake } from './helpers.js';

const SID = 0x0123456789abcdefn;
const T = VECTORS.trafficKeys;

function serverKey() {
  return new TrafficKey(Cipher.AES_256_GCM, h(T.s2cKey), h(T.s2cIv));
}

function clientKey() {
  return new TrafficKey(Cipher.AES_256_GCM, h(T.c2sKey), h(T.c2sIv));
}

function frame(key, type, flags = 0, parts = {}, data = new Uint8Array(0)) {
  return key.seal(type, flags | Flags.ENCRYPTED, SID, encodeBody(flags, { data, ...parts }));
}

function open(settings) {
  return openSession(settings).session;
}

// What the client sent, decrypted with the c2s key.
function sentMessages(session, key) {
  const out = [];
  for (const f of new Decoder().feed(joinAll(session.dataToSend()))) {
    out.push({ type: f.type, flags: f.flags, body: key.open(f) });
  }
  return out;
}

function joinAll(frames) {
  return Uint8Array.from(frames.flatMap((f) => [...f]));
}

function closedCode(events) {
  const closed = events.find((e) => e.type === 'closed');
  return closed && closed.error ? closed.error.code : null;
}

test('application messages, streams and ordering', () => {
  const session = open();
  const key = serverKey();
  const events = session.receiveData(joinAll([
    frame(key, 0x41, Flags.STREAM_DATA, { streamName: 'prices' }, Uint8Array.of(1)),
    frame(key, 0x20, 0, {}, Uint8Array.of(2)),
  ]), 1);
  assert.deepEqual(events.map((e) => e.type), ['stream', 'message']);
  assert.equal(events[0].message.streamName, 'prices');
  assert.equal(events[1].message.requestId, 1n); // generation 0, sequence 1
  assert.equal(session.counters.messagesReceived, 2);
});

test('every byte of a message tampered with is refused, never delivered', () => {
  const good = frame(serverKey(), 0x20, 0, {}, new TextEncoder().encode('secret payload'));
  const seen = new Set();
  for (let i = 0; i < good.length; i++) {
    const session = open();
    const bad = good.slice();
    bad[i] ^= 0x01;
    const events = session.receiveData(bad, 1);
    assert.ok(!events.some((e) => e.type === 'message'), `byte ${i} delivered`);
    const code = closedCode(events);
    if (code === null) {
      // A length that now asks for more bytes: nothing yet, nothing given.
      assert.equal(events.length, 0, `byte ${i}`);
      continue;
    }
    seen.add(code);
    if (i < 4) assert.equal(code, ErrorCode.BAD_MAGIC);
    else if (i === 4) assert.equal(code, ErrorCode.BAD_VERSION);
    else if (i >= 8 && i < 16) assert.equal(code, ErrorCode.PROTOCOL_ERROR);
    else if (i >= 16 && i < 24) assert.equal(code, ErrorCode.BAD_SEQUENCE);
    else if (i >= 32 + 4 && i < 32 + 24) assert.equal(code, ErrorCode.WRONG_KEY, `byte ${i}`);
    else if (i >= 32 + 24 && i < 32 + 36) assert.equal(code, ErrorCode.BAD_NONCE, `byte ${i}`);
    else if (i >= 32 + 48) assert.equal(code, ErrorCode.DECRYPT_FAILED, `byte ${i}`);
    // A fatal error goes back as Error then Disconnect, encrypted.
    const back = new Decoder().feed(joinAll(session.dataToSend()));
    assert.deepEqual(back.map((f) => f.type), [MessageType.Error, MessageType.Disconnect]);
  }
  for (const code of [ErrorCode.BAD_MAGIC, ErrorCode.BAD_VERSION, ErrorCode.PROTOCOL_ERROR,
    ErrorCode.BAD_SEQUENCE, ErrorCode.WRONG_KEY, ErrorCode.BAD_NONCE, ErrorCode.DECRYPT_FAILED]) {
    assert.ok(seen.has(code), `no byte gave ${code}`);
  }
});

test('replay, gap and unencrypted messages', () => {
  const key = serverKey();
  const first = frame(key, 0x20);
  const second = frame(key, 0x20);
  let session = open();
  session.receiveData(first, 1);
  assert.equal(closedCode(session.receiveData(first, 1)), ErrorCode.BAD_SEQUENCE);
  session = open();
  assert.equal(closedCode(session.receiveData(second, 1)), ErrorCode.BAD_SEQUENCE);
  session = open();
  const plain = new Uint8Array(32);
  plain.set([0x58, 0x54, 0x4d, 0x50, 1, 0x20]);
  plain.set(u64(SID), 8);
  assert.equal(closedCode(session.receiveData(plain, 1)), ErrorCode.DOWNGRADE);
});

test('intact messages before a fault in the same read are delivered first', () => {
  const session = open();
  const key = serverKey();
  const good = frame(key, 0x20, 0, {}, Uint8Array.of(7));
  const bad = frame(key, 0x20, 0, {}, Uint8Array.of(8));
  bad[bad.length - 1] ^= 1;
  const events = session.receiveData(joinAll([good, bad]), 1);
  assert.deepEqual(events.map((e) => e.type), ['message', 'closed']);
  assert.equal(closedCode(events), ErrorCode.DECRYPT_FAILED);
});

test('server KeyUpdate: next epoch accepted, generation counted; wrong epoch refused', () => {
  const session = open();
  let key = serverKey();
  const update = frame(key, MessageType.KeyUpdate, 0, {}, u32(1));
  key = key.updated();
  const after = frame(key, 0x20, 0, {}, Uint8Array.of(1));
  const events = session.receiveData(joinAll([update, after]), 1);
  assert.equal(events[0].message.requestId, (1n << 32n) | 0n);
  const other = open();
  assert.equal(closedCode(other.receiveData(frame(serverKey(), MessageType.KeyUpdate, 0, {}, u32(2)), 1)),
    ErrorCode.PROTOCOL_ERROR);
});

test('REQUIRES_ACK from the server: delivered once, acknowledged cumulatively', () => {
  const session = open();
  const key = serverKey();
  const msg = (id) => frame(key, 0x20, Flags.REQUIRES_ACK, { deliveryId: id }, Uint8Array.of(Number(id)));
  const events = session.receiveData(joinAll([msg(1n), msg(2n), msg(2n)]), 1);
  assert.equal(events.filter((e) => e.type === 'message').length, 2);
  assert.equal(session.counters.duplicatesDropped, 1);
  const sent = sentMessages(session, clientKey());
  assert.deepEqual(sent.map((m) => m.type), [MessageType.Ack]);
  assert.deepEqual([...sent[0].body], [...u64(2n)]);
});

test('an Ack for a delivery id never sent is PROTOCOL_ERROR', () => {
  const session = open();
  assert.equal(closedCode(session.receiveData(frame(serverKey(), MessageType.Ack, 0, {}, u64(1n)), 1)),
    ErrorCode.PROTOCOL_ERROR);
});

test('fragments: reassembled; an interleaved message or a foreign fragment is PROTOCOL_ERROR', () => {
  const key = serverKey();
  const F = Flags.FRAGMENTED;
  let session = open();
  const events = session.receiveData(joinAll([
    key.seal(0x20, F | Flags.ENCRYPTED, SID, Uint8Array.of(1, 2)),
    frame(key, MessageType.Heartbeat, 0, {}, u64(5n)), // control may come between
    key.seal(0x20, F | Flags.LAST_FRAGMENT | Flags.ENCRYPTED, SID, Uint8Array.of(3)),
  ]), 1);
  assert.deepEqual(events.map((e) => e.type), ['message']);
  assert.deepEqual([...events[0].message.data], [1, 2, 3]);
  assert.equal(events[0].message.requestId, 0n); // the first fragment's

  const k2 = serverKey();
  session = open();
  assert.equal(closedCode(session.receiveData(joinAll([
    k2.seal(0x20, F | Flags.ENCRYPTED, SID, Uint8Array.of(1)),
    frame(k2, 0x21, 0, {}, Uint8Array.of(2))]), 1)), ErrorCode.PROTOCOL_ERROR);

  const k3 = serverKey();
  session = open({ maxMessageSize: 4 });
  assert.equal(closedCode(session.receiveData(joinAll([
    k3.seal(0x20, F | Flags.ENCRYPTED, SID, Uint8Array.of(1, 2, 3)),
    k3.seal(0x20, F | Flags.ENCRYPTED, SID, Uint8Array.of(4, 5))]), 1)), ErrorCode.MESSAGE_TOO_LARGE);
});

test('our large sends are fragmented; the request id is the first fragment\'s', () => {
  const session = open({ fragmentSize: 1000 });
  const request = session.request(0x30, new Uint8Array(2500), {}, 1);
  const sent = new Decoder().feed(joinAll(session.dataToSend()));
  assert.deepEqual(sent.map((f) => f.flags & (Flags.FRAGMENTED | Flags.LAST_FRAGMENT)),
    [Flags.FRAGMENTED, Flags.FRAGMENTED, Flags.FRAGMENTED | Flags.LAST_FRAGMENT]);
  assert.equal(request.id, 0n);
});

test('compressed messages: inflated, bounded by maxMessageSize', () => {
  let session = open();
  const data = deflateSync(Buffer.alloc(10000, 0x61));
  let events = session.receiveData(frame(serverKey(), 0x20, Flags.COMPRESSED, {}, data), 1);
  assert.equal(events[0].message.data.length, 10000);
  session = open({ maxMessageSize: 5000 });
  events = session.receiveData(frame(serverKey(), 0x20, Flags.COMPRESSED, {}, data), 1);
  assert.equal(closedCode(events), ErrorCode.MESSAGE_TOO_LARGE);
});

test('responses: matched by request id; Error answers fail the request; unmatched are counted', () => {
  const session = open();
  const key = serverKey();
  const request = session.request(0x30, Uint8Array.of(1), {}, 1);
  const failing = session.request(0x30, Uint8Array.of(2), {}, 1);
  session.dataToSend();
  const events = session.receiveData(joinAll([
    frame(key, 0x30, Flags.RESPONSE, { requestId: request.id }, Uint8Array.of(9)),
    frame(key, MessageType.Error, Flags.RESPONSE, { requestId: failing.id }, encodeReason(17, 'boom')),
    frame(key, 0x30, Flags.RESPONSE, { requestId: 99n }, Uint8Array.of(0)),
  ]), 1.5);
  assert.deepEqual(events.map((e) => e.type), ['response', 'requestFailed']);
  assert.equal(events[0].request, request);
  assert.equal(events[0].rtt, 0.5);
  assert.equal(events[1].error.code, ErrorCode.APPLICATION_ERROR);
  assert.equal(events[1].error.reason, 'boom');
  assert.equal(session.counters.unmatchedResponses, 1);
});

test('Disconnect and Error from the server', () => {
  let session = open();
  let events = session.receiveData(frame(serverKey(), MessageType.Disconnect, 0, {}, encodeReason(18, 'bye')), 1);
  assert.deepEqual(events.map((e) => e.type), ['disconnect', 'closed']);
  assert.equal(events[1].error, null);
  session = open();
  const pending = session.request(0x30, Uint8Array.of(1), {}, 1);
  const key = serverKey();
  events = session.receiveData(joinAll([
    frame(key, MessageType.Error, 0, {}, encodeReason(13, 'go away')),
    frame(key, MessageType.Disconnect, 0, {}, encodeReason(13, 'go away'))]), 1);
  assert.deepEqual(events.map((e) => e.type), ['error', 'disconnect', 'requestFailed', 'closed']);
  assert.equal(events[2].request, pending);
  assert.equal(events[3].error.code, ErrorCode.UNAUTHORIZED);
  assert.equal(session.state, 'closed');
});

test('a Subscribe request from the server is refused; bad payloads are PROTOCOL_ERROR', () => {
  const session = open();
  const events = session.receiveData(frame(serverKey(), MessageType.Subscribe, 0, {}, encodeName('mine')), 1);
  assert.deepEqual(events, []);
  const [answer] = sentMessages(session, clientKey());
  assert.equal(answer.type, MessageType.Error);
  assert.equal(answer.flags & Flags.RESPONSE, Flags.RESPONSE);
  for (const [type, data] of [[MessageType.Heartbeat, Uint8Array.of(1)], [MessageType.Ack, u32(1)],
    [MessageType.KeyUpdate, u64(1n)], [MessageType.Disconnect, Uint8Array.of(0)],
    [MessageType.Error, Uint8Array.of(0, 1, 0xff)]]) {
    const s = open();
    assert.equal(closedCode(s.receiveData(frame(serverKey(), type, 0, {}, data), 1)), ErrorCode.PROTOCOL_ERROR,
      `type ${type}`);
  }
});

test('heartbeats when idle; a silent server times out; requests time out', () => {
  const session = open({ heartbeatInterval: 10, requestTimeout: 3 });
  const request = session.request(0x30, Uint8Array.of(1), {}, 0);
  session.dataToSend();
  assert.equal(session.nextDeadline(0), 3);
  const timedOut = session.tick(3);
  assert.deepEqual(timedOut.map((e) => e.type), ['requestFailed']);
  assert.equal(timedOut[0].request, request);
  assert.equal(timedOut[0].error.name, 'RequestTimeout');
  assert.equal(session.nextDeadline(3), 10);
  assert.deepEqual(session.tick(10), []);
  const [beat] = sentMessages(session, (() => { const k = clientKey(); k.sequence = 1; return k; })());
  assert.equal(beat.type, MessageType.Heartbeat);
  assert.equal(beat.body.length, 8);
  assert.equal(session.counters.heartbeatsSent, 1);
  // Nothing from the server for two intervals.
  const events = session.tick(20);
  assert.equal(closedCode(events), ErrorCode.TIMEOUT);
});

test('handshake timeout and idle timeout', () => {
  const fresh = new ClientSession(vectorHandshake(), { handshakeTimeout: 5 });
  fresh.initiate(0);
  fresh.dataToSend();
  assert.equal(fresh.nextDeadline(0), 5);
  assert.deepEqual(fresh.tick(4), []);
  assert.equal(closedCode(fresh.tick(5)), ErrorCode.TIMEOUT);
  // Before keys, the Error goes back in plaintext.
  const back = new Decoder().feed(joinAll(fresh.dataToSend()));
  assert.equal(back[0].type, MessageType.Error);
  assert.equal(back[0].flags & Flags.ENCRYPTED, 0);
  const idle = open({ sessionTimeout: 50, heartbeatInterval: 1000 });
  assert.equal(closedCode(idle.tick(50)), ErrorCode.IDLE_TIMEOUT);
});

test('KeyUpdate by count and by time', () => {
  const session = open({ keyUpdateMessages: 2, keyUpdateInterval: 100 });
  for (let i = 0; i < 5; i++) session.send(0x20, Uint8Array.of(i), {}, 1);
  const types = new Decoder().feed(joinAll(session.dataToSend())).map((f) => f.type);
  assert.deepEqual(types, [0x20, 0x20, MessageType.KeyUpdate, 0x20, 0x20, MessageType.KeyUpdate, 0x20]);
  assert.equal(session.counters.keyUpdates, 2);
  session.tick(101);
  const later = new Decoder().feed(joinAll(session.dataToSend())).map((f) => f.type);
  assert.ok(later.includes(MessageType.KeyUpdate));
});

test('unknown flag bits and LAST_FRAGMENT alone are BAD_FLAGS', () => {
  for (const flags of [0x0200, Flags.LAST_FRAGMENT]) {
    const session = open();
    const f = frame(serverKey(), 0x20);
    f[6] = (flags | Flags.ENCRYPTED) >> 8;
    f[7] = (flags | Flags.ENCRYPTED) & 0xff;
    assert.equal(closedCode(session.receiveData(f, 1)), ErrorCode.BAD_FLAGS);
  }
});

test('a payload length over maxPayload is refused before it is buffered', () => {
  const session = open({ maxPayload: 1500 }); // the ServerHello is 1198
  assert.equal(session.state, 'open');
  const f = frame(serverKey(), 0x20, 0, {}, new Uint8Array(1501));
  assert.equal(closedCode(session.receiveData(f.subarray(0, 40), 1)), ErrorCode.MESSAGE_TOO_LARGE);
});
