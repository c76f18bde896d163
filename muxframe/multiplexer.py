"""
The Twisted adapter: L{Multiplexer} feeds a connection's bytes to a framing's
sans-IO engine and turns its events into calls on one child protocol per
stream; L{MultiplexerFactory} builds it.

Output is scheduled here and framed by the engine: control frames first,
then data round-robin, written with C{writeSequence} while the connection's
transport accepts more (the Multiplexer is the transport's streaming
producer), so small messages never queue behind a bulk stream's backlog.
A small write with nothing queued before it is framed by the engine at once
(sendWhole) and written inside the child's write, with the credit owed.

On a plain TCP connection of Twisted's own the multiplexer sends to the
socket itself while the transport buffers nothing (Twisted's write would
wait for the next reactor turn): what one call from the reactor writes is
gathered and sent together as the call ends (or sooner: every 64 KiB, and
for engines with gatherBulk, BMP's, once the direct allowance is filled:
two bulk frames a sendmsg), at most DIRECT_LIMIT bytes a call directly;
everything else goes through the transport
as before, behind what it holds, so the order on the wire and backpressure
are Twisted's.
"""

from zope.interface import implementer

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from .allocator import warmAllocator
from .bmp import BmpEngine
from .describe import addressText
from .directsend import (
    directSocket as _directSocket, sendOrWrite, transportIdle,
)
from .errors import (
    ErrorCode,
    LocalProtocolError,
    MuxframeError,
    RemoteProtocolError,
    SessionClosedError,
    StreamBufferOverflow,
)
from .logthrottle import LogThrottle, logger, throttled
from .events import (
    ConnectionTerminated,
    DataReceived,
    StreamClosed,
    StreamEnded,
    StreamOpened,
)
from .mio import MioEngine
from .settings import Settings
from .stream import (
    PAUSED_BY_BUFFER,
    PAUSED_BY_TRANSPORT,
    StreamAddress,
    StreamTransport,
    abortedReason,
    closedReason,
    heldCost,
)

ENGINES = {"mio": MioEngine, "bmp": BmpEngine}

# Data bytes handed to the connection's transport per scheduling round; the
# transport pauses us past its own buffer size, so this only bounds one turn.
WRITE_QUANTUM = 256 * 1024

# Reads at least this large may take the fast path (wholly inside a data
# frame's payload); smaller ones, small messages, are not worth the check.
FAST_READ = 4096

# Output of at most JOIN_CHUNKS pieces and JOIN_LIMIT bytes (small messages,
# credit, acknowledgements) is joined into one transport.write; larger
# output goes to writeSequence uncopied (Twisted joins it as it sends).
JOIN_CHUNKS = 8
JOIN_LIMIT = 4096

# Bytes added to the connection transport's SEND_LIMIT for frame headers.
SEND_SLACK = 4096

# Bytes a multiplexer on a plain TCP (or UNIX) connection may send straight
# to its socket between two calls from the reactor (a read, the transport
# resuming it, a timer): two bulk frames.  Past them output waits in the
# transport, which pauses the multiplexer, so one connection holds the
# reactor for about a turn of Twisted's own writes, never for the kernel's
# whole send buffer.  Inside such a call output is gathered and sent as
# one piece when the call ends (or as soon as DIRECT_BULK bytes are
# gathered; see gatherBulk below), so everything one call writes leaves
# together, as it does
# through Twisted's own buffer: sending its first frame at once and the
# rest a reactor turn later would let the peer act on the first alone
# (close the session on a refused stream, say, never reading an open that
# followed it).  Outside such calls (a child written to by another
# connection's read) small output goes straight only while the allowance
# the last such call left is not spent (any small direct send spends it):
# the rest waits in the transport, which joins it.  For an engine with
# gatherBulk (BMP), gathered output is sent when it fills what the
# allowance left can send, so two bulk frames leave in one sendmsg, not
# one each: a receiver faster than its sender drains the socket and sleeps
# between sends, and each send that finds it asleep wakes it (an IPI to
# its CPU, paid by the sender's system call).
DIRECT_LIMIT = 2 * (WRITE_QUANTUM + SEND_SLACK)
DIRECT_BULK = 64 * 1024

# Once a connection reads its framing's readSize at a time, the allocator
# is warmed for blocks of this many reads (muxframe.allocator).
READ_WARMUP = 4

# Seconds a closing connection may take to flush before it is aborted.
CLOSE_GRACE = 5.0

# The log throttle of multiplexers built without a MultiplexerFactory.
_throttle = LogThrottle()

_END = "end"

# Why reading from the connection is paused: paused children hold too much,
# the last read is still being handled, a slice at a time, or the peer
# spends its flood budgets fast and waits floodPause for its next slice.
READ_HELD = 1
READ_SLICED = 2
READ_PACED = 4

# Frames handled per reactor turn on one connection: a read of tiny frames
# (a flood) is handled over several turns, so other connections wait for a
# slice of it at most, never for all of it.  A slice that opened several
# streams (each builds a child protocol) makes the next ones smaller, down
# to MIN_FRAMES_PER_TURN; slices grow back as streams stop opening.
FRAMES_PER_TURN = 32
MIN_FRAMES_PER_TURN = 4

# Frames handled per slice on a connection whose peer spends its flood
# budgets fast (one slice per floodPause): small, so a slice delays other
# connections little; honest peers keep FRAMES_PER_TURN.  A paced slice
# that opened a stream (a child protocol built: the costly part of a rapid
# reset) is followed by slices of PACED_OPENING frames, an open and its
# reset.
PACED_FRAMES = 8
PACED_OPENING = 2


def _coalesced(chunks):
    """
    Return C{chunks} (byte strings) with each run of small ones joined, so
    that one C{sendmsg} of many small frames stays within the kernel's
    limit of pieces; a large piece (a bulk frame's payload) is not copied.
    """
    out = []
    run = []
    for chunk in chunks:
        if len(chunk) < JOIN_LIMIT:
            run.append(chunk)
            continue
        if run:
            out.append(run[0] if len(run) == 1 else b"".join(run))
            run = []
        out.append(chunk)
    if run:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


def _engineClass(framing):
    try:
        return ENGINES[framing]
    except (KeyError, TypeError):
        raise ValueError(
            "unknown framing %r: choose one of %s" % (framing, ", ".join(sorted(ENGINES)))
        )


@implementer(IPushProducer)
class Multiplexer(Protocol):
    """
    One multiplexed connection.

    @ivar engine: the framing's sans-IO engine.
    @ivar counters: the session's L{muxframe.engine.Counters}.
    @ivar lostReason: once the connection is lost, why (a L{Failure}): the
        protocol error, the peer's session close or the local close when
        there was one, else the transport's own reason.
    """

    log = logger()

    def __init__(self, childFactory=None, framing="mio", role="server",
                 settings=None, reactor=None):
        self.childFactory = childFactory
        self.framing = framing
        self.role = role
        self.settings = settings if settings is not None else Settings()
        self._engineClass = _engineClass(framing)
        if role not in ("client", "server"):
            raise ValueError("role must be 'client' or 'server', not %r" % (role,))
        self._reactor = reactor
        self.engine = None
        self._growReadAt = None
        # The open streams by id, and those the engine has forgotten whose
        # child has yet to take its held close: a new stream may reuse an id
        # whose old transport still waits, and must never alias it.
        self._streams = {}
        self._closing = set()
        self._producers = set()
        self._bufferPaused = set()
        self._endingWrites = set()
        self._transportPaused = False
        self._readPausedBy = 0
        self._losing = False
        self._held = 0
        self._heldData = 0
        self._busy = False
        self._flushAgain = False
        self._timer = None
        self._timerAt = None
        self._sliceCall = None
        self._sliceLimit = FRAMES_PER_TURN
        self._pressed = False
        self._pacedLimit = PACED_FRAMES
        self._accepted = 0
        self._socket = None
        self._direct = DIRECT_LIMIT
        self._gather = None
        self._gathered = 0
        self._closeTimer = None
        self._terminated = None
        self._drainDeferreds = []
        self._drainTimer = None
        self._lostDeferreds = []
        self.disconnected = False
        self.lostReason = None

    # -- helpers --------------------------------------------------------

    @property
    def reactor(self):
        if self._reactor is None:
            from twisted.internet import reactor
            self._reactor = reactor
        return self._reactor

    @property
    def counters(self):
        """
        The session's counters (bytes, frames, streams, stalls, resets).
        """
        return self.engine.counters

    def streamCount(self):
        """
        Return how many streams are open (including those the peer has
        closed whose child has not yet been told, as it paused reading).
        """
        return len(self._streams) + len(self._closing)

    def _isCurrent(self, stream):
        # True while the engine's stream of this id is this transport's.
        return self._streams.get(stream.streamId) is stream

    def streamCounters(self, streamId):
        """
        Return one open stream's figures: payload bytes sent and received,
        stalls on credit (MIO window or BMP in-flight limit), bytes waiting
        to be sent and bytes held for a paused child; C{None} once the
        stream is gone.
        """
        stream = self._streams.get(streamId)
        state = self.engine.stream(streamId) if self.engine is not None else None
        if stream is None or state is None:
            return None
        held = stream._heldBytes()
        return {
            "bytesSent": state.bytesSent,
            "bytesReceived": state.bytesReceived,
            "creditStalls": state.creditStalls,
            "sendBuffered": state.sendBuffered,
            "held": held,
        }

    def heardFromPeer(self):
        """
        Return true once the peer has sent at least one frame of this
        framing and nothing that ended the session or looks like another
        protocol: it speaks the framing.
        """
        engine = self.engine
        return (engine is not None and self._terminated is None
                and engine.counters.framesReceived > 0
                and engine.foreignHint() is None)

    def sendProbe(self):
        """
        Send a frame that every peer of this framing ignores and that most
        other servers answer with an error (MIO only; see
        L{muxframe.engine.Engine.sendProbe}); return true if one was sent.
        """
        if self.engine is None or self.disconnected:
            return False
        sent = self.engine.sendProbe()
        if sent:
            self._flush()
        return sent

    def allStreamsEnded(self):
        """
        Called when the last open stream has ended (and the connection is
        still up).  Does nothing here; the client endpoint closes its shared
        connection when nothing uses it any more.
        """

    def _now(self):
        # Replaced by the reactor's own seconds() once connected (one call
        # less on every read and flush).
        return self.reactor.seconds()

    def _logThrottle(self):
        # Repeated warnings are limited per factory (all its connections),
        # so a flood of bad connections writes a few lines, not one each.
        throttle = getattr(getattr(self, "factory", None), "logThrottle", None)
        return throttle if throttle is not None else _throttle

    # -- IProtocol ------------------------------------------------------

    def connectionMade(self):
        self._now = self.reactor.seconds
        self.engine = self._engineClass(self.role, self.settings, self._now())
        self.transport.registerProducer(self, True)
        # Many small frames (credit, acknowledgements, short messages) must
        # not wait for Nagle's algorithm; Blazeio disables it too.
        # Twisted sends at most SEND_LIMIT (128 KiB) per send(): a frame of
        # a 256 KiB write plus its header would take a third send() for the
        # header's bytes (one more reactor turn per frame).  Room for the
        # headers keeps it to the two a raw 256 KiB write takes.
        limit = getattr(self.transport, "SEND_LIMIT", None)
        if type(limit) is int:
            self.transport.SEND_LIMIT = limit + SEND_SLACK
        self._socket = _directSocket(self.transport)
        # The framing's read size (BMP: a whole 256 KiB frame a read), set
        # at the first full read, once the peer sends in bulk: it is also
        # the size past which Twisted pauses this producer, and a sender
        # reading only acknowledgements keeps its 64 KiB.
        readSize = self.engine.readSize
        size = getattr(self.transport, "bufferSize", None)
        if readSize and type(size) is int and size < readSize:
            self._growReadAt = size
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            try:
                setNoDelay(True)
            except Exception:
                pass
        self.log.debug(
            "{framing} {role} session starting on the connection with {peer}",
            framing=self.framing, role=self.role,
            peer=addressText(self.transport.getPeer()),
        )
        self._scheduleTimer()

    def dataReceived(self, data):
        self._gathering(self._dataReceived, data)

    def _dataReceived(self, data):
        engine = self.engine
        if engine is None or self.disconnected:
            return
        now = self._now()
        if not self._readPausedBy:
            if len(data) >= FAST_READ:
                if len(data) == self._growReadAt:
                    self._growReadAt = None
                    self.transport.bufferSize = engine.readSize
                    # Reads that large, and their slices, would otherwise
                    # fault fresh pages in for each read (muxframe.allocator).
                    warmAllocator(READ_WARMUP * engine.readSize)
                # Bytes wholly inside one data frame's payload (most reads
                # of a bulk transfer) go straight to the child.
                streamId = engine.receivePayload(data, now)
                if streamId is not None:
                    self._deliverRead(streamId, data)
                    return
                # (MIO) one across a frame boundary of the same stream.
                crossing = engine.receiveCrossing(data, now)
                if crossing is not None:
                    self._deliverRead(crossing[0], crossing[1])
                    return
            # A read of one whole small message (and, BMP, acknowledgements
            # before it): no decoder items, event objects or slicing.
            whole = engine.receiveWhole(data, now)
            if whole is not None:
                self._deliverRead(whole[0], whole[1])
                return
        self._busy = True
        accepted = self._accepted
        if self._readPausedBy & READ_PACED:
            limit = 0  # a read already polled while paced waits whole
        elif self._pressed:
            limit = self._pacedLimit
        else:
            limit = self._sliceLimit
        try:
            self._process(engine.receiveData(data, now, limit))
        finally:
            self._busy = False
        if self._pressed:
            self._pacedLimit = PACED_OPENING if self._accepted > accepted else PACED_FRAMES
        if self._accepted - accepted > MIN_FRAMES_PER_TURN // 2:
            self._sliceLimit = max(MIN_FRAMES_PER_TURN, self._sliceLimit // 2)
        elif self._sliceLimit < FRAMES_PER_TURN:
            self._sliceLimit *= 2
        self._checkHeld()
        self._flush()
        self._checkSliced(now)

    def _deliverRead(self, streamId, data):
        # What _process does for one DataReceived event, without the event
        # (nothing for a streamId of None); a flush only if there is
        # something to do (deadlines only move later while data arrives: an
        # armed timer re-arms itself).
        stream = self._streams.get(streamId)
        engine = self.engine
        held = False
        self._busy = True
        try:
            if stream is None:
                pass
            elif stream._discard:
                engine.consumed(streamId, len(data), None, False)
            elif stream._readPaused or stream._pending:
                self._holding(stream, data)
                held = True
            else:
                # The data is consumed as it is delivered: its credit (BMP:
                # acknowledgement), queued first, goes out ahead of the
                # child's answer and in the same write (sendWhole).
                engine.consumed(streamId, len(data))
                try:
                    stream.protocol.dataReceived(data)
                except BaseException:
                    self._childRaised(stream)
        finally:
            self._busy = False
        if held:
            self._checkHeld()
        if (engine.hasOutput() or engine.hasEvents() or self._bufferPaused
                or self._endingWrites):
            # Only control frames (BMP: the acknowledgement of what was
            # consumed, the child not answering): written as they are; the
            # rest of a flush has nothing to do (no stream paused or ending,
            # no event, deadlines only later).
            control = None
            if not (self._transportPaused or self._bufferPaused or self._endingWrites
                    or self.disconnected):
                control = engine.controlToSend(self._now())
            if control is not None:
                self._write(control)
            else:
                self._flush()

    def _checkSliced(self, now):
        # Part of the last read waits: stop reading and handle the next
        # slice on the next turn, after the other connections' reads.  A
        # peer spending its flood budgets fast waits floodPause instead,
        # its unread bytes too: the flood gets a bounded share of the
        # reactor until it has spent its budget and is closed.
        engine = self.engine
        if self.disconnected or engine.closed:
            self._resumeReading(READ_SLICED)
            return
        pause = self.settings.floodPause
        self._pressed = pressed = bool(pause) and engine.guards.pressed(now)
        if pressed and not self._readPausedBy & READ_PACED:
            self._pauseReading(READ_PACED)
            if self._sliceCall is not None and self._sliceCall.active():
                self._sliceCall.cancel()
            self._sliceCall = self.reactor.callLater(pause, self._nextSlice)
        if not engine.pendingInput():
            self._resumeReading(READ_SLICED)
            return
        self._pauseReading(READ_SLICED)
        if self._sliceCall is None and not self._readPausedBy & READ_HELD:
            self._sliceCall = self.reactor.callLater(0, self._nextSlice)

    def _nextSlice(self):
        self._sliceCall = None
        self._resumeReading(READ_PACED)
        if (not self.disconnected and not self._readPausedBy & READ_HELD
                and self.engine.pendingInput()):
            self.dataReceived(b"")

    def connectionLost(self, reason=None):
        if self.disconnected:
            return
        self.disconnected = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for timer in (self._drainTimer, self._closeTimer, self._sliceCall):
            if timer is not None and timer.active():
                timer.cancel()
        self._drainTimer = self._closeTimer = self._sliceCall = None
        self._gather = None
        if self.engine is not None:
            self.engine.closed = True
        if self._terminated is not None:
            reason = self._terminated
        self.lostReason = reason if reason is not None else Failure(
            ConnectionLost("the multiplexed connection was lost"))
        if reason is None or reason.check(ConnectionDone):
            # A clean close of the connection is no clean end for streams
            # that had not ended.
            reason = Failure(ConnectionLost(
                "the multiplexed connection closed before the stream ended"))
        streams = list(self._streams.values()) + list(self._closing)
        self._streams.clear()
        self._closing.clear()
        for stream in streams:
            self._callChild(stream, stream._lost, reason)
        self.log.debug(
            "{framing} session lost ({count} streams open): {reason}",
            framing=self.framing, count=len(streams),
            reason=self.lostReason.getErrorMessage(),
        )
        # Whoever keeps this connection forgets it before drain()'s and
        # whenLost()'s Deferreds fire: their callbacks (a listening port's
        # stopListening, say) may look, and must find it gone.
        try:
            self._connectionGone()
        finally:
            drained, self._drainDeferreds = self._drainDeferreds, []
            lost, self._lostDeferreds = self._lostDeferreds, []
            for d in drained + lost:
                d.callback(None)

    def _connectionGone(self):
        """
        Called by L{connectionLost} once every stream is lost, before the
        Deferreds of L{drain} and L{whenLost} fire: a subclass whose owner
        keeps a list of connections removes this one here.
        """

    # -- IPushProducer (the connection's transport tells us to write) ---

    def pauseProducing(self):
        if self._transportPaused:
            return
        self._transportPaused = True
        for stream in list(self._producers):
            stream._pauseProducer(PAUSED_BY_TRANSPORT)

    def resumeProducing(self):
        if not self._transportPaused:
            return
        self._transportPaused = False
        self._gathering(self._resumed)

    def _resumed(self):
        self._flush()
        if not self._transportPaused:
            for stream in list(self._producers):
                stream._unpauseProducer(PAUSED_BY_TRANSPORT)

    def stopProducing(self):
        pass  # connectionLost follows

    # -- public API -----------------------------------------------------

    def openStream(self, factory):
        """
        Open a stream toward the peer, with a child protocol built by
        C{factory.buildProtocol(StreamAddress)}.

        @return: a Deferred firing with the child protocol once it is
            connected to the stream, or failing with L{SessionClosedError},
            L{muxframe.errors.StreamLimitError} or the factory's error.
        """
        if self.engine is None or self.disconnected or self.engine.closed:
            return fail(SessionClosedError("the multiplexed connection is not open"))
        try:
            streamId = self.engine.openStream(self._now())
        except MuxframeError as error:
            return fail(error)
        address = StreamAddress(self.transport.getPeer(), streamId, self.framing)
        try:
            protocol = factory.buildProtocol(address)
        except BaseException:
            failure = Failure()
            self.engine.resetStream(streamId, ErrorCode.INTERNAL)
            self._flush()
            return fail(failure)
        if protocol is None:
            self.engine.resetStream(streamId, ErrorCode.REFUSED)
            self._flush()
            return fail(LocalProtocolError("%r built no protocol for the stream" % (factory,)))
        stream = StreamTransport(self, streamId, protocol)
        self._streams[streamId] = stream
        self.log.debug("opened stream {streamId}", streamId=streamId)
        self._callChild(stream, protocol.makeConnection, stream)
        self._flush()
        return succeed(protocol)

    def drain(self, timeout=None, code=ErrorCode.NONE):
        """
        Stop accepting and opening streams, let the open ones finish, then
        close the connection: when the last stream ends, or after
        C{timeout} seconds (default: the C{drainTimeout} setting), when
        streams still open are lost with L{SessionClosedError}.

        @return: a Deferred that fires when the connection is closed.
        """
        from twisted.internet.defer import Deferred
        d = Deferred()
        if self.disconnected:
            d.callback(None)
            return d
        self._drainDeferreds.append(d)
        self.engine.stopAccepting()
        if timeout is None:
            timeout = self.settings.drainTimeout
        if self._drainTimer is None:
            self._drainTimer = self.reactor.callLater(timeout, self._drainExpired, code)
        self._drainCode = code
        self._checkDrained()
        return d

    def close(self, code=ErrorCode.NONE):
        """
        End the session now: every open stream is lost.  MIO sends the peer
        FIN with C{code}.
        """
        if self.disconnected or self.engine is None:
            return
        if self._terminated is None:
            self._terminated = Failure(SessionClosedError(
                "session closed locally (code %s)" % ErrorCode.describe(code)))
        self.engine.closeSession(code)
        self._flush()
        self._loseTransport()

    def _loseTransport(self):
        try:
            # What this call gathered goes before the close.
            self._releaseGathered()
        finally:
            # A TLS transport does not shut down while a producer is
            # registered.
            self._losing = True
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def whenLost(self):
        """
        Return a Deferred that fires when the connection is lost.
        """
        from twisted.internet.defer import Deferred
        d = Deferred()
        if self.disconnected:
            d.callback(None)
        else:
            self._lostDeferreds.append(d)
        return d

    # -- draining -------------------------------------------------------

    def _streamGone(self):
        self._checkDrained()
        if not self._streams and not self._closing and not self.disconnected:
            self.allStreamsEnded()

    def _checkDrained(self):
        if (self._drainDeferreds and not self._streams and not self._closing
                and not self.disconnected):
            self.close(getattr(self, "_drainCode", ErrorCode.NONE))

    def _drainExpired(self, code):
        self._drainTimer = None
        if self.disconnected:
            return
        if self.streamCount():
            self._terminated = Failure(SessionClosedError(
                "drain deadline passed with %d streams open" % self.streamCount()))
            self.log.info(
                "drain deadline passed; closing {count} open streams",
                count=self.streamCount(),
            )
            code = ErrorCode.TRANSPORT_CLOSED if code == ErrorCode.NONE else code
        self.close(code)

    # -- events ---------------------------------------------------------

    def _process(self, events):
        streams = self._streams
        engine = self.engine
        for event in events:
            kind = type(event)
            if kind is DataReceived:
                stream = streams.get(event.streamId)
                if stream is None:
                    continue
                data = event.data
                if stream._discard:
                    engine.consumed(event.streamId, len(data), None, False)
                elif stream._readPaused or stream._pending:
                    self._holding(stream, data)
                else:
                    # Consumed as delivered (see _deliverRead).
                    engine.consumed(event.streamId, len(data))
                    self._callChild(stream, stream.protocol.dataReceived, data)
            elif kind is StreamOpened:
                self._accept(event.streamId)
            elif kind is StreamEnded:
                stream = streams.get(event.streamId)
                if stream is not None:
                    if (stream._readPaused or stream._pending) and not stream._discard:
                        stream._hold(_END)
                    else:
                        self._callChild(stream, stream._readEnded)
            elif kind is StreamClosed:
                stream = streams.get(event.streamId)
                if stream is not None:
                    if (stream._readPaused or stream._pending) and not stream._discard:
                        # The engine has forgotten the id: from now on it may
                        # name a new stream, while this one waits.
                        stream._hold(event)
                        del streams[event.streamId]
                        self._closing.add(stream)
                    else:
                        self._closeStream(stream, event.error)
            elif kind is ConnectionTerminated:
                self._connectionTerminated(event)

    def _accept(self, streamId):
        if len(self._streams) + len(self._closing) >= self.settings.maxStreams:
            # Streams the peer reset whose children still hold data count
            # too, or open-and-reset would grow children without bound.
            self.engine.refuseStream(streamId, self._now())
            return
        address = StreamAddress(self.transport.getPeer(), streamId, self.framing)
        protocol = None
        if self.childFactory is not None:
            try:
                protocol = self.childFactory.buildProtocol(address)
            except BaseException:
                self.log.failure("childFactory failed for stream {streamId}",
                                 streamId=streamId)
        if protocol is None:
            self.log.debug(
                "refused stream {streamId} from {peer}: no child protocol",
                streamId=streamId, peer=addressText(address.address),
            )
            self.engine.refuseStream(streamId, self._now())
            return
        stream = StreamTransport(self, streamId, protocol)
        self._streams[streamId] = stream
        self._accepted += 1
        self._callChild(stream, protocol.makeConnection, stream)

    def _closeStream(self, stream, error):
        self._drop(stream)
        self._forget(stream)
        if stream._writeLostPending:
            self._callChild(stream, stream._writeEnded)
        self._callChild(stream, stream._lost, closedReason(error))
        if error is not None:
            self.log.debug("stream {streamId} ended: {error}",
                           streamId=stream.streamId, error=error)
        self._streamGone()

    def _drop(self, stream):
        # Remove the stream from the table, or from those closing; another
        # stream that now has its id stays.
        if self._isCurrent(stream):
            del self._streams[stream.streamId]
        self._closing.discard(stream)

    def _forget(self, stream):
        self._producers.discard(stream)
        self._bufferPaused.discard(stream)
        self._endingWrites.discard(stream)
        if stream._pending:
            stream._dropPending()

    def _connectionTerminated(self, event):
        error = event.error
        if error is not None:
            self._terminated = Failure(error)
            if isinstance(error, RemoteProtocolError):
                level, kind, text = LogLevel.warn, "protocol error", "protocol error from"
            else:
                level, kind, text = LogLevel.info, "timeout", "timed out:"
            throttled(self.log, self._logThrottle(), self._now(), level, kind,
                      "{framing} " + text + " {peer}, closing: {error}",
                      framing=self.framing, peer=addressText(self.transport.getPeer()),
                      error=error)
        elif self._terminated is None:
            self._terminated = Failure(ConnectionLost(
                "the peer closed the session (code %s)" % ErrorCode.describe(event.code)))
        if self._closeTimer is None:
            self._closeTimer = self.reactor.callLater(0, self._closeTransport)

    def _closeTransport(self):
        self._closeTimer = None
        if not self.disconnected:
            self._gathering(self._flush)
            self._loseTransport()
            # A peer that never reads must not hold the socket open.
            self._closeTimer = self.reactor.callLater(
                CLOSE_GRACE, self._abortTransport)

    def _abortTransport(self):
        self._closeTimer = None
        if not self.disconnected:
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()

    def _callChild(self, stream, method, *args):
        try:
            method(*args)
        except BaseException:
            self._childRaised(stream)

    def _childRaised(self, stream):
        # Called from the except block of a call into stream's child.
        self.log.failure(
            "child protocol of stream {streamId} raised; aborting the stream",
            streamId=stream.streamId,
        )
        if not stream.disconnected:
            if self._isCurrent(stream):
                self.engine.resetStream(stream.streamId, ErrorCode.INTERNAL)
            self._drop(stream)
            self._forget(stream)
            try:
                stream._lost(Failure())
            except BaseException:
                self.log.failure("connectionLost of stream {streamId} raised",
                                 streamId=stream.streamId)
            self._streamGone()

    # -- receive-side holding (paused children) -------------------------

    def _pauseReading(self, reason):
        was = self._readPausedBy
        self._readPausedBy = was | reason
        if not was:
            self.transport.pauseProducing()

    def _resumeReading(self, reason):
        was = self._readPausedBy
        if was & reason:
            self._readPausedBy = was & ~reason
            # A transport being lost must not be asked to read again.
            if not (self._readPausedBy or self.disconnected or self._losing):
                self.transport.resumeProducing()

    def _checkHeld(self):
        # What paused children hold costs its real memory: the held pieces
        # and the framing's bookkeeping of them (BMP keeps each frame's sid
        # until it is acknowledged).
        if self.engine is None:
            return
        held = self.heldMemory()
        limit = self.settings.sessionBufferSize
        if held > limit:
            self._pauseReading(READ_HELD)
        elif held <= limit // 2 and self._readPausedBy & READ_HELD:
            self._resumeReading(READ_HELD)
            if self.engine.pendingInput() and self._sliceCall is None:
                self._sliceCall = self.reactor.callLater(0, self._nextSlice)

    def heldBytes(self):
        """
        Return how many received bytes are held for paused children.
        """
        return self._heldData

    def heldMemory(self):
        """
        Return the memory (bytes) what is held for paused children costs,
        as counted against C{sessionBufferSize}: the held data with its
        objects' overhead, and the framing's bookkeeping of those frames.
        """
        overhead = self.engine.receiveOverhead() if self.engine is not None else 0
        return self._held + overhead

    @property
    def readingPaused(self):
        """
        True while this connection does not read from its transport because
        paused children hold C{sessionBufferSize}.
        """
        return bool(self._readPausedBy & READ_HELD)

    def _holding(self, stream, data):
        self._held += stream._hold(data)
        self._heldData += len(data)

    def _consumed(self, stream, size):
        # Credit for a stream whose id now names another stream is nobody's.
        # These bytes were held for a paused child: not prompt, so they
        # never grow the stream's window.
        if size and self._isCurrent(stream):
            self.engine.consumed(stream.streamId, size, self._now(), False)

    def _released(self, stream, size, cost):
        if cost:
            self._held -= cost
            self._heldData -= size
            self._consumed(stream, size)
            self._checkHeld()

    def _deliverPending(self, stream):
        self._busy = True
        try:
            while not stream._readPaused or stream._discard:
                # Read it again each time: the child may have dropped what
                # is held (loseConnection from dataReceived or at its end).
                pending = stream._pending
                if not pending:
                    break
                item = pending.popleft()
                kind = type(item)
                if kind is bytes or kind is bytearray:
                    self._held -= heldCost(item)
                    self._heldData -= len(item)
                    if not stream._discard:
                        self._callChild(stream, stream.protocol.dataReceived,
                                        item if kind is bytes else bytes(item))
                    self._consumed(stream, len(item))
                elif item is _END:
                    self._callChild(stream, stream._readEnded)
                else:
                    self._closeStream(stream, item.error)
                    break
                if stream.disconnected:
                    break
        finally:
            self._busy = False
        self._checkHeld()
        self._flush()

    # -- sending --------------------------------------------------------

    def _streamWrite(self, stream, data):
        streamId = stream.streamId
        engine = self.engine
        if self._streams.get(streamId) is not stream:
            return  # the stream ended under the child: drop, as TCP does
        if not self._transportPaused:
            # A small write with nothing queued before it: framed and
            # written now, without the queue, the scheduler or a flush.
            frame = engine.sendWhole(streamId, data, self._now(),
                                     self._timerAt if self._timer is not None else None)
            if frame is not None:
                self._write(frame)
                return
        if streamId not in engine:
            return
        try:
            engine.sendData(streamId, data)
        except StreamBufferOverflow as error:
            # Only with a maxStreamSendBuffer set: the child learns of it
            # in connectionLost, never by an exception out of write().
            throttled(self.log, self._logThrottle(), self._now(), LogLevel.warn,
                      "stream buffer overflow",
                      "{framing} stream {streamId} reset: {error}",
                      framing=self.framing, streamId=stream.streamId, error=error)
            stream._resetLocally()
            self._resetStream(stream, ErrorCode.EXHAUSTED, Failure(error))
            return
        if not self._busy:
            # (Busy: the read being handled flushes at its end, and what a
            # child writes in reply goes out with its credit, in one write.)
            self._flush()
        if (stream._producer is not None and not stream._pausedBy & PAUSED_BY_BUFFER
                and engine.sendBuffered(streamId) >= self.settings.streamBufferSize):
            self._bufferPaused.add(stream)
            stream._pauseProducer(PAUSED_BY_BUFFER)

    def _streamEnd(self, stream):
        if not self._isCurrent(stream) or stream.streamId not in self.engine:
            return
        self.engine.endStream(stream.streamId)
        if stream._writeLostPending:
            self._endingWrites.add(stream)
        self._flush()

    def _streamAbort(self, stream):
        self._resetStream(stream, ErrorCode.CLOSED, abortedReason())

    def _resetStream(self, stream, code, reason):
        """
        End C{stream} from this side now; its child's C{connectionLost}
        gets C{reason} on a later turn, as a TCP transport's would, not from
        inside the call that ended it.
        """
        if self._isCurrent(stream):
            self.engine.resetStream(stream.streamId, code)
        self._drop(stream)
        self._forget(stream)
        self._flush()
        self.reactor.callLater(0, stream._lost, reason)
        self._streamGone()

    def _flush(self):
        if self._busy or self.engine is None or self.disconnected:
            return
        engine = self.engine
        self._busy = True
        try:
            while True:
                # Events caused by commands or by what was just framed (a
                # stream finishing as its end goes out) may queue output.
                events = engine.takeEvents()
                if events:
                    self._process(events)
                if self._transportPaused or not engine.hasOutput():
                    break
                chunks = engine.dataToSend(WRITE_QUANTUM, self._now())
                if len(chunks) == 1:
                    self._write(chunks[0])
                elif chunks:
                    if len(chunks) <= JOIN_CHUNKS and sum(map(len, chunks)) <= JOIN_LIMIT:
                        # Small frames: one write (Twisted's writeSequence
                        # checks and counts each piece, then joins them).
                        self._write(b"".join(chunks))
                    else:
                        self._writeSequence(chunks)
        finally:
            self._busy = False
        if self._bufferPaused:
            low = self.settings.streamBufferSize // 2
            for stream in list(self._bufferPaused):
                if engine.sendBuffered(stream.streamId) <= low:
                    self._bufferPaused.discard(stream)
                    stream._unpauseProducer(PAUSED_BY_BUFFER)
        ended = engine.takeWritesEnded()
        if ended and self._endingWrites:
            streams = self._streams
            for streamId in ended:
                stream = streams.get(streamId)
                if stream is not None and stream in self._endingWrites:
                    self._endingWrites.discard(stream)
                    if stream._writeLostPending:
                        self._callChild(stream, stream._writeEnded)
        self._scheduleTimer()

    def _gathering(self, method, *args):
        """
        Call C{method} for the reactor: on a connection written to directly,
        what it writes is gathered and sent as it returns or raises (see
        DIRECT_LIMIT), within a fresh allowance; inside another such call
        (or on other transports) it is just called.
        """
        if self._socket is None or self._gather is not None:
            return method(*args)
        self._direct = DIRECT_LIMIT
        self._gather = []
        self._gathered = 0
        try:
            return method(*args)
        finally:
            try:
                self._releaseGathered()
            finally:
                # (Also if the release raised: a child's producer, paused
                # by the transport it fills, may.  Gathering must end, or
                # every later write would wait for DIRECT_BULK bytes.)
                self._gather = None

    def _releaseGathered(self):
        # Send what this call has gathered (nothing outside such a call).
        chunks = self._gather
        if chunks:
            self._gather = []
            self._gathered = 0
            self._sendGathered(chunks)

    def _sendGathered(self, chunks):
        if len(chunks) == 1:
            self._send(chunks[0])
        else:
            self._sendSequence(_coalesced(chunks))

    def _canSendDirect(self, size):
        # True if size bytes may go straight to the socket: within this
        # turn's allowance, and nothing waits in the transport before them
        # (the order on the wire is kept) nor is it closing, aborted or TLS.
        return size <= self._direct and transportIdle(self.transport)

    def _write(self, data):
        """
        Write C{data} (bytes) to the connection.  On a plain TCP connection
        it is gathered while the reactor's call into this multiplexer lasts
        and then sent at once if the transport buffers nothing, where
        C{transport.write} would register for writability and send on the
        next reactor turn (an C{epoll_ctl} pair and a turn per small
        message); what the kernel does not take goes through the transport.
        """
        if self._gather is not None:
            self._gatherOut([data], len(data))
        elif self._socket is not None:
            self._send(data)
        else:
            self.transport.write(data)

    def _writeSequence(self, chunks):
        """
        Write C{chunks} (byte strings) to the connection: as L{_write}, with
        one C{sendmsg}, so a frame's header and its payload go out without
        being joined (C{writeSequence} copies them into one string).
        """
        if self._gather is not None:
            self._gatherOut(chunks, sum(map(len, chunks)))
        elif self._socket is not None:
            self._sendSequence(chunks)
        else:
            self.transport.writeSequence(chunks)

    def _gatherOut(self, chunks, size):
        # Gather chunks (size bytes) in a reactor call: sent as soon as 64
        # KiB are gathered, or, with the engine's gatherBulk, as soon as what
        # is gathered fills what the allowance left can send directly
        # (DIRECT_BULK at least); if they would overflow it, what was
        # gathered before them is sent first, so bulk frames leave two to
        # a sendmsg (see DIRECT_LIMIT) rather than one each, or three
        # together, over the allowance, to the transport.
        if not self.engine.gatherBulk:
            self._gather.extend(chunks)
            self._gathered += size
            if self._gathered >= DIRECT_BULK:
                self._releaseGathered()
            return
        limit = max(self._direct, DIRECT_BULK)
        if self._gathered and self._gathered + size > limit:
            # (chunks start the new list before the earlier ones are sent,
            # so they stay ahead of anything written while those are, and
            # leave when the call ends if the send raises.)
            earlier = self._gather
            self._gather = list(chunks)
            self._gathered = size
            self._sendGathered(earlier)
            limit = max(self._direct, DIRECT_BULK)
        else:
            self._gather.extend(chunks)
            self._gathered += size
        if self._gathered >= limit:
            self._releaseGathered()

    def _send(self, data):
        # data to the socket if it may go straight, the rest (all of it
        # otherwise) to the transport (sendOrWrite's rules), within this
        # turn's allowance.
        if len(data) <= self._direct:
            sent = sendOrWrite(self._socket, self.transport, data)
            self._direct = self._direct - sent if sent >= DIRECT_BULK else 0
        else:
            self.transport.write(data)

    def _sendSequence(self, chunks):
        # As _send, for pieces sent with one sendmsg.
        total = sum(map(len, chunks))
        if self._canSendDirect(total):
            try:
                sent = self._socket.sendmsg(chunks)
            except OSError:
                sent = 0
            self._direct = self._direct - sent if sent >= DIRECT_BULK else 0
            if sent == total:
                return
            if sent:
                rest = []
                for chunk in chunks:
                    size = len(chunk)
                    if sent >= size:
                        sent -= size
                    else:
                        rest.append(chunk[sent:] if sent else chunk)
                        sent = 0
                chunks = rest
        if total <= JOIN_LIMIT:
            self.transport.write(b"".join(chunks))
        else:
            self.transport.writeSequence(chunks)

    # -- timers ---------------------------------------------------------

    def _scheduleTimer(self):
        deadline = self.engine.nextDeadline()
        if deadline is None:
            return
        timer = self._timer
        if timer is not None:
            # Compare with the deadline it was armed for: its getTime() is
            # a little later (callLater reads the clock again), so a fixed
            # deadline (BMP's acknowledgement check) would re-arm it on
            # every flush.
            if self._timerAt <= deadline:
                return
            timer.cancel()
        delay = deadline - self._now()
        self._timerAt = deadline
        self._timer = self.reactor.callLater(delay if delay > 0 else 0, self._onTimer)

    def _onTimer(self):
        self._timer = None
        if self.disconnected:
            return
        self._gathering(self._tick)

    def _tick(self):
        events = self.engine.tick(self._now())
        if events:
            self._busy = True
            try:
                self._process(events)
            finally:
                self._busy = False
        self._flush()


class MultiplexerFactory(Factory):
    """
    Build L{Multiplexer} protocols.

    @param childFactory: builds the protocol of each stream the peer opens
        (C{buildProtocol(StreamAddress)}); C{None} refuses them.
    @param framing: C{"mio"} or C{"bmp"}.
    @param role: C{"client"} for the side that made the connection,
        C{"server"} for the side that accepted it (MIO stream-id parity, BMP
        stream names).
    @param reactor: an C{IReactorTime} for timers (default: the global
        reactor, looked up when first needed).
    @param settings: keyword settings, see L{muxframe.settings.SETTINGS}.

    @ivar logThrottle: the L{muxframe.logthrottle.LogThrottle} limiting the
        warnings its connections repeat (protocol errors, overflows).
    """

    protocol = Multiplexer

    def __init__(self, childFactory=None, framing="mio", role="server",
                 reactor=None, **settings):
        _engineClass(framing)
        if role not in ("client", "server"):
            raise ValueError("role must be 'client' or 'server', not %r" % (role,))
        self.childFactory = childFactory
        self.framing = framing
        self.role = role
        self.reactor = reactor
        self.settings = Settings(**settings)
        self.logThrottle = LogThrottle()

    def buildProtocol(self, addr):
        protocol = self.protocol(
            self.childFactory, self.framing, self.role, self.settings, self.reactor
        )
        protocol.factory = self
        return protocol

    def __repr__(self):
        return "<MultiplexerFactory %s %s>" % (self.framing, self.role)


__all__ = ["Multiplexer", "MultiplexerFactory"]
