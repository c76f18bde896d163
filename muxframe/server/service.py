"""
The XTMP server as a Twisted service: what the twistd role runs.

L{XTMPServerService} loads the identity, authorized keys and tokens named
by a L{ServerConfig}, builds the L{XTMPServer}, and listens on each
configured endpoint (TCP, TLS, WebSocket ... at once, one server behind
them all; L{listenDescription} gives C{ws:}/C{wss:} endpoints the
configured allowed origins).  Stopping it (SIGTERM under twistd) stops listening,
then drains the server: handlers in progress finish, every session gets
Disconnect GOING_AWAY, and connections still open after C{drain_timeout}
are cut.  Under twistd it also handles signals itself (L{installSignals}):
SIGTERM stops the reactor without re-raising the signal, so twistd exits
0 once drained; SIGHUP reloads authorized_keys and the tokens file,
disconnecting the sessions of removed credentials (then runs its
C{reloadHooks}: the admin service's tokens); and once the storage has
started it applies the server's garbage collector settings
(L{tuneCollector}, C{server.gc_threshold}: L{muxframe.server.collector}).
A reload that fails keeps the credentials in use and logs why.
"""

import os
import re
import signal
import sys

from twisted.application import service
from twisted.internet.defer import gatherResults, inlineCallbacks, maybeDeferred
from twisted.logger import LogLevel

from muxframe.logthrottle import logger
from muxframe.server.errors import ConfigError
from muxframe.server.factory import XTMPServer
from muxframe.xtmp import Identity, parseAuthorizedKeys

log = logger("muxframe.server")
_TOKEN_LINE = re.compile(r"^(\S+)\s+([0-9a-fA-F]{64})$")


_WEBSOCKET = ("ws", "wss")
_WRAPPERS = ("mio", "bmp", "mux")


def listenDescription(description, origins):
    """
    C{description}, with C{origins=} added (the allowed browser origins,
    colons escaped) when it is a C{ws:} or C{wss:} endpoint (possibly
    under C{mio:}/C{bmp:}) that lists none of its own.
    """
    if not origins:
        return description
    from muxframe.endpointcheck import parseDescription
    args, kwargs = parseDescription(description)
    names = [a.lower() for a in args]
    while names and names[0] in _WRAPPERS:
        names.pop(0)
    if not names or names[0] not in _WEBSOCKET or "origins" in kwargs:
        return description
    return "%s:origins=%s" % (description, ",".join(
        o.replace("\\", "\\\\").replace(":", "\\:") for o in origins))


def loadIdentity(config):
    """
    The server's L{Identity}, its password from the configured file or
    environment variable.

    @raise ConfigError: naming the key at fault.
    """
    password = None
    passwordFile = config.path("server.identity_password_file")
    if passwordFile:
        try:
            with open(passwordFile, "rb") as f:
                password = f.read().rstrip(b"\r\n")
        except OSError as e:
            raise ConfigError("server.identity_password_file",
                              "cannot read %s: %s" % (passwordFile, e.strerror))
    name = config["server.identity_password_env"]
    if name:
        if name not in os.environ:
            raise ConfigError("server.identity_password_env",
                              "environment variable %s is not set" % (name,))
        password = os.environ[name].encode("utf-8")
    path = config.path("server.identity")
    try:
        return Identity.loadPEM(path, password)
    except OSError as e:
        raise ConfigError("server.identity", "cannot read %s: %s"
                          % (path, e.strerror))
    except (ValueError, TypeError) as e:
        raise ConfigError("server.identity", "%s: %s" % (path, e))


def loadKeys(config):
    """
    C{[(name, PublicIdentity)]} from the authorized_keys file (none if not
    configured), parsed by L{parseAuthorizedKeys}.

    @raise ConfigError: the file cannot be read or does not follow the
        layout (the fault named by file and block or line; a name given to
        two keys is one).
    """
    path = config.path("server.authorized_keys")
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError("server.authorized_keys", "cannot read %s: %s"
                          % (path, e.strerror))
    try:
        return parseAuthorizedKeys(data, path)
    except ValueError as e:
        raise ConfigError("server.authorized_keys", str(e))


def loadTokens(config):
    """
    C{{sha256 hex: name}} from the tokens file: lines C{NAME SHA256HEX},
    blank lines and C{#} comments ignored.
    """
    path = config.path("server.tokens_file")
    if not path:
        return {}
    tokens = {}
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("server.tokens_file", "cannot read %s: %s"
                          % (path, getattr(e, "strerror", None) or e))
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _TOKEN_LINE.match(line)
        if match is None:
            raise ConfigError("server.tokens_file", "%s line %d: expected "
                              "NAME SHA256HEX" % (path, number))
        tokens[match.group(2).lower()] = match.group(1)
    return tokens


class _ExitStatus:
    """
    The role's exit status once it failed: twistd exits 0 once the reactor
    stops, whatever stopped it.  Registered with atexit when the role
    starts, so it runs after the exit handlers registered later (atexit
    runs the last registered first), and after twistd removed its pidfile.
    """

    failed = False

    def __call__(self):
        if self.failed:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)


class XTMPServerService(service.Service):
    """
    Listen with an L{XTMPServer} built from C{config}, on each of its
    endpoints.

    @param installSignals: take over SIGTERM and SIGHUP (the twistd role).
    @param tuneCollector: apply L{muxframe.server.collector}'s settings
        once started (the twistd role; not for a server inside another
        program, whose process is not its own).
    @ivar server: the L{XTMPServer}.
    """

    def __init__(self, config, reactor=None, installSignals=False, tuneCollector=False):
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.installSignals = installSignals
        self.tuneCollector = tuneCollector
        #: Callables run by each L{reload} after the credentials (the
        #: admin service's tokens: L{muxframe.server.tap.makeService}).
        self.reloadHooks = []
        self._exitStatus = _ExitStatus()
        config.requireIdentity()
        from muxframe.server.storage import Storage
        self.storage = Storage.fromConfig(config, reactor)
        self.server = XTMPServer(
            loadIdentity(config), config, reactor, keys=loadKeys(config),
            tokens=loadTokens(config),
            engine=self.storage.brokerEngine() if self.storage else None)
        if self.storage is not None:
            self.storage.attach(self.server)
        from muxframe.tap import ListenService
        origins = config["server.allowed_origins"]
        self._listeners = [
            ListenService(listenDescription(description, origins),
                          self.server, reactor,
                          acceptsPerTurn=config["server.accepts_per_turn"])
            for description in config["server.endpoint"]]

    def privilegedStartService(self):
        """
        Bind a privileged port before twistd drops privileges.  The role
        (L{installSignals}) takes its signals first: a listening port is
        a started server to whoever connects, and a SIGHUP sent then must
        reload, not kill the process (its default action).
        """
        service.Service.privilegedStartService(self)
        if self.installSignals:
            # Again once the reactor runs (startService): its start-up
            # installs Twisted's own SIGTERM and SIGINT handlers.
            self._takeSignals()
        for listener in self._listeners:
            listener.privilegedStartService()

    def _claimStorage(self):
        from muxframe.engines.errors import StorageError
        from muxframe.tap import StartFailed
        if self.storage is None:
            return
        try:
            self.storage.claim()
        except StorageError as e:
            raise StartFailed("muxframe xtmp: storage.directory: %s" % (e,))

    def startService(self):
        """
        Take the storage's directory (a second server on it is refused
        before it serves anyone; as the user twistd runs it as, so after
        L{privilegedStartService} bound the ports), listen, and (the role)
        take over SIGTERM, SIGINT and SIGHUP: before listening (under
        twist, which calls no L{privilegedStartService}, ports listen
        here), and again once the reactor runs.
        """
        service.Service.startService(self)
        if self.installSignals:
            # Before the ports listen here too: twist never calls
            # privilegedStartService, and starts the service before the
            # reactor runs.
            self._takeSignals()
        self._claimStorage()
        for listener in self._listeners:
            listener.startService()
        if self.storage is not None:
            # Binds wait until the storage is recovered and connected.
            d = self.storage.start()
            if self.tuneCollector:
                # After recovery, so its indexes are frozen with the rest.
                d.addCallback(lambda _: self._applyCollector())
            d.addErrback(self._storageFailed)
        elif self.tuneCollector:
            self._applyCollector()
        c = self.config
        for key, reason in c.ignored:
            log.warn("configuration key {key} ignored: {reason}", key=key,
                     reason=reason)
        log.info("xtmp server on {endpoint}: {keys} authorized keys, {tokens} "
                 "tokens, handlers for {handlers}, max {maxConnections} "
                 "connections", endpoint=", ".join(c["server.endpoint"]),
                 keys=len(self.server.authorizedKeys),
                 tokens=len(loadTokens(c)) if c["server.tokens_file"] else 0,
                 handlers=", ".join("%#04x" % t for t in
                                    sorted(self.server.router.routes()))
                 or "none", maxConnections=c["server.max_connections"])
        if self.installSignals:
            self.reactor.callWhenRunning(self._takeSignals)
            import atexit
            atexit.register(self._exitStatus)

    def _applyCollector(self):
        from muxframe.server.collector import applyServerCollector
        threshold = self.config["server.gc_threshold"]
        if applyServerCollector(threshold):
            log.info("garbage collector: start-up objects frozen, youngest generation "
                     "threshold {threshold}", threshold=threshold)

    def _storageFailed(self, failure):
        from muxframe.engines.errors import EngineError
        engine = self.config["storage.engine"]
        if failure.check(EngineError):
            # The engine's own words name the fault: no traceback.
            log.critical("storage failed to start ({engine} engine): "
                         "{error}; stopping", engine=engine,
                         error=failure.value)
        else:
            log.failure("storage failed to start ({engine} engine); stopping",
                        failure, LogLevel.critical, engine=engine)
        self.storage = None
        # The process is the role's (installSignals): it must not exit 0,
        # which says to a supervisor that all went well.
        self._exitStatus.failed = True
        self._stopping = True
        self.reactor.callWhenRunning(self._stopReactor)

    _stopping = False

    def _takeSignals(self):
        signal.signal(signal.SIGTERM, self._sigterm)
        signal.signal(signal.SIGINT, self._sigterm)
        signal.signal(signal.SIGHUP, self._sighup)

    def _sigterm(self, number, frame):
        # Not reactor.sigTerm: that makes twistd re-raise SIGTERM after the
        # shutdown, so the exit status would not be 0.  (SIGINT, Ctrl-C
        # under -n, drains the same way.)
        name = signal.Signals(number).name
        if self._stopping:
            # An impatient second signal: the drain already has its
            # deadline (drain_timeout); stopping twice would raise.
            log.info("{signal}: already draining (drain_timeout {timeout:g}s)",
                     signal=name, timeout=self.config["server.drain_timeout"])
            return
        self._stopping = True
        log.info("{signal}: draining the xtmp server", signal=name)
        self.reactor.callFromThread(self._stopReactor)

    def _stopReactor(self):
        from twisted.internet.error import ReactorNotRunning
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            # (Already stopping: the storage failed, say.)
            pass

    def _sighup(self, number, frame):
        self.reactor.callFromThread(self.reload)

    def reload(self):
        """
        Re-read authorized_keys and the tokens file; disconnect the
        sessions of removed credentials.  Then run L{reloadHooks} (the
        admin tokens), whatever became of the credentials.

        @return: C{{"keys": (added, removed, disconnected), "tokens":
            ...}}, or L{None} if reading failed (nothing changed).
        """
        try:
            return self._reloadCredentials()
        finally:
            for hook in self.reloadHooks:
                hook()

    def _reloadCredentials(self):
        try:
            keys, tokens = loadKeys(self.config), loadTokens(self.config)
        except ConfigError as e:
            log.error("reload failed, credentials unchanged: {error}", error=e)
            self.server.events.emit("reload_failed", "reload failed: {error}",
                                    error=str(e))
            return None
        if not keys and self.server.authorizedKeys and \
                self.config.path("server.authorized_keys"):
            # Legal (the file may be emptied on purpose), but what a
            # truncated or mistyped file at 3 a.m. looks like too.
            log.warn("reload: {path} has no keys now; every key's sessions "
                     "are disconnected", path=self.config.path(
                         "server.authorized_keys"))
        outcome = {"keys": self.server.setKeys(keys),
                   "tokens": self.server.setTokens(tokens)}
        self.server.events.emit(
            "reloaded", "reloaded credentials: keys +{keys[0]} -{keys[1]} "
            "({keys[2]} sessions disconnected), tokens +{tokens[0]} "
            "-{tokens[1]} ({tokens[2]} sessions disconnected)",
            level=LogLevel.info, **outcome)
        return outcome

    @inlineCallbacks
    def stopService(self):
        """
        Stop listening, then drain the server within C{drain_timeout}.
        """
        service.Service.stopService(self)
        yield gatherResults([maybeDeferred(listener.stopService)
                             for listener in self._listeners])
        sessions = len(self.server.registry)
        aborted = yield self.server.drain(self.config["server.drain_timeout"])
        if self.storage is not None:
            yield self.storage.stop()
        log.info("xtmp server stopped: {sessions} sessions drained, "
                 "{aborted} connections cut at the deadline",
                 sessions=sessions, aborted=aborted)
