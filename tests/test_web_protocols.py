"""
muxframe's protocols over C{ws:} endpoints, unchanged: an XTMP session and
a MIO multiplexed connection, each with a 100 MiB transfer verified by
SHA-256 and a paused reader bounding the sender.
"""

import hashlib

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint
from muxframe.xtmp import connectXTMP

from tests.conformance import waitUntil
from tests.test_web_transport import (
    MiB, Sender, Sink, SinkFactory, steadilyPaused,
)
from tests.test_xtmp_transports import clientFactory, serverFactory

TOTAL = 100 * MiB


def parsed(description):
    """
    The (args, kwargs) of an endpoint description, as Twisted splits it.
    """
    from twisted.internet.endpoints import _parse
    args, kwargs = _parse(description)
    return args, kwargs


def wsServer(description):
    """
    The endpoint C{ws:<description>} names, from this tree's parser.

    (C{serverFromString} finds the parser through the plugin; on a machine
    where an older muxframe is installed, its plugin shadows this tree's,
    so the strings themselves are checked in L{tests.test_web_endpointstrings}.)
    """
    from muxframe.web.endpointstrings import parseServer
    args, kwargs = parsed(description)
    return parseServer(reactor, "ws", args, kwargs)


def wsClient(description):
    """
    The client endpoint C{ws:<description>} names, from this tree's parser.
    """
    from muxframe.web.endpointstrings import parseClient
    args, kwargs = parsed(description)
    return parseClient(reactor, "ws", args, kwargs)


class XTMPOverWebSocketTests(TestCase):
    """
    An XTMP session over C{ws:tcp:...} endpoints.
    """

    timeout = 180

    @inlineCallbacks
    def test_requestAndBulkWithPausedReader(self):
        got = {"bytes": 0, "messages": 0}
        digest = hashlib.sha256()

        def received(protocol, message):
            got["bytes"] += len(message.payload)
            got["messages"] += 1
            digest.update(message.payload)

        xs = serverFactory(None)
        xs.setHandler(0x10, received)
        port = yield wsServer("tcp:0:interface=127.0.0.1:path=/xtmp").listen(xs)
        self.addCleanup(port.stopListening)
        endpoint = wsClient("tcp:127.0.0.1:%d:path=/xtmp"
                            % (port.getHost().port,))
        client = yield connectXTMP(endpoint,
                                   clientFactory(None, maxQueuedBytes=8 * MiB))
        reply = yield client.request(0x30, b"over websocket", timeout=10)
        self.assertEqual(reply.payload, b"pong:over websocket")
        yield waitUntil(lambda: xs.live, "the server session")
        (server,) = xs.live.values()
        self.assertIsNotNone(server.transport.request)

        server.pauseDelivery()
        sender = Sender(lambda data: client.send(0x10, data), TOTAL).startOn(
            client)
        yield steadilyPaused(sender)
        # Nothing was delivered while paused; the sender stopped after its
        # queue bound plus what sockets hold, far short of the transfer.
        self.assertEqual(got["bytes"], 0)
        self.assertLess(sender.sent, 40 * MiB)
        self.assertLessEqual(client.connection.bufferedBytes, 8 * MiB)
        server.resumeDelivery()
        yield sender.done
        yield waitUntil(lambda: got["bytes"] == TOTAL, "100 MiB", timeout=150)
        self.assertEqual(digest.digest(), sender.hash.digest())
        self.assertEqual(got["messages"], -(-TOTAL // sender.chunk))
        self.assertGreaterEqual(sender.resumes, 1)
        client.unregisterProducer()
        closed = [client.whenClosed(), server.whenClosed()]
        client.disconnect()
        yield closed[0]
        yield closed[1]


class MIOOverWebSocketTests(TestCase):
    """
    A MIO multiplexed connection over C{ws:} endpoints.
    """

    timeout = 180
    framing = "mio"
    total = TOTAL

    @inlineCallbacks
    def test_streamsAndBulkWithPausedReader(self):
        sinks = SinkFactory(startPaused=True)
        server = MultiplexedServerEndpoint(
            wsServer("tcp:0:interface=127.0.0.1:path=/mux"), self.framing)
        port = yield server.listen(sinks)
        self.addCleanup(port.stopListening)
        endpoint = MultiplexedClientEndpoint(
            wsClient("tcp:127.0.0.1:%d:path=/mux" % (port.getHost().port,)),
            self.framing)
        self.addCleanup(endpoint.stop)
        first = yield endpoint.connect(Factory.forProtocol(Sink))
        second = yield endpoint.connect(Factory.forProtocol(Sink))
        # (A BMP stream reaches the peer with its first data.)
        sender = Sender(first.transport.write, self.total).startOn(
            first.transport)
        yield waitUntil(lambda: len(sinks.built) >= 1, "the bulk stream")
        second.transport.write(b"small")
        yield waitUntil(lambda: len(sinks.built) == 2, "two streams")
        # Two streams, one WebSocket connection.
        self.assertEqual(len(port.multiplexers), 1)
        bulkSink, otherSink = sinks.built

        yield steadilyPaused(sender)
        # The paused stream holds the sender to its window; the other
        # stream still flows.
        self.assertEqual(bulkSink.received, 0)
        self.assertLess(sender.sent, 16 * MiB)
        otherSink.transport.resumeProducing()
        yield waitUntil(lambda: otherSink.received == 5, "the other stream")

        bulkSink.transport.resumeProducing()
        yield sender.done
        yield waitUntil(lambda: bulkSink.received == self.total,
                        "every byte", timeout=150)
        self.assertEqual(bulkSink.hash.digest(), sender.hash.digest())
        first.transport.unregisterProducer()
        first.transport.loseConnection()
        second.transport.loseConnection()
        yield bulkSink.lost
        yield otherSink.lost


class BMPOverWebSocketTests(MIOOverWebSocketTests):
    """
    The same with BMP framing (16 MiB: BMP acknowledges every frame).
    """

    framing = "bmp"
    total = 16 * MiB
