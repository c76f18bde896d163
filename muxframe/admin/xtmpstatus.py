"""
The XTMP role's status: health, statistics, metrics and session views of
an L{muxframe.server.factory.XTMPServer}, read through its public
surfaces (the registry and its observers, the broker's, router's and
events' counters, the per-type message counts), never its private state.

L{SessionTally} observes the registry: when a session ends it adds the
session's final byte and message counts to running totals (so totals
never go back when sessions close) and its duration to a histogram.
"""

from zope.interface import implementer

from muxframe.admin.metrics import typeLabel
from muxframe.admin.status import RoleStatus, isoTime
from muxframe.server.interfaces import IRegistryObserver
from muxframe.server.measures import DURATION_BUCKETS, Histogram
from muxframe.xtmp.codec import Cipher

#: The refusal event names of the server, as metric labels.
REFUSALS = {"refused_draining": "draining", "refused_locked_out": "locked_out",
            "refused_connections": "connections", "refused_busy": "busy",
            "refused_rate": "rate"}
#: Router counters, as metric labels.
ROUTER_OUTCOMES = {"received": "received", "responded": "responded",
                   "failed": "failed", "applicationErrors": "application_error",
                   "rejected": "rejected", "queuedTotal": "queued"}
#: The storage's counts (L{muxframe.server.storage.Storage.counts}), as
#: metric names after C{muxframe_xtmp_storage_}.
STORAGE_METRICS = (("bound", "bound"), ("entities", "entities"),
                   ("binds", "binds"), ("replaced", "replaced"),
                   ("missed_pings", "missedPings"),
                   ("notices_dropped", "noticesDropped"),
                   ("devices_forgotten", "devicesForgotten"),
                   ("queues_refused", "queuesRefused"),
                   ("records_dropped", "droppedByCap"))
_COUNTED = ("bytesReceived", "bytesSent", "messagesReceived", "messagesSent")


@implementer(IRegistryObserver)
class SessionTally:
    """
    Totals of the sessions that ended, and how long they lasted.

    @ivar closed: C{{counter name: total}} of ended sessions.
    @ivar durations: a L{Histogram} of their durations in seconds.
    """

    def __init__(self, registry, clock):
        self.clock = clock
        self.closed = dict.fromkeys(_COUNTED, 0)
        self.durations = Histogram(DURATION_BUCKETS)
        registry.addObserver(self)

    def sessionAdded(self, session):
        """
        Nothing to count yet.
        """

    def sessionRemoved(self, session, reason):
        """
        Add the session's final counts and its duration.
        """
        counters = session.counters
        for name in _COUNTED:
            self.closed[name] += counters.get(name, 0)
        if session.connectedAt is not None:
            self.durations.observe(max(0.0, self.clock.seconds()
                                       - session.connectedAt))


def parseSessionId(text):
    """
    A session id from its hex form (C{0x1f3a...} or C{1f3a...}), or
    L{None}.
    """
    text = text.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if not text or len(text) > 16 or any(c not in "0123456789abcdef"
                                         for c in text):
        return None
    return int(text, 16)


class XTMPStatus(RoleStatus):
    """
    The status of an XTMP server role.

    @param server: the L{XTMPServer}.
    @param config: its L{ServerConfig}.
    @param storage: its L{muxframe.server.storage.Storage}, or L{None}:
        what keeps the storage from working (Redis down) makes the role
        degraded.
    """

    role = "xtmp"

    def __init__(self, server, config, reactor, storage=None):
        self.server = server
        self.config = config
        self.storage = storage
        self.tally = SessionTally(server.registry, reactor)
        RoleStatus.__init__(self, reactor)

    # -- RoleStatus --------------------------------------------------------

    def isDraining(self):
        return self.draining or self.server.draining

    def checks(self):
        server, reasons = self.server, []
        limit = server.connections.maxTotal
        if limit and server.connections.total >= 0.9 * limit:
            reasons.append("%d connections of max_connections %d"
                           % (server.connections.total, limit))
        if server.handshakesInProgress >= server.maxHandshakes:
            reasons.append("%d handshakes in progress (max_handshakes %d)"
                           % (server.handshakesInProgress, server.maxHandshakes))
        for messageType, route in sorted(server.router.routes().items()):
            gate = route.gate
            if gate.queueLimit and gate.queued >= 0.5 * gate.queueLimit:
                reasons.append("%d messages of type %s waiting (queue %d)"
                               % (gate.queued, typeLabel(messageType),
                                  gate.queueLimit))
        if self.storage is not None:
            reasons.extend(self.storage.problems())
        return reasons

    def _liveCounters(self):
        live = dict.fromkeys(_COUNTED, 0)
        for session in self.server.registry.list():
            counters = session.counters
            for name in _COUNTED:
                live[name] += counters.get(name, 0)
        return live

    def totals(self):
        live = self._liveCounters()
        closed = self.tally.closed
        received, sent = self.server.messageTypes.totals()
        router, broker = self.server.router.latency, self.server.broker.latency
        return {"messages": received + sent,
                "bytesReceived": live["bytesReceived"] + closed["bytesReceived"],
                "bytesSent": live["bytesSent"] + closed["bytesSent"],
                "latencySum": router.sum + broker.sum,
                "latencyCount": router.count + broker.count}

    def encryptionStatus(self):
        """
        C{"enabled"} (every session encrypted), or C{"optional"} (cipher
        none allowed, inside TLS).
        """
        return "optional" if self.config["server.allow_plaintext"] \
            else "enabled"

    def healthFields(self):
        server = self.server
        return {
            "active_connections": server.connections.total,
            "sessions": len(server.registry),
            "active_streams": server.broker.stats()["subscriptions"],
            "handshakes_in_progress": server.handshakesInProgress,
            "encryption_status": self.encryptionStatus(),
            "ciphers": list(self.config["server.ciphers"]),
        }

    def summary(self):
        server = self.server
        return {"connections": server.connections.total,
                "sessions": len(server.registry),
                "streams": server.broker.stats()["subscriptions"]}

    def stats(self):
        """
        The server's C{stats()} as JSON (message types and router types
        as labels), with the rates and the ended sessions' totals.
        """
        stats = self.server.stats()
        stats["router"] = {typeLabel(t): row
                           for t, row in stats["router"].items()}
        stats["messages"] = {
            direction: {typeLabel(t): n for t, n in counts.items()}
            for direction, counts in stats["messages"].items()}
        stats["endedSessions"] = dict(self.tally.closed)
        stats["sessionDurations"] = self.tally.durations.asDict()
        stats["rates"] = self.rates()
        stats["uptime"] = self.uptime()
        stats["role"] = self.role
        if self.storage is not None:
            stats["storage"] = self.storage.stats()
        return stats

    def roleMetrics(self, m):
        server = self.server
        registry = server.registry
        m.add("muxframe_xtmp_connections_active", server.connections.total)
        for event, reason in REFUSALS.items():
            m.add("muxframe_xtmp_connections_refused",
                  server.refusals.get(event, 0), reason=reason)
        m.add("muxframe_xtmp_sessions_active", len(registry))
        m.add("muxframe_xtmp_sessions_opened", registry.opened)
        m.add("muxframe_xtmp_sessions_closed", registry.closed)
        m.histogram("muxframe_xtmp_session_duration_seconds",
                    self.tally.durations)
        m.add("muxframe_xtmp_handshakes_in_progress",
              server.handshakesInProgress)
        m.add("muxframe_xtmp_handshakes", server.handshakesCompleted,
              outcome="completed")
        m.add("muxframe_xtmp_handshakes", server.handshakesFailed,
              outcome="failed")
        m.add("muxframe_xtmp_handshakes", server.replayCache.rejected,
              outcome="replay_refused")
        counts = server.messageTypes
        for t in range(256):
            if counts.received[t]:
                m.add("muxframe_xtmp_messages_received", counts.received[t],
                      type=typeLabel(t))
            if counts.sent[t]:
                m.add("muxframe_xtmp_messages_sent", counts.sent[t],
                      type=typeLabel(t))
        totals = self.totals()
        m.add("muxframe_xtmp_bytes", totals["bytesReceived"],
              direction="received")
        m.add("muxframe_xtmp_bytes", totals["bytesSent"], direction="sent")
        m.histogram("muxframe_xtmp_message_latency_seconds",
                    server.router.latency, kind="handler")
        m.histogram("muxframe_xtmp_message_latency_seconds",
                    server.broker.latency, kind="request")
        broker = server.broker.stats()
        m.add("muxframe_xtmp_subscriptions", broker["subscriptions"])
        for name, key in (("published", "published"),
                          ("deliveries", "deliveries"),
                          ("undelivered", "undelivered"),
                          ("broadcasts", "broadcasts"),
                          ("slow_consumers", "slowConsumers"),
                          ("requests", "requests")):
            m.add("muxframe_xtmp_broker_" + name, broker[key])
        for outcome, key in (("replied", "replies"),
                             ("no_responders", "noResponders"),
                             ("timeout", "requestTimeouts"),
                             ("bad_reply", "badReplies"),
                             ("late", "lateReplies")):
            m.add("muxframe_xtmp_broker_replies", broker[key], outcome=outcome)
        m.add("muxframe_xtmp_broker_refused", broker["permissionDenied"],
              reason="permission_denied")
        m.add("muxframe_xtmp_broker_refused", broker["badSubject"],
              reason="bad_subject")
        events = dict(server.events.counts)
        m.add("muxframe_xtmp_rate_limited", events.get("rate_limited", 0))
        m.add("muxframe_xtmp_auth_failures", events.get("auth_failed", 0))
        m.add("muxframe_xtmp_lockouts", server.addressLockout.locks,
              kind="address")
        m.add("muxframe_xtmp_lockouts", server.keyLockout.locks
              if server.keyLockout is not None else 0, kind="key")
        for event, count in sorted(events.items()):
            m.add("muxframe_xtmp_events", count, event=event)
        for t, row in sorted(server.router.stats().items()):
            label = typeLabel(t)
            for key, outcome in ROUTER_OUTCOMES.items():
                m.add("muxframe_xtmp_router_messages", row.get(key, 0),
                      type=label, outcome=outcome)
            m.add("muxframe_xtmp_router_in_flight", row["inFlight"], type=label)
            m.add("muxframe_xtmp_router_queued", row["queued"], type=label)
        m.add("muxframe_xtmp_router_unknown_types", server.router.unknownTypes)
        if self.storage is not None:
            counts = self.storage.counts()
            for name, key in STORAGE_METRICS:
                m.add("muxframe_xtmp_storage_" + name, counts[key])

    # -- sessions ----------------------------------------------------------

    def sessions(self, identity=None, active=None, idle=60.0):
        """
        The live sessions, oldest first: with C{identity} those of that
        name or fingerprint; with C{active} true those with an application
        message in the last C{idle} seconds, false the others.
        """
        now = self.reactor.seconds()
        out = []
        for session in self.server.registry.list(identity):
            last = session.lastActivity
            recent = last is not None and now - last < idle
            if active is None or active == recent:
                out.append(session)
        return out

    def session(self, sessionId):
        """
        The live session with C{sessionId}, or L{None}.
        """
        return self.server.registry.get(sessionId)

    def describe(self, session, detailed=True):
        """
        A session in the documents' status shape: id, status, connected
        at, last activity, messages sent and received, quality metrics
        (the heartbeat round trip, throughput), and what the registry
        knows (peer, identity, subscriptions, counters).
        """
        base = self.server.registry.describe(session)
        now = self.reactor.seconds()
        counters = base["counters"]
        connectedAt, last = base["connectedAt"], base["lastActivity"]
        lifetime = max(now - connectedAt, 1e-9) if connectedAt else None
        rtt = base["rtt"]
        result = getattr(session, "result", None)
        out = {
            "session_id": "%#x" % (base["sessionId"],),
            "status": "active" if session.isConnected() else "closing",
            "peer": base["peer"],
            "identity": base["identity"],
            "connected_at": isoTime(connectedAt),
            "last_activity": isoTime(last),
            "idle_seconds": None if last is None else round(now - last, 3),
            "messages_sent": counters.get("messagesSent", 0),
            "messages_received": counters.get("messagesReceived", 0),
            "bytes_sent": counters.get("bytesSent", 0),
            "bytes_received": counters.get("bytesReceived", 0),
            "cipher": Cipher.describe(result.cipher) if result else None,
            "subscriptions": base["subscriptions"],
        }
        if detailed:
            total = counters.get("bytesSent", 0) + \
                counters.get("bytesReceived", 0)
            out["quality_metrics"] = {
                "latency_ms": None if rtt is None else round(rtt * 1000, 3),
                "heartbeat_rtt_ms": None if rtt is None
                else round(rtt * 1000, 3),
                "throughput_mbps": round(total * 8 / lifetime / 1e6, 6)
                if lifetime else 0.0,
                "messages_per_second": round(
                    (out["messages_sent"] + out["messages_received"])
                    / lifetime, 3) if lifetime else 0.0,
                "resent": counters.get("resent", 0),
                "duplicates_dropped": counters.get("duplicatesDropped", 0),
                "send_buffered_bytes": getattr(session, "bufferedBytes", 0),
            }
            out["duration_seconds"] = round(lifetime, 3) if lifetime else 0.0
            out["counters"] = counters
        return out


__all__ = ["SessionTally", "XTMPStatus", "parseSessionId"]
