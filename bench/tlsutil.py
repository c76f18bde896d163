"""
A self-signed certificate for the TLS runs (the HTTP/2 baseline needs TLS
with ALPN h2: Twisted's HTTP/2 server does not speak cleartext h2c), made at
run time with C{cryptography}.
"""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOSTNAME = "localhost"


def makeCertificate(directory):
    """
    Write C{key.pem} and C{cert.pem} (EC P-256, self-signed for localhost
    and 127.0.0.1) into C{directory}; return their paths.
    """
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(HOSTNAME),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath = os.path.join(directory, "key.pem")
    certPath = os.path.join(directory, "cert.pem")
    with open(keyPath, "wb") as f:
        f.write(key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ))
    with open(certPath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


def serverOptions(directory, protocols=None):
    """
    Return Twisted server TLS options for the certificate in C{directory}
    (ALPN C{protocols}, e.g. C{[b"h2"]}).
    """
    from twisted.internet import ssl
    with open(os.path.join(directory, "key.pem"), "rb") as f:
        keyPem = f.read()
    with open(os.path.join(directory, "cert.pem"), "rb") as f:
        certPem = f.read()
    certificate = ssl.PrivateCertificate.loadPEM(keyPem + certPem)
    kwargs = {}
    if protocols:
        kwargs["acceptableProtocols"] = protocols
    return ssl.CertificateOptions(privateKey=certificate.privateKey.original,
                                  certificate=certificate.original, **kwargs)


def clientOptions(directory, protocols=None):
    """
    Return Twisted client TLS options trusting the certificate in
    C{directory}.
    """
    from twisted.internet import ssl
    with open(os.path.join(directory, "cert.pem"), "rb") as f:
        root = ssl.Certificate.loadPEM(f.read())
    kwargs = {}
    if protocols:
        kwargs["acceptableProtocols"] = protocols
    return ssl.optionsForClientTLS(HOSTNAME, trustRoot=root, **kwargs)
