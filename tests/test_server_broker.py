"""
The broker through real XTMP sessions (in memory, fake clock): wildcard
subscribers, queue groups, publishing from clients and the server,
broadcast, request/reply between sessions with its typed failures,
permissions, and the slow-consumer policy.
"""

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from muxframe.server.interfaces import IBroker, ISession, ISessionRegistry
from muxframe.xtmp import PeerError, XTMPErrorCode
from muxframe.xtmp.codec import MessageType
from muxframe.xtmp.errors import SendQueueFull

from tests.support import assertSameSendState
from tests.test_server_support import (
    ALICE, BOB, CAROL, Harness, config, result,
)


def failureCode(d):
    f = result(d)
    f.trap(PeerError)
    return f.value.code


class SubjectTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness()

    def test_wildcardsAndPublishFromClient(self):
        """
        A client's publish reaches wildcard and exact subscribers, once
        each, with the real subject.
        """
        got = {"star": [], "rest": [], "exact": []}
        a, _, _ = self.h.connect(ALICE)
        b, _, _ = self.h.connect(BOB)
        c, _, _ = self.h.connect(CAROL)
        a.subscribe("orders.*", lambda m: got["star"].append(m.streamName))
        b.subscribe("orders.>", lambda m: got["rest"].append(m.streamName))
        b.subscribe("orders.new", lambda m: got["exact"].append(m.payload))
        self.h.flush()
        c.publish("orders.new", b"1", MessageType.EventStream)
        c.publish("orders.new.eu", b"2")
        c.publish("other", b"3")
        self.h.flush()
        self.assertEqual(got["star"], ["orders.new"])
        self.assertEqual(got["rest"], ["orders.new", "orders.new.eu"])
        self.assertEqual(got["exact"], [b"1"])
        self.assertEqual(self.h.server.broker.counters["deliveries"], 3)

    def test_queueGroup(self):
        """
        Each message goes to one member of a queue group, round robin,
        while plain subscribers get all.
        """
        members = [self.h.connect(identity)[0] for identity in (ALICE, BOB)]
        watcher, _, _ = self.h.connect(CAROL)
        got = {0: [], 1: [], "w": []}
        for index, member in enumerate(members):
            member.subscribe("jobs.*", lambda m, i=index: got[i].append(m.payload),
                             group="workers")
        watcher.subscribe("jobs.>", lambda m: got["w"].append(m.payload))
        self.h.flush()
        for n in range(10):
            self.h.server.publish("jobs.run", b"%d" % n)
        self.h.flush()
        self.assertEqual(len(got[0]) + len(got[1]), 10)
        self.assertEqual(sorted(got[0] + got[1]), sorted(got["w"]))
        self.assertEqual(len(got[0]), 5)

    def test_queueGroupTurnGoesWithGroup(self):
        """
        A queue group's round-robin turn lives as long as the group: after
        many groups came, took a message and went, the subscription table
        holds nothing for them (before, a turn per C{(pattern, group)}
        stayed for good), and while a group lives its members still take
        turns.
        """
        a, _, _ = self.h.connect(ALICE)
        broker = self.h.server.broker
        for i in range(200):
            subject = "leak.%d" % (i,)
            a.subscribe(subject, lambda m: None, group="g")
            self.h.flush()
            self.assertEqual(self.h.server.publish(subject, b"x"), 1)
            a.unsubscribe(subject)
            self.h.flush()
        self.assertEqual(len(broker.table), 0)
        self.assertEqual(broker._interests, {})
        self.assertTrue(broker.table.sublist._root.isEmpty())
        held = {name: value for name, value in vars(broker.table).items()
                if isinstance(value, dict) and value}
        self.assertEqual(held, {})

        b, _, _ = self.h.connect(BOB)
        got = []
        a.subscribe("jobs.run", lambda m: got.append("a"), group="g")
        b.subscribe("jobs.run", lambda m: got.append("b"), group="g")
        self.h.flush()
        for n in range(6):
            self.h.server.publish("jobs.run", b"%d" % (n,))
            self.h.flush()
        self.assertEqual(sorted(got), ["a"] * 3 + ["b"] * 3)
        self.assertEqual(got[0::2], [got[0]] * 3)
        self.assertNotEqual(got[0], got[1])

    def test_broadcast(self):
        clients = [self.h.connect(i)[0] for i in (ALICE, BOB)]
        got = []
        for c in clients:
            c.subscribe("broadcast", lambda m: got.append(m.payload))
        self.h.flush()
        self.assertEqual(self.h.server.broadcast(b"hello"), 2)
        self.h.flush()
        self.assertEqual(got, [b"hello", b"hello"])

    def test_badSubjects(self):
        a, _, _ = self.h.connect()
        d = a.subscribe("a..b", lambda m: None)
        g = a.subscribe("a.b", lambda m: None, group="bad.group")
        self.h.flush()
        self.assertEqual(failureCode(d), XTMPErrorCode.BAD_SUBJECT)
        self.assertEqual(failureCode(g), XTMPErrorCode.BAD_SUBJECT)
        errors = []
        a.errorReceived = lambda code, reason: errors.append(code)
        a.publish("orders.*", b"x")
        self.h.flush()
        self.assertEqual(errors, [XTMPErrorCode.BAD_SUBJECT])

    def test_unsubscribeAndDisconnectForget(self):
        a, sa, _ = self.h.connect()
        got = []
        a.subscribe("x.*", got.append)
        self.h.flush()
        self.assertEqual(sa.subscriptions(), [("x.*", None)])
        a.unsubscribe("x.*")
        self.h.flush()
        self.assertEqual(self.h.server.publish("x.y", b""), 0)
        a.subscribe("x.*", got.append)
        self.h.flush()
        a.transport.loseConnection()
        self.h.flush()
        self.assertEqual(len(self.h.server.broker.table), 0)

    def test_interfaces(self):
        self.assertTrue(IBroker.providedBy(self.h.server.broker))
        self.assertTrue(ISessionRegistry.providedBy(self.h.server.registry))
        _, s, _ = self.h.connect()
        self.assertTrue(ISession.providedBy(s))


class RequestReplyTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness()
        self.responder, _, _ = self.h.connect(BOB)
        self.requester, _, _ = self.h.connect(ALICE)

    def serve(self, answer):
        def callback(message):
            value = answer(message)
            if value is not None:
                self.responder.respond(message, value)
        self.responder.subscribe("svc.echo", callback, group="echoers")
        self.h.flush()

    def test_requestReply(self):
        """
        A request to a subject reaches the responder; its answer comes back
        to the requester as the response.
        """
        self.serve(lambda m: b"echo:" + m.payload)
        d = self.requester.request(0x41, b"hi", subject="svc.echo", timeout=5)
        self.h.flush()
        self.assertEqual(result(d).payload, b"echo:hi")
        self.assertEqual(self.h.server.broker.counters["replies"], 1)

    def test_noResponders(self):
        d = self.requester.request(0x41, b"hi", subject="svc.none", timeout=5)
        self.h.flush()
        self.assertEqual(failureCode(d), XTMPErrorCode.NO_RESPONDERS)

    def test_responderError(self):
        def fail(message):
            self.responder.respondError(message, XTMPErrorCode.APPLICATION_ERROR,
                                        "nope")
        self.serve(fail)
        d = self.requester.request(0x41, b"hi", subject="svc.echo", timeout=5)
        self.h.flush()
        f = result(d)
        self.assertEqual((f.value.code, f.value.reason),
                         (XTMPErrorCode.APPLICATION_ERROR, "nope"))

    def test_responderGone(self):
        self.serve(lambda m: None)
        d = self.requester.request(0x41, b"hi", subject="svc.echo", timeout=60)
        self.h.flush()
        self.responder.transport.loseConnection()
        self.h.flush()
        self.assertEqual(failureCode(d), XTMPErrorCode.NO_RESPONDERS)

    def test_requesterFullClosedNotResponder(self):
        """
        An answer relayed to a requester whose send buffers are full
        closes the requester (RATE_LIMITED, as a handler's answer would);
        the responder, whose read carried the answer, is not touched.
        """
        served = self.h.server.registry.get(self.requester.sessionId)
        self.serve(lambda m: b"ok")

        def full(*args, **kwargs):
            raise SendQueueFull("requester full")

        served._send = full
        closed = self.requester.whenClosed()
        self.requester.request(0x41, b"hi", subject="svc.echo",
                               timeout=5).addErrback(lambda f: None)
        self.h.flush()
        self.assertEqual(result(closed).code, XTMPErrorCode.RATE_LIMITED)
        self.assertTrue(self.h.server.registry.get(
            self.responder.sessionId).isConnected())

    def test_brokerFaultLogged(self):
        """
        A fault of the broker's while relaying an answer is logged and does
        not reach the responder's connection.
        """
        self.serve(lambda m: b"ok")
        broker = self.h.server.broker

        def broken(*args):
            raise RuntimeError("broker bug")

        broker._answered = broken
        self.requester.request(0x41, b"hi", subject="svc.echo",
                               timeout=5).addErrback(lambda f: None)
        self.h.flush()
        self.assertEqual([str(f.value) for f in
                          self.flushLoggedErrors(RuntimeError)],
                         ["broker bug"])
        self.assertTrue(self.h.server.registry.get(
            self.responder.sessionId).isConnected())

    def test_timeout(self):
        self.serve(lambda m: None)
        d = self.requester.request(0x41, b"hi", subject="svc.echo", timeout=100)
        self.h.flush()
        self.h.clock.advance(31)
        self.h.flush()
        self.assertEqual(failureCode(d), XTMPErrorCode.TIMEOUT)
        self.assertEqual(len(self.h.server.broker.replies), 0)
        # The forwarded request no longer waits in the responder's session.
        served = self.h.server.registry.get(self.responder.sessionId)
        self.assertEqual(served.connection.pendingRequests, {})

    def test_otherForwardDropped(self):
        """
        A request to a subject two sessions serve (no queue group) reaches
        both; the first answer is the response, the other session's
        forwarded request is dropped, and its later answer goes nowhere.
        """
        other, _, _ = self.h.connect(CAROL)
        held = []
        self.responder.subscribe("svc.all", lambda m: self.responder.respond(
            m, b"first"))
        other.subscribe("svc.all", held.append)
        self.h.flush()
        d = self.requester.request(0x41, b"hi", subject="svc.all", timeout=5)
        self.h.flush()
        self.assertEqual(result(d).payload, b"first")
        self.assertEqual(len(held), 1)
        served = self.h.server.registry.get(other.sessionId)
        self.assertEqual(served.connection.pendingRequests, {})
        other.respond(held[0], b"late")
        self.h.flush()
        self.assertEqual(served.connection.counters.unmatchedResponses, 1)
        self.assertEqual(self.h.server.broker.counters["replies"], 1)

    def test_firstAnswerWins(self):
        """
        Two plain subscribers both get the request; the first answer is
        relayed, the second dropped.
        """
        other, _, _ = self.h.connect(CAROL)
        self.responder.subscribe("svc.x", lambda m: self.responder.respond(m, b"b"))
        other.subscribe("svc.x", lambda m: other.respond(m, b"c"))
        self.h.flush()
        d = self.requester.request(0x41, b"", subject="svc.x", timeout=5)
        self.h.flush()
        self.assertIn(result(d).payload, (b"b", b"c"))
        broker = self.h.server.broker
        self.assertEqual(broker.counters["replies"], 1)


class ControlTypedAnswerTests(SynchronousTestCase):
    """
    An answer of an XTMP control type (0x01 to 0x08) is never relayed as
    the answer to a routed request: the requester gets PROTOCOL_ERROR, and
    the broker counts and logs it.
    """

    def setUp(self):
        self.h = Harness()
        self.responder, _, _ = self.h.connect(BOB)
        self.requester, _, _ = self.h.connect(ALICE)
        self.broker = self.h.server.broker

    def assertNotRelayed(self, d, responder):
        f = result(d)
        f.trap(PeerError)
        self.assertEqual(f.value.code, XTMPErrorCode.PROTOCOL_ERROR)
        self.assertIn("0x07", f.value.reason)
        self.assertEqual(self.broker.counters["badReplies"], 1)
        self.assertEqual(self.broker.counters["replies"], 0)
        self.assertEqual(self.h.server.events.counts["bad_reply"], 1)
        self.assertEqual(self.logged[0]["responder"], responder)
        self.assertEqual(self.logged[0]["subject"], "svc.q")

    def observe(self):
        self.logged = []
        self.h.server.events.addObserver(
            lambda name, fields: self.logged.append(fields)
            if name == "bad_reply" else None)

    def test_fromSession(self):
        """
        A responder answering with a Subscribe-typed response (RESPONSE
        flag, junk payload): the requester's request fails with
        PROTOCOL_ERROR instead of firing with a type-0x07 message.
        """
        self.observe()
        self.responder.subscribe("svc.q", lambda m: self.responder.respond(
            m, b"\xff junk", messageType=MessageType.Subscribe))
        self.h.flush()
        d = self.requester.request(0x41, b"hi", subject="svc.q", timeout=5)
        self.h.flush()
        self.assertNotRelayed(d, "bob")
        self.assertTrue(self.requester.connection.state == "OPEN")
        # Scraped as an outcome of muxframe_xtmp_broker_replies.
        from muxframe.admin.xtmpstatus import XTMPStatus
        samples = XTMPStatus(self.h.server, self.h.server.config,
                             self.h.clock).metrics().samples
        self.assertIn((("bad_reply",), 1),
                      samples["muxframe_xtmp_broker_replies"])

    def test_fromAnotherNode(self):
        """
        The same answer from another process (the engine's forwarded
        request) is not relayed either.
        """
        from twisted.internet.defer import Deferred
        from muxframe.server.hub import _Answer
        self.observe()
        remote = Deferred()
        self.broker.engine.forward = lambda delivery, plan: [remote]
        d = self.requester.request(0x41, b"hi", subject="svc.q", timeout=5)
        self.h.flush()
        remote.callback(_Answer(MessageType.Subscribe, b"junk"))
        self.h.flush()
        self.assertNotRelayed(d, "another node")

    def test_forAnotherNode(self):
        """
        A request another process routed here gets the failure, not the
        control-typed answer.
        """
        from muxframe.server.hub import Delivery
        from muxframe.server.subjects import tokens
        self.observe()
        self.responder.subscribe("svc.q", lambda m: self.responder.respond(
            m, b"junk", messageType=MessageType.Unsubscribe))
        self.h.flush()
        d = self.broker.serveRequest(Delivery(
            "svc.q", tokens("svc.q"), 0x41, 0, b"hi"))
        self.h.flush()
        f = result(d)
        f.trap(PeerError)
        self.assertEqual(f.value.code, XTMPErrorCode.PROTOCOL_ERROR)
        self.assertEqual(self.broker.counters["badReplies"], 1)


class PermissionTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness(config(permissions__={
            "alice": {"publish": ["orders.>"],
                      "subscribe": {"allow": ["news.>"],
                                    "deny": ["news.secret.>"]}},
            "default": {"publish": {"deny": [">"]}}}))

    def test_publishAllowedAndDenied(self):
        a, _, _ = self.h.connect(ALICE)
        b, _, _ = self.h.connect(BOB)
        got, errors = [], []
        b.subscribe("orders.>", got.append)
        a.errorReceived = lambda code, reason: errors.append(code)
        self.h.flush()
        a.publish("orders.new", b"ok")
        a.publish("news.x", b"no")
        self.h.flush()
        self.assertEqual([m.payload for m in got], [b"ok"])
        self.assertEqual(errors, [XTMPErrorCode.PERMISSION_DENIED])
        # bob falls under default: no publishing at all.
        d = b.request(0x41, b"", subject="orders.new", timeout=5)
        self.h.flush()
        self.assertEqual(failureCode(d), XTMPErrorCode.PERMISSION_DENIED)

    def test_subscribeAndFilter(self):
        a, _, _ = self.h.connect(ALICE)
        got = []
        d1 = a.subscribe("news.>", got.append)
        d2 = a.subscribe("orders.*", got.append)
        self.h.flush()
        self.assertIsNotNone(result(d1))
        self.assertEqual(failureCode(d2), XTMPErrorCode.PERMISSION_DENIED)
        self.h.server.publish("news.sports", b"1")
        self.h.server.publish("news.secret.plans", b"2")
        self.h.flush()
        self.assertEqual([m.payload for m in got], [b"1"])
        # The refused subscription is counted; a filtered delivery is not
        # an error.
        self.assertEqual(self.h.server.broker.counters["permissionDenied"], 1)


class SlowConsumerTests(SynchronousTestCase):
    def test_pendingLimit(self):
        """
        A subscriber whose connection stops accepting writes is
        disconnected with SLOW_CONSUMER once its queue would pass
        max_pending; the other subscriber gets every message.
        """
        h = Harness(config(broker__max_pending=4096))
        slow, slowSide, _ = h.connect(ALICE)
        fast, _, _ = h.connect(BOB)
        got = []
        slow.subscribe("feed", lambda m: None)
        fast.subscribe("feed", got.append)
        h.flush()
        slowSide.pauseProducing()
        for n in range(100):
            h.server.publish("feed", b"%03d" % n + b"x" * 100)
        h.flush()
        self.assertEqual(len(got), 100)
        self.assertEqual(h.server.broker.counters["slowConsumers"], 1)
        self.assertEqual(result(slow.whenClosed()).code,
                         XTMPErrorCode.SLOW_CONSUMER)
        self.assertEqual(h.server.events.counts["slow_consumer"], 1)

    def test_writeDeadline(self):
        h = Harness(config(broker__write_deadline=5))
        slow, slowSide, _ = h.connect(ALICE)
        slow.subscribe("feed", lambda m: None)
        h.flush()
        slowSide.pauseProducing()
        h.server.publish("feed", b"1")
        h.clock.advance(4)
        h.server.publish("feed", b"2")
        self.assertTrue(slowSide.isConnected())
        h.clock.advance(2)
        h.server.publish("feed", b"3")
        self.assertFalse(slowSide.isConnected())
        self.assertEqual(h.server.broker.counters["slowConsumers"], 1)

    def test_queueGroupPrefersReadyMember(self):
        h = Harness()
        a, sa, _ = h.connect(ALICE)
        b, _, _ = h.connect(BOB)
        got = {"a": 0, "b": 0}
        a.subscribe("jobs", lambda m: got.__setitem__("a", got["a"] + 1), group="g")
        b.subscribe("jobs", lambda m: got.__setitem__("b", got["b"] + 1), group="g")
        h.flush()
        sa.pauseProducing()
        for _ in range(6):
            h.server.publish("jobs", b"x")
        sa.resumeProducing()
        h.flush()
        self.assertEqual(got, {"a": 0, "b": 6})


class WritesPerTurnTests(SynchronousTestCase):
    """
    A subscriber's fan-out frames of one reactor turn reach its transport
    in one write at the end of the turn, in order, before anything else
    the session writes.
    """

    def setUp(self):
        self.h = Harness()
        self.client, self.side, _ = self.h.connect(ALICE)
        self.got = []
        self.client.subscribe("feed", lambda m: self.got.append(m.payload))
        self.h.flush()
        self.writes = []
        self.sent = self.side.counters["messagesSent"]
        write = self.side.transport.write

        def counting(data):
            self.writes.append(data)
            write(data)
        self.side.transport.write = counting

    def test_oneWritePerTurn(self):
        for n in range(5):
            self.assertEqual(self.h.server.publish("feed", b"%d" % n), 1)
        self.assertEqual(self.writes, [])
        self.h.clock.advance(0)
        self.assertEqual(len(self.writes), 1)
        self.h.flush()
        self.assertEqual(self.got, [b"0", b"1", b"2", b"3", b"4"])
        self.assertEqual(self.h.server.broker.counters["deliveries"], 5)
        self.assertEqual(self.side.counters["messagesSent"], self.sent + 5)

    def test_otherWritesAfterHeld(self):
        """
        A message the session sends while frames are held goes after them
        (sequence numbers stay in order on the wire).
        """
        self.h.server.publish("feed", b"first")
        self.h.server.publish("feed", b"second")
        self.side.send(0x20, b"direct")
        # All written now, the held frames first.
        self.assertTrue(self.writes)
        order = []
        self.client.setHandler(0x20, lambda p, m: order.append(m.payload))
        self.client.subscribe("feed", lambda m: order.append(m.payload))
        self.h.flush()
        self.assertEqual(order, [b"first", b"second", b"direct"])
        self.assertTrue(self.side.isConnected())

    def test_heldAcrossKeyUpdates(self):
        """
        A turn's deliveries with key updates due among them, and the
        session's own sends between, reach the client in order (held
        bodies are sealed before anything else the session sends).
        """
        h = Harness(config(xtmp_protocol__key_update_messages=4))
        client, side, _ = h.connect(ALICE)
        order = []
        client.subscribe("feed", lambda m: order.append(m.payload))
        client.setHandler(0x20, lambda p, m: order.append(m.payload))
        h.flush()
        updates = side.connection.counters.keyUpdates
        expected = []
        for n in range(30):
            self.assertEqual(h.server.publish("feed", b"%02d" % n), 1)
            expected.append(b"%02d" % n)
            if n % 7 == 3:
                side.send(0x20, b"direct%d" % n)
                expected.append(b"direct%d" % n)
        h.clock.advance(0)
        h.flush()
        self.assertEqual(order, expected)
        self.assertGreaterEqual(side.connection.counters.keyUpdates - updates,
                                8)
        self.assertTrue(side.isConnected())
        self.assertEqual(client.connection.state, "OPEN")

    def test_holdLimit(self):
        """
        Past holdLimit bytes the held frames are written at once.
        """
        self.side.holdLimit = 1000
        for n in range(20):
            self.h.server.publish("feed", b"%02d" % n + b"x" * 100)
        self.assertTrue(self.writes)
        self.assertTrue(all(len(w) <= 1000 + 300 for w in self.writes))
        self.h.flush()
        self.assertEqual([p[:2] for p in self.got],
                         [b"%02d" % n for n in range(20)])

    def test_lostWhileHeld(self):
        """
        Frames held for a session whose connection is lost are dropped;
        the others still get theirs.
        """
        other, _, _ = self.h.connect(BOB)
        seen = []
        other.subscribe("feed", lambda m: seen.append(m.payload))
        self.h.flush()
        self.h.server.publish("feed", b"x")
        self.side.connectionLost(Failure(ConnectionDone()))
        self.h.flush()
        self.assertEqual(seen, [b"x"])
        self.assertEqual(self.writes, [])


class HeldBodiesTests(SynchronousTestCase):
    """
    XTMPProtocol.sendPreparedBody with C{hold}: a turn's later bodies go
    straight into the engine's L{HeldBodies} without visiting the engine,
    and the session's transport gets the bytes that sealing every body at
    once (the path without holding) gives, with the same counters and
    times, across key updates, holdLimit, the session's own sends and a
    paused transport.
    """

    def _compare(self, script, conf=None, holdLimit=None):
        """
        Run C{script} on a server session (holding, through its protocol)
        and on a copy of its engine (sealing each body at once); check
        both gave the same bytes, counters and times; return the client's
        payloads after it reads the session's bytes.
        """
        from muxframe.xtmp.codec import F, encodeName
        from muxframe.xtmp.connection import PreparedBody
        from tests.test_server_xtmphooks import _twin
        h = Harness(conf or config())
        client, side, _ = h.connect(ALICE)
        got = []
        client.subscribe("feed", lambda m: got.append(m.payload))
        client.setHandler(0x20, lambda p, m: got.append(m.payload))
        h.flush()
        if holdLimit is not None:
            side.holdLimit = holdLimit
        writes = []
        write = side.transport.write
        side.transport.write = writes.append
        conn = side.connection
        eager = _twin(conn)
        outEager = []
        hold = []
        n = 0
        now = h.clock.seconds()
        for step in script:
            now += 0.001
            if step == "body":
                body = PreparedBody(0x41, F.STREAM_DATA,
                                    encodeName("feed") + b"%03d" % n)
                n += 1
                self.assertTrue(side.sendPreparedBody(body, now, hold))
                outEager.append(eager.sealPrepared(body, now))
            elif step == "message":
                h.clock.advance(0.001)
                side.send(0x20, b"direct%d" % n)
                eager.sendMessage(0x20, b"direct%d" % n,
                                  now=h.clock.seconds(), immediate=True)
                outEager.append(eager.dataToSend(side.writeChunk,
                                                 h.clock.seconds()))
            elif step == "pause":
                side.pauseProducing()
                body = PreparedBody(0x41, F.STREAM_DATA, encodeName("feed"))
                self.assertFalse(side.sendPreparedBody(body, now, hold))
                side.resumeProducing()
                outEager.append(eager.dataToSend(side.writeChunk,
                                                 h.clock.seconds()))
            elif step == "release":
                for session in hold:
                    session.releaseHeld()
                del hold[:]
        for session in hold:
            session.releaseHeld()
        self.assertNotIn(None, outEager)
        wire = b"".join(writes)
        self.assertEqual(wire, b"".join(outEager))
        assertSameSendState(self, conn, eager)
        side.transport.write = write
        write(wire)
        h.flush()
        self.assertTrue(side.isConnected())
        return got

    def test_sameBytes(self):
        got = self._compare(["body"] * 6 + ["message"] + ["body"] * 5
                            + ["release"] + ["body"] * 4 + ["pause"]
                            + ["body"] * 3)
        self.assertEqual(got, [b"%03d" % n for n in range(6)] + [b"direct6"]
                         + [b"%03d" % n for n in range(6, 18)])

    def test_acrossKeyUpdates(self):
        """
        A key update due every 3 messages: the turn's bodies past the key's
        limit are not held, and the update falls between the same bodies.
        """
        got = self._compare(["body"] * 14 + ["message"] + ["body"] * 7,
                            config(xtmp_protocol__key_update_messages=3))
        self.assertEqual(got, [b"%03d" % n for n in range(14)]
                         + [b"direct14"]
                         + [b"%03d" % n for n in range(14, 21)])

    def test_holdLimit(self):
        """
        Bodies added straight to the engine's held bodies count towards
        holdLimit: past it, what is held is written (the same bytes).
        """
        got = self._compare(["body"] * 30, holdLimit=400)
        self.assertEqual(got, [b"%03d" % n for n in range(30)])

    def test_laterBodiesSkipTheEngine(self):
        """
        After a turn's first body the engine holds (its second), the
        session's later bodies of the turn do not call the engine.
        """
        from muxframe.xtmp.codec import F, encodeName
        from muxframe.xtmp.connection import (
            HeldBodies, PreparedBody, XTMPConnection,
        )
        h = Harness()
        client, side, _ = h.connect(ALICE)
        client.subscribe("feed", lambda m: None)
        h.flush()
        conn = side.connection
        hold = []
        bodies = [PreparedBody(0x41, F.STREAM_DATA,
                               encodeName("feed") + b"%d" % n)
                  for n in range(5)]
        self.assertTrue(side.sendPreparedBody(bodies[0], 1.0, hold))
        self.assertTrue(side.sendPreparedBody(bodies[1], 1.0, hold))
        self.assertIsInstance(conn._held, HeldBodies)

        def refuse(*args):
            raise AssertionError("the engine was called")
        self.patch(XTMPConnection, "holdPrepared", refuse)
        self.patch(XTMPConnection, "sealPrepared", refuse)
        for body in bodies[2:]:
            self.assertTrue(side.sendPreparedBody(body, 1.0, hold))
        self.assertEqual(conn._held.bodies, bodies[1:])


class RecipientsMemoTests(SynchronousTestCase):
    """
    The recipients of a subject are worked out once per cached match, and
    follow every subscription change.
    """

    def test_followsChanges(self):
        h = Harness()
        got = {"a": [], "b": []}
        a, _, _ = h.connect(ALICE)
        b, _, _ = h.connect(BOB)
        a.subscribe("s.*", lambda m: got["a"].append(m.payload))
        h.flush()
        self.assertEqual(h.server.publish("s.x", b"1"), 1)
        b.subscribe("s.x", lambda m: got["b"].append(m.payload))
        h.flush()
        self.assertEqual(h.server.publish("s.x", b"2"), 2)
        h.flush()
        a.unsubscribe("s.*")
        h.flush()
        self.assertEqual(h.server.publish("s.x", b"3"), 1)
        h.flush()
        self.assertEqual(got, {"a": [b"1", b"2"], "b": [b"2", b"3"]})


class ClusterTurnTests(SynchronousTestCase):
    """
    The cluster engine's choice of a node per queue group
    (L{muxframe.server.cluster.ClusterEngine.plan}).
    """

    def setUp(self):
        from twisted.internet.task import Clock
        from muxframe.engines.embedded import LocalBroker
        from muxframe.server.cluster import ClusterEngine
        self.engine = ClusterEngine(LocalBroker("n1"), Clock())

    def plan(self, subject):
        from muxframe.server.hub import Delivery
        from muxframe.server.subjects import tokens
        delivery = Delivery(subject, tokens(subject, wildcards=False), 0x41,
                            0, b"")
        plan = self.engine.plan(delivery)
        return plan[0] if plan is not None else {}

    def test_turnGoesWithGroup(self):
        """
        Nodes take turns for a group while it has members; once the
        group's last node has gone, the engine holds nothing for it
        (before, a turn per C{(pattern, group)} stayed for good).
        """
        engine = self.engine
        for i in range(200):
            key = ("leak.%d" % (i,), "g")
            engine.interest(key[0], "g", True)
            self.assertEqual(self.plan(key[0]), {key: "n1"})
            engine.interest(key[0], "g", False)
        engine._learn("n2", {("leak.x", "g")})
        self.plan("leak.x")
        engine._learn("n2", set())
        self.assertTrue(engine.table._root.isEmpty())
        held = {name: value for name, value in vars(engine).items()
                if isinstance(value, dict) and value
                and name not in ("nodes", "counters")}
        self.assertEqual(held, {})

        engine.interest("jobs.*", "w", True)
        engine._learn("n2", {("jobs.*", "w")})
        chosen = [self.plan("jobs.run")[("jobs.*", "w")] for _ in range(4)]
        self.assertEqual(chosen, ["n1", "n2", "n1", "n2"])
