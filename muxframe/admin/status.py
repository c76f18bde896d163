"""
What every role's status object has in common: the health verdict and
its JSON, rates over a recent window, uptime, and the metrics every role
exports.  The roles' own status objects (L{muxframe.admin.xtmpstatus},
L{muxframe.admin.muxstatus}) say what their checks, totals and metrics
are.

Health (C{GET /health}; rules, in order):

  1. the role is draining (SIGTERM received, or the XTMP server's drain
     began): C{"draining"};
  2. any of the role's checks fails (a limit nearly reached, a tunnel
     without its connection): C{"degraded"}, each failure named in
     C{reasons};
  3. otherwise C{"healthy"}.

Rates (messages and bytes per second, average latency) compare the
role's cumulative totals now with a sample at most L{RateMeter.window}
seconds old; samples are taken when rates are asked for (no timer), at
most every L{RateMeter.period} seconds, so an idle admin service costs
nothing.
"""

import time
from collections import deque

from zope.interface import Attribute, Interface, implementer

HEALTHY, DEGRADED, DRAINING = "healthy", "degraded", "draining"


class IRoleStatus(Interface):
    """
    What the admin service, metrics and summaries read of a role.
    """

    role = Attribute("'xtmp', 'server' or 'client'.")

    def health():
        """
        The JSON-ready health report (its C{status} one of healthy,
        degraded, draining).
        """

    def stats():
        """
        The JSON-ready statistics (GET /api/v1/stats).
        """

    def metrics():
        """
        A L{muxframe.admin.metrics.MetricSet} of the role, now.
        """

    def summary():
        """
        The figures of the periodic log line: C{connections}, C{sessions},
        C{streams}, and the totals rates are made of.
        """


def formatDuration(seconds):
    """
    C{"72h35m"}, C{"4m12s"}, C{"9s"}: the documents' uptime format.
    """
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return "%dh%02dm" % (hours, minutes)
    if minutes:
        return "%dm%02ds" % (minutes, secs)
    return "%ds" % (secs,)


def isoTime(seconds):
    """
    A Unix time as ISO 8601 UTC with milliseconds, or L{None}.
    """
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + \
        ".%03dZ" % (int(seconds * 1000) % 1000,)


class RateMeter:
    """
    Rates of cumulative totals over a recent window.

    @param clock: an C{IReactorTime}.
    @param totals: callable returning a dict of cumulative numbers.
    """

    period = 5.0
    window = 30.0

    def __init__(self, clock, totals):
        self.clock = clock
        self.totals = totals
        self._samples = deque([(clock.seconds(), totals())])

    def rates(self):
        """
        C{(now's totals, {key: change per second}, seconds covered)} since
        the oldest sample within the window.
        """
        now = self.clock.seconds()
        current = self.totals()
        samples = self._samples
        while len(samples) > 1 and now - samples[1][0] >= self.window:
            samples.popleft()
        then, base = samples[0]
        if now - samples[-1][0] >= self.period:
            samples.append((now, current))
        elapsed = now - then
        if elapsed <= 0:
            return current, dict.fromkeys(current, 0.0), 0.0
        return current, {key: (value - base.get(key, 0)) / elapsed
                         for key, value in current.items()}, elapsed


@implementer(IRoleStatus)
class RoleStatus:
    """
    The common part of a role's status.

    @ivar draining: set when the role begins to stop (the XTMP role reads
        its server's own flag too).
    @ivar adminCounters: set by the role's admin service: a callable
        answering its own counters (C{open}: connections open; refusals
        by reason: C{token}, C{read_only}, C{connections}, C{deadline})
        for the metrics;
        L{None} without one.
    """

    role = None
    adminCounters = None

    def __init__(self, reactor):
        self.reactor = reactor
        self.startedAt = reactor.seconds()
        self.draining = False
        self.meter = RateMeter(reactor, self.totals)

    # -- what each role gives ----------------------------------------------

    def isDraining(self):
        """
        Whether the role drains.
        """
        return self.draining

    def checks(self):
        """
        Reasons the role is degraded (none: it is not).
        """
        return []

    def totals(self):
        """
        Cumulative totals: C{messages}, C{bytesReceived}, C{bytesSent},
        C{latencySum}, C{latencyCount}.
        """
        return {}

    def healthFields(self):
        """
        The role's own fields of the health report.
        """
        return {}

    def roleMetrics(self, metrics):
        """
        Add the role's own samples to C{metrics}.
        """

    # -- built from them ---------------------------------------------------

    def verdict(self):
        """
        C{(status, reasons)}.
        """
        if self.isDraining():
            return DRAINING, ["the role is draining (SIGTERM)"]
        reasons = self.checks()
        return (DEGRADED if reasons else HEALTHY), reasons

    def rates(self):
        """
        C{{"messages", "bytesReceived", "bytesSent"}} per second, and the
        average latency in milliseconds (or L{None}), over the window.
        """
        current, perSecond, elapsed = self.meter.rates()
        latency = None
        count = perSecond.get("latencyCount", 0.0) * elapsed
        if count >= 0.5:
            latency = perSecond["latencySum"] / perSecond["latencyCount"] \
                * 1000.0
        return {"messages": perSecond.get("messages", 0.0),
                "bytesReceived": perSecond.get("bytesReceived", 0.0),
                "bytesSent": perSecond.get("bytesSent", 0.0),
                "averageLatencyMs": latency, "window": elapsed}

    def uptime(self):
        """
        Seconds since the role started.
        """
        return self.reactor.seconds() - self.startedAt

    def health(self):
        """
        The health report (C{GET /health}).
        """
        from muxframe import __version__
        status, reasons = self.verdict()
        rates = self.rates()
        report = {
            "status": status,
            "role": self.role,
            "version": __version__,
            "reasons": reasons,
            "message_throughput": round(rates["messages"], 3),
            "bytes_per_second": {"received": round(rates["bytesReceived"], 1),
                                 "sent": round(rates["bytesSent"], 1)},
            "average_latency_ms": None if rates["averageLatencyMs"] is None
            else round(rates["averageLatencyMs"], 3),
            "rate_window_seconds": round(rates["window"], 1),
            "server_uptime": formatDuration(self.uptime()),
            "uptime_seconds": round(self.uptime(), 3),
            "started_at": isoTime(self.startedAt),
        }
        report.update(self.healthFields())
        return report

    def metrics(self):
        """
        The role's L{MetricSet}.
        """
        from muxframe import __version__
        from muxframe.admin.metrics import MetricSet
        metrics = MetricSet(self.role)
        metrics.add("muxframe_info", 1, role=self.role, version=__version__)
        metrics.add("muxframe_start_time_seconds", self.startedAt)
        metrics.add("muxframe_uptime_seconds", self.uptime())
        status, _ = self.verdict()
        metrics.add("muxframe_draining", status == DRAINING)
        metrics.add("muxframe_healthy", status == HEALTHY)
        if self.adminCounters is not None:
            counters = self.adminCounters()
            metrics.add("muxframe_admin_connections_active",
                        counters["open"])
            for reason in ("token", "read_only", "connections", "deadline"):
                metrics.add("muxframe_admin_refused", counters[reason],
                            reason=reason)
        self.roleMetrics(metrics)
        return metrics


__all__ = ["DEGRADED", "DRAINING", "HEALTHY", "IRoleStatus", "RateMeter",
           "RoleStatus", "formatDuration", "isoTime"]
