"""
window (MIO receive-window auto-tuning over time): one stream sends bulk
data client to server without end.  A second connection samples, every
C{interval} seconds, the receive window the server has for that stream
(its initial window plus what auto-tuning granted) with a 64-byte round
trip.  After C{solo} seconds a second stream on the bulk connection starts
64-byte round trips for C{shared} seconds (a grown window shrinks back
while streams share the connection); then the bulk stream runs alone again
for C{solo} seconds.  Figures: the window at the end of each phase, how
long it took to reach its largest, and the series (ms, window bytes, bytes
received).  Needs a fresh server process per run (its first stream is the
bulk stream).
"""

import struct

from twisted.internet.protocol import Factory, Protocol

from bench.common import PING_SIZE, now, setNoDelay
from bench.scenarios import closeMux, connectMux, sleep
from bench.scenarios.latency import Pinger
from bench.scenarios.loaded import BulkStream

SERVER_ROLE = "window"

KiB = 1024
_two = struct.Struct(">QQ")


class Sampler(Protocol):
    """
    Ask for the bulk stream's window every C{interval} seconds.
    """

    def __init__(self, reactor, interval, started):
        self.reactor = reactor
        self.interval = interval
        self.started = started
        self.series = []
        self.buffer = b""
        self.call = None

    def connectionMade(self):
        setNoDelay(self.transport)
        self.ask()

    def ask(self):
        self.call = None
        self.transport.write(b"\x57" * PING_SIZE)

    def dataReceived(self, data):
        buffer = self.buffer + data
        while len(buffer) >= PING_SIZE:
            window, received = _two.unpack(buffer[:16])
            buffer = buffer[PING_SIZE:]
            self.series.append((round((now() - self.started) * 1000, 1), window, received))
            if self.call is None and self.interval is not None:
                self.call = self.reactor.callLater(self.interval, self.ask)
        self.buffer = buffer

    def stop(self):
        self.interval = None
        if self.call is not None and self.call.active():
            self.call.cancel()


async def run(reactor, ctx):
    if ctx.framing != "mio":
        raise RuntimeError("the window scenario is MIO's (BMP has no window)")
    interval = ctx.params.get("interval", 0.005)
    solo = ctx.params.get("solo", 0.3)
    shared = ctx.params.get("shared", 0.3)
    started = now()
    mux = await connectMux(reactor, ctx)
    bulk = BulkStream(ctx.params.get("chunk", 256 * 1024))
    await mux.openStream(Factory.forProtocol(lambda: bulk))
    probe = await connectMux(reactor, ctx)
    sampler = Sampler(reactor, interval, started)
    await probe.openStream(Factory.forProtocol(lambda: sampler))
    await sleep(reactor, solo)
    soloWindow = sampler.series[-1][1]
    pinger = Pinger(10 ** 9, 0)
    await mux.openStream(Factory.forProtocol(lambda: pinger))
    await sleep(reactor, shared)
    sharedWindow = sampler.series[-1][1]
    pinger.transport.loseConnection()
    await sleep(reactor, solo)
    againWindow = sampler.series[-1][1]
    sampler.stop()
    bulk.producer.stopProducing()
    await closeMux(probe)
    await closeMux(mux)
    series = sampler.series
    largest = max(window for _, window, _ in series)
    reached = next(t for t, window, _ in series if window == largest)
    return {
        "initialWindowKiB": series[0][1] / KiB,
        "soloWindowKiB": soloWindow / KiB,
        "sharedWindowKiB": sharedWindow / KiB,
        "againWindowKiB": againWindow / KiB,
        "largestWindowKiB": largest / KiB,
        "msToLargest": reached,
        "samples": len(series),
        "series": series[::max(1, len(series) // 200)],
    }
