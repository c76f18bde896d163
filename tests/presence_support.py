"""
Helpers for the presence, queue and history tests (no tests here): XTMP
peers speaking the messaging stanzas over real loopback TCP, a TCP proxy
whose cable can be cut (a peer that stops answering pings), and real
C{twistd -n muxframe xtmp} servers with storage.
"""

import os

import yaml
from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol)
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from muxframe.messaging.client import MessagingClient
from muxframe.xtmp import XTMPClientFactory, connectXTMP

from tests.engine_contract import eventually
from tests.test_server_support import ALICE, BOB, CAROL, SERVER_IDENTITY
from tests.test_tap import freePort, spawnTwistd, waitForPort

__all__ = ["Peer", "connectPeer", "CutProxy", "startServer", "serveInProcess",
           "eventually", "freePort", "ALICE", "BOB", "CAROL", "SERVER_IDENTITY", "NAMED"]

NAMED = [("alice", ALICE), ("bob", BOB), ("carol", CAROL)]


class Peer:
    """
    A connected device: its XTMP protocol, its L{MessagingClient}, and
    what it was told.
    """

    def __init__(self, protocol, client):
        self.protocol = protocol
        self.client = client
        self.messages = []
        self.receipts = []
        self.awareness = []
        self.subscriptions = []
        client.onMessage = self.messages.append
        client.onReceipt = self.receipts.append
        client.onAwareness = self.awareness.append
        client.onSubscription = self.subscriptions.append

    def statuses(self, entity):
        """
        The statuses of C{entity} heard, in order.
        """
        return [a.status for a in self.awareness if a.from_.eid == entity and not a.ttl]

    def close(self):
        """
        Disconnect; a Deferred firing once closed.
        """
        if self.protocol.connection is None or self.protocol.connection.state == "CLOSED":
            return defer.succeed(None)
        closed = self.protocol.whenClosed()
        self.protocol.disconnect()
        return closed


@defer.inlineCallbacks
def connectPeer(testCase, port, identity, device, client=None, **settings):
    """
    Connect to 127.0.0.1:C{port} as C{identity} and bind C{device} (or
    attach C{client}, keeping its state); the test's cleanup closes it.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    settings.setdefault("resume", False)
    protocol = yield connectXTMP(endpoint, XTMPClientFactory(
        serverKey=SERVER_IDENTITY.public, identity=identity, **settings))
    peer = Peer(protocol, client or MessagingClient(device))
    testCase.addCleanup(peer.close)
    peer.bound = yield peer.client.attach(protocol)
    return peer


class _Relay(Protocol):
    def __init__(self, proxy):
        self.proxy = proxy
        self.other = None
        self.held = []
        self.orphaned = False

    def dataReceived(self, data):
        if self.orphaned:
            # The other side closed during a cut: as TCP answers a
            # segment for a connection its peer forgot, with a reset.
            self.transport.abortConnection()
            return
        if self.proxy.cut:
            return
        if self.other is None:
            self.held.append(data)
        else:
            self.other.transport.write(data)

    def connectionLost(self, reason=None):
        self.proxy.relays.discard(self)
        if self.other is not None:
            if self.proxy.cut and self.proxy.silentCloses:
                # The close cannot cross the cut either.
                self.other.orphaned = True
            else:
                self.other.transport.loseConnection()


class _Outbound(_Relay):
    def connectionMade(self):
        self.other.other = self
        for data in self.other.held:
            self.transport.write(data)
        self.other.held = []
        self.proxy.relays.add(self)


class _Inbound(_Relay):
    def connectionMade(self):
        self.proxy.relays.add(self)
        factory = ClientFactory()
        factory.protocol = lambda: _Outbound(self.proxy)
        outbound = factory.buildProtocol(None)
        outbound.other = self
        self.transport.pauseProducing()

        def connected(protocol):
            self.transport.resumeProducing()
        connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.target),
                        outbound).addCallbacks(
            connected, lambda f: self.transport.loseConnection())


class CutProxy:
    """
    A TCP proxy to 127.0.0.1:C{target}; L{cutCable} makes it drop every
    byte both ways while keeping the connections open, as a network cut
    (or a peer that stops answering) looks.  With C{silentCloses}, a side
    closing during the cut is not seen by the other either, until that
    one sends something (then reset), as across a real cut.
    """

    def __init__(self, target, silentCloses=False):
        self.target = target
        self.silentCloses = silentCloses
        self.cut = False
        self.relays = set()
        self.port = None

    @defer.inlineCallbacks
    def start(self, testCase):
        """
        Listen on a free port (C{self.port}); stopped at cleanup.
        """
        factory = Factory.forProtocol(lambda: _Inbound(self))
        listening = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory)
        self.port = listening.getHost().port
        testCase.addCleanup(self.stop, listening)
        return self

    def cutCable(self):
        """
        Drop everything from now on.
        """
        self.cut = True

    def mendCable(self):
        """
        Undo L{cutCable}: relay again (what was dropped stays lost).
        """
        self.cut = False

    def stop(self, listening):
        for relay in list(self.relays):
            relay.transport.abortConnection()
        return listening.stopListening()


def writeServerSetup(directory, port, storage=None, extra=None):
    """
    Identity, authorized_keys (alice, bob, carol named) and a configuration
    with a C{storage} section in C{directory}; return the config's path.
    """
    os.makedirs(directory, exist_ok=True)
    SERVER_IDENTITY.savePEM(os.path.join(directory, "server.pem"))
    with open(os.path.join(directory, "authorized_keys"), "wb") as f:
        f.write(b"".join(b"name: %s\n" % name.encode() + key.public.toPEM()
                         for name, key in NAMED))
    config = {
        "server": {"endpoint": "tcp:%d:interface=127.0.0.1" % (port,),
                   "identity": "server.pem", "authorized_keys": "authorized_keys",
                   "max_connections_per_client": 100, "drain_timeout": 5,
                   "handshake_rate": 1000, "handshake_burst": 1000},
        "xtmp_protocol": {"heartbeat_interval": 1},
        "limits": {"messages_per_second": 0, "bytes_per_second": 0},
        "storage": dict(storage or {}),
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    path = os.path.join(directory, "xtmp-server.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


@defer.inlineCallbacks
def startServer(testCase, directory, storage=None, extra=None, port=None, name="xtmp"):
    """
    Start C{twistd -n muxframe xtmp} with storage in C{directory} on a
    free port; return C{(process, port)} once it listens.
    """
    port = port or freePort()
    path = writeServerSetup(directory, port, storage, extra)
    process = spawnTwistd(testCase, name, "xtmp", "--config", path, cwd=directory)
    yield waitForPort(port, process)
    return process, port


@defer.inlineCallbacks
def serveInProcess(testCase, keys=None, **values):
    """
    An L{XTMPServer} with L{Storage} (embedded in a temporary directory
    unless C{storage__*} say otherwise) on 127.0.0.1 in this process;
    return C{(server, storage, port)}.  Stopped at cleanup.
    """
    from muxframe.server.factory import XTMPServer
    from muxframe.server.storage import Storage
    from tests.test_server_support import KEYS, config
    values.setdefault("storage__directory", os.path.abspath(testCase.mktemp()))
    values.setdefault("xtmp_protocol__heartbeat_interval", 1)
    values.setdefault("limits__messages_per_second", 0)
    values.setdefault("server__max_connections_per_client", 100)
    values.setdefault("server__handshake_rate", 1000)
    values.setdefault("server__handshake_burst", 1000)
    conf = config(**values)
    storage = Storage.fromConfig(conf, reactor)
    server = XTMPServer(SERVER_IDENTITY, conf, reactor, keys=KEYS if keys is None else keys,
                        engine=storage.brokerEngine())
    storage.attach(server)
    yield storage.start()
    testCase.addCleanup(storage.stop)
    testCase.addCleanup(server.drain, 5)
    listening = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    testCase.addCleanup(listening.stopListening)
    return server, storage, listening.getHost().port
