"""
Tests for L{muxframe.bmp}: the BMP codec and engine, without I/O.
"""

from hypothesis import example, given, settings, strategies as st

from twisted.trial.unittest import SynchronousTestCase

from muxframe import bmp
from muxframe.bmp import BmpEngine, Frame, FrameDecoder, decodeFrames, encodeFrame
from muxframe.errors import (
    ErrorCode,
    FrameTooLarge,
    MalformedFrame,
    RemoteProtocolError,
    StreamBufferOverflow,
    StreamClosedError,
    StreamResetError,
    StreamTimeoutError,
)
from muxframe.events import (
    ConnectionTerminated,
    DataReceived,
    StreamClosed,
    StreamEnded,
    StreamOpened,
)
from muxframe.settings import Settings

from .support import againstReceiveData, chunkedEvents, decodeAll, snapshot, splitAt

# The example of docs/protocols.md (BMP): stream io_0, first data frame, sid 0.
SPEC_EXAMPLE = bytes.fromhex("00696f5f30010006010030010035016865" "6c6c6f")

VECTORS = [
    (Frame(b"io_0", bmp.CREATE, b"0", 5, b"hello"), SPEC_EXAMPLE),
    (Frame(b"io_0", bmp.DATA, b"1", 3, b"abc"), b"\x00io_0\x01\x00\x01\x001\x01\x003\x01abc"),
    (Frame(b"io_0", bmp.ACK, b"", 1, b"0"), b"\x00io_0\x01\x00\x05\x01\x00\x01\x001\x010"),
    (Frame(b"io_12", bmp.END_STREAM, b"", 1, b"\x04"),
     b"\x00io_12\x01\x00\x02\x01\x00\x01\x001\x01\x04"),
    (Frame(b"io_12", bmp.CLOSE_STREAM, b"", 1, b"\x04"),
     b"\x00io_12\x01\x00\x03\x01\x00\x01\x001\x01\x04"),
    # LEN is upper-case hex; a payload may hold 00 and 01.
    (Frame(b"srv_0", bmp.DATA, b"10", 26, b"\x00\x01" * 13),
     b"\x00srv_0\x01\x00\x01\x0010\x01\x001A\x01" + b"\x00\x01" * 13),
]


def engines(**kwargs):
    settings = Settings(**kwargs)
    return BmpEngine("client", settings), BmpEngine("server", settings)


def pump(source, sink, now=0.0):
    return sink.receiveData(b"".join(source.dataToSend(1 << 30, now)), now)


def decodeError(wire, maxFrameSize=1 << 20):
    items = []
    try:
        FrameDecoder(maxFrameSize).receive(wire, items)
    except RemoteProtocolError as error:
        return error
    raise AssertionError("no error decoding %r" % (wire,))


class CodecTests(SynchronousTestCase):
    """
    The frame codec, byte for byte.
    """

    def test_vectors(self):
        """
        Each frame encodes to its bytes and decodes back.
        """
        for frame, wire in VECTORS:
            self.assertEqual(encodeFrame(frame), wire)
            self.assertEqual(decodeFrames(wire), [frame])

    def test_byteByByte(self):
        """
        All vectors fed one byte at a time decode to the same frames.
        """
        wire = b"".join(w for _, w in VECTORS)
        items = []
        decoder = FrameDecoder()
        for i in range(len(wire)):
            decoder.receive(wire[i:i + 1], items)
        self.assertEqual(decodeAll(items, Frame), [f for f, _ in VECTORS])
        self.assertEqual(decoder.buffered(), 0)

    def test_lowerCaseLength(self):
        """
        LEN in lower-case hex is accepted.
        """
        [frame] = decodeFrames(b"\x00a\x01\x00\x01\x000\x01\x00a\x01" + b"x" * 10)
        self.assertEqual(frame.payload, b"x" * 10)

    def test_emptyEndOfStream(self):
        """
        An end of stream with an empty payload is accepted.
        """
        [frame] = decodeFrames(b"\x00io_0\x01\x00\x02\x01\x00\x01\x000\x01")
        self.assertEqual((frame.opt, frame.payload), (bmp.END_STREAM, b""))

    def test_customOptionIsData(self):
        """
        An unknown opts byte carries data.
        """
        [frame] = decodeFrames(b"\x00s\x01\x00\x09\x01\x004\x01\x002\x01hi")
        self.assertTrue(frame.isData())
        self.assertEqual((frame.opt, frame.sid, frame.payload), (9, b"4", b"hi"))

    def test_malformed(self):
        """
        Each kind of malformed header is a MalformedFrame naming the fault.
        """
        cases = [
            (b"GET / HTTP/1.1\r\n", "stream-id field must start with 0x00"),
            (b"\x00\x01\x00\x01\x00\x01\x001\x01", "stream-id field is empty"),
            (b"\x00io\x01\x00\x01\x000\x01\x00zz\x01", "LEN field contains b'z'"),
            (b"\x00io\x01\x00\x01\x00x\x01", "sid field contains b'x'"),
            (b"\x00io\x01\x00\x01\x000\x01\x00\x01", "LEN field is empty"),
            (b"\x00io\x01\x00\x05\x06\x01", "opts field is longer than 1"),
            (b"\x00" + b"a" * 65, "stream-id field is longer than 64"),
            (b"\x00io\x01\x00\x01\x00" + b"1" * 21, "sid field is longer than 20"),
            (b"\x00io\x01X", "opts field must start with 0x00"),
            (b"\x00io\x01\x00\x05\x01\x00\x01\x0021\x01" + b"9" * 33, "control frame"),
        ]
        for wire, text in cases:
            error = decodeError(wire)
            self.assertIsInstance(error, MalformedFrame)
            self.assertIn(text, str(error), wire)

    def test_fromStart(self):
        """
        C{receive(data, out, limit, start)} decodes C{data} from C{start}
        and returns the position it reached; a fault's byte offset counts
        the stream's bytes, not the buffer's.
        """
        wire = (encodeFrame(Frame(b"io_1", bmp.CREATE, b"0", payload=b"hi"))
                + encodeFrame(Frame(b"io_1", bmp.ACK, payload=b"0")))
        junk = b"\xff" * 7
        items = []
        decoder = FrameDecoder()
        pos = decoder.receive(junk + wire, items, 1, len(junk))
        self.assertEqual(len(items), 1)
        self.assertLess(pos, len(junk + wire))
        pos = decoder.receive(junk + wire, items, None, pos)
        self.assertEqual(pos, len(junk + wire))
        self.assertEqual(decodeAll(items, Frame), decodeFrames(wire))
        expected = decodeError(wire + b"GET /")
        with self.assertRaises(MalformedFrame) as caught:
            FrameDecoder().receive(junk + wire + b"GET /", [], None, len(junk))
        self.assertEqual(str(caught.exception), str(expected))

    def test_malformedSplit(self):
        """
        A fault is found whatever the split, with the same message.
        """
        wire = b"\x00io_0\x01\x00\x01\x000\x01\x00G\x01"
        whole = str(decodeError(wire))
        items = []
        decoder = FrameDecoder()
        with self.assertRaises(MalformedFrame) as caught:
            for i in range(len(wire)):
                decoder.receive(wire[i:i + 1], items)
        self.assertEqual(str(caught.exception), whole)

    def test_endlessHeaderFieldBounded(self):
        """
        A header field that never ends fails once past its bound, even fed
        byte by byte; the decoder holds no more than a header's worth.
        """
        decoder = FrameDecoder()
        items = []
        with self.assertRaises(MalformedFrame):
            for _ in range(200):
                decoder.receive(b"a" if decoder.buffered() else b"\x00", items)
        self.assertLessEqual(decoder.buffered(), bmp.MAX_HEADER)

    def test_frameTooLarge(self):
        """
        A LEN over maxFrameSize is FrameTooLarge, whatever its payload.
        """
        error = decodeError(b"\x00io_0\x01\x00\x01\x000\x01\x00FFFFFFFFFFFF\x01", 1 << 20)
        self.assertIsInstance(error, FrameTooLarge)
        self.assertIn("exceeds the receive limit", str(error))

    def test_encodeRejects(self):
        """
        Stream ids that cannot be framed are a ValueError.
        """
        self.assertRaises(ValueError, bmp.encodeHeader, b"", 0, b"", 0)
        self.assertRaises(ValueError, bmp.encodeHeader, b"a\x01", 0, b"", 0)
        self.assertRaises(ValueError, bmp.encodeHeader, b"x" * 65, 0, b"", 0)

    @given(st.lists(st.tuples(
        st.binary(min_size=1, max_size=10).filter(lambda b: b"\x00" not in b and b"\x01" not in b),
        st.sampled_from([bmp.DATA, bmp.CREATE, bmp.ACK, bmp.END_STREAM, bmp.CLOSE_STREAM, 0x42]),
        st.integers(0, 10 ** 6),
        st.binary(max_size=200),
    ), max_size=15), st.data())
    @settings(max_examples=150, deadline=None)
    def test_roundTripAnyChunking(self, specs, data):
        """
        Frames encoded then decoded, split anywhere, come back the same.
        """
        frames = []
        for streamId, opt, sid, payload in specs:
            if opt in (bmp.ACK, bmp.END_STREAM, bmp.CLOSE_STREAM):
                payload = b"%d" % sid if opt == bmp.ACK else b"\x04"
                frames.append(Frame(streamId, opt, b"", len(payload), payload))
            else:
                frames.append(Frame(streamId, opt, b"%d" % sid, len(payload), payload))
        wire = b"".join(encodeFrame(f) for f in frames)
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=30))
        items = []
        decoder = FrameDecoder()
        for chunk in splitAt(wire, cuts):
            decoder.receive(chunk, items)
        self.assertEqual(decodeAll(items, Frame), frames)

    @given(st.binary(max_size=4096), st.data())
    @settings(max_examples=200, deadline=None)
    def test_garbageGivesTypedErrorsOnly(self, garbage, data):
        """
        Random bytes, split anywhere, give frames or a RemoteProtocolError;
        the decoder never holds more than a header and a control payload.
        """
        cuts = data.draw(st.lists(st.integers(0, len(garbage)), max_size=10))
        decoder = FrameDecoder(maxFrameSize=1024)
        items = []
        try:
            for chunk in splitAt(garbage, cuts):
                decoder.receive(chunk, items)
        except RemoteProtocolError:
            pass
        self.assertLessEqual(decoder.buffered(), bmp.MAX_HEADER + bmp.MAX_CONTROL_PAYLOAD)


class EngineTests(SynchronousTestCase):
    """
    The BMP engine's stream rules.
    """

    def test_streamNames(self):
        """
        A client names streams io_0, io_1, ...; a server srv_0, ..., which
        never collide with a Blazeio client's names.
        """
        client, server = engines()
        self.assertEqual([client.openStream() for _ in range(2)], [b"io_0", b"io_1"])
        self.assertEqual([server.openStream() for _ in range(2)], [b"srv_0", b"srv_1"])

    def test_noPrefaceCreateOnFirstFrame(self):
        """
        Opening sends nothing; the first data frame carries 06, the next
        ones do not, and sids count from 0.
        """
        client, server = engines()
        sid = client.openStream()
        self.assertEqual(client.dataToSend(), [])
        client.sendData(sid, b"hello")
        self.assertEqual(b"".join(client.dataToSend()), SPEC_EXAMPLE)
        client.sendData(sid, b"abc")
        self.assertEqual(b"".join(client.dataToSend()), b"\x00io_0\x01\x00\x01\x001\x01\x003\x01abc")

    def test_frameWithoutCreateCreates(self):
        """
        A data frame on an unknown stream creates it, 06 or not.
        """
        _, server = engines()
        events = server.receiveData(b"\x00io_7\x01\x00\x01\x000\x01\x002\x01hi")
        self.assertEqual(events, [StreamOpened(b"io_7"), DataReceived(b"io_7", b"hi")])

    def test_ackAfterConsumption(self):
        """
        A frame is acknowledged once the application has consumed all of it.
        """
        client, server = engines()
        sid = client.openStream()
        client.sendData(sid, b"hello")
        pump(client, server)
        self.assertEqual(server.dataToSend(), [])
        server.consumed(sid, 3)
        self.assertEqual(server.dataToSend(), [])
        server.consumed(sid, 2)
        self.assertEqual(b"".join(server.dataToSend()), b"\x00io_0\x01\x00\x05\x01\x00\x01\x001\x010")

    def test_inFlightWindow(self):
        """
        At most maxInFlight frames are unacknowledged; each ack lets one
        more go.
        """
        client, server = engines(maxInFlight=3, maxFrameSize=128)
        sid = client.openStream()
        client.sendData(sid, b"z" * 1000)
        frames = decodeFrames(b"".join(client.dataToSend()))
        self.assertEqual([f.sid for f in frames], [b"0", b"1", b"2"])
        self.assertEqual(client.dataToSend(), [])
        client.receiveData(encodeFrame(Frame(sid, bmp.ACK, b"", 1, b"1")))
        [frame] = decodeFrames(b"".join(client.dataToSend()))
        self.assertEqual(frame.sid, b"3")

    def test_bytesInFlight(self):
        """
        At most maxBytesInFlight payload bytes are unacknowledged, whatever
        maxInFlight allows: the last frame is cut to the bytes left, and an
        acknowledgement lets its frame's bytes go again.
        """
        client, server = engines(maxInFlight=100, maxFrameSize=1000,
                                 maxBytesInFlight=2500)
        sid = client.openStream()
        client.sendData(sid, b"z" * 10000)
        frames = decodeFrames(b"".join(client.dataToSend()))
        self.assertEqual([f.size for f in frames], [1000, 1000, 500])
        self.assertEqual(client.dataToSend(), [])
        self.assertEqual(client.stream(sid).inflightBytes, 2500)
        self.assertEqual(client.counters.creditStalls, 1)
        client.receiveData(encodeFrame(Frame(sid, bmp.ACK, b"", 1, b"0")))
        self.assertEqual([f.size for f in decodeFrames(b"".join(client.dataToSend()))],
                         [1000])
        client.receiveData(encodeFrame(Frame(sid, bmp.ACK, b"", 1, b"2")))
        self.assertEqual([f.size for f in decodeFrames(b"".join(client.dataToSend()))],
                         [500])
        self.assertEqual(client.stream(sid).inflightBytes, 2500)

    def test_framesInFlightStillCap(self):
        """
        Small frames stop at maxInFlight before the byte limit is reached.
        """
        client, server = engines(maxInFlight=4, maxFrameSize=128)
        sid = client.openStream()
        wire = []
        for _ in range(10):
            client.sendData(sid, b"s" * 10)
            wire.extend(client.dataToSend())
        frames = decodeFrames(b"".join(wire))
        self.assertEqual([f.size for f in frames], [10, 10, 10, 10])
        self.assertEqual(client.sendBuffered(sid), 60)

    def test_bothLimitsDefaultsFillPipe(self):
        """
        With the defaults, 64 KiB writes stop at 4 MiB in flight (64
        frames), and 1 KiB writes at 256 frames.
        """
        client, server = engines()
        sid = client.openStream()
        for _ in range(128):
            client.sendData(sid, b"b" * (64 << 10))
        frames = decodeFrames(b"".join(client.dataToSend(1 << 30)))
        self.assertEqual(len(frames), 64)
        self.assertEqual(sum(f.size for f in frames), 4 << 20)
        other = client.openStream()
        for _ in range(300):
            client.sendData(other, b"k" * 1024)
            client.dataToSend(1 << 30)
        self.assertEqual(len(client.stream(other).inflight), 256)
        self.assertEqual(client.stream(other).inflightBytes, 256 * 1024)

    def test_sharedConnectionHoldsBytesInFlight(self):
        """
        While another stream sends too (within SHARED_TIME), a stream's
        bytes in flight are held to SHARED_INFLIGHT; after, to
        maxBytesInFlight again.
        """
        from muxframe.engine import SHARED_INFLIGHT, SHARED_TIME
        client, server = engines(maxFrameSize=65536)
        a = client.openStream()
        b = client.openStream()
        for _ in range(256):
            client.sendData(a, b"a" * 65536)

        def inFlight(now):
            frames = decodeFrames(b"".join(client.dataToSend(1 << 30, now)))
            state = client.stream(a)
            acks = b"".join(encodeFrame(Frame(a, bmp.ACK, b"", len(sid), sid))
                            for sid in list(state.inflight or ()))
            sent = state.inflightBytes
            client.receiveData(acks, now)
            return sent, frames

        self.assertEqual(inFlight(0.0)[0], 4 << 20)
        client.sendData(b, b"ping")
        sent, frames = inFlight(1.0)
        self.assertEqual(sent, SHARED_INFLIGHT)
        self.assertIn(b"ping", [f.payload for f in frames])
        self.assertEqual(inFlight(1.0 + SHARED_TIME / 2)[0], SHARED_INFLIGHT)
        self.assertEqual(inFlight(1.0 + SHARED_TIME * 2)[0], 4 << 20)

    def test_acceptorsCloseAfterOpenerForgot(self):
        """
        The opener forgets a stream that ended cleanly before the
        acceptor's close arrives: that close is expected, so honest churn
        spends no empty-frame budget; a second close of the same stream
        does.
        """
        client, server = engines(maxEmptyFrames=5)
        for n in range(50):
            sid = client.openStream()
            client.sendData(sid, b"q")
            client.endStream(sid)
            pump(client, server)
            server.consumed(sid, 1)
            server.sendData(sid, b"a")
            server.endStream(sid)
            pump(server, client)
            client.consumed(sid, 1)
            self.assertNotIn(sid, client)
            pump(client, server)
            self.assertNotIn(sid, server)
            close = b"".join(server.dataToSend())
            self.assertEqual(decodeFrames(close)[0].opt, bmp.CLOSE_STREAM)
            # (The opener's own StreamClosed, from its last consumed(), is
            # reported with the next events.)
            self.assertEqual(client.receiveData(close), [StreamClosed(sid, None)])
        self.assertFalse(client.closed)
        events = client.receiveData(close * 10)
        self.assertIn("maxEmptyFrames", str(events[-1].error))

    def test_ackNotHeldBackForOwnAcks(self):
        """
        With its own frames all unacknowledged, a side still acknowledges
        the peer's frames (a peer that waits deadlocks against Blazeio).
        """
        client, server = engines(maxInFlight=1)
        sid = client.openStream()
        client.sendData(sid, b"a")
        pump(client, server)
        server.sendData(sid, b"bc")
        client.receiveData(b"".join(server.dataToSend()))
        client.consumed(sid, 2)
        out = decodeFrames(b"".join(client.dataToSend()))
        self.assertEqual([(f.opt, f.payload) for f in out], [(bmp.ACK, b"0")])

    def test_blazeioStyleExchange(self):
        """
        A Blazeio client's request (one frame in flight, EOF, no close) and
        a muxframe server's answer end the stream cleanly: the server sends
        EOF then close, as Blazeio's server does.
        """
        server = BmpEngine("server")
        events = server.receiveData(b"\x00io_0\x01\x00\x06\x01\x000\x01\x004\x01ping")
        self.assertEqual(events, [StreamOpened(b"io_0"), DataReceived(b"io_0", b"ping")])
        server.consumed(b"io_0", 4)
        self.assertEqual(b"".join(server.dataToSend()), b"\x00io_0\x01\x00\x05\x01\x00\x01\x001\x010")
        self.assertEqual(server.receiveData(b"\x00io_0\x01\x00\x02\x01\x00\x01\x001\x01\x04"),
                         [StreamEnded(b"io_0")])
        server.sendData(b"io_0", b"pong")
        server.endStream(b"io_0")
        wire = b"".join(server.dataToSend())
        self.assertEqual(wire, b"\x00io_0\x01\x00\x06\x01\x000\x01\x004\x01pong"
                               b"\x00io_0\x01\x00\x02\x01\x00\x01\x001\x01\x04")
        events = server.receiveData(b"\x00io_0\x01\x00\x05\x01\x00\x01\x001\x010")
        self.assertEqual(events, [StreamClosed(b"io_0", None)])
        self.assertEqual(b"".join(server.dataToSend()), b"\x00io_0\x01\x00\x03\x01\x00\x01\x001\x01\x04")

    def test_closeBeforeEndIsReset(self):
        """
        A close before the peer's end of stream is a StreamResetError; after
        it, a clean end.
        """
        client, server = engines()
        a, b = client.openStream(), client.openStream()
        for sid in (a, b):
            client.sendData(sid, b"x")
        pump(client, server)
        events = server.receiveData(b"\x00io_0\x01\x00\x03\x01\x00\x01\x001\x01\x04")
        self.assertIsInstance(events[0].error, StreamResetError)
        server.receiveData(b"\x00io_1\x01\x00\x02\x01\x00\x01\x001\x01\x04")
        events = server.receiveData(b"\x00io_1\x01\x00\x03\x01\x00\x01\x001\x01\x04")
        self.assertEqual(events, [StreamClosed(b"io_1", None)])

    def test_ackTimeout(self):
        """
        A frame unacknowledged for ackTimeout ends its stream with
        StreamTimeoutError, the peer is sent a close, other streams live.
        """
        client = BmpEngine("client", Settings(ackTimeout=30))
        a, b = client.openStream(), client.openStream()
        client.sendData(a, b"lost")
        client.dataToSend(now=0)
        client.sendData(b, b"fine")
        client.dataToSend(now=20)
        client.receiveData(b"\x00io_1\x01\x00\x05\x01\x00\x01\x001\x010", 25)
        self.assertEqual(client.tick(29), [])
        deadline = client.nextDeadline()
        self.assertLessEqual(deadline, 29 + 30 / 4.0)
        [event] = client.tick(37.5)
        self.assertEqual(event.streamId, a)
        self.assertIsInstance(event.error, StreamTimeoutError)
        self.assertIn("ackTimeout", str(event.error))
        self.assertEqual(b"".join(client.dataToSend()), b"\x00io_0\x01\x00\x03\x01\x00\x01\x001\x01\x04")
        self.assertIn(b, client)

    def test_resetAcksFirst(self):
        """
        Aborting a stream acknowledges the peer's unconsumed frames before
        the close, so a Blazeio writer waiting for an ack does not hang.
        """
        _, server = engines()
        server.receiveData(b"\x00io_0\x01\x00\x06\x01\x000\x01\x001\x01a")
        server.resetStream(b"io_0")
        self.assertEqual(b"".join(server.dataToSend()),
                         b"\x00io_0\x01\x00\x05\x01\x00\x01\x001\x010"
                         b"\x00io_0\x01\x00\x03\x01\x00\x01\x001\x01\x04")

    def test_refuseBeyondMaxStreams(self):
        """
        Beyond maxStreams a new stream is closed at once, once; its later
        frames are dropped; the session goes on.
        """
        server = BmpEngine("server", Settings(maxStreams=1))
        server.receiveData(b"\x00io_0\x01\x00\x06\x01\x000\x01\x001\x01a")
        self.assertEqual(server.receiveData(b"\x00io_1\x01\x00\x06\x01\x000\x01\x001\x01b"), [])
        self.assertEqual(server.receiveData(b"\x00io_1\x01\x00\x01\x001\x01\x001\x01c"), [])
        self.assertEqual(b"".join(server.dataToSend()), b"\x00io_1\x01\x00\x03\x01\x00\x01\x001\x01\x04")
        self.assertEqual(server.counters.streamsRefused, 1)
        self.assertEqual(server.receiveData(b"\x00io_0\x01\x00\x01\x001\x01\x001\x01d"),
                         [DataReceived(b"io_0", b"d")])

    def test_forgottenLocalStreamNotRecreated(self):
        """
        A late frame on a stream this side opened and has forgotten does not
        create a new stream.
        """
        client, server = engines()
        sid = client.openStream()
        client.resetStream(sid)
        self.assertEqual(client.receiveData(b"\x00io_0\x01\x00\x01\x000\x01\x001\x01x"), [])
        self.assertNotIn(sid, client)

    def test_overrunResetsStream(self):
        """
        A peer that sends past maxStreamReceiveBuffer unacknowledged has the
        stream reset with a flow-control error.
        """
        server = BmpEngine("server", Settings(maxStreamReceiveBuffer=10))
        events = server.receiveData(b"".join(
            b"\x00io_0\x01\x00\x01\x00%d\x01\x004\x01abcd" % i for i in range(3)))
        self.assertIsInstance(events[-1], StreamClosed)
        self.assertEqual(events[-1].error.code, ErrorCode.FLOW_CONTROL)
        self.assertNotIn(b"io_0", server)

    def test_badAckIsProtocolError(self):
        """
        An acknowledgement whose payload is not a sid ends the session.
        """
        _, server = engines()
        [event] = server.receiveData(b"\x00io_0\x01\x00\x05\x01\x00\x01\x001\x01x")
        self.assertIsInstance(event, ConnectionTerminated)
        self.assertIsInstance(event.error, MalformedFrame)

    def test_consumedGoneStream(self):
        """
        Consuming bytes of a stream that is gone (reset while its data was
        delivered) does nothing.
        """
        client, server = engines()
        streamId = client.openStream()
        client.sendData(streamId, b"d" * 100)
        pump(client, server)
        server.resetStream(streamId)
        server.dataToSend()
        before = snapshot(server)
        server.consumed(streamId, 100)
        self.assertEqual(snapshot(server), before)

    def test_zeroLengthFrameAcked(self):
        """
        A zero-length data frame is acknowledged straight away.
        """
        _, server = engines()
        server.receiveData(b"\x00io_0\x01\x00\x06\x01\x000\x01\x000\x01")
        self.assertEqual(b"".join(server.dataToSend()), b"\x00io_0\x01\x00\x05\x01\x00\x01\x001\x010")

    @given(st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=3000)), max_size=12),
           st.data())
    @settings(max_examples=60, deadline=None)
    def test_anyChunkingSameEvents(self, writes, data):
        """
        A client's byte stream, cut anywhere, gives the server the same
        events (data coalesced per stream).
        """
        client = BmpEngine("client", Settings(maxFrameSize=512, maxInFlight=4096))
        ids = [client.openStream() for _ in range(4)]
        for index, payload in writes:
            client.sendData(ids[index], payload)
        client.endStream(ids[0])
        wire = b"".join(client.dataToSend(1 << 30))
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=40))
        whole, split = chunkedEvents(lambda: BmpEngine("server"), wire, cuts)
        self.assertEqual(split, whole)


class OffsetTests(SynchronousTestCase):

    def test_offsetCountsPayloads(self):
        """
        The stream offset in an error counts every byte before the fault,
        payloads included.
        """
        good = encodeFrame(Frame(b"io_0", bmp.DATA, b"0", 5, b"hello"))
        error = decodeError(good + b"\x00io_0\x01X")
        self.assertIn("stream offset %d" % (len(good) + 6,), str(error))


class CloseRuleTests(SynchronousTestCase):

    def test_openerSendsNoClose(self):
        """
        On a clean end only the side that accepted the stream sends close;
        the opener forgets the stream without one, so a close never crosses
        a Blazeio server's own (which would start a new stream there).
        """
        client, server = engines()
        sid = client.openStream()
        client.endStream(sid)
        pump(client, server)
        server.endStream(sid)
        wire = b"".join(server.dataToSend()) + b"".join(server.dataToSend())
        self.assertEqual(decodeFrames(wire)[-1].opt, bmp.CLOSE_STREAM)
        self.assertEqual(server.takeEvents(), [StreamClosed(sid, None)])
        events = client.receiveData(wire)
        self.assertEqual(events, [StreamEnded(sid), StreamClosed(sid, None)])
        self.assertEqual(client.dataToSend(), [])


def _servingEngine(localEnded=False, remoteEnded=False, **kwargs):
    """
    A server engine after a client opened io_0 and io_1 and sent a frame
    on each (consumed: acknowledgements queued; together past the first
    bytes the engine sniffs), with frames of its own in flight: sid 0 on
    io_0, sids 0 to 3 on io_1; C{localEnded}/C{remoteEnded} end io_0's
    directions.
    """
    client, server = engines(**kwargs)
    for _ in range(2):
        streamId = client.openStream()
        client.sendData(streamId, b"h" * 64)
    pump(client, server)
    for streamId, count in ((b"io_0", 1), (b"io_1", 4)):
        server.consumed(streamId, 64)
        for n in range(count):
            server.sendData(streamId, b"abc")
            server.dataToSend()
    if localEnded:
        server.endStream(b"io_0")
        server.dataToSend()
    if remoteEnded:
        server.receiveData(encodeFrame(Frame(b"io_0", bmp.END_STREAM, b"", 1, b"\x04")))
    server.takeEvents()
    return server


_streamNames = st.sampled_from([b"io_0", b"io_1", b"io_5"])
_ackFrames = st.builds(lambda s, n: encodeFrame(Frame(s, bmp.ACK, b"", 0, b"%d" % n)),
                       _streamNames, st.integers(0, 4))
_dataFrames = st.builds(
    lambda s, opt, sid, payload: encodeFrame(Frame(s, opt, sid, 0, payload)),
    _streamNames, st.sampled_from([bmp.DATA, bmp.CREATE, 0x07]),
    st.sampled_from([b"", b"1", b"7"]),
    st.one_of(st.binary(max_size=4), st.just(b"z" * 70)))
_endFrames = st.builds(
    lambda s: encodeFrame(Frame(s, bmp.END_STREAM, b"", 1, b"\x04")), _streamNames)
# Mostly the shape the fast path takes (acknowledgements, then a frame),
# sometimes with another frame after it, sometimes cut short.
_reads = st.builds(
    lambda acks, last, extra, cut: (b"".join(acks) + last + extra)[:-cut or None],
    st.lists(_ackFrames, max_size=2),
    st.one_of(_dataFrames, _ackFrames, _endFrames),
    st.one_of(st.just(b""), st.just(b""), _dataFrames, _ackFrames),
    st.one_of(st.just(0), st.just(0), st.integers(1, 40)))


class ReceiveWholeTests(SynchronousTestCase):
    """
    L{BmpEngine.receiveWhole}, the small-message fast path, has the effects
    of L{BmpEngine.receiveData} on every read it takes and takes nothing
    from the others.
    """

    def test_ackAndMessage(self):
        """
        A read of an acknowledgement and a data frame (what an echo peer
        sends) is taken: the frame in flight is acknowledged, the data
        returned and its acknowledgement owed once consumed.
        """
        server = _servingEngine()
        read = (encodeFrame(Frame(b"io_0", bmp.ACK, b"", 0, b"0"))
                + encodeFrame(Frame(b"io_0", bmp.DATA, b"1", 0, b"ping")))
        self.assertEqual(server.receiveWhole(read, 1.0), (b"io_0", b"ping"))
        self.assertIsNone(server.stream(b"io_0").inflight)
        server.consumed(b"io_0", 4)
        self.assertEqual(decodeFrames(b"".join(server.dataToSend())),
                         [Frame(b"io_0", bmp.ACK, b"", 1, b"1")])

    def test_acksOnly(self):
        """
        A read of acknowledgements only is taken, with nothing to deliver.
        """
        server = _servingEngine()
        read = b"".join(encodeFrame(Frame(b"io_1", bmp.ACK, b"", 0, b"%d" % n))
                        for n in (2, 0))
        self.assertEqual(server.receiveWhole(read, 1.0), (None, None))
        self.assertEqual(server.counters.framesReceived, 4)

    def test_expectedAcknowledgement(self):
        """
        The answer to a frame sent with nothing in flight (its
        acknowledgement, recognised without parsing, then a data frame on
        the same stream) leaves the engine as receiveData leaves it; once
        that frame is acknowledged, the same acknowledgement again is not
        taken for one.
        """
        import copy
        client, server = engines()
        streamId = client.openStream()
        client.sendData(streamId, b"q" * 200)  # (past the bytes sniffed)
        pump(client, server)
        server.consumed(streamId, 200)
        server.sendData(streamId, b"r" * 200)
        pump(server, client)
        client.consumed(streamId, 200)
        pump(client, server)
        frame = client.sendWhole(streamId, b"ping", 1.0, 0.0)
        self.assertIsNotNone(frame)
        server.receiveData(frame, 1.0)
        server.consumed(streamId, 4)
        answer = server.sendWhole(streamId, b"pong", 1.0, 0.0)
        self.assertEqual([f.opt for f in decodeFrames(answer)], [bmp.ACK, bmp.DATA])
        slow = copy.deepcopy(client)
        self.assertEqual(client.receiveWhole(answer, 2.0), (streamId, b"pong"))
        self.assertEqual(slow.receiveData(answer, 2.0), [DataReceived(streamId, b"pong")])
        self.assertEqual(snapshot(client), snapshot(slow))
        self.assertIsNone(client.stream(streamId).inflight)
        before = snapshot(client)
        self.assertIsNone(client.receiveWhole(answer, 3.0))
        self.assertEqual(snapshot(client), before)

    def _awaitingAnswer(self):
        """
        Return a client and a server engine after an exchange on one stream
        (past the bytes the server sniffs) and the server's frame sent with
        nothing in flight (its acknowledgement is the one expected), with
        the stream id and that frame's sid.
        """
        client, server = engines()
        streamId = client.openStream()
        client.sendData(streamId, b"q" * 200)
        pump(client, server)
        server.consumed(streamId, 200)
        server.sendData(streamId, b"r" * 200)
        pump(server, client)
        (sid,) = server.stream(streamId).inflight
        return client, server, streamId, sid

    def _answerTakenAsReceiveData(self, server, read):
        # receiveWhole leaves server as receiveData does, or untouched.
        import copy
        fast, slow = copy.deepcopy(server), copy.deepcopy(server)
        before = snapshot(fast)
        result = fast.receiveWhole(read, 2.0)
        events = slow.receiveData(read, 2.0)
        if result is None:
            self.assertEqual(snapshot(fast), before)
            return None
        self.assertEqual(events, [DataReceived(*result)] if result[0] is not None else [])
        self.assertEqual(snapshot(fast), snapshot(slow))
        return result

    def test_expectedAcknowledgementAfterEnds(self):
        """
        The acknowledgement expected on a stream the peer has since ended,
        this side has ended or reset, or the peer reset, followed by a data
        frame, is taken only as receiveData takes it (data after the peer's
        end is dropped, a frame of a reset stream is not the stream's).
        """
        def peerEnded(client, server, streamId):
            client.endStream(streamId)
            pump(client, server)

        def ended(client, server, streamId):
            server.endStream(streamId)
            server.dataToSend()

        def reset(client, server, streamId):
            server.resetStream(streamId)
            server.dataToSend()

        def peerReset(client, server, streamId):
            # A close before its end (without acknowledging the frame in
            # flight, as a resetting muxframe would): forgotten.
            server.receiveData(encodeFrame(Frame(streamId, bmp.CLOSE_STREAM, b"", 0, b"\x04")))

        for end in (peerEnded, ended, reset, peerReset):
            client, server, streamId, sid = self._awaitingAnswer()
            end(client, server, streamId)
            server.takeEvents()
            read = (encodeFrame(Frame(streamId, bmp.ACK, b"", 0, sid))
                    + encodeFrame(Frame(streamId, bmp.DATA, b"1", 0, b"late")))
            result = self._answerTakenAsReceiveData(server, read)
            if end is not ended:
                self.assertIsNone(result, end.__name__)

    def test_expectedAcknowledgementStillTaken(self):
        """
        Without such an end, the expected answer is taken (the test above
        is about the ends, not a path that never runs).
        """
        client, server, streamId, sid = self._awaitingAnswer()
        read = (encodeFrame(Frame(streamId, bmp.ACK, b"", 0, sid))
                + encodeFrame(Frame(streamId, bmp.DATA, b"1", 0, b"late")))
        self.assertEqual(self._answerTakenAsReceiveData(server, read), (streamId, b"late"))

    @given(_reads, st.booleans(), st.booleans(), st.booleans())
    # The last frame in flight of a stream ended both ways (it finishes);
    # a frame over maxStreamReceiveBuffer (an overrun); data after the end.
    @example(encodeFrame(Frame(b"io_0", bmp.ACK, b"", 0, b"0")), True, True, False)
    @example(encodeFrame(Frame(b"io_0", bmp.DATA, b"1", 0, b"z" * 70)), False, False, True)
    @example(encodeFrame(Frame(b"io_0", bmp.DATA, b"1", 0, b"ab")), False, True, False)
    # The acknowledgement expected, then a data frame on its stream that is
    # not all the read, has no sid, or is over maxStreamReceiveBuffer.
    @example(encodeFrame(Frame(b"io_1", bmp.ACK, b"", 0, b"0"))
             + encodeFrame(Frame(b"io_1", bmp.DATA, b"1", 0, b"ab"))
             + encodeFrame(Frame(b"io_1", bmp.ACK, b"", 0, b"1")), False, False, False)
    @example(encodeFrame(Frame(b"io_1", bmp.ACK, b"", 0, b"0"))
             + encodeFrame(Frame(b"io_1", bmp.DATA, b"", 0, b"ab")), False, False, False)
    @example(encodeFrame(Frame(b"io_1", bmp.ACK, b"", 0, b"0"))
             + encodeFrame(Frame(b"io_1", bmp.DATA, b"1", 0, b"z" * 70)), False, False, True)
    @settings(max_examples=500, deadline=None)
    def test_sameAsReceiveData(self, read, localEnded, remoteEnded, small):
        """
        Whatever the read, receiveWhole either leaves the engine as it was
        (and returns C{None}) or leaves it exactly as receiveData does,
        returning the data receiveData reports.
        """
        # Room for one unacknowledged 64-byte frame, not for 70 bytes.
        kwargs = {"maxStreamReceiveBuffer": bmp.FRAME_COST + 68} if small else {}
        server = _servingEngine(localEnded, remoteEnded, **kwargs)
        result, events = againstReceiveData(self, server, "receiveWhole", read, 1.0)
        if result is not None:
            expected = [DataReceived(*result)] if result[0] is not None else []
            self.assertEqual(events, expected)


class ControlToSendTests(SynchronousTestCase):
    """
    L{BmpEngine.controlToSend} returns the queued control frames only when
    they are all the output there is.
    """

    def test_acknowledgementsOnly(self):
        """
        The acknowledgements a consumed read earns are returned joined, as
        dataToSend would return them, and are then no longer output.
        """
        import copy
        client, server = engines()
        for _ in range(2):
            client.sendData(client.openStream(), b"d" * 100)
        pump(client, server)
        self.assertIsNone(server.controlToSend(1.0))
        for streamId in (b"io_0", b"io_1"):
            server.consumed(streamId, 100)
        slow = copy.deepcopy(server)
        control = server.controlToSend(1.0)
        self.assertEqual(control, b"".join(slow.dataToSend(256 * 1024, 1.0)))
        self.assertEqual([(f.streamId, f.opt) for f in decodeFrames(control)],
                         [(b"io_0", bmp.ACK), (b"io_1", bmp.ACK)])
        self.assertEqual(snapshot(server), snapshot(slow))
        self.assertFalse(server.hasOutput())
        self.assertIsNone(server.controlToSend(1.0))

    def test_notWithDataOrEvents(self):
        """
        With a stream's data ready to frame, an event waiting or the
        session closed, nothing is taken.
        """
        client, server = engines()
        streamId = client.openStream()
        client.sendData(streamId, b"d" * 100)
        pump(client, server)
        server.consumed(streamId, 100)
        server.sendData(streamId, b"answer")
        before = snapshot(server)
        self.assertIsNone(server.controlToSend(1.0))
        self.assertEqual(snapshot(server), before)
        pump(server, client)
        client.consumed(streamId, 6)
        client.sendData(streamId, b"more")
        client.endStream(streamId)
        pump(client, server)
        server.consumed(streamId, 4)
        server.endStream(streamId)
        # Its end goes out, the stream finishes: the close is queued and
        # the StreamClosed event waits.
        server.dataToSend()
        self.assertTrue(server.hasEvents())
        self.assertTrue(server.hasOutput())
        self.assertIsNone(server.controlToSend(1.0))
        server.takeEvents()
        client.sendData(client.openStream(), b"d" * 10)
        pump(client, server)
        server.consumed(b"io_1", 10)
        server.closeSession()
        self.assertIsNone(server.controlToSend(1.0))


# What may be queued, sent or acknowledged before a write: (step, stream).
_sendSteps = st.lists(st.tuples(
    st.sampled_from(["queue", "ack", "ackAll", "credit", "switch", "spend", "end",
                     "reset", "flush", "tick", "close"]),
    st.sampled_from([b"io_0", b"io_1"])), max_size=4)


def _prepare(engine, steps):
    sids = iter(range(100, 200))
    for step, streamId in steps:
        state = engine.stream(streamId)
        if step in ("queue", "ack", "credit", "switch", "spend", "end", "reset") and (
                state is None or step in ("queue", "switch", "spend") and (
                    state.endPending or state.localEnded)):
            continue
        if step == "queue":
            try:
                engine.sendData(streamId, b"q" * 10)
            except StreamBufferOverflow:
                pass
        elif step in ("ack", "ackAll"):
            acks = [(s, sid) for s in engine.streamIds()
                    for sid in list(engine.stream(s).inflight or ())
                    if step == "ackAll" or s == streamId][:1 if step == "ack" else None]
            engine.receiveData(b"".join(
                encodeFrame(Frame(s, bmp.ACK, b"", 0, sid)) for s, sid in acks), 0.5)
        elif step == "credit":
            engine.receiveData(encodeFrame(
                Frame(streamId, bmp.DATA, b"%d" % next(sids), 0, b"d" * 8)), 0.5)
            engine.consumed(streamId, 8, 0.5)  # its acknowledgement, queued
        elif step in ("switch", "spend"):
            other = b"io_1" if streamId == b"io_0" else b"io_0"
            try:
                engine.sendData(other if step == "switch" else streamId,
                                b"s" * (1 if step == "switch" else 90))
            except (StreamBufferOverflow, StreamClosedError):
                pass
            engine.dataToSend(1 << 20, 0.5)
        elif step == "end":
            engine.endStream(streamId)
        elif step == "reset":
            engine.resetStream(streamId)
        elif step == "flush":
            engine.dataToSend(1 << 20, 0.5)  # its events (a stream finishing) wait
        elif step == "tick":
            engine.tick(0.6)
        else:
            engine.closeSession()


class SendWholeTests(SynchronousTestCase):
    """
    L{BmpEngine.sendWhole}, the small-message path out, has the effects of
    L{BmpEngine.sendData} followed by L{BmpEngine.dataToSend} on every
    write it takes and takes nothing from the others.
    """

    def test_ackAndMessage(self):
        """
        A small write on the stream last sent on, with room in flight, is
        framed at once after the acknowledgements owed (what an echo sends).
        """
        server = _servingEngine()
        server.receiveData(encodeFrame(Frame(b"io_1", bmp.DATA, b"1", 0, b"ping")), 1.0)
        server.consumed(b"io_1", 4)
        frame = server.sendWhole(b"io_1", b"pong", 1.0, 0.0)
        self.assertEqual(decodeFrames(frame), [Frame(b"io_1", bmp.ACK, b"", 1, b"1"),
                                              Frame(b"io_1", bmp.DATA, b"4", 4, b"pong")])
        self.assertEqual(list(server.stream(b"io_1").inflight), [b"0", b"1", b"2", b"3", b"4"])
        self.assertFalse(server.hasOutput())

    def test_firstInFlightArmsTimer(self):
        """
        With nothing in flight, a frame arms the acknowledgement check: it
        is left to sendData unless the caller's timer is due by then.
        """
        server = _servingEngine()
        _prepare(server, [("ackAll", b"io_0")])
        self.assertIsNone(server.nextDeadline())
        self.assertIsNone(server.sendWhole(b"io_1", b"pong", 1.0, None))
        due = 30 / 4.0
        self.assertIsNone(server.sendWhole(b"io_1", b"pong", 1.0, due + 1))
        self.assertIsNotNone(server.sendWhole(b"io_1", b"pong", 1.0, due))
        self.assertEqual(server.nextDeadline(), due)

    @given(_sendSteps, st.sampled_from([b"io_0", b"io_1", b"io_5"]),
           st.sampled_from([0, 1, 64, 1000, 4096, 4097]),
           st.sampled_from([{}, {"maxInFlight": 5}, {"maxBytesInFlight": 1024},
                            {"maxStreamSendBuffer": 100}, {"ackTimeout": 0},
                            {"maxFrameSize": 128}]),
           st.sampled_from([None, 0.0, 100.0]))
    @example([], b"io_1", 64, {}, 0.0)
    @example([("credit", b"io_1")], b"io_1", 64, {}, 0.0)
    # io_1 at maxInFlight (its fifth frame sent).
    @example([("spend", b"io_1")], b"io_1", 64, {"maxInFlight": 5}, 0.0)
    @settings(max_examples=500, deadline=None)
    def test_sameAsSendData(self, steps, streamId, size, kwargs, armedAt):
        """
        Whatever was queued, sent or acknowledged before, sendWhole either
        leaves the engine as it was (and returns C{None}) or leaves it
        exactly as sendData and dataToSend do, returning the bytes
        dataToSend returns.
        """
        import copy
        server = _servingEngine(**kwargs)
        _prepare(server, steps)
        fast, slow = copy.deepcopy(server), copy.deepcopy(server)
        before = snapshot(fast)
        data = b"w" * size
        result = fast.sendWhole(streamId, data, 1.0, armedAt)
        if result is None:
            self.assertEqual(snapshot(fast), before)
            return
        slow.sendData(streamId, data)
        self.assertEqual(b"".join(slow.dataToSend(256 * 1024, 1.0)), result)
        self.assertEqual(snapshot(fast), snapshot(slow))
