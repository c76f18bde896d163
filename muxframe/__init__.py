"""
muxframe: stream multiplexing (BMP, MIO) and secure typed messaging (XTMP)
for Twisted.

The public API::

    MultiplexerFactory(childFactory, framing="mio"|"bmp", role="client"|"server", **settings)
    Multiplexer.openStream(factory) -> Deferred[child protocol]
    StreamAddress
    MultiplexedClientEndpoint, MultiplexedServerEndpoint
"""

from .errors import (
    ErrorCode,
    MuxframeError,
    LocalProtocolError,
    MultiplexedConnectError,
    PeerNotMultiplexingError,
    RemoteProtocolError,
    StreamError,
)
from .multiplexer import Multiplexer, MultiplexerFactory
from .endpoints import MultiplexedClientEndpoint, MultiplexedServerEndpoint
from .settings import SETTINGS, Settings
from .stream import StreamAddress, StreamTransport

__version__ = "0.1.0"

__all__ = [
    "ErrorCode",
    "LocalProtocolError",
    "MultiplexedClientEndpoint",
    "MultiplexedConnectError",
    "MultiplexedServerEndpoint",
    "Multiplexer",
    "MultiplexerFactory",
    "MuxframeError",
    "PeerNotMultiplexingError",
    "RemoteProtocolError",
    "SETTINGS",
    "Settings",
    "StreamAddress",
    "StreamError",
    "StreamTransport",
]
