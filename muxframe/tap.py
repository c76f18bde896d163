"""
The C{muxframe} twistd plugin: C{twistd -n muxframe server ...} and
C{twistd -n muxframe client ...}.

Each role runs on one multiplexed connection endpoint (C{--endpoint}, the
inner endpoint description such as C{tcp:9000} or
C{ssl:8443:privateKey=server.pem}; C{--framing mio|bmp}; the multiplexer
settings as C{--maxStreams=500} and so on).

Server::

    --echo              streams the client opens are echoed
    --forward TARGET    streams the client opens are connected to TARGET
    --local LISTEN      local connections on LISTEN are carried as streams
                        opened toward the client (reverse tunnel)

Client::

    --local LISTEN      local connections on LISTEN are carried as streams
                        to the server (forward tunnel)
    --forward TARGET    streams the server opens are connected to TARGET

Listening goes through L{twisted.application.strports}, so a port in use
stops twistd with an error.  On SIGTERM the server stops accepting, lets open
streams finish for up to C{--drainTimeout} seconds, then closes; the client
does the same with its connection.
"""

import sys

from twisted.application import service, strports
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from .server.tap import XTMPOptions
from .settings import SETTINGS, coerce

log = Logger(namespace="muxframe.tap")

FRAMINGS = ("mio", "bmp")
_PREFIXES = ("mio:", "bmp:", "mux:")


def _settingParameters():
    return [
        [name, None, None, "%s (%s; default %s)" % (spec[5], spec[4], spec[1]),
         None]
        for name, spec in SETTINGS.items()
    ]


class _RoleOptions(usage.Options):
    """
    Options shared by both roles.
    """

    optParameters = [
        ["endpoint", "e", None,
         "The multiplexed connection's endpoint description (required), "
         "e.g. tcp:9000 (server) or tcp:localhost:9000 (client)."],
        ["framing", "f", "mio", "The framing: mio or bmp."],
        ["local", "l", None, "A server endpoint description to accept local "
         "connections on (see the role's description)."],
        ["forward", "F", None, "A client endpoint description to connect "
         "streams to (see the role's description)."],
    ] + _settingParameters()

    role = None

    def postOptions(self):
        if not self["endpoint"]:
            raise usage.UsageError("--endpoint is required (e.g. --endpoint=tcp:9000)")
        if self["framing"] not in FRAMINGS:
            raise usage.UsageError(
                "--framing: unknown framing %r (choose one of %s)"
                % (self["framing"], ", ".join(FRAMINGS)))
        if self["endpoint"].startswith(_PREFIXES):
            raise usage.UsageError(
                "--endpoint takes the connection's own endpoint (e.g. tcp:9000), "
                "not %r: choose the framing with --framing" % (self["endpoint"],))
        settings = {}
        for name in SETTINGS:
            if self[name] is not None:
                try:
                    settings[name] = coerce(name, self[name])
                except ValueError as e:
                    raise usage.UsageError("--%s: %s" % (name, e))
        self.settings = settings
        self.checkRole()
        from twisted.internet import reactor
        from twisted.internet.endpoints import clientFromString, serverFromString
        try:
            self.muxEndpoint(reactor)
        except ValueError as e:
            raise usage.UsageError("--endpoint: %s" % (e,))
        for name, parse in (("local", serverFromString), ("forward", clientFromString)):
            if self[name]:
                try:
                    parse(reactor, self[name])
                except Exception as e:
                    raise usage.UsageError("--%s: bad endpoint %r: %s"
                                           % (name, self[name], e))

    def muxDescription(self):
        """
        Return the C{mio:}/C{bmp:} endpoint string for the connection.
        """
        extra = "".join(":%s=%s" % item for item in sorted(self.settings.items()))
        return "%s:%s%s" % (self["framing"], self["endpoint"], extra)

    def checkRole(self):
        """
        Check the role's own options (overridden by each role).
        """


class ServerOptions(_RoleOptions):
    """
    Options of C{twistd muxframe server}.
    """

    synopsis = "--endpoint=LISTEN [--echo | --forward=TARGET] [--local=LISTEN] [settings]"
    longdesc = (
        "Accept multiplexed connections on --endpoint.  Streams the client "
        "opens are echoed (--echo) or connected to --forward TARGET; with "
        "--local, local connections are carried as streams opened toward "
        "the client (reverse tunnel).  Mutual TLS: add clientCA=CA.pem to an "
        "ssl: endpoint.")
    optFlags = [["echo", None, "Echo the streams the client opens."]]
    role = "server"

    def checkRole(self):
        """
        Check the server's own option combinations.
        """
        if self["echo"] and self["forward"]:
            raise usage.UsageError("--echo and --forward cannot be used together")
        if not (self["echo"] or self["forward"] or self["local"]):
            raise usage.UsageError("the server needs --echo, --forward or --local")

    def muxEndpoint(self, reactor):
        """
        Return the L{muxframe.endpoints.MultiplexedServerEndpoint} to listen on.
        """
        from twisted.internet.endpoints import serverFromString
        return serverFromString(reactor, self.muxDescription())


class ClientOptions(_RoleOptions):
    """
    Options of C{twistd muxframe client}.
    """

    synopsis = "--endpoint=CONNECT [--local=LISTEN] [--forward=TARGET] [settings]"
    longdesc = (
        "Keep one multiplexed connection to --endpoint (re-made with backoff "
        "when lost).  Local connections on --local are carried as streams to "
        "the server (forward tunnel); streams the server opens are connected "
        "to --forward TARGET.")
    optParameters = [
        ["connectTimeout", None, None,
         "Seconds a local connection waits for the multiplexed connection "
         "before it is closed (default 30)."],
        ["retryMax", None, None,
         "Longest delay between reconnection attempts, seconds (default 30)."],
    ]
    role = "client"

    def checkRole(self):
        """
        Check the client's own options.
        """
        if not (self["local"] or self["forward"]):
            raise usage.UsageError("the client needs --local or --forward")
        for name in ("connectTimeout", "retryMax"):
            if self[name] is not None:
                try:
                    value = float(self[name])
                except ValueError:
                    value = -1
                if not value > 0:
                    raise usage.UsageError(
                        "--%s must be a positive number of seconds, not %r"
                        % (name, self[name]))
                self.settings[name] = value

    def muxEndpoint(self, reactor):
        """
        Return the L{muxframe.endpoints.MultiplexedClientEndpoint} to connect
        through.
        """
        from twisted.internet.endpoints import clientFromString
        return clientFromString(reactor, self.muxDescription())


class Options(usage.Options):
    """
    Options of C{twistd muxframe}.
    """

    synopsis = "server|client|xtmp [options]"
    longdesc = "Multiplexed tunnels over MIO or BMP (see docs/operations.md)."
    subCommands = [
        ["server", None, ServerOptions, "Accept multiplexed connections."],
        ["client", None, ClientOptions, "Keep a multiplexed connection to a server."],
        ["xtmp", None, XTMPOptions, "Run the XTMP server (docs/xtmp-server.md)."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("choose a role: server, client or xtmp")


class ClientConnectionService(service.Service):
    """
    Connect a L{muxframe.endpoints.MultiplexedClientEndpoint} when started
    (so the server can open streams toward it at once); on stop, drain its
    connection and stop reconnecting.
    """

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def startService(self):
        service.Service.startService(self)
        d = self.endpoint.whenConnected()
        d.addErrback(lambda f: log.warn(
            "no connection yet to {endpoint}: {error}; still trying",
            endpoint=self.endpoint.inner, error=f.getErrorMessage()))

    def stopService(self):
        service.Service.stopService(self)
        return self.endpoint.drain()


def makeService(options, reactor=None):
    """
    Build the service of a role from parsed L{Options}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor
        reactor = globalReactor
    from twisted.internet.endpoints import clientFromString

    from .tunnel import EchoFactory, ForwardFactory, TunnelFactory, reverseOpener

    sub = options.subOptions
    if options.subCommand == "xtmp":
        from .server.tap import makeService as makeXTMPService
        return makeXTMPService(sub, reactor)
    top = service.MultiService()
    top.setName("muxframe-" + options.subCommand)
    if options.subCommand == "server":
        if sub["echo"]:
            streams = EchoFactory()
        elif sub["forward"]:
            streams = ForwardFactory(clientFromString(reactor, sub["forward"]))
        else:
            streams = _RefuseFactory()
        main = ListenService(sub.muxDescription(), streams, reactor)
        main.setServiceParent(top)
        top.streams = streams
        if sub["local"]:
            tunnel = TunnelFactory(reverseOpener(main.endpoint), "reverse tunnel")
            local = ListenService(sub["local"], tunnel, reactor)
            local.setServiceParent(top)
            top.tunnel = tunnel
        log.info("muxframe server on {endpoint} ({framing}); streams: {mode}",
                 endpoint=sub["endpoint"], framing=sub["framing"],
                 mode="echo" if sub["echo"] else sub["forward"] or "refused")
    else:
        endpoint = sub.muxEndpoint(reactor)
        if sub["forward"]:
            endpoint.childFactory = ForwardFactory(clientFromString(reactor, sub["forward"]))
        top.streams = endpoint.childFactory
        ClientConnectionService(endpoint).setServiceParent(top)
        if sub["local"]:
            tunnel = TunnelFactory(endpoint.connect, "forward tunnel")
            local = ListenService(sub["local"], tunnel, reactor)
            local.setServiceParent(top)
            top.tunnel = tunnel
        log.info("muxframe client to {endpoint} ({framing})",
                 endpoint=sub["endpoint"], framing=sub["framing"])
    return top


def twistdCommand(*args):
    """
    Return the argv that runs C{twistd ARGS} with this Python interpreter
    (C{python -m twisted.scripts.twistd} does nothing: that module has no
    C{__main__} block).
    """
    return [sys.executable, "-c",
            "import sys; sys.argv[0] = 'twistd'; "
            "from twisted.scripts.twistd import run; run()"] + list(args)


class ListenService(service.Service):
    """
    A L{strports} listening service that turns "cannot listen" into a clear
    one-line error and a non-zero exit of twistd.

    @ivar endpoint: the listening endpoint.
    """

    def __init__(self, description, factory, reactor):
        self.description = description
        self.inner = strports.service(description, factory, reactor=reactor)
        self.endpoint = self.inner.endpoint

    def _start(self, method):
        try:
            method()
        except CannotListenError as e:
            reason = e.socketError
            reason = getattr(reason, "strerror", None) or reason
            raise SystemExit("muxframe: cannot listen on %s: %s"
                             % (self.description, reason))

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)
        self._start(self.inner.privilegedStartService)

    def startService(self):
        service.Service.startService(self)
        self._start(self.inner.startService)

    def stopService(self):
        service.Service.stopService(self)
        return self.inner.stopService()


class _RefuseFactory:
    """
    Refuse every stream the peer opens (a server with only --local).
    """

    def doStart(self):
        pass

    def doStop(self):
        pass

    def buildProtocol(self, addr):
        return None
