"""
Tests for L{muxframe.multiplexer}: the Twisted adapter over in-memory
transports, with time from a L{Clock}.
"""

import select
import socket

from twisted.internet import tcp
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from muxframe import MultiplexerFactory, StreamAddress
from muxframe import bmp, mio
from muxframe.errors import (
    ErrorCode,
    MalformedFrame,
    SessionClosedError,
    SessionTimeoutError,
    StreamBufferOverflow,
    StreamLimitError,
    StreamRefusedError,
    StreamResetError,
    StreamTimeoutError,
)


class Recorder(Protocol):
    """
    A child protocol that records what happens to it.
    """

    def __init__(self):
        self.data = []
        self.lost = None
        self.ended = False
        self.made = False

    def connectionMade(self):
        self.made = True

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason):
        self.lost = reason

    def received(self):
        return b"".join(self.data)


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    writeLost = False

    def readConnectionLost(self):
        self.ended = True

    def writeConnectionLost(self):
        self.writeLost = True


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Answerer(Recorder):
    """
    Answers each message with one of its own, C{rounds} times, noting what
    was written to the connections' transports (C{wire}, a list the test
    fills) during each answer.
    """

    rounds = 20
    wire = None

    def __init__(self):
        Recorder.__init__(self)
        self.answered = []

    def dataReceived(self, data):
        Recorder.dataReceived(self, data)
        if len(self.answered) < self.rounds:
            before = len(self.wire)
            self.transport.write(b"m")
            self.answered.append(self.wire[before:])


class Link:
    """
    Two multiplexers joined by in-memory transports; L{pump} moves bytes
    until both are quiet.
    """

    def __init__(self, framing, serverChild=Echo, clientChild=None, clock=None,
                 **settings):
        self.clock = clock if clock is not None else Clock()
        self.serverChildren = []
        self.clientChildren = []

        def track(cls, into):
            if cls is None:
                return None

            def build():
                proto = cls()
                into.append(proto)
                return proto
            return Factory.forProtocol(build)

        self.serverFactory = MultiplexerFactory(
            track(serverChild, self.serverChildren), framing=framing,
            role="server", reactor=self.clock, **settings)
        self.clientFactory = MultiplexerFactory(
            track(clientChild, self.clientChildren), framing=framing,
            role="client", reactor=self.clock, **settings)
        self.server = self.serverFactory.buildProtocol(None)
        self.client = self.clientFactory.buildProtocol(None)
        self.serverTransport = StringTransport()
        self.clientTransport = StringTransport()
        self.server.makeConnection(self.serverTransport)
        self.client.makeConnection(self.clientTransport)

    def pump(self, rounds=1000):
        for _ in range(rounds):
            moved = False
            for transport, peer in ((self.clientTransport, self.server),
                                    (self.serverTransport, self.client)):
                data = transport.value()
                if data:
                    transport.clear()
                    peer.dataReceived(data)
                    moved = True
            # A reactor turn: calls due now (the next slice of a read of
            # many frames) run, as they would between reads.
            now = self.clock.seconds()
            if any(call.getTime() <= now for call in self.clock.getDelayedCalls()):
                self.clock.advance(0)
                moved = True
            if not moved:
                return
        raise AssertionError("the link never went quiet")

    def open(self, factory=None, side=None):
        side = side or self.client
        child = []
        factory = factory or Factory.forProtocol(Recorder)
        side.openStream(factory).addCallback(child.append)
        return child[0]


class TickingClock(Clock):
    """
    A L{Clock} whose time moves on by a microsecond each time it is read,
    as a real reactor's does; it counts the calls scheduled on it.
    """

    scheduled = 0

    def seconds(self):
        self.rightNow += 1e-6
        return self.rightNow

    def callLater(self, delay, callable, *args, **kw):
        self.scheduled += 1
        return Clock.callLater(self, delay, callable, *args, **kw)


class AdapterTestsMixin:
    framing = None

    def link(self, **kwargs):
        return Link(self.framing, **kwargs)

    def test_openStreamFiresWithChild(self):
        """
        openStream fires with a connected child whose transport addresses
        are StreamAddresses.
        """
        link = self.link()
        child = self.successResultOf(link.client.openStream(Factory.forProtocol(Recorder)))
        self.assertTrue(child.made)
        self.assertIsInstance(child.transport.getPeer(), StreamAddress)
        self.assertEqual(child.transport.getPeer().framing, self.framing)
        self.assertEqual(child.transport.getHost().streamId, child.transport.streamId)

    def test_echoAndCleanClose(self):
        """
        Data goes through, and loseConnection ends the stream with
        ConnectionDone on both sides once both directions have ended.
        """
        link = self.link()
        child = link.open()
        child.transport.write(b"hello ")
        child.transport.writeSequence([b"wor", b"ld"])
        link.pump()
        self.assertEqual(child.received(), b"hello world")
        child.transport.loseConnection()
        link.pump()
        self.assertIsNotNone(child.lost)
        child.lost.trap(ConnectionDone)
        self.assertEqual(link.client.streamCount(), 0)
        self.assertEqual(link.server.streamCount(), 0)

    def test_timerNotRearmedPerMessage(self):
        """
        Messages going back and forth do not schedule a timer each (the
        deadlines stay or move later), on a clock that moves as it is read.
        """
        link = self.link(clock=TickingClock())
        child = link.open()
        child.transport.write(b"ping")
        link.pump()
        scheduled = link.clock.scheduled
        for _ in range(50):
            child.transport.write(b"ping")
            link.pump()
        self.assertEqual(child.received(), b"ping" * 51)
        self.assertLessEqual(link.clock.scheduled - scheduled, 2)

    def test_smallMessageWrittenAtOnce(self):
        """
        A small message a child writes while the read it answers is handled
        (a ping-pong, both ways) reaches the connection's transport inside
        the child's write: one transport write per message, carrying the
        credit or acknowledgement owed for the read first (BMP: every time,
        as an echo peer's fast path reads it), never through the send queue.
        """
        wire = []
        self.patch(Answerer, "wire", wire)
        link = self.link(serverChild=Answerer)
        for transport in (link.clientTransport, link.serverTransport):
            transport.write = lambda data, write=transport.write: (
                wire.append(data), write(data))
            transport.writeSequence = lambda seq: wire.append(b"".join(seq))
        for mux in (link.client, link.server):
            # A write through the send queue shows on the wire list too.
            mux.engine.sendData = lambda *args, sendData=mux.engine.sendData: (
                wire.append("queued"), sendData(*args))[1]
        child = link.open(Factory.forProtocol(Answerer))
        child.transport.write(b"m")
        link.pump()
        [server] = link.serverChildren
        self.assertEqual(len(child.answered), Answerer.rounds)
        self.assertEqual(len(server.answered), Answerer.rounds)
        framing = bmp if self.framing == "bmp" else mio
        for answerer in (child, server):
            # The first messages sniff the framing and start the stream.
            for written in answerer.answered[3:]:
                self.assertNotIn("queued", written)
                self.assertEqual(len(written), 1)
                frames = framing.decodeFrames(written[0])
                self.assertEqual(frames[-1].payload, b"m")
                if self.framing == "bmp":
                    self.assertEqual([f.opt for f in frames], [bmp.ACK, bmp.DATA])
                else:
                    self.assertEqual([f.flags for f in frames], [mio.DATA])

    def test_writeTypeError(self):
        """
        write and writeSequence take bytes only.
        """
        link = self.link()
        child = link.open()
        self.assertRaises(TypeError, child.transport.write, "text")
        self.assertRaises(TypeError, child.transport.writeSequence, [b"ok", 3])

    def test_halfClose(self):
        """
        loseWriteConnection ends one direction: the peer's half-closeable
        child gets readConnectionLost and can still answer.
        """
        link = self.link(serverChild=HalfCloser)
        child = link.open(Factory.forProtocol(HalfCloser))
        child.transport.write(b"question")
        child.transport.loseWriteConnection()
        link.pump()
        [server] = link.serverChildren
        self.assertTrue(server.ended)
        self.assertTrue(child.writeLost)
        self.assertEqual(server.received(), b"question")
        server.transport.write(b"answer")
        server.transport.loseConnection()
        link.pump()
        self.assertEqual(child.received(), b"answer")
        self.assertTrue(child.ended)
        child.lost.trap(ConnectionDone)
        server.lost.trap(ConnectionDone)

    def test_abort(self):
        """
        abortConnection resets the stream: the peer's child sees a
        StreamResetError, this child ConnectionAborted.
        """
        link = self.link(serverChild=Recorder)
        child = link.open()
        other = link.open()
        child.transport.write(b"x")
        link.pump()
        child.transport.abortConnection()
        link.clock.advance(0)
        link.pump()
        child.lost.trap(ConnectionAborted)
        link.serverChildren[0].lost.trap(StreamResetError)
        self.assertIsNone(other.lost)

    def test_refusedWithoutChildFactory(self):
        """
        A side with no childFactory refuses peer-opened streams cleanly.
        """
        link = self.link()
        child = link.open(side=link.server)
        child.transport.write(b"anyone?")
        link.pump()
        link.clock.advance(0)
        self.assertIsNotNone(child.lost)
        self.assertEqual(link.client.counters.streamsRefused, 1)
        self.assertFalse(link.serverTransport.disconnecting)

    def test_streamLimit(self):
        """
        openStream beyond maxStreams fails with StreamLimitError.
        """
        link = self.link(maxStreams=2)
        link.open()
        link.open()
        self.failureResultOf(link.client.openStream(Factory.forProtocol(Recorder)),
                             StreamLimitError)

    def test_pauseWithholdsCredit(self):
        """
        A child that pauses its transport receives nothing more, the peer
        gets no more credit for that stream, and everything arrives, in
        order, after it resumes.
        """
        link = self.link(serverChild=Recorder, windowSize=4096, maxFrameSize=1024,
                         maxInFlight=2)
        child = link.open()
        child.transport.write(b"a")
        link.pump()
        [server] = link.serverChildren
        server.transport.pauseProducing()
        payload = bytes(range(256)) * 100
        child.transport.write(payload)
        link.pump()
        self.assertEqual(server.received(), b"a")
        held = link.server.streamCounters(server.transport.streamId)["held"]
        self.assertGreater(held, 0)
        bound = 4096 if self.framing == "mio" else 2 * 1024
        self.assertLessEqual(held, bound)
        self.assertGreater(link.client.engine.sendBuffered(child.transport.streamId), 0)
        server.transport.resumeProducing()
        link.pump()
        self.assertEqual(server.received(), b"a" + payload)
        self.assertEqual(link.server.heldBytes(), 0)

    def test_writeWithoutProducerNeverRaises(self):
        """
        With default settings, write() without a producer buffers whatever
        it is given, as a TCP transport does (32 MiB here, twice the old
        hard limit), and all of it arrives.
        """
        link = self.link(serverChild=Recorder)
        child = link.open()
        payload = bytes(range(256)) * (32 * 4096)
        child.transport.write(payload)
        child.transport.writeSequence([b"and ", b"more"])
        # All of it is held but the first window's worth (BMP: the 4 MiB
        # maxBytesInFlight), already framed.
        self.assertGreater(
            link.client.engine.sendBuffered(child.transport.streamId),
            len(payload) - 4 * 1024 * 1024)
        link.pump(100000)
        self.assertEqual(link.serverChildren[0].received(), payload + b"and more")
        self.assertIsNone(child.lost)

    def test_sendLimitEndsStreamNotWrite(self):
        """
        With a maxStreamSendBuffer, a write past it does not raise: the
        stream is reset (code EXHAUSTED), its child's connectionLost gets
        StreamBufferOverflow on a later turn, later writes are dropped,
        the peer's child sees a reset, and other streams carry on.
        """
        link = self.link(maxStreamSendBuffer=10000, windowSize=1024, maxInFlight=1,
                         maxFrameSize=1024, serverChild=Recorder)
        child = link.open()
        other = link.open()
        child.transport.write(b"x" * 9500)
        child.transport.write(b"y" * 2000)
        self.assertIsNone(child.lost)
        child.transport.write(b"dropped")
        link.clock.advance(0)
        child.lost.trap(StreamBufferOverflow)
        self.assertEqual(child.lost.value.code, ErrorCode.EXHAUSTED)
        self.assertIn("maxStreamSendBuffer=10000", str(child.lost.value))
        self.assertEqual(link.client.counters.resetsSent, {ErrorCode.EXHAUSTED: 1})
        other.transport.write(b"still fine")
        link.pump()
        first, second = link.serverChildren
        first.lost.trap(StreamResetError)
        self.assertEqual(second.received(), b"still fine")
        self.assertIsNone(other.lost)

    def test_producerPausedByBuffer(self):
        """
        A registered producer is paused once the stream's unsent buffer
        passes streamBufferSize, and resumed when it drains.
        """
        link = self.link(streamBufferSize=2048, windowSize=1024, maxFrameSize=1024,
                         maxInFlight=1, serverChild=Recorder)
        child = link.open()
        producer = PushProducer()
        child.transport.registerProducer(producer, True)
        child.transport.write(b"z" * 5000)
        self.assertEqual(producer.paused, 1)
        link.pump()
        self.assertEqual(producer.resumed, 1)
        self.assertEqual(link.serverChildren[0].received(), b"z" * 5000)

    def test_transportPausePausesAllStreams(self):
        """
        When the connection's transport pauses the multiplexer, every
        stream's producer is paused, and resumed with it.
        """
        link = self.link()
        producers = []
        for _ in range(3):
            child = link.open()
            producers.append(PushProducer())
            child.transport.registerProducer(producers[-1], True)
        link.client.pauseProducing()
        self.assertEqual([p.paused for p in producers], [1, 1, 1])
        link.client.resumeProducing()
        self.assertEqual([p.resumed for p in producers], [1, 1, 1])

    def test_pausedTransportHoldsOutput(self):
        """
        While the transport has paused the multiplexer nothing is written;
        on resume control frames go out before the queued data.
        """
        link = self.link(serverChild=Recorder, maxFrameSize=16384)
        bulk = link.open()
        link.pump()
        link.client.pauseProducing()
        bulk.transport.write(b"b" * 100000)
        small = link.open()
        small.transport.write(b"ping")
        self.assertEqual(link.clientTransport.value(), b"")
        link.client.resumeProducing()
        wire = link.clientTransport.value()
        # The small stream's first bytes are in the first write quantum, not
        # behind the whole bulk backlog.
        self.assertLess(wire.index(b"ping"), 80000)

    def test_connectionLostReachesEveryStream(self):
        """
        Losing the connection delivers connectionLost with its reason to
        every stream.
        """
        link = self.link()
        children = [link.open() for _ in range(5)]
        from twisted.python.failure import Failure
        from twisted.internet.error import ConnectionLost
        link.client.connectionLost(Failure(ConnectionLost("gone")))
        for child in children:
            child.lost.trap(ConnectionLost)
        self.failureResultOf(link.client.openStream(Factory.forProtocol(Recorder)),
                             SessionClosedError)

    def test_childExceptionAbortsOnlyItsStream(self):
        """
        A child whose dataReceived raises has its stream aborted; the error
        is logged; other streams carry on.
        """
        link = self.link(serverChild=Exploder)
        bad = link.open()
        good = link.open()
        bad.transport.write(b"boom")
        good.transport.write(b"fine")
        link.pump()
        link.clock.advance(0)
        link.pump()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        bad.lost.trap(StreamResetError)
        self.assertEqual(good.received(), b"fine")
        self.assertIsNone(good.lost)

    def test_garbageClosesConnection(self):
        """
        Bytes that are not the framing close the connection, with the
        protocol error as every stream's reason.
        """
        link = self.link()
        link.open().transport.write(b"x")
        link.pump()
        link.server.dataReceived(b"\xff" * 64 if self.framing == "bmp" else
                                 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        link.clock.advance(0)
        self.assertTrue(link.serverTransport.disconnecting)
        link.server.connectionLost(None)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_drain(self):
        """
        drain() refuses new streams, lets open ones finish, then closes;
        the deadline closes stragglers with SessionClosedError.
        """
        link = self.link(serverChild=Recorder)
        child = link.open()
        child.transport.write(b"hi")
        link.pump()
        done = link.server.drain(timeout=10)
        self.assertNoResult(done)
        late = link.open()
        late.transport.write(b"too late")
        link.pump()
        link.clock.advance(0)
        self.assertIsNotNone(late.lost)
        child.transport.loseConnection()
        link.pump()
        link.serverChildren[0].transport.loseConnection()
        link.pump()
        self.assertTrue(link.serverTransport.disconnecting)
        link.server.connectionLost(None)
        self.successResultOf(done)

    def test_drainDeadline(self):
        """
        Streams still open at the drain deadline are lost with
        SessionClosedError.
        """
        link = self.link(serverChild=Recorder)
        link.open().transport.write(b"still here")
        link.pump()
        done = link.server.drain(timeout=10)
        link.clock.advance(10)
        self.assertTrue(link.serverTransport.disconnecting)
        from twisted.internet.error import ConnectionDone as Done
        from twisted.python.failure import Failure
        link.server.connectionLost(Failure(Done()))
        link.serverChildren[0].lost.trap(SessionClosedError)
        self.successResultOf(done)

    def test_idleTimeout(self):
        """
        idleTimeout closes a connection that received nothing for that long.
        """
        link = self.link(idleTimeout=60, keepaliveInterval=0)
        link.clock.advance(59)
        self.assertFalse(link.serverTransport.disconnecting)
        link.clock.advance(1)
        link.clock.advance(0)
        self.assertTrue(link.serverTransport.disconnecting)
        link.server.connectionLost(None)
        self.assertIsInstance(link.server._terminated.value, SessionTimeoutError)

    def test_counters(self):
        """
        Counters follow bytes, frames and streams.
        """
        link = self.link()
        child = link.open()
        child.transport.write(b"12345")
        link.pump()
        counters = link.client.counters.asDict()
        self.assertEqual(counters["bytesSent"], 5)
        self.assertEqual(counters["bytesReceived"], 5)
        self.assertEqual(counters["streamsOpened"], 1)
        self.assertGreaterEqual(counters["framesSent"], 1)
        self.assertEqual(link.server.counters.streamsAccepted, 1)


class StreamCountersTests(SynchronousTestCase):

    def test_streamCounters(self):
        """
        streamCounters reports one stream's bytes, stalls and buffers, and
        None once it is gone.
        """
        link = Link("mio", serverChild=Recorder, windowSize=1024, maxFrameSize=512)
        child = link.open()
        child.transport.write(b"q" * 3000)
        link.pump()
        [server] = link.serverChildren
        streamId = child.transport.streamId
        counters = link.client.streamCounters(streamId)
        self.assertEqual(counters["bytesSent"], 3000)
        self.assertGreater(counters["creditStalls"], 0)
        self.assertEqual(counters["sendBuffered"], 0)
        server.transport.pauseProducing()
        child.transport.write(b"r" * 700)
        link.pump()
        held = link.server.streamCounters(streamId)["held"]
        self.assertGreater(held, 0)
        # What the window let through is held; the rest waits at the sender.
        self.assertEqual(held + link.client.streamCounters(streamId)["sendBuffered"], 700)
        self.assertEqual(link.server.streamCounters(streamId)["bytesReceived"], 3000 + held)
        server.transport.resumeProducing()
        child.transport.abortConnection()
        self.assertIsNone(link.client.streamCounters(streamId))


class Exploder(Protocol):
    def dataReceived(self, data):
        if data == b"boom":
            1 / 0
        self.transport.write(data)


class PushProducer:
    def __init__(self):
        self.paused = 0
        self.resumed = 0
        self.stopped = False

    def pauseProducing(self):
        self.paused += 1

    def resumeProducing(self):
        self.resumed += 1

    def stopProducing(self):
        self.stopped = True


class ReadSizeTests(SynchronousTestCase):
    """
    At the first full read (the peer sends in bulk), a multiplexer raises
    its connection transport's read size (Twisted's C{bufferSize}) to its
    framing's L{Engine.readSize}; it never lowers it.
    """

    def connect(self, framing, bufferSize):
        transport = StringTransport()
        transport.bufferSize = bufferSize
        mux = MultiplexerFactory(Factory.forProtocol(Recorder), framing=framing,
                                 reactor=Clock()).buildProtocol(None)
        mux.makeConnection(transport)
        return mux, transport

    def bulk(self, framing, size):
        # The first bytes of a stream's 1 MiB data frame.
        if framing == "bmp":
            header = bmp.encodeHeader(b"io_0", bmp.CREATE, b"0", 1 << 20)
        else:
            header = mio.encodeHeader(1, 1 << 20, mio.OPEN)
        return (header + b"b" * size)[:size]

    def test_bmpReadsWholeFrames(self):
        """
        BMP reads 256 KiB at once (a whole default-sized frame) once a read
        fills Twisted's 64 KiB; reads short of it leave the size alone.
        """
        mux, transport = self.connect("bmp", 65536)
        self.assertEqual(transport.bufferSize, 65536)
        mux.dataReceived(self.bulk("bmp", 65535))
        self.assertEqual(transport.bufferSize, 65536)
        mux.dataReceived(b"b" * 65536)
        self.assertEqual(transport.bufferSize, 256 * 1024)
        self.assertFalse(mux.disconnected)

    def test_allocatorWarmed(self):
        """
        Raising the read size warms the allocator for blocks of
        READ_WARMUP reads (L{muxframe.allocator}).
        """
        from muxframe import multiplexer
        warmed = []
        self.patch(multiplexer, "warmAllocator", warmed.append)
        mux, transport = self.connect("bmp", 65536)
        mux.dataReceived(self.bulk("bmp", 65536))
        self.assertEqual(warmed, [multiplexer.READ_WARMUP * 256 * 1024])
        mux.dataReceived(b"b" * 65536)
        self.assertEqual(len(warmed), 1)

    def test_neverLowered(self):
        """
        A transport that reads more than BMP's size already keeps it.
        """
        mux, transport = self.connect("bmp", 1 << 20)
        mux.dataReceived(self.bulk("bmp", 1 << 20))
        self.assertEqual(transport.bufferSize, 1 << 20)

    def test_mioUnchanged(self):
        """
        MIO sets no read size: the transport's stays.
        """
        mux, transport = self.connect("mio", 65536)
        mux.dataReceived(self.bulk("mio", 65536))
        self.assertEqual(transport.bufferSize, 65536)


class MioAdapterTests(AdapterTestsMixin, SynchronousTestCase):
    framing = "mio"

    def test_keepalive(self):
        """
        An idle MIO connection sends a keepalive every keepaliveInterval.
        """
        link = self.link(keepaliveInterval=15)
        link.clock.advance(15)
        self.assertEqual(link.clientTransport.value(), bytes.fromhex("0000000000000008"))
        link.clientTransport.clear()
        link.clock.advance(15)
        self.assertEqual(link.clientTransport.value(), bytes.fromhex("0000000000000008"))

    def test_remoteFinLosesStreams(self):
        """
        A FIN from the peer ends the session: the transport closes and every
        stream is lost.
        """
        link = self.link()
        child = link.open()
        link.pump()
        link.client.dataReceived(mio.encodeFrame(mio.Frame(0, ErrorCode.EXHAUSTED, mio.FIN)))
        link.clock.advance(0)
        self.assertTrue(link.clientTransport.disconnecting)
        link.client.connectionLost(None)
        self.assertIn("EXHAUSTED", str(child.lost.value))

    def test_protocolErrorSendsFin(self):
        """
        A protocol error sends FIN with the error's code before closing.
        """
        link = self.link()
        link.server.dataReceived(mio.encodeHeader(77, 1, mio.RESET))
        link.clock.advance(0)
        self.assertEqual(link.serverTransport.value()[-8:], bytes.fromhex("00000000" "000001" "02"))
        link.server.connectionLost(None)
        self.assertIsInstance(link.server._terminated.value, MalformedFrame)

    def test_refusedStreamError(self):
        """
        A stream the peer refuses fails its child with StreamRefusedError.
        """
        link = self.link(serverChild=None)
        child = link.open()
        link.pump()
        child.lost.trap(StreamRefusedError)

    def test_zeroCopySend(self):
        """
        A write that fits one frame reaches the transport as the same
        object: no copy on the way.
        """
        link = self.link()
        child = link.open()
        written = []
        link.clientTransport.writeSequence = lambda seq: written.extend(seq)
        payload = b"p" * 5000
        child.transport.write(payload)
        self.assertTrue(any(piece is payload for piece in written))


class BmpAdapterTests(AdapterTestsMixin, SynchronousTestCase):
    framing = "bmp"

    def test_ackTimeout(self):
        """
        A frame the peer never acknowledges ends the stream after ackTimeout
        with StreamTimeoutError, and the peer is sent a close.
        """
        link = self.link(ackTimeout=30)
        child = link.open()
        child.transport.write(b"into the void")
        link.clientTransport.clear()
        link.clock.advance(29)
        self.assertIsNone(child.lost)
        link.clock.pump([1] * 10)
        child.lost.trap(StreamTimeoutError)
        self.assertIn(b"\x00io_0\x01\x00\x03\x01", link.clientTransport.value())

    def test_ackTimeoutAfterQuietSpell(self):
        """
        A small message sent once the acknowledgement check has gone quiet
        (nothing in flight, its timer fired and not re-armed) arms it
        again: the frame, never acknowledged, ends the stream after
        ackTimeout.
        """
        link = self.link(ackTimeout=4)
        child = link.open()
        child.transport.write(b"answered")
        link.pump()
        link.clock.pump([1] * 3)
        self.assertEqual(child.received(), b"answered")
        child.transport.write(b"into the void")
        link.clientTransport.clear()
        link.clock.pump([1] * 6)
        child.lost.trap(StreamTimeoutError)

    def test_acknowledgementWithoutFlush(self):
        """
        A read consumed by a child that does not answer leaves only its
        acknowledgement to send: it goes to the transport in one write,
        without a flush of the send queue.
        """
        link = self.link(serverChild=Recorder)
        child = link.open()
        child.transport.write(b"f" * 200)
        link.pump()  # (opens the stream; the server sniffs its first bytes)
        flushes = []
        self.patch(link.server, "_flush", lambda: flushes.append(1))
        writes = []
        link.serverTransport.write = lambda data, write=link.serverTransport.write: (
            writes.append(data), write(data))
        for n in range(3):
            child.transport.write(b"message")
            link.pump()
        [server] = link.serverChildren
        self.assertEqual(server.received(), b"f" * 200 + b"message" * 3)
        self.assertEqual(flushes, [])
        self.assertEqual([[(f.opt, f.payload) for f in bmp.decodeFrames(w)] for w in writes],
                         [[(bmp.ACK, b"%d" % n)] for n in (1, 2, 3)])
        self.assertIsNone(link.client.engine.stream(child.transport.streamId).inflight)

    def test_serverOpenedStreamName(self):
        """
        A server opens srv_N streams, which a muxframe client accepts.
        """
        link = self.link(clientChild=Recorder)
        child = link.open(side=link.server)
        child.transport.write(b"push")
        link.pump()
        [clientChild] = link.clientChildren
        self.assertEqual(clientChild.received(), b"push")
        self.assertEqual(clientChild.transport.streamId, b"srv_0")


class Writer(Protocol):
    """
    A child that answers each read with the writes in C{answers} (one list
    per read), in the same call.
    """

    def __init__(self, answers):
        self.answers = list(answers)

    def dataReceived(self, data):
        if self.answers:
            for piece in self.answers.pop(0):
                self.transport.write(piece)


def socketConnection(mux, sendBuffer=None):
    """
    Connect C{mux} to one end of a real loopback TCP connection through
    Twisted's own L{tcp.Server}, on a L{MemoryReactorClock} that runs
    nothing by itself (the test calls C{doRead} and C{doWrite}); return the
    transport and the peer's socket (non-blocking).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peer = socket.create_connection(listener.getsockname())
    sock, addr = listener.accept()
    listener.close()
    if sendBuffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sendBuffer)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    peer.setblocking(False)
    transport = tcp.Server(sock, mux, addr, None, 0, mux.reactor)
    mux.makeConnection(transport)
    return transport, peer


def receiveExactly(peer, size, transport=None):
    """
    Read C{size} bytes from C{peer}, waiting (boundedly) for them to arrive;
    with a C{transport}, let it write what it buffers while waiting.
    """
    data = b""
    while len(data) < size:
        if transport is not None and (transport.dataBuffer or transport._tempDataLen):
            transport.doWrite()
        if not select.select([peer], [], [], 5.0)[0]:
            raise AssertionError("%d of %d bytes arrived" % (len(data), size))
        data += peer.recv(size - len(data))
    return data


class RecordingSocket:
    """
    A stand-in for a connection's socket (L{Multiplexer._socket}) that
    records what each C{send} and C{sendmsg} sent, takes at most C{take}
    bytes of each (all by default) and passes them to the real socket;
    C{messages} holds the pieces each C{sendmsg} was given.
    """

    def __init__(self, sock, take=None):
        self.sock = sock
        self.take = take
        self.sends = []
        self.messages = []

    def send(self, data):
        data = bytes(data)
        if self.take is not None:
            data = data[:self.take]
        sent = self.sock.send(data)
        self.sends.append(data[:sent])
        return sent

    def sendmsg(self, chunks):
        self.messages.append(list(chunks))
        return self.send(b"".join(chunks))


class ClosingWriter(Protocol):
    """
    A child that, on its first read, closes the whole connection (its
    multiplexer's transport) and then writes C{data}.
    """

    def __init__(self, data):
        self.data = data

    def dataReceived(self, data):
        self.transport._mux.transport.loseConnection()
        self.transport.write(self.data)
        self.data = b""


def frames(*payloads):
    """
    The MIO data frames of stream 1 carrying C{payloads}.
    """
    return b"".join(mio.encodeHeader(1, len(p), mio.DATA) + p for p in payloads)


class DirectWriteTests(SynchronousTestCase):
    """
    On a plain TCP connection of Twisted's own, output the transport does not
    hold anything before goes straight to the socket (L{Multiplexer._write}):
    everything one call from the reactor writes (a read's answers, the
    confirmation's waiters' opens) gathered into one send when the call
    ends, a bulk frame's header and payload with one C{sendmsg}, unjoined;
    what the kernel does not take, and output behind anything the transport
    holds, go through the transport, in order.
    """

    def server(self, answers, sendBuffer=None, child=None, **settings):
        reactor = MemoryReactorClock()
        self.child = Writer(answers) if child is None else child
        mux = MultiplexerFactory(Factory.forProtocol(lambda: self.child),
                                 framing="mio", role="server", reactor=reactor,
                                 **settings).buildProtocol(None)
        transport, peer = socketConnection(mux, sendBuffer)
        self.addCleanup(peer.close)
        self.addCleanup(transport.socket.close)
        return mux, transport, peer

    def ask(self, transport, peer, message=b"ask"):
        # The peer opens stream 1 (a 16 MiB window) and sends message.
        peer.sendall(mio.encodeHeader(1, (1 << 24) - 1, mio.OPEN)
                     + mio.encodeHeader(1, len(message), mio.DATA) + message)
        select.select([transport.socket], [], [], 5.0)
        transport.doRead()

    def record(self, mux, take=None):
        # Sends to mux's socket, from now on, recorded.
        mux._socket = RecordingSocket(mux._socket, take)
        return mux._socket

    def test_answerSentInTheCallThatCausedIt(self):
        """
        A small answer written while its read is handled is on the socket
        when the read returns: nothing buffered in the transport, no
        registration for writability (Twisted's write would send it on the
        next reactor turn).
        """
        mux, transport, peer = self.server([[b"a" * 64]])
        self.ask(transport, peer)
        self.assertEqual((transport.dataBuffer, transport._tempDataLen), (b"", 0))
        self.assertNotIn(transport, mux.reactor.getWriters())
        self.assertEqual(receiveExactly(peer, 72), frames(b"a" * 64))

    def test_readsOutputSentTogether(self):
        """
        Everything a read causes to be written goes out in one send when
        the read has been handled, not its first frame at once and the rest
        a reactor turn later (a peer acting on the first frame alone might
        close the session before the rest arrived); the next read may send
        straight again.
        """
        mux, transport, peer = self.server([[b"a", b"b", b"c"], [b"d"]])
        sock = self.record(mux)
        self.ask(transport, peer)
        self.assertEqual((transport.dataBuffer, transport._tempDataLen), (b"", 0))
        self.assertNotIn(transport, mux.reactor.getWriters())
        self.assertEqual(sock.sends, [frames(b"a", b"b", b"c")])
        self.assertEqual(receiveExactly(peer, 27), frames(b"a", b"b", b"c"))
        peer.sendall(mio.encodeHeader(1, 1, mio.DATA) + b"x")
        select.select([transport.socket], [], [], 5.0)
        transport.doRead()
        self.assertEqual(sock.sends[1:], [frames(b"d")])
        self.assertEqual(receiveExactly(peer, 9), frames(b"d"))

    def test_notBehindBufferedOutput(self):
        """
        Output that finds bytes waiting in the transport is written behind
        them, through the transport, never straight to the socket ahead of
        them: the order on the wire is kept.
        """
        mux, transport, peer = self.server([[b"a" * 64]])
        sock = self.record(mux)
        transport.write(b"earlier")
        self.ask(transport, peer)
        self.assertEqual(sock.sends, [])
        self.assertEqual(receiveExactly(peer, 79, transport), b"earlier" + frames(b"a" * 64))

    def test_notAfterLoseConnection(self):
        """
        Once the connection's transport is closing (loseConnection, here
        by a child in the middle of the read), output goes through it, not
        to the socket: Twisted writes it, then closes.
        """
        mux, transport, peer = self.server(None, child=ClosingWriter(b"a" * 64))
        sock = self.record(mux)
        self.ask(transport, peer)
        self.assertEqual(sock.sends, [])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport._tempDataLen, 72)
        self.assertEqual(receiveExactly(peer, 72, transport), frames(b"a" * 64))

    def test_notOverTLS(self):
        """
        After startTLS on the connection, output goes through the transport
        (and its TLS), never to the socket in the clear.
        """
        from twisted.internet.ssl import PrivateCertificate
        from muxframe.tls import writeCertificates
        paths = writeCertificates(self.mktemp())
        with open(paths["server.pem"], "rb") as f:
            options = PrivateCertificate.loadPEM(f.read()).options()
        mux, transport, peer = self.server([])
        sock = self.record(mux)
        transport.startTLS(options)
        mux.openStream(Factory.forProtocol(Protocol))
        self.assertEqual(sock.sends, [])
        self.assertEqual(select.select([peer], [], [], 0)[0], [])

    def test_partialSendKeepsOrder(self):
        """
        When the socket takes only part of a direct send, the rest goes
        through the transport behind it: every byte arrives, in order.
        """
        writes = [b"a" * 100, b"b" * 3, bytes(range(256)) * 400]
        mux, transport, peer = self.server([writes])
        sock = self.record(mux, take=50)
        self.ask(transport, peer)
        self.assertEqual(len(sock.sends[0]), 50)
        self.assertEqual(receiveExactly(peer, sum(len(w) + 8 for w in writes), transport),
                         frames(*writes))

    def test_closeAfterDirectWrites(self):
        """
        close() once every frame has been written, some straight to the
        socket and some left in the transport (a small kernel buffer): every
        byte arrives, then the session's FIN, then the end of the
        connection.
        """
        writes = [bytes([n]) * (256 * 1024) for n in range(3)] + [b"tail"]
        mux, transport, peer = self.server([writes], sendBuffer=16 * 1024)
        self.ask(transport, peer)
        for _ in range(1000):
            if not mux.engine.hasOutput():
                break
            select.select([], [transport.socket], [], 5.0)
            transport.doWrite()
        self.assertFalse(mux.engine.hasOutput())
        mux.close()
        self.assertTrue(transport.disconnecting)
        wire = b""
        while True:
            if transport.connected:
                why = transport.doWrite()
                if why is not None:
                    transport.connectionLost(Failure(why))
            if not select.select([peer], [], [], 5.0)[0]:
                raise AssertionError("no end after %d bytes" % (len(wire),))
            data = peer.recv(1 << 20)
            if not data:
                break
            wire += data
        self.assertTrue(mux.disconnected)
        self.assertEqual(wire, frames(*writes) + mio.encodeHeader(0, 0, mio.FIN))

    def test_bulkFrameNotJoined(self):
        """
        A 256 KiB write goes out as its frame's header and the payload in
        one sendmsg: the kernel takes it all (its buffer is large enough),
        the transport never holds (or joins) it.
        """
        payload = bytes(range(256)) * 1024
        mux, transport, peer = self.server([[payload]], sendBuffer=2 << 20)
        sock = self.record(mux)
        self.ask(transport, peer)
        self.assertEqual((transport.dataBuffer, transport._tempDataLen), (b"", 0))
        # The header, then the child's own bytes: not copied into one.
        [message] = [m for m in sock.messages if len(m) > 1 or len(m[0]) > 4096]
        self.assertEqual(len(message), 2)
        self.assertIs(message[1], payload)
        self.assertEqual(receiveExactly(peer, len(payload) + 8),
                         mio.encodeHeader(1, len(payload), mio.DATA) + payload)

    def bulkAnswer(self, framing):
        # A child answers one read with three 256 KiB writes on a connection
        # of the framing; return them, the recorded socket, the transport
        # and the peer.
        payloads = [bytes([n]) * (256 * 1024) for n in range(3)]
        self.child = Writer([payloads])
        reactor = MemoryReactorClock()
        mux = MultiplexerFactory(Factory.forProtocol(lambda: self.child),
                                 framing=framing, role="server",
                                 reactor=reactor).buildProtocol(None)
        transport, peer = socketConnection(mux, 4 << 20)
        self.addCleanup(peer.close)
        self.addCleanup(transport.socket.close)
        sock = self.record(mux)
        if framing == "mio":
            self.ask(transport, peer)
        else:
            peer.sendall(bmp.encodeHeader(b"io_0", bmp.CREATE, b"0", 3) + b"ask")
            select.select([transport.socket], [], [], 5.0)
            transport.doRead()
        return payloads, sock, transport, peer

    def test_bmpBulkFramesTwoToASendmsg(self):
        """
        BMP bulk frames one call writes leave two to a C{sendmsg} (what the
        allowance, L{DIRECT_LIMIT}, sends straight), the child's payloads
        not joined, rather than one frame a system call: a BMP receiver
        that drains its socket faster than the sender fills it sleeps
        between sends, and each send that wakes it costs the sender.  The
        third frame, past the allowance, goes through the transport, and
        every byte arrives in order.
        """
        payloads, sock, transport, peer = self.bulkAnswer("bmp")
        bulk = [m for m in sock.messages if sum(map(len, m)) > 4096]
        self.assertEqual(len(bulk), 1)
        [message] = bulk
        big = [piece for piece in message if len(piece) > 4096]
        self.assertEqual(len(big), 2)
        self.assertIs(big[0], payloads[0])
        self.assertIs(big[1], payloads[1])
        self.assertGreater(transport._tempDataLen + len(transport.dataBuffer),
                           256 * 1024)
        wire = bmp.decodeFrames(receiveExactly(
            peer, len(bmp.encodeFrame(bmp.Frame(b"io_0", bmp.ACK, b"", 1, b"0")))
            + sum(len(bmp.encodeHeader(b"io_0", 0, b"%d" % n, len(p))) + len(p)
                  for n, p in enumerate(payloads)) + 1, transport))
        self.assertEqual([f.payload for f in wire if f.isData()], payloads)

    def test_mioBulkFrameASendmsg(self):
        """
        MIO bulk frames leave one to a C{sendmsg}, as soon as each is
        gathered: its receiver keeps up with the sender, which two to a
        send only slowed (docs: gatherBulk).
        """
        payloads, sock, transport, peer = self.bulkAnswer("mio")
        bulk = [m for m in sock.messages if sum(map(len, m)) > 4096]
        self.assertEqual(len(bulk), 2)
        self.assertEqual([[len(piece) for piece in m] for m in bulk],
                         [[8, 256 * 1024]] * 2)
        self.assertEqual(
            receiveExactly(peer, sum(len(p) + 8 for p in payloads), transport),
            frames(*payloads))

    def test_restThroughTheTransport(self):
        """
        What a small kernel buffer does not take goes through the transport,
        which pauses the multiplexer and resumes it as it drains: every
        byte arrives, in order, framed as the writes were.
        """
        writes = [bytes([n]) * (256 * 1024) for n in range(8)]
        mux, transport, peer = self.server([writes], sendBuffer=16 * 1024)
        self.ask(transport, peer)
        self.assertTrue(mux._transportPaused)
        wire = receiveExactly(peer, sum(len(w) + 8 for w in writes), transport)
        self.assertEqual(wire, b"".join(mio.encodeHeader(1, len(w), mio.DATA) + w
                                        for w in writes))

    def test_otherTransportsUnchanged(self):
        """
        A transport that is not a plain TCP connection (here a
        StringTransport, as TLS or a wrapper would be) gets every write.
        """
        mux = MultiplexerFactory(Factory.forProtocol(Echo), framing="mio",
                                 role="server", reactor=Clock()).buildProtocol(None)
        transport = StringTransport()
        mux.makeConnection(transport)
        self.assertIsNone(mux._socket)
        mux.dataReceived(mio.encodeHeader(1, 1 << 16, mio.OPEN)
                         + mio.encodeHeader(1, 2, mio.DATA) + b"hi")
        self.assertEqual(transport.value(), mio.encodeHeader(1, 2, mio.DATA) + b"hi")


@implementer(IPushProducer)
class RaisingProducer:
    """
    A child's streaming producer whose first C{pauseProducing} raises (a
    bug in application code, which reaches the multiplexer through the
    transport pausing it).
    """

    raised = False

    def pauseProducing(self):
        if not self.raised:
            self.raised = True
            raise RuntimeError("buggy producer")

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class ProducingEcho(Protocol):
    """
    A child with a L{RaisingProducer} registered, answering each read with
    64 bytes.
    """

    def connectionMade(self):
        self.producer = RaisingProducer()
        self.transport.registerProducer(self.producer, True)

    def dataReceived(self, data):
        self.transport.write(b"e" * 64)


def drainTo(peer, transport):
    """
    Let C{transport} write what it buffers; return what C{peer} received.
    """
    got = b""
    for _ in range(200):
        if transport.dataBuffer or transport._tempDataLen:
            transport.doWrite()
        if not select.select([peer], [], [], 0.2)[0]:
            if not (transport.dataBuffer or transport._tempDataLen):
                break
            continue
        data = peer.recv(1 << 20)
        if not data:
            break
        got += data
    return got


class RaisingReleaseTests(SynchronousTestCase):
    """
    An exception while a reactor call's gathered output is sent ends the
    gathering all the same (found in review).
    """

    def test_laterAnswersStillSent(self):
        """
        A keepalive written on a timer fills the transport, which pauses
        the child's producer, which raises: the connection stays up, and
        the answer to its next read is still sent, not held back as if a
        call were still gathering.
        """
        reactor = MemoryReactorClock()
        child = ProducingEcho()
        mux = MultiplexerFactory(Factory.forProtocol(lambda: child),
                                 framing="mio", role="server", reactor=reactor,
                                 keepaliveInterval=1.0).buildProtocol(None)
        transport, peer = socketConnection(mux)
        self.addCleanup(peer.close)
        self.addCleanup(transport.socket.close)
        peer.sendall(mio.encodeHeader(1, (1 << 24) - 1, mio.OPEN)
                     + mio.encodeHeader(1, 3, mio.DATA) + b"ask")
        select.select([transport.socket], [], [], 5.0)
        transport.doRead()
        self.assertEqual(drainTo(peer, transport), frames(b"e" * 64))
        # The transport just under its buffer size: the keepalive fills it.
        transport.write(b"x" * (transport.bufferSize - 4))
        self.assertRaises(RuntimeError, reactor.advance, 1.0)
        self.assertTrue(child.producer.raised)
        drainTo(peer, transport)
        self.assertIsNone(mux._gather)
        peer.sendall(mio.encodeHeader(1, 3, mio.DATA) + b"two")
        select.select([transport.socket], [], [], 5.0)
        transport.doRead()
        self.assertFalse(mux.disconnected)
        self.assertEqual(drainTo(peer, transport), frames(b"e" * 64))
