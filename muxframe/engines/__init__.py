"""
Storage engines for presence, durable queues, channel history and
cross-node fan-out (see C{docs/presence-and-queues.md}).
"""
