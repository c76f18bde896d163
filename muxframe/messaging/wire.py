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

_SMALL = [bytes((n,)) for n in range(0x80)]


def encodeVarint(value):
    """
    The base-128 varint of C{value} (0 to 2**64 - 1).
    """
    if value < 0x80:
        return _SMALL[value]
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
    C{__init__} and C{encode} are generated per class (L{_define}).
    """

    __slots__ = ()
    FIELDS = ()
    _byNumber = {}
    _byKey = {}

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

    @classmethod
    def decode(cls, data, depth=0):
        """
        Decode C{data} (bytes); see the module's rules.

        @raise WireError: malformed.
        """
        if depth > MAX_DEPTH:
            raise WireError("messages nested deeper than %d" % (MAX_DEPTH,))
        message = cls()
        pos, end = 0, len(data)
        byKey = cls._byKey
        while pos < end:
            # One-byte keys and lengths (the usual case) without a call.
            key = data[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = decodeVarint(data, pos)
            wire = key & 7
            if wire == 2:
                if pos < end and data[pos] < 0x80:
                    size = data[pos]
                    pos += 1
                else:
                    size, pos = decodeVarint(data, pos)
                if size > end - pos:
                    raise WireError("field %d runs past the end" % (key >> 3,))
                value = data[pos:pos + size]
                pos += size
            elif wire == 0:
                if pos < end and data[pos] < 0x80:
                    value = data[pos]
                    pos += 1
                else:
                    value, pos = decodeVarint(data, pos)
            elif wire == 1:
                if end - pos < 8:
                    raise WireError("truncated 64-bit field %d" % (key >> 3,))
                value = data[pos:pos + 8]
                pos += 8
            elif wire == 5:
                if end - pos < 4:
                    raise WireError("truncated 32-bit field %d" % (key >> 3,))
                value = data[pos:pos + 4]
                pos += 4
            else:
                raise WireError("wire type %d (field %d) is not supported" % (wire, key >> 3))
            spec = byKey.get(key)
            if spec is None:
                number = key >> 3
                if number == 0:
                    raise WireError("field number 0")
                known = cls._byNumber.get(number)
                if known is not None:
                    raise WireError("field %d (%s) has wire type %d" % (
                        number, known[0], wire))
                continue
            name, convert, repeated, sub = spec
            if sub is None:
                if convert is not None:
                    value = convert(value)
                if repeated:
                    getattr(message, name).append(value)
                else:
                    setattr(message, name, value)
            elif repeated:
                getattr(message, name).append(sub.decode(value, depth + 1))
            else:
                current = getattr(message, name)
                value = sub.decode(value, depth + 1)
                setattr(message, name, value if current is None else _merged(current, value))
        return message


def _merged(first, second):
    """
    C{first} with the fields present in C{second} merged in, as decoding
    their concatenation gives: scalars replaced, embedded messages merged,
    repeated fields appended.
    """
    for number, name, kind, repeated, optional in first.FIELDS:
        value = getattr(second, name)
        if repeated:
            getattr(first, name).extend(value)
        elif value is None:
            continue
        elif not isinstance(kind, int):
            old = getattr(first, name)
            setattr(first, name, value if old is None else _merged(old, value))
        elif optional or value != _DEFAULT[kind]:
            setattr(first, name, value)
    return first


def _converter(kind, name):
    """
    The function turning a field's decoded wire value into its value
    (L{None}: it is the value).
    """
    if kind == STRING:
        def text(value):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise WireError("field %s is not valid UTF-8" % (name,))
        return text
    if kind == BYTES:
        return bytes
    if kind == UINT64:
        return None
    if kind == BOOL:
        return bool
    if kind == INT32:
        return lambda value: _signed(value, 32)
    if kind == INT64:
        return lambda value: _signed(value, 64)
    return lambda value: _DOUBLE.unpack(value)[0]


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


def _generated(specs):
    """
    Source of a class's C{__init__} and C{encode}, specialised to its
    fields (as dataclasses generate theirs): these run once per message
    sent or stored, and a loop over the fields costs several times more.
    """
    names = [f[1] for f in specs]
    params = []
    body = []
    for number, name, kind, repeated, optional in specs:
        if repeated:
            params.append("%s=None" % (name,))
            body.append("    self.%s = [] if %s is None else %s" % (name, name, name))
        elif optional or not isinstance(kind, int):
            params.append("%s=None" % (name,))
            body.append("    self.%s = %s" % (name, name))
        else:
            params.append("%s=%r" % (name, _DEFAULT[kind]))
            body.append("    self.%s = %s" % (name, name))
    init = "def __init__(self, *, %s):\n%s\n" % (", ".join(params), "\n".join(body))
    lines = ["def encode(self):", "    out = []", "    add = out.append"]
    for number, name, kind, repeated, optional in specs:
        key = "_K%d_%d" % (number, _WIRE[kind] if isinstance(kind, int) else 2)
        value = "self.%s" % (name,)
        if repeated:
            lines += ["    for v in %s:" % (value,),
                      "        raw = v.encode()",
                      "        add(%s + _varint(len(raw)) + raw)" % (key,)]
            continue
        lines.append("    v = %s" % (value,))
        test = "v is not None" if optional or not isinstance(kind, int) else "v"
        lines.append("    if %s:" % (test,))
        if not isinstance(kind, int):
            lines.append("        raw = v.encode()")
            lines.append("        add(%s + _varint(len(raw)) + raw)" % (key,))
        elif kind == STRING:
            lines.append("        raw = v.encode('utf-8')")
            lines.append("        add(%s + _varint(len(raw)) + raw)" % (key,))
        elif kind == BYTES:
            lines.append("        add(%s + _varint(len(v)) + v)" % (key,))
        elif kind == DOUBLE:
            lines.append("        add(%s + _packDouble(v))" % (key,))
        else:
            lines.append("        add(%s + _varint(int(v) & _MASK64))" % (key,))
    lines.append("    return b''.join(out)")
    namespace = {"_varint": encodeVarint, "_packDouble": _DOUBLE.pack, "_MASK64": _MASK64}
    for number, name, kind, repeated, optional in specs:
        wireType = _WIRE[kind] if isinstance(kind, int) else 2
        namespace["_K%d_%d" % (number, wireType)] = encodeVarint(number << 3 | wireType)
    exec(init + "\n".join(lines) + "\n", namespace)
    return namespace["__init__"], namespace["encode"], names


def _define(name, doc, fields):
    """
    A L{ProtoMessage} class with C{fields}: C{(number, name, kind)} plus
    optional flags C{"repeated"} / C{"optional"}.
    """
    specs = tuple((f[0], f[1], f[2], "repeated" in f[3:], "optional" in f[3:])
                  for f in sorted(fields, key=lambda f: f[0]))
    init, encode, names = _generated(specs)
    init.__doc__ = "Build a %s; fields not given take their defaults." % (name,)
    encode.__doc__ = "The proto3 encoding."
    cls = type(name, (ProtoMessage,), {
        "__slots__": tuple(names), "__doc__": doc, "__init__": init, "encode": encode,
        "__module__": __name__, "FIELDS": specs})
    cls._byNumber = {f[0]: (f[1], f[2], f[3]) for f in specs}
    # Decoding dispatches on the whole key: number and expected wire type.
    cls._byKey = {
        f[0] << 3 | (_WIRE[f[2]] if isinstance(f[2], int) else 2):
            (f[1], _converter(f[2], f[1]) if isinstance(f[2], int) else None, f[3],
             None if isinstance(f[2], int) else f[2])
        for f in specs}
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
