// The client side of the hybrid X25519 + ML-KEM handshake (docs/xtmp.md
// section 7) and its key schedule (section 8.1). Sans-IO: the session
// engine feeds it payloads and sends what it returns.

import { x25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { ml_kem1024, ml_kem768 } from '@noble/post-quantum/ml-kem.js';

import { concat, equal, fromHex, isZero, readU16, readU64, toBytes, u16, u64, u8, utf8 } from './bytes.js';
import { Cipher, ErrorCode, KEM, VERSION } from './constants.js';
import { fail } from './errors.js';
import { PublicIdentity } from './identity.js';
import { deriveKeys, extract } from './keys.js';

const KEMS = {
  [KEM.MLKEM768]: { impl: ml_kem768, publicKey: 1184, cipherText: 1088 },
  [KEM.MLKEM1024]: { impl: ml_kem1024, publicKey: 1568, cipherText: 1568 },
};

const SERVER_LABEL = utf8('XTMP v1 server signature\0');
const CLIENT_LABEL = utf8('XTMP v1 client signature\0');

export const AuthMethod = Object.freeze({ ANONYMOUS: 0, IDENTITY: 1, TOKEN: 2 });

function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

// Options: serverKey (PublicIdentity, encoded bytes or hex) or
// serverFingerprint (hex) or verifyServer(identity) -> bool; identity
// (Identity) or token (bytes/string) or neither (anonymous); ciphers (in
// preference order); kem; for tests: random, x25519Private, kemSeed.
export class ClientHandshake {
  constructor(options = {}) {
    this.serverKey = options.serverKey ? PublicIdentity.from(options.serverKey) : null;
    this.serverFingerprint = options.serverFingerprint ? options.serverFingerprint.toLowerCase() : null;
    this.verifyServer = options.verifyServer || null;
    if (!this.serverKey && !this.serverFingerprint && !this.verifyServer) {
      throw new TypeError('pin the server: give serverKey, serverFingerprint or verifyServer');
    }
    this.identity = options.identity || null;
    this.token = options.token !== undefined && options.token !== null ? toBytes(options.token) : null;
    if (this.identity && this.token) throw new TypeError('give an identity or a token, not both');
    if (this.token && this.token.length > 0xffff) throw new TypeError('token longer than 65535 bytes');
    this.ciphers = options.ciphers || [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305];
    for (const c of this.ciphers) {
      if (c !== Cipher.AES_256_GCM && c !== Cipher.CHACHA20_POLY1305) {
        throw new TypeError(`unsupported cipher ${c}`);
      }
    }
    this.kem = options.kem || KEM.MLKEM768;
    if (!KEMS[this.kem]) throw new TypeError(`unknown KEM ${this.kem}`);
    const take = (value) => (typeof value === 'string' ? fromHex(value) : value);
    this._random = take(options.random) || randomBytes(32);
    this._x25519Private = take(options.x25519Private) || x25519.utils.randomSecretKey();
    this._kemKeys = KEMS[this.kem].impl.keygen(take(options.kemSeed) || randomBytes(64));
    this.previousSessionId = 0n;
    this.result = null;
  }

  // The ClientHello payload (section 7.1).
  hello() {
    const ek = this._kemKeys.publicKey;
    this._hello = concat(u8(1), u8(VERSION), u8(this.ciphers.length), Uint8Array.from(this.ciphers),
      u8(this.kem), this._random, x25519.getPublicKey(this._x25519Private),
      u64(this.previousSessionId), u16(ek.length), ek);
    return this._hello;
  }

  // The ServerHello (section 7.2): downgrade checks, shared secret,
  // handshake keys. Returns { sessionId, cipher, resumed, keys }.
  serverHello(payload, headerSessionId) {
    const kem = KEMS[this.kem];
    if (payload.length < 110) throw fail(ErrorCode.HANDSHAKE_FAILED, 'truncated ServerHello');
    const version = payload[0];
    const cipher = payload[1];
    const echoedKem = payload[2];
    if (version !== VERSION || !this.ciphers.includes(cipher) || echoedKem !== this.kem ||
        !equal(payload.subarray(76, 108), sha256(this._hello))) {
      throw fail(ErrorCode.DOWNGRADE, 'the ServerHello does not answer the offer sent');
    }
    const ctLength = readU16(payload, 108);
    if (ctLength !== kem.cipherText || payload.length !== 110 + ctLength) {
      throw fail(ErrorCode.HANDSHAKE_FAILED, 'bad ML-KEM ciphertext length');
    }
    const sessionId = readU64(payload, 68);
    if (sessionId === 0n || sessionId !== headerSessionId) {
      throw fail(ErrorCode.HANDSHAKE_FAILED, 'bad session id in the ServerHello');
    }
    let kemSecret;
    let dh;
    try {
      kemSecret = kem.impl.decapsulate(payload.subarray(110), this._kemKeys.secretKey);
      dh = x25519.getSharedSecret(this._x25519Private, payload.subarray(36, 68));
    } catch (e) {
      throw fail(ErrorCode.HANDSHAKE_FAILED, `key exchange failed: ${e.message}`);
    }
    if (isZero(dh)) throw fail(ErrorCode.HANDSHAKE_FAILED, 'all-zero X25519 result');
    this._ikm = concat(kemSecret, dh);
    this._serverHello = payload;
    this.transcriptHello = sha256(concat(this._hello, payload));
    this.sessionId = sessionId;
    this.cipher = cipher;
    this.resumed = (payload[3] & 1) === 1;
    return {
      sessionId, cipher, resumed: this.resumed,
      keys: deriveKeys(extract(this.transcriptHello, this._ikm), cipher, 'xtmp hs '),
    };
  }

  // The ServerAuth plaintext (section 7.4): verify, pin, derive traffic
  // keys; returns { clientAuth, peerIdentity, keys }.
  serverAuth(plaintext) {
    const [identity, end] = PublicIdentity.decode(plaintext);
    const signature = plaintext.subarray(end);
    if (!identity.verify(concat(SERVER_LABEL, this.transcriptHello), signature)) {
      throw fail(ErrorCode.HANDSHAKE_FAILED, 'bad server signature');
    }
    if (!this._pinned(identity)) {
      throw fail(ErrorCode.UNAUTHORIZED, `server key ${identity.fingerprint} is not the pinned one`);
    }
    this.transcriptFull = sha256(concat(this.transcriptHello, plaintext));
    let clientAuth;
    if (this.identity) {
      clientAuth = concat(u8(AuthMethod.IDENTITY), this.identity.public.encode(),
        this.identity.sign(concat(CLIENT_LABEL, this.transcriptFull)));
    } else if (this.token) {
      clientAuth = concat(u8(AuthMethod.TOKEN), u16(this.token.length), this.token);
    } else {
      clientAuth = u8(AuthMethod.ANONYMOUS);
    }
    this.peerIdentity = identity;
    return {
      clientAuth, peerIdentity: identity,
      keys: deriveKeys(extract(this.transcriptFull, this._ikm), this.cipher, 'xtmp '),
    };
  }

  _pinned(identity) {
    if (this.serverKey && !this.serverKey.equals(identity)) return false;
    if (this.serverFingerprint && identity.fingerprint !== this.serverFingerprint) return false;
    if (this.verifyServer && !this.verifyServer(identity)) return false;
    return true;
  }
}
