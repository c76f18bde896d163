"""
bulk: one stream (or C{streams} concurrent streams on one connection)
carries C{size} bytes in all one way (client to server) in C{chunk}-byte
writes from a streaming producer per stream; the server counts them and
answers each stream's count when it ends.  Figure: MB/s (10^6 bytes/s) of
all streams together, until the last answer.  Baseline: the same over raw
Twisted TCP, one connection per stream.
"""

import struct

from zope.interface import implementer

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol

from bench.common import ChunkProducer, now, setNoDelay
from bench.scenarios import closeMux, connectMux, connectRaw

SERVER_ROLE = "sink"


@implementer(IHalfCloseableProtocol)
class BulkSender(Protocol):
    def __init__(self, total, chunk):
        self.total = total
        self.chunk = chunk
        self.buffer = b""
        self.done = Deferred()
        self.started = None

    def connectionMade(self):
        setNoDelay(self.transport)
        self.started = now()
        ChunkProducer(self.transport, self.chunk, self.total,
                      onDone=self.transport.loseWriteConnection).start()

    def dataReceived(self, data):
        self.buffer += data
        if len(self.buffer) >= 8 and not self.done.called:
            elapsed = now() - self.started
            (count,) = struct.unpack(">Q", self.buffer[:8])
            self.done.callback((count, elapsed))

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.errback(reason)


async def run(reactor, ctx):
    total = ctx.params["size"]
    chunk = ctx.params.get("chunk", 256 * 1024)
    count = ctx.params.get("streams", 1)
    each = total // count
    senders = [BulkSender(each, chunk) for _ in range(count)]
    mux = None
    if ctx.kind == "raw":
        for sender in senders:
            await connectRaw(reactor, ctx, sender)
    else:
        mux = await connectMux(reactor, ctx)
        for sender in senders:
            await mux.openStream(Factory.forProtocol(lambda sender=sender: sender))
    results = await gatherResults([sender.done for sender in senders])
    # From the first stream's start to the last answer (one stream: the
    # same interval as before there were several).
    elapsed = (max(s.started + e for s, (_, e) in zip(senders, results))
               - min(s.started for s in senders))
    if mux is not None:
        c = mux.counters
        figures = {"framesSent": c.framesSent, "creditStalls": c.creditStalls}
        await closeMux(mux)
    else:
        figures = {}
        for sender in senders:
            sender.transport.loseConnection()
    received = sum(count for count, _ in results)
    if received != each * count:
        raise RuntimeError("server received %d bytes of %d" % (received, each * count))
    result = {"MBps": received / elapsed / 1e6, "seconds": elapsed, "bytes": received,
              "streams": count}
    result.update(figures)
    return result
