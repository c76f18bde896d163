"""
C{bench/bench_flood.py --quick} runs end to end in a subprocess: it exits 0,
its JSON has every figure, and the server closed every flood connection
(no timing is asserted).
"""

import json
import os
import subprocess
import sys
import tempfile

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class QuickFloodBenchTests(unittest.TestCase):

    def test_quickRun(self):
        path = os.path.join(tempfile.mkdtemp(), "flood.json")
        env = dict(os.environ, PYTHONPATH=ROOT)
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bench", "bench_flood.py"), "--quick",
             "--attacks", "mio-rapid-reset,bmp-ack-flood", "--messages", "50",
             "--json", path],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
        with open(path) as f:
            result = json.load(f)
        self.assertEqual(result["mode"], "quick")
        self.assertEqual([r["attack"] for r in result["results"]],
                         ["mio-rapid-reset", "bmp-ack-flood"])
        for run in result["results"]:
            for key in ("baseline_p50_ms", "baseline_p99_ms", "loaded_p50_ms",
                        "loaded_p99_ms", "p99_ratio"):
                self.assertGreater(run[key], 0, key)
            self.assertGreater(run["flood_connections"], 0)
            self.assertEqual(run["flood_closed_by_server"], run["flood_connections"])
        self.assertIn("p99 x", proc.stdout)
