"""
muxframe benchmarks: one command, C{python3 -m bench.run}, runs every
scenario for both framings against a baseline measured in the same run.  See
C{docs/performance.md}.
"""
