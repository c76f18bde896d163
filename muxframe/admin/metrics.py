"""
Prometheus metrics of every role, collected at scrape time.

The roles count for themselves (the XTMP server's registry, broker,
router and events; the multiplexer's per-connection counters; the
tunnels' stats).  Nothing here is incremented per message: a scrape takes
a L{MetricSet} snapshot from the role's status object in the reactor
thread (L{muxframe.admin.metricsresource} renders in the reactor's thread
pool) and turns it into metric families.

L{CATALOGUE} is every metric: name, type, labels, help, and the roles
that export it.  Every family of a role's catalogue is exported, with no
samples if nothing was counted yet, so a dashboard's queries always name
existing metrics.  Counters are named here without C{_total}, which the
exposition adds (C{muxframe_xtmp_bytes} is scraped as
C{muxframe_xtmp_bytes_total}).
"""

import math

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
ALL, XTMP, MUX = ("xtmp", "server", "client"), ("xtmp",), ("server", "client")


class Metric:
    """
    One metric family: C{name}, C{kind}, C{labels}, C{help}, C{roles}.
    """

    __slots__ = ("name", "kind", "labels", "help", "roles")

    def __init__(self, name, kind, labels, help, roles):
        self.name = name
        self.kind = kind
        self.labels = tuple(labels)
        self.help = help
        self.roles = roles

    @property
    def exposed(self):
        """
        The name as scraped (counters end in C{_total}).
        """
        return self.name + "_total" if self.kind == COUNTER else self.name


_ENTRIES = [
    # every role
    ("muxframe_info", GAUGE, ("role", "version"), ALL,
     "The role and muxframe's version (the value is 1)."),
    ("muxframe_start_time_seconds", GAUGE, (), ALL,
     "When the role started, in Unix time."),
    ("muxframe_uptime_seconds", GAUGE, (), ALL,
     "Seconds since the role started."),
    ("muxframe_draining", GAUGE, (), ALL,
     "1 while the role drains after SIGTERM, else 0."),
    ("muxframe_healthy", GAUGE, (), ALL,
     "1 while /health answers healthy, else 0."),
    ("muxframe_admin_connections_active", GAUGE, (), ALL,
     "Open connections to the admin service."),
    ("muxframe_admin_refused", COUNTER, ("reason",), ALL,
     "Admin requests and connections refused, by reason: token (401, no "
     "token or a wrong one), read_only (403, a write with the read "
     "token), connections (503, over the --admin-max-connections served "
     "at once, 64 by default), deadline (dropped: not arrived whole "
     "within --admin-request-timeout, 30 s by default)."),
    # the XTMP server
    ("muxframe_xtmp_connections_active", GAUGE, (), XTMP,
     "Open connections (handshaking or in session)."),
    ("muxframe_xtmp_connections_refused", COUNTER, ("reason",), XTMP,
     "Connections refused before the handshake, by reason: draining, "
     "locked_out, connections (max_connections), busy (max_handshakes), "
     "rate (handshake_rate)."),
    ("muxframe_xtmp_sessions_active", GAUGE, (), XTMP,
     "Live authenticated sessions."),
    ("muxframe_xtmp_sessions_opened", COUNTER, (), XTMP,
     "Sessions whose handshake completed."),
    ("muxframe_xtmp_sessions_closed", COUNTER, (), XTMP,
     "Sessions that ended."),
    ("muxframe_xtmp_session_duration_seconds", HISTOGRAM, (), XTMP,
     "How long ended sessions lasted, from handshake to end."),
    ("muxframe_xtmp_handshakes_in_progress", GAUGE, (), XTMP,
     "Handshakes in progress."),
    ("muxframe_xtmp_handshakes", COUNTER, ("outcome",), XTMP,
     "Handshakes ended, by outcome: completed, failed, replay_refused "
     "(a replayed ClientHello)."),
    ("muxframe_xtmp_messages_received", COUNTER, ("type",), XTMP,
     "Application messages received from sessions, by message type "
     "(the type's name, or 0xNN)."),
    ("muxframe_xtmp_messages_sent", COUNTER, ("type",), XTMP,
     "Messages sent to sessions (application messages, errors and "
     "confirmations), by message type."),
    ("muxframe_xtmp_bytes", COUNTER, ("direction",), XTMP,
     "Bytes on the wire of sessions, by direction (received, sent)."),
    ("muxframe_xtmp_message_latency_seconds", HISTOGRAM, ("kind",), XTMP,
     "Message latency: kind=handler, from a message's arrival to its "
     "handler's outcome (queueing included); kind=request, a request "
     "routed between sessions, from routing to relaying the answer."),
    ("muxframe_xtmp_subscriptions", GAUGE, (), XTMP,
     "Subscriptions (streams) held by sessions."),
    ("muxframe_xtmp_broker_published", COUNTER, (), XTMP,
     "Messages published on subjects."),
    ("muxframe_xtmp_broker_deliveries", COUNTER, (), XTMP,
     "Deliveries of published messages to subscribers."),
    ("muxframe_xtmp_broker_undelivered", COUNTER, (), XTMP,
     "Deliveries dropped (the subscriber closed or was a slow consumer)."),
    ("muxframe_xtmp_broker_broadcasts", COUNTER, (), XTMP,
     "Broadcasts to every session."),
    ("muxframe_xtmp_broker_slow_consumers", COUNTER, (), XTMP,
     "Subscribers disconnected as slow consumers (SLOW_CONSUMER)."),
    ("muxframe_xtmp_broker_requests", COUNTER, (), XTMP,
     "Requests routed to subjects."),
    ("muxframe_xtmp_broker_replies", COUNTER, ("outcome",), XTMP,
     "Routed requests settled, by outcome: replied, no_responders, "
     "timeout, bad_reply (answered with a control type: PROTOCOL_ERROR); "
     "late counts answers after the request was settled."),
    ("muxframe_xtmp_broker_refused", COUNTER, ("reason",), XTMP,
     "Publishes, requests and subscriptions refused: permission_denied, "
     "bad_subject."),
    ("muxframe_xtmp_rate_limited", COUNTER, (), XTMP,
     "Messages refused by a session's rate limit (RATE_LIMITED)."),
    ("muxframe_xtmp_auth_failures", COUNTER, (), XTMP,
     "Failed authentications (unknown key, bad signature, token refused)."),
    ("muxframe_xtmp_lockouts", COUNTER, ("kind",), XTMP,
     "Lockouts after failed authentications, by kind: address, key."),
    ("muxframe_xtmp_events", COUNTER, ("event",), XTMP,
     "The server's notable events by name (docs/xtmp-server.md section 7)."),
    ("muxframe_xtmp_router_messages", COUNTER, ("type", "outcome"), XTMP,
     "Messages routed to handlers, by type and outcome: received, "
     "responded, failed, application_error, rejected (BUSY), queued."),
    ("muxframe_xtmp_router_in_flight", GAUGE, ("type",), XTMP,
     "Messages being handled now, by type."),
    ("muxframe_xtmp_router_queued", GAUGE, ("type",), XTMP,
     "Messages waiting at a type's concurrency cap."),
    ("muxframe_xtmp_router_unknown_types", COUNTER, (), XTMP,
     "Messages of a type without a handler (UNKNOWN_TYPE)."),
    # presence and queues (storage: docs/presence-and-queues.md)
    ("muxframe_xtmp_storage_bound", GAUGE, (), XTMP,
     "Sessions bound to a device (Bind) on this node."),
    ("muxframe_xtmp_storage_entities", GAUGE, (), XTMP,
     "Entities with a session bound on this node."),
    ("muxframe_xtmp_storage_binds", COUNTER, (), XTMP,
     "Binds accepted on this node."),
    ("muxframe_xtmp_storage_replaced", COUNTER, (), XTMP,
     "Bindings replaced by a newer Bind of the same device "
     "(DEVICE_REPLACED)."),
    ("muxframe_xtmp_storage_missed_pings", COUNTER, (), XTMP,
     "Devices taken offline for missed pings."),
    ("muxframe_xtmp_storage_notices_dropped", COUNTER, (), XTMP,
     "Presence and queue notices that could not be sent to a session."),
    ("muxframe_xtmp_storage_devices_forgotten", COUNTER, (), XTMP,
     "Known devices forgotten at storage.max_known_devices (the least "
     "recently seen offline one goes)."),
    ("muxframe_xtmp_storage_queues_refused", COUNTER, (), XTMP,
     "Messages to a new entity refused at storage.max_queues (BUSY)."),
    ("muxframe_xtmp_storage_records_dropped", COUNTER, (), XTMP,
     "Unacknowledged records dropped by the embedded journal's hard cap "
     "(storage.max_journal_bytes)."),
    # the multiplexer roles
    ("muxframe_mux_connections_active", GAUGE, ("endpoint",), MUX,
     "Open multiplexed connections, by --endpoint."),
    ("muxframe_mux_connections", COUNTER, ("endpoint",), MUX,
     "Multiplexed connections made (client) or accepted (server)."),
    ("muxframe_mux_streams_active", GAUGE, ("endpoint",), MUX,
     "Open streams."),
    ("muxframe_mux_streams_opened", COUNTER, ("endpoint", "by"), MUX,
     "Streams opened, by who opened them: local, peer."),
    ("muxframe_mux_streams_refused", COUNTER, ("endpoint",), MUX,
     "Streams the peer opened that were refused (no factory, stream "
     "limit)."),
    ("muxframe_mux_streams_reset", COUNTER, ("endpoint", "direction", "code"),
     MUX, "Stream resets, by direction (sent, received) and error code."),
    ("muxframe_mux_bytes", COUNTER, ("endpoint", "direction"), MUX,
     "Stream payload bytes, by direction (received, sent)."),
    ("muxframe_mux_frames", COUNTER, ("endpoint", "direction"), MUX,
     "Frames, by direction (received, sent)."),
    ("muxframe_mux_credit_stalls", COUNTER, ("endpoint",), MUX,
     "Times a stream had data but no credit (MIO window, BMP in-flight "
     "limit)."),
    ("muxframe_mux_keepalives_sent", COUNTER, ("endpoint",), MUX,
     "Keepalives sent."),
    ("muxframe_tunnel_connections", COUNTER, ("kind", "endpoint", "outcome"),
     MUX, "Tunneled connections, by tunnel (kind: forward, forward tunnel, "
     "reverse tunnel; endpoint: its --forward target or --local address) "
     "and outcome: spliced, failed."),
    ("muxframe_tunnel_connections_active", GAUGE, ("kind", "endpoint"), MUX,
     "Tunneled connections open."),
    ("muxframe_tunnel_bytes", COUNTER, ("kind", "endpoint", "direction"), MUX,
     "Bytes carried by tunnels: in (from the accepted side), out (back)."),
]

#: Every metric, by name.
CATALOGUE = {name: Metric(name, kind, labels, help, roles)
             for name, kind, labels, roles, help in _ENTRIES}


def forRole(role):
    """
    The L{Metric}s a role exports, in catalogue order.
    """
    return [m for m in CATALOGUE.values() if role in m.roles]


class MetricSet:
    """
    The samples of one scrape, as plain data: built in the reactor thread,
    turned into families anywhere.
    """

    def __init__(self, role):
        self.role = role
        self.samples = {m.name: [] for m in forRole(role)}

    def _add(self, name, value, labels):
        metric = CATALOGUE[name]
        if tuple(sorted(labels)) != tuple(sorted(metric.labels)):
            raise ValueError("%s takes labels %s, not %s"
                             % (name, metric.labels, sorted(labels)))
        self.samples[name].append(
            (tuple(str(labels[k]) for k in metric.labels), value))

    def add(self, name, value, **labels):
        """
        A counter or gauge sample.
        """
        self._add(name, float(value), labels)

    def histogram(self, name, histogram, **labels):
        """
        A histogram sample from a L{muxframe.server.measures.Histogram}.
        """
        self._add(name, histogram.snapshot(), labels)

    def families(self):
        """
        prometheus_client metric families of the samples.
        """
        from prometheus_client.core import (
            CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
        )
        out = []
        for name, samples in self.samples.items():
            metric = CATALOGUE[name]
            if metric.kind == COUNTER:
                family = CounterMetricFamily(name, metric.help,
                                             labels=metric.labels)
            elif metric.kind == GAUGE:
                family = GaugeMetricFamily(name, metric.help,
                                           labels=metric.labels)
            else:
                family = HistogramMetricFamily(name, metric.help,
                                               labels=metric.labels)
            for labels, value in samples:
                if metric.kind == HISTOGRAM:
                    buckets, total, _ = value
                    family.add_metric(list(labels), [
                        (_bound(bound), count) for bound, count in buckets],
                        total)
                else:
                    family.add_metric(list(labels), value)
            out.append(family)
        return out


def _bound(bound):
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class RoleCollector:
    """
    A prometheus_client collector of one role: each C{collect()} takes
    C{metrics()} (a L{MetricSet}) of C{status} in the reactor thread.
    """

    def __init__(self, status, reactor):
        self.status = status
        self.reactor = reactor

    def collect(self):
        """
        The role's metric families, now.
        """
        from twisted.python import threadable
        if threadable.isInIOThread():
            metrics = self.status.metrics()
        else:
            from twisted.internet.threads import blockingCallFromThread
            metrics = blockingCallFromThread(self.reactor, self.status.metrics)
        return metrics.families()


def makeRegistry(status, reactor):
    """
    A C{CollectorRegistry} with the role's metrics and the process's
    (C{process_*}, C{python_*}).
    """
    from prometheus_client import (
        CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector,
    )
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(RoleCollector(status, reactor))
    return registry


def typeLabel(messageType):
    """
    A message type as a label: its name (C{"BundleSubmit"}) or C{"0x80"}.
    """
    from muxframe.xtmp.codec import MessageType
    try:
        return MessageType(messageType).name
    except ValueError:
        return "%#04x" % (messageType,)


__all__ = ["CATALOGUE", "Metric", "MetricSet", "RoleCollector", "forRole",
           "makeRegistry", "typeLabel"]
