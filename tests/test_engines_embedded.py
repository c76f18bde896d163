"""
The embedded engine: the contract suite, and what only it does (files,
recovery, segments, locks).
"""


from twisted.internet import defer
from twisted.trial import unittest

from muxframe.engines import embeddedqueues
from muxframe.engines.embedded import EmbeddedEngine
from muxframe.engines.errors import InvalidName
from muxframe.engines.model import Address, QueueMessage, ReceiptKind
from tests.engine_contract import EngineContract


class EmbeddedContractTests(EngineContract, unittest.TestCase):
    """
    The embedded engine passes the engine contract.
    """

    def setUp(self):
        EngineContract.setUp(self)
        self.directory = self.mktemp()

    def makeEngine(self, clock, **settings):
        settings.setdefault("retentionInterval", 0)
        engine = EmbeddedEngine(self.directory, clock=clock, **settings)
        self.settings = settings
        return engine.start()

    @defer.inlineCallbacks
    def restartEngine(self, engine, clock):
        yield engine.stop()
        again = EmbeddedEngine(self.directory, clock=clock, **self.settings)
        yield again.start()
        return again

    @defer.inlineCallbacks
    def forgetIdleQueues(self, engine):
        """
        Seal the active segment (a large record to alice, a queue kept)
        so that retention can delete the segments holding the idle queues'
        records, then run a pass.
        """
        engine.journal.segmentBytes = 4096
        yield engine.queues.append("alice", QueueMessage(
            "filler", b"x" * 4096, Address("bob", "phone"), False))
        result = yield engine.queues.applyRetention()
        return result

    @defer.inlineCallbacks
    def test_stopFinishesAcknowledgementsInProgress(self):
        """
        An acknowledgement taken before C{stop()} saves its receipts and
        position before the files close (it used to fail with
        L{EngineStopped} when a server stopped under a device's late
        acknowledgements); after a restart the device is where it said.
        """
        e = yield self.makeEngine(self.clock)
        for i in range(3):
            yield e.queues.append("alice", self.message(i))
        yield e.queues.position("alice", "phone")
        acks = [e.queues.acknowledge("alice", "phone", offset, ReceiptKind.DELIVERED)
                for offset in (1, 2, 3)]
        yield e.stop()
        positions = yield defer.gatherResults(acks)
        self.assertEqual(positions[-1].delivered, 3)
        again = EmbeddedEngine(self.directory, clock=self.clock, **self.settings)
        yield again.start()
        self.addCleanup(again.stop)
        p = yield again.queues.position("alice", "phone")
        self.assertEqual(p.delivered, 3)
        receipts = yield again.queues.fetch("bob", 1)
        self.assertEqual(sorted(r.receipt.offset for r in receipts), [1, 2, 3])

    @defer.inlineCallbacks
    def test_knownDevicesBoundedByDefault(self):
        """
        A client registering a fresh device id each time does not grow the
        positions kept (in memory and in C{offsets.kv}) past the default
        C{maxKnownDevices}, 1,024; the devices forgotten are counted.
        """
        e = yield self.makeEngine(self.clock)
        self.addCleanup(e.stop)
        yield e.queues.append("alice", self.message(1))
        yield defer.gatherResults([e.queues.position("alice", "fresh-%d" % (i,))
                                   for i in range(1100)])
        self.assertEqual(e.queues.stats()["consumers"], 1024)
        self.assertEqual(len(e._offsets.items(b"o\x00alice\x00")), 1024)
        self.assertEqual(e.queues.stats()["devicesForgotten"], 76)

    @defer.inlineCallbacks
    def test_positionsStoredBeforeSightings(self):
        """
        Positions stored before devices' sightings were (16-byte values)
        are read, as seen before every other device, in name order: the
        first to go when room is needed.
        """
        e = yield self.makeEngine(self.clock, maxKnownDevices=3)
        yield e.queues.append("alice", self.message(1))
        yield e.queues.position("alice", "new")
        for device in ("old-b", "old-a"):
            yield e._offsets.put(embeddedqueues._positionKey("alice", device),
                                 embeddedqueues._POSITION.pack(1, 0))
        yield e.stop()
        again = yield self.makeEngine(self.clock, maxKnownDevices=3)
        self.addCleanup(again.stop)
        known = yield again.queues.knownDevices("alice")
        self.assertEqual(known, ["old-a", "old-b", "new"])
        p = yield again.queues.position("alice", "old-b")
        self.assertEqual(p.delivered, 1)
        yield again.queues.position("alice", "newer")
        known = yield again.queues.knownDevices("alice")
        self.assertEqual(known, ["new", "old-b", "newer"])

    @defer.inlineCallbacks
    def test_idleQueuesLeaveNothing(self):
        """
        Messages to names nobody binds leave nothing once retention dropped
        them and the segments holding them are deleted: no queue in memory,
        no floor in C{offsets.kv} (it used to keep one per name forever);
        a queue that had a device keeps its floor, and its offsets go on,
        also after a restart.
        """
        from muxframe.engines.model import QueueRetention
        e = yield self.makeEngine(self.clock, segmentBytes=4096, retention=QueueRetention(
            maxAge=60.0, maxMessages=None, deleteAcknowledged=True))
        yield e.queues.appendMany([("name-%d" % (i,), self.message(i, receipts=False))
                                   for i in range(200)])
        yield e.queues.position("alice", "phone")
        yield e.queues.forget("alice", "phone")
        yield e.queues.append("alice", self.message(1, receipts=False))
        self.assertEqual(e.queues.stats()["queues"], 201)
        self.clock.advance(61)
        yield e.queues.append("carol", QueueMessage("f", b"x" * 4096, None))
        yield e.queues.position("carol", "d")
        yield e.queues.applyRetention()
        self.assertEqual(e.queues.stats()["queues"], 1)
        self.assertEqual(sorted(k for k, _ in e._offsets.items(b"f\x00")),
                         [b"f\x00alice", b"f\x00carol"])
        appended = yield e.queues.append("alice", self.message(2, receipts=False))
        self.assertEqual(appended.offset, 2)
        appended = yield e.queues.append("name-7", self.message(2, receipts=False))
        self.assertEqual(appended.offset, 1)
        yield e.stop()
        again = yield self.makeEngine(self.clock, segmentBytes=4096)
        self.addCleanup(again.stop)
        self.assertEqual(again.queues.stats()["queues"], 3)
        appended = yield again.queues.append("alice", self.message(3, receipts=False))
        self.assertEqual(appended.offset, 3)

    @defer.inlineCallbacks
    def test_idleQueueKeptWhileSegmentsHoldIt(self):
        """
        A queue nobody bound, its records all dropped by retention, is not
        forgotten while a journal segment still holds them (the segment is
        kept for another queue's records): its offsets go on, and a restart
        (which reads that segment again) finds them in order.  Forgotten
        then, a message to it would start again at offset 1 below records
        recovery still finds, and the engine would not start.
        """
        from muxframe.engines.model import QueueRetention
        retention = QueueRetention(maxAge=60.0, maxMessages=None, deleteAcknowledged=True)
        e = yield self.makeEngine(self.clock, segmentBytes=4096, retention=retention)
        for i in (1, 2):
            yield e.queues.append("name", self.message(i, receipts=False))
        self.clock.advance(30)
        # alice's record, younger, keeps the segment; a large one seals it.
        yield e.queues.append("alice", self.message(1, receipts=False))
        yield e.queues.append("alice", QueueMessage("f", b"x" * 4096, None))
        self.assertEqual([sorted(s.runs) for s in e.journal.segments][0], ["alice", "name"])
        self.clock.advance(31)
        yield e.queues.applyRetention()
        records = yield e.queues.fetch("name", 1)
        self.assertEqual(records, [])
        appended = yield e.queues.append("name", self.message(3, receipts=False))
        self.assertEqual(appended.offset, 3)
        yield e.stop()
        again = yield self.makeEngine(self.clock, segmentBytes=4096, retention=retention)
        self.addCleanup(again.stop)
        appended = yield again.queues.append("name", self.message(4, receipts=False))
        self.assertEqual(appended.offset, 4)

    @defer.inlineCallbacks
    def test_senderCacheKeepsChecksAndDedup(self):
        """
        Appends check a sender's names and make its dedup-key prefix once,
        in a bounded cache: a bad device of a known entity, or a bad sender
        once the cache was cleared, is still refused with nothing stored,
        and the keys made through the cache are the ones recovery makes
        from the records (duplicates found before and after a restart).
        """
        self.patch(embeddedqueues, "_SENDERS_KEPT", 2)
        e = yield self.makeEngine(self.clock)
        senders = [("bob", "phone"), ("bob", "laptop"), ("carol", "p"), ("dave", "p")]
        for i, sender in enumerate(senders):
            yield e.queues.append("alice", self.message(i, sender=sender))
        for bad in (("bob", "a\x00b"), ("\x1fbob", "phone")):
            yield self.assertFailure(e.queues.append("alice", QueueMessage(
                "x", b"", Address(*bad))), InvalidName)
            yield self.assertFailure(e.queues.appendMany([
                ("alice", self.message(9)), ("alice", QueueMessage("x", b"", Address(*bad)))]),
                InvalidName)
        for entity in (["alice"], 7, "al\x00ice"):
            yield self.assertFailure(e.queues.append(entity, self.message(9)), InvalidName)
        again = yield e.queues.appendMany([("alice", self.message(i, sender=sender))
                                           for i, sender in enumerate(senders)])
        self.assertEqual([(r.offset, r.duplicate) for r in again],
                         [(i + 1, True) for i in range(4)])
        e2 = yield self.restartEngine(e, self.clock)
        self.addCleanup(e2.stop)
        for i, sender in enumerate(senders):
            r = yield e2.queues.append("alice", self.message(i, sender=sender))
            self.assertEqual((r.offset, r.duplicate), (i + 1, True))
        system = yield e2.queues.append("alice", QueueMessage("s1", b"", None))
        resent = yield e2.queues.append("alice", QueueMessage("s1", b"", None))
        self.assertEqual((system.duplicate, resent.duplicate, resent.offset),
                         (False, True, system.offset))
        records = yield e2.queues.fetch("alice", 1)
        self.assertEqual([r.messageId for r in records], ["m0", "m1", "m2", "m3", "s1"])

    @defer.inlineCallbacks
    def test_fastAppendAsGeneral(self):
        """
        An append the common-case path takes (known queue and sender, plain
        id) gives the same result and the same stored record as the general
        path gives the same append on another store; a resend then finds
        it a duplicate on both.
        """
        results = []
        for direct in (False, True):
            self.directory = self.mktemp()
            e = yield self.makeEngine(self.clock)
            self.addCleanup(e.stop)
            queues = e.queues
            yield queues.append("alice", self.message(0))
            first = queues._appendChecked if direct else queues.append
            r = yield first("alice", self.message(1))
            again = yield queues.append("alice", self.message(1))
            records = yield queues.fetch("alice", 1)
            results.append((r.offset, r.duplicate, again.offset, again.duplicate,
                            [(x.offset, x.messageId, x.payload, x.sender, x.timestamp)
                             for x in records]))
        self.assertEqual(results[0], results[1])
        self.assertEqual(results[0][:4], (2, False, 2, True))

    @defer.inlineCallbacks
    def test_appendManyOneTimestamp(self):
        """
        The records of one appendMany share one timestamp, read once for
        the batch, and timestamps never go back when the clock does.
        """
        e = yield self.makeEngine(self.clock)
        first = yield e.queues.append("alice", self.message(0))
        self.clock.advance(-5)
        batch = yield e.queues.appendMany([("alice", self.message(i)) for i in (1, 2, 3)])
        self.assertEqual({r.timestamp for r in batch}, {first.timestamp})
        self.clock.advance(10)
        later = yield e.queues.appendMany([("alice", self.message(i)) for i in (4, 5)])
        self.assertEqual({r.timestamp for r in later}, {first.timestamp + 5000})
        records = yield e.queues.fetch("alice", 1)
        self.assertEqual([r.timestamp for r in records], [first.timestamp] * 4 + [
            first.timestamp + 5000] * 2)

    @defer.inlineCallbacks
    def test_receiptsReadHeadersInParts(self):
        """
        An acknowledgement covering many large records sends each its
        receipt reading only the records' headers, a part of at most about
        L{embeddedqueues.RECEIPT_READ_BYTES} at a time: the memory it takes
        is bounded, not the records' weight together.
        """
        self.patch(embeddedqueues, "RECEIPT_READ_BYTES", 256 * 1024)
        e = yield self.makeEngine(self.clock)
        self.addCleanup(e.stop)
        count = 200
        yield self.receiptsHeld(e, count, 64 * 1024)
        peak = yield self.coverReceipts(e, count)
        self.assertLess(peak, 2 * 1024 * 1024)
        yield self.assertReceiptsSent(e, count)


class ConfigTests(unittest.SynchronousTestCase):
    """
    Engines built from configuration mappings, every key checked.
    """

    def test_embedded(self):
        """
        The default is the embedded engine with the documented retention.
        """
        from muxframe.engines import makeEngine
        from muxframe.engines.model import QueueRetention
        e = makeEngine({"directory": "d", "max_age": 60, "max_messages": None,
                        "device_timeout": 5, "node_id": "n1"})
        self.assertIsInstance(e, EmbeddedEngine)
        self.assertEqual(e.queues.retention, QueueRetention(60, None, True))
        self.assertEqual((e.nodeId, e.presence.deviceTimeout), ("n1", 5))

    def test_redis(self):
        """
        engine: redis needs an address and builds a RedisEngine.
        """
        from muxframe.engines import makeEngine
        from muxframe.engines.redisengine import RedisEngine
        e = makeEngine({"engine": "redis", "address": "redis://127.0.0.1:1/0",
                        "prefix": "x:"})
        self.assertIsInstance(e, RedisEngine)
        self.assertEqual(e.prefix, "x:")

    def test_errors(self):
        """
        Unknown keys, bad values, booleans for numbers, settings of the
        other engine and a missing address are ConfigErrors naming the key.
        """
        from muxframe.engines import engineSettings
        from muxframe.engines.errors import ConfigError
        for config, key in [({"nope": 1}, "nope"), ({"engine": "mongo"}, "engine"),
                            ({"device_timeout": -1}, "device_timeout"),
                            ({"max_devices": True}, "max_devices"),
                            ({"address": "redis://h"}, "address"),
                            ({"engine": "redis", "directory": "x", "address": "h"}, "directory"),
                            ({"engine": "redis"}, "address"),
                            ({"segment_bytes": 10}, "segment_bytes")]:
            e = self.assertRaises(ConfigError, engineSettings, config)
            self.assertEqual(e.key, key, config)
