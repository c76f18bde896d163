"""
The C{xtmp} role of the C{muxframe} twistd plugin:

    twistd -n muxframe xtmp --config xtmp-server.yaml [--OPTION=VALUE ...]
    twist muxframe xtmp --config xtmp-server.yaml

Every setting of the configuration file is also an option (the key's name
with dashes: C{server.max_connections} is C{--max-connections}); options
win over the file.  C{--handler TYPE=module:function[,blocking]} and
C{--permission IDENTITY:publish|subscribe:allow|deny:PATTERN} add handlers
and permissions and may be repeated.  Any fault in the file or the
options, or in the files they name (identity, authorized_keys, tokens), is
a usage error naming the key, before anything listens.  See
C{docs/xtmp-server.md}.
"""

from twisted.python import usage

from muxframe.server.config import ServerConfig
from muxframe.server.errors import ConfigError
from muxframe.server.schema import SCHEMA


def _parameters():
    rows = []
    for key in SCHEMA:
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
                if self[key.option] is not None:
                    config.override(key.path, self[key.option])
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
        try:
            serverFromString(reactor, config["server.endpoint"])
        except Exception as e:
            raise usage.UsageError("server.endpoint: bad endpoint %r: %s"
                                   % (config["server.endpoint"], e))
        self.config = config


def makeService(options, reactor=None):
    """
    The L{XTMPServerService} of parsed L{XTMPOptions}, taking over SIGTERM
    and SIGHUP once the reactor runs.
    """
    from muxframe.server.service import XTMPServerService
    try:
        return XTMPServerService(options.config, reactor, installSignals=True)
    except ConfigError as e:
        raise SystemExit("muxframe xtmp: %s" % (e,))
