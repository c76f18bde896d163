"""
The XTMP server's exceptions.

L{Refusal}s are answers, not failures: the server refuses one request,
subscription or connection with an L{XTMPErrorCode} on the wire (an Error
answering the message, or a plaintext Error before the handshake) and a
structured log event, and the session goes on.  L{ConfigError} is an
operator's mistake in the configuration, named by its key.
"""

from muxframe.errors import LocalProtocolError, MuxframeError
from muxframe.xtmp.errors import XTMPErrorCode


class Refusal(MuxframeError):
    """
    The server refuses something with C{code} (an L{XTMPErrorCode}).

    @ivar code: the code sent to the peer.
    @ivar reason: the text sent with it.
    """

    code = XTMPErrorCode.PROTOCOL_ERROR

    def __init__(self, reason, code=None):
        MuxframeError.__init__(self, reason)
        self.reason = reason
        if code is not None:
            self.code = code


class BadSubject(Refusal):
    """
    A subject, pattern or queue group name that is not valid syntax.
    """

    code = XTMPErrorCode.BAD_SUBJECT


class PermissionDenied(Refusal):
    """
    A publish, request or subscription outside the identity's permissions.
    """

    code = XTMPErrorCode.PERMISSION_DENIED


class ConfigError(LocalProtocolError):
    """
    A configuration key that is unknown or has a bad value.

    @ivar key: the dotted key at fault (C{"server.max_connections"}).
    """

    def __init__(self, key, message):
        LocalProtocolError.__init__(self, "%s: %s" % (key, message))
        self.key = key
