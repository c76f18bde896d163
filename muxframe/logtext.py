"""
Text log lines as twisted.logger's C{textFileLogObserver} writes them, for
less CPU per line.

Twisted's text observer formats each event through C{string.Formatter}
(pure Python: it parses the event's format string again for every line)
and formats its timestamp with a time zone computed per event.  Measured
on the XTMP server's handshake bench, the two info lines of a session
were about a tenth of the server's CPU per handshake, most of it there.
L{textFileLogObserver} here writes the same bytes for less: a format
string is parsed once, and a timestamp's text is kept for the second it
names.

Rules:
  - the output is exactly Twisted's (C{formatEventAsClassicLogText} with
    the same time format), for every event: what the fast path does not
    cover goes to Twisted's own formatter;
  - the fast path covers events whose C{log_format} is text with plain
    field names (C{{name}}, C{{name!r}}, C{{name:#x}}), and carries no
    C{log_failure} and no C{log_flattened}; attribute and index fields,
    calls (C{{name()}}), nested specs, bytes formats, missing fields,
    values that fail to format and broken format strings all go to
    Twisted, which also writes what it writes for them;
  - parsed formats are kept for at most L{FORMATS_KEPT} distinct strings
    (log formats are constants in code; more means a format built per
    event, which is then parsed each time, as Twisted does);
  - a timestamp's text is reused only within the second it names, and
    only for time formats without C{%f}; a time that rounds into the
    next second (within a microsecond of it) is formatted afresh.
"""

from string import Formatter

from twisted.logger import FileLogObserver, formatEventAsClassicLogText
from twisted.logger import formatTime as _formatTime
from twisted.logger import timeFormatRFC3339

#: Distinct format strings parsed and kept at most.
FORMATS_KEPT = 4096

_parser = Formatter()
_parsed = {}
_CONVERSIONS = {None: None, "r": repr, "s": str, "a": ascii}


def _parse(template):
    """
    C{template}'s parts as (literal, field, spec, conversion) tuples, or
    L{None} if it has something only Twisted's formatter handles.
    """
    parts = []
    try:
        for literal, field, spec, conversion in _parser.parse(template):
            if field is not None:
                if not field.isidentifier() or "{" in spec or \
                        conversion not in _CONVERSIONS:
                    return None
                conversion = _CONVERSIONS[conversion]
            parts.append((literal, field, spec, conversion))
    except ValueError:
        return None
    return tuple(parts)


def _eventText(event):
    """
    The text of C{event}'s C{log_format}, or L{None} to leave the event to
    Twisted.
    """
    template = event.get("log_format")
    if type(template) is not str:
        return None
    parts = _parsed.get(template, False)
    if parts is False:
        parts = _parse(template)
        if len(_parsed) < FORMATS_KEPT:
            _parsed[template] = parts
    if parts is None:
        return None
    out = []
    try:
        for literal, field, spec, conversion in parts:
            out.append(literal)
            if field is not None:
                value = event[field]
                if conversion is not None:
                    value = conversion(value)
                out.append(format(value, spec))
    except Exception:
        return None
    return "".join(out)


def _system(event):
    # As twisted.logger's: log_system, else namespace#level.
    system = event.get("log_system", None)
    if system is None:
        level = event.get("log_level", None)
        return "%s#%s" % (event.get("log_namespace", "-"),
                          "-" if level is None else level.name)
    try:
        return str(system)
    except Exception:
        return "UNFORMATTABLE"


class _TimeText:
    """
    Twisted's C{formatTime(when, timeFormat)}, kept for the last second.
    """

    def __init__(self, timeFormat):
        self.timeFormat = timeFormat
        self.cacheable = timeFormat is not None and "%f" not in timeFormat
        self._second = None
        self._text = None

    def __call__(self, when):
        if when is None or not self.cacheable:
            return _formatTime(when, self.timeFormat)
        second = when // 1
        if when - second >= 0.999999:
            # datetime rounds to the microsecond: this may be the next
            # second's text.
            return _formatTime(when, self.timeFormat)
        if second != self._second:
            self._text = _formatTime(second, self.timeFormat)
            self._second = second
        return self._text


def classicLogText(timeFormat=timeFormatRFC3339):
    """
    A formatter like twisted.logger's C{formatEventAsClassicLogText} with
    C{timeFormat}, returning the same text (see the module docstring).

    @return: a callable taking an event and returning its line (ending in
        a newline), or L{None} for an event with no text.
    """
    timeText = _TimeText(timeFormat)

    def classic(event):
        text = None
        if "log_failure" not in event and "log_flattened" not in event:
            text = _eventText(event)
        if text is None:
            return formatEventAsClassicLogText(event, formatTime=timeText)
        if not text:
            return None
        line = "%s [%s] %s" % (timeText(event.get("log_time", None)),
                               _system(event), text)
        return line.replace("\n", "\n\t") + "\n"

    return classic


def textFileLogObserver(outFile, timeFormat=timeFormatRFC3339):
    """
    A file log observer writing what twisted.logger's
    C{textFileLogObserver(outFile, timeFormat)} writes.
    """
    return FileLogObserver(outFile, classicLogText(timeFormat))


__all__ = ["FORMATS_KEPT", "classicLogText", "textFileLogObserver"]
