"""
TLS: multiplexed connections over Twisted's C{ssl:} and C{tls:} endpoints with
hostname verification, mutual TLS through the C{clientCA} keyword, clients
offering ALPN protocols the listeners do not speak, and forward
and reverse tunnels of 100 concurrent 1 MiB connections each way between two
twistd processes over mutual TLS.  Certificates are generated per test run
(L{muxframe.tls.writeCertificates}).
"""

import hashlib
import io
import os
import re
import random
import struct
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    clientFromString,
    connectProtocol,
    serverFromString,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from muxframe.tls import main as tlsMain, writeCertificates
from muxframe.tunnel import EchoFactory
from tests.support import captureLogs, logLines
from tests.test_endpoints import cancelAbortTimers, collectorFactory
from tests.test_tap import assertStoppedCleanly, freePort, spawnTwistd, waitForPort


class CertificateTests(TestCase):
    """
    The development CA writer.
    """

    def test_writesFiles(self):
        """
        C{python -m muxframe.tls DIR} writes the CA, server and client files.
        """
        directory = self.mktemp()
        out = io.StringIO()
        self.assertEqual(tlsMain([directory], out), 0)
        self.assertIn("server.pem", out.getvalue())
        for name in ("ca/ca.pem", "server.pem", "client.pem", "rogue-client.pem"):
            with open(os.path.join(directory, name), "rb") as f:
                self.assertIn(b"-----BEGIN CERTIFICATE-----", f.read())
        with open(os.path.join(directory, "server.pem"), "rb") as f:
            self.assertIn(b"PRIVATE KEY", f.read())


class CountingEcho(EchoFactory):
    """
    An echo factory that counts the streams it serves.
    """

    built = 0

    def buildProtocol(self, addr):
        self.built += 1
        return EchoFactory.buildProtocol(self, addr)


class TLSEndpointTests(TestCase):
    """
    mio:/bmp: endpoint strings over ssl: and tls:, in one process.
    """

    timeout = 30

    def setUp(self):
        self.paths = writeCertificates(self.mktemp())
        self.addCleanup(cancelAbortTimers)

    @inlineCallbacks
    def listen(self, description):
        endpoint = serverFromString(reactor, description % self.paths)
        self.echoFactory = CountingEcho()
        port = yield endpoint.listen(self.echoFactory)
        self.addCleanup(port.stopListening, 1)
        self.port = port.getHost().port
        return endpoint

    def logged(self):
        return captureLogs(self)

    def warnings(self, events):
        return logLines(events, "warn")

    def client(self, description):
        values = dict(self.paths, port=self.port)
        endpoint = clientFromString(reactor, description % values)
        self.addCleanup(endpoint.stop)
        return endpoint

    @inlineCallbacks
    def echo(self, client, payload=b"tls " * 5000):
        protocol = yield client.connect(collectorFactory(payload))
        data = yield protocol.done
        return data, protocol.reason

    @inlineCallbacks
    def test_hostnameVerified(self):
        """
        A tls: client that trusts the CA reaches an ssl: server whose
        certificate names the host it asked for (both framings).
        """
        for framing in ("mio", "bmp"):
            server = yield self.listen(
                framing + ":ssl:0:privateKey=%(server.pem)s:interface=127.0.0.1")
            client = self.client(
                framing + ":tls:localhost:%(port)s:trustRoots=%(ca)s:connectTimeout=10")
            data, reason = yield self.echo(client)
            self.assertEqual(data, b"tls " * 5000)
            self.assertTrue(reason.check(ConnectionDone))
            self.assertEqual(len(server.multiplexers), 1)
            self.assertEqual(self.echoFactory.built, 1)

    @inlineCallbacks
    def test_wrongHostnameRefused(self):
        """
        A server certificate that does not name the host the client asked
        for fails the handshake: connect() fails at once with the
        verification error, a warning names the cause, and no stream gets
        through.
        """
        from service_identity import VerificationError
        events = self.logged()
        yield self.listen("mio:ssl:0:privateKey=%(server.pem)s:interface=127.0.0.1")
        client = self.client(
            "mio:tls:wrong.example:%(port)s:trustRoots=%(ca)s:"
            "endpoint=tcp\\:127.0.0.1\\:%(port)s")
        started = reactor.seconds()
        yield self.assertFailure(client.connect(collectorFactory(b"x")), VerificationError)
        self.assertLess(reactor.seconds() - started, 10)  # not connectTimeout (30 s)
        self.assertEqual(self.echoFactory.built, 0)
        [warning] = self.warnings(events)
        self.assertTrue(warning.startswith(
            "TLS verification failed: the peer's certificate does not name wrong.example"),
            warning)

    @inlineCallbacks
    def test_untrustedServerRefused(self):
        """
        A client that does not trust the server's CA fails connect() at once
        with the TLS error; no stream gets through.
        """
        from OpenSSL.SSL import Error
        events = self.logged()
        yield self.listen("mio:ssl:0:privateKey=%(server.pem)s:interface=127.0.0.1")
        other = writeCertificates(self.mktemp())
        client = self.client("mio:tls:localhost:%(port)s:trustRoots=" + other["ca"])
        error = yield self.assertFailure(client.connect(collectorFactory(b"x")), Error)
        self.assertIn("certificate verify failed", str(error))
        self.assertEqual(self.echoFactory.built, 0)
        [warning] = self.warnings(events)
        self.assertTrue(warning.startswith(
            "TLS verification failed: the peer's certificate is not trusted"), warning)

    @inlineCallbacks
    def test_mutualTLS(self):
        """
        With clientCA, a client certificate from that CA is required: with
        one the stream works; without one, or with one from another CA,
        connect() fails with the TLS error the server sent (with TLS 1.3 the
        client finishes its side of the handshake first: the confirmation
        window catches the server's verdict) and no stream reaches the
        server.
        """
        from OpenSSL.SSL import Error
        events = self.logged()
        server = yield self.listen(
            "mio:ssl:0:privateKey=%(server.pem)s:interface=127.0.0.1:clientCA=%(ca.pem)s")
        good = self.client(
            "mio:tls:localhost:%(port)s:trustRoots=%(ca)s:certificate=%(client.pem)s:"
            "privateKey=%(client.pem)s:connectTimeout=10")
        data, reason = yield self.echo(good)
        self.assertEqual(data, b"tls " * 5000)
        served = server.multiplexers[0].counters
        self.assertGreaterEqual(served.bytesReceived, 20000)
        for extra, cause in (("", "certificate required"),
                             (":certificate=%(rogue-client.pem)s:privateKey=%(rogue-client.pem)s",
                              "unknown ca")):
            # A long window, so the test does not depend on how fast the
            # server's alert comes.
            bad = self.client(
                "mio:tls:localhost:%(port)s:trustRoots=%(ca)s:confirmTimeout=20" + extra)
            error = yield self.assertFailure(self.echo(bad), Error)
            self.assertIn(cause, str(error))
        self.assertEqual(self.echoFactory.built, 1)
        for _ in range(100):
            if len(self.warnings(events)) >= 4:
                break
            yield deferLater(reactor, 0.01)
        warnings = self.warnings(events)
        # Each side says why, the cause first.
        self.assertIn("TLS verification failed: the client sent no certificate and "
                      "this server requires one (clientCA) [OpenSSL: peer did not "
                      "return a certificate]; mio connection from tcp:127.0.0.1:",
                      "\n".join(warnings))
        self.assertIn("TLS verification failed: the peer requires a client certificate "
                      "and none was given", "\n".join(warnings))
        self.assertIn("TLS verification failed: the peer's certificate is not trusted",
                      "\n".join(warnings))

    @inlineCallbacks
    def test_sslClientString(self):
        """
        Twisted's older C{ssl:} client string works too (the multiplexer
        waits for its handshake as for C{tls:}).
        """
        yield self.listen("bmp:ssl:0:privateKey=%(server.pem)s:interface=127.0.0.1")
        client = self.client(
            "bmp:ssl:host=127.0.0.1:port=%(port)s:caCertsDir=%(ca)s:connectTimeout=10")
        mux = yield client.whenConnected()
        self.assertTrue(mux.isVerified())
        data, reason = yield self.echo(client)
        self.assertEqual(data, b"tls " * 5000)


SIZE = 1 << 20
_BASE = random.Random(20261122).randbytes(SIZE + 65536)


def payload(seed, direction):
    """
    The 1 MiB sent for connection C{seed} in C{direction} (0 toward the
    target, 1 back): an 8-byte tag, then a slice of a random block.
    """
    tag = struct.pack(">Q", seed * 2 + direction)
    offset = (seed * 7919 + direction * 4099) % 65536
    return tag + _BASE[offset:offset + SIZE - 8]


_digests = {}


def digest(seed, direction):
    key = (seed, direction)
    if key not in _digests:
        _digests[key] = hashlib.sha256(payload(seed, direction)).digest()
    return _digests[key]


class Exchanger(Protocol):
    """
    Send connection C{seed}'s 1 MiB and hash what comes back; C{done} fires
    with C{True} when exactly the answer for C{seed} arrived and the
    connection closed cleanly.
    """

    def __init__(self, seed):
        self.seed = seed
        self.hash = hashlib.sha256()
        self.size = 0
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(payload(self.seed, 0))

    def dataReceived(self, data):
        self.size += len(data)
        self.hash.update(data)

    def connectionLost(self, reason):
        self.done.callback(
            reason.check(ConnectionDone) is not None and self.size == SIZE
            and self.hash.digest() == digest(self.seed, 1))


class Answerer(Protocol):
    """
    The target: on the tag, starts sending the answer for that seed (both
    directions flow at once); checks the 1 MiB it receives; closes after.
    """

    def connectionMade(self):
        self.head = b""
        self.seed = None
        self.hash = hashlib.sha256()
        self.size = 0

    def dataReceived(self, data):
        self.size += len(data)
        self.hash.update(data)
        if self.seed is None:
            self.head += data
            if len(self.head) < 8:
                return
            self.seed = struct.unpack(">Q", self.head[:8])[0] // 2
            self.transport.write(payload(self.seed, 1))
        if self.size >= SIZE:
            if self.size == SIZE and self.hash.digest() == digest(self.seed, 0):
                self.factory.good += 1
                self.transport.loseConnection()
            else:
                self.factory.bad += 1
                self.transport.abortConnection()


def answererFactory():
    factory = Factory.forProtocol(Answerer)
    factory.good = factory.bad = 0
    return factory


class TwistdTLSTunnelTests(TestCase):
    """
    Two twistd processes joined by one mutual-TLS multiplexed connection.
    """

    timeout = 180

    def test_forwardAndReverse100x1MiB(self):
        """
        A forward tunnel (client --local to server --forward) and a reverse
        tunnel (server --local to client --forward) each carry 100
        concurrent TCP connections of 1 MiB each way at the same time,
        verified by hash, over mutual TLS, with MIO framing; both processes
        then stop cleanly.
        """
        return self._tunnels("mio")

    def test_forwardAndReverse100x1MiBBMP(self):
        """
        The same with BMP framing.
        """
        return self._tunnels("bmp")

    @inlineCallbacks
    def _tunnels(self, framing):
        paths = writeCertificates(self.mktemp())
        forwardTarget = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1").listen(answererFactory())
        self.addCleanup(forwardTarget.stopListening)
        reverseTarget = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1").listen(answererFactory())
        self.addCleanup(reverseTarget.stopListening)
        muxPort, forwardLocal, reverseLocal = freePort(), freePort(), freePort()
        server = spawnTwistd(
            self, "server", "server",
            "--endpoint=ssl:%d:interface=127.0.0.1:privateKey=%s:clientCA=%s"
            % (muxPort, paths["server.pem"], paths["ca.pem"]),
            "--forward=tcp:127.0.0.1:%d" % (forwardTarget.getHost().port,),
            "--local=tcp:%d:interface=127.0.0.1" % (reverseLocal,),
            "--client=muxframe client",  # the client certificate's common name
            "--drainTimeout=5", "--framing=" + framing, "--logLevel=debug")
        yield waitForPort(muxPort, server)
        client = spawnTwistd(
            self, "client", "client",
            "--endpoint=tls:localhost:%d:trustRoots=%s:certificate=%s:privateKey=%s"
            % (muxPort, paths["ca"], paths["client.pem"], paths["client.pem"]),
            "--local=tcp:%d:interface=127.0.0.1" % (forwardLocal,),
            "--forward=tcp:127.0.0.1:%d" % (reverseTarget.getHost().port,),
            "--drainTimeout=5", "--framing=" + framing, "--logLevel=debug")
        yield waitForPort(forwardLocal, client)
        deadline = time.monotonic() + 20
        while not re.search(framing + r" connection to \S+ up", client.text()):
            self.assertLess(time.monotonic(), deadline, client.text())
            yield deferLater(reactor, 0.05)

        started = time.monotonic()
        exchangers = []
        for seed in range(100):
            for port, base in ((forwardLocal, 0), (reverseLocal, 1000)):
                exchanger = Exchanger(base + seed)
                exchangers.append(exchanger)
                connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), exchanger)
        results = yield gatherResults([e.done for e in exchangers])
        elapsed = time.monotonic() - started
        self.assertEqual(results.count(True), 200,
                         "%d of 200 verified\n%s" % (results.count(True), client.text()[-3000:]))
        self.assertEqual((forwardTarget.factory.good, forwardTarget.factory.bad), (100, 0))
        self.assertEqual((reverseTarget.factory.good, reverseTarget.factory.bad), (100, 0))
        # One multiplexed connection carried them all.
        self.assertEqual(len(re.findall(framing + r" connection to \S+ up", client.text())), 1)
        self.assertIn("reverse tunnel: tcp:127.0.0.1:", server.text())
        self.assertIn("client muxframe client authenticated by certificate", server.text())
        self.assertIn("forward tunnel: tcp:127.0.0.1:", client.text())
        self.log = "400 MiB through two tunnels in %.1f s" % (elapsed,)

        client.transport.signalProcess("TERM")
        server.transport.signalProcess("TERM")
        yield gatherResults([client.ended, server.ended])
        assertStoppedCleanly(self, client)
        assertStoppedCleanly(self, server)


class MultiplexerOverTLSTests(TestCase):
    """
    The bare Multiplexer (no endpoint wrapper) over Twisted's TLS.
    """

    timeout = 20

    @inlineCallbacks
    def test_closeEndsTLSConnection(self):
        """
        Multiplexer.close() over TLS closes the connection: a TLS transport
        waits for its producer to unregister, and the multiplexer does.
        """
        from twisted.internet import endpoints, reactor
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.ssl import (
            Certificate, PrivateCertificate, optionsForClientTLS)
        from muxframe import MultiplexerFactory

        paths = writeCertificates(self.mktemp())
        with open(paths["server.pem"], "rb") as f:
            serverCert = PrivateCertificate.loadPEM(f.read())
        with open(paths["ca.pem"], "rb") as f:
            ca = Certificate.loadPEM(f.read())
        server = endpoints.SSL4ServerEndpoint(
            reactor, 0, serverCert.options(), interface="127.0.0.1")
        port = yield server.listen(MultiplexerFactory(
            Factory.forProtocol(Protocol), framing="mio", role="server"))
        self.addCleanup(port.stopListening)
        client = endpoints.wrapClientTLS(
            optionsForClientTLS("localhost", ca),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
        mux = yield client.connect(MultiplexerFactory(None, framing="mio", role="client"))
        yield mux.openStream(Factory.forProtocol(Protocol))
        # No abort of last resort may close it for us within the test.
        import muxframe.multiplexer
        self.patch(muxframe.multiplexer, "CLOSE_GRACE", 3600)
        lost = mux.whenLost()
        mux.close()
        yield lost
        self.assertTrue(mux.disconnected)


def offerALPN(port, caFile, alpn, send=b"", answered=None,
              certificate=None):
    """
    A TLS connection to C{port} on 127.0.0.1 from the standard library,
    offering C{alpn} (as a browser, curl or a Go client does), trusting
    C{caFile}, presenting C{certificate} (a PEM file with its key) if
    given; C{send} is written once the handshake is done, and what comes
    back read until C{answered} is true of a piece read (or the end).
    Blocking: run in a thread.

    @return: C{(the protocol ALPN selected, the bytes read)}; the
        handshake's C{ssl.SSLError} is raised.
    """
    import socket
    import ssl
    context = ssl.create_default_context(cafile=caFile)
    context.set_alpn_protocols(alpn)
    if certificate is not None:
        context.load_cert_chain(certificate)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            selected = sock.selected_alpn_protocol()
            data = b""
            sock.sendall(send)
            while answered is not None:
                chunk = sock.recv(65536)
                data += chunk
                if not chunk or answered(chunk):
                    break
    return selected, data


class ALPNTests(TestCase):
    """
    A client offering ALPN protocols none of muxframe's TLS listeners
    speak completes the handshake, with no protocol selected (Twisted
    26.10 alone failed it: 'tlsv1 alert internal error'), and is served.
    """

    timeout = 30
    offers = (["h2", "http/1.1"], ["h2"], [])

    def setUp(self):
        self.paths = writeCertificates(self.mktemp())
        self.addCleanup(cancelAbortTimers)

    def offer(self, port, alpn, send=b"", answered=None, certificate=None):
        from twisted.internet.threads import deferToThread
        return deferToThread(offerALPN, port, self.paths["ca.pem"], alpn,
                             send, answered, certificate)

    @inlineCallbacks
    def test_xtmpRoleOverSSL(self):
        """
        The xtmp role's C{ssl:} endpoint (its L{muxframe.tap.ListenService}):
        each client completes the handshake without a protocol and has its
        ClientHello answered with a HandshakeAck.
        """
        import sys

        from muxframe.server.config import ServerConfig
        from muxframe.server.service import XTMPServerService
        from muxframe.xtmp import ClientHandshake
        from muxframe.xtmp.codec import Decoder, MessageType
        from tests.test_server_support import ALICE, SERVER_IDENTITY
        from tests.test_server_tap import writeSetup
        from tests.test_tap import freePort

        directory = os.path.abspath(self.mktemp())
        port = freePort()
        config = ServerConfig.fromFile(writeSetup(directory, port, {
            "server": {"endpoint": "ssl:%d:interface=127.0.0.1:privateKey=%s"
                       % (port, self.paths["server.pem"])},
            "storage": {"engine": "none"}}))
        self.patch(sys, "path", [directory] + sys.path)
        self.addCleanup(sys.modules.pop, "xtmpapp", None)
        service = XTMPServerService(config, reactor, installSignals=False)
        service.startService()
        self.addCleanup(service.stopService)
        for alpn in self.offers:
            hello = ClientHandshake(serverKey=SERVER_IDENTITY.public,
                                    identity=ALICE).start()
            frames = []
            decoder = Decoder()
            selected, _ = yield self.offer(
                port, alpn, hello,
                lambda chunk: frames.extend(decoder.feed(chunk)) or frames)
            self.assertEqual((selected, [f.type for f in frames[:1]]),
                             (None, [MessageType.HandshakeAck]))

    @inlineCallbacks
    def test_multiplexedOverSSL(self):
        """
        C{mio:ssl:} and C{bmp:ssl:}: each client completes the handshake
        without a protocol (never C{http/1.1}), and the endpoint's side of
        it succeeds too.
        """
        for framing in ("mio", "bmp"):
            verified = yield self.listen(
                framing + ":ssl:0:interface=127.0.0.1:"
                "privateKey=%(server.pem)s")
            for alpn in self.offers:
                selected, _ = yield self.offer(self.port, alpn)
                self.assertIsNone(selected)
            muxes = yield gatherResults(verified)
            self.assertEqual([mux.isVerified() for mux in muxes],
                             [True] * len(self.offers))

    @inlineCallbacks
    def test_mutualTLS(self):
        """
        C{mio:ssl:...:clientCA=} (muxframe's own C{CertificateOptions}): a
        client with a certificate from the CA completes the handshake
        without a protocol, on both sides.
        """
        verified = yield self.listen(
            "mio:ssl:0:interface=127.0.0.1:privateKey=%(server.pem)s:"
            "clientCA=%(ca.pem)s")
        for alpn in self.offers:
            selected, _ = yield self.offer(
                self.port, alpn, certificate=self.paths["client.pem"])
            self.assertIsNone(selected)
        muxes = yield gatherResults(verified)
        self.assertEqual(len(muxes), len(self.offers))

    @inlineCallbacks
    def listen(self, description):
        """
        Listen on C{description} (C{%(name)s}: L{writeCertificates}' paths;
        the port is C{self.port}).

        @return: the list that gets, for each connection accepted, a
            Deferred firing with its multiplexer once verified (failing
            with the reason it was lost first).
        """
        endpoint = serverFromString(reactor, description % self.paths)
        verified = []

        class Recorder:
            def multiplexerConnected(self, endpoint, mux):
                verified.append(mux.whenVerified())

            def multiplexerLost(self, endpoint, mux, reason):
                pass

        endpoint.addObserver(Recorder())
        port = yield endpoint.listen(EchoFactory())
        self.addCleanup(port.stopListening, 1)
        self.port = port.getHost().port
        return verified
