"""
Run one atheris fuzz harness:

    pip install atheris
    nice -n 10 python3 -m tests.fuzz mio -runs=1000000

TARGET is one of mio, bmp, xtmp, mux; the rest of the arguments go to
libFuzzer (-runs=N, -max_total_time=S, -max_len=N, a corpus directory ...).
muxframe's modules are instrumented for coverage.  A crash writes the input
that caused it to crash-<sha1> in the current directory; replay it with
C{python3 -m tests.fuzz TARGET crash-...}.
"""

import sys


def main(argv):
    if len(argv) < 2 or argv[1] not in ("mio", "bmp", "xtmp", "mux"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    name = argv[1]
    with atheris.instrument_imports(include=["muxframe"]):
        import muxframe.bmp  # noqa: F401
        import muxframe.engine  # noqa: F401
        import muxframe.guards  # noqa: F401
        import muxframe.mio  # noqa: F401
        import muxframe.multiplexer  # noqa: F401
        import muxframe.stream  # noqa: F401
        import muxframe.xtmp.codec  # noqa: F401
        from tests.fuzz.targets import TARGETS
    target = TARGETS[name]
    if name == "mux":
        # The adapter logs through twisted.logger; nothing should print.
        from twisted.logger import globalLogBeginner
        globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    atheris.Setup([argv[0]] + argv[2:], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
