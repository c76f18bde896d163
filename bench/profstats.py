"""
Print the top entries of the cProfile files that C{python3 -m bench.run
--profile DIR} writes (one per server and client process).

  python3 -m bench.profstats DIR/scale_mio.client.prof [--sort tottime] [--top 15]
"""

import argparse
import pstats
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.profstats")
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    for path in args.paths:
        print("==", path)
        stats = pstats.Stats(path, stream=sys.stdout)
        stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
