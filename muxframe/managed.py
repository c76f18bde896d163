"""
The multiplexer an endpoint owns: L{ManagedMultiplexer} knows when its
connection is ready to carry streams and tells its factory when it comes,
becomes ready, idles and goes.

Readiness, in order:

  connected   the inner endpoint's connection is made (TCP, TLS, UNIX ...)
  verified    over TLS, the handshake succeeded (the peer's certificate was
              checked); at once over plain transports
  ready       L{ManagedMultiplexer.whenConfirmed}: the peer sent a frame of
              the framing, or it stayed silent for the confirmation window
              without closing the connection or sending something else (MIO
              and BMP peers only speak when spoken to)

Any loss before C{ready} fails the waiters with the reason: the TLS error,
or L{muxframe.errors.PeerNotMultiplexingError} when the peer closed at once
or answered in another protocol.
"""

from zope.interface import implementer

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.python.failure import Failure

from .describe import addressText
from .errors import (
    MultiplexedConnectError,
    PeerNotMultiplexingError,
    RemoteProtocolError,
)
from .multiplexer import Multiplexer
from .sniff import lookalike


class _ClosingTransport:
    """
    Wrap a TLS connection's transport so that closing it (as
    L{twisted.application.internet.ClientService} and applications do, with
    C{loseConnection}) first unregisters the L{Multiplexer} as its producer:
    a TLS transport does not shut down while a producer is registered.
    """

    def __init__(self, transport):
        self._transport = transport
        # The hot path goes straight to the real transport.
        self.write = transport.write
        self.writeSequence = transport.writeSequence

    def __getattr__(self, name):
        return getattr(self._transport, name)

    def loseConnection(self):
        self._transport.unregisterProducer()
        self._transport.loseConnection()


def _fire(waiters, result):
    for d in waiters:
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)


@implementer(IHandshakeListener)
class ManagedMultiplexer(Multiplexer):
    """
    A L{Multiplexer} that reports to its factory (C{_connected},
    C{_lost}, C{_idle}) and can say when it is ready to carry streams.
    """

    _handshakeDone = False
    _tls = False
    # The connection's muxframe.tunnelauth gate, when its endpoint names
    # clients (set by the endpoint's factory).
    authentication = None

    def makeConnection(self, transport):
        self._tls = ISSLTransport.providedBy(transport)
        if self._tls:
            transport = _ClosingTransport(transport)
        self._verifiedWaiters = []
        self._confirmWaiters = []
        self._confirmTimer = None
        self._gone = False
        Multiplexer.makeConnection(self, transport)

    def connectionMade(self):
        Multiplexer.connectionMade(self)
        self.factory._connected(self)

    def handshakeCompleted(self):
        """
        The TLS handshake succeeded (the peer's certificate was verified).
        """
        if self.transport.disconnecting:
            # Twisted before 26.4 checks the host name after the handshake
            # and, on a mismatch, aborts the connection and reports the
            # handshake done all the same: connectionLost brings the reason.
            return
        self._handshakeDone = True
        waiters, self._verifiedWaiters = self._verifiedWaiters, []
        _fire(waiters, self)

    def isVerified(self):
        """
        Return true if the transport is plain, or its TLS handshake
        succeeded.
        """
        return not self._tls or self._handshakeDone

    def whenVerified(self):
        """
        Return a Deferred firing with this multiplexer once its transport is
        verified: at once over plain transports, after the handshake over
        TLS; it fails with the reason if the connection is lost first (a
        failed handshake).
        """
        if self.disconnected:
            return fail(self.lostReason)
        if self.isVerified():
            return succeed(self)
        d = Deferred()
        self._verifiedWaiters.append(d)
        return d

    def whenConfirmed(self, window):
        """
        Return a Deferred firing with this multiplexer once the peer has
        shown it speaks the framing, or after C{window} seconds of silence
        with the connection still up; it fails with
        L{PeerNotMultiplexingError} (or the transport's error) if the
        connection ends or the peer speaks another protocol first.
        """
        if self.disconnected:
            return fail(self._notMultiplexing(self.lostReason))
        if self.heardFromPeer() or window <= 0:
            return succeed(self)
        d = Deferred()
        self._confirmWaiters.append(d)
        if self._confirmTimer is None:
            self.sendProbe()
            self._confirmTimer = self.reactor.callLater(window, self._confirmExpired)
        return d

    def _confirmExpired(self):
        self._confirmTimer = None
        # What the waiters write (their streams' opens and first bytes)
        # leaves together, as from a read.
        self._gathering(self._confirmed, self)

    def _foreign(self):
        """
        What the peer's first bytes look like, if another protocol.
        """
        if self.engine is None:
            return None
        return lookalike(self.engine.firstBytes(), self.framing)

    def _confirmed(self, result):
        timer, self._confirmTimer = self._confirmTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        waiters, self._confirmWaiters = self._confirmWaiters, []
        _fire(waiters, result)

    def _dataReceived(self, data):
        # (Inside Multiplexer.dataReceived: what the confirmation's waiters
        # write, opening their streams, goes out with the read's answer.)
        Multiplexer._dataReceived(self, data)
        if not self._confirmWaiters or self.disconnected:
            return
        if self.heardFromPeer():
            self._confirmed(self)
        elif self._foreign() is not None:
            # Bytes of another protocol that this framing's decoder skips
            # (a TLS alert is a MIO frame with flags 0): no need to wait.
            self._confirmed(self._notMultiplexing(None))

    def allStreamsEnded(self):
        self.factory._idle(self)

    def _handshakeFailed(self, reason):
        """
        The reason a connection lost during its TLS handshake failed: the
        TLS error, or, when the peer just closed, that.
        """
        if reason is not None and not reason.check(ConnectionDone, ConnectionLost):
            return reason
        return Failure(MultiplexedConnectError(
            "the peer at %s closed the connection during the TLS handshake "
            "(does it speak TLS?)" % (addressText(self.transport.getPeer()),), reason))

    def _notMultiplexing(self, reason):
        """
        The reason a connection that never carried a frame of the framing
        ended (C{reason}; C{None} while it is still up), told as what the
        peer did: closed at once, or answered in another protocol.
        """
        if self.heardFromPeer():
            return reason
        value = reason.value if reason is not None else None
        peer = addressText(self.transport.getPeer())
        name = self.framing.upper()
        foreign = self._foreign()
        if foreign is not None or isinstance(value, RemoteProtocolError):
            message = "the peer at %s does not speak %s: %s (its first bytes: %r)" % (
                peer, name, "this looks like %s" % (foreign,) if foreign else value,
                self.engine.firstBytes()[:16])
            if foreign is not None and foreign.startswith(("a TLS", "TLS")):
                message += "; is it a TLS server (a tls: endpoint)?"
        elif value is None or isinstance(value, (ConnectionDone, ConnectionLost)):
            message = ("the peer at %s closed the connection before sending any %s "
                       "frame: it does not speak %s, or refused the connection"
                       % (peer, name, name))
        else:
            return reason
        return Failure(PeerNotMultiplexingError(message, reason))

    def connectionLost(self, reason=None):
        if reason is None:
            reason = Failure(ConnectionLost("multiplexed connection lost"))
        try:
            Multiplexer.connectionLost(self, reason)
        finally:
            # (Done already, unless Multiplexer.connectionLost raised.)
            self._connectionGone()

    def _connectionGone(self):
        # Before drain()'s and whenLost()'s Deferreds fire (see Multiplexer).
        if self._gone:
            return
        self._gone = True
        timer, self._confirmTimer = self._confirmTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        verified, self._verifiedWaiters = self._verifiedWaiters, []
        confirming, self._confirmWaiters = self._confirmWaiters, []
        if verified:
            _fire(verified, self._handshakeFailed(self.lostReason))
        if confirming:
            _fire(confirming, self._notMultiplexing(self.lostReason))
        self.factory._lost(self, self.lostReason)


__all__ = ["ManagedMultiplexer"]
