"""
BMP (the Blazeio Multiplexer Protocol), sans-IO: the frame codec and the
engine.  See docs/protocols.md for the wire format as implemented.

Frame: four delimited header fields, then the payload::

    00 <stream-id> 01  00 <opts> 01  00 <sid> 01  00 <LEN> 01  <payload>

opts: empty (data), 06 create (data), 05 ack (payload: the sid), 02 end of
stream (payload 04), 03 close (payload 04), anything else a custom option
whose payload is data.  sid: decimal, on data frames only.  LEN: hex.

Stream rules enforced here:

  - A frame on an unknown stream creates it (whether or not it carries 06),
    except acks and closes, which are ignored, and frames for streams this
    side opened and has forgotten, or for one of the last REFUSED_MEMORY
    streams the peer opened and this side forgot (refused, reset, closed
    or ended): a stream name is never reused on a connection.
  - Every data frame with a sid is acknowledged once the application has
    consumed all of it, never later, and never held back for our own
    outstanding acknowledgements.
  - At most maxInFlight data frames, holding at most maxBytesInFlight
    payload bytes, per stream are sent unacknowledged (whichever is reached
    first stops the sender; a frame is cut to the bytes left); one
    unacknowledged for ackTimeout ends its stream (StreamTimeoutError) and
    the peer is sent a close.
  - A stream ends cleanly when both sides have sent end-of-stream and every
    acknowledgement is exchanged; this side then sends close (Blazeio's
    server does the same) and forgets it.  The opener forgets it without a
    close; the acceptor's close that follows (for one of the last
    CLOSING_MEMORY such streams) is expected, not a frame carrying nothing.  A close received before the
    peer's end-of-stream is a reset.
  - Every header field is bounded; malformed bytes are a MalformedFrame
    naming the fault, a LEN over maxReceiveFrameSize a FrameTooLarge.
"""

import re
from collections import OrderedDict, deque

from .engine import (
    ALIGN_MIN,
    SHARED_INFLIGHT,
    SHARED_TIME,
    WHOLE_CONTROL,
    WHOLE_LIMIT,
    Engine,
    StreamState,
)
from .errors import (
    ErrorCode,
    FrameTooLarge,
    MalformedFrame,
    StreamResetError,
    StreamTimeoutError,
)
from .pieces import PayloadStreamer, joinPieces
from .events import DataReceived, StreamClosed, StreamEnded, StreamOpened

DATA = 0            # an empty opts field
CLOSE_STREAM = 0x03
END_STREAM = 0x02
FILLER = 0x04
ACK = 0x05
CREATE = 0x06
_CONTROL = frozenset((ACK, END_STREAM, CLOSE_STREAM))

MAX_STREAM_ID_LENGTH = 64
MAX_SID_DIGITS = 20
MAX_LEN_DIGITS = 16
MAX_CONTROL_PAYLOAD = 32
MAX_HEADER = 8 + MAX_STREAM_ID_LENGTH + 1 + MAX_SID_DIGITS + MAX_LEN_DIGITS
REFUSED_MEMORY = 1024
# Streams this side opened and forgot cleanly whose close from the peer (the
# acceptor closes, after the opener forgets) is still to come: that close is
# the protocol's, not a frame carrying nothing.
CLOSING_MEMORY = 4096
# What keeping one received, unacknowledged frame costs (its sid and size
# until the acknowledgement is queued), beyond its payload; measured with
# tracemalloc.  It counts toward maxStreamReceiveBuffer and
# sessionBufferSize, so a flood of tiny frames is held to the real memory
# those limits name.
FRAME_COST = 160

_headerPattern = re.compile(
    rb"\x00([^\x00\x01]{1,%d})\x01\x00([^\x00\x01]?)\x01\x00([0-9]{0,%d})\x01"
    rb"\x00([0-9A-Fa-f]{1,%d})\x01"
    % (MAX_STREAM_ID_LENGTH, MAX_SID_DIGITS, MAX_LEN_DIGITS)
)
_match = _headerPattern.match
# The rest of a plain data frame's header (empty opts, a sid) after its
# stream-id field: an echo's answer, after the acknowledgement expected.
_matchDataTail = re.compile(
    rb"([0-9]{1,%d})\x01\x00([0-9A-Fa-f]{1,%d})\x01" % (MAX_SID_DIGITS, MAX_LEN_DIGITS)
).match

_DIGITS = frozenset(b"0123456789")
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_FIELDS = (
    # name, shortest, longest, allowed bytes (None: any but 00 and 01)
    ("stream-id", 1, MAX_STREAM_ID_LENGTH, None),
    ("opts", 0, 1, None),
    ("sid", 0, MAX_SID_DIGITS, _DIGITS),
    ("LEN", 1, MAX_LEN_DIGITS, _HEXDIGITS),
)


class Frame:
    """
    One BMP frame.

    @ivar streamId: bytes.
    @ivar opt: the opts byte as an int, 0 when the field is empty.
    @ivar sid: the sequence number field, bytes (empty when absent).
    @ivar size: the payload length.
    @ivar payload: the payload, when known whole.
    """

    __slots__ = ("streamId", "opt", "sid", "size", "payload")

    def __init__(self, streamId, opt=DATA, sid=b"", size=0, payload=None):
        self.streamId = streamId
        self.opt = opt
        self.sid = sid
        self.size = size
        self.payload = payload

    def isData(self):
        """
        Return true if the payload of this frame is stream data.
        """
        return self.opt not in _CONTROL

    def __eq__(self, other):
        return isinstance(other, Frame) and (
            self.streamId, self.opt, self.sid, self.size, self.payload
        ) == (other.streamId, other.opt, other.sid, other.size, other.payload)

    __hash__ = None

    def __repr__(self):
        return "bmp.Frame(streamId=%r, opt=0x%02X, sid=%r, size=%d, payload=%r)" % (
            self.streamId, self.opt, self.sid, self.size, self.payload
        )


def encodeHeader(streamId, opt, sid, size):
    """
    Return the four header fields of a frame (LEN in upper-case hex).
    """
    if not streamId or b"\x00" in streamId or b"\x01" in streamId:
        raise ValueError("BMP stream id %r must be non-empty, without 00/01" % (streamId,))
    if len(streamId) > MAX_STREAM_ID_LENGTH:
        raise ValueError("BMP stream id %r is too long" % (streamId,))
    if opt in (0x00, 0x01) and opt != DATA or not 0 <= opt <= 0xFF:
        raise ValueError("BMP opts byte 0x%02X cannot be encoded" % (opt,))
    return b"\x00%b\x01\x00%b\x01\x00%b\x01\x00%X\x01" % (
        streamId, bytes((opt,)) if opt else b"", sid, size
    )


def encodeFrame(frame):
    """
    Return the bytes of C{frame} (its C{payload} must be set).
    """
    payload = frame.payload or b""
    return encodeHeader(frame.streamId, frame.opt, frame.sid, len(payload)) + payload


def _checkPrefix(buf, position):
    """
    Raise the L{MalformedFrame} naming what is wrong with header bytes
    C{buf}, or return if they are a valid beginning of a header.
    """
    i = 0
    end = len(buf)
    for name, shortest, longest, allowed in _FIELDS:
        if i == end:
            return
        if buf[i] != 0x00:
            raise MalformedFrame(
                "BMP %s field must start with 0x00, found 0x%02X (stream offset %d)"
                % (name, buf[i], position + i)
            )
        i += 1
        start = i
        while i < end and buf[i] != 0x01:
            byte = buf[i]
            if byte == 0x00:
                raise MalformedFrame(
                    "BMP %s field contains 0x00 (stream offset %d)" % (name, position + i)
                )
            if allowed is not None and byte not in allowed:
                raise MalformedFrame(
                    "BMP %s field contains %r, not a %s digit (stream offset %d)"
                    % (name, bytes((byte,)), "hex" if name == "LEN" else "decimal",
                       position + i)
                )
            i += 1
            if i - start > longest:
                raise MalformedFrame(
                    "BMP %s field is longer than %d bytes (stream offset %d)"
                    % (name, longest, position + start)
                )
        if i == end:
            return
        if i - start < shortest:
            raise MalformedFrame(
                "BMP %s field is empty (stream offset %d)" % (name, position + start)
            )
        i += 1
    raise MalformedFrame("BMP header %r does not parse" % (bytes(buf),))


class FrameDecoder(PayloadStreamer):
    """
    Incremental BMP decoder: accepts the byte stream split anywhere, byte by
    byte included.

    L{receive} appends C{(frame, piece, first, last)} tuples to a list (see
    L{muxframe.pieces}).  Data payloads come as pieces as they arrive; ack,
    end and close frames come once, whole, with C{frame.payload} set.
    """

    __slots__ = ("maxFrameSize", "_header", "_parts", "_offset")

    def __init__(self, maxFrameSize=1 << 24):
        PayloadStreamer.__init__(self)
        self.maxFrameSize = maxFrameSize
        self._header = b""
        self._parts = None
        self._offset = 0

    def receive(self, data, out, limit=None, start=0):
        """
        Decode C{data} from C{start} on, appending items to C{out}; with a
        C{limit}, stop at the first frame boundary where C{out} holds that
        many items.

        @return: the position in C{data} decoding reached (its length,
            unless C{limit} stopped it).
        @raise MalformedFrame: bytes that are not BMP, naming the fault.
        @raise FrameTooLarge: a LEN over C{maxFrameSize}.
        """
        end = len(data)
        consumed = end
        # _offset counts the stream's bytes: positions here start at start.
        self._offset -= start
        try:
            consumed = self._decode(data, start, end, out, limit)
        finally:
            self._offset += consumed
        return consumed

    def _decode(self, data, pos, end, out, limit):
        append = out.append
        while pos < end:
            if self._frame is not None:
                if self._parts is None:
                    pos = self._streamPayload(data, pos, end, append)
                else:
                    pos = self._controlPayload(data, pos, end, append)
                continue
            if not self._header and limit is not None and len(out) >= limit:
                return pos
            if self._header:
                held = len(self._header)
                buf = self._header + data[pos:pos + MAX_HEADER]
                match = _match(buf)
                if match is None:
                    _checkPrefix(buf, self._offset + pos - held)
                    self._header = buf
                    pos += len(buf) - held
                    continue
                pos += match.end() - held
                self._header = b""
            else:
                match = _match(data, pos)
                if match is None:
                    chunk = data[pos:pos + MAX_HEADER]
                    _checkPrefix(chunk, self._offset + pos)
                    self._header = bytes(chunk)
                    pos += len(chunk)
                    continue
                pos = match.end()
            streamId, opts, sid, length = match.groups()
            size = int(length, 16)
            opt = opts[0] if opts else DATA
            frame = Frame(streamId, opt, sid, size)
            if opt in _CONTROL:
                if size > MAX_CONTROL_PAYLOAD:
                    raise MalformedFrame(
                        "BMP control frame (opts 0x%02X) on stream %r with a "
                        "%d-byte payload (at most %d)"
                        % (opt, streamId, size, MAX_CONTROL_PAYLOAD)
                    )
                if size == 0:
                    frame.payload = b""
                    append((frame, b"", True, True))
                elif end - pos >= size:
                    # Whole in this read, as nearly always: taken at once.
                    payload = data[pos:pos + size]
                    if type(payload) is not bytes:
                        payload = bytes(payload)
                    frame.payload = payload
                    pos += size
                    append((frame, payload, True, True))
                else:
                    self._expect(frame, size)
                    self._parts = []
            else:
                if size > self.maxFrameSize:
                    raise FrameTooLarge(
                        "BMP frame of %d bytes on stream %r exceeds the receive "
                        "limit of %d (maxReceiveFrameSize)"
                        % (size, streamId, self.maxFrameSize)
                    )
                if size == 0:
                    append((frame, b"", True, True))
                else:
                    self._expect(frame, size)
        return end

    def _isData(self):
        return self._parts is None

    def skipPayload(self, size):
        PayloadStreamer.skipPayload(self, size)
        self._offset += size

    def idle(self):
        """
        Return true if the decoder is between frames, holding nothing.
        """
        return self._frame is None and not self._header

    def advance(self, size):
        """
        C{size} bytes of whole frames were decoded elsewhere (the engine's
        fast path): count them in the stream offset errors name.
        """
        self._offset += size

    def _controlPayload(self, data, pos, end, append):
        # Control payloads are tiny (bounded by MAX_CONTROL_PAYLOAD): gather
        # them whole.
        take = min(end - pos, self._remaining)
        self._parts.append(data[pos:pos + take])
        self._remaining -= take
        if self._remaining == 0:
            frame = self._frame
            frame.payload = b"".join(self._parts)
            self._parts = None
            self._frame = None
            append((frame, frame.payload, True, True))
        return pos + take

    def inHeader(self):
        """
        Return true if a frame header (or a control frame's payload) is
        partly received.
        """
        return bool(self._header) or self._parts is not None

    def buffered(self):
        """
        Return how many bytes the decoder holds (a partial header or control
        payload; never more than a few hundred).
        """
        held = len(self._header)
        if self._parts:
            held += sum(len(part) for part in self._parts)
        return held


def decodeFrames(data, maxFrameSize=1 << 24):
    """
    Decode complete frames from C{data} into L{Frame}s with whole payloads
    (a convenience for tests and tools; the engine streams payloads).
    """
    items = []
    FrameDecoder(maxFrameSize).receive(data, items)
    return joinPieces(items, lambda frame, payload: Frame(
        frame.streamId, frame.opt, frame.sid, frame.size, payload))


def _controlFrame(streamId, opt, payload):
    return b"\x00%b\x01\x00%c\x01\x00\x01\x00%X\x01%b" % (
        streamId, opt, len(payload), payload
    )


# An acknowledgement of sid on a stream: _controlFrame(streamId, ACK, sid),
# formatted without the call (one is sent and one received per data frame),
# its LEN from _LENGTHS[len(sid)] (%b of bytes is cheaper than %X of an int).
_ACK_FORMAT = b"\x00%b\x01\x00\x05\x01\x00\x01\x00%b\x01%b"
_LENGTHS = tuple(b"%X" % n for n in range(MAX_SID_DIGITS + 1))
# What an echo answers a frame with: its acknowledgement, then a plain data
# frame on the same stream, up to the sid (BmpEngine._ackGuess).
_GUESS_FORMAT = _ACK_FORMAT + b"\x00%b\x01\x00\x01\x00"


class BmpEngine(Engine):
    """
    The BMP protocol state machine for one connection.
    """

    framing = "bmp"
    # A BMP receiver handles each read (and acknowledges what it ends) in
    # Python: a 256 KiB frame in one read rather than four halves its
    # bulk CPU per GiB (docs/performance.md).
    readSize = 256 * 1024
    # A bulk BMP receiver (muxframe's, reading a frame at a time) drains its
    # socket faster than a muxframe sender fills it and sleeps between
    # sends; each send that wakes it costs the sender an IPI.  Two frames
    # a sendmsg halve those (bulk sender 0.28-0.33 -> 0.19-0.23 CPU s/GiB);
    # MIO, whose receiver keeps up with its sender, lost by it (0.16 ->
    # 0.19 s/GiB), so it keeps one frame a send.
    gatherBulk = True

    def __init__(self, role, settings=None, now=0.0):
        Engine.__init__(self, role, settings, now)
        self._decoder = FrameDecoder(self.settings.maxReceiveFrameSize)
        # A Blazeio client names its streams io_N; a muxframe server opens
        # srv_N, which cannot collide with them.
        self._prefix = b"io_" if role == "client" else b"srv_"
        self._nextLocal = 0
        self._awaiting = {}
        self._unacked = 0
        self._refused = OrderedDict()
        self._closing = OrderedDict()
        self._lastCheck = now
        # The answer expected next, (the bytes an echo's answer starts
        # with: see _GUESS_FORMAT, the stream's state, the sid), set when a
        # frame goes out on a stream with nothing in flight: recognised
        # with startswith rather than parsed (receiveWhole).  Its stream is
        # in the table and open both ways (_dropGuess when that ends), so
        # receiveWhole need not ask.
        self._ackGuess = None

    # -- stream ids -----------------------------------------------------

    def _allocateStreamId(self):
        while True:
            streamId = b"%b%d" % (self._prefix, self._nextLocal)
            self._nextLocal += 1
            if streamId not in self._streams:
                return streamId

    def _isForgottenLocal(self, streamId):
        prefix = self._prefix
        if not streamId.startswith(prefix):
            return False
        number = streamId[len(prefix):]
        return number.isdigit() and int(number) < self._nextLocal

    def _newStream(self, streamId, local):
        state = StreamState(streamId)
        state.local = local
        return state

    def _finish(self, state, error=None):
        self._awaiting.pop(state.streamId, None)
        self._dropGuess(state)
        Engine._finish(self, state, error)

    def _dropGuess(self, state):
        # C{state} leaves the table or ends a direction: no acknowledgement
        # of its frames is expected any more (see _ackGuess).
        guess = self._ackGuess
        if guess is not None and guess[1] is state:
            self._ackGuess = None

    def _forgotten(self, state):
        if state.recvFrames:
            self._unacked -= len(state.recvFrames)
        if not state.local:
            self._remember(state.streamId)

    def receiveOverhead(self):
        """
        Return what the received frames not yet acknowledged cost beyond
        their payload (L{FRAME_COST} each).
        """
        return self._unacked * FRAME_COST

    # -- frames out -----------------------------------------------------

    def _openFrame(self, state):
        pass  # no frame: the first frame written on the stream creates it

    def _remember(self, streamId):
        # Late frames of a stream the peer opened and this side forgot must
        # not open it again (nor may the peer reuse its name).
        self._refused[streamId] = True
        if len(self._refused) > REFUSED_MEMORY:
            self._refused.popitem(last=False)

    def _resetFrame(self, state, code):
        # Acknowledge what we will never consume first: a Blazeio writer that
        # receives a close while it waits for an acknowledgement hangs.
        self._ackAll(state)
        self._awaiting.pop(state.streamId, None)
        self._dropGuess(state)
        self._control.append(_controlFrame(state.streamId, CLOSE_STREAM, b"\x04"))
        self.counters.framesSent += 1

    def _sessionCloseFrame(self, code):
        pass  # BMP has no session-level frame: closing the transport is it

    def _canSend(self, state):
        if state.sendBuffered:
            inflight = state.inflight
            if inflight is None:
                return True
            if len(inflight) >= self.settings.maxInFlight:
                return False
            used = state.inflightBytes
            if used < SHARED_INFLIGHT and used < self.settings.maxBytesInFlight:
                return True
            return used < self._byteLimit(self._latest)
        return state.endPending

    def _byteLimit(self, now):
        # Bytes one stream may have in flight: fewer while other streams
        # send too, so their messages do not queue behind all of them.
        limit = self.settings.maxBytesInFlight
        at = self._sharedAt
        if at is not None and now - at < SHARED_TIME and limit > SHARED_INFLIGHT:
            return SHARED_INFLIGHT
        return limit

    def _emit(self, state, out, now):
        size = 0
        if state.sendBuffered:
            inflight = state.inflight
            if inflight is None:
                inflight = state.inflight = {}
            settings = self.settings
            if state.streamId != self._lastDataStream:
                self._dataOf(state.streamId, now)
            byteLimit = self._byteLimit(self._latest)
            room = byteLimit - state.inflightBytes
            if len(inflight) >= settings.maxInFlight or room <= 0:
                return 0
            size = state.sendBuffered
            if size > settings.maxFrameSize:
                size = settings.maxFrameSize
            if size > room:
                size = room
            if size > ALIGN_MIN:
                size = state.aligned(size)
            payload = state.take(size)
            sid = b"%d" % state.outSeq
            state.outSeq += 1
            if state.created:
                out.append(b"\x00%b\x01\x00\x01\x00%b\x01\x00%X\x01" % (
                    state.streamId, sid, size))
            else:
                state.created = True
                out.append(b"\x00%b\x01\x00\x06\x01\x00%b\x01\x00%X\x01" % (
                    state.streamId, sid, size))
            out.append(payload)
            if not inflight:
                self._awaiting[state.streamId] = state
                streamId = state.streamId
                self._ackGuess = (
                    _GUESS_FORMAT % (streamId, _LENGTHS[len(sid)], sid, streamId), state, sid)
            inflight[sid] = (now, size)
            state.inflightBytes += size
            state.bytesSent += size
            counters = self.counters
            counters.bytesSent += size
            counters.framesSent += 1
            if state.sendBuffered and (len(inflight) >= settings.maxInFlight
                                       or state.inflightBytes >= byteLimit):
                state.creditStalls += 1
                counters.creditStalls += 1
        if not state.sendBuffered and state.endPending:
            out.append(_controlFrame(state.streamId, END_STREAM, b"\x04"))
            state.created = True
            self.counters.framesSent += 1
            state.endPending = False
            state.localEnded = True
            self._dropGuess(state)
            self._writesEnded.append(state.streamId)
            self._maybeFinish(state)
        return size

    def sendWhole(self, streamId, data, now=0.0, armedAt=None):
        size = len(data)
        # (A write of another stream than the last one sent is left to
        # _emit, which notes that streams mix.)
        if (size > WHOLE_LIMIT or not size or streamId != self._lastDataStream
                or self._ready or self._events or self.closed
                or len(self._control) > WHOLE_CONTROL):
            return None
        state = self._streams.get(streamId)
        if (state is None or state.sendBuffered or state.endPending
                or state.localEnded or not state.created):
            return None
        settings = self.settings
        limit = settings.maxStreamSendBuffer
        if size > settings.maxFrameSize or (limit and size > limit):
            return None
        inflight = state.inflight
        used = state.inflightBytes
        total = used + size
        if total > SHARED_INFLIGHT or total > settings.maxBytesInFlight:
            # (Within both, _byteLimit cannot stop it: it is one of them.)
            latest = self._latest
            if inflight is not None and not (
                    # sendData would queue it only if _canSend says so.
                    used < SHARED_INFLIGHT and used < settings.maxBytesInFlight
                    or used < self._byteLimit(latest)):
                return None
            if size > self._byteLimit(latest if now <= latest else now) - used:
                return None
        if inflight:
            if len(inflight) >= settings.maxInFlight:
                return None
        else:
            # (A stream with frames in flight is awaiting: _awaiting is
            # empty only if inflight is.)
            timeout = settings.ackTimeout
            if timeout and not self._awaiting and (
                    armedAt is None or armedAt > self._lastCheck + timeout / 4.0):
                return None  # it arms the acknowledgement check earlier
        # What dataToSend and _emit do with a write they frame whole.
        if now > self._latest:
            self._latest = now
        self._lastSent = now
        sid = b"%d" % state.outSeq
        state.outSeq += 1
        if inflight:
            inflight[sid] = (now, size)
        else:
            # (An empty dict _emit left is replaced: the same state.)
            state.inflight = {sid: (now, size)}
            self._awaiting[streamId] = state
            self._ackGuess = (
                _GUESS_FORMAT % (streamId, _LENGTHS[len(sid)], sid, streamId), state, sid)
        state.inflightBytes = total
        state.bytesSent += size
        counters = self.counters
        counters.bytesSent += size
        counters.framesSent += 1
        return self._withControl(
            b"\x00%b\x01\x00\x01\x00%b\x01\x00%X\x01%b" % (streamId, sid, size, data))

    def _ackAll(self, state):
        frames = state.recvFrames
        if frames:
            streamId = state.streamId
            for sid, remaining in frames:
                self._control.append(_ACK_FORMAT % (streamId, _LENGTHS[len(sid)], sid))
            self.counters.framesSent += len(frames)
            state.recvFrames = None

    def consumed(self, streamId, size, now=None, prompt=True):
        """
        The application has consumed C{size} bytes of stream C{streamId}:
        acknowledge the frames now wholly consumed (see L{Engine.consumed}).
        BMP's acknowledgements depend on neither C{now} nor C{prompt}: this
        does Engine.consumed's work without its call to _returnCredit, one
        call fewer a message.
        """
        state = self._streams.get(streamId)
        if state is None:
            return
        state.recvBuffered -= size
        frames = state.recvFrames
        if not frames:
            return
        control = self._control
        while True:
            sid, remaining = entry = frames.popleft()
            if remaining > size:
                entry[1] = remaining - size
                frames.appendleft(entry)  # (still owed: the oldest)
                return
            size -= remaining
            self._unacked -= 1
            state.recvBuffered -= FRAME_COST
            control.append(_ACK_FORMAT % (streamId, _LENGTHS[len(sid)], sid))
            self.counters.framesSent += 1
            if not frames:
                break
        state.recvFrames = None  # an idle stream keeps no empty deque
        if state.localEnded and state.remoteEnded:
            self._maybeFinish(state)

    def _returnCredit(self, state, size, now, prompt):
        # (_handleItems's, for a stream in the table: consumed finds state.)
        self.consumed(state.streamId, size)

    def receiveWhole(self, data, now=0.0):
        if not self._wholeReady():
            return None
        end = len(data)
        pos = 0
        acks = None
        guess = self._ackGuess
        if guess is not None:
            expected, state, ack = guess
            inflight = state.inflight
            if inflight and ack in inflight:
                whole = data.startswith(expected)
                if whole:
                    # The acknowledgement expected (what the loop below
                    # would take from the regular expression), then, as an
                    # echo's answer has it, a data frame on the same stream:
                    # if it is all the read, taken here, with the effects of
                    # the loop and its tail.
                    match = _matchDataTail(data, len(expected))
                    if match is not None:
                        sid, length = match.groups()
                        start = match.end()
                        size = int(length, 16)
                        if (start + size == end and size
                                and size <= self._decoder.maxFrameSize
                                and state.recvBuffered + FRAME_COST + size
                                <= self.settings.maxStreamReceiveBuffer):
                            self._lastReceived = self._latest = now
                            self.guards.received(now, False, True)
                            self._decoder.advance(end)
                            self._acknowledged(state, inflight.pop(ack))
                            return self._tookFrame(state, sid, size, data, start, 2)
                # Otherwise the acknowledgement, if the read starts with it,
                # is the loop's first: it ends where the data frame's
                # stream-id field (the stream id, five delimiters) starts.
                ackEnd = len(expected) - len(state.streamId) - 5
                if whole or data.startswith(expected[:ackEnd]):
                    acks = [(state, ack)]
                    pos = ackEnd
                    opts = b"\x05"
        streams = self._streams
        while pos < end or acks is None:
            # Acknowledgements of frames in flight on streams still sending,
            # then at most one whole data frame with a sid on an open stream,
            # within its limits: anything else is receiveData's.
            match = _match(data, pos)
            if match is None:
                return None
            streamId, opts, sid, length = match.groups()
            start = match.end()
            pos = start + int(length, 16)
            if pos > end:
                return None
            state = streams.get(streamId)
            if state is None:
                return None
            if opts == b"\x05":
                ack = data[start:pos]
                inflight = state.inflight
                if (state.localEnded or not inflight or ack not in inflight
                        or sid):
                    return None
                if acks is None:
                    acks = [(state, ack)]
                elif (state, ack) in acks:
                    return None
                else:
                    acks.append((state, ack))
                continue
            size = pos - start
            if (pos != end or opts not in (b"", b"\x06") or not sid or not size
                    or state.remoteEnded or size > self._decoder.maxFrameSize
                    or state.recvBuffered + FRAME_COST + size
                    > self.settings.maxStreamReceiveBuffer):
                return None
            break
        self._lastReceived = self._latest = now
        self.guards.received(now, False, True)
        self._decoder.advance(end)
        if acks is None:
            return self._tookFrame(state, sid, size, data, start, 1)
        for acked, ack in acks:
            self._acknowledged(acked, acked.inflight.pop(ack))
        if opts == b"\x05":
            self.counters.framesReceived += len(acks)
            return None, None
        return self._tookFrame(state, sid, size, data, start, len(acks) + 1)

    def _tookFrame(self, state, sid, size, data, start, received):
        # receiveWhole's data frame (sid, size bytes from start, the end of
        # data), owed an acknowledgement until consumed; received counts it
        # and the acknowledgements before it.  Return (stream, payload).
        counters = self.counters
        counters.framesReceived += received
        frames = state.recvFrames
        if frames is None:
            frames = state.recvFrames = deque()
        frames.append([sid, size])
        self._unacked += 1
        state.recvBuffered += FRAME_COST + size
        state.bytesReceived += size
        counters.bytesReceived += size
        return state.streamId, data[start:]

    def _payloadPiece(self, state, size):
        if state.remoteEnded or (state.recvBuffered + size
                                 > self.settings.maxStreamReceiveBuffer):
            return False
        state.recvBuffered += size
        return True

    def _maybeFinish(self, state):
        if (state.localEnded and state.remoteEnded and not state.inflight
                and not state.recvFrames):
            # Only the side that accepted the stream sends close, as a
            # Blazeio server does.  A Blazeio server forgets the stream when
            # it sends its own close, and takes a close from the opener that
            # crosses it for a new stream (running its handler again).
            if not state.local:
                self._control.append(
                    _controlFrame(state.streamId, CLOSE_STREAM, b"\x04"))
                self.counters.framesSent += 1
            else:
                closing = self._closing
                closing[state.streamId] = True
                if len(closing) > CLOSING_MEMORY:
                    closing.popitem(last=False)
            self._finish(state)

    # -- frames in ------------------------------------------------------

    def _handleItems(self, items, now):
        streams = self._streams
        events = self._events
        counters = self.counters
        guards = self.guards
        for frame, piece, first, last in items:
            streamId = frame.streamId
            opt = frame.opt
            if first:
                counters.framesReceived += 1
            if opt == ACK:
                if not self._ackReceived(streams.get(streamId), frame):
                    guards.empty(now, "bmp", "an acknowledgement of nothing (%r)", frame)
                continue
            if opt == CLOSE_STREAM:
                state = streams.get(streamId)
                if state is None:
                    if self._closing.pop(streamId, None) is None:
                        guards.empty(now, "bmp", "a close of unknown stream %r", streamId)
                elif state.remoteEnded:
                    self._finish(state)
                else:
                    guards.reset(now, "bmp", "a close of stream %r before its end",
                                 streamId)
                    self._remoteReset(
                        state, ErrorCode.CLOSED, StreamResetError,
                        "BMP stream %r closed by the peer before its end "
                        "of stream" % (streamId,),
                    )
                continue
            state = streams.get(streamId)
            if state is None:
                if not first:
                    continue
                state = self._peerStream(streamId, now)
                if state is None:
                    continue
            if opt == END_STREAM:
                if not state.remoteEnded:
                    state.remoteEnded = True
                    self._dropGuess(state)
                    events.append(StreamEnded(streamId))
                    self._maybeFinish(state)
                else:
                    guards.empty(now, "bmp", "a second end of stream %r", streamId)
                continue
            if state.remoteEnded:
                # Data after the peer's own end of stream: acknowledge and
                # drop it rather than let it confuse the application.
                if first:
                    guards.empty(now, "bmp", "data after the end of stream %r", streamId)
                if last and frame.sid:
                    self._control.append(_controlFrame(streamId, ACK, frame.sid))
                continue
            if first and not frame.size:
                guards.empty(now, "bmp", "an empty data frame on stream %r", streamId)
            if first and frame.sid:
                frames = state.recvFrames
                if frames is None:
                    frames = state.recvFrames = deque()
                frames.append([frame.sid, frame.size])
                self._unacked += 1
                state.recvBuffered += FRAME_COST
                if frame.size == 0:
                    self._returnCredit(state, 0, now, False)
                elif state.recvBuffered > self.settings.maxStreamReceiveBuffer:
                    self._overrun(state, now)
                    continue
            if piece:
                size = len(piece)
                state.recvBuffered += size
                if state.recvBuffered > self.settings.maxStreamReceiveBuffer:
                    self._overrun(state, now)
                    continue
                state.bytesReceived += size
                counters.bytesReceived += size
                events.append(DataReceived(streamId, piece))

    def _peerStream(self, streamId, now):
        if streamId in self._refused or self._isForgottenLocal(streamId):
            self.guards.empty(now, "bmp", "a frame for forgotten stream %r", streamId)
            return None
        if not self.accepting or len(self._streams) >= self.settings.maxStreams:
            self._control.append(_controlFrame(streamId, CLOSE_STREAM, b"\x04"))
            self.counters.framesSent += 1
            self.counters.streamsRefused += 1
            self._remember(streamId)
            self.guards.reset(now, "bmp", "stream %r, refused", streamId)
            return None
        state = StreamState(streamId)
        self._streams[streamId] = state
        self.counters.streamsAccepted += 1
        self._events.append(StreamOpened(streamId))
        return state

    def _ackReceived(self, state, frame):
        # Return true if the acknowledgement was for a frame in flight.
        sid = frame.payload
        if not sid.isdigit() or len(sid) > MAX_SID_DIGITS:
            raise MalformedFrame(
                "BMP acknowledgement on stream %r carries %r, not a sid"
                % (frame.streamId, sid)
            )
        if state is None or not state.inflight:
            return False
        entry = state.inflight.pop(sid, None)
        if entry is None:
            return False
        self._acknowledged(state, entry)
        return True

    def _acknowledged(self, state, entry):
        # The frame of in-flight C{entry} (sent at, size) was acknowledged.
        state.inflightBytes -= entry[1]
        if not state.inflight:
            state.inflight = None  # an idle stream keeps no empty dict
            self._awaiting.pop(state.streamId, None)
            if state.localEnded:
                self._maybeFinish(state)
        if state.sendBuffered or state.endPending:
            self._requeue(state)  # (else _canSend is false)

    def _overrun(self, state, now):
        self.guards.reset(now, "bmp", "an overrun of stream %r", state.streamId)
        error = StreamResetError(
            "BMP stream %r: the peer's unacknowledged frames hold %d bytes "
            "(payload, and %d a frame), over maxStreamReceiveBuffer=%d" % (
                state.streamId, state.recvBuffered, FRAME_COST,
                self.settings.maxStreamReceiveBuffer),
            ErrorCode.FLOW_CONTROL, state.streamId,
        )
        self.resetStream(state.streamId, ErrorCode.FLOW_CONTROL)
        self._events.append(StreamClosed(state.streamId, error))

    # -- timers ---------------------------------------------------------

    def _tickFraming(self, now):
        self._lastCheck = now
        timeout = self.settings.ackTimeout
        if not timeout:
            return
        for state in list(self._awaiting.values()):
            oldest = next(iter(state.inflight.values()))[0]
            if now - oldest >= timeout:
                sid = next(iter(state.inflight))
                self._awaiting.pop(state.streamId, None)
                self.resetStream(state.streamId, ErrorCode.CLOSED)
                self._events.append(StreamClosed(state.streamId, StreamTimeoutError(
                    "BMP stream %r: frame %s unacknowledged for %g s (ackTimeout)"
                    % (state.streamId, sid.decode(), timeout),
                    ErrorCode.CLOSED, state.streamId,
                )))

    def _framingDeadline(self, awaiting=False):
        # (awaiting: the deadline once a frame is in flight.)
        if (awaiting or self._awaiting) and self.settings.ackTimeout:
            return self._lastCheck + self.settings.ackTimeout / 4.0
        return None
