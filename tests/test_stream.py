"""
Tests for L{muxframe.stream}: a stream's transport keeps C{ITransport}'s
contract, so protocols written for TCP run on it unchanged, whatever they
buffer.

Each framing runs the same checks over loopback TCP with unmodified Twisted
protocols: one write of 200 MiB from C{connectionMade}, a C{twisted.web}
resource returning a 50 MiB body from C{render_GET}, and C{FileSender}
sending a 100 MiB file.  Every byte is verified by SHA-256, hashed as it
arrives rather than kept.
"""

import hashlib
import os
import random

from zope.interface import implementer

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import FileSender
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, ResponseDone
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

from muxframe import MultiplexerFactory

MiB = 1024 * 1024


def blob(size):
    """
    Return C{size} random bytes and their SHA-256 (C{os.urandom} builds
    the bytes in place: C{random.randbytes} would briefly need twice the
    memory).
    """
    data = os.urandom(size)
    return data, hashlib.sha256(data).hexdigest()


class Hasher(Protocol):
    """
    A plain client: says C{greeting} (a BMP stream exists at the far end
    only once it carries a frame), then hashes what arrives; C{done} fires
    with C{(count, sha256 hex, reason)} when the connection is lost.
    """

    greeting = b"go\n"

    def __init__(self):
        self.count = 0
        self.hash = hashlib.sha256()
        self.done = Deferred()

    def connectionMade(self):
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data):
        self.count += len(data)
        self.hash.update(data)

    def connectionLost(self, reason):
        self.done.callback((self.count, self.hash.hexdigest(), reason))


class Burst(Protocol):
    """
    Written for TCP: one write of everything from C{connectionMade}, no
    producer, then close.
    """

    data = b""

    def connectionMade(self):
        self.transport.write(self.data)
        self.transport.loseConnection()


class Sendfile(Protocol):
    """
    Written for TCP: send a file with L{FileSender} (a pull producer), then
    close.
    """

    path = None

    def connectionMade(self):
        self.file = open(self.path, "rb")
        d = FileSender().beginFileTransfer(self.file, self.transport)
        d.addBoth(self._sent)

    def _sent(self, result):
        self.file.close()
        self.transport.loseConnection()
        return result


@implementer(IStreamClientEndpoint)
class StreamEndpoint:
    """
    A client endpoint whose connections are streams opened on C{mux}.
    """

    def __init__(self, mux):
        self.mux = mux

    def connect(self, factory):
        return self.mux.openStream(factory)


@implementer(IAgentEndpointFactory)
class StreamEndpointFactory:
    """
    Give an L{Agent} streams of one multiplexed connection for every URI.
    """

    def __init__(self, mux):
        self.mux = mux

    def endpointForURI(self, uri):
        return StreamEndpoint(self.mux)


class BigPage(Resource):
    """
    A resource that returns its whole body from C{render_GET}, as most
    twisted.web resources do.
    """

    isLeaf = True

    def __init__(self, body):
        Resource.__init__(self)
        self.body = body

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/octet-stream")
        return self.body


class StreamContractTests:
    """
    The checks; C{framing} names the framing under test.
    """

    framing = None
    timeout = 180

    @inlineCallbacks
    def connect(self, serverChildFactory):
        """
        Listen on 127.0.0.1 with default settings, connect a client; return
        the client's L{muxframe.Multiplexer}.
        """
        serverFactory = MultiplexerFactory(
            serverChildFactory, framing=self.framing, role="server")
        port = reactor.listenTCP(0, serverFactory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        clientFactory = MultiplexerFactory(None, framing=self.framing, role="client")
        client = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            clientFactory.buildProtocol(None))

        def close():
            lost = client.whenLost()
            client.close()
            return lost

        self.addCleanup(close)
        return client

    @inlineCallbacks
    def test_singleBurstWrite200MiB(self):
        """
        A protocol that writes 200 MiB in one C{write()} from
        C{connectionMade}, with no producer, works as on TCP: every byte
        arrives, in order, and the stream ends cleanly.
        """
        size = 200 * MiB
        data, expected = blob(size)
        factory = Factory.forProtocol(Burst)
        factory.protocol = type("Burst200", (Burst,), {"data": data})
        del data
        client = yield self.connect(factory)
        hasher = yield client.openStream(Factory.forProtocol(Hasher))
        count, digest, reason = yield hasher.done
        factory.protocol.data = None
        self.assertEqual(count, size)
        self.assertEqual(digest, expected)
        self.assertTrue(reason.check(ConnectionDone), reason)

    @inlineCallbacks
    def test_twistedWebBody50MiB(self):
        """
        A C{twisted.web} resource returning a 50 MiB body from
        C{render_GET} (no producer) serves it whole over a stream, to a
        C{twisted.web} client.
        """
        size = 50 * MiB
        body, expected = blob(size)
        client = yield self.connect(Site(BigPage(body)))
        del body
        agent = Agent.usingEndpointFactory(reactor, StreamEndpointFactory(client))
        response = yield agent.request(b"GET", b"http://muxframe.test/big")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.length, size)
        hasher = Hasher()
        hasher.greeting = b""
        response.deliverBody(hasher)
        count, digest, reason = yield hasher.done
        self.assertTrue(reason.check(ResponseDone), reason)
        self.assertEqual(count, size)
        self.assertEqual(digest, expected)

    @inlineCallbacks
    def test_fileSender100MiB(self):
        """
        C{FileSender} (a pull producer) sends a 100 MiB file over a stream
        intact.
        """
        path = self.mktemp()
        expected = hashlib.sha256()
        rng = random.Random(3)
        with open(path, "wb") as f:
            for _ in range(100):
                block = rng.randbytes(MiB)
                expected.update(block)
                f.write(block)
        self.addCleanup(os.remove, path)
        factory = Factory.forProtocol(Sendfile)
        factory.protocol = type("SendThis", (Sendfile,), {"path": path})
        client = yield self.connect(factory)
        hasher = yield client.openStream(Factory.forProtocol(Hasher))
        count, digest, reason = yield hasher.done
        self.assertEqual(count, 100 * MiB)
        self.assertEqual(digest, expected.hexdigest())
        self.assertTrue(reason.check(ConnectionDone), reason)


class MioStreamContractTests(StreamContractTests, TestCase):
    """
    The stream contract over MIO.
    """

    framing = "mio"


class BmpStreamContractTests(StreamContractTests, TestCase):
    """
    The stream contract over BMP.
    """

    framing = "bmp"
