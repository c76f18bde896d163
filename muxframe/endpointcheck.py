"""
Checks of endpoint descriptions that name the fault before Twisted's parsers
fail with something less helpful (a C{TypeError} about
C{TCP4ClientEndpoint.__init__}, an C{UnlistableError} with no text, an
OpenSSL "unsupported" for a key file that holds only a certificate).

Rules:

  - A client description needs where to connect: C{tcp:} and C{tls:} a
    host and a port, C{unix:} a path.
  - A server description needs where to listen: C{tcp:} and C{ssl:} a port
    number first; C{tcp:localhost:7000} (a host, then a port) is a client
    description given where a server one belongs, and is named so.
  - TLS files are checked for what they must hold: C{trustRoots} a
    listable directory with at least one C{.pem} CA certificate;
    C{privateKey} a private key; C{certificate} and C{certKey} a
    certificate; C{clientCA} and C{caCertsDir} certificates.

Each check raises C{ValueError} naming the keyword, the path and the fault.
Nothing here imports the reactor.
"""

import os

from .describe import splitDescription


def _unescape(text):
    out, escaped = [], False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def parseDescription(description):
    """
    Split an endpoint description into C{(args, kwargs)}, unescaped, as
    Twisted's own parser does.
    """
    args, kwargs = [], {}
    for part in splitDescription(description):
        key, equals, value = part.partition("=")
        if equals and "\\" not in key:
            kwargs[_unescape(key)] = _unescape(value)
        else:
            args.append(_unescape(part))
    return args, kwargs


def _read(keyword, path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ValueError("%s=%s: no such file" % (keyword, path))
    except IsADirectoryError:
        raise ValueError("%s=%s is a directory, not a PEM file" % (keyword, path))
    except OSError as e:
        raise ValueError("%s=%s cannot be read: %s" % (keyword, path, e.strerror or e))


def _checkKey(keyword, path):
    data = _read(keyword, path)
    if b"PRIVATE KEY-----" not in data:
        if b"CERTIFICATE-----" in data:
            raise ValueError(
                "%s=%s holds only a certificate, no private key: name the key's "
                "file here (and the certificate with certKey= or certificate=), "
                "or one PEM file holding both" % (keyword, path))
        raise ValueError("%s=%s holds no PEM private key" % (keyword, path))
    return data


def _checkCertificate(keyword, path):
    data = _read(keyword, path)
    if b"BEGIN CERTIFICATE-----" not in data:
        if b"PRIVATE KEY-----" in data:
            raise ValueError("%s=%s holds a private key but no certificate"
                             % (keyword, path))
        raise ValueError("%s=%s holds no PEM certificate" % (keyword, path))
    return data


def checkTrustRoots(keyword, path, suffixes=(".pem",)):
    """
    C{path} must be a listable directory with at least one C{.pem} file
    (or a file with another of C{suffixes}) holding a certificate: what
    Twisted's C{tls:} C{trustRoots} loads.
    """
    if not os.path.exists(path):
        raise ValueError("%s=%s: no such directory" % (keyword, path))
    if not os.path.isdir(path):
        raise ValueError(
            "%s=%s is a file; %s takes a directory of PEM CA certificates "
            "(*.pem): put the file in a directory of its own and name that"
            % (keyword, path, keyword))
    try:
        names = os.listdir(path)
    except OSError as e:
        raise ValueError("%s=%s cannot be listed: %s" % (keyword, path, e.strerror or e))
    for name in sorted(names):
        if not name.lower().endswith(suffixes):
            continue
        try:
            with open(os.path.join(path, name), "rb") as f:
                if b"BEGIN CERTIFICATE-----" in f.read():
                    return
        except OSError:
            continue
    raise ValueError(
        "%s=%s holds no readable *.pem file with a CA certificate, so no "
        "server certificate could be verified" % (keyword, path))


def checkCertificateFiles(kwargs, server):
    """
    Check the TLS file keywords of a C{tls:}/C{ssl:} description.
    """
    if server:
        key = kwargs.get("privateKey", "server.pem")
        keyData = _checkKey("privateKey", key)
        certKey = kwargs.get("certKey")
        if certKey is not None:
            _checkCertificate("certKey", certKey)
        elif b"BEGIN CERTIFICATE-----" not in keyData:
            raise ValueError(
                "privateKey=%s holds a private key but no certificate: add the "
                "certificate to it, or name its file with certKey=" % (key,))
        if "extraCertChain" in kwargs:
            _checkCertificate("extraCertChain", kwargs["extraCertChain"])
        return
    certificate = kwargs.get("certificate") or kwargs.get("certKey")
    key = kwargs.get("privateKey")
    if certificate is not None:
        keyword = "certificate" if "certificate" in kwargs else "certKey"
        data = _checkCertificate(keyword, certificate)
        if key is None and b"PRIVATE KEY-----" not in data:
            raise ValueError(
                "%s=%s holds no private key: add it to the file or name its file "
                "with privateKey=" % (keyword, certificate))
    if key is not None:
        if certificate is None:
            raise ValueError("privateKey=%s needs certificate= (the client "
                             "certificate it belongs to)" % (key,))
        _checkKey("privateKey", key)
    if "trustRoots" in kwargs:
        checkTrustRoots("trustRoots", kwargs["trustRoots"])
    if "caCertsDir" in kwargs:
        checkTrustRoots("caCertsDir", kwargs["caCertsDir"])


def checkClientCA(path):
    """
    C{clientCA} (mutual TLS) names a PEM file of CA certificates or a
    directory of them.
    """
    if os.path.isdir(path):
        checkTrustRoots("clientCA", path, (".pem", ".crt"))
    else:
        _checkCertificate("clientCA", path)


def _isPort(text):
    return text.isdigit() and 0 <= int(text) <= 65535


def _parsed(description, example):
    args, kwargs = parseDescription(description)
    if not args or not args[0]:
        raise ValueError("%r names no endpoint type (e.g. %s)" % (description, example))
    return args[0], args, kwargs


def _checkUnix(description, args, kwargs, keyword):
    if len(args) < 2 and keyword not in kwargs:
        raise ValueError("%r names no socket path: unix:PATH" % (description,))


def checkClientDescription(description):
    """
    Check a client endpoint description; raise C{ValueError} naming the
    fault.
    """
    kind, args, kwargs = _parsed(description, "tcp:HOST:PORT")
    if kind in ("tcp", "tls", "ssl"):
        host = args[1] if len(args) > 1 else kwargs.get("host")
        port = args[2] if len(args) > 2 else kwargs.get("port")
        if host is not None and port is None and _isPort(host):
            raise ValueError(
                "%r names a port but no host: a client endpoint connects to "
                "%s:HOST:PORT (e.g. %s:localhost:%s); %s:PORT is a server "
                "endpoint, one that listens" % (description, kind, kind, host, kind))
        if host is None:
            raise ValueError("%r names no host: a client endpoint is %s:HOST:PORT"
                             % (description, kind))
        if port is None:
            raise ValueError("%r names no port: a client endpoint is %s:HOST:PORT "
                             "(e.g. %s:%s:9000)" % (description, kind, kind, host))
        if not _isPort(port):
            raise ValueError("%r: the port %r is not a port number" % (description, port))
        if kind in ("tls", "ssl"):
            checkCertificateFiles(kwargs, server=False)
    elif kind == "unix":
        _checkUnix(description, args, kwargs, "path")


def checkServerDescription(description):
    """
    Check a server endpoint description; raise C{ValueError} naming the
    fault.
    """
    kind, args, kwargs = _parsed(description, "tcp:PORT")
    if kind in ("tcp", "ssl", "tcp6"):
        port = args[1] if len(args) > 1 else kwargs.get("port")
        if port is None:
            raise ValueError("%r names no port: a server endpoint is %s:PORT"
                             % (description, kind))
        if not _isPort(port):
            if len(args) > 2 and _isPort(args[2]):
                raise ValueError(
                    "%r looks like a client endpoint (a host, then a port): a "
                    "server endpoint names the port to listen on, with the "
                    "address as interface=, e.g. %s:%s:interface=%s"
                    % (description, kind, args[2], port))
            raise ValueError("%r: the port %r is not a port number" % (description, port))
        if kind == "ssl":
            checkCertificateFiles(kwargs, server=True)
            if "clientCA" in kwargs:
                checkClientCA(kwargs["clientCA"])
    elif kind == "unix":
        _checkUnix(description, args, kwargs, "address")


__all__ = ["checkClientCA", "checkClientDescription", "checkServerDescription",
           "checkTrustRoots",
           "parseDescription"]
