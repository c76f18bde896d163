"""
The Redis engine: several server processes ("nodes"), on one machine or
many, sharing one Redis act as one service.  Fan-out goes over Redis
pub/sub, presence lives in Redis (devices expire by score, swept by every
node), queues and history in Redis streams, consumer positions in Redis
hashes.  See C{docs/presence-and-queues.md}.

Channels (P: prefix): C{P b:<subject>} publications, C{P bc} broadcasts,
C{P node:<id>} messages to one node, C{P qn:<entity>} queue appends,
C{P n:<entity>} presence notices.
"""

import importlib.util
import uuid

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from muxframe.engines.errors import EngineStopped, StorageUnavailable
from muxframe.engines.interfaces import IBroker, IEngine
from muxframe.engines.model import Delivery, DeliveryKind, QueueRetention, checkName
from muxframe.engines.redisconn import COMMAND_TIMEOUT, RedisClient
from muxframe.engines.redisformat import decodeFrame, encodeFrame
from muxframe.engines.redishistory import RedisHistory
from muxframe.engines.redispresence import RedisPresence
from muxframe.engines.redisqueues import RedisQueueStore
from muxframe.engines.subjects import checkSubject, matches, redisGlob

log = Logger()


@implementer(IBroker)
class RedisBroker:
    """
    Fan-out between nodes over Redis pub/sub.  Interests are PSUBSCRIBE
    globs that match at least the pattern's subjects; each delivery is
    filtered by the node's own interests and deduplicated (Redis sends one
    copy per matching glob).
    """

    def __init__(self, client, prefix, nodeId):
        self._client = client
        self._prefix = prefix
        self.nodeId = nodeId
        self._receiver = None
        self._interests = {}
        self._seq = 0
        self._last = None

    def setReceiver(self, callback):
        """
        See L{IBroker.setReceiver}.
        """
        self._receiver = callback

    def _glob(self, pattern):
        return redisGlob(self._prefix + "b") + "." + redisGlob(pattern)

    def addInterest(self, pattern):
        """
        See L{IBroker.addInterest}.
        """
        try:
            checkSubject(pattern, wildcards=True)
        except Exception:
            return defer.fail()
        self._interests[pattern] = self._interests.get(pattern, 0) + 1
        return self._client.psubscribe(self._glob(pattern))

    def removeInterest(self, pattern):
        """
        See L{IBroker.removeInterest}.
        """
        count = self._interests.get(pattern, 0)
        if count == 0:
            return defer.succeed(None)
        if count == 1:
            del self._interests[pattern]
        else:
            self._interests[pattern] = count - 1
        return self._client.punsubscribe(self._glob(pattern))

    def _send(self, channel, payload):
        self._seq += 1
        d = self._client.call("PUBLISH", channel, encodeFrame(self.nodeId, self._seq,
                                                              bytes(payload)))
        return d.addCallback(int)

    def publish(self, subject, payload):
        """
        See L{IBroker.publish}; fires with the number of deliveries Redis
        made (at least one per interested node, 0 if none was).
        """
        try:
            checkSubject(subject)
        except Exception:
            return defer.fail()
        return self._send(self._prefix + "b." + subject, payload)

    def broadcast(self, payload):
        """
        See L{IBroker.broadcast}.
        """
        return self._send(self._prefix + "bc", payload)

    def sendToNode(self, nodeId, payload):
        """
        See L{IBroker.sendToNode}.
        """
        return self._send(self._prefix + "node:" + nodeId, payload)

    def start(self):
        """
        Subscribe to broadcasts and this node's channel.
        """
        return defer.gatherResults([self._client.subscribe(self._prefix + "bc"),
                                    self._client.subscribe(self._prefix + "node:" + self.nodeId)])

    def messageReceived(self, kind, subject, message):
        """
        A frame on a broker channel (from the engine's dispatcher).
        """
        origin, seq, payload = decodeFrame(message)
        if (origin, seq) == self._last:
            return
        self._last = (origin, seq)
        if kind == DeliveryKind.SUBJECT and not any(matches(p, subject)
                                                    for p in self._interests):
            return
        if self._receiver is not None:
            try:
                self._receiver(Delivery(kind, subject, payload, origin))
            except Exception:
                log.failure("broker receiver raised for {subject!r}", subject=subject)


@implementer(IEngine)
class RedisEngine:
    """
    The Redis engine on C{address} (C{redis://host:port/db}).

    @param clock: an C{IReactorTime} for timers and "now" (default: the
        reactor).
    @param prefix: prepended to every key and channel, so several services
        can share a Redis.
    @param maxKnownDevices: devices with a queue position per entity at
        most (L{muxframe.engines.queuestate}).
    @param maxQueues: queues kept at most (L{RedisQueueStore}).
    @param commandTimeout: seconds Redis may leave commands unanswered
        before the connection is closed and made again (their callers get
        L{StorageUnavailable}).
    """

    def __init__(self, address, reactor=None, clock=None, nodeId=None, prefix="muxframe:",
                 retention=QueueRetention(), retentionInterval=10.0, deviceTimeout=30.0,
                 maxDevices=64, maxActivityTtl=60, maxSubscriptions=10000, maxWatchers=100000,
                 sweepInterval=1.0, maxKnownDevices=1024, maxQueues=1000000,
                 commandTimeout=COMMAND_TIMEOUT):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.nodeId = checkName(nodeId or "node-" + uuid.uuid4().hex[:12], "node id")
        self.prefix = prefix
        self.retentionInterval = retentionInterval
        self.client = RedisClient(reactor, address, self._dispatch, self._resubscribed,
                                  self._reconnected, commandTimeout=commandTimeout)
        self.broker = RedisBroker(self.client, prefix, self.nodeId)
        self.queues = RedisQueueStore(self.client, prefix, self._clock, retention,
                                      maxKnownDevices=maxKnownDevices, maxQueues=maxQueues)
        self.presence = RedisPresence(self.client, prefix, self._clock, self.nodeId,
                                      deviceTimeout, maxDevices, maxActivityTtl,
                                      maxSubscriptions, maxWatchers, sweepInterval)
        self.history = RedisHistory(self.client, prefix, self._clock)
        self._retention = None
        self.running = False
        # Whether L{stop} was called (perhaps during L{start}).
        self._stopped = False
        self._routes = [
            (prefix + "b.", lambda c, m: self.broker.messageReceived(
                DeliveryKind.SUBJECT, c[len(prefix) + 2:], m)),
            (prefix + "bc", lambda c, m: self.broker.messageReceived(
                DeliveryKind.BROADCAST, "", m)),
            (prefix + "node:", lambda c, m: self.broker.messageReceived(
                DeliveryKind.NODE, c[len(prefix) + 5:], m)),
            (prefix + "qn:", self.queues.messageReceived),
            (prefix + "n:", self.presence.messageReceived),
        ]

    def _dispatch(self, pattern, channel, message):
        channel = channel.decode("utf-8") if isinstance(channel, bytes) else channel
        for start, route in self._routes:
            if channel.startswith(start):
                route(channel, message)
                return
        log.warn("message on unexpected Redis channel {channel!r}", channel=channel)

    @defer.inlineCallbacks
    def _resubscribed(self):
        # Publications made while the subscriber was away are lost: queue
        # watchers are told the last offset, so they fetch what they
        # missed; presence watchers the current awareness of the targets
        # that changed since they were last told.  (Broker messages are at
        # most once.)
        yield self.queues.resync()
        yield self.presence.resync()

    def problems(self):
        """
        What keeps the engine from working fully now (a connection to
        Redis down, at start too), as sentences for an operator; empty when
        all is well.
        """
        return self.client.problems()

    def outage(self):
        """
        The L{StorageUnavailable} a command would meet now, while an
        attempt to reach Redis failed and it is not back (at start-up too),
        or L{None}.
        """
        if self.client.downSince is None:
            return None
        return self.client.unavailable()

    def _reconnected(self):
        # Redis may have come back empty.
        d = self.queues.checkBase()
        d.addErrback(lambda f: None if f.check(StorageUnavailable, EngineStopped)
                     else log.failure("checking Redis for a data loss failed", f))

    @defer.inlineCallbacks
    def start(self):
        """
        Connect and start the sweeps; see L{IEngine.start}.
        """
        if importlib.util.find_spec("hiredis") is None:
            log.warn("hiredis is not installed: txredisapi parses replies in Python, one "
                     "reactor turn per element (pip install 'muxframe[redis]')")
        yield self.client.connect()
        yield self.queues.initialize()
        yield self.broker.start()
        if self._stopped:
            # L{stop} came meanwhile (the broker's subscriptions end
            # quietly as the connection closes): no sweeps on a stopped
            # engine.
            raise EngineStopped("stopped while starting")
        self.presence.start()
        if self.retentionInterval:
            self._retention = LoopingCall(self._retentionPass)
            self._retention.clock = self._clock
            self._retaining = self._retention.start(self.retentionInterval, now=False)
        self.running = True
        return self

    @defer.inlineCallbacks
    def _retentionPass(self):
        # One node at a time runs a pass; the lock lapses by itself.
        try:
            won = yield self.client.call("SET", self.prefix + "lock:retention", self.nodeId,
                                         "NX", "PX", int(self.retentionInterval * 1000))
            if won:
                yield self.queues.applyRetention()
        except StorageUnavailable:
            # The client logged the outage; the next pass does the work.
            pass
        except Exception:
            log.failure("retention pass failed")

    @defer.inlineCallbacks
    def stop(self):
        """
        Stop the sweeps and disconnect; see L{IEngine.stop}.  Devices of
        this node stay online in Redis until they expire or another node
        disconnects them.
        """
        self._stopped = True
        if not self.running:
            # Perhaps still waiting for Redis, or starting: stop that.
            yield self.client.disconnect()
            return
        self.running = False
        yield self.presence.stop()
        if self._retention is not None and self._retention.running:
            self._retention.stop()
            yield self._retaining
        yield self.client.disconnect()
