"""
Tests for the Twisted XTMP layer (L{muxframe.xtmp.protocol},
L{muxframe.xtmp.factory}) over in-memory transports and a fake clock.
"""

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.test.iosim import connect, makeFakeClient, makeFakeServer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from muxframe.xtmp import (
    ApplicationError, XTMPLocalError, DecryptionFailed, DowngradeDetected, Flags, HandshakeFailed, Identity,
    MessageType, PeerDisconnected, PeerError, RequestTimeout, SendQueueFull,
    SequenceError, Unauthorized, WrongKey, XTMPClientFactory, XTMPErrorCode,
    XTMPServerFactory, XTMPTimeout,
)
from muxframe.xtmp.codec import Decoder, HEADER
from muxframe.xtmp.handshake import ClientHello
from muxframe.xtmp.codec import encodePlain

from tests.test_xtmp_support import CLIENT_IDENTITY, SERVER_IDENTITY


class Harness:
    """
    A server factory and client factories on one fake clock.
    """

    def __init__(self, **serverKw):
        self.clock = Clock()
        serverKw.setdefault("authorizedKeys", [CLIENT_IDENTITY.public])
        self.server = XTMPServerFactory(SERVER_IDENTITY, reactor=self.clock,
                                        **serverKw)
        self.got = []
        self.server.setHandler(0x10, lambda p, m: self.got.append(m.payload))
        self.server.setHandler(0x30, lambda p, m: b"pong:" + m.payload)

    def clientFactory(self, **kw):
        kw.setdefault("serverKey", SERVER_IDENTITY.public)
        kw.setdefault("identity", CLIENT_IDENTITY)
        return XTMPClientFactory(reactor=self.clock, **kw)

    def connect(self, clientFactory=None, greet=True):
        cf = clientFactory or self.clientFactory()
        c = cf.buildProtocol(None)
        s = self.server.buildProtocol(None)
        pump = connect(s, makeFakeServer(s), c, makeFakeClient(c),
                       greet=greet, clock=self.clock)
        return c, s, pump


def result(d):
    """
    The current result of C{d} (a Failure is consumed), or None.
    """
    out = []

    def keep(r):
        out.append(r)
        return None if isinstance(r, Failure) else r

    d.addBoth(keep)
    return out[0] if out else None


class SessionTests(SynchronousTestCase):
    """
    Handshake, messages, requests and handlers over the protocol.
    """

    def test_handshake(self):
        h = Harness()
        c, s, pump = h.connect()
        self.assertIs(result(c.whenHandshakeDone()), c)
        self.assertIs(result(s.whenHandshakeDone()), s)
        self.assertEqual(c.sessionId, s.sessionId)
        self.assertEqual(s.peerIdentity, CLIENT_IDENTITY.public)
        self.assertEqual(c.peerIdentity, SERVER_IDENTITY.public)
        self.assertIs(h.server.live[s.sessionId], s)

    def test_sendAndHandler(self):
        h = Harness()
        c, s, pump = h.connect()
        c.send(0x10, b"hello")
        c.send(0x10, b"acked", Flags.REQUIRES_ACK)
        pump.flush()
        self.assertEqual(h.got, [b"hello", b"acked"])
        self.assertEqual(len(c.connection.resumption.unacked), 0)

    def test_request(self):
        h = Harness()
        c, s, pump = h.connect()
        d = c.request(0x30, b"ping")
        pump.flush()
        m = result(d)
        self.assertEqual(m.payload, b"pong:ping")
        self.assertTrue(m.flags & Flags.RESPONSE)

    def test_handlerDeferred(self):
        from twisted.internet.defer import Deferred
        h = Harness()
        later = Deferred()
        h.server.setHandler(0x31, lambda p, m: later)
        c, s, pump = h.connect()
        d = c.request(0x31, b"x")
        pump.flush()
        self.assertIsNone(result(d))
        later.callback(b"done")
        pump.flush()
        self.assertEqual(result(d).payload, b"done")

    def test_requestTimeout(self):
        h = Harness()
        h.server.setHandler(0x32, lambda p, m: None)
        c, s, pump = h.connect()
        d = c.request(0x32, b"x", timeout=5)
        pump.flush()
        h.clock.advance(5)
        f = result(d)
        self.assertIsInstance(f.value, RequestTimeout)
        self.assertEqual(c.connection.pendingRequests, {})

    def test_oneTimerForManyRequests(self):
        """
        A session's waiting requests share one reactor call: 100 of them
        add one delayed call, each still times out with its own timeout
        (in the message), answered ones never do, and the call goes when
        none waits.
        """
        h = Harness()
        h.server.setHandler(0x32, lambda p, m: None)
        c, s, pump = h.connect()
        pump.flush()
        before = len(h.clock.getDelayedCalls())
        silent = [c.request(0x32, b"x", timeout=5 + n % 2) for n in range(100)]
        answered = c.request(0x30, b"y", timeout=5)
        pump.flush()
        self.assertEqual(result(answered).payload, b"pong:y")
        self.assertEqual(len(h.clock.getDelayedCalls()), before + 1)
        h.clock.advance(5)
        failures = [result(d) for d in silent[0::2]]
        self.assertEqual({str(f.value) for f in failures},
                         {"no response within 5s"})
        self.assertEqual([d.called for d in silent[1::2]], [False] * 50)
        h.clock.advance(1)
        self.assertEqual({str(result(d).value) for d in silent[1::2]},
                         {"no response within 6s"})
        self.assertEqual(c.connection.pendingRequests, {})
        self.assertEqual(len(h.clock.getDelayedCalls()), before)

    def queuedAcrossResumption(self, h, cf):
        """
        A request queued (the transport paused) when the connection dies,
        then a resumed session that sends it again.
        """
        held = []
        h.server.setHandler(0x33, lambda p, m: held.append(m))
        h.server.setHandler(0x34, lambda p, m: None)
        c, s, pump = h.connect(cf)
        c.pauseProducing()
        d = c.request(0x33, b"queued", Flags.REQUIRES_ACK, timeout=10)
        for p in (c, s):
            p.transport.disconnecting = p.transport.disconnected = True
            p.connectionLost(Failure(ConnectionLost("killed")))
        self.assertFalse(d.called)
        c2, s2, pump2 = h.connect(cf)
        self.assertTrue(c2.result.resumed)
        return c, c2, s2, pump2, held, d

    def test_queuedRequestAnsweredOnResumedSession(self):
        """
        The answer to a request the resumed session sent again reaches its
        Deferred, and the old session's timer no longer counts it.
        """
        h = Harness()
        c, c2, s2, pump2, held, d = self.queuedAcrossResumption(
            h, h.clientFactory())
        pump2.flush()
        s2.respond(held[0], b"re:queued")
        pump2.flush()
        self.assertEqual(result(d).payload, b"re:queued")
        self.assertEqual(len(c._requestTimers), 0)

    def test_resumedAnswerKeepsNewTimers(self):
        """
        The same with a request of the new session waiting: that one still
        times out.
        """
        h = Harness()
        c, c2, s2, pump2, held, d = self.queuedAcrossResumption(
            h, h.clientFactory())
        d2 = c2.request(0x34, b"silent", timeout=5)
        pump2.flush()
        s2.respond(held[0], b"re:queued")
        pump2.flush()
        self.assertEqual(result(d).payload, b"re:queued")
        h.clock.advance(5)
        self.assertIsInstance(result(d2).value, RequestTimeout)

    def test_resumedRequestTimesOut(self):
        """
        A request the resumed session sent again, left unanswered, times
        out on its old session's timer and leaves the new connection's
        pending requests: an answer after that is a late one, ignored.
        """
        h = Harness()
        c, c2, s2, pump2, held, d = self.queuedAcrossResumption(
            h, h.clientFactory())
        pump2.flush()
        self.assertEqual(len(c2.connection.pendingRequests), 1)
        h.clock.advance(10)
        self.assertIsInstance(result(d).value, RequestTimeout)
        self.assertEqual(c2.connection.pendingRequests, {})
        s2.respond(held[0], b"too late")
        pump2.flush()
        self.assertEqual(c2.connection.state, "OPEN")

    def test_handlerRaises(self):
        """
        A handler's exception is answered with APPLICATION_ERROR and a
        generic reason: its text (a path, a query, a secret) never reaches
        the peer.  The traceback is logged at error level, not critical.
        """
        h = Harness()

        def boom(p, m):
            raise ValueError("secret path /srv/db")

        h.server.setHandler(0x33, boom)
        h.server.setHandler(0x34, lambda p, m: fail(KeyError("sk-123")))
        c, s, pump = h.connect()
        events = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for messageType, error in ((0x33, ValueError), (0x34, KeyError)):
            d = c.request(messageType, b"x")
            pump.flush()
            f = result(d)
            self.assertIsInstance(f.value, PeerError)
            self.assertEqual(f.value.code, XTMPErrorCode.APPLICATION_ERROR)
            self.assertEqual(f.value.reason, "the handler for message type "
                             "%#x failed" % (messageType,))
            self.assertEqual(len(self.flushLoggedErrors(error)), 1)
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 2)
        self.assertEqual({e["log_level"] for e in failures}, {LogLevel.error})
        self.assertEqual(c.connection.state, "OPEN")

    def test_applicationError(self):
        """
        L{ApplicationError} carries a reason (and optionally a code) meant
        for the peer; nothing is logged as a failure.
        """
        h = Harness()

        def refuse(p, m):
            raise ApplicationError("insufficient funds")

        def later(p, m):
            return fail(ApplicationError("no such wallet", code=0x1001))

        h.server.setHandler(0x33, refuse)
        h.server.setHandler(0x34, later)
        c, s, pump = h.connect()
        d1, d2 = c.request(0x33, b"x"), c.request(0x34, b"y")
        pump.flush()
        e1, e2 = result(d1).value, result(d2).value
        self.assertEqual((e1.code, e1.reason),
                         (XTMPErrorCode.APPLICATION_ERROR,
                          "insufficient funds"))
        self.assertEqual((e2.code, e2.reason), (0x1001, "no such wallet"))
        self.assertEqual(str(e2), "APPLICATION(4097): no such wallet")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_applicationErrorCodes(self):
        """
        Only APPLICATION_ERROR, UNAUTHORIZED and the application range are
        codes a handler may answer with.
        """
        ApplicationError("x", XTMPErrorCode.UNAUTHORIZED)
        ApplicationError("x", 0xFFFF)
        for code in (XTMPErrorCode.BAD_MAGIC, XTMPErrorCode.NONE, 0x0FFF,
                     0x10000):
            self.assertRaises(ValueError, ApplicationError, "x", code)

    def test_streamCallbackRaises(self):
        """
        A failing stream callback is logged at error level; the session,
        and the other callbacks, go on.
        """
        h = Harness()
        c, s, pump = h.connect()
        got = []

        def bad(message):
            raise RuntimeError("oops")

        c.subscribe("s", bad)
        c.subscribe("s", lambda m: got.append(m.payload))
        pump.flush()
        h.server.publish("s", b"one")
        h.server.publish("s", b"two")
        pump.flush()
        self.assertEqual(got, [b"one", b"two"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(c.connection.state, "OPEN")
        self.assertFalse(pump.clientIO.disconnected)

    def test_controlTypesRefused(self):
        """
        The application cannot send XTMP's own control messages.
        """
        h = Harness()
        c, s, pump = h.connect()
        for t in (MessageType.Heartbeat, MessageType.Subscribe,
                  MessageType.KeyUpdate):
            self.assertRaises(XTMPLocalError, c.send, t, b"x" * 8)
            self.assertIsInstance(result(c.request(t, b"x")).value,
                                  XTMPLocalError)

    def test_unknownType(self):
        h = Harness()
        c, s, pump = h.connect()
        d = c.request(0x77, b"x")
        pump.flush()
        self.assertEqual(result(d).value.code, XTMPErrorCode.UNKNOWN_TYPE)
        errors = []
        c.errorReceived = lambda code, reason: errors.append(code)
        c.send(0x77, b"y")
        pump.flush()
        self.assertEqual(errors, [XTMPErrorCode.UNKNOWN_TYPE])

    def test_consumerWrite(self):
        h = Harness()
        got = []
        h.server.setHandler(0x80, lambda p, m: got.append(m.payload))
        c, s, pump = h.connect()
        c.write(b"via IConsumer")
        pump.flush()
        self.assertEqual(got, [b"via IConsumer"])

    def test_disconnect(self):
        h = Harness()
        c, s, pump = h.connect()
        closed = c.whenClosed()
        serverClosed = s.whenClosed()
        c.disconnect()
        pump.flush()
        self.assertIsInstance(result(closed), ConnectionDone)
        self.assertIsInstance(result(serverClosed), ConnectionDone)
        self.assertNotIn(s.sessionId, h.server.live)

    def test_disconnectFlushesQueue(self):
        """
        A clean disconnect sends what the paused transport had queued.
        """
        h = Harness()
        c, s, pump = h.connect()
        c.pauseProducing()
        c.send(0x10, b"queued")
        c.disconnect()
        pump.flush()
        self.assertEqual(h.got, [b"queued"])

    def test_cancelQueuedRequest(self):
        """
        A request cancelled before it left the queue ignores its response.
        """
        h = Harness()
        c, s, pump = h.connect()
        c.pauseProducing()
        d = c.request(0x30, b"never mind")
        d.cancel()
        c.resumeProducing()
        pump.flush()
        self.assertEqual(c.connection.pendingRequests, {})
        self.assertIsInstance(result(d).value, CancelledError)

    def test_requestQueueFull(self):
        h = Harness()
        c, s, pump = h.connect(h.clientFactory(maxQueuedBytes=1000))
        c.pauseProducing()
        d = c.request(0x30, b"x" * 2000)
        self.assertIsInstance(result(d).value, SendQueueFull)

    def test_heartbeatAfterQuickHandshake(self):
        """
        With a short heartbeat interval, the first heartbeat is not held
        back by the handshake timer.
        """
        h = Harness(heartbeatInterval=1)
        c, s, pump = h.connect(h.clientFactory(heartbeatInterval=1))
        for _ in range(24):
            h.clock.advance(0.5)
            pump.flush()
        self.assertEqual(c.connection.state, "OPEN")
        self.assertEqual(s.connection.state, "OPEN")

    def test_pendingRequestFailsOnLoss(self):
        h = Harness()
        h.server.setHandler(0x32, lambda p, m: None)
        c, s, pump = h.connect()
        d = c.request(0x32, b"x")
        pump.flush()
        c.connectionLost(Failure(ConnectionLost()))
        self.assertIsInstance(result(d).value, ConnectionLost)

    def test_logEvents(self):
        h = Harness()
        events = []
        c, s, pump = h.connect(greet=False)
        s.log = Logger(observer=events.append)
        pump.flush()
        (ev,) = [e for e in events if "handshake complete" in e["log_format"]]
        self.assertEqual(ev["sessionId"], s.sessionId)
        self.assertEqual(ev["peer"], CLIENT_IDENTITY.public)
        self.assertEqual(ev["cipher"], "AES-256-GCM")

    def test_logNames(self):
        """
        Logs name ciphers and error codes, never their numbers.
        """
        from twisted.logger import formatEvent
        from muxframe.xtmp import Cipher
        h = Harness(ciphers=(Cipher.CHACHA20_POLY1305,))
        events = []
        c, s, pump = h.connect(h.clientFactory(
            ciphers=(Cipher.CHACHA20_POLY1305,)), greet=False)
        s.log = Logger(observer=events.append)
        pump.flush()
        c2, s2, pump2 = h.connect(h.clientFactory(
            identity=Identity.generate()), greet=False)
        s2.log = Logger(observer=events.append)
        pump2.flush()
        text = [formatEvent(e) for e in events]
        self.assertTrue(any("cipher ChaCha20-Poly1305" in t for t in text),
                        text)
        failed = [e for e in events if "failed" in e["log_format"]]
        self.assertEqual([e["code"] for e in failed], ["UNAUTHORIZED"])
        self.assertIn("UNAUTHORIZED: client key is not authorized",
                      formatEvent(failed[0]))

    def test_noAnswerToPeerError(self):
        """
        A side that receives its peer's fatal Error during the handshake
        closes without answering it.
        """
        h = Harness()
        c, s, pump = h.connect(greet=False)
        pump.clientIO.getOutBuffer()
        pump.serverIO.bufferReceived(encodePlain(
            MessageType.Error, 0, 0, 0, b"\x00\x0fnothing in common"))
        self.assertFalse(pump.serverIO.getOutBuffer())
        pump.flush()
        self.assertTrue(pump.serverIO.disconnected)
        why = result(s.whenHandshakeDone()).value
        self.assertIsInstance(why, PeerError)
        self.assertEqual(why.code, XTMPErrorCode.UNSUPPORTED)

    def test_repliesOutrunReading(self):
        """
        A peer whose requests outrun its reading of their answers (the
        answers no longer fit the send buffers) is closed RATE_LIMITED,
        instead of an exception escaping C{dataReceived}.
        """
        h = Harness(maxQueuedBytes=40000)
        h.server.setHandler(0x35, lambda p, m: b"r" * 10000)
        c, s, pump = h.connect()
        closed = c.whenClosed()
        s.pauseProducing()  # the server's transport stopped taking bytes
        for _ in range(8):
            c.request(0x35, b"?").addErrback(lambda f: None)
        pump.flush()
        why = result(closed)
        self.assertIsInstance(why, PeerDisconnected)
        self.assertEqual(why.code, XTMPErrorCode.RATE_LIMITED)
        self.assertEqual(result(s.whenClosed()).code,
                         XTMPErrorCode.RATE_LIMITED)

    def test_sessionReadyHook(self):
        """
        sessionReady runs on both sides once the handshake is complete.
        """
        h = Harness()
        ready = []
        from muxframe.xtmp import XTMPProtocol

        class Ready(XTMPProtocol):
            def sessionReady(self):
                ready.append(self.sessionId)

        h.server.protocol = Ready
        cf = h.clientFactory()
        cf.protocol = Ready
        c, s, pump = h.connect(cf)
        self.assertEqual(ready, [c.sessionId, c.sessionId])

    def test_tokenAuth(self):
        h = Harness(checkToken=lambda t: t == b"letmein")
        c, s, pump = h.connect(h.clientFactory(identity=None,
                                               token=b"letmein"))
        self.assertIs(result(s.whenHandshakeDone()), s)
        self.assertEqual(s.result.token, b"letmein")

    def test_rehandshakeOverProtocol(self):
        h = Harness(rotationInterval=100)
        c, s, pump = h.connect(h.clientFactory(rotationInterval=100))
        old = c.connection.sendKey.key
        for _ in range(4):
            h.clock.advance(25)
            pump.flush()
        self.assertNotEqual(c.connection.sendKey.key, old)
        d = c.request(0x30, b"after")
        pump.flush()
        self.assertEqual(result(d).payload, b"pong:after")


class RejectionTests(SynchronousTestCase):
    """
    Each attack is rejected with the documented code, the connection is
    closed, and another session on the same server is unaffected.
    """

    def attack(self, tamper, expected, code, h=None):
        h = h or Harness()
        other, otherServer, otherPump = h.connect()
        c, s, pump = h.connect()
        clientClosed, serverClosed = c.whenClosed(), s.whenClosed()
        c.send(0x10, b"first!" * 10)
        c.send(0x10, b"second" * 10)
        wire = pump.clientIO.getOutBuffer()
        pump.serverIO.bufferReceived(tamper(wire, c, h))
        pump.flush()
        why = result(serverClosed)
        self.assertIsInstance(why, expected)
        self.assertEqual(why.code, code)
        theirs = result(clientClosed)
        self.assertIsInstance(theirs, PeerDisconnected)
        self.assertEqual(theirs.code, code)
        self.assertTrue(pump.serverIO.disconnected)
        self.assertNotIn(s.sessionId, h.server.live)
        d = other.request(0x30, b"still here")
        otherPump.flush()
        self.assertEqual(result(d).payload, b"pong:still here")
        return h

    def test_tamperedByte(self):
        """
        A flipped bit in each region of an encrypted message is rejected
        with the code docs/xtmp.md gives for that region.
        """
        from muxframe.xtmp import (
            BadFlags, BadMagic, BadVersion, MalformedMessage,
            MessageTooLarge, NonceMismatch,
        )
        table = [
            (0, BadMagic, XTMPErrorCode.BAD_MAGIC),
            (4, BadVersion, XTMPErrorCode.BAD_VERSION),
            (5, DecryptionFailed, XTMPErrorCode.DECRYPT_FAILED),
            (6, BadFlags, XTMPErrorCode.BAD_FLAGS),
            (9, MalformedMessage, XTMPErrorCode.PROTOCOL_ERROR),
            (17, SequenceError, XTMPErrorCode.BAD_SEQUENCE),
            (25, MessageTooLarge, XTMPErrorCode.MESSAGE_TOO_LARGE),
            (29, DecryptionFailed, XTMPErrorCode.DECRYPT_FAILED),
            (32, MalformedMessage, XTMPErrorCode.PROTOCOL_ERROR),
            (33, MalformedMessage, XTMPErrorCode.PROTOCOL_ERROR),
            (36, WrongKey, XTMPErrorCode.WRONG_KEY),
            (40, WrongKey, XTMPErrorCode.WRONG_KEY),
            (56, NonceMismatch, XTMPErrorCode.BAD_NONCE),
            (70, MalformedMessage, XTMPErrorCode.PROTOCOL_ERROR),
            (85, DecryptionFailed, XTMPErrorCode.DECRYPT_FAILED),
            (100, DecryptionFailed, XTMPErrorCode.DECRYPT_FAILED),
            (155, DecryptionFailed, XTMPErrorCode.DECRYPT_FAILED),
        ]
        for offset, error, code in table:
            def flip(wire, c, h, offset=offset):
                b = bytearray(wire)
                b[offset] ^= 0x40
                return bytes(b)

            self.attack(flip, error, code)
            self.assertEqual(self.flushLoggedErrors(), [])

    def test_replay(self):
        self.attack(lambda w, c, h: w[:len(w) // 2] * 2, SequenceError,
                    XTMPErrorCode.BAD_SEQUENCE)

    def test_reorder(self):
        self.attack(lambda w, c, h: w[len(w) // 2:] + w[:len(w) // 2],
                    SequenceError, XTMPErrorCode.BAD_SEQUENCE)

    def test_wrongKey(self):
        def foreign(wire, c, h):
            o, os_, op = h.connect()
            o.connection.sessionId = c.sessionId
            o.send(0x10, b"forged")
            return op.clientIO.getOutBuffer()

        self.attack(foreign, WrongKey, XTMPErrorCode.WRONG_KEY)

    def test_oversizedLength(self):
        def big(wire, c, h):
            return HEADER.pack(b"XTMP", 1, 0x10, 1, c.sessionId, 0,
                               (1 << 20) + 1, 0)

        from muxframe.xtmp import MessageTooLarge
        self.attack(big, MessageTooLarge, XTMPErrorCode.MESSAGE_TOO_LARGE)

    def test_unauthorizedClient(self):
        h = Harness()
        other, _, otherPump = h.connect()
        c, s, pump = h.connect(h.clientFactory(identity=Identity.generate()))
        self.assertIsInstance(result(s.whenHandshakeDone()).value, Unauthorized)
        why = result(c.whenClosed())
        self.assertIsInstance(why, PeerDisconnected)
        self.assertEqual(why.code, XTMPErrorCode.UNAUTHORIZED)
        d = other.request(0x30, b"ok")
        otherPump.flush()
        self.assertEqual(result(d).payload, b"pong:ok")

    def test_downgrade(self):
        """
        An offer stripped in transit: the client detects it, reports
        DOWNGRADE to the server, and both close.
        """
        h = Harness()
        c, s, pump = h.connect(greet=False)
        raw = pump.clientIO.getOutBuffer()
        f = Decoder().feed(raw)[0]
        hello = ClientHello.decode(f.payload)
        hello.ciphers = hello.ciphers[1:]
        pump.serverIO.bufferReceived(encodePlain(1, 0, 0, 0, hello.encode()))
        pump.flush()
        self.assertIsInstance(result(c.whenHandshakeDone()).value,
                              DowngradeDetected)
        serverFail = result(s.whenHandshakeDone()).value
        self.assertIsInstance(serverFail, PeerError)
        self.assertEqual(serverFail.code, XTMPErrorCode.DOWNGRADE)
        self.assertTrue(pump.clientIO.disconnected)

    def test_truncatedHandshake(self):
        h = Harness()
        c, s, pump = h.connect(greet=False)
        raw = pump.clientIO.getOutBuffer()
        pump.serverIO.bufferReceived(raw[:100])
        s.connectionLost(Failure(ConnectionLost()))
        f = result(s.whenHandshakeDone()).value
        self.assertIsInstance(f, HandshakeFailed)
        self.assertIn("during the handshake", str(f))

    def test_handshakeTimeout(self):
        h = Harness()
        c, s, pump = h.connect(greet=False)
        pump.clientIO.getOutBuffer()
        h.clock.advance(10)
        pump.flush()
        self.assertIsInstance(result(s.whenHandshakeDone()).value, XTMPTimeout)
        self.assertTrue(pump.serverIO.disconnected)

    def test_silentPeer(self):
        h = Harness()
        c, s, pump = h.connect()
        closed = s.whenClosed()
        h.clock.advance(30)
        pump.clientIO.getOutBuffer()
        pump.serverIO.getOutBuffer()
        h.clock.advance(30)
        pump.flush()
        self.assertIsInstance(result(closed), XTMPTimeout)

    def test_heartbeatsKeepAlive(self):
        h = Harness()
        c, s, pump = h.connect()
        for _ in range(10):
            h.clock.advance(15)
            pump.flush()
        self.assertFalse(pump.serverIO.disconnected)
        self.assertEqual(c.connection.state, "OPEN")

    def test_idleTimeout(self):
        h = Harness(sessionTimeout=120)
        c, s, pump = h.connect()
        closed = c.whenClosed()
        for _ in range(8):
            h.clock.advance(15)
            pump.flush()
        self.assertEqual(result(closed).code, XTMPErrorCode.IDLE_TIMEOUT)


@implementer(IPushProducer)
class Producer:
    def __init__(self):
        self.events = []

    def pauseProducing(self):
        self.events.append("pause")

    def resumeProducing(self):
        self.events.append("resume")

    def stopProducing(self):
        self.events.append("stop")


class BackpressureTests(SynchronousTestCase):
    """
    Bounded send queues, priorities under pressure, slow readers.
    """

    def test_pausedTransportQueuesInPriorityOrder(self):
        h = Harness()
        order = []
        h.server.setHandler(0x10, lambda p, m: order.append(m.payload))
        c, s, pump = h.connect()
        c.pauseProducing()
        c.send(0x10, b"n")
        c.send(0x10, b"h", Flags.PRIORITY_HIGH)
        c.send(0x10, b"e", Flags.EMERGENCY)
        pump.flush()
        self.assertEqual(order, [])
        c.resumeProducing()
        pump.flush()
        self.assertEqual(order, [b"e", b"h", b"n"])

    def test_producerPausedAndQueueBounded(self):
        h = Harness()
        c, s, pump = h.connect(h.clientFactory(maxQueuedBytes=10000))
        producer = Producer()
        c.registerProducer(producer, True)
        c.pauseProducing()
        for _ in range(5):
            c.send(0x10, b"x" * 1000)
        self.assertEqual(producer.events, ["pause"])
        for _ in range(4):
            c.send(0x10, b"x" * 1000)
        self.assertRaises(SendQueueFull, c.send, 0x10, b"x" * 1000)
        c.resumeProducing()
        self.assertEqual(producer.events, ["pause", "resume"])
        pump.flush()
        self.assertEqual(len(h.got), 9)

    def test_documentedThresholds(self):
        """
        docs/xtmp.md section 9.5, number by number: each message counts
        its data + 32 bytes; unacknowledged REQUIRES_ACK messages count
        after they are written; the producer is paused above half of
        maxQueuedBytes and resumed at a quarter; a send past the limit
        raises and sends nothing; a request fails its Deferred instead.
        """
        h = Harness()
        c, s, pump = h.connect(h.clientFactory(maxQueuedBytes=4000))
        producer = Producer()
        c.registerProducer(producer, True)
        c.send(0x10, b"a" * 968, Flags.REQUIRES_ACK)
        self.assertEqual(c.bufferedBytes, 1000)  # written, not yet acked
        pump.flush()
        self.assertEqual(c.bufferedBytes, 0)
        c.pauseProducing()
        c.send(0x10, b"b" * 968)
        c.send(0x10, b"c" * 968)
        self.assertEqual((c.bufferedBytes, producer.events), (2000, []))
        c.send(0x10, b"d")
        self.assertEqual(producer.events, ["pause"])
        c.send(0x10, b"e" * 1935)
        self.assertEqual(c.bufferedBytes, 4000)
        self.assertRaises(SendQueueFull, c.send, 0x10, b"")
        self.assertIsInstance(result(c.request(0x30, b"")).value,
                              SendQueueFull)
        self.assertEqual(c.bufferedBytes, 4000)
        c.resumeProducing()
        self.assertEqual(producer.events, ["pause", "resume"])
        pump.flush()
        self.assertEqual(len(h.got), 5)

    def test_controlStillFlowsWhilePaused(self):
        h = Harness()
        c, s, pump = h.connect()
        s.pauseProducing()
        c.send(0x10, b"a", Flags.REQUIRES_ACK)
        pump.flush()
        self.assertEqual(len(c.connection.resumption.unacked), 0)

    def test_slowReader(self):
        """
        pauseDelivery stops reading from the transport; what arrives is
        held and delivered in order on resumeDelivery.
        """
        h = Harness()
        c, s, pump = h.connect()
        s.pauseDelivery()
        self.assertEqual(pump.serverIO.producer, s)
        c.send(0x10, b"1")
        c.send(0x10, b"2")
        pump.flush()
        self.assertEqual(h.got, [])
        s.resumeDelivery()
        self.assertEqual(h.got, [b"1", b"2"])


class StreamTests(SynchronousTestCase):
    """
    Subscribe/Unsubscribe and STREAM_DATA fan-out.
    """

    def test_fanOut(self):
        h = Harness()
        (a, _, pa), (b, _, pb) = h.connect(), h.connect()
        got = []
        da = a.subscribe("prices", lambda m: got.append(("a", m.payload)))
        db = b.subscribe("prices", lambda m: got.append(("b", m.payload)))
        pa.flush()
        pb.flush()
        self.assertEqual(result(da).type, MessageType.Subscribe)
        self.assertIsNotNone(result(db))
        self.assertEqual(h.server.publish("prices", b"42"), 2)
        pa.flush()
        pb.flush()
        self.assertEqual(sorted(got), [("a", b"42"), ("b", b"42")])
        a.unsubscribe("prices")
        pa.flush()
        self.assertEqual(h.server.publish("prices", b"43"), 1)

    def test_relay(self):
        h = Harness(relayStreams=True)
        (a, _, pa), (b, _, pb) = h.connect(), h.connect()
        got = []
        b.subscribe("chat", lambda m: got.append(m.payload))
        pb.flush()
        a.publish("chat", b"hi all")
        pa.flush()
        pb.flush()
        self.assertEqual(got, [b"hi all"])

    def test_refused(self):
        h = Harness()
        h.server.authorizeSubscribe = lambda p, name: name != "secret"
        c, s, pump = h.connect()
        d = c.subscribe("secret", lambda m: None)
        pump.flush()
        self.assertEqual(result(d).value.code, XTMPErrorCode.UNAUTHORIZED)

    def test_serverSubscribesToClient(self):
        """
        Either side may subscribe to the other's streams (docs/xtmp.md
        section 9.6): a server session subscribes to a client's stream and
        the client's factory publishes to it.
        """
        h = Harness()
        c, s, pump = h.connect()
        got = []
        d = s.subscribe("client.status", lambda m: got.append(m.payload))
        pump.flush()
        self.assertEqual(result(d).type, MessageType.Subscribe)
        self.assertEqual(c.factory.publish("client.status", b"up"), 1)
        pump.flush()
        self.assertEqual(got, [b"up"])

    def test_lostSessionUnsubscribed(self):
        h = Harness()
        c, s, pump = h.connect()
        c.subscribe("x", lambda m: None)
        pump.flush()
        self.assertEqual(h.server.streams.subscribers("x"), [s])
        c.disconnect()
        pump.flush()
        self.assertEqual(h.server.streams.subscribers("x"), [])


class ResumptionTests(SynchronousTestCase):
    """
    Acknowledged messages survive a connection killed mid-stream.
    """

    def kill(self, c, s):
        for p in (c, s):
            p.transport.disconnecting = p.transport.disconnected = True
            p.connectionLost(Failure(ConnectionLost("killed")))

    def test_exactlyOnceAfterKill(self):
        h = Harness()
        toClient = []
        cf = h.clientFactory()
        cf.setHandler(0x11, lambda p, m: toClient.append(m.payload))
        c, s, pump = h.connect(cf)
        sent = [b"m%02d" % i for i in range(40)]
        back = [b"r%02d" % i for i in range(10)]
        # Phase 1: ten messages each way, delivered and acknowledged.
        for m in sent[:10]:
            c.send(0x10, m, Flags.REQUIRES_ACK)
        for m in back[:5]:
            s.send(0x11, m, Flags.REQUIRES_ACK)
        pump.flush()
        self.assertEqual(len(c.connection.resumption.unacked), 0)
        # Phase 2: the rest; part of each direction arrives (cut in the
        # middle of a message) and every Ack for it is lost.
        for m in sent[10:]:
            c.send(0x10, m, Flags.REQUIRES_ACK)
        for m in back[5:]:
            s.send(0x11, m, Flags.REQUIRES_ACK)
        up = pump.clientIO.getOutBuffer()
        down = pump.serverIO.getOutBuffer()
        pump.serverIO.bufferReceived(up[:len(up) // 2 + 7])
        pump.clientIO.bufferReceived(down[:len(down) // 2 + 7])
        pump.clientIO.getOutBuffer()
        pump.serverIO.getOutBuffer()
        delivered = len(h.got)
        self.assertTrue(10 < delivered < 40)
        self.assertTrue(5 < len(toClient) < 10)
        self.assertEqual(len(c.connection.resumption.unacked), 30)
        sessionId = c.sessionId
        self.kill(c, s)

        c2, s2, pump2 = h.connect(cf)
        self.assertTrue(c2.result.resumed)
        self.assertEqual(c2.sessionId, sessionId)
        pump2.flush()
        self.assertEqual(h.got, sent)
        self.assertEqual(toClient, back)
        # What the server had already delivered came again and was dropped.
        self.assertEqual(c2.counters.resent, 30)
        self.assertEqual(s2.counters.duplicatesDropped, delivered - 10)
        self.assertEqual(s2.counters.messagesReceived, 40 - delivered)
        self.assertEqual(len(c2.connection.resumption.unacked), 0)
        self.assertEqual(len(s2.connection.resumption.unacked), 0)

    def test_subscriptionsNotRestored(self):
        """
        Subscriptions belong to the connection: a resumed session has
        none until the client subscribes again (docs/xtmp.md section 9.3).
        """
        h = Harness()
        cf = h.clientFactory()
        c, s, pump = h.connect(cf)
        got = []
        c.subscribe("news", lambda m: got.append(m.payload))
        pump.flush()
        self.assertEqual(h.server.streams.subscribers("news"), [s])
        c.send(0x10, b"pending", Flags.REQUIRES_ACK)
        pump.clientIO.getOutBuffer()  # lost: something to resume
        self.kill(c, s)
        c2, s2, pump2 = h.connect(cf)
        self.assertTrue(c2.result.resumed)
        self.assertEqual(h.server.streams.subscribers("news"), [])
        self.assertEqual(h.server.publish("news", b"lost"), 0)
        c2.subscribe("news", lambda m: got.append(m.payload))
        pump2.flush()
        h.server.publish("news", b"again")
        pump2.flush()
        self.assertEqual(got, [b"again"])

    def test_queuedMessagesSurviveKill(self):
        """
        Acknowledged messages still waiting in a paused transport's queue
        when the connection dies are sent after resumption.
        """
        h = Harness()
        cf = h.clientFactory()
        c, s, pump = h.connect(cf)
        c.pauseProducing()
        for i in range(5):
            c.send(0x10, b"q%d" % i, Flags.REQUIRES_ACK)
        c.send(0x10, b"lost: no REQUIRES_ACK")
        self.kill(c, s)
        c2, s2, pump2 = h.connect(cf)
        pump2.flush()
        self.assertTrue(c2.result.resumed)
        self.assertEqual(h.got, [b"q%d" % i for i in range(5)])

    def test_prioritiesAcrossResumption(self):
        """
        Acknowledged messages of every priority, some delivered and some
        not when the connection dies, plus new urgent ones sent before the
        new handshake completes: each arrives exactly once.
        """
        h = Harness()
        cf = h.clientFactory()
        c, s, pump = h.connect(cf)
        flags = [Flags.REQUIRES_ACK, Flags.REQUIRES_ACK | Flags.EMERGENCY,
                 Flags.REQUIRES_ACK | Flags.PRIORITY_HIGH]
        sent = [b"a%02d" % i for i in range(30)]
        c.pauseProducing()
        for i, m in enumerate(sent):
            c.send(0x10, m, flags[i % 3])
        c.resumeProducing()
        up = pump.clientIO.getOutBuffer()
        pump.serverIO.bufferReceived(up[:len(up) // 2 + 5])
        pump.serverIO.getOutBuffer()
        self.kill(c, s)
        c2 = cf.buildProtocol(None)
        s2 = h.server.buildProtocol(None)
        from twisted.test.iosim import connect as ioconnect
        pump2 = ioconnect(s2, makeFakeServer(s2), c2, makeFakeClient(c2),
                          greet=False, clock=h.clock)
        late = [b"late%d" % i for i in range(3)]
        for m in late:
            c2.send(0x10, m, Flags.REQUIRES_ACK | Flags.EMERGENCY)
        pump2.flush()
        self.assertTrue(c2.result.resumed)
        self.assertEqual(sorted(h.got), sorted(sent + late))
        self.assertEqual(len(h.got), len(set(h.got)))
        self.assertEqual(c2.connection.resumption.pending(), [])

    def test_resumeReplacesHalfOpenConnection(self):
        """
        A client that lost its connection resumes while the server still
        thinks the old one is up: the server drops the old one.
        """
        h = Harness()
        cf = h.clientFactory()
        c, s, pump = h.connect(cf)
        c.send(0x10, b"unacked", Flags.REQUIRES_ACK)
        pump.clientIO.getOutBuffer()
        c.transport.disconnecting = c.transport.disconnected = True
        c.connectionLost(Failure(ConnectionLost("client side only")))
        c2, s2, pump2 = h.connect(cf)
        pump2.flush()
        self.assertTrue(c2.result.resumed)
        self.assertIs(h.server.live[c2.sessionId], s2)
        self.assertTrue(s.transport.disconnecting)
        self.assertEqual(h.got, [b"unacked"])

    def test_responseNotResentAfterResumption(self):
        """
        An acknowledged response still unacknowledged when the connection
        dies is not resent on the resumed one: its request failed with the
        old connection, and its request id (sequence 0 under the first
        key) would name the new connection's first request.
        """
        h = Harness()
        held = []
        h.server.setHandler(0x33, lambda p, m: held.append(m))
        cf = h.clientFactory()
        c, s, pump = h.connect(cf)
        d1 = c.request(0x33, b"one")
        pump.flush()
        (m1,) = held
        s.respond(m1, b"re:one", flags=Flags.REQUIRES_ACK)
        pump.serverIO.getOutBuffer()
        self.kill(c, s)
        self.assertIsInstance(result(d1).value, ConnectionLost)

        c2, s2, pump2 = h.connect(cf)
        self.assertTrue(c2.result.resumed)
        d2 = c2.request(0x33, b"two")
        pump2.flush()
        m2 = held[1]
        self.assertEqual(m2.requestId, m1.requestId)
        self.assertIsNone(result(d2))
        self.assertEqual(s2.connection.resumption.pending(), [])
        s2.respond(m2, b"re:two")
        pump2.flush()
        self.assertEqual(result(d2).payload, b"re:two")
        self.assertEqual(c2.counters.unmatchedResponses, 0)

    def test_resumeRefusedForOtherPeer(self):
        h = Harness(authorizedKeys=[CLIENT_IDENTITY.public,
                                    SERVER_IDENTITY.public])
        cf = h.clientFactory()
        c, s, pump = h.connect(cf)
        c.send(0x10, b"x", Flags.REQUIRES_ACK)
        self.kill(c, s)
        thief = h.clientFactory(identity=SERVER_IDENTITY)
        thief.resumable = list(cf.resumable)
        c2, s2, pump2 = h.connect(thief)
        self.assertIsInstance(result(s2.whenHandshakeDone()).value, Unauthorized)

    def test_unknownSessionStartsFresh(self):
        h = Harness()
        cf = h.clientFactory()
        c, s, pump = h.connect(cf)
        c.send(0x10, b"x", Flags.REQUIRES_ACK)
        pump.clientIO.getOutBuffer()
        self.kill(c, s)
        h.server.sessions.clear()
        c2, s2, pump2 = h.connect(cf)
        self.assertFalse(c2.result.resumed)
        pump2.flush()
        self.assertEqual(h.got, [b"x"])


class KeyChangeRequestTests(SynchronousTestCase):
    """
    A request pending across a key change (KeyUpdate or re-handshake) gets
    its own response, even when a newer request with the same raw sequence
    number is pending too (docs/xtmp.md section 9.4); responses naming no
    pending request are dropped and counted.
    """

    def setUp(self):
        self.h = Harness()
        self.held = []

        def hold(protocol, message):
            # Answer later, when the test says: the responses must cross
            # the key change.
            d = Deferred()
            self.held.append((message, d))
            return d

        self.hold = hold
        self.h.server.setHandler(0x33, hold)
        cf = self.h.clientFactory()
        cf.setHandler(0x33, hold)
        self.c, self.s, self.pump = self.h.connect(cf)

    def crossKeyChange(self, requester, changeKeys):
        """
        C{requester} sends request C{one} as its first traffic message,
        C{changeKeys()} moves its send direction to a new key, then it sends
        request C{two} as the first message under that key: both have
        sequence number 0.  The peer answers C{one} first, then C{two}.
        """
        self.pump.flush()
        d1 = requester.request(0x33, b"one")
        self.pump.flush()
        changeKeys()
        self.pump.flush()
        d2 = requester.request(0x33, b"two")
        self.pump.flush()
        (m1, r1), (m2, r2) = self.held
        self.assertEqual((m1.payload, m2.payload), (b"one", b"two"))
        self.assertEqual((m1.sequence, m2.sequence), (0, 0))
        r1.callback(b"re:one")
        self.pump.flush()
        self.assertEqual(result(d1).payload, b"re:one")
        self.assertIsNone(result(d2))
        r2.callback(b"re:two")
        self.pump.flush()
        self.assertEqual(result(d2).payload, b"re:two")
        self.assertNotEqual(m1.requestId, m2.requestId)
        for p in (self.c, self.s):
            self.assertEqual(p.connection.pendingRequests, {})
            self.assertEqual(p.counters.unmatchedResponses, 0)

    def test_clientRequestAcrossKeyUpdate(self):
        self.crossKeyChange(self.c, self.c.connection._keyUpdate)
        self.assertEqual(self.s.connection.receiveKey.epoch, 1)

    def test_serverRequestAcrossKeyUpdate(self):
        self.crossKeyChange(self.s, self.s.connection._keyUpdate)
        self.assertEqual(self.c.connection.receiveKey.epoch, 1)

    def test_keyUpdateByCount(self):
        """
        The same, with the KeyUpdate forced by C{keyUpdateMessages}.
        """
        h = Harness()
        h.server.setHandler(0x33, self.hold)
        self.c, self.s, self.pump = h.connect(
            h.clientFactory(keyUpdateMessages=1))
        self.crossKeyChange(self.c, lambda: None)
        self.assertEqual(self.c.counters.keyUpdates, 1)

    def rehandshake(self):
        """
        Start a re-handshake now (as C{rotationInterval} would, without the
        Heartbeats that advancing the clock sends).
        """
        self.assertTrue(self.c.connection.startRehandshake())
        self.c._flush()

    def test_clientRequestAcrossRehandshake(self):
        """
        A re-handshake restarts epochs and sequence numbers at 0: only the
        key generation tells the two requests apart.
        """
        self.crossKeyChange(self.c, self.rehandshake)
        self.assertEqual(self.c.counters.rehandshakes, 1)
        self.assertEqual(self.s.connection.receiveKey.epoch, 0)

    def test_serverRequestAcrossRehandshake(self):
        self.crossKeyChange(self.s, self.rehandshake)
        self.assertEqual(self.s.counters.rehandshakes, 1)
        self.assertEqual(self.c.connection.receiveKey.epoch, 0)

    def test_lateResponseDropped(self):
        """
        A response arriving after its request timed out matches nothing: it
        is counted in C{unmatchedResponses} and reaches no handler, and the
        session goes on.
        """
        self.pump.flush()
        d = self.c.request(0x33, b"slow", timeout=5)
        self.pump.flush()
        self.h.clock.advance(5)
        self.assertIsInstance(result(d).value, RequestTimeout)
        ((m, r),) = self.held
        r.callback(b"too late")
        self.pump.flush()
        self.assertEqual(self.c.counters.unmatchedResponses, 1)
        self.assertEqual(len(self.held), 1)
        d = self.c.request(0x30, b"next")
        self.pump.flush()
        self.assertEqual(result(d).payload, b"pong:next")

    def test_unknownRequestIdDropped(self):
        """
        A response or Error naming a request id never sent is counted and
        dropped (the Error is still reported to C{errorReceived}).
        """
        errors = []
        self.c.errorReceived = lambda code, reason: errors.append(code)
        self.pump.flush()
        self.s.connection.sendMessage(0x33, b"who?", requestSequence=1 << 32)
        self.s.connection.sendMessage(
            MessageType.Error, b"\x00\x11oops", requestSequence=7)
        self.s.connection.sendMessage(
            MessageType.Subscribe, b"", requestSequence=9)
        self.s._flush()
        self.pump.flush()
        self.assertEqual(self.c.counters.unmatchedResponses, 3)
        self.assertEqual(errors, [17])
        self.assertEqual(self.held, [])
        self.assertEqual(self.c.connection.state, "OPEN")
