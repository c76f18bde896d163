"""
Tests for L{muxframe.tunnelauth}: the token table, the challenge and
response, and reverse tunnels that reach only the client they name, over
real sockets on 127.0.0.1.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint, tunnelauth
from muxframe.errors import AuthenticationError, StreamRefusedError
from muxframe.tunnel import EchoFactory, ForwardFactory, TunnelFactory, reverseOpener
from muxframe.tunnelauth import Authenticator, TokenTable, mac
from tests.test_tunnel import TCPClient

ALICE = b"alice-token-0123456789"
BOB = b"bob-token-0123456789abc"


class TokenTableTests(SynchronousTestCase):

    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_file(self):
        """
        A tokens file lists 'name token' lines; comments and blank lines
        are skipped.
        """
        table = TokenTable.fromFile(self.write(
            "# clients\n\nalice %s\n  bob   %s  \n" % (ALICE.decode(), BOB.decode())))
        self.assertIn("alice", table)
        self.assertIn(b"bob", table)
        self.assertNotIn("carol", table)

    def test_faultsNamed(self):
        """
        Each bad file is a ValueError naming the file, the line and the
        fault.
        """
        cases = [
            ("alice\n", "line 1: expected 'name token'"),
            ("alice short\n", "line 1: the token: 16 to 256"),
            ("al/ice %s\n" % (ALICE.decode(),), "client name"),
            ("a %s\na %s\n" % (ALICE.decode(), BOB.decode()), "line 2: client 'a' is listed twice"),
            ("# nothing\n", "lists no client"),
        ]
        for text, fault in cases:
            e = self.assertRaises(ValueError, TokenTable.fromFile, self.write(text))
            self.assertIn(fault, str(e))
        e = self.assertRaises(ValueError, TokenTable.fromFile, "/no/such/tokens")
        self.assertIn("cannot be read", str(e))

    def test_check(self):
        """
        Only the response made with the client's own token and this nonce
        is accepted.
        """
        table = TokenTable({b"alice": ALICE, b"bob": BOB})
        nonce, other = b"a" * 64, b"b" * 64
        self.assertTrue(table.check(nonce, b"alice", mac(ALICE, nonce, b"alice")))
        self.assertFalse(table.check(nonce, b"alice", mac(BOB, nonce, b"alice")))
        self.assertFalse(table.check(other, b"alice", mac(ALICE, nonce, b"alice")))
        self.assertFalse(table.check(nonce, b"bob", mac(ALICE, nonce, b"alice")))
        self.assertFalse(table.check(nonce, b"carol", mac(ALICE, nonce, b"carol")))


class Recording(Factory):
    """
    Build protocols that record what arrives.
    """

    def __init__(self):
        self.built = []

    def buildProtocol(self, addr):
        protocol = _Recorder()
        self.built.append(protocol)
        return protocol


class _Recorder(Protocol):
    def __init__(self):
        self.data = b""

    def dataReceived(self, data):
        self.data += data


def failureOf(d):
    """
    Return a Deferred firing with a list holding the failure of C{d} (or
    None if it succeeded): a Failure as a result would go on failing.
    """
    return d.addCallbacks(lambda result: [None], lambda failure: [failure])


def local(port):
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)


class ReverseTunnelAuthTests(TestCase):
    """
    A reverse tunnel sends connections only to the client authenticated as
    the name it is given, whoever connected last.
    """

    timeout = 60

    @inlineCallbacks
    def server(self, framing="mio", tokens=None, childFactory=None):
        endpoint = MultiplexedServerEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), framing=framing,
            authenticator=Authenticator(TokenTable(
                tokens or {b"alice": ALICE, b"bob": BOB})))
        port = yield endpoint.listen(childFactory or Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening, 1)
        return endpoint, port

    @inlineCallbacks
    def target(self):
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            EchoFactory())
        self.addCleanup(port.stopListening)
        return port

    def client(self, port, framing="mio", name=None, token=None, childFactory=None):
        endpoint = MultiplexedClientEndpoint(
            local(port), framing=framing, childFactory=childFactory,
            authName=name, authToken=token)
        self.addCleanup(endpoint.stop)
        return endpoint

    @inlineCallbacks
    def exchange(self, port, count):
        results = []
        for i in range(count):
            probe = TCPClient(b"connection %d " % (i,) * 100)
            yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
                Factory.forProtocol(lambda probe=probe: probe))
            results.append((yield probe.done)[0])
        return results

    @inlineCallbacks
    def _unauthenticatedLast(self, framing):
        self.patch(tunnelauth, "AUTH_TIMEOUT", 1.0)
        endpoint, muxPort = yield self.server(framing)
        target = yield self.target()
        alice = self.client(muxPort, framing, "alice", ALICE,
                            childFactory=ForwardFactory(local(target)))
        yield alice.whenConnected()
        # Then an unauthenticated client connects: the last one.
        intruder = Recording()
        stranger = self.client(muxPort, framing, childFactory=intruder)
        strangerMux = yield stranger.whenConnected()
        tunnel = TunnelFactory(reverseOpener(endpoint, "alice"), "reverse tunnel")
        entrance = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(tunnel)
        self.addCleanup(entrance.stopListening)
        results = yield self.exchange(entrance, 5)
        self.assertEqual(results, [b"connection %d " % (i,) * 100 for i in range(5)])
        self.assertEqual(tunnel.stats.opened, 5)
        # The stranger got the challenge stream only, and no tunnel byte;
        # the server closes it for not answering.
        self.assertLessEqual(len(intruder.built), 1)
        for protocol in intruder.built:
            self.assertTrue(protocol.data.startswith(b"MUXFRAME-AUTH 1 "), protocol.data)
        yield strangerMux.whenLost()
        self.assertEqual(len(endpoint.multiplexers), 1)

    def test_unauthenticatedLastMIO(self):
        """
        MIO: an unauthenticated connection made after the authenticated
        client's receives no tunnel traffic, and is closed.
        """
        return self._unauthenticatedLast("mio")

    def test_unauthenticatedLastBMP(self):
        """
        The same with BMP.
        """
        return self._unauthenticatedLast("bmp")

    @inlineCallbacks
    def test_chosenByName(self):
        """
        With alice and bob connected, a reverse tunnel for bob reaches bob's
        target only.
        """
        endpoint, muxPort = yield self.server()
        aliceTarget = Recording()
        aliceTargetPort = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1").listen(aliceTarget)
        self.addCleanup(aliceTargetPort.stopListening)
        bobTarget = yield self.target()
        bob = self.client(muxPort, "mio", "bob", BOB,
                          childFactory=ForwardFactory(local(bobTarget)))
        yield bob.whenConnected()
        alice = self.client(muxPort, "mio", "alice", ALICE,
                            childFactory=ForwardFactory(local(aliceTargetPort)))
        yield alice.whenConnected()
        tunnel = TunnelFactory(reverseOpener(endpoint, "bob"), "reverse tunnel")
        entrance = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(tunnel)
        self.addCleanup(entrance.stopListening)
        results = yield self.exchange(entrance, 3)
        self.assertEqual(results, [b"connection %d " % (i,) * 100 for i in range(3)])
        self.assertEqual(aliceTarget.built, [])
        self.assertEqual(
            sorted(mux.authentication.name for mux in endpoint.multiplexers),
            ["alice", "bob"])

    @inlineCallbacks
    def test_wrongToken(self):
        """
        A wrong token fails the client's connection with an
        AuthenticationError saying so; the server keeps no connection.
        """
        endpoint, muxPort = yield self.server()
        client = self.client(muxPort, "mio", "alice", BOB)
        [failure] = yield failureOf(client.whenConnected())
        failure.trap(AuthenticationError)
        self.assertIn("refused authentication as 'alice'", str(failure.value))
        self.assertIn("wrong token", str(failure.value))
        for _ in range(100):
            if not endpoint.multiplexers:
                break
            yield deferLater(reactor, 0.02)
        self.assertEqual(endpoint.multiplexers, [])

    @inlineCallbacks
    def test_streamsRefusedUntilAuthenticated(self):
        """
        A client that does not answer the challenge gets every stream it
        opens refused; the server's factory never sees one.
        """
        served = Recording()
        endpoint, muxPort = yield self.server(childFactory=served)
        from twisted.internet.defer import Deferred
        stranger = self.client(muxPort, "mio")
        lost = Deferred()

        class Opener(Protocol):
            def connectionLost(self, reason):
                lost.callback([reason])

        yield stranger.connect(Factory.forProtocol(Opener))
        [reason] = yield lost
        reason.trap(StreamRefusedError)
        self.assertEqual(served.built, [])

    @inlineCallbacks
    def test_serverWithoutTokens(self):
        """
        A client with a token never sends it to a server that does not ask:
        its connection fails, saying no challenge came.
        """
        self.patch(tunnelauth, "AUTH_TIMEOUT", 0.5)
        endpoint = MultiplexedServerEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), framing="mio")
        served = Recording()
        port = yield endpoint.listen(served)
        self.addCleanup(port.stopListening, 1)
        client = self.client(port, "mio", "alice", ALICE)
        [failure] = yield failureOf(client.whenConnected())
        failure.trap(AuthenticationError)
        self.assertIn("sent no authentication challenge", str(failure.value))
        self.assertEqual(served.built, [])
        self.assertIsNone(endpoint.authenticatedMultiplexer("alice"))


class CertificateNameTests(SynchronousTestCase):

    def test_commonName(self):
        """
        certificateName reads the peer certificate's common name, and is
        None without TLS.
        """
        from OpenSSL import crypto

        class Transport:
            def getPeerCertificate(self):
                certificate = crypto.X509()
                certificate.get_subject().CN = "nat-box"
                return certificate

        self.assertEqual(tunnelauth.certificateName(Transport()), "nat-box")
        self.assertIsNone(tunnelauth.certificateName(object()))

    def test_tokenFile(self):
        """
        A token file holds the token on its first line.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(ALICE + b"\nignored\n")
        self.assertEqual(tunnelauth.readTokenFile(path), ALICE)
        with open(path, "wb") as f:
            f.write(b"short\n")
        self.assertRaises(ValueError, tunnelauth.readTokenFile, path)
        os.remove(path)
        self.assertRaises(ValueError, tunnelauth.readTokenFile, path)
