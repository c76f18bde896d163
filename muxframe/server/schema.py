"""
The XTMP server's settings: every key, its default, unit and meaning
(L{SCHEMA}), and the design documents' own names, mapped (L{ALIASES})
or refused with a reason (L{IGNORED}).  L{muxframe.server.config}
reads files and options against it.

Rules (applied by L{muxframe.server.config}):

  - The file is a mapping of sections to mappings of keys, plus the
    mappings C{handlers}, C{permissions} and C{history}.  An unknown section or key,
    or a bad value, is a L{ConfigError} naming the dotted key.
  - A key of the design documents (their "Configuration"
    section, verbatim in C{tests/test_server_config.py}) that means one of our settings is an I{alias}: its
    value (converted where needed) sets that setting.  Two keys setting
    the same setting to different values is an error naming both.
  - A key of the design documents that has no meaning here is
    I{ignored}: accepted, not used, and reported (the server logs each
    with its reason at start).
  - Relative paths in a file are relative to the file's directory.
  - Command-line values win over the file.

Nothing here imports Twisted.
"""

from muxframe.xtmp.codec import Cipher

CIPHER_NAMES = {"aes256gcm": Cipher.AES_256_GCM,
                "chacha20poly1305": Cipher.CHACHA20_POLY1305,
                "none": Cipher.NONE}


# -- value parsers: each returns the value or raises ValueError ------------

def _integer(low=None, high=None):
    def parse(value):
        if isinstance(value, bool):
            raise ValueError("expected an integer, got %r" % (value,))
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text, 0)
            except ValueError:
                try:
                    # ("010": ten, as an operator means it, not an error.)
                    value = int(text, 10)
                except ValueError:
                    raise ValueError("expected an integer, got %r"
                                     % (value,)) from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError("expected an integer, got %r" % (value,))
        if low is not None and value < low:
            raise ValueError("must be at least %d, not %d" % (low, value))
        if high is not None and value > high:
            raise ValueError("must be at most %d, not %d" % (high, value))
        return value
    parse.kind = "integer"
    return parse


def _number(low=0.0, positive=False):
    def parse(value):
        if isinstance(value, bool):
            raise ValueError("expected a number, got %r" % (value,))
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError("expected a number, got %r"
                                 % (value,)) from None
        if not isinstance(value, (int, float)) or value != value:
            raise ValueError("expected a number, got %r" % (value,))
        value = float(value)
        if positive and value <= 0:
            raise ValueError("must be positive, not %g" % (value,))
        if value < low:
            raise ValueError("must be at least %g, not %g" % (low, value))
        return value
    parse.kind = "number"
    return parse


def _atMost(parse, high):
    """
    C{parse}, then no more than C{high} (a number: infinity is refused).
    """
    def atMost(value):
        value = parse(value)
        if value > high:
            raise ValueError("must be at most %g, not %g" % (high, value))
        return value
    atMost.kind = parse.kind
    return atMost


def _boolean(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
            "yes", "true", "on", "1", "no", "false", "off", "0"):
        return value.lower() in ("yes", "true", "on", "1")
    raise ValueError("expected true or false, got %r" % (value,))


_boolean.kind = "boolean"


def _text(value):
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string, got %r" % (value,))
    return value


_text.kind = "string"


def _path(value):
    return _text(value)


_path.kind = "path"


def _optional(parse):
    def wrapped(value):
        if value is None or (isinstance(value, str)
                             and value.lower() in ("none", "null", "")):
            return None
        return parse(value)
    wrapped.kind = parse.kind + " or null"
    return wrapped


def _ciphers(value):
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise ValueError("expected a list of cipher names")
    out = []
    for name in value:
        if name not in CIPHER_NAMES:
            raise ValueError("unknown cipher %r (choose from %s)"
                             % (name, ", ".join(sorted(CIPHER_NAMES))))
        out.append(name)
    return out


_ciphers.kind = "list of aes256gcm, chacha20poly1305, none"


def _endpoints(value):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v.strip() for v in value):
        raise ValueError("expected an endpoint string or a list of them, "
                         "got %r" % (value,))
    if len(set(value)) != len(value):
        raise ValueError("an endpoint is listed twice: %r" % (value,))
    return list(value)


_endpoints.kind = "endpoint string or list"


def _origins(value):
    # muxframe.web.origins holds the rules (and imports no Twisted).
    from muxframe.web.origins import OriginPolicy
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str)
                                              for v in value):
        raise ValueError("expected a list of origins, got %r" % (value,))
    return list(OriginPolicy(value).allowed)


_origins.kind = "list of origins"


def _choice(*choices):
    def parse(value):
        if value not in choices:
            raise ValueError("expected one of %s, not %r"
                             % (", ".join(choices), value))
        return value
    parse.kind = " or ".join(choices)
    return parse


def _prefix(value):
    if not isinstance(value, str):
        raise ValueError("expected a string, got %r" % (value,))
    return value


_prefix.kind = "string"


def _exactly(expected):
    def parse(value):
        if value != expected:
            raise ValueError("only %r is supported, not %r"
                             % (expected, value))
        return value
    parse.kind = "exactly %r" % (expected,)
    return parse


class Key:
    """
    One setting: dotted C{path}, value C{parse}r, C{default}, C{unit} and
    C{doc}; C{option} is its command-line name (L{None}: file only).
    """

    __slots__ = ("path", "parse", "default", "unit", "doc", "option")

    def __init__(self, path, parse, default, unit, doc, option=True):
        self.path = path
        self.parse = parse
        self.default = default
        self.unit = unit
        self.doc = doc
        if option is True:
            option = path.split(".", 1)[1].replace("_", "-")
        self.option = option


_seconds, _count, _bytes = "seconds", "count", "bytes"
MiB = 1 << 20

SCHEMA = [Key(*entry) for entry in [
    # server
    ("server.endpoint", _endpoints, ["tcp:8090:interface=127.0.0.1"],
     "endpoints", "Where to listen: a Twisted server endpoint string (tcp:, "
     "ssl:, unix:, ws:tcp:..., mio:tcp:... where each stream is a "
     "session), or a list of them to listen on all at once (--endpoint "
     "repeated)."),
    ("server.allowed_origins", _origins, [], "list",
     "Browser origins allowed on ws:/wss: endpoints that do not list their "
     "own (origins=): scheme://host[:port], scheme://*.domain, or *; pages "
     "served by the endpoint itself are always allowed."),
    ("server.identity", _optional(_path), None, "path",
     "The server's Identity PEM file (required)."),
    ("server.identity_password_file", _optional(_path), None, "path",
     "A file holding the identity PEM's password."),
    ("server.identity_password_env", _optional(_text), None, "name",
     "An environment variable holding the identity PEM's password."),
    ("server.authorized_keys", _optional(_path), None, "path",
     "Public keys accepted (PEM blocks, 'name: NAME' lines naming them); "
     "reloaded on SIGHUP."),
    ("server.tokens_file", _optional(_path), None, "path",
     "Bearer tokens accepted: lines 'NAME SHA256HEX' (the SHA-256 of the "
     "token); reloaded on SIGHUP."),
    ("server.allow_anonymous", _boolean, False, "boolean",
     "Accept clients presenting neither key nor token."),
    ("server.allow_plaintext", _boolean, False, "boolean",
     "Allow sessions without XTMP encryption (cipher none: only inside "
     "TLS)."),
    ("server.ciphers", _ciphers, ["aes256gcm", "chacha20poly1305"], "list",
     "Ciphers accepted; the client's preference among them wins."),
    ("server.max_connections", _integer(0), 10000, _count,
     "Live connections at most (0: no limit); more are refused with "
     "TOO_MANY_CONNECTIONS."),
    ("server.max_connections_per_client", _integer(0), 10, _count,
     "Live connections per source address at most (0: no limit)."),
    ("server.max_handshakes", _integer(1), 256, _count,
     "Handshakes in progress at most; a ClientHello arriving with more in "
     "progress is refused with BUSY."),
    ("server.handshake_rate", _number(), 20.0, "per second",
     "Handshakes (new connections) per second per source address (token "
     "bucket, a token taken as each connection arrives; 0: no limit); more "
     "are refused with RATE_LIMITED."),
    ("server.handshake_burst", _integer(1), 40, _count,
     "Bucket size of handshake_rate."),
    ("server.accepts_per_turn", _integer(0), 4, _count,
     "New connections accepted per reactor turn at most (TCP, TLS and UNIX "
     "listeners; 0: Twisted's own, which grows without bound under a "
     "flood); more wait in the listen backlog, so a connection flood does "
     "not hold up established sessions."),
    ("server.handshake_budget", _number(), 0.0005, _seconds,
     "Handshake work (key exchange, signatures) done per reactor turn at "
     "most (at least one step; a ClientHello is two: key agreement, then "
     "answer), so a burst of handshakes does not hold up established "
     "sessions (0: each as its bytes arrive, a hello in one step)."),
    ("server.handshake_timeout", _number(positive=True), 10.0, _seconds,
     "A handshake not done by then is closed with TIMEOUT."),
    ("server.drain_timeout", _number(), 10.0, _seconds,
     "On SIGTERM, how long sessions get to finish before they are cut."),
    ("server.tcp_keepalive", _boolean, False, "boolean",
     "Set SO_KEEPALIVE on accepted TCP connections."),
    ("server.tcp_nodelay", _boolean, True, "boolean",
     "Set TCP_NODELAY on accepted TCP connections (no Nagle delay for "
     "small messages)."),
    ("server.max_resumable_sessions", _integer(0), 10000, _count,
     "Lost sessions whose state is kept for resumption."),
    ("server.gc_threshold", _integer(0), 10000, _count,
     "Under the twistd role, once started: objects made at start-up are "
     "frozen out of the cyclic garbage collector's passes (gc.freeze) and "
     "its youngest generation runs every this many net allocations "
     "(Python's default is 700; 0 keeps Python's settings)."),
    ("server.timer_resolution", _number(), 1.0, _seconds,
     "Session timers (heartbeats, timeouts) run at boundaries this far "
     "apart, all due ones together (0: each on its own); at most 1/32 "
     "of heartbeat_interval is used.  Idle sessions are probed one slot "
     "before heartbeat_interval, so the server's probe starts each round "
     "and a slot's probes go out together."),
    # xtmp_protocol
    ("xtmp_protocol.version", _exactly(1), 1, "-",
     "The XTMP version (only 1).", "xtmp-version"),
    ("xtmp_protocol.magic_bytes", _exactly("XTMP"), "XTMP", "-",
     "The header magic (only XTMP)."),
    ("xtmp_protocol.default_encryption", _optional(_ciphers), None, "cipher",
     "Puts this cipher first in server.ciphers (and enables it)."),
    ("xtmp_protocol.session_timeout", _number(positive=True), 3600.0,
     _seconds, "A session without application messages this long is "
     "closed with IDLE_TIMEOUT; lost sessions stay resumable this long."),
    ("xtmp_protocol.heartbeat_interval", _number(positive=True), 30.0,
     _seconds, "Heartbeat when idle this long; a peer silent for two "
     "intervals is gone."),
    ("xtmp_protocol.max_payload_size", _integer(1), 16 * MiB, _bytes,
     "Largest message (reassembled, decompressed)."),
    ("xtmp_protocol.max_frame_size", _integer(1024), MiB, _bytes,
     "Largest single frame's payload on the wire."),
    ("xtmp_protocol.fragment_size", _integer(1), 65536, _bytes,
     "Messages longer than this are sent in fragments."),
    ("xtmp_protocol.key_update_messages", _integer(1, (1 << 32) - 1),
     1 << 20, _count, "KeyUpdate after this many messages under one key."),
    ("xtmp_protocol.key_update_interval", _number(positive=True), 3600.0,
     _seconds, "KeyUpdate of the server's sending key after this long."),
    ("xtmp_protocol.max_queued_bytes", _integer(1024), 8 * MiB, _bytes,
     "Per-session send buffer (queued + unacknowledged) at most."),
    ("xtmp_protocol.request_timeout", _number(positive=True), 30.0,
     _seconds, "Requests the server sends (and routes between sessions) "
     "wait this long for a response."),
    ("xtmp_protocol.compress_threshold", _optional(_integer(1)), None,
     _bytes, "Compress messages at least this long (null: only when the "
     "sender asks)."),
    # security
    ("security.max_failed_attempts", _integer(0), 3, _count,
     "Failed authentications (per client key and per source address) "
     "that lock it out (0: no lockout)."),
    ("security.failure_window", _number(positive=True), 300.0, _seconds,
     "Failures further apart than this do not add up."),
    ("security.lockout_time", _number(positive=True), 60.0, _seconds,
     "First lockout; each further lockout doubles it."),
    ("security.max_lockout_time", _number(positive=True), 3600.0, _seconds,
     "Longest lockout; a key quiet this long after its lockout is "
     "forgotten."),
    ("security.lockout_keys", _boolean, True, "boolean",
     "Lock out client keys too, not only addresses (someone who can "
     "reach the server could lock a key out by failing with it)."),
    # router
    ("router.threads", _integer(1, 512), 8, _count,
     "Threads for blocking handlers."),
    ("router.concurrency", _integer(1), 100, _count,
     "Default per-type cap on messages being handled at once."),
    ("router.queue", _integer(0), 1000, _count,
     "Default per-type queue of messages waiting at the cap; beyond it, "
     "Error BUSY."),
    ("message_routing.wallet_handler_threads", _optional(_integer(1)), None,
     _count, "Concurrency cap (threads, when blocking) of handlers for "
     "0x10-0x13."),
    ("message_routing.bundle_handler_threads", _optional(_integer(1)), None,
     _count, "The same for 0x20-0x23."),
    ("message_routing.registry_handler_threads", _optional(_integer(1)),
     None, _count, "The same for 0x30-0x32."),
    ("message_routing.stream_handler_threads", _optional(_integer(1)), None,
     _count, "The same for 0x40-0x42."),
    # broker
    ("broker.enabled", _boolean, True, "boolean",
     "Subjects, streams and request/reply between sessions; false refuses "
     "them with PERMISSION_DENIED.", "broker"),
    ("broker.max_subscriptions", _integer(1), 1024, _count,
     "Subscriptions per session at most; more are refused with BUSY."),
    ("broker.max_pending", _integer(1024), 4 * MiB, _bytes,
     "A subscriber whose outbound queue would pass this is a slow "
     "consumer: disconnected with SLOW_CONSUMER."),
    ("broker.write_deadline", _number(positive=True), 10.0, _seconds,
     "A subscriber whose connection accepted nothing for this long while "
     "messages wait is a slow consumer."),
    ("broker.cache_size", _integer(0), 1024, _count,
     "Subjects whose subscriber lists are cached."),
    # limits (per session)
    ("limits.messages_per_second", _number(), 1000.0, "per second",
     "Messages a session may send per second (token bucket; 0: no "
     "limit).  Heartbeats, KeyUpdates, Errors, responses to no "
     "request and duplicates take a token each too."),
    ("limits.message_burst", _integer(1), 2000, _count,
     "Bucket size of messages_per_second."),
    ("limits.bytes_per_second", _number(), 8.0 * MiB, "bytes per second",
     "Payload bytes a session may send per second (0: no limit)."),
    ("limits.byte_burst", _integer(1), 16 * MiB, _bytes,
     "Bucket size of bytes_per_second."),
    # admin (operator surfaces: docs/operations.md)
    ("admin.endpoint", _optional(_text), None, "endpoint",
     "Where the admin HTTP service (health, metrics, the admin API) "
     "listens, e.g. tcp:8080:interface=127.0.0.1 or unix:/run/xtmp.sock "
     "(null: off; a unix: socket is mode 0600 unless it sets mode=, "
     "in octal).", "admin"),
    ("admin.token_file", _optional(_path), None, "path",
     "A file holding the admin API's bearer token (required unless the "
     "admin endpoint is a unix: socket); reloaded on SIGHUP.",
     "admin-token-file"),
    ("admin.read_token_file", _optional(_path), None, "path",
     "A file holding a second bearer token that may only read (GET and "
     "HEAD: health, metrics, stats, sessions), for monitoring; a write "
     "(DELETE, POST) with it is refused with HTTP 403. Needs "
     "admin.token_file.", "admin-read-token-file"),
    ("admin.public_metrics", _boolean, False, "boolean",
     "Serve /metrics without the token.", "admin-public-metrics"),
    ("admin.max_body", _integer(1024, 64 * MiB), MiB, _bytes,
     "Largest request body the admin API reads; more is refused with "
     "HTTP 413.", "admin-max-body"),
    ("admin.max_connections", _integer(1, 65536), 64, _count,
     "Connections the admin service serves at once; one more is answered "
     "HTTP 503 and closed at once (its file descriptors are the role's).",
     "admin-max-connections"),
    ("admin.request_timeout", _atMost(_number(low=1.0), 3600.0), 30.0,
     _seconds,
     "A request must arrive whole within this many seconds, or its "
     "connection is dropped; so is a connection idle this long after a "
     "response.", "admin-request-timeout"),
    # logging
    ("logging.format", _choice("text", "json"), "text", "-",
     "Log lines as text, or as JSON records (twisted.logger's "
     "jsonFileLogObserver: one JSON object per record, each after an "
     "ASCII RS).", "log-format"),
    ("logging.level", _choice("debug", "info", "warn", "error"), "info",
     "-", "The least important muxframe events written (debug adds one "
     "line per unauthenticated connection and per stream).", "log-level"),
    ("logging.summary_interval", _number(), 60.0, _seconds,
     "Log a one-line summary (connections, sessions, streams, msgs/s, "
     "bytes/s) this often (0: never).", "summary-interval"),
]] + [Key(path, parse, default, unit, doc,
          "storage-" + path.split(".", 1)[1].replace("_", "-"))
      for path, parse, default, unit, doc in [
    # storage: presence, queues and history (docs/presence-and-queues.md)
    ("storage.engine", _choice("embedded", "redis", "none"), "embedded", "-",
     "Presence, queues and history: embedded (files in storage.directory, "
     "one process), redis (storage.address; several processes sharing it "
     "act as one), or none (off)."),
    ("storage.directory", _path, "data", "path",
     "embedded: the data directory (created if missing; locked while in "
     "use)."),
    ("storage.address", _optional(_text), None, "address",
     "redis: redis://[:password@]host:port/db."),
    ("storage.prefix", _prefix, "muxframe:", "-",
     "redis: prepended to every key and channel (several services can "
     "share one Redis)."),
    ("storage.node_id", _optional(_text), None, "name",
     "This node's id, unique among the nodes (null: a random one at each "
     "start)."),
    ("storage.missed_pings", _integer(1, 2), 2, _count,
     "A bound device is offline after this many heartbeat intervals with "
     "nothing heard from its session (the server probes an idle session "
     "every interval; XTMP closes a session silent for two)."),
    ("storage.device_timeout", _number(positive=True), 30.0, _seconds,
     "A device whose node stopped refreshing it (the node died) is offline "
     "after this long."),
    ("storage.max_devices", _integer(1), 64, _count,
     "Online devices per entity at most."),
    ("storage.max_activity_ttl", _integer(1), 60, _seconds,
     "The longest TTL of a typing or recording activity."),
    ("storage.max_subscriptions", _integer(1), 10000, _count,
     "Awareness subscriptions per watcher at most."),
    ("storage.max_watchers", _integer(1), 100000, _count,
     "Awareness watchers per entity at most."),
    ("storage.max_known_devices", _integer(1), 1024, _count,
     "Devices with a queue position per entity at most: one more binding "
     "forgets the least recently seen device that is offline (its "
     "position goes; back, it starts from the oldest kept record); BUSY "
     "when every one is online."),
    ("storage.max_queues", _integer(1), 1000000, _count,
     "Queues kept at most (those with records or known devices): a "
     "Message to an entity without one is BUSY while as many are kept; a "
     "queue with neither stops counting at the next retention pass."),
    ("storage.delivery_window", _integer(1, 10000), 256, _count,
     "Queue records sent to a device and not yet acknowledged, at most."),
    ("storage.retention_interval", _number(), 10.0, _seconds,
     "Seconds between queue retention passes (0: none)."),
    ("storage.max_age", _optional(_number(positive=True)), 604800.0,
     _seconds, "A queued record is kept at most this long (null: no "
     "limit)."),
    ("storage.max_messages", _optional(_integer(1)), 100000, _count,
     "Records kept per queue at most, oldest dropped first (null: no "
     "limit)."),
    ("storage.delete_acknowledged", _boolean, True, "boolean",
     "Drop the records every known device of the entity acknowledged."),
    ("storage.segment_bytes", _integer(4096, (1 << 32) - 1), 64 * MiB,
     _bytes, "embedded: journal segment size."),
    ("storage.max_journal_bytes", _optional(_integer(1)), None, _bytes,
     "embedded: journal cap; past it the oldest segments go, acknowledged "
     "or not (counted and logged)."),
    ("storage.dedup_window", _integer(1), 100000, _count,
     "embedded: message ids remembered per queue for deduplication."),
    ("storage.sweep_interval", _number(positive=True), 1.0, _seconds,
     "redis: seconds between sweeps for devices that expired."),
    ("storage.announce_interval", _number(positive=True), 2.0, _seconds,
     "redis: how often each node tells the others its subscriptions (queue "
     "groups and requests across nodes); a node silent for three is "
     "dropped."),
]]

KEYS = {key.path: key for key in SCHEMA}

#: The design documents' keys that set one of ours: path -> (target path,
#: conversion name, see L{CONVERSIONS}).
ALIASES = {
    "bpci_xtmp_server.bind_address": ("server.endpoint", "bindAddress"),
    "bpci_xtmp_server.max_connections": ("server.max_connections", None),
    "bpci_xtmp_server.heartbeat_interval":
        ("xtmp_protocol.heartbeat_interval", None),
    "bpci_xtmp_server.enable_compression":
        ("xtmp_protocol.compress_threshold", "compression"),
    "bpci_xtmp_server.enable_real_time_streams": ("broker.enabled", None),
    "connection_management.max_connections_per_client":
        ("server.max_connections_per_client", None),
    "connection_management.tcp_keepalive": ("server.tcp_keepalive", None),
    "security.key_rotation_interval":
        ("xtmp_protocol.key_update_interval", None),
    "performance.message_buffer_size": ("router.queue", None),
    "security.require_encryption": ("server.allow_plaintext", "not"),
    "security.authentication_required": ("server.allow_anonymous", "not"),
}

#: The design documents' keys with no meaning here, and why.
IGNORED = {
    "bpci_xtmp_server.connection_timeout":
        "ambiguous in the design documents (300 s beside a 3600 s "
        "session_timeout); set server.handshake_timeout and "
        "xtmp_protocol.session_timeout instead",
    "connection_management.connection_pool_size":
        "connection pooling is a client's concern; the server keeps one "
        "session per connection",
    "connection_management.udp_buffer_size":
        "XTMP runs over reliable streams only; there is no UDP transport",
    "performance.batch_processing":
        "always on: a session's messages leave in few writes (a fan-out's "
        "in one per turn, a read's answers in one per 16 messages handled)",
    "performance.async_processing":
        "always on: the server is event-driven; blocking handlers run in "
        "the thread pool (router.threads)",
    "performance.connection_pooling":
        "connection pooling is a client's concern",
    "http_cage_protocol":
        "the HTTP Cage gateway is not part of muxframe",
    "protocol_transformation":
        "the HTTP Cage gateway is not part of muxframe",
}

SECTIONS = sorted({key.path.split(".")[0] for key in SCHEMA} |
                  {path.split(".")[0] for path in ALIASES} |
                  {path.split(".")[0] for path in IGNORED} |
                  {"handlers", "permissions", "history"})

#: Handler ranges of the design documents' message_routing threads.
THREAD_RANGES = {
    "message_routing.wallet_handler_threads": range(0x10, 0x14),
    "message_routing.bundle_handler_threads": range(0x20, 0x24),
    "message_routing.registry_handler_threads": range(0x30, 0x33),
    "message_routing.stream_handler_threads": range(0x40, 0x43),
}


def _compression(value):
    return 1024 if _boolean(value) else None


def _negated(value):
    return not _boolean(value)


def bindAddressEndpoint(value):
    """
    The endpoint string for a design-document C{bind_address} such as
    C{"0.0.0.0:8090"} or C{"[::]:8090"}.
    """
    value = _text(value)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, got %r" % (value,))
    host = host.strip("[]")
    return "tcp:%s:interface=%s" % (port, host.replace(":", "\\:"))


#: Conversions named in L{ALIASES}: the alias's value -> the target's.
CONVERSIONS = {None: lambda value: value, "bindAddress": bindAddressEndpoint,
               "compression": _compression, "not": _negated}
