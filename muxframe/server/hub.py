"""
The broker's Twisted side: subjects between the sessions of this server
process, over the sans-IO L{SubscriptionTable} and L{Replies}, with an
L{IBrokerEngine} for other processes (L{MemoryEngine}: none).

Delivery: a message published on a subject goes to every session with a
matching plain subscription and to one member of each matching queue
group, once per session, as a STREAM_DATA message of the publisher's type
carrying the subject (so a client's wildcard callbacks see the real
subject).  Each delivery goes into that session's own bounded send queue
and never waits for another session: a session whose queue or write
deadline is exceeded is a slow consumer and is disconnected
(L{ServerSession.deliver}), which is counted and logged; the others go on.

Request/reply: a STREAM_DATA message with REQUEST goes to the subject's
recipients as a request (the server is the requester towards them); the
first response is relayed to the original requester as the response to
its request, later ones are dropped.  No recipient is Error
NO_RESPONDERS; every recipient failing relays the last failure; no answer
within C{requestTimeout} is Error TIMEOUT.  A first answer of an XTMP
control type (0x01 to 0x08, which only the session itself sends) is not
relayed: the requester gets Error PROTOCOL_ERROR naming the fault, and it
is counted (C{badReplies}) and logged (event C{bad_reply}, throttled).

Other processes (L{IBrokerEngine}): before a message is delivered the
engine I{plans} it (L{IBrokerEngine.plan}): which queue groups this
process serves (C{delivery.groups}; L{None}: all of its own) and where
else it goes.  Publications and broadcasts are then handed to the engine;
a request's remote recipients answer through Deferreds the engine returns
(L{IBrokerEngine.forward}), raced with the local ones.  What arrives from
other processes comes in through L{Broker.deliver},
L{Broker.deliverBroadcast} and L{Broker.serveRequest}.

History: with C{history} set (L{muxframe.server.history}), a publication
on a subject it covers is stored first and then delivered with its
position (C{delivery.position}: offset and epoch).
"""

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from muxframe.server.errors import BadSubject, PermissionDenied, Refusal
from muxframe.server.interfaces import IBroker, IBrokerEngine
from muxframe.server.measures import Histogram
from muxframe.server.subjects import tokens
from muxframe.xtmp import codec
from muxframe.xtmp.codec import CONTROL_TYPES, F
from muxframe.xtmp.connection import PreparedBody
from muxframe.xtmp.errors import PeerDisconnected, PeerError, XTMPErrorCode


class Delivery:
    """
    A published message as it travels: subject, type, flags, payload.

    @ivar groups: the keys C{(pattern, group)} of the queue groups this
        process serves it to, or L{None} for every group here.
    @ivar position: C{(offset, epoch, timestamp)} in the subject's
        history, or L{None}.
    """

    __slots__ = ("subject", "tokens", "messageType", "flags", "payload",
                 "groups", "position")

    def __init__(self, subject, parts, messageType, flags, payload,
                 groups=None, position=None):
        self.subject = subject
        self.tokens = parts
        # A plain int: an IntEnum costs at every use on the fan-out path.
        self.messageType = int(messageType)
        self.flags = flags
        self.payload = payload
        self.groups = groups
        self.position = position


@implementer(IBrokerEngine)
class MemoryEngine:
    """
    The embedded engine: one process, nothing travels elsewhere.
    """

    def attach(self, broker):
        """
        Nothing arrives from elsewhere.
        """

    def interest(self, pattern, group, present):
        """
        Nothing upstream to subscribe to.
        """

    def plan(self, delivery):
        """
        Everything is served here.
        """
        return None

    def published(self, delivery, plan):
        """
        Nobody elsewhere to tell.
        """

    def broadcast(self, delivery):
        """
        Nobody elsewhere to tell.
        """

    def forward(self, delivery, plan):
        """
        No other process can answer.
        """
        return []

    def detach(self):
        """
        Nothing to stop.
        """


class _Pending:
    """
    A routed request: the requester's message, its subject, when it was
    routed, and the forwarded requests still outstanding.
    """

    __slots__ = ("message", "subject", "startedAt", "outstanding")

    def __init__(self, message, subject, startedAt):
        self.message = message
        self.subject = subject
        self.startedAt = startedAt
        self.outstanding = []


@implementer(IBroker)
class Broker:
    """
    Subjects, queue groups, broadcast and request/reply between sessions.

    @param table: the L{SubscriptionTable}.
    @param sessions: callable returning every live session (broadcast).
    @param events: the server's L{ServerEvents}.

    @ivar latency: a L{Histogram} of routed requests' round trips in
        seconds, from routing a request to relaying its answer.
    """

    def __init__(self, reactor, table, sessions, events, engine=None,
                 requestTimeout=30.0, enabled=True):
        from muxframe.server.broker import Replies
        self.reactor = reactor
        self.table = table
        self.sessions = sessions
        self.events = events
        self.engine = engine if engine is not None else MemoryEngine()
        self.enabled = enabled
        self.history = None
        self.replies = Replies(requestTimeout)
        self.latency = Histogram()
        self._sweep = None
        self._interests = {}
        # Sessions holding fan-out frames for one write at the end of the
        # turn (L{ServerSession.deliver}'s C{hold}), and the call that
        # writes them.
        self._held = []
        self._release = None
        self.counters = dict.fromkeys(
            ["published", "deliveries", "undelivered", "requests",
             "replies", "lateReplies", "badReplies", "noResponders",
             "requestTimeouts", "permissionDenied", "badSubject",
             "slowConsumers", "broadcasts"], 0)
        self.engine.attach(self)

    # -- subscriptions -----------------------------------------------------

    def subscribe(self, session, pattern, group=None):
        """
        Subscribe C{session} to C{pattern} (in C{group}); raise a
        L{Refusal} (BAD_SUBJECT, PERMISSION_DENIED, BUSY) to refuse.
        """
        try:
            self._checkEnabled()
            parts = tokens(pattern)
            filters = ()
            if session.permissions is not None:
                filters = session.permissions.checkSubscribe(parts, pattern)
            sub, new = self.table.subscribe(session, pattern, group, filters)
        except Refusal as refusal:
            self._refused(session, refusal, "subscribe", pattern)
            raise
        if new:
            key = (pattern, group)
            count = self._interests.get(key, 0)
            self._interests[key] = count + 1
            if not count:
                self.engine.interest(pattern, group, True)

    def unsubscribe(self, session, pattern):
        """
        Remove C{session}'s subscriptions to C{pattern}.
        """
        self._forget(self.table.unsubscribe(session, pattern))

    def removeSession(self, session):
        """
        Drop every subscription of C{session}.
        """
        self._forget(self.table.removeSubscriber(session))

    def _forget(self, subs):
        for sub in subs:
            key = (sub.pattern, sub.group)
            left = self._interests.get(key, 1) - 1
            if left:
                self._interests[key] = left
            else:
                self._interests.pop(key, None)
                self.engine.interest(sub.pattern, sub.group, False)

    def subscriptionsOf(self, session):
        """
        C{[(pattern, group)]} of C{session}.
        """
        return [(s.pattern, s.group) for s in self.table.subscriptionsOf(session)]

    # -- publishing --------------------------------------------------------

    def publish(self, subject, payload, messageType, flags=0, origin=None):
        """
        Deliver C{payload} on literal C{subject} to its subscribers here
        and hand it to the engine; return how many sessions here it was
        queued for.  (Server code publishes without permission checks;
        L{publishFrom} checks a session's.)

        @raise BadSubject: C{subject} is not a literal subject.
        """
        delivery = Delivery(subject, tokens(subject, wildcards=False),
                            messageType, flags & ~F.REQUEST, payload)
        self.counters["published"] += 1
        history = self.history
        if history is not None and history.covers(subject):
            # Stored first, then delivered with its position: the count
            # comes later (a Deferred).
            return history.store(delivery).addCallback(self._fanOut)
        return self._fanOut(delivery)

    def _fanOut(self, delivery):
        plan = self.engine.plan(delivery)
        count = self.deliver(delivery)
        self.engine.published(delivery, plan)
        return count

    def publishFrom(self, session, message):
        """
        A STREAM_DATA message from C{session}: a request (REQUEST) or a
        publish, checked against the session's permissions.  A refusal is
        answered with an Error naming the message.
        """
        if message.flags & F.REQUEST:
            self.request(session, message)
            return
        try:
            self._checkPublish(session, message.streamName)
            self.publish(message.streamName, message.payload, message.type,
                         message.flags & (F.PRIORITY_HIGH | F.EMERGENCY),
                         origin=session)
        except Refusal as refusal:
            self._refused(session, refusal, "publish", message.streamName)
            session.respondError(message, refusal.code, refusal.reason)

    def _checkEnabled(self):
        if not self.enabled:
            raise PermissionDenied("subjects are disabled on this server "
                                   "(broker.enabled)")

    def _checkPublish(self, session, subject):
        self._checkEnabled()
        parts = tokens(subject, wildcards=False)
        if session.permissions is not None:
            session.permissions.checkPublish(parts, subject)
        return parts

    def _refused(self, session, refusal, action, subject):
        if isinstance(refusal, PermissionDenied):
            self.counters["permissionDenied"] += 1
            name = "permission_denied"
        elif isinstance(refusal, BadSubject):
            self.counters["badSubject"] += 1
            name = "bad_subject"
        else:
            name = "subscribe_refused"
        self.events.emit(
            name, "{action} {subject!r} by {identity} refused with "
            "{codeName}: {reason}",
            code=refusal.code, action=action, subject=subject,
            identity=session.identity.label, reason=refusal.reason,
            sessionId=session.sessionId)

    def deliver(self, delivery):
        """
        Deliver C{delivery} to the subscribers of this process (of the
        queue groups in C{delivery.groups} only, when set); return how
        many sessions it was queued for.
        """
        recipients = self.table.recipients(delivery.tokens, _isReady,
                                           delivery.groups)
        if not recipients:
            return 0
        # The STREAM_DATA body is the same for every recipient: build it
        # once; each session whose connection takes writes only seals it,
        # the others queue it (ServerSession.deliver: the slow-consumer
        # policy).  A session's frames of this turn's deliveries are
        # written to its transport once, at the end of the turn: with many
        # publishes per turn, one transport write per frame costs more
        # than its sealing.
        prepared = PreparedBody(delivery.messageType,
                                delivery.flags | F.STREAM_DATA,
                                codec.encodeName(delivery.subject)
                                + delivery.payload)
        now = self.reactor.seconds()
        held = self._held
        declined = [session for session in recipients
                    if not session.sendPreparedBody(prepared, now, held)]
        count = len(recipients) - len(declined)
        for session in declined:
            if session.deliver(delivery):
                count += 1
        if held and self._release is None:
            self._release = self.reactor.callLater(0, self._releaseHeld)
        self.counters["deliveries"] += count
        self.counters["undelivered"] += len(recipients) - count
        return count

    def _releaseHeld(self):
        """
        Write what this turn's deliveries held (see L{deliver}).
        """
        self._release = None
        held, self._held = self._held, []
        for session in held:
            session.releaseHeld()

    def slowConsumer(self, session, why):
        """
        C{session} (a subscriber) fell behind: count and log it (the
        session disconnects itself).
        """
        self.counters["slowConsumers"] += 1
        self.events.emit(
            "slow_consumer", "slow consumer {identity} (session "
            "{sessionId:#x}) disconnected with {codeName}: {why}",
            code=XTMPErrorCode.SLOW_CONSUMER, identity=session.identity.label,
            sessionId=session.sessionId, why=why)

    def broadcast(self, payload, messageType, subject="broadcast"):
        """
        Deliver C{payload} as STREAM_DATA on C{subject} to every session,
        subscribed or not; return how many it was queued for.
        """
        delivery = Delivery(subject, tokens(subject, wildcards=False),
                            messageType, 0, payload)
        self.counters["broadcasts"] += 1
        count = self.deliverBroadcast(delivery)
        self.engine.broadcast(delivery)
        return count

    def deliverBroadcast(self, delivery):
        """
        Deliver a broadcast to every session of this process; return how
        many it was queued for.
        """
        return sum(1 for session in self.sessions()
                   if session.deliver(delivery))

    # -- request/reply -----------------------------------------------------

    def request(self, session, message):
        """
        Route the request C{message} from C{session} to its subject's
        recipients; the first answer goes back to C{session}.
        """
        self.counters["requests"] += 1
        try:
            parts = self._checkPublish(session, message.streamName)
        except Refusal as refusal:
            self._refused(session, refusal, "request", message.streamName)
            session.respondError(message, refusal.code, refusal.reason)
            return
        delivery = Delivery(message.streamName, parts, message.type,
                            message.flags & (F.PRIORITY_HIGH | F.EMERGENCY),
                            message.payload)
        plan = self.engine.plan(delivery)
        remote = self.engine.forward(delivery, plan)
        self._route(session, message, delivery, remote)

    def serveRequest(self, delivery):
        """
        A request routed here by another process (its queue groups in
        C{delivery.groups}): forward it to this process's recipients.

        @return: a Deferred firing with the first answer (with C{type}
            and C{payload}), or failing with the responder's L{PeerError}
            or a L{Refusal} (NO_RESPONDERS).
        """
        d = Deferred()
        self._route(_Waiter(d), None, delivery, [])
        return d

    def _route(self, requester, message, delivery, remote):
        recipients = self.table.recipients(delivery.tokens, _isReady,
                                           delivery.groups)
        now = self.reactor.seconds()
        pending = _Pending(message, delivery.subject, now)
        token = self.replies.add(requester, pending, now)
        for recipient in recipients:
            forward = recipient.forwardRequest(delivery,
                                               _Forward(self, token, recipient))
            if forward is not None:
                pending.outstanding.append(forward)
        for d in remote:
            pending.outstanding.append(d)
            d.addCallbacks(self._answered, self._answerFailed,
                           callbackArgs=(token, d), errbackArgs=(token, d))
        if not pending.outstanding and self.replies.resolve(token):
            self._noResponders(requester, message, "no session serves %r"
                               % (delivery.subject,) if not recipients else
                               "every responder of %r is gone"
                               % (delivery.subject,))
            return
        self._scheduleSweep()

    def _answered(self, response, token, d):
        entry = self.replies.resolve(token)
        if entry is None:
            self.counters["lateReplies"] += 1
            return
        requester, pending = entry
        for other in pending.outstanding:
            if other is not d:
                other.cancel()
        if response.type in CONTROL_TYPES:
            self._badAnswer(response, requester, pending, d)
            return
        self._relay(response, requester, pending.message, pending.startedAt)

    def _badAnswer(self, response, requester, pending, d):
        """
        The first answer to a routed request is of a control type, which
        only a session sends itself (as C{send} refuses them): answer the
        requester PROTOCOL_ERROR instead of relaying it; count and log it.
        """
        self.counters["badReplies"] += 1
        if isinstance(d, _Forward):
            identity = d._session.identity
            responder = identity.label if identity is not None else "?"
        else:
            responder = "another node"
        reason = ("the responder answered with message type %#04x, an XTMP "
                  "control type" % (response.type,))
        self.events.emit(
            "bad_reply", "answer to a request to {subject!r} from "
            "{responder} not relayed: {reason}; the requester gets "
            "{codeName}", code=XTMPErrorCode.PROTOCOL_ERROR,
            subject=pending.subject, responder=responder, reason=reason,
            messageType=int(response.type))
        self._relayError(requester, pending.message,
                         XTMPErrorCode.PROTOCOL_ERROR, reason)

    def _answerFailed(self, failure, token, d):
        entry = self.replies.get(token)
        if entry is None:
            # Answered already, timed out, or cancelled by us.
            return None
        requester, pending = entry
        pending.outstanding.remove(d)
        if pending.outstanding:
            return None
        self.replies.resolve(token)
        if failure.check(PeerError) and not failure.check(PeerDisconnected):
            # The responder answered with an Error: pass it on.
            self._relayError(requester, pending.message, failure.value.code,
                             failure.value.reason)
        else:
            self._noResponders(requester, pending.message,
                               "the responder went away")
        return None

    def _relay(self, response, requester, message, startedAt):
        self.latency.observe(self.reactor.seconds() - startedAt)
        if not requester.isConnected():
            return
        self.counters["replies"] += 1
        requester.relayAnswer(message, response.type, response.payload)

    def _relayError(self, requester, message, code, reason):
        if requester.isConnected():
            requester.respondError(message, code, reason)

    def _noResponders(self, requester, message, reason):
        if message is None:
            # Another process's request: it counts and logs its own.
            self._relayError(requester, message, XTMPErrorCode.NO_RESPONDERS,
                             reason)
            return
        self.counters["noResponders"] += 1
        self.events.emit(
            "no_responders", "request to {subject!r} by {identity}: "
            "{codeName} ({reason})", level=LogLevel.info,
            code=XTMPErrorCode.NO_RESPONDERS, subject=message.streamName,
            identity=requester.identity.label, reason=reason)
        self._relayError(requester, message, XTMPErrorCode.NO_RESPONDERS,
                         reason)

    def _scheduleSweep(self):
        if self._sweep is None and len(self.replies):
            delay = max(0.0, self.replies.nextDeadline()
                        - self.reactor.seconds())
            self._sweep = self.reactor.callLater(delay + 0.01, self._expire)

    def _expire(self):
        self._sweep = None
        for token, requester, pending in self.replies.expire(
                self.reactor.seconds()):
            self.counters["requestTimeouts"] += 1
            for d in pending.outstanding:
                d.cancel()
            self._relayError(requester, pending.message, XTMPErrorCode.TIMEOUT,
                             "no response within %gs" % (self.replies.timeout,))
        self._scheduleSweep()

    def stop(self):
        """
        Stop the sweep timer and the engine.
        """
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        if self._release is not None:
            self._release.cancel()
            self._releaseHeld()
        return self.engine.detach()

    def stats(self):
        """
        The broker's counters plus the table's size and the sublist's.
        """
        out = dict(self.counters)
        out["subscriptions"] = len(self.table)
        out["pendingRequests"] = len(self.replies)
        out.update({"sublist" + k[0].upper() + k[1:]: v
                    for k, v in self.table.sublist.stats.items()})
        return out


class _Forward:
    """
    A request forwarded to a session of this process: the session reports
    its answer here (L{XTMPProtocol.forwardTo}), which hands it to the
    broker as a Deferred's callbacks would, without a Deferred per
    request.  C{cancel} stops the session waiting, as cancelling the
    Deferred of another process's answer does.
    """

    __slots__ = ("called", "request", "_broker", "_token", "_session")

    def __init__(self, broker, token, session):
        self.called = False
        self.request = None
        self._broker = broker
        self._token = token
        self._session = session

    def callback(self, message):
        self.called = True
        self._report(self._broker._answered, message)

    def errback(self, reason):
        self.called = True
        if not isinstance(reason, Failure):
            reason = Failure(reason)
        self._report(self._broker._answerFailed, reason)

    def _report(self, method, outcome):
        # Called from the responder's read (or close): a fault of the
        # broker's is logged, as a Deferred's callback's would be, and
        # never reaches the responder's connection.
        try:
            method(outcome, self._token, self)
        except Exception:
            failure = Failure()
            self._broker.events.emit(
                "relay_failed", "relaying an answer failed: {error}",
                level=LogLevel.error, error=failure.getErrorMessage(),
                log_failure=failure)

    def cancel(self):
        if not self.called:
            self.called = True
            self._session.cancelForward(self.request)


class _Waiter:
    """
    The requester of a request another process routed here: the answer
    fires a Deferred instead of going to a session.
    """

    __slots__ = ("deferred",)

    def __init__(self, deferred):
        self.deferred = deferred

    def isConnected(self):
        return not self.deferred.called

    def relayAnswer(self, message, messageType, payload):
        self.deferred.callback(_Answer(messageType, payload))

    def respondError(self, message, code, reason):
        if code == XTMPErrorCode.NO_RESPONDERS:
            self.deferred.errback(Refusal(reason, code))
        else:
            self.deferred.errback(PeerError(code, reason))


class _Answer:
    """
    A response as it travels between processes: its type and payload.
    """

    __slots__ = ("type", "payload")

    def __init__(self, messageType, payload):
        self.type = messageType
        self.payload = payload


def _isReady(session):
    return session.isReady()
