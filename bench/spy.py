"""
A native sampling profile of one scenario: py-spy (the C{bench} extra)
samples the server and the client process of one muxframe (or raw TCP) job
while it runs, and the top functions by own time and by time inside are
printed for each process.

  python3 -m bench.spy --framing mio                 # bulk, 1 GiB, one run
  python3 -m bench.spy --framing bmp --size 268435456 --py-spy PATH
  python3 -m bench.spy --kind raw                    # the raw TCP baseline

py-spy attaches with ptrace (root, or kernel.yama.ptrace_scope 0).  Frames
are sampled with C{--native} (which slows the process it samples) with
C{--native}, so time spent in C (the socket calls, epoll, bytes joins) is
named as such; by default Python frames only, C{--nonblocking}.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, ROOT)

from bench.run import BASE_SETTINGS, _serverRole, _spawn, _stop, _tail  # noqa: E402


def findPySpy(path=None):
    """
    Return the py-spy executable: C{path}, C{$PYSPY}, or py-spy on C{PATH}.
    """
    for candidate in (path, os.environ.get("PYSPY"), shutil.which("py-spy")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SystemExit("py-spy not found: pip install py-spy (the bench extra), "
                     "or pass --py-spy PATH")


def summarize(path, top=12):
    """
    Read py-spy's raw (collapsed) output; return the C{top} functions by own
    samples and by inclusive samples, as C{(share, name)} lists, and the
    number of samples.
    """
    own = collections.Counter()
    inside = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count)
            total += count
            frames = [_short(frame) for frame in stack.split(";")]
            own[frames[-1]] += count
            for name in set(frames):
                inside[name] += count
    if not total:
        return [], [], 0
    # Frames on (nearly) every stack (the reactor's loop) say nothing.
    return ([(n / total, name) for name, n in own.most_common(top)],
            [(n / total, name) for name, n in inside.most_common(top * 3)
             if n < 0.9 * total][:top], total)


def _short(frame):
    # "dataReceived (muxframe/multiplexer.py:151)" -> keep the file's name.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    if where:
        path, _, line = where.rpartition(":")
        where = os.path.basename(path)
        return "%s (%s)" % (name, where)
    return name


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m bench.spy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--framing", choices=["mio", "bmp"], default="mio")
    parser.add_argument("--kind", choices=["mux", "raw"], default="mux")
    parser.add_argument("--scenario", default="bulk")
    parser.add_argument("--size", type=int, default=1 << 30)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--py-spy", dest="pyspy", default=None)
    parser.add_argument("--native", action="store_true",
                        help="sample C frames too (pauses the process per sample)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    pyspy = findPySpy(args.pyspy)
    settings = dict(BASE_SETTINGS)
    for item in args.set:
        name, _, value = item.partition("=")
        from muxframe.settings import coerce
        settings[name] = coerce(name, value)
    framing = args.framing if args.kind == "mux" else "tcp"
    work = tempfile.mkdtemp(prefix="muxframe-spy-")
    params = {"size": args.size, "chunk": 256 * 1024, "streams": args.streams,
              "timeout": 600}

    class Job:
        scenario = args.scenario

    server = _spawn(["-m", "bench.server", "--kind", args.kind, "--framing", framing,
                     "--role", _serverRole(Job), "--settings", json.dumps(settings)],
                    os.path.join(work, "server.log"))
    spies = []
    try:
        message = server.reader.next(time.monotonic() + 30)
        if not message or message.get("event") != "listening":
            raise SystemExit("the server did not start: " + _tail(os.path.join(work, "server.log")))
        client = _spawn(["-m", "bench.client", "--scenario", args.scenario, "--kind", args.kind,
                         "--framing", framing, "--settings", json.dumps(settings),
                         "--params", json.dumps(params), "--port", str(message["port"]),
                         "--server-pid", str(server.pid), "--serve"],
                        os.path.join(work, "client.log"), stdin=True)
        if (client.reader.next(time.monotonic() + 30) or {}).get("event") != "ready":
            raise SystemExit("the client did not start: " + _tail(os.path.join(work, "client.log")))
        for name, proc in (("server", server), ("client", client)):
            out = os.path.join(work, name + ".txt")
            command = [pyspy, "record", "--pid", str(proc.pid), "--rate", str(args.rate),
                       "--format", "raw", "--output", out]
            if args.native:
                command.append("--native")
            else:
                command.append("--nonblocking")
            spies.append((name, out, subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=open(out + ".log", "wb"))))
        time.sleep(1.0)  # let py-spy attach
        client.stdin.write(b"run 0\n")
        client.stdin.flush()
        result = client.reader.next(time.monotonic() + 600)
        for name, out, spy in spies:
            spy.send_signal(2)  # SIGINT: py-spy writes what it has
        for name, out, spy in spies:
            spy.wait(timeout=60)
        _stop(client)
    finally:
        _stop(server)
        for name, out, spy in spies:
            if spy.poll() is None:
                spy.kill()
    summary = {"kind": args.kind, "framing": framing, "scenario": args.scenario,
               "size": args.size, "settings": settings,
               "result": (result or {}).get("result"), "processes": {}}
    figures = summary["result"] or {}
    print("%s %s %s: %s" % (args.scenario, args.kind, framing, ", ".join(
        "%s %.3g" % (k, v) for k, v in sorted(figures.items()) if isinstance(v, float))))
    for name, out, spy in spies:
        if not os.path.exists(out):
            print("%s: no profile (%s)" % (name, _tail(out + ".log", 400)))
            continue
        own, inside, total = summarize(out, args.top)
        summary["processes"][name] = {"samples": total, "own": own, "inside": inside}
        print("\n%s process, %d samples; own time:" % (name, total))
        for share, func in own:
            print("  %5.1f%%  %s" % (100 * share, func))
        print("%s process, time inside:" % (name,))
        for share, func in inside:
            print("  %5.1f%%  %s" % (100 * share, func))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
