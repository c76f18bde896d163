"""
The CPU of one request routed between two clients, per process role, in
one process: a real L{XTMPServer}, a requester and a responder session
over iosim transports on a fake clock (the test harness).  Each round the
requester sends C{--window} requests for a subject the responder serves
(in a queue group, as the C{reqrep} scenario's does); the bytes are moved
by hand, so the server's reads (the requests, then the answers), the
responder's read and the requester's read are timed apart:

  python -m bench.xtmpserver.relaycost --rounds 300 --window 64

prints the thread CPU per request of each role (the minimum over
C{--repeat} runs: the machine's noise only adds).  Under callgrind,
C{--marks ROLE} brackets each phase of that role (server, requester or
responder) with C{os.getpgrp()} (zero the counters) and C{os.getppid()}
(dump them), as C{roundcost} does, so the sum of the dumps' instructions
is that role's:

  valgrind --tool=callgrind --zero-before=getpgrp --dump-before=getppid \\
      python -m bench.xtmpserver.relaycost --marks server --repeat 1 ...

The sockets' system calls are not in it (iosim transports; a session
over them writes through C{transport.write}, not the direct send), so it
measures the library's own cost per request, which is what the
C{reqrep} scenario's wall rate is bound by once the processes overlap.
"""

import argparse
import os
import sys

from bench.xtmpserver.phases import timePhase


class HeapClock:
    """
    An C{IReactorTime} keeping calls as the reactor does: a
    L{DelayedCall} pushed on a heap, cancelled in place.  Never advanced
    here: the requests are answered long before their timeouts.
    """

    def __init__(self, now):
        self.now = now
        self.calls = []
        self.cancellations = 0

    def seconds(self):
        return self.now

    def callLater(self, delay, f, *args, **kw):
        import heapq

        from twisted.internet.base import DelayedCall
        call = DelayedCall(self.now + delay, f, args, kw, self._cancelled,
                           lambda c: None, self.seconds)
        heapq.heappush(self.calls, call)
        return call

    def _cancelled(self, call):
        # As ReactorBase: count, and drop the cancelled ones now and then.
        self.cancellations += 1
        if self.cancellations > 50 and self.cancellations > len(self.calls) >> 1:
            import heapq
            self.cancellations = 0
            self.calls = [c for c in self.calls if not c.cancelled]
            heapq.heapify(self.calls)

    def getDelayedCalls(self):
        return [c for c in self.calls if not c.cancelled]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--size", type=int, default=64, help="payload bytes")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--python-gc", action="store_true",
                   help="keep Python's collector settings (default: the "
                   "server's, applyServerCollector, once set up)")
    p.add_argument("--marks", choices=("server", "requester", "responder"))
    p.add_argument("--profile",
                   help="cProfile one role's phases to this file")
    p.add_argument("--profile-role", default="server",
                   choices=("server", "requester", "responder"))
    a = p.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    from tests.test_server_support import ALICE, BOB, Harness, config
    from muxframe.xtmp.codec import MessageType

    h = Harness(config(xtmp_protocol__heartbeat_interval=1e6,
                       xtmp_protocol__session_timeout=1e9,
                       limits__messages_per_second=0,
                       limits__bytes_per_second=0))
    requester, _, reqPump = h.connect(ALICE, host="10.0.0.1",
                                      heartbeatInterval=1e6,
                                      sessionTimeout=1e9)
    responder, _, resPump = h.connect(BOB, host="10.0.0.2",
                                      heartbeatInterval=1e6,
                                      sessionTimeout=1e9)
    h.flush()
    # The clients' request timers on a heap, as a reactor keeps them (the
    # harness's Clock sorts its whole list at every callLater, which would
    # make the requester's figure the clock's).
    requester._reactor = HeapClock(h.clock.seconds())
    responder.subscribe("svc.echo", lambda m: responder.respond(
        m, m.payload), group="responders")
    h.flush()
    payload = b"r" * a.size
    if not a.python_gc:
        # As the xtmp role's process: one process plays all three roles
        # here, and the server's settings keep its collections from being
        # charged to whichever role allocates when one runs.
        from muxframe.server.collector import applyServerCollector
        applyServerCollector()
    # A count, not the answers: a list of them would grow what the
    # collector scans, run after run.
    answered = [0]

    def answer(message):
        answered[0] += 1

    profiler = None
    if a.profile:
        import cProfile
        profiler = cProfile.Profile()

    def timed(f, role):
        return timePhase(f, role == a.marks,
                         profiler if role == a.profile_role else None)

    def move(source, destination):
        data = source.getOutBuffer()
        if data:
            destination.bufferReceived(data)
        return bool(data)

    def requestAll():
        for _ in range(a.window):
            requester.request(MessageType.EventStream, payload,
                              subject="svc.echo", timeout=60).addCallback(answer)

    def round(used):
        used["requester"] += timed(requestAll, "requester")
        used["server"] += timed(lambda: move(reqPump.clientIO,
                                             reqPump.serverIO), "server")
        used["responder"] += timed(lambda: move(resPump.serverIO,
                                                resPump.clientIO),
                                   "responder")
        used["server"] += timed(lambda: move(resPump.clientIO,
                                             resPump.serverIO), "server")
        used["requester"] += timed(lambda: move(reqPump.serverIO,
                                                reqPump.clientIO),
                                   "requester")

    best = None
    for repeat in range(a.repeat + 1):
        used = {"server": 0, "requester": 0, "responder": 0}
        answered[0] = 0
        for _ in range(a.rounds):
            round(used)
        count = a.rounds * a.window
        if answered[0] != count:
            raise SystemExit("%d of %d requests answered"
                             % (answered[0], count))
        if repeat == 0:
            continue  # the warm-up
        perRequest = {k: v / 1e3 / count for k, v in used.items()}
        if best is None:
            best = perRequest
        else:
            best = {k: min(best[k], v) for k, v in perRequest.items()}
    print("requests %d a run (%d in flight), %d runs"
          % (a.rounds * a.window, a.window, a.repeat))
    print("thread CPU per routed request (us, min of runs): server %.2f, "
          "requester %.2f, responder %.2f, total %.2f"
          % (best["server"], best["requester"], best["responder"],
             sum(best.values())))
    if profiler is not None:
        profiler.dump_stats(a.profile)


if __name__ == "__main__":
    main()
