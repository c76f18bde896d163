"""
The multiplexer roles' status (C{twistd muxframe server|client}): health,
statistics, metrics and the list of multiplexed connections, per
C{--endpoint}.

Each endpoint has a L{MultiplexerTally}, an observer of its connections
(L{muxframe.observed.IMultiplexerObserver}): it keeps the live ones and
adds each lost one's final counters to running totals, so the totals of
an endpoint (live connections' counters plus the lost ones') never go
back.  Tunnels report through their factories' L{TunnelStats}.

Health checks: a client endpoint without a connection ready, and a
server endpoint carrying reverse tunnels (C{--local}) without a client
connected, make the role degraded.
"""

from zope.interface import implementer

from muxframe.admin.status import RoleStatus
from muxframe.describe import addressText
from muxframe.errors import ErrorCode
from muxframe.observed import IMultiplexerObserver

_FIELDS = ("bytesSent", "bytesReceived", "framesSent", "framesReceived",
           "streamsOpened", "streamsAccepted", "streamsRefused",
           "creditStalls", "keepalivesSent")
_SECURE = ("ssl", "tls")


def _codeName(code):
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def _add(totals, counters):
    for name in _FIELDS:
        totals[name] += counters[name]
    for key in ("resetsSent", "resetsReceived"):
        for code, n in counters[key].items():
            totals[key][code] = totals[key].get(code, 0) + n


def emptyTotals():
    """
    Counters at zero, in the shape of C{Counters.asDict()}.
    """
    totals = dict.fromkeys(_FIELDS, 0)
    totals["resetsSent"] = {}
    totals["resetsReceived"] = {}
    return totals


@implementer(IMultiplexerObserver)
class MultiplexerTally:
    """
    The multiplexed connections of one endpoint: the live ones, how many
    were made, and the final counters of those lost.
    """

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.live = []
        self.made = 0
        self.lost = emptyTotals()
        endpoint.addObserver(self)

    def multiplexerConnected(self, endpoint, mux):
        """
        Count a new connection.
        """
        self.made += 1
        self.live.append(mux)

    def multiplexerLost(self, endpoint, mux, reason):
        """
        Keep its final counters.
        """
        if mux in self.live:
            self.live.remove(mux)
            _add(self.lost, mux.counters.asDict())

    def totals(self):
        """
        Every counter of this endpoint's connections, live and lost.
        """
        totals = emptyTotals()
        _add(totals, self.lost)
        for mux in self.live:
            if mux.engine is not None:
                _add(totals, mux.counters.asDict())
        return totals

    def ready(self):
        """
        The live connections ready to carry streams (TLS verified).
        """
        return [mux for mux in self.live if not mux.disconnected
                and getattr(mux, "isVerified", lambda: True)()]

    def streams(self):
        """
        Open streams over the live connections.
        """
        return sum(mux.streamCount() for mux in self.live)


class TunnelView:
    """
    One C{--endpoint} of a multiplexer role as the status sees it.

    @ivar label: its description (C{mio:tcp:9000}).
    @ivar tally: its L{MultiplexerTally}.
    @ivar carried: C{[(kind, endpoint, factory)]}: each tunnel factory with
        C{stats} (forwarded streams, C{--local} listeners).
    @ivar locals: its C{--local} descriptions.
    """

    def __init__(self, label, endpoint, carried=(), locals=()):
        self.label = label
        self.endpoint = endpoint
        self.tally = MultiplexerTally(endpoint)
        self.carried = list(carried)
        self.locals = list(locals)

    @property
    def secure(self):
        """
        Whether its connections run over TLS.
        """
        parts = self.label.split(":")
        while parts and parts[0] in ("mio", "bmp"):
            parts.pop(0)
        return bool(parts) and parts[0] in _SECURE


def viewsOf(options, top):
    """
    The L{TunnelView}s of a multiplexer role: C{options} its parsed role
    options (their C{tunnels}), C{top} the service L{muxframe.tap}
    built (its C{tunnels}).
    """
    views = []
    for tunnel, running in zip(options.tunnels, top.tunnels):
        carried = []
        if getattr(running.streams, "stats", None) is not None:
            carried.append((running.streams.kind, tunnel.forward,
                            running.streams))
        for description, local in zip(tunnel.locals, running.locals):
            carried.append((local.kind, description, local))
        # The --endpoint with its framing, without the settings.
        label = "%s:%s" % (tunnel.framing, tunnel.innerEndpoint())
        views.append(TunnelView(label, running.endpoint, carried,
                                tunnel.locals))
    return views


class MultiplexerStatus(RoleStatus):
    """
    The status of a C{server} or C{client} multiplexer role.
    """

    def __init__(self, role, views, reactor):
        self.role = role
        self.views = views
        RoleStatus.__init__(self, reactor)

    def checks(self):
        reasons = []
        for view in self.views:
            if self.role == "client" and not view.tally.ready():
                reasons.append("no %s connection is up"
                               % (view.label,))
            elif self.role == "server" and view.locals and \
                    view.endpoint.currentMultiplexer() is None:
                reasons.append("reverse tunnels %s: no client is connected "
                               "to %s" % (", ".join(view.locals), view.label))
        return reasons

    def totals(self):
        out = {"messages": 0, "bytesReceived": 0, "bytesSent": 0}
        for view in self.views:
            totals = view.tally.totals()
            out["messages"] += totals["framesReceived"] + totals["framesSent"]
            out["bytesReceived"] += totals["bytesReceived"]
            out["bytesSent"] += totals["bytesSent"]
        return out

    def summary(self):
        return {"connections": sum(len(v.tally.live) for v in self.views),
                "sessions": sum(len(v.tally.ready()) for v in self.views),
                "streams": sum(v.tally.streams() for v in self.views)}

    def healthFields(self):
        secure = [view.secure for view in self.views]
        summary = self.summary()
        return {
            "active_connections": summary["connections"],
            "sessions": summary["sessions"],
            "active_streams": summary["streams"],
            "encryption_status": "enabled" if all(secure) else
            "disabled" if not any(secure) else "mixed",
            "endpoints": [{"endpoint": v.label, "connections": len(v.tally.live),
                           "tls": v.secure} for v in self.views],
        }

    def stats(self):
        """
        Per endpoint: connections made and live, open streams, the
        counters, and each tunnel's stats.
        """
        endpoints = []
        for view in self.views:
            totals = view.tally.totals()
            for key in ("resetsSent", "resetsReceived"):
                totals[key] = {_codeName(c): n for c, n in totals[key].items()}
            endpoints.append({
                "endpoint": view.label,
                "connectionsMade": view.tally.made,
                "connections": len(view.tally.live),
                "streams": view.tally.streams(),
                "counters": totals,
                "tunnels": [dict(kind=kind, endpoint=where,
                                 opened=f.stats.opened, active=f.stats.active,
                                 failed=f.stats.failed,
                                 bytesIn=f.stats.bytesIn,
                                 bytesOut=f.stats.bytesOut)
                            for kind, where, f in view.carried],
            })
        return {"role": self.role, "uptime": self.uptime(),
                "draining": self.isDraining(), "endpoints": endpoints,
                "rates": self.rates()}

    def connections(self):
        """
        The live multiplexed connections, per endpoint.
        """
        out = []
        for view in self.views:
            for mux in view.tally.live:
                out.append({
                    "endpoint": view.label,
                    "peer": addressText(mux.transport.getPeer())
                    if mux.transport is not None else None,
                    "framing": mux.framing,
                    "ready": mux in view.tally.ready(),
                    "streams": mux.streamCount(),
                    "counters": mux.counters.asDict()
                    if mux.engine is not None else None,
                })
        return out

    def roleMetrics(self, m):
        for view in self.views:
            label, tally = view.label, view.tally
            totals = tally.totals()
            m.add("muxframe_mux_connections_active", len(tally.live),
                  endpoint=label)
            m.add("muxframe_mux_connections", tally.made, endpoint=label)
            m.add("muxframe_mux_streams_active", tally.streams(),
                  endpoint=label)
            m.add("muxframe_mux_streams_opened", totals["streamsOpened"],
                  endpoint=label, by="local")
            m.add("muxframe_mux_streams_opened", totals["streamsAccepted"],
                  endpoint=label, by="peer")
            m.add("muxframe_mux_streams_refused", totals["streamsRefused"],
                  endpoint=label)
            for direction in ("Sent", "Received"):
                for code, n in sorted(totals["resets" + direction].items()):
                    m.add("muxframe_mux_streams_reset", n, endpoint=label,
                          direction=direction.lower(), code=_codeName(code))
                m.add("muxframe_mux_bytes", totals["bytes" + direction],
                      endpoint=label, direction=direction.lower())
                m.add("muxframe_mux_frames", totals["frames" + direction],
                      endpoint=label, direction=direction.lower())
            m.add("muxframe_mux_credit_stalls", totals["creditStalls"],
                  endpoint=label)
            m.add("muxframe_mux_keepalives_sent", totals["keepalivesSent"],
                  endpoint=label)
            for kind, where, factory in view.carried:
                stats = factory.stats
                m.add("muxframe_tunnel_connections", stats.opened, kind=kind,
                      endpoint=where, outcome="spliced")
                m.add("muxframe_tunnel_connections", stats.failed, kind=kind,
                      endpoint=where, outcome="failed")
                m.add("muxframe_tunnel_connections_active", stats.active,
                      kind=kind, endpoint=where)
                m.add("muxframe_tunnel_bytes", stats.bytesIn, kind=kind,
                      endpoint=where, direction="in")
                m.add("muxframe_tunnel_bytes", stats.bytesOut, kind=kind,
                      endpoint=where, direction="out")


__all__ = ["MultiplexerStatus", "MultiplexerTally", "TunnelView", "viewsOf"]
