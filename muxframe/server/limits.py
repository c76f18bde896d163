"""
The server's defences as plain state, sans-IO: time is always passed in
as C{now} (seconds) and nothing here imports Twisted.

  - L{TokenBucket}: C{rate} tokens per second up to C{burst}; a take that
    does not fit takes nothing; a charge takes what it must, into debt.
  - L{BucketTable}: one bucket per key (a source address), at most
    C{maxKeys} of them; a bucket that has refilled completely is
    indistinguishable from a new one, so it is forgotten first.
  - L{Lockout}: failed attempts per key (a client key's fingerprint, a
    source address).  C{maxFailures} failures, each within C{window}
    seconds of the previous, lock the key for C{base} seconds, doubled at
    each further lockout up to C{maximum}.  A lock expires by itself; a
    key that stays quiet for C{maximum} seconds after its lock ends is
    forgotten (its backoff too).  A success clears the failure count, not
    the backoff.  At most C{maxKeys} keys are tracked (oldest dropped).
  - L{ConnectionCounter}: connections in total and per address.
  - L{ConcurrencyGate}: at most C{limit} jobs in flight; then up to
    C{queueLimit} wait in order; beyond that, refusal.
  - L{LogThrottle} (muxframe's one, from L{muxframe.logthrottle}): at
    most C{perInterval} log lines per kind per C{interval}; the rest are
    counted and reported once.
"""

from collections import OrderedDict, deque

from muxframe.logthrottle import LogThrottle  # noqa: F401 (re-exported)


class TokenBucket:
    """
    A token bucket.  C{rate} <= 0 means unlimited.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate, burst, now=0.0):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now):
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now

    def take(self, now, amount=1.0):
        """
        Take C{amount} tokens if there are that many; return whether it
        did.  An amount above C{burst} is taken from a full bucket (so one
        large message is not refused forever), leaving it in debt.
        """
        if self.rate <= 0:
            return True
        self._refill(now)
        if self.tokens >= amount or (amount > self.burst
                                     and self.tokens >= self.burst):
            self.tokens -= amount
            return True
        return False

    def charge(self, now, amount):
        """
        Take C{amount} tokens whatever is there, leaving the bucket in
        debt if it held fewer (for what was handled already, and is
        counted after); return whether it is not in debt.
        """
        if self.rate <= 0:
            return True
        self._refill(now)
        self.tokens -= amount
        return self.tokens >= 0

    def wait(self, now, amount=1.0):
        """
        Seconds until C{amount} tokens (at most C{burst}) are there.
        """
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        need = min(amount, self.burst) - self.tokens
        return max(0.0, need / self.rate)

    def isFull(self, now):
        """
        Whether the bucket has refilled to C{burst}.
        """
        self._refill(now)
        return self.tokens >= self.burst


class BucketTable:
    """
    Token buckets by key, bounded by C{maxKeys}.
    """

    def __init__(self, rate, burst, maxKeys=65536):
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
        self._buckets = OrderedDict()

    def __len__(self):
        return len(self._buckets)

    def take(self, key, now, amount=1.0):
        """
        Take from C{key}'s bucket; return whether it fitted.
        """
        if self.rate <= 0:
            return True
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.maxKeys:
                self._evict(now)
            bucket = buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            buckets.move_to_end(key)
        return bucket.take(now, amount)

    def _evict(self, now):
        # Least recently used first; a full bucket carries no state.
        for key in list(self._buckets)[:max(1, self.maxKeys // 16)]:
            del self._buckets[key]


class _Record:
    __slots__ = ("failures", "last", "lockedUntil", "level")

    def __init__(self):
        self.failures = 0
        self.last = 0.0
        self.lockedUntil = 0.0
        self.level = 0


class Lockout:
    """
    Failed-attempt lockout with exponential backoff and expiry, per key.

    @ivar locks: how many lockouts began.
    """

    def __init__(self, maxFailures=3, window=300.0, base=60.0,
                 maximum=3600.0, maxKeys=65536):
        self.maxFailures = maxFailures
        self.window = window
        self.base = base
        self.maximum = maximum
        self.maxKeys = maxKeys
        self._records = OrderedDict()
        self.locks = 0

    def __len__(self):
        return len(self._records)

    def _record(self, key, now, create):
        record = self._records.get(key)
        if record is not None:
            quiet = max(record.lockedUntil, record.last)
            if now - quiet >= self.maximum:
                # Quiet long enough: forget it, backoff included.
                del self._records[key]
                record = None
        if record is None and create:
            if len(self._records) >= self.maxKeys:
                self._records.popitem(last=False)
            record = self._records[key] = _Record()
        return record

    def lockedFor(self, key, now):
        """
        Seconds C{key} stays locked (0 if it is not locked).
        """
        if self.maxFailures <= 0:
            return 0.0
        record = self._record(key, now, False)
        if record is None:
            return 0.0
        return max(0.0, record.lockedUntil - now)

    def failure(self, key, now):
        """
        Count a failed attempt by C{key}.

        @return: the seconds of the lockout this failure starts, else 0.
        """
        if self.maxFailures <= 0:
            return 0.0
        record = self._record(key, now, True)
        self._records.move_to_end(key)
        if record.lockedUntil > now:
            return 0.0
        if now - record.last > self.window:
            record.failures = 0
        record.failures += 1
        record.last = now
        if record.failures < self.maxFailures:
            return 0.0
        duration = min(self.maximum, self.base * (2 ** record.level))
        record.level += 1
        record.failures = 0
        record.lockedUntil = now + duration
        self.locks += 1
        return duration

    def success(self, key, now):
        """
        C{key} authenticated: clear its failure count.
        """
        record = self._record(key, now, False)
        if record is not None:
            record.failures = 0


class ConnectionCounter:
    """
    Live connections, in total and per address.
    """

    def __init__(self, maxTotal=10000, maxPerAddress=10):
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
        self.total = 0
        self._perAddress = {}

    def refusal(self, address):
        """
        Why a new connection from C{address} would be refused, else
        L{None}.
        """
        if self.maxTotal and self.total >= self.maxTotal:
            return "the server has %d connections (max_connections)" % (
                self.total,)
        if self.maxPerAddress and \
                self._perAddress.get(address, 0) >= self.maxPerAddress:
            return "%s has %d connections (max_connections_per_client)" % (
                address, self._perAddress[address])
        return None

    def add(self, address):
        """
        Count a connection from C{address}.
        """
        self.total += 1
        self._perAddress[address] = self._perAddress.get(address, 0) + 1

    def remove(self, address):
        """
        Forget a connection from C{address}.
        """
        self.total -= 1
        left = self._perAddress.get(address, 1) - 1
        if left > 0:
            self._perAddress[address] = left
        else:
            self._perAddress.pop(address, None)

    def of(self, address):
        """
        Live connections from C{address}.
        """
        return self._perAddress.get(address, 0)


class ConcurrencyGate:
    """
    At most C{limit} jobs in flight, C{queueLimit} more waiting.

    @ivar inFlight: jobs running.
    @ivar rejected: jobs refused because the queue was full.
    """

    RUN, QUEUED, REJECTED = "run", "queued", "rejected"

    def __init__(self, limit, queueLimit):
        self.limit = limit
        self.queueLimit = queueLimit
        self.inFlight = 0
        self.rejected = 0
        self._waiting = deque()

    @property
    def queued(self):
        """
        Jobs waiting.
        """
        return len(self._waiting)

    def admit(self, job):
        """
        Offer C{job}: L{RUN} (it holds a slot now: call L{release} when
        done), L{QUEUED} (L{release} will return it later) or L{REJECTED}.
        """
        if self.inFlight < self.limit:
            self.inFlight += 1
            return self.RUN
        if len(self._waiting) < self.queueLimit:
            self._waiting.append(job)
            return self.QUEUED
        self.rejected += 1
        return self.REJECTED

    def release(self):
        """
        A job finished: return the next waiting job (it now holds the
        slot), or L{None}.
        """
        if self._waiting:
            return self._waiting.popleft()
        self.inFlight -= 1
        return None

    def drop(self, predicate):
        """
        Remove and return the waiting jobs for which C{predicate} is true.
        """
        kept, dropped = deque(), []
        for job in self._waiting:
            (dropped if predicate(job) else kept).append(job)
        self._waiting = kept
        return dropped
