"""
The values the engines take and return, shared by every engine.

The values are dataclasses; the ones made per message or notice
(L{QueueMessage}, L{QueuedRecord}, L{Appended}, L{Receipt},
L{PresenceNotice}) are slotted and not frozen, for speed (a frozen
dataclass costs a microsecond more to make): treat them as immutable all
the same.

Numbering follows the Bimip schema (its C{dartmessage.proto}) wherever
the concept matches, so the wire messages can carry these values as they are:
L{Status} is Awareness C{status}, L{Visibility} is AwarenessVisibility
C{type}, L{LocationSharing} is Awareness C{location_sharing}, L{ReceiptKind}
is the field number in SignalAckState.  Offsets are unsigned 64-bit integers
counted from 1 (0 means "nothing"); times are Unix milliseconds.
"""

from dataclasses import dataclass
from enum import IntEnum
from typing import Optional, Tuple

from muxframe.errors import DescribedCode
from muxframe.engines.errors import InvalidName

#: The largest offset any engine hands out (uint64).
MAX_OFFSET = 2 ** 64 - 1

#: Names (entities, devices, channels, message ids) are at most this many
#: UTF-8 bytes.
MAX_NAME_BYTES = 255

_RESERVED = ("\x00", "\x1f")
#: Names that passed L{checkName}'s common case (bounded).
_CHECKED = set()


def isPlainName(value):
    """
    Return whether C{value} (a L{str}) is a name L{checkName} accepts
    without encoding it: 1 to 63 ASCII characters without NUL or the unit
    separator.  C{False} decides nothing: L{checkName} has the full rules.
    """
    return (0 < len(value) <= 63 and value.isascii() and "\x00" not in value
            and "\x1f" not in value)


def checkName(value, what="name"):
    """
    Return C{value} if it is a usable entity, device, channel or message id
    name: a non-empty L{str} of at most L{MAX_NAME_BYTES} UTF-8 bytes without
    NUL or the unit separator (both used as separators in keys).

    @raise InvalidName: naming C{what} and the fault.
    """
    if value.__class__ is str:
        if value in _CHECKED:
            # Entities and senders repeat from call to call.
            return value
        if isPlainName(value):
            # The common case, decided without encoding.
            if len(_CHECKED) >= 65536:
                _CHECKED.clear()
            _CHECKED.add(value)
            return value
    if not isinstance(value, str):
        raise InvalidName("%s must be a str, not %s" % (what, type(value).__name__))
    if not value:
        raise InvalidName("%s is empty" % (what,))
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidName("%s is not encodable as UTF-8" % (what,))
    if size > MAX_NAME_BYTES:
        raise InvalidName("%s is longer than %d bytes" % (what, MAX_NAME_BYTES))
    for reserved in _RESERVED:
        if reserved in value:
            raise InvalidName("%s contains the reserved character %r" % (what, reserved))
    return value


class Status(DescribedCode, IntEnum):
    """
    Awareness status (Bimip Awareness field 5).  1-5 are a device's
    presence; 6 and 7 are ephemeral activities with a TTL.
    """

    ONLINE = 1
    OFFLINE = 2
    AWAY = 3
    BUSY = 4
    DND = 5
    TYPING = 6
    RECORDING = 7


#: Statuses a device may set as its presence.
PRESENCE_STATUSES = frozenset([Status.ONLINE, Status.AWAY, Status.BUSY, Status.DND])
#: Statuses that are ephemeral activities.
ACTIVITY_STATUSES = frozenset([Status.TYPING, Status.RECORDING])


class Visibility(DescribedCode, IntEnum):
    """
    An entity's visibility (Bimip AwarenessVisibility C{type} 1 / 2).  A
    hidden entity appears offline to everyone but itself.
    """

    VISIBLE = 1
    HIDDEN = 2


class LocationSharing(DescribedCode, IntEnum):
    """
    Bimip Awareness C{location_sharing}: with OFF, latitude and longitude
    are never shown to others.
    """

    ON = 1
    OFF = 2


class SubscriptionState(DescribedCode, IntEnum):
    """
    A watcher's awareness subscription to a target, as the target's
    approval left it.
    """

    NONE = 0
    REQUESTED = 1
    APPROVED = 2
    DENIED = 3


class ReceiptKind(DescribedCode, IntEnum):
    """
    Receipt kinds, numbered as the fields of Bimip's SignalAckState.
    """

    SENT = 1
    DELIVERED = 2
    READ = 3


class RecordKind(DescribedCode, IntEnum):
    """
    What a queue record holds.
    """

    MESSAGE = 1
    RECEIPT = 2


class NoticeKind(DescribedCode, IntEnum):
    """
    What a L{PresenceNotice} tells its recipient.
    """

    AWARENESS = 1
    ACTIVITY = 2
    SUBSCRIPTION_REQUEST = 3
    SUBSCRIPTION_ANSWER = 4


class DeliveryKind(DescribedCode, IntEnum):
    """
    How a broker delivery was addressed.
    """

    SUBJECT = 1
    BROADCAST = 2
    NODE = 3


@dataclass(frozen=True)
class Address:
    """
    An entity and one of its devices (Bimip Identity C{eid} and
    C{connection_resource_id}).
    """

    entity: str
    device: str = ""


@dataclass(slots=True)
class QueueMessage:
    """
    A message to append to an entity's queue.

    @ivar messageId: the sender's id for it; a second append with the same
        C{(sender, messageId)} is a duplicate and stores nothing.
    @ivar sender: the sending L{Address}, or L{None} for the system.
    @ivar wantReceipts: whether delivered/read receipts go back to the
        sender's queue.
    """

    messageId: str
    payload: bytes
    sender: Optional[Address] = None
    wantReceipts: bool = True


@dataclass(slots=True)
class Receipt:
    """
    What a RECEIPT record says: C{entity}'s device C{device} had the
    message C{messageId} at C{offset} of its queue C{kind} (delivered/read).
    """

    kind: ReceiptKind
    entity: str
    device: str
    offset: int
    messageId: str


@dataclass(slots=True)
class QueuedRecord:
    """
    One record of an entity's queue, as fetched.
    """

    offset: int
    kind: RecordKind
    messageId: str
    sender: Optional[Address]
    timestamp: int
    payload: bytes
    wantReceipts: bool = False
    receipt: Optional[Receipt] = None


@dataclass(slots=True)
class Appended:
    """
    The result of an append, given once the record is durable: its
    C{offset}, its C{timestamp}, and whether it was a C{duplicate} of a
    record already stored (then C{offset} is the original's).
    """

    offset: int
    timestamp: int
    duplicate: bool = False


@dataclass(frozen=True)
class ConsumerPosition:
    """
    A device's place in its entity's queue.

    @ivar delivered: every offset up to this one is acknowledged delivered
        (0: none).
    @ivar read: every offset up to this one is marked read (0: none).
    @ivar firstOffset: the oldest offset still kept.
    @ivar nextOffset: the offset the next append will get.
    """

    entity: str
    device: str
    delivered: int
    read: int
    firstOffset: int
    nextOffset: int

    @property
    def pending(self):
        """
        How many kept records this device has not acknowledged.
        """
        return max(0, self.nextOffset - max(self.delivered + 1, self.firstOffset))


@dataclass(frozen=True)
class QueueRetention:
    """
    How long a queue keeps records, per queue.

    @ivar maxAge: seconds after which a record is dropped, acknowledged or
        not (L{None}: no limit).
    @ivar maxMessages: at most this many records per queue, oldest dropped
        first (L{None}: no limit).
    @ivar deleteAcknowledged: drop records every known device of the entity
        has acknowledged (needs at least one device).
    """

    maxAge: Optional[float] = 7 * 24 * 3600.0
    maxMessages: Optional[int] = 100000
    deleteAcknowledged: bool = True


@dataclass(frozen=True)
class Location:
    """
    A device's last reported position.
    """

    latitude: float
    longitude: float
    sharing: LocationSharing = LocationSharing.ON


@dataclass(frozen=True)
class DevicePresence:
    """
    One online device of an entity.
    """

    device: str
    status: Status
    node: str
    since: int
    lastSeen: int
    details: str = ""
    location: Optional[Location] = None


@dataclass(frozen=True)
class Activity:
    """
    An ephemeral activity (typing, recording) of one device, until
    C{expiresAt}; C{to} the entity it is directed at, if any.
    """

    device: str
    status: Status
    expiresAt: int
    to: Optional[str] = None


@dataclass(frozen=True)
class Awareness:
    """
    What watchers see of an entity: Bimip's Awareness message (field
    numbers in brackets).  C{version} grows by one with every change of the
    entity's presence, so a receiver can drop a stale notice.

    @ivar entity: [2 from.eid]
    @ivar device: [2 from.connection_resource_id] the device that changed
    @ivar status: [5] the entity's status after the change
    @ivar locationSharing: [6]
    @ivar latitude: [7] 0.0 unless shared
    @ivar longitude: [8] 0.0 unless shared
    @ivar ttl: [9] seconds; 0 for presence, the activity's TTL for 6/7
    @ivar details: [10]
    @ivar timestamp: [11] Unix ms, stamped by the engine
    @ivar visibility: [12]
    """

    entity: str
    device: str
    status: Status
    timestamp: int
    version: int = 0
    details: str = ""
    locationSharing: LocationSharing = LocationSharing.OFF
    latitude: float = 0.0
    longitude: float = 0.0
    ttl: int = 0
    visibility: Visibility = Visibility.VISIBLE
    to: Optional[str] = None


@dataclass(frozen=True)
class EntityPresence:
    """
    An entity's presence as a query answers it.
    """

    entity: str
    status: Status
    devices: Tuple[DevicePresence, ...] = ()
    activities: Tuple[Activity, ...] = ()
    visibility: Visibility = Visibility.VISIBLE
    version: int = 0


@dataclass(slots=True)
class PresenceNotice:
    """
    Something to tell C{recipient}'s sessions: an awareness change of an
    entity it watches, an activity directed at it, a subscription request
    to it, or the answer to its own request.
    """

    kind: NoticeKind
    recipient: str
    entity: str
    awareness: Optional[Awareness] = None
    subscription: SubscriptionState = SubscriptionState.NONE
    timestamp: int = 0


@dataclass(frozen=True)
class StreamPosition:
    """
    A place in a channel's history: the last C{offset} seen and the
    C{epoch} it belongs to.
    """

    offset: int
    epoch: str


@dataclass(frozen=True)
class Publication:
    """
    One message of a channel's history.
    """

    channel: str
    offset: int
    epoch: str
    timestamp: int
    payload: bytes


@dataclass(frozen=True)
class HistoryOptions:
    """
    How much history a channel keeps: the last C{size} publications, none
    older than C{ttl} seconds; a recovery returns at most C{maxRecover}.
    """

    size: int = 100
    ttl: float = 300.0
    maxRecover: int = 1000


@dataclass(frozen=True)
class Recovered:
    """
    A successful recovery: the C{publications} after the subscriber's
    offset, oldest first, and the channel's current C{position}.
    """

    publications: Tuple[Publication, ...]
    position: StreamPosition


@dataclass(frozen=True)
class Delivery:
    """
    One message the broker delivered to this node.
    """

    kind: DeliveryKind
    subject: str
    payload: bytes
    origin: str
