"""
Per-identity publish and subscribe permissions, sans-IO.

Rules (NATS's model):

  - Each identity has, for I{publish} and for I{subscribe}, an optional
    C{allow} list and a C{deny} list of subject patterns.  No entry for an
    identity (and no C{default} entry) means everything is allowed.
  - Publishing (or requesting) on literal subject S is allowed when S
    matches some C{allow} pattern (or there is no C{allow} list) and no
    C{deny} pattern.
  - Subscribing to pattern P is allowed when some C{allow} pattern
    I{covers} P (every subject P matches, it matches too; or there is no
    C{allow} list) and no C{deny} pattern covers P.  A C{deny} pattern that
    only I{overlaps} P becomes a delivery filter on that subscription:
    messages on subjects it matches are not delivered there.
  - Answering a request routed by the server needs no permission: the
    server addresses the reply itself.

Publish decisions are cached per subject (bounded).
"""

from muxframe.server.errors import PermissionDenied
from muxframe.server.subjects import covers, matches, overlaps, tokens


class Rule:
    """
    Allow and deny patterns for one action.

    @ivar allow: token tuples, or L{None} for "anything".
    @ivar deny: token tuples.
    """

    __slots__ = ("allow", "deny", "source")

    def __init__(self, allow=None, deny=()):
        self.source = {"allow": list(allow) if allow is not None else None,
                       "deny": list(deny)}
        self.allow = (tuple(tokens(p) for p in allow)
                      if allow is not None else None)
        self.deny = tuple(tokens(p) for p in deny)


class Permissions:
    """
    What one identity may publish and subscribe to.
    """

    cacheSize = 256

    def __init__(self, publish=None, subscribe=None):
        self.publish = publish or Rule()
        self.subscribe = subscribe or Rule()
        self._published = {}

    def canPublish(self, subject):
        """
        Whether literal C{subject} (tokens) may be published on.
        """
        cache = self._published
        answer = cache.get(subject)
        if answer is None:
            rule = self.publish
            answer = (rule.allow is None or any(
                matches(a, subject) for a in rule.allow)) and not any(
                matches(d, subject) for d in rule.deny)
            if len(cache) >= self.cacheSize:
                cache.clear()
            cache[subject] = answer
        return answer

    def checkPublish(self, subject, text):
        """
        Raise L{PermissionDenied} unless C{subject} may be published on.
        """
        if not self.canPublish(subject):
            raise PermissionDenied("publish to %r is not permitted" % (text,))

    def checkSubscribe(self, pattern, text):
        """
        Check a subscription to C{pattern} (tokens).

        @return: the delivery filters (deny patterns that overlap it).
        @raise PermissionDenied: it is not allowed.
        """
        rule = self.subscribe
        if (rule.allow is not None and not any(
                covers(a, pattern) for a in rule.allow)) or any(
                covers(d, pattern) for d in rule.deny):
            raise PermissionDenied("subscription to %r is not permitted"
                                   % (text,))
        return tuple(d for d in rule.deny if overlaps(d, pattern))

    def describe(self):
        """
        The rules as plain data (for operators).
        """
        return {"publish": self.publish.source,
                "subscribe": self.subscribe.source}


class PermissionTable:
    """
    Permissions by identity name, with an optional C{default} entry for
    identities that have none.
    """

    def __init__(self, entries=None, default=None):
        self.entries = dict(entries or {})
        self.default = default

    def forIdentity(self, name):
        """
        The L{Permissions} of identity C{name}, or L{None} when it may do
        everything.
        """
        found = self.entries.get(name) if name is not None else None
        return found if found is not None else self.default
