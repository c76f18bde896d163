"""
The client side: connect any protocol factory through a WebSocket.

L{WebSocketClientEndpoint.connect} connects the inner endpoint (TCP, TLS),
performs the opening handshake for C{ws://host:port/path} (or C{wss://}),
and fires with the factory's protocol once it runs over the WebSocket, as
an ordinary endpoint's Deferred fires with a connected protocol.
"""

from autobahn.twisted.websocket import (
    WebSocketClientFactory, WebSocketClientProtocol,
)
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from muxframe.web.limits import protocolOptions, resolveLimits
from muxframe.web.transport import ReactorTimer, StreamWebSocketMixin


class StreamWebSocketClientProtocol(StreamWebSocketMixin,
                                    WebSocketClientProtocol):
    """
    A client WebSocket whose binary messages carry one inner protocol.
    """

    def onConnect(self, response):
        """
        Keep the server's handshake response for the stream transport.
        """
        self._handshake = response


class StreamWebSocketClientFactory(WebSocketClientFactory):
    """
    Builds the WebSocket for one C{connect()}; C{whenOpen} fires with the
    inner protocol, or fails if the handshake does not complete.
    """

    protocol = StreamWebSocketClientProtocol

    def __init__(self, wrappedFactory, url, origin=None, headers=None,
                 reactor=None, **limits):
        WebSocketClientFactory.__init__(
            self, url=url, origin=origin, headers=headers, reactor=reactor,
            useragent="muxframe")
        self._batched_timer = ReactorTimer(reactor)
        self.wrappedFactory = wrappedFactory
        self.limits = resolveLimits(limits)
        self.writeSize = self.limits["writeSize"]
        self.setProtocolOptions(**protocolOptions(self.limits))
        self.whenOpen = Deferred()

    def buildStreamProtocol(self, address):
        """
        The inner protocol, built by the wrapped factory.
        """
        return self.wrappedFactory.buildProtocol(address)

    def streamOpened(self, webSocket, protocol):
        """
        Fire C{whenOpen} with the running inner protocol.
        """
        if not self.whenOpen.called:
            self.whenOpen.callback(protocol)

    def streamClosed(self, webSocket):
        """
        Nothing to track on the client.
        """

    def streamFailed(self, webSocket, reason):
        """
        Fail C{whenOpen}: the handshake did not complete.
        """
        if not self.whenOpen.called:
            self.whenOpen.errback(Failure(reason))


class WebSocketClientEndpoint:
    """
    A client endpoint carrying each connection over a WebSocket.

    @param inner: the C{IStreamClientEndpoint} reaching the server.
    @param host: the server's host name, for the URL and C{Host} header.
    @param port: the server's port.
    @param path: the WebSocket's URL path.
    @param secure: C{wss} (the inner endpoint must be TLS).
    @param origin: an C{Origin} header to send (browsers send one; programs
        normally do not).
    @param limits: L{muxframe.web.limits.LIMITS} names.
    """

    def __init__(self, inner, host, port, path="/", secure=False,
                 origin=None, headers=None, reactor=None, **limits):
        if not path.startswith("/"):
            raise ValueError("WebSocket path must start with '/', not %r"
                             % (path,))
        self.inner = inner
        self.reactor = reactor
        self.origin = origin
        self.headers = headers
        self.limits = resolveLimits(limits)
        scheme = "wss" if secure else "ws"
        hostPart = "[%s]" % (host,) if ":" in host else host
        self.url = "%s://%s:%d%s" % (scheme, hostPart, int(port), path)

    def connect(self, factory):
        """
        Connect, open the WebSocket, start C{factory}'s protocol on it.

        @return: a L{Deferred} firing with that protocol, or failing with
            L{WebSocketHandshakeFailed} or the inner endpoint's error.
        """
        try:
            wsFactory = StreamWebSocketClientFactory(
                factory, self.url, self.origin, self.headers, self.reactor,
                **self.limits)
        except Exception:
            return fail()

        webSockets = []

        def connected(webSocket):
            webSockets.append(webSocket)
            return wsFactory.whenOpen

        def cancel(d):
            """
            Abandon the attempt: the TCP connection, or the handshake.
            """
            if webSockets:
                webSockets[0].transport.abortConnection()
            else:
                attempt.cancel()

        def relay(outcome):
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)
            elif isinstance(outcome, Failure):
                return None
            else:
                # Cancelled while the handshake finished: drop it.
                outcome.transport.abortConnection()

        result = Deferred(cancel)
        attempt = self.inner.connect(wsFactory)
        attempt.addCallback(connected).addBoth(relay)
        return result
