"""
The benchmark suite's progress display (C{bench/progress.py}): a live bar
naming the run in progress and its time, lines above it, or lines only;
and C{python3 -m bench.run --progress bar} showing it while it runs.
"""

import io
import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from bench.progress import Progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class ProgressTests(SynchronousTestCase):
    def test_lines(self):
        out, err = io.StringIO(), io.StringIO()
        progress = Progress(2, "lines", stream=err, out=out)
        progress.start("bulk/mio run 1/2")
        progress.done("[1/2] bulk/mio run 1/2  812 MB/s")
        progress.close()
        self.assertEqual(out.getvalue(), "[1/2] bulk/mio run 1/2  812 MB/s\n")
        self.assertEqual(err.getvalue(), "")

    def test_autoIsLinesOffATerminal(self):
        progress = Progress(1, "auto", stream=io.StringIO(), out=io.StringIO())
        self.addCleanup(progress.close)
        self.assertIsNone(progress.bar)

    def test_bar(self):
        clock = FakeClock()
        out, err = io.StringIO(), io.StringIO()
        progress = Progress(3, "bar", stream=err, out=out, clock=clock)
        self.addCleanup(progress.close)
        progress.start("bulk/mio run 1/3")
        clock.now += 12
        self.assertEqual(progress.status(), "bulk/mio run 1/3 (12 s)")
        progress._refresh()
        self.assertIn("bulk/mio run 1/3 (12 s)", err.getvalue())
        self.assertIn("0/3 runs", err.getvalue())
        progress.done("[1/3] bulk/mio run 1/3  812 MB/s")
        self.assertIn("812 MB/s", out.getvalue())
        self.assertEqual(progress.bar.n, 1)
        self.assertIn("1/3 runs", err.getvalue())
        self.assertEqual(progress.status(), "between runs")

    def test_suiteShowsProgress(self):
        """
        A short real run with --progress bar draws the bar on stderr,
        naming the runs, and prints the run lines and the table on stdout.
        """
        path = os.path.join(tempfile.mkdtemp(), "bench.json")
        env = dict(os.environ, PYTHONPATH=ROOT)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.run", "--quick", "--runs", "1",
             "--scenario", "latency", "--framing", "mio", "--progress", "bar",
             "--json", path], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stdout[-2000:] + proc.stderr[-2000:])
        self.assertIn("muxframe bench: 2/2 runs", proc.stderr)
        self.assertIn("latency/mio run 1/1", proc.stderr)
        self.assertIn("latency/raw", proc.stdout)
        self.assertIn("scenario", proc.stdout)
