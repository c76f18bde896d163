"""
Logs of every role: the periodic one-line summary, and JSON output.

The summary (every C{summaryInterval} seconds; 0: never) is one info line
with structured fields, C{event="summary"}::

    xtmp summary: 12 connections, 10 sessions, 4 streams, 153.2 msgs/s,
    12.3 KiB/s in, 40.1 KiB/s out

Its rates are averages since the previous line.

JSON logs (C{--log-format json}, or C{logging.format: json} in the XTMP
role's file) use twisted.logger's C{jsonFileLogObserver}: each event is
one JSON object (its structured fields as keys, C{log_format} the text
template) preceded by an ASCII record separator (RFC 7464).  Under
C{twistd} the role gives the application an C{ILogObserver} component
writing where C{--logfile} says (C{-}: standard output; with C{-n} and no
C{--logfile}: standard output; else C{twistd.log}, rotated on SIGUSR1
as twistd rotates its own); under C{twist} it
selects twist's own JSON observer (C{twist --log-format=json} does the
same).  Text logs are L{muxframe.logtext}'s observer: the lines
twisted.logger's text observer writes, for less CPU per line; given the
same way (twistd) or in place of twist's text observer.
"""

import os
import signal
import sys

from twisted.application.internet import TimerService
from twisted.logger import Logger, jsonFileLogObserver

log = Logger(namespace="muxframe.summary")


def byteRate(value):
    """
    C{"812 B/s"}, C{"12.3 KiB/s"}, C{"4.1 MiB/s"}.
    """
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return "%.1f %s/s" % (value / size, unit)
    return "%.0f B/s" % (value,)


class SummaryService(TimerService):
    """
    Log a role's summary line every C{interval} seconds.
    """

    def __init__(self, status, interval, clock):
        TimerService.__init__(self, interval, self.logSummary)
        self.clock = clock
        self.status = status
        self._last = None

    def startService(self):
        # The first line after one interval, not at once.
        self._last = (self.clock.seconds(), self.status.totals())
        TimerService.startService(self)

    def logSummary(self):
        """
        Log one summary line (rates since the previous one).
        """
        now, totals = self.clock.seconds(), self.status.totals()
        if self._last is None:
            self._last = (now, totals)
            return None
        then, before = self._last
        elapsed = now - then
        if elapsed < self.step / 2.0:
            # TimerService calls at once when started: no line yet.
            return None
        self._last = (now, totals)
        rate = {key: (totals.get(key, 0) - before.get(key, 0)) / elapsed
                for key in ("messages", "bytesReceived", "bytesSent")}
        figures = self.status.summary()
        log.info("{role} summary: {connections} connections, {sessions} "
                 "sessions, {streams} streams, {messagesPerSecond:.1f} msgs/s, "
                 "{bytesIn} in, {bytesOut} out", event="summary",
                 role=self.status.role, connections=figures["connections"],
                 sessions=figures["sessions"], streams=figures["streams"],
                 messagesPerSecond=rate["messages"],
                 bytesInPerSecond=rate["bytesReceived"],
                 bytesOutPerSecond=rate["bytesSent"],
                 bytesIn=byteRate(rate["bytesReceived"]),
                 bytesOut=byteRate(rate["bytesSent"]),
                 draining=self.status.isDraining(), interval=elapsed)
        return None


def _runnerOptions(options):
    """
    The runner's options (twistd's or twist's) above a role's options.
    """
    runner = options
    while getattr(runner, "parent", None) is not None:
        runner = runner.parent
    return runner if runner is not options else None


def _twistdLogFile(runner):
    # What twistd's own observer would write to (its UnixAppLogger), with
    # its rules: a daemon cannot log to standard output, and SIGUSR1
    # rotates a log file (unless something else handles the signal).
    logfile = runner.get("logfile")
    nodaemon = runner.get("nodaemon")
    if logfile == "-" or (not logfile and nodaemon):
        if not nodaemon and os.name == "posix":
            sys.exit("Daemons cannot log to stdout, exiting!")
        return sys.stdout
    from twisted.python.logfile import LogFile
    logFile = LogFile.fromFullPath(logfile or "twistd.log")
    if hasattr(signal, "SIGUSR1") and not signal.getsignal(signal.SIGUSR1):

        def rotateLog(number, frame):
            from twisted.internet import reactor
            reactor.callFromThread(logFile.rotate)

        signal.signal(signal.SIGUSR1, rotateLog)
    return logFile


def logObserver(options, format="text"):
    """
    Arrange a role's logs in C{format} (C{"text"} or C{"json"}) for a role
    whose parsed options are C{options}.

    Under twist, select its observer factory and return L{None} (text:
    only in place of twist's own text observer, which it picks for a
    terminal).  Under twistd, return the observer to give the application
    as its C{ILogObserver} (L{None} with C{--logger} or C{--syslog}, which
    win).  Text is L{muxframe.logtext}'s: the lines twisted.logger's text
    observer writes, for less CPU per line.
    """
    from twisted.logger import textFileLogObserver as twistedText

    from muxframe.logtext import textFileLogObserver
    runner = _runnerOptions(options)
    if runner is None:
        return None
    if "fileLogObserverFactory" in runner:
        if format == "json":
            runner["fileLogObserverFactory"] = jsonFileLogObserver
            runner["logFormat"] = "json"
        elif runner["fileLogObserverFactory"] is twistedText:
            runner["fileLogObserverFactory"] = textFileLogObserver
        return None
    if runner.get("logger") or runner.get("syslog"):
        return None
    factory = jsonFileLogObserver if format == "json" else textFileLogObserver
    return factory(_twistdLogFile(runner))


__all__ = ["SummaryService", "byteRate", "logObserver"]
