"""
Naming and authenticating the clients of a multiplexed server, so that a
reverse tunnel (the server's C{--local}) sends connections only to the
client it names, never to whoever connected last.

A client is named one of two ways:

  - Mutual TLS (C{clientCA=} on the server's C{ssl:} endpoint): the name is
    the common name (CN) of the certificate the client presented.
  - A token (C{tokens=FILE} on the server, C{authName=} and
    C{authTokenFile=} on the client): a challenge and response on the first
    stream of the connection, which fits both framings because it is only a
    stream:

      1. The server opens a stream toward the client once the connection is
         up (after the TLS handshake) and writes
         C{MUXFRAME-AUTH 1 <nonce>\\n} (64 hex digits of random nonce).
      2. The client answers on that stream with C{<name> <mac>\\n}, where
         C{mac} is the hex HMAC-SHA256 of C{"muxframe-auth 1 " + nonce +
         " " + name} keyed with its token, and ends its side.  The token
         itself never crosses the wire and a response cannot be replayed.
      3. The server answers C{OK\\n} and ends the stream, or C{DENIED
         <reason>\\n} and closes the connection (MIO FIN code 4, "refused").

    Until the client is authenticated the server refuses every stream it
    opens (MIO RST code 4, BMP close) and opens none toward it but the
    challenge; no answer within L{AUTH_TIMEOUT} seconds closes the
    connection.  A client configured with a token waits for the challenge
    (as long) and its connection is ready only after C{OK}; it never
    sends anything to a server that did not ask.  Token authentication works
    between muxframe peers only (Go mio and Blazeio peers cannot answer).

Rules about names: 1 to 64 bytes of C{A-Z a-z 0-9 . _ -} for tokens; a
certificate's common name as it is.  Tokens: 16 to 256 printable ASCII
characters without spaces.
"""

import binascii
import hashlib
import hmac
import os
import re

from zope.interface import implementer

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.logger import LogLevel

from .describe import addressText
from .errors import AuthenticationError, ErrorCode
from .logthrottle import LogThrottle, logger, throttled

VERSION = b"1"
CHALLENGE = b"MUXFRAME-AUTH " + VERSION + b" "
AUTH_TIMEOUT = 10.0
MAX_LINE = 512
NONCE_BYTES = 32

_namePattern = re.compile(rb"[A-Za-z0-9._-]{1,64}\Z")
_tokenPattern = re.compile(rb"[\x21-\x7e]{16,256}\Z")
_hexPattern = re.compile(rb"[0-9a-f]{64}\Z")

log = logger(namespace="muxframe.tunnelauth")


def checkName(name):
    """
    Return C{name} (text or bytes) as bytes, or raise C{ValueError} saying
    what a client name must be.
    """
    raw = name.encode("ascii", "replace") if isinstance(name, str) else name
    if not _namePattern.match(raw):
        raise ValueError(
            "client name %r: 1 to 64 letters, digits, '.', '_' or '-'" % (name,))
    return raw


def checkToken(token, where="token"):
    """
    Return C{token} (text or bytes) as bytes, or raise C{ValueError} saying
    what a token must be.
    """
    raw = token.encode("ascii", "replace") if isinstance(token, str) else token
    if not _tokenPattern.match(raw):
        raise ValueError(
            "%s: 16 to 256 printable ASCII characters without spaces "
            "(%d given)" % (where, len(raw)))
    return raw


def readTokenFile(path):
    """
    Return the token in the file at C{path} (its first line).

    @raise ValueError: naming the fault.
    """
    try:
        with open(path, "rb") as f:
            token = f.read(4096).split(b"\n", 1)[0].strip()
    except OSError as e:
        raise ValueError("authTokenFile=%s cannot be read: %s" % (path, e.strerror or e))
    return checkToken(token, "the token in %s" % (path,))


def mac(token, nonce, name):
    """
    Return the hex response to challenge C{nonce} (hex bytes) for client
    C{name} holding C{token}.
    """
    message = b"muxframe-auth " + VERSION + b" " + nonce + b" " + name
    return hmac.new(token, message, hashlib.sha256).hexdigest().encode("ascii")


class TokenTable:
    """
    The clients a server knows, by name: each line of a tokens file is
    C{name token}; blank lines and lines starting with C{#} are skipped.
    """

    def __init__(self, tokens):
        self._tokens = dict(tokens)

    @classmethod
    def fromFile(cls, path):
        """
        Read a tokens file.

        @raise ValueError: naming the file, the line and the fault.
        """
        try:
            with open(path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise ValueError("tokens=%s cannot be read: %s" % (path, e.strerror or e))
        tokens = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            parts = line.split()
            where = "tokens=%s line %d" % (path, number)
            if len(parts) != 2:
                raise ValueError("%s: expected 'name token'" % (where,))
            try:
                name = checkName(parts[0])
                token = checkToken(parts[1], "%s: the token" % (where,))
            except ValueError as e:
                raise ValueError("%s: %s" % (where, e) if where not in str(e) else str(e))
            if name in tokens:
                raise ValueError("%s: client %r is listed twice" % (where, name.decode()))
            tokens[name] = token
        if not tokens:
            raise ValueError("tokens=%s lists no client" % (path,))
        return cls(tokens)

    def __contains__(self, name):
        return checkName(name) in self._tokens

    def check(self, nonce, name, response):
        """
        Return true if C{response} answers challenge C{nonce} for C{name}.
        """
        token = self._tokens.get(name)
        # An unknown name costs the same HMAC as a known one.
        expected = mac(token if token is not None else b"\0" * 32, nonce, name)
        return hmac.compare_digest(expected, response) and token is not None


def certificateName(transport):
    """
    Return the common name of the certificate the peer of a TLS
    C{transport} presented, or C{None}.
    """
    getCertificate = getattr(transport, "getPeerCertificate", None)
    if getCertificate is None:
        return None
    try:
        certificate = getCertificate()
    except Exception:
        return None
    if certificate is None:
        return None
    for key, value in certificate.get_subject().get_components():
        if key == b"CN":
            return value.decode("utf-8", "replace")
    return None


class Authenticator:
    """
    How a server endpoint names its clients: by their TLS certificates
    (C{certificates}), or by a L{TokenTable} (C{tokens}), which then every
    client must answer before it may open a stream.
    """

    def __init__(self, tokens=None, certificates=False, timeout=None):
        self.tokens = tokens
        self.certificates = certificates
        self.timeout = AUTH_TIMEOUT if timeout is None else timeout
        self.logThrottle = LogThrottle()

    def gate(self, mux, childFactory):
        """
        Return the per-connection L{ServerGate} of C{mux}.
        """
        return ServerGate(mux, childFactory, self)


class _LineProtocol(Protocol):
    """
    A stream carrying a line or two each way: C{lineReceived} for each line
    (at most L{MAX_LINE} bytes) until C{_done} is set, C{lineFailed} if the
    stream ends first or a line is too long.
    """

    def __init__(self):
        self._buffer = b""
        self._done = False

    def dataReceived(self, data):
        self._buffer += data
        while not self._done:
            line, newline, rest = self._buffer.partition(b"\n")
            if not newline:
                if len(self._buffer) > MAX_LINE:
                    self._done = True
                    self.lineFailed("a line longer than %d bytes" % (MAX_LINE,))
                return
            self._buffer = rest
            self.lineReceived(line)

    def connectionLost(self, reason):
        if not self._done:
            self._done = True
            self.lineFailed("the stream ended before a whole line (%s)"
                            % (reason.getErrorMessage(),))


class _Challenge(_LineProtocol):
    """
    The server's end of the authentication stream.
    """

    def __init__(self, gate):
        _LineProtocol.__init__(self)
        self.gate = gate

    def connectionMade(self):
        self.transport.write(CHALLENGE + self.gate.nonce + b"\n")

    def lineReceived(self, line):
        self._done = True
        name, _, response = line.partition(b" ")
        if not _namePattern.match(name) or not _hexPattern.match(response):
            self.gate.denied(self, "the answer %r is not 'name mac'" % (line[:80],))
        elif not self.gate.authenticator.tokens.check(self.gate.nonce, name, response):
            self.gate.denied(self, "unknown client %r or wrong token" % (name.decode(),))
        else:
            self.transport.write(b"OK\n")
            self.transport.loseConnection()
            self.gate.authenticated(name.decode("ascii"), "token")

    def lineFailed(self, why):
        self.gate.denied(self, why)


@implementer(IProtocolFactory)
class ServerGate:
    """
    One server connection's authentication, and the child factory of its
    multiplexer: streams the client opens reach C{childFactory} only once
    it is authenticated (at once when certificates name clients and no
    tokens are required).

    @ivar name: the authenticated client's name, or C{None}.
    @ivar how: C{"certificate"} or C{"token"} once authenticated.
    """

    def __init__(self, mux, childFactory, authenticator):
        self.mux = mux
        self.childFactory = childFactory
        self.authenticator = authenticator
        self.name = None
        self.how = None
        self.nonce = binascii.hexlify(os.urandom(NONCE_BYTES))
        self._timer = None
        self._started = False

    def doStart(self):
        pass

    def doStop(self):
        pass

    def start(self):
        """
        The connection is up (and its TLS handshake done): name the client
        by its certificate, or send the token challenge.
        """
        if self._started or self.mux.disconnected:
            return
        self._started = True
        authenticator = self.authenticator
        if authenticator.tokens is None:
            if authenticator.certificates:
                name = certificateName(self.mux.transport)
                if name is not None:
                    self.authenticated(name, "certificate")
            return
        self._timer = self.mux.reactor.callLater(
            authenticator.timeout, self._expired)
        self.mux.whenLost().addCallback(lambda _: self._cancelTimer())
        self.mux.openStream(_ChallengeFactory(self)).addErrback(lambda f: None)

    def buildProtocol(self, addr):
        if self.name is None and self.authenticator.tokens is not None:
            return None  # refused until authenticated
        if self.childFactory is None:
            return None
        return self.childFactory.buildProtocol(addr)

    def authenticated(self, name, how):
        self._cancelTimer()
        self.name = name
        self.how = how
        log.info("{framing} client {name} authenticated by {how} from {peer}",
                 framing=self.mux.framing, name=name, how=how,
                 peer=addressText(self.mux.transport.getPeer()))

    def denied(self, stream, why):
        """
        The client failed: tell it on C{stream} and close the connection.
        """
        self._cancelTimer()
        if stream is not None and stream.transport is not None:
            stream.transport.write(b"DENIED " + why.encode("ascii", "replace")[:200] + b"\n")
            stream.transport.loseConnection()
        self._refuse(why)

    def _expired(self):
        self._timer = None
        self._refuse("no answer to the authentication challenge within %g s"
                     % (self.authenticator.timeout,))

    def _refuse(self, why):
        mux = self.mux
        if mux.disconnected:
            return
        throttled(log, self.authenticator.logThrottle, mux.reactor.seconds(),
                  LogLevel.warn, "denied",
                  "{framing} client at {peer} not authenticated, closing: {why}",
                  framing=mux.framing, peer=addressText(mux.transport.getPeer()),
                  why=why)
        # After the DENIED line has been handed to the transport.
        mux.reactor.callLater(0, mux.close, ErrorCode.REFUSED)

    def _cancelTimer(self):
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


@implementer(IProtocolFactory)
class _ChallengeFactory:

    def __init__(self, gate):
        self.gate = gate

    def doStart(self):
        pass

    def doStop(self):
        pass

    def buildProtocol(self, addr):
        return _Challenge(self.gate)


class _Answer(_LineProtocol):
    """
    The client's end of the authentication stream.
    """

    def __init__(self, gate):
        _LineProtocol.__init__(self)
        self.gate = gate
        self._answered = False

    def lineReceived(self, line):
        gate = self.gate
        if not self._answered:
            nonce = line[len(CHALLENGE):]
            if not line.startswith(CHALLENGE) or not _hexPattern.match(nonce):
                self._done = True
                gate.failed("the server's first stream is not an authentication "
                            "challenge (it starts %r)" % (line[:40],))
                self.transport.abortConnection()
                return
            self._answered = True
            self.transport.write(gate.name + b" " + mac(gate.token, nonce, gate.name) + b"\n")
            self.transport.loseWriteConnection()
        elif line == b"OK":
            self._done = True
            gate.succeeded()
        else:
            self._done = True
            reason = line[7:] if line.startswith(b"DENIED ") else line[:80]
            gate.failed("the server refused authentication as %r: %s"
                        % (gate.name.decode(), reason.decode("ascii", "replace")))

    def lineFailed(self, why):
        self.gate.failed("authentication as %r failed: %s"
                         % (self.gate.name.decode(), why))


@implementer(IProtocolFactory)
class ClientGate:
    """
    One client connection's answer to the server's token challenge, and the
    child factory of its multiplexer: the first stream the server opens is
    the challenge; the later ones go to C{childFactory}.
    """

    def __init__(self, mux, childFactory, name, token, timeout=None):
        self.mux = mux
        self.childFactory = childFactory
        self.name = checkName(name)
        self.token = checkToken(token)
        self.timeout = AUTH_TIMEOUT if timeout is None else timeout
        self.result = None
        self._waiters = []
        self._challenged = False

    def doStart(self):
        pass

    def doStop(self):
        pass

    def buildProtocol(self, addr):
        if not self._challenged:
            self._challenged = True
            return _Answer(self)
        if self.result is not True or self.childFactory is None:
            return None
        return self.childFactory.buildProtocol(addr)

    def whenAuthenticated(self):
        """
        Return a Deferred firing with the multiplexer once the server has
        accepted this client, or failing with L{AuthenticationError} (no
        challenge within the timeout, refused, connection lost).
        """
        if self.result is True:
            return succeed(self.mux)
        if self.result is not None:
            return fail(self.result)
        d = Deferred()
        if not self._waiters:
            timer = self.mux.reactor.callLater(self.timeout, self._expired)
            self.mux.whenLost().addCallback(lambda _: self._lost(timer))
            self._timer = timer
        self._waiters.append(d)
        return d

    def _expired(self):
        self.failed("the server sent no authentication challenge within %g s "
                    "(does it have tokens= set?)" % (self.timeout,))
        if not self.mux.disconnected:
            self.mux.close(ErrorCode.REFUSED)

    def _lost(self, timer):
        if timer.active():
            timer.cancel()
        reason = self.mux.lostReason
        self.failed("the connection was lost before the server accepted %r: %s"
                    % (self.name.decode(), reason.getErrorMessage() if reason else "?"))

    def succeeded(self):
        self._finish(True)

    def failed(self, why):
        self._finish(AuthenticationError(why))

    def _finish(self, result):
        if self.result is not None:
            return
        self.result = result
        timer = getattr(self, "_timer", None)
        if timer is not None and timer.active():
            timer.cancel()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if result is True:
                d.callback(self.mux)
            else:
                d.errback(result)


__all__ = [
    "AUTH_TIMEOUT",
    "Authenticator",
    "ClientGate",
    "ServerGate",
    "TokenTable",
    "certificateName",
    "checkName",
    "checkToken",
    "mac",
    "readTokenFile",
]
