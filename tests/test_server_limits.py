"""
Tests for L{muxframe.server.limits}: token buckets, per-key bucket tables,
lockout with backoff and expiry, connection counts, concurrency gates and
log throttling.  Time is passed in; nothing sleeps.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from muxframe.server.limits import (
    BucketTable, ConcurrencyGate, ConnectionCounter, Lockout, LogThrottle,
    TokenBucket,
)


class TokenBucketTests(SynchronousTestCase):
    def test_burstThenRate(self):
        b = TokenBucket(rate=10, burst=5, now=0)
        self.assertEqual([b.take(0) for _ in range(6)], [True] * 5 + [False])
        self.assertAlmostEqual(b.wait(0), 0.1)
        self.assertFalse(b.take(0.05))
        self.assertTrue(b.take(0.1))
        self.assertTrue(b.isFull(10))

    def test_largeAmountFromFullBucket(self):
        b = TokenBucket(rate=100, burst=100, now=0)
        self.assertTrue(b.take(0, 250))
        self.assertFalse(b.take(1, 1))  # in debt until 1.5 s
        self.assertTrue(b.take(2.6, 1))

    def test_unlimited(self):
        b = TokenBucket(rate=0, burst=0)
        self.assertTrue(all(b.take(0) for _ in range(1000)))
        self.assertEqual(b.wait(0), 0)

    @given(st.lists(st.tuples(st.floats(0, 5), st.floats(0, 20)), max_size=50))
    @settings(deadline=None)
    def test_neverMoreThanRateAllows(self, steps):
        """
        Over any schedule, what was taken is at most burst + rate * time.
        """
        b = TokenBucket(rate=10, burst=20, now=0)
        now = taken = 0.0
        for dt, amount in steps:
            now += dt
            if b.take(now, amount):
                taken += amount
        self.assertLessEqual(taken, 20 + 10 * now + 20 + 1e-6)


class BucketTableTests(SynchronousTestCase):
    def test_perKeyAndBounded(self):
        t = BucketTable(rate=1, burst=2, maxKeys=32)
        self.assertEqual([t.take("a", 0) for _ in range(3)], [True, True, False])
        self.assertTrue(t.take("b", 0))
        for i in range(100):
            t.take("k%d" % i, 0)
        self.assertLessEqual(len(t), 32)


class LockoutTests(SynchronousTestCase):
    def test_lockAfterFailuresThenExpiry(self):
        lock = Lockout(maxFailures=3, window=60, base=10, maximum=100)
        self.assertEqual(lock.failure("k", 0), 0)
        self.assertEqual(lock.failure("k", 1), 0)
        self.assertEqual(lock.failure("k", 2), 10)
        self.assertEqual(lock.lockedFor("k", 5), 7)
        self.assertEqual(lock.lockedFor("k", 12), 0)
        self.assertEqual(lock.locks, 1)

    def test_backoffDoubles(self):
        lock = Lockout(maxFailures=2, window=60, base=10, maximum=35)
        durations = []
        now = 0
        for _ in range(4):
            lock.failure("k", now)
            durations.append(lock.failure("k", now + 1))
            now += durations[-1] + 2
        self.assertEqual(durations, [10, 20, 35, 35])

    def test_failuresOutsideWindowDoNotAdd(self):
        lock = Lockout(maxFailures=2, window=10, base=10, maximum=100)
        lock.failure("k", 0)
        self.assertEqual(lock.failure("k", 20), 0)
        self.assertEqual(lock.failure("k", 25), 10)

    def test_quietKeyForgotten(self):
        lock = Lockout(maxFailures=1, window=10, base=10, maximum=50)
        lock.failure("k", 0)
        self.assertEqual(lock.lockedFor("k", 100), 0)
        # Backoff reset: the next lock is the base again.
        self.assertEqual(lock.failure("k", 100), 10)

    def test_successClearsCount(self):
        lock = Lockout(maxFailures=2, window=60, base=10, maximum=100)
        lock.failure("k", 0)
        lock.success("k", 1)
        self.assertEqual(lock.failure("k", 2), 0)

    def test_bounded(self):
        lock = Lockout(maxKeys=10)
        for i in range(100):
            lock.failure(i, 0)
        self.assertEqual(len(lock), 10)

    def test_disabled(self):
        lock = Lockout(maxFailures=0)
        self.assertEqual([lock.failure("k", 0) for _ in range(5)], [0] * 5)


class ConnectionCounterTests(SynchronousTestCase):
    def test_limits(self):
        c = ConnectionCounter(maxTotal=3, maxPerAddress=2)
        for address in ("a", "a"):
            self.assertIsNone(c.refusal(address))
            c.add(address)
        self.assertIn("max_connections_per_client", c.refusal("a"))
        c.add("b")
        self.assertIn("max_connections", c.refusal("c"))
        c.remove("a")
        self.assertIsNone(c.refusal("a"))
        self.assertEqual(c.of("a"), 1)


class GateTests(SynchronousTestCase):
    def test_runQueueReject(self):
        g = ConcurrencyGate(limit=1, queueLimit=1)
        self.assertEqual(g.admit("a"), g.RUN)
        self.assertEqual(g.admit("b"), g.QUEUED)
        self.assertEqual(g.admit("c"), g.REJECTED)
        self.assertEqual(g.release(), "b")
        self.assertEqual(g.inFlight, 1)
        self.assertIsNone(g.release())
        self.assertEqual(g.inFlight, 0)
        self.assertEqual(g.rejected, 1)

    def test_drop(self):
        g = ConcurrencyGate(limit=0, queueLimit=5)
        for job in "abcd":
            g.admit(job)
        self.assertEqual(g.drop(lambda j: j in "bd"), ["b", "d"])
        self.assertEqual(g.queued, 2)


class LogThrottleTests(SynchronousTestCase):
    def test_throttle(self):
        t = LogThrottle(perInterval=2, interval=10)
        self.assertEqual([t.allow("x", 0)[0] for _ in range(5)],
                         [True, True, False, False, False])
        self.assertEqual(t.allow("y", 0), (True, 0))
        self.assertEqual(t.allow("x", 10), (True, 3))
