"""
XTMP's exceptions and wire error codes.

Every exception here descends from L{muxframe.errors.MuxframeError}.  Errors
the peer caused are L{XTMPRemoteError}s (a L{RemoteProtocolError}) and carry
the L{XTMPErrorCode} sent to the peer in the Error message that precedes the
close; errors of API misuse are L{XTMPLocalError}s.
"""

from enum import IntEnum

from muxframe.errors import (
    DescribedCode,
    LocalProtocolError,
    MuxframeError,
    RemoteProtocolError,
)


class XTMPErrorCode(DescribedCode, IntEnum):
    """
    The 16-bit codes carried by Error and Disconnect messages.
    """

    NONE = 0
    PROTOCOL_ERROR = 1
    BAD_MAGIC = 2
    BAD_VERSION = 3
    BAD_FLAGS = 4
    MESSAGE_TOO_LARGE = 5
    CHECKSUM_MISMATCH = 6
    DECRYPT_FAILED = 7
    BAD_SEQUENCE = 8
    BAD_NONCE = 9
    WRONG_KEY = 10
    HANDSHAKE_FAILED = 11
    DOWNGRADE = 12
    UNAUTHORIZED = 13
    TIMEOUT = 14
    UNSUPPORTED = 15
    UNKNOWN_TYPE = 16
    APPLICATION_ERROR = 17
    GOING_AWAY = 18
    IDLE_TIMEOUT = 19
    INTERNAL = 20
    RATE_LIMITED = 21

    @classmethod
    def describe(cls, code):
        """
        The name of C{code}; codes of the application range (from
        L{FIRST_APPLICATION_CODE}) read C{APPLICATION(n)}.
        """
        try:
            return cls(code).name
        except ValueError:
            if code >= FIRST_APPLICATION_CODE:
                return "APPLICATION(%d)" % (code,)
            return "UNKNOWN(%d)" % (code,)


#: Error codes from here to 0xFFFF are the application's
#: (L{ApplicationError}); XTMP itself never sends them.
FIRST_APPLICATION_CODE = 0x1000


class XTMPLocalError(LocalProtocolError):
    """
    The application asked XTMP for something it cannot do now.
    """


class SendQueueFull(XTMPLocalError):
    """
    Queueing the message would take the session's send queue past
    C{maxQueuedBytes}.  Register a producer to be paused instead.
    """


class SessionNotReady(XTMPLocalError):
    """
    The handshake has not completed, or the session is closing or closed.
    """


class ApplicationError(MuxframeError):
    """
    Raise this from a message handler to answer the request with an Error
    meant for the peer: C{reason} is sent as it is, with C{code}.  Any
    other exception a handler raises is logged (with its traceback) and
    answered with C{APPLICATION_ERROR} and a generic reason, so no
    internal detail reaches the peer.

    @ivar code: C{APPLICATION_ERROR} (the default), C{UNAUTHORIZED}, or an
        application code from L{FIRST_APPLICATION_CODE} to 0xFFFF.
    @ivar reason: the text the peer receives.
    """

    def __init__(self, reason, code=XTMPErrorCode.APPLICATION_ERROR):
        code = int(code)
        if code not in (XTMPErrorCode.APPLICATION_ERROR,
                        XTMPErrorCode.UNAUTHORIZED) and not (
                FIRST_APPLICATION_CODE <= code <= 0xFFFF):
            raise ValueError(
                "ApplicationError code must be APPLICATION_ERROR, "
                "UNAUTHORIZED or in %d..65535, not %d"
                % (FIRST_APPLICATION_CODE, code))
        MuxframeError.__init__(self, reason)
        self.reason = reason
        self.code = code


class XTMPRemoteError(RemoteProtocolError):
    """
    The peer broke XTMP.  C{code} is the L{XTMPErrorCode} reported to it.
    """

    code = XTMPErrorCode.PROTOCOL_ERROR


class BadMagic(XTMPRemoteError):
    """
    A header that does not start with C{XTMP}.
    """

    code = XTMPErrorCode.BAD_MAGIC


class BadVersion(XTMPRemoteError):
    """
    A header whose version is not 1.
    """

    code = XTMPErrorCode.BAD_VERSION


class BadFlags(XTMPRemoteError):
    """
    Unknown flag bits, or a combination of flags the spec forbids.
    """

    code = XTMPErrorCode.BAD_FLAGS


class MessageTooLarge(XTMPRemoteError):
    """
    A payload length, reassembled message or decompressed payload over the
    receiver's limit.
    """

    code = XTMPErrorCode.MESSAGE_TOO_LARGE


class ChecksumMismatch(XTMPRemoteError):
    """
    The CRC-32 of the (decrypted) payload differs from the header's.
    """

    code = XTMPErrorCode.CHECKSUM_MISMATCH


class MalformedMessage(XTMPRemoteError):
    """
    A header, security layer or control payload that is structurally wrong.
    """

    code = XTMPErrorCode.PROTOCOL_ERROR


class DecryptionFailed(XTMPRemoteError):
    """
    The AEAD tag did not verify: a tampered byte or a wrong key.
    """

    code = XTMPErrorCode.DECRYPT_FAILED


class SequenceError(XTMPRemoteError):
    """
    A sequence number other than the exact next one: a replay, a reordering
    or a dropped message.
    """

    code = XTMPErrorCode.BAD_SEQUENCE


class NonceMismatch(XTMPRemoteError):
    """
    The security layer's nonce is not the one recomputed from the IV and the
    sequence number.
    """

    code = XTMPErrorCode.BAD_NONCE


class WrongKey(XTMPRemoteError):
    """
    The security layer names a key (key id, epoch or cipher) other than the
    receiver's current one.
    """

    code = XTMPErrorCode.WRONG_KEY


class HandshakeFailed(XTMPRemoteError):
    """
    The handshake could not complete: malformed, truncated, timed out, or a
    signature that does not verify.
    """

    code = XTMPErrorCode.HANDSHAKE_FAILED


class DowngradeDetected(HandshakeFailed):
    """
    The server saw a different offer than the client sent, or chose
    something the client did not offer.
    """

    code = XTMPErrorCode.DOWNGRADE


class Unauthorized(HandshakeFailed):
    """
    The peer's identity or token is not accepted.
    """

    code = XTMPErrorCode.UNAUTHORIZED


class Unsupported(HandshakeFailed):
    """
    No protocol version or cipher in common.
    """

    code = XTMPErrorCode.UNSUPPORTED


class RateLimited(XTMPRemoteError):
    """
    The peer exceeded a rate or buffer limit: too many re-handshakes
    (C{maxRehandshakesPerHour}), requests faster than it takes their
    responses, or a limit of the server's admission policy.
    """

    code = XTMPErrorCode.RATE_LIMITED


class PeerError(XTMPRemoteError):
    """
    The peer sent an Error message.  C{code} is the peer's code, C{reason}
    its text.
    """

    def __init__(self, code, reason):
        XTMPRemoteError.__init__(
            self, "%s: %s" % (XTMPErrorCode.describe(code), reason), code
        )
        self.reason = reason


class PeerDisconnected(PeerError):
    """
    The peer closed the session with a Disconnect message.
    """


class XTMPTimeout(MuxframeError):
    """
    A timer expired: handshake, heartbeat (peer silent), idle session, or a
    request's response.
    """

    code = XTMPErrorCode.TIMEOUT


class RequestTimeout(XTMPTimeout):
    """
    No response to a request arrived within its timeout.
    """


__all__ = [
    "XTMPErrorCode", "FIRST_APPLICATION_CODE", "ApplicationError",
    "RateLimited", "XTMPLocalError", "SendQueueFull", "SessionNotReady",
    "XTMPRemoteError", "BadMagic", "BadVersion", "BadFlags",
    "MessageTooLarge", "ChecksumMismatch", "MalformedMessage",
    "DecryptionFailed", "SequenceError", "NonceMismatch", "WrongKey",
    "HandshakeFailed", "DowngradeDetected", "Unauthorized", "Unsupported",
    "PeerError", "PeerDisconnected", "XTMPTimeout", "RequestTimeout",
]
