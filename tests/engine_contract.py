"""
The engine contract suite: what every engine (embedded, Redis) must do, as
seen through the L{muxframe.engines.interfaces} only.

A test case mixes in L{EngineContract} and provides C{makeEngine(clock,
**settings)}, returning a Deferred of a started engine (stopped by the
mixin at cleanup), and C{restartEngine(engine, clock)} (a new engine on the
same storage).  L{TwoNodeContract} adds the cross-node checks for engines
whose nodes share storage (Redis); it needs C{makeEngine} to give a new
node on the same storage each call.

Time comes from a L{Clock} handed to the engine; I/O is real, so
cross-node deliveries are awaited with L{eventually} (bounded).
"""

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock

from muxframe.engines.errors import (
    EngineStopped, EngineUsageError, InvalidName, LimitExceeded, RecoveryFailure,
    RecoveryImpossible, SubscriptionError)
from muxframe.engines.interfaces import (
    IBroker, IEngine, IHistoryStore, IPresenceManager, IQueueStore)
from muxframe.engines.model import (
    Address, DeliveryKind, HistoryOptions, NoticeKind, QueueMessage, QueueRetention,
    ReceiptKind, RecordKind, Status, StreamPosition, SubscriptionState, Visibility)

START = 1800000000.0


@defer.inlineCallbacks
def eventually(predicate, timeout=10.0, what="condition"):
    """
    Wait (real time, polling every 10 ms) until C{predicate()} is true;
    fail after C{timeout} seconds.
    """
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        yield task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("timed out waiting for %s" % (what,))


def settle():
    """
    Let in-flight cross-node messages arrive (a short real-time pause,
    used only before asserting that something did NOT arrive).
    """
    return task.deferLater(reactor, 0.2, lambda: None)


class EngineContract:
    """
    The checks every engine passes.
    """

    retention = QueueRetention(maxAge=None, maxMessages=None, deleteAcknowledged=True)

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)

    @defer.inlineCallbacks
    def engine(self, **settings):
        settings.setdefault("retention", self.retention)
        engine = yield self.makeEngine(self.clock, **settings)
        self.addCleanup(engine.stop)
        return engine

    def message(self, i, sender=("bob", "phone"), receipts=True):
        return QueueMessage("m%d" % i, b"payload %d" % i, Address(*sender), receipts)

    @defer.inlineCallbacks
    def receiptsHeld(self, engine, count, size):
        """
        C{count} records of C{size} bytes for alice, every other one asking
        bob for receipts, acknowledged by her phone (DELIVERED) but the
        first: acknowledging offset 1 then covers them all.
        """
        for i in range(count):
            yield engine.queues.append("alice", QueueMessage(
                "m%d" % i, b"x" * size, Address("bob", "phone"), i % 2 == 0))
        yield engine.queues.position("alice", "phone")
        for offset in range(2, count + 1):
            yield engine.queues.acknowledge("alice", "phone", offset,
                                            ReceiptKind.DELIVERED)

    @defer.inlineCallbacks
    def coverReceipts(self, engine, count):
        """
        Acknowledge offset 1 of L{receiptsHeld}'s records, under
        tracemalloc; the peak memory it took.
        """
        import tracemalloc
        tracemalloc.start()
        try:
            p = yield engine.queues.acknowledge("alice", "phone", 1,
                                                ReceiptKind.DELIVERED)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertEqual(p.delivered, count)
        return peak

    @defer.inlineCallbacks
    def assertReceiptsSent(self, engine, count):
        """
        Bob got one receipt for each of L{receiptsHeld}'s records that
        asked for one, in offset order.
        """
        receipts = yield engine.queues.fetch("bob", 1, 1000)
        self.assertEqual([(r.receipt.offset, r.messageId, r.receipt.entity,
                           r.receipt.device) for r in receipts],
                         [(o, "m%d" % (o - 1), "alice", "phone")
                          for o in range(1, count + 1, 2)])

    # Interfaces --------------------------------------------------------

    @defer.inlineCallbacks
    def test_providesInterfaces(self):
        """
        The engine and its parts provide the contract's interfaces.
        """
        e = yield self.engine()
        self.assertTrue(IEngine.providedBy(e))
        self.assertTrue(IBroker.providedBy(e.broker))
        self.assertTrue(IPresenceManager.providedBy(e.presence))
        self.assertTrue(IQueueStore.providedBy(e.queues))
        self.assertTrue(IHistoryStore.providedBy(e.history))

    @defer.inlineCallbacks
    def test_stopped(self):
        """
        After stop(), queue and presence operations fail with EngineStopped;
        stopping twice is harmless.
        """
        e = yield self.engine()
        yield e.stop()
        yield e.stop()
        yield self.assertFailure(e.queues.append("alice", self.message(1)), EngineStopped)
        yield self.assertFailure(e.presence.connect("alice", "phone"), EngineStopped)

    # Queues ------------------------------------------------------------

    @defer.inlineCallbacks
    def test_appendFetchInOrder(self):
        """
        Appends get contiguous offsets from 1; fetch returns them in order
        with what was appended; limit and fromOffset are honoured.
        """
        e = yield self.engine()
        results = yield defer.gatherResults([e.queues.append("alice", self.message(i))
                                             for i in range(20)])
        self.assertEqual([r.offset for r in results], list(range(1, 21)))
        self.assertFalse(any(r.duplicate for r in results))
        records = yield e.queues.fetch("alice", 1, limit=100)
        self.assertEqual([r.offset for r in records], list(range(1, 21)))
        self.assertEqual(records[3].payload, b"payload 3")
        self.assertEqual(records[3].messageId, "m3")
        self.assertEqual(records[3].sender, Address("bob", "phone"))
        self.assertEqual(records[3].kind, RecordKind.MESSAGE)
        self.assertEqual(records[3].timestamp, int(START * 1000))
        part = yield e.queues.fetch("alice", 15, limit=3)
        self.assertEqual([r.offset for r in part], [15, 16, 17])
        none = yield e.queues.fetch("nobody", 1)
        self.assertEqual(none, [])

    @defer.inlineCallbacks
    def test_appendMany(self):
        """
        appendMany stores several messages in order with one
        acknowledgement, duplicates included; a bad item fails it.
        """
        e = yield self.engine()
        yield e.queues.append("alice", self.message(1))
        results = yield e.queues.appendMany([("alice", self.message(2)),
                                             ("bob", self.message(3, sender=("alice", "p"))),
                                             ("alice", self.message(1)),
                                             ("alice", self.message(4))])
        self.assertEqual([(r.offset, r.duplicate) for r in results],
                         [(2, False), (1, False), (1, True), (3, False)])
        records = yield e.queues.fetch("alice", 1)
        self.assertEqual([r.messageId for r in records], ["m1", "m2", "m4"])
        yield self.assertFailure(e.queues.appendMany([("alice", self.message(5)),
                                                      ("", self.message(6))]), InvalidName)
        empty = yield e.queues.appendMany([])
        self.assertEqual(empty, [])

    @defer.inlineCallbacks
    def test_fetchMaxBytes(self):
        """
        maxBytes cuts a fetch after the record that reaches it, but always
        returns at least one record.
        """
        e = yield self.engine()
        for i in range(5):
            yield e.queues.append("alice", QueueMessage("b%d" % i, b"x" * 100))
        records = yield e.queues.fetch("alice", 1, maxBytes=250)
        self.assertEqual(len(records), 2)
        records = yield e.queues.fetch("alice", 1, maxBytes=1)
        self.assertEqual(len(records), 1)

    @defer.inlineCallbacks
    def test_dedup(self):
        """
        A resend with the same sender and message id stores nothing and
        answers the original offset; another device's same id is new.
        """
        e = yield self.engine()
        first = yield e.queues.append("alice", self.message(1))
        again = yield e.queues.append("alice", self.message(1))
        other = yield e.queues.append("alice", self.message(1, sender=("bob", "laptop")))
        self.assertEqual((first.offset, first.duplicate), (1, False))
        self.assertEqual((again.offset, again.duplicate), (1, True))
        self.assertEqual((other.offset, other.duplicate), (2, False))
        records = yield e.queues.fetch("alice", 1)
        self.assertEqual(len(records), 2)

    @defer.inlineCallbacks
    def test_concurrentDuplicates(self):
        """
        Duplicates sent before the original is acknowledged get its offset
        too.
        """
        e = yield self.engine()
        results = yield defer.gatherResults([e.queues.append("alice", self.message(7))
                                             for _ in range(5)])
        self.assertEqual({r.offset for r in results}, {1})
        self.assertEqual(sorted(r.duplicate for r in results), [False] + [True] * 4)

    @defer.inlineCallbacks
    def test_positionsAndAcknowledgements(self):
        """
        A new device starts at the oldest record; acknowledgements advance
        contiguously, a gap holds later ones; READ implies DELIVERED.
        """
        e = yield self.engine()
        for i in range(5):
            yield e.queues.append("alice", self.message(i))
        p = yield e.queues.position("alice", "phone")
        self.assertEqual((p.delivered, p.read, p.firstOffset, p.nextOffset, p.pending),
                         (0, 0, 1, 6, 5))
        p = yield e.queues.acknowledge("alice", "phone", 2, ReceiptKind.DELIVERED)
        self.assertEqual(p.delivered, 0)
        p = yield e.queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)
        self.assertEqual(p.delivered, 2)
        p = yield e.queues.acknowledge("alice", "phone", 3, ReceiptKind.READ)
        self.assertEqual((p.delivered, p.read), (3, 0))
        yield e.queues.acknowledge("alice", "phone", 1, ReceiptKind.READ)
        p = yield e.queues.acknowledge("alice", "phone", 2, ReceiptKind.READ)
        self.assertEqual((p.delivered, p.read), (3, 3))
        again = yield e.queues.position("alice", "phone")
        self.assertEqual((again.delivered, again.read), (3, 3))
        yield self.assertFailure(
            e.queues.acknowledge("alice", "phone", 99, ReceiptKind.DELIVERED), EngineUsageError)

    @defer.inlineCallbacks
    def test_receiptsOncePerEntity(self):
        """
        Delivered and read receipts go to the sender's queue as RECEIPT
        records, once per recipient entity and kind whatever the number
        of its devices; a message sent without wantReceipts makes none.
        """
        e = yield self.engine()
        yield e.queues.append("alice", self.message(1))
        yield e.queues.append("alice", self.message(2, receipts=False))
        for device in ("phone", "laptop"):
            yield e.queues.position("alice", device)
            yield e.queues.acknowledge("alice", device, 2, ReceiptKind.DELIVERED)
            yield e.queues.acknowledge("alice", device, 1, ReceiptKind.DELIVERED)
        yield e.queues.acknowledge("alice", "phone", 1, ReceiptKind.READ)
        receipts = yield e.queues.fetch("bob", 1)
        self.assertEqual([r.kind for r in receipts], [RecordKind.RECEIPT] * 2)
        kinds = [(r.receipt.kind, r.receipt.entity, r.receipt.offset, r.receipt.messageId)
                 for r in receipts]
        self.assertEqual(kinds, [(ReceiptKind.DELIVERED, "alice", 1, "m1"),
                                 (ReceiptKind.READ, "alice", 1, "m1")])
        self.assertIn(receipts[0].receipt.device, ("phone", "laptop"))
        self.assertEqual(receipts[0].sender.entity, "alice")

    @defer.inlineCallbacks
    def test_concurrentAcknowledgements(self):
        """
        Acknowledgements sent without waiting, in any order, end at the
        right position with one receipt per record.
        """
        e = yield self.engine()
        for i in range(20):
            yield e.queues.append("alice", self.message(i))
        yield e.queues.position("alice", "phone")
        order = [7, 3, 1, 2, 20, 4, 5, 6] + list(range(8, 20))
        yield defer.gatherResults([e.queues.acknowledge("alice", "phone", o,
                                                        ReceiptKind.DELIVERED) for o in order])
        p = yield e.queues.position("alice", "phone")
        self.assertEqual(p.delivered, 20)
        receipts = yield e.queues.fetch("bob", 1)
        self.assertEqual(sorted(r.receipt.offset for r in receipts), list(range(1, 21)))

    @defer.inlineCallbacks
    def test_retentionAcknowledged(self):
        """
        Records every known device acknowledged are dropped; a device that
        lags holds them; forgetting it releases them; a fetch from a dropped
        offset starts at the first kept.
        """
        e = yield self.engine()
        for i in range(6):
            yield e.queues.append("alice", self.message(i, receipts=False))
        yield e.queues.position("alice", "phone")
        yield e.queues.position("alice", "laptop")
        yield e.queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)
        for o in range(1, 5):
            yield e.queues.acknowledge("alice", "phone", o, ReceiptKind.DELIVERED)
        yield e.queues.acknowledge("alice", "laptop", 1, ReceiptKind.DELIVERED)
        yield e.queues.acknowledge("alice", "laptop", 2, ReceiptKind.DELIVERED)
        yield e.queues.applyRetention()
        p = yield e.queues.position("alice", "phone")
        self.assertEqual(p.firstOffset, 3)
        records = yield e.queues.fetch("alice", 1)
        self.assertEqual(records[0].offset, 3)
        yield e.queues.forget("alice", "laptop")
        yield e.queues.applyRetention()
        p = yield e.queues.position("alice", "phone")
        self.assertEqual((p.firstOffset, p.nextOffset), (5, 7))
        late = yield e.queues.position("alice", "tablet")
        self.assertEqual(late.delivered, 4)

    @defer.inlineCallbacks
    def test_retentionAgeAndCount(self):
        """
        maxMessages keeps the newest; maxAge drops records older than it,
        acknowledged or not; offsets go on from where they were in a queue
        that ever had a device (see L{test_queueLimit} for one that did
        not).
        """
        e = yield self.engine(retention=QueueRetention(maxAge=60.0, maxMessages=3,
                                                        deleteAcknowledged=False))
        yield e.queues.position("alice", "phone")
        yield e.queues.forget("alice", "phone")
        for i in range(5):
            yield e.queues.append("alice", self.message(i))
        yield e.queues.applyRetention()
        records = yield e.queues.fetch("alice", 1)
        self.assertEqual([r.offset for r in records], [3, 4, 5])
        self.clock.advance(30)
        yield e.queues.append("alice", self.message(10))
        self.clock.advance(31)
        yield e.queues.applyRetention()
        records = yield e.queues.fetch("alice", 1)
        self.assertEqual([r.offset for r in records], [6])
        self.clock.advance(61)
        yield e.queues.applyRetention()
        records = yield e.queues.fetch("alice", 1)
        self.assertEqual(records, [])
        appended = yield e.queues.append("alice", self.message(11))
        self.assertEqual(appended.offset, 7)

    @defer.inlineCallbacks
    def test_watch(self):
        """
        A queue watch hears of durable appends with the last offset, until
        cancelled.
        """
        e = yield self.engine()
        heard = []
        watch = e.queues.watch("alice", lambda entity, offset: heard.append((entity, offset)))
        yield e.queues.append("alice", self.message(1))
        yield e.queues.append("carol", self.message(2))
        yield eventually(lambda: heard, what="the watch")
        self.assertEqual(heard, [("alice", 1)])
        watch.cancel()
        watch.cancel()
        yield e.queues.append("alice", self.message(3))
        yield settle()
        self.assertEqual(heard, [("alice", 1)])

    @defer.inlineCallbacks
    def test_badNames(self):
        """
        Bad entity names and message ids are InvalidName, nothing stored.
        """
        e = yield self.engine()
        yield self.assertFailure(e.queues.append("", self.message(1)), InvalidName)
        yield self.assertFailure(e.queues.append("a\x00b", self.message(1)), InvalidName)
        yield self.assertFailure(e.queues.append("alice", QueueMessage("", b"")), InvalidName)
        yield self.assertFailure(e.queues.append("alice", "not a message"), EngineUsageError)
        records = yield e.queues.fetch("alice", 1)
        self.assertEqual(records, [])

    @defer.inlineCallbacks
    def test_queuesSurviveRestart(self):
        """
        Records, positions and dedup survive a restart of the engine.
        """
        e = yield self.engine()
        for i in range(3):
            yield e.queues.append("alice", self.message(i))
        yield e.queues.position("alice", "phone")
        yield e.queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)
        e2 = yield self.restartEngine(e, self.clock)
        self.addCleanup(e2.stop)
        p = yield e2.queues.position("alice", "phone")
        self.assertEqual((p.delivered, p.nextOffset), (1, 4))
        again = yield e2.queues.append("alice", self.message(2))
        self.assertEqual((again.offset, again.duplicate), (3, True))
        records = yield e2.queues.fetch("alice", 2)
        self.assertEqual([r.messageId for r in records], ["m1", "m2"])

    # Known devices -----------------------------------------------------

    @defer.inlineCallbacks
    def test_knownDevicesBounded(self):
        """
        An entity's queue knows at most C{maxKnownDevices} devices: one
        more registering forgets the least recently seen (by
        C{position()} or C{acknowledge()}), so a client binding with a
        fresh device id each time keeps the count at the limit; a
        forgotten device coming back starts afresh at the oldest kept
        record.
        """
        e = yield self.engine(maxKnownDevices=3)
        for i in range(5):
            yield e.queues.append("alice", self.message(i, receipts=False))
        for device in ("phone", "laptop", "tablet"):
            yield e.queues.position("alice", device)
        yield e.queues.acknowledge("alice", "laptop", 1, ReceiptKind.DELIVERED)
        yield e.queues.acknowledge("alice", "laptop", 2, ReceiptKind.DELIVERED)
        yield e.queues.position("alice", "phone")
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, ["tablet", "laptop", "phone"])
        yield e.queues.position("alice", "desk")
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, ["laptop", "phone", "desk"])
        for i in range(50):
            p = yield e.queues.position("alice", "fresh-%d" % (i,))
            self.assertEqual((p.delivered, p.firstOffset, p.nextOffset), (0, 1, 6))
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, ["fresh-47", "fresh-48", "fresh-49"])
        back = yield e.queues.position("alice", "laptop")
        self.assertEqual(back.delivered, 0)
        other = yield e.queues.knownDevices("bob")
        self.assertEqual(other, [])

    @defer.inlineCallbacks
    def test_forgottenDeviceReleasesRetention(self):
        """
        A device forgotten to make room no longer holds retention back
        (C{deleteAcknowledged}): the records only it lacked go once the
        devices still known acknowledged them.
        """
        e = yield self.engine(maxKnownDevices=2)
        for i in range(4):
            yield e.queues.append("alice", self.message(i, receipts=False))
        yield e.queues.position("alice", "laptop")
        yield e.queues.position("alice", "phone")
        for offset in range(1, 5):
            yield e.queues.acknowledge("alice", "phone", offset, ReceiptKind.DELIVERED)
        yield e.queues.applyRetention()
        p = yield e.queues.position("alice", "phone")
        self.assertEqual(p.firstOffset, 1)
        yield e.queues.position("alice", "desk")
        for offset in range(1, 5):
            yield e.queues.acknowledge("alice", "desk", offset, ReceiptKind.DELIVERED)
        yield e.queues.applyRetention()
        p = yield e.queues.position("alice", "phone")
        self.assertEqual((p.firstOffset, p.nextOffset), (5, 5))
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, ["desk", "phone"])

    @defer.inlineCallbacks
    def test_onlineDevicesNeverForgotten(self):
        """
        A device online (in presence) is never forgotten to make room: the
        least recently seen offline device is; when every known device is
        online, registering one more fails with L{LimitExceeded} naming
        C{maxKnownDevices} and changes nothing.
        """
        e = yield self.engine(maxKnownDevices=2)
        yield e.presence.connect("alice", "phone")
        yield e.queues.position("alice", "phone")
        yield e.queues.position("alice", "laptop")
        yield e.queues.position("alice", "desk")
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, ["phone", "desk"])
        yield e.presence.connect("alice", "desk")
        yield e.presence.connect("alice", "tablet")
        failure = yield self.assertFailure(e.queues.position("alice", "tablet"),
                                           LimitExceeded)
        self.assertEqual(failure.limit, "maxKnownDevices")
        yield e.queues.append("alice", self.message(1))
        failure = yield self.assertFailure(
            e.queues.acknowledge("alice", "tablet", 1, ReceiptKind.DELIVERED), LimitExceeded)
        self.assertEqual(failure.limit, "maxKnownDevices")
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, ["phone", "desk"])
        yield e.presence.disconnect("alice", "phone")
        yield e.queues.position("alice", "tablet")
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, ["desk", "tablet"])

    @defer.inlineCallbacks
    def test_forgottenDuringAcknowledgement(self):
        """
        A device forgotten while an acknowledgement of it is in progress
        stays forgotten: the acknowledgement's receipts go out, but its
        position is not stored again (not even on disk: a restart does not
        bring it back).
        """
        e = yield self.engine()
        for i in range(3):
            yield e.queues.append("alice", self.message(i))
        yield e.queues.position("alice", "phone")
        acked = e.queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)
        yield e.queues.forget("alice", "phone")
        p = yield acked
        self.assertEqual(p.delivered, 1)
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, [])
        e = yield self.restartEngine(e, self.clock)
        self.addCleanup(e.stop)
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, [])
        receipts = yield e.queues.fetch("bob", 1)
        self.assertEqual([r.receipt.offset for r in receipts], [1])
        again = yield e.queues.position("alice", "phone")
        self.assertEqual(again.delivered, 0)

    @defer.inlineCallbacks
    def test_knownDevicesSurviveRestart(self):
        """
        Which device was seen least recently survives a restart: the one
        forgotten after it is the same as before.
        """
        e = yield self.engine(maxKnownDevices=3)
        yield e.queues.append("alice", self.message(1))
        for device in ("a", "b", "c"):
            yield e.queues.position("alice", device)
        yield e.queues.acknowledge("alice", "a", 1, ReceiptKind.DELIVERED)
        e2 = yield self.restartEngine(e, self.clock)
        self.addCleanup(e2.stop)
        known = yield e2.queues.knownDevices("alice")
        self.assertEqual(known, ["b", "c", "a"])
        yield e2.queues.position("alice", "d")
        known = yield e2.queues.knownDevices("alice")
        self.assertEqual(known, ["c", "a", "d"])
        p = yield e2.queues.position("alice", "a")
        self.assertEqual(p.delivered, 1)

    # Queues kept -------------------------------------------------------

    @defer.inlineCallbacks
    def test_queueLimit(self):
        """
        At most C{maxQueues} queues are kept: a message to an entity without
        one is L{LimitExceeded} naming C{maxQueues} and stores nothing (in an
        C{appendMany}, nothing of the batch); queues kept take messages
        still; a device registering and receipts are never refused (and
        count).  A queue keeping no record and no device is no longer kept
        after a retention pass (C{maxAge} here), which makes room.
        """
        e = yield self.engine(maxQueues=3, retention=QueueRetention(
            maxAge=60.0, maxMessages=None, deleteAcknowledged=True))
        for entity in ("q1", "q2"):
            yield e.queues.append(entity, self.message(1, receipts=False))
        yield e.queues.position("alice", "phone")
        failure = yield self.assertFailure(e.queues.append("q4", self.message(1)),
                                           LimitExceeded)
        self.assertEqual(failure.limit, "maxQueues")
        self.assertIn("max_queues", str(failure))
        failure = yield self.assertFailure(e.queues.appendMany(
            [("q1", self.message(2)), ("q5", self.message(2))]), LimitExceeded)
        self.assertEqual(failure.limit, "maxQueues")
        records = yield e.queues.fetch("q1", 1)
        self.assertEqual([r.messageId for r in records], ["m1"])
        records = yield e.queues.fetch("q4", 1)
        self.assertEqual(records, [])
        appended = yield e.queues.append("q1", self.message(3))
        self.assertEqual(appended.offset, 2)
        yield e.queues.append("alice", self.message(1))
        yield e.queues.position("carol", "laptop")
        p = yield e.queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)
        self.assertEqual(p.delivered, 1)
        receipts = yield e.queues.fetch("bob", 1)
        self.assertEqual([r.receipt.offset for r in receipts], [1])
        yield self.assertFailure(e.queues.append("q4", self.message(1)), LimitExceeded)
        self.clock.advance(61)
        yield self.forgetIdleQueues(e)
        yield e.queues.append("q4", self.message(1))
        yield self.assertFailure(e.queues.append("q6", self.message(1)), LimitExceeded)

    @defer.inlineCallbacks
    def test_queueLimitRefusesGroupAlone(self):
        """
        With C{groups}, an C{appendMany} group meeting C{maxQueues} is
        refused alone: each of its items is the L{LimitExceeded}, nothing of
        it is stored (not even the new queue of its that had room); the
        other groups are stored, in order, a later one taking that room.
        Without C{groups}, the same batch is refused whole.
        """
        e = yield self.engine(maxQueues=3)
        yield e.queues.append("q1", self.message(1))
        items = [("q1", self.message(2)), ("q2", self.message(2)),
                 ("q3", self.message(3)), ("q4", self.message(3)),
                 ("q1", self.message(4)), ("q3", self.message(4))]
        failure = yield self.assertFailure(e.queues.appendMany(items), LimitExceeded)
        self.assertEqual(failure.limit, "maxQueues")
        records = yield e.queues.fetch("q1", 1)
        self.assertEqual([r.messageId for r in records], ["m1"])
        results = yield e.queues.appendMany(items, groups=[(0, 1), (2, 3), (4, 5)])
        self.assertEqual([(r.offset, r.duplicate) for r in results[:2] + results[4:]],
                         [(2, False), (1, False), (3, False), (1, False)])
        self.assertEqual([(type(r), r.limit) for r in results[2:4]],
                         [(LimitExceeded, "maxQueues")] * 2)
        self.assertIn("'q4'", str(results[2]))
        records = yield e.queues.fetch("q1", 1)
        self.assertEqual([r.messageId for r in records], ["m1", "m2", "m4"])
        records = yield e.queues.fetch("q3", 1)
        self.assertEqual([r.messageId for r in records], ["m4"])
        records = yield e.queues.fetch("q4", 1)
        self.assertEqual(records, [])

    @defer.inlineCallbacks
    def test_queueLimitKeepsEachCallersOrder(self):
        """
        Through the XTMP server's L{TurnBatch}: a caller's messages are
        stored in the order it added them, over batches appended one after
        the other without waiting, when the first also held another caller's
        message refused for C{maxQueues} (it fails alone; nothing is
        appended again after the later batch).
        """
        from muxframe.server.turnbatch import TurnBatch
        e = yield self.engine(maxQueues=2)
        yield e.queues.append("alice", self.message(0))
        yield e.queues.append("bob", self.message(0))
        batch = TurnBatch(self.clock, lambda: e.queues.appendMany)
        outcomes = []
        finished = defer.Deferred()

        def outcome(result, tag):
            outcomes.append((tag, result))
            if len(outcomes) == 3:
                finished.callback(None)

        def add(entity, messageId, tag):
            message = QueueMessage(messageId, b"x", Address("bob", "laptop"), False)
            batch.add([(entity, message)], lambda r, tag: outcome(r[0].offset, tag),
                      lambda f, tag: outcome(f.value.limit, tag), (tag,))
        add("alice", "M1", "first")
        add("dave", "Z", "refused")
        batch.flush()
        add("alice", "M2", "second")
        batch.flush()
        yield finished
        self.assertEqual(sorted(outcomes),
                         [("first", 2), ("refused", "maxQueues"), ("second", 3)])
        records = yield e.queues.fetch("alice", 2)
        self.assertEqual([r.messageId for r in records], ["M1", "M2"])

    def forgetIdleQueues(self, engine):
        """
        A retention pass, after which the queues keeping no record and no
        device are no longer kept (the embedded engine needs the journal
        segments holding their records gone too: its tests roll them).
        """
        return engine.queues.applyRetention()

    # Presence ----------------------------------------------------------

    @defer.inlineCallbacks
    def approvedWatcher(self, e, watcher="watcher", target="alice"):
        heard = []
        e.presence.watch(watcher, heard.append)
        yield e.presence.requestSubscription(watcher, target)
        yield e.presence.answerSubscription(target, watcher, True)
        yield eventually(lambda: any(n.kind == NoticeKind.AWARENESS for n in heard))
        del heard[:]
        return heard

    @defer.inlineCallbacks
    def test_disconnectOnBehalfOfANode(self):
        """
        A disconnect naming a node other than the device's changes nothing.
        """
        e = yield self.engine()
        yield e.presence.connect("alice", "phone")
        yield e.presence.disconnect("alice", "phone", node="elsewhere")
        p = yield e.presence.presence("alice")
        self.assertEqual([d.device for d in p.devices], ["phone"])
        yield e.presence.disconnect("alice", "phone", node=e.nodeId)
        p = yield e.presence.presence("alice")
        self.assertEqual(p.devices, ())

    @defer.inlineCallbacks
    def test_devicesComeAndGo(self):
        """
        An approved watcher sees two devices of an entity come and go and
        the entity go offline with the last one.
        """
        e = yield self.engine()
        heard = yield self.approvedWatcher(e)
        yield e.presence.connect("alice", "phone")
        yield e.presence.connect("alice", "laptop", Status.AWAY)
        yield eventually(lambda: len(heard) == 2)
        p = yield e.presence.presence("alice")
        self.assertEqual((p.status, sorted(d.device for d in p.devices)),
                         (Status.ONLINE, ["laptop", "phone"]))
        yield e.presence.disconnect("alice", "phone")
        yield eventually(lambda: len(heard) == 3)
        self.assertEqual(heard[-1].awareness.status, Status.AWAY)
        yield e.presence.disconnect("alice", "laptop")
        yield eventually(lambda: len(heard) == 4)
        self.assertEqual([(n.awareness.device, n.awareness.status) for n in heard],
                         [("phone", Status.ONLINE), ("laptop", Status.ONLINE),
                          ("phone", Status.AWAY), ("laptop", Status.OFFLINE)])
        versions = [n.awareness.version for n in heard]
        self.assertEqual(versions, sorted(set(versions)))
        p = yield e.presence.presence("alice")
        self.assertEqual((p.status, p.devices), (Status.OFFLINE, ()))

    @defer.inlineCallbacks
    def test_approvalGated(self):
        """
        A watcher hears nothing before approval; the target gets the
        request; the watcher gets the answer and the current awareness;
        a denial is sticky and stops notices.
        """
        e = yield self.engine()
        yield e.presence.connect("alice", "phone")
        watcherHeard, targetHeard = [], []
        e.presence.watch("watcher", watcherHeard.append)
        e.presence.watch("alice", targetHeard.append)
        state = yield e.presence.requestSubscription("watcher", "alice")
        self.assertEqual(state, SubscriptionState.REQUESTED)
        yield eventually(lambda: targetHeard)
        self.assertEqual((targetHeard[0].kind, targetHeard[0].entity),
                         (NoticeKind.SUBSCRIPTION_REQUEST, "watcher"))
        yield e.presence.setStatus("alice", "phone", Status.BUSY)
        yield settle()
        self.assertEqual(watcherHeard, [])
        state = yield e.presence.answerSubscription("alice", "watcher", True)
        self.assertEqual(state, SubscriptionState.APPROVED)
        yield eventually(lambda: len(watcherHeard) == 2)
        self.assertEqual(watcherHeard[0].kind, NoticeKind.SUBSCRIPTION_ANSWER)
        self.assertEqual(watcherHeard[0].subscription, SubscriptionState.APPROVED)
        self.assertEqual((watcherHeard[1].kind, watcherHeard[1].awareness.status),
                         (NoticeKind.AWARENESS, Status.BUSY))
        watchers = yield e.presence.watchers("alice")
        self.assertEqual(watchers, {"watcher": SubscriptionState.APPROVED})
        subs = yield e.presence.subscriptions("watcher")
        self.assertEqual(subs, {"alice": SubscriptionState.APPROVED})
        yield e.presence.answerSubscription("alice", "watcher", False)
        yield eventually(lambda: len(watcherHeard) == 3)
        yield e.presence.setStatus("alice", "phone", Status.ONLINE)
        again = yield e.presence.requestSubscription("watcher", "alice")
        self.assertEqual(again, SubscriptionState.DENIED)
        yield settle()
        self.assertEqual(len(watcherHeard), 3)
        self.assertEqual(len(targetHeard), 1)
        yield self.assertFailure(e.presence.answerSubscription("alice", "nobody", True),
                                 SubscriptionError)
        yield self.assertFailure(e.presence.requestSubscription("alice", "alice"),
                                 SubscriptionError)
        yield e.presence.unsubscribe("watcher", "alice")
        state = yield e.presence.subscription("watcher", "alice")
        self.assertEqual(state, SubscriptionState.NONE)

    @defer.inlineCallbacks
    def test_subscriptionsSurviveRestart(self):
        """
        Subscription states and visibility are durable.
        """
        e = yield self.engine()
        yield e.presence.requestSubscription("watcher", "alice")
        yield e.presence.answerSubscription("alice", "watcher", True)
        yield e.presence.requestSubscription("other", "alice")
        yield e.presence.setVisibility("alice", Visibility.HIDDEN)
        e2 = yield self.restartEngine(e, self.clock)
        self.addCleanup(e2.stop)
        watchers = yield e2.presence.watchers("alice")
        self.assertEqual(watchers, {"watcher": SubscriptionState.APPROVED,
                                    "other": SubscriptionState.REQUESTED})
        yield e2.presence.connect("alice", "phone")
        p = yield e2.presence.presence("alice", viewer="watcher")
        self.assertEqual(p.status, Status.OFFLINE)

    @defer.inlineCallbacks
    def test_missedPings(self):
        """
        A device not heard from for deviceTimeout goes offline and the
        watchers hear it; heartbeats keep a device online.
        """
        e = yield self.engine(deviceTimeout=10.0)
        heard = yield self.approvedWatcher(e)
        yield e.presence.connect("alice", "phone")
        yield e.presence.connect("alice", "laptop")
        yield eventually(lambda: len(heard) == 2)
        for _ in range(3):
            self.clock.advance(6)
            alive = yield e.presence.heartbeat("alice", "laptop")
            self.assertTrue(alive)
        yield eventually(lambda: len(heard) == 3, what="the phone timing out")
        self.assertEqual((heard[2].awareness.device, heard[2].awareness.status),
                         ("phone", Status.ONLINE))
        self.clock.advance(11)
        yield eventually(lambda: len(heard) == 4, what="the laptop timing out")
        self.assertEqual(heard[3].awareness.status, Status.OFFLINE)
        alive = yield e.presence.heartbeat("alice", "laptop")
        self.assertFalse(alive)

    @defer.inlineCallbacks
    def test_visibilityLocationActivity(self):
        """
        Hidden looks offline to others; unshared location stays private;
        a directed activity goes to its target with its TTL.
        """
        e = yield self.engine()
        heard = yield self.approvedWatcher(e)
        bob = []
        e.presence.watch("bob", bob.append)
        yield e.presence.connect("alice", "phone")
        yield e.presence.setLocation("alice", "phone", 6.5, 3.25, 2)
        yield e.presence.setActivity("alice", "phone", Status.TYPING, 5, to="bob")
        yield eventually(lambda: bob and len(heard) == 2)
        self.assertEqual((bob[0].kind, bob[0].awareness.status, bob[0].awareness.ttl),
                         (NoticeKind.ACTIVITY, Status.TYPING, 5))
        self.assertEqual(heard[1].awareness.latitude, 0.0)
        p = yield e.presence.presence("alice", viewer="watcher")
        self.assertIsNone(p.devices[0].location)
        p = yield e.presence.presence("alice", viewer="alice")
        self.assertEqual(p.devices[0].location.latitude, 6.5)
        yield e.presence.setVisibility("alice", Visibility.HIDDEN)
        yield eventually(lambda: len(heard) == 3)
        self.assertEqual(heard[2].awareness.status, Status.OFFLINE)
        p = yield e.presence.presence("alice", viewer="watcher")
        self.assertEqual((p.status, p.devices), (Status.OFFLINE, ()))
        yield e.presence.setVisibility("alice", Visibility.VISIBLE)
        yield eventually(lambda: len(heard) == 4)
        self.assertEqual(heard[3].awareness.status, Status.ONLINE)

    @defer.inlineCallbacks
    def test_deviceLimit(self):
        """
        maxDevices online devices per entity; a device already online may
        reconnect; a status change needs the device online.
        """
        e = yield self.engine(maxDevices=2)
        yield e.presence.connect("alice", "a")
        yield e.presence.connect("alice", "b")
        yield e.presence.connect("alice", "a", Status.BUSY)
        failure = yield self.assertFailure(e.presence.connect("alice", "c"), LimitExceeded)
        self.assertEqual(failure.limit, "maxDevices")
        yield self.assertFailure(e.presence.setStatus("alice", "z", Status.AWAY),
                                 EngineUsageError)
        p = yield e.presence.presence("alice")
        self.assertEqual([(d.device, d.status) for d in p.devices],
                         [("a", Status.BUSY), ("b", Status.ONLINE)])

    # History -----------------------------------------------------------

    @defer.inlineCallbacks
    def test_historyRecovery(self):
        """
        Publications get offsets in an epoch; recovery returns what was
        missed, or says TRIMMED / EPOCH_CHANGED / FUTURE_OFFSET.
        """
        e = yield self.engine()
        options = HistoryOptions(size=3, ttl=60.0)
        start = yield e.history.position("chat")
        self.assertEqual(start.offset, 0)
        pubs = []
        for i in range(5):
            pub = yield e.history.add("chat", b"%d" % i, options)
            pubs.append(pub)
        self.assertEqual([p.offset for p in pubs], [1, 2, 3, 4, 5])
        self.assertEqual({p.epoch for p in pubs}, {start.epoch})
        got = yield e.history.recover("chat", StreamPosition(3, start.epoch))
        self.assertEqual([p.payload for p in got.publications], [b"3", b"4"])
        self.assertEqual(got.position, StreamPosition(5, start.epoch))
        nothing = yield e.history.recover("chat", StreamPosition(5, start.epoch))
        self.assertEqual(nothing.publications, ())
        for since, reason in [(StreamPosition(1, start.epoch), RecoveryFailure.TRIMMED),
                              (StreamPosition(3, "other"), RecoveryFailure.EPOCH_CHANGED),
                              (StreamPosition(9, start.epoch), RecoveryFailure.FUTURE_OFFSET)]:
            failure = yield self.assertFailure(e.history.recover("chat", since),
                                               RecoveryImpossible)
            self.assertEqual(failure.reason, reason)
        recent = yield e.history.recent("chat", 2)
        self.assertEqual([p.offset for p in recent.publications], [4, 5])
        self.clock.advance(61)
        failure = yield self.assertFailure(
            e.history.recover("chat", StreamPosition(5, start.epoch)), RecoveryImpossible)
        self.assertIn(failure.reason, (RecoveryFailure.EPOCH_CHANGED, RecoveryFailure.TRIMMED))

    # Broker ------------------------------------------------------------

    @defer.inlineCallbacks
    def test_brokerInterests(self):
        """
        A publication reaches the node once when any interest matches,
        not at all otherwise; broadcasts and node messages always.
        """
        e = yield self.engine()
        got = []
        e.broker.setReceiver(got.append)
        yield e.broker.addInterest("chat.*")
        yield e.broker.addInterest("chat.>")
        yield e.broker.publish("chat.room1", b"one")
        yield e.broker.publish("other.room1", b"no")
        yield e.broker.publish("chat.room1.thread", b"two")
        yield e.broker.broadcast(b"all")
        yield e.broker.sendToNode(e.broker.nodeId, b"direct")
        yield eventually(lambda: len(got) == 4)
        yield settle()
        self.assertEqual([(d.kind, d.subject, d.payload) for d in got],
                         [(DeliveryKind.SUBJECT, "chat.room1", b"one"),
                          (DeliveryKind.SUBJECT, "chat.room1.thread", b"two"),
                          (DeliveryKind.BROADCAST, "", b"all"),
                          (DeliveryKind.NODE, e.broker.nodeId, b"direct")])
        self.assertEqual({d.origin for d in got}, {e.broker.nodeId})
        yield e.broker.removeInterest("chat.>")
        yield e.broker.removeInterest("chat.*")
        yield e.broker.publish("chat.room1", b"gone")
        yield settle()
        self.assertEqual(len(got), 4)
        yield self.assertFailure(e.broker.publish("chat.*", b""), InvalidName)


class TwoNodeContract:
    """
    The checks for engines whose nodes share one storage.
    """

    @defer.inlineCallbacks
    def test_presenceAcrossNodes(self):
        """
        A watcher on node B sees a device on node A come and go.
        """
        a = yield self.engine()
        b = yield self.engine()
        self.assertNotEqual(a.nodeId, b.nodeId)
        heard = []
        b.presence.watch("watcher", heard.append)
        yield b.presence.requestSubscription("watcher", "alice")
        yield a.presence.answerSubscription("alice", "watcher", True)
        yield eventually(lambda: len(heard) == 2)
        yield a.presence.connect("alice", "phone")
        yield eventually(lambda: len(heard) == 3)
        self.assertEqual(heard[2].awareness.status, Status.ONLINE)
        p = yield b.presence.presence("alice")
        self.assertEqual([(d.device, d.node) for d in p.devices], [("phone", a.nodeId)])
        yield a.presence.disconnect("alice", "phone")
        yield eventually(lambda: len(heard) == 4)
        self.assertEqual(heard[3].awareness.status, Status.OFFLINE)

    @defer.inlineCallbacks
    def test_deviceMovedToAnotherNode(self):
        """
        A device whose session moved from node A to node B stays online
        when A, late, disconnects it on A's behalf only.
        """
        a = yield self.engine()
        b = yield self.engine()
        yield a.presence.connect("alice", "phone")
        yield b.presence.connect("alice", "phone")
        yield a.presence.disconnect("alice", "phone", node=a.nodeId)
        p = yield a.presence.presence("alice")
        self.assertEqual([(d.device, d.node) for d in p.devices], [("phone", b.nodeId)])
        yield b.presence.disconnect("alice", "phone", node=b.nodeId)
        p = yield a.presence.presence("alice")
        self.assertEqual(p.status, Status.OFFLINE)

    @defer.inlineCallbacks
    def test_deadNodeDevicesExpire(self):
        """
        When node A stops (without disconnecting its devices), node B takes
        them offline after deviceTimeout and tells the watchers once.
        """
        a = yield self.engine(deviceTimeout=10.0)
        b = yield self.engine(deviceTimeout=10.0)
        heard = []
        b.presence.watch("watcher", heard.append)
        yield b.presence.requestSubscription("watcher", "alice")
        yield a.presence.answerSubscription("alice", "watcher", True)
        yield a.presence.connect("alice", "phone")
        yield eventually(lambda: len(heard) == 3)
        yield a.stop()
        self.clock.advance(11)
        yield eventually(lambda: len(heard) == 4, what="node B expiring node A's device")
        yield settle()
        self.assertEqual(len(heard), 4)
        self.assertEqual(heard[3].awareness.status, Status.OFFLINE)

    @defer.inlineCallbacks
    def test_queueAcrossNodes(self):
        """
        A message appended on node A is watched and fetched on node B,
        acknowledged there, and its receipt reaches A's watcher.
        """
        a = yield self.engine()
        b = yield self.engine()
        onB, onA = [], []
        b.queues.watch("alice", lambda entity, offset: onB.append(offset))
        a.queues.watch("bob", lambda entity, offset: onA.append(offset))
        appended = yield a.queues.append("alice", QueueMessage("x1", b"hi", Address("bob", "p")))
        yield eventually(lambda: onB == [appended.offset])
        yield b.queues.position("alice", "phone")
        records = yield b.queues.fetch("alice", 1)
        self.assertEqual([r.payload for r in records], [b"hi"])
        yield b.queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)
        yield eventually(lambda: onA)
        receipts = yield a.queues.fetch("bob", 1)
        self.assertEqual(receipts[0].receipt.kind, ReceiptKind.DELIVERED)
        dup = yield b.queues.append("alice", QueueMessage("x1", b"hi", Address("bob", "p")))
        self.assertTrue(dup.duplicate)

    @defer.inlineCallbacks
    def test_forgottenDeviceAcrossNodes(self):
        """
        A device forgotten through node A to make room, registered again
        and acknowledging through node B (which knew its old position)
        goes on from its new position, as on one node: B does not restore
        the old one.
        """
        a = yield self.engine(maxKnownDevices=2)
        b = yield self.engine(maxKnownDevices=2)
        for i in range(3):
            yield a.queues.append("alice", self.message(i, receipts=False))
        yield b.queues.position("alice", "phone")
        yield b.queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)
        yield b.queues.acknowledge("alice", "phone", 2, ReceiptKind.DELIVERED)
        yield a.queues.position("alice", "laptop")
        yield a.queues.position("alice", "desk")
        known = yield b.queues.knownDevices("alice")
        self.assertEqual(known, ["laptop", "desk"])
        p = yield a.queues.position("alice", "phone")
        self.assertEqual(p.delivered, 0)
        p = yield b.queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)
        self.assertEqual(p.delivered, 1)

    @defer.inlineCallbacks
    def test_brokerAcrossNodes(self):
        """
        A publication on A reaches B's receiver when B is interested, a
        broadcast reaches both, a node message only its node.
        """
        a = yield self.engine()
        b = yield self.engine()
        gotA, gotB = [], []
        a.broker.setReceiver(gotA.append)
        b.broker.setReceiver(gotB.append)
        yield b.broker.addInterest("orders.*")
        count = yield a.broker.publish("orders.new", b"o1")
        self.assertEqual(count, 1)
        yield a.broker.broadcast(b"everyone")
        yield a.broker.sendToNode(b.nodeId, b"for b")
        yield eventually(lambda: len(gotB) == 3 and len(gotA) == 1)
        yield settle()
        self.assertEqual([(d.kind, d.payload, d.origin) for d in gotB],
                         [(DeliveryKind.SUBJECT, b"o1", a.nodeId),
                          (DeliveryKind.BROADCAST, b"everyone", a.nodeId),
                          (DeliveryKind.NODE, b"for b", a.nodeId)])
        self.assertEqual([d.payload for d in gotA], [b"everyone"])

    @defer.inlineCallbacks
    def test_historyAcrossNodes(self):
        """
        Both nodes share a channel's offsets and epoch.
        """
        a = yield self.engine()
        b = yield self.engine()
        options = HistoryOptions(size=10, ttl=60.0)
        p1 = yield a.history.add("news", b"1", options)
        p2 = yield b.history.add("news", b"2", options)
        self.assertEqual((p1.offset, p2.offset, p1.epoch), (1, 2, p2.epoch))
        got = yield a.history.recover("news", StreamPosition(0, p1.epoch))
        self.assertEqual([p.payload for p in got.publications], [b"1", b"2"])
