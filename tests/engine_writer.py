"""
A writer process for the crash test: appends messages to an embedded
engine on the directory given, as fast as acknowledgements allow (up to
C{--inflight} in flight), and prints "ack QUEUE ID OFFSET" on stdout for
every acknowledgement, flushed at once, so whoever kills it knows exactly
what was acknowledged.  Runs until killed (or --count messages).

    python -m tests.engine_writer DIR [--queues N] [--inflight N] [--count N]
    python -m tests.engine_writer --redis ADDRESS [...]
"""

import argparse
import sys

from twisted.internet import defer, task

from muxframe.engines.embedded import EmbeddedEngine
from muxframe.engines.model import Address, QueueMessage


def main(reactor, argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", nargs="?")
    parser.add_argument("--redis", help="use the Redis engine on this address")
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=200)
    parser.add_argument("--count", type=int, default=10 ** 9)
    parser.add_argument("--segment-bytes", type=int, default=256 * 1024)
    parser.add_argument("--start", type=int, default=0)
    options = parser.parse_args(argv)
    if options.redis:
        from muxframe.engines.redisengine import RedisEngine
        engine = RedisEngine(options.redis, retentionInterval=0)
    else:
        engine = EmbeddedEngine(options.directory, segmentBytes=options.segment_bytes,
                                retentionInterval=0)
    done = defer.Deferred()
    out = sys.stdout

    def started(_):
        out.write("ready\n")
        out.flush()
        state = {"next": options.start, "inflight": 0, "pumping": False}

        def acked(appended, queue, messageId):
            state["inflight"] -= 1
            out.write("ack %s %s %d\n" % (queue, messageId, appended.offset))
            out.flush()
            pump()

        def pump():
            # Duplicates are acknowledged synchronously: no recursion.
            if state["pumping"]:
                return
            state["pumping"] = True
            while state["inflight"] < options.inflight and state["next"] < options.count:
                i = state["next"]
                state["next"] += 1
                queue = "q%d" % (i % options.queues,)
                messageId = "m%08d" % (i,)
                state["inflight"] += 1
                payload = (b"%s:%s:" % (queue.encode(), messageId.encode())).ljust(200, b"x")
                d = engine.queues.append(queue, QueueMessage(messageId, payload,
                                                             Address("writer", "w1")))
                d.addCallback(acked, queue, messageId)
                d.addErrback(lambda f: (out.write("error %s\n" % (f.getErrorMessage(),)),
                                        out.flush()))
            state["pumping"] = False
            if state["next"] >= options.count and state["inflight"] == 0:
                engine.stop().chainDeferred(done)
        pump()
    engine.start().addCallbacks(started, done.errback)
    return done


if __name__ == "__main__":
    task.react(main, (sys.argv[1:],))
