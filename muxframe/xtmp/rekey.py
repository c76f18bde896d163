"""
The in-session re-handshake (docs/xtmp.md section 8.4), sans-IO: fresh
X25519 and ML-KEM secrets under the current traffic keys, so a long
session regains forward secrecy every C{rotationInterval}.

  client: RekeyOffer(...).hello  -> Handshake    (encrypted, current key)
  server: answerRekey(hello, ...) -> HandshakeAck (encrypted, current key)
  both:   prk = extract(SHA-256(hello || ack), ikm); "xtmp c2s key", ...

L{RekeyMixin} is the engine's side of it (mixed into L{XTMPConnection}):
the client starts one, the server answers within a budget of
C{maxRehandshakesPerHour}.
"""

import hashlib
import os

from cryptography.hazmat.primitives.asymmetric import x25519

from collections import deque

from muxframe.xtmp.codec import MessageType
from muxframe.xtmp.errors import DowngradeDetected, HandshakeFailed, RateLimited
from muxframe.xtmp.events import OPEN
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


_HOUR = 3600.0


class RekeyMixin:
    """
    Re-handshakes for L{muxframe.xtmp.connection.XTMPConnection}.  Uses the
    engine's C{isClient}, C{state}, C{settings}, C{cipher}, C{kem},
    C{sessionId}, C{sendKey}, C{receiveKey}, C{_pendingReceiveKey},
    C{_rekey}, C{_rekeyTimes}, C{keysAt}, C{counters} and C{sendControl}.
    """

    # The engine keeps its state in slots (a server holds one per idle
    # session); a mixin without slots would give each one a __dict__.
    __slots__ = ()

    def startRehandshake(self, now=0.0):
        """
        (client) Send a new hello under the current keys; the session
        switches to keys from fresh X25519 and ML-KEM secrets when the
        HandshakeAck arrives.

        @return: whether a re-handshake was started.
        """
        if not self.isClient or self.state != OPEN or self.sendKey is None \
                or self._rekey is not None:
            return False
        self._rekey = RekeyOffer(self.cipher, self.kem,
                                 self.sessionId)
        self.sendControl(MessageType.Handshake, self._rekey.hello)
        self.keysAt = now
        return True

    def _rekeyHello(self, message, now):
        if self.isClient or self.receiveKey is None:
            raise HandshakeFailed("unexpected Handshake in an open session")
        if self._pendingReceiveKey is not None:
            raise HandshakeFailed("a re-handshake is already in progress")
        self._countRehandshake(now)
        ack, c2s, s2c = answerRekey(message.payload, self.cipher,
                                    self.sessionId, now)
        self.sendControl(MessageType.HandshakeAck, ack)
        # Epochs restart at 0 with the new keys; generations go on, so
        # request ids never repeat (the receive side counts at its switch).
        s2c.generation = self.sendKey.generation + 1
        self.sendKey = s2c
        self._pendingReceiveKey = c2s
        self.keysAt = now
        self.counters.rehandshakes += 1

    def _countRehandshake(self, now):
        # Each re-handshake costs the server an ML-KEM encapsulation and an
        # X25519 exchange: an authenticated peer gets a budget, not a loop.
        limit = self.settings.maxRehandshakesPerHour
        if limit is None:
            return
        times = self._rekeyTimes
        if times is None:
            times = self._rekeyTimes = deque(maxlen=max(limit, 1))
        if limit <= 0 or (len(times) >= limit and now - times[0] < _HOUR):
            raise RateLimited("more than %d re-handshakes in an hour"
                              % (limit,))
        times.append(now)

    def _rekeyAck(self, message, now):
        if self._rekey is None:
            raise HandshakeFailed("unexpected HandshakeAck in an open session")
        send, receive = self._rekey.finish(message.payload, now)
        send.generation = self.sendKey.generation + 1
        receive.generation = self.receiveKey.generation + 1
        self.sendKey, self.receiveKey = send, receive
        self._rekey = None
        self.counters.rehandshakes += 1

