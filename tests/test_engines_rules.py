"""
The engines' sans-IO rules: queue offsets, dedup and retention, consumer
positions, subscriptions, presence, history and subjects.  No reactor.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from muxframe.engines import subjects
from muxframe.engines.errors import (
    EngineUsageError, InvalidName, LimitExceeded, RecoveryFailure, RecoveryImpossible,
    SubscriptionError)
from muxframe.engines.history import HistoryTable, recoveryDecision
from muxframe.engines.model import (
    Address, HistoryOptions, LocationSharing, NoticeKind, QueueRetention, ReceiptKind, Status,
    StreamPosition, SubscriptionState, Visibility, checkName)
from muxframe.engines.presence import PresenceTable, aggregateStatus, presenceView
from muxframe.engines import queuestate
from muxframe.engines.queuestate import (
    ConsumerTracker, KnownDevices, QueueIndex, dedupKey, retentionStart)
from muxframe.engines.subscriptions import SubscriptionBook, transition

APPROVED = SubscriptionState.APPROVED


class NameTests(SynchronousTestCase):

    def test_checkName(self):
        """
        Names are non-empty str of at most 255 UTF-8 bytes without NUL or
        the unit separator; each fault is an InvalidName naming it.
        """
        self.assertEqual(checkName("alice"), "alice")
        for bad, why in [("", "empty"), ("a\x00b", "reserved"), ("a\x1fb", "reserved"),
                         ("é" * 128, "longer"), (b"x", "must be a str")]:
            e = self.assertRaises(InvalidName, checkName, bad, "entity")
            self.assertIn(why, str(e))
            self.assertIn("entity", str(e))


class QueueIndexTests(SynchronousTestCase):

    def test_offsetsContiguousAndDedup(self):
        """
        Offsets count from 1; a dedup key maps to its offset while kept and
        within the window.
        """
        index = QueueIndex(dedupWindow=2)
        keys = [dedupKey(Address("bob", "p"), "m%d" % i) for i in range(3)]
        self.assertEqual([index.add(10 + i, 1000 + i, k) for i, k in enumerate(keys)], [1, 2, 3])
        self.assertIsNone(index.find(keys[0]), "beyond the window")
        self.assertEqual(index.find(keys[2]), 3)
        self.assertEqual(index.lsn(2), 11)
        index.trimTo(3)
        self.assertIsNone(index.find(keys[1]), "trimmed")
        self.assertEqual(index.lsns(1, 10), (3, index.lsns(3, 10)[1]))
        self.assertEqual(list(index.lsns(1, 10)[1]), [12])

    def test_dedupWindowExactWhileForgettingInChunks(self):
        """
        Keys leave the dedup dict in chunks, but L{QueueIndex.find} answers
        exactly for the last C{dedupWindow} offsets, before and after a
        chunk is forgotten, and a key appended again after leaving the
        window maps to its new offset.
        """
        index = QueueIndex(dedupWindow=10)
        keys = [dedupKey(Address("bob", "p"), "m%d" % i) for i in range(3000)]
        for i, key in enumerate(keys):
            index.add(i + 1, i, key)
            if i % 397 == 0 or i > 2980:
                found = [o for o in range(1, i + 2) if index.find(keys[o - 1]) == o]
                self.assertEqual(found, list(range(max(1, i + 2 - 10), i + 2)), i)
        self.assertEqual(index.add(3001, 0, keys[5]), 3001)
        self.assertEqual(index.find(keys[5]), 3001)

    @given(st.lists(st.integers(1, 30), min_size=1, max_size=6), st.integers(1, 40),
           st.lists(st.integers(0, 59), max_size=10))
    @settings(max_examples=150, deadline=None)
    def test_runsDedupLikeAppends(self, runs, window, repeats):
        """
        Runs added in recovery (L{QueueIndex.addRun}, which enters only the
        keys inside the dedup window) leave the same dedup answers as the
        same records appended one by one, repeated keys included.
        """
        total = sum(runs)
        keys = [dedupKey(Address("bob", "p"), "m%d" % i) for i in range(total)]
        for i, j in zip(repeats, repeats[1:]):
            # A key seen again later, as after it left the window.
            if i < total and j < total:
                keys[max(i, j)] = keys[min(i, j)]
        appended = QueueIndex(dedupWindow=window)
        for i, key in enumerate(keys):
            appended.add(100 + i, i, key)
        recovered = QueueIndex(dedupWindow=window)
        at = 0
        for count in runs:
            recovered.addRun(1 + at, [100 + i for i in range(at, at + count)],
                             list(range(at, at + count)), b"".join(keys[at:at + count]))
            at += count
        self.assertEqual(recovered.nextOffset, appended.nextOffset)
        for key in set(keys):
            self.assertEqual(recovered.find(key), appended.find(key))
        self.assertEqual(list(recovered.lsns(1, total)[1]), list(appended.lsns(1, total)[1]))

    def test_floor(self):
        """
        A floor raises the next offset of a queue whose records were all
        dropped; appends continue from it.
        """
        index = QueueIndex()
        index.add(1, 0)
        index.floor(50)
        self.assertEqual((index.firstOffset, index.nextOffset, len(index)), (50, 50, 0))
        self.assertEqual(index.add(2, 0), 50)
        index.floor(10)
        self.assertEqual(index.nextOffset, 51)

    def test_compaction(self):
        """
        Trimming many records compacts the arrays and keeps lookups right.
        """
        index = QueueIndex()
        for i in range(10000):
            index.add(i + 1, i)
        index.trimTo(9000)
        self.assertEqual(index.lsn(9000), 9000)
        self.assertEqual(index.timestamp(9999), 9998)
        self.assertEqual(index.firstNotOlderThan(9500), 9501)

    def test_retention(self):
        """
        The first kept offset is the greatest of: past every device's
        delivered offset, the maxMessages newest, the first not older than
        maxAge; with no device known, acknowledgement keeps nothing back or
        forward.
        """
        index = QueueIndex()
        for i in range(10):
            index.add(i + 1, 1000 * i)
        r = QueueRetention(maxAge=None, maxMessages=None)
        self.assertEqual(retentionStart(index, r, 0, None), 1)
        self.assertEqual(retentionStart(index, r, 0, 4), 5)
        self.assertEqual(retentionStart(index, QueueRetention(None, 3), 0, None), 8)
        self.assertEqual(retentionStart(index, QueueRetention(5.0, None), 9000, None), 5)
        self.assertEqual(retentionStart(index, QueueRetention(5.0, None, False), 9000, 9), 5)
        self.assertEqual(retentionStart(index, QueueRetention(0.001, None), 10 ** 9, None), 11)


class ConsumerTrackerTests(SynchronousTestCase):

    def test_gapWaits(self):
        """
        An acknowledgement past a gap is held until the gap fills; the
        ranges returned are exactly the offsets that became covered.
        """
        t = ConsumerTracker()
        self.assertEqual(t.acknowledge(3, ReceiptKind.DELIVERED, 1, 10),
                         (range(1, 1), range(1, 1)))
        self.assertEqual(t.held, 1)
        d, r = t.acknowledge(1, ReceiptKind.DELIVERED, 1, 10)
        self.assertEqual((list(d), t.delivered), ([1], 1))
        d, r = t.acknowledge(2, ReceiptKind.READ, 1, 10)
        self.assertEqual((list(d), list(r), t.delivered, t.read), ([2, 3], [], 3, 0))

    def test_readImpliesDelivered(self):
        """
        READ covers DELIVERED too; read never passes delivered.
        """
        t = ConsumerTracker()
        d, r = t.acknowledge(1, ReceiptKind.READ, 1, 5)
        self.assertEqual((list(d), list(r)), ([1], [1]))

    def test_droppedRecordsNeedNoAck(self):
        """
        Offsets below the first kept count as covered, without receipts.
        """
        t = ConsumerTracker()
        d, r = t.acknowledge(8, ReceiptKind.DELIVERED, 8, 10)
        self.assertEqual((list(d), t.delivered), ([8], 8))

    def test_errors(self):
        """
        An offset never handed out, a bad kind and too many held
        acknowledgements are typed errors.
        """
        t = ConsumerTracker(maxPending=2)
        self.assertRaises(EngineUsageError, t.acknowledge, 10, ReceiptKind.DELIVERED, 1, 10)
        self.assertRaises(EngineUsageError, t.acknowledge, 0, ReceiptKind.DELIVERED, 1, 10)
        self.assertRaises(EngineUsageError, t.acknowledge, 1, ReceiptKind.SENT, 1, 10)
        t.acknowledge(3, ReceiptKind.DELIVERED, 1, 10)
        t.acknowledge(4, ReceiptKind.DELIVERED, 1, 10)
        e = self.assertRaises(LimitExceeded, t.acknowledge, 5, ReceiptKind.DELIVERED, 1, 10)
        self.assertEqual(e.limit, "maxPending")

    def test_refusedAppliesNothing(self):
        """
        An acknowledgement refused for the limit of one kind changes
        nothing: a READ refused for the held READs is not held as
        DELIVERED, and does not raise the position to the first kept
        offset.
        """
        t = ConsumerTracker(maxPending=2)
        t.acknowledge(1, ReceiptKind.DELIVERED, 1, 20)
        t.acknowledge(3, ReceiptKind.READ, 1, 20)
        t.acknowledge(4, ReceiptKind.READ, 1, 20)
        t.acknowledge(2, ReceiptKind.DELIVERED, 1, 20)
        self.assertEqual((t.delivered, t.read, t.held), (4, 0, 2))
        e = self.assertRaises(LimitExceeded, t.acknowledge, 6, ReceiptKind.READ, 1, 20)
        self.assertEqual(e.limit, "maxPending")
        self.assertEqual((t.delivered, t.read, t.held), (4, 0, 2))
        d, r = t.acknowledge(5, ReceiptKind.DELIVERED, 1, 20)
        self.assertEqual((list(d), t.delivered), ([5], 5))
        self.assertRaises(LimitExceeded, t.acknowledge, 7, ReceiptKind.READ, 3, 20)
        self.assertEqual((t.delivered, t.read), (5, 0))

    def test_limitPerKind(self):
        """
        C{maxPending} is per kind: as many DELIVERED as READ wait past
        their gaps at once (a READ waiting is waiting as both).
        """
        t = ConsumerTracker(maxPending=2)
        t.acknowledge(1, ReceiptKind.DELIVERED, 1, 20)
        t.acknowledge(3, ReceiptKind.READ, 1, 20)
        t.acknowledge(4, ReceiptKind.READ, 1, 20)
        t.acknowledge(2, ReceiptKind.DELIVERED, 1, 20)
        t.acknowledge(6, ReceiptKind.DELIVERED, 1, 20)
        t.acknowledge(7, ReceiptKind.DELIVERED, 1, 20)
        self.assertEqual(t.held, 4)
        self.assertRaises(LimitExceeded, t.acknowledge, 8, ReceiptKind.DELIVERED, 1, 20)

    @given(st.lists(st.tuples(st.integers(1, 30), st.sampled_from([ReceiptKind.DELIVERED,
                                                                    ReceiptKind.READ])),
                    max_size=80))
    @settings(max_examples=300, deadline=None)
    def test_model(self, acks):
        """
        Against a model: delivered (read) is the longest prefix 1..n all of
        whose offsets were acknowledged delivered-or-read (read); every
        offset is reported newly delivered exactly once, in order.
        """
        t = ConsumerTracker(maxPending=100)
        delivered, read = set(), set()
        reported = []
        for offset, kind in acks:
            d, r = t.acknowledge(offset, kind, 1, 31)
            reported.extend(d)
            delivered.add(offset)
            if kind == ReceiptKind.READ:
                read.add(offset)

            def prefix(s):
                n = 0
                while n + 1 in s:
                    n += 1
                return n
            self.assertEqual(t.delivered, prefix(delivered))
            self.assertEqual(t.read, prefix(read))
        self.assertEqual(reported, list(range(1, t.delivered + 1)))


class KnownDevicesTests(SynchronousTestCase):
    """
    An entity's known devices, least recently seen first, bounded.
    """

    def known(self, *devices):
        known = KnownDevices()
        for device in devices:
            known.add(device, ConsumerTracker())
        return known

    def test_order(self):
        """
        Registration and sightings make a device the most recently seen;
        sighting numbers only grow; loading orders by them, then by name.
        """
        known = self.known("a", "b", "c")
        self.assertEqual([t.seen for t in known.trackers()], [1, 2, 3])
        known.touch("a")
        self.assertEqual(known.devices(), ["b", "c", "a"])
        self.assertEqual(known.get("a").seen, 4)
        known.touch("a")
        self.assertEqual(known.get("a").seen, 4)
        loaded = KnownDevices()
        loaded.load([("z", ConsumerTracker(seen=5)), ("y", ConsumerTracker()),
                     ("x", ConsumerTracker())])
        self.assertEqual(loaded.devices(), ["x", "y", "z"])

    def test_toForget(self):
        """
        Nothing is forgotten below the limit; at it, the least recently
        seen offline device; every one online is L{LimitExceeded}.
        """
        known = self.known("a", "b", "c")
        self.assertEqual(known.toForget(4, lambda d: False), [])
        self.assertEqual(known.toForget(3, lambda d: d == "a"), ["b"])
        error = self.assertRaises(LimitExceeded, known.toForget, 3, lambda d: True, "alice")
        self.assertEqual(error.limit, "maxKnownDevices")
        self.assertIn("'alice' has 3 known devices (max_known_devices)", str(error))

    def test_overTheLimitShrinksInSteps(self):
        """
        An entity far over the limit (a lower setting, positions stored
        before it) forgets at most L{queuestate.FORGET_AT_ONCE} devices a
        registration, the least recently seen first.
        """
        known = self.known(*["d%03d" % (i,) for i in range(200)])
        chosen = known.toForget(10, lambda d: False)
        self.assertEqual(chosen, ["d%03d" % (i,) for i in range(queuestate.FORGET_AT_ONCE)])


class SerialChainsTests(SynchronousTestCase):

    def test_order(self):
        """
        Steps of one key run one after another, failures reach only their
        caller, other keys do not wait, and idle keys are forgotten.
        """
        from twisted.internet import defer
        from muxframe.engines.ordering import SerialChains
        chains = SerialChains()
        gate = defer.Deferred()
        ran = []
        first = chains.after("k", lambda: gate.addCallback(lambda _: ran.append(1)))
        second = chains.after("k", lambda: ran.append(2) or 1 / 0)
        third = chains.after("k", lambda: ran.append(3) or "three")
        other = chains.after("j", lambda: ran.append("j"))
        self.assertEqual(ran, ["j"])
        gate.callback(None)
        self.assertEqual(ran, ["j", 1, 2, 3])
        self.successResultOf(first)
        self.failureResultOf(second, ZeroDivisionError)
        self.assertEqual(self.successResultOf(third), "three")
        self.successResultOf(other)
        self.assertEqual(len(chains), 0)


class SubscriptionTests(SynchronousTestCase):

    def test_table(self):
        """
        The documented transitions, including sticky denial and errors for
        answers to nothing.
        """
        N, R, A, D = (SubscriptionState.NONE, SubscriptionState.REQUESTED, APPROVED,
                      SubscriptionState.DENIED)
        self.assertEqual(transition("request", N), (R, True))
        self.assertEqual(transition("request", D), (D, False))
        self.assertEqual(transition("approve", R), (A, True))
        self.assertEqual(transition("approve", D), (A, True))
        self.assertEqual(transition("deny", A), (D, True))
        self.assertEqual(transition("unsubscribe", A), (N, False))
        self.assertRaises(SubscriptionError, transition, "approve", N)
        self.assertRaises(SubscriptionError, transition, "deny", N)

    def test_book(self):
        """
        The book indexes both ways, refuses self-subscription and counts
        limits.
        """
        book = SubscriptionBook(maxSubscriptions=1)
        self.assertEqual(book.apply("request", "w", "t"),
                         (SubscriptionState.REQUESTED, True, True))
        book.apply("approve", "w", "t")
        self.assertEqual(book.watchers("t", APPROVED), {"w": APPROVED})
        self.assertEqual(book.subscriptions("w"), {"t": APPROVED})
        self.assertRaises(SubscriptionError, book.apply, "request", "w", "w")
        self.assertRaises(LimitExceeded, book.apply, "request", "w", "u")
        book.apply("unsubscribe", "w", "t")
        self.assertEqual((book.watchers("t"), book.subscriptions("w")), ({}, {}))


class PresenceTests(SynchronousTestCase):

    def setUp(self):
        self.book = SubscriptionBook()
        self.book.set("watcher", "alice", APPROVED)
        self.book.set("pending", "alice", SubscriptionState.REQUESTED)
        self.table = PresenceTable(self.book, deviceTimeout=10.0)

    def statuses(self, notices):
        return [(n.recipient, n.awareness.device, n.awareness.status) for n in notices]

    def test_aggregate(self):
        """
        The entity status is the most available of its devices'.
        """
        self.assertEqual(aggregateStatus([]), Status.OFFLINE)
        self.assertEqual(aggregateStatus([Status.DND, Status.AWAY]), Status.AWAY)
        self.assertEqual(aggregateStatus([Status.BUSY, Status.ONLINE]), Status.ONLINE)

    def test_devicesComeAndGo(self):
        """
        Only approved watchers hear of changes; the entity is offline when
        its last device goes; versions grow.
        """
        t = self.table
        self.assertEqual(self.statuses(t.connect("alice", "phone", "n1", 1000)),
                         [("watcher", "phone", Status.ONLINE)])
        self.assertEqual(self.statuses(t.connect("alice", "laptop", "n1", 1001, Status.AWAY)),
                         [("watcher", "laptop", Status.ONLINE)])
        self.assertEqual(t.connect("alice", "laptop", "n2", 1002, Status.AWAY), [])
        self.assertEqual(self.statuses(t.disconnect("alice", "phone", 1003)),
                         [("watcher", "phone", Status.AWAY)])
        notices = t.disconnect("alice", "laptop", 1004)
        self.assertEqual(self.statuses(notices), [("watcher", "laptop", Status.OFFLINE)])
        again = t.connect("alice", "phone", "n1", 1005)
        self.assertGreater(again[0].awareness.version, notices[0].awareness.version)
        self.assertEqual(t.presence("alice", 1005).devices[0].node, "n1")

    def test_missedPings(self):
        """
        A device not heard from within deviceTimeout goes offline on
        expire(); a heartbeat keeps it.
        """
        t = self.table
        t.connect("alice", "phone", "n1", 0)
        t.connect("alice", "laptop", "n1", 0)
        self.assertEqual(t.nextDeadline(), 10000)
        self.assertTrue(t.heartbeat("alice", "laptop", 9000))
        self.assertEqual(self.statuses(t.expire(10000)), [("watcher", "phone", Status.ONLINE)])
        self.assertEqual(t.expire(18999), [])
        self.assertEqual(self.statuses(t.expire(19000)), [("watcher", "laptop", Status.OFFLINE)])
        self.assertFalse(t.heartbeat("alice", "laptop", 19001))

    def test_visibilityAndLocation(self):
        """
        Hiding sends OFFLINE once and nothing while hidden; viewers see a
        hidden entity offline; an unshared location is never shown.
        """
        t = self.table
        t.connect("alice", "phone", "n1", 0)
        notices = t.setLocation("alice", "phone", 6.5, 3.4, LocationSharing.OFF, 1)
        self.assertEqual((notices[0].awareness.latitude, notices[0].awareness.locationSharing),
                         (0.0, LocationSharing.OFF))
        self.assertIsNone(t.presence("alice", 2, viewer="watcher").devices[0].location)
        self.assertIsNotNone(t.presence("alice", 2, viewer="alice").devices[0].location)
        shared = t.setLocation("alice", "phone", 6.5, 3.4, LocationSharing.ON, 3)
        self.assertEqual(shared[0].awareness.latitude, 6.5)
        self.assertEqual(self.statuses(t.setVisibility("alice", Visibility.HIDDEN, 4)),
                         [("watcher", "", Status.OFFLINE)])
        self.assertEqual(t.setStatus("alice", "phone", Status.BUSY, "", 5), [])
        self.assertEqual(t.presence("alice", 6, viewer="watcher").status, Status.OFFLINE)
        self.assertEqual(t.presence("alice", 6).status, Status.BUSY)
        self.assertEqual(self.statuses(t.setVisibility("alice", Visibility.VISIBLE, 7)),
                         [("watcher", "", Status.BUSY)])
        self.assertRaises(EngineUsageError, t.setLocation, "alice", "phone", 91, 0, 1, 8)

    def test_activities(self):
        """
        A directed activity goes to its target only; an undirected one to
        approved watchers; both carry the TTL and expire from queries.
        """
        t = self.table
        t.connect("alice", "phone", "n1", 0)
        [n] = t.setActivity("alice", "phone", Status.TYPING, 5, "bob", 100)
        self.assertEqual((n.kind, n.recipient, n.awareness.ttl, n.awareness.status),
                         (NoticeKind.ACTIVITY, "bob", 5, Status.TYPING))
        self.assertEqual([x.recipient for x in t.setActivity("alice", "phone", Status.RECORDING,
                                                              5, None, 200)], ["watcher"])
        self.assertEqual(len(t.presence("alice", 5199).activities), 1)
        self.assertEqual(t.presence("alice", 5200).activities, ())
        self.assertRaises(EngineUsageError, t.setActivity, "alice", "phone", Status.ONLINE, 5,
                          None, 0)
        self.assertRaises(EngineUsageError, t.setActivity, "alice", "phone", Status.TYPING, 0,
                          None, 0)
        self.assertRaises(EngineUsageError, t.setActivity, "alice", "tv", Status.TYPING, 5,
                          None, 0)

    def test_limits(self):
        """
        maxDevices per entity is a LimitExceeded naming it.
        """
        t = PresenceTable(self.book, maxDevices=1)
        t.connect("alice", "a", "n", 0)
        e = self.assertRaises(LimitExceeded, t.connect, "alice", "b", "n", 0)
        self.assertEqual(e.limit, "maxDevices")

    def test_presenceViewFiltersDirectedActivities(self):
        """
        A viewer sees activities directed at it or at nobody.
        """
        t = self.table
        t.connect("alice", "phone", "n1", 0)
        t.setActivity("alice", "phone", Status.TYPING, 5, "bob", 0)
        full = t.presence("alice", 1)
        self.assertEqual(len(presenceView(full, "bob").activities), 1)
        self.assertEqual(presenceView(full, "carol").activities, ())


class HistoryTests(SynchronousTestCase):

    def setUp(self):
        self.epochs = iter("e%d" % i for i in range(100))
        self.table = HistoryTable(lambda: next(self.epochs))
        self.options = HistoryOptions(size=3, ttl=10.0, maxRecover=2)

    def test_decision(self):
        """
        Every documented recovery outcome.
        """
        def reason(epoch, first, last, since, limit=None):
            e = self.assertRaises(RecoveryImpossible, recoveryDecision, epoch, first, last, since,
                                  limit)
            return e.reason
        self.assertEqual(reason("a", 1, 5, StreamPosition(5, "b")), RecoveryFailure.EPOCH_CHANGED)
        self.assertEqual(reason("a", 1, 5, StreamPosition(6, "a")), RecoveryFailure.FUTURE_OFFSET)
        self.assertEqual(reason("a", 3, 5, StreamPosition(1, "a")), RecoveryFailure.TRIMMED)
        self.assertEqual(reason("a", 1, 5, StreamPosition(1, "a"), 3), RecoveryFailure.TOO_MANY)
        self.assertEqual(recoveryDecision("a", 3, 5, StreamPosition(2, "a"), None), 2)
        self.assertEqual(recoveryDecision("a", 6, 5, StreamPosition(5, "a"), None), 5)

    def test_sizeTtlAndRecovery(self):
        """
        The last `size` publications are kept, none older than ttl;
        recovery returns what was missed or says why not.
        """
        t = self.table
        pubs = [t.add("chat", b"%d" % i, self.options, 1000 * i) for i in range(5)]
        self.assertEqual([p.offset for p in pubs], [1, 2, 3, 4, 5])
        self.assertEqual({p.epoch for p in pubs}, {"e0"})
        got = t.recover("chat", StreamPosition(3, "e0"), 4000)
        self.assertEqual([p.payload for p in got.publications], [b"3", b"4"])
        self.assertEqual(got.position, StreamPosition(5, "e0"))
        e = self.assertRaises(RecoveryImpossible, t.recover, "chat", StreamPosition(1, "e0"), 4000)
        self.assertEqual(e.reason, RecoveryFailure.TRIMMED)
        self.assertEqual([p.offset for p in t.recent("chat", 2, 4000).publications], [4, 5])
        # Everything expires 10 s after the last publication: a new epoch.
        self.assertEqual(t.position("chat", 15000), StreamPosition(0, "e1"))
        e = self.assertRaises(RecoveryImpossible, t.recover, "chat", StreamPosition(5, "e0"),
                              15000)
        self.assertEqual(e.reason, RecoveryFailure.EPOCH_CHANGED)

    def test_limits(self):
        """
        maxChannels and maxBytes are LimitExceeded; bad options are usage
        errors.
        """
        t = HistoryTable(lambda: "e", maxChannels=1, maxBytes=10)
        t.add("a", b"12345", self.options, 0)
        self.assertRaises(LimitExceeded, t.add, "b", b"1", self.options, 0)
        self.assertRaises(LimitExceeded, t.add, "a", b"123456", self.options, 0)
        self.assertRaises(EngineUsageError, t.add, "a", b"1", HistoryOptions(size=0), 0)


class SubjectTests(SynchronousTestCase):

    def test_matching(self):
        """
        '*' is one token, '>' one or more trailing tokens.
        """
        m = subjects.matches
        self.assertTrue(m("a.*.c", "a.b.c"))
        self.assertFalse(m("a.*.c", "a.b.d.c"))
        self.assertTrue(m("a.>", "a.b.c"))
        self.assertFalse(m("a.>", "a"))
        self.assertTrue(m("a.b", "a.b"))
        self.assertFalse(m("a.b", "a.b.c"))

    def test_validation(self):
        """
        Empty tokens, wildcards in subjects and misplaced '>' are refused.
        """
        for bad in ["a..b", "a.", "a.>.b", "a.b*"]:
            self.assertRaises(InvalidName, subjects.checkSubject, bad, True)
        self.assertRaises(InvalidName, subjects.checkSubject, "a.*")
        self.assertEqual(subjects.checkSubject("a.*.>", True), "a.*.>")

    @given(st.lists(st.sampled_from(["a", "b", "x?", "[y]", "*", ">"]), min_size=1, max_size=4),
           st.lists(st.sampled_from(["a", "b", "x?", "[y]", "c\\d"]), min_size=1, max_size=5))
    @settings(max_examples=300, deadline=None)
    def test_redisGlobIsSuperset(self, pattern, subject):
        """
        Whatever the pattern matches, its Redis glob matches too (checked
        with fnmatch-like semantics of Redis globs via a translation).
        """
        if ">" in pattern[:-1]:
            return
        pattern, subject = ".".join(pattern), ".".join(subject)
        if subjects.matches(pattern, subject):
            self.assertTrue(globMatch(subjects.redisGlob(pattern), subject))


def globMatch(glob, text):
    """
    Redis's glob semantics for '*', '?', '[...]' and backslash escapes,
    enough for the patterns redisGlob makes ('*' and escapes).
    """
    import re
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), text, re.S) is not None


from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine, invariant, rule, run_state_machine_as_test)


class PresenceMachine(RuleBasedStateMachine):
    """
    The presence table against a model: devices online with their last
    heard time; what the table says and whom it tells always agree with it.
    """

    ENTITIES = ["alice", "bob"]
    DEVICES = ["phone", "laptop", "tablet"]
    TIMEOUT = 10000

    def __init__(self):
        super().__init__()
        self.book = SubscriptionBook()
        self.book.set("watcher", "alice", APPROVED)
        self.book.set("pending", "bob", SubscriptionState.REQUESTED)
        self.table = PresenceTable(self.book, deviceTimeout=self.TIMEOUT / 1000)
        self.now = 0
        self.model = {e: {} for e in self.ENTITIES}
        self.versions = {e: 0 for e in self.ENTITIES}
        self.hidden = set()

    def check(self, notices):
        # Several devices expiring at once give one notice each; the last
        # one tells the state after all of them.
        for n in notices:
            assert n.recipient == "watcher" and n.entity == "alice", n
            assert n.awareness.version > self.versions[n.entity]
            self.versions[n.entity] = n.awareness.version
        if notices:
            expected = aggregateStatus(s for s, _ in self.model["alice"].values())
            if "alice" in self.hidden:
                expected = Status.OFFLINE
            assert notices[-1].awareness.status == expected, (notices, self.model)

    @rule(entity=st.sampled_from(ENTITIES), device=st.sampled_from(DEVICES),
          status=st.sampled_from([Status.ONLINE, Status.AWAY, Status.BUSY, Status.DND]))
    def connect(self, entity, device, status):
        self.model[entity][device] = (status, self.now)
        self.check(self.table.connect(entity, device, "n", self.now, status))

    @rule(entity=st.sampled_from(ENTITIES), device=st.sampled_from(DEVICES))
    def disconnect(self, entity, device):
        self.model[entity].pop(device, None)
        self.check(self.table.disconnect(entity, device, self.now))

    @rule(entity=st.sampled_from(ENTITIES), device=st.sampled_from(DEVICES))
    def heartbeat(self, entity, device):
        alive = self.table.heartbeat(entity, device, self.now)
        assert alive == (device in self.model[entity])
        if alive:
            self.model[entity][device] = (self.model[entity][device][0], self.now)

    @rule(hide=st.booleans())
    def visibility(self, hide):
        if hide:
            self.hidden.add("alice")
        else:
            self.hidden.discard("alice")
        self.check(self.table.setVisibility(
            "alice", Visibility.HIDDEN if hide else Visibility.VISIBLE, self.now))

    @rule(ms=st.integers(0, 15000))
    def advance(self, ms):
        self.now += ms
        for entity, devices in self.model.items():
            for device, (status, seen) in list(devices.items()):
                if seen + self.TIMEOUT <= self.now:
                    del devices[device]
        self.check(self.table.expire(self.now))

    @invariant()
    def agrees(self):
        for entity in self.ENTITIES:
            p = self.table.presence(entity, self.now)
            assert sorted(d.device for d in p.devices) == sorted(self.model[entity])
            assert p.status == aggregateStatus(s for s, _ in self.model[entity].values())


class PresenceMachineTests(SynchronousTestCase):

    def test_againstModel(self):
        """
        Random sequences of connects, disconnects, heartbeats, hiding and
        time passing keep the table and its notices in line with the model.
        """
        run_state_machine_as_test(PresenceMachine, settings=settings(
            max_examples=150, stateful_step_count=40, deadline=None))
