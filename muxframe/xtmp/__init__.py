"""
XTMP: the eXtended Transport Messaging Protocol, as muxframe defines it.

Layers (see C{docs/xtmp.md}): L{codec} (wire format), L{keys} and
L{handshake} (hybrid X25519 + ML-KEM handshake, key schedule), L{session}
and L{connection} (the sans-IO session engine), L{protocol} and L{factory}
(Twisted).
"""

from muxframe.xtmp.codec import (
    Cipher, Decoder, Flags, Frame, MessageType, encodePlain,
)
from muxframe.xtmp.connection import XTMPConnection
from muxframe.xtmp.errors import (
    FIRST_APPLICATION_CODE, ApplicationError, RateLimited, BadFlags, BadMagic, BadVersion, ChecksumMismatch, DecryptionFailed,
    DowngradeDetected, HandshakeFailed, MalformedMessage, MessageTooLarge,
    NonceMismatch, PeerDisconnected, PeerError, RequestTimeout, SendQueueFull,
    SequenceError, SessionNotReady, Unauthorized, Unsupported, WrongKey,
    XTMPErrorCode, XTMPLocalError, XTMPRemoteError, XTMPTimeout,
)
from muxframe.xtmp.events import Counters, Settings
from muxframe.xtmp.factory import (
    XTMPClientFactory, XTMPServerFactory, connectXTMP,
)
from muxframe.xtmp.handshake import (
    KEM, ClientHandshake, ClientHello, HandshakeResult, HelloReplayCache,
    ServerHandshake,
)
from muxframe.xtmp.identity import Identity, PublicIdentity, loadAuthorizedKeys
from muxframe.xtmp.protocol import XTMPProtocol
from muxframe.xtmp.session import Message, ResumptionState
from muxframe.xtmp.streams import StreamRegistry

__all__ = [
    "ApplicationError", "ClientHello", "FIRST_APPLICATION_CODE",
    "HelloReplayCache", "RateLimited", "BadFlags", "BadMagic", "BadVersion", "ChecksumMismatch", "Cipher",
    "ClientHandshake", "Counters", "Decoder", "DecryptionFailed", "DowngradeDetected",
    "Flags", "Frame", "HandshakeFailed", "HandshakeResult", "Identity", "KEM",
    "MalformedMessage", "Message", "MessageTooLarge", "MessageType",
    "NonceMismatch", "PeerDisconnected", "PeerError", "PublicIdentity",
    "RequestTimeout", "ResumptionState", "SendQueueFull", "SequenceError",
    "ServerHandshake", "SessionNotReady", "Settings", "StreamRegistry",
    "Unauthorized", "Unsupported", "WrongKey", "XTMPClientFactory",
    "XTMPConnection", "XTMPErrorCode", "XTMPLocalError", "XTMPProtocol",
    "XTMPRemoteError", "XTMPServerFactory", "XTMPTimeout", "connectXTMP",
    "encodePlain", "loadAuthorizedKeys",
]
