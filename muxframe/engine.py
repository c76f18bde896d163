"""
What every framing's sans-IO engine shares: the stream table, bounded send
buffers, the output scheduler and the counters.

Rules (both framings):

  - Commands (openStream, sendData, endStream, resetStream, consumed,
    closeSession) change state and queue output; nothing is written until the
    caller asks for L{Engine.dataToSend} (or sendWhole returns a small
    write's frame, below).
  - Output order: every queued control frame (credit, acknowledgements,
    resets, refusals, keepalives) first, then data, served round-robin one
    frame per stream per turn so no stream waits behind another's bulk.
  - A stream is removed from the table when it is over: both directions
    ended (and, for BMP, every acknowledgement exchanged), or reset.  Then a
    L{StreamClosed} event reports it once.
  - Time is an argument ("now", in seconds); no clock is read here.
  - Data frames end at the end of a queued write of ALIGN_MIN bytes or more
    (never joining it to the next), so such writes are sent uncopied.
  - While data of more than one stream is framed (within SHARED_TIME), one
    stream's bytes in flight are held to SHARED_INFLIGHT (the framings
    apply it: MIO's receiver to grown windows, BMP's sender).
  - receivePayload is a fast path with the effects of receiveData for
    bytes wholly inside a data frame's payload, receiveCrossing (MIO) for
    a read across the boundary into the same stream's next data frame;
    receiveWhole one for a read made of whole frames of the commonest
    kinds (small messages): each takes nothing unless the result is the
    same as receiveData's.  sendWhole is the sending side's: a small write
    with nothing queued before it is framed at once, with the effects of
    sendData followed by dataToSend.
  - Defences (L{muxframe.guards}): flood budgets for resets and for frames
    that carry nothing, header, idle and empty-connection timers, and a cap
    on the control frames owed to a peer that does not read them
    (maxControlBacklog); each ends the session with a typed error.

No Twisted import: this module and the framings built on it run anywhere.
"""

from collections import deque

from .errors import (
    ErrorCode,
    FloodError,
    RemoteProtocolError,
    SessionClosedError,
    StreamBufferOverflow,
    StreamClosedError,
    StreamLimitError,
)
from .events import ConnectionTerminated, StreamClosed
from .guards import SessionGuards
from .settings import Settings
from .sniff import HEAD, hint

# A queued write at least this large ends its frame (see StreamState.aligned).
ALIGN_MIN = 16 * 1024

# While other streams carry data too (one did within SHARED_TIME seconds),
# one stream's bytes in flight are held to SHARED_INFLIGHT (MIO: its grown
# receive window shrinks back to it; BMP: its unacknowledged bytes), so a
# small message waits behind at most that much of a bulk stream's data.
# Credit (MIO: each half window) and acknowledgements (BMP: each 256 KiB
# frame) come back in steps, so what is in flight swings between a half
# (MIO) or three quarters (BMP) of the bound and all of it: 512 KiB stalled
# the bulk stream on each step's round trip, and at 5-6 GB/s 1 MiB still
# did (0.67-0.75x of alone); 2 MiB kept the small messages' p99 where it
# was (docs/performance.md).
SHARED_TIME = 0.1
SHARED_INFLIGHT = 2 * 1024 * 1024

# Writes of at most this many bytes, after at most WHOLE_CONTROL queued
# control frames, may take sendWhole (it returns them as one string,
# joined: a copy, cheap at this size).
WHOLE_LIMIT = 4096
WHOLE_CONTROL = 8


class Counters:
    """
    Session counters, for operators.

    @ivar resetsSent: C{{code: count}} of stream resets this side sent.
    @ivar resetsReceived: C{{code: count}} of stream resets the peer sent.
    """

    __slots__ = (
        "bytesSent", "bytesReceived", "framesSent", "framesReceived",
        "streamsOpened", "streamsAccepted", "streamsRefused", "creditStalls",
        "keepalivesSent", "resetsSent", "resetsReceived", "windowGrowths",
    )

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)
        self.resetsSent = {}
        self.resetsReceived = {}

    def asDict(self):
        """
        Return a snapshot as a plain dict.
        """
        result = {name: getattr(self, name) for name in self.__slots__}
        result["resetsSent"] = dict(self.resetsSent)
        result["resetsReceived"] = dict(self.resetsReceived)
        return result


class StreamState:
    """
    One stream's protocol state inside an engine.

    Containers are created on first use: an idle stream costs one object.
    """

    __slots__ = (
        "streamId", "sendQueue", "sendOffset", "sendBuffered", "endPending",
        "localEnded", "remoteEnded", "queued", "credit", "window",
        "recvWindow", "pendingCredit", "recvBuffered", "outSeq", "inflight",
        "recvFrames", "created", "bytesSent", "bytesReceived", "creditStalls",
        "local", "grown", "peerGrown", "tuneStart", "tuneBytes", "inflightBytes",
    )

    def __init__(self, streamId, credit=0, window=0):
        self.streamId = streamId
        self.sendQueue = None
        self.sendOffset = 0
        self.sendBuffered = 0
        self.endPending = False
        self.localEnded = False
        self.remoteEnded = False
        self.queued = False
        self.credit = credit
        self.window = window
        self.recvWindow = window
        self.pendingCredit = 0
        self.recvBuffered = 0
        self.outSeq = 0
        self.inflight = None
        self.recvFrames = None
        self.created = False
        self.bytesSent = 0
        self.bytesReceived = 0
        self.creditStalls = 0
        self.local = False
        # MIO receive-window auto-tuning: the credit this side granted
        # beyond the window, and the epoch being measured (bytes consumed
        # promptly since tuneStart); the peer's growth of our send window.
        self.grown = 0
        self.peerGrown = 0
        self.tuneStart = 0.0
        self.tuneBytes = 0
        # BMP: payload bytes of the frames in flight (unacknowledged).
        self.inflightBytes = 0

    def aligned(self, n):
        """
        Return how many bytes a frame that may carry C{n} should take, to
        keep frames aligned to the child's writes: a queued write of at
        least ALIGN_MIN bytes ends its frame (it is never joined to the
        next), so a write that fits a frame goes out as it is and L{take}
        returns it without copying it.
        """
        first = len(self.sendQueue[0]) - self.sendOffset
        if n > first >= ALIGN_MIN:
            return first
        return n

    def take(self, n):
        """
        Remove and return the next C{n} buffered bytes (C{n} must not exceed
        C{sendBuffered}).  A queued chunk of exactly the right size is
        returned as it is; otherwise the bytes are copied once.
        """
        queue = self.sendQueue
        first = queue[0]
        offset = self.sendOffset
        self.sendBuffered -= n
        if not self.sendBuffered:
            # Drained: drop the deque (760 bytes) so an idle stream costs
            # only its state object.
            self.sendQueue = None
            self.sendOffset = 0
            if offset == 0 and len(queue) == 1:
                return first
            pieces = [first[offset:]] if offset else [first]
            pieces.extend(list(queue)[1:])
            return b"".join(pieces)
        if offset == 0 and len(first) == n:
            queue.popleft()
            return first
        if len(first) - offset >= n:
            piece = first[offset:offset + n]
            offset += n
            if offset == len(first):
                queue.popleft()
                offset = 0
            self.sendOffset = offset
            return piece
        pieces = []
        need = n
        while need:
            first = queue[0]
            available = len(first) - offset
            if available <= need:
                pieces.append(first[offset:] if offset else first)
                queue.popleft()
                offset = 0
                need -= available
            else:
                pieces.append(first[offset:offset + need])
                offset += need
                need = 0
        self.sendOffset = offset
        return b"".join(pieces)


class Engine:
    """
    Base class of the framings' engines.  Subclasses implement the wire:
    C{_emit}, C{_openFrame}, C{_endFrame}, C{_resetFrame}, C{_sessionCloseFrame},
    C{_handle} and the stream-id allocation.

    @ivar counters: a L{Counters}.
    @ivar guards: the connection's L{SessionGuards} (flood budgets, timers).
    @ivar closed: true once the session is over; only already queued output
        remains to be sent.
    """

    framing = None
    # Bytes the connection's transport should read at once (its
    # bufferSize), if more than Twisted's 64 KiB; None leaves it as it is.
    readSize = None
    # Whether the multiplexer sends bulk frames gathered in a reactor call
    # as many to a sendmsg as its direct allowance takes (BMP), or each
    # as soon as 64 KiB are gathered (see muxframe.multiplexer.DIRECT_LIMIT).
    gatherBulk = False

    def __init__(self, role, settings=None, now=0.0):
        if role not in ("client", "server"):
            raise ValueError("role must be 'client' or 'server', not %r" % (role,))
        self.role = role
        self.settings = settings if settings is not None else Settings()
        self.counters = Counters()
        self.closed = False
        self.accepting = True
        self._streams = {}
        self._control = []
        # Queued control frames this side's own commands caused (opens,
        # resets); the rest are owed to the peer for what it sent.
        self._localControl = 0
        # Frames queued up to and with the session-close frame (see closeSession).
        self._finalFrames = 0
        self._ready = deque()
        self._events = []
        self._writesEnded = []
        # The stream whose data was last framed (BMP: sent, MIO: received)
        # and when data of another stream last followed another's.
        self._lastDataStream = None
        self._sharedAt = None
        self._lastReceived = now
        self._lastSent = now
        self._latest = now
        self._head = b""
        # Bytes left by a receiveData call with a limit: _unread from
        # _unreadAt on (kept whole, so each slice costs no copy of the rest).
        self._unread = b""
        self._unreadAt = 0
        self.guards = SessionGuards(self.settings, role, now)

    # -- queries --------------------------------------------------------

    def __contains__(self, streamId):
        return streamId in self._streams

    def __len__(self):
        return len(self._streams)

    def streamIds(self):
        """
        Return the ids of the streams currently open.
        """
        return list(self._streams)

    def stream(self, streamId):
        """
        Return the L{StreamState} of an open stream, or C{None}.
        """
        return self._streams.get(streamId)

    def sendBuffered(self, streamId):
        """
        Return how many bytes of stream C{streamId} wait to be sent (0 for a
        stream that is gone).
        """
        state = self._streams.get(streamId)
        return state.sendBuffered if state is not None else 0

    def receiveOverhead(self):
        """
        Return the memory (bytes) this engine's bookkeeping of received,
        not yet consumed data costs beyond the data itself.
        """
        return 0

    def pendingInput(self):
        """
        Return how many received bytes wait to be decoded (left by a
        C{receiveData} call with a C{limit}).
        """
        return len(self._unread) - self._unreadAt

    def controlBacklog(self):
        """
        Return how many control frames are queued, waiting to be sent.
        """
        return len(self._control)

    def hasOutput(self):
        """
        Return true if L{dataToSend} would return something now.
        """
        if self.closed:
            return self._finalFrames > 0
        return bool(self._control or self._ready)

    # -- commands -------------------------------------------------------

    def openStream(self, now=0.0):
        """
        Open a stream toward the peer and return its id.

        @raise SessionClosedError: the session is closing.
        @raise StreamLimitError: C{maxStreams} streams are already open.
        """
        if self.closed or not self.accepting:
            raise SessionClosedError("the session is closing; no new streams")
        if len(self._streams) >= self.settings.maxStreams:
            raise StreamLimitError(
                "maxStreams=%d streams are already open" % self.settings.maxStreams
            )
        streamId = self._allocateStreamId()
        state = self._newStream(streamId, local=True)
        state.local = True
        self._streams[streamId] = state
        self.counters.streamsOpened += 1
        before = len(self._control)
        self._openFrame(state)
        self._localControl += len(self._control) - before
        return streamId

    def sendData(self, streamId, data):
        """
        Queue C{data} (bytes) on a stream and return how many bytes the
        stream now buffers.

        Nothing limits what one stream buffers unless the
        C{maxStreamSendBuffer} setting does (it is 0, no limit, by default).

        @raise StreamClosedError: the stream is gone or its sending side has
            ended.
        @raise StreamBufferOverflow: past a nonzero C{maxStreamSendBuffer};
            nothing was queued.
        """
        state = self._writable(streamId)
        if not data:
            return state.sendBuffered
        size = len(data)
        limit = self.settings.maxStreamSendBuffer
        if limit and state.sendBuffered + size > limit:
            raise StreamBufferOverflow(
                "stream %r: writing %d bytes would buffer %d unsent bytes, "
                "over maxStreamSendBuffer=%d"
                % (streamId, size, state.sendBuffered + size, limit),
                streamId=streamId,
            )
        if state.sendQueue is None:
            state.sendQueue = deque()
        state.sendQueue.append(data)
        state.sendBuffered += size
        if not state.queued and self._canSend(state):
            state.queued = True
            self._ready.append(state)
        return state.sendBuffered

    def sendWhole(self, streamId, data, now=0.0, armedAt=None):
        """
        Fast path of L{sendData} followed by L{dataToSend} for a write of
        at most L{WHOLE_LIMIT} bytes that goes out at once as one frame:
        no stream's data queued before it and no event waiting, at most
        L{WHOLE_CONTROL} control frames queued (they go first, as
        dataToSend sends them), the stream's buffer empty and credit (MIO)
        or room in flight (BMP) for all of it.  Return the bytes to write,
        control frames and that frame joined, with the effects sendData
        and dataToSend(now=C{now}) would have; otherwise take nothing and
        return C{None}: call L{sendData}.

        @param armedAt: when the caller's timer is due (C{None}: none is
            armed).  A frame that would bring L{nextDeadline} before it
            (BMP: the first frame in flight arms the acknowledgement
            check) is left to sendData, whose caller asks nextDeadline
            after dataToSend; other frames move deadlines later only (the
            keepalive's), so the caller need not ask.
        """
        return None

    def endStream(self, streamId):
        """
        Half-close: after the buffered data, tell the peer this side sends
        no more.  Ending an already ended stream does nothing.

        @raise StreamClosedError: the stream is gone.
        """
        state = self._streams.get(streamId)
        if state is None:
            raise StreamClosedError("stream %r is closed" % (streamId,))
        if state.endPending or state.localEnded:
            return
        state.endPending = True
        if not state.queued and self._canSend(state):
            state.queued = True
            self._ready.append(state)

    def resetStream(self, streamId, code=ErrorCode.NONE):
        """
        Abort a stream now: drop its buffered data and tell the peer.  A
        stream that is already gone is ignored.
        """
        state = self._streams.pop(streamId, None)
        if state is None:
            return
        self._forgotten(state)
        self._dropQueued(state)
        before = len(self._control)
        self._resetFrame(state, code)
        self._localControl += len(self._control) - before
        self.counters.resetsSent[code] = self.counters.resetsSent.get(code, 0) + 1

    def refuseStream(self, streamId, now=0.0):
        """
        Refuse a stream the peer opened (the application has no protocol
        for it): reset it with code 4.  Like the framing's own refusals it
        spends the C{maxResets} budget; past it the session ends with a
        L{FloodError} (reported by L{takeEvents}).
        """
        if self.closed:
            return
        self.resetStream(streamId, ErrorCode.REFUSED)  # (unless already gone)
        self.counters.streamsRefused += 1
        try:
            self.guards.reset(now, self.framing, "stream %r, refused", streamId)
        except FloodError as error:
            self._fail(error)

    def consumed(self, streamId, size, now=None, prompt=True):
        """
        The application has consumed C{size} bytes of stream C{streamId}:
        return that much credit to the peer (MIO window update, BMP
        acknowledgements of the frames now wholly consumed).

        @param now: the time (default: the latest time this engine was
            given).
        @param prompt: false when the bytes were held for a paused child
            (or dropped) rather than consumed as they arrived: such a
            stream's MIO window never grows (see L{muxframe.mio}).
        """
        state = self._streams.get(streamId)
        if state is not None:
            self._returnCredit(state, size, self._latest if now is None else now,
                               prompt)

    def closeSession(self, code=ErrorCode.NONE):
        """
        End the session: queue the framing's session-close frame (if it has
        one).  After this, only the queued output remains to send.
        """
        if self.closed:
            return
        self.closed = True
        self.accepting = False
        self._ready.clear()
        self._sessionCloseFrame(code)
        self._finalFrames = len(self._control)

    def sendProbe(self):
        """
        Queue a frame every peer of this framing ignores but a line-based
        or TLS server rejects at once, so a peer that speaks something else
        shows it; return true if this framing has one (MIO does, BMP does
        not: any BMP frame names a stream).
        """
        return False

    def stopAccepting(self):
        """
        Refuse streams the peer opens from now on (graceful drain); open
        streams carry on.
        """
        self.accepting = False

    # -- input ----------------------------------------------------------

    def receiveData(self, data, now=0.0, limit=None):
        """
        Feed bytes from the connection; return the events they caused (and
        any still pending from earlier commands, see L{takeEvents}).

        With a C{limit}, at most about that many frames are handled; the
        rest of the bytes wait in the engine (L{pendingInput}) for the next
        call, which may pass C{b""}: a connection flooding tiny frames gets
        a bounded slice of work per call, like any other.

        A protocol violation ends the session: the events decoded before it
        are returned, followed by a L{ConnectionTerminated} carrying the
        L{RemoteProtocolError}, and the framing's close frame is queued.
        """
        if self.closed:
            return self.takeEvents()
        self._lastReceived = self._latest = now
        start = 0
        if self._unread:
            if data:
                data = self._unread[self._unreadAt:] + bytes(data)
            else:
                data, start = self._unread, self._unreadAt
            self._unread = b""
            self._unreadAt = 0
        if len(self._head) < HEAD:
            self._head += bytes(data[start:start + HEAD - len(self._head)])
        items = []
        try:
            used = self._decoder.receive(data, items, limit, start)
            if used < len(data):
                self._unread = data if type(data) is bytes else bytes(data)
                self._unreadAt = used
            # Only the first item can continue a frame begun earlier.
            self.guards.received(now, self._decoder.inHeader(),
                                 len(items) > 1 or bool(items and items[0][2]))
        except RemoteProtocolError as error:
            try:
                self._handleItems(items, now)
            except RemoteProtocolError:
                pass
            self._fail(error)
            return self.takeEvents()
        try:
            self._handleItems(items, now)
            owed = len(self._control) - self._localControl
            if owed > self.settings.maxControlBacklog:
                raise FloodError(
                    "the %s peer does not read: %d control frames are queued "
                    "for it, over maxControlBacklog=%d" % (
                        self.framing.upper(), owed,
                        self.settings.maxControlBacklog))
        except RemoteProtocolError as error:
            self._fail(error)
        return self.takeEvents()

    def receivePayload(self, data, now=0.0):
        """
        Fast path of L{receiveData} for bytes wholly inside the payload of
        the data frame being received (most reads of a bulk transfer):
        account for them and return the stream's id; the caller delivers
        C{data} as that stream's data, as for a L{DataReceived} event.
        Otherwise take nothing and return C{None}: call L{receiveData}.
        """
        if self.closed or self._unread or self._events or len(self._head) < HEAD:
            return None
        decoder = self._decoder
        size = len(data)
        frame = decoder.payloadWithin(size)
        if frame is None:
            return None
        state = self._streams.get(frame.streamId)
        if state is None or not self._payloadPiece(state, size):
            return None
        decoder.skipPayload(size)
        self._lastReceived = self._latest = now
        state.bytesReceived += size
        self.counters.bytesReceived += size
        return frame.streamId

    def receiveCrossing(self, data, now=0.0):
        """
        Fast path of L{receiveData} for a read that ends the payload of the
        data frame being received and goes on into the next data frame of
        the same stream, which ends at or past the read's end (a bulk
        transfer's read across a frame boundary): handle it, with the
        effects L{receiveData} would have, and return C{(streamId,
        payload)}, the two frames' payload bytes of the read joined, for
        the caller to deliver as for a L{DataReceived} event (receiveData
        reports them as two).  Otherwise take nothing and return C{None}:
        call L{receiveData}.
        """
        return None

    def receiveWhole(self, data, now=0.0):
        """
        Fast path of L{receiveData} for a read made of whole frames of the
        kinds a small message brings (one data frame of an open stream; for
        BMP, acknowledgements before it): handle them, with the effects
        L{receiveData} would have, and return C{(streamId, payload)}, the
        data to deliver as that stream's (C{(None, None)} if there is none);
        the caller delivers it as for a L{DataReceived} event.  Otherwise
        take nothing and return C{None}: call L{receiveData}.
        """
        return None

    def _wholeReady(self):
        # True if nothing is half-received, pending or owed beyond the
        # limits receiveData checks: receiveWhole may take a read.
        return not (self.closed or self._unread or self._events
                    or len(self._head) < HEAD or not self._decoder.idle()
                    or len(self._control) - self._localControl
                    > self.settings.maxControlBacklog)

    def _payloadPiece(self, state, size):
        """
        Return true if C{size} more payload bytes of C{state}'s current
        frame may take the fast path, having accounted for them; false to
        leave them to the frame handling.
        """
        return False

    def hasEvents(self):
        """
        Return true if events wait for L{takeEvents}.
        """
        return bool(self._events)

    def takeWritesEnded(self):
        """
        Return and forget the ids of the streams whose end of stream was
        put into the output since the last call.
        """
        ended = self._writesEnded
        if ended:
            self._writesEnded = []
        return ended

    def takeEvents(self):
        """
        Return and forget the events caused since the last call: commands
        and L{dataToSend} can cause some too (a stream finishing when its
        end is sent, for instance).
        """
        events = self._events
        if events:
            self._events = []
        return events

    def foreignHint(self):
        """
        Return what the peer's first bytes look like if they are not this
        framing (C{"this looks like an HTTP request; this port speaks
        MIO"}), or C{None}.
        """
        return hint(self._head, self.framing, self.role)

    def firstBytes(self):
        """
        Return the first bytes received on this connection (up to
        L{muxframe.sniff.HEAD}).
        """
        return self._head

    def _fail(self, error):
        if not self.closed:
            foreign = self.foreignHint()
            if foreign is not None:
                # The peer does not speak this framing: say what it speaks.
                error.hint = foreign
                error.args = ("%s (%s; first bytes %r)" % (
                    error.args[0] if error.args else error, foreign,
                    self._head[:16]),)
            self.closeSession(error.code)
            self._events.append(ConnectionTerminated(error.code, error))

    def tick(self, now):
        """
        Run the timers due at C{now}; return the events they caused.
        """
        if self.closed:
            return self.takeEvents()
        self._latest = now
        self.guards.streams(len(self._streams), now)
        error = self.guards.expired(now, self._lastReceived)
        if error is not None:
            self.closeSession(ErrorCode.NONE)
            self._events.append(ConnectionTerminated(ErrorCode.NONE, error))
        else:
            self._tickFraming(now)
        return self.takeEvents()

    def nextDeadline(self):
        """
        Return the time of the next timer L{tick} must run, or C{None}.
        """
        if self.closed:
            return None
        guards = self.guards
        guards.streams(len(self._streams), self._latest)
        deadline = guards.deadline(self._lastReceived)
        framing = self._framingDeadline()
        if framing is not None and (deadline is None or framing < deadline):
            return framing
        return deadline

    # -- output ---------------------------------------------------------

    def dataToSend(self, limit=256 * 1024, now=0.0):
        """
        Return a list of byte strings to write, control frames first, then
        data frames round-robin across streams, up to about C{limit} bytes of
        data (one frame more at most).
        """
        if now > self._latest:
            self._latest = now
        out = self._control
        self._control = []
        self._localControl = 0
        if self.closed:
            # The session-close frame is the last one on the wire: what
            # streams queue after it (a child answering its end) is dropped.
            final, self._finalFrames = self._finalFrames, 0
            self._ready.clear()
            return out[:final]
        ready = self._ready
        size = 0
        emit = self._emit
        while ready and size < limit:
            state = ready.popleft()
            state.queued = False
            size += emit(state, out, now)
            if not state.queued and self._canSend(state):
                state.queued = True
                ready.append(state)
        if out:
            self._lastSent = now
        return out

    def controlToSend(self, now=0.0):
        """
        If queued control frames are all the output there is (no stream's
        data ready to frame, no event waiting, the session open), return
        them joined, with the effects L{dataToSend} would have; otherwise
        take nothing and return C{None}.  (The acknowledgement or credit a
        read earns, for a child that does not answer it: written without
        the rest of a flush.)
        """
        control = self._control
        if not control or self._ready or self._events or self.closed:
            return None
        self._control = []
        self._localControl = 0
        if now > self._latest:
            self._latest = now
        self._lastSent = now
        return control[0] if len(control) == 1 else b"".join(control)

    # -- shared helpers for subclasses ----------------------------------

    def _withControl(self, frame):
        # sendWhole's result: the queued control frames, then frame.
        control = self._control
        if not control:
            return frame
        control.append(frame)
        self._control = []
        self._localControl = 0
        return b"".join(control)

    def _dataOf(self, streamId, now):
        # Data of stream streamId is framed at now: note when streams mix
        # (the framings test _sharedAt against SHARED_TIME inline).
        if streamId != self._lastDataStream:
            if self._lastDataStream is not None:
                self._sharedAt = now
            self._lastDataStream = streamId

    def _writable(self, streamId):
        state = self._streams.get(streamId)
        if state is None:
            raise StreamClosedError("stream %r is closed" % (streamId,))
        if state.endPending or state.localEnded:
            raise StreamClosedError(
                "stream %r: its sending side has ended" % (streamId,)
            )
        return state

    def _dropQueued(self, state):
        state.sendQueue = None
        state.sendBuffered = 0
        state.endPending = False
        if state.queued:
            state.queued = False
            try:
                self._ready.remove(state)
            except ValueError:
                pass

    def _requeue(self, state):
        if not state.queued and self._canSend(state):
            state.queued = True
            self._ready.append(state)

    def _finish(self, state, error=None):
        """
        Remove a stream and report it closed.
        """
        if self._streams.pop(state.streamId, None) is not None:
            self._forgotten(state)
            self._dropQueued(state)
            self._events.append(StreamClosed(state.streamId, error))

    def _forgotten(self, state):
        """
        C{state} has just left the stream table (a framing remembers the
        ids the peer used, so that they never name a new stream).
        """

    def _remoteReset(self, state, code, errorClass, message):
        self.counters.resetsReceived[code] = (
            self.counters.resetsReceived.get(code, 0) + 1
        )
        self._finish(state, errorClass(message, code, state.streamId))
