"""
docs/xtmp.md's claims, checked: its Python examples and the programs in
examples/xtmp_*.py run; every error code and setting it lists matches the
code; bench/bench_xtmp.py runs end to end (no timing is asserted).
"""

import json
import os
import re
import subprocess
import sys

from twisted.trial.unittest import TestCase

from muxframe.xtmp import Settings, XTMPErrorCode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def run(args, timeout=60):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"]
                                if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


class DocsTests(TestCase):
    """
    docs/xtmp.md matches the implementation.
    """

    def test_examplesRun(self):
        blocks = [b for b in re.findall(r"```python\n(.*?)```",
                                        read("docs", "xtmp.md"), re.S)
                  if "print(" in b]
        self.assertEqual(len(blocks), 3)
        for index, code in enumerate(blocks):
            result = run(["-c", code])
            self.assertEqual(result.returncode, 0,
                             "block %d:\n%s" % (index, result.stderr))
            self.assertTrue(result.stdout.strip())

    def test_errorCodesTable(self):
        text = read("docs", "xtmp.md")
        rows = dict(re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", text, re.M))
        self.assertEqual({int(k): v for k, v in rows.items()},
                         {c.value: c.name for c in XTMPErrorCode})

    def test_settingsListed(self):
        text = read("docs", "xtmp.md")
        for name in vars(Settings):
            if name.startswith("_") or callable(getattr(Settings, name)):
                continue
            match = re.search(r"`%s=([^`]+)`" % name, text)
            self.assertIsNotNone(match, name)
            self.assertEqual(match.group(1), repr(getattr(Settings, name))
                             .replace(".0", ""), name)


class ExampleProgramTests(TestCase):
    """
    The example programs run and print what they claim.
    """

    def test_echo(self):
        result = run(["examples/xtmp_echo.py"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("reply: HELLO, XTMP", result.stdout)
        self.assertIn("server got: delivered exactly once", result.stdout)

    def test_mux(self):
        result = run(["examples/xtmp_mux.py"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.count(": session 0x"), 2)
        self.assertIn("received: extra! extra!", result.stdout)


class BenchSmokeTests(TestCase):
    """
    The benchmark runs with tiny counts and reports every figure.
    """

    def test_quick(self):
        """
        A quick run with send buffers far smaller than what the sender
        has to send: the bench paces itself by backpressure (it used to
        die with SendQueueFull inside its pump, then ReactorNotRunning and
        a KeyError).
        """
        result = run(["bench/bench_xtmp.py", "--quick", "--sessions", "3",
                      "--handshakes", "3", "--max-queued-bytes", "65536",
                      "--json"],
                     timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        figures = json.loads(result.stdout)
        for key in ["baseline_msgs_per_s", "xtmp_aesgcm_msgs_per_s",
                    "xtmp_chacha_msgs_per_s", "engine_msgs_per_s",
                    "handshake_cpu_ms_client", "handshake_cpu_ms_server",
                    "idle_session_bytes_xtmp",
                    "idle_session_bytes_baseline"]:
            self.assertGreater(figures[key], 0, key)
