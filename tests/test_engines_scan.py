"""
The embedded engine's bulk decoders (L{muxframe.engines.recordscan}) and
the read ranges the sparse index plans (L{segments.Segment.spans}): they
must agree record for record with the one-record decoders of
L{muxframe.engines.logformat}.
"""

import os

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from muxframe.engines import logformat, recordscan, segments
from muxframe.engines.errors import CorruptRecord, StorageError
from muxframe.engines.model import Address, ReceiptKind, RecordKind

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=12)


def encodeAll(items, start=logformat.MAGIC_SIZE):
    """
    Frame C{(queue, kind, messageId, entity, device, payload)} items as
    journal records with LSNs and per-queue offsets from 1; return the
    file's bytes and, per record, C{(position, lsn, queue, offset)}.
    """
    data = [logformat.JOURNAL_MAGIC]
    position = start
    offsets = {}
    where = []
    for lsn, (queue, kind, messageId, entity, device, payload) in enumerate(items, 1):
        offsets[queue] = offsets.get(queue, 0) + 1
        record = logformat.encodeJournalRecord(kind, logformat.FLAG_RECEIPTS, lsn,
                                               offsets[queue], 1000 + lsn, queue, messageId,
                                               entity, device, payload)
        where.append((position, lsn, queue, offsets[queue]))
        data.append(record)
        position += len(record)
    return b"".join(data), where


class ScanJournalTests(SynchronousTestCase):
    """
    L{recordscan.scanJournal}, the recovery scan.
    """

    def scan(self, data):
        seen = []

        def add(*fields):
            seen.append(fields)
        goodEnd, fault = recordscan.scanJournal(data, logformat.MAGIC_SIZE, add)
        return seen, goodEnd, fault

    @given(st.lists(st.tuples(st.sampled_from(["alice", "bob", "\u00e9"]), names, names,
                              names, st.binary(max_size=100)), max_size=12), st.data())
    @settings(max_examples=100, deadline=None)
    def test_agreesWithScanFrames(self, items, data):
        """
        Cut anywhere, the scan reports the same records, good end and
        fault as L{logformat.scanFrames} plus L{logformat.decodeJournalRecord},
        with the dedup key L{logformat.recordKey} gives.
        """
        records = [(q, RecordKind.MESSAGE, m or "m", e, d if e else "", p)
                   for q, m, e, d, p in items]
        wire, _ = encodeAll(records)
        cut = data.draw(st.integers(logformat.MAGIC_SIZE, len(wire)))
        seen, goodEnd, fault = self.scan(wire[:cut])
        bodies, expectedEnd, expectedFault = logformat.scanFrames(wire[:cut],
                                                                  logformat.MAGIC_SIZE)
        self.assertEqual((goodEnd, fault), (expectedEnd, expectedFault))
        expected = []
        for position, body in bodies:
            record = logformat.decodeJournalRecord(body, position)
            expected.append((record.lsn, position, 8 + len(body), record.queue, record.offset,
                             record.timestamp, logformat.recordKey(record)))
        self.assertEqual(seen, expected)

    def test_receiptKey(self):
        """
        A RECEIPT record's key is the receipt's (L{logformat.receiptKey}).
        """
        payload = logformat.encodeReceiptPayload(ReceiptKind.READ, 7)
        wire, _ = encodeAll([("bob", RecordKind.RECEIPT, "m1", "alice", "phone", payload)])
        [fields], _, fault = self.scan(wire)
        self.assertIsNone(fault)
        self.assertEqual(fields[-1], logformat.receiptKey("alice", ReceiptKind.READ, 7))

    def test_sameBytesOtherSplit(self):
        """
        Two senders whose entity and device bytes read the same back to back
        ("ab" + "c", "a" + "bc") get their own keys.
        """
        wire, _ = encodeAll([("q", RecordKind.MESSAGE, "m", "ab", "c", b""),
                             ("q", RecordKind.MESSAGE, "m", "a", "bc", b"")])
        seen, _, _ = self.scan(wire)
        self.assertEqual([f[-1] for f in seen], [logformat.messageKey("ab", "c", "m"),
                                                 logformat.messageKey("a", "bc", "m")])

    def test_goodCrcBadBodyIsCorrupt(self):
        """
        A frame whose CRC is right but whose body is no journal record
        raises L{CorruptRecord} naming its position.
        """
        good, _ = encodeAll([("q", RecordKind.MESSAGE, "m", "e", "d", b"x")])
        bad = logformat.frame(b"\x09" + bytes(37))
        e = self.assertRaises(CorruptRecord, self.scan, good + bad)
        self.assertEqual(e.position, len(good))
        self.assertIn("unknown record type 9", str(e))
        short = logformat.frame(b"\x01" * 20)
        e = self.assertRaises(CorruptRecord, self.scan, good + short)
        self.assertEqual(e.position, len(good))
        name = bytearray(good)
        # The queue name's one byte, made an invalid UTF-8 start byte: the
        # frame is re-made so its CRC is right.
        body = bytes(name[16:])
        body = body[:38] + b"\xff" + body[39:]
        e = self.assertRaises(CorruptRecord, self.scan, logformat.JOURNAL_MAGIC
                              + logformat.frame(body))
        self.assertIn("UTF-8", str(e))


class ReadQueuedRecordsTests(SynchronousTestCase):
    """
    L{recordscan.readQueuedRecords}, the replay decoder, over a real file.
    """

    def setUp(self):
        self.path = self.mktemp()

    def write(self, items):
        wire, where = encodeAll(items)
        with open(self.path, "wb") as f:
            f.write(wire)
        return wire, where

    def test_interleavedQueue(self):
        """
        Only the wanted LSNs of the queue are decoded, in order, with their
        fields; other queues' records are stepped over.
        """
        items = []
        for i in range(30):
            items.append(("alice" if i % 3 == 0 else "bob", RecordKind.MESSAGE, "m%d" % i,
                          "carol", "phone", b"p%d" % i))
        wire, where = self.write(items)
        wanted = [lsn for _, lsn, queue, _ in where if queue == "alice"]
        out = recordscan.readQueuedRecords(
            [(self.path, logformat.MAGIC_SIZE, len(wire), wanted)], "alice", 1, 10 ** 6)
        self.assertEqual([r.offset for r in out], list(range(1, 11)))
        self.assertEqual([r.messageId for r in out], ["m%d" % i for i in range(0, 30, 3)])
        self.assertEqual([r.payload for r in out], [b"p%d" % i for i in range(0, 30, 3)])
        self.assertEqual({r.sender for r in out}, {Address("carol", "phone")})
        self.assertTrue(all(r.wantReceipts and r.kind == RecordKind.MESSAGE for r in out))

    def test_receiptAndSystemSender(self):
        """
        A RECEIPT record carries its L{Receipt}; a system record (no sender)
        has sender L{None}.
        """
        payload = logformat.encodeReceiptPayload(ReceiptKind.DELIVERED, 4)
        wire, _ = self.write([("bob", RecordKind.MESSAGE, "s1", "", "", b"hi"),
                              ("bob", RecordKind.RECEIPT, "m9", "alice", "tab", payload)])
        out = recordscan.readQueuedRecords(
            [(self.path, logformat.MAGIC_SIZE, len(wire), [1, 2])], "bob", 1, 10 ** 6)
        self.assertIsNone(out[0].sender)
        self.assertEqual(out[1].receipt.entity, "alice")
        self.assertEqual(out[1].receipt.device, "tab")
        self.assertEqual(out[1].receipt.offset, 4)
        self.assertEqual(out[1].receipt.kind, ReceiptKind.DELIVERED)

    def test_maxBytesCut(self):
        """
        The list is cut after the first record taking the payloads past
        C{maxBytes} (always at least one record).
        """
        wire, _ = self.write([("q", RecordKind.MESSAGE, "m%d" % i, "e", "d", b"x" * 10)
                              for i in range(5)])
        plan = [(self.path, logformat.MAGIC_SIZE, len(wire), [1, 2, 3, 4, 5])]
        self.assertEqual(len(recordscan.readQueuedRecords(plan, "q", 1, 25)), 2)
        self.assertEqual(len(recordscan.readQueuedRecords(plan, "q", 1, 1)), 1)

    def test_missingOrMisplaced(self):
        """
        A wanted LSN not in the range, a record of another queue or offset
        where one was due, and a flipped byte are L{StorageError}s.
        """
        wire, _ = self.write([("q", RecordKind.MESSAGE, "m%d" % i, "e", "d", b"abc")
                              for i in range(4)])
        read = recordscan.readQueuedRecords
        self.assertRaises(StorageError, read,
                          [(self.path, logformat.MAGIC_SIZE, len(wire), [2, 9])], "q", 2, 10 ** 6)
        self.assertRaises(StorageError, read,
                          [(self.path, logformat.MAGIC_SIZE, len(wire), [1])], "other", 1, 10 ** 6)
        self.assertRaises(StorageError, read,
                          [(self.path, logformat.MAGIC_SIZE, len(wire), [1])], "q", 5, 10 ** 6)
        with open(self.path, "r+b") as f:
            f.seek(len(wire) - 1)
            f.write(b"Z")
        self.assertRaises(StorageError, read,
                          [(self.path, logformat.MAGIC_SIZE, len(wire), [4])], "q", 4, 10 ** 6)


class SpansTests(SynchronousTestCase):
    """
    L{segments.Segment.spans}: the byte ranges a read of some LSNs takes.
    """

    def segment(self, count, size=100, interval=1000):
        # Records of 100 bytes, a sparse entry every 10 records.
        s = segments.Segment(1, logformat.MAGIC_SIZE, interval)
        for lsn in range(1, count + 1):
            s.add(lsn, s.size, size, "q", lsn, 0, os.urandom(16))
        return s

    def covered(self, s, lsns, spans):
        # Every wanted LSN's record lies inside the range holding it.
        starts = {}
        position = logformat.MAGIC_SIZE
        for lsn in range(1, s.nextLsn):
            starts[lsn] = position
            position += 100
        for start, end, i, j in spans:
            for lsn in lsns[i:j]:
                self.assertTrue(start <= starts[lsn] and starts[lsn] + 100 <= end)
        self.assertEqual([k for _, _, i, j in spans for k in range(i, j)],
                         list(range(len(lsns))))

    def test_denseIsOneRange(self):
        """
        Every record wanted: one range from the first one's sparse entry
        to the segment's end.
        """
        s = self.segment(1000)
        lsns = list(range(5, 1001))
        spans = s.spans(lsns, 0, len(lsns))
        self.assertEqual(spans, [(logformat.MAGIC_SIZE, s.size, 0, len(lsns))])
        self.covered(s, lsns, spans)

    def test_sparseIsSplit(self):
        """
        Two records far apart are read as two small ranges, not everything
        between them; a record per window keeps one range.
        """
        s = self.segment(1000)
        lsns = [3, 995]
        spans = s.spans(lsns, 0, 2)
        self.assertEqual(len(spans), 2)
        self.assertTrue(all(end - start <= 1000 + 100 for start, end, _, _ in spans))
        self.covered(s, lsns, spans)
        lsns = list(range(1, 1001, 10))
        spans = s.spans(lsns, 0, len(lsns))
        self.assertEqual(len(spans), 1)
        self.covered(s, lsns, spans)

    @given(st.sets(st.integers(1, 500), min_size=1))
    @settings(max_examples=100, deadline=None)
    def test_boundedReads(self, wanted):
        """
        Any set of LSNs is covered, in order, by ranges that read no more
        than about two sparse windows per record wanted.
        """
        s = self.segment(500)
        lsns = sorted(wanted)
        spans = s.spans(lsns, 0, len(lsns))
        self.covered(s, lsns, spans)
        read = sum(end - start for start, end, _, _ in spans)
        self.assertLessEqual(read, (2 * len(lsns) + 2) * 1100)

    def test_beforeSegment(self):
        """
        An LSN before the segment is a L{StorageError}.
        """
        s = segments.Segment(10, logformat.MAGIC_SIZE, 1000)
        s.add(10, s.size, 100, "q", 1, 0, bytes(16))
        self.assertRaises(StorageError, s.spans, [9], 0, 1)
