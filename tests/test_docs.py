"""
The documentation's claims, checked: every Python example in docs/api.md
runs, and docs/protocols.md lists every setting with its default.
"""

import os
import re
import subprocess
import sys

from twisted.trial.unittest import TestCase

from muxframe.settings import SETTINGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name):
    with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as f:
        return f.read()


def examples(name):
    """
    Return the fenced python blocks of a doc that are whole programs (those
    that only list imports are skipped).
    """
    blocks = re.findall(r"```python\n(.*?)```", read(name), re.S)
    return [b for b in blocks if "print(" in b]


class ApiExamplesTests(TestCase):

    def test_examplesRun(self):
        """
        Each example in docs/api.md exits 0 and prints something.
        """
        blocks = examples("api.md")
        self.assertGreaterEqual(len(blocks), 5)
        env = dict(os.environ, PYTHONPATH=ROOT)
        for index, code in enumerate(blocks):
            result = subprocess.run(
                [sys.executable, "-c", code], env=env, cwd=ROOT,
                capture_output=True, timeout=60,
            )
            self.assertEqual(
                result.returncode, 0,
                "example %d failed:\n%s\n%s" % (index, code, result.stderr.decode()))
            self.assertTrue(result.stdout.strip(), "example %d printed nothing" % index)


class ProtocolsDocTests(TestCase):

    def test_everySettingDocumented(self):
        """
        docs/protocols.md has a row for each setting, with its default.
        """
        text = read("protocols.md")
        for name, spec in SETTINGS.items():
            match = re.search(r"^\| `%s` \| ([^|]+) \|" % name, text, re.M)
            self.assertIsNotNone(match, name)
            self.assertEqual(float(match.group(1)), float(spec[1]), name)


class SelfContainedTests(TestCase):
    """
    The documentation and the code's comments and docstrings speak of the
    repository only: nothing about the workplace it was written in.
    """

    # Things outside the repository: the workplace's specs folder, its
    # issue tracker.
    OUTSIDE = re.compile(
        r"shared/specs|\.\./shared|\bspecs/(?:bmp|mio|xtmp|bimip)\.md"
        r"|\bissues? (?:#?\d+)|\bissue #|\(issue\b|\bthe issue\b(?! tracker)", re.I)

    def files(self):
        for top in ("docs", "muxframe", "tests", "bench", "examples", "twisted"):
            for folder, dirs, names in os.walk(os.path.join(ROOT, top)):
                dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
                for name in names:
                    if name.endswith((".md", ".py", ".txt", ".rst")):
                        yield os.path.join(folder, name)
        yield os.path.join(ROOT, "README.md")

    def test_nothingOutsideTheRepository(self):
        """
        No file mentions the workplace's spec folder or issue numbers.
        """
        found = []
        for path in self.files():
            if path == os.path.abspath(__file__):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    if self.OUTSIDE.search(line):
                        found.append("%s:%d: %s" % (
                            os.path.relpath(path, ROOT), number, line.strip()))
        self.assertEqual(found, [])
