"""
The benchmark scenarios, one module each.  Every module has C{SERVER_ROLE}
(the server's child-protocol role) and C{async run(reactor, ctx)}, one
measured run from the client process, returning a dict of figures.
"""

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from bench.common import setNoDelay
from muxframe import MultiplexerFactory
from muxframe.multiplexer import Multiplexer

NAMES = ["bulk", "many", "latency", "loaded", "churn", "memory", "scale", "window"]


class Context:
    """
    What one client process was asked to do.
    """

    def __init__(self, kind, framing, port, settings, params, tls=None):
        self.kind = kind
        self.framing = framing
        self.port = port
        self.settings = settings
        self.params = params
        self.tls = tls


class BenchMultiplexer(Multiplexer):
    def connectionMade(self):
        Multiplexer.connectionMade(self)
        setNoDelay(self.transport)


class ClientMultiplexerFactory(MultiplexerFactory):
    protocol = BenchMultiplexer


def endpoint(reactor, ctx, protocols=None):
    if ctx.tls:
        from bench.tlsutil import clientOptions
        return SSL4ClientEndpoint(reactor, "127.0.0.1", ctx.port,
                                  clientOptions(ctx.tls, protocols))
    return TCP4ClientEndpoint(reactor, "127.0.0.1", ctx.port)


async def connectMux(reactor, ctx):
    """
    Connect a client L{Multiplexer} to the server.
    """
    factory = ClientMultiplexerFactory(None, framing=ctx.framing, role="client",
                                       **ctx.settings)
    return await endpoint(reactor, ctx).connect(factory)


async def connectRaw(reactor, ctx, protocol):
    """
    Connect C{protocol} over plain TCP (the raw Twisted baseline).
    """
    return await endpoint(reactor, ctx).connect(Factory.forProtocol(lambda: protocol))


async def closeMux(mux):
    """
    Close a client multiplexer's connection and wait until it is gone.
    """
    if mux.disconnected:
        return
    lost = mux.whenLost()
    mux.transport.abortConnection()
    await lost


def sleep(reactor, seconds):
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def withTimeout(reactor, d, seconds, onTimeout):
    """
    Fire C{d} with C{onTimeout()} after C{seconds} if it has not fired.
    """
    def expire():
        if not d.called:
            d.callback(onTimeout())
    call = reactor.callLater(seconds, expire)

    def cancel(result):
        if call.active():
            call.cancel()
        return result
    d.addBoth(cancel)
    return d
