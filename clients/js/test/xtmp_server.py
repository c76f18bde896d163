"""
A real muxframe XTMP server for the JavaScript client's tests, on
127.0.0.1 with random ports, stopped by closing its stdin or SIGTERM.

 - ws://127.0.0.1:PORT/xtmp: an XTMPServerFactory (relayStreams) on a
   WebSocketServerEndpoint that also serves --static (the page and the JS
   bundle) and POST /report (a page's report, printed as an event);
 - ws://127.0.0.1:TAMPERPORT/tamper: the same server, whose answer to a
   request of type 0x31 has its last byte flipped on the wire; it allows
   the first endpoint's origin (the page's), nothing else;
 - a Python XTMP client (over TCP) that publishes three messages on the
   stream "prices" every time a session subscribes to it.

Prints one JSON line per event: first {"event": "listening", "port",
"tamperPort", "tcpPort", "serverKey", "fingerprint"}, then "subscribed",
"published", "report", "request".

Run with PYTHONPATH at the repository root.
"""

import argparse
import json
import os
import signal
import sys

from twisted.internet import reactor, stdio
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.static import File

from muxframe.web import WebSocketServerEndpoint
from muxframe.xtmp import (
    Identity, PublicIdentity, XTMPClientFactory, XTMPServerFactory,
    connectXTMP,
)

PING = 0x30
TAMPER = 0x31
SILENT = 0x32
RECORD = 0x10


class Control(Protocol):
    """
    Standard input and output: events are written here (stdio made the
    descriptors non-blocking, so sys.stdout must not be used); the end of
    standard input stops the server.
    """

    def connectionLost(self, reason):
        if reactor.running:
            reactor.stop()


CONTROL = Control()


def emit(event, **fields):
    fields["event"] = event
    CONTROL.transport.write(json.dumps(fields).encode() + b"\n")


class Report(Resource):
    """
    POST /report: a page reports what it saw.
    """

    isLeaf = True

    def render_POST(self, request):
        body = request.content.read(1 << 20)
        try:
            report = json.loads(body)
        except ValueError:
            report = {"unparsable": body.decode("utf-8", "replace")}
        emit("report", report=report)
        return b"ok"


class TamperingWrapper(ProtocolWrapper):
    """
    Flips the last byte of the next write once armed.
    """

    armed = False

    def write(self, data):
        if self.armed and data:
            self.armed = False
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        ProtocolWrapper.write(self, data)

    def writeSequence(self, data):
        self.write(b"".join(data))


class TamperingFactory(WrappingFactory):
    protocol = TamperingWrapper


class Server(XTMPServerFactory):
    """
    The test server: answers PING, lets everyone subscribe, and has the
    publisher publish on each new "prices" subscription.
    """

    publisher = None

    def sessionStarted(self, protocol):
        XTMPServerFactory.sessionStarted(self, protocol)
        protocol.whenClosed().addCallback(lambda why: emit(
            "sessionClosed", sessionId="%x" % (protocol.sessionId,),
            reason=type(why).__name__, code=getattr(why, "code", None)))

    def authorizeSubscribe(self, protocol, name):
        emit("subscribed", name=name, sessionId=protocol.sessionId)
        if name == "prices" and self.publisher is not None:
            reactor.callLater(0.05, self.publisher, name)
        return True


def ping(protocol, message):
    emit("request", type=message.type, size=len(message.payload),
         payload=message.payload[:64].decode("utf-8", "replace"))
    return b"pong:" + message.payload


def silent(protocol, message):
    from twisted.internet.defer import Deferred
    return Deferred()  # never answered: the client's request times out


def record(protocol, message):
    emit("recorded", type=message.type, size=len(message.payload),
         deliveryId=message.deliveryId)


def tamper(protocol, message):
    protocol.transport.armed = True
    return b"this answer is tampered with on the wire"


@inlineCallbacks
def main(options):
    identity = Identity.generate(withMLDSA=options.mldsa)
    authorized = [PublicIdentity.decode(bytes.fromhex(h))[0]
                  for h in options.authorize]
    token = options.token.encode() if options.token else None
    settings = {}
    if options.key_update_messages:
        settings["keyUpdateMessages"] = options.key_update_messages
    if options.heartbeat_interval:
        settings["heartbeatInterval"] = options.heartbeat_interval

    def makeServer():
        server = Server(identity, authorizedKeys=authorized + [publisherId.public],
                        checkToken=(lambda t: t == token) if token else None,
                        relayStreams=True, **settings)
        server.setHandler(PING, ping)
        server.setHandler(TAMPER, tamper)
        server.setHandler(SILENT, silent)
        server.setHandler(RECORD, record)
        return server

    publisherId = Identity.generate()
    server = makeServer()
    static = Resource()
    if options.static:
        static = File(options.static)
    static.putChild(b"report", Report())
    port = yield WebSocketServerEndpoint(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), path="/xtmp",
        static=static, reactor=reactor).listen(server)
    tcpPort = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1") \
        .listen(server)
    origin = "http://127.0.0.1:%d" % (port.getHost().port,)
    tamperServer = makeServer()
    tamperPort = yield WebSocketServerEndpoint(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), path="/tamper",
        allowedOrigins=[origin], reactor=reactor,
    ).listen(TamperingFactory(tamperServer))

    publisher = yield connectXTMP(
        TCP4ClientEndpoint(reactor, "127.0.0.1", tcpPort.getHost().port),
        XTMPClientFactory(serverKey=identity.public, identity=publisherId))
    counter = [0]

    def publish(name):
        for _ in range(3):
            counter[0] += 1
            payload = b"price %d" % (counter[0],)
            publisher.publish(name, payload)
            emit("published", name=name, payload=payload.decode())

    server.publisher = publish
    emit("listening", port=port.getHost().port,
         tamperPort=tamperPort.getHost().port, tcpPort=tcpPort.getHost().port,
         serverKey=identity.public.encode().hex(),
         fingerprint=identity.public.fingerprint)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", default="")
    parser.add_argument("--authorize", action="append", default=[])
    parser.add_argument("--static", default="")
    parser.add_argument("--key-update-messages", type=int, default=0)
    parser.add_argument("--heartbeat-interval", type=float, default=0)
    parser.add_argument("--mldsa", action="store_true",
                        help="the server identity also has an ML-DSA-65 key")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: reactor.callFromThread(reactor.stop))
    stdio.StandardIO(CONTROL)
    reactor.callWhenRunning(
        lambda: main(options).addErrback(
            lambda f: (emit("failed", error=f.getTraceback()), reactor.stop())))
    reactor.run()
    os._exit(0)
