"""
The session registry: every live authenticated session of a server, with
a Python API to list, look up and disconnect them, and observers told as
sessions come and go.  No Twisted here; sessions are L{ISession}s.
"""

from zope.interface import implementer

from muxframe.server.interfaces import ISessionRegistry
from muxframe.xtmp.errors import XTMPErrorCode


class SessionIdentity:
    """
    Who a session authenticated as.

    @ivar kind: C{"key"}, C{"token"} or C{"anonymous"}.
    @ivar name: the key's name in authorized_keys, the token's subject,
        or L{None}.
    @ivar fingerprint: the key's fingerprint (hex SHA-256 of its
        encoding) or the token's (hex SHA-256 of the token); L{None} for
        anonymous sessions.
    """

    __slots__ = ("kind", "name", "fingerprint")

    def __init__(self, kind, name=None, fingerprint=None):
        self.kind = kind
        self.name = name
        self.fingerprint = fingerprint

    @property
    def label(self):
        """
        What permissions and operators call it: the name, else the
        fingerprint, else C{"anonymous"}.
        """
        return self.name or self.fingerprint or "anonymous"

    def asDict(self):
        """
        The identity as plain data.
        """
        return {"kind": self.kind, "name": self.name,
                "fingerprint": self.fingerprint}

    def __repr__(self):
        return "<SessionIdentity %s %s>" % (self.kind, self.label[:24])


@implementer(ISessionRegistry)
class SessionRegistry:
    """
    Live sessions by id.

    @ivar opened: sessions added so far.
    @ivar closed: sessions removed so far.
    @ivar peak: the most sessions live at once.
    """

    def __init__(self):
        self._sessions = {}
        self._observers = []
        self.opened = self.closed = self.peak = 0

    def __len__(self):
        return len(self._sessions)

    def __iter__(self):
        return iter(list(self._sessions.values()))

    def add(self, session):
        """
        Register C{session} (its handshake is complete).
        """
        self._sessions[session.sessionId] = session
        self.opened += 1
        self.peak = max(self.peak, len(self._sessions))
        for observer in list(self._observers):
            observer.sessionAdded(session)

    def remove(self, session, reason=None):
        """
        Forget C{session} (it ended with C{reason}).
        """
        if self._sessions.get(session.sessionId) is not session:
            return
        del self._sessions[session.sessionId]
        self.closed += 1
        for observer in list(self._observers):
            observer.sessionRemoved(session, reason)

    def get(self, sessionId):
        """
        The session with C{sessionId}, or L{None}.
        """
        return self._sessions.get(sessionId)

    def list(self, identity=None):
        """
        Live sessions, oldest first; with C{identity}, those whose name or
        fingerprint is C{identity}.
        """
        sessions = list(self._sessions.values())
        if identity is not None:
            sessions = [s for s in sessions
                        if identity in (s.identity.name,
                                        s.identity.fingerprint)]
        return sessions

    def disconnect(self, sessionId, code=XTMPErrorCode.GOING_AWAY,
                   reason="disconnected by the operator"):
        """
        Disconnect the session with C{sessionId}; return whether it was
        live.
        """
        session = self._sessions.get(sessionId)
        if session is None:
            return False
        session.disconnect(code, reason)
        return True

    def describe(self, session):
        """
        A JSON-ready description of C{session}.
        """
        return {
            "sessionId": session.sessionId,
            "peer": session.peer,
            "identity": session.identity.asDict(),
            "connectedAt": session.connectedAt,
            "lastActivity": session.lastActivity,
            "rtt": session.rtt,
            "counters": session.counters,
            "subscriptions": [
                {"subject": pattern, "group": group}
                for pattern, group in session.subscriptions()],
        }

    def addObserver(self, observer):
        """
        Tell C{observer} (an L{IRegistryObserver}) about sessions from now
        on.
        """
        self._observers.append(observer)

    def removeObserver(self, observer):
        """
        Stop telling C{observer}.
        """
        self._observers.remove(observer)

    def stats(self):
        """
        The registry's counters.
        """
        return {"live": len(self._sessions), "opened": self.opened,
                "closed": self.closed, "peak": self.peak}
