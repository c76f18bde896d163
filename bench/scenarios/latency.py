"""
latency: C{count} sequential 64-byte request/response round trips on one
stream (after C{warmup} unrecorded ones).  Figures: p50 and p99 in µs.
Baseline: the same round trips over a raw Twisted TCP connection.
"""

import struct
import time

from zope.interface import implementer

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol

from bench.common import PING_SIZE, percentile, setNoDelay
from bench.scenarios import closeMux, connectMux, connectRaw

SERVER_ROLE = "echo"

_clock = time.perf_counter_ns


@implementer(IHalfCloseableProtocol)
class Pinger(Protocol):
    """
    Send 64 bytes, wait for 64 back, repeat; record each round trip (ns)
    and, under load, the server's sink count carried in the answer.
    """

    def __init__(self, count, warmup=0, carriesCount=False):
        self.count = count
        self.warmup = warmup
        self.carriesCount = carriesCount
        self.samples = []
        self.marks = []
        self.buffer = b""
        self.sent = 0
        self.request = b"\x42" * PING_SIZE
        self.done = Deferred()

    def connectionMade(self):
        setNoDelay(self.transport)
        self._send()

    def _send(self):
        self.sent += 1
        self.started = _clock()
        self.transport.write(self.request)

    def dataReceived(self, data):
        buffer = self.buffer + data
        if len(buffer) < PING_SIZE:
            self.buffer = buffer
            return
        end = _clock()
        answer, self.buffer = buffer[:PING_SIZE], buffer[PING_SIZE:]
        if self.sent > self.warmup:
            self.samples.append(end - self.started)
            if self.carriesCount:
                self.marks.append((end, struct.unpack(">Q", answer[:8])[0]))
        if self.sent < self.count + self.warmup:
            self._send()
        elif not self.done.called:
            self.done.callback(self)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.errback(reason)


def summarize(samples):
    us = [s / 1000.0 for s in samples]
    return {
        "p50us": percentile(us, 0.50),
        "p99us": percentile(us, 0.99),
        "maxus": max(us),
        "roundTrips": len(us),
    }


async def run(reactor, ctx):
    pinger = Pinger(ctx.params["count"], ctx.params.get("warmup", 100))
    if ctx.kind == "raw":
        await connectRaw(reactor, ctx, pinger)
        await pinger.done
        pinger.transport.loseConnection()
    else:
        mux = await connectMux(reactor, ctx)
        await mux.openStream(Factory.forProtocol(lambda: pinger))
        await pinger.done
        await closeMux(mux)
    return summarize(pinger.samples)
