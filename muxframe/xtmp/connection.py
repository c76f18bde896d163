"""
One XTMP session over one byte stream, sans-IO: handshake, encryption,
sequence numbers, key updates and re-handshakes, acknowledgements,
fragmentation, priorities, heartbeats and timeouts.

States::

  HANDSHAKING --handshake result--> OPEN --Disconnect / error--> CLOSED

Feed received bytes to L{XTMPConnection.receiveData} (it returns events),
queue messages with L{XTMPConnection.sendMessage}, collect bytes to write
with L{XTMPConnection.dataToSend}, and call L{XTMPConnection.tick} by
L{XTMPConnection.nextDeadline}.  Time is always passed in as C{now}.  Any
L{XTMPRemoteError} raised means the connection is finished: write
L{XTMPConnection.closeWithError}'s bytes and close the transport.

Rules: after the handshake every frame must carry ENCRYPTED (or none may,
in a plaintext session) and the session id; sequence numbers are exactly
the next one per key; a frame under the key the peer announced by
KeyUpdate or re-handshake switches to it; fragments of a message are
contiguous, only control messages may come between them.  Handshake,
HandshakeAck, Heartbeat, Disconnect, Ack and KeyUpdate carry no flag but
ENCRYPTED; Subscribe and Unsubscribe are never REQUIRES_ACK or
STREAM_DATA; a Heartbeat's data is exactly 8 bytes: a probe (top bit 0,
the sender's clock) is answered at once by an answer (top bit 1, the
probe's clock echoed), which is never answered.

Limits: before the handshake completes a payload may be at most
C{maxHandshakePayload} bytes (a server waiting for the ClientHello takes
no more than the longest possible ClientHello, L{MAX_CLIENT_HELLO}); after
it, C{maxPayload}.  A server accepts at most C{maxRehandshakesPerHour}
re-handshakes in any hour of a session (L{RateLimited} beyond).
"""

import hashlib
import zlib
from collections import deque

from muxframe.xtmp import codec
from muxframe.xtmp.codec import (
    CONTROL_TYPES, Decoder, F, MessageType, encodePlain,
)
from muxframe.xtmp.errors import (
    DowngradeDetected, MalformedMessage, SendQueueFull, SequenceError,
    SessionNotReady, XTMPErrorCode, XTMPRemoteError, XTMPTimeout,
)
from muxframe.xtmp.events import (  # noqa: F401 - re-exported
    CLOSED, HANDSHAKING, OPEN, Counters, DisconnectReceived, ErrorReceived, HandshakeCompleted,
    MessageReceived, RequestFailed, ResponseReceived, Settings,
    SubscribeReceived, UnsubscribeReceived,
)
from muxframe.xtmp.handshake import MAX_CLIENT_HELLO, ClientHandshake
from muxframe.xtmp.keys import openFrame
from muxframe.xtmp.rekey import RekeyMixin
from muxframe.xtmp.session import (
    SEQUENCE_LIMIT, OutgoingMessage, Reassembler, ResumptionState, parseBody,
    priorityOf, requestIdFor,
)


#: Flags (besides ENCRYPTED) each control type may carry.  Subscribe and
#: Unsubscribe travel like application messages (RESPONSE when they
#: confirm; fragmented or compressed if long), but are never acknowledged
#: deliveries or stream data.
_CONTROL_FLAGS = dict.fromkeys(range(0x01, 0x07), 0)
_CONTROL_FLAGS[MessageType.Subscribe] = _CONTROL_FLAGS[
    MessageType.Unsubscribe] = 0xFFFF & ~(F.ENCRYPTED | F.REQUIRES_ACK
                                          | F.STREAM_DATA)


#: Flags a prepared body (L{XTMPConnection.sealPrepared}) may not have.
_NOT_PREPARED = F.REQUIRES_ACK | F.RESPONSE | F.FRAGMENTED
#: Types whose sending is not application activity (idle timeout).
_NOT_ACTIVITY = CONTROL_TYPES | {int(MessageType.Error)}

#: A Heartbeat's u64 with this bit set answers a probe; the other 63 bits
#: are the probe's clock (microseconds), echoed.
HEARTBEAT_ANSWER = 1 << 63
HEARTBEAT_CLOCK = HEARTBEAT_ANSWER - 1
_HEARTBEAT = int(MessageType.Heartbeat)
#: An encrypted Heartbeat frame: header, security layer, 8 bytes of data.
HEARTBEAT_FRAME_SIZE = codec.HEADER_SIZE + codec.SECURITY_SIZE + 8


class PreparedBody:
    """
    A message body (section 5 of docs/xtmp.md) built once to be sealed for
    many sessions (L{XTMPConnection.sealPrepared}), with what each sealing
    would otherwise work out again: its length and checksum, and whether
    it may go as one prepared frame at all.
    """

    __slots__ = ("type", "flags", "sealedFlags", "body", "size", "checksum",
                 "activity", "single")

    def __init__(self, type, flags, body):
        self.type = int(type)
        self.flags = flags
        self.sealedFlags = flags | F.ENCRYPTED
        self.body = body
        self.size = len(body)
        self.checksum = zlib.crc32(body)
        self.activity = self.type not in _NOT_ACTIVITY
        # Acknowledged, response and fragment flags need the general path.
        self.single = not flags & _NOT_PREPARED


class HeldBodies:
    """
    The L{PreparedBody} objects an engine holds unsealed
    (L{XTMPConnection.holdPrepared}), in one small object that a fan-out
    can add to without visiting the engine (L{add}): the session's later
    bodies of a turn then touch this, not the engine, its settings and its
    key, which by the next publish have left the CPU's caches.

    @ivar bodies: the bodies, in order.
    @ivar room: how many more the key takes before its update is due
        (C{keyUpdateMessages} less its count and the bodies held).
    @ivar open: whether the engine still holds these (False once sealed
        or dropped: then nothing may be added).
    @ivar sentAt: the time of the last body added after the first, or
        L{None}; L{XTMPConnection} records it as its last send when it
        seals them.
    @ivar activityAt: the same for application activity.
    """

    __slots__ = ("bodies", "room", "open", "maxSize", "sentAt", "activityAt")

    def __init__(self, prepared, room, maxSize):
        self.bodies = [prepared]
        self.room = room
        self.open = True
        self.maxSize = maxSize
        self.sentAt = self.activityAt = None

    def add(self, prepared, now):
        """
        Hold C{prepared} too, if the engine would (see
        L{XTMPConnection.holdPrepared}); return whether it was taken (if
        not, nothing changed).
        """
        if (not self.open or not self.room or not prepared.single
                or prepared.size > self.maxSize):
            return False
        self.bodies.append(prepared)
        self.room -= 1
        self.sentAt = now
        if prepared.activity:
            self.activityAt = now
        return True


def _peerKey(result):
    if result.peerIdentity is not None:
        return result.peerIdentity.ed25519
    if result.token is not None:
        return hashlib.sha256(b"token:" + result.token).digest()
    return None


class XTMPConnection(RekeyMixin):
    """
    The sans-IO XTMP session engine.

    @param handshake: a L{ClientHandshake} or L{ServerHandshake}.
    @param resumption: (client) the L{ResumptionState} of the session to
        resume, or L{None}.
    @param resumptionFor: (server) callable(result, peerKey) returning the
        L{ResumptionState} to use; raises L{Unauthorized} to refuse.
    """

    # Slots: a server holds one engine per idle session.
    __slots__ = ("settings", "handshake", "kem", "isClient", "state",
                 "decoder", "resumption", "_resumptionFor", "sessionId",
                 "cipher", "result", "sendKey", "receiveKey",
                 "_pendingReceiveKey", "_rekey", "_plainSend",
                 "_plainReceive", "_out", "_queues", "_resendQueue",
                 "_queuedBytes",
                 "_reassembler", "_ackDue", "pendingRequests", "startedAt",
                 "lastReceived", "lastSent", "lastActivity", "keysAt",
                 "counters", "_rekeyTimes", "rtt", "typeCounts", "_held")

    def __init__(self, handshake, settings=None, resumption=None,
                 resumptionFor=None, now=0.0):
        self.settings = settings or Settings()
        self.handshake = handshake
        self.kem = None
        self.isClient = isinstance(handshake, ClientHandshake)
        self.state = HANDSHAKING
        self.decoder = Decoder()
        self.resumption = resumption
        self._resumptionFor = resumptionFor
        self.sessionId = 0
        self.cipher = None
        self.result = None
        self.sendKey = self.receiveKey = None
        self._pendingReceiveKey = None
        self._rekey = None
        self.counters = Counters()
        # Optional: an object with lists C{received} and C{sent} of 256
        # counts, shared by many connections (a server's per-type metrics);
        # counted where messagesReceived and messagesSent are.
        self.typeCounts = None
        self._plainSend = self._plainReceive = 0
        self._out = []
        # Prepared bodies held unsealed (holdPrepared): a HeldBodies, or
        # None.
        self._held = None
        # One deque per priority class, made when first needed; resent
        # messages (delivery ids already given) leave before all of them.
        self._queues = [None, None, None]
        self._resendQueue = None
        self._queuedBytes = 0
        self._reassembler = Reassembler(self.settings.maxMessageSize)
        self._ackDue = False
        self._rekeyTimes = None
        self.pendingRequests = {}
        self.startedAt = self.lastReceived = self.lastSent = now
        self.lastActivity = self.keysAt = now
        # Heartbeat round trip (seconds), measured when a probe of ours is
        # answered.
        self.rtt = None
        self._setReceiveLimit()

    def _setReceiveLimit(self):
        # Unauthenticated bytes are bounded by what a handshake needs, not
        # by what an authenticated session may send.
        s = self.settings
        if self.state == OPEN:
            limit = s.maxPayload
        elif not self.isClient and self.handshake.state == "EXPECT_HELLO":
            limit = min(s.maxHandshakePayload, MAX_CLIENT_HELLO)
        else:
            limit = s.maxHandshakePayload
        self.decoder.maxPayload = limit

    # -- sending -----------------------------------------------------------

    def initiate(self, now=0.0):
        """
        Start the handshake (client); the hello is then in L{dataToSend}.
        """
        self._out.append(self.handshake.start())
        self.startedAt = self.lastSent = now

    @property
    def bufferedBytes(self):
        """
        Bytes held for sending or awaiting acknowledgement: what
        C{maxQueuedBytes} bounds.
        """
        unacked = self.resumption.unackedBytes if self.resumption else 0
        return self._queuedBytes + unacked

    def sendMessage(self, type, data, flags=0, requestSequence=None,
                    streamName=None, request=None, now=0.0, immediate=False):
        """
        Queue an application message; it leaves in priority order.  With
        C{immediate}, and nothing already queued, it is encoded at once
        (the next L{dataToSend} returns it) instead of queued: the hot path
        when the transport is accepting writes.

        @param requestSequence: to answer a request, its
            L{Message.requestId} (not its C{sequence}, which repeats after
            key changes).
        @param request: a token (with C{sequence} and C{cancelled}
            attributes) to report the response with; its C{sequence} is set
            to the request id when the message is encoded.

        @raise SendQueueFull: the buffers would exceed C{maxQueuedBytes}.
        @raise SessionNotReady: the session is closed.
        """
        if self.state == CLOSED:
            raise SessionNotReady("the session is closed")
        if self._held is not None:
            self._sealHeld()
        m = OutgoingMessage(type, flags & ~(F.REQUIRES_ACK
                                            | F.STREAM_DATA
                                            | F.RESPONSE),
                            data, requestSequence, None, streamName, request)
        if self.bufferedBytes + m.size > self.settings.maxQueuedBytes:
            raise SendQueueFull("send buffers hold %d bytes, limit %d"
                                % (self.bufferedBytes,
                                   self.settings.maxQueuedBytes))
        if flags & F.REQUIRES_ACK:
            if self.resumption is None:
                self.resumption = ResumptionState()
            self.resumption.track(m)
        if type not in CONTROL_TYPES and type != MessageType.Error:
            self.lastActivity = now
        q = self._queues
        if immediate and self.state == OPEN and not (
                q[0] or q[1] or q[2] or self._resendQueue):
            self._encode(m, self._out)
        else:
            self._enqueue(m)
        return m

    def sendPrepared(self, type, flags, body, now=0.0):
        """
        Encode at once a message whose body (section 5 of docs/xtmp.md) is
        already built, so one body can go to many sessions (a broker's
        fan-out) with only the sealing done per session.  Only for a body
        that fits one frame, without REQUIRES_ACK or RESPONSE, in an open
        session with nothing queued (so order and priorities hold).

        @param flags: the body's flags (e.g. STREAM_DATA).
        @return: whether it was encoded (it is then in L{dataToSend});
            if not, the message is not sent (use L{sendMessage}), though
            bodies held by L{holdPrepared} may have been sealed into
            L{dataToSend}.
        """
        if self._held is not None:
            self._sealHeld()
        q = self._queues
        if (self.state != OPEN or q[0] or q[1] or q[2] or self._resendQueue
                or len(body) > self.settings.fragmentSize
                or flags & (F.REQUIRES_ACK | F.RESPONSE | F.FRAGMENTED)):
            return False
        self.counters.messagesSent += 1
        if self.typeCounts is not None:
            self.typeCounts.sent[type] += 1
        if type not in CONTROL_TYPES and type != MessageType.Error:
            self.lastActivity = now
        self._out.append(self._seal(type, flags, body))
        return True

    def sealPrepared(self, prepared, now):
        """
        L{sendPrepared} and L{dataToSend} in one, for a L{PreparedBody}:
        the bytes to write, or L{None} if it cannot go at once (then it is
        not sent: use L{sendMessage}; bodies held by L{holdPrepared} may
        have been sealed into L{dataToSend}, so flush).  A broker's fan-out calls it
        once per subscriber, so it does only what one frame needs.
        """
        if self._held is not None:
            # Held bodies first (into _out, so the general path below).
            self._sealHeld()
        key = self.sendKey
        # (Nothing is queued exactly when no queued bytes are counted.)
        if (key is None or self._out or self._queuedBytes
                or self.state != OPEN or not prepared.single
                or key.count >= self.settings.keyUpdateMessages
                or prepared.size > self.settings.fragmentSize):
            # Plaintext, control bytes waiting, a key update due, or not a
            # single frame: the general path keeps them in order.
            if not self.sendPrepared(prepared.type, prepared.flags,
                                     prepared.body, now):
                return None
            return self.dataToSend(None, now)
        counters = self.counters
        counters.messagesSent += 1
        if self.typeCounts is not None:
            self.typeCounts.sent[prepared.type] += 1
        if prepared.activity:
            self.lastActivity = now
        data = key.seal(prepared.type, prepared.sealedFlags, self.sessionId,
                        prepared.body, prepared.checksum)
        self.lastSent = now
        counters.bytesSent += len(data)
        return data

    def holdPrepared(self, prepared, now):
        """
        Take a L{PreparedBody} to seal later, at L{takeHeld}, if
        L{sealPrepared} would seal it at once; return the L{HeldBodies}
        it is in (its C{add} takes the next ones at less cost), or False
        if it was not taken (then nothing changed: use L{sealPrepared}).

        A fan-out hands each of many sessions several bodies in one
        reactor turn; sealing each session's bodies together at the end of
        the turn keeps its key and AEAD state in the CPU's caches, where
        sealing them as they come visits every session once per body.  The
        frames are the same bytes: held bodies are sealed, in order, before
        anything else this engine seals, sends, receives or times (every
        method but L{holdPrepared}, L{nextDeadline} and the getters seals
        them first; L{release} of a closed session and L{abandon} drop
        them), and only while the key would not be due for an update
        first.  The times of the last send and activity are recorded now
        for the first body held, and for the later ones when they are
        sealed (a reader of C{lastSent} between sees the first one's
        time); the message and byte counters when they are sealed.
        """
        key = self.sendKey
        if (key is None or self._out or self._queuedBytes
                or self.state != OPEN or not prepared.single
                or prepared.size > self.settings.fragmentSize):
            return False
        held = self._held
        if held is not None:
            return held if held.add(prepared, now) else False
        room = self.settings.keyUpdateMessages - key.count - 1
        if room < 0:
            return False
        held = self._held = HeldBodies(prepared, room,
                                       self.settings.fragmentSize)
        if prepared.activity:
            self.lastActivity = now
        self.lastSent = now
        return held

    def takeHeld(self):
        """
        Seal what L{holdPrepared} took; return the frames' bytes (C{b""}
        if none).
        """
        if self._held is None:
            return b""
        out = []
        self._sealHeld(out)
        data = out[0] if len(out) == 1 else b"".join(out)
        self.counters.bytesSent += len(data)
        return data

    def _dropHeld(self):
        held = self._held
        if held is not None:
            self._held = None
            held.open = False

    def _sealHeld(self, out=None):
        # The frames sealPrepared's fast path would have made, in order,
        # appended to out (default: _out, where dataToSend counts their
        # bytes).
        held = self._held
        self._held = None
        held.open = False
        # (The times of the bodies after the first: see holdPrepared.)
        if held.sentAt is not None:
            self.lastSent = held.sentAt
        if held.activityAt is not None:
            self.lastActivity = held.activityAt
        held = held.bodies
        if out is None:
            out = self._out
        out.append(self.sendKey.sealMany(held, self.sessionId))
        self.counters.messagesSent += len(held)
        typeCounts = self.typeCounts
        if typeCounts is not None:
            sent = typeCounts.sent
            for p in held:
                sent[p.type] += 1

    def _enqueue(self, m, front=False):
        cls = priorityOf(m.flags)
        q = self._queues[cls]
        if q is None:
            q = self._queues[cls] = deque()
        if front:
            q.appendleft(m)
        else:
            q.append(m)
        self._queuedBytes += m.size

    def _seal(self, type, flags, body):
        key = self.sendKey
        if key is None:
            seq = self._plainSend
            self._plainSend = seq + 1
            return encodePlain(type, flags, self.sessionId, seq, body)
        if (key.count >= self.settings.keyUpdateMessages
                and type != MessageType.KeyUpdate):
            self._keyUpdate()
            key = self.sendKey
        return key.seal(type, flags | F.ENCRYPTED, self.sessionId, body)

    def _keyUpdate(self):
        self.counters.keyUpdates += 1
        key = self.sendKey
        self._out.append(key.seal(MessageType.KeyUpdate, F.ENCRYPTED,
                                  self.sessionId,
                                  codec.encodeU32(key.epoch + 1)))
        self.sendKey = key.updated(key.createdAt)

    def sendControl(self, type, payload=b"", requestSequence=None):
        """
        Encode a control message now, ahead of queued messages.
        """
        if self._held is not None:
            self._sealHeld()
        if requestSequence is not None:
            payload = codec.encodeU64(requestSequence) + payload
            flags = F.RESPONSE
        else:
            flags = 0
        self._out.append(self._seal(type, flags, payload))

    def _encode(self, m, out):
        self.counters.messagesSent += 1
        if self.typeCounts is not None:
            self.typeCounts.sent[m.type] += 1
        if m.requiresAck:
            self.resumption.assign(m)
        flags, body = m.body(self.settings.compressThreshold)
        size = self.settings.fragmentSize
        if len(body) <= size:
            rid = self._nextRequestId()
            out.append(self._seal(m.type, flags, body))
        else:
            rid = None
            last = len(body) - size
            for pos in range(0, len(body), size):
                f = flags | F.FRAGMENTED
                if pos >= last:
                    f |= F.LAST_FRAGMENT
                if rid is None:
                    rid = self._nextRequestId()
                out.append(self._seal(m.type, f, body[pos:pos + size]))
        if m.request is not None and not m.request.cancelled:
            # Keyed by request id, not sequence number: sequence numbers
            # repeat after every key change, request ids never do.
            m.request.sequence = rid
            m.request.pending = self.pendingRequests
            self.pendingRequests[rid] = m.request

    def _nextRequestId(self):
        """
        The request id the next frame sealed will have, after the key
        update it may need.  A plaintext session never changes keys after
        the handshake, so its sequence number alone never repeats.
        """
        key = self.sendKey
        if key is None:
            return self._plainSend
        if key.count >= self.settings.keyUpdateMessages:
            self._keyUpdate()
            key = self.sendKey
        return requestIdFor(key.generation, key.sequence)

    def dataToSend(self, limit=None, now=None):
        """
        Bytes to write now: pending control messages, then queued messages
        (emergency, then high, then normal; order kept within a class)
        until about C{limit} bytes.  C{now}, if given, is recorded as the
        time of the last send (for heartbeats).
        """
        if self._held is not None:
            self._sealHeld()
        out = self._out
        if self.state == OPEN:
            total = 0
            queues = self._queues
            if self._resendQueue:
                queues = [self._resendQueue] + queues
            for q in queues:
                while q:
                    if limit is not None and total >= limit:
                        break
                    m = q.popleft()
                    self._queuedBytes -= m.size
                    total += m.size
                    self._encode(m, out)
        if not out:
            return b""
        if now is not None:
            self.lastSent = now
        self._out = []
        data = out[0] if len(out) == 1 else b"".join(out)
        self.counters.bytesSent += len(data)
        return data

    def hasOutput(self):
        """
        Whether L{dataToSend} may return bytes: control messages or held
        bodies wait, or messages are queued.  (If not, it returns C{b""}
        and changes nothing.)
        """
        q = self._queues
        return bool(self._out or self._held is not None or q[0] or q[1]
                    or q[2] or self._resendQueue)

    def hasQueued(self):
        """
        Whether messages wait in the send queue.
        """
        return bool(any(self._queues) or self._resendQueue)

    def release(self):
        """
        Drop what only a handshake in progress needs, once the session is
        closed: the handshake and the factory's callbacks, which refer to
        the protocol that owns this connection (a reference cycle the
        collector would otherwise have to find, for every connection that
        ended during its handshake).
        """
        if self.state == CLOSED:
            self.handshake = None
            self._resumptionFor = None
            # Held bodies of a lost connection are never written (as held
            # frames are not, XTMPProtocol.releaseHeld).
            self._dropHeld()

    def abandon(self):
        """
        Close the session without sending anything: the peer has already
        ended it (an Error during the handshake), so there is no one to
        tell.
        """
        self._out = []
        self._dropHeld()
        self.state = CLOSED

    def closeWithError(self, code, reason, now=0.0):
        """
        Close the session: return the bytes of an Error (if C{code} is not
        NONE or GOING_AWAY) and a Disconnect, readable by the peer if it
        can read anything.  A clean close (NONE, GOING_AWAY) first sends
        every queued message; an error close drops them.
        """
        if self.state == CLOSED:
            return b""
        payload = codec.encodeReason(code, reason)
        clean = code in (XTMPErrorCode.NONE, XTMPErrorCode.GOING_AWAY)
        # Held bodies come before whatever _out holds (anything that adds
        # to _out seals them first, and holdPrepared needs _out empty):
        # sealed now, they go first, counted as sent, even in an error
        # close.
        held = [self.takeHeld()]
        if clean and self.state == OPEN:
            pending = held + [self.dataToSend()]
        else:
            pending = held + self._out
        self._out = []
        try:
            if self.state == HANDSHAKING:
                hs = self.handshake
                self.sendKey = hs.sendKey
                self.sessionId = hs.sessionId
                early = self.sendKey is None and (
                    self.isClient or hs.state in ("EXPECT_HELLO",
                                                  "ANSWER_DUE"))
            else:
                early = False
            if early:
                self._out.append(encodePlain(
                    MessageType.Error, 0, self.sessionId, 0, payload))
            else:
                if not clean:
                    self.sendControl(MessageType.Error, payload)
                self.sendControl(MessageType.Disconnect, payload)
        finally:
            self.state = CLOSED
        out, self._out = self._out, []
        return b"".join(pending + out)

    # -- receiving ---------------------------------------------------------

    def receiveData(self, data, now=0.0):
        """
        Process received bytes.

        @return: a list of L{Event}s.
        @raise XTMPRemoteError: the peer broke the protocol.  Its C{events}
            attribute lists the events of the messages that arrived intact
            before the fault: give them to the application (they are
            already marked delivered), then close.
        """
        if self.state == CLOSED:
            return []
        if self._held is not None:
            self._sealHeld()
        events = []
        decoder = self.decoder
        try:
            self.counters.bytesReceived += len(data)
            decoder.append(data)
            if self.state == HANDSHAKING and self.handshake.answerDue:
                self._out.append(self.handshake.answer(now))
                self._setReceiveLimit()
            # One frame at a time: the handshake changes the payload limit
            # for the frames behind it.
            for frame in decoder.frames():
                self.lastReceived = now
                if self.state == HANDSHAKING:
                    self._handshakeFrame(frame, now, events)
                    if self.state == HANDSHAKING and \
                            self.handshake.answerDue:
                        # The hello's answer comes later (the server
                        # handshake's answerLater): the frames behind it
                        # wait in the decoder until then.
                        break
                else:
                    self._frame(frame, now, events)
                if self.state == CLOSED:
                    break
        except XTMPRemoteError as e:
            e.events = events
            raise
        if self._ackDue and self.state == OPEN:
            self._ackDue = False
            self.sendControl(MessageType.Ack,
                             codec.encodeU64(self.resumption.highestDelivered))
        return events

    def _handshakeFrame(self, frame, now, events):
        out, result = self.handshake.receiveFrame(frame, now)
        if out:
            self._out.append(out)
        if result is None:
            self._setReceiveLimit()
            return
        self.result = result
        self.sessionId = result.sessionId
        self.cipher = result.cipher
        self.sendKey, self.receiveKey = result.sendKey, result.receiveKey
        self.keysAt = self.lastActivity = now
        if self.isClient:
            r = self.resumption
            if r is None:
                r = self.resumption = ResumptionState()
            if not result.resumed:
                r.highestDelivered = 0
            r.sessionId = result.sessionId
            r.peerKey = _peerKey(result)
        elif self._resumptionFor is not None:
            self.resumption = self._resumptionFor(result, _peerKey(result))
        else:
            self.resumption = ResumptionState(result.sessionId,
                                              _peerKey(result))
        self.state = OPEN
        self._setReceiveLimit()
        # The handshake's ephemeral keys and messages are no longer needed.
        self.kem = getattr(self.handshake, "kem", None)
        self.handshake = None
        self._resend()
        events.append(HandshakeCompleted(result=result))

    def _resend(self):
        # Unacknowledged messages from a previous connection go first: those
        # with delivery ids in id order (ahead of every priority class, so
        # ids stay increasing on the wire), then those never encoded, ahead
        # of anything queued since in their class.  Messages a dead
        # connection had queued belong to no queue now.
        mine = {id(m) for q in self._queues if q for m in q}
        # Responses are not resent: the requests they answer failed with the
        # old connection, and their request ids, which restart with this
        # connection's keys, could name a new request.
        for m in self.resumption.pending():
            if m.requestSequence is not None and id(m) not in mine:
                self.resumption.discard(m)
        numbered = [m for m in self.resumption.unacked.values()
                    if id(m) not in mine]
        if numbered:
            self._resendQueue = deque(numbered)
            self.counters.resent += len(numbered)
            for m in numbered:
                self._queuedBytes += m.size
        waiting = [m for m in self.resumption.waiting.values()
                   if id(m) not in mine]
        for m in reversed(waiting):
            self._enqueue(m, front=True)

    def _frame(self, frame, now, events):
        key = self.receiveKey
        if key is None:
            if frame.flags & F.ENCRYPTED:
                raise DowngradeDetected("encrypted message in a plaintext "
                                        "session")
            if frame.sessionId != self.sessionId:
                raise MalformedMessage("session id %d, expected %d"
                                       % (frame.sessionId, self.sessionId))
            if frame.sequence != self._plainReceive:
                raise SequenceError("sequence number %d, expected %d"
                                    % (frame.sequence, self._plainReceive))
            self._plainReceive += 1
            body = frame.payload
        else:
            if not frame.flags & F.ENCRYPTED:
                raise DowngradeDetected("unencrypted message type %#x in an "
                                        "encrypted session" % (frame.type,))
            pending = self._pendingReceiveKey
            if pending is not None and frame.keyId == pending.keyId:
                # The client switched at our HandshakeAck, after every
                # KeyUpdate it sent under the old key: count the same.
                pending.generation = key.generation + 1
                self.receiveKey = key = pending
                self._pendingReceiveKey = None
            body = openFrame(key, frame, self.sessionId)
            if frame.sequence >= SEQUENCE_LIMIT:
                # A sender updates its key first; beyond this, request ids
                # would overlap the next generation's.
                raise SequenceError("sequence number %d not below 2**32"
                                    % (frame.sequence,))
        flags = frame.flags & ~F.ENCRYPTED
        mtype = frame.type
        if mtype in CONTROL_TYPES and flags & ~_CONTROL_FLAGS[mtype]:
            raise MalformedMessage("flags %#06x not allowed on control "
                                   "message type %#x" % (flags, mtype))
        if mtype == _HEARTBEAT:
            # An idle session's every round.  No flags (checked above): no
            # prefixes, fragments or compression, so the body is the
            # payload parseBody and _dispatch would hand on.
            self.counters.controlReceived += 1
            self._heartbeatReceived(body, now)
            return
        seq = frame.sequence
        rid = seq if key is None else requestIdFor(key.generation, seq)
        if flags & F.FRAGMENTED:
            # The message's id is its first fragment's: later ones may come
            # under a newer key.
            done = self._reassembler.add(mtype, flags, (seq, rid), body)
            if done is None:
                return
            mtype, flags, (seq, rid), body = done
            flags &= ~F.FRAGMENTED
        elif self._reassembler.active and mtype not in CONTROL_TYPES:
            raise MalformedMessage("message between the fragments of "
                                   "another")
        message = parseBody(mtype, flags, body, seq,
                            self.settings.maxMessageSize, rid)
        if message.deliveryId is not None:
            self._ackDue = True
            if self.resumption.isDuplicate(message.deliveryId):
                self.counters.duplicatesDropped += 1
                return
        self._dispatch(message, now, events)

    def _dispatch(self, message, now, events):
        t = message.type
        if t not in CONTROL_TYPES and t != MessageType.Error:
            self.lastActivity = now
            self.counters.messagesReceived += 1
            if self.typeCounts is not None:
                self.typeCounts.received[t] += 1
            if message.requestSequence is not None:
                request = self.pendingRequests.pop(message.requestSequence,
                                                   None)
                if request is not None:
                    events.append(ResponseReceived(request=request,
                                                   message=message))
                    return
                # Late (timed out, cancelled) or bogus: still reported, so
                # a sans-IO user matching its own requests sees it.
                self.counters.unmatchedResponses += 1
            events.append(MessageReceived(message))
        elif t == MessageType.Heartbeat:
            self.counters.controlReceived += 1
            self._heartbeatReceived(message.payload, now)
        elif t == MessageType.Ack:
            self.resumption.acknowledge(codec.decodeU64(message.payload,
                                                        "Ack"))
        elif t == MessageType.KeyUpdate:
            self.counters.controlReceived += 1
            epoch = codec.decodeU32(message.payload, "KeyUpdate")
            if self.receiveKey is None or epoch != self.receiveKey.epoch + 1:
                raise MalformedMessage("KeyUpdate to epoch %d unexpected"
                                       % (epoch,))
            self.receiveKey = self.receiveKey.updated(now)
        elif t == MessageType.Error:
            self.counters.controlReceived += 1
            code, reason = codec.decodeReason(message.payload)
            request = self.pendingRequests.pop(message.requestSequence, None) \
                if message.requestSequence is not None else None
            if request is not None:
                events.append(RequestFailed(request=request, code=code,
                                            reason=reason))
            else:
                if message.requestSequence is not None:
                    self.counters.unmatchedResponses += 1
                events.append(ErrorReceived(code=code, reason=reason,
                                            message=message))
        elif t == MessageType.Disconnect:
            code, reason = codec.decodeReason(message.payload)
            self.state = CLOSED
            events.append(DisconnectReceived(code=code, reason=reason))
        elif t in (MessageType.Subscribe, MessageType.Unsubscribe):
            if message.requestSequence is not None:
                request = self.pendingRequests.pop(message.requestSequence,
                                                   None)
                if request is not None:
                    events.append(ResponseReceived(request=request,
                                                   message=message))
                else:
                    self.counters.unmatchedResponses += 1
                return
            name, end = codec.decodeName(message.payload)
            if t == MessageType.Unsubscribe:
                if end != len(message.payload):
                    raise MalformedMessage("trailing bytes after stream name")
                events.append(UnsubscribeReceived(name=name, message=message))
                return
            group = None
            if end != len(message.payload):
                # A queue group's name may follow the stream's.
                group, end = codec.decodeName(message.payload, end)
                if end != len(message.payload):
                    raise MalformedMessage("trailing bytes after queue group")
            events.append(SubscribeReceived(name=name, group=group,
                                            message=message))
        elif t == MessageType.Handshake:
            self._rekeyHello(message, now)
        elif t == MessageType.HandshakeAck:
            self._rekeyAck(message, now)

    # -- timers ------------------------------------------------------------

    def tick(self, now):
        """
        Run due timers: heartbeat, key update, re-handshake.

        @raise XTMPTimeout: the handshake took too long, the peer has been
            silent for two heartbeat intervals, or the session was idle
            past C{sessionTimeout}.
        """
        if self._held is not None:
            self._sealHeld()
        s = self.settings
        if self.state == HANDSHAKING:
            if now - self.startedAt >= s.handshakeTimeout:
                raise XTMPTimeout("handshake not complete after %gs"
                                  % (s.handshakeTimeout,))
            return
        if self.state != OPEN:
            return
        if now - self.lastReceived >= 2 * s.heartbeatInterval:
            raise XTMPTimeout("peer silent for %gs" % (now - self.lastReceived,))
        if now - self.lastActivity >= s.sessionTimeout:
            raise XTMPTimeout("session idle for %gs" % (now - self.lastActivity,))
        if self.sendKey is not None:
            if self.isClient and now - self.keysAt >= s.rotationInterval:
                self.startRehandshake(now)
            elif now - self.sendKey.createdAt >= s.keyUpdateInterval:
                self._keyUpdate()
                self.sendKey.createdAt = now
        if now - self.lastSent >= s.heartbeatInterval - s.heartbeatLead:
            self.counters.heartbeatsSent += 1
            self.sendControl(MessageType.Heartbeat, self._heartbeat(now))

    def idleProbe(self, now):
        """
        When all L{tick} has to do at C{now} is an idle session's heartbeat
        probe: send it (seal it and count it as L{tick} and L{dataToSend}
        would) and return its frame's bytes, to be written.  Otherwise
        return L{None} having changed nothing: call L{tick}, then
        L{dataToSend}, which do what is due.
        """
        key = self.sendKey
        q = self._queues
        if (key is None or self.state != OPEN or self._out or q[0] or q[1]
                or q[2] or self._held is not None or self._resendQueue):
            return None
        s = self.settings
        interval = s.heartbeatInterval
        if (now - self.lastSent < interval - s.heartbeatLead
                or now - self.lastReceived >= 2 * interval
                or now - self.lastActivity >= s.sessionTimeout
                or now - key.createdAt >= s.keyUpdateInterval
                or key.count >= s.keyUpdateMessages
                or (self.isClient
                    and now - self.keysAt >= s.rotationInterval)):
            return None
        c = self.counters
        c.heartbeatsSent += 1
        frame = key.seal(_HEARTBEAT, F.ENCRYPTED, self.sessionId,
                         self._heartbeat(now))
        self.lastSent = now
        c.bytesSent += len(frame)
        return frame

    def receiveHeartbeat(self, data, now):
        """
        If C{data} (bytes read) is exactly one encrypted Heartbeat under
        the receive key, the next in sequence, with nothing buffered before
        it: check and act on it as L{receiveData} would (a probe's answer
        is then waiting: L{hasOutput}) and return C{True}.  Otherwise, or
        if any check fails, return C{False} having changed nothing: give
        C{data} to L{receiveData}, which takes it or names the fault.
        """
        key = self.receiveKey
        if (len(data) != HEARTBEAT_FRAME_SIZE or key is None
                or self.state != OPEN or self._held is not None
                or self._pendingReceiveKey is not None
                or not self.decoder.idle):
            return False
        # The frame's bytes: the header (0..27 all known but the checksum
        # at 28..31), the security layer (32..79 known: cipher, reserved,
        # epoch, key id, nonce, zeros; 80..95 the tag), the data (96..103).
        seq = key.sequence
        if (data[:28] != codec.HEADER.pack(codec.MAGIC, codec.VERSION,
                                           _HEARTBEAT, F.ENCRYPTED,
                                           self.sessionId, seq, 8, 0)[:28]
                or data[32:80] != key.security(seq)
                or seq >= SEQUENCE_LIMIT):
            return False
        body = key.tryOpen(data[56:68], data[96:] + data[80:96], data[:80])
        if body is None or \
                zlib.crc32(body) != int.from_bytes(data[28:32], "big"):
            return False
        key.sequence = seq + 1
        key.count += 1
        self.lastReceived = now
        c = self.counters
        c.bytesReceived += HEARTBEAT_FRAME_SIZE
        c.controlReceived += 1
        self._heartbeatReceived(body, now)
        return True

    def _heartbeat(self, now):
        # A probe: our clock in microseconds, in 63 bits (top bit clear).
        return codec.encodeU64(int(now * 1e6) & HEARTBEAT_CLOCK)

    def _heartbeatReceived(self, payload, now):
        value = codec.decodeU64(payload, "Heartbeat")
        if value & HEARTBEAT_ANSWER:
            # An answer to a probe: it echoes the probe's clock, so a
            # probe of ours came back after rtt.  An implausible echo (not
            # ours, or from before a clock jump) measures nothing.
            rtt = ((int(now * 1e6) - value) & HEARTBEAT_CLOCK) / 1e6
            if rtt < 2 * self.settings.heartbeatInterval:
                self.rtt = rtt
        else:
            # A probe: answer it at once (never an answer).  The answer
            # counts as our heartbeat, so an idle session costs one round
            # trip per interval, started by whichever side's timer fires
            # first.
            self.counters.heartbeatsAnswered += 1
            self.sendControl(MessageType.Heartbeat,
                             codec.encodeU64(value | HEARTBEAT_ANSWER))
        s = self.settings
        if self.sendKey is not None and \
                now - self.lastActivity >= s.heartbeatInterval - s.heartbeatLead:
            # Idle for an interval (as the probe rule counts it): this
            # round trip is all that will use the keys for a while, so drop
            # their cipher contexts (most of an idle session's memory)
            # until then.
            self.sendKey.release()
            self.receiveKey.release()

    def nextDeadline(self, now):
        """
        Seconds from C{now} until L{tick} next has something to do.
        """
        s = self.settings
        if self.state == HANDSHAKING:
            return max(0.0, self.startedAt + s.handshakeTimeout - now)
        interval = s.heartbeatInterval
        due = self.lastSent + interval - s.heartbeatLead
        other = self.lastReceived + 2 * interval
        if other < due:
            due = other
        other = self.lastActivity + s.sessionTimeout
        if other < due:
            due = other
        key = self.sendKey
        if key is not None:
            other = key.createdAt + s.keyUpdateInterval
            if other < due:
                due = other
            if self.isClient:
                other = self.keysAt + s.rotationInterval
                if other < due:
                    due = other
        due -= now
        return due if due > 0.0 else 0.0
