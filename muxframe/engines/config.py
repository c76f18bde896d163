"""
Building an engine from configuration (the server's YAML ``storage:``
section, or keyword arguments), with every key checked.

Keys (snake_case, as in the server's YAML; all optional but C{address}
for Redis):

 ========================  =========  ==========================================
 key                       default    meaning
 ========================  =========  ==========================================
 engine                    embedded   C{embedded} or C{redis}
 directory                 ./data     embedded: the data directory
 address                   (none)     redis: C{redis://[:password@]host:port/db}
 prefix                    muxframe:  redis: prepended to every key and channel
 node_id                   random     this node's id (unique among the nodes)
 device_timeout            30         s of silence before a device is offline
 max_devices               64         online devices per entity
 max_activity_ttl          60         s, the longest typing/recording TTL
 max_subscriptions         10000      awareness subscriptions per watcher
 max_watchers              100000     watchers per entity
 max_known_devices         1024       devices with a queue position per entity
                                      (one more forgets the least recently seen
                                      offline one)
 max_queues                1000000    queues kept (with records or devices); a
                                      message to an entity without one is
                                      refused while as many are kept
 retention_interval        10         s between retention passes (0: none)
 max_age                   604800     s a queued record is kept at most (null: no limit)
 max_messages              100000     records kept per queue (null: no limit)
 delete_acknowledged       true       drop records every device acknowledged
 segment_bytes             67108864   embedded: journal segment size
 max_journal_bytes         null       embedded: journal cap, oldest segments dropped
 dedup_window              100000     embedded: message ids remembered per queue
 sweep_interval            1          redis: s between presence expiry sweeps
 ========================  =========  ==========================================
"""

from muxframe.engines.errors import ConfigError
from muxframe.engines.model import QueueRetention

_NUMBER = (int, float)

#: key -> (types, check, keyword of the engine or None)
_KEYS = {
    "engine": (str, lambda v: v in ("embedded", "redis"), None),
    "directory": (str, bool, "directory"),
    "address": (str, bool, "address"),
    "prefix": (str, lambda v: True, "prefix"),
    "node_id": (str, bool, "nodeId"),
    "device_timeout": (_NUMBER, lambda v: v > 0, "deviceTimeout"),
    "max_devices": (int, lambda v: v >= 1, "maxDevices"),
    "max_activity_ttl": (int, lambda v: v >= 1, "maxActivityTtl"),
    "max_subscriptions": (int, lambda v: v >= 1, "maxSubscriptions"),
    "max_watchers": (int, lambda v: v >= 1, "maxWatchers"),
    "max_known_devices": (int, lambda v: v >= 1, "maxKnownDevices"),
    "max_queues": (int, lambda v: v >= 1, "maxQueues"),
    "retention_interval": (_NUMBER, lambda v: v >= 0, "retentionInterval"),
    "max_age": (_NUMBER + (type(None),), lambda v: v is None or v > 0, None),
    "max_messages": ((int, type(None)), lambda v: v is None or v >= 1, None),
    "delete_acknowledged": (bool, lambda v: True, None),
    "segment_bytes": (int, lambda v: 4096 <= v < 2 ** 32, "segmentBytes"),
    "max_journal_bytes": ((int, type(None)), lambda v: v is None or v > 0, "maxJournalBytes"),
    "dedup_window": (int, lambda v: v >= 1, "dedupWindow"),
    "sweep_interval": (_NUMBER, lambda v: v > 0, "sweepInterval"),
}

_EMBEDDED_ONLY = {"directory", "segment_bytes", "max_journal_bytes", "dedup_window"}
_REDIS_ONLY = {"address", "prefix", "sweep_interval"}


def engineSettings(config):
    """
    Check a configuration mapping; return C{(kind, keywordArguments)} for
    L{muxframe.engines.embedded.EmbeddedEngine} or
    L{muxframe.engines.redisengine.RedisEngine}.

    @raise ConfigError: naming the first bad or unknown key.
    """
    if not isinstance(config, dict):
        raise ConfigError("storage", "must be a mapping")
    for key, value in config.items():
        if key not in _KEYS:
            raise ConfigError(key, "unknown key")
        types, check, _ = _KEYS[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                    else (types,)):
            raise ConfigError(key, "must be a number, not a boolean")
        if not isinstance(value, types) or not check(value):
            raise ConfigError(key, "bad value %r" % (value,))
    kind = config.get("engine", "embedded")
    other = _REDIS_ONLY if kind == "embedded" else _EMBEDDED_ONLY
    for key in config:
        if key in other:
            raise ConfigError(key, "not a setting of the %s engine" % (kind,))
    if kind == "redis" and "address" not in config:
        raise ConfigError("address", "the redis engine needs an address")
    defaults = QueueRetention()
    kwargs = {"retention": QueueRetention(
        config.get("max_age", defaults.maxAge), config.get("max_messages", defaults.maxMessages),
        config.get("delete_acknowledged", defaults.deleteAcknowledged))}
    for key, value in config.items():
        keyword = _KEYS[key][2]
        if keyword is not None:
            kwargs[keyword] = float(value) if isinstance(value, float) else value
    if kind == "embedded":
        kwargs.setdefault("directory", "data")
    return kind, kwargs


def makeEngine(config, reactor=None, clock=None):
    """
    Build (not start) the engine a configuration mapping describes.
    """
    kind, kwargs = engineSettings(config)
    if kind == "redis":
        from muxframe.engines.redisengine import RedisEngine
        address = kwargs.pop("address")
        return RedisEngine(address, reactor=reactor, clock=clock, **kwargs)
    from muxframe.engines.embedded import EmbeddedEngine
    directory = kwargs.pop("directory")
    return EmbeddedEngine(directory, reactor=reactor, clock=clock, **kwargs)
