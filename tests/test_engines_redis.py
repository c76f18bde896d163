"""
The Redis engine against a real redis-server: the contract suite (one
node), the cross-node contract (two engine instances on one Redis), and
what only the Redis engine does.
"""

from twisted.internet import defer
from twisted.trial import unittest

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
