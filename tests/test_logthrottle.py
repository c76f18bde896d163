"""
Tests for L{muxframe.logthrottle}: the log throttle, the throttled line
and muxframe's minimum log level.
"""

from twisted.logger import LogLevel, Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from muxframe import logthrottle
from muxframe.logthrottle import LogThrottle, throttled


class LogThrottleTests(SynchronousTestCase):

    def test_perInterval(self):
        """
        At most perInterval lines of a kind per interval; the first line of
        the next window reports how many were held back.
        """
        throttle = LogThrottle(perInterval=3, interval=10)
        results = [throttle.allow("x", 1.0 + i * 0.1) for i in range(10)]
        self.assertEqual([allowed for allowed, _ in results], [True] * 3 + [False] * 7)
        self.assertEqual(throttle.allow("x", 11.5), (True, 7))
        self.assertEqual(throttle.allow("y", 11.5), (True, 0))

    def test_kindsBounded(self):
        """
        Kinds named after peers cannot grow memory: the oldest window is
        forgotten past maxKinds.
        """
        throttle = LogThrottle(perInterval=1, interval=10, maxKinds=5)
        for i in range(100):
            throttle.allow("peer %d" % (i,), 0.0)
        self.assertLessEqual(len(throttle._windows), 5)

    def test_clockBackwards(self):
        """
        A clock that goes backwards starts a new window rather than
        silencing a kind for ever.
        """
        throttle = LogThrottle(perInterval=1, interval=10)
        self.assertEqual(throttle.allow("x", 1000.0), (True, 0))
        self.assertEqual(throttle.allow("x", 1000.5), (False, 0))
        self.assertEqual(throttle.allow("x", 3.0), (True, 1))

    def test_throttledLine(self):
        """
        throttled() logs while allowed, says on the last allowed line that
        further ones are suppressed, and on the next window's first how many
        were.
        """
        events = []
        log = Logger(observer=events.append, namespace="muxframe.test")
        throttle = LogThrottle(perInterval=2, interval=60)
        for i in range(5):
            throttled(log, throttle, float(i), LogLevel.warn, "bad", "bad peer {n}", n=i)
        throttled(log, throttle, 100.0, LogLevel.warn, "bad", "bad peer {n}", n=9)
        texts = [formatEvent(e) for e in events]
        self.assertEqual(len(texts), 3)
        self.assertEqual(texts[0], "bad peer 0")
        self.assertIn("further lines like this are suppressed for up to 60 s", texts[1])
        self.assertIn("3 similar lines were suppressed in the last 60 s", texts[2])
        self.assertEqual(events[0]["log_level"], LogLevel.warn)


class MinimumLevelTests(SynchronousTestCase):

    def test_dropsBelowLevel(self):
        """
        muxframe's loggers publish through the filtering observer: events
        of the muxframe namespace below the minimum level are dropped;
        others pass; the default passes everything.
        """
        from twisted.logger import globalLogPublisher
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        previous = logthrottle.minimumLevel()
        self.addCleanup(logthrottle.setMinimumLevel, previous)
        self.assertEqual(previous, LogLevel.debug)
        log = logthrottle.logger("muxframe.test")
        log.debug("one per stream")
        logthrottle.setMinimumLevel(LogLevel.info)
        log.debug("dropped")
        log.info("kept")
        texts = [formatEvent(e) for e in seen if e.get("log_namespace") == "muxframe.test"]
        self.assertEqual(texts, ["one per stream", "kept"])


class ThrottlingObserverTests(SynchronousTestCase):
    """
    L{ThrottlingObserver}: another library's events, throttled by
    namespace and level.
    """

    def test_throttlesByNamespaceAndLevel(self):
        """
        At most C{perInterval} events of one namespace and level (any
        format) pass each interval, the last saying more are suppressed
        and the first of the next window how many were; debug events pass.
        """
        from twisted.logger import LogLevel, formatEvent
        from muxframe.logthrottle import ThrottlingObserver
        passed, clock = [], [0.0]
        observer = ThrottlingObserver(passed.append, LogThrottle(2, 60),
                                      lambda: clock[0])

        def event(level, text, namespace="lib"):
            observer({"log_level": level, "log_format": text,
                      "log_namespace": namespace})

        for i in range(5):
            event(LogLevel.warn, "peer %d failed" % (i,))
            event(LogLevel.debug, "read %d" % (i,))
        event(LogLevel.warn, "other", namespace="other")
        texts = [formatEvent(e) for e in passed]
        self.assertEqual(texts[:2], ["peer 0 failed", "read 0"])
        self.assertIn("further lines like this are suppressed", texts[2])
        self.assertEqual(len([t for t in texts if t.startswith("peer")]), 2)
        self.assertEqual(len([t for t in texts if t.startswith("read")]), 5)
        self.assertEqual(texts[-1], "other")
        clock[0] = 61.0
        event(LogLevel.warn, "again")
        self.assertIn("3 similar lines were suppressed", formatEvent(passed[-1]))
