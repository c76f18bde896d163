"""
The repository's contract: how muxframe installs, and what CI runs.
"""

import configparser
import os
import re
import subprocess
import sys
from importlib import metadata

from twisted import copyright
from twisted.trial.unittest import SynchronousTestCase

import muxframe
from muxframe import tap

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
        The README opens with two commands, and .ci/run runs the second.
        """
        blocks = re.findall(r"```sh\n(.*?)\n```", read("README.md"), re.S)
        self.assertGreaterEqual(len(blocks), 2)
        demo, tests = blocks[0].strip(), blocks[1].strip()
        self.assertIn("muxframe.demo", demo)
        self.assertIn("twisted.trial tests", tests)
        self.assertIn(tests, read(".ci", "run"))


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
