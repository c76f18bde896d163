"""
The Twisted face of XTMP: L{XTMPProtocol} and its factories.

The protocol is a thin adapter over the sans-IO L{XTMPConnection}: it feeds
received bytes in, turns events into handler calls and Deferreds, writes
what the engine produces, and drives its timers with C{self.reactor}
(an C{IReactorTime}; the factory's, else the global reactor, looked up
only when first needed).

Backpressure: the protocol registers itself with its transport as a
streaming producer; while the transport is paused, messages wait in the
engine's bounded priority queue, and a producer registered with the
protocol (it is an C{IConsumer}) is paused while the buffered bytes exceed
half of C{maxQueuedBytes}.  A slow reader calls L{XTMPProtocol.pauseDelivery}
which stops reading from the transport, so the sender's transport fills
and pauses it in turn.

Writes: on a plain TCP connection of Twisted's own, a session sends to the
socket itself rather than on the next reactor turn
(L{muxframe.xtmp.readgather}): what it writes while a read is handled (its
answers, and what a server forwards to other sessions) is gathered and
sent every EVENTS_PER_SEND events and as the read's handling ends, so a
pipeline of processes overlaps instead of waiting for each other's whole
reads; outside a read its first write of a turn goes at once and the rest
of that turn's as the turn ends.  Other transports get C{transport.write}.
While a read is handled, a message sent is encoded at once and the
session's engine flushed at the gather's next send point (up to
C{GATHER_LIMIT} bytes), on every transport.

Handlers and the answers they give are L{muxframe.xtmp.handlers}'s;
publish/subscribe is L{muxframe.xtmp.subscriptions}'s.
"""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from muxframe.directsend import directSocket
from muxframe.logthrottle import logger, throttled
from muxframe.xtmp.codec import (
    CONTROL_TYPES, HEADER_SIZE, SECURITY_SIZE, Cipher, F,
)
from muxframe.xtmp.connection import (
    CLOSED, HEARTBEAT_FRAME_SIZE, OPEN, PreparedBody,
)
from muxframe.xtmp.errors import (
    HandshakeFailed, PeerDisconnected, PeerError, RequestTimeout,
    SessionNotReady, XTMPErrorCode, XTMPLocalError, XTMPRemoteError,
    XTMPTimeout,
)
from muxframe.xtmp.events import (
    DisconnectReceived, ErrorReceived, HandshakeCompleted, MessageReceived,
    RequestFailed, ResponseReceived, SubscribeReceived, UnsubscribeReceived,
)
from muxframe.xtmp.handlers import HandlersMixin
from muxframe.xtmp.readgather import EVENTS_PER_SEND, GATHER_LIMIT, readGather
from muxframe.xtmp.requesttimers import RequestTimers
from muxframe.xtmp.subscriptions import StreamsMixin

#: The message type C{IConsumer.write} sends.
CONSUMER_MESSAGE_TYPE = 0x80


class _Request:
    # deadline: while it waits in timers (the RequestTimers of the session
    # that made it: a queued request may be answered on the session that
    # resumes it), else None.  pending: the pendingRequests of the
    # connection that sent it last, where its answer is awaited.
    __slots__ = ("deferred", "sequence", "deadline", "timeout", "timers",
                 "cancelled", "pending")

    def __init__(self):
        self.sequence = None
        self.pending = None
        self.deadline = None
        self.cancelled = False


def _levelFor(error, level):
    """
    C{level}, or debug for a refusal by the factory's admission policy
    (L{XTMPServerFactory.admitHandshake}): the policy logs what it refuses
    itself, throttled, so a flood does not write lines per connection.
    """
    return LogLevel.debug if getattr(error, "refusedByPolicy", False) \
        else level


#: The error codes XTMPErrorCode names (others are application codes).
_NAMED_CODES = frozenset(XTMPErrorCode)

#: Characters of text from the peer (an Error's or a Disconnect's reason)
#: that one log line carries at most.
LOGGED_REASON = 200


def _logged(text):
    """
    C{text} cut to L{LOGGED_REASON} characters for a log line, saying how
    many more there were.
    """
    text = str(text)
    if len(text) <= LOGGED_REASON:
        return text
    return "%s... (%d more characters)" % (text[:LOGGED_REASON],
                                           len(text) - LOGGED_REASON)


#: An encrypted frame's bytes besides its body (header and security layer).
_FRAME_OVERHEAD = HEADER_SIZE + SECURITY_SIZE
#: Last in a protocol's held frames while its engine holds bodies sealed
#: after them (XTMPProtocol.sendPreparedBody, XTMPConnection.holdPrepared).
_ENGINE_HOLDS = object()


@implementer(IPushProducer, IConsumer)
class XTMPProtocol(HandlersMixin, StreamsMixin, Protocol):
    """
    One XTMP session.  Built by L{XTMPServerFactory} or L{XTMPClientFactory}.

    @ivar handlers: message type -> callable(protocol, message).  A handler
        returning bytes (or a Deferred of bytes) answers the message with a
        RESPONSE; one that raises (or whose Deferred fails) answers with an
        Error: L{ApplicationError}'s code and reason, else
        C{APPLICATION_ERROR} with a generic reason (the traceback is
        logged, never sent).
    @ivar connection: the sans-IO L{XTMPConnection}.
    @ivar result: the L{HandshakeResult} once the handshake is done.
    """

    log = logger()
    factory = None
    connection = None
    result = None
    writeChunk = 1 << 18
    #: Bytes of held frames (L{sendPrepared} with C{hold}) past which they
    #: are written at once rather than at the end of the turn.
    holdLimit = 1 << 14
    closeTimeout = 10.0
    _reactor = None
    # The connection's socket if it is one writes may be sent to directly
    # (muxframe.directsend.directSocket, set once the connection is made;
    # each send checks the transport is idle), else None.
    _socket = None
    # The timeouts of this session's requests (RequestTimers), made at the
    # first request with a timeout.
    _requestTimers = None
    # Frames held for one write at the end of the turn, or None.
    _held = None
    _heldBytes = 0
    # Payload bytes sent while a read was handled and left in the engine
    # for the gather's next send point (readGather.flushLater).
    _unflushed = 0

    def __init__(self):
        self._handshakeWaiters = []
        self._handshakeOutcome = None
        self.handlers = {}
        self.streamCallbacks = {}
        self._closed = []
        self._closeReason = None
        self._transportPaused = False
        # (Next to _transportPaused, in the instance's values: a fan-out's
        # later bodies of a turn read only these, L{sendPreparedBody}.)
        self._holding = None
        self._held = None
        self._heldBytes = 0
        self._deliveryPaused = False
        self._heldData = []
        self._producer = None
        self._producerPaused = False
        self._timer = None
        self._abortCall = None
        self._lost = False
        self._closing = False

    # -- configuration -----------------------------------------------------

    @property
    def reactor(self):
        """
        The C{IReactorTime} for timers: the factory's, else the global one.
        """
        if self._reactor is None:
            r = getattr(self.factory, "reactor", None)
            if r is None:
                from twisted.internet import reactor as r
            self._reactor = r
        return self._reactor

    @reactor.setter
    def reactor(self, value):
        """
        Use C{value} (an C{IReactorTime}) for this session's timers.
        """
        self._reactor = value

    @property
    def sessionId(self):
        """
        The session id (0 before the handshake completes).
        """
        return self.connection.sessionId if self.connection else 0

    @property
    def counters(self):
        """
        This session's L{Counters} (bytes, messages, duplicates dropped,
        resends, key updates, re-handshakes).
        """
        return self.connection.counters if self.connection else None

    @property
    def bufferedBytes(self):
        """
        What C{maxQueuedBytes} bounds: bytes of messages waiting in the
        send queues plus acknowledged-delivery messages not yet
        acknowledged (each counted as its data length + 32).
        """
        return self.connection.bufferedBytes if self.connection else 0

    @property
    def peerIdentity(self):
        """
        The peer's L{PublicIdentity} (or L{None}) once authenticated.
        """
        return self.result.peerIdentity if self.result else None

    def setHandler(self, messageType, handler):
        """
        Register C{handler(protocol, message)} for C{messageType}.
        """
        self.handlers[int(messageType)] = handler

    def whenHandshakeDone(self):
        """
        A L{Deferred} firing with this protocol when the handshake is
        complete, or failing with why it did not complete.  On the client
        it fires once the client's authentication is sent (the server may
        still refuse it: see L{whenClosed}).
        """
        outcome = self._handshakeOutcome
        if outcome is None:
            d = Deferred()
            self._handshakeWaiters.append(d)
            return d
        if isinstance(outcome, Failure):
            return fail(outcome)
        return succeed(outcome)

    def _handshakeFinished(self, outcome):
        if self._handshakeOutcome is not None:
            return
        self._handshakeOutcome = outcome
        ended = getattr(self.factory, "handshakeEnded", None)
        if ended is not None and self.connection is not None:
            ended(self, outcome)
        waiters, self._handshakeWaiters = self._handshakeWaiters, []
        for d in waiters:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)

    def whenClosed(self):
        """
        A L{Deferred} firing with the exception that ended the session
        (L{ConnectionDone} for a clean close) once the connection is lost.
        """
        d = Deferred()
        if self._lost:
            d.callback(self._closeReason)
        else:
            self._closed.append(d)
        return d

    # -- IProtocol ---------------------------------------------------------

    def connectionMade(self):
        """
        Create the engine, register as the transport's producer, and (on
        the client) send the hello.
        """
        now = self.reactor.seconds()
        if self.factory is not None:
            self.handlers.update(self.factory.handlers)
        self.connection = self.factory.makeEngine(self, now)
        self._socket = directSocket(self.transport)
        # Optional hooks: a factory written before them still works.
        started = getattr(self.factory, "handshakeStarted", None)
        if started is not None:
            started(self)
        self.transport.registerProducer(self, True)
        if self.connection.isClient:
            self.connection.initiate(now)
        self._flush()
        self._schedule()

    def dataReceived(self, data):
        """
        Feed bytes to the engine and act on its events; one Heartbeat
        alone (an idle session's round) by the engine's short path.
        """
        conn = self.connection
        if (len(data) == HEARTBEAT_FRAME_SIZE and not self._deliveryPaused
                and conn is not None
                and conn.receiveHeartbeat(data, self.reactor.seconds())):
            # An idle session's round, read and checked in one call.
            if conn.hasOutput():
                readGather.handling(self._flush)
            return
        readGather.handling(self._dataReceived, data)

    def _dataReceived(self, data):
        if self._deliveryPaused:
            self._heldData.append(data)
            return
        conn = self.connection
        if conn is None or conn.state == CLOSED:
            return
        try:
            events = conn.receiveData(data, self.reactor.seconds())
            handled = 0
            for event in events:
                if self._closing:
                    # A handler closed the session: the rest is moot.
                    break
                self._handleEvent(event)
                handled += 1
                if handled == EVENTS_PER_SEND:
                    # The next stage (the peer, a forwarded hop) starts on
                    # these while the rest are handled.
                    handled = 0
                    self._flush()
                    readGather.send()
        except XTMPRemoteError as e:
            # A typed protocol error says what went wrong by itself; its
            # traceback would keep this session's frames (and the session)
            # alive in a reference cycle until the collector runs, which
            # under a flood of refused handshakes means milliseconds-long
            # collections.
            e.__traceback__ = None
            # Messages that arrived intact before the fault are delivered
            # (they count as delivered for acknowledgement), then we close.
            for event in getattr(e, "events", ()):
                if self._closing:
                    break
                self._handleEvent(event)
            self._fail(e)
            return
        self._flush()

    def connectionLost(self, reason=None):
        """
        Fail what waits on this session and hand its resumption state back
        to the factory.
        """
        self._lost = True
        self._held = self._holding = None
        readGather.discard(self)
        if self._closeReason is None:
            self._closeReason = reason.value if reason is not None \
                else ConnectionDone()
        why = self._closeReason
        for call in (self._timer, self._abortCall):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._abortCall = None
        conn = self.connection
        if conn is not None:
            conn.state = CLOSED
            conn.release()
            for request in list(conn.pendingRequests.values()):
                self._failRequest(request, why)
            conn.pendingRequests.clear()
        self._releaseTimers()
        if self._handshakeOutcome is None:
            err = why
            if not isinstance(why, (XTMPRemoteError, XTMPTimeout)):
                err = HandshakeFailed(
                    "connection lost during the handshake: %s" % (why,))
            self._handshakeFinished(Failure(err))
        if self.factory is not None:
            self.factory.sessionLost(self)
        if self.result is None:
            # Never authenticated: one line per connection is the
            # attacker's to cause, so it is debug (not written by the roles
            # by default).
            self.log.debug("xtmp connection closed during the handshake: "
                           "{why}", why=why)
        else:
            self.log.emit(_levelFor(why, LogLevel.info),
                          "xtmp session {sessionId:#x} closed: {why}",
                          sessionId=self.sessionId, why=_logged(why))
        for d in self._closed:
            d.callback(why)
        self._closed = []
        if self._producer is not None:
            self._producer.stopProducing()
            self._producer = None

    # -- events ------------------------------------------------------------

    def _handleEvent(self, event):
        if type(event) is MessageReceived:
            message = event.message
            if message.streamName is not None:
                self.streamReceived(message)
            else:
                self.messageReceived(message)
        elif type(event) is ResponseReceived:
            request = event.request
            if request.deadline is not None:
                request.timers.done(request)
            if not request.deferred.called:
                request.deferred.callback(event.message)
        elif type(event) is RequestFailed:
            request = event.request
            if request.deadline is not None:
                request.timers.done(request)
            if not request.deferred.called:
                request.deferred.errback(PeerError(event.code, event.reason))
        elif type(event) is HandshakeCompleted:
            self.result = event.result
            self.log.info(
                "xtmp handshake complete: session {sessionId:#x} cipher "
                "{cipher} resumed={resumed} peer={peer}",
                sessionId=event.result.sessionId,
                cipher=Cipher.describe(event.result.cipher),
                resumed=event.result.resumed, peer=event.result.peerIdentity)
            self.factory.sessionStarted(self)
            # The handshake deadline no longer applies: heartbeats do.
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._schedule()
            self.sessionReady()
            self._handshakeFinished(self)
        elif type(event) is SubscribeReceived:
            self.subscribeReceived(event.name, event.message, event.group)
        elif type(event) is UnsubscribeReceived:
            self.unsubscribeReceived(event.name, event.message)
        elif type(event) is ErrorReceived:
            # The peer sends these at will: throttled (the factory's), and
            # its text cut short.
            code = XTMPErrorCode.describe(event.code)
            throttle = getattr(self.factory, "logThrottle", None)
            if throttle is None:
                self.log.warn("xtmp peer error {code}: {reason}", code=code,
                              reason=_logged(event.reason))
            else:
                # One kind per named code and one for all others: the peer
                # picks the code, and kinds per code it makes up would
                # each get their own lines (and evict the other kinds).
                kind = code if event.code in _NAMED_CODES else "other"
                throttled(self.log, throttle, self.reactor.seconds(),
                          LogLevel.warn, "peer error: " + kind,
                          "xtmp peer error {code}: {reason}", code=code,
                          reason=_logged(event.reason))
            self.errorReceived(event.code, event.reason)
        elif type(event) is DisconnectReceived:
            if event.code in (XTMPErrorCode.NONE, XTMPErrorCode.GOING_AWAY):
                self._closeReason = ConnectionDone(event.reason)
            else:
                self._closeReason = PeerDisconnected(event.code, event.reason)
            self.releaseHeld()
            readGather.sendFor(self)
            self.transport.loseConnection()

    def sessionReady(self):
        """
        Called when the XTMP handshake is complete; override to start
        sending.  (Not C{handshakeCompleted}: over TLS that name belongs to
        C{IHandshakeListener}, the TLS handshake.)
        """

    def errorReceived(self, code, reason):
        """
        Called for an Error message that answers no pending request.
        """

    # -- sending -----------------------------------------------------------

    def send(self, messageType, payload, flags=0):
        """
        Send a message of C{messageType}.  C{flags} may include
        REQUIRES_ACK, PRIORITY_HIGH, EMERGENCY and COMPRESSED.

        While the transport accepts writes the message is encoded and
        written at once.  While it is paused the message waits in the
        engine's priority queues; a producer registered with
        L{registerProducer} is paused once the buffered bytes (queued plus
        unacknowledged) pass half of C{maxQueuedBytes}, and resumed below
        a quarter.  A send that would take them past C{maxQueuedBytes}
        raises L{SendQueueFull} and sends nothing.

        @raise SendQueueFull: the send buffers are at C{maxQueuedBytes}.
        @raise SessionNotReady: the session is closed.
        @raise XTMPLocalError: C{messageType} is a control type (0x01 to
            0x08), which the session sends itself.
        """
        self._checkType(messageType)
        self._send(messageType, payload, flags)

    @staticmethod
    def _checkType(messageType):
        if messageType in CONTROL_TYPES:
            raise XTMPLocalError(
                "message type %#x is an XTMP control message; use the "
                "session's methods (subscribe, disconnect, ...)"
                % (messageType,))

    def _send(self, messageType, payload, flags=0, requestSequence=None,
              streamName=None, request=None):
        conn = self.connection
        if conn is None or self._lost:
            raise SessionNotReady("the session is not connected")
        if self._transportPaused:
            conn.sendMessage(messageType, payload, flags, requestSequence,
                             streamName, request, self.reactor.seconds())
            self._checkBackpressure()
        else:
            conn.sendMessage(messageType, payload, flags, requestSequence,
                             streamName, request, self.reactor.seconds(),
                             True)
            # While a read is handled, encoded now and written at the
            # gather's next send point: one flush for a read's messages,
            # not one each (flushLater flushes at once outside a read).
            self._unflushed += len(payload)
            if self._unflushed < GATHER_LIMIT:
                readGather.flushLater(self, self._flush)
            else:
                self._flush()

    def sendPrepared(self, messageType, flags, body, now=None):
        """
        Send a message with a prebuilt body at once if the session can take
        it without queueing (see L{XTMPConnection.sendPrepared}).

        @return: whether it was sent; if not, the caller sends it another
            way; bodies held earlier may have been sealed into the
            engine's output, which its next flush writes.
        """
        return self.sendPreparedBody(PreparedBody(messageType, flags, body),
                                     now)

    def sendPreparedBody(self, prepared, now=None, hold=None):
        """
        L{sendPrepared} for a L{PreparedBody}: a broker builds one for a
        message and has each recipient session seal it.

        @param hold: L{None} to write the frame now; or a list: the frame
            is held, with the others held since, for one transport write
            (a fan-out gives each session many frames in one reactor turn,
            and a transport write costs more than a seal).  The first frame
            held appends this protocol to C{hold}; the caller calls
            L{releaseHeld} on each protocol listed there at the end of the
            turn.  Held frames are written before anything else this
            protocol writes, and at once past C{holdLimit} bytes, so order
            and buffer bounds hold.
        @return: whether it was sent; if not, the caller sends it another
            way; bodies held earlier may have been sealed into the
            engine's output, which its next flush writes.
        """
        holding = self._holding
        if holding is not None:
            # The engine holds this turn's bodies in holding: add this one
            # without visiting the engine, if it takes it.
            if (hold is not None and now is not None
                    and not self._transportPaused
                    and holding.add(prepared, now)):
                self._heldBytes += _FRAME_OVERHEAD + prepared.size
                if self._heldBytes > self.holdLimit:
                    self.releaseHeld()
                return True
            if not holding.open:
                self._holding = None
        conn = self.connection
        if conn is None or self._lost or self._transportPaused:
            return False
        if now is None:
            now = self.reactor.seconds()
        if hold is None:
            data = conn.sealPrepared(prepared, now)
            if data is None:
                return False
            self._write(data)
        else:
            held = self._held
            if held is None:
                # The turn's first: sealed now (one publish per turn visits
                # the session once either way).
                data = conn.sealPrepared(prepared, now)
                if data is None:
                    return False
                self._held = [data]
                self._heldBytes = len(data)
                hold.append(self)
            elif (holding := conn.holdPrepared(prepared, now)):
                # The turn's later ones are sealed together at releaseHeld,
                # while this session's key and AEAD state are in the
                # caches (XTMPConnection.holdPrepared: the same bytes); the
                # next ones go straight to holding (above).
                if held[-1] is not _ENGINE_HOLDS:
                    held.append(_ENGINE_HOLDS)
                self._holding = holding
                self._heldBytes += _FRAME_OVERHEAD + prepared.size
            else:
                # (Bytes the engine held come first in data.)
                data = conn.sealPrepared(prepared, now)
                if data is None:
                    return False
                if held[-1] is _ENGINE_HOLDS:
                    held[-1] = data
                else:
                    held.append(data)
                self._heldBytes += len(data)
            if self._heldBytes > self.holdLimit:
                self.releaseHeld()
        if self._producer is not None:
            self._checkBackpressure()
        return True

    def releaseHeld(self):
        """
        Write the frames L{sendPrepared} held, if any: those sealed at
        once, then those the engine held unsealed (always the later ones:
        the engine seals what it holds before anything else it makes).
        """
        held = self._held
        if held is not None:
            self._held = None
            self._holding = None
            if held[-1] is _ENGINE_HOLDS:
                held[-1] = self.connection.takeHeld()
            if not self._lost:
                self._toTransport(held[0] if len(held) == 1
                                  else b"".join(held))

    def _write(self, data):
        if self._held is not None:
            self.releaseHeld()
        self._toTransport(data)

    def _toTransport(self, data):
        # Gathered for the socket while a read is handled (readgather's
        # rules), else the transport's.
        if self._socket is not None:
            readGather.write(self, self._socket, self.transport, data)
        else:
            self.transport.write(data)

    def respond(self, message, payload, messageType=None, flags=0):
        """
        Answer C{message} (a request) with C{payload}.
        """
        self._send(message.type if messageType is None else messageType,
                   payload, flags, requestSequence=message.requestId)

    def request(self, messageType, payload, flags=0, timeout=None,
                subject=None):
        """
        Send a request; the L{Deferred} fires with the response L{Message}
        or fails with L{RequestTimeout} after C{timeout} seconds (default
        C{requestTimeout}; 0 waits without a timer), or L{PeerError} if the
        peer answers Error.  Cancelling it stops waiting.

        With C{subject}, the request goes to that subject: a STREAM_DATA
        message with flag REQUEST, which the XTMP server routes to a
        session serving the subject, relaying its response back.
        """
        try:
            self._checkType(messageType)
        except XTMPLocalError as e:
            return fail(e)
        return self._request(messageType, payload, flags, timeout, subject)

    def _request(self, messageType, payload, flags=0, timeout=None,
                 subject=None):
        request = _Request()

        def cancel(d):
            """
            Stop waiting; a late response is ignored.
            """
            request.cancelled = True
            self._dropRequest(request)

        request.deferred = Deferred(cancel)
        if timeout is None:
            timeout = self.connection.settings.requestTimeout
        if subject is not None:
            flags |= F.REQUEST
        try:
            self._send(messageType, payload, flags, streamName=subject,
                       request=request)
        except XTMPLocalError as e:
            return fail(e)
        if timeout and not request.deferred.called:
            timers = self._requestTimers
            if timers is None:
                timers = self._requestTimers = RequestTimers(
                    self._timersClock, self._requestTimedOut)
            request.timeout = timeout
            request.timers = timers
            timers.add(request, timeout)
        return request.deferred

    def _timersClock(self):
        return self.reactor

    def forwardTo(self, sink, messageType, payload, flags, subject):
        """
        (A server) send a request to C{subject} whose answer goes to
        C{sink} rather than to a L{Deferred}, and with no timer: a broker
        forwarding a routed request times it itself.  C{sink} has what
        the session uses of a Deferred: C{called}, C{callback(message)}
        and C{errback(reason)}, called at most once; its C{request} is
        set to the request's token, for L{cancelForward}.

        @raise XTMPLocalError: the request could not be sent.
        """
        self._checkType(messageType)
        request = _Request()
        request.deferred = sink
        sink.request = request
        self._send(messageType, payload, flags | F.REQUEST,
                   streamName=subject, request=request)

    def cancelForward(self, request):
        """
        Stop waiting for the answer to a request L{forwardTo} sent; a late
        answer is ignored.
        """
        request.cancelled = True
        self._dropRequest(request)

    def _dropRequest(self, request):
        if request.pending is not None:
            # (The connection that sent it last: a session that resumed
            # this one, if it sent it again.)
            request.pending.pop(request.sequence, None)
        if request.deadline is not None:
            request.timers.done(request)

    def _requestTimedOut(self, request):
        request.cancelled = True
        self._dropRequest(request)
        if self._lost:
            # (The last request queued when the connection was lost.)
            self._releaseTimers()
        request.deferred.errback(RequestTimeout(
            "no response within %gs" % (request.timeout,)))

    def _releaseTimers(self):
        # A lost session's timers once no request waits on them: they and
        # this protocol refer to each other, so reference counting frees
        # both.  (Requests queued when the connection was lost keep them
        # until they time out.)
        timers = self._requestTimers
        if timers is not None and not len(timers):
            self._requestTimers = None

    def _failRequest(self, request, why):
        if request.deadline is not None:
            request.timers.done(request)
        if not request.deferred.called:
            request.deferred.errback(why)

    def disconnect(self, code=XTMPErrorCode.GOING_AWAY, reason=""):
        """
        Close the session: send Disconnect (after Error, for a failure
        code) and close the transport once written.
        """
        if self._lost or self.connection is None:
            return
        self._write(self.connection.closeWithError(code, reason))
        # (What ends it, for whenClosed and the session's close line.)
        said = XTMPErrorCode.describe(code)
        self._closeReason = ConnectionDone(
            "%s: %s" % (said, reason) if reason else said)
        self._loseConnection()

    def _fail(self, error):
        level = _levelFor(error, LogLevel.warn)
        code = XTMPErrorCode.describe(error.code)
        throttle = getattr(self.factory, "logThrottle", None)
        if self.result is None and level != LogLevel.debug \
                and throttle is not None:
            # Before authentication: the factory's throttle.
            throttled(self.log, throttle, self.reactor.seconds(),
                      level, "handshake failed: " + code,
                      "xtmp handshake failed: {code}: {error}", code=code,
                      error=_logged(error))
        else:
            self.log.emit(level, "xtmp session {sessionId:#x} failed: "
                          "{code}: {error}", sessionId=self.sessionId,
                          code=code, error=_logged(error))
        if self._closeReason is None:
            self._closeReason = error
        if not self._lost:
            if isinstance(error, PeerError):
                # The peer ended the handshake with an Error: nothing to
                # answer.
                self.connection.abandon()
            else:
                self._write(self.connection.closeWithError(
                    error.code, str(error)))
            self._loseConnection()

    def _loseConnection(self):
        self._closing = True
        self.releaseHeld()
        if not self._lost:
            # Nothing more will be produced: a transport closing with a
            # paused producer registered would wait for that producer to
            # write again (Twisted resumes it rather than closing once its
            # buffer drains), so the close would hang until the abort.
            self.transport.unregisterProducer()
            readGather.sendFor(self)
        self.transport.loseConnection()
        if self._abortCall is None and not self._lost:
            # A peer that stops reading must not hold the session open.
            self._abortCall = self.reactor.callLater(
                self.closeTimeout, self._abort)

    def _abort(self):
        self._abortCall = None
        if not self._lost:
            self.transport.abortConnection()

    def _flush(self, now=None):
        self._unflushed = 0
        conn = self.connection
        if conn is None or self._lost:
            return
        if now is None:
            now = self.reactor.seconds()
        limit = 0 if self._transportPaused else self.writeChunk
        # (Most reads, an answered heartbeat among them, have nothing to
        # send; most writes are one call.)
        while conn.hasOutput():
            data = conn.dataToSend(limit, now)
            if not data:
                break
            self._write(data)
            if self._transportPaused:
                limit = 0
        self._checkBackpressure()

    def _checkBackpressure(self):
        producer = self._producer
        if producer is None:
            return
        high = self.connection.settings.maxQueuedBytes // 2
        buffered = self.connection.bufferedBytes
        if buffered > high and not self._producerPaused:
            self._producerPaused = True
            producer.pauseProducing()
        elif buffered <= high // 2 and self._producerPaused:
            self._producerPaused = False
            producer.resumeProducing()

    # -- IPushProducer (called by the transport) ---------------------------

    def pauseProducing(self):
        """
        The transport's buffer is full: keep messages queued.
        """
        self._transportPaused = True

    def resumeProducing(self):
        """
        The transport drained: send queued messages in priority order.
        """
        self._transportPaused = False
        self._flush()

    def stopProducing(self):
        """
        The transport is going away.
        """
        self._transportPaused = True

    # -- IConsumer (an application producer feeding this session) ---------

    def registerProducer(self, producer, streaming):
        """
        Register a producer paused while the send buffers are over half of
        C{maxQueuedBytes}.  Only streaming producers are supported.
        """
        if not streaming:
            raise ValueError("XTMPProtocol supports streaming producers only")
        self._producer = producer
        self._producerPaused = False
        self._checkBackpressure()

    def unregisterProducer(self):
        """
        Forget the registered producer.
        """
        self._producer = None

    def write(self, data):
        """
        C{IConsumer.write}: send C{data} as one message of type
        C{CONSUMER_MESSAGE_TYPE} (0x80).
        """
        self.send(CONSUMER_MESSAGE_TYPE, data)

    # -- receive-side flow control ----------------------------------------

    def pauseDelivery(self):
        """
        Stop reading from the transport (a slow reader): the peer's writes
        back up and its producer is paused.
        """
        if not self._deliveryPaused:
            self._deliveryPaused = True
            self.transport.pauseProducing()

    def resumeDelivery(self):
        """
        Deliver what arrived meanwhile and read again.  The held bytes are
        fed to the engine directly: they already went through this
        protocol's C{dataReceived} (a subclass's, which may queue bytes
        before they get here, must not queue them again behind later ones).
        """
        if self._deliveryPaused:
            self._deliveryPaused = False
            held, self._heldData = self._heldData, []
            if held:
                XTMPProtocol.dataReceived(self, b"".join(held))
            # (Handling what was held may have paused delivery again.)
            if not self._lost and not self._deliveryPaused:
                self.transport.resumeProducing()

    # -- timers ------------------------------------------------------------

    def _schedule(self, now=None):
        conn = self.connection
        if self._lost or conn is None or conn.state == CLOSED:
            return
        if now is None:
            now = self.reactor.seconds()
        delay = conn.nextDeadline(now)
        self._timer = self.reactor.callLater(max(delay, 0.001), self._tick)

    def _tick(self):
        self._timer = None
        conn = self.connection
        if self._lost or conn.state == CLOSED:
            return
        now = self.reactor.seconds()
        if conn.state == OPEN:
            conn.resumption.lastActive = now
            probe = conn.idleProbe(now)
            if probe is not None:
                # An idle session's round: the probe is all that is due.
                self._write(probe)
                self._schedule(now)
                return
        try:
            conn.tick(now)
        except XTMPTimeout as e:
            self._timedOut(e, now)
            return
        # One clock read for the tick, its write and the next timer.
        self._flush(now)
        self._schedule(now)

    def _timedOut(self, error, now):
        conn = self.connection
        idle = now - conn.lastActivity >= conn.settings.sessionTimeout and \
            conn.state == OPEN
        code = XTMPErrorCode.IDLE_TIMEOUT if idle else XTMPErrorCode.TIMEOUT
        self.log.warn("xtmp session {sessionId:#x} timed out: {code}: "
                      "{error}", sessionId=self.sessionId,
                      code=XTMPErrorCode.describe(code), error=error)
        self._closeReason = error
        self._write(conn.closeWithError(code, str(error)))
        self._loseConnection()
