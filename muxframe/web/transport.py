"""
A WebSocket connection as an ordinary byte-stream transport.

The protocol inside (any Twisted protocol: an XTMP session, a MIO or BMP
multiplexer, an echo server) sees a transport that behaves like TCP; on the
wire its bytes travel as the payloads of WebSocket *binary* messages.

Rules:

 - Message boundaries mean nothing: each binary message's payload is handed
   to C{dataReceived} as it comes; writes made in one reactor turn are
   joined, and cut into messages of at most C{writeSize} bytes.  A text message is not part of the byte stream:
   the connection fails with close code 1003 (unsupported data).
 - Incoming frames and messages are bounded (C{maxMessageSize}, enforced
   by autobahn before the payload is buffered): a larger one fails the
   connection with close code 1009 (message too big).
 - Backpressure both ways.  The inner protocol's C{transport.pauseProducing()}
   pauses reading the WebSocket's own TCP (or TLS) transport; messages
   already parsed from the last read are held (at most one read's worth)
   and delivered on C{resumeProducing()}.  A producer the inner protocol
   registers is registered with the TCP transport itself, so a slow socket
   pauses it above the socket's high-water mark.
 - C{loseConnection()} sends a WebSocket Close (1000) after everything
   written; C{abortConnection()} drops the TCP connection.  The inner
   protocol's C{connectionLost} gets L{ConnectionDone} for a clean close
   (1000 or 1001), else L{WebSocketClosed} carrying the close code.
 - No half-close: a WebSocket Close ends both directions.
 - The server ends the TCP connection normally (RFC 6455 7.1.1: a FIN
   after everything written, never a reset) once the Close handshake is
   done, also when the peer's Close was invalid (a reserved code, a reason
   over 125 bytes or not UTF-8): that fails the connection with our Close
   (1002; 1007 for the reason not UTF-8), which the peer still reads.  A
   normal close that has not ended the connection within
   C{closeHandshakeTimeout} (a peer that reads nothing) drops it.
 - Per-message compression is never negotiated (the byte stream's own
   protocol compresses if it wants to, with its own bounds).
 - Logs never amplify a peer: autobahn's logger on these protocols
   (L{autobahnLog}) is a txaio logger at txaio's level (C{info} unless
   the application lowers it: autobahn's per-read, per-write and per-ping
   debug lines are not even built), published under C{muxframe.web}
   (muxframe's minimum level applies) through a L{ThrottlingObserver}: at
   most 10 lines per level each 60 s, the rest counted.  Our own lines a
   peer can cause (a refused origin, a refused text message) go through
   L{refusalThrottle}, 10 per kind each 60 s.
"""

import txaio

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer, IPushProducer, ITransport,
)
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from muxframe.errors import MuxframeError
from muxframe.logthrottle import (
    LogThrottle, ThrottlingObserver, logger, observer, throttled,
)

#: Lines about refusals a peer causes at will (module rules).
refusalThrottle = LogThrottle(perInterval=10, interval=60.0)

#: autobahn's logger on our WebSocket protocols (module rules).
autobahnLog = txaio.make_logger(observer=ThrottlingObserver(
    observer, LogThrottle(perInterval=10, interval=60.0)))

#: Close codes that end the stream cleanly (None and 1005: a Close
#: without a code).
CLEAN_CLOSE_CODES = (None, 1000, 1001, 1005)
CLOSE_UNSUPPORTED_DATA = 1003


class WebSocketClosed(MuxframeError, ConnectionLost):
    """
    The WebSocket ended without a clean close.

    @ivar code: the close code (1006 when the connection dropped without
        a Close; 1009 for a message over the limit; 1002 for a protocol
        error).
    @ivar reason: the close reason, as text.
    """

    def __init__(self, code, reason=""):
        self.code = code
        self.reason = reason
        ConnectionLost.__init__(self, "WebSocket closed with code %s: %s"
                                % (code, reason))

    def __str__(self):
        return "WebSocket closed with code %s: %s" % (self.code, self.reason)


class WebSocketHandshakeFailed(MuxframeError, ConnectionLost):
    """
    The WebSocket opening handshake did not complete (refused origin or
    path, not a WebSocket server, timeout).
    """


@implementer(ITransport, IPushProducer, IConsumer)
class WebSocketStreamTransport:
    """
    The transport given to the protocol carried over one WebSocket
    connection.  Built by L{StreamWebSocketMixin}; owns the stream's state
    (paused reading, held data, closing).

    @ivar request: the opening handshake's
        C{autobahn.websocket.types.ConnectionRequest} on a server (path,
        headers, origin), the C{ConnectionResponse} on a client.
    """

    disconnecting = False

    def __init__(self, webSocket, protocol, writeSize, request=None,
                 reactor=None):
        self._webSocket = webSocket
        self._protocol = protocol
        self._writeSize = writeSize
        self._reactor = reactor
        self.request = request
        self._readPaused = False
        self._held = []
        self._lost = False
        self._pending = []
        self._pendingSize = 0
        self._flushCall = None

    # -- ITransport --------------------------------------------------------

    def write(self, data):
        """
        Send C{data}.  Writes made in one reactor turn are joined into
        binary messages of up to C{writeSize} bytes (a message per small
        write would cost more than the data); nothing waits longer than the
        end of the turn, and at most C{writeSize} bytes wait here.  Like
        TCP, data written after the connection closed is dropped.
        """
        if self._lost or self.disconnecting or not data:
            return
        self._pending.append(bytes(data))
        self._pendingSize += len(data)
        if self._pendingSize >= self._writeSize:
            self._flush()
        elif self._flushCall is None:
            reactor = self._reactor
            if reactor is None:
                from twisted.internet import reactor
            self._flushCall = reactor.callLater(0, self._flush)

    def _flush(self):
        call, self._flushCall = self._flushCall, None
        if call is not None and call.active():
            call.cancel()
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending = []
        self._pendingSize = 0
        if self._lost:
            return
        size = self._writeSize
        if len(data) <= size:
            self._webSocket.sendStreamMessage(data)
            return
        view = memoryview(data)
        for offset in range(0, len(data), size):
            self._webSocket.sendStreamMessage(bytes(view[offset:offset + size]))

    def writeSequence(self, data):
        """
        Send the concatenation of C{data}.
        """
        self.write(b"".join(data))

    def loseConnection(self):
        """
        Close after everything written: a WebSocket Close with code 1000.
        """
        if self._lost or self.disconnecting:
            return
        self._flush()
        self.disconnecting = True
        self._webSocket.sendClose(1000)

    def abortConnection(self):
        """
        Drop the underlying connection at once.
        """
        if not self._lost:
            self.disconnecting = True
            self._dropPending()
            self._webSocket.transport.abortConnection()

    def getPeer(self):
        """
        The underlying TCP connection's peer address.
        """
        return self._webSocket.transport.getPeer()

    def getHost(self):
        """
        The underlying TCP connection's local address.
        """
        return self._webSocket.transport.getHost()

    # -- IPushProducer: the inner protocol pausing its reading -------------

    def pauseProducing(self):
        """
        Stop reading from the underlying connection.
        """
        if not self._readPaused and not self._lost:
            self._readPaused = True
            self._webSocket.transport.pauseProducing()

    def resumeProducing(self):
        """
        Deliver what arrived meanwhile, then read again.
        """
        if not self._readPaused or self._lost:
            return
        self._readPaused = False
        while self._held and not self._readPaused and not self._lost:
            self._protocol.dataReceived(self._held.pop(0))
        if not self._readPaused and not self._lost:
            self._webSocket.transport.resumeProducing()

    def stopProducing(self):
        """
        The consumer is going away: close.
        """
        self.loseConnection()

    # -- IConsumer: a producer feeding the inner protocol's writes ---------

    def registerProducer(self, producer, streaming):
        """
        Register C{producer} with the underlying transport, which pauses it
        while its send buffer is full.
        """
        self._webSocket.transport.registerProducer(producer, streaming)

    def unregisterProducer(self):
        """
        Unregister the producer from the underlying transport.
        """
        transport = self._webSocket.transport
        if transport is not None:
            transport.unregisterProducer()

    # -- called by the WebSocket protocol ----------------------------------

    def messageReceived(self, payload):
        """
        One binary message's payload arrived.
        """
        if self._lost:
            return
        if self._readPaused:
            self._held.append(payload)
        else:
            self._protocol.dataReceived(payload)

    def connectionLost(self, reason):
        """
        The WebSocket ended: tell the inner protocol (once).
        """
        if self._lost:
            return
        self._lost = True
        self._held = []
        self._dropPending()
        self._protocol.connectionLost(Failure(reason))

    def _dropPending(self):
        call, self._flushCall = self._flushCall, None
        if call is not None and call.active():
            call.cancel()
        self._pending = []
        self._pendingSize = 0


class _Call:
    __slots__ = ("_delayed",)

    def __init__(self, delayed):
        self._delayed = delayed

    def cancel(self):
        """
        Cancel if still pending (autobahn may cancel a call that fired).
        """
        if self._delayed.active():
            self._delayed.cancel()


class ReactorTimer:
    """
    The timer interface autobahn's factories use (C{call_later}), on the
    factory's own reactor, one C{DelayedCall} per timer, really cancelled.
    autobahn's default batches timers into buckets on txaio's global loop,
    whose calls stay scheduled after cancellation; here a closed
    connection leaves no timer behind and a test's C{Clock} drives them.
    """

    def __init__(self, reactor=None):
        self._reactor = reactor

    def call_later(self, delay, function, *args, **kwargs):
        """
        Call C{function} after C{delay} seconds.
        """
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        return _Call(reactor.callLater(delay, function, *args, **kwargs))


def closeReason(wasClean, code, reason):
    """
    The exception an inner protocol's C{connectionLost} gets for a
    WebSocket close.
    """
    if wasClean and code in CLEAN_CLOSE_CODES:
        return ConnectionDone(reason or "")
    return WebSocketClosed(code, reason or "")


class StreamWebSocketMixin:
    """
    Mixed into autobahn's Twisted WebSocket protocols: carries one inner
    protocol, built by C{self.factory.buildStreamProtocol()} when the
    WebSocket opens, on a L{WebSocketStreamTransport}.

    @ivar stream: the L{WebSocketStreamTransport} once open.
    @ivar streamLog: the logger of our own lines (muxframe's).
    """

    #: autobahn's own lines: level-filtered by txaio and throttled (module
    #: rules), instead of autobahn's default logger.
    log = autobahnLog
    streamLog = logger("muxframe.web")
    stream = None
    streamProtocol = None
    _handshake = None
    _inCloseFrame = False
    _closeDeadline = None

    def sendStreamMessage(self, payload):
        """
        Send one binary message (called by the stream transport).
        """
        if self.state == self.STATE_OPEN:
            self.sendMessage(payload, isBinary=True)

    def onOpen(self):
        """
        The opening handshake is done: start the inner protocol.
        """
        protocol = self.factory.buildStreamProtocol(self.transport.getPeer())
        if protocol is None:
            self.sendClose(1011, "no protocol for this connection")
            return
        self.streamProtocol = protocol
        self.stream = WebSocketStreamTransport(
            self, protocol, self.factory.writeSize, self._handshake,
            self.factory.reactor)
        protocol.makeConnection(self.stream)
        self.factory.streamOpened(self, protocol)

    def onMessage(self, payload, isBinary):
        """
        A complete message: binary ones are stream data.
        """
        if not isBinary:
            throttled(self.streamLog, refusalThrottle,
                      self.factory.reactor.seconds(), LogLevel.info,
                      "text message", "websocket {peer}: text message "
                      "refused", peer=self.peer)
            self._fail_connection(CLOSE_UNSUPPORTED_DATA,
                                  "text messages are not supported")
            return
        if self.stream is not None:
            self.stream.messageReceived(payload)

    def onCloseFrame(self, code, reasonRaw):
        """
        The peer's Close arrived: autobahn's handling, noting that a drop of
        the connection it asks for meanwhile ends a Close handshake.
        """
        self._inCloseFrame = True
        try:
            return super().onCloseFrame(code, reasonRaw)
        finally:
            self._inCloseFrame = False

    def _closeConnection(self, abort=False):
        """
        End the TCP connection (autobahn's C{dropConnection}).  The end of a
        Close handshake closes it normally (module rules): autobahn aborts
        there, on a server, which discards the Close it has just written
        when the peer's Close was invalid.  A normal close is bounded by
        C{closeHandshakeTimeout}.
        """
        if self._inCloseFrame:
            abort = False
        super()._closeConnection(abort)
        if not abort and self._closeDeadline is None:
            self._closeDeadline = self.factory.reactor.callLater(
                self.closeHandshakeTimeout, self._closeDeadlinePassed)

    def _closeDeadlinePassed(self):
        self._closeDeadline = None
        if self.transport is not None:
            self.transport.abortConnection()

    def onClose(self, wasClean, code, reason):
        """
        The WebSocket (and its TCP connection) ended.
        """
        # autobahn leaves its close-handshake timer running after the
        # connection is gone; it would fire for nothing.
        call, self.closeHandshakeTimeoutCall = \
            self.closeHandshakeTimeoutCall, None
        if call is not None:
            call.cancel()
        call, self._closeDeadline = self._closeDeadline, None
        if call is not None and call.active():
            call.cancel()
        if wasClean and self.closedByMe:
            # We sent the first Close: our code says why, not the echo.
            code, reason = self.localCloseCode, self.localCloseReason
        if self.stream is not None:
            self.stream.connectionLost(closeReason(wasClean, code, reason))
            self.factory.streamClosed(self)
        else:
            self.factory.streamFailed(self, WebSocketHandshakeFailed(
                reason or "WebSocket opening handshake failed"))
