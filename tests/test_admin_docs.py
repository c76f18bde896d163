"""
docs/operations.md documents what the operator surfaces really have: every
metric with its type and labels, every admin path, every field of the
health report and of a session, every operator option, and every
subcommand of the command line.
"""

import os
import re

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from muxframe.admin.metrics import CATALOGUE
from muxframe.admin.muxstatus import MultiplexerStatus
from muxframe.admin.xtmpstatus import XTMPStatus

from tests.test_server_support import ALICE, Harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def operations():
    with open(os.path.join(ROOT, "docs", "operations.md"), encoding="utf-8") as f:
        return f.read()


def section(text, heading):
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


class OperationsDocsTests(SynchronousTestCase):
    def test_metricsTable(self):
        part = section(operations(), "## 6. Metrics")
        for metric in CATALOGUE.values():
            row = re.search(r"^\| `%s` \| (\w+) \| ([^|]*) \|" % (
                re.escape(metric.exposed),), part, re.M)
            self.assertIsNotNone(row, metric.exposed)
            self.assertEqual(row.group(1), metric.kind, metric.name)
            labels = re.findall(r"`(\w+)`", row.group(2))
            self.assertEqual(tuple(labels), metric.labels, metric.name)

    def test_paths(self):
        from muxframe.admin.api import buildRoot
        from muxframe.admin.settings import OperatorSettings
        part = section(operations(), "## 5. The admin HTTP service")
        harness = Harness()
        xtmp = XTMPStatus(harness.server, harness.server.config, harness.clock)
        mux = MultiplexerStatus("server", [], Clock())
        for status in (xtmp, mux):
            root = buildRoot(status, OperatorSettings(token=b"t"), Resource())
            for path in root.index.paths:
                self.assertIn("%s` |" % (path,), part, path)
        for method, path in [("DELETE", "/api/v1/sessions/{id}"),
                             ("POST", "/api/v1/broadcast"),
                             ("POST", "/api/v1/publish")]:
            self.assertIn("`%s %s`" % (method, path), part)
        for code in (200, 400, 401, 404, 405, 413, 500, 503):
            self.assertIn("| %d |" % (code,), part)

    def test_healthAndSessionFields(self):
        part = section(operations(), "## 5. The admin HTTP service")
        harness = Harness()
        client, serverSide, _ = harness.connect(ALICE)
        harness.flush()
        xtmp = XTMPStatus(harness.server, harness.server.config, harness.clock)
        health = xtmp.health()
        health.update(MultiplexerStatus("client", [], Clock()).health())
        health.pop("ciphers")  # documented under "xtmp only"
        for field in health:
            self.assertRegex(part, r"`%s`" % (re.escape(field),), field)
        detail = xtmp.describe(serverSide)
        for field in list(detail) + list(detail["quality_metrics"]):
            self.assertIn("`%s`" % (field,), part, field)

    def test_operatorOptions(self):
        from muxframe.admin.settings import OperatorOptionsMixin
        part = section(operations(), "## 5. The admin HTTP service")
        for name in dir(OperatorOptionsMixin):
            if name.startswith("opt_"):
                self.assertIn("`--%s" % (name[4:].replace("_", "-"),), part, name)

    def test_commands(self):
        from muxframe.cli.main import parser
        part = section(operations(), "## 8. The command line")
        top = parser()
        (subparsers,) = [a for a in top._actions if a.dest == "command"]
        for name in subparsers.choices:
            self.assertRegex(part, r"\| `%s[ `]" % (name,), name)
