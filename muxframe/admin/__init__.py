"""
Operator surfaces of every role (C{xtmp}, and the multiplexer's C{server}
and C{client}): the admin HTTP service (health, Prometheus metrics, the
admin API), the periodic summary line and JSON logs.  C{docs/operations.md}
describes what an operator sees.

Modules: L{settings} (what is configured, the multiplexer roles'
options), L{status} (health, rates, the interface every role's status
provides), L{xtmpstatus} and L{muxstatus} (the roles' status, read through
their public counters and observers), L{metrics} (the metric catalogue,
collected at scrape time), L{http} (JSON resources, bearer tokens, bounded
bodies), L{api} (the resources), L{logs} (summary, JSON logs) and
L{service} (the services and their order).

The main names are importable from here (loaded when first used).
"""

from muxframe.lazy import lazyExports

_NAMES = {
    "AdminService": "muxframe.admin.service",
    "OperatedRole": "muxframe.admin.service",
    "OperatorSettings": "muxframe.admin.settings",
    "XTMPStatus": "muxframe.admin.xtmpstatus",
    "MultiplexerStatus": "muxframe.admin.muxstatus",
    "CATALOGUE": "muxframe.admin.metrics",
}

__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazyExports(__name__, _NAMES)
