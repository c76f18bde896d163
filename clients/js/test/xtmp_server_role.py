"""
The XTMP server role (muxframe.server.XTMPServer: registry, router,
broker) for the JavaScript client's tests, on a WebSocket endpoint at
ws://127.0.0.1:PORT/xtmp (random port), stopped by closing its stdin or
SIGTERM.

Authorized keys are the --authorize NAME=HEX options (encoded identities).
Handlers: 0x30 echoes ("echo:" + data); 0x33 answers JSON describing the
registry's sessions (identity name, heartbeat rtt).

Prints one JSON line per event: first {"event": "listening", "port",
"serverKey", "fingerprint"}.

Run with PYTHONPATH at the repository root.
"""

import argparse
import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint

from muxframe.server import XTMPServer
from muxframe.server.config import ServerConfig
from muxframe.web import WebSocketServerEndpoint
from muxframe.xtmp import Identity, PublicIdentity

# Standard input and output, and running, as the library server's.
from xtmp_server import emit, serve


def echo(session, message):
    return b"echo:" + message.payload


def sessions(session, message):
    return json.dumps([
        {"name": s.identity.name, "rtt": s.rtt}
        for s in session.factory.registry.list()]).encode()


@inlineCallbacks
def main(options):
    identity = Identity.generate()
    keys = []
    for entry in options.authorize:
        name, encoded = entry.split("=", 1)
        keys.append((name, PublicIdentity.decode(bytes.fromhex(encoded))[0]))
    config = ServerConfig.fromMapping({
        "xtmp_protocol": {"heartbeat_interval": options.heartbeat_interval},
    })
    server = XTMPServer(identity, config, reactor, keys=keys)
    server.setHandler(0x30, echo)
    server.setHandler(0x33, sessions)
    port = yield WebSocketServerEndpoint(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), path="/xtmp",
        reactor=reactor).listen(server)
    emit("listening", port=port.getHost().port,
         serverKey=identity.public.encode().hex(),
         fingerprint=identity.public.fingerprint)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--authorize", action="append", default=[])
    parser.add_argument("--heartbeat-interval", type=float, default=30.0)
    serve(main, parser.parse_args())
