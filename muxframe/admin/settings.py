"""
What a role's operator surfaces are configured to do: the admin HTTP
service (endpoint, bearer token, whether /metrics is public, the body
limit), the log format and the periodic summary.  The same settings for
every role: the C{xtmp} role reads them from its configuration file's
C{admin} and C{logging} sections (or the options of the same names), the
multiplexer roles from L{OperatorOptionsMixin}'s options.

Rules:

  - The admin service is off unless an endpoint is given.
  - An admin endpoint reachable over the network (anything but C{unix:})
    needs a token file; a C{unix:} socket may go without (its file
    permissions guard it), and with a token file it is checked there too.
  - A C{unix:} admin socket is made mode 0600 (its owner only) unless the
    description sets C{mode=} (octal, e.g. C{mode=660} for a group):
    Twisted's own default, 0666, would give every local user the API.
  - The token file holds the token (surrounding whitespace ignored); an
    empty or unreadable file is a usage error naming it.
  - A read token file (optional; it needs a token file, and must hold
    another token) holds a token that may only read: GET and HEAD.

Nothing here imports the reactor but to check an endpoint string.
"""

import hmac
import os

from twisted.python import usage

MiB = 1 << 20
LOG_FORMATS = ("text", "json")


def isUnixEndpoint(description):
    """
    Whether an endpoint description is a UNIX socket (C{unix:PATH}).
    """
    return description.split(":", 1)[0].lower() == "unix"


ADMIN_SOCKET_MODE = "600"


def listeningDescription(description):
    """
    The description the admin service listens on: C{description}, with
    C{mode=600} added to a C{unix:} one that sets no mode (module rules).

    @raise ValueError: the mode cannot be added (the description ends in
        an escaping backslash).
    """
    from muxframe.endpointcheck import parseDescription
    if not isUnixEndpoint(description) or \
            "mode" in parseDescription(description)[1]:
        return description
    listened = "%s:mode=%s" % (description, ADMIN_SOCKET_MODE)
    if parseDescription(listened)[1].get("mode") != ADMIN_SOCKET_MODE:
        raise ValueError("cannot add mode=%s to %r: give the socket's "
                         "mode= yourself" % (ADMIN_SOCKET_MODE, description))
    return listened


def loadToken(path, where="admin.token_file"):
    """
    The bearer token in C{path}, as bytes.

    @raise ValueError: naming C{where} and the file, if it cannot be read
        or holds no token.
    """
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as e:
        raise ValueError("%s: cannot read %s: %s"
                         % (where, path, e.strerror or e))
    if not token:
        raise ValueError("%s: %s holds no token" % (where, path))
    if any(c < 0x21 or c > 0x7e for c in token):
        raise ValueError("%s: %s: the token must be one line of printable "
                         "ASCII without spaces" % (where, path))
    return token


def loadReadToken(path, token, where, tokenWhere):
    """
    The read-only token in C{path} (L{None} without a path), given the
    full C{token}.

    @raise ValueError: naming C{where}: the file cannot be read or holds
        no token, there is no full token (C{tokenWhere}), or it holds the
        same token.
    """
    if not path:
        return None
    if token is None:
        raise ValueError("%s needs %s: without a token the admin API is "
                         "open to whoever can connect" % (where, tokenWhere))
    readToken = loadToken(path, where)
    if hmac.compare_digest(readToken, token):
        raise ValueError("%s: %s holds the same token as %s"
                         % (where, path, tokenWhere))
    return readToken


class OperatorSettings:
    """
    The operator surfaces of one role.

    @ivar endpoint: the admin service's server endpoint description, or
        L{None} (off).
    @ivar token: the bearer token (bytes), or L{None} (a unix: socket
        without one).
    @ivar readToken: the bearer token that may only read (bytes), or
        L{None}.
    @ivar publicMetrics: serve /metrics without the token.
    @ivar maxBody: the largest request body read, in bytes.
    @ivar logFormat: C{"text"} or C{"json"}.
    @ivar summaryInterval: seconds between summary lines (0: none).
    @ivar maxConnections: connections served at once (one more: 503).
    @ivar requestTimeout: seconds a request has to arrive whole.
    @ivar tokenFile: the absolute path C{token} was read from, or
        L{None}; read again by L{AdminService.reloadTokens} (SIGHUP).
    @ivar readTokenFile: the same for C{readToken}.
    @ivar tokenNames: the names of the two files' settings or options, for
        errors: C{("admin.token_file", "admin.read_token_file")} or
        C{("--admin-token-file", "--admin-read-token-file")}.
    """

    def __init__(self, endpoint=None, token=None, publicMetrics=False,
                 maxBody=MiB, logFormat="text", summaryInterval=60.0,
                 readToken=None, tokenFile=None, readTokenFile=None,
                 tokenNames=("admin.token_file", "admin.read_token_file"),
                 maxConnections=64, requestTimeout=30.0):
        self.endpoint = endpoint
        self.token = token
        self.readToken = readToken
        self.tokenFile = tokenFile
        self.readTokenFile = readTokenFile
        self.tokenNames = tokenNames
        self.maxConnections = maxConnections
        self.requestTimeout = requestTimeout
        self.publicMetrics = publicMetrics
        self.maxBody = maxBody
        self.logFormat = logFormat
        self.summaryInterval = summaryInterval

    @classmethod
    def fromServerConfig(cls, config):
        """
        The settings of the C{xtmp} role's L{ServerConfig}.

        @raise ValueError: the token file cannot be read.
        """
        endpoint, tokenFile = config["admin.endpoint"], \
            config.path("admin.token_file")
        if endpoint and not tokenFile and not isUnixEndpoint(endpoint):
            raise ValueError("admin.token_file: required: the admin endpoint "
                             "%s is reachable over the network, so its API "
                             "needs a bearer token (only a unix: socket may "
                             "go without)" % (endpoint,))
        token = loadToken(tokenFile) if tokenFile else None
        readToken = loadReadToken(config.path("admin.read_token_file"), token,
                                  "admin.read_token_file", "admin.token_file")
        return cls(config["admin.endpoint"], token,
                   config["admin.public_metrics"], config["admin.max_body"],
                   config["logging.format"],
                   config["logging.summary_interval"], readToken,
                   tokenFile or None,
                   config.path("admin.read_token_file") or None,
                   maxConnections=config["admin.max_connections"],
                   requestTimeout=config["admin.request_timeout"])


def _inRange(name, value, kind, low, high, unit=""):
    """
    C{value} of the option C{--name} as C{kind} (C{int} or C{float}),
    C{low} to C{high}.

    @raise usage.UsageError: naming the option, the range and the value.
    """
    try:
        number = kind(value)
    except ValueError:
        number = None
    # (NaN fails both comparisons; infinity the upper one.)
    if number is None or not low <= number <= high:
        raise usage.UsageError("--%s must be %d to %d%s, not %r"
                               % (name, low, high, unit, value))
    return number


def _positiveNumber(name, value, zero=False):
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0 or (number == 0 and not zero) or number != number:
        raise usage.UsageError("--%s must be a %s number of seconds, not %r"
                               % (name, "non-negative" if zero else
                                  "positive", value))
    return number


class OperatorOptionsMixin:
    """
    The operator options of the multiplexer roles (C{server}, C{client}):
    C{--admin}, C{--admin-token-file}, C{--admin-read-token-file},
    C{--admin-public-metrics}, C{--admin-max-body},
    C{--admin-max-connections}, C{--admin-request-timeout}, C{--log-format},
    C{--summary-interval}.  Call
    L{operatorSettings} from C{postOptions}.
    """

    def _operatorValues(self):
        values = getattr(self, "_operator", None)
        if values is None:
            values = self._operator = {
                "admin": None, "tokenFile": None, "readTokenFile": None,
                "publicMetrics": False,
                "maxBody": MiB, "logFormat": "text", "summaryInterval": 60.0,
                "maxConnections": 64, "requestTimeout": 30.0}
        return values

    def opt_admin(self, endpoint):
        """
        Serve the admin HTTP service (health, metrics, the admin API) on
        this server endpoint, e.g. tcp:8080:interface=127.0.0.1 or
        unix:/run/muxframe.sock (mode 0600 unless it sets mode=, in octal)
        (default: off).
        """
        self._operatorValues()["admin"] = endpoint

    def opt_admin_token_file(self, path):
        """
        A file holding the admin API's bearer token (required unless
        --admin is a unix: socket).
        """
        self._operatorValues()["tokenFile"] = path

    def opt_admin_read_token_file(self, path):
        """
        A file holding a second bearer token that may only read (GET and
        HEAD), for monitoring (needs --admin-token-file).
        """
        self._operatorValues()["readTokenFile"] = path

    def opt_admin_public_metrics(self):
        """
        Serve /metrics without the token.
        """
        self._operatorValues()["publicMetrics"] = True

    def opt_admin_max_body(self, value):
        """
        Largest admin request body in bytes (default 1048576).
        """
        self._operatorValues()["maxBody"] = _inRange(
            "admin-max-body", value, int, 1024, 64 * MiB, " bytes")

    def opt_admin_max_connections(self, value):
        """
        Connections the admin service serves at once; one more is answered
        503 and closed (default 64).
        """
        self._operatorValues()["maxConnections"] = _inRange(
            "admin-max-connections", value, int, 1, 65536)

    def opt_admin_request_timeout(self, value):
        """
        Seconds an admin request has to arrive whole, and a connection may
        stay idle after a response (default 30).
        """
        self._operatorValues()["requestTimeout"] = _inRange(
            "admin-request-timeout", value, float, 1, 3600, " seconds")

    def opt_log_format(self, value):
        """
        Log as text or json (twisted.logger's JSON records) (default text).
        """
        if value not in LOG_FORMATS:
            raise usage.UsageError("--log-format must be text or json, not %r"
                                   % (value,))
        self._operatorValues()["logFormat"] = value

    def opt_summary_interval(self, value):
        """
        Seconds between one-line summaries in the log (0: none; default 60).
        """
        self._operatorValues()["summaryInterval"] = _positiveNumber(
            "summary-interval", value, zero=True)

    def operatorSettings(self):
        """
        The L{OperatorSettings} given, checked.

        @raise usage.UsageError: naming the option at fault.
        """
        values = self._operatorValues()
        endpoint, tokenFile = values["admin"], values["tokenFile"]
        if endpoint is not None:
            checkAdminEndpoint(endpoint, "--admin")
            if tokenFile is None and not isUnixEndpoint(endpoint):
                raise usage.UsageError(
                    "--admin %s is reachable over the network: give "
                    "--admin-token-file (only a unix: socket may go without "
                    "a token)" % (endpoint,))
        elif tokenFile is not None or values["publicMetrics"] or \
                values["readTokenFile"] is not None:
            raise usage.UsageError("--admin-token-file, "
                                   "--admin-read-token-file and "
                                   "--admin-public-metrics need --admin")
        token = None
        try:
            if tokenFile is not None:
                token = loadToken(tokenFile, "--admin-token-file")
            readToken = loadReadToken(values["readTokenFile"], token,
                                      "--admin-read-token-file",
                                      "--admin-token-file")
        except ValueError as e:
            raise usage.UsageError(str(e))
        readTokenFile = values["readTokenFile"]
        # (Absolute: read again on SIGHUP, after twistd may have changed
        # directory.)
        return OperatorSettings(endpoint, token, values["publicMetrics"],
                                values["maxBody"], values["logFormat"],
                                values["summaryInterval"], readToken,
                                tokenFile and os.path.abspath(tokenFile),
                                readTokenFile and os.path.abspath(readTokenFile),
                                ("--admin-token-file",
                                 "--admin-read-token-file"),
                                values["maxConnections"],
                                values["requestTimeout"])


def checkAdminEndpoint(description, where):
    """
    Raise L{usage.UsageError} naming C{where} unless C{description} is a
    server endpoint string Twisted can parse (as listened on: see
    L{listeningDescription}).
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    try:
        serverFromString(reactor, listeningDescription(description))
    except Exception as e:
        raise usage.UsageError("%s: bad endpoint %r: %s"
                               % (where, description, e))


__all__ = ["ADMIN_SOCKET_MODE", "OperatorOptionsMixin", "OperatorSettings",
           "checkAdminEndpoint", "isUnixEndpoint", "listeningDescription",
           "loadReadToken", "loadToken"]
