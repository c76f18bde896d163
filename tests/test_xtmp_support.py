"""
Shared helpers for the XTMP tests (no tests here).
"""

from muxframe.xtmp.connection import Settings, XTMPConnection
from muxframe.xtmp.handshake import ClientHandshake, ServerHandshake
from muxframe.xtmp.identity import Identity

SERVER_IDENTITY = Identity.fromSeeds(bytes(range(32)))
CLIENT_IDENTITY = Identity.fromSeeds(bytes(range(32, 64)))


def enginePair(clientSettings=None, serverSettings=None, now=0.0, **kw):
    """
    A connected pair of sans-IO engines, handshake done.

    @return: C{(client, server)}.
    """
    client = XTMPConnection(
        ClientHandshake(serverKey=SERVER_IDENTITY.public,
                        identity=CLIENT_IDENTITY,
                        **{k[2:]: v for k, v in kw.items()
                           if k.startswith("c_")}),
        Settings(**(clientSettings or {})), now=now)
    server = XTMPConnection(
        ServerHandshake(SERVER_IDENTITY,
                        authorizedKeys=[CLIENT_IDENTITY.public],
                        **{k[2:]: v for k, v in kw.items()
                           if k.startswith("s_")}),
        Settings(**(serverSettings or {})), now=now)
    client.initiate(now)
    exchange(client, server, now)
    assert client.state == server.state == "OPEN"
    return client, server


def exchange(client, server, now=0.0):
    """
    Move bytes both ways until quiet; return (clientEvents, serverEvents).
    """
    clientEvents, serverEvents = [], []
    for _ in range(50):
        a = client.dataToSend(now=now)
        b = server.dataToSend(now=now)
        if not a and not b:
            break
        if a:
            serverEvents.extend(server.receiveData(a, now))
        if b:
            clientEvents.extend(client.receiveData(b, now))
    return clientEvents, serverEvents


def payloads(events, kind=None):
    """
    The payloads of the L{MessageReceived} events in C{events}.
    """
    from muxframe.xtmp.connection import MessageReceived
    return [e.message.payload for e in events
            if isinstance(e, kind or MessageReceived)]
