"""
The Redis engine's durable queues: L{IQueueStore} over Redis streams.

Keys (P: the engine's prefix, E: the entity):

 - C{P q:{E}}: a stream, one entry per record with id C{<offset>-0} and
   fields k (kind), f (flags), m (message id), se / sd (sender entity /
   device), t (timestamp ms), p (payload), h (dedup key).
 - C{P q:{E}:meta}: hash with last (last offset), first (first kept),
   stamp (last timestamp), bound (1 once a device registered: the hash
   then stays as the queue's floor when nothing else does).
 - C{P q:{E}:dedup}: hash dedup key -> offset, for kept records.
 - C{P q:{E}:pos}: hash device -> "delivered read", the consumer positions.
 - C{P q:{E}:seen}: sorted set of the known devices by sighting number
   (L{muxframe.engines.queuestate.KnownDevices}; a device in C{:pos} and
   not here, stored before sightings were, counts as 0).
 - C{P queues}: set of the queues kept, those with records or known
   devices (retention passes go over it; C{maxQueues} counts it).  A
   retention pass that leaves a queue with neither takes it out, deletes
   its stream and dedup hash, and its meta too if no device ever
   registered (nobody used the name): a message to it later starts again
   after C{P q:base} (at offset 1 unless Redis once lost its data under
   running nodes), as no position or receipt refers to its offsets.
 - C{P q:base}: the offset a new queue starts after: 0, set by the first
   engine started on an empty Redis.  When it is missing under running
   nodes, Redis lost its data (restarted empty, flushed): the first
   append (or the reconnection after the outage, L{RedisQueueStore.checkBase})
   sets it to the time in ms x 1000, so every queue's offsets go on above
   any offset handed out before the loss (in practice: a queue would need
   more than 1,000 appends per millisecond since then to reach it) and a
   client's "already delivered up to" never swallows new records.  As
   presence versions, such offsets stay below 2**53 until the year 2255.
 - Channel C{P qn:E}: the offset of every append, for watches on any node.

Appends, positions and retention are Lua scripts, atomic in Redis.  An
acknowledgement's receipts read only the covered records' k, f, m and se,
through a Lua script (RECEIPT_FIELDS), a page of at most RECEIPT_READ_BYTES
of records (beyond one) at a time: no payload comes back.  Offsets are exact
up to 2**53 (Lua numbers).  Durability is Redis's: run it with
C{appendonly yes} and C{appendfsync always} for an fsync before every
reply (C{everysec} may lose the last second on a power cut).
"""

from bisect import bisect_left

from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

from muxframe.engines import logformat
from muxframe.engines.embeddedqueues import checkMessage
from muxframe.engines.errors import (
    EngineUsageError, LimitExceeded, StorageError, firstError)
from muxframe.engines.interfaces import IQueueStore
from muxframe.engines.model import (
    Address, Appended, ConsumerPosition, QueuedRecord, QueueRetention, ReceiptKind,
    RecordKind, checkName)
from muxframe.engines.ordering import SerialChains
from muxframe.engines.queuestate import FORGET_AT_ONCE, ConsumerTracker, knownDevicesFull
from muxframe.engines.redisconn import Script
from muxframe.engines.redispresence import presenceBase
from muxframe.engines.watches import WatchList
from muxframe.logthrottle import LogThrottle, throttled

# KEYS: stream, meta, dedup, queues, base.  ARGV[11]: maxQueues, or -1 (the
# batch was admitted, ADMIT): a message to an entity not in KEYS[4] is
# refused ({-1, queues kept, 0, reset}) when as many are kept.  Reply:
# offset, stamp, duplicate, reset (whether the base was missing, Redis lost
# its data, and was set: checked first, so a duplicate or a refusal tells
# too).  A queue without meta (new, or forgotten by a retention pass) starts
# after the base.
APPEND = Script("append", """
local base, reset = redis.call('GET', KEYS[5]), 0
if not base then
  base, reset = string.format('%d', tonumber(ARGV[7]) * 1000), 1
  redis.call('SET', KEYS[5], base)
end
local existing = redis.call('HGET', KEYS[3], ARGV[1])
if existing then
  local first = tonumber(redis.call('HGET', KEYS[2], 'first') or '1')
  if tonumber(existing) >= first then
    local id = existing .. '-0'
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if e[1] then
      local f = e[1][2]
      for i = 1, #f, 2 do
        if f[i] == 't' then return {tonumber(existing), tonumber(f[i + 1]), 1, reset} end
      end
    end
  end
end
local most = tonumber(ARGV[11])
if most >= 0 and redis.call('SISMEMBER', KEYS[4], ARGV[10]) == 0 then
  local kept = redis.call('SCARD', KEYS[4])
  if kept >= most then return {-1, kept, 0, reset} end
end
local last = tonumber(redis.call('HGET', KEYS[2], 'last') or base)
local stamp = math.max(tonumber(ARGV[7]), tonumber(redis.call('HGET', KEYS[2], 'stamp') or '0'))
local offset = string.format('%d', last + 1)
stamp = string.format('%d', stamp)
redis.call('XADD', KEYS[1], offset .. '-0', 'k', ARGV[2], 'f', ARGV[3], 'm', ARGV[4],
           'se', ARGV[5], 'sd', ARGV[6], 't', stamp, 'p', ARGV[8], 'h', ARGV[1])
redis.call('HSET', KEYS[2], 'last', offset, 'stamp', stamp)
redis.call('HSETNX', KEYS[2], 'first', string.format('%d', tonumber(base) + 1))
redis.call('HSET', KEYS[3], ARGV[1], offset)
redis.call('SADD', KEYS[4], ARGV[10])
redis.call('PUBLISH', ARGV[9], offset)
return {tonumber(offset), tonumber(stamp), 0, reset}
""")

# KEYS: base.  ARGV: the value for a Redis that had none (0 at the first
# start, the time in ms x 1000 after a data loss).  Reply: 1 if it was set.
BASE = Script("queueBase", """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 1 end
return 0
""")

# KEYS: pos, meta, seen, the entity's online devices (presence); ARGV:
# device, register ('1'), maxKnownDevices, FORGET_AT_ONCE.  Returns {position
# or false, first, last, refused (the devices known when every one is
# online, else 0), then the devices forgotten}.  The rules are
# muxframe.engines.queuestate's (KnownDevices).
POSITION = Script("position", """
local first = tonumber(redis.call('HGET', KEYS[2], 'first') or '1')
local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
local v = redis.call('HGET', KEYS[1], ARGV[1])
local out = {false, first, last, 0}
if ARGV[2] ~= '1' then
  out[1] = v or false
  return out
end
redis.call('HSETNX', KEYS[2], 'bound', '1')
redis.call('SADD', KEYS[5], ARGV[5])
if not v then
  local known = redis.call('HLEN', KEYS[1])
  local excess = known - tonumber(ARGV[3]) + 1
  if excess > 0 then
    if redis.call('ZCARD', KEYS[3]) < known then
      for _, d in ipairs(redis.call('HKEYS', KEYS[1])) do
        if not redis.call('ZSCORE', KEYS[3], d) then redis.call('ZADD', KEYS[3], 0, d) end
      end
    end
    local wanted = math.min(excess, tonumber(ARGV[4]))
    local chosen, stale, at = {}, {}, 0
    while #chosen < wanted do
      local page = redis.call('ZRANGE', KEYS[3], at, at + 63)
      if #page == 0 then break end
      for _, d in ipairs(page) do
        if redis.call('HEXISTS', KEYS[1], d) == 0 then
          stale[#stale + 1] = d
        elseif #chosen < wanted and redis.call('HEXISTS', KEYS[4], d) == 0 then
          chosen[#chosen + 1] = d
        end
      end
      at = at + 64
    end
    for _, d in ipairs(stale) do redis.call('ZREM', KEYS[3], d) end
    if #chosen == 0 then
      out[4] = known
      return out
    end
    for _, d in ipairs(chosen) do
      redis.call('HDEL', KEYS[1], d)
      redis.call('ZREM', KEYS[3], d)
      out[#out + 1] = d
    end
  end
  v = string.format('%d %d', first - 1, first - 1)
  redis.call('HSET', KEYS[1], ARGV[1], v)
end
local top = redis.call('ZREVRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if top[1] ~= ARGV[1] then
  local seen = 1
  if top[2] then seen = tonumber(top[2]) + 1 end
  redis.call('ZADD', KEYS[3], string.format('%d', seen), ARGV[1])
end
out[1] = v
return out
""")

FORGET = Script("forget", """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[3], 'bound', '1')
return 1
""")

# KEYS[1]: the queues kept; ARGV: maxQueues, then per group of a batch (in
# order) its count of items and their entities.  A group whose entities
# without a queue do not fit in the room left by the groups admitted before
# it is refused.  Returns {group index (0 the first), the first entity of
# it that does not fit, ...} for the groups refused ({} when all fit).
ADMIT = Script("admit", """
local room = tonumber(ARGV[1]) - redis.call('SCARD', KEYS[1])
local admitted, kept, out = {}, {}, {}
local at, group = 2, 0
while at <= #ARGV do
  local n = tonumber(ARGV[at])
  local fresh, names, over = 0, {}, false
  for i = at + 1, at + n do
    local e = ARGV[i]
    if kept[e] == nil then kept[e] = redis.call('SISMEMBER', KEYS[1], e) == 1 end
    if not kept[e] and not admitted[e] and not names[e] then
      names[e] = true
      fresh = fresh + 1
      if fresh > room and not over then over = e end
    end
  end
  if over then
    out[#out + 1] = group
    out[#out + 1] = over
  else
    room = room - fresh
    for e in pairs(names) do admitted[e] = true end
  end
  at = at + n + 1
  group = group + 1
end
return out
""")

# The known devices, least recently seen first: {device, seen, ...} of the
# sighting set, then the devices of pos it lacks (seen 0).
KNOWN = Script("known", """
local out = {}
local listed = {}
for i, d in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do listed[d] = true end
for _, d in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not listed[d] then out[#out + 1] = d end
end
table.sort(out)
for _, d in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('HEXISTS', KEYS[1], d) == 1 then out[#out + 1] = d end
end
return out
""")

# A device forgotten meanwhile stays forgotten (false).
SAVE_POSITION = Script("savePosition", """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local a, b = string.match(v, '(%d+) (%d+)')
local d, r = tonumber(a), tonumber(b)
d = math.max(d, tonumber(ARGV[2]))
r = math.min(math.max(r, tonumber(ARGV[3])), d)
v = string.format('%d %d', d, r)
redis.call('HSET', KEYS[1], ARGV[1], v)
return v
""")

RETENTION = Script("retention", """
local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
local first = tonumber(redis.call('HGET', KEYS[2], 'first') or '1')
local start = first
if ARGV[1] == '1' then
  local low = nil
  for _, v in ipairs(redis.call('HVALS', KEYS[4])) do
    local d = tonumber(string.match(v, '(%d+) '))
    if low == nil or d < low then low = d end
  end
  if low ~= nil then start = math.max(start, low + 1) end
end
if tonumber(ARGV[2]) >= 0 then start = math.max(start, last + 1 - tonumber(ARGV[2])) end
if tonumber(ARGV[3]) >= 0 then
  local cutoff = tonumber(ARGV[3])
  local scanning = true
  while scanning and start <= last do
    local entries = redis.call('XRANGE', KEYS[1], string.format('%d-0', start), '+', 'COUNT', 100)
    if #entries == 0 then break end
    for _, e in ipairs(entries) do
      local f, t = e[2], nil
      for i = 1, #f, 2 do if f[i] == 't' then t = tonumber(f[i + 1]) end end
      if t >= cutoff then scanning = false break end
      start = tonumber(string.match(e[1], '(%d+)-')) + 1
    end
  end
end
start = math.min(start, last + 1)
if start > last and redis.call('HLEN', KEYS[4]) == 0 then
  -- Nothing kept and no device: the queue is no longer kept.
  redis.call('DEL', KEYS[1], KEYS[3])
  if redis.call('HGET', KEYS[2], 'bound') then
    if last > 0 then redis.call('HSET', KEYS[2], 'first', string.format('%d', start)) end
  else
    redis.call('DEL', KEYS[2])
  end
  redis.call('SREM', KEYS[5], ARGV[4])
  return start
end
if start > first then
  local upto = string.format('%d-0', start - 1)
  while true do
    local entries = redis.call('XRANGE', KEYS[1], '-', upto, 'COUNT', 500)
    if #entries == 0 then break end
    for _, e in ipairs(entries) do
      local f = e[2]
      for i = 1, #f, 2 do if f[i] == 'h' then redis.call('HDEL', KEYS[3], f[i + 1]) end end
      redis.call('XDEL', KEYS[1], e[1])
    end
  end
  redis.call('HSET', KEYS[2], 'first', string.format('%d', start))
end
return start
""")

# The fields receipts need of the records from offset ARGV[1] to ARGV[2], a
# record at a time, until ARGV[3] bytes of records were read (at least one
# record) or ARGV[4] records: {next offset or 0 when done, then per record
# offset, kind, flags, message id, sender entity}.  No payload leaves Redis,
# and no more than about ARGV[3] bytes of records are copied into Lua at once.
RECEIPT_FIELDS = Script("receiptFields", """
local at = tonumber(ARGV[1])
local to = ARGV[2] .. '-0'
local budget, most = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, used, n = {0}, 0, 0
while n < most and used < budget do
  local e = redis.call('XRANGE', KEYS[1], string.format('%d-0', at), to, 'COUNT', 1)
  if not e[1] then return out end
  local offset = tonumber(string.match(e[1][1], '(%d+)-'))
  local f, got = e[1][2], {}
  for i = 1, #f, 2 do
    got[f[i]] = f[i + 1]
    used = used + #f[i] + #f[i + 1]
  end
  out[#out + 1] = offset
  out[#out + 1] = got['k'] or false
  out[#out + 1] = got['f'] or false
  out[#out + 1] = got['m'] or false
  out[#out + 1] = got['se'] or false
  at = offset + 1
  n = n + 1
end
if at <= tonumber(ARGV[2]) then out[1] = at end
return out
""")

#: The stream bytes an acknowledgement's receipts read at once in Redis, at
#: most (beyond one record), and the records: they need only a few small
#: fields of each covered record, which is all Redis answers.
RECEIPT_READ_BYTES = 1 << 20
RECEIPT_READ_RECORDS = 1024


log = Logger()


def _fields(flat):
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _record(entry, entity):
    entryId, flat = entry
    f = _fields(flat)
    try:
        offset = int(entryId.split(b"-")[0])
        kind = RecordKind(int(f[b"k"]))
        flags = int(f[b"f"])
        messageId = f[b"m"].decode("utf-8")
        senderEntity = f[b"se"].decode("utf-8")
        senderDevice = f[b"sd"].decode("utf-8")
        timestamp = int(f[b"t"])
        payload = f[b"p"]
    except (KeyError, ValueError) as e:
        raise StorageError("malformed stream entry %r of %r: %s" % (entryId, entity, e))
    receipt = None
    if kind == RecordKind.RECEIPT:
        receipt = logformat.decodeReceiptPayload(payload, senderEntity, senderDevice, messageId)
    return QueuedRecord(offset, kind, messageId,
                        Address(senderEntity, senderDevice) if senderEntity else None,
                        timestamp, payload, bool(flags & logformat.FLAG_RECEIPTS), receipt)


def _position(value):
    delivered, read = value.split(b" ")
    return int(delivered), int(read)


@implementer(IQueueStore)
class RedisQueueStore:
    """
    Queues in Redis streams, shared by every node on the same Redis.

    @param maxKnownDevices: devices known per entity at most (see
        L{muxframe.engines.queuestate}); a device online in presence is
        never forgotten to make room.
    @param maxQueues: queues kept at most: a message to an entity without
        one fails with L{LimitExceeded} (C{maxQueues}) while as many are
        kept (registrations and receipts are never refused, and count).
        An L{appendMany} is admitted first (as a whole, or group by
        group); batches admitted at once on several nodes may together pass
        the limit by their new queues.
    """

    def __init__(self, client, prefix, clock, retention=QueueRetention(), maxFetch=10000,
                 maxKnownDevices=1024, maxQueues=1000000):
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self.retention = retention
        self.maxFetch = maxFetch
        self.maxKnownDevices = maxKnownDevices
        self.maxQueues = maxQueues
        #: Devices this node forgot to make room for others.
        self.devicesForgotten = 0
        #: Messages this node refused for want of a queue (maxQueues).
        self.queuesRefused = 0
        self._logThrottle = LogThrottle()
        self._trackers = {}
        self._acks = SerialChains()
        self._watches = WatchList(self._firstWatch, self._lastWatch)
        self._baseKey = prefix + "q:base"
        self.dataLosses = 0

    def initialize(self):
        """
        At the engine's start: a Redis with no base yet (an empty one)
        starts its queues at offset 1; a Deferred.
        """
        return self._client.run(BASE, [self._baseKey], [0])

    def checkBase(self):
        """
        After an outage: if Redis lost its data meanwhile, set the base
        above every offset handed out before (and say so); a Deferred.
        """
        d = self._client.run(BASE, [self._baseKey], [self._now() * 1000])
        return d.addCallback(lambda created: int(created) and self._dataLost())

    def _dataLost(self):
        self.dataLosses += 1
        # One line per loss: whichever of the append or the check after
        # the outage noticed it first.
        self._trackers.clear()
        log.critical("Redis at {address} lost its data (it restarted empty, or was "
                     "flushed): the queues, positions and subscriptions stored before are "
                     "gone; queue offsets go on above the old ones, so no client takes a new "
                     "record for one it had", address=self._client.address)

    def _keys(self, entity):
        base = "%sq:{%s}" % (self._prefix, entity)
        return [base, base + ":meta", base + ":dedup", self._prefix + "queues"]

    def _channel(self, entity):
        return "%sqn:%s" % (self._prefix, entity)

    def _now(self):
        return int(self._clock.seconds() * 1000)

    def append(self, entity, message):
        """
        See L{IQueueStore.append}.
        """
        try:
            checkName(entity, "entity")
            checkMessage(message)
        except Exception:
            return defer.fail()
        return self._appendMessage(entity, message, self.maxQueues)

    def _appendMessage(self, entity, message, maxQueues):
        key, flags = logformat.messageKeyAndFlags(message)
        sender = message.sender
        return self._append(entity, RecordKind.MESSAGE, flags, message.messageId,
                            sender.entity if sender else "", sender.device if sender else "",
                            message.payload, key, maxQueues)

    def _append(self, entity, kind, flags, messageId, senderEntity, senderDevice, payload, key,
                maxQueues=-1):
        # maxQueues -1: never refused for want of a queue (receipts, an
        # admitted batch).
        d = self._client.run(APPEND, self._keys(entity) + [self._baseKey], [
            key, int(kind), flags, messageId, senderEntity, senderDevice, self._now(), payload,
            self._channel(entity), entity, maxQueues])

        def done(reply):
            offset, stamp, duplicate, reset = reply
            if int(reset):
                self._dataLost()
            if int(offset) < 0:
                self._refuseQueue(entity)
            return Appended(int(offset), int(stamp), bool(duplicate))
        return d.addCallback(done)

    def _refuseQueue(self, entity):
        raise self._queueRefusal(entity)

    def _queueRefusal(self, entity):
        # The LimitExceeded refusing a message to entity: counted, and
        # logged at most a few times a minute however many names a sender
        # tries.
        self.queuesRefused += 1
        throttled(log, self._logThrottle, self._clock.seconds(), LogLevel.warn,
                  "queues refused",
                  "{limit} queues are kept (max_queues): a message to {entity!r}, which has "
                  "none, was refused ({total} so far)",
                  limit=self.maxQueues, entity=entity, total=self.queuesRefused)
        return LimitExceeded("%d queues are kept (max_queues): %r has none, and no more can "
                             "be made" % (self.maxQueues, entity), "maxQueues")

    @defer.inlineCallbacks
    def appendMany(self, items, groups=None):
        """
        See L{IQueueStore.appendMany}: the batch's groups (one, the whole
        batch, without C{groups}) are admitted first (L{ADMIT}: nothing of
        a group is stored if its new queues do not fit), then the scripts
        of those admitted are pipelined, in order.
        """
        for entity, message in items:
            checkName(entity, "entity")
            checkMessage(message)
        if not items:
            return []
        whole = groups is None
        if whole:
            groups = [(0, len(items) - 1)]
        argv = [self.maxQueues]
        for first, last in groups:
            argv.append(last + 1 - first)
            argv.extend(entity for entity, _ in items[first:last + 1])
        reply = yield self._client.run(ADMIT, [self._prefix + "queues"], argv)
        refused = {}
        for i in range(0, len(reply), 2):
            refused[int(reply[i])] = self._queueRefusal(reply[i + 1].decode("utf-8"))
        if whole and refused:
            raise refused[0]
        results = []
        for group, (first, last) in enumerate(groups):
            refusal = refused.get(group)
            for entity, message in items[first:last + 1]:
                if refusal is not None:
                    results.append(defer.succeed(refusal))
                else:
                    results.append(self._appendMessage(entity, message, -1))
        appended = yield defer.gatherResults(results, consumeErrors=True).addErrback(
            firstError)
        return appended

    def fetch(self, entity, fromOffset, limit=100, maxBytes=1048576):
        """
        See L{IQueueStore.fetch}.
        """
        try:
            checkName(entity, "entity")
            if not 1 <= limit <= self.maxFetch:
                raise LimitExceeded("fetch limit must be 1 to %d" % (self.maxFetch,), "maxFetch")
        except Exception:
            return defer.fail()
        d = self._client.call("XRANGE", self._keys(entity)[0], "%d-0" % (max(1, fromOffset),),
                              "+", "COUNT", limit)

        def decoded(entries):
            out, size = [], 0
            for entry in entries:
                record = _record(entry, entity)
                size += len(record.payload)
                if out and size > maxBytes:
                    break
                out.append(record)
            return out
        return d.addCallback(decoded)

    def _positionKeys(self, entity):
        # pos and seen.
        base = "%sq:{%s}" % (self._prefix, entity)
        return [base + ":pos", base + ":seen"]

    def _load(self, entity, device, register):
        """
        The device's stored position, C{(value, first, last)}; registering
        it (C{register}) makes it the most recently seen, and a device not
        known yet is registered, forgetting others to make room.

        @raise LimitExceeded: (C{maxKnownDevices}) every known device is
            online; nothing changed.
        """
        pos, seen = self._positionKeys(entity)
        keys = [pos, self._keys(entity)[1], seen, presenceBase(self._prefix, entity) + ":dev",
                self._prefix + "queues"]
        d = self._client.run(POSITION, keys, [device, "1" if register else "0",
                                              self.maxKnownDevices, FORGET_AT_ONCE, entity])

        def loaded(reply):
            value, first, last, refused = reply[:4]
            if int(refused):
                raise LimitExceeded(knownDevicesFull(entity, int(refused)), "maxKnownDevices")
            if len(reply) > 4:
                self._forgot(entity, [d.decode("utf-8") for d in reply[4:]])
            return value, first, last
        return d.addCallback(loaded)

    def _forgot(self, entity, devices):
        # Counted, and logged at most a few times a minute however often
        # a client registers fresh devices.
        for device in devices:
            self._trackers.pop((entity, device), None)
        self.devicesForgotten += len(devices)
        throttled(log, self._logThrottle, self._clock.seconds(), LogLevel.info,
                  "devices forgotten",
                  "{entity!r} knows {limit} devices (max_known_devices): forgot {count} "
                  "seen least recently, such as {device!r} ({total} so far)",
                  entity=entity, limit=self.maxKnownDevices, count=len(devices),
                  device=devices[0], total=self.devicesForgotten)

    def position(self, entity, device):
        """
        See L{IQueueStore.position}; registers a device seen for the first
        time at the oldest kept record.
        """
        try:
            checkName(entity, "entity")
            checkName(device, "device")
        except Exception:
            return defer.fail()

        def loaded(reply):
            value, first, last = reply
            delivered, read = _position(value)
            return ConsumerPosition(entity, device, delivered, read, int(first), int(last) + 1)
        return self._load(entity, device, True).addCallback(loaded)

    @defer.inlineCallbacks
    def acknowledge(self, entity, device, offset, kind):
        """
        See L{IQueueStore.acknowledge}.
        """
        checkName(entity, "entity")
        checkName(device, "device")
        kind = ReceiptKind(kind)
        value, first, last = yield self._load(entity, device, True)
        first, nextOffset = int(first), int(last) + 1
        stored = _position(value)
        tracker = self._trackers.get((entity, device))
        if tracker is None or stored[0] < tracker.stored[0] or stored[1] < tracker.stored[1]:
            # New here, or forgotten (by any node) and registered again
            # since: otherwise stored positions never move back.
            if len(self._trackers) > 100000:
                self._trackers.clear()
            tracker = self._trackers[(entity, device)] = ConsumerTracker(*stored)
        tracker.stored = stored
        # Another node may have moved the position on meanwhile.
        tracker.delivered = max(tracker.delivered, stored[0])
        tracker.read = max(tracker.read, min(stored[1], tracker.delivered))
        before = (tracker.delivered, tracker.read)
        delivered, read = tracker.acknowledge(offset, kind, first, nextOffset)
        if (tracker.delivered, tracker.read) != before:
            covered = sorted(o for o in set(delivered) | set(read) if o >= first)
            receipts = defer.succeed(None)
            if covered:
                receipts = self._sendReceipts(entity, device, covered, set(delivered), set(read))
            saved = (tracker.delivered, tracker.read)
            keys = self._positionKeys(entity)[:1]

            def save():
                # After earlier acknowledgements of the device and this
                # one's receipts.
                return receipts.addCallback(lambda _: self._client.run(
                    SAVE_POSITION, keys, [device, saved[0], saved[1]]))
            try:
                value = yield self._acks.after((entity, device), save)
            except Exception:
                # The tracker moved on, but Redis may not have (it went
                # down between the steps): the next acknowledgement starts
                # from what Redis has, so this one, made again, is saved
                # and sends its receipts (those sent are deduplicated).
                if self._trackers.get((entity, device)) is tracker:
                    del self._trackers[(entity, device)]
                raise
            if value is None:
                # Forgotten meanwhile (it stays so).
                stored = saved
            else:
                stored = _position(value)
                tracker.stored = max(tracker.stored, stored)
        return ConsumerPosition(entity, device, stored[0], stored[1], first, nextOffset)

    @defer.inlineCallbacks
    def _sendReceipts(self, entity, device, covered, delivered, read):
        # The covered records may weigh GiBs together: their few fields
        # receipts need are read in pages (RECEIPT_FIELDS), in offset order.
        key = self._keys(entity)[0]
        wanted = set(covered)
        sends = []
        at = covered[0]
        try:
            while at:
                reply = yield self._client.run(RECEIPT_FIELDS, [key], [
                    at, covered[-1], RECEIPT_READ_BYTES, RECEIPT_READ_RECORDS])
                for i in range(1, len(reply), 5):
                    offset, kind, flags, messageId, senderEntity = reply[i:i + 5]
                    if offset not in wanted:
                        continue
                    try:
                        kind, flags = RecordKind(int(kind)), int(flags)
                        messageId = messageId.decode("utf-8")
                        senderEntity = senderEntity.decode("utf-8")
                    except (AttributeError, TypeError, ValueError) as e:
                        raise StorageError("malformed stream entry %d of %r: %s" % (
                            offset, entity, e))
                    if kind != RecordKind.MESSAGE or not flags & logformat.FLAG_RECEIPTS:
                        continue
                    for receipt, offsets in ((ReceiptKind.DELIVERED, delivered),
                                             (ReceiptKind.READ, read)):
                        if offset in offsets:
                            sends.append(self._append(
                                senderEntity, RecordKind.RECEIPT, 0, messageId, entity, device,
                                logformat.encodeReceiptPayload(receipt, offset),
                                logformat.receiptKey(entity, receipt, offset)))
                # On from the next covered offset, over any gap.
                at = reply[0] and covered[bisect_left(covered, reply[0])]
        except Exception as e:
            # The receipts sent so far are waited for; this failure is
            # the one reported.
            yield defer.gatherResults(sends, consumeErrors=True).addErrback(lambda _: None)
            raise e
        yield defer.gatherResults(sends, consumeErrors=True)

    def forget(self, entity, device):
        """
        See L{IQueueStore.forget}.
        """
        try:
            checkName(entity, "entity")
            checkName(device, "device")
        except Exception:
            return defer.fail()
        self._trackers.pop((entity, device), None)
        return self._client.run(FORGET, self._positionKeys(entity) + [self._keys(entity)[1]],
                                [device])

    def knownDevices(self, entity):
        """
        See L{IQueueStore.knownDevices}.
        """
        try:
            checkName(entity, "entity")
        except Exception:
            return defer.fail()
        d = self._client.run(KNOWN, self._positionKeys(entity), [])
        return d.addCallback(lambda devices: [device.decode("utf-8") for device in devices])

    def stats(self):
        """
        This node's counters for operators.
        """
        return {"devicesForgotten": self.devicesForgotten,
                "queuesRefused": self.queuesRefused}

    def watch(self, entity, callback):
        """
        See L{IQueueStore.watch}.
        """
        checkName(entity, "entity")
        return self._watches.add(entity, callback)

    def _firstWatch(self, entity):
        # Its Deferred fires once Redis confirmed it (Watch.whenActive).
        return self._client.subscribe(self._channel(entity))

    def _lastWatch(self, entity):
        self._client.unsubscribe(self._channel(entity))

    def messageReceived(self, channel, message):
        """
        A message on a C{qn:} channel (from the engine's dispatcher).
        """
        entity = channel[len(self._prefix) + 3:]
        try:
            offset = int(message)
        except ValueError:
            raise EngineUsageError("bad queue notification %r" % (message,))
        self._watches.notify(entity, entity, offset)

    @defer.inlineCallbacks
    def resync(self):
        """
        Tell every watcher of this node its queue's last offset (after the
        subscriber connection was lost, notifications may have been).
        """
        for entity in self._watches.keys():
            last = yield self._client.call("HGET", self._keys(entity)[1], "last")
            if last is not None:
                self._watches.notify(entity, entity, int(last))

    @defer.inlineCallbacks
    def applyRetention(self):
        """
        See L{IQueueStore.applyRetention}: one pass over every queue.
        Returns the number of queues whose first kept offset moved.
        """
        r = self.retention
        cutoff = self._now() - int(r.maxAge * 1000) if r.maxAge is not None else -1
        moved = 0
        cursor = b"0"
        while True:
            cursor, entities = yield self._client.call("SSCAN", self._prefix + "queues", cursor,
                                                       "COUNT", 500)
            for raw in entities:
                entity = raw.decode("utf-8")
                keys = self._keys(entity)[:3] + ["%sq:{%s}:pos" % (self._prefix, entity),
                                                 self._prefix + "queues"]
                before = yield self._client.call("HGET", keys[1], "first")
                start = yield self._client.run(RETENTION, keys, [
                    "1" if r.deleteAcknowledged else "0",
                    r.maxMessages if r.maxMessages is not None else -1, cutoff, entity])
                if int(start) != int(before or 1):
                    moved += 1
            if cursor in (b"0", 0, "0"):
                break
        return moved
