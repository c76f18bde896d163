// docs/xtmp.md sections 7.4, 7.6, 7.7 and 10, checked on the client: the
// ServerHello checks in their order with their codes, what the client sends
// when it fails (and under which key), Ed25519 key strictness, code names.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  ClientSession, Decoder, ErrorCode, FIRST_APPLICATION_CODE, Flags, MessageType, PublicIdentity, TrafficKey,
  describeCode, encodePlain,
} from '../src/index.js';
import { concat, readU16, u64 } from '../src/bytes.js';
import { REPO, VECTORS, h, joined, vectorHandshake } from './helpers.js';

const V = VECTORS;
const SID = BigInt('0x' + V.inputs.sessionId);

function started(extra) {
  const session = new ClientSession(vectorHandshake(extra));
  session.initiate(0);
  session.dataToSend();
  return session;
}

// The vectors' ServerHello payload with `edit` applied, in a plaintext
// HandshakeAck with the given header fields.
function serverHello(edit = () => {}, header = {}) {
  const payload = h(V.serverHello).slice(32);
  const edited = edit(payload) || payload;
  const f = { type: MessageType.HandshakeAck, flags: 0, sessionId: SID, sequence: 0, ...header };
  return encodePlain(f.type, f.flags, f.sessionId, f.sequence, edited);
}

function closedCode(events) {
  const closed = events.find((e) => e.type === 'closed');
  return closed && closed.error ? closed.error.code : null;
}

test('ServerHello checks, in order, and their codes', () => {
  const offer = (p) => { p[76] ^= 1; };
  const flags = (p) => { p[3] = 2; };
  const zeroId = (p) => { p.set(u64(0n), 68); };
  const cases = [
    ['sequence 1', serverHello(undefined, { sequence: 1 }), ErrorCode.HANDSHAKE_FAILED],
    ['a header flag', serverHello(undefined, { flags: Flags.PRIORITY_HIGH }), ErrorCode.HANDSHAKE_FAILED],
    ['another type', serverHello(undefined, { type: 0x10 }), ErrorCode.HANDSHAKE_FAILED],
    ['truncated', serverHello((p) => p.subarray(0, p.length - 1)), ErrorCode.HANDSHAKE_FAILED],
    ['flags byte', serverHello(flags), ErrorCode.HANDSHAKE_FAILED],
    // Unknown flags are found before a tampered echo.
    ['flags byte and echo', serverHello((p) => { flags(p); offer(p); }), ErrorCode.HANDSHAKE_FAILED],
    ['echo', serverHello(offer), ErrorCode.DOWNGRADE],
    ['cipher not offered', serverHello((p) => { p[1] = 7; }), ErrorCode.DOWNGRADE],
    // A tampered echo is found before a bad session id.
    ['echo and session id 0', serverHello((p) => { offer(p); zeroId(p); }, { sessionId: 0n }), ErrorCode.DOWNGRADE],
    ['session id 0', serverHello(zeroId, { sessionId: 0n }), ErrorCode.HANDSHAKE_FAILED],
    ['header session id differs', serverHello(undefined, { sessionId: SID + 1n }), ErrorCode.HANDSHAKE_FAILED],
    ['ciphertext length of ML-KEM-1024', serverHello((p) => concat(p.subarray(0, 108), Uint8Array.of(0x06, 0x20),
      new Uint8Array(1568))), ErrorCode.HANDSHAKE_FAILED],
  ];
  for (const [what, wire, code] of cases) {
    const session = started();
    const events = session.receiveData(wire, 0);
    assert.equal(closedCode(events), code, what);
    // Not accepted: one plaintext Error, session id 0, sequence 0, no
    // Disconnect.
    const out = new Decoder().feed(joined(session.dataToSend()));
    assert.deepEqual(out.map((f) => [f.type, f.flags, f.sessionId, f.sequence]),
      [[MessageType.Error, 0, 0n, 0n]], what);
    assert.equal(readU16(out[0].payload, 0), code, what);
  }
  // An encrypted frame in place of the ServerHello.
  const session = started();
  const key = new TrafficKey(1, new Uint8Array(32), new Uint8Array(12));
  const sealed = key.seal(MessageType.HandshakeAck, Flags.ENCRYPTED, SID, h(V.serverHello).slice(32));
  assert.equal(closedCode(session.receiveData(sealed, 0)), ErrorCode.HANDSHAKE_FAILED);
});

test('a failure after ServerHello: Error then Disconnect under the hs c2s key, in place of ClientAuth', () => {
  for (const [what, act] of [
    ['pinned key refused', (s) => s.receiveData(h(V.serverAuth), 0)],
    ['handshake timeout', (s) => s.tick(10)],
  ]) {
    const session = new ClientSession(vectorHandshake(what === 'pinned key refused'
      ? { serverKey: null, verifyServer: () => false } : {}));
    session.initiate(0);
    session.dataToSend();
    assert.deepEqual(session.receiveData(h(V.serverHello), 0), []);
    const events = act(session);
    assert.equal(closedCode(events), what === 'handshake timeout' ? ErrorCode.TIMEOUT : ErrorCode.UNAUTHORIZED);
    const out = new Decoder().feed(joined(session.dataToSend()));
    assert.deepEqual(out.map((f) => [f.type, f.flags, f.sessionId, f.sequence]),
      [[MessageType.Error, Flags.ENCRYPTED, SID, 0n], [MessageType.Disconnect, Flags.ENCRYPTED, SID, 1n]], what);
    // The hs c2s key opens both (the key ClientAuth would have had).
    const hs = new TrafficKey(1, h(V.handshakeKeys.c2sKey), h(V.handshakeKeys.c2sIv));
    for (const f of out) hs.open(f);
  }
});

test('a plaintext Error in place of the ServerHello or ServerAuth is the server\'s refusal', () => {
  const refusal = encodePlain(MessageType.Error, 0, 0n, 0, concat(Uint8Array.of(0, ErrorCode.BUSY), new TextEncoder()
    .encode('busy')));
  const before = started();
  let events = before.receiveData(refusal, 0);
  assert.equal(events.at(-1).error.code, ErrorCode.BUSY);
  assert.equal(events.at(-1).error.codeName, 'BUSY');
  assert.deepEqual(before.dataToSend(), [], 'nothing answered');
  const after = started();
  after.receiveData(h(V.serverHello), 0);
  events = after.receiveData(refusal, 0);
  assert.equal(events.at(-1).error.code, ErrorCode.BUSY);
  assert.deepEqual(after.dataToSend(), []);
});

test('ServerAuth: flags other than ENCRYPTED are HANDSHAKE_FAILED', () => {
  const session = started();
  session.receiveData(h(V.serverHello), 0);
  const auth = h(V.serverAuth).slice();
  auth[7] |= Flags.PRIORITY_HIGH;
  assert.equal(closedCode(session.receiveData(auth, 0)), ErrorCode.HANDSHAKE_FAILED);
});

test('Ed25519 keys: non-canonical encodings and small-order points are refused', () => {
  const bad = [
    '01' + '00'.repeat(31), 'ec' + 'ff'.repeat(30) + '7f', '00'.repeat(32), '00'.repeat(31) + '80',
    '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
    'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
    'ee' + 'ff'.repeat(30) + '7f', 'ed' + 'ff'.repeat(30) + '7f', '01' + '00'.repeat(30) + '80',
  ];
  for (const key of bad) {
    assert.throws(() => PublicIdentity.decode(concat(Uint8Array.of(1), h(key))),
      (e) => e.code === ErrorCode.HANDSHAKE_FAILED && /Ed25519 public key/.test(e.message), key);
  }
  // Identity kinds other than 0x01 and 0x03.
  const good = h(V.serverIdentity);
  for (const kinds of [0x00, 0x02, 0x05, 0x81]) {
    const other = good.slice();
    other[0] = kinds;
    assert.throws(() => PublicIdentity.decode(other), (e) => e.code === ErrorCode.HANDSHAKE_FAILED, `kinds ${kinds}`);
  }
  assert.equal(PublicIdentity.decode(good)[0].fingerprint.length, 64);
});

test('error codes are named as docs/xtmp.md section 10 lists them', () => {
  const doc = readFileSync(join(REPO, 'docs', 'xtmp.md'), 'utf8');
  const rows = [...doc.matchAll(/^\| (\d+) \| ([A-Z_]+) \|/gm)].map((m) => [Number(m[1]), m[2]]);
  assert.ok(rows.length >= 30);
  assert.deepEqual(Object.entries(ErrorCode).map(([name, code]) => [code, name]).sort((a, b) => a[0] - b[0]), rows);
  for (const [code, name] of rows) assert.equal(describeCode(code), name);
  assert.equal(describeCode(22), 'UNKNOWN(22)');
  assert.equal(describeCode(999), 'UNKNOWN(999)');
  assert.equal(describeCode(FIRST_APPLICATION_CODE), 'APPLICATION(4096)');
  assert.equal(describeCode(0xffff), 'APPLICATION(65535)');
});
