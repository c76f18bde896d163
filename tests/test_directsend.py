"""
L{muxframe.directsend}: when bytes may go to a Twisted TCP connection's
socket directly, and that what the kernel does not take is the transport's,
in order.
"""

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import ClientCreator, Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe.directsend import directSocket, sendOrWrite, transportIdle

from tests.test_xtmp_transports import waitFor


class FakeSocket:
    """
    A socket that takes at most C{room} bytes a send, or raises C{error}.
    """

    def __init__(self, room=1 << 30, error=None):
        self.room = room
        self.error = error
        self.sent = []

    def send(self, data):
        if self.error is not None:
            raise self.error
        taken = bytes(data[:self.room])
        self.room -= len(taken)
        if taken:
            self.sent.append(taken)
        return len(taken)


class FakeTCPTransport:
    """
    The state of a Twisted TCP transport that L{transportIdle} reads, and
    C{write} recording what it is given.
    """

    def __init__(self, **state):
        self.dataBuffer = b""
        self._tempDataLen = 0
        self.connected = True
        self.disconnecting = False
        self._writeDisconnecting = False
        self._writeDisconnected = False
        self._aborting = False
        self.TLS = False
        self.__dict__.update(state)
        self.written = []

    def write(self, data):
        self.written.append(bytes(data))
        self._tempDataLen += len(data)


class TransportIdleTests(SynchronousTestCase):

    def test_idle(self):
        """
        A connected transport buffering nothing is idle.
        """
        self.assertTrue(transportIdle(FakeTCPTransport()))

    def test_notIdle(self):
        """
        Buffered bytes (either buffer), a close or abort under way, a
        disconnected or TLS transport: not idle.
        """
        for state in [{"dataBuffer": b"x"}, {"_tempDataLen": 1},
                      {"connected": False}, {"disconnecting": True},
                      {"_writeDisconnecting": True},
                      {"_writeDisconnected": True}, {"_aborting": True},
                      {"TLS": True}]:
            self.assertFalse(transportIdle(FakeTCPTransport(**state)), state)


class SendOrWriteTests(SynchronousTestCase):

    def test_idleGoesToTheSocket(self):
        """
        With the transport idle, the bytes are sent to the socket and the
        transport is given nothing.
        """
        sock, transport = FakeSocket(), FakeTCPTransport()
        self.assertEqual(sendOrWrite(sock, transport, b"hello"), 5)
        self.assertEqual(sock.sent, [b"hello"])
        self.assertEqual(transport.written, [])

    def test_bufferedTransportKeepsOrder(self):
        """
        Once the transport holds bytes, later ones go behind them through
        the transport, never around them to the socket.
        """
        sock, transport = FakeSocket(room=3), FakeTCPTransport()
        sendOrWrite(sock, transport, b"first")
        sock.room = 100
        self.assertEqual(sendOrWrite(sock, transport, b"second"), 0)
        self.assertEqual(sock.sent, [b"fir"])
        self.assertEqual(transport.written, [b"st", b"second"])

    def test_partialSendRestToTransport(self):
        """
        What the kernel does not take goes to the transport, unchanged.
        """
        sock, transport = FakeSocket(room=4), FakeTCPTransport()
        self.assertEqual(sendOrWrite(sock, transport, b"abcdefgh"), 4)
        self.assertEqual(b"".join(sock.sent + transport.written), b"abcdefgh")
        self.assertEqual(transport.written, [b"efgh"])

    def test_errorLeavesAllToTransport(self):
        """
        A send that fails (EAGAIN, a reset) leaves all the bytes to the
        transport, which reports the error as it writes.
        """
        for error in (BlockingIOError(), ConnectionResetError()):
            sock, transport = FakeSocket(error=error), FakeTCPTransport()
            self.assertEqual(sendOrWrite(sock, transport, b"data"), 0)
            self.assertEqual(transport.written, [b"data"])


class DirectSocketTests(TestCase):
    timeout = 20

    def test_notTCP(self):
        """
        Transports other than Twisted's TCP connections have no direct
        socket.
        """
        self.assertIsNone(directSocket(StringTransport()))
        self.assertIsNone(directSocket(FakeTCPTransport()))

    @inlineCallbacks
    def test_tcpConnection(self):
        """
        A real loopback TCP connection's socket is returned, and bytes sent
        through L{sendOrWrite} arrive in order with ones the transport
        wrote.
        """
        received = Deferred()

        class Collect(Protocol):
            data = b""

            def dataReceived(self, data):
                self.data += data
                if len(self.data) >= 6:
                    received.callback(self.data)

        port = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1").listen(
                Factory.forProtocol(Collect))
        self.addCleanup(port.stopListening)
        client = yield ClientCreator(reactor, Protocol).connectTCP(
            "127.0.0.1", port.getHost().port)
        self.addCleanup(client.transport.loseConnection)
        sock = directSocket(client.transport)
        self.assertIs(sock, client.transport.socket)
        client.transport.write(b"ab")
        # Buffered by the transport: these go behind it.
        self.assertEqual(sendOrWrite(sock, client.transport, b"cd"), 0)
        # Once the transport has sent its buffer it is idle again, and the
        # next bytes go to the socket.
        yield waitFor(lambda: transportIdle(client.transport),
                      "the transport to send its buffer")
        self.assertEqual(sendOrWrite(sock, client.transport, b"ef"), 2)
        self.assertEqual((yield received), b"abcdef")
