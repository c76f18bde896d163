"""
muxframe: stream multiplexing (BMP, MIO) and secure typed messaging (XTMP)
for Twisted.
"""

__version__ = "0.1.0"
