"""
Helpers shared by the codec and engine tests.
"""

from muxframe.events import DataReceived


def splitAt(data, cuts):
    """
    Return C{data} cut at the offsets C{cuts} (any order, duplicates fine).
    """
    points = sorted(set(c for c in cuts if 0 < c < len(data)))
    pieces = []
    start = 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return [p for p in pieces if p] or [data]


def decodeAll(items, frameClass):
    """
    Join decoder items C{(frame, piece, first, last)} into whole frames.
    """
    frames = []
    parts = []
    for frame, piece, first, last in items:
        if piece is None:
            frames.append(frame)
            continue
        if first:
            parts = []
        parts.append(piece)
        if last:
            whole = frameClass.__new__(frameClass)
            for name in frameClass.__slots__:
                setattr(whole, name, getattr(frame, name))
            whole.payload = b"".join(parts)
            frames.append(whole)
    return frames


def coalesce(events):
    """
    Merge consecutive DataReceived events of one stream, so event lists
    can be compared whatever the chunking.
    """
    merged = []
    for event in events:
        if (isinstance(event, DataReceived) and merged
                and isinstance(merged[-1], DataReceived)
                and merged[-1].streamId == event.streamId):
            merged[-1] = DataReceived(event.streamId, merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged
