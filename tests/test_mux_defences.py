"""
Regression tests for the multiplexer's defences against hostile peers:
the adapter (L{muxframe.multiplexer.Multiplexer}) over a L{StringTransport}
with time from a L{Clock}, fed the bytes an adversarial run used.
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from muxframe import MultiplexerFactory, bmp, mio
from muxframe.errors import ErrorCode, MalformedFrame


def mioFrame(streamId, flags, size=0, payload=b""):
    """
    Return the bytes of one MIO frame (C{size} is the payload length for
    data frames).
    """
    if payload:
        size = len(payload)
    return mio.encodeHeader(streamId, size, flags) + payload


def mioOpen(streamId, window=65536):
    return mioFrame(streamId, mio.OPEN, window)


def mioData(streamId, payload):
    return mioFrame(streamId, mio.DATA, payload=payload)


def mioReset(streamId, code=0):
    return mioFrame(streamId, mio.RESET, code)


def bmpData(streamId, payload, sid, opt=bmp.DATA):
    return bmp.encodeFrame(bmp.Frame(streamId, opt, b"%d" % sid, payload=payload))


def bmpClose(streamId):
    return bmp.encodeFrame(bmp.Frame(streamId, bmp.CLOSE_STREAM, payload=b"\x04"))


class PausedChild(Protocol):
    """
    A child that pauses reading as soon as it is connected (as a tunnel's
    splice does until its outbound connection is up) and records every
    C{connectionLost}.
    """

    def __init__(self):
        self.data = []
        self.lost = []

    def connectionMade(self):
        self.transport.pauseProducing()

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason):
        self.lost.append(reason)


class Server:
    """
    One server-side multiplexer on a L{StringTransport}, its children
    recorded in build order.
    """

    def __init__(self, framing, child=PausedChild, **settings):
        self.clock = Clock()
        self.children = []

        def build():
            protocol = child()
            self.children.append(protocol)
            return protocol

        factory = MultiplexerFactory(
            Factory.forProtocol(build), framing=framing, role="server",
            reactor=self.clock, **settings)
        self.mux = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.mux.makeConnection(self.transport)

    def receive(self, data):
        self.mux.dataReceived(data)
        self.clock.advance(0)

    def sent(self):
        data = self.transport.value()
        self.transport.clear()
        return data

    def sentFrames(self):
        decode = mio.decodeFrames if self.mux.framing == "mio" else bmp.decodeFrames
        return decode(self.sent())


class StreamIdReuseTests(SynchronousTestCase):
    """
    A closed stream id never aliases a new stream, and every child gets
    exactly one C{connectionLost}.
    """

    def assertLostOnce(self, children):
        self.assertEqual([len(child.lost) for child in children], [1] * len(children))

    def test_mioReopenRejected(self):
        """
        MIO C{open(1) data(1,"x") RST(1) open(1)} in one write toward a
        paused child: the reuse of id 1 is a protocol error (FIN code 1),
        and the one child gets exactly one C{connectionLost}.
        """
        server = Server("mio")
        server.receive(mioOpen(1) + mioData(1, b"x") + mioReset(1) + mioOpen(1))
        self.assertEqual(len(server.children), 1)
        frames = server.sentFrames()
        self.assertEqual([(f.streamId, f.flags, f.size) for f in frames],
                         [(0, mio.FIN, ErrorCode.INTERNAL)])
        self.assertTrue(server.mux.lostReason is None or server.transport.disconnecting)
        server.mux.connectionLost(None)
        self.assertLostOnce(server.children)
        server.mux.lostReason.trap(MalformedFrame)
        self.assertIn("used before", server.mux.lostReason.getErrorMessage())

    def test_mioReuseBeyondMemoryTracksBoth(self):
        """
        An id reused after more closed streams than the engine remembers
        names a new stream while the old one still holds its close: both
        children are tracked, the old child's consumption returns no credit
        for the new stream, and each child is told exactly once.
        """
        server = Server("mio")
        wire = mioOpen(1) + mioData(1, b"a" * 40000) + mioReset(1)
        for streamId in range(3, 3 + 2 * (mio.CLOSED_MEMORY + 1), 2):
            wire += mioOpen(streamId) + mioReset(streamId)
        wire += mioOpen(1)
        server.receive(wire)
        first, *others, second = server.children
        self.assertEqual(len(others), mio.CLOSED_MEMORY + 1)
        self.assertEqual(server.mux.streamCount(), 2 + len(others))
        server.sent()
        # The first child reads what it held: 40000 bytes consumed would be
        # a window update for stream 1, which is now the second stream.
        first.transport.resumeProducing()
        self.assertEqual(b"".join(first.data), b"a" * 40000)
        self.assertEqual(len(first.lost), 1)
        self.assertEqual(
            [f for f in server.sentFrames() if f.streamId == 1], [])
        self.assertEqual(second.lost, [])
        self.assertIn(1, server.mux.engine)
        server.mux.connectionLost(None)
        self.assertLostOnce(server.children)

    def test_bmpRecreateDropped(self):
        """
        BMP: data creating io_0, close before its end, data re-creating
        io_0, toward a paused child: the late frame opens no stream, and
        the child gets exactly one C{connectionLost}.
        """
        server = Server("bmp")
        server.receive(bmpData(b"io_0", b"x", 0, bmp.CREATE) + bmpClose(b"io_0")
                       + bmpData(b"io_0", b"y", 0, bmp.CREATE))
        self.assertEqual(len(server.children), 1)
        [child] = server.children
        self.assertEqual(server.mux.engine.streamIds(), [])
        child.transport.resumeProducing()
        self.assertEqual(child.data, [b"x"])
        self.assertLostOnce(server.children)
        server.mux.connectionLost(None)
        self.assertLostOnce(server.children)

    def test_bmpReuseBeyondMemoryTracksBoth(self):
        """
        BMP: a name reused after more forgotten streams than the engine
        remembers is a new stream; the old paused child is still told
        once, and never writes into the new stream.
        """
        server = Server("bmp")
        wire = bmpData(b"io_0", b"x", 0, bmp.CREATE) + bmpClose(b"io_0")
        for n in range(1, bmp.REFUSED_MEMORY + 2):
            name = b"io_%d" % n
            wire += bmpData(name, b"", 0, bmp.CREATE) + bmpClose(name)
        wire += bmpData(b"io_0", b"new", 0, bmp.CREATE)
        server.receive(wire)
        first, second = server.children[0], server.children[-1]
        self.assertIn(b"io_0", server.mux.engine)
        server.sent()
        first.transport.write(b"from the old child")
        self.assertNotIn(b"from the old child", server.sent())
        first.transport.resumeProducing()
        self.assertEqual(len(first.lost), 1)
        self.assertEqual(second.lost, [])
        server.mux.connectionLost(None)
        self.assertLostOnce(server.children)

    def test_closingChildrenCountAgainstMaxStreams(self):
        """
        Streams the peer reset whose paused children have not yet been told
        count against maxStreams: open-and-reset cannot grow children
        without bound.
        """
        server = Server("mio", maxStreams=4)
        wire = b""
        for streamId in range(1, 40, 2):
            wire += mioOpen(streamId) + mioData(streamId, b"x") + mioReset(streamId)
        server.receive(wire)
        self.assertEqual(len(server.children), 4)
        self.assertEqual(server.mux.streamCount(), 4)
        self.assertGreaterEqual(server.mux.counters.streamsRefused, 16)
        server.mux.connectionLost(None)
        self.assertLostOnce(server.children)


class HeldMemoryTests(SynchronousTestCase):
    """
    What paused children hold is counted honestly: C{sessionBufferSize}
    bounds the real memory (measured with tracemalloc, beside the same
    flood toward a child that reads), whatever the frame size.
    """

    def traced(self, server, batches, stop, most=1 << 40):
        """
        Feed C{batches} until C{stop()}; return the memory still allocated
        afterwards (in bytes) and how many batches went in.
        """
        import tracemalloc
        tracemalloc.start()
        fed = 0
        try:
            before = tracemalloc.get_traced_memory()[0]
            for batch in batches:
                if stop() or tracemalloc.get_traced_memory()[0] - before > most:
                    break
                server.mux.dataReceived(batch)
                fed += 1
            return tracemalloc.get_traced_memory()[0] - before, fed
        finally:
            tracemalloc.stop()

    def assertBounded(self, framing, opening, batches, limit):
        """
        A flood of C{batches()} on the stream C{opening} opens stops reading
        from the connection toward a paused child, holding at most about
        sessionBufferSize (C{limit}; a read's worth of frames may pass it)
        more than the same flood costs toward a child that reads.
        """
        server = Server(framing, sessionBufferSize=limit)
        server.receive(opening)

        def paused():
            return server.transport.producerState == "paused"

        grown, fed = self.traced(server, batches(500), paused, most=4 * limit)
        self.assertTrue(paused(), "reading never paused (%d bytes held)" % (grown,))
        reader = Server(framing, child=Protocol, sessionBufferSize=limit)
        reader.receive(opening)
        baseline, _ = self.traced(reader, batches(fed), lambda: False)
        self.assertLess(grown - baseline, 2 * limit, (grown, baseline, fed))
        return server

    def test_mioTinyFrames(self):
        """
        MIO: 2-byte data frames to a paused stream (whose opener announced
        the largest window) stop reading before they cost more than about
        sessionBufferSize of memory.
        """
        batch = mioData(1, b"ab") * 6000
        server = self.assertBounded(
            "mio", mioOpen(1, window=mio.MAX_SIZE), lambda n: iter([batch] * n),
            64 * 1024)
        self.assertGreater(server.mux.streamCounters(1)["held"], 16 * 1024)

    def test_bmpTinyFrames(self):
        """
        BMP: 1-byte data frames to a paused stream stop reading before they
        cost more than about sessionBufferSize of memory (each frame's sid
        is kept until it is acknowledged, and counts); once the child
        reads, everything is acknowledged and reading resumes.
        """
        def batches(n):
            sid = 1
            for _ in range(n):
                yield b"".join(bmpData(b"io_0", b"x", i) for i in range(sid, sid + 3000))
                sid += 3000

        server = self.assertBounded(
            "bmp", bmpData(b"io_0", b"x", 0, bmp.CREATE), batches, 1024 * 1024)
        [child] = server.children
        child.transport.resumeProducing()
        self.assertEqual(server.transport.producerState, "producing")
        self.assertEqual(server.mux.engine.receiveOverhead(), 0)
