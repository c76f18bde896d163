"""
The embedded engine: the contract suite, and what only it does (files,
recovery, segments, locks).
"""

import os

from twisted.internet import defer
from twisted.trial import unittest

from muxframe.engines.embedded import EmbeddedEngine
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
