"""
L{ClusterEngine}: several XTMP server processes ("nodes") act as one
through a storage engine's broker (L{muxframe.engines.interfaces.IBroker},
Redis pub/sub): the L{IBrokerEngine} under each node's local broker.

Rules:

  - Interest: each node subscribes upstream (C{addInterest}) to every
    pattern it has a local subscription to, so publications on matching
    subjects reach it.
  - Membership: each node broadcasts its interests, C{(pattern, group)}
    pairs, every C{announceInterval} seconds and soon after a change; a
    node starting broadcasts HELLO (the others announce at once) and one
    stopping BYE.  A node not heard from for three intervals is dropped
    from the table.
  - Queue groups are cluster-wide: the node where a message is published
    (or a request made) chooses, for each matching group, one node among
    those with members (round robin over the nodes), and the frame names
    the chosen node per group; each node serves its plain subscribers and
    the groups chosen for it (one member each, round robin there).  A
    node whose members appeared or left since the last announcement is
    chosen as the table says meanwhile: a message chosen for a node that
    just lost its members is not delivered to the group (subject
    messages are at most once).  A group's turn is kept on the group in
    the membership table and goes with its last node.
  - Publications go to every interested node by subject; broadcasts to
    every node; a node ignores what it published itself.
  - Requests go, by node message, to each other node with a plain
    subscriber or a chosen group; each answers with the first response
    there, or a failure (NO_RESPONDERS when it had none).  The local
    broker races them with its own recipients: the first answer wins.
  - Application frames (L{sendApp}) go to one node: the storage layer
    uses them to take a device's session away from a node.

Frames (the payload of the engine broker's publications), all integers
big-endian, names C{u16 length || UTF-8}: u8 kind, then

  - 1 PUBLISH: u8 type, u16 flags, u8 has-position [u64 offset, name
    epoch, u64 timestamp (ms)], u16 n, n x (name pattern, name group,
    name node), data;
  - 2 BROADCAST: u8 type, u16 flags, name subject, data;
  - 3 REQUEST: u64 token, name origin, u8 type, u16 flags, name subject,
    u16 n, n x (name pattern, name group), data;
  - 4 REPLY: u64 token, u8 ok, then u8 type, data (ok) or u16 code,
    UTF-8 reason;
  - 5 ANNOUNCE: u32 n, n x (name pattern, name group, "" for plain);
  - 6 HELLO, 7 BYE: nothing more;
  - 8 APP: u8 application kind, data.
"""

import itertools
import struct

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from muxframe.logthrottle import logger
from muxframe.engines.errors import EngineStopped, StorageUnavailable
from muxframe.engines.model import DeliveryKind
from muxframe.server.errors import Refusal
from muxframe.server.hub import Delivery
from muxframe.server.interfaces import IBrokerEngine
from muxframe.server.sublist import Sublist, Subscription
from muxframe.server.subjects import tokens
from muxframe.xtmp.errors import PeerError, XTMPErrorCode

log = logger("muxframe.server.cluster")

PUBLISH, BROADCAST, REQUEST, REPLY, ANNOUNCE, HELLO, BYE, APP = range(1, 9)

_HEAD = struct.Struct(">BBH")
_TYPEFLAGS = struct.Struct(">BH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class FrameError(ValueError):
    """
    A cluster frame that does not follow the layout.
    """


def _name(text):
    raw = text.encode("utf-8")
    return _U16.pack(len(raw)) + raw


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data, pos=0):
        self.data = data
        self.pos = pos

    def take(self, size):
        end = self.pos + size
        if end > len(self.data):
            raise FrameError("frame truncated")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return _U16.unpack(self.take(2))[0]

    def u32(self):
        return _U32.unpack(self.take(4))[0]

    def u64(self):
        return _U64.unpack(self.take(8))[0]

    def name(self):
        try:
            return self.take(self.u16()).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("name is not UTF-8")

    def rest(self):
        chunk = self.data[self.pos:]
        self.pos = len(self.data)
        return chunk


class _Node:
    """
    What this node knows of another: its interests and when it was heard.
    """

    __slots__ = ("interests", "heard")

    def __init__(self, heard):
        self.interests = {}
        self.heard = heard


@implementer(IBrokerEngine)
class ClusterEngine:
    """
    Fan-out, queue groups, broadcasts and requests between nodes over a
    storage engine's broker.

    @param broker: the storage engine's L{IBroker} (C{engine.broker}).
    @param clock: an C{IReactorTime}.
    @param announceInterval: seconds between membership announcements.
    @param waitForStart: say HELLO (and announce) when L{engineStarted} is
        called, not at L{attach}: the storage engine carrying the frames
        may not be connected yet when the broker is built.
    """

    def __init__(self, broker, clock, announceInterval=2.0, waitForStart=False):
        self.upstream = broker
        self.nodeId = broker.nodeId
        self.clock = clock
        self.announceInterval = announceInterval
        self.waitForStart = waitForStart
        self.table = Sublist(4096)
        self.nodes = {}
        self.appHandlers = {}
        self._local = {}
        self._patterns = {}
        self._mine = {}
        self._requests = {}
        self._tokens = itertools.count(1)
        self._broker = None
        self._announcer = None
        self._soon = None
        self.counters = dict.fromkeys(
            ["published", "received", "broadcasts", "requestsSent",
             "requestsServed", "badFrames", "announcements"], 0)

    # -- IBrokerEngine -----------------------------------------------------

    def attach(self, broker):
        """
        Receive from the other nodes; announce this one.
        """
        self._broker = broker
        self.upstream.setReceiver(self._received)
        self._announcer = LoopingCall(self._tick)
        self._announcer.clock = self.clock
        self._announcer.start(self.announceInterval, now=False)
        if not self.waitForStart:
            self._hello()

    def engineStarted(self):
        """
        The storage engine is connected (with C{waitForStart}): say HELLO,
        so the other nodes announce at once, and announce this node.
        """
        if self._broker is not None:
            self._hello()

    def _hello(self):
        self._send(self.upstream.broadcast, bytes((HELLO,)))
        self._announce()

    def interest(self, pattern, group, present):
        """
        Track this node's interests: upstream per pattern, in the
        membership table per C{(pattern, group)}.
        """
        key = (pattern, group)
        if present:
            sub = Subscription(self.nodeId, pattern, tokens(pattern), group)
            self._mine[key] = sub
            self.table.insert(sub)
            count = self._patterns.get(pattern, 0)
            self._patterns[pattern] = count + 1
            if not count:
                self._send(self.upstream.addInterest, pattern)
        else:
            sub = self._mine.pop(key, None)
            if sub is not None:
                self.table.remove(sub)
            left = self._patterns.get(pattern, 1) - 1
            if left:
                self._patterns[pattern] = left
            else:
                self._patterns.pop(pattern, None)
                self._send(self.upstream.removeInterest, pattern)
        self._announceSoon()

    def plan(self, delivery):
        """
        Choose a node for each matching queue group; set
        C{delivery.groups} to those this node serves.  The plan is
        C{(assignments, plain nodes)}.
        """
        match = self.table.match(delivery.tokens)
        if not match:
            delivery.groups = frozenset()
            return None
        assignments = {}
        for key, members, queue in zip(match.keys, match.groups,
                                       match.queues):
            # The turn lives on the group in the table: it goes when the
            # group's last node does.
            nodes = sorted({m.subscriber for m in members})
            turn = queue.turn
            queue.turn = turn + 1
            assignments[key] = nodes[turn % len(nodes)]
        delivery.groups = frozenset(k for k, n in assignments.items()
                                    if n == self.nodeId)
        plain = {s.subscriber for s in match.plain} - {self.nodeId}
        return assignments, plain

    def published(self, delivery, plan):
        """
        Publish C{delivery} upstream with its group assignments.
        """
        assignments = plan[0] if plan is not None else {}
        head = _HEAD.pack(PUBLISH, delivery.messageType, delivery.flags)
        if delivery.position is not None:
            offset, epoch, timestamp = delivery.position
            head += b"\x01" + _U64.pack(offset) + _name(epoch) + _U64.pack(timestamp)
        else:
            head += b"\x00"
        parts = [head, _U16.pack(len(assignments))]
        for (pattern, group), node in assignments.items():
            parts += [_name(pattern), _name(group), _name(node)]
        parts.append(delivery.payload)
        self.counters["published"] += 1
        self._send(self.upstream.publish, delivery.subject, b"".join(parts))

    def broadcast(self, delivery):
        """
        Broadcast C{delivery} to the other nodes.
        """
        self.counters["broadcasts"] += 1
        self._send(self.upstream.broadcast, _HEAD.pack(
            BROADCAST, delivery.messageType, delivery.flags)
            + _name(delivery.subject) + delivery.payload)

    def forward(self, delivery, plan):
        """
        Send the request C{delivery} to each other node with a plain
        subscriber or a chosen group; a Deferred of its answer per node.
        """
        if plan is None:
            return []
        assignments, plain = plan
        byNode = {node: [] for node in plain}
        for key, node in assignments.items():
            if node != self.nodeId:
                byNode.setdefault(node, []).append(key)
        out = []
        for node, keys in byNode.items():
            token = next(self._tokens)
            parts = [bytes((REQUEST,)), _U64.pack(token), _name(self.nodeId),
                     _TYPEFLAGS.pack(delivery.messageType, delivery.flags),
                     _name(delivery.subject), _U16.pack(len(keys))]
            for pattern, group in keys:
                parts += [_name(pattern), _name(group)]
            parts.append(delivery.payload)
            d = Deferred(lambda d, token=token: self._requests.pop(token, None))
            self._requests[token] = d
            self.counters["requestsSent"] += 1
            sent = self.upstream.sendToNode(node, b"".join(parts))
            sent.addErrback(self._sendFailed, token)
            out.append(d)
        return out

    def detach(self):
        """
        Say goodbye and stop announcing.
        """
        for call in (self._announcer,):
            if call is not None and call.running:
                call.stop()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        d = self.upstream.broadcast(bytes((BYE,)))
        d.addErrback(lambda f: None)
        for token in list(self._requests):
            self._fail(token, Refusal("this node is stopping",
                                      XTMPErrorCode.NO_RESPONDERS))
        return d

    # -- application frames ------------------------------------------------

    def sendApp(self, node, kind, data):
        """
        Send an application frame of C{kind} to C{node}; its handler there
        (C{appHandlers[kind](origin, data)}) gets it.
        """
        return self.upstream.sendToNode(node, bytes((APP, kind)) + data)

    # -- membership ---------------------------------------------------------

    def _announceSoon(self):
        if self._soon is None and self._broker is not None:
            self._soon = self.clock.callLater(0.01, self._announce)

    def _announce(self):
        self._soon = None
        parts = [bytes((ANNOUNCE,)), _U32.pack(len(self._mine))]
        for pattern, group in self._mine:
            parts += [_name(pattern), _name(group or "")]
        self.counters["announcements"] += 1
        self._send(self.upstream.broadcast, b"".join(parts))

    def _tick(self):
        self._announce()
        limit = self.clock.seconds() - 3 * self.announceInterval
        for node in [n for n, state in self.nodes.items() if state.heard < limit]:
            log.info("node {node} not heard from for {seconds:g}s: dropped from "
                     "the cluster table", node=node, seconds=3 * self.announceInterval)
            self._forgetNode(node)

    def _forgetNode(self, node):
        state = self.nodes.pop(node, None)
        if state is not None:
            for sub in state.interests.values():
                self.table.remove(sub)

    def _learn(self, node, interests):
        state = self.nodes.get(node)
        if state is None:
            state = self.nodes[node] = _Node(self.clock.seconds())
            log.info("node {node} joined the cluster table", node=node)
        state.heard = self.clock.seconds()
        old = state.interests
        for key in [k for k in old if k not in interests]:
            self.table.remove(old.pop(key))
        for key in interests:
            if key not in old:
                pattern, group = key
                sub = old[key] = Subscription(node, pattern, tokens(pattern), group)
                self.table.insert(sub)

    # -- receiving ------------------------------------------------------------

    def _received(self, incoming):
        if incoming.origin == self.nodeId:
            return
        try:
            data = incoming.payload
            if not data:
                raise FrameError("empty frame")
            kind = data[0]
            if incoming.kind == DeliveryKind.SUBJECT and kind == PUBLISH:
                self._publication(incoming.subject, _Reader(data, 1))
            elif incoming.kind == DeliveryKind.BROADCAST:
                self._broadcastFrame(kind, incoming.origin, _Reader(data, 1))
            elif incoming.kind == DeliveryKind.NODE:
                self._nodeFrame(kind, incoming.origin, _Reader(data, 1))
            else:
                raise FrameError("frame kind %d on a %s delivery" % (
                    kind, DeliveryKind.describe(incoming.kind)))
        except (FrameError, ValueError) as e:
            self.counters["badFrames"] += 1
            log.warn("bad cluster frame from node {node}: {error}",
                     node=incoming.origin, error=e)

    def _publication(self, subject, r):
        messageType, flags = r.u8(), r.u16()
        position = (r.u64(), r.name(), r.u64()) if r.u8() else None
        mine = set()
        for _ in range(r.u16()):
            pattern, group, node = r.name(), r.name(), r.name()
            if node == self.nodeId:
                mine.add((pattern, group))
        self.counters["received"] += 1
        self._broker.deliver(Delivery(subject, tokens(subject, wildcards=False),
                                      messageType, flags, bytes(r.rest()),
                                      frozenset(mine), position))

    def _broadcastFrame(self, kind, origin, r):
        if kind == BROADCAST:
            messageType, flags = r.u8(), r.u16()
            subject = r.name()
            self._broker.deliverBroadcast(Delivery(
                subject, tokens(subject, wildcards=False), messageType, flags,
                bytes(r.rest())))
        elif kind == ANNOUNCE:
            interests = set()
            for _ in range(r.u32()):
                pattern, group = r.name(), r.name()
                interests.add((pattern, group or None))
            self._learn(origin, interests)
        elif kind == HELLO:
            self._announceSoon()
        elif kind == BYE:
            log.info("node {node} left the cluster", node=origin)
            self._forgetNode(origin)
        else:
            raise FrameError("frame kind %d broadcast" % (kind,))

    def _nodeFrame(self, kind, origin, r):
        if kind == REQUEST:
            token, replyTo = r.u64(), r.name()
            messageType, flags = r.u8(), r.u16()
            subject = r.name()
            groups = frozenset((r.name(), r.name()) for _ in range(r.u16()))
            delivery = Delivery(subject, tokens(subject, wildcards=False), messageType,
                                flags, bytes(r.rest()), groups)
            self.counters["requestsServed"] += 1
            d = self._broker.serveRequest(delivery)
            d.addCallbacks(self._reply, self._replyFailure,
                           callbackArgs=(replyTo, token), errbackArgs=(replyTo, token))
        elif kind == REPLY:
            token, ok = r.u64(), r.u8()
            if ok:
                messageType = r.u8()
                self._answer(token, _Answer(messageType, bytes(r.rest())))
            else:
                code = r.u16()
                reason = bytes(r.rest()).decode("utf-8", "replace")
                if code == XTMPErrorCode.NO_RESPONDERS:
                    self._fail(token, Refusal(reason, code))
                else:
                    self._fail(token, PeerError(code, reason))
        elif kind == APP:
            appKind = r.u8()
            handler = self.appHandlers.get(appKind)
            if handler is None:
                raise FrameError("no handler for application frame %d" % (appKind,))
            handler(origin, bytes(r.rest()))
        else:
            raise FrameError("frame kind %d sent to a node" % (kind,))

    def _reply(self, answer, node, token):
        self._send(self.upstream.sendToNode, node, bytes((REPLY,)) + _U64.pack(token)
                   + b"\x01" + bytes((answer.type,)) + answer.payload)

    def _replyFailure(self, failure, node, token):
        error = failure.value
        code = getattr(error, "code", XTMPErrorCode.NO_RESPONDERS)
        reason = getattr(error, "reason", None) or str(error)
        self._send(self.upstream.sendToNode, node, bytes((REPLY,)) + _U64.pack(token)
                   + b"\x00" + _U16.pack(int(code)) + reason.encode("utf-8"))

    def _answer(self, token, answer):
        d = self._requests.pop(token, None)
        if d is not None:
            d.callback(answer)

    def _fail(self, token, error):
        d = self._requests.pop(token, None)
        if d is not None:
            d.errback(error)

    def _sendFailed(self, failure, token):
        self._fail(token, Refusal("the request could not be sent to its node: %s"
                                  % (failure.getErrorMessage(),),
                                  XTMPErrorCode.NO_RESPONDERS))

    def _send(self, method, *args):
        d = method(*args)
        d.addErrback(self._sendFailedQuietly)
        return d

    @staticmethod
    def _sendFailedQuietly(failure):
        # An outage of the engine's Redis is logged once by the engine; a
        # frame lost meanwhile (or while the node stops) is one
        # announcement or publication less.
        if not failure.check(StorageUnavailable, EngineStopped):
            log.failure("cluster frame not sent", failure)

    def stats(self):
        """
        The cluster's counters, with the nodes known.
        """
        out = dict(self.counters)
        out["nodes"] = sorted(self.nodes)
        out["pendingRequests"] = len(self._requests)
        return out


class _Answer:
    """
    An answer from another node: its type and payload.
    """

    __slots__ = ("type", "payload")

    def __init__(self, messageType, payload):
        self.type = messageType
        self.payload = payload
