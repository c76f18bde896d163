"""
Twisted plugin for muxframe: the C{muxframe} twistd service maker and the
C{mio:}, C{bmp:}, C{mux:}, C{ws:} and C{wss:} endpoint string parsers.

Importing this module must stay cheap: it never imports the reactor.
"""

from twisted.application.service import ServiceMaker

from muxframe.endpointstrings import (
    bmpClientParser,
    bmpServerParser,
    mioClientParser,
    mioServerParser,
    muxClientParser,
    muxServerParser,
)
from muxframe.web.endpointstrings import (
    wsClientParser,
    wsServerParser,
    wssClientParser,
    wssServerParser,
)

muxframeServiceMaker = ServiceMaker(
    "muxframe",
    "muxframe.tap",
    "Multiplexed tunnels over MIO or BMP: echo, forward and reverse tunnels",
    "muxframe",
)

__all__ = [
    "bmpClientParser",
    "bmpServerParser",
    "mioClientParser",
    "mioServerParser",
    "muxClientParser",
    "muxServerParser",
    "muxframeServiceMaker",
    "wsClientParser",
    "wsServerParser",
    "wssClientParser",
    "wssServerParser",
]
