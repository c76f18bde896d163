"""
Tunnels: splice two connections together both ways, with backpressure and
half-close, and the factories the twistd roles are made of.

  - L{EchoFactory}: each stream echoes what it receives.
  - L{ForwardFactory}: each connection (a stream the peer opened) is
    connected to a target endpoint and spliced to it.
  - L{TunnelFactory}: each connection (a local TCP connection) opens a
    stream with an C{openStream(factory)} callable (a
    L{muxframe.endpoints.MultiplexedClientEndpoint}'s C{connect} for a
    forward tunnel, L{reverseOpener} for a reverse tunnel, which opens
    streams only toward the authenticated client it names) and is spliced
    to it.

Backpressure: each side of a splice is registered as the push producer of
the other side's transport, so a slow reader pauses its writer (TCP stops
reading the socket; a stream withholds its peer's credit).  Half-close
travels through: the end of one side's input half-closes the other side's
output.  A side lost uncleanly (reset stream, lost connection, refused
stream) aborts the other side, so a tunneled TCP connection whose stream
fails is closed with a reset rather than looking like a clean end.
"""

from zope.interface import implementer

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel

from .describe import addressText
from .errors import SessionClosedError
from .logthrottle import LogThrottle, logger, throttled

# Per-connection events (spliced, closed) are debug: the roles do not write
# them by default, so a flood of connections writes no line each.
log = logger(namespace="muxframe.tunnel")


class TunnelStats:
    """
    Counters of one tunnel factory.

    @ivar opened: splices made.
    @ivar active: splices not yet closed.
    @ivar failed: connections that could not be spliced or ended uncleanly.
    @ivar bytesIn: bytes carried from the accepted side to the other side.
    @ivar bytesOut: bytes carried back.
    """

    def __init__(self):
        self.opened = 0
        self.active = 0
        self.failed = 0
        self.bytesIn = 0
        self.bytesOut = 0

    def __repr__(self):
        return "<TunnelStats opened=%d active=%d failed=%d in=%d out=%d>" % (
            self.opened, self.active, self.failed, self.bytesIn, self.bytesOut)


@implementer(IPushProducer)
class _TransportProducer:
    """
    One side's transport as the producer of the other side's output;
    C{stopProducing} is left to the splice's own close handling.
    """

    def __init__(self, transport):
        self.transport = transport

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        pass


@implementer(IHalfCloseableProtocol)
class SpliceProtocol(Protocol):
    """
    One side of a splice.  Until L{link}ed it pauses its transport and
    buffers what arrives anyway.

    @ivar other: the other side, once linked.
    @ivar peer: text naming the peer, for logs (set by tunnel factories).
    @ivar onMade: called with this protocol when it is connected.
    @ivar onLost: called with this protocol and the reason when it is lost.
    """

    other = None
    onMade = None
    onLost = None
    stats = None
    inbound = True

    def __init__(self, label="splice"):
        self.label = label
        self._buffer = []
        self._readEnded = False
        self._writeEnded = False
        self._endForwarded = False
        self.disconnected = False
        self.reason = None
        self.bytesReceived = 0
        self.peer = None
        self.linked = False
        self.pending = None

    def connectionMade(self):
        self.transport.pauseProducing()
        if self.onMade is not None:
            self.onMade(self)

    def dataReceived(self, data):
        self.bytesReceived += len(data)
        if self.stats is not None:
            if self.inbound:
                self.stats.bytesIn += len(data)
            else:
                self.stats.bytesOut += len(data)
        other = self.other
        if other is None:
            self._buffer.append(data)
        elif not other.disconnected:
            other.transport.write(data)

    def readConnectionLost(self):
        self._readEnded = True
        self._forwardEnd()
        self._maybeClose()

    def _forwardEnd(self):
        """
        Our input ended: end the other side's output.  Our transport
        produces nothing more, so it stops being the other's producer first
        (a TCP transport with a paused producer would otherwise never send
        its FIN).
        """
        other = self.other
        if other is None or self._endForwarded:
            return
        self._endForwarded = True
        if not other.disconnected:
            transport = other.transport
            transport.unregisterProducer()
            loseWriteConnection = getattr(transport, "loseWriteConnection", None)
            if loseWriteConnection is None:
                # No half-close (a TLS transport): close once the output is
                # sent, rather than leave both ends waiting for each other.
                log.debug("{kind}: {peer} cannot half-close; closing it",
                          kind=self.label, peer=addressText(transport.getPeer()),
                          streamId=_streamIdOf(self, other))
                transport.loseConnection()
            else:
                loseWriteConnection()

    def writeConnectionLost(self):
        self._writeEnded = True
        self._maybeClose()

    def _maybeClose(self):
        if self._readEnded and self._writeEnded and not self.disconnected:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.disconnected = True
        self.reason = reason
        self._buffer = []
        _propagate(self)
        if self.onLost is not None:
            onLost, self.onLost = self.onLost, None
            onLost(self, reason)

    def abort(self):
        """
        Abort this side (nothing to splice it to).
        """
        if not self.disconnected and self.transport is not None:
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()


def link(first, second):
    """
    Splice two connected L{SpliceProtocol}s: what each receives is written
    to the other, each transport is the producer of the other's output, and
    anything buffered before the link is passed on.
    """
    first.other = second
    second.other = first
    sides = (first, second)
    for side in sides:
        buffered, side._buffer = side._buffer, []
        if buffered:
            side.other.transport.writeSequence(buffered)
    for side in sides:
        if not side.disconnected:
            side.transport.resumeProducing()
    for side in sides:
        other = side.other
        if not (side.disconnected or other.disconnected or other._readEnded):
            side.transport.registerProducer(_TransportProducer(other.transport), True)
    for side in sides:
        if side._readEnded:
            side._forwardEnd()
    for side in sides:
        if side.disconnected:
            _propagate(side)


def _propagate(lost):
    """
    C{lost} is gone: close the other side, cleanly after a clean end (its
    buffered output is sent first), with an abort otherwise.
    """
    other = lost.other
    if other is not None and not other.disconnected:
        other.transport.unregisterProducer()
        if lost.reason is not None and lost.reason.check(ConnectionDone):
            other.transport.loseConnection()
        else:
            other.transport.abortConnection()


class _OneShotFactory(Factory):
    """
    Build one L{SpliceProtocol} that calls C{onMade} when connected.
    """

    noisy = False  # one per stream: the tunnel logs its own line

    def __init__(self, onMade, label, stats=None, inbound=False):
        self.onMade = onMade
        self.label = label
        self.stats = stats
        self.inbound = inbound

    def buildProtocol(self, addr):
        protocol = SpliceProtocol(self.label)
        protocol.onMade = self.onMade
        protocol.stats = self.stats
        protocol.inbound = self.inbound
        protocol.factory = self
        return protocol


class _SpliceFactory(Factory):
    """
    Shared machinery of L{ForwardFactory} and L{TunnelFactory}: accept a
    connection, pause it, open the other side with L{_openOther}, splice.
    """

    kind = "tunnel"

    def __init__(self):
        self.stats = TunnelStats()
        self.logThrottle = LogThrottle()

    def buildProtocol(self, addr):
        protocol = SpliceProtocol(self.kind)
        protocol.factory = self
        protocol.stats = self.stats
        protocol.onMade = self._accepted
        protocol.onLost = self._acceptedLost
        return protocol

    def _accepted(self, accepted):
        peer = addressText(accepted.transport.getPeer())
        accepted.peer = peer
        self.stats.active += 1

        def otherMade(other):
            # Connected: from now on closing either side is how to give up
            # (cancelling the connect attempt, which is still completing,
            # would be too late).
            accepted.pending = None
            if accepted.disconnected:
                other.transport.loseConnection()
                return
            accepted.linked = True
            self.stats.opened += 1
            link(accepted, other)
            log.debug(
                "{kind}: {peer} spliced to {other}", kind=self.kind,
                peer=peer, other=addressText(other.transport.getPeer()),
                streamId=_streamIdOf(accepted, other))

        try:
            d = self._openOther(accepted, _OneShotFactory(
                otherMade, self.kind, self.stats, inbound=False))
        except Exception as e:
            from twisted.internet.defer import fail
            d = fail(e)
        if not d.called:
            accepted.pending = d

        def failed(reason):
            accepted.pending = None
            self.stats.failed += 1
            from twisted.internet import reactor
            throttled(log, self.logThrottle, reactor.seconds(), LogLevel.warn,
                      "could not be connected",
                      "{kind}: {peer} could not be connected: {error}",
                      kind=self.kind, peer=peer, error=reason.getErrorMessage(),
                      streamId=_streamIdOf(accepted, None))
            accepted.abort()

        def done(result):
            accepted.pending = None
            return result

        d.addCallbacks(done, failed)

    def _acceptedLost(self, accepted, reason):
        self.stats.active -= 1
        pending, accepted.pending = accepted.pending, None
        if pending is not None:
            try:
                pending.cancel()
            except Exception:
                log.failure("{kind}: cancelling the connection for {peer} failed",
                            kind=self.kind, peer=accepted.peer,
                            streamId=_streamIdOf(accepted))
        clean = reason.check(ConnectionDone) is not None
        if not clean and accepted.linked:
            self.stats.failed += 1
        log.debug("{kind}: {peer} closed ({outcome}; {bytesIn} bytes in, {bytesOut} out)",
                 kind=self.kind, peer=accepted.peer or "?",
                 outcome="clean" if clean else reason.getErrorMessage(),
                 bytesIn=accepted.bytesReceived,
                 bytesOut=accepted.other.bytesReceived if accepted.other else 0,
                 streamId=_streamIdOf(accepted, accepted.other))

    def _openOther(self, accepted, factory):
        raise NotImplementedError()


def _streamIdOf(*protocols):
    for protocol in protocols:
        transport = getattr(protocol, "transport", None)
        streamId = getattr(transport, "streamId", None)
        if streamId is not None:
            return streamId
    return None


class ForwardFactory(_SpliceFactory):
    """
    Connect each accepted connection (typically a stream the peer opened) to
    C{target} and splice them.

    @param target: an L{IStreamClientEndpoint}.
    """

    kind = "forward"

    def __init__(self, target):
        _SpliceFactory.__init__(self)
        self.target = target

    def _openOther(self, accepted, factory):
        return self.target.connect(factory)


class TunnelFactory(_SpliceFactory):
    """
    Open a stream for each accepted (local) connection with C{openStream}
    and splice them.

    @param openStream: a callable taking a protocol factory and returning a
        Deferred that fires with the connected protocol, such as
        L{muxframe.endpoints.MultiplexedClientEndpoint.connect} or
        L{reverseOpener}'s result.
    @param kind: a label for logs (C{"forward tunnel"}, C{"reverse tunnel"}).
    """

    def __init__(self, openStream, kind="tunnel"):
        _SpliceFactory.__init__(self)
        self.openStream = openStream
        self.kind = kind

    def _openOther(self, accepted, factory):
        return self.openStream(factory)


def reverseOpener(serverEndpoint, name):
    """
    Return an C{openStream(factory)} callable that opens a stream toward the
    client of C{serverEndpoint} (a
    L{muxframe.endpoints.MultiplexedServerEndpoint}) authenticated as
    C{name} (its TLS certificate's common name, or its token's name; see
    L{muxframe.tunnelauth}), its most recent connection if it has several.
    An unauthenticated connection never gets a stream: without such a
    client the callable fails at once.
    """
    from twisted.internet.defer import fail

    def openStream(factory):
        mux = serverEndpoint.authenticatedMultiplexer(name)
        if mux is None:
            return fail(SessionClosedError(
                "no muxframe client authenticated as %r is connected" % (name,)))
        return mux.openStream(factory)

    return openStream


@implementer(IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """
    Echo what arrives, with backpressure (the transport produces for
    itself) and half-close (the end of input ends the output).
    """

    def connectionMade(self):
        self._streamId = getattr(self.transport, "streamId", None)
        self._peer = addressText(self.transport.getPeer())
        self.transport.registerProducer(_TransportProducer(self.transport), True)
        log.debug("echo: stream {streamId} from {peer} opened",
                  streamId=self._streamId, peer=self._peer)

    def dataReceived(self, data):
        self.transport.write(data)

    def readConnectionLost(self):
        self.transport.unregisterProducer()
        self.transport.loseWriteConnection()

    def writeConnectionLost(self):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        log.debug("echo: stream {streamId} from {peer} closed: {reason}",
                  streamId=self._streamId, peer=self._peer,
                  reason=reason.getErrorMessage())


class EchoFactory(Factory):
    """
    Build L{EchoProtocol}s.
    """

    protocol = EchoProtocol


__all__ = [
    "EchoFactory",
    "EchoProtocol",
    "ForwardFactory",
    "SpliceProtocol",
    "TunnelFactory",
    "TunnelStats",
    "link",
    "reverseOpener",
]
