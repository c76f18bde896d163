"""
Timing one role's phases in the in-process cost benchmarks (C{roundcost},
C{relaycost}, C{handshakecost}).
"""

import os
import time


def timePhase(f, marks=False, profiler=None):
    """
    Run C{f()} and return the thread CPU it took, in nanoseconds.

    @param marks: bracket it with C{os.getpgrp()} and C{os.getppid()},
        which callgrind is told to zero its counters before and dump them
        before (C{--zero-before=getpgrp --dump-before=getppid}), so the
        dumps' instructions are the phases'.
    @param profiler: a C{cProfile.Profile} to run it under instead (then
        the time is not taken: 0).
    """
    if profiler is not None:
        profiler.enable()
        f()
        profiler.disable()
        return 0
    if marks:
        os.getpgrp()
    t = time.thread_time_ns()
    f()
    t = time.thread_time_ns() - t
    if marks:
        os.getppid()
    return t
