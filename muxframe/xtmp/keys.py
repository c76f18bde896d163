"""
XTMP key schedule and per-direction traffic keys, sans-IO.

  prk(salt, ikm)       = HKDF-Extract(SHA-256, salt, ikm)
  expand(prk, label,n) = HKDF-Expand(SHA-256, prk, info=label, n)
  ikm                  = ML-KEM shared secret || X25519 shared secret

  handshake keys: prk_hs = prk(TH_hello, ikm);
      "xtmp hs c2s key"/"xtmp hs c2s iv", "xtmp hs s2c key"/"xtmp hs s2c iv"
  traffic keys:   prk_tr = prk(TH_full, ikm);
      "xtmp c2s key"/"xtmp c2s iv", "xtmp s2c key"/"xtmp s2c iv"
  key update:     key' = expand(key, "xtmp traffic update", 32)
                  iv'  = expand(key, "xtmp traffic update iv", 12)
  key id:         HMAC-SHA256(key, "xtmp key id")[:16]

Keys are 32 bytes, IVs 12 bytes.  The AEAD nonce for sequence number C{s}
is the IV with its last 8 bytes XORed with C{s} (big-endian).
"""

import hmac
import struct
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import (
    AESGCM, ChaCha20Poly1305,
)

from muxframe.xtmp.codec import (
    MAGIC, SECURITY_PREFIX, TAG_SIZE, VERSION, Cipher,
)
from muxframe.xtmp.errors import (
    ChecksumMismatch, DecryptionFailed, MalformedMessage, NonceMismatch,
    SequenceError, WrongKey,
)

_AEADS = {Cipher.AES_256_GCM: AESGCM,
          Cipher.CHACHA20_POLY1305: ChaCha20Poly1305}
_NONCE_TAIL = struct.Struct(">4sQ")
_SECURITY_HEAD = struct.Struct(">24s4sQ12s")
# A sealed frame's authenticated bytes in one pack: the header (codec's
# HEADER: magic and version as one 5-byte field), then the security
# layer's first 48 bytes: cipher, reserved, epoch and key id (fixed per
# key, packed once), the nonce (IV head, IV tail xor sequence) and its 12
# zero bytes.  The nonce is bytes 56..67.
_AAD = struct.Struct(">5sBHQQII24s4sQ12x")
_MAGIC_VERSION = MAGIC + bytes((VERSION,))
_ZERO3 = bytes(3)
_ZERO12 = bytes(12)
_crc32 = zlib.crc32


# HKDF (RFC 5869) written out over hmac.digest, OpenSSL's one-shot HMAC:
# a handshake derives ten keys and four key ids, and building an HKDFExpand
# or hmac.new object for each cost more than the hashing
# (tests.test_xtmp_keys checks these against cryptography's HKDF).
_hmac = hmac.digest
_SHA256_SIZE = 32


def extract(salt, ikm):
    """
    HKDF-Extract with SHA-256.
    """
    return _hmac(salt, ikm, "sha256")


def expand(prk, label, length):
    """
    HKDF-Expand with SHA-256; C{label} is the ASCII info string.
    """
    info = label.encode("ascii")
    if length <= _SHA256_SIZE:
        return _hmac(prk, info + b"\x01", "sha256")[:length]
    if length > 255 * _SHA256_SIZE:
        raise ValueError("HKDF-Expand: at most %d bytes, not %d"
                         % (255 * _SHA256_SIZE, length))
    block, out = b"", []
    for counter in range(1, -(-length // _SHA256_SIZE) + 1):
        block = _hmac(prk, block + info + bytes((counter,)), "sha256")
        out.append(block)
    return b"".join(out)[:length]


def keyId(key):
    """
    The 16-byte public name of C{key}.
    """
    return _hmac(key, b"xtmp key id", "sha256")[:16]


def directionKeys(prk, prefix):
    """
    Derive C{(c2sKey, c2sIv, s2cKey, s2cIv)} from C{prk}; C{prefix} is
    C{"xtmp "} for traffic keys or C{"xtmp hs "} for handshake keys.
    """
    return (expand(prk, prefix + "c2s key", 32),
            expand(prk, prefix + "c2s iv", 12),
            expand(prk, prefix + "s2c key", 32),
            expand(prk, prefix + "s2c iv", 12))


class TrafficKey:
    """
    One direction's AEAD state: key, IV, epoch, sequence counter, and a
    ready AEAD object (made at first use; L{release} drops it).

    @ivar sequence: the next sequence number to send, or expected.
    @ivar count: messages protected under this key (for rotation).
    @ivar generation: how many key changes (KeyUpdates and re-handshakes)
        this direction has had in the session before this key.  Unlike
        C{epoch}, which restarts at 0 after a re-handshake, it never
        repeats, so C{(generation, sequence)} names one message of the
        direction for the whole session (docs/xtmp.md section 9.4).
    """

    __slots__ = ("cipher", "key", "iv", "epoch", "keyId", "sequence",
                 "count", "createdAt", "generation", "_aead", "_ivHead",
                 "_ivTail", "_fixed")

    def __init__(self, cipher, key, iv, epoch=0, createdAt=0.0,
                 generation=0):
        self.cipher = Cipher(cipher)
        self.key = key
        self.iv = iv
        self.epoch = epoch
        self.generation = generation
        self.keyId = keyId(key)
        self.sequence = 0
        self.count = 0
        self.createdAt = createdAt
        # Made when first used, dropped by release(): each holds a cipher
        # context of about 2.4 KiB.
        self._aead = None
        self._ivHead = iv[:4]
        self._ivTail = int.from_bytes(iv[4:], "big")
        # Security-layer bytes 0..23, the same in every frame of this key.
        self._fixed = SECURITY_PREFIX.pack(self.cipher, _ZERO3, epoch,
                                           self.keyId, b"")[:24]

    def release(self):
        """
        Drop the ready AEAD object if it is costly to keep: an AES-GCM one
        holds a cipher context of about 2.4 KiB, which an idle session need
        not keep; the next seal or open makes a new one (about 2.5 us).  A
        ChaCha20-Poly1305 one holds little more than the key (about 20
        bytes; its context is made per call), so it is kept: remaking it
        each heartbeat round would cost the time and save nothing.
        """
        if self.cipher != Cipher.CHACHA20_POLY1305:
            self._aead = None

    def nonce(self, sequence):
        """
        The 12-byte AEAD nonce for C{sequence}.
        """
        return _NONCE_TAIL.pack(self._ivHead, self._ivTail ^ sequence)

    def security(self, sequence):
        """
        The security-layer bytes 0..47 (cipher, reserved, epoch, key id,
        nonce, zero padding) of this key's frame with C{sequence}.
        """
        return _SECURITY_HEAD.pack(self._fixed, self._ivHead,
                                   self._ivTail ^ sequence, _ZERO12)

    def updated(self, now=0.0):
        """
        The next key (KeyUpdate): epoch + 1, generation + 1, sequence 0.
        """
        return TrafficKey(self.cipher,
                          expand(self.key, "xtmp traffic update", 32),
                          expand(self.key, "xtmp traffic update iv", 12),
                          self.epoch + 1, now, self.generation + 1)

    def seal(self, messageType, flags, sessionId, body, checksum=None):
        """
        Encrypt C{body} as the next message; return the wire bytes.
        C{flags} must include ENCRYPTED.

        @param checksum: C{zlib.crc32(body)} if the caller has it (one
            body sealed for many sessions is summed once).
        """
        seq = self.sequence
        aad = _AAD.pack(_MAGIC_VERSION, messageType, flags, sessionId, seq,
                        len(body),
                        _crc32(body) if checksum is None else checksum,
                        self._fixed, self._ivHead, self._ivTail ^ seq)
        aead = self._aead
        if aead is None:
            aead = self._aead = _AEADS[self.cipher](self.key)
        out = aead.encrypt(aad[56:68], body, aad)
        self.sequence = seq + 1
        self.count += 1
        return b"".join((aad, out[-TAG_SIZE:], out[:-TAG_SIZE]))

    def sealMany(self, bodies, sessionId):
        """
        L{seal} each of C{bodies} (L{PreparedBody} objects, with
        ENCRYPTED in their C{sealedFlags}) as the next messages, in order;
        return their frames' bytes, joined.  The same bytes as calling
        L{seal} for each: one loop with the key's state in locals, for a
        session's held fan-out bodies (L{XTMPConnection.takeHeld}).
        """
        aead = self._aead
        if aead is None:
            aead = self._aead = _AEADS[self.cipher](self.key)
        encrypt = aead.encrypt
        pack = _AAD.pack
        fixed, head, tail = self._fixed, self._ivHead, self._ivTail
        start = seq = self.sequence
        parts = []
        append = parts.append
        try:
            for p in bodies:
                body = p.body
                aad = pack(_MAGIC_VERSION, p.type, p.sealedFlags, sessionId,
                           seq, p.size, p.checksum, fixed, head, tail ^ seq)
                out = encrypt(aad[56:68], body, aad)
                seq += 1
                append(aad)
                append(out[-TAG_SIZE:])
                append(out[:-TAG_SIZE])
        finally:
            # Every sequence number used, even by a frame an error then
            # dropped: a nonce is never used twice.
            self.sequence = seq
            self.count += seq - start
        return b"".join(parts)

    def tryOpen(self, nonce, sealed, aad):
        """
        The body of a frame's C{sealed} ciphertext and tag, or L{None} if
        the tag does not verify; nothing else is checked and nothing
        changes (the caller checked the frame and advances the counters).
        Without a ready AEAD object (a released key: an idle session's)
        one is made for this call only.
        """
        aead = self._aead
        if aead is None:
            aead = _AEADS[self.cipher](self.key)
        try:
            return aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            return None

    def open(self, frame):
        """
        Authenticate and decrypt C{frame}; the caller has checked key id,
        epoch, sequence and nonce.  The counter advances only on success.

        @raise DecryptionFailed: the tag does not verify.
        """
        aead = self._aead
        if aead is None:
            aead = self._aead = _AEADS[self.cipher](self.key)
        try:
            body = aead.decrypt(frame.nonce, frame.payload + frame.tag,
                                      frame.aad)
        except InvalidTag:
            raise DecryptionFailed(
                "authentication failed for message type %#x seq %d"
                % (frame.type, frame.sequence))
        self.sequence += 1
        self.count += 1
        return body


def openFrame(key, frame, sessionId):
    """
    Check an encrypted C{frame} against the receive C{key} and the expected
    C{sessionId}, decrypt it and verify its checksum; return the body.  The
    checks run in this order, each with its own error: session id
    (L{MalformedMessage}), cipher, epoch and key id (L{WrongKey}), sequence
    (L{SequenceError}), nonce (L{NonceMismatch}), tag (L{DecryptionFailed}),
    checksum (L{ChecksumMismatch}).  The receive counter advances only when
    every check passes.
    """
    if frame.sessionId != sessionId:
        raise MalformedMessage("session id %d, expected %d"
                               % (frame.sessionId, sessionId))
    if (frame.keyId != key.keyId or frame.epoch != key.epoch
            or frame.cipher != key.cipher):
        raise WrongKey("message under key epoch %d, expected epoch %d"
                       % (frame.epoch, key.epoch))
    if frame.sequence != key.sequence:
        raise SequenceError("sequence number %d, expected %d"
                            % (frame.sequence, key.sequence))
    if frame.nonce != key.nonce(frame.sequence):
        raise NonceMismatch("nonce is not IV xor sequence %d"
                            % (frame.sequence,))
    body = key.open(frame)
    if _crc32(body) != frame.checksum:
        key.sequence -= 1
        key.count -= 1
        raise ChecksumMismatch("checksum mismatch in message seq %d"
                               % (frame.sequence,))
    return body


__all__ = ["TrafficKey", "extract", "expand", "keyId", "directionKeys",
           "openFrame"]
