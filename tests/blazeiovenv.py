"""
The Python that runs the real Blazeio peer (tests/interop/blazeio_peer.py).

Rules:
  - C{MUXFRAME_BLAZEIO_PYTHON}, when set, names that Python; nothing is made.
  - Otherwise a CPython 3.12 is found (L{tests.interpreters}) and a virtualenv
    is made from it once, at C{build/interop-venv} in the repository, holding
    C{tests/interop/blazeio-requirements.txt} (wheels only).  Later runs reuse
    it while its stamp (those requirements and the base interpreter) matches.
    Making it holds a lock, so concurrent test runs wait and then reuse it;
    the stamp is written last, so a venv left half made is made again.
  - Either way the Python must import Blazeio's multiplexer and report the
    pinned blazeio version before it is used.
  - Every step has a timeout; a failure names the command, the time it took
    and the end of its output.
  - No CPython 3.12 is L{PeerUnavailable} (the real-peer tests skip saying how
    to get one, except under CI, where L{inCI} and they fail); anything else
    is L{PeerSetupError}.  The outcome, good or bad, is kept for the rest of
    the process.

C{python3 -m tests.blazeiovenv} makes the venv if needed and prints its
Python (C{.ci/run} does so before the suite, so a broken peer stops CI early).
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

from tests import interpreters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(ROOT, "tests", "interop", "blazeio-requirements.txt")
VENV = os.path.join(ROOT, "build", "interop-venv")
STAMP = os.path.join(VENV, "muxframe-stamp.json")
ENV_VARIABLE = "MUXFRAME_BLAZEIO_PYTHON"
PYTHON_VERSION = "3.12"

# Upper bounds, in seconds, of each step (making the venv takes about 15 s).
VENV_TIMEOUT = 180
PIP_TIMEOUT = 600
CHECK_TIMEOUT = 60
LOCK_TIMEOUT = PIP_TIMEOUT + VENV_TIMEOUT

HOW_TO_GET_ONE = (
    "no CPython %s here, so the real Blazeio peer (a cp312 wheel) cannot run: "
    "install one (pyenv install 3.12, or your system's python3.12 with its "
    "venv module) and run the tests again; or set %s to a Python that has "
    "blazeio 4.3.4 installed (see tests/interop/README.md)"
    % (PYTHON_VERSION, ENV_VARIABLE))

_CHECK = (
    "import importlib.metadata, Blazeio.Protocols.multiplexer; "
    "print('blazeio', importlib.metadata.version('blazeio'))"
)


class PeerUnavailable(Exception):
    """
    No Python that can run Blazeio is to be had on this machine.
    """


class PeerSetupError(Exception):
    """
    Making or checking the Blazeio peer's Python failed.
    """


def inCI():
    """
    Whether this runs under CI (C{CI} set, and not to "", "0" or "false"),
    where the real-peer tests must never skip.
    """
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def pinnedVersion():
    """
    Return the blazeio version the requirements file pins.
    """
    with open(REQUIREMENTS, encoding="utf-8") as f:
        match = re.search(r"^blazeio==(\S+)", f.read(), re.M)
    if match is None:
        raise PeerSetupError("%s pins no blazeio version" % (REQUIREMENTS,))
    return match.group(1)


def run(argv, timeout, what):
    """
    Run C{argv}; return its output, or raise L{PeerSetupError} naming
    C{what} and ending with the output.
    """
    started = time.monotonic()
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.pop("PYTHONPATH", None)
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        output = e.output or b""
        raise PeerSetupError("%s: no result within %d s: %s\n%s" % (
            what, timeout, " ".join(argv), _tail(output)))
    except OSError as e:
        raise PeerSetupError("%s: cannot run %s: %s" % (what, argv[0], e))
    if done.returncode != 0:
        raise PeerSetupError("%s failed (exit %d after %.1f s): %s\n%s" % (
            what, done.returncode, time.monotonic() - started, " ".join(argv),
            _tail(done.stdout)))
    return done.stdout.decode("utf-8", "replace")


def _tail(output, limit=3000):
    text = output.decode("utf-8", "replace")
    return text if len(text) <= limit else "...\n" + text[-limit:]


def check(python):
    """
    Raise L{PeerSetupError} unless C{python} imports Blazeio's multiplexer
    and reports the pinned blazeio version.
    """
    output = run([python, "-c", _CHECK], CHECK_TIMEOUT,
                 "checking the Blazeio peer's Python %s" % (python,))
    said = output.strip().splitlines()[-1:] or [""]
    wanted = "blazeio " + pinnedVersion()
    if said[0] != wanted:
        raise PeerSetupError("%s reports %r, not %r" % (python, said[0], wanted))


def _stampFor(base):
    with open(REQUIREMENTS, "rb") as f:
        requirements = hashlib.sha256(f.read()).hexdigest()
    return {"requirements": requirements, "base": os.path.realpath(base)}


def _readStamp():
    try:
        with open(STAMP, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class _Lock:
    """
    An exclusive lock on a file beside the venv, given up at exit.
    """

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise PeerSetupError("%s stayed locked for %d s (another test "
                                         "run making the venv?)" % (self.path, self.timeout))
                time.sleep(0.2)

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def makeVenv(base, log=lambda message: None):
    """
    Return the venv's Python, made from the interpreter C{base} unless a
    matching one is there already.
    """
    python = os.path.join(VENV, "bin", "python")
    stamp = _stampFor(base)
    with _Lock(VENV + ".lock", LOCK_TIMEOUT):
        if _readStamp() == stamp:
            try:
                check(python)
                return python
            except PeerSetupError as e:
                log("%s is broken, making it again: %s" % (VENV, e))
        started = time.monotonic()
        log("making %s from %s" % (VENV, base))
        shutil.rmtree(VENV, ignore_errors=True)
        run([base, "-m", "venv", VENV], VENV_TIMEOUT, "making the Blazeio venv")
        run([python, "-m", "pip", "install", "--only-binary=:all:", "--timeout", "60",
             "-r", REQUIREMENTS], PIP_TIMEOUT, "installing Blazeio into the venv")
        check(python)
        with open(STAMP, "w", encoding="utf-8") as f:
            json.dump(stamp, f)
        log("made %s in %.1f s" % (VENV, time.monotonic() - started))
        return python


def _findOrMake(log):
    given = os.environ.get(ENV_VARIABLE)
    if given:
        check(given)
        return given
    base, rejected = interpreters.findPython(PYTHON_VERSION)
    if base is None:
        tried = "; ".join(rejected) or "no python%s anywhere" % (PYTHON_VERSION,)
        raise PeerUnavailable("%s (tried: %s)" % (HOW_TO_GET_ONE, tried))
    return makeVenv(base, log)


_outcome = None


def peerPython(log=lambda message: None):
    """
    Return the path of a Python that runs the real Blazeio peer, making it
    the first time; raise L{PeerUnavailable} or L{PeerSetupError} (again on
    every later call) if there is none.
    """
    global _outcome
    if _outcome is None:
        try:
            _outcome = (True, _findOrMake(log))
        except (PeerUnavailable, PeerSetupError) as e:
            _outcome = (False, e)
    ok, value = _outcome
    if not ok:
        raise value
    return value


def main():
    started = time.monotonic()
    try:
        python = peerPython(lambda message: print("blazeiovenv:", message, file=sys.stderr))
    except (PeerUnavailable, PeerSetupError) as e:
        sys.exit("blazeiovenv: %s" % (e,))
    print("blazeiovenv: ready in %.1f s" % (time.monotonic() - started,), file=sys.stderr)
    print(python)


if __name__ == "__main__":
    main()
