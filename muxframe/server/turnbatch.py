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
  - A batch that fails as a whole before anything of it was stored, as
    C{isolate(failure)} tells (a limit some caller's records met, such as
    the engine's C{maxQueues}), is appended again one caller at a time,
    so that only the callers whose records meet the limit fail.
  - C{appendMany} is looked up when the batch is made (the engine may be
    attached after this is built); C{onBatch(d)} sees each batch's
    Deferred (and each of a split batch's).
"""

from muxframe.logthrottle import logger

log = logger("muxframe.server.turnbatch")

#: A turn's batch of appends is flushed early past this many records.
BATCH_RECORDS = 4096


class TurnBatch:
    """
    Appends gathered over one reactor turn (see the module's rules).
    """

    def __init__(self, reactor, appendMany, limit=BATCH_RECORDS, onBatch=None, isolate=None):
        self._reactor = reactor
        self._appendMany = appendMany
        self.limit = limit
        self._onBatch = onBatch
        self._isolate = isolate
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
        d = self._appendMany()(items)
        d.addCallbacks(self._flushed, self._failed, callbackArgs=(waiters,),
                       errbackArgs=(waiters, items))
        if self._onBatch is not None:
            self._onBatch(d)

    def _flushed(self, results, waiters):
        for first, last, done, failed, args in waiters:
            try:
                done((results[first], results[last]), *args)
            except Exception:
                log.failure("an append's callback failed")

    def _failed(self, failure, waiters, items=None):
        if items is not None and len(waiters) > 1 and self._isolate is not None \
                and self._isolate(failure):
            # Nothing was stored: each caller's records on their own.
            appendMany = self._appendMany()
            for first, last, done, failed, args in waiters:
                d = appendMany(items[first:last + 1])
                d.addCallbacks(self._flushed, self._failed,
                               callbackArgs=([(0, last - first, done, failed, args)],),
                               errbackArgs=([(0, last - first, done, failed, args)],))
                if self._onBatch is not None:
                    self._onBatch(d)
            return
        for first, last, done, failed, args in waiters:
            try:
                failed(failure, *args)
            except Exception:
                log.failure("a failed append's callback failed")
