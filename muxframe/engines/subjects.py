"""
Subjects and interest patterns for the engines' brokers.  No I/O.

Rules (NATS's): a subject is tokens separated by C{.}, none empty.  In a
pattern, C{*} stands for exactly one token and C{>}, only as the last
token, for one or more.  L{redisGlob} turns a pattern into a Redis
PSUBSCRIBE glob that matches at least every subject the pattern matches
(Redis's C{*} also crosses dots); the receiving node filters with
L{matches}, so nothing extra reaches the application.
"""

from muxframe.engines.errors import InvalidName
from muxframe.engines.model import checkName

_GLOB_SPECIAL = "\\*?[]"


def checkSubject(subject, wildcards=False):
    """
    Return C{subject} if it is a valid subject (a valid pattern with
    C{wildcards}).

    @raise InvalidName: naming the fault.
    """
    checkName(subject, "subject")
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token:
            raise InvalidName("subject %r has an empty token" % (subject,))
        if token in ("*", ">") or ("*" in token or ">" in token):
            if not wildcards:
                raise InvalidName("subject %r may not contain wildcards" % (subject,))
            if token not in ("*", ">"):
                raise InvalidName("wildcard inside token %r of %r" % (token, subject))
            if token == ">" and i != len(tokens) - 1:
                raise InvalidName("'>' must be the last token of %r" % (subject,))
    return subject


def matches(pattern, subject):
    """
    Whether C{subject} matches C{pattern}.
    """
    want = pattern.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)


def redisGlob(pattern):
    """
    A Redis glob matching every subject C{pattern} matches.
    """
    out = []
    for token in pattern.split("."):
        if token in ("*", ">"):
            out.append("*")
        else:
            out.append("".join("\\" + c if c in _GLOB_SPECIAL else c for c in token))
    return ".".join(out)
