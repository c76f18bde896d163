"""
Tests for L{muxframe.server.timers.CoarseClock}: timers run at slot
boundaries, never early, at most one resolution late, with one reactor
timer per slot.
"""

from twisted.internet.error import AlreadyCalled
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from muxframe.server.timers import CoarseClock


class CoarseClockTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(100.2)
        self.coarse = CoarseClock(self.clock, resolution=1.0)
        self.ran = []

    def test_runsAtBoundaryNotEarly(self):
        self.coarse.callLater(0.3, self.ran.append, "a")
        self.coarse.callLater(0.9, self.ran.append, "b")
        self.coarse.callLater(1.5, self.ran.append, "c")
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.clock.advance(0.7)   # 100.9
        self.assertEqual(self.ran, [])
        self.clock.advance(0.1)   # 101.0: a is due at 100.5, b at 101.1
        self.assertEqual(self.ran, ["a"])
        self.clock.advance(1.0)   # 102.0
        self.assertEqual(self.ran, ["a", "b", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self):
        a = self.coarse.callLater(0.3, self.ran.append, "a")
        b = self.coarse.callLater(0.4, self.ran.append, "b")
        a.cancel()
        self.assertFalse(a.active())
        self.assertRaises(AlreadyCalled, a.cancel)
        b.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        self.assertEqual(self.ran, [])

    def test_manyTimersOneReactorCall(self):
        for n in range(1000):
            self.coarse.callLater(0.5 + n / 10000.0, self.ran.append, n)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.coarse.pending(), (1000, 1))
        self.clock.advance(1)
        self.assertEqual(self.ran, list(range(1000)))

    def test_rescheduleFromATimer(self):
        """
        A timer that schedules another (a session re-arming its tick) gets
        a later slot, even with a tiny delay.
        """
        def tick():
            self.ran.append(self.clock.seconds())
            if len(self.ran) < 3:
                self.coarse.callLater(0.001, tick)

        self.coarse.callLater(0.001, tick)
        self.clock.advance(0.8)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.ran, [101.0, 102.0, 103.0])

    def test_failingTimerDoesNotStopOthers(self):
        self.coarse.callLater(0.1, lambda: 1 / 0)
        self.coarse.callLater(0.2, self.ran.append, "after")
        self.clock.advance(1)
        self.assertEqual(self.ran, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_seconds(self):
        self.assertEqual(self.coarse.seconds(), self.clock.seconds())
        call = self.coarse.callLater(2.5, lambda: None)
        self.assertAlmostEqual(call.getTime(), 102.7)
        self.assertEqual(self.coarse.getDelayedCalls(), [call])


class Step:
    def __init__(self, log, name, cost, clock):
        self.log, self.name, self.cost, self.clock = log, name, cost, clock

    def handshakeStep(self, data):
        self.log.append((self.name, data))
        self.clock[0] += self.cost


class TurnReactor:
    """
    Runs callLater(0) calls only when told: one reactor turn at a time.
    """

    def __init__(self):
        self.calls = []

    def callLater(self, delay, f, *args):
        self.calls.append((f, args))

        class Call:
            def active(self):
                return False
        return Call()

    def turn(self):
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class HandshakeSchedulerTests(SynchronousTestCase):
    def setUp(self):
        from muxframe.server.timers import HandshakeScheduler
        self.reactor = TurnReactor()
        self.now = [0.0]
        self.scheduler = HandshakeScheduler(self.reactor, budget=0.001,
                                            clock=lambda: self.now[0])
        self.log = []

    def step(self, name, cost=0.0006):
        return Step(self.log, name, cost, self.now)

    def test_budgetPerTurnAndOrder(self):
        """
        Steps run in arrival order, at least one and then until the budget
        is spent per reactor turn; a session's bytes stay together and in
        order.
        """
        a, b, c = self.step("a"), self.step("b"), self.step("c")
        self.scheduler.submit(a, b"1")
        self.scheduler.submit(b, b"x")
        self.scheduler.submit(a, b"2")
        self.scheduler.submit(c, b"y")
        self.assertEqual(self.log, [])
        self.reactor.turn()
        self.assertEqual(self.log, [("a", b"12"), ("b", b"x")])
        self.reactor.turn()
        self.assertEqual(self.log[-1], ("c", b"y"))
        self.assertEqual(self.reactor.calls, [])
        self.assertEqual(self.scheduler.steps, 3)

    def test_queuedBytes(self):
        """
        L{HandshakeScheduler.submit} says how many bytes the session has
        waiting (what the session bounds its reading by); its step takes
        them all.
        """
        a, b = self.step("a"), self.step("b")
        self.assertEqual(self.scheduler.submit(a, b"12"), 2)
        self.assertEqual(self.scheduler.submit(b, b"x"), 1)
        self.assertEqual(self.scheduler.submit(a, b"345"), 5)
        self.assertEqual(self.scheduler.queuedBytes(a), 5)
        self.reactor.turn()
        self.assertEqual(self.scheduler.queuedBytes(a), 0)
        self.assertEqual(self.log[0], ("a", b"12345"))

    def test_stepDiscardsOthers(self):
        """
        A step that ends other waiting sessions (their connections lost,
        L{HandshakeScheduler.discard}) ends the run once nothing waits,
        and what a step submitted meanwhile still waits for the next turn
        (before, the run counted its entries first, and popped from an
        empty queue: KeyError).
        """
        a, b, c = (self.step(name, cost=0.0001) for name in "abc")
        step = a.handshakeStep

        def endOthers(data):
            step(data)
            self.scheduler.discard(b)
            self.scheduler.discard(c)
            if data:
                self.scheduler.submit(a, b"")
        a.handshakeStep = endOthers
        for session in (a, b, c):
            self.scheduler.submit(session, b"hello")
        self.reactor.turn()
        self.assertEqual(self.log, [("a", b"hello")])
        self.assertEqual(len(self.scheduler), 1)
        self.reactor.turn()
        self.assertEqual(self.log, [("a", b"hello"), ("a", b"")])

    def test_submittedByAStepWaitsForTheNextTurn(self):
        """
        What a step submits (a hello's answer after its key agreement)
        runs in the next turn, behind what was already waiting, even with
        budget left in this one.
        """
        a, b = self.step("a", cost=0.0001), self.step("b", cost=0.0001)
        step = a.handshakeStep

        def agreeThenAnswerLater(data):
            step(data)
            if data:
                self.scheduler.submit(a, b"")
        a.handshakeStep = agreeThenAnswerLater
        self.scheduler.submit(a, b"hello")
        self.reactor.turn()
        self.assertEqual(self.log, [("a", b"hello")])
        self.assertEqual(len(self.reactor.calls), 1)
        self.scheduler.submit(b, b"x")
        self.reactor.turn()
        self.assertEqual(self.log, [("a", b"hello"), ("a", b""), ("b", b"x")])
        self.assertEqual(self.reactor.calls, [])

    def test_discard(self):
        a, b = self.step("a"), self.step("b")
        self.scheduler.submit(a, b"1")
        self.scheduler.submit(b, b"2")
        self.scheduler.discard(a)
        self.reactor.turn()
        self.assertEqual(self.log, [("b", b"2")])


class ResolutionTests(SynchronousTestCase):
    def test_shortHeartbeatInterval(self):
        """
        With a heartbeat interval shorter than the timer resolution, the
        resolution used is 1/32 of the interval: idle sessions keep
        their round trips (they used to time out, the probe running after
        the silence check a slot late).
        """
        from tests.test_server_support import ALICE, Harness, config
        h = Harness(config(xtmp_protocol__heartbeat_interval=0.2))
        self.assertEqual(h.server.timers.resolution, 0.2 / 32)
        client, session, _ = h.connect(ALICE)
        for _ in range(50):
            h.clock.advance(0.1)
            h.flush()
        self.assertTrue(session.isConnected())
        self.assertIsNotNone(session.rtt)
        self.assertEqual(client.connection.state, "OPEN")


class IdleRoundTests(SynchronousTestCase):
    """
    Idle sessions' heartbeats on the server: the server's probe starts
    every round (one probe, one answer), and sessions whose probes fall in
    one slot are probed in one reactor call.
    """

    def test_serverProbesEachRound(self):
        """
        With the client's heartbeat interval equal to the server's, every
        round is the server's probe and the client's answer: the client
        never probes (before, its timer, timed from its answer, fired
        before the server's coarse one, and the server's own timer woke
        for nothing every round), and the registry has each session's rtt.
        """
        from tests.test_server_support import ALICE, Harness, config
        h = Harness(config(xtmp_protocol__heartbeat_interval=30,
                           xtmp_protocol__session_timeout=100000))
        self.assertEqual(h.server.timers.resolution, 30 / 32)
        pairs = []
        for n in range(4):
            h.clock.advance(0.1)
            pairs.append(h.connect(ALICE, heartbeatInterval=30,
                                   sessionTimeout=100000)[:2])
        for _ in range(3000):
            h.clock.advance(0.1)
            h.flush()
        # 300 s at one round per interval less one slot (29.0625 s).
        for client, session in pairs:
            server, mine = session.connection.counters, \
                client.connection.counters
            self.assertTrue(session.isConnected())
            self.assertIn(server.heartbeatsSent, (10, 11))
            self.assertEqual(mine.heartbeatsAnswered, server.heartbeatsSent)
            self.assertEqual((mine.heartbeatsSent, server.heartbeatsAnswered),
                             (0, 0))
            self.assertIsNotNone(session.rtt)
            self.assertIsNone(client.connection.rtt)
        # Connected within one slot, they share it: one reactor timer.
        self.assertEqual(h.server.timers.pending(), (4, 1))
