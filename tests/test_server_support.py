"""
Shared helpers for the XTMP server tests (no tests here): identities, and
an in-memory harness running real L{XTMPServer} sessions and XTMP clients
over iosim transports on one fake clock.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, connect

from muxframe.server.config import ServerConfig
from muxframe.server.factory import XTMPServer
from muxframe.xtmp import Identity, XTMPClientFactory

from tests.test_xtmp_protocol import result  # noqa: F401 - re-exported
from tests.test_xtmp_support import CLIENT_IDENTITY, SERVER_IDENTITY

ALICE = CLIENT_IDENTITY
BOB = Identity.fromSeeds(bytes(range(64, 96)))
CAROL = Identity.fromSeeds(bytes(range(96, 128)))
MALLORY = Identity.fromSeeds(bytes(range(128, 160)))
KEYS = [("alice", ALICE.public), ("bob", BOB.public), ("carol", CAROL.public)]


def config(**values):
    """
    A L{ServerConfig} with C{section__key=value} settings.
    """
    data = {}
    for name, value in values.items():
        section, key = name.split("__", 1)
        if section in ("handlers", "permissions", "history"):
            data[section] = value
        else:
            data.setdefault(section, {})[key] = value
    return ServerConfig.fromMapping(data)


class Harness:
    """
    An L{XTMPServer} on a fake clock; L{connect} makes client sessions.
    """

    def __init__(self, conf=None, keys=KEYS, tokens=None):
        self.clock = Clock()
        self.server = XTMPServer(SERVER_IDENTITY, conf or config(),
                                 reactor=self.clock, keys=keys, tokens=tokens)
        self.pumps = []
        self._port = 40000

    def connect(self, identity=ALICE, host="10.0.0.1", token=None,
                greet=True, **settings):
        """
        Connect a client; return C{(client, serverSide, pump)}.
        """
        self._port += 1
        address = IPv4Address("TCP", host, self._port)
        factory = XTMPClientFactory(
            serverKey=SERVER_IDENTITY.public,
            identity=identity if token is None else None, token=token,
            reactor=self.clock, **settings)
        client = factory.buildProtocol(None)
        serverSide = self.server.buildProtocol(address)
        pump = connect(serverSide, FakeTransport(serverSide, True,
                                                 peerAddress=address),
                       client, FakeTransport(client, False),
                       greet=greet, clock=self.clock)
        self.pumps.append(pump)
        return client, serverSide, pump

    def flush(self):
        """
        Move every connection's bytes until all are quiet.
        """
        for _ in range(50):
            moved = False
            for pump in self.pumps:
                moved = pump.flush() or moved
            if not moved:
                return
