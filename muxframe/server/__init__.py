"""
The XTMP server: what C{twistd -n muxframe xtmp --config FILE} runs.

Modules (see C{docs/xtmp-server.md}): L{config} and L{schema} (the
settings, their schema and validation), L{subjects}, L{sublist},
L{broker} and L{permissions} (the broker's sans-IO core), L{limits} (the
defences' sans-IO state), L{events} (counted, observed, throttled log
events), L{registry} (live sessions), L{router} (handlers per message
type), L{hub} (delivery between sessions), L{timers} (coarse session
timers, handshake scheduling), L{session} and L{factory} (the Twisted
protocol and factory), L{service} and L{tap} (the twistd role), and
L{interfaces} (the seams operator tools and other engines use).

The main names are importable from here (loaded when first used, so
importing the twistd plugin stays cheap).
"""

from muxframe.lazy import lazyExports

_NAMES = {
    "XTMPServer": "muxframe.server.factory",
    "ServerSession": "muxframe.server.session",
    "ServerConfig": "muxframe.server.config",
    "ConfigError": "muxframe.server.errors",
    "Refusal": "muxframe.server.errors",
    "XTMPServerService": "muxframe.server.service",
    "SessionRegistry": "muxframe.server.registry",
    "SessionIdentity": "muxframe.server.registry",
    "Broker": "muxframe.server.hub",
    "MemoryEngine": "muxframe.server.hub",
    "Router": "muxframe.server.router",
}

__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazyExports(__name__, _NAMES)
