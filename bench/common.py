"""
Pieces shared by the benchmark's server and client processes: memory and
statistics helpers, the child protocols, producers, and the JSON-lines
reporting protocol between the processes and L{bench.run}.
"""

import json
import os
import struct
import sys
import time

from zope.interface import implementer

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol

KiB = 1024
MiB = 1024 * 1024

PING_SIZE = 64
_count = struct.Struct(">Q")


def rss():
    """
    Return this process's resident set size in bytes (VmRSS of
    /proc/self/status).
    """
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def emit(kind, **fields):
    """
    Report one JSON line on stdout for L{bench.run}.
    """
    fields["event"] = kind
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def now():
    return time.perf_counter()


def percentile(values, fraction):
    """
    Return the C{fraction} percentile (nearest rank) of C{values}.
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = int(round(fraction * (len(ordered) - 1)))
    return ordered[rank]


def attackerPlacement(mode):
    """
    C{(defended, attacker)} CPU sets for a flood benchmark: with C{mode}
    C{"pin"} (and two CPUs or more) the attacker gets the last CPU and the
    defended processes (the server, the measuring client) the others, in
    the unloaded measurement too; else C{(None, None)}, no pinning.  An
    attacker on another machine does not take the server's CPU; on one
    machine, its own CPU stands in for that.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if mode != "pin" or len(cpus) < 2:
        return None, None
    return set(cpus[:-1]), {cpus[-1]}


def setNoDelay(transport):
    """
    Turn Nagle off on a TCP transport (every benchmark connection, baseline
    and muxframe alike, runs with TCP_NODELAY).
    """
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is not None:
        try:
            setter(True)
        except OSError:
            pass


# -- server-side child protocols ------------------------------------------


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Echo every byte; end the stream when the peer ends its side.
    """

    def connectionMade(self):
        setNoDelay(self.transport)

    def dataReceived(self, data):
        self.transport.write(data)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


class SinkStats:
    """
    Bytes received by the sinks of one server process.
    """

    def __init__(self):
        self.received = 0


@implementer(IHalfCloseableProtocol)
class Sink(Protocol):
    """
    Count bytes; when the peer ends its side, answer the count (8 bytes,
    big-endian) and close.
    """

    def __init__(self, stats=None):
        self.count = 0
        self.stats = stats

    def connectionMade(self):
        setNoDelay(self.transport)

    def dataReceived(self, data):
        self.count += len(data)
        if self.stats is not None:
            self.stats.received += len(data)

    def readConnectionLost(self):
        self.transport.write(_count.pack(self.count))
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


@implementer(IHalfCloseableProtocol)
class CountingEcho(Protocol):
    """
    Answer each 64-byte request with 64 bytes that start with the byte count
    the server's sinks have received so far (latency under load).
    """

    def __init__(self, stats):
        self.stats = stats
        self.buffer = b""

    def dataReceived(self, data):
        buffer = self.buffer + data
        while len(buffer) >= PING_SIZE:
            buffer = buffer[PING_SIZE:]
            self.transport.write(
                _count.pack(self.stats.received) + b"\0" * (PING_SIZE - 8))
        self.buffer = buffer

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


@implementer(IHalfCloseableProtocol)
class WindowEcho(Protocol):
    """
    Answer each 64-byte request with 64 bytes: the receive window of the
    server's bulk stream (MIO auto-tuning, as the receiver has it) and the
    bytes it has received (the window scenario).
    """

    def __init__(self, factory):
        self.roles = factory
        self.buffer = b""

    def dataReceived(self, data):
        buffer = self.buffer + data
        while len(buffer) >= PING_SIZE:
            buffer = buffer[PING_SIZE:]
            mux, sink = self.roles.bulk
            window = None
            if mux is not None and sink.transport is not None:
                window = mux.engine.receiveWindow(sink.transport.streamId)
            self.transport.write(_count.pack(window or 0) + _count.pack(sink.count)
                                 + b"\0" * (PING_SIZE - 16))
        self.buffer = buffer

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


class Idle(Protocol):
    """
    The trivial child protocol of the idle-memory scenario.
    """


class Control(Protocol):
    """
    Line commands for the idle-memory scenario: C{rss} answers this
    process's RSS and stream count as a JSON line.
    """

    def __init__(self, server):
        self.server = server
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip() == b"rss":
                import gc
                gc.collect()
                mux = self.server.mux
                self.transport.write(json.dumps({
                    "rss": rss(),
                    "streams": mux.streamCount() if mux is not None else 0,
                }).encode() + b"\n")


class RoleFactory(Factory):
    """
    Build the server's child protocol of each stream by the server's role:
    C{echo}, C{sink}, C{loaded} (first stream a sink, the rest counting
    echoes), C{window} (the first stream of the process a sink, every other
    stream, on any connection, answers with that sink's receive window) or
    C{memory} (first stream the control, the rest idle).
    """

    def __init__(self, role):
        self.role = role
        self.stats = SinkStats()
        self.accepted = {}
        self.mux = None
        # Each connection's multiplexer by its peer's address (the window
        # role reads the bulk stream's connection).
        self.muxes = {}
        self.bulk = None

    def buildProtocol(self, addr):
        # Count streams per connection (the peer's address names it).
        connection = getattr(addr, "address", addr)
        first = connection not in self.accepted
        self.accepted[connection] = self.accepted.get(connection, 0) + 1
        role = self.role
        if role == "echo":
            protocol = Echo()
        elif role == "sink":
            protocol = Sink(self.stats)
        elif role == "loaded":
            protocol = Sink(self.stats) if first else CountingEcho(self.stats)
        elif role == "window":
            if self.bulk is None:
                protocol = Sink(self.stats)
                self.bulk = (self.muxes.get(connection), protocol)
            else:
                protocol = WindowEcho(self)
        elif role == "memory":
            protocol = Control(self) if first else Idle()
        else:
            raise ValueError("unknown role %r" % (role,))
        protocol.factory = self
        return protocol


# -- client-side producer -------------------------------------------------


@implementer(IPushProducer)
class ChunkProducer:
    """
    Write C{total} bytes (C{None}: until stopped) in C{chunk}-sized writes
    of one reused buffer to a transport, as fast as it lets us.
    """

    def __init__(self, transport, chunk, total=None, onDone=None):
        self.transport = transport
        self.data = b"\xa5" * chunk
        self.remaining = total
        self.sent = 0
        self.paused = False
        self.stopped = False
        self.onDone = onDone
        self._looping = False

    def start(self):
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        if self._looping or self.stopped:
            return
        self._looping = True
        try:
            data = self.data
            size = len(data)
            write = self.transport.write
            while not self.paused and not self.stopped:
                if self.remaining is not None:
                    if self.remaining <= 0:
                        self._finish()
                        return
                    if self.remaining < size:
                        data = data[:self.remaining]
                        size = len(data)
                    self.remaining -= size
                self.sent += size
                write(data)
        finally:
            self._looping = False

    def _finish(self):
        self.stopped = True
        self.transport.unregisterProducer()
        if self.onDone is not None:
            self.onDone()

    def stopProducing(self):
        self.stopped = True
