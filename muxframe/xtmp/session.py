"""
XTMP message bodies, reassembly and delivery state, sans-IO.

A logical message's I{body} is what fragments carry (concatenated) and what
the checksum and AEAD protect.  Its layout, each part present only with its
flag::

  [u64 request id         if RESPONSE]
  [u64 delivery id        if REQUIRES_ACK]
  [u16 length, UTF-8 name if STREAM_DATA]
  data                    (zlib-compressed if COMPRESSED)

Delivery ids number a direction's REQUIRES_ACK messages from 1 for the life
of a session (across reconnects and resumptions), in the order they are
first encoded (so in wire order, whatever the priorities).  An Ack carries the
highest delivery id the receiver has given its application; since messages
arrive in order, it acknowledges every lower id too.

A request id names a message of one direction for the whole session:
C{generation * 2**32 + sequence}, where C{generation} counts the
direction's key changes (KeyUpdates and re-handshakes) before the message's
first frame.  Sequence numbers restart at 0 with every key, so they alone
would let a response to an old request match a newer one.
"""

import struct
import zlib
from collections import OrderedDict

from muxframe.xtmp.codec import F, decodeName, encodeName
from muxframe.xtmp.errors import MalformedMessage, MessageTooLarge

_U64 = struct.Struct(">Q")

#: Sequence numbers under one traffic key stay below this (the sender
#: updates its key first), so they fit the low half of a request id.
SEQUENCE_LIMIT = 1 << 32


def requestIdFor(generation, sequence):
    """
    The request id of a message whose first frame had C{sequence} under a
    key of C{generation} (docs/xtmp.md section 9.4).
    """
    return (generation << 32) | sequence

#: Priority classes, in the order they leave the send queue.
EMERGENCY, HIGH, NORMAL = 0, 1, 2

#: Flags an application may set on a message it sends.
APPLICATION_FLAGS = (F.PRIORITY_HIGH | F.REQUIRES_ACK
                     | F.STREAM_DATA | F.EMERGENCY | F.RESPONSE
                     | F.COMPRESSED)


def priorityOf(flags):
    """
    The priority class of a message with C{flags}.
    """
    if flags & F.EMERGENCY:
        return EMERGENCY
    if flags & F.PRIORITY_HIGH:
        return HIGH
    return NORMAL


class OutgoingMessage:
    """
    A logical message waiting to be sent (and, with REQUIRES_ACK, to be
    acknowledged).

    @ivar flags: the application's flags; COMPRESSED means "try to".
    @ivar request: an opaque token for a request awaiting its response.
    """

    __slots__ = ("type", "flags", "data", "requestSequence", "deliveryId",
                 "streamName", "request", "size", "requiresAck")

    def __init__(self, type, flags, data, requestSequence=None,
                 deliveryId=None, streamName=None, request=None,
                 requiresAck=False):
        self.type = type
        self.flags = flags
        self.data = data
        self.requestSequence = requestSequence
        self.deliveryId = deliveryId
        self.streamName = streamName
        self.request = request
        self.requiresAck = requiresAck or deliveryId is not None
        self.size = len(data) + 32

    def body(self, compressThreshold):
        """
        Build the body and its final flags.

        @return: C{(flags, body)}.
        """
        flags = self.flags & ~F.COMPRESSED
        parts = []
        if self.requestSequence is not None:
            flags |= F.RESPONSE
            parts.append(_U64.pack(self.requestSequence))
        if self.deliveryId is not None:
            flags |= F.REQUIRES_ACK
            parts.append(_U64.pack(self.deliveryId))
        if self.streamName is not None:
            flags |= F.STREAM_DATA
            parts.append(encodeName(self.streamName))
        data = self.data
        if (self.flags & F.COMPRESSED or
                (compressThreshold is not None
                 and len(data) >= compressThreshold)):
            packed = zlib.compress(data)
            if len(packed) < len(data):
                data = packed
                flags |= F.COMPRESSED
        if not parts:
            return flags, data
        parts.append(data)
        return flags, b"".join(parts)


class Message:
    """
    A message delivered to the application.

    @ivar type: the message type (an int; a L{MessageType} when known).
    @ivar flags: the header flags of its (first) frame, fragment bits
        cleared.
    @ivar payload: the application data, decompressed.
    @ivar sequence: the sequence number of its (first) frame (it restarts
        at 0 with every key).
    @ivar requestId: the id a response to this message names: its
        sequence number plus its key generation in the high 32 bits.
    @ivar requestSequence: for a RESPONSE, the request id it names.
    @ivar deliveryId: for REQUIRES_ACK, its delivery id.
    @ivar streamName: for STREAM_DATA, the stream's name.
    """

    __slots__ = ("type", "flags", "payload", "sequence", "requestSequence",
                 "deliveryId", "streamName", "requestId")

    def __init__(self, type, flags, payload, sequence, requestSequence=None,
                 deliveryId=None, streamName=None, requestId=None):
        self.type = type
        self.flags = flags
        self.payload = payload
        self.sequence = sequence
        self.requestId = sequence if requestId is None else requestId
        self.requestSequence = requestSequence
        self.deliveryId = deliveryId
        self.streamName = streamName

    def __repr__(self):
        return "<Message type=%#x flags=%#x seq=%d %d bytes>" % (
            self.type, self.flags, self.sequence, len(self.payload))


def parseBody(type, flags, body, sequence, maxSize, requestId=None):
    """
    Split a reassembled body into a L{Message}, decompressing with the
    output bounded by C{maxSize}.  C{requestId} defaults to C{sequence}
    (generation 0).
    """
    pos = 0
    requestSequence = deliveryId = name = None
    try:
        if flags & F.RESPONSE:
            (requestSequence,) = _U64.unpack_from(body, pos)
            pos += 8
        if flags & F.REQUIRES_ACK:
            (deliveryId,) = _U64.unpack_from(body, pos)
            pos += 8
    except struct.error:
        raise MalformedMessage("body shorter than its prefixes")
    if flags & F.STREAM_DATA:
        name, pos = decodeName(body, pos)
    data = body[pos:] if pos else body
    if flags & F.COMPRESSED:
        d = zlib.decompressobj()
        try:
            data = d.decompress(data, maxSize + 1)
        except zlib.error as e:
            raise MalformedMessage("bad compressed payload: %s" % (e,))
        if len(data) > maxSize or d.unconsumed_tail:
            raise MessageTooLarge("decompressed payload over %d bytes"
                                  % (maxSize,))
        if not d.eof:
            raise MalformedMessage("truncated compressed payload")
        if d.unused_data:
            raise MalformedMessage("bytes after the compressed payload")
    return Message(type, flags & ~(F.FRAGMENTED | F.LAST_FRAGMENT),
                   data, sequence, requestSequence, deliveryId, name,
                   requestId)


class Reassembler:
    """
    Collects the fragments of one message at a time, bounded by
    C{maxSize} bytes.
    """

    __slots__ = ("maxSize", "_parts", "_size", "type", "flags", "sequence")

    def __init__(self, maxSize):
        self.maxSize = maxSize
        self._parts = None
        self._size = 0

    @property
    def active(self):
        """
        Whether a message is partly received.
        """
        return self._parts is not None

    @property
    def buffered(self):
        """
        Bytes held for the partial message.
        """
        return self._size

    def add(self, type, flags, sequence, chunk):
        """
        Add a fragment.

        @return: C{(type, flags, sequence, body)} of the completed message,
            else L{None}.
        """
        if self._parts is None:
            self._parts = []
            self._size = 0
            self.type, self.sequence = type, sequence
            self.flags = flags & ~F.LAST_FRAGMENT
        elif type != self.type or (flags & ~F.LAST_FRAGMENT) != self.flags:
            raise MalformedMessage("fragment type or flags differ from the "
                                   "first fragment's")
        if self._size + len(chunk) > self.maxSize:
            raise MessageTooLarge("reassembled message over %d bytes"
                                  % (self.maxSize,))
        self._size += len(chunk)
        self._parts.append(chunk)
        if not flags & F.LAST_FRAGMENT:
            return None
        body = b"".join(self._parts)
        self._parts = None
        self._size = 0
        return self.type, self.flags, self.sequence, body


class ResumptionState:
    """
    What survives a dropped connection so a resumed session loses and
    duplicates nothing: unacknowledged outgoing messages and the highest
    delivery id handed to the application.

    A REQUIRES_ACK message is I{tracked} from the moment it is sent (so it
    survives a connection lost while it waits in a queue) and gets its
    delivery id only when it is encoded: ids then increase in wire order
    whatever the priorities, which the receiver's cumulative duplicate
    check relies on.

    @ivar peerKey: what authenticated the peer (Ed25519 key or token
        digest), so a session is only resumed by the same peer.
    @ivar unacked: delivery id -> message, for messages sent but not
        acknowledged, in id order.
    @ivar waiting: messages tracked but not yet given an id, in send order.
    """

    def __init__(self, sessionId=0, peerKey=None):
        self.sessionId = sessionId
        self.peerKey = peerKey
        self.nextDeliveryId = 1
        self.highestDelivered = 0
        self.unacked = OrderedDict()
        self.waiting = {}
        self.unackedBytes = 0
        self.lastActive = 0.0

    def track(self, message):
        """
        Keep a REQUIRES_ACK C{message} from now until it is acknowledged.
        """
        message.requiresAck = True
        self.waiting[id(message)] = message
        self.unackedBytes += message.size

    def assign(self, message):
        """
        Give a tracked C{message} its delivery id as it is encoded (no-op
        for a message resent with the id it already has).
        """
        if message.deliveryId is not None:
            return
        if self.waiting.pop(id(message), None) is None:
            self.unackedBytes += message.size
        message.deliveryId = self.nextDeliveryId
        self.nextDeliveryId += 1
        self.unacked[message.deliveryId] = message

    def discard(self, message):
        """
        Stop tracking C{message} without an Ack (a response not to resend).
        A receiver's duplicate check is cumulative, so a gap left in the
        delivery ids is harmless.
        """
        if message.deliveryId is not None:
            gone = self.unacked.pop(message.deliveryId, None)
        else:
            gone = self.waiting.pop(id(message), None)
        if gone is not None:
            self.unackedBytes -= message.size

    def pending(self):
        """
        Every message not yet acknowledged: those with ids in id order,
        then those waiting for one in send order.
        """
        return list(self.unacked.values()) + list(self.waiting.values())

    def acknowledge(self, highest):
        """
        Forget every message with a delivery id up to C{highest}.

        @return: how many were released.
        """
        if highest >= self.nextDeliveryId:
            raise MalformedMessage("Ack for delivery id %d never sent"
                                   % (highest,))
        released = 0
        unacked = self.unacked
        while unacked:
            first = next(iter(unacked))
            if first > highest:
                break
            self.unackedBytes -= unacked.pop(first).size
            released += 1
        return released

    def isDuplicate(self, deliveryId):
        """
        Record C{deliveryId} as delivered; return True if it already was.
        """
        if deliveryId <= self.highestDelivered:
            return True
        self.highestDelivered = deliveryId
        return False
