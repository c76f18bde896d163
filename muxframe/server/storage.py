"""
L{Storage}: the XTMP server's presence, durable queues and channel
history, on one storage engine (L{muxframe.engines}), wired to sessions.

Rules (C{docs/presence-and-queues.md} section 9 has the wire messages):

  - Entities and devices: a session's entity is its identity's name (the
    key's C{name:} in authorized_keys, the token's name) or, unnamed, its
    fingerprint; anonymous sessions have none.  A session names its
    device with a Bind (0x50) before any presence or queue message
    (NOT_BOUND otherwise); one device per session, many devices per
    entity.  A second session binding the same entity and device, on
    this node or another, replaces the first once its Bind succeeded
    (connected and positioned in the engine): the first is disconnected
    with DEVICE_REPLACED and does not take the device offline.  A Bind
    refused, at once or by the engine, leaves the device's binding as it
    was.  The answer waits for the entity's engine watches to be active
    (L{IWatch.whenActive}: with Redis, their subscriptions confirmed), so
    whatever another node publishes for the entity after the client heard
    it reaches the session.
  - Every C{from} a client gives must be its own entity and device
    (UNAUTHORIZED otherwise); the server fills it in where left out.
  - Liveness: a bound device is online from its Bind until its session
    ends, or until nothing was heard from the session for
    C{storage.missed_pings} heartbeat intervals (the server probes an
    idle session once per interval and a live client answers at once;
    XTMP closes a session silent for two).  A device that was offline for
    missed pings comes back online as soon as its session is heard from
    again.  Every live device is refreshed in the engine at least every
    C{device_timeout / 3}, so a node that dies takes its devices offline
    C{device_timeout} later, through the others (Redis).
  - Engine failures answer the message that met them: a malformed or
    refused request is BAD_REQUEST (so is an acknowledgement past a gap
    when the most are held already: the client's fault), a limit BUSY, a
    storage failure STORAGE_FAILED; nothing is half stored.  An outage of
    the storage (Redis down: L{StorageUnavailable}) is STORAGE_FAILED with
    the engine's words (which Redis, since when, why) and no traceback per
    request or per background step: the engine logs the outage once.  Any
    other storage failure (Redis out of memory) is STORAGE_FAILED with the
    engine's words too, logged, with those of background steps (a history
    record, a presence refresh: L{logEngineFailure}), at most ten lines a
    minute without traceback.
"""

import struct
import time

from twisted.internet.defer import (
    Deferred, DeferredList, fail, gatherResults, maybeDeferred, succeed)
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from muxframe.logthrottle import LogThrottle, logger, throttled
from muxframe.engines import makeEngine
from muxframe.engines.errors import (
    ConfigError as EngineConfigError, EngineStopped, EngineUsageError, LimitExceeded,
    StorageError, StorageUnavailable)
from muxframe.engines.model import Status, checkName
from muxframe.engines.presence import checkPresenceStatus
from muxframe.messaging import wire
from muxframe.messaging.wire import StanzaType
from muxframe.server.errors import ConfigError, Refusal
from muxframe.xtmp.errors import XTMPErrorCode

log = logger("muxframe.server.storage")
#: The refusals for storage failures log at most this many lines a minute.
_FAILURES = LogThrottle(perInterval=10, interval=60.0)

#: Application frame kinds between nodes (L{ClusterEngine.sendApp}).
TAKE_DEVICE = 1

_COMMON = ("node_id", "device_timeout", "max_devices", "max_activity_ttl",
           "max_subscriptions", "max_watchers", "max_known_devices", "max_queues",
           "retention_interval", "max_age", "max_messages", "delete_acknowledged")
_ONLY = {"embedded": ("segment_bytes", "max_journal_bytes", "dedup_window"),
         "redis": ("address", "prefix", "sweep_interval")}
_U16 = struct.Struct(">H")
#: The limits (L{LimitExceeded.limit}) a request meets through its own
#: fault, BAD_REQUEST: waiting will not help.
_REQUEST_LIMITS = frozenset(["maxPending"])


def engineMapping(config):
    """
    The engine configuration (L{makeEngine}'s mapping) of a server
    configuration's C{storage} section, or L{None} for C{engine: none}.

    @raise ConfigError: a setting of the other engine was given.
    """
    kind = config["storage.engine"]
    if kind == "none":
        return None
    other = _ONLY["redis" if kind == "embedded" else "embedded"]
    for name in other:
        if config.origins["storage." + name] != "default":
            raise ConfigError("storage." + name, "a setting of the %s engine, "
                              "not %s" % ("redis" if kind == "embedded"
                                          else "embedded", kind))
    mapping = {"engine": kind}
    for name in _COMMON + _ONLY[kind]:
        value = config["storage." + name]
        if name == "node_id" and value is None:
            continue
        mapping[name] = value
    if kind == "embedded":
        mapping["directory"] = config.path("storage.directory")
    return mapping


def refusalFor(failure):
    """
    The L{Refusal} answering an engine failure (see the module's rules).
    """
    error = failure.value
    if isinstance(error, Refusal):
        return error
    if isinstance(error, LimitExceeded) and error.limit not in _REQUEST_LIMITS:
        return Refusal(str(error), XTMPErrorCode.BUSY)
    if isinstance(error, (EngineUsageError, wire.WireError)):
        return Refusal(str(error), XTMPErrorCode.BAD_REQUEST)
    if isinstance(error, StorageUnavailable):
        return Refusal("the storage is unavailable: %s" % (error,),
                       XTMPErrorCode.STORAGE_FAILED)
    if isinstance(error, EngineStopped):
        # The node is stopping.
        return Refusal("the storage is stopped: %s" % (error,),
                       XTMPErrorCode.STORAGE_FAILED)
    now = time.monotonic()
    if isinstance(error, StorageError):
        # The engine's words name the fault (Redis out of memory, a
        # failed flush): the client is told them; the log, at most a few
        # lines a minute however many requests meet it.
        throttled(log, _FAILURES, now, LogLevel.error, "storage",
                  "storage failed: {error}", error=str(error))
        return Refusal("the storage failed: %s" % (error,), XTMPErrorCode.STORAGE_FAILED)
    if _FAILURES.allow("unexpected", now)[0]:
        # Not an engine error: a bug, with its traceback (a few a minute).
        log.failure("storage failed", failure)
    return Refusal("the storage engine failed: %s" % (type(error).__name__,),
                   XTMPErrorCode.STORAGE_FAILED)


def logEngineFailure(logger, failure, what, **fields):
    """
    Log through C{logger} the failure of engine work no request waits for
    (a presence refresh, a queue fetch, a history record, a cluster
    frame).  An outage of the storage (L{StorageUnavailable}), which the
    engine logs once for all, and the engine stopping (L{EngineStopped}:
    the node is) are not logged.  Another L{StorageError} (Redis out of
    memory: every history record of every publication meets it) is one
    line with the engine's words, without traceback, at most ten a minute
    with the refusals' (L{refusalFor}); anything else (a bug) keeps its
    traceback.
    """
    if failure.check(StorageUnavailable, EngineStopped):
        return
    if failure.check(StorageError):
        throttled(logger, _FAILURES, time.monotonic(), LogLevel.error, "storage",
                  what + ": {error}", error=str(failure.value), **fields)
        return
    logger.failure(what, failure, **fields)


def raiseRefusal(failure):
    """
    An errback: fail with the L{Refusal} for C{failure}.
    """
    raise refusalFor(failure)


class Binding:
    """
    One session bound as an entity's device on this node.

    @ivar online: whether this node has the device online (not after
        missed pings).
    @ivar replaced: another session took the device over.
    @ivar status: the device's last presence status, restored when it
        comes back after missed pings.
    """

    __slots__ = ("session", "entity", "device", "ready", "online", "replaced",
                 "status", "details", "heard", "pump")

    def __init__(self, session, entity, device):
        self.session = session
        self.entity = entity
        self.device = device
        self.ready = False
        self.online = False
        self.replaced = False
        self.status = Status.ONLINE
        self.details = ""
        self.heard = 0.0
        self.pump = None

    def identity(self, node=None):
        """
        The wire Identity of this device (with C{node}, naming it).
        """
        return wire.Identity(eid=self.entity, device=self.device, node=node)


class _EntityWatch:
    """
    The local bindings of one entity and the engine watches serving them.
    """

    __slots__ = ("bindings", "presence", "queue")

    def __init__(self):
        self.bindings = []
        self.presence = self.queue = None


class Storage:
    """
    Presence, queues and history for an L{XTMPServer}, on C{engine}.

    @param engine: an L{IEngine} (not started).
    @param config: the server's L{ServerConfig}.
    @param clustered: make several nodes one service through the engine's
        broker (the Redis engine): L{brokerEngine} is then a
        L{ClusterEngine}.
    """

    def __init__(self, engine, config, reactor, clustered=False):
        from muxframe.server.cluster import ClusterEngine
        from muxframe.server.history import HistorySubjects
        from muxframe.server.presence import PresenceHandlers
        from muxframe.server.queues import QueueHandlers
        self.engine = engine
        self.config = config
        self.reactor = reactor
        self.nodeId = engine.nodeId
        self.heartbeatInterval = config["xtmp_protocol.heartbeat_interval"]
        self.missedPings = config["storage.missed_pings"]
        self.deliveryWindow = config["storage.delivery_window"]
        deviceTimeout = config["storage.device_timeout"]
        self.keeperInterval = max(0.05, min(self.heartbeatInterval / 2.0,
                                            deviceTimeout / 3.0))
        self.cluster = ClusterEngine(engine.broker, reactor,
                                     config["storage.announce_interval"],
                                     waitForStart=True) \
            if clustered else None
        if self.cluster is not None:
            self.cluster.appHandlers[TAKE_DEVICE] = self._takeDeviceFrame
        self.presence = PresenceHandlers(self)
        self.queues = QueueHandlers(self)
        self.history = HistorySubjects(self, config.history) if config.history \
            else None
        self.server = None
        self.counters = dict.fromkeys(["binds", "replaced", "missedPings",
                                       "noticesDropped"], 0)
        self._bySession = {}
        self._byDevice = {}
        self._binding = {}
        self._entities = {}
        self._pending = set()
        self._keeper = None
        self._starting = []
        self.started = False

    @classmethod
    def fromConfig(cls, config, reactor):
        """
        The L{Storage} a server configuration describes, or L{None}
        (C{storage.engine: none}).

        @raise ConfigError: naming the storage key at fault.
        """
        mapping = engineMapping(config)
        if mapping is None:
            if config.history:
                raise ConfigError("history", "history subjects need storage "
                                  "(storage.engine is none)")
            return None
        try:
            engine = makeEngine(mapping, reactor)
        except EngineConfigError as e:
            raise ConfigError("storage." + e.key, e.reason)
        return cls(engine, config, reactor, clustered=mapping["engine"] == "redis")

    def brokerEngine(self):
        """
        The L{IBrokerEngine} for the server's broker: the cluster engine,
        or L{None} (this process only).
        """
        return self.cluster

    # -- wiring ------------------------------------------------------------

    def attach(self, server):
        """
        Serve the stanza types on C{server} and follow its sessions.

        @raise ConfigError: a configured handler takes a stanza type.
        """
        taken = set(server.router.routes()) & set(int(t) for t in StanzaType)
        if taken:
            raise ConfigError("handlers.%#04x" % (min(taken),),
                              "reserved for presence, queues and history "
                              "(storage.engine is not none)")
        self.server = server
        many = max(server.config["router.concurrency"], 4096)
        routes = {StanzaType.Bind: self._bind}
        routes.update(self.presence.routes())
        routes.update(self.queues.routes())
        if self.history is not None:
            routes.update(self.history.routes())
            server.broker.history = self.history
        for messageType, handler in routes.items():
            server.router.route(messageType, handler, concurrency=many, queue=many)
        server.registry.addObserver(self)

    def claim(self):
        """
        Take what the engine must hold alone (the embedded engine's
        directory lock), if it has such a thing, now.

        @raise StorageError: it is held elsewhere.
        """
        claim = getattr(self.engine, "claim", None)
        if claim is not None:
            claim()

    def start(self):
        """
        Start the engine (recovering its storage); a Deferred firing when
        sessions may come.
        """
        def started(_):
            self.started = True
            waiting, self._starting = self._starting, []
            for d in waiting:
                d.callback(None)
            self._keeper = LoopingCall(self._keep)
            self._keeper.clock = self.reactor
            self._keeper.start(self.keeperInterval, now=False)
            if self.cluster is not None:
                self.cluster.engineStarted()
            log.info("storage: {kind} engine, node {node}", node=self.nodeId,
                     kind=self.config["storage.engine"])
            return self
        def failed(failure):
            waiting, self._starting = self._starting, []
            for d in waiting:
                d.errback(Refusal("the storage engine did not start",
                                  XTMPErrorCode.STORAGE_FAILED))
            return failure
        return self.engine.start().addCallbacks(started, failed)

    def whenStarted(self):
        """
        A Deferred firing once the engine is started (at once if it is);
        failing at once with STORAGE_FAILED while the engine cannot start
        for an outage (its Redis unreachable since start-up), rather than
        waiting for its end.
        """
        if self.started:
            return succeed(None)
        outage = getattr(self.engine, "outage", None)
        error = outage() if outage is not None else None
        if error is not None:
            return fail(refusalFor(Failure(error)))
        d = Deferred()
        self._starting.append(d)
        return d

    def stop(self):
        """
        Stop: finish the presence changes in progress, then stop the
        engine.
        """
        if self._keeper is not None and self._keeper.running:
            self._keeper.stop()
        if not self.started:
            return succeed(None)
        self.started = False
        self.queues.flushNow()
        pending = DeferredList(list(self._pending), consumeErrors=True)
        return pending.addCallback(lambda _: self.engine.stop())

    def track(self, d):
        """
        Wait for C{d} (a change in progress) before stopping; return it.
        """
        self._pending.add(d)

        def done(result):
            self._pending.discard(d)
            return result
        return d.addBoth(done)

    # -- bindings ------------------------------------------------------------

    def bindingOf(self, session):
        """
        The L{Binding} of C{session}, or L{None}.
        """
        return self._bySession.get(session)

    def bound(self, session):
        """
        The ready L{Binding} of C{session}.

        @raise Refusal: NOT_BOUND.
        """
        binding = self._bySession.get(session)
        if binding is None or not binding.ready:
            raise Refusal("bind a device first (message type 0x50)",
                          XTMPErrorCode.NOT_BOUND)
        return binding

    def bindingsOf(self, entity):
        """
        The ready local bindings of C{entity}.
        """
        watch = self._entities.get(entity)
        return [b for b in watch.bindings if b.ready] if watch is not None else []

    def checkFrom(self, binding, identity):
        """
        Raise UNAUTHORIZED unless a client's C{from} (an Identity or
        L{None}) is its own entity and device.
        """
        if identity is None:
            return
        if identity.eid not in ("", binding.entity) or (
                identity.device not in (None, "", binding.device)):
            raise Refusal("from must be the session's own entity and device "
                          "(%s/%s)" % (binding.entity, binding.device),
                          XTMPErrorCode.UNAUTHORIZED)

    def entityOf(self, session):
        """
        The entity a session authenticated as.

        @raise Refusal: UNAUTHORIZED (anonymous), BAD_REQUEST (a name the
            engines cannot take).
        """
        identity = session.identity
        if identity.kind == "anonymous":
            raise Refusal("anonymous sessions have no entity",
                          XTMPErrorCode.UNAUTHORIZED)
        entity = identity.name or identity.fingerprint
        try:
            return checkName(entity, "entity")
        except EngineUsageError as e:
            raise Refusal(str(e), XTMPErrorCode.BAD_REQUEST)

    def _bind(self, session, message):
        # Every check that needs no engine comes first: a refused Bind
        # changes nothing, least of all the device's live binding.
        try:
            request = wire.Bind.decode(message.payload)
            entity = self.entityOf(session)
            asked = request.identity or wire.Identity()
            if asked.eid not in ("", entity):
                raise Refusal("this session is entity %r, not %r" % (entity, asked.eid),
                              XTMPErrorCode.UNAUTHORIZED)
            device = checkName(asked.device or "", "device")
            status = checkPresenceStatus(request.status or Status.ONLINE)
        except (wire.WireError, EngineUsageError, ValueError) as e:
            raise Refusal(str(e), XTMPErrorCode.BAD_REQUEST)
        existing = self._bySession.get(session)
        if existing is not None:
            if existing.device != device or not existing.ready:
                raise Refusal("this session is bound as device %r already"
                              % (existing.device,), XTMPErrorCode.BAD_REQUEST)
            d = self.engine.queues.position(entity, device)
            return d.addCallbacks(self._bound, raiseRefusal,
                                  callbackArgs=(existing, session, message))
        binding = Binding(session, entity, device)
        binding.status, binding.details = status, request.details
        self._bySession[session] = binding
        # The device's binding (if any) stays until this one is ready.
        self._binding.setdefault((entity, device), []).append(binding)
        self.counters["binds"] += 1
        def connect(presence):
            d = self.engine.presence.connect(entity, device, status, binding.details)
            d.addCallback(lambda _: self.engine.queues.position(entity, device))
            # Only now is another node's session of the device replaced.
            return d.addCallback(lambda position: maybeDeferred(
                self._takeOver, presence, binding).addCallback(lambda _: position))
        d = self.whenStarted()
        d.addCallback(lambda _: self.engine.presence.presence(entity))
        d.addCallback(connect)
        d.addCallbacks(self._ready, self._bindFailed, callbackArgs=(binding, message),
                       errbackArgs=(binding,))
        return d

    def _takeOver(self, presence, binding):
        for device in presence.devices:
            if device.device == binding.device and device.node != self.nodeId \
                    and self.cluster is not None:
                payload = _U16.pack(len(binding.entity.encode("utf-8"))) + \
                    binding.entity.encode("utf-8") + binding.device.encode("utf-8")
                return self.cluster.sendApp(device.node, TAKE_DEVICE, payload)
        return None

    def _takeDeviceFrame(self, origin, data):
        size = _U16.unpack(data[:2])[0]
        entity = data[2:2 + size].decode("utf-8")
        device = data[2 + size:].decode("utf-8")
        why = "the device was bound on node %s" % (origin,)
        binding = self._byDevice.get((entity, device))
        if binding is not None:
            self._replace(binding, why)
        for binding in list(self._binding.get((entity, device), ())):
            self._replace(binding, why)

    def _replace(self, binding, why):
        binding.replaced = True
        self.counters["replaced"] += 1
        if self._byDevice.get((binding.entity, binding.device)) is binding:
            del self._byDevice[(binding.entity, binding.device)]
        log.info("device {entity}/{device} replaced: {why}", entity=binding.entity,
                 device=binding.device, why=why)
        binding.session.disconnect(XTMPErrorCode.DEVICE_REPLACED, why)

    def _ready(self, position, binding, message):
        session = binding.session
        key = (binding.entity, binding.device)
        self._settle(binding)
        if self._bySession.get(session) is not binding or binding.replaced:
            # The session ended (or was replaced) while binding: undo the
            # connect.
            self._release(binding)
            return None
        old = self._byDevice.get(key)
        if old is not None:
            self._replace(old, "the device was bound by another session")
        self._byDevice[key] = binding
        binding.ready = True
        binding.online = True
        binding.heard = self._lastReceived(session)
        watch = self._entities.get(binding.entity)
        if watch is None:
            watch = self._entities[binding.entity] = _EntityWatch()
            watch.presence = self.engine.presence.watch(binding.entity,
                                                        self.presence.noticed)
            watch.queue = self.engine.queues.watch(binding.entity, self.queues.appended)
        watch.bindings.append(binding)
        self.queues.started(binding, position)
        # The answer once the entity's notices from other nodes reach this
        # one (Redis: the subscriptions confirmed; at once when they are
        # already): a notice published after the client heard it, such as
        # another node's subscription request, is not lost.
        d = gatherResults([watch.presence.whenActive(), watch.queue.whenActive()],
                          consumeErrors=True)
        return d.addCallback(lambda _: self._bound(position, binding, session, message))

    def _bound(self, position, binding, session, message):
        answer = wire.Bind(identity=binding.identity(self.nodeId), status=binding.status,
                           details=binding.details, delivered=position.delivered,
                           read=position.read, next_offset=position.nextOffset,
                           timestamp=self.now())
        if session.isConnected():
            session.respond(message, answer.encode())
            # The answer first, then what the device missed.
            self.reactor.callLater(0, self.queues.resume, binding, position)
        return None

    def _bindFailed(self, failure, binding):
        self._settle(binding)
        if self._bySession.get(binding.session) is binding:
            del self._bySession[binding.session]
        self._release(binding)
        raise refusalFor(failure)

    def _settle(self, binding):
        """
        C{binding}'s Bind is no longer in progress.
        """
        key = (binding.entity, binding.device)
        pending = self._binding.get(key)
        if pending is not None and binding in pending:
            pending.remove(binding)
            if not pending:
                del self._binding[key]

    def _release(self, binding):
        """
        C{binding} did not become ready: undo what its Bind may have told
        the engine, leaving alone a device another binding holds or is
        binding.
        """
        holder = self._byDevice.get((binding.entity, binding.device))
        if holder is not None:
            # The Bind's connect may have set its status: the holder's
            # again.
            if holder.online and self.started:
                self.track(self.engine.presence.connect(
                    holder.entity, holder.device, holder.status,
                    holder.details)).addErrback(lambda f: None)
            return
        if binding.replaced or (binding.entity, binding.device) in self._binding \
                or not self.started:
            return
        self.track(self.engine.presence.disconnect(
            binding.entity, binding.device, self.nodeId)).addErrback(lambda f: None)

    # -- IRegistryObserver ----------------------------------------------------

    def sessionAdded(self, session):
        """
        Nothing to do until the session binds.
        """

    def sessionRemoved(self, session, reason):
        """
        Unbind C{session}: its device goes offline (unless replaced).
        """
        if self.history is not None:
            self.history.sessionGone(session)
        binding = self._bySession.pop(session, None)
        if binding is None:
            return
        if self._byDevice.get((binding.entity, binding.device)) is binding:
            del self._byDevice[(binding.entity, binding.device)]
        self.queues.stopped(binding)
        watch = self._entities.get(binding.entity)
        if watch is not None and binding in watch.bindings:
            watch.bindings.remove(binding)
            if not watch.bindings:
                del self._entities[binding.entity]
                watch.presence.cancel()
                watch.queue.cancel()
        if binding.online and not binding.replaced and self.started and \
                (binding.entity, binding.device) not in self._binding:
            # (A Bind of the device in progress takes it over, or takes it
            # offline if it fails.)
            binding.online = False
            self.track(self.engine.presence.disconnect(
                binding.entity, binding.device, self.nodeId)).addErrback(
                    lambda f: logEngineFailure(log, f, "presence disconnect failed"))

    # -- liveness --------------------------------------------------------------

    @staticmethod
    def _lastReceived(session):
        connection = session.connection
        return connection.lastReceived if connection is not None else 0.0

    def _keep(self):
        now = self.reactor.seconds()
        limit = self.missedPings * self.heartbeatInterval
        presence = self.engine.presence
        refreshed = []
        for binding in list(self._bySession.values()):
            if not binding.ready or binding.replaced:
                continue
            last = self._lastReceived(binding.session)
            entity, device = binding.entity, binding.device
            if binding.online:
                if now - last >= limit:
                    binding.online = False
                    self.counters["missedPings"] += 1
                    log.info("device {entity}/{device} missed {count} pings: offline",
                             entity=entity, device=device, count=self.missedPings)
                    self.track(presence.disconnect(entity, device, self.nodeId)).addErrback(
                        lambda f: logEngineFailure(log, f, "presence disconnect failed"))
                else:
                    binding.heard = last
                    refreshed.append(self._refresh(binding))
            elif last > binding.heard:
                binding.heard = last
                binding.online = True
                # (If it fails, the next refresh finds the device offline
                # in the engine and connects it.)
                self.track(presence.connect(entity, device, binding.status,
                                             binding.details)).addErrback(
                    lambda f: logEngineFailure(log, f, "presence connect failed"))
        if refreshed:
            return gatherResults(refreshed, consumeErrors=True).addErrback(
                lambda f: logEngineFailure(log, f.value.subFailure, "presence refresh failed"))
        return None

    def _refresh(self, binding):
        def alive(wasOnline):
            # The engine took the device offline meanwhile (a Redis
            # outage longer than device_timeout): bring it back.
            if not wasOnline and binding.online and not binding.replaced and \
                    self._bySession.get(binding.session) is binding:
                return self.engine.presence.connect(binding.entity, binding.device,
                                                    binding.status, binding.details)
            return None
        return self.engine.presence.heartbeat(binding.entity, binding.device).addCallback(
            alive)

    # -- helpers -----------------------------------------------------------------

    def now(self):
        """
        Unix milliseconds (the server's stamp on answers).
        """
        return int(self.reactor.seconds() * 1000)

    def send(self, binding, messageType, payload):
        """
        Send a stanza to a bound session; a session whose send buffers are
        full misses it (counted), as with any message without REQUIRES_ACK.

        @return: whether it was sent.
        """
        session = binding.session
        if not session.isConnected():
            return False
        try:
            session.send(messageType, payload)
        except Exception:
            self.counters["noticesDropped"] += 1
            return False
        return True

    def problems(self):
        """
        What keeps the storage from working now (the engine's
        C{problems()}: a Redis connection down, at start-up too), as
        sentences for the health report; empty when all is well.
        """
        problems = getattr(self.engine, "problems", None)
        if problems is None:
            return []
        return ["storage: %s" % (p,) for p in problems()]

    def counts(self):
        """
        The counters and sizes that cost nothing to read, for the metrics
        scraped every few seconds (L{stats} sums over every queue): this
        node's Binds, replaced bindings, missed-pings offlines and notices
        that could not be sent; the sessions bound and entities now; the
        queue engine's forgotten devices, refused new queues and records
        dropped by the embedded journal's cap (0 where an engine has no
        such thing).
        """
        out = dict(self.counters)
        out["bound"] = len(self._bySession)
        out["entities"] = len(self._entities)
        store = getattr(self.engine, "queues", None)
        for name in ("devicesForgotten", "queuesRefused", "droppedByCap"):
            out[name] = getattr(store, name, 0)
        return out

    def stats(self):
        """
        Counters and sizes for operators.
        """
        out = dict(self.counters)
        out["bound"] = len(self._bySession)
        out["entities"] = len(self._entities)
        out.update(self.queues.stats())
        store = getattr(self.engine, "queues", None)
        if store is not None:
            # (The engine's queue store: its sizes and counters.)
            out["engine"] = store.stats()
        if self.cluster is not None:
            out["cluster"] = self.cluster.stats()
        return out

