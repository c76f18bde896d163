"""
The adapter's own CPU per GiB of one bulk stream, without sockets: a
L{muxframe.Multiplexer} on a null transport (writes counted, not kept) and
a L{Clock}.

  - receive: pre-built frames of one stream (256 KiB writes framed at
    C{--frame} bytes) fed in 64 KiB reads, as Twisted's TCP transport reads
    them, to a child that counts them;
  - send: a child writing 256 KiB chunks, the peer's credit (MIO) or
    acknowledgements (BMP) granted after each write;
  - round trip: two multiplexers joined in memory, a 64-byte message
    echoed back and forth (CPU microseconds per round trip, both sides).

  python3 -m bench.adapter                        # both framings, 64 and 256 KiB frames
  python3 -m bench.adapter --framing mio --frame 262144 --size 1073741824

Figures are CPU seconds (time.process_time) per GiB of payload; on a shared
machine compare figures of one invocation.  No test asserts them.
"""

import argparse
import json
import sys
import time
import warnings

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock

from muxframe import MultiplexerFactory, bmp, mio

GiB = 1 << 30
READ = 65536
WRITE = 256 * 1024


class _Counter(Protocol):
    received = 0

    def dataReceived(self, data):
        self.received += len(data)


class _NullTransport:
    """
    Just enough of a TCP transport: counts what is written.
    """

    disconnecting = False
    written = 0

    def write(self, data):
        self.written += len(data)

    def writeSequence(self, seq):
        for data in seq:
            self.written += len(data)

    def registerProducer(self, producer, streaming):
        pass

    def unregisterProducer(self):
        pass

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def loseConnection(self):
        pass

    def getPeer(self):
        return None

    def getHost(self):
        return None


def _connect(factory):
    mux = factory.buildProtocol(None)
    mux.makeConnection(_NullTransport())
    return mux


def _frames(framing, frame, writes):
    chunk = b"\xa5" * WRITE
    out = []
    for n in range(writes):
        for offset in range(0, WRITE, frame):
            piece = chunk[offset:offset + frame]
            if framing == "mio":
                out.append(mio.encodeHeader(1, len(piece), mio.DATA) + piece)
            else:
                sid = b"%d" % (n * (WRITE // frame) + offset // frame)
                out.append(bmp.encodeHeader(b"io_0", bmp.DATA, sid, len(piece)) + piece)
    return b"".join(out)


def receive(framing, frame, size):
    """
    Return CPU seconds per GiB the receiving side spends.
    """
    children = []
    factory = MultiplexerFactory(
        Factory.forProtocol(lambda: children.append(_Counter()) or children[-1]),
        framing=framing, role="server", reactor=Clock())
    mux = _connect(factory)
    if framing == "mio":
        mux.dataReceived(mio.encodeHeader(1, (1 << 24) - 1, mio.OPEN))
    else:
        mux.dataReceived(bmp.encodeHeader(b"io_0", bmp.CREATE, b"99999999", 1) + b"x")
    wire = _frames(framing, frame, 64)
    reads = [wire[i:i + READ] for i in range(0, len(wire), READ)]
    rounds = max(1, size // len(wire))
    started = time.process_time()
    for _ in range(rounds):
        for data in reads:
            mux.dataReceived(data)
    elapsed = time.process_time() - started
    if mux.disconnected or not children:
        raise RuntimeError("the receiving multiplexer failed")
    return elapsed * GiB / (rounds * len(wire))


def send(framing, frame, size):
    """
    Return CPU seconds per GiB the sending side spends.
    """
    factory = MultiplexerFactory(None, framing=framing, role="client", reactor=Clock(),
                                 maxFrameSize=frame)
    mux = _connect(factory)
    children = []
    mux.openStream(Factory.forProtocol(Protocol)).addCallback(children.append)
    transport = children[0].transport
    engine = mux.engine
    streamId = transport.streamId
    chunk = b"\xa5" * WRITE
    sent = 0
    started = time.process_time()
    while sent < size:
        transport.write(chunk)
        sent += WRITE
        # The peer's answer, as the engine would take it from the wire.
        state = engine.stream(streamId)
        if framing == "mio":
            engine.receiveData(mio.encodeHeader(streamId, WRITE, mio.WINDOW_UPDATE))
        else:
            acks = [bmp.encodeFrame(bmp.Frame(streamId, bmp.ACK, b"", len(sid), sid))
                    for sid in list(state.inflight or ())]
            engine.receiveData(b"".join(acks))
        mux._flush()
    elapsed = time.process_time() - started
    return elapsed * GiB / sent


class _Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class _StringTransport(_NullTransport):
    def __init__(self):
        self.chunks = []

    def write(self, data):
        self.chunks.append(data)

    def writeSequence(self, seq):
        self.chunks.extend(seq)

    def take(self):
        data = b"".join(self.chunks)
        self.chunks = []
        return data


def roundTrip(framing, count=20000, repeats=5):
    """
    Return the least CPU microseconds per 64-byte round trip (both sides)
    over C{repeats} batches of C{count}.
    """
    clock = Clock()
    server = MultiplexerFactory(Factory.forProtocol(_Echo), framing=framing,
                                role="server", reactor=clock).buildProtocol(None)
    client = MultiplexerFactory(None, framing=framing, role="client",
                                reactor=clock).buildProtocol(None)
    toClient, toServer = _StringTransport(), _StringTransport()
    server.makeConnection(toClient)
    client.makeConnection(toServer)
    children = []
    client.openStream(Factory.forProtocol(_Counter)).addCallback(children.append)
    write = children[0].transport.write
    message = b"\x42" * 64

    def once():
        write(message)
        server.dataReceived(toServer.take())
        client.dataReceived(toClient.take())
    for _ in range(count // 10):
        once()
    best = None
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(count):
            once()
        elapsed = (time.process_time() - started) / count * 1e6
        best = elapsed if best is None else min(best, elapsed)
    if children[0].received != 64 * (count // 10 + count * repeats):
        raise RuntimeError("the echo lost bytes")
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m bench.adapter",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--framing", choices=["mio", "bmp", "both"], default="both")
    parser.add_argument("--frame", type=int, action="append", default=None)
    parser.add_argument("--size", type=int, default=GiB // 2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    framings = ["mio", "bmp"] if args.framing == "both" else [args.framing]
    results = []
    for framing in framings:
        for frame in args.frame or [64 * 1024, 256 * 1024]:
            row = {"framing": framing, "frame": frame,
                   "receiveCpuPerGiB": receive(framing, frame, args.size),
                   "sendCpuPerGiB": send(framing, frame, args.size)}
            results.append(row)
            print("%s frame %3d KiB: receive %.3f, send %.3f CPU s/GiB" % (
                framing, frame // 1024, row["receiveCpuPerGiB"], row["sendCpuPerGiB"]))
            sys.stdout.flush()
        row = {"framing": framing, "roundTripCpuMicroseconds": roundTrip(framing)}
        results.append(row)
        print("%s 64-byte round trip: %.1f CPU µs (both sides)" % (
            framing, row["roundTripCpuMicroseconds"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
