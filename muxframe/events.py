"""
The one event vocabulary every framing's engine reports, so the Twisted
adapter is written once.

Engines return lists of these from C{receiveData} and C{tick}.
"""


class Event:
    """
    Base class of engine events.
    """

    __slots__ = ()

    def __repr__(self):
        return "%s(%s)" % (
            type(self).__name__,
            ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__),
        )

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__
        )

    __hash__ = None


class StreamOpened(Event):
    """
    The peer opened stream C{streamId}.
    """

    __slots__ = ("streamId",)

    def __init__(self, streamId):
        self.streamId = streamId


class DataReceived(Event):
    """
    Bytes arrived on a stream.  The application must report them consumed
    (C{engine.consumed(streamId, len(data))}) to return the peer's credit.
    """

    __slots__ = ("streamId", "data")

    def __init__(self, streamId, data):
        self.streamId = streamId
        self.data = data


class StreamEnded(Event):
    """
    The peer half-closed stream C{streamId}: it sends no more data.
    """

    __slots__ = ("streamId",)

    def __init__(self, streamId):
        self.streamId = streamId


class StreamClosed(Event):
    """
    Stream C{streamId} is gone.  C{error} is C{None} when it ended cleanly
    in both directions, else a L{muxframe.errors.StreamError}.
    """

    __slots__ = ("streamId", "error")

    def __init__(self, streamId, error=None):
        self.streamId = streamId
        self.error = error


class ConnectionTerminated(Event):
    """
    The session is over: the peer closed it (MIO FIN), it broke the protocol
    (C{error} is a L{muxframe.errors.RemoteProtocolError}), or it timed out.
    The adapter closes the transport after flushing what the engine queued.
    """

    __slots__ = ("code", "error")

    def __init__(self, code, error=None):
        self.code = code
        self.error = error
