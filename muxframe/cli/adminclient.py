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


#: Characters of a server's text an error line shows at most.
SHOWN = 300

#: What an error line says of an answer that is not the admin API's.
NOT_ADMIN = "is --admin the admin service of a muxframe role?"


def oneLine(text, limit=SHOWN):
    """
    C{text} for one line of a terminal: control and other unprintable
    characters escaped, at most C{limit} characters.
    """
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


class AdminError(CLIError):
    """
    The admin API answered an error (C{status}, C{body}).
    """

    def __init__(self, status, body):
        message = body.get("error") if isinstance(body, dict) else None
        if isinstance(message, str):
            text = "admin API: HTTP %d: %s" % (status, oneLine(message))
        else:
            text = "admin API: HTTP %d, an answer that is not the admin " \
                   "API's JSON error: %s" % (status, NOT_ADMIN)
        CLIError.__init__(self, text)
        self.status = status
        self.body = body


class AdminClient:
    """
    Requests to one admin service.

    @param address: C{http://HOST:PORT} (C{HOST:PORT} too), with a path
        prefix if the service is behind a proxy under one
        (C{https://HOST/muxframe}), or C{unix:PATH}.
    @param token: the bearer token (bytes) or L{None}.
    """

    def __init__(self, address, token=None, timeout=10.0):
        self.address = address
        self.token = token
        self.timeout = timeout
        self.prefix = ""
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
        if parts.query or parts.fragment:
            raise UsageError("--admin: %r: a query or fragment has no place "
                             "in the service's address" % (self.address,))
        # (A path is the prefix the service is served under, behind a
        # proxy: every request's path follows it.)
        self.prefix = parts.path.rstrip("/")
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
            connection.request(method, self.prefix + path, data, headers)
            response = connection.getresponse()
            raw = response.read()
        except http.client.RemoteDisconnected:
            raise CLIError("admin API at %s: the connection was closed "
                           "without an answer" % (self.address,))
        except http.client.BadStatusLine:
            # (Its text is the line received: anything, bytes included.)
            raise CLIError("admin API at %s: the answer is not HTTP: %s"
                           % (self.address, NOT_ADMIN))
        except (OSError, http.client.HTTPException) as e:
            raise CLIError("admin API at %s: %s"
                           % (self.address, oneLine(str(e) or repr(e))))
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
        if not isinstance(value, dict):
            raise CLIError("admin API at %s: %s %s answered %d without the "
                           "admin API's JSON object: %s"
                           % (self.address, method, path.split("?")[0],
                              response.status, NOT_ADMIN))
        return response.status, value

    def get(self, path, query=None, accept=(200,)):
        return self.request("GET", path, query=query, accept=accept)

    def sessionPath(self, sessionId):
        """
        The path of one session.
        """
        return "/api/v1/sessions/" + quote(sessionId, safe="")


__all__ = ["AdminClient", "AdminError", "oneLine"]
