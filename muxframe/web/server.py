"""
The server side: a web endpoint that upgrades requests for one path to
WebSocket streams of any protocol factory, checks the browser's origin, and
serves static files (a page, the JavaScript client) everywhere else.

One port, one C{twisted.web} site:

 - C{GET <path>} with C{Upgrade: websocket}: the opening handshake
   (autobahn), the origin check (L{muxframe.web.origins}), then the wrapped
   factory's protocol runs over a L{WebSocketStreamTransport}.
 - Anything else: the C{root} resource given (for instance
   C{twisted.web.static.File(directory)}), else 404.

Rules:

 - A request body is read up to L{MAX_BODY} bytes (L{WebRequest}): a
   declared C{Content-Length} over it is answered 413 at once and the
   connection closed; a chunked body that grows past it is discarded as it
   comes and answered 413.  Memory per request is bounded by L{MAX_BODY}.
 - An upgrade request (C{Upgrade: websocket}) has no body (RFC 6455 4.1:
   a GET): one with a C{Content-Length} other than 0 or any
   C{Transfer-Encoding} is answered 400 and closed before its body is read
   and before autobahn sees it.
 - A request must arrive whole within C{openHandshakeTimeout} seconds of
   the connection's accept (or of the previous response's end, on a
   kept-alive connection), however its bytes trickle in; then the
   connection is dropped (L{WebChannel}).  The upgrade request is
   handed to autobahn once it arrived whole, so this is the deadline from
   accept to upgrade.
 - Admission at accept: a wrapped factory with C{reserveConnection} and
   C{releaseConnection} (the XTMP server's) is asked when the TCP
   connection is accepted, and counts it until the upgrade hands it over
   (its session is admitted again then) or it closes; a refused one is
   answered HTTP 503 and closed, before any request is read.
"""

from io import BytesIO

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketServerFactory, WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import succeed
from twisted.logger import LogLevel
from twisted.internet.protocol import Protocol
from twisted.web.resource import Resource
from twisted.web.server import Site

from muxframe.admin.http import BoundedRequest, DeadlineChannel
from muxframe.web.limits import protocolOptions, resolveLimits
from muxframe.web.origins import OriginPolicy
from muxframe.logthrottle import throttled
from muxframe.tls import offersHTTP11
from muxframe.web.transport import (
    ReactorTimer, StreamWebSocketMixin, refusalThrottle,
)


class StreamWebSocketServerProtocol(StreamWebSocketMixin,
                                    WebSocketServerProtocol):
    """
    A server WebSocket whose binary messages carry one inner protocol.
    """

    def onConnect(self, request):
        """
        Check the origin of the upgrade request; refuse with 403.
        """
        allowed, why = self.factory.originPolicy.check(
            request.headers.get("origin"), request.headers.get("host"),
            self.factory.secure)
        if not allowed:
            self.factory.refusedOrigins += 1
            throttled(self.streamLog, refusalThrottle,
                      self.factory.reactor.seconds(), LogLevel.info,
                      "origin", "websocket from {peer} refused: {why}",
                      peer=request.peer, why=why)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, why)
        self._handshake = request
        return None


class StreamWebSocketServerFactory(WebSocketServerFactory):
    """
    Wraps an ordinary protocol factory: each WebSocket connection carries
    one protocol built by C{wrappedFactory}.

    @ivar originPolicy: the L{OriginPolicy} applied to upgrade requests.
    @ivar refusedOrigins: how many upgrades the policy refused.
    @ivar connections: live WebSocket protocols carrying a stream.
    """

    protocol = StreamWebSocketServerProtocol

    def __init__(self, wrappedFactory, originPolicy=None, secure=False,
                 reactor=None, **limits):
        WebSocketServerFactory.__init__(self, reactor=reactor,
                                        server="muxframe")
        self._batched_timer = ReactorTimer(reactor)
        self.wrappedFactory = wrappedFactory
        self.originPolicy = originPolicy or OriginPolicy()
        self.secure = secure
        self.limits = resolveLimits(limits)
        self.writeSize = self.limits["writeSize"]
        self.setProtocolOptions(webStatus=False,
                                **protocolOptions(self.limits))
        self.refusedOrigins = 0
        self.connections = set()

    def reserveConnection(self, address):
        """
        Admit a connection from C{address} at accept, before its upgrade
        (module rules): the wrapped factory's C{reserveConnection} if it has
        one.

        @return: L{None} if admitted, else the reason of the refusal.
        """
        reserve = getattr(self.wrappedFactory, "reserveConnection", None)
        return reserve(address) if reserve is not None else None

    def releaseConnection(self, address):
        """
        A connection L{reserveConnection} admitted was upgraded or closed.
        """
        release = getattr(self.wrappedFactory, "releaseConnection", None)
        if release is not None:
            release(address)

    def buildStreamProtocol(self, address):
        """
        The inner protocol for a connection from C{address}.
        """
        return self.wrappedFactory.buildProtocol(address)

    def streamOpened(self, webSocket, protocol):
        """
        A WebSocket opened and its inner protocol started.
        """
        self.connections.add(webSocket)

    def streamClosed(self, webSocket):
        """
        An open WebSocket ended.
        """
        self.connections.discard(webSocket)

    def streamFailed(self, webSocket, reason):
        """
        A connection ended before its WebSocket opened.
        """

    def startFactory(self):
        """
        Start the wrapped factory too.
        """
        self.wrappedFactory.doStart()
        WebSocketServerFactory.startFactory(self)

    def stopFactory(self):
        """
        Stop the wrapped factory too.
        """
        self.wrappedFactory.doStop()
        WebSocketServerFactory.stopFactory(self)


#: The largest request body the site reads, in bytes: its pages and the
#: upgrade take none.
MAX_BODY = 4 * 1024


def _isUpgrade(headers):
    """
    Whether request headers C{headers} ask for a WebSocket upgrade.
    """
    values = headers.getRawHeaders(b"upgrade") or ()
    return any(value.strip().lower() == b"websocket" for value in values)


def _hasBody(request):
    """
    Whether C{request}'s headers announce a body (a C{Content-Length} other
    than 0, or any C{Transfer-Encoding}).
    """
    headers = request.requestHeaders
    if headers.hasHeader(b"transfer-encoding"):
        return True
    lengths = headers.getRawHeaders(b"content-length") or ()
    return any(length.strip() != b"0" for length in lengths)


class WebRequest(BoundedRequest):
    """
    A request of a L{WebSocketSite}: its body is read up to L{MAX_BODY}
    bytes, and an upgrade request with a body is refused (module rules).

    @ivar refused: whether it was answered at once (the connection is
        closing; nothing more is done with it).
    """

    maxBody = MAX_BODY
    refused = False

    def gotLength(self, length):
        """
        Refuse an upgrade request with a body, or a body over the limit,
        before reading it.
        """
        if _isUpgrade(self.requestHeaders) and (
                length != 0 or _hasBody(self)):
            self._bodyBytes = 0
            self.content = BytesIO()
            self.refuseAtOnce(400, "a WebSocket upgrade request has no body")
            return
        BoundedRequest.gotLength(self, length)

    def immediateResponse(self, code, message):
        """
        A plain text answer.
        """
        return b"text/plain; charset=utf-8", message.encode("utf-8") + b"\n"

    def refuseAtOnce(self, code, message):
        """
        Answer C{code} and close, once.
        """
        if self.refused:
            return
        self.refused = True
        BoundedRequest.refuseAtOnce(self, code, message)

    def process(self):
        """
        A body that grew past the limit is answered 413; one answered
        already is left alone.
        """
        if self.refused:
            return
        if self.bodyTooLarge:
            self.refuseAtOnce(413, "the request body is over %d bytes"
                              % (self.maxBody,))
            return
        BoundedRequest.process(self)


class StreamWebSocketResource(WebSocketResource):
    """
    The upgrade resource: takes the connection over from C{twisted.web}.
    """

    def render(self, request):
        """
        Release the HTTP channel's producer registration on the transport
        (the inner protocol registers its own), then hand over.
        """
        if _hasBody(request):
            # L{WebRequest} refuses these before their body; a site with
            # another request factory still never hands one to autobahn.
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"connection", b"close")
            return b"a WebSocket upgrade request has no body\n"
        handedOver = getattr(request.channel, "handedOver", None)
        if handedOver is not None:
            handedOver()
        transport = request.channel.transport
        if transport is not None:
            transport.unregisterProducer()
        return WebSocketResource.render(self, request)


class WebChannel(DeadlineChannel):
    """
    The HTTP channel of a L{WebSocketSite}'s connection: a request must
    arrive whole within the site's C{requestTimeout} (module rules;
    L{DeadlineChannel}), and the connection's admission is released when
    it is handed over or closes.

    @ivar reserved: the address admitted with the site's
        C{reserveConnection}, until released.
    """

    reserved = None

    def handedOver(self):
        """
        The upgrade takes the connection over from C{twisted.web}.
        """
        self._stopDeadline()
        self._release()

    def _release(self):
        address, self.reserved = self.reserved, None
        if address is not None:
            self.site.webSocketFactory.releaseConnection(address)

    def connectionLost(self, reason):
        """
        Stop the deadline and release the admission.
        """
        self._release()
        DeadlineChannel.connectionLost(self, reason)


class RefusedHTTPConnection(Protocol):
    """
    Answers a connection refused at accept with HTTP 503 and closes (sent
    at accept time, without a transport, on a listener made ready by
    L{muxframe.earlyrefusal.refuseEarly}).
    """

    def __init__(self, reason):
        body = reason.encode("utf-8", "replace") + b"\n"
        self.data = self.earlyRefusal = (
            b"HTTP/1.1 503 Service Unavailable\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body))

    def connectionMade(self):
        """
        Send the answer and close.
        """
        self.transport.write(self.data)
        self.transport.loseConnection()


@offersHTTP11
class WebSocketSite(Site):
    """
    The site of a web endpoint: the WebSocket resource at C{path}, C{root}
    for every other request.  Requests are not access-logged (C{logPath}
    None) unless C{accessLog} is true.  Its requests are L{WebRequest}s
    (bounded bodies), its channels L{WebChannel}s (a request's deadline,
    admission at accept).

    @ivar requestTimeout: seconds for a request to arrive whole (the
        WebSocket factory's C{openHandshakeTimeout}).
    @ivar requestsTimedOut: connections dropped at that deadline.
    @ivar refusedConnections: connections refused at accept.

    Over TLS it offers C{http/1.1} by ALPN, or none, as each Twisted
    release accepts (L{offersHTTP11}; a WebSocket is HTTP/1.1 only): older
    Twisted releases (24.11, our floor, among them) set a TLS context's
    ALPN callback for every connection of a factory that offers them,
    which current pyOpenSSL refuses after the context's first connection;
    newer ones fail the handshake of every client offering ALPN (every
    browser) when the factory offers none.
    """

    def __init__(self, webSocketFactory, path=b"/", root=None,
                 accessLog=False, reactor=None):
        if root is None:
            root = Resource()
        kwargs = {} if reactor is None else {"reactor": reactor}
        Site.__init__(self, root, **kwargs)
        self.requestFactory = WebRequest
        self.requestTimeout = webSocketFactory.limits["openHandshakeTimeout"]
        self.requestsTimedOut = 0
        self.refusedConnections = 0
        self.webSocketFactory = webSocketFactory
        self.webSocketResource = StreamWebSocketResource(webSocketFactory)
        self.path = path if isinstance(path, bytes) else path.encode("ascii")
        self.accessLog = accessLog

    protocol = WebChannel

    def buildProtocol(self, address):
        """
        Admit the connection (module rules), then a L{WebChannel}; a
        refused one gets a L{RefusedHTTPConnection}.
        """
        why = self.webSocketFactory.reserveConnection(address)
        if why is not None:
            self.refusedConnections += 1
            return RefusedHTTPConnection(why)
        channel = Site.buildProtocol(self, address)
        channel.reserved = address
        return channel

    def getResourceFor(self, request):
        """
        The WebSocket resource for upgrade requests to C{path}.
        """
        upgrade = request.getHeader(b"upgrade") or b""
        if request.path == self.path and upgrade.lower() == b"websocket":
            request.site = self
            request.sitepath = request.prepath[:]
            return self.webSocketResource
        return Site.getResourceFor(self, request)

    def log(self, request):
        """
        Access-log only when asked to.
        """
        if self.accessLog:
            Site.log(self, request)

    def startFactory(self):
        """
        Start the WebSocket factory (and the one it wraps) with the site.
        """
        Site.startFactory(self)
        self.webSocketFactory.doStart()

    def stopFactory(self):
        """
        Stop the WebSocket factory with the site.
        """
        self.webSocketFactory.doStop()
        Site.stopFactory(self)


def _staticRoot(static):
    if static is None or not isinstance(static, str):
        return static
    from twisted.web.static import File
    return File(static)


class WebSocketServerEndpoint:
    """
    A server endpoint: each WebSocket connection to C{path} on C{inner}
    is one connection of the factory given to L{listen}.

    @param inner: the C{IStreamServerEndpoint} to listen on (TCP, TLS, ...).
    @param path: the URL path of the WebSocket (default C{/}).
    @param allowedOrigins: browser origins allowed besides the endpoint's
        own (see L{muxframe.web.origins}); C{("*",)} allows any.
    @param sameOrigin: allow pages served by this endpoint.
    @param static: a directory to serve (or a C{twisted.web} resource) for
        every other request.
    @param secure: whether C{inner} is TLS (pages then have https origins).
    @param limits: L{muxframe.web.limits.LIMITS} names.
    """

    def __init__(self, inner, path="/", allowedOrigins=(), sameOrigin=True,
                 static=None, secure=False, reactor=None, accessLog=False,
                 **limits):
        from muxframe.web.endpointstrings import pathFault
        fault = pathFault(path)
        if fault is not None:
            raise ValueError("WebSocket " + fault)
        self.inner = inner
        self.path = path
        self.originPolicy = OriginPolicy(allowedOrigins, sameOrigin)
        self.static = static
        self.secure = secure
        self.reactor = reactor
        self.accessLog = accessLog
        self.limits = resolveLimits(limits)

    def site(self, factory):
        """
        The C{twisted.web} site serving C{factory} over WebSocket (for
        callers that listen themselves).
        """
        wsFactory = StreamWebSocketServerFactory(
            factory, self.originPolicy, self.secure, self.reactor,
            **self.limits)
        return WebSocketSite(wsFactory, self.path, _staticRoot(self.static),
                             self.accessLog, self.reactor)

    def listen(self, factory):
        """
        Listen on the inner endpoint.

        @return: a L{Deferred} firing with the inner C{IListeningPort}; its
            C{factory} attribute is the L{WebSocketSite}.
        """
        try:
            site = self.site(factory)
        except Exception:
            from twisted.internet.defer import fail
            return fail()
        d = self.inner.listen(site)
        return d if d is not None else succeed(None)
