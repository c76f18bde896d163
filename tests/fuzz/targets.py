"""
Fuzz targets: each takes one input (bytes) and raises C{AssertionError} (or
any unexpected exception) if muxframe misbehaves on it.  atheris drives
them (C{python3 -m tests.fuzz TARGET}, see docs/fuzzing.md) and
Hypothesis runs them in the test suite (tests/test_fuzz_targets.py).

  - C{mio}, C{bmp}: the framing's decoder and engine.  The input (after two
    seed bytes) is fed to one engine in one call and to another cut at
    pseudo-random points and handled a few frames at a time (the
    Multiplexer's slices); both must report the same events, end the same
    way, and only ever fail with the typed errors; what the decoder holds
    stays bounded.
  - C{xtmp}: the XTMP frame decoder, whole against cut: the same frames and
    the same typed error.
  - C{mux}: the Multiplexer adapter over a StringTransport and a Clock, as a
    program of operations read from the input: bytes from the peer, time
    passing, children pausing, resuming, writing, closing and aborting, the
    transport pausing.  Nothing escapes the adapter, nothing is logged as a
    failure, and every child is told of its end exactly once.
"""

import random

from muxframe import bmp, mio
from muxframe.errors import RemoteProtocolError
from muxframe.events import (
    ConnectionTerminated,
    DataReceived,
    StreamClosed,
    StreamEnded,
    StreamOpened,
)
from muxframe.settings import Settings

EVENTS = (ConnectionTerminated, DataReceived, StreamClosed, StreamEnded, StreamOpened)

# Budgets are per frame, so whole and cut inputs reach them at the same
# frame; the owed-control cap is checked per call, so it is off here.
SETTINGS = dict(maxControlBacklog=1 << 24, maxStreams=64, maxEmptyFrames=2000,
                maxResets=200, maxReceiveFrameSize=4096, maxStreamReceiveBuffer=1 << 16)


def split(data):
    """
    Return C{(rng, stream)}: a random generator seeded by the first two
    bytes, and the rest of the input.
    """
    seed = int.from_bytes(data[:2], "big")
    return random.Random(seed), data[2:]


def cuts(rng, stream):
    """
    Cut C{stream} at pseudo-random points (1 to 40 bytes apart, sometimes
    much further).
    """
    pieces, pos = [], 0
    while pos < len(stream):
        step = rng.randrange(1, 41) if rng.random() < 0.8 else rng.randrange(1, 4096)
        pieces.append(stream[pos:pos + step])
        pos += step
    return pieces


def normalised(events):
    """
    Events with consecutive data of one stream merged and the terminating
    error reduced to "the session ended" (which fault ends it first may
    differ when a flood budget and a malformed frame are both ahead).
    """
    merged = []
    for event in events:
        assert isinstance(event, EVENTS), event
        if type(event) is DataReceived:
            if merged and merged[-1][0] == "data" and merged[-1][1] == event.streamId:
                merged[-1] = ("data", event.streamId, merged[-1][2] + event.data)
                continue
            merged.append(("data", event.streamId, event.data))
        elif type(event) is ConnectionTerminated:
            if event.error is not None:
                assert isinstance(event.error, RemoteProtocolError), event.error
            merged.append(("terminated",))
        elif type(event) is StreamClosed:
            merged.append(("closed", event.streamId, type(event.error).__name__))
        else:
            merged.append((type(event).__name__, event.streamId))
    return merged


def _engineTarget(engineClass, maxHeld, data):
    rng, stream = split(data)
    role = "server" if rng.random() < 0.7 else "client"
    whole = engineClass(role, Settings(**SETTINGS))
    expected = normalised(whole.receiveData(stream))
    whole.dataToSend()
    cut = engineClass(role, Settings(**SETTINGS))
    events = []
    for piece in cuts(rng, stream):
        events.extend(cut.receiveData(piece, 0.0, rng.randrange(1, 9)))
        while cut.pendingInput() and not cut.closed:
            events.extend(cut.receiveData(b"", 0.0, rng.randrange(1, 9)))
        assert cut._decoder.buffered() <= maxHeld, cut._decoder.buffered()
        if rng.random() < 0.3:
            cut.dataToSend()
    got = normalised(events)
    assert got == expected, (got, expected)
    assert whole.closed == cut.closed
    for state in (whole, cut):
        state.tick(1e9)
        state.dataToSend()


def mioTarget(data):
    """
    The MIO decoder and engine (see the module docstring).
    """
    _engineTarget(mio.MioEngine, mio.HEADER_SIZE, data)


def bmpTarget(data):
    """
    The BMP decoder and engine (see the module docstring).
    """
    _engineTarget(bmp.BmpEngine, bmp.MAX_HEADER + bmp.MAX_CONTROL_PAYLOAD, data)


def _frameFields(frame):
    return (frame.type, frame.flags, frame.sessionId, frame.sequence,
            bytes(frame.payload))


def xtmpTarget(data):
    """
    The XTMP frame decoder, whole against cut.
    """
    from muxframe.xtmp.codec import Decoder
    from muxframe.xtmp.errors import XTMPRemoteError
    rng, stream = split(data)
    results = []
    for pieces in ([stream], cuts(rng, stream)):
        decoder = Decoder(maxPayload=2048)
        frames, error = [], None
        try:
            for piece in pieces:
                frames.extend(_frameFields(f) for f in decoder.feed(piece))
                decoder.raiseIfFailed()
                assert decoder.buffered <= 32 + 64 + 2048 + len(piece), decoder.buffered
        except XTMPRemoteError as e:
            error = type(e)
        results.append((frames, error))
    assert results[0] == results[1], results


# -- the Multiplexer adapter ------------------------------------------------

class _Child:
    """
    A child protocol recording its life; misuse by the adapter is recorded
    in C{faults}.
    """

    def __init__(self, faults):
        self.faults = faults
        self.transport = None
        self.lost = 0
        self.made = 0

    def makeConnection(self, transport):
        self.made += 1
        self.transport = transport

    def dataReceived(self, data):
        if self.lost:
            self.faults.append("data after connectionLost")
        if type(data) is not bytes:
            self.faults.append("data that is not bytes: %r" % (type(data),))

    def connectionLost(self, reason):
        self.lost += 1
        if self.lost > 1:
            self.faults.append("connectionLost twice")


def _frame(framing, kind, extra):
    """
    A well-formed frame of C{framing}, its kind and stream chosen by
    C{kind} and C{extra}: so programs reach deep states, not only errors.
    """
    payload = bytes(extra % 5) * (extra % 97)
    if framing == "mio":
        streamId = 1 + 2 * (extra % 6)
        return [
            mio.encodeHeader(streamId, 1024 + extra * 64, mio.OPEN),
            mio.encodeHeader(streamId, len(payload), mio.DATA) + payload,
            mio.encodeHeader(streamId, len(payload), mio.DATA_END) + payload,
            mio.encodeHeader(streamId, extra * 256, mio.WINDOW_UPDATE),
            mio.encodeHeader(streamId, extra % 7, mio.RESET),
            mio.encodeHeader(0, 0, mio.SESSION_WINDOW),
            mio.encodeHeader(0, extra % 7, mio.FIN),
        ][kind % 7]
    name = b"io_%d" % (extra % 6,)
    frame = [
        bmp.Frame(name, bmp.CREATE, b"%d" % (kind // 7,), payload=payload),
        bmp.Frame(name, bmp.DATA, b"%d" % (kind // 7,), payload=payload),
        bmp.Frame(name, bmp.END_STREAM, payload=b"\x04"),
        bmp.Frame(name, bmp.CLOSE_STREAM, payload=b"\x04"),
        bmp.Frame(name, bmp.ACK, payload=b"%d" % (kind // 7,)),
        bmp.Frame(b"srv_%d" % (extra % 3,), bmp.ACK, payload=b"%d" % (kind // 7,)),
        bmp.Frame(name, bmp.DATA, b"", payload=payload),
    ][kind % 7]
    return bmp.encodeFrame(frame)


def muxTarget(data):
    """
    The Multiplexer adapter over a StringTransport and a Clock, driven by
    a program of operations (see the module docstring).
    """
    from twisted.internet.protocol import Factory
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.logger import LogLevel, globalLogPublisher

    from muxframe import MultiplexerFactory

    rng, program = split(data)
    framing = "mio" if rng.random() < 0.5 else "bmp"
    faults, children, failures = [], [], []

    def build():
        child = _Child(faults)
        children.append(child)
        return child

    def observer(event):
        if event.get("log_level") == LogLevel.critical:
            failures.append(event)

    clock = Clock()
    factory = MultiplexerFactory(
        Factory.forProtocol(build), framing=framing, role="server", reactor=clock,
        **dict(SETTINGS, sessionBufferSize=65536, maxStreamSendBuffer=1 << 20))
    mux = factory.buildProtocol(None)
    transport = StringTransport()
    globalLogPublisher.addObserver(observer)
    try:
        mux.makeConnection(transport)
        pos = 0
        while pos < len(program) and not mux.disconnected:
            op = program[pos] % 10
            arg = program[pos + 1] if pos + 1 < len(program) else 0
            pos += 2
            live = [c for c in children if not c.lost and c.transport is not None]
            child = live[arg % len(live)] if live else None
            if op == 0:
                size = 1 + arg * 4
                mux.dataReceived(program[pos:pos + size])
                pos += size
            elif op <= 2:
                extra = program[pos] if pos < len(program) else 0
                pos += 1
                mux.dataReceived(_frame(framing, arg, extra))
            elif op == 3:
                clock.advance(arg / 8.0)
            elif op == 4 and child is not None:
                child.transport.pauseProducing()
            elif op == 5 and child is not None:
                child.transport.resumeProducing()
            elif op == 6 and child is not None:
                child.transport.write(bytes(arg % 7) * (arg + 1))
            elif op == 7 and child is not None:
                [child.transport.loseConnection, child.transport.abortConnection,
                 child.transport.loseWriteConnection][arg % 3]()
            elif op == 8:
                if arg % 2:
                    mux.pauseProducing()
                else:
                    mux.resumeProducing()
            elif op == 9:
                if arg % 3 == 0:
                    transport.clear()
                else:
                    mux.openStream(Factory.forProtocol(build)).addErrback(lambda f: None)
            assert mux.heldBytes() >= 0
        mux.connectionLost(None)
        clock.advance(1000)
        for child in children:
            if child.made and child.lost != 1:
                faults.append("a child was told of its end %d times" % (child.lost,))
    finally:
        globalLogPublisher.removeObserver(observer)
    assert not faults, faults
    assert not failures, [event.get("log_format") for event in failures]


TARGETS = {"mio": mioTarget, "bmp": bmpTarget, "xtmp": xtmpTarget, "mux": muxTarget}
