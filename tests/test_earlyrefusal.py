"""
Tests for L{muxframe.earlyrefusal}: refusals answered at accept time,
without a transport, on real loopback sockets.
"""

import socket

from twisted.internet import reactor, tcp
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from muxframe.acceptbatch import CappedEndpoint
from muxframe.earlyrefusal import RefusedTransport, refuseEarly

REFUSAL = b"refused: too many connections\n"


class Refusal(Protocol):
    earlyRefusal = REFUSAL

    def __init__(self, factory):
        self.factory = factory
        self.lost = []

    def connectionMade(self):
        self.factory.made.append(self)
        # What a refusing protocol does on a usual transport; here it is
        # dropped, the bytes having gone at accept time.
        self.transport.write(b"not sent")
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.lost.append(reason)


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Mixed(Factory):
    """
    Refuses every other connection, echoes the rest.
    """

    def __init__(self):
        self.made = []
        self.count = 0

    def buildProtocol(self, addr):
        self.count += 1
        if self.count % 2:
            return Refusal(self)
        return Echo()


def exchange(port, data, reads=64):
    """
    Connect to C{port}, send C{data}, and read until the server closes or
    C{reads} reads; return what arrived and whether a reset came.
    """
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        c.sendall(data)
        got = b""
        for _ in range(reads):
            chunk = c.recv(4096)
            if not chunk:
                return got, False
            got += chunk
            if data and got == data:
                return got, False
        return got, False
    except ConnectionResetError:
        return got, True
    finally:
        c.close()


class RefuseEarlyTests(TestCase):
    timeout = 60

    def listen(self, factory):
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return refuseEarly(port)

    def inThread(self, f, *args):
        from twisted.internet.threads import deferToThread
        return deferToThread(f, *args)

    @inlineCallbacks
    def test_refusalSentWithoutATransport(self):
        """
        A refusal's bytes arrive, then a clean end of stream, even when the
        client's own bytes (a ClientHello) were never read: no reset.  The
        protocol sees a closed L{RefusedTransport}, then connectionLost;
        what it writes is dropped.  Accepted connections on the same port
        work as usual.
        """
        factory = Mixed()
        port = self.listen(factory).getHost().port
        for i in range(100):
            got, reset = yield self.inThread(exchange, port, b"h" * 1200)
            if i % 2 == 0:
                self.assertEqual((got, reset), (REFUSAL, False))
            else:
                self.assertEqual((got, reset), (b"h" * 1200, False))
        self.assertEqual(len(factory.made), 50)
        for refusal in factory.made:
            self.assertIsInstance(refusal.transport, RefusedTransport)
            self.assertEqual(refusal.transport.sent, len(REFUSAL))
            self.assertEqual(refusal.transport.getPeer().host, "127.0.0.1")
            self.assertEqual(refusal.transport.getHost().port, port)
        # connectionLost follows in a later turn, once.
        yield deferLater(reactor, 0.05, lambda: None)
        for refusal in factory.made:
            [reason] = refusal.lost
            self.assertIsInstance(reason.value, ConnectionDone)

    def test_onlyTwistedStreamPortsChange(self):
        """
        refuseEarly is idempotent on a TCP port and leaves other ports
        alone.
        """
        port = self.listen(Mixed())
        wrapped = port.transport
        self.assertIs(refuseEarly(port), port)
        self.assertIs(port.transport, wrapped)
        other = object()
        self.assertIs(refuseEarly(other), other)

    @inlineCallbacks
    def test_cappedEndpointRefusesEarly(self):
        """
        The roles' listeners (L{CappedEndpoint}) answer refusals early.
        """
        factory = Mixed()
        port = yield CappedEndpoint(TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1")).listen(factory)
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, tcp.Port)
        got, reset = yield self.inThread(exchange, port.getHost().port, b"")
        self.assertEqual((got, reset), (REFUSAL, False))
        self.assertIsInstance(factory.made[0].transport, RefusedTransport)
