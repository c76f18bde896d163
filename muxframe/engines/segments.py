"""
The journal's segments, their sparse index and the manifest.  No I/O.

Rules:

 - The journal is one sequence of records with contiguous log sequence
   numbers (LSNs) from 1, stored in segment files named by the LSN of
   their first record (C{%020d.log}).  The last segment is the active one;
   it is sealed (and a new one begun) once it holds C{segmentBytes}.
 - Each segment has a sparse index: the position of the first record and
   then of the first record at or after every C{indexInterval} bytes, as
   C{(lsn, position)}.  Finding a record is a bisection in it and a scan
   of at most C{indexInterval} bytes.
 - When a segment is sealed its index file (C{%020d.idx}) is written: the
   sparse entries and, per queue, the offsets the segment holds with each
   record's LSN and timestamp, so starting up reads these instead of every
   record.  A missing or damaged index file is rebuilt by scanning its
   segment.
 - A sealed segment is deleted once no queue still keeps a record in it
   (every queue's first kept offset is past that queue's last offset in
   the segment), or, oldest first, while the journal is larger than
   C{maxBytes}; the active segment is never deleted.
 - The manifest names the format, the engine's epoch and the segments in
   use.  It is rewritten whole (temporary file, fsync, rename, fsync of the
   directory) when the set of segments changes.  On start, a segment file
   newer than the manifest's last one is adopted (a crash after creating
   it); one older than the manifest's first is deleted (a crash after the
   manifest was rewritten and before the unlink).

Index file layout, big-endian: magic C{b"MXFIDX\\x00\\x01"}; base LSN u64;
record count u64; log bytes u64 (the segment's length including its magic);
sparse entry count u32 then entries (relative LSN u32, position u32); queue
count u32 then per queue: name (u16 length + UTF-8), first offset u64,
count u32, then per record relative LSN u32, timestamp u64 and dedup key
(16 bytes, L{muxframe.engines.logformat.recordKey}); a final CRC-32 u32 of
everything before it.
"""

import bisect
import json
import struct
import zlib
from array import array

from muxframe.engines.errors import CorruptRecord, StorageError

INDEX_MAGIC = b"MXFIDX\x00\x01"
MANIFEST_FORMAT = 1

_INDEX_HEAD = struct.Struct(">QQQ")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_QUEUE_HEAD = struct.Struct(">QI")


def segmentName(base):
    """
    The file name of the segment whose first LSN is C{base}.
    """
    return "%020d.log" % (base,)


def indexName(base):
    """
    The file name of the index of segment C{base}.
    """
    return "%020d.idx" % (base,)


def parseSegmentName(name):
    """
    The base LSN of segment file C{name}, or L{None} if it is not one.
    """
    if len(name) == 24 and name.endswith(".log") and name[:20].isdigit():
        return int(name[:20])
    return None


class QueueRun:
    """
    The records of one queue in one segment: contiguous offsets from
    C{firstOffset}, with each record's LSN, timestamp and dedup key (16
    bytes each in one bytearray).
    """

    __slots__ = ("firstOffset", "count", "lsns", "stamps", "keys")

    def __init__(self, firstOffset):
        self.firstOffset = firstOffset
        self.count = 0
        self.lsns = array("Q")
        self.stamps = array("Q")
        self.keys = bytearray()

    @property
    def lastOffset(self):
        """
        The last offset of the run.
        """
        return self.firstOffset + self.count - 1

    def append(self, lsn, stamp, key):
        """
        Add the run's next record.
        """
        self.lsns.append(lsn)
        self.stamps.append(stamp)
        self.keys += key
        self.count += 1

    def release(self):
        """
        Forget the per-record lists (kept by the queues' own indexes once
        the segment is sealed and its index file written); the offsets
        stay.
        """
        self.lsns = self.stamps = self.keys = None


class Segment:
    """
    What is known of one segment: its base LSN, the next LSN it would hold,
    its length in bytes, its sparse index and its queue runs.
    """

    def __init__(self, base, size, indexInterval):
        self.base = base
        self.nextLsn = base
        self.size = size
        self.indexInterval = indexInterval
        self.sparseLsns = array("Q")
        self.sparsePositions = array("Q")
        self.runs = {}
        self.sealed = False
        self._lastIndexed = None

    @property
    def count(self):
        """
        How many records the segment holds.
        """
        return self.nextLsn - self.base

    def add(self, lsn, position, length, queue, offset, timestamp, key):
        """
        Note a record of C{length} bytes at C{position} with dedup C{key}
        (16 bytes).

        @raise StorageError: if C{lsn} or C{offset} is not the next one.
        """
        if lsn != self.nextLsn:
            raise StorageError("segment %d: LSN %d where %d was due" % (
                self.base, lsn, self.nextLsn))
        if self._lastIndexed is None or position - self._lastIndexed >= self.indexInterval:
            self.sparseLsns.append(lsn)
            self.sparsePositions.append(position)
            self._lastIndexed = position
        run = self.runs.get(queue)
        if run is None:
            run = self.runs[queue] = QueueRun(offset)
        elif offset != run.firstOffset + run.count:
            raise StorageError("segment %d: queue %r offset %d after %d" % (
                self.base, queue, offset, run.lastOffset))
        # QueueRun.append, inlined: this runs once per record appended.
        run.lsns.append(lsn)
        run.stamps.append(timestamp)
        run.keys += key
        run.count += 1
        self.nextLsn = lsn + 1
        self.size = position + length

    def seek(self, lsn):
        """
        The position from which a scan finds record C{lsn}: the greatest
        sparse entry at or before it.
        """
        i = bisect.bisect_right(self.sparseLsns, lsn) - 1
        if i < 0:
            raise StorageError("LSN %d is before segment %d" % (lsn, self.base))
        return self.sparsePositions[i], self.sparseLsns[i]

    def seekEnd(self, lsn):
        """
        A position at or past the end of record C{lsn}: the next sparse
        entry after it, or the segment's end.
        """
        i = bisect.bisect_right(self.sparseLsns, lsn)
        if i < len(self.sparsePositions):
            return self.sparsePositions[i]
        return self.size

    def window(self, lsn):
        """
        C{(start, end, endLsn)}: a scan from C{start} to C{end} holds record
        C{lsn} and every record before C{endLsn} from there on.
        """
        i = bisect.bisect_right(self.sparseLsns, lsn)
        if i == 0:
            raise StorageError("LSN %d is before segment %d" % (lsn, self.base))
        if i < len(self.sparseLsns):
            return self.sparsePositions[i - 1], self.sparsePositions[i], self.sparseLsns[i]
        return self.sparsePositions[i - 1], self.size, self.nextLsn

    def spans(self, lsns, first, last):
        """
        Byte ranges to read for the records C{lsns[first:last]} (ascending,
        all in this segment): a list of C{(start, end, i, j)}, the range
        from C{start} to C{end} holding C{lsns[i:j]}.

        A dense run of LSNs (at least one per two sparse-index windows it
        spans) is one range; a sparse one is split in halves until each
        part is dense or one record, so no more than about two windows are
        read per record wanted.  Adjacent ranges are merged.
        """
        out = []
        sparse = self.sparseLsns
        positions = self.sparsePositions
        entries = len(sparse)
        if not entries or lsns[first] < sparse[0]:
            raise StorageError("LSN %d is before segment %d" % (lsns[first], self.base))
        pending = [(first, last)]
        while pending:
            i, j = pending.pop()
            low = bisect.bisect_right(sparse, lsns[i]) - 1
            high = bisect.bisect_right(sparse, lsns[j - 1], low)
            if j - i > 1 and high - low > 2 * (j - i):
                middle = (i + j) // 2
                # Right half first on the stack: the left one is done first.
                pending.append((middle, j))
                pending.append((i, middle))
                continue
            start = positions[low]
            end = positions[high] if high < entries else self.size
            if out and out[-1][1] >= start:
                previous = out[-1]
                out[-1] = (previous[0], max(previous[1], end), previous[2], j)
            else:
                out.append((start, end, i, j))
        return out

    def release(self):
        """
        Forget the per-record lists of every run (see L{QueueRun.release}).
        """
        for run in self.runs.values():
            run.release()

    def deletable(self, firstKept):
        """
        Whether no queue still keeps a record here: C{firstKept(queue)} is
        each queue's first kept offset.
        """
        for queue, run in self.runs.items():
            if firstKept(queue) <= run.lastOffset:
                return False
        return True


def encodeIndex(segment):
    """
    The bytes of C{segment}'s index file.
    """
    parts = [INDEX_MAGIC, _INDEX_HEAD.pack(segment.base, segment.count, segment.size),
             _U32.pack(len(segment.sparseLsns))]
    base = segment.base
    for lsn, position in zip(segment.sparseLsns, segment.sparsePositions):
        parts.append(struct.pack(">II", lsn - base, position))
    parts.append(_U32.pack(len(segment.runs)))
    for queue, run in segment.runs.items():
        raw = queue.encode("utf-8")
        parts.append(_U16.pack(len(raw)) + raw)
        parts.append(_QUEUE_HEAD.pack(run.firstOffset, run.count))
        keys = bytes(run.keys)
        parts.append(b"".join(struct.pack(">IQ", lsn - base, stamp) + keys[16 * i:16 * i + 16]
                              for i, (lsn, stamp) in enumerate(zip(run.lsns, run.stamps))))
    data = b"".join(parts)
    return data + _U32.pack(zlib.crc32(data))


def decodeIndex(data, indexInterval):
    """
    Rebuild a sealed L{Segment} from its index file's bytes.

    @raise CorruptRecord: if the file is damaged in any way.
    """
    if len(data) < len(INDEX_MAGIC) + _INDEX_HEAD.size + 8 or data[:8] != INDEX_MAGIC:
        raise CorruptRecord("not an index file")
    (crc,) = _U32.unpack_from(data, len(data) - 4)
    if zlib.crc32(memoryview(data)[:-4]) != crc:
        raise CorruptRecord("index file CRC mismatch")
    try:
        at = 8
        base, count, size = _INDEX_HEAD.unpack_from(data, at)
        at += _INDEX_HEAD.size
        segment = Segment(base, size, indexInterval)
        (sparse,) = _U32.unpack_from(data, at)
        at += 4
        for _ in range(sparse):
            rel, position = struct.unpack_from(">II", data, at)
            at += 8
            segment.sparseLsns.append(base + rel)
            segment.sparsePositions.append(position)
        (queues,) = _U32.unpack_from(data, at)
        at += 4
        for _ in range(queues):
            (length,) = _U16.unpack_from(data, at)
            at += 2
            queue = bytes(data[at:at + length]).decode("utf-8")
            at += length
            firstOffset, n = _QUEUE_HEAD.unpack_from(data, at)
            at += _QUEUE_HEAD.size
            run = segment.runs[queue] = QueueRun(firstOffset)
            block = data[at:at + 28 * n]
            if len(block) != 28 * n:
                raise CorruptRecord("index file truncated inside a queue's records")
            at += 28 * n
            for rel, stamp, key in struct.iter_unpack(">IQ16s", block):
                run.append(base + rel, stamp, key)
    except (struct.error, UnicodeDecodeError) as e:
        raise CorruptRecord("index file truncated or malformed: %s" % (e,))
    if at != len(data) - 4:
        raise CorruptRecord("index file has %d trailing bytes" % (len(data) - 4 - at,))
    if sum(r.count for r in segment.runs.values()) != count:
        raise CorruptRecord("index file counts %d records, its queues %d" % (
            count, sum(r.count for r in segment.runs.values())))
    segment.nextLsn = base + count
    segment.sealed = True
    return segment


def encodeManifest(epoch, bases):
    """
    The manifest's bytes: JSON naming the format, epoch and segments.
    """
    return json.dumps({"format": MANIFEST_FORMAT, "epoch": epoch,
                       "segments": list(bases)}, sort_keys=True).encode("ascii") + b"\n"


def decodeManifest(data):
    """
    Return C{(epoch, bases)} from a manifest's bytes.

    @raise StorageError: for a manifest of another format or damaged.
    """
    try:
        manifest = json.loads(data.decode("ascii"))
        epoch = manifest["epoch"]
        bases = [int(b) for b in manifest["segments"]]
        form = manifest["format"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise StorageError("manifest unreadable: %s" % (e,))
    if form != MANIFEST_FORMAT:
        raise StorageError("manifest format %r, this engine reads %d" % (form, MANIFEST_FORMAT))
    if not isinstance(epoch, str) or bases != sorted(set(bases)):
        raise StorageError("manifest malformed")
    return epoch, bases


def reconcileSegments(manifestBases, fileBases):
    """
    Decide which segment files to use and which to delete, given the
    manifest's list and the files found.

    @return: C{(use, delete)}, both sorted lists of base LSNs.
    @raise StorageError: if a segment the manifest lists is missing (a
        segment in the middle cannot be lost without losing data).
    """
    files = set(fileBases)
    listed = sorted(manifestBases)
    missing = [b for b in listed if b not in files]
    if missing:
        raise StorageError("segments listed in the manifest are missing: %s" % (missing,))
    first = listed[0] if listed else None
    last = listed[-1] if listed else None
    use, delete = [], []
    for base in sorted(files):
        if first is not None and base < first:
            delete.append(base)
        elif last is None or base >= first:
            use.append(base)
    return use, delete
