"""
Tests for the broker's sans-IO core: subject syntax, the sublist (against
a brute-force matcher, by Hypothesis), the subscription table (queue
groups, filters, limits), pending replies, and permissions.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from muxframe.server.broker import Replies, SubscriptionTable
from muxframe.server.errors import BadSubject, PermissionDenied, Refusal
from muxframe.server.permissions import Permissions, PermissionTable, Rule
from muxframe.server.sublist import Sublist, Subscription
from muxframe.server.subjects import (
    MAX_LENGTH, MAX_TOKENS, checkGroup, covers, matches, overlaps, tokens,
)
from muxframe.xtmp.errors import XTMPErrorCode
from muxframe.xtmp.subscriptions import subjectMatches

ALPHABET = ["a", "b", "c"]
literalTokens = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=4)


@st.composite
def patterns(draw):
    parts = draw(st.lists(st.sampled_from(ALPHABET + ["*"]), min_size=1,
                          max_size=4))
    if draw(st.booleans()):
        parts[-1] = ">"
    return tuple(parts)


def allSubjects(maxLength=5):
    out = [()]
    result = []
    for _ in range(maxLength):
        out = [s + (t,) for s in out for t in ALPHABET]
        result.extend(out)
    return result


SUBJECTS = allSubjects()


class SyntaxTests(SynchronousTestCase):
    def test_valid(self):
        self.assertEqual(tokens("a.b.c"), ("a", "b", "c"))
        self.assertEqual(tokens("a.*.>"), ("a", "*", ">"))
        self.assertEqual(tokens("a*.b", wildcards=False), ("a*", "b"))

    def test_invalid(self):
        for bad in ["", "a..b", ".a", "a.", "a b", "a.>.b", "a\tb",
                    "x" * (MAX_LENGTH + 1), ".".join(["a"] * (MAX_TOKENS + 1))]:
            e = self.assertRaises(BadSubject, tokens, bad)
            self.assertEqual(e.code, XTMPErrorCode.BAD_SUBJECT)

    def test_unicodeWhitespace(self):
        """
        Every character C{str.isspace} is true for is whitespace, in a
        pattern, a literal subject and a queue group name, not only
        ASCII's (before, C{a\u00a0b} and C{a.\u2028} were subjects);
        other non-ASCII characters are fine.
        """
        from muxframe.server import subjects
        self.addCleanup(subjects._literals.clear)
        spaces = [c for c in map(chr, range(0x110000)) if c.isspace()]
        self.assertIn("\u00a0", spaces)
        for space in spaces:
            for bad in ["a%sb" % (space,), "a.%s" % (space,), space]:
                self.assertRaises(BadSubject, tokens, bad)
                self.assertRaises(BadSubject, tokens, bad, wildcards=False)
                self.assertNotIn(bad, subjects._literals)
            self.assertRaises(BadSubject, checkGroup, "g%s" % (space,))
        self.assertEqual(tokens("caf\u00e9.\u00fc\u200b", wildcards=False),
                         ("caf\u00e9", "\u00fc\u200b"))
        self.assertEqual(checkGroup("w\u00f6rkers"), "w\u00f6rkers")

    def test_literalOnly(self):
        self.assertRaises(BadSubject, tokens, "a.*", wildcards=False)
        self.assertRaises(BadSubject, tokens, ">", wildcards=False)

    def test_groups(self):
        self.assertEqual(checkGroup("workers"), "workers")
        for bad in ["", "a.b", "a b", "x" * 65, None]:
            self.assertRaises(BadSubject, checkGroup, bad)

    @given(patterns(), literalTokens)
    @settings(deadline=None)
    def test_matchesAgreesWithClient(self, pattern, subject):
        """
        The server's matcher and the client library's agree.
        """
        self.assertEqual(matches(pattern, tuple(subject)),
                         subjectMatches(".".join(pattern), ".".join(subject)))

    @given(patterns(), patterns())
    @settings(max_examples=300, deadline=None)
    def test_coversAndOverlapsBruteForce(self, a, b):
        """
        covers and overlaps agree with enumerating every subject of up to
        five tokens.
        """
        ma = {s for s in SUBJECTS if matches(a, s)}
        mb = {s for s in SUBJECTS if matches(b, s)}
        # Subjects longer than five tokens only matter through '>': a
        # pattern ending in '>' that covers at length 5 covers beyond.
        self.assertEqual(covers(a, b), mb <= ma, (a, b))
        self.assertEqual(overlaps(a, b), bool(ma & mb), (a, b))


class SublistTests(SynchronousTestCase):
    def sub(self, name, pattern, group=None):
        return Subscription(name, pattern, tokens(pattern), group)

    @given(st.lists(st.tuples(patterns(), st.sampled_from([None, "g", "h"]),
                              st.booleans()), max_size=30),
           st.lists(literalTokens, min_size=1, max_size=10))
    @settings(max_examples=200, deadline=None)
    def test_againstBruteForce(self, operations, subjects):
        """
        After any sequence of inserts and removes, match() returns exactly
        the subscriptions a linear scan finds, with and without the cache.
        """
        sl = Sublist(cacheSize=4)
        held = []
        for index, (pattern, group, remove) in enumerate(operations):
            if remove and held:
                sub = held.pop(index % len(held))
                self.assertTrue(sl.remove(sub))
                self.assertFalse(sl.remove(sub))
            else:
                sub = Subscription(index, ".".join(pattern), pattern, group)
                sl.insert(sub)
                held.append(sub)
            for subject in subjects:
                subject = tuple(subject)
                for _ in range(2):  # computed, then cached
                    m = sl.match(subject)
                    expected = [s for s in held if matches(s.tokens, subject)]
                    self.assertEqual(set(m.plain),
                                     {s for s in expected if s.group is None})
                    got = {}
                    for key, members in zip(m.keys, m.groups):
                        got[key] = set(members)
                    want = {}
                    for s in expected:
                        if s.group is not None:
                            want.setdefault((s.pattern, s.group), set()).add(s)
                    self.assertEqual(got, want)
        self.assertEqual(sl.count, len(held))
        for sub in held:
            sl.remove(sub)
        self.assertTrue(sl._root.isEmpty())

    def test_cacheInvalidatedByWildcard(self):
        sl = Sublist()
        a = self.sub("A", "x.y")
        sl.insert(a)
        self.assertEqual(sl.match(("x", "y")).plain, (a,))
        b = self.sub("B", "x.*")
        sl.insert(b)
        self.assertEqual(set(sl.match(("x", "y")).plain), {a, b})
        sl.remove(a)
        self.assertEqual(sl.match(("x", "y")).plain, (b,))
        self.assertGreaterEqual(sl.stats["cacheHits"], 0)

    def test_cacheBounded(self):
        sl = Sublist(cacheSize=8)
        sl.insert(self.sub("A", ">"))
        for i in range(100):
            sl.match(("s%d" % i,))
        self.assertLessEqual(len(sl._cache), 8)


class TableTests(SynchronousTestCase):
    def test_plainAndGroups(self):
        """
        Plain subscribers each get the message once; one member per queue
        group, round robin.
        """
        t = SubscriptionTable()
        t.subscribe("p1", "orders.*")
        t.subscribe("p1", "orders.>")
        t.subscribe("p2", "orders.new")
        for worker in ("w1", "w2", "w3"):
            t.subscribe(worker, "orders.*", group="workers")
        picked = []
        for _ in range(6):
            r = t.recipients(("orders", "new"))
            self.assertEqual(r.count("p1"), 1)
            self.assertIn("p2", r)
            workers = [x for x in r if x.startswith("w")]
            self.assertEqual(len(workers), 1)
            picked.extend(workers)
        self.assertEqual(sorted(picked), ["w1", "w1", "w2", "w2", "w3", "w3"])

    def test_readySkipsBusyMembers(self):
        t = SubscriptionTable()
        for worker in ("w1", "w2"):
            t.subscribe(worker, "jobs", group="g")
        for _ in range(4):
            self.assertEqual(t.recipients(("jobs",), ready=lambda s: s == "w2"),
                             ["w2"])
        # If nobody is ready, someone still gets it.
        self.assertEqual(len(t.recipients(("jobs",), ready=lambda s: False)), 1)

    def test_filters(self):
        t = SubscriptionTable()
        t.subscribe("s", "a.*", filters=(("a", "secret"),))
        self.assertEqual(t.recipients(("a", "x")), ["s"])
        self.assertEqual(t.recipients(("a", "secret")), [])

    def test_idempotentAndUnsubscribe(self):
        t = SubscriptionTable()
        sub, new = t.subscribe("s", "a")
        self.assertTrue(new)
        self.assertEqual(t.subscribe("s", "a"), (sub, False))
        t.subscribe("s", "a", group="g")
        self.assertEqual(len(t), 2)
        self.assertEqual(len(t.unsubscribe("s", "a")), 2)
        self.assertEqual(t.recipients(("a",)), [])
        self.assertEqual(len(t), 0)

    def test_limit(self):
        t = SubscriptionTable(maxSubscriptions=2)
        t.subscribe("s", "a")
        t.subscribe("s", "b")
        e = self.assertRaises(Refusal, t.subscribe, "s", "c")
        self.assertEqual(e.code, XTMPErrorCode.BUSY)
        self.assertEqual(len(t.removeSubscriber("s")), 2)
        t.subscribe("s", "c")

    def test_badInput(self):
        t = SubscriptionTable()
        self.assertRaises(BadSubject, t.subscribe, "s", "a..b")
        self.assertRaises(BadSubject, t.subscribe, "s", "a", group="x.y")
        self.assertEqual(len(t), 0)


class RepliesTests(SynchronousTestCase):
    def test_resolveAndExpire(self):
        r = Replies(timeout=10)
        t1 = r.add("A", "ctx1", now=0)
        t2 = r.add("B", "ctx2", now=5)
        self.assertEqual(r.nextDeadline(), 10)
        self.assertEqual(r.resolve(t1), ("A", "ctx1"))
        self.assertIsNone(r.resolve(t1))
        self.assertEqual(r.expire(14), [])
        self.assertEqual(r.expire(15), [(t2, "B", "ctx2")])
        self.assertEqual(len(r), 0)
        self.assertEqual(r.expired, 1)
        self.assertIsNone(r.nextDeadline())


class PermissionTests(SynchronousTestCase):
    def test_publish(self):
        p = Permissions(publish=Rule(allow=["orders.>"], deny=["orders.admin.*"]))
        self.assertTrue(p.canPublish(("orders", "new")))
        self.assertFalse(p.canPublish(("orders", "admin", "x")))
        self.assertFalse(p.canPublish(("other",)))
        e = self.assertRaises(PermissionDenied, p.checkPublish, ("other",), "other")
        self.assertEqual(e.code, XTMPErrorCode.PERMISSION_DENIED)
        self.assertTrue(p.canPublish(("orders", "new")))  # cached

    def test_subscribeCoversAndFilters(self):
        p = Permissions(subscribe=Rule(allow=["orders.*", "news.>"],
                                       deny=["news.secret.>"]))
        self.assertEqual(p.checkSubscribe(("orders", "*"), "orders.*"), ())
        self.assertRaises(PermissionDenied, p.checkSubscribe, ("orders", ">"), "")
        self.assertRaises(PermissionDenied, p.checkSubscribe,
                          ("news", "secret", "x"), "")
        self.assertEqual(p.checkSubscribe(("news", ">"), "news.>"),
                         (("news", "secret", ">"),))

    def test_noRulesAllowEverything(self):
        p = Permissions()
        self.assertTrue(p.canPublish(("x",)))
        self.assertEqual(p.checkSubscribe((">",), ">"), ())

    def test_table(self):
        alice = Permissions(publish=Rule(allow=["a"]))
        default = Permissions(publish=Rule(allow=[]))
        table = PermissionTable({"alice": alice}, default=default)
        self.assertIs(table.forIdentity("alice"), alice)
        self.assertIs(table.forIdentity("bob"), default)
        self.assertIsNone(PermissionTable().forIdentity("bob"))
        self.assertFalse(default.canPublish(("a",)))


class LiteralsKeptTests(SynchronousTestCase):
    """
    L{tokens} keeps the literal subjects it checked, boundedly, and never
    keeps a refusal.
    """

    def setUp(self):
        from muxframe.server import subjects
        self.subjects = subjects
        self.addCleanup(subjects._literals.clear)
        subjects._literals.clear()

    def test_sameTokens(self):
        """
        A literal subject checked again gives the same tokens; as a
        pattern it is still checked as one.
        """
        tokens = self.subjects.tokens
        first = tokens("svc.echo", wildcards=False)
        self.assertEqual(first, ("svc", "echo"))
        self.assertIs(tokens("svc.echo", wildcards=False), first)
        self.assertEqual(tokens("svc.*"), ("svc", "*"))
        self.assertRaises(BadSubject, tokens, "svc.*", wildcards=False)

    def test_refusalsNotKept(self):
        """
        A bad subject is refused every time it is offered.
        """
        for _ in range(3):
            self.assertRaises(BadSubject, self.subjects.tokens, "a..b",
                              wildcards=False)
        self.assertEqual(self.subjects._literals, {})

    def test_bounded(self):
        """
        At most LITERALS_KEPT subjects are kept: one more drops them all,
        and every subject still gets its own tokens.
        """
        kept = self.subjects.LITERALS_KEPT
        for n in range(kept + 10):
            self.assertEqual(self.subjects.tokens("s.%d" % n, wildcards=False),
                             ("s", "%d" % n))
            self.assertLessEqual(len(self.subjects._literals), kept)
        self.assertEqual(len(self.subjects._literals), 10)
