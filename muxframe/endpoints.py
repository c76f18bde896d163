"""
Endpoints that carry each connection as one stream of a multiplexed
connection.

L{MultiplexedServerEndpoint} wraps any server endpoint: every stream that any
peer opens on any accepted connection becomes a connection of the factory
given to C{listen()}.

L{MultiplexedClientEndpoint} wraps any client endpoint: each C{connect()}
opens a new stream over one shared connection, made on first use and re-made
with exponential backoff (L{twisted.application.internet.ClientService})
whenever it is lost.  A C{connect()} that cannot get a connection within
C{connectTimeout} seconds fails with L{MultiplexedConnectError}; it never
hangs.
"""

from zope.interface import implementer

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    ISSLTransport,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import MuxframeError, SessionClosedError
from .multiplexer import Multiplexer, MultiplexerFactory

DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_RETRY_INITIAL = 0.5
DEFAULT_RETRY_MAX = 30.0


def _peerText(address):
    """
    C{host:port} for IP addresses, else the address's repr.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return "%s:%s" % (host, port)
    return repr(address)


def _reasonText(reason):
    """
    A short text for a connection-lost reason (a Failure or None).
    """
    if reason is None:
        return "unknown reason"
    value = reason.value
    args = getattr(value, "args", None)
    # OpenSSL errors carry a list of (library, function, reason) tuples.
    if args and isinstance(args[0], list) and args[0] and isinstance(args[0][0], tuple):
        return "TLS error: " + "; ".join(str(item[-1]) for item in args[0])
    return reason.getErrorMessage()


class MultiplexedConnectError(MuxframeError):
    """
    A L{MultiplexedClientEndpoint} could not get a multiplexed connection (or
    could not open a stream on it) in time.

    @ivar reason: the last connection failure seen, if any (a L{Failure}).
    """

    def __init__(self, message, reason=None):
        MuxframeError.__init__(self, message)
        self.reason = reason


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


class _ClosingTransport:
    """
    Wrap a TLS connection's transport so that closing it (as
    L{ClientService} and applications do, with C{loseConnection}) first
    unregisters the L{Multiplexer} as its producer: a TLS transport does not
    shut down while a producer is registered.
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


@implementer(IHandshakeListener)
class _TrackingMultiplexer(Multiplexer):
    """
    A L{Multiplexer} that tells its factory when it comes and goes, and
    knows when a TLS transport has finished its handshake.
    """

    _handshakeDone = False
    _readyWaiters = None

    def makeConnection(self, transport):
        self._tls = ISSLTransport.providedBy(transport)
        if self._tls:
            transport = _ClosingTransport(transport)
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
        waiters, self._readyWaiters = self._readyWaiters or [], None
        for d in waiters:
            d.callback(self)

    def whenReady(self):
        """
        Return a Deferred firing with this multiplexer once it can carry
        streams: at once over plain transports, after the handshake over
        TLS; it fails with the reason if the connection is lost first (a
        failed handshake).
        """
        if self.disconnected:
            return fail(self._lostReason)
        if not self._tls or self._handshakeDone:
            return succeed(self)
        d = Deferred()
        if self._readyWaiters is None:
            self._readyWaiters = []
        self._readyWaiters.append(d)
        return d

    def connectionLost(self, reason=None):
        if reason is None:
            reason = Failure(ConnectionLost("multiplexed connection lost"))
        self._lostReason = reason
        waiters, self._readyWaiters = self._readyWaiters or [], None
        for d in waiters:
            d.errback(reason)
        try:
            Multiplexer.connectionLost(self, reason)
        finally:
            self.factory._lost(self, reason)


class _ServerMultiplexerFactory(MultiplexerFactory):
    """
    Build server-side multiplexers and track the ones connected.
    """

    protocol = _TrackingMultiplexer

    def __init__(self, endpoint, childFactory, framing, reactor, settings):
        MultiplexerFactory.__init__(
            self, _StreamFactory(childFactory), framing=framing, role="server",
            reactor=reactor, **settings)
        self._endpoint = endpoint
        self.multiplexers = []

    def _connected(self, mux):
        self.multiplexers.append(mux)
        self._endpoint._connected(mux)

    def _lost(self, mux, reason=None):
        if mux in self.multiplexers:
            self.multiplexers.remove(mux)
        self._endpoint._lost(mux, reason)


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
        return "<MultiplexedListeningPort %s on %r>" % (
            self._muxFactory.framing, self.port)


@implementer(IStreamServerEndpoint)
class MultiplexedServerEndpoint:
    """
    A server endpoint whose connections are the streams of multiplexed
    connections accepted on another endpoint.

    @param inner: the L{IStreamServerEndpoint} the multiplexed connections
        are accepted on (C{tcp:}, C{ssl:}, C{unix:} ...).
    @param framing: C{"mio"} or C{"bmp"}.
    @param reactor: an C{IReactorTime} for the multiplexers' timers (default:
        the global reactor).
    @param settings: multiplexer settings (L{muxframe.settings.SETTINGS}).

    @ivar multiplexers: every L{Multiplexer} accepted through this endpoint
        and still connected, oldest first (used to open streams toward
        clients, as a reverse tunnel does).
    """

    log = Logger()

    def __init__(self, inner, framing="mio", reactor=None, **settings):
        from .settings import Settings
        MultiplexerFactory(None, framing=framing, role="server")  # validates
        self.inner = inner
        self.framing = framing
        self.reactor = reactor
        self.settings = Settings(**settings).asDict()
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
        self.log.info("{framing} connection from {peer}", framing=self.framing,
                      peer=_peerText(mux.transport.getPeer()))
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(mux)

    def _lost(self, mux, reason=None):
        if mux in self.multiplexers:
            self.multiplexers.remove(mux)
            self.log.info("{framing} connection from {peer} lost: {reason}",
                          framing=self.framing, peer=_peerText(mux.transport.getPeer()),
                          reason=_reasonText(reason))

    def currentMultiplexer(self):
        """
        Return the most recently accepted connection's L{Multiplexer} that is
        still open and accepting streams, or C{None}.
        """
        for mux in reversed(self.multiplexers):
            if not mux.disconnected and mux.engine is not None and not mux.engine.closed:
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
        return "<MultiplexedServerEndpoint %s over %r>" % (self.framing, self.inner)


@implementer(IProtocol, IHandshakeListener)
class _HandshakeRelay:
    """
    Stand between a TLS transport and the protocol L{ClientService} wraps
    (which hides every interface but L{IProtocol}), so the multiplexer still
    hears C{handshakeCompleted}.
    """

    def __init__(self, protocol):
        self._relayed = protocol

    def makeConnection(self, transport):
        self._relayed.makeConnection(transport)

    def dataReceived(self, data):
        self._relayed.dataReceived(data)

    def connectionLost(self, reason):
        self._relayed.connectionLost(reason)

    def connectionMade(self):
        pass  # makeConnection of the relayed protocol calls its own

    def handshakeCompleted(self):
        handshakeCompleted = getattr(self._relayed, "handshakeCompleted", None)
        if handshakeCompleted is not None:
            handshakeCompleted()

    def __getattr__(self, name):
        return getattr(self._relayed, name)


@implementer(IProtocolFactory)
class _HandshakeRelayFactory:
    """
    Wrap each protocol of C{factory} in a L{_HandshakeRelay}.
    """

    def __init__(self, factory):
        self.factory = factory

    def doStart(self):
        self.factory.doStart()

    def doStop(self):
        self.factory.doStop()

    def buildProtocol(self, addr):
        protocol = self.factory.buildProtocol(addr)
        if protocol is None:
            return None
        return _HandshakeRelay(protocol)


class _RecordingEndpoint:
    """
    Wrap a client endpoint to remember its last connection failure, so a
    timed-out C{connect()} can say why.
    """

    def __init__(self, inner):
        self.inner = inner
        self.lastFailure = None

    def connect(self, factory):
        d = self.inner.connect(_HandshakeRelayFactory(factory))

        def failed(reason):
            self.lastFailure = reason
            return reason

        def succeeded(relay):
            return relay._relayed

        d.addCallbacks(succeeded, failed)
        return d

    def __repr__(self):
        return repr(self.inner)


@implementer(IStreamClientEndpoint)
class MultiplexedClientEndpoint:
    """
    A client endpoint whose connections are streams over one shared
    multiplexed connection made through another endpoint.

    The connection is made on the first C{connect()} and re-made with
    exponential backoff whenever it is lost (the endpoint runs a
    L{ClientService}); call L{stop} (or L{drain}) to end it.

    @param inner: the L{IStreamClientEndpoint} to connect through.
    @param framing: C{"mio"} or C{"bmp"}.
    @param reactor: the reactor (C{IReactorTime}) for retries, the connect
        timeout and the multiplexer's timers (default: the global reactor).
    @param childFactory: builds protocols for the streams the I{server} opens
        toward this client (a reverse tunnel); C{None} refuses them.  May be
        set as an attribute before the first C{connect()}.
    @param connectTimeout: seconds a C{connect()} waits for the shared
        connection before failing with L{MultiplexedConnectError}.
    @param retryPolicy: a L{ClientService} retry policy (attempt number ->
        seconds); default: L{backoffPolicy} from C{retryInitial} growing by
        1.5 up to C{retryMax} seconds.
    @param settings: multiplexer settings (L{muxframe.settings.SETTINGS}).
    """

    log = Logger()

    def __init__(self, inner, framing="mio", reactor=None, childFactory=None,
                 connectTimeout=DEFAULT_CONNECT_TIMEOUT, retryPolicy=None,
                 retryInitial=DEFAULT_RETRY_INITIAL, retryMax=DEFAULT_RETRY_MAX,
                 **settings):
        from .settings import Settings
        MultiplexerFactory(None, framing=framing, role="client")  # validates
        self.inner = inner
        self.framing = framing
        self.reactor = reactor
        self.childFactory = childFactory
        self.connectTimeout = float(connectTimeout)
        if retryPolicy is None:
            from twisted.application.internet import backoffPolicy
            retryPolicy = backoffPolicy(
                initialDelay=float(retryInitial), maxDelay=float(retryMax))
        self.retryPolicy = retryPolicy
        self.settings = Settings(**settings).asDict()
        self._recorder = _RecordingEndpoint(inner)
        self._service = None
        self._current = None

    def _getReactor(self):
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        return self.reactor

    @property
    def service(self):
        """
        The L{ClientService} keeping the shared connection, created and
        started on first use.
        """
        if self._service is None:
            from twisted.application.internet import ClientService
            reactor = self._getReactor()
            factory = _ClientMultiplexerFactory(
                self, framing=self.framing, role="client", reactor=reactor,
                **self.settings)
            self._service = ClientService(
                self._recorder, factory, retryPolicy=self.retryPolicy,
                clock=reactor)
            self._service.startService()
        return self._service

    def whenConnected(self, timeout=None):
        """
        Return a Deferred firing with the shared connection's L{Multiplexer}
        once it can carry streams (over TLS: once the handshake, and so the
        peer's certificate check, succeeded), connecting if needed.  It
        fails with L{MultiplexedConnectError}, naming the last error, after
        C{timeout} seconds (default C{connectTimeout}); cancelling it, or
        L{stop}, fails it too.
        """
        if timeout is None:
            timeout = self.connectTimeout
        reactor = self._getReactor()
        service = self.service
        state = {"pending": None, "done": False}

        def finish(outcome):
            if state["done"]:
                return
            state["done"] = True
            if timer.active():
                timer.cancel()
            pending, state["pending"] = state["pending"], None
            if pending is not None:
                pending.cancel()
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                self._recorder.lastFailure = None
                result.callback(outcome)

        def expire():
            last = self._recorder.lastFailure
            finish(Failure(MultiplexedConnectError(
                "no %s connection through %r within %g s%s" % (
                    self.framing, self.inner, timeout,
                    "" if last is None else " (last error: %s)" % (_reasonText(last),)),
                last)))

        def cancel(d):
            finish(Failure(MultiplexedConnectError(
                "connecting through %r was cancelled" % (self.inner,))))

        def attempt():
            if state["done"]:
                return
            current = self._current
            if (current is not None and not current.disconnected
                    and current.engine is not None and not current.engine.closed):
                # Connected already: no need to ask the ClientService, which
                # cannot be asked from inside its own callbacks (a connect()
                # made as the previous one's result arrives).
                connected(current)
                return
            d = state["pending"] = service.whenConnected()
            d.addCallbacks(connected, notConnected)

        def connected(mux):
            if state["done"]:
                return
            d = state["pending"] = mux.whenReady()
            d.addCallbacks(finish, notReady)

        def notReady(reason):
            # The connection died before it was ready (a failed TLS
            # handshake); the ClientService is re-making it.  Ask again on
            # the next turn, once it has noticed.
            state["pending"] = None
            if not reason.check(CancelledError):
                self._recorder.lastFailure = reason
            if not state["done"]:
                reactor.callLater(0, attempt)

        def notConnected(reason):
            state["pending"] = None
            if state["done"]:
                return
            if reason.check(CancelledError):
                finish(Failure(MultiplexedConnectError(
                    "connecting through %r was stopped" % (self.inner,))))
            else:
                finish(reason)

        result = Deferred(cancel)
        timer = reactor.callLater(timeout, expire)
        attempt()
        return result

    def connect(self, factory):
        """
        Open a new stream over the shared connection; its protocol is built by
        C{factory.buildProtocol(StreamAddress)}.

        @return: a Deferred firing with the protocol, or failing with
            L{MultiplexedConnectError} if no connection could be had within
            C{connectTimeout} seconds (or with the stream's own error, such
            as L{muxframe.errors.StreamLimitError}).
        """
        d = self.whenConnected()

        def open(mux):
            if mux.disconnected or mux.engine is None or mux.engine.closed:
                raise MultiplexedConnectError(
                    "the %s connection through %r was lost" % (self.framing, self.inner),
                    Failure(SessionClosedError("connection lost")))
            return mux.openStream(factory)

        d.addCallback(open)
        return d

    def drain(self, timeout=None):
        """
        Stop: let the shared connection's open streams finish (up to
        C{timeout}, default the C{drainTimeout} setting), close it and stop
        reconnecting.

        @return: a Deferred that fires when done.
        """
        current = self._current
        if self._service is not None and current is not None and not current.disconnected:
            d = current.drain(timeout)
        else:
            d = succeed(None)
        d.addBoth(lambda _: self.stop())
        return d

    def stop(self):
        """
        Close the shared connection now and stop reconnecting.

        @return: a Deferred that fires when stopped.
        """
        service, self._service = self._service, None
        if service is None:
            return succeed(None)
        current = self._current
        if current is not None and not current.disconnected:
            current.transport.loseConnection()
        # ClientService cannot be stopped from inside its own callbacks (a
        # connect() result is delivered from one): stop on the next turn.
        d = Deferred()
        self._getReactor().callLater(
            0, lambda: service.stopService().chainDeferred(d))
        return d

    def _connected(self, mux):
        self._current = mux
        self.log.info("{framing} connection to {peer} up", framing=self.framing,
                      peer=_peerText(mux.transport.getPeer()))

    def _lost(self, mux, reason=None):
        if self._current is mux:
            self._current = None
        if reason is not None:
            self._recorder.lastFailure = reason
        self.log.info("{framing} connection to {peer} lost: {reason}",
                      framing=self.framing, peer=_peerText(mux.transport.getPeer()),
                      reason=_reasonText(reason))

    def __repr__(self):
        return "<MultiplexedClientEndpoint %s over %r>" % (self.framing, self.inner)


class _ClientMultiplexerFactory(MultiplexerFactory):
    """
    Build the client endpoint's shared multiplexer; the child factory is
    read from the endpoint when each connection is made.
    """

    protocol = _TrackingMultiplexer

    def __init__(self, endpoint, **kwargs):
        MultiplexerFactory.__init__(self, None, **kwargs)
        self._endpoint = endpoint

    def buildProtocol(self, addr):
        self.childFactory = self._endpoint.childFactory
        return MultiplexerFactory.buildProtocol(self, addr)

    def _connected(self, mux):
        self._endpoint._connected(mux)

    def _lost(self, mux, reason=None):
        self._endpoint._lost(mux, reason)


__all__ = [
    "MultiplexedClientEndpoint",
    "MultiplexedConnectError",
    "MultiplexedListeningPort",
    "MultiplexedServerEndpoint",
]
