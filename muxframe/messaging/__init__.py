"""
Presence, durable queues and channel history over XTMP: the wire messages
(L{muxframe.messaging.wire}) and the client that speaks them
(L{muxframe.messaging.client}).  The server side is in
L{muxframe.server.storage}; C{docs/presence-and-queues.md} is the guide.
"""
