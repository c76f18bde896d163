"""
Tests for L{muxframe.endpoints}: multiplexed server and client endpoints over
real loopback TCP, and the client's connect timeout and reconnection with an
injected clock.
"""

from zope.interface import directlyProvides
from zope.interface.verify import verifyObject

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import (
    IListeningPort,
    ISSLTransport,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint, StreamAddress
from muxframe.endpoints import MultiplexedConnectError


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Collector(Protocol):
    """
    Send C{payload}, half-close, collect the answer until the stream ends.
    """

    payload = b""

    def connectionMade(self):
        self.received = []
        self.done = Deferred()
        if self.payload:
            self.transport.write(self.payload)
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.reason = reason
        self.done.callback(b"".join(self.received))


def collectorFactory(payload):
    factory = Factory.forProtocol(Collector)
    factory.protocol = type("C", (Collector,), {"payload": payload})
    return factory


def cancelAbortTimers():
    """
    Cancel any C{Multiplexer._abortTransport} grace timer still pending when
    a test ends (older cores left them behind after the connection was lost;
    a harmless safety net now).
    """
    for call in reactor.getDelayedCalls():
        if getattr(call.func, "__name__", "") == "_abortTransport":
            call.cancel()


class LoopbackMixin:
    """
    Helpers for real-socket tests on 127.0.0.1.
    """

    timeout = 30

    def setUp(self):
        self.addCleanup(cancelAbortTimers)

    @inlineCallbacks
    def listen(self, framing, factory, **settings):
        server = MultiplexedServerEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
            framing=framing, **settings)
        port = yield server.listen(factory)
        self.addCleanup(port.stopListening, 1)
        return server, port

    def client(self, framing, port, **kwargs):
        client = MultiplexedClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            framing=framing, **kwargs)
        self.addCleanup(client.stop)
        return client


class EndpointRoundTripTests(LoopbackMixin, TestCase):
    """
    Streams over real loopback TCP through both endpoints, for each framing.
    """

    def test_interfaces(self):
        """
        Both endpoints provide the Twisted endpoint interfaces.
        """
        inner = TCP4ServerEndpoint(reactor, 0)
        self.assertTrue(verifyObject(IStreamServerEndpoint, MultiplexedServerEndpoint(inner)))
        innerClient = TCP4ClientEndpoint(reactor, "127.0.0.1", 1)
        self.assertTrue(verifyObject(
            IStreamClientEndpoint, MultiplexedClientEndpoint(innerClient, framing="bmp")))

    def test_badFramingAndSettings(self):
        """
        An unknown framing or a bad setting is a ValueError naming it.
        """
        inner = TCP4ServerEndpoint(reactor, 0)
        e = self.assertRaises(ValueError, MultiplexedServerEndpoint, inner, framing="xx")
        self.assertIn("xx", str(e))
        e = self.assertRaises(ValueError, MultiplexedClientEndpoint, inner, maxStreams=0)
        self.assertIn("maxStreams", str(e))

    @inlineCallbacks
    def _roundTrip(self, framing):
        server, port = yield self.listen(framing, Factory.forProtocol(Echo))
        self.assertTrue(verifyObject(IListeningPort, port))
        client = self.client(framing, port)
        payloads = [bytes([i]) * (100000 + i) for i in range(8)]
        protocols = yield gatherResults(
            [client.connect(collectorFactory(p)) for p in payloads])
        for protocol in protocols:
            self.assertIsInstance(protocol.transport.getPeer(), StreamAddress)
        answers = yield gatherResults([p.done for p in protocols])
        self.assertEqual(answers, payloads)
        # One shared connection carried every stream.
        self.assertEqual(len(server.multiplexers), 1)
        self.assertEqual(len(port.multiplexers), 1)

    def test_roundTripMIO(self):
        """
        Each connect() over MIO is a stream to the listen() factory.
        """
        return self._roundTrip("mio")

    def test_roundTripBMP(self):
        """
        Each connect() over BMP is a stream to the listen() factory.
        """
        return self._roundTrip("bmp")

    @inlineCallbacks
    def test_serverOpensStreams(self):
        """
        The server can open streams toward the client's C{childFactory}
        (what a reverse tunnel does).
        """
        server, port = yield self.listen("mio", Factory.forProtocol(Echo))
        client = self.client("mio", port, childFactory=Factory.forProtocol(Echo))
        yield client.whenConnected()
        mux = yield server.whenConnected()
        self.assertIs(mux, server.currentMultiplexer())
        protocol = yield mux.openStream(collectorFactory(b"reverse" * 1000))
        answer = yield protocol.done
        self.assertEqual(answer, b"reverse" * 1000)

    @inlineCallbacks
    def test_stopListeningDrains(self):
        """
        stopListening() stops accepting, lets an open stream finish, then
        closes the connection.
        """
        server, port = yield self.listen("mio", Factory.forProtocol(Echo))
        client = self.client("mio", port)
        holder = yield client.connect(collectorFactory(b""))
        # Wait until the server has the stream (an echo came back).
        holder.transport.write(b"ping ")
        while not holder.received:
            yield deferLater(reactor, 0.01)
        stopped = port.stopListening(10)
        self.assertNoResult(stopped)
        # The open stream still works while draining.
        holder.transport.write(b"still here")
        holder.transport.loseWriteConnection()
        answer = yield holder.done
        self.assertEqual(answer, b"ping still here")
        yield stopped
        self.assertEqual(server.multiplexers, [])


class ReentrantConnectTests(LoopbackMixin, TestCase):
    """
    connect() called from the callback of another connect().
    """

    @inlineCallbacks
    def test_connectFromConnectCallback(self):
        """
        A connect() made while the previous one's result is being delivered
        (inside the ClientService's own callbacks) opens its stream on the
        shared connection instead of failing.
        """
        server, port = yield self.listen("mio", Factory.forProtocol(Echo))
        client = self.client("mio", port)
        second = []

        def again(first):
            second.append(client.connect(collectorFactory(b"second")))
            return first

        first = yield client.connect(collectorFactory(b"first")).addCallback(again)
        self.assertEqual((yield first.done), b"first")
        child = yield second[0]
        self.assertEqual((yield child.done), b"second")
        self.assertIs(first.transport._mux, child.transport._mux)


class FakeEndpoint:
    """
    A client endpoint on StringTransports; fails while C{refuse} is set.
    """

    def __init__(self, tls=False):
        self.attempts = 0
        self.refuse = False
        self.protocols = []
        self.tls = tls

    def connect(self, factory):
        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError("nobody home"))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        if self.tls:
            directlyProvides(transport, ISSLTransport)
        protocol.makeConnection(transport)
        self.protocols.append(protocol)
        return succeed(protocol)


class ClientTimingTests(SynchronousTestCase):
    """
    Connect timeout and reconnection, on a L{Clock}.
    """

    def setUp(self):
        self.clock = Clock()
        self.inner = FakeEndpoint()

    def endpoint(self, **kwargs):
        endpoint = MultiplexedClientEndpoint(
            self.inner, framing="mio", reactor=self.clock,
            retryPolicy=lambda attempt: float(attempt), **kwargs)
        self.addCleanup(self.clock.advance, 0)
        self.addCleanup(endpoint.stop)
        return endpoint

    def test_connectFailsAfterTimeout(self):
        """
        connect() without a reachable server fails with
        L{MultiplexedConnectError} after C{connectTimeout}, naming the last
        error; not before.
        """
        self.inner.refuse = True
        endpoint = self.endpoint(connectTimeout=9)
        d = endpoint.connect(Factory.forProtocol(Echo))
        self.clock.pump([0.5] * 17 + [0.4])
        self.assertNoResult(d)
        # Growing delays: attempts at 0, 1, 3 and 6 seconds.
        self.assertEqual(self.inner.attempts, 4)
        self.clock.advance(0.2)
        failure = self.failureResultOf(d, MultiplexedConnectError)
        self.assertIn("9 s", str(failure.value))
        self.assertIn("nobody home", str(failure.value))

    def test_sharedConnection(self):
        """
        Every connect() opens a stream on the same connection.
        """
        endpoint = self.endpoint()
        first = self.successResultOf(endpoint.connect(Factory.forProtocol(Echo)))
        second = self.successResultOf(endpoint.connect(Factory.forProtocol(Echo)))
        self.assertEqual(self.inner.attempts, 1)
        self.assertNotEqual(first.transport.streamId, second.transport.streamId)

    def test_reconnectsWithBackoff(self):
        """
        A lost connection fails its streams and is re-made with backoff;
        new connects then use the new connection.
        """
        endpoint = self.endpoint()
        child = self.successResultOf(endpoint.connect(collectorFactory(b"")))
        self.inner.refuse = True
        self.inner.protocols[0].connectionLost(Failure(ConnectionLost("gone")))
        self.assertTrue(child.done.called)
        d = endpoint.connect(collectorFactory(b""))
        self.clock.advance(1.0)   # first retry after 1 s: refused
        self.assertEqual(self.inner.attempts, 2)
        self.assertNoResult(d)
        self.inner.refuse = False
        self.clock.advance(1.9)   # the second is due 2 s later
        self.assertEqual(self.inner.attempts, 2)
        self.clock.advance(0.2)
        self.assertEqual(self.inner.attempts, 3)
        self.successResultOf(d)
        self.assertIsNot(endpoint._current, None)

    def test_waitsForTLSHandshake(self):
        """
        Over a TLS transport, connect() waits for the handshake; a
        connection lost before it (a refused certificate) is retried, and a
        connect that never sees a handshake fails naming that error.
        """
        self.inner.tls = True
        endpoint = self.endpoint(connectTimeout=5)
        d = endpoint.connect(Factory.forProtocol(Echo))
        self.assertNoResult(d)
        self.inner.protocols[0].connectionLost(Failure(ConnectionLost("bad certificate")))
        self.clock.advance(0)
        self.clock.advance(1.0)
        self.assertEqual(self.inner.attempts, 2)
        self.assertNoResult(d)
        self.inner.protocols[1].handshakeCompleted()
        self.successResultOf(d)
        self.inner.protocols[1].connectionLost(Failure(ConnectionLost("bad certificate")))
        self.clock.advance(0)
        late = endpoint.connect(Factory.forProtocol(Echo))
        self.clock.pump([0.5] * 11)
        failure = self.failureResultOf(late, MultiplexedConnectError)
        self.assertIn("bad certificate", str(failure.value))

    def test_stopFailsWaitingConnects(self):
        """
        Stopping the endpoint fails pending connects instead of leaving them
        waiting.
        """
        self.inner.refuse = True
        endpoint = self.endpoint(connectTimeout=100)
        d = endpoint.connect(Factory.forProtocol(Echo))
        stopped = endpoint.stop()
        self.clock.advance(0)
        self.successResultOf(stopped)
        self.failureResultOf(d, MultiplexedConnectError)
