"""
The repository's contract: how muxframe installs, and what CI runs.
"""

import configparser
import os
import re
import subprocess
import sys
import tarfile
from importlib import metadata

from twisted import copyright
from twisted.trial.unittest import SynchronousTestCase

import muxframe
from muxframe import tap
from tests import sdist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


class PackagingTests(SynchronousTestCase):

    def test_setupCfgPackages(self):
        """
        setup.cfg ships muxframe and the twisted.plugins drop-in, and
        depends on Twisted with TLS, cryptography >= 48 and zope.interface.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        packages = config["options"]["packages"].split()
        self.assertIn("muxframe", packages)
        self.assertIn("twisted.plugins", packages)
        requires = config["options"]["install_requires"]
        self.assertIn("twisted[tls]", requires)
        self.assertIn("cryptography>=48", requires)
        self.assertIn("zope.interface", requires)

    def test_noTwistedInitModules(self):
        """
        twisted/ and twisted/plugins/ have no __init__.py, which would
        shadow Twisted's own package once installed; dropin.cache is
        ignored by git.
        """
        self.assertFalse(os.path.exists(os.path.join(ROOT, "twisted", "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(ROOT, "twisted", "plugins", "__init__.py")))
        self.assertIn("twisted/plugins/dropin.cache", read(".gitignore").split())

    def test_installedDistribution(self):
        """
        Where muxframe is installed (as README's commands do), the
        distribution holds the package and the plugin, and nothing that
        would replace Twisted's own files.
        """
        try:
            files = metadata.files("muxframe")
        except metadata.PackageNotFoundError:
            raise self.skipTest("muxframe is not installed as a distribution")
        names = {str(f).replace(os.sep, "/") for f in files}
        self.assertIn("muxframe/__init__.py", names)
        self.assertIn("muxframe/multiplexer.py", names)
        self.assertIn("twisted/plugins/muxframe_plugin.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)

    def test_ciRunsReadmeTestCommand(self):
        """
        The README opens with two commands; .ci/run makes the real Blazeio
        peer first, then runs the second, then the minimum-versions run.
        """
        blocks = re.findall(r"```sh\n(.*?)\n```", read("README.md"), re.S)
        self.assertGreaterEqual(len(blocks), 2)
        demo, tests = blocks[0].strip(), blocks[1].strip()
        self.assertIn("muxframe.demo", demo)
        self.assertRegex(tests, r"python3 -m twisted\.trial (-j ?\d+ )?tests$")
        run = read(".ci", "run")
        self.assertIn(tests, run)
        self.assertIn("python3 -m tests.blazeiovenv", run)
        self.assertIn(".ci/minimum_versions.py", run)
        calls = [run.find(call) for call in (
            'timed "needs" needs', 'timed "README test command" readme_tests',
            'timed "minimum versions" minimum_versions')]
        self.assertNotIn(-1, calls)
        self.assertEqual(calls, sorted(calls))

    def test_license(self):
        """
        LICENSE holds the MIT license that setup.cfg declares.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        self.assertEqual(config["metadata"]["license"], "MIT")
        self.assertEqual(config["metadata"]["license_files"], "LICENSE")
        self.assertIn("License :: OSI Approved :: MIT License",
                      config["metadata"]["classifiers"])
        text = read("LICENSE")
        self.assertTrue(text.startswith("MIT License\n"))
        self.assertIn("Permission is hereby granted, free of charge", text)

    def test_projectURLs(self):
        """
        setup.cfg names the documentation, the source and the issue tracker.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        urls = dict(line.split(" = ", 1) for line in
                    config["metadata"]["project_urls"].strip().splitlines())
        self.assertEqual(sorted(urls), ["Documentation", "Issues", "Source"])
        for url in list(urls.values()) + [config["metadata"]["url"]]:
            self.assertRegex(url, r"^https://\S+$")

    def test_constraintsPinEveryFloor(self):
        """
        Every dependency (install_requires and the test extra) has a floor,
        and .ci/constraints-min.txt pins exactly those floors, so the
        minimum-versions run tests what setup.cfg promises.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        declared = {}
        for line in (config["options"]["install_requires"].split("\n")
                     + config["options.extras_require"]["test"].split("\n")):
            if not line.strip():
                continue
            requirement, _, marker = line.partition(";")
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?>=([0-9.]+)",
                                 requirement.strip())
            self.assertIsNotNone(match, "%r has no >= floor" % (line,))
            if marker.strip() and not _markerHolds(marker, _lowestPython()):
                # Not installed on the lowest Python: nothing to pin there.
                continue
            declared[canonical(match.group(1))] = release(match.group(3))
        pinned = {}
        for line in read(".ci", "constraints-min.txt").splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, version = line.split("==")
                pinned[canonical(name)] = release(version)
        self.assertEqual(pinned, declared)

    def test_pythonRequiresFloorTested(self):
        """
        python_requires gives the floor the minimum-versions run uses.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        self.assertRegex(config["options"]["python_requires"], r"^>=\d+\.\d+$")
        self.assertIn("python_requires", read(".ci", "minimum_versions.py"))


def _markerHolds(marker, python):
    """
    Whether an environment marker made of C{and}-joined clauses holds for
    Python C{python} (a C{(major, minor)} tuple); only C{python_version}
    clauses are evaluated (the others describe the platform, the same for
    every run here).
    """
    operators = {"==": tuple.__eq__, "!=": tuple.__ne__, ">=": tuple.__ge__,
                 "<=": tuple.__le__, ">": tuple.__gt__, "<": tuple.__lt__}
    for clause in marker.split(" and "):
        match = re.fullmatch(r'\s*python_version\s*(==|!=|>=|<=|>|<)\s*"([0-9.]+)"\s*',
                             clause)
        if match and not operators[match.group(1)](
                python, tuple(int(part) for part in match.group(2).split("."))):
            return False
    return True


def _lowestPython():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    floor = config["options"]["python_requires"].strip().lstrip(">=")
    return tuple(int(part) for part in floor.split("."))


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version):
    """
    A version as a tuple of three ints: "24.11" and "24.11.0" are equal.
    """
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


class SdistTests(SynchronousTestCase):
    """
    The sdist holds the whole source tree (the tests, docs, examples and
    bench included) and no build products.
    """

    def test_listing(self):
        """
        Every source file (git's tracked files, or, in an unpacked sdist,
        its files) is in the sdist; nothing built or cached is.
        """
        tarball = sdist.buildSdist(self.mktemp())
        with tarfile.open(tarball) as tar:
            names = tar.getnames()
        top = "muxframe-%s/" % (muxframe.__version__,)
        self.assertTrue(all(n == top[:-1] or n.startswith(top) for n in names), names[:5])
        files = {n[len(top):] for n in names if n.startswith(top)}
        missing = sorted(set(sdist.sourceFiles()) - files)
        self.assertEqual(missing, [])
        for required in ("LICENSE", "README.md", "setup.cfg", "pyproject.toml",
                         ".ci/run", ".ci/constraints-min.txt", "docs/api.md",
                         "examples/xtmp_echo.py", "bench/run.py", "tests/test_packaging.py",
                         "tests/interop/blazeio_peer.py", "tests/interop/mio_peer/main.go",
                         "twisted/plugins/muxframe_plugin.py", "muxframe/multiplexer.py"):
            self.assertIn(required, files)
        built = [n for n in files if re.search(
            r"(^|/)(build|dist|_trial_temp[^/]*|__pycache__|node_modules|\.hypothesis)/"
            r"|\.py[co]$|dropin\.cache$", n)]
        self.assertEqual(built, [])


def runTool(testCase, argv):
    """
    Run a command line with this repository's muxframe first on the path;
    return its exit status and output.
    """
    env = dict(os.environ, PYTHONPATH=ROOT)
    cwd = testCase.mktemp()
    os.makedirs(cwd)
    done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=60)
    return done.returncode, done.stdout.decode("utf-8", "replace")


class VersionTests(SynchronousTestCase):
    """
    C{--version} names muxframe's version, under both Twisted runners.
    """

    def assertVersion(self, argv):
        code, output = runTool(self, argv)
        self.assertEqual((code, output.splitlines()[-1:]),
                         (0, ["muxframe %s (Twisted %s)" % (
                             muxframe.__version__, copyright.version)]), output)

    def test_twistd(self):
        """
        C{twistd -n muxframe --version} and C{twistd -n muxframe server
        --version} print muxframe's version.
        """
        self.assertVersion(tap.twistdCommand("-n", "muxframe", "--version"))
        self.assertVersion(tap.twistdCommand("-n", "muxframe", "server", "--version"))

    def test_twist(self):
        """
        C{twist muxframe --version} prints muxframe's version.
        """
        self.assertVersion([sys.executable, "-m", "twisted", "muxframe", "--version"])

    def test_setupCfgVersion(self):
        """
        The distribution's version is muxframe.__version__, stated once.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        self.assertEqual(config["metadata"]["version"], "attr: muxframe.__version__")
