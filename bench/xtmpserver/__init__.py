"""
Benchmarks of the XTMP server, each beside a baseline measured
in the same invocation: idle-session memory, handshakes per server core,
fan-out deliveries per server core, request/reply routed between two
clients, heartbeat CPU of idle sessions, and request latency under a
handshake flood.  C{python3 -m bench.xtmpserver --help}; see
C{docs/performance.md}.
"""
