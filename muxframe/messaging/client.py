"""
L{MessagingClient}: presence, durable queues and history subjects from
the client side of an XTMP session with the XTMP server
(C{docs/presence-and-queues.md} section 9).

Rules:

  - One client is one device of the session's entity.  L{attach} binds it
    on a (new) session; call it again with each new session after a
    connection is lost (for instance from a C{ClientService}'s
    C{whenConnected}): it resends what was not answered and resubscribes
    history subjects with recovery.
  - Sending: L{send} returns a Deferred firing with the server's Signal
    SENT once the message is durable.  Until then it stays in the outbox
    and is resent with the same id after a timeout or on the next
    session; the server deduplicates, so the recipient's application gets
    it once.
  - Receiving: every record of the device's queue reaches C{onMessage}
    (messages) or C{onReceipt} (delivered/read receipts of what this
    entity sent) once, in offset order, and is then acknowledged
    delivered.  Offsets at or below L{lastDelivered} are acknowledged
    again and dropped (the server resends what it had not seen
    acknowledged); persist L{lastDelivered} and pass it back to survive a
    restart of the client itself.  The device's own copies of what it
    sent are acknowledged without reaching C{onMessage}; copies sent from
    the entity's other devices do reach it (C{signal_type} DEVICE).
  - Callbacks run on the reactor thread; one that raises is logged and
    the record still counts as delivered.
"""

import uuid

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from muxframe.engines.model import LocationSharing, Status, Visibility
from muxframe.messaging import wire
from muxframe.messaging.wire import (
    ACK, HISTORY_PUBLICATION, HISTORY_RESET, HISTORY_SUBSCRIBE, HISTORY_UNSUBSCRIBE,
    REQUEST, RESUME, StanzaType)
from muxframe.xtmp.errors import PeerError, RequestTimeout

log = Logger(namespace="muxframe.messaging")


class _Outgoing:
    __slots__ = ("stanza", "deferred", "sending")

    def __init__(self, stanza):
        self.stanza = stanza
        self.deferred = Deferred()
        self.sending = False


class _HistoryWatch:
    __slots__ = ("callback", "onReset", "offset", "epoch")

    def __init__(self, callback, onReset):
        self.callback = callback
        self.onReset = onReset
        self.offset = 0
        self.epoch = None


class MessagingClient:
    """
    One device's presence, queue and history subjects.

    @param device: the device id (Bimip C{connection_resource_id}); keep
        it stable across sessions, it names the device's queue position.
    @param status: the presence status bound with.
    @param lastDelivered: the highest queue offset already given to the
        application (from a previous run).

    @ivar onMessage: C{callback(wire.Message)} for each queued message.
    @ivar onReceipt: C{callback(wire.Signal)} for each receipt.
    @ivar onAwareness: C{callback(wire.Awareness)} for each change of a
        watched entity (and activities directed at this entity).
    @ivar onSubscription: C{callback(wire.AwarenessSubscription)}: a
        request to watch this entity, or the answer to one of its own.
    @ivar identity: the bound L{wire.Identity} (with the server's node).
    """

    def __init__(self, device, status=Status.ONLINE, details="", lastDelivered=0):
        self.device = device
        self.status = status
        self.details = details
        self.lastDelivered = lastDelivered
        self.protocol = None
        self.identity = None
        self.onMessage = self.onReceipt = self.onAwareness = self.onSubscription = None
        self._outbox = {}
        self._histories = {}

    # -- sessions ----------------------------------------------------------------

    def attach(self, protocol):
        """
        Bind this device on C{protocol} (an open L{XTMPProtocol} to the
        server); a Deferred firing with the server's Bind answer.
        """
        self.protocol = protocol
        for messageType, handler in ((StanzaType.Message, self._messagePushed),
                                     (StanzaType.Signal, self._signalPushed),
                                     (StanzaType.Awareness, self._awarenessPushed),
                                     (StanzaType.AwarenessSubscription,
                                      self._subscriptionPushed),
                                     (StanzaType.ChannelHistory, self._historyPushed)):
            protocol.setHandler(messageType, handler)
        d = self._request(StanzaType.Bind, wire.Bind(
            identity=wire.Identity(eid="", device=self.device), status=int(self.status),
            details=self.details))

        def bound(answer):
            self.identity = answer.identity
            self.lastDelivered = max(self.lastDelivered, answer.delivered)
            for outgoing in list(self._outbox.values()):
                self._transmit(outgoing)
            for subject, watch in list(self._histories.items()):
                self._subscribeHistory(subject, watch, watch.epoch is not None)
            return answer
        return d.addCallback(bound)

    @property
    def entity(self):
        """
        The bound entity's name, or L{None} before the first bind.
        """
        return self.identity.eid if self.identity is not None else None

    def _request(self, messageType, stanza, timeout=None):
        protocol = self.protocol
        if protocol is None:
            return fail(RuntimeError("attach the client to a session first"))
        d = protocol.request(messageType, stanza.encode(), timeout=timeout)
        return d.addCallback(lambda m: wire.decodeStanza(m.type, m.payload))

    def _send(self, messageType, stanza):
        protocol = self.protocol
        if protocol is not None and protocol.connection is not None:
            try:
                protocol.send(messageType, stanza.encode())
            except Exception as e:
                log.info("not sent (the next session resends): {error}", error=e)

    # -- queues ------------------------------------------------------------------

    def send(self, to, payload, messageId=None, receipts=True, **fields):
        """
        Send C{payload} to entity C{to}'s queue; a Deferred firing with
        the server's Signal SENT (C{signal_offset} in C{to}'s queue,
        C{user_offset} of the copy in this entity's, C{duplicate}) once it
        is durable.  C{fields}: C{encryption_type}, C{encrypted},
        C{signature}, carried as they are.
        """
        messageId = messageId or uuid.uuid4().hex
        if messageId in self._outbox:
            return fail(ValueError("message %r is being sent already" % (messageId,)))
        outgoing = _Outgoing(wire.Message(id=messageId, to=wire.Identity(eid=to),
                                          payload=payload, no_receipts=not receipts,
                                          **fields))
        self._outbox[messageId] = outgoing
        self._transmit(outgoing)
        return outgoing.deferred

    @property
    def unsent(self):
        """
        How many sent messages wait for the server's SENT.
        """
        return len(self._outbox)

    def _transmit(self, outgoing):
        if outgoing.sending or self.protocol is None or self.identity is None:
            return
        outgoing.sending = True
        protocol = self.protocol
        d = self._request(StanzaType.Message, outgoing.stanza)

        def sent(signal):
            outgoing.sending = False
            if self._outbox.pop(outgoing.stanza.id, None) is not None:
                outgoing.deferred.callback(signal)

        def failed(failure):
            outgoing.sending = False
            if failure.check(PeerError) and not self._lost(protocol):
                # The server refused it: it will not be stored.
                if self._outbox.pop(outgoing.stanza.id, None) is not None:
                    outgoing.deferred.errback(failure)
            elif failure.check(RequestTimeout) and not self._lost(protocol):
                self._transmit(outgoing)
            # Otherwise the session is gone: the next attach resends it.
        d.addCallbacks(sent, failed)

    @staticmethod
    def _lost(protocol):
        connection = protocol.connection
        return connection is None or connection.state != "OPEN"

    def acknowledge(self, offset, read=False):
        """
        Acknowledge record C{offset} of this device's queue delivered (or
        read, which sends the sender a READ receipt).
        """
        self._send(StanzaType.Signal, wire.Signal(
            signal_offset=offset, status=ACK, type=REQUEST,
            signal_ack_state=wire.SignalAckState(delivered=not read, read=read)))

    def markRead(self, offset):
        """
        Mark the message at C{offset} read: its sender gets a READ receipt.
        """
        self.acknowledge(offset, read=True)

    def resume(self):
        """
        Ask the server to send the queue again from the device's durable
        position (Signal RESUME).
        """
        self._send(StanzaType.Signal, wire.Signal(status=RESUME, type=REQUEST))

    def _record(self, offset):
        # Whether record C{offset} is new to the application.
        if offset <= self.lastDelivered:
            self.acknowledge(offset)
            return False
        return True

    def _delivered(self, offset):
        self.lastDelivered = offset
        self.acknowledge(offset)

    def _call(self, callback, value, what):
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            log.failure("messaging {what} callback failed", what=what)

    def _messagePushed(self, protocol, message):
        push = wire.Message.decode(message.payload)
        offset = push.signal_offset
        if not self._record(offset):
            return None
        sender = push.from_
        own = sender is not None and self.identity is not None and \
            sender.eid == self.identity.eid and sender.device == self.device
        if not own:
            self._call(self.onMessage, push, "message")
        self._delivered(offset)
        return None

    def _signalPushed(self, protocol, message):
        signal = wire.Signal.decode(message.payload)
        if not self._record(signal.signal_offset):
            return None
        self._call(self.onReceipt, signal, "receipt")
        self._delivered(signal.signal_offset)
        return None

    # -- presence ----------------------------------------------------------------

    def _awarenessPushed(self, protocol, message):
        self._call(self.onAwareness, wire.Awareness.decode(message.payload), "awareness")

    def _subscriptionPushed(self, protocol, message):
        self._call(self.onSubscription, wire.AwarenessSubscription.decode(message.payload),
                   "subscription")

    def setStatus(self, status, details=""):
        """
        Set this device's status (ONLINE, AWAY, BUSY, DND); a Deferred of
        the server's Awareness answer.
        """
        d = self._request(StanzaType.Awareness, wire.Awareness(
            type=REQUEST, status=int(status), details=details))

        def remember(answer):
            self.status, self.details = Status(status), details
            return answer
        return d.addCallback(remember)

    def setActivity(self, status, ttl, to=None):
        """
        Start an activity (TYPING, RECORDING) lasting C{ttl} seconds, for
        C{to} only if given, else for the watchers.
        """
        return self._request(StanzaType.Awareness, wire.Awareness(
            type=REQUEST, status=int(status), ttl=ttl,
            to=wire.Identity(eid=to) if to else None))

    def setLocation(self, latitude, longitude, sharing=LocationSharing.ON):
        """
        Report this device's location (watchers see it only when shared).
        """
        return self._request(StanzaType.LocationStream, wire.LocationStream(
            latitude=latitude, longitude=longitude, location_sharing=int(sharing)))

    def setVisibility(self, visible):
        """
        Show or hide this entity (hidden, it looks offline to everyone).
        """
        return self._request(StanzaType.AwarenessVisibility, wire.AwarenessVisibility(
            type=int(Visibility.VISIBLE if visible else Visibility.HIDDEN)))

    def _subscription(self, action, other):
        return self._request(StanzaType.AwarenessSubscription, wire.AwarenessSubscription(
            type=REQUEST, action=action, to=wire.Identity(eid=other)))

    def requestSubscription(self, target):
        """
        Ask to see C{target}'s awareness; a Deferred of the answer (its
        C{state}: REQUESTED, or APPROVED/DENIED if decided before).
        """
        return self._subscription(wire.SUBSCRIBE, target)

    def approve(self, watcher):
        """
        Let C{watcher} see this entity's awareness.
        """
        return self._subscription(wire.APPROVE, watcher)

    def deny(self, watcher):
        """
        Refuse C{watcher}'s request.
        """
        return self._subscription(wire.DENY, watcher)

    def unsubscribe(self, target):
        """
        Stop watching C{target}.
        """
        return self._subscription(wire.UNSUBSCRIBE, target)

    def removeWatcher(self, watcher):
        """
        Stop C{watcher} watching this entity.
        """
        return self._subscription(wire.REMOVE_WATCHER, watcher)

    def presence(self, entity=None):
        """
        C{entity}'s status and devices (this entity's by default; another
        needs an approved subscription): a Deferred of a PresenceQuery.
        """
        return self._request(StanzaType.PresenceQuery, wire.PresenceQuery(
            to=wire.Identity(eid=entity) if entity else None, what=wire.QUERY_PRESENCE))

    def watchers(self):
        """
        This entity's watchers with their states (PresenceQuery
        C{subscriptions}).
        """
        return self._request(StanzaType.PresenceQuery,
                             wire.PresenceQuery(what=wire.QUERY_WATCHERS))

    def subscriptions(self):
        """
        The entities this one watches or asked to, with the states.
        """
        return self._request(StanzaType.PresenceQuery,
                             wire.PresenceQuery(what=wire.QUERY_SUBSCRIPTIONS))

    # -- history subjects --------------------------------------------------------

    def subscribeHistory(self, subject, callback, onReset=None, since=None):
        """
        Subscribe to history subject C{subject}: C{callback(wire.Publication)}
        gets every publication once, in offset order; with C{since}
        C{(offset, epoch)}, first what was missed after it.  When recovery
        is impossible, C{onReset(failure, offset, epoch)} is told (failure:
        RecoveryFailure) and publications go on from there.  A Deferred of
        the server's answer.
        """
        if subject in self._histories:
            return fail(ValueError("subscribed to %r already" % (subject,)))
        watch = _HistoryWatch(callback, onReset)
        if since is not None:
            watch.offset, watch.epoch = since
        self._histories[subject] = watch
        return self._subscribeHistory(subject, watch, since is not None)

    def historyPosition(self, subject):
        """
        C{(offset, epoch)} last seen on C{subject}.
        """
        watch = self._histories[subject]
        return watch.offset, watch.epoch

    def _subscribeHistory(self, subject, watch, recover):
        d = self._request(StanzaType.ChannelHistory, wire.ChannelHistory(
            subject=subject, type=HISTORY_SUBSCRIBE, recover=recover,
            offset=watch.offset, epoch=watch.epoch or ""))

        def answered(answer):
            for publication in answer.publications:
                self._publication(subject, watch, publication)
            if recover and not answer.recovered:
                self._reset(watch, answer)
            watch.offset, watch.epoch = max(watch.offset if watch.epoch == answer.epoch
                                            else 0, answer.offset), answer.epoch
            return answer
        return d.addCallback(answered)

    def unsubscribeHistory(self, subject):
        """
        Stop the history subscription to C{subject}.
        """
        if self._histories.pop(subject, None) is None:
            return succeed(None)
        return self._request(StanzaType.ChannelHistory, wire.ChannelHistory(
            subject=subject, type=HISTORY_UNSUBSCRIBE))

    def _publication(self, subject, watch, publication):
        if publication.epoch == watch.epoch and publication.offset <= watch.offset:
            return
        watch.offset, watch.epoch = publication.offset, publication.epoch
        self._call(watch.callback, publication, "history")

    def _reset(self, watch, stanza):
        watch.offset, watch.epoch = stanza.offset, stanza.epoch
        if watch.onReset is not None:
            try:
                watch.onReset(stanza.failure, stanza.offset, stanza.epoch)
            except Exception:
                log.failure("history reset callback failed")

    def _historyPushed(self, protocol, message):
        stanza = wire.ChannelHistory.decode(message.payload)
        watch = self._histories.get(stanza.subject)
        if watch is None:
            return None
        if stanza.type == HISTORY_PUBLICATION:
            for publication in stanza.publications:
                self._publication(stanza.subject, watch, publication)
        elif stanza.type == HISTORY_RESET:
            self._reset(watch, stanza)
        return None
