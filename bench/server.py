"""
The benchmark's server process: listens on 127.0.0.1 on a free port, reports
the port as a JSON line on stdout, serves until killed (or its parent goes
away, or C{--lifetime} seconds pass).

  python3 -m bench.server --kind mux --framing mio --role echo --settings '{"maxStreams": 20000}'
  python3 -m bench.server --kind raw --role sink
  python3 -m bench.server --kind h2 --tls DIR
"""

import argparse
import json
import os

from twisted.internet import reactor, task
from twisted.internet.protocol import Factory

from bench.common import RoleFactory, emit, setNoDelay
from muxframe import MultiplexerFactory
from muxframe.multiplexer import Multiplexer


class BenchMultiplexer(Multiplexer):
    """
    A L{Multiplexer} with TCP_NODELAY on its connection, as every benchmark
    connection has.
    """

    def connectionMade(self):
        Multiplexer.connectionMade(self)
        setNoDelay(self.transport)


class ServerMultiplexerFactory(MultiplexerFactory):
    protocol = BenchMultiplexer

    def buildProtocol(self, addr):
        mux = MultiplexerFactory.buildProtocol(self, addr)
        self.childFactory.mux = mux
        self.childFactory.muxes[addr] = mux
        return mux


class RawFactory(Factory):
    def __init__(self, role):
        self.roles = RoleFactory(role)

    def buildProtocol(self, addr):
        return self.roles.buildProtocol(addr)


def h2Site():
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class EchoResource(Resource):
        isLeaf = True

        def render_POST(self, request):
            body = request.content.read()
            request.setHeader(b"content-type", b"application/octet-stream")
            return body

    return Site(EchoResource())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.server")
    parser.add_argument("--kind", choices=["mux", "raw", "h2"], required=True)
    parser.add_argument("--framing", default="mio")
    parser.add_argument("--role", default="echo")
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--tls", default=None, help="certificate directory")
    parser.add_argument("--lifetime", type=float, default=900.0)
    parser.add_argument("--profile", default=None,
                        help="write a cProfile of the server to this path on exit")
    args = parser.parse_args(argv)

    if args.kind == "mux":
        factory = ServerMultiplexerFactory(
            RoleFactory(args.role), framing=args.framing, role="server",
            **json.loads(args.settings))
    elif args.kind == "raw":
        factory = RawFactory(args.role)
    else:
        factory = h2Site()

    if args.tls:
        from bench.tlsutil import serverOptions
        protocols = [b"h2", b"http/1.1"] if args.kind == "h2" else None
        port = reactor.listenSSL(0, factory, serverOptions(args.tls, protocols),
                                 interface="127.0.0.1")
    else:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    parent = os.getppid()

    def watch():
        if os.getppid() != parent:
            reactor.stop()

    task.LoopingCall(watch).start(1.0, now=False)
    reactor.callLater(args.lifetime, reactor.stop)
    emit("listening", port=port.getHost().port, pid=os.getpid())
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            reactor.run()
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
    else:
        reactor.run()


if __name__ == "__main__":
    main()
