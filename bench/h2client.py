"""
The HTTP/2 baseline's client: an h2-library protocol over one Twisted TLS
connection (ALPN h2) that POSTs each payload to Twisted's HTTP/2 server and
verifies the echoed body.  It keeps as many requests in flight as the
server's SETTINGS_MAX_CONCURRENT_STREAMS allows (unless told to ignore it)
and queues the rest.
"""

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes

from twisted.internet.protocol import Factory, Protocol

from bench.common import now, setNoDelay
from bench.scenarios import endpoint, withTimeout
from bench.scenarios.echo import Tracker

WINDOW = (1 << 31) - 1


class H2EchoClient(Protocol):
    def __init__(self, payloads, tracker, ignoreLimit=False):
        self.payloads = list(enumerate(payloads))
        self.payloads.reverse()
        self.tracker = tracker
        self.ignoreLimit = ignoreLimit
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.sending = {}
        self.bodies = {}
        self.expected = {}
        self.started = False
        self.peakConcurrency = 0
        self.serverLimit = None

    def connectionMade(self):
        setNoDelay(self.transport)
        conn = self.conn
        conn.initiate_connection()
        conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                              SettingCodes.MAX_FRAME_SIZE: (1 << 24) - 1})
        conn.increment_flow_control_window(WINDOW - 65535)
        if self.ignoreLimit:
            # Open every request before the server's SETTINGS arrive, so the
            # h2 library does not yet enforce its concurrency limit: this
            # shows what Twisted's server does with streams past its limit.
            self.started = True
            self.startedAt = now()
            self.startMore()
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def startMore(self):
        conn = self.conn
        limit = self.serverLimit if not self.ignoreLimit else 1 << 30
        while self.payloads and conn.open_outbound_streams < limit:
            index, payload = self.payloads[-1]
            sid = conn.get_next_available_stream_id()
            try:
                conn.send_headers(sid, [
                    (b":method", b"POST"), (b":path", b"/"), (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                    (b"content-length", b"%d" % len(payload)),
                ])
            except Exception as error:  # h2's TooManyStreamsError and kin
                key = "client h2: %r" % (error,)
                self.tracker.errors[key[:200]] = self.tracker.errors.get(key[:200], 0) + 1
                break
            self.payloads.pop()
            self.sending[sid] = [payload, 0]
            self.bodies[sid] = []
            self.expected[sid] = payload
            self.trySend(sid)
            if conn.open_outbound_streams > self.peakConcurrency:
                self.peakConcurrency = conn.open_outbound_streams

    def trySend(self, sid):
        entry = self.sending.get(sid)
        if entry is None:
            return
        payload, offset = entry
        conn = self.conn
        while offset < len(payload):
            window = conn.local_flow_control_window(sid)
            size = min(window, conn.max_outbound_frame_size, len(payload) - offset)
            if size <= 0:
                break
            conn.send_data(sid, payload[offset:offset + size])
            offset += size
        entry[1] = offset
        if offset >= len(payload):
            conn.end_stream(sid)
            del self.sending[sid]

    def dataReceived(self, data):
        conn = self.conn
        try:
            events = conn.receive_data(data)
        except Exception as error:  # the h2 library's protocol errors
            self.tracker.errors[repr(error)[:200]] = 1
            self.transport.loseConnection()
            return
        for event in events:
            kind = type(event)
            if kind is DataReceived:
                self.bodies[event.stream_id].append(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif kind is StreamEnded:
                sid = event.stream_id
                ok = b"".join(self.bodies.pop(sid)) == self.expected.pop(sid)
                self.tracker.finish(ok)
                self.startMore()
            elif kind is WindowUpdated:
                if event.stream_id == 0:
                    for sid in list(self.sending):
                        self.trySend(sid)
                else:
                    self.trySend(event.stream_id)
            elif kind is RemoteSettingsChanged:
                self.serverLimit = conn.remote_settings.max_concurrent_streams
                if not self.started:
                    self.started = True
                    self.startedAt = now()
                    self.startMore()
                else:
                    for sid in list(self.sending):
                        self.trySend(sid)
            elif kind is StreamReset:
                self.sending.pop(event.stream_id, None)
                self.bodies.pop(event.stream_id, None)
                self.expected.pop(event.stream_id, None)
                self.tracker.finish(False, _reason("stream %d reset by the server, "
                                                   "code %r" % (event.stream_id, event.error_code)))
                self.startMore()
            elif kind is ConnectionTerminated:
                self.tracker.errors["server sent GOAWAY %r (last stream %r)" % (
                    event.error_code, event.last_stream_id)] = 1
                self.transport.loseConnection()
            elif kind is ResponseReceived:
                pass
        self.flush()

    def connectionLost(self, reason):
        if not self.tracker.done.called:
            self.tracker.done.callback(self.tracker.summary())


def _reason(text):
    from twisted.python.failure import Failure
    return Failure(RuntimeError(text))


async def runRequests(reactor, ctx, payloads, timeout):
    tracker = Tracker(len(payloads))
    client = H2EchoClient(payloads, tracker, ctx.params.get("ignoreLimit", False))
    withTimeout(reactor, tracker.done, timeout, tracker.summary)
    await endpoint(reactor, ctx, [b"h2"]).connect(Factory.forProtocol(lambda: client))
    summary = await tracker.done
    summary["seconds"] = now() - client.startedAt if client.started else float("nan")
    summary["concurrency"] = client.peakConcurrency
    summary["serverMaxConcurrentStreams"] = client.serverLimit
    summary["negotiated"] = (client.transport.negotiatedProtocol or b"").decode()
    client.transport.loseConnection()
    if summary["verified"] != len(payloads) and not ctx.params.get("ignoreLimit"):
        raise RuntimeError("not every request verified: %r" % (summary,))
    return summary
