"""
A live view of a subject in the browser: an XTMP server whose web
endpoint serves the page (examples/web_live.html), the JavaScript client
bundle (clients/js/dist/xtmp.js) and the WebSocket the page connects to,
all on one port.  The server publishes a message on the subject every
second; the page shows them, the session's cipher, and the RTT of a
request every 2 seconds.

Build the bundle once:  cd clients/js && npm ci && npm run build
Run:                    python examples/web_live.py [--port 8092]
Then open http://127.0.0.1:8092/ in a browser.

(The page learns the server's fingerprint from /config.json on the same
server, which is only as trustworthy as that HTTP response: a real page
pins the fingerprint in its own code, served over TLS.)
"""

import argparse
import json
import os
import sys
import time

from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.static import Data, File

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from muxframe.web import WebSocketServerEndpoint  # noqa: E402
from muxframe.xtmp import Identity, XTMPServerFactory  # noqa: E402

BUNDLE = os.path.join(HERE, "..", "clients", "js", "dist", "xtmp.js")
ECHO = 0x30
TOKEN = b"live-demo"


def site(config):
    """
    The web endpoint's non-WebSocket resources: the page, the bundle, the
    page's configuration.
    """
    root = Resource()
    page = File(os.path.join(HERE, "web_live.html"),
                defaultType="text/html; charset=utf-8")
    root.putChild(b"", page)
    root.putChild(b"index.html", page)
    root.putChild(b"xtmp.js", File(BUNDLE, defaultType="text/javascript"))
    root.putChild(b"config.json", Data(json.dumps(config).encode(),
                                       "application/json"))
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--subject", default="ticker")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    if not os.path.exists(BUNDLE):
        sys.exit("the JavaScript bundle is missing: "
                 "cd clients/js && npm ci && npm run build")

    identity = Identity.generate()
    server = XTMPServerFactory(identity, checkToken=lambda t: t == TOKEN)
    server.setHandler(ECHO, lambda protocol, message: message.payload)
    config = {"path": "/xtmp", "subject": args.subject, "echoType": ECHO,
              "fingerprint": identity.public.fingerprint,
              "token": TOKEN.decode()}
    # What "ws:tcp:8092:interface=127.0.0.1:path=/xtmp" builds, with the
    # page's resources for every other request.
    endpoint = WebSocketServerEndpoint(
        TCP4ServerEndpoint(reactor, args.port, interface="127.0.0.1"),
        path="/xtmp", static=site(config))
    count = [0]

    def tick():
        count[0] += 1
        server.publish(args.subject, ("tick %d at %.3f" % (
            count[0], time.time())).encode())

    def listening(port):
        url = "http://127.0.0.1:%d/" % (port.getHost().port,)
        print("serving %s (subject %r, server key %s)"
              % (url, args.subject, identity.public.fingerprint), flush=True)
        task.LoopingCall(tick).start(args.interval, now=False)

    def failed(failure):
        print("could not listen: %s" % (failure.getErrorMessage(),))
        reactor.stop()

    endpoint.listen(server).addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main()
