"""
Subjects and subject patterns, sans-IO.

Rules (as NATS's, which operators know):

  - A subject is one or more I{tokens} separated by C{.}; a token is
    non-empty and contains no whitespace: no character for which
    C{str.isspace} is true (Unicode's too: U+00A0, U+2028, ...).  At most
    L{MAX_TOKENS} tokens and L{MAX_LENGTH} bytes of UTF-8.
  - A I{pattern} (a subscription, a permission) may use two wildcard
    tokens: C{*} matches exactly one token, and C{>}, only as the last
    token, matches one or more tokens.  C{*} and C{>} are wildcards only as
    whole tokens (C{a*} is a literal token).
  - A subject something is published or requested on must be literal.
  - A queue group name is a single token (no C{.}, no whitespace), at
    most 64 bytes.

Two relations between patterns, used by permissions: C{covers(a, b)} when
every subject matching C{b} also matches C{a}; C{overlaps(a, b)} when some
subject matches both.  Everything here works on tuples of tokens, which is
what L{tokens} returns.

Literal subjects once checked are kept with their tokens (at most
L{LITERALS_KEPT}, all dropped when full): a publisher's or requester's few
subjects are split and checked once, not once per message.
"""

import re

from muxframe.server.errors import BadSubject

MAX_TOKENS = 32
MAX_LENGTH = 512
MAX_GROUP_LENGTH = 64
# A str pattern's \s is exactly the characters str.isspace() is true for
# (both are CPython's Py_UNICODE_ISSPACE).
_WHITESPACE = re.compile(r"\s")
#: How many checked literal subjects L{tokens} keeps.
LITERALS_KEPT = 4096
_literals = {}


def tokens(subject, wildcards=True):
    """
    Split and check C{subject}.

    @param wildcards: whether C{*} and C{>} tokens are allowed (a pattern)
        or not (a literal subject).
    @return: the tuple of tokens.
    @raise BadSubject: C{subject} breaks a rule above.
    """
    literal = not wildcards and type(subject) is str
    if literal:
        parts = _literals.get(subject)
        if parts is not None:
            return parts
    parts = _check(subject, wildcards)
    if literal:
        if len(_literals) >= LITERALS_KEPT:
            _literals.clear()
        _literals[subject] = parts
    return parts


def _check(subject, wildcards):
    if not isinstance(subject, str) or not subject:
        raise BadSubject("empty subject")
    if len(subject.encode("utf-8")) > MAX_LENGTH:
        raise BadSubject("subject longer than %d bytes" % (MAX_LENGTH,))
    if _WHITESPACE.search(subject) is not None:
        raise BadSubject("whitespace in subject %r" % (subject,))
    parts = tuple(subject.split("."))
    if len(parts) > MAX_TOKENS:
        raise BadSubject("subject %r has more than %d tokens"
                         % (subject, MAX_TOKENS))
    for index, token in enumerate(parts):
        if not token:
            raise BadSubject("empty token in subject %r" % (subject,))
        if token in ("*", ">"):
            if not wildcards:
                raise BadSubject("wildcard in subject %r (publish to a "
                                 "literal subject)" % (subject,))
            if token == ">" and index != len(parts) - 1:
                raise BadSubject("'>' must be the last token of %r"
                                 % (subject,))
    return parts


def checkGroup(group):
    """
    Check a queue group name; return it.

    @raise BadSubject: it is empty, too long, or has C{.} or whitespace.
    """
    if not isinstance(group, str) or not group or "." in group or \
            len(group.encode("utf-8")) > MAX_GROUP_LENGTH or \
            _WHITESPACE.search(group) is not None:
        raise BadSubject("bad queue group name %r" % (group,))
    return group


def isLiteral(parts):
    """
    Whether the tokens C{parts} have no wildcard.
    """
    return "*" not in parts and ">" not in parts


def matches(pattern, subject):
    """
    Whether literal C{subject} matches C{pattern} (both token tuples).
    """
    last = len(pattern) - 1
    for index, token in enumerate(pattern):
        if token == ">" and index == last:
            return len(subject) > index
        if index >= len(subject) or (token != "*" and token != subject[index]):
            return False
    return len(subject) == len(pattern)


def covers(a, b):
    """
    Whether every subject matching pattern C{b} matches pattern C{a}.
    """
    for index, token in enumerate(a):
        if token == ">":
            return len(b) > index
        if index >= len(b):
            return False
        other = b[index]
        if other == ">":
            return False
        if token != "*" and token != other:
            return False
    return len(a) == len(b)


def overlaps(a, b):
    """
    Whether some subject matches both patterns C{a} and C{b}.
    """
    for index in range(min(len(a), len(b))):
        token, other = a[index], b[index]
        if token == ">" or other == ">":
            return True
        if token != "*" and other != "*" and token != other:
            return False
    return len(a) == len(b)
