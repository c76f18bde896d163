"""
(diagnosis) L{TurnTimer}: the CPU time of each reactor turn's work in the
benchmark's server process, and what the longest turns held (events by
protocol, timed calls due, garbage collections, handshake steps).  It
wraps the running epoll reactor's poll, iteration and timed calls, and the
server session's handshake step, so it is for the bench only: this is how
the flood scenario's latency was traced to Twisted's growing accept batch,
to the log events twisted.logger buffers without an observer, and to
reference cycles left by refused handshakes (docs/performance.md).
"""

import gc
import time


class TurnTimer:
    """
    Wraps the running reactor's poll and iteration to time each turn's
    work (CPU seconds of the reactor thread); the diagnosis behind the
    flood scenario's latency.
    """

    def __init__(self, reactor, scheduler=None):
        self.reactor = reactor
        self.work = []
        self.runs = []
        self.collections = []
        self.longest = []
        self._poller = poller = reactor._poller
        self._iterate = reactor.doIteration
        self._run = reactor.runUntilCurrent
        # CPU time, not wall: a turn the scheduler interrupts (other work
        # on the machine) is not the server's doing.
        clock = time.thread_time
        state = {"returned": 0.0, "events": (), "timed": 0.0}

        class Poller:
            def __getattr__(self, name):
                return getattr(poller, name)

            def poll(self, timeout, maxevents):
                return poll(timeout, maxevents)

        def poll(timeout, maxevents):
            events = poller.poll(timeout, maxevents)
            state["returned"], state["events"] = clock(), events
            return events

        def runUntilCurrent():
            now = reactor.seconds()
            due = {}
            for call in reactor._pendingTimedCalls + reactor._newTimedCalls:
                if call.time <= now:
                    name = getattr(call.func, "__qualname__", str(call.func))
                    due[name] = due.get(name, 0) + 1
            state["due"] = due
            start = clock()
            self._run()
            state["timed"] = clock() - start

        state["gc"] = 0.0

        def collected(phase, info):
            if phase == "start":
                state["gcStart"] = clock()
            else:
                took = clock() - state["gcStart"]
                state["gc"] += took
                if took > 0.001 and len(self.collections) < 100:
                    self.collections.append((round(took * 1e3, 2),
                                             info["generation"],
                                             info["collected"],
                                             len(gc.get_objects(
                                                 info["generation"]))))

        gc.callbacks.append(collected)
        self._collected = collected
        from muxframe.server.session import ServerSession
        self._step = step = ServerSession.handshakeStep
        self.steps = []
        self.stepTurns = []

        def handshakeStep(session, data):
            start = clock()
            gc0 = state["gc"]
            try:
                return step(session, data)
            finally:
                self.steps.append((clock() - start - (state["gc"] - gc0),
                                   len(data)))

        ServerSession.handshakeStep = handshakeStep
        if scheduler is not None:
            run = type(scheduler)._run

            def runSteps():
                start, before = clock(), len(self.steps)
                run(scheduler)
                self.runs.append((clock() - start, len(self.steps) - before))
                state["stepped"] = True

            scheduler._run = runSteps

        def doIteration(timeout):
            state["gc"] = 0.0
            self._iterate(timeout)
            spent = clock() - state["returned"] + state["timed"]
            self.work.append(spent)
            if state.pop("stepped", False):
                self.stepTurns.append(spent)
            if spent > 0.0005 and len(self.longest) < 2000:
                kinds = {"gc": round(state["gc"] * 1e3, 3)}
                if state["timed"] > 0.0005:
                    kinds["due"] = state["due"]
                for fd, _ in state["events"]:
                    selectable = reactor._selectables.get(fd)
                    name = type(getattr(selectable, "protocol", selectable)
                                ).__name__
                    kinds[name] = kinds.get(name, 0) + 1
                self.longest.append((spent, state["timed"], kinds))

        reactor._poller = Poller()
        reactor.runUntilCurrent = runUntilCurrent
        reactor.doIteration = doIteration

    def stop(self):
        gc.callbacks.remove(self._collected)
        from muxframe.server.session import ServerSession
        ServerSession.handshakeStep = self._step
        steps = sorted(self.steps, reverse=True)
        self.reactor._poller = self._poller
        self.reactor.doIteration = self._iterate
        self.reactor.runUntilCurrent = self._run
        work = sorted(self.work)
        pick = lambda q: work[min(len(work) - 1, int(q * len(work)))] * 1e3
        # A request arriving at a random moment waits out the turn in
        # progress: it waits more than b for max(0, L - b) of a turn of
        # length L.  So waitOver[b] / the run's wall time is how often a
        # request waits more than b for the server's other work.
        within = {"%.2f" % (b * 1e3): round(sum(w - b for w in work if w > b), 5)
                  for b in (1e-4, 1.5e-4, 2e-4, 2.5e-4, 3e-4, 4e-4, 5e-4)}
        stepWait = {"%.2f" % (b * 1e3): round(sum(
            w - b for w in self.stepTurns if w > b), 5) for b in (1e-4, 2e-4, 3e-4)}
        return {"turns": len(work), "work": sum(work), "waitOver": within,
                "waitOverInStepTurns": stepWait,
                "p50": pick(0.5), "p99": pick(0.99),
                "p999": pick(0.999), "max": work[-1] * 1e3 if work else 0,
                "over": sum(1 for w in work if w > 0.0005),
                "collections": self.collections[:30],
                "longestRuns": sorted(self.runs, reverse=True)[:8],
                "steps": len(steps), "stepMedians": {
                    "%d bytes" % n: round(sorted(a for a, m in steps if m == n)[
                        sum(1 for a, m in steps if m == n) // 2] * 1e3, 3)
                    for n in {m for _, m in steps}},
                "longestSteps": [
                    [round(a * 1e3, 3), n] for a, n in steps[:12]],
                "longest": [[a * 1e3, b * 1e3, k] for a, b, k in
                            sorted(self.longest, reverse=True)[:15]]}
