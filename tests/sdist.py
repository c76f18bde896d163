"""
Build muxframe's sdist from a clean copy of the source tree.

Rules:
  - The copy holds git's tracked files when the tree is a git checkout, and
    otherwise (an unpacked sdist) every file but build products
    (C{build/}, C{dist/}, C{_trial_temp*}, C{*.egg-info}, caches): a stale
    C{*.egg-info} or stray file in the tree never reaches the sdist.
  - The sdist is built with setuptools' PEP 517 hook (what C{python -m
    build --sdist} calls), by the given Python, within a timeout.

C{python3 -m tests.sdist OUTDIR} builds one into OUTDIR and prints its path.
"""

import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_TIMEOUT = 300

_SKIPPED_DIRS = {".git", "build", "dist", "__pycache__", ".hypothesis", "node_modules"}


def sourceFiles(root=ROOT):
    """
    Return the source tree's files, relative to C{root}, with "/" separators.
    """
    if os.path.isdir(os.path.join(root, ".git")) or os.path.isfile(os.path.join(root, ".git")):
        done = subprocess.run(["git", "ls-files", "-z"], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60)
        if done.returncode == 0:
            return sorted(name for name in done.stdout.decode().split("\0")
                          if name and os.path.isfile(os.path.join(root, name)))
    files = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS
                         and not d.startswith("_trial_temp") and not d.endswith(".egg-info"))
        for name in names:
            if (name.endswith((".pyc", ".pyo")) or name == "dropin.cache"
                    or name.startswith("_trial_temp")):
                continue
            files.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    return sorted(files)


def buildSdist(outdir, python=sys.executable, root=ROOT):
    """
    Build the sdist of C{root} into C{outdir}; return its path.
    """
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="muxframe-sdist-") as scratch:
        tree = os.path.join(scratch, "src")
        for name in sourceFiles(root):
            target = os.path.join(tree, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(root, name), target)
        done = subprocess.run(
            [python, "-c", "import sys, setuptools.build_meta as b; "
             "print(b.build_sdist(sys.argv[1]))", os.path.abspath(outdir)],
            cwd=tree, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
        output = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            raise RuntimeError("building the sdist failed (exit %d):\n%s"
                               % (done.returncode, output[-4000:]))
    return os.path.join(outdir, output.strip().splitlines()[-1])


if __name__ == "__main__":
    print(buildSdist(sys.argv[1]))
