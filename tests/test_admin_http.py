"""
The admin service in this process (no role subprocess): the mode of its
C{unix:} socket, JSON answers for paths below a leaf, and request bodies
nested too deeply to parse.
"""

import os
import shutil
import stat
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.python import usage
from twisted.trial.unittest import TestCase

from muxframe.admin.muxstatus import MultiplexerStatus
from muxframe.admin.service import AdminService
from muxframe.admin.settings import (
    OperatorSettings, checkAdminEndpoint, listeningDescription,
)

from tests.adminsupport import Admin


class SocketModeTests(TestCase):
    """
    A C{unix:} admin socket is its owner's only, unless C{mode=} says
    otherwise.
    """

    def socketPath(self):
        # AF_UNIX paths are short (108 bytes): not under _trial_temp.
        directory = tempfile.mkdtemp(prefix="mxadm")
        self.addCleanup(shutil.rmtree, directory, True)
        return os.path.join(directory, "admin.sock")

    @inlineCallbacks
    def listen(self, description):
        """
        Run an admin service on C{description} (without a token); the mode
        bits of its socket file.
        """
        path = self.socketPath()
        settings = OperatorSettings(description % {"path": path},
                                    summaryInterval=0)
        admin = AdminService(MultiplexerStatus("server", [], reactor),
                             settings, reactor)
        admin.startService()
        self.addCleanup(admin.stopService)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        code, report, _ = yield Admin(unix=path, token=None).get("/health")
        self.assertEqual(code, 200, report)
        return mode

    @inlineCallbacks
    def test_ownerOnlyByDefault(self):
        """
        Without C{mode=} the socket is mode 0600, whatever the umask.
        """
        previous = os.umask(0)
        self.addCleanup(os.umask, previous)
        mode = yield self.listen("unix:%(path)s")
        self.assertEqual(mode, 0o600)

    @inlineCallbacks
    def test_explicitMode(self):
        """
        An explicit C{mode=} (octal) is the socket's mode.
        """
        mode = yield self.listen("unix:%(path)s:mode=660")
        self.assertEqual(mode, 0o660)
        mode = yield self.listen("unix:address=%(path)s:mode=666")
        self.assertEqual(mode, 0o666)

    def test_listeningDescription(self):
        """
        C{mode=600} is added to a C{unix:} description without a mode, and
        only there.
        """
        for given, listened in [
                ("unix:/run/a.sock", "unix:/run/a.sock:mode=600"),
                ("unix:/run/a.sock:lockfile=0",
                 "unix:/run/a.sock:lockfile=0:mode=600"),
                ("unix:/run/a.sock:mode=660", "unix:/run/a.sock:mode=660"),
                ("unix:mode=640:address=/run/a.sock",
                 "unix:mode=640:address=/run/a.sock"),
                ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1")]:
            self.assertEqual(listeningDescription(given), listened)

    def test_unaddableMode(self):
        """
        A description whose last character escapes what would follow is a
        usage error, not a socket with a strange name and Twisted's mode.
        """
        self.assertRaises(ValueError, listeningDescription, "unix:/run/a\\")
        error = self.assertRaises(usage.UsageError, checkAdminEndpoint,
                                  "unix:/run/a\\", "--admin")
        self.assertIn("mode=", str(error))
        self.assertRaises(usage.UsageError, checkAdminEndpoint,
                          "unix:/run/a.sock:mode=999", "--admin")
