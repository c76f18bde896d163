"""
Web benchmarks, each beside a baseline measured in the same run:

  1. encrypted XTMP 64-byte messages per second over one loopback
     WebSocket (muxframe.web, autobahn), against XTMP over plain loopback
     TCP (target: WebSocket >= 0.7x TCP), runs interleaved;
  2. 1 MiB bulk XTMP throughput (MiB/s) over the same two transports;
  3. the JavaScript client's handshake in Node (clients/js, `ws`): wall
     time of a complete connect() to this process's server over WebSocket,
     and the client-side CPU of the handshake alone (no I/O), beside the
     Python client's handshake CPU.

Usage:  python bench/bench_web.py [--messages N] [--runs N] [--handshakes N]
        [--quick] [--json PATH]
Benchmarks live here, not in tests: no test asserts a timing.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from statistics import median

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402
from twisted.internet.endpoints import (  # noqa: E402
    TCP4ClientEndpoint, TCP4ServerEndpoint,
)

from muxframe.web import (  # noqa: E402
    WebSocketClientEndpoint, WebSocketServerEndpoint,
)
from muxframe.xtmp import (  # noqa: E402
    Identity, XTMPClientFactory, XTMPServerFactory, connectXTMP,
)

JS = os.path.join(ROOT, "clients", "js")
PAYLOAD = b"x" * 64
BATCH = 2000
SERVER = Identity.generate()
CLIENT = Identity.generate()


def endpoints(reactor, kind):
    """
    (server endpoint, function port -> client endpoint) for C{kind}.
    """
    server = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")

    def tcpClient(port):
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port)

    if kind == "tcp":
        return server, tcpClient

    def wsClient(port):
        return WebSocketClientEndpoint(tcpClient(port), "127.0.0.1", port,
                                       path="/xtmp", reactor=reactor)
    return (WebSocketServerEndpoint(server, path="/xtmp", reactor=reactor),
            wsClient)


@inlineCallbacks
def throughput(reactor, kind, n, payload):
    """
    Seconds from the first send to the n-th message handled by the server.
    """
    done = Deferred()
    state = {"count": 0}

    def received(protocol, message):
        state["count"] += 1
        if state["count"] == n:
            done.callback(time.perf_counter() - state["start"])

    sf = XTMPServerFactory(SERVER, authorizedKeys=[CLIENT.public])
    sf.setHandler(0x10, received)
    serverEndpoint, clientFor = endpoints(reactor, kind)
    port = yield serverEndpoint.listen(sf)
    client = yield connectXTMP(clientFor(port.getHost().port),
                               XTMPClientFactory(serverKey=SERVER.public,
                                                 identity=CLIENT))
    state["start"] = time.perf_counter()
    sent = [0]
    # Keep at most 4 MiB queued in the session (its bound is 8 MiB).
    limit = 4 << 20

    def pump():
        k = 0
        while sent[0] < n and k < BATCH and \
                client.connection.bufferedBytes < limit:
            client.send(0x10, payload)
            sent[0] += 1
            k += 1
        if sent[0] < n:
            reactor.callLater(0 if k == BATCH else 0.0005, pump)

    pump()
    seconds = yield done
    closed = client.whenClosed()
    client.disconnect()
    yield closed
    yield port.stopListening()
    return seconds


def pythonHandshakeCPU(rounds):
    """
    Client-side CPU seconds of one Python handshake (median).
    """
    from muxframe.xtmp.connection import Settings, XTMPConnection
    from muxframe.xtmp.handshake import ClientHandshake, ServerHandshake
    times = []
    for _ in range(rounds):
        c = XTMPConnection(ClientHandshake(serverKey=SERVER.public,
                                           identity=CLIENT), Settings())
        s = XTMPConnection(ServerHandshake(
            SERVER, authorizedKeys=[CLIENT.public]), Settings())
        spent = 0.0
        t = time.process_time()
        c.initiate()
        hello = c.dataToSend()
        spent += time.process_time() - t
        s.receiveData(hello)
        flight = s.dataToSend()
        t = time.process_time()
        c.receiveData(flight)
        c.dataToSend()
        spent += time.process_time() - t
        times.append(spent)
    return median(times)


def nodeHandshake(url, rounds):
    """
    Run clients/js/bench/handshake.mjs against C{url}; its JSON, or the
    reason it could not run.
    """
    node = shutil.which("node")
    if node is None:
        return {"skipped": "node is not installed"}
    if not os.path.isdir(os.path.join(JS, "node_modules")):
        return {"skipped": "clients/js/node_modules is missing: "
                           "cd clients/js && npm ci"}
    proc = subprocess.run(
        [node, os.path.join(JS, "bench", "handshake.mjs"), url,
         SERVER.public.encode().hex(), str(rounds)],
        cwd=JS, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("node handshake bench failed:\n" + proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--messages", type=int, default=200000)
    parser.add_argument("--bulk", type=int, default=200,
                        help="1 MiB messages per bulk run")
    parser.add_argument("--handshakes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts, one run: checks the bench works")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.bulk, args.handshakes, args.runs = 2000, 4, 3, 1

    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread
    results = {"mode": "quick" if args.quick else "full",
               "machine": {"python": platform.python_version(),
                           "platform": platform.platform(),
                           "cpus": os.cpu_count()},
               "messages": args.messages, "runs": args.runs}
    failure = []

    @inlineCallbacks
    def run():
        try:
            times = {"tcp": [], "ws": [], "tcpBulk": [], "wsBulk": []}
            bulk = b"b" * (1 << 20)
            for _ in range(args.runs):
                for kind in ("tcp", "ws"):
                    times[kind].append((yield throughput(
                        reactor, kind, args.messages, PAYLOAD)))
                    times[kind + "Bulk"].append((yield throughput(
                        reactor, kind, args.bulk, bulk)))
            n = args.messages
            results["xtmp_tcp_msgs_per_s"] = n / median(times["tcp"])
            results["xtmp_ws_msgs_per_s"] = n / median(times["ws"])
            results["ws_over_tcp_msgs"] = (results["xtmp_ws_msgs_per_s"]
                                           / results["xtmp_tcp_msgs_per_s"])
            results["xtmp_tcp_bulk_mib_per_s"] = args.bulk / median(
                times["tcpBulk"])
            results["xtmp_ws_bulk_mib_per_s"] = args.bulk / median(
                times["wsBulk"])
            results["ws_over_tcp_bulk"] = (results["xtmp_ws_bulk_mib_per_s"]
                                           / results["xtmp_tcp_bulk_mib_per_s"])
            sf = XTMPServerFactory(SERVER, allowAnonymous=True)
            port = yield WebSocketServerEndpoint(
                TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                path="/xtmp", reactor=reactor).listen(sf)
            url = "ws://127.0.0.1:%d/xtmp" % (port.getHost().port,)
            results["js_handshake"] = yield deferToThread(
                nodeHandshake, url, args.handshakes)
            yield port.stopListening()
            results["python_handshake_cpu_ms_client"] = \
                pythonHandshakeCPU(max(args.handshakes, 3)) * 1e3
        except BaseException:
            from twisted.python.failure import Failure
            failure.append(Failure())
        finally:
            reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    if failure:
        failure[0].raiseException()
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def report(r):
    print("web benchmark (%s: %d messages of 64 bytes, median of %d runs)"
          % (r["mode"], r["messages"], r["runs"]))
    print("%-46s %14s %14s %8s" % ("measure", "websocket", "tcp", "ratio"))
    print("%-46s %14.1f %14.1f %8.2f" % (
        "XTMP msgs/s, AES-256-GCM (target ratio >= 0.7)",
        r["xtmp_ws_msgs_per_s"], r["xtmp_tcp_msgs_per_s"],
        r["ws_over_tcp_msgs"]))
    print("%-46s %14.1f %14.1f %8.2f" % (
        "XTMP bulk MiB/s, 1 MiB messages", r["xtmp_ws_bulk_mib_per_s"],
        r["xtmp_tcp_bulk_mib_per_s"], r["ws_over_tcp_bulk"]))
    js = r["js_handshake"]
    if "skipped" in js:
        print("JS handshake: skipped (%s)" % (js["skipped"],))
    else:
        print("%-46s %14.2f %14s" % ("JS handshake wall ms in Node (median)",
                                     js["wall_ms_median"], ""))
        print("%-46s %14.2f %14.2f" % (
            "handshake client CPU ms (JS | Python)", js["client_cpu_ms_median"],
            r["python_handshake_cpu_ms_client"]))
    print("(tcp: the same XTMP session over plain loopback TCP, measured in "
          "the same run)")


if __name__ == "__main__":
    main()
