"""
L{MultiplexedClientEndpoint}: each C{connect()} opens a new stream over one
shared multiplexed connection, made through any other client endpoint.

Rules (the endpoint contract, as C{TCP4ClientEndpoint} keeps it):

  - C{connect()} opens its stream on the shared connection once that is
    ready (L{muxframe.managed}: connected, TLS verified, the peer confirmed
    as speaking the framing).  Without one it joins the attempt in
    progress, or starts one: one attempt at a time.
  - An attempt that fails fails every C{connect()} waiting on it, at once,
    with its real error: C{ConnectionRefusedError}, C{DNSLookupError}, the
    TLS handshake's error, or L{PeerNotMultiplexingError} when the peer
    accepted and closed at once or speaks another protocol.  Nothing is
    retried behind the caller's back.
  - On demand (the default) the shared connection lives as long as
    something needs it: when its last stream ends it is closed (unless a
    C{childFactory} accepts streams the peer opens), so no connection,
    timer or retry loop outlives the streams that used it.
  - L{MultiplexedClientEndpoint.keepConnected} makes it standing, for roles
    that need a connection whether or not a stream is open (reverse
    tunnels, C{twistd muxframe client}): a L{ClientService} re-makes it with
    backoff whenever it is lost and every failed attempt is logged with its
    cause.  A C{connect()} between attempts fails at once with
    L{MultiplexedConnectError} naming the last failure.
  - No C{connect()} waits longer than C{connectTimeout} seconds.
"""

from zope.interface import implementer

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from .describe import (
    addressText,
    briefDescription,
    endpointText,
    isVerificationFailure,
    reasonText,
)
from .errors import MultiplexedConnectError, PeerNotMultiplexingError, SessionClosedError
from .managed import ManagedMultiplexer
from .multiplexer import MultiplexerFactory
from .observed import MultiplexerObservers

DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_CONFIRM_TIMEOUT = 0.05
DEFAULT_RETRY_INITIAL = 0.5
DEFAULT_RETRY_MAX = 30.0


def _usable(mux):
    return (mux is not None and not mux.disconnected and mux.engine is not None
            and not mux.engine.closed)


class _ClientMultiplexerFactory(MultiplexerFactory):
    """
    Build the shared multiplexer of one attempt; the child factory is read
    from the endpoint when the connection is made.
    """

    protocol = ManagedMultiplexer
    noisy = False  # one line per connection is the endpoint's, not Twisted's

    def __init__(self, owner, **kwargs):
        MultiplexerFactory.__init__(self, None, **kwargs)
        self._owner = owner

    def buildProtocol(self, addr):
        self.childFactory = self._owner.childFactory
        mux = MultiplexerFactory.buildProtocol(self, addr)
        owner = self._owner
        if owner.authName is not None:
            from .tunnelauth import ClientGate
            # The server's first stream is its token challenge.
            mux.authentication = ClientGate(
                mux, mux.childFactory, owner.authName, owner.authToken)
            mux.childFactory = mux.authentication
        return mux

    def _connected(self, mux):
        # The attempt follows it from here; observers count it.
        self._owner._tellConnected(mux)

    def _lost(self, mux, reason):
        self._owner._lost(mux, reason)

    def _idle(self, mux):
        self._owner._idle(mux)


class _Attempt:
    """
    One try at the shared connection: connect through the inner endpoint,
    wait for the TLS handshake and for the peer to be confirmed.  C{wait()}
    gives each waiter a Deferred of the outcome.
    """

    def __init__(self, owner):
        self.owner = owner
        self.reactor = owner._getReactor()
        self.mux = None
        self.done = False
        self.result = None
        self.stage = "connecting"
        self._waiters = []
        self._connecting = None
        self._started = self.reactor.seconds()

    def start(self):
        owner = self.owner
        factory = _ClientMultiplexerFactory(
            owner, framing=owner.framing, role="client", reactor=self.reactor,
            **owner.settings)
        try:
            d = owner.inner.connect(factory)
        except Exception:
            d = fail()
        if not self.done:
            self._connecting = d
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, mux):
        self._connecting = None
        if self.done:
            mux.transport.abortConnection()
            return
        self.mux = mux
        if not mux.isVerified():
            self.stage = "waiting for the TLS handshake"
        mux.whenVerified().addCallbacks(self._verified, self._failed)

    def _verified(self, mux):
        if self.done:
            return
        self.stage = "waiting for the peer to show it speaks %s" % (self.owner.framing,)
        # A peer answering in another protocol does so within a round trip;
        # the connection's set-up time (a round trip or two) measures one.
        elapsed = self.reactor.seconds() - self._started
        window = max(self.owner.confirmTimeout, 2 * elapsed)
        mux.whenConfirmed(window).addCallbacks(self._confirmed, self._failed)

    def _confirmed(self, mux):
        if self.done:
            return
        if mux.authentication is None:
            self._finish(mux)
            return
        self.stage = "authenticating as %r" % (self.owner.authName,)
        mux.authentication.whenAuthenticated().addCallbacks(self._finish, self._failed)

    def _failed(self, reason):
        self._connecting = None
        if self.done:
            return
        mux = self.mux
        if mux is not None and not mux.disconnected:
            mux.transport.abortConnection()
        self._finish(reason)

    def _finish(self, result, quiet=False):
        if self.done:
            return
        self.done = True
        self.result = result
        self.owner._attemptDone(self, result, quiet)
        waiters, self._waiters = self._waiters, []
        for d, timer in waiters:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def wait(self, timeout):
        """
        Return a Deferred of this attempt's outcome (the ready multiplexer
        or the failure), failing with L{MultiplexedConnectError} after
        C{timeout} seconds, or with C{CancelledError} when cancelled.
        """
        if self.done:
            return fail(self.result) if isinstance(self.result, Failure) else succeed(self.result)
        entry = []

        def giveUp():
            if entry[0] in self._waiters:
                self._waiters.remove(entry[0])
            if entry[0][1].active():
                entry[0][1].cancel()
            if not self._waiters:
                self.owner._noWaiters(self)

        def cancel(d):
            giveUp()
            d.errback(CancelledError("connecting through %s was cancelled"
                                     % (self.owner._innerText(),)))

        def expire():
            giveUp()
            d.errback(MultiplexedConnectError("no %s connection to %s within %g s (still %s)" % (
                self.owner.framing, self.owner._innerText(), timeout, self.stage)))

        d = Deferred(cancel)
        entry.append((d, self.reactor.callLater(timeout, expire)))
        self._waiters.append(entry[0])
        return d

    def cancel(self, reason):
        """
        Give up: stop connecting, drop a connection not yet ready, fail the
        waiters with C{reason}.
        """
        if self.done:
            return
        connecting, self._connecting = self._connecting, None
        mux = self.mux
        self._finish(reason, quiet=True)
        if connecting is not None:
            connecting.addErrback(lambda f: f.trap(CancelledError))
            connecting.cancel()
        if mux is not None and not mux.disconnected:
            mux.transport.abortConnection()


@implementer(IProtocol)
class _Handle:
    """
    What the L{ClientService} of a standing connection holds: its
    C{connectionLost} is the shared connection's.
    """

    transport = None

    def makeConnection(self, transport):
        self.transport = transport

    def dataReceived(self, data):
        pass

    def connectionLost(self, reason):
        pass


@implementer(IProtocolFactory)
class _HandleFactory:
    """
    Build the L{_Handle}s of a standing connection.
    """

    noisy = False

    def doStart(self):
        pass

    def doStop(self):
        pass

    def buildProtocol(self, addr):
        return _Handle()


class _HandleTransport:
    """
    The transport of a L{_Handle}: closing it closes the shared connection.
    """

    def __init__(self, mux):
        self._mux = mux

    def loseConnection(self):
        if not self._mux.disconnected:
            self._mux.close()

    abortConnection = loseConnection

    def getPeer(self):
        return self._mux.transport.getPeer()

    def getHost(self):
        return self._mux.transport.getHost()


@implementer(IStreamClientEndpoint)
class _StandingEndpoint:
    """
    The endpoint the L{ClientService} of a standing connection connects
    through: each C{connect()} is one attempt of the owner's, firing once
    the shared connection is ready, with a handle whose loss is its loss.
    """

    def __init__(self, owner):
        self.owner = owner

    def connect(self, factory):
        d = self.owner._serviceAttempt()

        def ready(mux):
            handle = factory.buildProtocol(mux.transport.getPeer())
            handle.makeConnection(_HandleTransport(mux))
            self.owner._handles[mux] = handle
            return handle

        return d.addCallback(ready)

    def __repr__(self):
        return self.owner._innerText()


@implementer(IStreamClientEndpoint)
class MultiplexedClientEndpoint(MultiplexerObservers):
    """
    A client endpoint whose connections are streams over one shared
    multiplexed connection made through another endpoint (see the module
    docstring for the rules).

    @param inner: the L{IStreamClientEndpoint} to connect through.
    @param framing: C{"mio"} or C{"bmp"}.
    @param reactor: the reactor (C{IReactorTime}) for timers and retries
        (default: the global reactor).
    @param childFactory: builds protocols for the streams the I{server} opens
        toward this client (a reverse tunnel); C{None} refuses them.  May be
        set as an attribute before the connection is made.
    @param connectTimeout: seconds a C{connect()} may wait for the shared
        connection before failing with L{MultiplexedConnectError}.
    @param confirmTimeout: seconds (at least; twice the connection's set-up
        time if that is longer) a new connection waits for its peer to send
        a frame before streams go on it anyway; a peer that closes or
        answers in another protocol meanwhile fails the connect with
        L{PeerNotMultiplexingError}.  0 skips the wait.
    @param retryPolicy: the standing connection's L{ClientService} retry
        policy (attempt number -> seconds); default L{backoffPolicy} from
        C{retryInitial} growing by 1.5 up to C{retryMax} seconds.
    @param description: the endpoint string this endpoint was made from,
        for logs (the endpoint-string parsers set it).
    @param authName: this client's name, to answer a server that requires
        a token (L{muxframe.tunnelauth}); C{None} answers nothing.
    @param authToken: the token (bytes) shared with the server, with
        C{authName}.
    @param settings: multiplexer settings (L{muxframe.settings.SETTINGS}).

    Observers (L{addObserver}, an L{IMultiplexerObserver}) are told about
    every connection made (before it is ready) and lost.
    """

    log = Logger()

    def __init__(self, inner, framing="mio", reactor=None, childFactory=None,
                 connectTimeout=DEFAULT_CONNECT_TIMEOUT, retryPolicy=None,
                 retryInitial=DEFAULT_RETRY_INITIAL, retryMax=DEFAULT_RETRY_MAX,
                 confirmTimeout=DEFAULT_CONFIRM_TIMEOUT, description=None,
                 authName=None, authToken=None, **settings):
        from .settings import Settings
        MultiplexerFactory(None, framing=framing, role="client")  # validates
        if (authName is None) != (authToken is None):
            raise ValueError("authName and authToken go together")
        if authName is not None:
            from .tunnelauth import checkName, checkToken
            checkName(authName)
            authToken = checkToken(authToken)
        self.authName = authName
        self.authToken = authToken
        self.inner = inner
        self.framing = framing
        self.reactor = reactor
        self.childFactory = childFactory
        self.connectTimeout = float(connectTimeout)
        self.confirmTimeout = float(confirmTimeout)
        if retryPolicy is None:
            from twisted.application.internet import backoffPolicy
            retryPolicy = backoffPolicy(
                initialDelay=float(retryInitial), maxDelay=float(retryMax))
        self.retryPolicy = retryPolicy
        self.description = description
        self.settings = Settings(**settings).asDict()
        self._current = None
        self._attempt = None
        self._service = None
        self._handles = {}
        self._lastFailure = None
        self._idleCall = None

    def _getReactor(self):
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        return self.reactor

    def _innerText(self):
        description = self.description
        if description and description.startswith(self.framing + ":"):
            return briefDescription(description[len(self.framing) + 1:])
        return endpointText(self.inner)

    # -- public API -----------------------------------------------------

    def connect(self, factory):
        """
        Open a new stream over the shared connection; its protocol is built
        by C{factory.buildProtocol(StreamAddress)}.

        @return: a Deferred firing with the protocol; failing with the
            connection attempt's own error (C{ConnectionRefusedError}, a TLS
            error, L{PeerNotMultiplexingError} ...), with
            L{MultiplexedConnectError} (no connection within
            C{connectTimeout}, or, with a standing connection, none between
            two attempts), or with the stream's own error (such as
            L{muxframe.errors.StreamLimitError}).
        """
        d = self.whenConnected()

        def open(mux):
            if not _usable(mux):
                raise MultiplexedConnectError(
                    "the %s connection to %s was lost" % (self.framing, self._innerText()),
                    Failure(SessionClosedError("connection lost")))
            opened = mux.openStream(factory)
            opened.addErrback(self._openFailed, mux)
            return opened

        return d.addCallback(open)

    def whenConnected(self, timeout=None):
        """
        Return a Deferred firing with the shared connection's L{Multiplexer}
        once it is ready, connecting if needed; it fails as C{connect()}
        does.  (A connection asked for this way but never given a stream
        stays open until L{stop}.)
        """
        if timeout is None:
            timeout = self.connectTimeout
        if _usable(self._current):
            return succeed(self._current)
        attempt = self._attempt
        if attempt is None:
            if self._service is not None:
                return fail(self._betweenAttempts())
            attempt = self._startAttempt()
        return attempt.wait(timeout)

    def keepConnected(self):
        """
        Keep the shared connection up whether or not streams use it: a
        L{ClientService} makes it now and re-makes it with backoff whenever
        it is lost, logging why each attempt failed.  L{stop} or L{drain}
        end it.

        @return: the running L{ClientService}.
        """
        if self._service is None:
            from twisted.application.internet import ClientService
            self._cancelIdleClose()
            self._service = ClientService(
                _StandingEndpoint(self), _HandleFactory(),
                retryPolicy=self.retryPolicy, clock=self._getReactor())
            self._service.startService()
        return self._service

    @property
    def service(self):
        """
        The L{ClientService} keeping a standing connection (see
        L{keepConnected}), or C{None} on demand.
        """
        return self._service

    def drain(self, timeout=None):
        """
        Let the shared connection's open streams finish (up to C{timeout},
        default the C{drainTimeout} setting), close it, and stop keeping it.

        @return: a Deferred that fires when done.
        """
        current = self._current
        if _usable(current):
            d = current.drain(timeout)
        else:
            d = succeed(None)
        d.addBoth(lambda _: self.stop())
        return d

    def stop(self):
        """
        Close the shared connection now, give up any attempt (failing the
        connects waiting on it) and stop keeping a standing connection.

        @return: a Deferred that fires once the connection is closed and
            the L{ClientService}, if any, has stopped.
        """
        self._cancelIdleClose()
        attempt = self._attempt
        if attempt is not None:
            attempt.cancel(Failure(MultiplexedConnectError(
                "connecting through %s was stopped" % (self._innerText(),))))
        waits = []
        current, self._current = self._current, None
        if current is not None and not current.disconnected:
            waits.append(current.whenLost())
            current.close()
        service, self._service = self._service, None
        if service is not None:
            # A ClientService cannot be stopped from inside its own
            # callbacks (a connect() result may be delivered from one).
            stopped = Deferred()
            self._getReactor().callLater(
                0, lambda: service.stopService().chainDeferred(stopped))
            waits.append(stopped)
        if not waits:
            return succeed(None)
        from twisted.internet.defer import gatherResults
        return gatherResults(waits).addCallback(lambda _: None)

    # -- attempts -------------------------------------------------------

    def _startAttempt(self):
        attempt = self._attempt = _Attempt(self)
        attempt.start()
        return attempt

    def _serviceAttempt(self):
        if _usable(self._current):
            return succeed(self._current)
        attempt = self._attempt or self._startAttempt()
        return attempt.wait(self.connectTimeout)

    def _noWaiters(self, attempt):
        # Everyone who wanted this connection gave up on it.
        if attempt is self._attempt and not attempt.done:
            attempt.cancel(Failure(MultiplexedConnectError(
                "nobody waits for the connection to %s any more" % (self._innerText(),))))

    def _attemptDone(self, attempt, result, quiet):
        if attempt is self._attempt:
            self._attempt = None
        if isinstance(result, Failure):
            self._lastFailure = result
            if not quiet:
                self._logFailure(result)
            return
        self._current = result
        self._lastFailure = None
        endpoint = self._innerText()
        peer = addressText(result.transport.getPeer())
        self.log.info(
            "{framing} connection to {endpoint} up{via}",
            framing=self.framing, endpoint=endpoint, peer=peer,
            via="" if peer == endpoint else " (%s)" % (peer,))

    def _logFailure(self, reason):
        text = reasonText(reason)
        if isVerificationFailure(reason):
            self.log.warn(
                "TLS verification failed: {cause}; no {framing} connection to {endpoint}",
                cause=text, framing=self.framing, endpoint=self._innerText(),
                reason=reason)
        elif self._service is not None or reason.check(PeerNotMultiplexingError):
            self.log.warn(
                "{framing} connection to {endpoint} failed: {cause}",
                cause=text, framing=self.framing, endpoint=self._innerText(),
                reason=reason)
        else:
            self.log.info(
                "{framing} connection to {endpoint} failed: {cause}",
                cause=text, framing=self.framing, endpoint=self._innerText(),
                reason=reason)

    def _betweenAttempts(self):
        last = self._lastFailure
        return MultiplexedConnectError(
            "no %s connection to %s at the moment%s; it is being re-made" % (
                self.framing, self._innerText(),
                "" if last is None else " (last: %s)" % (reasonText(last),)),
            last)

    # -- the shared connection ------------------------------------------

    def _openFailed(self, reason, mux):
        if _usable(mux) and not mux.streamCount():
            self._idle(mux)
        return reason

    def _idle(self, mux):
        if (mux is not self._current or self._service is not None
                or self.childFactory is not None):
            # Standing, or the peer may open streams toward us at any time.
            return
        if self._idleCall is None:
            # Not at once: a connect() made as the last stream ends (from
            # its connectionLost, say) still finds the connection.
            self._idleCall = self._getReactor().callLater(0, self._closeIfIdle, mux)

    def _cancelIdleClose(self):
        call, self._idleCall = self._idleCall, None
        if call is not None and call.active():
            call.cancel()

    def _closeIfIdle(self, mux):
        self._idleCall = None
        if (mux is self._current and self._service is None and _usable(mux)
                and not mux.streamCount()):
            self.log.debug("{framing} connection to {endpoint}: no streams left, closing it",
                           framing=self.framing, endpoint=self._innerText())
            self._current = None
            mux.close()

    def _lost(self, mux, reason):
        self._tellLost(mux, reason)
        handle = self._handles.pop(mux, None)
        if mux is self._current:
            self._current = None
            self._cancelIdleClose()
            self._lastFailure = reason
            self.log.info("{framing} connection to {endpoint} lost: {reason}",
                          framing=self.framing, endpoint=self._innerText(),
                          reason=reasonText(reason))
        if handle is not None:
            handle.connectionLost(reason)

    def __repr__(self):
        return "<MultiplexedClientEndpoint %s>" % (
            self.description or "%s:%s" % (self.framing, self._innerText()),)


__all__ = [
    "MultiplexedClientEndpoint",
    "MultiplexedConnectError",
    "PeerNotMultiplexingError",
]
