"""
docs/xtmp-server.md lists every setting with its default, every design
document key mapped or ignored, every server error code; its example
configuration loads.
"""

import os
import re

import yaml
from twisted.trial.unittest import SynchronousTestCase

from muxframe.server.config import ServerConfig
from muxframe.server.schema import ALIASES, IGNORED, SCHEMA
from muxframe.xtmp import XTMPErrorCode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def text():
    with open(os.path.join(ROOT, "docs", "xtmp-server.md"), encoding="utf-8") as f:
        return f.read()


def shown(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class DocsTests(SynchronousTestCase):
    def test_everyKeyWithDefaultAndOption(self):
        doc = text()
        for key in SCHEMA:
            section, name = key.path.split(".", 1)
            part = doc.split("#### `%s`" % (section,), 1)[1].split("####")[0]
            row = re.search(r"^\| `%s` \| `([^`]*)` \| [^|]+ \| `--([^`]+)` \|"
                            % re.escape(name), part, re.M)
            self.assertIsNotNone(row, key.path)
            self.assertEqual(row.group(1), shown(key.default), key.path)
            self.assertEqual(row.group(2), key.option, key.path)

    def test_designDocumentKeys(self):
        doc = text()
        for key in list(ALIASES) + list(IGNORED):
            self.assertIn("| `%s` |" % (key,), doc)

    def test_serverCodes(self):
        doc = text()
        for code in XTMPErrorCode:
            if code >= 32:
                self.assertIn("`%s`" % (code.name,), doc)

    def test_codeNumbers(self):
        """
        Every code shown with its number (C{`NAME` (N)}) has that number.
        """
        shownCodes = re.findall(r"`([A-Z_]+)`\s+\((\d+)\)", text())
        self.assertGreater(len(shownCodes), 10)
        for name, number in shownCodes:
            self.assertEqual(XTMPErrorCode[name], int(number), name)

    def test_exampleLoads(self):
        block = re.search(r"A configuration:\n\n```yaml\n(.*?)```", text(),
                          re.S).group(1)
        config = ServerConfig.fromMapping(yaml.safe_load(block))
        self.assertEqual(config["server.max_connections_per_client"], 10)
        self.assertEqual(len(config.handlers), 2)
        self.assertIsNotNone(config.permissions.forIdentity("alice"))
