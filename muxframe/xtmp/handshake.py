"""
XTMP's one-round-trip hybrid handshake (docs/xtmp.md section 7), sans-IO.

Flow and states (the client's C{state}, then the server's)::

  client START --Handshake(hello)--> server EXPECT_HELLO
  client EXPECT_ACK <--HandshakeAck(serverHello), HandshakeAck*(auth)--
                                                server EXPECT_CLIENT_AUTH
  client DONE --Handshake*(client auth)--> server DONE

  (* = encrypted under the handshake keys; in a plaintext session sent
  unencrypted with sequence number 1.)

Transcript: C{TH_hello = SHA-256(hello || serverHello)} (the two payloads),
C{TH_full = SHA-256(TH_hello || serverAuth)}.  The server signs
C{"XTMP v1 server signature\\0" || TH_hello}; the client signs
C{"XTMP v1 client signature\\0" || TH_full}.  Keys: see L{muxframe.xtmp.keys}.

Every error raises a L{HandshakeFailed} subclass (or the L{XTMPRemoteError}
of the frame check that failed); the caller then closes the connection.

The server does the cheap checks of a ClientHello first (layout, version,
cipher, KEM, key length), then asks its admission hook and its replay
cache, and only then does public-key work, cheapest first: X25519 (which
also rejects low-order keys), ML-KEM encapsulation, the Ed25519 (and
ML-DSA-65) signature.

A server may answer a ClientHello in two steps (C{answerLater}): the
frame does the checks and the key agreement (X25519, ML-KEM) and calls
C{answerLater()}; L{ServerHandshake.answer} then does the rest (the
ServerHello, the signature, the key schedule), so that an event loop can
run other work between the halves of a hello's half millisecond of CPU.
While the answer is due (C{answerDue}) the handshake takes no frame
(L{muxframe.xtmp.connection.XTMPConnection} keeps the frames behind the
hello, and answers before it reads on).
"""

import hashlib
import os
import struct
from collections import OrderedDict

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from muxframe.xtmp.codec import (
    Cipher, Flags, MessageType, decodeReason, encodePlain,
)
from muxframe.xtmp.errors import (
    DowngradeDetected, HandshakeFailed, MalformedMessage, PeerError,
    SequenceError, Unauthorized, Unsupported, XTMPLocalError, XTMPRemoteError,
)
from muxframe.xtmp.identity import PublicIdentity
from muxframe.xtmp.keys import TrafficKey, directionKeys, extract, openFrame
from enum import IntEnum


class KEM(IntEnum):
    """
    The post-quantum KEM half of the key exchange.
    """

    MLKEM768 = 1
    MLKEM1024 = 2


KEM_PRIVATE = {KEM.MLKEM768: mlkem.MLKEM768PrivateKey,
                KEM.MLKEM1024: mlkem.MLKEM1024PrivateKey}
KEM_PUBLIC = {KEM.MLKEM768: mlkem.MLKEM768PublicKey,
               KEM.MLKEM1024: mlkem.MLKEM1024PublicKey}
KEM_KEY_SIZE = {KEM.MLKEM768: 1184, KEM.MLKEM1024: 1568}
KEM_CIPHERTEXT_SIZE = {KEM.MLKEM768: 1088, KEM.MLKEM1024: 1568}
SUPPORTED_VERSIONS = (1,)
DEFAULT_CIPHERS = (Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305)
SERVER_SIGNATURE_CONTEXT = b"XTMP v1 server signature\x00"
CLIENT_SIGNATURE_CONTEXT = b"XTMP v1 client signature\x00"
AUTH_ANONYMOUS, AUTH_IDENTITY, AUTH_TOKEN = 0, 1, 2
RESUMED = 0x01

_U16 = struct.Struct(">H")
_HELLO_TAIL = struct.Struct(">32s32sQH")
_ACK = struct.Struct(">BBBB32s32sQ32sH")

#: The longest ClientHello payload that can be encoded (255 versions, 255
#: ciphers, ML-KEM-1024): what a server accepts before it has answered.
MAX_CLIENT_HELLO = 1 + 255 + 1 + 255 + 1 + _HELLO_TAIL.size + \
    KEM_KEY_SIZE[KEM.MLKEM1024]


def _raw(key):
    return key.public_bytes_raw()


class ClientHello:
    """
    The client's Handshake payload::

      u8 n, n x u8 versions | u8 m, m x u8 ciphers (preference order) |
      u8 kem | 32 random | 32 X25519 public | u64 previous session id |
      u16 length, ML-KEM encapsulation key
    """

    def __init__(self, versions, ciphers, kem, random, x25519Public,
                 previousSessionId, kemKey):
        self.versions = tuple(versions)
        self.ciphers = tuple(ciphers)
        self.kem = kem
        self.random = random
        self.x25519Public = x25519Public
        self.previousSessionId = previousSessionId
        self.kemKey = kemKey

    def encode(self):
        """
        The payload bytes.
        """
        return b"".join([
            bytes([len(self.versions)]), bytes(self.versions),
            bytes([len(self.ciphers)]), bytes(self.ciphers),
            bytes([self.kem]),
            _HELLO_TAIL.pack(self.random, self.x25519Public,
                             self.previousSessionId, len(self.kemKey)),
            self.kemKey])

    @classmethod
    def decode(cls, data):
        """
        Parse a payload; raise L{HandshakeFailed} if it is malformed.
        """
        try:
            n = data[0]
            versions = data[1:1 + n]
            pos = 1 + n
            m = data[pos]
            ciphers = data[pos + 1:pos + 1 + m]
            pos += 1 + m
            kem = data[pos]
            random, xpub, prev, klen = _HELLO_TAIL.unpack_from(data, pos + 1)
            pos += 1 + _HELLO_TAIL.size
        except (IndexError, struct.error):
            raise HandshakeFailed("truncated client hello")
        if len(versions) != n or len(ciphers) != m or pos + klen != len(data):
            raise HandshakeFailed("truncated or overlong client hello")
        return cls(versions, ciphers, kem, random, xpub, prev, data[pos:])


class ServerHello:
    """
    The server's (plaintext) HandshakeAck payload::

      u8 version | u8 cipher | u8 kem | u8 flags (bit0 resumed) |
      32 random | 32 X25519 public | u64 session id |
      32 SHA-256 of the client hello payload as received |
      u16 length, ML-KEM ciphertext
    """

    def __init__(self, version, cipher, kem, flags, random, x25519Public,
                 sessionId, offerHash, ciphertext):
        self.version = version
        self.cipher = cipher
        self.kem = kem
        self.flags = flags
        self.random = random
        self.x25519Public = x25519Public
        self.sessionId = sessionId
        self.offerHash = offerHash
        self.ciphertext = ciphertext

    def encode(self):
        """
        The payload bytes.
        """
        return _ACK.pack(self.version, self.cipher, self.kem, self.flags,
                         self.random, self.x25519Public, self.sessionId,
                         self.offerHash, len(self.ciphertext)) + self.ciphertext

    @classmethod
    def decode(cls, data):
        """
        Parse a payload; raise L{HandshakeFailed} if it is malformed.
        """
        try:
            fields = _ACK.unpack_from(data)
        except struct.error:
            raise HandshakeFailed("truncated server hello")
        if _ACK.size + fields[-1] != len(data):
            raise HandshakeFailed("truncated or overlong server hello")
        return cls(*fields[:-1], ciphertext=data[_ACK.size:])


class HandshakeResult:
    """
    What a completed handshake establishes.

    @ivar sendKey: our L{TrafficKey}, or L{None} in a plaintext session.
    @ivar receiveKey: the peer's L{TrafficKey}, or L{None}.
    @ivar peerIdentity: the peer's L{PublicIdentity}, or L{None} (a client
        that sent a token or nothing).
    @ivar token: the bearer token the client presented (server side).
    """

    def __init__(self, sessionId, cipher, sendKey, receiveKey, peerIdentity,
                 token, resumed, transcriptHash):
        self.sessionId = sessionId
        self.cipher = cipher
        self.sendKey = sendKey
        self.receiveKey = receiveKey
        self.peerIdentity = peerIdentity
        self.token = token
        self.resumed = resumed
        self.transcriptHash = transcriptHash


def x25519Secret(xPrivate, peerXPublic):
    """
    The X25519 shared secret; an all-zero result (a low-order peer key) is
    L{HandshakeFailed}.
    """
    try:
        return xPrivate.exchange(
            x25519.X25519PublicKey.from_public_bytes(peerXPublic))
    except ValueError as e:
        raise HandshakeFailed("bad X25519 key: %s" % (e,))


def sharedSecret(kemSecret, xPrivate, peerXPublic):
    """
    The handshake's input keying material: ML-KEM secret || X25519 secret.
    """
    return kemSecret + x25519Secret(xPrivate, peerXPublic)


class HelloReplayCache:
    """
    The client randoms of the most recent ClientHellos a server accepted
    for processing, so that a replayed hello is refused before any
    public-key work.  A genuine client draws a fresh 32-byte random for
    every hello; a repeated one is a replay (which could never complete:
    the replayer lacks the ephemeral private keys).  Sans-IO and bounded:
    past C{maxEntries} the oldest randoms are forgotten.

    @ivar rejected: how many hellos were refused as replays.
    """

    def __init__(self, maxEntries=10000):
        self.maxEntries = maxEntries
        self.rejected = 0
        self._seen = OrderedDict()

    def __len__(self):
        return len(self._seen)

    def check(self, random):
        """
        Record C{random}; raise L{HandshakeFailed} if it was seen before.
        """
        if random in self._seen:
            self.rejected += 1
            raise HandshakeFailed("replayed client hello")
        self._seen[random] = None
        if len(self._seen) > self.maxEntries:
            self._seen.popitem(last=False)


def deriveKeys(secret, salt, prefix, cipher, now):
    """
    C{(c2s, s2c)} L{TrafficKey}s from C{extract(salt, secret)} with the
    labels under C{prefix} (C{"xtmp "} or C{"xtmp hs "}).
    """
    c2sKey, c2sIv, s2cKey, s2cIv = directionKeys(extract(salt, secret), prefix)
    return (TrafficKey(cipher, c2sKey, c2sIv, 0, now),
            TrafficKey(cipher, s2cKey, s2cIv, 0, now))


def _peerErrorOr(frame, expected):
    if frame.type == MessageType.Error and not frame.flags & Flags.ENCRYPTED:
        raise PeerError(*decodeReason(frame.payload))
    if frame.type != expected:
        raise HandshakeFailed("expected message type %#x, got %#x"
                              % (expected, frame.type))


class ClientHandshake:
    """
    The client's side.  Call L{start} for the first bytes, then feed every
    received frame to L{receiveFrame} until it returns a result.

    @param serverKey: the pinned L{PublicIdentity} of the server.
    @param verifyServer: or a callable(L{PublicIdentity}) -> bool.
    @param identity: our L{Identity} to authenticate with, or
    @param token: a bearer token (bytes) to present instead.
    """

    #: A client's answers are never deferred (as L{ServerHandshake}'s can
    #: be).
    answerDue = False

    def __init__(self, serverKey=None, verifyServer=None, identity=None,
                 token=None, ciphers=DEFAULT_CIPHERS, kem=KEM.MLKEM768,
                 allowPlaintext=False, previousSessionId=0,
                 randomBytes=os.urandom, ephemeral=None):
        if serverKey is None and verifyServer is None:
            raise XTMPLocalError("a client needs serverKey or verifyServer")
        if Cipher.NONE in ciphers and not allowPlaintext:
            raise XTMPLocalError("Cipher.NONE needs allowPlaintext=True")
        self.serverKey = serverKey
        self.verifyServer = verifyServer
        self.identity = identity
        self.token = token
        self.ciphers = tuple(ciphers)
        self.kem = KEM(kem)
        self.allowPlaintext = allowPlaintext
        self.previousSessionId = previousSessionId
        self._random = randomBytes
        if ephemeral is None:
            ephemeral = (x25519.X25519PrivateKey.generate(),
                         KEM_PRIVATE[self.kem].generate())
        self._xPrivate, self._kemPrivate = ephemeral
        self.state = "START"
        self.sendKey = self.receiveKey = None
        self.sessionId = 0

    def start(self):
        """
        Return the Handshake message to send first.
        """
        assert self.state == "START"
        hello = ClientHello(SUPPORTED_VERSIONS, self.ciphers, self.kem,
                            self._random(32), _raw(self._xPrivate.public_key()),
                            self.previousSessionId,
                            _raw(self._kemPrivate.public_key()))
        self._hello = hello.encode()
        self.state = "EXPECT_ACK"
        return encodePlain(MessageType.Handshake, 0, 0, 0, self._hello)

    def receiveFrame(self, frame, now=0.0):
        """
        Process one frame from the server.

        @return: C{(bytesToSend, result)}; C{result} is a L{HandshakeResult}
            once the handshake is complete, else L{None}.
        """
        if self.state == "EXPECT_ACK":
            self._receiveServerHello(frame, now)
            return b"", None
        if self.state == "EXPECT_AUTH":
            return self._receiveServerAuth(frame, now)
        raise HandshakeFailed("unexpected handshake message in state %s"
                              % (self.state,))

    def _receiveServerHello(self, frame, now):
        _peerErrorOr(frame, MessageType.HandshakeAck)
        if frame.flags or frame.sequence != 0:
            raise HandshakeFailed("server hello must be plaintext, seq 0")
        ack = ServerHello.decode(frame.payload)
        if ack.flags & ~RESUMED:
            raise HandshakeFailed("unknown server hello flags %#x"
                                  % (ack.flags,))
        if ack.offerHash != hashlib.sha256(self._hello).digest():
            raise DowngradeDetected("the server saw a different offer")
        if (ack.version not in SUPPORTED_VERSIONS
                or ack.cipher not in self.ciphers or ack.kem != self.kem):
            raise DowngradeDetected("server chose something not offered")
        if ack.sessionId == 0 or frame.sessionId != ack.sessionId:
            raise HandshakeFailed("bad session id in server hello")
        if len(ack.ciphertext) != KEM_CIPHERTEXT_SIZE[self.kem]:
            raise HandshakeFailed("bad ML-KEM ciphertext length")
        try:
            kemSecret = self._kemPrivate.decapsulate(ack.ciphertext)
        except ValueError as e:
            raise HandshakeFailed("ML-KEM decapsulation failed: %s" % (e,))
        self._secret = sharedSecret(kemSecret, self._xPrivate,
                                     ack.x25519Public)
        self._ack = ack
        self.sessionId = ack.sessionId
        self.cipher = Cipher(ack.cipher)
        self._thHello = hashlib.sha256(self._hello + frame.payload).digest()
        if self.cipher != Cipher.NONE:
            self.sendKey, self.receiveKey = deriveKeys(
                self._secret, self._thHello, "xtmp hs ", self.cipher, now)
        self.state = "EXPECT_AUTH"

    def _receiveServerAuth(self, frame, now):
        _peerErrorOr(frame, MessageType.HandshakeAck)
        if self.cipher == Cipher.NONE:
            if frame.flags or frame.sessionId != self.sessionId:
                raise HandshakeFailed("bad plaintext server auth")
            if frame.sequence != 1:
                raise SequenceError("server auth sequence %d, expected 1"
                                    % (frame.sequence,))
            body = frame.payload
        else:
            if frame.flags != Flags.ENCRYPTED:
                raise HandshakeFailed("server auth must be encrypted")
            body = openFrame(self.receiveKey, frame, self.sessionId)
        try:
            server, end = PublicIdentity.decode(body)
        except MalformedMessage as e:
            raise HandshakeFailed("server auth: %s" % (e,))
        server.verify(SERVER_SIGNATURE_CONTEXT + self._thHello, body[end:])
        if self.serverKey is not None:
            pinned = self.serverKey
            if not isinstance(pinned, PublicIdentity):
                pinned = PublicIdentity(pinned)
            if server.ed25519 != pinned.ed25519 or (
                    pinned.mldsa is not None and server.mldsa != pinned.mldsa):
                raise Unauthorized("server identity is not the pinned key")
        if self.verifyServer is not None and not self.verifyServer(server):
            raise Unauthorized("server identity rejected by verifyServer")
        thFull = hashlib.sha256(self._thHello + body).digest()
        if self.identity is not None:
            auth = bytes([AUTH_IDENTITY]) + self.identity.public.encode() + \
                self.identity.sign(CLIENT_SIGNATURE_CONTEXT + thFull)
        elif self.token is not None:
            auth = bytes([AUTH_TOKEN]) + _U16.pack(len(self.token)) + self.token
        else:
            auth = bytes([AUTH_ANONYMOUS])
        if self.cipher == Cipher.NONE:
            out = encodePlain(MessageType.Handshake, 0, self.sessionId, 1,
                              auth)
            send = receive = None
        else:
            out = self.sendKey.seal(MessageType.Handshake, Flags.ENCRYPTED,
                                    self.sessionId, auth)
            send, receive = deriveKeys(self._secret, thFull, "xtmp ", self.cipher,
                                  now)
        self.sendKey, self.receiveKey = send, receive
        self.state = "DONE"
        self._secret = None
        return out, HandshakeResult(
            self.sessionId, self.cipher, send, receive, server, None,
            bool(self._ack.flags & RESUMED), thFull)


def authorizedKeyMap(keys):
    """
    Index authorized identities (L{PublicIdentity} or raw Ed25519 keys) by
    their Ed25519 key, as L{ServerHandshake} wants them; a server builds it
    once and shares it between connections.
    """
    return {(k.ed25519 if isinstance(k, PublicIdentity) else bytes(k)): k
            for k in keys}


class ServerHandshake:
    """
    The server's side: feed it frames with L{receiveFrame}.

    @param identity: the server's L{Identity}.
    @param authorizedKeys: L{PublicIdentity}s (or raw Ed25519 keys) of the
        clients accepted by signature, or an L{authorizedKeyMap} of them.
    @param checkToken: callable(bytes) -> bool accepting bearer tokens.
    @param allowAnonymous: accept clients that present nothing.
    @param newSessionId: callable() -> a fresh non-zero 64-bit id.
    @param resume: callable(previousSessionId) -> bool, whether that
        session's state is held and may be resumed.
    @param replayCache: a L{HelloReplayCache} (normally one per server,
        shared by its connections), or L{None} for no replay check.
    @param admit: callable(L{ClientHello}) called after the hello's cheap
        checks and before any public-key work; it may raise an
        L{XTMPRemoteError} (such as L{RateLimited}) to refuse the client.
    @param answerLater: L{None}, or callable() to answer a ClientHello in
        two steps: its frame does the checks and the key agreement,
        returns nothing to send and calls C{answerLater()}; L{answer}
        then makes the answer (see the module's docstring).
    @param authorize: callable(peerIdentity, token), called once the
        client's authentication is parsed (and its signature verified),
        before the authorized-keys, token and anonymous checks; it raises
        an L{XTMPRemoteError} (e.g. L{Unauthorized} with another code) to
        refuse the client.  Any error raised from the client's
        authentication on carries the identity it presented (or L{None})
        as C{identity}, so a server can count failures per key.
    """

    def __init__(self, identity, ciphers=DEFAULT_CIPHERS, allowPlaintext=False,
                 authorizedKeys=(), checkToken=None, allowAnonymous=False,
                 newSessionId=None, resume=None, randomBytes=os.urandom,
                 ephemeral=None, encapsulate=None, replayCache=None,
                 admit=None, authorize=None, answerLater=None):
        if Cipher.NONE in ciphers and not allowPlaintext:
            raise XTMPLocalError("Cipher.NONE needs allowPlaintext=True")
        self.identity = identity
        self.ciphers = tuple(ciphers)
        self.allowPlaintext = allowPlaintext
        self.authorizedKeys = (authorizedKeys
                               if isinstance(authorizedKeys, dict)
                               else authorizedKeyMap(authorizedKeys))
        self.checkToken = checkToken
        self.allowAnonymous = allowAnonymous
        self._newSessionId = newSessionId or (
            lambda: int.from_bytes(os.urandom(8), "big") or 1)
        self._resume = resume or (lambda sessionId: False)
        self._random = randomBytes
        self._xPrivate = ephemeral
        self._encapsulate = encapsulate
        self._replayCache = replayCache
        self._admit = admit
        self._authorize = authorize
        self._presented = None
        self.answerLater = answerLater
        self._agreed = None
        self.state = "EXPECT_HELLO"
        self.sendKey = self.receiveKey = None
        self.sessionId = 0

    def receiveFrame(self, frame, now=0.0):
        """
        Process one frame from the client.

        @return: C{(bytesToSend, result)} as L{ClientHandshake.receiveFrame}.
        """
        if self.state == "EXPECT_HELLO":
            self._agree(frame)
            if self.answerLater is not None:
                self.answerLater()
                return b"", None
            return self.answer(now), None
        if self.state == "EXPECT_CLIENT_AUTH":
            return b"", self._receiveClientAuth(frame)
        raise HandshakeFailed("unexpected handshake message in state %s"
                              % (self.state,))

    @property
    def answerDue(self):
        """
        Whether a ClientHello's answer is due (L{answer}).
        """
        return self._agreed is not None

    def _agree(self, frame):
        """
        A ClientHello's checks and key agreement (the first half of its
        work); L{answer} is then due.
        """
        _peerErrorOr(frame, MessageType.Handshake)
        if frame.flags or frame.sequence != 0 or frame.sessionId != 0:
            raise HandshakeFailed("client hello must be plaintext, seq 0, "
                                  "session 0")
        hello = ClientHello.decode(frame.payload)
        if not set(hello.versions) & set(SUPPORTED_VERSIONS):
            raise Unsupported("no common protocol version")
        cipher = next((c for c in hello.ciphers if c in self.ciphers), None)
        if cipher is None:
            raise Unsupported("no common cipher")
        try:
            kem = KEM(hello.kem)
        except ValueError:
            raise Unsupported("unknown KEM %d" % (hello.kem,))
        if len(hello.kemKey) != KEM_KEY_SIZE[kem]:
            raise HandshakeFailed("bad ML-KEM key length")
        # Everything above is parsing; from here on each step costs more.
        if self._admit is not None:
            try:
                self._admit(hello)
            except XTMPRemoteError as e:
                # The policy's answer, not the peer's fault: the session
                # logs it at debug only (the policy logs its refusals).
                e.refusedByPolicy = True
                raise
        if self._replayCache is not None:
            self._replayCache.check(hello.random)
        xPrivate = self._xPrivate or x25519.X25519PrivateKey.generate()
        xSecret = x25519Secret(xPrivate, hello.x25519Public)
        try:
            kemPublic = KEM_PUBLIC[kem].from_public_bytes(hello.kemKey)
            if self._encapsulate is not None:
                kemSecret, ciphertext = self._encapsulate(kemPublic)
            else:
                kemSecret, ciphertext = kemPublic.encapsulate()
        except ValueError as e:
            raise HandshakeFailed("bad ML-KEM key: %s" % (e,))
        self._agreed = (frame.payload, hello, cipher, kem, xPrivate,
                        kemSecret + xSecret, ciphertext)
        self.state = "ANSWER_DUE"

    def answer(self, now=0.0):
        """
        Answer the ClientHello agreed on (the second half of its work:
        the ServerHello, the signature, the key schedule).

        @return: the bytes to send.
        """
        if self._agreed is None:
            raise HandshakeFailed("no client hello to answer")
        payload, hello, cipher, kem, xPrivate, secret, ciphertext = \
            self._agreed
        self._agreed = None
        resumed = bool(hello.previousSessionId) and bool(
            self._resume(hello.previousSessionId))
        self.sessionId = (hello.previousSessionId if resumed
                          else self._newSessionId())
        self.resumed = resumed
        self.cipher = Cipher(cipher)
        ack = ServerHello(1, cipher, kem, RESUMED if resumed else 0,
                          self._random(32), _raw(xPrivate.public_key()),
                          self.sessionId,
                          hashlib.sha256(payload).digest(),
                          ciphertext).encode()
        thHello = hashlib.sha256(payload + ack).digest()
        auth = self.identity.public.encode() + self.identity.sign(
            SERVER_SIGNATURE_CONTEXT + thHello)
        self._thFull = hashlib.sha256(thHello + auth).digest()
        out = encodePlain(MessageType.HandshakeAck, 0, self.sessionId, 0, ack)
        if self.cipher == Cipher.NONE:
            out += encodePlain(MessageType.HandshakeAck, 0, self.sessionId, 1,
                               auth)
        else:
            c2s, s2c = deriveKeys(secret, thHello, "xtmp hs ", self.cipher, now)
            out += s2c.seal(MessageType.HandshakeAck, Flags.ENCRYPTED,
                            self.sessionId, auth)
            self.receiveKey = c2s
            # From here on the server sends under its traffic key, so an
            # Error rejecting the client is readable by a genuine client.
            self._trafficC2S, self.sendKey = deriveKeys(
                secret, self._thFull, "xtmp ", self.cipher, now)
        self.state = "EXPECT_CLIENT_AUTH"
        return out

    def _receiveClientAuth(self, frame):
        if self.cipher != Cipher.NONE and frame.flags == Flags.ENCRYPTED:
            # A client that failed after ServerHello (a bad server
            # signature, an unpinned key, its own timeout) reports it
            # under its handshake key, in place of its ClientAuth.
            body = openFrame(self.receiveKey, frame, self.sessionId)
            if frame.type == MessageType.Error:
                raise PeerError(*decodeReason(body))
            if frame.type != MessageType.Handshake:
                raise HandshakeFailed("expected message type %#x, got %#x"
                                      % (MessageType.Handshake, frame.type))
        else:
            _peerErrorOr(frame, MessageType.Handshake)
            if self.cipher != Cipher.NONE:
                raise HandshakeFailed("client auth must be encrypted")
            if frame.flags or frame.sessionId != self.sessionId:
                raise HandshakeFailed("bad plaintext client auth")
            if frame.sequence != 1:
                raise SequenceError("client auth sequence %d, expected 1"
                                    % (frame.sequence,))
            body = frame.payload
        if not body:
            raise HandshakeFailed("empty client auth")
        try:
            peer, token = self._checkClientAuth(body)
        except XTMPRemoteError as e:
            e.identity = self._presented
            raise
        self.state = "DONE"
        if self.cipher == Cipher.NONE:
            send = receive = None
        else:
            send, receive = self.sendKey, self._trafficC2S
        self.receiveKey = receive
        return HandshakeResult(self.sessionId, self.cipher, send, receive,
                               peer, token, self.resumed, self._thFull)

    def _checkClientAuth(self, body):
        method, peer, token = body[0], None, None
        authorize = self._authorize
        if method == AUTH_IDENTITY:
            try:
                peer, end = PublicIdentity.decode(body, 1)
            except MalformedMessage as e:
                raise HandshakeFailed("client auth: %s" % (e,))
            self._presented = peer
            peer.verify(CLIENT_SIGNATURE_CONTEXT + self._thFull, body[end:])
            if authorize is not None:
                authorize(peer, None)
            allowed = self.authorizedKeys.get(peer.ed25519)
            if allowed is None or (isinstance(allowed, PublicIdentity)
                                   and allowed.mldsa is not None
                                   and allowed.mldsa != peer.mldsa):
                raise Unauthorized("client key is not authorized")
        elif method == AUTH_TOKEN:
            if len(body) < 3 or _U16.unpack_from(body, 1)[0] != len(body) - 3:
                raise HandshakeFailed("malformed token auth")
            token = body[3:]
            if authorize is not None:
                authorize(None, token)
            if self.checkToken is None or not self.checkToken(token):
                raise Unauthorized("bearer token rejected")
        elif method == AUTH_ANONYMOUS:
            if authorize is not None:
                authorize(None, None)
            if len(body) != 1 or not self.allowAnonymous:
                raise Unauthorized("anonymous clients are not accepted")
        else:
            raise HandshakeFailed("unknown client auth method %d" % (method,))
        return peer, token
