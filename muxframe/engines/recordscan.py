"""
Journal records decoded straight from a segment file's bytes, for the two
paths that walk many of them: replay (L{readQueuedRecords}, the blocking
half of L{muxframe.engines.journal.Journal.readQueue}) and recovery
(L{scanJournal}).  No I/O besides L{readQueuedRecords}' preads.

Rules (the format is L{muxframe.engines.logformat}'s; nothing here changes
it):

 - One C{unpack_from} reads a record's frame header and fixed header
   together (46 bytes, the shortest a journal record's frame can be); the
   variable fields are sliced from the bytes read, never copied twice.
 - The CRC is checked on a memoryview of the body before any field of a
   record is trusted; scanning for recovery stops at the first frame that
   is torn or fails its CRC, exactly as L{logformat.scanFrames} does.
 - Names repeat from record to record: within one call, each distinct
   queue name and sender (entity and device bytes) is decoded once, and
   for recovery the sender's dedup-key hash prefix is made once.  The
   caches live for one call only, so they need no bound.
"""

import struct
import zlib

from muxframe.engines.errors import CorruptRecord, StorageError
from muxframe.engines.logformat import (
    FLAG_RECEIPTS, MAX_BODY, FRAME_HEADER, decodeReceiptPayload, readRange, receiptKey,
    senderKeyPrefix)
from muxframe.engines.model import Address, QueuedRecord, RecordKind

#: A frame's header and a journal record's fixed header together: 46
#: bytes, the shortest a journal record's frame can be.
_RECORD_HEAD = struct.Struct(">IIBBQQQHHHHI")


def readQueuedRecords(plan, queue, firstOffset, maxBytes):
    """
    Read the records of C{queue} from spans of segment files and decode
    them straight from the bytes read (the blocking half of
    L{Journal.readQueue}): C{plan} is C{(path, start, end, wanted LSNs)}
    per span, the LSNs ascending (as the records lie in the file).  One
    pread per span; records of other queues are stepped over by their
    length; wanted ones are CRC-checked on a memoryview (no copy of the
    body) and their fields sliced once.  Offsets must run from
    C{firstOffset}, contiguous; the list is cut after the first record
    that takes the payloads past C{maxBytes}.

    @raise StorageError: a record missing, out of place or corrupt.
    """
    out = []
    add = out.append
    want = firstOffset
    total = 0
    unpack = _RECORD_HEAD.unpack_from
    crc32 = zlib.crc32
    queueRaw = queue.encode("utf-8")
    message = RecordKind.MESSAGE
    record = QueuedRecord
    maxBody = MAX_BODY
    # Senders repeat from record to record: (entity, device) bytes, back to
    # back in the record, map to their Address once per read.
    senders = {}
    for path, start, end, wanted in plan:
        data = readRange(path, start, end)
        view = memoryview(data)
        found, need = 0, len(wanted)
        nextLsn = wanted[0]
        at, size = 0, len(data)
        while at + 46 <= size:
            (length, crc, kind, flags, lsn, offset, timestamp, lq, lm, le, ld,
             lp) = unpack(data, at)
            bodyEnd = at + 8 + length
            if length > maxBody or bodyEnd > size:
                break
            if lsn != nextLsn:
                if lsn > nextLsn:
                    # Past the one wanted: it is not here.
                    break
                at = bodyEnd
                continue
            if crc32(view[at + 8:bodyEnd]) != crc:
                raise StorageError("segment %s: CRC mismatch at %d" % (path, start + at))
            a = at + 46 + lq
            b = a + lm
            e = b + le + ld
            if e + lp != bodyEnd or offset != want or data[at + 46:a] != queueRaw:
                raise StorageError("segment %s: record at %d is not offset %d of %r" % (
                    path, start + at, want, queue))
            try:
                messageId = data[a:b].decode("utf-8")
                if le:
                    raw = data[b:e]
                    known = senders.get(raw)
                    if known is None or known[0] != le:
                        entity = raw[:le].decode("utf-8")
                        device = raw[le:].decode("utf-8")
                        known = senders[raw] = (le, Address(entity, device), entity, device)
                    sender = known[1]
                else:
                    sender = known = None
            except UnicodeDecodeError:
                raise StorageError("segment %s: a name is not UTF-8 at %d" % (path, start + at))
            if kind == 1:
                add(record(offset, message, messageId, sender, timestamp, data[e:bodyEnd],
                           (flags & FLAG_RECEIPTS) != 0))
            elif kind == 2:
                payload = data[e:bodyEnd]
                try:
                    receipt = decodeReceiptPayload(payload, known[2] if known else "",
                                                   known[3] if known else "", messageId)
                except CorruptRecord as error:
                    raise StorageError("segment %s: %s at %d" % (path, error, start + at))
                add(QueuedRecord(offset, RecordKind.RECEIPT, messageId, sender,
                                 timestamp, payload, False, receipt))
            else:
                raise StorageError("segment %s: unknown record type %d at %d" % (
                    path, kind, start + at))
            want += 1
            total += lp
            at = bodyEnd
            if total > maxBytes and len(out) > 1:
                out.pop()
                return out
            found += 1
            if found == need:
                break
            nextLsn = wanted[found]
        if found != need:
            raise StorageError("segment %s: %d of %d records found between %d and %d" % (
                path, found, need, start, end))
    return out


def scanJournal(data, start, add):
    """
    Walk the journal records of a segment file's bytes C{data} from
    C{start}, calling C{add(lsn, position, frameLength, queue, offset,
    timestamp, key)} for each good one (C{key}: its dedup key,
    L{logformat.recordKey}), without making an object per record.

    @return: C{(goodEnd, fault)}: the position just past the last good
        frame and L{None} or why the scan stopped early (C{"torn"},
        C{"crc"}, C{"length"}), as L{logformat.scanFrames}.
    @raise CorruptRecord: a frame whose CRC is good but whose body is not
        a journal record (its C{position} says where).
    """
    end = len(data)
    view = memoryview(data)
    position = start
    unpack = _RECORD_HEAD.unpack_from
    frameUnpack = FRAME_HEADER.unpack_from
    crc32 = zlib.crc32
    queues = {}
    senders = {}
    while True:
        left = end - position
        if left < 8:
            return position, ("torn" if left else None)
        if left >= 46:
            (length, crc, kind, flags, lsn, offset, timestamp, lq, lm, le, ld,
             lp) = unpack(data, position)
        else:
            length, crc = frameUnpack(data, position)
        bodyEnd = position + 8 + length
        if length > MAX_BODY:
            return position, "length"
        if bodyEnd > end:
            return position, "torn"
        if crc32(view[position + 8:bodyEnd]) != crc:
            return position, "crc"
        if length < 38:
            raise CorruptRecord("journal record shorter than its header", position)
        a = position + 46 + lq
        b = a + lm
        c = b + le
        e = c + ld
        if e + lp != bodyEnd:
            raise CorruptRecord("field lengths do not add up to the record's", position)
        try:
            raw = data[position + 46:a]
            queue = queues.get(raw)
            if queue is None:
                queue = queues[raw] = raw.decode("utf-8")
            messageId = data[a:b]
            # Decoded only to refuse a record that is not UTF-8.
            messageId.decode("utf-8")
            if kind == 1:
                raw = data[b:e]
                known = senders.get(raw)
                if known is None or known[0] != le:
                    known = senders[raw] = (le, senderKeyPrefix(raw[:le].decode("utf-8"),
                                                                raw[le:].decode("utf-8")))
                h = known[1].copy()
                h.update(messageId)
                key = h.digest()
            elif kind == 2:
                receipt = decodeReceiptPayload(data[e:bodyEnd], data[b:c].decode("utf-8"),
                                               data[c:e].decode("utf-8"),
                                               messageId.decode("utf-8"))
                key = receiptKey(receipt.entity, receipt.kind, receipt.offset)
            else:
                raise CorruptRecord("unknown record type %d" % (kind,), position)
        except UnicodeDecodeError:
            raise CorruptRecord("a name is not UTF-8", position)
        except CorruptRecord as error:
            if error.position is None:
                raise CorruptRecord(str(error), position)
            raise
        add(lsn, position, 8 + length, queue, offset, timestamp, key)
        position = bodyEnd
