"""
churn: streams opened one after another on one connection, each echoing
C{size} (1 KiB) and closed (both sides half-close); C{concurrency} streams
are in progress at a time and a new one opens as soon as one finishes.
Figure: streams per second.  No baseline.
"""

from bench.common import now
from bench.scenarios import closeMux, connectMux, withTimeout
from bench.scenarios.echo import EchoCheckFactory, Tracker

SERVER_ROLE = "echo"


async def run(reactor, ctx):
    total = ctx.params["streams"]
    size = ctx.params["size"]
    concurrency = min(ctx.params.get("concurrency", 100), total)
    timeout = ctx.params.get("timeout", 120)
    mux = await connectMux(reactor, ctx)
    started = [0]
    factory = None

    def openOne():
        started[0] += 1
        mux.openStream(factory).addErrback(lambda f: tracker.finish(False, f))

    def onFinish():
        if started[0] < total and not tracker.done.called:
            openOne()

    tracker = Tracker(total, onFinish)
    factory = EchoCheckFactory(b"\x5a" * size, tracker)
    withTimeout(reactor, tracker.done, timeout, tracker.summary)
    begin = now()
    for _ in range(concurrency):
        openOne()
    summary = await tracker.done
    elapsed = now() - begin
    await closeMux(mux)
    if summary["verified"] != total:
        raise RuntimeError("not every stream verified: %r" % (summary,))
    summary.update(seconds=elapsed, streams=total, concurrency=concurrency,
                   streamsPerSecond=total / elapsed)
    return summary
