"""
Find a CPython of a given minor version on this machine, for tests that need
another Python than the one running them (the real Blazeio peer needs 3.12;
CI's minimum-versions run uses the lowest Python muxframe supports).

Rules:
  - Candidates, in order: C{pythonX.Y} on C{PATH}; pyenv's installed
    versions (C{$PYENV_ROOT}, default C{~/.pyenv}), newest patch release
    first; C{/usr/local/bin} and C{/usr/bin}.
  - A candidate counts only if it runs, within a timeout, and says it is
    CPython X.Y with C{venv} and C{ensurepip} (a pyenv shim for a version
    that is not active, or Debian's Python without C{pythonX.Y-venv}, do
    not).
"""

import glob
import os
import shutil
import subprocess
import sys

# Seconds one candidate gets to say what it is.
PROBE_TIMEOUT = 20

_PROBE = (
    "import sys, platform, venv, ensurepip; "
    "print(platform.python_implementation(), '%d.%d' % sys.version_info[:2])"
)


def candidates(version):
    """
    Return the paths that may be CPython C{version} ("3.12"), in the order
    they are tried.
    """
    name = "python" + version
    found = []
    onPath = shutil.which(name)
    if onPath:
        found.append(onPath)
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    pattern = os.path.join(root, "versions", version + ".*", "bin", name)

    def patch(path):
        tail = path.split(os.sep)[-3].split(".")[2]
        return int(tail) if tail.isdigit() else -1

    found.extend(sorted(glob.glob(pattern), key=patch, reverse=True))
    found.extend(os.path.join(d, name) for d in ("/usr/local/bin", "/usr/bin"))
    unique = []
    for path in found:
        if path not in unique and os.access(path, os.X_OK):
            unique.append(path)
    return unique


def probe(path, version):
    """
    Return C{None} if C{path} is a working CPython C{version} with venv, or
    a one-line reason why not.
    """
    try:
        done = subprocess.run(
            [path, "-c", _PROBE], stdin=subprocess.DEVNULL,
            # Another Python must not see this one's module path (trial -j
            # sets PYTHONPATH for its workers).
            env={k: v for k, v in os.environ.items()
                 if k not in ("PYTHONPATH", "PYTHONHOME")},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "%s: %s" % (path, e)
    said = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        first = said.splitlines()[0] if said else "no output"
        return "%s: exit %d (%s)" % (path, done.returncode, first)
    if said != "CPython " + version:
        return "%s: is %s" % (path, said)
    return None


def findPython(version):
    """
    Return C{(path, rejected)}: the first working CPython C{version} (or
    C{None}), and why each earlier candidate was passed over.
    """
    rejected = []
    for path in candidates(version):
        reason = probe(path, version)
        if reason is None:
            return path, rejected
        rejected.append(reason)
    return None, rejected


if __name__ == "__main__":
    path, rejected = findPython(sys.argv[1] if len(sys.argv) > 1 else "3.12")
    for reason in rejected:
        print("passed over:", reason, file=sys.stderr)
    if path is None:
        sys.exit("no usable CPython found")
    print(path)
