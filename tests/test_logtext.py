"""
Tests for L{muxframe.logtext}: the same text as twisted.logger's text
observer, for every event.
"""

import io
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.logger import (
    LogLevel, formatEventAsClassicLogText, formatTime,
    textFileLogObserver as twistedObserver, timeFormatRFC3339,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from muxframe import logtext
from muxframe.logtext import classicLogText, textFileLogObserver


class Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr")

    __str__ = __repr__


class Thing:
    attribute = "attr"

    def __repr__(self):
        return "<Thing>"

    def method(self):
        return "called"


fields = st.sampled_from(["a", "b", "sessionId", "a", "b", "missing"])
pieces = st.one_of(
    st.text(alphabet="xy z\n:-é", max_size=6),
    st.sampled_from(["{a}", "{b!r}", "{sessionId:#x}", "{a!s:>4}"]),
    st.builds(lambda f, c, s: "{%s%s%s}" % (f, c, s), fields,
              st.sampled_from(["", "", "!r", "!r", "!s", "!a", "!x"]),
              # (No nested spec such as ":{b}": with a generated width of
              # billions, Twisted's formatter builds that string: a CI
              # worker was killed for memory.  test_fastPath covers it.)
              st.sampled_from(["", "", "", ":>6", ":#x", ":.2f"])),
    st.sampled_from(["{a.attribute}", "{a.method()}", "{method()}", "{a[0]}",
                     "{}", "{0}", "{{", "}}", "{", "}", "{a!}", "{a:"]),
)
values = st.one_of(
    st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False),
    st.text(max_size=5), st.text(max_size=5), st.binary(max_size=4),
    st.none(), st.booleans(),
    st.just(Thing()), st.just(Unprintable()), st.just(Thing().method),
    st.lists(st.integers(), max_size=2),
)
times = st.one_of(
    st.none(),
    st.floats(min_value=0, max_value=4e9),
    st.integers(0, 4 * 10 ** 9).map(lambda s: s + 0.9999996),
    st.integers(0, 4 * 10 ** 9).map(lambda s: s - 0.0000004),
)


@st.composite
def events(draw):
    event = {"log_time": draw(times)}
    if draw(st.integers(0, 9)):
        format = draw(st.lists(pieces, max_size=6).map("".join))
    else:
        format = draw(st.sampled_from([None, b"bytes {a}", 7]))
    if format is not None:
        event["log_format"] = format
    for name in ("a", "b", "sessionId", "method"):
        if draw(st.integers(0, 9)):
            event[name] = draw(values)
    if draw(st.booleans()):
        event["log_system"] = draw(st.one_of(st.text(max_size=8),
                                             st.just(Unprintable())))
    if draw(st.booleans()):
        event["log_namespace"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        event["log_level"] = draw(st.sampled_from(
            list(LogLevel.iterconstants())))
    return event


class SameTextTests(SynchronousTestCase):
    """
    L{classicLogText} returns what C{formatEventAsClassicLogText} does.
    """

    def assertSame(self, event, timeFormat=timeFormatRFC3339):
        expected = formatEventAsClassicLogText(
            event, formatTime=lambda when: formatTime(when, timeFormat))
        self.assertEqual(classicLogText(timeFormat)(event), expected)

    @settings(max_examples=1500, deadline=None, derandomize=True)
    @given(events())
    def test_anyEvent(self, event):
        self.assertSame(event)

    @settings(max_examples=50, deadline=None, derandomize=True)
    @given(events(), st.sampled_from([None, "%H:%M:%S.%f", "%Y/%W %%f"]))
    def test_otherTimeFormats(self, event, timeFormat):
        self.assertSame(event, timeFormat)

    def test_roles(self):
        """
        The lines the roles write: fields with specs and conversions, a
        failure's traceback, a multi-line message.
        """
        now = time.time()
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        for event in [
            {"log_format": "xtmp session {sessionId:#x} closed: {why}",
             "sessionId": 2 ** 63 + 5, "why": ValueError("gone"),
             "log_time": now, "log_system": "XTMPServerSession,3,10.0.0.1",
             "log_level": LogLevel.info, "log_namespace": "muxframe"},
            {"log_format": "boom {x!r}", "x": "y", "log_failure": failure,
             "log_time": now, "log_level": LogLevel.critical},
            {"log_format": "two\nlines {n}", "n": 1, "log_time": now},
            {"log_format": "{log_text}", "log_text": "legacy", "log_time": now},
            {"log_format": "", "log_time": now},
        ]:
            self.assertSame(event)

    def test_fastPath(self):
        """
        Plain fields with conversions and specs are formatted here (not
        left to Twisted), with Twisted's text.
        """
        event = {"log_format": "{a!r} {b!s:>5} {c!a} {d:#x} {e:.1f} {{x}}",
                 "a": "q", "b": 7, "c": "\xe9", "d": 255, "e": 2.25,
                 "log_time": 1e9}
        self.assertEqual(logtext._eventText(event),
                         "'q'     7 '\\xe9' 0xff 2.2 {x}")
        self.assertSame(event)
        for format in ("{a.b}", "{a()}", "{a[0]}", "{a:{b}}", "{}", "{a!x}",
                       "{", b"{a}"):
            self.assertIsNone(logtext._eventText(
                {"log_format": format, "a": [1], "b": 2}), format)

    def test_secondBoundary(self):
        """
        A time a hair before a second, which datetime rounds up, is the
        next second's text; the kept text is not reused for it.
        """
        classic = classicLogText()
        base = 1764000000.0
        for when in (base + 0.2, base + 0.9999996, base + 0.5, base + 1.0,
                     base + 1.9999999, base - 0.0000004):
            event = {"log_format": "x", "log_time": when}
            self.assertEqual(classic(event), formatEventAsClassicLogText(
                event, formatTime=formatTime))

    def test_formatsKept(self):
        """
        Parsed formats are kept up to L{logtext.FORMATS_KEPT}; past that a
        format is parsed per event, with the same text.
        """
        self.patch(logtext, "_parsed", {})
        self.patch(logtext, "FORMATS_KEPT", 3)
        classic = classicLogText()
        for n in range(6):
            event = {"log_format": "n=%d {v}" % (n,), "v": n, "log_time": 1.0}
            self.assertEqual(classic(event), formatEventAsClassicLogText(event))
        self.assertEqual(len(logtext._parsed), 3)


class ObserverTests(SynchronousTestCase):
    """
    L{textFileLogObserver} writes to its file what twisted.logger's does.
    """

    def test_sameBytes(self):
        ours, theirs = io.StringIO(), io.StringIO()
        for n in range(3):
            event = {"log_format": "line {n}", "n": n, "log_time": 1e9 + n,
                     "log_namespace": "muxframe", "log_level": LogLevel.warn}
            textFileLogObserver(ours)(event)
            twistedObserver(theirs)(event)
        self.assertEqual(ours.getvalue(), theirs.getvalue())
        self.assertEqual(len(ours.getvalue().splitlines()), 3)

    def test_bytesFile(self):
        """
        A binary file gets UTF-8, as with Twisted's.
        """
        ours, theirs = io.BytesIO(), io.BytesIO()
        event = {"log_format": "caf\xe9 {n}", "n": 1, "log_time": 1e9}
        textFileLogObserver(ours)(event)
        twistedObserver(theirs)(event)
        self.assertEqual(ours.getvalue(), theirs.getvalue())
