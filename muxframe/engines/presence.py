"""
Presence rules: devices, statuses, activities, location, visibility, and
who is told what.  No I/O; time is passed in (Unix ms).

Rules:

 - An entity's devices are online from C{connect} until C{disconnect}, or
   until C{deviceTimeout} seconds pass with nothing heard from the device
   (connect, heartbeat, status, location or activity).  An entity with no
   online device is OFFLINE.
 - Each device has a presence status (ONLINE, AWAY, BUSY, DND).  The
   entity's status is the most available of its devices' statuses, in the
   order ONLINE, AWAY, BUSY, DND: it is reachable somewhere.
 - Every change of a device's presence (it came, went, changed status,
   details or location) raises the entity's C{version} (to the greater of
   version + 1, the time in microseconds and the table's last version + 1,
   so it grows across an entity forgotten while offline and across
   restarts) and sends an
   AWARENESS notice to each APPROVED watcher, carrying the entity's status
   after the change and the device that changed.  Heartbeats change
   nothing and tell nobody.
 - Location is shown (in notices and to viewers other than the entity)
   only when the device shares it; otherwise latitude and longitude are
   0.0 and sharing OFF.
 - A HIDDEN entity looks OFFLINE, with no devices, to everyone but itself:
   hiding sends OFFLINE once, changes while hidden send nothing, showing
   sends the true state.
 - Activities (TYPING, RECORDING) last C{ttl} seconds (1 to C{maxActivityTtl});
   one directed at an entity (C{to}) goes to that entity only, one not
   directed goes to the APPROVED watchers.  Receivers expire them at
   timestamp + ttl; no notice is sent when they end.  A hidden entity's
   activities go nowhere.  Activities need the device online.
 - An approved subscription sends the watcher the target's current
   awareness right after the answer.
"""

import heapq

from muxframe.engines.errors import EngineUsageError, LimitExceeded
from muxframe.engines.model import (
    ACTIVITY_STATUSES,
    PRESENCE_STATUSES,
    Activity,
    Awareness,
    DevicePresence,
    EntityPresence,
    Location,
    LocationSharing,
    NoticeKind,
    PresenceNotice,
    Status,
    SubscriptionState,
    Visibility,
    checkName,
)

#: Most available first.
STATUS_ORDER = (Status.ONLINE, Status.AWAY, Status.BUSY, Status.DND)
_RANK = {status: rank for rank, status in enumerate(STATUS_ORDER)}


def aggregateStatus(statuses):
    """
    The entity status for its devices' C{statuses}: OFFLINE for none, else
    the most available.
    """
    best = None
    for status in statuses:
        if best is None or _RANK[status] < _RANK[best]:
            best = status
    return Status.OFFLINE if best is None else best


def nextVersion(version, now):
    """
    The version after C{version} at C{now} (ms): greater than it and than
    the time in microseconds, so versions grow across an entity forgotten
    while offline and across restarts.
    """
    return max(version + 1, now * 1000)


def checkPresenceStatus(status):
    """
    Return C{status} as a L{Status} if a device may set it as presence.
    """
    try:
        status = Status(status)
    except ValueError:
        raise EngineUsageError("unknown status %r" % (status,))
    if status not in PRESENCE_STATUSES:
        raise EngineUsageError("%s is not a presence status (ONLINE, AWAY, BUSY, DND)" % (
            status.name,))
    return status


def checkActivity(status, ttl, maxActivityTtl):
    """
    Return C{(status, ttl)} checked for an activity.
    """
    try:
        status = Status(status)
    except ValueError:
        raise EngineUsageError("unknown status %r" % (status,))
    if status not in ACTIVITY_STATUSES:
        raise EngineUsageError("%s is not an activity (TYPING, RECORDING)" % (status.name,))
    if not isinstance(ttl, int) or not 1 <= ttl <= maxActivityTtl:
        raise EngineUsageError("activity ttl must be 1 to %d seconds, not %r" % (
            maxActivityTtl, ttl))
    return status, ttl


def makeAwareness(entity, device, devices, visibility, version, now):
    """
    The L{Awareness} watchers get after a change of C{device}: C{devices}
    maps device -> L{DevicePresence} (the entity's online devices after the
    change).
    """
    if visibility == Visibility.HIDDEN or not devices:
        return Awareness(entity, device, Status.OFFLINE, now, version, visibility=visibility)
    changed = devices.get(device)
    details = changed.details if changed is not None else ""
    location = changed.location if changed is not None else None
    if location is not None and location.sharing == LocationSharing.ON:
        return Awareness(entity, device, aggregateStatus(d.status for d in devices.values()),
                         now, version, details, LocationSharing.ON,
                         location.latitude, location.longitude, visibility=visibility)
    return Awareness(entity, device, aggregateStatus(d.status for d in devices.values()),
                     now, version, details, visibility=visibility)


def presenceView(presence, viewer):
    """
    What C{viewer} (an entity, or L{None} for the server) may see of the
    L{EntityPresence} C{presence}.
    """
    if viewer is None or viewer == presence.entity:
        return presence
    if presence.visibility == Visibility.HIDDEN:
        return EntityPresence(presence.entity, Status.OFFLINE, (), (), presence.visibility,
                              presence.version)
    devices = tuple(
        d if d.location is None or d.location.sharing == LocationSharing.ON
        else DevicePresence(d.device, d.status, d.node, d.since, d.lastSeen, d.details, None)
        for d in presence.devices)
    activities = tuple(a for a in presence.activities if a.to is None or a.to == viewer)
    return EntityPresence(presence.entity, presence.status, devices, activities,
                          presence.visibility, presence.version)


def awarenessNotices(awareness, watchers):
    """
    AWARENESS notices of C{awareness} for each of C{watchers}.
    """
    return [PresenceNotice(NoticeKind.AWARENESS, w, awareness.entity, awareness,
                           timestamp=awareness.timestamp) for w in sorted(watchers)]


def activityAwareness(entity, device, status, ttl, to, visibility, version, now):
    """
    The L{Awareness} carrying an activity.
    """
    return Awareness(entity, device, status, now, version, ttl=ttl,
                     visibility=visibility, to=to)


class _Entity:
    __slots__ = ("devices", "activities", "version")

    def __init__(self):
        self.devices = {}
        self.activities = {}
        self.version = 0


class PresenceTable:
    """
    The presence of every entity seen, with the L{SubscriptionBook} deciding
    who hears of changes.  Every mutating method returns the
    L{PresenceNotice}s to deliver.
    """

    def __init__(self, book, deviceTimeout=30.0, maxDevices=64, maxActivityTtl=60,
                 maxEntities=1000000):
        self.book = book
        self.deviceTimeout = deviceTimeout
        self.maxDevices = maxDevices
        self.maxActivityTtl = maxActivityTtl
        self.maxEntities = maxEntities
        self._entities = {}
        self._visibility = {}
        self._deadlines = []
        self._lastVersion = 0

    def visibility(self, entity):
        """
        The entity's L{Visibility}.
        """
        return self._visibility.get(entity, Visibility.VISIBLE)

    def loadVisibility(self, entity, visibility):
        """
        Set a visibility loaded from storage (tells nobody).
        """
        if Visibility(visibility) == Visibility.VISIBLE:
            self._visibility.pop(entity, None)
        else:
            self._visibility[entity] = Visibility.HIDDEN

    def _timeoutAt(self, now):
        return now + int(self.deviceTimeout * 1000)

    def _nextVersion(self, version, now):
        self._lastVersion = max(nextVersion(version, now), self._lastVersion + 1)
        return self._lastVersion

    def _change(self, entity, state, device, now):
        state.version = self._nextVersion(state.version, now)
        if not state.devices and not state.activities:
            self._entities.pop(entity, None)
        if self.visibility(entity) == Visibility.HIDDEN:
            return []
        awareness = makeAwareness(entity, device, state.devices, self.visibility(entity),
                                  state.version, now)
        return awarenessNotices(awareness, self.book.watchers(entity, SubscriptionState.APPROVED))

    def _online(self, entity, device):
        state = self._entities.get(entity)
        if state is None or device not in state.devices:
            raise EngineUsageError("device %r of %r is not online" % (device, entity))
        return state

    def _touch(self, entity, device, dp, now):
        # The deadline heap holds one entry per online device, pushed when it
        # comes online; expire() moves an entry on when the device was heard
        # from since, so heartbeats cost no heap work.
        return DevicePresence(dp.device, dp.status, dp.node, dp.since, now, dp.details,
                              dp.location)

    def connect(self, entity, device, node, now, status=Status.ONLINE, details=""):
        """
        A session of the device began on C{node}.
        """
        checkName(entity, "entity")
        checkName(device, "device")
        status = checkPresenceStatus(status)
        state = self._entities.get(entity)
        if state is None:
            if len(self._entities) >= self.maxEntities:
                raise LimitExceeded("more than %d entities present" % (self.maxEntities,),
                                    "maxEntities")
            state = self._entities[entity] = _Entity()
        old = state.devices.get(device)
        if old is None and len(state.devices) >= self.maxDevices:
            raise LimitExceeded("%r has %d devices online" % (entity, self.maxDevices),
                                "maxDevices")
        dp = DevicePresence(device, status, node, now if old is None else old.since, now, details,
                            None if old is None else old.location)
        state.devices[device] = dp
        if old is None:
            heapq.heappush(self._deadlines, (self._timeoutAt(now), entity, device))
        if old is not None and old.status == status and old.details == details:
            return []
        return self._change(entity, state, device, now)

    def isOnline(self, entity, device):
        """
        Whether C{entity}'s C{device} is online.
        """
        state = self._entities.get(entity)
        return state is not None and device in state.devices

    def heartbeat(self, entity, device, now):
        """
        The device is alive; return whether it was online.
        """
        state = self._entities.get(entity)
        if state is None or device not in state.devices:
            return False
        state.devices[device] = self._touch(entity, device, state.devices[device], now)
        return True

    def disconnect(self, entity, device, now, node=None):
        """
        The device's session ended (with C{node}: only if the device is
        online through that node).
        """
        state = self._entities.get(entity)
        if state is None or device not in state.devices:
            return []
        if node is not None and state.devices[device].node != node:
            return []
        del state.devices[device]
        state.activities.pop(device, None)
        return self._change(entity, state, device, now)

    def setStatus(self, entity, device, status, details, now):
        """
        The device set its presence status.
        """
        status = checkPresenceStatus(status)
        state = self._online(entity, device)
        old = state.devices[device]
        state.devices[device] = self._touch(entity, device, DevicePresence(
            device, status, old.node, old.since, now, details, old.location), now)
        if old.status == status and old.details == details:
            return []
        return self._change(entity, state, device, now)

    def setLocation(self, entity, device, latitude, longitude, sharing, now):
        """
        The device reported its location.
        """
        sharing = LocationSharing(sharing)
        if not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
            raise EngineUsageError("latitude/longitude out of range: %r, %r" % (
                latitude, longitude))
        state = self._online(entity, device)
        old = state.devices[device]
        location = Location(float(latitude), float(longitude), sharing)
        state.devices[device] = self._touch(entity, device, DevicePresence(
            device, old.status, old.node, old.since, now, old.details, location), now)
        if old.location == location:
            return []
        return self._change(entity, state, device, now)

    def setActivity(self, entity, device, status, ttl, to, now):
        """
        The device started an ephemeral activity.
        """
        status, ttl = checkActivity(status, ttl, self.maxActivityTtl)
        if to is not None:
            checkName(to, "to")
        state = self._online(entity, device)
        state.devices[device] = self._touch(entity, device, state.devices[device], now)
        state.activities[device] = Activity(device, status, now + ttl * 1000, to)
        if self.visibility(entity) == Visibility.HIDDEN:
            return []
        awareness = activityAwareness(entity, device, status, ttl, to, Visibility.VISIBLE,
                                      state.version, now)
        recipients = [to] if to is not None else self.book.watchers(
            entity, SubscriptionState.APPROVED)
        return [PresenceNotice(NoticeKind.ACTIVITY, r, entity, awareness, timestamp=now)
                for r in sorted(recipients)]

    def setVisibility(self, entity, visibility, now):
        """
        Hide or show the entity.
        """
        checkName(entity, "entity")
        visibility = Visibility(visibility)
        if visibility == self.visibility(entity):
            return []
        self.loadVisibility(entity, visibility)
        state = self._entities.get(entity)
        devices = state.devices if state is not None else {}
        version = self._nextVersion(state.version if state is not None else 0, now)
        if state is not None:
            state.version = version
        awareness = makeAwareness(entity, "", devices, visibility, version, now)
        return awarenessNotices(awareness, self.book.watchers(entity, SubscriptionState.APPROVED))

    def nextDeadline(self):
        """
        The earliest time (ms) at which L{expire} may have work (perhaps
        only moving a deadline on), or L{None}.
        """
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now):
        """
        Take offline every device not heard from within C{deviceTimeout};
        return the notices.
        """
        notices = []
        while self._deadlines and self._deadlines[0][0] <= now:
            expiresAt, entity, device = heapq.heappop(self._deadlines)
            state = self._entities.get(entity)
            dp = state.devices.get(device) if state is not None else None
            if dp is None:
                # Gone already; a device that comes back pushes a new entry.
                continue
            due = self._timeoutAt(dp.lastSeen)
            if due > now:
                heapq.heappush(self._deadlines, (due, entity, device))
                continue
            notices.extend(self.disconnect(entity, device, now))
        return notices

    def presence(self, entity, now, viewer=None):
        """
        The entity's L{EntityPresence} as C{viewer} may see it.
        """
        state = self._entities.get(entity)
        if state is None:
            return presenceView(EntityPresence(entity, Status.OFFLINE, (), (),
                                               self.visibility(entity)), viewer)
        activities = tuple(a for _, a in sorted(state.activities.items()) if a.expiresAt > now)
        devices = tuple(d for _, d in sorted(state.devices.items()))
        return presenceView(EntityPresence(
            entity, aggregateStatus(d.status for d in devices), devices, activities,
            self.visibility(entity), state.version), viewer)

    def awarenessFor(self, entity, now):
        """
        The entity's current awareness as watchers see it.
        """
        state = self._entities.get(entity)
        devices = state.devices if state is not None else {}
        version = state.version if state is not None else 0
        device = sorted(devices)[0] if devices else ""
        return makeAwareness(entity, device, devices, self.visibility(entity), version, now)

    def devicesOn(self, node):
        """
        The C{(entity, device)} pairs whose sessions are on C{node}.
        """
        return [(e, d) for e, state in self._entities.items()
                for d, dp in state.devices.items() if dp.node == node]


def subscriptionNotices(event, watcher, target, newState, tell, now, currentAwareness):
    """
    The notices a subscription event sends: a request notice to the target,
    an answer to the watcher and, when approved, the target's current
    awareness (C{currentAwareness()}) to the watcher.
    """
    if not tell:
        return []
    if event == "request":
        return [PresenceNotice(NoticeKind.SUBSCRIPTION_REQUEST, target, watcher,
                               subscription=newState, timestamp=now)]
    notices = [PresenceNotice(NoticeKind.SUBSCRIPTION_ANSWER, watcher, target,
                              subscription=newState, timestamp=now)]
    if newState == SubscriptionState.APPROVED:
        awareness = currentAwareness()
        notices.append(PresenceNotice(NoticeKind.AWARENESS, watcher, target, awareness,
                                      timestamp=now))
    return notices
