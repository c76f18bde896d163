"""
Two XTMP sessions over two streams of one multiplexed (MIO) TCP
connection, and a publish/subscribe stream.

Run:  python examples/xtmp_mux.py
"""

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol,
)

from muxframe import MultiplexerFactory
from muxframe.xtmp import Identity, XTMPClientFactory, XTMPServerFactory

WHO = 0x82


@inlineCallbacks
def main(reactor):
    serverIdentity = Identity.generate()
    server = XTMPServerFactory(serverIdentity,
                               checkToken=lambda token: token == b"s3cret")
    server.setHandler(WHO, lambda p, m: b"session %#x" % (p.sessionId,))
    # Each stream the client opens becomes one XTMP session.
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        MultiplexerFactory(server, framing="mio", role="server"))

    mux = yield connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        MultiplexerFactory(None, framing="mio", role="client")
        .buildProtocol(None))
    sessions = []
    for _ in range(2):
        factory = XTMPClientFactory(serverKey=serverIdentity.public,
                                    token=b"s3cret")
        protocol = yield mux.openStream(factory)
        sessions.append((yield protocol.whenHandshakeDone()))
    for protocol in sessions:
        reply = yield protocol.request(WHO, b"")
        print("stream %s: %s" % (protocol.transport.getHost().streamId,
                                 reply.payload.decode()))

    got = Deferred()
    yield sessions[0].subscribe("news", lambda m: got.callback(m.payload))
    print("subscribers:", server.publish("news", b"extra! extra!"))
    print("received:", (yield got).decode())

    for protocol in sessions:
        closed = protocol.whenClosed()
        protocol.disconnect()
        yield closed
    mux.transport.loseConnection()
    yield port.stopListening()


if __name__ == "__main__":
    task.react(main)
