"""
Regression tests for the multiplexer's defences against hostile peers:
the adapter (L{muxframe.multiplexer.Multiplexer}) over a L{StringTransport}
with time from a L{Clock}, fed the bytes an adversarial run used.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

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
        """
        Feed C{data} and run the turns that handle it, those a connection
        spending its flood budgets fast waits for (floodPause) included.
        """
        self.mux.dataReceived(data)
        self.clock.advance(0)
        mux = self.mux
        pause = mux.settings.floodPause
        for _ in range(100000):
            if not (pause and mux.engine.pendingInput() and not mux.disconnected
                    and not mux.engine.closed and not mux.readingPaused):
                break
            self.clock.advance(pause)

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
        server = Server("bmp", maxResets=10 * bmp.REFUSED_MEMORY)
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
                server.receive(batch)
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
            return server.mux.readingPaused

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
        server.clock.advance(0)
        self.assertFalse(server.mux.readingPaused)
        self.assertEqual(server.transport.producerState, "producing")
        self.assertEqual(server.mux.engine.receiveOverhead(), 0)


def bmpAck(streamId, sid):
    return bmp.encodeFrame(bmp.Frame(streamId, bmp.ACK, payload=b"%d" % sid))


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class FloodTests(SynchronousTestCase):
    """
    Per-connection budgets: a peer that resets streams or sends frames that
    carry nothing faster than any honest peer has its connection closed
    with code 5 ("exhausted"), once; an honest rate is never cut.
    """

    def assertFlooded(self, server, setting):
        """
        The connection was ended for a flood: MIO sent FIN code 5, and the
        reason names the budget.
        """
        from muxframe.errors import FloodError
        server.clock.advance(0)
        self.assertTrue(server.transport.disconnecting or server.mux.disconnected)
        server.mux.connectionLost(None)
        server.mux.lostReason.trap(FloodError)
        self.assertIn(setting, server.mux.lostReason.getErrorMessage())
        self.assertEqual(server.mux.lostReason.value.code, ErrorCode.EXHAUSTED)

    def lastMioFrame(self, server):
        frames = server.sentFrames()
        return (frames[-1].streamId, frames[-1].flags, frames[-1].size)

    def test_mioRapidReset(self):
        """
        MIO open+RST pairs past maxResets: FIN code 5; the children built
        never exceed the budget.
        """
        server = Server("mio", child=Protocol, maxResets=100)
        wire = b"".join(mioOpen(n) + mioReset(n) for n in range(1, 2 * 150, 2))
        server.receive(wire)
        self.assertEqual(self.lastMioFrame(server), (0, mio.FIN, ErrorCode.EXHAUSTED))
        self.assertLessEqual(len(server.children), 101)
        self.assertFlooded(server, "maxResets=100 per floodWindow=10 s")

    def test_honestResetRateAllowed(self):
        """
        Resets at the budget's sustained rate (maxResets per floodWindow)
        for a long while never close the connection.
        """
        server = Server("mio", child=Protocol, maxResets=100, floodWindow=10)
        streamId = 1
        for second in range(60):
            wire = b""
            for _ in range(9):
                wire += mioOpen(streamId) + mioReset(streamId)
                streamId += 2
            server.receive(wire)
            server.clock.advance(1)
        self.assertFalse(server.transport.disconnecting)
        self.assertEqual(len(server.children), 540)

    def test_refusalsCount(self):
        """
        Opens refused past maxStreams spend the same budget.
        """
        server = Server("mio", child=Protocol, maxStreams=1, maxResets=50)
        server.receive(b"".join(mioOpen(n) for n in range(1, 2 * 60, 2)))
        self.assertFlooded(server, "maxResets=50")

    def test_mioEmptyFrames(self):
        """
        MIO empty data frames, zero window updates, window updates granting
        credit never used, keepalives and frames for closed streams each
        spend maxEmptyFrames.
        """
        floods = {
            "empty data": mioData(1, b"").__mul__,
            "zero window update": (mioFrame(1, mio.WINDOW_UPDATE, 0)).__mul__,
            "credit for nothing": (mioFrame(1, mio.WINDOW_UPDATE, 1)).__mul__,
            "keepalive": (mioFrame(0, mio.SESSION_WINDOW, 0)).__mul__,
        }
        for name, flood in floods.items():
            server = Server("mio", child=Protocol, maxEmptyFrames=200)
            server.receive(mioOpen(1) + flood(150))
            self.assertFalse(server.transport.disconnecting, name)
            server.receive(flood(100))
            self.assertFlooded(server, "maxEmptyFrames=200")
        server = Server("mio", child=Protocol, maxEmptyFrames=200)
        server.receive(mioOpen(1) + mioReset(1) + mioData(1, b"late") * 250)
        self.assertFlooded(server, "for a closed stream")

    def test_bmpEmptyFrames(self):
        """
        BMP acknowledgements of nothing and empty data frames spend
        maxEmptyFrames; create+close pairs spend maxResets.
        """
        server = Server("bmp", child=Protocol, maxEmptyFrames=200)
        server.receive(b"".join(bmpAck(b"io_0", n) for n in range(250)))
        self.assertFlooded(server, "acknowledgement of nothing")
        server = Server("bmp", child=Protocol, maxEmptyFrames=200)
        server.receive(b"".join(bmpData(b"io_0", b"", n) for n in range(250)))
        self.assertFlooded(server, "empty data frame")
        server = Server("bmp", child=Protocol, maxResets=100)
        server.receive(b"".join(bmpData(b"io_%d" % n, b"x", 0, bmp.CREATE)
                                + bmpClose(b"io_%d" % n) for n in range(150)))
        self.assertFlooded(server, "maxResets=100")

    def test_budgetsOffWithZero(self):
        """
        maxResets=0 and maxEmptyFrames=0 disable the budgets.
        """
        server = Server("mio", child=Protocol, maxResets=0, maxEmptyFrames=0)
        server.receive(b"".join(mioOpen(n) + mioData(n, b"") + mioReset(n)
                                for n in range(1, 6000, 2)))
        self.assertFalse(server.transport.disconnecting)

    def test_echoUnaffected(self):
        """
        Honest traffic spends nothing: thousands of echoed frames on many
        streams, ended cleanly.
        """
        server = Server("mio", child=Echo, maxResets=10, maxEmptyFrames=10)
        for n in range(1, 400, 2):
            server.receive(mioOpen(n) + mioData(n, b"ping" * 10) * 20)
        self.assertFalse(server.transport.disconnecting)
        self.assertEqual(server.mux.engine.guards.resets.spent, 0)
        self.assertEqual(server.mux.engine.guards.empties.spent, 0)


class ControlBacklogTests(SynchronousTestCase):
    """
    Control frames owed to a peer that does not read are capped at
    maxControlBacklog: past it the connection is closed with code 5.
    """

    def notReading(self, framing, **settings):
        server = Server(framing, child=Protocol, maxControlBacklog=1000, **settings)
        server.mux.pauseProducing()  # the peer stopped reading
        return server

    def assertClosedForBacklog(self, server):
        from muxframe.errors import FloodError
        self.assertTrue(server.transport.disconnecting)
        self.assertLessEqual(server.mux.engine.controlBacklog(), 1000 + 8192)
        server.mux.connectionLost(None)
        server.mux.lostReason.trap(FloodError)
        self.assertIn("does not read", server.mux.lostReason.getErrorMessage())
        self.assertIn("maxControlBacklog=1000", server.mux.lostReason.getErrorMessage())

    def test_refusals(self):
        """
        MIO opens past maxStreams: each owes a refusal reset.
        """
        server = self.notReading("mio", maxStreams=1, maxResets=0)
        for start in range(1, 4000, 400):
            server.receive(b"".join(mioOpen(n) for n in range(start, start + 400, 2)))
            if server.transport.disconnecting:
                break
        self.assertClosedForBacklog(server)

    def test_windowUpdates(self):
        """
        MIO: a stream opened with a 2-byte window owes a window update for
        every byte consumed.
        """
        server = self.notReading("mio", maxEmptyFrames=0, maxWindowSize=0)
        server.receive(mioOpen(1, window=2))
        for _ in range(2000):
            server.receive(mioData(1, b"x"))
            if server.transport.disconnecting:
                break
        self.assertClosedForBacklog(server)

    def test_bmpAcks(self):
        """
        BMP: each zero-length data frame owes an acknowledgement.
        """
        server = self.notReading("bmp", maxEmptyFrames=0)
        for start in range(0, 3000, 100):
            server.receive(b"".join(bmpData(b"io_0", b"", n)
                                    for n in range(start, start + 100)))
            if server.transport.disconnecting:
                break
        self.assertClosedForBacklog(server)

    def test_readingPeerNeverCut(self):
        """
        The same frames toward a peer that reads them owe nothing.
        """
        server = Server("bmp", child=Protocol, maxControlBacklog=1000, maxEmptyFrames=0)
        for start in range(0, 5000, 100):
            server.receive(b"".join(bmpData(b"io_0", b"", n)
                                    for n in range(start, start + 100)))
            server.sent()
        self.assertFalse(server.transport.disconnecting)

    def test_ownOpensNotOwed(self):
        """
        Control frames this side's own commands queued (opens) do not count
        as owed to the peer.
        """
        server = Server("mio", child=Protocol, maxControlBacklog=1000, maxStreams=5000)
        server.mux.pauseProducing()
        for _ in range(2000):
            server.mux.openStream(Factory.forProtocol(Protocol))
        server.receive(mioFrame(0, mio.SESSION_WINDOW))
        self.assertFalse(server.transport.disconnecting)
        self.assertGreater(server.mux.engine.controlBacklog(), 1000)


class TimeoutTests(SynchronousTestCase):
    """
    headerTimeout closes connections stalled mid-header (slowloris);
    emptyTimeout closes server connections nobody uses.
    """

    def assertTimedOut(self, server, text):
        from muxframe.errors import SessionTimeoutError
        self.assertTrue(server.transport.disconnecting)
        server.mux.connectionLost(None)
        server.mux.lostReason.trap(SessionTimeoutError)
        self.assertIn(text, server.mux.lostReason.getErrorMessage())

    def test_midHeader(self):
        """
        Half a frame header, then nothing: closed after headerTimeout
        (default 30 s) for both framings.
        """
        for framing, wire in (("mio", mioOpen(1)), ("bmp", bmpData(b"io_0", b"x", 0))):
            server = Server(framing)
            server.receive(wire[:5])
            server.clock.advance(29)
            self.assertFalse(server.transport.disconnecting, framing)
            server.clock.advance(1.5)
            self.assertTimedOut(server, "headerTimeout")

    def test_slowloris(self):
        """
        A header sent a byte every 5 s is closed 30 s after its first byte.
        """
        server = Server("bmp")
        wire = bmpData(b"io_%d" % (10 ** 30), b"x", 0)
        for byte in range(len(wire)):
            server.receive(wire[byte:byte + 1])
            if server.transport.disconnecting:
                break
            server.clock.advance(5)
        self.assertLess(byte, 8)
        self.assertTimedOut(server, "headerTimeout")

    def test_splitHeadersUnderTrafficNeverTimeOut(self):
        """
        Continuous traffic whose reads keep ending mid-header is not
        stalled: each header completes.
        """
        server = Server("mio", child=Protocol)
        server.receive(mioOpen(1))
        frame = mioData(1, b"x" * 10)
        wire = frame * 3
        for _ in range(100):
            server.receive(wire[:5])
            server.clock.advance(1)
            server.receive(wire[5:] + frame[:5])
            server.clock.advance(1)
            server.receive(frame[5:])
        self.assertFalse(server.transport.disconnecting)

    def test_emptyServerConnection(self):
        """
        A server connection with no stream that receives nothing is closed
        after emptyTimeout (default 300 s); one with a stream open, and a
        client's, are not.
        """
        server = Server("bmp")
        server.clock.advance(299)
        self.assertFalse(server.transport.disconnecting)
        server.clock.advance(1.5)
        self.assertTimedOut(server, "emptyTimeout")

        busy = Server("mio", child=Protocol)
        busy.receive(mioOpen(1))
        busy.clock.advance(1000)
        self.assertFalse(busy.transport.disconnecting)

        clock = Clock()
        client = MultiplexerFactory(None, framing="bmp", role="client",
                                    reactor=clock).buildProtocol(None)
        transport = StringTransport()
        client.makeConnection(transport)
        clock.advance(1000)
        self.assertFalse(transport.disconnecting)

    def test_keepalivesKeepEmptyConnection(self):
        """
        A MIO peer's keepalives (every 30 s by default) keep a connection
        without streams open; the timer counts from the last stream's end.
        """
        server = Server("mio", child=Protocol)
        for _ in range(40):
            server.clock.advance(30)
            server.receive(mioFrame(0, mio.SESSION_WINDOW))
        self.assertFalse(server.transport.disconnecting)
        server.receive(mioOpen(1))
        server.clock.advance(1000)
        server.receive(mioReset(1))
        server.clock.advance(299)
        self.assertFalse(server.transport.disconnecting)
        server.clock.advance(2)
        self.assertTimedOut(server, "emptyTimeout")


class LogAmplificationTests(SynchronousTestCase):
    """
    Logs never amplify an attack: per-stream events are debug, and a
    factory's repeated warnings are rate-limited.
    """

    def capture(self):
        from twisted.logger import globalLogPublisher
        events = []

        def observer(event):
            if event.get("log_namespace", "").startswith("muxframe"):
                events.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    def test_floodOfBadConnections(self):
        """
        200 connections of one factory that each break the protocol write
        at most 10 warnings in a minute, the last saying that more are
        suppressed.
        """
        from twisted.logger import LogLevel, formatEvent
        events = self.capture()
        clock = Clock()
        factory = MultiplexerFactory(None, framing="mio", role="server", reactor=clock)
        for _ in range(200):
            mux = factory.buildProtocol(None)
            mux.makeConnection(StringTransport())
            mux.dataReceived(mioOpen(0))
            clock.advance(0.01)
        warnings = [e for e in events if e["log_level"] >= LogLevel.warn]
        self.assertEqual(len(warnings), 10)
        self.assertIn("protocol error", formatEvent(warnings[0]))
        self.assertIn("further lines like this are suppressed", formatEvent(warnings[-1]))

    def test_perStreamEventsAreDebug(self):
        """
        Nine hundred streams opened, echoed and reset log nothing above
        debug.
        """
        from twisted.logger import LogLevel
        events = self.capture()
        server = Server("mio", child=Echo)
        for n in range(1, 1800, 2):
            server.receive(mioOpen(n) + mioData(n, b"hi") + mioReset(n))
        self.assertEqual([e for e in events if e["log_level"] > LogLevel.debug], [])


class Collect(Protocol):
    def __init__(self):
        self.data = []

    def dataReceived(self, data):
        self.data.append(data)


def oneTurn(clock):
    """
    Run the calls due now, not those they schedule (as one reactor
    iteration does; Clock.advance would run those too).
    """
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


class SliceTests(SynchronousTestCase):
    """
    A read of many tiny frames is handled a slice at a time, one slice per
    reactor turn, so other connections never wait for all of it.
    """

    def test_slicedInOrder(self):
        """
        2000 one-byte data frames in one read: the first turn handles at
        most FRAMES_PER_TURN of them and stops reading; the next turns
        handle the rest, in order, and reading resumes.
        """
        from muxframe.multiplexer import FRAMES_PER_TURN
        server = Server("mio", child=Collect)
        server.receive(mioOpen(1))
        payload = bytes(range(256)) * 8
        server.mux.dataReceived(b"".join(mioData(1, payload[i:i + 1])
                                         for i in range(len(payload))))
        [child] = server.children
        self.assertLessEqual(len(child.data), FRAMES_PER_TURN)
        self.assertEqual(server.transport.producerState, "paused")
        self.assertFalse(server.mux.readingPaused)
        turns = 0
        while server.mux.engine.pendingInput():
            server.clock.advance(0)
            turns += 1
            self.assertLess(turns, 10)
        self.assertEqual(b"".join(child.data), payload)
        self.assertEqual(server.transport.producerState, "producing")

    def test_oneSlicePerTurn(self):
        """
        Each turn (a reactor iteration; here one Clock step) handles one
        slice of a flooding connection.
        """
        from muxframe.multiplexer import FRAMES_PER_TURN
        server = Server("mio", child=Protocol, maxEmptyFrames=0)
        server.receive(mioOpen(1))
        server.mux.dataReceived(mioData(1, b"") * (10 * FRAMES_PER_TURN))
        counts = [server.mux.counters.framesReceived]
        for _ in range(3):
            oneTurn(server.clock)
            counts.append(server.mux.counters.framesReceived)
        steps = [b - a for a, b in zip(counts, counts[1:])]
        self.assertEqual(steps, [FRAMES_PER_TURN] * 3)

    def test_slicesShrinkWhileStreamsOpen(self):
        """
        Slices that open streams (each builds a child) shrink, to at most
        MIN_FRAMES_PER_TURN frames a turn, and grow back once streams stop
        opening.
        """
        from muxframe.multiplexer import FRAMES_PER_TURN, MIN_FRAMES_PER_TURN
        server = Server("mio", child=Protocol, floodPause=0)
        server.mux.dataReceived(b"".join(mioOpen(n) + mioReset(n) for n in range(1, 400, 2))
                                + mioFrame(0, mio.SESSION_WINDOW) * 200)
        opened = []
        for _ in range(60):
            before = len(server.children)
            oneTurn(server.clock)
            opened.append(len(server.children) - before)
        self.assertLessEqual(max(opened[3:]), MIN_FRAMES_PER_TURN)
        self.assertEqual(len(server.children), 200)
        steps = []
        while server.mux.engine.pendingInput():
            before = server.mux.counters.framesReceived
            oneTurn(server.clock)
            steps.append(server.mux.counters.framesReceived - before)
        self.assertIn(FRAMES_PER_TURN, steps)


class PacingTests(SynchronousTestCase):
    """
    A connection whose peer spends its flood budgets fast (more than a
    tenth beyond the refill: L{muxframe.guards.SessionGuards.pressed}) is
    handled PACED_FRAMES frames per floodPause, its reading paused
    meanwhile, until it has spent the rest and is closed; other peers keep
    a slice each turn.
    """

    def frames(self, server):
        return server.mux.counters.framesReceived

    def test_guardsPressed(self):
        """
        Spending more than a tenth of a budget at once presses the
        connection; the refill relieves it; an unlimited budget never does.
        """
        from muxframe.guards import SessionGuards
        from muxframe.settings import Settings
        guards = SessionGuards(Settings(maxEmptyFrames=1000, floodWindow=10), "server")
        for _ in range(100):
            guards.empty(0.0, "mio", "x")
        self.assertFalse(guards.pressed(0.0))
        guards.empty(0.0, "mio", "x")
        self.assertTrue(guards.pressed(0.0))
        self.assertTrue(guards.pressed(0.005))
        self.assertFalse(guards.pressed(0.011))  # 1000 per 10 s: one in 10 ms
        for _ in range(20):
            guards.reset(1.0, "mio", "x")  # 2% of maxResets=1000
        self.assertFalse(guards.pressed(1.0))
        unlimited = SessionGuards(Settings(maxResets=0, maxEmptyFrames=0), "server")
        for _ in range(5000):
            unlimited.empty(0.0, "mio", "x")
        self.assertFalse(unlimited.pressed(0.0))

    def test_floodWaitsFloodPause(self):
        """
        Once pressed, further turns at the same time handle nothing and
        reading stays paused; each floodPause handles PACED_FRAMES frames.
        """
        from muxframe.multiplexer import FRAMES_PER_TURN, PACED_FRAMES
        server = Server("mio", child=Protocol, maxEmptyFrames=1000, floodPause=0.01)
        server.receive(mioOpen(1))
        server.mux.dataReceived(mioData(1, b"") * 2000)
        for _ in range(10):
            oneTurn(server.clock)
        handled = self.frames(server)
        self.assertGreater(handled, 100)
        self.assertLess(handled, 100 + 2 * FRAMES_PER_TURN)
        for _ in range(5):
            oneTurn(server.clock)
        self.assertEqual(self.frames(server), handled)
        self.assertEqual(server.transport.producerState, "paused")
        steps = []
        for _ in range(4):
            before = self.frames(server)
            server.clock.advance(0.01)
            steps.append(self.frames(server) - before)
        self.assertEqual(steps, [PACED_FRAMES] * 4)

    def test_pacedRapidResetOneStreamPerPause(self):
        """
        A pressed connection opening and resetting streams builds one child
        per floodPause (after the first paced slice): each costs a child
        protocol.
        """
        server = Server("mio", child=Protocol, maxResets=1000, floodPause=0.01)
        server.mux.dataReceived(b"".join(mioOpen(n) + mioReset(n) for n in range(1, 2000, 2)))
        for _ in range(100):
            oneTurn(server.clock)
        self.assertTrue(server.mux.engine.guards.pressed(server.clock.seconds()))
        server.clock.advance(0.01)
        built = []
        for _ in range(10):
            before = len(server.children)
            server.clock.advance(0.01)
            built.append(len(server.children) - before)
        self.assertEqual(built, [1] * 10)

    def test_readWhilePacedWaits(self):
        """
        A read that reaches a pressed connection while it waits (one the
        reactor had already polled) is not handled before the pause ends.
        """
        server = Server("mio", child=Protocol, maxEmptyFrames=1000, floodPause=0.01)
        server.receive(mioOpen(1) + mioData(1, b"") * 150)
        handled = self.frames(server)
        self.assertFalse(server.mux.engine.pendingInput())
        server.mux.dataReceived(mioData(1, b"") * 50)
        oneTurn(server.clock)
        self.assertEqual(self.frames(server), handled)
        self.assertEqual(server.mux.engine.pendingInput(), 50 * 8)
        server.clock.advance(0.01)
        self.assertGreater(self.frames(server), handled)

    def test_floodClosedWithCode(self):
        """
        Paced, a flood still spends its whole budget and is closed with
        code 5, within a bounded time.
        """
        from muxframe.errors import FloodError
        server = Server("mio", child=Protocol, maxEmptyFrames=1000, floodPause=0.001)
        server.receive(mioOpen(1))
        server.sent()
        server.mux.dataReceived(mioData(1, b"") * 5000)
        for _ in range(1000):
            if server.transport.disconnecting:
                break
            server.clock.advance(0.001)
        self.assertTrue(server.transport.disconnecting)
        self.assertLess(server.clock.seconds(), 0.5)
        frames = server.sentFrames()
        self.assertEqual((frames[-1].flags, frames[-1].size), (mio.FIN, ErrorCode.EXHAUSTED))
        server.mux.connectionLost(None)
        server.mux.lostReason.trap(FloodError)

    def test_honestPeerKeepsFullSlices(self):
        """
        Many tiny data frames spend no budget: a slice each turn, every
        slice FRAMES_PER_TURN frames, never paced.
        """
        from muxframe.multiplexer import FRAMES_PER_TURN
        server = Server("mio", child=Collect, floodPause=0.01)
        server.receive(mioOpen(1))
        server.mux.dataReceived(mioData(1, b"x") * (10 * FRAMES_PER_TURN))
        steps = [self.frames(server) - 1]  # the first slice, beside the open
        while server.mux.engine.pendingInput():
            before = self.frames(server)
            oneTurn(server.clock)
            steps.append(self.frames(server) - before)
        self.assertEqual(steps, [FRAMES_PER_TURN] * 10)
        self.assertEqual(server.transport.producerState, "producing")

    def test_honestBurstNotPaced(self):
        """
        A burst of resets within a tenth of maxResets (an application
        cancelling streams) is handled at full speed.
        """
        server = Server("mio", child=Protocol, floodPause=0.01)
        server.receive(b"".join(mioOpen(n) for n in range(1, 200, 2)))
        server.mux.dataReceived(b"".join(mioReset(n) for n in range(1, 200, 2)))
        for _ in range(10):
            oneTurn(server.clock)
        self.assertEqual(len(server.mux.engine), 0)
        self.assertFalse(server.mux.engine.guards.pressed(server.clock.seconds()))

    def test_offWithZero(self):
        """
        floodPause=0: a pressed connection still gets a slice every turn.
        """
        from muxframe.multiplexer import FRAMES_PER_TURN
        server = Server("mio", child=Protocol, maxEmptyFrames=1000, floodPause=0)
        server.receive(mioOpen(1))
        server.mux.dataReceived(mioData(1, b"") * 900)
        for _ in range(20):
            oneTurn(server.clock)
        self.assertTrue(server.mux.engine.guards.pressed(0))
        self.assertEqual(self.frames(server), 1 + 21 * FRAMES_PER_TURN)


class RefusedByApplicationTests(SynchronousTestCase):

    def test_refusalsByTheApplicationSpendResets(self):
        """
        Streams refused because the application has no protocol for them
        (an unauthenticated client's, say) spend maxResets too: a flood of
        opens is closed with code 5.
        """
        class Nobody(Factory):
            def buildProtocol(self, addr):
                return None

        server = Server("mio", maxResets=50)
        server.mux.childFactory = Nobody()
        server.receive(b"".join(mioOpen(n) for n in range(1, 2 * 80, 2)))
        from muxframe.errors import FloodError
        self.assertTrue(server.transport.disconnecting)
        server.mux.connectionLost(None)
        server.mux.lostReason.trap(FloodError)
        self.assertIn("maxResets=50", server.mux.lostReason.getErrorMessage())
        self.assertEqual(server.mux.counters.streamsRefused, 51)


class FoundByFuzzingTests(SynchronousTestCase):
    """
    Defects the atheris harness of the Multiplexer found (docs/fuzzing.md).
    """

    def test_childDropsHeldDataWhileReading(self):
        """
        A paused child that, on resuming, closes its transport from
        dataReceived drops what is still held once: the held count goes
        back to 0, never below, and it reads nothing more.
        """
        class CloseOnData(Collect):
            def dataReceived(self, data):
                Collect.dataReceived(self, data)
                self.transport.loseConnection()

        server = Server("mio", child=CloseOnData)
        server.receive(mioOpen(9, window=1 << 20))
        [child] = server.children
        child.transport.pauseProducing()
        for piece in (b"a", b"b", b"c"):
            server.receive(mioData(9, piece * 40000))
        self.assertEqual(server.mux.heldBytes(), 120000)
        child.transport.resumeProducing()
        self.assertEqual(child.data, [b"a" * 40000])
        self.assertEqual(server.mux.heldBytes(), 0)
        self.assertEqual(server.mux.heldMemory(), 0)

    def test_heldDataDroppedAfterCloseDoesNotResumeReading(self):
        """
        Reading paused because paused children hold too much stays paused
        once the connection is being closed: a child aborting then (its
        held data released) never asks the closing transport to read.
        """
        server = Server("mio", sessionBufferSize=64 * 1024)
        server.receive(mioOpen(9, window=1 << 20) + mioData(9, b"x" * 100000))
        [child] = server.children
        self.assertTrue(server.transport.producerState == "paused")
        server.mux.close()
        self.assertTrue(server.transport.disconnecting)
        child.transport.abortConnection()
        self.assertEqual(server.mux.heldBytes(), 0)
        self.assertEqual(len(child.lost), 0)
        server.clock.advance(0)
        self.assertEqual(len(child.lost), 1)

    def test_mioDataAfterEndDropped(self):
        """
        MIO data after the peer's own end of stream is dropped, never
        delivered after the end.
        """
        server = Server("mio", child=Collect)
        server.receive(mioOpen(9) + mioFrame(9, mio.DATA_END, payload=b"last")
                       + mioData(9, b"after the end"))
        [child] = server.children
        self.assertEqual(b"".join(child.data), b"last")
        self.assertEqual(server.mux.engine.guards.empties.spent, 1)


@implementer(IHalfCloseableProtocol)
class HalfCloseEcho(Protocol):
    """
    Ends its own side when the peer ends its (as a tunnel's splice does).
    """

    def connectionMade(self):
        self.ended = False

    def readConnectionLost(self):
        self.ended = True
        self.transport.loseWriteConnection()


class AfterSessionCloseTests(SynchronousTestCase):
    """
    A protocol error closes the session; children that react to the same
    read (a stream ending its side) queue nothing after the FIN, and
    nothing loops waiting to send it.
    """

    def test_childEndsItsSideAfterTheError(self):
        server = Server("mio", child=HalfCloseEcho)
        # Open 1, end 1, then data for stream 99, which nobody opened.
        server.receive(bytes.fromhex(
            "00000001" "000400" "0c" "00000001" "000000" "11"
            "00000063" "000001" "01" "78"))
        frames = server.sentFrames()
        self.assertEqual((frames[-1].streamId, frames[-1].flags), (0, mio.FIN))
        self.assertTrue(server.transport.disconnecting)
        self.assertTrue(server.children[0].ended)
