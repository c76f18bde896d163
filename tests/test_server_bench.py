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


class _FakeChild:
    """
    Stands in for a benchmark process in L{FloodPlacementTests}: answers
    what the flood scenario expects, runs nothing.
    """

    def __init__(self, name, *args, **kwargs):
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.pid = id(self)
        self.port = 1

    def send(self, cmd, **fields):
        pass

    def expect(self, event, timeout):
        return {"ran": {"p99": 0.001, "wall": 1.0},
                "ready": {},
                "flooded": {"outcomes": {"closed": 300}, "seconds": 2.0,
                            "poolLeft": 1}}[event]


class FloodPlacementTests(SynchronousTestCase):
    """
    Where the flood scenario of C{bench.xtmpserver} puts its processes
    (its children faked: nothing is run or measured).
    """

    def flood(self, cpus, attacker="idle"):
        from bench.xtmpserver import run
        pinned, made = [], []

        def child(name, *args, **kwargs):
            made.append(_FakeChild(name, *args, **kwargs))
            return made[-1]

        self.patch(run, "server", lambda *a: child("server"))
        self.patch(run, "clients", lambda *a: [child("latency")])
        self.patch(run, "Child", child)
        self.patch(run, "stats", lambda srv: {"cpu": 0.0, "refusals": {}})
        self.patch(run, "stopAll", lambda *children: None)
        self.patch(run, "pin", lambda c, s: pinned.append((c.name, s)))
        self.patch(run.time, "sleep", lambda seconds: None)
        self.patch(run.os, "sched_getaffinity", lambda pid: set(cpus))
        size = dict(run.SIZES["quick"], attacker=attacker, acceptsPerTurn=None)
        rows = run.flood(size)
        return rows, pinned, made

    def test_idleOnTwoCPUs(self):
        """
        --attacker idle: the server alone on the first CPU, the measuring
        client and the flooders (SCHED_IDLE, their pool of hellos) on the
        last; the hellos per second are the flooders' together.
        """
        rows, pinned, made = self.flood([0, 1])
        self.assertEqual(pinned, [("server", {0}), ("latency", {1}),
                                  ("flood-0", {1})])
        [flooder] = [c for c in made if c.name.startswith("flood")]
        self.assertTrue(flooder.kwargs["idlePolicy"])
        self.assertIn("--pool", flooder.args)
        self.assertEqual(rows[-1]["value"], 150.0)

    def test_idleOnOneCPU(self):
        """
        On one CPU --attacker idle pins nothing, as --attacker pin does,
        and the scenario still gives its rows.
        """
        rows, pinned, made = self.flood([0])
        self.assertEqual([s for _, s in pinned if s], [])
        self.assertEqual(len(rows), 3)
