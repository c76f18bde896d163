"""
memory (idle memory): RSS growth per idle open stream, each side.  The
client opens a control stream, both sides read VmRSS, the client opens
C{streams} (10,000) streams with a trivial child protocol, and both sides
read VmRSS again (after gc.collect()).  The streams are opened in batches
of C{batch} (500), each followed by a control round trip.  A BMP stream exists at the server
only once it carries a frame, so under BMP each idle child writes one
byte; under MIO the open frame alone creates it and nothing is written.
"""

import gc
import json

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from bench.common import rss
from bench.scenarios import closeMux, connectMux, sleep

SERVER_ROLE = "memory"


class ControlClient(Protocol):
    def connectionMade(self):
        self.buffer = b""
        self.waiting = None

    def ask(self):
        self.waiting = Deferred()
        self.transport.write(b"rss\n")
        return self.waiting

    def dataReceived(self, data):
        self.buffer += data
        if b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            d, self.waiting = self.waiting, None
            d.callback(json.loads(line))


class IdleChild(Protocol):
    """
    The trivial child protocol (BMP: writes one byte so the stream exists
    at the server).
    """


class BmpIdleChild(Protocol):
    def connectionMade(self):
        self.transport.write(b"x")


async def run(reactor, ctx):
    count = ctx.params["streams"]
    mux = await connectMux(reactor, ctx)
    control = await mux.openStream(Factory.forProtocol(ControlClient))
    serverBefore = await control.ask()
    gc.collect()
    clientBefore = rss()
    factory = Factory.forProtocol(BmpIdleChild if ctx.framing == "bmp" else IdleChild)
    children = []
    # Open in batches with a control round trip between them, as streams
    # arrive over time in a real server: what is measured is the steady
    # cost of an idle stream, not the high-water mark of 10,000 opens'
    # frames queued in one reactor turn.
    batch = ctx.params.get("batch", 500)
    while len(children) < count:
        for _ in range(min(batch, count - len(children))):
            children.append(await mux.openStream(factory))
        serverAfter = await control.ask()
    for _ in range(200):
        if serverAfter["streams"] >= count + 1:
            break
        await sleep(reactor, 0.05)
        serverAfter = await control.ask()
    gc.collect()
    clientAfter = rss()
    clientStreams = mux.streamCount()
    await closeMux(mux)
    if serverAfter["streams"] < count + 1 or clientStreams < count + 1:
        raise RuntimeError("only %d/%d streams open at the server, %d at the client"
                           % (serverAfter["streams"] - 1, count, clientStreams - 1))
    del children
    return {
        "clientBytesPerStream": (clientAfter - clientBefore) / count,
        "serverBytesPerStream": (serverAfter["rss"] - serverBefore["rss"]) / count,
        "clientRssBefore": clientBefore,
        "clientRssAfter": clientAfter,
        "serverRssBefore": serverBefore["rss"],
        "serverRssAfter": serverAfter["rss"],
        "streams": count,
    }
