"""
Measurements the server keeps for operators, cheap enough for the hot
path: per-type message counts and latency histograms.  Nothing here
imports Twisted or reads a clock; metrics exporters read these at scrape
time.

Rules:

  - L{MessageTypeCounts} holds two lists of 256 counts (one per message
    type), C{received} and C{sent}, shared by every connection of a
    server (L{muxframe.xtmp.connection.XTMPConnection.typeCounts}): one
    list increment per message, nothing per session.
  - L{Histogram} counts observations into fixed buckets (upper bounds,
    inclusive, as Prometheus's C{le}) plus one past the last bound, and
    keeps their sum: C{observe} is a bisection and two additions.
"""

from bisect import bisect_left

#: Latency buckets (seconds): 100 us to 10 s.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                   0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Session duration buckets (seconds): a second to a day.
DURATION_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0,
                    12 * 3600.0, 86400.0)


class MessageTypeCounts:
    """
    Messages received and sent, by message type (0..255).

    @ivar received: counts of messages given to the application, by type
        (what C{Counters.messagesReceived} counts).
    @ivar sent: counts of messages encoded, by type (what
        C{Counters.messagesSent} counts).
    """

    __slots__ = ("received", "sent")

    def __init__(self):
        self.received = [0] * 256
        self.sent = [0] * 256

    def nonZero(self):
        """
        C{{"received": {type: n}, "sent": {type: n}}} of the types seen.
        """
        return {"received": {t: n for t, n in enumerate(self.received) if n},
                "sent": {t: n for t, n in enumerate(self.sent) if n}}

    def totals(self):
        """
        C{(received, sent)} over every type.
        """
        return sum(self.received), sum(self.sent)


class Histogram:
    """
    Observations counted into buckets.

    @ivar bounds: the buckets' upper bounds, ascending.
    @ivar counts: observations per bucket (not cumulative); the last entry
        counts those above every bound.
    @ivar sum: the sum of the observations.
    @ivar count: how many there were.
    """

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds=LATENCY_BUCKETS):
        self.bounds = tuple(bounds)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be strictly ascending")
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        """
        Count one observation.
        """
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self):
        """
        C{[(upper bound, observations at or below it)]}, the last bound
        being C{float("inf")} (Prometheus's buckets).
        """
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append((bound, total))
        return out

    def snapshot(self):
        """
        A copy: C{(cumulative buckets, sum, count)}.
        """
        return self.cumulative(), self.sum, self.count

    def asDict(self):
        """
        The histogram as plain data (JSON-ready; the last bound is
        C{"+Inf"}).
        """
        return {"buckets": [["+Inf" if b == float("inf") else b, n]
                            for b, n in self.cumulative()],
                "sum": self.sum, "count": self.count}


__all__ = ["DURATION_BUCKETS", "Histogram", "LATENCY_BUCKETS",
           "MessageTypeCounts"]
