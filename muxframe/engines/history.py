"""
Channel history and the recovery decision.  No I/O; time is passed in
(Unix ms), epochs come from a given factory.

Rules:

 - A channel's publications get contiguous offsets from 1 within an
   epoch.  The epoch is a new random string whenever the channel's history
   starts afresh (first publication, engine restart for a memory history,
   the channel dropped after its last publication expired), so offsets of
   different epochs are never compared.
 - A channel keeps its last C{size} publications, none older than C{ttl}
   seconds; a channel left with none for C{ttl} seconds is dropped (its
   position is forgotten: a later subscriber sees a new epoch).  A channel
   whose position was asked but which was never published keeps its epoch
   for L{PLACEHOLDER_TTL} seconds.
 - Recovery from L{StreamPosition} C{since} (L{recoveryDecision}): a
   different epoch is EPOCH_CHANGED; an offset past the last is
   FUTURE_OFFSET; the last offset itself recovers nothing, successfully;
   an offset before the first kept minus one is TRIMMED; more than
   C{limit} missed is TOO_MANY; otherwise every publication after C{since},
   oldest first.
"""

from collections import deque

from muxframe.engines.errors import (
    EngineUsageError, LimitExceeded, RecoveryFailure, RecoveryImpossible)
from muxframe.engines.model import (
    HistoryOptions, Publication, Recovered, StreamPosition, checkName)


def recoveryDecision(epoch, firstOffset, lastOffset, since, limit):
    """
    Decide a recovery for a channel whose history holds C{firstOffset} to
    C{lastOffset} of C{epoch} (C{firstOffset} > C{lastOffset}: none kept).

    @return: the offset to recover from (exclusive: C{since.offset}), or
        raise.
    @raise RecoveryImpossible: naming why.
    """
    position = StreamPosition(lastOffset, epoch)
    if since.epoch != epoch:
        raise RecoveryImpossible(RecoveryFailure.EPOCH_CHANGED, position)
    if since.offset > lastOffset:
        raise RecoveryImpossible(RecoveryFailure.FUTURE_OFFSET, position)
    if since.offset == lastOffset:
        return since.offset
    if since.offset + 1 < firstOffset:
        raise RecoveryImpossible(RecoveryFailure.TRIMMED, position)
    if limit is not None and lastOffset - since.offset > limit:
        raise RecoveryImpossible(RecoveryFailure.TOO_MANY, position)
    return since.offset


#: How long a channel asked for its position but never published keeps
#: its epoch (seconds).
PLACEHOLDER_TTL = 300.0


class _Channel:
    __slots__ = ("epoch", "nextOffset", "kept", "options", "bytes", "touched")

    def __init__(self, epoch, options, now):
        self.epoch = epoch
        self.nextOffset = 1
        self.kept = deque()
        self.options = options
        self.bytes = 0
        self.touched = now


def checkOptions(options):
    """
    Return L{HistoryOptions} C{options} if usable.
    """
    if not isinstance(options, HistoryOptions):
        raise EngineUsageError("history options must be HistoryOptions, not %r" % (options,))
    if not (isinstance(options.size, int) and options.size >= 1) or not options.ttl > 0:
        raise EngineUsageError("history size must be >= 1 and ttl > 0: %r" % (options,))
    return options


class HistoryTable:
    """
    The history of every channel, in memory.
    """

    def __init__(self, newEpoch, maxChannels=100000, maxBytes=256 * 1024 * 1024):
        self._newEpoch = newEpoch
        self.maxChannels = maxChannels
        self.maxBytes = maxBytes
        self._channels = {}
        self._bytes = 0

    def _trim(self, name, channel, now):
        ttl = channel.options.ttl if channel.options is not None else PLACEHOLDER_TTL
        cutoff = now - int(ttl * 1000)
        kept = channel.kept
        size = channel.options.size if channel.options is not None else 0
        while kept and (len(kept) > size or kept[0].timestamp < cutoff):
            dropped = kept.popleft()
            channel.bytes -= len(dropped.payload)
            self._bytes -= len(dropped.payload)
        if not kept and channel.touched < cutoff:
            del self._channels[name]

    def add(self, channel, payload, options, now):
        """
        Append C{payload}; return its L{Publication}.

        @raise LimitExceeded: past C{maxChannels} or C{maxBytes} kept.
        """
        checkName(channel, "channel")
        checkOptions(options)
        state = self._channels.get(channel)
        if state is not None:
            self._trim(channel, state, now)
            state = self._channels.get(channel)
        if state is None:
            if len(self._channels) >= self.maxChannels:
                raise LimitExceeded("more than %d channels keep history" % (self.maxChannels,),
                                    "maxChannels")
            state = self._channels[channel] = _Channel(self._newEpoch(), options, now)
        if self._bytes + len(payload) > self.maxBytes:
            raise LimitExceeded("history would exceed %d bytes" % (self.maxBytes,), "maxBytes")
        state.options = options
        state.touched = now
        publication = Publication(channel, state.nextOffset, state.epoch, now, bytes(payload))
        state.nextOffset += 1
        state.kept.append(publication)
        state.bytes += len(payload)
        self._bytes += len(payload)
        self._trim(channel, state, now)
        return publication

    def _state(self, channel, now):
        state = self._channels.get(channel)
        if state is not None:
            self._trim(channel, state, now)
            state = self._channels.get(channel)
        return state

    def position(self, channel, now):
        """
        The channel's L{StreamPosition}; a channel without history gets a
        new epoch (and keeps it) so a subscriber can start from it.
        """
        checkName(channel, "channel")
        state = self._state(channel, now)
        if state is None:
            if len(self._channels) >= self.maxChannels:
                raise LimitExceeded("more than %d channels keep history" % (self.maxChannels,),
                                    "maxChannels")
            # Remembered with offset 0 until it is published or expires.
            state = self._channels[channel] = _Channel(self._newEpoch(), None, now)
        return StreamPosition(state.nextOffset - 1, state.epoch)

    def recover(self, channel, since, now, limit=None):
        """
        The publications after C{since}, or raise L{RecoveryImpossible}.
        """
        checkName(channel, "channel")
        state = self._state(channel, now)
        if state is None:
            raise RecoveryImpossible(RecoveryFailure.EPOCH_CHANGED, None)
        if limit is None and state.options is not None:
            limit = state.options.maxRecover
        first = state.kept[0].offset if state.kept else state.nextOffset
        after = recoveryDecision(state.epoch, first, state.nextOffset - 1, since, limit)
        publications = tuple(p for p in state.kept if p.offset > after)
        return Recovered(publications, StreamPosition(state.nextOffset - 1, state.epoch))

    def recent(self, channel, limit, now):
        """
        The last C{limit} publications and the position.
        """
        checkName(channel, "channel")
        state = self._state(channel, now)
        if state is None:
            return Recovered((), self.position(channel, now))
        publications = tuple(state.kept)[-limit:] if limit > 0 else ()
        return Recovered(publications, StreamPosition(state.nextOffset - 1, state.epoch))
