"""
The broker's state, sans-IO: subscriptions per subscriber over the
L{Sublist}, the choice of one member per queue group, and pending
requests with their deadlines.  No Twisted here; time is passed in.

Rules:

  - A subscriber has at most C{maxSubscriptions} subscriptions; the same
    pattern and group twice is one subscription.
  - L{SubscriptionTable.recipients} gives every subscriber with a matching
    plain subscription once, plus one member of every matching queue group
    (round robin, skipping members C{ready} says are not ready unless all
    are; only of the groups named, when another process serves the
    others), with subscriptions' delivery filters applied.  A subscriber is
    listed once even when several of its subscriptions match.  A group's
    turn is kept on the group in the L{Sublist} (L{QueueGroup}), so the
    table holds nothing for a group once its last member is gone.
  - L{Replies} maps a request routed to responders to its requester until
    the first answer, or its deadline; later answers are dropped.  All
    requests share one timeout, so they expire in the order they came.
"""

from muxframe.server.errors import Refusal
from muxframe.server.sublist import Sublist, Subscription
from muxframe.server.subjects import checkGroup, tokens
from muxframe.xtmp.errors import XTMPErrorCode


class SubscriptionTable:
    """
    Every subscription of every subscriber.

    @ivar sublist: the L{Sublist} index.
    """

    def __init__(self, maxSubscriptions=1024, cacheSize=1024):
        self.maxSubscriptions = maxSubscriptions
        self.sublist = Sublist(cacheSize)
        self._bySubscriber = {}

    def subscribe(self, subscriber, pattern, group=None, filters=()):
        """
        Add a subscription (idempotent).

        @return: C{(subscription, isNew)}.
        @raise BadSubject: bad pattern or group.
        @raise Refusal: (BUSY) the subscriber is at C{maxSubscriptions}.
        """
        parts = tokens(pattern)
        if group is not None:
            checkGroup(group)
        mine = self._bySubscriber.get(subscriber)
        key = (pattern, group)
        if mine is not None and key in mine:
            return mine[key], False
        if mine is not None and len(mine) >= self.maxSubscriptions:
            raise Refusal("at most %d subscriptions per session"
                          % (self.maxSubscriptions,), XTMPErrorCode.BUSY)
        sub = Subscription(subscriber, pattern, parts, group, filters)
        self.sublist.insert(sub)
        if mine is None:
            mine = self._bySubscriber[subscriber] = {}
        mine[key] = sub
        return sub, True

    def unsubscribe(self, subscriber, pattern):
        """
        Remove C{subscriber}'s subscriptions to C{pattern} (any group).

        @return: the removed L{Subscription}s.
        """
        mine = self._bySubscriber.get(subscriber)
        if not mine:
            return []
        gone = [sub for key, sub in mine.items() if key[0] == pattern]
        for sub in gone:
            del mine[(sub.pattern, sub.group)]
            self.sublist.remove(sub)
        if not mine:
            del self._bySubscriber[subscriber]
        return gone

    def removeSubscriber(self, subscriber):
        """
        Remove every subscription of C{subscriber}; return them.
        """
        mine = self._bySubscriber.pop(subscriber, None)
        if not mine:
            return []
        for sub in mine.values():
            self.sublist.remove(sub)
        return list(mine.values())

    def subscriptionsOf(self, subscriber):
        """
        C{subscriber}'s subscriptions.
        """
        return list(self._bySubscriber.get(subscriber, {}).values())

    def __len__(self):
        return self.sublist.count

    def recipients(self, subject, ready=None, groups=None):
        """
        Who gets a message on literal C{subject} (tokens): a list of
        subscribers, each once.

        @param ready: callable(subscriber) -> bool; queue-group members
            that are not ready are skipped while another member is.
        @param groups: the keys C{(pattern, group)} of the queue groups
            served (another process serves the others), or L{None}: all.
        """
        match = self.sublist.match(subject)
        plain = match.memo
        if plain is None:
            # The plain subscriptions' recipients depend on the subject and
            # the subscriptions only, so they are worked out once per
            # cached result, not once per message.
            seen = {}
            for sub in match.plain:
                if not sub.filters or sub.accepts(subject):
                    seen[sub.subscriber] = None
            plain = match.memo = tuple(seen)
        if not match.groups:
            return list(plain)
        seen = dict.fromkeys(plain)
        for key, members, queue in zip(match.keys, match.groups,
                                       match.queues):
            if groups is not None and key not in groups:
                continue
            chosen = _choose(queue, members, subject, ready)
            if chosen is not None:
                seen[chosen.subscriber] = None
        return list(seen)



def _choose(queue, members, subject, ready):
    """
    One of C{members} of the L{QueueGroup} C{queue} for C{subject}, round
    robin from C{queue.turn} (which it advances), or L{None}.
    """
    count = len(members)
    start = queue.turn % count
    fallback = None
    for step in range(count):
        sub = members[(start + step) % count]
        if sub.filters and not sub.accepts(subject):
            continue
        if ready is None or ready(sub.subscriber):
            queue.turn = start + step + 1
            return sub
        if fallback is None:
            fallback = sub
    if fallback is not None:
        queue.turn = start + 1
    return fallback


class Replies:
    """
    Requests routed to responders, awaiting their first answer.  Every
    request has the same C{timeout}, so deadlines come in insertion order
    and L{expire} only looks at the oldest.

    @ivar expired: how many ended at their deadline.
    """

    def __init__(self, timeout):
        self.timeout = timeout
        self._pending = {}
        self._nextToken = 1
        self.expired = 0

    def __len__(self):
        return len(self._pending)

    def add(self, requester, context, now):
        """
        Remember a request from C{requester} (with any C{context}) until
        C{now + timeout}; return its token.
        """
        token = self._nextToken
        self._nextToken += 1
        self._pending[token] = (requester, context, now + self.timeout)
        return token

    def get(self, token):
        """
        The pending request C{token}: C{(requester, context)}, or L{None};
        it stays pending.
        """
        entry = self._pending.get(token)
        return entry[:2] if entry is not None else None

    def resolve(self, token):
        """
        Take the pending request C{token}: C{(requester, context)}, or
        L{None} if it was already answered or expired.
        """
        entry = self._pending.pop(token, None)
        return entry[:2] if entry is not None else None

    def expire(self, now):
        """
        Remove and return C{(token, requester, context)} of every request
        whose deadline has passed.
        """
        pending = self._pending
        gone = []
        while pending:
            token = next(iter(pending))
            requester, context, deadline = pending[token]
            if deadline > now:
                break
            del pending[token]
            gone.append((token, requester, context))
        self.expired += len(gone)
        return gone

    def nextDeadline(self):
        """
        The earliest deadline, or L{None} when nothing is pending.
        """
        if not self._pending:
            return None
        return self._pending[next(iter(self._pending))][2]
