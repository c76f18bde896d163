"""
Factories for XTMP clients and servers, and L{connectXTMP}.

Both factories carry what outlives one connection: message handlers, the
stream registry, the settings and (for resumption) the state of sessions
whose connection was lost.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory, Factory

from muxframe.logthrottle import LogThrottle
from muxframe.xtmp.codec import MessageType
from muxframe.xtmp.connection import XTMPConnection
from muxframe.xtmp.errors import Unauthorized
from muxframe.xtmp.events import Settings
from muxframe.xtmp.handshake import (
    DEFAULT_CIPHERS, KEM, ClientHandshake, HelloReplayCache, ServerHandshake,
    authorizedKeyMap,
)
from muxframe.xtmp.protocol import XTMPProtocol
from muxframe.xtmp.session import ResumptionState
from muxframe.xtmp.streams import StreamRegistry


class _XTMPFactoryMixin:
    """
    What both factories share.

    @ivar handlers: message type -> handler, copied into each protocol.
    @ivar streams: the L{StreamRegistry} of this factory's sessions.
    @ivar relayStreams: whether STREAM_DATA received from one session is
        fanned out to the stream's other subscribers.
    @ivar reactor: the C{IReactorTime} for timers (None: global reactor).
    @ivar handshakesInProgress: connections whose handshake has started and
        neither completed nor failed.
    @ivar handshakesCompleted: handshakes that completed.
    @ivar handshakesFailed: handshakes that failed (refused, malformed,
        timed out, connection lost).
    @ivar logThrottle: the L{LogThrottle} for warnings a peer can cause
        at will: connections that failed before completing a handshake,
        and Error messages received (10 lines per kind each 60 s; the rest
        are counted and reported once).
    """

    protocol = XTMPProtocol
    relayStreams = False

    def _setUp(self, reactor, handlers, settings):
        self.reactor = reactor
        self.handlers = dict(handlers or {})
        self.settings = Settings(**settings)
        self.streams = StreamRegistry()
        self.handshakesInProgress = 0
        self.handshakesCompleted = 0
        self.handshakesFailed = 0
        # Log lines about connections that never completed a handshake
        # (one per connection is an unauthenticated peer's to cause).
        self.logThrottle = LogThrottle(perInterval=10, interval=60.0)

    def handshakeStarted(self, protocol):
        """
        Called by C{protocol} when its connection is made, before any
        handshake byte is exchanged.  Override (calling this one) to
        count or cap handshakes.
        """
        self.handshakesInProgress += 1

    def handshakeEnded(self, protocol, outcome):
        """
        Called once per connection when its handshake completed
        (C{outcome} is C{protocol}) or failed (a L{Failure}).
        """
        self.handshakesInProgress -= 1
        if outcome is protocol:
            self.handshakesCompleted += 1
        else:
            self.handshakesFailed += 1

    def setHandler(self, messageType, handler):
        """
        Register C{handler(protocol, message)} for every session built from
        now on.
        """
        self.handlers[int(messageType)] = handler

    def authorizeSubscribe(self, protocol, name):
        """
        Whether C{protocol}'s peer may subscribe to C{name}.  Override to
        restrict.
        """
        return True

    def publish(self, name, payload, messageType=MessageType.EventStream,
                flags=0, exclude=None):
        """
        Send C{payload} as STREAM_DATA on C{name} to every subscriber
        (except C{exclude}).  A subscriber whose send queue is full misses
        the message (it is logged).

        @return: the number of subscribers it was queued for.
        """
        count = 0
        for protocol in self.streams.subscribers(name):
            if protocol is exclude:
                continue
            try:
                protocol.publish(name, payload, messageType, flags)
            except Exception as e:
                protocol.log.warn("xtmp publish to {name} dropped: {error}",
                                  name=name, error=e)
            else:
                count += 1
        return count

    def sessionStarted(self, protocol):
        """
        Called by C{protocol} when its handshake completes.
        """

    def sessionLost(self, protocol):
        """
        Called by C{protocol} from C{connectionLost}.
        """
        self.streams.unsubscribeAll(protocol)


class XTMPServerFactory(_XTMPFactoryMixin, Factory):
    """
    Builds server-side L{XTMPProtocol}s.

    @param identity: the server's L{Identity}.
    @param authorizedKeys: L{PublicIdentity}s accepted by signature.
    @param checkToken: callable(bytes) -> bool accepting bearer tokens.
    @param allowAnonymous: accept clients presenting neither.
    @param allowPlaintext: allow C{Cipher.NONE} (only inside TLS).
    @param settings: L{Settings} names (C{heartbeatInterval}, ...).
    @ivar sessions: session id -> L{ResumptionState}, for resumption.
    @ivar live: session id -> the protocol currently serving it.
    @ivar replayCache: the L{HelloReplayCache} shared by this factory's
        connections (C{replayCache.rejected} counts refused replays).
    """

    maxResumableSessions = 10000
    #: How many recent client randoms L{replayCache} remembers.
    maxRememberedHellos = 10000
    #: Resumable sessions are pruned at most this often (seconds).
    pruneInterval = 1.0
    _prunedAt = None

    def __init__(self, identity, authorizedKeys=(), checkToken=None,
                 allowAnonymous=False, ciphers=DEFAULT_CIPHERS,
                 allowPlaintext=False, reactor=None, handlers=None,
                 relayStreams=False, **settings):
        self._setUp(reactor, handlers, settings)
        self.identity = identity
        self.authorizedKeys = list(authorizedKeys)
        self._authorizedMap = None
        self.checkToken = checkToken
        self.allowAnonymous = allowAnonymous
        self.ciphers = tuple(ciphers)
        self.allowPlaintext = allowPlaintext
        self.relayStreams = relayStreams
        self.sessions = {}
        self.live = {}
        self.replayCache = HelloReplayCache(self.maxRememberedHellos)

    def admitHandshake(self, protocol, hello):
        """
        Called when C{protocol}'s ClientHello has passed its cheap checks,
        before the server spends any public-key work on it.  Raise an
        L{XTMPRemoteError} (normally L{RateLimited}) to refuse the client:
        it gets a plaintext Error with that code.  The default admits
        everyone; a server role overrides this for per-address rates and
        caps on concurrent handshakes (see L{handshakesInProgress}, which
        counts C{protocol} too, and C{protocol.transport.getPeer()}).  The
        session logs such a refusal at debug level only: the policy is
        expected to log (and throttle) what it refuses.

        @param hello: the L{ClientHello}.
        """

    def makeEngine(self, protocol, now):
        """
        The sans-IO engine for a new server-side C{protocol}.
        """
        self._prune(now)
        if self._authorizedMap is None or \
                self._authorizedSource != self.authorizedKeys:
            # Indexed once, shared by every connection; rebuilt if the
            # application changes the list.
            self._authorizedSource = list(self.authorizedKeys)
            self._authorizedMap = authorizedKeyMap(self.authorizedKeys)
        handshake = ServerHandshake(
            self.identity, self.ciphers, self.allowPlaintext,
            self._authorizedMap, self.checkToken, self.allowAnonymous,
            resume=lambda sessionId: sessionId in self.sessions,
            replayCache=self.replayCache,
            admit=lambda hello: self.admitHandshake(protocol, hello),
            authorize=lambda identity, token: self.authorizeClient(
                protocol, identity, token))

        def resumptionFor(result, peerKey):
            """
            The state of a resumed session (same peer only), or a new one.
            """
            sid = result.sessionId
            state = self.sessions.get(sid) if result.resumed else None
            if state is not None:
                if state.peerKey != peerKey:
                    raise Unauthorized("session %#x belongs to another peer"
                                       % (sid,))
                old = self.live.get(sid)
                if old is not None and old is not protocol:
                    # The old connection is half-open; its peer moved on.
                    old.transport.abortConnection()
                return state
            state = ResumptionState(sid, peerKey)
            self.sessions[sid] = state
            return state

        return XTMPConnection(handshake, self.settings,
                              resumptionFor=resumptionFor, now=now)

    def authorizeClient(self, protocol, identity, token):
        """
        Called during C{protocol}'s handshake with the client's presented
        L{PublicIdentity} (signature verified) or bearer C{token} (both
        L{None} for an anonymous client), before the authorized-keys or
        token check.  Override to refuse clients by raising an
        L{XTMPRemoteError} such as C{Unauthorized(reason, code)}.
        """

    def _prune(self, now):
        # It scans every held session: at most once per pruneInterval, not
        # per connection (10,000 sessions made that cost more than a
        # handshake), so the cap may be passed for that long.
        if self._prunedAt is not None and \
                now - self._prunedAt < self.pruneInterval:
            return
        self._prunedAt = now
        horizon = now - self.settings.sessionTimeout
        live = self.live
        for sid, state in list(self.sessions.items()):
            if sid not in live and state.lastActive < horizon:
                del self.sessions[sid]
        excess = len(self.sessions) - self.maxResumableSessions
        if excess > 0:
            for sid in [s for s in self.sessions if s not in live][:excess]:
                del self.sessions[sid]

    def sessionStarted(self, protocol):
        """
        Track C{protocol} as the live connection of its session.
        """
        self.live[protocol.sessionId] = protocol

    def sessionLost(self, protocol):
        """
        Forget C{protocol}; its session state stays resumable until
        C{sessionTimeout} has passed.
        """
        _XTMPFactoryMixin.sessionLost(self, protocol)
        sid = protocol.sessionId
        if self.live.get(sid) is protocol:
            del self.live[sid]
        conn = protocol.connection
        if conn is not None and conn.resumption is not None:
            conn.resumption.lastActive = protocol.reactor.seconds()


class XTMPClientFactory(_XTMPFactoryMixin, ClientFactory):
    """
    Builds client-side L{XTMPProtocol}s.

    @param serverKey: the server's pinned L{PublicIdentity}, or
    @param verifyServer: callable(L{PublicIdentity}) -> bool.
    @param identity: the client's L{Identity}, or
    @param token: a bearer token (bytes).
    @param kem: L{KEM.MLKEM768} (default) or L{KEM.MLKEM1024}.
    @param resume: resume a lost session (resending unacknowledged
        messages) on the next connection built by this factory.
    """

    def __init__(self, serverKey=None, verifyServer=None, identity=None,
                 token=None, ciphers=DEFAULT_CIPHERS, kem=KEM.MLKEM768,
                 allowPlaintext=False, reactor=None, handlers=None,
                 resume=True, **settings):
        self._setUp(reactor, handlers, settings)
        self.serverKey = serverKey
        self.verifyServer = verifyServer
        self.identity = identity
        self.token = token
        self.ciphers = tuple(ciphers)
        self.kem = kem
        self.allowPlaintext = allowPlaintext
        self.resume = resume
        self.resumable = []
        # Fail early on a bad configuration rather than per connection.
        self._handshake(0)

    def _handshake(self, previousSessionId):
        return ClientHandshake(self.serverKey, self.verifyServer,
                               self.identity, self.token, self.ciphers,
                               self.kem, self.allowPlaintext,
                               previousSessionId)

    def makeEngine(self, protocol, now):
        """
        The sans-IO engine for a new client-side C{protocol}, resuming a
        lost session if one is held.
        """
        state = self.resumable.pop() if (self.resume and self.resumable) \
            else None
        return XTMPConnection(
            self._handshake(state.sessionId if state else 0), self.settings,
            resumption=state, now=now)

    def sessionLost(self, protocol):
        """
        Keep the session's state for resumption if anything is unfinished.
        """
        _XTMPFactoryMixin.sessionLost(self, protocol)
        conn = protocol.connection
        if (conn is not None and conn.resumption is not None
                and conn.resumption.sessionId and self.resume
                and (conn.resumption.pending() or not isinstance(
                    protocol._closeReason, ConnectionDone))):
            self.resumable.append(conn.resumption)


def connectXTMP(endpoint, factory):
    """
    Connect C{factory} with C{endpoint} and wait for the handshake.

    @return: a L{Deferred} firing with the L{XTMPProtocol} once the session
        is ready.
    """
    return endpoint.connect(factory).addCallback(lambda p: p.whenHandshakeDone())
