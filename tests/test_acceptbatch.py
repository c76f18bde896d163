"""
Tests for L{muxframe.acceptbatch}: the cap on connections a listening port
accepts per reactor turn, on real loopback sockets.
"""

import os
import socket

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from muxframe.acceptbatch import (
    DEFAULT_ACCEPTS_PER_TURN, CappedEndpoint, capAccepts,
)
from muxframe.tap import ListenService


class Closing(Protocol):
    def connectionMade(self):
        self.factory.built.append(self)
        self.transport.loseConnection()


class Counting(Factory):
    protocol = Closing

    def __init__(self):
        self.built = []


class CapAcceptsTests(TestCase):
    """
    L{capAccepts} on a TCP port with connections waiting in its backlog.
    """

    def listen(self, limit=None):
        factory = Counting()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        if limit is not None:
            capAccepts(port, limit)
        return factory, port

    def waiting(self, port, count):
        """
        C{count} connections the kernel has completed, waiting for accept.
        """
        clients = [socket.create_connection(("127.0.0.1", port.getHost().port),
                                            timeout=5) for _ in range(count)]
        self.addCleanup(lambda: [c.close() for c in clients])
        return clients

    def settle(self):
        # Let the accepted connections' closes run.
        return deferLater(reactor, 0.05, lambda: None)

    def test_uncappedAcceptsTheWholeBacklog(self):
        """
        Without the cap, one readable event accepts every waiting
        connection (Twisted's batch starts at 100 and grows).
        """
        factory, port = self.listen()
        self.waiting(port, 10)
        port.doRead()
        self.assertEqual(len(factory.built), 10)
        return self.settle()

    def test_capped(self):
        """
        Capped, each readable event accepts at most C{limit}, however
        often Twisted's adaptation would grow the batch; the rest wait
        for later turns.
        """
        factory, port = self.listen(3)
        self.waiting(port, 10)
        for expected in (3, 6, 9, 10):
            port.doRead()
            self.assertEqual(len(factory.built), expected)
        return self.settle()

    def test_zeroLeavesTwistedAlone(self):
        """
        A limit of 0 changes nothing.
        """
        factory, port = self.listen(0)
        self.waiting(port, 5)
        port.doRead()
        self.assertEqual(len(factory.built), 5)
        return self.settle()

    def test_portWithoutBatchUnchanged(self):
        """
        A listening port without C{numberAccepts} is returned as it is.
        """
        port = object()
        self.assertIs(capAccepts(port, 2), port)

    def test_endpoint(self):
        """
        L{CappedEndpoint} caps the ports its endpoint listens on.
        """
        factory = Counting()
        endpoint = CappedEndpoint(TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1"), 2)
        d = endpoint.listen(factory)

        def listening(port):
            self.addCleanup(port.stopListening)
            self.waiting(port, 5)
            port.doRead()
            self.assertEqual(len(factory.built), 2)
            return self.settle()

        return d.addCallback(listening)


class ListenServiceTests(TestCase):
    """
    The roles' L{ListenService} listens through a L{CappedEndpoint}.
    """

    def test_default(self):
        service = ListenService("tcp:0:interface=127.0.0.1", Counting(),
                                reactor)
        self.assertIsInstance(service.inner.endpoint, CappedEndpoint)
        self.assertEqual(service.inner.endpoint.limit,
                         DEFAULT_ACCEPTS_PER_TURN)

    def test_xtmpConfig(self):
        """
        The xtmp role's C{server.accepts_per_turn} reaches its listeners.
        """
        from muxframe.server.config import ServerConfig
        from muxframe.server.service import XTMPServerService
        from tests.test_server_tap import writeSetup
        import sys
        directory = os.path.abspath(self.mktemp())
        config = ServerConfig.fromFile(writeSetup(directory, 0, {
            "server": {"accepts_per_turn": 3}}))
        # The setup's handlers module.
        self.patch(sys, "path", [directory] + sys.path)
        service = XTMPServerService(config, reactor, installSignals=False)
        limits = [listener.inner.endpoint.limit
                  for listener in service._listeners]
        self.assertEqual(limits, [3])
