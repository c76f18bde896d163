"""
C{bench}: load a running server from this process and measure it:
C{--connections} sessions send requests of C{--type} to the server's
handler (or, with C{--subject}, to a subject another session serves, or,
with C{--mode publish}, messages each session receives back on its own
subscription) at C{--rate} messages per second in all (0: as fast as
C{--window} outstanding messages per session allow) for C{--duration}
seconds.  A live progress bar (tqdm) shows the rate and errors while it
runs; then it prints messages per second and latency percentiles.

Latency is the time from sending a message to its response (or its
delivery back), measured in this process.  The numbers describe this
machine, this server and this client together, and a Python client is
usually the bottleneck; bench/ holds the project's own benchmarks.
"""

import struct
import sys
import time

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks

from muxframe.cli.common import (
    UsageError, addConnectArguments, close, connect, emitJSON, numberType,
    parseType, positiveCount, positiveSeconds, runTwisted, say, serverClosed,
)

_STAMP = struct.Struct(">d")
#: Messages per second: 0 (as fast as the window allows) or more.
RATE = numberType(float, 0)


def addBench(subparsers):
    parser = subparsers.add_parser(
        "bench", help="measure message rate and latency against a server",
        description=__doc__.split("\n\n")[0].split("\n", 1)[1].strip())
    addConnectArguments(parser)
    parser.add_argument("--mode", choices=["request", "publish"],
                        default="request",
                        help="request (default: --type to its handler, or "
                             "--subject) or publish (a round trip through a "
                             "subscription)")
    parser.add_argument("--type", "-t", default="EventStream",
                        help="the message type (request mode: one with a "
                             "handler on the server)")
    parser.add_argument("--subject", "-s",
                        help="request mode: route requests to this subject, "
                             "served by one extra session of the bench")
    parser.add_argument("--duration", type=positiveSeconds, default=10.0,
                        help="seconds of load (default 10)")
    parser.add_argument("--rate", type=RATE, default=0.0,
                        help="messages per second in all (default 0: as fast "
                             "as --window allows)")
    parser.add_argument("--payload-size", type=int, default=64,
                        help="payload bytes (default 64; at least 8)")
    parser.add_argument("--connections", type=positiveCount, default=1,
                        help="sessions (default 1)")
    parser.add_argument("--window", type=positiveCount, default=16,
                        help="outstanding messages per session at most "
                             "(default 16)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=lambda args: runTwisted(_bench, args))


def percentile(values, fraction):
    """
    The C{fraction} percentile of sorted C{values} (nearest rank).
    """
    if not values:
        return None
    index = min(len(values) - 1, max(0, int(round(fraction * len(values) + 0.5)) - 1))
    return values[index]


class Load:
    """
    The load of one run: sends paced to the rate, outstanding messages
    bounded by the window, latencies and errors recorded.
    """

    def __init__(self, reactor, args, sessions, messageType, subject):
        self.reactor = reactor
        self.args = args
        self.sessions = sessions
        self.messageType = messageType
        self.subject = subject
        self.filler = b"\0" * (args.payload_size - _STAMP.size)
        self.latencies = []
        self.errors = {}
        self.sent = 0
        self.outstanding = [0] * len(sessions)
        self.started = None
        self.finished = Deferred()
        self._credit = 0.0
        self._last = None
        self._timer = None
        self._stopping = False

    def subjectOf(self, index):
        """
        Publish mode: session C{index}'s own subject.
        """
        return "%s.%d" % (self.subject, index)

    def payload(self):
        return _STAMP.pack(time.perf_counter()) + self.filler

    def start(self):
        self.started = self._last = time.perf_counter()
        self._tick()

    def stop(self):
        self._stopping = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._maybeFinished()

    def _tick(self):
        self._timer = None
        if self._stopping:
            return
        now = time.perf_counter()
        if self.args.rate:
            self._credit = min(self._credit + (now - self._last) * self.args.rate,
                               max(self.args.rate * 0.1, 1.0))
        self._last = now
        for index in range(len(self.sessions)):
            while self.outstanding[index] < self.args.window:
                if self.args.rate:
                    if self._credit < 1.0:
                        break
                    self._credit -= 1.0
                self._send(index)
        self._timer = self.reactor.callLater(0.005 if self.args.rate else 0.05,
                                             self._tick)

    def _send(self, index):
        session = self.sessions[index]
        self.outstanding[index] += 1
        self.sent += 1
        if self.args.mode == "publish":
            # Each session publishes to a subject only it subscribes to.
            session.publish(self.subjectOf(index), self.payload(),
                            self.messageType)
            return
        sentAt = time.perf_counter()
        d = session.request(self.messageType, self.payload(),
                            timeout=self.args.timeout, subject=self.subject)
        d.addCallbacks(self._answered, self._failed,
                       callbackArgs=(index, sentAt), errbackArgs=(index,))

    def _answered(self, message, index, sentAt):
        self.outstanding[index] -= 1
        self._record(sentAt)
        self._maybeFinished()

    def delivered(self, index, message):
        """
        Publish mode: a message came back on the session's subscription.
        """
        self.outstanding[index] -= 1
        (stamp,) = _STAMP.unpack_from(message.payload, 0)
        self._record(stamp)
        self._maybeFinished()

    def _record(self, stamp):
        now = time.perf_counter()
        if self.started <= stamp <= now:
            self.latencies.append(now - stamp)
        else:
            self.latencies.append(None)  # not a stamp of ours

    def _failed(self, failure, index):
        self.outstanding[index] -= 1
        error = failure.value
        code = getattr(error, "code", None)
        from muxframe.xtmp.errors import XTMPErrorCode
        key = XTMPErrorCode.describe(code) if code is not None \
            else type(error).__name__
        self.errors[key] = self.errors.get(key, 0) + 1
        self._maybeFinished()

    def _maybeFinished(self):
        if self._stopping and not any(self.outstanding) and \
                not self.finished.called:
            self.finished.callback(None)

    def completed(self):
        return len(self.latencies)


def _echoResponder(session):
    def answer(message):
        session.respond(message, message.payload)
    return answer


def _progress(args):
    if args.no_progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=round(args.duration, 1), unit="s", file=sys.stderr,
                desc="bench", dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total}s"
                           "{postfix}")


@inlineCallbacks
def _bench(reactor, args):
    if args.payload_size < _STAMP.size:
        raise UsageError("--payload-size must be at least %d" % (_STAMP.size,))
    if args.connections < 1 or args.window < 1 or args.duration <= 0:
        raise UsageError("--connections, --window and --duration must be "
                         "positive")
    messageType = parseType(args.type)
    subject = args.subject
    if args.mode == "publish" and subject is None:
        import os
        subject = "bench.%d" % (os.getpid(),)
    sessions = yield gatherResults([connect(reactor, args)
                                    for _ in range(args.connections)],
                                   consumeErrors=True)
    extra = []
    load = Load(reactor, args, sessions, messageType, subject)
    if args.mode == "publish":
        for index, session in enumerate(sessions):
            yield session.subscribe(load.subjectOf(index),
                                    lambda m, i=index: load.delivered(i, m))
    elif subject is not None:
        responder = yield connect(reactor, args)
        extra.append(responder)
        yield responder.subscribe(subject, _echoResponder(responder),
                                  group="muxframe-bench")
    # A session the server closes (even cleanly: GOING_AWAY, a drain or
    # an admin's disconnect) ends the run as a failure: the numbers would
    # describe less load than was asked for.
    lost, closing = [], []

    def ended(why, session):
        if not closing and not lost:
            lost.append(serverClosed(session, why))
            load.stop()

    for session in sessions + extra:
        session.whenClosed().addCallback(ended, session)
    bar = _progress(args)
    load.start()
    started = time.perf_counter()
    deadline = started + args.duration
    while True:
        now = time.perf_counter()
        if bar is not None:
            elapsed = now - started
            bar.n = round(min(elapsed, args.duration), 1)
            bar.set_postfix_str("%.0f msgs/s, %d errors" % (
                load.completed() / max(elapsed, 1e-9),
                sum(load.errors.values())))
        if now >= deadline or lost:
            break
        tick = Deferred()
        reactor.callLater(min(0.25, deadline - now), tick.callback, None)
        yield tick
    load.stop()
    elapsed = time.perf_counter() - started
    if lost:
        closing.append(True)
        if bar is not None:
            bar.close()
        for session in sessions + extra:
            yield close(session)
        raise lost[0]
    drain = Deferred()
    reactor.callLater(args.timeout, lambda: None if drain.called
                      else drain.callback(None))
    load.finished.addCallback(lambda _: None if drain.called
                              else drain.callback(None))
    yield drain
    if bar is not None:
        bar.n = round(args.duration, 1)
        bar.refresh()
        bar.close()
    closing.append(True)
    for session in sessions + extra:
        yield close(session)
    if lost:
        raise lost[0]
    latencies = sorted(v for v in load.latencies if v is not None)
    result = {
        "mode": args.mode, "connections": args.connections,
        "duration": round(elapsed, 3), "rate": args.rate,
        "payloadSize": args.payload_size, "sent": load.sent,
        "completed": load.completed(),
        "messagesPerSecond": round(load.completed() / elapsed, 1),
        "errors": load.errors,
        "latencyMs": {name: None if value is None else round(value * 1000, 3)
                      for name, value in (
                          ("p50", percentile(latencies, 0.50)),
                          ("p90", percentile(latencies, 0.90)),
                          ("p99", percentile(latencies, 0.99)),
                          ("max", latencies[-1] if latencies else None),
                          ("mean", sum(latencies) / len(latencies)
                           if latencies else None))},
    }
    if args.json:
        emitJSON(result)
    else:
        lat = result["latencyMs"]
        say("%d messages in %.1f s over %d sessions: %.1f msgs/s" % (
            result["completed"], elapsed, args.connections,
            result["messagesPerSecond"]))
        if latencies:
            say("latency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  mean %.3f"
                % (lat["p50"], lat["p90"], lat["p99"], lat["max"], lat["mean"]))
        if load.errors:
            say("errors: " + ", ".join("%s %d" % item
                                       for item in sorted(load.errors.items())))
    return 0 if result["completed"] else 1


__all__ = ["addBench", "percentile"]
