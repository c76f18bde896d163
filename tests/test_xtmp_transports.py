"""
XTMP over the transports it must run on: muxframe streams (several
sessions over one multiplexed connection), TLS, and real loopback TCP.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connect, makeFakeClient, makeFakeServer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe.xtmp import (
    BadMagic, Cipher, Flags, XTMPClientFactory, XTMPServerFactory,
    connectXTMP,
)

from tests.test_xtmp_protocol import result
from tests.test_xtmp_support import CLIENT_IDENTITY, SERVER_IDENTITY

try:
    from muxframe.multiplexer import MultiplexerFactory
except ImportError:  # pragma: no cover - the multiplexer lands separately
    MultiplexerFactory = None


def serverFactory(clock, **kw):
    f = XTMPServerFactory(SERVER_IDENTITY,
                          authorizedKeys=[CLIENT_IDENTITY.public],
                          reactor=clock, **kw)
    f.setHandler(0x30, lambda p, m: b"pong:" + m.payload)
    return f


def clientFactory(clock, **kw):
    return XTMPClientFactory(serverKey=SERVER_IDENTITY.public,
                             identity=CLIENT_IDENTITY, reactor=clock, **kw)


def waitFor(condition, what, tries=4000):
    """
    A Deferred firing once C{condition()} holds (polled every 5 ms on the
    real reactor), failing after C{tries} polls.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    if condition():
        return True
    if not tries:
        raise AssertionError("timed out waiting for " + what)
    return deferLater(reactor, 0.005, waitFor, condition, what, tries - 1)


class MultiplexedStreamTests(SynchronousTestCase):
    """
    Two XTMP sessions over two streams of one multiplexed connection.
    """

    if MultiplexerFactory is None:
        skip = "muxframe.multiplexer is not available"

    def check(self, framing):
        clock = Clock()
        xs = serverFactory(clock)
        serverMux = MultiplexerFactory(xs, framing=framing, role="server",
                                       reactor=clock).buildProtocol(None)
        clientMux = MultiplexerFactory(None, framing=framing, role="client",
                                       reactor=clock).buildProtocol(None)
        pump = connect(serverMux, makeFakeServer(serverMux), clientMux,
                       makeFakeClient(clientMux), clock=clock)
        cf1, cf2 = clientFactory(clock), clientFactory(clock)
        a = result(clientMux.openStream(cf1))
        b = result(clientMux.openStream(cf2))
        pump.flush()
        self.assertIs(result(a.whenHandshakeDone()), a)
        self.assertIs(result(b.whenHandshakeDone()), b)
        self.assertNotEqual(a.sessionId, b.sessionId)
        self.assertEqual(len(xs.live), 2)
        da = a.request(0x30, b"a", Flags.REQUIRES_ACK)
        db = b.request(0x30, b"b" * 200000)
        pump.flush()
        self.assertEqual(result(da).payload, b"pong:a")
        self.assertEqual(result(db).payload, b"pong:" + b"b" * 200000)

        # Garbage on session a's stream ends session a only.
        closed = a.whenClosed()
        serverSide = xs.live[a.sessionId]
        serverClosed = serverSide.whenClosed()
        a.transport.write(b"NOT XTMP" * 8)
        pump.flush()
        self.assertIsInstance(result(serverClosed), BadMagic)
        self.assertIsNotNone(result(closed))
        self.assertEqual(list(xs.live), [b.sessionId])
        d = b.request(0x30, b"still")
        pump.flush()
        self.assertEqual(result(d).payload, b"pong:still")
        self.assertFalse(pump.clientIO.disconnected)
        return xs

    def test_mio(self):
        self.check("mio")

    def test_bmp(self):
        self.check("bmp")


def makeCertificate():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + \
        cert.public_bytes(serialization.Encoding.PEM)
    return ssl.PrivateCertificate.loadPEM(pem)


class TLSTests(SynchronousTestCase):
    """
    XTMP inside TLS (in memory): encrypted, and plaintext when both sides
    opt in.
    """

    def runTLS(self, **kw):
        cert = makeCertificate()
        clock = Clock()
        xs = serverFactory(clock, **kw)
        xc = clientFactory(clock, **kw)
        # TLS aggregates small writes until the next reactor turn: make that
        # the fake clock's turn, which the pump advances.
        sf = TLSMemoryBIOFactory(cert.options(), False, xs, clock=clock)
        cf = TLSMemoryBIOFactory(ssl.optionsForClientTLS("localhost", cert),
                                 True, xc, clock=clock)
        s, c = sf.buildProtocol(None), cf.buildProtocol(None)
        pump = connect(s, makeFakeServer(s), c, makeFakeClient(c),
                       clock=clock)
        pump.flush()
        proto = c.wrappedProtocol
        self.assertIs(result(proto.whenHandshakeDone()), proto)
        d = proto.request(0x30, b"over tls")
        pump.flush()
        self.assertEqual(result(d).payload, b"pong:over tls")
        return proto

    def test_encrypted(self):
        p = self.runTLS()
        self.assertEqual(p.result.cipher, Cipher.AES_256_GCM)

    def test_plaintextInsideTLS(self):
        p = self.runTLS(ciphers=(Cipher.NONE,), allowPlaintext=True)
        self.assertEqual(p.result.cipher, Cipher.NONE)
        self.assertIsNone(p.connection.sendKey)


class LoopbackTCPTests(TestCase):
    """
    A real TCP connection on 127.0.0.1.
    """

    timeout = 20

    def test_requestOverTCP(self):
        from twisted.internet import reactor
        xs = serverFactory(None)
        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(xs)

        def listening(port):
            self.addCleanup(port.stopListening)
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1",
                                          port.getHost().port)
            return connectXTMP(endpoint, clientFactory(None))

        def connected(proto):
            self.proto = proto
            return proto.request(0x30, b"tcp" * 1000, Flags.REQUIRES_ACK)

        def answered(message):
            self.assertEqual(message.payload, b"pong:" + b"tcp" * 1000)
            closed = self.proto.whenClosed()
            self.proto.disconnect()
            return closed

        d.addCallback(listening)
        d.addCallback(connected)
        d.addCallback(answered)
        return d


class MultiplexedEndpointTests(TestCase):
    """
    XTMP on L{MultiplexedServerEndpoint}/L{MultiplexedClientEndpoint}
    streams over loopback TCP: every connect() is one session on the
    shared connection.
    """

    timeout = 20

    if MultiplexerFactory is None:
        skip = "muxframe.multiplexer is not available"

    def test_twoSessionsOneConnection(self):
        from twisted.internet import reactor
        from twisted.internet.defer import gatherResults
        from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint
        xs = serverFactory(None)
        server = MultiplexedServerEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), "bmp")
        d = server.listen(xs)

        def listening(port):
            self.addCleanup(port.stopListening, 1)
            client = MultiplexedClientEndpoint(
                TCP4ClientEndpoint(reactor, "127.0.0.1",
                                   port.getHost().port), "bmp")
            self.addCleanup(client.stop)
            return gatherResults([
                connectXTMP(client, clientFactory(None)),
                connectXTMP(client, clientFactory(None))])

        def connected(protocols):
            self.protocols = protocols
            self.assertEqual(len(server.multiplexers), 1)
            self.assertNotEqual(protocols[0].sessionId, protocols[1].sessionId)
            return gatherResults([p.request(0x30, b"%d" % i)
                                  for i, p in enumerate(protocols)])

        def answered(replies):
            self.assertEqual([r.payload for r in replies],
                             [b"pong:0", b"pong:1"])
            closed = [p.whenClosed() for p in self.protocols]
            for p in self.protocols:
                p.disconnect()
            return gatherResults(closed)

        d.addCallback(listening)
        d.addCallback(connected)
        d.addCallback(answered)
        return d


class SlowReaderTCPTests(TestCase):
    """
    Backpressure end to end over loopback TCP: a server that stops reading
    pauses the client's producer; when it reads again, everything arrives.
    """

    timeout = 30

    def test_slowReaderPausesSender(self):
        from twisted.internet import reactor
        from twisted.internet.interfaces import IPushProducer
        from zope.interface import implementer

        total = 60000
        got = []
        xs = serverFactory(None)
        xs.setHandler(0x10, lambda p, m: got.append(len(m.payload)))

        @implementer(IPushProducer)
        class Sender:
            paused = False
            sent = pauses = resumes = 0

            def __init__(self, protocol):
                self.protocol = protocol

            def pauseProducing(self):
                self.paused = True
                self.pauses += 1

            def resumeProducing(self):
                self.paused = False
                self.resumes += 1
                reactor.callLater(0, self.pump)

            def stopProducing(self):
                self.paused = True

            def pump(self):
                for _ in range(500):
                    if self.paused or self.sent >= total:
                        return
                    self.protocol.send(0x10, b"x" * 64)
                    self.sent += 1
                reactor.callLater(0, self.pump)

        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(xs)
        state = {}

        def listening(port):
            self.addCleanup(port.stopListening)
            return connectXTMP(
                TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                clientFactory(None, maxQueuedBytes=1 << 20))

        def connected(client):
            state["client"] = client
            # The client is ready first; the server once it accepts it.
            return waitFor(lambda: xs.live, "the server session")

        def accepted(_):
            client = state["client"]
            (server,) = xs.live.values()
            state["server"] = server
            server.pauseDelivery()
            sender = state["sender"] = Sender(client)
            client.registerProducer(sender, True)
            sender.pump()
            return waitFor(lambda: sender.paused, "the sender to pause")

        def paused(_):
            sender = state["sender"]
            self.assertGreaterEqual(sender.pauses, 1)
            self.assertLess(len(got), sender.sent)
            self.assertLess(sender.sent, total)
            self.assertLessEqual(state["client"].connection.bufferedBytes,
                                 1 << 20)
            state["server"].resumeDelivery()
            return waitFor(lambda: len(got) == total, "every message")

        def drained(_):
            self.assertGreaterEqual(state["sender"].resumes, 1)
            self.assertEqual(set(got), {64})
            closed = state["client"].whenClosed()
            state["client"].disconnect()
            return closed

        d.addCallback(listening)
        d.addCallback(connected)
        d.addCallback(accepted)
        d.addCallback(paused)
        d.addCallback(drained)
        return d


class CloseWhilePausedTCPTests(TestCase):
    """
    A session closed while its transport is paused (the peer reads
    slowly) closes once the peer has read what was written, not at the
    close timeout: Twisted resumes a paused producer still registered
    with a closing transport instead of closing it, so the session
    unregisters first.
    """

    timeout = 30

    def test_closeWhilePaused(self):
        from twisted.internet import reactor
        from twisted.internet.defer import gatherResults
        from muxframe.xtmp import XTMPErrorCode

        xs = serverFactory(None)
        state = {}

        def listening(port):
            self.addCleanup(port.stopListening)
            return connectXTMP(
                TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                clientFactory(None))

        def connected(client):
            state["client"] = client
            client.pauseDelivery()
            return waitFor(lambda: xs.live, "the server session")

        def accepted(_):
            (server,) = xs.live.values()
            state["server"] = server
            # Only the test's own timeout may end a hung close.
            server.closeTimeout = 3600

            def fill():
                while not server._transportPaused:
                    server.send(0x10, b"y" * 65536)
                return True
            fill()
            return waitFor(lambda: server._transportPaused, "a full pipe")

        def full(_):
            client, server = state["client"], state["server"]
            closed = gatherResults([client.whenClosed(), server.whenClosed()])
            server.disconnect(XTMPErrorCode.GOING_AWAY, "bye")
            client.resumeDelivery()
            return closed

        def closed(reasons):
            self.assertTrue(state["server"]._lost)

        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(xs)
        d.addCallback(listening)
        d.addCallback(connected)
        d.addCallback(accepted)
        d.addCallback(full)
        d.addCallback(closed)
        return d


class KilledTCPConnectionTests(TestCase):
    """
    Over real loopback TCP: the connection is aborted mid-stream, the
    client reconnects with the same factory, and every acknowledged message
    reaches the server application exactly once.
    """

    timeout = 30

    def test_reconnectExactlyOnce(self):
        from twisted.internet import reactor

        total = 5000
        got = []
        xs = serverFactory(None)

        def handler(protocol, message):
            got.append(message.payload)
            if len(got) == total // 3:
                # Kill the connection while the rest are in flight.
                protocol.transport.abortConnection()

        xs.setHandler(0x10, handler)
        cf = clientFactory(None)
        state = {}

        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(xs)

        def listening(port):
            self.addCleanup(port.stopListening)
            state["endpoint"] = TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                   port.getHost().port)
            return connectXTMP(state["endpoint"], cf)

        def connected(client):
            closed = client.whenClosed()
            for i in range(total):
                client.send(0x10, b"%05d" % i, Flags.REQUIRES_ACK)
            return closed

        def killed(why):
            self.assertLess(len(got), total)
            self.assertEqual(len(cf.resumable), 1)
            return connectXTMP(state["endpoint"], cf)

        def reconnected(client):
            state["client"] = client
            self.assertTrue(client.result.resumed)
            return waitFor(lambda: len(got) >= total and not
                           client.connection.resumption.pending(),
                           "every message, acknowledged")

        def done(_):
            self.assertEqual(got, [b"%05d" % i for i in range(total)])
            closed = state["client"].whenClosed()
            state["client"].disconnect()
            return closed

        d.addCallback(listening)
        d.addCallback(connected)
        d.addCallback(killed)
        d.addCallback(reconnected)
        d.addCallback(done)
        return d
