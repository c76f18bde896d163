"""
What the Redis engine puts in Redis besides queue records: presence
notices (JSON, published on C{P n:<recipient>}), device and activity
states (JSON in hashes, readable by the Lua scripts' cjson), and broker
frames.  No I/O.

Broker frame: origin node id (u16 length + UTF-8), sequence u64 (per
origin, for dropping the extra copies Redis sends when several patterns of
one node match), payload.
"""

import json
import struct

from muxframe.engines.errors import StorageError
from muxframe.engines.model import (
    Activity, Awareness, DevicePresence, Location, LocationSharing, NoticeKind,
    PresenceNotice, Status, SubscriptionState, Visibility)

_FRAME_HEAD = struct.Struct(">H")
_SEQ = struct.Struct(">Q")


def encodeFrame(origin, seq, payload):
    """
    A broker frame.
    """
    raw = origin.encode("utf-8")
    return _FRAME_HEAD.pack(len(raw)) + raw + _SEQ.pack(seq) + payload


def decodeFrame(data):
    """
    Return C{(origin, seq, payload)} of a broker frame.
    """
    try:
        (length,) = _FRAME_HEAD.unpack_from(data, 0)
        origin = data[2:2 + length].decode("utf-8")
        (seq,) = _SEQ.unpack_from(data, 2 + length)
    except (struct.error, UnicodeDecodeError):
        raise StorageError("malformed broker frame")
    return origin, seq, data[10 + length:]


def _awareness(a):
    return {"e": a.entity, "d": a.device, "s": int(a.status), "t": a.timestamp, "v": a.version,
            "x": a.details, "ls": int(a.locationSharing), "la": a.latitude, "lo": a.longitude,
            "ttl": a.ttl, "vis": int(a.visibility), "to": a.to}


def _fromAwareness(d):
    return Awareness(d["e"], d["d"], Status(d["s"]), d["t"], d["v"], d["x"],
                     LocationSharing(d["ls"]), d["la"], d["lo"], d["ttl"], Visibility(d["vis"]),
                     d["to"])


def encodeNotice(notice):
    """
    A L{PresenceNotice} as JSON bytes.
    """
    return json.dumps({
        "k": int(notice.kind), "r": notice.recipient, "e": notice.entity,
        "a": _awareness(notice.awareness) if notice.awareness is not None else None,
        "s": int(notice.subscription), "t": notice.timestamp}).encode("utf-8")


def decodeNotice(data):
    """
    The L{PresenceNotice} of JSON bytes.
    """
    try:
        d = json.loads(data)
        return PresenceNotice(NoticeKind(d["k"]), d["r"], d["e"],
                              _fromAwareness(d["a"]) if d["a"] is not None else None,
                              SubscriptionState(d["s"]), d["t"])
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError("malformed presence notice: %s" % (e,))


def encodeDevicePatch(status=None, details=None, node=None, location=None):
    """
    The JSON patch a presence script applies to a device's state: only the
    fields given.
    """
    patch = {}
    if status is not None:
        patch["s"] = int(status)
    if details is not None:
        patch["d"] = details
    if node is not None:
        patch["n"] = node
    if location is not None:
        patch["la"], patch["lo"], patch["sh"] = (location.latitude, location.longitude,
                                                 int(location.sharing))
    return json.dumps(patch)


def decodeDevice(device, data, lastSeen):
    """
    The L{DevicePresence} of a device's stored JSON.
    """
    try:
        d = json.loads(data)
        location = None
        if "la" in d:
            location = Location(float(d["la"]), float(d["lo"]), LocationSharing(d["sh"]))
        return DevicePresence(device, Status(d["s"]), d["n"], int(d["c"]), lastSeen,
                              d.get("d", ""), location)
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError("malformed device state of %r: %s" % (device, e))


def encodeActivity(status, expiresAt, to):
    """
    An activity's JSON.
    """
    return json.dumps({"s": int(status), "x": expiresAt, "to": to})


def decodeActivity(device, data):
    """
    The L{Activity} of stored JSON.
    """
    try:
        d = json.loads(data)
        return Activity(device, Status(d["s"]), int(d["x"]), d["to"])
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError("malformed activity of %r: %s" % (device, e))


def pairs(flat):
    """
    A dict of a flat Redis reply C{[k1, v1, k2, v2, ...]}, keys decoded.
    """
    return {flat[i].decode("utf-8"): flat[i + 1] for i in range(0, len(flat), 2)}
