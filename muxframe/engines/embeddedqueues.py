"""
The embedded engine's durable per-entity queues: L{IQueueStore} over one
L{Journal} (the records) and one L{KeyValueFile} (consumer positions and
offset floors, kept apart from the records).

Key/value layout (keys are bytes, names are UTF-8, NUL-separated):

 - C{b"o\\x00" + entity + b"\\x00" + device}: delivered u64, read u64,
   seen u64 (the device's sighting number, L{KnownDevices}; a value of
   16 bytes, from before it was kept, has 0).
 - C{b"f\\x00" + entity}: next offset u64, written when a device first
   registers and before a segment holding the entity's records is
   deleted, so offsets never restart for a queue that ever had a device.

Queues kept: an entity's queue is in memory (and counts towards
C{maxQueues}) while it keeps records or known devices (or is watched).
A queue that keeps neither is dropped from memory; if it ever had a
device its floor stays, otherwise (nobody ever bound to it: messages to a
name nobody uses) it is forgotten entirely once no journal segment holds
any of its records, and a message to it later starts again at offset 1
(no device ever acknowledged an offset of it, so no receipt or position
refers to them).
"""

import bisect
import struct

from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

from muxframe.engines import logformat
from muxframe.engines.errors import (
    EngineStopped, EngineUsageError, LimitExceeded, StorageError, firstError)
from muxframe.engines.interfaces import IQueueStore
from muxframe.engines.model import (
    Address, Appended, ConsumerPosition, QueueMessage, QueueRetention,
    ReceiptKind, RecordKind, checkName, isPlainName)
from muxframe.engines.ordering import SerialChains
from muxframe.engines.queuestate import (
    ConsumerTracker, KnownDevices, QueueIndex, retentionStart)
from muxframe.engines.watches import WatchList
from muxframe.logthrottle import LogThrottle, throttled

log = Logger()

_POSITION = struct.Struct(">QQ")
_SEEN_POSITION = struct.Struct(">QQQ")
_FLOOR = struct.Struct(">Q")
#: The sender names of a system message (no sender).
_SYSTEM = ("", "")
#: How many senders' checked names and dedup-key prefixes are kept.
_SENDERS_KEPT = 4096
#: The journal bytes an acknowledgement's receipts read at once, at most
#: (beyond one record): they need only the covered records' headers.
RECEIPT_READ_BYTES = 1 << 20


def _positionKey(entity, device):
    return b"o\x00" + entity.encode("utf-8") + b"\x00" + device.encode("utf-8")


def _floorKey(entity):
    return b"f\x00" + entity.encode("utf-8")


def checkMessage(message):
    """
    Check a L{QueueMessage}'s fields; return it.
    """
    if message.__class__ is QueueMessage and message.payload.__class__ is bytes \
            and len(message.payload) <= logformat.MAX_PAYLOAD:
        checkName(message.messageId, "message id")
        sender = message.sender
        if sender is not None:
            checkName(sender.entity, "sender entity")
            if sender.device:
                checkName(sender.device, "sender device")
        return message
    if not isinstance(message, QueueMessage):
        raise EngineUsageError("append takes a QueueMessage, not %r" % (type(message).__name__,))
    checkName(message.messageId, "message id")
    if message.sender is not None:
        checkName(message.sender.entity, "sender entity")
        if message.sender.device:
            checkName(message.sender.device, "sender device")
    if not isinstance(message.payload, bytes):
        raise EngineUsageError("payload must be bytes")
    if len(message.payload) > logformat.MAX_PAYLOAD:
        raise LimitExceeded("payload of %d bytes exceeds %d" % (
            len(message.payload), logformat.MAX_PAYLOAD), "maxPayload")
    return message


@implementer(IQueueStore)
class EmbeddedQueueStore:
    """
    Queues in a journal on local disk.

    @param clock: an C{IReactorTime} for "now".
    @param maxKnownDevices: devices known per entity at most (see
        L{muxframe.engines.queuestate}).
    @param isOnline: C{isOnline(entity, device)}, whether a device is
        online in presence (never forgotten to make room for another).
    @param maxQueues: queues kept at most: a message to an entity without
        one fails with L{LimitExceeded} (C{maxQueues}) while as many are
        kept (registrations and receipts are never refused, and count).
    """

    def __init__(self, journal, positions, clock, retention=QueueRetention(),
                 dedupWindow=100000, maxFetch=10000, maxJournalBytes=None,
                 maxKnownDevices=1024, isOnline=None, maxQueues=1000000):
        self._journal = journal
        self._positions = positions
        self._clock = clock
        self._seconds = clock.seconds
        self.retention = retention
        self.dedupWindow = dedupWindow
        self.maxFetch = maxFetch
        self.maxJournalBytes = maxJournalBytes
        self.maxKnownDevices = maxKnownDevices
        self.maxQueues = maxQueues
        self.isOnline = isOnline if isOnline is not None else lambda entity, device: False
        self._queues = {}
        self._consumers = {}
        self._watches = WatchList()
        self._acks = SerialChains()
        # (sender entity, device) -> its dedup-key hash prefix: names
        # checked once, the prefix made once (bounded: _SENDERS_KEPT).
        self._senders = {}
        self._unnotified = []
        journal.addDurableListener(self._durable)
        self._lastStamp = 0
        self._open = False
        self.droppedByCap = 0
        self.devicesForgotten = 0
        self.queuesRefused = 0
        self._logThrottle = LogThrottle()

    # Start -----------------------------------------------------------

    def open(self):
        """
        Build the queues from the recovered journal and positions (the
        journal and key/value file must be open).
        """
        for segment in self._journal.segments:
            for queue, run in segment.runs.items():
                index = self._queues.get(queue)
                if index is None:
                    # Floors are applied after every record is in.
                    index = self._queues[queue] = QueueIndex(self.dedupWindow)
                index.addRun(run.firstOffset, run.lsns, run.stamps, run.keys)
                if len(run.stamps):
                    self._lastStamp = max(self._lastStamp, run.stamps[-1])
        self._journal.releaseSealed()
        # Floors of queues with records; the others are applied when their
        # queue is next used (L{_queue}): a floor alone keeps no queue.
        for entity, index in self._queues.items():
            floor = self._positions.get(_floorKey(entity))
            if floor is not None:
                index.floor(_FLOOR.unpack(floor)[0])
        stored = {}
        for key, value in self._positions.items(b"o\x00"):
            entity, device = key[2:].decode("utf-8").split("\x00", 1)
            if len(value) == _POSITION.size:
                (delivered, read), seen = _POSITION.unpack(value), 0
            else:
                delivered, read, seen = _SEEN_POSITION.unpack(value)
            tracker = ConsumerTracker(delivered, read, seen=seen)
            stored.setdefault(entity, []).append((device, tracker))
        for entity, entries in stored.items():
            known = self._consumers[entity] = KnownDevices()
            known.load(entries)
            # A queue with devices is kept (and counts) records or not.
            self._queue(entity)
        self._open = True

    def close(self):
        """
        Refuse further operations.
        """
        self._open = False

    def settled(self):
        """
        A Deferred firing once the acknowledgements in progress have saved
        their positions (their receipts first), so closing the files after
        it loses none of them.
        """
        return self._acks.whenIdle()

    def _check(self):
        if not self._open:
            raise EngineStopped("the queue store is closed")

    def _queue(self, entity):
        index = self._queues.get(entity)
        if index is None:
            index = self._queues[entity] = QueueIndex(self.dedupWindow)
            floor = self._positions.get(_floorKey(entity))
            if floor is not None:
                index.floor(_FLOOR.unpack(floor)[0])
        return index

    def _whenDurable(self, lsn):
        if lsn <= self._journal.durableLsn:
            return defer.succeed(None)
        return self._journal.flush()

    # Appends -----------------------------------------------------------

    def append(self, entity, message):
        """
        See L{IQueueStore.append}.

        The common case (a queue already known, a sender already seen, an
        ASCII message id of at most 63 characters, not a duplicate) is done
        here in one frame: checks, dedup key, timestamp, journal record,
        index, and the group commit's Deferred straight from
        L{Journal.append}.  Anything else takes L{_appendChecked}, with the
        same checks and results.
        """
        index = self._queues.get(entity) if entity.__class__ is str else None
        sender = message.sender if message.__class__ is QueueMessage else None
        if index is None or sender is None or not self._open:
            return self._appendChecked(entity, message)
        messageId = message.messageId
        payload = message.payload
        prefix = self._senders.get((sender.entity, sender.device))
        if prefix is None or payload.__class__ is not bytes \
                or len(payload) > logformat.MAX_PAYLOAD or messageId.__class__ is not str \
                or not isPlainName(messageId):
            # checkName's common case for the message id, without caching
            # it: message ids do not repeat.
            return self._appendChecked(entity, message)
        h = prefix.copy()
        h.update(messageId.encode("ascii"))
        key = h.digest()
        if key in index._dedup:
            # Possibly a duplicate: the general path decides.
            return self._appendChecked(entity, message)
        stamp = self._stamp()
        offset = index.nextOffset
        appended = Appended(offset, stamp)
        try:
            lsn, d = self._journal.append(
                RecordKind.MESSAGE, logformat.FLAG_RECEIPTS if message.wantReceipts else 0,
                entity, offset, stamp, messageId, sender.entity, sender.device, payload, key,
                appended)
        except Exception:
            return defer.fail()
        index.add(lsn, stamp, key)
        if self._watches.has(entity):
            self._unnotified.append((lsn, entity, offset))
        return d

    def _appendChecked(self, entity, message):
        # append's general path.
        try:
            self._check()
            key, flags = self._checkAppend(entity, message)
        except Exception:
            return defer.fail()
        return self._appendDurable(entity, RecordKind.MESSAGE, flags, message.messageId,
                                   message.sender, message.payload, key)

    def _checkAppend(self, entity, message, new=None):
        """
        Check one append's entity and message, raising for bad input before
        anything is stored; return the message's dedup key (see
        L{logformat.messageKey}) and its record flags.

        @param new: the entities without a queue that the batch being
            checked appends to before this one (this one is added).
        @raise LimitExceeded: (C{maxQueues}) C{entity} has no queue, and
            as many as that are kept (counting C{new}).
        """
        if entity.__class__ is not str or entity not in self._queues:
            # Every queue known passed checkName when it was made.
            checkName(entity, "entity")
            if new is None:
                if len(self._queues) >= self.maxQueues:
                    self._refuseQueue(entity)
            elif entity not in new:
                if len(self._queues) + len(new) >= self.maxQueues:
                    self._refuseQueue(entity)
                new.add(entity)
        if message.__class__ is not QueueMessage or message.payload.__class__ is not bytes \
                or len(message.payload) > logformat.MAX_PAYLOAD:
            checkMessage(message)
        messageId = message.messageId
        checkName(messageId, "message id")
        sender = message.sender
        if sender is None:
            names, flags = _SYSTEM, 0
        else:
            names = (sender.entity, sender.device)
            flags = logformat.FLAG_RECEIPTS if message.wantReceipts else 0
        prefix = self._senders.get(names)
        if prefix is None:
            if sender is not None:
                checkName(sender.entity, "sender entity")
                if sender.device:
                    checkName(sender.device, "sender device")
            if len(self._senders) >= _SENDERS_KEPT:
                self._senders.clear()
            prefix = self._senders[names] = logformat.senderKeyPrefix(*names)
        h = prefix.copy()
        h.update(messageId.encode("utf-8"))
        return h.digest(), flags

    def _refuseQueue(self, entity):
        # Counted, and logged at most a few times a minute however many
        # names a sender tries.
        self.queuesRefused += 1
        throttled(log, self._logThrottle, self._seconds(), LogLevel.warn, "queues refused",
                  "{limit} queues are kept (max_queues): a message to {entity!r}, which has "
                  "none, was refused ({total} so far)",
                  limit=self.maxQueues, entity=entity, total=self.queuesRefused)
        raise LimitExceeded("%d queues are kept (max_queues): %r has none, and no more can "
                            "be made" % (self.maxQueues, entity), "maxQueues")

    def _stamp(self):
        # Timestamps never go back, whatever the clock does.
        stamp = int(self._seconds() * 1000)
        if stamp < self._lastStamp:
            return self._lastStamp
        self._lastStamp = stamp
        return stamp

    def _append(self, entity, kind, flags, messageId, sender, payload, key, stamp):
        """
        Append one record with timestamp C{stamp} (from L{_stamp}); return
        C{(Appended, lsn)} at once, not durable yet (L{Journal.flush} makes
        it so), or those of the record it duplicates.
        """
        index = self._queues.get(entity)
        if index is None:
            index = self._queue(entity)
        existing = index.find(key)
        if existing is not None:
            return Appended(existing, index.timestamp(existing), True), index.lsn(existing)
        offset = index.nextOffset
        appended = Appended(offset, stamp)
        if sender is None:
            senderEntity = senderDevice = ""
        else:
            senderEntity, senderDevice = sender.entity, sender.device
        lsn, _ = self._journal.append(
            kind, flags, entity, offset, stamp, messageId, senderEntity, senderDevice,
            payload, key, None, False)
        index.add(lsn, stamp, key)
        if self._watches.has(entity):
            self._unnotified.append((lsn, entity, offset))
        return appended, lsn

    def _appendDurable(self, entity, kind, flags, messageId, sender, payload, key):
        # One record, a Deferred of its Appended once durable.
        try:
            appended, lsn = self._append(entity, kind, flags, messageId, sender, payload, key,
                                         self._stamp())
        except Exception:
            return defer.fail()
        if lsn <= self._journal.durableLsn:
            # A duplicate of a durable record.
            return defer.succeed(appended)
        # The group commit's own Deferred, firing with the result: no chain.
        return self._journal.flush(appended)

    def appendMany(self, items, groups=None):
        """
        See L{IQueueStore.appendMany}: one durable acknowledgement for
        several appends (one Deferred, one flush).
        """
        try:
            self._check()
            check = self._checkAppend
            checked = []
            new = set()
            try:
                for entity, message in items:
                    key, flags = check(entity, message, new)
                    checked.append((entity, message, key, flags))
            except LimitExceeded as e:
                if groups is None or e.limit != "maxQueues":
                    raise
                checked = self._checkGroups(items, groups, checked, e)
        except Exception:
            return defer.fail()
        results = []
        add = results.append
        append = self._append
        message = RecordKind.MESSAGE
        try:
            # One time for the batch: its records are appended together.
            stamp = self._stamp()
            for entity, item, key, flags in checked:
                if key is None:
                    # A refused group's: the LimitExceeded.
                    add(item)
                    continue
                add(append(entity, message, flags, item.messageId, item.sender, item.payload,
                           key, stamp)[0])
        except Exception:
            # What was appended before the fault is still made durable.
            failure = defer.fail()
            return self._journal.flush().addCallback(lambda _: failure)
        return self._journal.flush(results)

    def _checkGroups(self, items, groups, checked, refusal):
        """
        An L{appendMany} with C{groups} met C{maxQueues} (C{refusal}) at
        the item after those C{checked}: the groups before that item's are
        kept as checked, its group is refused, the groups after it are
        checked one by one (L{_checkGroup}).  Only a batch refused pays for
        groups.
        """
        at = len(checked)
        out = []
        for first, last in groups:
            if last < at:
                out.extend(checked[first:last + 1])
            elif first <= at:
                out.extend([(None, refusal, None, None)] * (last + 1 - first))
                # The entities without a queue of the groups admitted.
                new = {entity for entity, _ in items[:first] if entity not in self._queues}
            else:
                out.extend(self._checkGroup(items[first:last + 1], new))
        return out

    def _checkGroup(self, items, new):
        """
        Check one group of an L{appendMany} (see L{_checkAppend}; C{new}
        the entities without a queue the groups admitted before it):
        C{(entity, message, key, flags)} per item or, for a group refused
        for C{maxQueues}, C{(None, LimitExceeded, None, None)} per item
        (C{new} as it was; the group's items after the refused one are not
        looked at: nothing of it is stored).

        @raise Exception: a bad item of a group not refused (the whole
            batch fails).
        """
        checked = []
        added = []
        try:
            for entity, message in items:
                before = len(new)
                key, flags = self._checkAppend(entity, message, new)
                if len(new) > before:
                    added.append(entity)
                checked.append((entity, message, key, flags))
        except LimitExceeded as e:
            if e.limit != "maxQueues":
                raise
            new.difference_update(added)
            return [(None, e, None, None)] * len(items)
        return checked

    def _durable(self, durableLsn):
        # Watchers hear once per flush per queue, of its last durable offset.
        if not self._unnotified:
            return
        last = {}
        keep = []
        for item in self._unnotified:
            if item[0] <= durableLsn:
                last[item[1]] = item[2]
            else:
                keep.append(item)
        self._unnotified = keep
        for entity, offset in last.items():
            self._watches.notify(entity, entity, offset)

    # Reads -------------------------------------------------------------

    def fetch(self, entity, fromOffset, limit=100, maxBytes=1048576):
        """
        See L{IQueueStore.fetch}.
        """
        try:
            self._check()
            checkName(entity, "entity")
            if not 1 <= limit <= self.maxFetch:
                raise LimitExceeded("fetch limit must be 1 to %d" % (self.maxFetch,), "maxFetch")
        except Exception:
            return defer.fail()
        index = self._queues.get(entity)
        if index is None:
            return defer.succeed([])
        start, lsns = index.lsns(max(1, fromOffset), limit)
        durable = self._journal.durableLsn
        if lsns and lsns[-1] > durable:
            # Only durable records are visible (LSNs ascend with offsets).
            lsns = lsns[:bisect.bisect_right(lsns, durable)]
        if not lsns:
            return defer.succeed([])
        d = self._journal.readQueue(lsns, entity, start, maxBytes)
        return d.addErrback(_storageError)

    # Positions ---------------------------------------------------------

    def _positionOf(self, entity, device, tracker):
        index = self._queue(entity)
        return ConsumerPosition(entity, device, tracker.delivered, tracker.read,
                                index.firstOffset, index.nextOffset)

    def _see(self, entity, device):
        """
        C{entity}'s C{device} is seen: its tracker, registered if the device
        is not known (forgetting the least recently seen devices offline
        when C{maxKnownDevices} are known).

        @return: C{(tracker, created, moved)}: whether it was registered,
            and whether its sighting changed the devices' order.
        @raise LimitExceeded: (C{maxKnownDevices}) every known device is
            online; nothing changed.
        """
        known = self._consumers.get(entity)
        tracker = known.get(device) if known is not None else None
        if tracker is not None:
            seen = tracker.seen
            known.touch(device)
            return tracker, False, tracker.seen != seen
        if known is None:
            known = KnownDevices()
        isOnline = self.isOnline
        forgotten = known.toForget(self.maxKnownDevices, lambda d: isOnline(entity, d), entity)
        for gone in forgotten:
            known.remove(gone)
            # Durable with the registration's own write, which follows.
            self._positions.delete(_positionKey(entity, gone)).addErrback(_later)
        if forgotten:
            self._forgot(entity, forgotten)
        index = self._queue(entity)
        first = index.firstOffset
        tracker = known.add(device, ConsumerTracker(first - 1, first - 1))
        self._consumers[entity] = known
        self._markBound(entity, index)
        return tracker, True, True

    def _markBound(self, entity, index):
        # A queue that had a device keeps a floor (see the module's rules);
        # durable with the write that follows.
        if self._positions.get(_floorKey(entity)) is None:
            self._positions.put(_floorKey(entity), _FLOOR.pack(index.nextOffset)).addErrback(
                _later)

    def _forgot(self, entity, devices):
        # Counted, and logged at most a few times a minute however often
        # a client registers fresh devices.
        self.devicesForgotten += len(devices)
        throttled(log, self._logThrottle, self._seconds(), LogLevel.info, "devices forgotten",
                  "{entity!r} knows {limit} devices (max_known_devices): forgot {count} "
                  "seen least recently, such as {device!r} ({total} so far)",
                  entity=entity, limit=self.maxKnownDevices, count=len(devices),
                  device=devices[0], total=self.devicesForgotten)

    def _savePosition(self, entity, device, tracker, position=None):
        # The position given (the tracker's stored one by default: what
        # acknowledgements in progress have not saved yet stays unsaved)
        # and the device's sighting.
        delivered, read = position if position is not None else tracker.stored
        tracker.stored = (delivered, read)
        return self._positions.put(_positionKey(entity, device),
                                   _SEEN_POSITION.pack(delivered, read, tracker.seen))

    def position(self, entity, device):
        """
        See L{IQueueStore.position}; a device seen for the first time is
        registered (durably) at the oldest kept record, and from then on
        holds retention back until it acknowledges.
        """
        try:
            self._check()
            checkName(entity, "entity")
            checkName(device, "device")
        except Exception:
            return defer.fail()
        try:
            tracker, created, moved = self._see(entity, device)
        except Exception:
            return defer.fail()
        position = self._positionOf(entity, device, tracker)
        if not created:
            if moved:
                # Only the order of the devices changed: not waited for.
                self._savePosition(entity, device, tracker).addErrback(_later)
            return defer.succeed(position)
        return self._savePosition(entity, device, tracker).addCallback(lambda _: position)

    def acknowledge(self, entity, device, offset, kind):
        """
        See L{IQueueStore.acknowledge}.
        """
        try:
            self._check()
            checkName(entity, "entity")
            checkName(device, "device")
            kind = ReceiptKind(kind)
            index = self._queue(entity)
            tracker, created, moved = self._see(entity, device)
        except Exception:
            return defer.fail()
        before = (tracker.delivered, tracker.read)
        try:
            delivered, read = tracker.acknowledge(offset, kind, index.firstOffset,
                                                  index.nextOffset)
        except Exception:
            failure = defer.fail()
            if created:
                # The device was registered all the same.
                self._savePosition(entity, device, tracker).addErrback(_later)
            return failure
        if (tracker.delivered, tracker.read) == before:
            if created:
                return self._savePosition(entity, device, tracker).addCallback(
                    lambda _: self._positionOf(entity, device, tracker))
            if moved:
                self._savePosition(entity, device, tracker).addErrback(_later)
            return defer.succeed(self._positionOf(entity, device, tracker))
        covered = sorted(set(delivered) | set(read))
        receipts = self._sendReceipts(entity, device, index, covered, set(delivered), set(read))
        saved = (tracker.delivered, tracker.read)

        def save():
            # After every earlier acknowledgement of this device, and after
            # this one's receipts are durable.
            def write(_):
                known = self._consumers.get(entity)
                if known is None or known.get(device) is not tracker:
                    # Forgotten meanwhile: it stays forgotten.
                    return None
                return self._savePosition(entity, device, tracker, saved)
            return receipts.addCallback(write)
        d = self._acks.after((entity, device), save)
        return d.addCallback(lambda _: self._positionOf(entity, device, tracker))

    def _sendReceipts(self, entity, device, index, covered, delivered, read):
        kept = [o for o in covered if o >= index.firstOffset]
        if not kept:
            return defer.succeed(None)
        lsns = [index.lsn(o) for o in kept]
        d = self._whenDurable(lsns[-1])
        # Only the headers are needed, read a part at a time: the covered
        # records may weigh GiBs together.
        d.addCallback(lambda _: self._journal.readInParts(
            lsns, logformat.decodeJournalHeader, RECEIPT_READ_BYTES))

        def send(records):
            sends = []
            for record in records:
                if record.kind != RecordKind.MESSAGE or not record.flags & logformat.FLAG_RECEIPTS:
                    continue
                for kind, offsets in ((ReceiptKind.DELIVERED, delivered),
                                      (ReceiptKind.READ, read)):
                    if record.offset in offsets:
                        sends.append(self._appendDurable(
                            record.senderEntity, RecordKind.RECEIPT, 0, record.messageId,
                            Address(entity, device),
                            logformat.encodeReceiptPayload(kind, record.offset),
                            logformat.receiptKey(entity, kind, record.offset)))
            return defer.gatherResults(sends, consumeErrors=True)
        return d.addCallback(send).addErrback(firstError)

    def forget(self, entity, device):
        """
        See L{IQueueStore.forget}.
        """
        try:
            self._check()
        except Exception:
            return defer.fail()
        known = self._consumers.get(entity)
        if known is None or known.remove(device) is None:
            return defer.succeed(None)
        if not len(known):
            del self._consumers[entity]
            # (Positions stored before floors marked queues with devices.)
            self._markBound(entity, self._queue(entity))
        return self._positions.delete(_positionKey(entity, device))

    def knownDevices(self, entity):
        """
        See L{IQueueStore.knownDevices}.
        """
        known = self._consumers.get(entity)
        return defer.succeed(known.devices() if known is not None else [])

    def watch(self, entity, callback):
        """
        See L{IQueueStore.watch}.
        """
        checkName(entity, "entity")
        return self._watches.add(entity, callback)

    # Retention ---------------------------------------------------------

    def applyRetention(self):
        """
        Move every queue's first kept offset forward under the retention
        rules, then delete the journal segments nobody needs (and, oldest
        first, those past C{maxJournalBytes}).  Returns a Deferred firing
        with the number of segments deleted.
        """
        if not self._open:
            return defer.succeed(0)
        now = int(self._clock.seconds() * 1000)
        for entity, index in self._queues.items():
            known = self._consumers.get(entity)
            lowest = min(t.delivered for t in known.trackers()) if known else None
            index.trimTo(retentionStart(index, self.retention, now, lowest))
        segmentsInUse = self._journal.segments
        drop = []
        for segment in segmentsInUse[:-1]:
            if not segment.deletable(self._firstKept):
                break
            drop.append(segment)
        if self.maxJournalBytes is not None:
            excess = self._journal.totalBytes - sum(s.size for s in drop) - self.maxJournalBytes
            for segment in segmentsInUse[len(drop):-1]:
                if excess <= 0:
                    break
                lost = 0
                for queue, run in segment.runs.items():
                    index = self._queues.get(queue)
                    if index is not None and index.firstOffset <= run.lastOffset:
                        lost += run.lastOffset + 1 - index.firstOffset
                        index.trimTo(run.lastOffset + 1)
                if lost:
                    self.droppedByCap += lost
                    log.warn("journal over {limit} bytes: dropped {lost} unacknowledged records "
                             "with segment {base}", limit=self.maxJournalBytes, lost=lost,
                             base=segment.base)
                drop.append(segment)
                excess -= segment.size
        if not drop:
            self._forgetIdle()
            return defer.succeed(0)
        floors = set()
        for segment in drop:
            floors.update(segment.runs)
        for queue in sorted(floors):
            # Only queues that had a device keep a floor.
            if queue in self._consumers or self._positions.get(_floorKey(queue)) is not None:
                self._positions.put(_floorKey(queue),
                                    _FLOOR.pack(self._queue(queue).nextOffset))
        d = self._positions.flush()
        d.addCallback(lambda _: self._journal.dropSegments([s.base for s in drop]))
        d.addCallback(lambda _: (self._forgetIdle(), len(drop))[1])
        return d

    def _firstKept(self, queue):
        index = self._queues.get(queue)
        return index.firstOffset if index is not None else 2 ** 64

    def _forgetIdle(self):
        # Empty queues nobody consumes are dropped from memory: with their
        # floor raised to their next offset if they had a device (appends
        # recreate them from it); entirely, if not, once no segment holds
        # their records (else recovery would find them going back).
        idle = [e for e, i in self._queues.items()
                if not len(i) and e not in self._consumers and not self._watches.has(e)]
        if not idle:
            return
        segments = self._journal.segments
        for entity in idle:
            index = self._queues[entity]
            stored = self._positions.get(_floorKey(entity))
            if stored is not None:
                if _FLOOR.unpack(stored)[0] < index.nextOffset:
                    # Its records are in segments kept, or below the floor.
                    self._positions.put(_floorKey(entity),
                                        _FLOOR.pack(index.nextOffset)).addErrback(_later)
                del self._queues[entity]
            elif not any(entity in segment.runs for segment in segments):
                del self._queues[entity]

    def stats(self):
        """
        Counts for operators: queues, kept records, consumers, journal bytes.
        """
        return {"queues": len(self._queues),
                "records": sum(len(i) for i in self._queues.values()),
                "consumers": sum(len(c) for c in self._consumers.values()),
                "journalBytes": self._journal.totalBytes,
                "segments": len(self._journal.segments),
                "flushes": self._journal.flushes,
                "droppedByCap": self.droppedByCap,
                "devicesForgotten": self.devicesForgotten,
                "queuesRefused": self.queuesRefused}


def _later(failure):
    # A write not waited for: a failed one fails every later write of its
    # file too (L{KeyValueFile}), and those are waited for and reported.
    return None


def _storageError(failure):
    if failure.check(OSError):
        raise StorageError("journal read failed: %s" % (failure.value,))
    return failure

