"""
The Redis engine's presence: L{IPresenceManager} with the state in Redis,
changed by Lua scripts (atomic), the rules shared with the embedded engine
(L{muxframe.engines.presence}, L{muxframe.engines.subscriptions}).

Keys (P: prefix, E: entity):

 - C{P p:{E}:dev}: hash device -> JSON state (status, details, node,
   since, location); C{P p:{E}:act}: hash device -> JSON activity;
   C{P p:{E}:ver}: the entity's version.
 - C{P p:alive}: sorted set "E<US>device" -> time (ms) the device expires
   if not heard from.  The device and activity hashes also carry a Redis
   TTL of twice C{deviceTimeout}, refreshed by every sign of life, as a
   safety net.  Every node sweeps it every C{sweepInterval}; the
   script removes each expired member once, so exactly one node takes the
   device offline and tells its watchers (also when the hash's TTL took
   the device first).
 - C{P p:grace}: while it exists (it expires by itself) no node sweeps:
   the first sweep of a node after an outage of its Redis of at least a
   quarter of C{deviceTimeout} (sessions refresh every third of it: a
   shorter outage cannot have let a refreshed device expire) sets it for
   C{deviceTimeout} plus the longest reconnection delay, so that every
   node's sessions refresh their devices, which no one could while Redis
   was unreachable, before the devices that really stopped expire.
 - C{P p:vis}: hash entity -> visibility (HIDDEN only).
 - C{P s:{T}:w}: hash watcher -> state; C{P s:{W}:t}: hash target -> state.
 - Channel C{P n:<recipient>}: JSON notices; a node subscribes while it
   has a watch for the recipient.  Pub/sub is not durable: after the
   subscriber connection came back, L{RedisPresence.resync} reads the
   presence of every target the node's watched recipients subscribe to and
   tells them the current awareness of each that changed since the last
   notice they were told (see its docstring).
"""

import sys

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from muxframe.engines.errors import (
    EngineStopped, EngineUsageError, LimitExceeded, StorageUnavailable, SubscriptionError,
    firstError)
from muxframe.engines.interfaces import IPresenceManager
from muxframe.engines.model import (
    EntityPresence, Location, LocationSharing, NoticeKind, PresenceNotice, Status,
    SubscriptionState, Visibility, checkName)
from muxframe.engines.presence import (
    activityAwareness, aggregateStatus, awarenessNotices, checkActivity, checkPresenceStatus,
    makeAwareness, presenceView, subscriptionNotices)
from muxframe.engines.redisconn import RECONNECT_MAX, Script
from muxframe.engines.redisformat import (
    decodeActivity, decodeDevice, decodeNotice, encodeActivity, encodeDevicePatch,
    encodeNotice, pairs)
from muxframe.engines.subscriptions import TRANSITIONS
from muxframe.engines.watches import WatchList

log = Logger()

#: Targets read per step of L{RedisPresence.resync}: one MGET of their
#: versions and one HMGET of their visibility, then the presence of those
#: that changed, at most this many commands at once.
RESYNC_BATCH = 64
#: Milliseconds before a recipient's first watch on this node from which a
#: change of a target it was told nothing of counts as missed by a resync
#: (versions are stamped by the clock of the node that made the change).
RESYNC_SKEW = 2000

_BUMP = """
local function bump(key, now)
  local v = math.max(tonumber(redis.call('GET', key) or '0') + 1, now * 1000)
  redis.call('SET', key, string.format('%d', v))
  return v
end
local function visible(d)
  if not d then return '' end
  return tostring(d.s) .. '|' .. tostring(d.d) .. '|' .. tostring(d.la) .. '|' ..
         tostring(d.lo) .. '|' .. tostring(d.sh)
end
"""

# KEYS: dev, ver, alive, vis, watchers, act.  ARGV: op, device, patch,
# expiresAt, member, now, entity, maxDevices, key TTL (ms).
CHANGE = Script("presenceChange", _BUMP + """
local now = tonumber(ARGV[6])
local raw = redis.call('HGET', KEYS[1], ARGV[2])
local old = raw and cjson.decode(raw) or nil
local changed = 0
if ARGV[1] == 'del' then
  local only = cjson.decode(ARGV[3]).n
  if old and only and old.n ~= only then
    -- Online through another node now: that node's session owns it.
    old = nil
  else
    redis.call('ZREM', KEYS[3], ARGV[5])
    redis.call('HDEL', KEYS[6], ARGV[2])
  end
  if old then
    redis.call('HDEL', KEYS[1], ARGV[2])
    changed = 1
  end
else
  if ARGV[1] == 'update' and not old then return {-1} end
  if not old and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[8]) then return {-2} end
  local new = old and cjson.decode(raw) or {c = now}
  for k, v in pairs(cjson.decode(ARGV[3])) do new[k] = v end
  if not old or visible(old) ~= visible(new) then changed = 1 end
  redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(new))
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[9])
end
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if changed == 1 then version = bump(KEYS[2], now) end
return {changed, version, redis.call('HGETALL', KEYS[1]),
        redis.call('HGET', KEYS[4], ARGV[7]) or false, redis.call('HGETALL', KEYS[5])}
""")

# KEYS: dev, act, alive, vis, watchers.  ARGV: device, activity, expiresAt, member,
# entity, key TTL (ms).
ACTIVITY = Script("presenceActivity", """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {-1} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return {1, redis.call('HGET', KEYS[4], ARGV[5]) or false, redis.call('HGETALL', KEYS[5])}
""")

# KEYS: alive, dev.  ARGV: member, expiresAt, key TTL (ms), device.  Alive
# only if the device is in the hash too: the hash may have expired by its
# Redis TTL while the sorted set kept the member (an outage of Redis longer
# than twice deviceTimeout, its data kept: the expiry is in Redis's time).
HEARTBEAT = Script("presenceHeartbeat", """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
""")

# KEYS: vis, dev, ver, watchers.  ARGV: entity, visibility, now.
VISIBILITY = Script("presenceVisibility", _BUMP + """
local old = redis.call('HGET', KEYS[1], ARGV[1]) or '1'
if old == ARGV[2] then return {0} end
if ARGV[2] == '1' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
local version = bump(KEYS[3], tonumber(ARGV[3]))
return {1, version, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[4])}
""")

# KEYS: alive, grace.  ARGV: now, prefix, limit.
SWEEP = Script("presenceSweep", _BUMP + """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local now = tonumber(ARGV[1])
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  if redis.call('ZREM', KEYS[1], m) == 1 then
    local e, dev = string.match(m, '^(.*)\\31(.*)$')
    local base = ARGV[2] .. 'p:{' .. e .. '}'
    -- The device may be gone from its hash already (the hash's TTL ran
    -- out: an outage, a grace): its watchers are told all the same.
    redis.call('HDEL', base .. ':dev', dev)
    redis.call('HDEL', base .. ':act', dev)
    local version = bump(base .. ':ver', now)
    table.insert(out, {e, dev, version, redis.call('HGETALL', base .. ':dev'),
                       redis.call('HGET', ARGV[2] .. 'p:vis', e) or false,
                       redis.call('HGETALL', ARGV[2] .. 's:{' .. e .. '}:w')})
  end
end
return out
""")

# KEYS: dev, act, ver, vis, alive.  ARGV: entity, prefix.
QUERY = Script("presenceQuery", """
local devs = redis.call('HGETALL', KEYS[1])
local seen = {}
for i = 1, #devs, 2 do
  table.insert(seen, redis.call('ZSCORE', KEYS[5], ARGV[1] .. '\\31' .. devs[i]) or '0')
end
return {devs, seen, redis.call('HGETALL', KEYS[2]), redis.call('GET', KEYS[3]) or '0',
        redis.call('HGET', KEYS[4], ARGV[1]) or false}
""")

# KEYS: watchers of target, targets of watcher.  ARGV: event, watcher, target,
# maxSubscriptions, maxWatchers, then (event:state, new, tell) triples.
SUBSCRIPTION = Script("subscription", """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local new, tell = nil, 0
if ARGV[1] == 'unsubscribe' then new = 0 else
  local want = ARGV[1] .. ':' .. old
  for i = 6, #ARGV, 3 do
    if ARGV[i] == want then new, tell = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]) end
  end
end
if new == nil then return {-1, old} end
if old == 0 and new ~= 0 then
  if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return {-2, old} end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return {-3, old} end
end
if new == 0 then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[3])
else
  redis.call('HSET', KEYS[1], ARGV[2], new)
  redis.call('HSET', KEYS[2], ARGV[3], new)
end
return {new, tell, new ~= old and 1 or 0}
""")

_TRANSITION_ARGS = []
for (_event, _state), (_new, _tell) in TRANSITIONS.items():
    _TRANSITION_ARGS += ["%s:%d" % (_event, _state), int(_new), int(_tell)]


def _approved(flat):
    return [w for w, s in pairs(flat).items() if int(s) == SubscriptionState.APPROVED]


def presenceBase(prefix, entity):
    """
    The start of C{entity}'s presence keys (C{:dev} is its online devices,
    which the queue store reads too: a device online is never forgotten).
    """
    return "%sp:{%s}" % (prefix, entity)


def _packTold(version, hidden, byResync):
    """
    What watchers were told of a target, as one int (L{RedisPresence._told}).
    """
    return version * 4 + 2 * bool(hidden) + bool(byResync)


def _unpackTold(told):
    """
    C{(version, hidden, byResync)} of an int from L{_packTold}, or L{None}.
    """
    if told is None:
        return None
    return told >> 2, bool(told & 2), bool(told & 1)


@implementer(IPresenceManager)
class RedisPresence:
    """
    Presence shared by every node on one Redis.
    """

    def __init__(self, client, prefix, clock, nodeId, deviceTimeout=30.0, maxDevices=64,
                 maxActivityTtl=60, maxSubscriptions=10000, maxWatchers=100000,
                 sweepInterval=1.0):
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self.nodeId = nodeId
        self.deviceTimeout = deviceTimeout
        self.maxDevices = maxDevices
        self.maxActivityTtl = maxActivityTtl
        self.maxSubscriptions = maxSubscriptions
        self.maxWatchers = maxWatchers
        self.sweepInterval = sweepInterval
        self._watches = WatchList(self._firstWatch, self._lastWatch)
        self._sweep = None
        self._sweeping = None
        self._outagesSeen = client.outages
        # recipient -> the time (ms) of its first watch on this node.
        self._watchedSince = {}
        # recipient -> {target: told}: the last awareness of each target
        # its watchers were told (a notice, or L{resync}), as one int,
        # version * 4 + 2 * hidden + byResync (L{_packTold}): a pair
        # of every watcher and target is kept, so it is kept small, with
        # target names interned.
        self._told = {}
        #: Sweeps run (whether or not a grace held them back).
        self.sweeps = 0

    # Plumbing ----------------------------------------------------------

    def _now(self):
        return int(self._clock.seconds() * 1000)

    def _base(self, entity):
        return presenceBase(self._prefix, entity)

    def _keyTtl(self):
        # A safety net in Redis's own time: device hashes outlive the last
        # sign of life by twice the timeout, so presence left by nodes that
        # all died disappears even with no node left to sweep.
        return max(1000, int(self.deviceTimeout * 2000))

    def _member(self, entity, device):
        return "%s\x1f%s" % (entity, device)

    def _channel(self, recipient):
        return "%sn:%s" % (self._prefix, recipient)

    def start(self):
        """
        Start sweeping for devices that stopped answering.
        """
        self._sweep = LoopingCall(self._sweepOnce)
        self._sweep.clock = self._clock
        self._sweeping = self._sweep.start(self.sweepInterval, now=False)

    def stop(self):
        """
        Stop sweeping; a Deferred firing once a sweep in progress is done.
        """
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
            return self._sweeping
        return defer.succeed(None)

    def _firstWatch(self, recipient):
        # Its Deferred fires once Redis confirmed it (Watch.whenActive).
        self._watchedSince[recipient] = self._now()
        self._told.pop(recipient, None)
        return self._client.subscribe(self._channel(recipient))

    def _lastWatch(self, recipient):
        self._watchedSince.pop(recipient, None)
        self._told.pop(recipient, None)
        self._client.unsubscribe(self._channel(recipient))

    def messageReceived(self, channel, message):
        """
        A notice on an C{n:} channel (from the engine's dispatcher).
        """
        notice = decodeNotice(message)
        if notice.kind == NoticeKind.AWARENESS and notice.awareness is not None and \
                self._watches.has(notice.recipient):
            told = self._told.setdefault(notice.recipient, {})
            last = _unpackTold(told.get(notice.entity))
            version = notice.awareness.version
            if last is not None and last[2] and version <= last[0]:
                # A resync told this already, read while the notice was
                # on its way (or the notice is older than what it told).
                return
            told[sys.intern(notice.entity)] = _packTold(
                version, int(notice.awareness.visibility) == Visibility.HIDDEN, False)
        self._watches.notify(notice.recipient, notice)

    @staticmethod
    def _missed(last, version, hidden, since):
        # Whether the watchers, last told C{last} of a target, missed a
        # change to its C{version} (C{hidden} now).
        if last is None:
            # Told nothing here: changes since the watch began were owed.
            return version > since
        if hidden:
            # Changes while hidden tell nothing; hiding tells OFFLINE once
            # (hiding raises the version: a hidden state no newer than what
            # was told is a read older than a notice that came meanwhile).
            return not last[1] and version > last[0]
        return version > last[0]

    def _resyncAwareness(self, presence, now):
        # The current state, naming the device that came online last (none
        # when the entity is offline or hidden).
        devices = {d.device: d for d in presence.devices}
        device = max(devices.values(), key=lambda d: (d.since, d.device)).device \
            if devices else ""
        return makeAwareness(presence.entity, device, devices, presence.visibility,
                             presence.version, now)

    @defer.inlineCallbacks
    def resync(self):
        """
        Bring this node's presence watchers up to date after its subscriber
        connection came back (the notices published while it was away are
        lost): for each recipient watched here, its APPROVED targets are
        read in batches of L{RESYNC_BATCH} (their versions and visibility),
        and each target whose version is past the last awareness notice the
        recipient was told of it (or, when it was told none, whose change
        came after the recipient's first watch here), is read in full and
        one AWARENESS notice of its current state is delivered to the
        watchers, as a notice from Redis would be.  A hidden target is
        told (OFFLINE, hidden) only when it was last told visible.  The
        watchers are not told what they already know, and a notice of the
        same version arriving after the resync told it is dropped.
        Recipients are done one after the other; one that fails is skipped
        (the first failure of a resync is logged, then how many there were,
        not a traceback a recipient: an error Redis gives every read would
        log one for each entity watched here).
        """
        failed = 0
        for recipient in self._watches.keys():
            try:
                yield self._resyncRecipient(recipient)
            except (StorageUnavailable, EngineStopped):
                raise
            except Exception:
                failed += 1
                if failed == 1:
                    log.failure("resynchronising the presence watchers of {recipient!r} failed",
                                recipient=recipient)
        if failed > 1:
            log.error("resynchronising presence watchers failed for {count} entities (the "
                      "first failure is logged above)", count=failed)

    @defer.inlineCallbacks
    def _resyncRecipient(self, recipient):
        flat = yield self._client.call("HGETALL", "%ss:{%s}:t" % (self._prefix, recipient))
        if not self._watches.has(recipient):
            return
        targets = sorted(_approved(flat))
        told = self._told.setdefault(recipient, {})
        for gone in set(told) - set(targets):
            del told[gone]
        since = (self._watchedSince.get(recipient, 0) - RESYNC_SKEW) * 1000
        for start in range(0, len(targets), RESYNC_BATCH):
            batch = targets[start:start + RESYNC_BATCH]
            versions = yield self._client.call("MGET", *[self._base(t) + ":ver" for t in batch])
            visibility = yield self._client.call("HMGET", self._prefix + "p:vis", *batch)
            if self._told.get(recipient) is not told:
                # No longer watched here (or watched afresh): done.
                return
            due = [t for t, v, h in zip(batch, versions, visibility)
                   if self._missed(_unpackTold(told.get(t)), int(v or 0),
                                   bool(h) and int(h) == Visibility.HIDDEN, since)]
            if not due:
                continue
            # (gatherResults wraps a failure in FirstError: unwrapped, so a
            # Redis gone meanwhile is StorageUnavailable, which ends the
            # resync to be done again once Redis is back, not a failure
            # logged for this recipient and forgotten.)
            found = yield defer.gatherResults(
                [self.presence(t, viewer=recipient) for t in due], consumeErrors=True
            ).addErrback(firstError)
            if self._told.get(recipient) is not told:
                return
            now = self._now()
            for presence in found:
                hidden = presence.visibility == Visibility.HIDDEN
                if not self._missed(_unpackTold(told.get(presence.entity)), presence.version,
                                    hidden, since):
                    # A notice came meanwhile.
                    continue
                told[sys.intern(presence.entity)] = _packTold(presence.version, hidden, True)
                awareness = self._resyncAwareness(presence, now)
                self._watches.notify(recipient, PresenceNotice(
                    NoticeKind.AWARENESS, recipient, presence.entity, awareness, timestamp=now))

    def _publish(self, notices):
        return defer.gatherResults(
            [self._client.call("PUBLISH", self._channel(n.recipient), encodeNotice(n))
             for n in notices], consumeErrors=True)

    def _devices(self, flat, now):
        return {name: decodeDevice(name, raw, now) for name, raw in pairs(flat).items()}

    def _changeNotices(self, entity, device, version, devicesFlat, visibility, watchersFlat, now):
        visibility = Visibility(int(visibility)) if visibility else Visibility.VISIBLE
        if visibility == Visibility.HIDDEN:
            return []
        awareness = makeAwareness(entity, device, self._devices(devicesFlat, now), visibility,
                                  int(version), now)
        return awarenessNotices(awareness, _approved(watchersFlat))

    def watch(self, entity, callback):
        """
        See L{IPresenceManager.watch}.
        """
        checkName(entity, "entity")
        return self._watches.add(entity, callback)

    # Device changes ----------------------------------------------------

    @defer.inlineCallbacks
    def _change(self, op, entity, device, patch):
        now = self._now()
        base = self._base(entity)
        keys = [base + ":dev", base + ":ver", self._prefix + "p:alive", self._prefix + "p:vis",
                "%ss:{%s}:w" % (self._prefix, entity), base + ":act"]
        reply = yield self._client.run(CHANGE, keys, [
            op, device, patch, now + int(self.deviceTimeout * 1000),
            self._member(entity, device), now, entity, self.maxDevices, self._keyTtl()])
        if reply[0] == -1:
            raise EngineUsageError("device %r of %r is not online" % (device, entity))
        if reply[0] == -2:
            raise LimitExceeded("%r has %d devices online" % (entity, self.maxDevices),
                                "maxDevices")
        changed, version, devices, visibility, watchers = reply
        if changed:
            yield self._publish(self._changeNotices(entity, device, version, devices,
                                                    visibility, watchers, now))
        presence = yield self.presence(entity)
        return presence

    @defer.inlineCallbacks
    def connect(self, entity, device, status=None, details=""):
        """
        See L{IPresenceManager.connect}.
        """
        checkName(entity, "entity")
        checkName(device, "device")
        status = checkPresenceStatus(Status.ONLINE if status is None else status)
        presence = yield self._change("connect", entity, device,
                                      encodeDevicePatch(status, details, self.nodeId))
        return presence

    def heartbeat(self, entity, device):
        """
        See L{IPresenceManager.heartbeat}.
        """
        d = self._client.run(HEARTBEAT, [self._prefix + "p:alive", self._base(entity) + ":dev"], [
            self._member(entity, device), self._now() + int(self.deviceTimeout * 1000),
            self._keyTtl(), device])
        return d.addCallback(lambda alive: bool(int(alive)))

    def disconnect(self, entity, device, node=None):
        """
        See L{IPresenceManager.disconnect}.
        """
        try:
            checkName(entity, "entity")
            checkName(device, "device")
        except Exception:
            return defer.fail()
        return self._change("del", entity, device, encodeDevicePatch(node=node))

    def setStatus(self, entity, device, status, details=""):
        """
        See L{IPresenceManager.setStatus}.
        """
        try:
            status = checkPresenceStatus(status)
        except Exception:
            return defer.fail()
        return self._change("update", entity, device, encodeDevicePatch(status, details))

    def setLocation(self, entity, device, latitude, longitude, sharing):
        """
        See L{IPresenceManager.setLocation}.
        """
        try:
            sharing = LocationSharing(sharing)
            if not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
                raise EngineUsageError("latitude/longitude out of range: %r, %r" % (
                    latitude, longitude))
        except Exception:
            return defer.fail()
        location = Location(float(latitude), float(longitude), sharing)
        return self._change("update", entity, device, encodeDevicePatch(location=location))

    @defer.inlineCallbacks
    def setActivity(self, entity, device, status, ttl, to=None):
        """
        See L{IPresenceManager.setActivity}.
        """
        status, ttl = checkActivity(status, ttl, self.maxActivityTtl)
        if to is not None:
            checkName(to, "to")
        now = self._now()
        base = self._base(entity)
        reply = yield self._client.run(ACTIVITY, [
            base + ":dev", base + ":act", self._prefix + "p:alive", self._prefix + "p:vis",
            "%ss:{%s}:w" % (self._prefix, entity)], [
            device, encodeActivity(status, now + ttl * 1000, to),
            now + int(self.deviceTimeout * 1000), self._member(entity, device), entity,
            self._keyTtl()])
        if reply[0] == -1:
            raise EngineUsageError("device %r of %r is not online" % (device, entity))
        _, visibility, watchers = reply
        if visibility and int(visibility) == Visibility.HIDDEN:
            return
        version = yield self._client.call("GET", base + ":ver")
        awareness = activityAwareness(entity, device, status, ttl, to, Visibility.VISIBLE,
                                      int(version or 0), now)
        recipients = [to] if to is not None else _approved(watchers)
        yield self._publish([PresenceNotice(NoticeKind.ACTIVITY, r, entity, awareness,
                                            timestamp=now) for r in sorted(recipients)])

    @defer.inlineCallbacks
    def setVisibility(self, entity, visibility):
        """
        See L{IPresenceManager.setVisibility}.
        """
        checkName(entity, "entity")
        visibility = Visibility(visibility)
        now = self._now()
        base = self._base(entity)
        reply = yield self._client.run(VISIBILITY, [
            self._prefix + "p:vis", base + ":dev", base + ":ver",
            "%ss:{%s}:w" % (self._prefix, entity)], [entity, int(visibility), now])
        if not reply[0]:
            return
        _, version, devices, watchers = reply
        awareness = makeAwareness(entity, "", self._devices(devices, now), visibility,
                                  int(version), now)
        yield self._publish(awarenessNotices(awareness, _approved(watchers)))

    @defer.inlineCallbacks
    def _sweepOnce(self):
        now = self._now()
        try:
            outages = self._client.outages
            if outages != self._outagesSeen:
                # Redis was unreachable: nobody could refresh a device.
                # Sessions refresh theirs every third of deviceTimeout, so
                # only an outage longer than about a third can have let
                # one expire; a grace for every blip would hold every
                # node's sweeps back for good on a flapping link.  (While
                # the outage goes on, as long as it lasted so far; it is
                # done with once over.)
                if self._client.outageLength() >= self.deviceTimeout / 4:
                    grace = int((self.deviceTimeout + RECONNECT_MAX) * 1000)
                    yield self._client.call("SET", self._prefix + "p:grace",
                                            self.nodeId, "PX", grace)
                if self._client.downSince is None:
                    self._outagesSeen = outages
                    self._client.forgetOutages()
            expired = yield self._client.run(
                SWEEP, [self._prefix + "p:alive", self._prefix + "p:grace"],
                [now, self._prefix, 1000])
            for entity, device, version, devices, visibility, watchers in expired:
                entity, device = entity.decode("utf-8"), device.decode("utf-8")
                yield self._publish(self._changeNotices(entity, device, version, devices,
                                                        visibility, watchers, now))
        except StorageUnavailable:
            # The client logged the outage; the next sweep after it does
            # the work.
            pass
        except Exception:
            log.failure("presence sweep failed")
        self.sweeps += 1

    # Subscriptions -----------------------------------------------------

    @defer.inlineCallbacks
    def _subscriptionEvent(self, event, watcher, target):
        checkName(watcher, "watcher")
        checkName(target, "target")
        if watcher == target:
            raise SubscriptionError("an entity cannot subscribe to itself")
        reply = yield self._client.run(SUBSCRIPTION, [
            "%ss:{%s}:w" % (self._prefix, target), "%ss:{%s}:t" % (self._prefix, watcher)],
            [event, watcher, target, self.maxSubscriptions, self.maxWatchers]
            + _TRANSITION_ARGS)
        code = int(reply[0])
        if code == -1:
            raise SubscriptionError("cannot %s a subscription in state %s" % (
                event, SubscriptionState.describe(int(reply[1]))))
        if code == -2:
            raise LimitExceeded("%r has %d subscriptions" % (watcher, self.maxSubscriptions),
                                "maxSubscriptions")
        if code == -3:
            raise LimitExceeded("%r has %d watchers" % (target, self.maxWatchers), "maxWatchers")
        state, tell = SubscriptionState(code), bool(int(reply[1]))
        now = self._now()
        current = None
        if tell and state == SubscriptionState.APPROVED:
            presence = yield self.presence(target, viewer=watcher)
            current = self._awarenessOf(presence, now)
        notices = subscriptionNotices(event, watcher, target, state, tell, now, lambda: current)
        yield self._publish(notices)
        return state

    def _awarenessOf(self, presence, now):
        devices = {d.device: d for d in presence.devices}
        device = sorted(devices)[0] if devices else ""
        return makeAwareness(presence.entity, device, devices, presence.visibility,
                             presence.version, now)

    def requestSubscription(self, watcher, target):
        """
        See L{IPresenceManager.requestSubscription}.
        """
        return self._subscriptionEvent("request", watcher, target)

    def answerSubscription(self, target, watcher, approve):
        """
        See L{IPresenceManager.answerSubscription}.
        """
        return self._subscriptionEvent("approve" if approve else "deny", watcher, target)

    def unsubscribe(self, watcher, target):
        """
        See L{IPresenceManager.unsubscribe}.
        """
        return self._subscriptionEvent("unsubscribe", watcher, target)

    def subscription(self, watcher, target):
        """
        See L{IPresenceManager.subscription}.
        """
        d = self._client.call("HGET", "%ss:{%s}:w" % (self._prefix, target), watcher)
        return d.addCallback(lambda v: SubscriptionState(int(v or 0)))

    def watchers(self, target, state=None):
        """
        See L{IPresenceManager.watchers}.
        """
        d = self._client.call("HGETALL", "%ss:{%s}:w" % (self._prefix, target))

        def decoded(flat):
            found = {w: SubscriptionState(int(s)) for w, s in pairs(flat).items()}
            return {w: s for w, s in found.items() if state is None or s == state}
        return d.addCallback(decoded)

    def subscriptions(self, watcher):
        """
        See L{IPresenceManager.subscriptions}.
        """
        d = self._client.call("HGETALL", "%ss:{%s}:t" % (self._prefix, watcher))
        return d.addCallback(lambda flat: {t: SubscriptionState(int(s))
                                           for t, s in pairs(flat).items()})

    # Queries -----------------------------------------------------------

    @defer.inlineCallbacks
    def presence(self, entity, viewer=None):
        """
        See L{IPresenceManager.presence}.
        """
        checkName(entity, "entity")
        base = self._base(entity)
        devs, seen, acts, version, visibility = yield self._client.run(QUERY, [
            base + ":dev", base + ":act", base + ":ver", self._prefix + "p:vis",
            self._prefix + "p:alive"], [entity, self._prefix])
        now = self._now()
        timeout = int(self.deviceTimeout * 1000)
        names = [devs[i].decode("utf-8") for i in range(0, len(devs), 2)]
        devices = tuple(sorted(
            (decodeDevice(name, devs[2 * i + 1], int(float(seen[i])) - timeout)
             for i, name in enumerate(names)), key=lambda d: d.device))
        activities = tuple(sorted(
            (a for a in (decodeActivity(n, raw) for n, raw in pairs(acts).items())
             if a.expiresAt > now), key=lambda a: a.device))
        visibility = Visibility(int(visibility)) if visibility else Visibility.VISIBLE
        full = EntityPresence(entity, aggregateStatus(d.status for d in devices), devices,
                              activities, visibility, int(version))
        return presenceView(full, viewer)
