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
within C{requestTimeout} is Error TIMEOUT.
"""

from twisted.internet.defer import fail
from twisted.logger import LogLevel
from zope.interface import implementer

from muxframe.server.errors import BadSubject, PermissionDenied, Refusal
from muxframe.server.interfaces import IBroker, IBrokerEngine
from muxframe.server.measures import Histogram
from muxframe.server.subjects import tokens
from muxframe.xtmp import codec
from muxframe.xtmp.codec import F
from muxframe.xtmp.errors import PeerDisconnected, PeerError, XTMPErrorCode


class Delivery:
    """
    A published message as it travels: subject, type, flags, payload.
    """

    __slots__ = ("subject", "tokens", "messageType", "flags", "payload")

    def __init__(self, subject, parts, messageType, flags, payload):
        self.subject = subject
        self.tokens = parts
        self.messageType = messageType
        self.flags = flags
        self.payload = payload


@implementer(IBrokerEngine)
class MemoryEngine:
    """
    The embedded engine: one process, nothing travels elsewhere.
    """

    def attach(self, deliver):
        """
        Nothing arrives from elsewhere.
        """

    def published(self, delivery):
        """
        Nobody elsewhere to tell.
        """

    def interest(self, pattern, present):
        """
        Nothing upstream to subscribe to.
        """

    def request(self, delivery):
        """
        No other process can answer.
        """
        return fail(Refusal("no session serves %r" % (delivery.subject,),
                            XTMPErrorCode.NO_RESPONDERS))

    def detach(self):
        """
        Nothing to stop.
        """


class _Pending:
    """
    A routed request: the requester's message, when it was routed, and
    the forwarded requests still outstanding.
    """

    __slots__ = ("message", "startedAt", "outstanding")

    def __init__(self, message, startedAt):
        self.message = message
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
        self.replies = Replies(requestTimeout)
        self.latency = Histogram()
        self._sweep = None
        self._patterns = {}
        self.counters = dict.fromkeys(
            ["published", "deliveries", "undelivered", "requests",
             "replies", "lateReplies", "noResponders", "requestTimeouts",
             "permissionDenied", "badSubject", "slowConsumers",
             "broadcasts"], 0)
        self.engine.attach(self._deliver)

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
            count = self._patterns.get(pattern, 0)
            self._patterns[pattern] = count + 1
            if not count:
                self.engine.interest(pattern, True)

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
            left = self._patterns.get(sub.pattern, 1) - 1
            if left:
                self._patterns[sub.pattern] = left
            else:
                self._patterns.pop(sub.pattern, None)
                self.engine.interest(sub.pattern, False)

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
        count = self._deliver(delivery)
        self.engine.published(delivery)
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

    def _deliver(self, delivery):
        recipients = self.table.recipients(delivery.tokens, _isReady)
        if not recipients:
            return 0
        count = 0
        # The STREAM_DATA body is the same for every recipient: build it
        # once; each session only seals it.
        body = codec.encodeName(delivery.subject) + delivery.payload
        now = self.reactor.seconds()
        for session in recipients:
            if session.deliver(delivery, body, now):
                count += 1
        self.counters["deliveries"] += count
        self.counters["undelivered"] += len(recipients) - count
        return count

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
        recipients = self.table.recipients(parts, _isReady)
        now = self.reactor.seconds()
        if not recipients:
            d = self.engine.request(delivery)
            d.addCallbacks(self._relay, self._relayFailure,
                           callbackArgs=(session, message, now),
                           errbackArgs=(session, message))
            return
        pending = _Pending(message, now)
        token = self.replies.add(session, pending, now)
        for recipient in recipients:
            d = recipient.forwardRequest(delivery)
            if d is None:
                continue
            pending.outstanding.append(d)
            d.addCallbacks(self._answered, self._answerFailed,
                           callbackArgs=(token, d), errbackArgs=(token, d))
        if not pending.outstanding and self.replies.resolve(token):
            self._noResponders(session, message, "every responder of %r is "
                               "gone" % (message.streamName,))
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
        self._relay(response, requester, pending.message, pending.startedAt)

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
        requester.respond(message, response.payload,
                          messageType=response.type)

    def _relayFailure(self, failure, requester, message):
        if failure.check(Refusal) and \
                failure.value.code == XTMPErrorCode.NO_RESPONDERS:
            self._noResponders(requester, message, failure.value.reason)
        else:
            code = getattr(failure.value, "code", XTMPErrorCode.INTERNAL)
            self._relayError(requester, message, code,
                             failure.getErrorMessage())

    def _relayError(self, requester, message, code, reason):
        if requester.isConnected():
            requester.respondError(message, code, reason)

    def _noResponders(self, requester, message, reason):
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


def _isReady(session):
    return session.isReady()
