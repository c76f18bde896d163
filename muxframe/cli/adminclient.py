"""
A small blocking client of the admin API (C{docs/operations.md} section
5), over TCP (C{http://HOST:PORT}) or a UNIX socket (C{unix:PATH}), with
the bearer token.  The command line is one request at a time, so the
standard library's C{http.client} is all it needs.
"""

import http.client
import json
import socket
from urllib.parse import quote, urlencode, urlsplit

from muxframe.cli.common import CLIError, UsageError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        http.client.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self.socketPath = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socketPath)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AdminError(CLIError):
    """
    The admin API answered an error (C{status}, C{body}).
    """

    def __init__(self, status, body):
        message = body.get("error") if isinstance(body, dict) else None
        CLIError.__init__(self, "admin API: HTTP %d: %s"
                          % (status, message or body))
        self.status = status
        self.body = body


class AdminClient:
    """
    Requests to one admin service.

    @param address: C{http://HOST:PORT} (C{HOST:PORT} too) or
        C{unix:PATH}.
    @param token: the bearer token (bytes) or L{None}.
    """

    def __init__(self, address, token=None, timeout=10.0):
        self.address = address
        self.token = token
        self.timeout = timeout
        if address.startswith("unix:"):
            self._connection = lambda: _UnixConnection(address[5:], timeout)
            return
        if "://" not in address:
            address = "http://" + address
        try:
            parts = urlsplit(address)
            host, port = parts.hostname, parts.port
        except ValueError as e:
            # (A port out of range or not a number, a bracket left open.)
            raise UsageError("--admin: %r: %s" % (self.address, e))
        if parts.scheme not in ("http", "https") or not host:
            raise UsageError("--admin: expected http://HOST:PORT or "
                             "unix:PATH, not %r" % (self.address,))
        cls = http.client.HTTPSConnection if parts.scheme == "https" \
            else http.client.HTTPConnection
        self._connection = lambda: cls(host, port, timeout=timeout)

    def request(self, method, path, body=None, query=None, accept=(200,)):
        """
        C{(status, decoded JSON or text)} of one request.

        @param accept: statuses that are answers (others raise
            L{AdminError}).
        """
        if query:
            path += "?" + urlencode({k: v for k, v in query.items()
                                     if v is not None})
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = "Bearer " + self.token.decode("ascii")
        connection = self._connection()
        try:
            connection.request(method, path, data, headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise CLIError("admin API at %s: %s" % (self.address, e))
        finally:
            connection.close()
        text = raw.decode("utf-8", "replace")
        if "json" in (response.getheader("content-type") or ""):
            try:
                value = json.loads(text)
            except ValueError:
                value = text
        else:
            value = text
        if response.status not in accept:
            raise AdminError(response.status, value)
        return response.status, value

    def get(self, path, query=None, accept=(200,)):
        return self.request("GET", path, query=query, accept=accept)

    def sessionPath(self, sessionId):
        """
        The path of one session.
        """
        return "/api/v1/sessions/" + quote(sessionId, safe="")


__all__ = ["AdminClient", "AdminError"]
