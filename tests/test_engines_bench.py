"""
bench/bench_engines.py runs end to end in quick mode, in a subprocess, and
reports every figure with its baseline.  No timing is asserted.
"""

import json
import os
import subprocess
import sys

from twisted.trial import unittest

from tests.redisserver import findRedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class QuickEngineBenchTests(unittest.TestCase):

    def test_quickRun(self):
        """
        The quick run exits 0 and its JSON has the embedded figures and, with
        a Redis server binary, the Redis ones.
        """
        path = os.path.abspath(self.mktemp())
        env = dict(os.environ)
        extra = env.get("PYTHONPATH")
        env["PYTHONPATH"] = ROOT + (os.pathsep + extra if extra else "")
        proc = subprocess.run(
            [sys.executable, "-m", "bench.bench_engines", "--quick", "--json", path],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
        with open(path) as f:
            results = json.load(f)
        keys = ["embedded_append_msgs_per_s", "embedded_fsyncs_per_s",
                "embedded_append_batched_msgs_per_s",
                "baseline_batch_msgs_per_s", "baseline_batch_fsyncs_per_s",
                "embedded_replay_msgs_per_s", "embedded_replay_interleaved_msgs_per_s",
                "baseline_scan_msgs_per_s", "embedded_recovery_msgs_per_s",
                "embedded_fanout_notices_per_s", "baseline_callbacks_per_s",
                "embedded_append_cpu_us", "embedded_replay_cpu_us", "embedded_recovery_cpu_us",
                "baseline_null_append_msgs_per_s", "baseline_null_append_cpu_us",
                "embedded_append_turns_msgs_per_s", "embedded_append_turns_cpu_us",
                "embedded_append_turns_records_per_fsync"]
        if findRedisServer() is not None:
            keys += ["redis_append_msgs_per_s", "redis_baseline_xadd_msgs_per_s",
                     "redis_replay_msgs_per_s", "redis_fanout_notices_per_s"]
        for key in keys:
            self.assertGreater(results[key], 0, key)
        self.assertIn("embedded appends/s", proc.stdout)
        self.assertIn("embedded process CPU per record", proc.stdout)
        # The garbage collector settings of the xtmp role, by default.
        self.assertTrue(results["gc"].startswith("server"), results["gc"])
