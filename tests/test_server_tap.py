"""
The C{xtmp} twistd role: its options, and the real thing, C{twistd -n
muxframe xtmp --config FILE} as a subprocess on 127.0.0.1 with clients
whose keys come from authorized_keys, configured handlers, wildcard
subscribers and a queue group, request/reply between two clients, a
SIGHUP reload that revokes a key, and a clean SIGTERM stop (exit 0).
"""

import os

import yaml
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe import tap
from muxframe.server.tap import XTMPOptions
from muxframe.xtmp import (
    PeerError, XTMPClientFactory, XTMPErrorCode, connectXTMP,
)

from tests.adminsupport import waitFor
from tests.test_server_config import DESIGN_EXAMPLE
from tests.test_server_support import ALICE, BOB, CAROL, SERVER_IDENTITY
from tests.test_tap import freePort, spawnTwistd, twistedVersion, waitForPort


def spawnXTMP(testCase, directory, *args):
    """
    Start C{twistd -n muxframe xtmp ARGS} in C{directory}; handlers are
    imported from there (the current directory is on the path of
    C{python -c}, as PYTHONPATH would put an application's).
    """
    return spawnTwistd(testCase, "xtmp", "xtmp", *args, cwd=directory)


APP = '''
"""Handlers of the test application, imported by twistd from PYTHONPATH."""
import threading

def submit(session, message):
    return b"accepted:" + message.payload + b":by:" + session.identity.name.encode()

def audit(session, message):
    # A blocking handler: runs in the router's thread pool.
    return threading.current_thread().name.encode()

def slow(session, message):
    # A blocking handler that takes its time (a drain waits for it).
    import time
    time.sleep(float(message.payload))
    return b"slept"
'''


def authorizedKeys(named):
    return b"".join(b"name: %s\n" % name.encode() + key.public.toPEM()
                    for name, key in named)


def writeSetup(directory, port, extra=None, password=b"s3cret"):
    """
    Identity, authorized_keys (alice, bob), the app module and a config
    in C{directory}; return the config's path.
    """
    os.makedirs(directory, exist_ok=True)
    SERVER_IDENTITY.savePEM(os.path.join(directory, "server.pem"), password)
    with open(os.path.join(directory, "server.pass"), "wb") as f:
        f.write(password + b"\n")
    with open(os.path.join(directory, "authorized_keys"), "wb") as f:
        f.write(authorizedKeys([("alice", ALICE), ("bob", BOB)]))
    with open(os.path.join(directory, "xtmpapp.py"), "w") as f:
        f.write(APP)
    config = {
        "server": {"endpoint": "tcp:%d:interface=127.0.0.1" % (port,),
                   "identity": "server.pem",
                   "identity_password_file": "server.pass",
                   "authorized_keys": "authorized_keys",
                   "max_connections": 100, "max_connections_per_client": 20,
                   "drain_timeout": 5},
        "xtmp_protocol": {"heartbeat_interval": 30, "session_timeout": 3600,
                          "max_payload_size": 16777216},
        "security": {"key_rotation_interval": 86400, "max_failed_attempts": 3},
        "handlers": {0x20: "xtmpapp:submit",
                     0x21: {"handler": "xtmpapp:audit", "blocking": True}},
        "permissions": {"bob": {"publish": {"deny": ["orders.>"]}}},
    }
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    path = os.path.abspath(os.path.join(directory, "xtmp-server.yaml"))
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def parse(*argv):
    options = XTMPOptions()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """
    C{twistd muxframe xtmp} options: the file, options over it, and usage
    errors naming the key.
    """

    def setUp(self):
        import sys
        self.directory = self.mktemp()
        self.path = writeSetup(self.directory, 8090)
        # As twistd would find it on PYTHONPATH.
        sys.path.insert(0, os.path.abspath(self.directory))
        self.addCleanup(sys.path.remove, os.path.abspath(self.directory))
        self.addCleanup(sys.modules.pop, "xtmpapp", None)

    def test_configAndOverrides(self):
        top = tap.Options()
        top.parseOptions(["xtmp", "--config", self.path, "--max-connections=7",
                          "--heartbeat-interval=5",
                          "--handler", "0x22=xtmpapp:submit",
                          "--permission", "alice:subscribe:deny:secret.>"])
        c = top.subOptions.config
        self.assertEqual(top.subCommand, "xtmp")
        self.assertEqual(c["server.max_connections"], 7)
        self.assertEqual(c["xtmp_protocol.heartbeat_interval"], 5)
        self.assertEqual(c["server.max_connections_per_client"], 20)
        self.assertEqual(sorted(h.messageType for h in c.handlers),
                         [0x20, 0x21, 0x22])
        self.assertIsNotNone(c.permissions.forIdentity("alice"))

    def test_designExampleWithOptions(self):
        """
        The design documents' configuration runs once the options give
        what it lacks (an identity) and keep the endpoint on loopback.
        """
        path = os.path.join(self.directory, "design.yaml")
        with open(path, "w") as f:
            f.write(DESIGN_EXAMPLE)
        options = parse("--config", path, "--identity",
                        os.path.join(self.directory, "server.pem"),
                        "--identity-password-file",
                        os.path.join(self.directory, "server.pass"),
                        "--endpoint", "tcp:0:interface=127.0.0.1")
        c = options.config
        self.assertEqual(c["server.endpoint"], ["tcp:0:interface=127.0.0.1"])
        self.assertEqual(c["message_routing.bundle_handler_threads"], 8)
        self.assertIn("http_cage_protocol", dict(c.ignored))

    def test_usageErrorsNameTheKey(self):
        broken = os.path.join(self.directory, "broken_keys")
        with open(broken, "w") as f:
            f.write("-----BEGIN PUBLIC KEY-----\nnot a key\n"
                    "-----END PUBLIC KEY-----\n")
        cases = [
            (["--config", self.path, "--max-connections=lots"],
             "--max-connections"),
            (["--config", self.path, "--handler", "0x30=nosuch.module:f"],
             "--handler"),
            (["--config", self.path, "--endpoint", "bogus:thing"],
             "server.endpoint"),
            (["--config", self.path, "--identity-password-file",
              os.path.join(self.directory, "nothing")],
             "server.identity_password_file"),
            (["--config", self.path, "--authorized-keys", broken],
             "server.authorized_keys"),
            ([], "server.identity"),
        ]
        for argv, key in cases:
            e = self.assertRaises(usage.UsageError, parse, *argv)
            if key:
                self.assertIn(key, str(e))
        for path in ("/\u00e9", "/x?y", "/a b"):
            # A path twisted.web can never match (or, not ASCII, could not
            # even listen with: a traceback at startup) is a usage error.
            e = self.assertRaises(usage.UsageError, parse, "--config",
                                  self.path, "--endpoint",
                                  "ws:tcp:0:path=" + path)
            self.assertIn("path must be printable ASCII", str(e))
            self.assertIn(repr(path), str(e))
        with open(os.path.join(self.directory, "server.pass"), "wb") as f:
            f.write(b"wrong")
        e = self.assertRaises(usage.UsageError, parse, "--config", self.path)
        self.assertIn("server.identity", str(e))

    def test_numberMessages(self):
        """
        A value that is not a number is refused with the message the docs
        quote; a leading zero is decimal.
        """
        for argv, message in [
                (["--max-connections=lots"],
                 "--max-connections: expected an integer, got 'lots'"),
                (["--max-connections=1e3"],
                 "--max-connections: expected an integer, got '1e3'"),
                (["--heartbeat-interval=soon"],
                 "--heartbeat-interval: expected a number, got 'soon'")]:
            e = self.assertRaises(usage.UsageError, parse, "--config",
                                  self.path, *argv)
            self.assertIn(message, str(e))
        top = tap.Options()
        top.parseOptions(["xtmp", "--config", self.path,
                          "--max-connections=010"])
        self.assertEqual(top.subOptions.config["server.max_connections"], 10)

    def test_unknownKeyInFile(self):
        with open(self.path, "a") as f:
            f.write("broker:\n  max_pendng: 5\n")
        e = self.assertRaises(usage.UsageError, parse, "--config", self.path)
        self.assertIn("broker.max_pendng", str(e))


def clientFactory(identity):
    return XTMPClientFactory(serverKey=SERVER_IDENTITY.public,
                             identity=identity, resume=False)


class SignalTests(TestCase):
    """
    When the role (C{installSignals}) takes its signals.
    """

    @inlineCallbacks
    def test_takenBeforeListening(self):
        """
        SIGHUP and SIGTERM are the service's once its ports listen, before
        the reactor runs its start-up: a client sees a started server as
        soon as a port takes connections, and a SIGHUP then reloads where
        its default action killed the process (the role's admin test lost
        the process this way: connection refused after the signal).
        """
        import signal
        import sys

        from muxframe.server.config import ServerConfig
        from muxframe.server.service import XTMPServerService
        directory = os.path.abspath(self.mktemp())
        config = ServerConfig.fromFile(writeSetup(directory, 0))
        self.patch(sys, "path", [directory] + sys.path)
        self.addCleanup(sys.modules.pop, "xtmpapp", None)
        for number in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        main = XTMPServerService(config, reactor, installSignals=True)
        reloads = []
        main.reload = lambda: reloads.append(True)
        main.privilegedStartService()
        for listener in main._listeners:
            self.addCleanup(listener.inner.stopService)
        ports = yield DeferredList([l.inner._waitingForPort
                                    for l in main._listeners])
        self.assertTrue(all(ok for ok, _ in ports))
        self.assertEqual(signal.getsignal(signal.SIGHUP), main._sighup)
        self.assertEqual(signal.getsignal(signal.SIGTERM), main._sigterm)
        os.kill(os.getpid(), signal.SIGHUP)
        yield waitFor(lambda: reloads, seconds=5, what="the reload")
        self.assertEqual(reloads, [True])

    def test_takenBeforeListeningUnderTwist(self):
        """
        twist (unlike twistd) never calls privilegedStartService: its
        ports listen in startService, before the reactor runs, and the
        signals are the service's by then too.
        """
        import atexit
        import signal
        import sys

        from twisted.internet.testing import MemoryReactorClock

        from muxframe.server.config import ServerConfig
        from muxframe.server.service import XTMPServerService
        directory = os.path.abspath(self.mktemp())
        config = ServerConfig.fromFile(writeSetup(
            directory, 0, {"storage": {"engine": "none"}}))
        self.patch(sys, "path", [directory] + sys.path)
        self.addCleanup(sys.modules.pop, "xtmpapp", None)
        for number in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.patch(atexit, "register", lambda f: f)
        notRunning = MemoryReactorClock()
        main = XTMPServerService(config, notRunning, installSignals=True)
        main.startService()
        self.assertEqual(len(notRunning.tcpServers), 1)
        self.assertEqual(signal.getsignal(signal.SIGHUP), main._sighup)
        self.assertEqual(signal.getsignal(signal.SIGTERM), main._sigterm)
        self.assertEqual(signal.getsignal(signal.SIGINT), main._sigterm)


class ReloadTests(SynchronousTestCase):
    """
    L{XTMPServerService.reload} (SIGHUP) in process.
    """

    def test_noKeysLeftWarns(self):
        """
        A reload that finds no key in authorized_keys (emptied, or garbage:
        its other text is ignored) applies it, and warns that every key's
        sessions go.
        """
        import sys

        from twisted.logger import globalLogPublisher

        from muxframe.server.config import ServerConfig
        from muxframe.server.service import XTMPServerService
        directory = os.path.abspath(self.mktemp())
        config = ServerConfig.fromFile(writeSetup(directory, 0))
        self.patch(sys, "path", [directory] + sys.path)
        self.addCleanup(sys.modules.pop, "xtmpapp", None)
        main = XTMPServerService(config, reactor, installSignals=False)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        with open(os.path.join(directory, "authorized_keys"), "w") as f:
            f.write("garbage\n")
        outcome = main.reload()
        self.assertEqual(outcome["keys"][:2], (0, 2))
        warned = [e for e in events if "has no keys now" in
                  e.get("log_format", "")]
        self.assertEqual(len(warned), 1)
        self.assertEqual(warned[0]["path"],
                         os.path.join(directory, "authorized_keys"))
        # Nothing to warn about when there were none before.
        events[:] = []
        main.reload()
        self.assertFalse([e for e in events if "has no keys now" in
                          e.get("log_format", "")])


class TwistdTests(TestCase):
    """
    The role as a real twistd process.
    """

    timeout = 120

    @inlineCallbacks
    def test_signalsWhileDraining(self):
        """
        SIGTERM drains; another SIGTERM, or SIGINT, while it drains is one
        line, and the drain goes on: the handler in progress answers, the
        exit status is 0, nothing raises.
        """
        directory = self.mktemp()
        port = freePort()
        path = writeSetup(directory, port)
        process = spawnXTMP(self, directory, "--config", path, "--handler",
                            "0x22=xtmpapp:slow,blocking")
        yield waitForPort(port, process)
        alice = yield connectXTMP(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                  clientFactory(ALICE))
        answer = alice.request(0x22, b"1.5", timeout=30)
        yield deferLater(reactor, 0.3, lambda: None)
        for name in ("TERM", "TERM", "INT"):
            process.transport.signalProcess(name)
            yield deferLater(reactor, 0.1, lambda: None)
        reply = yield answer
        self.assertEqual(reply.payload, b"slept")
        code = yield process.ended
        text = process.text()
        self.assertEqual(code, 0, text)
        self.assertEqual(text.count("SIGTERM: draining the xtmp server"), 1)
        self.assertIn("SIGTERM: already draining", text)
        self.assertIn("SIGINT: already draining", text)
        self.assertNotIn("Traceback", text)
        self.assertNotIn("ReactorNotRunning", text)

    @inlineCallbacks
    def test_storageInUse(self):
        """
        A second server on a storage directory in use exits 1 with one
        line naming it, before serving anyone; the first goes on.
        """
        directory = self.mktemp()
        storage = os.path.abspath(os.path.join(directory, "data"))
        first, second = freePort(), freePort()
        path = writeSetup(directory, first, {"storage": {
            "engine": "embedded", "directory": storage}})
        running = spawnXTMP(self, directory, "--config", path)
        yield waitForPort(first, running)
        other = spawnXTMP(self, directory, "--config", path, "--endpoint",
                          "tcp:%d:interface=127.0.0.1" % (second,))
        code = yield other.ended
        self.assertEqual(code, 1, other.text())
        self.assertIn("muxframe xtmp: storage.directory: %s is in use by "
                      "another engine" % (storage,), other.text())
        self.assertNotIn("Traceback", other.text())
        self.assertTrue(running.running)
        running.transport.signalProcess("TERM")
        code = yield running.ended
        self.assertEqual(code, 0, running.text())

    @inlineCallbacks
    def test_storageUnusable(self):
        """
        Storage that fails to recover stops the server with one critical
        line naming the fault and exit status 1 (not 0: a supervisor must
        see a failure).
        """
        directory = self.mktemp()
        storage = os.path.join(directory, "data")
        os.makedirs(os.path.join(storage, "journal"))
        with open(os.path.join(storage, "journal", "%020d.log" % (0,)),
                  "wb") as f:
            f.write(b"not a journal at all")
        path = writeSetup(directory, freePort(), {"storage": {
            "engine": "embedded", "directory": "data"}})
        process = spawnXTMP(self, directory, "--config", path)
        code = yield process.ended
        self.assertEqual(code, 1, process.text())
        self.assertIn("storage failed to start (embedded engine): segment",
                      process.text())
        self.assertIn("is not a journal segment; stopping", process.text())
        self.assertNotIn("Traceback", process.text())

    @inlineCallbacks
    def logLevel(self, *args):
        """
        Run the role with C{args}, open and close three connections without
        a handshake, stop it; return its output.
        """
        from twisted.internet.endpoints import connectProtocol
        from twisted.internet.protocol import Protocol
        directory = self.mktemp()
        port = freePort()
        path = writeSetup(directory, port)
        process = spawnXTMP(self, directory, "--config", path, *args)
        yield waitForPort(port, process)
        for _ in range(3):
            p = yield connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
            p.transport.loseConnection()
        yield deferLater(reactor, 0.5, lambda: None)
        process.transport.signalProcess("TERM")
        yield process.ended
        return process.text()

    @inlineCallbacks
    def test_logLevel(self):
        """
        The role writes muxframe's events from info up (a connection closed
        during its handshake is a debug line: not written), and from
        C{logging.level} (C{--log-level}) when given.
        """
        text = yield self.logLevel()
        self.assertIn("xtmp server on", text)
        self.assertNotIn("closed during the handshake", text)
        text = yield self.logLevel("--log-level", "debug")
        # (Three, and the one waitForPort made.)
        self.assertEqual(text.count("closed during the handshake"), 4, text)

    @inlineCallbacks
    def test_serverEndToEnd(self):
        """
        Clients with keys from authorized_keys get configured handlers
        (one blocking), wildcard and queue-group fan-out, request/reply
        between two clients with "no responders"; SIGHUP revokes a key
        removed from the file; SIGTERM disconnects everyone with
        GOING_AWAY and twistd exits 0.
        """
        directory = self.mktemp()
        port = freePort()
        path = writeSetup(directory, port)
        server = spawnXTMP(self, directory, "--config", path)
        yield waitForPort(port, server)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)

        alice = yield connectXTMP(endpoint, clientFactory(ALICE))
        bob = yield connectXTMP(endpoint, clientFactory(BOB))
        worker1 = yield connectXTMP(endpoint, clientFactory(BOB))
        worker2 = yield connectXTMP(endpoint, clientFactory(BOB))

        # Handlers from the config (0x21 runs in a thread).
        reply = yield alice.request(0x20, b"b1", timeout=10)
        self.assertEqual(reply.payload, b"accepted:b1:by:alice")
        reply = yield alice.request(0x21, b"", timeout=10)
        self.assertIn(b"muxframe-xtmp-handlers", reply.payload)
        error = yield alice.request(0x30, b"", timeout=10).addErrback(
            lambda f: f.value)
        self.assertEqual(error.code, XTMPErrorCode.UNKNOWN_TYPE)

        # An unknown key is refused.
        carol = clientFactory(CAROL)
        failed = yield connectXTMP(endpoint, carol).addCallback(
            lambda p: p.whenClosed()).addErrback(lambda f: f.value)
        self.assertEqual(failed.code, XTMPErrorCode.UNAUTHORIZED)

        # Fan-out: wildcard subscribers and a queue group.
        got = {"star": [], "rest": [], "w1": [], "w2": []}
        yield DeferredList([
            bob.subscribe("orders.*", lambda m: got["star"].append(m.streamName)),
            bob.subscribe("orders.>", lambda m: got["rest"].append(m.payload)),
            worker1.subscribe("orders.>", lambda m: got["w1"].append(m.payload),
                              group="workers"),
            worker2.subscribe("orders.>", lambda m: got["w2"].append(m.payload),
                              group="workers"),
        ], fireOnOneErrback=True)
        for n in range(10):
            alice.publish("orders.eu.%d" % n if n % 2 else "orders.new",
                          b"%d" % n)
        for _ in range(200):
            if len(got["rest"]) == 10 and len(got["w1"]) + len(got["w2"]) == 10:
                break
            yield deferLater(reactor, 0.02)
        self.assertEqual(got["star"], ["orders.new"] * 5)
        self.assertEqual(sorted(got["rest"]), sorted(b"%d" % n for n in range(10)))
        self.assertEqual(sorted(got["w1"] + got["w2"]), sorted(got["rest"]))
        self.assertEqual(len(got["w1"]), 5)
        # bob may not publish on orders.> (permissions in the config).
        denied = []
        bob.errorReceived = lambda code, reason: denied.append(code)
        bob.publish("orders.new", b"nope")

        # Request/reply between two clients through the server.
        worker1.subscribe("svc.clock", lambda m: worker1.respond(
            m, b"tick:" + m.payload), group="clocks")
        yield deferLater(reactor, 0.2)
        answer = yield alice.request(0x41, b"now", subject="svc.clock",
                                     timeout=10)
        self.assertEqual(answer.payload, b"tick:now")
        nobody = yield alice.request(0x41, b"", subject="svc.none",
                                     timeout=10).addErrback(lambda f: f.value)
        self.assertIsInstance(nobody, PeerError)
        self.assertEqual(nobody.code, XTMPErrorCode.NO_RESPONDERS)
        self.assertEqual(denied, [XTMPErrorCode.PERMISSION_DENIED])

        # SIGHUP: bob removed from authorized_keys loses his sessions.
        with open(os.path.join(directory, "authorized_keys"), "wb") as f:
            f.write(authorizedKeys([("alice", ALICE)]))
        closed = [p.whenClosed() for p in (bob, worker1, worker2)]
        server.transport.signalProcess("HUP")
        reasons = yield DeferredList(closed)
        self.assertEqual({r.code for _, r in reasons},
                         {XTMPErrorCode.KEY_REVOKED})
        self.assertTrue(server.running)
        # (The reload logs its line after it has disconnected the sessions,
        # whose Disconnects leave at once: the line may reach us after the
        # closes do.)
        yield waitFor(lambda: "reloaded credentials" in server.text(),
                      what="the reload's log line")

        # SIGTERM: alice is told GOING_AWAY (a clean close), twistd exits 0.
        aliceClosed = alice.whenClosed()
        server.transport.signalProcess("TERM")
        why = yield aliceClosed
        self.assertIsInstance(why, ConnectionDone)
        code = yield server.ended
        text = server.text()
        self.assertEqual(code, 0, text[-3000:])
        self.assertIsNone(server.signal)
        self.assertIn("Server Shut Down.", text)
        self.assertIn("sessions drained", text)
        self.assertNotIn("Traceback", text)
        self.assertIn("authentication from 127.0.0.1:", text)

    @inlineCallbacks
    def test_usageErrorExits(self):
        directory = self.mktemp()
        path = writeSetup(directory, freePort(), {"server": {"max_conections": 1}})
        process = spawnXTMP(self, directory, "--config", path)
        code = yield process.ended
        self.assertIn("server.max_conections", process.text())
        # twistd before Twisted 26.10 exits 0 after any usage error.
        if (twistedVersion.major, twistedVersion.minor) >= (26, 10):
            self.assertNotEqual(code, 0)
