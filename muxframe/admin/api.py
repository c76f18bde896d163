"""
The admin API's resources (docs/operations.md, "The admin HTTP
service", lists every path, field and status code):

  GET    /health                      the health report; 503 unless healthy
  GET    /metrics                     Prometheus text (prometheus_client)
  GET    /api/v1/stats                the role's statistics
  GET    /api/v1/sessions             XTMP: live sessions (?active=, ?identity=,
                                      ?idle=, ?limit=)
  GET    /api/v1/sessions/{id}        XTMP: one session, with quality metrics
  DELETE /api/v1/sessions/{id}        XTMP: disconnect it (?code=, ?reason= or
                                      a JSON body {code, reason})
  POST   /api/v1/broadcast            XTMP: {type, payload (base64), subject?}
  POST   /api/v1/publish              XTMP: {subject, type, payload (base64)}
  GET    /api/v1/connections          multiplexer roles: live connections

Every write action (a disconnect, a broadcast, a publish) that is carried
out is logged at info, naming who asked (L{requester}: the peer's address,
or the uid and pid of a UNIX-socket peer) and what was done, with
C{event="admin_action"} and the fields for JSON logs.  Only an
authenticated client can act, so these lines are not throttled; refused
requests are not logged.
"""

import base64
import binascii
import socket
import struct

from twisted.internet.address import UNIXAddress

from muxframe.admin.http import (
    AdminRoot, JSONError, JSONResource, JSONTree, notFound, queryArgument,
    readJSON,
)
from muxframe.admin.status import HEALTHY
from muxframe.admin.xtmpstatus import parseSessionId
from muxframe.logthrottle import logger
from muxframe.xtmp.errors import XTMPErrorCode

log = logger("muxframe.admin")


def requester(request):
    """
    Who sent C{request}, for the log: C{"127.0.0.1:53122"} over TCP (TLS
    too), C{"unix socket, uid 1000 pid 4242"} over a UNIX socket (its
    peer's credentials, C{SO_PEERCRED}, where the platform has them).
    """
    address = request.getClientAddress()
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None and port is not None:
        return "%s:%d" % (host, port)
    credentials = None
    transport = getattr(request.channel, "transport", None)
    handle = getattr(transport, "getHandle", lambda: None)()
    if hasattr(socket, "SO_PEERCRED") and isinstance(handle, socket.socket):
        try:
            credentials = struct.unpack("3i", handle.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        except OSError:
            credentials = None
    if credentials is not None:
        pid, uid, _ = credentials
        return "unix socket, uid %d pid %d" % (uid, pid)
    if isinstance(address, UNIXAddress):
        return "unix socket"
    return str(address)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _boolean(request, name):
    text = queryArgument(request, name)
    if text is None:
        return None
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise JSONError(400, "%s must be true or false, not %r" % (name, text),
                    "invalid_argument", argument=name)


def _number(request, name, default, low=0.0):
    """
    Query argument C{name} as a number at least C{low} (C{default} when
    absent).

    @raise JSONError: 400 naming it, for text that is not such a number.
    """
    text = queryArgument(request, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= low:
        raise JSONError(400, "%s must be a number at least %g, not %r"
                        % (name, low, text), "invalid_argument",
                        argument=name)
    return value


def _count(request, name, default, low=1):
    """
    Query argument C{name} as a whole number at least C{low} (C{default}
    when absent): C{limit=inf}, C{1e400} or C{1.5} is a 400 naming it (an
    infinite float was taken, and failed as a 500 when made an index).

    @raise JSONError: 400 naming it.
    """
    text = queryArgument(request, name)
    if text is None:
        return default
    try:
        value = int(text.strip(), 10)
    except ValueError:
        value = None
    if value is None or value < low:
        raise JSONError(400, "%s must be a whole number at least %d, not %r"
                        % (name, low, text), "invalid_argument",
                        argument=name)
    return value


def parseCode(value, where="code"):
    """
    An XTMP error code from its name (C{GOING_AWAY}) or number.

    @raise JSONError: 400 if it is neither.
    """
    if isinstance(value, str):
        name = value.strip().upper()
        if name in XTMPErrorCode.__members__:
            return XTMPErrorCode[name]
        try:
            value = int(value, 0)
        except ValueError:
            raise JSONError(400, "%s: unknown error code %r (a name such as "
                            "GOING_AWAY, or a number)" % (where, value),
                            "invalid_field", field=where)
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 0 <= value <= 0xFFFF:
        raise JSONError(400, "%s: expected an error code name or a number "
                        "0-65535, not %r" % (where, value), "invalid_field",
                        field=where)
    return value


def parseType(value, where="type"):
    """
    An application message type (name, number or C{"0x40"}).

    @raise JSONError: 400 naming the fault.
    """
    from muxframe.server.config import parseMessageType
    from muxframe.server.errors import ConfigError
    try:
        return parseMessageType(value, where)
    except ConfigError as e:
        raise JSONError(400, str(e), "invalid_field", field=where)


def parsePayload(value, limit, where="payload"):
    """
    Base64 (standard alphabet, padded) to bytes, at most C{limit} bytes.

    @raise JSONError: 400 naming the fault.
    """
    if not isinstance(value, str):
        raise JSONError(400, "%s: expected base64 text, not %s"
                        % (where, type(value).__name__), "invalid_field",
                        field=where)
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise JSONError(400, "%s: not valid base64: %s" % (where, e),
                        "invalid_field", field=where)
    if len(data) > limit:
        raise JSONError(400, "%s: %d bytes, over the server's "
                        "max_payload_size %d" % (where, len(data), limit),
                        "payload_too_large", field=where)
    return data


class HealthResource(JSONResource):
    """
    C{GET /health}: 200 when healthy, else 503, with the report.
    """

    def __init__(self, status):
        JSONResource.__init__(self)
        self.status = status

    def json_GET(self, request):
        report = self.status.health()
        return (200 if report["status"] == HEALTHY else 503), report


class StatsResource(JSONResource):
    """
    C{GET /api/v1/stats}.
    """

    def __init__(self, status):
        JSONResource.__init__(self)
        self.status = status

    def json_GET(self, request):
        return self.status.stats()


class SessionsResource(JSONResource):
    """
    C{GET /api/v1/sessions}; its children are the sessions by id.
    """

    def __init__(self, status):
        JSONResource.__init__(self)
        self.status = status

    def getChild(self, name, request):
        if name == b"":
            return self
        sessionId = parseSessionId(name.decode("ascii", "replace"))
        if sessionId is None:
            return notFound(request)
        return SessionResource(self.status, sessionId)

    def json_GET(self, request):
        identity = queryArgument(request, "identity")
        active = _boolean(request, "active")
        idle = _number(request, "idle", 60.0)
        limit = _count(request, "limit", 1000)
        sessions = self.status.sessions(identity, active, idle)
        shown = sessions[:limit]
        return {"sessions": [self.status.describe(s, detailed=False)
                             for s in shown],
                "count": len(shown), "matched": len(sessions),
                "total": len(self.status.server.registry)}


class SessionResource(JSONResource):
    """
    C{GET} and C{DELETE /api/v1/sessions/{id}}.
    """

    isLeaf = True

    def __init__(self, status, sessionId):
        JSONResource.__init__(self)
        self.status = status
        self.sessionId = sessionId

    def _session(self, request):
        if request.postpath not in ([], [b""]):
            raise JSONError(404, "no such resource: %s"
                            % (request.path.decode("utf-8", "replace"),),
                            "no_such_resource")
        session = self.status.session(self.sessionId)
        if session is None:
            raise JSONError(404, "no live session %#x" % (self.sessionId,),
                            "no_such_session",
                            session_id="%#x" % (self.sessionId,))
        return session

    def json_GET(self, request):
        return self.status.describe(self._session(request))

    def json_DELETE(self, request):
        session = self._session(request)
        code, reason = XTMPErrorCode.GOING_AWAY, None
        if request.content is not None and request.content.read(1):
            request.content.seek(0)
            body = readJSON(request)
            code = parseCode(body.get("code", code))
            reason = body.get("reason")
        code = parseCode(queryArgument(request, "code", code))
        reason = queryArgument(request, "reason", reason)
        if reason is None:
            reason = "disconnected by the operator"
        if not isinstance(reason, str) or len(reason.encode("utf-8")) > 1024:
            raise JSONError(400, "reason: expected text of at most 1024 "
                            "bytes", "invalid_field", field="reason")
        self.status.server.registry.disconnect(self.sessionId, code, reason)
        answer = {"session_id": "%#x" % (self.sessionId,),
                  "disconnected": True, "code": XTMPErrorCode.describe(code),
                  "reason": reason, "identity": session.identity.asDict()}
        log.info("admin API: {requester} disconnected session {session_id} "
                 "({who}) with {code}: {reason!r}", event="admin_action",
                 action="disconnect", requester=requester(request),
                 who=_identityText(answer["identity"]),
                 **{k: answer[k] for k in ("session_id", "code", "reason")})
        return answer


def _identityText(identity):
    """
    A session's identity (its C{asDict}) for a log line: C{key alice},
    C{token ci}, C{key 3f2a9c01...} (a fingerprint's first 16 digits),
    C{anonymous}.
    """
    name = identity.get("name") or (identity.get("fingerprint") or "")[:16]
    kind = identity.get("kind", "?")
    return "%s %s" % (kind, name) if name else kind


class _SendResource(JSONResource):
    """
    A message to deliver (broadcast, publish): C{required} fields, and
    L{deliver} sends it.
    """

    required = ("type",)
    #: The action, for the log (its field C{action}, and the verb of its
    #: line).
    action = verb = None

    def __init__(self, status):
        JSONResource.__init__(self)
        self.status = status

    def json_POST(self, request):
        from muxframe.server.errors import Refusal
        body = readJSON(request, self.required)
        limit = self.status.config["xtmp_protocol.max_payload_size"]
        messageType = parseType(body["type"])
        payload = parsePayload(body.get("payload", ""), limit)
        subject = body.get("subject", "broadcast")
        if not isinstance(subject, str) or not subject:
            raise JSONError(400, "subject: expected a subject such as "
                            "orders.new", "invalid_field", field="subject")
        try:
            count = self.deliver(subject, payload, messageType)
        except Refusal as e:
            raise JSONError(400, "subject: %s" % (e.reason,), "invalid_field",
                            field="subject")
        log.info("admin API: {requester} {verb} {bytes} bytes of type "
                 "{type:#04x} on {subject!r}: delivered to {delivered}",
                 event="admin_action", action=self.action, verb=self.verb,
                 requester=requester(request), bytes=len(payload),
                 type=messageType, subject=subject, delivered=count)
        return {"delivered": count, "subject": subject,
                "type": messageType, "bytes": len(payload)}


class BroadcastResource(_SendResource):
    """
    C{POST /api/v1/broadcast}: to every session (on C{subject}, default
    C{broadcast}).
    """

    action = verb = "broadcast"

    def deliver(self, subject, payload, messageType):
        return self.status.server.broadcast(payload, messageType, subject)


class PublishResource(_SendResource):
    """
    C{POST /api/v1/publish}: to a subject's subscribers.
    """

    required = ("subject", "type")
    action, verb = "publish", "published"

    def deliver(self, subject, payload, messageType):
        return self.status.server.publish(subject, payload, messageType)


class ConnectionsResource(JSONResource):
    """
    C{GET /api/v1/connections} (multiplexer roles).
    """

    def __init__(self, status):
        JSONResource.__init__(self)
        self.status = status

    def json_GET(self, request):
        connections = self.status.connections()
        return {"connections": connections, "count": len(connections)}


class IndexResource(JSONResource):
    """
    What the service offers (C{GET /} and C{GET /api/v1/}).
    """

    def __init__(self, paths):
        JSONResource.__init__(self)
        self.paths = paths

    def json_GET(self, request):
        return {"paths": self.paths}


def buildRoot(status, settings, metrics):
    """
    The admin site's root resource for a role's C{status}.

    @param settings: the role's L{OperatorSettings}.
    @param metrics: the C{/metrics} resource.
    """
    xtmp = status.role == "xtmp"
    api = {"stats": StatsResource(status)}
    if xtmp:
        api.update(sessions=SessionsResource(status),
                   broadcast=BroadcastResource(status),
                   publish=PublishResource(status))
    else:
        api["connections"] = ConnectionsResource(status)
    paths = ["/health", "/metrics"] + ["/api/v1/" + name for name in sorted(api)]
    index = IndexResource(paths)
    root = AdminRoot(settings.token,
                     [b"metrics"] if settings.publicMetrics else [], index,
                     readToken=settings.readToken)
    root.putChild(b"health", HealthResource(status))
    root.putChild(b"metrics", metrics)
    v1 = JSONTree(index)
    for name, resource in api.items():
        v1.putChild(name.encode("ascii"), resource)
    apiTree = JSONTree(index)
    apiTree.putChild(b"v1", v1)
    root.putChild(b"api", apiTree)
    return root


__all__ = ["buildRoot", "parseCode", "parsePayload", "parseType",
           "requester"]
