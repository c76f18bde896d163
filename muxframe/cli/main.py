"""
C{muxframe-xtmp}: parse the command line (argparse) and run the
subcommand; return its exit code (0 success, 1 failure, 2 usage).
"""

import argparse
import sys

from muxframe.cli import admin, bench, capture, keys, session, validate
from muxframe.cli.common import (
    FAILURE, PROGRAM, USAGE, CLIError, UsageError, closed, describeError,
    outputClosed, say,
)

#: The subcommands, in the order --help lists them.
COMMANDS = [keys.addKeygen, keys.addAuthorize, session.addConnect,
            session.addSend, session.addRequest, session.addSubscribe,
            admin.addStatus, admin.addSessions, admin.addDisconnect,
            admin.addBroadcast, admin.addPublish, admin.addStats,
            bench.addBench, validate.addValidate, capture.addCapture]


def parser():
    """
    The argument parser of every subcommand.
    """
    from muxframe import __version__
    top = argparse.ArgumentParser(
        prog=PROGRAM,
        description="XTMP from the command line: identities, sessions, the "
                    "admin API of a running server, benchmarks, and message "
                    "files.  Exit status: 0 success, 1 failure, 2 usage.",
        epilog="See docs/operations.md (the command line).")
    top.add_argument("--version", action="version",
                     version="muxframe %s" % (__version__,))
    subparsers = top.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in COMMANDS:
        add(subparsers)
    return top


def main(argv=None):
    """
    Run C{muxframe-xtmp ARGV}; return the exit code.
    """
    top = parser()
    args = top.parse_args(argv)
    try:
        code = args.run(args)
        # (Our output's reader went away, | head: exit 1, quietly.)
        return FAILURE if closed() else code
    except UsageError as e:
        top.print_usage(sys.stderr)
        say("%s: error: %s" % (PROGRAM, e), sys.stderr)
        return USAGE
    except CLIError as e:
        say("%s: error: %s" % (PROGRAM, e), sys.stderr)
        return FAILURE
    except KeyboardInterrupt:
        return FAILURE
    except BrokenPipeError:
        # Our output's reader went away (| head), written other than by
        # say: quietly too.
        outputClosed()
        return FAILURE
    except (OSError, ValueError) as e:
        say("%s: error: %s" % (PROGRAM, describeError(e)), sys.stderr)
        return FAILURE


if __name__ == "__main__":
    sys.exit(main())
