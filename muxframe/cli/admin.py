"""
C{status}, C{sessions}, C{disconnect}, C{broadcast}, C{publish} and
C{stats}: the admin API of a running role (C{docs/operations.md}
section 5).
"""

import base64
import functools
import json
import time

from muxframe.cli.adminclient import NOT_ADMIN, oneLine
from muxframe.cli.common import (
    MAX_SECONDS, CLIError, addAdminArguments, addPayloadArguments,
    adminClient, emitJSON, numberType, parseType, positiveCount, readPayload,
    say, secondsOrNone,
)


def _answered(run):
    """
    C{run(args)}, where an answer the command cannot show (a field missing
    or of another type: the service at --admin is not a muxframe role's
    admin service, or not one of this version) fails on one line naming
    what is wrong, not with a traceback.
    """

    @functools.wraps(run)
    def checked(args):
        try:
            return run(args)
        except KeyError as e:
            fault = "no field %s" % (oneLine(repr(e.args[0])),)
        except (TypeError, AttributeError) as e:
            fault = oneLine(str(e))
        raise CLIError("admin API at %s: an answer this command cannot show "
                       "(%s): %s" % (args.admin, fault, NOT_ADMIN))

    return checked


#: The shortest --interval: shorter polls the admin API in a busy loop.
MIN_INTERVAL = 0.1
INTERVAL = numberType(float, MIN_INTERVAL, high=MAX_SECONDS,
                      unit=" seconds")


def _repeat(args, once):
    """
    Run C{once()} (returning an exit code), every C{--interval} seconds
    with C{--continuous} until interrupted.
    """
    if not getattr(args, "continuous", False):
        return once()
    code = 0
    try:
        while True:
            code = once()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return code


def _addRepeat(parser):
    parser.add_argument("--continuous", action="store_true",
                        help="repeat until interrupted")
    parser.add_argument("--interval", type=INTERVAL, default=5.0,
                        help="seconds between repeats (default 5; at least "
                             "%g)" % (MIN_INTERVAL,))


def addStatus(subparsers):
    parser = subparsers.add_parser(
        "status", help="the role's health, or one session's status",
        description="Without SESSION_ID: GET /health (exit 0 when healthy, "
                    "1 when degraded or draining).  With it: the session's "
                    "status and quality metrics.")
    addAdminArguments(parser)
    parser.add_argument("session", nargs="?", metavar="SESSION_ID",
                        help="a session id (hex, as the sessions list shows)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    _addRepeat(parser)
    parser.set_defaults(run=_answered(status))


def status(args):
    client = adminClient(args)

    def once():
        if args.session:
            _, body = client.get(client.sessionPath(args.session))
            if args.json:
                emitJSON(body)
            else:
                quality = body.get("quality_metrics", {})
                say("session %s %s: %s, peer %s, since %s, last activity %s"
                    % (body["session_id"], body["status"],
                       _identity(body["identity"]), body["peer"],
                       body["connected_at"], body["last_activity"]))
                say("  messages sent %d, received %d; bytes sent %d, "
                    "received %d; cipher %s; heartbeat rtt %s; "
                    "subscriptions %s" % (
                        body["messages_sent"], body["messages_received"],
                        body["bytes_sent"], body["bytes_received"],
                        body["cipher"],
                        _milliseconds(quality.get("heartbeat_rtt_ms")),
                        ", ".join(s["subject"] for s in body["subscriptions"])
                        or "none"))
            return 0
        code, body = client.get("/health", accept=(200, 503))
        if args.json:
            emitJSON(body)
        else:
            say("%s: %s (%s, up %s): %s connections, %s sessions, %s "
                "streams, %.1f msgs/s, latency %s, encryption %s" % (
                    body.get("role"), body.get("status"),
                    body.get("version"), body.get("server_uptime"),
                    body.get("active_connections"), body.get("sessions"),
                    body.get("active_streams"),
                    body.get("message_throughput") or 0.0,
                    _milliseconds(body.get("average_latency_ms")),
                    body.get("encryption_status")))
            for reason in body.get("reasons", []):
                say("  %s" % (reason,))
        return 0 if code == 200 else 1

    return _repeat(args, once)


def _milliseconds(value):
    """
    A figure in milliseconds for a line, or C{unknown} when the role has
    none (no message measured yet, no heartbeat answered).
    """
    return "unknown" if value is None else "%s ms" % (value,)


def _identity(identity):
    if identity.get("name"):
        return "%s %s" % (identity["kind"], identity["name"])
    if identity.get("fingerprint"):
        return "%s %s" % (identity["kind"], identity["fingerprint"][:16])
    return identity.get("kind", "?")


def addSessions(subparsers):
    parser = subparsers.add_parser(
        "sessions", help="list the live sessions",
        description="GET /api/v1/sessions: the live sessions, oldest first.")
    addAdminArguments(parser)
    parser.add_argument("--identity", help="only this name or fingerprint")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--active", dest="active", action="store_const",
                       const="true", help="only sessions with recent messages")
    which.add_argument("--idle", dest="active", action="store_const",
                       const="false", help="only sessions without")
    parser.add_argument("--within", type=secondsOrNone, default=60.0,
                        help="what 'recent' means, in seconds (default 60)")
    parser.add_argument("--limit", type=positiveCount, default=1000,
                        help="list this many at most (default 1000)")
    parser.add_argument("--detailed", action="store_true",
                        help="show subscriptions and byte counts")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=_answered(sessions))


def sessions(args):
    client = adminClient(args)
    _, body = client.get("/api/v1/sessions", query={
        "identity": args.identity, "active": args.active,
        "idle": args.within, "limit": args.limit})
    if args.json:
        emitJSON(body)
        return 0
    say("%d sessions (of %d live)" % (body["count"], body["total"]))
    for s in body["sessions"]:
        line = "%-20s %-24s %-22s since %s  sent %d recv %d" % (
            s["session_id"], _identity(s["identity"]), s["peer"],
            s["connected_at"], s["messages_sent"], s["messages_received"])
        if args.detailed:
            line += "  bytes %d/%d  %s  subs: %s" % (
                s["bytes_sent"], s["bytes_received"], s["cipher"],
                ", ".join(x["subject"] for x in s["subscriptions"]) or "-")
        say(line)
    return 0


def addDisconnect(subparsers):
    parser = subparsers.add_parser(
        "disconnect", help="disconnect a session",
        description="DELETE /api/v1/sessions/{id}: send it Disconnect (after "
                    "Error, for a failure code) and close it.")
    addAdminArguments(parser)
    parser.add_argument("session", metavar="SESSION_ID")
    parser.add_argument("--code", default="GOING_AWAY",
                        help="the XTMP code: a name or number (default "
                             "GOING_AWAY)")
    parser.add_argument("--reason", default=None, help="the reason sent")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=_answered(disconnect))


def disconnect(args):
    client = adminClient(args)
    body = {"code": args.code}
    if args.reason is not None:
        body["reason"] = args.reason
    _, answer = client.request("DELETE", client.sessionPath(args.session), body)
    if args.json:
        emitJSON(answer)
    else:
        say("disconnected %s (%s) with %s" % (
            answer["session_id"], _identity(answer["identity"]),
            answer["code"]))
    return 0


def _addSendArguments(parser):
    addAdminArguments(parser)
    parser.add_argument("--type", "-t", required=True,
                        help="the message type: a name (LiveUpdates) or number")
    addPayloadArguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def _send(args, path, body):
    client = adminClient(args)
    parseType(args.type)
    body["type"] = args.type
    body["payload"] = base64.b64encode(readPayload(args)).decode("ascii")
    _, answer = client.request("POST", path, body)
    if args.json:
        emitJSON(answer)
    else:
        say("delivered to %d sessions (%s, %d bytes)" % (
            answer["delivered"], answer["subject"], answer["bytes"]))
    return 0


def addBroadcast(subparsers):
    parser = subparsers.add_parser(
        "broadcast", help="send a message to every session",
        description="POST /api/v1/broadcast: every live session receives it "
                    "as a stream message on --subject (default broadcast).")
    _addSendArguments(parser)
    parser.add_argument("--subject", default="broadcast")
    parser.set_defaults(run=_answered(lambda args: _send(
        args, "/api/v1/broadcast", {"subject": args.subject})))


def addPublish(subparsers):
    parser = subparsers.add_parser(
        "publish", help="publish a message on a subject",
        description="POST /api/v1/publish: the subject's subscribers "
                    "receive it.")
    _addSendArguments(parser)
    parser.add_argument("--subject", "-s", required=True)
    parser.set_defaults(run=_answered(lambda args: _send(
        args, "/api/v1/publish", {"subject": args.subject})))


def addStats(subparsers):
    parser = subparsers.add_parser(
        "stats", help="the role's statistics",
        description="GET /api/v1/stats, once or every --interval seconds.")
    addAdminArguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print each snapshot as a line of JSON")
    parser.add_argument("--export", metavar="FILE",
                        help="also write the (last) snapshot to FILE as JSON")
    _addRepeat(parser)
    parser.set_defaults(run=_answered(stats))


def stats(args):
    client = adminClient(args)

    def once():
        _, body = client.get("/api/v1/stats")
        if args.export:
            try:
                with open(args.export, "w") as f:
                    json.dump(body, f, indent=1, sort_keys=True, default=str)
            except OSError as e:
                raise CLIError("--export: %s" % (e,))
        if args.json:
            emitJSON(body)
        else:
            _printStats(body)
        return 0

    return _repeat(args, once)


def _printStats(body):
    rates = body.get("rates", {})
    if body.get("role") == "xtmp":
        sessions, broker = body["sessions"], body["broker"]
        say("xtmp: %d connections, %d sessions (%d opened, peak %d), %d "
            "handshaking; handshakes %d ok %d failed" % (
                body["connections"], sessions["live"], sessions["opened"],
                sessions["peak"], body["handshaking"],
                body["handshakes"]["completed"], body["handshakes"]["failed"]))
        say("  broker: %d published, %d deliveries, %d subscriptions, %d "
            "slow consumers, %d requests" % (
                broker["published"], broker["deliveries"],
                broker["subscriptions"], broker["slowConsumers"],
                broker["requests"]))
        for name, row in sorted(body.get("router", {}).items()):
            say("  handler %s: %d received, %d responded, %d failed, %d "
                "rejected, %d in flight" % (
                    name, row["received"], row["responded"], row["failed"],
                    row["rejected"], row["inFlight"]))
        if body.get("events"):
            say("  events: " + ", ".join(
                "%s %d" % item for item in sorted(body["events"].items())))
    else:
        say("%s: %s" % (body.get("role"), "draining" if body.get("draining")
                        else "running"))
        for e in body.get("endpoints", []):
            c = e["counters"]
            say("  %s: %d connections (%d made), %d streams, %d bytes in, "
                "%d out" % (e["endpoint"], e["connections"],
                            e["connectionsMade"], e["streams"],
                            c["bytesReceived"], c["bytesSent"]))
    say("  rates: %.1f msgs/s, %.0f B/s in, %.0f B/s out" % (
        rates.get("messages", 0.0), rates.get("bytesReceived", 0.0),
        rates.get("bytesSent", 0.0)))


__all__ = ["addBroadcast", "addDisconnect", "addPublish", "addSessions",
           "addStats", "addStatus"]
