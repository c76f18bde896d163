"""
The embedded engine's record format, byte for byte.  No I/O.

Rules:

 - Every file the engine appends to (journal segments, key/value files)
   starts with an 8-byte magic naming its kind and format version, then
   holds framed records back to back.
 - A frame is C{length} (u32, big-endian: the body's length), C{crc}
   (u32: zlib's CRC-32 of the body), then the body.  A body is at most
   L{MAX_BODY} bytes; a length beyond it is corruption, not a reason to
   allocate.
 - Scanning stops at the first frame that is incomplete (a torn tail: the
   writer died mid-write) or whose CRC does not match; everything before
   it is good and the file is truncated there on recovery.  Nothing after
   a bad frame is trusted, since records are written in order and
   acknowledged only after fsync: a bad frame can only be in the part that
   was never acknowledged.
 - A journal record body: a 38-byte header of type u8 (L{RecordKind}),
   flags u8 (bit 0: receipts wanted), lsn u64 (the journal's own sequence
   number, contiguous from the segment's base), offset u64 (in its queue),
   timestamp u64 (Unix ms), the byte lengths of queue, message id, sender
   entity and sender device (u16 each) and of the payload (u32); then those
   five fields back to back (UTF-8 strings, raw payload).  The lengths must
   add up to the body's length.  A RECEIPT record's payload is kind u8 + offset u64 in
   the queue of the receipt's sender entity (who had the message).
 - Deduplication keys are not stored in records: they are BLAKE2b-128
   digests of fields every record has (L{messageKey}, L{receiptKey}), and
   sealed segments' index files carry them.
 - A key/value record body: op u8 (1 put, 2 delete), key as u16 length +
   bytes, value as u32 length + bytes (empty for delete).
"""

import functools
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass

from muxframe.engines.errors import CorruptRecord
from muxframe.engines.model import Address, QueuedRecord, Receipt, ReceiptKind, RecordKind

JOURNAL_MAGIC = b"MXFJRN\x00\x01"
KV_MAGIC = b"MXFKVS\x00\x01"
MAGIC_SIZE = 8

FRAME_HEADER = struct.Struct(">II")
#: Largest record body: a 16 MiB payload plus the header fields.
MAX_BODY = 16 * 1024 * 1024 + 4096
MAX_PAYLOAD = 16 * 1024 * 1024

FLAG_RECEIPTS = 0x01

_JOURNAL_FIXED = struct.Struct(">BBQQQ")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_RECEIPT = struct.Struct(">BQ")
_KV_OP = struct.Struct(">BH")

KV_PUT = 1
KV_DELETE = 2


def frame(body):
    """
    Return the framed record for C{body}.
    """
    if len(body) > MAX_BODY:
        raise CorruptRecord("record body of %d bytes exceeds %d" % (len(body), MAX_BODY))
    return FRAME_HEADER.pack(len(body), zlib.crc32(body)) + body


def scanFrames(data, start=0, end=None):
    """
    Walk the frames in C{data[start:end]}.

    @return: C{(bodies, goodEnd, fault)}: a list of C{(position, body)}, the
        position just past the last good frame, and L{None} or a short
        reason the scan stopped early (C{"torn"}, C{"crc"}, C{"length"}).
    """
    if end is None:
        end = len(data)
    # Bodies are sliced from bytes directly (one copy, no memoryview).
    view = data if isinstance(data, bytes) else memoryview(data)
    position = start
    bodies = []
    unpack = FRAME_HEADER.unpack_from
    crc32 = zlib.crc32
    while True:
        if end - position < 8:
            return bodies, position, ("torn" if position != end else None)
        length, crc = unpack(data, position)
        if length > MAX_BODY:
            return bodies, position, "length"
        bodyEnd = position + 8 + length
        if bodyEnd > end:
            return bodies, position, "torn"
        body = view[position + 8:bodyEnd]
        if crc32(body) != crc:
            return bodies, position, "crc"
        bodies.append((position, body))
        position = bodyEnd


#: Queue and sender names repeat from record to record: their UTF-8 bytes,
#: made once (bounded; a dict lookup is cheaper than an lru_cache call).
_NAME_BYTES = {}


def _nameBytes(value):
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise CorruptRecord("name too long")
    if len(_NAME_BYTES) >= 4096:
        _NAME_BYTES.clear()
    _NAME_BYTES[value] = raw
    return raw


_NAMES = {}


def _decodedName(raw):
    # Names repeat from record to record: decode each once (bounded cache).
    name = _NAMES.get(raw)
    if name is None:
        name = raw.decode("utf-8")
        if len(_NAMES) >= 4096:
            _NAMES.clear()
        _NAMES[raw] = name
    return name


@functools.lru_cache(maxsize=4096)
def _address(entity, device):
    return Address(entity, device)


@dataclass(slots=True)
class JournalRecord:
    """
    One decoded journal record.
    """

    kind: RecordKind
    flags: int
    lsn: int
    offset: int
    timestamp: int
    queue: str
    messageId: str
    senderEntity: str
    senderDevice: str
    payload: bytes

    @property
    def sender(self):
        """
        The sender L{Address}, or L{None} for the system.
        """
        if not self.senderEntity:
            return None
        return _address(self.senderEntity, self.senderDevice)

    def receipt(self):
        """
        For a RECEIPT record, the L{Receipt} it carries: the sender fields
        name who had the message, the message id is the original's.
        """
        if self.kind != RecordKind.RECEIPT:
            return None
        return decodeReceiptPayload(self.payload, self.senderEntity,
                                    self.senderDevice, self.messageId)


def encodeJournalFrame(kind, flags, lsn, offset, timestamp, queue, messageId,
                       senderEntity, senderDevice, payload):
    """
    Return the two pieces of one framed journal record: its frame header
    (length and CRC-32 of the body) and its body.  A writer that batches
    records keeps both pieces and joins a whole batch once, so the payload
    is copied once on its way to the file.
    """
    lp = len(payload)
    if lp > MAX_PAYLOAD:
        raise CorruptRecord("payload of %d bytes exceeds %d" % (lp, MAX_PAYLOAD))
    names = _NAME_BYTES
    q = names.get(queue)
    if q is None:
        q = _nameBytes(queue)
    e = names.get(senderEntity)
    if e is None:
        e = _nameBytes(senderEntity)
    d = names.get(senderDevice)
    if d is None:
        d = _nameBytes(senderDevice)
    m = messageId.encode("utf-8")
    lm = len(m)
    if lm > 0xFFFF:
        raise CorruptRecord("message id too long")
    body = b"".join((_JOURNAL_HEAD.pack(kind, flags, lsn, offset, timestamp, len(q), lm,
                                        len(e), len(d), lp), q, m, e, d, payload))
    return FRAME_HEADER.pack(len(body), _crc32(body)), body


def encodeJournalRecord(kind, flags, lsn, offset, timestamp, queue, messageId,
                        senderEntity, senderDevice, payload):
    """
    Return the framed bytes of one journal record.
    """
    return b"".join(encodeJournalFrame(kind, flags, lsn, offset, timestamp, queue, messageId,
                                       senderEntity, senderDevice, payload))


_crc32 = zlib.crc32


_JOURNAL_HEAD = struct.Struct(">BBQQQHHHHI")
_KINDS = {1: RecordKind.MESSAGE, 2: RecordKind.RECEIPT}


def _decodeFields(body, position, cut=0):
    # (cut: the payload's bytes were cut off C{body}'s end.)
    if body.__class__ is not bytes:
        body = bytes(body)
    if len(body) < 38:
        raise CorruptRecord("journal record shorter than its header", position)
    (kind, flags, lsn, offset, timestamp, lq, lm, le, ld,
     lp) = _JOURNAL_HEAD.unpack_from(body, 0)
    a = 38 + lq
    b = a + lm
    c = b + le
    e = c + ld
    if e + lp != len(body) + cut:
        raise CorruptRecord("field lengths do not add up to the record's", position)
    try:
        kind = _KINDS[kind]
    except KeyError:
        raise CorruptRecord("unknown record type %d" % (kind,), position)
    get = _NAMES.get
    queue, entity, device = body[38:a], body[b:c], body[c:e]
    try:
        return (kind, flags, lsn, offset, timestamp, get(queue) or _decodedName(queue),
                body[a:b].decode("utf-8"), get(entity) or _decodedName(entity),
                get(device) or _decodedName(device), body[e:])
    except UnicodeDecodeError:
        raise CorruptRecord("a name is not UTF-8", position)


def decodeJournalRecord(body, position=None):
    """
    Decode one journal record body (as L{scanFrames} gives it).

    @raise CorruptRecord: naming what is wrong.
    """
    return JournalRecord(*_decodeFields(body, position))


def decodeJournalHeader(body, position=None):
    """
    Decode one journal record body as L{decodeJournalRecord} does, but
    for its payload (left out: C{b""}), for what needs only the rest.

    @raise CorruptRecord: naming what is wrong.
    """
    if len(body) < 38:
        raise CorruptRecord("journal record shorter than its header", position)
    lp = _JOURNAL_HEAD.unpack_from(body, 0)[-1]
    if lp > len(body) - 38:
        raise CorruptRecord("field lengths do not add up to the record's", position)
    return JournalRecord(*_decodeFields(body[:len(body) - lp], position, lp)[:-1], b"")


def queuedRecordDecoder(queue):
    """
    A decoder for L{Journal.read} giving L{QueuedRecord}s of C{queue}'s
    records (and raising L{CorruptRecord} for another queue's).
    """
    def decode(body, position):
        (kind, flags, lsn, offset, timestamp, recordQueue, messageId, senderEntity,
         senderDevice, payload) = _decodeFields(body, position)
        if recordQueue != queue:
            raise CorruptRecord("record of queue %r where %r was due" % (recordQueue, queue),
                                position)
        receipt = None
        if kind == RecordKind.RECEIPT:
            receipt = decodeReceiptPayload(payload, senderEntity, senderDevice, messageId)
        return QueuedRecord(offset, kind, messageId,
                            _address(senderEntity, senderDevice) if senderEntity else None,
                            timestamp, payload, bool(flags & FLAG_RECEIPTS), receipt)
    return decode


_LSN = struct.Struct(">Q")


def peekLsn(body):
    """
    The LSN of a journal record body, nothing else decoded.
    """
    return _LSN.unpack_from(body, 2)[0]


def peekJournalHeader(body):
    """
    Return C{(lsn, offset, timestamp, queue)} of a journal record body
    without decoding the rest.
    """
    if len(body) < 38:
        raise CorruptRecord("journal record shorter than its header")
    _, _, lsn, offset, timestamp, lq = _JOURNAL_HEAD.unpack_from(body, 0)[:6]
    try:
        return lsn, offset, timestamp, bytes(body[38:38 + lq]).decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptRecord("queue name is not UTF-8")


def messageKey(senderEntity, senderDevice, messageId):
    """
    The 16-byte dedup key of a message: BLAKE2b-128 of sender entity, sender
    device and message id, NUL-separated (NUL cannot occur in names).
    """
    # The hash state of a sender's prefix is made once and copied.
    prefix = _PREFIXES.get((senderEntity, senderDevice))
    if prefix is None:
        if len(_PREFIXES) >= 4096:
            _PREFIXES.clear()
        prefix = _PREFIXES[(senderEntity, senderDevice)] = senderKeyPrefix(
            senderEntity, senderDevice)
    h = prefix.copy()
    h.update(messageId.encode("utf-8"))
    return h.digest()


def senderKeyPrefix(senderEntity, senderDevice):
    """
    The BLAKE2b-128 state L{messageKey} starts from for one sender: copy
    it, update it with the message id's UTF-8 bytes and digest it.
    """
    return hashlib.blake2b(("%s\x00%s\x00" % (senderEntity, senderDevice)).encode("utf-8"),
                           digest_size=16)


_PREFIXES = {}


def messageKeyAndFlags(message):
    """
    The dedup key of C{message} (L{messageKey}) and its record flags
    (L{FLAG_RECEIPTS} when its sender wants receipts): what every engine's
    append stores beside the message.
    """
    sender = message.sender
    if sender is None:
        return messageKey("", "", message.messageId), 0
    return (messageKey(sender.entity, sender.device, message.messageId),
            FLAG_RECEIPTS if message.wantReceipts else 0)


def readRange(path, start, end):
    """
    Read the bytes C{start} to C{end} of the file at C{path} (a blocking
    call, for a thread).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, end - start, start)
    finally:
        os.close(fd)


def receiptKey(entity, kind, offset):
    """
    The 16-byte dedup key of a receipt: one per (entity that had the
    message, receipt kind, offset in its queue), whichever device sent it.
    """
    raw = ("\x00receipt\x00%s\x00%d\x00%d" % (entity, int(kind), offset)).encode("utf-8")
    return hashlib.blake2b(raw, digest_size=16).digest()


def recordKey(record):
    """
    The dedup key of a decoded L{JournalRecord}.
    """
    if record.kind == RecordKind.RECEIPT:
        receipt = record.receipt()
        return receiptKey(receipt.entity, receipt.kind, receipt.offset)
    return messageKey(record.senderEntity, record.senderDevice, record.messageId)


def encodeReceiptPayload(kind, offset):
    """
    The payload of a RECEIPT record: kind u8 + offset u64.
    """
    return _RECEIPT.pack(int(kind), offset)


def decodeReceiptPayload(payload, entity, device, messageId):
    """
    The L{Receipt} a RECEIPT record's payload and fields carry.
    """
    if len(payload) != _RECEIPT.size:
        raise CorruptRecord("receipt payload of %d bytes" % (len(payload),))
    kind, offset = _RECEIPT.unpack(payload)
    try:
        kind = ReceiptKind(kind)
    except ValueError:
        raise CorruptRecord("unknown receipt kind %d" % (kind,))
    return Receipt(kind, entity, device, offset, messageId)


def encodeKeyValue(op, key, value=b""):
    """
    Return the framed bytes of one key/value record.
    """
    if len(key) > 0xFFFF:
        raise CorruptRecord("key too long")
    body = _KV_OP.pack(op, len(key)) + key + _U32.pack(len(value)) + value
    return FRAME_HEADER.pack(len(body), zlib.crc32(body)) + body


def decodeKeyValue(body, position=None):
    """
    Decode one key/value body into C{(op, key, value)}.
    """
    if len(body) < _KV_OP.size:
        raise CorruptRecord("key/value record shorter than its header", position)
    op, keyLength = _KV_OP.unpack_from(body, 0)
    if op not in (KV_PUT, KV_DELETE):
        raise CorruptRecord("unknown key/value op %d" % (op,), position)
    at = _KV_OP.size + keyLength
    if at + 4 > len(body):
        raise CorruptRecord("key/value record ends inside the key", position)
    key = bytes(body[_KV_OP.size:at])
    (valueLength,) = _U32.unpack_from(body, at)
    at += 4
    if at + valueLength != len(body):
        raise CorruptRecord("value length %d does not match the record" % (valueLength,), position)
    return op, key, bytes(body[at:])


def replayKeyValues(data):
    """
    Replay a key/value file's bytes (magic included) into a dict.

    @return: C{(table, goodEnd, fault)} as L{scanFrames}; a file with the
        wrong magic raises L{CorruptRecord}.
    """
    if len(data) < MAGIC_SIZE:
        return {}, 0, ("torn" if data else None)
    if data[:MAGIC_SIZE] != KV_MAGIC:
        raise CorruptRecord("not a key/value file (magic %r)" % (bytes(data[:MAGIC_SIZE]),), 0)
    table = {}
    bodies, goodEnd, fault = scanFrames(data, MAGIC_SIZE)
    for position, body in bodies:
        op, key, value = decodeKeyValue(body, position)
        if op == KV_PUT:
            table[key] = value
        else:
            table.pop(key, None)
    return table, goodEnd, fault
