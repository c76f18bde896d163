"""
A cap on how many connections a listening port accepts per reactor turn.

Twisted's TCP port (L{twisted.internet.tcp.Port}, which C{tcp:}, C{ssl:}
and C{unix:} listeners are) accepts up to its C{numberAccepts}
connections each time its socket is readable, and adds 20 to that number
after every turn that reached it.  Under a connection flood the number
only grows: one turn accepts hundreds of connections, builds a protocol
for each (and refuses or starts a handshake for each), and every
established connection waits for the whole batch.  Measured under a
ClientHello flood on the XTMP server: reactor turns of 20-70 ms, and an
established session's p99 forty times its unloaded value.

Capped, a turn accepts at most C{limit} connections; the rest wait in the
kernel's listen backlog for the next turn, after the established
connections' events of this one.  New connections are still accepted
thousands of times a second (a turn takes well under a millisecond), far
above what a server can hand-shake.

Rules:
  - only ports with C{numberAccepts} (Twisted's stream ports) are capped;
    others (a multiplexed virtual port, a WebSocket wrapper without one)
    are returned unchanged;
  - Twisted's own adaptation still runs below the cap (after a quiet turn
    it accepts as many as it just did, at least one);
  - C{limit} 0 leaves the port as Twisted made it.
"""

from zope.interface import implementer

from twisted.internet.interfaces import IStreamServerEndpoint

from muxframe.earlyrefusal import refuseEarly

#: Connections accepted per reactor turn at most, by default.
DEFAULT_ACCEPTS_PER_TURN = 4


def capAccepts(port, limit=DEFAULT_ACCEPTS_PER_TURN):
    """
    Make C{port} accept at most C{limit} connections per reactor turn.

    @param port: an L{IListeningPort}, as an endpoint's C{listen} gives.
    @param limit: connections per turn (0: no cap).
    @return: C{port}.
    """
    if limit <= 0 or not hasattr(port, "numberAccepts"):
        return port
    accept = port.doRead

    def doRead():
        # Twisted sets numberAccepts after each batch; clamp it before
        # the next one.
        if port.numberAccepts > limit:
            port.numberAccepts = limit
        return accept()

    port.doRead = doRead
    port.numberAccepts = min(port.numberAccepts, limit)
    return port


@implementer(IStreamServerEndpoint)
class CappedEndpoint:
    """
    An L{IStreamServerEndpoint} whose listening ports accept at most
    C{limit} connections per reactor turn (L{capAccepts}) and answer
    refusals known at accept time without building a transport
    (L{muxframe.earlyrefusal.refuseEarly}).
    """

    def __init__(self, endpoint, limit=DEFAULT_ACCEPTS_PER_TURN):
        self.endpoint = endpoint
        self.limit = limit

    def listen(self, factory):
        """
        Listen with the wrapped endpoint, then cap the port.
        """
        d = self.endpoint.listen(factory)
        d.addCallback(capAccepts, self.limit)
        return d.addCallback(refuseEarly)
