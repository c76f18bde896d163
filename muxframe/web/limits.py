"""
The WebSocket layer's limits and timeouts: names, defaults, coercion.

The same camelCase names are keyword arguments of the endpoints and keys
of the C{ws:}/C{wss:} endpoint strings.  No Twisted here.
"""

#: name -> (default, type, lowest allowed, highest allowed, meaning)
LIMITS = {
    "maxMessageSize": (
        2 * 1024 * 1024, int, 1024, 64 * 1024 * 1024,
        "largest incoming message (and frame) payload, bytes; larger "
        "fails the connection with close code 1009"),
    "writeSize": (
        64 * 1024, int, 512, 64 * 1024 * 1024,
        "largest outgoing message payload, bytes: writes are cut into "
        "messages of at most this size"),
    "openHandshakeTimeout": (
        10.0, float, 0.001, 3600.0,
        "seconds from accept for the HTTP upgrade request to arrive whole "
        "(not restarted by data)"),
    "closeHandshakeTimeout": (
        5.0, float, 0.001, 3600.0,
        "seconds to wait for the peer's Close, and then for the TCP "
        "connection to end, before dropping the connection"),
    "autoPingInterval": (
        0.0, float, 0.0, 86400.0,
        "seconds between WebSocket pings (0: none; a paused reader cannot "
        "answer pings, so leave it off unless the carried protocol never "
        "pauses)"),
    "autoPingTimeout": (
        0.0, float, 0.0, 86400.0,
        "seconds to wait for a pong before dropping the connection"),
}


def coerceLimit(name, value):
    """
    Convert C{value} (a string from an endpoint description, or a number)
    to the type of limit C{name}, checking its range.

    @raise ValueError: naming the limit and the allowed range.
    """
    default, kind, low, high, _ = LIMITS[name]
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number, not %r" % (name, value))
    if not low <= converted <= high:
        raise ValueError("%s must be between %s and %s, not %r"
                         % (name, low, high, value))
    return converted


def resolveLimits(given):
    """
    All limits: the defaults updated with C{given} (checked).

    @raise ValueError: for an unknown name or a bad value.
    """
    unknown = set(given) - set(LIMITS)
    if unknown:
        raise ValueError("unknown WebSocket setting(s): %s (known: %s)"
                         % (", ".join(sorted(unknown)),
                            ", ".join(sorted(LIMITS))))
    limits = {name: spec[0] for name, spec in LIMITS.items()}
    for name, value in given.items():
        limits[name] = coerceLimit(name, value)
    return limits


def protocolOptions(limits):
    """
    autobahn C{setProtocolOptions} keywords for C{limits}.
    """
    return dict(
        maxFramePayloadSize=limits["maxMessageSize"],
        maxMessagePayloadSize=limits["maxMessageSize"],
        autoFragmentSize=0,
        openHandshakeTimeout=limits["openHandshakeTimeout"],
        closeHandshakeTimeout=limits["closeHandshakeTimeout"],
        autoPingInterval=limits["autoPingInterval"],
        autoPingTimeout=limits["autoPingTimeout"],
        failByDrop=False,
        tcpNoDelay=True,
    )
