"""
The in-session re-handshake (docs/xtmp.md section 8.4), sans-IO: fresh
X25519 and ML-KEM secrets under the current traffic keys, so a long
session regains forward secrecy every C{rotationInterval}.

  client: RekeyOffer(...).hello  -> Handshake    (encrypted, current key)
  server: answerRekey(hello, ...) -> HandshakeAck (encrypted, current key)
  both:   prk = extract(SHA-256(hello || ack), ikm); "xtmp c2s key", ...
"""

import hashlib
import os

from cryptography.hazmat.primitives.asymmetric import x25519

from muxframe.xtmp.errors import DowngradeDetected, HandshakeFailed
from muxframe.xtmp.handshake import (
    KEM, KEM_CIPHERTEXT_SIZE, KEM_KEY_SIZE, KEM_PRIVATE, KEM_PUBLIC,
    ClientHello, ServerHello, deriveKeys, sharedSecret,
)


class RekeyOffer:
    """
    The client's pending re-handshake.

    @ivar hello: the ClientHello payload to send.
    """

    def __init__(self, cipher, kem, sessionId):
        self.cipher = cipher
        self.kem = KEM(kem)
        self.sessionId = sessionId
        self._xPrivate = x25519.X25519PrivateKey.generate()
        self._kemPrivate = KEM_PRIVATE[self.kem].generate()
        self.hello = ClientHello(
            (1,), (cipher,), self.kem, os.urandom(32),
            self._xPrivate.public_key().public_bytes_raw(), sessionId,
            self._kemPrivate.public_key().public_bytes_raw()).encode()

    def finish(self, ackPayload, now):
        """
        Check the server's answer and derive the new keys.

        @return: C{(sendKey, receiveKey)} for the client.
        @raise DowngradeDetected: the answer does not match the offer.
        """
        ack = ServerHello.decode(ackPayload)
        if (ack.offerHash != hashlib.sha256(self.hello).digest()
                or ack.version != 1 or ack.flags != 0
                or ack.cipher != self.cipher or ack.kem != self.kem
                or ack.sessionId != self.sessionId
                or len(ack.ciphertext) != KEM_CIPHERTEXT_SIZE[self.kem]):
            raise DowngradeDetected("re-handshake answer does not match")
        secret = sharedSecret(self._kemPrivate.decapsulate(ack.ciphertext),
                              self._xPrivate, ack.x25519Public)
        return deriveKeys(secret,
                          hashlib.sha256(self.hello + ackPayload).digest(),
                          "xtmp ", self.cipher, now)


def answerRekey(helloPayload, cipher, sessionId, now):
    """
    The server's side: check the hello, encapsulate, derive.

    @return: C{(ackPayload, c2sKey, s2cKey)}.
    """
    hello = ClientHello.decode(helloPayload)
    if (hello.ciphers != (cipher,) or hello.previousSessionId != sessionId
            or 1 not in hello.versions or hello.kem not in (1, 2)):
        raise DowngradeDetected("re-handshake must offer version 1, the "
                                "session's cipher and its session id")
    kem = KEM(hello.kem)
    if len(hello.kemKey) != KEM_KEY_SIZE[kem]:
        raise HandshakeFailed("bad ML-KEM key length")
    try:
        kemSecret, ciphertext = KEM_PUBLIC[kem].from_public_bytes(
            hello.kemKey).encapsulate()
    except ValueError as e:
        raise HandshakeFailed("bad ML-KEM key: %s" % (e,))
    xPrivate = x25519.X25519PrivateKey.generate()
    ack = ServerHello(1, cipher, kem, 0, os.urandom(32),
                      xPrivate.public_key().public_bytes_raw(), sessionId,
                      hashlib.sha256(helloPayload).digest(),
                      ciphertext).encode()
    secret = sharedSecret(kemSecret, xPrivate, hello.x25519Public)
    c2s, s2c = deriveKeys(secret, hashlib.sha256(helloPayload + ack).digest(),
                          "xtmp ", cipher, now)
    return ack, c2s, s2c
