"""
Storage engines for presence, durable queues, channel history and
cross-node fan-out (see C{docs/presence-and-queues.md}).

A server builds one with L{makeEngine} from its configuration, starts it,
and talks to its four parts through the interfaces in
L{muxframe.engines.interfaces}: C{engine.broker}, C{engine.presence},
C{engine.queues}, C{engine.history}.
"""

from muxframe.engines.config import engineSettings, makeEngine
from muxframe.engines.interfaces import (
    IBroker, IEngine, IHistoryStore, IPresenceManager, IQueueStore, IWatch)

__all__ = [
    "IBroker", "IEngine", "IHistoryStore", "IPresenceManager", "IQueueStore", "IWatch",
    "engineSettings", "makeEngine",
]
