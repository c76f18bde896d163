"""
The C{muxframe} plugin for C{twistd} and C{twist}: C{twistd -n muxframe
server ...}, C{twistd -n muxframe client ...} (C{twist muxframe server ...}
runs the same services in the foreground).

Each C{--endpoint} is one multiplexed endpoint (its own description, such as
C{tcp:9000} or C{ssl:8443:privateKey=server.pem}, optionally prefixed with
its framing, C{bmp:tcp:9001}); C{--framing mio|bmp} is the default framing;
the multiplexer settings are options too (C{--maxStreams=500} ...).

Several tunnels in one process: C{--endpoint}, C{--local} and C{--forward}
may be given more than once.  The C{--echo}, C{--forward} and C{--local}
options after an C{--endpoint} (or before the first one) belong to it.  An
option that cannot be repeated (a second C{--forward} for one endpoint, a
second C{--maxStreams}) is a usage error naming it, never silently dropped.

Server, per endpoint::

    --echo              streams the client opens are echoed
    --forward TARGET    streams the client opens are connected to TARGET
    --local LISTEN      local connections on LISTEN are carried as streams
                        opened toward the client (reverse tunnel); repeatable

Client, per endpoint::

    --local LISTEN      local connections on LISTEN are carried as streams
                        to the server (forward tunnel); repeatable
    --forward TARGET    streams the server opens are connected to TARGET

Listening goes through a L{StreamServerEndpointService}, so a port in use
stops the process with an error; TCP, TLS and UNIX listeners get a backlog
of 1024 unless their description sets C{backlog=}, and accept at most 4
connections per reactor turn (L{muxframe.acceptbatch}).  On SIGTERM the server stops accepting,
lets open streams finish for up to C{--drainTimeout} seconds, then closes;
the client does the same with its connections.
"""

import sys

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from .acceptbatch import DEFAULT_ACCEPTS_PER_TURN, CappedEndpoint
from .admin.settings import OperatorOptionsMixin
from .endpointcheck import checkClientDescription, checkServerDescription, parseDescription
from .endpointstrings import _quote
from .server.tap import XTMPOptions
from .settings import SETTINGS, coerce

log = Logger(namespace="muxframe.tap")

FRAMINGS = ("mio", "bmp")
LOG_LEVELS = ("debug", "info", "warn", "error")

# Twisted listens with a backlog of 50: 5,000 connects took 94 s through it,
# 2.6 s with 1024.  The kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 1024
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")


def withBacklog(description, backlog=DEFAULT_BACKLOG):
    """
    Return a listening description with C{backlog=} added when it is a
    C{tcp:}, C{tcp6:}, C{ssl:} or C{unix:} endpoint (bare, or wrapped in
    C{mio:}, C{bmp:} or C{mux:}) that does not set one.
    """
    args, kwargs = parseDescription(description)
    kinds = args[:1]
    if kinds and kinds[0] in FRAMINGS + ("mux",):
        kinds = args[1:2]
    if kinds and kinds[0] in _BACKLOG_TYPES and "backlog" not in kwargs:
        return "%s:backlog=%d" % (description, backlog)
    return description


def _printVersion(options):
    """
    Display muxframe's and Twisted's versions and exit.
    """
    from twisted import copyright

    from . import __version__
    print("muxframe %s (Twisted %s)" % (__version__, copyright.version))
    sys.exit(0)


class Tunnel:
    """
    What one C{--endpoint} of a role is configured to do.

    @ivar endpoint: the C{--endpoint} description as given.
    @ivar framing: its framing, once options are checked.
    @ivar echo: C{--echo} (servers).
    @ivar forward: the C{--forward} target, or C{None}.
    @ivar locals: the C{--local} listening descriptions.
    @ivar clients: the C{--client} name of each C{--local} (servers).
    @ivar tokens: the C{--tokens} file (servers), or C{None}.
    """

    def __init__(self):
        self.endpoint = None
        self.framing = None
        self.echo = False
        self.forward = None
        self.locals = []
        self.clients = []
        self.tokens = None

    def innerEndpoint(self):
        """
        The C{--endpoint} description without a framing prefix.
        """
        for framing in FRAMINGS:
            if self.endpoint.startswith(framing + ":"):
                return self.endpoint[len(framing) + 1:]
        return self.endpoint

    def __repr__(self):
        return "<Tunnel %s>" % (self.endpoint,)


def _settingHandler(name, spec):
    def handler(self, value):
        self._once(name, value)
        try:
            self.settings[name] = coerce(name, value)
        except ValueError as e:
            raise usage.UsageError("--%s: %s" % (name, e))

    handler.__doc__ = "%s (%s; default %s)" % (spec[5], spec[4], spec[1])
    handler.__name__ = "opt_" + name
    return handler


class _RoleOptions(OperatorOptionsMixin, usage.Options):
    """
    Options shared by both roles (the operator surfaces' too: --admin,
    --log-format, ...; L{OperatorOptionsMixin}).
    """

    role = None
    opt_version = _printVersion

    def __init__(self):
        usage.Options.__init__(self)
        self.tunnels = [Tunnel()]
        self.settings = {}
        self.framing = "mio"
        self.logLevel = "info"
        self._given = {}

    def _once(self, name, value):
        if name in self._given:
            raise usage.UsageError(
                "--%s given twice (%r, then %r): it takes one value"
                % (name, self._given[name], value))
        self._given[name] = value

    def opt_endpoint(self, description):
        """
        A multiplexed connection's endpoint (required; repeatable: each
        --endpoint is its own tunnel), e.g. tcp:9000 (server),
        tcp:localhost:9000 (client); a bmp: or mio: prefix sets its framing.
        """
        tunnel = self.tunnels[-1]
        if tunnel.endpoint is not None:
            tunnel = Tunnel()
            self.tunnels.append(tunnel)
        tunnel.endpoint = description

    opt_e = opt_endpoint

    def opt_framing(self, framing):
        """
        The framing of endpoints without a prefix: mio or bmp (default mio).
        """
        self._once("framing", framing)
        if framing not in FRAMINGS:
            raise usage.UsageError(
                "--framing: unknown framing %r (choose one of %s)"
                % (framing, ", ".join(FRAMINGS)))
        self.framing = framing

    opt_f = opt_framing

    def opt_logLevel(self, level):
        """
        The least important muxframe events written: debug, info (the
        default: per-stream and per-connection tunnel events, which are
        debug, are not written), warn or error.
        """
        self._once("logLevel", level)
        if level not in LOG_LEVELS:
            raise usage.UsageError(
                "--logLevel: unknown level %r (choose one of %s)"
                % (level, ", ".join(LOG_LEVELS)))
        self.logLevel = level

    def opt_local(self, description):
        """
        A server endpoint to accept local connections on (repeatable; see
        the role's description).
        """
        tunnel = self.tunnels[-1]
        tunnel.locals.append(description)
        tunnel.clients.append(None)

    opt_l = opt_local

    def opt_forward(self, description):
        """
        A client endpoint to connect streams to (one per --endpoint; see the
        role's description).
        """
        tunnel = self.tunnels[-1]
        if tunnel.forward is not None:
            raise usage.UsageError(
                "--forward given twice for %s (%r, then %r): streams carry no "
                "target name, so one multiplexed endpoint has one target; give "
                "each target its own --endpoint"
                % ("--endpoint=%s" % (tunnel.endpoint,) if tunnel.endpoint
                   else "the first --endpoint", tunnel.forward, description))
        tunnel.forward = description

    opt_F = opt_forward

    def postOptions(self):
        if self.tunnels[0].endpoint is None:
            raise usage.UsageError(
                "--endpoint is required (e.g. --endpoint=%s)"
                % ("tcp:9000" if self.role == "server" else "tcp:localhost:9000",))
        from twisted.internet import reactor
        from twisted.internet.endpoints import clientFromString, serverFromString
        for tunnel in self.tunnels:
            self._checkTunnel(tunnel)
            try:
                self.muxEndpoint(reactor, tunnel)
            except ValueError as e:
                raise usage.UsageError("--endpoint=%s: %s" % (tunnel.endpoint, e))
            for description in tunnel.locals:
                self._checkEndpoint("local", description, serverFromString,
                                    checkServerDescription, "a server endpoint to "
                                    "listen on, e.g. tcp:7000:interface=127.0.0.1")
            if tunnel.forward is not None:
                self._checkEndpoint("forward", tunnel.forward, clientFromString,
                                    checkClientDescription, "a client endpoint to "
                                    "connect to, e.g. tcp:127.0.0.1:22")
        self.operator = self.operatorSettings()

    def _checkTunnel(self, tunnel):
        framing = self.framing
        for prefix in FRAMINGS:
            if tunnel.endpoint.startswith(prefix + ":"):
                if "framing" in self._given and self.framing != prefix:
                    raise usage.UsageError(
                        "--endpoint=%s is %s, but --framing=%s"
                        % (tunnel.endpoint, prefix, self.framing))
                framing = prefix
        if tunnel.endpoint.startswith("mux:"):
            raise usage.UsageError(
                "--endpoint=%s: give the framing as a mio: or bmp: prefix, or "
                "with --framing" % (tunnel.endpoint,))
        tunnel.framing = framing
        inner = tunnel.innerEndpoint()
        overlap = sorted(set(self.settings) & set(parseDescription(inner)[1]))
        if overlap:
            raise usage.UsageError(
                "--endpoint=%s sets %s, and so does --%s: give it once"
                % (tunnel.endpoint, ", ".join(overlap), overlap[0]))
        check = checkServerDescription if self.role == "server" else checkClientDescription
        try:
            check(inner)
        except ValueError as e:
            raise usage.UsageError("--endpoint: %s" % (e,))
        self.checkTunnel(tunnel)

    def _checkEndpoint(self, option, description, parse, check, wanted):
        from twisted.internet import reactor
        try:
            check(description)
        except ValueError as e:
            raise usage.UsageError("--%s takes %s: %s" % (option, wanted, e))
        try:
            parse(reactor, description)
        except Exception as e:
            raise usage.UsageError("--%s: bad endpoint %r: %s" % (option, description, e))

    def muxDescription(self, tunnel=None):
        """
        Return the C{mio:}/C{bmp:} endpoint string of a tunnel's (by default
        the first tunnel's) multiplexed endpoint.
        """
        tunnel = tunnel or self.tunnels[0]
        extra = "".join(":%s=%s" % item for item in sorted(self.settings.items()))
        return "%s:%s%s" % (tunnel.framing or self.framing, tunnel.innerEndpoint(), extra)

    def checkTunnel(self, tunnel):
        """
        Check the role's own options of one tunnel (overridden by each role).
        """


for _name, _spec in SETTINGS.items():
    setattr(_RoleOptions, "opt_" + _name, _settingHandler(_name, _spec))
del _name, _spec


class ServerOptions(_RoleOptions):
    """
    Options of C{twistd muxframe server}.
    """

    synopsis = ("--endpoint=LISTEN [--tokens=FILE] [--echo | --forward=TARGET] "
                "[--local=LISTEN --client=NAME ...] [--endpoint=LISTEN ...] [settings]")
    longdesc = (
        "Accept multiplexed connections on each --endpoint.  Streams the "
        "client opens are echoed (--echo) or connected to --forward TARGET; "
        "with --local, local connections are carried as streams opened "
        "toward the client (reverse tunnel).  --echo, --forward and --local "
        "belong to the --endpoint before them.  A --local's connections go "
        "only to the authenticated client its --client names: by its TLS "
        "certificate (add clientCA=CA.pem to an ssl: endpoint) or by a token "
        "(--tokens).")
    role = "server"

    def opt_echo(self):
        """
        Echo the streams the client opens (per --endpoint).
        """
        self.tunnels[-1].echo = True

    def opt_client(self, name):
        """
        The authenticated client that the connections of the --local before
        it go to: its TLS certificate's common name (clientCA= on the
        endpoint) or its name in --tokens.
        """
        tunnel = self.tunnels[-1]
        if not tunnel.locals:
            raise usage.UsageError("--client=%s names the client of a --local: "
                                   "give it after that --local" % (name,))
        if tunnel.clients[-1] is not None:
            raise usage.UsageError("--client given twice for --local=%s (%r, then %r)"
                                   % (tunnel.locals[-1], tunnel.clients[-1], name))
        tunnel.clients[-1] = name

    def opt_tokens(self, path):
        """
        A file of 'name token' lines: every client of the --endpoint before
        it must answer a token challenge (see docs/operations.md).
        """
        tunnel = self.tunnels[-1]
        if tunnel.tokens is not None:
            raise usage.UsageError("--tokens given twice for one --endpoint")
        tunnel.tokens = path

    def checkTunnel(self, tunnel):
        """
        Check the server's own option combinations.
        """
        if tunnel.echo and tunnel.forward:
            raise usage.UsageError(
                "--echo and --forward cannot be used together (--endpoint=%s)"
                % (tunnel.endpoint,))
        if not (tunnel.echo or tunnel.forward or tunnel.locals):
            raise usage.UsageError(
                "the server needs --echo, --forward or --local for --endpoint=%s"
                % (tunnel.endpoint,))
        tokens = None
        if tunnel.tokens is not None:
            from .tunnelauth import TokenTable
            try:
                tokens = TokenTable.fromFile(tunnel.tokens)
            except ValueError as e:
                raise usage.UsageError("--tokens: %s" % (e,))
        certificates = "clientCA" in parseDescription(tunnel.innerEndpoint())[1]
        for local, client in zip(tunnel.locals, tunnel.clients):
            if client is None:
                raise usage.UsageError(
                    "--local=%s needs --client=NAME: a reverse tunnel sends its "
                    "connections only to the authenticated client it names" % (local,))
            if tokens is None and not certificates:
                raise usage.UsageError(
                    "--local=%s: --endpoint=%s cannot authenticate clients; add "
                    "clientCA= to its ssl: description (certificates name "
                    "clients) or --tokens=FILE" % (local, tunnel.endpoint))
            if tokens is not None and client not in tokens:
                raise usage.UsageError("--client=%s is not in --tokens=%s"
                                       % (client, tunnel.tokens))

    def muxDescription(self, tunnel=None):
        """
        The C{mio:}/C{bmp:} server string, with C{tokens=} when given.
        """
        tunnel = tunnel or self.tunnels[0]
        description = _RoleOptions.muxDescription(self, tunnel)
        if tunnel.tokens is not None:
            description += ":tokens=" + _quote(tunnel.tokens)
        return description

    def muxEndpoint(self, reactor, tunnel=None):
        """
        Return the L{muxframe.endpoints.MultiplexedServerEndpoint} to listen on.
        """
        from twisted.internet.endpoints import serverFromString
        return serverFromString(reactor, self.muxDescription(tunnel))


class ClientOptions(_RoleOptions):
    """
    Options of C{twistd muxframe client}.
    """

    synopsis = ("--endpoint=CONNECT [--local=LISTEN ...] [--forward=TARGET] "
                "[--endpoint=CONNECT ...] [settings]")
    longdesc = (
        "Keep one multiplexed connection to each --endpoint (re-made with "
        "backoff when lost).  Local connections on --local are carried as "
        "streams to the server (forward tunnel); streams the server opens "
        "are connected to --forward TARGET.  --local and --forward belong "
        "to the --endpoint before them.")
    role = "client"

    def __init__(self):
        _RoleOptions.__init__(self)
        self.clientOptions = {}

    def _seconds(self, name, value):
        self._once(name, value)
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1
        if not seconds > 0:
            raise usage.UsageError(
                "--%s must be a positive number of seconds, not %r" % (name, value))
        self.clientOptions[name] = seconds

    def opt_connectTimeout(self, value):
        """
        Seconds a local connection waits for the multiplexed connection's
        attempt in progress before it is closed (default 30).
        """
        self._seconds("connectTimeout", value)

    def opt_retryMax(self, value):
        """
        Longest delay between reconnection attempts, seconds (default 30).
        """
        self._seconds("retryMax", value)

    def opt_name(self, name):
        """
        This client's name, to answer a server that requires a token (with
        --tokenFile).
        """
        self._once("name", name)
        self.clientOptions["authName"] = name

    def opt_tokenFile(self, path):
        """
        The file holding this client's token (its first line), with --name.
        """
        self._once("tokenFile", path)
        self.clientOptions["authTokenFile"] = path

    def postOptions(self):
        auth = [name for name in ("authName", "authTokenFile") if name in self.clientOptions]
        if len(auth) == 1:
            raise usage.UsageError("--name and --tokenFile go together")
        if auth:
            from .tunnelauth import checkName, readTokenFile
            try:
                checkName(self.clientOptions["authName"])
                readTokenFile(self.clientOptions["authTokenFile"])
            except ValueError as e:
                raise usage.UsageError("--name/--tokenFile: %s" % (e,))
        _RoleOptions.postOptions(self)

    def checkTunnel(self, tunnel):
        """
        Check the client's own options of one tunnel.
        """
        if not (tunnel.locals or tunnel.forward):
            raise usage.UsageError(
                "the client needs --local or --forward for --endpoint=%s"
                % (tunnel.endpoint,))

    def muxDescription(self, tunnel=None):
        """
        The C{mio:}/C{bmp:} client string, with the client's own options.
        """
        extra = "".join(":%s=%s" % (name, _quote(value))
                        for name, value in sorted(self.clientOptions.items()))
        return _RoleOptions.muxDescription(self, tunnel) + extra

    def muxEndpoint(self, reactor, tunnel=None):
        """
        Return the L{muxframe.endpoints.MultiplexedClientEndpoint} to connect
        through.
        """
        from twisted.internet.endpoints import clientFromString
        return clientFromString(reactor, self.muxDescription(tunnel))


def _oneLineHelp(cls):
    # usage prints an option's docstring as its help: join its lines.
    for name, value in vars(cls).items():
        if name.startswith("opt_") and getattr(value, "__doc__", None):
            value.__doc__ = " ".join(value.__doc__.split())


for _cls in (OperatorOptionsMixin, _RoleOptions, ServerOptions, ClientOptions):
    _oneLineHelp(_cls)
del _cls


class Options(usage.Options):
    """
    Options of C{twistd muxframe} and C{twist muxframe}.
    """

    synopsis = "server|client|xtmp [options]"
    longdesc = "Multiplexed tunnels over MIO or BMP (see docs/operations.md)."
    subCommands = [
        ["server", None, ServerOptions, "Accept multiplexed connections."],
        ["client", None, ClientOptions, "Keep multiplexed connections to servers."],
        ["xtmp", None, XTMPOptions, "Run the XTMP server (docs/xtmp-server.md)."],
    ]
    opt_version = _printVersion

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("choose a role: server, client or xtmp")


class ClientConnectionService(service.Service):
    """
    Keep a L{muxframe.endpoints.MultiplexedClientEndpoint}'s connection up
    from start to stop (so the server can open streams toward it at any
    time): re-made with backoff when lost, each failure logged.  On stop,
    drain it and stop reconnecting.
    """

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def startService(self):
        service.Service.startService(self)
        self.endpoint.keepConnected()

    def stopService(self):
        service.Service.stopService(self)
        return self.endpoint.drain()


class RoleTunnel:
    """
    The running pieces of one tunnel of a role.

    @ivar endpoint: its multiplexed endpoint.
    @ivar streams: the factory of the streams the peer opens (or C{None}).
    @ivar locals: the L{muxframe.tunnel.TunnelFactory} of each C{--local}.
    """

    def __init__(self, endpoint, streams):
        self.endpoint = endpoint
        self.streams = streams
        self.locals = []


def makeService(options, reactor=None):
    """
    Build the service of a role from parsed L{Options}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor
        reactor = globalReactor
    sub = options.subOptions
    if options.subCommand == "xtmp":
        from .server.tap import makeService as makeXTMPService
        return makeXTMPService(sub, reactor)
    from .admin.muxstatus import MultiplexerStatus, viewsOf
    from .admin.service import OperatedRole
    top = OperatedRole(logLevel=sub.logLevel)
    top.setName("muxframe-" + options.subCommand)
    # SIGHUP reads --admin-token-file again, as the xtmp role does.
    top.reloadOnHangup = True
    top.tunnels = []
    for tunnel in sub.tunnels:
        if options.subCommand == "server":
            running = _serverTunnel(sub, tunnel, top, reactor)
        else:
            running = _clientTunnel(sub, tunnel, top, reactor)
        top.tunnels.append(running)
    status = MultiplexerStatus(options.subCommand, viewsOf(sub, top), reactor)
    return top.operate(status, sub.operator, reactor, sub)


def _serverTunnel(sub, tunnel, top, reactor):
    from twisted.internet.endpoints import clientFromString

    from .tunnel import EchoFactory, ForwardFactory, TunnelFactory, reverseOpener

    if tunnel.echo:
        streams = EchoFactory()
    elif tunnel.forward:
        streams = ForwardFactory(clientFromString(reactor, tunnel.forward))
    else:
        streams = _RefuseFactory()
    main = ListenService(sub.muxDescription(tunnel), streams, reactor)
    main.setServiceParent(top)
    running = RoleTunnel(main.endpoint, streams)
    for description, client in zip(tunnel.locals, tunnel.clients):
        local = TunnelFactory(reverseOpener(main.endpoint, client), "reverse tunnel")
        ListenService(description, local, reactor).setServiceParent(top)
        running.locals.append(local)
    log.info("muxframe server on {endpoint} ({framing}); streams: {mode}{locals}",
             endpoint=tunnel.innerEndpoint(), framing=tunnel.framing,
             mode="echo" if tunnel.echo else tunnel.forward or "refused",
             locals="".join("; reverse tunnel from %s to client %s" % pair
                            for pair in zip(tunnel.locals, tunnel.clients)))
    return running


def _clientTunnel(sub, tunnel, top, reactor):
    from twisted.internet.endpoints import clientFromString

    from .tunnel import ForwardFactory, TunnelFactory

    endpoint = sub.muxEndpoint(reactor, tunnel)
    if tunnel.forward:
        endpoint.childFactory = ForwardFactory(clientFromString(reactor, tunnel.forward))
    ClientConnectionService(endpoint).setServiceParent(top)
    running = RoleTunnel(endpoint, endpoint.childFactory)
    for description in tunnel.locals:
        local = TunnelFactory(endpoint.connect, "forward tunnel")
        ListenService(description, local, reactor).setServiceParent(top)
        running.locals.append(local)
    log.info("muxframe client to {endpoint} ({framing}){locals}{forward}",
             endpoint=tunnel.innerEndpoint(), framing=tunnel.framing,
             locals="".join("; forward tunnel from %s" % (d,) for d in tunnel.locals),
             forward="; streams from the server: %s" % (tunnel.forward,)
             if tunnel.forward else "")
    return running


def twistdCommand(*args):
    """
    Return the argv that runs C{twistd ARGS} with this Python interpreter
    (C{python -m twisted.scripts.twistd} does nothing: that module has no
    C{__main__} block).
    """
    return [sys.executable, "-c",
            "import sys; sys.argv[0] = 'twistd'; "
            "from twisted.scripts.twistd import run; run()"] + list(args)


def twistCommand(*args):
    """
    Return the argv that runs C{twist ARGS} with this Python interpreter
    (C{python -m twisted} is C{twist}).
    """
    return [sys.executable, "-m", "twisted"] + list(args)


class StartFailed(Exception, SystemExit):
    """
    A role could not start (a port in use, its storage held by another
    process): exits with its message and status 1.

    Both an L{Exception} and a L{SystemExit}: daemonized twistd reports an
    L{Exception} raised while the application starts to the launching
    process (which prints it, exits 1 and removes the pidfile), where a
    bare L{SystemExit} left the launcher waiting for ever; and at the top
    level it is a L{SystemExit}, one line and status 1, not a traceback.
    """

    def __init__(self, message):
        Exception.__init__(self, message)
        self.code = message


class ListenFailed(StartFailed):
    """
    A role could not listen on one of its endpoints.
    """


class ListenService(service.Service):
    """
    A L{strports}-style listening service that turns "cannot listen" into a
    clear one-line error and a non-zero exit of twistd, listens with a
    backlog of L{DEFAULT_BACKLOG} unless the description sets one, and
    accepts at most C{acceptsPerTurn} connections per reactor turn
    (L{muxframe.acceptbatch}: a connection flood waits in the backlog, not
    in front of established connections).  An C{ssl:} listener completes
    the handshake of a client offering ALPN protocols it does not speak
    (L{muxframe.tls.tolerateALPN}).

    @ivar endpoint: the listening endpoint.
    """

    def __init__(self, description, factory, reactor,
                 acceptsPerTurn=DEFAULT_ACCEPTS_PER_TURN):
        self.description = description
        from twisted.internet.endpoints import serverFromString

        from .tls import tolerateALPN
        self.endpoint = tolerateALPN(
            serverFromString(reactor, withBacklog(description)))
        self.inner = StreamServerEndpointService(
            CappedEndpoint(self.endpoint, acceptsPerTurn), factory)
        # As strports.service: a failure to listen raises from startService.
        self.inner._raiseSynchronously = True

    def _start(self, method):
        try:
            method()
        except CannotListenError as e:
            reason = e.socketError
            reason = getattr(reason, "strerror", None) or reason
            raise ListenFailed("muxframe: cannot listen on %s: %s"
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
