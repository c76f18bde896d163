"""
Tests for L{muxframe.endpointstrings} and the plugin that registers it: the
C{mio:}, C{bmp:} and C{mux:} endpoint strings.
"""

import os
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.interfaces import (
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint
from muxframe.endpointstrings import (
    mioClientParser,
    mioServerParser,
    unparseEndpoint,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PluginTests(SynchronousTestCase):
    """
    The plugin is discoverable and cheap to import.
    """

    def test_parsersRegistered(self):
        """
        C{mio}, C{bmp} and C{mux} server and client parsers are found by
        Twisted's plugin system.
        """
        servers = {p.prefix for p in getPlugins(IStreamServerEndpointStringParser)}
        clients = {p.prefix for p in getPlugins(IStreamClientEndpointStringParserWithReactor)}
        for prefix in ("mio", "bmp", "mux"):
            self.assertIn(prefix, servers)
            self.assertIn(prefix, clients)

    def test_importDoesNotImportReactor(self):
        """
        Importing the plugin module (and so the parsers) in a fresh
        interpreter does not import C{twisted.internet.reactor}.
        """
        code = (
            "import sys\n"
            "import twisted.plugins.muxframe_plugin as p\n"
            "assert p.mioServerParser.prefix == 'mio'\n"
            "print('twisted.internet.reactor' in sys.modules,"
            " 'OpenSSL' in sys.modules)\n"
        )
        env = dict(os.environ, PYTHONPATH=REPO)
        output = subprocess.check_output(
            [sys.executable, "-c", code], env=env, cwd=REPO, timeout=60)
        self.assertEqual(output.split(), [b"False", b"False"])


class ServerStringTests(SynchronousTestCase):
    """
    Server endpoint strings.
    """

    def test_mioTCP(self):
        """
        C{mio:tcp:9000} wraps C{tcp:9000} with MIO framing.
        """
        endpoint = serverFromString(reactor, "mio:tcp:9000:interface=127.0.0.1")
        self.assertIsInstance(endpoint, MultiplexedServerEndpoint)
        self.assertEqual(endpoint.framing, "mio")
        self.assertIsInstance(endpoint.inner, TCP4ServerEndpoint)
        self.assertEqual(endpoint.inner._port, 9000)
        self.assertEqual(endpoint.inner._interface, "127.0.0.1")

    def test_bmpSSLWithSettings(self):
        """
        Settings are camelCase keywords, taken out before the inner parser.
        """
        from muxframe.tls import writeCertificates
        paths = writeCertificates(self.mktemp())
        endpoint = serverFromString(
            reactor, "bmp:ssl:8443:privateKey=%s:maxStreams=500:maxInFlight=4"
            % (paths["server.pem"],))
        self.assertEqual(endpoint.framing, "bmp")
        self.assertIsInstance(endpoint.inner, SSL4ServerEndpoint)
        self.assertEqual(endpoint.settings["maxStreams"], 500)
        self.assertEqual(endpoint.settings["maxInFlight"], 4)

    def test_flowSettings(self):
        """
        maxWindowSize (MIO) and maxBytesInFlight (BMP) are keywords like the
        other settings, validated.
        """
        endpoint = serverFromString(
            reactor, "mio:tcp:9000:maxWindowSize=4194304:maxBytesInFlight=1048576")
        self.assertEqual(endpoint.settings["maxWindowSize"], 4194304)
        self.assertEqual(endpoint.settings["maxBytesInFlight"], 1048576)
        e = self.assertRaises(
            ValueError, serverFromString, reactor, "bmp:tcp:9000:maxBytesInFlight=10")
        self.assertIn("maxBytesInFlight", str(e))

    def test_muxFraming(self):
        """
        C{mux:} takes the framing as a keyword.
        """
        endpoint = serverFromString(reactor, "mux:tcp:9000:framing=bmp")
        self.assertEqual(endpoint.framing, "bmp")

    def test_unknownFraming(self):
        """
        An unknown framing is a ValueError naming it.
        """
        e = self.assertRaises(
            ValueError, serverFromString, reactor, "mux:tcp:9000:framing=spdy")
        self.assertIn("unknown framing 'spdy'", str(e))

    def test_badNumber(self):
        """
        A bad setting value is a ValueError naming the setting.
        """
        e = self.assertRaises(
            ValueError, serverFromString, reactor, "mio:tcp:9000:maxStreams=lots")
        self.assertIn("maxStreams", str(e))
        e = self.assertRaises(
            ValueError, serverFromString, reactor, "mio:tcp:9000:windowSize=1")
        self.assertIn("windowSize", str(e))
        self.assertIn("out of range", str(e))

    def test_badInner(self):
        """
        A bad inner endpoint is a ValueError naming it.
        """
        e = self.assertRaises(ValueError, serverFromString, reactor, "mio:nosuch:9000")
        self.assertIn("bad inner endpoint 'nosuch:9000'", str(e))
        e = self.assertRaises(ValueError, serverFromString, reactor, "mio:tcp:port")
        self.assertIn("'port' is not a port number", str(e))
        e = self.assertRaises(ValueError, serverFromString, reactor, "mio:tcp:9000:maxStream=5")
        self.assertIn("maxStream", str(e))
        e = self.assertRaises(ValueError, serverFromString, reactor, "mio:")
        self.assertIn("needs an inner endpoint", str(e))

    def test_clientCA(self):
        """
        C{clientCA} (mutual TLS) is accepted on C{ssl:} only and must name
        readable CA certificates.
        """
        from muxframe.tls import writeCertificates
        paths = writeCertificates(self.mktemp())
        endpoint = serverFromString(
            reactor, "mio:ssl:0:privateKey=%s:clientCA=%s"
            % (paths["server.pem"], paths["ca.pem"]))
        self.assertIsInstance(endpoint, MultiplexedServerEndpoint)
        e = self.assertRaises(
            ValueError, serverFromString, reactor, "mio:tcp:0:clientCA=%s" % (paths["ca.pem"],))
        self.assertIn("clientCA needs an inner ssl:", str(e))
        e = self.assertRaises(
            ValueError, serverFromString, reactor,
            "mio:ssl:0:privateKey=%s:clientCA=/nonexistent" % (paths["server.pem"],))
        self.assertIn("/nonexistent", str(e))

    def test_parserDirectly(self):
        """
        The parser objects work without the plugin system.
        """
        endpoint = mioServerParser.parseStreamServer(reactor, "tcp", "9001")
        self.assertEqual(endpoint.inner._port, 9001)


class ClientStringTests(SynchronousTestCase):
    """
    Client endpoint strings.
    """

    def test_mioTCP(self):
        """
        C{mio:tcp:localhost:9000} wraps a TCP client endpoint; client
        keywords are taken out.
        """
        endpoint = clientFromString(
            reactor, "mio:tcp:localhost:9000:maxStreams=500:connectTimeout=2.5:retryMax=4")
        self.assertIsInstance(endpoint, MultiplexedClientEndpoint)
        self.assertEqual(endpoint.framing, "mio")
        self.assertEqual(endpoint.settings["maxStreams"], 500)
        self.assertEqual(endpoint.connectTimeout, 2.5)

    def test_tlsClient(self):
        """
        C{mio:tls:localhost:8443:trustRoots=DIR} wraps Twisted's TLS client
        endpoint (hostname-verifying).
        """
        from muxframe.tls import writeCertificates
        paths = writeCertificates(self.mktemp())
        endpoint = clientFromString(
            reactor, "bmp:tls:localhost:8443:trustRoots=%s:certificate=%s:privateKey=%s"
            % (paths["ca"], paths["client.pem"], paths["client.pem"]))
        self.assertEqual(endpoint.framing, "bmp")
        # Twisted's tls: endpoint is a TLS wrapper around a HostnameEndpoint.
        self.assertEqual(
            type(endpoint.inner._wrappedEndpoint).__name__, "HostnameEndpoint")

    def test_badStrings(self):
        """
        Faults in client strings are ValueErrors naming them.
        """
        cases = [
            ("mux:tcp:localhost:9000:framing=x", "unknown framing"),
            ("mio:tcp:localhost:9000:connectTimeout=-1", "connectTimeout"),
            ("mio:tcp:localhost:9000:maxFrameSize=12", "maxFrameSize"),
            ("bmp:tcp:localhost:notaport", "'notaport' is not a port number"),
            ("bmp:", "needs an inner endpoint"),
            ("mio:tcp:localhost:9000:maxStreamBuffer=5", "replaced by maxStreamSendBuffer"),
        ]
        for description, fault in cases:
            e = self.assertRaises(ValueError, clientFromString, reactor, description)
            self.assertIn(fault, str(e), description)

    def test_parserDirectly(self):
        """
        The client parser object works without the plugin system.
        """
        endpoint = mioClientParser.parseStreamClient(reactor, "tcp", "localhost", "9")
        self.assertIsInstance(endpoint, MultiplexedClientEndpoint)


class FaultNamingTests(SynchronousTestCase):
    """
    Every bad TLS option and every misplaced endpoint gets an error naming
    the fault, not Twisted's TypeError, UnlistableError or OpenSSL's
    "unsupported".
    """

    def setUp(self):
        from muxframe.tls import writeCertificates
        self.paths = paths = writeCertificates(self.mktemp())
        with open(paths["server.pem"], "rb") as f:
            pem = f.read()
        start = pem.index(b"-----BEGIN PRIVATE KEY")
        self.certOnly = os.path.join(os.path.dirname(paths["server.pem"]), "cert-only.pem")
        self.keyOnly = os.path.join(os.path.dirname(paths["server.pem"]), "key-only.pem")
        with open(self.certOnly, "wb") as f:
            f.write(pem[:start])
        with open(self.keyOnly, "wb") as f:
            f.write(pem[start:])
        self.empty = self.mktemp()
        os.makedirs(self.empty)

    def assertFault(self, parse, description, *texts):
        e = self.assertRaises(ValueError, parse, reactor, description)
        for text in texts:
            self.assertIn(text, str(e), description)
        self.assertNotIn("TypeError", str(e))
        return e

    def test_trustRoots(self):
        """
        A missing trustRoots, a file instead of a directory, a directory
        without certificates and one that cannot be listed are each named.
        """
        base = "mio:tls:localhost:8443:trustRoots="
        self.assertFault(clientFromString, base + "/nonexistent/ca",
                         "trustRoots=/nonexistent/ca: no such directory")
        self.assertFault(clientFromString, base + self.paths["ca.pem"],
                         "is a file", "directory of PEM CA certificates")
        self.assertFault(clientFromString, base + self.empty,
                         "holds no readable *.pem file with a CA certificate")
        import muxframe.endpointcheck as check

        def unlistable(path):
            raise PermissionError(13, "Permission denied")

        self.patch(check.os, "listdir", unlistable)
        self.assertFault(clientFromString, base + self.paths["ca"],
                         "cannot be listed: Permission denied")

    def test_keyFiles(self):
        """
        A key file holding only a certificate, a certificate file without a
        key, and a missing file are named, for servers and clients.
        """
        self.assertFault(serverFromString, "mio:ssl:8443:privateKey=" + self.certOnly,
                         "privateKey=%s holds only a certificate" % (self.certOnly,))
        self.assertFault(serverFromString, "bmp:ssl:8443:privateKey=" + self.keyOnly,
                         "holds a private key but no certificate", "certKey=")
        self.assertFault(serverFromString, "mio:ssl:8443:privateKey=/nonexistent.pem",
                         "privateKey=/nonexistent.pem: no such file")
        endpoint = serverFromString(
            reactor, "mio:ssl:8443:privateKey=%s:certKey=%s" % (self.keyOnly, self.certOnly))
        self.assertEqual(endpoint.framing, "mio")
        self.assertFault(
            clientFromString, "mio:tls:localhost:1:trustRoots=%s:certificate=%s"
            % (self.paths["ca"], self.certOnly), "holds no private key")
        self.assertFault(
            clientFromString, "mio:tls:localhost:1:certificate=%s:privateKey=%s"
            % (self.certOnly, self.certOnly), "holds only a certificate")
        self.assertFault(
            serverFromString, "mio:ssl:0:privateKey=%s:clientCA=%s"
            % (self.paths["server.pem"], self.keyOnly),
            "clientCA=%s holds a private key but no certificate" % (self.keyOnly,))

    def test_clientWithoutPort(self):
        """
        A client endpoint missing its port (once a TypeError about
        TCP4ClientEndpoint.__init__) or its host is named.
        """
        self.assertFault(clientFromString, "mio:tcp:localhost",
                         "'tcp:localhost' names no port", "tcp:HOST:PORT")
        self.assertFault(clientFromString, "bmp:tls:localhost", "names no port")
        self.assertFault(clientFromString, "mio:tcp:9000",
                         "names a port but no host", "is a server endpoint")

    def test_serverGivenClientString(self):
        """
        A client description where a server one belongs is named as such.
        """
        self.assertFault(serverFromString, "mio:tcp:localhost:7000",
                         "looks like a client endpoint",
                         "tcp:7000:interface=localhost")


class UnparseTests(SynchronousTestCase):
    """
    L{unparseEndpoint} quotes what the Twisted parser unquotes.
    """

    def test_quoting(self):
        """
        Colons, equals signs and backslashes survive a round trip.
        """
        description = unparseEndpoint(("unix", "/tmp/a:b"), {"mode": "6=6"})
        self.assertEqual(description, "unix:/tmp/a\\:b:mode=6\\=6")


class UnparsePropertyTests(SynchronousTestCase):
    """
    Whatever the arguments, L{unparseEndpoint} gives a description that
    Twisted's own parser splits back into the same arguments, so the inner
    endpoint sees exactly what the user wrote.
    """

    def test_roundTrip(self):
        """
        Arbitrary printable arguments and keywords (with C{:}, C{=} and
        backslashes) survive quoting.
        """
        from hypothesis import given, settings, strategies as st
        from twisted.internet.endpoints import _parse

        text = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                       max_size=12)
        keys = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                       min_size=1, max_size=8)

        @settings(max_examples=200, deadline=None)
        @given(st.lists(text, min_size=1, max_size=4), st.dictionaries(keys, text, max_size=3))
        def check(args, kwargs):
            args = [a for a in args if "=" not in a] or ["tcp"]
            parsed = _parse(unparseEndpoint(args, kwargs))
            self.assertEqual(parsed, (args, kwargs))

        check()
