"""
scale: C{streams} (10,000) streams opened at once on one connection, each
echoing C{size} (4 KiB) distinct bytes; every echo verified.  Figures:
streams verified, lost and failed, and streams/s.  No baseline.
"""

from bench.common import now
from bench.scenarios import closeMux, connectMux, withTimeout
from bench.scenarios.echo import EchoCheckFactory, Tracker, payloadFor

SERVER_ROLE = "echo"


async def run(reactor, ctx):
    count = ctx.params["streams"]
    size = ctx.params["size"]
    timeout = ctx.params.get("timeout", 120)
    mux = await connectMux(reactor, ctx)
    tracker = Tracker(count)
    withTimeout(reactor, tracker.done, timeout, tracker.summary)
    peak = [0]

    def opened(child):
        n = mux.streamCount()
        if n > peak[0]:
            peak[0] = n
        return child

    started = now()
    for i in range(count):
        mux.openStream(EchoCheckFactory(payloadFor(i, size), tracker)).addCallbacks(
            opened, lambda f: tracker.finish(False, f))
    summary = await tracker.done
    elapsed = now() - started
    summary["seconds"] = elapsed
    summary["streams"] = count
    summary["peakOpenStreams"] = peak[0]
    summary["streamsPerSecond"] = count / elapsed
    summary["allVerified"] = summary["verified"] == count
    await closeMux(mux)
    return summary
