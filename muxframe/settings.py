"""
Multiplexer settings: one table of names, defaults, units and bounds, shared
by L{MultiplexerFactory} keywords, endpoint strings and twistd options.

Every setting has a documented default and a bound; a bad value raises
C{ValueError} naming the setting and the fault.
"""

KiB = 1024
MiB = 1024 * 1024

# Names of settings that are gone, and what replaced them.
RENAMED = {
    "maxStreamBuffer": "maxStreamSendBuffer (sending, off by default) and "
                       "maxStreamReceiveBuffer (BMP receiving)",
}

# name: (type, default, minimum, maximum, unit, description)
SETTINGS = {
    "maxStreams": (
        int, 4096, 1, 1 << 20, "streams",
        "Concurrent streams per connection, both sides' together.  A peer "
        "opening one more is refused (MIO RST code 4 'refused', BMP close); "
        "a local openStream() beyond it fails with StreamLimitError.",
    ),
    "maxFrameSize": (
        int, 256 * KiB, 128, (1 << 24) - 1, "bytes",
        "Largest data-frame payload sent.  A write of at least 16 KiB ends "
        "its frame, so writes up to this size go out as one frame each, "
        "uncopied.  An unmodified Go mio peer accepts 128 bytes at most.",
    ),
    "maxReceiveFrameSize": (
        int, 1 * MiB, 128, (1 << 24) - 1, "bytes",
        "Largest data-frame payload accepted; a larger one is a connection "
        "error (its length cannot be trusted).  Payloads are streamed, never "
        "buffered whole, so this guards framing, not memory.",
    ),
    "windowSize": (
        int, 256 * KiB, 1024, (1 << 24) - 1, "bytes",
        "MIO: the initial per-stream window this side announces when it "
        "opens a stream (the credit in both directions).",
    ),
    "maxWindowSize": (
        int, 16 * MiB, 0, 1 << 30, "bytes",
        "MIO: the most a stream's receive window may grow to by auto-tuning: "
        "a stream whose child consumes a whole window quickly, without "
        "pausing, is granted extra credit, doubling its window up to this "
        "(the credit granted beyond initial windows, all streams together, "
        "never exceeds sessionBufferSize).  0, or at most the window, turns "
        "auto-tuning off.",
    ),
    "maxInFlight": (
        int, 256, 1, 4096, "frames",
        "BMP: data frames sent on one stream and not yet acknowledged (see "
        "maxBytesInFlight: whichever is reached first stops the sender).  "
        "Blazeio itself keeps one in flight but accepts pipelined frames.",
    ),
    "maxBytesInFlight": (
        int, 4 * MiB, 1024, 1 << 34, "bytes",
        "BMP: payload bytes sent on one stream and not yet acknowledged; a "
        "frame is cut to what is left, so large and small frames alike fill "
        "the pipe.",
    ),
    "streamBufferSize": (
        int, 64 * KiB, 1, 1 << 30, "bytes",
        "Unsent bytes buffered on one stream before the child's producer is "
        "paused (resumed when the buffer drains below half).",
    ),
    "maxStreamSendBuffer": (
        int, 0, 0, 1 << 40, "bytes",
        "Hard limit on one stream's unsent bytes; 0 (the default) sets none, "
        "so write() buffers whatever it is given, as on TCP (a registered "
        "producer is paused past streamBufferSize).  Past a nonzero limit "
        "the stream is reset (MIO code 5 'exhausted', BMP close), the child's "
        "connectionLost gets StreamBufferOverflow and a warning is logged; "
        "write() itself never raises.",
    ),
    "maxStreamReceiveBuffer": (
        int, 16 * MiB, 1, 1 << 34, "bytes",
        "BMP: unacknowledged bytes the peer may send on one stream.  A peer "
        "that ignores acknowledgements and sends more has the stream reset "
        "with a flow-control error.",
    ),
    "sessionBufferSize": (
        int, 32 * MiB, 64 * KiB, 1 << 36, "bytes",
        "Received bytes held for paused children, all streams together; past "
        "it the connection stops reading from the socket until they drain.",
    ),
    "keepaliveInterval": (
        float, 30.0, 0.0, 86400.0, "seconds",
        "MIO: send a keepalive (a zero-size session window frame, ignored by "
        "every MIO peer) after this long without sending.  0 disables.",
    ),
    "idleTimeout": (
        float, 0.0, 0.0, 864000.0, "seconds",
        "Close the connection after this long without receiving anything.  "
        "0 disables (a Go mio or Blazeio peer sends no keepalives).",
    ),
    "ackTimeout": (
        float, 30.0, 0.0, 86400.0, "seconds",
        "BMP: a data frame unacknowledged this long ends its stream with "
        "StreamTimeoutError and the peer is sent a close.  0 disables.",
    ),
    "headerTimeout": (
        float, 30.0, 0.0, 3600.0, "seconds",
        "Close the connection when a frame header (or a BMP control "
        "frame) begun this long ago is still incomplete: a peer stalled "
        "mid-header (slowloris) holds no connection for ever.  0 disables.",
    ),
    "emptyTimeout": (
        float, 300.0, 0.0, 864000.0, "seconds",
        "Server side: close a connection that has had no open stream and "
        "received nothing for this long (a MIO muxframe peer's keepalives "
        "keep it open; Go mio and BMP peers send none).  0 disables.",
    ),
    "maxResets": (
        int, 1000, 0, 1 << 30, "streams",
        "Rapid-reset defence: streams the peer may reset, close before "
        "their end or open only to be refused, per floodWindow (a budget "
        "refilled continuously).  Past it the connection is closed with "
        "code 5 'exhausted' (MIO FIN).  0 disables.",
    ),
    "maxEmptyFrames": (
        int, 10000, 0, 1 << 30, "frames",
        "Frames carrying nothing the peer may send per floodWindow: empty "
        "data frames, window updates granting nothing or more than was "
        "sent, keepalives, acknowledgements of nothing, frames for streams "
        "already gone.  Past it the connection is closed with code 5 "
        "'exhausted'.  0 disables.",
    ),
    "floodWindow": (
        float, 10.0, 0.1, 3600.0, "seconds",
        "The period of maxResets and maxEmptyFrames: each budget refills at "
        "its limit per floodWindow.",
    ),
    "floodPause": (
        float, 0.001, 0.0, 1.0, "seconds",
        "A connection whose peer has spent more than a tenth of maxResets "
        "or maxEmptyFrames faster than the budget refills is handled 8 "
        "frames per floodPause (reading it waits meanwhile) until the budget "
        "recovers: a flood gets a small share of the server's time until it "
        "has spent its budget and is closed.  An honest peer spends far "
        "less and keeps full slices.  0 disables.",
    ),
    "maxControlBacklog": (
        int, 10000, 1000, 1 << 24, "frames",
        "Control frames (credit, acknowledgements, resets, refusals) queued "
        "for a peer that does not read them: past this many the connection "
        "is closed with code 5 'exhausted' (as Go's HTTP/2 closes at "
        "10,000).",
    ),
    "drainTimeout": (
        float, 30.0, 0.0, 86400.0, "seconds",
        "Default deadline of Multiplexer.drain(): open streams get this long "
        "to finish before the connection is closed.",
    ),
}


class Settings:
    """
    Validated multiplexer settings; attributes named as in L{SETTINGS}.
    """

    __slots__ = tuple(SETTINGS)

    def __init__(self, **kwargs):
        for name, spec in SETTINGS.items():
            value = kwargs.pop(name, spec[1])
            setattr(self, name, coerce(name, value))
        for name in kwargs:
            if name in RENAMED:
                raise ValueError(
                    "multiplexer setting %s was replaced by %s" % (name, RENAMED[name]))
        if kwargs:
            raise ValueError(
                "unknown multiplexer setting(s): %s (known: %s)"
                % (", ".join(sorted(kwargs)), ", ".join(SETTINGS))
            )

    def asDict(self):
        """
        Return the settings as a plain dict.
        """
        return {name: getattr(self, name) for name in SETTINGS}

    def __repr__(self):
        return "Settings(%s)" % ", ".join(
            "%s=%r" % item for item in self.asDict().items()
        )


def coerce(name, value):
    """
    Convert C{value} (a number or a string, as from an endpoint string) for
    setting C{name}, checking its bounds.

    @raise ValueError: naming the setting and the fault.
    """
    if name not in SETTINGS:
        if name in RENAMED:
            raise ValueError(
                "multiplexer setting %s was replaced by %s" % (name, RENAMED[name]))
        raise ValueError("unknown multiplexer setting %r" % (name,))
    kind, default, low, high, unit = SETTINGS[name][:5]
    if isinstance(value, bool):
        raise ValueError("setting %s must be a number, not %r" % (name, value))
    try:
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            converted = int(value)
        else:
            converted = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            "setting %s must be %s (%s), not %r"
            % (name, "an integer" if kind is int else "a number", unit, value)
        )
    if not low <= converted <= high:
        raise ValueError(
            "setting %s=%r is out of range: %s to %s %s"
            % (name, value, low, high, unit)
        )
    return converted
