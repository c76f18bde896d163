"""
XTMP: the eXtended Transport Messaging Protocol, as muxframe defines it.
"""
