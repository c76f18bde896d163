"""
Run the README's first command (C{python3 -m muxframe.demo}) and every
example in C{examples/} (other than XTMP's) as a subprocess, and check what
they print.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*argv, timeout=90):
    """
    Run C{python ARGV} from the repository root; return (exit code, output).
    """
    env = dict(os.environ, PYTHONPATH=REPO)
    process = subprocess.run(
        [sys.executable] + list(argv), cwd=REPO, env=env, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return process.returncode, process.stdout.decode("utf-8", "replace")


class DemoTests(SynchronousTestCase):
    """
    The README's first command.
    """

    def test_demo(self):
        """
        C{python3 -m muxframe.demo} runs a twistd server and client, pushes
        ordinary TCP traffic through the forward tunnel, verifies it, stops
        both and exits 0.
        """
        code, output = run("-m", "muxframe.demo")
        self.assertEqual(code, 0, output)
        self.assertIn("twistd -n --pidfile= --logfile=server.log muxframe server", output)
        self.assertIn("twistd -n --pidfile= --logfile=client.log muxframe client", output)
        self.assertIn("over MIO", output)
        self.assertIn("over BMP", output)
        self.assertEqual(output.count("32 of 32 connections verified: 32.0 MiB"), 2, output)
        self.assertEqual(output.count("32 streams over 1 multiplexed connection(s)"), 2, output)
        self.assertEqual(output.count("client shut down cleanly, server shut down cleanly"), 2)
        self.assertEqual(output.count("demo succeeded"), 2, output)

    def test_demoDetailed(self):
        """
        With few connections each gets its own verified line.
        """
        code, output = run("-m", "muxframe.demo", "--framing=mio", "--connections=4",
                           "--mib=2")
        self.assertEqual(code, 0, output)
        self.assertEqual(output.count("-> verified"), 4, output)
        self.assertIn("4 of 4 connections verified: 8.0 MiB", output)

    def test_demoBMP(self):
        """
        The demo over BMP, with other sizes.
        """
        code, output = run("-m", "muxframe.demo", "--framing=bmp", "--connections=6",
                           "--mib=1")
        self.assertEqual(code, 0, output)
        self.assertIn("over BMP", output)
        self.assertIn("6 of 6 connections verified", output)


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
