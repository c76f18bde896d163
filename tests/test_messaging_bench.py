"""
bench/bench_messaging.py runs end to end in quick mode, in a subprocess
(its server in another), and reports its figures with the baseline and
every message stored.  No timing is asserted.
"""

import json
import os
import subprocess
import sys

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class QuickMessagingBenchTests(unittest.TestCase):

    def test_quickRun(self):
        path = os.path.abspath(self.mktemp())
        env = dict(os.environ, PYTHONPATH=ROOT)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.bench_messaging", "--quick", "--json", path],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
        with open(path) as f:
            results = json.load(f)
        for key in ("messages_sent_per_s", "baseline_requests_per_s"):
            self.assertGreater(results[key], 0, key)
        self.assertTrue(results["all_stored"])
        self.assertEqual(results["alice_queue_records"], 2500)
        self.assertIn("durable SENT answers", proc.stdout)
