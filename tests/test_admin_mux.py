"""
Tests for the multiplexer side of the operator surfaces: endpoint
observers (L{muxframe.observed}), and L{muxframe.admin.muxstatus}'s
tallies, health and metrics, over real loopback connections.
"""

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint
from muxframe.admin.metrics import CATALOGUE
from muxframe.admin.muxstatus import MultiplexerStatus, TunnelView
from muxframe.admin.status import DEGRADED, HEALTHY
from muxframe.observed import IMultiplexerObserver


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Exchange(Protocol):
    """
    Send C{payload}, collect the echo, then close.
    """

    payload = b"x" * 1000

    def connectionMade(self):
        self.received = b""
        self.done = Deferred()
        self.transport.write(self.payload)

    def dataReceived(self, data):
        self.received += data
        if len(self.received) >= len(self.payload):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.received)


@implementer(IMultiplexerObserver)
class Recorder:
    def __init__(self):
        self.events = []

    def multiplexerConnected(self, endpoint, mux):
        self.events.append(("connected", endpoint, mux))

    def multiplexerLost(self, endpoint, mux, reason):
        self.events.append(("lost", endpoint, mux,
                            mux.counters.asDict()["bytesReceived"]))


class ObserverTests(TestCase):
    """
    Both endpoints tell their observers about each multiplexed connection
    made and lost, with its final counters.
    """

    @inlineCallbacks
    def setUp(self):
        self.server = MultiplexedServerEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
        self.port = yield self.server.listen(Factory.forProtocol(Echo))
        self.addCleanup(self.port.stopListening)
        self.client = MultiplexedClientEndpoint(TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.port.getHost().port))
        self.addCleanup(self.client.stop)

    @inlineCallbacks
    def exchange(self):
        protocol = yield self.client.connect(Factory.forProtocol(Exchange))
        received = yield protocol.done
        self.assertEqual(received, Exchange.payload)

    @inlineCallbacks
    def waitFor(self, condition):
        for _ in range(200):
            if condition():
                return
            yield deferLater(reactor, 0.01)
        self.fail("timed out")

    @inlineCallbacks
    def test_observed(self):
        serverSide, clientSide = Recorder(), Recorder()
        verifyObject(IMultiplexerObserver, serverSide)
        self.server.addObserver(serverSide)
        self.client.addObserver(clientSide)
        yield self.exchange()
        # On demand: the client closes its connection once the stream ended.
        yield self.waitFor(lambda: len(serverSide.events) == 2
                           and len(clientSide.events) == 2)
        for recorder, endpoint in ((serverSide, self.server),
                                   (clientSide, self.client)):
            (made, lost) = recorder.events
            self.assertEqual((made[0], made[1], lost[0], lost[1]),
                             ("connected", endpoint, "lost", endpoint))
            self.assertIs(made[2], lost[2])
            self.assertEqual(lost[3], len(Exchange.payload))
        self.server.removeObserver(serverSide)
        yield self.exchange()
        yield self.waitFor(lambda: len(clientSide.events) == 4)
        self.assertEqual(len(serverSide.events), 2)

    @inlineCallbacks
    def test_tallyAndStatus(self):
        """
        The tally keeps the lost connections' counters, so totals only grow;
        a client endpoint without a connection makes the client role
        degraded.
        """
        serverView = TunnelView("mio:tcp:0", self.server)
        clientView = TunnelView("mio:tcp:127.0.0.1:0", self.client)
        server = MultiplexerStatus("server", [serverView], reactor)
        client = MultiplexerStatus("client", [clientView], reactor)
        for made in (1, 2):
            yield self.exchange()
            yield self.waitFor(lambda: serverView.tally.made == made
                               and not serverView.tally.live
                               and not clientView.tally.live)
        totals = serverView.tally.totals()
        self.assertEqual(totals["bytesReceived"], 2 * len(Exchange.payload))
        self.assertEqual(totals["bytesSent"], 2 * len(Exchange.payload))
        self.assertEqual(totals["streamsAccepted"], 2)
        self.assertEqual(clientView.tally.totals()["streamsOpened"], 2)
        self.assertEqual(server.health()["status"], HEALTHY)
        report = client.health()
        self.assertEqual(report["status"], DEGRADED)
        self.assertIn("no mio:tcp:127.0.0.1:0 connection is up", report["reasons"])
        metrics = server.metrics()
        samples = dict(((name, labels), value)
                       for name, rows in metrics.samples.items()
                       for labels, value in rows)
        self.assertEqual(samples[("muxframe_mux_connections", ("mio:tcp:0",))], 2)
        self.assertEqual(samples[("muxframe_mux_bytes",
                                  ("mio:tcp:0", "received"))], 2000)
        self.assertEqual(samples[("muxframe_mux_streams_opened",
                                  ("mio:tcp:0", "peer"))], 2)
        self.assertTrue(all(name in CATALOGUE for name in metrics.samples))
        stats = server.stats()
        self.assertEqual(stats["endpoints"][0]["connectionsMade"], 2)
        self.assertEqual(server.connections(), [])
