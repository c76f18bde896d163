"""
Helpers of the stream conformance suite (L{tests.test_conformance}): child
protocols for both ends of a stream, a bounded bulk producer, a small
"service" protocol driven by a command line, and the plumbing that connects
two multiplexers over loopback TCP (or in memory, with a L{Clock}).

Everything here is framing-neutral: the suite runs the same checks for MIO
and BMP, the way trio's C{check_half_closeable_stream} runs one set of
checks against any stream pair.
"""

import functools
import hashlib
import random
import socket

from zope.interface import implementer

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.test import iosim

from muxframe import MultiplexerFactory

KiB = 1024
MiB = 1024 * KiB


@functools.lru_cache(maxsize=16)
def pattern(seed, size):
    """
    Return C{size} deterministic pseudo-random bytes for C{seed}.
    """
    return random.Random(seed).randbytes(size)


def digest(data):
    return hashlib.sha256(data).hexdigest()


def waitUntil(predicate, what, timeout=15.0, interval=0.001):
    """
    Poll C{predicate} on the reactor until it is true; fail after
    C{timeout} seconds, naming C{what} (a bounded wait, never a sleep in a
    test body).
    """
    d = Deferred()
    start = reactor.seconds()

    def check():
        try:
            ok = predicate()
        except BaseException:
            d.errback()
            return
        if ok:
            d.callback(None)
        elif reactor.seconds() - start > timeout:
            d.errback(AssertionError("timed out after %gs waiting for %s" % (timeout, what)))
        else:
            reactor.callLater(interval, check)

    check()
    return d


def turns(n=5):
    """
    Return a Deferred firing after C{n} reactor turns.
    """
    d = Deferred()

    def step(left):
        if left <= 0:
            d.callback(None)
        else:
            reactor.callLater(0, step, left - 1)

    step(n)
    return d


@implementer(IPushProducer)
class BulkSender:
    """
    A streaming producer writing C{data} on C{transport} in C{chunk}-sized
    writes while it is not paused, then calling C{then()}.

    It records pauses, resumes and the largest send buffer of its stream
    seen right after each write.
    """

    def __init__(self, transport, data, chunk=16 * KiB, then=None, perTurn=MiB):
        self.transport = transport
        self.data = memoryview(data)
        self.chunk = chunk
        self.then = then
        self.perTurn = perTurn
        self.offset = 0
        self.paused = False
        self.stopped = False
        self.pauses = 0
        self.resumes = 0
        self.maxBuffered = 0
        self._scheduled = False
        self.done = Deferred()

    def start(self):
        self.transport.registerProducer(self, True)
        self._schedule()

    def _schedule(self):
        if not self._scheduled:
            self._scheduled = True
            reactor.callLater(0, self._run)

    def _buffered(self):
        mux = self.transport._mux
        return mux.engine.sendBuffered(self.transport.streamId)

    def _run(self):
        self._scheduled = False
        written = 0
        end = len(self.data)
        while not self.paused and not self.stopped and self.offset < end:
            piece = bytes(self.data[self.offset:self.offset + self.chunk])
            self.offset += len(piece)
            self.transport.write(piece)
            written += len(piece)
            buffered = self._buffered()
            if buffered > self.maxBuffered:
                self.maxBuffered = buffered
            if written >= self.perTurn:
                self._schedule()
                return
        if self.offset >= end and not self.stopped and not self.done.called:
            self.transport.unregisterProducer()
            if self.then is not None:
                self.then()
            self.done.callback(self)

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        self.resumes += 1
        self._schedule()

    def stopProducing(self):
        self.stopped = True


@implementer(IPushProducer)
class IdleProducer:
    """
    A registered producer that writes nothing and records its calls.
    """

    def __init__(self):
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.stopped = False

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        self.resumes += 1

    def stopProducing(self):
        self.stopped = True


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    """
    A half-closeable child that records what happens to it.

    @ivar events: C{"made"}, C{"data"} (consecutive deliveries collapsed),
        C{"readLost"}, C{"writeLost"}, C{"lost"}, in order.
    @ivar reasons: every C{connectionLost} reason (there must be one).
    @ivar lost: fires with this child (not the reason) at the first
        C{connectionLost}.
    """

    address = None

    def __init__(self, initial=b"", halfClose=False, keep=True):
        self.initial = initial
        self.halfClose = halfClose
        self.keep = keep
        self.events = []
        self.chunks = []
        self.count = 0
        self.hasher = hashlib.sha256()
        self.reasons = []
        self.lost = Deferred()
        self.readLost = Deferred()
        self.writeLost = Deferred()
        self._waiters = []

    def connectionMade(self):
        self.events.append("made")
        if self.initial:
            self.transport.write(self.initial)
        if self.halfClose:
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.count += len(data)
        self.hasher.update(data)
        if self.keep:
            self.chunks.append(data)
        waiters = self._waiters
        while waiters and waiters[0][0] <= self.count:
            waiters.pop(0)[1].callback(self)

    def whenReceived(self, size):
        """
        Return a Deferred firing once C{size} bytes in all have arrived
        (failing with the reason if the stream is lost first).
        """
        if self.count >= size:
            return succeed(self)
        if self.reasons:
            from twisted.internet.defer import fail
            return fail(self.reasons[0])
        d = Deferred()
        self._waiters.append((size, d))
        self._waiters.sort(key=lambda item: item[0])
        return d

    @property
    def data(self):
        return b"".join(self.chunks)

    def readConnectionLost(self):
        self.events.append("readLost")
        if not self.readLost.called:
            self.readLost.callback(self)

    def writeConnectionLost(self):
        self.events.append("writeLost")
        if not self.writeLost.called:
            self.writeLost.callback(self)

    def connectionLost(self, reason):
        self.events.append("lost")
        self.reasons.append(reason)
        if len(self.reasons) == 1:
            waiters, self._waiters = self._waiters, []
            for size, d in waiters:
                d.errback(reason)
            self.lost.callback(self)  # not the Failure: that would errback


class Service(Recorder):
    """
    The far end of a stream, driven by a first line naming what to do:

      - C{echo}: write back everything; end after the peer ends.
      - C{send N SEED}: write C{pattern(SEED, N)} with a L{BulkSender},
        then half-close; meanwhile hash what arrives.
      - C{hold}: pause this stream's transport (a child that stops
        reading); keep what arrives (once resumed).
      - C{idle}: register an L{IdleProducer}.
      - C{abort}: abort the stream at once.
      - C{blast N SEED}: write C{pattern(SEED, N)} in one C{write}, no
        producer, then half-close.
    """

    def __init__(self, chunk=16 * KiB):
        Recorder.__init__(self, keep=False)
        self.command = None
        self._line = b""
        self.chunk = chunk
        self.sender = None
        self.producer = None

    def dataReceived(self, data):
        if self.command is None:
            self._line += data
            if b"\n" not in self._line:
                if len(self._line) > 200:
                    self.transport.abortConnection()
                return
            line, _, data = self._line.partition(b"\n")
            self._line = b""
            self._start(line.split())
            if not data or self.transport is None:
                return
        if self.command == b"echo":
            self.transport.write(data)
        Recorder.dataReceived(self, data)

    def _start(self, words):
        self.command = words[0]
        if self.command == b"send":
            size, seed = int(words[1]), int(words[2])
            self.sender = BulkSender(
                self.transport, pattern(seed, size), self.chunk,
                then=self.transport.loseWriteConnection)
            self.sender.start()
        elif self.command == b"hold":
            self.transport.pauseProducing()
        elif self.command == b"idle":
            self.producer = IdleProducer()
            self.transport.registerProducer(self.producer, True)
        elif self.command == b"abort":
            self.transport.abortConnection()
        elif self.command == b"blast":
            # One write of everything, no producer, then half-close.
            size, seed = int(words[1]), int(words[2])
            self.transport.write(pattern(seed, size))
            self.transport.loseWriteConnection()

    def readConnectionLost(self):
        Recorder.readConnectionLost(self)
        if self.command == b"echo":
            self.transport.loseConnection()


class ChildFactory(Factory):
    """
    Build children with C{make()} and remember them, by stream id too.
    """

    def __init__(self, make):
        self.make = make
        self.built = []
        self.byStream = {}

    def buildProtocol(self, addr):
        protocol = self.make()
        protocol.address = addr
        self.built.append(protocol)
        self.byStream[addr.streamId] = protocol
        return protocol


def services():
    return ChildFactory(Service)


class _NotifyingMultiplexerFactory(MultiplexerFactory):
    """
    A L{MultiplexerFactory} that reports each connected multiplexer.
    """

    def __init__(self, *args, **kwargs):
        MultiplexerFactory.__init__(self, *args, **kwargs)
        self.connected = []
        self._waiting = []

    def buildProtocol(self, addr):
        protocol = MultiplexerFactory.buildProtocol(self, addr)
        made = protocol.connectionMade

        def connectionMade():
            made()
            self.connected.append(protocol)
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(protocol)

        protocol.connectionMade = connectionMade
        return protocol

    def nextConnection(self, index):
        if len(self.connected) > index:
            return succeed(self.connected[index])
        d = Deferred()

        def pick(_):
            if len(self.connected) > index:
                return self.connected[index]
            return self.nextConnection(index)

        self._waiting.append(d)
        return d.addCallback(pick)


def closeConnections(*protocols):
    """
    Abort the transports of C{protocols} (multiplexers or raw protocols)
    still connected; return a Deferred firing once each has lost its
    connection.
    """
    waits = []
    for protocol in protocols:
        transport = getattr(protocol, "transport", None)
        if transport is None:
            continue
        if hasattr(protocol, "whenLost"):
            d = protocol.whenLost()
        else:
            d = getattr(protocol, "closed", None)
        if not getattr(transport, "disconnected", False) and transport.connected:
            transport.abortConnection()
        if d is not None and not d.called:
            waits.append(d)
    return gatherResults(waits)


def leftoverTimers(mux):
    """
    Return the reactor's pending calls bound to C{mux} (a multiplexer whose
    connection is gone must leave none behind).
    """
    return [call for call in reactor.getDelayedCalls()
            if getattr(call.func, "__self__", None) is mux]


class TCPPair:
    """
    A listening multiplexer factory on 127.0.0.1 and connections to it.
    """

    def __init__(self, testCase, framing, serverChildFactory,
                 serverSettings=None):
        self.testCase = testCase
        self.framing = framing
        self.serverFactory = _NotifyingMultiplexerFactory(
            serverChildFactory, framing=framing, role="server",
            **(serverSettings or {}))
        self.port = reactor.listenTCP(0, self.serverFactory, interface="127.0.0.1")
        self.clients = []
        testCase.addCleanup(self.cleanup)

    @property
    def portNumber(self):
        return self.port.getHost().port

    def connect(self, clientChildFactory=None, clientSettings=None, index=None):
        """
        Connect a client multiplexer; fire with C{(server, client)}.
        """
        factory = MultiplexerFactory(
            clientChildFactory, framing=self.framing, role="client",
            **(clientSettings or {}))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.portNumber)
        serverIndex = len(self.clients) if index is None else index
        d = connectProtocol(endpoint, factory.buildProtocol(None))

        def connected(client):
            self.clients.append(client)
            return self.serverFactory.nextConnection(serverIndex).addCallback(
                lambda server: (server, client))

        return d.addCallback(connected)

    def cleanup(self):
        muxes = self.clients + self.serverFactory.connected
        d = closeConnections(*muxes)
        d.addCallback(lambda _: self.port.stopListening())
        return d


class RawClient(Protocol):
    """
    A plain TCP client: writes C{payload} once connected, never closes.
    """

    def __init__(self, payload):
        self.payload = payload
        self.closed = Deferred()
        self.received = 0

    def connectionMade(self):
        self.transport.write(self.payload)

    def dataReceived(self, data):
        self.received += len(data)

    def connectionLost(self, reason):
        self.reason = reason
        self.closed.callback(self)


def setSocketBuffers(transport, send=None, receive=None):
    """
    Shrink a TCP transport's kernel buffers so back-pressure shows quickly.
    """
    handle = transport.getHandle()
    if send is not None:
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send)
    if receive is not None:
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive)


def memoryPair(framing, clock, serverChildFactory=None, clientChildFactory=None,
               serverSettings=None, clientSettings=None):
    """
    Connect a server and a client multiplexer in memory, timers on
    C{clock}; return C{(server, client, pump)}.
    """
    server = MultiplexerFactory(
        serverChildFactory, framing=framing, role="server", reactor=clock,
        **(serverSettings or {})).buildProtocol(None)
    client = MultiplexerFactory(
        clientChildFactory, framing=framing, role="client", reactor=clock,
        **(clientSettings or {})).buildProtocol(None)
    pump = iosim.connect(
        server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client),
        clock=clock)
    return server, client, pump
