"""
docs/web.md's tables match the code: every WebSocket limit with its
default, every endpoint-string keyword.
"""

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from muxframe.web.endpointstrings import CLIENT_OPTIONS, SERVER_OPTIONS
from muxframe.web.limits import LIMITS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read():
    with open(os.path.join(ROOT, "docs", "web.md"), encoding="utf-8") as f:
        return f.read()


class WebDocsTests(SynchronousTestCase):

    def test_limits(self):
        text = read()
        for name, (default, kind, low, high, meaning) in LIMITS.items():
            self.assertIn("`%s`" % (name,), text, name)
        self.assertIn("| `maxMessageSize` | 2 MiB (2097152) |", text)
        self.assertEqual(LIMITS["maxMessageSize"][0], 2097152)
        self.assertIn("| `writeSize` | 64 KiB |", text)
        self.assertEqual(LIMITS["writeSize"][0], 65536)
        for name, seconds in (("openHandshakeTimeout", 10), ("closeHandshakeTimeout", 5)):
            self.assertIn("| `%s` | %d s |" % (name, seconds), text)
            self.assertEqual(LIMITS[name][0], seconds)
        self.assertEqual(LIMITS["autoPingInterval"][0], 0)

    def test_keywords(self):
        table = re.findall(r"^\| `(\w+)` \| (server|client|both) \|", read(), re.M)
        documented = {name: side for name, side in table}
        for name in SERVER_OPTIONS:
            self.assertIn(documented.get(name), ("server", "both"), name)
        for name in CLIENT_OPTIONS:
            self.assertIn(documented.get(name), ("client", "both"), name)
