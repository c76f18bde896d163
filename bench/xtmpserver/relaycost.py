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
import time


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--size", type=int, default=64, help="payload bytes")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--marks", choices=("server", "requester", "responder"))
    p.add_argument("--profile",
                   help="cProfile the server phases to this file")
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
    responder.subscribe("svc.echo", lambda m: responder.respond(
        m, m.payload), group="responders")
    h.flush()
    payload = b"r" * a.size
    answered = []

    profiler = None
    if a.profile:
        import cProfile
        profiler = cProfile.Profile()

    def timed(f, role):
        if role == "server" and profiler is not None:
            profiler.enable()
            f()
            profiler.disable()
            return 0
        if role == a.marks:
            os.getpgrp()
        t = time.thread_time_ns()
        f()
        t = time.thread_time_ns() - t
        if role == a.marks:
            os.getppid()
        return t

    def move(source, destination):
        data = source.getOutBuffer()
        if data:
            destination.bufferReceived(data)
        return bool(data)

    def requestAll():
        for _ in range(a.window):
            requester.request(MessageType.EventStream, payload,
                              subject="svc.echo", timeout=60).addCallback(
                answered.append)

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
        del answered[:]
        for _ in range(a.rounds):
            round(used)
        count = a.rounds * a.window
        if len(answered) != count:
            raise SystemExit("%d of %d requests answered"
                             % (len(answered), count))
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
