"""
TLS helpers: mutual TLS for server endpoints, and a small certificate
authority for development and tests.

Twisted's C{ssl:} server endpoint string cannot require client
certificates.  The C{mio:} and C{bmp:} endpoint strings add one keyword to an
inner C{ssl:} description, C{clientCA=PATH} (a PEM file holding one or more
CA certificates, or a directory of them): every client must then present a
certificate signed by one of those CAs, or the handshake fails::

    mio:ssl:8443:privateKey=server.pem:clientCA=ca.pem

Clients present their certificate with Twisted's own C{tls:} keywords::

    mio:tls:localhost:8443:trustRoots=ca:certificate=client.pem:privateKey=client.pem

C{python -m muxframe.tls DIR [HOSTNAME...]} writes a throw-away CA, a server
certificate for the host names (default C{localhost} and C{127.0.0.1}) and a
client certificate into DIR, for trying this out (see docs/operations.md).

L{offersHTTP11} makes a twisted.web site served over TLS offer C{http/1.1}
by ALPN in the one way each Twisted release accepts (L{alpnPerConnection}).

ALPN rules of every TLS listener muxframe makes (L{tolerateALPN}, on the
C{ssl:} endpoints of the roles' listeners, of C{mio:}, C{bmp:}, C{mux:},
C{ws:} and C{wss:}, C{clientCA} ones included, and of C{capture}):

  - a client offering only protocols the listener does not speak (a
    browser, curl, a Go client with C{NextProtos}, Python's
    C{set_alpn_protocols}) completes the handshake with no protocol
    selected, as RFC 7301 lets a server choose: the multiplexed and
    XTMP listeners speak no ALPN protocol and never claim one
    (C{http/1.1} least of all);
  - a listener that offers protocols (the web sites, L{offersHTTP11})
    still selects the first of its own that the client offers, as
    Twisted does.

Why: a workaround for Twisted 26.10 (and any release whose
C{twisted.internet._sslverify} has C{protosFromProtocol}, which
L{alpnPerConnection} tests).  Its C{CertificateOptions} set an ALPN
select callback on every context they make, which answers an empty
protocol when nothing overlaps (the listener offering none included);
OpenSSL takes that as fatal, and the client gets C{tlsv1 alert internal
error}.  Twisted 24.11, our floor, sets no callback unless protocols are
offered, and its contexts are left as they are.
"""

import datetime
import ipaddress
import os
import sys

DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1")


def alpnPerConnection():
    """
    Whether this Twisted asks a server factory for its ALPN protocols on
    each connection, from a select callback it sets once on the context.

    Releases that do (C{twisted.internet._sslverify.protosFromProtocol})
    fail the TLS handshake of every client offering ALPN when the factory
    offers no protocol (the callback answers an empty protocol, which
    OpenSSL takes as fatal); older ones (24.11, our floor) set a new
    callback on the shared context for each connection of a factory that
    offers protocols, which current pyOpenSSL refuses once the context
    made its first connection.
    """
    from twisted.internet import _sslverify
    return hasattr(_sslverify, "protosFromProtocol")


def offersHTTP11(cls):
    """
    A class decorator for a twisted.web C{Site} subclass that speaks
    HTTP/1.1 only (its channel is an C{HTTPChannel}): over TLS, it offers
    C{http/1.1} by ALPN where Twisted asks per connection
    (L{alpnPerConnection}), and no ALPN at all where Twisted would set it
    on the shared context for each connection; never C{h2}.
    """
    from twisted.internet.interfaces import ILoggingContext, IProtocolFactory
    from zope.interface import implementer_only
    if alpnPerConnection():
        cls.acceptableProtocols = lambda self: [b"http/1.1"]
        return cls
    return implementer_only(IProtocolFactory, ILoggingContext)(cls)


def _selectOrNone(acceptableProtocols):
    """
    An ALPN select callback that chooses as Twisted's own does (the first
    of the listener's protocols, its factory's then C{acceptableProtocols},
    that the client offers), and selects none when nothing overlaps
    (L{OpenSSL.SSL.NO_OVERLAPPING_PROTOCOLS}) where Twisted's answers an
    empty protocol, which fails the handshake.
    """
    from OpenSSL.SSL import NO_OVERLAPPING_PROTOCOLS
    from twisted.internet._sslverify import protosFromProtocol

    def select(connection, offered):
        for protocol in protosFromProtocol(connection.get_app_data(),
                                           acceptableProtocols):
            if protocol in offered:
                return protocol
        return NO_OVERLAPPING_PROTOCOLS
    return select


def tolerateALPN(endpoint):
    """
    Make an C{ssl:} server endpoint (an C{SSL4ServerEndpoint} with
    C{CertificateOptions}, as Twisted's parser and
    L{mutualTLSServerEndpoint} make it) complete the handshake of a client
    whose ALPN offer overlaps none of the listener's protocols, selecting
    none (the module's ALPN rules); any other endpoint is left as it is.

    Only where Twisted sets its failing callback on every context
    (L{alpnPerConnection}), and only on a context it set one on: each
    context the options make gets L{_selectOrNone} in place of Twisted's
    callback, as it is made, before any connection uses it (pyOpenSSL
    refuses to change a context after that; one made already is left as
    it is).  Nothing is made sooner than Twisted makes it.

    @param endpoint: an L{IStreamServerEndpoint}.
    @return: C{endpoint}.
    """
    from twisted.internet.ssl import CertificateOptions
    # Private names, for want of public ones: the endpoint's options, and
    # where they make (and Twisted sets up) each context.
    options = getattr(endpoint, "_sslContextFactory", None)
    if not (alpnPerConnection() and isinstance(options, CertificateOptions)):
        return endpoint
    makeContext = getattr(options, "_makeContext", None)
    if makeContext is None:
        return endpoint
    protocols = tuple(getattr(options, "_acceptableProtocols", None) or ())

    def makeTolerantContext(*args, **kwargs):
        context = makeContext(*args, **kwargs)
        # pyOpenSSL's record of a select callback set: Twisted's.
        if getattr(context, "_alpn_select_callback", None) is not None:
            context.set_alpn_select_callback(_selectOrNone(protocols))
        return context

    options._makeContext = makeTolerantContext
    return endpoint


def _readPEMCertificates(path):
    """
    Return every certificate in the PEM file C{path}, or in the C{.pem} and
    C{.crt} files of the directory C{path}, as L{twisted.internet.ssl.Certificate}.
    """
    from twisted.internet.ssl import Certificate
    from cryptography import x509

    if os.path.isdir(path):
        names = sorted(
            os.path.join(path, name) for name in os.listdir(path)
            if name.endswith((".pem", ".crt")))
    else:
        names = [path]
    certificates = []
    for name in names:
        with open(name, "rb") as f:
            data = f.read()
        for cert in x509.load_pem_x509_certificates(data) if b"CERTIFICATE" in data else []:
            from cryptography.hazmat.primitives.serialization import Encoding
            certificates.append(Certificate.loadPEM(cert.public_bytes(Encoding.PEM)))
    if not certificates:
        raise ValueError("no PEM certificates found in clientCA=%s" % (path,))
    return certificates


def mutualTLSServerOptions(privateKey, certKey=None, clientCA=None,
                           extraCertChain=None, dhParameters=None):
    """
    Return server C{CertificateOptions} that require a client certificate
    signed by one of the CAs in C{clientCA}.

    @param privateKey: path of a PEM file with the server's private key
        (and its certificate, if C{certKey} is C{None}), as for C{ssl:}.
    @param certKey: path of a PEM file with the server's certificate.
    @param clientCA: path of a PEM file (or a directory of them) with the CA
        certificates that client certificates must chain to.
    @param extraCertChain: path of a PEM file with intermediate certificates.
    @param dhParameters: path of a DH parameters file.
    """
    from twisted.internet import ssl

    if not clientCA:
        raise ValueError("clientCA must name a PEM file or directory of CA certificates")
    try:
        with open(certKey or privateKey, "rb") as f:
            certPEM = f.read()
        with open(privateKey, "rb") as f:
            keyPEM = f.read()
    except OSError as e:
        raise ValueError("cannot read the server key/certificate: %s" % (e,))
    certificate = ssl.PrivateCertificate.loadPEM(certPEM + b"\n" + keyPEM)
    chain = None
    if extraCertChain is not None:
        chain = [c.original for c in _readPEMCertificates(extraCertChain)]
    kwargs = {}
    if dhParameters is not None:
        from twisted.python.filepath import FilePath
        kwargs["dhParameters"] = ssl.DiffieHellmanParameters.fromFile(FilePath(dhParameters))
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        extraCertChain=chain,
        trustRoot=ssl.trustRootFromCertificates(_readPEMCertificates(clientCA)),
        **kwargs,
    )


def mutualTLSServerEndpoint(reactor, port, privateKey="server.pem", certKey=None,
                            sslmethod=None, interface="", backlog=50,
                            extraCertChain=None, dhParameters=None, clientCA=None):
    """
    Return a TLS server endpoint (the C{ssl:} keywords, plus C{clientCA})
    that requires client certificates signed by a CA in C{clientCA}.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint

    if sslmethod is not None:
        raise ValueError("sslmethod is not supported with clientCA")
    options = mutualTLSServerOptions(
        privateKey, certKey, clientCA, extraCertChain, dhParameters)
    # What ssl: itself builds (wrapServerTLS is Twisted 26.4 and later only).
    return SSL4ServerEndpoint(reactor, int(port), options, int(backlog), interface)


def _name(commonName):
    from cryptography.x509.oid import NameOID
    from cryptography import x509
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])


def _san(hostnames):
    from cryptography import x509
    names = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _pem(key, cert):
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def writeCertificates(directory, hostnames=DEFAULT_HOSTNAMES, days=30):
    """
    Write a fresh CA and certificates signed by it into C{directory}:

      - C{ca/ca.pem}: the CA certificate (C{trustRoots=DIR/ca} for C{tls:}
        clients, C{clientCA=DIR/ca/ca.pem} for mutual-TLS servers);
      - C{server.pem}: the server's certificate and key (C{privateKey=} of
        C{ssl:}), valid for C{hostnames} (names and IP addresses);
      - C{client.pem}: a client certificate and key (C{certificate=} and
        C{privateKey=} of C{tls:});
      - C{rogue-ca.pem}, C{rogue-client.pem}: a second CA and a client
        certificate it signed, which a mutual-TLS server must refuse.

    @return: a dict of those file names to paths.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=days)

    def makeCA(commonName):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(commonName)).issuer_name(_name(commonName))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def makeLeaf(caKey, caCert, commonName, usage, hostnames=()):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(commonName)).issuer_name(caCert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                caKey.public_key()), critical=False)
        )
        if hostnames:
            builder = builder.add_extension(_san(hostnames), critical=False)
        return key, builder.sign(caKey, hashes.SHA256())

    from cryptography.hazmat.primitives import serialization
    caKey, caCert = makeCA("muxframe test CA")
    serverKey, serverCert = makeLeaf(
        caKey, caCert, hostnames[0], ExtendedKeyUsageOID.SERVER_AUTH, hostnames)
    clientKey, clientCert = makeLeaf(
        caKey, caCert, "muxframe client", ExtendedKeyUsageOID.CLIENT_AUTH)
    rogueKey, rogueCert = makeCA("rogue CA")
    rogueClientKey, rogueClientCert = makeLeaf(
        rogueKey, rogueCert, "rogue client", ExtendedKeyUsageOID.CLIENT_AUTH)

    directory = os.path.abspath(directory)
    os.makedirs(os.path.join(directory, "ca"), exist_ok=True)
    paths = {
        "ca": os.path.join(directory, "ca"),
        "ca.pem": os.path.join(directory, "ca", "ca.pem"),
        "server.pem": os.path.join(directory, "server.pem"),
        "client.pem": os.path.join(directory, "client.pem"),
        "rogue-ca.pem": os.path.join(directory, "rogue-ca.pem"),
        "rogue-client.pem": os.path.join(directory, "rogue-client.pem"),
    }
    contents = {
        "ca.pem": caCert.public_bytes(serialization.Encoding.PEM),
        "server.pem": _pem(serverKey, serverCert),
        "client.pem": _pem(clientKey, clientCert),
        "rogue-ca.pem": rogueCert.public_bytes(serialization.Encoding.PEM),
        "rogue-client.pem": _pem(rogueClientKey, rogueClientCert),
    }
    for name, data in contents.items():
        with open(paths[name], "wb") as f:
            f.write(data)
        if name.endswith("client.pem") or name == "server.pem":
            os.chmod(paths[name], 0o600)
    return paths


def main(argv=None, out=None):
    """
    C{python -m muxframe.tls DIR [HOSTNAME...]}: write development
    certificates (see L{writeCertificates}) and list them on C{out}.
    """
    argv = sys.argv[1:] if argv is None else argv
    out = sys.stdout if out is None else out
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m muxframe.tls DIR [HOSTNAME...]", file=sys.stderr)
        return 2
    paths = writeCertificates(argv[0], tuple(argv[1:]) or DEFAULT_HOSTNAMES)
    for name in sorted(paths):
        print("%-17s %s" % (name, paths[name]), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
