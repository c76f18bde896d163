"""
WebSocket as a byte-stream transport (L{muxframe.web}), over real loopback
sockets: the transport's contract, limits, origins, static files on the
same port, and XTMP and MIO running over it unchanged with a 100 MiB
transfer and a paused reader bounding the sender.
"""

import hashlib
import os
import socket
import struct
import tempfile

from zope.interface import implementer

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint, TCP4ServerEndpoint,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from muxframe.web import (
    WebSocketClientEndpoint, WebSocketClosed, WebSocketHandshakeFailed,
    WebSocketServerEndpoint,
)

from tests.conformance import waitUntil

KiB = 1024
MiB = 1024 * KiB


class Sink(Protocol):
    """
    Hashes what it receives; optionally starts paused.
    """

    def __init__(self, startPaused=False):
        self.startPaused = startPaused
        self.received = 0
        self.hash = hashlib.sha256()
        self.reason = None
        self.lost = Deferred()
        self.made = Deferred()

    def connectionMade(self):
        if self.startPaused:
            self.transport.pauseProducing()
        self.made.callback(self)

    def dataReceived(self, data):
        self.received += len(data)
        self.hash.update(data)

    def connectionLost(self, reason):
        self.reason = reason.value
        self.lost.callback(self)


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class SinkFactory(Factory):
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.built = []
        self.first = Deferred()

    def buildProtocol(self, addr):
        p = Sink(**self.kwargs)
        self.built.append(p)
        if not self.first.called:
            self.first.callback(p)
        return p


@implementer(IPushProducer)
class Sender:
    """
    A streaming producer writing C{total} deterministic bytes on a
    transport in C{chunk}-sized writes, hashing what it wrote.
    """

    def __init__(self, write, total, chunk=60 * KiB):
        self.write = write
        self.total = total
        self.chunk = chunk
        self.sent = 0
        self.hash = hashlib.sha256()
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.done = Deferred()
        self._scheduled = False
        self._block = os.urandom(chunk + 251)

    def start(self):
        self._schedule()

    def startOn(self, transport):
        """
        Register with C{transport} (a streaming producer) and start.
        """
        transport.registerProducer(self, True)
        self.start()
        return self

    def _schedule(self):
        if not self._scheduled:
            self._scheduled = True
            reactor.callLater(0, self._run)

    def _run(self):
        self._scheduled = False
        written = 0
        while not self.paused and self.sent < self.total and written < 4 * MiB:
            n = min(self.chunk, self.total - self.sent)
            offset = (self.sent // self.chunk) % 251
            piece = self._block[offset:offset + n]
            self.hash.update(piece)
            self.sent += n
            written += n
            self.write(piece)
        if self.sent >= self.total:
            if not self.done.called:
                self.done.callback(self)
        elif not self.paused:
            self._schedule()

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        self.resumes += 1
        self._schedule()

    def stopProducing(self):
        self.paused = True


def steadilyPaused(sender, polls=10, interval=0.02, timeout=30.0):
    """
    Fire once C{sender} has been paused, without writing, for C{polls}
    consecutive polls C{interval} seconds apart: the backpressure holds,
    not just a momentary full socket buffer.  Fails after C{timeout}.
    """
    d = Deferred()
    start = reactor.seconds()
    state = {"sent": -1, "still": 0}

    def poll():
        if sender.paused and sender.sent == state["sent"]:
            state["still"] += 1
        else:
            state["still"] = 0
        state["sent"] = sender.sent
        if state["still"] >= polls:
            d.callback(sender.sent)
        elif sender.done.called:
            d.errback(AssertionError(
                "the sender finished (%d bytes) instead of being held back"
                % (sender.sent,)))
        elif reactor.seconds() - start > timeout:
            d.errback(AssertionError("the sender never stayed paused"))
        else:
            reactor.callLater(interval, poll)

    poll()
    return d


def localServer(**kwargs):
    return WebSocketServerEndpoint(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), **kwargs)


def localClient(port, **kwargs):
    number = port.getHost().port
    return WebSocketClientEndpoint(
        TCP4ClientEndpoint(reactor, "127.0.0.1", number), "127.0.0.1", number,
        **kwargs)


def rawRequest(port, request, limit=65536):
    """
    Send C{request} on a plain blocking socket and read the reply head.
    Run in a thread-free way: loopback, bounded by a timeout.
    """
    s = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    try:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < limit:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


class TransportTests(TestCase):
    """
    The stream contract over a real WebSocket on loopback.
    """

    timeout = 30

    @inlineCallbacks
    def listen(self, factory, **kwargs):
        port = yield localServer(**kwargs).listen(factory)
        self.addCleanup(port.stopListening)
        return port

    @inlineCallbacks
    def test_echoAndCleanClose(self):
        port = yield self.listen(Factory.forProtocol(Echo), path="/echo")
        sink = yield localClient(port, path="/echo").connect(
            Factory.forProtocol(Sink))
        data = os.urandom(300 * KiB)
        sink.transport.writeSequence([data[:1000], data[1000:]])
        yield waitUntil(lambda: sink.received == len(data), "the echo")
        self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        self.assertEqual(sink.transport.getPeer().port, port.getHost().port)
        sink.transport.loseConnection()
        yield sink.lost
        self.assertIsInstance(sink.reason, ConnectionDone)

    @inlineCallbacks
    def test_serverSeesCleanCloseAndRequest(self):
        sinks = SinkFactory()
        port = yield self.listen(sinks, path="/in")
        client = yield localClient(port, path="/in").connect(
            Factory.forProtocol(Protocol))
        server = yield sinks.first
        self.assertEqual(server.transport.request.path, "/in")
        client.transport.write(b"hello")
        yield waitUntil(lambda: server.received == 5, "the data")
        client.transport.loseConnection()
        yield server.lost
        self.assertIsInstance(server.reason, ConnectionDone)

    @inlineCallbacks
    def test_abortIsUnclean(self):
        sinks = SinkFactory()
        port = yield self.listen(sinks)
        client = yield localClient(port).connect(Factory.forProtocol(Sink))
        server = yield sinks.first
        client.transport.abortConnection()
        yield server.lost
        self.assertIsInstance(server.reason, WebSocketClosed)
        self.assertEqual(server.reason.code, 1006)
        yield client.lost

    @inlineCallbacks
    def test_textMessageRefused(self):
        sinks = SinkFactory()
        port = yield self.listen(sinks)
        client = yield localClient(port).connect(Factory.forProtocol(Sink))
        server = yield sinks.first
        # A misbehaving peer: a text message on the byte stream.
        client.transport._webSocket.sendMessage(b"text", isBinary=False)
        yield server.lost
        self.assertIsInstance(server.reason, WebSocketClosed)
        self.assertEqual(server.reason.code, 1003)
        self.assertEqual(server.received, 0)
        yield client.lost

    @inlineCallbacks
    def test_messageOverLimitFailsConnection(self):
        sinks = SinkFactory()
        port = yield self.listen(sinks, maxMessageSize=4 * KiB)
        client = yield localClient(port, writeSize=8 * KiB).connect(
            Factory.forProtocol(Sink))
        server = yield sinks.first
        client.transport.write(b"x" * 4 * KiB)
        yield waitUntil(lambda: server.received == 4 * KiB, "a full message")
        client.transport.write(b"y" * (4 * KiB + 1))
        yield server.lost
        self.assertIsInstance(server.reason, WebSocketClosed)
        self.assertEqual(server.reason.code, 1009)
        self.assertEqual(server.received, 4 * KiB)
        yield client.lost

    @inlineCallbacks
    def test_writesCutIntoMessages(self):
        sinks = SinkFactory()
        port = yield self.listen(sinks, maxMessageSize=4 * KiB)
        client = yield localClient(port, writeSize=4 * KiB).connect(
            Factory.forProtocol(Sink))
        server = yield sinks.first
        data = os.urandom(100 * KiB + 7)
        client.transport.write(data)
        yield waitUntil(lambda: server.received == len(data), "every byte")
        self.assertEqual(server.hash.digest(), hashlib.sha256(data).digest())
        client.transport.loseConnection()
        yield server.lost

    @inlineCallbacks
    def test_foreignOriginRefused(self):
        sinks = SinkFactory()
        port = yield self.listen(sinks)
        d = localClient(port, origin="https://evil.example").connect(
            Factory.forProtocol(Sink))
        yield self.assertFailure(d, WebSocketHandshakeFailed)
        self.assertEqual(sinks.built, [])

    @inlineCallbacks
    def test_listedAndSameOriginAllowed(self):
        sinks = SinkFactory()
        port = yield self.listen(sinks,
                                 allowedOrigins=["https://app.example"])
        listed = yield localClient(port, origin="https://app.example:443") \
            .connect(Factory.forProtocol(Sink))
        same = yield localClient(
            port, origin="http://127.0.0.1:%d" % (port.getHost().port,)) \
            .connect(Factory.forProtocol(Sink))
        self.assertEqual(len(sinks.built), 2)
        for p in (listed, same):
            p.transport.loseConnection()
            yield p.lost

    @inlineCallbacks
    def test_staticFilesOnTheSamePort(self):
        directory = tempfile.mkdtemp()
        with open(os.path.join(directory, "index.html"), "wb") as f:
            f.write(b"<p>muxframe page</p>")
        port = yield self.listen(Factory.forProtocol(Echo), path="/ws",
                                 static=directory)
        reply = yield deferToBlocking(
            rawRequest, port, b"GET /index.html HTTP/1.1\r\nHost: x\r\n"
            b"Connection: close\r\n\r\n")
        self.assertIn(b"200 OK", reply.split(b"\r\n")[0])
        missing = yield deferToBlocking(
            rawRequest, port, b"GET /nope HTTP/1.1\r\nHost: x\r\n"
            b"Connection: close\r\n\r\n")
        self.assertIn(b"404", missing.split(b"\r\n")[0])
        # The WebSocket still answers on the same port.
        sink = yield localClient(port, path="/ws").connect(
            Factory.forProtocol(Sink))
        sink.transport.write(b"ping")
        yield waitUntil(lambda: sink.received == 4, "the echo")
        sink.transport.loseConnection()
        yield sink.lost

    @inlineCallbacks
    def test_wrongPathIsNotUpgraded(self):
        sinks = SinkFactory()
        port = yield self.listen(sinks, path="/ws")
        d = localClient(port, path="/other").connect(Factory.forProtocol(Sink))
        yield self.assertFailure(d, WebSocketHandshakeFailed)
        self.assertEqual(sinks.built, [])

    @inlineCallbacks
    def test_pausedReaderBoundsSender(self):
        """
        A server child that pauses its transport stops the TCP reads; the
        client's registered producer is paused by its own socket; after
        resuming, every byte arrives intact.
        """
        sinks = SinkFactory(startPaused=True)
        port = yield self.listen(sinks)
        client = yield localClient(port).connect(Factory.forProtocol(Sink))
        server = yield sinks.first
        sender = Sender(client.transport.write, 64 * MiB).startOn(
            client.transport)
        yield steadilyPaused(sender)
        self.assertEqual(server.received, 0)
        self.assertLess(sender.sent, 32 * MiB)
        server.transport.resumeProducing()
        yield sender.done
        yield waitUntil(lambda: server.received == sender.total,
                        "every byte", timeout=60)
        self.assertEqual(server.hash.digest(), sender.hash.digest())
        self.assertGreaterEqual(sender.resumes, 1)
        client.transport.unregisterProducer()
        client.transport.loseConnection()
        yield server.lost


def upgradeRequest(port, path="/", extra=b""):
    """
    The bytes of a WebSocket upgrade request to C{path}, with C{extra}
    header lines.
    """
    return (b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n%s\r\n"
            % (path.encode("ascii"), port.getHost().port, extra))


def statusOf(reply):
    """
    The status code of the reply head C{reply}, or None.
    """
    parts = reply.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) > 1 else None


class RequestBodyTests(TestCase):
    """
    The site reads no request body without bound: an upgrade with a body
    is refused before it is read, any other body is capped.
    """

    timeout = 30

    @inlineCallbacks
    def listen(self, **kwargs):
        directory = tempfile.mkdtemp()
        with open(os.path.join(directory, "index.html"), "wb") as f:
            f.write(b"<p>page</p>")
        port = yield localServer(path="/ws", static=directory,
                                 **kwargs).listen(SinkFactory())
        self.addCleanup(port.stopListening)
        return port

    @inlineCallbacks
    def test_upgradeWithContentLengthRefused(self):
        """
        An upgrade declaring a body is answered 400 before any of the body
        is sent, and not upgraded.
        """
        port = yield self.listen()
        reply = yield deferToBlocking(rawRequest, port, upgradeRequest(
            port, "/ws", b"Content-Length: 805306368\r\n"))
        self.assertEqual(statusOf(reply), 400)
        self.assertEqual(port.factory.webSocketFactory.wrappedFactory.built,
                         [])

    @inlineCallbacks
    def test_upgradeChunkedRefused(self):
        """
        An upgrade with a chunked body is answered 400 at once.
        """
        port = yield self.listen()
        reply = yield deferToBlocking(rawRequest, port, upgradeRequest(
            port, "/ws", b"Transfer-Encoding: chunked\r\n") + b"1000\r\n")
        self.assertEqual(statusOf(reply), 400)

    @inlineCallbacks
    def test_upgradeWithEmptyBodyAccepted(self):
        """
        C{Content-Length: 0} is no body: the upgrade goes ahead.
        """
        port = yield self.listen()
        reply = yield deferToBlocking(rawRequest, port, upgradeRequest(
            port, "/ws", b"Content-Length: 0\r\n"))
        self.assertEqual(statusOf(reply), 101)

    @inlineCallbacks
    def test_declaredBodyOverLimitRefused(self):
        """
        A request to another path declaring a body over the limit is
        answered 413 before the body is sent.
        """
        port = yield self.listen()
        reply = yield deferToBlocking(
            rawRequest, port, b"POST /index.html HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 805306368\r\n\r\n")
        self.assertEqual(statusOf(reply), 413)

    @inlineCallbacks
    def test_chunkedBodyOverLimitRefused(self):
        """
        A chunked body growing past the limit is discarded and answered
        413; the request's content never holds more than the limit.
        """
        from muxframe.web.server import MAX_BODY
        port = yield self.listen()
        seen = []
        original = port.factory.requestFactory

        class Watched(original):
            def handleContentChunk(self, data):
                original.handleContentChunk(self, data)
                seen.append(self.content.tell())

        port.factory.requestFactory = Watched
        chunk = b"%x\r\n%s\r\n" % (1024, b"a" * 1024)
        reply = yield deferToBlocking(
            rawRequest, port, b"POST /index.html HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 64 + b"0\r\n\r\n")
        self.assertEqual(statusOf(reply), 413)
        self.assertTrue(seen)
        self.assertLessEqual(max(seen), MAX_BODY)

    @inlineCallbacks
    def test_smallBodyServed(self):
        """
        A body within the limit does not stop a page being served.
        """
        port = yield self.listen()
        reply = yield deferToBlocking(
            rawRequest, port, b"GET /index.html HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 5\r\nConnection: close\r\n\r\nhello")
        self.assertEqual(statusOf(reply), 200)


def trickle(port, head, interval=0.1, limit=5.0):
    """
    Send C{head}, then one more byte of a header line every C{interval}
    seconds (a slowloris) until the server closes or C{limit} seconds
    pass; return the seconds until it closed, or None.
    """
    import time
    s = socket.create_connection(("127.0.0.1", port.getHost().port),
                                 timeout=interval)
    start = time.monotonic()
    try:
        s.sendall(head)
        while time.monotonic() - start < limit:
            try:
                if s.recv(4096) == b"":
                    return time.monotonic() - start
            except socket.timeout:
                pass
            except OSError:
                return time.monotonic() - start
            try:
                s.sendall(b"a")
            except OSError:
                return time.monotonic() - start
        return None
    finally:
        s.close()


def readAll(sock, timeout=5.0):
    """
    Everything C{sock} receives until the peer closes.
    """
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class UpgradePhaseTests(TestCase):
    """
    Before the upgrade: a request's deadline, not restarted by data, and
    the wrapped XTMP server's admission checked at accept.
    """

    timeout = 60

    @inlineCallbacks
    def test_partialUpgradeClosedAtDeadline(self):
        """
        An upgrade request trickling in a byte at a time is dropped at
        C{openHandshakeTimeout}, counted by the site.
        """
        port = yield localServer(path="/ws", openHandshakeTimeout=0.5) \
            .listen(SinkFactory())
        self.addCleanup(port.stopListening)
        elapsed = yield deferToBlocking(
            trickle, port, b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        self.assertIsNotNone(elapsed, "the connection was never closed")
        self.assertLess(elapsed, 3.0)
        self.assertEqual(port.factory.requestsTimedOut, 1)

    @inlineCallbacks
    def test_keptAliveConnectionGetsANewDeadline(self):
        """
        After a response, the next request on the connection has its own
        deadline: a kept-alive connection trickling its second request is
        dropped too.
        """
        directory = tempfile.mkdtemp()
        with open(os.path.join(directory, "index.html"), "wb") as f:
            f.write(b"page")
        port = yield localServer(path="/ws", static=directory,
                                 openHandshakeTimeout=0.5) \
            .listen(SinkFactory())
        self.addCleanup(port.stopListening)
        elapsed = yield deferToBlocking(
            trickle, port, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /index.html HTTP/1.1\r\nX-Slow: ")
        self.assertIsNotNone(elapsed, "the connection was never closed")
        self.assertLess(elapsed, 3.0)

    @inlineCallbacks
    def listenXTMP(self, **values):
        from muxframe.server.factory import XTMPServer
        from tests.test_server_support import KEYS, SERVER_IDENTITY, config
        server = XTMPServer(SERVER_IDENTITY, config(**values), reactor,
                            keys=KEYS)
        port = yield localServer(path="/xtmp").listen(server)
        self.addCleanup(port.stopListening)
        return server, port

    @inlineCallbacks
    def test_preUpgradeConnectionsCountPerAddress(self):
        """
        Connections not yet upgraded count against
        C{max_connections_per_client}: one more is answered 503 at accept;
        once one closes, an upgrade goes through and its session is
        admitted (its rate token taken once: a burst of one suffices).
        """
        from muxframe.xtmp import XTMPClientFactory, connectXTMP
        from tests.test_server_support import ALICE, SERVER_IDENTITY
        server, port = yield self.listenXTMP(
            server__max_connections_per_client=3, server__handshake_burst=1,
            server__handshake_rate=0.001)
        idle = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port.getHost().port))
            self.addCleanup(s.close)
            idle.append(s)
        yield waitUntil(lambda: server.connections.of("127.0.0.1") == 3,
                        "three connections counted")
        extra = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(extra.close)
        reply = yield deferToBlocking(readAll, extra)
        self.assertEqual(statusOf(reply), 503)
        self.assertIn(b"max_connections_per_client", reply)
        self.assertEqual(port.factory.refusedConnections, 1)
        self.assertEqual(server.refusals.get("refused_connections"), 1)
        idle.pop().close()
        yield waitUntil(lambda: server.connections.of("127.0.0.1") == 2,
                        "the closed connection released")
        client = yield connectXTMP(
            localClient(port, path="/xtmp"), XTMPClientFactory(
                serverKey=SERVER_IDENTITY.public, identity=ALICE,
                resume=False))
        self.assertEqual(server.connections.of("127.0.0.1"), 3)
        self.assertEqual(server.refusals.get("refused_rate"), None)
        closed = client.whenClosed()
        client.disconnect()
        yield closed
        yield waitUntil(lambda: server.connections.of("127.0.0.1") == 2,
                        "the session released")

    @inlineCallbacks
    def test_drainingRefusedAtAccept(self):
        """
        A draining server refuses a new WebSocket connection at accept.
        """
        server, port = yield self.listenXTMP()
        server.draining = True
        s = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(s.close)
        reply = yield deferToBlocking(readAll, s)
        self.assertEqual(statusOf(reply), 503)
        self.assertEqual(server.connections.total, 0)


class LogVolumeTests(TestCase):
    """
    What a peer can make the WebSocket layer log is bounded: autobahn's
    per-read and per-ping debug lines are not emitted at the default level,
    and refusals are throttled.
    """

    timeout = 60

    def setUp(self):
        from twisted.logger import globalLogPublisher
        from muxframe.logthrottle import LogThrottle
        from muxframe.web import transport
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        # Fresh throttles: other tests' lines must not count here.
        import muxframe.web.server
        fresh = LogThrottle(10, 60.0)
        for module in (transport, muxframe.web.server):
            if hasattr(module, "refusalThrottle"):
                self.patch(module, "refusalThrottle", fresh)
        autobahnLog = getattr(transport, "autobahnLog", None)
        if autobahnLog is not None:
            self.patch(autobahnLog._logger.observer, "throttle",
                       LogThrottle(10, 60.0))

    @inlineCallbacks
    def test_pingFloodWritesNothing(self):
        """
        Two thousand pings and two hundred messages log nothing.
        """
        port = yield localServer(path="/e").listen(Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        sink = yield localClient(port, path="/e").connect(
            Factory.forProtocol(Sink))
        del self.events[:]
        for i in range(2000):
            sink.transport._webSocket.sendPing(b"%d" % (i,))
        for i in range(200):
            sink.transport.write(b"x" * 100)
            yield waitUntil(lambda: sink.received == 100 * (i + 1), "echo")
        self.assertEqual([e.get("log_format") for e in self.events], [])
        sink.transport.loseConnection()
        yield sink.lost

    @inlineCallbacks
    def test_refusedOriginsThrottled(self):
        """
        A hundred refused origins write a bounded number of lines, the
        last allowed one saying that more are suppressed.
        """
        port = yield localServer(path="/e").listen(Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        del self.events[:]
        for _ in range(100):
            reply = yield deferToBlocking(rawRequest, port, upgradeRequest(
                port, "/e", b"Origin: https://evil.example\r\n"))
            self.assertEqual(statusOf(reply), 403)
        yield waitUntil(
            lambda: port.factory.webSocketFactory.refusedOrigins == 100,
            "every refusal")
        formats = [e.get("log_format") or "" for e in self.events]
        self.assertLessEqual(len(formats), 40, formats)
        refused = [f for f in formats if "refused" in f]
        self.assertEqual(len(refused), 10)
        self.assertIn("further lines like this are suppressed", refused[-1])


def deferToBlocking(f, *args):
    """
    Run a short blocking loopback exchange in a thread (the reactor must
    keep serving the other end).
    """
    from twisted.internet.threads import deferToThread
    return deferToThread(f, *args)


class SecureWebSocketTests(TestCase):
    """
    C{wss://}: the WebSocket over TLS (an C{ssl:} server, a hostname-checked
    TLS client), with XTMP inside.
    """

    timeout = 60

    @inlineCallbacks
    def test_xtmpOverWSS(self):
        from twisted.internet.endpoints import SSL4ServerEndpoint, wrapClientTLS
        from twisted.internet.ssl import optionsForClientTLS
        from muxframe.xtmp import connectXTMP
        from tests.test_xtmp_transports import (
            clientFactory, makeCertificate, serverFactory,
        )
        cert = makeCertificate()
        server = WebSocketServerEndpoint(
            SSL4ServerEndpoint(reactor, 0, cert.options(), interface="127.0.0.1"),
            path="/xtmp", secure=True)
        xs = serverFactory(None)
        port = yield server.listen(xs)
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        inner = wrapClientTLS(optionsForClientTLS("localhost", trustRoot=cert),
                              TCP4ClientEndpoint(reactor, "127.0.0.1", number))
        client = yield connectXTMP(
            WebSocketClientEndpoint(inner, "localhost", number, path="/xtmp",
                                    secure=True), clientFactory(None))
        reply = yield client.request(0x30, b"x" * 300000, timeout=10)
        self.assertEqual(reply.payload, b"pong:" + b"x" * 300000)
        yield waitUntil(lambda: xs.live, "the server session")
        (session,) = xs.live.values()
        # The browser-facing origin of a wss endpoint is https.
        self.assertTrue(server.originPolicy.check(
            "https://localhost:%d" % (number,), "localhost:%d" % (number,),
            secure=True)[0])
        closed = [client.whenClosed(), session.whenClosed()]
        client.disconnect()
        yield closed[0]
        yield closed[1]


    @inlineCallbacks
    def test_browserOfferingALPN(self):
        """
        A client offering C{http/1.1} by ALPN, as browsers do for a
        C{wss://} URL, is upgraded, on every connection (the site offered
        no ALPN protocol, and current Twisted fails the TLS handshake of
        such a client then); ALPN selects C{http/1.1} where Twisted asks
        the site per connection, nothing on older Twisted.
        """
        from twisted.internet.endpoints import SSL4ServerEndpoint

        from muxframe.tls import alpnPerConnection
        from tests.test_xtmp_transports import makeCertificate
        cert = makeCertificate()
        caFile = os.path.abspath(self.mktemp())
        with open(caFile, "wb") as f:
            f.write(cert.dumpPEM())
        port = yield WebSocketServerEndpoint(
            SSL4ServerEndpoint(reactor, 0, cert.options(),
                               interface="127.0.0.1"),
            path="/ws", secure=True).listen(SinkFactory())
        self.addCleanup(port.stopListening)
        for _ in range(2):
            selected, reply = yield deferToBlocking(
                tlsUpgrade, port, caFile, ["http/1.1"])
            self.assertEqual(
                (selected, statusOf(reply)),
                ("http/1.1" if alpnPerConnection() else None, 101))

    @inlineCallbacks
    def test_wssOfferingNoHTTP11(self):
        """
        A C{wss:} endpoint string's site upgrades a client whose ALPN
        offer lacks C{http/1.1} too (only C{h2}, or a protocol of its
        own), with no protocol selected (Twisted 26.10 failed its
        handshake: L{muxframe.tls.tolerateALPN}), and still selects
        C{http/1.1} for a browser where Twisted asks the site.
        """
        from twisted.internet.endpoints import serverFromString

        from muxframe.tls import alpnPerConnection, writeCertificates
        paths = writeCertificates(self.mktemp())
        endpoint = serverFromString(
            reactor, "wss:0:interface=127.0.0.1:privateKey=%s:path=/ws"
            % (paths["server.pem"],))
        port = yield endpoint.listen(SinkFactory())
        self.addCleanup(port.stopListening)
        for alpn in (["h2"], ["xtmp"], ["h2", "http/1.1"]):
            selected, reply = yield deferToBlocking(
                tlsUpgrade, port, paths["ca.pem"], alpn)
            self.assertEqual(
                (selected, statusOf(reply)),
                ("http/1.1" if "http/1.1" in alpn and alpnPerConnection()
                 else None, 101))


def tlsUpgrade(port, caFile, alpn):
    """
    An upgrade request to C{/ws} over TLS (trusting C{caFile}, offering
    C{alpn}): C{(the protocol ALPN selected, the reply's head)}.
    """
    import ssl
    context = ssl.create_default_context(cafile=caFile)
    context.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port.getHost().port),
                                  timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(upgradeRequest(port, "/ws"))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return s.selected_alpn_protocol(), data


def maskedFrame(opcode, payload):
    """
    A final client-to-server frame: C{opcode}, C{payload} masked.
    """
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    key = os.urandom(4)
    masked = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return head + key + masked


def serverFrames(data):
    """
    The (opcode, payload) of the unmasked server frames in C{data}.
    """
    frames = []
    while len(data) >= 2:
        size, offset = data[1] & 0x7f, 2
        if size == 126:
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + size:
            break
        frames.append((data[0] & 0x0f, data[offset:offset + size]))
        data = data[offset + size:]
    return frames


def closeWith(port, path, payload, timeout=10.0):
    """
    Upgrade on a raw socket, send a Close frame of C{payload}, and read
    until the server ends the connection.

    @return: the server's frames after the upgrade, and C{"EOF"} or
        C{"RESET"} (how the connection ended).
    """
    s = socket.create_connection(("127.0.0.1", port.getHost().port),
                                 timeout=timeout)
    try:
        s.sendall(upgradeRequest(port, path))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise AssertionError("no upgrade response")
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        if statusOf(head) != 101:
            raise AssertionError("upgrade refused: %r" % (head,))
        s.sendall(maskedFrame(8, payload))
        return untilClosed(s, data)
    finally:
        s.close()


def untilClosed(sock, data):
    """
    Read C{sock} (after C{data}, already read) until it closes: the
    server's frames, and how it closed (C{"EOF"} or C{"RESET"}).
    """
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return serverFrames(data), "RESET"
        if not chunk:
            return serverFrames(data), "EOF"
        data += chunk


class Flood(Protocol):
    """
    Writes C{size} bytes as soon as it is connected.
    """

    size = 32 * MiB

    def connectionMade(self):
        self.transport.write(b"x" * self.size)


class CloseHandshakeTests(TestCase):
    """
    An invalid Close from the peer fails the connection the way RFC 6455
    says (7.1.7, 7.1.1): the server's Close 1002 reaches the peer, then the
    TCP connection ends normally (EOF, not a reset); a peer that does not
    let it end is dropped after C{closeHandshakeTimeout}.
    """

    timeout = 60

    @inlineCallbacks
    def assertFailedCleanly(self, payload):
        sinks = SinkFactory()
        port = yield localServer(path="/c").listen(sinks)
        self.addCleanup(port.stopListening)
        frames, end = yield deferToBlocking(closeWith, port, "/c", payload)
        closes = [frame for frame in frames if frame[0] == 8]
        self.assertEqual(len(closes), 1, frames)
        self.assertEqual(struct.unpack("!H", closes[0][1][:2])[0], 1002)
        self.assertEqual(end, "EOF")
        server = yield sinks.first
        yield server.lost
        self.assertIsInstance(server.reason, WebSocketClosed)
        self.assertEqual(server.reason.code, 1002)

    def test_invalidCloseCode(self):
        """
        A Close with the reserved code 999 gets Close 1002, then EOF.
        """
        return self.assertFailedCleanly(struct.pack("!H", 999) + b"x")

    def test_closeCode1005(self):
        """
        A Close carrying code 1005 (never sent on the wire) gets Close
        1002, then EOF.
        """
        return self.assertFailedCleanly(struct.pack("!H", 1005))

    def test_closeReasonTooLong(self):
        """
        A Close whose payload is over 125 bytes gets Close 1002, then EOF.
        """
        return self.assertFailedCleanly(struct.pack("!H", 1000) + b"r" * 200)

    @inlineCallbacks
    def test_validCloseEchoed(self):
        """
        A valid Close is answered and the connection ends with EOF; the
        inner protocol sees a clean close.
        """
        sinks = SinkFactory()
        port = yield localServer(path="/c").listen(sinks)
        self.addCleanup(port.stopListening)
        frames, end = yield deferToBlocking(
            closeWith, port, "/c", struct.pack("!H", 1000))
        self.assertEqual([frame[0] for frame in frames], [8])
        self.assertEqual(struct.unpack("!H", frames[0][1][:2])[0], 1000)
        self.assertEqual(end, "EOF")
        server = yield sinks.first
        yield server.lost
        self.assertIsInstance(server.reason, ConnectionDone)

    @inlineCallbacks
    def test_serverCloseEndsWithEOF(self):
        """
        When the server closes first and the peer answers, the server ends
        the TCP connection normally: the peer reads EOF, not a reset.
        """
        port = yield localServer(path="/c").listen(SinkFactory())
        self.addCleanup(port.stopListening)

        def exchange():
            # Wait for the server's Close, answer it, read to the end.
            sock = socket.create_connection(
                ("127.0.0.1", port.getHost().port), timeout=10)
            try:
                sock.sendall(upgradeRequest(port, "/c"))
                data = b""
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return serverFrames(data), "EOF"
                    data += chunk
                    head, sep, rest = data.partition(b"\r\n\r\n")
                    if sep and serverFrames(rest):
                        break
                sock.sendall(maskedFrame(8, struct.pack("!H", 1000)))
                return untilClosed(sock, rest)
            finally:
                sock.close()

        d = deferToBlocking(exchange)
        yield waitUntil(lambda: port.factory.webSocketFactory.connections,
                        "the WebSocket")
        (webSocket,) = port.factory.webSocketFactory.connections
        webSocket.stream.loseConnection()
        frames, end = yield d
        self.assertEqual([frame[0] for frame in frames], [8])
        self.assertEqual(end, "EOF")

    @inlineCallbacks
    def test_peerNotReadingDroppedAtTimeout(self):
        """
        A peer that sends an invalid Close but reads nothing cannot hold
        the connection open: it is dropped after C{closeHandshakeTimeout}.
        """
        port = yield localServer(path="/c", closeHandshakeTimeout=0.5) \
            .listen(Factory.forProtocol(Flood))
        self.addCleanup(port.stopListening)
        s = socket.create_connection(("127.0.0.1", port.getHost().port),
                                     timeout=10)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(upgradeRequest(port, "/c"))
        factory = port.factory.webSocketFactory
        yield waitUntil(lambda: factory.connections, "the WebSocket")
        (webSocket,) = factory.connections
        lost = Deferred()
        webSocket.stream._protocol.connectionLost = \
            lambda reason: lost.callback(reason.value)
        yield waitUntil(
            lambda: webSocket.transport.dataBuffer
            or webSocket.transport._tempDataBuffer, "a full socket")
        s.sendall(maskedFrame(8, struct.pack("!H", 999)))
        started = reactor.seconds()
        yield lost
        self.assertLess(reactor.seconds() - started, 5.0)
