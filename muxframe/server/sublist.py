"""
The subscription index: which subscriptions match a subject, sans-IO.

A trie over subject tokens, as NATS's sublist: each level maps literal
tokens to the next level and has one branch for C{*} and one end point
for C{>}; a node holds the plain subscriptions and the queue-group
subscriptions of the pattern that ends there.  L{Sublist.match} walks the
literal branch and the C{*} branch at every token and collects C{>} end
points on the way, so its cost depends on the subject's length and the
wildcards present, not on the number of subscriptions.

Results are cached per subject (bounded, L{Sublist.cacheSize}).  Inserting
or removing a subscription drops exactly the cached results it could
change: the entry of a literal pattern, or every cached subject a wildcard
pattern matches.

A result (L{Match}) holds the matching plain subscriptions and, per queue
group (a group is a pattern plus a group name, as in NATS), its members
and its L{QueueGroup}: the group's round-robin turn, kept on the group's
own node here, so it goes with the group's last member.  Nothing here
knows what a subscriber is.
"""

from muxframe.server.subjects import isLiteral, matches


class Subscription:
    """
    One subscription.

    @ivar subscriber: whoever receives the messages (opaque here).
    @ivar pattern: the pattern as given.
    @ivar tokens: its tokens.
    @ivar group: the queue group name, or L{None}.
    @ivar filters: token tuples of subjects not to deliver on this
        subscription (permissions' deny patterns that overlap it).
    """

    __slots__ = ("subscriber", "pattern", "tokens", "group", "filters")

    def __init__(self, subscriber, pattern, tokens, group=None, filters=()):
        self.subscriber = subscriber
        self.pattern = pattern
        self.tokens = tokens
        self.group = group
        self.filters = filters

    def accepts(self, subject):
        """
        Whether a message on literal C{subject} (tokens) may be delivered
        on this subscription (no filter matches it).
        """
        for f in self.filters:
            if matches(f, subject):
                return False
        return True

    def __repr__(self):
        return "<Subscription %s%s>" % (
            self.pattern, " group=%s" % (self.group,) if self.group else "")


class QueueGroup:
    """
    The members of one queue group (a pattern and a group name) and its
    round-robin turn.  It lives on the pattern's node of the index and is
    dropped with the group's last member, so nothing outlives the group.

    @ivar members: the member subscriptions (a dict used as an ordered set).
    @ivar turn: where the next choice starts (modulo the members to choose
        from); whoever chooses a member reads and advances it
        (L{SubscriptionTable.recipients}, L{ClusterEngine.plan}).
    """

    __slots__ = ("members", "turn")

    def __init__(self):
        self.members = {}
        self.turn = 0


class Match:
    """
    The subscriptions matching one subject.

    @ivar plain: the plain subscriptions.
    @ivar groups: one tuple of member subscriptions per queue group, in a
        stable order; C{keys} names them (C{(pattern, group)}) and
        C{queues} gives their L{QueueGroup}s (for the round-robin turn).
    @ivar memo: what a user of the sublist derives from this result and
        keeps with it (L{None} until set): a result is dropped from the
        cache whenever a subscription that could change it comes or goes,
        so the memo is never stale.
    """

    __slots__ = ("plain", "groups", "keys", "queues", "memo")

    def __init__(self, plain, groups, keys, queues=()):
        self.plain = plain
        self.groups = groups
        self.keys = keys
        self.queues = queues
        self.memo = None

    def __len__(self):
        return len(self.plain) + sum(len(g) for g in self.groups)


class _Node:
    __slots__ = ("literal", "star", "rest", "plain", "groups")

    def __init__(self):
        self.literal = None
        self.star = None
        self.rest = None
        self.plain = None
        self.groups = None

    def isEmpty(self):
        return not (self.literal or self.star or self.rest or self.plain
                    or self.groups)


_EMPTY = Match((), (), (), ())


class Sublist:
    """
    Subscriptions indexed by pattern, with a bounded cache of results.

    @ivar count: the number of subscriptions held.
    @ivar stats: counters (C{matches}, C{cacheHits}, C{inserts},
        C{removes}, C{invalidations}).
    """

    def __init__(self, cacheSize=1024):
        self.cacheSize = cacheSize
        self._root = _Node()
        self._cache = {}
        self.count = 0
        self.stats = {"matches": 0, "cacheHits": 0, "inserts": 0,
                      "removes": 0, "invalidations": 0}

    def insert(self, sub):
        """
        Add L{Subscription} C{sub}.
        """
        node = self._root
        for token in sub.tokens:
            if token == ">":
                if node.rest is None:
                    node.rest = _Node()
                node = node.rest
            elif token == "*":
                if node.star is None:
                    node.star = _Node()
                node = node.star
            else:
                if node.literal is None:
                    node.literal = {}
                nxt = node.literal.get(token)
                if nxt is None:
                    nxt = node.literal[token] = _Node()
                node = nxt
        if sub.group is None:
            if node.plain is None:
                node.plain = {}
            node.plain[sub] = None
        else:
            if node.groups is None:
                node.groups = {}
            queue = node.groups.get(sub.group)
            if queue is None:
                queue = node.groups[sub.group] = QueueGroup()
            queue.members[sub] = None
        self.count += 1
        self.stats["inserts"] += 1
        self._invalidate(sub.tokens)

    def remove(self, sub):
        """
        Remove L{Subscription} C{sub}; return whether it was held.
        """
        path = []
        node = self._root
        for token in sub.tokens:
            path.append((node, token))
            if token == ">":
                node = node.rest
            elif token == "*":
                node = node.star
            else:
                node = node.literal.get(token) if node.literal else None
            if node is None:
                return False
        if sub.group is None:
            if not node.plain or node.plain.pop(sub, 0) is not None:
                return False
            if not node.plain:
                node.plain = None
        else:
            queue = node.groups.get(sub.group) if node.groups else None
            if queue is None or queue.members.pop(sub, 0) is not None:
                return False
            if not queue.members:
                del node.groups[sub.group]
                if not node.groups:
                    node.groups = None
        # Prune the branches left empty, so memory follows subscriptions.
        while path and node.isEmpty():
            parent, token = path.pop()
            if token == ">":
                parent.rest = None
            elif token == "*":
                parent.star = None
            else:
                del parent.literal[token]
                if not parent.literal:
                    parent.literal = None
            node = parent
        self.count -= 1
        self.stats["removes"] += 1
        self._invalidate(sub.tokens)
        return True

    def _invalidate(self, pattern):
        cache = self._cache
        if not cache:
            return
        if isLiteral(pattern):
            if cache.pop(pattern, None) is not None:
                self.stats["invalidations"] += 1
            return
        stale = [s for s in cache if matches(pattern, s)]
        for s in stale:
            del cache[s]
        self.stats["invalidations"] += len(stale)

    def match(self, subject):
        """
        The L{Match} for literal C{subject} (a token tuple).
        """
        self.stats["matches"] += 1
        cached = self._cache.get(subject)
        if cached is not None:
            self.stats["cacheHits"] += 1
            return cached
        plain = []
        groups = {}
        self._collect(self._root, subject, 0, plain, groups)
        if not plain and not groups:
            result = _EMPTY
        else:
            keys = tuple(groups)
            result = Match(tuple(plain),
                           tuple(tuple(groups[k][1]) for k in keys), keys,
                           tuple(groups[k][0] for k in keys))
        if len(self._cache) >= self.cacheSize:
            # Drop the oldest entry (dicts keep insertion order).
            del self._cache[next(iter(self._cache))]
        self._cache[subject] = result
        return result

    def _collect(self, node, subject, index, plain, groups):
        while True:
            if node.rest is not None and index < len(subject):
                self._take(node.rest, plain, groups)
            if index == len(subject):
                self._take(node, plain, groups)
                return
            token = subject[index]
            if node.star is not None:
                self._collect(node.star, subject, index + 1, plain, groups)
            nxt = node.literal.get(token) if node.literal else None
            if nxt is None:
                return
            node = nxt
            index += 1

    @staticmethod
    def _take(node, plain, groups):
        if node.plain:
            plain.extend(node.plain)
        if node.groups:
            # A key names one node's group (its pattern ends at that node),
            # so each key is taken once.
            for name, queue in node.groups.items():
                if queue.members:
                    key = (next(iter(queue.members)).pattern, name)
                    groups[key] = (queue, queue.members)
