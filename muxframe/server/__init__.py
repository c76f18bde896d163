"""
The XTMP server: what C{twistd -n muxframe xtmp --config FILE} runs.

Modules (see C{docs/xtmp-server.md}): L{config} (the settings, their
schema and validation), L{subjects}, L{sublist}, L{broker} and
L{permissions} (the broker's sans-IO core), L{limits} (the defences'
sans-IO state), L{events} (counted, observed, throttled log events),
L{registry} (live sessions), L{router} (handlers per message type),
L{hub} (delivery between sessions), L{session} and L{factory} (the Twisted
protocol and factory), L{service} and L{tap} (the twistd role), and
L{interfaces} (the seams operator tools and other engines use).
"""
