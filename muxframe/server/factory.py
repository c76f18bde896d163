"""
L{XTMPServer}: the XTMP server's factory, wiring the registry, router,
broker and defences to the sessions it builds.

Admission, in the order checked (each refusal is a plaintext Error with
the code below, session id 0, sent before any public-key work, then the
connection is closed; each is a counted, logged event).  When a connection
arrives:

  1. the server is draining: GOING_AWAY;
  2. the source address is locked out: LOCKED_OUT;
  3. C{max_connections} or C{max_connections_per_client}: TOO_MANY_CONNECTIONS;
  4. the address's handshake rate bucket is empty: RATE_LIMITED (each
     connection takes a token as it arrives: a handshake begins with its
     connection, and a token taken only by the hello let every connection
     accepted before that hello through to be refused later, each with a
     transport, under a flood);

when its ClientHello has passed the library's cheap checks
(L{XTMPServerFactory.admitHandshake}, before the replay check and the key
exchange):

  5. more than C{max_handshakes} handshakes in progress, this one
     included (the library's L{handshakesInProgress}, counted from the
     connection's start): BUSY.

Refusals at connection time (1-4) are answered on the role's listeners
before any transport is built (L{muxframe.earlyrefusal}): under a
connection flood each costs the server a few system calls, not a
transport's life.

A WebSocket connection (C{ws:}/C{wss:}) is checked twice: with 1-3 when
its TCP connection is accepted (L{reserveConnection}: it counts as a
connection of its address from then on, HTTP upgrade included; a refusal
is an HTTP 503), and with 1-4 when its upgrade completes and its session
is built (the rate token is taken there only).

During the handshake, a locked-out client key is refused with LOCKED_OUT;
an authentication failure (key not authorized, bad signature, token
refused) counts against the address and the key, and enough of them lock
it out (L{Lockout}).  Reloading keys or tokens disconnects the live
sessions of those removed, with KEY_REVOKED.
"""

import hashlib

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import LogLevel

from muxframe.logthrottle import logger
from muxframe.server.broker import SubscriptionTable
from muxframe.server.config import ServerConfig
from muxframe.server.events import ServerEvents
from muxframe.server.hub import Broker
from muxframe.server.limits import BucketTable, ConnectionCounter, Lockout
from muxframe.server.measures import MessageTypeCounts
from muxframe.server.registry import SessionIdentity, SessionRegistry
from muxframe.server.router import Router
from muxframe.server.session import ServerSession, SessionState
from muxframe.server.timers import CoarseClock, HandshakeScheduler
from muxframe.xtmp import codec
from muxframe.xtmp.codec import MessageType, encodePlain
from muxframe.xtmp.errors import (
    Unauthorized, XTMPErrorCode, XTMPRemoteError,
)
from muxframe.xtmp.factory import XTMPServerFactory

#: Codes of handshake failures that count as failed authentication.
_AUTH_FAILURES = (XTMPErrorCode.UNAUTHORIZED, XTMPErrorCode.HANDSHAKE_FAILED)
_ANONYMOUS = SessionIdentity("anonymous")
_RATE_REASON = "too many new connections from this address (handshake_rate)"


def sourceOf(address):
    """
    The source an address counts as for limits: its host (the underlying
    connection's for a muxframe stream), C{"unix"} for UNIX sockets.
    """
    inner = getattr(address, "address", None)
    if inner is not None and hasattr(address, "streamId"):
        return sourceOf(inner)
    host = getattr(address, "host", None)
    if host is not None:
        return host
    if type(address).__name__ == "UNIXAddress":
        return "unix"
    return str(address)


def describePeer(address):
    """
    C{host:port} of an address, or its text.
    """
    inner = getattr(address, "address", None)
    if inner is not None and hasattr(address, "streamId"):
        return "%s#%s" % (describePeer(inner), address.streamId)
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None and port is not None:
        return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
    return str(address)


class RefusedConnection(Protocol):
    """
    Answers a refused connection with one plaintext Error and closes.  A
    listener made ready by L{muxframe.earlyrefusal.refuseEarly} (the
    role's are) sends C{earlyRefusal} and closes at accept time, without
    a transport; then the transport given here is already closed.
    """

    def __init__(self, code, reason):
        self.data = self.earlyRefusal = encodePlain(
            MessageType.Error, 0, 0, 0, codec.encodeReason(code, reason))

    def connectionMade(self):
        """
        Send the Error and close.
        """
        self.transport.write(self.data)
        self.transport.loseConnection()


def tokenDigest(token):
    """
    The hex SHA-256 of a bearer token (what a tokens file lists).
    """
    return hashlib.sha256(token).hexdigest()


class XTMPServer(XTMPServerFactory):
    """
    The XTMP server's factory.

    @param identity: the server's L{Identity}.
    @param config: a L{ServerConfig} (defaults for everything not given).
    @param keys: C{[(name or None, PublicIdentity)]} accepted by signature.
    @param tokens: C{{hex SHA-256 of a token: subject name}}.
    @param engine: an L{IBrokerEngine} (default: this process only).

    @ivar registry: the L{SessionRegistry}.
    @ivar router: the L{Router}.
    @ivar broker: the L{Broker}.
    @ivar events: the L{ServerEvents}.
    @ivar messageTypes: the L{MessageTypeCounts} of every session.
    """

    protocol = ServerSession
    log = logger("muxframe.server")

    def __init__(self, identity, config=None, reactor=None, keys=(),
                 tokens=None, engine=None):
        if reactor is None:
            from twisted.internet import reactor
        c = self.config = config if config is not None else ServerConfig()
        interval = c["xtmp_protocol.heartbeat_interval"]
        # A timer may run up to a slot late: at most 1/32 of the heartbeat
        # interval (a probe sent late must leave the peer time to answer
        # before the silence limit, two intervals).
        resolution = min(c["server.timer_resolution"], interval / 32.0)
        # Idle sessions' probes leave two slots early, i.e. in the slot
        # before the one in which a client with the same interval (timing
        # its probe from its answer to ours) would probe: the server's
        # probe starts every round, all of a slot's in one reactor call,
        # so their writes and their answers are handled together.
        settings = dict(c.xtmpSettings(), heartbeatLead=2 * resolution)
        XTMPServerFactory.__init__(
            self, identity, checkToken=self._checkToken,
            allowAnonymous=c["server.allow_anonymous"], ciphers=c.ciphers(),
            allowPlaintext=c["server.allow_plaintext"], reactor=reactor,
            **settings)
        self.maxResumableSessions = c["server.max_resumable_sessions"]
        self.events = ServerEvents(reactor)
        self.messageTypes = MessageTypeCounts()
        self.registry = SessionRegistry()
        self.router = Router(reactor, self.events, c["router.threads"],
                             c["router.concurrency"], c["router.queue"])
        self.router.load(c.handlers, c.concurrencyFor)
        self.broker = Broker(
            reactor, SubscriptionTable(c["broker.max_subscriptions"],
                                       c["broker.cache_size"]),
            self.registry.__iter__, self.events, engine,
            c["xtmp_protocol.request_timeout"], c["broker.enabled"])
        self.permissions = c.permissions
        self.maxPending = c["broker.max_pending"]
        self.writeDeadline = c["broker.write_deadline"]
        self.connections = ConnectionCounter(
            c["server.max_connections"], c["server.max_connections_per_client"])
        self.handshakeRate = BucketTable(c["server.handshake_rate"],
                                         c["server.handshake_burst"])
        self.maxHandshakes = c["server.max_handshakes"]
        lockout = (c["security.max_failed_attempts"],
                   c["security.failure_window"], c["security.lockout_time"],
                   c["security.max_lockout_time"])
        self.addressLockout = Lockout(*lockout)
        self.keyLockout = Lockout(*lockout) if c["security.lockout_keys"] \
            else None
        self.timers = CoarseClock(reactor, resolution) if resolution else None
        budget = c["server.handshake_budget"]
        self.scheduler = HandshakeScheduler(reactor, budget) if budget \
            else None
        self.draining = False
        self.refusals = {}
        self._open = set()
        self._closedWaiters = []
        self._keys = {}
        self._tokens = {}
        self.setKeys(keys)
        self.setTokens(tokens or {})

    # -- credentials -------------------------------------------------------

    def setKeys(self, keys):
        """
        Accept exactly C{keys} (C{[(name, PublicIdentity)]}) from now on;
        disconnect the live sessions of keys no longer accepted.

        @return: C{(added, removed, disconnected)} counts.
        """
        new = {}
        for name, key in keys:
            new[key.ed25519] = (key, SessionIdentity("key", name,
                                                     key.fingerprint))
        old = self._keys
        removed = [k for k, (key, _) in old.items()
                   if k not in new or new[k][0] != key]
        added = [k for k in new if k not in old]
        self._keys = new
        self.authorizedKeys = [key for key, _ in new.values()]
        gone = self._revoke(lambda s: s.identity.kind == "key" and (
            s.peerIdentity is None or s.peerIdentity.ed25519 not in new
            or new[s.peerIdentity.ed25519][0] != s.peerIdentity))
        return len(added), len(removed), gone

    def setTokens(self, tokens):
        """
        Accept exactly C{tokens} (C{{sha256 hex: name}}) from now on;
        disconnect the live sessions of tokens no longer accepted.

        @return: C{(added, removed, disconnected)} counts.
        """
        old = self._tokens
        self._tokens = dict(tokens)
        gone = self._revoke(lambda s: s.identity.kind == "token"
                            and s.identity.fingerprint not in self._tokens)
        return (len(set(tokens) - set(old)), len(set(old) - set(tokens)), gone)

    def _revoke(self, revoked):
        gone = 0
        for session in self.registry.list():
            if revoked(session):
                gone += 1
                self.events.emit(
                    "key_revoked", "session {sessionId:#x} of {identity} "
                    "disconnected with {codeName}: its credential was "
                    "removed", code=XTMPErrorCode.KEY_REVOKED,
                    sessionId=session.sessionId,
                    identity=session.identity.label)
                session.disconnect(XTMPErrorCode.KEY_REVOKED,
                                   "the session's credential was revoked")
        return gone

    def _checkToken(self, token):
        return tokenDigest(token) in self._tokens

    # -- admission ---------------------------------------------------------

    def _refusal(self, peer, source, code, reason, event):
        self.refusals[event] = self.refusals.get(event, 0) + 1
        self.events.emit(event, "connection from {peer} refused with "
                         "{codeName}: {reason}", code=code, peer=peer,
                         source=source, reason=reason)

    def _refuse(self, address, source, code, reason, event):
        self._refusal(describePeer(address), source, code, reason, event)
        return RefusedConnection(code, reason)

    def _admission(self, address, source, now):
        """
        Checks 1-3 of the module docstring: C{(code, reason, event)} of a
        refusal, else L{None}.
        """
        if self.draining:
            return (XTMPErrorCode.GOING_AWAY, "the server is shutting down",
                    "refused_draining")
        locked = self.addressLockout.lockedFor(source, now)
        if locked:
            return (XTMPErrorCode.LOCKED_OUT, "too many failed "
                    "authentications from this address; retry in %ds"
                    % (locked + 1,), "refused_locked_out")
        why = self.connections.refusal(source)
        if why is not None:
            return (XTMPErrorCode.TOO_MANY_CONNECTIONS, why,
                    "refused_connections")
        return None

    def buildProtocol(self, address):
        """
        Admit a connection (checks 1-4 of the module docstring) and build
        its L{ServerSession}, or a L{RefusedConnection}.
        """
        source = sourceOf(address)
        now = self.reactor.seconds()
        refusal = self._admission(address, source, now)
        if refusal is not None:
            return self._refuse(address, source, *refusal)
        if not self.handshakeRate.take(source, now):
            return self._refuse(address, source, XTMPErrorCode.RATE_LIMITED,
                                _RATE_REASON, "refused_rate")
        protocol = XTMPServerFactory.buildProtocol(self, address)
        if self.timers is not None:
            protocol.reactor = self.timers
        protocol.state = SessionState(source, describePeer(address))
        self.connections.add(source)
        self._open.add(protocol)
        protocol.whenHandshakeDone().addCallbacks(
            self._handshakeDone, self._handshakeFailed,
            errbackArgs=(protocol,))
        return protocol

    def reserveConnection(self, address):
        """
        Admit a connection that carries a session only later (a WebSocket
        before its upgrade: L{muxframe.web.server.WebSocketSite}) with
        checks 1-3 of the module docstring, and count it as a connection
        of its address until L{releaseConnection}.  Its session's own
        L{buildProtocol} then checks again and takes the rate token.

        @return: L{None} if admitted, else the refusal's reason (counted
            and logged as a refusal, like one at L{buildProtocol}).
        """
        source = sourceOf(address)
        refusal = self._admission(address, source, self.reactor.seconds())
        if refusal is not None:
            code, reason, event = refusal
            self._refusal(describePeer(address), source, code, reason, event)
            return reason
        self.connections.add(source)
        return None

    def releaseConnection(self, address):
        """
        Stop counting a connection L{reserveConnection} admitted.
        """
        self.connections.remove(sourceOf(address))

    def admitHandshake(self, protocol, hello):
        """
        Check 5 of the module docstring, once C{protocol}'s ClientHello
        is parsed and before any public-key work.

        @raise XTMPRemoteError: BUSY.
        """
        peer, source = protocol.peer, protocol.source
        if self.handshakesInProgress > self.maxHandshakes:
            reason = ("%d handshakes in progress (max_handshakes)"
                      % (self.handshakesInProgress - 1,))
            self._refusal(peer, source, XTMPErrorCode.BUSY, reason,
                          "refused_busy")
            raise XTMPRemoteError(reason, XTMPErrorCode.BUSY)

    def makeEngine(self, protocol, now):
        """
        The library's engine, counting messages by type into
        L{messageTypes}, its ClientHello answered in a step of the
        handshake scheduler of its own.
        """
        engine = XTMPServerFactory.makeEngine(self, protocol, now)
        engine.typeCounts = self.messageTypes
        scheduler = self.scheduler
        if scheduler is not None:
            # A ClientHello's key agreement and its answer are two steps
            # of the scheduler, not one: an established session waits for
            # at most half of a hello's work.
            engine.handshake.answerLater = lambda: scheduler.submit(
                protocol, b"")
        return engine

    def handshakeEnded(self, protocol, outcome):
        """
        Count the end of C{protocol}'s handshake (the library's counters)
        and stop scheduling its handshake work.
        """
        XTMPServerFactory.handshakeEnded(self, protocol, outcome)
        protocol.state.handshaking = False

    def _handshakeDone(self, protocol):
        now = self.reactor.seconds()
        self.addressLockout.success(protocol.source, now)
        if self.keyLockout is not None and protocol.peerIdentity is not None:
            self.keyLockout.success(protocol.peerIdentity.fingerprint, now)

    def _handshakeFailed(self, failure, protocol):
        error = failure.value
        if not isinstance(error, XTMPRemoteError) or \
                error.code not in _AUTH_FAILURES or \
                not hasattr(error, "identity"):
            return None
        now = self.reactor.seconds()
        presented = error.identity
        fingerprint = presented.fingerprint if presented is not None else None
        self.events.emit(
            "auth_failed", "authentication from {peer} failed ({codeName}): "
            "{error}", level=LogLevel.info, code=error.code,
            peer=protocol.peer, key=fingerprint, error=str(error))
        self._failure(self.addressLockout, protocol.source, now, "address",
                      protocol.peer)
        if self.keyLockout is not None and fingerprint is not None:
            self._failure(self.keyLockout, fingerprint, now, "key",
                          protocol.peer)
        return None

    def _failure(self, lockout, key, now, kind, peer):
        duration = lockout.failure(key, now)
        if duration:
            self.events.emit(
                "lockout", "{kind} {key} locked out for {duration:g}s after "
                "{failures} failed authentications (last from {peer})",
                code=XTMPErrorCode.LOCKED_OUT, kind=kind, key=key,
                duration=duration, failures=lockout.maxFailures, peer=peer)

    def authorizeClient(self, protocol, identity, token):
        """
        Refuse a locked-out key (or an address locked meanwhile) with
        LOCKED_OUT.
        """
        now = self.reactor.seconds()
        if self.keyLockout is not None and identity is not None:
            locked = self.keyLockout.lockedFor(identity.fingerprint, now)
            if locked:
                raise Unauthorized("this key is locked out after failed "
                                   "authentications; retry in %ds"
                                   % (locked + 1,), XTMPErrorCode.LOCKED_OUT)
        locked = self.addressLockout.lockedFor(protocol.source, now)
        if locked:
            raise Unauthorized("this address is locked out; retry in %ds"
                               % (locked + 1,), XTMPErrorCode.LOCKED_OUT)

    # -- sessions ----------------------------------------------------------

    def identityOf(self, protocol):
        """
        The L{SessionIdentity} of a session whose handshake just completed.
        """
        peer = protocol.peerIdentity
        if peer is not None:
            entry = self._keys.get(peer.ed25519)
            return entry[1] if entry is not None else SessionIdentity(
                "key", None, peer.fingerprint)
        token = protocol.result.token if protocol.result else None
        if token is not None:
            digest = tokenDigest(token)
            return SessionIdentity("token", self._tokens.get(digest), digest)
        return _ANONYMOUS

    def sessionStarted(self, protocol):
        """
        Register the session with its identity, permissions and limits.
        """
        XTMPServerFactory.sessionStarted(self, protocol)
        now = self.reactor.seconds()
        identity = self.identityOf(protocol)
        protocol.started(identity, self.permissions.forIdentity(identity.label),
                         self.config, now)
        protocol.state.registered = True
        self.registry.add(protocol)

    def sessionLost(self, protocol):
        """
        Unregister the session and release what it held.
        """
        XTMPServerFactory.sessionLost(self, protocol)
        if self.scheduler is not None:
            self.scheduler.discard(protocol)
        if protocol in self._open:
            self._open.discard(protocol)
            self.connections.remove(protocol.source)
        if protocol.state.registered:
            protocol.state.registered = False
            self.registry.remove(protocol, protocol.endReason)
            self.broker.removeSession(protocol)
            self.router.dropSession(protocol)
        self._checkDrained()

    # -- server API --------------------------------------------------------

    def setHandler(self, messageType, handler, blocking=False,
                   concurrency=None, queue=None):
        """
        Route C{messageType} to C{handler} (L{Router.route}): the
        library's C{setHandler}, with the router's options.
        """
        self.router.route(messageType, handler, blocking, concurrency, queue)

    def publish(self, subject, payload, messageType=MessageType.EventStream,
                flags=0):
        """
        Publish C{payload} on C{subject} to its subscribers; return how
        many sessions it was queued for.
        """
        return self.broker.publish(subject, payload, messageType, flags)

    def broadcast(self, payload, messageType=MessageType.LiveUpdates,
                  subject="broadcast"):
        """
        Send C{payload} to every session (STREAM_DATA on C{subject});
        return how many.
        """
        return self.broker.broadcast(payload, messageType, subject)

    def stats(self):
        """
        Everything an operator reads, as plain data.
        """
        return {
            "sessions": self.registry.stats(),
            "connections": self.connections.total,
            "handshaking": self.handshakesInProgress,
            "handshakes": {"completed": self.handshakesCompleted,
                           "failed": self.handshakesFailed,
                           "replays": self.replayCache.rejected},
            "refusals": dict(self.refusals),
            "lockouts": {"address": self.addressLockout.locks,
                         "key": self.keyLockout.locks
                         if self.keyLockout is not None else 0},
            "broker": self.broker.stats(),
            "router": self.router.stats(),
            "events": dict(self.events.counts),
            "messages": self.messageTypes.nonZero(),
            "latency": {"handler": self.router.latency.asDict(),
                        "request": self.broker.latency.asDict()},
            "draining": self.draining,
        }

    # -- draining ----------------------------------------------------------

    def drain(self, timeout):
        """
        Stop taking work: refuse new connections and messages (GOING_AWAY),
        let handlers in progress finish (for up to half of C{timeout}),
        send Disconnect GOING_AWAY to every session, and wait for every
        connection to close; whatever is still open C{timeout} seconds
        after the start is aborted.

        @return: a Deferred firing with the number of connections aborted.
        """
        self.draining = True
        self._aborted = 0
        deadline = self.reactor.seconds() + timeout
        result = Deferred()
        handlersDone = Deferred()

        def release(_=None):
            if not handlersDone.called:
                handlersDone.callback(None)

        halfway = self.reactor.callLater(timeout / 2.0, release)
        self.router.whenIdle().addBoth(release)

        def disconnect(_):
            if halfway.active():
                halfway.cancel()
            for protocol in list(self._open):
                protocol.disconnect(XTMPErrorCode.GOING_AWAY,
                                    "the server is shutting down")
            cutoff = self.reactor.callLater(
                max(0.0, deadline - self.reactor.seconds()), self._abortAll)

            def closed(_):
                if cutoff.active():
                    cutoff.cancel()
                result.callback(self._aborted)

            self._whenAllClosed().addCallback(closed)

        handlersDone.addCallback(disconnect)
        return result.addCallback(self._stopped)

    def _whenAllClosed(self):
        d = Deferred()
        self._closedWaiters.append(d)
        self._checkDrained()
        return d

    def _checkDrained(self):
        if self._closedWaiters and not self._open:
            waiters, self._closedWaiters = self._closedWaiters, []
            for d in waiters:
                d.callback(None)

    def _abortAll(self):
        for protocol in list(self._open):
            self._aborted += 1
            protocol.transport.abortConnection()

    def _stopped(self, aborted):
        if self.scheduler is not None:
            self.scheduler.stop()
        self.router.stop()
        d = self.broker.stop()
        return (d if isinstance(d, Deferred) else succeed(None)).addCallback(
            lambda _: aborted)


__all__ = ["XTMPServer", "ServerSession", "RefusedConnection", "sourceOf",
           "describePeer", "tokenDigest"]
