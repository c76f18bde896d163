"""
Endpoints that carry each connection as one stream of a multiplexed
connection.

L{MultiplexedServerEndpoint} wraps any server endpoint: every stream that any
peer opens on any accepted connection becomes a connection of the factory
given to C{listen()}.

L{MultiplexedClientEndpoint} (in L{muxframe.clientendpoint}) wraps any client
endpoint: each C{connect()} opens a new stream over one shared connection.
"""

from zope.interface import implementer

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import Logger

from .clientendpoint import MultiplexedClientEndpoint
from .describe import addressText, endpointText, isVerificationFailure, reasonText
from .errors import MultiplexedConnectError, PeerNotMultiplexingError  # re-exported
from .managed import ManagedMultiplexer
from .multiplexer import MultiplexerFactory
from .observed import MultiplexerObservers


@implementer(IProtocolFactory)
class _StreamFactory:
    """
    Give each stream the peer opens to the user's factory (the C{childFactory}
    of every L{Multiplexer} a L{MultiplexedServerEndpoint} accepts).
    """

    def __init__(self, factory):
        self.factory = factory

    def doStart(self):
        pass

    def doStop(self):
        pass

    def buildProtocol(self, addr):
        return self.factory.buildProtocol(addr)


class _ServerMultiplexerFactory(MultiplexerFactory):
    """
    Build server-side multiplexers and track the ones connected.
    """

    protocol = ManagedMultiplexer

    def __init__(self, endpoint, childFactory, framing, reactor, settings):
        MultiplexerFactory.__init__(
            self, _StreamFactory(childFactory), framing=framing, role="server",
            reactor=reactor, **settings)
        self._endpoint = endpoint
        self.multiplexers = []

    def buildProtocol(self, addr):
        mux = MultiplexerFactory.buildProtocol(self, addr)
        authenticator = self._endpoint.authenticator
        if authenticator is not None:
            # Streams reach the user's factory through the connection's
            # authentication (refused until a token client answers).
            mux.authentication = authenticator.gate(mux, mux.childFactory)
            mux.childFactory = mux.authentication
        return mux

    def _connected(self, mux):
        self.multiplexers.append(mux)
        self._endpoint._connected(mux)

    def _lost(self, mux, reason=None):
        if mux in self.multiplexers:
            self.multiplexers.remove(mux)
        self._endpoint._lost(mux, reason)

    def _idle(self, mux):
        pass


@implementer(IListeningPort)
class MultiplexedListeningPort:
    """
    The L{IListeningPort} of a L{MultiplexedServerEndpoint}.

    C{stopListening()} stops accepting connections, then drains every
    connection it accepted: no new streams, open streams get the
    C{drainTimeout} setting to finish, then the connection is closed.  The
    Deferred it returns fires when all of them are closed.

    @ivar port: the wrapped endpoint's L{IListeningPort}.
    @ivar multiplexers: the L{Multiplexer}s of the connections accepted and
        still open, oldest first.
    """

    def __init__(self, port, muxFactory, factory):
        self.port = port
        self._muxFactory = muxFactory
        self.factory = factory
        self._stopping = None

    @property
    def multiplexers(self):
        """
        The L{Multiplexer}s of this port's open connections, oldest first.
        """
        return list(self._muxFactory.multiplexers)

    def startListening(self):
        """
        Start listening again (after C{stopListening}).
        """
        self._stopping = None
        return self.port.startListening()

    def stopListening(self, timeout=None):
        """
        Stop accepting connections and drain the open ones (see the class
        docstring).

        @param timeout: the drain deadline in seconds (default: the
            C{drainTimeout} setting).
        @return: a Deferred that fires when the port is closed and every
            accepted connection is lost.
        """
        if self._stopping is not None:
            return self._stopping
        stopped = maybeDeferred(self.port.stopListening)
        drains = [mux.drain(timeout) for mux in self.multiplexers]
        d = gatherResults([stopped] + drains, consumeErrors=True)
        d.addBoth(self._stopped)
        self._stopping = d
        return d

    loseConnection = stopListening

    def _stopped(self, result):
        try:
            self.factory.doStop()
        except BaseException:
            Logger().failure("doStop of {factory} raised", factory=self.factory)
        return None

    def getHost(self):
        """
        Return the wrapped port's address.
        """
        return self.port.getHost()

    def __repr__(self):
        return "<MultiplexedListeningPort %s on %s>" % (
            self._muxFactory.framing, addressText(self.port.getHost()))


@implementer(IStreamServerEndpoint)
class MultiplexedServerEndpoint(MultiplexerObservers):
    """
    A server endpoint whose connections are the streams of multiplexed
    connections accepted on another endpoint.

    @param inner: the L{IStreamServerEndpoint} the multiplexed connections
        are accepted on (C{tcp:}, C{ssl:}, C{unix:} ...).
    @param framing: C{"mio"} or C{"bmp"}.
    @param reactor: an C{IReactorTime} for the multiplexers' timers (default:
        the global reactor).
    @param authenticator: a L{muxframe.tunnelauth.Authenticator} naming the
        clients (by TLS certificate or token), or C{None}: then no client
        has a name and L{authenticatedMultiplexer} finds none.
    @param settings: multiplexer settings (L{muxframe.settings.SETTINGS}).

    @ivar multiplexers: every L{Multiplexer} accepted through this endpoint
        and still connected, oldest first (used to open streams toward
        clients, as a reverse tunnel does).

    Observers (L{addObserver}, an L{IMultiplexerObserver}) are told about
    every connection accepted and lost.
    """

    log = Logger()

    def __init__(self, inner, framing="mio", reactor=None, description=None,
                 authenticator=None, **settings):
        from .settings import Settings
        MultiplexerFactory(None, framing=framing, role="server")  # validates
        self.inner = inner
        self.description = description
        self.framing = framing
        self.reactor = reactor
        self.settings = Settings(**settings).asDict()
        self.authenticator = authenticator
        self.multiplexers = []
        self._waiters = []

    def listen(self, factory):
        """
        Listen on the inner endpoint; every stream a peer opens is a
        connection of C{factory}.

        @return: a Deferred firing with a L{MultiplexedListeningPort}.
        """
        muxFactory = _ServerMultiplexerFactory(
            self, factory, self.framing, self.reactor, self.settings)
        factory.doStart()
        d = self.inner.listen(muxFactory)

        def listening(port):
            return MultiplexedListeningPort(port, muxFactory, factory)

        def failed(reason):
            factory.doStop()
            return reason

        d.addCallbacks(listening, failed)
        return d

    def _connected(self, mux):
        self.multiplexers.append(mux)
        self._tellConnected(mux)
        mux.whenVerified().addCallbacks(self._verified, lambda f: None)

    def _verified(self, mux):
        if mux.disconnected:
            return
        self.log.info("{framing} connection from {peer}", framing=self.framing,
                      peer=addressText(mux.transport.getPeer()))
        if mux.authentication is not None:
            mux.authentication.start()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(mux)

    def _lost(self, mux, reason=None):
        if mux not in self.multiplexers:
            return
        self.multiplexers.remove(mux)
        self._tellLost(mux, reason)
        peer = addressText(mux.transport.getPeer())
        if mux.isVerified():
            self.log.info("{framing} connection from {peer} lost: {reason}",
                          framing=self.framing, peer=peer, reason=reasonText(reason))
        elif isVerificationFailure(reason):
            self.log.warn("TLS verification failed: {cause}; {framing} connection "
                          "from {peer} refused", cause=reasonText(reason),
                          framing=self.framing, peer=peer)
        else:
            self.log.info("{framing} connection from {peer} failed before it was "
                          "ready: {reason}", framing=self.framing, peer=peer,
                          reason=reasonText(reason))

    def currentMultiplexer(self):
        """
        Return the most recently accepted connection's L{Multiplexer} that is
        still open and accepting streams, or C{None}.
        """
        for mux in reversed(self.multiplexers):
            if (mux.isVerified() and not mux.disconnected
                    and mux.engine is not None and not mux.engine.closed):
                return mux
        return None

    def authenticatedMultiplexer(self, name):
        """
        Return the L{Multiplexer} of the most recent open connection whose
        client is authenticated as C{name} (by its TLS certificate's common
        name or its token), or C{None}.  An unauthenticated connection is
        never returned.
        """
        for mux in reversed(self.multiplexers):
            gate = mux.authentication
            if (gate is not None and gate.name == name and mux.isVerified()
                    and not mux.disconnected and mux.engine is not None
                    and not mux.engine.closed):
                return mux
        return None

    def whenConnected(self):
        """
        Return a Deferred firing with L{currentMultiplexer}, or with the next
        connection accepted if there is none.
        """
        mux = self.currentMultiplexer()
        if mux is not None:
            return succeed(mux)
        d = Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(d)
        return d

    def __repr__(self):
        return "<MultiplexedServerEndpoint %s>" % (
            self.description or "%s:%s" % (self.framing, endpointText(self.inner)),)


__all__ = [
    "MultiplexedClientEndpoint",
    "MultiplexedConnectError",
    "MultiplexedListeningPort",
    "MultiplexedServerEndpoint",
    "PeerNotMultiplexingError",
]
