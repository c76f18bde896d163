"""
The presence messages of the XTMP server (C{docs/presence-and-queues.md}
section 9): a bound device's status, activities, location and
visibility; approval-gated awareness subscriptions; queries; and the
engine's notices turned into messages to the sessions of the entity they
are addressed to.

Rules:

  - Requests are answered with the same stanza type, as the server
    stamped it (type RESPONSE, C{from} the device, the server's
    timestamp); a refusal is an Error answering it.
  - Awareness status 1, 3, 4, 5 sets the device's presence; 6 and 7 are
    activities lasting C{ttl} seconds (to C{to} only, when given); 2
    OFFLINE is refused (a device goes offline by ending its session; an
    entity hides with AwarenessVisibility).
  - A PresenceQuery of another entity's presence needs an APPROVED
    subscription to it; watchers and subscriptions are one's own only.
  - Notices reach every bound session of their recipient on this node;
    one whose send buffers are full misses it (it can query).
"""

from muxframe.engines.model import (
    ACTIVITY_STATUSES, PRESENCE_STATUSES, LocationSharing, NoticeKind, Status,
    SubscriptionState, Visibility)
from muxframe.messaging import wire
from muxframe.messaging.wire import RESPONSE, StanzaType
from muxframe.server.errors import Refusal
from muxframe.server.storage import raiseRefusal
from muxframe.xtmp.errors import XTMPErrorCode

_ACTIONS = {wire.SUBSCRIBE: "request", wire.APPROVE: "approve", wire.DENY: "deny",
            wire.UNSUBSCRIBE: "unsubscribe", wire.REMOVE_WATCHER: "remove"}


def _decode(cls, payload):
    try:
        return cls.decode(payload)
    except wire.WireError as e:
        raise Refusal(str(e), XTMPErrorCode.BAD_REQUEST)


def _other(identity, what):
    if identity is None or not identity.eid:
        raise Refusal("%s needs to.eid" % (what,), XTMPErrorCode.BAD_REQUEST)
    return identity.eid


def awarenessStanza(awareness):
    """
    The wire Awareness (a notice, type RESPONSE) of an engine
    L{muxframe.engines.model.Awareness}.
    """
    return wire.Awareness(
        from_=wire.Identity(eid=awareness.entity, device=awareness.device or None),
        to=wire.Identity(eid=awareness.to) if awareness.to else None, type=RESPONSE,
        status=int(awareness.status), location_sharing=int(awareness.locationSharing),
        latitude=awareness.latitude, longitude=awareness.longitude, ttl=awareness.ttl,
        details=awareness.details, timestamp=awareness.timestamp,
        visibility=int(awareness.visibility), version=awareness.version)


class PresenceHandlers:
    """
    The presence stanzas on a L{Storage}.
    """

    def __init__(self, storage):
        self.storage = storage

    def routes(self):
        """
        C{{stanza type: handler(session, message)}}.
        """
        return {StanzaType.Awareness: self.awareness,
                StanzaType.AwarenessVisibility: self.visibility,
                StanzaType.LocationStream: self.location,
                StanzaType.AwarenessSubscription: self.subscription,
                StanzaType.PresenceQuery: self.query}

    @property
    def _engine(self):
        return self.storage.engine.presence

    def _answer(self, session, message, stanza):
        if session.isConnected():
            session.respond(message, stanza.encode())

    # -- requests ------------------------------------------------------------

    def awareness(self, session, message):
        """
        Awareness (0x52): set the device's status or start an activity.
        """
        binding = self.storage.bound(session)
        request = _decode(wire.Awareness, message.payload)
        self.storage.checkFrom(binding, request.from_)
        status = request.status
        engine = self._engine
        if status in PRESENCE_STATUSES:
            d = engine.setStatus(binding.entity, binding.device, status, request.details)

            def remember(presence):
                binding.status, binding.details = Status(status), request.details
                return presence.version
            d.addCallback(remember)
        elif status in ACTIVITY_STATUSES:
            to = request.to.eid if request.to is not None and request.to.eid else None
            d = engine.setActivity(binding.entity, binding.device, status, request.ttl, to)
            d.addCallback(lambda _: 0)
        else:
            raise Refusal("awareness status %d is not one a device sets (1, 3, 4, 5 "
                          "presence; 6, 7 activities)" % (status,),
                          XTMPErrorCode.BAD_REQUEST)

        def done(version):
            self._answer(session, message, wire.Awareness(
                id=request.id, from_=binding.identity(self.storage.nodeId),
                to=request.to, type=RESPONSE, status=status,
                ttl=request.ttl if status in ACTIVITY_STATUSES else 0,
                details=request.details, timestamp=self.storage.now(), version=version))
        return d.addCallbacks(done, raiseRefusal)

    def visibility(self, session, message):
        """
        AwarenessVisibility (0x54): hide or show the entity.
        """
        binding = self.storage.bound(session)
        request = _decode(wire.AwarenessVisibility, message.payload)
        self.storage.checkFrom(binding, request.from_)
        if request.type not in (Visibility.VISIBLE, Visibility.HIDDEN):
            raise Refusal("visibility type must be 1 (visible) or 2 (hidden), not %d"
                          % (request.type,), XTMPErrorCode.BAD_REQUEST)
        d = self._engine.setVisibility(binding.entity, request.type)

        def done(_):
            self._answer(session, message, wire.AwarenessVisibility(
                id=request.id, from_=binding.identity(self.storage.nodeId),
                type=request.type, timestamp=self.storage.now(), details=request.details))
        return d.addCallbacks(done, raiseRefusal)

    def location(self, session, message):
        """
        LocationStream (0x59): the device's location (shown to watchers
        only with location_sharing 1).
        """
        binding = self.storage.bound(session)
        request = _decode(wire.LocationStream, message.payload)
        self.storage.checkFrom(binding, request.from_)
        sharing = request.location_sharing or LocationSharing.ON
        if sharing not in (LocationSharing.ON, LocationSharing.OFF):
            raise Refusal("location_sharing must be 1 or 2", XTMPErrorCode.BAD_REQUEST)
        d = self._engine.setLocation(binding.entity, binding.device, request.latitude,
                                     request.longitude, sharing)

        def done(_):
            self._answer(session, message, wire.LocationStream(
                id=request.id, from_=binding.identity(self.storage.nodeId),
                latitude=request.latitude, longitude=request.longitude,
                altitude=request.altitude, timestamp=self.storage.now(),
                location_sharing=sharing))
        return d.addCallbacks(done, raiseRefusal)

    def subscription(self, session, message):
        """
        AwarenessSubscription (0x5D): request, approve, deny or end a
        subscription.
        """
        binding = self.storage.bound(session)
        request = _decode(wire.AwarenessSubscription, message.payload)
        self.storage.checkFrom(binding, request.from_)
        action = _ACTIONS.get(request.action)
        if action is None:
            raise Refusal("action must be 1 to 5, not %d" % (request.action,),
                          XTMPErrorCode.BAD_REQUEST)
        other = _other(request.to, "a subscription")
        me, engine = binding.entity, self._engine
        if action == "request":
            d = engine.requestSubscription(me, other)
        elif action in ("approve", "deny"):
            d = engine.answerSubscription(me, other, action == "approve")
        elif action == "unsubscribe":
            d = engine.unsubscribe(me, other)
        else:
            d = engine.unsubscribe(other, me)

        def done(state):
            self._answer(session, message, wire.AwarenessSubscription(
                id=request.id, from_=binding.identity(self.storage.nodeId),
                to=wire.Identity(eid=other), type=RESPONSE, action=request.action,
                state=int(state), timestamp=self.storage.now()))
        return d.addCallbacks(done, raiseRefusal)

    def query(self, session, message):
        """
        PresenceQuery (0x5E): an entity's status and devices, or one's own
        watchers or subscriptions.
        """
        binding = self.storage.bound(session)
        request = _decode(wire.PresenceQuery, message.payload)
        me, engine = binding.entity, self._engine
        what = request.what or wire.QUERY_PRESENCE
        target = request.to.eid if request.to is not None and request.to.eid else me
        if what == wire.QUERY_PRESENCE:
            if target == me:
                d = engine.presence(target, me)
            else:
                d = engine.subscription(me, target)
                d.addCallback(self._allowed, me, target)
            d.addCallback(self._presenceAnswer, request)
        elif what in (wire.QUERY_WATCHERS, wire.QUERY_SUBSCRIPTIONS):
            if target != me:
                raise Refusal("watchers and subscriptions are one's own only",
                              XTMPErrorCode.PERMISSION_DENIED)
            d = engine.watchers(me) if what == wire.QUERY_WATCHERS else \
                engine.subscriptions(me)
            d.addCallback(lambda states: wire.PresenceQuery(
                id=request.id, to=wire.Identity(eid=me), what=what,
                subscriptions=[wire.SubscriptionEntry(eid=eid, state=int(state))
                               for eid, state in sorted(states.items())],
                timestamp=self.storage.now()))
        else:
            raise Refusal("what must be 1, 2 or 3, not %d" % (what,),
                          XTMPErrorCode.BAD_REQUEST)
        d.addCallback(lambda stanza: self._answer(session, message, stanza))
        return d.addErrback(raiseRefusal)

    def _allowed(self, state, me, target):
        if state != SubscriptionState.APPROVED:
            raise Refusal("%s has not approved %s's subscription" % (target, me),
                          XTMPErrorCode.PERMISSION_DENIED)
        return self._engine.presence(target, me)

    def _presenceAnswer(self, presence, request):
        devices = []
        for d in presence.devices:
            location = d.location
            devices.append(wire.Device(
                device=d.device, status=int(d.status), node=d.node, since=d.since,
                last_seen=d.lastSeen, details=d.details,
                location_sharing=int(location.sharing) if location else
                int(LocationSharing.OFF),
                latitude=location.latitude if location else 0.0,
                longitude=location.longitude if location else 0.0))
        return wire.PresenceQuery(
            id=request.id, to=wire.Identity(eid=presence.entity), what=wire.QUERY_PRESENCE,
            status=int(presence.status), visibility=int(presence.visibility),
            version=presence.version, devices=devices,
            activities=[wire.ActivityEntry(device=a.device, status=int(a.status),
                                           expires_at=a.expiresAt, to=a.to or "")
                        for a in presence.activities],
            timestamp=self.storage.now())

    # -- notices ---------------------------------------------------------------

    def noticed(self, notice):
        """
        A L{PresenceNotice} for an entity with bound sessions here.
        """
        bindings = self.storage.bindingsOf(notice.recipient)
        if not bindings:
            return
        if notice.kind in (NoticeKind.AWARENESS, NoticeKind.ACTIVITY):
            messageType = StanzaType.Awareness
            payload = awarenessStanza(notice.awareness).encode()
        else:
            request = notice.kind == NoticeKind.SUBSCRIPTION_REQUEST
            state = SubscriptionState(notice.subscription)
            messageType = StanzaType.AwarenessSubscription
            payload = wire.AwarenessSubscription(
                from_=wire.Identity(eid=notice.entity),
                to=wire.Identity(eid=notice.recipient), type=RESPONSE,
                action=wire.SUBSCRIBE if request else
                wire.APPROVE if state == SubscriptionState.APPROVED else wire.DENY,
                state=int(state), timestamp=notice.timestamp).encode()
        for binding in bindings:
            self.storage.send(binding, messageType, payload)
