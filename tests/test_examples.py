"""
Run the README's first command (C{python3 -m muxframe.demo}) and every
example in C{examples/} (other than XTMP's) as a subprocess, and check what
they print.
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*argv, timeout=90):
    """
    Run C{python ARGV} from the repository root; return (exit code, output).
    Past C{timeout} seconds it is killed with every process it started
    (the demo's twistd servers included), and the test fails.
    """
    env = dict(os.environ, PYTHONPATH=REPO)
    process = subprocess.Popen(
        [sys.executable] + list(argv), cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError("%s still running after %d s (killed); its output:\n%s" % (
            " ".join(argv), timeout, output.decode("utf-8", "replace")))
    return process.returncode, output.decode("utf-8", "replace")


class DemoTests(SynchronousTestCase):
    """
    The README's first command.
    """

    def test_demo(self):
        """
        C{python3 -m muxframe.demo} runs a twistd server and client, pushes
        ordinary TCP traffic through the forward tunnel (over MIO, then
        BMP) and verifies it; then runs the XTMP server with keys from the
        CLI, storage and the admin service, exchanges messages over
        encrypted sessions (publish/subscribe, requests to a handler and to
        a session, a durable message to an offline entity), reads /health
        and /metrics with the token, drains it with SIGTERM; and exits 0.
        """
        code, output = run("-m", "muxframe.demo", timeout=150)
        self.assertEqual(code, 0, output)
        self.assertIn("twistd -n --pidfile= --logfile=server.log muxframe server", output)
        self.assertIn("twistd -n --pidfile= --logfile=client.log muxframe client", output)
        self.assertIn("over MIO", output)
        self.assertIn("over BMP", output)
        self.assertEqual(output.count("32 of 32 connections verified: 32.0 MiB"), 2, output)
        self.assertEqual(output.count("32 streams over 1 multiplexed connection(s)"), 2, output)
        self.assertEqual(output.count("client shut down cleanly, server shut down cleanly"), 2)

        self.assertIn("muxframe-xtmp keygen NAME -> NAME.pem, NAME.pub, for server, "
                      "alice, bob, carol", output)
        self.assertIn("muxframe-xtmp authorize NAME.pub --name NAME -f authorized_keys, "
                      "for alice, bob, carol", output)
        self.assertIn("twistd -n --pidfile= --logfile=xtmp.log muxframe xtmp --config "
                      "xtmp-server.yaml", output)
        self.assertRegex(output, r"alice session 0x[0-9a-f]{16}, "
                                 r"(AES-256-GCM|ChaCha20-Poly1305)\n")
        self.assertRegex(output, r"bob   session 0x[0-9a-f]{16}, ")
        self.assertIn("alice (demo.news.>) got 20 of 20, in order -> verified", output)
        self.assertIn("request to a server handler: bob -> type 0x60 (muxframe.xtmpdemo:digest)"
                      " -> sha256 %s... -> verified"
                      % (hashlib.sha256(b"the demo's request").hexdigest()[:16],), output)
        self.assertIn("request to a session: bob -> subject demo.upper -> alice answered "
                      "'HELLO ALICE' -> verified", output)
        self.assertIn("durable queue: bob -> carol, offline: stored at offset 1", output)
        self.assertIn("got 'a message for carol' from bob once -> verified; "
                      "bob's receipts: delivered, read", output)
        self.assertIn("carol's phone reconnected: nothing delivered again (read up to "
                      "offset 1)", output)
        self.assertIn("GET /health -> 200 healthy: 3 sessions, 3 connections, "
                      "2 subscriptions, encryption enabled", output)
        self.assertIn("GET /health without the token -> 401", output)
        self.assertIn("GET /metrics -> muxframe_xtmp_sessions_opened_total 4, "
                      "muxframe_xtmp_broker_deliveries_total ", output)
        self.assertIn("stopped with SIGTERM: xtmp exited 0, 3 sessions drained, "
                      "0 connections cut", output)
        self.assertIn("the clients' sessions closed cleanly", output)

        self.assertEqual(output.count("demo succeeded"), 3, output)
        self.assertTrue(output.rstrip().endswith(
            "muxframe demo: every part verified (tunnel over MIO, tunnel over BMP, "
            "XTMP server)"), output)

    def test_demoDetailed(self):
        """
        With few connections each gets its own verified line; C{--part
        tunnel} runs the tunnel only.
        """
        code, output = run("-m", "muxframe.demo", "--part=tunnel", "--framing=mio",
                           "--connections=4", "--mib=2")
        self.assertEqual(code, 0, output)
        self.assertEqual(output.count("-> verified"), 4, output)
        self.assertIn("4 of 4 connections verified: 8.0 MiB", output)
        self.assertNotIn("XTMP", output)
        self.assertNotIn("every part verified", output)

    def test_demoFailureSaysWhy(self):
        """
        When the XTMP server cannot start (here: its configuration names a
        handler that does not exist), the demo says why, keeps its logs
        and exits 1.
        """
        code, output = run("-c", "import sys; from muxframe import demo, xtmpdemo; "
                                 "xtmpdemo.CONFIG = xtmpdemo.CONFIG.replace("
                                 "'xtmpdemo:digest', 'xtmpdemo:missing'); "
                                 "sys.exit(demo.main(['--part', 'xtmp']))")
        self.assertEqual(code, 1, output)
        # twistd exits 1 on a usage error from Twisted 26.10 on, 0 before.
        self.assertRegex(output, r"demo failed: the xtmp server exited \([01]\) before "
                                 r"listening: twistd -n: handlers\.0x60: cannot import "
                                 r"muxframe\.xtmpdemo:missing")
        kept = re.search(r"demo FAILED \(logs in (\S+)\)", output)
        self.assertIsNotNone(kept, output)
        workdir = kept.group(1)
        self.assertTrue(os.path.exists(os.path.join(workdir, "xtmp-server.yaml")))
        shutil.rmtree(workdir)


class ExampleTests(SynchronousTestCase):
    """
    The examples.
    """

    def test_httpOverBMP(self):
        """
        A twisted.web site served on BMP streams, fetched with Agent through
        MultiplexedClientEndpoint.
        """
        code, output = run("-W", "error::DeprecationWarning", "examples/http_over_bmp.py", "7")
        self.assertEqual(code, 0, output)
        self.assertIn("GET /hello/stream-6 -> 200 hello stream-6 (stream io_", output)
        self.assertIn("7 requests over 1 BMP connection: ok", output)

    def test_ampOverMIO(self):
        """
        AMP RPC on MIO streams.
        """
        code, output = run("examples/amp_over_mio.py")
        self.assertEqual(code, 0, output)
        self.assertIn("Sum(a=300, b=2) = 302 on stream 7", output)
        self.assertIn("12 calls on 4 streams over 1 MIO connection: ok", output)

    def test_reverseTunnel(self):
        """
        An ordinary TCP client reaches a hidden service through a reverse
        tunnel.
        """
        code, output = run("examples/reverse_tunnel.py")
        self.assertEqual(code, 0, output)
        self.assertEqual(output.count("HIDDEN SERVICE SAYS: THROUGH THE TUNNEL"), 3)
        self.assertIn("3 connections through the reverse tunnel (3 streams opened by the "
                      "server): ok", output)


class FreePortTests(SynchronousTestCase):
    """
    L{muxframe.demo.freePort}, which the demo, the bench and the tests use
    to choose ports for the servers they start.
    """

    def test_neverTheSamePortTwice(self):
        """
        When the kernel hands the port it just gave out again (as it may
        once the probing socket is closed), C{freePort} tries again: two
        ports taken by one process differ.
        """
        from muxframe import demo

        given = iter([47001, 47001, 47001, 47002])

        class RepeatingSocket:
            def __init__(self):
                self.port = next(given)

            def bind(self, address):
                pass

            def getsockname(self):
                return ("127.0.0.1", self.port)

            def close(self):
                pass

        self.patch(demo, "_handedOut", set())
        self.patch(demo.socket, "socket", RepeatingSocket)
        self.assertEqual([demo.freePort(), demo.freePort()], [47001, 47002])

    def test_realPortsDiffer(self):
        """
        On the real loopback, many ports taken in a row are all different
        and all bindable.
        """
        from muxframe.demo import freePort

        import socket

        ports = [freePort() for _ in range(200)]
        self.assertEqual(len(set(ports)), 200)
        s = socket.socket()
        s.bind(("127.0.0.1", ports[-1]))
        s.close()
