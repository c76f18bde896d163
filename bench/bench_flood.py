"""
Latency of a well-behaved connection while other connections flood the
server, beside the same connection's latency unloaded, in the same run.

The server is the real role, C{twistd -n muxframe server --echo} (MIO and
BMP endpoints), in its own process; the measuring client and the attacker
are two more processes.  The client echoes small messages one at a time on
one stream (round-trip time per message); each attack keeps flooding on
new connections for the whole measurement (the server closes each one when
it spends its budget, and the attacker connects again at once):

  mio-rapid-reset    open + RST pairs (CVE-2023-44487)
  mio-empty-data     empty data frames on an open stream (CVE-2019-9518)
  mio-window-update  zero-size window updates
  mio-keepalive      session window frames (the keepalive)
  bmp-create-close   a data frame creating a stream, then its close
  bmp-ack-flood      acknowledgements of frames never sent

For each attack: the p50/p99 of the round trips unloaded (measured just
before), under attack, the ratio of the p99s (target: within 2x), and how
many flood connections the server closed in the time.  The attacker
stands in for a machine of its own: by default it runs at full speed on a
CPU of its own (the last) while the server and the measuring client share
the others, in the unloaded measurement too (C{--attacker-placement pin}).
On two cores a local attacker competing for the same CPUs measures the
scheduler, not the server's defences: at niceness 19 (C{--attacker-placement
nice}, C{--attacker-nice}) Linux's EEVDF scheduler still lets it finish its
slice before a woken server or client runs, which put single round trips
at 1-2 ms and several attacks' p99 at 3-5x in 10,000-echo runs.

Usage:  python bench/bench_flood.py [--quick] [--attacks a,b] [--messages N]
        [--attacker-placement pin|nice] [--attacker-nice N] [--json PATH]
No test asserts a timing; tests/test_bench_flood.py runs --quick.
"""

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import attackerPlacement, percentile  # noqa: E402
from muxframe.demo import freePort  # noqa: E402
from muxframe import bmp, mio  # noqa: E402
from muxframe.bmp import BmpEngine  # noqa: E402
from muxframe.events import DataReceived  # noqa: E402
from muxframe.mio import MioEngine  # noqa: E402

ATTACKS = ["mio-rapid-reset", "mio-empty-data", "mio-window-update",
           "mio-keepalive", "bmp-create-close", "bmp-ack-flood"]
MESSAGE = b"ping" * 16


# -- the flood blobs ------------------------------------------------------

def floodBlob(attack, size=1 << 20):
    """
    About C{size} bytes of one attack's frames.
    """
    if attack == "mio-rapid-reset":
        pair = lambda n: (mio.encodeHeader(n, 65536, mio.OPEN)
                          + mio.encodeHeader(n, 0, mio.RESET))
        return b"".join(pair(n) for n in range(1, 2 * (size // 16), 2))
    if attack == "mio-empty-data":
        return mio.encodeHeader(1, 65536, mio.OPEN) + mio.encodeHeader(
            1, 0, mio.DATA) * (size // 8)
    if attack == "mio-window-update":
        return mio.encodeHeader(1, 65536, mio.OPEN) + mio.encodeHeader(
            1, 0, mio.WINDOW_UPDATE) * (size // 8)
    if attack == "mio-keepalive":
        return mio.encodeHeader(0, 0, mio.SESSION_WINDOW) * (size // 8)
    if attack == "bmp-create-close":
        frames = []
        for n in range(size // 40):
            name = b"io_%d" % (n,)
            frames.append(bmp.encodeFrame(bmp.Frame(name, bmp.CREATE, b"0", payload=b"x")))
            frames.append(bmp.encodeFrame(bmp.Frame(name, bmp.CLOSE_STREAM, payload=b"\x04")))
        return b"".join(frames)
    if attack == "bmp-ack-flood":
        return b"".join(bmp.encodeFrame(bmp.Frame(b"io_0", bmp.ACK, payload=b"%d" % n))
                        for n in range(size // 20))
    raise ValueError("unknown attack %r" % (attack,))


def attacker(port, attack, seconds, report):
    """
    Flood the server on new connections for C{seconds}; write how many
    connections were made and closed by the server to C{report}.
    """
    blob = floodBlob(attack)
    deadline = time.monotonic() + seconds
    closed = made = 0
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(0.01)
            continue
        made += 1
        sock.settimeout(5)
        try:
            sock.sendall(blob)
            while sock.recv(65536):
                pass
            closed += 1
        except socket.timeout:
            pass  # the server neither read nor closed: not counted as closed
        except OSError:
            closed += 1  # reset by the server
        finally:
            sock.close()
    json.dump({"connections": made, "closedByServer": closed}, report)
    report.write("\n")
    report.flush()


# -- the measuring client -------------------------------------------------

class EchoClient:
    """
    One stream on one connection driven by a sans-IO engine over a blocking
    socket: C{roundTrip()} sends a message and waits for its echo.
    """

    def __init__(self, port, framing):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(30)
        engineClass = MioEngine if framing == "mio" else BmpEngine
        self.engine = engineClass("client")
        self.streamId = self.engine.openStream()
        self.flush()

    def flush(self):
        chunks = self.engine.dataToSend()
        if chunks:
            self.sock.sendall(b"".join(chunks))

    def roundTrip(self):
        started = time.perf_counter()
        self.engine.sendData(self.streamId, MESSAGE)
        self.flush()
        got = 0
        while got < len(MESSAGE):
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("the server closed the measuring connection")
            for event in self.engine.receiveData(data, time.monotonic()):
                if type(event) is DataReceived:
                    got += len(event.data)
                    self.engine.consumed(event.streamId, len(event.data))
            self.flush()
        return time.perf_counter() - started

    def close(self):
        self.sock.close()


def measure(port, framing, messages):
    client = EchoClient(port, framing)
    try:
        for _ in range(20):
            client.roundTrip()
        return [client.roundTrip() for _ in range(messages)]
    finally:
        client.close()


# -- the orchestrator -----------------------------------------------------

def startServer(mioPort, bmpPort, logPath, cpus=None):
    from muxframe.tap import twistdCommand
    argv = twistdCommand(
        "-n", "--pidfile=", "--logfile=" + logPath, "muxframe", "server",
        "--endpoint=tcp:%d:interface=127.0.0.1" % (mioPort,), "--echo",
        "--endpoint=bmp:tcp:%d:interface=127.0.0.1" % (bmpPort,), "--echo")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus))
                            if cpus else None)
    deadline = time.monotonic() + 30
    for port in (mioPort, bmpPort):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start (log: %s)" % (logPath,))
                time.sleep(0.1)
    return proc


def runAttack(attack, ports, messages, niceness=19, cpus=None):
    framing = attack.split("-", 1)[0]
    port = ports[framing]
    baseline = measure(port, framing, messages)
    # The attacker floods for longer than the measurement takes.
    seconds = max(2.0, 3 * sum(baseline) + 2.0)
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--attacker", attack,
         "--port", str(port), "--seconds", str(seconds)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.PIPE, text=True,
        # An attacker elsewhere costs this machine nothing: a CPU of its
        # own (cpus), else a low priority.
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else
        (lambda: os.nice(niceness)) if niceness else None)
    try:
        time.sleep(0.5)  # let the flood start
        loaded = measure(port, framing, messages)
        report = json.loads(proc.communicate(timeout=seconds + 60)[0].strip() or "{}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = {
        "attack": attack,
        "messages": messages,
        "baseline_p50_ms": percentile(baseline, 0.5) * 1e3,
        "baseline_p99_ms": percentile(baseline, 0.99) * 1e3,
        "loaded_p50_ms": percentile(loaded, 0.5) * 1e3,
        "loaded_p99_ms": percentile(loaded, 0.99) * 1e3,
        "flood_connections": report.get("connections", 0),
        "flood_closed_by_server": report.get("closedByServer", 0),
        "attacker_niceness": 0 if cpus else niceness,
        "attacker_cpus": sorted(cpus) if cpus else None,
    }
    result["p99_ratio"] = result["loaded_p99_ms"] / result["baseline_p99_ms"]
    result["met"] = result["p99_ratio"] <= 2.0
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--attacker-placement", choices=["pin", "nice"],
                        default="pin",
                        help="the attacker on a CPU of its own (pin, the "
                        "default), or sharing the CPUs at --attacker-nice")
    parser.add_argument("--attacker-nice", type=int, default=19, metavar="N",
                        help="with --attacker-placement nice: the attacker "
                        "process's niceness (default 19; 0: compete for the "
                        "CPU with the server)")
    parser.add_argument("--attacker", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.attacker:
        attacker(options.port, options.attacker, options.seconds, sys.stdout)
        return 0
    attacks = [a for a in options.attacks.split(",") if a]
    for attack in attacks:
        if attack not in ATTACKS:
            parser.error("unknown attack %r (known: %s)" % (attack, ", ".join(ATTACKS)))
    messages = options.messages or (200 if options.quick else 3000)
    logPath = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                           "bench_flood_server_%d.log" % (os.getpid(),))
    ports = {"mio": freePort(), "bmp": freePort()}
    defended, attackerCpus = attackerPlacement(options.attacker_placement)
    if defended:
        os.sched_setaffinity(0, defended)
    server = startServer(ports["mio"], ports["bmp"], logPath, defended)
    results = []
    try:
        for attack in attacks:
            result = runAttack(attack, ports, messages, options.attacker_nice,
                               attackerCpus)
            results.append(result)
            print("%-18s unloaded p50 %6.3f ms p99 %6.3f ms | under attack p50 %6.3f ms "
                  "p99 %6.3f ms | p99 x%.2f (target <= 2: %s) | %d flood connections closed"
                  % (attack, result["baseline_p50_ms"], result["baseline_p99_ms"],
                     result["loaded_p50_ms"], result["loaded_p99_ms"], result["p99_ratio"],
                     "met" if result["met"] else "MISSED", result["flood_closed_by_server"]),
                  flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    with open(logPath) as f:
        log = f.read()
    os.remove(logPath)
    summary = {
        "mode": "quick" if options.quick else "full",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "results": results,
        "server_log_lines": len(log.splitlines()),
        "server_log_bytes": len(log),
    }
    print("server log: %d lines, %d bytes for the whole run"
          % (summary["server_log_lines"], summary["server_log_bytes"]))
    if options.json:
        with open(options.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
