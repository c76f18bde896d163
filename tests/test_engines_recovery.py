"""
The embedded engine's files: a real writer process killed with SIGKILL,
torn and corrupt tails, segment rolls and their index files, retention
deleting segments, the lock, key/value compaction, flush failures and the
pending-bytes limit.
"""

import os
import selectors
import signal
import subprocess
import sys
import time

from twisted.internet import defer
from twisted.trial import unittest

from muxframe.engines import logformat
from muxframe.engines.durable import KeyValueFile, inlineRunner
from muxframe.engines.embedded import EmbeddedEngine
from muxframe.engines.errors import LimitExceeded, StorageError
from muxframe.engines.journal import Journal
from muxframe.engines.model import Address, QueueMessage, QueueRetention, ReceiptKind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def message(i, size=100, receipts=True):
    return QueueMessage("m%d" % i, (b"%d:" % i).ljust(size, b"x"), Address("bob", "phone"),
                        receipts)


def runWriter(directory, acksWanted, start=0, timeout=60.0, redis=None):
    """
    Run tests/engine_writer.py on C{directory} (or the Redis at C{redis});
    SIGKILL it once it printed C{acksWanted} acknowledgements.  Returns the
    acknowledgements as a list of C{(queue, messageId, offset)}.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    where = ["--redis", redis] if redis else [directory]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.engine_writer"] + where + ["--start", str(start)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    acks = []
    buffered = b""
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        while len(acks) < acksWanted and time.monotonic() < deadline:
            if not selector.select(timeout=1.0):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                if line.startswith(b"ack "):
                    _, queue, messageId, offset = line.decode().split()
                    acks.append((queue, messageId, int(offset)))
                elif line.startswith(b"error"):
                    raise AssertionError(line.decode())
    finally:
        selector.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    if len(acks) < acksWanted:
        raise AssertionError("writer gave %d acks: %s" % (len(acks), stderr[-2000:]))
    return acks


class CrashTests(unittest.TestCase):
    """
    A writer process killed with SIGKILL mid-stream loses nothing it
    acknowledged, twice over, with resends deduplicated.
    """

    @defer.inlineCallbacks
    def test_sigkillMidStream(self):
        """
        Kill a writer after 3000 acknowledgements; restart it from the first
        message (every acknowledged one is resent) and kill it again; then
        every acknowledged message is in its queue exactly once, at the
        offset its acknowledgement named, in sending order, and the
        offsets are contiguous.
        """
        directory = os.path.abspath(self.mktemp())
        first = runWriter(directory, 3000)
        second = runWriter(directory, 5000, start=0)
        engine = EmbeddedEngine(directory, retentionInterval=0)
        yield engine.start()
        self.addCleanup(engine.stop)
        yield checkAcknowledged(self, engine, first, second)

    @defer.inlineCallbacks
    def test_sigkillRedisNode(self):
        """
        The same with the Redis engine: a node killed mid-stream (twice)
        loses nothing it acknowledged; another node sees every message
        exactly once, in order.
        """
        from muxframe.engines.redisengine import RedisEngine
        from tests.redisserver import RedisServer
        server = RedisServer(appendonly=True).start()
        self.addCleanup(server.stop)
        first = runWriter(None, 1500, redis=server.address)
        second = runWriter(None, 2500, start=0, redis=server.address)
        engine = RedisEngine(server.address, retentionInterval=0)
        yield engine.start()
        self.addCleanup(engine.stop)
        yield checkAcknowledged(self, engine, first, second)


@defer.inlineCallbacks
def checkAcknowledged(test, engine, first, second):
    """
    Every message acknowledged in either run is stored exactly once, at the
    offset its acknowledgement named (resends got the same one), in sending
    order, with contiguous offsets.
    """
    firstOffsets = {(q, m): o for q, m, o in first}
    for q, m, o in second:
        if (q, m) in firstOffsets:
            test.assertEqual(firstOffsets[(q, m)], o, "a resend got a new offset")
    acked = {}
    for q, m, o in first + second:
        acked[(q, m)] = o
    test.assertGreater(len(acked), len(second) - 200)
    for queue in sorted({q for q, _ in acked}):
        records, offset = [], 1
        while True:
            batch = yield engine.queues.fetch(queue, offset, limit=5000, maxBytes=10 ** 8)
            if not batch:
                break
            records.extend(batch)
            offset = batch[-1].offset + 1
        test.assertEqual([r.offset for r in records], list(range(1, len(records) + 1)))
        ids = [r.messageId for r in records]
        test.assertEqual(len(ids), len(set(ids)), "a message stored twice")
        byId = {r.messageId: r for r in records}
        mine = sorted((m, o) for (q, m), o in acked.items() if q == queue)
        for m, o in mine:
            test.assertIn(m, byId, "acknowledged %s of %s lost" % (m, queue))
            test.assertEqual(byId[m].offset, o)
            test.assertTrue(byId[m].payload.startswith(("%s:%s:" % (queue, m)).encode()))
        # Sending order is offset order.
        test.assertEqual([o for _, o in mine], sorted(o for _, o in mine))


class TornTailTests(unittest.TestCase):
    """
    Recovery from a segment cut mid-record or ending in garbage.
    """

    def setUp(self):
        self.directory = self.mktemp()

    @defer.inlineCallbacks
    def filled(self, count=50, **settings):
        settings.setdefault("retentionInterval", 0)
        engine = EmbeddedEngine(self.directory, **settings)
        yield engine.start()
        for i in range(count):
            yield engine.queues.append("alice", message(i))
        yield engine.stop()

    def activeSegment(self):
        journal = os.path.join(self.directory, "journal")
        logs = sorted(n for n in os.listdir(journal) if n.endswith(".log"))
        return os.path.join(journal, logs[-1])

    @defer.inlineCallbacks
    def reopen(self, **settings):
        settings.setdefault("retentionInterval", 0)
        engine = EmbeddedEngine(self.directory, **settings)
        yield engine.start()
        self.addCleanup(engine.stop)
        return engine

    @defer.inlineCallbacks
    def test_cutMidRecord(self):
        """
        A segment cut inside its last record recovers to the record before,
        reports the bytes dropped, and appends continue from there.
        """
        yield self.filled(50)
        path = self.activeSegment()
        with open(path, "rb") as f:
            data = f.read()
        bodies, _, _ = logformat.scanFrames(data, logformat.MAGIC_SIZE)
        lastStart = bodies[-1][0]
        os.truncate(path, len(data) - 7)
        engine = yield self.reopen()
        self.assertEqual(engine.recovery.truncatedBytes, len(data) - 7 - lastStart)
        self.assertEqual(os.path.getsize(path), lastStart)
        records = yield engine.queues.fetch("alice", 1, limit=100)
        self.assertEqual([r.offset for r in records], list(range(1, 50)))
        appended = yield engine.queues.append("alice", message(99))
        self.assertEqual(appended.offset, 50)
        records = yield engine.queues.fetch("alice", 49, limit=100)
        self.assertEqual([r.messageId for r in records], ["m48", "m99"])

    @defer.inlineCallbacks
    def test_everyCutRecovers(self):
        """
        Cutting the active segment at every position inside its last two
        records always recovers exactly the records that end before the cut.
        """
        yield self.filled(3)
        path = self.activeSegment()
        with open(path, "rb") as f:
            data = f.read()
        bodies, end, _ = logformat.scanFrames(data, logformat.MAGIC_SIZE)
        ends = [p + 8 + len(b) for p, b in bodies]
        for cut in range(ends[0], len(data), 13):
            with open(path, "wb") as f:
                f.write(data[:cut])
            engine = EmbeddedEngine(self.directory, retentionInterval=0)
            yield engine.start()
            records = yield engine.queues.fetch("alice", 1)
            yield engine.stop()
            self.assertEqual(len(records), len([e for e in ends if e <= cut]), cut)
        with open(path, "wb") as f:
            f.write(data)

    @defer.inlineCallbacks
    def test_garbageTail(self):
        """
        Garbage after the last record (a write of zeros or noise the disk
        kept) is truncated.
        """
        yield self.filled(10)
        path = self.activeSegment()
        with open(path, "ab") as f:
            f.write(b"\x00\x00\x01\x00garbage" + os.urandom(100))
        engine = yield self.reopen()
        self.assertEqual(engine.recovery.truncatedBytes, 111)
        records = yield engine.queues.fetch("alice", 1)
        self.assertEqual(len(records), 10)

    @defer.inlineCallbacks
    def test_corruptMiddleIsAnError(self):
        """
        A CRC-valid record with an LSN out of sequence is not a torn tail:
        the engine refuses to start rather than truncate acknowledged data.
        """
        yield self.filled(5)
        path = self.activeSegment()
        with open(path, "ab") as f:
            f.write(logformat.encodeJournalRecord(1, 0, 999, 1, 0, "alice", "x", "", "", b""))
        engine = EmbeddedEngine(self.directory, retentionInterval=0)
        yield self.assertFailure(engine.start(), StorageError)


class SegmentTests(unittest.TestCase):
    """
    Segments roll, get index files, are reloaded from them, rebuilt when
    the index is damaged, and deleted by retention.
    """

    def setUp(self):
        self.directory = self.mktemp()
        self.journal = os.path.join(self.directory, "journal")

    @defer.inlineCallbacks
    def engine(self, **settings):
        settings.setdefault("retentionInterval", 0)
        settings.setdefault("segmentBytes", 8192)
        settings.setdefault("retention", QueueRetention(None, None, True))
        engine = EmbeddedEngine(self.directory, **settings)
        yield engine.start()
        return engine

    def files(self, suffix):
        return sorted(n for n in os.listdir(self.journal) if n.endswith(suffix))

    @defer.inlineCallbacks
    def test_rollAndIndex(self):
        """
        Segments roll at segmentBytes; sealed ones get an index file and are
        loaded from it on restart (not scanned); a damaged or missing index
        is rebuilt by scanning; the manifest lists the segments.
        """
        e = yield self.engine()
        for i in range(200):
            yield e.queues.append("q%d" % (i % 3), message(i))
        yield e.stop()
        logs, idxs = self.files(".log"), self.files(".idx")
        self.assertGreater(len(logs), 3)
        self.assertEqual(len(idxs), len(logs) - 1)
        e = yield self.engine()
        self.assertEqual(e.recovery.scanned, [e.journal.segments[-1].base])
        yield e.stop()
        with open(os.path.join(self.journal, idxs[0]), "r+b") as f:
            f.seek(30)
            f.write(b"\xff")
        os.unlink(os.path.join(self.journal, idxs[1]))
        e = yield self.engine()
        self.addCleanup(e.stop)
        self.assertEqual(len(e.recovery.scanned), 3)
        total = 0
        for q in range(3):
            records = yield e.queues.fetch("q%d" % q, 1, limit=1000)
            self.assertEqual([r.offset for r in records], list(range(1, len(records) + 1)))
            total += len(records)
        self.assertEqual(total, 200)
        with open(os.path.join(self.journal, "MANIFEST")) as f:
            manifest = f.read()
        for name in logs:
            self.assertIn(str(int(name[:20])), manifest)

    @defer.inlineCallbacks
    def test_retentionDeletesSegments(self):
        """
        Once every record of a sealed segment is acknowledged it is deleted
        (log and index), the manifest forgets it, and offsets go on from
        the floor after a restart even though no record of the queue is
        left.
        """
        e = yield self.engine()
        for i in range(100):
            # No receipts: they would be records of bob's queue, kept.
            yield e.queues.append("alice", message(i, 200, receipts=False))
        yield e.queues.position("alice", "phone")
        for o in range(1, 101):
            yield e.queues.acknowledge("alice", "phone", o, ReceiptKind.DELIVERED)
        before = len(self.files(".log"))
        deleted = yield e.queues.applyRetention()
        self.assertEqual(deleted, before - 1)
        self.assertEqual(len(self.files(".log")), 1)
        self.assertEqual(self.files(".idx"), [])
        yield e.stop()
        e = yield self.engine()
        self.addCleanup(e.stop)
        appended = yield e.queues.append("alice", message(1000))
        self.assertEqual(appended.offset, 101)
        p = yield e.queues.position("alice", "phone")
        self.assertEqual(p.delivered, 100)

    @defer.inlineCallbacks
    def test_journalByteCap(self):
        """
        Past maxJournalBytes the oldest segments go, acknowledged or not,
        and the loss is counted.
        """
        e = yield self.engine(maxJournalBytes=20000)
        self.addCleanup(e.stop)
        for i in range(200):
            yield e.queues.append("alice", message(i, 200))
        yield e.queues.applyRetention()
        self.assertLessEqual(e.journal.totalBytes, 20000 + 8192)
        self.assertGreater(e.queues.stats()["droppedByCap"], 0)
        records = yield e.queues.fetch("alice", 1, limit=1000)
        self.assertEqual(records[-1].offset, 200)
        self.assertEqual(len(records), 200 - e.queues.stats()["droppedByCap"])


class FileTests(unittest.TestCase):
    """
    The lock, key/value compaction, flush failures and limits.
    """

    @defer.inlineCallbacks
    def test_lock(self):
        """
        A second engine on a directory in use fails with StorageError.
        """
        directory = self.mktemp()
        e = EmbeddedEngine(directory, retentionInterval=0)
        yield e.start()
        self.addCleanup(e.stop)
        other = EmbeddedEngine(directory, retentionInterval=0)
        failure = yield self.assertFailure(other.start(), StorageError)
        self.assertIn("in use", str(failure))

    @defer.inlineCallbacks
    def test_keyValueCompaction(self):
        """
        A key/value file rewritten over and over is compacted atomically and
        replays to the same table, torn tail or not.
        """
        path = self.mktemp()
        kv = KeyValueFile(path, inlineRunner, compactAbove=4096)
        kv.open()
        for i in range(2000):
            yield kv.put(b"k%d" % (i % 10), b"v%d" % i)
        yield kv.delete(b"k0")
        self.assertLess(os.path.getsize(path), 4096 * 2)
        kv.close()
        with open(path, "ab") as f:
            f.write(logformat.encodeKeyValue(logformat.KV_PUT, b"torn", b"x")[:-2])
        again = KeyValueFile(path, inlineRunner)
        self.assertGreater(again.open(), 0)
        self.assertEqual(dict(again.items()), {b"k%d" % i: b"v%d" % (1990 + i)
                                               for i in range(1, 10)})
        again.close()

    @defer.inlineCallbacks
    def test_flushFailureIsFatal(self):
        """
        A failed write or fsync fails the waiting appends and every later
        one with StorageError (no retry that could lie about durability).
        """
        def failing(f, *args):
            return defer.fail(OSError(5, "Input/output error"))
        journal = Journal(self.mktemp(), failing)
        journal.open()
        _, d = journal.append(1, 0, "q", 1, 0, "m", "", "", b"x", b"k" * 16)
        yield self.assertFailure(d, StorageError)
        self.assertRaises(StorageError, journal.append, 1, 0, "q", 2, 0, "m2", "", "", b"x",
                          b"k" * 16)

    def test_pendingLimit(self):
        """
        Appends beyond maxPendingBytes waiting for the disk are refused with
        LimitExceeded, not buffered without bound.
        """
        # The disk never answers: every flush stays in progress.
        journal = Journal(self.mktemp(), lambda f, *a: defer.Deferred(), maxPendingBytes=10000)
        journal.open()
        e = None
        for i in range(200):
            try:
                journal.append(1, 0, "q", i + 1, 0, "m%d" % i, "", "", b"x" * 100, b"k" * 16)
            except LimitExceeded as error:
                e = error
                break
        self.assertIsNotNone(e)
        self.assertEqual(e.limit, "maxPendingBytes")
        self.assertLess(i, 100)

    def test_commitsFromCallbacksShareOneFlush(self):
        """
        Commits made while a flush's Deferreds fire (each acknowledged
        sender appending again) wait until all of them fired and then share
        one flush, instead of the first starting a flush of its own and the
        others the next one; each fires only after the flush covering it,
        with its own value.
        """
        jobs = []

        def runner(f, *args):
            d = defer.Deferred()
            jobs.append((f, d))
            return d

        def complete():
            job, d = jobs.pop(0)
            d.callback(job())
        journal = Journal(self.mktemp(), runner)
        journal.open()
        fired = []
        offsets = iter(range(1, 100))

        def append(value):
            journal.append(1, 0, "q", next(offsets), 0, "m%d" % value, "", "", b"x",
                           b"%16d" % value, commit=False)
            return journal.flush(value)

        def again(value):
            fired.append(value)
            if value < 10:
                append(value + 10).addCallback(fired.append)
        append(0).addCallback(fired.append)
        for i in range(1, 4):
            append(i).addCallback(again)
        # The first flush (record 0) runs; 1-3 wait for the next.
        complete()
        self.assertEqual((fired, len(jobs)), ([0], 1))
        complete()
        # 1-3 fired; the three records their callbacks appended, one flush.
        self.assertEqual((fired, len(jobs), journal.durableLsn), ([0, 1, 2, 3], 1, 4))
        complete()
        self.assertEqual(fired, [0, 1, 2, 3, 11, 12, 13])
        self.assertEqual((journal.durableLsn, journal.flushes, jobs), (7, 3, []))
