"""
Presence and durable queues with the real thing: C{twistd -n muxframe
xtmp} processes with the embedded engine (the default storage), clients
over loopback TCP.  Two devices of one entity and a watcher see presence
change as devices come and go and as pings stop; an approval-gated
subscription; a message queued for an offline entity arrives once when it
connects, with receipts back to the sender; and a server killed with
SIGKILL while clients send, restarted on the same directory (its journal
given a torn tail), loses nothing it acknowledged and delivers
everything exactly once, in order.
"""

import glob
import os
import signal

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from muxframe.engines.model import Status, SubscriptionState
from muxframe.messaging import wire
from muxframe.messaging.client import MessagingClient

from tests.engine_contract import settle
from tests.presence_support import (
    ALICE, BOB, CAROL, CutProxy, connectPeer, eventually, startServer)


class PresenceProcessTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.process, self.port = yield startServer(self, self.directory)

    @defer.inlineCallbacks
    def test_devicesAndPings(self):
        """
        Carol, approved, sees alice online with her phone, still online
        (AWAY, the laptop's status) when the phone leaves, and offline
        once the laptop stops answering pings; bob, never approved, hears
        nothing.
        """
        proxy = yield CutProxy(self.port).start(self)
        carol = yield connectPeer(self, self.port, CAROL, "desk")
        bob = yield connectPeer(self, self.port, BOB, "b")
        phone = yield connectPeer(self, self.port, ALICE, "phone")
        yield carol.client.requestSubscription("alice")
        yield phone.client.approve("carol")
        yield eventually(lambda: carol.statuses("alice") == [Status.ONLINE])
        yield connectPeer(self, proxy.port, ALICE, "laptop",
                                   client=MessagingClient("laptop", Status.AWAY),
                                   heartbeatInterval=1)
        yield eventually(lambda: len(carol.statuses("alice")) == 2)
        self.assertEqual(carol.awareness[-1].from_.device, "laptop")
        info = yield carol.client.presence("alice")
        self.assertEqual(sorted((d.device, d.status) for d in info.devices),
                         [("laptop", Status.AWAY), ("phone", Status.ONLINE)])
        yield phone.close()
        yield eventually(lambda: carol.statuses("alice")[-1] == Status.AWAY)
        proxy.cutCable()
        yield eventually(lambda: carol.statuses("alice")[-1] == Status.OFFLINE,
                         timeout=20, what="alice offline after the laptop's missed pings")
        self.assertEqual(carol.statuses("alice"),
                         [Status.ONLINE, Status.ONLINE, Status.AWAY, Status.OFFLINE])
        self.assertEqual([a.from_.device for a in carol.awareness],
                         ["phone", "laptop", "phone", "laptop"])
        self.assertEqual(bob.statuses("alice"), [])
        info = yield carol.client.presence("alice")
        self.assertEqual((info.status, info.devices), (Status.OFFLINE, []))

    @defer.inlineCallbacks
    def test_approvalGatedSubscription(self):
        """
        A request reaches the target's devices (and waits for one that
        connects later, in its watchers); approval sends the answer and
        the current state; a denial stops nothing but the watcher's hopes;
        the approval survives a restart of the server.
        """
        carol = yield connectPeer(self, self.port, CAROL, "desk")
        answer = yield carol.client.requestSubscription("alice")
        self.assertEqual(answer.state, SubscriptionState.REQUESTED)
        alice = yield connectPeer(self, self.port, ALICE, "phone")
        pending = yield alice.client.watchers()
        self.assertEqual([(w.eid, w.state) for w in pending.subscriptions],
                         [("carol", SubscriptionState.REQUESTED)])
        self.assertEqual(carol.statuses("alice"), [])
        yield alice.client.setStatus(Status.BUSY)
        yield settle()
        self.assertEqual(carol.statuses("alice"), [])
        yield alice.client.approve("carol")
        yield eventually(lambda: carol.statuses("alice") == [Status.BUSY])
        self.assertEqual([(s.from_.eid, s.action, s.state) for s in carol.subscriptions],
                         [("alice", wire.APPROVE, SubscriptionState.APPROVED)])
        yield carol.close()
        yield alice.close()
        self.process.transport.signalProcess("TERM")
        yield self.process.ended
        self.process, self.port = yield startServer(self, self.directory, name="xtmp-2")
        carol = yield connectPeer(self, self.port, CAROL, "desk")
        mine = yield carol.client.subscriptions()
        self.assertEqual([(s.eid, s.state) for s in mine.subscriptions],
                         [("alice", SubscriptionState.APPROVED)])
        yield connectPeer(self, self.port, ALICE, "phone")
        yield eventually(lambda: carol.statuses("alice") == [Status.ONLINE])

    @defer.inlineCallbacks
    def test_offlineEntityGetsItOnceWithReceipts(self):
        """
        Bob sends to alice while she is offline; her phone gets the
        messages once, in order, when it connects (and nothing again when
        it reconnects); bob's device, offline meanwhile, gets the
        DELIVERED and READ receipts when it comes back.
        """
        bob = yield connectPeer(self, self.port, BOB, "laptop")
        sent = []
        for n in range(5):
            signal_ = yield bob.client.send("alice", b"hello %d" % n, messageId="m%d" % n)
            sent.append(signal_)
        self.assertEqual([s.signal_offset for s in sent], [1, 2, 3, 4, 5])
        yield bob.close()
        client = MessagingClient("phone")
        alice = yield connectPeer(self, self.port, ALICE, "phone", client=client)
        yield eventually(lambda: len(alice.messages) == 5)
        self.assertEqual([(m.id, m.payload, m.from_.eid) for m in alice.messages],
                         [("m%d" % n, b"hello %d" % n, "bob") for n in range(5)])
        # Read marks advance contiguously: reading the third message
        # after the first two.
        for message in alice.messages[:3]:
            alice.client.markRead(message.signal_offset)
        bobAgain = yield connectPeer(self, self.port, BOB, "laptop")
        yield eventually(lambda: len(bobAgain.receipts) == 8)
        self.assertEqual(sorted((r.id, r.signal_lifecycle_state) for r in bobAgain.receipts),
                         sorted([("m%d" % n, "delivered") for n in range(5)]
                                + [("m%d" % n, "read") for n in range(3)]))
        self.assertEqual({(r.from_.eid, r.from_.device) for r in bobAgain.receipts},
                         {("alice", "phone")})
        yield alice.close()
        fresh = yield connectPeer(self, self.port, ALICE, "phone")
        yield settle()
        self.assertEqual(fresh.messages, [])
        self.assertEqual(fresh.bound.delivered, 5)


class CrashTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_sigkillWhileSending(self):
        """
        Two senders pipeline messages to alice; the server is killed with
        SIGKILL after some acknowledgements, its active journal segment
        given a torn tail (the first half of a record), and restarted on
        the same directory.  Every message whose SENT the senders got is
        there; the senders resend the rest with the same ids; alice gets
        each of the 2 x 400 messages exactly once, each sender's in its
        order.
        """
        directory = os.path.abspath(self.mktemp())
        process, port = yield startServer(self, directory)
        senders = {}
        acked = {}
        identities = {"bob": BOB, "carol": CAROL}
        for name, identity in identities.items():
            peer = yield connectPeer(self, port, identity, "d")
            senders[name] = peer
            acked[name] = []
        total = 400

        def record(signal_, name):
            acked[name].append(signal_.id)
            return signal_

        pending = []
        for n in range(total):
            for name, peer in senders.items():
                d = peer.client.send("alice", b"%s %d" % (name.encode(), n),
                                     messageId="%s-%04d" % (name, n))
                pending.append(d.addCallback(record, name))
            if n % 20 == 0:
                yield deferLater(reactor, 0.005)
        yield eventually(lambda: sum(map(len, acked.values())) >= 200, timeout=60)
        process.transport.signalProcess("KILL")
        yield process.ended
        self.assertEqual(process.signal, signal.SIGKILL)
        ackedBefore = {name: list(ids) for name, ids in acked.items()}
        self.assertGreater(sum(map(len, ackedBefore.values())), 0)
        segments = sorted(glob.glob(os.path.join(directory, "data", "journal", "*.log")))
        with open(segments[-1], "rb") as f:
            data = f.read()
        with open(segments[-1], "ab") as f:
            # A torn tail: the start of a frame (length, CRC, part of a body).
            f.write(data[8:8 + 30])
        process, port = yield startServer(self, directory, name="xtmp-restarted")
        yield eventually(lambda: "torn tail dropped" in process.text(), timeout=10)
        for name, peer in senders.items():
            yield eventually(lambda: peer.protocol.connection.state == "CLOSED")
            again = yield connectPeer(self, port, identities[name], "d", client=peer.client)
            senders[name] = again
        yield defer.gatherResults(pending)
        self.assertEqual(sorted(acked["bob"]), ["bob-%04d" % n for n in range(total)])
        alice = yield connectPeer(self, port, ALICE, "phone")
        yield eventually(lambda: len(alice.messages) == 2 * total, timeout=60,
                         what="alice's %d messages" % (2 * total,))
        yield settle()
        ids = [m.id for m in alice.messages]
        self.assertEqual(len(ids), len(set(ids)))
        for name in senders:
            mine = [i for i in ids if i.startswith(name + "-")]
            self.assertEqual(mine, ["%s-%04d" % (name, n) for n in range(total)])
            self.assertTrue(set(ackedBefore[name]) <= set(mine))
        offsets = [m.signal_offset for m in alice.messages]
        self.assertEqual(offsets, sorted(offsets))
