"""
C{bench/bench_web.py --quick} runs end to end in a subprocess: it exits 0
and its JSON has every figure (no timing is asserted).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class QuickWebBenchTests(unittest.TestCase):

    def test_quickRun(self):
        path = os.path.join(tempfile.mkdtemp(), "web.json")
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bench", "bench_web.py"),
             "--quick", "--json", path],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
        with open(path) as f:
            result = json.load(f)
        self.assertEqual(result["mode"], "quick")
        for key in ("xtmp_tcp_msgs_per_s", "xtmp_ws_msgs_per_s",
                    "ws_over_tcp_msgs", "xtmp_tcp_bulk_mib_per_s",
                    "xtmp_ws_bulk_mib_per_s", "ws_over_tcp_bulk",
                    "python_handshake_cpu_ms_client"):
            self.assertGreater(result[key], 0, key)
        self.assertIn("XTMP msgs/s", proc.stdout)
        js = result["js_handshake"]
        haveJS = shutil.which("node") and os.path.isdir(
            os.path.join(ROOT, "clients", "js", "node_modules"))
        if not haveJS:
            self.assertIn("skipped", js)
            raise unittest.SkipTest(
                "the JS handshake figure needs node and "
                "`cd clients/js && npm ci`: " + js["skipped"])
        self.assertEqual(js["rounds"], 3)
        for key in ("wall_ms_median", "client_cpu_ms_median"):
            self.assertGreater(js[key], 0, key)
