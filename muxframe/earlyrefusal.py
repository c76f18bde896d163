"""
Refusing a connection at accept time, without a Twisted transport.

A server that refuses a connection (too many from its address, rate
limited, draining) still owes the client a reason, and under a connection
flood it refuses thousands a second.  Through Twisted's usual path each
refusal builds a C{tcp.Server} transport, registers it with the reactor
for reading and for writing, writes, waits a turn for the write and tears
it all down: measured here, about 0.28 ms of server CPU per refused
connection, where the refusal's own decision takes 10 us.  A refusal that
knows its bytes at accept time needs none of that.

Rules:
  - a factory refuses early by returning, from C{buildProtocol}, a protocol
    with an C{earlyRefusal} attribute: the bytes to send (a few hundred at
    most); any other protocol gets the port's usual transport;
  - on a port made ready by L{refuseEarly} (Twisted's TCP and UNIX ports),
    such a connection gets those bytes with one non-blocking C{send}, a
    shutdown of both directions, and a close: no reactor registration, no
    later turn.  The shutdown comes before the close because closing a
    socket whose peer's bytes (a ClientHello) are unread makes the kernel
    answer with a reset, which may destroy the refusal in flight;
  - bytes a fresh socket's send buffer does not take at once are dropped
    (a refusal is best effort; the buffer holds kilobytes);
  - the protocol still sees C{makeConnection} and then C{connectionLost}
    (a clean close), over a L{RefusedTransport} that is already
    disconnected and drops writes;
  - other ports (TLS wrappers build a TLS protocol, not the refusal;
    multiplexed virtual ports have no sockets) are returned unchanged.
"""

import socket

from zope.interface import implementer

from twisted.internet import main, tcp
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ITransport
from twisted.python.failure import Failure


@implementer(ITransport)
class RefusedTransport:
    """
    The transport of a connection refused at accept time: its socket is
    already closed, so writes are dropped and closing does nothing.

    @ivar sent: how many of the refusal's bytes the socket took.
    """

    disconnected = True
    connected = False

    def __init__(self, host, peer, sent):
        self._host = host
        self._peer = peer
        self.sent = sent

    def write(self, data):
        """
        Drop C{data}: the connection is closed.
        """

    def writeSequence(self, data):
        """
        Drop C{data}: the connection is closed.
        """

    def loseConnection(self):
        """
        Nothing to do: the connection is closed.
        """

    def abortConnection(self):
        """
        Nothing to do: the connection is closed.
        """

    def getPeer(self):
        """
        The refused peer's address.
        """
        return self._peer

    def getHost(self):
        """
        The listening side's address.
        """
        return self._host


def sendAndClose(skt, data):
    """
    Send C{data} on C{skt} without blocking, then shut it down and close it.

    @return: the number of bytes the socket took.
    """
    sent = 0
    try:
        skt.setblocking(False)
        sent = skt.send(data)
    except OSError:
        pass
    try:
        skt.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    skt.close()
    return sent


class _RefusingTransportFactory:
    """
    Stands in for a port's transport class: an early refusal is answered
    and closed here, anything else gets C{transport}.
    """

    def __init__(self, transport):
        self.transport = transport
        self._host = None

    def _addresses(self, port, addr):
        if self._host is None:
            self._host = port.getHost()
        host = self._host
        if isinstance(host, (IPv4Address, IPv6Address)):
            return host, type(host)("TCP", addr[0], addr[1])
        return host, UNIXAddress(addr or None)

    def __call__(self, skt, protocol, addr, port, sessionno, reactor):
        refusal = getattr(protocol, "earlyRefusal", None)
        if refusal is None:
            return self.transport(skt, protocol, addr, port, sessionno,
                                  reactor)
        sent = sendAndClose(skt, refusal)
        transport = RefusedTransport(*self._addresses(port, addr), sent=sent)
        # The port calls makeConnection with what this returns; end the
        # connection right after it.
        reactor.callLater(0, protocol.connectionLost,
                          Failure(main.CONNECTION_DONE))
        return transport


def refuseEarly(port):
    """
    Make C{port} answer early refusals (see the module docstring) without
    building a transport.

    @param port: an L{IListeningPort}, as an endpoint's C{listen} gives.
    @return: C{port}.
    """
    if isinstance(port, tcp.Port) and not isinstance(
            port.transport, _RefusingTransportFactory):
        port.transport = _RefusingTransportFactory(port.transport)
    return port
