// Identities and signatures (docs/xtmp.md section 7.4):
//   identity  = u8 kinds (0x01 Ed25519, 0x03 Ed25519 + ML-DSA-65)
//               || Ed25519 public key (32) [|| ML-DSA-65 public key (1952)]
//   signature = Ed25519 signature (64) [|| ML-DSA-65 signature (3309)]
// A fingerprint is the hex SHA-256 of the encoded identity (not stated in
// docs/xtmp.md; it is what muxframe's PublicIdentity.fingerprint computes).

import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { ml_dsa65 } from '@noble/post-quantum/ml-dsa.js';

import { concat, equal, fromHex, hex, toBytes } from './bytes.js';
import { ErrorCode } from './constants.js';
import { fail } from './errors.js';

const KIND_ED25519 = 0x01;
const KIND_MLDSA = 0x02;
export const ED25519_SIGNATURE = 64;
export const MLDSA65_PUBLIC = 1952;
export const MLDSA65_SIGNATURE = 3309;

function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

export class PublicIdentity {
  constructor(ed25519Key, mldsaKey = null) {
    if (ed25519Key.length !== 32) throw new TypeError('Ed25519 public key must be 32 bytes');
    if (mldsaKey !== null && mldsaKey.length !== MLDSA65_PUBLIC) {
      throw new TypeError(`ML-DSA-65 public key must be ${MLDSA65_PUBLIC} bytes`);
    }
    this.ed25519 = ed25519Key;
    this.mldsa = mldsaKey;
  }

  encode() {
    if (this.mldsa === null) return concat(Uint8Array.of(KIND_ED25519), this.ed25519);
    return concat(Uint8Array.of(KIND_ED25519 | KIND_MLDSA), this.ed25519, this.mldsa);
  }

  get fingerprint() {
    return hex(sha256(this.encode()));
  }

  equals(other) {
    return other instanceof PublicIdentity && equal(this.encode(), other.encode());
  }

  get signatureLength() {
    return ED25519_SIGNATURE + (this.mldsa ? MLDSA65_SIGNATURE : 0);
  }

  // Both signatures must verify.
  verify(message, signature) {
    if (signature.length !== this.signatureLength) return false;
    let ok;
    try {
      ok = ed25519.verify(signature.subarray(0, 64), message, this.ed25519, { zip215: false });
      if (ok && this.mldsa) ok = ml_dsa65.verify(signature.subarray(64), message, this.mldsa);
    } catch (e) {
      return false;
    }
    return ok;
  }

  // Decode an identity at offset; returns [identity, end].
  static decode(bytes, offset = 0) {
    if (bytes.length < offset + 33) throw fail(ErrorCode.HANDSHAKE_FAILED, 'truncated identity');
    const kinds = bytes[offset];
    const ed = bytes.slice(offset + 1, offset + 33);
    if (kinds === KIND_ED25519) return [new PublicIdentity(ed), offset + 33];
    if (kinds === (KIND_ED25519 | KIND_MLDSA)) {
      const end = offset + 33 + MLDSA65_PUBLIC;
      if (bytes.length < end) throw fail(ErrorCode.HANDSHAKE_FAILED, 'truncated ML-DSA-65 key');
      return [new PublicIdentity(ed, bytes.slice(offset + 33, end)), end];
    }
    throw fail(ErrorCode.HANDSHAKE_FAILED, `unknown identity kinds ${kinds}`);
  }

  // From the encoded identity (bytes or hex).
  static from(value) {
    if (value instanceof PublicIdentity) return value;
    const bytes = typeof value === 'string' ? fromHex(value) : toBytes(value);
    const [identity, end] = PublicIdentity.decode(bytes);
    if (end !== bytes.length) throw new TypeError('trailing bytes after the identity');
    return identity;
  }
}

export class Identity {
  // seed: the Ed25519 private key (32 bytes); mldsaSeed: the ML-DSA-65
  // key generation seed (32 bytes), optional.
  constructor(seed, mldsaSeed = null) {
    this._seed = toBytes(seed);
    let mldsaPublic = null;
    if (mldsaSeed !== null) {
      const keys = ml_dsa65.keygen(toBytes(mldsaSeed));
      this._mldsaSecret = keys.secretKey;
      mldsaPublic = keys.publicKey;
    }
    this.public = new PublicIdentity(ed25519.getPublicKey(this._seed), mldsaPublic);
  }

  static generate({ withMLDSA = false } = {}) {
    return new Identity(randomBytes(32), withMLDSA ? randomBytes(32) : null);
  }

  sign(message) {
    const ed = ed25519.sign(message, this._seed);
    if (!this._mldsaSecret) return ed;
    return concat(ed, ml_dsa65.sign(message, this._mldsaSecret));
  }
}
