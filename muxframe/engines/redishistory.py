"""
The Redis engine's channel history: L{IHistoryStore} over Redis streams,
shared by every node.

Keys (P: prefix, C: channel): C{P h:{C}}, a stream with ids
C{<offset>-0} and fields t (ms) and p (payload); C{P h:{C}:meta}, a hash
with epoch, last (offset), ttl (ms), maxRecover and touched (ms of the last
publication).  Age trimming uses the time the node passes in; keys also get
a Redis expiry (C{ttl} + L{META_GRACE}) so abandoned channels disappear.
A channel whose publications all expired C{ttl} after its last one is
dropped: a later position has a new epoch, as in the embedded engine.
"""

import uuid

from twisted.internet import defer
from zope.interface import implementer

from muxframe.engines.errors import RecoveryFailure, RecoveryImpossible
from muxframe.engines.history import PLACEHOLDER_TTL, checkOptions, recoveryDecision
from muxframe.engines.interfaces import IHistoryStore
from muxframe.engines.model import Publication, Recovered, StreamPosition, checkName
from muxframe.engines.redisconn import Script

#: Seconds a channel's keys outlive its TTL in Redis (garbage collection).
META_GRACE = 3600

_TRIM = """
local function trim(now)
  local ttl = tonumber(redis.call('HGET', KEYS[2], 'ttl') or '0')
  local cutoff = now - ttl
  while true do
    local e = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 100)
    if #e == 0 then break end
    local stop = false
    for _, entry in ipairs(e) do
      local f, t = entry[2], nil
      for i = 1, #f, 2 do if f[i] == 't' then t = tonumber(f[i + 1]) end end
      if t >= cutoff then stop = true break end
      redis.call('XDEL', KEYS[1], entry[1])
    end
    if stop then break end
  end
  local touched = tonumber(redis.call('HGET', KEYS[2], 'touched') or '0')
  if redis.call('XLEN', KEYS[1]) == 0 and touched < cutoff then
    redis.call('DEL', KEYS[1], KEYS[2])
    return false
  end
  return true
end
"""

# ARGV: epoch, payload, now, size, ttl ms, maxRecover, expire ms.
ADD = Script("historyAdd", _TRIM + """
local now = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then trim(now) end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'last', '0')
end
local offset = redis.call('HINCRBY', KEYS[2], 'last', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[4], string.format('%d-0', offset),
           't', ARGV[3], 'p', ARGV[2])
redis.call('HSET', KEYS[2], 'ttl', ARGV[5], 'maxRecover', ARGV[6], 'touched', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return {offset, epoch}
""")

# ARGV: epoch, now, placeholder ttl ms.
POSITION = Script("historyPosition", _TRIM + """
local now = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then trim(now) end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'last', '0', 'ttl', ARGV[3], 'touched', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return {tonumber(redis.call('HGET', KEYS[2], 'last')), redis.call('HGET', KEYS[2], 'epoch')}
""")

# ARGV: since offset, now, limit (-1: the channel's maxRecover), count (recent: -1).
READ = Script("historyRead", _TRIM + """
local now = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 or not trim(now) then return {false} end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local last = tonumber(redis.call('HGET', KEYS[2], 'last'))
local limit = tonumber(ARGV[3])
if limit < 0 then limit = tonumber(redis.call('HGET', KEYS[2], 'maxRecover') or '1000') end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = last + 1
if head[1] then first = tonumber(string.match(head[1][1], '(%d+)-')) end
local entries
if tonumber(ARGV[4]) >= 0 then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[4])
else
  local since = tonumber(ARGV[1])
  entries = {}
  if since < last then
    entries = redis.call('XRANGE', KEYS[1], string.format('%d-0', since + 1), '+',
                         'COUNT', limit + 1)
  end
end
return {epoch, last, first, limit, entries}
""")


def _publications(channel, epoch, entries):
    out = []
    for entryId, flat in entries:
        fields = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
        out.append(Publication(channel, int(entryId.split(b"-")[0]), epoch, int(fields[b"t"]),
                               fields[b"p"]))
    return out


@implementer(IHistoryStore)
class RedisHistory:
    """
    Channel history in Redis.
    """

    def __init__(self, client, prefix, clock):
        self._client = client
        self._prefix = prefix
        self._clock = clock

    def _keys(self, channel):
        base = "%sh:{%s}" % (self._prefix, channel)
        return [base, base + ":meta"]

    def _now(self):
        return int(self._clock.seconds() * 1000)

    def add(self, channel, payload, options):
        """
        See L{IHistoryStore.add}.
        """
        try:
            checkName(channel, "channel")
            checkOptions(options)
        except Exception:
            return defer.fail()
        now = self._now()
        ttl = int(options.ttl * 1000)
        d = self._client.run(ADD, self._keys(channel), [
            uuid.uuid4().hex[:16], payload, now, options.size, ttl, options.maxRecover,
            ttl + META_GRACE * 1000])

        def added(reply):
            offset, epoch = reply
            return Publication(channel, int(offset), epoch.decode("ascii"), now, bytes(payload))
        return d.addCallback(added)

    def position(self, channel):
        """
        See L{IHistoryStore.position}.
        """
        try:
            checkName(channel, "channel")
        except Exception:
            return defer.fail()
        d = self._client.run(POSITION, self._keys(channel), [
            uuid.uuid4().hex[:16], self._now(), int(PLACEHOLDER_TTL * 1000)])
        return d.addCallback(lambda r: StreamPosition(int(r[0]), r[1].decode("ascii")))

    @defer.inlineCallbacks
    def recover(self, channel, since, limit=None):
        """
        See L{IHistoryStore.recover}.
        """
        checkName(channel, "channel")
        reply = yield self._client.run(READ, self._keys(channel), [
            since.offset, self._now(), -1 if limit is None else limit, -1])
        if not reply[0]:
            raise RecoveryImpossible(RecoveryFailure.EPOCH_CHANGED, None)
        epoch, last, first, limit, entries = reply
        epoch = epoch.decode("ascii")
        after = recoveryDecision(epoch, int(first), int(last), since, int(limit))
        publications = [p for p in _publications(channel, epoch, entries) if p.offset > after]
        return Recovered(tuple(publications), StreamPosition(int(last), epoch))

    @defer.inlineCallbacks
    def recent(self, channel, limit):
        """
        See L{IHistoryStore.recent}.
        """
        checkName(channel, "channel")
        reply = yield self._client.run(READ, self._keys(channel), [0, self._now(), -1, limit])
        if not reply[0]:
            position = yield self.position(channel)
            return Recovered((), position)
        epoch, last, first, _, entries = reply
        epoch = epoch.decode("ascii")
        publications = _publications(channel, epoch, entries)[::-1] if limit > 0 else []
        return Recovered(tuple(publications), StreamPosition(int(last), epoch))
