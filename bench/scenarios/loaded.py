"""
loaded (latency under load): one stream sends bulk data client to server
without end while a second stream on the same connection makes C{count}
sequential 64-byte round trips; the answers carry the server's bulk byte
count, which gives the bulk stream's MB/s over the same interval.  Figures:
p50/p99 µs and bulk MB/s.  Baseline: the latency and bulk figures of the
same framing measured alone in this run.
"""

from twisted.internet.protocol import Factory, Protocol

from bench.common import ChunkProducer
from bench.scenarios import closeMux, connectMux, sleep
from bench.scenarios.latency import Pinger, summarize

SERVER_ROLE = "loaded"


class BulkStream(Protocol):
    def __init__(self, chunk):
        self.chunk = chunk
        self.producer = None

    def connectionMade(self):
        self.producer = ChunkProducer(self.transport, self.chunk, None)
        self.producer.start()


async def run(reactor, ctx):
    mux = await connectMux(reactor, ctx)
    bulk = BulkStream(ctx.params.get("chunk", 256 * 1024))
    await mux.openStream(Factory.forProtocol(lambda: bulk))
    await sleep(reactor, ctx.params.get("rampup", 0.3))
    pinger = Pinger(ctx.params["count"], ctx.params.get("warmup", 20), carriesCount=True)
    await mux.openStream(Factory.forProtocol(lambda: pinger))
    await pinger.done
    bulk.producer.stopProducing()
    await closeMux(mux)
    result = summarize(pinger.samples)
    (t0, c0), (t1, c1) = pinger.marks[0], pinger.marks[-1]
    result["bulkMBps"] = (c1 - c0) / ((t1 - t0) / 1e9) / 1e6
    result["seconds"] = (t1 - t0) / 1e9
    return result
