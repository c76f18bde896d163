"""
XTMP's defences against unauthenticated and abusive peers: payload limits
before authentication, a decoder whose buffering is linear in what
arrives, replayed ClientHellos refused before public-key work, a budget of
re-handshakes per session, and the hooks a server role builds its
admission policy on.
"""

import tracemalloc

from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe.xtmp import (
    ClientHandshake, HandshakeFailed, HelloReplayCache, Identity, MessageTooLarge, PeerError,
    RateLimited, ServerHandshake, Settings, XTMPConnection, XTMPErrorCode,
    XTMPProtocol, XTMPServerFactory, XTMPTimeout,
)
from muxframe.xtmp.codec import (
    HEADER, HEADER_SIZE, SECURITY_SIZE, Decoder, MessageType, encodePlain,
)
from muxframe.xtmp.events import MIN_HANDSHAKE_PAYLOAD
from muxframe.xtmp.handshake import KEM, MAX_CLIENT_HELLO, ClientHello
from muxframe.xtmp.identity import MLDSA65_PUBLIC, MLDSA65_SIGNATURE

from tests.test_xtmp_protocol import Harness, result
from tests.test_xtmp_support import (
    CLIENT_IDENTITY, SERVER_IDENTITY, enginePair, exchange, payloads,
)


def serverEngine(**settings):
    return XTMPConnection(
        ServerHandshake(SERVER_IDENTITY,
                        authorizedKeys=[CLIENT_IDENTITY.public]),
        Settings(**settings))


def helloBytes(**kw):
    client = ClientHandshake(serverKey=SERVER_IDENTITY.public,
                             identity=CLIENT_IDENTITY, **kw)
    return client.start()


class PreAuthLimitTests(SynchronousTestCase):
    """
    Before authentication a payload may only be as large as a handshake
    needs; after it, C{maxPayload}.
    """

    def test_sizes(self):
        """
        The documented bounds are the real sizes: the longest ClientHello,
        and an ML-DSA-65 ClientAuth as the smallest handshake limit.
        """
        self.assertEqual(MAX_CLIENT_HELLO, 2155)
        longest = ClientHello(range(255), range(255), KEM.MLKEM1024,
                              bytes(32), bytes(32), 0, bytes(1568)).encode()
        self.assertEqual(len(longest), MAX_CLIENT_HELLO)
        self.assertEqual(MIN_HANDSHAKE_PAYLOAD,
                         1 + 1 + 32 + MLDSA65_PUBLIC + 64 + MLDSA65_SIGNATURE)
        self.assertRaises(ValueError, Settings,
                          maxHandshakePayload=MIN_HANDSHAKE_PAYLOAD - 1)

    def test_helloLengthPrefix(self):
        """
        A server waiting for a ClientHello refuses a length beyond the
        longest possible one from the header alone, holding nothing.
        """
        s = serverEngine()
        header = HEADER.pack(b"XTMP", 1, MessageType.Handshake, 0, 0, 0,
                             MAX_CLIENT_HELLO + 1, 0)
        e = self.assertRaises(MessageTooLarge, s.receiveData, header)
        self.assertIn("2155", str(e))
        self.assertEqual(s.decoder.buffered, 0)

    def test_largestHelloAccepted(self):
        """
        An ML-KEM-1024 hello passes; what is held while it arrives stays
        within one header and the hello.
        """
        s = serverEngine()
        hello = helloBytes(kem=KEM.MLKEM1024)
        for i in range(0, len(hello) - 1, 100):
            s.receiveData(hello[i:min(i + 100, len(hello) - 1)])
            self.assertLessEqual(s.decoder.buffered,
                                 HEADER_SIZE + MAX_CLIENT_HELLO)
        s.receiveData(hello[-1:])
        self.assertEqual(s.handshake.state, "EXPECT_CLIENT_AUTH")

    def test_clientAuthLimit(self):
        """
        After its ServerHello the server accepts up to
        C{maxHandshakePayload} (an ML-DSA identity, or a bearer token of
        that size) and no more.
        """
        s = serverEngine(maxHandshakePayload=8000)
        s.receiveData(helloBytes())
        self.assertEqual(s.decoder.maxPayload, 8000)
        header = HEADER.pack(b"XTMP", 1, MessageType.Handshake, 1,
                             s.handshake.sessionId, 0, 8001, 0)
        self.assertRaises(MessageTooLarge, s.receiveData, header)

    def test_clientLimitBeforeAuthentication(self):
        """
        A client, too, takes no more than C{maxHandshakePayload} from a
        server it has not authenticated.
        """
        c = XTMPConnection(ClientHandshake(serverKey=SERVER_IDENTITY.public,
                                           identity=CLIENT_IDENTITY))
        c.initiate()
        header = HEADER.pack(b"XTMP", 1, MessageType.HandshakeAck, 0, 5, 0,
                             Settings.maxHandshakePayload + 1, 0)
        self.assertRaises(MessageTooLarge, c.receiveData, header)

    def test_fullLimitAfterHandshake(self):
        """
        Application messages that follow the ClientAuth in the same read
        are taken with the session's C{maxPayload}: the limit changes
        between frames, not per read.
        """
        client = XTMPConnection(ClientHandshake(
            serverKey=SERVER_IDENTITY.public, identity=CLIENT_IDENTITY))
        server = serverEngine()
        client.initiate()
        server.receiveData(client.dataToSend())
        client.receiveData(server.dataToSend())
        self.assertEqual(client.state, "OPEN")
        client.sendMessage(0x10, b"m" * 60000)
        events = server.receiveData(client.dataToSend())
        self.assertEqual(server.state, "OPEN")
        self.assertEqual(payloads(events), [b"m" * 60000])
        self.assertEqual(server.decoder.maxPayload, Settings.maxPayload)

    def test_mldsaAndTokenHandshakes(self):
        """
        The largest real handshakes pass under the default limits: ML-KEM
        -1024 with ML-DSA-65 identities both ways, and a 16,000-byte
        bearer token.
        """
        serverId = Identity.generate(withMLDSA=True)
        clientId = Identity.generate(withMLDSA=True)
        client = XTMPConnection(ClientHandshake(
            serverKey=serverId.public, identity=clientId, kem=KEM.MLKEM1024))
        server = XTMPConnection(ServerHandshake(
            serverId, authorizedKeys=[clientId.public]))
        client.initiate()
        exchange(client, server)
        self.assertEqual((client.state, server.state), ("OPEN", "OPEN"))
        token = b"t" * 16000
        client = XTMPConnection(ClientHandshake(
            serverKey=SERVER_IDENTITY.public, token=token))
        server = XTMPConnection(ServerHandshake(
            SERVER_IDENTITY, checkToken=lambda t: t == token))
        client.initiate()
        exchange(client, server)
        self.assertEqual(server.result.token, token)


class HandshakeErrorTests(SynchronousTestCase):
    """
    docs/xtmp.md sections 7.6 and 7.7: the code each malformed ClientHello
    header gets, and what is sent before and after keys exist.
    """

    def test_helloHeaderCodes(self):
        """
        Each header fault of a first message gets its documented code, sent
        as one plaintext Error (session 0, sequence 0) and no Disconnect.
        """
        from muxframe.xtmp import XTMPRemoteError
        good = helloBytes()
        payload = good[32:]

        def header(magic=b"XTMP", version=1, mtype=1, flags=0, session=0,
                   sequence=0, body=payload):
            import zlib
            return HEADER.pack(magic, version, mtype, flags, session,
                               sequence, len(body), zlib.crc32(body)) + body

        crc = bytearray(good)
        crc[28] ^= 1
        cases = [
            (header(magic=b"GET "), XTMPErrorCode.BAD_MAGIC),
            (header(version=2), XTMPErrorCode.BAD_VERSION),
            (header(flags=0x0400), XTMPErrorCode.BAD_FLAGS),
            (header(flags=0x0020), XTMPErrorCode.BAD_FLAGS),
            (bytes(crc), XTMPErrorCode.CHECKSUM_MISMATCH),
            (header(mtype=0x10), XTMPErrorCode.HANDSHAKE_FAILED),
            (header(flags=0x0002), XTMPErrorCode.HANDSHAKE_FAILED),
            (header(session=5), XTMPErrorCode.HANDSHAKE_FAILED),
            (header(sequence=1), XTMPErrorCode.HANDSHAKE_FAILED),
            (header(body=payload[:-1]), XTMPErrorCode.HANDSHAKE_FAILED),
            (header(body=payload[:1] + b"\x02" + payload[2:]),
             XTMPErrorCode.UNSUPPORTED),
        ]
        for wire, code in cases:
            s = serverEngine()
            e = self.assertRaises(XTMPRemoteError, s.receiveData, wire)
            self.assertEqual(e.code, code, (wire[:8], e))
            (error,) = Decoder().feed(s.closeWithError(e.code, str(e)))
            self.assertEqual((error.type, error.flags, error.sessionId,
                              error.sequence), (MessageType.Error, 0, 0, 0))
            self.assertEqual(int.from_bytes(error.payload[:2], "big"), code)

    def test_serverTimeoutAfterServerHello(self):
        """
        A server that times out after its ServerHello sends Error and
        Disconnect under its s2c traffic key (sequence 0 and 1), which a
        client that read ServerAuth holds.
        """
        client = XTMPConnection(ClientHandshake(
            serverKey=SERVER_IDENTITY.public, identity=CLIENT_IDENTITY))
        server = serverEngine()
        client.initiate()
        server.receiveData(client.dataToSend())
        client.receiveData(server.dataToSend())
        client.dataToSend()  # the ClientAuth is lost
        self.assertRaises(XTMPTimeout, server.tick, 10)
        wire = server.closeWithError(XTMPErrorCode.TIMEOUT, "too slow")
        frames = Decoder().feed(wire)
        self.assertEqual([(f.type, f.sequence, f.epoch, f.keyId)
                          for f in frames],
                         [(MessageType.Error, 0, 0, client.receiveKey.keyId),
                          (MessageType.Disconnect, 1, 0,
                           client.receiveKey.keyId)])
        events = client.receiveData(wire)
        self.assertEqual([e.code for e in events],
                         [XTMPErrorCode.TIMEOUT, XTMPErrorCode.TIMEOUT])
        self.assertEqual(client.state, "CLOSED")


class DecoderBufferingTests(SynchronousTestCase):
    """
    Buffering a frame that arrives in small pieces costs work and memory
    linear in its size: no copy of the whole buffer per piece.
    """

    def test_smallPiecesDoNotCopyTheBuffer(self):
        """
        With 512 KiB of a frame held, a thousand 1-byte pieces allocate
        no more than a few copies of the buffer in total (the buffer grows
        geometrically), where each C{buffer + data} used to allocate a
        whole new copy: a thousand of them.
        """
        size = 1 << 20
        d = Decoder(maxPayload=size)
        d.feed(HEADER.pack(b"XTMP", 1, 0x10, 0, 0, 0, size, 0))
        d.feed(b"x" * (512 << 10))
        total = 0
        tracemalloc.start()
        try:
            for _ in range(1000):
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                self.assertEqual(d.feed(b"y"), [])
                total += tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(d.buffered, HEADER_SIZE + (512 << 10) + 1000)
        self.assertLess(total, 4 * (512 << 10))

    def test_chunkNotRetained(self):
        """
        A partial frame at the end of a large read is kept by itself, not
        with the read it came in.
        """
        frame = encodePlain(0x10, 0, 0, 0, b"a" * 50000)
        d = Decoder()
        (f,) = d.feed(frame + frame[:40])
        self.assertEqual(len(f.payload), 50000)
        self.assertEqual(d.buffered, 40)
        (f,) = d.feed(frame[40:])
        self.assertEqual(f.payload, b"a" * 50000)
        self.assertEqual(d.buffered, 0)

    def test_limitChangesBetweenFrames(self):
        """
        L{Decoder.nextFrame} applies the limit in force when each frame is
        taken.
        """
        small, big = (encodePlain(1, 0, 0, 0, b"s" * 10),
                      encodePlain(2, 0, 0, 0, b"b" * 1000))
        d = Decoder(maxPayload=100)
        d.append(small + big)
        self.assertEqual(d.nextFrame().type, 1)
        d.maxPayload = 1000
        self.assertEqual(d.nextFrame().payload, b"b" * 1000)
        self.assertIsNone(d.nextFrame())
        d = Decoder(maxPayload=100)
        d.append(small + big)
        d.nextFrame()
        self.assertRaises(MessageTooLarge, d.nextFrame)
        self.assertRaises(MessageTooLarge, d.nextFrame)


class ReplayTests(SynchronousTestCase):
    """
    A replayed ClientHello is refused before any public-key work.
    """

    def test_replayRefusedBeforeCrypto(self):
        cache = HelloReplayCache()
        calls = []

        def encapsulate(public):
            calls.append(public)
            return public.encapsulate()

        def server():
            return XTMPConnection(ServerHandshake(
                SERVER_IDENTITY, authorizedKeys=[CLIENT_IDENTITY.public],
                replayCache=cache, encapsulate=encapsulate))

        hello = helloBytes()
        first = server()
        first.receiveData(hello)
        self.assertEqual(len(calls), 1)
        second = server()
        e = self.assertRaises(HandshakeFailed, second.receiveData, hello)
        self.assertEqual(e.code, XTMPErrorCode.HANDSHAKE_FAILED)
        self.assertIn("replayed", str(e))
        self.assertEqual(len(calls), 1)
        self.assertEqual(cache.rejected, 1)
        # Another client's hello is fine.
        server().receiveData(helloBytes())
        self.assertEqual(len(calls), 2)

    def test_cacheBounded(self):
        cache = HelloReplayCache(maxEntries=3)
        for i in range(10):
            cache.check(bytes([i]) * 32)
        self.assertEqual(len(cache), 3)
        cache.check(bytes([0]) * 32)
        self.assertRaises(HandshakeFailed, cache.check, bytes([9]) * 32)

    def test_factoryRefusesReplay(self):
        """
        Through the factory: the second connection replaying the first's
        hello gets HANDSHAKE_FAILED, in plaintext, before any key work.
        """
        h = Harness()
        c, s, pump = h.connect(greet=False)
        hello = pump.clientIO.getOutBuffer()
        pump.serverIO.bufferReceived(hello)
        pump.flush()
        self.assertIs(result(s.whenHandshakeDone()), s)
        c2, s2, pump2 = h.connect(greet=False)
        pump2.clientIO.getOutBuffer()
        pump2.serverIO.bufferReceived(hello)
        pump2.flush()
        why = result(s2.whenHandshakeDone()).value
        self.assertEqual(why.code, XTMPErrorCode.HANDSHAKE_FAILED)
        self.assertIn("replayed", str(why))
        self.assertEqual(h.server.replayCache.rejected, 1)
        self.assertTrue(pump2.serverIO.disconnected)


class AdmissionHookTests(SynchronousTestCase):
    """
    What a server role needs for its handshake caps and per-address
    rates: counters, and a hook before the expensive work.
    """

    def test_counters(self):
        h = Harness()
        c, s, pump = h.connect(greet=False)
        self.assertEqual(h.server.handshakesInProgress, 1)
        pump.flush()
        self.assertEqual((h.server.handshakesInProgress,
                          h.server.handshakesCompleted), (0, 1))
        c, s, pump = h.connect(h.clientFactory(identity=Identity.generate()))
        self.assertEqual((h.server.handshakesInProgress,
                          h.server.handshakesFailed), (0, 1))

    def test_refusedSessionFreedByReferenceCounting(self):
        """
        A session refused during its handshake leaves no reference cycle
        behind (no traceback holding its frames, no handshake callbacks
        holding the protocol): with the cyclic collector off, it is freed
        as soon as the transport lets go of it.  Under a flood of refused
        handshakes the cycles made collections milliseconds long.
        """
        import gc
        import weakref

        from twisted.internet.error import ConnectionDone
        from twisted.internet.testing import StringTransport
        from twisted.python.failure import Failure

        h = Harness()

        def admit(protocol, hello):
            raise RateLimited("too many handshakes from this address")

        h.server.admitHandshake = admit
        hello = ClientHandshake(serverKey=SERVER_IDENTITY.public,
                                identity=CLIENT_IDENTITY).start()
        enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            s = h.server.buildProtocol(None)
            transport = StringTransport()
            s.makeConnection(transport)
            s.dataReceived(hello)
            self.assertIn(b"too many handshakes", transport.value())
            s.connectionLost(Failure(ConnectionDone()))
            alive = weakref.ref(s)
            del s, transport
            self.assertIsNone(alive())
        finally:
            if enabled:
                gc.enable()

    def test_admitRefuses(self):
        """
        C{admitHandshake} raising L{RateLimited} refuses the client with
        RATE_LIMITED before any key is derived.
        """
        h = Harness()
        seen = []

        def admit(protocol, hello):
            seen.append((protocol, hello.kem))
            raise RateLimited("too many handshakes from this address")

        h.server.admitHandshake = admit
        c, s, pump = h.connect()
        self.assertEqual(seen, [(s, KEM.MLKEM768)])
        # No key was derived: the session closed without a send key (the
        # handshake itself is released once the connection is closed).
        self.assertIsNone(s.connection.sendKey)
        self.assertIsNone(s.connection.handshake)
        why = result(c.whenHandshakeDone()).value
        self.assertIsInstance(why, PeerError)
        self.assertEqual(why.code, XTMPErrorCode.RATE_LIMITED)
        self.assertIn("too many handshakes", why.reason)
        self.assertEqual(h.server.replayCache.rejected, 0)


class RehandshakeBudgetTests(SynchronousTestCase):
    """
    A server accepts at most C{maxRehandshakesPerHour} re-handshakes in
    any hour of a session; beyond that the session ends RATE_LIMITED.
    """

    def rekey(self, c, s, now):
        self.assertTrue(c.startRehandshake(now))
        return exchange(c, s, now)

    def test_budget(self):
        settings = dict(heartbeatInterval=1e6, sessionTimeout=1e7,
                        keyUpdateInterval=1e6)
        c, s = enginePair(clientSettings=settings,
                          serverSettings=dict(settings,
                                              maxRehandshakesPerHour=2))
        self.rekey(c, s, 10)
        self.rekey(c, s, 20)
        self.assertEqual(s.counters.rehandshakes, 2)
        self.assertTrue(c.startRehandshake(30))
        e = self.assertRaises(RateLimited, s.receiveData, c.dataToSend(), 30)
        self.assertEqual(e.code, XTMPErrorCode.RATE_LIMITED)
        # The code reaches the client, encrypted.
        events = c.receiveData(s.closeWithError(e.code, str(e)), 30)
        self.assertEqual(events[-1].code, XTMPErrorCode.RATE_LIMITED)

    def test_windowSlides(self):
        settings = dict(heartbeatInterval=1e6, sessionTimeout=1e7,
                        keyUpdateInterval=1e6)
        c, s = enginePair(clientSettings=settings,
                          serverSettings=dict(settings,
                                              maxRehandshakesPerHour=2))
        self.rekey(c, s, 0)
        self.rekey(c, s, 1000)
        self.rekey(c, s, 3600)
        self.rekey(c, s, 4600)
        self.assertEqual(s.counters.rehandshakes, 4)
        c.sendMessage(0x10, b"still fine")
        ce, se = exchange(c, s, 4601)
        self.assertEqual(payloads(se), [b"still fine"])

    def test_defaultAndUnlimited(self):
        self.assertEqual(Settings().maxRehandshakesPerHour, 10)
        settings = dict(heartbeatInterval=1e6, sessionTimeout=1e7,
                        keyUpdateInterval=1e6)
        c, s = enginePair(clientSettings=settings, serverSettings=dict(
            settings, maxRehandshakesPerHour=None))
        for t in range(12):
            self.rekey(c, s, t)
        self.assertEqual(s.counters.rehandshakes, 12)
        c, s = enginePair(serverSettings=dict(maxRehandshakesPerHour=0))
        self.assertTrue(c.startRehandshake(1))
        self.assertRaises(RateLimited, s.receiveData, c.dataToSend(), 1)

    def test_overProtocol(self):
        """
        Through the Twisted layer both sides see RATE_LIMITED.
        """
        h = Harness(maxRehandshakesPerHour=1)
        c, s, pump = h.connect()
        closed = c.whenClosed()
        for _ in range(2):
            c.connection.startRehandshake(h.clock.seconds())
            c._flush()
            pump.flush()
        why = result(closed)
        self.assertIsInstance(why, PeerError)
        self.assertEqual(why.code, XTMPErrorCode.RATE_LIMITED)
        self.assertEqual(s.counters.rehandshakes, 1)


class _Recording(XTMPProtocol):
    """
    A server protocol that records the most it ever held in its decoder.
    """

    peakBuffered = 0

    def dataReceived(self, data):
        XTMPProtocol.dataReceived(self, data)
        if self.connection is not None:
            self.peakBuffered = max(self.peakBuffered,
                                    self.connection.decoder.buffered)


class _Attacker(Protocol):
    """
    Sends a header with a huge length prefix and then as much payload as
    it is allowed, never a handshake.
    """

    def __init__(self, data):
        self.data = data
        self.received = []
        self.lost = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.data)

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.lost.callback(b"".join(self.received))


class PreAuthMemoryTCPTests(TestCase):
    """
    Real sockets on 127.0.0.1: many unauthenticated connections sending a
    1 MiB length prefix and 128 KiB behind it cost the server nothing
    buffered; each is told MESSAGE_TOO_LARGE and closed at once (before,
    each could hold up to 1 MiB until the handshake timeout).
    """

    connections = 40

    @defer.inlineCallbacks
    def test_largeLengthPrefixes(self):
        factory = XTMPServerFactory(SERVER_IDENTITY, handshakeTimeout=60)
        factory.protocol = _Recording
        built = []
        buildProtocol = factory.buildProtocol

        def build(addr):
            p = buildProtocol(addr)
            built.append(p)
            return p

        factory.buildProtocol = build
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        data = HEADER.pack(b"XTMP", 1, MessageType.Handshake, 0, 0, 0,
                           1 << 20, 0) + bytes(128 << 10)
        attackers = []
        for _ in range(self.connections):
            attacker = _Attacker(data)
            cf = ClientFactory.forProtocol(lambda a=attacker: a)
            reactor.connectTCP("127.0.0.1", port.getHost().port, cf)
            attackers.append(attacker)
        # Bounded wait: closed promptly, not at the 60 s handshake timeout.
        everyone = defer.gatherResults([a.lost for a in attackers])
        timeout = reactor.callLater(15, everyone.cancel)
        answers = yield everyone
        timeout.cancel()
        for answer in answers:
            (frame,) = Decoder().feed(answer)
            self.assertEqual(frame.type, MessageType.Error)
            self.assertEqual(int.from_bytes(frame.payload[:2], "big"),
                             XTMPErrorCode.MESSAGE_TOO_LARGE)
        self.assertEqual(len(built), self.connections)
        self.assertLessEqual(max(p.peakBuffered for p in built),
                             HEADER_SIZE + SECURITY_SIZE + MAX_CLIENT_HELLO)
        self.assertEqual(factory.handshakesInProgress, 0)
        self.assertEqual(factory.handshakesFailed, self.connections)


class PreAuthLogTests(SynchronousTestCase):
    """
    What connections that never complete a handshake write to the log:
    one line per connection is an unauthenticated peer's to cause, so
    those lines are debug (dropped by the roles by default) or throttled.
    """

    def observe(self):
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    def minimumLevel(self, level):
        from muxframe.logthrottle import minimumLevel, setMinimumLevel
        self.addCleanup(setMinimumLevel, minimumLevel())
        setMinimumLevel(level)

    def lostDuringHandshake(self, h):
        from twisted.internet.error import ConnectionDone
        from twisted.internet.testing import StringTransport
        from twisted.python.failure import Failure
        s = h.server.buildProtocol(None)
        s.makeConnection(StringTransport())
        s.connectionLost(Failure(ConnectionDone()))

    def test_closedDuringHandshakeIsDebug(self):
        """
        A connection closed before its handshake completed is a debug
        event, which the roles' level (info) drops before it is built.
        """
        from twisted.logger import LogLevel
        events = self.observe()
        self.minimumLevel(LogLevel.debug)
        self.lostDuringHandshake(Harness())
        lines = [e for e in events if "closed during the handshake"
                 in (e.get("log_format") or "")]
        self.assertEqual([e["log_level"] for e in lines], [LogLevel.debug])
        del events[:]
        self.minimumLevel(LogLevel.info)
        self.lostDuringHandshake(Harness())
        self.assertEqual([e for e in events if "muxframe" in
                          e.get("log_namespace", "")], [])

    def test_failedHandshakesThrottled(self):
        """
        Handshakes failing on bad input warn at most 10 times a minute per
        factory, then say that further lines are suppressed.
        """
        from twisted.internet.testing import StringTransport
        from twisted.logger import LogLevel
        events = self.observe()
        self.minimumLevel(LogLevel.info)
        h = Harness()
        garbage = encodePlain(MessageType.Handshake, 0, 0, 0, b"\x00" * 64)
        for _ in range(25):
            s = h.server.buildProtocol(None)
            s.makeConnection(StringTransport())
            s.dataReceived(garbage)
        warned = [e for e in events if "handshake failed" in
                  (e.get("log_format") or "")]
        self.assertEqual(len(warned), 10)
        self.assertEqual({e["log_level"] for e in warned}, {LogLevel.warn})
        self.assertIn("suppressed", warned[-1]["log_format"])
        h.clock.advance(61)
        s = h.server.buildProtocol(None)
        s.makeConnection(StringTransport())
        s.dataReceived(garbage)
        self.assertEqual(len([e for e in events if "handshake failed" in
                              (e.get("log_format") or "")]), 11)
