"""
The cyclic garbage collector's settings for a server process (the
C{server.gc_threshold} setting, applied by the C{xtmp} twistd role).

Why: a server holds much long-lived state (modules, configuration, the
engine's indexes, sessions) and makes many short-lived container objects
per message (Deferreds and their callback lists, records, wire values).
CPython's default collector runs a young pass every 700 net allocations
and, now and then, a full pass walking every long-lived object; under load
that is a sixth to a third of the process's CPU per stored message
(C{docs/performance.md}, "Presence and queues: the engines").  Reference
counting frees everything that is not in a cycle at once; the collector is
only for cycles, which can wait a little longer.

Rules (L{applyServerCollector}), once the server has started:

 - one full collection, then every object alive is moved to the permanent
   generation (C{gc.freeze}): the collector never walks them again.  They
   are what start-up made and lives as long as the process; should one of
   them become cyclic garbage later it is not freed (its memory stays);
 - the youngest generation's threshold becomes C{threshold} (default
   L{YOUNG_THRESHOLD}); the older generations' thresholds are kept;
 - a threshold of 0 changes nothing (Python's defaults).
"""

import gc

#: The youngest generation's threshold a server uses (CPython's is 700).
YOUNG_THRESHOLD = 10000


def applyServerCollector(threshold=YOUNG_THRESHOLD):
    """
    Apply the server's collector settings (see the module's rules); return
    whether anything changed.
    """
    if not threshold:
        return False
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
    return True
