"""
XTMP benchmarks, each beside a baseline measured in the same run:

  1. encrypted 64-byte messages per second over one loopback TCP
     connection (target >= 100,000/s), against Int32StringReceiver sending
     the same 64-byte strings;
  2. the sans-IO engine alone (seal + decode + open, no sockets);
  3. handshake CPU time per side (target <= 1 ms), against nothing (there
     is no baseline handshake; X25519 alone is printed for scale);
  4. memory per idle session, against an idle Int32StringReceiver pair.

Senders are paced by the backpressure API (a producer registered with the
session, or with the TCP transport for the baseline), never by sending
blindly into the queues.

Usage:  python bench/bench_xtmp.py [--quick] [--messages N] [--runs N]
        [--sessions N] [--handshakes N] [--max-queued-bytes N] [--json]
--quick is a short run (seconds) that shows everything works; recorded
figures come from the default counts on a quiet machine.  Exit status 1
and a message on stderr if a run fails.
Benchmarks live here, not in tests: no test asserts a timing.
"""

import argparse
import gc
import json
import os
from statistics import median
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))

from cryptography.hazmat.primitives.asymmetric import x25519  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402
from twisted.internet.endpoints import (  # noqa: E402
    TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol,
)
from twisted.internet.interfaces import IPushProducer  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402
from twisted.protocols.basic import Int32StringReceiver  # noqa: E402
from twisted.test.iosim import connect, makeFakeClient, makeFakeServer  # noqa
from zope.interface import implementer  # noqa: E402

from muxframe.xtmp import (  # noqa: E402
    Cipher, Identity, XTMPClientFactory, XTMPServerFactory, connectXTMP,
)
from muxframe.xtmp.codec import Decoder  # noqa: E402
from muxframe.xtmp.connection import Settings, XTMPConnection  # noqa: E402
from muxframe.xtmp.handshake import ClientHandshake, ServerHandshake  # noqa
from muxframe.xtmp.keys import TrafficKey, openFrame  # noqa: E402

PAYLOAD = b"x" * 64
BATCH = 2000
# Seconds a throughput run may take before it is reported as failed.
TIMEOUT = 300
QUICK = {"messages": 20000, "runs": 1, "sessions": 20, "handshakes": 20}
SERVER = Identity.generate()
CLIENT = Identity.generate()


# -- 1. throughput over loopback TCP ---------------------------------------

@implementer(IPushProducer)
class Pacer:
    """
    Sends C{n} messages as fast as the consumer's backpressure allows: it
    is registered with the consumer (L{XTMPProtocol.registerProducer},
    or a TCP transport for the baseline), stops the moment it is paused,
    and yields to the reactor between batches so the receiver runs.
    """

    def __init__(self, reactor, send, n):
        self.reactor = reactor
        self.send = send
        self.n = n
        self.sent = 0
        self.paused = self.stopped = False
        self.pauses = 0
        self._call = None

    def start(self):
        self._schedule()

    def _schedule(self):
        if self._call is None and not self.stopped and self.sent < self.n:
            self._call = self.reactor.callLater(0, self._batch)

    def _batch(self):
        self._call = None
        end = min(self.sent + BATCH, self.n)
        while self.sent < end and not self.paused and not self.stopped:
            self.send(PAYLOAD)
            self.sent += 1
        if not self.paused:
            self._schedule()

    def pauseProducing(self):
        if not self.paused:
            self.pauses += 1
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        self._schedule()

    def stopProducing(self):
        self.stopped = True
        if self._call is not None:
            self._call.cancel()
            self._call = None


@inlineCallbacks
def _runTCP(reactor, serverFactory, connect, n):
    """
    Listen on 127.0.0.1, connect, send C{n} messages paced by
    backpressure, and return the seconds from the first send to the n-th
    message received.  C{connect(endpoint)} fires with C{(send, consumer,
    close)}.
    """
    done = Deferred()
    state = {"count": 0}

    def received():
        state["count"] += 1
        if state["count"] == n:
            done.callback(time.perf_counter() - state["start"])

    serverFactory.onMessage = received
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        serverFactory)
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        send, consumer, close = yield connect(endpoint)
        pacer = Pacer(reactor, send, n)
        consumer.registerProducer(pacer, True)
        watchdog = reactor.callLater(TIMEOUT, done.errback, RuntimeError(
            "%d of %d messages received after %ds" % (
                state["count"], n, TIMEOUT)))
        state["start"] = time.perf_counter()
        pacer.start()
        try:
            elapsed = yield done
        finally:
            if watchdog.active():
                watchdog.cancel()
            pacer.stopProducing()
            consumer.unregisterProducer()
            yield close()
    finally:
        yield port.stopListening()
    return elapsed


class _BaselineServer(Int32StringReceiver):
    def stringReceived(self, data):
        self.factory.onMessage()


def baselineThroughput(reactor, n):
    """
    Int32StringReceiver, 64-byte strings, one loopback connection, paced
    by the TCP transport's producer API.
    """
    sf = Factory.forProtocol(_BaselineServer)
    sf.onMessage = None

    def connect(endpoint):
        closed = Deferred()

        class Client(Int32StringReceiver):
            def connectionLost(self, reason):
                closed.callback(None)

        def ready(proto):
            def close():
                proto.transport.loseConnection()
                return closed
            return proto.sendString, proto.transport, close

        return connectProtocol(endpoint, Client()).addCallback(ready)

    return _runTCP(reactor, sf, connect, n)


def xtmpThroughput(reactor, n, cipher=None, maxQueuedBytes=None):
    """
    Encrypted XTMP, 64-byte messages, one loopback connection, paced by
    L{XTMPProtocol.registerProducer}.
    """
    ciphers = (cipher,) if cipher else (Cipher.AES_256_GCM,)
    settings = {}
    if maxQueuedBytes:
        settings["maxQueuedBytes"] = maxQueuedBytes
    sf = XTMPServerFactory(SERVER, authorizedKeys=[CLIENT.public],
                           ciphers=ciphers, **settings)
    sf.setHandler(0x10, lambda p, m: sf.onMessage())
    cf = XTMPClientFactory(serverKey=SERVER.public, identity=CLIENT,
                           ciphers=ciphers, **settings)

    def connect(endpoint):
        def ready(proto):
            def close():
                closed = proto.whenClosed()
                proto.disconnect()
                return closed.addCallback(lambda _: None)
            return (lambda data: proto.send(0x10, data)), proto, close

        return connectXTMP(endpoint, cf).addCallback(ready)

    return _runTCP(reactor, sf, connect, n)


# -- 2. the engine alone ---------------------------------------------------

def engineThroughput(n):
    """
    Messages per second through seal, decode and open, no I/O.
    """
    send = TrafficKey(1, b"k" * 32, b"i" * 12)
    receive = TrafficKey(1, b"k" * 32, b"i" * 12)
    decoder = Decoder()
    start = time.perf_counter()
    done = 0
    while done < n:
        k = min(BATCH, n - done)
        wire = b"".join([send.seal(0x10, 1, 7, PAYLOAD) for _ in range(k)])
        for frame in decoder.feed(wire):
            openFrame(receive, frame, 7)
        done += k
    return n / (time.perf_counter() - start)


# -- 3. handshake CPU ------------------------------------------------------

def handshakeCPU(rounds):
    """
    Mean CPU seconds per handshake for each side (sans-IO, no sockets).
    """
    clientCPU = serverCPU = 0.0
    clock = time.process_time
    for _ in range(rounds):
        t0 = clock()
        c = XTMPConnection(ClientHandshake(serverKey=SERVER.public,
                                           identity=CLIENT), Settings())
        c.initiate()
        hello = c.dataToSend()
        t1 = clock()
        s = XTMPConnection(ServerHandshake(SERVER,
                                           authorizedKeys=[CLIENT.public]),
                           Settings())
        s.receiveData(hello)
        flight = s.dataToSend()
        t2 = clock()
        c.receiveData(flight)
        auth = c.dataToSend()
        t3 = clock()
        s.receiveData(auth)
        t4 = clock()
        assert s.state == c.state == "OPEN"
        clientCPU += (t1 - t0) + (t3 - t2)
        serverCPU += (t2 - t1) + (t4 - t3)
    t0 = clock()
    for _ in range(rounds):
        x25519.X25519PrivateKey.generate().exchange(
            x25519.X25519PrivateKey.generate().public_key())
    x = (clock() - t0) / rounds
    return clientCPU / rounds, serverCPU / rounds, x


# -- 4. memory per idle session --------------------------------------------

def _memory(makePair, n):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = [makePair() for _ in range(n)]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return (after - before) / n / 2  # per side


def memoryPerSession(n):
    """
    Bytes per idle session (one side), XTMP against Int32StringReceiver,
    both connected in memory.
    """
    from twisted.internet.task import Clock
    clock = Clock()
    sf = XTMPServerFactory(SERVER, authorizedKeys=[CLIENT.public],
                           reactor=clock)
    cf = XTMPClientFactory(serverKey=SERVER.public, identity=CLIENT,
                           reactor=clock)

    def xtmpPair():
        c, s = cf.buildProtocol(None), sf.buildProtocol(None)
        pump = connect(s, makeFakeServer(s), c, makeFakeClient(c),
                       clock=clock)
        assert c.connection.state == "OPEN"
        return c, s, pump

    def baselinePair():
        c, s = Int32StringReceiver(), Int32StringReceiver()
        return c, s, connect(s, makeFakeServer(s), c, makeFakeClient(c))

    return _memory(xtmpPair, n), _memory(baselinePair, n)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--quick", action="store_true",
                        help="a short run: %s" % (", ".join(
                            "%s=%d" % kv for kv in QUICK.items()),))
    parser.add_argument("--messages", type=int, default=None,
                        help="messages per throughput run (200000)")
    parser.add_argument("--sessions", type=int, default=None,
                        help="idle sessions for the memory figure (200)")
    parser.add_argument("--handshakes", type=int, default=None,
                        help="handshakes for the CPU figure (200)")
    parser.add_argument("--runs", type=int, default=None,
                        help="throughput runs per figure, median shown (3)")
    parser.add_argument("--max-queued-bytes", type=int, default=None,
                        help="XTMP maxQueuedBytes (default: the setting's "
                        "default, 8 MiB)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else {
        "messages": 200000, "runs": 3, "sessions": 200, "handshakes": 200}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    from twisted.internet import reactor
    results = {}
    failure = []

    @inlineCallbacks
    def tcp():
        times = {"baseline": [], "aes": [], "chacha": []}
        try:
            # Interleaved runs, median reported: the three see the same
            # machine load.
            for _ in range(args.runs):
                times["baseline"].append(
                    (yield baselineThroughput(reactor, args.messages)))
                times["aes"].append((yield xtmpThroughput(
                    reactor, args.messages,
                    maxQueuedBytes=args.max_queued_bytes)))
                times["chacha"].append((yield xtmpThroughput(
                    reactor, args.messages, Cipher.CHACHA20_POLY1305,
                    args.max_queued_bytes)))
            n = args.messages
            results["baseline_msgs_per_s"] = n / median(times["baseline"])
            results["xtmp_aesgcm_msgs_per_s"] = n / median(times["aes"])
            results["xtmp_chacha_msgs_per_s"] = n / median(times["chacha"])
        except Exception as e:
            failure.append(e)
        finally:
            reactor.stop()

    reactor.callWhenRunning(tcp)
    reactor.run()
    if failure:
        sys.stderr.write("bench_xtmp: throughput run failed: %s: %s\n"
                         % (type(failure[0]).__name__, failure[0]))
        return 1
    results["engine_msgs_per_s"] = engineThroughput(args.messages)
    client, server, x = handshakeCPU(args.handshakes)
    results["handshake_cpu_ms_client"] = client * 1e3
    results["handshake_cpu_ms_server"] = server * 1e3
    results["x25519_exchange_ms"] = x * 1e3
    xm, bm = memoryPerSession(args.sessions)
    results["idle_session_bytes_xtmp"] = xm
    results["idle_session_bytes_baseline"] = bm

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    r = results
    print("XTMP benchmark (%d messages of 64 bytes, median of %d runs; %d "
          "sessions; %d handshakes)" % (args.messages, args.runs,
                                        args.sessions, args.handshakes))
    print("%-44s %14s %14s %8s" % ("measure", "xtmp", "baseline", "ratio"))
    rows = [
        ("msgs/s, loopback TCP, AES-256-GCM (>=100k)",
         r["xtmp_aesgcm_msgs_per_s"], r["baseline_msgs_per_s"]),
        ("msgs/s, loopback TCP, ChaCha20-Poly1305",
         r["xtmp_chacha_msgs_per_s"], r["baseline_msgs_per_s"]),
        ("msgs/s, sans-IO engine only (seal+open)",
         r["engine_msgs_per_s"], r["baseline_msgs_per_s"]),
        ("handshake CPU ms, client (<=1)",
         r["handshake_cpu_ms_client"], r["x25519_exchange_ms"]),
        ("handshake CPU ms, server (<=1)",
         r["handshake_cpu_ms_server"], r["x25519_exchange_ms"]),
        ("bytes per idle session (one side)",
         r["idle_session_bytes_xtmp"], r["idle_session_bytes_baseline"]),
    ]
    for name, value, base in rows:
        print("%-44s %14.1f %14.1f %8.2f" % (name, value, base,
                                            value / base if base else 0))
    print("(baseline: Int32StringReceiver for throughput and memory; one "
          "X25519 exchange for handshake scale)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
