"""
What a peer that does not speak the framing is saying: a hint, from the
first bytes of a connection, for the protocol error they cause.

Rules:

  - Only the first L{HEAD} bytes a connection received are looked at, and
    only once a protocol error has ended the session: nothing is parsed for
    a peer that speaks the framing.
  - A hint names something recognisable (an HTTP request or response, a TLS
    record, an SSH banner, the other framing's frames) or nothing; it never
    names the framing in use.
  - MIO and BMP frames cannot be mistaken for each other: a BMP frame's
    second byte is part of its stream id (never 0x00), a small MIO stream id
    makes it 0x00.

No Twisted import, no I/O.
"""

import re

HEAD = 128

_HTTP_METHODS = re.compile(
    rb"(GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH|CONNECT|TRACE) \S")
# BMP header fields: (longest, allowed bytes or None for any but 00/01).
_BMP_FIELDS = ((64, None), (1, None), (20, b"0123456789"),
               (16, b"0123456789abcdefABCDEF"))

# MIO flags as peers send them, and what the size field then holds.
_MIO_FLAGS = {
    0x01: "data", 0x11: "data", 0x09: "window", 0x0C: "open", 0x0D: "open",
    0x04: "code", 0x02: "code", 0x08: "any",
}

_TLS_HANDSHAKES = {1: "a TLS ClientHello", 2: "a TLS ServerHello"}


def _looksLikeMio(head):
    if len(head) < 8 or head[0] or head[1]:
        return False
    flags = head[7]
    kind = _MIO_FLAGS.get(flags)
    if kind is None:
        return False
    streamId = int.from_bytes(head[:4], "big")
    size = int.from_bytes(head[4:7], "big")
    if streamId == 0:
        return flags in (0x02, 0x08)
    if kind == "code":
        return size <= 6
    if kind == "open":
        return size > 0
    return True


def _looksLikeBmp(head):
    """
    True if C{head} is a BMP frame header, or the start of one cut short by
    the end of C{head}.
    """
    offset = 0
    for index, (longest, allowed) in enumerate(_BMP_FIELDS):
        if offset == len(head):
            return index > 0
        if head[offset] != 0x00:
            return False
        offset += 1
        start = offset
        while offset < len(head) and head[offset] != 0x01:
            byte = head[offset]
            if byte == 0x00 or (allowed is not None and byte not in allowed):
                return False
            offset += 1
            if offset - start > longest:
                return False
        if offset == len(head):
            return index > 0 or offset - start >= 1
        if index == 0 and offset == start:
            return False  # an empty stream id
        offset += 1
    return True


def _tls(head):
    if len(head) < 3 or head[1] != 0x03 or head[2] > 0x04:
        return None
    if head[0] == 0x16:
        return _TLS_HANDSHAKES.get(head[5] if len(head) > 5 else None,
                                   "a TLS handshake")
    if head[0] == 0x15:
        return "a TLS alert"
    if head[0] in (0x14, 0x17):
        return "TLS records"
    return None


def lookalike(head, framing):
    """
    Return what C{head} (a connection's first bytes) looks like, such as
    C{"an HTTP request"} or C{"BMP frames"}, or C{None} if nothing known;
    never C{framing}'s own frames.
    """
    if not head:
        return None
    if head.startswith(b"PRI * HTTP/2"):
        return "an HTTP/2 connection preface"
    if _HTTP_METHODS.match(head):
        return "an HTTP request"
    if re.match(rb"HTTP/\d", head):
        return "an HTTP response"
    if head.startswith(b"SSH-"):
        return "an SSH banner"
    tls = _tls(head)
    if tls is not None:
        return tls
    if framing != "mio" and _looksLikeMio(head):
        return "MIO frames"
    if framing != "bmp" and _looksLikeBmp(head):
        return "BMP frames"
    return None


def hint(head, framing, role):
    """
    Return the sentence to add to a protocol error caused by C{head}, or
    C{None}: C{"this looks like an HTTP request; this port speaks MIO"} on
    the accepting side (C{role} C{"server"}), C{"this looks like an HTTP
    response; the peer does not speak MIO"} on the connecting side.
    """
    what = lookalike(head, framing)
    if what is None:
        return None
    name = framing.upper()
    if role == "server":
        return "this looks like %s; this port speaks %s" % (what, name)
    return "this looks like %s; the peer does not speak %s" % (what, name)


__all__ = ["HEAD", "hint", "lookalike"]
