"""
Tests for the small hooks the XTMP server needs in L{muxframe.xtmp}:
queue groups and wildcard names on Subscribe, requests to a subject, the
overridable receive points, C{respondError}, and the handshake's
C{authorize} callback.
"""

from twisted.internet.task import Clock
from twisted.test.iosim import connect, makeFakeClient, makeFakeServer
from twisted.trial.unittest import SynchronousTestCase

from muxframe.xtmp import (
    Flags, MessageType, PeerError, Unauthorized, XTMPClientFactory,
    XTMPErrorCode, XTMPProtocol, XTMPServerFactory,
)
from muxframe.xtmp import codec
from muxframe.xtmp.subscriptions import isWildcard, subjectMatches

from tests.support import assertSameSendState
from tests.test_xtmp_support import (
    CLIENT_IDENTITY, SERVER_IDENTITY, enginePair, exchange,
)


def result(d):
    out = []
    d.addBoth(out.append)
    return out[0] if out else None


class RecordingProtocol(XTMPProtocol):
    """
    A server protocol that records what reaches the receive points.
    """

    def subscribeReceived(self, name, message, group=None):
        self.factory.seen.append(("subscribe", name, group))
        if name == "refuse.me":
            self.respondError(message, XTMPErrorCode.PERMISSION_DENIED, "no")
        else:
            XTMPProtocol.subscribeReceived(self, name, message, group)

    def unsubscribeReceived(self, name, message):
        self.factory.seen.append(("unsubscribe", name))
        XTMPProtocol.unsubscribeReceived(self, name, message)

    def streamReceived(self, message):
        self.factory.seen.append(("stream", message.streamName,
                                  bool(message.flags & Flags.REQUEST)))
        if message.flags & Flags.REQUEST:
            self.respond(message, b"answer:" + message.payload)


class Pair:
    def __init__(self, **serverKw):
        self.clock = Clock()
        serverKw.setdefault("authorizedKeys", [CLIENT_IDENTITY.public])
        self.server = XTMPServerFactory(SERVER_IDENTITY, reactor=self.clock,
                                        **serverKw)
        self.server.protocol = RecordingProtocol
        self.server.seen = []
        cf = XTMPClientFactory(serverKey=SERVER_IDENTITY.public,
                               identity=CLIENT_IDENTITY, reactor=self.clock)
        self.client = cf.buildProtocol(None)
        self.serverProtocol = self.server.buildProtocol(None)
        self.pump = connect(self.serverProtocol,
                            makeFakeServer(self.serverProtocol), self.client,
                            makeFakeClient(self.client), clock=self.clock)


class SubjectMatchTests(SynchronousTestCase):
    def test_matches(self):
        cases = [("a.b", "a.b", True), ("a.*", "a.b", True),
                 ("a.*", "a.b.c", False), ("a.>", "a.b.c", True),
                 ("a.>", "a", False), (">", "a", True), ("*.b", "a.b", True),
                 ("a.b", "a.c", False), ("a", "a.b", False),
                 ("a.*.c", "a.x.c", True)]
        for pattern, subject, expected in cases:
            self.assertEqual(subjectMatches(pattern, subject), expected,
                             (pattern, subject))

    def test_isWildcard(self):
        self.assertTrue(isWildcard("a.*"))
        self.assertTrue(isWildcard(">"))
        self.assertFalse(isWildcard("a*.b"))
        self.assertFalse(isWildcard("plain"))


class StreamHookTests(SynchronousTestCase):
    def test_subscribeWithGroup(self):
        """
        A queue group travels after the stream name in Subscribe; the
        server's subscribeReceived gets it.
        """
        p = Pair()
        d = p.client.subscribe("orders.*", lambda m: None, group="workers")
        p.pump.flush()
        self.assertIsNotNone(result(d))
        self.assertEqual(p.server.seen, [("subscribe", "orders.*", "workers")])

    def test_subscribeWithoutGroup(self):
        p = Pair()
        p.client.subscribe("plain", lambda m: None)
        p.pump.flush()
        self.assertEqual(p.server.seen, [("subscribe", "plain", None)])

    def test_groupWireBytes(self):
        """
        Subscribe data is name(len16) then, optionally, group(len16);
        anything after the group is PROTOCOL_ERROR.
        """
        c, s = enginePair()
        c.sendMessage(MessageType.Subscribe,
                      codec.encodeName("a.b") + codec.encodeName("g"))
        _, events = exchange(c, s)
        self.assertEqual([(e.name, e.group) for e in events], [("a.b", "g")])
        c.sendMessage(MessageType.Subscribe,
                      codec.encodeName("a.b") + codec.encodeName("g") + b"x")
        e = self.assertRaises(Exception, exchange, c, s)
        self.assertEqual(e.code, XTMPErrorCode.PROTOCOL_ERROR)

    def test_refusalCode(self):
        """
        respondError answers a Subscribe with any code.
        """
        p = Pair()
        d = p.client.subscribe("refuse.me", lambda m: None)
        p.pump.flush()
        failure = result(d)
        failure.trap(PeerError)
        self.assertEqual(failure.value.code, XTMPErrorCode.PERMISSION_DENIED)

    def test_unsubscribeHook(self):
        p = Pair()
        p.client.subscribe("x", lambda m: None)
        p.pump.flush()
        d = p.client.unsubscribe("x")
        p.pump.flush()
        self.assertIsNotNone(result(d))
        self.assertIn(("unsubscribe", "x"), p.server.seen)

    def test_requestToSubject(self):
        """
        request(..., subject=) sends STREAM_DATA with REQUEST; the
        response answers it.
        """
        p = Pair()
        d = p.client.request(0x41, b"q", subject="svc.echo", timeout=5)
        p.pump.flush()
        self.assertEqual(result(d).payload, b"answer:q")
        self.assertEqual(p.server.seen, [("stream", "svc.echo", True)])

    def test_publishHasNoRequestFlag(self):
        p = Pair()
        p.client.publish("svc.echo", b"q")
        p.pump.flush()
        self.assertEqual(p.server.seen, [("stream", "svc.echo", False)])

    def test_wildcardCallbacks(self):
        """
        A local wildcard subscription gets STREAM_DATA of every matching
        name, once per callback; exact and wildcard callbacks both run.
        """
        p = Pair()
        got = []
        p.client.subscribe("prices.*", lambda m: got.append(("*", m.streamName)))
        p.client.subscribe("prices.>", lambda m: got.append((">", m.streamName)))
        p.client.subscribe("prices.eur", lambda m: got.append(("=", m.streamName)))
        p.pump.flush()
        p.serverProtocol.publish("prices.eur", b"1")
        p.serverProtocol.publish("prices.eur.spot", b"2")
        p.serverProtocol.publish("other", b"3")
        p.pump.flush()
        self.assertEqual(sorted(got), sorted([
            ("=", "prices.eur"), ("*", "prices.eur"), (">", "prices.eur"),
            (">", "prices.eur.spot")]))
        p.client.unsubscribe("prices.>")
        p.pump.flush()
        del got[:]
        p.serverProtocol.publish("prices.eur.spot", b"4")
        p.pump.flush()
        self.assertEqual(got, [])


class AuthorizeHookTests(SynchronousTestCase):
    """
    XTMPServerFactory.authorizeClient sees the presented identity before
    the authorized-keys check and may refuse with any code; failures carry
    the identity presented.
    """

    def _pair(self, refuse=None, authorizedKeys=None):
        seen = []

        class Server(XTMPServerFactory):
            def authorizeClient(self, protocol, identity, token):
                seen.append((identity, token))
                if refuse is not None:
                    raise Unauthorized("locked", refuse)

        clock = Clock()
        server = Server(SERVER_IDENTITY, reactor=clock,
                        authorizedKeys=authorizedKeys
                        if authorizedKeys is not None
                        else [CLIENT_IDENTITY.public])
        cf = XTMPClientFactory(serverKey=SERVER_IDENTITY.public,
                               identity=CLIENT_IDENTITY, reactor=clock)
        c, s = cf.buildProtocol(None), server.buildProtocol(None)
        connect(s, makeFakeServer(s), c, makeFakeClient(c), clock=clock)
        return seen, c, s

    def test_seesIdentity(self):
        seen, c, s = self._pair()
        self.assertEqual(seen, [(CLIENT_IDENTITY.public, None)])
        self.assertIs(result(s.whenHandshakeDone()), s)

    def test_refusesWithCode(self):
        seen, c, s = self._pair(refuse=XTMPErrorCode.LOCKED_OUT)
        failure = result(s.whenHandshakeDone())
        self.assertEqual(failure.value.code, XTMPErrorCode.LOCKED_OUT)
        self.assertEqual(failure.value.identity, CLIENT_IDENTITY.public)
        why = result(c.whenClosed())
        self.assertEqual(why.code, XTMPErrorCode.LOCKED_OUT)

    def test_unauthorizedCarriesIdentity(self):
        seen, c, s = self._pair(authorizedKeys=[])
        failure = result(s.whenHandshakeDone())
        self.assertEqual(failure.value.code, XTMPErrorCode.UNAUTHORIZED)
        self.assertEqual(failure.value.identity, CLIENT_IDENTITY.public)


class HeartbeatRTTTests(SynchronousTestCase):
    """
    A heartbeat probe (top bit 0, the sender's clock) is answered at once
    with an answer (top bit 1, the probe's clock echoed), both 8 bytes, so
    the prober learns its round-trip time and an idle session costs one
    round trip per interval.
    """

    def heartbeats(self, wire, receiver):
        # Decrypt what C{wire} carries with a copy of the receiving key.
        import copy
        from muxframe.xtmp.codec import Decoder
        from muxframe.xtmp.keys import openFrame
        key = copy.deepcopy(receiver.receiveKey)
        out = []
        for frame in Decoder().feed(wire):
            self.assertEqual(frame.type, MessageType.Heartbeat)
            body = openFrame(key, frame, receiver.sessionId)
            self.assertEqual(len(body), 8)
            out.append(int.from_bytes(body, "big"))
        return out

    def test_rtt(self):
        settings = {"heartbeatInterval": 10}
        c, s = enginePair(settings, settings)
        self.assertIsNone(s.rtt)
        # The server's probe reaches the client 0.25 s later; the answer
        # takes 0.25 s back: the round trip is 0.5 s.
        s.tick(10.0)
        probe = s.dataToSend(now=10.0)
        self.assertEqual(self.heartbeats(probe, c), [10000000])
        c.receiveData(probe, now=10.25)
        answer = c.dataToSend(now=10.25)
        self.assertEqual(len(answer), len(probe))
        self.assertEqual(self.heartbeats(answer, s), [(1 << 63) | 10000000])
        self.assertEqual(c.receiveData(b"", now=10.25), [])
        s.receiveData(answer, now=10.5)
        self.assertAlmostEqual(s.rtt, 0.5, places=5)
        self.assertIsNone(c.rtt)
        # The answer was the client's heartbeat: its own timer restarts.
        self.assertAlmostEqual(c.nextDeadline(10.25), 10.0)
        # An answer is not answered.
        self.assertEqual(s.dataToSend(now=10.5), b"")

    def test_implausibleAnswer(self):
        """
        An answer echoing a clock from the future, or from longer ago than
        two intervals, measures nothing (and is not an error).
        """
        settings = {"heartbeatInterval": 10}
        for echoed in (40000000, 1000):
            c, s = enginePair(settings, settings)
            c.sendControl(MessageType.Heartbeat,
                          codec.encodeU64((1 << 63) | echoed))
            self.assertEqual(s.receiveData(c.dataToSend(now=30.0), now=30.0),
                             [])
            self.assertIsNone(s.rtt)
            self.assertEqual(s.dataToSend(now=30.0), b"")

    def test_clockWraps(self):
        """
        Clocks are 63 bits of microseconds: a probe sent just before the
        clock wraps still measures its round trip.
        """
        settings = {"heartbeatInterval": 10}
        c, s = enginePair(settings, settings)
        c.sendControl(MessageType.Heartbeat,
                      codec.encodeU64((1 << 63) | ((1 << 63) - 200000)))
        s.receiveData(c.dataToSend(now=0.3), now=0.3)
        self.assertAlmostEqual(s.rtt, 0.5, places=5)

    def test_unequalIntervals(self):
        """
        With unequal heartbeat intervals the shorter one governs: the side
        with the longer interval answers the other's probes, so neither
        side's silence limit (two of its own intervals) is reached, and
        the idle session costs one round trip per short interval.
        """
        c, s = enginePair({"heartbeatInterval": 5, "sessionTimeout": 1e6},
                          {"heartbeatInterval": 60, "sessionTimeout": 1e6})
        sent = []
        for second in range(1, 301):
            now = float(second)
            c.tick(now)
            s.tick(now)
            before = (c.counters.bytesSent, s.counters.bytesSent)
            exchange(c, s, now)
            sent.append((c.counters.bytesSent - before[0],
                         s.counters.bytesSent - before[1]))
        self.assertEqual((c.state, s.state), ("OPEN", "OPEN"))
        rounds = [n for n, (a, b) in enumerate(sent) if a and b]
        self.assertEqual(len(rounds), len([n for n, (a, b) in enumerate(sent)
                                           if a or b]))
        self.assertTrue(55 <= len(rounds) <= 61, len(rounds))
        self.assertIsNotNone(c.rtt)
        self.assertIsNone(s.rtt)

    def test_heartbeatLead(self):
        """
        With C{heartbeatLead}, a side probes that much before its
        heartbeatInterval: with equal intervals its probe, not the peer's,
        starts every round; each round is one probe and one answer, the
        counters say so, and only the leading side measures the rtt.
        """
        c, s = enginePair({"heartbeatInterval": 10, "sessionTimeout": 1e6},
                          {"heartbeatInterval": 10, "heartbeatLead": 1.0,
                           "sessionTimeout": 1e6})
        self.assertAlmostEqual(s.nextDeadline(0.0), 9.0)
        for tenth in range(1, 1001):
            now = tenth / 10.0
            c.tick(now)
            s.tick(now)
            exchange(c, s, now)
            if tenth == 91:
                # Idle as the leading side counts it (heartbeatInterval
                # less the lead): the first round drops its cipher contexts.
                self.assertEqual(s.counters.heartbeatsSent, 1)
                self.assertIsNone(s.sendKey._aead)
                self.assertIsNone(s.receiveKey._aead)
        self.assertEqual((c.state, s.state), ("OPEN", "OPEN"))
        self.assertEqual(s.counters.heartbeatsSent, 11)
        self.assertEqual(c.counters.heartbeatsAnswered, 11)
        self.assertEqual((c.counters.heartbeatsSent,
                          s.counters.heartbeatsAnswered), (0, 0))
        self.assertIsNotNone(s.rtt)
        self.assertIsNone(c.rtt)

    def test_heartbeatLeadBounded(self):
        """
        C{heartbeatLead} is in 0..heartbeatInterval (exclusive).
        """
        from muxframe.xtmp import Settings
        for bad in (-1.0, 10.0, 11.0):
            self.assertRaises(ValueError, Settings, heartbeatInterval=10.0,
                              heartbeatLead=bad)

    def test_idleRoundDropsCipherContexts(self):
        """
        Keys make their AEAD object at first use; after a heartbeat round
        in a session idle for an interval, both sides drop theirs, and the
        next message works as before.
        """
        settings = {"heartbeatInterval": 10}
        c, s = enginePair(settings, settings)
        self.assertIsNone(s.sendKey._aead)
        c.sendMessage(0x10, b"hi")
        exchange(c, s, now=1.0)
        self.assertIsNotNone(s.receiveKey._aead)
        s.tick(11.0)
        c.receiveData(s.dataToSend(now=11.0), now=11.0)
        s.receiveData(c.dataToSend(now=11.0), now=11.0)
        for key in (s.sendKey, s.receiveKey, c.sendKey, c.receiveKey):
            self.assertIsNone(key._aead)
        c.sendMessage(0x10, b"again")
        _, events = exchange(c, s, now=12.0)
        self.assertEqual([e.message.payload for e in events], [b"again"])

    def test_badLength(self):
        c, s = enginePair()
        c.sendControl(MessageType.Heartbeat, b"\x00" * 9)
        e = self.assertRaises(Exception, s.receiveData, c.dataToSend())
        self.assertEqual(e.code, XTMPErrorCode.PROTOCOL_ERROR)


class NamedKeysTests(SynchronousTestCase):
    def test_names(self):
        """
        A C{name:} line names the next identity; an ML-DSA key joins the
        Ed25519 key before it; unnamed keys get None.
        """
        from muxframe.xtmp import Identity, parseAuthorizedKeys
        a = Identity.generate(withMLDSA=True).public
        b = Identity.generate().public
        data = (b"# comment\nname: alice\n" + a.toPEM() +
                b"\n" + b.toPEM() + b"name:  bob smith \r\n" +
                CLIENT_IDENTITY.public.toPEM())
        self.assertEqual(parseAuthorizedKeys(data),
                         [("alice", a), (None, b),
                          ("bob smith", CLIENT_IDENTITY.public)])


class PruneTests(SynchronousTestCase):
    """
    The factory prunes resumable sessions at most once per pruneInterval
    (not per connection), down to maxResumableSessions.
    """

    def test_pruneRateLimited(self):
        from muxframe.xtmp.session import ResumptionState
        clock = Clock()
        server = XTMPServerFactory(SERVER_IDENTITY, reactor=clock,
                                   authorizedKeys=[CLIENT_IDENTITY.public])
        server.maxResumableSessions = 2
        server._prune(0.0)
        for sid in range(1, 6):
            server.sessions[sid] = ResumptionState(sid)
        server.live[5] = object()
        server._prune(0.5)
        self.assertEqual(len(server.sessions), 5)
        server._prune(1.0)
        self.assertEqual(sorted(server.sessions), [4, 5])


class SendPreparedTests(SynchronousTestCase):
    """
    XTMPConnection.sendPrepared seals a prebuilt body at once when nothing
    is queued, and refuses (changing nothing) otherwise.
    """

    def test_sameBodyManySessions(self):
        from muxframe.xtmp.codec import F
        body = codec.encodeName("fan.out") + b"payload"
        for _ in range(2):
            c, s = enginePair()
            self.assertTrue(s.sendPrepared(0x41, F.STREAM_DATA, body, 1.0))
            events = c.receiveData(s.dataToSend())
            self.assertEqual([(e.message.streamName, e.message.payload)
                              for e in events], [("fan.out", b"payload")])
            self.assertEqual(s.counters.messagesSent, 1)

    def test_refusedWhenQueuedOrTooBig(self):
        from muxframe.xtmp.codec import F
        c, s = enginePair({}, {"fragmentSize": 100})
        self.assertFalse(s.sendPrepared(0x41, F.STREAM_DATA, b"x" * 101))
        self.assertFalse(s.sendPrepared(0x41, F.REQUIRES_ACK, b"x"))
        s.sendMessage(0x10, b"queued")
        self.assertFalse(s.sendPrepared(0x41, F.STREAM_DATA,
                                        codec.encodeName("a") + b"x"))
        events = c.receiveData(s.dataToSend())
        self.assertEqual([e.message.payload for e in events], [b"queued"])


class SealPreparedTests(SynchronousTestCase):
    """
    XTMPConnection.sealPrepared gives the bytes of one prepared body for
    each session, through the general path when a key update is due or
    control bytes wait, so every frame still opens in order.
    """

    def test_keyUpdateAndControlBytes(self):
        from muxframe.xtmp.codec import F
        from muxframe.xtmp.connection import PreparedBody
        c, s = enginePair({}, {"keyUpdateMessages": 3})
        prepared = PreparedBody(0x41, F.STREAM_DATA,
                                codec.encodeName("fan.out") + b"payload")
        data = b""
        for n in range(7):
            if n == 4:
                s.sendControl(MessageType.Heartbeat, bytes(8))
            out = s.sealPrepared(prepared, 1.0)
            self.assertIsNotNone(out)
            data += out
        events = c.receiveData(data)
        self.assertEqual([e.message.payload for e in events
                          if hasattr(e, "message")], [b"payload"] * 7)
        self.assertEqual(s.counters.messagesSent, 7)
        self.assertGreaterEqual(s.counters.keyUpdates, 2)

    def test_refused(self):
        from muxframe.xtmp.codec import F
        from muxframe.xtmp.connection import PreparedBody
        c, s = enginePair({}, {"fragmentSize": 100})
        self.assertIsNone(s.sealPrepared(
            PreparedBody(0x41, F.STREAM_DATA, b"x" * 101), 1.0))
        self.assertIsNone(s.sealPrepared(
            PreparedBody(0x41, F.REQUIRES_ACK, b"x"), 1.0))
        s.sendMessage(0x10, b"queued")
        self.assertIsNone(s.sealPrepared(
            PreparedBody(0x41, F.STREAM_DATA, codec.encodeName("a")), 1.0))
        self.assertEqual(s.counters.messagesSent, 0)


def _twin(conn):
    """
    An independent copy of an open engine's sending state (its send key
    and counters copied, nothing queued), to run the same sends two ways
    and compare their bytes.
    """
    import copy
    from muxframe.xtmp.keys import TrafficKey
    other = copy.copy(conn)
    k = conn.sendKey
    key = TrafficKey(k.cipher, k.key, k.iv, k.epoch, k.createdAt,
                     k.generation)
    key.sequence, key.count = k.sequence, k.count
    other.sendKey = key
    other.counters = copy.copy(conn.counters)
    other._out = list(conn._out)
    other._queues = [None, None, None]
    return other


class HoldPreparedTests(SynchronousTestCase):
    """
    XTMPConnection.holdPrepared and takeHeld: bodies held unsealed and
    sealed together give the bytes sealPrepared gives for each at once, in
    the same order with every other send between them, across key updates
    and at the key's message limit; a real client session opens them all.
    """

    def _compare(self, script, serverSettings=None, setup=None):
        """
        Run C{script} (a list of steps) on two copies of one server engine:
        one seals every body at once (sealPrepared, the path before
        holdPrepared), the other holds them; return the client's events
        after it reads the held copy's bytes, having checked both copies
        gave the same bytes and counters.
        """
        from muxframe.xtmp.codec import F
        from muxframe.xtmp.connection import PreparedBody
        c, s = enginePair({}, serverSettings or {})
        if setup is not None:
            setup(c, s)
        eager, lazy = _twin(s), _twin(s)
        bodies = [PreparedBody(0x41, F.STREAM_DATA,
                               codec.encodeName("fan.out") + b"%03d" % n)
                  for n in range(100)]
        outEager, outLazy = [], []
        n = 0
        self.held = 0
        for step in script:
            if step == "body":
                outEager.append(eager.sealPrepared(bodies[n], 2.0))
                if lazy.holdPrepared(bodies[n], 2.0):
                    self.held += 1
                else:
                    outLazy.append(lazy.sealPrepared(bodies[n], 2.0))
                n += 1
            elif step == "release":
                outLazy.append(lazy.takeHeld())
            elif step == "heartbeat":
                for e in (eager, lazy):
                    e.sendControl(MessageType.Heartbeat, bytes(8))
            elif step == "message":
                for e in (eager, lazy):
                    e.sendMessage(0x10, b"direct", now=2.0, immediate=True)
            elif step == "tick":
                for e in (eager, lazy):
                    e.tick(3.0 + e.settings.heartbeatInterval)
            elif step == "close":
                outEager.append(eager.closeWithError(
                    XTMPErrorCode.PROTOCOL_ERROR, "done", 4.0))
                outLazy.append(lazy.closeWithError(
                    XTMPErrorCode.PROTOCOL_ERROR, "done", 4.0))
                break
            # Whatever else is waiting, as the protocol's flush takes it.
            if step != "body":
                outEager.append(eager.dataToSend(now=2.0))
                outLazy.append(lazy.dataToSend(now=2.0))
        outLazy.append(lazy.takeHeld())
        outEager.append(eager.dataToSend(now=2.0))
        outLazy.append(lazy.dataToSend(now=2.0))
        self.assertNotIn(None, outEager)
        wire = b"".join(outLazy)
        self.assertEqual(wire, b"".join(outEager))
        assertSameSendState(self, lazy, eager)
        return c.receiveData(wire, 2.0)

    def _payloads(self, events):
        return [e.message.payload for e in events if hasattr(e, "message")]

    def test_bodiesAndOtherSends(self):
        events = self._compare(
            ["body", "body", "heartbeat", "body", "message", "body", "body",
             "release", "body", "tick", "body", "release", "body", "body"])
        self.assertEqual(self.held, 9)
        self.assertEqual(self._payloads(events),
                         [b"000", b"001", b"002", b"direct", b"003", b"004",
                          b"005", b"006", b"007", b"008"])

    def test_acrossKeyUpdates(self):
        """
        With a key update due every 3 messages, holding stops at the limit
        and the update goes between the same bodies as before.
        """
        events = self._compare(["body"] * 11 + ["release"] + ["body"] * 4
                               + ["message"] + ["body"] * 2,
                               {"keyUpdateMessages": 3})
        self.assertEqual(self._payloads(events)[:11],
                         [b"%03d" % n for n in range(11)])
        self.assertEqual(len(self._payloads(events)), 18)
        self.assertGreater(self.held, 8)

    def test_atTheCounterLimit(self):
        """
        A key two messages short of the largest keyUpdateMessages (its
        sequence numbers near 2**32): two bodies are held, the third waits
        for the key update.
        """
        limit = (1 << 32) - 1

        def nearLimit(c, s):
            for key in (s.sendKey, c.receiveKey):
                key.sequence = key.count = limit - 2
        events = self._compare(["body"] * 5, {"keyUpdateMessages": limit},
                               nearLimit)
        # Two held, the third sealed at once with the key update, the last
        # two held under the new key.
        self.assertEqual(self.held, 4)
        self.assertEqual(self._payloads(events),
                         [b"%03d" % n for n in range(5)])

    def test_errorClose(self):
        """
        Held bodies go before an error close's Error and Disconnect.
        """
        from muxframe.xtmp.events import ErrorReceived
        events = self._compare(["body", "body", "close"])
        self.assertEqual(self._payloads(events)[:2], [b"000", b"001"])
        self.assertIsInstance(events[2], ErrorReceived)

    def test_notHeld(self):
        """
        Nothing is held where sealPrepared would not seal at once.
        """
        from muxframe.xtmp.codec import F
        from muxframe.xtmp.connection import PreparedBody
        c, s = enginePair({}, {"fragmentSize": 100})
        self.assertFalse(s.holdPrepared(
            PreparedBody(0x41, F.STREAM_DATA, b"x" * 101), 1.0))
        self.assertFalse(s.holdPrepared(
            PreparedBody(0x41, F.REQUIRES_ACK, b"x"), 1.0))
        s.sendControl(MessageType.Heartbeat, bytes(8))
        self.assertFalse(s.holdPrepared(
            PreparedBody(0x41, F.STREAM_DATA, codec.encodeName("a")), 1.0))
        self.assertEqual(s.takeHeld(), b"")
