"""
MIO, sans-IO: the frame codec and the engine.  See docs/protocols.md for the
wire format as implemented.

Frame: an 8-byte big-endian header -- stream id (bit 31 reserved), 24-bit
size, flags -- then a payload only when SYN is set and WND is not.

Receive dispatch, first match wins (the Go library's behaviour):

  SYN and a known stream   WND: window update; HFR: data + end; else data
  RST and WND              open (0x0C; 0x0D on an unknown stream too)
  RST                      reset stream (code in size)
  WND                      session window update: a no-op (our keepalive)
  FIN                      close session (code in size); on any stream
                           but 0 a connection error
  nothing                  ignored

Stream rules enforced here:

  - The opener's window is the initial credit both ways.  A sender never
    exceeds its credit; a peer that does gets its stream reset with code 2.
  - Credit is returned as the application consumes data, in updates of at
    least half the stream's window (or all of it once the peer has ended).
  - Receive-window auto-tuning: a stream whose child consumes a whole
    window within TUNE_TIME, every byte as it arrived (none held for a
    paused child), is granted extra credit with the next update, doubling
    its window, up to maxWindowSize; the credit granted beyond the windows
    of all open streams never exceeds sessionBufferSize.  What a paused
    child may be sent stays bounded by its (possibly grown) window.  While
    other streams receive data too (SHARED_TIME), a grown window shrinks
    back to SHARED_INFLIGHT (credit withheld as the child consumes) and
    grows no further.
  - Credit beyond the window is legal (a peer may grow our send window the
    same way); an update that takes our credit past the window by less
    than a quarter of it, or that grants nothing, counts as a frame that
    carries nothing (maxEmptyFrames).
  - A data frame larger than maxReceiveFrameSize is a connection error:
    FIN code 2.  Frames sent are at most maxFrameSize.
  - Frames for a stream id nobody can have opened yet are a connection
    error; frames for streams already closed are skipped silently (never a
    reset answering a reset).
  - The connection initiator (client) opens odd ids, the other side even
    ids; both skip ids the peer is using.  A peer that opens ids of this
    side's parity (Go's mio does) moves this side past them; the ids it
    made this side skip stay the peer's to open, in any order (Go opens
    concurrent streams out of order), for the last SKIPPED_MEMORY of them.
  - An id is never reused on a connection: an open for an id this side
    has used (or skipped and not left to the peer), or for one of the last
    CLOSED_MEMORY ids the peer used, is a connection error (FIN code 1).
"""

import struct
from collections import deque

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
    FlowControlViolation,
    FrameTooLarge,
    MalformedFrame,
    StreamLimitError,
    StreamRefusedError,
    StreamResetError,
)
from .pieces import PayloadStreamer, joinPieces
from .sniff import HEAD
from .events import (
    ConnectionTerminated,
    DataReceived,
    StreamClosed,
    StreamEnded,
    StreamOpened,
)

SYN = 0x01
FIN = 0x02
RST = 0x04
WND = 0x08
HFR = 0x10
RESERVED_FLAGS = 0xE0

OPEN = RST | WND
DATA = SYN
DATA_END = SYN | HFR
WINDOW_UPDATE = SYN | WND
RESET = RST
CLOSE_SESSION = FIN
SESSION_WINDOW = WND

HEADER_SIZE = 8
MAX_SIZE = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1
# Credit beyond this is a window overflow (RFC 7540 uses the same bound).
MAX_CREDIT = (1 << 31) - 1
# Ids of the peer's streams remembered after they close, so an open that
# reuses one is refused as the protocol error it is (ids are never reused on
# a connection).  Beyond this memory the Multiplexer still never lets a new
# stream alias an old one.
CLOSED_MEMORY = 64
# Ids of this side's parity that a peer's open of a higher one made this
# side skip, still the peer's to open (out of order) -- at most this many,
# the latest, so a peer jumping far ahead costs a bounded amount.
SKIPPED_MEMORY = 256
# A window consumed (promptly) within this many seconds is too small for
# the stream's rate: it doubles.  Its window settles near rate x TUNE_TIME,
# which covers the credit's round trip on paths of up to this delay.
TUNE_TIME = 0.1

_header = struct.Struct(">II")
_pack = _header.pack
_unpackFrom = _header.unpack_from


class Frame:
    """
    One MIO frame header (and, from L{decodeFrames}, its whole payload).
    """

    __slots__ = ("streamId", "size", "flags", "payload")

    def __init__(self, streamId, size, flags, payload=None):
        self.streamId = streamId
        self.size = size
        self.flags = flags
        self.payload = payload

    def hasPayload(self):
        """
        Return true if this frame carries C{size} bytes of payload.
        """
        return self.flags & SYN and not self.flags & WND

    def __eq__(self, other):
        return isinstance(other, Frame) and (
            self.streamId, self.size, self.flags, self.payload
        ) == (other.streamId, other.size, other.flags, other.payload)

    __hash__ = None

    def __repr__(self):
        return "mio.Frame(streamId=%d, size=%d, flags=0x%02X, payload=%r)" % (
            self.streamId, self.size, self.flags, self.payload
        )


def encodeHeader(streamId, size, flags):
    """
    Return the 8-byte header of a frame.
    """
    if not 0 <= streamId <= MAX_STREAM_ID:
        raise ValueError("MIO stream id %r out of range" % (streamId,))
    if not 0 <= size <= MAX_SIZE:
        raise ValueError("MIO size %r does not fit in 24 bits" % (size,))
    return _pack(streamId, (size << 8) | flags)


def encodeFrame(frame):
    """
    Return the bytes of C{frame}, payload included.
    """
    if frame.hasPayload():
        payload = frame.payload or b""
        return encodeHeader(frame.streamId, len(payload), frame.flags) + payload
    return encodeHeader(frame.streamId, frame.size, frame.flags)


class FrameDecoder(PayloadStreamer):
    """
    Incremental MIO decoder: accepts the byte stream split anywhere.

    L{receive} appends C{(frame, piece, first, last)} tuples to a list (see
    L{muxframe.pieces}): a payload comes as pieces as its bytes arrive, so
    a large frame is never buffered whole.
    """

    __slots__ = ("maxFrameSize", "_header")

    def __init__(self, maxFrameSize=MAX_SIZE):
        PayloadStreamer.__init__(self)
        self.maxFrameSize = maxFrameSize
        self._header = b""

    def receive(self, data, out, limit=None, start=0):
        """
        Decode C{data} from C{start} on, appending items to C{out}; with a
        C{limit}, stop at the first frame boundary where C{out} holds that
        many items.

        @return: the position in C{data} decoding reached (its length,
            unless C{limit} stopped it).
        @raise FrameTooLarge: a data frame over C{maxFrameSize}; the items
            decoded before it are already in C{out}.
        """
        pos = start
        end = len(data)
        append = out.append
        while pos < end:
            if self._frame is not None:
                pos = self._streamPayload(data, pos, end, append)
                continue
            if self._header:
                need = HEADER_SIZE - len(self._header)
                self._header += data[pos:pos + need]
                pos += need
                if len(self._header) < HEADER_SIZE:
                    return end
                streamId, word = _unpackFrom(self._header)
                self._header = b""
            elif limit is not None and len(out) >= limit:
                return pos
            elif end - pos >= HEADER_SIZE:
                streamId, word = _unpackFrom(data, pos)
                pos += HEADER_SIZE
            else:
                self._header = bytes(data[pos:])
                return end
            flags = word & 0xFF
            size = word >> 8
            frame = Frame(streamId & MAX_STREAM_ID, size, flags)
            if flags & SYN and not flags & WND:
                if size > self.maxFrameSize:
                    raise FrameTooLarge(
                        "MIO data frame of %d bytes on stream %d exceeds the "
                        "receive limit of %d (maxReceiveFrameSize)"
                        % (size, frame.streamId, self.maxFrameSize)
                    )
                if size == 0:
                    append((frame, b"", True, True))
                else:
                    self._expect(frame, size)
            else:
                append((frame, None, True, True))
        return end

    def buffered(self):
        """
        Return how many bytes the decoder holds (at most a partial header).
        """
        return len(self._header)

    def idle(self):
        """
        Return true if the decoder is between frames, holding nothing.
        """
        return self._frame is None and not self._header

    def inHeader(self):
        """
        Return true if a frame header is partly received.
        """
        return bool(self._header)


def decodeFrames(data, maxFrameSize=MAX_SIZE):
    """
    Decode complete frames from C{data} into L{Frame}s with whole payloads
    (a convenience for tests and tools; the engine streams payloads).
    """
    items = []
    FrameDecoder(maxFrameSize).receive(data, items)
    return joinPieces(items, lambda frame, payload: Frame(
        frame.streamId, frame.size, frame.flags, payload))


class MioEngine(Engine):
    """
    The MIO protocol state machine for one connection.
    """

    framing = "mio"

    def __init__(self, role, settings=None, now=0.0):
        Engine.__init__(self, role, settings, now)
        self._decoder = FrameDecoder(self.settings.maxReceiveFrameSize)
        self._nextLocalId = 1 if role == "client" else 2
        self._highestId = 0
        self._closedPeerIds = deque(maxlen=CLOSED_MEMORY)
        # An insertion-ordered dict used as a bounded set.
        self._skippedForPeer = {}
        self._grown = 0

    # -- stream ids -----------------------------------------------------

    def _allocateStreamId(self):
        streamId = self._nextLocalId
        while streamId in self._streams:
            streamId += 2
        if streamId > MAX_STREAM_ID:
            raise StreamLimitError("MIO stream ids exhausted on this connection")
        self._nextLocalId = streamId + 2
        if streamId > self._highestId:
            self._highestId = streamId
        return streamId

    def _newStream(self, streamId, local, window=None):
        if window is None:
            window = self.settings.windowSize
        return StreamState(streamId, credit=window, window=window)

    def _forgotten(self, state):
        self._grown -= state.grown
        if not state.local:
            self._closedPeerIds.append(state.streamId)

    def _wasUsed(self, streamId):
        # Ids of this side's parity below the next one to open were opened
        # by this side, or skipped: those the peer's own opens made us skip
        # are still the peer's to open.
        if streamId % 2 == self._nextLocalId % 2 and streamId < self._nextLocalId:
            return streamId not in self._skippedForPeer
        return streamId in self._closedPeerIds

    def _peerTookOurParity(self, streamId):
        # A Go peer opens ids of both parities: never open one of them
        # ourselves, and leave the ones skipped here to the peer.
        skipped = self._skippedForPeer
        if streamId < self._nextLocalId:
            skipped.pop(streamId, None)
            return
        for gap in range(max(self._nextLocalId, streamId - 2 * SKIPPED_MEMORY),
                         streamId, 2):
            skipped[gap] = None
        while len(skipped) > SKIPPED_MEMORY:
            del skipped[next(iter(skipped))]
        self._nextLocalId = streamId + 2

    # -- frames out -----------------------------------------------------

    def _openFrame(self, state):
        self._control.append(_pack(state.streamId, (state.window << 8) | OPEN))
        self.counters.framesSent += 1

    def _resetFrame(self, state, code):
        self._control.append(_pack(state.streamId, (int(code) << 8) | RESET))
        self.counters.framesSent += 1

    def _sessionCloseFrame(self, code):
        self._control.append(_pack(0, (int(code) << 8) | CLOSE_SESSION))
        self.counters.framesSent += 1

    def _canSend(self, state):
        if state.sendBuffered:
            return state.credit > 0
        return state.endPending

    def _emit(self, state, out, now):
        size = 0
        if state.sendBuffered:
            size = state.credit
            if size > self.settings.maxFrameSize:
                size = self.settings.maxFrameSize
            if size > state.sendBuffered:
                size = state.sendBuffered
            if size <= 0:
                return 0
            if size > ALIGN_MIN:
                size = state.aligned(size)
            payload = state.take(size)
            out.append(_pack(state.streamId, (size << 8) | DATA))
            out.append(payload)
            state.credit -= size
            state.bytesSent += size
            counters = self.counters
            counters.bytesSent += size
            counters.framesSent += 1
            if state.sendBuffered and state.credit <= 0:
                state.creditStalls += 1
                counters.creditStalls += 1
        if not state.sendBuffered and state.endPending:
            out.append(_pack(state.streamId, DATA_END))
            self.counters.framesSent += 1
            state.endPending = False
            state.localEnded = True
            self._writesEnded.append(state.streamId)
            if state.remoteEnded:
                self._finish(state)
        return size

    def sendWhole(self, streamId, data, now=0.0, armedAt=None):
        size = len(data)
        if (not size or size > WHOLE_LIMIT or self.closed
                or len(self._control) > WHOLE_CONTROL or self._ready or self._events):
            return None
        state = self._streams.get(streamId)
        if (state is None or state.sendBuffered or state.endPending
                or state.localEnded or size > state.credit):
            return None
        settings = self.settings
        limit = settings.maxStreamSendBuffer
        if size > settings.maxFrameSize or (limit and size > limit):
            return None
        # What _emit does with a write it frames whole.
        if now > self._latest:
            self._latest = now
        self._lastSent = now
        state.credit -= size
        state.bytesSent += size
        counters = self.counters
        counters.bytesSent += size
        counters.framesSent += 1
        return self._withControl(_pack(streamId, (size << 8) | DATA) + data)

    def _returnCredit(self, state, size, now, prompt):
        if state.remoteEnded:
            return
        pending = state.pendingCredit + size
        window = state.window + state.grown
        extra = 0
        limit = self.settings.maxWindowSize
        at = self._sharedAt
        if at is not None and now - at < SHARED_TIME:
            # Other streams receive too: a grown window shrinks back to
            # SHARED_INFLIGHT (credit withheld), and grows no further.
            limit = min(limit, max(state.window, SHARED_INFLIGHT))
            if window > limit and pending:
                shrink = min(pending, window - limit, state.grown)
                state.grown -= shrink
                self._grown -= shrink
                pending -= shrink
                window -= shrink
        if not prompt:
            state.tuneBytes = 0
        elif window < limit:
            if not state.tuneBytes:
                state.tuneStart = now
            state.tuneBytes += size
            if state.tuneBytes >= window:
                if now - state.tuneStart <= TUNE_TIME:
                    extra = self._growth(state, window, limit)
                state.tuneBytes = 0
        if extra or pending * 2 >= window:
            grant = pending + extra
            state.recvWindow += grant
            state.pendingCredit = 0
            while grant:
                piece = grant if grant <= MAX_SIZE else MAX_SIZE
                self._control.append(_pack(state.streamId, (piece << 8) | WINDOW_UPDATE))
                self.counters.framesSent += 1
                grant -= piece
        else:
            state.pendingCredit = pending

    def _growth(self, state, window, limit):
        # Double the window, within the limit (maxWindowSize) and what is
        # left of the sessionBufferSize all grown windows share.
        extra = min(window, limit - window,
                    self.settings.sessionBufferSize - self._grown)
        if extra <= 0:
            return 0
        state.grown += extra
        self._grown += extra
        self.counters.windowGrowths += 1
        return extra

    def receiveWindow(self, streamId):
        """
        Return the receive window of stream C{streamId} (its initial window
        plus what auto-tuning granted), or C{None} if it is gone.
        """
        state = self._streams.get(streamId)
        if state is None:
            return None
        return state.window + state.grown

    def grownCredit(self):
        """
        Return the credit granted beyond the initial windows, all open
        streams together (at most C{sessionBufferSize}).
        """
        return self._grown

    # -- frames in ------------------------------------------------------

    def _handleItems(self, items, now):
        streams = self._streams
        events = self._events
        counters = self.counters
        guards = self.guards
        for frame, piece, first, last in items:
            streamId = frame.streamId
            flags = frame.flags
            if first:
                counters.framesReceived += 1
            if flags & SYN:
                state = streams.get(streamId)
                if state is not None:
                    if flags & WND:
                        self._windowUpdate(state, frame.size, now)
                        continue
                    if state.remoteEnded:
                        # Data after the peer's own end of stream: drop it
                        # rather than deliver it after the end.
                        if first:
                            guards.empty(now, "mio", "data after the end of stream %d",
                                         streamId)
                        continue
                    if first:
                        size = frame.size
                        if size and streamId != self._lastDataStream:
                            self._dataOf(streamId, now)
                        if size > state.recvWindow:
                            self._flowControlError(state, size, now)
                            continue
                        state.recvWindow -= size
                        if not size and not flags & HFR:
                            guards.empty(now, "mio", "an empty data frame on stream %d",
                                         streamId)
                    if piece:
                        state.bytesReceived += len(piece)
                        counters.bytesReceived += len(piece)
                        events.append(DataReceived(streamId, piece))
                    if last and flags & HFR:
                        self._remoteEnd(state)
                    continue
                if not flags & RST or not flags & WND:
                    # Data or credit for a stream that is gone: skip it.
                    self._checkKnownId(streamId, frame)
                    if first:
                        guards.empty(now, "mio", "%r for a closed stream", frame)
                    continue
            if flags & RST:
                if flags & WND:
                    self._peerOpened(frame, now)
                    continue
                state = streams.get(streamId)
                if state is not None:
                    guards.reset(now, "mio", "RST of stream %d", streamId)
                    code = frame.size
                    if code == ErrorCode.REFUSED:
                        cls, text = StreamRefusedError, "refused by the peer"
                    else:
                        cls, text = StreamResetError, "reset by the peer"
                    self._remoteReset(
                        state, code, cls,
                        "MIO stream %d %s (code %s)"
                        % (streamId, text, ErrorCode.describe(code)),
                    )
                else:
                    self._checkKnownId(streamId, frame)
                    guards.empty(now, "mio", "RST of closed stream %d", streamId)
            elif flags & WND:
                # Session window update: the keepalive.
                guards.empty(now, "mio", "a keepalive (session window frame)")
            elif flags & FIN:
                if streamId:
                    # Every MIO peer closes the session on stream 0; a FIN
                    # elsewhere is garbage (a TLS ClientHello of 512 to 767
                    # bytes decodes as one).
                    raise MalformedFrame(
                        "MIO session close (FIN) %r on stream %d, not 0"
                        % (frame, streamId))
                code = frame.size
                self.closed = True
                self.accepting = False
                self._ready.clear()
                events.append(ConnectionTerminated(code, None))
                return
            else:
                guards.empty(now, "mio", "%r, which means nothing", frame)

    def _payloadPiece(self, state, size):
        return not state.remoteEnded

    def receiveCrossing(self, data, now=0.0):
        if self.closed or self._unread or self._events or len(self._head) < HEAD:
            return None
        decoder = self._decoder
        frame = decoder._frame
        if frame is None or frame.flags != DATA:
            return None
        tail = decoder._remaining
        end = len(data)
        if end <= tail + HEADER_SIZE or tail == frame.size:
            return None
        streamId, word = _unpackFrom(data, tail)
        size = word >> 8
        # The next frame: plain data of the same stream (a reserved id bit
        # makes the id another), within the window and the frame limit,
        # carrying the rest of the read (and maybe more).
        rest = end - tail - HEADER_SIZE
        if (streamId != frame.streamId or word & 0xFF != DATA or size < rest
                or size > decoder.maxFrameSize):
            return None
        state = self._streams.get(streamId)
        if (state is None or state.remoteEnded or size > state.recvWindow
                or len(self._control) - self._localControl
                > self.settings.maxControlBacklog):
            return None
        self._tookData(state, size, now)
        if size == rest:
            decoder._frame = None
            decoder._remaining = 0
        else:
            decoder._expect(Frame(streamId, size, DATA), size - rest)
        size = tail + rest
        state.bytesReceived += size
        self.counters.bytesReceived += size
        view = memoryview(data)
        return streamId, b"".join((view[:tail], view[tail + HEADER_SIZE:]))

    def receiveWhole(self, data, now=0.0):
        end = len(data)
        if end <= HEADER_SIZE or not self._wholeReady():
            return None
        streamId, word = _unpackFrom(data)
        size = word >> 8
        # One whole plain data frame, on an open stream, within its window
        # (a reserved stream-id bit makes the id unknown: receiveData's).
        if (word & 0xFF != DATA or size != end - HEADER_SIZE
                or size > self._decoder.maxFrameSize):
            return None
        state = self._streams.get(streamId)
        if state is None or state.remoteEnded or size > state.recvWindow:
            return None
        self._tookData(state, size, now)
        state.bytesReceived += size
        self.counters.bytesReceived += size
        return streamId, data[HEADER_SIZE:]

    def _tookData(self, state, size, now):
        # A fast path takes the header of a data frame of size bytes on
        # state's stream: what receiveData does for it (the payload's
        # byte counts are the caller's).
        self._lastReceived = self._latest = now
        self.guards.received(now, False, True)
        self.counters.framesReceived += 1
        if state.streamId != self._lastDataStream:
            self._dataOf(state.streamId, now)
        state.recvWindow -= size

    def _checkKnownId(self, streamId, frame):
        if streamId > self._highestId or streamId == 0:
            raise MalformedFrame(
                "MIO frame %r names stream %d, which was never opened"
                % (frame, streamId)
            )

    def _peerOpened(self, frame, now):
        streamId = frame.streamId
        if streamId == 0:
            raise MalformedFrame("MIO open frame for stream 0")
        if streamId in self._streams:
            raise MalformedFrame(
                "MIO open frame for stream %d, which is already open" % (streamId,)
            )
        if self._wasUsed(streamId):
            raise MalformedFrame(
                "MIO open frame for stream %d, which was used before on this "
                "connection (stream ids are never reused)" % (streamId,)
            )
        if streamId > self._highestId:
            self._highestId = streamId
        if streamId % 2 == self._nextLocalId % 2:
            self._peerTookOurParity(streamId)
        if not self.accepting or len(self._streams) >= self.settings.maxStreams:
            self._control.append(_pack(streamId, (ErrorCode.REFUSED << 8) | RESET))
            self.counters.framesSent += 1
            self.counters.streamsRefused += 1
            self._closedPeerIds.append(streamId)
            self.guards.reset(now, "mio", "open of stream %d, refused", streamId)
            return
        window = frame.size
        self._streams[streamId] = StreamState(streamId, credit=window, window=window)
        self.counters.streamsAccepted += 1
        self._events.append(StreamOpened(streamId))

    def _windowUpdate(self, state, size, now):
        credit = state.credit + size
        if credit > MAX_CREDIT:
            raise FlowControlViolation(
                "MIO window update of %d on stream %d overflows the window"
                % (size, state.streamId)
            )
        window = state.window + state.peerGrown
        if credit > window:
            # The peer grows our window (auto-tuning), or grants credit for
            # bytes never sent: a growth of less than a quarter is the
            # latter, so such frames are bounded by the empty-frame budget
            # and growth by the overflow check after a few dozen.
            if credit - window < window // 4:
                self.guards.empty(now, "mio", "a window update of %d on stream %d",
                                  size, state.streamId)
            state.peerGrown = credit - state.window
        elif not size:
            self.guards.empty(now, "mio", "a window update of %d on stream %d",
                              size, state.streamId)
        state.credit = credit
        self._requeue(state)

    def _flowControlError(self, state, size, now):
        self.guards.reset(now, "mio", "an overrun of stream %d's window", state.streamId)
        error = FlowControlViolation(
            "MIO stream %d: peer sent %d bytes with %d bytes of credit"
            % (state.streamId, size, state.recvWindow)
        )
        self.resetStream(state.streamId, ErrorCode.FLOW_CONTROL)
        self._events.append(StreamClosed(
            state.streamId,
            StreamResetError(str(error), ErrorCode.FLOW_CONTROL, state.streamId),
        ))

    def _remoteEnd(self, state):
        state.remoteEnded = True
        self._events.append(StreamEnded(state.streamId))
        if state.localEnded:
            self._finish(state)

    def sendProbe(self):
        """
        Queue a session window frame (ignored by every MIO peer, like the
        keepalive) whose size field holds CR LF, which an HTTP, SMTP or
        other line-based server answers with an error and a TLS server
        with an alert.
        """
        if self.closed:
            return False
        self._control.append(_pack(0, (0x0D0A << 8) | SESSION_WINDOW))
        self.counters.framesSent += 1
        return True

    # -- timers ---------------------------------------------------------

    def _tickFraming(self, now):
        interval = self.settings.keepaliveInterval
        if interval and now - self._lastSent >= interval:
            self._control.append(_pack(0, SESSION_WINDOW))
            self.counters.framesSent += 1
            self.counters.keepalivesSent += 1
            self._lastSent = now

    def _framingDeadline(self):
        interval = self.settings.keepaliveInterval
        if interval:
            return self._lastSent + interval
        return None
