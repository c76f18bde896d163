"""
The XTMP server benchmarks run end to end: C{python3 -m bench.xtmpserver
--quick} exits 0 and its JSON has a figure and a baseline for every
scenario; C{bench.xtmpserver.relaycost} routes every request of a small
run, and C{bench.xtmpserver.handshakecost} completes every handshake of
one.  No timing is asserted (the numbers are in docs/performance.md).
"""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class QuickBenchTests(SynchronousTestCase):
    def test_quickRun(self):
        path = os.path.join(os.path.abspath(self.mktemp()) + ".json")
        env = dict(os.environ, PYTHONPATH=ROOT)
        process = subprocess.run(
            [sys.executable, "-m", "bench.xtmpserver", "--quick", "--json",
             path], cwd=ROOT, env=env, timeout=300,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = process.stdout.decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, output[-4000:])
        with open(path) as f:
            result = json.load(f)
        self.assertEqual(result["mode"], "quick")
        self.assertEqual(result["scenarios"],
                         ["idle", "handshake", "fanout", "reqrep", "flood"])
        measures = {row["scenario"]: [] for row in result["rows"]}
        for row in result["rows"]:
            measures[row["scenario"]].append(row)
            self.assertIsInstance(row["value"], float, row)
            self.assertGreater(row["value"], 0, row)
        self.assertEqual(set(measures), set(result["scenarios"]))
        for scenario in ("idle", "handshake", "fanout", "reqrep", "flood"):
            self.assertTrue(any(r["baseline"] for r in measures[scenario]),
                            scenario)
        targets = {r["measure"].split(" (")[0]: r["target"]
                   for r in result["rows"] if r["target"] is not None}
        self.assertEqual(sorted(targets.values()),
                         sorted([10, 1, 1500, 200000, 20000, 2]))
        self.assertIn("measure", output)


class RelayCostTests(SynchronousTestCase):
    def test_smallRun(self):
        """
        C{python3 -m bench.xtmpserver.relaycost} routes every request (it
        exits non-zero otherwise) and prints each role's CPU per request.
        """
        env = dict(os.environ, PYTHONPATH=ROOT)
        process = subprocess.run(
            [sys.executable, "-m", "bench.xtmpserver.relaycost", "--rounds",
             "3", "--window", "8", "--repeat", "1"], cwd=ROOT, env=env,
            timeout=120, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = process.stdout.decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, output[-4000:])
        self.assertIn("requests 24 a run (8 in flight), 1 runs", output)
        line = output.splitlines()[-1]
        self.assertTrue(line.startswith("thread CPU per routed request"), line)
        for role in ("server", "requester", "responder", "total"):
            self.assertIn(role + " ", line)


class HandshakeCostTests(SynchronousTestCase):
    def test_smallRun(self):
        """
        C{python3 -m bench.xtmpserver.handshakecost} completes every
        handshake and closes every session (it exits non-zero otherwise)
        and prints the server's CPU per handshake beside the floor.
        """
        env = dict(os.environ, PYTHONPATH=ROOT)
        process = subprocess.run(
            [sys.executable, "-m", "bench.xtmpserver.handshakecost",
             "--handshakes", "5", "--repeat", "1"], cwd=ROOT, env=env,
            timeout=120, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = process.stdout.decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, output[-4000:])
        self.assertIn("handshakes 5 a run, 1 runs, log level info", output)
        self.assertIn("server thread CPU per completed handshake", output)
        self.assertIn("the sans-IO handshake alone", output)
