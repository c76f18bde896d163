"""
Tests for L{muxframe.endpoints}: multiplexed server and client endpoints over
real loopback TCP, and the client's connect timeout and reconnection with an
injected clock.
"""

from zope.interface import directlyProvides
from zope.interface.verify import verifyObject

from twisted.internet import reactor
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    inlineCallbacks,
    succeed,
)
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
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
from muxframe.endpoints import MultiplexedConnectError, PeerNotMultiplexingError
from tests.support import captureLogs, logLines


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

    @inlineCallbacks
    def test_forgottenBeforeLostFires(self):
        """
        When a server connection's whenLost() and drain() Deferreds fire,
        neither the endpoint nor its port lists it any more (so
        stopListening's Deferred, which waits for every drain(), fires
        with the connections gone, however fast the drain).
        """
        server, port = yield self.listen("mio", Factory.forProtocol(Echo))
        client = self.client("mio", port)
        yield client.whenConnected()
        mux = yield server.whenConnected()
        seen = []
        lost = mux.whenLost()
        lost.addCallback(lambda _: seen.append(mux in server.multiplexers))
        drained = mux.drain(10)
        drained.addCallback(lambda _: seen.append(mux in port.multiplexers))
        yield gatherResults([lost, drained])
        self.assertEqual(seen, [False, False])


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
    A client endpoint on StringTransports; fails while C{refuse} is set,
    never completes while C{hang} is set.
    """

    def __init__(self, tls=False):
        self.attempts = 0
        self.refuse = False
        self.hang = False
        self.cancelled = 0
        self.protocols = []
        self.tls = tls

    def connect(self, factory):
        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError("nobody home"))
        if self.hang:
            def cancel(d):
                self.cancelled += 1
            return Deferred(cancel)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        if self.tls:
            directlyProvides(transport, ISSLTransport)
        protocol.makeConnection(transport)
        self.protocols.append(protocol)
        return succeed(protocol)


MIO_KEEPALIVE = bytes.fromhex("0000000000000008")  # a frame every MIO peer ignores
MIO_PROBE = bytes.fromhex("00000000000d0a08")


class ClockedEndpointMixin:
    """
    A client endpoint over a L{FakeEndpoint}, on a L{Clock}, its logs
    captured.
    """

    def setUp(self):
        self.clock = Clock()
        self.inner = FakeEndpoint()
        self.events = captureLogs(self)

    def endpoint(self, **kwargs):
        return MultiplexedClientEndpoint(
            self.inner, framing=kwargs.pop("framing", "mio"), reactor=self.clock,
            retryPolicy=lambda attempt: float(attempt), **kwargs)


class ClientEndpointContractTests(ClockedEndpointMixin, SynchronousTestCase):
    """
    The client endpoint keeps the endpoint contract, on a L{Clock}: an
    attempt that fails fails connect() at once with its error, a peer that
    closes or speaks something else fails it saying so, and nothing runs
    once nothing needs the connection.
    """

    def assertNothingScheduled(self):
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def ready(self, endpoint, protocol=None):
        """
        Let the newest connection's peer speak: it is confirmed at once.
        """
        protocol = protocol or self.inner.protocols[-1]
        protocol.dataReceived(MIO_KEEPALIVE)

    def test_refusedFailsAtOnce(self):
        """
        A refused connection fails connect() at once with the real error,
        as TCP4ClientEndpoint does; nothing retries or stays scheduled.
        """
        self.inner.refuse = True
        endpoint = self.endpoint(connectTimeout=9)
        d = endpoint.connect(Factory.forProtocol(Echo))
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(self.inner.attempts, 1)
        self.assertNothingScheduled()
        # The next connect() tries again, once.
        self.failureResultOf(endpoint.connect(Factory.forProtocol(Echo)),
                             ConnectionRefusedError)
        self.assertEqual(self.inner.attempts, 2)
        self.assertNothingScheduled()

    def test_connectTimeout(self):
        """
        An attempt that never completes fails connect() after
        connectTimeout with L{MultiplexedConnectError} saying what it was
        waiting for, and the attempt is cancelled.
        """
        self.inner.hang = True
        endpoint = self.endpoint(connectTimeout=9)
        d = endpoint.connect(Factory.forProtocol(Echo))
        self.clock.advance(8.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        failure = self.failureResultOf(d, MultiplexedConnectError)
        self.assertIn("within 9 s (still connecting)", str(failure.value))
        self.assertEqual(self.inner.cancelled, 1)
        self.assertNothingScheduled()

    def test_sharedConnection(self):
        """
        Every connect() opens a stream on the same connection, made once.
        """
        endpoint = self.endpoint()
        first = endpoint.connect(Factory.forProtocol(Echo))
        second = endpoint.connect(Factory.forProtocol(Echo))
        self.ready(endpoint)
        first, second = self.successResultOf(first), self.successResultOf(second)
        self.assertEqual(self.inner.attempts, 1)
        self.assertIs(first.transport._mux, second.transport._mux)
        self.assertNotEqual(first.transport.streamId, second.transport.streamId)

    def test_silentPeerConfirmedAfterWindow(self):
        """
        MIO and BMP peers speak only when spoken to: a connection whose peer
        stays silent is used after the confirmation window.  A MIO client
        sends a probe frame meanwhile (ignored by MIO peers, rejected by
        line-based and TLS servers).
        """
        endpoint = self.endpoint(confirmTimeout=0.5)
        d = endpoint.connect(Factory.forProtocol(Echo))
        self.assertNoResult(d)
        self.assertTrue(self.inner.protocols[0].transport.value().startswith(MIO_PROBE))
        self.clock.advance(0.4)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.successResultOf(d)

    def test_peerClosesAtOnce(self):
        """
        A peer that accepts and closes fails connect() with
        L{PeerNotMultiplexingError} saying so.
        """
        endpoint = self.endpoint()
        d = endpoint.connect(Factory.forProtocol(Echo))
        self.inner.protocols[0].connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(d, PeerNotMultiplexingError)
        self.assertIn("closed the connection before sending any MIO frame",
                      str(failure.value))
        self.assertNothingScheduled()

    def test_peerSpeaksAnotherProtocol(self):
        """
        A peer answering in another protocol (an HTTP server rejecting the
        probe) fails connect() with L{PeerNotMultiplexingError} naming it,
        and the connection is dropped.
        """
        endpoint = self.endpoint()
        d = endpoint.connect(Factory.forProtocol(Echo))
        protocol = self.inner.protocols[0]
        protocol.dataReceived(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        self.clock.advance(0)
        self.assertTrue(protocol.transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(d, PeerNotMultiplexingError)
        self.assertIn("does not speak MIO", str(failure.value))
        self.assertIn("this looks like an HTTP response", str(failure.value))

    def test_tlsServerNamedAtOnce(self):
        """
        A TLS server's alert (bytes a MIO decoder skips) fails connect() at
        once, without waiting for the window, suggesting tls:.
        """
        endpoint = self.endpoint(confirmTimeout=10)
        d = endpoint.connect(Factory.forProtocol(Echo))
        protocol = self.inner.protocols[0]
        protocol.dataReceived(bytes.fromhex("15030300020246"))
        failure = self.failureResultOf(d, PeerNotMultiplexingError)
        self.assertIn("does not speak MIO: this looks like a TLS alert", str(failure.value))
        self.assertIn("a tls: endpoint", str(failure.value))
        self.assertTrue(protocol.transport.disconnecting)

    def test_bmpPeerClosesAtOnce(self):
        """
        BMP (no probe: any BMP frame names a stream) also fails connect()
        when the peer closes before the window ends.
        """
        endpoint = self.endpoint(framing="bmp")
        d = endpoint.connect(Factory.forProtocol(Echo))
        self.assertEqual(self.inner.protocols[0].transport.value(), b"")
        self.inner.protocols[0].connectionLost(Failure(ConnectionLost("reset")))
        failure = self.failureResultOf(d, PeerNotMultiplexingError)
        self.assertIn("before sending any BMP frame", str(failure.value))

    def test_tlsHandshakeFailureFailsAtOnce(self):
        """
        Over TLS, connect() waits for the handshake; a connection lost
        before it fails connect() at once with that error, and nothing
        retries.
        """
        self.inner.tls = True
        endpoint = self.endpoint(connectTimeout=5)
        d = endpoint.connect(Factory.forProtocol(Echo))
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertNoResult(d)  # no confirmation window before the handshake
        self.inner.protocols[0].connectionLost(
            Failure(ConnectionLost("bad certificate")))
        failure = self.failureResultOf(d, MultiplexedConnectError)
        self.assertIn("during the TLS handshake", str(failure.value))
        self.assertFalse([e for e in self.events if "} up" in e.get("log_format", "")])
        self.assertEqual(self.inner.attempts, 1)
        self.assertNothingScheduled()
        again = endpoint.connect(Factory.forProtocol(Echo))
        self.inner.protocols[1].handshakeCompleted()
        self.assertFalse([e for e in self.events if "} up" in e.get("log_format", "")])
        self.ready(endpoint)
        self.successResultOf(again)
        self.assertEqual(len([e for e in self.events if "} up" in e.get("log_format", "")]), 1)

    def test_idleConnectionClosed(self):
        """
        On demand, the shared connection is closed once its last stream
        ends and nothing waits for it; nothing stays scheduled.
        """
        endpoint = self.endpoint(keepaliveInterval=0)
        child = endpoint.connect(collectorFactory(b""))
        self.ready(endpoint)
        child = self.successResultOf(child)
        mux = child.transport._mux
        child.transport.abortConnection()
        self.clock.advance(0)
        self.assertTrue(child.done.called)
        self.assertTrue(mux.transport.disconnecting)
        mux.connectionLost(Failure(ConnectionDone()))
        self.assertNothingScheduled()
        # A later connect() makes a new connection.
        later = endpoint.connect(Factory.forProtocol(Echo))
        self.ready(endpoint)
        self.successResultOf(later)
        self.assertEqual(self.inner.attempts, 2)

    def test_connectAsLastStreamEnds(self):
        """
        A connect() made while the last stream ends (from its
        connectionLost) reuses the connection instead of closing it.
        """
        endpoint = self.endpoint()
        again = []

        class Reconnecting(Protocol):
            def connectionLost(self, reason):
                again.append(endpoint.connect(Factory.forProtocol(Echo)))

        first = endpoint.connect(Factory.forProtocol(Reconnecting))
        self.ready(endpoint)
        first = self.successResultOf(first)
        first.transport.abortConnection()
        self.clock.advance(0)
        second = self.successResultOf(again[0])
        self.assertIs(second.transport._mux, first.transport._mux)
        self.assertFalse(second.transport._mux.transport.disconnecting)
        self.assertEqual(self.inner.attempts, 1)

    def test_cancelConnect(self):
        """
        Cancelling a connect() fails it with CancelledError and, as nothing
        else waits, gives up the attempt.
        """
        self.inner.hang = True
        endpoint = self.endpoint()
        d = endpoint.connect(Factory.forProtocol(Echo))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.inner.cancelled, 1)
        self.assertNothingScheduled()

    def test_stopFailsWaitingConnects(self):
        """
        Stopping the endpoint fails pending connects instead of leaving
        them waiting, and cancels the attempt.
        """
        self.inner.hang = True
        endpoint = self.endpoint(connectTimeout=100)
        d = endpoint.connect(Factory.forProtocol(Echo))
        stopped = endpoint.stop()
        self.successResultOf(stopped)
        failure = self.failureResultOf(d, MultiplexedConnectError)
        self.assertIn("stopped", str(failure.value))
        self.assertEqual(self.inner.cancelled, 1)
        self.assertNothingScheduled()


class StandingConnectionTests(ClockedEndpointMixin, SynchronousTestCase):
    """
    keepConnected(): a standing connection, re-made by a ClientService with
    backoff, every failed attempt logged with its cause.
    """

    def endpoint(self, **kwargs):
        endpoint = ClockedEndpointMixin.endpoint(self, **kwargs)

        def stop():
            d = endpoint.stop()
            self.clock.advance(0)
            return d

        self.addCleanup(stop)
        return endpoint

    def warnings(self):
        return logLines(self.events, "warn")

    def test_reconnectsWithBackoff(self):
        """
        A standing connection is re-made with backoff after failures and
        losses; each failed attempt is logged at warn with its cause; a
        connect() between attempts fails at once naming the last failure.
        """
        self.inner.refuse = True
        endpoint = self.endpoint()
        endpoint.keepConnected()
        self.assertEqual(self.inner.attempts, 1)
        self.assertEqual(len(self.warnings()), 1)
        self.assertIn("nobody home", self.warnings()[0])
        failure = self.failureResultOf(endpoint.connect(Factory.forProtocol(Echo)),
                                       MultiplexedConnectError)
        self.assertIn("nobody home", str(failure.value))
        self.assertEqual(self.inner.attempts, 1)
        self.clock.advance(1.0)   # the first retry after 1 s: refused
        self.assertEqual(self.inner.attempts, 2)
        self.assertEqual(len(self.warnings()), 2)
        self.inner.refuse = False
        self.clock.advance(1.9)   # the second is due 2 s later
        self.assertEqual(self.inner.attempts, 2)
        self.clock.advance(0.2)
        self.assertEqual(self.inner.attempts, 3)
        self.inner.protocols[0].dataReceived(MIO_KEEPALIVE)
        child = self.successResultOf(endpoint.connect(collectorFactory(b"")))
        # Idle, it stays up: no stream needs it, but the role does.
        child.transport.abortConnection()
        self.clock.advance(0)
        mux = child.transport._mux
        self.assertFalse(mux.transport.disconnecting)
        # Lost: re-made after the policy's delay.
        mux.connectionLost(Failure(ConnectionLost("gone")))
        self.assertEqual(self.inner.attempts, 3)
        self.clock.advance(1.0)
        self.assertEqual(self.inner.attempts, 4)

    def test_connectDuringAttemptWaitsForIt(self):
        """
        A connect() while the standing connection's attempt is in progress
        waits for that attempt and fails with its error.
        """
        self.inner.tls = True
        endpoint = self.endpoint()
        endpoint.keepConnected()
        d = endpoint.connect(Factory.forProtocol(Echo))
        self.assertNoResult(d)
        self.inner.protocols[0].connectionLost(Failure(ConnectionLost("no")))
        self.failureResultOf(d, MultiplexedConnectError)

    def test_drainStops(self):
        """
        drain() ends the standing connection and the ClientService: nothing
        is left scheduled.
        """
        endpoint = self.endpoint(keepaliveInterval=0)
        endpoint.keepConnected()
        self.inner.protocols[0].dataReceived(MIO_KEEPALIVE)
        mux = self.successResultOf(endpoint.whenConnected())
        d = endpoint.drain()
        self.assertTrue(mux.transport.disconnecting)
        mux.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(endpoint.service)


class Closer(Protocol):
    """
    A TCP server protocol that accepts and closes at once.
    """

    def connectionMade(self):
        self.transport.loseConnection()


class RealSocketContractTests(LoopbackMixin, TestCase):
    """
    The endpoint contract over real loopback sockets.
    """

    @inlineCallbacks
    def _cleanReactorWithoutStop(self, framing):
        server, port = yield self.listen(framing, Factory.forProtocol(Echo))
        client = MultiplexedClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            framing=framing)
        child = yield client.connect(collectorFactory(b"round trip"))
        self.assertEqual((yield child.done), b"round trip")
        self.assertIsNone(client.service)
        # The test ends here: trial fails it if a connection, a timer or a
        # reconnect loop is left (the idle connection closes on its own).

    def test_cleanReactorWithoutStopMIO(self):
        """
        A test that connects, uses a stream and closes it leaves a clean
        reactor without calling stop() (MIO).
        """
        return self._cleanReactorWithoutStop("mio")

    def test_cleanReactorWithoutStopBMP(self):
        """
        The same over BMP.
        """
        return self._cleanReactorWithoutStop("bmp")

    @inlineCallbacks
    def test_refusedFailsPromptly(self):
        """
        Nothing listening: connect() fails with ConnectionRefusedError, long
        before connectTimeout.
        """
        probe = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        number = probe.getHost().port
        yield probe.stopListening()
        client = MultiplexedClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", number), connectTimeout=60)
        started = reactor.seconds()
        yield self.assertFailure(client.connect(Factory.forProtocol(Echo)),
                                 ConnectionRefusedError)
        self.assertLess(reactor.seconds() - started, 30)

    @inlineCallbacks
    def test_peerAcceptsAndCloses(self):
        """
        A TCP server that accepts and closes at once fails connect() with
        PeerNotMultiplexingError, for both framings.
        """
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Closer))
        self.addCleanup(port.stopListening)
        for framing in ("mio", "bmp"):
            # A long window: the test must not depend on how fast the close comes.
            client = self.client(framing, port, confirmTimeout=20)
            error = yield self.assertFailure(
                client.connect(Factory.forProtocol(Echo)), PeerNotMultiplexingError)
            self.assertIn("closed the connection before sending any %s frame"
                          % (framing.upper(),), str(error))

    @inlineCallbacks
    def test_httpServerIsNamed(self):
        """
        A MIO client pointed at an HTTP server fails connect() saying the
        peer answered with an HTTP response.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(Resource()))
        self.addCleanup(port.stopListening)
        client = self.client("mio", port, confirmTimeout=20)
        error = yield self.assertFailure(
            client.connect(Factory.forProtocol(Echo)), PeerNotMultiplexingError)
        self.assertIn("does not speak MIO: this looks like an HTTP response", str(error))

    @inlineCallbacks
    def test_otherFramingIsNamed(self):
        """
        A BMP client whose stream reaches a MIO server gets the MIO server's
        answer named in its stream's connectionLost.
        """
        server, port = yield self.listen("mio", Factory.forProtocol(Echo))
        client = self.client("bmp", port)
        child = yield client.connect(collectorFactory(b"hello\r\n"))
        yield child.done
        self.assertIn("this looks like MIO frames; the peer does not speak BMP",
                      child.reason.getErrorMessage())


class LogTests(LoopbackMixin, TestCase):
    """
    What the endpoints log: peers as endpoint strings, a protocol error as
    the reason a connection was lost (never "closed cleanly"), "up" only
    once a connection is ready.
    """

    def setUp(self):
        LoopbackMixin.setUp(self)
        self.events = captureLogs(self)

    def lines(self, level=None):
        return logLines(self.events, level)

    @inlineCallbacks
    def test_httpRequestOnServerPort(self):
        """
        An HTTP request on a MIO port: one warning naming what it looks
        like; the connection's loss is logged with the protocol error, not
        as a clean close.
        """
        from tests.conformance import RawClient
        server, port = yield self.listen("mio", Factory.forProtocol(Echo))
        raw = RawClient(b"GET / HTTP/1.1\r\nHost: muxframe\r\n\r\n")
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(lambda: raw))
        yield raw.closed
        for _ in range(100):
            if any("lost" in line for line in self.lines("info")):
                break
            yield deferLater(reactor, 0.01)
        [warning] = [l for l in self.lines("warn") if "protocol error" in l]
        self.assertIn("this looks like an HTTP request; this port speaks MIO", warning)
        self.assertIn("from tcp:127.0.0.1:", warning)
        [lost] = [l for l in self.lines("info") if "lost" in l]
        self.assertIn("this looks like an HTTP request", lost)
        self.assertNotIn("closed cleanly", lost)
        self.assertNotIn("IPv4Address", "\n".join(self.lines()))

    @inlineCallbacks
    def test_protocolErrorFromServer(self):
        """
        A client whose peer breaks the protocol logs the loss with the
        protocol error.
        """
        server, port = yield self.listen("mio", Factory.forProtocol(Echo))
        client = self.client("mio", port)
        holder = yield client.connect(collectorFactory(b""))
        serverMux = yield server.whenConnected()
        # An open for stream 0: a protocol error.
        serverMux.transport.write(bytes.fromhex("000000000400000c"))
        yield holder.done
        self.assertIn("open frame for stream 0", holder.reason.getErrorMessage())
        yield deferLater(reactor, 0)  # the endpoint hears of it after the streams
        [lost] = [l for l in self.lines("info") if "connection to" in l and "lost" in l]
        self.assertIn("open frame for stream 0", lost)
        self.assertNotIn("closed cleanly", lost)
        [up] = [l for l in self.lines("info") if "connection to" in l and " up" in l]
        self.assertEqual(up, "mio connection to tcp:127.0.0.1:%d up" % (port.getHost().port,))
