"""
Per-entity queue rules: offsets, deduplication, retention and consumer
positions.  No I/O; time is passed in (Unix ms).

Rules:

 - A queue's offsets are contiguous from 1.  The next offset is one past
   the highest ever handed out, even when every record was dropped (the
   embedded engine keeps a floor for it, see L{QueueIndex.floor}).
 - Deduplication: a record is identified by C{(sender entity, sender
   device, message id)}.  While the original is kept (and among the last
   C{dedupWindow} of the queue), an append with the same identity stores
   nothing and answers the original's offset.
 - Retention moves a queue's first kept offset forward, never back, to the
   greatest of: one past the lowest delivered offset among the entity's
   devices (when C{deleteAcknowledged} and at least one device is known);
   the C{maxMessages} newest; the first record not older than C{maxAge}.
 - A device's position: C{delivered} and C{read}, each the highest offset
   up to which everything was acknowledged.  An acknowledgement past a gap
   is held (at most C{maxPending} of each kind: DELIVERED and READ) until
   the gap fills; READ implies DELIVERED (a READ held is held as both);
   positions never move back; an acknowledgement of an offset that was
   never handed out is an error, one past the limit is refused and
   changes nothing; one below the queue's first kept offset counts as
   that offset (dropped records need no ack).
 - Known devices (L{KnownDevices}): an entity's queue knows at most
   C{maxKnownDevices} devices, each with a position.  Registering a device
   (its first C{position()} or C{acknowledge()}) or seeing one again
   (every later one) makes it the most recently seen: its C{seen} number
   becomes one more than the highest of the entity's devices.  A device
   registering when as many are known forgets the least recently seen
   devices that are not online (enough to make room, at most
   C{FORGET_AT_ONCE} at a time) as an explicit forget would: their
   positions go and they no longer hold retention back.  When every known
   device is online, the registration is refused (L{LimitExceeded},
   C{maxKnownDevices}) and nothing changes.  A forgotten device that comes
   back registers afresh at the oldest kept record.
"""

import bisect
from array import array

from muxframe.engines.errors import EngineUsageError, LimitExceeded
from muxframe.engines.logformat import messageKey
from muxframe.engines.model import MAX_OFFSET, ReceiptKind

_NO_KEY = bytes(16)
#: The most devices one registration forgets (an entity left over the
#: limit by an older version, or a lower setting, shrinks this many at a
#: time, without one long pause).
FORGET_AT_ONCE = 64
#: Keys that fell out of the dedup window leave the dict this many at a
#: time, not one per append (L{QueueIndex.find} ignores them meanwhile).
_FORGET_EVERY = 1024


def dedupKey(sender, messageId):
    """
    The key deduplicating a message: a digest of sender entity, device and
    message id (L{logformat.messageKey}).
    """
    if sender is None:
        return messageKey("", "", messageId)
    return messageKey(sender.entity, sender.device, messageId)


class QueueIndex:
    """
    One queue's kept records: offset -> (LSN, timestamp, dedup key), the
    first kept offset and the next offset.
    """

    def __init__(self, dedupWindow=100000):
        self.firstOffset = 1
        self.nextOffset = 1
        self.dedupWindow = dedupWindow
        self._lsns = array("Q")
        self._stamps = array("Q")
        # 16 bytes per record (zeros: none), in a bytearray rather than a
        # list: no object per key, nothing for the cyclic GC to traverse.
        self._keys = bytearray()
        self._head = 0
        self._dedup = {}
        # Every offset below this one has had its dedup key forgotten.
        self._forgotten = 1

    def __len__(self):
        return self.nextOffset - self.firstOffset

    def floor(self, nextOffset):
        """
        Raise the next offset to at least C{nextOffset} (a floor kept where
        every record of the queue was dropped); nothing is kept below it.
        """
        if nextOffset > self.nextOffset:
            self.trimTo(self.nextOffset)
            self.firstOffset = self.nextOffset = nextOffset

    def find(self, key):
        """
        The offset of the kept record with dedup C{key}, or L{None}.
        """
        offset = self._dedup.get(key)
        if offset is not None and offset >= self.firstOffset \
                and offset >= self.nextOffset - self.dedupWindow:
            return offset
        return None

    def add(self, lsn, timestamp, key=None, offset=None):
        """
        Note the next record (at C{offset}, which must be the next offset
        when given, as in recovery); return its offset.
        """
        if offset is not None and offset != self.nextOffset:
            self._jump(offset)
        if self.nextOffset >= MAX_OFFSET:
            raise LimitExceeded("queue offsets exhausted", "offset")
        offset = self.nextOffset
        self._lsns.append(lsn)
        self._stamps.append(timestamp)
        self._keys += key if key is not None else _NO_KEY
        self.nextOffset = offset + 1
        if key is not None:
            self._dedup[key] = offset
        if offset - self.dedupWindow >= self._forgotten + _FORGET_EVERY:
            self._forgetBeyondWindow()
        return offset

    def addRun(self, firstOffset, lsns, stamps, keys):
        """
        Note a run of records at contiguous offsets from C{firstOffset}
        (recovery, from a segment's index).
        """
        if firstOffset != self.nextOffset:
            self._jump(firstOffset)
        start = self.nextOffset
        count = len(lsns)
        self._lsns.extend(lsns)
        self._stamps.extend(stamps)
        self._keys.extend(keys)
        self.nextOffset = start + count
        # Keys already past the dedup window get no dict entry at all:
        # earlier runs' keys that fall out of it are forgotten, this run's
        # are only entered from the window's start.
        oldest = self.nextOffset - self.dedupWindow
        for offset in range(max(self._forgotten, self.firstOffset), min(start, oldest)):
            self._forget(offset)
        self._forgotten = max(self._forgotten, oldest)
        first = max(0, oldest - start)
        view = bytes(keys)
        self._dedup.update(zip([view[at:at + 16] for at in range(16 * first, 16 * count, 16)],
                               range(start + first, start + count)))

    def _jump(self, offset):
        if offset < self.nextOffset or len(self):
            raise EngineUsageError("queue offset %d where %d was due" % (offset, self.nextOffset))
        # Only a queue whose kept records are all dropped may jump.
        self.trimTo(self.nextOffset)
        self.firstOffset = self.nextOffset = offset

    def _forgetBeyondWindow(self):
        # Keys older than the window are forgotten, oldest first.
        oldest = self.nextOffset - self.dedupWindow
        if oldest > self._forgotten:
            for offset in range(max(self._forgotten, self.firstOffset), oldest):
                self._forget(offset)
            self._forgotten = oldest

    def _forget(self, offset):
        at = 16 * (self._head + offset - self.firstOffset)
        key = bytes(self._keys[at:at + 16])
        if self._dedup.get(key) == offset:
            del self._dedup[key]

    def lsn(self, offset):
        """
        The LSN of the record at C{offset} (kept).
        """
        return self._lsns[self._head + offset - self.firstOffset]

    def timestamp(self, offset):
        """
        The timestamp of the record at C{offset} (kept).
        """
        return self._stamps[self._head + offset - self.firstOffset]

    def lsns(self, fromOffset, count):
        """
        The LSNs of up to C{count} kept records from C{fromOffset} (raised to
        the first kept offset).
        """
        start = max(fromOffset, self.firstOffset)
        i = self._head + start - self.firstOffset
        return start, self._lsns[i:i + max(0, count)]

    def trimTo(self, firstOffset):
        """
        Drop every record below C{firstOffset}.
        """
        firstOffset = min(firstOffset, self.nextOffset)
        if firstOffset <= self.firstOffset:
            return
        for offset in range(max(self.firstOffset, self._forgotten), firstOffset):
            self._forget(offset)
        self._forgotten = max(self._forgotten, firstOffset)
        self._head += firstOffset - self.firstOffset
        self.firstOffset = firstOffset
        if self._head > 4096 and self._head * 2 > len(self._lsns):
            del self._lsns[:self._head]
            del self._stamps[:self._head]
            del self._keys[:16 * self._head]
            self._head = 0

    def firstNotOlderThan(self, cutoff):
        """
        The first kept offset whose timestamp is at least C{cutoff}, or the
        next offset if none (timestamps never decrease in a queue).
        """
        i = bisect.bisect_left(self._stamps, cutoff, self._head)
        return self.firstOffset + (i - self._head)


def retentionStart(index, retention, now, lowestDelivered):
    """
    The first offset C{index} should keep under L{QueueRetention}
    C{retention} at time C{now} (ms); C{lowestDelivered} is the lowest
    delivered offset among the entity's known devices, or L{None} if none
    is known.
    """
    start = index.firstOffset
    if retention.deleteAcknowledged and lowestDelivered is not None:
        start = max(start, lowestDelivered + 1)
    if retention.maxMessages is not None:
        start = max(start, index.nextOffset - retention.maxMessages)
    if retention.maxAge is not None:
        start = max(start, index.firstNotOlderThan(now - int(retention.maxAge * 1000)))
    return min(start, index.nextOffset)


class ConsumerTracker:
    """
    One device's position in one queue: contiguous delivered and read
    offsets, and the acknowledgements waiting past a gap.
    """

    def __init__(self, delivered=0, read=0, maxPending=1024, seen=0):
        self.delivered = delivered
        self.read = min(read, delivered)
        self.maxPending = maxPending
        #: When the device was last seen, as a number that grows with
        #: every sighting among its entity's devices (L{KnownDevices}).
        self.seen = seen
        #: The C{(delivered, read)} its engine last stored (the engine
        #: keeps it up to date; acknowledgements in progress are ahead).
        self.stored = (self.delivered, self.read)
        self._pending = {ReceiptKind.DELIVERED: set(), ReceiptKind.READ: set()}

    def acknowledge(self, offset, kind, firstOffset, nextOffset):
        """
        Apply an acknowledgement.

        @return: C{(newlyDelivered, newlyRead)}: the C{range}s of offsets
            that became delivered and read.
        @raise EngineUsageError: for an offset never handed out or a kind
            that is not DELIVERED or READ.
        @raise LimitExceeded: past C{maxPending} held acknowledgements of
            either kind (nothing is applied).
        """
        if kind not in (ReceiptKind.DELIVERED, ReceiptKind.READ):
            raise EngineUsageError(
                "acknowledgement kind must be DELIVERED or READ, not %r" % (kind,))
        if not 1 <= offset < nextOffset:
            raise EngineUsageError("offset %d was never handed out (next is %d)" % (
                offset, nextOffset))
        oldDelivered, oldRead = self.delivered, self.read
        # Records below the first kept offset were dropped: nothing to wait for.
        floor = firstOffset - 1
        current = {ReceiptKind.DELIVERED: max(self.delivered, floor),
                   ReceiptKind.READ: max(self.read, floor)}
        kinds = (ReceiptKind.DELIVERED, ReceiptKind.READ) if kind == ReceiptKind.READ \
            else (ReceiptKind.DELIVERED,)
        # Every limit is checked before anything changes: a refused
        # acknowledgement applies nothing.
        held = []
        for k in kinds:
            pending = self._pending[k]
            if offset > current[k] and offset not in pending:
                # The offset filling the gap is never held (it is what
                # lets the held go): past the limit, it is still taken.
                if offset > current[k] + 1 and len(pending) >= self.maxPending and sum(
                        1 for o in pending if o > current[k]) >= self.maxPending:
                    raise LimitExceeded("more than %d %s acknowledgements wait past a gap" % (
                        self.maxPending, k.name), "maxPending")
                held.append(pending)
        self.delivered = current[ReceiptKind.DELIVERED]
        self.read = current[ReceiptKind.READ]
        for pending in held:
            pending.add(offset)
        self.delivered = self._advance(ReceiptKind.DELIVERED, self.delivered)
        # Every held READ is also a held DELIVERED, so read <= delivered.
        self.read = min(self._advance(ReceiptKind.READ, self.read), self.delivered)
        return (range(max(oldDelivered, floor) + 1, self.delivered + 1),
                range(max(oldRead, floor) + 1, self.read + 1))

    def _advance(self, kind, current):
        pending = self._pending[kind]
        while current + 1 in pending:
            current += 1
            pending.discard(current)
        for stale in [o for o in pending if o <= current]:
            pending.discard(stale)
        return current

    @property
    def held(self):
        """
        How many acknowledgements wait past a gap.
        """
        return sum(len(p) for p in self._pending.values())


def knownDevicesFull(entity, known):
    """
    The message of the L{LimitExceeded} refusing a device of C{entity}
    when its C{known} devices are all online.
    """
    return ("%r has %d known devices (max_known_devices), every one online: "
            "no position can be forgotten for another" % (entity, known))


class KnownDevices:
    """
    One entity's known devices and their L{ConsumerTracker}s, least
    recently seen first (see the module's rules).
    """

    def __init__(self):
        self._trackers = {}

    def __len__(self):
        return len(self._trackers)

    def __contains__(self, device):
        return device in self._trackers

    def get(self, device):
        """
        The tracker of C{device}, or L{None}.
        """
        return self._trackers.get(device)

    def devices(self):
        """
        The devices, least recently seen first.
        """
        return list(self._trackers)

    def trackers(self):
        """
        The trackers, least recently seen first.
        """
        return self._trackers.values()

    def load(self, entries):
        """
        Add stored C{(device, tracker)} pairs, in any order: they are
        ordered by C{seen}, then by device (a value stored without a
        sighting number has 0).
        """
        for device, tracker in sorted(entries, key=lambda e: (e[1].seen, e[0])):
            self._trackers[device] = tracker

    def _nextSeen(self):
        if not self._trackers:
            return 1
        return self._trackers[next(reversed(self._trackers))].seen + 1

    def touch(self, device):
        """
        C{device} (known) was seen: it becomes the most recently seen.
        """
        trackers = self._trackers
        tracker = trackers[device]
        if next(reversed(trackers)) != device:
            tracker.seen = self._nextSeen()
            del trackers[device]
            trackers[device] = tracker
        return tracker

    def toForget(self, maxKnown, isOnline, entity=""):
        """
        The devices a new device's registration forgets: none while fewer
        than C{maxKnown} are known, else the least recently seen for which
        C{isOnline(device)} is false, enough to make room (at most
        L{FORGET_AT_ONCE}).

        @raise LimitExceeded: every known device is online (the message
            names C{entity}).
        """
        excess = len(self._trackers) - maxKnown + 1
        if excess <= 0:
            return []
        wanted = min(excess, FORGET_AT_ONCE)
        chosen = []
        for device in self._trackers:
            if not isOnline(device):
                chosen.append(device)
                if len(chosen) >= wanted:
                    break
        if not chosen:
            raise LimitExceeded(knownDevicesFull(entity, len(self._trackers)),
                                "maxKnownDevices")
        return chosen

    def add(self, device, tracker):
        """
        Register C{device} (not known) with C{tracker}, as the most recently
        seen.
        """
        tracker.seen = self._nextSeen()
        self._trackers[device] = tracker
        return tracker

    def remove(self, device):
        """
        Forget C{device}; return its tracker or L{None}.
        """
        return self._trackers.pop(device, None)
