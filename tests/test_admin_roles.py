"""
The operator surfaces of the real multiplexer roles: C{twistd -n muxframe
server} and C{client} as subprocesses with admin endpoints: health (the
client degraded without its connection, the server 503 while it drains a
stream), metrics parsed by prometheus_client's parser moving with a
tunneled connection, the dashboard's multiplexer queries, and the
connections API.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from muxframe.admin.metrics import CATALOGUE

from tests.adminsupport import (
    Admin, dashboardMetrics, familyOf, sample, waitFor, writeToken,
)
from tests.test_tap import (
    Holder, assertStoppedCleanly, freePort, spawnTwistd, waitForPort,
)
from tests.test_tunnel import TCPClient


class MultiplexerRoleTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_serverAndClient(self):
        directory = self.mktemp()
        import os
        os.makedirs(directory)
        token = os.path.abspath(writeToken(directory))
        port, local = freePort(), freePort()
        serverAdmin, clientAdmin = freePort(), freePort()
        server = spawnTwistd(
            self, "server", "server", "--endpoint=tcp:%d:interface=127.0.0.1"
            % (port,), "--echo", "--drainTimeout=20",
            "--admin=tcp:%d:interface=127.0.0.1" % (serverAdmin,),
            "--admin-token-file=" + token, "--summary-interval=0.3")
        client = spawnTwistd(
            self, "client", "client", "--endpoint=tcp:127.0.0.1:%d" % (port,),
            "--local=tcp:%d:interface=127.0.0.1" % (local,),
            "--admin=tcp:%d:interface=127.0.0.1" % (clientAdmin,),
            "--admin-token-file=" + token, "--admin-public-metrics")
        for number in (port, serverAdmin, local, clientAdmin):
            yield waitForPort(number, server, client)
        serverAPI, clientAPI = Admin(serverAdmin), Admin(clientAdmin)

        code, body, _ = yield serverAPI.get("/health", token=False)
        self.assertEqual(code, 401)
        report = yield waitFor(lambda: clientAPI.get("/health").addCallback(
            lambda r: r[1] if r[0] == 200 else None), what="the client healthy")
        self.assertEqual((report["role"], report["active_connections"]),
                         ("client", 1))
        # (waitForPort's probes may have made streams: compare with now.)
        before = yield serverAPI.scrape()
        clientBefore = yield clientAPI.scrape(token=False)

        # A tunneled connection: client's --local -> stream -> echo.
        payload = b"p" * 100000
        protocol = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", local), TCPClient(payload))
        data, _ = yield protocol.done
        self.assertEqual(data, payload)

        endpoint = "mio:tcp:%d:interface=127.0.0.1" % (port,)
        def moved(families, name, **labels):
            return sample(families, name, **labels) - sample(before, name,
                                                             **labels)

        after = yield waitFor(lambda: serverAPI.scrape().addCallback(
            lambda f: f if sample(f, "muxframe_mux_streams_active",
                                  endpoint=endpoint) == 0 and
            moved(f, "muxframe_mux_bytes", endpoint=endpoint,
                  direction="sent") == len(payload) else None),
            what="the stream in metrics")
        self.assertGreaterEqual(moved(after, "muxframe_mux_streams_opened",
                                      endpoint=endpoint, by="peer"), 1)
        for direction in ("received", "sent"):
            self.assertEqual(sample(after, "muxframe_mux_bytes",
                                    endpoint=endpoint, direction=direction)
                             - sample(before, "muxframe_mux_bytes",
                                      endpoint=endpoint, direction=direction),
                             len(payload))
        self.assertEqual(sample(after, "muxframe_mux_connections_active",
                                endpoint=endpoint), 1)
        clientSide = yield clientAPI.scrape(token=False)
        tunnel = "tcp:%d:interface=127.0.0.1" % (local,)
        labels = dict(kind="forward tunnel", endpoint=tunnel)
        self.assertGreaterEqual(
            sample(clientSide, "muxframe_tunnel_connections", outcome="spliced",
                   **labels) - sample(clientBefore, "muxframe_tunnel_connections",
                                      outcome="spliced", **labels), 1)
        for direction in ("in", "out"):
            self.assertEqual(
                sample(clientSide, "muxframe_tunnel_bytes", direction=direction,
                       **labels) - sample(clientBefore, "muxframe_tunnel_bytes",
                                          direction=direction, **labels),
                len(payload))
        self.assertGreaterEqual(sample(
            clientSide, "muxframe_mux_streams_opened",
            endpoint="mio:tcp:127.0.0.1:%d" % (port,), by="local"), 1)
        # The dashboard's multiplexer queries name metrics both roles export.
        for name in dashboardMetrics():
            metric = CATALOGUE[familyOf(name, CATALOGUE)]
            if "server" in metric.roles:
                self.assertIsNotNone(familyOf(name, after), name)
                self.assertIsNotNone(familyOf(name, clientSide), name)

        yield waitFor(lambda: "server summary: 1 connections, 1 sessions"
                      in server.text(), what="the summary line")
        code, listing, _ = yield serverAPI.get("/api/v1/connections")
        self.assertEqual((code, listing["count"]), (200, 1))
        self.assertEqual(listing["connections"][0]["endpoint"], endpoint)
        code, stats, _ = yield clientAPI.get("/api/v1/stats")
        self.assertGreaterEqual(stats["endpoints"][0]["tunnels"][0]["opened"], 1)
        code, body, _ = yield serverAPI.get("/api/v1/sessions")
        self.assertEqual(code, 404)

        # A held tunneled connection keeps the server draining after
        # SIGTERM: 503 "draining" until it ends.
        holder = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", local), Holder())
        holder.transport.write(b"ping")
        yield waitFor(lambda: holder.received, what="the echo")
        server.transport.signalProcess("TERM")
        code, report, _ = yield waitFor(lambda: serverAPI.get("/health").addCallback(
            lambda r: r if r[0] == 503 else None), what="503 while draining")
        self.assertEqual((report["status"], report["active_streams"]),
                         ("draining", 1))
        holder.transport.loseConnection()
        yield server.ended
        assertStoppedCleanly(self, server)
        # Without its server the client is degraded.
        code, report, _ = yield waitFor(lambda: clientAPI.get("/health").addCallback(
            lambda r: r if r[0] == 503 else None), what="the client degraded")
        self.assertEqual(report["status"], "degraded")
        self.assertIn("no mio:tcp:127.0.0.1:%d connection is up" % (port,),
                      report["reasons"])
        client.transport.signalProcess("TERM")
        yield client.ended
        assertStoppedCleanly(self, client)

    def test_tokensReloadedOnSIGHUP(self):
        """
        A multiplexer role reads --admin-token-file again on SIGHUP, as the
        xtmp role does: a rotated token is in force at once and the old
        one refused, and the role runs on (SIGHUP's default action would
        end it); an emptied file keeps the token, with an error naming
        the file.
        """
        return self.tokensReloaded(twist=False)

    def test_tokensReloadedOnSIGHUPUnderTwist(self):
        """
        The same under C{twist}, which never calls privilegedStartService.
        """
        return self.tokensReloaded(twist=True)

    @inlineCallbacks
    def tokensReloaded(self, twist):
        import os
        directory = self.mktemp()
        os.makedirs(directory)
        token = os.path.abspath(writeToken(directory))
        port, adminPort = freePort(), freePort()
        server = spawnTwistd(
            self, "server", "server", "--endpoint=tcp:%d:interface=127.0.0.1"
            % (port,), "--echo",
            "--admin=tcp:%d:interface=127.0.0.1" % (adminPort,),
            "--admin-token-file=" + token, twist=twist)
        for number in (port, adminPort):
            yield waitForPort(number, server)
        with open(token, "wb") as f:
            f.write(b"r0tated-t0ken\n")
        server.transport.signalProcess("HUP")
        rotated = Admin(adminPort, token=b"r0tated-t0ken")
        yield waitFor(lambda: rotated.get("/health").addCallback(
            lambda r: r[0] == 200), what="the rotated token")
        code, _, _ = yield Admin(adminPort).get("/health")
        self.assertEqual(code, 401)
        with open(token, "wb") as f:
            f.write(b"")
        server.transport.signalProcess("HUP")
        yield waitFor(lambda: "admin tokens unchanged" in server.text(),
                      what="the failed reload's line")
        self.assertIn("%s holds no token" % (token,), server.text())
        code, _, _ = yield rotated.get("/health")
        self.assertEqual(code, 200)
        self.assertTrue(server.running)

    @inlineCallbacks
    def test_SIGHUPWithoutTokenFile(self):
        """
        A multiplexer role without an admin token file takes SIGHUP too: it
        logs that it has nothing to read again and runs on, where SIGHUP's
        default action would end it.
        """
        port = freePort()
        server = spawnTwistd(
            self, "server", "server", "--endpoint=tcp:%d:interface=127.0.0.1"
            % (port,), "--echo")
        yield waitForPort(port, server)
        server.transport.signalProcess("HUP")
        yield waitFor(lambda: "nothing to read again" in server.text(),
                      what="the SIGHUP line")
        self.assertTrue(server.running)
        yield waitForPort(port, server)
