"""
What the framings' decoders share: streaming a frame's payload out in
pieces as its bytes arrive, and joining pieces back into whole frames.

A decoder appends C{(frame, piece, first, last)} items to a list: a frame
without payload once, with C{piece=None}; a payload as one or more pieces,
in order.  Nothing here buffers a payload.
"""


class PayloadStreamer:
    """
    Base of the incremental decoders: the payload half of the state.
    """

    __slots__ = ("_frame", "_remaining")

    def __init__(self):
        self._frame = None
        self._remaining = 0

    def _expect(self, frame, size):
        """
        The next C{size} bytes are C{frame}'s payload.
        """
        self._frame = frame
        self._remaining = size

    def payloadWithin(self, size):
        """
        Return the data frame whose payload the next C{size} bytes lie
        wholly inside of (past its first byte, short of its last), or
        C{None}.  Nothing is taken: see L{skipPayload}.
        """
        frame = self._frame
        if (frame is None or not size or size >= self._remaining
                or self._remaining == frame.size or not self._isData()):
            return None
        return frame

    def skipPayload(self, size):
        """
        Take C{size} bytes of the payload L{payloadWithin} named.
        """
        self._remaining -= size

    def _isData(self):
        return True

    def _streamPayload(self, data, pos, end, append):
        """
        Take what C{data[pos:end]} holds of the current payload; return the
        new position.  A piece that is all of C{data} is not copied.
        """
        frame = self._frame
        remaining = self._remaining
        take = end - pos
        if take >= remaining:
            take = remaining
        piece = data if (pos == 0 and take == end) else data[pos:pos + take]
        remaining -= take
        self._remaining = remaining
        first = remaining + take == frame.size
        if remaining == 0:
            self._frame = None
            append((frame, piece, first, True))
        else:
            append((frame, piece, first, False))
        return pos + take


def joinPieces(items, wholeFrame):
    """
    Turn decoder items into whole frames: C{wholeFrame(frame, payload)}
    builds one from a header frame and its joined payload (C{None} for
    frames without payload).
    """
    frames = []
    parts = []
    for frame, piece, first, last in items:
        if piece is None:
            frames.append(wholeFrame(frame, None))
            continue
        if first:
            parts = []
        parts.append(piece)
        if last:
            frames.append(wholeFrame(frame, b"".join(parts)))
    return frames
