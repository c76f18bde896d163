"""
End to end through the XTMP server: messages sent to an
entity with durable "sent" answers, beside a baseline in the same run.

The server runs in its own process (an L{XTMPServer} with the embedded
engine's storage, rate limits off); the clients in this one: C{sessions}
devices of entity bob, each keeping C{window} Message requests (256-byte
payloads) to entity alice in flight, until C{messages} SENT answers came
back (alice is offline, so every message is queued: two records each, her
copy and bob's).  The baseline is the same sessions sending the same
number of requests of the same size to a handler that answers at once
(no storage), so the ratio is what durability costs on top of XTMP.
At the end alice binds and the server's answer must show every message
in her queue.

Usage:  python3 -m bench.bench_messaging [--quick] [--json PATH] [--server-wrap CMD]
Benchmarks live here, not in tests: no test asserts a timing.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOAD = b"x" * 256
ECHO = 0x20


def serve(port, directory):
    """
    The server process: listen on 127.0.0.1:C{port}, print the port.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from muxframe.server.config import ServerConfig
    from muxframe.server.factory import XTMPServer
    from muxframe.server.storage import Storage
    from bench.bench_messaging import identities
    serverId, keys = identities()
    config = ServerConfig.fromMapping({
        "storage": {"directory": directory, "retention_interval": 0},
        "limits": {"messages_per_second": 0, "bytes_per_second": 0},
        "server": {"max_connections_per_client": 0},
    })
    storage = Storage.fromConfig(config, reactor)
    server = XTMPServer(serverId, config, reactor, keys=[(n, k.public) for n, k in keys])
    server.setHandler(ECHO, lambda session, message: b"ok")
    storage.attach(server)

    @defer.inlineCallbacks
    def start():
        yield storage.start()
        listening = yield TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
            server)
        print("port %d" % (listening.getHost().port,), flush=True)
    reactor.callWhenRunning(start)
    reactor.run()


def identities():
    """
    Fixed identities: the server's, bob's and alice's.
    """
    from muxframe.xtmp import Identity
    return (Identity.fromSeeds(bytes(range(32))),
            [("bob", Identity.fromSeeds(bytes(range(32, 64)))),
             ("alice", Identity.fromSeeds(bytes(range(64, 96))))])


@defer.inlineCallbacks
def connect(reactor, port, key, device):
    from muxframe.messaging import wire
    from muxframe.xtmp import XTMPClientFactory, connectXTMP
    serverId, _ = identities()
    protocol = yield connectXTMP(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        XTMPClientFactory(serverKey=serverId.public, identity=key, resume=False))
    # The device's copies of what it sent are pushed to it (at most a
    # window of them, unacknowledged): taken and dropped.
    for messageType in (wire.StanzaType.Message, wire.StanzaType.Signal):
        protocol.setHandler(messageType, lambda p, m: None)
    answer = yield protocol.request(wire.StanzaType.Bind, wire.Bind(
        identity=wire.Identity(eid="", device=device)).encode())
    return protocol, wire.Bind.decode(answer.payload)


def cpuSeconds(pid):
    """
    The CPU time (user + system, seconds) process C{pid} used so far, or
    L{None} where /proc is not there.
    """
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@defer.inlineCallbacks
def measured(server, results, name, count, d):
    """
    Run C{d} (a Deferred of seconds); record C{name}_per_s and the server's
    CPU per item, C{name}_server_cpu_us.
    """
    before = cpuSeconds(server.pid)
    seconds = yield d
    after = cpuSeconds(server.pid)
    results[name + "_per_s"] = count / seconds
    if before is not None and after is not None:
        results[name + "_server_cpu_us"] = (after - before) / count * 1e6


@defer.inlineCallbacks
def drive(protocols, count, window, makeRequest):
    """
    Keep C{window} requests in flight per session until C{count} answers
    in all; return seconds.
    """
    done = defer.Deferred()
    state = {"next": 0, "answered": 0}
    share = [0] * len(protocols)

    def answered(_, index):
        state["answered"] += 1
        share[index] -= 1
        if state["answered"] == count:
            done.callback(None)
        else:
            pump(index)

    def pump(index):
        protocol = protocols[index]
        while state["next"] < count and share[index] < window:
            n = state["next"]
            state["next"] += 1
            share[index] += 1
            messageType, payload = makeRequest(n)
            protocol.request(messageType, payload, timeout=120).addCallbacks(
                answered, done.errback, callbackArgs=(index,))
    start = time.perf_counter()
    for index in range(len(protocols)):
        pump(index)
    yield done
    return time.perf_counter() - start


@defer.inlineCallbacks
def run(reactor, args, results):
    from muxframe.messaging import wire
    directory = tempfile.mkdtemp(prefix="muxframe-bench-messaging-", dir=args.dir)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen(
        (args.server_wrap or "").split() + [sys.executable, "-c", "from bench.bench_messaging import serve; serve(0, %r)"
         % (os.path.join(directory, "data"),)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        while not line.startswith("port "):
            line = server.stdout.readline()
        port = int(line.split()[1])
        _, keys = identities()
        bob = dict(keys)["bob"]
        protocols = []
        for n in range(args.sessions):
            protocol, _ = yield connect(reactor, port, bob, "d%d" % (n,))
            protocols.append(protocol)
        to = wire.Identity(eid="alice")
        made = {}

        def message(prefix):
            def make(n):
                return wire.StanzaType.Message, made.pop(n)
            for n in range(args.messages):
                made[n] = wire.Message(id="%s%d" % (prefix, n), to=to, payload=PAYLOAD).encode()
            return make

        def echo(n):
            return ECHO, PAYLOAD
        yield drive(protocols, args.warmup, args.window, message("w"))
        yield measured(server, results, "baseline_requests", args.messages,
                       drive(protocols, args.messages, args.window, echo))
        yield measured(server, results, "messages_sent", args.messages,
                       drive(protocols, args.messages, args.window, message("m")))
        alice, bound = yield connect(reactor, port, dict(keys)["alice"], "phone")
        results["alice_queue_records"] = bound.next_offset - 1
        results["all_stored"] = bound.next_offset - 1 == args.warmup + args.messages
        for protocol in protocols + [alice]:
            closed = protocol.whenClosed()
            protocol.disconnect()
            yield closed
    finally:
        # SIGINT: the server's reactor stops, so a profiler wrapping it
        # writes its report.
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--dir", default=None, help="where the files go (default: /tmp)")
    parser.add_argument("--server-wrap", default=None,
                        help="a command to run the server under, e.g. 'py-spy record -f raw "
                        "-o server.txt --'")
    args = parser.parse_args(argv)
    args.messages = 2000 if args.quick else 100000
    args.warmup = 500 if args.quick else 10000
    args.sessions = 4
    args.window = 250
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "platform": platform.platform()},
               "quick": args.quick, "messages": args.messages, "sessions": args.sessions,
               "window": args.window, "payload": len(PAYLOAD)}
    task.react(lambda reactor: run(reactor, args, results).addCallback(
        lambda _: report(results, args.json)))


def report(results, path):
    """
    Print the table; write the JSON.
    """
    ratio = results["messages_sent_per_s"] / results["baseline_requests_per_s"]
    print("%-52s %12s %12s %7s" % ("measure", "value", "baseline", "ratio"))
    print("%-52s %12.1f %12.1f %7.2f" % (
        "messages to an entity, durable SENT answers, per s", results["messages_sent_per_s"],
        results["baseline_requests_per_s"], ratio))
    if "messages_sent_server_cpu_us" in results:
        print("%-52s %12.1f %12.1f %7.2f" % (
            "server CPU per message, microseconds", results["messages_sent_server_cpu_us"],
            results["baseline_requests_server_cpu_us"],
            results["messages_sent_server_cpu_us"] / results["baseline_requests_server_cpu_us"]))
    print("alice's queue holds %d records (every message stored: %s)" % (
        results["alice_queue_records"], results["all_stored"]))
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
