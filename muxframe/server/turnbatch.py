"""
L{TurnBatch}: the appends one reactor turn makes, stored as one
C{appendMany} (one durable step, one Deferred) instead of one each.

Rules:

  - L{TurnBatch.add} takes a caller's records (C{(entity, QueueMessage)}
    pairs, in order) with its C{done} and C{failed} callbacks; the batch is
    appended at the end of the reactor turn (C{callLater(0)}), or at once
    when it holds C{limit} records or more.
  - Once durable, C{done((first Appended, last Appended), *args)} is called
    for each caller, with its own first and last records' results; if the
    append fails, C{failed(failure, *args)}.  A callback that raises is
    logged and the others still run.
  - Each caller's records are one of the batch's C{groups}
    (L{muxframe.engines.interfaces.IQueueStore.appendMany}): a caller
    whose records the engine refuses alone (a limit they met, such as the
    engine's C{maxQueues}) gets C{failed} with that refusal, the others
    their results, from the same batch.  Nothing is appended again, so a
    caller's records are stored in the order it added them, whatever its
    batches met.
  - C{appendMany} is looked up when the batch is made (the engine may be
    attached after this is built); C{onBatch(d)} sees each batch's
    Deferred.
"""

from twisted.python.failure import Failure

from muxframe.logthrottle import logger

log = logger("muxframe.server.turnbatch")

#: A turn's batch of appends is flushed early past this many records.
BATCH_RECORDS = 4096


class TurnBatch:
    """
    Appends gathered over one reactor turn (see the module's rules).
    """

    def __init__(self, reactor, appendMany, limit=BATCH_RECORDS, onBatch=None):
        self._reactor = reactor
        self._appendMany = appendMany
        self.limit = limit
        self._onBatch = onBatch
        self._items = []
        self._waiters = []
        self._flushCall = None

    def add(self, items, done, failed, args=()):
        """
        Append C{items} with this turn's batch (see the module's rules).
        """
        batch = self._items
        start = len(batch)
        batch.extend(items)
        self._waiters.append((start, len(batch) - 1, done, failed, args))
        if len(batch) >= self.limit:
            self.flush()
        elif self._flushCall is None:
            self._flushCall = self._reactor.callLater(0, self.flush)

    def flush(self):
        """
        Append what waits for the end of the turn now.
        """
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        items, waiters = self._items, self._waiters
        if not items:
            return
        self._items, self._waiters = [], []
        groups = [(first, last) for first, last, _, _, _ in waiters]
        d = self._appendMany()(items, groups=groups)
        d.addCallbacks(self._flushed, self._failed, callbackArgs=(waiters,),
                       errbackArgs=(waiters,))
        if self._onBatch is not None:
            self._onBatch(d)

    def _flushed(self, results, waiters):
        for first, last, done, failed, args in waiters:
            try:
                result = results[first]
                if isinstance(result, Exception):
                    # The engine refused this caller's records alone.
                    failed(Failure(result), *args)
                else:
                    done((result, results[last]), *args)
            except Exception:
                log.failure("an append's callback failed")

    def _failed(self, failure, waiters):
        for first, last, done, failed, args in waiters:
            try:
                failed(failure, *args)
            except Exception:
                log.failure("a failed append's callback failed")
