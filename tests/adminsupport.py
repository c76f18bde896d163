"""
Helpers of the operator-surface tests (no tests here): a running role's
admin service over HTTP (twisted.web's Agent, TCP or a UNIX socket),
Prometheus scrapes parsed by prometheus_client's own parser, JSON log
records, and the Grafana dashboard's queries.
"""

import json
import os
import re
import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = b"t0ken-for-the-admin-api"


def writeToken(directory, token=TOKEN):
    """
    The admin token file in C{directory}; its path.
    """
    path = os.path.join(directory, "admin.token")
    with open(path, "wb") as f:
        f.write(token + b"\n")
    return path


@implementer(IAgentEndpointFactory)
class _UnixEndpoints:
    def __init__(self, path):
        self.path = path

    def endpointForURI(self, uri):
        return UNIXClientEndpoint(reactor, self.path)


class Admin:
    """
    Requests to one admin service: C{base} is C{http://127.0.0.1:PORT},
    or C{unix=PATH} for a UNIX socket.
    """

    def __init__(self, port=None, unix=None, token=TOKEN):
        self.token = token
        if unix is not None:
            self.base = b"http://localhost"
            self.agent = Agent.usingEndpointFactory(reactor, _UnixEndpoints(unix))
        else:
            self.base = b"http://127.0.0.1:%d" % (port,)
            self.agent = Agent(reactor)

    @inlineCallbacks
    def request(self, method, path, body=None, token=True, headers=None):
        """
        C{(status, JSON or text, response headers)}.
        """
        from twisted.web.client import FileBodyProducer
        from io import BytesIO
        raw = Headers(headers or {})
        if token and self.token is not None:
            raw.setRawHeaders(b"authorization", [b"Bearer " + (
                self.token if token is True else token)])
        producer = None
        if body is not None and hasattr(body, "startProducing"):
            producer = body
        elif body is not None:
            if not isinstance(body, bytes):
                body = json.dumps(body).encode("utf-8")
            producer = FileBodyProducer(BytesIO(body))
        response = yield self.agent.request(
            method, self.base + path.encode("ascii"), raw, producer)
        data = yield readBody(response)
        kind = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        value = json.loads(data) if b"json" in kind else data.decode("utf-8")
        return response.code, value, response.headers

    def get(self, path, **kw):
        return self.request(b"GET", path, **kw)

    @inlineCallbacks
    def scrape(self, token=True):
        """
        C{/metrics}, parsed: C{{family name: family}}.
        """
        from prometheus_client.parser import text_string_to_metric_families
        code, text, headers = yield self.get("/metrics", token=token)
        if code != 200:
            raise AssertionError("/metrics answered %d: %s" % (code, text))
        return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families, family, **labels):
    """
    The value of C{family}'s sample (its C{_total} for counters) with
    C{labels}, or 0.0 if there is none.
    """
    f = families[family]
    for s in f.samples:
        if s.name in (family, family + "_total") and all(
                s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


def histogramCount(families, family, **labels):
    """
    The C{_count} of a histogram's series with C{labels}.
    """
    for s in families[family].samples:
        if s.name == family + "_count" and all(
                s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


@inlineCallbacks
def waitFor(condition, seconds=20.0, what="a condition"):
    """
    Poll C{condition()} (a value or a Deferred of one) until it is true.
    """
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if hasattr(value, "addCallback"):
            value = yield value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % (what,))
        yield deferLater(reactor, 0.05)


def jsonRecords(text):
    """
    The records of twisted.logger's JSON output (RS-separated).
    """
    records = []
    for chunk in text.split("\x1e"):
        chunk = chunk.strip()
        if chunk.startswith("{"):
            try:
                records.append(json.loads(chunk))
            except ValueError:
                pass
    return records


def dashboard():
    """
    The Grafana dashboard in docs/.
    """
    with open(os.path.join(ROOT, "docs", "grafana-dashboard.json")) as f:
        return json.load(f)


_SUFFIX = re.compile(r"_(total|bucket|sum|count)$")


def dashboardMetrics(board=None):
    """
    Every C{muxframe_*} family name the dashboard's queries use.
    """
    board = board or dashboard()
    names = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and \
                        isinstance(value, str):
                    for name in re.findall(r"\b(muxframe_[a-z0-9_]+)", value):
                        names.add(name)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(board)
    return names


def familyOf(name, families):
    """
    The scraped family a query's metric name belongs to, or L{None}.
    """
    if name in families:
        return name
    base = _SUFFIX.sub("", name)
    return base if base in families else None
