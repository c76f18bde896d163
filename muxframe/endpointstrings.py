"""
Endpoint string parsers for C{mio:}, C{bmp:} and C{mux:}, registered by the
plugin C{twisted/plugins/muxframe_plugin.py}.

Each wraps any other endpoint description by passing the rest through, as
Twisted's C{haproxy:} does::

    mio:tcp:9000                                server: streams on tcp:9000
    bmp:ssl:8443:privateKey=server.pem          server: BMP over TLS
    mio:ssl:8443:privateKey=server.pem:clientCA=ca.pem   ... mutual TLS
    mio:tls:localhost:8443:trustRoots=ca        client, hostname verified
    mio:tcp:localhost:9000:maxStreams=500       multiplexer settings
    mux:tcp:9000:framing=bmp                    framing as a keyword

Multiplexer settings (L{muxframe.settings.SETTINGS}) are camelCase keywords,
taken out before the rest is handed to the inner endpoint's parser.  Also
taken out: C{clientCA} (servers, inner C{ssl:} only: require client
certificates signed by these CAs, whose common names name the clients),
C{tokens} (servers: a file of C{name token} lines; every client must answer
a token challenge, see L{muxframe.tunnelauth}), C{connectTimeout},
C{retryInitial}, C{retryMax}, C{confirmTimeout} (clients, seconds), and
C{authName} with C{authTokenFile} (clients: the name and the file holding
the token to answer such a server with).  Any fault raises C{ValueError}
naming it.

This module imports nothing heavy and never the reactor: everything else is
imported when a string is parsed.
"""

from zope.interface import implementer

from twisted.internet.interfaces import (
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin

FRAMINGS = ("mio", "bmp")
CLIENT_OPTIONS = ("connectTimeout", "retryInitial", "retryMax", "confirmTimeout")
CLIENT_AUTH = ("authName", "authTokenFile")


def _quote(value):
    value = str(value)
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def unparseEndpoint(args, kwargs):
    """
    Join parsed endpoint-string arguments back into a description.
    """
    return ":".join(
        [_quote(arg) for arg in args]
        + sorted("%s=%s" % (_quote(k), _quote(v)) for k, v in kwargs.items()))


def _splitOptions(prefix, framing, kwargs, extra):
    """
    Take the multiplexer settings and C{extra} keywords out of C{kwargs}.

    @return: C{(framing, settings, extras)}
    """
    from .settings import RENAMED, SETTINGS, coerce

    if framing is None:
        framing = kwargs.pop("framing", "mio")
    if framing not in FRAMINGS:
        raise ValueError(
            "%s: endpoint: unknown framing %r (choose one of %s)"
            % (prefix, framing, ", ".join(FRAMINGS)))
    settings = {}
    for name in list(kwargs):
        if name in RENAMED:
            raise ValueError("%s: endpoint: setting %s was replaced by %s"
                             % (prefix, name, RENAMED[name]))
        if name in SETTINGS:
            try:
                settings[name] = coerce(name, kwargs.pop(name))
            except ValueError as e:
                raise ValueError("%s: endpoint: %s" % (prefix, e))
    extras = {}
    for name in extra:
        if name in kwargs:
            extras[name] = kwargs.pop(name)
    return framing, settings, extras


def _positiveSeconds(prefix, name, value, zero=False):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not (0 <= seconds if zero else 0 < seconds) or not seconds < 1e7:
        raise ValueError("%s: endpoint: %s must be a %s number of seconds, not %r"
                         % (prefix, name, "non-negative" if zero else "positive", value))
    return seconds


def _needInner(prefix, args, kwargs, example):
    if not args or not args[0]:
        raise ValueError(
            "%s: endpoint needs an inner endpoint description after %s:, e.g. %s"
            % (prefix, prefix, example))


def _innerFailed(prefix, description, error):
    return ValueError("%s: endpoint: bad inner endpoint %r: %s: %s"
                      % (prefix, description, type(error).__name__, error))


def parseServer(reactor, prefix, framing, args, kwargs):
    """
    Build a L{muxframe.endpoints.MultiplexedServerEndpoint} from parsed
    endpoint-string arguments (C{args}, C{kwargs} as given to a parser,
    without the prefix).

    @raise ValueError: naming the fault.
    """
    kwargs = dict(kwargs)
    framing, settings, extras = _splitOptions(
        prefix, framing, kwargs, ("clientCA", "tokens"))
    _needInner(prefix, args, kwargs, "%s:tcp:9000" % (prefix,))
    description = unparseEndpoint(args, kwargs)
    from .endpointcheck import checkClientCA, checkServerDescription
    try:
        checkServerDescription(description)
        if "clientCA" in extras:
            checkClientCA(extras["clientCA"])
    except ValueError as e:
        raise ValueError("%s: endpoint: %s" % (prefix, e))
    try:
        if "clientCA" in extras:
            if args[0] != "ssl":
                raise ValueError("clientCA needs an inner ssl: endpoint")
            from .tls import mutualTLSServerEndpoint
            inner = mutualTLSServerEndpoint(
                reactor, *args[1:], clientCA=extras["clientCA"], **kwargs)
        else:
            from twisted.internet.endpoints import serverFromString
            inner = serverFromString(reactor, description)
    except Exception as e:
        raise _innerFailed(prefix, description, e)
    from .tls import tolerateALPN
    tolerateALPN(inner)
    authenticator = None
    if "clientCA" in extras or "tokens" in extras:
        from .tunnelauth import Authenticator, TokenTable
        tokens = None
        if "tokens" in extras:
            try:
                tokens = TokenTable.fromFile(extras["tokens"])
            except ValueError as e:
                raise ValueError("%s: endpoint: %s" % (prefix, e))
        authenticator = Authenticator(tokens, certificates="clientCA" in extras)
    from .endpoints import MultiplexedServerEndpoint
    return MultiplexedServerEndpoint(
        inner, framing=framing, reactor=reactor, authenticator=authenticator,
        description="%s:%s" % (framing, description), **settings)


def parseClient(reactor, prefix, framing, args, kwargs):
    """
    Build a L{muxframe.endpoints.MultiplexedClientEndpoint} from parsed
    endpoint-string arguments.

    @raise ValueError: naming the fault.
    """
    kwargs = dict(kwargs)
    framing, settings, extras = _splitOptions(
        prefix, framing, kwargs, CLIENT_OPTIONS + CLIENT_AUTH)
    auth = {name: extras.pop(name) for name in CLIENT_AUTH if name in extras}
    for name in extras:
        extras[name] = _positiveSeconds(prefix, name, extras[name],
                                        zero=name == "confirmTimeout")
    if auth:
        if len(auth) != 2:
            raise ValueError("%s: endpoint: authName and authTokenFile go together"
                             % (prefix,))
        from .tunnelauth import checkName, readTokenFile
        try:
            checkName(auth["authName"])
            extras["authToken"] = readTokenFile(auth["authTokenFile"])
        except ValueError as e:
            raise ValueError("%s: endpoint: %s" % (prefix, e))
        extras["authName"] = auth["authName"]
    _needInner(prefix, args, kwargs, "%s:tcp:localhost:9000" % (prefix,))
    description = unparseEndpoint(args, kwargs)
    from .endpointcheck import checkClientDescription
    try:
        checkClientDescription(description)
    except ValueError as e:
        raise ValueError("%s: endpoint: %s" % (prefix, e))
    try:
        from twisted.internet.endpoints import clientFromString
        inner = clientFromString(reactor, description)
    except Exception as e:
        raise _innerFailed(prefix, description, e)
    from .endpoints import MultiplexedClientEndpoint
    return MultiplexedClientEndpoint(
        inner, framing=framing, reactor=reactor,
        description="%s:%s" % (framing, description), **extras, **settings)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class MultiplexedServerParser:
    """
    Server endpoint string parser for one prefix (C{mio}, C{bmp}, or C{mux}
    with a C{framing=} keyword).
    """

    def __init__(self, prefix, framing=None):
        self.prefix = prefix
        self.framing = framing

    def parseStreamServer(self, reactor, *args, **kwargs):
        """
        Return a L{muxframe.endpoints.MultiplexedServerEndpoint} wrapping the
        endpoint that the rest of the description names.
        """
        return parseServer(reactor, self.prefix, self.framing, args, kwargs)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class MultiplexedClientParser:
    """
    Client endpoint string parser for one prefix (C{mio}, C{bmp}, or C{mux}
    with a C{framing=} keyword).
    """

    def __init__(self, prefix, framing=None):
        self.prefix = prefix
        self.framing = framing

    def parseStreamClient(self, reactor, *args, **kwargs):
        """
        Return a L{muxframe.endpoints.MultiplexedClientEndpoint} wrapping the
        endpoint that the rest of the description names.
        """
        return parseClient(reactor, self.prefix, self.framing, args, kwargs)


mioServerParser = MultiplexedServerParser("mio", "mio")
bmpServerParser = MultiplexedServerParser("bmp", "bmp")
muxServerParser = MultiplexedServerParser("mux")
mioClientParser = MultiplexedClientParser("mio", "mio")
bmpClientParser = MultiplexedClientParser("bmp", "bmp")
muxClientParser = MultiplexedClientParser("mux")
