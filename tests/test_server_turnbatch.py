"""
Tests for L{muxframe.server.turnbatch.TurnBatch}, the server's batching of
a reactor turn's appends into one C{appendMany}.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from muxframe.server.turnbatch import TurnBatch


class TurnBatchTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.calls = []
        self.seen = []

        self.groups = []

        def appendMany(items, groups=None):
            d = Deferred()
            self.calls.append((list(items), d))
            self.groups.append(groups)
            return d

        self.batch = TurnBatch(self.clock, lambda: appendMany, limit=5,
                               onBatch=self.seen.append)

    def test_oneAppendPerTurn(self):
        """
        The records added in one turn go out in one appendMany, in order, at
        the end of the turn; each caller gets its own first and last
        results.
        """
        got = []
        self.batch.add(["a1", "a2"], lambda r, tag: got.append((tag, r)), None, ("a",))
        self.batch.add(["b1"], lambda r, tag: got.append((tag, r)), None, ("b",))
        self.assertEqual(self.calls, [])
        self.clock.advance(0)
        [(items, d)] = self.calls
        self.assertEqual(items, ["a1", "a2", "b1"])
        self.assertEqual(self.seen, [d])
        d.callback(["A1", "A2", "B1"])
        self.assertEqual(got, [("a", ("A1", "A2")), ("b", ("B1", "B1"))])

    def test_flushedEarlyPastLimit(self):
        """
        A batch reaching C{limit} records is appended at once; what follows
        waits for the end of the turn.
        """
        self.batch.add(["a"] * 3, None, None)
        self.batch.add(["b"] * 2, None, None)
        self.assertEqual(len(self.calls), 1)
        self.batch.add(["c"], None, None)
        self.assertEqual(len(self.calls), 1)
        self.clock.advance(0)
        self.assertEqual([items for items, _ in self.calls], [["a"] * 3 + ["b"] * 2, ["c"]])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flushNowAndNothing(self):
        """
        L{TurnBatch.flush} appends at once and cancels the end-of-turn call;
        with nothing added it appends nothing.
        """
        self.batch.flush()
        self.assertEqual(self.calls, [])
        self.batch.add(["a"], None, None)
        self.batch.flush()
        self.assertEqual(len(self.calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failureToEveryCaller(self):
        """
        A failed append reaches every caller's C{failed}, with its args.
        """
        failed = []
        self.batch.add(["a"], None, lambda f, tag: failed.append((tag, f.value)), ("a",))
        self.batch.add(["b"], None, lambda f, tag: failed.append((tag, f.value)), ("b",))
        self.clock.advance(0)
        error = RuntimeError("disk full")
        self.calls[0][1].errback(error)
        self.assertEqual(failed, [("a", error), ("b", error)])

    def test_raisingCallbackLogged(self):
        """
        A callback that raises is logged; the callers after it still hear.
        """
        got = []

        def boom(result):
            raise ValueError("boom")

        self.batch.add(["a"], boom, None)
        self.batch.add(["b"], got.append, None)
        self.clock.advance(0)
        self.calls[0][1].callback(["A", "B"])
        self.assertEqual(got, [("B", "B")])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_callerRefusedAlone(self):
        """
        Each caller's records are one of the batch's C{groups}; a caller
        whose records the engine refused alone (an exception in its place
        in the results) gets C{failed} with it, the others their results,
        all from the one batch (nothing is appended again).
        """
        class Refused(Exception):
            pass

        got, failed = [], []
        for tag, items in (("a", ["a1", "a2"]), ("bad", ["x1"]), ("c", ["c1"])):
            self.batch.add(items, lambda r, tag: got.append((tag, r)),
                           lambda f, tag: failed.append((tag, f.value)), (tag,))
        self.clock.advance(0)
        [(items, d)] = self.calls
        self.assertEqual(self.groups, [[(0, 1), (2, 2), (3, 3)]])
        refusal = Refused("no room")
        d.callback(["A1", "A2", refusal, "C1"])
        self.assertEqual(got, [("a", ("A1", "A2")), ("c", ("C1", "C1"))])
        self.assertEqual(failed, [("bad", refusal)])
        self.assertEqual(len(self.calls), 1)
