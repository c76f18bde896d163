"""
many: C{streams} concurrent streams on one connection, each echoing
C{size} bytes (written at once, then half-closed).  Figures: total MB/s
(payload bytes, counted once) and streams/s.  Baseline: Twisted's HTTP/2
server (twisted.web over TLS with ALPN h2) and an h2-library client: the same
number of POST requests with the same payload bytes, echoed, over one
connection.
"""

from bench.common import now
from bench.scenarios import closeMux, connectMux, withTimeout
from bench.scenarios.echo import EchoCheckFactory, Tracker, payloadFor

SERVER_ROLE = "echo"


async def run(reactor, ctx):
    count = ctx.params["streams"]
    size = ctx.params["size"]
    timeout = ctx.params.get("timeout", 120)
    payloads = [payloadFor(i, size) for i in range(count)]
    if ctx.kind == "h2":
        from bench.h2client import runRequests
        result = await runRequests(reactor, ctx, payloads, timeout)
    else:
        result = await runStreams(reactor, ctx, payloads, timeout)
    elapsed = result["seconds"]
    result["MBps"] = count * size / elapsed / 1e6
    result["streamsPerSecond"] = count / elapsed
    return result


async def runStreams(reactor, ctx, payloads, timeout):
    mux = await connectMux(reactor, ctx)
    tracker = Tracker(len(payloads))
    withTimeout(reactor, tracker.done, timeout, tracker.summary)
    started = now()
    for payload in payloads:
        mux.openStream(EchoCheckFactory(payload, tracker)).addErrback(
            lambda f: tracker.finish(False, f))
    summary = await tracker.done
    summary["seconds"] = now() - started
    summary["concurrency"] = len(payloads)
    await closeMux(mux)
    if summary["verified"] != len(payloads):
        raise RuntimeError("not every stream verified: %r" % (summary,))
    return summary
