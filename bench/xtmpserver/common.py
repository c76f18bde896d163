"""
What the XTMP server benchmark's processes share: fixed identities and
the control protocol (JSON lines on stdin and stdout).
"""

import json
import sys

from twisted.protocols.basic import LineReceiver

from bench.common import emit, rss  # noqa: F401 - re-exported
from muxframe.xtmp import Identity

SERVER = Identity.fromSeeds(b"\x11" * 32)
CLIENT = Identity.fromSeeds(b"\x22" * 32)
#: Application types the bench server handles.
ECHO = 0x20


class Control(LineReceiver):
    """
    Commands as JSON lines on stdin: C{{"cmd": NAME, ...}} calls
    C{handler.cmd_NAME(**fields)}.  A handler's exception is reported as
    an C{error} event; stdin closing stops the reactor.
    """

    delimiter = b"\n"

    def __init__(self, handler, reactor):
        self.handler = handler
        self.reactor = reactor

    def lineReceived(self, line):
        command = json.loads(line)
        name = command.pop("cmd")
        try:
            getattr(self.handler, "cmd_" + name)(**command)
        except Exception as e:
            emit("error", command=name, error="%s: %s" % (type(e).__name__, e))

    def connectionLost(self, reason):
        if self.reactor.running:
            self.reactor.stop()


def listenToStdin(handler, reactor):
    """
    Read commands for C{handler} from stdin.
    """
    from twisted.internet.stdio import StandardIO
    StandardIO(Control(handler, reactor), reactor=reactor)


def takeFrames(buffer):
    """
    Split the complete length-prefixed frames (u32 length, then the
    payload; the plain baseline's framing) off C{buffer}.

    @return: C{(frames, rest)}, each frame with its length prefix.
    """
    frames = []
    pos = 0
    while len(buffer) - pos >= 4:
        end = pos + 4 + int.from_bytes(buffer[pos:pos + 4], "big")
        if end > len(buffer):
            break
        frames.append(buffer[pos:end])
        pos = end
    return frames, buffer[pos:]


def fail(message):
    emit("error", error=message)
    sys.exit(1)
