"""
The embedded engine's journal: segment files on disk, group-committed
appends, reads by LSN, recovery and segment deletion.  The rules (record
format, index, manifest, which segment goes) are in
L{muxframe.engines.logformat} and L{muxframe.engines.segments}; this module
does the files.

Durability: L{Journal.append} returns a Deferred that fires only after the
record's bytes and every byte before them were written and fdatasync'ed
(and, for a new segment file, its directory fsync'ed).  Recovery
(L{Journal.open}) truncates the first segment that ends in a torn or
corrupt record at its last good record and drops any later segment (which
can only hold records never acknowledged, since one flush covers them all).
"""

import bisect
import os
import struct
import uuid
import zlib

from twisted.internet import defer
from twisted.logger import Logger

from muxframe.engines import logformat, recordscan, segments
from muxframe.engines.durable import (
    GroupCommitter, _fdatasync, atomicWrite, fsyncDirectory, writeAll)
from muxframe.engines.errors import CorruptRecord, EngineStopped, LimitExceeded, StorageError

log = Logger()

MANIFEST = "MANIFEST"


class _SegmentFile:
    """
    The writer's descriptor of one segment file, opened and used only by
    flush jobs (in their thread), closed by the job that seals it.
    """

    def __init__(self, path):
        self.path = path
        self.fd = None

    def ensureOpen(self):
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return self.fd

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class RecoveryReport:
    """
    What L{Journal.open} found: record and segment counts, bytes truncated
    from a torn tail, segment files deleted, and which segments were
    rebuilt by scanning (no usable index).
    """

    def __init__(self):
        self.records = 0
        self.segments = 0
        self.truncatedBytes = 0
        self.truncatedAt = None
        self.deletedFiles = []
        self.scanned = []


class Journal:
    """
    One journal in C{directory}.

    @ivar segments: the L{segments.Segment}s in use, oldest first; the last
        is active.
    @ivar durableLsn: every record up to this LSN is on disk.
    """

    def __init__(self, directory, runner, segmentBytes=64 * 1024 * 1024, indexInterval=4096,
                 maxPendingBytes=64 * 1024 * 1024):
        if not 4096 <= segmentBytes < 2 ** 32:
            raise ValueError("segmentBytes must be 4096 to 4 GiB")
        self.directory = directory
        self.segmentBytes = segmentBytes
        self.indexInterval = indexInterval
        self.maxPendingBytes = maxPendingBytes
        self.segments = []
        self._bases = []
        self.epoch = None
        self.nextLsn = 1
        self.durableLsn = 0
        self.pendingBytes = 0
        self._active = None
        self._activeFile = None
        # [(segment file, [record bytes, ...]), ...]: one group per file.
        self._pending = []
        self._chunks = None
        self._dirDirty = False
        self._sealed = []
        self._dropped = []
        self._manifestDirty = False
        self._closed = True
        self._committer = GroupCommitter(runner, self._prepare, directory, self._flushed)
        self._durableListeners = []
        self._released = False
        self._runner = runner

    @property
    def totalBytes(self):
        """
        The bytes of every segment in use.
        """
        return sum(s.size for s in self.segments)

    @property
    def flushes(self):
        """
        How many flushes (each one fdatasync round) have completed.
        """
        return self._committer.flushes

    def _path(self, name):
        return os.path.join(self.directory, name)

    # Recovery ---------------------------------------------------------

    def open(self):
        """
        Recover the journal (blocking): read the manifest, load or scan
        every segment, truncate a torn tail.  Returns a L{RecoveryReport}.
        """
        os.makedirs(self.directory, exist_ok=True)
        report = RecoveryReport()
        listed = []
        manifestPath = self._path(MANIFEST)
        if os.path.exists(manifestPath):
            with open(manifestPath, "rb") as f:
                self.epoch, listed = segments.decodeManifest(f.read())
        found = [b for b in (segments.parseSegmentName(n) for n in os.listdir(self.directory))
                 if b is not None]
        use, delete = segments.reconcileSegments(listed, found)
        for base in delete:
            self._unlink(base, report)
        loaded = []
        for i, base in enumerate(use):
            last = i == len(use) - 1
            expected = loaded[-1].nextLsn if loaded else None
            if expected is not None and base != expected:
                raise StorageError("segment %d follows one ending at LSN %d" % (
                    base, expected - 1))
            segment = None if last else self._loadIndex(base)
            if segment is None:
                segment, fault = self._scan(base, report)
                if fault is not None:
                    loaded.append(segment)
                    for later in use[i + 1:]:
                        if later in listed:
                            raise StorageError("segment %d is torn but %d after it is in the "
                                               "manifest" % (base, later))
                        self._unlink(later, report)
                    break
            loaded.append(segment)
        self.segments = loaded
        if not self.segments:
            self._create(1 if not listed else listed[0])
        else:
            self._bases = [s.base for s in self.segments]
            self._active = self.segments[-1]
            self._active.sealed = False
            self._activeFile = _SegmentFile(self._path(segments.segmentName(self._active.base)))
        for s in self.segments[:-1]:
            s.sealed = True
        self.nextLsn = self._active.nextLsn
        self.durableLsn = self.nextLsn - 1
        if self.epoch is None:
            self.epoch = uuid.uuid4().hex
        if self._dirDirty:
            # A new first segment: its file before the manifest naming it.
            self._flushCreate()
        elif self._bases != listed:
            atomicWrite(manifestPath, segments.encodeManifest(self.epoch, self._bases))
        self._closed = False
        report.records = sum(s.count for s in self.segments)
        report.segments = len(self.segments)
        return report

    def _unlink(self, base, report):
        for name in (segments.segmentName(base), segments.indexName(base)):
            try:
                os.unlink(self._path(name))
                report.deletedFiles.append(name)
            except FileNotFoundError:
                pass

    def _loadIndex(self, base):
        path = self._path(segments.indexName(base))
        try:
            with open(path, "rb") as f:
                segment = segments.decodeIndex(f.read(), self.indexInterval)
        except (OSError, CorruptRecord) as e:
            log.warn("index of segment {base} unusable ({error}); scanning it", base=base,
                     error=str(e))
            return None
        size = os.path.getsize(self._path(segments.segmentName(base)))
        if segment.base != base or segment.size != size:
            log.warn("index of segment {base} does not match its file; scanning it", base=base)
            return None
        return segment

    def _scan(self, base, report):
        path = self._path(segments.segmentName(base))
        with open(path, "rb") as f:
            data = f.read()
        report.scanned.append(base)
        segment = segments.Segment(base, logformat.MAGIC_SIZE, self.indexInterval)
        magic = data[:logformat.MAGIC_SIZE]
        if len(data) < logformat.MAGIC_SIZE or magic != logformat.JOURNAL_MAGIC:
            if logformat.JOURNAL_MAGIC.startswith(data):
                # Created, never written (or cut inside its magic).
                self._truncate(path, 0, len(data), report, base)
                with open(path, "wb") as f:
                    f.write(logformat.JOURNAL_MAGIC)
                    f.flush()
                    os.fsync(f.fileno())
                return segment, ("torn" if data else None)
            raise StorageError("segment %s is not a journal segment" % (path,))
        try:
            goodEnd, fault = recordscan.scanJournal(data, logformat.MAGIC_SIZE, segment.add)
        except CorruptRecord as e:
            raise StorageError("segment %s at %d: %s" % (path, e.position, e))
        if fault is not None:
            self._truncate(path, goodEnd, len(data), report, base)
        return segment, fault

    def _truncate(self, path, goodEnd, size, report, base):
        log.warn("segment {path}: torn tail, truncating {dropped} bytes at {at}",
                 path=path, dropped=size - goodEnd, at=goodEnd)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, goodEnd)
            os.fsync(fd)
        finally:
            os.close(fd)
        report.truncatedBytes += size - goodEnd
        report.truncatedAt = (base, goodEnd)

    def _create(self, base):
        segment = segments.Segment(base, logformat.MAGIC_SIZE, self.indexInterval)
        self.segments.append(segment)
        self._bases.append(base)
        self._active = segment
        self._activeFile = _SegmentFile(self._path(segments.segmentName(base)))
        self._chunks = [logformat.JOURNAL_MAGIC]
        self._pending.append((self._activeFile, self._chunks))
        self.pendingBytes += logformat.MAGIC_SIZE
        self._dirDirty = True
        self._manifestDirty = True

    def _flushCreate(self):
        # At open, a brand-new segment is written at once (blocking).
        for f, chunks in self._pending:
            writeAll(f.ensureOpen(), b"".join(chunks))
            os.fsync(f.fd)
        self._pending = []
        self._chunks = None
        self.pendingBytes = 0
        fsyncDirectory(self.directory)
        self._dirDirty = False
        atomicWrite(self._path(MANIFEST), segments.encodeManifest(self.epoch, self._bases))
        self._manifestDirty = False

    # Appends ---------------------------------------------------------

    def append(self, kind, flags, queue, offset, timestamp, messageId, senderEntity,
               senderDevice, payload, key, value=None, commit=True):
        """
        Append one record (C{key}: its dedup digest, see
        L{logformat.recordKey}); return C{(lsn, Deferred)}, the Deferred
        firing with C{value} once it is durable (with C{commit} false, no
        Deferred: the caller asks L{flush} for one covering several).

        @raise LimitExceeded: when more than C{maxPendingBytes} wait for
            disk.
        """
        if self._closed:
            raise EngineStopped("the journal is closed")
        if self._committer.failure is not None:
            raise StorageError("the journal is unusable since a failed flush: %s" % (
                self._committer.failure,))
        lsn = self.nextLsn
        header, body = logformat.encodeJournalFrame(kind, flags, lsn, offset, timestamp, queue,
                                                    messageId, senderEntity, senderDevice,
                                                    payload)
        size = 8 + len(body)
        if self.pendingBytes + size > self.maxPendingBytes:
            raise LimitExceeded("%d bytes already wait for the disk" % (self.pendingBytes,),
                                "maxPendingBytes")
        active = self._active
        # The size first: Segment.count is a property, looked up only when
        # the segment is full.
        if active.size + size > self.segmentBytes and active.count:
            self._sealed.append((active, self._activeFile))
            active.sealed = True
            self._create(lsn)
            active = self._active
        active.add(lsn, active.size, size, queue, offset, timestamp, key)
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = []
            self._pending.append((self._activeFile, chunks))
        # Header and body stay apart until the flush joins the batch.
        chunks += (header, body)
        self.pendingBytes += size
        self.nextLsn = lsn + 1
        if not commit:
            return lsn, None
        return lsn, self._committer.commit(value)

    def _prepare(self):
        if not (self._pending or self._sealed or self._dropped or self._manifestDirty):
            return None
        writes, self._pending, self._chunks = self._pending, [], None
        synced = []
        for f, _ in writes:
            if f not in synced:
                synced.append(f)
        dirSync, self._dirDirty = self._dirDirty, False
        sealed, self._sealed = self._sealed, []
        dropped, self._dropped = self._dropped, []
        manifest = None
        if sealed or dropped or self._manifestDirty:
            manifest = segments.encodeManifest(self.epoch, self._bases)
            self._manifestDirty = False
        target = self.nextLsn - 1
        directory = self.directory

        def job():
            written = 0
            for f, chunks in writes:
                data = b"".join(chunks)
                writeAll(f.ensureOpen(), data)
                written += len(data)
            for f in synced:
                _fdatasync(f.fd)
            if dirSync:
                fsyncDirectory(directory)
            for segment, f in sealed:
                f.close()
                atomicWrite(os.path.join(directory, segments.indexName(segment.base)),
                            segments.encodeIndex(segment))
            if manifest is not None:
                atomicWrite(os.path.join(directory, MANIFEST), manifest)
            for base in dropped:
                for name in (segments.segmentName(base), segments.indexName(base)):
                    try:
                        os.unlink(os.path.join(directory, name))
                    except FileNotFoundError:
                        pass
            if dropped:
                fsyncDirectory(directory)
            return target, written, [segment for segment, _ in sealed]
        return job

    def _flushed(self, result):
        target, written, sealed = result
        if self._released:
            for segment in sealed:
                segment.release()
        self.durableLsn = max(self.durableLsn, target)
        self.pendingBytes -= written
        for listener in self._durableListeners:
            listener(self.durableLsn)

    def releaseSealed(self):
        """
        The queues have indexed every record: sealed segments (now and from
        now on, once their index file is written) keep only their queues'
        offset ranges, not per-record lists.
        """
        self._released = True
        for segment in self.segments[:-1]:
            segment.release()

    def addDurableListener(self, listener):
        """
        Call C{listener(durableLsn)} after every flush, before the appends
        it covered are acknowledged.
        """
        self._durableListeners.append(listener)

    def flush(self, value=None):
        """
        A Deferred firing with C{value} once everything appended so far is
        durable.
        """
        return self._committer.commit(value)

    # Reads -----------------------------------------------------------

    def _segmentFor(self, lsn):
        i = bisect.bisect_right(self._bases, lsn) - 1
        if i < 0 or lsn >= self.segments[i].nextLsn:
            raise StorageError("LSN %d is in no segment" % (lsn,))
        return self.segments[i]

    def read(self, lsns, decode=None):
        """
        Read the records with the given LSNs (ascending, durable); a
        Deferred firing with a list of what C{decode(body, position)} makes
        of each (default: L{logformat.JournalRecord}s), in the same order.
        """
        plan = self._windows(lsns)
        return self._runner(_readWindows, plan, decode or logformat.decodeJournalRecord)

    def readInParts(self, lsns, decode, maxBytes):
        """
        What L{read} gives, for a C{decode} whose results are small (a
        record's header, say), read a part at a time: each part is at most
        about C{maxBytes} of the files (and one record), so the bytes held
        at once are bounded however much the records weigh together.
        """
        plan = self._windows(lsns, maxBytes)
        parts, size = [], 0
        for window in plan:
            if not parts or size + window[2] - window[1] > maxBytes:
                parts.append([])
                size = 0
            parts[-1].append(window)
            size += window[2] - window[1]
        out = []
        d = defer.succeed(None)
        for part in parts:
            d.addCallback(lambda _, part=part: self._runner(_readWindows, part, decode))
            d.addCallback(out.extend)
        return d.addCallback(lambda _: out)

    def _windows(self, lsns, maxBytes=None):
        """
        The plan of L{_readWindows} for the records C{lsns}: C{[path,
        start, end, wanted LSNs]}, adjacent windows merged (while the
        merged one is at most C{maxBytes}, if given).
        """
        windows = []
        segment = None
        endLsn = 0
        for lsn in lsns:
            if lsn > self.durableLsn:
                raise StorageError("LSN %d is not durable yet" % (lsn,))
            if segment is not None and lsn < endLsn and lsn < segment.nextLsn:
                # Inside the current window: no lookup.
                windows[-1][3].add(lsn)
                continue
            if segment is None or not segment.base <= lsn < segment.nextLsn:
                segment = self._segmentFor(lsn)
            start, end, endLsn = segment.window(lsn)
            if windows and windows[-1][0] is segment and start <= windows[-1][2] and (
                    maxBytes is None or max(end, windows[-1][2]) - windows[-1][1] <= maxBytes):
                windows[-1][2] = max(windows[-1][2], end)
                windows[-1][3].add(lsn)
            else:
                windows.append([segment, start, end, {lsn}])
        return [(self._path(segments.segmentName(s.base)), start, end, wanted)
                for s, start, end, wanted in windows]

    def readQueue(self, lsns, queue, firstOffset, maxBytes):
        """
        Read the records of C{queue} with the given LSNs (ascending,
        durable), whose offsets are C{firstOffset} onwards, contiguous; a
        Deferred firing with their L{QueuedRecord}s, cut after the first
        one whose payloads add up to more than C{maxBytes}.  (What
        L{read} does, decoded straight from the file's bytes.)
        """
        if lsns and lsns[-1] > self.durableLsn:
            return defer.fail(StorageError("LSN %d is not durable yet" % (lsns[-1],)))
        plan = []
        i, count = 0, len(lsns)
        while i < count:
            # One step per segment: its LSNs in one slice, its ranges from
            # the sparse index.
            segment = self._segmentFor(lsns[i])
            j = bisect.bisect_left(lsns, segment.nextLsn, i + 1)
            path = self._path(segments.segmentName(segment.base))
            plan.extend((path, start, end, lsns[a:b])
                        for start, end, a, b in segment.spans(lsns, i, j))
            i = j
        return self._runner(recordscan.readQueuedRecords, plan, queue, firstOffset, maxBytes)

    # Retention -------------------------------------------------------

    def dropSegments(self, bases):
        """
        Stop using the (sealed, oldest) segments C{bases} and delete their
        files after the manifest no longer lists them.  Returns a Deferred.
        """
        drop = set(bases)
        if self._active.base in drop:
            raise StorageError("the active segment cannot be dropped")
        self.segments = [s for s in self.segments if s.base not in drop]
        self._bases = [s.base for s in self.segments]
        self._dropped.extend(sorted(drop))
        return self._committer.commit()

    def close(self):
        """
        Flush, then close the active file.  Returns a Deferred.
        """
        if self._closed:
            return defer.succeed(None)
        d = self._committer.commit()

        def closed(result):
            self._closed = True
            self._activeFile.close()
            return result
        return d.addBoth(closed)


_HEADER_AND_LSN = struct.Struct(">IIBBQ")


def _readWindows(plan, decode):
    """
    The blocking half of L{Journal.read}: read each window of a segment and
    decode the wanted records.  Records of other queues are stepped over
    by their length without being copied or CRC-checked; wanted ones are
    checked and decoded.
    """
    out = []
    unpack = _HEADER_AND_LSN.unpack_from
    crc32 = zlib.crc32
    for path, start, end, wanted in plan:
        data = logformat.readRange(path, start, end)
        found = 0
        at, size = 0, len(data)
        while at + 18 <= size and found < len(wanted):
            length, crc, _, _, lsn = unpack(data, at)
            bodyEnd = at + 8 + length
            if length > logformat.MAX_BODY or bodyEnd > size:
                break
            if lsn in wanted:
                body = data[at + 8:bodyEnd]
                if crc32(body) != crc:
                    raise StorageError("segment %s: CRC mismatch at %d" % (path, start + at))
                out.append(decode(body, start + at))
                found += 1
            at = bodyEnd
        if found != len(wanted):
            raise StorageError("segment %s: %d of %d records found between %d and %d" % (
                path, found, len(wanted), start, end))
    return out
