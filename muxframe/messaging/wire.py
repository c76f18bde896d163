"""
The presence, queue and history messages carried by XTMP, sans-IO: their
XTMP message types and their payloads, which are Protocol Buffers (proto3)
messages numbered as Bimip numbers them where the concept matches
(C{docs/presence-and-queues.md} section 9 has the C{.proto} and examples).

Rules:

  - One XTMP application message carries one of these messages as its
    data; the XTMP type says which (L{StanzaType}: C{0x50} + Bimip's route
    number where Bimip has the message).  Bimip's C{MessageScheme} wrapper
    and its C{route} are not used: the XTMP type is the route.
  - Encoding is the proto3 wire format: fields in number order, scalars
    equal to their default left out (C{optional} ones are written whenever
    set), embedded messages length-delimited, doubles little-endian.
  - Decoding takes any valid proto3 encoding of the message: fields in any
    order, unknown fields skipped, a scalar given twice keeps the last
    value, an embedded message given twice is merged (so a server may
    append fields to a stored message by concatenation).  Malformed input
    (a truncated varint or field, a varint over 10 bytes, a wire type that
    does not fit the field, groups, invalid UTF-8, nesting deeper than
    L{MAX_DEPTH}) raises L{WireError}, never another exception.

Nothing here imports Twisted.
"""

import struct
from enum import IntEnum

from muxframe.errors import MuxframeError

#: Embedded messages nest at most this deep.
MAX_DEPTH = 8

STRING, BYTES, BOOL, INT32, INT64, UINT64, DOUBLE = range(7)
_WIRE = {STRING: 2, BYTES: 2, BOOL: 0, INT32: 0, INT64: 0, UINT64: 0, DOUBLE: 1}
_DEFAULT = {STRING: "", BYTES: b"", BOOL: False, INT32: 0, INT64: 0, UINT64: 0,
            DOUBLE: 0.0}
_DOUBLE = struct.Struct("<d")
_MASK64 = (1 << 64) - 1


class WireError(MuxframeError, ValueError):
    """
    A payload that is not a valid encoding of the message its type names.
    """


class StanzaType(IntEnum):
    """
    The XTMP message types of the presence, queue and history messages:
    C{0x50} plus Bimip's C{MessageScheme} route where Bimip has one.
    """

    Bind = 0x50
    Awareness = 0x52
    AwarenessVisibility = 0x54
    Message = 0x56
    Signal = 0x57
    LocationStream = 0x59
    AwarenessSubscription = 0x5D
    PresenceQuery = 0x5E
    ChannelHistory = 0x5F


#: Bimip's C{type} values: what a client sends, what the server answers.
REQUEST, RESPONSE, ERROR = 1, 2, 3

#: Signal C{status}: an acknowledgement, or a request to resend.
ACK, RESUME = 1, 7
#: Signal / Message C{signal_type}: about the sender, a device of the
#: holder itself, the receiver.
SENDER, DEVICE, RECEIVER = 1, 2, 3
#: C{signal_request}: the server pulls (resend), or pushes.
PULL, PUSH = 1, 2

#: AwarenessSubscription C{action}: ask to watch C{to}, approve or deny
#: C{to}'s request, stop watching C{to}, stop C{to} watching.
SUBSCRIBE, APPROVE, DENY, UNSUBSCRIBE, REMOVE_WATCHER = 1, 2, 3, 4, 5
#: PresenceQuery C{what}.
QUERY_PRESENCE, QUERY_WATCHERS, QUERY_SUBSCRIPTIONS = 1, 2, 3
#: ChannelHistory C{type}: subscribe (c2s), the answer, a live
#: publication (s2c), unsubscribe (c2s), a reset (s2c: the history was
#: lost and recovery is impossible from here on).
HISTORY_SUBSCRIBE, HISTORY_RESPONSE, HISTORY_PUBLICATION = 1, 2, 3
HISTORY_UNSUBSCRIBE, HISTORY_RESET = 4, 5


# -- varints ---------------------------------------------------------------

def encodeVarint(value):
    """
    The base-128 varint of C{value} (0 to 2**64 - 1).
    """
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decodeVarint(data, pos):
    """
    Decode a varint at C{pos}; return C{(value, new position)}.

    @raise WireError: truncated, or longer than 10 bytes.
    """
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# -- messages --------------------------------------------------------------

class ProtoMessage:
    """
    A proto3 message: C{FIELDS} lists C{(number, name, kind, repeated,
    optional)} where kind is a scalar kind or a L{ProtoMessage} class.
    Build with keyword arguments; missing fields take their defaults
    (L{None} for optional ones and messages, [] for repeated ones).
    """

    __slots__ = ()
    FIELDS = ()
    _byNumber = {}
    _order = ()

    def __init__(self, **values):
        for number, name, kind, repeated, optional in self.FIELDS:
            if repeated:
                default = []
            elif optional or not isinstance(kind, int):
                default = None
            else:
                default = _DEFAULT[kind]
            setattr(self, name, values.pop(name, default))
        if values:
            raise TypeError("%s has no field %s" % (type(self).__name__,
                                                    ", ".join(sorted(values))))

    def __eq__(self, other):
        return type(other) is type(self) and all(
            getattr(self, f[1]) == getattr(other, f[1]) for f in self.FIELDS)

    def __repr__(self):
        shown = []
        for number, name, kind, repeated, optional in self.FIELDS:
            value = getattr(self, name)
            if value is not None and value != [] and (
                    optional or not isinstance(kind, int) or value != _DEFAULT[kind]):
                shown.append("%s=%r" % (name, value))
        return "%s(%s)" % (type(self).__name__, ", ".join(shown))

    def encode(self):
        """
        The proto3 encoding.
        """
        out = bytearray()
        for number, name, kind, repeated, optional in self.FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if repeated:
                for item in value:
                    _encodeField(out, number, kind, item)
            elif optional or not isinstance(kind, int) or value != _DEFAULT[kind]:
                _encodeField(out, number, kind, value)
        return bytes(out)

    @classmethod
    def decode(cls, data, depth=0):
        """
        Decode C{data} (bytes); see the module's rules.

        @raise WireError: malformed.
        """
        if depth > MAX_DEPTH:
            raise WireError("messages nested deeper than %d" % (MAX_DEPTH,))
        message = cls.__new__(cls)
        ProtoMessage.__init__(message)
        merged = {}
        pos, end = 0, len(data)
        byNumber = cls._byNumber
        while pos < end:
            key, pos = decodeVarint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = decodeVarint(data, pos)
            elif wire == 2:
                size, pos = decodeVarint(data, pos)
                if size > end - pos:
                    raise WireError("field %d runs past the end" % (number,))
                value = data[pos:pos + size]
                pos += size
            elif wire == 1:
                if end - pos < 8:
                    raise WireError("truncated 64-bit field %d" % (number,))
                value = data[pos:pos + 8]
                pos += 8
            elif wire == 5:
                if end - pos < 4:
                    raise WireError("truncated 32-bit field %d" % (number,))
                value = data[pos:pos + 4]
                pos += 4
            else:
                raise WireError("wire type %d (field %d) is not supported" % (wire, number))
            if number == 0:
                raise WireError("field number 0")
            spec = byNumber.get(number)
            if spec is None:
                continue
            name, kind, repeated = spec
            if isinstance(kind, int):
                if _WIRE[kind] != wire:
                    raise WireError("field %d (%s) has wire type %d" % (number, name, wire))
                value = _scalar(kind, value, name)
                if repeated:
                    getattr(message, name).append(value)
                else:
                    setattr(message, name, value)
            else:
                if wire != 2:
                    raise WireError("field %d (%s) has wire type %d" % (number, name, wire))
                if repeated:
                    getattr(message, name).append(kind.decode(bytes(value), depth + 1))
                else:
                    merged[name] = merged.get(name, b"") + bytes(value)
        for name, raw in merged.items():
            setattr(message, name, byNumberKind(cls, name).decode(raw, depth + 1))
        return message


def byNumberKind(cls, name):
    """
    The message class of field C{name} of C{cls}.
    """
    for number, fieldName, kind, repeated, optional in cls.FIELDS:
        if fieldName == name:
            return kind
    raise KeyError(name)


def _scalar(kind, value, name):
    if kind == STRING:
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("field %s is not valid UTF-8" % (name,))
    if kind == BYTES:
        return bytes(value)
    if kind == UINT64:
        return value
    if kind == BOOL:
        return value != 0
    if kind == INT32:
        return _signed(value, 32)
    if kind == INT64:
        return _signed(value, 64)
    return _DOUBLE.unpack(value)[0]


def _encodeField(out, number, kind, value):
    if isinstance(kind, int):
        wire = _WIRE[kind]
        out += encodeVarint(number << 3 | wire)
        if kind == STRING:
            raw = value.encode("utf-8")
            out += encodeVarint(len(raw))
            out += raw
        elif kind == BYTES:
            out += encodeVarint(len(value))
            out += value
        elif kind == DOUBLE:
            out += _DOUBLE.pack(value)
        else:
            out += encodeVarint(int(value) & _MASK64)
    else:
        raw = value.encode()
        out += encodeVarint(number << 3 | 2)
        out += encodeVarint(len(raw))
        out += raw


def encodeField(number, kind, value):
    """
    One field's encoding (to append to an encoded message).
    """
    out = bytearray()
    _encodeField(out, number, kind, value)
    return bytes(out)


def _define(name, doc, fields):
    """
    A L{ProtoMessage} class with C{fields}: C{(number, name, kind)} plus
    optional flags C{"repeated"} / C{"optional"}.
    """
    specs = tuple((f[0], f[1], f[2], "repeated" in f[3:], "optional" in f[3:])
                  for f in sorted(fields, key=lambda f: f[0]))
    cls = type(name, (ProtoMessage,), {
        "__slots__": tuple(f[1] for f in specs), "__doc__": doc,
        "__module__": __name__, "FIELDS": specs})
    cls._byNumber = {f[0]: (f[1], f[2], f[3]) for f in specs}
    return cls


Identity = _define("Identity", """
    Bimip's Identity: an entity (C{eid}), one of its devices
    (C{connection_resource_id}) and the node serving it.
    """, [(1, "eid", STRING), (2, "device", STRING, "optional"),
          (3, "node", STRING, "optional")])

Bind = _define("Bind", """
    0x50: a session names its device (request); the server answers with
    the bound identity and the device's queue position.
    """, [(1, "identity", Identity), (2, "status", INT32), (3, "details", STRING),
          (4, "delivered", UINT64), (5, "read", UINT64), (6, "next_offset", UINT64),
          (7, "timestamp", INT64)])

Awareness = _define("Awareness", """
    0x52, Bimip's Awareness (its field numbers): a device's status or
    activity (request), or a change of an entity watched (the server's
    notice).
    """, [(1, "id", STRING), (2, "from_", Identity), (3, "to", Identity),
          (4, "type", INT32), (5, "status", INT32), (6, "location_sharing", INT32),
          (7, "latitude", DOUBLE), (8, "longitude", DOUBLE), (9, "ttl", INT32),
          (10, "details", STRING), (11, "timestamp", INT64), (12, "visibility", INT32),
          (13, "version", UINT64)])

AwarenessVisibility = _define("AwarenessVisibility", """
    0x54, Bimip's AwarenessVisibility: C{type} 1 visible, 2 hidden.
    """, [(1, "id", STRING), (2, "from_", Identity), (3, "type", INT32),
          (4, "timestamp", INT64), (5, "details", STRING)])

LocationStream = _define("LocationStream", """
    0x59, Bimip's LocationStream, plus C{location_sharing} (8).
    """, [(1, "id", STRING), (2, "from_", Identity), (3, "to", Identity),
          (4, "latitude", DOUBLE), (5, "longitude", DOUBLE),
          (6, "altitude", DOUBLE, "optional"), (7, "timestamp", INT64),
          (8, "location_sharing", INT32)])

SignalAckState = _define("SignalAckState", """
    Bimip's SignalAckState: which receipt a Signal is (or acknowledges).
    """, [(1, "send", BOOL), (2, "delivered", BOOL), (3, "read", BOOL),
          (4, "advance_offset", BOOL)])

Message = _define("Message", """
    0x56, Bimip's Message (offsets uint64): a message to an entity
    (request), or a record of the holder's queue (the server's push).
    """, [(1, "id", STRING), (2, "signal_offset", UINT64), (3, "user_offset", UINT64),
          (4, "from_", Identity), (5, "to", Identity), (7, "timestamp", INT64),
          (8, "payload", BYTES), (9, "encryption_type", STRING), (10, "encrypted", STRING),
          (11, "signature", STRING), (12, "signal_type", INT32),
          (13, "signal_ack_state", SignalAckState), (14, "signal_request", INT32),
          (15, "owner", Identity), (16, "no_receipts", BOOL)])

Signal = _define("Signal", """
    0x57, Bimip's Signal (offsets uint64): an acknowledgement or RESUME
    (request), the durable "sent" answer to a Message, or a receipt pushed
    to the sender.
    """, [(1, "id", STRING), (2, "signal_offset", UINT64), (3, "user_offset", UINT64),
          (4, "status", INT32), (5, "timestamp", INT64), (6, "from_", Identity),
          (7, "to", Identity), (8, "type", INT32), (9, "signal_type", INT32),
          (10, "error", STRING, "optional"), (11, "signal_lifecycle_state", STRING, "optional"),
          (12, "signal_ack_state", SignalAckState), (13, "signal_request", INT32),
          (14, "duplicate", BOOL)])

AwarenessSubscription = _define("AwarenessSubscription", """
    0x5D: ask to see an entity's awareness, answer such a request, or end
    a subscription; the server's notices of requests and answers.
    """, [(1, "id", STRING), (2, "from_", Identity), (3, "to", Identity),
          (4, "type", INT32), (5, "action", INT32), (6, "state", INT32),
          (7, "timestamp", INT64)])

Device = _define("Device", """
    One online device in a PresenceQuery answer.
    """, [(1, "device", STRING), (2, "status", INT32), (3, "node", STRING),
          (4, "since", INT64), (5, "last_seen", INT64), (6, "details", STRING),
          (7, "location_sharing", INT32), (8, "latitude", DOUBLE), (9, "longitude", DOUBLE)])

ActivityEntry = _define("ActivityEntry", """
    A current activity in a PresenceQuery answer.
    """, [(1, "device", STRING), (2, "status", INT32), (3, "expires_at", INT64),
          (4, "to", STRING)])

SubscriptionEntry = _define("SubscriptionEntry", """
    A watcher or a target, with the subscription's state.
    """, [(1, "eid", STRING), (2, "state", INT32)])

PresenceQuery = _define("PresenceQuery", """
    0x5E: an entity's status and devices, or one's own watchers or
    subscriptions (request and answer).
    """, [(1, "id", STRING), (3, "to", Identity), (4, "what", INT32), (5, "status", INT32),
          (6, "visibility", INT32), (7, "version", UINT64),
          (8, "devices", Device, "repeated"), (9, "activities", ActivityEntry, "repeated"),
          (10, "subscriptions", SubscriptionEntry, "repeated"), (11, "timestamp", INT64)])

Publication = _define("Publication", """
    One publication of a history subject.
    """, [(1, "offset", UINT64), (2, "epoch", STRING), (3, "timestamp", INT64),
          (4, "payload", BYTES), (5, "message_type", INT32)])

ChannelHistory = _define("ChannelHistory", """
    0x5F: subscribe to a history subject, recovering from a position
    (request), its answer, live publications and resets (the server's).
    """, [(1, "id", STRING), (2, "subject", STRING), (3, "type", INT32),
          (4, "offset", UINT64), (5, "epoch", STRING), (6, "recover", BOOL),
          (7, "recovered", BOOL), (8, "failure", INT32),
          (9, "publications", Publication, "repeated")])

#: The message class of each stanza type.
CLASSES = {
    StanzaType.Bind: Bind,
    StanzaType.Awareness: Awareness,
    StanzaType.AwarenessVisibility: AwarenessVisibility,
    StanzaType.Message: Message,
    StanzaType.Signal: Signal,
    StanzaType.LocationStream: LocationStream,
    StanzaType.AwarenessSubscription: AwarenessSubscription,
    StanzaType.PresenceQuery: PresenceQuery,
    StanzaType.ChannelHistory: ChannelHistory,
}


def decodeStanza(messageType, data):
    """
    Decode the payload of an XTMP message of stanza type C{messageType}.

    @raise WireError: not a stanza type, or a malformed payload.
    """
    cls = CLASSES.get(messageType)
    if cls is None:
        raise WireError("%#04x is not a presence, queue or history type" % (messageType,))
    return cls.decode(data)


__all__ = ["StanzaType", "WireError", "decodeStanza", "encodeVarint", "decodeVarint",
           "encodeField", "Identity", "Bind", "Awareness", "AwarenessVisibility",
           "LocationStream", "SignalAckState", "Message", "Signal", "AwarenessSubscription",
           "Device", "ActivityEntry", "SubscriptionEntry", "PresenceQuery", "Publication",
           "ChannelHistory", "CLASSES"]
