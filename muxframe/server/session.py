"""
L{ServerSession}: one client's XTMP session on the server, the
L{XTMPProtocol} that the L{muxframe.server.factory.XTMPServer} builds.

It adds to the protocol what the server needs per session: its identity
and permissions, its rate limits, delivery for the broker with the
slow-consumer policy, and the L{ISession} face the registry shows.

Rate limits (per session, token buckets): each application message,
Subscribe and Unsubscribe takes one message token and its payload's
length in byte tokens.  One that does not fit is answered Error
RATE_LIMITED (it is not handled) and the session stops reading until the
buckets hold enough again, so a client that ignores the errors is slowed
to the configured rate rather than consuming the server's CPU.  The
frames the engine acts on itself (Heartbeat, KeyUpdate, Error; not Ack,
which a consumer sends as fast as it is sent messages), and what it
drops unread (responses that answer no request of the server, messages
repeating a delivery id already delivered), take a message token each
too, in batches of CONTROL_BATCH after the reads that brought
them (they are handled already: the bucket may go into debt); in debt,
the session stops reading, without an answer, until it refills.

Handshake reads: while the session handshakes, what it reads waits in
the server's handshake scheduler for its step.  Once more than a step
needs is waiting (a frame header, the security layer and
C{maxHandshakePayload} bytes of payload: what a client may legitimately
pipeline behind its ClientAuth arrives with it), the session stops
reading until the step has run, so an unauthenticated peer cannot make
the server hold more than that beyond one read.  The bytes a ClientHello's
step leaves behind the hello (the engine decodes them once the hello is
answered, in the next step) count as waiting too.

Reading is stopped by any of three holders (the rate limit, a backed-up
connection, the handshake scheduler), through L{pauseDelivery}; it
resumes, through L{resumeDelivery}, only when none holds it.

Slow consumers: while the connection accepts writes, deliveries go out at
once.  While it does not (the peer reads too slowly), they wait in the
session's send queue; a delivery that would take the queue past
C{maxPending} bytes, or one arriving after the connection has accepted
nothing for C{writeDeadline} seconds, makes the session a slow consumer:
it is disconnected with SLOW_CONSUMER, and the delivery is dropped for it
alone.
"""

from zope.interface import implementer

from muxframe.server.errors import Refusal
from muxframe.server.interfaces import ISession
from muxframe.server.limits import TokenBucket
from muxframe.xtmp.codec import HEADER_SIZE, SECURITY_SIZE, MessageType
from muxframe.xtmp.connection import HANDSHAKING, OPEN
from muxframe.xtmp.errors import SendQueueFull, XTMPErrorCode, XTMPLocalError
from muxframe.xtmp.protocol import XTMPProtocol


class SessionState:
    """
    What the server keeps per session beside the protocol's own state, in
    one slotted object: fewer attributes on the protocol keep its
    instance dictionary small (10,000 idle sessions are what matters).
    """

    __slots__ = ("source", "peer", "identity", "permissions", "connectedAt",
                 "endReason", "handshaking", "registered", "pausedSince",
                 "messages", "bytes", "throttle", "handshakeHeld",
                 "controlCharged")

    def __init__(self, source, peer):
        self.source = source
        self.peer = peer
        self.identity = self.permissions = self.connectedAt = None
        self.endReason = None
        self.handshaking = True
        self.registered = False
        self.pausedSince = None
        self.messages = self.bytes = self.throttle = None
        self.handshakeHeld = False
        self.controlCharged = 0


#: Control frames a session may have uncharged (L{ServerSession._chargeControl}).
CONTROL_BATCH = 8


@implementer(ISession)
class ServerSession(XTMPProtocol):
    """
    A client's session on the XTMP server.

    @ivar state: its L{SessionState} (set by the factory when admitted).
    """

    state = None

    # -- ISession ----------------------------------------------------------

    @property
    def source(self):
        """
        The address limits count this session by (the peer's host).
        """
        return self.state.source

    @property
    def peer(self):
        """
        The peer's address as text.
        """
        return self.state.peer

    @property
    def identity(self):
        """
        The L{SessionIdentity}, once the handshake is done.
        """
        return self.state.identity

    @property
    def permissions(self):
        """
        Its L{Permissions}, or L{None} for "everything".
        """
        return self.state.permissions

    @property
    def connectedAt(self):
        """
        When its handshake completed.
        """
        return self.state.connectedAt

    @property
    def endReason(self):
        """
        The exception it ended with, once ended.
        """
        return self.state.endReason

    @property
    def lastActivity(self):
        """
        When an application message last went either way.
        """
        return self.connection.lastActivity if self.connection else None

    @property
    def rtt(self):
        """
        The heartbeat round-trip time in seconds, or L{None}.
        """
        return self.connection.rtt if self.connection else None

    @property
    def counters(self):
        """
        The session's counters as a dict.
        """
        return self.connection.counters.asDict() if self.connection else {}

    def subscriptions(self):
        """
        C{[(pattern, group)]} of this session.
        """
        return self.factory.broker.subscriptionsOf(self)

    def isConnected(self):
        """
        Whether the session is open (handshake done, not closing).
        """
        conn = self.connection
        return conn is not None and conn.state == OPEN

    def isReady(self):
        """
        Whether a delivery would go out at once (for queue groups).
        """
        return self.state.pausedSince is None and self.isConnected()

    def started(self, identity, permissions, config, now):
        """
        The handshake completed as C{identity}: set its permissions and
        create its rate-limit buckets from C{config}.
        """
        state = self.state
        state.identity = identity
        state.permissions = permissions
        state.connectedAt = now
        rate = config["limits.messages_per_second"]
        if rate > 0:
            state.messages = TokenBucket(rate, config["limits.message_burst"],
                                         now)
        rate = config["limits.bytes_per_second"]
        if rate > 0:
            state.bytes = TokenBucket(rate, config["limits.byte_burst"], now)

    # -- set up and tear down ---------------------------------------------

    def connectionMade(self):
        """
        Set SO_KEEPALIVE and TCP_NODELAY as configured (on TCP
        transports), then start the XTMP session.
        """
        config = self.factory.config
        for key, name in (("server.tcp_keepalive", "setTcpKeepAlive"),
                          ("server.tcp_nodelay", "setTcpNoDelay")):
            setter = getattr(self.transport, name, None)
            if config[key] and setter is not None:
                setter(1)
        XTMPProtocol.connectionMade(self)

    def connectionLost(self, reason=None):
        """
        Remember why it ended, then let the protocol and factory clean up.
        """
        state = self.state
        state.endReason = reason.value if reason is not None else None
        if state.throttle is not None and state.throttle.active():
            state.throttle.cancel()
        state.throttle = None
        XTMPProtocol.connectionLost(self, reason)

    def dataReceived(self, data):
        """
        While handshaking (or while bytes of this session still wait in
        the scheduler), hand the bytes to the server's handshake scheduler
        (L{handshakeStep} runs them in turn), and stop reading once more is
        waiting than a step needs; then as usual.
        """
        scheduler = self.factory.scheduler
        state = self.state
        # (Also once the handshake is done while bytes of this session
        # still wait in the scheduler: later bytes must not overtake them.)
        if scheduler is not None and (state.handshaking or
                                      scheduler.queuedBytes(self)):
            queued = scheduler.submit(self, data)
            self._holdHandshakeReads(queued)
        else:
            XTMPProtocol.dataReceived(self, data)
            if self.connection is not None and \
                    self._uncharged() >= CONTROL_BATCH:
                self._chargeControl()

    def _holdHandshakeReads(self, queued=0):
        """
        Stop reading if more unauthenticated bytes wait than a handshake
        step needs: C{queued} in the scheduler, and those the engine keeps
        behind a ClientHello whose answer is due (the next step's).
        """
        state = self.state
        waiting = queued + self._behindHello()
        if waiting > self._handshakeQueueLimit() and \
                not state.handshakeHeld and not self._lost:
            state.handshakeHeld = True
            self.pauseDelivery()

    def _behindHello(self):
        # The bytes a ClientHello's step left in the engine's decoder, to
        # be decoded once the hello is answered.
        conn = self.connection
        if conn is None or conn.state != HANDSHAKING or \
                not conn.handshake.answerDue:
            return 0
        return conn.decoder.buffered

    def _handshakeQueueLimit(self):
        # What one handshake step may need: a frame (header, security
        # layer, the largest handshake payload).
        conn = self.connection
        return HEADER_SIZE + SECURITY_SIZE + (
            conn.settings.maxHandshakePayload if conn is not None else 0)

    def handshakeStep(self, data):
        """
        Process bytes received while handshaking (from the scheduler); if
        their size had stopped reading, read again (unless something else
        holds reading), or keep reading stopped while more bytes than a
        step needs wait behind a ClientHello for its answer.
        """
        state = self.state
        if state.handshakeHeld:
            state.handshakeHeld = False
            # Before the step's bytes: while delivery is paused they would
            # be held, not processed.  What the protocol held (earlier
            # steps' bytes, while another holder paused delivery) is older
            # and is handled first.
            self._readAgain()
        XTMPProtocol.dataReceived(self, data)
        # (Once the step opened the session, the rest of its bytes were
        # read as usual: what they held is charged now, whatever the
        # batch.)
        self._chargeControl()
        # (What this step left behind a ClientHello waits for the next.)
        self._holdHandshakeReads()

    def resumeDelivery(self):
        """
        Handle what was held while reading was paused, and read again;
        what it held is charged (L{_chargeControl}), whatever the batch.
        """
        XTMPProtocol.resumeDelivery(self)
        self._chargeControl()

    def _readAgain(self):
        """
        Resume reading if no holder (the rate limit, a backed-up
        connection, the handshake scheduler) holds it.
        """
        state = self.state
        if (not self._lost and state.throttle is None
                and state.pausedSince is None and not state.handshakeHeld):
            self.resumeDelivery()

    # -- flow control (write deadline) -------------------------------------

    def pauseProducing(self):
        """
        The connection stopped accepting writes: note since when, and stop
        reading until it accepts them again.  A peer that does not read
        must not make the server write: its heartbeat probes and the acks
        its messages earn are answered at once, outside every queue, so
        read on they would fill the transport's buffer without bound.
        (Such a peer is closed by the heartbeat timeout, or as a slow
        consumer when a delivery finds it past C{broker.write_deadline}.)
        """
        if self.state.pausedSince is None:
            self.state.pausedSince = self.reactor.seconds()
        XTMPProtocol.pauseProducing(self)
        self.pauseDelivery()

    def resumeProducing(self):
        """
        The connection accepts writes again: read again, unless the rate
        limit or the handshake scheduler holds reading.
        """
        self.state.pausedSince = None
        XTMPProtocol.resumeProducing(self)
        self._readAgain()

    # -- what the client sends ---------------------------------------------

    def _admit(self, message):
        """
        Take the rate-limit tokens for C{message}; if they are not there,
        answer RATE_LIMITED, stop reading until they are, and return False.
        """
        state = self.state
        messages, byteBucket = state.messages, state.bytes
        if messages is None and byteBucket is None:
            return True
        now = self.reactor.seconds()
        size = len(message.payload)
        if (messages is None or messages.take(now)) and (
                byteBucket is None or byteBucket.take(now, size)):
            return True
        wait = max(messages.wait(now) if messages else 0.0,
                   byteBucket.wait(now, size) if byteBucket else 0.0)
        self.factory.events.emit(
            "rate_limited", "session {sessionId:#x} ({identity}) over its "
            "rate limit: {codeName}, reading paused {wait:.3f}s",
            code=XTMPErrorCode.RATE_LIMITED, sessionId=self.sessionId,
            identity=self.identity.label, wait=wait)
        self.respondError(message, XTMPErrorCode.RATE_LIMITED,
                          "over the session's rate limit "
                          "(limits.messages_per_second, limits.bytes_per_second)")
        if state.throttle is None:
            self._throttle(wait)
        return False

    def _throttle(self, wait):
        """
        Stop reading for C{wait} seconds (the rate limit's holder).
        """
        self.pauseDelivery()
        # The factory's reactor, not the coarse session clock: the wait is
        # usually milliseconds.
        self.state.throttle = self.factory.reactor.callLater(
            max(wait, 0.001), self._unthrottle)

    def _uncharged(self):
        """
        What the engine and L{messageReceived} handled or dropped without
        L{_admit} and is not charged yet: control frames, responses that
        answer no request of ours, messages repeating a delivery id
        already delivered (an unmatched Error is in two counts: two
        tokens).
        """
        c = self.connection.counters
        return (c.controlReceived + c.unmatchedResponses
                + c.duplicatesDropped - self.state.controlCharged)

    def _chargeControl(self):
        """
        Charge the frames the engine handled itself since the last charge
        (Heartbeats, KeyUpdates, Errors: answered or acted on, never
        messages), the responses that answer no request of the server and
        the duplicates (dropped) to the message bucket, into debt if need
        be; in debt, stop reading until it refills.  Without it a peer
        could send heartbeat probes without end, each answered, or bogus
        responses and duplicates, each decrypted and parsed.  Called once
        L{CONTROL_BATCH} of them are uncharged: an idle session's one
        heartbeat answer per round costs a comparison, not a charge.
        """
        state = self.state
        if self.connection is None:
            return
        fresh = self._uncharged()
        if not fresh:
            return
        # (Counted as charged without a limit too: dataReceived's batch
        # test stays false until CONTROL_BATCH more.)
        state.controlCharged += fresh
        bucket = state.messages
        if bucket is None:
            return
        now = self.reactor.seconds()
        if bucket.charge(now, fresh) or state.throttle is not None or \
                self._lost:
            return
        wait = bucket.wait(now)
        self.factory.events.emit(
            "rate_limited", "session {sessionId:#x} ({identity}) over its "
            "rate limit with control frames (Heartbeat, KeyUpdate, Error), "
            "unmatched responses or duplicates: {codeName}, reading paused {wait:.3f}s",
            code=XTMPErrorCode.RATE_LIMITED, sessionId=self.sessionId,
            identity=self.identity.label, wait=wait)
        self._throttle(wait)

    def _unthrottle(self):
        self.state.throttle = None
        if self.isConnected():
            self._readAgain()

    def messageReceived(self, message):
        """
        Route an application message through the server's router (or
        answer GOING_AWAY while the server drains).
        """
        if message.requestSequence is not None:
            XTMPProtocol.messageReceived(self, message)
            return
        if not self._admit(message):
            return
        if self.factory.draining:
            self.respondError(message, XTMPErrorCode.GOING_AWAY,
                              "the server is shutting down")
            return
        self.factory.router.dispatch(self, message)

    def streamReceived(self, message):
        """
        A publish or request on a subject: to the broker.
        """
        if self._admit(message):
            self.factory.broker.publishFrom(self, message)

    def subscribeReceived(self, name, message, group=None):
        """
        Subscribe through the broker; confirm, or answer its refusal.
        """
        if not self._admit(message):
            return
        try:
            self.factory.broker.subscribe(self, name, group)
        except Refusal as refusal:
            self.respondError(message, refusal.code, refusal.reason)
        else:
            self.respond(message, b"", messageType=MessageType.Subscribe)

    def unsubscribeReceived(self, name, message):
        """
        Unsubscribe through the broker and confirm.
        """
        if self._admit(message):
            self.factory.broker.unsubscribe(self, name)
            self.respond(message, b"", messageType=MessageType.Unsubscribe)

    # -- what the broker sends ---------------------------------------------

    def _roomFor(self, size):
        """
        Whether a delivery of C{size} payload bytes may be queued; if not,
        the session is a slow consumer and is disconnected.
        """
        conn = self.connection
        if conn is None or conn.state != OPEN:
            return False
        since = self.state.pausedSince
        if since is None:
            return True
        factory = self.factory
        if self.reactor.seconds() - since > factory.writeDeadline:
            why = "nothing written for over %gs (broker.write_deadline)" % (
                factory.writeDeadline,)
        elif conn.bufferedBytes + size + 32 > factory.maxPending:
            why = "more than %d bytes waiting (broker.max_pending)" % (
                factory.maxPending,)
        else:
            return True
        self._slowConsumer(why)
        return False

    def _slowConsumer(self, why):
        self.factory.broker.slowConsumer(self, why)
        self.disconnect(XTMPErrorCode.SLOW_CONSUMER, "slow consumer: " + why)

    def deliver(self, delivery):
        """
        Queue a L{Delivery} for this session (STREAM_DATA on its subject),
        subject to the slow-consumer policy.  (The broker's fan-out first
        offers each session the sealed body, L{sendPreparedBody}; this is
        the way for the others.)

        @return: whether it was queued (False: closed, or a slow consumer
            now disconnected).
        """
        if not self._roomFor(len(delivery.payload)):
            return False
        try:
            self.publish(delivery.subject, delivery.payload,
                         delivery.messageType, delivery.flags)
        except SendQueueFull as e:
            self._slowConsumer(str(e))
            return False
        return True

    def relayAnswer(self, message, messageType, payload):
        """
        Answer this session's routed request C{message} with a
        responder's answer, as a handler's answer goes
        (L{HandlersMixin._reply}: a session whose answers no longer fit
        its send buffers is closed RATE_LIMITED).
        """
        self._reply(message, messageType, payload)

    def forwardRequest(self, delivery, sink):
        """
        Send a request routed by the broker to this session (a responder);
        its answer goes to C{sink} (L{XTMPProtocol.forwardTo}).

        @return: C{sink}, or L{None} if this session cannot take it.
        """
        if not self._roomFor(len(delivery.payload)):
            return None
        try:
            self.forwardTo(sink, delivery.messageType, delivery.payload,
                           delivery.flags, delivery.subject)
        except XTMPLocalError:
            return None
        return sink
