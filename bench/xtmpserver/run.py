"""
Run the XTMP server benchmarks: each scenario starts a server process
(C{serverproc}) and client processes (C{clientproc}) on 127.0.0.1 and
measures the server, beside a baseline measured in the same invocation:

  idle       N authenticated idle sessions: server memory per session
             (target <= 10 KiB) and the server's CPU for their heartbeats
             (target < 1 %); baseline: N idle plain TCP connections.
  handshake  handshakes per second per server core (target >= 1,500);
             baseline: the sans-IO server handshake alone (its CPU floor).
  fanout     one publish to N subscribers: encrypted deliveries per
             second per server core (target >= 200,000); baseline: the
             same frames written to N plain TCP connections.
  reqrep     request/reply routed between two clients, per second (target
             >= 20,000) and per server core; baseline: requests to a
             server handler (no routing).
  flood      p99 latency of an established session's requests during a
             handshake flood from one address, against the same session
             unloaded (target <= 2x); defences at their defaults.  The
             client and the attacker stand in for other machines: the
             server runs alone on the first CPU; the measuring client and
             the flooding processes share the last, the flooders under
             SCHED_IDLE, so the client's wake-ups never wait for them
             (--attacker idle), in both runs.  Each flooder makes its
             fresh ClientHellos before the flood (--pool), so it is not
             bound by its own key generation.  --attacker pin (the
             default before 2026-12-04) gives the flooders a CPU of their
             own and has the server and the measuring client share the
             other.

  python3 -m bench.xtmpserver [--quick] [--scenario idle,fanout] [--json F]
                             [--attacker idle|pin|nice|none] [--pool N]

"Per server core" is the count divided by the server process's CPU
seconds (/proc), so it does not depend on how fast the clients, sharing
the machine, can go.  No test asserts these numbers; C{--quick} is a
smoke run (tests/test_server_bench.py).
"""

import argparse
import atexit
import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.common import attackerPlacement  # noqa: E402

KiB = 1024
SCENARIOS = ["idle", "handshake", "fanout", "reqrep", "flood"]
SIZES = {
    "full": {"idle": 10000, "idleWindow": 60.0, "heartbeat": 30.0,
             "handshakes": 4000, "subscribers": 10000, "publishes": 20,
             "requests": 20000, "latency": 10000, "floods": 2,
             "pool": 12000, "clients": 2, "timeout": 900},
    "quick": {"idle": 300, "idleWindow": 2.0, "heartbeat": 1.0,
              "handshakes": 100, "subscribers": 200, "publishes": 3,
              "requests": 500, "latency": 100, "floods": 1,
              "pool": 200, "clients": 2, "timeout": 120},
}
_children = []


def _lowered(niceness, idlePolicy):
    """
    The C{preexec_fn} lowering a child's CPU priority: C{niceness}, or
    Linux's C{SCHED_IDLE} policy (it runs only on a CPU nothing else
    wants, and a woken task of the normal policy takes the CPU from it at
    once, where a niceness-19 task keeps it for its slice).
    """
    if idlePolicy:
        return lambda: os.sched_setscheduler(0, os.SCHED_IDLE,
                                             os.sched_param(0))
    if niceness:
        return lambda: os.nice(niceness)
    return None


class Child:
    """
    A benchmark process speaking JSON lines.
    """

    def __init__(self, name, module, *args, niceness=0, idlePolicy=False):
        self.name = name
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.xtmpserver." + module] +
            [str(a) for a in args],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=dict(os.environ, PYTHONPATH=ROOT),
            preexec_fn=_lowered(niceness, idlePolicy))
        self.pid = self.process.pid
        self._buffer = b""
        _children.append(self)

    def expect(self, event, timeout):
        """
        The next JSON line whose event is C{event}.
        """
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                message = json.loads(line)
                if message["event"] == "error":
                    raise RuntimeError("%s: %s" % (self.name, message))
                if message["event"] == event:
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("%s: no %s within %gs%s"
                                   % (self.name, event, timeout, self.tail()))
            ready, _, _ = select.select([self.process.stdout], [], [],
                                        min(left, 1.0))
            if ready:
                data = os.read(self.process.stdout.fileno(), 65536)
                if not data:
                    raise RuntimeError("%s exited (%s)%s" % (
                        self.name, self.process.poll(), self.tail()))
                self._buffer += data

    def tail(self):
        self.stderr.seek(0)
        text = self.stderr.read().decode("utf-8", "replace")
        return ("\n" + text[-2000:]) if text else ""

    def send(self, cmd, **fields):
        fields["cmd"] = cmd
        self.process.stdin.write(json.dumps(fields).encode() + b"\n")
        self.process.stdin.flush()

    def stop(self):
        if self.process.poll() is None:
            try:
                self.send("stop")
                self.process.wait(timeout=10)
            except Exception:
                self.process.kill()
                self.process.wait()
        if self in _children:
            _children.remove(self)


@atexit.register
def _killAll():
    for child in list(_children):
        if child.process.poll() is None:
            child.process.kill()


def server(mode, *args):
    child = Child("server-" + mode, "serverproc", mode, *args)
    child.port = child.expect("listening", 30)["port"]
    return child


def clients(srv, count, mode, total, timeout, *args):
    """
    C{count} client processes sharing C{total} sessions; wait until ready.
    """
    out = []
    for index in range(count):
        share = total // count + (1 if index < total % count else 0)
        out.append(Child("client-%s-%d" % (mode, index), "clientproc", mode,
                         "--port", srv.port, "--count", share, *args))
    for child in out:
        ready = child.expect("ready", timeout)
        if ready["failed"]:
            raise RuntimeError("%s: %d sessions failed" % (child.name,
                                                           ready["failed"]))
    return out


def stats(srv):
    srv.send("stats")
    return srv.expect("stats", 30)


def stopAll(*children):
    for child in children:
        if isinstance(child, list):
            stopAll(*child)
        else:
            child.stop()


def row(scenario, measure, value, baseline, unit, target=None, better="high"):
    ratio = value / baseline if baseline else None
    met = None
    if target is not None:
        met = value >= target if better == "high" else value <= target
    return {"scenario": scenario, "measure": measure, "value": value,
            "baseline": baseline, "ratio": ratio, "unit": unit,
            "target": target, "met": met}


# -- scenarios ---------------------------------------------------------------

def idle(size):
    """
    Memory per idle session and heartbeat CPU, XTMP then plain TCP.
    """
    n, window = size["idle"], size["idleWindow"]
    results = {}
    for mode in ("xtmp", "plain"):
        srv = server(mode, "--heartbeat", size["heartbeat"])
        before = stats(srv)
        cl = clients(srv, size["clients"], "sessions" if mode == "xtmp"
                     else "plain", n, size["timeout"],
                     "--heartbeat", size["heartbeat"], "--window", 64)
        # Let handshake garbage settle, then measure.
        time.sleep(1.0)
        after = stats(srv)
        if after["sessions"] != n:
            raise RuntimeError("%s: %d of %d sessions" % (mode,
                                                          after["sessions"], n))
        cpu0 = after["cpu"]
        time.sleep(window)
        end = stats(srv)
        results[mode] = {"perSession": (after["rss"] - before["rss"]) / n,
                         "cpuPercent": 100.0 * (end["cpu"] - cpu0) / window}
        print("  idle %s: %d sessions, %.0f bytes each, %.3f %% CPU over "
              "%gs" % (mode, n, results[mode]["perSession"],
                       results[mode]["cpuPercent"], window), flush=True)
        stopAll(cl, srv)
    x, p = results["xtmp"], results["plain"]
    return [row("idle", "server memory per idle session (%d)" % (n,),
                x["perSession"] / KiB, p["perSession"] / KiB, "KiB", 10,
                "low"),
            row("idle", "server CPU for heartbeats of %d sessions (%gs "
                "interval)" % (n, size["heartbeat"]), x["cpuPercent"],
                p["cpuPercent"], "%", 1, "low")]


def handshakeFloor(rounds=200):
    """
    Mean CPU seconds of the sans-IO server handshake alone.
    """
    from bench.xtmpserver.common import CLIENT, SERVER
    from muxframe.xtmp import ClientHandshake, ServerHandshake, Settings
    from muxframe.xtmp.connection import XTMPConnection
    spent = 0.0
    for _ in range(rounds):
        c = XTMPConnection(ClientHandshake(serverKey=SERVER.public,
                                           identity=CLIENT), Settings())
        c.initiate()
        hello = c.dataToSend()
        t0 = time.process_time()
        s = XTMPConnection(ServerHandshake(SERVER,
                                           authorizedKeys=[CLIENT.public]),
                           Settings())
        s.receiveData(hello)
        flight = s.dataToSend()
        t1 = time.process_time()
        c.receiveData(flight)
        auth = c.dataToSend()
        t2 = time.process_time()
        s.receiveData(auth)
        t3 = time.process_time()
        spent += (t1 - t0) + (t3 - t2)
    return spent / rounds


def handshake(size):
    n = size["handshakes"]
    srv = server("xtmp")
    before = stats(srv)
    cl = [Child("client-handshakes-%d" % i, "clientproc", "handshakes",
                "--port", srv.port, "--count", n // size["clients"],
                "--window", 16) for i in range(size["clients"])]
    done = [c.expect("handshaken", size["timeout"]) for c in cl]
    after = stats(srv)
    cpu = after["cpu"] - before["cpu"]
    stopAll(cl, srv)
    count = sum(d["count"] - d["failed"] for d in done)
    completed = (after["handshakes"]["completed"]
                 - before["handshakes"]["completed"])
    if completed != count:
        # Only handshakes the server finished (the client's signature
        # verified) count: fewer means the figure measured less work.
        raise RuntimeError("handshakes: the server completed %d of %d"
                           % (completed, count))
    wall = max(d["wall"] for d in done)
    floor = handshakeFloor()
    print("  handshakes: %d in %.2fs wall, server CPU %.2fs; sans-IO floor "
          "%.3f ms" % (count, wall, cpu, floor * 1e3), flush=True)
    return [row("handshake", "handshakes per server core", count / cpu,
                1.0 / floor, "/s", 1500),
            row("handshake", "handshakes per second (wall, clients sharing "
                "the machine)", count / wall, None, "/s")]


def fanout(size):
    n, m = size["subscribers"], size["publishes"]
    results = {}
    for mode in ("xtmp", "plain"):
        srv = server(mode)
        cl = clients(srv, size["clients"], "sessions" if mode == "xtmp"
                     else "plain", n, size["timeout"], "--subject",
                     "fan.out", "--window", 64)
        time.sleep(0.5)
        cpu0 = stats(srv)["cpu"]
        start = time.monotonic()
        srv.send("publish", subject="fan.out", count=m, size=64)
        queued = srv.expect("published", size["timeout"])["queued"]
        if queued != n * m:
            raise RuntimeError("%s: %d of %d queued" % (mode, queued, n * m))
        received = 0
        while received < n * m:
            if time.monotonic() - start > size["timeout"]:
                raise RuntimeError("fanout %s: %d of %d received"
                                   % (mode, received, n * m))
            time.sleep(0.05)
            received = 0
            for c in cl:
                c.send("count")
                received += c.expect("count", 30)["received"]
        cpu = stats(srv)["cpu"] - cpu0
        results[mode] = n * m / cpu
        print("  fanout %s: %d deliveries, server CPU %.3fs, %.0f per core-s"
              % (mode, n * m, cpu, results[mode]), flush=True)
        stopAll(cl, srv)
    return [row("fanout", "deliveries per server core, one publish to %d "
                "subscribers" % (n,), results["xtmp"], results["plain"],
                "/s", 200000)]


def reqrep(size):
    k = size["requests"]
    srv = server("xtmp")
    responder = clients(srv, 1, "responder", 1, 60, "--subject", "svc.echo")
    requester = clients(srv, 1, "requester", 1, 60)
    results = {}

    def responderCpu():
        responder[0].send("cpu")
        return responder[0].expect("cpu", 30)["cpu"]

    for name, subject in (("routed", "svc.echo"), ("direct", None)):
        cpu0, answering = stats(srv)["cpu"], responderCpu()
        requester[0].send("run", count=k, window=64, subject=subject)
        ran = requester[0].expect("ran", size["timeout"])
        ran["server"] = stats(srv)["cpu"] - cpu0
        ran["responder"] = responderCpu() - answering
        results[name] = ran
        # CPU per request in each process: with all three on the
        # machine's cores, their sum bounds the wall rate.
        perRequest = [ran[who] / k * 1e6
                      for who in ("server", "cpu", "responder")]
        print("  reqrep %s: %.0f/s wall, server CPU %.2fs, p50 %.2f ms; "
              "CPU per request: server %.0f, requester %.0f, responder "
              "%.0f us" % ((name, ran["rate"], ran["server"],
                            ran["p50"] * 1e3) + tuple(perRequest)),
              flush=True)
    stopAll(responder, requester, srv)
    r, d = results["routed"], results["direct"]
    return [row("reqrep", "request/reply routed between two clients (wall)",
                r["rate"], d["rate"], "/s", 20000),
            row("reqrep", "routed requests per server core", k / r["server"],
                k / d["server"], "/s")]


def flood(size):
    extra = () if size["acceptsPerTurn"] is None else (
        "--accepts-per-turn", size["acceptsPerTurn"])
    srv = server("xtmp", "--limits", "on", *extra)
    latency = clients(srv, 1, "latency", 1, 60)[0]
    # "nice": the flooding processes at niceness 19, unpinned (as
    # bench_flood's --attacker-placement nice); "none": as they are;
    # "idle": the server alone on the first CPU, the measuring client and
    # the flooding processes (SCHED_IDLE) on the last, so neither the
    # attacker's CPU nor the measuring client's competes with the server,
    # and the attacker never delays the client (three machines, on two
    # CPUs).
    placement = size["attacker"]
    if placement == "idle":
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            pin(srv, {cpus[0]})
            pin(latency, {cpus[-1]})
            attacker = {cpus[-1]}
        else:
            # As --attacker pin on one CPU: no placement (the flooders
            # still under SCHED_IDLE), not a benchmark that stops at its
            # last scenario.
            print("  flood: --attacker idle on one CPU: nothing pinned",
                  flush=True)
            attacker = None
    else:
        defended, attacker = attackerPlacement(placement)
        for child in (srv, latency):
            pin(child, defended)
    k = size["latency"]
    latency.send("run", count=k)
    quiet = latency.expect("ran", size["timeout"])
    niceness = 19 if placement == "nice" else 0
    floods = [Child("flood-%d" % i, "clientproc", "flood", "--port",
                    srv.port, "--window", 16, "--pool", size["pool"],
                    niceness=niceness,
                    idlePolicy=placement == "idle")
              for i in range(size["floods"])]
    for f in floods:
        pin(f, attacker)
        f.expect("ready", 60)
    time.sleep(0.5)
    cpu0 = stats(srv)["cpu"]
    latency.send("run", count=k)
    loaded = latency.expect("ran", size["timeout"])
    serverCpu = stats(srv)["cpu"] - cpu0
    print("  flood: the loaded run took %.2f s; server CPU %.2f s in it"
          % (loaded["wall"], serverCpu), flush=True)
    outcomes, rate = {}, 0.0
    for f in floods:
        f.send("stop")
        flooded = f.expect("flooded", 30)
        for key, value in flooded["outcomes"].items():
            outcomes[key] = outcomes.get(key, 0) + value
        rate += sum(flooded["outcomes"].values()) / flooded["seconds"]
        if size["pool"] and not flooded["poolLeft"]:
            print("  flood: %s used up its %d hellos made in advance"
                  % (f.name, size["pool"]), flush=True)
    final = stats(srv)
    stopAll(floods, latency, srv)
    print("  flood (attacker %s): p99 %.2f ms unloaded, %.2f ms flooded; "
          "%.0f hellos/s; flood outcomes %s; server refusals %s; handshakes "
          "%s" % (placement, quiet["p99"] * 1e3, loaded["p99"] * 1e3, rate,
                  outcomes, final["refusals"], final.get("handshakes")),
          flush=True)
    return [row("flood", "request p99 during a handshake flood (ms)",
                loaded["p99"] * 1e3, quiet["p99"] * 1e3, "ms"),
            row("flood", "flooded p99 / unloaded p99", loaded["p99"] /
                quiet["p99"], None, "x", 2, "low"),
            row("flood", "the flood's ClientHellos per second (attacker %s)"
                % (placement,), rate, None, "/s")]


def pin(child, cpus):
    if cpus:
        os.sched_setaffinity(child.pid, cpus)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scenario", default=",".join(SCENARIOS))
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--attacker", choices=["idle", "pin", "nice", "none"], default="idle",
        help="flood scenario: the server alone on a CPU, the measuring "
        "client and the flooding processes (SCHED_IDLE) on another (idle, "
        "the default); the flooding processes on a CPU of their own, the "
        "server and the measuring client sharing the others (pin); at "
        "niceness 19 (nice); or as they are (none)")
    parser.add_argument(
        "--pool", type=int, default=None,
        help="flood scenario: fresh ClientHellos each flooding process makes "
        "before it starts (default 12,000, 200 with --quick; 0: one made "
        "for each connection, as before 2026-12-04)")
    parser.add_argument(
        "--accepts-per-turn", type=int, default=None,
        help="flood scenario: the server's server.accepts_per_turn "
        "(default: the role's default)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    size = dict(SIZES[mode], attacker=args.attacker,
                acceptsPerTurn=args.accepts_per_turn)
    if args.pool is not None:
        size["pool"] = args.pool
    chosen = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error("unknown scenario %s" % (", ".join(sorted(unknown)),))
    rows = []
    for name in chosen:
        print("scenario %s (%s)" % (name, mode), flush=True)
        rows.extend(globals()[name](size))
    print()
    print("%-62s %12s %12s %7s %8s %5s" % ("measure", "value", "baseline",
                                          "ratio", "target", "met"))
    for r in rows:
        print("%-62s %12s %12s %7s %8s %5s" % (
            r["measure"][:62], "%.2f %s" % (r["value"], r["unit"]),
            "-" if r["baseline"] is None else "%.2f" % (r["baseline"],),
            "-" if r["ratio"] is None else "%.2f" % (r["ratio"],),
            "-" if r["target"] is None else "%g" % (r["target"],),
            {None: "-", True: "yes", False: "NO"}[r["met"]]))
    result = {"mode": mode, "machine": machine(), "rows": rows,
              "scenarios": chosen}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
