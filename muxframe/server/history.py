"""
History subjects of the XTMP server (the C{history} section of its
configuration; C{docs/presence-and-queues.md} section 9.7).

Rules:

  - A publication on a literal subject matching a history pattern (the
    first, in configuration order) is stored in the subject's history
    (the engine's: offsets contiguous from 1 within an epoch) before it
    is delivered; plain subscribers get it as any publication, history
    subscribers as a ChannelHistory PUBLICATION with its offset and
    epoch.  If storing fails it is still delivered to plain subscribers,
    and logged.
  - A ChannelHistory SUBSCRIBE (0x5F) names a literal history subject
    and, with C{recover}, the last offset and epoch the client saw.  The
    answer (RESPONSE) carries what it missed, oldest first, with
    C{recovered} true, or C{recovered} false and the C{failure}
    (RecoveryFailure: 1 EPOCH_CHANGED, 2 TRIMMED, 3 FUTURE_OFFSET, 5
    TOO_MANY) and the subject's current position; either way the
    subscription is live from that position.  Publications arriving
    while the answer is prepared are held and sent after it.
  - Live publications reach a history subscriber in offset order, each
    once: one at or below the last sent is dropped; a gap (publications
    of several nodes crossing) is filled from the history first.  When
    the epoch changes, or a gap cannot be filled, the subscriber gets a
    RESET (C{failure} naming why, the new position) and goes on from
    there.  Permissions are those of subscribing to the subject.
  - A session whose send buffers are full is a slow consumer
    (disconnected with SLOW_CONSUMER), as for subject deliveries.
"""


from muxframe.logthrottle import logger
from muxframe.engines.errors import RecoveryFailure, RecoveryImpossible
from muxframe.engines.model import HistoryOptions, StreamPosition
from muxframe.messaging import wire
from muxframe.messaging.wire import (
    HISTORY_PUBLICATION, HISTORY_RESET, HISTORY_RESPONSE, HISTORY_SUBSCRIBE,
    HISTORY_UNSUBSCRIBE, StanzaType)
from muxframe.server.errors import BadSubject, Refusal
from muxframe.server.storage import logEngineFailure, raiseRefusal, refusalFor
from muxframe.server.subjects import matches, tokens
from muxframe.xtmp.errors import SendQueueFull, XTMPErrorCode

log = logger("muxframe.server.history")

#: Live publications held per subscriber while its history is fetched.
MAX_HELD = 10000


def encodeStored(messageType, payload):
    """
    What the history stores of a publication: its type, then its data.
    """
    return bytes((messageType,)) + payload


def publicationOf(publication):
    """
    The wire Publication of a stored engine L{Publication}.
    """
    data = publication.payload
    return wire.Publication(offset=publication.offset, epoch=publication.epoch,
                            timestamp=publication.timestamp, payload=data[1:],
                            message_type=data[0] if data else 0)


class HistorySubscriber:
    """
    One session's history subscription to one subject: a subscriber of
    the broker's table that forwards deliveries in offset order.
    """

    def __init__(self, subjects, session, subject):
        self.subjects = subjects
        self.session = session
        self.subject = subject
        self.epoch = None
        self.last = 0
        self.held = []
        self.holding = True
        self.overflowed = False

    # What the broker reads of a subscriber.
    @property
    def permissions(self):
        return self.session.permissions

    @property
    def identity(self):
        return self.session.identity

    @property
    def sessionId(self):
        return self.session.sessionId

    def isReady(self):
        return self.session.isReady()

    def isConnected(self):
        return self.session.isConnected()

    def forwardRequest(self, delivery, sink):
        # A history subscription serves no requests.
        return None

    def sendPreparedBody(self, prepared, now=None, hold=None):
        # The broker's sealed fan-out frame is not for a history
        # subscription: it takes the delivery (deliver), with its position.
        return False

    def deliver(self, delivery):
        """
        A publication on the subject (the broker's delivery).
        """
        if delivery.position is None or not self.session.isConnected():
            return False
        if self.holding:
            if len(self.held) >= MAX_HELD:
                # It stays in the history: fetched from there once live.
                self.overflowed = True
            else:
                self.held.append(delivery)
            return True
        self._accept(delivery.position, delivery.messageType, delivery.payload)
        return True

    def live(self, position):
        """
        Go live after C{position} (the answer is sent): send what was held.
        """
        self.epoch, self.last = position.epoch, position.offset
        if self.overflowed:
            self.overflowed = False
            self.subjects.refill(self)
            return
        self.holding = False
        held, self.held = self.held, []
        for delivery in sorted(held, key=lambda d: d.position[0]):
            if self.holding:
                self.held.append(delivery)
            else:
                self._accept(delivery.position, delivery.messageType, delivery.payload)

    def _accept(self, position, messageType, payload):
        offset, epoch, timestamp = position
        if epoch != self.epoch:
            self.reset(RecoveryFailure.EPOCH_CHANGED, StreamPosition(offset - 1, epoch))
        if offset <= self.last:
            return
        if offset > self.last + 1:
            # Publications of several nodes crossed: fill the gap first.
            self.holding = True
            self.held.append(_Held(position, messageType, payload))
            self.subjects.refill(self)
            return
        self.last = offset
        self.push(wire.Publication(offset=offset, epoch=epoch, timestamp=timestamp,
                                   payload=payload, message_type=messageType))

    def push(self, publication):
        """
        Send one publication to the session.
        """
        self._send(wire.ChannelHistory(subject=self.subject, type=HISTORY_PUBLICATION,
                                       offset=publication.offset, epoch=publication.epoch,
                                       publications=[publication]))

    def reset(self, failure, position):
        """
        Tell the session its position is lost (C{failure}); go on from
        C{position}.
        """
        self.epoch, self.last = position.epoch, position.offset
        self._send(wire.ChannelHistory(subject=self.subject, type=HISTORY_RESET,
                                       offset=position.offset, epoch=position.epoch,
                                       recovered=False, failure=int(failure)))

    def _send(self, stanza):
        session = self.session
        if not session.isConnected():
            return
        try:
            session.send(StanzaType.ChannelHistory, stanza.encode())
        except SendQueueFull as e:
            session.disconnect(XTMPErrorCode.SLOW_CONSUMER,
                               "slow consumer: history subject %r: %s" % (self.subject, e))


class _Held:
    """
    A held publication re-queued while a gap is filled.
    """

    __slots__ = ("position", "messageType", "payload")

    def __init__(self, position, messageType, payload):
        self.position = position
        self.messageType = messageType
        self.payload = payload


class HistorySubjects:
    """
    The history subjects of a L{Storage}, and their subscribers.
    """

    def __init__(self, storage, specs):
        self.storage = storage
        self.specs = [(tokens(s.pattern), HistoryOptions(s.size, s.ttl, s.maxRecover))
                      for s in specs]
        self._cache = {}
        self._subscribers = {}
        self.counters = dict.fromkeys(["stored", "storeFailures", "recoveries",
                                       "recoveryFailures", "gapsFilled", "resets"], 0)

    def optionsFor(self, subject):
        """
        The L{HistoryOptions} of literal C{subject}, or L{None}.
        """
        try:
            return self._cache[subject]
        except KeyError:
            pass
        parts = tokens(subject, wildcards=False)
        options = next((o for pattern, o in self.specs if matches(pattern, parts)), None)
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[subject] = options
        return options

    def covers(self, subject):
        """
        Whether publications on C{subject} keep history.
        """
        return self.optionsFor(subject) is not None

    def store(self, delivery):
        """
        Store C{delivery} in its subject's history; a Deferred firing with
        it, its C{position} set (left L{None} if storing failed).
        """
        options = self.optionsFor(delivery.subject)
        d = self.storage.engine.history.add(
            delivery.subject, encodeStored(delivery.messageType, delivery.payload), options)

        def stored(publication):
            self.counters["stored"] += 1
            delivery.position = (publication.offset, publication.epoch,
                                 publication.timestamp)
            return delivery

        def failed(failure):
            self.counters["storeFailures"] += 1
            logEngineFailure(log, failure, "history of {subject!r} not stored; delivered "
                             "without it", subject=delivery.subject)
            return delivery
        return d.addCallbacks(stored, failed)

    def routes(self):
        """
        C{{stanza type: handler(session, message)}}.
        """
        return {StanzaType.ChannelHistory: self.request}

    # -- requests --------------------------------------------------------------

    def request(self, session, message):
        """
        ChannelHistory (0x5F): subscribe (with recovery) or unsubscribe.
        """
        try:
            request = wire.ChannelHistory.decode(message.payload)
            options = self.optionsFor(request.subject)
        except wire.WireError as e:
            raise Refusal(str(e), XTMPErrorCode.BAD_REQUEST)
        except BadSubject as e:
            raise Refusal("history needs a literal subject: %s" % (e.reason,),
                          XTMPErrorCode.BAD_SUBJECT)
        if options is None:
            raise Refusal("subject %r keeps no history (the history section)"
                          % (request.subject,), XTMPErrorCode.BAD_REQUEST)
        key = (session, request.subject)
        broker = self.storage.server.broker
        if request.type == HISTORY_UNSUBSCRIBE:
            subscriber = self._subscribers.pop(key, None)
            if subscriber is not None:
                broker.unsubscribe(subscriber, request.subject)
            session.respond(message, wire.ChannelHistory(
                id=request.id, subject=request.subject, type=HISTORY_RESPONSE).encode())
            return None
        if request.type != HISTORY_SUBSCRIBE:
            raise Refusal("type must be 1 (subscribe) or 4 (unsubscribe), not %d"
                          % (request.type,), XTMPErrorCode.BAD_REQUEST)
        if key in self._subscribers:
            raise Refusal("already subscribed to the history of %r" % (request.subject,),
                          XTMPErrorCode.BAD_REQUEST)
        limit = broker.table.maxSubscriptions
        if sum(1 for k in self._subscribers if k[0] is session) >= limit:
            raise Refusal("at most %d history subscriptions per session" % (limit,),
                          XTMPErrorCode.BUSY)
        if not self.storage.started:
            raise Refusal("the storage engine is starting", XTMPErrorCode.STORAGE_FAILED)
        subscriber = HistorySubscriber(self, session, request.subject)
        broker.subscribe(subscriber, request.subject)
        self._subscribers[key] = subscriber
        history = self.storage.engine.history
        if request.recover:
            d = history.recover(request.subject, StreamPosition(request.offset, request.epoch),
                                options.maxRecover)
            d.addCallbacks(self._recovered, self._notRecovered,
                           callbackArgs=(subscriber, request, message),
                           errbackArgs=(subscriber, request, message))
        else:
            d = history.position(request.subject)
            d.addCallback(self._answer, subscriber, request, message, False, 0, [])
        d.addErrback(self._failed, subscriber, key)
        return d

    def _recovered(self, recovered, subscriber, request, message):
        self.counters["recoveries"] += 1
        return self._answer(recovered.position, subscriber, request, message, True, 0,
                            [publicationOf(p) for p in recovered.publications])

    def _notRecovered(self, failure, subscriber, request, message):
        failure.trap(RecoveryImpossible)
        self.counters["recoveryFailures"] += 1
        error = failure.value
        if error.position is not None:
            return self._answer(error.position, subscriber, request, message, False,
                                int(error.reason), [])
        d = self.storage.engine.history.position(request.subject)
        return d.addCallback(self._answer, subscriber, request, message, False,
                             int(error.reason), [])

    def _answer(self, position, subscriber, request, message, recovered, why, publications):
        session = subscriber.session
        if session.isConnected():
            session.respond(message, wire.ChannelHistory(
                id=request.id, subject=request.subject, type=HISTORY_RESPONSE,
                offset=position.offset, epoch=position.epoch, recover=request.recover,
                recovered=recovered, failure=why, publications=publications).encode())
        subscriber.live(position)
        return None

    def _failed(self, failure, subscriber, key):
        if self._subscribers.get(key) is subscriber:
            del self._subscribers[key]
            self.storage.server.broker.unsubscribe(subscriber, subscriber.subject)
        raiseRefusal(failure)

    def refill(self, subscriber):
        """
        Fill C{subscriber}'s gap from the history, then send what it held.
        """
        d = self.storage.engine.history.recover(
            subscriber.subject, StreamPosition(subscriber.last, subscriber.epoch))

        def filled(recovered):
            self.counters["gapsFilled"] += 1
            for publication in recovered.publications:
                if publication.offset > subscriber.last:
                    subscriber.last = publication.offset
                    subscriber.push(publicationOf(publication))
            return recovered.position

        def lost(failure):
            failure.trap(RecoveryImpossible)
            self.counters["resets"] += 1
            subscriber.reset(failure.value.reason, failure.value.position)
            return failure.value.position

        def go(position):
            subscriber.live(StreamPosition(subscriber.last, subscriber.epoch))

        def broken(failure):
            refusal = refusalFor(failure)
            subscriber.session.disconnect(
                refusal.code, "history of %r unavailable: %s" % (subscriber.subject,
                                                                 refusal.reason))

        d.addCallbacks(filled, lost)
        d.addCallback(go)
        d.addErrback(broken)
        return d

    def sessionGone(self, session):
        """
        C{session} ended: drop its history subscriptions.
        """
        for key in [k for k in self._subscribers if k[0] is session]:
            subscriber = self._subscribers.pop(key)
            self.storage.server.broker.unsubscribe(subscriber, subscriber.subject)
