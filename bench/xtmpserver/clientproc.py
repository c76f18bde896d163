"""
The benchmark's client processes, one mode each:

  sessions N [--subject S]   hold N XTMP sessions (subscribed to S);
                             commands: count (stream messages received), close
  plain N                    hold N baseline TCP connections (each sending
                             a heartbeat-sized frame per --heartbeat, echoed,
                             unless --subject); command: count
  handshakes N               N sessions opened, handshaken (an echo request
                             answered) and closed
  responder S                one session serving subject S (queue group);
                             command: cpu (its CPU seconds so far)
  requester (S | --echo)     pipelined requests, to subject S or the
                             server's echo handler; command: run count window
  latency                    sequential echo requests; command: run count
  flood                      raw TCP connections each sending a real
                             ClientHello; command: stop (reports outcomes)

Each prints JSON lines (C{ready}, results) for L{bench.xtmpserver.run}.
"""

import argparse
import struct
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import (
    Deferred, DeferredSemaphore, gatherResults, inlineCallbacks,
)
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from bench.common import percentile
from bench.xtmpserver.common import (
    CLIENT, ECHO, SERVER, emit, listenToStdin, takeFrames,
)
from muxframe.xtmp import (
    ClientHandshake, XTMPClientFactory, XTMPProtocol, connectXTMP,
)
from muxframe.xtmp import codec
from muxframe.xtmp.codec import Decoder, MessageType

_LENGTH = struct.Struct(">I")


class NoDelayProtocol(XTMPProtocol):
    """
    A client session with TCP_NODELAY, as the server sets it.
    """

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        XTMPProtocol.connectionMade(self)


class Client:
    def __init__(self, args):
        self.args = args
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", args.port,
                                           timeout=60)
        self.sessions = []
        self.received = 0
        self.failed = 0

    def factory(self):
        factory = XTMPClientFactory(serverKey=SERVER.public, identity=CLIENT,
                                    resume=False,
                                    heartbeatInterval=self.args.heartbeat,
                                    maxQueuedBytes=64 << 20)
        factory.protocol = NoDelayProtocol
        return factory

    def onMessage(self, message):
        self.received += 1

    @inlineCallbacks
    def openSessions(self, count, subject=None):
        semaphore = DeferredSemaphore(self.args.window)

        @inlineCallbacks
        def one():
            try:
                protocol = yield connectXTMP(self.endpoint, self.factory())
                if subject:
                    yield protocol.subscribe(subject, self.onMessage)
            except Exception:
                self.failed += 1
            else:
                self.sessions.append(protocol)

        yield gatherResults([semaphore.run(one) for _ in range(count)])

    # -- commands ----------------------------------------------------------

    def cmd_cpu(self):
        emit("cpu", cpu=time.process_time())

    def cmd_count(self):
        emit("count", received=self.received, sessions=len(self.sessions))

    def cmd_close(self):
        closed = []
        for protocol in self.sessions:
            closed.append(protocol.whenClosed())
            protocol.disconnect()
        gatherResults(closed).addBoth(lambda _: emit("closed"))
        self.sessions = []

    def cmd_stop(self):
        reactor.stop()

    def cmd_run(self, count, window=1, subject=None):
        """
        C{count} requests, C{window} in flight: each answer sends the next
        from its callback, so the figure is the library's cost per request
        and not a scheduler's (no semaphore, no Deferred list).
        """
        protocol = self.sessions[0]
        latencies = []
        clock = time.perf_counter
        payload = b"r" * self.args.size
        if subject:
            args, kwargs = (MessageType.EventStream, payload), {
                "subject": subject, "timeout": 60}
        else:
            args, kwargs = (ECHO, payload), {"timeout": 60}
        state = {"sent": 0, "answered": 0}
        finished = Deferred()

        def send():
            state["sent"] += 1
            protocol.request(*args, **kwargs).addCallbacks(
                answered, failed, callbackArgs=(clock(),))

        def answered(response, started):
            latencies.append(clock() - started)
            state["answered"] += 1
            if state["sent"] < count:
                send()
            elif state["answered"] == count:
                finished.callback(None)

        def failed(reason):
            if not finished.called:
                finished.errback(reason)

        def report(_):
            wall = clock() - start
            emit("ran", count=count, wall=wall, rate=count / wall,
                 cpu=time.process_time() - cpu,
                 p50=percentile(latencies, 0.5),
                 p99=percentile(latencies, 0.99))

        finished.addCallback(report)
        cpu, start = time.process_time(), clock()
        for _ in range(min(window, count)):
            send()
        return finished


class PlainClient(Protocol):
    """
    A baseline connection: counts frames; with C{interval}, sends a
    24-byte frame (a heartbeat's size) every C{interval} seconds, which
    the server echoes, so the server sends and receives one frame per
    interval, as it does for an XTMP session's heartbeats.
    """

    def __init__(self, owner, interval=None):
        self.owner = owner
        self.interval = interval
        self.buffer = b""

    def connectionMade(self):
        if self.interval:
            self.call = reactor.callLater(self.interval, self.beat)

    def beat(self):
        self.transport.write(_LENGTH.pack(24) + b"h" * 24)
        self.call = reactor.callLater(self.interval, self.beat)

    def connectionLost(self, reason):
        call = getattr(self, "call", None)
        if call is not None and call.active():
            call.cancel()

    def dataReceived(self, data):
        frames, self.buffer = takeFrames(self.buffer + data)
        self.owner.received += len(frames)


class HelloFlood(Protocol):
    """
    One flood connection: sends a real ClientHello (a fresh one for each
    connection: the server refuses a replayed hello before any public-key
    work, so only fresh ones cost it a handshake) and records the server's
    first answer (C{"ack"}, or an Error's code); C{done} fires
    with it when the connection ends.
    """

    def __init__(self, hello):
        self.hello = hello
        self.decoder = Decoder()
        self.done = Deferred()
        self.outcome = "closed"

    def connectionMade(self):
        self.transport.write(self.hello)

    def dataReceived(self, data):
        for frame in self.decoder.feed(data):
            if frame.type == MessageType.HandshakeAck:
                self.outcome = "ack"
            elif frame.type == MessageType.Error:
                self.outcome = codec.decodeReason(frame.payload)[0]
            self.transport.abortConnection()
            return

    def connectionLost(self, reason):
        self.done.callback(self.outcome)


class Flood:
    """
    The flooding connections: C{pool} fresh ClientHellos are made before
    the flood starts (a hello's key generation is about 0.1 ms, half of
    what a flood connection otherwise costs the attacker), then one more
    for each connection past them.
    """

    def __init__(self, client, pool=0):
        self.client = client
        self.running = True
        self.outcomes = {}
        self.pool = [self.hello() for _ in range(pool)]

    @staticmethod
    def hello():
        return ClientHandshake(serverKey=SERVER.public, identity=CLIENT).start()

    def record(self, outcome):
        key = str(outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    @inlineCallbacks
    def loop(self):
        self.started = time.monotonic()
        while self.running:
            p = HelloFlood(self.pool.pop() if self.pool else self.hello())
            try:
                yield connectProtocol(self.client.endpoint, p)
            except Exception:
                self.record("connect-failed")
                continue
            self.record((yield p.done))

    def cmd_stop(self):
        self.running = False
        seconds = time.monotonic() - self.started
        reactor.callLater(0.5, lambda: (emit("flooded", outcomes=self.outcomes,
                                             seconds=seconds,
                                             poolLeft=len(self.pool)),
                                        reactor.stop()))


@inlineCallbacks
def start(args):
    client = Client(args)
    mode = args.mode
    if mode == "sessions":
        yield client.openSessions(args.count, args.subject)
        emit("ready", sessions=len(client.sessions), failed=client.failed)
        listenToStdin(client, reactor)
    elif mode == "plain":
        for _ in range(args.count):
            yield connectProtocol(client.endpoint, PlainClient(
                client, args.heartbeat if args.subject is None else None))
        emit("ready", sessions=args.count, failed=0)
        listenToStdin(client, reactor)
    elif mode == "handshakes":
        cpu, begin = time.process_time(), time.perf_counter()
        semaphore = DeferredSemaphore(args.window)

        @inlineCallbacks
        def one():
            try:
                protocol = yield connectXTMP(client.endpoint, client.factory())
                # connectXTMP fires once the client's authentication is
                # sent; a Disconnect right behind it often reached the
                # server with the connection's end, before the server had
                # verified it (the session closed during the handshake,
                # its signature never checked).  An answered request
                # proves the server completed the handshake.
                yield protocol.request(ECHO, b"", timeout=60)
                closed = protocol.whenClosed()
                protocol.disconnect()
                yield closed
            except Exception:
                client.failed += 1

        yield gatherResults([semaphore.run(one) for _ in range(args.count)])
        emit("handshaken", count=args.count, failed=client.failed,
             wall=time.perf_counter() - begin, cpu=time.process_time() - cpu)
        reactor.stop()
    elif mode == "responder":
        protocol = yield connectXTMP(client.endpoint, client.factory())
        yield protocol.subscribe(args.subject, lambda m: protocol.respond(
            m, m.payload), group="responders")
        client.sessions.append(protocol)
        emit("ready", sessions=1, failed=0)
        listenToStdin(client, reactor)
    elif mode in ("requester", "latency"):
        yield client.openSessions(1)
        emit("ready", sessions=1, failed=client.failed)
        listenToStdin(client, reactor)
    elif mode == "flood":
        flood = Flood(client, args.pool)
        for _ in range(args.window):
            flood.loop()
        emit("ready", sessions=0, failed=0)
        listenToStdin(flood, reactor)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["sessions", "plain", "handshakes",
                                         "responder", "requester", "latency",
                                         "flood"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--subject")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--pool", type=int, default=0,
                        help="flood: fresh ClientHellos made before it starts")
    parser.add_argument("--heartbeat", type=float, default=30.0)
    args = parser.parse_args()

    def failed(f):
        emit("error", error=f.getErrorMessage())
        reactor.stop()

    reactor.callWhenRunning(lambda: start(args).addErrback(failed))
    reactor.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
