"""
Tests for L{muxframe.tunnel}: forward and reverse tunnels in one process over
real loopback TCP, half-close, backpressure, and unclean ends.
"""

import os

from zope.interface import implementer

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint
from muxframe.tunnel import (
    EchoFactory,
    ForwardFactory,
    TunnelFactory,
    reverseOpener,
)
from tests.test_endpoints import cancelAbortTimers


@implementer(IHalfCloseableProtocol)
class TCPClient(Protocol):
    """
    Send C{payload}, half-close, collect everything until the connection
    ends; C{done} fires with C{(data, reason)}.
    """

    def __init__(self, payload):
        self.payload = payload
        self.received = []
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.payload)
        self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.received.append(data)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.done.callback((b"".join(self.received), reason))


@implementer(IHalfCloseableProtocol)
class CountAfterEOF(Protocol):
    """
    Answer, only after the input ended, with the number of bytes received.
    """

    count = 0

    def dataReceived(self, data):
        self.count += len(data)

    def readConnectionLost(self):
        self.transport.write(b"%d" % (self.count,))
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


@implementer(IPushProducer)
class Flood(Protocol):
    """
    Write C{limit} bytes as fast as the transport lets us (a push producer
    paused by the transport), then close.
    """

    limit = 32 * 1024 * 1024
    chunk = b"\x5a" * 65536

    def connectionMade(self):
        self.written = 0
        self.paused = False
        self.pauses = 0
        self.factory.instances.append(self)
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.written < self.limit:
            self.transport.write(self.chunk)
            self.written += len(self.chunk)
        if self.written >= self.limit:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def stopProducing(self):
        self.paused = True


class SlowReader(Protocol):
    """
    A client that does not read until told to.
    """

    def __init__(self):
        self.size = 0
        self.done = Deferred()

    def connectionMade(self):
        self.transport.pauseProducing()

    def dataReceived(self, data):
        self.size += len(data)

    def connectionLost(self, reason):
        self.done.callback((self.size, reason))


class TunnelTestsMixin:
    """
    Build tunnels on 127.0.0.1.
    """

    timeout = 60

    def setUp(self):
        self.addCleanup(cancelAbortTimers)

    @inlineCallbacks
    def listenTCP(self, factory):
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return port

    def connectTo(self, port):
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

    @inlineCallbacks
    def forwardTunnel(self, framing, targetFactory):
        """
        local TCP -> client --(framing)--> server -> target.
        """
        target = yield self.listenTCP(targetFactory)
        serverEndpoint = MultiplexedServerEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), framing=framing)
        forward = ForwardFactory(self.connectTo(target))
        muxPort = yield serverEndpoint.listen(forward)
        self.addCleanup(muxPort.stopListening, 1)
        self.muxConnections = []
        inner = self.connectTo(muxPort)

        class Counting:
            def connect(innerSelf, factory):
                self.muxConnections.append(factory)
                return inner.connect(factory)

        client = MultiplexedClientEndpoint(Counting(), framing=framing)
        self.addCleanup(client.stop)
        tunnel = TunnelFactory(client.connect, "forward tunnel")
        local = yield self.listenTCP(tunnel)
        self.serverEndpoint, self.clientEndpoint = serverEndpoint, client
        self.forward, self.tunnel = forward, tunnel
        return local

    @inlineCallbacks
    def reverseTunnel(self, framing, targetFactory):
        """
        local TCP on the server -> server --(framing)--> client -> target.
        """
        from muxframe.tunnelauth import Authenticator, TokenTable
        target = yield self.listenTCP(targetFactory)
        token = b"a-token-of-sixteen-bytes-or-more"
        serverEndpoint = MultiplexedServerEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), framing=framing,
            authenticator=Authenticator(TokenTable({b"alice": token})))
        muxPort = yield serverEndpoint.listen(Factory.forProtocol(Protocol))
        self.addCleanup(muxPort.stopListening, 1)
        client = MultiplexedClientEndpoint(
            self.connectTo(muxPort), framing=framing,
            childFactory=ForwardFactory(self.connectTo(target)),
            authName="alice", authToken=token)
        self.addCleanup(client.stop)
        yield client.whenConnected()
        yield serverEndpoint.whenConnected()
        tunnel = TunnelFactory(reverseOpener(serverEndpoint, "alice"), "reverse tunnel")
        local = yield self.listenTCP(tunnel)
        self.serverEndpoint, self.clientEndpoint, self.tunnel = serverEndpoint, client, tunnel
        return local

    @inlineCallbacks
    def exchange(self, local, payloads):
        clients = [TCPClient(p) for p in payloads]
        yield gatherResults([connectProtocol(self.connectTo(local), c) for c in clients])
        results = yield gatherResults([c.done for c in clients])
        return results


class ForwardTunnelTests(TunnelTestsMixin, TestCase):
    """
    Forward tunnels carry TCP connections to a target and back.
    """

    @inlineCallbacks
    def _echo(self, framing):
        local = yield self.forwardTunnel(framing, EchoFactory())
        payloads = [os.urandom(200000 + i) for i in range(20)]
        results = yield self.exchange(local, payloads)
        for payload, (data, reason) in zip(payloads, results):
            self.assertEqual(data, payload)
            self.assertTrue(reason.check(ConnectionDone))
        self.assertEqual(self.tunnel.stats.opened, 20)
        self.assertEqual(self.tunnel.stats.bytesIn, sum(map(len, payloads)))
        self.assertEqual(self.forward.stats.opened, 20)
        # One shared connection carried them all (closed once idle).
        self.assertEqual(len(self.muxConnections), 1)

    def test_echoMIO(self):
        """
        20 concurrent connections through an MIO forward tunnel, verified.
        """
        return self._echo("mio")

    @inlineCallbacks
    def test_logEventsNameStreamAndPeer(self):
        """
        Every tunnel log event carries the stream id and the peer as
        structured fields (and names the peer in its text).
        """
        from twisted.logger import formatEvent, globalLogPublisher
        events = []

        def observer(event):
            # Tunnel events (the echo target here is plain TCP, not a stream).
            if event.get("log_namespace") == "muxframe.tunnel" and "kind" in event:
                events.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        local = yield self.forwardTunnel("mio", EchoFactory())
        yield self.exchange(local, [b"logged"] * 3)
        self.assertGreaterEqual(len(events), 12)  # spliced + closed, both ends
        for event in events:
            self.assertIn("streamId", event)
            self.assertIsNotNone(event["streamId"], formatEvent(event))
            self.assertIn(event["peer"], formatEvent(event))

    def test_echoBMP(self):
        """
        20 concurrent connections through a BMP forward tunnel, verified.
        """
        return self._echo("bmp")

    @inlineCallbacks
    def test_halfClose(self):
        """
        The end of the local client's input reaches the target, which can
        still answer afterwards.
        """
        local = yield self.forwardTunnel("mio", Factory.forProtocol(CountAfterEOF))
        results = yield self.exchange(local, [b"x" * 123456, b""])
        self.assertEqual([data for data, reason in results], [b"123456", b"0"])

    @inlineCallbacks
    def test_targetRefused(self):
        """
        A target that refuses the connection closes the local connection
        without data, and is counted as a failure.
        """
        local = yield self.forwardTunnel("mio", EchoFactory())
        closed = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        address = closed.getHost()
        yield closed.stopListening()
        self.forward.target = TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        [(data, reason)] = yield self.exchange(local, [b"hello"])
        self.assertEqual(data, b"")
        self.assertEqual(self.forward.stats.failed, 1)

    @inlineCallbacks
    def test_backpressure(self):
        """
        A local client that does not read pauses the target's writes (it
        is not sent the whole flood into buffers); when it reads, every
        byte arrives.
        """
        flood = Factory.forProtocol(Flood)
        flood.instances = []
        local = yield self.forwardTunnel("mio", flood)
        reader = SlowReader()
        yield connectProtocol(self.connectTo(local), reader)
        for _ in range(300):
            if flood.instances and flood.instances[0].pauses:
                break
            yield deferLater(reactor, 0.01)
        # Let buffers settle, then check the writer is held back.
        yield deferLater(reactor, 0.3)
        writer = flood.instances[0]
        self.assertTrue(writer.paused)
        self.assertLess(writer.written, Flood.limit // 2)
        reader.transport.resumeProducing()
        size, reason = yield reader.done
        self.assertEqual(size, Flood.limit)

    @inlineCallbacks
    def test_connectionLostAbortsLocal(self):
        """
        When the multiplexed connection dies mid-transfer, the tunneled
        local connections are closed, not left hanging.
        """
        flood = Factory.forProtocol(Flood)
        flood.instances = []
        local = yield self.forwardTunnel("mio", flood)
        readers = [SlowReader() for _ in range(3)]
        for reader in readers:
            yield connectProtocol(self.connectTo(local), reader)
        for _ in range(300):
            if len(flood.instances) == 3:
                break
            yield deferLater(reactor, 0.01)
        for mux in self.serverEndpoint.multiplexers:
            mux.transport.abortConnection()
        for reader in readers:
            reader.transport.resumeProducing()
        results = yield gatherResults([r.done for r in readers])
        for size, reason in results:
            self.assertLess(size, Flood.limit)
        self.assertEqual(self.tunnel.stats.active, 0)
        # New tunneled connections work again over a new connection.
        yield deferLater(reactor, 0.1)
        self.forward.target = self.connectTo((yield self.listenTCP(EchoFactory())))
        [(data, reason)] = yield self.exchange(local, [b"again"])
        self.assertEqual(data, b"again")


class ReverseTunnelTests(TunnelTestsMixin, TestCase):
    """
    Reverse tunnels carry connections accepted on the server to a target
    reached by the client.
    """

    @inlineCallbacks
    def _echo(self, framing):
        local = yield self.reverseTunnel(framing, EchoFactory())
        payloads = [os.urandom(100000 + i) for i in range(10)]
        results = yield self.exchange(local, payloads)
        self.assertEqual([data for data, reason in results], payloads)
        self.assertEqual(self.tunnel.stats.opened, 10)

    def test_echoMIO(self):
        """
        Connections accepted on the server reach the client's target (MIO).
        """
        return self._echo("mio")

    def test_echoBMP(self):
        """
        Connections accepted on the server reach the client's target (BMP).
        """
        return self._echo("bmp")

    @inlineCallbacks
    def test_noClient(self):
        """
        With no client connected, a local connection is closed at once.
        """
        local = yield self.reverseTunnel("mio", EchoFactory())
        yield self.clientEndpoint.stop()
        for _ in range(300):
            if not self.serverEndpoint.multiplexers:
                break
            yield deferLater(reactor, 0.01)
        [(data, reason)] = yield self.exchange(local, [b"anyone?"])
        self.assertEqual(data, b"")
        self.assertEqual(self.tunnel.stats.failed, 1)


class FakeTransport:
    """
    A transport with no half-close (as TLS transports have none).
    """

    disconnecting = False

    def __init__(self):
        self.written = []
        self.producer = None
        self.closed = False
        self.paused = 0

    def write(self, data):
        self.written.append(data)

    def writeSequence(self, data):
        self.written.extend(data)

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def pauseProducing(self):
        self.paused += 1

    def resumeProducing(self):
        self.paused -= 1

    def loseConnection(self):
        self.closed = True

    def abortConnection(self):
        self.closed = "aborted"

    def getPeer(self):
        return "fake peer"


class SpliceUnitTests(TestCase):
    """
    L{link} and L{SpliceProtocol} on fake transports.
    """

    def makePair(self):
        from muxframe.tunnel import SpliceProtocol, link
        first, second = SpliceProtocol(), SpliceProtocol()
        first.makeConnection(FakeTransport())
        second.makeConnection(FakeTransport())
        first.dataReceived(b"early")
        link(first, second)
        return first, second

    def test_bufferedDataAndProducers(self):
        """
        Data received before the link is passed on, both transports are
        resumed and each is the producer of the other's output.
        """
        first, second = self.makePair()
        self.assertEqual(second.transport.written, [b"early"])
        self.assertEqual((first.transport.paused, second.transport.paused), (0, 0))
        second.transport.producer.pauseProducing()
        self.assertEqual(first.transport.paused, 1)

    def test_endWithoutHalfClose(self):
        """
        The end of one side's input closes a transport that cannot
        half-close (after its output), instead of raising.
        """
        first, second = self.makePair()
        first.readConnectionLost()
        self.assertIs(second.transport.closed, True)
        self.assertIsNone(second.transport.producer)

    def test_uncleanLossAborts(self):
        """
        One side lost uncleanly aborts the other.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure
        first, second = self.makePair()
        first.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(second.transport.closed, "aborted")

    def test_cleanLossCloses(self):
        """
        One side lost cleanly closes the other after its output.
        """
        from twisted.python.failure import Failure
        first, second = self.makePair()
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIs(second.transport.closed, True)

    def test_lostWhileTargetConnectCompletes(self):
        """
        If the accepted side is lost while the target connection is being
        completed (its pending end is delivered when the splice resumes it),
        the tunnel does not cancel the already-made connection (Twisted's
        connector would raise) but closes it.
        """
        from twisted.internet.error import ConnectingCancelledError, NotConnectingError
        from twisted.internet.defer import Deferred
        from twisted.python.failure import Failure
        from muxframe.tunnel import ForwardFactory

        class RacyEndpoint:
            def connect(self, factory):
                self.factory = factory
                self.connecting = True

                def cancel(d):
                    d.errback(ConnectingCancelledError(None))
                    if not self.connecting:
                        raise NotConnectingError()

                self.d = Deferred(cancel)
                return self.d

            def complete(self):
                self.connecting = False
                protocol = self.factory.buildProtocol(None)
                protocol.makeConnection(FakeTransport())
                self.d.callback(protocol)
                return protocol

        class EndingTransport(FakeTransport):
            def resumeProducing(self):
                FakeTransport.resumeProducing(self)
                self.protocol.connectionLost(Failure(ConnectionDone()))

        target = RacyEndpoint()
        forward = ForwardFactory(target)
        accepted = forward.buildProtocol(None)
        transport = EndingTransport()
        transport.protocol = accepted
        accepted.makeConnection(transport)
        other = target.complete()
        self.assertTrue(accepted.disconnected)
        self.assertIs(other.transport.closed, True)
        self.assertEqual(forward.stats.active, 0)
