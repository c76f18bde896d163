"""
The Redis engine against a real redis-server: the contract suite (one
node), the cross-node contract (two engine instances on one Redis), and
what only the Redis engine does.
"""


from twisted.internet import defer, reactor
from twisted.trial import unittest

from muxframe.engines import redisqueues
from muxframe.engines.errors import ConfigError
from muxframe.engines.redisconn import parseAddress
from muxframe.engines.redisengine import RedisEngine
from tests.engine_contract import EngineContract, TwoNodeContract
from tests.redisserver import RedisServer


class RedisContractTests(EngineContract, TwoNodeContract, unittest.TestCase):
    """
    The Redis engine passes the engine contract, on one node and across
    two nodes sharing one Redis.
    """

    def setUp(self):
        EngineContract.setUp(self)
        self.server = RedisServer().start()
        self.addCleanup(self.server.stop)
        self.settings = {}

    def makeEngine(self, clock, **settings):
        settings.setdefault("retentionInterval", 0)
        self.settings = settings
        return RedisEngine(self.server.address, clock=clock, **settings).start()

    @defer.inlineCallbacks
    def restartEngine(self, engine, clock):
        yield engine.stop()
        again = RedisEngine(self.server.address, clock=clock, **self.settings)
        yield again.start()
        return again


    @defer.inlineCallbacks
    def test_receiptsReadFieldsInParts(self):
        """
        An acknowledgement covering many large records sends each its
        receipt reading only the fields receipts need, in pages of about
        L{redisqueues.RECEIPT_READ_BYTES} of records in Redis: no payload
        comes back, every reply is small and the memory taken is bounded,
        not the records' weight together.
        """
        self.patch(redisqueues, "RECEIPT_READ_BYTES", 256 * 1024)
        e = yield self.makeEngine(self.clock)
        self.addCleanup(e.stop)
        count = 200
        yield self.receiptsHeld(e, count, 64 * 1024)
        replies = []
        call = e.client.call

        def measured(*args):
            def weigh(reply):
                replies.append((args[1] if args[0] in ("EVALSHA", "EVAL") else args[0],
                                len(repr(reply))))
                return reply
            return call(*args).addCallback(weigh)
        self.patch(e.client, "call", measured)
        peak = yield self.coverReceipts(e, count)
        self.assertLess(max(n for _, n in replies), 4096)
        self.assertLess(peak, 2 * 1024 * 1024)
        pages = [n for script, n in replies if script in (
            redisqueues.RECEIPT_FIELDS.sha, redisqueues.RECEIPT_FIELDS.source)]
        # 200 records of 64 KiB, 256 KiB a page: 4 records a page.
        self.assertEqual(len(pages), count // 4)
        yield self.assertReceiptsSent(e, count)


    @defer.inlineCallbacks
    def test_knownDevicesBoundedByDefault(self):
        """
        A client registering a fresh device id each time does not grow the
        positions kept in Redis past the default C{maxKnownDevices}, 1,024;
        the devices forgotten are counted.
        """
        e = yield self.makeEngine(self.clock)
        self.addCleanup(e.stop)
        yield e.queues.append("alice", self.message(1))
        yield defer.gatherResults([e.queues.position("alice", "fresh-%d" % (i,))
                                   for i in range(1100)])
        known = yield e.client.call("HLEN", "muxframe:q:{alice}:pos")
        self.assertEqual(known, 1024)
        self.assertEqual(e.queues.stats()["devicesForgotten"], 76)

    @defer.inlineCallbacks
    def test_positionsStoredBeforeSightings(self):
        """
        Positions stored before devices' sightings were (in C{:pos}, not in
        C{:seen}) count as seen before every other device, in name order:
        the first to go when room is needed.
        """
        e = yield self.makeEngine(self.clock, maxKnownDevices=3)
        self.addCleanup(e.stop)
        yield e.queues.append("alice", self.message(1))
        yield e.queues.position("alice", "new")
        yield e.client.call("HSET", "muxframe:q:{alice}:pos", "old-b", "1 0", "old-a", "1 0")
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, ["old-a", "old-b", "new"])
        p = yield e.queues.position("alice", "old-b")
        self.assertEqual(p.delivered, 1)
        yield e.queues.position("alice", "newer")
        known = yield e.queues.knownDevices("alice")
        self.assertEqual(known, ["new", "old-b", "newer"])


    @defer.inlineCallbacks
    def test_idleQueuesLeaveNothing(self):
        """
        Messages to names nobody binds leave no key once retention dropped
        them (it used to keep an empty stream, the meta hash and the
        C{queues} member per name forever); a queue that had a device keeps
        its meta hash only, and its offsets go on.
        """
        from muxframe.engines.model import QueueRetention
        e = yield self.makeEngine(self.clock, retention=QueueRetention(
            maxAge=60.0, maxMessages=None, deleteAcknowledged=True))
        self.addCleanup(e.stop)
        yield e.queues.appendMany([("name-%d" % (i,), self.message(i, receipts=False))
                                   for i in range(200)])
        yield e.queues.position("alice", "phone")
        yield e.queues.forget("alice", "phone")
        yield e.queues.append("alice", self.message(1, receipts=False))
        kept = yield e.client.call("SCARD", "muxframe:queues")
        self.assertEqual(kept, 201)
        self.clock.advance(61)
        yield e.queues.applyRetention()
        keys = yield e.client.call("KEYS", "muxframe:q*")
        self.assertEqual(sorted(keys), [b"muxframe:q:{alice}:meta"])
        appended = yield e.queues.append("alice", self.message(2, receipts=False))
        self.assertEqual(appended.offset, 2)
        appended = yield e.queues.append("name-7", self.message(2, receipts=False))
        self.assertEqual(appended.offset, 1)


class RedisPasswordTests(unittest.TestCase):
    """
    A Redis with a password: the right one works for both connections, a
    wrong one fails start() with an error (and does not hang).
    """

    @defer.inlineCallbacks
    def test_password(self):
        from muxframe.engines.model import QueueMessage
        from tests.engine_contract import eventually
        server = RedisServer(password="s3cret").start()
        self.addCleanup(server.stop)
        engine = RedisEngine(server.address, retentionInterval=0)
        yield engine.start()
        self.addCleanup(engine.stop)
        heard = []
        engine.queues.watch("alice", lambda entity, offset: heard.append(offset))
        yield engine.queues.append("alice", QueueMessage("a", b"x"))
        yield eventually(lambda: heard == [1])
        wrong = RedisEngine(server.address.replace("s3cret", "nope"), retentionInterval=0)
        d = wrong.start()
        d.addTimeout(15, reactor)
        failure = yield self.assertFailure(d, Exception)
        self.assertNotIsInstance(failure, defer.TimeoutError)
        self.assertIn("auth", str(failure).lower())
        yield wrong.stop()


class AddressTests(unittest.SynchronousTestCase):

    def test_forms(self):
        """
        redis:// URLs, tcp:host:port and host:port are accepted; anything
        else is a ConfigError naming the address.
        """
        self.assertEqual(parseAddress("redis://:s3cret@h:7000/2"), ("h", 7000, 2, "s3cret"))
        self.assertEqual(parseAddress("tcp:127.0.0.1:6380"), ("127.0.0.1", 6380, 0, None))
        self.assertEqual(parseAddress("localhost"), ("localhost", 6379, 0, None))
        for bad in ["", "http://h", "redis://h:x", "redis://h/db", "tcp:h"]:
            e = self.assertRaises(ConfigError, parseAddress, bad)
            self.assertEqual(e.key, "address")


class RedisRestartTests(unittest.TestCase):
    """
    The engine survives its Redis restarting: both connections come back
    and the subscriptions are made again.
    """

    @defer.inlineCallbacks
    def test_reconnectAndResubscribe(self):
        """
        Redis (with appendonly) restarts on the same port; the watch of a
        queue and a broker interest work again afterwards, and what was
        acknowledged before the restart is still there.
        """
        from twisted.internet import reactor, task
        from muxframe.engines.model import QueueMessage
        from tests.engine_contract import eventually
        server = RedisServer(appendonly=True).start()
        self.addCleanup(server.stop)
        engine = RedisEngine(server.address, retentionInterval=0)
        yield engine.start()
        self.addCleanup(engine.stop)
        heard, got = [], []
        engine.queues.watch("alice", lambda entity, offset: heard.append(offset))
        engine.broker.setReceiver(got.append)
        yield engine.broker.addInterest("news.*")
        yield engine.queues.append("alice", QueueMessage("a", b"before"))
        yield eventually(lambda: heard == [1])
        server.restart()
        for _ in range(300):
            try:
                appended = yield engine.queues.append("alice", QueueMessage("b", b"after"))
                break
            except Exception:
                yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(appended.offset, 2)
        # Heard from the publication, or from the resync after the
        # subscriber came back (the publication may have been lost).
        yield eventually(lambda: heard[-1:] == [2], timeout=30, what="the watch after the restart")
        yield engine.queues.append("alice", QueueMessage("c", b"later"))
        yield eventually(lambda: heard[-1:] == [3], what="the watch, resubscribed")
        yield eventually(lambda: (engine.broker.publish("news.today", b"n"), got)[1], timeout=30,
                         what="a publication after the restart")
        records = yield engine.queues.fetch("alice", 1)
        self.assertEqual([r.payload for r in records], [b"before", b"after", b"later"])


class RedisKeyTtlTests(unittest.TestCase):
    """
    Device hashes carry a Redis TTL as a safety net, refreshed by
    heartbeats.
    """

    @defer.inlineCallbacks
    def test_deviceHashTtl(self):
        server = RedisServer().start()
        self.addCleanup(server.stop)
        engine = RedisEngine(server.address, retentionInterval=0, deviceTimeout=10.0)
        yield engine.start()
        self.addCleanup(engine.stop)
        yield engine.presence.connect("alice", "phone")
        ttl = yield engine.client.call("PTTL", "muxframe:p:{alice}:dev")
        self.assertTrue(0 < int(ttl) <= 20000, ttl)
        yield engine.client.call("PEXPIRE", "muxframe:p:{alice}:dev", 5000)
        alive = yield engine.presence.heartbeat("alice", "phone")
        self.assertTrue(alive)
        ttl = yield engine.client.call("PTTL", "muxframe:p:{alice}:dev")
        self.assertGreater(int(ttl), 15000)
