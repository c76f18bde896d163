"""
AMP RPC over MIO streams: an AMP responder serves every stream a client
opens; the client runs several AMP conversations at once, one per stream, over
one MIO connection.

Run: C{python3 examples/amp_over_mio.py}
"""

import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint


class Sum(amp.Command):
    """
    Add two integers.
    """

    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer()), (b"stream", amp.Unicode())]


class Calculator(amp.AMP):
    """
    The server side: answers L{Sum} and says which stream it ran on.
    """

    @Sum.responder
    def sum(self, a, b):
        return {"total": a + b, "stream": str(self.transport.getPeer().streamId)}


@defer.inlineCallbacks
def main(reactor, count="4"):
    server = MultiplexedServerEndpoint(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), framing="mio")
    port = yield server.listen(Factory.forProtocol(Calculator))
    client = MultiplexedClientEndpoint(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), framing="mio")
    protocols = yield defer.gatherResults(
        [client.connect(Factory.forProtocol(amp.AMP)) for _ in range(int(count))])
    calls = []
    for i, protocol in enumerate(protocols):
        for j in range(3):
            calls.append(((i, j), protocol.callRemote(Sum, a=i * 100, b=j)))
    answers = yield defer.gatherResults([d for _, d in calls])
    ok = True
    for ((i, j), _), answer in zip(calls, answers):
        print("Sum(a=%d, b=%d) = %d on stream %s" % (i * 100, j, answer["total"], answer["stream"]))
        ok = ok and answer["total"] == i * 100 + j
    print("%d calls on %d streams over %d MIO connection: %s" % (
        len(calls), len(protocols), len(server.multiplexers), "ok" if ok else "FAILED"))
    for protocol in protocols:
        protocol.transport.loseConnection()
    yield client.stop()
    yield port.stopListening(1)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
