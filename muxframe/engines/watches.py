"""
Callbacks registered per key (an entity's queue, an entity's presence
notices), called in registration order; one that raises is logged and
does not stop the others.  A key's first watch may have to subscribe
(the Redis engine's pub/sub) before notices from other nodes reach it:
L{Watch.whenActive} says when they do.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from muxframe.engines.interfaces import IWatch

log = Logger()


@implementer(IWatch)
class Watch:
    """
    One registration in a L{WatchList}.
    """

    def __init__(self, watches, key, callback):
        self._watches = watches
        self.key = key
        self.callback = callback
        self.active = True

    def cancel(self):
        """
        Stop the callbacks (idempotent).
        """
        if self.active:
            self.active = False
            self._watches.remove(self)

    def whenActive(self):
        """
        A Deferred firing once notices from every node reach the callback
        (at once, unless the key's subscription is still under way).
        """
        return self._watches.whenActive(self.key)


class WatchList:
    """
    The callbacks of every key.

    @param onFirst: called with a key when it gets its first watch; it may
        return a Deferred firing once notices of the key are received
        (L{Watch.whenActive} waits for it).
    @param onLast: called with a key when its last watch is cancelled.
    """

    def __init__(self, onFirst=None, onLast=None):
        self._byKey = {}
        self._onFirst = onFirst
        self._onLast = onLast
        # key -> the Deferreds of whenActive waiting for its subscription.
        self._pending = {}

    def add(self, key, callback):
        """
        Register C{callback} for C{key}; return its L{Watch}.
        """
        watch = Watch(self, key, callback)
        watches = self._byKey.get(key)
        if watches is None:
            watches = self._byKey[key] = []
            if self._onFirst is not None:
                started = self._onFirst(key)
                if isinstance(started, defer.Deferred) and not started.called:
                    waiting = self._pending[key] = []
                    started.addBoth(self._started, key, waiting)
        watches.append(watch)
        return watch

    def _started(self, result, key, waiting):
        if self._pending.get(key) is waiting:
            del self._pending[key]
        if isinstance(result, Failure):
            log.failure("subscribing to the notices of {key!r} failed", result, key=key)
        for d in waiting:
            d.callback(None)

    def whenActive(self, key):
        """
        A Deferred firing once the subscription made for C{key}'s first
        watch is in effect (at once if none is under way).
        """
        waiting = self._pending.get(key)
        if waiting is None:
            return defer.succeed(None)
        d = defer.Deferred()
        waiting.append(d)
        return d

    def remove(self, watch):
        """
        Unregister C{watch} (L{Watch.cancel} calls this).
        """
        watches = self._byKey.get(watch.key)
        if watches and watch in watches:
            watches.remove(watch)
            if not watches:
                del self._byKey[watch.key]
                if self._onLast is not None:
                    self._onLast(watch.key)

    def has(self, key):
        """
        Whether C{key} has a watch.
        """
        return key in self._byKey

    def keys(self):
        """
        Every watched key.
        """
        return list(self._byKey)

    def notify(self, key, *args):
        """
        Call every callback of C{key} with C{args}.
        """
        for watch in list(self._byKey.get(key, ())):
            if not watch.active:
                continue
            try:
                watch.callback(*args)
            except Exception:
                log.failure("watch callback for {key!r} raised", key=key)
