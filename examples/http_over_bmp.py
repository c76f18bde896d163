"""
HTTP/1.1 over BMP streams: a C{twisted.web} site is served on the streams of
a L{MultiplexedServerEndpoint}, and fetched with C{twisted.web.client.Agent}
through a L{MultiplexedClientEndpoint}, every request on its own stream of
one shared BMP connection.

Run: C{python3 examples/http_over_bmp.py}
"""

import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import Site

from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint


class Hello(Resource):
    """
    Answer C{/hello/NAME} with a greeting naming the stream it came on.
    """

    isLeaf = True

    def render_GET(self, request):
        name = request.postpath[-1] if request.postpath else b"world"
        stream = request.transport.getPeer().streamId
        request.setHeader(b"content-type", b"text/plain")
        return b"hello %s (stream %s)\n" % (
            name, stream if isinstance(stream, bytes) else str(stream).encode())


class BodyCollector(Protocol):
    """
    Collect a response body; C{done} fires with it.
    """

    def __init__(self):
        self.parts = []
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.parts.append(data)

    def connectionLost(self, reason):
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def readBody(response):
    """
    Return a Deferred firing with C{response}'s body.
    """
    collector = BodyCollector()
    response.deliverBody(collector)
    return collector.done


class StreamEndpointFactory:
    """
    Give Agent the same multiplexed endpoint for every URI: each connection
    it makes is a new stream.
    """

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def endpointForURI(self, uri):
        return self.endpoint


@defer.inlineCallbacks
def main(reactor, count="5"):
    server = MultiplexedServerEndpoint(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), framing="bmp")
    port = yield server.listen(Site(Hello()))
    client = MultiplexedClientEndpoint(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), framing="bmp")
    agent = Agent.usingEndpointFactory(reactor, StreamEndpointFactory(client))
    names = [b"stream-%d" % (i,) for i in range(int(count))]

    def fetch(name):
        d = agent.request(b"GET", b"http://muxframe.invalid/hello/" + name)
        d.addCallback(lambda response: readBody(response).addCallback(
            lambda body: (response, body)))
        return d

    results = yield defer.gatherResults([fetch(name) for name in names])
    ok = True
    for name, (response, body) in zip(names, results):
        print("GET /hello/%s -> %d %s" % (name.decode(), response.code, body.decode().strip()))
        ok = ok and response.code == 200 and body.startswith(b"hello " + name)
    print("%d requests over %d BMP connection: %s" % (
        len(names), len(server.multiplexers), "ok" if ok else "FAILED"))
    yield client.stop()
    yield port.stopListening(1)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
