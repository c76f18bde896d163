"""
The server's notable events: counted by name, passed to observers, and
logged as structured C{twisted.logger} events at most C{perInterval}
times per name and interval (a flood of refusals must not become a flood
of log lines; the count still moves for every one).

Every event has a name (C{"lockout"}, C{"rate_limited"}, ...) and fields;
most carry C{code}, the L{XTMPErrorCode} sent to the peer.  Log events
are emitted with C{event=name} and the fields, so a JSON log observer
gets them as keys.
"""

from twisted.logger import LogLevel
from zope.interface import implementer

from muxframe.logthrottle import logger
from muxframe.server.interfaces import IServerEvents
from muxframe.server.limits import LogThrottle
from muxframe.xtmp.errors import XTMPErrorCode


@implementer(IServerEvents)
class ServerEvents:
    """
    Counts, observers and throttled logging of the server's events.

    @param clock: an C{IReactorTime} (its C{seconds}) for the throttle.
    """

    log = logger("muxframe.server")

    def __init__(self, clock, perInterval=10, interval=60.0):
        self.clock = clock
        self.counts = {}
        self._observers = []
        self._throttle = LogThrottle(perInterval, interval)

    def addObserver(self, observer):
        """
        Call C{observer(name, fields)} for every event from now on.
        """
        self._observers.append(observer)

    def removeObserver(self, observer):
        """
        Stop calling C{observer}.
        """
        self._observers.remove(observer)

    def emit(self, name, text, level=LogLevel.warn, **fields):
        """
        Record event C{name}: count it, tell observers, and log C{text}
        (a format string over C{fields}) unless throttled.
        """
        self.counts[name] = self.counts.get(name, 0) + 1
        for observer in list(self._observers):
            observer(name, fields)
        allowed, suppressed = self._throttle.allow(name, self.clock.seconds())
        if not allowed:
            return
        if "code" in fields:
            fields["codeName"] = XTMPErrorCode.describe(fields["code"])
        if suppressed:
            text += " ({suppressed} more {event} events were not logged)"
        self.log.emit(level, "xtmp server: " + text, event=name,
                      suppressed=suppressed, **fields)
