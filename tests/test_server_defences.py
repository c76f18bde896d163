"""
The server's defences through real sessions (in memory, fake clock):
lockout after failed authentications per address and per key, with its
expiry and backoff; per-session rate limits; connection limits; the
handshake cap and per-address handshake rate; key and token revocation.
Each outcome is a typed code on the wire and a counted event.
"""

import hashlib

from twisted.trial.unittest import SynchronousTestCase

from muxframe.xtmp import XTMPErrorCode

from tests.test_server_support import (
    ALICE, BOB, KEYS, MALLORY, Harness, config, result,
)


def handshakeCode(client):
    """
    The code a client's handshake failed with (None if it succeeded).
    """
    outcome = result(client.whenHandshakeDone())
    if outcome is client:
        why = result(client.whenClosed())
        return getattr(why, "code", None)
    return outcome.value.code


class LockoutTests(SynchronousTestCase):
    def test_addressLockoutAndExpiry(self):
        """
        max_failed_attempts failures from one address lock it out: its
        next connection is refused with LOCKED_OUT before any handshake,
        even with a good key; after lockout_time it may try again.
        """
        h = Harness(config(security__max_failed_attempts=3,
                           security__lockout_time=30, security__lockout_keys=False))
        for _ in range(3):
            c, _, _ = h.connect(MALLORY, host="10.9.9.9")
            self.assertEqual(handshakeCode(c), XTMPErrorCode.UNAUTHORIZED)
        c, _, _ = h.connect(ALICE, host="10.9.9.9")
        self.assertEqual(result(c.whenHandshakeDone()).value.code,
                         XTMPErrorCode.LOCKED_OUT)
        self.assertEqual(h.server.events.counts["lockout"], 1)
        self.assertEqual(h.server.events.counts["refused_locked_out"], 1)
        # Another address is not affected.
        ok, _, _ = h.connect(ALICE, host="10.1.1.1")
        self.assertIs(result(ok.whenHandshakeDone()), ok)
        h.clock.advance(31)
        c, _, _ = h.connect(ALICE, host="10.9.9.9")
        self.assertIs(result(c.whenHandshakeDone()), c)

    def test_keyLockoutAcrossAddressesAndBackoff(self):
        """
        Failures with one key (a bad signature presenting alice's key, or
        a key not authorized) lock that key out from every address; the
        second lockout lasts twice as long.
        """
        h = Harness(config(security__max_failed_attempts=2,
                           security__lockout_time=10))
        server = h.server
        # MALLORY is not authorized: failures count against its key.
        for host in ("10.0.0.1", "10.0.0.2"):
            c, _, _ = h.connect(MALLORY, host=host)
            self.assertEqual(handshakeCode(c), XTMPErrorCode.UNAUTHORIZED)
        self.assertEqual(server.keyLockout.lockedFor(MALLORY.public.fingerprint,
                                                     h.clock.seconds()), 10)
        # Even authorized now, the key is refused while locked.
        server.setKeys(KEYS + [("mallory", MALLORY.public)])
        c, _, _ = h.connect(MALLORY, host="10.0.0.3")
        self.assertEqual(handshakeCode(c), XTMPErrorCode.LOCKED_OUT)
        h.clock.advance(11)
        c, _, _ = h.connect(MALLORY, host="10.0.0.4")
        self.assertIs(result(c.whenHandshakeDone()), c)
        server.setKeys(KEYS)
        for host in ("10.0.0.5", "10.0.0.6"):
            h.connect(MALLORY, host=host)
        self.assertEqual(server.keyLockout.lockedFor(MALLORY.public.fingerprint,
                                                     h.clock.seconds()), 20)

    def test_failuresAreEvents(self):
        h = Harness()
        seen = []
        h.server.events.addObserver(lambda name, fields: seen.append(
            (name, fields.get("code"))))
        h.connect(MALLORY)
        self.assertIn(("auth_failed", XTMPErrorCode.UNAUTHORIZED), seen)


class RateLimitTests(SynchronousTestCase):
    def test_messageRate(self):
        """
        Messages over the session's bucket are refused with RATE_LIMITED
        and the session stops reading until tokens return; then it is
        served again.
        """
        h = Harness(config(limits__messages_per_second=10,
                           limits__message_burst=5,
                           handlers__={0x20: "tests.test_server_router:echo"}))
        client, side, _ = h.connect(ALICE)
        requests = [client.request(0x20, b"%d" % n, timeout=30)
                    for n in range(8)]
        h.flush()
        outcomes = [result(d) for d in requests]
        served = [o for o in outcomes if not hasattr(o, "value")]
        refused = [o for o in outcomes if hasattr(o, "value")]
        self.assertEqual(len(served), 5)
        self.assertEqual({f.value.code for f in refused},
                         {XTMPErrorCode.RATE_LIMITED})
        self.assertGreaterEqual(h.server.events.counts["rate_limited"], 1)
        h.clock.advance(1)
        h.flush()
        later = client.request(0x20, b"again", timeout=30)
        h.flush()
        self.assertEqual(result(later).payload, b"echo:again")

    def test_writesBackedUpStopReading(self):
        """
        A session whose writes back up is not read until they drain (a
        peer that does not read cannot make the server write).  Messages
        that arrived meanwhile are handled when they drain; if they pass
        the rate limit, reading stays paused until its tokens return,
        then resumes.
        """
        h = Harness(config(limits__messages_per_second=10,
                           limits__message_burst=2,
                           handlers__={0x20: "tests.test_server_router:echo"}))
        client, side, _ = h.connect(ALICE)
        calls = []
        side.transport.pauseProducing = lambda: calls.append("pause")
        side.transport.resumeProducing = lambda: calls.append("resume")
        side.pauseProducing()
        self.assertEqual(calls, ["pause"])
        requests = [client.request(0x20, b"%d" % n, timeout=30)
                    for n in range(4)]
        h.flush()
        self.assertEqual([d.called for d in requests], [False] * 4)
        side.resumeProducing()
        h.flush()
        self.assertEqual(calls, ["pause", "pause"])
        outcomes = [result(d) for d in requests]
        self.assertEqual([o.payload for o in outcomes[:2]],
                         [b"echo:0", b"echo:1"])
        self.assertEqual({o.value.code for o in outcomes[2:]},
                         {XTMPErrorCode.RATE_LIMITED})
        h.clock.advance(1)
        self.assertEqual(calls, ["pause", "pause", "resume"])

    def probingSession(self):
        """
        A session whose bucket holds 5 messages (10 a second): the harness,
        the client, the server side, the transport's pause and resume
        calls, and C{probes(count)} sending that many heartbeat probes in
        one read.
        """
        from muxframe.xtmp import MessageType, codec
        h = Harness(config(limits__messages_per_second=10,
                           limits__message_burst=5))
        client, side, _ = h.connect(ALICE)
        calls = []
        side.transport.pauseProducing = lambda: calls.append("pause")
        side.transport.resumeProducing = lambda: calls.append("resume")

        def probes(count):
            for n in range(count):
                client.connection.sendControl(MessageType.Heartbeat,
                                              codec.encodeU64(n))
            client._flush()
            h.flush()
        return h, client, side, calls, probes

    def assertPausedFor(self, h, calls, seconds):
        """
        Reading was paused (once, C{calls} so far) and resumes C{seconds}
        later, not 0.1 s before.
        """
        self.assertEqual(calls, ["pause"])
        h.clock.advance(seconds - 0.1)
        self.assertEqual(calls, ["pause"])
        h.clock.advance(0.2)
        self.assertEqual(calls, ["pause", "resume"])

    def test_controlFramesCharged(self):
        """
        Heartbeat probes, which the engine answers itself (they never reach
        the router), take message tokens too: past the bucket, the session
        stops reading until it refills, says so once, and reads again;
        every probe it read was answered.
        """
        h, _, side, calls, probes = self.probingSession()
        counters = side.connection.counters
        answered = counters.heartbeatsAnswered
        before = h.server.events.counts.get("rate_limited", 0)
        probes(8)
        self.assertEqual(counters.heartbeatsAnswered - answered, 8)
        self.assertEqual(calls, ["pause"])
        self.assertEqual(h.server.events.counts["rate_limited"] - before, 1)
        # In debt by 3: a token is there again after 0.4 s.
        h.clock.advance(0.3)
        self.assertEqual(calls, ["pause"])
        h.clock.advance(0.2)
        self.assertEqual(calls, ["pause", "resume"])

    def test_controlFramesChargedInBatches(self):
        """
        Control frames are charged once CONTROL_BATCH of them are
        uncharged (an idle session's answer per round costs no charge):
        seven probes leave the session reading; the eighth, in a later
        read, charges all eight, past the bucket of five.
        """
        from muxframe.server.session import CONTROL_BATCH
        self.assertEqual(CONTROL_BATCH, 8)
        h, _, side, calls, probes = self.probingSession()
        probes(7)
        self.assertEqual(calls, [])
        probes(1)
        self.assertEqual(calls, ["pause"])

    def test_unmatchedResponsesCharged(self):
        """
        Responses that answer no request of the server (dropped unread by
        the engine and the session, so they never reached the rate limit
        either) take message tokens too: past the bucket, reading stops
        until it refills.
        """
        h, client, side, calls, _ = self.probingSession()
        counters = side.connection.counters
        unmatched = counters.unmatchedResponses
        for n in range(8):
            client.connection.sendMessage(0x30, b"x" * 100,
                                          requestSequence=1000 + n)
        client._flush()
        h.flush()
        self.assertEqual(counters.unmatchedResponses - unmatched, 8)
        # In debt by 3: a token is there again after 0.4 s.
        self.assertPausedFor(h, calls, 0.4)

    def test_duplicatesCharged(self):
        """
        Messages with a delivery id already delivered (dropped by the
        engine as duplicates, acknowledged again, never reaching the rate
        limit) take message tokens too.
        """
        from muxframe.xtmp.codec import F
        h, client, side, calls, _ = self.probingSession()
        counters = side.connection.counters
        duplicates = counters.duplicatesDropped
        first = client.connection.sendMessage(0x30, b"x", flags=F.REQUIRES_ACK)
        client._flush()
        for n in range(8):
            again = client.connection.sendMessage(0x30, b"x",
                                                  flags=F.REQUIRES_ACK)
            again.deliveryId = first.deliveryId
        client._flush()
        h.flush()
        self.assertEqual(counters.duplicatesDropped - duplicates, 8)
        # One message admitted (four tokens left), eight duplicates (a
        # batch): in debt by 4, a token is there again after 0.5 s.
        self.assertPausedFor(h, calls, 0.5)

    def test_noLimitNothingCharged(self):
        """
        Without a message limit (limits.messages_per_second 0) nothing is
        charged, and the batch is still counted: the charge runs once a
        batch, not at every read after the first.
        """
        from muxframe.server.session import ServerSession
        from muxframe.xtmp import MessageType, codec
        h = Harness(config(limits__messages_per_second=0))
        client, side, _ = h.connect(ALICE)
        charges = []
        original = ServerSession._chargeControl
        self.patch(ServerSession, "_chargeControl",
                   lambda session: (charges.append(1), original(session)))
        for _ in range(10):
            client.connection.sendControl(MessageType.Heartbeat,
                                          codec.encodeU64(1))
            client._flush()
            h.flush()
        self.assertEqual(len(charges), 1)
        self.assertEqual(side.state.controlCharged, 8)

    def test_controlFramesChargedInAHandshakeStep(self):
        """
        Control frames read in a handshake scheduler's step (the bytes a
        client sent behind its handshake, which the scheduler hands on
        once the session is open) are charged at once too, not at the
        next read.
        """
        from muxframe.xtmp import MessageType, codec
        h, client, side, calls, _ = self.probingSession()
        for n in range(8):
            client.connection.sendControl(MessageType.Heartbeat,
                                          codec.encodeU64(n))
        side.handshakeStep(client.connection.dataToSend())
        self.assertEqual(side.connection.counters.controlReceived, 8)
        self.assertEqual(calls, ["pause"])
        h.clock.advance(0.5)
        self.assertEqual(calls, ["pause", "resume"])

    def test_controlFramesChargedWhenHeldBytesAreRead(self):
        """
        Control frames in bytes held while reading was paused are charged
        as the held bytes are handled, when reading resumes.
        """
        from muxframe.xtmp import MessageType, codec
        h, client, side, calls, _ = self.probingSession()
        side.pauseDelivery()
        for n in range(8):
            client.connection.sendControl(MessageType.Heartbeat,
                                          codec.encodeU64(n))
        side.dataReceived(client.connection.dataToSend())
        self.assertEqual(side.connection.counters.controlReceived, 0)
        side.resumeDelivery()
        self.assertEqual(side.connection.counters.controlReceived, 8)
        self.assertEqual(calls, ["pause", "resume", "pause"])
        h.clock.advance(0.5)
        self.assertEqual(calls, ["pause", "resume", "pause", "resume"])

    def test_byteRate(self):
        h = Harness(config(limits__bytes_per_second=1000,
                           limits__byte_burst=1000,
                           handlers__={0x20: "tests.test_server_router:echo"}))
        client, _, _ = h.connect(ALICE)
        first = client.request(0x20, b"x" * 900, timeout=30)
        second = client.request(0x20, b"y" * 900, timeout=30)
        h.flush()
        self.assertEqual(result(first).payload[:6], b"echo:x")
        self.assertEqual(result(second).value.code, XTMPErrorCode.RATE_LIMITED)


class PeerTextTests(SynchronousTestCase):
    """
    What a peer can make the server log: Error messages (sent at will)
    are throttled lines, and a peer's text in a line is cut short.
    """

    def session(self):
        """
        A session, its log events from now on, and C{send(type, code,
        reason)} sending it an Error or Disconnect from the peer.
        """
        from twisted.logger import globalLogPublisher

        from muxframe.xtmp import codec
        from muxframe.xtmp.codec import F
        h = Harness(config())
        client, side, _ = h.connect(ALICE)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        conn = client.connection

        def send(messageType, code, reason):
            client.transport.write(conn.sendKey.seal(
                messageType, F.ENCRYPTED, conn.sessionId,
                codec.encodeReason(code, reason)))

        return h, side, events, send

    def test_errorFlood(self):
        from twisted.logger import formatEvent

        from muxframe.xtmp.codec import MessageType
        from muxframe.xtmp.protocol import LOGGED_REASON
        h, side, events, send = self.session()
        code = XTMPErrorCode.APPLICATION_ERROR
        send(MessageType.Error, code, "B" * 100000)
        for n in range(500):
            send(MessageType.Error, code, "x%d" % (n,))
        h.flush()
        lines = [formatEvent(e) for e in events
                 if "xtmp peer error" in e.get("log_format", "")]
        self.assertEqual(len(lines), 10)
        self.assertIn("B" * LOGGED_REASON + "... (99800 more characters)",
                      lines[0])
        self.assertLess(max(len(line) for line in lines), LOGGED_REASON + 200)
        self.assertIn("further lines like this are suppressed", lines[-1])
        self.assertTrue(side.isConnected())
        # A Disconnect's reason is cut short in the close line too.
        send(MessageType.Disconnect, code, "D" * 100000)
        h.flush()
        closed = [formatEvent(e) for e in events
                  if "closed: {why}" in e.get("log_format", "")]
        closed = [line for line in closed if "DDDD" in line]
        self.assertEqual(len(closed), 1)
        self.assertIn("more characters)", closed[0])
        self.assertLess(len(closed[0]), LOGGED_REASON + 200)

    def test_errorFloodMadeUpCodes(self):
        """
        Errors with codes the peer makes up (application codes, each new)
        share one throttled kind: not ten lines per code.
        """
        from muxframe.xtmp.codec import MessageType
        h, side, events, send = self.session()
        for n in range(3000):
            send(MessageType.Error, 0x1000 + (n % 300), "x")
        send(MessageType.Error, XTMPErrorCode.BUSY, "named")
        h.flush()
        lines = [e for e in events
                 if "xtmp peer error" in e.get("log_format", "")]
        # Ten of the made-up codes, and the named code's own line.
        self.assertEqual(len(lines), 11)
        self.assertEqual(lines[-1]["code"], "BUSY")


class HandshakeOrderTests(SynchronousTestCase):
    """
    A transport that, like muxframe.web.transport.WebSocketStreamTransport,
    holds the messages parsed from its last read while paused and hands
    them to dataReceived synchronously inside resumeProducing().
    """

    def wsLike(self, side, size):
        real = side.dataReceived
        state = {"paused": False, "held": []}

        def dataReceived(data):
            for i in range(0, len(data), size):
                chunk = data[i:i + size]
                if state["paused"]:
                    state["held"].append(chunk)
                else:
                    real(chunk)

        def pause():
            state["paused"] = True

        def resume():
            if not state["paused"]:
                return
            state["paused"] = False
            while state["held"] and not state["paused"]:
                real(state["held"].pop(0))

        side.dataReceived = dataReceived
        side.transport.pauseProducing = pause
        side.transport.resumeProducing = resume
        return state

    def test_pipelinedOverWebSocketKeepsOrder(self):
        """
        The handshake scheduler's turns come between reactor iterations
        (callLater(0) as a real reactor runs it: not in the same
        runUntilCurrent pass); bytes read after the handshake completed
        must not overtake bytes still queued for the session's next step.
        """
        class Turns:
            def __init__(self):
                self.calls = []

            def callLater(self, delay, f, *a):
                self.calls.append((f, a))

            def turn(self):
                calls, self.calls = self.calls, []
                for f, a in calls:
                    f(*a)

        h = Harness(config(handlers__={0x20: "tests.test_server_router:echo"}))
        turns = Turns()
        h.server.scheduler._reactor = turns
        # (A clock that passes the budget at every step: one step a turn,
        # however fast this machine is.)
        import itertools
        h.server.scheduler._clock = itertools.count(0.0, 1.0).__next__
        client, side, pump = h.connect(ALICE, greet=False)
        self.wsLike(side, 1024)
        requests = []
        client.whenHandshakeDone().addCallback(lambda c: requests.extend(
            c.request(0x20, b"%d" % (n,) * 8000, timeout=30)
            for n in range(3)))
        sent = False
        for _ in range(20):
            while pump.pump():
                pass
            turns.turn()
            if not sent and not side.state.handshaking and \
                    h.server.scheduler.queuedBytes(side):
                # The client keeps sending: read before the next turn.
                requests.append(client.request(0x20, b"next", timeout=30))
                sent = True
        self.assertTrue(sent)
        outcomes = [result(d) for d in requests]
        self.assertEqual(
            [o.payload[:6] if not hasattr(o, "value") else repr(o.value)
             for o in outcomes],
            [b"echo:0", b"echo:1", b"echo:2", b"echo:n"])


class HandshakeStepTests(SynchronousTestCase):
    def test_helloAnsweredInTheNextStep(self):
        """
        A ClientHello's work is two steps of the handshake scheduler, in
        two reactor turns, each with budget to spare: the key agreement,
        then the answer; the handshake then completes as usual.
        """
        from tests.test_server_timers import TurnReactor
        h = Harness(config())
        reactor = h.server.scheduler._reactor = TurnReactor()
        turn = reactor.turn
        client, side, pump = h.connect(ALICE, greet=False)
        pump.pump()
        self.assertEqual(len(reactor.calls), 1)
        turn()
        self.assertEqual((side.transport.getOutBuffer(), len(reactor.calls)),
                         (None, 1))
        self.assertTrue(side.connection.handshake.answerDue)
        turn()
        self.assertFalse(side.connection.handshake.answerDue)
        self.assertEqual(h.server.scheduler.steps, 2)
        for _ in range(5):
            pump.pump()
            turn()
        self.assertIs(result(client.whenHandshakeDone()), client)


class ConnectionLimitTests(SynchronousTestCase):
    def test_perAddressAndTotal(self):
        h = Harness(config(server__max_connections=3,
                           server__max_connections_per_client=2))
        ok = [h.connect(ALICE, host="10.0.0.1")[0] for _ in range(2)]
        for c in ok:
            self.assertIs(result(c.whenHandshakeDone()), c)
        c, _, _ = h.connect(ALICE, host="10.0.0.1")
        self.assertEqual(handshakeCode(c), XTMPErrorCode.TOO_MANY_CONNECTIONS)
        h.connect(BOB, host="10.0.0.2")
        c, _, _ = h.connect(BOB, host="10.0.0.3")
        self.assertEqual(handshakeCode(c), XTMPErrorCode.TOO_MANY_CONNECTIONS)
        # Closing one frees its place.
        ok[0].transport.loseConnection()
        h.flush()
        c, _, _ = h.connect(ALICE, host="10.0.0.1")
        self.assertIs(result(c.whenHandshakeDone()), c)
        self.assertEqual(h.server.connections.total, 3)


class HandshakeLimitTests(SynchronousTestCase):
    def test_concurrentHandshakeCap(self):
        """
        Past max_handshakes in progress, new connections get BUSY; those
        in progress finish normally.
        """
        h = Harness(config(server__max_handshakes=2,
                           server__max_connections_per_client=0))
        pending = [h.connect(ALICE, greet=False) for _ in range(2)]
        self.assertEqual(h.server.handshakesInProgress, 2)
        c, _, _ = h.connect(ALICE)
        self.assertEqual(handshakeCode(c), XTMPErrorCode.BUSY)
        h.flush()
        for client, _, _ in pending:
            self.assertIs(result(client.whenHandshakeDone()), client)
        self.assertEqual(h.server.handshakesInProgress, 0)

    def test_perAddressRate(self):
        """
        One address may start handshake_burst handshakes at once and then
        handshake_rate per second; the rest get RATE_LIMITED, others'
        addresses are unaffected.
        """
        h = Harness(config(server__handshake_rate=2, server__handshake_burst=3,
                           server__max_connections_per_client=0))
        codes = []
        for _ in range(5):
            c, _, _ = h.connect(ALICE, host="10.6.6.6")
            codes.append(handshakeCode(c))
        self.assertEqual(codes, [None] * 3 + [XTMPErrorCode.RATE_LIMITED] * 2)
        c, _, _ = h.connect(ALICE, host="10.7.7.7")
        self.assertIsNone(handshakeCode(c))
        h.clock.advance(0.5)
        c, _, _ = h.connect(ALICE, host="10.6.6.6")
        self.assertIsNone(handshakeCode(c))
        self.assertEqual(h.server.refusals["refused_rate"], 2)


class HandshakeReadTests(SynchronousTestCase):
    """
    What a handshaking session reads waits in the handshake scheduler; once
    more waits than a step needs, the session stops reading until its step
    has run, and reading resumes then unless something else holds it.
    """

    def recordReading(self, side):
        calls = []
        side.transport.pauseProducing = lambda: calls.append("pause")
        side.transport.resumeProducing = lambda: calls.append("resume")
        return calls

    def limit(self, side):
        from muxframe.xtmp.codec import HEADER_SIZE, SECURITY_SIZE
        return (HEADER_SIZE + SECURITY_SIZE
                + side.connection.settings.maxHandshakePayload)

    def test_unauthenticatedBytesBounded(self):
        """
        A peer writing ahead of its handshake stops being read once more
        is queued than a handshake step needs (before, a connection whose
        decoder takes about 2 KiB had every read queued: 25 MiB for 400
        reads of 64 KiB).
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport
        h = Harness()
        address = IPv4Address("TCP", "10.0.0.9", 40999)
        side = h.server.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        side.makeConnection(transport)
        reads = 0
        # A transport reads only while it is not paused.
        while transport.producerState == "producing" and reads < 400:
            side.dataReceived(b"\0" * 4096)
            reads += 1
        self.assertEqual(transport.producerState, "paused")
        self.assertLessEqual(reads * 4096, self.limit(side) + 4096)
        self.assertEqual(h.server.scheduler.queuedBytes(side), reads * 4096)

    def test_bytesBehindTheHelloCounted(self):
        """
        The bytes a ClientHello's step leaves behind the hello in the
        engine's decoder (they wait for the answer, the next step) count
        toward what a handshake step needs: over it, reading stays
        stopped until the answer (before, reading resumed after the key
        agreement, and the queue could then take as much again: twice
        what a step needs, beyond two reads).
        """
        from tests.test_server_timers import TurnReactor
        h = Harness()
        reactor = h.server.scheduler._reactor = TurnReactor()
        client, side, pump = h.connect(ALICE, greet=False)
        hello = pump.clientIO.getOutBuffer()
        calls = self.recordReading(side)
        limit, read = self.limit(side), 4096
        side.dataReceived(hello + b"\0" * (limit + read - len(hello)))
        self.assertEqual(calls, ["pause"])
        reactor.turn()
        self.assertTrue(side.connection.handshake.answerDue)
        reads = 0
        while calls[-1] != "pause" and reads < 100:
            side.dataReceived(b"\0" * read)
            reads += 1
        held = (side.connection.decoder.buffered
                + h.server.scheduler.queuedBytes(side))
        self.assertLessEqual(held, limit + read)
        # The answer's step reads again; the bytes behind the hello are
        # then decoded (and refused: they are no frame).
        reactor.turn()
        self.assertEqual(calls[-1], "resume")
        self.assertFalse(side.isConnected())

    def test_pipelinedAfterClientAuth(self):
        """
        A client sending requests right behind its ClientAuth, more than a
        handshake step takes, is paused until the step, then served and
        read again (once).
        """
        h = Harness(config(handlers__={0x20: "tests.test_server_router:echo"}))
        client, side, _ = h.connect(ALICE, greet=False)
        calls = self.recordReading(side)
        requests = []
        client.whenHandshakeDone().addCallback(lambda c: requests.extend(
            c.request(0x20, b"%d" % (n,) * 8000, timeout=30)
            for n in range(3)))
        queued = []
        step = side.handshakeStep

        def watched(data):
            queued.append(len(data))
            step(data)
        side.handshakeStep = watched
        h.flush()
        self.assertGreater(max(queued), self.limit(side))
        self.assertEqual(calls, ["pause", "resume"])
        self.assertEqual([result(d).payload[:6] for d in requests],
                         [b"echo:0", b"echo:1", b"echo:2"])
        self.assertFalse(side._deliveryPaused)

    def test_otherHolderKeepsReadingPaused(self):
        """
        A step does not resume reading while the connection's writes are
        backed up: reading resumes once, when they drain, and what was
        read meanwhile is then handled in order.
        """
        h = Harness(config(handlers__={0x20: "tests.test_server_router:echo"}))
        client, side, _ = h.connect(ALICE, greet=False)
        calls = self.recordReading(side)
        requests = []

        def pipeline(c):
            side.pauseProducing()
            requests.extend(c.request(0x20, b"%d" % (n,) * 8000, timeout=30)
                            for n in range(3))
        client.whenHandshakeDone().addCallback(pipeline)
        h.flush()
        self.assertEqual(calls, ["pause"])
        self.assertEqual([d.called for d in requests], [False] * 3)
        side.resumeProducing()
        h.flush()
        self.assertEqual(calls, ["pause", "resume"])
        self.assertEqual([result(d).payload[:6] for d in requests],
                         [b"echo:0", b"echo:1", b"echo:2"])

    def test_heldStepBytesKeepTheirOrder(self):
        """
        Bytes a step could not handle while reading was paused (held by
        the protocol) are handled, once reading resumes, before those
        queued for a later step (before, they were queued again behind
        them: a ClientHello split across the pause failed).
        """
        h = Harness()
        client, side, pump = h.connect(ALICE, greet=False)
        hello = pump.clientIO.getOutBuffer()
        self.assertGreater(len(hello), 100)
        side.pauseProducing()
        side.dataReceived(hello[:100])
        h.clock.advance(0)
        side.dataReceived(hello[100:])
        side.resumeProducing()
        h.flush()
        self.assertIs(result(client.whenHandshakeDone()), client)
        self.assertTrue(side.isConnected())


class AdmissionHookTests(SynchronousTestCase):
    """
    The handshake cap uses the library's admission hook
    (XTMPServerFactory.admitHandshake) and its handshake counters: a
    refused ClientHello never reaches the replay check or the key
    exchange, is a counted server event, and the refused session logs
    nothing above debug.
    """

    def observeSessionLogs(self):
        from twisted.logger import globalLogPublisher
        from muxframe.server.session import ServerSession
        logged = []

        def observe(event):
            if isinstance(event.get("log_source"), ServerSession):
                logged.append(event["log_level"])
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return logged

    def test_refusedBeforeKeyWork(self):
        """
        Connections past max_handshakes whose ClientHellos arrive are
        refused BUSY by the hook: counted as failed handshakes, never in
        the replay cache, logged at debug only.
        """
        from twisted.logger import LogLevel
        logged = self.observeSessionLogs()
        h = Harness(config(server__max_handshakes=1,
                           server__max_connections_per_client=0))
        clients = [h.connect(ALICE, host="10.6.6.6", greet=False)[0]
                   for _ in range(3)]
        h.flush()
        codes = [handshakeCode(c) for c in clients]
        self.assertEqual(sorted(codes, key=str),
                         [XTMPErrorCode.BUSY] * 2 + [None])
        self.assertEqual(len(h.server.replayCache), 1)
        self.assertEqual(h.server.refusals["refused_busy"], 2)
        stats = h.server.stats()
        self.assertEqual(stats["handshakes"]["completed"], 1)
        self.assertEqual(stats["handshakes"]["failed"], 2)
        self.assertEqual(stats["handshaking"], 0)
        self.assertEqual(set(logged), {LogLevel.info, LogLevel.debug})

    def test_emptyBucketRefusedAtConnect(self):
        """
        Each connection takes its address's handshake token as it
        arrives: once the bucket is empty, the next connections are
        refused with RATE_LIMITED at once, even those arriving before the
        admitted connection's hello: no session is built, no handshake
        starts.
        """
        from muxframe.server.factory import RefusedConnection
        h = Harness(config(server__handshake_rate=1, server__handshake_burst=1,
                           server__max_connections_per_client=0))
        ok, _, _ = h.connect(ALICE, host="10.6.6.6", greet=False)
        for _ in range(3):
            c, side, _ = h.connect(ALICE, host="10.6.6.6", greet=False)
            h.flush()
            self.assertIsInstance(side, RefusedConnection)
            self.assertEqual(handshakeCode(c), XTMPErrorCode.RATE_LIMITED)
        self.assertIsNone(handshakeCode(ok))
        self.assertEqual(h.server.refusals["refused_rate"], 3)
        stats = h.server.stats()
        self.assertEqual(stats["handshakes"]["failed"], 0)
        self.assertEqual(len(h.server.registry), 1)
        # Another address has its own bucket.
        other, _, _ = h.connect(BOB, host="10.6.6.7")
        self.assertIsNone(handshakeCode(other))
        # The bucket refills at handshake_rate: a second later, admitted.
        h.clock.advance(1.0)
        again, _, _ = h.connect(ALICE, host="10.6.6.6")
        self.assertIsNone(handshakeCode(again))


class RevocationTests(SynchronousTestCase):
    def test_keyRevoked(self):
        h = Harness()
        alice, side, _ = h.connect(ALICE)
        bob, _, _ = h.connect(BOB)
        self.assertEqual(len(h.server.registry), 2)
        added, removed, gone = h.server.setKeys(
            [k for k in KEYS if k[0] != "alice"])
        h.flush()
        self.assertEqual((added, removed, gone), (0, 1, 1))
        self.assertEqual(result(alice.whenClosed()).code,
                         XTMPErrorCode.KEY_REVOKED)
        # The server's side names the code it closed with.
        self.assertIn("KEY_REVOKED: ", str(result(side.whenClosed())))
        self.assertEqual([s.identity.name for s in h.server.registry.list()],
                         ["bob"])
        again, _, _ = h.connect(ALICE)
        self.assertEqual(handshakeCode(again), XTMPErrorCode.UNAUTHORIZED)

    def test_tokenRevokedAndNamed(self):
        token = b"secret-token"
        digest = hashlib.sha256(token).hexdigest()
        h = Harness(tokens={digest: "svc-a"})
        client, side, _ = h.connect(token=token)
        self.assertIs(result(client.whenHandshakeDone()), client)
        self.assertEqual(side.identity.asDict(),
                         {"kind": "token", "name": "svc-a",
                          "fingerprint": digest})
        h.server.setTokens({})
        h.flush()
        self.assertEqual(result(client.whenClosed()).code,
                         XTMPErrorCode.KEY_REVOKED)


class RegistryTests(SynchronousTestCase):
    def test_listLookupDescribeDisconnect(self):
        h = Harness()
        events = []

        class Observer:
            def sessionAdded(self, session):
                events.append(("added", session.identity.name))

            def sessionRemoved(self, session, reason):
                events.append(("removed", session.identity.name))

        h.server.registry.addObserver(Observer())
        alice, side, _ = h.connect(ALICE, host="10.2.3.4")
        alice.subscribe("a.*", lambda m: None, group="g")
        h.flush()
        registry = h.server.registry
        self.assertIs(registry.get(side.sessionId), side)
        self.assertEqual(registry.list(identity="alice"), [side])
        self.assertEqual(registry.list(identity=ALICE.public.fingerprint), [side])
        info = registry.describe(side)
        self.assertEqual(info["identity"]["name"], "alice")
        self.assertTrue(info["peer"].startswith("10.2.3.4:"))
        self.assertEqual(info["subscriptions"], [{"subject": "a.*", "group": "g"}])
        self.assertIn("messagesReceived", info["counters"])
        self.assertTrue(registry.disconnect(side.sessionId,
                                            XTMPErrorCode.GOING_AWAY, "bye"))
        h.flush()
        self.assertEqual(len(registry), 0)
        self.assertFalse(registry.disconnect(side.sessionId,
                                             XTMPErrorCode.GOING_AWAY, "bye"))
        self.assertEqual(events, [("added", "alice"), ("removed", "alice")])

    def test_rttFromHeartbeats(self):
        h = Harness(config(xtmp_protocol__heartbeat_interval=5))
        client, side, _ = h.connect(ALICE, heartbeatInterval=5)
        self.assertIsNone(side.rtt)
        for _ in range(4):
            h.clock.advance(5)
            h.flush()
        self.assertIsNotNone(side.rtt)
        self.assertGreaterEqual(side.rtt, 0)

    def test_drain(self):
        """
        drain() refuses new connections with GOING_AWAY, sends Disconnect
        GOING_AWAY to every session and fires once all are closed.
        """
        h = Harness()
        clients = [h.connect(i)[0] for i in (ALICE, BOB)]
        d = h.server.drain(10)
        h.flush()
        self.assertEqual(result(d), 0)
        for c in clients:
            self.assertEqual(result(c.whenClosed()).__class__.__name__,
                             "ConnectionDone")
        late, _, _ = h.connect(ALICE)
        self.assertEqual(handshakeCode(late), XTMPErrorCode.GOING_AWAY)


class DrainTests(SynchronousTestCase):
    def test_handlersFinishFirst(self):
        """
        While draining, a handler in progress still answers before the
        Disconnect, new messages get GOING_AWAY, and a session that never
        closes is cut at the deadline.
        """
        from twisted.internet.defer import Deferred
        h = Harness()
        pending = []
        h.server.router.route(0x20, lambda s, m: pending.append(Deferred())
                              or pending[-1])
        client, _, _ = h.connect(ALICE)
        first = client.request(0x20, b"before", timeout=60)
        h.flush()
        done = h.server.drain(10)
        late = client.request(0x20, b"after", timeout=60)
        h.flush()
        self.assertEqual(result(late).value.code, XTMPErrorCode.GOING_AWAY)
        self.assertIsNone(result(done))
        pending[0].callback(b"answered")
        h.flush()
        self.assertEqual(result(first).payload, b"answered")
        self.assertEqual(result(done), 0)
        self.assertEqual(result(client.whenClosed()).__class__.__name__,
                         "ConnectionDone")

    def test_deadlineCutsTheRest(self):
        h = Harness()
        client, side, pump = h.connect(ALICE)
        # Nothing moves (the client reads nothing) until the deadline, when
        # the server aborts the connection.
        done = h.server.drain(4)
        h.clock.advance(4.5)
        self.assertIsNone(result(done))
        h.flush()
        self.assertEqual(result(done), 1)
