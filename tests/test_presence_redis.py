"""
Several nodes as one service: two C{twistd -n muxframe xtmp} processes
sharing one real Redis server (tests/redisserver.py: 127.0.0.1, a random
port, appendonly with an fsync per write; never mocked; a missing binary
fails under CI=true).  A client on node A sees the presence of a client
on node B; a message sent on A to an entity on B arrives, receipts come
back; a broadcast reaches both nodes' sessions; subjects, requests and
queue groups span the nodes; a device bound again on the other node
takes over; and killing node A with SIGKILL loses nothing a client on B
was sent, while A's devices go offline through B.
"""

import os
import signal
import socket

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from muxframe.engines.model import Status
from muxframe.xtmp import MessageType, PeerError, XTMPErrorCode

from tests.engine_contract import settle
from tests.presence_support import (
    ALICE, BOB, CAROL, connectPeer, eventually, freePort, startServer)
from tests.redisserver import RedisServer

APP = '''
"""A handler of the cluster tests: broadcast from a client's request."""

def broadcast(session, message):
    return b"%d" % session.factory.broadcast(message.payload)
'''


@defer.inlineCallbacks
def onceRedisIsBack(attempt, tries=300):
    """
    Call C{attempt()} (a Deferred) until it stops failing with
    L{PeerError} (the node refuses while Redis is down), every 0.1 s at
    most C{tries} times; its result, or the last refusal.
    """
    for left in range(tries, 0, -1):
        try:
            result = yield attempt()
        except PeerError:
            if left == 1:
                raise
            yield deferLater(reactor, 0.1)
        else:
            return result


class TwoNodeTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = RedisServer(appendonly=True).start()
        self.addCleanup(self.redis.stop)
        self.nodes = {}
        for name in ("a", "b"):
            directory = os.path.abspath(self.mktemp())
            os.makedirs(directory)
            with open(os.path.join(directory, "clusterapp.py"), "w") as f:
                f.write(APP)
            process, port = yield startServer(self, directory, storage={
                "engine": "redis", "address": self.redis.address, "node_id": "node-" + name,
                "device_timeout": 3, "sweep_interval": 0.5, "announce_interval": 0.5,
            }, extra={"handlers": {0x20: "clusterapp:broadcast"}}, port=freePort(),
                name="node-" + name)
            self.nodes[name] = (process, port)

    def port(self, name):
        return self.nodes[name][1]

    @defer.inlineCallbacks
    def test_helloOnceConnected(self):
        """
        Each node says HELLO once its Redis engine is connected (before, at
        start-up, the HELLO and the first announcement were sent through an
        engine not yet connected, lost, and logged as failures): each node
        learns the other, and neither logs a lost cluster frame.
        """
        processes = [self.nodes[name][0] for name in ("a", "b")]
        yield eventually(lambda: all("joined the cluster table" in p.text()
                                     for p in processes), what="both nodes joined")
        for process in processes:
            self.assertNotIn("cluster frame not sent", process.text())
            self.assertNotIn("Traceback", process.text())

    @defer.inlineCallbacks
    def test_presenceAndMessagesAcrossNodes(self):
        """
        Carol on A watches alice on B: the approval, alice's devices and
        their statuses cross the nodes; bob on A sends to alice on B, who
        gets it once, and bob gets the receipts on A.
        """
        carol = yield connectPeer(self, self.port("a"), CAROL, "desk")
        alice = yield connectPeer(self, self.port("b"), ALICE, "phone")
        yield carol.client.requestSubscription("alice")
        yield eventually(lambda: len(alice.subscriptions) == 1)
        yield alice.client.approve("carol")
        yield eventually(lambda: carol.statuses("alice") == [Status.ONLINE])
        info = yield carol.client.presence("alice")
        self.assertEqual([(d.device, d.node) for d in info.devices], [("phone", "node-b")])
        yield alice.client.setStatus(Status.AWAY)
        yield eventually(lambda: carol.statuses("alice")[-1] == Status.AWAY)
        bob = yield connectPeer(self, self.port("a"), BOB, "laptop")
        sent = yield bob.client.send("alice", b"across", messageId="x-1")
        yield eventually(lambda: len(alice.messages) == 1)
        self.assertEqual((alice.messages[0].id, alice.messages[0].payload,
                          alice.messages[0].signal_offset), ("x-1", b"across",
                                                             sent.signal_offset))
        alice.client.markRead(alice.messages[0].signal_offset)
        yield eventually(lambda: len(bob.receipts) == 2)
        self.assertEqual(sorted(r.signal_lifecycle_state for r in bob.receipts),
                         ["delivered", "read"])
        yield alice.close()
        yield eventually(lambda: carol.statuses("alice")[-1] == Status.OFFLINE)
        yield settle()
        self.assertEqual(len(alice.messages), 1)

    @defer.inlineCallbacks
    def test_broadcastSubjectsRequestsGroups(self):
        """
        A broadcast made on A reaches the sessions of both nodes; a
        publication on A reaches a subscriber on B; a request on A is
        answered by a responder on B; a queue group with a member on each
        node gets each message once, on both nodes in turn.
        """
        onA = yield connectPeer(self, self.port("a"), ALICE, "a")
        onB = yield connectPeer(self, self.port("b"), BOB, "b")
        heard = {"a": [], "b": []}
        onA.protocol.setHandler(MessageType.LiveUpdates,
                                lambda p, m: heard["a"].append(m.payload))
        onB.protocol.setHandler(MessageType.LiveUpdates,
                                lambda p, m: heard["b"].append(m.payload))
        reply = yield onA.protocol.request(0x20, b"to everyone")
        # The count is of this node's sessions; B's hear it too.
        self.assertEqual(reply.payload, b"1")
        yield eventually(lambda: heard["a"] == [b"to everyone"]
                         and heard["b"] == [b"to everyone"])
        got = []
        yield onB.protocol.subscribe("news.>", lambda m: got.append(m.payload))
        yield onB.protocol.subscribe("svc.quote", lambda m: onB.protocol.respond(
            m, b"quote from B: " + m.payload))

        @defer.inlineCallbacks
        def untilAnswered():
            for _ in range(100):
                try:
                    answer = yield onA.protocol.request(0x33, b"IBM", subject="svc.quote",
                                                        timeout=10)
                    return answer
                except PeerError as e:
                    self.assertEqual(e.code, XTMPErrorCode.NO_RESPONDERS)
                    yield deferLater(reactor, 0.1)
            self.fail("the request never reached node B")
        answer = yield untilAnswered()
        self.assertEqual(answer.payload, b"quote from B: IBM")
        onA.protocol.publish("news.today", b"n1")
        yield eventually(lambda: got == [b"n1"])
        members = {"a": [], "b": []}
        memberA = yield connectPeer(self, self.port("a"), CAROL, "ma")
        yield memberA.protocol.subscribe("jobs", lambda m: members["a"].append(m.payload),
                                         group="workers")
        yield onB.protocol.subscribe("jobs", lambda m: members["b"].append(m.payload),
                                     group="workers")
        # Until node A knows of B's member, A's member gets everything.
        for n in range(100):
            onA.protocol.publish("jobs", b"probe")
            yield deferLater(reactor, 0.05)
            if members["b"]:
                break
        yield settle()
        members["a"][:], members["b"][:] = [], []
        for n in range(40):
            onA.protocol.publish("jobs", b"%d" % n)
        yield eventually(lambda: len(members["a"]) + len(members["b"]) == 40)
        yield settle()
        self.assertEqual(sorted(members["a"] + members["b"], key=int),
                         [b"%d" % n for n in range(40)])
        self.assertEqual((len(members["a"]), len(members["b"])), (20, 20))

    @defer.inlineCallbacks
    def test_deviceMovesToTheOtherNode(self):
        """
        Alice's phone bound on B while its session on A lives replaces it:
        A's session gets DEVICE_REPLACED; the device stays online.
        """
        carol = yield connectPeer(self, self.port("b"), CAROL, "desk")
        first = yield connectPeer(self, self.port("a"), ALICE, "phone")
        yield carol.client.requestSubscription("alice")
        yield first.client.approve("carol")
        yield eventually(lambda: carol.statuses("alice") == [Status.ONLINE])
        closed = first.protocol.whenClosed()
        yield connectPeer(self, self.port("b"), ALICE, "phone")
        why = yield closed
        self.assertEqual(why.code, XTMPErrorCode.DEVICE_REPLACED)
        yield settle()
        info = yield carol.client.presence("alice")
        self.assertEqual([(d.device, d.node) for d in info.devices], [("phone", "node-b")])
        self.assertNotIn(Status.OFFLINE, carol.statuses("alice"))

    @defer.inlineCallbacks
    def test_killNodeA(self):
        """
        Bob on A sends alice (on B) 200 messages; node A is killed with
        SIGKILL while they flow: alice gets every one bob's SENT named,
        once, in order (the rest bob resends through B), and carol on B
        sees bob go offline once A's devices expire.
        """
        alice = yield connectPeer(self, self.port("b"), ALICE, "phone")
        carol = yield connectPeer(self, self.port("b"), CAROL, "desk")
        bob = yield connectPeer(self, self.port("a"), BOB, "laptop")
        yield carol.client.requestSubscription("bob")
        yield bob.client.approve("carol")
        yield eventually(lambda: carol.statuses("bob") == [Status.ONLINE])
        acked = []
        pending = [bob.client.send("alice", b"%d" % n, messageId="m%03d" % n).addCallback(
            lambda s: acked.append(s.id)) for n in range(200)]
        yield eventually(lambda: len(acked) >= 50, timeout=30)
        process = self.nodes["a"][0]
        process.transport.signalProcess("KILL")
        yield process.ended
        self.assertEqual(process.signal, signal.SIGKILL)
        before = list(acked)
        yield eventually(lambda: set(before) <= {m.id for m in alice.messages}, timeout=30)
        yield eventually(lambda: carol.statuses("bob")[-1:] == [Status.OFFLINE], timeout=20,
                         what="bob offline after node A died")
        again = yield connectPeer(self, self.port("b"), BOB, "laptop", client=bob.client)
        yield defer.gatherResults(pending)
        yield eventually(lambda: len(alice.messages) == 200, timeout=30)
        yield settle()
        self.assertEqual([m.id for m in alice.messages], ["m%03d" % n for n in range(200)])
        self.assertEqual(again.bound.identity.node, "node-b")


class RedisOutageNodeTests(TestCase):
    """
    A C{twistd -n muxframe xtmp} node whose Redis is killed with SIGKILL
    and started again on the same port, with its data: meanwhile clients'
    queue and presence requests are refused at once with STORAGE_FAILED
    naming Redis and why, the node logs the outage once and no traceback,
    and its C{/health} is degraded (503) naming Redis; afterwards the node
    serves again by itself, healthy, and nothing stored before was lost.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_redisKilled(self):
        from muxframe.xtmp import PeerError
        from tests.adminsupport import Admin, writeToken
        redis = RedisServer(appendonly=True).start()
        self.addCleanup(redis.stop)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        writeToken(directory)
        adminPort = freePort()
        process, port = yield startServer(self, directory, storage={
            "engine": "redis", "address": redis.address, "node_id": "node-a",
            "device_timeout": 3, "sweep_interval": 0.5, "announce_interval": 0.5},
            extra={"admin": {"endpoint": "tcp:%d:interface=127.0.0.1" % (adminPort,),
                             "token_file": "admin.token"}})
        admin = Admin(adminPort)
        # Degraded until the engine is connected (just after start-up).
        for _ in range(100):
            code, health, _ = yield admin.get("/health")
            if code == 200:
                break
            yield deferLater(reactor, 0.05)
        self.assertEqual((code, health["status"]), (200, "healthy"), health)
        alice = yield connectPeer(self, port, ALICE, "phone")
        bob = yield connectPeer(self, port, BOB, "laptop")
        yield bob.client.send("alice", b"before", messageId="m1")
        yield eventually(lambda: len(alice.messages) == 1)
        logged = len(process.text())
        redis.kill()
        where = "Redis at 127.0.0.1:%d" % (redis.port,)
        refused = []
        for _ in range(100):
            try:
                yield bob.client.presence("alice")
            except PeerError as e:
                refused.append(e)
                break
            yield deferLater(reactor, 0.05)
        self.assertTrue(refused, "never refused")
        requests = [bob.client.send("alice", b"lost", messageId="m2"),
                    bob.client.setStatus(Status.AWAY), bob.client.presence("alice"),
                    bob.client.requestSubscription("alice")]
        for d in requests:
            d.addTimeout(30, reactor)
            e = yield self.assertFailure(d, PeerError)
            self.assertEqual(e.code, XTMPErrorCode.STORAGE_FAILED)
            self.assertIn(where, e.reason)
            self.assertIn("unreachable", e.reason)
        code, health, _ = yield admin.get("/health")
        self.assertEqual((code, health["status"]), (503, "degraded"), health)
        self.assertTrue(any(where in reason for reason in health["reasons"]), health)
        redis.startAgain()
        sent = yield onceRedisIsBack(lambda: bob.client.send("alice", b"after", messageId="m3"))
        self.assertEqual(sent.signal_offset, 2)
        yield eventually(lambda: [m.id for m in alice.messages] == ["m1", "m3"])
        code, health, _ = yield admin.get("/health")
        self.assertEqual((code, health["status"]), (200, "healthy"), health)
        outage = process.text()[logged:]
        self.assertNotIn("Traceback", outage)
        self.assertEqual(outage.count("is unreachable"), 1, outage)
        self.assertEqual(outage.count("is reachable again"), 1, outage)

    @defer.inlineCallbacks
    def test_redisRestartedEmpty(self):
        """
        The node's Redis is killed and started again without its data
        (no appendonly): alice's live session is online again in the new
        Redis (her session re-publishes it), and a message sent to her
        afterwards reaches that session and, sent while she is away, her
        next one: the new offsets go on above those her client already had
        (before, they started at 1 again, and the client dropped them as
        already delivered, acknowledging them).
        """
        from muxframe.xtmp import PeerError
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        directory = os.path.abspath(self.mktemp())
        process, port = yield startServer(self, directory, storage={
            "engine": "redis", "address": redis.address, "node_id": "node-a",
            "device_timeout": 3, "sweep_interval": 0.5, "announce_interval": 0.5})
        alice = yield connectPeer(self, port, ALICE, "phone")
        bob = yield connectPeer(self, port, BOB, "laptop")
        for n in range(3):
            yield bob.client.send("alice", b"before", messageId="m%d" % n)
        yield eventually(lambda: len(alice.messages) == 3)
        redis.kill()
        redis.startAgain(keepData=False)
        sent = yield onceRedisIsBack(lambda: bob.client.send("alice", b"after", messageId="n1"))
        self.assertGreater(sent.signal_offset, 3)
        yield eventually(lambda: [m.id for m in alice.messages][3:] == ["n1"], timeout=20,
                         what="n1 pushed to alice's live session")
        devices = []
        for _ in range(100):
            info = yield alice.client.presence("alice")
            devices = [d.device for d in info.devices]
            if devices:
                break
            yield deferLater(reactor, 0.1)
        self.assertEqual(devices, ["phone"])
        yield alice.close()
        yield bob.client.send("alice", b"away", messageId="n2")
        again = yield connectPeer(self, port, ALICE, "phone", client=alice.client)
        yield eventually(lambda: [m.id for m in again.messages] == ["n2"], timeout=20,
                         what="n2 on alice's next session")
        self.assertEqual(process.text().count("lost its data"), 1)

    @defer.inlineCallbacks
    def test_stopWhileRedisDown(self):
        """
        SIGTERM while Redis is down: the node drains and exits cleanly
        (before, stopping the storage waited for Redis without end, so the
        process never exited).
        """
        from tests.test_tap import assertStoppedCleanly
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        directory = os.path.abspath(self.mktemp())
        process, port = yield startServer(self, directory, storage={
            "engine": "redis", "address": redis.address, "node_id": "node-a",
            "device_timeout": 3, "sweep_interval": 0.5, "announce_interval": 0.5})
        yield connectPeer(self, port, ALICE, "phone")
        redis.kill()
        yield eventually(lambda: "is unreachable" in process.text(), what="the outage seen")
        process.transport.signalProcess("TERM")
        ended = process.ended
        ended.addTimeout(60, reactor)
        yield ended
        assertStoppedCleanly(self, process)

    @defer.inlineCallbacks
    def test_redisOutOfMemory(self):
        """
        Redis out of memory (maxmemory, noeviction): each Message is
        refused with STORAGE_FAILED whose reason is Redis's (OOM); the node
        logs a few lines for 30 refusals, no traceback (before: "the
        storage engine failed: ResponseError" and a traceback each).
        """
        from muxframe.xtmp import PeerError
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        directory = os.path.abspath(self.mktemp())
        process, port = yield startServer(self, directory, storage={
            "engine": "redis", "address": redis.address, "node_id": "node-a"})
        bob = yield connectPeer(self, port, BOB, "laptop")
        yield bob.client.send("alice", b"before", messageId="m0")
        logged = len(process.text())
        with socket.create_connection(("127.0.0.1", redis.port), timeout=10) as s:
            s.sendall(b"CONFIG SET maxmemory 1\r\n")
            self.assertEqual(s.recv(64), b"+OK\r\n")
        for n in range(30):
            e = yield self.assertFailure(
                bob.client.send("alice", b"full", messageId="m%d" % (n + 1,)), PeerError)
            self.assertEqual(e.code, XTMPErrorCode.STORAGE_FAILED)
            self.assertIn("OOM", e.reason)
        yield settle()
        text = process.text()[logged:]
        self.assertNotIn("Traceback", text)
        self.assertTrue(0 < text.count("storage failed") <= 11, text)

    @defer.inlineCallbacks
    def test_startedWhileRedisDown(self):
        """
        A node started while its Redis is down listens, and a Bind is
        refused at once with STORAGE_FAILED naming Redis (before, it waited
        for Redis without end); once Redis is up, binding works.
        """
        from muxframe.xtmp import PeerError
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        redis.kill()
        directory = os.path.abspath(self.mktemp())
        process, port = yield startServer(self, directory, storage={
            "engine": "redis", "address": redis.address, "node_id": "node-a"})
        yield eventually(lambda: "is unreachable" in process.text(), what="the outage seen")
        d = connectPeer(self, port, ALICE, "phone")
        d.addTimeout(30, reactor)
        e = yield self.assertFailure(d, PeerError)
        self.assertEqual(e.code, XTMPErrorCode.STORAGE_FAILED)
        self.assertIn("Redis at 127.0.0.1:%d" % (redis.port,), e.reason)
        redis.startAgain()
        alice = yield onceRedisIsBack(lambda: connectPeer(self, port, ALICE, "phone"))
        self.assertEqual(alice.bound.identity.node, "node-a")
