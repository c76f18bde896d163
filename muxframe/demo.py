"""
C{python3 -m muxframe.demo}: muxframe's two halves as real twistd processes
on loopback, verified, in well under a minute.

The tunnel: it starts C{twistd -n muxframe server} (forwarding streams to a
small TCP service run here that hashes what it receives) and C{twistd -n
muxframe client} (accepting local TCP connections and carrying each as a
stream over one multiplexed connection), pushes ordinary TCP clients'
traffic through the tunnel (several connections at once, a few MiB each),
checks that every byte arrived by SHA-256, prints what happened and stops
both processes with SIGTERM; over MIO, then over BMP.

The XTMP server (L{muxframe.xtmpdemo}): keys made with C{muxframe-xtmp
keygen} and C{authorize}, a configuration with embedded storage and the
admin service, C{twistd -n muxframe xtmp} on random free ports; encrypted,
authenticated sessions exchanging messages (publish/subscribe, a request to
a server handler and one to another session, a durable message to an
offline entity delivered once it binds), C{/health} and C{/metrics} with
the admin token, and a SIGTERM drain.

It prints a report of what was verified and exits 0, or 1 naming the first
check that failed.  Options: C{--part tunnel|xtmp|all} (default all),
C{--framing mio|bmp|both} (the tunnel's; default both, one after the
other), C{--connections N} (default 32), C{--mib N} (default 1).
"""

import argparse
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


_handedOut = set()


def freePort():
    """
    A TCP port free on 127.0.0.1 now, and not one this process has already
    been given: two ports taken in a row must differ, and the kernel may
    hand a just-closed port out again (a demo once got its admin port equal
    to its XTMP port).
    """
    for _ in range(1000):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handedOut:
            _handedOut.add(port)
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1 in 1,000 tries")


def waitForLog(text, processes, seconds=20.0):
    """
    Wait until the last process's log contains C{text}.
    """
    deadline = time.monotonic() + seconds
    while text not in readLog(processes[-1][2]):
        for name, process, log in processes:
            if process.poll() is not None:
                raise RuntimeError("%s exited early (%s); its log:\n%s"
                                   % (name, process.returncode, readLog(log)))
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for %r in the %s log:\n%s"
                               % (text, processes[-1][0], readLog(processes[-1][2])))
        time.sleep(0.05)


def readLog(path):
    """
    The text of the log file C{path} so far (empty if not there yet).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class _HashingService:
    """
    The service behind the tunnel: for each connection, read until the end
    of input, then answer with the byte count and SHA-256 of what arrived.
    """

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.peers = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        digest = hashlib.sha256()
        size = 0
        with conn:
            while True:
                data = conn.recv(262144)
                if not data:
                    break
                digest.update(data)
                size += len(data)
            conn.sendall(b"%d %s\n" % (size, digest.hexdigest().encode()))

    def close(self):
        self.sock.close()


def _client(port, payload, results, index):
    """
    An ordinary TCP client: send C{payload}, half-close, read the answer.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while True:
                data = s.recv(4096)
                if not data:
                    break
                answer += data
        results[index] = answer.decode("ascii", "replace").strip()
    except OSError as e:
        results[index] = "error: %s" % (e,)


def twistdArgv(*args):
    """
    The argv of C{twistd -n --pidfile= ARGS} with this interpreter.
    """
    from muxframe.tap import twistdCommand
    return twistdCommand("-n", "--pidfile=", *args)


def showCommand(argv):
    """
    C{argv} from L{twistdArgv} as the shell command it stands for.
    """
    shown = ["twistd"] + argv[3:]
    return " ".join(shlex.quote(a) for a in shown)


def childEnvironment():
    """
    The environment for the demo's processes: this muxframe first on
    C{PYTHONPATH}, so a checkout runs its own code without installing.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


# Above this many connections only failures get a line of their own.
DETAILED = 8


def run(framing="mio", connections=4, mib=4, out=sys.stdout):
    """
    Run the demo; return the process exit status (0: every byte verified
    and both processes stopped cleanly).
    """
    def say(text=""):
        print(text, file=out, flush=True)

    env = childEnvironment()
    workdir = tempfile.mkdtemp(prefix="muxframe-demo-")
    target = _HashingService()
    muxPort, localPort = freePort(), freePort()
    serverArgv = twistdArgv(
        "--logfile=server.log", "muxframe", "server", "--framing=" + framing,
        "--endpoint=tcp:%d:interface=127.0.0.1" % (muxPort,),
        "--forward=tcp:127.0.0.1:%d" % (target.port,), "--drainTimeout=5")
    clientArgv = twistdArgv(
        "--logfile=client.log", "muxframe", "client", "--framing=" + framing,
        "--endpoint=tcp:127.0.0.1:%d" % (muxPort,),
        "--local=tcp:%d:interface=127.0.0.1" % (localPort,), "--drainTimeout=5",
        # Per-stream events are debug; the demo counts them.
        "--logLevel=debug")
    serverLog = os.path.join(workdir, "server.log")
    clientLog = os.path.join(workdir, "client.log")
    processes = []
    ok = False
    try:
        say("muxframe demo: a forward tunnel over %s between two twistd processes"
            % (framing.upper(),))
        say("  server: %s" % (showCommand(serverArgv),))
        server = subprocess.Popen(serverArgv, cwd=workdir, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        processes.append(("server", server, serverLog))
        waitForLog("starting on %d" % (muxPort,), processes)
        say("  client: %s" % (showCommand(clientArgv),))
        client = subprocess.Popen(clientArgv, cwd=workdir, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        processes.append(("client", client, clientLog))
        waitForLog("starting on %d" % (localPort,), processes)
        waitForLog("connection to tcp:127.0.0.1:%d up" % (muxPort,), processes)

        size = mib * 1024 * 1024
        payloads = [os.urandom(size) for _ in range(connections)]
        say("")
        say("ordinary TCP clients -> 127.0.0.1:%d (client's --local) -> %s stream "
            "-> server -> 127.0.0.1:%d (a hashing service)" % (localPort, framing, target.port))
        results = [None] * connections
        threads = [threading.Thread(target=_client, args=(localPort, p, results, i))
                   for i, p in enumerate(payloads)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(45)
        elapsed = time.monotonic() - started
        verified = 0
        for i, (payload, result) in enumerate(zip(payloads, results)):
            expected = "%d %s" % (len(payload), hashlib.sha256(payload).hexdigest())
            good = result == expected
            verified += good
            if connections > DETAILED and good:
                continue
            say("  connection %d: sent %d bytes sha256 %s..., service got %s -> %s" % (
                i + 1, len(payload), expected.split()[1][:16],
                ("%s bytes sha256 %s..." % (result.split()[0], result.split()[1][:16]))
                if result and not result.startswith("error") and " " in result
                else result,
                "verified" if good else "MISMATCH"))
        total = sum(map(len, payloads))
        log = readLog(clientLog)
        streams = len(re.findall(r"forward tunnel: \S+ spliced to \S+#", log))
        connected = len(re.findall(r"connection to \S+ up", log))
        say("")
        say("%d of %d connections verified: %.1f MiB in %.2f s (%.0f MiB/s), "
            "%d streams over %d multiplexed connection(s)" % (
                verified, connections, total / 1048576.0, elapsed,
                total / 1048576.0 / max(elapsed, 1e-6), streams, connected))
        for line in log.splitlines():
            if "spliced to" in line:
                say("  client log: " + line.split("] ", 1)[-1])
                break
        ok = verified == connections
    except Exception as e:
        say("demo failed: %s" % (e,))
    finally:
        for name, process, log in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        stopped = []
        for name, process, log in reversed(processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            clean = "Server Shut Down." in readLog(log)
            stopped.append("%s %s" % (name, "shut down cleanly" if clean else
                                      "exited %s" % (process.returncode,)))
            ok = ok and clean
        target.close()
        if stopped:
            say("stopped with SIGTERM: " + ", ".join(stopped))
    say("demo %s" % ("succeeded" if ok else "FAILED (logs in %s)" % (workdir,)))
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def main(argv=None):
    """
    Parse the command line and run the demo's parts: L{run} (the tunnel,
    once per framing), then L{muxframe.xtmpdemo.run}.
    """
    parser = argparse.ArgumentParser(
        prog="python3 -m muxframe.demo",
        description="muxframe's two halves as real twistd processes on loopback, "
                    "verified: a forward tunnel (over MIO and BMP) and the XTMP "
                    "messaging server.")
    parser.add_argument("--part", choices=("tunnel", "xtmp", "all"), default="all",
                        help="what to show: the forward tunnel, the XTMP server, "
                             "or both (default)")
    parser.add_argument("--framing", choices=("mio", "bmp", "both"), default="both",
                        help="the tunnel's framing (default: both, one after the other)")
    parser.add_argument("--connections", type=int, default=32,
                        help="TCP connections through the tunnel (default 32)")
    parser.add_argument("--mib", type=int, default=1,
                        help="MiB sent on each connection (default 1)")
    options = parser.parse_args(argv)
    parts = []
    if options.part in ("tunnel", "all"):
        for framing in ("mio", "bmp") if options.framing == "both" else (options.framing,):
            parts.append(("tunnel over " + framing.upper(), lambda framing=framing: run(
                framing, options.connections, options.mib)))
    if options.part in ("xtmp", "all"):
        from muxframe import xtmpdemo
        parts.append(("XTMP server", xtmpdemo.run))
    failed = []
    for index, (name, part) in enumerate(parts):
        if index:
            print()
        if part():
            failed.append(name)
    if len(parts) > 1:
        print()
        if failed:
            print("muxframe demo FAILED: %s" % (", ".join(failed),))
        else:
            print("muxframe demo: every part verified (%s)" % (
                ", ".join(name for name, _ in parts),))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
