"""
Which browser origins may open a WebSocket: the rules, with no Twisted.

Rules (checked in this order):

 1. A request with no C{Origin} header is not from a browser page: allowed
    (Python, Node and other programs authenticate at the XTMP layer).
 2. The origin C{null} (a file: page, a sandboxed frame) is refused unless
    the policy lists C{null}.
 3. A page served by this very endpoint (the origin's scheme, host and
    port are the request's own: C{http} for C{ws}, C{https} for C{wss}, and
    the C{Host} header's host and port) is allowed unless the policy was
    built with C{sameOrigin=False}.
 4. Otherwise the origin must match an entry of the list: C{*} (any),
    C{scheme://host[:port]} exactly (the port defaults to 80 for http and
    443 for https), or C{scheme://*.domain[:port]} (any subdomain, not the
    domain itself).

Comparison is on the normalised C{(scheme, host, port)} triple, host in
lower case, so C{https://Example.com} and C{https://example.com:443} are
the same origin.
"""

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginError(ValueError):
    """
    An allowed-origins entry that is not an origin.
    """


def parseOrigin(text):
    """
    Split an origin into C{(scheme, host, port)}; C{"null"} for C{null}.

    @raise OriginError: if C{text} is not C{scheme://host[:port]}.
    """
    text = text.strip()
    if text.lower() == "null":
        return "null"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise OriginError("bad origin %r: %s" % (text, e))
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or \
            parts.path not in ("", "/") or parts.query or parts.fragment \
            or parts.username is not None:
        raise OriginError("bad origin %r: expected http(s)://host[:port]"
                          % (text,))
    if port is None:
        port = DEFAULT_PORTS[scheme]
    return scheme, parts.hostname.lower(), port


def _hostPort(host, secure):
    """
    Split a C{Host} header into C{(host, port)}.
    """
    scheme = "https" if secure else "http"
    try:
        parts = urlsplit("%s://%s" % (scheme, host))
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


class OriginPolicy:
    """
    An allowed-origins list.

    @param allowed: origins (strings) as in the module's rules; C{"*"}
        allows every origin.
    @param sameOrigin: allow pages served by the endpoint itself.
    @raise OriginError: on an entry that is not an origin.
    """

    def __init__(self, allowed=(), sameOrigin=True):
        self.allowAny = False
        self.allowNull = False
        self.sameOrigin = sameOrigin
        self._exact = set()
        self._suffixes = []
        for entry in allowed:
            entry = entry.strip()
            if not entry:
                continue
            if entry == "*":
                self.allowAny = True
                continue
            wildcard = "://*." in entry
            parsed = parseOrigin(entry.replace("://*.", "://wildcard.", 1)
                                 if wildcard else entry)
            if parsed == "null":
                self.allowNull = True
            elif wildcard:
                scheme, host, port = parsed
                self._suffixes.append(
                    (scheme, host[len("wildcard"):], port))
            else:
                self._exact.add(parsed)
        self.allowed = tuple(e.strip() for e in allowed if e.strip())

    @classmethod
    def fromString(cls, text, sameOrigin=True):
        """
        Build a policy from a comma-separated list.
        """
        return cls([e for e in text.split(",") if e.strip()], sameOrigin)

    def check(self, origin, host=None, secure=False):
        """
        Whether a WebSocket request may proceed.

        @param origin: the request's C{Origin} header (L{None} if absent).
        @param host: the request's C{Host} header.
        @param secure: whether the request came over TLS.
        @return: C{(allowed, why)}; C{why} names the rule that decided.
        """
        if origin is None:
            return True, "no Origin header (not a browser page)"
        try:
            parsed = parseOrigin(origin)
        except OriginError:
            return False, "malformed Origin %r" % (origin,)
        if parsed == "null":
            if self.allowNull or self.allowAny:
                return True, "null origin listed"
            return False, "null origin not allowed"
        if self.allowAny:
            return True, "every origin allowed"
        scheme, hostName, port = parsed
        if self.sameOrigin and host is not None:
            own = _hostPort(host, secure)
            if own is not None and own == (hostName, port) and \
                    scheme == ("https" if secure else "http"):
                return True, "same origin"
        if parsed in self._exact:
            return True, "listed"
        for sScheme, suffix, sPort in self._suffixes:
            if scheme == sScheme and port == sPort and \
                    hostName.endswith(suffix) and len(hostName) > len(suffix):
                return True, "listed (wildcard)"
        return False, "origin %s not in the allowed list" % (origin,)
