"""
The benchmark suite runs end to end: C{python3 -m bench.run --quick} with one
run per figure, in a subprocess, exits 0 and writes JSON naming every
scenario for both framings.  No timing is asserted.
"""

import json
import os
import subprocess
import sys
import tempfile

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCENARIOS = ["bulk", "many", "latency", "loaded", "churn", "memory", "scale"]


class QuickBenchTests(unittest.TestCase):
    def test_quickRun(self):
        """
        The quick suite exits 0 and its JSON has every scenario's figures
        for MIO and BMP, each with median, min and max.
        """
        try:
            import h2  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("the HTTP/2 baseline needs h2 (pip install '.[bench]')")
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "bench.json")
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.run(
            [sys.executable, "-m", "bench.run", "--quick", "--runs", "1", "--json", path],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=170,
        )
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
        with open(path) as f:
            result = json.load(f)
        for key in ("machine", "rows", "scenarios", "jobs", "mode"):
            self.assertIn(key, result)
        self.assertEqual(result["mode"], "quick")
        for scenario in SCENARIOS + ["sweep"]:
            self.assertIn(scenario, result["scenarios"], scenario)
        for scenario in SCENARIOS:
            for framing in ("mio", "bmp"):
                figures = result["scenarios"][scenario].get(framing)
                self.assertTrue(figures, "%s/%s has no figures" % (scenario, framing))
                for name, row in figures.items():
                    self.assertIsNotNone(row["value"], "%s/%s %s" % (scenario, framing, name))
                    for stat in ("median", "min", "max"):
                        self.assertIn(stat, row["value"])
        for row in result["rows"]:
            if row["scenario"] in ("bulk", "many") and row["framing"] in ("mio", "bmp"):
                self.assertIsNotNone(row["baseline"], row)
                self.assertIsNotNone(row["ratio"], row)
        # Bulk with 4 and 16 concurrent streams, beside as many raw TCP
        # connections, for both framings.
        for framing in ("mio", "bmp"):
            bulk = result["scenarios"]["bulk"][framing]
            for count in (4, 16):
                row = bulk["MB/s, %d streams" % count]
                self.assertIsNotNone(row["ratio"], row)
                runs = result["jobs"]["bulk/%s/x%d" % (framing, count)]["runs"]
                self.assertEqual([r["streams"] for r in runs], [count])
        # The auto-tuned window over time (MIO): a series of samples and
        # the window at the end of each phase.
        window = result["scenarios"]["window"]["mio"]
        for name in ("window KiB alone", "window KiB, shared", "window KiB, alone again",
                     "ms to largest"):
            self.assertIsNotNone(window[name]["value"], name)
        [run] = result["jobs"]["window/mio"]["runs"]
        self.assertGreater(len(run["series"]), 2)
        for t, size, received in run["series"]:
            self.assertGreaterEqual(size, 256 * 1024)
        self.assertIn("scenario", proc.stdout)


class WarmupTests(unittest.SynchronousTestCase):
    """
    The unreported warm-up run each job of the full suite gets first (its
    processes faked: nothing is run).
    """

    def test_byModule(self):
        """
        A job's warm-up has the quick sizes of the module its client runs:
        the loaded scenario's bulk-alone job (module bulk) warms up with a
        quick bulk run, not a full-size one with the loaded scenario's
        parameters merged in.
        """
        import io

        from bench import run

        class Display:
            def start(self, text):
                pass

            def done(self, text):
                pass

        class Reader:
            def next(self, deadline):
                return {"event": "warm"}

        class Client:
            def __init__(self):
                self.stdin = io.BytesIO()
                self.reader = Reader()

        jobs = {job.key: job for job in
                run.planJobs("full", ["loaded"], ["mio"], 1)}
        runner = run.Runner(list(jobs.values()), 60, None, self.mktemp(),
                            warmup=dict(run.SIZES["quick"]), display=Display())
        clients = {}

        def start(job, serve, first):
            clients[job.key] = Client()
            return run.Live(job, None, clients[job.key], None)

        self.patch(runner, "_start", start)
        self.patch(runner, "_one", lambda live, index: None)
        self.patch(runner, "_stopLive", lambda live: None)
        runner.runInterleaved([jobs["loaded/mio/alone"], jobs["loaded/mio"]])
        sent = {}
        for key, client in clients.items():
            line = client.stdin.getvalue().split(b"\n")[0]
            word, _, params = line.partition(b" ")
            self.assertEqual(word, b"warmup")
            sent[key] = json.loads(params)
        self.assertEqual(sent["loaded/mio/alone"], run.SIZES["quick"]["bulk"])
        self.assertEqual(sent["loaded/mio"], run.SIZES["quick"]["loaded"])


class PlanTests(unittest.SynchronousTestCase):
    """
    The jobs L{bench.run.planJobs} plans.
    """

    def test_loadedAlone(self):
        """
        The loaded scenario's bulk alone is a job of its own group, run by
        the bulk module against the loaded server role (its first stream
        a sink); the bulk scenario's job, whose figure it no longer uses,
        is not run for it.
        """
        from bench import run
        jobs = {job.key: job for job in
                run.planJobs("full", ["loaded"], ["mio", "bmp"], 0)}
        for framing in ("mio", "bmp"):
            alone = jobs["loaded/%s/alone" % framing]
            self.assertEqual((alone.scenario, alone.module), ("loaded", "bulk"))
            self.assertEqual(run._serverRole(alone), "loaded")
            self.assertEqual(alone.params, run.SIZES["full"]["bulk"])
            self.assertEqual(alone.runs, jobs["loaded/" + framing].runs)
            self.assertNotIn("bulk/" + framing, jobs)
