"""
The embedded engine's presence: L{IPresenceManager} over the sans-IO
L{PresenceTable} and L{SubscriptionBook}, with subscriptions and
visibility kept durably in a L{KeyValueFile} and a timer for devices that
stop answering.

Key/value layout: C{b"s\\x00" + watcher + b"\\x00" + target} -> one byte,
the L{SubscriptionState}; C{b"v\\x00" + entity} -> one byte, the
L{Visibility} (only HIDDEN is stored).  Device presence is not stored: after
a restart every device is offline until its session connects again.
"""

from twisted.internet import defer
from zope.interface import implementer

from muxframe.engines.errors import EngineStopped
from muxframe.engines.interfaces import IPresenceManager
from muxframe.engines.model import (
    Status, SubscriptionState, Visibility, checkName)
from muxframe.engines.presence import PresenceTable, subscriptionNotices
from muxframe.engines.subscriptions import SubscriptionBook
from muxframe.engines.watches import WatchList


def _subscriptionKey(watcher, target):
    return b"s\x00" + watcher.encode("utf-8") + b"\x00" + target.encode("utf-8")


def _visibilityKey(entity):
    return b"v\x00" + entity.encode("utf-8")


@implementer(IPresenceManager)
class EmbeddedPresence:
    """
    Presence in memory, subscriptions and visibility on disk.
    """

    def __init__(self, store, clock, nodeId, deviceTimeout=30.0, maxDevices=64,
                 maxActivityTtl=60, maxSubscriptions=10000, maxWatchers=100000):
        self._store = store
        self._clock = clock
        self.nodeId = nodeId
        self.deviceTimeout = deviceTimeout
        self.book = SubscriptionBook(maxSubscriptions, maxWatchers)
        self.table = PresenceTable(self.book, deviceTimeout, maxDevices, maxActivityTtl)
        self._watches = WatchList()
        self._timer = None
        self._open = False

    def open(self):
        """
        Load subscriptions and visibility from the (open) key/value file.
        """
        for key, value in self._store.items(b"s\x00"):
            watcher, target = key[2:].decode("utf-8").split("\x00", 1)
            self.book.set(watcher, target, SubscriptionState(value[0]))
        for key, value in self._store.items(b"v\x00"):
            self.table.loadVisibility(key[2:].decode("utf-8"), Visibility(value[0]))
        self._open = True

    def close(self):
        """
        Stop the timer and refuse further changes.
        """
        self._open = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _now(self):
        return int(self._clock.seconds() * 1000)

    def _run(self, change):
        """
        Apply C{change()} (returning notices), deliver them, reschedule the
        expiry timer.
        """
        if not self._open:
            return defer.fail(EngineStopped("presence is closed"))
        try:
            notices = change()
        except Exception:
            return defer.fail()
        self._deliver(notices)
        self._schedule()
        return defer.succeed(None)

    def _deliver(self, notices):
        for notice in notices:
            self._watches.notify(notice.recipient, notice)

    def _schedule(self):
        deadline = self.table.nextDeadline()
        if self._timer is not None and self._timer.active():
            if deadline is not None and abs(self._timer.getTime() * 1000 - deadline) < 1:
                return
            self._timer.cancel()
        self._timer = None
        if deadline is not None and self._open:
            delay = max(0.0, deadline / 1000.0 - self._clock.seconds())
            self._timer = self._clock.callLater(delay, self._expire)

    def _expire(self):
        self._timer = None
        self._deliver(self.table.expire(self._now()))
        self._schedule()

    def watch(self, entity, callback):
        """
        See L{IPresenceManager.watch}.
        """
        checkName(entity, "entity")
        return self._watches.add(entity, callback)

    def _presence(self, entity, viewer=None):
        return self.table.presence(entity, self._now(), viewer)

    def connect(self, entity, device, status=None, details=""):
        """
        See L{IPresenceManager.connect}.
        """
        status = Status.ONLINE if status is None else status
        d = self._run(lambda: self.table.connect(entity, device, self.nodeId, self._now(),
                                                 status, details))
        return d.addCallback(lambda _: self._presence(entity))

    def heartbeat(self, entity, device):
        """
        See L{IPresenceManager.heartbeat}.
        """
        if not self._open:
            return defer.fail(EngineStopped("presence is closed"))
        alive = self.table.heartbeat(entity, device, self._now())
        self._schedule()
        return defer.succeed(alive)

    def disconnect(self, entity, device, node=None):
        """
        See L{IPresenceManager.disconnect}.
        """
        d = self._run(lambda: self.table.disconnect(entity, device, self._now(), node))
        return d.addCallback(lambda _: self._presence(entity))

    def setStatus(self, entity, device, status, details=""):
        """
        See L{IPresenceManager.setStatus}.
        """
        d = self._run(lambda: self.table.setStatus(entity, device, status, details, self._now()))
        return d.addCallback(lambda _: self._presence(entity))

    def setActivity(self, entity, device, status, ttl, to=None):
        """
        See L{IPresenceManager.setActivity}.
        """
        return self._run(lambda: self.table.setActivity(entity, device, status, ttl, to,
                                                        self._now()))

    def setLocation(self, entity, device, latitude, longitude, sharing):
        """
        See L{IPresenceManager.setLocation}.
        """
        return self._run(lambda: self.table.setLocation(entity, device, latitude, longitude,
                                                        sharing, self._now()))

    def setVisibility(self, entity, visibility):
        """
        See L{IPresenceManager.setVisibility}; durable before anyone is
        told.
        """
        if not self._open:
            return defer.fail(EngineStopped("presence is closed"))
        try:
            checkName(entity, "entity")
            visibility = Visibility(visibility)
            notices = self.table.setVisibility(entity, visibility, self._now())
        except Exception:
            return defer.fail()
        if visibility == Visibility.HIDDEN:
            d = self._store.put(_visibilityKey(entity), bytes([visibility]))
        else:
            d = self._store.delete(_visibilityKey(entity))
        return d.addCallback(lambda _: self._deliver(notices))

    def _subscriptionEvent(self, event, watcher, target):
        if not self._open:
            return defer.fail(EngineStopped("presence is closed"))
        try:
            checkName(watcher, "watcher")
            checkName(target, "target")
            state, tell, changed = self.book.apply(event, watcher, target)
        except Exception:
            return defer.fail()
        now = self._now()
        notices = subscriptionNotices(event, watcher, target, state, tell, now,
                                      lambda: self.table.awarenessFor(target, now))
        if not changed:
            d = defer.succeed(None)
        elif state == SubscriptionState.NONE:
            d = self._store.delete(_subscriptionKey(watcher, target))
        else:
            d = self._store.put(_subscriptionKey(watcher, target), bytes([state]))

        def durable(_):
            self._deliver(notices)
            return state
        return d.addCallback(durable)

    def requestSubscription(self, watcher, target):
        """
        See L{IPresenceManager.requestSubscription}.
        """
        return self._subscriptionEvent("request", watcher, target)

    def answerSubscription(self, target, watcher, approve):
        """
        See L{IPresenceManager.answerSubscription}.
        """
        return self._subscriptionEvent("approve" if approve else "deny", watcher, target)

    def unsubscribe(self, watcher, target):
        """
        See L{IPresenceManager.unsubscribe}.
        """
        return self._subscriptionEvent("unsubscribe", watcher, target)

    def subscription(self, watcher, target):
        """
        See L{IPresenceManager.subscription}.
        """
        return defer.succeed(self.book.state(watcher, target))

    def watchers(self, target, state=None):
        """
        See L{IPresenceManager.watchers}.
        """
        return defer.succeed(self.book.watchers(target, state))

    def subscriptions(self, watcher):
        """
        See L{IPresenceManager.subscriptions}.
        """
        return defer.succeed(self.book.subscriptions(watcher))

    def presence(self, entity, viewer=None):
        """
        See L{IPresenceManager.presence}.
        """
        try:
            checkName(entity, "entity")
            return defer.succeed(self._presence(entity, viewer))
        except Exception:
            return defer.fail()
