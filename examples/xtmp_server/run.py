"""
The example XTMP server application, end to end:

  1. makes a server identity, two client identities ("wallet", "fees")
     and an authorized_keys file naming them, in a temporary directory;
  2. starts  twistd -n muxframe xtmp --config xtmp-server.yaml  with
     bundles.py's handlers (BundleSubmit, and BundleStatus in the thread
     pool);
  3. the "fees" client serves the subject fees.quote (a queue group);
     the "wallet" client subscribes to bundles.*.status, submits two
     bundles, asks for their status, and requests a fee quote from the
     "fees" client through the server;
  4. stops the server with SIGTERM and shows that it exited 0.

Run:  python examples/xtmp_server/run.py
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402

from muxframe.tap import twistdCommand  # noqa: E402
from muxframe.xtmp import (  # noqa: E402
    Identity, MessageType, PeerError, XTMPClientFactory, connectXTMP,
)

PASSWORD = "example-password"


def setUp(directory):
    """
    Keys and the configuration in C{directory}; return (port, identities).
    """
    server = Identity.generate()
    server.savePEM(os.path.join(directory, "server.pem"), PASSWORD.encode())
    clients = {"wallet": Identity.generate(), "fees": Identity.generate()}
    with open(os.path.join(directory, "authorized_keys"), "wb") as f:
        for name, identity in clients.items():
            f.write(b"name: " + name.encode() + b"\n" + identity.public.toPEM())
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(os.path.join(HERE, "xtmp-server.yaml")) as f:
        text = f.read().replace("PORT", str(port))
    with open(os.path.join(directory, "xtmp-server.yaml"), "w") as f:
        f.write(text)
    return port, server.public, clients


def waitForPort(port, process, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server exited:\n" + process.stdout.read())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not listen on %d" % (port,))


@inlineCallbacks
def clients(reactor, port, serverKey, identities):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)

    def factory(name):
        return XTMPClientFactory(serverKey=serverKey,
                                 identity=identities[name], resume=False)

    fees = yield connectXTMP(endpoint, factory("fees"))

    def quote(message):
        request = json.loads(message.payload)
        fee = 10 + 2 * request["transactions"]
        fees.respond(message, json.dumps({"fee": fee}).encode())

    yield fees.subscribe("fees.quote", quote, group="quoters")

    wallet = yield connectXTMP(endpoint, factory("wallet"))
    updates = []
    confirmed = Deferred()

    def onStatus(message):
        record = json.loads(message.payload)
        updates.append((message.streamName, record["status"]))
        print("stream %s: %s" % (message.streamName, record["status"]))
        if sum(1 for _, s in updates if s == "confirmed") == 2 and \
                not confirmed.called:
            confirmed.callback(None)

    yield wallet.subscribe("bundles.*.status", onStatus)
    ids = []
    for transactions in (["tx1", "tx2"], ["tx3"]):
        reply = yield wallet.request(
            MessageType.BundleSubmit,
            json.dumps({"transactions": transactions}).encode(), timeout=10)
        receipt = json.loads(reply.payload)
        ids.append(receipt["bundle"])
        print("submitted %d transactions: %s" % (len(transactions), receipt))
    yield confirmed
    for bundleId in ids:
        reply = yield wallet.request(MessageType.BundleStatus,
                                     bundleId.encode(), timeout=10)
        print("status of %s: %s" % (bundleId, json.loads(reply.payload)))
    reply = yield wallet.request(MessageType.EventStream,
                                 json.dumps({"transactions": 3}).encode(),
                                 subject="fees.quote", timeout=10)
    print("fee quote from the fees client: %s" % (json.loads(reply.payload),))
    try:
        yield wallet.request(MessageType.BundleStatus, b"b99", timeout=10)
    except PeerError as e:
        print("status of b99 refused: %s" % (e,))
    try:
        # Only fees.quote is the wallet's to publish or request on.
        yield wallet.request(MessageType.EventStream, b"{}",
                             subject="fees.quote.admin", timeout=10)
    except PeerError as e:
        print("request to fees.quote.admin refused: %s" % (e,))
    for protocol in (wallet, fees):
        closed = protocol.whenClosed()
        protocol.disconnect()
        yield closed


def main():
    directory = tempfile.mkdtemp(prefix="xtmp-example-")
    try:
        port, serverKey, identities = setUp(directory)
        argv = twistdCommand("-n", "--pidfile=", "--logfile=server.log",
                             "muxframe", "xtmp", "--config",
                             os.path.join(directory, "xtmp-server.yaml"))
        env = dict(os.environ, XTMP_EXAMPLE_PASSWORD=PASSWORD,
                   PYTHONPATH=os.pathsep.join([REPO, HERE]))
        print("$ twistd -n --pidfile= --logfile=server.log muxframe xtmp "
              "--config xtmp-server.yaml")
        server = subprocess.Popen(argv, cwd=directory, env=env, text=True,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        try:
            waitForPort(port, server)
            task.react(clients, (port, serverKey, identities))
        except SystemExit as e:
            if e.code:
                raise
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=30)
        print("server stopped by SIGTERM, exit status %d" % (code,))
        with open(os.path.join(directory, "server.log")) as f:
            log = f.read()
        for line in log.splitlines():
            if "sessions drained" in line or "refused" in line:
                print("server log: " + line.split("] ", 1)[-1])
        if code != 0:
            print(log)
            raise SystemExit(1)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
