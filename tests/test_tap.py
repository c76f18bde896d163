"""
Tests for L{muxframe.tap}: option parsing, the services it builds, and the
real thing, C{twistd -n muxframe server|client} as subprocesses.
"""

import os
import re
import signal
import time

from zope.interface import implementer

from twisted import version as twistedVersion
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe import tap
from muxframe.endpoints import MultiplexedClientEndpoint, MultiplexedServerEndpoint
from muxframe.demo import freePort  # re-exported: the tests import it from here
from muxframe.tunnel import EchoFactory
from tests.test_tunnel import TCPClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


TOKEN = "0123456789abcdef-%s-token"


def writeTokens(testCase, *names):
    """
    Write a tokens file naming C{names} (each with token C{TOKEN % name}),
    and each name's own token file beside it; return the tokens file's path.
    """
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, "tokens")
    with open(path, "w") as f:
        f.write("# name token\n")
        for name in names:
            f.write("%s %s\n" % (name, TOKEN % (name,)))
            with open(os.path.join(directory, name + ".token"), "w") as own:
                own.write(TOKEN % (name,) + "\n")
    return path


def parse(*argv):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """
    C{twistd muxframe} options: good ones parse, bad ones are usage errors
    naming the fault.
    """

    def test_server(self):
        """
        A server with --echo and settings parses; settings are validated.
        """
        options = parse("server", "--endpoint=tcp:9000", "--echo", "--framing=bmp",
                        "--maxStreams=500", "--drainTimeout=2.5")
        self.assertEqual(options.subCommand, "server")
        sub = options.subOptions
        self.assertEqual(sub.settings, {"maxStreams": 500, "drainTimeout": 2.5})
        self.assertEqual(sub.muxDescription(),
                         "bmp:tcp:9000:drainTimeout=2.5:maxStreams=500")

    def test_flowSettings(self):
        """
        The window auto-tuning and bytes-in-flight limits are options like
        the others, validated.
        """
        options = parse("server", "--endpoint=tcp:9000", "--echo",
                        "--maxWindowSize=4194304", "--maxBytesInFlight=1048576")
        self.assertEqual(options.subOptions.settings,
                         {"maxWindowSize": 4194304, "maxBytesInFlight": 1048576})
        self.assertRaises(usage.UsageError, parse, "server", "--endpoint=tcp:9000", "--echo",
                          "--maxBytesInFlight=10")

    def test_client(self):
        """
        A client with --local and --forward parses.
        """
        options = parse("client", "--endpoint=tcp:localhost:9000",
                        "--local=tcp:8000", "--forward=tcp:localhost:22",
                        "--retryMax=2", "--connectTimeout=5")
        [tunnel] = options.subOptions.tunnels
        self.assertEqual(tunnel.locals, ["tcp:8000"])
        self.assertEqual(tunnel.forward, "tcp:localhost:22")
        self.assertEqual(options.subOptions.clientOptions,
                         {"retryMax": 2.0, "connectTimeout": 5.0})
        self.assertEqual(options.subOptions.muxDescription(),
                         "mio:tcp:localhost:9000:connectTimeout=5.0:retryMax=2.0")

    def test_repeatedTunnels(self):
        """
        --endpoint, --local and --forward repeat: the options after an
        --endpoint (or before the first) belong to it; a framing prefix
        sets an endpoint's framing.
        """
        tokens = writeTokens(self, "alice", "bob")
        options = parse("server", "--echo", "--endpoint=tcp:9000", "--tokens=" + tokens,
                        "--local=tcp:9100", "--client=alice",
                        "--local=tcp:9101", "--client=bob",
                        "--endpoint=bmp:tcp:9001", "--forward=tcp:localhost:22")
        first, second = options.subOptions.tunnels
        self.assertEqual((first.endpoint, first.framing, first.echo, first.locals),
                         ("tcp:9000", "mio", True, ["tcp:9100", "tcp:9101"]))
        self.assertEqual(first.clients, ["alice", "bob"])
        self.assertEqual(options.subOptions.muxDescription(first),
                         "mio:tcp:9000:tokens=" + tokens.replace(":", "\\:"))
        self.assertEqual((second.framing, second.echo, second.forward, second.locals),
                         ("bmp", False, "tcp:localhost:22", []))
        self.assertEqual(options.subOptions.muxDescription(second), "bmp:tcp:9001")
        options = parse("client", "--endpoint=tcp:a:1", "--local=tcp:8000",
                        "--local=tcp:8001", "--endpoint=tcp:b:2", "--forward=tcp:c:3")
        first, second = options.subOptions.tunnels
        self.assertEqual(first.locals, ["tcp:8000", "tcp:8001"])
        self.assertEqual(second.forward, "tcp:c:3")

    def test_makeServiceServer(self):
        """
        The server role is a MultiService with each multiplexed listener
        and each reverse-tunnel listener.
        """
        tokens = writeTokens(self, "alice")
        options = parse("server", "--endpoint=tcp:9000", "--echo", "--tokens=" + tokens,
                        "--local=tcp:9001", "--client=alice",
                        "--local=tcp:9002", "--client=alice", "--endpoint=tcp:9003", "--echo")
        top = tap.makeService(options, reactor)
        self.assertTrue(IService.providedBy(top))
        services = list(top)
        self.assertEqual(len(services), 4)
        self.assertEqual([s.description for s in services],
                         ["mio:tcp:9000:tokens=" + tokens, "tcp:9001", "tcp:9002",
                          "mio:tcp:9003"])
        self.assertIsInstance(services[0].endpoint, MultiplexedServerEndpoint)
        self.assertEqual(len(top.tunnels), 2)
        self.assertIsInstance(top.tunnels[0].streams, EchoFactory)
        self.assertEqual(len(top.tunnels[0].locals), 2)

    def test_makeServiceClient(self):
        """
        The client role connects through a MultiplexedClientEndpoint per
        --endpoint, whose child factory forwards streams the server opens.
        """
        options = parse("client", "--endpoint=tcp:localhost:9000",
                        "--forward=tcp:localhost:22", "--local=tcp:9002",
                        "--endpoint=bmp:tcp:localhost:9001", "--local=tcp:9004")
        top = tap.makeService(options, reactor)
        services = list(top)
        self.assertIsInstance(services[0].endpoint, MultiplexedClientEndpoint)
        self.assertIs(services[0].endpoint.childFactory, top.tunnels[0].streams)
        self.assertEqual(top.tunnels[1].endpoint.framing, "bmp")
        self.assertIsNone(top.tunnels[1].endpoint.childFactory)

    def test_usageErrors(self):
        """
        Each bad command line is a UsageError naming its fault.
        """
        cases = [
            ((), "choose a role"),
            (("server", "--echo"), "--endpoint is required"),
            (("server", "--endpoint=tcp:9000"), "needs --echo, --forward or --local"),
            (("server", "--endpoint=tcp:9000", "--echo", "--forward=tcp:a:1"),
             "cannot be used together"),
            (("server", "--endpoint=tcp:9000", "--echo", "--framing=h2"), "unknown framing 'h2'"),
            (("server", "--endpoint=tcp:9000", "--echo", "--maxStreams=many"), "maxStreams"),
            (("server", "--endpoint=tcp:9000", "--echo", "--windowSize=5"), "out of range"),
            (("server", "--endpoint=mux:tcp:9000", "--echo"), "--framing"),
            (("server", "--endpoint=bmp:tcp:9000", "--echo", "--framing=mio"),
             "is bmp, but --framing=mio"),
            (("server", "--endpoint=tcpx:9000", "--echo"), "bad inner endpoint"),
            (("server", "--endpoint=tcp:9000", "--local=tcp:port"), "--local"),
            (("client", "--endpoint=tcp:h:1"), "needs --local or --forward"),
            (("client", "--endpoint=tcp:h:1", "--local=tcp:1", "--retryMax=0"), "--retryMax"),
            (("client", "--endpoint=tcp:h:1", "--forward=nope:1"), "--forward"),
            (("server", "--endpoint=tcp:9000", "--echo", "--nosuch"), "nosuch"),
        ]
        for argv, fault in cases:
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn(fault, str(e), argv)

    def test_reverseTunnelNeedsAuthentication(self):
        """
        A --local needs --client=NAME and an endpoint that authenticates
        clients (--tokens, or clientCA= on ssl:); the names must be known.
        """
        tokens = writeTokens(self, "alice")
        cases = [
            (("server", "--endpoint=tcp:9000", "--local=tcp:9001"),
             "--local=tcp:9001 needs --client=NAME"),
            (("server", "--endpoint=tcp:9000", "--local=tcp:9001", "--client=alice"),
             "cannot authenticate clients; add clientCA="),
            (("server", "--endpoint=tcp:9000", "--tokens=" + tokens,
              "--local=tcp:9001", "--client=bob"), "--client=bob is not in --tokens"),
            (("server", "--endpoint=tcp:9000", "--client=alice", "--echo"),
             "give it after that --local"),
            (("server", "--endpoint=tcp:9000", "--tokens=/no/such/file", "--echo"),
             "cannot be read"),
            (("client", "--endpoint=tcp:h:1", "--local=tcp:1", "--name=alice"),
             "--name and --tokenFile go together"),
            (("client", "--endpoint=tcp:h:1", "--local=tcp:1", "--name=al ice",
              "--tokenFile=" + tokens), "client name"),
        ]
        for argv, fault in cases:
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn(fault, str(e), argv)
        options = parse("client", "--endpoint=tcp:h:1", "--forward=tcp:h:2",
                        "--name=alice",
                        "--tokenFile=" + os.path.join(os.path.dirname(tokens), "alice.token"))
        endpoint = options.subOptions.muxEndpoint(reactor)
        self.assertEqual(endpoint.authName, "alice")
        self.assertEqual(endpoint.authToken, (TOKEN % ("alice",)).encode())

    def test_repeatsNeverDropped(self):
        """
        An option that takes one value, given twice, is an error naming it,
        not silently replaced.
        """
        cases = [
            (("server", "--endpoint=tcp:9000", "--forward=tcp:a:1", "--forward=tcp:b:2"),
             "--forward given twice for --endpoint=tcp:9000"),
            (("client", "--endpoint=tcp:h:1", "--forward=tcp:a:1", "--forward=tcp:b:2"),
             "give each target its own --endpoint"),
            (("server", "--endpoint=tcp:9000", "--echo", "--maxStreams=5", "--maxStreams=6"),
             "--maxStreams given twice ('5', then '6')"),
            (("server", "--endpoint=tcp:9000", "--echo", "-f", "bmp", "--framing=mio"),
             "--framing given twice"),
            (("client", "--endpoint=tcp:h:1", "--local=tcp:1", "--retryMax=1", "--retryMax=2"),
             "--retryMax given twice"),
            (("server", "--endpoint=tcp:9000:maxStreams=5", "--echo", "--maxStreams=6"),
             "sets maxStreams, and so does --maxStreams"),
        ]
        for argv, fault in cases:
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn(fault, str(e), argv)

    def test_backlog(self):
        """
        Listening descriptions get backlog=1024 unless they set one; other
        endpoint types are left alone.
        """
        cases = [
            ("tcp:9000", "tcp:9000:backlog=1024"),
            ("mio:tcp:9000:maxStreams=5", "mio:tcp:9000:maxStreams=5:backlog=1024"),
            ("bmp:ssl:8443:privateKey=k.pem", "bmp:ssl:8443:privateKey=k.pem:backlog=1024"),
            ("unix:/tmp/s", "unix:/tmp/s:backlog=1024"),
            ("tcp:9000:backlog=10", "tcp:9000:backlog=10"),
            ("mio:tcp:9000:backlog=10", "mio:tcp:9000:backlog=10"),
            ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
        ]
        for given, expected in cases:
            self.assertEqual(tap.withBacklog(given), expected)

    def test_endpointFaultsNamed(self):
        """
        A client --endpoint missing its port, and --local given a client
        string, say so.
        """
        e = self.assertRaises(usage.UsageError, parse, "client", "--endpoint=tcp:localhost",
                              "--local=tcp:7000")
        self.assertIn("'tcp:localhost' names no port", str(e))
        self.assertNotIn("TypeError", str(e))
        e = self.assertRaises(usage.UsageError, parse, "client", "--endpoint=tcp:h:1",
                              "--local=tcp:localhost:7000")
        self.assertIn("--local takes a server endpoint to listen on", str(e))
        self.assertIn("looks like a client endpoint", str(e))
        e = self.assertRaises(usage.UsageError, parse, "server", "--endpoint=tcp:9000",
                              "--forward=tcp:7000")
        self.assertIn("--forward takes a client endpoint", str(e))
        self.assertIn("names a port but no host", str(e))
        e = self.assertRaises(usage.UsageError, parse, "server",
                              "--endpoint=tcp:localhost:9000", "--echo")
        self.assertIn("looks like a client endpoint", str(e))


class Twistd(ProcessProtocol):
    """
    A C{twistd -n muxframe ...} child process; output is collected.
    """

    def __init__(self, name):
        self.name = name
        self.output = []
        self.ended = Deferred()
        self.exitCode = None
        self.running = True

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.running = False
        self.exitCode = reason.value.exitCode
        self.signal = reason.value.signal
        self.ended.callback(self.exitCode)

    def text(self):
        return b"".join(self.output).decode("utf-8", "replace")


def spawnTwistd(testCase, name, *args, cwd=None, twist=False, logfile="-"):
    """
    Start C{twistd -n muxframe ARGS} (or C{twist muxframe ARGS}) in a
    temporary directory; the test's cleanup kills it if it still runs.

    @param logfile: twistd's C{--logfile} (C{-}: the output collected).
    """
    cwd = cwd or testCase.mktemp()
    os.makedirs(cwd, exist_ok=True)
    process = Twistd(name)
    if twist:
        argv = tap.twistCommand("muxframe", *args)
    else:
        argv = tap.twistdCommand("-n", "--pidfile=", "--logfile=" + logfile,
                                 "muxframe", *args)
    env = dict(os.environ, PYTHONPATH=REPO)
    process.transport = reactor.spawnProcess(process, argv[0], argv, env=env, path=cwd)

    def kill():
        if process.running:
            try:
                process.transport.signalProcess("KILL")
            except Exception:
                pass
            return process.ended

    testCase.addCleanup(kill)
    return process


@inlineCallbacks
def waitForPort(port, *processes, seconds=20.0):
    """
    Wait until something accepts connections on 127.0.0.1:C{port}; fail
    (with the processes' output) if that takes too long or one exits.
    """
    deadline = time.monotonic() + seconds
    while True:
        for process in processes:
            if not process.running:
                raise AssertionError("%s exited (%s):\n%s"
                                     % (process.name, process.exitCode, process.text()))
        try:
            protocol = yield connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=2), Protocol())
        except Exception:
            if time.monotonic() > deadline:
                raise AssertionError("nothing listens on port %d:\n%s" % (
                    port, "\n".join(p.text() for p in processes)))
            yield deferLater(reactor, 0.1)
        else:
            protocol.transport.abortConnection()
            return


def assertStoppedCleanly(testCase, process):
    """
    The process shut down after SIGTERM: twistd logged its shutdown and
    either exited 0 or re-raised SIGTERM (as twistd does after a signal).
    """
    text = process.text()
    testCase.assertIn("Server Shut Down.", text)
    testCase.assertNotIn("Traceback", text)
    testCase.assertTrue(
        process.exitCode == 0 or process.signal == signal.SIGTERM,
        "%s ended with %r/%r" % (process.name, process.exitCode, process.signal))


class Holder(Protocol):
    """
    A TCP client that keeps its connection open and collects what arrives;
    C{done} fires when the connection ends.
    """

    def __init__(self):
        self.received = []
        self.done = Deferred()

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.done.callback(None)


class TwistdTests(TestCase):
    """
    C{twistd -n muxframe} as real processes on 127.0.0.1.
    """

    timeout = 120

    @inlineCallbacks
    def test_usageErrorExits(self):
        """
        Bad options stop twistd with the fault named, and with a non-zero
        exit (twistd before Twisted 26.10 exits 0 after any usage error).
        """
        process = spawnTwistd(self, "server", "server", "--endpoint=tcp:1", "--echo",
                              "--maxStreams=zero")
        code = yield process.ended
        self.assertIn("--maxStreams: setting maxStreams must be an integer", process.text())
        if (twistedVersion.major, twistedVersion.minor) >= (26, 10):
            self.assertNotEqual(code, 0)

    @inlineCallbacks
    def test_listenBacklog(self):
        """
        The server listens with a backlog of 1024 on its multiplexed
        endpoint and on each --local (as the kernel reports it).
        """
        import subprocess
        muxPort, localPort = freePort(), freePort()
        server = spawnTwistd(self, "server", "server",
                             "--endpoint=tcp:%d:interface=127.0.0.1" % (muxPort,), "--echo",
                             "--tokens=" + writeTokens(self, "alice"),
                             "--local=tcp:%d:interface=127.0.0.1" % (localPort,),
                             "--client=alice")
        yield waitForPort(muxPort, server)
        yield waitForPort(localPort, server)
        for port in (muxPort, localPort):
            out = subprocess.run(["ss", "-ltnH", "sport = :%d" % (port,)],
                                 capture_output=True, text=True, timeout=10).stdout
            self.assertEqual(out.split()[2], "1024", out)

    @inlineCallbacks
    def test_addressInUse(self):
        """
        A port already in use stops twistd with a non-zero exit and a clear
        one-line message.
        """
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        process = spawnTwistd(self, "server", "server",
                              "--endpoint=tcp:%d:interface=127.0.0.1" % (number,), "--echo")
        code = yield process.ended
        self.assertNotEqual(code, 0)
        self.assertIn("muxframe: cannot listen on mio:tcp:%d" % (number,), process.text())
        self.assertIn("Address already in use", process.text())

    @inlineCallbacks
    def test_addressInUseDaemon(self):
        """
        Daemonized (no C{-n}), a port already in use is reported by the
        launching twistd, which exits 1 and leaves no pidfile (it used to
        wait for ever for the daemon's report).
        """
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        pidfile = os.path.join(cwd, "twistd.pid")
        process = Twistd("daemon")
        argv = tap.twistdCommand(
            "--pidfile=" + pidfile, "--logfile=" + os.path.join(cwd, "log"),
            "muxframe", "server", "--endpoint=tcp:%d:interface=127.0.0.1"
            % (number,), "--echo")
        process.transport = reactor.spawnProcess(
            process, argv[0], argv, env=dict(os.environ, PYTHONPATH=REPO),
            path=cwd)
        timer = reactor.callLater(60, process.transport.signalProcess, "KILL")
        code = yield process.ended
        if timer.active():
            timer.cancel()
        self.assertEqual(code, 1, process.text())
        self.assertIn("cannot listen on mio:tcp:%d" % (number,), process.text())
        self.assertFalse(os.path.exists(pidfile))

    @inlineCallbacks
    def test_echoThroughForwardTunnelAndSigterm(self):
        """
        A client's forward tunnel reaches an echo server; the logs name the
        stream and peer.  On SIGTERM the server stops accepting, lets the
        open stream finish, then exits 0 after the drain deadline.
        """
        muxPort, localPort = freePort(), freePort()
        server = spawnTwistd(self, "server", "server", "--endpoint=tcp:%d:interface=127.0.0.1"
                             % (muxPort,), "--echo", "--drainTimeout=3")
        yield waitForPort(muxPort, server)
        client = spawnTwistd(self, "client", "client", "--endpoint=tcp:127.0.0.1:%d"
                             % (muxPort,), "--local=tcp:%d:interface=127.0.0.1" % (localPort,),
                             "--retryMax=1", "--logLevel=debug")
        yield waitForPort(localPort, client)
        local = TCP4ClientEndpoint(reactor, "127.0.0.1", localPort)
        first = TCPClient(b"hello muxframe" * 1000)
        yield connectProtocol(local, first)
        data, reason = yield first.done
        self.assertEqual(data, b"hello muxframe" * 1000)
        self.assertTrue(reason.check(ConnectionDone))
        self.assertIn("forward tunnel: tcp:127.0.0.1:", client.text())
        self.assertIn("spliced to tcp:127.0.0.1:%d#" % (muxPort,), client.text())

        # An open stream while the server is told to stop.
        holder = Holder()
        yield connectProtocol(local, holder)
        holder.transport.write(b"before ")
        for _ in range(200):
            if holder.received:
                break
            yield deferLater(reactor, 0.02)
        started = time.monotonic()
        server.transport.signalProcess("TERM")
        yield deferLater(reactor, 0.5)
        self.assertTrue(server.running)
        # New multiplexed connections are no longer accepted ...
        refused = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", muxPort), Protocol()).addErrback(
                lambda f: f.trap(ConnectionRefusedError) and None)
        self.assertIsNone(refused, "the server still accepts connections")
        # ... but the open stream still works until the deadline.
        holder.transport.write(b"after")
        for _ in range(200):
            if b"".join(holder.received) == b"before after":
                break
            yield deferLater(reactor, 0.02)
        self.assertEqual(b"".join(holder.received), b"before after")
        yield server.ended
        elapsed = time.monotonic() - started
        assertStoppedCleanly(self, server)
        self.assertGreater(elapsed, 2.5)
        self.assertLess(elapsed, 15)
        yield holder.done  # the tunneled connection is closed, not left open
        self.assertIn("drain deadline passed", server.text())
        client.transport.signalProcess("TERM")
        yield client.ended
        assertStoppedCleanly(self, client)


class SeveralTunnelsTests(TestCase):
    """
    Several tunnels in one process, under C{twist} and C{twistd}.
    """

    timeout = 120

    @inlineCallbacks
    def test_twoEndpointsEachWithTwoLocals(self):
        """
        C{twist muxframe server} with a MIO and a BMP endpoint, and
        C{twistd muxframe client} with one connection to each and two local
        listeners on each: all four tunnels carry verified data.  No
        factory is logged as started or stopped per stream, and peers are
        logged as endpoint strings.
        """
        from tests.test_tunnel import TCPClient
        target = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            EchoFactory())
        self.addCleanup(target.stopListening)
        mioPort, bmpPort = freePort(), freePort()
        locals_ = [freePort() for _ in range(4)]
        server = spawnTwistd(
            self, "server", "server",
            "--endpoint=tcp:%d:interface=127.0.0.1" % (mioPort,), "--echo",
            "--endpoint=bmp:tcp:%d:interface=127.0.0.1" % (bmpPort,),
            "--forward=tcp:127.0.0.1:%d" % (target.getHost().port,),
            "--drainTimeout=2", "--logLevel=debug", twist=True)
        yield waitForPort(mioPort, server)
        yield waitForPort(bmpPort, server)
        client = spawnTwistd(
            self, "client", "client",
            "--endpoint=tcp:127.0.0.1:%d" % (mioPort,),
            "--local=tcp:%d:interface=127.0.0.1" % (locals_[0],),
            "--local=tcp:%d:interface=127.0.0.1" % (locals_[1],),
            "--endpoint=bmp:tcp:127.0.0.1:%d" % (bmpPort,),
            "--local=tcp:%d:interface=127.0.0.1" % (locals_[2],),
            "--local=tcp:%d:interface=127.0.0.1" % (locals_[3],),
            "--drainTimeout=2", "--logLevel=debug")
        for port in locals_:
            yield waitForPort(port, client)
        clients = []
        for index, port in enumerate(locals_):
            for copy in range(3):
                payload = (b"tunnel %d copy %d " % (index, copy)) * 5000
                probe = TCPClient(payload)
                yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), probe)
                clients.append((payload, probe))
        results = yield gatherResults([probe.done for payload, probe in clients])
        for (payload, probe), (data, reason) in zip(clients, results):
            self.assertEqual(data, payload)
            self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertIn("mio connection to tcp:127.0.0.1:%d up" % (mioPort,), client.text())
        self.assertIn("bmp connection to tcp:127.0.0.1:%d up" % (bmpPort,), client.text())
        # The twelve exchanges (waitForPort's probes are aborted); a line
        # may reach the pipe after the probe saw its connection close.
        closed = "forward tunnel: tcp:127.0.0.1:\\d+ closed \\(clean; 80000 bytes in, 80000 out"
        deadline = time.monotonic() + 10
        while (len(re.findall(closed, client.text())) < 12
               and time.monotonic() < deadline):
            yield deferLater(reactor, 0.05)
        text = client.text() + server.text()
        self.assertEqual(len(re.findall(closed, text)), 12)
        self.assertNotIn("_OneShotFactory", text)
        self.assertNotIn("Starting factory <MultiplexerFactory", text)
        self.assertNotIn("IPv4Address(", text)
        for process in (client, server):
            process.transport.signalProcess("TERM")
            yield process.ended
        assertStoppedCleanly(self, client)
        self.assertNotIn("Traceback", server.text())
        self.assertIn("Main loop terminated.", server.text())


@implementer(IPushProducer)
class Streamer(Protocol):
    """
    Write to the connection for as long as it lets us (a push producer),
    counting what comes back; C{done} fires with the reason it closed.
    """

    chunk = b"\xa5" * 16384
    limit = 1 << 30

    def __init__(self):
        self.sent = 0
        self.received = 0
        self.paused = False
        self.done = Deferred()

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.sent < self.limit:
            self.transport.write(self.chunk)
            self.sent += len(self.chunk)

    def stopProducing(self):
        self.paused = True

    def dataReceived(self, data):
        self.received += len(data)

    def connectionLost(self, reason):
        self.paused = True
        self.done.callback(reason.value)


class ServerKillTests(TestCase):
    """
    Killing the server mid-transfer, then bringing it back.
    """

    timeout = 120

    @inlineCallbacks
    def test_killServerThenReturn(self):
        """
        SIGKILL to the server mid-transfer closes every tunneled local
        connection (none is left hanging); the client reconnects when a
        server is back on the port, and new tunneled connections work
        without restarting the client.
        """
        muxPort, localPort = freePort(), freePort()
        serverArgs = ("server", "--endpoint=tcp:%d:interface=127.0.0.1" % (muxPort,), "--echo")
        server = spawnTwistd(self, "server", *serverArgs)
        yield waitForPort(muxPort, server)
        client = spawnTwistd(
            self, "client", "client", "--endpoint=tcp:127.0.0.1:%d" % (muxPort,),
            "--local=tcp:%d:interface=127.0.0.1" % (localPort,),
            "--retryMax=0.5", "--connectTimeout=20")
        yield waitForPort(localPort, client)
        local = TCP4ClientEndpoint(reactor, "127.0.0.1", localPort)
        streamers = [Streamer() for _ in range(10)]
        for streamer in streamers:
            yield connectProtocol(local, streamer)
        deadline = time.monotonic() + 20
        while not all(s.received > 100000 for s in streamers):
            self.assertLess(time.monotonic(), deadline, "transfers did not start")
            yield deferLater(reactor, 0.05)

        server.transport.signalProcess("KILL")
        yield server.ended
        killed = time.monotonic()
        reasons = yield gatherResults([s.done for s in streamers])
        self.assertLess(time.monotonic() - killed, 10)
        self.assertEqual(len(reasons), 10)
        # The tunneled connections fail (reset), they do not end as if the
        # transfer had completed.
        self.assertFalse(any(isinstance(r, ConnectionDone) for r in reasons), reasons)
        self.assertTrue(client.running)
        # (The client's line comes through its output pipe: it may arrive
        # after the resets did.)
        lost = "mio connection to tcp:127.0.0.1:%d lost" % (muxPort,)
        deadline = time.monotonic() + 20
        while lost not in client.text():
            self.assertLess(time.monotonic(), deadline, client.text())
            yield deferLater(reactor, 0.05)
        # While the server is away, every attempt says why it failed.
        deadline = time.monotonic() + 20
        failed = "mio connection to tcp:127.0.0.1:%d failed: Connection was refused" % (muxPort,)
        while client.text().count(failed) < 2:
            self.assertLess(time.monotonic(), deadline, client.text()[-3000:])
            yield deferLater(reactor, 0.1)
        self.assertIn("Scheduling retry 2 to connect tcp:127.0.0.1:%d in" % (muxPort,),
                      client.text())

        server = spawnTwistd(self, "server again", *serverArgs)
        yield waitForPort(muxPort, server)
        deadline = time.monotonic() + 30
        while True:
            # Until the client has reconnected, a tunneled connection is
            # reset at once (possibly before its connect completes).
            probe = TCPClient(b"back again" * 100)
            try:
                yield connectProtocol(local, probe)
            except ConnectError:
                # The client reset the connection at once (no multiplexed
                # connection yet) before the connect completed here.
                data = None
            else:
                data, reason = yield probe.done
            if data == b"back again" * 100:
                break
            self.assertLess(time.monotonic(), deadline, client.text()[-3000:])
            yield deferLater(reactor, 0.2)
        self.assertTrue(client.running)
        self.assertGreaterEqual(
            len(re.findall(r"mio connection to \S+ up", client.text())), 2)


class HangupHandlerTests(TestCase):
    """
    A multiplexer role started in a process that is not the role's own
    (these tests, an application embedding it) takes SIGHUP while it runs
    and gives it back when it stops.
    """

    @inlineCallbacks
    def test_sighupRestoredOnStop(self):
        """
        With --admin-token-file, the started role's SIGHUP handler reloads
        the tokens; once the role has stopped, the handler from before it
        started is back.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        token = os.path.join(directory, "admin.token")
        with open(token, "w") as f:
            f.write("an-admin-token\n")
        options = parse("server", "--endpoint=tcp:0:interface=127.0.0.1",
                        "--echo", "--admin=tcp:0:interface=127.0.0.1",
                        "--admin-token-file=" + token)
        top = tap.makeService(options, reactor)
        before = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, before)
        top.privilegedStartService()
        top.startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), top._sighup)
        yield top.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
