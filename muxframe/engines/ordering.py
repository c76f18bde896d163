"""
Per-key ordering of asynchronous steps: a device's acknowledgements save
its position only after every earlier acknowledgement's receipts are
durable, so a crash can never leave a position ahead of receipts not yet
written.
"""

from twisted.internet import defer


class SerialChains:
    """
    For each key, runs the steps given to L{after} one after another.
    Keys with nothing pending take no memory.
    """

    def __init__(self):
        self._tails = {}

    def __len__(self):
        """
        How many keys have steps pending.
        """
        return len(self._tails)

    def whenIdle(self):
        """
        A Deferred firing (with L{None}) once every step given so far has
        finished, successfully or not.
        """
        # Each key's tail fires after all of that key's earlier steps.
        tails = list(self._tails.values())
        if not tails:
            return defer.succeed(None)
        return defer.DeferredList(tails).addCallback(lambda _: None)

    def after(self, key, step):
        """
        Run C{step()} (returning a value or a Deferred) once every earlier
        step of C{key} finished, successfully or not; return a Deferred of
        its result.
        """
        tail = self._tails.get(key)
        if tail is None:
            d = defer.maybeDeferred(step)
        else:
            d = defer.Deferred()

            def run(_):
                defer.maybeDeferred(step).chainDeferred(d)
            tail.addBoth(run)
        # The tail swallows results so a failure reaches only its caller.
        tail = defer.Deferred()
        self._tails[key] = tail

        def done(result):
            if self._tails.get(key) is tail:
                del self._tails[key]
            tail.callback(None)
            return result
        return d.addBoth(done)
