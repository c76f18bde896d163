"""
The server's CPU per idle heartbeat round, in one process: real
L{XTMPServer} sessions and XTMP clients over iosim transports on a fake
clock (the test harness).  Only the server's side of each round is
counted: its slot timers (probes sealed and written) and its reads of the
answers; the clients' side runs between them, uncounted.

  python -m bench.xtmpserver.roundcost --sessions 2000 --rounds 2

prints the server's CPU (thread time) per round.  Under callgrind,
C{--marks} brackets each server phase with C{os.getpgrp()} (zero the
counters) and C{os.getppid()} (dump them):

  valgrind --tool=callgrind --zero-before=getpgrp --dump-before=getppid \\
      python -m bench.xtmpserver.roundcost --marks ...

and the sum of the dumps' instructions over the rounds is the server's.
"""

import argparse
import os
import sys

from bench.xtmpserver.phases import timePhase


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2,
                   help="heartbeat intervals to measure, after one warm-up")
    p.add_argument("--interval", type=float, default=30.0)
    p.add_argument("--cipher", choices=("aes", "chacha"), default="aes")
    p.add_argument("--marks", action="store_true")
    p.add_argument("--profile", help="cProfile the server phases to this file")
    a = p.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    from tests.test_server_support import ALICE, Harness, config
    from muxframe.xtmp.codec import Cipher
    cipher = {"aes": Cipher.AES_256_GCM,
              "chacha": Cipher.CHACHA20_POLY1305}[a.cipher]
    h = Harness(config(xtmp_protocol__heartbeat_interval=a.interval,
                       xtmp_protocol__session_timeout=1e9))
    slot = h.server.timers.resolution
    pairs = []
    spread = a.interval / a.sessions
    for n in range(a.sessions):
        h.clock.advance(spread)
        host = "10.%d.%d.%d" % (n >> 16 & 255, n >> 8 & 255, n & 255)
        pairs.append(h.connect(ALICE, host=host,
                               heartbeatInterval=a.interval,
                               ciphers=(cipher,),
                               sessionTimeout=1e9))
    h.flush()
    # The clients' timers on a clock of their own, advanced in their phase.
    from twisted.internet.task import Clock
    clientClock = Clock()
    clientClock.advance(h.clock.seconds())
    for client, _, _ in pairs:
        if client._timer is not None and client._timer.active():
            client._timer.cancel()
        client._reactor = clientClock
        client._schedule()
    ios = [(pump.serverIO, pump.clientIO) for pump in h.pumps]

    profiler = None
    if a.profile:
        import cProfile
        profiler = cProfile.Profile()

    def serverPhase(f):
        return timePhase(f, a.marks and measuring,
                         profiler if measuring else None)

    waiting = []

    def answers():
        # Client to server: the server reads the answers.
        for serverIO, data in waiting:
            serverIO.bufferReceived(data)
        del waiting[:]

    def step():
        # The server's slot timers: its probes sealed and written.
        used = serverPhase(lambda: h.clock.advance(slot))
        # The clients read them and answer (not counted).
        clientClock.advance(h.clock.seconds() - clientClock.seconds())
        for serverIO, clientIO in ios:
            data = serverIO.getOutBuffer()
            if data:
                clientIO.bufferReceived(data)
                answer = clientIO.getOutBuffer()
                if answer:
                    waiting.append((serverIO, answer))
        return used + serverPhase(answers)

    measuring = False
    steps = int(round(a.interval / slot))
    sent0 = sum(s.connection.counters.heartbeatsSent for _, s, _ in pairs)
    for _ in range(steps):
        step()
    sent1 = sum(s.connection.counters.heartbeatsSent for _, s, _ in pairs)
    used = 0
    measuring = True
    for _ in range(steps * a.rounds):
        used += step()
    sent2 = sum(s.connection.counters.heartbeatsSent for _, s, _ in pairs)
    rounds = sent2 - sent1
    answered = sum(s.connection.rtt is not None for _, s, _ in pairs)
    print("sessions %d warm-up rounds %d measured rounds %d (rtt on %d)"
          % (a.sessions, sent1 - sent0, rounds, answered))
    print("server thread CPU per round: %.2f us" % (used / 1e3 / rounds,))
    if profiler is not None:
        profiler.dump_stats(a.profile)


if __name__ == "__main__":
    main()
