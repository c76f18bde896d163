"""
Tests of C{muxframe-xtmp}: every subcommand run from the source tree
(C{python3 -m muxframe.cli}, with this checkout on PYTHONPATH) against a
running server (C{twistd -n muxframe xtmp} with its admin service):
keygen -> authorize -> connect -> request from a fresh directory, send,
subscribe with broadcast and publish from the command line, status,
sessions, disconnect, stats (once and continuous), bench with its
progress display, capture and validate on good and tampered message
files; and the exit codes (0 success, 1 failure, 2 usage).
"""

import configparser
import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe.xtmp import XTMPErrorCode, connectXTMP

from tests.adminsupport import waitFor
from tests.test_admin_xtmp import adminSetup
from tests.test_server_support import ALICE, SERVER_IDENTITY
from tests.test_server_tap import clientFactory, spawnXTMP
from tests.test_tap import freePort, waitForPort

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def environment():
    env = dict(os.environ, PYTHONPATH=REPO)
    for name in list(env):
        if name.startswith("MUXFRAME_"):
            del env[name]
    return env


@inlineCallbacks
def cli(cwd, *args):
    """
    Run C{python3 -m muxframe.cli ARGS} in C{cwd}: C{(exit code, stdout,
    stderr)} as text.
    """
    out, err, code = yield getProcessOutputAndValue(
        sys.executable, ["-m", "muxframe.cli"] + list(args), env=environment(),
        path=cwd)
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


class Background(ProcessProtocol):
    """
    A C{muxframe-xtmp} command left running: its output, line by line.
    """

    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended = Deferred()
        self.running = True

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def lines(self):
        return [line for line in self.out.decode("utf-8").splitlines() if line]

    def records(self):
        return [json.loads(line) for line in self.lines()]

    def processEnded(self, reason):
        self.running = False
        self.ended.callback(reason.value.exitCode)


def background(testCase, cwd, *args):
    process = Background()
    argv = [sys.executable, "-m", "muxframe.cli"] + list(args)
    process.transport = reactor.spawnProcess(process, sys.executable, argv,
                                             env=environment(), path=cwd)

    def kill():
        if process.running:
            process.transport.signalProcess("KILL")
            return process.ended
    testCase.addCleanup(kill)
    return process


class CommandLineTests(TestCase):
    """
    Every subcommand against one running server.
    """

    timeout = 240

    @inlineCallbacks
    def test_everySubcommand(self):
        server = os.path.abspath(self.mktemp())
        port, adminPort = freePort(), freePort()
        config = adminSetup(server, port, adminPort)
        SERVER_IDENTITY.public.savePEM(os.path.join(server, "server.pub"))
        process = spawnXTMP(self, server, "--config", config)
        yield waitForPort(port, process)
        yield waitForPort(adminPort, process)
        fresh = os.path.abspath(self.mktemp())
        os.makedirs(fresh)
        key = os.path.join(server, "server.pub")
        session = ["--endpoint", "127.0.0.1:%d" % (port,), "--server-key", key,
                   "--identity", "carol.pem"]
        admin = ["--admin", "http://127.0.0.1:%d" % (adminPort,),
                 "--admin-token-file", os.path.join(server, "admin.token")]

        # keygen -> authorize -> (SIGHUP) -> connect -> request.
        code, out, err = yield cli(fresh, "keygen", "carol", "--mldsa")
        self.assertEqual(code, 0, err)
        self.assertIn("fingerprint:", out)
        self.assertTrue(os.path.exists(os.path.join(fresh, "carol.pem")))
        code, out, err = yield cli(fresh, "keygen", "carol")
        self.assertEqual(code, 1)
        self.assertIn("exists", err)
        code, out, err = yield cli(fresh, "authorize", "carol.pub", "--name",
                                   "carol", "--authorized-keys",
                                   os.path.join(server, "authorized_keys"))
        self.assertEqual(code, 0, err)
        self.assertIn("authorized carol", out)
        code, out, err = yield cli(fresh, "authorize", "carol.pub", "--name",
                                   "carol2", "-f",
                                   os.path.join(server, "authorized_keys"))
        self.assertEqual(code, 1)
        self.assertIn("already authorizes this key as carol", err)
        for name, fault in (("default", "is reserved"),
                            ("anonymous", "is reserved"),
                            ("a:b", "has whitespace or a colon")):
            code, out, err = yield cli(fresh, "authorize", "carol.pub",
                                       "--name", name, "-f",
                                       os.path.join(server, "authorized_keys"))
            self.assertEqual(code, 1, name)
            self.assertIn(fault, err)
        process.transport.signalProcess("HUP")
        yield waitFor(lambda: "reloaded credentials: keys +1" in process.text(),
                      what="the reload")
        code, out, err = yield cli(fresh, "connect", "--json", *session)
        self.assertEqual(code, 0, err)
        info = json.loads(out)
        self.assertEqual(info["cipher"], "AES-256-GCM")
        self.assertRegex(info["session_id"], "^0x[0-9a-f]+$")
        self.assertGreater(info["rtt_ms"], 0)
        self.assertEqual(info["server_fingerprint"],
                         SERVER_IDENTITY.public.fingerprint)
        code, out, err = yield cli(fresh, "request", "--type", "BundleSubmit",
                                   "--payload", "hi", "--json", *session)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["text"], "accepted:hi:by:carol")
        with open(os.path.join(fresh, "payload.bin"), "wb") as f:
            f.write(b"\x00\x01binary")
        code, out, err = yield cli(fresh, "send", "--type", "0x21",
                                   "--payload-file", "payload.bin", "--flags",
                                   "ENCRYPTED,REQUIRES_ACK", "--json", *session)
        self.assertEqual(code, 0, err)
        sent = json.loads(out)
        self.assertEqual(sent["bytes"], 8)
        self.assertIsNotNone(sent["acked_ms"])

        # subscribe, then broadcast and publish from the admin API.
        subscriber = background(self, fresh, "subscribe", "broadcast", "news.>",
                                "--count", "2", "--json", *session)
        yield waitFor(lambda: subscriber.lines() or not subscriber.running,
                      what="the subscription")
        self.assertEqual(subscriber.records()[0]["subscribed"],
                         ["broadcast", "news.>"])
        code, out, err = yield cli(fresh, "broadcast", "--type", "LiveUpdates",
                                   "--payload", "to all", "--json", *admin)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["delivered"], 1)
        code, out, err = yield cli(fresh, "publish", "--subject", "news.eu",
                                   "--type", "EventStream", "--payload", "eu",
                                   *admin)
        self.assertEqual(code, 0, err)
        exitCode = yield subscriber.ended
        self.assertEqual(exitCode, 0, subscriber.err)
        got = [(r["subject"], r["text"]) for r in subscriber.records()[1:]]
        self.assertEqual(got, [("broadcast", "to all"), ("news.eu", "eu")])

        # status, sessions, disconnect, against a live session of ours.
        alice = yield connectXTMP(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                  clientFactory(ALICE))
        yield alice.subscribe("orders.*", lambda m: None)
        code, out, err = yield cli(fresh, "status", *admin)
        self.assertEqual(code, 0, err)
        self.assertIn("xtmp: healthy", out)
        code, out, err = yield cli(fresh, "status", "%#x" % (alice.sessionId,),
                                   "--json", *admin)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["identity"]["name"], "alice")
        code, out, err = yield cli(fresh, "sessions", "--detailed", *admin)
        self.assertEqual(code, 0, err)
        self.assertIn("key alice", out)
        self.assertIn("orders.*", out)
        code, out, err = yield cli(fresh, "sessions", "--json", "--identity",
                                   "nobody", *admin)
        self.assertEqual(json.loads(out)["count"], 0)
        closed = alice.whenClosed()
        code, out, err = yield cli(fresh, "disconnect", "%#x" % (alice.sessionId,),
                                   "--code", "KEY_REVOKED", "--reason", "cli",
                                   *admin)
        self.assertEqual(code, 0, err)
        why = yield closed
        self.assertEqual(why.code, XTMPErrorCode.KEY_REVOKED)
        code, out, err = yield cli(fresh, "disconnect", "0x1", *admin)
        self.assertEqual(code, 1)
        self.assertIn("HTTP 404", err)

        # stats, once and continuous.
        code, out, err = yield cli(fresh, "stats", "--json", "--export",
                                   "stats.json", *admin)
        self.assertEqual(code, 0, err)
        stats = json.loads(out)
        self.assertGreaterEqual(stats["sessions"]["opened"], 5)
        with open(os.path.join(fresh, "stats.json")) as f:
            self.assertEqual(json.load(f)["role"], "xtmp")
        code, out, err = yield cli(fresh, "stats", *admin)
        self.assertIn("handler BundleSubmit", out)
        watcher = background(self, fresh, "stats", "--continuous", "--interval",
                             "0.2", "--json", *admin)
        yield waitFor(lambda: len(watcher.lines()) >= 2 or not watcher.running,
                      what="two snapshots")
        watcher.transport.signalProcess("INT")
        exitCode = yield watcher.ended
        self.assertEqual(exitCode, 0)
        self.assertEqual(watcher.records()[0]["role"], "xtmp")

        # bench, with its progress display.
        code, out, err = yield cli(fresh, "bench", "--type", "0x20",
                                   "--duration", "1", "--rate", "100",
                                   "--connections", "2", "--json", *session)
        self.assertEqual(code, 0, err)
        result = json.loads(out)
        self.assertGreater(result["completed"], 10)
        self.assertEqual(result["errors"], {})
        self.assertIsNotNone(result["latencyMs"]["p99"])
        self.assertIn("bench: 100%", err)
        self.assertIn("msgs/s", err)
        code, out, err = yield cli(fresh, "bench", "--mode", "publish",
                                   "--duration", "0.5", "--no-progress",
                                   *session)
        self.assertEqual(code, 0, err)
        self.assertIn("latency ms: p50", out)
        self.assertEqual(err, "")

        # capture, then validate what it saved.
        capture = background(self, fresh, "capture", "--connect",
                             "127.0.0.1:%d" % (port,), "--save", "caps",
                             "--count", "6", "--json")
        yield waitFor(lambda: capture.lines() or not capture.running,
                      what="the relay")
        relay = capture.records()[0]["port"]
        code, out, err = yield cli(
            fresh, "request", "--type", "BundleSubmit", "--payload", "relayed",
            "--endpoint", "tcp:127.0.0.1:%d" % (relay,), "--server-key", key,
            "--identity", "carol.pem")
        self.assertEqual(code, 0, err)
        self.assertIn("accepted:relayed:by:carol", out)
        exitCode = yield capture.ended
        self.assertEqual(exitCode, 0, capture.err)
        frames = [r for r in capture.records() if "typeName" in r]
        self.assertEqual([(r["direction"], r["typeName"]) for r in frames[:2]],
                         [("c2s", "Handshake"), ("s2c", "HandshakeAck")])
        self.assertIn(("c2s", "BundleSubmit", ["ENCRYPTED"]),
                      [(r["direction"], r["typeName"], r["flagNames"])
                       for r in frames])
        hello = frames[0]["file"]
        code, out, err = yield cli(fresh, "validate", hello)
        self.assertEqual(code, 0, err)
        self.assertIn("checksum: ok", out)
        self.assertIn("type Handshake (0x01)", out)
        encrypted = [r["file"] for r in frames if r["typeName"] == "BundleSubmit"][0]
        code, out, err = yield cli(fresh, "validate", encrypted, "--json")
        self.assertEqual(code, 0, err)
        report = json.loads(out)
        self.assertTrue(report["valid"])
        self.assertEqual(report["messages"][0]["security"]["cipherName"],
                         "AES-256-GCM")
        with open(os.path.join(fresh, hello), "rb") as f:
            data = bytearray(f.read())
        data[40] ^= 0x01
        with open(os.path.join(fresh, "tampered.xtmp"), "wb") as f:
            f.write(bytes(data))
        code, out, err = yield cli(fresh, "validate", "tampered.xtmp")
        self.assertEqual(code, 1)
        self.assertIn("ChecksumMismatch", out + err)
        with open(os.path.join(fresh, "short.xtmp"), "wb") as f:
            f.write(bytes(data[:20]))
        code, out, err = yield cli(fresh, "validate", "short.xtmp")
        self.assertEqual(code, 1)
        self.assertIn("Truncated", err)
        data[0:4] = b"XTMQ"
        with open(os.path.join(fresh, "magic.xtmp"), "wb") as f:
            f.write(bytes(data))
        code, out, err = yield cli(fresh, "validate", "magic.xtmp", "--json")
        self.assertEqual(code, 1)
        self.assertEqual(json.loads(out)["messages"][0]["error"]["name"],
                         "BadMagic")

        # Failures exit 1, naming the error.
        code, out, err = yield cli(fresh, "request", "--type", "0x30", *session)
        self.assertEqual(code, 1)
        self.assertIn("UNKNOWN_TYPE", err)
        code, out, err = yield cli(fresh, "status", "--admin",
                                   "http://127.0.0.1:%d" % (adminPort,))
        self.assertEqual(code, 1)
        self.assertIn("HTTP 401", err)


class ServerCloseTests(TestCase):
    """
    A session the server closes, not the command: a failure (exit 1)
    naming the code and reason, even for a clean close.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        server = os.path.abspath(self.mktemp())
        port, adminPort = freePort(), freePort()
        config = adminSetup(server, port, adminPort)
        SERVER_IDENTITY.public.savePEM(os.path.join(server, "server.pub"))
        ALICE.savePEM(os.path.join(server, "alice.pem"))
        self.process = spawnXTMP(self, server, "--config", config)
        yield waitForPort(port, self.process)
        yield waitForPort(adminPort, self.process)
        self.directory = server
        self.session = ["--endpoint", "127.0.0.1:%d" % (port,),
                        "--server-key", "server.pub", "--identity",
                        "alice.pem"]
        self.admin = ["--admin", "http://127.0.0.1:%d" % (adminPort,),
                      "--admin-token-file", "admin.token"]

    @inlineCallbacks
    def liveSessions(self):
        """
        The number of live sessions, from the admin API.
        """
        code, out, err = yield cli(self.directory, "sessions", "--json",
                                   *self.admin)
        self.assertEqual(code, 0, err)
        return json.loads(out)["count"]

    @inlineCallbacks
    def disconnectAll(self):
        """
        Disconnect every live session through the admin API, with the
        default code (GOING_AWAY).
        """
        code, out, err = yield cli(self.directory, "sessions", "--json",
                                   *self.admin)
        self.assertEqual(code, 0, err)
        for session in json.loads(out)["sessions"]:
            code, out, err = yield cli(self.directory, "disconnect",
                                       session["session_id"], *self.admin)
            self.assertEqual(code, 0, err)
            self.assertIn("with GOING_AWAY", out)

    @inlineCallbacks
    def test_subscribeGoingAway(self):
        """
        C{subscribe} exits 1 when an admin disconnects its session with
        GOING_AWAY (the library's clean close), naming the code and reason.
        """
        subscriber = background(self, self.directory, "subscribe", "news.>",
                                "--json", *self.session)
        yield waitFor(lambda: subscriber.lines() or not subscriber.running,
                      what="the subscription")
        yield self.disconnectAll()
        exitCode = yield subscriber.ended
        self.assertEqual(exitCode, 1, subscriber.err)
        self.assertIn(b"server closed the session (GOING_AWAY: disconnected "
                      b"by the operator)", subscriber.err)

    @inlineCallbacks
    def test_subscribeAskedToStop(self):
        """
        A close C{subscribe} asked for is a success: its duration, or
        SIGTERM.
        """
        code, out, err = yield cli(self.directory, "subscribe", "news.>",
                                   "--duration", "0.5", *self.session)
        self.assertEqual((code, err), (0, ""))
        subscriber = background(self, self.directory, "subscribe", "news.>",
                                *self.session)
        yield waitFor(lambda: subscriber.lines() or not subscriber.running,
                      what="the subscription")
        subscriber.transport.signalProcess("TERM")
        exitCode = yield subscriber.ended
        self.assertEqual((exitCode, subscriber.err), (0, b""))

    @inlineCallbacks
    def test_benchGoingAway(self):
        """
        C{bench} stops and exits 1 when the server closes one of its
        sessions with GOING_AWAY, rather than reporting the load it could
        not apply.
        """
        bench = background(self, self.directory, "bench", "--type", "0x20",
                           "--duration", "30", "--rate", "50",
                           "--no-progress", *self.session)
        yield waitFor(lambda: self.liveSessions() if bench.running else True,
                      what="the bench's session")
        yield self.disconnectAll()
        exitCode = yield bench.ended
        self.assertEqual(exitCode, 1, bench.err)
        self.assertIn(b"server closed the session (GOING_AWAY: disconnected "
                      b"by the operator)", bench.err)


class ExitCodeTests(TestCase):
    """
    Usage errors exit 2, failures 1, without a server.
    """

    timeout = 60

    @inlineCallbacks
    def test_exitCodes(self):
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        for args, code, text in [
                ((), 2, "required: COMMAND"),
                (("frobnicate",), 2, "invalid choice"),
                (("request", "--endpoint", "127.0.0.1:1"), 2, "--type"),
                (("send", "--endpoint", "127.0.0.1:1", "--type", "0x20"), 2,
                 "--server-key"),
                (("send", "--endpoint", "127.0.0.1:1", "--server-fingerprint",
                  "00", "--type", "Handshake"), 2, "control type"),
                (("send", "--endpoint", "127.0.0.1:1", "--server-fingerprint",
                  "00", "--type", "0x20", "--flags", "STREAM_DATA"), 2,
                 "STREAM_DATA cannot be asked for"),
                (("connect", "--endpoint", "127.0.0.1:%d" % (freePort(),),
                  "--server-fingerprint", "00" * 32, "--anonymous"), 1,
                 "ConnectionRefusedError"),
                (("connect", "--endpoint", "127.0.0.1:%d" % (freePort(),),
                  "--server-fingerprint", "00", "--anonymous"), 2,
                 "--server-fingerprint: expected the 64 hex digits"),
                (("stats",), 2, "--admin is required"),
                (("stats", "--admin", "http://127.0.0.1:%d" % (freePort(),)), 1,
                 "admin API"),
                (("validate", "nothing.xtmp"), 1, "cannot read nothing.xtmp"),
                (("bench", "--endpoint", "127.0.0.1:1", "--server-fingerprint",
                  "00", "--payload-size", "3"), 2, "--payload-size"),
                (("capture", "--connect", "127.0.0.1:1", "--listen", "tcp:0"), 2,
                 "loopback only"),
        ]:
            got, out, err = yield cli(cwd, *args)
            self.assertEqual(got, code, (args, out, err))
            self.assertIn(text, err, args)
        got, out, err = yield cli(cwd, "--version")
        self.assertEqual(got, 0)
        self.assertIn("muxframe ", out)

    @inlineCallbacks
    def test_numericOptionRanges(self):
        """
        A number out of an option's range is a usage error (exit 2) whose
        last line names the option, found before anything is done with
        it: not a traceback (a port past 65535, a negative timeout), a
        ValueError (a negative interval, an --admin port that urllib
        refuses) or a busy loop (an interval of 0).
        """
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        pin = ("--server-fingerprint", "00" * 32, "--anonymous")
        admin = ("--admin", "http://127.0.0.1:%d" % (freePort(),))
        for args, text in [
                (("connect", "-e", "127.0.0.1:99999") + pin,
                 "--endpoint: port 99999"),
                (("connect", "-e", "tcp:127.0.0.1:99999") + pin,
                 "--endpoint: 'tcp:127.0.0.1:99999'"),
                (("connect", "-e", "127.0.0.1:1", "--timeout", "-1") + pin,
                 "argument --timeout"),
                (("connect", "-e", "127.0.0.1:1", "--timeout", "nan") + pin,
                 "argument --timeout"),
                (("connect", "-e", "127.0.0.1:1", "--pings", "0") + pin,
                 "argument --pings"),
                (("subscribe", "x", "-e", "127.0.0.1:1", "--count", "-1")
                 + pin, "argument --count"),
                (("subscribe", "x", "-e", "127.0.0.1:1", "--duration", "-1")
                 + pin, "argument --duration"),
                (("bench", "-e", "127.0.0.1:1", "--rate", "-1") + pin,
                 "argument --rate"),
                (("stats", "--continuous", "--interval", "0") + admin,
                 "argument --interval"),
                (("stats", "--continuous", "--interval", "-1") + admin,
                 "argument --interval"),
                (("status", "--continuous", "--interval", "1e300") + admin,
                 "argument --interval"),
                (("stats", "--timeout", "-1") + admin, "argument --timeout"),
                (("stats", "--timeout", "1e300") + admin,
                 "argument --timeout"),
                (("sessions", "--limit", "0") + admin, "argument --limit"),
                # (urllib's port and address checks: a usage error naming
                # --admin, not a ValueError's exit 1.)
                (("stats", "--admin", "http://127.0.0.1:99999"),
                 "--admin: 'http://127.0.0.1:99999': Port out of range"),
                (("stats", "--admin", "127.0.0.1:http"),
                 "--admin: '127.0.0.1:http': Port could not be cast"),
                (("stats", "--admin", "http://[::1"),
                 "--admin: 'http://[::1': Invalid IPv6 URL"),
                (("sessions", "--within", "-1") + admin, "argument --within"),
                (("capture", "--connect", "127.0.0.1:99999"),
                 "--connect: port 99999"),
                (("capture", "--connect", "127.0.0.1:1", "--max-payload",
                  "-1"), "argument --max-payload"),
                (("validate", "-", "--max-payload", "-1"),
                 "argument --max-payload"),
                (("validate", "-", "--max-payload", str(2 ** 32)),
                 "argument --max-payload"),
        ]:
            got, out, err = yield cli(cwd, *args)
            self.assertEqual(got, 2, (args, out, err))
            self.assertNotIn("Traceback", err, args)
            self.assertIn(text, err.strip().splitlines()[-1], args)


    @inlineCallbacks
    def test_adminTokenFileNeverPrinted(self):
        """
        An admin token file that holds no token, or text that cannot be a
        token (two lines, a space, a non-ASCII byte), is a failure (exit
        1) on one line naming the file and what is wrong, before any
        request; what the file holds is never printed.
        """
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        admin = ("--admin", "http://127.0.0.1:%d" % (freePort(),))
        for content, text in [
                (b"", "holds no token"), (b"  \n", "holds no token"),
                (b"s3cret-one\ns3cret-two\n", "one line of printable ASCII"),
                (b"s3cret-one s3cret-two\n", "one line of printable ASCII"),
                (b"s3cr\xc3\xa9t\n", "one line of printable ASCII")]:
            path = os.path.join(cwd, "admin.token")
            with open(path, "wb") as f:
                f.write(content)
            got, out, err = yield cli(cwd, "stats", "--admin-token-file",
                                      path, *admin)
            self.assertEqual(got, 1, (content, out, err))
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn("--admin-token-file: %s" % (path,), err)
            self.assertIn(text, err)
            self.assertNotIn("s3cr", out + err)


class _Canned:
    """
    A twisted.web resource answering every request with C{answer}:
    C{(code, content type, body)}.
    """

    isLeaf = True

    def __init__(self):
        self.answer = (200, b"application/json", b"{}")
        self.paths = []

    def getChildWithDefault(self, name, request):
        return self

    def render(self, request):
        self.paths.append(request.uri)
        code, kind, body = self.answer
        request.setResponseCode(code)
        request.setHeader(b"content-type", kind)
        return body


def cannedServer(testCase):
    """
    A web server on 127.0.0.1 answering every request with its
    L{_Canned}'s answer, stopped at the end of C{testCase}: C{(canned,
    http://127.0.0.1:PORT)}.
    """
    from twisted.web.resource import IResource
    from twisted.web.server import Site
    from zope.interface import directlyProvides
    canned = _Canned()
    directlyProvides(canned, IResource)
    web = reactor.listenTCP(0, Site(canned), interface="127.0.0.1")
    testCase.addCleanup(web.stopListening)
    return canned, "http://127.0.0.1:%d" % (web.getHost().port,)


class _Junk(Protocol):
    """
    A server that is not HTTP: it answers any bytes with binary junk (as
    an XTMP server answers a request line) and closes.
    """

    def dataReceived(self, data):
        self.transport.write(b"XTMP\xfe\x00\x1b[2J\x07 bad magic\r\n\r\n")
        self.transport.loseConnection()


class AnswerTests(TestCase):
    """
    An --admin address that is not a muxframe admin service (another web
    server, a wrong port): the admin commands fail on one line saying so
    (exit 1), never with a traceback, a page's lines or the terminal
    control bytes the server sent; an error's own text is shown on one
    line, escaped.
    """

    timeout = 120

    @inlineCallbacks
    def test_notTheAdminService(self):
        canned, webAddress = cannedServer(self)
        junk = reactor.listenTCP(0, Factory.forProtocol(_Junk),
                                 interface="127.0.0.1")
        self.addCleanup(junk.stopListening)
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        html = b"<html>\n<body>\nNot here\n</body>\n</html>\n"
        for answer, args, text in [
                ((200, b"text/html", html), ("status",),
                 "GET /health answered 200 without the admin API's JSON "
                 "object"),
                ((200, b"application/json", b"[1, 2]"), ("sessions",),
                 "GET /api/v1/sessions answered 200 without the admin API's "
                 "JSON object"),
                ((200, b"application/json", b"{}"), ("status", "0x1"),
                 "an answer this command cannot show (no field "
                 "'session_id')"),
                ((200, b"application/json",
                  b'{"count": 1, "total": 1, "sessions": [{}]}'),
                 ("sessions",), "(no field 'session_id')"),
                ((404, b"text/html", html), ("status",),
                 "HTTP 404, an answer that is not the admin API's JSON "
                 "error"),
                ((500, b"application/json",
                  b'{"error": "red \\u001b[31m\\nsecond line"}'),
                 ("stats",), "HTTP 500: red \\x1b[31m\\nsecond line")]:
            canned.answer = answer
            got, out, err = yield cli(cwd, *args, "--admin", webAddress)
            self.assertEqual(got, 1, (answer, out, err))
            self.assertNotIn("Traceback", err)
            self.assertNotIn("\x1b", err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn(text, err)
            if answer[0] != 500:
                self.assertIn("is --admin the admin service", err)
        got, out, err = yield cli(cwd, "stats", "--admin",
                                  "127.0.0.1:%d" % (junk.getHost().port,))
        self.assertEqual(got, 1, (out, err))
        self.assertEqual(err.strip().splitlines(), [
            "muxframe-xtmp: error: admin API at 127.0.0.1:%d: the answer is "
            "not HTTP: is --admin the admin service of a muxframe role?"
            % (junk.getHost().port,)])


class PrefixTests(TestCase):
    """
    An --admin URL with a path (the service behind a proxy, under a
    prefix): every request's path follows it; a query or fragment in it is
    a usage error.
    """

    timeout = 60

    @inlineCallbacks
    def test_prefix(self):
        canned, base = cannedServer(self)
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        canned.answer = (200, b"application/json", b'{"uptime": 1}')
        got, out, err = yield cli(cwd, "stats", "--json", "--admin",
                                  base + "/muxframe/")
        self.assertEqual(got, 0, (out, err))
        self.assertEqual(canned.paths, [b"/muxframe/api/v1/stats"])
        got, out, err = yield cli(cwd, "stats", "--admin",
                                  base + "/muxframe?x=1")
        self.assertEqual(got, 2, (out, err))
        self.assertIn("a query or fragment", err)


def parseCommand(*argv):
    """
    The options of C{muxframe-xtmp ARGV}, as the command would see them.
    """
    from muxframe.cli.main import parser
    return parser().parse_args(list(argv))


class ConnectionOptionsTests(SynchronousTestCase):
    """
    How the connection options pin the server's key.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.keyFile = os.path.join(self.directory, "server.pub")
        SERVER_IDENTITY.public.savePEM(self.keyFile)
        self.identityFile = os.path.join(self.directory, "alice.pem")
        ALICE.savePEM(self.identityFile)
        saved = os.environ.copy()
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(saved)))
        for name in list(os.environ):
            if name.startswith("MUXFRAME_"):
                del os.environ[name]

    def factory(self, *options):
        from muxframe.cli.common import clientFactory
        return clientFactory(parseCommand(
            "connect", "-e", "127.0.0.1:1", "-i", self.identityFile, *options))

    def test_fingerprintOptionBeatsEnvironment(self):
        """
        C{--server-fingerprint} pins that fingerprint even with
        C{$MUXFRAME_XTMP_SERVER_KEY} naming the server's real key: an
        option wins over the environment.
        """
        from muxframe.xtmp.errors import Unauthorized
        os.environ["MUXFRAME_XTMP_SERVER_KEY"] = self.keyFile
        other = ALICE.public.fingerprint
        factory = self.factory("--server-fingerprint", other)
        self.assertIsNone(factory.serverKey)
        self.assertRaises(Unauthorized, factory.verifyServer,
                          SERVER_IDENTITY.public)
        self.assertTrue(factory.verifyServer(ALICE.public))

    def test_environmentKeyWithoutOptions(self):
        """
        Without C{--server-key} or C{--server-fingerprint},
        C{$MUXFRAME_XTMP_SERVER_KEY} is the key pinned.
        """
        from muxframe.xtmp.errors import Unauthorized
        os.environ["MUXFRAME_XTMP_SERVER_KEY"] = self.keyFile
        check = self.factory().verifyServer
        self.assertTrue(check(SERVER_IDENTITY.public))
        self.assertRaises(Unauthorized, check, ALICE.public)

    def test_mismatchNamesBothFingerprints(self):
        """
        A server key that is not the one pinned (by fingerprint or by key
        file) fails the handshake with an error naming the fingerprint
        expected and the server's.
        """
        from muxframe.xtmp.errors import Unauthorized
        wanted = ALICE.public.fingerprint
        actual = SERVER_IDENTITY.public.fingerprint
        for options in [("--server-fingerprint", wanted.upper()),
                        ("--server-key", self.keyFile)]:
            check = self.factory(*options).verifyServer
            server = ALICE.public if "--server-key" in options \
                else SERVER_IDENTITY.public
            error = self.assertRaises(Unauthorized, check, server)
            if "--server-key" in options:
                wanted, actual = actual, wanted
            self.assertIn("expected " + wanted, str(error))
            self.assertIn("is " + actual, str(error))

    def test_malformedFingerprint(self):
        """
        A C{--server-fingerprint} that is not 64 hex digits is a usage
        error, found before connecting: the 16-digit prefix once printed,
        a digit short, or not hex.
        """
        from muxframe.cli.common import UsageError
        full = SERVER_IDENTITY.public.fingerprint
        for text in ["00", full[:16], full[:-1], full + "0", "g" + full[1:],
                     ""]:
            error = self.assertRaises(UsageError, self.factory,
                                      "--server-fingerprint", text)
            self.assertIn("--server-fingerprint", str(error))
            self.assertIn("64 hex digits", str(error))
        self.factory("--server-fingerprint", " %s\n" % (full.upper(),))


class FakeAdminClient:
    """
    An admin client answering each path with a canned body.
    """

    def __init__(self, bodies):
        self.bodies = bodies

    def get(self, path, query=None, accept=(200,)):
        return 200, self.bodies[path]

    def sessionPath(self, sessionId):
        return "/api/v1/sessions/" + sessionId


class StatusOutputTests(SynchronousTestCase):
    """
    What C{status} prints.
    """

    health = {"role": "xtmp", "status": "healthy", "version": "0.1.0",
              "server_uptime": "5s", "active_connections": 0, "sessions": 0,
              "active_streams": 0, "message_throughput": 0.0,
              "average_latency_ms": None, "encryption_status": "enabled"}
    session = {"session_id": "0x1", "status": "established",
               "identity": {"kind": "key", "name": "alice"},
               "peer": "127.0.0.1:1", "connected_at": "now",
               "last_activity": "now", "messages_sent": 0,
               "messages_received": 0, "bytes_sent": 0, "bytes_received": 0,
               "cipher": "AES-256-GCM", "subscriptions": [],
               "quality_metrics": {"heartbeat_rtt_ms": None}}

    def status(self, health, session, *argv):
        from io import StringIO

        from muxframe.cli import admin
        self.patch(admin, "adminClient", lambda args: FakeAdminClient({
            "/health": health, "/api/v1/sessions/0x1": session}))
        out = StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(admin.status(parseCommand("status", *argv)), 0)
        return out.getvalue()

    def test_noFigure(self):
        """
        A latency or heartbeat round trip the role has no figure for shows
        as C{unknown}, not C{None ms}.
        """
        out = self.status(self.health, self.session)
        self.assertIn("latency unknown,", out)
        self.assertNotIn("None", out)
        out = self.status(self.health, self.session, "0x1")
        self.assertIn("heartbeat rtt unknown;", out)
        self.assertNotIn("None", out)

    def test_figure(self):
        """
        A figure shows in milliseconds.
        """
        health = dict(self.health, average_latency_ms=1.25)
        session = dict(self.session,
                       quality_metrics={"heartbeat_rtt_ms": 0.5})
        self.assertIn("latency 1.25 ms,", self.status(health, session))
        self.assertIn("heartbeat rtt 0.5 ms;",
                      self.status(health, session, "0x1"))


class EntryPointTests(SynchronousTestCase):
    def test_consoleScriptDeclared(self):
        """
        setup.cfg declares the console script muxframe-xtmp, whose target
        is L{muxframe.cli.main.main}; the packages it needs are shipped.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(REPO, "setup.cfg"))
        scripts = dict(
            line.split(" = ", 1) for line in
            config["options.entry_points"]["console_scripts"].strip().splitlines())
        self.assertEqual(scripts, {"muxframe-xtmp": "muxframe.cli.main:main"})
        packages = config["options"]["packages"].split()
        self.assertIn("muxframe.cli", packages)
        self.assertIn("muxframe.admin", packages)
        from muxframe.cli.main import main
        self.assertTrue(callable(main))
        requires = config["options"]["install_requires"]
        self.assertIn("prometheus_client>=", requires)
        self.assertIn("tqdm>=", requires)


class ClosedOutputTests(SynchronousTestCase):
    """
    Output to a reader that went away (C{| head} once it has its lines):
    the command ends quietly, exit 1, without an error line or Python's
    BrokenPipeError report.
    """

    def runClosed(self, *argv):
        """
        Run C{python3 ARGV} with standard output a pipe whose reader is
        closed: C{(exit code, stderr text)}.
        """
        import subprocess
        read, write = os.pipe()
        os.close(read)
        try:
            process = subprocess.run(
                [sys.executable] + list(argv), stdout=write,
                stderr=subprocess.PIPE, env=environment(),
                timeout=60)
        finally:
            os.close(write)
        return process.returncode, process.stderr.decode("utf-8", "replace")

    def test_command(self):
        """
        A command that prints once (keygen): its work is done (the files
        written), exit 1, nothing on stderr.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        code, err = self.runClosed(
            "-m", "muxframe.cli", "keygen", os.path.join(directory, "id"))
        self.assertEqual((code, err), (1, ""))
        self.assertEqual(sorted(os.listdir(directory)), ["id.pem", "id.pub"])

    def test_streaming(self):
        """
        A command printing from callbacks under the reactor, as subscribe
        does (no Deferred of the command's fails): the reactor stops,
        exit 1, nothing on stderr.
        """
        code, err = self.runClosed("-c", """
import sys
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from muxframe.cli.common import runTwisted, say

def main(reactor):
    LoopingCall(lambda: say("a message")).start(0.001)
    return Deferred()

sys.exit(runTwisted(main))
""")
        self.assertEqual((code, err), (1, ""))

    def test_outputOptional(self):
        """
        A command whose work goes on without its output (capture with
        --output FILE calls outputOptional): a closed stdout stops nothing,
        and the exit code is the command's.
        """
        code, err = self.runClosed("-c", """
import sys
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from muxframe.cli.common import outputOptional, runTwisted, say

def main(reactor):
    outputOptional()
    done, calls = Deferred(), []
    def tick():
        calls.append(say("a message"))
        if len(calls) == 50:
            loop.stop()
            done.callback(3)
    loop = LoopingCall(tick)
    loop.start(0.001)
    return done

sys.exit(runTwisted(main))
""")
        self.assertEqual((code, err), (3, ""))
