"""
Echo checks shared by the many, scale and churn scenarios: a child that
writes its payload, half-closes and verifies the echo, and a tracker that
fires when every stream has finished (or the run's deadline passed).
"""

from zope.interface import implementer

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol


def payloadFor(index, size):
    """
    The distinct payload of stream C{index}.
    """
    return bytes([index % 251 + 1]) * size


class Tracker:
    """
    Count finished streams: verified, mismatched, failed; fire C{done}
    with a summary when C{total} have finished.
    """

    def __init__(self, total, onFinish=None):
        self.total = total
        self.verified = 0
        self.mismatched = 0
        self.failed = 0
        self.errors = {}
        self.done = Deferred()
        self.onFinish = onFinish

    @property
    def finished(self):
        return self.verified + self.mismatched + self.failed

    def finish(self, ok, reason=None):
        if ok:
            self.verified += 1
        elif reason is not None:
            self.failed += 1
            key = "%s: %s" % (type(reason.value).__name__, reason.value)
            self.errors[key[:200]] = self.errors.get(key[:200], 0) + 1
        else:
            self.mismatched += 1
        if self.onFinish is not None:
            self.onFinish()
        if self.finished >= self.total and not self.done.called:
            self.done.callback(self.summary())

    def summary(self):
        return {
            "verified": self.verified,
            "mismatched": self.mismatched,
            "failed": self.failed,
            "lost": self.total - self.finished,
            "errors": dict(sorted(self.errors.items(), key=lambda kv: -kv[1])[:5]),
        }


@implementer(IHalfCloseableProtocol)
class EchoCheck(Protocol):
    def __init__(self, payload, tracker):
        self.payload = payload
        self.tracker = tracker
        self.chunks = []

    def connectionMade(self):
        self.transport.write(self.payload)
        self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.chunks.append(data)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        if reason.check(ConnectionDone):
            self.tracker.finish(b"".join(self.chunks) == self.payload)
        else:
            self.tracker.finish(False, reason)


class EchoCheckFactory(Factory):
    def __init__(self, payload, tracker):
        self.payload = payload
        self.tracker = tracker

    def buildProtocol(self, addr):
        return EchoCheck(self.payload, self.tracker)
