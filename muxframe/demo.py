"""
The README's first command: start a muxframe server and client on loopback,
open many streams over one connection in each framing, move and verify data,
and print what happened.

Run: C{python3 -m muxframe.demo}
"""

import hashlib
import sys
import time

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from muxframe import MultiplexerFactory


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Checker(protocol.Protocol):
    def __init__(self, payload):
        self.payload = payload
        self.received = hashlib.sha256()
        self.count = 0
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.payload)
        self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.received.update(data)
        self.count += len(data)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.received.digest() == hashlib.sha256(self.payload).digest()
                           and self.count == len(self.payload))


@defer.inlineCallbacks
def runFraming(reactor, framing, streams=200, size=64 * 1024):
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        MultiplexerFactory(protocol.Factory.forProtocol(Echo), framing=framing, role="server"))
    try:
        mux = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            MultiplexerFactory(None, framing=framing, role="client"))
        start = time.perf_counter()
        checks = []
        for i in range(streams):
            payload = bytes([i % 251]) * (size - i)
            child = yield mux.openStream(protocol.Factory.forProtocol(lambda p=payload: Checker(p)))
            checks.append(child.done)
        results = yield defer.gatherResults(checks)
        elapsed = time.perf_counter() - start
        counters = mux.counters
        ok = all(results)
        print("%-4s %4d streams over 1 connection: %d bytes sent, %d echoed back, "
              "%d frames, %.3f s, %s" % (
                  framing.upper(), streams, counters.bytesSent, counters.bytesReceived,
                  counters.framesSent + counters.framesReceived, elapsed,
                  "all verified (sha256)" if ok else "MISMATCH"))
        mux.transport.loseConnection()
        return ok
    finally:
        yield port.stopListening()


@defer.inlineCallbacks
def main(reactor):
    ok = True
    for framing in ("mio", "bmp"):
        ok = (yield runFraming(reactor, framing)) and ok
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main)
