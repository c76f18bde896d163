"""
The Redis engine against a real redis-server: the contract suite (one
node), the cross-node contract (two engine instances on one Redis), and
what only the Redis engine does.
"""


import socket

from twisted.internet import defer, reactor
from twisted.trial import unittest

from muxframe.engines import redisqueues
from muxframe.engines.errors import ConfigError
from muxframe.engines.redisconn import parseAddress
from muxframe.engines.redisengine import RedisEngine
from tests.engine_contract import EngineContract, TwoNodeContract
from tests.redisserver import RedisServer



@defer.inlineCallbacks
def cutBothLinks(testCase, proxy, server, engine, what, killed=b":"):
    """
    Cut C{engine}'s links behind C{proxy} and have C{server} (the real
    Redis) drop its subscriber connections (C{CLIENT KILL TYPE pubsub};
    its answer starts with C{killed}); wait until C{engine} finds both of
    its connections dead.
    """
    from tests.engine_contract import eventually
    proxy.cutCable()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"CLIENT KILL TYPE pubsub\r\n")
        testCase.assertTrue(s.recv(64).startswith(killed))
    yield eventually(lambda: len(engine.problems()) == 2, timeout=30, what=what)

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
        # q:base: one key for every queue (RedisDataLossTests).
        self.assertEqual(sorted(keys), [b"muxframe:q:base", b"muxframe:q:{alice}:meta"])
        appended = yield e.queues.append("alice", self.message(2, receipts=False))
        self.assertEqual(appended.offset, 2)
        appended = yield e.queues.append("name-7", self.message(2, receipts=False))
        self.assertEqual(appended.offset, 1)


class RedisWatchTests(unittest.TestCase):
    """
    A key's first watch subscribes on the subscriber connection:
    L{Watch.whenActive} fires once Redis confirmed it, so what another
    node publishes from then on reaches the callback (the XTMP server
    answers a Bind only then).
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_whenActive(self):
        from muxframe.engines.model import NoticeKind, QueueMessage
        from tests.engine_contract import eventually
        server = RedisServer().start()
        self.addCleanup(server.stop)
        engines = []
        for node in ("node-a", "node-b"):
            engine = RedisEngine(server.address, nodeId=node, retentionInterval=0)
            yield engine.start()
            self.addCleanup(engine.stop)
            engines.append(engine)
        here, there = engines
        notices, offsets = [], []
        watches = [here.presence.watch("alice", notices.append),
                   here.queues.watch("alice", lambda entity, offset: offsets.append(offset))]
        active = [w.whenActive() for w in watches]
        self.assertEqual([d.called for d in active], [False, False])
        yield defer.gatherResults(active)
        counts = yield here.client.call("PUBSUB", "NUMSUB", "muxframe:n:alice",
                                        "muxframe:qn:alice")
        self.assertEqual([int(n) for n in counts[1::2]], [1, 1])
        # At once on the other node: received.
        yield there.presence.requestSubscription("carol", "alice")
        yield there.queues.append("alice", QueueMessage("m1", b"x"))
        yield eventually(lambda: offsets == [1] and len(notices) == 1, what="the notices")
        self.assertEqual((notices[0].kind, notices[0].entity),
                         (NoticeKind.SUBSCRIPTION_REQUEST, "carol"))
        # A second watch of the key is active at once.
        self.assertTrue(here.presence.watch("alice", lambda n: None).whenActive().called)


class RedisPasswordTests(unittest.TestCase):
    """
    A Redis with a password: the right one works for both connections, a
    wrong one fails start() with an error (and does not hang).
    """

    @defer.inlineCallbacks
    def test_password(self):
        from muxframe.engines.model import QueueMessage
        from tests.engine_contract import eventually
        server, engine = yield startedEngine(
            self, server=dict(password="s3cret"))
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
        server, engine = yield startedEngine(
            self, server=dict(appendonly=True))
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
        server, engine = yield startedEngine(self, deviceTimeout=10.0)
        yield engine.presence.connect("alice", "phone")
        ttl = yield engine.client.call("PTTL", "muxframe:p:{alice}:dev")
        self.assertTrue(0 < int(ttl) <= 20000, ttl)
        yield engine.client.call("PEXPIRE", "muxframe:p:{alice}:dev", 5000)
        alive = yield engine.presence.heartbeat("alice", "phone")
        self.assertTrue(alive)
        ttl = yield engine.client.call("PTTL", "muxframe:p:{alice}:dev")
        self.assertGreater(int(ttl), 15000)


class _Events:
    """
    The log events of one namespace, while a test runs.
    """

    def __init__(self, testCase, namespace):
        from twisted.logger import globalLogPublisher
        self.namespace = namespace
        self.events = []
        globalLogPublisher.addObserver(self)
        testCase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event):
        if event.get("log_namespace") == self.namespace:
            self.events.append(event)

    def formats(self, level):
        """
        The formats of the events at C{level}.
        """
        return [e["log_format"] for e in self.events if e["log_level"] == level]


def _quickRetries(engine):
    # An outage of a test lasts a second or two: attempts every 50-200 ms.
    engine.client.retryInitial = 0.05
    engine.client.retryMax = 0.2


@defer.inlineCallbacks
def startedEngine(case, server=None, quick=False, **engineArgs):
    """
    A real redis-server (C{server}: L{RedisServer} arguments) and a started
    L{RedisEngine} on it (C{retentionInterval=0} unless given; C{quick}:
    L{_quickRetries}), both stopped when C{case} ends.

    @return: a L{defer.Deferred} of C{(server, engine)}.
    """
    redis = RedisServer(**(server or {})).start()
    case.addCleanup(redis.stop)
    engineArgs.setdefault("retentionInterval", 0)
    engine = RedisEngine(redis.address, **engineArgs)
    if quick:
        _quickRetries(engine)
    yield engine.start()
    case.addCleanup(engine.stop)
    return redis, engine


class RedisOutageTests(unittest.TestCase):
    """
    Redis killed with SIGKILL, or stopped with SIGSTOP, under a running
    engine: every request fails at once with L{StorageUnavailable} naming
    Redis (none waits in memory for it to come back), the engine connects
    again by itself, logging the outage once and its end once, and works
    again afterwards.
    """

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.server = RedisServer(appendonly=True).start()
        self.addCleanup(self.server.stop)
        self.engine = RedisEngine(self.server.address, retentionInterval=0,
                                  commandTimeout=1.0)
        _quickRetries(self.engine)
        yield self.engine.start()
        self.addCleanup(self.engine.stop)

    def requests(self):
        """
        One call of each kind a client's request makes, as C{(name,
        Deferred)}.
        """
        from muxframe.engines.model import HistoryOptions, QueueMessage, ReceiptKind, Status
        e = self.engine
        return [
            ("connect", e.presence.connect("alice", "pad")),
            ("setStatus", e.presence.setStatus("alice", "phone", Status.AWAY)),
            ("heartbeat", e.presence.heartbeat("alice", "phone")),
            ("presence", e.presence.presence("alice")),
            ("subscribe", e.presence.requestSubscription("carol", "alice")),
            ("append", e.queues.append("alice", QueueMessage("b", b"y"))),
            ("fetch", e.queues.fetch("alice", 1)),
            ("position", e.queues.position("alice", "phone")),
            ("acknowledge", e.queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)),
            ("history", e.history.add("room", b"p", HistoryOptions(10, 60.0))),
            ("publish", e.broker.publish("news.today", b"n")),
        ]

    @defer.inlineCallbacks
    def test_killed(self):
        """
        SIGKILL: once the engine saw the connection go, each request
        fails with L{StorageUnavailable} when it is made, naming the
        address; several attempts later Redis is back (with its data, on
        the same port), the engine reconnects, and the requests work and
        see what was stored before.  The outage was logged once as an
        error and its end once, whatever the attempts in between.
        """
        from twisted.logger import LogLevel
        from muxframe.engines.errors import StorageUnavailable
        from muxframe.engines.model import QueueMessage
        from tests.engine_contract import eventually
        events = _Events(self, "muxframe.engines.redisconn")
        yield self.engine.presence.connect("alice", "phone")
        yield self.engine.queues.append("alice", QueueMessage("a", b"x"))
        self.server.kill()
        yield eventually(lambda: self.engine.problems(), what="the outage seen")
        for name, d in self.requests():
            self.assertTrue(d.called, "%s waits for Redis" % (name,))
            failure = yield self.assertFailure(d, StorageUnavailable)
            self.assertIn(self.engine.client.address, str(failure))
            self.assertEqual(failure.address, self.engine.client.address)
        self.assertIn("down", " ".join(self.engine.problems()))
        attempts = lambda: self.engine.client._commands.attempts
        yield eventually(lambda: attempts() >= 3, what="several attempts")
        self.server.startAgain()
        yield eventually(lambda: not self.engine.problems(), timeout=30, what="reconnected")
        for name, d in self.requests():
            yield d
        records = yield self.engine.queues.fetch("alice", 1)
        self.assertEqual([r.messageId for r in records], ["a", "b"])
        presence = yield self.engine.presence.presence("alice")
        self.assertEqual([d.device for d in presence.devices], ["pad", "phone"])
        down = [f for f in events.formats(LogLevel.error) if "unreachable" in f]
        back = [f for f in events.formats(LogLevel.info) if "reachable again" in f]
        self.assertEqual((len(down), len(back)), (1, 1), events.events)

    @defer.inlineCallbacks
    def test_paused(self):
        """
        SIGSTOP: Redis keeps the connections open and answers nothing.  A
        request in flight fails with L{StorageUnavailable} once the command
        timeout passed (the connection is closed), and later ones at once;
        attempts to connect again that Redis does not answer do not count
        as a recovery.  SIGCONT: the engine is back and works.
        """
        from muxframe.engines.errors import StorageUnavailable
        from muxframe.engines.model import QueueMessage
        from tests.engine_contract import eventually
        self.addCleanup(self.server.resume)
        self.server.pause()
        d = self.engine.queues.append("alice", QueueMessage("a", b"x"))
        d.addTimeout(30, reactor)
        failure = yield self.assertFailure(d, StorageUnavailable)
        self.assertIn("unanswered", str(failure))
        attempts = lambda: self.engine.client._commands.attempts
        yield eventually(lambda: attempts() >= 2, timeout=30, what="attempts Redis ignores")
        self.assertTrue(self.engine.problems())
        for name, d in self.requests():
            self.assertTrue(d.called, "%s waits for Redis" % (name,))
            yield self.assertFailure(d, StorageUnavailable)
        self.server.resume()
        yield eventually(lambda: not self.engine.problems(), timeout=30, what="reconnected")
        appended = yield self.engine.queues.append("alice", QueueMessage("b", b"y"))
        self.assertIn(appended.offset, (1, 2))


class RedisDownAtStartTests(unittest.TestCase):
    """
    An engine started while Redis is down waits for it (naming the fault
    in C{problems()}), and starts when Redis comes; stopped meanwhile, its
    start fails with L{EngineStopped} and nothing is left running.
    """

    timeout = 60

    def setUp(self):
        self.server = RedisServer().start()
        self.addCleanup(self.server.stop)
        self.server.kill()

    @defer.inlineCallbacks
    def test_startsWhenRedisComes(self):
        from tests.engine_contract import eventually
        engine = RedisEngine(self.server.address, retentionInterval=0)
        _quickRetries(engine)
        started = engine.start()
        self.addCleanup(engine.stop)
        yield eventually(lambda: engine.client._commands.attempts >= 2, what="attempts")
        self.assertFalse(started.called)
        self.assertIn("connection is down", " ".join(engine.problems()))
        self.server.startAgain()
        yield started
        self.assertEqual(engine.problems(), [])
        yield engine.presence.connect("alice", "phone")

    @defer.inlineCallbacks
    def test_stoppedWhileWaiting(self):
        from muxframe.engines.errors import EngineStopped
        from tests.engine_contract import eventually
        engine = RedisEngine(self.server.address, retentionInterval=0)
        _quickRetries(engine)
        started = engine.start()
        yield eventually(lambda: engine.client._commands.attempts >= 1, what="an attempt")
        yield engine.stop()
        yield self.assertFailure(started, EngineStopped)


class RedisAcknowledgeOutageTests(unittest.TestCase):
    """
    An acknowledgement that failed because Redis went down (killed with
    SIGKILL between its steps: the position read, then the receipts, then
    the position saved) changed nothing a later one relies on: made again
    once Redis is back, it saves the position and sends the receipt.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_retriedAfterOutage(self):
        from muxframe.engines.errors import StorageUnavailable
        from muxframe.engines.model import Address, QueueMessage, ReceiptKind
        from tests.engine_contract import eventually
        server, engine = yield startedEngine(
            self, server=dict(appendonly=True), quick=True)
        queues = engine.queues
        for n in range(3):
            yield queues.append("alice", QueueMessage("m%d" % n, b"x", Address("bob", "b"), True))
        yield queues.acknowledge("alice", "phone", 1, ReceiptKind.DELIVERED)
        call = engine.client.call

        def killedAfterPosition(*args):
            d = call(*args)
            if args[1] in (redisqueues.POSITION.sha, redisqueues.POSITION.source):
                # Redis dies once it answered the position read.
                d.addCallback(lambda reply: (server.kill(), reply)[1])
            return d
        self.patch(engine.client, "call", killedAfterPosition)
        yield self.assertFailure(queues.acknowledge("alice", "phone", 2, ReceiptKind.DELIVERED),
                                 StorageUnavailable)
        self.assertFalse(server.process)
        self.patch(engine.client, "call", call)
        server.startAgain()
        yield eventually(lambda: not engine.problems(), timeout=30, what="reconnected")
        position = yield queues.acknowledge("alice", "phone", 2, ReceiptKind.DELIVERED)
        self.assertEqual(position.delivered, 2)
        stored = yield engine.client.call("HGET", "muxframe:q:{alice}:pos", "phone")
        self.assertEqual(stored, b"2 0")
        receipts = yield queues.fetch("bob", 1)
        self.assertEqual([(r.receipt.offset, r.receipt.kind) for r in receipts],
                         [(1, ReceiptKind.DELIVERED), (2, ReceiptKind.DELIVERED)])


class RedisDataLossTests(unittest.TestCase):
    """
    Redis killed and started again empty under a running engine: the
    engine notices once, and every queue's offsets go on above those
    handed out before, so a consumer that had records up to some offset
    (a live pump's cursor, a client's last delivered) does not take the
    new ones for them.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_restartedEmpty(self):
        from twisted.logger import LogLevel
        from muxframe.engines.model import Address, QueueMessage, ReceiptKind
        from tests.engine_contract import eventually
        server, engine = yield startedEngine(self, quick=True)
        events = _Events(self, "muxframe.engines.redisqueues")
        heard = []
        engine.queues.watch("alice", lambda entity, offset: heard.append(offset))
        queues = engine.queues
        for n in range(3):
            appended = yield queues.append("alice", QueueMessage("m%d" % n, b"x"))
        self.assertEqual(appended.offset, 3)
        yield queues.position("alice", "phone")
        yield queues.acknowledge("alice", "phone", 3, ReceiptKind.DELIVERED)
        server.kill()
        server.startAgain(keepData=False)
        yield eventually(lambda: not engine.problems() and events.events, timeout=30,
                         what="the data loss noticed")
        first = yield queues.append("alice", QueueMessage("n0", b"y", Address("bob", "b")))
        second = yield queues.append("bob", QueueMessage("n1", b"z"))
        self.assertGreater(first.offset, 3)
        self.assertGreater(second.offset, 3)
        # A consumer fetching on from what it had finds the new record.
        records = yield queues.fetch("alice", 4)
        self.assertEqual([(r.offset, r.messageId) for r in records], [(first.offset, "n0")])
        yield eventually(lambda: heard[-1:] == [first.offset], what="the watch")
        position = yield queues.position("alice", "phone")
        self.assertEqual(position.nextOffset, first.offset + 1)
        position = yield queues.acknowledge("alice", "phone", first.offset, ReceiptKind.DELIVERED)
        self.assertEqual(position.delivered, first.offset)
        again = yield queues.append("alice", QueueMessage("n2", b"w"))
        self.assertEqual(again.offset, first.offset + 1)
        self.assertEqual(len(events.formats(LogLevel.critical)), 1, events.events)
        self.assertIn("lost its data", events.formats(LogLevel.critical)[0])

    @defer.inlineCallbacks
    def test_forgottenQueueStartsAfterBase(self):
        """
        A queue nobody bound, forgotten by a retention pass (its meta
        deleted), starts again after the base: at 1 on a Redis that never
        lost its data, above every earlier offset after a loss (flushed
        here).  A message refused at C{maxQueues} notices the loss too.
        """
        from twisted.logger import LogLevel
        from muxframe.engines.errors import LimitExceeded
        from muxframe.engines.model import QueueMessage, QueueRetention
        server, engine = yield startedEngine(
            self, retention=QueueRetention(maxAge=None, maxMessages=0,
                                           deleteAcknowledged=False))
        events = _Events(self, "muxframe.engines.redisqueues")
        queues = engine.queues
        for n in range(3):
            appended = yield queues.append("carol", QueueMessage("m%d" % n, b"x"))
        self.assertEqual(appended.offset, 3)
        yield queues.applyRetention()
        self.assertEqual((yield engine.client.call("EXISTS", "muxframe:q:{carol}:meta")), 0)
        appended = yield queues.append("carol", QueueMessage("m3", b"x"))
        self.assertEqual(appended.offset, 1)
        yield engine.client.call("FLUSHALL")
        queues.maxQueues = 0
        yield self.assertFailure(queues.append("dave", QueueMessage("d0", b"x")),
                                 LimitExceeded)
        self.assertEqual(queues.dataLosses, 1)
        base = int((yield engine.client.call("GET", "muxframe:q:base")))
        self.assertGreater(base, 3)
        queues.maxQueues = 10
        appended = yield queues.append("carol", QueueMessage("m4", b"x"))
        self.assertEqual(appended.offset, base + 1)
        yield queues.applyRetention()
        self.assertEqual((yield engine.client.call("EXISTS", "muxframe:q:{carol}:meta")), 0)
        appended = yield queues.append("carol", QueueMessage("m5", b"x"))
        self.assertEqual(appended.offset, base + 1)
        records = yield queues.fetch("carol", 1)
        self.assertEqual([(r.offset, r.messageId) for r in records], [(base + 1, "m5")])
        self.assertEqual(queues.dataLosses, 1)
        self.assertEqual(len(events.formats(LogLevel.critical)), 1, events.events)


class RedisLongOutageTests(unittest.TestCase):
    """
    An outage of Redis (its data kept) longer than the device hashes' TTL
    (twice C{deviceTimeout}): Redis drops the expired hashes when it loads
    its data, while the sorted set of expiry times keeps the devices.  A
    heartbeat of such a device says it is not online, so its session
    connects it again (before, the heartbeat found the sorted set's member,
    said alive and refreshed it: the live device stayed invisible for
    good, and no sweep ever removed it).
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_hashExpiredDuringOutage(self):
        from twisted.internet import task
        from tests.engine_contract import START, eventually
        server = RedisServer(appendonly=True).start()
        self.addCleanup(server.stop)
        clock = task.Clock()
        clock.advance(START)
        # The engine's own clock stands still: no sweep runs.
        engine = RedisEngine(server.address, clock=clock, retentionInterval=0,
                             deviceTimeout=0.5)
        _quickRetries(engine)
        yield engine.start()
        self.addCleanup(engine.stop)
        yield engine.presence.connect("alice", "phone")
        ttl = yield engine.client.call("PTTL", "muxframe:p:{alice}:dev")
        self.assertTrue(0 < int(ttl) <= 1000, ttl)
        server.kill()
        yield task.deferLater(reactor, 1.5, lambda: None)
        server.startAgain()
        yield eventually(lambda: not engine.problems(), timeout=30, what="reconnected")
        presence = yield engine.presence.presence("alice")
        self.assertEqual(presence.devices, ())
        alive = yield engine.presence.heartbeat("alice", "phone")
        self.assertFalse(alive)
        yield engine.presence.connect("alice", "phone")
        presence = yield engine.presence.presence("alice")
        self.assertEqual([d.device for d in presence.devices], ["phone"])
        alive = yield engine.presence.heartbeat("alice", "phone")
        self.assertTrue(alive)

    @defer.inlineCallbacks
    def test_graceAfterOutage(self):
        """
        An outage longer than C{deviceTimeout} (shorter than the hashes'
        TTL): the devices' expiry times passed while no one could refresh
        them.  The engine's sweeps after the outage wait (a grace in
        Redis), so the device a live session refreshes once the outage is
        over stays online and its watchers hear nothing (before, the first
        sweep took it offline, telling them, and the session put it back).
        """
        from twisted.internet import task
        from muxframe.engines.model import NoticeKind
        from tests.engine_contract import eventually
        server, engine = yield startedEngine(
            self, server=dict(appendonly=True), quick=True, deviceTimeout=4.0,
            sweepInterval=0.05)
        presence = engine.presence
        yield presence.requestSubscription("carol", "alice")
        yield presence.answerSubscription("alice", "carol", True)
        notices = []
        presence.watch("carol", notices.append)
        yield presence.connect("alice", "phone")
        yield eventually(lambda: notices, what="the first notice")
        del notices[:]
        alive = yield presence.heartbeat("alice", "phone")
        self.assertTrue(alive)
        server.kill()
        # Past the device's expiry (4 s), well within its hash's TTL (8 s).
        yield task.deferLater(reactor, 4.5, lambda: None)
        server.startAgain()
        yield eventually(lambda: not engine.problems(), timeout=30, what="reconnected")
        sweeps = presence.sweeps
        yield eventually(lambda: presence.sweeps >= sweeps + 3, what="sweeps after the outage")
        alive = yield presence.heartbeat("alice", "phone")
        self.assertTrue(alive)
        now = yield presence.presence("alice")
        self.assertEqual([d.device for d in now.devices], ["phone"])
        self.assertEqual([n for n in notices if n.kind == NoticeKind.AWARENESS], [])
        ttl = yield engine.client.call("PTTL", "muxframe:p:grace")
        self.assertGreater(int(ttl), 0)

    @defer.inlineCallbacks
    def test_noGraceAfterABlip(self):
        """
        An outage much shorter than C{deviceTimeout} (a blip: no device a
        session refreshes can have expired) sets no grace: otherwise a
        link dropping more often than the grace lasts would hold every
        node's sweeps back for good.
        """
        from tests.engine_contract import eventually
        server, engine = yield startedEngine(
            self, server=dict(appendonly=True), quick=True, deviceTimeout=60.0,
            sweepInterval=0.05)
        presence = engine.presence
        yield presence.connect("alice", "phone")
        outages = engine.client.outages
        server.kill()
        server.startAgain()
        yield eventually(lambda: engine.client.outages > outages and
                         not engine.problems(), timeout=30, what="reconnected")
        sweeps = presence.sweeps
        yield eventually(lambda: presence.sweeps >= sweeps + 3, what="sweeps after the outage")
        ttl = yield engine.client.call("PTTL", "muxframe:p:grace")
        self.assertEqual(int(ttl), -2)

    @defer.inlineCallbacks
    def test_sweptAfterHashExpired(self):
        """
        A device whose hash Redis dropped by its TTL first (a dead node's
        device, its expiry held back by the grace after an outage) is
        still swept: its watchers hear it go offline (before, the sweep
        found nothing to delete and told no one: they saw it online for
        good).
        """
        from muxframe.engines.model import NoticeKind, Status
        from tests.engine_contract import eventually
        server, engine = yield startedEngine(
            self, deviceTimeout=0.5, sweepInterval=0.05)
        presence = engine.presence
        yield presence.requestSubscription("carol", "alice")
        yield presence.answerSubscription("alice", "carol", True)
        notices = []
        presence.watch("carol", notices.append)
        # The grace holds the sweeps while Redis drops the hash.
        yield engine.client.call("SET", "muxframe:p:grace", "test", "PX", 60000)
        yield presence.connect("alice", "phone")
        yield engine.client.call("PEXPIRE", "muxframe:p:{alice}:dev", 1)
        yield eventually(lambda: notices, what="the connect's notice")
        yield engine.client.call("DEL", "muxframe:p:grace")
        yield eventually(lambda: any(n.awareness.status == Status.OFFLINE for n in notices
                                     if n.kind == NoticeKind.AWARENESS),
                         what="alice offline")
        members = yield engine.client.call("ZCARD", "muxframe:p:alive")
        self.assertEqual(int(members), 0)


class RedisCutNetworkTests(unittest.TestCase):
    """
    The network to Redis cut (a TCP proxy dropping every byte both ways,
    the connections left open) while Redis drops the subscriber
    connection (CLIENT KILL, as its TCP keepalive would), then mended: the
    engine finds both connections dead within the command timeout, says
    so, and once the network is back works again, the subscriber
    connection included, so queue watches hear appends again (before, the
    subscriber connection, which sends nothing of itself, never learnt
    that Redis had dropped it: open and deaf for good).
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_cutAndMended(self):
        from muxframe.engines.model import QueueMessage
        from tests.engine_contract import eventually
        from tests.presence_support import CutProxy
        server = RedisServer().start()
        self.addCleanup(server.stop)
        proxy = yield CutProxy(server.port, silentCloses=True).start(self)
        engine = RedisEngine("redis://127.0.0.1:%d/0" % (proxy.port,), retentionInterval=0,
                             commandTimeout=0.5)
        _quickRetries(engine)
        yield engine.start()
        self.addCleanup(engine.stop)
        heard = []
        engine.queues.watch("alice", lambda entity, offset: heard.append(offset))
        yield engine.queues.append("alice", QueueMessage("a", b"x"))
        yield eventually(lambda: heard == [1], what="the first notice")
        yield cutBothLinks(self, proxy, server, engine,
                           "both connections found dead", killed=b":1")
        proxy.mendCable()
        yield eventually(lambda: not engine.problems(), timeout=30, what="reconnected")
        appended = yield engine.queues.append("alice", QueueMessage("b", b"y"))
        self.assertEqual(appended.offset, 2)
        yield eventually(lambda: heard[-1:] == [2], what="a notice after the cut")


class RedisPresenceResyncTests(unittest.TestCase):
    """
    Presence notices published while a node's subscriber connection is away
    are lost; once it is back, the node's presence watchers are told the
    current awareness of each target that changed meanwhile, once, and
    nothing of the targets that did not.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_watchersToldWhatTheSubscriberMissed(self):
        """
        Node A (through a proxy) watches carol, subscribed to alice, dave
        and erin; A's connections are cut and its subscriber dropped by
        Redis; meanwhile node B takes alice's phone offline and brings
        dave's pad online (AWAY).  When the network is mended, carol's
        watch on A is told alice OFFLINE and dave AWAY, and nothing more
        of erin, who did not change, until erin does.
        """
        from muxframe.engines.model import NoticeKind, Status
        from tests.engine_contract import eventually
        from tests.presence_support import CutProxy
        server = RedisServer().start()
        self.addCleanup(server.stop)
        proxy = yield CutProxy(server.port, silentCloses=True).start(self)
        # (Devices, which no session refreshes here, stay online.)
        a = RedisEngine("redis://127.0.0.1:%d/0" % (proxy.port,), nodeId="node-a",
                        retentionInterval=0, commandTimeout=0.5, deviceTimeout=600.0)
        b = RedisEngine(server.address, nodeId="node-b", retentionInterval=0,
                        deviceTimeout=600.0)
        for engine in (a, b):
            _quickRetries(engine)
            yield engine.start()
            self.addCleanup(engine.stop)
        for target in ("alice", "dave", "erin"):
            yield b.presence.requestSubscription("carol", target)
            yield b.presence.answerSubscription(target, "carol", True)
        notices = []
        watch = a.presence.watch("carol", notices.append)
        yield watch.whenActive()
        yield b.presence.connect("alice", "phone")
        yield b.presence.connect("erin", "phone")

        def told():
            return [(n.entity, n.awareness.status) for n in notices
                    if n.kind == NoticeKind.AWARENESS]
        yield eventually(lambda: told() == [("alice", Status.ONLINE), ("erin", Status.ONLINE)],
                         what="the notices before the cut")
        yield cutBothLinks(self, proxy, server, a,
                           "A's connections found dead")
        del notices[:]
        yield b.presence.disconnect("alice", "phone")
        yield b.presence.connect("dave", "pad", Status.AWAY)
        proxy.mendCable()
        yield eventually(lambda: not a.problems(), timeout=30, what="A reconnected")
        yield eventually(lambda: len(told()) >= 2, what="the resync")
        self.assertEqual(told(), [("alice", Status.OFFLINE), ("dave", Status.AWAY)])
        pad = [n.awareness for n in notices if n.entity == "dave"][0]
        self.assertEqual(pad.device, "pad")
        presence = yield b.presence.presence("dave")
        self.assertEqual(pad.version, presence.version)
        # Nothing again, and the next notice is erin's real change.
        yield a.presence.resync()
        yield b.presence.setStatus("erin", "phone", Status.BUSY)
        yield eventually(lambda: len(told()) >= 3, what="erin's change")
        self.assertEqual(told(), [("alice", Status.OFFLINE), ("dave", Status.AWAY),
                                  ("erin", Status.BUSY)])


    @defer.inlineCallbacks
    def test_onlySubscriberLost(self):
        """
        Redis drops only A's subscriber connection (its commands go on);
        a device of alice comes online through B before it is back; then
        carol's watch on A is told alice ONLINE, once: the notice of that
        version, had it come late, is dropped, and a newer one is not.
        """
        from muxframe.engines.model import Awareness, NoticeKind, PresenceNotice, Status
        from muxframe.engines.redisformat import encodeNotice
        from tests.engine_contract import eventually
        server = RedisServer().start()
        self.addCleanup(server.stop)
        a = RedisEngine(server.address, nodeId="node-a", retentionInterval=0,
                        deviceTimeout=600.0)
        b = RedisEngine(server.address, nodeId="node-b", retentionInterval=0,
                        deviceTimeout=600.0)
        for engine in (a, b):
            yield engine.start()
            self.addCleanup(engine.stop)
        # A's subscriber stays away about a second.
        a.client.retryInitial = a.client.retryMax = 1.0
        yield b.presence.requestSubscription("carol", "alice")
        yield b.presence.answerSubscription("alice", "carol", True)
        notices = []
        watch = a.presence.watch("carol", notices.append)
        yield watch.whenActive()
        yield b.client.call("CLIENT", "KILL", "TYPE", "pubsub")
        yield eventually(lambda: a.problems(), what="A's subscriber found gone")
        presence = yield b.presence.connect("alice", "phone")
        self.assertTrue(a.problems(), "A's subscriber came back too soon for the test")
        yield eventually(lambda: notices, what="the resync")
        self.assertEqual([(n.kind, n.entity, n.awareness.status, n.awareness.device,
                           n.awareness.version) for n in notices],
                         [(NoticeKind.AWARENESS, "alice", Status.ONLINE, "phone",
                           presence.version)])
        self.assertEqual(a.problems(), [])

        def late(version):
            a.presence.messageReceived("muxframe:n:carol", encodeNotice(PresenceNotice(
                NoticeKind.AWARENESS, "carol", "alice",
                Awareness("alice", "phone", Status.ONLINE, 0, version), timestamp=0)))
        late(presence.version)
        self.assertEqual(len(notices), 1)
        late(presence.version + 1)
        self.assertEqual(len(notices), 2)


    @defer.inlineCallbacks
    def carolSubscribedToAlice(self):
        """
        A real redis-server and a started engine (node-a, devices kept 600
        s), both stopped at the end, with carol subscribed to alice:
        C{(server, engine)}.
        """
        server = RedisServer().start()
        self.addCleanup(server.stop)
        a = RedisEngine(server.address, nodeId="node-a", retentionInterval=0,
                        deviceTimeout=600.0)
        yield a.start()
        self.addCleanup(a.stop)
        yield a.presence.requestSubscription("carol", "alice")
        yield a.presence.answerSubscription("alice", "carol", True)
        return server, a

    @defer.inlineCallbacks
    def test_unavailableWhileReadingPresence(self):
        """
        Redis becoming unreachable while the resync reads the presence of
        the targets that changed fails the resync with L{StorageUnavailable}
        (so the client does it again once Redis is back), not a failure
        logged for the recipient and a resync that looks done.
        """
        from muxframe.engines.errors import StorageUnavailable
        server, a = yield self.carolSubscribedToAlice()
        # (Online just before the watch: a change the resync counts as
        # missed, within RESYNC_SKEW, with no notice of it told.)
        yield a.presence.connect("alice", "phone")
        watch = a.presence.watch("carol", lambda notice: None)
        yield watch.whenActive()
        read = []

        def presence(entity, viewer=None):
            read.append(entity)
            return defer.fail(StorageUnavailable("Redis went away", server.address))
        a.presence.presence = presence
        yield self.assertFailure(a.presence.resync(), StorageUnavailable)
        self.assertEqual(read, ["alice"])


    @defer.inlineCallbacks
    def test_staleHiddenReadAfterLiveNotice(self):
        """
        The resync reads alice hidden (her hiding's notice was lost), but
        she shows again before that read is handled and the notice of it
        arrives first: the watchers keep the newer, visible state, and are
        not told the older read's OFFLINE after it.
        """
        from muxframe.engines.model import NoticeKind, Status, Visibility
        from tests.engine_contract import eventually
        server, a = yield self.carolSubscribedToAlice()
        notices = []
        watch = a.presence.watch("carol", notices.append)
        yield watch.whenActive()
        yield a.presence.connect("alice", "phone")
        yield eventually(lambda: notices, what="alice online")
        # The notice of her hiding is lost (as pub/sub loses it).
        route, lost = a._routes[-1], []
        a._routes[-1] = (route[0], lambda channel, message: lost.append(message))
        yield a.presence.setVisibility("alice", Visibility.HIDDEN)
        yield eventually(lambda: lost, what="the notice of hiding")
        a._routes[-1] = route
        real = a.presence.presence

        @defer.inlineCallbacks
        def presence(entity, viewer=None):
            read = yield real(entity, viewer)
            self.assertEqual(read.visibility, Visibility.HIDDEN)
            a.presence.presence = real
            yield a.presence.setVisibility("alice", Visibility.VISIBLE)
            yield eventually(lambda: notices[-1].awareness.version > read.version,
                             what="the notice of showing")
            return read
        a.presence.presence = presence
        yield a.presence.resync()
        told = [(n.kind, n.awareness.status, n.awareness.visibility) for n in notices]
        self.assertEqual(told, [(NoticeKind.AWARENESS, Status.ONLINE, Visibility.VISIBLE)] * 2)


    @defer.inlineCallbacks
    def test_failuresLoggedOnce(self):
        """
        An error every recipient's resync meets (not Redis unreachable) is
        logged once with its traceback, then counted, not once a watched
        entity; the resync goes on to the others and ends.
        """
        from twisted.logger import globalLogPublisher
        from muxframe.engines.errors import StorageError
        server = RedisServer().start()
        self.addCleanup(server.stop)
        a = RedisEngine(server.address, nodeId="node-a", retentionInterval=0)
        yield a.start()
        self.addCleanup(a.stop)
        for recipient in ("carol", "dave", "erin"):
            yield a.presence.watch(recipient, lambda notice: None).whenActive()
        tried = []

        def fail(recipient):
            tried.append(recipient)
            return defer.fail(StorageError("Redis refused a command: NOPERM"))
        a.presence._resyncRecipient = fail
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield a.presence.resync()
        self.assertEqual(sorted(tried), ["carol", "dave", "erin"])
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)
        self.assertEqual([e.get("count") for e in events if "count" in e], [3])


class RedisRefusalTests(unittest.TestCase):
    """
    Redis refusing commands (out of memory: maxmemory with noeviction) is
    a L{StorageError} naming Redis and its reason, not txredisapi's
    ResponseError with the script's name and line; reads go on.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_outOfMemory(self):
        from muxframe.engines.errors import StorageError, StorageUnavailable
        from muxframe.engines.model import QueueMessage
        server, engine = yield startedEngine(self)
        yield engine.queues.append("alice", QueueMessage("a", b"x"))
        yield engine.client.call("CONFIG", "SET", "maxmemory", "1")
        failure = yield self.assertFailure(
            engine.queues.append("alice", QueueMessage("b", b"y")), StorageError)
        self.assertNotIsInstance(failure, StorageUnavailable)
        self.assertIn("Redis at %s refused a command: OOM" % (engine.client.address,),
                      str(failure))
        self.assertNotIn("user_script", str(failure))
        records = yield engine.queues.fetch("alice", 1)
        self.assertEqual([r.messageId for r in records], ["a"])
        yield engine.client.call("CONFIG", "SET", "maxmemory", "0")
        appended = yield engine.queues.append("alice", QueueMessage("b", b"y"))
        self.assertEqual(appended.offset, 2)


class RedisStopTests(unittest.TestCase):
    """
    An engine stopped while it resynchronises its queue watches (after its
    subscriber connection came back) stops quietly: the resync meets the
    stopped engine and logs nothing (it logged EngineStopped as an error).
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_stopDuringResync(self):
        from twisted.internet import task
        server = RedisServer().start()
        self.addCleanup(server.stop)
        engine = RedisEngine(server.address, retentionInterval=0)
        yield engine.start()
        engine.queues.watch("alice", lambda entity, offset: None)
        engine.queues.watch("bob", lambda entity, offset: None)
        # Redis answers nothing: the resync's first read is in flight when
        # the engine stops.
        self.addCleanup(server.resume)
        server.pause()
        engine.client._resyncDue = True
        engine.client._resync()
        yield engine.stop()
        # (The read fails as the connection closes, after the stop.)
        yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.flushLoggedErrors(), [])


def _reply(*words):
    """
    A RESP array of bulk strings and, last, an integer: what Redis answers
    a SUBSCRIBE with, once per channel.
    """
    out = [b"*%d\r\n" % (len(words),)]
    for word in words[:-1]:
        out.append(b"$%d\r\n%s\r\n" % (len(word), word))
    out.append(b":%d\r\n" % (words[-1],))
    return b"".join(out)


class SubscriberRepliesTests(unittest.SynchronousTestCase):
    """
    The subscriber connection's replies go to the commands they answer.
    Redis answers a SUBSCRIBE of several channels with one reply per
    channel, and txredisapi gives each reply after the first to the next
    command waiting: the resubscription after a reconnection must not
    confirm, with its extra replies, a subscription made behind it (a
    Bind's watch, answered before Redis had it: a notice published then
    was lost).
    """

    def connected(self):
        """
        A L{RedisClient} whose subscriber connection is up, on a
        L{StringTransport}, already subscribed to two channels; the
        client, a function feeding the connection bytes from Redis, and
        the transport.
        """
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport
        from muxframe.engines.redisconn import RedisClient, _Factory, _Link, _Subscriber
        clock = Clock()
        client = RedisClient(clock, "127.0.0.1:1", lambda *a: None)
        client._channels = {"p:n:a": 1, "p:n:b": 1}
        link = client._subscriber = _Link(client, "subscriber", None,
                                          _Factory(_Subscriber, None, None))
        link.stopped = False
        subscriber = link.factory.buildProtocol(None)
        # (txredisapi before 1.5 parses what follows a bulk string in a
        # later turn of the reactor.)
        subscriber.callLater = clock.callLater

        def feed(data):
            subscriber.dataReceived(data)
            while clock.getDelayedCalls():
                clock.advance(0)
        transport = StringTransport()
        subscriber.makeConnection(transport)
        self.assertEqual(transport.value(), b"*1\r\n$4\r\nPING\r\n")
        transport.clear()
        feed(b"+PONG\r\n")
        self.assertIs(link.protocol, subscriber)
        return client, feed, transport

    def test_resubscribedOneByOne(self):
        """
        Every channel is subscribed again with a command of its own.
        """
        client, feed, transport = self.connected()
        self.assertEqual(transport.value().count(b"SUBSCRIBE"), 2)

    def test_subscriptionBehindResubscription(self):
        """
        A subscription made while the resubscription waits for its replies
        is confirmed by Redis's reply to it, not by one to the
        resubscription.
        """
        client, feed, transport = self.connected()
        d = client.subscribe("p:n:c")
        feed(_reply(b"subscribe", b"p:n:a", 1))
        feed(_reply(b"subscribe", b"p:n:b", 2))
        self.assertNoResult(d)
        feed(_reply(b"subscribe", b"p:n:c", 3))
        self.successResultOf(d)


class RedisStopStalledTests(unittest.TestCase):
    """
    A Redis client disconnected while Redis reads nothing (stopped with
    SIGSTOP, a cut network) and a command waits unwritten behind a full
    socket buffer closes within the command timeout (the command fails
    with L{EngineStopped}): its connection is aborted (a clean close waited for the buffer to drain, without end:
    an engine's stop hung).
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_disconnectWhileRedisReadsNothing(self):
        from muxframe.engines.errors import EngineStopped
        from muxframe.engines.redisconn import RedisClient
        from tests.engine_contract import eventually
        server = RedisServer().start()
        self.addCleanup(server.stop)
        client = RedisClient(reactor, server.address, lambda *a: None, commandTimeout=1.0)
        yield client.connect()
        self.addCleanup(server.resume)
        server.pause()
        # More than the socket buffers hold: some waits in the transport.
        big = client.call("SET", "big", b"x" * (64 * 1024 * 1024))
        closed = client.disconnect()
        yield eventually(lambda: closed.called, timeout=10, what="the connections closed")
        yield self.assertFailure(big, EngineStopped)


class ResyncRetryTests(unittest.TestCase):
    """
    A resubscription handler that fails with the connections up (a Redis
    error reply such as BUSY, not an outage) is run again later, backing
    off, instead of logged once and forgotten (no reconnection would come
    to run it, and the watchers would keep what they missed).
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_failedResyncRunsAgain(self):
        from muxframe.engines.redisconn import RedisClient
        from tests.engine_contract import eventually
        server = RedisServer().start()
        self.addCleanup(server.stop)
        runs = []

        def resubscribed():
            runs.append(reactor.seconds())
            if len(runs) == 1:
                raise ValueError("BUSY Redis is busy running a script")
        client = RedisClient(reactor, server.address, lambda *a: None,
                             onResubscribed=resubscribed)
        client.resyncRetryInitial = 0.05
        yield client.connect()
        self.addCleanup(client.disconnect)
        yield client.psubscribe("n:*")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"CLIENT KILL TYPE pubsub\r\n")
            self.assertTrue(s.recv(64).startswith(b":1"))
        yield eventually(lambda: len(runs) == 2, timeout=30,
                         what="the resync run again")
        self.flushLoggedErrors(ValueError)
        self.assertGreaterEqual(runs[1] - runs[0], 0.05)


class RedisStopWhileStartingTests(unittest.TestCase):
    """
    An engine stopped once connected but before its start is done (its
    broker still subscribing) does not start afterwards: L{start} fails
    with L{EngineStopped}, and no sweep or retention pass runs on the
    stopped engine (they did, each logging a traceback at every interval
    for good).
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_stoppedDuringBrokerStart(self):
        from twisted.internet import task
        from muxframe.engines.errors import EngineStopped
        server = RedisServer().start()
        self.addCleanup(server.stop)
        engine = RedisEngine(server.address, retentionInterval=0.05, sweepInterval=0.05)
        subscribing = defer.Deferred()
        engine.broker.start = lambda: subscribing
        started = engine.start()
        while not subscribing.callbacks:
            yield task.deferLater(reactor, 0.01, lambda: None)
        yield engine.stop()
        # The broker's subscriptions end as the connection closes.
        subscribing.callback(None)
        yield self.assertFailure(started, EngineStopped)
        self.assertFalse(engine.running)
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(engine.presence.sweeps, 0)
        self.assertIsNone(engine._retention)
        self.assertEqual(self.flushLoggedErrors(), [])


class ToldMemoryTests(unittest.SynchronousTestCase):
    """
    What the Redis presence keeps of each watcher-target pair for its
    resync is one int (about 70 bytes a pair with the target's name
    interned, against about 190 as a tuple).
    """

    def test_roundTrip(self):
        from muxframe.engines.redispresence import _packTold, _unpackTold
        version = 1733270000000000
        for hidden in (False, True):
            for byResync in (False, True):
                told = _packTold(version, hidden, byResync)
                self.assertIsInstance(told, int)
                self.assertEqual(_unpackTold(told), (version, hidden, byResync))
        self.assertIsNone(_unpackTold(None))
