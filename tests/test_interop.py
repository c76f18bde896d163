"""
Interoperability of muxframe with the two reference peers.

Three kinds of test, all over real TCP on 127.0.0.1:

  - Real peers, run as child processes (see tests/interop/README.md):
    Blazeio 4.3.4 runs tests/interop/blazeio_peer.py on CPython 3.12, in a
    venv L{tests.blazeiovenv} makes once (or the Python that
    C{MUXFRAME_BLAZEIO_PYTHON} names); without a CPython 3.12 those tests
    skip, saying how to get one, except under CI, where they fail.
    C{MUXFRAME_GO_MIO_PEER} names the built tests/interop/mio_peer program
    (the Go mio library); without it those tests skip, saying why.
    Children are always killed.

  - A Blazeio emulation: a raw-socket BMP peer written here from Blazeio
    4.3.4's C{Blazeio/Protocols/multiplexer.py} (not from muxframe's code).

  - A Go mio emulation: a raw-socket MIO peer written here from the Go
    library's C{mio.go} and C{frame.go} (github mivinci/mio, commit 2226124).

A failing test's message carries the bytes on the wire.
"""

import hashlib
import os
import random
import re
import struct
import time
from collections import defaultdict, deque

from zope.interface import implementer

from twisted.internet import defer, error, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import policies
from twisted.trial import unittest

from muxframe import MultiplexerFactory
from muxframe.errors import MalformedFrame, StreamResetError, StreamTimeoutError

from tests import blazeiovenv

HERE = os.path.dirname(os.path.abspath(__file__))
BLAZEIO_PEER = os.path.join(HERE, "interop", "blazeio_peer.py")

# Seconds any one exchange may take before the test gives up.
EXCHANGE_TIMEOUT = 20.0


# ---------------------------------------------------------------------------
# Shared helpers


def payload(seed, index, size):
    """
    Deterministic test bytes: SHA-256 in counter mode over "seed:index:n".
    The same function is in blazeio_peer.py and mio_peer/main.go.
    """
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d:%d" % (seed, index, counter)).digest()
        counter += 1
    return bytes(out[:size])


def withTimeout(d, seconds, what):
    """
    Fail C{d} with a message naming C{what} if it has not fired in time.
    """
    timer = reactor.callLater(
        seconds, lambda: d.called or d.errback(
            AssertionError("timed out after %.0f s: %s" % (seconds, what))))

    def cancelTimer(result):
        if timer.active():
            timer.cancel()
        return result

    return d.addBoth(cancelTimer)


def hexdump(log, limit=48, chunks=60):
    """
    Format a list of (direction, bytes) as hex lines: at most C{limit} bytes
    of each chunk, the first and last C{chunks // 2} chunks.
    """
    lines = []
    if len(log) > chunks:
        skipped = len(log) - chunks
        log = log[:chunks // 2] + [("...", b"")] + log[-(chunks // 2):]
    else:
        skipped = 0
    for direction, data in log:
        if direction == "...":
            lines.append("... %d chunks not shown ..." % (skipped,))
            continue
        shown = data[:limit].hex(" ")
        more = " ...(+%d bytes)" % (len(data) - limit) if len(data) > limit else ""
        lines.append("%s %5d: %s%s" % (direction, len(data), shown, more))
    return "\n".join(lines)


class _RecordingProtocol(policies.ProtocolWrapper):
    """
    Record every byte muxframe receives ("in") and writes ("out").
    """

    def makeConnection(self, transport):
        policies.ProtocolWrapper.makeConnection(self, transport)
        self.factory._connected(self.wrappedProtocol)

    def dataReceived(self, data):
        self.factory.log.append(("in ", bytes(data)))
        policies.ProtocolWrapper.dataReceived(self, data)

    def write(self, data):
        self.factory.log.append(("out", bytes(data)))
        policies.ProtocolWrapper.write(self, data)

    def writeSequence(self, data):
        data = list(data)
        self.factory.log.append(("out", b"".join(data)))
        policies.ProtocolWrapper.writeSequence(self, data)


class RecordingFactory(policies.WrappingFactory):
    """
    Wrap a L{MultiplexerFactory} so that the connection's bytes are kept in
    C{log} and C{whenConnected()} gives the L{Multiplexer}.
    """

    protocol = _RecordingProtocol

    def __init__(self, wrappedFactory):
        policies.WrappingFactory.__init__(self, wrappedFactory)
        self.log = []
        self.multiplexers = []
        self._waiting = []

    def _connected(self, mux):
        self.multiplexers.append(mux)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(mux)

    def whenConnected(self):
        if self.multiplexers:
            return defer.succeed(self.multiplexers[0])
        d = defer.Deferred()
        self._waiting.append(d)
        return d

    def dump(self):
        return hexdump(self.log)


@implementer(IHalfCloseableProtocol)
class EchoChild(protocol.Protocol):
    """
    Echo a stream; half-close after the peer's half-close.
    """

    instances = None

    def connectionMade(self):
        self.count = 0
        self.reason = None
        self.done = defer.Deferred()
        if self.instances is not None:
            self.instances.append(self)

    def dataReceived(self, data):
        self.count += len(data)
        self.transport.write(data)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.reason = reason
        self.done.callback(self)


def echoFactory(instances=None):
    factory = protocol.Factory()
    factory.protocol = type("RecordedEcho", (EchoChild,), {"instances": instances})
    return factory


@implementer(IHalfCloseableProtocol)
class CheckChild(protocol.Protocol):
    """
    Send C{data}, half-close, collect the echo; C{done} fires with self when
    the stream is over.
    """

    def __init__(self, data):
        self.data = data
        self.received = bytearray()
        self.reason = None
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.data)
        self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.received += data

    def readConnectionLost(self):
        pass

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.reason = reason
        self.done.callback(self)

    def ok(self):
        return (bytes(self.received) == self.data
                and self.reason is not None
                and self.reason.check(error.ConnectionDone) is not None)

    def describe(self):
        return "sent %d, got back %d (%s), ended with %r" % (
            len(self.data), len(self.received),
            "equal" if bytes(self.received) == self.data else "DIFFERENT",
            self.reason.value if self.reason else None)


class LateCheckChild(CheckChild):
    """
    Like L{CheckChild}, but half-close only C{delay} seconds after the whole
    echo is back (a request/response exchange that ends later).
    """

    delay = 0.2

    def connectionMade(self):
        self.transport.write(self.data)

    def dataReceived(self, data):
        CheckChild.dataReceived(self, data)
        if len(self.received) == len(self.data):
            reactor.callLater(self.delay, self.transport.loseWriteConnection)


@defer.inlineCallbacks
def openChecks(mux, sizes, seed=1, child=CheckChild):
    """
    Open one C{child} (a L{CheckChild}) stream per size on C{mux}; return
    them when all are over.
    """
    children = []
    for index, size in enumerate(sizes):
        data = payload(seed, index, size)
        opened = yield mux.openStream(
            protocol.Factory.forProtocol(lambda data=data, cls=child: cls(data)))
        children.append(opened)
    yield defer.DeferredList([c.done for c in children])
    return children


def assertAllOk(testCase, children, recorder=None):
    bad = [c.describe() for c in children if not c.ok()]
    if bad:
        message = "streams failed:\n  " + "\n  ".join(bad)
        if recorder is not None:
            message += "\nwire (muxframe's view):\n" + recorder.dump()
        testCase.fail(message)


class Loopback:
    """
    Listening ports and connections made by a test, all closed at cleanup.
    """

    def __init__(self, testCase):
        self.testCase = testCase

    @defer.inlineCallbacks
    def listen(self, factory):
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.testCase.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def connect(self, port, factory):
        proto = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(factory)
        self.testCase.addCleanup(self._close, proto)
        return proto

    def _close(self, proto):
        transport = proto.transport
        if transport is not None and transport.connected:
            transport.abortConnection()


def trackServerConnections(testCase, factory):
    """
    Make every connection C{factory} builds get aborted at cleanup.
    """
    original = factory.buildProtocol

    def buildProtocol(addr):
        proto = original(addr)
        testCase.addCleanup(lambda: proto.transport is not None
                            and proto.transport.connected
                            and proto.transport.abortConnection())
        return proto

    factory.buildProtocol = buildProtocol
    return factory


# ---------------------------------------------------------------------------
# Real peers as child processes


class PeerProcess(protocol.ProcessProtocol):
    """
    A peer program: its stdout lines, "LISTENING <port>", and its end.
    """

    def __init__(self, name):
        self.name = name
        self.lines = []
        self._partial = b""
        self.stderr = bytearray()
        self.exitCode = None
        self.ended = False
        self._listening = []
        self._enders = []
        self.port = None
        self.started = time.monotonic()

    def outReceived(self, data):
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            # A peer's own logging may start its lines with "\r" and colour
            # codes; keep what follows the last carriage return.
            line = raw.decode("utf-8", "replace").rstrip("\r").split("\r")[-1]
            self.lines.append(line)
            match = re.search(r"(?:^|\s)LISTENING (\d+)\s*$", line)
            if match and self.port is None:
                self.port = int(match.group(1))
                waiting, self._listening = self._listening, []
                for d in waiting:
                    if not d.called:
                        d.callback(self.port)

    def errReceived(self, data):
        if len(self.stderr) < 65536:
            self.stderr += data[:65536 - len(self.stderr)]

    def processEnded(self, reason):
        self.ended = True
        self.exitCode = getattr(reason.value, "exitCode", None)
        for d in self._listening:
            if not d.called:
                d.errback(AssertionError("%s ended before listening:\n%s" % (
                    self.name, self.output())))
        self._listening = []
        waiting, self._enders = self._enders, []
        for d in waiting:
            d.callback(self.exitCode)

    def whenListening(self):
        if self.port is not None:
            return defer.succeed(self.port)
        if self.ended:
            return defer.fail(AssertionError("%s is not running:\n%s" % (self.name, self.output())))
        d = defer.Deferred()
        self._listening.append(d)
        return withTimeout(d, EXCHANGE_TIMEOUT, "%s to listen" % (self.name,))

    def whenEnded(self):
        if self.ended:
            return defer.succeed(self.exitCode)
        d = defer.Deferred()
        self._enders.append(d)
        return d

    def kill(self):
        if not self.ended:
            try:
                self.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass
        return self.whenEnded()

    def output(self):
        tail = self.stderr[-4000:].decode("utf-8", "replace")
        return "%sstdout:\n  %s\nstderr (tail):\n%s" % (
            self.cpuUse(), "\n  ".join(self.lines[-60:]), tail)

    def cpuUse(self):
        """
        A line saying how busy the peer has been, if it still runs: a peer
        that burned a core for most of its life while nothing moved was
        spinning.
        """
        pid = getattr(self.transport, "pid", None)
        if self.ended or pid is None:
            return ""
        try:
            with open("/proc/%d/stat" % (pid,)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return ""
        used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        alive = time.monotonic() - self.started
        return "peer still running: %.1f s of CPU in %.1f s\n" % (used, alive)


def spawnPeer(testCase, name, argv):
    """
    Start a peer program; it is killed (and reaped) at cleanup.
    """
    peer = PeerProcess(name)
    # A peer is another program, often another Python: none of this
    # Python's module path (trial -j sets PYTHONPATH for its workers).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    reactor.spawnProcess(peer, argv[0], argv, env=env, path=HERE)
    testCase.addCleanup(peer.kill)
    return peer


@defer.inlineCallbacks
def waitExit(peer, seconds=EXCHANGE_TIMEOUT):
    """
    Wait for a peer to exit by itself; kill it if it takes too long.
    """
    d = peer.whenEnded()
    busy = []

    def expired():
        busy.append(peer.cpuUse())
        peer.kill()

    timer = reactor.callLater(seconds, expired)
    code = yield d
    if timer.active():
        timer.cancel()
        return code
    raise AssertionError("%s did not finish within %.0f s (killed; %s):\n%s" % (
        peer.name, seconds, busy[0].strip(), peer.output()))


def resultLines(peer):
    return [line for line in peer.lines if line.startswith("RESULT ")]


def blazeioPython():
    """
    Return the Python that runs the real Blazeio peer (made once by
    L{tests.blazeiovenv}); skip without a CPython 3.12, except under CI.
    """
    try:
        return blazeiovenv.peerPython()
    except blazeiovenv.PeerUnavailable as e:
        if blazeiovenv.inCI():
            raise AssertionError("CI must run the real Blazeio peer: %s" % (e,))
        raise unittest.SkipTest(str(e))


def goMioPeer():
    path = os.environ.get("MUXFRAME_GO_MIO_PEER")
    if not path:
        raise unittest.SkipTest(
            "MUXFRAME_GO_MIO_PEER is not set: set it to the built "
            "tests/interop/mio_peer program (see tests/interop/README.md)")
    if not os.access(path, os.X_OK):
        raise unittest.SkipTest("MUXFRAME_GO_MIO_PEER=%r is not executable" % (path,))
    return path


class BlazeioPythonPolicyTests(unittest.SynchronousTestCase):
    """
    Without a CPython 3.12 the real Blazeio tests skip, saying how to get
    one, except under CI, where they fail.
    """

    def setUp(self):
        self.patch(blazeiovenv, "_outcome", None)
        self.patch(blazeiovenv.interpreters, "findPython",
                   lambda version: (None, ["/x/python%s: exit 127" % (version,)]))
        self.environ = {}
        self.patch(os, "environ", self.environ)

    def test_skipsOutsideCI(self):
        """
        Outside CI the reason names what was tried and how to get one.
        """
        e = self.assertRaises(unittest.SkipTest, blazeioPython)
        self.assertIn("no CPython 3.12 here", str(e))
        self.assertIn("pyenv install 3.12", str(e))
        self.assertIn("/x/python3.12: exit 127", str(e))

    def test_failsInCI(self):
        """
        Under CI=true the same is a failure, every time it is asked.
        """
        self.environ["CI"] = "true"
        for _ in range(2):
            e = self.assertRaises(AssertionError, blazeioPython)
            self.assertIn("CI must run the real Blazeio peer", str(e))

    def test_ciValues(self):
        """
        CI counts when set to anything but "", "0" or "false".
        """
        for value, expected in [("", False), ("0", False), ("false", False),
                                ("False", False), ("true", True), ("1", True)]:
            self.environ["CI"] = value
            self.assertEqual(blazeiovenv.inCI(), expected, value)


BLAZEIO_SIZES = [0, 1, 10, 10240, 10241, 100000, 1048576, 3 * 1048576 + 7]

# 100 streams, small enough that all of them together fit in one TCP segment
# on loopback (MSS about 64 KiB): Blazeio stalls when TCP hands it a frame
# header in two reads, and 100 multi-frame streams at once now and then
# stalled it so (tests/interop/README.md), whatever the sender wrote.
MANY_STREAM_SIZES = [(i * 7919) % 500 for i in range(100)]


class RealBlazeioTests(unittest.TestCase):
    """
    muxframe (BMP) against Blazeio 4.3.4's own multiplexer.
    """

    timeout = 45

    def setUp(self):
        self.python = blazeioPython()
        self.net = Loopback(self)

    def peer(self, *args):
        return spawnPeer(self, "blazeio " + args[0],
                         [self.python, "-u", BLAZEIO_PEER] + list(args))

    @defer.inlineCallbacks
    def _blazeioClient(self, sizes=BLAZEIO_SIZES, **settings):
        factory = trackServerConnections(self, RecordingFactory(MultiplexerFactory(
            echoFactory(), framing="bmp", role="server", **settings)))
        port = yield self.net.listen(factory)
        peer = self.peer("client", "--port", str(port), "--timeout", "25",
                         "--sizes", ",".join(map(str, sizes)))
        code = yield waitExit(peer, 30)
        results = resultLines(peer)
        if code != 0 or "ALL OK" not in peer.lines or len(results) != len(sizes):
            self.fail("Blazeio client against muxframe server failed (exit %r):\n%s\n"
                      "wire:\n%s" % (code, peer.output(), factory.dump()))
        assertWholeHeaders(self, factory)

    def test_blazeioClientToMuxframeServer(self):
        """
        A Blazeio BMP client opens several streams (0 bytes to 3 MiB) to a
        muxframe BMP server, writes, half-closes and gets every byte back.
        """
        return self._blazeioClient()

    def test_blazeioClientManyStreams(self):
        """
        A Blazeio client runs 100 concurrent streams (0 to 499 bytes each)
        over one connection to a muxframe server.
        """
        return self._blazeioClient(MANY_STREAM_SIZES)

    def test_blazeioClientToMuxframeServerOneInFlight(self):
        """
        The same with muxframe keeping one frame in flight, as Blazeio does.
        """
        return self._blazeioClient(maxInFlight=1, maxFrameSize=10240)

    @defer.inlineCallbacks
    def test_blazeioClientIgnoresServerOpenedStream(self):
        """
        A stream the muxframe server opens toward a Blazeio client is entered
        by Blazeio and never acknowledged: muxframe ends it with a timeout
        after ackTimeout, and the client's own streams are unaffected.
        """
        factory = trackServerConnections(self, RecordingFactory(MultiplexerFactory(
            echoFactory(), framing="bmp", role="server", ackTimeout=0.5)))
        port = yield self.net.listen(factory)
        sizes = [1, 10240, 100000]
        peer = self.peer("client", "--port", str(port), "--timeout", "25",
                         "--linger", "1.5", "--sizes", ",".join(map(str, sizes)))
        mux = yield withTimeout(factory.whenConnected(), EXCHANGE_TIMEOUT, "Blazeio client")
        check = yield mux.openStream(protocol.Factory.forProtocol(
            lambda: CheckChild(b"x" * 30000)))
        yield withTimeout(check.done, 10, "the server-opened stream to time out")
        code = yield waitExit(peer, 30)
        wire = factory.dump()
        self.assertEqual(code, 0, peer.output() + "\n" + wire)
        self.assertEqual(len(resultLines(peer)), len(sizes), peer.output())
        self.assertEqual([line for line in peer.lines if line.startswith("PEER-OPENED")],
                         ["PEER-OPENED srv_0"], peer.output())
        self.assertIsNotNone(check.reason.check(StreamTimeoutError),
                             "%s\n%s" % (check.describe(), wire))
        self.assertEqual(bytes(check.received), b"")

    @defer.inlineCallbacks
    def _blazeioServer(self, sizes, child=CheckChild, **settings):
        peer = self.peer("server", "--port", "0")
        port = yield peer.whenListening()
        recorder = RecordingFactory(MultiplexerFactory(
            None, framing="bmp", role="client", **settings))
        yield self.net.connect(port, recorder)
        mux = yield recorder.whenConnected()
        children = yield withTimeout(openChecks(mux, sizes, child=child),
                                     EXCHANGE_TIMEOUT, "echo from the Blazeio server")
        assertWholeHeaders(self, recorder)
        return peer, recorder, children

    @defer.inlineCallbacks
    def test_muxframeClientToBlazeioServer(self):
        """
        A muxframe BMP client opens several streams (1 byte to 3 MiB) to a
        Blazeio BMP echo server and gets every byte back, cleanly ended.
        """
        sizes = [s for s in BLAZEIO_SIZES if s]
        peer, recorder, children = yield self._blazeioServer(sizes)
        assertAllOk(self, children, recorder)

    @defer.inlineCallbacks
    def test_muxframeClientToBlazeioServerOneInFlight(self):
        """
        The same with muxframe keeping one 10240-byte frame in flight.
        """
        sizes = [s for s in BLAZEIO_SIZES if s]
        peer, recorder, children = yield self._blazeioServer(
            sizes, maxInFlight=1, maxFrameSize=10240)
        assertAllOk(self, children, recorder)

    @defer.inlineCallbacks
    def test_emptyStreamRunsBlazeioHandlerOnce(self):
        """
        A stream that only half-closes, and one that half-closes after its
        echo is back, each reach the Blazeio server's handler once.
        """
        peer, recorder, children = yield self._blazeioServer([0, 5])
        late = yield mux_openLate(recorder.multiplexers[0], payload(1, 9, 5))
        yield withTimeout(late.done, EXCHANGE_TIMEOUT, "the late stream")
        children.append(late)
        assertAllOk(self, children, recorder)
        # Let any late frame reach the peer and its log line come back.
        yield deferLater(0.3)
        handled = [line for line in peer.lines if line.startswith("STREAM ")]
        if len(handled) != 3:
            self.fail("the Blazeio server ran its handler %d times for 3 streams: %r\n"
                      "wire:\n%s" % (len(handled), handled, recorder.dump()))

    @defer.inlineCallbacks
    def test_muxframeClientManyStreamsToBlazeioServer(self):
        """
        A muxframe client runs 100 concurrent streams (0 to 499 bytes each)
        over one connection to a Blazeio server, every byte echoed.
        """
        peer, recorder, children = yield self._blazeioServer(MANY_STREAM_SIZES)
        assertAllOk(self, children, recorder)

    @defer.inlineCallbacks
    def test_halfCloseAfterEcho(self):
        """
        Streams that half-close only once their whole echo is back (a
        request and its answer, then the end) end cleanly, and the Blazeio
        server's handler runs once for each, having seen every byte.
        """
        sizes = [1, 10240, 10241, 100000, 1048576]
        peer, recorder, children = yield self._blazeioServer(sizes, child=LateCheckChild)
        assertAllOk(self, children, recorder)
        # Let any late frame reach the peer and its log line come back.
        yield deferLater(0.3)
        handled = sorted(int(line.split()[2]) for line in peer.lines
                         if line.startswith("STREAM "))
        self.assertEqual(handled, sorted(sizes), "%s\nwire:\n%s" % (
            peer.output(), recorder.dump()))

    @defer.inlineCallbacks
    def test_manySmallFramesKeepHeadersWhole(self):
        """
        A thousand small frames from many streams at once (128-byte frames,
        written in odd pieces) reach a Blazeio server with no frame header
        cut across two writes, and come back whole.
        """
        peer = self.peer("server", "--port", "0")
        port = yield peer.whenListening()
        recorder = RecordingFactory(MultiplexerFactory(
            None, framing="bmp", role="client", maxFrameSize=128))
        yield self.net.connect(port, recorder)
        mux = yield recorder.whenConnected()
        children = yield withTimeout(
            openChecks(mux, [6000 + 37 * i for i in range(20)], child=PieceCheckChild),
            EXCHANGE_TIMEOUT * 2, "echo of the small frames")
        assertAllOk(self, children, recorder)
        frames = assertWholeHeaders(self, recorder)
        self.assertGreater(frames, 1000)

    @defer.inlineCallbacks
    def test_splitHeaderStallsBlazeio(self):
        """
        Why no header of muxframe's may be cut across writes: a Blazeio
        server that reads a frame header in two pieces never delivers that
        frame, and stops serving every other connection too (its event loop
        spins), while the same frame read whole is echoed.
        """
        if not os.path.exists("/proc/net/tcp"):
            raise unittest.SkipTest("needs Linux's /proc/net/tcp to see what the peer has read")
        peer = self.peer("server", "--port", "0")
        port = yield peer.whenListening()
        frame = bmpFrame(b"io_0", b"0", IO_CREATE, b"hello")
        whole = RawSocket(self, port)
        whole.send(frame)
        echoed = yield whole.receiveUntil(frame, EXCHANGE_TIMEOUT)
        self.assertEqual(echoed[-len(frame):], frame, peer.output())

        split = RawSocket(self, port)
        cut = frame.index(b"\x01\x00") + 1        # inside the header, after the id
        split.send(frame[:cut])
        yield split.waitUntilPeerRead(EXCHANGE_TIMEOUT)
        split.send(frame[cut:])
        later = RawSocket(self, port)
        later.send(frame)
        # A peer that reassembled the header would answer within
        # milliseconds; a second is the bound of this negative check.
        splitEcho = yield split.receiveUntil(frame, 1.0)
        laterEcho = yield later.receiveUntil(frame, 0.5)
        self.assertEqual((splitEcho, laterEcho), (b"", b""), peer.output())



def mux_openLate(mux, data):
    return mux.openStream(protocol.Factory.forProtocol(lambda: LateCheckChild(data)))


def deferLater(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class PieceCheckChild(CheckChild):
    """
    Like L{CheckChild}, but write C{data} in pieces of 1 to 97 bytes.
    """

    def connectionMade(self):
        offset, step = 0, 1
        while offset < len(self.data):
            self.transport.write(self.data[offset:offset + step])
            offset += step
            step = step % 97 + 13
        self.transport.loseWriteConnection()


def assertWholeHeaders(testCase, recorder, walker=None):
    """
    Fail unless every write muxframe made (the "out" entries of the
    recorder's log, one per write or writeSequence call) ends outside a
    frame header; return the number of frames written.
    """
    walker = walker or BmpFrameParser()
    frames = 0
    for index, (direction, data) in enumerate(recorder.log):
        if direction != "out":
            continue
        frames += len(walker.feed(data))
        if walker.inHeader():
            testCase.fail("write %d ends %d bytes into a frame header (byte %d):\n%s" % (
                index, walker.headerBytes(), walker.offset + walker.headerBytes(),
                hexdump(recorder.log[max(0, index - 3):index + 1])))
    return frames


def _tcpQueues(localPort, remotePort):
    """
    Return (tx_queue, rx_queue) of the 127.0.0.1 TCP socket from
    C{localPort} to C{remotePort}, from /proc/net/tcp, or C{None}.
    """
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if (int(local.split(":")[1], 16) == localPort
                    and int(remote.split(":")[1], 16) == remotePort):
                tx, rx = queues.split(":")
                return int(tx, 16), int(rx, 16)
    return None


class RawSocket:
    """
    A plain blocking TCP socket to 127.0.0.1, for writing exact pieces
    (each C{send} is one write(2), with Nagle off); closed at cleanup.
    """

    def __init__(self, testCase, port):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = port
        self.received = bytearray()
        testCase.addCleanup(self.sock.close)

    def send(self, data):
        self.sock.sendall(data)

    @defer.inlineCallbacks
    def waitUntilPeerRead(self, seconds):
        """
        Wait until the peer's process has read everything sent: nothing
        left unacknowledged here, nothing unread in the peer's socket.
        """
        localPort = self.sock.getsockname()[1]
        deadline = reactor.seconds() + seconds
        while True:
            mine = _tcpQueues(localPort, self.port)
            theirs = _tcpQueues(self.port, localPort)
            if mine is not None and theirs is not None and mine[0] == 0 and theirs[1] == 0:
                return
            if reactor.seconds() > deadline:
                raise AssertionError("the peer did not read within %.0f s (queues %r, %r)"
                                     % (seconds, mine, theirs))
            yield deferLater(0.01)

    @defer.inlineCallbacks
    def receiveUntil(self, expected, seconds):
        """
        Collect what arrives until it ends with C{expected} or C{seconds}
        pass; return all of it (C{b""} if nothing came).
        """
        import socket
        deadline = reactor.seconds() + seconds
        while not self.received.endswith(expected) and reactor.seconds() < deadline:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                yield deferLater(0.01)
                continue
            if not data:
                break
            self.received += data
        return bytes(self.received)


GO_SIZES = [0, 1, 128, 1024, 1025, 100000, 1048576, 3 * 1048576 + 7]


class RealGoMioTests(unittest.TestCase):
    """
    muxframe (MIO) against the Go mio library.
    """

    timeout = 45

    def setUp(self):
        self.binary = goMioPeer()
        self.net = Loopback(self)

    def peer(self, *args):
        return spawnPeer(self, "go mio " + " ".join(args[:2]), [self.binary] + list(args))

    @defer.inlineCallbacks
    def _goClient(self, goArgs, sizes, serverOpens=(), **settings):
        instances = []
        factory = trackServerConnections(self, RecordingFactory(MultiplexerFactory(
            echoFactory(instances), framing="mio", role="server", **settings)))
        port = yield self.net.listen(factory)
        args = ["-mode", "client", "-addr", "127.0.0.1:%d" % (port,),
                "-sizes", ",".join(map(str, sizes)), "-timeout", "25s"] + list(goArgs)
        if serverOpens:
            args += ["-accept", str(len(serverOpens))]
        peer = self.peer(*args)
        children = []
        if serverOpens:
            mux = yield withTimeout(factory.whenConnected(), EXCHANGE_TIMEOUT, "Go client")
            children = yield withTimeout(openChecks(mux, serverOpens), EXCHANGE_TIMEOUT,
                                         "echo from the Go client")
        code = yield waitExit(peer, 30)
        if code != 0 or "ALL OK" not in peer.lines or len(resultLines(peer)) != len(sizes):
            self.fail("Go mio client against muxframe server failed (exit %r):\n%s\n"
                      "wire:\n%s" % (code, peer.output(), factory.dump()))
        assertAllOk(self, children, factory)

    def test_goClientToMuxframeServer(self):
        """
        A Go mio client (receive limit raised to 16 MiB - 1) opens several
        streams, 0 bytes to 3 MiB, to a muxframe MIO server and gets every
        byte back.
        """
        return self._goClient(["-readlimit", "16777215"], GO_SIZES)

    def test_muxframeServerOpensToGoClient(self):
        """
        The muxframe server opens streams toward a Go client, which echoes
        them (the Go client opens none of its own, so the two sides' even ids
        cannot race).
        """
        return self._goClient(["-readlimit", "16777215"], [], serverOpens=GO_SIZES)

    def test_goFrameSize128ToMuxframe128(self):
        """
        A Go peer that keeps its default 128-byte receive limit and sends
        128-byte frames, against muxframe with maxFrameSize=128.
        """
        return self._goClient(["-framesize", "128"], [0, 1, 128, 129, 5000, 100000],
                              maxFrameSize=128)

    def test_unmodifiedGoToMuxframe128(self):
        """
        An unmodified Go peer (receive limit 128, sent frames up to 1024
        bytes) against muxframe with maxFrameSize=128, as docs/protocols.md
        recommends.
        """
        # The Go library deadlocks on the FIN it gets (session.closeWith holds
        # the session lock that stream.closeWith takes): its own timeout ends it.
        return self._goClient(["-timeout", "4s"], [1, 128, 129, 1024, 5000],
                              maxFrameSize=128)


    @defer.inlineCallbacks
    def _goServer(self, goArgs, sizes, goOpens=(), **settings):
        args = ["-mode", "server", "-addr", "127.0.0.1:0",
                "-sizes", ",".join(map(str, goOpens)), "-timeout", "25s"] + list(goArgs)
        if goOpens:
            args.append("-open")
        peer = self.peer(*args)
        port = yield peer.whenListening()
        instances = []
        recorder = RecordingFactory(MultiplexerFactory(
            echoFactory(instances), framing="mio", role="client", **settings))
        yield self.net.connect(port, recorder)
        mux = yield recorder.whenConnected()
        children = yield withTimeout(openChecks(mux, sizes), EXCHANGE_TIMEOUT,
                                     "echo from the Go server")
        assertAllOk(self, children, recorder)
        if goOpens:
            yield withTimeout(self._waitFor(peer, "SERVER-OPENED "), EXCHANGE_TIMEOUT,
                              "the Go server's own streams")
            if "SERVER-OPENED ALL OK" not in peer.lines:
                self.fail("streams the Go server opened failed:\n%s\nwire:\n%s" % (
                    peer.output(), recorder.dump()))
            if len(instances) != len(goOpens):
                self.fail("muxframe echoed %d of %d Go-opened streams" % (
                    len(instances), len(goOpens)))

    @defer.inlineCallbacks
    def _waitFor(self, peer, prefix):
        while not any(line.startswith(prefix) for line in peer.lines):
            if peer.ended:
                raise AssertionError("%s ended:\n%s" % (peer.name, peer.output()))
            yield deferLater(0.05)

    def test_muxframeClientToGoServer(self):
        """
        A muxframe MIO client opens several streams, 0 bytes to 3 MiB, to a Go
        mio echo server (receive limit raised) and gets every byte back.
        """
        return self._goServer(["-readlimit", "16777215"], GO_SIZES)

    def test_goServerOpensToMuxframeClient(self):
        """
        The Go server opens streams toward the muxframe client, which echoes
        them (the client opens none of its own at the same time: a Go peer
        opens "last id seen + 2", which can race with the client's next id).
        """
        return self._goServer(["-readlimit", "16777215"], [], goOpens=GO_SIZES)

    def test_muxframeClientManyStreamsToGoServer(self):
        """
        A muxframe client runs 100 concurrent streams (0 to 60 KB each) over
        one connection to a Go server.
        """
        return self._goServer(["-readlimit", "16777215"],
                              [(i * 7919) % 60000 for i in range(100)])

    def test_muxframeSmallWindowToGoServer(self):
        """
        muxframe opening streams with its smallest window (1024 bytes): the
        Go server's writes, which lose credit when a 1024-byte frame does not
        fit, still complete.
        """
        return self._goServer(["-readlimit", "16777215"], [1, 1000, 1025, 5000, 100000],
                              windowSize=1024)

    @defer.inlineCallbacks
    def test_goExampleEchoServerResets(self):
        """
        A Go server written as the library's example (io.Copy(str, str);
        str.Close()) ends each stream with RST code 0 and no half-close:
        muxframe delivers every echoed byte, then reports the reset.  (Sizes
        stay under io.Copy's 32 KiB buffer: the library's Write keeps the
        caller's slice, so io.Copy corrupts larger echoes on the Go side.)
        """
        peer = self.peer("-mode", "server", "-addr", "127.0.0.1:0", "-exampleecho",
                         "-readlimit", "16777215", "-timeout", "25s")
        port = yield peer.whenListening()
        recorder = RecordingFactory(MultiplexerFactory(None, framing="mio", role="client"))
        yield self.net.connect(port, recorder)
        mux = yield recorder.whenConnected()
        sizes = [1, 1024, 30000]
        children = yield withTimeout(openChecks(mux, sizes), EXCHANGE_TIMEOUT,
                                     "echo from the Go example server")
        for child in children:
            self.assertEqual(bytes(child.received), child.data, child.describe())
            self.assertIsNotNone(child.reason.check(StreamResetError), child.describe())

    def test_muxframe128ToGoFrameSize128Server(self):
        """
        muxframe with maxFrameSize=128 against a Go server that keeps its
        default receive limit and sends 128-byte frames.
        """
        return self._goServer(["-framesize", "128"], [0, 1, 128, 129, 5000, 100000],
                              maxFrameSize=128)


# ---------------------------------------------------------------------------
# Blazeio emulation, from Blazeio 4.3.4 Blazeio/Protocols/multiplexer.py.
#
# What it reproduces (names are Blazeio's):
#  - frame = metadata(id, sid, len, opts) + data, one transport.write; LEN is
#    "%X"; the four fields are found by their 0x00 and 0x01 delimiters.
#  - Stream ids b"io_%d" from a per-connection counter (enter_stream).
#  - The first frame a side writes on a stream carries opts 0x06 unless it
#    has opts of its own (write_mux / __initial_handshake); any write,
#    acknowledgements included, clears it.
#  - Data goes in 10240-byte chunks (_chunk_size_base_, __to_chunks__), each
#    with a sid from 0, one frame in flight (inflight_window = 1): the next
#    chunk waits for the acknowledgement of the previous one (wfa).  A close
#    that arrives while waiting leaves the writer waiting forever; here that
#    is reported as a failure.
#  - Every received frame with a non-empty sid on a stream that is not closed
#    is acknowledged (opts 0x05, no sid, payload = the sid) once consumed.  On
#    the server, the handler's read loop holds __busy_stream__ while it works
#    (here: while it echoes), so acknowledgements of frames that arrive then
#    wait until it goes idle, and are dropped if the handler finishes first
#    (EOF, then close, then the stream is gone).  A new stream's lock starts
#    held (Stream.__init__ locks it), so the first frames wait too.  The mux
#    task parses a whole read before the tasks it wakes run: wake-ups are
#    queued until the end of dataReceived.
#  - EOF: opts 0x02, no sid, payload 0x04; close: opts 0x03, payload 0x04.
#    The server's __transporter__ sends EOF then close when the handler
#    returns; the client sends EOF and never close.
#  - A frame for an unknown, non-empty stream id creates that stream,
#    whatever its opts (close and acknowledgement included): on the server a
#    new handler runs; on the client the stream is entered and never read,
#    so never acknowledged (server-opened streams are ignored).

SOF, EOFB = b"\x00", b"\x01"
IO_EOF, IO_CLOSE, IO_FILL, IO_ACK, IO_CREATE = b"\x02", b"\x03", b"\x04", b"\x05", b"\x06"
BLAZEIO_CHUNK = 1024 * 10


def bmpFrame(streamId, sid, opts, data):
    return b"%b%b%b%b%b%b%b%b%b%b%X%b" % (
        SOF, streamId, EOFB, SOF, opts or b"", EOFB, SOF, sid or b"", EOFB,
        SOF, len(data), EOFB) + data


class BmpParseError(Exception):
    pass


class BmpFrameParser:
    """
    Split a BMP byte stream into (stream id, opts, sid, payload).  Strict: a
    field that does not start with 0x00, an empty or non-hex LEN is an
    error (muxframe must never send one).
    """

    def __init__(self):
        self.buffer = bytearray()
        self.fields = None
        self.offset = 0

    def inHeader(self):
        """
        Whether what was fed so far ends inside a frame header.
        """
        return self.fields is None and len(self.buffer) > 0

    def headerBytes(self):
        return len(self.buffer) if self.fields is None else 0

    def feed(self, data):
        self.buffer += data
        frames = []
        while True:
            if self.fields is None:
                pos, fields = 0, []
                for _ in range(4):
                    if len(self.buffer) <= pos:
                        return frames
                    if self.buffer[pos] != 0:
                        raise BmpParseError("byte %d: field starts with %#x, not 0x00" % (
                            self.offset + pos, self.buffer[pos]))
                    end = self.buffer.find(b"\x01", pos + 1)
                    if end < 0:
                        return frames
                    fields.append(bytes(self.buffer[pos + 1:end]))
                    pos = end + 1
                if not re.fullmatch(rb"[0-9A-Fa-f]+", fields[3]):
                    raise BmpParseError("byte %d: bad LEN %r" % (self.offset, fields[3]))
                del self.buffer[:pos]
                self.offset += pos
                self.fields = fields
            size = int(self.fields[3], 16)
            if len(self.buffer) < size:
                return frames
            data = bytes(self.buffer[:size])
            del self.buffer[:size]
            self.offset += size
            streamId, opts, sid, _ = self.fields
            self.fields = None
            frames.append((streamId, opts, sid, data))


class _BlazeioStream:
    def __init__(self, streamId, kind):
        self.id = streamId
        self.kind = kind            # "client" (ours), "handler" (server), "ignored"
        self.sids = 0
        self.initial = True         # __initial_handshake
        self.acks = set()
        self.ackWaiter = None       # (sid, Deferred)
        self.chunks = deque()
        self.received = bytearray()
        self.eofReceived = False
        self.closed = False
        self.busy = False           # __busy_stream__ held by the handler
        self.pendingAcks = []
        self.wakeup = None
        self.done = defer.Deferred()


class BlazeioEmulation(protocol.Protocol):
    """
    A BMP peer that behaves on the wire as Blazeio's multiplexer does.

    role "server": every stream the peer opens runs an echo handler.
    role "client": C{openStream(data)} writes data, then EOF, and reads the
    echo; streams the peer opens are entered and ignored.
    """

    def __init__(self, role):
        self.role = role
        self.parser = BmpFrameParser()
        self.streams = {}
        self.streamCount = 0
        self.handlerRuns = defaultdict(int)
        self.created = []           # (stream id, opts of the creating frame)
        self.ignored = defaultdict(int)
        self.failures = []
        self.log = []
        self.lost = defer.Deferred()
        self._receiving = False
        self._ready = deque()

    # transport

    def connectionLost(self, reason):
        for stream in list(self.streams.values()):
            self._streamClosed(stream)
        self.lost.callback(None)

    def dataReceived(self, data):
        self.log.append(("recv", data))
        try:
            frames = self.parser.feed(data)
        except BmpParseError as e:
            self.failures.append("unparseable BMP from muxframe: %s" % (e,))
            self.transport.abortConnection()
            return
        # Blazeio's mux task parses every frame of a read before the tasks
        # it wakes (handlers, writers waiting for acknowledgements, the
        # acknowledgement callbacks) get to run: queue those until then.
        self._receiving = True
        try:
            for frame in frames:
                self._frameReceived(*frame)
        finally:
            self._receiving = False
        while self._ready:
            self._ready.popleft()()

    def _later(self, task):
        if self._receiving:
            self._ready.append(task)
        else:
            task()

    def _write(self, stream, sid, opts, data):
        # write_mux: the first frame a side writes carries 0x06 unless it
        # has opts of its own; any write clears the flag.
        if stream.initial:
            opts = opts or IO_CREATE
            stream.initial = False
        frame = bmpFrame(stream.id, sid, opts, data)
        self.log.append(("send", frame))
        self.transport.write(frame)

    def _canWrite(self, stream):
        return not stream.closed and self.transport.connected

    # receiving

    def _frameReceived(self, streamId, opts, sid, data):
        stream = self.streams.get(streamId)
        if stream is None:
            if not streamId:
                return
            stream = self._create(streamId, opts)
        if opts == IO_EOF:
            stream.eofReceived = True
            self._wake(stream)
        elif opts == IO_CLOSE:
            self._streamClosed(stream)
        elif opts == IO_ACK:
            stream.acks.add(data)
            self._later(lambda: self._ackArrived(stream))
        else:
            # data (plain, 0x06, or a custom option delivered as data)
            if sid and not stream.closed:
                self._ackWhenConsumed(stream, sid)
            if data:
                stream.received += data
                stream.chunks.append(data)
                self._wake(stream)

    def _create(self, streamId, opts):
        self.created.append((streamId, opts))
        if self.role == "server":
            # A new Stream's __busy_stream__ starts locked; the handler task
            # starts after this read is parsed.
            stream = _BlazeioStream(streamId, "handler")
            stream.busy = True
            self.streams[streamId] = stream
            self._later(lambda: self._echoHandler(stream))
        else:
            stream = _BlazeioStream(streamId, "ignored")
            self.streams[streamId] = stream
        return stream

    def _ackArrived(self, stream):
        if stream.ackWaiter is not None and stream.ackWaiter[0] in stream.acks:
            wanted, d = stream.ackWaiter
            stream.ackWaiter = None
            stream.acks.discard(wanted)
            d.callback(None)

    def _ackWhenConsumed(self, stream, sid):
        if stream.kind == "ignored":
            self.ignored[stream.id] += 1        # nobody reads: never acknowledged
        elif stream.kind == "handler" and stream.busy:
            stream.pendingAcks.append(sid)
        else:
            # __send_ack__ runs once the reader lets go of __busy_stream__;
            # by then the stream may be closed, and then nothing is sent.
            self._later(lambda: self._canWrite(stream)
                        and self._write(stream, None, IO_ACK, sid))

    def _wake(self, stream):
        self._later(lambda: self._fireWakeup(stream))

    def _fireWakeup(self, stream):
        if stream.wakeup is not None:
            d, stream.wakeup = stream.wakeup, None
            d.callback(None)

    def _streamClosed(self, stream):
        # protocol.stream_closed: forget the stream; the stream is closed.
        self.streams.pop(stream.id, None)
        stream.closed = True
        if stream.ackWaiter is not None:
            sid, d = stream.ackWaiter
            stream.ackWaiter = None
            self.failures.append(
                "%r: close arrived while Blazeio waited for the acknowledgement "
                "of sid %r: a Blazeio writer would wait forever" % (stream.id, sid))
            d.errback(error.ConnectionDone("closed while waiting for an acknowledgement"))
        self._wake(stream)

    # writing

    @defer.inlineCallbacks
    def _writeData(self, stream, data):
        # __writer__: 10240-byte chunks, one in flight.
        if not data:
            return
        view = memoryview(data)
        pieces = []
        while len(view) > BLAZEIO_CHUNK:
            pieces.append(view[:BLAZEIO_CHUNK])
            view = view[BLAZEIO_CHUNK:]
        pieces.append(view)
        for piece in pieces:
            if not self._canWrite(stream):
                raise error.ConnectionDone("stream closed while writing")
            sid = b"%d" % stream.sids
            stream.sids += 1
            self._write(stream, sid, b"", bytes(piece))
            if sid in stream.acks:
                stream.acks.discard(sid)
                continue
            d = defer.Deferred()
            stream.ackWaiter = (sid, d)
            yield d

    def _sendEof(self, stream):
        if self._canWrite(stream):
            self._write(stream, None, IO_EOF, IO_FILL)

    def _sendClose(self, stream):
        if self._canWrite(stream):
            self._write(stream, None, IO_CLOSE, IO_FILL)
        self._streamClosed(stream)

    # the server's echo handler (on_client_connected + __transporter__)

    @defer.inlineCallbacks
    def _echoHandler(self, stream):
        self.handlerRuns[stream.id] += 1
        try:
            while True:
                if not stream.chunks and not stream.eofReceived and not stream.closed:
                    # Idle: the lock is free, the held acknowledgements go.
                    stream.busy = False
                    acks, stream.pendingAcks = stream.pendingAcks, []
                    for sid in acks:
                        if self._canWrite(stream):
                            self._write(stream, None, IO_ACK, sid)
                    stream.wakeup = defer.Deferred()
                    yield stream.wakeup
                stream.busy = True
                while stream.chunks:
                    yield self._writeData(stream, stream.chunks.popleft())
                if stream.eofReceived or stream.closed:
                    break
            # The handler returned: EOF, then close; acknowledgements still
            # waiting for the lock find the stream closed and are dropped.
            self._sendEof(stream)
            self._sendClose(stream)
        except Exception as e:
            self.failures.append("%r: handler failed: %r" % (stream.id, e))
        stream.done.callback(stream)

    # the client (create_stream, writer + concurrent reader, __eof__)

    def openStream(self, data):
        streamId = b"io_%d" % (self.streamCount,)
        self.streamCount += 1
        stream = _BlazeioStream(streamId, "client")
        self.streams[streamId] = stream
        self._clientStream(stream, data)
        return stream

    @defer.inlineCallbacks
    def _clientStream(self, stream, data):
        try:
            yield self._writeData(stream, data)
            self._sendEof(stream)        # __eof__; a Blazeio client never closes
            while not (stream.eofReceived or stream.closed):
                stream.wakeup = defer.Deferred()
                yield stream.wakeup
        except Exception as e:
            self.failures.append("%r: client stream failed: %r" % (stream.id, e))
        stream.done.callback(stream)

    def dump(self):
        return hexdump([("blz-" + d, b) for d, b in self.log])


class _CallRecordingTransport(StringTransport):
    """
    A L{StringTransport} that keeps each write or writeSequence call as one
    entry of C{log}, as L{RecordingFactory} does.
    """

    def __init__(self):
        StringTransport.__init__(self)
        self.log = []

    def write(self, data):
        self.log.append(("out", bytes(data)))
        StringTransport.write(self, data)

    def writeSequence(self, data):
        data = list(data)
        self.log.append(("out", b"".join(data)))
        StringTransport.writeSequence(self, data)


class MioFrameWalker:
    """
    Find MIO frame boundaries (docs: an 8-byte header, then C{size} bytes of
    payload only when SYN is set and WND is not), with the interface of
    L{BmpFrameParser} that L{assertWholeHeaders} uses.
    """

    def __init__(self):
        self.buffer = bytearray()
        self.payloadLeft = None
        self.offset = 0

    def inHeader(self):
        return self.payloadLeft is None and len(self.buffer) > 0

    def headerBytes(self):
        return len(self.buffer) if self.payloadLeft is None else 0

    def feed(self, data):
        self.buffer += data
        frames = []
        while True:
            if self.payloadLeft is None:
                if len(self.buffer) < 8:
                    return frames
                word = struct.unpack(">I", self.buffer[4:8])[0]
                size, flags = word >> 8, word & 0xFF
                self.payloadLeft = size if flags & SYN and not flags & WND else 0
                del self.buffer[:8]
                self.offset += 8
            if len(self.buffer) < self.payloadLeft:
                return frames
            del self.buffer[:self.payloadLeft]
            self.offset += self.payloadLeft
            self.payloadLeft = None
            frames.append(None)


class WholeHeaderWritesTests(unittest.SynchronousTestCase):
    """
    Every write muxframe makes ends outside a frame header, whatever its
    streams write and whenever its transport pauses it: Blazeio hangs on a
    header cut across reads (L{RealBlazeioTests.test_splitHeaderStallsBlazeio}),
    and a header cut across writes may be read in two.
    """

    def exchange(self, framing, walker, seed):
        rng = random.Random(seed)
        clock = Clock()
        settings = dict(framing=framing, reactor=clock, maxFrameSize=128)
        server = MultiplexerFactory(echoFactory(), role="server", **settings).buildProtocol(None)
        client = MultiplexerFactory(None, role="client", **settings).buildProtocol(None)
        serverTransport, clientTransport = _CallRecordingTransport(), _CallRecordingTransport()
        server.makeConnection(serverTransport)
        client.makeConnection(clientTransport)
        children = []
        for index in range(24):
            data = payload(seed, index, rng.randrange(0, 12000))
            client.openStream(protocol.Factory.forProtocol(
                lambda data=data: PieceCheckChild(data))).addCallback(children.append)
        links = [(clientTransport, server), (serverTransport, client)]
        for _ in range(20000):
            moved = False
            for transport, peer in links:
                # Now and then the transport pauses its producer (a full
                # socket buffer) for a round, mid-output.
                if rng.random() < 0.2:
                    transport.producer.pauseProducing()
                    clock.callLater(0, transport.producer.resumeProducing)
                data = transport.value()
                transport.clear()
                while data:
                    cut = rng.randrange(1, 3000)
                    peer.dataReceived(data[:cut])
                    data = data[cut:]
                    moved = True
            clock.advance(0.001)
            if not moved and len(children) == 24 and all(c.reason for c in children):
                break
        self.assertEqual(len(children), 24)
        assertAllOk(self, children)
        for transport in (clientTransport, serverTransport):
            frames = assertWholeHeaders(self, transport, walker())
            self.assertGreater(frames, 1000)

    def test_bmp(self):
        """
        BMP: headers are never cut across writes.
        """
        for seed in range(3):
            self.exchange("bmp", BmpFrameParser, seed)

    def test_mio(self):
        """
        MIO: headers are never cut across writes.
        """
        for seed in range(3):
            self.exchange("mio", MioFrameWalker, seed)


class BlazeioEmulationTests(unittest.TestCase):
    """
    muxframe (BMP) against the Blazeio emulation, both directions.
    """

    timeout = 30

    def setUp(self):
        self.net = Loopback(self)

    def assertClean(self, emu, recorder=None):
        if emu.failures:
            self.fail("Blazeio emulation saw:\n  %s\nwire:\n%s" % (
                "\n  ".join(emu.failures), emu.dump()))

    @defer.inlineCallbacks
    def _emulatedClient(self, sizes, **settings):
        instances = []
        recorder = trackServerConnections(self, RecordingFactory(MultiplexerFactory(
            echoFactory(instances), framing="bmp", role="server", **settings)))
        port = yield self.net.listen(recorder)
        emu = yield self.net.connect(port, protocol.Factory.forProtocol(
            lambda: BlazeioEmulation("client")))
        datas = [payload(2, i, size) for i, size in enumerate(sizes)]
        streams = [emu.openStream(data) for data in datas]
        yield withTimeout(defer.DeferredList([s.done for s in streams]),
                          EXCHANGE_TIMEOUT, "echo to the emulated Blazeio client")
        return emu, recorder, streams, datas, instances

    @defer.inlineCallbacks
    def test_clientToMuxframeServer(self):
        """
        An emulated Blazeio client (io_N ids, 0x06 on the first frame,
        10240-byte chunks with one in flight, EOF and no close) gets every
        stream echoed by a muxframe server, which ends each with EOF, then
        close, and sends nothing for streams it has forgotten.
        """
        sizes = [0, 1, 10240, 10241, 50000, 300000]
        emu, recorder, streams, datas, instances = yield self._emulatedClient(sizes)
        self.assertClean(emu)
        for stream, data in zip(streams, datas):
            self.assertEqual(len(stream.received), len(data), stream.id)
            self.assertEqual(bytes(stream.received), data, stream.id)
        # muxframe's close follows once the client's acknowledgements are in.
        for _ in range(100):
            if all(stream.closed for stream in streams):
                break
            yield deferLater(0.02)
        for stream in streams:
            self.assertTrue(stream.closed, "%r: muxframe sent no close" % (stream.id,))
        # Every frame muxframe sent named a stream the client had opened:
        # nothing re-created a forgotten stream on the Blazeio side.
        self.assertEqual(emu.created, [], emu.dump())
        yield deferLater(0.1)
        self.assertEqual(emu.created, [], emu.dump())
        # EOF came before close on every stream.
        order = defaultdict(list)
        for streamId, opts, sid, data in BmpFrameParser().feed(
                b"".join(b for d, b in emu.log if d == "recv")):
            if opts in (IO_EOF, IO_CLOSE):
                order[streamId].append(opts)
        for stream in streams:
            self.assertEqual(order[stream.id], [IO_EOF, IO_CLOSE], stream.id)

    @defer.inlineCallbacks
    def test_clientToMuxframeServerOneInFlight(self):
        """
        The same with muxframe keeping one 10240-byte frame in flight.
        """
        sizes = [1, 10240, 10241, 100000]
        emu, recorder, streams, datas, instances = yield self._emulatedClient(
            sizes, maxInFlight=1, maxFrameSize=10240)
        self.assertClean(emu)
        for stream, data in zip(streams, datas):
            self.assertEqual(bytes(stream.received), data, stream.id)

    @defer.inlineCallbacks
    def test_clientIgnoresServerOpenedStreams(self):
        """
        A stream a muxframe server opens toward a Blazeio client is never
        acknowledged: muxframe ends it with a timeout after ackTimeout, tells
        the client with a close, and the client's own streams still work.
        """
        recorder = trackServerConnections(self, RecordingFactory(MultiplexerFactory(
            echoFactory(), framing="bmp", role="server", ackTimeout=0.5)))
        port = yield self.net.listen(recorder)
        emu = yield self.net.connect(port, protocol.Factory.forProtocol(
            lambda: BlazeioEmulation("client")))
        mux = yield recorder.whenConnected()
        check = yield mux.openStream(protocol.Factory.forProtocol(
            lambda: CheckChild(b"x" * 30000)))
        yield withTimeout(check.done, 10, "the server-opened stream to time out")
        self.assertIsNotNone(check.reason.check(StreamTimeoutError), check.describe())
        self.assertEqual(len(emu.created), 1, emu.created)
        self.assertFalse(emu.created[0][0].startswith(b"io_"), emu.created)
        self.assertGreater(emu.ignored[emu.created[0][0]], 0)
        data = payload(3, 0, 25000)
        stream = emu.openStream(data)
        yield withTimeout(stream.done, EXCHANGE_TIMEOUT, "a client stream afterwards")
        self.assertEqual(bytes(stream.received), data)
        self.assertClean(emu)

    @defer.inlineCallbacks
    def _emulatedServer(self, sizes, **settings):
        server = protocol.ServerFactory()
        emus = []

        def build():
            emu = BlazeioEmulation("server")
            emus.append(emu)
            return emu

        server.protocol = build
        port = yield self.net.listen(trackServerConnections(self, server))
        recorder = RecordingFactory(MultiplexerFactory(
            None, framing="bmp", role="client", **settings))
        yield self.net.connect(port, recorder)
        mux = yield recorder.whenConnected()
        children = yield withTimeout(openChecks(mux, sizes), EXCHANGE_TIMEOUT,
                                     "echo from the emulated Blazeio server")
        yield deferLater(0.1)     # let any late frame arrive
        return emus[0], recorder, children

    @defer.inlineCallbacks
    def test_muxframeClientToServer(self):
        """
        A muxframe client's streams are echoed by an emulated Blazeio server
        (acknowledgements held while its handler works and dropped when it
        finishes; EOF, then close); every stream ends cleanly and each runs
        the handler once.
        """
        sizes = [1, 10, 10240, 10241, 100000, 700000]
        emu, recorder, children = yield self._emulatedServer(sizes)
        assertAllOk(self, children, recorder)
        self.assertClean(emu)
        self.assertEqual(sorted(emu.handlerRuns.values()), [1] * len(sizes),
                         emu.dump())

    @defer.inlineCallbacks
    def test_muxframeClientToServerOneInFlight(self):
        """
        The same with muxframe keeping one 10240-byte frame in flight.
        """
        sizes = [1, 10240, 10241, 100000]
        emu, recorder, children = yield self._emulatedServer(
            sizes, maxInFlight=1, maxFrameSize=10240)
        assertAllOk(self, children, recorder)
        self.assertClean(emu)

    @defer.inlineCallbacks
    def test_emptyStreamRunsHandlerOnce(self):
        """
        A muxframe stream that sends nothing but its half-close, and one that
        half-closes after its echo is back, each run the Blazeio server's
        handler once.
        """
        emu, recorder, children = yield self._emulatedServer([0])
        late = yield mux_openLate(recorder.multiplexers[0], payload(1, 9, 5))
        yield withTimeout(late.done, EXCHANGE_TIMEOUT, "the late stream")
        yield deferLater(0.1)
        assertAllOk(self, children + [late], recorder)
        self.assertClean(emu)
        self.assertEqual(dict(emu.handlerRuns), {b"io_0": 1, b"io_1": 1},
                         "frames that re-created a forgotten stream: %r\nwire:\n%s"
                         % (emu.created[2:], emu.dump()))



# ---------------------------------------------------------------------------
# Go mio emulation, from github mivinci/mio (commit 2226124) mio.go/frame.go.
#
# What it reproduces (names are the library's):
#  - 8-byte header: id (bit 31 masked), 24-bit size, flags; a payload only
#    for SYN frames without WND (handleFrame reads LimitReader(size) there).
#  - Dispatch, first match wins: SYN (known stream: WND = window increment,
#    else data, HFR = end), RST with WND (open), RST (reset), WND (session
#    window, ignored), FIN (close session).
#  - Ids: Open uses lastid + 2, and every received open sets lastid to its
#    id, so both sides of a Go pair use even ids.
#  - Open announces WindowSizeLimit (0xffffff) as the stream's window; for
#    a received open the stream's send credit is the announced size.
#  - write: frames of at most FrameSizeLimit (1024) bytes; window.Decr,
#    with its flaw: a frame larger than the remaining credit zeroes the
#    credit and goes out empty.  CloseWrite sends an empty SYN|HFR frame.
#  - Read: each read of n bytes sends a window update SYN|WND of n.
#  - A data frame over ReadBufferLimit (128) is a flow-control error: RST
#    with code 2 (the library resets the stream; it is recorded here).
#  - No keepalives, no session window updates, never closes the TCP
#    connection itself.
# What it checks on muxframe: no frame for an unknown stream, no reset, no
# data beyond the stream's credit, no data frame over ReadBufferLimit.

SYN, FIN, RST, WND, HFR = 0x01, 0x02, 0x04, 0x08, 0x10


def mioHeader(streamId, size, flags):
    return struct.pack(">I", streamId & 0x7FFFFFFF) + struct.pack(">I", (size << 8) | flags)


class _GoStream:
    def __init__(self, streamId, sendWindow, peerWindow):
        self.id = streamId
        self.avail = sendWindow     # window.avail
        self.peerCredit = peerWindow  # what muxframe may still send us
        self.writes = deque()       # [bytes, offset] or None for CloseWrite
        self.writeClosed = False
        self.received = bytearray()
        self.eof = False
        self.err = None
        self.done = defer.Deferred()
        self.echo = False


class GoMioEmulation(protocol.Protocol):
    """
    An MIO peer that behaves on the wire as the Go mio library does.
    Streams the peer opens are echoed; C{openStream(data)} opens one, writes
    C{data}, half-closes and collects the echo.
    """

    def __init__(self, readBufferLimit=128, frameSizeLimit=1024,
                 windowSizeLimit=0xFFFFFF, openOnConnect=()):
        self.readBufferLimit = readBufferLimit
        self.frameSizeLimit = frameSizeLimit
        self.windowSizeLimit = windowSizeLimit
        self.lastid = 0
        self.streams = {}
        self.accepted = []
        self.buffer = bytearray()
        self.header = None
        self.violations = []
        self.resets = []
        self.sessionWindowFrames = 0
        self.fin = None
        self.emptyFramesSent = 0
        self.log = []
        self.maxDataFrame = 0
        self.openOnConnect = list(openOnConnect)
        self.openedOnConnect = []

    def connectionMade(self):
        for data in self.openOnConnect:
            self.openedOnConnect.append(self.openStream(data))

    def _send(self, header, data=b""):
        self.log.append(("send", header + data))
        self.transport.write(header)
        if data:
            self.transport.write(data)

    def dataReceived(self, data):
        self.log.append(("recv", bytes(data)))
        self.buffer += data
        while True:
            if self.header is None:
                if len(self.buffer) < 8:
                    return
                streamId = struct.unpack(">I", self.buffer[:4])[0] & 0x7FFFFFFF
                word = struct.unpack(">I", self.buffer[4:8])[0]
                size, flags = word >> 8, word & 0xFF
                del self.buffer[:8]
                hasPayload = flags & SYN and not flags & WND
                self.header = (streamId, size, flags, size if hasPayload else 0)
            streamId, size, flags, length = self.header
            if len(self.buffer) < length:
                return
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
            self.header = None
            self._frame(streamId, size, flags, body)

    def _frame(self, streamId, size, flags, body):
        if flags & SYN:
            stream = self.streams.get(streamId)
            if stream is None:
                # The library answers RST code 3 and does not skip the
                # payload (it loses framing): muxframe must never do this.
                self.violations.append("frame %#x for unknown stream %d" % (flags, streamId))
                return
            if flags & WND:
                stream.avail += size
                self._pump(stream)
                return
            self.maxDataFrame = max(self.maxDataFrame, len(body))
            if stream.err is not None:
                self._send(mioHeader(streamId, 3, RST))
                return
            stream.peerCredit -= len(body)
            if stream.peerCredit < 0:
                self.violations.append("stream %d: muxframe sent %d bytes beyond its credit" % (
                    streamId, -stream.peerCredit))
            if len(body) > self.readBufferLimit:
                stream.err = "flow control"
                self.violations.append("stream %d: %d-byte data frame over ReadBufferLimit %d" % (
                    streamId, len(body), self.readBufferLimit))
                self._send(mioHeader(streamId, 2, RST))
                return
            if body:
                # The application reads it: Read sends a window update of n.
                stream.received += body
                self._send(mioHeader(streamId, len(body), SYN | WND))
                stream.peerCredit += len(body)
                if stream.echo:
                    self._write(stream, body)
            if flags & HFR:
                stream.eof = True
                if stream.echo:
                    self._closeWrite(stream)
                self._maybeDone(stream)
        elif flags & RST:
            if flags & WND:
                self._accept(streamId, size)
            else:
                self.resets.append((streamId, size))
                stream = self.streams.pop(streamId, None)
                if stream is not None:
                    stream.err = "reset %d" % (size,)
                    self._maybeDone(stream, force=True)
        elif flags & WND:
            self.sessionWindowFrames += 1
        elif flags & FIN:
            # closeWith: every stream ends with the session.
            self.fin = size
            for stream in list(self.streams.values()):
                stream.err = stream.err or "session closed, code %d" % (size,)
                self._maybeDone(stream, force=True)

    def connectionLost(self, reason):
        for stream in list(self.streams.values()):
            stream.err = stream.err or "connection lost"
            self._maybeDone(stream, force=True)

    def _accept(self, streamId, size):
        # handleStreamOpen: lastid = id; send credit = the announced window;
        # the opener's window also bounds what it may send us.
        self.lastid = streamId
        if streamId in self.streams:
            self.violations.append("open for stream %d, already open" % (streamId,))
        stream = _GoStream(streamId, size, size)
        stream.echo = True
        self.streams[streamId] = stream
        self.accepted.append(stream)

    def openStream(self, data):
        self.lastid += 2
        stream = _GoStream(self.lastid, self.windowSizeLimit, self.windowSizeLimit)
        self.streams[stream.id] = stream
        self._send(mioHeader(stream.id, self.windowSizeLimit, RST | WND))
        self._write(stream, data)
        self._closeWrite(stream)
        return stream

    def _write(self, stream, data):
        if data:
            stream.writes.append([bytes(data), 0])
            self._pump(stream)

    def _closeWrite(self, stream):
        stream.writes.append(None)
        self._pump(stream)

    def _pump(self, stream):
        while stream.writes and self.transport.connected:
            item = stream.writes[0]
            if item is None:
                # write(nil, last=true): Decr(0) returns 0 at once.
                stream.writes.popleft()
                self._send(mioHeader(stream.id, 0, SYN | HFR))
                stream.writeClosed = True
                self._maybeDone(stream)
                continue
            data, offset = item
            want = min(len(data) - offset, self.frameSizeLimit)
            if stream.avail <= 0:
                return                  # Decr waits for a window update
            if want > stream.avail:     # Decr's flaw: credit lost, empty frame
                stream.avail = 0
                sent = 0
                self.emptyFramesSent += 1
            else:
                stream.avail -= want
                sent = want
            self._send(mioHeader(stream.id, sent, SYN), data[offset:offset + sent])
            item[1] = offset + sent
            if item[1] == len(data):
                stream.writes.popleft()

    def _maybeDone(self, stream, force=False):
        if not stream.done.called and (force or (stream.eof and stream.writeClosed)):
            stream.done.callback(stream)

    def dump(self):
        return hexdump([("go-" + d, b) for d, b in self.log])


class GoMioEmulationTests(unittest.TestCase):
    """
    muxframe (MIO) against the Go mio emulation, both directions.
    """

    timeout = 30

    def setUp(self):
        self.net = Loopback(self)

    def assertClean(self, emu):
        problems = list(emu.violations)
        if emu.resets:
            problems.append("muxframe reset streams (id, code): %r" % (emu.resets,))
        if emu.fin is not None:
            problems.append("muxframe closed the session, code %d" % (emu.fin,))
        if emu.sessionWindowFrames:
            problems.append("%d session window frames" % (emu.sessionWindowFrames,))
        if problems:
            self.fail("Go mio emulation saw:\n  %s\nwire:\n%s" % (
                "\n  ".join(problems), emu.dump()))

    @defer.inlineCallbacks
    def _emulatedClient(self, sizes, serverOpens=(), goOptions=None, **settings):
        instances = []
        recorder = trackServerConnections(self, RecordingFactory(MultiplexerFactory(
            echoFactory(instances), framing="mio", role="server", **settings)))
        port = yield self.net.listen(recorder)
        emu = yield self.net.connect(port, protocol.Factory.forProtocol(
            lambda: GoMioEmulation(**(goOptions or {}))))
        datas = [payload(4, i, size) for i, size in enumerate(sizes)]
        streams = [emu.openStream(data) for data in datas]
        yield withTimeout(defer.DeferredList([s.done for s in streams]),
                          EXCHANGE_TIMEOUT, "echo to the emulated Go client")
        children = []
        if serverOpens:
            mux = yield recorder.whenConnected()
            children = yield withTimeout(openChecks(mux, serverOpens), EXCHANGE_TIMEOUT,
                                         "echo from the emulated Go client")
        return emu, recorder, streams, datas, children

    def assertEchoed(self, emu, streams, datas):
        for stream, data in zip(streams, datas):
            if bytes(stream.received) != data or stream.err:
                self.fail("stream %d: sent %d, got %d back, error %r\nwire:\n%s" % (
                    stream.id, len(data), len(stream.received), stream.err, emu.dump()))

    @defer.inlineCallbacks
    def test_clientToMuxframeServer(self):
        """
        An emulated Go client (receive limit raised, 1024-byte frames, even
        ids, HFR to end) gets every stream echoed by a muxframe server, with
        no reset, no keepalive and no frame for an unknown stream.
        """
        sizes = [0, 1, 1024, 1025, 5000, 300000]
        emu, recorder, streams, datas, _ = yield self._emulatedClient(
            sizes, goOptions=dict(readBufferLimit=1 << 20))
        self.assertEchoed(emu, streams, datas)
        self.assertEqual([s.id for s in streams], [2, 4, 6, 8, 10, 12])
        self.assertClean(emu)

    @defer.inlineCallbacks
    def test_smallWindowsBothWays(self):
        """
        With the Go side announcing a 4096-byte window, muxframe never sends
        beyond it and keeps returning credit to the Go side, which writes
        1024-byte frames within it.
        """
        sizes = [100000, 33333, 4096]
        emu, recorder, streams, datas, _ = yield self._emulatedClient(
            sizes, goOptions=dict(readBufferLimit=1 << 20, windowSizeLimit=4096))
        self.assertEchoed(emu, streams, datas)
        self.assertClean(emu)

    @defer.inlineCallbacks
    def test_muxframeServerOpensToClient(self):
        """
        muxframe's server opens streams toward an emulated Go client, which
        echoes them; the Go side then opens its next stream at lastid + 2.
        """
        emu, recorder, streams, datas, children = yield self._emulatedClient(
            [], serverOpens=[0, 1, 1024, 1025, 200000],
            goOptions=dict(readBufferLimit=1 << 20))
        assertAllOk(self, children, recorder)
        self.assertEqual(len(emu.accepted), 5)
        ids = [s.id for s in emu.accepted]
        self.assertEqual(len(set(ids)), len(ids))
        data = payload(5, 0, 3000)
        stream = emu.openStream(data)
        self.assertEqual(stream.id, max(ids) + 2)
        yield withTimeout(stream.done, EXCHANGE_TIMEOUT, "the Go client's stream")
        self.assertEchoed(emu, [stream], [data])
        self.assertClean(emu)

    @defer.inlineCallbacks
    def test_frameSize128Both(self):
        """
        Go side sending 128-byte frames with its default 128-byte receive
        limit, muxframe with maxFrameSize=128: every frame within the limit.
        """
        sizes = [0, 1, 128, 129, 5000]
        emu, recorder, streams, datas, _ = yield self._emulatedClient(
            sizes, goOptions=dict(frameSizeLimit=128), maxFrameSize=128)
        self.assertEchoed(emu, streams, datas)
        self.assertClean(emu)
        self.assertLessEqual(emu.maxDataFrame, 128)

    @defer.inlineCallbacks
    def test_unmodifiedGoDefaultsToMuxframe128(self):
        """
        An unmodified Go peer (receive limit 128, sends 1024-byte frames)
        against muxframe with maxFrameSize=128, as docs/protocols.md
        recommends: every stream is echoed.
        """
        sizes = [1, 128, 129, 1024]
        emu, recorder, streams, datas, _ = yield self._emulatedClient(
            sizes, maxFrameSize=128)
        self.assertEchoed(emu, streams, datas)
        self.assertClean(emu)


    @defer.inlineCallbacks
    def test_simultaneousOpenOfTheSameId(self):
        """
        A Go client and the muxframe server open a stream at the same
        instant: both pick id 2 (the Go library uses last id + 2 from both
        sides).  muxframe cannot tell the two streams apart and ends the
        session cleanly with FIN code 1 (a protocol error), rather than
        mixing the streams' data.  This is a hazard of the Go library's id
        scheme, not something muxframe can avoid; see the README.
        """
        recorder = trackServerConnections(self, RecordingFactory(MultiplexerFactory(
            echoFactory(), framing="mio", role="server")))
        port = yield self.net.listen(recorder)
        emu = yield self.net.connect(port, protocol.Factory.forProtocol(
            lambda: GoMioEmulation(readBufferLimit=1 << 20, openOnConnect=[b"go"])))
        # The test resumes inside the server's makeConnection (or before the
        # reactor has flushed the Go side's open): muxframe opens before it
        # has read anything.
        mux = yield recorder.whenConnected()
        check = yield mux.openStream(protocol.Factory.forProtocol(
            lambda: CheckChild(b"muxframe")))
        yield withTimeout(check.done, EXCHANGE_TIMEOUT, "the session to end")
        for _ in range(100):
            if emu.fin is not None:
                break
            yield deferLater(0.02)
        # Wire, both sides: 00000002 ffffff0c (Go opens 2) crosses
        # 00000002 0400000c (muxframe opens 2); muxframe answers the Go open
        # with 00000000 00000102 (FIN, code 1).  The Go side replaced its own
        # stream 2 with muxframe's (that stream of its hangs for ever).
        self.assertEqual(emu.openedOnConnect[0].id, 2)
        self.assertEqual(emu.fin, 1, emu.dump())
        self.assertEqual(emu.violations, ["open for stream 2, already open"])
        self.assertIsNotNone(check.reason.check(MalformedFrame), check.describe())

    @defer.inlineCallbacks
    def _emulatedServer(self, sizes, goOpens=(), goOptions=None, **settings):
        server = protocol.ServerFactory()
        emus = []

        def build():
            emu = GoMioEmulation(**(goOptions or {}))
            emus.append(emu)
            return emu

        server.protocol = build
        port = yield self.net.listen(trackServerConnections(self, server))
        instances = []
        recorder = RecordingFactory(MultiplexerFactory(
            echoFactory(instances), framing="mio", role="client", **settings))
        yield self.net.connect(port, recorder)
        mux = yield recorder.whenConnected()
        children = yield withTimeout(openChecks(mux, sizes), EXCHANGE_TIMEOUT,
                                     "echo from the emulated Go server")
        emu = emus[0]
        datas = [payload(6, i, size) for i, size in enumerate(goOpens)]
        streams = [emu.openStream(data) for data in datas]
        yield withTimeout(defer.DeferredList([s.done for s in streams]),
                          EXCHANGE_TIMEOUT, "echo of the Go server's streams")
        return emu, recorder, children, streams, datas, instances

    @defer.inlineCallbacks
    def test_muxframeClientToServer(self):
        """
        A muxframe client's streams (odd ids) are echoed by an emulated Go
        server within muxframe's window, with 1024-byte frames from the Go
        side; the Go server then opens streams at the last id + 2, which
        muxframe accepts and echoes.
        """
        emu, recorder, children, streams, datas, instances = yield self._emulatedServer(
            [0, 1, 1024, 1025, 300000], goOpens=[0, 1, 1025, 100000],
            goOptions=dict(readBufferLimit=1 << 20))
        assertAllOk(self, children, recorder)
        self.assertEchoed(emu, streams, datas)
        self.assertEqual([s.id for s in streams], [11, 13, 15, 17])
        self.assertEqual(len(instances), 4)
        self.assertClean(emu)

    @defer.inlineCallbacks
    def test_smallMuxframeWindow(self):
        """
        muxframe opening streams with its smallest window (1024 bytes):
        the Go side's credit-losing writes (an empty frame when a 1024-byte
        frame does not fit) still complete.
        """
        emu, recorder, children, streams, datas, instances = yield self._emulatedServer(
            [5000, 20000], goOptions=dict(readBufferLimit=1 << 20),
            windowSize=1024)
        assertAllOk(self, children, recorder)
        self.assertClean(emu)
