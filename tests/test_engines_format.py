"""
The embedded engine's on-disk format, without a file: record framing,
journal and key/value records, the segment index and the manifest.
"""

import struct
import zlib

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from muxframe.engines import logformat, segments
from muxframe.engines.errors import CorruptRecord, StorageError
from muxframe.engines.model import ReceiptKind, RecordKind

names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
payloads = st.binary(max_size=300)


def journalRecord(lsn=1, offset=1, queue="alice", payload=b"hello", kind=RecordKind.MESSAGE,
                  messageId="m1", sender=("bob", "phone"), timestamp=1000):
    return logformat.encodeJournalRecord(kind, logformat.FLAG_RECEIPTS, lsn, offset, timestamp,
                                         queue, messageId, sender[0], sender[1], payload)


class FramingTests(SynchronousTestCase):

    def test_layoutByteForByte(self):
        """
        A journal record is length u32, CRC-32 u32 of the body, then the
        body: type, flags, lsn, offset, timestamp, the lengths of queue,
        message id, sender entity, sender device (u16) and payload (u32),
        then those fields, all big-endian.
        """
        wire = logformat.encodeJournalRecord(RecordKind.MESSAGE, 1, 7, 3, 1700000000000,
                                             "q", "id", "s", "dev", b"xyz")
        body = (b"\x01\x01" + struct.pack(">QQQ", 7, 3, 1700000000000)
                + b"\x00\x01\x00\x02\x00\x01\x00\x03" + b"\x00\x00\x00\x03"
                + b"q" + b"id" + b"s" + b"dev" + b"xyz")
        self.assertEqual(len(body), 38 + 10)
        self.assertEqual(wire, struct.pack(">II", len(body), zlib.crc32(body)) + body)

    @given(names, names, payloads)
    @settings(max_examples=50, deadline=None)
    def test_framePieces(self, queue, messageId, payload):
        """
        L{logformat.encodeJournalFrame}'s two pieces (what the journal
        buffers until a flush joins its batch) are the frame header of the
        body and the body: together, L{logformat.encodeJournalRecord}'s
        bytes.
        """
        fields = (RecordKind.MESSAGE, 0, 9, 4, 1000, queue or "q", messageId or "m", "bob",
                  "phone", payload)
        header, body = logformat.encodeJournalFrame(*fields)
        self.assertEqual(header, struct.pack(">II", len(body), zlib.crc32(body)))
        self.assertEqual(header + body, logformat.encodeJournalRecord(*fields))
        self.assertEqual(logformat.decodeJournalRecord(body).payload, payload)

    @given(st.lists(st.tuples(names, names, payloads), max_size=8), st.data())
    @settings(max_examples=150, deadline=None)
    def test_roundTripAndTornTail(self, items, data):
        """
        Records round-trip; cutting the bytes anywhere gives exactly the
        records that end before the cut, and the good end is the end of the
        last of them.
        """
        wire = b""
        ends = []
        for i, (queue, messageId, payload) in enumerate(items):
            wire += journalRecord(lsn=i + 1, offset=i + 1, queue=queue, messageId=messageId,
                                  payload=payload)
            ends.append(len(wire))
        cut = data.draw(st.integers(0, len(wire)))
        bodies, goodEnd, fault = logformat.scanFrames(wire[:cut])
        whole = [e for e in ends if e <= cut]
        self.assertEqual(len(bodies), len(whole))
        self.assertEqual(goodEnd, whole[-1] if whole else 0)
        self.assertEqual(fault, None if cut in [0] + ends else "torn")
        for (position, body), (queue, messageId, payload) in zip(bodies, items):
            record = logformat.decodeJournalRecord(body)
            self.assertEqual((record.queue, record.messageId, record.payload),
                             (queue, messageId, payload))

    @given(st.binary(min_size=1, max_size=400), st.integers(0, 10 ** 6))
    @settings(max_examples=200, deadline=None)
    def test_flippedByteStopsScan(self, payload, where):
        """
        Any single corrupted byte inside a record stops the scan at that
        record (CRC or length), never raising, never yielding it.
        """
        first = journalRecord(lsn=1, payload=b"ok")
        second = journalRecord(lsn=2, offset=2, payload=payload)
        wire = bytearray(first + second)
        i = len(first) + where % len(second)
        wire[i] ^= 0xFF
        bodies, goodEnd, fault = logformat.scanFrames(bytes(wire))
        self.assertEqual(len(bodies), 1)
        self.assertEqual(goodEnd, len(first))
        self.assertIn(fault, ("crc", "length", "torn"))

    @given(st.binary(max_size=2000))
    @settings(max_examples=300, deadline=None)
    def test_garbageNeverRaisesFromScan(self, garbage):
        """
        Random bytes give a scan result, never an exception; a frame whose
        CRC happens to pass but whose body is malformed is a CorruptRecord.
        """
        bodies, goodEnd, fault = logformat.scanFrames(garbage)
        self.assertLessEqual(goodEnd, len(garbage))
        for position, body in bodies:
            try:
                logformat.decodeJournalRecord(body, position)
            except CorruptRecord:
                pass

    def test_hugeLengthIsCorruptionNotAllocation(self):
        """
        A length beyond MAX_BODY stops the scan with "length".
        """
        wire = struct.pack(">II", logformat.MAX_BODY + 1, 0) + b"x" * 100
        self.assertEqual(logformat.scanFrames(wire), ([], 0, "length"))

    def test_receiptPayload(self):
        """
        A receipt record's payload is kind u8 + offset u64 and decodes to a
        Receipt naming who had which message.
        """
        payload = logformat.encodeReceiptPayload(ReceiptKind.READ, 42)
        self.assertEqual(payload, b"\x03" + struct.pack(">Q", 42))
        wire = journalRecord(kind=RecordKind.RECEIPT, payload=payload, messageId="orig",
                             sender=("carol", "tablet"))
        [(_, body)], _, _ = logformat.scanFrames(wire)
        receipt = logformat.decodeJournalRecord(body).receipt()
        self.assertEqual((receipt.kind, receipt.entity, receipt.device, receipt.offset,
                          receipt.messageId), (ReceiptKind.READ, "carol", "tablet", 42, "orig"))

    def test_dedupKeys(self):
        """
        Dedup keys are 16-byte digests: a message's of its sender and id, a
        receipt's of who had which offset, whichever device.
        """
        k = logformat.messageKey("bob", "phone", "m1")
        self.assertEqual(len(k), 16)
        self.assertNotEqual(k, logformat.messageKey("bob", "laptop", "m1"))
        self.assertNotEqual(k, logformat.messageKey("bo", "bphone", "m1"))
        wire = journalRecord(kind=RecordKind.RECEIPT, sender=("carol", "tablet"),
                             payload=logformat.encodeReceiptPayload(ReceiptKind.READ, 4))
        [(_, body)], _, _ = logformat.scanFrames(wire)
        self.assertEqual(logformat.recordKey(logformat.decodeJournalRecord(body)),
                         logformat.receiptKey("carol", ReceiptKind.READ, 4))

    def test_unknownKindIsCorrupt(self):
        """
        A CRC-valid body with an unknown record type is a CorruptRecord
        naming it.
        """
        body = b"\x09\x00" + b"\x00" * 36
        e = self.assertRaises(CorruptRecord, logformat.decodeJournalRecord, body)
        self.assertIn("unknown record type 9", str(e))

    def test_keyValueReplay(self):
        """
        Key/value records replay last-write-wins with deletes, after the
        magic; a torn tail is reported and ignored.
        """
        data = (logformat.KV_MAGIC + logformat.encodeKeyValue(logformat.KV_PUT, b"a", b"1")
                + logformat.encodeKeyValue(logformat.KV_PUT, b"b", b"2")
                + logformat.encodeKeyValue(logformat.KV_DELETE, b"a")
                + logformat.encodeKeyValue(logformat.KV_PUT, b"b", b"3"))
        torn = data + logformat.encodeKeyValue(logformat.KV_PUT, b"c", b"4")[:-1]
        table, goodEnd, fault = logformat.replayKeyValues(torn)
        self.assertEqual(table, {b"b": b"3"})
        self.assertEqual((goodEnd, fault), (len(data), "torn"))
        self.assertRaises(CorruptRecord, logformat.replayKeyValues, b"NOTMAGIC" + data[8:])


class SegmentIndexTests(SynchronousTestCase):

    def filled(self, records=50, interval=256):
        segment = segments.Segment(101, logformat.MAGIC_SIZE, interval)
        position = logformat.MAGIC_SIZE
        offsets = {}
        for i in range(records):
            queue = "q%d" % (i % 3,)
            offsets[queue] = offsets.get(queue, 0) + 1
            segment.add(101 + i, position, 90, queue, offsets[queue], 5000 + i,
                        logformat.messageKey("s", "d", "m%d" % i))
            position += 90
        return segment

    def test_sparseEntriesEveryInterval(self):
        """
        The sparse index has the first record and then one entry per
        indexInterval bytes; seek() finds an entry at or before any LSN and
        seekEnd() one past it.
        """
        segment = self.filled(records=50, interval=256)
        self.assertEqual(segment.sparseLsns[0], 101)
        gaps = [b - a for a, b in zip(segment.sparsePositions, segment.sparsePositions[1:])]
        self.assertTrue(all(256 <= g < 256 + 90 for g in gaps), gaps)
        for lsn in range(101, 151):
            position, at = segment.seek(lsn)
            self.assertLessEqual(at, lsn)
            self.assertEqual(position, logformat.MAGIC_SIZE + (at - 101) * 90)
            self.assertGreater(segment.seekEnd(lsn), logformat.MAGIC_SIZE + (lsn - 101) * 90)

    def test_indexRoundTrip(self):
        """
        An index file decodes to the same sparse entries, queue runs,
        timestamps and size; any flipped byte is a CorruptRecord.
        """
        segment = self.filled()
        data = segments.encodeIndex(segment)
        again = segments.decodeIndex(data, 256)
        self.assertEqual((again.base, again.count, again.size), (segment.base, 50, segment.size))
        self.assertEqual(list(again.sparsePositions), list(segment.sparsePositions))
        for queue, run in segment.runs.items():
            self.assertEqual(again.runs[queue].firstOffset, run.firstOffset)
            self.assertEqual(list(again.runs[queue].lsns), list(run.lsns))
            self.assertEqual(list(again.runs[queue].stamps), list(run.stamps))
            self.assertEqual(again.runs[queue].keys, run.keys)
        for i in range(0, len(data), 7):
            broken = bytearray(data)
            broken[i] ^= 0x01
            self.assertRaises(CorruptRecord, segments.decodeIndex, bytes(broken), 256)
        self.assertRaises(CorruptRecord, segments.decodeIndex, data[:-5], 256)

    def test_outOfOrderIsStorageError(self):
        """
        A record whose LSN or queue offset is not the next one is refused.
        """
        segment = self.filled(records=3)
        key = b"k" * 16
        self.assertRaises(StorageError, segment.add, 200, 1000, 10, "q0", 2, 0, key)
        self.assertRaises(StorageError, segment.add, 104, 1000, 10, "q0", 5, 0, key)

    def test_deletable(self):
        """
        A segment is deletable once every queue's first kept offset is past
        its last offset in the segment.
        """
        segment = self.filled(records=6)
        self.assertEqual({q: r.lastOffset for q, r in segment.runs.items()},
                         {"q0": 2, "q1": 2, "q2": 2})
        self.assertFalse(segment.deletable(lambda q: 3 if q != "q1" else 2))
        self.assertTrue(segment.deletable(lambda q: 3))

    def test_names(self):
        """
        Segment files are named by their base LSN in 20 digits.
        """
        self.assertEqual(segments.segmentName(12), "00000000000000000012.log")
        self.assertEqual(segments.parseSegmentName("00000000000000000012.log"), 12)
        self.assertIsNone(segments.parseSegmentName("00000000000000000012.idx"))
        self.assertIsNone(segments.parseSegmentName("junk.log"))


class ManifestTests(SynchronousTestCase):

    def test_roundTrip(self):
        """
        The manifest is JSON of format, epoch and segments.
        """
        data = segments.encodeManifest("e1", [1, 500])
        self.assertEqual(segments.decodeManifest(data), ("e1", [1, 500]))

    def test_otherFormat(self):
        """
        A manifest of another format or damaged is a StorageError.
        """
        self.assertRaises(StorageError, segments.decodeManifest,
                          b'{"format": 2, "epoch": "e", "segments": []}')
        self.assertRaises(StorageError, segments.decodeManifest, b'{"format": 1')

    def test_reconcile(self):
        """
        Files newer than the manifest's last segment are adopted, older than
        its first deleted; a listed segment that is missing is an error.
        """
        self.assertEqual(segments.reconcileSegments([10, 20], [5, 10, 20, 30]),
                         ([10, 20, 30], [5]))
        self.assertEqual(segments.reconcileSegments([], [1]), ([1], []))
        self.assertRaises(StorageError, segments.reconcileSegments, [10, 20], [20])
