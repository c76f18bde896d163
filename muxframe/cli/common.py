"""
What the subcommands of C{muxframe-xtmp} share: errors and exit codes,
running Twisted code, the XTMP connection options, message types, flags
and payloads, and output.

Exit codes: 0 success, 1 failure (the error printed on one line), 2
usage (argparse's own, and L{UsageError}).
"""

import json
import os
import sys

from muxframe.xtmp.connection import DisconnectReceived
from muxframe.xtmp.protocol import XTMPProtocol

SUCCESS, FAILURE, USAGE = 0, 1, 2
PROGRAM = "muxframe-xtmp"


class CLIError(Exception):
    """
    A failure to report on one line (exit 1).
    """


class UsageError(CLIError):
    """
    A bad command line found after parsing (exit 2).
    """


def say(text, stream=None):
    """
    Print C{text} and flush (output may be read line by line).  If the
    reader of standard output went away (C{| head} has its lines), the
    rest of the output goes nowhere and the command ends, exit 1
    (L{outputClosed}); what it was doing is not cut short mid-way.
    """
    stream = stream or sys.stdout
    try:
        stream.write(text + "\n")
        stream.flush()
    except BrokenPipeError:
        if stream is not sys.stdout:
            raise
        outputClosed()


def outputClosed():
    """
    Standard output's reader went away: point it at the null device, so
    the interpreter's last flush does not print a BrokenPipeError too, and
    stop a running reactor (a streaming command such as subscribe prints
    from callbacks); the command's exit code becomes 1 (L{closed}).
    """
    global _closed
    first, _closed = not _closed, True
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    if _outputOptional:
        return
    from twisted.internet import reactor
    if first and reactor.running:
        reactor.callLater(0, reactor.stop)


def outputOptional():
    """
    The command's work goes on without its standard output (capture with
    C{--output FILE}: the proxy and the file): a reader going away stops
    nothing, and the exit code stays the command's.
    """
    global _outputOptional
    _outputOptional = True


_outputOptional = False


_closed = False


def closed():
    """
    Whether standard output's reader went away (L{outputClosed}) and that
    ends the command (not with L{outputOptional}).
    """
    return _closed and not _outputOptional


def emitJSON(value):
    """
    Print C{value} as one line of JSON.
    """
    say(json.dumps(value, sort_keys=True, default=str))


def describeError(error):
    """
    One line naming an error: its type, the XTMP code if any, the text.
    """
    code = getattr(error, "code", None)
    if code is not None and hasattr(error, "reason"):
        from muxframe.xtmp.errors import XTMPErrorCode
        return "%s %s: %s" % (type(error).__name__,
                              XTMPErrorCode.describe(code), error.reason)
    text = str(error) or repr(error)
    if code is not None:
        from muxframe.xtmp.errors import XTMPErrorCode
        return "%s %s: %s" % (type(error).__name__,
                              XTMPErrorCode.describe(code), text)
    return "%s: %s" % (type(error).__name__, text)


def runTwisted(main, *args):
    """
    Run C{main(reactor, *args)} (returning an exit code or a Deferred of
    one) under the reactor; return the exit code.  SIGINT and SIGTERM stop
    it with exit 0 (C{main} may have said what it got so far).
    """
    from twisted.internet import reactor
    from twisted.internet.defer import maybeDeferred
    outcome = {}

    def failed(failure):
        error = failure.value
        if isinstance(error, BrokenPipeError):
            # (Written other than by say.)
            outputClosed()
            outcome["code"] = FAILURE
        elif isinstance(error, UsageError):
            say("%s: error: %s" % (PROGRAM, error), sys.stderr)
            outcome["code"] = USAGE
        elif isinstance(error, CLIError):
            say("%s: error: %s" % (PROGRAM, error), sys.stderr)
            outcome["code"] = FAILURE
        elif isinstance(error, Exception) and _known(error):
            say("%s: error: %s" % (PROGRAM, describeError(error)), sys.stderr)
            outcome["code"] = FAILURE
        else:
            say("%s: unexpected error:" % (PROGRAM,), sys.stderr)
            failure.printTraceback(sys.stderr)
            outcome["code"] = FAILURE

    def start():
        d = maybeDeferred(main, reactor, *args)
        d.addCallbacks(lambda code: outcome.setdefault(
            "code", SUCCESS if code is None else code), failed)
        d.addBoth(lambda _: reactor.stop() if reactor.running else None)

    reactor.callWhenRunning(start)
    reactor.run()
    if closed():
        return FAILURE
    return outcome.get("code", SUCCESS)


def _known(error):
    from twisted.internet.error import (
        ConnectError, ConnectionClosed, DNSLookupError,
    )

    from muxframe.errors import MuxframeError
    return isinstance(error, (MuxframeError, ConnectError, ConnectionClosed,
                              DNSLookupError, OSError, ValueError))


# -- numeric options -------------------------------------------------------

def numberType(kind, low, lowIncluded=True, high=None, unit=""):
    """
    An argparse C{type} for a number of C{kind} (L{int} or L{float}) from
    C{low} (included or not) to C{high}: out of range, or not finite, is
    argparse's usage error naming the option (exit 2), not a traceback or
    a busy loop later.
    """
    import argparse
    import math
    bound = "%s %g" % ("at least" if lowIncluded else "more than", low)
    if high is not None:
        bound += " and at most %g" % (high,)
    bound += unit
    name = "an integer" if kind is int else "a number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or (kind is float and not math.isfinite(value)) \
                or value < low or (value == low and not lowIncluded) \
                or (high is not None and value > high):
            raise argparse.ArgumentTypeError("expected %s %s, not %r"
                                             % (name, bound, text))
        return value

    parse.__name__ = kind.__name__
    return parse


#: The most seconds an option takes: a socket's timeout or a sleep fails
#: (OverflowError) beyond what the platform's time_t holds.
MAX_SECONDS = 1e9
#: Seconds to wait for something (more than 0: a callLater or a socket
#: timeout cannot take less).
positiveSeconds = numberType(float, 0, lowIncluded=False, high=MAX_SECONDS,
                             unit=" seconds")
#: Seconds of a limit where 0 means none.
secondsOrNone = numberType(float, 0, high=MAX_SECONDS, unit=" seconds")
#: A count where 0 means no limit.
countOrNone = numberType(int, 0)
#: A count of at least one.
positiveCount = numberType(int, 1)
#: A largest payload, in bytes (XTMP's u32 length field holds at most
#: 2**32 - 1).
payloadBytes = numberType(int, 0, high=2 ** 32 - 1, unit=" bytes")


# -- message types, flags, payloads --------------------------------------

#: Flags a command may ask for; ENCRYPTED is the session's (checked only).
SEND_FLAGS = ("ENCRYPTED", "REQUIRES_ACK", "PRIORITY_HIGH", "EMERGENCY",
              "COMPRESSED")


def parseType(text):
    """
    A message type from a name (C{BundleSubmit}) or number (C{0x20},
    C{32}); control types are refused.
    """
    from muxframe.server.config import parseMessageType
    from muxframe.server.errors import ConfigError
    try:
        return parseMessageType(text, "--type")
    except ConfigError as e:
        raise UsageError(str(e))


def parseFlags(text):
    """
    C{"ENCRYPTED,REQUIRES_ACK"} -> C{(header flags, wants ENCRYPTED)}.
    """
    from muxframe.xtmp.codec import Flags
    flags, encrypted = 0, False
    for name in filter(None, (n.strip().upper() for n in (text or "").split(","))):
        if name not in SEND_FLAGS:
            raise UsageError("--flags: %s cannot be asked for (choose from %s)"
                             % (name, ", ".join(SEND_FLAGS)))
        if name == "ENCRYPTED":
            encrypted = True
        else:
            flags |= Flags[name]
    return flags, encrypted


def readPayload(args):
    """
    The payload of C{--payload TEXT} or C{--payload-file FILE} (C{-}:
    stdin); with neither, empty.  (Stdin is read only when asked for: a
    command run from a script must not wait on an open pipe.)
    """
    if getattr(args, "payload", None) is not None:
        if getattr(args, "payload_file", None) is not None:
            raise UsageError("give --payload or --payload-file, not both")
        return args.payload.encode("utf-8")
    path = getattr(args, "payload_file", None)
    if path == "-":
        return sys.stdin.buffer.read()
    if path is None:
        return b""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CLIError("--payload-file: cannot read %s: %s"
                       % (path, e.strerror or e))


def addPayloadArguments(parser):
    """
    C{--payload} and C{--payload-file}.
    """
    parser.add_argument("--payload", metavar="TEXT",
                        help="the payload (UTF-8 text)")
    parser.add_argument("--payload-file", metavar="FILE",
                        help="read the payload from FILE ('-': stdin)")


def showPayload(data):
    """
    A payload for a terminal: text if it is printable UTF-8, else base64.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        return text
    import base64
    return "base64:" + base64.b64encode(data).decode("ascii")


def payloadJSON(data):
    """
    A payload in JSON output: C{payload} base64 and C{text} if UTF-8.
    """
    import base64
    out = {"payload": base64.b64encode(data).decode("ascii"),
           "bytes": len(data)}
    try:
        out["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return out


# -- connecting ------------------------------------------------------------

def clientEndpointString(text, option="--endpoint"):
    """
    A client endpoint string; C{HOST:PORT} means C{tcp:HOST:PORT}.

    @raise UsageError: naming C{option}, for a port out of range.
    """
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host and ":" not in host:
        if not 0 < int(port) < 65536:
            raise UsageError("%s: port %s of %r is not from 1 to 65535"
                             % (option, port, text))
        return "tcp:%s:%s" % (host, port)
    return text


def addConnectArguments(parser):
    """
    The options saying where the server is and who we are.
    """
    group = parser.add_argument_group("connection")
    group.add_argument("--endpoint", "-e",
                       default=os.environ.get("MUXFRAME_XTMP_ENDPOINT"),
                       help="the server: HOST:PORT or a client endpoint "
                            "string (tcp:HOST:PORT, tls:HOST:PORT, "
                            "ws:tcp:HOST:PORT:path=/xtmp ...); default "
                            "$MUXFRAME_XTMP_ENDPOINT")
    pin = group.add_mutually_exclusive_group()
    # No default here: $MUXFRAME_XTMP_SERVER_KEY applies only when neither
    # option is given (clientFactory), so an option always wins over it.
    pin.add_argument("--server-key", metavar="FILE",
                     help="the server's public key (PEM) to pin; default, "
                          "when neither this nor --server-fingerprint is "
                          "given, $MUXFRAME_XTMP_SERVER_KEY")
    pin.add_argument("--server-fingerprint", metavar="HEX",
                     help="or the server key's fingerprint: the %d hex "
                          "digits of its SHA-256, as connect prints it"
                          % (FINGERPRINT_DIGITS,))
    who = group.add_mutually_exclusive_group()
    who.add_argument("--identity", "-i", metavar="FILE",
                     default=os.environ.get("MUXFRAME_XTMP_IDENTITY"),
                     help="our identity (private PEM, from keygen); default "
                          "$MUXFRAME_XTMP_IDENTITY")
    who.add_argument("--token-file", metavar="FILE",
                     help="authenticate with the bearer token in FILE")
    who.add_argument("--anonymous", action="store_true",
                     help="present neither key nor token")
    group.add_argument("--password-file", metavar="FILE",
                       help="the identity PEM's password")
    group.add_argument("--encryption", "--cipher", dest="cipher",
                       choices=["aes256gcm", "chacha20poly1305"],
                       help="the cipher to ask for first")
    group.add_argument("--timeout", type=positiveSeconds, default=10.0,
                       help="seconds to wait for the server (default 10)")


#: The hex digits of a key's fingerprint (SHA-256).
FINGERPRINT_DIGITS = 64


def parseFingerprint(text):
    """
    The fingerprint of C{--server-fingerprint TEXT}: all its hex digits,
    in lower case (a prefix would pin too few bits to trust).

    @raise UsageError: if C{TEXT} is not that.
    """
    wanted = text.strip().lower()
    if len(wanted) != FINGERPRINT_DIGITS or \
            not all(c in "0123456789abcdef" for c in wanted):
        raise UsageError(
            "--server-fingerprint: expected the %d hex digits of the server "
            "key's SHA-256 fingerprint (connect prints it), not %r"
            % (FINGERPRINT_DIGITS, text))
    return wanted


class ServerCheck:
    """
    The C{verifyServer} of the connection options: is the server's key the
    one pinned?  A mismatch fails the handshake naming both fingerprints
    (the library's own message names neither).

    @ivar fingerprint: the fingerprint expected.
    @ivar pinned: the L{PublicIdentity} of C{--server-key}, or L{None}.
    """

    def __init__(self, fingerprint, pinned=None):
        self.fingerprint = fingerprint
        self.pinned = pinned

    def __call__(self, server):
        """
        Accept C{server}'s L{PublicIdentity}, or raise L{Unauthorized}.
        """
        from muxframe.xtmp.errors import Unauthorized
        pinned = self.pinned
        if pinned is None:
            matches = server.fingerprint == self.fingerprint
        else:
            # As the library pins a key: a key without ML-DSA matches a
            # server presenting the same Ed25519 key with one.
            matches = server.ed25519 == pinned.ed25519 and (
                pinned.mldsa is None or server.mldsa == pinned.mldsa)
        if not matches:
            raise Unauthorized("server key fingerprint is %s, expected %s"
                               % (server.fingerprint, self.fingerprint))
        return True


class SessionProtocol(XTMPProtocol):
    """
    The sessions of the commands: an L{XTMPProtocol} keeping the code and
    reason of the server's Disconnect (the library reports NONE and
    GOING_AWAY alike as a bare C{ConnectionDone}, and a command must say
    why it ended).

    @ivar serverClose: C{(code, reason)} of the server's Disconnect, or
        L{None}.
    """

    serverClose = None

    def _handleEvent(self, event):
        if type(event) is DisconnectReceived:
            self.serverClose = (event.code, event.reason)
        return XTMPProtocol._handleEvent(self, event)


#: Characters of the server's reason an error line carries at most.
REASON_SHOWN = 200


def serverClosed(protocol, why):
    """
    The error to report when a session ended without the command asking:
    C{why} (from C{whenClosed}), with the code and reason of the server's
    Disconnect if it sent one, for a clean close too (GOING_AWAY: a drain,
    or an admin's disconnect).
    """
    from twisted.internet.error import ConnectionDone

    from muxframe.xtmp.errors import PeerDisconnected, XTMPErrorCode
    close = getattr(protocol, "serverClose", None)
    if close is not None and isinstance(why, (ConnectionDone,
                                              PeerDisconnected)):
        code, reason = close
        reason = str(reason)
        if len(reason) > REASON_SHOWN:
            reason = reason[:REASON_SHOWN] + "..."
        if not reason.isprintable():
            reason = ascii(reason)
        return CLIError("server closed the session (%s%s)" % (
            XTMPErrorCode.describe(code), ": " + reason if reason else ""))
    if isinstance(why, ConnectionDone):
        return CLIError("server closed the connection (without Disconnect)")
    return why if isinstance(why, Exception) else CLIError(str(why))


def _readFile(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CLIError("%s: cannot read %s: %s" % (what, path, e.strerror or e))


def clientFactory(args, reactor=None, **settings):
    """
    The L{XTMPClientFactory} of the connection options.
    """
    from muxframe.server.schema import CIPHER_NAMES
    from muxframe.xtmp import Identity, PublicIdentity, XTMPClientFactory
    from muxframe.xtmp.factory import DEFAULT_CIPHERS
    if not args.endpoint:
        raise UsageError("--endpoint is required (or $MUXFRAME_XTMP_ENDPOINT)")
    keyFile = args.server_key
    if keyFile is None and args.server_fingerprint is None:
        keyFile = os.environ.get("MUXFRAME_XTMP_SERVER_KEY") or None
    if keyFile:
        try:
            pinned = PublicIdentity.fromPEM(
                _readFile(keyFile, "--server-key"), keyFile)
        except ValueError as e:
            raise CLIError("--server-key: %s" % (e,))
        verify = ServerCheck(pinned.fingerprint, pinned)
    elif args.server_fingerprint is not None:
        verify = ServerCheck(parseFingerprint(args.server_fingerprint))
    else:
        raise UsageError("give --server-key FILE or --server-fingerprint HEX: "
                         "the server's key is always verified")
    identity = token = None
    if args.identity and not args.anonymous and not args.token_file:
        password = None
        if args.password_file:
            password = _readFile(args.password_file, "--password-file").rstrip(b"\r\n")
        try:
            identity = Identity.fromPEM(_readFile(args.identity, "--identity"),
                                        password, args.identity)
        except (ValueError, TypeError) as e:
            raise CLIError("--identity: %s" % (e,))
    elif args.token_file:
        token = _readFile(args.token_file, "--token-file").strip()
    ciphers = tuple(DEFAULT_CIPHERS)
    if args.cipher:
        first = CIPHER_NAMES[args.cipher]
        ciphers = (first,) + tuple(c for c in ciphers if c != first)
    factory = XTMPClientFactory(verifyServer=verify,
                                identity=identity, token=token,
                                ciphers=ciphers, reactor=reactor,
                                resume=False, **settings)
    factory.protocol = SessionProtocol
    return factory


def connect(reactor, args, **settings):
    """
    Connect and complete the handshake; a Deferred of the protocol.
    """
    from twisted.internet.endpoints import clientFromString

    from muxframe.endpointcheck import checkClientDescription
    from muxframe.xtmp import connectXTMP
    factory = clientFactory(args, reactor, **settings)
    description = clientEndpointString(args.endpoint)
    try:
        # (A TCP port out of range: before connecting, since older
        # Twisted raises it from a timed call, not through the Deferred.)
        checkClientDescription(description)
    except ValueError as e:
        raise UsageError("--endpoint: %s" % (e,))
    try:
        endpoint = clientFromString(reactor, description)
    except Exception as e:
        raise UsageError("--endpoint: bad endpoint %r: %s" % (description, e))
    d = connectXTMP(endpoint, factory)

    def badPort(failure):
        # The socket refuses a port out of range only once connecting (an
        # endpoint string's port is not checked when parsed).
        failure.trap(OverflowError)
        raise UsageError("--endpoint: %r: %s" % (description, failure.value))

    d.addErrback(badPort)
    return withTimeout(reactor, d, args.timeout, "connecting to %s" % (description,))


def withTimeout(reactor, d, seconds, what):
    """
    C{d}, failed with L{CLIError} if it has no result within C{seconds}.
    """
    if not seconds:
        return d
    from twisted.internet.defer import CancelledError
    call = reactor.callLater(seconds, d.cancel)

    def done(result):
        if call.active():
            call.cancel()
        return result

    def timedOut(failure):
        failure.trap(CancelledError)
        raise CLIError("%s: no answer within %gs" % (what, seconds))

    return d.addBoth(done).addErrback(timedOut)


def ping(protocol):
    """
    One round trip over the session (an Unsubscribe of a subject never
    subscribed, which the server confirms); a Deferred of its seconds.
    """
    import time
    started = time.perf_counter()
    return protocol.unsubscribe("_muxframe.ping").addCallback(
        lambda _: time.perf_counter() - started)


def close(protocol):
    """
    Disconnect cleanly; a Deferred fired once closed.
    """
    closed = protocol.whenClosed()
    protocol.disconnect()
    return closed.addBoth(lambda _: None)


# -- the admin API ------------------------------------------------------------

def addAdminArguments(parser):
    """
    Where the admin API is, and its token.
    """
    group = parser.add_argument_group("admin API")
    group.add_argument("--admin", "-a", default=os.environ.get("MUXFRAME_ADMIN"),
                       help="the admin service: http://HOST:PORT (with a "
                            "path: the prefix it is served under, behind a "
                            "proxy) or unix:/path/to.sock; default "
                            "$MUXFRAME_ADMIN")
    group.add_argument("--admin-token-file", metavar="FILE",
                       default=os.environ.get("MUXFRAME_ADMIN_TOKEN_FILE"),
                       help="the bearer token's file; default "
                            "$MUXFRAME_ADMIN_TOKEN_FILE")
    group.add_argument("--timeout", type=positiveSeconds, default=10.0,
                       help="seconds to wait for the admin service "
                            "(default 10)")


def adminClient(args):
    """
    The L{muxframe.cli.adminclient.AdminClient} of the admin options.
    """
    from muxframe.cli.adminclient import AdminClient
    if not args.admin:
        raise UsageError("--admin is required (or $MUXFRAME_ADMIN)")
    from muxframe.admin.settings import loadToken
    token = None
    if args.admin_token_file:
        # The rules of the service's own token file: one line of printable
        # ASCII.  Anything else could never be sent as a header (http.client
        # refused it naming the whole header, token and all, on stderr) and
        # an empty file only earned a 401.  The error names the file, never
        # what it holds.
        try:
            token = loadToken(args.admin_token_file, "--admin-token-file")
        except ValueError as e:
            raise CLIError(str(e))
    return AdminClient(args.admin, token, args.timeout)


__all__ = ["CLIError", "FAILURE", "MAX_SECONDS", "SUCCESS", "SessionProtocol",
           "USAGE", "UsageError", "addAdminArguments", "addConnectArguments",
           "addPayloadArguments", "adminClient", "clientFactory", "close",
           "connect", "countOrNone", "emitJSON", "numberType", "parseFlags",
           "parseType", "ping", "positiveCount", "positiveSeconds",
           "readPayload", "runTwisted", "say", "secondsOrNone", "serverClosed",
           "showPayload", "withTimeout"]
