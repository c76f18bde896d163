// The codec alone: any chunking of the byte stream gives the same frames;
// bodies, names and reasons round-trip; bad UTF-8 and truncation are
// PROTOCOL_ERROR.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  Decoder, ErrorCode, Flags, crc32, decodeName, decodeReason, encodeBody, encodeName, encodeReason, hex,
  parseBody, utf8,
} from '../src/index.js';
import { VECTORS, h } from './helpers.js';

test('CRC-32 is zlib\'s', () => {
  assert.equal(crc32(utf8('123456789')), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

test('any chunking gives the same frames', () => {
  const wire = h(VECTORS.clientHello + VECTORS.serverHello + VECTORS.serverAuth + VECTORS.clientAuth);
  const whole = new Decoder(2 << 20).feed(wire).map((f) => hex(f.header) + hex(f.payload));
  for (const step of [1, 7, 31, 32, 33, 97, 1000]) {
    const d = new Decoder(2 << 20);
    const frames = [];
    for (let i = 0; i < wire.length; i += step) frames.push(...d.feed(wire.subarray(i, i + step)));
    assert.deepEqual(frames.map((f) => hex(f.header) + hex(f.payload)), whole, `step ${step}`);
    assert.equal(d.buffered, 0);
  }
  assert.equal(whole.length, 4);
});

test('bodies round-trip with every optional part', () => {
  const flags = Flags.RESPONSE | Flags.REQUIRES_ACK | Flags.STREAM_DATA;
  const body = encodeBody(flags, { requestId: 5n, deliveryId: 9n, streamName: 'tïcks', data: utf8('x') });
  const parts = parseBody(flags, body);
  assert.equal(parts.requestId, 5n);
  assert.equal(parts.deliveryId, 9n);
  assert.equal(parts.streamName, 'tïcks');
  assert.deepEqual([...parts.data], [0x78]);
  for (let cut = 0; cut < 8 + 8 + 2 + 6; cut++) {
    assert.throws(() => parseBody(flags, body.subarray(0, cut)), (e) => e.code === ErrorCode.PROTOCOL_ERROR);
  }
});

test('names and reasons must be valid UTF-8', () => {
  assert.deepEqual(decodeName(encodeName('prices')), ['prices', 8]);
  assert.throws(() => decodeName(Uint8Array.of(0, 1, 0xff)), (e) => e.code === ErrorCode.PROTOCOL_ERROR);
  assert.deepEqual(decodeReason(encodeReason(18, 'bye')), { code: 18, reason: 'bye' });
  assert.throws(() => decodeReason(Uint8Array.of(0, 1, 0xc3)), (e) => e.code === ErrorCode.PROTOCOL_ERROR);
  assert.throws(() => decodeReason(Uint8Array.of(0)), (e) => e.code === ErrorCode.PROTOCOL_ERROR);
});
