// The key schedule (docs/xtmp.md section 8) and the per-direction traffic
// key that seals and opens messages (section 3).

import { gcm } from '@noble/ciphers/aes.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { expand as hkdfExpand } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';

import { concat, equal, readU32, u32, u64, u8, utf8 } from './bytes.js';
import { Cipher, ErrorCode, MAGIC, SECURITY_SIZE, VERSION } from './constants.js';
import { crc32 } from './crc32.js';
import { fail } from './errors.js';

// extract(salt, ikm) = HMAC-SHA256(salt, ikm)
export function extract(salt, ikm) {
  return hmac(sha256, salt, ikm);
}

// expand(prk, label, L) = HKDF-Expand-SHA256(prk, info=ASCII label, L)
export function expand(prk, label, length) {
  return hkdfExpand(sha256, prk, utf8(label), length);
}

export function keyId(key) {
  return hmac(sha256, key, utf8('xtmp key id')).slice(0, 16);
}

// nonce(iv, seq) = iv[0:4] || (u64(iv[4:12]) XOR seq)
export function nonce(iv, sequence) {
  const out = iv.slice(0, 12);
  const s = u64(sequence);
  for (let i = 0; i < 8; i++) out[4 + i] ^= s[i];
  return out;
}

function aead(cipher, key, iv, aad) {
  if (cipher === Cipher.AES_256_GCM) return gcm(key, iv, aad);
  if (cipher === Cipher.CHACHA20_POLY1305) return chacha20poly1305(key, iv, aad);
  throw fail(ErrorCode.UNSUPPORTED, `unknown cipher ${cipher}`);
}

export function encodeHeader(type, flags, sessionId, sequence, length, checksum) {
  return concat(MAGIC, u8(VERSION), u8(type), new Uint8Array([flags >> 8, flags & 0xff]),
    u64(sessionId), u64(sequence), u32(length), u32(checksum));
}

// One direction's key: cipher, key, IV, epoch, key id, and the sequence
// number of its next message.
export class TrafficKey {
  constructor(cipher, key, iv, epoch = 0) {
    this.cipher = cipher;
    this.key = key;
    this.iv = iv;
    this.epoch = epoch;
    this.keyId = keyId(key);
    this.sequence = 0;
  }

  // The key after a KeyUpdate (section 8.3).
  updated() {
    return new TrafficKey(this.cipher, expand(this.key, 'xtmp traffic update', 32),
      expand(this.key, 'xtmp traffic update iv', 12), this.epoch + 1);
  }

  // Encrypt one message (header flags must include ENCRYPTED); the
  // sequence number advances.
  seal(type, flags, sessionId, body) {
    const sequence = this.sequence++;
    const header = encodeHeader(type, flags, sessionId, sequence, body.length, crc32(body));
    const n = nonce(this.iv, sequence);
    const layer = new Uint8Array(SECURITY_SIZE);
    layer[0] = this.cipher;
    layer.set(u32(this.epoch), 4);
    layer.set(this.keyId, 8);
    layer.set(n, 24);
    const sealed = aead(this.cipher, this.key, n, concat(header, layer.subarray(0, 48))).encrypt(body);
    const cut = sealed.length - 16;
    layer.set(sealed.subarray(cut), 48);
    return concat(header, layer, sealed.subarray(0, cut));
  }

  // Check and decrypt a received frame, in the order of section 8.2
  // (session id is checked by the caller). Returns the plaintext body.
  open(frame, maxSequence) {
    const layer = frame.security;
    if (layer[0] !== this.cipher || readU32(layer, 4) !== this.epoch ||
        !equal(layer.subarray(8, 24), this.keyId)) {
      throw fail(ErrorCode.WRONG_KEY,
        `message under cipher ${layer[0]} epoch ${readU32(layer, 4)} is not the current receive key's`);
    }
    if (frame.sequence !== BigInt(this.sequence) ||
        (maxSequence !== undefined && frame.sequence >= BigInt(maxSequence))) {
      throw fail(ErrorCode.BAD_SEQUENCE,
        `sequence ${frame.sequence}, expected ${this.sequence}`);
    }
    const n = nonce(this.iv, this.sequence);
    if (!equal(layer.subarray(24, 36), n)) {
      throw fail(ErrorCode.BAD_NONCE, 'nonce is not IV xor sequence');
    }
    let body;
    try {
      body = aead(this.cipher, this.key, n, concat(frame.header, layer.subarray(0, 48)))
        .decrypt(concat(frame.payload, layer.subarray(48, 64)));
    } catch (e) {
      throw fail(ErrorCode.DECRYPT_FAILED, 'AEAD tag does not verify');
    }
    if (crc32(body) !== frame.checksum) {
      throw fail(ErrorCode.CHECKSUM_MISMATCH, 'CRC-32 of the plaintext differs');
    }
    this.sequence++;
    return body;
  }
}

// Traffic or handshake keys of both directions from a PRK (section 8.1).
export function deriveKeys(prk, cipher, prefix) {
  return {
    c2s: new TrafficKey(cipher, expand(prk, `${prefix}c2s key`, 32), expand(prk, `${prefix}c2s iv`, 12)),
    s2c: new TrafficKey(cipher, expand(prk, `${prefix}s2c key`, 32), expand(prk, `${prefix}s2c iv`, 12)),
  };
}
