"""
Run the muxframe benchmark suite: every scenario, both framings,
each against a baseline measured in the same invocation, server and client
in separate processes over 127.0.0.1.

  python3 -m bench.run                      # the full suite (~10 min on 2 cores)
  python3 -m bench.run --quick              # a smoke run (< 60 s)
  python3 -m bench.run --framing mio --scenario bulk,latency --json out.json

Shows its progress while it runs (on a terminal a live bar with the run in
progress and its time, C{bench/progress.py}; elsewhere a line per run), then
the table (median, min, max of the runs; the baseline's median; the ratio;
the target; met?), and writes the same figures as JSON (default
C{bench/results.json}).  See C{docs/performance.md}.
"""

import argparse
import atexit
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, ROOT)

KiB = 1024
MiB = 1024 * 1024
GiB = 1024 * MiB

SCENARIOS = ["bulk", "many", "latency", "loaded", "churn", "memory", "scale", "window", "sweep"]
FRAMINGS = ["mio", "bmp"]

# Settings of every muxframe connection in the suite (both sides): the scale
# and idle-memory runs need more than the default 4096 streams.
BASE_SETTINGS = {"maxStreams": 20000}

SIZES = {
    "full": {
        "bulk": {"size": 1 * GiB, "chunk": 256 * KiB},
        "bulkStreams": [4, 16],
        "targetRuns": 5,
        "window": {"interval": 0.005, "solo": 0.4, "shared": 0.4, "chunk": 256 * KiB},
        "many": {"streams": 1000, "size": 64 * KiB},
        "latency": {"count": 5000, "warmup": 200},
        "loaded": {"count": 3000, "warmup": 50, "chunk": 256 * KiB, "rampup": 0.3},
        "churn": {"streams": 20000, "size": 1 * KiB, "concurrency": 100},
        "memory": {"streams": 10000},
        "scale": {"streams": 10000, "size": 4 * KiB},
        "sweep": {"size": 256 * MiB, "chunk": 256 * KiB},
        "sweepInFlight": [1, 4, 16, 64],
        "sweepFrames": [16 * KiB, 64 * KiB, 256 * KiB],
        "sweepMioFrames": [16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB],
        "runs": 3,
        "timeout": 300,
    },
    "quick": {
        "bulk": {"size": 32 * MiB, "chunk": 256 * KiB},
        "bulkStreams": [4, 16],
        "targetRuns": None,
        "window": {"interval": 0.005, "solo": 0.1, "shared": 0.1, "chunk": 256 * KiB},
        "many": {"streams": 100, "size": 64 * KiB},
        "latency": {"count": 300, "warmup": 20},
        "loaded": {"count": 200, "warmup": 10, "chunk": 256 * KiB, "rampup": 0.1},
        "churn": {"streams": 500, "size": 1 * KiB, "concurrency": 50},
        "memory": {"streams": 1000},
        "scale": {"streams": 500, "size": 4 * KiB},
        "sweep": {"size": 8 * MiB, "chunk": 256 * KiB},
        "sweepInFlight": [1, 16],
        "sweepFrames": [64 * KiB],
        "sweepMioFrames": [64 * KiB],
        "runs": 3,
        "timeout": 60,
    },
}

# What the progress line shows of one run: (key, format).
HEADLINE = {
    "bulk": [("MBps", "%.1f MB/s")],
    "sweep": [("MBps", "%.1f MB/s")],
    "many": [("verified", "%d verified"), ("MBps", "%.1f MB/s"),
             ("streamsPerSecond", "%.0f streams/s")],
    "latency": [("p50us", "p50 %.1f µs"), ("p99us", "p99 %.1f µs")],
    "loaded": [("p50us", "p50 %.1f µs"), ("p99us", "p99 %.1f µs"), ("bulkMBps", "bulk %.1f MB/s")],
    "churn": [("streamsPerSecond", "%.0f streams/s")],
    "window": [("soloWindowKiB", "solo %.0f KiB"), ("sharedWindowKiB", "shared %.0f KiB"),
               ("againWindowKiB", "alone again %.0f KiB"), ("msToLargest", "largest at %.0f ms")],
    "memory": [("clientBytesPerStream", "client %.0f B/stream"),
               ("serverBytesPerStream", "server %.0f B/stream")],
    "scale": [("verified", "%d verified"), ("lost", "%d lost"), ("failed", "%d failed"),
              ("streamsPerSecond", "%.0f streams/s")],
}


class Job:
    """
    One server configuration measured C{runs} times by one client process
    (C{fresh}: a new server and client process for every run).
    """

    def __init__(self, key, scenario, kind, framing, params, runs, settings=None,
                 tls=False, fresh=False, label=None, module=None):
        self.key = key
        self.scenario = scenario
        self.module = module or scenario
        self.kind = kind
        self.framing = framing
        self.params = params
        self.runs = runs
        self.settings = dict(settings or {})
        self.tls = tls
        self.fresh = fresh
        self.label = label or key
        self.results = []
        self.errors = []

    def asDict(self):
        return {
            "scenario": self.scenario, "kind": self.kind, "framing": self.framing,
            "settings": self.settings, "params": self.params, "tls": self.tls,
            "runs": self.results, "errors": self.errors,
        }


def planJobs(mode, scenarios, framings, runs):
    sizes = SIZES[mode]
    explicitRuns = bool(runs)
    runs = runs or sizes["runs"]
    jobs = {}

    def add(key, *args, **kwargs):
        if key not in jobs:
            jobs[key] = Job(key, *args, **kwargs)

    def mux(scenario, framing, extra=None, key=None, module=None, params=None,
            runs=runs, **kwargs):
        settings = dict(BASE_SETTINGS)
        settings.update(extra or {})
        add(key or "%s/%s" % (scenario, framing), scenario, "mux", framing,
            params or sizes[module or scenario], runs, settings, module=module, **kwargs)

    def need(scenario):
        return scenario in scenarios

    # The figures with a ratio target to a baseline (bulk, latency, loaded)
    # are medians of targetRuns interleaved runs in full mode: single runs
    # of this machine's latency land in two modes (about 78 and 100 us,
    # raw TCP too), so three runs' median flips between them.
    bulkRuns = runs if explicitRuns else (sizes["targetRuns"] or runs)
    for framing in framings:
        if need("bulk"):
            # (The loaded rows' bulk alone is loaded/FRAMING/alone.)
            mux("bulk", framing, runs=bulkRuns)
        if need("bulk"):
            for count in sizes["bulkStreams"]:
                mux("bulk", framing, key="bulk/%s/x%d" % (framing, count),
                    params=dict(sizes["bulk"], streams=count), runs=bulkRuns,
                    label="bulk/%s x%d streams" % (framing, count))
        if need("window") and framing == "mio":
            mux("window", framing, fresh=True)
        if need("latency") or need("loaded"):
            mux("latency", framing, runs=bulkRuns)
        if need("many"):
            mux("many", framing)
        if need("loaded"):
            mux("loaded", framing, runs=bulkRuns)
            # The solo rate the loaded bulk stream is held to, interleaved
            # with the loaded runs: the bulk scenario's runs are minutes
            # away, and this host's bulk rate drifts by half in minutes.
            mux("loaded", framing, key="loaded/%s/alone" % framing,
                module="bulk", runs=bulkRuns,
                label="loaded/%s bulk alone" % framing)
        for name in ("churn", "scale"):
            if need(name):
                mux(name, framing)
        if need("memory"):
            mux("memory", framing, fresh=True)
    if need("bulk") or need("sweep") or (need("loaded") and False):
        add("bulk/raw", "bulk", "raw", "tcp", sizes["bulk"], bulkRuns)
    if need("bulk"):
        for count in sizes["bulkStreams"]:
            add("bulk/raw/x%d" % count, "bulk", "raw", "tcp",
                dict(sizes["bulk"], streams=count), bulkRuns,
                label="bulk/raw x%d connections" % count)
    if need("latency"):
        add("latency/raw", "latency", "raw", "tcp", sizes["latency"], bulkRuns)
    if need("many"):
        add("many/h2", "many", "h2", "h2", sizes["many"], runs, tls=True)
        # What Twisted's HTTP/2 does when all the requests are opened at once,
        # past its SETTINGS_MAX_CONCURRENT_STREAMS (reported, one run).
        add("many/h2-unlimited", "many", "h2", "h2", dict(sizes["many"], ignoreLimit=True),
            1, tls=True)
        if "mio" in framings:
            mux("many", "mio", key="many/mio+tls", tls=True)
    if need("sweep"):
        if "bmp" in framings:
            for inflight in sizes["sweepInFlight"]:
                for frame in sizes["sweepFrames"]:
                    mux("sweep", "bmp", {"maxInFlight": inflight, "maxFrameSize": frame},
                        key="sweep/bmp/inflight=%d/frame=%dK" % (inflight, frame // KiB),
                        module="sweep")
        if "mio" in framings:
            for frame in sizes["sweepMioFrames"]:
                mux("sweep", "mio", {"maxFrameSize": frame},
                    key="sweep/mio/frame=%dK" % (frame // KiB), module="sweep")
    for job in jobs.values():
        if job.scenario == "sweep":
            job.module = "bulk"
    return list(jobs.values())


# -- child processes ------------------------------------------------------

_children = []


def _killChildren():
    for proc in list(_children):
        if proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except Exception:
            pass
        if proc in _children:
            _children.remove(proc)


atexit.register(_killChildren)


def _onSignal(signum, frame):
    _killChildren()
    raise SystemExit(128 + signum)


def _spawn(args, stderrPath, stdin=False):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-u"] + args, cwd=ROOT, env=env,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=open(stderrPath, "wb"),
    )
    _children.append(proc)
    proc.reader = LineReader(proc)
    return proc


def _stop(proc):
    if proc.stdin is not None:
        try:
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc in _children:
        _children.remove(proc)


class LineReader:
    """
    Read the JSON lines a child process reports, with a deadline.
    """

    def __init__(self, proc):
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def next(self, deadline):
        """
        Return the next JSON message, or C{None} at end of output.

        @raise TimeoutError: nothing came before C{deadline}.
        """
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                if line.startswith(b"{"):
                    return json.loads(line)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer within the deadline")
            ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if not ready:
                continue
            data = os.read(self.fd, 65536)
            if not data:
                return None
            self.buffer += data


def _tail(path, limit=1500):
    try:
        with open(path, "rb") as f:
            return f.read()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""


class Live:
    """
    The server and client processes of one job.
    """

    def __init__(self, job, server, client, clientLog):
        self.job = job
        self.server = server
        self.client = client
        self.clientLog = clientLog


class Runner:
    """
    Run the jobs scenario by scenario.  The jobs of one scenario (muxframe
    in each framing and its baseline) each keep a server and a client
    process, and their runs interleave round-robin (after one unreported
    warm-up run each, in the full suite), so a change in the machine's load
    hits baseline and muxframe alike.  Idle-memory runs get fresh processes
    every run.
    """

    def __init__(self, jobs, timeout, tlsDir, logDir, profileDir=None, warmup=None,
                 display=None):
        from bench.progress import Progress
        self.jobs = jobs
        self.timeout = timeout
        self.tlsDir = tlsDir
        self.logDir = logDir
        self.profileDir = profileDir
        self.warmup = warmup
        self.total = sum(job.runs for job in jobs)
        self.done = 0
        self.started = time.monotonic()
        self.display = display or Progress(self.total, "lines")

    def progress(self, job, index, text):
        self.done += 1
        elapsed = time.monotonic() - self.started
        line = "[%3d/%d %3d:%02d] %-34s run %d/%d  %s" % (
            self.done, self.total, elapsed // 60, elapsed % 60, job.label,
            index + 1, job.runs, text)
        self.display.done(line)

    def runAll(self):
        groups = {}
        for job in self.jobs:
            groups.setdefault(job.scenario, []).append(job)
        for scenario, jobs in groups.items():
            for job in jobs:
                if job.fresh:
                    for index in range(job.runs):
                        self.runInterleaved([job], index, serve=False)
            others = [job for job in jobs if not job.fresh]
            if others:
                self.runInterleaved(others)

    def _start(self, job, serve, first):
        safe = job.key.replace("/", "_").replace("=", "").replace("+", "_")
        suffix = "" if serve else ".%d" % first
        serverLog = os.path.join(self.logDir, safe + suffix + ".server.log")
        clientLog = os.path.join(self.logDir, safe + suffix + ".client.log")
        serverArgs = ["-m", "bench.server", "--kind", job.kind, "--framing", job.framing,
                      "--role", _serverRole(job), "--settings", json.dumps(job.settings)]
        clientArgs = ["-m", "bench.client", "--scenario", job.module, "--kind", job.kind,
                      "--framing", job.framing, "--settings", json.dumps(job.settings),
                      "--params", json.dumps(dict(job.params, timeout=self.timeout * 0.8))]
        clientArgs += ["--serve"] if serve else ["--runs", "1"]
        if job.tls:
            serverArgs += ["--tls", self.tlsDir]
            clientArgs += ["--tls", self.tlsDir]
        if self.profileDir:
            serverArgs += ["--profile", os.path.join(self.profileDir, safe + suffix + ".server.prof")]
            clientArgs += ["--profile", os.path.join(self.profileDir, safe + suffix + ".client.prof")]
        server = _spawn(serverArgs, serverLog)
        message = server.reader.next(time.monotonic() + 30)
        if not message or message.get("event") != "listening":
            _stop(server)
            raise RuntimeError("the server did not start: " + _tail(serverLog))
        clientArgs += ["--port", str(message["port"]), "--server-pid", str(server.pid)]
        client = _spawn(clientArgs, clientLog, stdin=serve)
        live = Live(job, server, client, clientLog)
        if serve:
            message = client.reader.next(time.monotonic() + 30)
            if not message or message.get("event") != "ready":
                self._stopLive(live)
                raise RuntimeError("the client did not start: " + _tail(clientLog))
        return live

    def _stopLive(self, live):
        _stop(live.client)
        _stop(live.server)

    def _fail(self, job, live, indices, error):
        text = "%s: %s" % (type(error).__name__, error)
        if live is not None:
            text += " " + _tail(live.clientLog, 600)
        job.errors.append(text)
        for index in indices:
            self.progress(job, index, "ERROR %s" % (text[:300],))

    def _one(self, live, index):
        """
        Read one run's answer (the client was told to run, or runs once).
        """
        job = live.job
        self.display.start("%s run %d/%d" % (job.label, index + 1, job.runs))
        message = live.client.reader.next(time.monotonic() + self.timeout)
        if message is None:
            raise RuntimeError("the client exited (%s)" % (live.client.poll(),))
        event = message.get("event")
        if event == "run":
            job.results.append(message["result"])
            self.progress(job, index, _headline(job.module, message["result"]))
        elif event == "error":
            job.errors.append(message["error"])
            self.progress(job, index, "ERROR " + message["error"][:300])
        else:
            raise RuntimeError("unexpected message %r" % (message,))

    def runInterleaved(self, jobs, first=0, serve=True):
        live = {}
        try:
            for job in jobs:
                try:
                    live[job.key] = self._start(job, serve, first)
                except Exception as error:
                    self._fail(job, None, range(first, job.runs if serve else first + 1), error)
            if not serve:
                for job in jobs:
                    if job.key in live:
                        try:
                            self._one(live[job.key], first)
                        except Exception as error:
                            self._fail(job, live[job.key], [first], error)
                return
            if self.warmup:
                for job in jobs:
                    entry = live.get(job.key)
                    # By the module the client runs (the loaded
                    # scenario's bulk-alone job runs bulk).
                    params = self.warmup.get(job.module)
                    if entry is None or params is None:
                        continue
                    try:
                        self.display.start("%s warm-up" % (job.label,))
                        entry.client.stdin.write(b"warmup %s\n" % json.dumps(params).encode())
                        entry.client.stdin.flush()
                        message = entry.client.reader.next(time.monotonic() + self.timeout)
                        if message is None:
                            raise RuntimeError("the client exited during its warm-up")
                    except Exception as error:
                        self._fail(job, entry, range(job.runs), error)
                        self._stopLive(live.pop(job.key))
            for index in range(max(job.runs for job in jobs)):
                for job in jobs:
                    entry = live.get(job.key)
                    if entry is None or index >= job.runs:
                        continue
                    try:
                        entry.client.stdin.write(b"run %d\n" % index)
                        entry.client.stdin.flush()
                        self._one(entry, index)
                    except Exception as error:
                        self._fail(job, entry, range(index, job.runs), error)
                        self._stopLive(live.pop(job.key))
        finally:
            for entry in live.values():
                self._stopLive(entry)


def _serverRole(job):
    return {"bulk": "sink", "sweep": "sink", "many": "echo", "latency": "echo",
            "loaded": "loaded", "churn": "echo", "memory": "memory",
            "scale": "echo", "window": "window"}[job.scenario]


def _headline(scenario, result):
    parts = []
    for key, fmt in HEADLINE.get(scenario, []):
        if key in result:
            parts.append(fmt % result[key])
    return ", ".join(parts)


# -- figures --------------------------------------------------------------


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values), "runs": values}


def figure(jobs, key, name):
    job = jobs.get(key)
    if job is None:
        return None
    return stats([r.get(name) for r in job.results])


def buildRows(jobs, framings):
    """
    The table: one row per (scenario, framing, figure).
    """
    rows = []

    def row(scenario, framing, name, unit, fig, baseline=None, baselineName=None,
            target=None, check=None, ratioTarget=None, note=None):
        entry = {"scenario": scenario, "framing": framing, "figure": name, "unit": unit,
                 "value": fig, "baselineName": baselineName,
                 "baseline": baseline, "ratio": None, "target": target, "met": None,
                 "note": note}
        if fig is not None and baseline is not None and baseline["median"]:
            entry["ratio"] = fig["median"] / baseline["median"]
        if fig is not None and check is not None:
            entry["met"] = bool(check(fig, entry["ratio"]))
        entry["targetApplies"] = framing == "mio" or framing.startswith("mio")
        rows.append(entry)

    rawBulk = figure(jobs, "bulk/raw", "MBps")
    rawLatency50 = figure(jobs, "latency/raw", "p50us")
    rawLatency99 = figure(jobs, "latency/raw", "p99us")
    h2MB = figure(jobs, "many/h2", "MBps")
    h2Streams = figure(jobs, "many/h2", "streamsPerSecond")
    for framing in framings:
        if "bulk/%s" % framing in jobs and "bulk/raw" in jobs:
            row("bulk", framing, "MB/s", "MB/s", figure(jobs, "bulk/" + framing, "MBps"),
                rawBulk, "raw Twisted TCP", "≥ 0.8× raw TCP", lambda f, r: r and r >= 0.8)
        for key, job in jobs.items():
            if key.startswith("bulk/%s/x" % framing):
                count = job.params["streams"]
                row("bulk", framing, "MB/s, %d streams" % count, "MB/s",
                    figure(jobs, key, "MBps"), figure(jobs, "bulk/raw/x%d" % count, "MBps"),
                    "raw Twisted TCP, %d connections" % count, None, None)
        if "many/%s" % framing in jobs:
            row("many", framing, "total MB/s", "MB/s", figure(jobs, "many/" + framing, "MBps"),
                h2MB, "Twisted HTTP/2 (TLS)", "≥ 2× HTTP/2", lambda f, r: r and r >= 2)
            row("many", framing, "streams/s", "streams/s",
                figure(jobs, "many/" + framing, "streamsPerSecond"),
                h2Streams, "Twisted HTTP/2 (TLS)", "≥ 2× HTTP/2", lambda f, r: r and r >= 2)
        if "latency/%s" % framing in jobs and "latency/raw" in jobs:
            row("latency", framing, "p50 µs", "µs", figure(jobs, "latency/" + framing, "p50us"),
                rawLatency50, "raw Twisted TCP", "≤ 1.3× raw TCP", lambda f, r: r and r <= 1.3)
            row("latency", framing, "p99 µs", "µs", figure(jobs, "latency/" + framing, "p99us"),
                rawLatency99, "raw Twisted TCP", None, None)
        if "loaded/%s" % framing in jobs:
            row("loaded", framing, "p99 µs under load", "µs",
                figure(jobs, "loaded/" + framing, "p99us"),
                figure(jobs, "latency/" + framing, "p99us"), "p99 alone (same framing)",
                "≤ 1000 µs", lambda f, r: f["median"] <= 1000)
            alone = "loaded/%s/alone" % framing
            row("loaded", framing, "bulk MB/s under load", "MB/s",
                figure(jobs, "loaded/" + framing, "bulkMBps"),
                figure(jobs, alone if alone in jobs else "bulk/" + framing, "MBps"),
                "bulk alone, interleaved" if alone in jobs else "bulk alone (same framing)",
                "≥ 0.8× alone", lambda f, r: r and r >= 0.8)
        if "window/%s" % framing in jobs:
            key = "window/" + framing
            row("window", framing, "first sample KiB", "KiB",
                figure(jobs, key, "initialWindowKiB"), None, None, None, None)
            row("window", framing, "window KiB alone", "KiB",
                figure(jobs, key, "soloWindowKiB"), None, None,
                "grows (≤ maxWindowSize)", lambda f, r: f["median"] > 256)
            row("window", framing, "ms to largest", "ms",
                figure(jobs, key, "msToLargest"), None, None, None, None)
            from muxframe.engine import SHARED_INFLIGHT
            shared = max(SHARED_INFLIGHT // KiB, 256)
            row("window", framing, "window KiB, shared", "KiB",
                figure(jobs, key, "sharedWindowKiB"), None, None,
                "≤ %d KiB while shared" % shared,
                lambda f, r, shared=shared: f["max"] <= shared)
            row("window", framing, "window KiB, alone again", "KiB",
                figure(jobs, key, "againWindowKiB"), None, None, None, None)
        if "churn/%s" % framing in jobs:
            row("churn", framing, "streams/s", "streams/s",
                figure(jobs, "churn/" + framing, "streamsPerSecond"), None, None,
                "≥ 10,000/s", lambda f, r: f["median"] >= 10000)
        if "memory/%s" % framing in jobs:
            for side in ("client", "server"):
                row("memory", framing, "%s B/idle stream" % side, "bytes",
                    figure(jobs, "memory/" + framing, side + "BytesPerStream"), None, None,
                    "≤ 1024 B", lambda f, r: f["max"] <= 1024)
        if "scale/%s" % framing in jobs:
            job = jobs["scale/" + framing]
            count = job.params["streams"]
            row("scale", framing, "streams verified (of %d)" % count, "streams",
                figure(jobs, "scale/" + framing, "verified"), None, None,
                "all, 0 lost, 0 errors",
                lambda f, r, job=job, count=count: (
                    not job.errors and len(job.results) == job.runs and all(
                        x["verified"] == count and x["lost"] == 0 and x["failed"] == 0
                        for x in job.results)))
            row("scale", framing, "streams/s", "streams/s",
                figure(jobs, "scale/" + framing, "streamsPerSecond"), None, None, None, None)
    if "many/h2-unlimited" in jobs:
        job = jobs["many/h2-unlimited"]
        row("many", "h2, all at once", "requests verified (of %d)" % job.params["streams"],
            "requests", figure(jobs, "many/h2-unlimited", "verified"), None, None, None, None,
            note="Twisted HTTP/2 with every request opened at once, ignoring its "
                 "SETTINGS_MAX_CONCURRENT_STREAMS; errors: %s" % (
                     [r.get("errors") for r in job.results] or job.errors))
    if "many/mio+tls" in jobs:
        row("many", "mio+tls", "total MB/s", "MB/s", figure(jobs, "many/mio+tls", "MBps"),
            h2MB, "Twisted HTTP/2 (TLS)", "(same transport as HTTP/2)", None)
        row("many", "mio+tls", "streams/s", "streams/s",
            figure(jobs, "many/mio+tls", "streamsPerSecond"),
            h2Streams, "Twisted HTTP/2 (TLS)", None, None)
    for key, job in jobs.items():
        if job.scenario != "sweep":
            continue
        row("sweep", key[len("sweep/"):], "bulk MB/s", "MB/s", figure(jobs, key, "MBps"),
            rawBulk, "raw Twisted TCP", None, None)
    return rows


def _fmt(value, unit):
    if value is None:
        return "-"
    if unit in ("MB/s",) or abs(value) < 100:
        return "%.1f" % value
    return "%.0f" % value


def printTable(rows, out=sys.stdout):
    header = ["scenario", "framing", "figure", "median", "min", "max", "baseline",
              "base median", "ratio", "target", "met?"]
    table = [header]
    for r in rows:
        v = r["value"]
        b = r["baseline"]
        met = "-"
        if r["met"] is not None:
            met = "yes" if r["met"] else "NO"
            if not r["targetApplies"]:
                met = "(%s)" % met.lower()
        table.append([
            r["scenario"], r["framing"], r["figure"],
            _fmt(v and v["median"], r["unit"]), _fmt(v and v["min"], r["unit"]),
            _fmt(v and v["max"], r["unit"]), r["baselineName"] or "-",
            _fmt(b and b["median"], r["unit"]),
            "%.2f×" % r["ratio"] if r["ratio"] is not None else "-",
            r["target"] or "-", met,
        ])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for n, line in enumerate(table):
        out.write("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    out.flush()


def machine():
    info = {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import twisted
        info["twisted"] = twisted.__version__
    except ImportError:
        pass
    try:
        import h2
        info["h2"] = h2.__version__
    except ImportError:
        pass
    try:
        from twisted.internet import reactor
        info["reactor"] = type(reactor).__name__
    except Exception:
        pass
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
            text=True, timeout=10).stdout.strip()
    except Exception:
        pass
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (< 60 s)")
    parser.add_argument("--framing", choices=["mio", "bmp", "both"], default="both")
    parser.add_argument("--scenario", action="append", default=None,
                        help="run only these scenarios (repeat or comma-separate): "
                             + ", ".join(SCENARIOS))
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3; 5 for bulk, latency and loaded in full mode)")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results.json"),
                        help="where to write the JSON (default bench/results.json)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per job")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a muxframe setting on both sides of every muxframe "
                             "connection (repeatable), e.g. --set windowSize=4194304")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="write cProfile files of every server and client process to DIR")
    parser.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto",
                        help="a live bar (default on a terminal) or a line per run")
    args = parser.parse_args(argv)

    scenarios = []
    for item in args.scenario or SCENARIOS:
        for name in item.split(","):
            name = name.strip()
            if name not in SCENARIOS:
                parser.error("unknown scenario %r (choose from %s)" % (name, ", ".join(SCENARIOS)))
            scenarios.append(name)
    framings = FRAMINGS if args.framing == "both" else [args.framing]
    mode = "quick" if args.quick else "full"
    signal.signal(signal.SIGTERM, _onSignal)

    for item in args.set:
        name, _, value = item.partition("=")
        from muxframe.settings import coerce
        try:
            BASE_SETTINGS[name] = coerce(name, value)
        except ValueError as error:
            parser.error(str(error))
    jobs = planJobs(mode, scenarios, framings, args.runs)
    timeout = args.timeout or SIZES[mode]["timeout"]
    workDir = tempfile.mkdtemp(prefix="muxframe-bench-")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    started = time.time()
    print("muxframe benchmark (%s): %d jobs, %d runs; logs in %s" % (
        mode, len(jobs), sum(j.runs for j in jobs), workDir), flush=True)
    try:
        tlsDir = None
        if any(job.tls for job in jobs):
            from bench.tlsutil import makeCertificate
            tlsDir = os.path.join(workDir, "tls")
            os.makedirs(tlsDir)
            makeCertificate(tlsDir)
        warmup = None
        if mode == "full":
            warmup = dict(SIZES["quick"])
        from bench.progress import Progress
        display = Progress(sum(j.runs for j in jobs), args.progress)
        runner = Runner(jobs, timeout, tlsDir, workDir,
                        os.path.abspath(args.profile) if args.profile else None, warmup,
                        display)
        try:
            runner.runAll()
        finally:
            display.close()
    finally:
        _killChildren()
    byKey = {job.key: job for job in jobs}
    rows = buildRows(byKey, framings)
    print()
    printTable(rows)
    errors = {job.key: job.errors for job in jobs if job.errors}
    for key, errs in errors.items():
        print("errors in %s: %s" % (key, "; ".join(e[:300] for e in errs)))
    scenariosOut = {}
    for r in rows:
        scenariosOut.setdefault(r["scenario"], {}).setdefault(r["framing"], {})[r["figure"]] = r
    result = {
        "mode": mode, "command": ["python3", "-m", "bench.run"] + list(argv if argv is not None else sys.argv[1:]),
        "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsedSeconds": time.time() - started, "machine": machine(),
        "settings": BASE_SETTINGS, "sizes": SIZES[mode],
        "rows": rows, "scenarios": scenariosOut,
        "jobs": {job.key: job.asDict() for job in jobs}, "errors": errors,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, sort_keys=False, default=str)
        print("wrote %s (%.0f s)" % (args.json, time.time() - started))
    if not errors:
        shutil.rmtree(workDir, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
