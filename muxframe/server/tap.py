"""
The C{xtmp} role of the C{muxframe} twistd plugin:

    twistd -n muxframe xtmp --config xtmp-server.yaml [--OPTION=VALUE ...]
    twist muxframe xtmp --config xtmp-server.yaml

Every setting of the configuration file is also an option (the key's name
with dashes: C{server.max_connections} is C{--max-connections}); options
win over the file.  C{--endpoint} may be repeated (the server listens on
each), and so may C{--handler TYPE=module:function[,blocking]} and
C{--permission IDENTITY:publish|subscribe:allow|deny:PATTERN}, which add
handlers and permissions.  C{--admin ENDPOINT} (with C{--admin-token-file})
serves health, metrics and the admin API (C{docs/operations.md}).  Any fault in the file or the
options, or in the files they name (identity, authorized_keys, tokens), is
a usage error naming the key, before anything listens.  See
C{docs/xtmp-server.md}.
"""

from twisted.python import usage

from muxframe.server.config import ServerConfig
from muxframe.server.errors import ConfigError
from muxframe.server.schema import SCHEMA


#: Settings given by a repeatable option (an C{opt_} method).
_REPEATABLE = ("server.endpoint",)


def _parameters():
    rows = []
    for key in SCHEMA:
        if key.path in _REPEATABLE:
            continue
        default = key.default
        if isinstance(default, list):
            default = ",".join(default)
        rows.append([key.option, None, None, "%s (%s; default %s) [%s]"
                     % (key.doc, key.unit, default, key.path)])
    return rows


class XTMPOptions(usage.Options):
    """
    Options of C{twistd muxframe xtmp}.
    """

    synopsis = "--config FILE [--OPTION=VALUE ...]"
    longdesc = ("Run the XTMP server: sessions authenticated by "
                "authorized_keys or tokens, handlers per message type, "
                "subjects with wildcards, queue groups and request/reply, "
                "and its defences.  SIGTERM drains and exits 0; SIGHUP "
                "reloads authorized_keys and tokens.  See "
                "docs/xtmp-server.md.")
    optParameters = [
        ["config", "c", None, "The YAML configuration file."],
    ] + _parameters()

    def __init__(self):
        usage.Options.__init__(self)
        self.handlers = []
        self.permissions = []
        self.endpoints = []

    def opt_endpoint(self, value):
        """
        Where to listen (repeatable: the server listens on each, e.g. a
        tcp: endpoint and a ws: one); replaces the file's server.endpoint.
        """
        self.endpoints.append(value)

    def opt_handler(self, value):
        """
        TYPE=module:function[,blocking]: a handler (repeatable).
        """
        self.handlers.append(value)

    def opt_permission(self, value):
        """
        IDENTITY:publish|subscribe:allow|deny:PATTERN (repeatable).
        """
        self.permissions.append(value)

    def postOptions(self):
        """
        Read the file, apply the options, and load what they name.
        """
        try:
            if self["config"]:
                config = ServerConfig.fromFile(self["config"])
            else:
                config = ServerConfig()
            for key in SCHEMA:
                if key.path not in _REPEATABLE and \
                        self[key.option] is not None:
                    config.override(key.path, self[key.option])
            if self.endpoints:
                config.override("server.endpoint", self.endpoints)
            for value in self.handlers:
                config.overrideHandler(value)
            for value in self.permissions:
                config.overridePermission(value)
            config.finish()
            config.requireIdentity()
            from muxframe.server.service import (
                loadIdentity, loadKeys, loadTokens,
            )
            loadIdentity(config)
            loadKeys(config)
            loadTokens(config)
            from muxframe.server.router import importTarget
            for spec in config.handlers:
                importTarget(spec.target, spec.where)
        except ConfigError as e:
            raise usage.UsageError(str(e))
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        from muxframe.server.service import listenDescription
        for description in config["server.endpoint"]:
            try:
                serverFromString(reactor, listenDescription(
                    description, config["server.allowed_origins"]))
            except Exception as e:
                raise usage.UsageError("server.endpoint: bad endpoint %r: %s"
                                       % (description, e))
        from muxframe.admin.settings import (
            OperatorSettings, checkAdminEndpoint,
        )
        if config["admin.endpoint"]:
            checkAdminEndpoint(config["admin.endpoint"], "admin.endpoint")
        try:
            self.operatorSettings = OperatorSettings.fromServerConfig(config)
        except ValueError as e:
            raise usage.UsageError(str(e))
        self.config = config


def makeService(options, reactor=None):
    """
    The role of parsed L{XTMPOptions}: an L{OperatedRole} running the
    L{XTMPServerService} (which takes over SIGTERM, SIGINT and SIGHUP
    before its ports listen, and again once the reactor runs) and the
    configured operator surfaces.
    """
    if reactor is None:
        from twisted.internet import reactor
    from muxframe.admin.service import OperatedRole
    from muxframe.admin.xtmpstatus import XTMPStatus
    from muxframe.server.service import XTMPServerService
    try:
        main = XTMPServerService(options.config, reactor, installSignals=True,
                                 tuneCollector=True)
    except ConfigError as e:
        raise SystemExit("muxframe xtmp: %s" % (e,))
    role = OperatedRole(logLevel=options.config["logging.level"])
    role.setName("muxframe-xtmp")
    main.setServiceParent(role)
    role.server = main.server
    role.operate(XTMPStatus(main.server, options.config, reactor,
                            storage=main.storage),
                 options.operatorSettings, reactor, options)
    if role.admin is not None:
        # SIGHUP re-reads the admin tokens too (a leaked one is revoked
        # without a restart).
        main.reloadHooks.append(
            role.admin.reloadTokens)
    return role
