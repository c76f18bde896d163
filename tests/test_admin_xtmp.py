"""
The operator surfaces of the real C{xtmp} role: C{twistd -n muxframe xtmp}
as a subprocess with an admin endpoint, driven over HTTP: the token, the
health report flipping to 503 while draining, metrics parsed by
prometheus_client's parser moving with traffic, the session API listing,
showing and disconnecting a live session, broadcast and publish reaching
subscribed clients, JSON errors for bad input, a UNIX-socket admin
endpoint without a token, JSON logs with the summary line, and the role
listening on TCP and WebSocket at once.
"""

import base64
import io
import os
import signal
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from muxframe.admin.metrics import CATALOGUE
from muxframe.xtmp import XTMPErrorCode, connectXTMP

from tests.adminsupport import (
    Admin, dashboardMetrics, familyOf, histogramCount, jsonRecords, sample,
    waitFor, writeToken,
)
from tests.test_server_support import ALICE, BOB
from tests.test_server_tap import clientFactory, spawnXTMP, writeSetup
from tests.test_tap import freePort, spawnTwistd, waitForPort

SLOW = '''
"""A handler that takes a while (for the drain test)."""
from twisted.internet import reactor
from twisted.internet.task import deferLater

def slow(session, message):
    return deferLater(reactor, float(message.payload or b"3"), lambda: b"done")
'''


def b64(data):
    return base64.b64encode(data).decode("ascii")


def adminSetup(directory, port, adminPort, extra=None):
    """
    writeSetup's server plus an admin endpoint with a token, and a slow
    handler at 0x22.
    """
    os.makedirs(directory, exist_ok=True)
    writeToken(directory)
    with open(os.path.join(directory, "slowapp.py"), "w") as f:
        f.write(SLOW)
    config = {"admin": {"endpoint": "tcp:%d:interface=127.0.0.1" % (adminPort,),
                        "token_file": "admin.token", "max_body": 4096},
              "handlers": {0x22: "slowapp:slow"},
              "server": {"drain_timeout": 20}}
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    return writeSetup(directory, port, config)


class RoleTests(TestCase):
    """
    One xtmp role with its admin service.
    """

    timeout = 120

    @inlineCallbacks
    def startRole(self, extra=None, *args):
        self.directory = self.mktemp()
        self.port, self.adminPort = freePort(), freePort()
        path = adminSetup(self.directory, self.port, self.adminPort, extra)
        self.process = spawnXTMP(self, self.directory, "--config", path, *args)
        yield waitForPort(self.port, self.process)
        yield waitForPort(self.adminPort, self.process)
        self.admin = Admin(self.adminPort)
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)

    @inlineCallbacks
    def client(self, identity):
        protocol = yield connectXTMP(self.endpoint, clientFactory(identity))
        self.addCleanup(lambda: protocol.transport.abortConnection()
                        if not protocol._lost else None)
        return protocol

    @inlineCallbacks
    def test_tokenRequired(self):
        """
        Every path needs the bearer token: without it, or with a wrong one,
        401 with WWW-Authenticate (metrics too, unless made public).
        """
        yield self.startRole()
        for path in ("/health", "/metrics", "/api/v1/sessions",
                     "/api/v1/stats", "/", "/nothing"):
            for token in (False, b"wrong", b"t0ken-for-the-admin-ap"):
                code, body, headers = yield self.admin.get(path, token=token)
                self.assertEqual(code, 401, (path, token))
                self.assertEqual(body["status"], 401)
                self.assertIn(b"Bearer", headers.getRawHeaders(
                    b"www-authenticate")[0])
        code, body, _ = yield self.admin.request(
            b"GET", "/health", token=False,
            headers={b"authorization": [b"Basic dXNlcjpwYXNz"]})
        self.assertEqual(code, 401)
        code, body, _ = yield self.admin.get("/health")
        self.assertEqual((code, body["status"]), (200, "healthy"))

    @inlineCallbacks
    def test_healthMetricsSessionsBroadcast(self):
        """
        The health report's fields; metrics that move with traffic; the
        session API listing, showing and disconnecting a live session;
        broadcast and publish reaching subscribed clients; stats.
        """
        yield self.startRole()
        code, health, _ = yield self.admin.get("/health")
        self.assertEqual(code, 200)
        for key in ("status", "active_connections", "sessions",
                    "active_streams", "message_throughput",
                    "average_latency_ms", "encryption_status",
                    "server_uptime", "uptime_seconds", "role", "version"):
            self.assertIn(key, health)
        self.assertEqual((health["role"], health["encryption_status"]),
                         ("xtmp", "enabled"))
        before = yield self.admin.scrape()

        alice = yield self.client(ALICE)
        bob = yield self.client(BOB)
        got = {"bob": [], "alice": []}
        yield bob.subscribe("broadcast", lambda m: got["bob"].append(
            (m.streamName, m.type, m.payload)))
        yield alice.subscribe("news.>", lambda m: got["alice"].append(
            (m.streamName, m.payload)))
        for n in range(3):
            reply = yield alice.request(0x20, b"%d" % n, timeout=10)
            self.assertEqual(reply.payload, b"accepted:%d:by:alice" % n)

        code, answer, _ = yield self.admin.request(
            b"POST", "/api/v1/broadcast",
            {"type": "LiveUpdates", "payload": b64(b"to everyone")})
        self.assertEqual((code, answer["delivered"]), (200, 2))
        code, answer, _ = yield self.admin.request(
            b"POST", "/api/v1/publish",
            {"subject": "news.eu", "type": 0x41, "payload": b64(b"eu")})
        self.assertEqual((code, answer["delivered"]), (200, 1))
        yield waitFor(lambda: got["bob"] and got["alice"], what="deliveries")
        self.assertEqual(got["bob"], [("broadcast", 0x40, b"to everyone")])
        self.assertEqual(got["alice"], [("news.eu", b"eu")])

        after = yield self.admin.scrape()
        self.assertEqual(sample(after, "muxframe_xtmp_sessions_active"), 2)
        self.assertEqual(sample(after, "muxframe_xtmp_messages_received",
                                type="BundleSubmit")
                         - sample(before, "muxframe_xtmp_messages_received",
                                  type="BundleSubmit"), 3)
        self.assertGreaterEqual(sample(after, "muxframe_xtmp_messages_sent",
                                       type="LiveUpdates"), 2)
        self.assertEqual(histogramCount(after,
                                        "muxframe_xtmp_message_latency_seconds",
                                        kind="handler"), 3)
        for direction in ("received", "sent"):
            self.assertGreater(sample(after, "muxframe_xtmp_bytes",
                                      direction=direction),
                               sample(before, "muxframe_xtmp_bytes",
                                      direction=direction))
        self.assertEqual(sample(after, "muxframe_xtmp_handshakes",
                                outcome="completed"), 2)
        self.assertEqual(sample(after, "muxframe_xtmp_broker_deliveries"), 1)
        self.assertEqual(sample(after, "muxframe_xtmp_subscriptions"), 2)
        # Every catalogued metric of the role is exported, and every one
        # the dashboard queries for this role exists.
        for metric in CATALOGUE.values():
            if "xtmp" in metric.roles:
                self.assertIn(metric.name, after)
        for name in dashboardMetrics():
            metric = CATALOGUE.get(familyOf(name, CATALOGUE) or name)
            self.assertIsNotNone(metric, name)
            if "xtmp" in metric.roles:
                self.assertIsNotNone(familyOf(name, after), name)
        self.assertIn("process_cpu_seconds", after)

        # The session API.
        code, listing, _ = yield self.admin.get("/api/v1/sessions")
        self.assertEqual((code, listing["count"], listing["total"]), (200, 2, 2))
        names = sorted(s["identity"]["name"] for s in listing["sessions"])
        self.assertEqual(names, ["alice", "bob"])
        code, listing, _ = yield self.admin.get("/api/v1/sessions?identity=alice")
        (entry,) = listing["sessions"]
        self.assertEqual(entry["session_id"], "%#x" % (alice.sessionId,))
        code, listing, _ = yield self.admin.get("/api/v1/sessions?active=true")
        self.assertEqual(listing["count"], 2)
        code, detail, _ = yield self.admin.get(
            "/api/v1/sessions/%x" % (alice.sessionId,))
        self.assertEqual(code, 200)
        self.assertEqual(detail["status"], "active")
        self.assertEqual(detail["messages_received"], 3)
        self.assertGreaterEqual(detail["messages_sent"], 4)
        self.assertEqual(detail["cipher"], "AES-256-GCM")
        self.assertIn("heartbeat_rtt_ms", detail["quality_metrics"])
        self.assertRegex(detail["connected_at"], r"^\d{4}-\d\d-\d\dT.*Z$")
        self.assertEqual(detail["subscriptions"],
                         [{"subject": "news.>", "group": None}])
        closed = alice.whenClosed()
        code, answer, _ = yield self.admin.request(
            b"DELETE", "/api/v1/sessions/%#x" % (alice.sessionId,),
            {"code": "KEY_REVOKED", "reason": "rotated"})
        self.assertEqual((code, answer["disconnected"], answer["code"]),
                         (200, True, "KEY_REVOKED"))
        why = yield closed
        self.assertEqual(why.code, XTMPErrorCode.KEY_REVOKED)
        yield waitFor(lambda: self.admin.get(
            "/api/v1/sessions/%x" % (alice.sessionId,)).addCallback(
            lambda r: r[0] == 404), what="the session to go")
        code, stats, _ = yield self.admin.get("/api/v1/stats")
        self.assertEqual(code, 200)
        self.assertEqual(stats["sessions"]["live"], 1)
        self.assertEqual(stats["router"]["BundleSubmit"]["responded"], 3)
        self.assertEqual(stats["endedSessions"]["messagesReceived"], 3)

    @inlineCallbacks
    def test_badInput(self):
        """
        Bad input is a JSON error with the right status, nothing else
        changes, and the service goes on.
        """
        yield self.startRole()
        post = lambda path, body: self.admin.request(b"POST", path, body)  # noqa
        cases = [
            (post("/api/v1/broadcast", b"{not json"), 400, "not valid JSON"),
            (post("/api/v1/broadcast", b"[1, 2]"), 400, "JSON object"),
            (post("/api/v1/broadcast", b""), 400, "JSON object"),
            (post("/api/v1/publish", {"type": "EventStream", "payload": ""}),
             400, "missing field subject"),
            (post("/api/v1/broadcast", {"type": "LiveUpdates",
                                        "payload": "@@@"}), 400, "base64"),
            (post("/api/v1/broadcast", {"type": "Nonsense", "payload": ""}),
             400, "not a message type"),
            (post("/api/v1/broadcast", {"type": 3, "payload": ""}), 400,
             "control type"),
            (post("/api/v1/publish", {"subject": "a..b", "type": 0x41,
                                      "payload": ""}), 400, "subject"),
            (post("/api/v1/publish", {"subject": "a.*", "type": 0x41,
                                      "payload": ""}), 400, "subject"),
            # JSON's escapes can spell a lone surrogate, which is no text.
            (post("/api/v1/publish", b'{"subject": "news.\\ud800", '
                  b'"type": 65}'), 400, "not Unicode"),
            (post("/api/v1/broadcast", b'{"subject": "\\udc00", '
                  b'"type": 64}'), 400, "not Unicode"),
            (self.admin.get("/api/v1/sessions/0x1234"), 404, "no live session"),
            (self.admin.get("/api/v1/sessions/zzz"), 404, "no such resource"),
            (self.admin.get("/api/v1/sessions?active=maybe"), 400, "active"),
            (self.admin.get("/api/v1/nothing"), 404, "no such resource"),
            (self.admin.request(b"DELETE", "/api/v1/sessions/0x1234",
                                {"code": "NOPE"}), 404, "no live session"),
            (self.admin.request(b"PUT", "/api/v1/broadcast", {}), 405,
             "not allowed"),
            (self.admin.request(b"POST", "/health", {}), 405, "not allowed"),
            (post("/api/v1/broadcast", {"type": "LiveUpdates",
                                        "payload": b64(b"x" * 5000)}),
             413, "over 4096 bytes"),
        ]
        for d, status, text in cases:
            code, body, headers = yield d
            self.assertEqual(code, status, (body, text))
            self.assertEqual(body["status"], status)
            self.assertIn(text, body["error"])
            if status == 405:
                self.assertTrue(headers.getRawHeaders(b"allow"))
        # A session to disconnect with a bad code: refused, still live.
        bob = yield self.client(BOB)
        # The client's handshake is done once its authentication is sent;
        # the server registers the session when it has checked it.
        yield waitFor(lambda: self.admin.get("/api/v1/sessions").addCallback(
            lambda r: r[1]["count"] == 1), what="bob's session")
        code, body, _ = yield self.admin.request(
            b"DELETE", "/api/v1/sessions/%x" % (bob.sessionId,), {"code": "NOPE"})
        self.assertEqual((code, "unknown error code" in body["error"]), (400, True), body)
        code, body, _ = yield self.admin.request(
            b"DELETE", "/api/v1/sessions/%x" % (bob.sessionId,),
            b'{"reason": "bye \\ud800"}')
        self.assertEqual((code, "not Unicode" in body["error"]), (400, True),
                         body)
        code, body, _ = yield self.admin.get("/api/v1/sessions")
        self.assertEqual(body["count"], 1)
        # A body declared over the limit is refused before it is read.
        answer = yield rawRequest(self.adminPort, b"POST /api/v1/broadcast "
                                  b"HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                  + self.admin.token)
        self.assertIn(b"413", answer.split(b"\r\n", 1)[0])
        self.assertIn(b'"fault": "body_too_large"', answer)
        # A chunked body growing past the limit is discarded and refused.
        code, body, _ = yield self.admin.request(
            b"POST", "/api/v1/broadcast", ChunkedBody([b"{" + b" " * 3000] * 4))
        self.assertEqual((code, body["status"], body["fault"]),
                         (413, 413, "body_too_large"))
        code, body, _ = yield self.admin.get("/health")
        self.assertEqual(code, 200)
        # Bad input is never a fault of ours.
        self.assertNotIn("Traceback", self.process.text())

    @inlineCallbacks
    def test_writeActionsLogged(self):
        """
        Every write action carried out is logged once, naming who asked
        (the client's address) and what was done; a refused one is not.
        """
        yield self.startRole()
        bob = yield self.client(BOB)
        yield waitFor(lambda: self.admin.get("/api/v1/sessions").addCallback(
            lambda r: r[1]["count"] == 1), what="bob's session")
        yield self.admin.request(b"POST", "/api/v1/broadcast", {
            "type": "LiveUpdates", "payload": b64(b"to everyone")})
        yield self.admin.request(b"POST", "/api/v1/publish", {
            "subject": "news.eu", "type": 0x41, "payload": b64(b"eu")})
        code, _, _ = yield self.admin.request(b"POST", "/api/v1/publish", {
            "subject": "news.eu", "type": "Nonsense"})
        self.assertEqual(code, 400)
        closed = bob.whenClosed()
        yield self.admin.request(
            b"DELETE", "/api/v1/sessions/%#x" % (bob.sessionId,),
            {"code": "KEY_REVOKED", "reason": "rotated\nFAKE LINE"})
        yield closed

        def actions():
            return [line for line in self.process.text().splitlines()
                    if "admin API: 127.0.0.1:" in line]
        lines = yield waitFor(lambda: len(actions()) >= 3 and actions(),
                              what="three action lines")
        self.assertEqual(len(lines), 3, lines)
        broadcast, publish, disconnect = lines
        self.assertIn("broadcast 11 bytes of type 0x40 on 'broadcast': "
                      "delivered to 1", broadcast)
        self.assertIn("published 2 bytes of type 0x41 on 'news.eu': "
                      "delivered to 0", publish)
        self.assertIn("disconnected session %#x (key bob) with KEY_REVOKED: "
                      "'rotated\\nFAKE LINE'" % (bob.sessionId,), disconnect)
        # (The reason cannot forge a line of its own.)
        self.assertEqual([line for line in self.process.text().splitlines()
                          if line.startswith("FAKE LINE")], [])

    @inlineCallbacks
    def test_readToken(self):
        """
        admin.read_token_file: its token reads (health, sessions, metrics)
        and cannot write: a broadcast with it is a 403, counted, and no
        session receives anything; the admin token still broadcasts.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        read = os.path.join(directory, "read.token")
        with open(read, "wb") as f:
            f.write(b"r3ad-only-t0ken\n")
        yield self.startRole({"admin": {"read_token_file": read}})
        bob = yield self.client(BOB)
        got = []
        yield bob.subscribe("broadcast", got.append)
        reader = Admin(self.adminPort, token=b"r3ad-only-t0ken")
        code, listing, _ = yield reader.get("/api/v1/sessions")
        self.assertEqual((code, listing["count"]), (200, 1))
        code, body, _ = yield reader.request(b"POST", "/api/v1/broadcast", {
            "type": "LiveUpdates", "payload": b64(b"not from you")})
        self.assertEqual((code, body["fault"]), (403, "read_only"))
        families = yield reader.scrape()
        self.assertEqual(sample(families, "muxframe_admin_refused",
                                reason="read_only"), 1)
        code, body, _ = yield self.admin.request(
            b"POST", "/api/v1/broadcast", {"type": "LiveUpdates",
                                           "payload": b64(b"from admin")})
        self.assertEqual((code, body["delivered"]), (200, 1))
        yield waitFor(lambda: got, what="the admin's broadcast")
        self.assertEqual([m.payload for m in got], [b"from admin"])

    @inlineCallbacks
    def test_tokensReloadedOnSIGHUP(self):
        """
        SIGHUP reads the admin token file again: a rotated token is in
        force at once and the old one refused, without a restart; a file
        left unusable (emptied) keeps the token in force, with an error
        naming the file.
        """
        yield self.startRole()
        path = os.path.join(self.directory, "admin.token")
        with open(path, "wb") as f:
            f.write(b"r0tated-t0ken\n")
        self.process.transport.signalProcess("HUP")
        rotated = Admin(self.adminPort, token=b"r0tated-t0ken")
        yield waitFor(lambda: rotated.get("/health").addCallback(
            lambda r: r[0] == 200), what="the rotated token")
        code, _, _ = yield self.admin.get("/health")
        self.assertEqual(code, 401)
        with open(path, "wb") as f:
            f.write(b"")
        self.process.transport.signalProcess("HUP")
        yield waitFor(lambda: "admin tokens unchanged" in self.process.text(),
                      what="the failed reload's line")
        self.assertIn("%s holds no token" % (os.path.abspath(path),),
                      self.process.text())
        code, _, _ = yield rotated.get("/health")
        self.assertEqual(code, 200)
        self.assertTrue(self.process.running)

    @inlineCallbacks
    def test_drainingHealth(self):
        """
        After SIGTERM, while a handler holds the drain, /health answers 503
        with status draining (and metrics say so); then the role exits 0.
        """
        yield self.startRole()
        alice = yield self.client(ALICE)
        pending = alice.request(0x22, b"3", timeout=30)
        yield deferLater(reactor, 0.3)
        self.process.transport.signalProcess("TERM")
        code, report, _ = yield waitFor(lambda: self.admin.get("/health").addCallback(
            lambda r: r if r[0] == 503 else None), what="503")
        self.assertEqual(report["status"], "draining")
        self.assertTrue(report["reasons"])
        families = yield self.admin.scrape()
        self.assertEqual(sample(families, "muxframe_draining"), 1)
        self.assertEqual(sample(families, "muxframe_healthy"), 0)
        reply = yield pending
        self.assertEqual(reply.payload, b"done")
        exitCode = yield self.process.ended
        self.assertEqual(exitCode, 0, self.process.text()[-2000:])

    @inlineCallbacks
    def test_publicMetrics(self):
        """
        admin.public_metrics serves /metrics without the token; the rest
        still needs it.
        """
        yield self.startRole({"admin": {"public_metrics": True}})
        families = yield self.admin.scrape(token=False)
        self.assertIn("muxframe_xtmp_sessions_active", families)
        code, _, _ = yield self.admin.get("/api/v1/stats", token=False)
        self.assertEqual(code, 401)


@implementer(IBodyProducer)
class ChunkedBody:
    """
    A body of unknown length (sent chunked), in C{pieces}.
    """

    length = UNKNOWN_LENGTH

    def __init__(self, pieces):
        self.pieces = pieces

    def startProducing(self, consumer):
        for piece in self.pieces:
            consumer.write(piece)
        return succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


@inlineCallbacks
def rawRequest(port, head):
    """
    Send a request declaring a 10 MB body and no body; the answer's bytes.
    """
    from twisted.internet.protocol import Protocol
    from twisted.internet.endpoints import connectProtocol

    class Raw(Protocol):
        def connectionMade(self):
            self.data = b""
            self.done = Deferred()
            self.transport.write(head + b"\r\nContent-Type: application/json"
                                 b"\r\nContent-Length: 10000000\r\n\r\n{")

        def dataReceived(self, data):
            self.data += data

        def connectionLost(self, reason):
            self.done.callback(self.data)

    protocol = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                     Raw())
    timer = reactor.callLater(10, protocol.transport.abortConnection)
    data = yield protocol.done
    if timer.active():
        timer.cancel()
    return data


class UnixAndLogsTests(TestCase):
    """
    A UNIX-socket admin endpoint needs no token; JSON logs carry the
    summary's fields, under twistd and twist.
    """

    timeout = 120

    @inlineCallbacks
    def test_unixSocketWithoutToken(self):
        directory = self.mktemp()
        port = freePort()
        # AF_UNIX paths are short (108 bytes): not under _trial_temp.
        import shutil
        import tempfile
        short = tempfile.mkdtemp(prefix="mxadm")
        self.addCleanup(shutil.rmtree, short, True)
        sock = os.path.join(short, "admin.sock")
        path = writeSetup(directory, port, {"admin": {"endpoint": "unix:" + sock}})
        process = spawnXTMP(self, directory, "--config", path)
        yield waitForPort(port, process)
        yield waitFor(lambda: os.path.exists(sock) or not process.running,
                      what="the socket")
        self.assertTrue(process.running, process.text())
        admin = Admin(unix=sock, token=None)
        code, report, _ = yield admin.get("/health")
        self.assertEqual((code, report["status"]), (200, "healthy"))
        code, body, _ = yield admin.get("/api/v1/sessions")
        self.assertEqual((code, body["count"]), (200, 0))
        # /metrics too (prometheus_client's WSGI resource answered 500
        # here: a UNIX peer has no host).
        families = yield admin.scrape(token=None)
        self.assertIn("muxframe_xtmp_sessions_active", families)
        self.assertIn("process_cpu_seconds", families)
        # A write action's log line names the socket peer's uid and pid.
        code, _, _ = yield admin.request(b"POST", "/api/v1/broadcast", {
            "type": "LiveUpdates", "payload": ""})
        self.assertEqual(code, 200)
        yield waitFor(lambda: "admin API: unix socket, uid %d pid %d "
                      "broadcast 0 bytes" % (os.getuid(), os.getpid())
                      in process.text(), what="the broadcast's line")

    def test_tcpAdminNeedsToken(self):
        """
        An admin endpoint on TCP without a token file is a usage error.
        """
        import sys

        from twisted.python import usage

        from tests.test_server_tap import parse
        directory = self.mktemp()
        path = writeSetup(directory, freePort(), {
            "admin": {"endpoint": "tcp:0:interface=127.0.0.1"}})
        sys.path.insert(0, os.path.abspath(directory))
        self.addCleanup(sys.path.remove, os.path.abspath(directory))
        self.addCleanup(sys.modules.pop, "xtmpapp", None)
        e = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertIn("admin.token_file", str(e))
        e = self.assertRaises(usage.UsageError, parse, "--config", path,
                              "--admin-token-file", "/nonexistent/token")
        self.assertIn("cannot read /nonexistent/token", str(e))

    @inlineCallbacks
    def jsonLogs(self, twist):
        directory = self.mktemp()
        port = freePort()
        path = writeSetup(directory, port)
        process = spawnTwistd(self, "xtmp", "xtmp", "--config", path,
                              "--log-format", "json", "--summary-interval",
                              "0.3", cwd=directory, twist=twist)
        yield waitForPort(port, process)
        alice = yield connectXTMP(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                  clientFactory(ALICE))
        for n in range(5):
            yield alice.request(0x20, b"%d" % n, timeout=10)

        def summaries():
            return [r for r in jsonRecords(process.text())
                    if r.get("event") == "summary" and r.get("sessions") == 1]

        records = yield waitFor(summaries, what="a summary with a session")
        record = records[-1]
        self.assertEqual((record["role"], record["connections"]), ("xtmp", 1))
        for key in ("streams", "messagesPerSecond", "bytesInPerSecond",
                    "bytesOutPerSecond", "log_format", "log_time"):
            self.assertIn(key, record)
        closed = alice.whenClosed()
        alice.disconnect()
        yield closed
        process.transport.signalProcess("TERM")
        yield process.ended
        text = process.text()
        self.assertNotIn("Traceback", text)
        started = [r for r in jsonRecords(text)
                   if "xtmp server on" in r.get("log_format", "")]
        self.assertTrue(started, text[:2000])

    def test_jsonLogsTwistd(self):
        return self.jsonLogs(twist=False)

    def test_jsonLogsTwist(self):
        return self.jsonLogs(twist=True)

    @inlineCallbacks
    def test_jsonLogFileRotatesOnSIGUSR1(self):
        """
        JSON logs to a file under twistd rotate on SIGUSR1, as twistd's own
        text logs do: the records so far in C{FILE.1}, later ones in C{FILE}.
        """
        directory = self.mktemp()
        port = freePort()
        path = writeSetup(directory, port)
        logPath = os.path.abspath(os.path.join(directory, "xtmp.log"))
        process = spawnTwistd(self, "xtmp", "xtmp", "--config", path,
                              "--log-format", "json", cwd=directory,
                              logfile=logPath)
        yield waitForPort(port, process)

        def records(name):
            if not os.path.exists(name):
                return []
            with open(name, encoding="utf-8") as f:
                return jsonRecords(f.read())

        def started():
            return [r for r in records(logPath)
                    if "xtmp server on" in r.get("log_format", "")]

        yield waitFor(started, what="the start line in the log file")
        process.transport.signalProcess(signal.SIGUSR1)
        yield waitFor(lambda: os.path.exists(logPath + ".1"),
                      what="the rotated log file")
        alice = yield connectXTMP(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                  clientFactory(ALICE))
        closed = alice.whenClosed()
        alice.disconnect()
        yield closed

        def sessionLines():
            return [r for r in records(logPath)
                    if "handshake complete" in r.get("log_format", "")]

        yield waitFor(sessionLines, what="the session's line after rotating")
        process.transport.signalProcess("TERM")
        yield process.ended
        self.assertEqual(process.exitCode, 0, process.text())
        old = records(logPath + ".1")
        self.assertTrue([r for r in old
                         if "xtmp server on" in r.get("log_format", "")])
        self.assertFalse([r for r in old
                          if "handshake complete" in r.get("log_format", "")])
        self.assertFalse(started())

    def test_textObserver(self):
        """
        Text logs are muxframe.logtext's observer: under twistd the role's
        own, writing where --logfile says; under twist in place of twist's
        text observer only (it picks JSON itself off a terminal).
        """
        from twisted.logger import jsonFileLogObserver
        from twisted.logger import textFileLogObserver as twistedText
        from twisted.python import usage

        from muxframe import logtext
        from muxframe.admin.logs import logObserver

        class Role(usage.Options):
            pass

        path = os.path.abspath(self.mktemp())
        role = Role()
        role.parent = {"logfile": path, "nodaemon": True}
        self.addCleanup(signal.signal, signal.SIGUSR1,
                        signal.getsignal(signal.SIGUSR1))
        observer = logObserver(role, "text")
        event = {"log_format": "hello {n}", "n": 3, "log_time": 1e9}
        observer(event)
        theirs = io.StringIO()
        twistedText(theirs)(event)
        with open(path) as f:
            self.assertEqual(f.read(), theirs.getvalue())
        role.parent = {"logfile": path, "nodaemon": True, "syslog": True}
        self.assertIsNone(logObserver(role, "text"))
        for chosen, expected in ((twistedText, logtext.textFileLogObserver),
                                 (jsonFileLogObserver, jsonFileLogObserver)):
            role.parent = {"fileLogObserverFactory": chosen}
            self.assertIsNone(logObserver(role, "text"))
            self.assertIs(role.parent["fileLogObserverFactory"], expected)

    def test_jsonLogsDaemonToStdout(self):
        """
        A daemon's JSON logs cannot go to standard output (twistd's rule
        for its own): C{--logfile=-} without C{--nodaemon} exits with
        twistd's message.
        """
        from muxframe.admin.logs import _twistdLogFile
        e = self.assertRaises(SystemExit, _twistdLogFile,
                              {"logfile": "-", "nodaemon": False})
        self.assertIn("Daemons cannot log to stdout", str(e))
        self.assertIs(_twistdLogFile({"logfile": "-", "nodaemon": True}),
                      sys.stdout)


class SeveralEndpointsTests(TestCase):
    """
    The role on a TCP endpoint and a ws: endpoint at once, with
    clients on both, and the allowed origins applied to the WebSocket.
    """

    timeout = 120

    @inlineCallbacks
    def test_tcpAndWebSocket(self):
        directory = self.mktemp()
        port, wsPort = freePort(), freePort()
        path = writeSetup(directory, port, {"server": {
            "endpoint": ["tcp:%d:interface=127.0.0.1" % (port,),
                         "ws:tcp:%d:interface=127.0.0.1:path=/xtmp" % (wsPort,)],
            "allowed_origins": ["https://app.example.com"]}})
        process = spawnXTMP(self, directory, "--config", path)
        yield waitForPort(port, process)
        yield waitForPort(wsPort, process)
        tcp = yield connectXTMP(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                clientFactory(ALICE))
        ws = yield connectXTMP(clientFromString(
            reactor, "ws:tcp:127.0.0.1:%d:path=/xtmp" % (wsPort,)),
            clientFactory(BOB))
        browser = yield connectXTMP(clientFromString(
            reactor, "ws:tcp:127.0.0.1:%d:path=/xtmp:origin=https\\://app."
            "example.com" % (wsPort,)), clientFactory(BOB))
        refused = yield connectXTMP(clientFromString(
            reactor, "ws:tcp:127.0.0.1:%d:path=/xtmp:origin=https\\://evil."
            "example.com" % (wsPort,)), clientFactory(BOB)).addCallbacks(
            lambda p: p, lambda f: f.value)
        self.assertIsInstance(refused, Exception)
        self.assertIn("403", str(refused))
        got = []
        yield ws.subscribe("chat", lambda m: got.append(("ws", m.payload)))
        yield browser.subscribe("chat", lambda m: got.append(("browser", m.payload)))
        tcp.publish("chat", b"from tcp")
        yield waitFor(lambda: len(got) == 2, what="deliveries over WebSocket")
        self.assertEqual(sorted(got), [("browser", b"from tcp"), ("ws", b"from tcp")])
        reply = yield ws.request(0x20, b"w", timeout=10)
        self.assertEqual(reply.payload, b"accepted:w:by:bob")
        for protocol in (tcp, ws, browser):
            closed = protocol.whenClosed()
            protocol.disconnect()
            why = yield closed
            self.assertIsInstance(why, ConnectionDone)
        process.transport.signalProcess("TERM")
        code = yield process.ended
        self.assertEqual(code, 0)
        self.assertIn("ws:tcp:%d" % (wsPort,), process.text())

    def test_optionsRepeatEndpoint(self):
        import sys

        from tests.test_server_tap import parse
        directory = self.mktemp()
        path = writeSetup(directory, freePort())
        # As twistd would find the handlers' module on PYTHONPATH.
        sys.path.insert(0, os.path.abspath(directory))
        self.addCleanup(sys.path.remove, os.path.abspath(directory))
        self.addCleanup(sys.modules.pop, "xtmpapp", None)
        options = parse("--config", path, "--endpoint", "tcp:0:interface=127.0.0.1",
                        "--endpoint", "ws:tcp:0:interface=127.0.0.1:path=/x",
                        "--allowed-origins", "https://a.example,https://*.b.example")
        c = options.config
        self.assertEqual(c["server.endpoint"], ["tcp:0:interface=127.0.0.1",
                                                "ws:tcp:0:interface=127.0.0.1:path=/x"])
        self.assertEqual(c["server.allowed_origins"],
                         ["https://a.example", "https://*.b.example"])
        from twisted.python import usage
        e = self.assertRaises(usage.UsageError, parse, "--config", path,
                              "--allowed-origins", "example.com")
        self.assertIn("--allowed-origins", str(e))
        e = self.assertRaises(usage.UsageError, parse, "--config", path,
                              "--endpoint", "tcp:0", "--endpoint", "bogus:1")
        self.assertIn("bogus:1", str(e))

