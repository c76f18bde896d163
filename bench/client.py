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


async def _main(reactor, args):
    module = importlib.import_module("bench.scenarios." + args.scenario)
    ctx = Context(args.kind, args.framing, args.port, json.loads(args.settings),
                  json.loads(args.params), args.tls)
    for index in range(args.runs):
        try:
            result = await module.run(reactor, ctx)
        except Exception as error:
            emit("error", index=index, error="%s: %s" % (type(error).__name__, error),
                 traceback=traceback.format_exc()[-2000:])
            continue
        emit("run", index=index, result=result)


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
