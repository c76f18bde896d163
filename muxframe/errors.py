"""
One exception family for muxframe, split the way h11 and h2 split theirs.

L{LocalProtocolError}: the application misused the API (nothing was sent).
L{RemoteProtocolError}: the peer broke the wire protocol; it carries the wire
error code that is (or would be) sent to the peer.
L{StreamError}: the reason a single stream ended uncleanly (delivered to the
child protocol's C{connectionLost}).
"""

from enum import IntEnum


class DescribedCode:
    """
    Mixin for IntEnums of wire codes: L{describe} names known and unknown
    codes alike.
    """

    @classmethod
    def describe(cls, code):
        """
        Return a readable name for C{code}, known or not.
        """
        try:
            return cls(code).name
        except ValueError:
            return "UNKNOWN(%d)" % (code,)


class ErrorCode(DescribedCode, IntEnum):
    """
    Wire error codes.  MIO carries them in the size field of RST and FIN
    frames; BMP has no codes on the wire, so they are only reported locally.
    """

    NONE = 0
    INTERNAL = 1
    FLOW_CONTROL = 2
    CLOSED = 3
    REFUSED = 4
    EXHAUSTED = 5
    TRANSPORT_CLOSED = 6


class MuxframeError(Exception):
    """
    The root of every exception muxframe raises.
    """


class LocalProtocolError(MuxframeError):
    """
    The application asked for something the protocol or the current state
    does not allow.
    """


class StreamClosedError(LocalProtocolError):
    """
    An operation was attempted on a stream that has already ended.
    """


class SessionClosedError(LocalProtocolError):
    """
    The session is closing or closed, so no stream can be opened.
    """


class StreamLimitError(LocalProtocolError):
    """
    Opening another stream would exceed C{maxStreams}.
    """


class RemoteProtocolError(MuxframeError):
    """
    The peer violated the wire protocol.  C{code} is the wire error code.

    @ivar code: an L{ErrorCode}.
    @ivar hint: what the peer's bytes look like when it does not speak the
        framing at all (C{"this looks like an HTTP request; this port
        speaks MIO"}, also part of the message), else C{None}.
    """

    code = ErrorCode.INTERNAL
    hint = None

    def __init__(self, message, code=None):
        MuxframeError.__init__(self, message)
        if code is not None:
            self.code = code


class MalformedFrame(RemoteProtocolError):
    """
    Bytes that are not a valid frame of the framing in use.
    """


class FrameTooLarge(RemoteProtocolError):
    """
    A frame (or header field) longer than the receiver's limit.
    """

    code = ErrorCode.FLOW_CONTROL


class FlowControlViolation(RemoteProtocolError):
    """
    The peer sent more than its credit allows, or overflowed a window.
    """

    code = ErrorCode.FLOW_CONTROL


class FloodError(RemoteProtocolError):
    """
    The peer spent one of the connection's flood budgets (C{maxResets},
    C{maxEmptyFrames}): it resets streams or sends frames that carry
    nothing faster than any honest peer does.  The connection is closed.
    """

    code = ErrorCode.EXHAUSTED


class StreamError(MuxframeError):
    """
    Why one stream ended uncleanly: reset by the peer, reset locally, refused,
    timed out, or lost with its connection.

    @ivar code: the L{ErrorCode} (or int) involved.
    @ivar streamId: the stream's id.
    """

    def __init__(self, message, code=ErrorCode.INTERNAL, streamId=None):
        MuxframeError.__init__(self, message)
        self.code = code
        self.streamId = streamId


class StreamResetError(StreamError):
    """
    The peer reset (MIO RST) or closed (BMP close) the stream before it ended
    cleanly in both directions.
    """


class StreamAbortedError(StreamError):
    """
    This side aborted the stream (C{abortConnection}).
    """


class StreamRefusedError(StreamError):
    """
    The peer refused a stream this side opened (MIO RST with code
    C{REFUSED}), or this side refused it locally.
    """


class StreamBufferOverflow(StreamError, LocalProtocolError):
    """
    A stream's child buffered more unsent bytes than the
    C{maxStreamSendBuffer} setting allows (a limit that is off by default).
    The stream was reset (code C{EXHAUSTED}); this is the reason its child's
    C{connectionLost} receives.  C{write()} never raises it: like a TCP
    transport's, a stream's C{write()} accepts whatever it is given.
    """

    def __init__(self, message, code=ErrorCode.EXHAUSTED, streamId=None):
        StreamError.__init__(self, message, code, streamId)


class StreamTimeoutError(StreamError):
    """
    A stream timed out: a BMP frame was not acknowledged within
    C{ackTimeout}.
    """


class SessionTimeoutError(MuxframeError):
    """
    The session timed out: nothing received for C{idleTimeout}, a frame
    header left incomplete for C{headerTimeout}, or (servers) no stream and
    nothing received for C{emptyTimeout}.
    """


class MultiplexedConnectError(MuxframeError):
    """
    A L{muxframe.endpoints.MultiplexedClientEndpoint} has no multiplexed
    connection to open a stream on: it was stopped, its connection was lost
    and is not back yet, or none came up within C{connectTimeout}.

    @ivar reason: the failure behind it, if any (a L{Failure}).
    """

    def __init__(self, message, reason=None):
        MuxframeError.__init__(self, message)
        self.reason = reason


class PeerNotMultiplexingError(MultiplexedConnectError):
    """
    The peer accepted the connection but does not speak the framing: it
    closed the connection before sending a frame, or answered in another
    protocol (the message says which, e.g. "this looks like an HTTP
    response").
    """


class AuthenticationError(MultiplexedConnectError):
    """
    A client configured with a token was not accepted by the server: the
    server refused its name or token, or sent no challenge (it requires no
    token), or the connection was lost first.  The message says which.
    """
