"""
The server's CPU cost per fan-out delivery, in one process: a real
L{XTMPServer} on a fake clock with N subscribed sessions (real XTMP
clients, handshakes done over iosim transports), whose transports then
drop what is written.  No sockets, so it measures the server's own Python
and cryptography per delivery, not Twisted's write path.

  python -m bench.xtmpserver.fanoutcost N M [--per-turn K] [--repeat R]
      [--once]

Each round publishes M messages of 64 bytes on the subscribed subject, K
per reactor turn (default: all M in one turn, as the fanout scenario's
C{publish} command does), and ends the last turn; the best of R rounds is
printed as server CPU (C{time.process_time}) per delivery.  C{--once}
runs one round without timing it, for C{valgrind --tool=callgrind}: the
difference of two runs' instruction counts (M1 and M2 publishes) over
C{N * (M2 - M1)} is the instructions per delivery.
"""

import argparse
import time

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, connect

from bench.xtmpserver.common import CLIENT, SERVER
from muxframe.server.config import ServerConfig
from muxframe.server.factory import XTMPServer
from muxframe.xtmp import XTMPClientFactory

SUBJECT = "fan.out"


def build(n):
    """
    An L{XTMPServer} on a L{Clock} with C{n} sessions subscribed to
    L{SUBJECT}; return C{(clock, server, written)}, C{written} a one-item
    list counting the bytes the sessions' transports were given.
    """
    clock = Clock()
    data = {"xtmp_protocol": {"max_queued_bytes": 64 << 20},
            "broker": {"max_pending": 32 << 20, "write_deadline": 60},
            "limits": {"messages_per_second": 0, "bytes_per_second": 0},
            "server": {"max_connections": n + 100,
                       "max_connections_per_client": 0, "handshake_rate": 0,
                       "max_handshakes": n + 100}}
    server = XTMPServer(SERVER, ServerConfig.fromMapping(data),
                        reactor=clock, keys=[("bench", CLIENT.public)])
    written = [0]

    def write(data):
        written[0] += len(data)

    for i in range(n):
        address = IPv4Address("TCP", "10.%d.%d.%d" % (
            i >> 16, (i >> 8) & 255, i & 255), 40000)
        client = XTMPClientFactory(serverKey=SERVER.public, identity=CLIENT,
                                   reactor=clock).buildProtocol(None)
        side = server.buildProtocol(address)
        pump = connect(side, FakeTransport(side, True, peerAddress=address),
                       client, FakeTransport(client, False), clock=clock)
        client.subscribe(SUBJECT, lambda message: None)
        pump.flush()
        pump.flush()
        side.transport.write = write
    if len(server.registry) != n:
        raise RuntimeError("%d of %d sessions" % (len(server.registry), n))
    return clock, server, written


def publishRound(clock, server, m, perTurn):
    """
    Publish C{m} messages, C{perTurn} per reactor turn; return how many
    deliveries were queued.
    """
    payload = b"p" * 64
    queued = 0
    for start in range(0, m, perTurn):
        for _ in range(min(perTurn, m - start)):
            queued += server.publish(SUBJECT, payload)
        clock.advance(0)
    return queued


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="subscribed sessions")
    parser.add_argument("m", type=int, help="publishes per round")
    parser.add_argument("--per-turn", type=int, default=0,
                        help="publishes per reactor turn (default: all)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args(argv)
    perTurn = args.per_turn or args.m
    clock, server, written = build(args.n)
    publishRound(clock, server, 1, 1)
    if args.once:
        print("queued %d" % (publishRound(clock, server, args.m, perTurn),))
        return
    best = None
    for _ in range(args.repeat):
        start = time.process_time()
        queued = publishRound(clock, server, args.m, perTurn)
        spent = time.process_time() - start
        best = spent if best is None else min(best, spent)
    if queued != args.n * args.m:
        raise RuntimeError("%d of %d queued" % (queued, args.n * args.m))
    print("%d sessions, %d publishes (%d per turn): %.3f us per delivery "
          "(best of %d)" % (args.n, args.m, perTurn, best / queued * 1e6,
                            args.repeat))


if __name__ == "__main__":
    main()
