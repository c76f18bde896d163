"""
The admin service in this process (no role subprocess): the mode of its
C{unix:} socket, JSON answers for paths below a leaf, and request bodies
nested too deeply to parse.
"""

import json
import os
import shutil
import stat
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe.admin.muxstatus import MultiplexerStatus
from muxframe.admin.service import AdminService
from muxframe.admin.settings import (
    OperatorSettings, checkAdminEndpoint, listeningDescription,
)

from tests.adminsupport import Admin, waitFor


class SocketModeTests(TestCase):
    """
    A C{unix:} admin socket is its owner's only, unless C{mode=} says
    otherwise.
    """

    def socketPath(self):
        # AF_UNIX paths are short (108 bytes): not under _trial_temp.
        directory = tempfile.mkdtemp(prefix="mxadm")
        self.addCleanup(shutil.rmtree, directory, True)
        return os.path.join(directory, "admin.sock")

    @inlineCallbacks
    def listen(self, description):
        """
        Run an admin service on C{description} (without a token); the mode
        bits of its socket file.
        """
        path = self.socketPath()
        settings = OperatorSettings(description % {"path": path},
                                    summaryInterval=0)
        admin = AdminService(MultiplexerStatus("server", [], reactor),
                             settings, reactor)
        admin.startService()
        self.addCleanup(admin.stopService)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        code, report, _ = yield Admin(unix=path, token=None).get("/health")
        self.assertEqual(code, 200, report)
        return mode

    @inlineCallbacks
    def test_ownerOnlyByDefault(self):
        """
        Without C{mode=} the socket is mode 0600, whatever the umask.
        """
        previous = os.umask(0)
        self.addCleanup(os.umask, previous)
        mode = yield self.listen("unix:%(path)s")
        self.assertEqual(mode, 0o600)

    @inlineCallbacks
    def test_explicitMode(self):
        """
        An explicit C{mode=} (octal) is the socket's mode.
        """
        mode = yield self.listen("unix:%(path)s:mode=660")
        self.assertEqual(mode, 0o660)
        mode = yield self.listen("unix:address=%(path)s:mode=666")
        self.assertEqual(mode, 0o666)

    def test_listeningDescription(self):
        """
        C{mode=600} is added to a C{unix:} description without a mode, and
        only there.
        """
        for given, listened in [
                ("unix:/run/a.sock", "unix:/run/a.sock:mode=600"),
                ("unix:/run/a.sock:lockfile=0",
                 "unix:/run/a.sock:lockfile=0:mode=600"),
                ("unix:/run/a.sock:mode=660", "unix:/run/a.sock:mode=660"),
                ("unix:mode=640:address=/run/a.sock",
                 "unix:mode=640:address=/run/a.sock"),
                ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1")]:
            self.assertEqual(listeningDescription(given), listened)

    def test_unaddableMode(self):
        """
        A description whose last character escapes what would follow is a
        usage error, not a socket with a strange name and Twisted's mode.
        """
        self.assertRaises(ValueError, listeningDescription, "unix:/run/a\\")
        error = self.assertRaises(usage.UsageError, checkAdminEndpoint,
                                  "unix:/run/a\\", "--admin")
        self.assertIn("mode=", str(error))
        self.assertRaises(usage.UsageError, checkAdminEndpoint,
                          "unix:/run/a.sock:mode=999", "--admin")


class _Status:
    """
    Just enough of an xtmp role's status for the admin site's paths.
    """

    role = "xtmp"
    config = {"xtmp_protocol.max_payload_size": 65536}

    def health(self):
        return {"status": "healthy"}

    def stats(self):
        return {"sessions": 0}

    class server:
        registry = {}

    def sessions(self, identity=None, active=None, idle=60.0):
        return []

    def session(self, sessionId):
        return None

    def describe(self, session, detailed=True):
        return {}


class SiteTests(TestCase):
    """
    An xtmp role's admin site, with a token, over loopback TCP.
    """

    def setUp(self):
        from twisted.logger import globalLogPublisher
        from twisted.web.resource import Resource

        from muxframe.admin.api import buildRoot
        from muxframe.admin.http import requestFactory
        from muxframe.admin.service import AdminSite
        from tests.adminsupport import TOKEN
        root = buildRoot(_Status(), OperatorSettings(token=TOKEN), Resource())
        site = AdminSite(root)
        site.requestFactory = requestFactory(1 << 20)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.admin = Admin(port.getHost().port)
        # What the admin service logs (refusals are not logged).
        self.logged = []

        def observe(event):
            if event.get("log_namespace") == "muxframe.admin":
                self.logged.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def assertJSONError(self, answer, code, text):
        status, body, headers = answer
        self.assertEqual(headers.getRawHeaders(b"content-type"),
                         [b"application/json"], body)
        self.assertEqual((status, body["status"]), (code, code), body)
        self.assertIn(text, body["error"])

    @inlineCallbacks
    def test_belowALeaf(self):
        """
        A path below a leaf answers JSON 404 naming the path; the token is
        still checked first.
        """
        for path in ("/health/x", "/health//", "/api/v1/stats/x",
                     "/api/v1/broadcast/x", "/api/v1/stats/x/y", "//health",
                     "/api//v1", "/api/v1//stats"):
            answer = yield self.admin.get(path)
            self.assertJSONError(answer, 404, "no such resource: " + path)
            answer = yield self.admin.get(path, token=False)
            self.assertJSONError(answer, 401, "bearer token")
        answer = yield self.admin.request(b"POST", "/api/v1/broadcast/x", {})
        self.assertJSONError(answer, 404, "no such resource")
        self.assertEqual(self.logged, [])

    @inlineCallbacks
    def test_trailingSlash(self):
        """
        A leaf's path with a trailing slash is the same resource.
        """
        code, report, _ = yield self.admin.get("/health/")
        self.assertEqual((code, report), (200, {"status": "healthy"}))
        code, stats, _ = yield self.admin.get("/api/v1/stats/")
        self.assertEqual((code, stats), (200, {"sessions": 0}))
        answer = yield self.admin.get("/api/v1/broadcast/")
        self.assertJSONError(answer, 405, "not allowed")

    @inlineCallbacks
    def test_nestedTooDeeply(self):
        """
        A body nested too deeply for json's decoder is a 400, logged no
        more than any bad request.
        """
        for path, body in [
                ("/api/v1/broadcast", b"[" * 100000 + b"]" * 100000),
                ("/api/v1/publish", b'{"a": ' * 100000 + b"1" + b"}" * 100000)]:
            answer = yield self.admin.request(b"POST", path, body)
            self.assertJSONError(answer, 400, "nested too deeply")
        self.assertEqual(self.logged, [])

    @inlineCallbacks
    def test_nestedDeeplyWithinTheDecoder(self):
        """
        A body json's decoder parses but nested deeper than the admin API
        reads (a field's repr would still recurse too deeply) is a 400; up
        to MAX_DEPTH levels are read.
        """
        from muxframe.admin.http import MAX_DEPTH
        for depth in (MAX_DEPTH, 500, 900):
            body = (b'{"type": ' + b"[" * depth + b"]" * depth
                    + b', "payload": ""}')
            answer = yield self.admin.request(b"POST", "/api/v1/broadcast",
                                              body)
            self.assertJSONError(answer, 400, "nested too deeply (over %d "
                                 "levels)" % (MAX_DEPTH,))
        body = b'{"type": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) \
            + b', "payload": ""}'
        answer = yield self.admin.request(b"POST", "/api/v1/broadcast", body)
        self.assertJSONError(answer, 400, "not a message type")
        self.assertEqual(self.logged, [])

    @inlineCallbacks
    def test_sessionsLimit(self):
        """
        C{limit} must be a whole number at least 1: infinite, too large for
        a float, fractional or negative is a 400 naming it, not a 500 with
        a traceback in the log; a large whole number is taken.
        """
        for text in ("inf", "1e400", "nan", "1.5", "0", "-1", "x", "9" * 5000):
            answer = yield self.admin.get("/api/v1/sessions?limit=" + text)
            self.assertJSONError(answer, 400, "limit must be a whole number")
        for text in ("1", "1000", "9" * 100):
            code, listing, _ = yield self.admin.get(
                "/api/v1/sessions?limit=" + text)
            self.assertEqual((code, listing["count"]), (200, 0), text)
        self.assertEqual(self.logged, [])

    @inlineCallbacks
    def test_ambiguousRequests(self):
        """
        A request a check in front of the service could read otherwise than
        the service is refused: a JSON body giving a key twice (json keeps
        the last) is a 400 naming the key, at any depth; several
        Authorization headers are a 401, whichever carries the token.
        """
        from tests.adminsupport import TOKEN
        for body in (b'{"type": "LiveUpdates", "type": "Nonsense"}',
                     b'{"type": 64, "payload": "", "x": {"a": 1, "a": 2}}'):
            answer = yield self.admin.request(b"POST", "/api/v1/broadcast",
                                              body)
            self.assertJSONError(answer, 400, "gives key")
        for headers in ([b"Bearer wrong", b"Bearer " + TOKEN],
                        [b"Bearer " + TOKEN, b"Bearer wrong"],
                        [b"Bearer " + TOKEN, b"Bearer " + TOKEN]):
            answer = yield self.admin.get(
                "/health", token=False, headers={b"authorization": headers})
            self.assertJSONError(answer, 401, "bearer token")
        code, _, _ = yield self.admin.get("/health")
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_faults(self):
        """
        Every error document names its fault in C{fault}, a word a program
        can test, and what it is about in C{field} (a body's) or
        C{argument} (the query's); the text says it for a person.
        """
        post = lambda path, body: self.admin.request(b"POST", path, body)  # noqa
        for d, status, fault, about in [
                (self.admin.get("/health", token=False), 401, "unauthorized",
                 {}),
                (self.admin.get("/nothing"), 404, "no_such_resource", {}),
                (self.admin.get("/health/x"), 404, "no_such_resource", {}),
                (self.admin.get("/api/v1/sessions/0x12"), 404,
                 "no_such_session", {"session_id": "0x12"}),
                (self.admin.get("/api/v1/sessions/zz"), 404,
                 "no_such_resource", {}),
                (self.admin.request(b"PUT", "/health"), 405,
                 "method_not_allowed", {}),
                (self.admin.get("/api/v1/sessions?limit=0"), 400,
                 "invalid_argument", {"argument": "limit"}),
                (self.admin.get("/api/v1/sessions?active=maybe"), 400,
                 "invalid_argument", {"argument": "active"}),
                (self.admin.get("/api/v1/sessions?identity=%ff"), 400,
                 "invalid_argument", {"argument": "identity"}),
                (post("/api/v1/broadcast", b""), 400, "no_body", {}),
                (post("/api/v1/broadcast", b"{nope"), 400, "invalid_json",
                 {}),
                (post("/api/v1/broadcast", b"[1]"), 400, "not_an_object", {}),
                (post("/api/v1/broadcast", b"[" * 40 + b"]" * 40), 400,
                 "nested_too_deeply", {}),
                (post("/api/v1/broadcast", b'{"type": "\\ud800"}'), 400,
                 "not_unicode", {}),
                (post("/api/v1/broadcast", b'{"type": 64, "type": 65}'), 400,
                 "duplicate_key", {}),
                (post("/api/v1/publish", {"type": 64}), 400, "missing_field",
                 {"missing": ["subject"]}),
                (post("/api/v1/broadcast", {"type": "Nonsense"}), 400,
                 "invalid_field", {"field": "type"}),
                (post("/api/v1/broadcast", {"type": 64, "payload": "@"}), 400,
                 "invalid_field", {"field": "payload"}),
                (post("/api/v1/broadcast",
                      {"type": 64, "payload": "QUFB" * 30000}),
                 400, "payload_too_large", {"field": "payload"}),
                (post("/api/v1/broadcast", {"type": 64, "subject": 5}), 400,
                 "invalid_field", {"field": "subject"})]:
            code, body, _ = yield d
            self.assertEqual((code, body["status"], body["fault"]),
                             (status, status, fault), body)
            self.assertTrue(body["error"])
            for key, value in about.items():
                self.assertEqual(body[key], value, body)

    @inlineCallbacks
    def test_allow(self):
        """
        A 405's C{Allow} lists the methods the path takes: HEAD wherever
        GET is (it is served there), and only those.
        """
        for method, path, allow in [
                (b"PUT", "/health", b"GET, HEAD"),
                (b"DELETE", "/api/v1/sessions", b"GET, HEAD"),
                (b"GET", "/api/v1/broadcast", b"POST"),
                (b"POST", "/api/v1/sessions/0x12", b"DELETE, GET, HEAD")]:
            code, body, headers = yield self.admin.request(method, path)
            self.assertEqual((code, body["fault"]),
                             (405, "method_not_allowed"), (method, path))
            self.assertEqual(headers.getRawHeaders(b"allow"), [allow], path)

    def test_nestingDepth(self):
        """
        L{nestingDepth} counts list and dict levels.
        """
        from muxframe.admin.http import nestingDepth
        for value, depth in [(1, 0), ("x", 0), ([], 1), ({}, 1),
                             ({"a": [1, {"b": []}]}, 4), ([[], [[[]]]], 4),
                             ([[[]]] * 3 + [5], 3)]:
            self.assertEqual(nestingDepth(value), depth, value)
        deep = []
        for _ in range(4999):
            deep = [deep]
        self.assertEqual(nestingDepth(deep), 5000)


class _SyncPool:
    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        try:
            result = f(*args, **kwargs)
        except BaseException:
            from twisted.python.failure import Failure
            onResult(False, Failure())
        else:
            onResult(True, result)


class _SyncReactor:
    """
    What MetricsResource asks of a reactor, with its thread pool run here.
    """

    def getThreadPool(self):
        return _SyncPool()

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class MetricsResourceTests(TestCase):
    """
    L{muxframe.admin.metricsresource.MetricsResource}: prometheus_client's
    exposition without its WSGI wrapper.
    """

    def render(self, method=b"GET", accept=None, args=None, postpath=()):
        from prometheus_client import CollectorRegistry, Counter
        from twisted.web.server import NOT_DONE_YET
        from twisted.web.test.requesthelper import DummyRequest

        from muxframe.admin.metricsresource import MetricsResource
        registry = CollectorRegistry()
        Counter("first", "One.", registry=registry).inc(3)
        Counter("second", "Two.", registry=registry).inc()
        request = DummyRequest(list(postpath) or [b""])
        request.path = b"/metrics/" + b"/".join(postpath)
        request.method = method
        if accept:
            request.requestHeaders.setRawHeaders(b"accept", [accept])
        request.args = args or {}
        body = MetricsResource(registry, _SyncReactor()).render(request)
        if body is not NOT_DONE_YET:
            request.write(body)
            request.finish()
        self.assertEqual(request.finished, 1)
        return (request.responseCode or 200,
                request.responseHeaders.getRawHeaders(b"content-type")[0],
                b"".join(request.written).decode("utf-8"))

    def test_text(self):
        code, contentType, text = self.render()
        self.assertEqual(code, 200)
        self.assertTrue(contentType.startswith(b"text/plain; version=0.0.4"))
        self.assertIn("first_total 3.0", text)
        self.assertIn("second_total 1.0", text)

    def test_openMetrics(self):
        code, contentType, text = self.render(
            # (1.0.0 for today's prometheus_client, 0.0.1 for 0.4.0's.)
            accept=b"application/openmetrics-text; version=1.0.0,"
                   b"application/openmetrics-text; version=0.0.1")
        self.assertTrue(contentType.startswith(b"application/openmetrics-text"))
        self.assertTrue(text.endswith("# EOF\n"))

    def test_names(self):
        code, _, text = self.render(args={b"name[]": [b"second_total"]})
        self.assertIn("second_total 1.0", text)
        self.assertNotIn("first", text)

    def test_belowIt(self):
        """
        A path below /metrics is a JSON 404, as below any admin leaf.
        """
        code, contentType, text = self.render(postpath=[b"anything"])
        self.assertEqual((code, contentType), (404, b"application/json"))
        self.assertIn("no such resource", text)

    def test_otherMethods(self):
        code, contentType, text = self.render(method=b"POST")
        self.assertEqual((code, contentType), (405, b"application/json"))
        self.assertIn("method not allowed: POST", text)


class AdminMetricsTests(TestCase):
    """
    The admin service's own counters in its role's metrics.
    """

    @inlineCallbacks
    def test_refusalsCounted(self):
        """
        Requests refused for the token are counted in
        C{muxframe_admin_refused_total{reason="token"}} (they are not
        logged: the metric is how an operator sees a token being
        guessed); the other reasons are exported from the start, and the
        connections open are a gauge.
        """
        from tests.adminsupport import TOKEN, sample
        from tests.test_tap import freePort
        port = freePort()
        settings = OperatorSettings("tcp:%d:interface=127.0.0.1" % (port,),
                                    token=TOKEN, summaryInterval=0)
        admin = AdminService(MultiplexerStatus("server", [], reactor),
                             settings, reactor)
        admin.startService()
        self.addCleanup(admin.stopService)
        client = Admin(port)
        for token in (False, b"wrong", b"guess"):
            code, _, _ = yield client.get("/api/v1/stats", token=token)
            self.assertEqual(code, 401)
        families = yield client.scrape()
        self.assertEqual(sample(families, "muxframe_admin_refused",
                                reason="token"), 3)
        for reason in ("connections", "deadline"):
            self.assertIn(reason, [s.labels.get("reason") for s in
                                   families["muxframe_admin_refused"].samples])
        self.assertGreaterEqual(
            sample(families, "muxframe_admin_connections_active"), 1)


class _Raw(Protocol):
    """
    A raw client connection: what it received, and a Deferred fired when
    it is closed.
    """

    def __init__(self):
        self.data = b""
        self.closed = Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.closed.callback(self.data)


class ClientBoundsTests(TestCase):
    """
    What one admin client can hold: a request must arrive whole within
    the site's C{requestTimeout}, however its bytes trickle in, and the
    site serves at most C{maxConnections} connections at once.  The
    deadlines run on a L{Clock}; the connections are real (loopback TCP).
    """

    def setUp(self):
        from twisted.internet.task import Clock
        from twisted.logger import globalLogPublisher
        from twisted.web.resource import Resource

        from muxframe.admin.api import buildRoot
        from muxframe.admin.http import requestFactory
        from muxframe.admin.service import AdminSite
        from tests.adminsupport import TOKEN
        self.clock = Clock()
        root = buildRoot(_Status(), OperatorSettings(token=TOKEN), Resource())
        site = self.site = AdminSite(root)
        # (Attributes, not arguments: the test runs against a site that
        # knows none of them too, and must fail there, not crash.)
        site.reactor = self.clock
        site.requestTimeout = 30.0
        site.maxConnections = 2
        site.requestFactory = requestFactory(1 << 20)
        self.channels = []
        build = site.buildProtocol

        def buildProtocol(address):
            channel = build(address)
            self.channels.append(channel)
            return channel
        site.buildProtocol = buildProtocol
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.admin = Admin(self.port.getHost().port)
        self.logged = []

        def observe(event):
            if event.get("log_namespace") == "muxframe.admin":
                self.logged.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    @inlineCallbacks
    def connect(self):
        """
        A raw connection, once the site has accepted it.
        """
        from twisted.internet.endpoints import (
            TCP4ClientEndpoint, connectProtocol,
        )
        accepted = len(self.channels)
        protocol = yield connectProtocol(TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.port.getHost().port), _Raw())
        self.addCleanup(lambda: protocol.transport.abortConnection()
                        if protocol.transport.connected else None)
        yield waitFor(lambda: len(self.channels) > accepted,
                      what="the site to accept the connection")
        return protocol

    def closed(self, protocol, seconds=10.0):
        """
        What C{protocol} received, once closed; fail if it is not within
        C{seconds} (bounded: the deadline itself is on the clock).
        """
        return waitFor(lambda: protocol.closed.called, seconds,
                       "the site to close the connection").addCallback(
            lambda _: protocol.data)

    @inlineCallbacks
    def test_trickledRequestDropped(self):
        """
        A request whose head trickles in a byte at a time is dropped at
        the deadline, counted, and nothing is logged.
        """
        protocol = yield self.connect()
        protocol.transport.write(
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(5):
            self.clock.advance(5)
            protocol.transport.write(b"a")
        self.assertFalse(protocol.closed.called)
        self.clock.advance(6)
        data = yield self.closed(protocol)
        self.assertEqual(data, b"")
        self.assertEqual(self.site.requestsTimedOut, 1)
        self.assertEqual(self.logged, [])

    @inlineCallbacks
    def test_keptAliveConnectionDropped(self):
        """
        After a response, a kept-alive connection gets a new deadline: one
        left idle is dropped at it.
        """
        from tests.adminsupport import TOKEN
        protocol = yield self.connect()
        protocol.transport.write(b"GET /health HTTP/1.1\r\nHost: x\r\n"
                                 b"Authorization: Bearer " + TOKEN +
                                 b"\r\n\r\n")
        yield waitFor(lambda: b"healthy" in protocol.data,
                      what="the health report")
        self.assertIn(b"200 OK", protocol.data)
        self.clock.advance(31)
        yield self.closed(protocol)
        self.assertEqual(self.site.requestsTimedOut, 1)

    @inlineCallbacks
    def test_connectionCap(self):
        """
        A connection over C{maxConnections} is answered a JSON 503 and
        closed, with a warning; once one closes, requests are served
        again.
        """
        first = yield self.connect()
        yield self.connect()
        third = yield self.connect()
        data = yield self.closed(third)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertIn(b"503", head.split(b"\r\n")[0])
        self.assertIn(b"content-type: application/json", head.lower())
        answer = json.loads(body)
        self.assertEqual(answer["status"], 503)
        self.assertIn("connections open", answer["error"])
        self.assertEqual(answer["fault"], "too_many_connections")
        self.assertEqual(self.site.refusedConnections, 1)
        warned = [e for e in self.logged
                  if "503" in e.get("log_format", "")]
        self.assertEqual(len(warned), 1)
        first.transport.loseConnection()
        yield waitFor(lambda: self.site.connections == 1,
                      what="the site to count the close")
        code, report, _ = yield self.admin.get("/health")
        self.assertEqual((code, report), (200, {"status": "healthy"}))


def _tlsGet(port, caFile, token, alpn):
    """
    C{GET /health} over TLS with the standard library, offering C{alpn}:
    C{(the protocol ALPN selected, the status line)}.  Blocking: run in
    a thread.
    """
    import socket
    import ssl
    context = ssl.create_default_context(cafile=caFile)
    context.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            selected = sock.selected_alpn_protocol()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n"
                         b"Authorization: Bearer " + token +
                         b"\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    return selected, data.split(b"\r\n", 1)[0]


class TLSTests(TestCase):
    """
    An C{ssl:} admin endpoint.
    """

    @inlineCallbacks
    def test_http11ByALPN(self):
        """
        A client offering HTTP/2 and HTTP/1.1 by ALPN is served HTTP/1.1
        (the channel the site's bounds are on), never HTTP/2, on every
        connection (ALPN selects http/1.1 where Twisted asks the site per
        connection, nothing on older Twisted); one that offers no ALPN, or
        only HTTP/2, is served too, with no protocol selected (Twisted
        26.10 failed the handshake of the latter:
        L{muxframe.tls.tolerateALPN}).
        """
        from twisted.internet.threads import deferToThread

        from muxframe.tls import alpnPerConnection, writeCertificates
        from tests.adminsupport import TOKEN
        from tests.test_tap import freePort
        paths = writeCertificates(self.mktemp())
        port = freePort()
        settings = OperatorSettings(
            "ssl:%d:interface=127.0.0.1:privateKey=%s"
            % (port, paths["server.pem"]), token=TOKEN, summaryInterval=0)
        admin = AdminService(MultiplexerStatus("server", [], reactor),
                             settings, reactor)
        admin.startService()
        self.addCleanup(admin.stopService)
        for alpn in ([b"h2", b"http/1.1"], [b"h2", b"http/1.1"], [],
                     [b"h2"]):
            selected, status = yield deferToThread(
                _tlsGet, port, paths["ca.pem"], TOKEN,
                [p.decode("ascii") for p in alpn])
            self.assertEqual((selected, status),
                             ("http/1.1" if b"http/1.1" in alpn
                              and alpnPerConnection() else None,
                              b"HTTP/1.1 200 OK"))


class FaultLogTests(TestCase):
    """
    A fault of ours is answered 500 and logged with its traceback, at most
    10 times a minute: a client repeating a request that finds one cannot
    flood the log.
    """

    @inlineCallbacks
    def test_faultsThrottled(self):
        from twisted.logger import globalLogPublisher
        from twisted.web.server import Site

        from muxframe.admin import http
        from muxframe.admin.http import JSONResource, JSONTree

        class Faulty(JSONResource):
            def json_GET(self, request):
                raise ZeroDivisionError("a fault of ours")

        if hasattr(http, "faultThrottle"):
            # A fresh throttle: other tests' faults must not count.
            self.patch(http, "faultThrottle", type(http.faultThrottle)())
        root = JSONTree()
        root.putChild(b"faulty", Faulty())
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        logged = []

        def observe(event):
            if event.get("log_namespace") == "muxframe.admin":
                logged.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        admin = Admin(port.getHost().port, token=None)
        for _ in range(25):
            code, body, _ = yield admin.get("/faulty")
            self.assertEqual((code, body["error"], body["status"]),
                             (500, "internal error", 500))
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertEqual(len(logged), 10)
        self.assertTrue(all(e["log_failure"].check(ZeroDivisionError)
                            for e in logged))
        self.assertIn("further lines like this are suppressed",
                      logged[-1]["log_format"])


READ_TOKEN = b"r3ad-only-t0ken"


class ReadTokenTests(TestCase):
    """
    The read-only token: GET and HEAD only; a write with it is a 403 that
    never reaches the API.
    """

    def setUp(self):
        from twisted.web.resource import Resource

        from muxframe.admin.api import buildRoot
        from muxframe.admin.http import requestFactory
        from muxframe.admin.service import AdminSite
        from tests.adminsupport import TOKEN
        self.root = buildRoot(_Status(), OperatorSettings(
            token=TOKEN, readToken=READ_TOKEN), Resource())
        site = AdminSite(self.root)
        site.requestFactory = requestFactory(1 << 20)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.admin = Admin(port.getHost().port)

    @inlineCallbacks
    def test_readOnly(self):
        """
        With the read token, GET answers as with the token; DELETE, POST
        and other methods are refused with 403 (C{read_only}) before the
        API sees them (a broadcast reaching this status object would fail
        as a 500), and counted; the token itself may still write.
        """
        for path in ("/health", "/api/v1/stats", "/", "/api/v1/sessions"):
            code, _, _ = yield self.admin.get(path, token=READ_TOKEN)
            self.assertEqual(code, 200, path)
        for method, path in [(b"POST", "/api/v1/broadcast"),
                             (b"POST", "/api/v1/publish"),
                             (b"DELETE", "/api/v1/sessions/0x12"),
                             (b"PUT", "/health"), (b"DELETE", "/")]:
            code, body, _ = yield self.admin.request(
                method, path, {"type": "LiveUpdates", "payload": ""},
                token=READ_TOKEN)
            self.assertEqual((code, body["fault"]), (403, "read_only"),
                             (method, path, body))
            self.assertIn("may only read", body["error"])
        self.assertEqual(self.root.forbidden, 5)
        code, body, _ = yield self.admin.request(
            b"POST", "/api/v1/broadcast", b"", token=True)
        self.assertEqual((code, body["fault"]), (400, "no_body"))
        code, body, _ = yield self.admin.request(
            b"DELETE", "/api/v1/sessions/0x12", token=True)
        self.assertEqual((code, body["fault"]), (404, "no_such_session"))
        code, _, _ = yield self.admin.get("/health", token=READ_TOKEN[:-1])
        self.assertEqual(code, 401)

    def test_settings(self):
        """
        A read token needs the token, and must differ from it; the
        multiplexer roles' option and the xtmp role's key say so, naming
        themselves.
        """
        from twisted.python import usage

        from muxframe.admin.settings import OperatorOptionsMixin
        from tests.adminsupport import writeToken
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        full = writeToken(directory)
        read = os.path.join(directory, "read.token")
        with open(read, "wb") as f:
            f.write(READ_TOKEN + b"\n")

        class Options(OperatorOptionsMixin, usage.Options):
            def postOptions(self):
                self.settings = self.operatorSettings()

        def parse(*argv):
            options = Options()
            options.parseOptions(list(argv))
            return options.settings

        admin = ("--admin", "tcp:0:interface=127.0.0.1")
        settings = parse(*admin, "--admin-token-file", full,
                         "--admin-read-token-file", read)
        self.assertEqual((settings.token, settings.readToken),
                         (b"t0ken-for-the-admin-api", READ_TOKEN))
        for argv, text in [
                (("--admin", "unix:/tmp/x.sock", "--admin-read-token-file",
                  read), "--admin-read-token-file needs --admin-token-file"),
                (admin + ("--admin-token-file", full,
                          "--admin-read-token-file", full),
                 "holds the same token as --admin-token-file"),
                (("--admin-read-token-file", read), "need --admin")]:
            error = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn(text, str(error))


class LimitSettingsTests(SynchronousTestCase):
    """
    The admin site's bounds on clients come from the role's settings: the
    xtmp role's C{admin.max_connections} and C{admin.request_timeout}, the
    multiplexer roles' C{--admin-max-connections} and
    C{--admin-request-timeout}; bad values are errors naming them.
    """

    def site(self, settings):
        from twisted.internet.task import Clock

        from muxframe.admin.service import AdminService
        return AdminService(_Status(), settings, Clock()).site

    def test_fromConfig(self):
        from muxframe.server.errors import ConfigError
        from tests.test_server_support import config
        unix = "unix:" + os.path.abspath(self.mktemp())
        site = self.site(OperatorSettings.fromServerConfig(config(
            admin__endpoint=unix, admin__max_connections=3,
            admin__request_timeout=5)))
        self.assertEqual((site.maxConnections, site.requestTimeout), (3, 5.0))
        site = self.site(OperatorSettings.fromServerConfig(config(
            admin__endpoint=unix)))
        self.assertEqual((site.maxConnections, site.requestTimeout),
                         (64, 30.0))
        for key, value in [("max_connections", 0), ("request_timeout", 0.5),
                           ("request_timeout", float("inf"))]:
            e = self.assertRaises(ConfigError, config,
                                  **{"admin__" + key: value})
            self.assertIn("admin." + key, str(e))

    def test_fromOptions(self):
        from twisted.python import usage

        from tests.test_tap import parse
        unix = "--admin=unix:" + os.path.abspath(self.mktemp())
        options = parse("server", "--endpoint=tcp:0", "--echo", unix,
                        "--admin-max-connections=3",
                        "--admin-request-timeout=5")
        site = self.site(options.subOptions.operator)
        self.assertEqual((site.maxConnections, site.requestTimeout), (3, 5.0))
        for option in ("--admin-max-connections=0",
                       "--admin-max-connections=lots",
                       "--admin-request-timeout=0.5",
                       "--admin-request-timeout=inf"):
            e = self.assertRaises(usage.UsageError, parse, "server",
                                  "--endpoint=tcp:0", "--echo", unix, option)
            self.assertIn(option.split("=")[0], str(e))
