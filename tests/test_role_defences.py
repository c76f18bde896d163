"""
The defences against hostile peers, checked against the real role:
C{twistd -n muxframe server} as a process on 127.0.0.1, attacked with the
bytes an adversarial run used.  Each test asserts a behaviour (closed, with
which code, nothing leaked, another connection served, how many log lines);
none asserts a timing (bench/ measures those).
"""

import os
import re
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from muxframe import MultiplexedClientEndpoint, mio
from muxframe.errors import ErrorCode
from tests.test_mux_defences import bmpClose, bmpData, mioData, mioOpen, mioReset
from tests.test_tap import TOKEN, freePort, spawnTwistd, waitForPort, writeTokens
from tests.test_tunnel import TCPClient


class Raw(Protocol):
    """
    A raw TCP peer: writes C{wire} once connected, collects what comes
    back; C{done} fires with it when the connection ends.
    """

    def __init__(self, wire=b""):
        self.wire = wire
        self.received = b""
        self.done = Deferred()

    def connectionMade(self):
        if self.wire:
            self.transport.write(self.wire)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.done.callback(self.received)


@implementer(IHalfCloseableProtocol)
class Counting(Protocol):
    """
    A forward target that counts its open connections (and echoes, if its
    factory says so, closing after the peer's end).
    """

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionMade(self):
        self.factory.opened += 1
        self.factory.open += 1

    def dataReceived(self, data):
        if self.factory.echo:
            self.transport.write(data)

    def connectionLost(self, reason):
        self.factory.open -= 1


class CountingFactory(Factory):
    protocol = Counting

    def __init__(self, echo=False):
        self.echo = echo
        self.opened = 0
        self.open = 0


def openFds(process):
    return len(os.listdir("/proc/%d/fd" % (process.transport.pid,)))


def raw(port, wire=b""):
    """
    Connect a L{Raw} peer to C{port}; return a Deferred firing with it once
    connected.
    """
    protocol = Raw(wire)
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)


@inlineCallbacks
def waitFor(condition, what, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        yield deferLater(reactor, 0.05)


def mioFins(data):
    """
    Return the codes of the MIO session closes (FIN) in C{data}.
    """
    return [f.size for f in mio.decodeFrames(data) if f.flags == mio.FIN]


class StreamReuseLeakTests(TestCase):
    """
    Stream-id reuse through C{--forward} leaks no outbound connection and
    no file descriptor, whatever the number of cycles.
    """

    timeout = 120

    @inlineCallbacks
    def test_noLeakPerCycle(self):
        """
        40 MIO cycles of C{open(1) data(1,"x") RST(1) open(1)} (each a
        protocol error closing its connection with FIN code 1) and 40 BMP
        cycles of data creating io_N, close, data re-creating io_N on one
        connection: afterwards the target has no connection open and the
        server holds no more file descriptors than before.
        """
        mioTargets, bmpTargets = CountingFactory(), CountingFactory()
        ports = []
        for targets in (mioTargets, bmpTargets):
            target = yield TCP4ServerEndpoint(
                reactor, 0, interface="127.0.0.1").listen(targets)
            self.addCleanup(target.stopListening)
            ports.append(target.getHost().port)
        mioPort, bmpPort = freePort(), freePort()
        server = spawnTwistd(
            self, "server", "server",
            "--endpoint=tcp:%d:interface=127.0.0.1" % (mioPort,),
            "--forward=tcp:127.0.0.1:%d" % (ports[0],),
            "--endpoint=bmp:tcp:%d:interface=127.0.0.1" % (bmpPort,),
            "--forward=tcp:127.0.0.1:%d" % (ports[1],))
        yield waitForPort(mioPort, server)
        yield waitForPort(bmpPort, server)
        yield deferLater(reactor, 0.5)
        baseline = openFds(server)

        cycle = mioOpen(1) + mioData(1, b"x") + mioReset(1) + mioOpen(1)
        for _ in range(40):
            attacker = yield raw(mioPort, cycle)
            received = yield attacker.done
            self.assertEqual(mioFins(received), [ErrorCode.INTERNAL])
        wire = b"".join(
            bmpData(b"io_%d" % n, b"x", 0, 0x06) + bmpClose(b"io_%d" % n)
            + bmpData(b"io_%d" % n, b"y", 0, 0x06) for n in range(40))
        attacker = yield raw(bmpPort, wire)
        yield waitFor(lambda: bmpTargets.opened >= 40,
                      "the BMP streams' outbound connections")
        attacker.transport.loseConnection()
        yield attacker.done

        for targets in (mioTargets, bmpTargets):
            yield waitFor(lambda: targets.open == 0,
                          "every outbound connection to close (%d open)" % (targets.open,))
        yield waitFor(lambda: openFds(server) <= baseline,
                      "the server's file descriptors to return to %d" % (baseline,))
        self.assertEqual(bmpTargets.opened, 40)
        self.assertNotIn("Traceback", server.text())


class FloodTests(TestCase):
    """
    A rapid-reset flood closes the abusive connection with code 5 and one
    log line, while another connection is served throughout.
    """

    timeout = 120

    @inlineCallbacks
    def test_rapidResetWhileAnotherIsServed(self):
        """
        An attacker writing open+RST pairs as fast as it can is closed with
        FIN code 5 ('exhausted'); a well-behaved client's echoes, sent all
        through the attack, are all answered; the server writes one warning
        for it and no per-stream line.
        """
        port = freePort()
        server = spawnTwistd(self, "server", "server",
                             "--endpoint=tcp:%d:interface=127.0.0.1" % (port,), "--echo")
        yield waitForPort(port, server)
        good = MultiplexedClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), framing="mio")
        self.addCleanup(good.stop)
        yield good.whenConnected()

        attackers = []
        wire = b"".join(mioOpen(n) + mioReset(n) for n in range(1, 2 * 20000, 2))
        for _ in range(3):
            attackers.append((yield raw(port, wire)))
        answered = []
        for i in range(30):
            probe = TCPClient(b"echo %d " % (i,) * 50)
            yield good.connect(Factory.forProtocol(lambda probe=probe: probe))
            answered.append((yield probe.done)[0] == b"echo %d " % (i,) * 50)
        received = yield gatherResults([a.done for a in attackers])
        self.assertEqual(answered, [True] * 30)
        for data in received:
            self.assertEqual(mioFins(data), [ErrorCode.EXHAUSTED])
        text = server.text()
        self.assertEqual(len(re.findall("protocol error from .*maxResets", text)), 3, text)
        self.assertNotIn("opened stream", text)
        self.assertNotIn("echo: stream", text)


class TimeoutTests(TestCase):
    """
    Connections stalled mid-header, and connections nobody uses, are
    closed by the server.
    """

    timeout = 120

    @inlineCallbacks
    def test_slowlorisAndSilent(self):
        """
        With headerTimeout=2 and emptyTimeout=3: 20 connections stopped
        mid-header and 20 silent ones are all closed by the server; a
        connection carrying a stream stays.
        """
        port = freePort()
        server = spawnTwistd(self, "server", "server",
                             "--endpoint=tcp:%d:interface=127.0.0.1" % (port,), "--echo",
                             "--headerTimeout=2", "--emptyTimeout=3")
        yield waitForPort(port, server)
        midHeader = yield gatherResults([raw(port, mioOpen(1)[:5]) for _ in range(20)])
        silent = yield gatherResults([raw(port) for _ in range(20)])
        good = MultiplexedClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), framing="mio",
            keepaliveInterval=1)
        self.addCleanup(good.stop)
        holder = Raw()
        yield good.connect(Factory.forProtocol(lambda: holder))
        yield gatherResults([p.done for p in midHeader + silent])
        yield deferLater(reactor, 1.5)
        self.assertFalse(holder.done.called)
        holder.transport.write(b"still here")
        yield waitFor(lambda: holder.received == b"still here", "the echo")
        text = server.text()
        self.assertIn("headerTimeout", text)
        self.assertIn("emptyTimeout", text)


class ReverseTunnelTests(TestCase):
    """
    C{--local} on the server sends connections only to the client it names.
    """

    timeout = 120

    @inlineCallbacks
    def test_unauthenticatedConnectionGetsNothing(self):
        """
        twistd server with --tokens and --local --client=alice, twistd
        client authenticated as alice; an unauthenticated connection made
        after it: every connection to --local reaches alice's target, none
        the stranger, which the server closes.
        """
        targets = CountingFactory(echo=True)
        target = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(targets)
        self.addCleanup(target.stopListening)
        tokens = writeTokens(self, "alice")
        muxPort, localPort = freePort(), freePort()
        server = spawnTwistd(
            self, "server", "server", "--endpoint=tcp:%d:interface=127.0.0.1" % (muxPort,),
            "--tokens=" + tokens, "--local=tcp:%d:interface=127.0.0.1" % (localPort,),
            "--client=alice", "--logLevel=debug")
        yield waitForPort(muxPort, server)
        client = spawnTwistd(
            self, "client", "client", "--endpoint=tcp:127.0.0.1:%d" % (muxPort,),
            "--forward=tcp:127.0.0.1:%d" % (target.getHost().port,),
            "--name=alice", "--tokenFile=" + os.path.join(os.path.dirname(tokens),
                                                          "alice.token"))
        yield waitFor(lambda: "client alice authenticated by token" in server.text(),
                      "alice to authenticate")
        # The stranger connects last, speaks MIO, and waits for streams.
        stranger = yield raw(muxPort, mio.encodeHeader(0, 0, mio.SESSION_WINDOW))
        yield deferLater(reactor, 0.5)
        for i in range(5):
            probe = TCPClient(b"to alice %d " % (i,) * 100)
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", localPort), probe)
            data, reason = yield probe.done
            self.assertEqual(data, b"to alice %d " % (i,) * 100,
                             server.text()[-3000:] + client.text()[-3000:])
        self.assertEqual(targets.opened, 5)
        received = yield stranger.done
        frames = mio.decodeFrames(received)
        opens = [f.streamId for f in frames if f.flags & mio.OPEN == mio.OPEN]
        # Only the challenge stream was opened toward the stranger.
        self.assertLessEqual(len(opens), 1)
        payload = b"".join(f.payload or b"" for f in frames if f.flags == mio.DATA)
        self.assertNotIn(b"to alice", payload)
        self.assertIn(ErrorCode.REFUSED, mioFins(received))
        self.assertIn(TOKEN % ("alice",), open(tokens).read())
        self.assertTrue(client.running)


class LogFloodTests(TestCase):
    """
    Logs never amplify an attack against the role.
    """

    timeout = 120

    @inlineCallbacks
    def test_badConnectionsAndStreams(self):
        """
        200 connections that each break the protocol write at most ten
        warnings (and their connection lines); 200 streams echoed write no
        line at the default level.
        """
        port = freePort()
        server = spawnTwistd(self, "server", "server",
                             "--endpoint=tcp:%d:interface=127.0.0.1" % (port,), "--echo")
        yield waitForPort(port, server)
        bad = yield gatherResults([raw(port, mioOpen(0)) for _ in range(200)])
        yield gatherResults([b.done for b in bad])
        good = MultiplexedClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), framing="mio")
        self.addCleanup(good.stop)
        probes = [TCPClient(b"x" * 100) for _ in range(200)]
        for probe in probes:
            yield good.connect(Factory.forProtocol(lambda probe=probe: probe))
        yield gatherResults([p.done for p in probes])
        yield deferLater(reactor, 0.5)
        lines = server.text().splitlines()
        warnings = [line for line in lines if "#warn]" in line]
        self.assertLessEqual(len(warnings), 10, "\n".join(warnings))
        self.assertIn("further lines like this are suppressed", warnings[-1])
        streamLines = [line for line in lines if "#debug]" in line
                       or "opened stream" in line or "echo: stream" in line]
        self.assertEqual(streamLines, [])
