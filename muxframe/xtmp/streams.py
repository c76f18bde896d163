"""
Named publish/subscribe streams: which sessions subscribed to what.
Pure Python; the Twisted layer does the sending.
"""


class StreamRegistry:
    """
    Maps stream names to subscribers (any hashable objects, normally
    L{XTMPProtocol}s), bounded by C{maxStreamsPerSubscriber}.
    """

    def __init__(self, maxStreamsPerSubscriber=1024):
        self.maxStreamsPerSubscriber = maxStreamsPerSubscriber
        self._byName = {}
        self._bySubscriber = {}

    def subscribe(self, name, subscriber):
        """
        Add C{subscriber} to C{name}.

        @return: False if the subscriber is at its limit, else True.
        """
        names = self._bySubscriber.setdefault(subscriber, set())
        if name not in names and len(names) >= self.maxStreamsPerSubscriber:
            return False
        names.add(name)
        self._byName.setdefault(name, {})[subscriber] = None
        return True

    def unsubscribe(self, name, subscriber):
        """
        Remove C{subscriber} from C{name} (no error if absent).
        """
        subs = self._byName.get(name)
        if subs is not None:
            subs.pop(subscriber, None)
            if not subs:
                del self._byName[name]
        names = self._bySubscriber.get(subscriber)
        if names is not None:
            names.discard(name)
            if not names:
                del self._bySubscriber[subscriber]

    def unsubscribeAll(self, subscriber):
        """
        Remove C{subscriber} from every stream.
        """
        for name in list(self._bySubscriber.get(subscriber, ())):
            self.unsubscribe(name, subscriber)

    def subscribers(self, name):
        """
        The subscribers of C{name}, in subscription order.
        """
        return list(self._byName.get(name, ()))

    def streamsOf(self, subscriber):
        """
        The names C{subscriber} is subscribed to.
        """
        return set(self._bySubscriber.get(subscriber, ()))
