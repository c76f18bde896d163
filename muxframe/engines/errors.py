"""
The engines' exceptions, all under L{muxframe.errors.MuxframeError}.

L{EngineUsageError}s are local errors (the caller asked for something the
engine does not allow: bad names, limits, unknown states).  L{StorageError}s
report what was found on disk or in Redis (a corrupt record, a manifest of
another format).  L{RecoveryImpossible} is the answer to a history recovery
that cannot be served, with the reason as a L{RecoveryFailure} code.
"""

from enum import IntEnum

from muxframe.errors import DescribedCode, LocalProtocolError, MuxframeError


class EngineError(MuxframeError):
    """
    The root of every engine exception.
    """


class EngineUsageError(EngineError, LocalProtocolError):
    """
    The caller misused an engine API: nothing was stored.
    """


class InvalidName(EngineUsageError):
    """
    An entity, device, channel, subject or message id that is empty, too
    long, or contains a character the engines reserve (NUL, unit separator).
    """


class LimitExceeded(EngineUsageError):
    """
    The operation would take a bounded buffer past its limit (pending
    unsynced bytes, a payload size, the out-of-order acknowledgement window,
    a fetch size).  C{limit} names the setting.
    """

    def __init__(self, message, limit=None):
        EngineUsageError.__init__(self, message)
        self.limit = limit


class EngineStopped(EngineError):
    """
    The engine is stopped (or was never started): nothing can be stored.
    """


class SubscriptionError(EngineUsageError):
    """
    A presence subscription transition the state table does not allow
    (answering a request that was never made, approving oneself).
    """


class StorageError(EngineError):
    """
    Stored state that cannot be used: a corrupt record in a place where
    truncation would lose acknowledged data, a manifest of an unknown
    format, a Redis reply of the wrong shape.
    """


class StorageUnavailable(StorageError):
    """
    The storage cannot be reached now: Redis is down, unreachable, still
    loading its data, or not answering.  A command refused at once was not
    sent; one in flight when the connection went may or may not have been
    carried out (appends and receipts are deduplicated, so a retry is
    safe).  The engine reconnects by itself: retry later.

    @ivar address: C{host:port} of the storage.
    @ivar since: when the outage began (the engine clock's seconds), or
        L{None} when only this command met it.
    """

    def __init__(self, message, address=None, since=None):
        StorageError.__init__(self, message)
        self.address = address
        self.since = since


class CorruptRecord(StorageError):
    """
    Bytes that are not a valid framed record (bad length, CRC mismatch,
    truncated body, unknown record type).  C{position} is where it starts.
    """

    def __init__(self, message, position=None):
        StorageError.__init__(self, message)
        self.position = position


class ConfigError(EngineUsageError):
    """
    An engine configuration key with a bad value, or an unknown key.
    C{key} names it.
    """

    def __init__(self, key, reason):
        EngineUsageError.__init__(self, "engine setting %r: %s" % (key, reason))
        self.key = key
        self.reason = reason


class RecoveryFailure(DescribedCode, IntEnum):
    """
    Why a history recovery cannot be served.
    """

    #: The channel's epoch is not the one the subscriber knew: its history
    #: was lost (an embedded engine restarted, a Redis key expired).
    EPOCH_CHANGED = 1
    #: The subscriber's offset is older than the oldest publication kept.
    TRIMMED = 2
    #: The subscriber's offset is beyond the channel's last offset.
    FUTURE_OFFSET = 3
    #: The channel keeps no history.
    NO_HISTORY = 4
    #: More publications were missed than one recovery may return.
    TOO_MANY = 5


class RecoveryImpossible(EngineError):
    """
    History recovery cannot give the subscriber what it missed; it must
    resynchronise some other way.  C{reason} is a L{RecoveryFailure};
    C{position} the channel's current L{StreamPosition}.
    """

    def __init__(self, reason, position=None):
        EngineError.__init__(
            self, "recovery impossible: %s" % (RecoveryFailure.describe(reason),))
        self.reason = reason
        self.position = position


def firstError(failure):
    """
    The failure inside C{failure} if it is a L{FirstError} (what
    C{gatherResults(..., consumeErrors=True)} fails with), so a caller
    sees the engine's own error (L{StorageUnavailable}, say); C{failure}
    otherwise.  An errback.
    """
    from twisted.internet.defer import FirstError
    if failure.check(FirstError):
        return failure.value.subFailure
    return failure
