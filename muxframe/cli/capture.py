"""
C{capture}: a relay on loopback between XTMP clients and a server that
logs each message's header fields as it passes (the documents' C{debug
--capture-messages}).  It sees what the wire carries: plaintext handshake
messages in full, encrypted ones as header and security layer only (it
has no keys).  It never changes a byte.

Each connection accepted on C{--listen} (loopback only) is relayed to
C{--connect}; each direction is decoded with the codec's own decoder.  A
direction that stops being valid XTMP is logged once and relayed raw from
then on.  With C{--save DIR} every message is also written to its own
file (C{validate} reads them).
"""

import os
import time

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from muxframe.cli.common import (
    UsageError, countOrNone, emitJSON, outputOptional, payloadBytes,
    runTwisted, say, secondsOrNone,
)
from muxframe.xtmp import codec

_LOOPBACK = ("127.", "::1", "localhost")


def addCapture(subparsers):
    parser = subparsers.add_parser(
        "capture", help="relay on loopback and log every message's header",
        description="Listen on loopback, relay each connection to the "
                    "server, and log each XTMP message's header fields "
                    "(direction, type, flags, session, sequence, length, "
                    "checksum, security layer) as it passes.")
    parser.add_argument("--connect", "-c", required=True,
                        help="the server: HOST:PORT or a client endpoint string")
    parser.add_argument("--listen", "-l", default="tcp:0:interface=127.0.0.1",
                        help="where clients connect (loopback only; default "
                             "tcp:0:interface=127.0.0.1, a free port, printed)")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="also append the log to FILE")
    parser.add_argument("--save", metavar="DIR",
                        help="write each message to its own file in DIR")
    parser.add_argument("--count", type=countOrNone, default=0,
                        help="stop after this many messages")
    parser.add_argument("--duration", type=secondsOrNone, default=0,
                        help="stop after this many seconds")
    parser.add_argument("--max-payload", type=payloadBytes, default=1 << 20)
    parser.add_argument("--json", action="store_true",
                        help="log each message as a line of JSON")
    parser.set_defaults(run=lambda args: runTwisted(_capture, args))


def _checkLoopback(description):
    from muxframe.endpointcheck import parseDescription
    args, kwargs = parseDescription(description)
    kind = args[0].lower() if args else ""
    if kind == "unix":
        return
    if kind not in ("tcp", "tcp6"):
        raise UsageError("--listen: tcp:PORT:interface=127.0.0.1 or unix:PATH, "
                         "not %r" % (description,))
    interface = kwargs.get("interface")
    if interface is None or not interface.startswith(_LOOPBACK):
        raise UsageError("--listen: the relay listens on loopback only: add "
                         "interface=127.0.0.1 (got %r)" % (description,))


class Capture:
    """
    The log, the saved files and the count of one capture.
    """

    def __init__(self, args, done):
        self.args = args
        self.done = done
        self.count = 0
        self.connections = 0
        self.open = 0
        self._idle = []
        self.output = open(args.output, "a") if args.output else None
        if self.output is not None:
            # The proxy and the file are the work: a closed stdout (| head)
            # stops neither.
            outputOptional()
        if args.save:
            os.makedirs(args.save, exist_ok=True)

    def opened(self):
        self.open += 1

    def closed(self):
        self.open -= 1
        if not self.open:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def whenIdle(self, reactor, grace):
        """
        A Deferred fired when no relayed connection is open, or after
        C{grace} seconds (then the rest are cut as the process ends).
        """
        d = Deferred()
        if not self.open:
            d.callback(None)
            return d
        self._idle.append(d)
        reactor.callLater(grace, lambda: None if d.called else d.callback(None))
        return d

    def line(self, text, record):
        if self.args.json:
            emitJSON(record)
        else:
            say(text)
        if self.output is not None:
            self.output.write(text + "\n")
            self.output.flush()

    def frame(self, connection, direction, frame):
        self.count += 1
        flags = frame.flags
        names = [f.name for f in codec.Flags if f.value and flags & f.value]
        record = {"n": self.count, "connection": connection,
                  "direction": direction, "time": time.time(),
                  "type": frame.type, "typeName": _typeName(frame.type),
                  "flags": flags, "flagNames": names,
                  "sessionId": "%#x" % (frame.sessionId,),
                  "sequence": frame.sequence, "length": len(frame.payload),
                  "checksum": "%#010x" % (frame.checksum,)}
        text = "#%d conn %d %s %s flags=%s session=%s seq=%d len=%d crc=%s" % (
            self.count, connection, direction, record["typeName"],
            ",".join(names) or "-", record["sessionId"], frame.sequence,
            len(frame.payload), record["checksum"])
        if flags & codec.Flags.ENCRYPTED:
            record.update(cipher=codec.Cipher.describe(frame.cipher),
                          epoch=frame.epoch, keyId=frame.keyId.hex(),
                          nonce=frame.nonce.hex())
            text += " cipher=%s epoch=%d key=%s nonce=%s" % (
                record["cipher"], frame.epoch, record["keyId"][:16],
                record["nonce"])
        else:
            text += " plaintext"
        if self.args.save:
            path = os.path.join(self.args.save, "%05d-%s-%s.xtmp" % (
                self.count, direction, _typeName(frame.type).split(" ")[0]))
            with open(path, "wb") as f:
                f.write(frame.encode())
            record["file"] = path
        self.line(text, record)
        if self.args.count and self.count >= self.args.count and \
                not self.done.called:
            self.done.callback(None)


def _typeName(value):
    try:
        return codec.MessageType(value).name
    except ValueError:
        return "%#04x" % (value,)


class _Side(Protocol):
    """
    One end of a relayed connection; C{other} is the other end.
    """

    other = None

    def __init__(self, capture, number, direction):
        self.capture = capture
        self.number = number
        self.direction = direction
        self.decoder = codec.Decoder(capture.args.max_payload)
        self.valid = True
        self.held = []

    def dataReceived(self, data):
        if self.other is None or self.other.transport is None:
            self.held.append(data)
        else:
            self.other.transport.write(data)
        if self.valid:
            self.decoder.append(data)
            try:
                for frame in self.decoder.frames():
                    self.capture.frame(self.number, self.direction, frame)
            except Exception as e:
                self.valid = False
                self.capture.line(
                    "conn %d %s: not valid XTMP from here on (relayed as it "
                    "is): %s: %s" % (self.number, self.direction,
                                     type(e).__name__, e),
                    {"connection": self.number, "direction": self.direction,
                     "error": type(e).__name__, "message": str(e)})

    def joined(self, other):
        self.other = other
        other.other = self
        self.transport.registerProducer(other.transport, True)
        other.transport.registerProducer(self.transport, True)
        held, self.held = self.held, []
        for data in held:
            other.transport.write(data)
        self.transport.resumeProducing()

    def connectionMade(self):
        if self.direction == "c2s":
            self.capture.opened()

    def connectionLost(self, reason):
        if self.direction == "c2s":
            self.capture.closed()
        if self.other is not None and self.other.transport is not None:
            self.other.transport.loseConnection()


class _RelayFactory(Factory):
    def __init__(self, capture, target, reactor):
        self.capture = capture
        self.target = target
        self.reactor = reactor

    def buildProtocol(self, address):
        self.capture.connections += 1
        number = self.capture.connections
        client = _Side(self.capture, number, "c2s")
        self.reactor.callLater(0, self._open, client)
        return client

    def _open(self, client):
        from twisted.internet.protocol import Factory as Plain
        client.transport.pauseProducing()
        server = _Side(self.capture, client.number, "s2c")
        d = self.target.connect(Plain.forProtocol(lambda: server))

        def failed(reason):
            self.capture.line("conn %d: cannot connect to the server: %s"
                              % (client.number, reason.getErrorMessage()),
                              {"connection": client.number,
                               "error": reason.getErrorMessage()})
            client.transport.abortConnection()

        d.addCallbacks(lambda _: client.joined(server), failed)


def _capture(reactor, args):
    from twisted.internet.endpoints import clientFromString, serverFromString

    from muxframe.cli.common import clientEndpointString
    from muxframe.tls import tolerateALPN
    _checkLoopback(args.listen)
    description = clientEndpointString(args.connect, "--connect")
    try:
        target = clientFromString(reactor, description)
        listen = tolerateALPN(serverFromString(reactor, args.listen))
    except Exception as e:
        raise UsageError("bad endpoint: %s" % (e,))
    done = Deferred()
    capture = Capture(args, done)

    def listening(port):
        host = port.getHost()
        where = "%s:%s" % (getattr(host, "host", host),
                           getattr(host, "port", ""))
        capture.line("capture: listening on %s, relaying to %s" % (
            where, args.connect), {"listening": where, "connect": args.connect,
                                   "port": getattr(host, "port", None)})
        if args.duration:
            reactor.callLater(args.duration, lambda: None if done.called
                              else done.callback(None))
        reactor.addSystemEventTrigger(
            "before", "shutdown", lambda: None if done.called
            else done.callback(None))
        # Enough: take no more connections, let the open ones finish.
        done.addCallback(lambda _: port.stopListening())
        done.addCallback(lambda _: capture.whenIdle(reactor, 5.0))
        return done.addCallback(
            lambda _: capture.line("capture: %d messages on %d connections"
                                   % (capture.count, capture.connections),
                                   {"messages": capture.count,
                                    "connections": capture.connections}))

    return listen.listen(_RelayFactory(capture, target, reactor)).addCallback(
        listening).addCallback(lambda _: 0)


__all__ = ["addCapture"]
