"""
The benchmark's client process: connects to a L{bench.server} on 127.0.0.1
and runs one scenario C{--runs} times, a new connection each run, reporting
each run's figures as a JSON line on stdout.

  python3 -m bench.client --scenario bulk --kind mux --framing mio --port 4321 \
      --params '{"size": 1073741824}' --runs 3
"""

import argparse
import importlib
import json
import os
import traceback

from twisted.internet import defer, task

from bench.common import emit
from bench.scenarios import Context


def _cpu(pid=None):
    """
    Return the CPU seconds (user + system) of this process or of C{pid}.
    """
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def _runOnce(reactor, module, ctx, index, kind="run"):
    try:
        clientCpu, serverCpu = _cpu(), _cpu(ctx.serverPid) if ctx.serverPid else None
        result = await module.run(reactor, ctx)
        result["clientCpuSeconds"] = _cpu() - clientCpu
        if serverCpu is not None:
            result["serverCpuSeconds"] = _cpu(ctx.serverPid) - serverCpu
    except Exception as error:
        emit("error", index=index, error="%s: %s" % (type(error).__name__, error),
             traceback=traceback.format_exc()[-2000:])
        return
    emit(kind, index=index, result=result)


async def _main(reactor, args):
    module = importlib.import_module("bench.scenarios." + args.scenario)
    ctx = Context(args.kind, args.framing, args.port, json.loads(args.settings),
                  json.loads(args.params), args.tls)
    ctx.serverPid = args.server_pid
    if args.serve:
        await _serve(reactor, module, ctx)
        return
    for index in range(args.runs):
        await _runOnce(reactor, module, ctx, index)


async def _serve(reactor, module, ctx):
    """
    Take commands from stdin, one a line: C{run INDEX}, C{warmup JSON}
    (one unreported run with these params), C{quit}.  L{bench.run} drives
    the clients of one scenario round-robin this way, so baseline and
    muxframe runs interleave and share any drift of the machine's load.
    """
    from twisted.internet import stdio
    from twisted.protocols.basic import LineOnlyReceiver

    commands = defer.DeferredQueue()

    class Commands(LineOnlyReceiver):
        delimiter = b"\n"

        def lineReceived(self, line):
            commands.put(line.decode().strip())

        def connectionLost(self, reason):
            commands.put("quit")

    stdio.StandardIO(Commands())
    emit("ready")
    while True:
        command = await commands.get()
        word, _, rest = command.partition(" ")
        if word == "run":
            await _runOnce(reactor, module, ctx, int(rest or 0))
        elif word == "warmup":
            saved = ctx.params
            ctx.params = dict(saved, **json.loads(rest))
            try:
                await _runOnce(reactor, module, ctx, -1, kind="warm")
            finally:
                ctx.params = saved
        else:
            return


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.client")
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--kind", choices=["mux", "raw", "h2"], required=True)
    parser.add_argument("--framing", default="mio")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--params", default="{}")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--tls", default=None)
    parser.add_argument("--server-pid", type=int, default=None,
                        help="the server process, whose CPU time each run reports")
    parser.add_argument("--serve", action="store_true",
                        help="run on commands from stdin (see _serve)")
    parser.add_argument("--profile", default=None,
                        help="write a cProfile of the runs to this path")
    args = parser.parse_args(argv)

    def run(reactor):
        return defer.Deferred.fromCoroutine(_main(reactor, args))

    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            task.react(run)
        except SystemExit:
            pass
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
        os._exit(0)
    task.react(run)


if __name__ == "__main__":
    main()
