"""
How much muxframe writes to the log, so that logs never amplify an attack.

  - L{LogThrottle} (no Twisted import, time passed in): at most
    C{perInterval} lines of one kind each C{interval} seconds; the first line
    of the next window reports how many were held back.  Reusable by any
    part of muxframe (the multiplexer, the tunnels, the XTMP server).
  - L{throttled} logs one line through a L{Logger} if its throttle allows
    it, saying when further lines of its kind are suppressed and how many
    were.
  - L{ThrottlingObserver} does the same for every event another library
    emits through a logger muxframe gives it (autobahn's, in
    L{muxframe.web}): the kind of an event is its namespace and level (its
    format may embed the peer's data, so it cannot be the kind); events
    below C{info} pass untouched (their logger's level decides).
  - L{observer}: muxframe's loggers publish through it.  It drops events of
    the C{muxframe} namespace below a minimum level: everything passes by
    default (a library leaves filtering to the application's observers);
    the twistd roles call L{setMinimumLevel} (C{info} unless
    C{--logLevel=debug}), so per-stream events, which are C{debug}, are not
    written by default.
"""

import time

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogPublisher,
)


class LogThrottle:
    """
    At most C{perInterval} log lines per kind each C{interval} seconds.

    Windows are kept for at most C{maxKinds} kinds (the oldest is forgotten
    first), so kinds named after peers cannot grow memory.
    """

    def __init__(self, perInterval=10, interval=60.0, maxKinds=256):
        self.perInterval = perInterval
        self.interval = interval
        self.maxKinds = maxKinds
        self._windows = {}

    def allow(self, kind, now):
        """
        Whether to log one more line of C{kind} now.

        @return: C{(allowed, suppressed)}: C{suppressed} is how many lines
            of C{kind} were held back in the window that just ended (report
            them once, with this line).
        """
        windows = self._windows
        start, count, held = windows.get(kind, (None, 0, 0))
        suppressed = 0
        if start is None or not 0 <= now - start < self.interval:
            # A new window (or a clock that went backwards).
            suppressed = held
            start, count, held = now, 0, 0
            windows.pop(kind, None)
            if len(windows) >= self.maxKinds:
                del windows[next(iter(windows))]
        if count < self.perInterval:
            windows[kind] = (start, count + 1, held)
            return True, suppressed
        windows[kind] = (start, count, held + 1)
        return False, suppressed

    def exhausted(self, kind):
        """
        Return true if the current window of C{kind} allows no more lines.
        """
        start, count, held = self._windows.get(kind, (None, 0, 0))
        return count >= self.perInterval


def throttled(log, throttle, now, level, kind, format, /, **fields):
    """
    Log C{format} with C{fields} at C{level} through C{log} if C{throttle}
    allows a line of C{kind} at C{now}; return whether it was logged.

    The last line a window allows says that further ones are suppressed;
    the first line of the next window says how many were.
    """
    allowed, suppressed = throttle.allow(kind, now)
    if not allowed:
        return False
    log.emit(level, format + _notes(throttle, kind, suppressed),
             log_suppressed=suppressed, log_interval=throttle.interval,
             **fields)
    return True


def _notes(throttle, kind, suppressed):
    """
    What a line C{throttle} allowed adds to its format: how many lines of
    C{kind} were suppressed, and whether the next ones will be.
    """
    notes = ""
    if suppressed:
        notes += (" ({log_suppressed} similar lines were suppressed in "
                  "the last {log_interval:g} s)")
    if throttle.exhausted(kind):
        notes += (" (further lines like this are suppressed for up to "
                  "{log_interval:g} s)")
    return notes


class ThrottlingObserver:
    """
    A log observer passing events on to C{observer} while C{throttle}
    allows their kind (module docstring); C{now} gives the time.
    """

    def __init__(self, observer, throttle, now=time.monotonic):
        self._observer = observer
        self.throttle = throttle
        self._now = now

    def __call__(self, event):
        """
        Pass C{event} on, or drop it.
        """
        level = event.get("log_level")
        if _PRIORITY.get(level, 99) < _PRIORITY[LogLevel.info]:
            self._observer(event)
            return
        kind = (event.get("log_namespace"), level)
        allowed, suppressed = self.throttle.allow(kind, self._now())
        if not allowed:
            return
        notes = _notes(self.throttle, kind, suppressed)
        if notes:
            event = dict(event, log_suppressed=suppressed,
                         log_interval=self.throttle.interval,
                         log_format=(event.get("log_format") or "") + notes)
        self._observer(event)


_levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug)

observer = FilteringLogObserver(globalLogPublisher, [_levels])

_PRIORITY = {level: rank for rank, level in enumerate(LogLevel.iterconstants())}
_minimum = [0]


class _Logger(Logger):
    """
    A L{Logger} that drops an event below muxframe's minimum level before
    building it: a per-stream debug line costs one comparison when it is
    not written.
    """

    def emit(self, level, format=None, **kwargs):
        if _PRIORITY.get(level, 99) < _minimum[0]:
            return
        Logger.emit(self, level, format, **kwargs)


def setMinimumLevel(level):
    """
    Drop muxframe's log events below C{level} (a L{LogLevel}) from now on.
    """
    _levels.setLogLevelForNamespace("muxframe", level)
    _minimum[0] = _PRIORITY[level]


def minimumLevel():
    """
    Return the level below which muxframe's log events are dropped.
    """
    return _levels.logLevelForNamespace("muxframe")


def logger(namespace=None):
    """
    Return a L{Logger} publishing through L{observer} (as a class attribute
    it names itself after its class, as L{Logger} does).
    """
    if namespace is None:
        return _Logger(observer=observer)
    return _Logger(namespace=namespace, observer=observer)


__all__ = [
    "LogThrottle",
    "ThrottlingObserver",
    "logger",
    "minimumLevel",
    "observer",
    "setMinimumLevel",
    "throttled",
]
