"""
The server's CPU per completed handshake, in one process: a real
L{XTMPServer} and XTMP clients over iosim transports, each on a fake clock
of its own.  Each session does what the C{handshake} scenario's do: the
handshake, one echo request, a Disconnect, the close.  Only the server's
side is timed: building the session, its reads (the handshake steps run
from its scheduler), its close; the clients run between, untimed.

  python -m bench.xtmpserver.handshakecost --handshakes 200

prints the server's thread CPU per handshake (the minimum over
C{--repeat} runs) and the sans-IO handshake alone, as the scenario's
baseline.  Under callgrind, C{--marks} brackets each server phase with
C{os.getpgrp()} (zero the counters) and C{os.getppid()} (dump them), as
C{roundcost} and C{relaycost} do:

  valgrind --tool=callgrind --zero-before=getpgrp --dump-before=getppid \\
      python -m bench.xtmpserver.handshakecost --marks --repeat 1 ...

Sockets are not in it: what it measures is the library's and the server's
Python and cryptography per connection, which the scenario's figure adds
the accept, the system calls and the kernel's TCP to.  C{--log-level}
sets muxframe's minimum log level (default C{info}, the role's), with the
role's text observer writing to the null device (C{--log-observer
twisted}: twisted.logger's, which writes the same lines).
"""

import argparse
import os
import sys

from bench.xtmpserver.phases import timePhase


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--handshakes", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--marks", action="store_true")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-observer", default="role",
                   choices=["role", "twisted"])
    p.add_argument("--profile", help="cProfile the server phases to this file")
    a = p.parse_args(argv)
    sys.path.insert(0, os.getcwd())

    from twisted.internet.address import IPv4Address
    from twisted.internet.error import ConnectionDone
    from twisted.internet.task import Clock
    from twisted.logger import LogLevel, globalLogBeginner
    from twisted.python.failure import Failure
    from twisted.test.iosim import FakeTransport

    from bench.xtmpserver.serverproc import textObserver
    from muxframe.logthrottle import setMinimumLevel
    from muxframe.server.collector import applyServerCollector
    from muxframe.xtmp import XTMPClientFactory
    from tests.test_server_support import (
        ALICE, Harness, SERVER_IDENTITY, config,
    )

    setMinimumLevel(LogLevel.levelWithName(a.log_level))
    globalLogBeginner.beginLoggingTo(
        [textObserver(a.log_observer)(open(os.devnull, "w"))],
        redirectStandardIO=False)
    h = Harness(config(server__max_connections_per_client=0,
                       server__handshake_rate=0,
                       server__max_handshakes=100000,
                       limits__messages_per_second=0,
                       limits__bytes_per_second=0))
    h.server.router.route(0x20, lambda session, message: message.payload)
    clientClock = Clock()
    factory = XTMPClientFactory(serverKey=SERVER_IDENTITY.public,
                                identity=ALICE, reactor=clientClock,
                                resume=False)
    applyServerCollector()

    profiler = None
    if a.profile:
        import cProfile
        profiler = cProfile.Profile()

    def server(f):
        return timePhase(f, a.marks, profiler)

    def serverReads(transport, data):
        # The server's read, then the handshake steps it queued.
        transport.bufferReceived(data)
        h.clock.advance(0)

    def one(n):
        used = 0
        address = IPv4Address("TCP", "10.%d.%d.%d" % (
            n >> 16 & 255, n >> 8 & 255, n & 255), 40000 + n % 20000)
        box = {}

        def build():
            s = box["s"] = h.server.buildProtocol(address)
            box["st"] = FakeTransport(s, True, peerAddress=address)
            s.makeConnection(box["st"])

        used += server(build)
        s, st = box["s"], box["st"]
        c = factory.buildProtocol(None)
        ct = FakeTransport(c, False)
        c.makeConnection(ct)
        answered = []
        requested = closing = False
        for _ in range(20):
            data = ct.getOutBuffer()
            if data:
                used += server(lambda: serverReads(st, data))
            data = st.getOutBuffer()
            if data:
                ct.bufferReceived(data)
            if c.result is not None and not requested:
                requested = True
                c.request(0x20, b"", timeout=60).addCallback(answered.append)
            elif answered and not closing:
                closing = True
                c.disconnect()
            elif closing and not data and not ct.stream:
                break
        if not answered:
            raise SystemExit("handshake %d: no answer" % (n,))
        used += server(lambda: s.connectionLost(Failure(ConnectionDone())))
        c.connectionLost(Failure(ConnectionDone()))
        return used

    completed0 = h.server.stats()["handshakes"]["completed"]
    best = None
    for repeat in range(a.repeat + 1):
        used = sum(one(repeat * a.handshakes + n)
                   for n in range(a.handshakes))
        if repeat:
            perHandshake = used / 1e3 / a.handshakes
            best = perHandshake if best is None else min(best, perHandshake)
    completed = h.server.stats()["handshakes"]["completed"] - completed0
    if completed != (a.repeat + 1) * a.handshakes:
        raise SystemExit("the server completed %d of %d handshakes"
                         % (completed, (a.repeat + 1) * a.handshakes))
    if len(h.server.registry):
        raise SystemExit("%d sessions left" % (len(h.server.registry),))
    from bench.xtmpserver.run import handshakeFloor
    floor = handshakeFloor(100)
    print("handshakes %d a run, %d runs, log level %s"
          % (a.handshakes, a.repeat, a.log_level))
    print("server thread CPU per completed handshake (us, min of runs): "
          "%.1f; the sans-IO handshake alone: %.1f"
          % (best or 0.0, floor * 1e6))
    if profiler is not None:
        profiler.dump_stats(a.profile)


if __name__ == "__main__":
    main()
