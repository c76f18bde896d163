"""
The services of a role's operator surfaces, and the role service that
orders them.

L{OperatedRole} is a C{MultiService} whose children are the role's own
services (listeners, tunnels, the XTMP server) and which also runs its
operator services: the L{AdminService} (HTTP) and the summary line.  They
start after the role's services and stop after them: while the role
drains after SIGTERM, C{/health} keeps answering (C{draining}, 503) and
metrics keep being served, until the drain is over.
"""

import signal

from twisted.application import service
from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.internet.protocol import Protocol
from twisted.logger import ILogObserver, LogLevel, Logger
from twisted.web.server import Site

from muxframe.admin.http import DeadlineChannel
from muxframe.logthrottle import LogThrottle, logger, throttled
from muxframe.tls import offersHTTP11

log = Logger(namespace="muxframe.admin")
_throttledLog = logger("muxframe.admin")


class AdminChannel(DeadlineChannel):
    """
    The HTTP channel of one admin connection: its requests have the
    site's deadline (L{DeadlineChannel}), and the site counts it while it
    is open.
    """

    _counted = False

    def connectionMade(self):
        """
        Count the connection, then start its first request's deadline.
        """
        self.site.connections += 1
        self._counted = True
        DeadlineChannel.connectionMade(self)

    def connectionLost(self, reason):
        """
        Stop counting it.
        """
        if self._counted:
            self._counted = False
            self.site.connections -= 1
        DeadlineChannel.connectionLost(self, reason)


class RefusedAdminConnection(Protocol):
    """
    Answers a connection over the admin site's C{maxConnections} with a
    JSON 503 and closes, before reading anything.
    """

    def __init__(self, message):
        from muxframe.admin.http import encodeJSON, errorBody
        body = encodeJSON(errorBody(503, message, "too_many_connections"))
        self.data = (b"HTTP/1.1 503 Service Unavailable\r\n"
                     b"content-type: application/json\r\n"
                     b"cache-control: no-store\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))

    def connectionMade(self):
        """
        Send the answer and close.
        """
        self.transport.write(self.data)
        self.transport.loseConnection()


@offersHTTP11
class AdminSite(Site):
    """
    The admin service's site: no access log (a flood of requests must not
    be a flood of log lines), no tracebacks in answers, HTTP/1.1 only
    (L{AdminChannel}; over TLS L{offersHTTP11}: never HTTP/2, whose
    streams have neither the deadline nor the body's immediate refusal,
    and every connection served on each Twisted release, where Site's
    own ALPN offer failed every TLS connection after the first on
    Twisted 24.11), and bounds on what clients hold:

      - a request must arrive whole within C{requestTimeout} seconds
        (L{DeadlineChannel}); a connection idle after a response is
        dropped at the same deadline;
      - at most C{maxConnections} connections at once: one more is
        answered 503 (JSON) and closed at once, with a warning logged at
        most 10 times a minute.  The role's file descriptors are shared
        with its own listeners: without a cap, connections to the admin
        port, which need no token to be opened, could take them all.

    @param reactor: times the deadlines and twisted.web's own timeouts.
    @ivar connections: the connections open now.
    @ivar requestsTimedOut: connections dropped at a request's deadline.
    @ivar refusedConnections: connections refused over C{maxConnections}.
    """

    displayTracebacks = False
    noisy = False
    protocol = AdminChannel
    requestTimeout = 30.0
    maxConnections = 64

    def __init__(self, resource, reactor=None, requestTimeout=None,
                 maxConnections=None):
        kwargs = {} if reactor is None else {"reactor": reactor}
        Site.__init__(self, resource, timeout=60, **kwargs)
        if requestTimeout is not None:
            self.requestTimeout = requestTimeout
        if maxConnections is not None:
            self.maxConnections = maxConnections
        self.connections = 0
        self.requestsTimedOut = 0
        self.refusedConnections = 0
        self._refusals = LogThrottle()

    def buildProtocol(self, address):
        """
        An L{AdminChannel}, or a L{RefusedAdminConnection} over
        C{maxConnections}.
        """
        if self.connections >= self.maxConnections:
            self.refusedConnections += 1
            throttled(_throttledLog, self._refusals, self.reactor.seconds(),
                      LogLevel.warn, "connections",
                      "admin service: {connections} connections are open, "
                      "the most it serves at once: one more was answered "
                      "503 and closed ({refused} so far)",
                      connections=self.connections,
                      refused=self.refusedConnections)
            return RefusedAdminConnection(
                "the admin service has %d connections open, the most it "
                "serves at once: try again later" % (self.maxConnections,))
        return Site.buildProtocol(self, address)

    def log(self, request):
        """
        No access log.
        """


class AdminService(service.Service):
    """
    The admin HTTP service of a role.

    @ivar root: the site's root resource (L{muxframe.admin.http.AdminRoot}).
    """

    def __init__(self, status, settings, reactor):
        from muxframe.admin.api import buildRoot
        from muxframe.admin.http import requestFactory
        from muxframe.admin.metrics import makeRegistry
        from muxframe.admin.metricsresource import MetricsResource
        from muxframe.admin.settings import listeningDescription
        from muxframe.tap import ListenService
        self.settings = settings
        self.registry = makeRegistry(status, reactor)
        self.root = buildRoot(status, settings,
                              MetricsResource(self.registry, reactor))
        self.site = AdminSite(self.root, reactor,
                              requestTimeout=settings.requestTimeout,
                              maxConnections=settings.maxConnections)
        self.site.requestFactory = requestFactory(settings.maxBody)
        status.adminCounters = self.counters
        # Owner-only by default: a unix: socket may be served without a token.
        self._listener = ListenService(listeningDescription(settings.endpoint),
                                       self.site, reactor)

    def reloadTokens(self):
        """
        Read the admin tokens again from the files they were read from at
        start (the settings' C{tokenFile} and C{readTokenFile}: the xtmp
        role's C{admin.token_file} and C{admin.read_token_file}, the
        multiplexer roles' C{--admin-token-file} and
        C{--admin-read-token-file}), on SIGHUP: requests are checked
        against the new ones from now on.  A file that cannot be read, or
        holds no token or a bad one, leaves both tokens as they were, with
        an error logged naming it; a service without a token (a C{unix:}
        socket) keeps none.

        @return: whether the tokens were replaced.
        """
        from muxframe.admin.settings import loadReadToken, loadToken
        settings = self.settings
        tokenFile = settings.tokenFile
        if not tokenFile:
            return False
        tokenName, readName = settings.tokenNames
        try:
            token = loadToken(tokenFile, tokenName)
            readToken = loadReadToken(settings.readTokenFile, token,
                                      readName, tokenName)
        except ValueError as e:
            log.error("reload: admin tokens unchanged: {error}", error=str(e))
            return False
        changed = (token, readToken) != (self.root.token, self.root.readToken)
        self.root.token, self.root.readToken = token, readToken
        settings.token, settings.readToken = token, readToken
        log.info("reload: admin tokens read again from {path}{change}",
                 path=tokenFile, change="" if changed else " (unchanged)")
        return True

    def counters(self):
        """
        The service's own counters, for the role's metrics
        (L{muxframe.admin.status.RoleStatus.adminCounters}).
        """
        return {"open": self.site.connections,
                "token": self.root.unauthorized,
                "read_only": self.root.forbidden,
                "connections": self.site.refusedConnections,
                "deadline": self.site.requestsTimedOut}

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)
        self._listener.privilegedStartService()

    def startService(self):
        service.Service.startService(self)
        self._listener.startService()
        log.info("admin service on {endpoint} (health, metrics{public}, "
                 "API{auth})", endpoint=self.settings.endpoint,
                 public=" without a token" if self.settings.publicMetrics
                 else "",
                 auth=(", bearer token required" + (
                     ", a read-only token for GET and HEAD"
                     if self.settings.readToken else ""))
                 if self.settings.token else "; no token: a unix socket")

    def stopService(self):
        service.Service.stopService(self)
        return self._listener.stopService()


class OperatedRole(service.MultiService):
    """
    A role's services (its children) and its operator services (see the
    module docstring).  L{operate} adds the operator surfaces.

    @ivar status: the role's L{muxframe.admin.status.IRoleStatus}, once
        operated.
    @ivar logLevel: while the role runs, muxframe's log events below this
        level (a name: C{"debug"}, C{"info"}...) are dropped
        (L{muxframe.logthrottle.setMinimumLevel}); L{None} leaves the
        minimum level alone.
    """

    status = None
    logObserver = None
    #: Take SIGHUP (a multiplexer role under twistd, L{muxframe.tap}): it
    #: reads the admin tokens again (L{AdminService.reloadTokens}), if
    #: there is a token file, and otherwise says there is nothing to read.
    #: Taken before any port listens.
    reloadOnHangup = False
    _reactor = None
    #: C{(handler,)}: the SIGHUP handler before L{_takeHangup}, while ours
    #: is installed.
    _previousHangup = None

    def __init__(self, logLevel=None):
        service.MultiService.__init__(self)
        self.operators = []
        self.logLevel = logLevel
        self._previousLevel = None

    def operate(self, status, settings, reactor, options=None):
        """
        Run C{settings}' operator surfaces for the role whose status is
        C{status} (C{options}: its parsed options, for JSON logs).
        """
        from muxframe.admin.logs import SummaryService, logObserver
        self.status = status
        self.settings = settings
        self._reactor = reactor
        if settings.endpoint:
            self.operators.append(AdminService(status, settings, reactor))
        if settings.summaryInterval:
            self.operators.append(SummaryService(
                status, settings.summaryInterval, reactor))
        if options is not None:
            self.logObserver = logObserver(options, settings.logFormat)
        return self

    @property
    def admin(self):
        """
        The L{AdminService}, or L{None}.
        """
        for operator in self.operators:
            if isinstance(operator, AdminService):
                return operator
        return None

    def setServiceParent(self, parent):
        """
        Under twistd, give the application the role's log observer.
        """
        service.MultiService.setServiceParent(self, parent)
        if self.logObserver is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.logObserver)

    def _applyLevel(self):
        from twisted.logger import LogLevel

        from muxframe.logthrottle import minimumLevel, setMinimumLevel
        if self.logLevel is not None and self._previousLevel is None:
            self._previousLevel = minimumLevel()
            setMinimumLevel(LogLevel.levelWithName(self.logLevel))

    def _restoreLevel(self):
        from muxframe.logthrottle import setMinimumLevel
        if self._previousLevel is not None:
            setMinimumLevel(self._previousLevel)
            self._previousLevel = None

    def _takeHangup(self):
        # Before the ports listen (the children's and the admin's own): a
        # SIGHUP to a started role must reload, not kill it.  From both
        # starts: twistd binds in privilegedStartService, twist (which
        # never calls it) in startService.
        # (With or without a token file: a reload signal, say a
        # supervisor's, must not end a role that has nothing to reload.)
        if self.reloadOnHangup and hasattr(signal, "SIGHUP") and \
                self._previousHangup is None:
            # (What was there is given back at stop: a process that is not
            # the role's own, an embedding application or the tests, must
            # not keep a handler reloading a stopped role.)
            self._previousHangup = (signal.signal(signal.SIGHUP,
                                                  self._sighup),)

    def privilegedStartService(self):
        self._applyLevel()
        self._takeHangup()
        service.MultiService.privilegedStartService(self)
        for operator in self.operators:
            operator.privilegedStartService()

    def _sighup(self, number, frame):
        self._reactor.callFromThread(self._reloadTokens)

    def _reloadTokens(self):
        admin = self.admin
        if admin is None or not admin.settings.tokenFile:
            log.info("SIGHUP: nothing to read again (no --admin-token-file)")
            return
        log.info("SIGHUP: reading the admin tokens again")
        admin.reloadTokens()

    def startService(self):
        self._applyLevel()
        self._takeHangup()
        service.MultiService.startService(self)
        for operator in self.operators:
            operator.startService()

    @inlineCallbacks
    def stopService(self):
        """
        Mark the role draining, stop its services (they drain), then the
        operator services.
        """
        if self.status is not None:
            self.status.draining = True
        try:
            yield service.MultiService.stopService(self)
            for operator in reversed(self.operators):
                if operator.running:
                    yield maybeDeferred(operator.stopService)
        finally:
            self._restoreLevel()
            self._giveHangupBack()

    def _giveHangupBack(self):
        if self._previousHangup is not None:
            (previous,), self._previousHangup = self._previousHangup, None
            if signal.getsignal(signal.SIGHUP) == self._sighup:
                # (A signal.signal of None, a handler not set from Python,
                # is refused: the default then.)
                signal.signal(signal.SIGHUP, signal.SIG_DFL
                              if previous is None else previous)


__all__ = ["AdminChannel", "AdminService", "AdminSite", "OperatedRole",
           "RefusedAdminConnection"]
