"""
Sending to a Twisted TCP connection's socket directly.

C{transport.write} buffers and registers the connection for writability;
the bytes leave on the next reactor turn, one C{epoll_ctl} pair and one
turn per small message.  A protocol that writes small messages often (the
multiplexer, an XTMP session) may send them itself instead, under these
rules:

  - only on a plain TCP (or UNIX) connection of Twisted's own, never TLS or
    a wrapper (L{directSocket} returns C{None} for those);
  - only while the transport buffers nothing and is open for writing
    (L{transportIdle}), so the order on the wire is the order of the
    writes and a closing transport keeps its own rules;
  - what the kernel does not take (a partial send, C{EAGAIN}, an error)
    goes to C{transport.write}, behind nothing: the transport then owns
    the rest, its backpressure (pausing the protocol as its producer) and
    the error, which it finds and reports as it writes.
"""

import socket
import sys


def directSocket(transport):
    """
    Return the socket of a plain TCP (or UNIX) connection of Twisted's own,
    which a protocol may send to itself while the transport buffers
    nothing; C{None} for other transports (TLS, wrappers, tests').
    """
    # (Not imported here: a process that has not loaded Twisted's TCP has
    # no such connection, and the import costs in-memory users.)
    tcp = sys.modules.get("twisted.internet.tcp")
    if tcp is None or not isinstance(transport, tcp.Connection) or transport.TLS:
        return None
    sock = getattr(transport, "socket", None)
    if not isinstance(sock, socket.socket) or not hasattr(sock, "sendmsg"):
        return None  # (sendmsg: not on Windows)
    return sock


def transportIdle(transport):
    """
    Whether bytes may go to C{transport}'s socket directly: it buffers
    nothing (the order on the wire is kept) and is neither closing,
    aborted nor TLS.

    @param transport: a transport L{directSocket} returned a socket for.
    """
    return (not transport.dataBuffer and not transport._tempDataLen
            and transport.connected and not transport.disconnecting
            and not transport._writeDisconnecting
            and not transport._writeDisconnected
            and not transport._aborting and not transport.TLS)


def sendOrWrite(sock, transport, data):
    """
    Send C{data} (bytes) to C{sock} if C{transport} is idle, and write what
    the kernel does not take (all of it otherwise) to C{transport}.

    @param sock: C{transport}'s socket, from L{directSocket}.
    @return: the number of bytes sent directly.
    """
    sent = 0
    if transportIdle(transport):
        try:
            sent = sock.send(data)
        except OSError:
            # Full (EAGAIN), or an error the transport finds and reports
            # as it writes the rest.
            sent = 0
        if sent == len(data):
            return sent
        data = data[sent:]
    transport.write(data)
    return sent
