"""
Tests for L{muxframe.server.measures} and where the server feeds them:
per-type message counts that add up to the sessions' own counters, and
latency histograms of handlers and routed requests.
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from muxframe.server.measures import Histogram, MessageTypeCounts
from muxframe.xtmp.codec import MessageType

from tests.test_server_support import ALICE, BOB, Harness, result


class HistogramTests(SynchronousTestCase):
    def test_buckets(self):
        h = Histogram((0.1, 1.0))
        for value in (0.05, 0.1, 0.5, 3.0):
            h.observe(value)
        self.assertEqual(h.counts, [2, 1, 1])
        self.assertEqual(h.cumulative(), [(0.1, 2), (1.0, 3), (float("inf"), 4)])
        self.assertEqual((h.count, h.sum), (4, 3.65))
        self.assertEqual(h.asDict()["buckets"][-1], ["+Inf", 4])

    def test_boundsAscending(self):
        self.assertRaises(ValueError, Histogram, (1.0, 0.5))
        self.assertRaises(ValueError, Histogram, (1.0, 1.0))


class ServerMeasuresTests(SynchronousTestCase):
    """
    A server's sessions count messages by type and time their handling.
    """

    def test_typesAddUpToCounters(self):
        h = Harness()
        h.server.setHandler(0x20, lambda s, m: b"ok")
        client, serverSide, _ = h.connect(ALICE)
        h.flush()
        for _ in range(3):
            client.request(0x20, b"x", timeout=5)
        client.send(0x21, b"y")
        client.subscribe("news", lambda m: None)
        h.flush()
        h.server.publish("news", b"n", MessageType.EventStream)
        h.flush()
        counts = h.server.messageTypes
        self.assertIsInstance(counts, MessageTypeCounts)
        self.assertEqual(counts.received[0x20], 3)
        self.assertEqual(counts.received[0x21], 1)
        self.assertEqual(counts.sent[0x20], 3)
        self.assertEqual(counts.sent[MessageType.EventStream], 1)
        received, sent = counts.totals()
        self.assertEqual(received, serverSide.counters["messagesReceived"])
        self.assertEqual(sent, serverSide.counters["messagesSent"])
        self.assertEqual(h.server.stats()["messages"]["received"][0x20], 3)

    def test_handlerLatency(self):
        h = Harness()
        pending = Deferred()
        h.server.setHandler(0x20, lambda s, m: pending)
        client, _, _ = h.connect(ALICE)
        h.flush()
        d = client.request(0x20, b"x", timeout=5)
        h.flush()
        latency = h.server.router.latency
        self.assertEqual(latency.count, 0)
        h.clock.advance(0.3)
        pending.callback(b"done")
        h.flush()
        self.assertEqual(result(d).payload, b"done")
        self.assertEqual(latency.count, 1)
        self.assertAlmostEqual(latency.sum, 0.3)

    def test_requestLatency(self):
        h = Harness()
        responder, _, _ = h.connect(BOB)
        requester, _, _ = h.connect(ALICE)
        held = []
        responder.subscribe("svc", held.append)
        h.flush()
        d = requester.request(0x41, b"q", subject="svc", timeout=5)
        h.flush()
        h.clock.advance(0.25)
        responder.respond(held[0], b"a")
        h.flush()
        self.assertEqual(result(d).payload, b"a")
        latency = h.server.broker.latency
        self.assertEqual(latency.count, 1)
        self.assertAlmostEqual(latency.sum, 0.25)
