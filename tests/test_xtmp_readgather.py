"""
L{muxframe.xtmp.readgather}: the writes XTMP sessions make while a read is
handled are gathered per session and sent every EVENTS_PER_SEND events and
as the read ends, in order; and over real loopback TCP, a read of many
requests is answered in a few sends, the first of them (and the first
forwarded hop's) before the read's handling ends.
"""

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe.server.factory import XTMPServer
from muxframe.xtmp import XTMPClientFactory, connectXTMP
from muxframe.xtmp.codec import MessageType
from muxframe.xtmp.readgather import (
    EVENTS_PER_SEND, GATHER_LIMIT, ReadGather, readGather,
)

from tests.test_directsend import FakeSocket, FakeTCPTransport
from tests.test_server_support import ALICE, BOB, KEYS, SERVER_IDENTITY, config
from tests.test_xtmp_transports import waitFor


class ReadGatherTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.gather = ReadGather(self.clock)
        self.a = (FakeSocket(), FakeTCPTransport())
        self.b = (FakeSocket(), FakeTCPTransport())

    def write(self, key, data):
        sock, transport = getattr(self, key)
        self.gather.write(key, sock, transport, data)

    def test_outsideHandlingSentAtOnce(self):
        """
        A session's first write of a turn outside any handling goes to the
        socket at once.
        """
        self.write("a", b"now")
        self.write("b", b"too")
        self.assertEqual(self.a[0].sent, [b"now"])
        self.assertEqual(self.b[0].sent, [b"too"])
        self.assertFalse(self.gather.gathering)

    def test_burstOutsideHandling(self):
        """
        Outside a handling, what a session writes after its first write of
        a turn is gathered and sent as the turn ends: a burst of 200
        messages is two sends, in order; the next turn's first write goes
        at once again.
        """
        for n in range(200):
            self.write("a", b"%03d" % n)
        self.assertEqual(self.a[0].sent, [b"000"])
        self.clock.advance(0)
        self.assertEqual(self.a[0].sent, [
            b"000", b"".join(b"%03d" % n for n in range(1, 200))])
        self.write("a", b"next")
        self.assertEqual(self.a[0].sent[-1], b"next")
        self.assertEqual(len(self.a[0].sent), 3)

    def test_turnEndAfterHandling(self):
        """
        A handling's end sends what was gathered outside it earlier in the
        turn too, ahead of nothing written later.
        """
        self.write("a", b"1")
        self.write("a", b"2")
        self.gather.handling(lambda: self.write("a", b"3"))
        self.assertEqual(self.a[0].sent, [b"1", b"23"])
        self.write("a", b"4")
        self.assertEqual(self.a[0].sent, [b"1", b"23"])
        self.clock.advance(0)
        self.assertEqual(self.a[0].sent, [b"1", b"23", b"4"])

    def test_emptyWrite(self):
        """
        Writing nothing sends nothing and gathers nothing.
        """
        self.write("a", b"")
        self.gather.handling(lambda: self.write("a", b""))
        self.assertEqual(self.a[0].sent, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_gatheredUntilHandlingEnds(self):
        """
        Writes while a read is handled are held, per session and in order,
        and sent one send per session as the handling returns.
        """
        def handle():
            self.write("a", b"1")
            self.write("b", b"x")
            self.write("a", b"2")
            self.assertTrue(self.gather.gathering)
            self.assertEqual(self.a[0].sent + self.b[0].sent, [])
            return "handled"

        self.assertEqual(self.gather.handling(handle), "handled")
        self.assertEqual(self.a[0].sent, [b"12"])
        self.assertEqual(self.b[0].sent, [b"x"])

    def test_sentWhenHandlingRaises(self):
        """
        A handling that raises still sends what it gathered.
        """
        def handle():
            self.write("a", b"kept")
            raise ValueError("handler bug")

        self.assertRaises(ValueError, self.gather.handling, handle)
        self.assertEqual(self.a[0].sent, [b"kept"])
        self.assertFalse(self.gather.gathering)

    def test_nested(self):
        """
        Only the outermost handling's end sends.
        """
        def inner():
            self.write("a", b"inner")

        def outer():
            self.gather.handling(inner)
            self.assertEqual(self.a[0].sent, [])
            self.write("a", b"+outer")

        self.gather.handling(outer)
        self.assertEqual(self.a[0].sent, [b"inner+outer"])

    def test_sendMidHandling(self):
        """
        L{ReadGather.send} sends everything gathered so far; later writes
        are gathered again.
        """
        def handle():
            self.write("a", b"early")
            self.write("b", b"early")
            self.gather.send()
            self.assertEqual(self.a[0].sent, [b"early"])
            self.assertEqual(self.b[0].sent, [b"early"])
            self.write("a", b"late")
            self.assertEqual(self.a[0].sent, [b"early"])

        self.gather.handling(handle)
        self.assertEqual(self.a[0].sent, [b"early", b"late"])

    def test_limit(self):
        """
        Past GATHER_LIMIT bytes a session's writes are sent at once.
        """
        chunk = b"z" * (GATHER_LIMIT // 4)

        def handle():
            for _ in range(3):
                self.write("a", chunk)
            self.assertEqual(self.a[0].sent, [])
            self.write("a", chunk)
            self.assertEqual(self.a[0].sent, [chunk * 4])

        self.gather.handling(handle)
        self.assertEqual(self.a[0].sent, [chunk * 4])

    def test_sendForAndDiscard(self):
        """
        L{ReadGather.sendFor} sends one session's bytes (before it closes);
        L{ReadGather.discard} drops them (its connection is lost).
        """
        def handle():
            self.write("a", b"bye")
            self.write("b", b"lost")
            self.gather.sendFor("a")
            self.assertEqual(self.a[0].sent, [b"bye"])
            self.gather.discard("b")

        self.gather.handling(handle)
        self.assertEqual(self.a[0].sent, [b"bye"])
        self.assertEqual(self.b[0].sent, [])
        self.assertEqual(self.b[1].written, [])
        # Outside a handling too.
        self.write("b", b"first")
        self.write("b", b"gathered")
        self.gather.discard("b")
        self.clock.advance(0)
        self.assertEqual(self.b[0].sent, [b"first"])

    def test_manySessionsInOrder(self):
        """
        Each of many sessions gets its own bytes, in order, one send each.
        """
        sessions = {n: (FakeSocket(), FakeTCPTransport()) for n in range(500)}

        def handle():
            for part in (b"x", b"y"):
                for n, (sock, transport) in sessions.items():
                    self.gather.write(n, sock, transport, part + b"%d" % n)

        self.gather.handling(handle)
        self.assertEqual([sock.sent for sock, _ in sessions.values()],
                         [[b"x%dy%d" % (n, n)] for n in sessions])

    def test_busyTransportGetsTheBytes(self):
        """
        A session whose transport buffers bytes has its gathered bytes
        written behind them through the transport.
        """
        self.a[1].dataBuffer = b"queued"
        self.gather.handling(lambda: self.write("a", b"next"))
        self.assertEqual(self.a[0].sent, [])
        self.assertEqual(self.a[1].written, [b"next"])


    def test_flushLater(self):
        """
        While a read is handled, L{ReadGather.flushLater} runs a session's
        flush once, however often it is asked, before the gathered bytes
        are sent, and what the flush writes joins them; outside a handling
        it runs at once.
        """
        flushes = []

        def flush():
            flushes.append("a")
            self.write("a", b"flushed")

        def handle():
            self.write("a", b"written,")
            for _ in range(3):
                self.gather.flushLater("a", flush)
            self.assertEqual(flushes, [])
            self.assertEqual(self.a[0].sent, [])

        self.gather.handling(handle)
        self.assertEqual(flushes, ["a"])
        self.assertEqual(self.a[0].sent, [b"written,flushed"])
        self.gather.flushLater("a", flush)
        self.assertEqual(flushes, ["a", "a"])

    def test_flushLaterAtSendPoints(self):
        """
        L{ReadGather.send} in a handling runs the pending flushes first;
        L{ReadGather.sendFor} runs that session's; L{ReadGather.discard}
        drops it.
        """
        flushes = []

        def flusher(key):
            def flush():
                flushes.append(key)
                self.write(key, key.encode("ascii"))
            return flush

        def handle():
            self.gather.flushLater("a", flusher("a"))
            self.gather.send()
            self.assertEqual(self.a[0].sent, [b"a"])
            self.gather.flushLater("a", flusher("a"))
            self.gather.flushLater("b", flusher("b"))
            self.gather.sendFor("b")
            self.assertEqual(self.b[0].sent, [b"b"])
            self.gather.discard("a")

        self.gather.handling(handle)
        self.assertEqual(flushes, ["a", "b"])
        self.assertEqual(self.a[0].sent, [b"a"])
        self.assertEqual(self.b[0].sent, [b"b"])


class FlushRaisesTests(SynchronousTestCase):
    """
    A flush that raises at a send point does not leave the gather on, nor
    drop the other sessions' flushes.
    """

    def test_flushRaises(self):
        gather = ReadGather(Clock())
        ran = []

        def bad():
            raise RuntimeError("a producer's pauseProducing failed")

        def handle():
            gather.flushLater("a", bad)
            gather.flushLater("b", lambda: ran.append("b"))

        self.assertRaises(RuntimeError, gather.handling, handle)
        self.assertFalse(gather.gathering)
        # b's flush ran as the handling ended, the exception going on.
        self.assertEqual(ran, ["b"])


class EngineFlushTests(SynchronousTestCase):
    """
    A session sending while a read is handled leaves what its engine
    encoded for the gather's next send point: on any transport, a read's
    answers are a few transport writes, in order, and never more than
    GATHER_LIMIT bytes wait in the engine.
    """

    def connected(self):
        from tests.test_xtmp_protocol import Harness
        h = Harness()
        c, s, pump = h.connect()
        pump.flush()
        writes = []
        real = s.transport.write

        def write(data):
            writes.append(len(data))
            real(data)

        s.transport.write = write
        return h, c, s, pump, writes

    def test_answersOfOneRead(self):
        """
        A read of 40 requests is answered in ceil(40 / EVENTS_PER_SEND)
        transport writes (not 40), every answer correct and in order.
        """
        h, c, s, pump, writes = self.connected()
        answers = [c.request(0x30, b"%d" % n) for n in range(40)]
        pump.flush()
        self.assertEqual(len(writes), -(-40 // EVENTS_PER_SEND))
        got = []
        for d in answers:
            d.addCallback(lambda m: got.append(m.payload))
        self.assertEqual(got, [b"pong:%d" % n for n in range(40)])

    def test_boundedInTheEngine(self):
        """
        A handler that sends far more than GATHER_LIMIT bytes in one event
        has them written as it goes, none of the writes much over the
        limit, and the client gets every message in order.
        """
        h, c, s, pump, writes = self.connected()
        size, count = 4096, 100
        got = []
        c.setHandler(0x11, lambda p, m: got.append(m.payload))

        during = []

        def burst(session, message):
            for n in range(count):
                session.send(0x11, b"%04d" % n + b"." * (size - 4))
            during.append(len(writes))

        s.setHandler(0x12, burst)
        c.send(0x12, b"go")
        pump.flush()
        # Written as the handler went, not only after it returned.
        self.assertGreater(during[0], 1)
        self.assertGreater(len(writes), (size * count) // GATHER_LIMIT - 1)
        self.assertLessEqual(max(writes), GATHER_LIMIT + 2 * size)
        self.assertEqual([m[:4] for m in got],
                         [b"%04d" % n for n in range(count)])

class RecordingSocket:
    """
    A session's real socket, recording the sends made through it.
    """

    def __init__(self, sock):
        self._sock = sock
        self.sends = []

    def send(self, data):
        sent = self._sock.send(data)
        self.sends.append((len(data), sent))
        return sent


class Capture:
    """
    A socket that takes everything and sends nothing, so a client's
    requests can be handed to the server as one read.
    """

    def __init__(self):
        self.data = []

    def send(self, data):
        self.data.append(bytes(data))
        return len(data)


def echo(session, message):
    return b"echo:" + message.payload


class LoopbackTests(TestCase):
    """
    A real XTMP server and clients on 127.0.0.1, the server's sessions'
    sockets recorded.
    """

    timeout = 60
    count = 40

    @inlineCallbacks
    def setUp(self):
        self.server = XTMPServer(SERVER_IDENTITY, config(), reactor, keys=KEYS)
        self.server.router.route(0x20, echo)
        port = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1").listen(self.server)
        self.addCleanup(port.stopListening)
        # (Run after the sessions' cleanups: stops the broker's timers.)
        self.addCleanup(self.server.drain, 5)
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1",
                                           port.getHost().port)

    @inlineCallbacks
    def session(self, identity):
        client = yield connectXTMP(self.endpoint, XTMPClientFactory(
            serverKey=SERVER_IDENTITY.public, identity=identity,
            resume=False))
        self.addCleanup(self.close, client)
        yield waitFor(lambda: self.server.registry.get(client.sessionId)
                      is not None, "the server's session")
        served = self.server.registry.get(client.sessionId)
        self.assertIsNotNone(served._socket)
        served._socket = RecordingSocket(served._socket)
        return client, served

    def close(self, client):
        closed = client.whenClosed()
        client.disconnect()
        return closed

    def oneRead(self, client, served, request, count=None):
        """
        Make C{count} (default C{self.count}) requests with C{request(n)}
        on C{client}, hand their bytes to C{served} as one read, and
        return what the C{request} calls returned.
        """
        capture, real = Capture(), client._socket
        client._socket = capture
        try:
            answers = readGather.handling(
                lambda: [request(n) for n in range(count or self.count)])
        finally:
            client._socket = real
        self.assertEqual(len(capture.data), 1)
        served.dataReceived(capture.data[0])
        return answers

    @inlineCallbacks
    def test_answersInFewSends(self):
        """
        A read of 40 requests to the server's own handler is answered in
        ceil(40 / EVENTS_PER_SEND) sends (not 40, nor one after the whole
        read), every answer correct and in order.
        """
        client, served = yield self.session(ALICE)
        del served._socket.sends[:]
        answers = self.oneRead(client, served, lambda n: client.request(
            0x20, b"%d" % n, timeout=30))
        sends = served._socket.sends
        self.assertEqual(len(sends), -(-self.count // EVENTS_PER_SEND))
        self.assertEqual([size for size, sent in sends if sent != size], [])
        replies = yield gatherResults(answers)
        self.assertEqual([r.payload for r in replies],
                         [b"echo:%d" % n for n in range(self.count)])

    @inlineCallbacks
    def test_forwardedHopStartsEarly(self):
        """
        Requests to a subject that another session serves are forwarded
        to it during the read, EVENTS_PER_SEND at a time: the responder
        has the first ones before the read's handling ends, and every
        reply comes back to the requester.
        """
        responder, respondersSession = yield self.session(BOB)
        yield responder.subscribe(
            "svc.echo", lambda m: responder.respond(m, b"r:" + m.payload),
            group="responders")
        requester, served = yield self.session(ALICE)
        del respondersSession._socket.sends[:]  # (the subscription's reply)
        answers = self.oneRead(requester, served, lambda n: requester.request(
            MessageType.EventStream, b"%d" % n, subject="svc.echo",
            timeout=30))
        forwarded = respondersSession._socket.sends
        self.assertEqual(len(forwarded), -(-self.count // EVENTS_PER_SEND))
        replies = yield gatherResults(answers)
        self.assertEqual([r.payload for r in replies],
                         [b"r:%d" % n for n in range(self.count)])

    @inlineCallbacks
    def test_disconnectSentBeforeClose(self):
        """
        A Disconnect a handler writes while a read is handled goes to the
        socket before the transport is told to close (not left to the
        transport's buffer behind its close), and the client sees a clean
        close with the server's reason.
        """
        def closing(session, message):
            session.disconnect(reason="handler closed it")

        self.server.router.route(0x21, closing)
        client, served = yield self.session(ALICE)
        order = []
        recording = served._socket

        class Socket:
            def send(self, data):
                order.append("send")
                return recording.send(data)

        served._socket = Socket()
        loseConnection = served.transport.loseConnection

        def lose():
            order.append("loseConnection")
            loseConnection()

        served.transport.loseConnection = lose
        closed = client.whenClosed()
        self.oneRead(client, served, lambda n: client.send(0x21, b""),
                     count=1)
        self.assertEqual(order, ["send", "loseConnection"])
        why = yield closed
        self.assertEqual(str(why), "Connection was closed cleanly: "
                         "handler closed it.")
