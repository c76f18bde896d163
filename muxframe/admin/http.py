"""
The admin service's HTTP layer (twisted.web): JSON resources, bearer-token
authentication, bounded request bodies.

Rules:

  - Every request needs C{Authorization: Bearer <token>} (one such
    header; the token, or the read token for GET and HEAD only: a write
    with it is a 403), compared in constant time (C{hmac.compare_digest}),
    unless
    the service has no token (a C{unix:} socket) or the path is
    C{/metrics} and metrics are public.  Without it: 401 with
    C{WWW-Authenticate: Bearer}.  Refusals are not logged (a flood of bad
    requests must not become a flood of log lines); they are counted
    (L{AdminRoot.unauthorized}, exported as a metric).
  - Every answer is JSON (C{application/json}), errors too:
    C{{"error": TEXT, "status": CODE, "fault": WORD}} (L{errorBody}: the
    fault a word for programs, by default the status's in L{FAULTS};
    with C{field} or C{argument} naming what it is about): 400 bad input
    (bad JSON, JSON nested over L{MAX_DEPTH} levels or giving a key
    twice, text that is not Unicode, a missing or wrong field, bad
    base64), 404 unknown path (below a leaf too; one trailing slash is
    the leaf itself) or id, 405 a method the path does not take (with
    C{Allow}), 413 a body over the limit, 500 a fault of ours (logged
    with its traceback, never sent; at most 10 such lines a minute, so
    that a request that finds a fault cannot flood the log).
  - A request body is read up to C{maxBody} bytes: a declared
    C{Content-Length} over it is answered 413 at once and the connection
    closed; a chunked body that grows past it is discarded as it comes
    and answered 413.  Memory per request is bounded by C{maxBody}.
  - A request must arrive whole (head and body) within the site's
    C{requestTimeout} seconds of the connection's accept, or of the end
    of the previous response on a kept-alive connection, however its
    bytes trickle in; then the connection is dropped
    (L{DeadlineChannel}).  twisted.web's own idle timeout restarts on
    every byte, so a client sending one byte a minute held a connection
    for ever (slowloris).
"""

import hmac
import json
import time
from io import BytesIO

from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request

from muxframe.logthrottle import LogThrottle, logger, throttled

#: The throttle of L{logFault}: 10 lines a minute.
faultThrottle = LogThrottle()
_log = logger("muxframe.admin")


def logFault(what, failure=None, **fields):
    """
    Log a fault of ours (C{what}, a format naming C{fields}) with its
    traceback (C{failure}, default the exception being handled), unless
    10 were logged in the last minute (L{faultThrottle}): then the next
    allowed line says how many were suppressed.
    """
    if failure is None:
        failure = Failure()
    throttled(_log, faultThrottle, time.monotonic(), LogLevel.critical,
              "fault", what, log_failure=failure, **fields)


#: The fault of an error document that names none, by status.
FAULTS = {400: "bad_request", 401: "unauthorized", 403: "forbidden",
          404: "not_found",
          405: "method_not_allowed", 413: "body_too_large",
          500: "internal_error", 503: "unavailable"}


class JSONError(Exception):
    """
    An HTTP error answered as JSON.

    @ivar fault: the error document's C{fault} (default: the status's in
        L{FAULTS}).
    @ivar extra: more fields of the document (C{field}, C{missing}...).
    """

    def __init__(self, code, message, fault=None, **extra):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.fault = fault
        self.extra = extra


def encodeJSON(value):
    """
    C{value} as JSON bytes (sorted keys, a newline at the end).
    """
    return json.dumps(value, sort_keys=True, default=str).encode("utf-8") + b"\n"


def respond(request, code, value, headers=()):
    """
    Answer C{request} with C{code} and C{value} as JSON; return the body.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    for name, text in headers:
        request.setHeader(name, text)
    return encodeJSON(value)


def errorBody(code, message, fault=None, **extra):
    """
    The JSON error document: C{{"error": message, "status": code,
    "fault": fault}} and C{extra}.  C{fault} is a word a program can
    test (C{invalid_json}, C{no_such_session}...), by default the
    status's (L{FAULTS}).
    """
    body = {"error": message, "status": code,
            "fault": fault or FAULTS.get(code, "error")}
    body.update(extra)
    return body


MAX_DEPTH = 32


def nestingDepth(value):
    """
    How deeply lists and dicts nest in C{value} (a scalar: 0), found
    without recursion.
    """
    deepest, pending = 0, [(value, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        pending.extend((item, depth + 1) for item in value)
    return deepest


def loneSurrogate(value):
    """
    The first text in C{value} (a string, or a key or string anywhere in
    its lists and dicts) holding a lone surrogate, which JSON's C{\\ud800}
    escapes can spell but no UTF-8 can encode; or L{None}.  Found without
    recursion.
    """
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return value
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return None


def _uniqueKeys(pairs):
    """
    A JSON object's C{(key, value)} pairs as a dict.

    @raise JSONError: 400 naming a key given twice (json keeps the last:
        a check in front of the service that read the first would be
        fooled).
    """
    value = dict(pairs)
    if len(value) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONError(400, "the body gives key %s twice"
                                % (ascii(key)[:80],), "duplicate_key")
            seen.add(key)
    return value


def readJSON(request, required=()):
    """
    The request's body as a JSON object, with C{required} keys present,
    nested at most L{MAX_DEPTH} levels, its text all Unicode (no lone
    surrogate: a reason or subject holding one failed as a 500 when
    encoded).

    @raise JSONError: 400 naming what is wrong.
    """
    data = request.content.read() if request.content is not None else b""
    if not data.strip():
        raise JSONError(400, "expected a JSON object in the request body",
                        "no_body")
    try:
        value = json.loads(data.decode("utf-8"),
                           object_pairs_hook=_uniqueKeys)
    except (UnicodeDecodeError, ValueError) as e:
        raise JSONError(400, "the body is not valid JSON: %s" % (e,),
                        "invalid_json")
    except RecursionError:
        # json's decoder recurses per level: '[' * 100000 under the limit.
        raise JSONError(400, "the body is not valid JSON: nested too deeply",
                        "nested_too_deeply")
    if nestingDepth(value) > MAX_DEPTH:
        # A value that parsed just within the recursion limit would raise
        # RecursionError later, in the repr of an error message.
        raise JSONError(400, "the body is nested too deeply (over %d levels)"
                        % (MAX_DEPTH,), "nested_too_deeply")
    bad = loneSurrogate(value)
    if bad is not None:
        raise JSONError(400, "the body holds text that is not Unicode (a "
                        "lone surrogate escape): %s" % (ascii(bad)[:80],),
                        "not_unicode")
    if not isinstance(value, dict):
        raise JSONError(400, "expected a JSON object, got %s"
                        % (type(value).__name__,), "not_an_object")
    missing = [key for key in required if key not in value]
    if missing:
        raise JSONError(400, "missing field %s" % (", ".join(missing),),
                        "missing_field", missing=missing)
    return value


def queryArgument(request, name, default=None):
    """
    The last value of query argument C{name} as text, or C{default}.
    """
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise JSONError(400, "query argument %s is not UTF-8" % (name,),
                        "invalid_argument", argument=name)


class JSONResource(Resource):
    """
    A resource answering JSON: C{json_GET(request)} etc. return the value
    (or C{(code, value)}); raising L{JSONError} answers an error.

    Its path with a trailing slash is the same resource; a path below it
    answers JSON 404 (not twisted.web's HTML "No Such Resource").
    """

    def getChild(self, name, request):
        """
        Itself for a final empty segment (C{/health/}), else JSON 404.
        """
        if name == b"" and not request.postpath:
            return self
        return notFound(request)

    def render(self, request):
        """
        Dispatch on the method; every outcome is JSON.
        """
        method = request.method.decode("ascii", "replace").upper()
        if method == "HEAD":
            method = "GET"
        handler = getattr(self, "json_" + method, None)
        if getattr(request, "bodyTooLarge", False):
            return respond(request, 413, errorBody(
                413, "the request body is over %d bytes" % (request.maxBody,)),
                [(b"connection", b"close")])
        if handler is None:
            allowed = {name[5:] for name in dir(self)
                       if name.startswith("json_")}
            if "GET" in allowed:
                # (HEAD is served wherever GET is.)
                allowed.add("HEAD")
            allowed = sorted(allowed)
            return respond(request, 405, errorBody(
                405, "%s is not allowed here (allowed: %s)"
                % (method, ", ".join(allowed))),
                [(b"allow", ", ".join(allowed).encode("ascii"))])
        try:
            value = handler(request)
        except JSONError as e:
            return respond(request, e.code, errorBody(e.code, e.message,
                                                      e.fault, **e.extra))
        except Exception:
            logFault("admin request {method} {path} failed",
                     method=method, path=request.path)
            return respond(request, 500, errorBody(500, "internal error"))
        code = 200
        if isinstance(value, tuple):
            code, value = value
        return respond(request, code, value)


class ErrorResource(Resource):
    """
    Answers every request with one JSON error.
    """

    isLeaf = True

    def __init__(self, code, message, headers=(), fault=None):
        Resource.__init__(self)
        self.code = code
        self.message = message
        self.headers = headers
        self.fault = fault

    def render(self, request):
        return respond(request, self.code,
                       errorBody(self.code, self.message, self.fault),
                       self.headers)


def notFound(request):
    """
    The 404 resource for C{request}'s path.
    """
    return ErrorResource(404, "no such resource: %s"
                         % (request.path.decode("utf-8", "replace"),),
                         fault="no_such_resource")


class JSONTree(Resource):
    """
    A resource whose unknown children answer JSON 404, and whose own path
    answers with C{index} (a JSON listing).
    """

    def __init__(self, index=None):
        Resource.__init__(self)
        self.index = index

    def getChild(self, name, request):
        if name == b"" and self.index is not None:
            return self.index
        return notFound(request)

    def render(self, request):
        if self.index is not None:
            return self.index.render(request)
        return notFound(request).render(request)


#: The methods a read-only token may use.
READ_METHODS = (b"GET", b"HEAD")
WRITE, READ = "write", "read"


class AdminRoot(JSONTree):
    """
    The root of the admin site: authentication for every path.

    @param token: the bearer token (bytes), or L{None} for none.
    @param publicPaths: first path segments served without the token.
    @param readToken: a bearer token that may only read (L{READ_METHODS}),
        or L{None}.
    @ivar unauthorized: requests refused for a missing or wrong token.
    @ivar forbidden: requests refused for writing with the read token.
    """

    challenge = [(b"www-authenticate", b'Bearer realm="muxframe admin"')]

    def __init__(self, token, publicPaths=(), index=None, readToken=None):
        JSONTree.__init__(self, index)
        self.token = token
        self.readToken = readToken
        self.publicPaths = set(publicPaths)
        self.unauthorized = 0
        self.forbidden = 0

    def access(self, request):
        """
        What C{request}'s token lets it do: L{WRITE} (the token, or none
        is needed), L{READ} (the read token) or L{None}.  The token must be
        in one C{Authorization} header (with several, twisted.web reads the
        last, and a check in front of the service may read the first:
        refused); both tokens are compared, in constant time.
        """
        if self.token is None:
            return WRITE
        headers = request.requestHeaders.getRawHeaders(b"authorization")
        if not headers or len(headers) != 1:
            return None
        scheme, _, given = headers[0].partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        given = given.strip()
        full = hmac.compare_digest(given, self.token)
        read = self.readToken is not None and \
            hmac.compare_digest(given, self.readToken)
        return WRITE if full else READ if read else None

    def authorized(self, request):
        """
        Whether C{request} carries a token (either).
        """
        return self.access(request) is not None

    def refusal(self, request):
        """
        The error resource refusing C{request} (401 without a token, 403
        for a write with the read token), or L{None}.
        """
        access = self.access(request)
        if access is None:
            self.unauthorized += 1
            return ErrorResource(401, "a bearer token is required "
                                 "(Authorization: Bearer TOKEN)",
                                 self.challenge)
        if access == READ and request.method not in READ_METHODS:
            self.forbidden += 1
            return ErrorResource(
                403, "this token may only read (GET, HEAD): %s needs the "
                "admin token" % (request.method.decode("ascii", "replace"),),
                fault="read_only")
        return None

    def getChildWithDefault(self, name, request):
        if name not in self.publicPaths:
            refused = self.refusal(request)
            if refused is not None:
                return refused
        return JSONTree.getChildWithDefault(self, name, request)

    def render(self, request):
        refused = self.refusal(request)
        if refused is not None:
            return refused.render(request)
        return JSONTree.render(self, request)


_REASONS = {400: b"Bad Request", 413: b"Payload Too Large"}


class BoundedRequest(Request):
    """
    A request whose body is read up to C{maxBody} bytes (module rules).
    """

    maxBody = 1 << 20
    bodyTooLarge = False

    def gotLength(self, length):
        """
        Refuse a declared body over the limit at once; keep the rest in
        memory (it is bounded).
        """
        self._bodyBytes = 0
        self.content = BytesIO()
        if length is not None and length > self.maxBody:
            self.bodyTooLarge = True
            self.refuseAtOnce(413, "the request body (%d bytes) is over %d "
                              "bytes" % (length, self.maxBody))

    def immediateResponse(self, code, message):
        """
        The content type and body of an answer sent by L{refuseAtOnce}:
        the JSON error document.
        """
        return b"application/json", encodeJSON(errorBody(code, message))

    def refuseAtOnce(self, code, message):
        """
        Answer C{code} with C{message} on the connection itself, before the
        body is read, and close it.
        """
        kind, body = self.immediateResponse(code, message)
        transport = self.channel.transport
        transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n"
                        b"connection: close\r\ncontent-length: %d\r\n\r\n"
                        % (code, _REASONS.get(code, b"Error"), kind,
                           len(body)) + body)
        transport.loseConnection()

    def handleContentChunk(self, data):
        """
        Keep the body while it is within the limit.
        """
        self._bodyBytes += len(data)
        if self._bodyBytes > self.maxBody:
            self.bodyTooLarge = True
        if not self.bodyTooLarge:
            self.content.write(data)

    def process(self):
        """
        A body refused at once was answered already: nothing more.
        """
        if self.bodyTooLarge and self.channel is not None and \
                self.channel.transport.disconnecting:
            return
        self.content.seek(0)
        Request.process(self)


class DeadlineChannel(HTTPChannel):
    """
    An HTTP channel whose every request must arrive whole within its
    site's C{requestTimeout} seconds (module rules); the site counts the
    connections dropped at that deadline in C{requestsTimedOut}.

    The deadline runs on the channel's C{callLater} (the site's reactor).
    """

    _deadline = None

    def connectionMade(self):
        """
        Start the deadline for the first request.
        """
        HTTPChannel.connectionMade(self)
        self._startDeadline()

    def _startDeadline(self):
        self._stopDeadline()
        if self.transport is None or self.transport.disconnecting:
            return
        self._deadline = self.callLater(self.site.requestTimeout,
                                        self._deadlinePassed)

    def _stopDeadline(self):
        call, self._deadline = self._deadline, None
        if call is not None and call.active():
            call.cancel()

    def _deadlinePassed(self):
        self._deadline = None
        self.site.requestsTimedOut += 1
        if self.transport is not None:
            self.transport.abortConnection()

    def allContentReceived(self):
        """
        A request arrived whole: no deadline while it is answered.
        """
        self._stopDeadline()
        HTTPChannel.allContentReceived(self)

    def requestDone(self, request):
        """
        A response ended: the next request has its own deadline.
        """
        HTTPChannel.requestDone(self, request)
        if self.persistent:
            self._startDeadline()

    def connectionLost(self, reason):
        """
        Stop the deadline.
        """
        self._stopDeadline()
        HTTPChannel.connectionLost(self, reason)


def requestFactory(maxBody):
    """
    A L{BoundedRequest} class with C{maxBody}.
    """
    return type("BoundedRequest", (BoundedRequest,), {"maxBody": maxBody})


__all__ = ["AdminRoot", "BoundedRequest", "DeadlineChannel", "ErrorResource",
           "FAULTS", "READ", "READ_METHODS", "WRITE", "JSONError", "JSONResource", "JSONTree", "MAX_DEPTH",
           "encodeJSON", "logFault", "loneSurrogate", "nestingDepth",
           "notFound", "queryArgument", "readJSON", "requestFactory",
           "respond"]
