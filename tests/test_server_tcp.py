"""
The server's defences over real loopback TCP (in-process server and
clients on the real reactor): a handshake flood from one address is
throttled with typed refusals while an established session's requests
are all served; a slow consumer is disconnected while another subscriber
receives everything.  Behaviour is asserted, never timings (bench/ has
the latency figures).
"""

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol,
)
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from bench.xtmpserver.clientproc import HelloFlood
from muxframe.acceptbatch import CappedEndpoint
from muxframe.earlyrefusal import RefusedTransport
from muxframe.server.factory import RefusedConnection, XTMPServer
from muxframe.xtmp import (
    ClientHandshake, XTMPClientFactory, XTMPErrorCode, connectXTMP,
)

from tests.test_server_support import ALICE, BOB, KEYS, SERVER_IDENTITY, config


def echo(session, message):
    return b"echo:" + message.payload


class TCPTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def listen(self, conf, asTheRole=False):
        self.server = XTMPServer(SERVER_IDENTITY, conf, reactor, keys=KEYS)
        self.server.router.route(0x20, echo)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        if asTheRole:
            endpoint = CappedEndpoint(endpoint)
        port = yield endpoint.listen(self.server)
        self.addCleanup(port.stopListening)
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1",
                                           port.getHost().port)

    @inlineCallbacks
    def session(self, identity):
        protocol = yield connectXTMP(self.endpoint, XTMPClientFactory(
            serverKey=SERVER_IDENTITY.public, identity=identity, resume=False))
        self.addCleanup(self.close, protocol)
        return protocol

    def close(self, protocol):
        closed = protocol.whenClosed()
        protocol.disconnect()
        return closed

    @inlineCallbacks
    def test_handshakeFloodFromOneAddress(self):
        """
        While one address opens connection after connection, each sending
        a real ClientHello, an established session from the same address
        has every request served; the flood gets HandshakeAcks only up to
        its rate and otherwise RATE_LIMITED (or BUSY), before any crypto.
        """
        yield self.listen(config(server__handshake_rate=5,
                                 server__handshake_burst=10,
                                 server__max_handshakes=16,
                                 server__max_connections_per_client=0))
        alice = yield self.session(ALICE)
        outcomes = []
        stop = []

        @inlineCallbacks
        def flood():
            while not stop:
                batch = []
                for _ in range(20):
                    # Fresh hellos: a replayed one is refused as a replay.
                    p = HelloFlood(ClientHandshake(
                        serverKey=SERVER_IDENTITY.public,
                        identity=ALICE).start())
                    yield connectProtocol(self.endpoint, p)
                    batch.append(p.done)
                results = yield gatherResults(batch)
                outcomes.extend(results)

        flooding = flood()
        answers = []
        for n in range(60):
            reply = yield alice.request(0x20, b"%d" % n, timeout=30)
            answers.append(reply.payload)
            if n % 10 == 0:
                yield deferLater(reactor, 0.01)
        stop.append(True)
        yield flooding
        self.assertEqual(answers, [b"echo:%d" % n for n in range(60)])
        acks = outcomes.count("ack")
        refused = [o for o in outcomes if o != "ack"]
        self.assertGreater(len(refused), len(outcomes) / 2)
        self.assertEqual(set(refused) - {XTMPErrorCode.RATE_LIMITED,
                                         XTMPErrorCode.BUSY}, set())
        self.assertLessEqual(acks, 11 + 5 * 60)
        refusals = self.server.refusals
        self.assertEqual(refusals.get("refused_rate", 0)
                         + refusals.get("refused_busy", 0), len(refused))
        self.assertTrue(alice.connection.state == "OPEN")

    @inlineCallbacks
    def test_refusalsAtConnectOnTheRolesListener(self):
        """
        On the role's listener, connection-time refusals are sent before
        any transport is built and still reach the client as typed
        errors: TOO_MANY_CONNECTIONS past the per-address limit, and
        RATE_LIMITED once the address's handshake bucket is empty.
        """
        yield self.listen(config(server__max_connections_per_client=1,
                                 server__handshake_rate=0.01,
                                 server__handshake_burst=1), asTheRole=True)
        built = []
        buildProtocol = self.server.buildProtocol
        self.server.buildProtocol = lambda a: built.append(buildProtocol(a)) \
            or built[-1]

        @inlineCallbacks
        def hello():
            p = HelloFlood(ClientHandshake(serverKey=SERVER_IDENTITY.public,
                                           identity=ALICE).start())
            yield connectProtocol(self.endpoint, p)
            outcome = yield p.done
            return outcome

        alice = yield self.session(ALICE)
        outcome = yield hello()
        self.assertEqual(outcome, XTMPErrorCode.TOO_MANY_CONNECTIONS)
        yield self.close(alice)
        for _ in range(200):
            if self.server.connections.total == 0:
                break
            yield deferLater(reactor, 0.01)
        outcome = yield hello()
        self.assertEqual(outcome, XTMPErrorCode.RATE_LIMITED)
        self.assertEqual(len(built), 3)
        self.assertIsInstance(built[1], RefusedConnection)
        self.assertIsInstance(built[1].transport, RefusedTransport)
        self.assertIsInstance(built[2].transport, RefusedTransport)
        self.assertEqual(self.server.refusals["refused_connections"], 1)
        self.assertEqual(self.server.refusals["refused_rate"], 1)

    @inlineCallbacks
    def test_slowConsumer(self):
        """
        A subscriber that stops reading is disconnected with SLOW_CONSUMER
        once its queue passes max_pending; the other subscriber receives
        every message, in order.  (Publishing goes on in bursts of 80 KiB
        per reactor turn: a burst larger than max_pending would make any
        subscriber look slow, which is why max_pending is megabytes.)
        """
        yield self.listen(config(broker__max_pending=1024 * 1024))
        slow = yield self.session(ALICE)
        fast = yield self.session(BOB)
        got = []
        yield slow.subscribe("feed", lambda m: None)
        yield fast.subscribe("feed", lambda m: got.append(m.payload[:6]))
        slow.transport.pauseProducing()
        payload = b"x" * 8192
        total = 2000
        for n in range(0, total, 10):
            for k in range(n, n + 10):
                self.server.publish("feed", b"%06d" % k + payload)
            yield deferLater(reactor, 0)
        for _ in range(500):
            if len(got) == total:
                break
            yield deferLater(reactor, 0.02)
        self.assertEqual(got, [b"%06d" % k for k in range(total)])
        self.assertEqual(self.server.broker.counters["slowConsumers"], 1)
        closed = slow.whenClosed()
        slow.transport.resumeProducing()
        why = yield closed
        self.assertEqual(why.code, XTMPErrorCode.SLOW_CONSUMER)


    @inlineCallbacks
    def test_peerNotReadingStopsBeingRead(self):
        """
        A session that stops reading and sends heartbeat probes (each
        answered at once, outside every queue) is no longer read once the
        server's writes to it back up: the server answers only what its
        buffers hold, not every probe.  When the peer reads again, every
        probe is answered: nothing was lost.
        """
        import socket

        from muxframe.xtmp.codec import F, MessageType, encodeU64
        # (No rate limit: it would pause reading after 2,000 probes too,
        # test_server_defences' test_controlFramesCharged.)
        yield self.listen(config(limits__messages_per_second=0))
        alice = yield self.session(ALICE)
        for _ in range(200):
            if len(self.server.registry):
                break
            yield deferLater(reactor, 0.01)
        (session,) = list(self.server.registry)
        # A small send buffer: the server's writes back up after alice's
        # receive window and a few KiB, not after the kernel's megabytes.
        # (Not alice's receive buffer: set after the connection, it stays
        # that small, and each of its windows waits for a delayed ACK.)
        session.transport.getHandle().setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        alice.transport.pauseProducing()
        conn, total = alice.connection, 40000
        for n in range(0, total, 2000):
            alice.transport.write(b"".join(
                conn.sendKey.seal(MessageType.Heartbeat, F.ENCRYPTED,
                                  conn.sessionId, encodeU64(k))
                for k in range(n, n + 2000)))
            yield deferLater(reactor, 0.005)
        counters = session.connection.counters

        @inlineCallbacks
        def settled():
            # Until the server has answered no more for a while.
            last = -1
            while counters.heartbeatsAnswered != last:
                last = counters.heartbeatsAnswered
                yield deferLater(reactor, 0.2)
            return last

        answered = yield settled()
        self.assertLess(answered, total // 4)
        self.assertTrue(session.isConnected())
        alice.transport.resumeProducing()
        for _ in range(1000):
            if counters.heartbeatsAnswered == total:
                break
            yield deferLater(reactor, 0.01)
        self.assertEqual(counters.heartbeatsAnswered, total)
        self.assertTrue(session.isConnected())


class MultiplexedTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_sessionsOverMioStreams(self):
        """
        With a C{mio:tcp:} endpoint each stream is a session; limits count
        the streams by the connection's host, and the registry names the
        stream in the peer.
        """
        from twisted.internet.endpoints import serverFromString
        from muxframe import MultiplexerFactory
        server = XTMPServer(SERVER_IDENTITY, config(), reactor, keys=KEYS)
        server.router.route(0x20, echo)
        port = yield serverFromString(
            reactor, "mio:tcp:0:interface=127.0.0.1").listen(server)
        self.addCleanup(port.stopListening)
        mux = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            MultiplexerFactory(None, framing="mio", role="client")
            .buildProtocol(None))
        self.addCleanup(mux.transport.loseConnection)
        sessions = []
        for identity in (ALICE, BOB):
            protocol = yield mux.openStream(XTMPClientFactory(
                serverKey=SERVER_IDENTITY.public, identity=identity))
            sessions.append((yield protocol.whenHandshakeDone()))
        replies = []
        for protocol in sessions:
            reply = yield protocol.request(0x20, b"over mio", timeout=10)
            replies.append(reply.payload)
        self.assertEqual(replies, [b"echo:over mio"] * 2)
        self.assertEqual(server.connections.of("127.0.0.1"), 2)
        peers = [s.peer for s in server.registry.list()]
        self.assertTrue(all(p.startswith("127.0.0.1:") and "#" in p
                            for p in peers), peers)
        for protocol in sessions:
            closed = protocol.whenClosed()
            protocol.disconnect()
            yield closed
