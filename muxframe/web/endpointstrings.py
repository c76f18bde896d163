"""
Endpoint string parsers for C{ws:} and C{wss:}, registered by the plugin
C{twisted/plugins/muxframe_plugin.py}.  They wrap any other endpoint
description, passing the rest through::

    ws:tcp:8092:path=/xtmp                         server
    ws:tcp:8092:path=/xtmp:static=site/            ... also serving site/
    ws:ssl:8443:privateKey=key.pem:path=/xtmp      server over TLS
    wss:8443:privateKey=key.pem:path=/xtmp         the same (inner ssl:)
    ws:tcp:8092:origins=https\\://app.example.com,https\\://*.example.org
    ws:tcp:127.0.0.1:8092:path=/xtmp               client
    ws:tls:example.com:443:path=/xtmp              client over TLS
    wss:example.com:443:path=/xtmp                 the same (inner tls:)
    mio:ws:tcp:8092:path=/mio                      MIO over WebSocket

Keywords taken out before the rest goes to the inner endpoint's parser:
C{path} (default C{/}; printable ASCII without C{?}, C{#} or whitespace:
L{pathFault}); servers: C{origins} (comma-separated allowed
origins, colons escaped as C{\\:}; C{*} for any), C{sameOrigin} (C{yes} or
C{no}, default yes), C{static} (a directory served for every non-WebSocket
request), C{accessLog} (yes/no); clients: C{origin} (an Origin header to
send); both: the limits of L{muxframe.web.limits.LIMITS}
(C{maxMessageSize}, C{writeSize}, ...).  Any fault raises C{ValueError}
naming it.

This module imports nothing heavy and never the reactor.
"""

from zope.interface import implementer

from twisted.internet.interfaces import (
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin

from muxframe.endpointstrings import unparseEndpoint

SERVER_OPTIONS = ("path", "origins", "sameOrigin", "static", "accessLog")
CLIENT_OPTIONS = ("path", "origin")
SECURE_SERVERS = ("ssl",)
SECURE_CLIENTS = ("tls", "ssl")


def _yesNo(prefix, name, value):
    lowered = str(value).lower()
    if lowered in ("yes", "true", "1", "on"):
        return True
    if lowered in ("no", "false", "0", "off"):
        return False
    raise ValueError("%s: endpoint: %s must be yes or no, not %r"
                     % (prefix, name, value))


def _split(prefix, kwargs, names):
    """
    Take C{names} and the WebSocket limits out of C{kwargs}.
    """
    from muxframe.web.limits import LIMITS, coerceLimit
    options, limits = {}, {}
    for name in list(kwargs):
        if name in names:
            options[name] = kwargs.pop(name)
        elif name in LIMITS:
            try:
                limits[name] = coerceLimit(name, kwargs.pop(name))
            except ValueError as e:
                raise ValueError("%s: endpoint: %s" % (prefix, e))
    fault = pathFault(options.get("path", "/"))
    if fault is not None:
        raise ValueError("%s: endpoint: %s" % (prefix, fault))
    return options, limits


def pathFault(path):
    """
    What is wrong with C{path} as a WebSocket URL path, or L{None}: it must
    start with C{/} and be printable ASCII without C{?}, C{#} or
    whitespace (a request's path is compared byte for byte, without its
    query).
    """
    if not path.startswith("/"):
        return "path must start with '/', not %r" % (path,)
    bad = [c for c in path if not "!" <= c <= "~" or c in "?#"]
    if bad:
        return ("path must be printable ASCII without '?', '#' or "
                "whitespace, not %r (%r)" % (path, bad[0]))
    return None


def _needInner(prefix, args, example):
    if not args or not args[0]:
        raise ValueError("%s: endpoint needs an inner endpoint description, "
                         "e.g. %s" % (prefix, example))


def parseServer(reactor, prefix, args, kwargs):
    """
    Build a L{muxframe.web.server.WebSocketServerEndpoint} from parsed
    endpoint-string arguments (without the prefix).  For C{wss:} the inner
    endpoint is C{ssl:} with the rest.

    @raise ValueError: naming the fault.
    """
    kwargs = dict(kwargs)
    options, limits = _split(prefix, kwargs, SERVER_OPTIONS)
    args = list(args)
    if prefix == "wss":
        args.insert(0, "ssl")
    _needInner(prefix, args, "%s:tcp:8092:path=/xtmp" % (prefix,))
    description = unparseEndpoint(args, kwargs)
    from muxframe.web.origins import OriginError, OriginPolicy
    try:
        origins = OriginPolicy.fromString(options.get("origins", "")).allowed
    except OriginError as e:
        raise ValueError("%s: endpoint: origins: %s" % (prefix, e))
    sameOrigin = _yesNo(prefix, "sameOrigin", options.get("sameOrigin", "yes"))
    accessLog = _yesNo(prefix, "accessLog", options.get("accessLog", "no"))
    static = options.get("static")
    if static is not None:
        import os
        if not os.path.isdir(static):
            raise ValueError("%s: endpoint: static=%r is not a directory"
                             % (prefix, static))
    try:
        from twisted.internet.endpoints import serverFromString
        inner = serverFromString(reactor, description)
    except Exception as e:
        raise ValueError("%s: endpoint: bad inner endpoint %r: %s: %s"
                         % (prefix, description, type(e).__name__, e))
    from muxframe.tls import tolerateALPN
    from muxframe.web.server import WebSocketServerEndpoint
    return WebSocketServerEndpoint(
        tolerateALPN(inner), path=options.get("path", "/"),
        allowedOrigins=origins, sameOrigin=sameOrigin, static=static,
        secure=args[0] in SECURE_SERVERS, reactor=reactor,
        accessLog=accessLog, **limits)


def _hostAndPort(prefix, args, kwargs):
    """
    The server's host and port from a C{tcp:}/C{tls:} client description.
    """
    positional = list(args[1:3])
    host = kwargs.get("host", positional.pop(0) if positional else None)
    port = kwargs.get("port", positional.pop(0) if positional else None)
    if not host or port is None:
        raise ValueError("%s: endpoint: the inner endpoint must name a host "
                         "and port (tcp:HOST:PORT or tls:HOST:PORT)"
                         % (prefix,))
    try:
        port = int(port)
    except ValueError:
        raise ValueError("%s: endpoint: bad port %r" % (prefix, port))
    return host, port


def parseClient(reactor, prefix, args, kwargs):
    """
    Build a L{muxframe.web.client.WebSocketClientEndpoint} from parsed
    endpoint-string arguments.  For C{wss:} the inner endpoint is C{tls:}.

    @raise ValueError: naming the fault.
    """
    kwargs = dict(kwargs)
    options, limits = _split(prefix, kwargs, CLIENT_OPTIONS)
    args = list(args)
    if prefix == "wss":
        args.insert(0, "tls")
    _needInner(prefix, args, "%s:tcp:localhost:8092:path=/xtmp" % (prefix,))
    if args[0] not in ("tcp",) + SECURE_CLIENTS:
        raise ValueError("%s: endpoint: the inner endpoint must be tcp:, "
                         "tls: or ssl:, not %r" % (prefix, args[0]))
    host, port = _hostAndPort(prefix, args, kwargs)
    description = unparseEndpoint(args, kwargs)
    try:
        from twisted.internet.endpoints import clientFromString
        inner = clientFromString(reactor, description)
    except Exception as e:
        raise ValueError("%s: endpoint: bad inner endpoint %r: %s: %s"
                         % (prefix, description, type(e).__name__, e))
    from muxframe.web.client import WebSocketClientEndpoint
    return WebSocketClientEndpoint(
        inner, host, port, path=options.get("path", "/"),
        secure=args[0] in SECURE_CLIENTS, origin=options.get("origin"),
        reactor=reactor, **limits)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class WebSocketServerParser:
    """
    Server endpoint string parser for C{ws:} or C{wss:}.
    """

    def __init__(self, prefix):
        self.prefix = prefix

    def parseStreamServer(self, reactor, *args, **kwargs):
        """
        Return a L{muxframe.web.server.WebSocketServerEndpoint}.
        """
        return parseServer(reactor, self.prefix, args, kwargs)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class WebSocketClientParser:
    """
    Client endpoint string parser for C{ws:} or C{wss:}.
    """

    def __init__(self, prefix):
        self.prefix = prefix

    def parseStreamClient(self, reactor, *args, **kwargs):
        """
        Return a L{muxframe.web.client.WebSocketClientEndpoint}.
        """
        return parseClient(reactor, self.prefix, args, kwargs)


wsServerParser = WebSocketServerParser("ws")
wssServerParser = WebSocketServerParser("wss")
wsClientParser = WebSocketClientParser("ws")
wssClientParser = WebSocketClientParser("wss")
