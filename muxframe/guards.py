"""
A connection's defences against hostile peers, sans-IO: flood budgets and
the timers that close connections nobody uses.

Rules:

  - A L{TokenBucket} holds up to C{limit} tokens and refills continuously at
    C{limit} per C{window} seconds: a peer may spend C{limit} at once, and
    C{limit / window} a second for ever after.  A limit of 0 disables it.
  - Two buckets per connection (L{SessionGuards}): C{maxResets} for streams
    the peer resets, closes before their end or opens only to be refused
    (the rapid-reset attack, CVE-2023-44487), and C{maxEmptyFrames} for
    frames that carry nothing (empty data, window updates granting nothing
    or more than was sent, keepalives, acknowledgements of nothing, frames
    for streams already gone: the CVE-2019-9518 class).  Overdrawing one is
    a L{FloodError}: the engine ends the session with code 5, "exhausted".
  - A connection is I{pressed} (L{SessionGuards.pressed}) while either
    bucket holds less than PACE_LEVEL of its limit: its peer spent more
    than a tenth of a budget faster than it refills.  The Multiplexer reads
    a pressed connection one slice per C{floodPause}, so a flood costs a
    bounded share of the reactor until it spends the rest of its budget and
    is closed; an honest peer spends far less and is never pressed.
  - C{headerTimeout}: a frame header (or BMP control frame) begun that long
    ago and still incomplete ends the session (a peer stalled mid-header).
  - C{idleTimeout}: nothing received for that long ends the session.
  - C{emptyTimeout} (servers): no open stream and nothing received for that
    long ends the session.
  - Time is an argument ("now", in seconds); no clock is read here.

No Twisted import.
"""

from .errors import FloodError, SessionTimeoutError

# A bucket below this share of its limit presses its connection (see above).
PACE_LEVEL = 0.9


class TokenBucket:
    """
    C{limit} tokens, refilled at C{limit} per C{window} seconds.

    @ivar limit: the most tokens held (0: unlimited).
    @ivar spent: how many tokens were ever spent.
    """

    __slots__ = ("limit", "_rate", "_tokens", "_stamp", "spent")

    def __init__(self, limit, window, now=0.0):
        self.limit = limit
        self._rate = limit / window
        self._tokens = float(limit)
        self._stamp = now
        self.spent = 0

    def spend(self, now, count=1):
        """
        Spend C{count} tokens at time C{now}; return C{False} once the
        bucket is overdrawn (C{True} while it is not, or if unlimited).
        """
        self.spent += count
        limit = self.limit
        if not limit:
            return True
        tokens = self._tokens
        elapsed = now - self._stamp
        if elapsed > 0:
            tokens += elapsed * self._rate
            if tokens > limit:
                tokens = limit
            self._stamp = now
        tokens -= count
        self._tokens = tokens
        return tokens >= 0

    def below(self, level, now):
        """
        Return true if the bucket holds less than C{level} (a share of its
        limit) at time C{now}; never if unlimited.
        """
        limit = self.limit
        if not limit:
            return False
        tokens = self._tokens
        if tokens >= limit * level:
            return False
        return tokens + (now - self._stamp) * self._rate < limit * level


class SessionGuards:
    """
    The flood budgets and timers of one connection; its engine reports what
    the peer does and asks which timer is due.
    """

    __slots__ = ("settings", "role", "resets", "empties", "headerSince",
                 "emptySince")

    def __init__(self, settings, role, now=0.0):
        self.settings = settings
        self.role = role
        window = settings.floodWindow
        self.resets = TokenBucket(settings.maxResets, window, now)
        self.empties = TokenBucket(settings.maxEmptyFrames, window, now)
        self.headerSince = None
        self.emptySince = now

    def reset(self, now, framing, what, *args):
        """
        The peer reset, closed early or had refused a stream (C{what % args}
        names it, for the error).

        @raise FloodError: past C{maxResets} per C{floodWindow}.
        """
        if not self.resets.spend(now):
            self._flood(framing, "stream resets and refusals", "maxResets", what, args)

    def empty(self, now, framing, what, *args):
        """
        The peer sent a frame that carries nothing (C{what % args} names it).

        @raise FloodError: past C{maxEmptyFrames} per C{floodWindow}.
        """
        if not self.empties.spend(now):
            self._flood(framing, "frames that carry nothing", "maxEmptyFrames", what, args)

    def pressed(self, now):
        """
        Return true while the peer spends a flood budget fast: either
        bucket holds less than PACE_LEVEL of its limit at C{now}.
        """
        return (self.resets.below(PACE_LEVEL, now)
                or self.empties.below(PACE_LEVEL, now))

    def _flood(self, framing, kind, setting, what, args):
        settings = self.settings
        what = what % args
        raise FloodError(
            "%s peer flood: more %s than %s=%d per floodWindow=%g s (the last: %s)"
            % (framing.upper(), kind, setting, getattr(settings, setting),
               settings.floodWindow, what))

    def received(self, now, inHeader, headerDone):
        """
        Bytes arrived: C{inHeader} if a frame header is now partly
        received, C{headerDone} if at least one header was completed.
        """
        if not inHeader:
            self.headerSince = None
        elif headerDone or self.headerSince is None:
            self.headerSince = now

    def streams(self, count, now):
        """
        The connection now has C{count} open streams.
        """
        if count:
            self.emptySince = None
        elif self.emptySince is None:
            self.emptySince = now

    def deadline(self, lastReceived):
        """
        Return when the next timer is due, or C{None}.
        """
        settings = self.settings
        deadline = None
        if settings.idleTimeout:
            deadline = lastReceived + settings.idleTimeout
        if settings.headerTimeout and self.headerSince is not None:
            when = self.headerSince + settings.headerTimeout
            if deadline is None or when < deadline:
                deadline = when
        if (settings.emptyTimeout and self.role == "server"
                and self.emptySince is not None):
            when = max(self.emptySince, lastReceived) + settings.emptyTimeout
            if deadline is None or when < deadline:
                deadline = when
        return deadline

    def expired(self, now, lastReceived):
        """
        Return the L{SessionTimeoutError} of a timer due at C{now}, or
        C{None}.
        """
        settings = self.settings
        if settings.idleTimeout and now >= lastReceived + settings.idleTimeout:
            return SessionTimeoutError(
                "nothing received for %g s (idleTimeout)" % (settings.idleTimeout,))
        if (settings.headerTimeout and self.headerSince is not None
                and now >= self.headerSince + settings.headerTimeout):
            return SessionTimeoutError(
                "a frame header begun %g s ago is still incomplete (headerTimeout)"
                % (now - self.headerSince,))
        if (settings.emptyTimeout and self.role == "server"
                and self.emptySince is not None
                and now >= max(self.emptySince, lastReceived) + settings.emptyTimeout):
            return SessionTimeoutError(
                "no stream open and nothing received for %g s (emptyTimeout)"
                % (settings.emptyTimeout,))
        return None


__all__ = ["PACE_LEVEL", "SessionGuards", "TokenBucket"]
