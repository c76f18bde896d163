"""
The embedded engine, the default: everything in one process, queues and
subscriptions on local disk, presence and history in memory, fan-out
in-process.  Needs nothing installed.

Directory layout::

    DIR/LOCK             held (flock) while an engine uses DIR
    DIR/journal/         the queue journal: MANIFEST, NNN.log, NNN.idx
    DIR/offsets.kv       consumer positions and offset floors
    DIR/presence.kv      subscriptions and visibility
"""

import fcntl
import os
import uuid

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from muxframe.engines.durable import KeyValueFile, ThreadRunner, inlineRunner
from muxframe.engines.embeddedpresence import EmbeddedPresence
from muxframe.engines.embeddedqueues import EmbeddedQueueStore
from muxframe.engines.errors import StorageError
from muxframe.engines.history import HistoryTable
from muxframe.engines.interfaces import IBroker, IEngine, IHistoryStore
from muxframe.engines.journal import Journal
from muxframe.engines.model import Delivery, DeliveryKind, QueueRetention, checkName
from muxframe.engines.subjects import checkSubject, matches

log = Logger()


@implementer(IBroker)
class LocalBroker:
    """
    Fan-out within this process: a publication reaches this node's receiver
    when one of its interests matches.
    """

    def __init__(self, nodeId):
        self.nodeId = nodeId
        self._receiver = None
        self._interests = {}
        self._cache = {}

    def setReceiver(self, callback):
        """
        See L{IBroker.setReceiver}.
        """
        self._receiver = callback

    def addInterest(self, pattern):
        """
        See L{IBroker.addInterest}.
        """
        checkSubject(pattern, wildcards=True)
        self._interests[pattern] = self._interests.get(pattern, 0) + 1
        self._cache.clear()
        return defer.succeed(None)

    def removeInterest(self, pattern):
        """
        See L{IBroker.removeInterest}.
        """
        count = self._interests.get(pattern, 0)
        if count <= 1:
            self._interests.pop(pattern, None)
        else:
            self._interests[pattern] = count - 1
        self._cache.clear()
        return defer.succeed(None)

    def _interested(self, subject):
        hit = self._cache.get(subject)
        if hit is None:
            hit = any(matches(p, subject) for p in self._interests)
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[subject] = hit
        return hit

    def _deliver(self, kind, subject, payload):
        if self._receiver is None:
            return 0
        try:
            self._receiver(Delivery(kind, subject, payload, self.nodeId))
        except Exception:
            log.failure("broker receiver raised for {subject!r}", subject=subject)
        return 1

    def publish(self, subject, payload):
        """
        See L{IBroker.publish}.
        """
        try:
            checkSubject(subject)
        except Exception:
            return defer.fail()
        if not self._interested(subject):
            return defer.succeed(0)
        return defer.succeed(self._deliver(DeliveryKind.SUBJECT, subject, bytes(payload)))

    def broadcast(self, payload):
        """
        See L{IBroker.broadcast}.
        """
        return defer.succeed(self._deliver(DeliveryKind.BROADCAST, "", bytes(payload)))

    def sendToNode(self, nodeId, payload):
        """
        See L{IBroker.sendToNode}: only this node exists.
        """
        if nodeId != self.nodeId:
            return defer.succeed(0)
        return defer.succeed(self._deliver(DeliveryKind.NODE, nodeId, bytes(payload)))


@implementer(IHistoryStore)
class MemoryHistory:
    """
    Channel history in memory: a new epoch for every channel at every start.
    """

    def __init__(self, clock, maxChannels=100000, maxBytes=256 * 1024 * 1024):
        self._clock = clock
        self.table = HistoryTable(lambda: uuid.uuid4().hex[:16], maxChannels, maxBytes)

    def _now(self):
        return int(self._clock.seconds() * 1000)

    def add(self, channel, payload, options):
        """
        See L{IHistoryStore.add}.
        """
        return defer.maybeDeferred(self.table.add, channel, payload, options, self._now())

    def position(self, channel):
        """
        See L{IHistoryStore.position}.
        """
        return defer.maybeDeferred(self.table.position, channel, self._now())

    def recover(self, channel, since, limit=None):
        """
        See L{IHistoryStore.recover}.
        """
        return defer.maybeDeferred(self.table.recover, channel, since, self._now(), limit)

    def recent(self, channel, limit):
        """
        See L{IHistoryStore.recent}.
        """
        return defer.maybeDeferred(self.table.recent, channel, limit, self._now())


@implementer(IEngine)
class EmbeddedEngine:
    """
    The embedded engine on C{directory}.

    @param reactor: for the thread pool that writes and fsyncs.
    @param clock: an C{IReactorTime} for timers and "now" (default: the
        reactor).
    @param syncInThread: run file writes, fsyncs and reads in a thread pool
        (the default); False runs them inline (tests with a fake clock).
    @param retentionInterval: seconds between retention passes.
    @param maxKnownDevices: devices with a queue position per entity at
        most (L{muxframe.engines.queuestate}).
    @param maxQueues: queues kept at most (L{EmbeddedQueueStore}).
    """

    def __init__(self, directory, reactor=None, clock=None, nodeId=None,
                 retention=QueueRetention(), segmentBytes=64 * 1024 * 1024, indexInterval=4096,
                 maxPendingBytes=64 * 1024 * 1024, dedupWindow=100000, maxJournalBytes=None,
                 maxKnownDevices=1024, maxQueues=1000000,
                 retentionInterval=10.0, deviceTimeout=30.0, maxDevices=64, maxActivityTtl=60,
                 maxSubscriptions=10000, maxWatchers=100000, historyMaxChannels=100000,
                 historyMaxBytes=256 * 1024 * 1024, threads=2, syncInThread=True):
        if reactor is None:
            from twisted.internet import reactor
        self.directory = directory
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.nodeId = checkName(nodeId or "node-" + uuid.uuid4().hex[:12], "node id")
        self.retentionInterval = retentionInterval
        self._pool = ThreadPool(1, max(1, threads), "muxframe-engine") if syncInThread else None
        runner = ThreadRunner(reactor, self._pool) if syncInThread else inlineRunner
        self._runner = runner
        self.journal = Journal(os.path.join(directory, "journal"), runner, segmentBytes,
                               indexInterval, maxPendingBytes)
        self._offsets = KeyValueFile(os.path.join(directory, "offsets.kv"), runner)
        self._presenceStore = KeyValueFile(os.path.join(directory, "presence.kv"), runner)
        self.broker = LocalBroker(self.nodeId)
        self.presence = EmbeddedPresence(self._presenceStore, self._clock, self.nodeId,
                                         deviceTimeout, maxDevices, maxActivityTtl,
                                         maxSubscriptions, maxWatchers)
        # A device online is never forgotten to make room for another.
        self.queues = EmbeddedQueueStore(self.journal, self._offsets, self._clock, retention,
                                         dedupWindow, maxJournalBytes=maxJournalBytes,
                                         maxKnownDevices=maxKnownDevices, maxQueues=maxQueues,
                                         isOnline=self.presence.table.isOnline)
        self.history = MemoryHistory(self._clock, historyMaxChannels, historyMaxBytes)
        self._retention = None
        self._shutdownTrigger = None
        self._lock = None
        self.recovery = None
        self.running = False

    def claim(self):
        """
        Create the directory and take its lock now, before L{start} (which
        does it otherwise): a process can refuse to run on a directory in
        use before it listens.

        @raise StorageError: another engine holds the directory, or it
            cannot be created.
        """
        if self._lock is not None:
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
            lock = os.open(os.path.join(self.directory, "LOCK"),
                           os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError("%s: %s" % (self.directory, e.strerror or e))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            raise StorageError("%s is in use by another engine" % (self.directory,))
        self._lock = lock

    def _openFiles(self):
        self.claim()
        try:
            report = self.journal.open()
            self._offsets.open()
            self._presenceStore.open()
        except Exception:
            self._unlock()
            raise
        return report

    def _unlock(self):
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def start(self):
        """
        Recover the directory (in the thread pool) and start; see
        L{IEngine.start}.
        """
        if self._pool is not None:
            self._pool.start()
            # Never leave the pool's threads keeping a stopping process up.
            self._shutdownTrigger = self._reactor.addSystemEventTrigger(
                "during", "shutdown", self._reactorShutdown)
        d = self._runner(self._openFiles)

        def opened(report):
            self.recovery = report
            self.queues.open()
            self.presence.open()
            self.running = True
            if report.truncatedBytes:
                log.warn("journal recovered: {bytes} bytes of torn tail dropped at {at}",
                         bytes=report.truncatedBytes, at=report.truncatedAt)
            if self.retentionInterval:
                self._retention = LoopingCall(self._retentionPass)
                self._retention.clock = self._clock
                self._retention.start(self.retentionInterval, now=False)
            return self

        def failed(failure):
            self._stopPool()
            return failure
        return d.addCallbacks(opened, failed)

    def _retentionPass(self):
        d = self.queues.applyRetention()
        d.addErrback(lambda f: log.failure("retention pass failed", f))
        return None

    def stop(self):
        """
        Flush and close everything; see L{IEngine.stop}.
        """
        if not self.running:
            return defer.succeed(None)
        self.running = False
        if self._retention is not None and self._retention.running:
            self._retention.stop()
        self.presence.close()
        self.queues.close()
        # Acknowledgements already taken finish (receipts, then the
        # position) before the files they write close under them.
        d = self.queues.settled()

        def flushed(_):
            ds = [self.journal.close(), self._offsets.flush(), self._presenceStore.flush()]
            return defer.DeferredList(ds, consumeErrors=True)
        d.addCallback(flushed)

        def closed(results):
            self._offsets.close()
            self._presenceStore.close()
            self._unlock()
            self._stopPool()
            for ok, result in results:
                if not ok:
                    return result
        return d.addCallback(closed)

    def _reactorShutdown(self):
        self._shutdownTrigger = None
        self._stopPool()

    def _stopPool(self):
        if self._shutdownTrigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdownTrigger)
            self._shutdownTrigger = None
        if self._pool is not None and self._pool.started:
            self._pool.stop()
