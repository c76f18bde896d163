"""
The demo's XTMP part (C{python3 -m muxframe.demo --part xtmp}): the XTMP
messaging server as its operators run it, one real C{twistd -n muxframe
xtmp} on 127.0.0.1, set up in a temporary directory with C{muxframe-xtmp
keygen} and C{authorize}, the embedded storage engine, the admin service
(a bearer token file) and L{digest} as a handler.

From this process (Twisted's reactor in a thread of its own; the Python
API of L{muxframe.xtmp} and L{muxframe.messaging.client}) alice, bob and
carol open encrypted sessions, the server's key pinned: publish/subscribe
(C{demo.news.>}), requests to L{digest} and to alice (C{demo.upper}), a
durable message to carol while she is offline, delivered once when her
device binds, with receipts back to bob.  Then C{/health} and C{/metrics}
with the token (and C{/health} without: 401), and SIGTERM: the server
must drain the sessions and exit 0.  L{run} returns 0 when every check
held, else 1, having said which failed and why.
"""

import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from muxframe.demo import (
    childEnvironment, freePort, readLog, showCommand, twistdArgv, waitForLog)
from muxframe.messaging.client import MessagingClient
from muxframe.xtmp import (
    Cipher, Identity, MessageType, PublicIdentity, XTMPClientFactory, connectXTMP)

#: The message type L{digest} serves in the demo's server (an application
#: type XTMP leaves free).
DIGEST = 0x60

CLIENTS = ("alice", "bob", "carol")

# Publications from bob to alice.
NEWS = 20

CONFIG = """\
# Written by python3 -m muxframe.demo (docs/xtmp-server.md section 3).
server:
  endpoint: "tcp:{port}:interface=127.0.0.1"
  identity: server.pem
  authorized_keys: authorized_keys
  drain_timeout: 5
storage:
  engine: embedded
  directory: data
admin:
  endpoint: "tcp:{admin}:interface=127.0.0.1"
  token_file: admin.token
handlers:
  {digest:#04x}: "muxframe.xtmpdemo:digest"
"""


def digest(session, message):
    """
    The demo server's handler for L{DIGEST}: answer with the SHA-256 of the
    request's payload, in hex.
    """
    return hashlib.sha256(message.payload).hexdigest().encode("ascii")


class DemoFailure(Exception):
    """
    A check of the demo did not hold; the message says which, and why.
    """


def check(condition, reason):
    """
    Raise L{DemoFailure} with C{reason} unless C{condition}.
    """
    if not condition:
        raise DemoFailure(reason)


def _cli(workdir, *args):
    """
    Start C{muxframe-xtmp ARGS} (as C{python3 -m muxframe.cli}, which is
    the same and needs no installed script) in C{workdir}.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "muxframe.cli"] + list(args), cwd=workdir,
        env=childEnvironment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _finish(process, what, seconds=60):
    """
    Wait for a L{_cli} process; its standard output, or L{DemoFailure}.
    """
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise DemoFailure("muxframe-xtmp %s did not finish in %d s" % (what, seconds))
    check(process.returncode == 0, "muxframe-xtmp %s exited %s: %s" % (
        what, process.returncode, (err or out).strip()))
    return out


def _get(url, token=None):
    """
    C{GET url} (with the bearer C{token}); C{(status, body)}.
    """
    headers = {"Authorization": "Bearer " + token} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        raise DemoFailure("GET %s: %s" % (url, e))


def _metric(text, name):
    """
    The value of the unlabelled sample C{name} in Prometheus text C{text}.
    """
    match = re.search(r"^%s (\S+)$" % (re.escape(name),), text, re.M)
    check(match is not None, "/metrics has no sample %s" % (name,))
    return float(match.group(1))


class _Sessions:
    """
    The demo's XTMP clients, on Twisted's reactor in a thread of its own.
    The main thread calls each step with L{call}; a step's Deferred is
    bounded by a timeout.
    """

    def __init__(self, port, serverKey, keys, logPath):
        from twisted.internet import reactor
        from twisted.logger import globalLogBeginner, textFileLogObserver
        # The clients' own log, for a failure's post-mortem.
        self._logFile = open(logPath, "a", encoding="utf-8")
        globalLogBeginner.beginLoggingTo([textFileLogObserver(self._logFile)],
                                         redirectStandardIO=False)
        self.reactor = reactor
        self.port = port
        self.serverKey = serverKey
        self.keys = keys
        self.protocols = {}
        self._thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
        self._thread.start()

    def call(self, what, step, *args, seconds=15):
        """
        Run C{step(*args)} on the reactor thread and wait (at most
        C{seconds}) for its result; L{DemoFailure} naming C{what} if it
        fails or times out.
        """
        outcomes = queue.Queue()

        def bounded():
            d = defer.maybeDeferred(step, *args).addTimeout(seconds, self.reactor)
            d.addBoth(outcomes.put)
        self.reactor.callFromThread(bounded)
        try:
            # A little longer than the step's own timeout, in case the
            # reactor thread itself is stuck.
            outcome = outcomes.get(timeout=seconds + 5)
        except queue.Empty:
            raise DemoFailure("%s: the clients' reactor did not answer" % (what,))
        if not isinstance(outcome, Failure):
            return outcome
        error = outcome.value
        if isinstance(error, defer.TimeoutError):
            raise DemoFailure("%s: nothing within %d s" % (what, seconds))
        if isinstance(error, DemoFailure):
            raise DemoFailure("%s: %s" % (what, error))
        raise DemoFailure("%s: %s: %s" % (what, type(error).__name__, error))

    def stop(self):
        """
        Stop the reactor and its thread.
        """
        if self._thread.is_alive():
            self.reactor.callFromThread(self.reactor.stop)
            self._thread.join(10)
        self._logFile.flush()

    def _until(self, condition, what, seconds=10.0):
        """
        A Deferred firing once C{condition()} holds (polled), or failing
        with L{DemoFailure} (no C{what} within C{seconds}); cancelling it
        stops the polling.
        """
        deadline = time.monotonic() + seconds
        pending = [None]
        done = defer.Deferred(lambda d: pending[0].cancel())

        def poll():
            if condition():
                done.callback(None)
            elif time.monotonic() > deadline:
                done.errback(DemoFailure("no %s within %.0f s" % (what, seconds)))
            else:
                pending[0] = self.reactor.callLater(0.02, poll)
        poll()
        return done

    def _pause(self, seconds):
        return deferLater(self.reactor, seconds, lambda: None)

    def connect(self, name):
        """
        Open a session as C{name}; a Deferred firing with its session id
        and cipher.
        """
        factory = XTMPClientFactory(serverKey=self.serverKey, identity=self.keys[name],
                                    resume=False)
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port, timeout=10)

        def connected(protocol):
            self.protocols[name] = protocol
            return {"session": "0x%016x" % (protocol.sessionId,),
                    "cipher": Cipher.describe(protocol.result.cipher)}
        return connectXTMP(endpoint, factory).addCallback(connected)

    def publishSubscribe(self, count):
        """
        alice subscribes to C{demo.news.>}, bob publishes C{count}
        messages on two subjects under it; a Deferred firing with what
        was sent and what alice got, as C{(subject, payload)} lists.
        """
        alice, bob = self.protocols["alice"], self.protocols["bob"]
        got = []
        sent = [("demo.news.%s" % (("eu", "us")[n % 2],), b"news item %d" % (n,))
                for n in range(count)]

        @defer.inlineCallbacks
        def steps():
            yield alice.subscribe("demo.news.>",
                                  lambda m: got.append((m.streamName, m.payload)))
            for subject, payload in sent:
                bob.publish(subject, payload)
            yield self._until(lambda: len(got) >= count, "%d messages for alice" % (count,))
            # Anything more would come soon after.
            yield self._pause(0.1)
            return sent, got
        return steps()

    def askHandler(self, payload):
        """
        bob's request to the server's handler for L{DIGEST}; a Deferred
        firing with the answer's payload.
        """
        d = self.protocols["bob"].request(DIGEST, payload, timeout=10)
        return d.addCallback(lambda reply: reply.payload)

    def askSession(self, payload):
        """
        alice serves C{demo.upper} (in a queue group), answering with the
        payload upper-cased; bob requests it; a Deferred firing with the
        answer's payload.
        """
        alice, bob = self.protocols["alice"], self.protocols["bob"]

        @defer.inlineCallbacks
        def steps():
            yield alice.subscribe("demo.upper", lambda m: alice.respond(
                m, m.payload.upper()), group="uppers")
            reply = yield bob.request(MessageType.EventStream, payload,
                                      subject="demo.upper", timeout=10)
            return reply.payload
        return steps()

    def durable(self, payload):
        """
        bob (device laptop) sends carol, offline, C{payload}; then carol's
        device phone connects and binds, gets it and marks it read; bob
        gets the receipts; carol's phone reconnects and gets nothing
        again.  A Deferred firing with what happened, as a dict.
        """
        outcome = {"messages": [], "receipts": [], "again": []}

        @defer.inlineCallbacks
        def steps():
            bob = MessagingClient("laptop")
            bob.onReceipt = lambda r: outcome["receipts"].append(r.signal_lifecycle_state)
            yield bob.attach(self.protocols["bob"])
            sent = yield bob.send("carol", payload, messageId="demo-1")
            outcome["sent"] = sent
            outcome["carolSession"] = yield self.connect("carol")
            carol = MessagingClient("phone")
            carol.onMessage = outcome["messages"].append
            yield carol.attach(self.protocols["carol"])
            yield self._until(lambda: outcome["messages"], "message for carol")
            carol.markRead(outcome["messages"][0].signal_offset)
            yield self._until(lambda: len(outcome["receipts"]) >= 2, "receipts for bob")
            yield self._pause(0.1)
            # The phone again, as a fresh client: the server knows its
            # queue position.
            first = self.protocols["carol"]
            closed = first.whenClosed()
            first.disconnect()
            yield closed
            yield self.connect("carol")
            again = MessagingClient("phone")
            again.onMessage = outcome["again"].append
            outcome["rebound"] = yield again.attach(self.protocols["carol"])
            yield self._pause(0.3)
            return outcome
        return steps()

    def watchEnds(self):
        """
        Note why each open session ends, in C{self.ends} by name.
        """
        self.ends = {}

        def ended(reason, name):
            self.ends[name] = reason
        for name, protocol in self.protocols.items():
            protocol.whenClosed().addCallback(ended, name)

    def ended(self):
        """
        A Deferred firing with L{watchEnds}'s reasons once every session
        ended.
        """
        return self._until(lambda: len(self.ends) == len(self.protocols),
                           "end of every session").addCallback(lambda _: dict(self.ends))


def run(out=sys.stdout):
    """
    Run the XTMP part of the demo; return the exit status (0: every check
    held and the server exited 0 after SIGTERM).
    """
    def say(text=""):
        print(text, file=out, flush=True)

    workdir = tempfile.mkdtemp(prefix="muxframe-demo-xtmp-")
    logPath = os.path.join(workdir, "xtmp.log")
    process = sessions = None
    ok = False
    try:
        say("muxframe demo: the XTMP messaging server, a twistd process with "
            "storage and an admin service")
        fingerprint = _makeKeys(workdir, say)
        port, adminPort, token = _configure(workdir, say)
        process = _startServer(workdir, port, adminPort, say)
        keys = {name: Identity.loadPEM(os.path.join(workdir, name + ".pem"))
                for name in CLIENTS}
        serverKey = PublicIdentity.loadPEM(os.path.join(workdir, "server.pub"))
        check(serverKey.fingerprint == fingerprint,
              "server.pub's fingerprint is not the one keygen printed")
        sessions = _Sessions(port, serverKey, keys, os.path.join(workdir, "clients.log"))
        _exchange(sessions, say)
        _askAdmin(adminPort, token, say)
        ok = True
    except DemoFailure as e:
        say("demo failed: %s" % (e,))
    except Exception as e:
        say("demo failed: %s: %s" % (type(e).__name__, e))
    finally:
        ok = _stop(process, sessions, logPath, say) and ok
    say("demo %s" % ("succeeded" if ok else "FAILED (logs in %s)" % (workdir,)))
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def _makeKeys(workdir, say):
    """
    The server's identity and the clients' keys with C{muxframe-xtmp
    keygen}, the clients named in C{authorized_keys} with C{muxframe-xtmp
    authorize}; return the server's fingerprint.
    """
    keygens = [(name, _cli(workdir, "keygen", name, "--json"))
               for name in ("server",) + CLIENTS]
    made = {name: json.loads(_finish(p, "keygen " + name)) for name, p in keygens}
    for name in CLIENTS:
        _finish(_cli(workdir, "authorize", name + ".pub", "--name", name,
                     "-f", "authorized_keys"), "authorize " + name)
    fingerprint = made["server"]["fingerprint"]
    say("  keys:   muxframe-xtmp keygen NAME -> NAME.pem, NAME.pub, for %s "
        "(server fingerprint %s...)" % (", ".join(("server",) + CLIENTS), fingerprint[:16]))
    say("          muxframe-xtmp authorize NAME.pub --name NAME -f authorized_keys, "
        "for %s" % (", ".join(CLIENTS),))
    return fingerprint


def _configure(workdir, say):
    """
    Write the admin token and the configuration; return C{(port,
    adminPort, token)}.
    """
    port, adminPort = freePort(), freePort()
    token = secrets.token_urlsafe(32)
    with open(os.open(os.path.join(workdir, "admin.token"),
                      os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(token + "\n")
    with open(os.path.join(workdir, "xtmp-server.yaml"), "w") as f:
        f.write(CONFIG.format(port=port, admin=adminPort, digest=DIGEST))
    say("  config: xtmp-server.yaml: XTMP on 127.0.0.1:%d, storage embedded in "
        "data/, admin on 127.0.0.1:%d (token in admin.token), handler for %#04x"
        % (port, adminPort, DIGEST))
    return port, adminPort, token


def _startServer(workdir, port, adminPort, say):
    """
    Start C{twistd -n muxframe xtmp} and wait until both its endpoints
    listen; return the process.
    """
    logPath = os.path.join(workdir, "xtmp.log")
    outPath = os.path.join(workdir, "xtmp.out")
    argv = twistdArgv("--logfile=xtmp.log", "muxframe", "xtmp",
                      "--config", "xtmp-server.yaml")
    say("  server: %s" % (showCommand(argv),))
    started = time.monotonic()
    # Usage errors (a bad configuration) go to standard error, before the
    # log opens.
    with open(outPath, "wb") as output:
        process = subprocess.Popen(argv, cwd=workdir, env=childEnvironment(),
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        for listening in (port, adminPort):
            waitForLog("starting on %d" % (listening,), [("xtmp", process, logPath)], 30)
    except RuntimeError as e:
        if process.poll() is None:
            process.kill()
            process.wait()
            raise DemoFailure("%s (the server was killed)" % (e,))
        # twistd prints its usage before a usage error's reason.
        said = (readLog(outPath) + readLog(logPath)).strip().splitlines()
        raise DemoFailure("the xtmp server exited (%s) before listening: %s" % (
            process.returncode, said[-1] if said else "(it said nothing)"))
    say("  up in %.1f s: XTMP and admin listening" % (time.monotonic() - started,))
    return process


def _exchange(sessions, say):
    """
    The XTMP sessions' part: publish/subscribe, requests to a handler and
    to a session, a durable message to an offline entity.
    """
    say("")
    say("sessions (muxframe.xtmp in this process; the server's key pinned, "
        "the clients' keys authorized):")
    for name in ("alice", "bob"):
        info = sessions.call(name + "'s session", sessions.connect, name)
        say("  %-5s session %s, %s" % (name, info["session"], info["cipher"]))

    sent, got = sessions.call("publish/subscribe", sessions.publishSubscribe, NEWS)
    check(got == sent, "alice got %d messages, not bob's %d in order: %r"
          % (len(got), len(sent), got[:3]))
    say("  publish/subscribe: bob published %d messages on demo.news.eu and "
        "demo.news.us; alice (demo.news.>) got %d of %d, in order -> verified"
        % (len(sent), len(got), len(sent)))

    payload = b"the demo's request"
    answer = sessions.call("request to the handler", sessions.askHandler, payload)
    expected = hashlib.sha256(payload).hexdigest().encode("ascii")
    check(answer == expected, "the handler answered %r, not %r" % (answer, expected))
    say("  request to a server handler: bob -> type %#04x (muxframe.xtmpdemo:digest) "
        "-> sha256 %s... -> verified" % (DIGEST, answer[:16].decode("ascii")))

    payload = b"hello alice"
    answer = sessions.call("request to a session", sessions.askSession, payload)
    check(answer == payload.upper(), "alice answered %r, not %r"
          % (answer, payload.upper()))
    say("  request to a session: bob -> subject demo.upper -> alice answered %r "
        "-> verified" % (answer.decode("ascii"),))

    payload = b"a message for carol"
    outcome = sessions.call("durable message", sessions.durable, payload, seconds=30)
    sentSignal, messages = outcome["sent"], outcome["messages"]
    check(len(messages) == 1, "carol got %d messages, not 1" % (len(messages),))
    message = messages[0]
    check((message.payload, message.from_.eid, message.signal_offset)
          == (payload, "bob", sentSignal.signal_offset),
          "carol got %r from %s at offset %d, not bob's %r at offset %d" % (
              message.payload, message.from_.eid, message.signal_offset,
              payload, sentSignal.signal_offset))
    check(outcome["receipts"] == ["delivered", "read"],
          "bob's receipts: %r, not delivered and read" % (outcome["receipts"],))
    check(outcome["again"] == [], "carol got %d messages again"
          % (len(outcome["again"]),))
    check(outcome["rebound"].read == sentSignal.signal_offset,
          "carol's phone's read position is %d after reconnecting"
          % (outcome["rebound"].read,))
    say("  durable queue: bob -> carol, offline: stored at offset %d of carol's "
        "queue (SENT)" % (sentSignal.signal_offset,))
    say("    carol's phone bound (session %s): got %r from bob once -> verified; "
        "bob's receipts: %s" % (outcome["carolSession"]["session"],
                                message.payload.decode("ascii"),
                                ", ".join(outcome["receipts"])))
    say("    carol's phone reconnected: nothing delivered again (read up to "
        "offset %d)" % (outcome["rebound"].read,))


def _askAdmin(adminPort, token, say):
    """
    C{/health} with the token and without, and two numbers of C{/metrics}.
    """
    base = "http://127.0.0.1:%d" % (adminPort,)
    say("")
    say("admin service on 127.0.0.1:%d (Authorization: Bearer, the token in "
        "admin.token):" % (adminPort,))
    status, body = _get(base + "/health", token)
    health = json.loads(body)
    check((status, health.get("status")) == (200, "healthy"),
          "GET /health: %d %r" % (status, health))
    check(health.get("sessions") == 3, "GET /health: %r sessions, not 3"
          % (health.get("sessions"),))
    say("  GET /health -> %d %s: %d sessions, %d connections, %d subscriptions, "
        "encryption %s" % (status, health["status"], health["sessions"],
                           health["active_connections"], health["active_streams"],
                           health["encryption_status"]))
    status, _ = _get(base + "/health")
    check(status == 401, "GET /health without the token: %d, not 401" % (status,))
    say("  GET /health without the token -> 401")
    status, body = _get(base + "/metrics", token)
    check(status == 200, "GET /metrics: %d" % (status,))
    text = body.decode("utf-8", "replace")
    opened = _metric(text, "muxframe_xtmp_sessions_opened_total")
    deliveries = _metric(text, "muxframe_xtmp_broker_deliveries_total")
    check(opened == 4, "muxframe_xtmp_sessions_opened_total is %g, not 4" % (opened,))
    check(deliveries >= NEWS, "muxframe_xtmp_broker_deliveries_total is %g, under %d"
          % (deliveries, NEWS))
    say("  GET /metrics -> muxframe_xtmp_sessions_opened_total %d, "
        "muxframe_xtmp_broker_deliveries_total %d" % (opened, deliveries))


def _stop(process, sessions, logPath, say):
    """
    SIGTERM the server (its sessions still open) and check that it drained
    them, each client's session closing cleanly (the server's Disconnect
    GOING_AWAY), and exited 0; stop the clients.
    Whether all that held.
    """
    ok = True
    watching = False
    if sessions is not None and process is not None and process.poll() is None:
        try:
            sessions.call("watching the sessions", sessions.watchEnds)
            watching = True
        except DemoFailure as e:
            say("demo failed: %s" % (e,))
            ok = False
    if process is not None:
        say("")
        if process.poll() is not None:
            say("the xtmp server had exited (%s)" % (process.returncode,))
            ok = False
        else:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                say("demo failed: the xtmp server did not exit within 20 s of "
                    "SIGTERM (killed)")
                ok = False
            drained = re.search(r"xtmp server stopped: (\d+) sessions drained, "
                                r"(\d+) connections cut", readLog(logPath))
            say("stopped with SIGTERM: xtmp exited %s%s" % (
                process.returncode, ", %s sessions drained, %s connections cut"
                % drained.groups() if drained else " (no drain in its log)"))
            ok = ok and process.returncode == 0 and drained is not None \
                and drained.group(2) == "0"
    if watching:
        try:
            ends = sessions.call("the sessions' end", sessions.ended)
            clean = sorted(name for name, reason in ends.items()
                           if isinstance(reason, ConnectionDone))
            reasons = sorted({str(reason.args[0]) if reason.args else type(reason).__name__
                              for reason in ends.values()})
            say("  the clients' sessions closed %s: %s" % (
                "cleanly" if len(clean) == len(ends) else "NOT all cleanly (only %s)"
                % (", ".join(clean) or "none",), "; ".join(reasons)))
            ok = ok and len(clean) == len(ends)
        except DemoFailure as e:
            say("demo failed: %s" % (e,))
            ok = False
    if sessions is not None:
        sessions.stop()
    return ok
