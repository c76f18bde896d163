"""
The embedded engine: the contract suite, and what only it does (files,
recovery, segments, locks).
"""

from twisted.internet import defer
from twisted.trial import unittest

from muxframe.engines.embedded import EmbeddedEngine
from muxframe.engines.model import ReceiptKind
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
