"""
Presence, queues and history on the XTMP server (in this process, real
loopback TCP, the embedded engine on disk): binding devices, the
presence stanzas and their rules, queued messages with receipts and
deduplication, history subjects with recovery, and liveness when a
device stops answering pings; and the queue pump against a store whose
fetches the test answers.
"""

from types import SimpleNamespace

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from muxframe.engines.errors import LimitExceeded, RecoveryFailure
from muxframe.engines.model import (
    Address, ConsumerPosition, QueuedRecord, RecordKind, Status, SubscriptionState)
from muxframe.messaging import wire
from muxframe.messaging.client import MessagingClient
from muxframe.server.errors import ConfigError
from muxframe.server.queues import DevicePump
from muxframe.server.storage import Storage
from muxframe.xtmp import (
    Identity, PeerError, XTMPClientFactory, XTMPErrorCode, connectXTMP)

from tests.engine_contract import settle
from tests.presence_support import (
    ALICE, BOB, CAROL, CutProxy, connectPeer, eventually, serveInProcess)
from tests.test_server_support import SERVER_IDENTITY, config


def refusedWith(testCase, d, code):
    def check(failure):
        failure.trap(PeerError)
        testCase.assertEqual(failure.value.code, code, failure.value.reason)
        return failure.value.reason
    return d.addCallbacks(lambda r: testCase.fail("not refused: %r" % (r,)), check)


def operatorView(server, storage):
    """
    What the admin service shows of C{storage}: the C{storage} part of
    C{GET /api/v1/stats}, and the metrics' samples by family.
    """
    from muxframe.admin.xtmpstatus import XTMPStatus
    import json
    status = XTMPStatus(server, server.config, reactor, storage=storage)
    # (As the API sends it: JSON.)
    stats = json.loads(json.dumps(status.stats()))
    return stats["storage"], status.metrics().samples


class BindTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.server, self.storage, self.port = yield serveInProcess(self)

    @defer.inlineCallbacks
    def test_entityAndDevice(self):
        """
        The entity is the key's name; the device is the Bind's; the answer
        names the node and the device's queue position.
        """
        alice = yield connectPeer(self, self.port, ALICE, "phone")
        self.assertEqual((alice.bound.identity.eid, alice.bound.identity.device,
                          alice.bound.identity.node),
                         ("alice", "phone", self.storage.nodeId))
        self.assertEqual((alice.bound.delivered, alice.bound.next_offset), (0, 1))
        laptop = yield connectPeer(self, self.port, ALICE, "laptop")
        info = yield laptop.client.presence()
        self.assertEqual(sorted(d.device for d in info.devices), ["laptop", "phone"])

    @defer.inlineCallbacks
    def test_answeredOnceWatchesActive(self):
        """
        A Bind is answered once the entity's watches receive notices from
        every node (L{IWatch.whenActive}: with Redis, their subscriptions
        confirmed), so a notice another node publishes after the client
        heard the answer is not lost; a notice arriving meanwhile is sent
        (before the answer).
        """
        presence = self.storage.engine.presence
        original = presence.watch
        pending = defer.Deferred()

        def watch(entity, callback):
            w = original(entity, callback)
            if entity == "alice":
                w.whenActive = lambda: pending
            return w
        self.patch(presence, "watch", watch)
        carol = yield connectPeer(self, self.port, CAROL, "desk")
        bound = connectPeer(self, self.port, ALICE, "phone")
        yield eventually(lambda: self.storage.bindingsOf("alice"), what="alice ready")
        yield carol.client.requestSubscription("alice")
        yield settle()
        self.assertFalse(bound.called)
        pending.callback(None)
        alice = yield bound
        self.assertEqual(alice.bound.identity.device, "phone")
        self.assertEqual([s.from_.eid for s in alice.subscriptions], ["carol"])

    @defer.inlineCallbacks
    def test_unnamedKeyIsItsFingerprint(self):
        stranger = Identity.generate()
        self.server.setKeys([("alice", ALICE.public), (None, stranger.public)])
        peer = yield connectPeer(self, self.port, stranger, "d")
        self.assertEqual(peer.bound.identity.eid, stranger.public.fingerprint)

    @defer.inlineCallbacks
    def test_fromAndDevice(self):
        """
        A from naming another entity or device is UNAUTHORIZED; a second
        Bind of another device is BAD_REQUEST; a Bind claiming another
        entity is UNAUTHORIZED; a malformed stanza is BAD_REQUEST.
        """
        alice = yield connectPeer(self, self.port, ALICE, "phone")
        reason = yield refusedWith(self, alice.protocol.request(
            wire.StanzaType.Message, wire.Message(
                id="m", to=wire.Identity(eid="bob"),
                from_=wire.Identity(eid="bob")).encode()), XTMPErrorCode.UNAUTHORIZED)
        self.assertIn("from must be", reason)
        yield refusedWith(self, alice.protocol.request(
            wire.StanzaType.Awareness, wire.Awareness(
                status=3, from_=wire.Identity(eid="alice", device="laptop")).encode()),
            XTMPErrorCode.UNAUTHORIZED)
        yield refusedWith(self, alice.protocol.request(wire.StanzaType.Bind, wire.Bind(
            identity=wire.Identity(eid="", device="laptop")).encode()),
            XTMPErrorCode.BAD_REQUEST)
        yield refusedWith(self, alice.protocol.request(wire.StanzaType.Bind, wire.Bind(
            identity=wire.Identity(eid="bob", device="phone")).encode()),
            XTMPErrorCode.UNAUTHORIZED)
        yield refusedWith(self, alice.protocol.request(wire.StanzaType.Awareness,
                                                       b"\x0a\x05ab"),
                          XTMPErrorCode.BAD_REQUEST)

    @defer.inlineCallbacks
    def test_notBound(self):
        """
        Before a Bind, presence and queue messages are NOT_BOUND.
        """
        protocol = yield connectXTMP(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port),
                                     XTMPClientFactory(serverKey=SERVER_IDENTITY.public,
                                                       identity=BOB, resume=False))
        self.addCleanup(lambda: protocol.disconnect() or protocol.whenClosed())
        for messageType, stanza in ((wire.StanzaType.Awareness, wire.Awareness(status=3)),
                                    (wire.StanzaType.Message, wire.Message(id="m")),
                                    (wire.StanzaType.PresenceQuery, wire.PresenceQuery())):
            reason = yield refusedWith(self, protocol.request(messageType, stanza.encode()),
                                       XTMPErrorCode.NOT_BOUND)
            self.assertIn("bind a device first", reason)

    @defer.inlineCallbacks
    def test_deviceReplaced(self):
        """
        A second session of the same device replaces the first
        (DEVICE_REPLACED); the device stays online throughout.
        """
        carol = yield connectPeer(self, self.port, CAROL, "c")
        first = yield connectPeer(self, self.port, ALICE, "phone")
        yield carol.client.requestSubscription("alice")
        yield first.client.approve("carol")
        yield eventually(lambda: carol.statuses("alice") == [Status.ONLINE])
        closed = first.protocol.whenClosed()
        yield connectPeer(self, self.port, ALICE, "phone")
        why = yield closed
        self.assertEqual(why.code, XTMPErrorCode.DEVICE_REPLACED)
        yield settle()
        self.assertNotIn(Status.OFFLINE, carol.statuses("alice"))
        info = yield carol.client.presence("alice")
        self.assertEqual([d.device for d in info.devices], ["phone"])
        self.assertEqual(self.storage.counters["replaced"], 1)

    @defer.inlineCallbacks
    def _watchedPhone(self):
        """
        Alice's phone bound and watched by bob; the phone's session and a
        raw second session of alice (not bound).
        """
        bob = yield connectPeer(self, self.port, BOB, "laptop")
        phone = yield connectPeer(self, self.port, ALICE, "phone")
        yield bob.client.requestSubscription("alice")
        yield phone.client.approve("bob")
        yield eventually(lambda: bob.statuses("alice") == [Status.ONLINE])
        protocol = yield connectXTMP(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port),
                                     XTMPClientFactory(serverKey=SERVER_IDENTITY.public,
                                                       identity=ALICE, resume=False))
        self.addCleanup(lambda: protocol.disconnect() or protocol.whenClosed())
        return bob, phone, protocol

    @defer.inlineCallbacks
    def _stillBound(self, bob, phone):
        yield settle()
        self.assertTrue(phone.protocol.connection is not None
                        and phone.protocol.whenClosed().called is False)
        self.assertNotIn(Status.OFFLINE, bob.statuses("alice"))
        info = yield self.storage.engine.presence.presence("alice")
        self.assertEqual([(d.device, d.status) for d in info.devices],
                         [("phone", Status.ONLINE)])
        self.assertEqual(self.storage.counters["replaced"], 0)
        answer = yield phone.client.presence()
        self.assertEqual([d.device for d in answer.devices], ["phone"])

    @defer.inlineCallbacks
    def test_refusedBindKeepsTheDevice(self):
        """
        A Bind of a bound device refused BAD_REQUEST (a status that is not
        a presence status) changes nothing: the device's session stays,
        online.
        """
        bob, phone, protocol = yield self._watchedPhone()
        reason = yield refusedWith(self, protocol.request(wire.StanzaType.Bind, wire.Bind(
            identity=wire.Identity(device="phone"), status=Status.OFFLINE).encode()),
            XTMPErrorCode.BAD_REQUEST)
        self.assertIn("not a presence status", reason)
        yield self._stillBound(bob, phone)

    @defer.inlineCallbacks
    def test_bindFailedInTheEngineKeepsTheDevice(self):
        """
        A Bind of a bound device that the engine fails (after its connect)
        does not replace the device's session nor take it offline, and
        leaves the device's status its session's.
        """
        bob, phone, protocol = yield self._watchedPhone()
        queues = self.storage.engine.queues
        position = queues.position
        queues.position = lambda entity, device: defer.fail(LimitExceeded("no room", "x"))
        try:
            yield refusedWith(self, protocol.request(wire.StanzaType.Bind, wire.Bind(
                identity=wire.Identity(device="phone"), status=Status.DND).encode()),
                XTMPErrorCode.BUSY)
        finally:
            queues.position = position
        yield self._stillBound(bob, phone)


class KnownDevicesTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def waitFor(self, engine, entity, device, delivered):
        for _ in range(1000):
            p = yield engine.queues.position(entity, device)
            if p.delivered == delivered:
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail("%s/%s never reached %d" % (entity, device, delivered))

    @defer.inlineCallbacks
    def offline(self, engine, entity, device):
        for _ in range(1000):
            p = yield engine.presence.presence(entity)
            if device not in [d.device for d in p.devices]:
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail("%s/%s stayed online" % (entity, device))

    @defer.inlineCallbacks
    def test_knownDevicesLimit(self):
        """
        With C{storage.max_known_devices} devices known and every one
        online, a Bind of one more is BUSY naming the setting, and changes
        nothing; once one is offline, the Bind forgets its position (the
        least recently seen offline device's) and succeeds; that device
        binding again starts afresh, sent again what is kept.
        """
        server, storage, port = yield serveInProcess(
            self, storage__max_known_devices=2, storage__retention_interval=0)
        engine = storage.engine
        bob = yield connectPeer(self, port, BOB, "laptop")
        for i in range(3):
            yield bob.client.send("alice", b"m%d" % (i,))
        phone = yield connectPeer(self, port, ALICE, "phone")
        yield self.waitFor(engine, "alice", "phone", 3)
        laptop = yield connectPeer(self, port, ALICE, "laptop")
        failure = yield self.assertFailure(connectPeer(self, port, ALICE, "tablet"), PeerError)
        self.assertEqual(failure.code, XTMPErrorCode.BUSY)
        self.assertIn("max_known_devices", failure.reason)
        known = yield engine.queues.knownDevices("alice")
        self.assertEqual(known, ["phone", "laptop"])
        info = yield engine.presence.presence("alice")
        self.assertEqual(sorted(d.device for d in info.devices), ["laptop", "phone"])
        yield phone.close()
        yield self.offline(engine, "alice", "phone")
        tablet = yield connectPeer(self, port, ALICE, "tablet")
        self.assertEqual(tablet.bound.delivered, 0)
        known = yield engine.queues.knownDevices("alice")
        self.assertEqual(known, ["laptop", "tablet"])
        self.assertEqual(engine.queues.stats()["devicesForgotten"], 1)
        # Operators see it: the admin API's stats and the metrics.
        report, samples = operatorView(server, storage)
        self.assertEqual(report["engine"]["devicesForgotten"], 1)
        self.assertEqual(report["bound"], 3)  # bob, alice laptop and tablet
        self.assertEqual(samples["muxframe_xtmp_storage_devices_forgotten"],
                         [((), 1)])
        self.assertEqual(samples["muxframe_xtmp_storage_bound"], [((), 3)])
        self.assertEqual(samples["muxframe_xtmp_storage_entities"], [((), 2)])
        yield laptop.close()
        yield self.offline(engine, "alice", "laptop")
        again = yield connectPeer(self, port, ALICE, "phone")
        self.assertEqual(again.bound.delivered, 0)
        yield eventually(lambda: len(again.messages) == 3)


class QueueLimitTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_messageToNewEntityAtTheLimit(self):
        """
        With C{storage.max_queues} queues kept, a Message to an entity
        without one is BUSY naming the setting and stores nothing; the
        messages of the same turn to queues kept are stored and answered.
        """
        server, storage, port = yield serveInProcess(self, storage__max_queues=3)
        bob = yield connectPeer(self, port, BOB, "laptop")
        alice = yield connectPeer(self, port, ALICE, "phone")
        yield bob.client.send("carol", b"queued for carol")
        refused = bob.client.send("dave", b"no room")
        sent = bob.client.send("alice", b"hello")
        failure = yield self.assertFailure(refused, PeerError)
        self.assertEqual(failure.code, XTMPErrorCode.BUSY)
        self.assertIn("max_queues", failure.reason)
        answer = yield sent
        self.assertEqual(answer.signal_offset, 1)
        yield eventually(lambda: [m.payload for m in alice.messages] == [b"hello"])
        records = yield storage.engine.queues.fetch("dave", 1)
        self.assertEqual(records, [])
        # Once: dave's message is refused alone, in whatever batch it was.
        self.assertEqual(storage.engine.queues.stats()["queuesRefused"], 1)
        report, samples = operatorView(server, storage)
        self.assertEqual(report["engine"]["queuesRefused"], 1)
        self.assertEqual(samples["muxframe_xtmp_storage_queues_refused"],
                         [((), 1)])


class PresenceTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.server, self.storage, self.port = yield serveInProcess(self)

    @defer.inlineCallbacks
    def test_approvalGatedSubscription(self):
        """
        Carol asks to watch alice; alice is told and approves; carol gets
        the answer and alice's current awareness, then her changes.  Bob,
        denied, hears nothing and may not query her.
        """
        alice = yield connectPeer(self, self.port, ALICE, "phone")
        carol = yield connectPeer(self, self.port, CAROL, "c")
        bob = yield connectPeer(self, self.port, BOB, "b")
        asked = yield carol.client.requestSubscription("alice")
        self.assertEqual(asked.state, SubscriptionState.REQUESTED)
        yield bob.client.requestSubscription("alice")
        yield eventually(lambda: len(alice.subscriptions) == 2)
        self.assertEqual([(s.from_.eid, s.action, s.state) for s in alice.subscriptions],
                         [("carol", wire.SUBSCRIBE, SubscriptionState.REQUESTED),
                          ("bob", wire.SUBSCRIBE, SubscriptionState.REQUESTED)])
        pending = yield alice.client.watchers()
        self.assertEqual([(e.eid, e.state) for e in pending.subscriptions],
                         [("bob", SubscriptionState.REQUESTED),
                          ("carol", SubscriptionState.REQUESTED)])
        yield refusedWith(self, carol.client.presence("alice"),
                          XTMPErrorCode.PERMISSION_DENIED)
        yield alice.client.approve("carol")
        yield alice.client.deny("bob")
        yield eventually(lambda: carol.statuses("alice") == [Status.ONLINE])
        self.assertEqual([(s.from_.eid, s.state) for s in carol.subscriptions],
                         [("alice", SubscriptionState.APPROVED)])
        yield alice.client.setStatus(Status.DND, "in a meeting")
        yield eventually(lambda: carol.statuses("alice")[-1:] == [Status.DND])
        self.assertEqual(carol.awareness[-1].details, "in a meeting")
        info = yield carol.client.presence("alice")
        self.assertEqual((info.status, [d.status for d in info.devices]),
                         (Status.DND, [Status.DND]))
        yield refusedWith(self, bob.client.presence("alice"),
                          XTMPErrorCode.PERMISSION_DENIED)
        self.assertEqual(bob.statuses("alice"), [])
        self.assertEqual([s.state for s in bob.subscriptions], [SubscriptionState.DENIED])

    @defer.inlineCallbacks
    def test_activitiesLocationVisibility(self):
        alice = yield connectPeer(self, self.port, ALICE, "phone")
        carol = yield connectPeer(self, self.port, CAROL, "c")
        yield carol.client.requestSubscription("alice")
        yield alice.client.approve("carol")
        yield eventually(lambda: len(carol.awareness) == 1)
        answer = yield alice.client.setActivity(Status.TYPING, 5)
        self.assertEqual((answer.status, answer.ttl), (Status.TYPING, 5))
        yield eventually(lambda: len(carol.awareness) == 2)
        self.assertEqual((carol.awareness[1].status, carol.awareness[1].ttl),
                         (Status.TYPING, 5))
        yield refusedWith(self, alice.client.setActivity(Status.TYPING, 3600),
                          XTMPErrorCode.BAD_REQUEST)
        yield refusedWith(self, alice.client.setStatus(Status.OFFLINE),
                          XTMPErrorCode.BAD_REQUEST)
        yield alice.client.setLocation(52.5, 13.4)
        yield eventually(lambda: len(carol.awareness) == 3)
        self.assertEqual((carol.awareness[2].latitude, carol.awareness[2].longitude),
                         (52.5, 13.4))
        yield alice.client.setVisibility(False)
        yield eventually(lambda: carol.statuses("alice")[-1] == Status.OFFLINE)
        info = yield carol.client.presence("alice")
        self.assertEqual((info.status, info.devices), (Status.OFFLINE, []))
        mine = yield alice.client.presence()
        self.assertEqual(mine.status, Status.ONLINE)
        yield alice.client.setVisibility(True)
        yield eventually(lambda: carol.statuses("alice")[-1] == Status.ONLINE)

    @defer.inlineCallbacks
    def test_devicesComeAndGo(self):
        """
        The entity's status follows its devices: online with the first,
        the most available of them, offline with the last.
        """
        carol = yield connectPeer(self, self.port, CAROL, "c")
        phone = yield connectPeer(self, self.port, ALICE, "phone")
        yield carol.client.requestSubscription("alice")
        yield phone.client.approve("carol")
        laptop = yield connectPeer(self, self.port, ALICE, "laptop")
        yield phone.client.setStatus(Status.AWAY)
        yield eventually(lambda: carol.statuses("alice")[-1:] == [Status.ONLINE]
                         and len(carol.awareness) >= 3)
        yield laptop.close()
        yield eventually(lambda: carol.statuses("alice")[-1] == Status.AWAY)
        yield phone.close()
        yield eventually(lambda: carol.statuses("alice")[-1] == Status.OFFLINE)
        devices = [a.from_.device for a in carol.awareness]
        self.assertEqual(devices[-2:], ["laptop", "phone"])

    @defer.inlineCallbacks
    def test_missedPings(self):
        """
        A device that stops answering (its cable cut) is offline after
        missed_pings heartbeat intervals; its session is then closed by
        XTMP's silence rule.
        """
        proxy = yield CutProxy(self.port).start(self)
        carol = yield connectPeer(self, self.port, CAROL, "c")
        alice = yield connectPeer(self, proxy.port, ALICE, "phone", heartbeatInterval=1)
        yield carol.client.requestSubscription("alice")
        yield alice.client.approve("carol")
        yield eventually(lambda: carol.statuses("alice") == [Status.ONLINE])
        proxy.cutCable()
        yield eventually(lambda: carol.statuses("alice")[-1:] == [Status.OFFLINE],
                         timeout=15, what="alice offline after missed pings")
        yield eventually(lambda: len(self.server.registry) == 1, timeout=15)


class LivenessTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.server, self.storage, self.port = yield serveInProcess(
            self, storage__missed_pings=1)

    @defer.inlineCallbacks
    def test_offlineAtTheMissLimit(self):
        """
        With missed_pings 1 the device goes offline after one silent
        interval, by the server's count (before XTMP closes the session
        after two).
        """
        proxy = yield CutProxy(self.port).start(self)
        carol = yield connectPeer(self, self.port, CAROL, "c")
        alice = yield connectPeer(self, proxy.port, ALICE, "phone", heartbeatInterval=1)
        yield carol.client.requestSubscription("alice")
        yield alice.client.approve("carol")
        yield eventually(lambda: carol.statuses("alice") == [Status.ONLINE])
        proxy.cutCable()
        yield eventually(lambda: carol.statuses("alice")[-1:] == [Status.OFFLINE],
                         timeout=15, what="alice offline after a missed ping")
        self.assertEqual(self.storage.counters["missedPings"], 1)
        yield eventually(lambda: len(self.server.registry) == 1, timeout=15)
        yield settle()
        self.assertEqual(carol.statuses("alice"), [Status.ONLINE, Status.OFFLINE])


class QueueTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.server, self.storage, self.port = yield serveInProcess(self)

    @defer.inlineCallbacks
    def test_offlineQueueReceiptsOnce(self):
        """
        A message to an offline entity is durable when the sender hears
        SENT; the entity's device gets it once when it connects (and not
        again on its next session); the sender gets DELIVERED and READ.
        """
        bob = yield connectPeer(self, self.port, BOB, "laptop")
        sent = yield bob.client.send("alice", b"hello", messageId="m-1")
        self.assertEqual((sent.signal_offset, sent.user_offset, sent.duplicate,
                          sent.signal_ack_state.send), (1, 1, False, True))
        again = yield bob.client.send("alice", b"hello", messageId="m-1")
        self.assertEqual((again.signal_offset, again.duplicate), (1, True))
        client = MessagingClient("phone")
        alice = yield connectPeer(self, self.port, ALICE, "phone", client=client)
        yield eventually(lambda: len(alice.messages) == 1)
        message = alice.messages[0]
        self.assertEqual((message.id, message.payload, message.from_.eid,
                          message.from_.device, message.signal_offset,
                          message.signal_type),
                         ("m-1", b"hello", "bob", "laptop", 1, wire.RECEIVER))
        yield eventually(lambda: len(bob.receipts) == 1)
        alice.client.markRead(1)
        yield eventually(lambda: len(bob.receipts) == 2)
        self.assertEqual([(r.id, r.signal_lifecycle_state, r.from_.eid, r.user_offset)
                          for r in bob.receipts],
                         [("m-1", "delivered", "alice", 1), ("m-1", "read", "alice", 1)])
        yield alice.close()
        yield settle()
        again = yield connectPeer(self, self.port, ALICE, "phone", client=client)
        yield settle()
        self.assertEqual(len(again.messages), 0)
        self.assertEqual(again.bound.delivered, 1)

    @defer.inlineCallbacks
    def test_orderAndCopies(self):
        """
        Many messages arrive in order, each once; the sender's other
        device gets copies (signal type DEVICE), the sending one does not
        see its own.
        """
        phone = yield connectPeer(self, self.port, BOB, "phone")
        laptop = yield connectPeer(self, self.port, BOB, "laptop")
        alice = yield connectPeer(self, self.port, ALICE, "a")
        yield defer.gatherResults([phone.client.send("alice", b"%d" % n, receipts=False)
                                   for n in range(600)])
        yield eventually(lambda: len(alice.messages) == 600 and len(laptop.messages) == 600,
                         timeout=30)
        self.assertEqual([m.payload for m in alice.messages], [b"%d" % n for n in range(600)])
        self.assertEqual({m.signal_type for m in laptop.messages}, {wire.DEVICE})
        self.assertEqual(phone.messages, [])
        yield settle()
        self.assertEqual(bob_receipts(phone, laptop), 0)

    @defer.inlineCallbacks
    def test_refusals(self):
        bob = yield connectPeer(self, self.port, BOB, "laptop")
        yield refusedWith(self, bob.protocol.request(wire.StanzaType.Message, wire.Message(
            to=wire.Identity(eid="alice")).encode()), XTMPErrorCode.BAD_REQUEST)
        yield refusedWith(self, bob.protocol.request(wire.StanzaType.Message, wire.Message(
            id="x", to=wire.Identity(eid="a\x00b")).encode()), XTMPErrorCode.BAD_REQUEST)
        closed = []
        bob.protocol.errorReceived = lambda code, reason: closed.append((code, reason))
        bob.client.acknowledge(99)
        yield eventually(lambda: closed)
        self.assertEqual(closed[0][0], XTMPErrorCode.BAD_REQUEST)
        self.assertIn("never handed out", closed[0][1])

    @defer.inlineCallbacks
    def test_ackPastTheHeldIsBadRequest(self):
        """
        An acknowledgement past a gap when 1,024 wait already is refused
        BAD_REQUEST (the client's fault, not a BUSY to retry) and changes
        nothing; the acknowledgement filling the gap is taken, and lets the
        held go.
        """
        bob = yield connectPeer(self, self.port, BOB, "laptop")
        yield defer.gatherResults([bob.client.send("alice", b"%d" % n, receipts=False)
                                   for n in range(1030)])
        # A session that acknowledges nothing unless told to.
        protocol = yield connectXTMP(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port),
                                     XTMPClientFactory(serverKey=SERVER_IDENTITY.public,
                                                       identity=ALICE, resume=False))
        self.addCleanup(lambda: protocol.disconnect() or protocol.whenClosed())
        protocol.setHandler(wire.StanzaType.Message, lambda p, m: None)
        yield protocol.request(wire.StanzaType.Bind, wire.Bind(
            identity=wire.Identity(device="phone")).encode())
        errors = []
        protocol.errorReceived = lambda code, reason: errors.append((code, reason))
        for offset in range(2, 1028):
            protocol.send(wire.StanzaType.Signal, wire.Signal(
                status=wire.ACK, type=1, signal_offset=offset,
                signal_ack_state=wire.SignalAckState(delivered=True)).encode())
        yield eventually(lambda: errors)
        yield settle()
        self.assertEqual([code for code, _ in errors], [XTMPErrorCode.BAD_REQUEST] * 2)
        self.assertIn("wait past a gap", errors[0][1])
        position = yield self.storage.engine.queues.position("alice", "phone")
        self.assertEqual(position.delivered, 0)
        protocol.send(wire.StanzaType.Signal, wire.Signal(
            status=wire.ACK, type=1, signal_offset=1,
            signal_ack_state=wire.SignalAckState(delivered=True)).encode())
        yield settle()
        position = yield self.storage.engine.queues.position("alice", "phone")
        self.assertEqual(position.delivered, 1025)


class _FetchingQueues:
    """
    A queue store whose fetches wait until the test answers them.
    """

    def __init__(self, count):
        self.count = count
        self.fetches = []

    def fetch(self, entity, after, limit, maxBytes):
        d = defer.Deferred()
        self.fetches.append((after, limit, d))
        return d

    def answer(self):
        """
        Answer the oldest fetch waiting with what the queue holds.
        """
        after, limit, d = self.fetches.pop(0)
        d.callback([QueuedRecord(offset, RecordKind.MESSAGE, "m%d" % (offset,),
                                 Address("bob", "laptop"), 0, b"")
                    for offset in range(after, min(after + limit, self.count + 1))])


class _Session:
    def __init__(self):
        self.sent = []

    def isConnected(self):
        return True

    def send(self, messageType, payload):
        self.sent.append(wire.Message.decode(payload).signal_offset)


class PumpTests(TestCase):
    """
    L{DevicePump} against a queue store answering when told.
    """

    def setUp(self):
        self.queues = _FetchingQueues(2000)
        storage = SimpleNamespace(engine=SimpleNamespace(queues=self.queues),
                                  reactor=reactor)
        self.session = _Session()
        binding = SimpleNamespace(entity="alice", device="phone", session=self.session)
        self.pump = DevicePump(SimpleNamespace(storage=storage), binding, 256)

    def position(self, delivered):
        return ConsumerPosition("alice", "phone", delivered, 0, 1, self.queues.count + 1)

    def drain(self):
        while self.queues.fetches:
            self.queues.answer()

    def test_startDuringFetch(self):
        """
        A start (RESUME, a Bind again) while a fetch is in flight sends
        from the new position: the stale fetch's records are not sent and
        do not move the cursor past what was not acknowledged.
        """
        self.pump.start(self.position(0))
        self.drain()
        self.assertEqual(self.session.sent, list(range(1, 257)))
        del self.session.sent[:]
        for offset in range(1, 101):
            self.pump.acknowledged(offset)
        self.assertEqual(self.queues.fetches[0][0], 257)
        self.pump.start(self.position(100))
        self.drain()
        self.assertEqual(self.session.sent, list(range(101, 357)))
        self.assertEqual(sorted(self.pump.unacked), list(range(101, 357)))


def bob_receipts(*peers):
    return sum(len(p.receipts) for p in peers)


class HistoryTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.server, self.storage, self.port = yield serveInProcess(
            self, history__={"chat.>": {"size": 5, "ttl": 60}})

    @defer.inlineCallbacks
    def test_recoverWhatWasMissed(self):
        """
        A subscriber back with its last offset and epoch gets exactly
        what it missed, then live publications, each once in order; one
        whose offset was trimmed is told recovery is impossible.
        """
        alice = yield connectPeer(self, self.port, ALICE, "a")
        bob = yield connectPeer(self, self.port, BOB, "b")
        seen = []
        answer = yield bob.client.subscribeHistory("chat.room", seen.append)
        self.assertEqual((answer.offset, answer.recovered), (0, False))
        for n in range(3):
            alice.protocol.publish("chat.room", b"m%d" % n)
        yield eventually(lambda: len(seen) == 3)
        position = bob.client.historyPosition("chat.room")
        self.assertEqual(position[0], 3)
        yield bob.client.unsubscribeHistory("chat.room")
        for n in range(3, 5):
            alice.protocol.publish("chat.room", b"m%d" % n)
        yield eventually(lambda: self.storage.history.counters["stored"] == 5)
        resets = []
        answer = yield bob.client.subscribeHistory(
            "chat.room", seen.append, lambda *a: resets.append(a), since=position)
        self.assertTrue(answer.recovered)
        self.assertEqual([p.offset for p in answer.publications], [4, 5])
        alice.protocol.publish("chat.room", b"m5")
        yield eventually(lambda: len(seen) == 6)
        self.assertEqual([p.payload for p in seen], [b"m%d" % n for n in range(6)])
        self.assertEqual({p.message_type for p in seen}, {0x41})
        carol = yield connectPeer(self, self.port, CAROL, "c")
        lost = []
        answer = yield carol.client.subscribeHistory(
            "chat.room", lambda p: None, lambda *a: lost.append(a), since=(0, position[1]))
        self.assertEqual((answer.recovered, answer.failure),
                         (False, RecoveryFailure.TRIMMED))
        self.assertEqual(lost, [(RecoveryFailure.TRIMMED, 6, position[1])])
        answer = yield carol.protocol.request(
            wire.StanzaType.ChannelHistory, wire.ChannelHistory(
                subject="chat.other", type=wire.HISTORY_SUBSCRIBE, recover=True,
                offset=1, epoch="stale").encode())
        answer = wire.ChannelHistory.decode(answer.payload)
        self.assertEqual(answer.failure, RecoveryFailure.EPOCH_CHANGED)
        yield refusedWith(self, carol.protocol.request(
            wire.StanzaType.ChannelHistory, wire.ChannelHistory(
                subject="news.x", type=wire.HISTORY_SUBSCRIBE).encode()),
            XTMPErrorCode.BAD_REQUEST)


class ConfigTests(TestCase):
    def test_reservedTypes(self):
        from muxframe.server.factory import XTMPServer
        conf = config(storage__directory=self.mktemp(),
                      handlers__={0x56: "tests.test_server_tcp:echo"})
        storage = Storage.fromConfig(conf, None)
        server = XTMPServer(SERVER_IDENTITY, conf)
        with self.assertRaises(ConfigError) as e:
            storage.attach(server)
        self.assertEqual(e.exception.key, "handlers.0x56")

    def test_otherEngineKeysAndNone(self):
        with self.assertRaises(ConfigError) as e:
            Storage.fromConfig(config(storage__sweep_interval=2), None)
        self.assertEqual(e.exception.key, "storage.sweep_interval")
        self.assertIsNone(Storage.fromConfig(config(storage__engine="none"), None))
        with self.assertRaises(ConfigError) as e:
            Storage.fromConfig(config(storage__engine="none",
                                      history__={"a.>": {}}), None)
        self.assertEqual(e.exception.key, "history")
        with self.assertRaises(ConfigError) as e:
            config(storage__engine="redis")
        self.assertEqual(e.exception.key, "storage.address")


class LogEngineFailureTests(TestCase):
    """
    L{logEngineFailure}: the failures of background engine work (history
    records, presence refreshes, queue fetches) do not flood the log when
    Redis refuses every write (out of memory).
    """

    def setUp(self):
        import muxframe.server.storage as storage
        from muxframe.logthrottle import LogThrottle
        from twisted.logger import Logger
        self.patch(storage, "_FAILURES", LogThrottle(perInterval=10, interval=60.0))
        self.events = []
        self.logger = Logger(namespace="test", observer=self.events.append)

    def test_storageErrorThrottled(self):
        """
        A L{StorageError} met a hundred times is at most ten lines, each
        with the engine's words and the fields, none with a traceback.
        """
        from twisted.python.failure import Failure
        from muxframe.engines.errors import StorageError
        from muxframe.server.storage import logEngineFailure
        from twisted.logger import formatEvent
        error = StorageError("Redis at h:1 refused a command: OOM command not allowed")
        for _ in range(100):
            logEngineFailure(self.logger, Failure(error),
                             "history of {subject!r} not stored", subject="a.b")
        self.assertEqual(len(self.events), 10)
        self.assertNotIn("log_failure", self.events[0])
        self.assertIn("history of 'a.b' not stored: Redis at h:1 refused a command: OOM",
                      formatEvent(self.events[0]))

    def test_outageQuiet(self):
        """
        An outage (L{StorageUnavailable}) or a stopped engine is not logged.
        """
        from twisted.python.failure import Failure
        from muxframe.engines.errors import EngineStopped, StorageUnavailable
        from muxframe.server.storage import logEngineFailure
        logEngineFailure(self.logger, Failure(StorageUnavailable("down", "h:1")), "x")
        logEngineFailure(self.logger, Failure(EngineStopped("stopped")), "x")
        self.assertEqual(self.events, [])

    def test_bugKeepsTraceback(self):
        """
        Any other exception (a bug) is logged with its traceback.
        """
        from twisted.python.failure import Failure
        from muxframe.server.storage import logEngineFailure
        logEngineFailure(self.logger, Failure(ZeroDivisionError()), "x")
        self.assertEqual(len(self.events), 1)
        self.assertIn("log_failure", self.events[0])
