"""
Tests for L{muxframe.sniff}: a peer that does not speak the framing gets a
protocol error saying what its bytes look like, on either side, for both
framings.
"""

from OpenSSL import SSL

from twisted.trial.unittest import SynchronousTestCase

from muxframe.bmp import BmpEngine
from muxframe.events import ConnectionTerminated
from muxframe.mio import MioEngine
from muxframe.sniff import lookalike

ENGINES = {"mio": MioEngine, "bmp": BmpEngine}

HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
HTTP_RESPONSE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
MIO_OPEN_AND_DATA = bytes.fromhex("000000010400000c" "0000000100000501") + b"hello"
BMP_DATA = b"\x00io_0\x01\x00\x06\x01\x000\x01\x005\x01hello"
TLS_ALERT = bytes.fromhex("15030300020246")


def clientHello(serverName=b"example.test"):
    """
    Return the first bytes a real OpenSSL client sends: its ClientHello.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    connection = SSL.Connection(context, None)
    connection.set_tlsext_host_name(serverName)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def terminated(framing, role, data):
    """
    Feed C{data} to a fresh engine; return the error that ended the session.
    """
    engine = ENGINES[framing](role)
    events = engine.receiveData(data)
    ends = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert ends and ends[0].error is not None, (framing, role, data[:16], events)
    return ends[0].error


class LookalikeTests(SynchronousTestCase):
    """
    L{lookalike} recognises what foreign peers send first.
    """

    def test_recognised(self):
        """
        HTTP, TLS, SSH and the other framing are named; the framing's own
        frames and unknown bytes are not.
        """
        cases = [
            (HTTP_REQUEST, "mio", "an HTTP request"),
            (HTTP_RESPONSE, "bmp", "an HTTP response"),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "mio", "an HTTP/2 connection preface"),
            (clientHello(), "mio", "a TLS ClientHello"),
            (TLS_ALERT, "bmp", "a TLS alert"),
            (SSH_BANNER, "bmp", "an SSH banner"),
            (MIO_OPEN_AND_DATA, "bmp", "MIO frames"),
            (MIO_OPEN_AND_DATA, "mio", None),
            (BMP_DATA, "mio", "BMP frames"),
            (BMP_DATA[:7], "mio", "BMP frames"),
            (BMP_DATA, "bmp", None),
            (b"hello world", "mio", None),
            (b"", "bmp", None),
        ]
        for head, framing, expected in cases:
            self.assertEqual(lookalike(head, framing), expected, (head[:16], framing))


class ProtocolErrorHintTests(SynchronousTestCase):
    """
    The error ending a session whose peer speaks something else names it,
    with the first bytes, as XTMP's "bad magic b'GET '" does.
    """

    def test_onEitherFramingsPort(self):
        """
        An HTTP request or a TLS ClientHello on a MIO or BMP port, BMP bytes
        on a MIO port and MIO bytes on a BMP port.
        """
        hello = clientHello()
        cases = [
            ("mio", HTTP_REQUEST, "this looks like an HTTP request; this port speaks MIO"),
            ("bmp", HTTP_REQUEST, "this looks like an HTTP request; this port speaks BMP"),
            ("mio", hello, "this looks like a TLS ClientHello; this port speaks MIO"),
            ("bmp", hello, "this looks like a TLS ClientHello; this port speaks BMP"),
            ("mio", BMP_DATA, "this looks like BMP frames; this port speaks MIO"),
            ("bmp", MIO_OPEN_AND_DATA, "this looks like MIO frames; this port speaks BMP"),
        ]
        for framing, data, text in cases:
            error = terminated(framing, "server", data)
            self.assertIn(text, str(error), (framing, data[:16]))
            self.assertIn(repr(data[:16]), str(error))
            self.assertIn(error.hint, str(error))

    def test_clientHearsAnotherProtocol(self):
        """
        On the connecting side the hint says the peer does not speak the
        framing.
        """
        for framing in ("mio", "bmp"):
            error = terminated(framing, "client", HTTP_RESPONSE)
            self.assertIn("this looks like an HTTP response; the peer does not speak %s"
                          % (framing.upper(),), str(error))
        # A TLS server's alert is a protocol error for BMP; MIO ignores its
        # bytes (flags 0), and the server then closes: the engine still
        # says what the peer sent.
        error = terminated("bmp", "client", TLS_ALERT)
        self.assertIn("this looks like a TLS alert", str(error))
        engine = MioEngine("client")
        self.assertEqual(engine.receiveData(TLS_ALERT + b"\x00"), [])
        self.assertEqual(engine.foreignHint(),
                         "this looks like a TLS alert; the peer does not speak MIO")
        self.assertEqual(engine.firstBytes(), TLS_ALERT + b"\x00")

    def test_ownFramingGetsNoHint(self):
        """
        A real protocol error from a peer that does speak the framing has no
        hint: nothing else is guessed.
        """
        engine = MioEngine("server")
        engine.receiveData(MIO_OPEN_AND_DATA)
        # The same stream opened twice.
        [end] = [e for e in engine.receiveData(MIO_OPEN_AND_DATA[:8])
                 if isinstance(e, ConnectionTerminated)]
        self.assertIn("already open", str(end.error))
        self.assertIsNone(end.error.hint)
        self.assertNotIn("looks like", str(end.error))
        self.assertIsNone(engine.foreignHint())

    def test_finOnAStreamIsMalformed(self):
        """
        MIO: a FIN naming a stream other than 0 is a protocol error (a TLS
        ClientHello of 512 to 767 bytes decodes as one), not a session
        close with a nonsense code.
        """
        error = terminated("mio", "server", bytes.fromhex("1603010200010002") + b"\x00" * 32)
        self.assertIn("not 0", str(error))
        self.assertIn("TLS", str(error))
