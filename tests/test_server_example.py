"""
The example XTMP server application (C{examples/xtmp_server/}) runs end to
end under twistd and prints what it claims.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExampleTests(SynchronousTestCase):
    def test_bundlesApplication(self):
        """
        Handlers (one blocking), status streams to a wildcard subscriber,
        a request served by another client, typed refusals, and a SIGTERM
        stop with exit status 0.
        """
        process = subprocess.run(
            [sys.executable, os.path.join("examples", "xtmp_server", "run.py")],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=120,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = process.stdout.decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, output)
        for line in [
                "submitted 2 transactions: {'bundle': 'b1', 'status': 'accepted'}",
                "stream bundles.b1.status: accepted",
                "stream bundles.b2.status: confirmed",
                "status of b1: {'id': 'b1', 'status': 'confirmed', "
                "'owner': 'wallet', 'transactions': 2}",
                "fee quote from the fees client: {'fee': 16}",
                "status of b99 refused: APPLICATION_ERROR",
                "request to fees.quote.admin refused: PERMISSION_DENIED",
                "server stopped by SIGTERM, exit status 0"]:
            self.assertIn(line, output)
