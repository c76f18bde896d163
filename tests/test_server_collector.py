"""
The server's garbage collector settings (L{muxframe.server.collector}):
what they do to the process, and that the C{xtmp} twistd role applies
them (after its storage started) while a server made by other code
leaves its process alone.
"""

import gc
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe.demo import freePort
from muxframe.server.collector import YOUNG_THRESHOLD, applyServerCollector
from muxframe.server.service import XTMPServerService
from muxframe.server.tap import XTMPOptions, makeService

from tests.test_server_tap import writeSetup


def keepCollector(testCase):
    """
    Put the process's collector back as it was after C{testCase}.
    """
    saved = gc.get_threshold()

    def restore():
        gc.unfreeze()
        gc.set_threshold(*saved)
    testCase.addCleanup(restore)
    gc.unfreeze()
    gc.set_threshold(700, *saved[1:])


class ApplyTests(SynchronousTestCase):
    """
    L{applyServerCollector}.
    """

    def setUp(self):
        keepCollector(self)

    def test_freezesAndRaisesTheYoungThreshold(self):
        middle, old = gc.get_threshold()[1:]
        self.assertTrue(applyServerCollector(12345))
        self.assertEqual(gc.get_threshold(), (12345, middle, old))
        self.assertGreater(gc.get_freeze_count(), 0)

    def test_default(self):
        applyServerCollector()
        self.assertEqual(gc.get_threshold()[0], YOUNG_THRESHOLD)

    def test_zeroChangesNothing(self):
        before = gc.get_threshold()
        self.assertFalse(applyServerCollector(0))
        self.assertEqual(gc.get_threshold(), before)
        self.assertEqual(gc.get_freeze_count(), 0)


class RoleTests(TestCase):
    """
    The twistd role's service applies C{server.gc_threshold} once its
    storage is recovered; other servers do not touch the collector.
    """

    def setUp(self):
        keepCollector(self)
        self.directory = os.path.abspath(self.mktemp())
        extra = {"server": {"gc_threshold": 23456},
                 "storage": {"engine": "embedded",
                             "directory": os.path.join(self.directory, "data")}}
        self.path = writeSetup(self.directory, freePort(), extra)
        # Its handlers' module, as twistd would find it on PYTHONPATH.
        import sys
        sys.path.insert(0, self.directory)
        self.addCleanup(sys.path.remove, self.directory)
        self.addCleanup(sys.modules.pop, "xtmpapp", None)

    def options(self):
        options = XTMPOptions()
        options.parseOptions(["--config", self.path])
        return options

    def test_roleTunesTheCollector(self):
        role = makeService(self.options(), reactor)
        mains = [s for s in role if isinstance(s, XTMPServerService)]
        self.assertEqual(len(mains), 1)
        self.assertTrue(mains[0].tuneCollector)

    @inlineCallbacks
    def serve(self, tune):
        main = XTMPServerService(self.options().config, reactor, tuneCollector=tune)
        main.startService()
        try:
            yield main.storage.whenStarted()
        finally:
            yield main.stopService()

    @inlineCallbacks
    def test_appliedAfterStorageStarts(self):
        yield self.serve(True)
        self.assertEqual(gc.get_threshold()[0], 23456)
        self.assertGreater(gc.get_freeze_count(), 0)

    @inlineCallbacks
    def test_notAppliedOutsideTheRole(self):
        yield self.serve(False)
        self.assertEqual(gc.get_threshold()[0], 700)
        self.assertEqual(gc.get_freeze_count(), 0)
