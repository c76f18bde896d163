"""
The stream conformance suite: one set of checks that every framing (MIO and
BMP) must pass through the real Twisted adapter (L{muxframe.Multiplexer} and
L{muxframe.stream.StreamTransport}), over loopback TCP; the checks that need
timers use a L{Clock} and an in-memory transport instead.

L{ConformanceTests} is framing-neutral (C{framing = None}); one subclass per
framing runs it.  Helpers are in L{tests.conformance}.
"""

import os
import random

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from muxframe.errors import (
    ErrorCode,
    SessionClosedError,
    StreamBufferOverflow,
    StreamError,
    StreamLimitError,
    StreamRefusedError,
)
from muxframe.stream import PAUSED_BY_TRANSPORT, StreamAddress

from .conformance import (
    KiB,
    MiB,
    BulkSender,
    ChildFactory,
    RawClient,
    Recorder,
    Service,
    TCPPair,
    digest,
    memoryPair,
    pattern,
    services,
    leftoverTimers,
    setSocketBuffers,
    turns,
    waitUntil,
)


def recorders(**kwargs):
    return ChildFactory(lambda: Recorder(**kwargs))


def recordMaxHeld(mux):
    """
    Track the most bytes C{mux} ever held for paused children; return a
    list holding that maximum, then the most memory they cost (what
    sessionBufferSize caps).
    """
    maxHeld = [0, 0]
    holding = mux._holding

    def recordHolding(stream, data):
        holding(stream, data)
        maxHeld[0] = max(maxHeld[0], mux.heldBytes())
        maxHeld[1] = max(maxHeld[1], mux.heldMemory())

    mux._holding = recordHolding
    return maxHeld


class ConformanceTests:
    """
    The checks; C{framing} names the framing under test.
    """

    framing = None
    timeout = 30

    # -- plumbing -------------------------------------------------------

    def listen(self, serverChildFactory=None, **serverSettings):
        if serverChildFactory is None:
            serverChildFactory = services()
        self.serverChildren = serverChildFactory
        return TCPPair(self, self.framing, serverChildFactory, serverSettings)

    @inlineCallbacks
    def connected(self, serverChildFactory=None, clientChildFactory=None,
                  serverSettings=None, clientSettings=None):
        """
        Listen and connect one client; return C{(pair, server, client)}.
        """
        pair = self.listen(serverChildFactory, **(serverSettings or {}))
        server, client = yield pair.connect(clientChildFactory, clientSettings)
        return pair, server, client

    @inlineCallbacks
    def openRecorder(self, mux, initial=b"", halfClose=False, keep=True):
        child = Recorder(initial=initial, halfClose=halfClose, keep=keep)
        protocol = yield mux.openStream(ChildFactory(lambda: child))
        self.assertIs(protocol, child)
        return child

    @inlineCallbacks
    def echoRoundTrip(self, mux, payload=b"ping " * 100):
        """
        Open an echo stream on C{mux}, send C{payload}, half-close, and
        check that exactly it comes back and the stream ends cleanly.
        """
        child = yield self.openRecorder(mux, b"echo\n" + payload, halfClose=True)
        yield child.lost
        reason = child.reasons[0]
        self.assertEqual(child.data, payload)
        self.assertTrue(reason.check(ConnectionDone), reason)
        return child

    def serverChild(self, client):
        """
        Return the server-side child of the stream C{client} opened.
        """
        return self.serverChildren.byStream.get(client.transport.streamId)

    def assertStreamError(self, reason):
        self.assertIsInstance(reason, Failure)
        self.assertIsInstance(reason.value, StreamError, reason)
        self.assertIsNotNone(reason.value.code)
        ErrorCode(reason.value.code)

    # -- ordering, large transfers, many streams -----------------------

    @inlineCallbacks
    def test_ordering16MiBBothDirections(self):
        """
        16 MiB each way on one stream, at the same time, arrive byte-exact
        and in order; the stream then ends cleanly on both sides.
        """
        size = 16 * MiB
        pair, server, client = yield self.connected()
        up, down = pattern(1, size), pattern(2, size)
        child = yield self.openRecorder(
            client, b"send %d 2\n" % (size,), keep=False)
        sender = BulkSender(child.transport, up, 65521,  # unaligned writes
                            then=child.transport.loseWriteConnection)
        sender.start()
        yield child.lost
        reason = child.reasons[0]
        far = self.serverChild(child)
        yield far.lost
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(child.count, size)
        self.assertEqual(child.hasher.hexdigest(), digest(down))
        self.assertEqual(far.count, size)
        self.assertEqual(far.hasher.hexdigest(), digest(up))
        self.assertTrue(far.reasons[0].check(ConnectionDone), far.reasons[0])
        self.assertEqual(len(child.reasons), 1)
        self.assertEqual(len(far.reasons), 1)
    test_ordering16MiBBothDirections.timeout = 60

    @inlineCallbacks
    def test_thousandConcurrentStreams(self):
        """
        1000 streams open at once, each echoing 4 KiB of its own bytes: every
        one comes back intact and ends cleanly.
        """
        count, size = 1000, 4 * KiB
        pair, server, client = yield self.connected()
        children = []
        for i in range(count):
            payload = pattern(1000 + i, size)
            child = Recorder(initial=b"echo\n" + payload, halfClose=True)
            child.expected = payload
            yield client.openStream(ChildFactory(lambda child=child: child))
            children.append(child)
        self.assertEqual(client.streamCount(), count)
        yield gatherResults([c.lost for c in children])
        reasons = [c.reasons[0] for c in children]
        for child, reason in zip(children, reasons):
            self.assertTrue(reason.check(ConnectionDone), reason)
            self.assertEqual(child.data, child.expected)
        self.assertEqual(len(self.serverChildren.built), count)
        self.assertEqual(len({c.address.streamId for c in self.serverChildren.built}), count)
        yield waitUntil(lambda: server.streamCount() == 0 and client.streamCount() == 0,
                        "every stream forgotten")
        # A second wave, opened from the other side: ids are never reused
        # and nothing leaked from the first.
        clientChildren = services()
        client.childFactory = clientChildren
        second = []
        for i in range(count):
            child = Recorder(initial=b"echo\n" + pattern(1000 + i, 512), halfClose=True)
            child.expected = pattern(1000 + i, 512)
            yield server.openStream(ChildFactory(lambda child=child: child))
            second.append(child)
        yield gatherResults([c.lost for c in second])
        for child in second:
            self.assertTrue(child.reasons[0].check(ConnectionDone), child.reasons[0])
            self.assertEqual(child.data, child.expected)
        self.assertEqual(len(clientChildren.built), count)
        ids = [c.transport.streamId for c in children + second]
        self.assertEqual(len(set(ids)), 2 * count)
        # The session still works afterwards.
        yield self.echoRoundTrip(client)
    test_thousandConcurrentStreams.timeout = 60

    # -- half-close ----------------------------------------------------

    @inlineCallbacks
    def test_halfCloseClientFirst(self):
        """
        The opener half-closes; the far end sees readConnectionLost, keeps
        writing, then half-closes too.  Order on each side: writeConnectionLost
        after the end is sent, readConnectionLost after the peer's end, then a
        clean connectionLost once.
        """
        pair, server, client = yield self.connected(serverChildFactory=recorders())
        child = yield self.openRecorder(client, b"request", halfClose=True)
        yield child.writeLost
        yield waitUntil(lambda: self.serverChildren.built, "the far child")
        far = self.serverChildren.built[0]
        yield far.readLost
        self.assertEqual(far.data, b"request")
        far.transport.write(b"reply after your end")
        yield child.whenReceived(len(b"reply after your end"))
        self.assertEqual(child.events, ["made", "writeLost", "data"])
        far.transport.write(b"; more")
        far.transport.loseWriteConnection()
        yield child.lost
        reason = child.reasons[0]
        yield far.lost
        farReason = far.reasons[0]
        self.assertEqual(child.data, b"reply after your end; more")
        self.assertEqual(child.events, ["made", "writeLost", "data", "readLost", "lost"])
        self.assertEqual(far.events, ["made", "data", "readLost", "writeLost", "lost"])
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertTrue(farReason.check(ConnectionDone), farReason)

    @inlineCallbacks
    def test_halfCloseServerFirst(self):
        """
        The far end half-closes first while the opener keeps writing, then
        the opener ends: each side's events come in the right order.
        """
        pair, server, client = yield self.connected(serverChildFactory=recorders())
        child = yield self.openRecorder(client, b"hello")
        yield waitUntil(lambda: self.serverChildren.built, "the far child")
        far = self.serverChildren.built[0]
        yield far.whenReceived(5)
        far.transport.write(b"bye")
        far.transport.loseWriteConnection()
        yield far.writeLost
        yield child.readLost
        self.assertEqual(child.data, b"bye")
        child.transport.write(b" still talking")
        yield far.whenReceived(len(b"hello still talking"))
        self.assertEqual(far.events, ["made", "data", "writeLost", "data"])
        child.transport.loseWriteConnection()
        yield child.lost
        reason = child.reasons[0]
        yield far.lost
        farReason = far.reasons[0]
        self.assertEqual(far.data, b"hello still talking")
        self.assertEqual(child.events, ["made", "data", "readLost", "writeLost", "lost"])
        self.assertEqual(far.events, ["made", "data", "writeLost", "data", "readLost", "lost"])
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertTrue(farReason.check(ConnectionDone), farReason)

    @inlineCallbacks
    def test_loseConnectionEndsBothDirections(self):
        """
        loseConnection() on a stream flushes what was written, ends it, and
        both children see a clean connectionLost once (a child that is not
        half-closeable has its stream closed for it when the peer ends, as
        TCP does).
        """
        from twisted.internet.protocol import Protocol

        class Plain(Protocol):
            def __init__(self):
                self.received = b""
                self.reasons = []

            def dataReceived(self, data):
                self.received += data

            def connectionLost(self, reason):
                self.reasons.append(reason)

        plain = ChildFactory(Plain)
        pair, server, client = yield self.connected(serverChildFactory=plain)
        child = yield self.openRecorder(client)
        child.transport.write(b"x" * 100000)
        child.transport.loseConnection()
        yield child.lost
        reason = child.reasons[0]
        yield waitUntil(lambda: plain.built and plain.built[0].reasons, "far end lost")
        far = plain.built[0]
        self.assertEqual(far.received, b"x" * 100000)
        self.assertEqual(len(far.reasons), 1)
        self.assertTrue(far.reasons[0].check(ConnectionDone), far.reasons[0])
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(len(child.reasons), 1)

    @inlineCallbacks
    def test_simultaneousHalfClose(self):
        """
        Both ends half-close in the same reactor turn: each sees
        writeConnectionLost and readConnectionLost, then one clean
        connectionLost.
        """
        pair, server, client = yield self.connected(serverChildFactory=recorders())
        child = yield self.openRecorder(client, b"a")
        yield waitUntil(lambda: self.serverChildren.built, "the far child")
        far = self.serverChildren.built[0]
        yield far.whenReceived(1)
        far.transport.write(b"b")
        far.transport.loseWriteConnection()
        child.transport.loseWriteConnection()
        yield gatherResults([child.lost, far.lost])
        for end, data in ((child, b"b"), (far, b"a")):
            self.assertEqual(end.data, data)
            self.assertEqual(end.events.count("readLost"), 1)
            self.assertEqual(end.events.count("writeLost"), 1)
            self.assertLess(end.events.index("data"), end.events.index("readLost"))
            self.assertEqual(end.events[-1], "lost")
            self.assertEqual(len(end.reasons), 1)
            self.assertTrue(end.reasons[0].check(ConnectionDone), end.reasons[0])

    @inlineCallbacks
    def test_abortWhilePeerSends(self):
        """
        The accepting side aborts a stream while the opener is still
        sending in bulk: the opener's producer is stopped and its child sees
        a StreamError; the frames still in flight do not resurrect the
        stream at the acceptor (no second child is built); the session
        keeps working.
        """
        settings = dict(maxFrameSize=16 * KiB, maxInFlight=16, windowSize=1 * MiB)
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        child = yield self.openRecorder(client)
        sender = BulkSender(child.transport, b"abort\n" + pattern(14, 2 * MiB), 16 * KiB)
        sender.start()
        yield child.lost
        self.assertStreamError(child.reasons[0])
        yield waitUntil(lambda: sender.stopped, "the opener's producer to be stopped")
        yield self.echoRoundTrip(client)
        yield turns(10)
        self.assertEqual(server.counters.streamsAccepted, 2)
        self.assertEqual(len(self.serverChildren.built), 2)
        self.assertEqual(server.streamCount(), 0)
        self.assertEqual(client.streamCount(), 0)

    @inlineCallbacks
    def test_loseConnectionWhilePausedDiscards(self):
        """
        A paused child holding unread data calls loseConnection(): the held
        data is dropped and its credit returned, so the peer's sender is not
        stuck; it finishes, and both ends see a clean connectionLost.
        """
        settings = self.backpressureSettings()
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        child = yield self.openRecorder(client, keep=False)
        child.transport.pauseProducing()
        child.transport.write(b"send %d 15\n" % (1 * MiB,))
        yield waitUntil(lambda: self.serverChild(child) is not None
                        and self.serverChild(child).sender is not None
                        and self.serverChild(child).sender.pauses,
                        "the far sender to be paused")
        yield waitUntil(lambda: client.heldBytes() > 0, "data held for the paused child")
        far = self.serverChild(child)
        child.transport.loseConnection()
        yield waitUntil(lambda: far.sender.done.called,
                        "the far sender to finish (credit returned for discarded data)",
                        timeout=3)
        yield gatherResults([child.lost, far.lost])
        self.assertTrue(child.reasons[0].check(ConnectionDone), child.reasons[0])
        self.assertTrue(far.reasons[0].check(ConnectionDone), far.reasons[0])
        self.assertEqual(child.count, 0)
        self.assertEqual(client.heldBytes(), 0)
        yield self.echoRoundTrip(client)

    # -- abort ---------------------------------------------------------

    @inlineCallbacks
    def test_abortByOpener(self):
        """
        abortConnection() on the opener's side: its child sees
        ConnectionAborted, the far child a StreamError, other streams go on.
        """
        pair, server, client = yield self.connected()
        other = yield self.openRecorder(client, b"echo\nfirst ")
        victim = yield self.openRecorder(client, b"echo\nsome data")
        yield victim.whenReceived(len(b"some data"))
        yield other.whenReceived(len(b"first "))
        far = self.serverChild(victim)
        victim.transport.abortConnection()
        yield victim.lost
        reason = victim.reasons[0]
        self.assertTrue(reason.check(ConnectionAborted), reason)
        yield far.lost
        farReason = far.reasons[0]
        self.assertStreamError(farReason)
        other.transport.write(b"second")
        other.transport.loseWriteConnection()
        yield other.lost
        otherReason = other.reasons[0]
        self.assertTrue(otherReason.check(ConnectionDone), otherReason)
        self.assertEqual(other.data, b"first second")
        self.assertEqual(len(victim.reasons), 1)
        self.assertEqual(len(far.reasons), 1)
        yield self.echoRoundTrip(client)

    @inlineCallbacks
    def test_abortByAcceptor(self):
        """
        abortConnection() on the side that accepted the stream: the opener's
        child sees a StreamError, the aborting child ConnectionAborted.
        """
        pair, server, client = yield self.connected()
        other = yield self.openRecorder(client, b"echo\nfirst ")
        victim = yield self.openRecorder(client, b"abort\n")
        yield victim.lost
        reason = victim.reasons[0]
        self.assertStreamError(reason)
        far = self.serverChild(victim)
        yield far.lost
        self.assertTrue(far.reasons[0].check(ConnectionAborted), far.reasons[0])
        yield other.whenReceived(len(b"first "))
        other.transport.write(b"second")
        other.transport.loseWriteConnection()
        yield other.lost
        otherReason = other.reasons[0]
        self.assertTrue(otherReason.check(ConnectionDone), otherReason)
        self.assertEqual(other.data, b"first second")
        self.assertEqual(len(victim.reasons), 1)

    # -- back-pressure -------------------------------------------------

    def backpressureSettings(self):
        return dict(windowSize=64 * KiB, maxFrameSize=16 * KiB,
                    streamBufferSize=32 * KiB, maxInFlight=4)

    def receiveBound(self, settings):
        """
        The most a paused child's stream may hold at the receiver: the
        window (MIO) or the frames in flight (BMP), plus one frame.
        """
        if self.framing == "mio":
            return settings["windowSize"] + settings["maxFrameSize"]
        return (settings["maxInFlight"] + 1) * settings["maxFrameSize"]

    @inlineCallbacks
    def test_backpressurePausedChild(self):
        """
        A child that pauses its transport: the sender's producer is paused,
        the receiver holds no more than the window / in-flight frames plus
        one frame, another stream keeps flowing, and after resuming
        everything arrives intact.
        """
        settings = self.backpressureSettings()
        size = 2 * MiB
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        maxHeld = recordMaxHeld(client)
        child = yield self.openRecorder(client, keep=False)
        child.transport.pauseProducing()
        child.transport.write(b"send %d 7\n" % (size,))
        yield waitUntil(lambda: self.serverChild(child) is not None
                        and self.serverChild(child).sender is not None
                        and self.serverChild(child).sender.pauses,
                        "the sender's producer to be paused")
        sender = self.serverChild(child).sender
        streamId = child.transport.streamId
        if self.framing == "mio":
            full = lambda: client.engine.stream(streamId).bytesReceived >= settings["windowSize"]
        else:
            full = lambda: len(server.engine.stream(streamId).inflight or ()) >= settings["maxInFlight"]
        yield waitUntil(full, "the receive window / in-flight frames to fill")
        yield turns(20)
        self.assertEqual(child.count, 0)
        self.assertTrue(sender.paused)
        self.assertLess(sender.offset, size)
        bound = self.receiveBound(settings)
        self.assertGreater(maxHeld[0], 0)
        self.assertLessEqual(maxHeld[0], bound)
        self.assertLessEqual(client.heldBytes(), bound)
        self.assertLessEqual(sender.maxBuffered, settings["streamBufferSize"] + sender.chunk)
        # Only this stream's credit is withheld: another one flows.
        yield self.echoRoundTrip(client, b"z" * (200 * KiB))
        child.transport.resumeProducing()
        yield child.readLost
        child.transport.loseWriteConnection()
        yield child.lost
        reason = child.reasons[0]
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(child.count, size)
        self.assertEqual(child.hasher.hexdigest(), digest(pattern(7, size)))
        self.assertGreaterEqual(sender.resumes, 1)
        self.assertLessEqual(maxHeld[0], bound)
        self.assertEqual(client.heldBytes(), 0)

    def grownSettings(self):
        return dict(windowSize=64 * KiB, maxFrameSize=16 * KiB,
                    streamBufferSize=32 * KiB, maxWindowSize=1 * MiB,
                    maxInFlight=64, maxBytesInFlight=200 * KiB)

    def creditBound(self, mux, streamId, settings):
        """
        What the peer may send on C{streamId} toward C{mux} unconsumed: the
        stream's receive window now (MIO, grown by auto-tuning) or the
        frames it may have in flight (BMP).
        """
        if self.framing == "mio":
            return mux.engine.receiveWindow(streamId)
        return min(settings["maxInFlight"] * settings["maxFrameSize"],
                   settings["maxBytesInFlight"])

    @inlineCallbacks
    def test_grownWindowStillBoundsPausedChild(self):
        """
        A child that kept up long enough for its stream's window to grow
        (MIO auto-tuning), then pauses: the receiver holds no more than the
        window at the pause plus one frame, the window does not grow while
        paused, and after resuming everything arrives intact.  (BMP: the
        bound is maxBytesInFlight, below maxInFlight frames.)
        """
        settings = self.grownSettings()
        size = 12 * MiB
        threshold = 6 * MiB
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        maxHeld = recordMaxHeld(client)

        class Pauser(Recorder):
            pausedAt = None

            def dataReceived(self, data):
                Recorder.dataReceived(self, data)
                if self.pausedAt is None and self.count >= threshold:
                    self.pausedAt = self.count
                    self.transport.pauseProducing()

        child = Pauser(keep=False)
        yield client.openStream(ChildFactory(lambda: child))
        child.transport.write(b"send %d 9\n" % (size,))
        yield waitUntil(lambda: child.pausedAt is not None, "the child to pause")
        streamId = child.transport.streamId
        window = self.creditBound(client, streamId, settings)
        if self.framing == "mio":
            self.assertGreater(window, settings["windowSize"])
            self.assertLessEqual(window, settings["maxWindowSize"])
        yield waitUntil(lambda: self.serverChild(child).sender is not None
                        and self.serverChild(child).sender.pauses,
                        "the far sender to be paused")
        yield turns(20)
        self.assertEqual(self.creditBound(client, streamId, settings), window)
        bound = window + settings["maxFrameSize"]
        self.assertGreater(maxHeld[0], 0)
        self.assertLessEqual(maxHeld[0], bound)
        self.assertLess(child.pausedAt + client.heldBytes(), size)
        child.transport.resumeProducing()
        yield child.readLost
        child.transport.loseWriteConnection()
        yield child.lost
        self.assertEqual(child.count, size)
        self.assertEqual(child.hasher.hexdigest(), digest(pattern(9, size)))
        self.assertLessEqual(maxHeld[0], bound)

    @inlineCallbacks
    def test_backpressureSlowTCPPeer(self):
        """
        A fast producer toward a peer that stops reading its socket: the
        multiplexer is paused by its TCP transport, which pauses every
        stream's producer (idle ones too); the stream's unsent buffer stays
        within streamBufferSize plus one write; once the peer reads again,
        everything resumes and arrives intact.
        """
        size = 8 * MiB
        settings = dict(windowSize=(1 << 24) - 1, maxInFlight=4096,
                        streamBufferSize=64 * KiB)
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        setSocketBuffers(server.transport, send=16 * KiB)
        setSocketBuffers(client.transport, receive=16 * KiB)
        idles = []
        for i in range(3):
            idle = yield self.openRecorder(client, b"idle\n")
            idles.append(idle)
        yield waitUntil(lambda: all(self.serverChild(c) is not None
                                    and self.serverChild(c).producer is not None
                                    for c in idles), "idle producers registered")
        client.transport.pauseProducing()  # stop reading the socket
        bulk = yield self.openRecorder(client, b"send %d 9\n" % (size,), keep=False)
        yield waitUntil(lambda: server._transportPaused, "the server's TCP transport to pause it")
        yield waitUntil(lambda: self.serverChild(bulk).sender.paused, "the bulk producer to pause")
        yield turns(20)
        sender = self.serverChild(bulk).sender
        self.assertLess(sender.offset, size)
        for idle in idles:
            producer = self.serverChild(idle).producer
            self.assertTrue(producer.paused, "idle producer not paused by the transport")
            self.assertTrue(self.serverChild(idle).transport._pausedBy & PAUSED_BY_TRANSPORT)
        self.assertLessEqual(sender.maxBuffered, settings["streamBufferSize"] + sender.chunk)
        self.assertLessEqual(server.engine.sendBuffered(bulk.transport.streamId),
                             settings["streamBufferSize"] + sender.chunk)
        client.transport.resumeProducing()
        yield bulk.readLost
        bulk.transport.loseWriteConnection()
        yield bulk.lost
        reason = bulk.reasons[0]
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(bulk.count, size)
        self.assertEqual(bulk.hasher.hexdigest(), digest(pattern(9, size)))
        self.assertGreaterEqual(sender.resumes, 1)
        self.assertLessEqual(sender.maxBuffered, settings["streamBufferSize"] + sender.chunk)
        for idle in idles:
            producer = self.serverChild(idle).producer
            self.assertFalse(producer.paused)
            self.assertGreaterEqual(producer.resumes, 1)

    @inlineCallbacks
    def test_producerPausedWhenStreamBufferFull(self):
        """
        A producer writing faster than the peer's credit allows is paused
        once its stream buffers streamBufferSize, and the buffer never
        exceeds that plus one write.
        """
        settings = self.backpressureSettings()
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        child = yield self.openRecorder(client, b"hold\n")
        yield waitUntil(lambda: self.serverChild(child) is not None, "the far child")
        sender = BulkSender(child.transport, pattern(11, 1 * MiB), 8 * KiB)
        sender.start()
        yield waitUntil(lambda: sender.pauses, "the producer to be paused")
        yield turns(20)
        self.assertTrue(sender.paused)
        self.assertLess(sender.offset, 1 * MiB)
        self.assertLessEqual(sender.maxBuffered, settings["streamBufferSize"] + sender.chunk)
        self.assertGreaterEqual(client.engine.sendBuffered(child.transport.streamId),
                                settings["streamBufferSize"])
        far = self.serverChild(child)
        far.transport.resumeProducing()
        yield sender.done
        child.transport.loseWriteConnection()
        yield far.readLost
        self.assertEqual(far.count, 1 * MiB)
        self.assertEqual(far.hasher.hexdigest(), digest(pattern(11, 1 * MiB)))
        self.assertLessEqual(sender.maxBuffered, settings["streamBufferSize"] + sender.chunk)

    @inlineCallbacks
    def test_sessionBufferCapBoundsHeldBytes(self):
        """
        A peer allowed to send a lot (MIO: the opener's own large window;
        BMP: many frames in flight) toward paused children: past
        sessionBufferSize the receiver stops reading its socket, so the
        bytes it holds stay within the cap plus one socket read; once the
        children resume, everything arrives intact.
        """
        cap = 64 * KiB
        serverSettings = dict(sessionBufferSize=cap)
        clientSettings = dict(windowSize=4 * MiB, maxInFlight=64)
        pair, server, client = yield self.connected(
            serverSettings=serverSettings, clientSettings=clientSettings)
        maxHeld = recordMaxHeld(server)
        size = 1 * MiB
        children = []
        for i in range(4):
            child = yield self.openRecorder(client, b"hold\n")
            children.append(child)
        yield waitUntil(lambda: all(self.serverChild(c) is not None for c in children),
                        "the far children")
        for i, child in enumerate(children):
            child.transport.write(pattern(60 + i, size))
        yield waitUntil(lambda: server.readingPaused, "the server to stop reading")
        yield turns(20)
        readSize = 64 * KiB  # what one doRead of a TCP transport takes
        self.assertGreater(maxHeld[1], cap)
        self.assertLessEqual(maxHeld[0], cap + readSize)
        for child in children:
            self.assertEqual(self.serverChild(child).count, 0)
        for child in children:
            self.serverChild(child).transport.resumeProducing()
        yield waitUntil(lambda: all(self.serverChild(c).count >= size for c in children),
                        "every byte to reach the resumed children")
        for i, child in enumerate(children):
            far = self.serverChild(child)
            self.assertEqual(far.count, size)
            self.assertEqual(far.hasher.hexdigest(), digest(pattern(60 + i, size)))
        self.assertLessEqual(maxHeld[0], cap + readSize)
        self.assertEqual(server.heldBytes(), 0)
        self.assertFalse(server.readingPaused)
        yield self.echoRoundTrip(client)

    @inlineCallbacks
    def test_pauseResumeFlappingKeepsOrder(self):
        """
        A child that pauses and resumes its transport at random while 4 MiB
        arrive (some delivered at once, some held) receives every byte in
        order, then the end of stream after the last byte.
        """
        size = 4 * MiB
        settings = dict(windowSize=128 * KiB, maxFrameSize=8 * KiB, maxInFlight=8)
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        rng = random.Random(5)
        pauses = [0]

        class Flapper(Recorder):
            def dataReceived(self, data):
                Recorder.dataReceived(self, data)
                if rng.random() < 0.3:
                    pauses[0] += 1
                    self.transport.pauseProducing()
                    reactor.callLater(rng.choice([0, 0, 0.001]),
                                      self.transport.resumeProducing)

            def readConnectionLost(self):
                Recorder.readConnectionLost(self)
                self.endAt = self.count
                self.transport.loseWriteConnection()

        child = Flapper(initial=b"send %d 3\n" % (size,), keep=False)
        yield client.openStream(ChildFactory(lambda: child))
        yield child.lost
        reason = child.reasons[0]
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(child.count, size)
        self.assertEqual(child.endAt, size)
        self.assertEqual(child.hasher.hexdigest(), digest(pattern(3, size)))
        self.assertGreater(pauses[0], 10)
        self.assertEqual(child.events, ["made", "data", "readLost", "writeLost", "lost"])
        self.assertEqual(client.heldBytes(), 0)

    @inlineCallbacks
    def test_endOfStreamWhilePausedWaitsForResume(self):
        """
        Data and the peer's end of stream that arrive while the child is
        paused are delivered after it resumes, data first, then
        readConnectionLost.
        """
        pair, server, client = yield self.connected()
        child = yield self.openRecorder(client)
        child.transport.pauseProducing()
        child.transport.write(b"send %d 4\n" % (100 * KiB,))
        streamId = child.transport.streamId
        yield waitUntil(lambda: self.serverChild(child) is not None
                        and self.serverChild(child).sender is not None
                        and self.serverChild(child).sender.done.called,
                        "the far end to finish sending")
        yield waitUntil(lambda: client.engine.stream(streamId) is None
                        or client.engine.stream(streamId).remoteEnded,
                        "the end of stream to arrive")
        yield turns(5)
        self.assertEqual(child.events, ["made"])
        child.transport.resumeProducing()
        yield child.readLost
        self.assertEqual(child.events, ["made", "data", "readLost"])
        self.assertEqual(child.data, pattern(4, 100 * KiB))
        child.transport.loseWriteConnection()
        yield child.lost
        self.assertTrue(child.reasons[0].check(ConnectionDone), child.reasons[0])

    @inlineCallbacks
    def test_writeConnectionLostAfterEndIsSent(self):
        """
        loseWriteConnection() with data still waiting for credit: the data
        is sent first, and writeConnectionLost comes only once the end of
        stream has gone out (after the peer resumes reading).
        """
        settings = self.backpressureSettings()
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        child = yield self.openRecorder(client, b"hold\n")
        yield waitUntil(lambda: self.serverChild(child) is not None, "the far child")
        far = self.serverChild(child)
        data = pattern(12, 300 * KiB)
        child.transport.write(data)
        child.transport.loseWriteConnection()
        child.transport.write(b"dropped: written after the end")
        yield turns(20)
        self.assertNotIn("writeLost", child.events)
        self.assertGreater(client.engine.sendBuffered(child.transport.streamId), 0)
        far.transport.resumeProducing()
        yield far.readLost
        yield child.writeLost
        self.assertEqual(far.count, len(b"") + len(data))
        self.assertEqual(far.hasher.hexdigest(), digest(data))
        self.assertEqual(child.reasons, [])
        far.transport.loseWriteConnection()
        yield child.lost
        self.assertTrue(child.reasons[0].check(ConnectionDone), child.reasons[0])

    @inlineCallbacks
    def test_pullProducerOnStream(self):
        """
        A non-streaming producer (twisted.protocols.basic.FileSender) works
        on a stream, as on a TCP transport.
        """
        from io import BytesIO
        from twisted.protocols.basic import FileSender
        settings = self.backpressureSettings()
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        child = yield self.openRecorder(client, b"echo\n", keep=False)
        data = pattern(13, 1 * MiB)
        yield FileSender().beginFileTransfer(BytesIO(data), child.transport)
        child.transport.loseWriteConnection()
        yield child.lost
        self.assertTrue(child.reasons[0].check(ConnectionDone), child.reasons[0])
        self.assertEqual(child.count, len(data))
        self.assertEqual(child.hasher.hexdigest(), digest(data))

    @inlineCallbacks
    def test_childExceptionResetsOnlyItsStream(self):
        """
        A child whose dataReceived raises has its stream reset (the peer
        sees a StreamError, the child a connectionLost with the error); the
        session and other streams carry on.
        """
        class Boom(Recorder):
            def dataReceived(self, data):
                Recorder.dataReceived(self, data)
                raise ValueError("child bug")

        pair, server, client = yield self.connected()
        other = yield self.openRecorder(client, b"echo\nfirst ")
        boom = Boom(initial=b"echo\nexplode")
        yield client.openStream(ChildFactory(lambda: boom))
        yield boom.lost
        self.assertEqual(len(boom.reasons), 1)
        self.assertTrue(boom.reasons[0].check(ValueError), boom.reasons[0])
        far = self.serverChild(boom)
        yield far.lost
        self.assertStreamError(far.reasons[0])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        yield other.whenReceived(6)
        other.transport.loseWriteConnection()
        yield other.lost
        self.assertEqual(other.data, b"first ")
        self.assertTrue(other.reasons[0].check(ConnectionDone), other.reasons[0])
        yield self.echoRoundTrip(client)

    @inlineCallbacks
    def test_writesAfterCloseAreDropped(self):
        """
        As on TCP, write() after loseConnection()/loseWriteConnection() or
        after the stream is gone is silently dropped, never an error.
        """
        pair, server, client = yield self.connected()
        child = yield self.openRecorder(client, b"echo\nlast")
        child.transport.loseConnection()
        child.transport.write(b"dropped")
        child.transport.writeSequence([b"dropped"])
        yield child.lost
        child.transport.write(b"after the end")
        child.transport.loseConnection()
        child.transport.loseWriteConnection()
        child.transport.abortConnection()
        far = self.serverChild(child)
        yield far.lost
        self.assertEqual(far.count, len(b"last"))
        self.assertEqual(len(child.reasons), 1)
        self.assertEqual(len(far.reasons), 1)

    @inlineCallbacks
    def test_streamAddresses(self):
        """
        getPeer()/getHost() of a stream are StreamAddresses wrapping the
        connection's addresses and the stream id; both ends agree on the id;
        ids of the two sides never collide.
        """
        clientChildren = services()
        pair, server, client = yield self.connected(clientChildFactory=clientChildren)
        mine = []
        for i in range(3):
            child = yield self.openRecorder(client, b"echo\nx")
            mine.append(child)
        theirs = []
        for i in range(3):
            child = yield self.openRecorder(server, b"echo\ny")
            theirs.append(child)
        yield gatherResults([c.whenReceived(1) for c in mine + theirs])
        for child in mine:
            peer, host = child.transport.getPeer(), child.transport.getHost()
            self.assertIsInstance(peer, StreamAddress)
            self.assertEqual(peer.address, client.transport.getPeer())
            self.assertEqual(host.address, client.transport.getHost())
            self.assertEqual(peer.streamId, child.transport.streamId)
            self.assertEqual(peer.framing, self.framing)
            far = self.serverChild(child)
            self.assertEqual(far.transport.getHost().streamId, peer.streamId)
            self.assertEqual(far.address.address, server.transport.getPeer())
        ids = [c.transport.streamId for c in mine + theirs]
        self.assertEqual(len(set(ids)), 6)
        if self.framing == "mio":
            self.assertEqual({i % 2 for i in ids[:3]}, {1})
            self.assertEqual({i % 2 for i in ids[3:]}, {0})
        self.assertEqual(sorted(c.address.streamId for c in clientChildren.built),
                         sorted(ids[3:]))

    @inlineCallbacks
    def test_smallMessagesDoNotQueueBehindBulk(self):
        """
        A small echo on one stream completes while a 16 MiB blast (written
        in one write, no producer) is still arriving on another: output is
        scheduled round-robin, not first in, first out.
        """
        size = 16 * MiB
        settings = dict(windowSize=(1 << 24) - 1, maxInFlight=4096)
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        setSocketBuffers(server.transport, send=64 * KiB)
        setSocketBuffers(client.transport, receive=64 * KiB)
        bulk = yield self.openRecorder(client, b"blast %d 16\n" % (size,), keep=False)
        yield bulk.whenReceived(1)
        small = yield self.openRecorder(client, b"echo\nquick", halfClose=True)
        yield small.lost
        atEcho = bulk.count
        self.assertEqual(small.data, b"quick")
        self.assertLess(atEcho, size // 2)
        yield bulk.readLost
        bulk.transport.loseWriteConnection()
        yield bulk.lost
        self.assertEqual(bulk.count, size)
        self.assertEqual(bulk.hasher.hexdigest(), digest(pattern(16, size)))

    @inlineCallbacks
    def test_asymmetricWindows(self):
        """
        Ends with very different windows / frames in flight (one side 1 KiB
        and 1 frame, the other 1 MiB and 64) exchange data both ways on
        streams opened by either side, with no flow-control error.
        """
        small = dict(windowSize=1024, maxInFlight=1, maxFrameSize=4 * KiB)
        large = dict(windowSize=1 * MiB, maxInFlight=64, maxFrameSize=4 * KiB)
        clientChildren = services()
        pair, server, client = yield self.connected(
            clientChildFactory=clientChildren,
            serverSettings=large, clientSettings=small)
        size = 256 * KiB
        children = []
        for mux, seed in ((client, 30), (server, 31)):
            child = yield self.openRecorder(mux, b"send %d %d\n" % (size, seed), keep=False)
            sender = BulkSender(child.transport, pattern(seed + 10, size), 3000,
                                then=child.transport.loseWriteConnection)
            sender.start()
            children.append((child, seed))
        yield gatherResults([c.lost for c, seed in children])
        for child, seed in children:
            self.assertTrue(child.reasons[0].check(ConnectionDone), child.reasons[0])
            self.assertEqual(child.count, size)
            self.assertEqual(child.hasher.hexdigest(), digest(pattern(seed, size)))
        fars = [self.serverChild(children[0][0]), clientChildren.built[0]]
        for far, (child, seed) in zip(fars, children):
            yield far.lost
            self.assertEqual(far.count, size)
            self.assertEqual(far.hasher.hexdigest(), digest(pattern(seed + 10, size)))
        self.assertEqual(server.counters.resetsSent, {})
        self.assertEqual(client.counters.resetsSent, {})

    @inlineCallbacks
    def test_twoConnectionsAreIndependent(self):
        """
        Two multiplexed connections to one server, 100 streams each, at the
        same time: every stream is served on its own connection.
        """
        pair = self.listen()
        conns = yield gatherResults([pair.connect(), pair.connect()])
        children = []
        for n, (server, client) in enumerate(conns):
            for i in range(100):
                payload = b"%d/%d " % (n, i) * 50
                child = yield self.openRecorder(client, b"echo\n" + payload, halfClose=True)
                child.expected = payload
                children.append(child)
        yield gatherResults([c.lost for c in children])
        for child in children:
            self.assertEqual(child.data, child.expected)
            self.assertTrue(child.reasons[0].check(ConnectionDone), child.reasons[0])
        self.assertEqual(sorted(s.counters.streamsAccepted for s, c in conns), [100, 100])

    @inlineCallbacks
    def test_existingTwistedProtocolsRunUnchanged(self):
        """
        AMP, an ordinary Twisted protocol, runs on streams unchanged: 20
        streams, 10 concurrent calls each.
        """
        from twisted.protocols import amp
        from twisted.internet.protocol import Factory

        class Sum(amp.Command):
            arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
            response = [(b"total", amp.Integer())]

        class Adder(amp.AMP):
            @Sum.responder
            def sum(self, a, b):
                return {"total": a + b}

        pair, server, client = yield self.connected(
            serverChildFactory=Factory.forProtocol(Adder))
        calls, expected = [], []
        protocols = []
        for i in range(20):
            proto = yield client.openStream(Factory.forProtocol(amp.AMP))
            protocols.append(proto)
            for j in range(10):
                calls.append(proto.callRemote(Sum, a=i, b=j * 1000))
                expected.append({"total": i + j * 1000})
        results = yield gatherResults(calls)
        self.assertEqual(results, expected)
        for proto in protocols:
            proto.transport.loseConnection()
        yield waitUntil(lambda: server.streamCount() == 0 and client.streamCount() == 0,
                        "every AMP stream to close")

    # -- who opens -----------------------------------------------------

    @inlineCallbacks
    def test_serverOpenedStream(self):
        """
        The accepting side opens a stream toward the connecting side, whose
        childFactory serves it; ids cannot collide with the client's own.
        """
        clientChildren = services()
        pair, server, client = yield self.connected(clientChildFactory=clientChildren)
        mine = yield self.openRecorder(client, b"echo\nclient side")
        theirs = yield self.openRecorder(server, b"echo\nserver side", halfClose=True)
        yield theirs.lost
        reason = theirs.reasons[0]
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(theirs.data, b"server side")
        far = clientChildren.built[0]
        self.assertIsInstance(far.address, StreamAddress)
        self.assertEqual(far.address.framing, self.framing)
        self.assertNotEqual(far.address.streamId, self.serverChild(mine).address.streamId)
        yield mine.whenReceived(len(b"client side"))
        self.assertEqual(mine.data, b"client side")
        self.assertEqual(server.counters.streamsOpened, 1)
        self.assertEqual(client.counters.streamsAccepted, 1)

    # -- losing the connection -----------------------------------------

    @inlineCallbacks
    def test_connectionLostMidTransfer(self):
        """
        The TCP connection dies while streams transfer in both directions:
        every stream's connectionLost fires exactly once, with a failure
        that is not a clean close, on both sides; nothing hangs; the
        multiplexer refuses new streams.
        """
        pair, server, client = yield self.connected()
        children = []
        for i in range(10):
            child = yield self.openRecorder(client, b"send %d %d\n" % (8 * MiB, 20 + i), keep=False)
            BulkSender(child.transport, pattern(40, 4 * MiB), 16 * KiB).start()
            children.append(child)
        yield waitUntil(lambda: all(c.count > 0 for c in children), "data on every stream")
        farChildren = [self.serverChild(c) for c in children]
        children[0].transport.pauseProducing()  # holding data when the end comes
        client.transport.abortConnection()
        yield gatherResults([c.lost for c in children + farChildren])
        yield client.whenLost()
        yield server.whenLost()
        yield turns(5)
        for child in children + farChildren:
            self.assertEqual(len(child.reasons), 1, child.events)
            self.assertIsInstance(child.reasons[0], Failure)
            self.assertFalse(child.reasons[0].check(ConnectionDone), child.reasons[0])
        for far in farChildren:
            self.assertTrue(far.sender.stopped or far.sender.done.called)
        self.assertEqual(client.streamCount(), 0)
        yield self.assertFailure(client.openStream(ChildFactory(Recorder)), SessionClosedError)

    @inlineCallbacks
    def test_tcpClosedCleanlyUnderOpenStreams(self):
        """
        The TCP connection is closed cleanly (FIN, no session close) while
        streams are open: they did not end, so neither side's children may
        be told ConnectionDone.
        """
        pair, server, client = yield self.connected()
        children = []
        for i in range(3):
            child = yield self.openRecorder(client, b"echo\nhi")
            children.append(child)
        yield gatherResults([c.whenReceived(2) for c in children])
        fars = [self.serverChild(c) for c in children]
        client.transport.loseConnection()
        yield gatherResults([c.lost for c in children + fars])
        for end in children + fars:
            self.assertEqual(len(end.reasons), 1)
            self.assertFalse(end.reasons[0].check(ConnectionDone), end.reasons[0])

    @inlineCallbacks
    def test_sessionCloseLosesEveryStream(self):
        """
        close() on one multiplexer loses every open stream on both sides
        once, with a failure, and both connections end.
        """
        pair, server, client = yield self.connected()
        children = []
        for i in range(5):
            child = yield self.openRecorder(client, b"echo\nhello")
            children.append(child)
        yield gatherResults([c.whenReceived(5) for c in children])
        farChildren = [self.serverChild(c) for c in children]
        server.close(ErrorCode.NONE)
        yield gatherResults([c.lost for c in children + farChildren])
        yield client.whenLost()
        for child in children + farChildren:
            self.assertEqual(len(child.reasons), 1)
            self.assertFalse(child.reasons[0].check(ConnectionDone), child.reasons[0])

    # -- garbage -------------------------------------------------------

    def garbage(self):
        """
        Byte strings that no correct peer sends.
        """
        rng = random.Random(1234)
        payloads = [rng.randbytes(64 * KiB), os.urandom(4 * KiB)]
        if self.framing == "mio":
            # A data frame for a stream never opened, and an open frame then
            # a data frame far over maxFrameSize.
            payloads.append(b"\x00\x00\x00\x07\x00\x00\x05\x01hello")
            payloads.append(b"\x00\x00\x00\x01\x04\x00\x00\x0c"
                            b"\x00\x00\x00\x01\xff\xff\xff\x01" + b"A" * 1000)
        else:
            # An endless stream-id field, a non-hex length.
            payloads.append(b"\x00" + b"a" * (256 * KiB))
            payloads.append(b"\x00io_0\x01\x00\x06\x01\x000\x01\x00zz\x01hello")
        return payloads

    @inlineCallbacks
    def test_garbageFromRawSocket(self):
        """
        A plain TCP client sending garbage to a multiplexing server has its
        connection closed promptly, while another multiplexed connection to
        the same server keeps working.
        """
        pair, server, client = yield self.connected()
        yield self.echoRoundTrip(client)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", pair.portNumber)
        for payload in self.garbage():
            raw = yield connectProtocol(endpoint, RawClient(payload))
            started = reactor.seconds()
            try:
                yield waitUntil(lambda: raw.closed.called,
                                "the server to close a garbage connection", timeout=4)
            finally:
                if not raw.closed.called:
                    raw.transport.abortConnection()
                    yield raw.closed
            self.assertLess(reactor.seconds() - started, 4)
            yield self.echoRoundTrip(client)
        self.assertEqual(len(pair.serverFactory.connected), 1 + len(self.garbage()))
        for mux in pair.serverFactory.connected[1:]:
            self.assertTrue(mux.disconnected)
        self.assertFalse(server.disconnected)
    test_garbageFromRawSocket.timeout = 40

    @inlineCallbacks
    def test_protocolErrorLosesStreamsWithTypedError(self):
        """
        A multiplexed connection whose peer starts sending garbage is
        closed: its streams at the receiver are lost with the
        RemoteProtocolError, those at the sender with a non-clean failure;
        the server's other connections carry on.
        """
        from muxframe.errors import RemoteProtocolError
        pair = self.listen()
        (server, client), (server2, client2) = yield gatherResults(
            [pair.connect(index=0), pair.connect(index=1)])
        children = []
        for i in range(3):
            child = yield self.openRecorder(client, b"echo\nhi")
            children.append(child)
        yield gatherResults([c.whenReceived(2) for c in children])
        fars = [self.serverChild(c) for c in children]
        self.serverChildren.byStream.clear()
        client.transport.write(self.garbage()[0])
        yield gatherResults([c.lost for c in children + fars])
        for far in fars:
            self.assertEqual(len(far.reasons), 1)
            self.assertIsInstance(far.reasons[0].value, RemoteProtocolError, far.reasons[0])
        for child in children:
            self.assertEqual(len(child.reasons), 1)
            self.assertFalse(child.reasons[0].check(ConnectionDone), child.reasons[0])
        yield gatherResults([server.whenLost(), client.whenLost()])
        yield self.echoRoundTrip(client2)
        self.assertFalse(server2.disconnected)

    @inlineCallbacks
    def test_childFactoryFailureRefusesStream(self):
        """
        A childFactory that raises (or returns None) for a stream refuses
        it: the opener sees a StreamError, the refusal is counted, the
        session carries on.
        """
        calls = []

        class Picky(ChildFactory):
            def buildProtocol(self, addr):
                calls.append(addr)
                if len(calls) == 1:
                    raise RuntimeError("factory bug")
                if len(calls) == 2:
                    return None
                return ChildFactory.buildProtocol(self, addr)

        pair, server, client = yield self.connected(serverChildFactory=Picky(Service))
        first = yield self.openRecorder(client, b"echo\none")
        second = yield self.openRecorder(client, b"echo\ntwo")
        yield gatherResults([first.lost, second.lost])
        for child in (first, second):
            self.assertStreamError(child.reasons[0])
        self.assertEqual(server.counters.streamsRefused, 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        yield self.echoRoundTrip(client)

    @inlineCallbacks
    def test_openStreamFactoryReturningNone(self):
        """
        openStream() with a factory that builds no protocol fails with a
        LocalProtocolError and leaves the session working.
        """
        from muxframe.errors import LocalProtocolError
        pair, server, client = yield self.connected()

        class Nothing(ChildFactory):
            def buildProtocol(self, addr):
                return None

        yield self.assertFailure(client.openStream(Nothing(Recorder)), LocalProtocolError)
        yield self.echoRoundTrip(client)
        self.assertEqual(client.streamCount(), 0)

    # -- refusal -------------------------------------------------------

    @inlineCallbacks
    def test_refusalBeyondMaxStreams(self):
        """
        A peer opening streams beyond the acceptor's maxStreams has them
        refused cleanly with a code; the session and the accepted streams
        keep working, and a new stream is accepted once one has closed.
        """
        pair, server, client = yield self.connected(serverSettings=dict(maxStreams=3))
        accepted = []
        for i in range(3):
            child = yield self.openRecorder(client, b"echo\nkeep %d" % (i,))
            yield child.whenReceived(6)
            accepted.append(child)
        refused = []
        for i in range(2):
            child = yield self.openRecorder(client, b"echo\nrefuse me")
            refused.append(child)
        yield gatherResults([c.lost for c in refused])
        reasons = [c.reasons[0] for c in refused]
        for reason in reasons:
            self.assertStreamError(reason)
            if self.framing == "mio":
                self.assertIsInstance(reason.value, StreamRefusedError)
                self.assertEqual(reason.value.code, ErrorCode.REFUSED)
        self.assertEqual(server.counters.streamsRefused, 2)
        self.assertEqual(len(self.serverChildren.built), 3)
        for i, child in enumerate(accepted):
            self.assertEqual(child.data, b"keep %d" % (i,))
            self.assertEqual(child.reasons, [])
        accepted[0].transport.loseWriteConnection()
        yield accepted[0].lost
        yield waitUntil(lambda: server.streamCount() == 2, "the server to forget the stream")
        yield self.echoRoundTrip(client)

    @inlineCallbacks
    def test_localOpenBeyondMaxStreams(self):
        """
        openStream() beyond this side's own maxStreams fails with
        StreamLimitError and nothing is sent; the session keeps working.
        """
        pair, server, client = yield self.connected(clientSettings=dict(maxStreams=2))
        first = yield self.openRecorder(client, b"echo\n")
        second = yield self.openRecorder(client, b"echo\n")
        yield self.assertFailure(client.openStream(ChildFactory(Recorder)), StreamLimitError)
        first.transport.loseWriteConnection()
        yield first.lost
        yield self.echoRoundTrip(client)
        self.assertEqual(second.reasons, [])

    @inlineCallbacks
    def test_noChildFactoryRefusesPeerStreams(self):
        """
        A side without a childFactory refuses the streams its peer opens
        cleanly (a StreamError with a code at the opener) and counts them.
        """
        pair, server, client = yield self.connected(clientChildFactory=None)
        theirs = yield self.openRecorder(server, b"anyone there?")
        yield theirs.lost
        reason = theirs.reasons[0]
        self.assertStreamError(reason)
        if self.framing == "mio":
            self.assertIsInstance(reason.value, StreamRefusedError)
            self.assertEqual(reason.value.code, ErrorCode.REFUSED)
        self.assertEqual(client.counters.streamsRefused, 1)
        self.assertEqual(client.streamCount(), 0)
        yield self.echoRoundTrip(client)
        self.assertFalse(client.disconnected)

    # -- write() rules -------------------------------------------------

    @inlineCallbacks
    def test_writeNonBytesRaisesTypeError(self):
        """
        write() and writeSequence() accept bytes only; a rejected call
        sends nothing.
        """
        pair, server, client = yield self.connected()
        child = yield self.openRecorder(client, b"echo\n")
        for bad in ["text", 17, None, bytearray(b"ba"), memoryview(b"mv")]:
            self.assertRaises(TypeError, child.transport.write, bad)
        self.assertRaises(TypeError, child.transport.writeSequence, [b"a", "b"])
        self.assertRaises(TypeError, child.transport.writeSequence, [b"a", 3])
        child.transport.writeSequence([b"o", b"k"])
        child.transport.loseWriteConnection()
        yield child.lost
        reason = child.reasons[0]
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(child.data, b"ok")

    @inlineCallbacks
    def test_sendLimitEndsOnlyThatStream(self):
        """
        With a hard maxStreamSendBuffer set (it is off by default), a child
        that writes past it without a producer gets no exception from
        write(): its stream is reset, its connectionLost gets
        StreamBufferOverflow, the peer's child a StreamError, a warning is
        logged, and the connection carries on.
        """
        from tests.support import captureLogs
        events = captureLogs(self)
        settings = dict(windowSize=64 * KiB, maxFrameSize=16 * KiB,
                        maxInFlight=4, streamBufferSize=32 * KiB,
                        maxStreamSendBuffer=256 * KiB)
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        child = yield self.openRecorder(client, b"hold\n")
        yield waitUntil(lambda: self.serverChild(child) is not None, "the far child")
        far = self.serverChild(child)
        chunk = b"q" * (32 * KiB)
        limit = (settings["windowSize"] + settings["maxStreamSendBuffer"]) // len(chunk) + 4
        for i in range(limit):
            child.transport.write(chunk)  # never raises
            if child.reasons:
                break
            yield turns(2)
        yield child.lost
        reason = child.reasons[0]
        self.assertTrue(reason.check(StreamBufferOverflow), reason)
        self.assertEqual(reason.value.code, ErrorCode.EXHAUSTED)
        far.transport.resumeProducing()
        yield far.lost
        self.assertTrue(far.reasons[0].check(StreamError), far.reasons[0])
        warned = [e for e in events if e.get("log_level") is not None
                  and e["log_level"].name == "warn" and e.get("error") is reason.value]
        self.assertEqual(len(warned), 1)
        self.assertFalse(client.disconnected)
        yield self.echoRoundTrip(client)

    # -- drain ---------------------------------------------------------

    @inlineCallbacks
    def test_gracefulDrain(self):
        """
        drain(): open streams finish, new ones are refused both ways, and
        the Deferred fires when the connection is closed.
        """
        pair, server, client = yield self.connected()
        open_ = []
        for i in range(2):
            child = yield self.openRecorder(client, b"echo\nbefore ")
            yield child.whenReceived(7)
            open_.append(child)
        drained = server.drain(timeout=20)
        yield self.assertFailure(server.openStream(ChildFactory(Recorder)), SessionClosedError)
        late = yield self.openRecorder(client, b"echo\nlate")
        yield late.lost
        reason = late.reasons[0]
        self.assertStreamError(reason)
        self.assertFalse(drained.called)
        for child in open_:
            child.transport.write(b"after")
            child.transport.loseWriteConnection()
        yield gatherResults([c.lost for c in open_])
        reasons = [c.reasons[0] for c in open_]
        for child, reason in zip(open_, reasons):
            self.assertTrue(reason.check(ConnectionDone), reason)
            self.assertEqual(child.data, b"before after")
        yield drained
        yield client.whenLost()
        self.assertTrue(server.disconnected)

    def test_drainDeadlineClosesStragglers(self):
        """
        (Clock, in memory.) drain(timeout) leaves a straggler alone until
        the deadline, then loses it with SessionClosedError, closes the
        connection and fires.
        """
        clock = Clock()
        server, client, pump = memoryPair(self.framing, clock, services())
        straggler = Recorder(initial=b"echo\nslow")
        client.openStream(ChildFactory(lambda: straggler))
        pump.flush()
        self.assertEqual(straggler.data, b"slow")
        drained = server.drain(timeout=10)
        pump.flush()
        clock.advance(9)
        pump.flush()
        self.assertFalse(drained.called)
        self.assertEqual(straggler.reasons, [])
        straggler.transport.write(b" still here")
        pump.flush()
        self.assertEqual(straggler.data, b"slow still here")
        clock.advance(1.5)
        pump.flush()
        self.assertTrue(drained.called)
        self.assertTrue(server.disconnected)
        self.assertTrue(client.disconnected)
        self.assertEqual(len(straggler.reasons), 1)
        self.assertFalse(straggler.reasons[0].check(ConnectionDone))
        serverChild = [p for p in server.factory.childFactory.built]
        self.assertEqual(len(serverChild), 1)
        self.assertEqual(len(serverChild[0].reasons), 1)
        self.assertIsInstance(serverChild[0].reasons[0].value, SessionClosedError)

    def test_drainWithNoStreamsClosesAtOnce(self):
        """
        (Clock, in memory.) drain() with nothing open closes at once and
        fires without waiting for the deadline.
        """
        clock = Clock()
        server, client, pump = memoryPair(self.framing, clock, services())
        drained = server.drain(timeout=10)
        pump.flush()
        self.assertTrue(drained.called)
        self.assertTrue(client.disconnected)

    # -- in memory, with a Clock ---------------------------------------

    def test_pausedConnectionPausesEveryProducer(self):
        """
        (In memory.) When the connection's transport pauses the
        multiplexer, every stream's producer is paused, including one
        registered while paused; resuming resumes them all.
        """
        from .conformance import IdleProducer
        clock = Clock()
        server, client, pump = memoryPair(self.framing, clock, services())
        children = [Recorder(initial=b"echo\n") for i in range(3)]
        for child in children:
            client.openStream(ChildFactory(lambda child=child: child))
        pump.flush()
        producers = [IdleProducer() for child in children]
        for child, producer in zip(children[:2], producers[:2]):
            child.transport.registerProducer(producer, True)
        client.pauseProducing()  # what a full TCP transport does
        self.assertEqual([p.paused for p in producers[:2]], [True, True])
        children[2].transport.registerProducer(producers[2], True)
        self.assertTrue(producers[2].paused)
        client.resumeProducing()
        pump.flush()
        self.assertEqual([p.paused for p in producers], [False] * 3)
        self.assertEqual([p.resumes for p in producers], [1] * 3)
        children[0].transport.write(b"flows again")
        pump.flush()
        self.assertEqual(children[0].data, b"flows again")

    def test_idleTimeoutLosesStreams(self):
        """
        (Clock.) With idleTimeout set and a silent peer, the connection is
        closed after the timeout and every stream is lost with a failure on
        both sides.
        """
        clock = Clock()
        server, client, pump = memoryPair(
            self.framing, clock, services(),
            serverSettings=dict(idleTimeout=5),
            clientSettings=dict(keepaliveInterval=0))
        child = Recorder(initial=b"echo\nhi")
        client.openStream(ChildFactory(lambda: child))
        pump.flush()
        self.assertEqual(child.data, b"hi")
        clock.advance(4)
        pump.flush()
        self.assertFalse(server.disconnected)
        clock.advance(1.5)
        for i in range(5):
            pump.flush()
            clock.advance(0.1)
        self.assertTrue(server.disconnected)
        self.assertTrue(client.disconnected)
        self.assertEqual(len(child.reasons), 1)
        self.assertFalse(child.reasons[0].check(ConnectionDone), child.reasons[0])
        far = server.factory.childFactory.built[0]
        self.assertEqual(len(far.reasons), 1)
        self.assertFalse(far.reasons[0].check(ConnectionDone), far.reasons[0])

    def test_keepalivesKeepIdleConnectionOpen(self):
        """
        (Clock, MIO only.) A peer sending keepalives is not idle: a
        connection with idleTimeout on one side and keepaliveInterval on the
        other stays up.
        """
        if self.framing != "mio":
            raise SkipTest("BMP has no keepalive on the wire")
        clock = Clock()
        server, client, pump = memoryPair(
            self.framing, clock, services(),
            serverSettings=dict(idleTimeout=5),
            clientSettings=dict(keepaliveInterval=2))
        for i in range(20):
            clock.advance(1)
            pump.flush()
        self.assertFalse(server.disconnected)
        self.assertGreater(client.counters.keepalivesSent, 5)
        child = Recorder(initial=b"echo\nstill up", halfClose=True)
        client.openStream(ChildFactory(lambda: child))
        pump.flush()
        self.assertEqual(child.data, b"still up")

    def test_ackTimeoutEndsStream(self):
        """
        (Clock, BMP only.) A frame the peer never acknowledges (its child
        paused) ends the stream after ackTimeout with StreamTimeoutError;
        the peer is sent a close, and its child learns the stream failed
        once it resumes; the session goes on.
        """
        if self.framing != "bmp":
            raise SkipTest("acknowledgement timeouts are BMP's")
        from muxframe.errors import StreamTimeoutError
        clock = Clock()
        server, client, pump = memoryPair(
            self.framing, clock, services(),
            clientSettings=dict(ackTimeout=3))
        child = Recorder(initial=b"hold\n")
        client.openStream(ChildFactory(lambda: child))
        pump.flush()
        child.transport.write(b"never acknowledged")
        pump.flush()
        clock.advance(2)
        pump.flush()
        self.assertEqual(child.reasons, [])
        for i in range(10):
            clock.advance(0.5)
            pump.flush()
        self.assertEqual(len(child.reasons), 1)
        self.assertIsInstance(child.reasons[0].value, StreamTimeoutError)
        far = server.factory.childFactory.built[0]
        far.transport.resumeProducing()
        pump.flush()
        self.assertEqual(len(far.reasons), 1)
        self.assertStreamError(far.reasons[0])
        other = Recorder(initial=b"echo\nok", halfClose=True)
        client.openStream(ChildFactory(lambda: other))
        pump.flush()
        self.assertEqual(other.data, b"ok")
        self.assertFalse(client.disconnected)

    def test_refusedStreamLateFramesStayRefused(self):
        """
        (In memory.) Frames of a refused stream that were already on the
        way when the refusal was sent are dropped: the stream is refused
        once, no child is built for it later, and the opener sees one
        StreamError.
        """
        clock = Clock()
        server, client, pump = memoryPair(self.framing, clock, services(),
                                          clientChildFactory=None)
        theirs = Recorder(initial=b"first frame")
        server.openStream(ChildFactory(lambda: theirs))
        # Deliver the server's bytes only, so the refusal stays unsent.
        client.transport.bufferReceived(server.transport.getOutBuffer())
        self.assertEqual(client.counters.streamsRefused, 1)
        theirs.transport.write(b"second frame, sent before the refusal arrived")
        client.transport.bufferReceived(server.transport.getOutBuffer())
        theirs.transport.write(b"third frame")
        client.transport.bufferReceived(server.transport.getOutBuffer())
        pump.flush()
        self.assertEqual(client.counters.streamsRefused, 1)
        self.assertEqual(client.streamCount(), 0)
        self.assertEqual(len(theirs.reasons), 1)
        self.assertStreamError(theirs.reasons[0])
        self.assertFalse(client.disconnected)

    def test_abortedPeerStreamLateFramesDropped(self):
        """
        (In memory.) Frames of a peer-opened stream that this side aborted,
        already on the way, are dropped: no second child is built.
        """
        clock = Clock()
        server, client, pump = memoryPair(self.framing, clock, services())
        mine = Recorder(initial=b"echo\nfirst")
        client.openStream(ChildFactory(lambda: mine))
        pump.flush()
        self.assertEqual(mine.data, b"first")
        far = server.factory.childFactory.built[0]
        mine.transport.write(b"in flight")
        far.transport.abortConnection()
        # The client's frame reaches the server after its abort.
        server.transport.bufferReceived(client.transport.getOutBuffer())
        pump.flush()
        self.assertEqual(len(server.factory.childFactory.built), 1)
        self.assertEqual(server.counters.streamsAccepted, 1)
        self.assertEqual(server.streamCount(), 0)
        self.assertEqual(len(mine.reasons), 1)
        self.assertStreamError(mine.reasons[0])

    def test_pausedChildGetsNoEndUntilResumed(self):
        """
        (In memory.) As with a paused TCP transport, a paused child is told
        nothing, not even the peer's end of stream, until it resumes; then
        readConnectionLost comes.
        """
        clock = Clock()
        server, client, pump = memoryPair(self.framing, clock, recorders())
        child = Recorder(initial=b"hello")
        client.openStream(ChildFactory(lambda: child))
        pump.flush()
        far = server.factory.childFactory.built[0]
        far.transport.write(b"all of it")
        pump.flush()
        self.assertEqual(child.data, b"all of it")
        child.transport.pauseProducing()
        far.transport.loseWriteConnection()
        pump.flush()
        self.assertEqual(child.events, ["made", "data"])
        child.transport.resumeProducing()
        pump.flush()
        self.assertEqual(child.events, ["made", "data", "readLost"])

    def test_randomScriptsKeepStreamSemantics(self):
        """
        (In memory, Hypothesis.) Random interleavings of writes, pauses,
        resumes and half-closes on a few streams, with small windows and
        frames: each end receives exactly the bytes the other wrote, in
        order, nothing while paused, the end of stream after the last byte,
        and one clean connectionLost; no bytes stay held.
        """
        from hypothesis import HealthCheck, given, settings as hsettings
        from hypothesis import strategies as st

        ops = st.one_of(
            st.tuples(st.just("write"), st.integers(1, 40000)),
            st.tuples(st.sampled_from(["pause", "resume", "end", "pump"]), st.just(0)),
        )
        actions = st.lists(
            st.tuples(st.integers(0, 2), st.booleans(), ops), max_size=60)
        muxSettings = st.fixed_dictionaries(dict(
            windowSize=st.sampled_from([1024, 4096, 65536]),
            maxFrameSize=st.sampled_from([128, 1000, 16384]),
            maxInFlight=st.integers(1, 4),
            streamBufferSize=st.sampled_from([1, 4096, 65536]),
        ))

        examples = [0]

        class Checked(Recorder):
            def dataReceived(inner, data):
                self.assertFalse(inner.transport._readPaused,
                                 "data delivered to a paused child")
                self.assertNotIn("readLost", inner.events)
                Recorder.dataReceived(inner, data)

        @hsettings(max_examples=200, deadline=None,
                   suppress_health_check=list(HealthCheck))
        @given(actions, muxSettings)
        def run(script, settings):
            examples[0] += 1
            clock = Clock()
            acceptors = ChildFactory(Checked)
            server, client, pump = memoryPair(
                self.framing, clock, acceptors,
                serverSettings=settings, clientSettings=settings)
            openers = []
            for i in range(3):
                child = Checked(initial=b"!")
                client.openStream(ChildFactory(lambda child=child: child))
                openers.append(child)
            pump.flush()
            ends = [(o, acceptors.byStream[o.transport.streamId]) for o in openers]
            written = {}
            ended = set()
            for end in [e for pair_ in ends for e in pair_]:
                written[id(end)] = bytearray(b"!" if end in openers else b"")
            for index, fromOpener, (op, arg) in script:
                end = ends[index][0 if fromOpener else 1]
                if op == "write" and id(end) not in ended:
                    data = pattern(index * 2 + fromOpener, 40000)[:arg]
                    end.transport.write(data)
                    written[id(end)] += data
                elif op == "pause":
                    end.transport.pauseProducing()
                elif op == "resume":
                    end.transport.resumeProducing()
                elif op == "end" and id(end) not in ended:
                    ended.add(id(end))
                    end.transport.loseWriteConnection()
                elif op == "pump":
                    pump.pump()
            for opener, acceptor in ends:
                for end in (opener, acceptor):
                    end.transport.resumeProducing()
                    if id(end) not in ended:
                        end.transport.loseWriteConnection()
            # Small frames with one in flight take a round trip each: pump
            # one exchange at a time, with a bound well above any script's
            # need (iosim's flush() stops at 1000 exchanges).
            for i in range(200000):
                if not pump.pump():
                    break
            else:
                self.fail("the link never went quiet")
            for opener, acceptor in ends:
                for end, other in ((opener, acceptor), (acceptor, opener)):
                    self.assertEqual(end.data, bytes(written[id(other)]))
                    self.assertEqual(end.events[-1], "lost", end.events)
                    self.assertEqual(end.events.count("readLost"), 1, end.events)
                    self.assertEqual(end.events.count("writeLost"), 1, end.events)
                    self.assertEqual(len(end.reasons), 1)
                    self.assertTrue(end.reasons[0].check(ConnectionDone), end.reasons[0])
            self.assertEqual(client.streamCount(), 0)
            self.assertEqual(server.streamCount(), 0)
            self.assertEqual(client.heldBytes(), 0)
            self.assertEqual(server.heldBytes(), 0)

        run()
        self.assertGreater(examples[0], 10)

    # -- timers --------------------------------------------------------

    @inlineCallbacks
    def test_noTimerLeftAfterConnectionLost(self):
        """
        A multiplexer whose connection is gone leaves no call pending on the
        reactor, whichever way the connection ended (peer closed the
        session, protocol error, local close).
        """
        pair, server, client = yield self.connected()
        yield self.echoRoundTrip(client)
        client.close(ErrorCode.NONE)
        yield gatherResults([server.whenLost(), client.whenLost()])
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", pair.portNumber)
        raw = yield connectProtocol(endpoint, RawClient(self.garbage()[0]))
        yield waitUntil(lambda: raw.closed.called, "the garbage connection to close", timeout=8)
        yield turns(2)
        for mux in pair.serverFactory.connected + [client]:
            self.assertTrue(mux.disconnected)
            self.assertEqual(leftoverTimers(mux), [])
    test_noTimerLeftAfterConnectionLost.timeout = 15

    # -- counters ------------------------------------------------------

    @inlineCallbacks
    def test_creditStallsCounted(self):
        """
        A sender that runs out of credit (MIO window, BMP frames in flight)
        counts a credit stall.
        """
        settings = self.backpressureSettings()
        pair, server, client = yield self.connected(
            serverSettings=settings, clientSettings=settings)
        child = yield self.openRecorder(client, b"hold\n")
        yield waitUntil(lambda: self.serverChild(child) is not None, "the far child")
        self.assertEqual(client.counters.creditStalls, 0)
        child.transport.write(b"s" * (256 * KiB))
        streamId = child.transport.streamId
        yield waitUntil(lambda: client.engine.sendBuffered(streamId) < 256 * KiB,
                        "some data to be sent")
        yield turns(10)
        self.assertGreater(client.engine.sendBuffered(streamId), 0)
        self.assertGreater(client.counters.creditStalls, 0)
        self.assertGreater(client.engine.stream(streamId).creditStalls, 0)

    @inlineCallbacks
    def test_countersMove(self):
        """
        Bytes, frames, streams and resets are counted on both sides.
        """
        pair, server, client = yield self.connected()
        payload = pattern(77, 100 * KiB)
        yield self.echoRoundTrip(client, payload)
        sent = len(b"echo\n") + len(payload)
        self.assertEqual(client.counters.bytesSent, sent)
        self.assertEqual(server.counters.bytesReceived, sent)
        self.assertEqual(server.counters.bytesSent, len(payload))
        self.assertEqual(client.counters.bytesReceived, len(payload))
        self.assertGreater(client.counters.framesSent, 1)
        self.assertGreater(server.counters.framesSent, 1)
        yield waitUntil(
            lambda: client.counters.framesSent == server.counters.framesReceived
            and server.counters.framesSent == client.counters.framesReceived,
            "frames sent and received to agree (%r, %r)" % (client.counters.asDict(), server.counters.asDict()))
        self.assertEqual(client.counters.streamsOpened, 1)
        self.assertEqual(server.counters.streamsAccepted, 1)
        victim = yield self.openRecorder(client, b"echo\nx")
        yield victim.whenReceived(1)
        victim.transport.abortConnection()
        yield victim.lost
        yield self.serverChild(victim).lost
        self.assertEqual(client.counters.resetsSent, {ErrorCode.CLOSED: 1})
        self.assertEqual(server.counters.resetsReceived, {ErrorCode.CLOSED: 1})
        self.assertEqual(server.counters.resetsSent, {})
        self.assertEqual(client.counters.streamsOpened, 2)


class MioConformanceTests(ConformanceTests, TestCase):
    """
    The conformance suite over MIO.
    """

    framing = "mio"


class BmpConformanceTests(ConformanceTests, TestCase):
    """
    The conformance suite over BMP.
    """

    framing = "bmp"

