"""
The web: WebSocket as a byte-stream transport for any muxframe protocol
(XTMP sessions, MIO and BMP multiplexed connections), and the web endpoint
that also serves the pages and the JavaScript client.  See C{docs/web.md}.

Endpoint strings (registered by the muxframe plugin)::

    ws:tcp:8092:path=/xtmp                     server, plain WebSocket
    wss:8443:privateKey=key.pem:path=/xtmp     server over TLS (ssl:)
    ws:tcp:127.0.0.1:8092:path=/xtmp           client
    wss:example.com:443:path=/xtmp             client over TLS (tls:)

The names below are imported on first use, so that the plugin can import
L{muxframe.web.endpointstrings} without loading autobahn.
"""

import importlib

_NAMES = {
    "LIMITS": "muxframe.web.limits",
    "OriginError": "muxframe.web.origins",
    "OriginPolicy": "muxframe.web.origins",
    "WebSocketClientEndpoint": "muxframe.web.client",
    "WebSocketClosed": "muxframe.web.transport",
    "WebSocketHandshakeFailed": "muxframe.web.transport",
    "WebSocketServerEndpoint": "muxframe.web.server",
    "WebSocketSite": "muxframe.web.server",
    "WebSocketStreamTransport": "muxframe.web.transport",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    return getattr(importlib.import_module(module), name)


def __dir__():
    return __all__
