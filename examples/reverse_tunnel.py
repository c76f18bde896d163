"""
A reverse tunnel: a service that can only make outgoing connections (behind
NAT) is reached through a public server.

  - "behind NAT": a small line service, and a muxframe client that connects
    out to the public server and forwards the streams the server opens to
    that service;
  - "public": a muxframe server that accepts the client, plus a local
    listener whose connections are carried as streams opened toward the
    client authenticated as "nat-box" (by a token: an unauthenticated
    connection never gets one);
  - an ordinary TCP client connects to the public listener and talks to the
    hidden service.

The same, as processes::

    twistd -n muxframe server --endpoint=tcp:9000 --tokens=tokens \\
        --local=tcp:8022 --client=nat-box
    twistd -n muxframe client --endpoint=tcp:public.example:9000 \\
        --name=nat-box --tokenFile=nat-box.token --forward=tcp:localhost:22

where C{tokens} holds the line C{nat-box <token>} and C{nat-box.token} the
same token.

Run: C{python3 examples/reverse_tunnel.py}
"""


from twisted.internet import defer, task
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

import os

from muxframe import MultiplexedClientEndpoint, MultiplexedServerEndpoint
from muxframe.tunnel import ForwardFactory, TunnelFactory, reverseOpener
from muxframe.tunnelauth import Authenticator, TokenTable


class Shout(LineReceiver):
    """
    The hidden service: answers each line in capitals.
    """

    def lineReceived(self, line):
        self.sendLine(b"HIDDEN SERVICE SAYS: " + line.upper())


class Talker(LineReceiver):
    """
    The ordinary client: sends lines, collects the answers.
    """

    def __init__(self, lines):
        self.lines = lines
        self.answers = []
        self.done = defer.Deferred()

    def connectionMade(self):
        for line in self.lines:
            self.sendLine(line)

    def lineReceived(self, line):
        self.answers.append(line)
        if len(self.answers) == len(self.lines):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.answers)


@defer.inlineCallbacks
def main(reactor):
    local = "127.0.0.1"
    # Behind NAT: the hidden service.
    hidden = yield TCP4ServerEndpoint(reactor, 0, interface=local).listen(
        Factory.forProtocol(Shout))
    # The token the two sides share.
    token = os.urandom(24).hex().encode()
    # Public: the muxframe server and its reverse-tunnel listener, which
    # sends connections to the client authenticated as "nat-box" only.
    public = MultiplexedServerEndpoint(
        TCP4ServerEndpoint(reactor, 0, interface=local), framing="mio",
        authenticator=Authenticator(TokenTable({b"nat-box": token})))
    muxPort = yield public.listen(Factory.forProtocol(LineReceiver))
    tunnel = TunnelFactory(reverseOpener(public, "nat-box"), "reverse tunnel")
    entrance = yield TCP4ServerEndpoint(reactor, 0, interface=local).listen(tunnel)
    # Behind NAT: the muxframe client, connecting out and staying connected
    # (re-made with backoff if lost) so the server can open streams to it.
    client = MultiplexedClientEndpoint(
        TCP4ClientEndpoint(reactor, local, muxPort.getHost().port), framing="mio",
        childFactory=ForwardFactory(
            TCP4ClientEndpoint(reactor, local, hidden.getHost().port)),
        authName="nat-box", authToken=token)
    client.keepConnected()
    yield client.whenConnected()
    yield public.whenConnected()

    talkers = [Talker([b"hello %d" % (i,), b"through the tunnel"]) for i in range(3)]
    for talker in talkers:
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, local, entrance.getHost().port), talker)
    answers = yield defer.gatherResults([t.done for t in talkers])
    ok = True
    for talker, lines in zip(talkers, answers):
        for line in lines:
            print(line.decode())
        ok = ok and lines == [b"HIDDEN SERVICE SAYS: " + l.upper() for l in talker.lines]
    print("%d connections through the reverse tunnel (%d streams opened by the "
          "server): %s" % (len(talkers), tunnel.stats.opened, "ok" if ok else "FAILED"))
    yield entrance.stopListening()
    yield client.stop()
    yield muxPort.stopListening(1)
    yield hidden.stopListening()
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main)
