"""
Callbacks registered per key (an entity's queue, an entity's presence
notices), called in registration order; one that raises is logged and
does not stop the others.
"""

from twisted.logger import Logger
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


class WatchList:
    """
    The callbacks of every key.

    @param onFirst: called with a key when it gets its first watch.
    @param onLast: called with a key when its last watch is cancelled.
    """

    def __init__(self, onFirst=None, onLast=None):
        self._byKey = {}
        self._onFirst = onFirst
        self._onLast = onLast

    def add(self, key, callback):
        """
        Register C{callback} for C{key}; return its L{Watch}.
        """
        watch = Watch(self, key, callback)
        watches = self._byKey.get(key)
        if watches is None:
            watches = self._byKey[key] = []
            if self._onFirst is not None:
                self._onFirst(key)
        watches.append(watch)
        return watch

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
