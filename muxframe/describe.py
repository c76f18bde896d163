"""
Text for logs and errors: addresses and endpoints as the endpoint strings an
operator writes (C{tcp:127.0.0.1:9000}), never as object reprs, and
connection failures (TLS ones above all) with their cause first.

Endpoints built from strings keep their string (the C{description}
attribute the C{mio:}/C{bmp:} parsers and the twistd roles set); for others
the common Twisted endpoints are recognised by their documented shape.
"""

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address, UNIXAddress


def addressText(address):
    """
    Return C{address} as an endpoint string: C{tcp:HOST:PORT},
    C{tcp6:[HOST]:PORT}, C{unix:PATH}; a stream's address is its
    connection's followed by C{#} and the stream id.
    """
    if address is None:
        return "?"
    streamId = getattr(address, "streamId", None)
    if streamId is not None and hasattr(address, "address"):
        if isinstance(streamId, bytes):
            streamId = streamId.decode("ascii", "replace")
        return "%s#%s" % (addressText(address.address), streamId)
    if isinstance(address, IPv4Address):
        return "%s:%s:%s" % (address.type.lower(), address.host, address.port)
    if isinstance(address, IPv6Address):
        kind = "tcp6" if address.type == "TCP" else address.type.lower() + "6"
        return "%s:[%s]:%s" % (kind, address.host, address.port)
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return "unix:%s" % (name or "(unnamed)",)
    if isinstance(address, HostnameAddress):
        hostname = address.hostname
        if isinstance(hostname, bytes):
            hostname = hostname.decode("ascii", "replace")
        return "tcp:%s:%s" % (hostname, address.port)
    return str(address)


def splitDescription(description):
    """
    Split an endpoint description at its unescaped colons.
    """
    parts, current, escaped = [], [], False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def briefDescription(description):
    """
    Return an endpoint description without its options: the type and its
    positional arguments (and C{host}, C{port}, C{path} given as keywords),
    as logs name an endpoint: C{tls:localhost:8443}, not its key files.
    """
    kept = []
    for part in splitDescription(description):
        key, equals, value = part.partition("=")
        if not equals or key in ("host", "port", "path"):
            kept.append(part)
    return ":".join(kept)


def endpointText(endpoint):
    """
    Return C{endpoint} as the endpoint string it was made from, or as close
    to one as its type allows (C{tcp:localhost:9000}, C{tls:localhost:8443}).
    """
    description = getattr(endpoint, "description", None)
    if isinstance(description, str) and description:
        return briefDescription(description)
    name = type(endpoint).__name__
    attrs = getattr(endpoint, "__dict__", {})
    host, port = attrs.get("_host"), attrs.get("_port")
    if name in ("TCP4ClientEndpoint", "TCP6ClientEndpoint") and port is not None:
        return "tcp:%s:%s" % (host, port)
    if name == "SSL4ClientEndpoint" and port is not None:
        return "ssl:%s:%s" % (host, port)
    if name == "HostnameEndpoint":
        host = attrs.get("_hostText") or attrs.get("_hostStr")
        if host is not None and port is not None:
            return "tcp:%s:%s" % (host, port)
    if name == "UNIXClientEndpoint" and attrs.get("_path") is not None:
        return "unix:%s" % (attrs["_path"],)
    if name in ("TCP4ServerEndpoint", "TCP6ServerEndpoint") and port is not None:
        interface = attrs.get("_interface")
        return "tcp:%s%s" % (port, ":interface=%s" % (interface,) if interface else "")
    if name == "SSL4ServerEndpoint" and port is not None:
        return "ssl:%s" % (port,)
    if name == "UNIXServerEndpoint" and attrs.get("_address") is not None:
        return "unix:%s" % (attrs["_address"],)
    wrapped = attrs.get("_wrappedEndpoint")
    if wrapped is not None:
        inner = endpointText(wrapped)
        for plain, secure in (("tcp:", "tls:"), ("unix:", "tls+unix:")):
            if inner.startswith(plain):
                return secure + inner[len(plain):]
        return "tls over " + inner
    inner = attrs.get("inner")
    if inner is not None and hasattr(endpoint, "framing"):
        return "%s:%s" % (endpoint.framing, endpointText(inner))
    return name


def _opensslReasons(value):
    """
    The reasons of an OpenSSL error (a list of (library, function, reason)
    tuples in its first argument), or C{None}.
    """
    args = getattr(value, "args", None)
    if args and isinstance(args[0], list) and args[0] and isinstance(args[0][0], tuple):
        return [str(item[-1]) for item in args[0] if item and item[-1]]
    return None


# What OpenSSL's reasons mean for an operator, the cause first.
_TLS_CAUSES = (
    ("certificate verify failed", "the peer's certificate is not trusted "
     "(not signed by a CA in trustRoots, expired or not yet valid)"),
    ("unknown ca", "the peer does not trust our certificate's CA"),
    ("certificate required", "the peer requires a client certificate "
     "and none was given"),
    ("peer did not return a certificate", "the client sent no certificate "
     "and this server requires one (clientCA)"),
    ("bad certificate", "the peer rejected our certificate"),
    ("certificate expired", "a certificate has expired"),
    ("wrong version number", "the peer did not answer in TLS "
     "(a plain tcp: server, or another protocol?)"),
    ("packet length too long", "the peer did not answer in TLS "
     "(a plain tcp: server, or another protocol?)"),
    ("record layer failure", "the peer did not answer in TLS "
     "(a plain tcp: server, or another protocol?)"),
    ("http request", "the peer sent an HTTP request, not TLS"),
    ("no shared cipher", "no cipher or protocol version in common"),
    ("unsupported protocol", "no TLS version in common"),
)


def tlsCause(reason):
    """
    Return an operator's sentence for a TLS failure (a L{Failure} or an
    exception), the cause first and OpenSSL's words after it; C{None} if
    it is no TLS failure.
    """
    value = getattr(reason, "value", reason)
    name = type(value).__name__
    if name == "VerificationError":
        errors = getattr(value, "errors", None) or []
        names = []
        for error in errors:
            mismatched = getattr(error, "mismatched_id", None)
            hostname = getattr(mismatched, "hostname", None) or getattr(
                mismatched, "ip", None)
            if isinstance(hostname, bytes):
                hostname = hostname.decode("ascii", "replace")
            if hostname is not None:
                names.append(str(hostname))
        if names:
            return ("the peer's certificate does not name %s "
                    "(hostname verification failed)" % (", ".join(names),))
        return "the peer's certificate does not match (%s)" % (value,)
    reasons = _opensslReasons(value)
    if reasons is None:
        return None
    text = "; ".join(reasons)
    for needle, cause in _TLS_CAUSES:
        if needle in text:
            return "%s [OpenSSL: %s]" % (cause, text)
    return "TLS error [OpenSSL: %s]" % (text,)


def isVerificationFailure(reason):
    """
    True if C{reason} is a TLS failure about certificates (either side's
    verification), as opposed to a transport failure.
    """
    value = getattr(reason, "value", reason)
    if type(value).__name__ == "VerificationError":
        return True
    reasons = _opensslReasons(value)
    if not reasons:
        return False
    text = "; ".join(reasons)
    return any(word in text for word in (
        "certificate", "unknown ca", "verify"))


def reasonText(reason):
    """
    A short text for a connection failure or loss (a L{Failure}, an
    exception, or C{None}); TLS failures by their cause.
    """
    if reason is None:
        return "unknown reason"
    tls = tlsCause(reason)
    if tls is not None:
        return tls
    value = getattr(reason, "value", reason)
    if hasattr(reason, "getErrorMessage"):
        return reason.getErrorMessage()
    return str(value) or type(value).__name__


__all__ = ["addressText", "briefDescription", "endpointText", "splitDescription", "isVerificationFailure", "reasonText", "tlsCause"]
