"""
The benchmark's server process.

  python -m bench.xtmpserver.serverproc xtmp|plain [--heartbeat S]
      [--limits on|off] [--profile FILE] [--python-gc]

C{xtmp}: an L{XTMPServer} on 127.0.0.1 (the bench client key authorized;
an echo handler for type 0x20; defences at their defaults with
C{--limits on}, else the per-address ones off so one machine can open
thousands of sessions; its listening port and collector set as the
xtmp role sets them, unless C{--python-gc}).  C{plain}: the baseline, a Twisted server of
length-prefixed frames that echoes each frame.  Prints
C{{"event": "listening", "port": N}}, then obeys commands on stdin:

  stats                         -> sessions, rss, cpu
  publish subject count size    -> deliver count messages of size bytes
                                   to every subscriber (plain: to every
                                   connection); reports when queued
  profile [path]                -> start a CPU-time cProfile; with path,
                                   stop and write it (diagnosis)
  trace [top per]               -> start tracemalloc; with top, report the
                                   top allocation sites / per (diagnosis)
  turns [report]                -> start timing reactor turns; with report,
                                   their distribution and the longest
                                   (diagnosis: bench/xtmpserver/turns.py)
  gcinfo                        -> what the collector tracks and would
                                   free now (diagnosis)
  heartbeats                    -> heartbeat probes sent and answered by
                                   the server, summed over its sessions,
                                   and how many sessions have an rtt
  stop

It logs as the role does, to the null device, or to the file named by
C{BENCH_SERVER_LOG} (to see what a scenario makes the server write), at
the level C{BENCH_LOG_LEVEL} names (default C{info}, the role's; C{warn}
shows what the per-session lines cost), through the role's text observer
(C{BENCH_LOG_OBSERVER=twisted}: twisted.logger's, which writes the same
lines for more CPU).
"""

import argparse
import os
import struct
import sys
import time

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from bench.xtmpserver.common import (
    CLIENT, ECHO, SERVER, emit, listenToStdin, rss, takeFrames,
)
from muxframe.acceptbatch import capAccepts
from muxframe.earlyrefusal import refuseEarly
from muxframe.server.collector import applyServerCollector
from muxframe.server.config import ServerConfig
from muxframe.server.factory import XTMPServer

_LENGTH = struct.Struct(">I")


class PlainConnection(Protocol):
    """
    The baseline: echo each length-prefixed frame.
    """

    def connectionMade(self):
        self.factory.connections.add(self)
        self.buffer = b""

    def dataReceived(self, data):
        frames, self.buffer = takeFrames(self.buffer + data)
        for frame in frames:
            self.transport.write(frame)

    def connectionLost(self, reason):
        self.factory.connections.discard(self)


class PlainFactory(Factory):
    protocol = PlainConnection

    def __init__(self):
        self.connections = set()


def echo(session, message):
    return message.payload


class Server:
    def __init__(self, mode, heartbeat, limits):
        self.mode = mode
        if mode == "plain":
            self.factory = PlainFactory()
            return
        data = {"xtmp_protocol": {"heartbeat_interval": heartbeat,
                                  "max_queued_bytes": 64 << 20},
                "broker": {"max_pending": 32 << 20,
                           "write_deadline": 60},
                "limits": {"messages_per_second": 0, "bytes_per_second": 0},
                "server": {"max_connections": 30000}}
        if not limits:
            data["server"].update(max_connections_per_client=0,
                                  handshake_rate=0, max_handshakes=100000)
        self.factory = XTMPServer(SERVER, ServerConfig.fromMapping(data),
                                  reactor, keys=[("bench", CLIENT.public)])
        self.factory.router.route(ECHO, echo)

    def sessions(self):
        if self.mode == "plain":
            return len(self.factory.connections)
        return len(self.factory.registry)

    def cmd_stats(self):
        stats = {}
        if self.mode == "xtmp":
            stats = self.factory.stats()
            stats = {"broker": stats["broker"], "refusals": stats["refusals"],
                     "handshaking": stats["handshaking"],
                     "handshakes": stats["handshakes"]}
        emit("stats", sessions=self.sessions(), rss=rss(),
             cpu=time.process_time(), **stats)

    def cmd_publish(self, subject, count, size):
        payload = b"p" * size
        start = time.process_time()
        queued = 0
        if self.mode == "plain":
            frame = _LENGTH.pack(size) + payload
            targets = list(self.factory.connections)
            for _ in range(count):
                for connection in targets:
                    connection.transport.write(frame)
                    queued += 1
        else:
            for _ in range(count):
                queued += self.factory.publish(subject, payload)
        emit("published", queued=queued, cpu=time.process_time() - start)

    def cmd_profile(self, path=None):
        """
        Start profiling, or (with C{path}) stop and write the profile.
        """
        import cProfile
        if path is None:
            self.profiler = cProfile.Profile(time.process_time)
            self.profiler.enable()
        else:
            self.profiler.disable()
            self.profiler.dump_stats(path)
        emit("profiled")

    def cmd_trace(self, top=0, per=1):
        """
        (diagnosis) Start tracing allocations; with C{top}, print the
        C{top} biggest allocation sites since the start, divided by C{per}.
        """
        import gc, tracemalloc
        if not top:
            tracemalloc.start(4)
            self.snapshot = tracemalloc.take_snapshot()
        else:
            gc.collect()
            snap = tracemalloc.take_snapshot()
            rows = snap.compare_to(self.snapshot, "lineno")[:top]
            emit("traced", rows=[[r.size_diff / per, r.count_diff / per,
                                  str(r.traceback[0])] for r in rows],
                 total=sum(r.size_diff for r in snap.compare_to(
                     self.snapshot, "filename")) / per)
            return
        emit("traced", rows=[], total=0)

    def cmd_turns(self, report=False):
        """
        (diagnosis) Start timing each reactor turn's work (the timed calls
        and the dispatch of the events one poll returned, not the wait); with
        C{report}, emit the distribution and what the longest turns held.
        """
        if not report:
            from bench.xtmpserver.turns import TurnTimer
            self.turns = TurnTimer(reactor, getattr(self.factory, "scheduler", None))
            emit("turns")
            return
        emit("turns", **self.turns.stop())

    def cmd_gcinfo(self):
        """
        (diagnosis) What the cyclic collector tracks and what it would free
        now: object kinds, and the frames and types of the garbage.
        """
        import gc, collections
        objs = gc.get_objects()
        kinds = collections.Counter(type(o).__name__ for o in objs)
        tracked = len(objs)
        del objs
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        frames = collections.Counter(
            "%s:%s" % (o.f_code.co_filename.split("/")[-1], o.f_code.co_name)
            for o in gc.garbage if type(o).__name__ == "frame")
        excs = collections.Counter(type(o).__name__ for o in gc.garbage)
        gc.set_debug(0)
        del gc.garbage[:]
        emit("gcinfo", frames=frames.most_common(25), excs=excs.most_common(40),
             tracked=tracked, frozen=gc.get_freeze_count(),
             top=kinds.most_common(15), stats=gc.get_stats())

    def cmd_heartbeats(self):
        """
        (diagnosis) Which side starts the idle sessions' heartbeat rounds:
        the server's probes sent and the clients' probes it answered.
        """
        sent = answered = measured = 0
        if self.mode == "xtmp":
            for session in self.factory.registry:
                counters = session.connection.counters
                sent += counters.heartbeatsSent
                answered += counters.heartbeatsAnswered
                measured += session.rtt is not None
        emit("heartbeats", sent=sent, answered=answered, measured=measured)

    def cmd_stop(self):
        reactor.stop()


def textObserver(which):
    """
    The text log observer factory C{which} names: C{role} (the roles',
    L{muxframe.logtext}) or C{twisted} (twisted.logger's).
    """
    if which == "twisted":
        from twisted.logger import textFileLogObserver
    elif which == "role":
        from muxframe.logtext import textFileLogObserver
    else:
        raise SystemExit("log observer %r: role or twisted" % (which,))
    return textFileLogObserver


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["xtmp", "plain"])
    parser.add_argument("--heartbeat", type=float, default=30.0)
    parser.add_argument("--limits", choices=["on", "off"], default="off")
    parser.add_argument("--profile")
    parser.add_argument("--accepts-per-turn", type=int, default=None,
                        help="server.accepts_per_turn (default: the role's)")
    parser.add_argument("--python-gc", action="store_true",
                        help="keep Python's collector settings")
    args = parser.parse_args()
    # Log as the twistd role does: events go to a file observer (here the
    # null device) at muxframe's default level.  Without an observer,
    # twisted.logger keeps the first 65,536 events in memory, which under
    # a flood makes every full garbage collection scan them (200 ms turns).
    # (The role's text observer, muxframe.logtext; BENCH_LOG_OBSERVER=
    # twisted for twisted.logger's own, which writes the same lines.)
    from twisted.logger import LogLevel, globalLogBeginner
    from muxframe.logthrottle import setMinimumLevel
    setMinimumLevel(LogLevel.levelWithName(os.environ.get("BENCH_LOG_LEVEL", "info")))
    globalLogBeginner.beginLoggingTo(
        [textObserver(os.environ.get("BENCH_LOG_OBSERVER", "role"))(
            open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "w"))],
        redirectStandardIO=False)
    server = Server(args.mode, args.heartbeat, args.limits == "on")

    def listening(port):
        # As the role does (muxframe.server.service: ListenService, and the
        # collector settings once started).
        if args.mode == "xtmp":
            config = server.factory.config
            accepts = args.accepts_per_turn
            refuseEarly(capAccepts(port, config["server.accepts_per_turn"]
                                   if accepts is None else accepts))
            if not args.python_gc:
                applyServerCollector(config["server.gc_threshold"])
        emit("listening", port=port.getHost().port)

    d = TCP4ServerEndpoint(reactor, 0, backlog=4096,
                           interface="127.0.0.1").listen(server.factory)
    d.addCallback(listening)
    d.addErrback(lambda f: (emit("error", error=f.getErrorMessage()),
                            reactor.stop()))
    listenToStdin(server, reactor)
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
        reactor.run()
        profiler.disable()
        profiler.dump_stats(args.profile)
    else:
        reactor.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
