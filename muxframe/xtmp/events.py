"""
The tunables of an XTMP session and the events its sans-IO engine reports.
"""

from muxframe.xtmp import codec

#: The states of an L{muxframe.xtmp.connection.XTMPConnection}.
HANDSHAKING, OPEN, CLOSED = "HANDSHAKING", "OPEN", "CLOSED"

#: The smallest C{maxHandshakePayload}: a ClientAuth with an Ed25519 and
#: ML-DSA-65 identity (1 + 1985 + 3373 bytes) must fit.
MIN_HANDSHAKE_PAYLOAD = 5359


class Settings:
    """
    Tunables of one XTMP session, with their defaults (docs/xtmp.md
    section 12 describes each).
    """

    heartbeatInterval = 30.0
    #: Probe this much sooner than heartbeatInterval (a server whose timers
    #: run in coarse slots probes early, so that its probe, not a client's
    #: with the same interval, starts each round).
    heartbeatLead = 0.0
    sessionTimeout = 3600.0
    handshakeTimeout = 10.0
    keyUpdateMessages = 1 << 20
    keyUpdateInterval = 3600.0
    rotationInterval = 3600.0
    maxPayload = codec.DEFAULT_MAX_PAYLOAD
    maxHandshakePayload = 16384
    maxRehandshakesPerHour = 10
    fragmentSize = 1 << 16
    maxMessageSize = 16 << 20
    maxQueuedBytes = 8 << 20
    compressThreshold = None
    requestTimeout = 30.0

    def __init__(self, **kwargs):
        for name, value in kwargs.items():
            if not hasattr(Settings, name) or name.startswith("_"):
                raise TypeError("unknown XTMP setting %r" % (name,))
            setattr(self, name, value)
        if not 0 <= self.heartbeatLead < self.heartbeatInterval:
            raise ValueError("heartbeatLead must be in 0..heartbeatInterval")
        if not 0 < self.fragmentSize <= self.maxPayload:
            raise ValueError("fragmentSize must be in 1..maxPayload")
        # Sequence numbers under one key must stay below 2**32 (they are
        # the low half of request ids): the KeyUpdate itself takes
        # sequence number keyUpdateMessages.
        if not 0 < self.keyUpdateMessages < 1 << 32:
            raise ValueError("keyUpdateMessages must be in 1..2**32-1")
        if self.maxHandshakePayload < MIN_HANDSHAKE_PAYLOAD:
            raise ValueError("maxHandshakePayload must be at least %d (an "
                             "ML-DSA-65 ClientAuth)" % (MIN_HANDSHAKE_PAYLOAD,))
        if self.maxRehandshakesPerHour is not None and \
                self.maxRehandshakesPerHour < 0:
            raise ValueError("maxRehandshakesPerHour must be >= 0 or None")


class Counters:
    """
    Per-session counters, for operators and metrics endpoints.

    C{unmatchedResponses} counts responses (RESPONSE flag) naming no
    pending request: answers to requests that timed out or were cancelled,
    or a faulty peer.  C{heartbeatsSent} counts heartbeat probes sent,
    C{heartbeatsAnswered} the peer's probes answered (the JavaScript
    client's counters of the same names).  C{controlReceived} counts the
    frames the engine acts on itself, which never reach the application
    as messages: Heartbeats, KeyUpdates and Errors (a server charges them
    to the session's rate limit).  Not Acks: a consumer sends them at the
    rate it is sent messages, and they cost little.
    """

    __slots__ = ("bytesSent", "bytesReceived", "messagesSent",
                 "messagesReceived", "duplicatesDropped", "resent",
                 "keyUpdates", "rehandshakes", "unmatchedResponses",
                 "heartbeatsSent", "heartbeatsAnswered", "controlReceived")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)

    def asDict(self):
        """
        The counters as a plain dictionary.
        """
        return {name: getattr(self, name) for name in self.__slots__}


class Event:
    """
    Base of the events L{XTMPConnection} reports.
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return "<%s %r>" % (type(self).__name__, self.__dict__)


class HandshakeCompleted(Event):
    """C{result}: the L{HandshakeResult}."""


class MessageReceived(Event):
    """C{message}: an application L{Message}."""

    __slots__ = ("message",)

    def __init__(self, message):
        self.message = message

    def __repr__(self):
        return "<MessageReceived %r>" % (self.message,)


class ResponseReceived(Event):
    """C{request}: the request token; C{message}: the response."""


class RequestFailed(Event):
    """C{request}: the token; C{code}, C{reason}: the peer's Error."""


class SubscribeReceived(Event):
    """
    C{name}: the stream; C{group}: the queue group or L{None};
    C{message}: the Subscribe (to respond to).
    """


class UnsubscribeReceived(Event):
    """C{name}: the stream; C{message}: the Unsubscribe."""


class ErrorReceived(Event):
    """C{code}, C{reason}, C{message}: an Error not answering a request."""


class DisconnectReceived(Event):
    """C{code}, C{reason}: the peer is closing the session."""
