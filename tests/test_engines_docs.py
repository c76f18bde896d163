"""
docs/presence-and-queues.md's claims, checked: its example runs, every
configuration key is in its table, and its byte-for-byte record example is
what the encoder writes.
"""

import os
import re
import subprocess
import sys

from twisted.trial.unittest import TestCase

from muxframe.engines import config, logformat
from muxframe.engines.model import RecordKind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read():
    with open(os.path.join(ROOT, "docs", "presence-and-queues.md"), encoding="utf-8") as f:
        return f.read()


class PresenceAndQueuesDocTests(TestCase):

    def test_exampleRuns(self):
        """
        The API example exits 0 and shows the receipts coming back.
        """
        code = re.findall(r"```python\n(.*?)```", read(), re.S)[0]
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertIn(b"bob's receipts: ['DELIVERED', 'READ']", result.stdout)

    def test_everyKeyDocumented(self):
        """
        Every configuration key has a row in the doc's table.
        """
        text = read()
        for key in config._KEYS:
            self.assertRegex(text, r"\| `%s` \|" % (key,))

    def test_recordExample(self):
        """
        The hex example is the encoding of the record it describes.
        """
        match = re.search(r"at 1700000000000 ms:\n\n```\n(.*?)```", read(), re.S)
        shown = bytes.fromhex(match.group(1).replace("\n", " "))
        self.assertEqual(shown, logformat.encodeJournalRecord(
            RecordKind.MESSAGE, logformat.FLAG_RECEIPTS, 7, 3, 1700000000000, "alice", "m1",
            "bob", "phone", b"hi"))
        self.assertIn(logformat.JOURNAL_MAGIC.hex(" "), read())
