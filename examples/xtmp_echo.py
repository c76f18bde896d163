"""
An XTMP server and client in one process over loopback TCP: the client
authenticates with its Ed25519 identity, pins the server's key, makes a
request and sends an acknowledged message.

Run:  python examples/xtmp_echo.py
"""

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from muxframe.xtmp import (
    Flags, Identity, XTMPClientFactory, XTMPServerFactory, connectXTMP,
)

ECHO = 0x80
NOTE = 0x81


@inlineCallbacks
def main(reactor):
    serverIdentity = Identity.generate()
    clientIdentity = Identity.generate()
    noted = Deferred()

    server = XTMPServerFactory(serverIdentity,
                               authorizedKeys=[clientIdentity.public])
    # A handler that returns bytes answers the request with them.
    server.setHandler(ECHO, lambda protocol, message: message.payload.upper())
    server.setHandler(NOTE, lambda protocol, message: noted.callback(
        message.payload))
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        server)

    client = XTMPClientFactory(serverKey=serverIdentity.public,
                               identity=clientIdentity)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    protocol = yield connectXTMP(endpoint, client)
    print("session %#x, cipher %s" % (protocol.sessionId,
                                      protocol.result.cipher.name))

    reply = yield protocol.request(ECHO, b"hello, xtmp", timeout=5)
    print("reply:", reply.payload.decode())

    protocol.send(NOTE, b"delivered exactly once", Flags.REQUIRES_ACK)
    print("server got:", (yield noted).decode())

    closed = protocol.whenClosed()
    protocol.disconnect()
    yield closed
    yield port.stopListening()


if __name__ == "__main__":
    task.react(main)
