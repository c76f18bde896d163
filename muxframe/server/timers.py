"""
Reactor-time helpers for many sessions.

L{CoarseClock}: session timers grouped into slots, so thousands of idle
sessions cost the reactor one timer per slot rather than one each.
L{HandshakeScheduler}: handshake work spread over reactor turns.

An XTMP session keeps one timer (its next heartbeat, silence or idle
deadline) and re-arms it at every tick.  With 10,000 sessions that is
10,000 entries in the reactor's heap, re-sorted on every heartbeat, and as
many separate wake-ups.  Here a timer due at time t runs in the first
slot boundary at or after t (slots are C{resolution} seconds apart), all
the timers of a slot run in one reactor call, and the reactor holds one
C{DelayedCall} per slot that has timers.  No timer runs early; each runs
at most C{resolution} late, which heartbeats (seconds apart, with a
silence limit of two intervals) and handshake, idle and request timeouts
tolerate.
"""

import math

from zope.interface import implementer
from twisted.internet.interfaces import IDelayedCall, IReactorTime


@implementer(IDelayedCall)
class CoarseCall:
    """
    One timer of a L{CoarseClock} (an C{IDelayedCall}).
    """

    __slots__ = ("_clock", "_slot", "_due", "_call")

    def __init__(self, clock, slot, due, call):
        self._clock = clock
        self._slot = slot
        self._due = due
        self._call = call

    def getTime(self):
        """
        When it is due (it runs at its slot's boundary, at most
        C{resolution} later).
        """
        return self._due

    def active(self):
        """
        Whether it has neither run nor been cancelled.
        """
        return self._call is not None

    def cancel(self):
        """
        Do not run it.
        """
        if self._call is None:
            from twisted.internet.error import AlreadyCalled
            raise AlreadyCalled()
        self._call = None
        self._clock._forget(self)

    def delay(self, seconds):
        """
        Not supported: cancel and schedule anew.
        """
        raise NotImplementedError("CoarseCall.delay")

    def reset(self, seconds):
        """
        Not supported: cancel and schedule anew.
        """
        raise NotImplementedError("CoarseCall.reset")


@implementer(IReactorTime)
class CoarseClock:
    """
    An C{IReactorTime} over C{reactor} running timers at slot boundaries
    C{resolution} seconds apart.
    """

    def __init__(self, reactor, resolution=1.0):
        self._reactor = reactor
        self.resolution = resolution
        self._slots = {}
        self._delayed = {}
        # The reactor's own method: sessions ask the time often.
        self.seconds = reactor.seconds

    def callLater(self, delay, f, *args, **kw):
        """
        Run C{f(*args, **kw)} at the first slot boundary at least C{delay}
        seconds from now.
        """
        now = self._reactor.seconds()
        due = now + delay
        slot = int(math.ceil(due / self.resolution))
        if slot * self.resolution < due:
            slot += 1
        timer = CoarseCall(self, slot, due, (f, args, kw))
        timers = self._slots.get(slot)
        if timers is None:
            timers = self._slots[slot] = {}
            self._delayed[slot] = self._reactor.callLater(
                max(0.0, slot * self.resolution - now), self._run, slot)
        timers[timer] = None
        return timer

    def _forget(self, timer):
        timers = self._slots.get(timer._slot)
        if timers is None:
            return
        timers.pop(timer, None)
        if not timers:
            del self._slots[timer._slot]
            call = self._delayed.pop(timer._slot)
            if call.active():
                call.cancel()

    def _run(self, slot):
        timers = self._slots.pop(slot, {})
        self._delayed.pop(slot, None)
        for timer in timers:
            call = timer._call
            if call is None:
                continue
            timer._call = None
            f, args, kw = call
            try:
                f(*args, **kw)
            except Exception:
                from twisted.logger import Logger
                Logger(namespace="muxframe.server").failure(
                    "timer {f!r} failed", f=f)

    def getDelayedCalls(self):
        """
        The active timers.
        """
        return [t for timers in self._slots.values() for t in timers]

    def pending(self):
        """
        How many timers wait, and in how many slots.
        """
        return sum(len(t) for t in self._slots.values()), len(self._slots)


class HandshakeScheduler:
    """
    Runs the expensive steps of handshakes (a session's received bytes
    while it is still handshaking: hybrid key exchange, signatures, about
    half a millisecond each) from a queue, for at most C{budget} seconds
    per reactor turn (always at least one), so that a burst of new
    connections shares the reactor with established sessions instead of
    holding it for as long as the burst takes.  Each session's bytes keep
    their order; the queue holds at most one entry per handshaking
    session (which C{max_handshakes} bounds); what a step submits (the
    second half of a ClientHello's work) runs in the next turn, not in
    this one.  L{submit} says how many
    bytes a session has waiting, so the session can stop reading once
    they pass what a handshake step needs (L{ServerSession.dataReceived}).
    """

    def __init__(self, reactor, budget=0.001, clock=None):
        import time
        from collections import OrderedDict
        self._reactor = reactor
        self.budget = budget
        self._clock = clock or time.perf_counter
        self._waiting = OrderedDict()
        self._call = None
        self.steps = 0
        # Runs started so far: an entry made during a run is marked with
        # the next run's number, and waits for it.
        self._runs = 0

    def __len__(self):
        return len(self._waiting)

    def submit(self, session, data):
        """
        Queue C{data} for C{session}: C{session.handshakeStep(data)} runs
        in a coming reactor turn.

        @return: how many bytes C{session} has waiting, C{data} included.
        """
        entry = self._waiting.get(session)
        if entry is not None:
            entry[1].append(data)
            entry[0] += len(data)
            return entry[0]
        self._waiting[session] = [len(data), [data], self._runs]
        if self._call is None:
            self._call = self._reactor.callLater(0, self._run)
        return len(data)

    def queuedBytes(self, session):
        """
        How many bytes C{session} has waiting for its step.
        """
        entry = self._waiting.get(session)
        return entry[0] if entry is not None else 0

    def discard(self, session):
        """
        Forget C{session}'s queued bytes (it is gone).
        """
        self._waiting.pop(session, None)

    def _run(self):
        self._call = None
        deadline = self._clock() + self.budget
        # Steps queued by this run's steps (a hello's answer after its key
        # agreement) wait for the next run: other work comes between.
        # (Entries are in submission order; a step may also discard
        # others.)
        run = self._runs
        self._runs += 1
        waiting = self._waiting
        while waiting and next(iter(waiting.values()))[2] <= run:
            session, entry = waiting.popitem(last=False)
            self.steps += 1
            session.handshakeStep(b"".join(entry[1]))
            if self._clock() >= deadline:
                break
        if self._waiting and self._call is None:
            # (A step's submission may have scheduled the next run.)
            self._call = self._reactor.callLater(0, self._run)

    def stop(self):
        """
        Cancel the pending run.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
