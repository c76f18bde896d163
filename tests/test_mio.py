"""
Tests for L{muxframe.mio}: the MIO codec and engine, without I/O.
"""

import struct

from hypothesis import example, given, settings, strategies as st

from twisted.trial.unittest import SynchronousTestCase

from muxframe import mio
from muxframe.errors import (
    ErrorCode,
    FlowControlViolation,
    FrameTooLarge,
    MalformedFrame,
    RemoteProtocolError,
    SessionClosedError,
    SessionTimeoutError,
    StreamBufferOverflow,
    StreamClosedError,
    StreamLimitError,
    StreamRefusedError,
    StreamResetError,
)
from muxframe.events import (
    ConnectionTerminated,
    DataReceived,
    StreamClosed,
    StreamEnded,
    StreamOpened,
)
from muxframe.mio import Frame, FrameDecoder, MioEngine, decodeFrames, encodeFrame
from muxframe.settings import Settings

from .support import againstReceiveData, chunkedEvents, decodeAll, snapshot, splitAt

# Fixed vectors, from the frame table of docs/protocols.md (MIO).
VECTORS = [
    # open stream 1 with a 256 KiB window: flags RST|WND
    (Frame(1, 0x040000, mio.OPEN), "00000001" "040000" "0c"),
    # data "hello" on stream 1: flags SYN, size 5
    (Frame(1, 5, mio.DATA, b"hello"), "00000001" "000005" "01" "68656c6c6f"),
    # data + end of stream, empty: SYN|HFR
    (Frame(3, 0, mio.DATA_END, b""), "00000003" "000000" "11"),
    # window update of 65536 on stream 2: SYN|WND
    (Frame(2, 65536, mio.WINDOW_UPDATE), "00000002" "010000" "09"),
    # reset stream 5, code 4 (refused)
    (Frame(5, 4, mio.RESET), "00000005" "000004" "04"),
    # close session, code 2 (flow control)
    (Frame(0, 2, mio.CLOSE_SESSION), "00000000" "000002" "02"),
    # session window update of size 0: the keepalive
    (Frame(0, 0, mio.SESSION_WINDOW), "00000000" "000000" "08"),
]


def engines(**kwargs):
    """
    A connected client/server pair of engines.
    """
    settings = Settings(**kwargs)
    return MioEngine("client", settings), MioEngine("server", settings)


def pump(source, sink, now=0.0):
    """
    Move everything C{source} has to send into C{sink}; return sink's events.
    """
    return sink.receiveData(b"".join(source.dataToSend(1 << 30, now)), now)


class CodecTests(SynchronousTestCase):
    """
    The frame codec, byte for byte.
    """

    def test_vectors(self):
        """
        Each frame encodes to the documented bytes and decodes back.
        """
        for frame, hexBytes in VECTORS:
            wire = bytes.fromhex(hexBytes)
            self.assertEqual(encodeFrame(frame), wire)
            [decoded] = decodeFrames(wire)
            self.assertEqual(decoded.streamId, frame.streamId)
            self.assertEqual(decoded.flags, frame.flags)
            self.assertEqual(decoded.size, frame.size)
            if frame.hasPayload():
                self.assertEqual(decoded.payload, frame.payload)

    def test_byteByByte(self):
        """
        Feeding the vectors one byte at a time decodes the same frames.
        """
        wire = b"".join(bytes.fromhex(h) for _, h in VECTORS)
        items = []
        decoder = FrameDecoder()
        for i in range(len(wire)):
            decoder.receive(wire[i:i + 1], items)
        self.assertEqual(decodeAll(items, Frame), decodeFrames(wire))
        self.assertEqual(len(decodeFrames(wire)), len(VECTORS))

    def test_fromStart(self):
        """
        C{receive(data, out, limit, start)} decodes C{data} from C{start}
        (a slice of a larger read, uncopied) and returns the position it
        reached, so the next slice starts there.
        """
        wire = b"".join(bytes.fromhex(h) for _, h in VECTORS)
        junk = b"\xff" * 5
        items = []
        decoder = FrameDecoder()
        pos = len(junk)
        while pos < len(junk + wire):
            batch = []
            pos = decoder.receive(junk + wire, batch, 2, pos)
            self.assertLessEqual(len(batch), 2)
            items.extend(batch)
        self.assertEqual(pos, len(junk + wire))
        self.assertEqual(decodeAll(items, Frame), decodeFrames(wire))

    def test_reservedBitIgnored(self):
        """
        Bit 31 of the stream id is ignored on receipt.
        """
        [frame] = decodeFrames(bytes.fromhex("80000007" "000000" "09"))
        self.assertEqual(frame.streamId, 7)

    def test_reservedFlagsIgnored(self):
        """
        Flags 0xE0 do not change how a frame is read.
        """
        [frame] = decodeFrames(bytes.fromhex("00000001" "000002" "e1") + b"hi")
        self.assertEqual(frame.payload, b"hi")

    def test_payloadOnlyWithSynWithoutWnd(self):
        """
        A window update's size is credit, not a payload length.
        """
        frames = decodeFrames(bytes.fromhex("00000001" "000010" "09" "00000001" "000000" "11"))
        self.assertEqual([f.flags for f in frames], [0x09, 0x11])

    def test_frameTooLarge(self):
        """
        A data frame over maxFrameSize is FrameTooLarge (a flow-control
        error, code 2), raised as soon as its header is read.
        """
        items = []
        decoder = FrameDecoder(maxFrameSize=128)
        decoder.receive(bytes.fromhex("00000001" "000005" "01") + b"hello", items)
        with self.assertRaises(FrameTooLarge) as caught:
            decoder.receive(bytes.fromhex("00000001" "000081" "01"), items)
        self.assertEqual(caught.exception.code, ErrorCode.FLOW_CONTROL)
        self.assertIn("129 bytes", str(caught.exception))
        self.assertEqual(len(items), 1)

    def test_encodeBounds(self):
        """
        Fields that cannot be encoded are a ValueError.
        """
        self.assertRaises(ValueError, mio.encodeHeader, 1 << 31, 0, 1)
        self.assertRaises(ValueError, mio.encodeHeader, 1, 1 << 24, 1)

    @given(st.lists(st.tuples(
        st.integers(0, (1 << 31) - 1),
        st.sampled_from([mio.DATA, mio.DATA_END, mio.WINDOW_UPDATE, mio.RESET,
                         mio.OPEN, mio.CLOSE_SESSION, mio.SESSION_WINDOW]),
        st.binary(max_size=300),
        st.integers(0, (1 << 24) - 1),
    ), max_size=20), st.data())
    @settings(max_examples=150, deadline=None)
    def test_roundTripAnyChunking(self, specs, data):
        """
        Encoding frames and decoding them, split anywhere, gives them back.
        """
        frames = []
        for streamId, flags, payload, size in specs:
            if flags & mio.SYN and not flags & mio.WND:
                frames.append(Frame(streamId, len(payload), flags, payload))
            else:
                frames.append(Frame(streamId, size, flags))
        wire = b"".join(encodeFrame(f) for f in frames)
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=30))
        items = []
        decoder = FrameDecoder()
        for chunk in splitAt(wire, cuts):
            decoder.receive(chunk, items)
        decoded = decodeAll(items, Frame)
        self.assertEqual(len(decoded), len(frames))
        for got, want in zip(decoded, frames):
            self.assertEqual((got.streamId, got.flags, got.size), (want.streamId, want.flags, want.size))
            if want.hasPayload():
                self.assertEqual(got.payload, want.payload)
        self.assertEqual(decoder.buffered(), 0)

    @given(st.binary(max_size=4096))
    @settings(max_examples=200, deadline=None)
    def test_garbageGivesTypedErrorsOnly(self, garbage):
        """
        Random bytes give frames or a RemoteProtocolError, and the decoder
        never holds more than a partial header.
        """
        items = []
        decoder = FrameDecoder(maxFrameSize=1024)
        try:
            decoder.receive(garbage, items)
        except RemoteProtocolError:
            pass
        self.assertLess(decoder.buffered(), mio.HEADER_SIZE)


class EngineTests(SynchronousTestCase):
    """
    The MIO engine's stream rules.
    """

    def test_idParity(self):
        """
        The connection's client opens odd ids, the server even ids, so two
        muxframe peers never collide.
        """
        client, server = engines()
        self.assertEqual([client.openStream() for _ in range(3)], [1, 3, 5])
        self.assertEqual([server.openStream() for _ in range(3)], [2, 4, 6])

    def test_peerOpensOurParityOutOfOrder(self):
        """
        A Go client opens even ids too, and concurrent opens leave it out of
        order (4 before 2): each id the peer made the server skip is still
        the peer's to open, once; the server's own opens go past them.
        """
        _, server = engines()
        events = server.receiveData(bytes.fromhex(
            "00000004" "000400" "0c" "00000002" "000400" "0c"))
        self.assertEqual(events, [StreamOpened(4), StreamOpened(2)])
        self.assertEqual(server.openStream(), 6)
        server.resetStream(2)
        events = server.receiveData(bytes.fromhex("00000002" "000400" "0c"))
        self.assertIsInstance(events[-1], ConnectionTerminated)
        self.assertIn("stream 2, which was used before", str(events[-1].error))

    def test_ownIdsStayRefused(self):
        """
        An id this side opened itself is never the peer's, even once the
        peer has opened higher ids of its parity.
        """
        _, server = engines()
        self.assertEqual(server.openStream(), 2)
        server.resetStream(2)
        events = server.receiveData(bytes.fromhex(
            "00000006" "000400" "0c" "00000004" "000400" "0c"))
        self.assertEqual(events, [StreamOpened(6), StreamOpened(4)])
        events = server.receiveData(bytes.fromhex("00000002" "000400" "0c"))
        self.assertIsInstance(events[-1], ConnectionTerminated)

    def test_skippedIdsBounded(self):
        """
        A peer jumping far ahead leaves at most SKIPPED_MEMORY ids to open
        out of order, the ones just below its jump.
        """
        _, server = engines()
        far = 2 + 2 * (mio.SKIPPED_MEMORY + 10)
        events = server.receiveData(mio.encodeFrame(Frame(far, 1024, mio.OPEN)))
        self.assertEqual(events, [StreamOpened(far)])
        highest = far - 2
        lowest = far - 2 * mio.SKIPPED_MEMORY
        events = server.receiveData(b"".join(
            mio.encodeFrame(Frame(i, 1024, mio.OPEN)) for i in (highest, lowest)))
        self.assertEqual(events, [StreamOpened(highest), StreamOpened(lowest)])
        events = server.receiveData(mio.encodeFrame(Frame(lowest - 2, 1024, mio.OPEN)))
        self.assertIsInstance(events[-1], ConnectionTerminated)

    def test_sessionCloseIsTheLastFrame(self):
        """
        After a protocol error closes the session, a stream ending or
        writing (a child answering the events of the same read) sends
        nothing: FIN is the last frame on the wire.
        """
        _, server = engines()
        events = server.receiveData(bytes.fromhex(
            "00000001" "000400" "0c" "00000001" "000000" "11"
            "00000063" "000001" "01" "78"))
        self.assertIsInstance(events[-1], ConnectionTerminated)
        server.endStream(1)
        wire = b"".join(server.dataToSend())
        self.assertEqual(wire[-8:], bytes.fromhex("00000000" "000001" "02"))
        self.assertEqual([f.streamId for f in decodeFrames(wire)][-1], 0)
        # Nothing more is owed: a writer looping on hasOutput() stops.
        server.endStream(1)
        self.assertFalse(server.hasOutput())
        self.assertEqual(server.dataToSend(), [])

    def test_openAnnouncesWindow(self):
        """
        Opening a stream sends RST|WND with the window in the size field.
        """
        client, server = engines(windowSize=4096)
        client.openStream()
        wire = b"".join(client.dataToSend())
        self.assertEqual(wire, bytes.fromhex("00000001" "001000" "0c"))
        self.assertEqual(server.receiveData(wire), [StreamOpened(1)])
        self.assertEqual(server.stream(1).credit, 4096)
        self.assertEqual(server.stream(1).recvWindow, 4096)

    def test_acceptOpen0x0D(self):
        """
        SYN|RST|WND on an unknown stream is an open too.
        """
        _, server = engines()
        events = server.receiveData(bytes.fromhex("00000001" "000400" "0d"))
        self.assertEqual(events, [StreamOpened(1)])
        self.assertEqual(server.stream(1).credit, 1024)

    def test_senderRespectsCredit(self):
        """
        A sender never sends more than its credit; the receiver returns
        credit only as the application consumes, and the rest then flows.
        """
        client, server = engines(windowSize=4096, maxFrameSize=1024, maxWindowSize=0)
        sid = client.openStream()
        client.sendData(sid, b"x" * 10000)
        events = pump(client, server)
        received = sum(len(e.data) for e in events if isinstance(e, DataReceived))
        self.assertEqual(received, 4096)
        self.assertEqual(client.sendBuffered(sid), 10000 - 4096)
        self.assertFalse(client.hasOutput())
        self.assertGreater(client.counters.creditStalls, 0)
        # Nothing consumed: no credit goes back.
        self.assertEqual(server.dataToSend(), [])
        server.consumed(sid, 4096)
        self.assertEqual(pump(server, client), [])
        events = pump(client, server)
        received = sum(len(e.data) for e in events if isinstance(e, DataReceived))
        self.assertEqual(received, 4096)

    def test_creditReturnedInHalfWindows(self):
        """
        Window updates go out once half the window has been consumed.
        """
        client, server = engines(windowSize=4096)
        sid = client.openStream()
        client.sendData(sid, b"x" * 3000)
        pump(client, server)
        server.consumed(sid, 1000)
        self.assertEqual(server.dataToSend(), [])
        server.consumed(sid, 1100)
        self.assertEqual(b"".join(server.dataToSend()), bytes.fromhex("00000001" "000834" "09"))

    def test_overrunIsFlowControlError(self):
        """
        A peer that sends more than its credit has the stream reset with
        code 2; other streams carry on.
        """
        client, server = engines(windowSize=1024)
        a = client.openStream()
        b = client.openStream()
        pump(client, server)
        wire = mio.encodeFrame(Frame(a, 2000, mio.DATA, b"y" * 2000))
        wire += mio.encodeFrame(Frame(b, 3, mio.DATA, b"abc"))
        events = server.receiveData(wire)
        self.assertIsInstance(events[0], StreamClosed)
        self.assertIsInstance(events[0].error, StreamResetError)
        self.assertEqual(events[0].error.code, ErrorCode.FLOW_CONTROL)
        self.assertEqual(events[1], DataReceived(b, b"abc"))
        self.assertEqual(b"".join(server.dataToSend()), bytes.fromhex("00000001" "000002" "04"))
        self.assertNotIn(a, server)
        self.assertIn(b, server)

    def test_refuseBeyondMaxStreams(self):
        """
        A peer opening more than maxStreams gets RST code 4 (refused), and
        the session keeps working; a local open beyond it is a
        StreamLimitError.
        """
        client, server = engines(maxStreams=2)
        ids = [client.openStream(), client.openStream()]
        self.assertRaises(StreamLimitError, client.openStream)
        pump(client, server)
        wire = mio.encodeFrame(Frame(5, 1024, mio.OPEN))
        self.assertEqual(server.receiveData(wire), [])
        self.assertEqual(b"".join(server.dataToSend()), bytes.fromhex("00000005" "000004" "04"))
        self.assertEqual(server.counters.streamsRefused, 1)
        client.sendData(ids[0], b"still fine")
        self.assertEqual(pump(client, server), [DataReceived(ids[0], b"still fine")])

    def test_refusedSeenByOpener(self):
        """
        The opener of a refused stream sees StreamRefusedError.
        """
        client, server = engines()
        server.stopAccepting()
        sid = client.openStream()
        pump(client, server)
        [event] = pump(server, client)
        self.assertEqual(event.streamId, sid)
        self.assertIsInstance(event.error, StreamRefusedError)
        self.assertEqual(event.error.code, ErrorCode.REFUSED)

    def test_halfCloseBothWays(self):
        """
        Each direction ends on its own with SYN|HFR; the stream is finished
        when both have.
        """
        client, server = engines()
        sid = client.openStream()
        client.sendData(sid, b"request")
        client.endStream(sid)
        self.assertRaises(StreamClosedError, client.sendData, sid, b"more")
        self.assertEqual(pump(client, server),
                         [StreamOpened(sid), DataReceived(sid, b"request"), StreamEnded(sid)])
        server.sendData(sid, b"response")
        self.assertEqual(pump(server, client), [DataReceived(sid, b"response")])
        server.endStream(sid)
        out = b"".join(server.dataToSend())
        self.assertEqual(out, bytes.fromhex("%08x" % sid + "000000" + "11"))
        self.assertEqual(server.takeEvents(), [StreamClosed(sid, None)])
        self.assertEqual(client.receiveData(out), [StreamEnded(sid), StreamClosed(sid, None)])
        self.assertEqual((len(client), len(server)), (0, 0))

    def test_resetNeverAnswered(self):
        """
        A reset for a stream already gone is ignored: no reset answers it.
        """
        client, server = engines()
        sid = client.openStream()
        pump(client, server)
        server.resetStream(sid, ErrorCode.CLOSED)
        [event] = pump(server, client)
        self.assertIsInstance(event.error, StreamResetError)
        self.assertEqual(event.error.code, ErrorCode.CLOSED)
        self.assertEqual(client.counters.resetsReceived, {ErrorCode.CLOSED: 1})
        self.assertEqual(server.receiveData(mio.encodeFrame(Frame(sid, 3, mio.RESET))), [])
        self.assertEqual(server.dataToSend(), [])

    def test_unknownStreamPayloadSkipped(self):
        """
        Data for a stream that is gone is skipped whole; framing holds.
        """
        client, server = engines()
        a = client.openStream()
        b = client.openStream()
        pump(client, server)
        server.resetStream(a)
        wire = mio.encodeFrame(Frame(a, 4, mio.DATA, b"\x00\x00\x00\x03"))
        wire += mio.encodeFrame(Frame(b, 2, mio.DATA, b"ok"))
        self.assertEqual(server.receiveData(wire), [DataReceived(b, b"ok")])

    def test_neverOpenedStreamIsConnectionError(self):
        """
        A frame naming a stream nobody has opened is a MalformedFrame: the
        session ends with FIN.
        """
        client, server = engines()
        events = server.receiveData(mio.encodeFrame(Frame(0x474554, 1, mio.RESET)))
        [terminated] = events
        self.assertIsInstance(terminated, ConnectionTerminated)
        self.assertIsInstance(terminated.error, MalformedFrame)
        self.assertIn("never opened", str(terminated.error))
        self.assertEqual(b"".join(server.dataToSend()), bytes.fromhex("00000000" "000001" "02"))
        self.assertTrue(server.closed)

    def test_oversizedFrameClosesSession(self):
        """
        A data frame over maxReceiveFrameSize ends the session with FIN code 2,
        after delivering what came before it.
        """
        client, server = engines(maxReceiveFrameSize=128)
        sid = client.openStream()
        wire = b"".join(client.dataToSend())
        wire += mio.encodeFrame(Frame(sid, 2, mio.DATA, b"ok"))
        wire += mio.encodeHeader(sid, 129, mio.DATA) + b"z" * 129
        events = server.receiveData(wire)
        self.assertEqual(events[:2], [StreamOpened(sid), DataReceived(sid, b"ok")])
        self.assertIsInstance(events[2].error, FrameTooLarge)
        self.assertEqual(b"".join(server.dataToSend()), bytes.fromhex("00000000" "000002" "02"))

    def test_windowOverflow(self):
        """
        Credit beyond 2**31-1 is a flow-control error for the session.
        """
        client, server = engines()
        sid = client.openStream()
        pump(client, server)
        wire = mio.encodeFrame(Frame(sid, (1 << 24) - 1, mio.WINDOW_UPDATE)) * 200
        [event] = server.receiveData(wire)
        self.assertIsInstance(event.error, FlowControlViolation)

    def test_sessionClose(self):
        """
        FIN on stream 0 ends the session with its code.
        """
        client, server = engines()
        client.closeSession(ErrorCode.EXHAUSTED)
        [event] = pump(client, server)
        self.assertEqual(event, ConnectionTerminated(ErrorCode.EXHAUSTED, None))
        self.assertRaises(SessionClosedError, server.openStream)

    def test_goPeerIdsSkipped(self):
        """
        A Go peer opens even ids from either side; this side never reuses an
        id the peer used.
        """
        server = MioEngine("server")
        server.receiveData(mio.encodeFrame(Frame(2, 1024, mio.OPEN)))
        server.receiveData(mio.encodeFrame(Frame(4, 1024, mio.OPEN)))
        self.assertEqual(server.openStream(), 6)

    def test_openOnOpenStreamIsError(self):
        """
        Opening an id that is in use is a protocol error.
        """
        _, server = engines()
        server.receiveData(mio.encodeFrame(Frame(1, 1024, mio.OPEN)))
        [event] = server.receiveData(mio.encodeFrame(Frame(1, 1024, mio.OPEN)))
        self.assertIsInstance(event.error, MalformedFrame)

    def test_controlAheadOfDataRoundRobin(self):
        """
        Control frames leave before queued data, and streams with data take
        turns one frame at a time.
        """
        client, server = engines(maxFrameSize=1024, windowSize=1 << 20)
        a = client.openStream()
        b = client.openStream()
        client.dataToSend()
        client.sendData(a, b"a" * 4096)
        client.sendData(b, b"b" * 4096)
        client.resetStream(client.openStream(), ErrorCode.CLOSED)
        frames = decodeFrames(b"".join(client.dataToSend()))
        self.assertEqual([f.flags for f in frames[:2]], [mio.OPEN, mio.RESET])
        self.assertEqual([f.streamId for f in frames[2:]], [a, b] * 4)

    def test_keepalive(self):
        """
        After keepaliveInterval without sending, a zero-size session window
        frame goes out; nothing is sent while traffic flows.
        """
        client = MioEngine("client", Settings(keepaliveInterval=10))
        self.assertEqual(client.nextDeadline(), 10)
        client.tick(5)
        self.assertEqual(client.dataToSend(now=5), [])
        client.tick(10)
        self.assertEqual(client.dataToSend(now=10), [bytes.fromhex("0000000000000008")])
        self.assertEqual(client.counters.keepalivesSent, 1)
        self.assertEqual(client.nextDeadline(), 20)

    def test_keepaliveIgnoredOnReceipt(self):
        """
        A received keepalive does nothing but count as traffic.
        """
        server = MioEngine("server", Settings(idleTimeout=30, keepaliveInterval=0))
        self.assertEqual(server.receiveData(bytes.fromhex("0000000000000008"), 20), [])
        self.assertEqual(server.nextDeadline(), 50)

    def test_idleTimeout(self):
        """
        Nothing received for idleTimeout ends the session.
        """
        server = MioEngine("server", Settings(idleTimeout=30, keepaliveInterval=0))
        self.assertEqual(server.tick(29), [])
        [event] = server.tick(30)
        self.assertIsInstance(event.error, SessionTimeoutError)
        self.assertTrue(server.closed)

    def test_unlimitedWriteByDefault(self):
        """
        By default sendData() queues whatever it is given.
        """
        client = MioEngine("client")
        sid = client.openStream()
        client.sendData(sid, b"x" * (20 * 1024 * 1024))
        self.assertEqual(client.sendBuffered(sid), 20 * 1024 * 1024)

    def test_boundedWrite(self):
        """
        With maxStreamSendBuffer set, sendData() past it raises
        StreamBufferOverflow (code EXHAUSTED), and nothing is queued.
        """
        client = MioEngine("client", Settings(maxStreamSendBuffer=1000))
        sid = client.openStream()
        client.sendData(sid, b"x" * 600)
        error = self.assertRaises(StreamBufferOverflow, client.sendData, sid, b"y" * 500)
        self.assertEqual(error.code, ErrorCode.EXHAUSTED)
        self.assertEqual(error.streamId, sid)
        self.assertEqual(client.sendBuffered(sid), 600)

    def test_garbageSession(self):
        """
        An HTTP request sent to a MIO server ends the session with a typed
        error, not silence.
        """
        server = MioEngine("server")
        [event] = server.receiveData(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertIsInstance(event.error, RemoteProtocolError)

    @given(st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=3000)), max_size=12),
           st.data())
    @settings(max_examples=60, deadline=None)
    def test_anyChunkingSameEvents(self, writes, data):
        """
        A client's byte stream, cut anywhere, gives the server the same
        events (data coalesced per stream).
        """
        client, _ = engines(maxFrameSize=512, windowSize=1 << 20)
        ids = [client.openStream() for _ in range(4)]
        for index, payload in writes:
            client.sendData(ids[index], payload)
        client.endStream(ids[0])
        wire = b"".join(client.dataToSend(1 << 30))
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=40))
        whole, split = chunkedEvents(lambda: MioEngine("server"), wire, cuts)
        self.assertEqual(split, whole)

    @given(st.binary(max_size=2048))
    @settings(max_examples=150, deadline=None)
    def test_engineGarbage(self, garbage):
        """
        Random bytes fed to an engine give events or a ConnectionTerminated
        with a RemoteProtocolError; nothing else escapes and the stream
        table stays within maxStreams.
        """
        server = MioEngine("server", Settings(maxStreams=16, maxReceiveFrameSize=1024))
        events = server.receiveData(garbage)
        for event in events:
            if isinstance(event, ConnectionTerminated) and event.error is not None:
                self.assertIsInstance(event.error, RemoteProtocolError)
        self.assertLessEqual(len(server), 16)
        server.dataToSend()


class FrameLimitTests(SynchronousTestCase):

    def test_sendAndReceiveLimitsSeparate(self):
        """
        maxFrameSize bounds what is sent, maxReceiveFrameSize what is
        accepted: at maxFrameSize=128 (for an unmodified Go peer) the Go
        library's 1024-byte frames are still accepted.
        """
        ours = MioEngine("server", Settings(maxFrameSize=128))
        ours.receiveData(mio.encodeFrame(Frame(2, 4096, mio.OPEN)))
        events = ours.receiveData(mio.encodeFrame(Frame(2, 1024, mio.DATA, b"g" * 1024)))
        self.assertEqual(events, [DataReceived(2, b"g" * 1024)])
        ours.sendData(2, b"m" * 300)
        sizes = [f.size for f in decodeFrames(b"".join(ours.dataToSend()))]
        self.assertEqual(sizes, [128, 128, 44])


class WindowTuningTests(SynchronousTestCase):
    """
    Receive-window auto-tuning: a stream's window doubles, up to
    maxWindowSize, only while its child consumes whole windows promptly.
    """

    def transfer(self, client, server, sid, windows, perWindow, prompt=True,
                 start=0.0):
        """
        Send C{windows} of the receiver's current window each, consuming
        every piece as it arrives, C{perWindow} seconds per window; return
        the receive window after each, and check the sender never overran.
        """
        now = start
        seen = []
        for _ in range(windows):
            window = server.receiveWindow(sid)
            client.sendData(sid, b"x" * window)
            got = 0
            while got < window:
                events = server.receiveData(b"".join(client.dataToSend(1 << 30, now)), now)
                data = [e for e in events if isinstance(e, DataReceived)]
                self.assertEqual([e for e in events if not isinstance(e, DataReceived)], [])
                for event in data:
                    now += perWindow * len(event.data) / window
                    server.consumed(sid, len(event.data), now, prompt)
                    got += len(event.data)
                self.assertEqual(client.receiveData(b"".join(server.dataToSend(1 << 30, now)), now), [])
                if not data:
                    self.fail("the sender stalled with %d of %d sent" % (got, window))
            self.assertEqual(client.sendBuffered(sid), 0)
            seen.append(server.receiveWindow(sid))
        return seen, now

    def test_windowGrowsWhileChildKeepsUp(self):
        """
        A child consuming each 4 KiB window within TUNE_TIME doubles it,
        up to maxWindowSize and no further; the sender uses the new credit
        (more than the initial window in flight) and the growth spends no
        empty-frame budget.
        """
        client, server = engines(windowSize=4096, maxFrameSize=1024,
                                 maxWindowSize=32768, maxEmptyFrames=1)
        sid = client.openStream()
        pump(client, server)
        seen, now = self.transfer(client, server, sid, 6, mio.TUNE_TIME / 10)
        self.assertEqual(seen, [8192, 16384, 32768, 32768, 32768, 32768])
        self.assertEqual(server.counters.windowGrowths, 3)
        self.assertEqual(server.grownCredit(), 32768 - 4096)
        # The sender now sends a whole grown window before stalling.
        client.sendData(sid, b"y" * 40000)
        sent = sum(len(e.data) for e in pump(client, server, now)
                   if isinstance(e, DataReceived))
        self.assertEqual(sent, 32768)
        self.assertEqual(client.stream(sid).credit, 0)
        self.assertFalse(client.closed)

    def test_slowChildNeverGrowsWindow(self):
        """
        A child that takes longer than TUNE_TIME to consume each window
        keeps the initial window.
        """
        client, server = engines(windowSize=4096, maxFrameSize=1024, maxWindowSize=32768)
        sid = client.openStream()
        pump(client, server)
        seen, _ = self.transfer(client, server, sid, 4, mio.TUNE_TIME * 2)
        self.assertEqual(seen, [4096] * 4)
        self.assertEqual(server.counters.windowGrowths, 0)

    def test_heldDataNeverGrowsWindow(self):
        """
        Bytes consumed late (held for a paused child) never count toward
        growth, however fast they are released; prompt consumption after
        them grows the window again.
        """
        client, server = engines(windowSize=4096, maxFrameSize=1024, maxWindowSize=32768)
        sid = client.openStream()
        pump(client, server)
        seen, now = self.transfer(client, server, sid, 4, 0.0001, prompt=False)
        self.assertEqual(seen, [4096] * 4)
        seen, _ = self.transfer(client, server, sid, 2, 0.0001, start=now)
        self.assertEqual(seen, [8192, 16384])

    def test_oneHeldPieceRestartsTheEpoch(self):
        """
        A window consumed promptly except for one late piece does not grow.
        """
        client, server = engines(windowSize=4096, maxFrameSize=1024, maxWindowSize=32768)
        sid = client.openStream()
        pump(client, server)
        client.sendData(sid, b"x" * 4096)
        events = [e for e in pump(client, server) if isinstance(e, DataReceived)]
        for n, event in enumerate(events):
            server.consumed(sid, len(event.data), 0.001 * n, n != 2)
        self.assertEqual(server.receiveWindow(sid), 4096)

    def test_grownCreditBoundedBySessionBuffer(self):
        """
        The credit granted beyond initial windows, all streams together,
        stays within sessionBufferSize; a stream that closes gives its share
        back.
        """
        client, server = engines(windowSize=16384, maxFrameSize=16384,
                                 maxWindowSize=1 << 20, sessionBufferSize=64 * 1024)
        sids = [client.openStream() for _ in range(3)]
        pump(client, server)
        for sid in sids:
            self.transfer(client, server, sid, 4, 0.001)
        self.assertEqual(server.grownCredit(), 64 * 1024)
        windows = [server.receiveWindow(sid) for sid in sids]
        self.assertEqual(sum(windows) - 3 * 16384, 64 * 1024)
        # The first grew 16 -> 32 -> 64 KiB, then by the 16 KiB left.
        self.assertEqual(windows, [81920, 16384, 16384])
        client.resetStream(sids[0])
        pump(client, server)
        self.assertEqual(server.grownCredit(), 0)
        self.transfer(client, server, sids[2], 3, 0.001)
        self.assertEqual(server.receiveWindow(sids[2]), 81920)
        self.assertEqual(server.grownCredit(), 64 * 1024)

    def test_largeGrantSplitInto24BitFrames(self):
        """
        A grant over 2^24-1 bytes (a whole 8 MiB window consumed at once,
        plus the same again of growth) goes out as several window updates,
        and the sender's credit adds up.
        """
        size = 8 << 20
        client, server = engines(windowSize=size, maxFrameSize=1 << 20,
                                 maxWindowSize=4 * size)
        sid = client.openStream()
        pump(client, server)
        client.sendData(sid, b"z" * size)
        pump(client, server)
        self.assertEqual(client.stream(sid).credit, 0)
        server.consumed(sid, size, 0.0)
        frames = decodeFrames(b"".join(server.dataToSend()))
        self.assertEqual([f.flags for f in frames], [mio.WINDOW_UPDATE] * 2)
        self.assertEqual(sum(f.size for f in frames), 2 * size)
        client.receiveData(b"".join(mio.encodeFrame(f) for f in frames))
        self.assertEqual(client.stream(sid).credit, 2 * size)

    def test_tinyGrowthCountsAsEmpty(self):
        """
        Updates taking the credit past the window by less than a quarter of
        it (credit for bytes never sent) spend the empty-frame budget; a
        doubling does not.
        """
        client, server = engines(windowSize=4096, maxEmptyFrames=5)
        sid = client.openStream()
        pump(client, server)
        client.receiveData(mio.encodeFrame(Frame(sid, 4096, mio.WINDOW_UPDATE)))
        self.assertEqual(client.stream(sid).credit, 8192)
        events = client.receiveData(mio.encodeFrame(Frame(sid, 1, mio.WINDOW_UPDATE)) * 10)
        self.assertIn("maxEmptyFrames", str(events[-1].error))

    def test_sharedConnectionShrinksGrownWindow(self):
        """
        While another stream receives data too, a grown window shrinks back
        to SHARED_INFLIGHT (credit withheld, no flow-control error) and does
        not grow; once the other stream has been quiet for SHARED_TIME, it
        grows again.
        """
        from muxframe.engine import SHARED_INFLIGHT, SHARED_TIME
        client, server = engines(windowSize=65536, maxFrameSize=65536,
                                 maxWindowSize=4 * SHARED_INFLIGHT)
        a = client.openStream()
        b = client.openStream()
        pump(client, server)
        seen, now = self.transfer(client, server, a, 7, 0.001)
        self.assertEqual(seen[-1], 4 * SHARED_INFLIGHT)
        client.sendData(b, b"ping")
        events = server.receiveData(b"".join(client.dataToSend(1 << 30, now)), now)
        self.assertEqual(events, [DataReceived(b, b"ping")])
        server.consumed(b, 4, now)
        seen, now = self.transfer(client, server, a, 3, 0.001, start=now)
        self.assertEqual(seen, [SHARED_INFLIGHT] * 3)
        self.assertEqual(server.grownCredit(), SHARED_INFLIGHT - 65536)
        seen, now = self.transfer(client, server, a, 2, 0.001, start=now + SHARED_TIME)
        self.assertEqual(seen, [2 * SHARED_INFLIGHT, 4 * SHARED_INFLIGHT])


def _servingEngine(remoteEnded=False, **kwargs):
    """
    A server engine after a client opened streams 1 and 3 and sent 64
    bytes on each (consumed; together past the first bytes the engine
    sniffs); C{remoteEnded} ends stream 1 from the client's side.
    """
    client, server = engines(**kwargs)
    for _ in range(2):
        streamId = client.openStream()
        client.sendData(streamId, b"h" * 64)
    if remoteEnded:
        client.endStream(1)
    pump(client, server)
    for streamId in (1, 3):
        server.consumed(streamId, 64)
    server.takeEvents()
    return server


_dataFrames = st.builds(
    lambda streamId, flags, payload: encodeFrame(Frame(streamId, 0, flags, payload)),
    st.sampled_from([1, 3, 5, 2]),
    st.sampled_from([mio.DATA, mio.DATA, mio.DATA_END, mio.WINDOW_UPDATE, mio.RESET]),
    st.one_of(st.binary(max_size=4), st.just(b"z" * 1100)))
_reads = st.builds(
    lambda frame, extra, cut: (frame + extra)[:-cut or None],
    _dataFrames, st.one_of(st.just(b""), st.just(b""), _dataFrames),
    st.one_of(st.just(0), st.just(0), st.integers(1, 12)))


class ReceiveWholeTests(SynchronousTestCase):
    """
    L{MioEngine.receiveWhole}, the small-message fast path, has the effects
    of L{MioEngine.receiveData} on every read it takes and takes nothing
    from the others.
    """

    def test_message(self):
        """
        A read of one whole data frame is taken: the data is returned and
        counted against the stream's window.
        """
        server = _servingEngine()
        window = server.stream(1).recvWindow
        read = encodeFrame(Frame(1, 0, mio.DATA, b"ping"))
        self.assertEqual(server.receiveWhole(read, 1.0), (1, b"ping"))
        self.assertEqual(server.stream(1).recvWindow, window - 4)
        self.assertEqual(server.counters.bytesReceived, 132)

    @given(_reads, st.booleans(), st.booleans())
    # Over the window; data after the end; a frame of the reserved id bit.
    @example(encodeFrame(Frame(1, 0, mio.DATA, b"z" * 1100)), False, True)
    @example(encodeFrame(Frame(1, 0, mio.DATA, b"ab")), True, False)
    @example(mio.encodeHeader(1, 2, mio.DATA).replace(b"\x00", b"\x80", 1) + b"ab",
             False, False)
    @settings(max_examples=300, deadline=None)
    def test_sameAsReceiveData(self, read, remoteEnded, small):
        """
        Whatever the read, receiveWhole either leaves the engine as it was
        (and returns C{None}) or leaves it exactly as receiveData does,
        returning the data receiveData reports.
        """
        # A window of 1,024 bytes: 64 + 1,100 bytes overrun it.
        kwargs = {"windowSize": 1024} if small else {}
        server = _servingEngine(remoteEnded, **kwargs)
        result, events = againstReceiveData(self, server, "receiveWhole", read, 1.0)
        if result is not None:
            self.assertEqual(events, [DataReceived(*result)])


# What may be queued or spent before a write: (step, stream id).
_sendSteps = st.lists(st.tuples(
    st.sampled_from(["queue", "credit", "spend", "end", "reset", "probes", "flush",
                     "close"]),
    st.sampled_from([1, 3])), max_size=4)


def _prepare(engine, steps):
    for step, streamId in steps:
        state = engine.stream(streamId)
        if step in ("queue", "spend", "credit", "end", "reset") and (
                state is None or step in ("queue", "spend") and (
                    state.endPending or state.localEnded)):
            continue
        if step == "queue":
            try:
                engine.sendData(streamId, b"q" * 10)
            except StreamBufferOverflow:
                pass
        elif step == "credit":
            engine.consumed(streamId, 600, 0.5)  # a window update, small windows
        elif step == "spend":
            try:
                for _ in range(10):
                    engine.sendData(streamId, b"s" * 90)
                    engine.dataToSend(1 << 20, 0.5)
            except StreamBufferOverflow:
                pass  # credit spent, data waiting: enough
        elif step == "end":
            engine.endStream(streamId)
        elif step == "reset":
            engine.resetStream(streamId)
        elif step == "probes":
            for _ in range(9):
                engine.sendProbe()
        elif step == "flush":
            engine.dataToSend(1 << 20, 0.5)  # its events (a stream finishing) wait
        else:
            engine.closeSession()


class SendWholeTests(SynchronousTestCase):
    """
    L{MioEngine.sendWhole}, the small-message path out, has the effects of
    L{MioEngine.sendData} followed by L{MioEngine.dataToSend} on every
    write it takes and takes nothing from the others.
    """

    def test_message(self):
        """
        A small write on a stream with credit is framed at once, after the
        queued control frames (here, credit for the peer), and counted
        against the stream's credit.
        """
        server = _servingEngine(windowSize=1024)
        server.consumed(1, 600)  # with the 64 bytes consumed before
        credit = server.stream(1).credit
        frame = server.sendWhole(1, b"pong", 1.0)
        self.assertEqual(decodeFrames(frame), [Frame(1, 664, mio.WINDOW_UPDATE),
                                              Frame(1, 4, mio.DATA, b"pong")])
        self.assertEqual(server.stream(1).credit, credit - 4)
        self.assertFalse(server.hasOutput())

    def test_queuedDataFirst(self):
        """
        A write behind data already queued (of any stream) is left to
        sendData: the round-robin order holds.
        """
        server = _servingEngine()
        server.sendData(3, b"first")
        self.assertIsNone(server.sendWhole(1, b"second", 1.0))

    @given(_sendSteps, st.sampled_from([1, 3, 5, 2]),
           st.sampled_from([0, 1, 64, 1000, 4096, 4097]), st.booleans(),
           st.sampled_from([0, 100]), st.sampled_from([None, 0.0, 100.0]))
    @example([], 1, 64, False, 0, None)
    @example([("credit", 1)], 1, 64, True, 0, None)
    @settings(max_examples=400, deadline=None)
    def test_sameAsSendData(self, steps, streamId, size, small, limit, armedAt):
        """
        Whatever was queued or spent before, sendWhole either leaves the
        engine as it was (and returns C{None}) or leaves it exactly as
        sendData and dataToSend do, returning the bytes dataToSend returns.
        """
        import copy
        kwargs = {"windowSize": 1024} if small else {}
        server = _servingEngine(maxStreamSendBuffer=limit, **kwargs)
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


def _crossingEngine(remoteEnded=False, window=None, flags=mio.DATA):
    """
    A server engine in the middle of a 4,096-byte data frame of stream 1
    (C{flags}), 1,000 bytes of its payload received.
    """
    kwargs = {"windowSize": window} if window else {}
    server = _servingEngine(remoteEnded, **kwargs)
    server.receiveData(mio.encodeHeader(1, 4096, flags) + b"c" * 1000, 1.0)
    server.takeEvents()
    return server


class ReceiveCrossingTests(SynchronousTestCase):
    """
    L{MioEngine.receiveCrossing}, the bulk fast path for a read across a
    frame boundary, has the effects of L{MioEngine.receiveData} on every
    read it takes (the two pieces joined) and takes nothing from the others.
    """

    def test_crossing(self):
        """
        The rest of one frame, the next frame's header and the start of
        its payload: the payload bytes, joined, without the header.
        """
        server = _crossingEngine()
        frames = server.counters.framesReceived
        read = b"a" * 3096 + mio.encodeHeader(1, 8192, mio.DATA) + b"b" * 5000
        self.assertEqual(server.receiveCrossing(read, 2.0), (1, b"a" * 3096 + b"b" * 5000))
        self.assertEqual(server.counters.framesReceived, frames + 1)
        # The rest of the second frame is a payload read again.
        self.assertEqual(server.receivePayload(b"b" * 3000, 2.0), 1)

    def test_headerOnlyThenCrossing(self):
        """
        A frame whose header came alone, then a read of its whole payload
        and the start of the next frame: taken (or left) with the effects
        receiveData has, the first frame counted once.
        """
        server = _servingEngine()
        server.receiveData(mio.encodeHeader(1, 4096, mio.DATA), 1.0)
        server.takeEvents()
        read = b"a" * 4096 + mio.encodeHeader(1, 8192, mio.DATA) + b"b" * 5000
        againstReceiveData(self, server, "receiveCrossing", read, 2.0)

    def test_notBetweenFrames(self):
        """
        A read that starts a frame (no payload begun) is not taken.
        """
        server = _servingEngine()
        read = mio.encodeHeader(1, 8192, mio.DATA) + b"b" * 5000
        self.assertIsNone(server.receiveCrossing(read, 2.0))

    @given(st.integers(0, 3200), st.sampled_from([1, 3, 1 | (1 << 31)]),
           st.sampled_from([mio.DATA, mio.DATA_END, mio.WINDOW_UPDATE, mio.RESET]),
           st.integers(0, 9000), st.integers(0, 200), st.booleans(), st.booleans(),
           st.sampled_from([mio.DATA, mio.DATA_END]))
    @example(3096, 1, mio.DATA, 5000, 100, False, False, mio.DATA)
    @example(3096, 1, mio.DATA, 5000, 5000, False, False, mio.DATA)
    @example(3096, 1, mio.DATA, 5000, 100, False, True, mio.DATA)
    @settings(max_examples=300, deadline=None)
    def test_sameAsReceiveData(self, tail, streamId, flags, size, head, remoteEnded,
                               small, current):
        """
        Whatever the read, receiveCrossing either leaves the engine as it
        was (and returns C{None}) or leaves it exactly as receiveData does,
        returning the data receiveData reports, joined.
        """
        server = _crossingEngine(remoteEnded, 2048 if small else None, current)
        read = (b"a" * tail + struct.pack(">II", streamId, (size << 8) | flags)
                + b"b" * min(head, size))
        result, events = againstReceiveData(self, server, "receiveCrossing", read, 2.0)
        if result is None:
            return
        self.assertEqual([type(event) for event in events], [DataReceived, DataReceived])
        self.assertEqual({event.streamId for event in events}, {result[0]})
        self.assertEqual(b"".join(event.data for event in events), result[1])
