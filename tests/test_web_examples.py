"""
C{examples/web_live.py}, run as a subprocess: its one web port serves the
page, the bundle and the page's configuration, and a Python XTMP client
over that port's WebSocket gets the subject's ticks and an echo.  (The page
itself runs in Chromium in clients/js/test/example-page.test.js.)
"""

import json
import os
import re
import select
import subprocess
import sys
import urllib.request

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from muxframe.web import WebSocketClientEndpoint
from muxframe.xtmp import XTMPClientFactory, connectXTMP

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(REPO, "clients", "js", "dist", "xtmp.js")


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


class LiveExampleTests(TestCase):

    timeout = 60

    def startExample(self):
        if not os.path.exists(BUNDLE):
            raise SkipTest("clients/js/dist/xtmp.js is not built: "
                           "cd clients/js && npm ci && npm run build")
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "examples", "web_live.py"),
             "--port", "0", "--interval", "0.1"],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def stop():
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        self.addCleanup(stop)
        ready, _, _ = select.select([process.stdout], [], [], 30)
        self.assertTrue(ready, "the example printed nothing in 30 s")
        line = process.stdout.readline().decode()
        match = re.search(r"serving http://127\.0\.0\.1:(\d+)/ .*server key ([0-9a-f]{64})", line)
        self.assertIsNotNone(match, line)
        return int(match.group(1)), match.group(2)

    @inlineCallbacks
    def test_pageBundleAndSession(self):
        port, fingerprint = self.startExample()
        base = "http://127.0.0.1:%d/" % (port,)
        status, kind, page = yield deferToThread(fetch, base)
        self.assertEqual(status, 200)
        self.assertIn("text/html", kind)
        self.assertIn(b"import { connect } from '/xtmp.js'", page)
        status, kind, bundle = yield deferToThread(fetch, base + "xtmp.js")
        self.assertIn("javascript", kind)
        self.assertIn(b"XTMP v1 server signature", bundle)
        _, _, body = yield deferToThread(fetch, base + "config.json")
        config = json.loads(body)
        self.assertEqual(config["fingerprint"], fingerprint)

        endpoint = WebSocketClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), "127.0.0.1", port,
            path=config["path"])
        client = yield connectXTMP(endpoint, XTMPClientFactory(
            verifyServer=lambda identity: identity.fingerprint == fingerprint,
            token=config["token"].encode()))
        ticks = []
        two = Deferred()

        def tick(message):
            ticks.append(message.payload)
            if len(ticks) == 2:
                two.callback(None)
        yield client.subscribe(config["subject"], tick)
        yield two
        self.assertTrue(all(t.startswith(b"tick ") for t in ticks), ticks)
        reply = yield client.request(config["echoType"], b"rtt", timeout=10)
        self.assertEqual(reply.payload, b"rtt")
        closed = client.whenClosed()
        client.disconnect()
        yield closed
