"""
Helpers shared by the codec and engine tests.
"""

from muxframe.events import DataReceived
from muxframe.pieces import joinPieces


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
    def whole(frame, payload):
        copy = frameClass.__new__(frameClass)
        for name in frameClass.__slots__:
            setattr(copy, name, getattr(frame, name))
        if payload is not None:
            copy.payload = payload
        return copy
    return joinPieces(items, whole)


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


def chunkedEvents(makeEngine, wire, cuts):
    """
    Feed C{wire} to one fresh engine whole and to another cut at C{cuts};
    return both event lists, coalesced, for comparison.
    """
    whole = makeEngine().receiveData(wire)
    split = makeEngine()
    events = []
    for chunk in splitAt(wire, cuts):
        events.extend(split.receiveData(chunk))
    return coalesce(whole), coalesce(events)


def captureLogs(testCase):
    """
    Collect every log event published while C{testCase} runs; return the
    list they are appended to.
    """
    from twisted.logger import globalLogPublisher
    events = []
    globalLogPublisher.addObserver(events.append)
    testCase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def logLines(events, level=None):
    """
    Return the formatted text of C{events} (only those at C{level}, a
    level name such as C{"warn"}, if given).
    """
    from twisted.logger import formatEvent
    return [formatEvent(e) for e in events
            if level is None or (e.get("log_level") is not None
                                 and e["log_level"].name == level)]


def snapshot(value, _depth=0):
    """
    Return a comparable copy of an engine's whole state (every attribute,
    recursively; settings left out): two engines that went different ways
    compare equal only if they ended in the same state.
    """
    if _depth > 8:
        raise ValueError("snapshot too deep at %r" % (value,))
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "deque":
        return [snapshot(item, _depth + 1) for item in value]
    if isinstance(value, dict):
        return [(snapshot(key, _depth + 1), snapshot(item, _depth + 1))
                for key, item in value.items()]
    if isinstance(value, (set, frozenset)):
        return sorted(repr(item) for item in value)
    names = []
    for klass in type(value).__mro__:
        names.extend(getattr(klass, "__slots__", ()))
    names.extend(getattr(value, "__dict__", {}))
    return (type(value).__name__, [
        (name, snapshot(getattr(value, name), _depth + 1))
        for name in sorted(set(names))
        if name != "settings" and hasattr(value, name)])


def againstReceiveData(test, server, fastPath, read, now):
    """
    Run the engine fast path named C{fastPath} (C{"receiveWhole"},
    C{"receiveCrossing"}) and L{receiveData} on copies of C{server} with
    the same C{read}: if the fast path returns C{None}, assert its copy is
    untouched and return C{(None, None)}; otherwise assert both copies end
    in the same state and return C{(its result, receiveData's events)}.
    """
    import copy
    fast, slow = copy.deepcopy(server), copy.deepcopy(server)
    before = snapshot(fast)
    result = getattr(fast, fastPath)(read, now)
    if result is None:
        test.assertEqual(snapshot(fast), before)
        return None, None
    events = slow.receiveData(read, now)
    test.assertEqual(snapshot(fast), snapshot(slow))
    return result, events


def assertSameSendState(test, engine, reference):
    """
    Assert that XTMP engine C{engine} has sent what C{reference} has, as
    its counters, send times and send key's position show.
    """
    for name in ("messagesSent", "bytesSent", "keyUpdates"):
        test.assertEqual(getattr(engine.counters, name),
                         getattr(reference.counters, name), name)
    test.assertEqual((engine.lastSent, engine.lastActivity),
                     (reference.lastSent, reference.lastActivity))
    test.assertEqual((engine.sendKey.epoch, engine.sendKey.sequence),
                     (reference.sendKey.epoch, reference.sendKey.sequence))
