"""
bulk: one stream carries C{size} bytes one way (client to server) in
C{chunk}-byte writes from a streaming producer; the server counts them and
answers the count when the stream ends.  Figure: MB/s (10^6 bytes/s).
Baseline: the same over a raw Twisted TCP connection.
"""

import struct

from zope.interface import implementer

from twisted.internet.defer import Deferred
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
    sender = BulkSender(total, chunk)
    if ctx.kind == "raw":
        await connectRaw(reactor, ctx, sender)
        count, elapsed = await sender.done
        sender.transport.loseConnection()
        mux = None
    else:
        mux = await connectMux(reactor, ctx)
        await mux.openStream(Factory.forProtocol(lambda: sender))
        count, elapsed = await sender.done
        await closeMux(mux)
    if count != total:
        raise RuntimeError("server received %d bytes of %d" % (count, total))
    result = {"MBps": total / elapsed / 1e6, "seconds": elapsed, "bytes": total}
    if mux is not None:
        c = mux.counters
        result["framesSent"] = c.framesSent
        result["creditStalls"] = c.creditStalls
    return result
