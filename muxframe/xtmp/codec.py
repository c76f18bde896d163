"""
XTMP's wire codec, sans-IO: the 32-byte header, the 64-byte security layer,
the message type and flag tables, control payloads, and an incremental
decoder.

Rules enforced by L{Decoder} (each a typed L{XTMPRemoteError}):

  - magic must be C{b"XTMP"} (L{BadMagic}); version must be 1
    (L{BadVersion});
  - no flag outside L{Flags} may be set, and LAST_FRAGMENT requires
    FRAGMENTED (L{BadFlags});
  - payload length must not exceed C{maxPayload} (L{MessageTooLarge}),
    checked as soon as the header is complete, so buffering is bounded;
  - with ENCRYPTED: cipher is 1 or 2, the reserved bytes and nonce bytes
    12..23 are zero (L{MalformedMessage});
  - without ENCRYPTED: the CRC-32 of the payload equals the checksum
    (L{ChecksumMismatch}).  Encrypted payloads are checked after decryption.

Nothing here imports Twisted or reads a clock.
"""

import struct
import zlib
from enum import IntEnum, IntFlag

from muxframe.xtmp.errors import (
    BadFlags, BadMagic, BadVersion, ChecksumMismatch, MalformedMessage,
    MessageTooLarge, XTMPRemoteError,
)

MAGIC = b"XTMP"
VERSION = 1
HEADER_SIZE = 32
SECURITY_SIZE = 64
TAG_SIZE = 16
NONCE_SIZE = 12
# The default bound on one message's payload on the wire (one fragment).
DEFAULT_MAX_PAYLOAD = 1 << 20

HEADER = struct.Struct(">4sBBHQQII")
# cipher, reserved(3), epoch, key id, nonce(24); the tag follows.
SECURITY_PREFIX = struct.Struct(">B3sI16s24s")
_ZERO12 = bytes(12)
_ZERO3 = bytes(3)
_crc32 = zlib.crc32


class MessageType(IntEnum):
    """
    XTMP message types (docs/xtmp.md section 4).  Values not listed are free for
    applications.
    """

    Handshake = 0x01
    HandshakeAck = 0x02
    Heartbeat = 0x03
    Disconnect = 0x04
    Ack = 0x05
    KeyUpdate = 0x06
    Subscribe = 0x07
    Unsubscribe = 0x08
    WalletRegister = 0x10
    WalletAuth = 0x11
    WalletBalance = 0x12
    WalletTransaction = 0x13
    BundleSubmit = 0x20
    BundleStatus = 0x21
    BundleConfirm = 0x22
    BundleSync = 0x23
    RegistryQuery = 0x30
    RegistryUpdate = 0x31
    RegistryStamp = 0x32
    LiveUpdates = 0x40
    EventStream = 0x41
    MetricsStream = 0x42
    Error = 0xFE
    Unknown = 0xFF


#: Types the session consumes itself; never given to application handlers.
CONTROL_TYPES = frozenset(range(0x01, 0x09))


class Flags(IntFlag):
    """
    The 16 header flag bits (docs/xtmp.md section 4).
    """

    NONE = 0
    ENCRYPTED = 0x0001
    COMPRESSED = 0x0002
    PRIORITY_HIGH = 0x0004
    REQUIRES_ACK = 0x0008
    FRAGMENTED = 0x0010
    LAST_FRAGMENT = 0x0020
    STREAM_DATA = 0x0040
    EMERGENCY = 0x0080
    RESPONSE = 0x0100
    REQUEST = 0x0200


KNOWN_FLAGS = 0x03FF


class F:
    """
    Plain-int copies of L{Flags} for hot paths, where IntFlag arithmetic
    would cost more than the cryptography.
    """

    ENCRYPTED = 0x0001
    COMPRESSED = 0x0002
    PRIORITY_HIGH = 0x0004
    REQUIRES_ACK = 0x0008
    FRAGMENTED = 0x0010
    LAST_FRAGMENT = 0x0020
    STREAM_DATA = 0x0040
    EMERGENCY = 0x0080
    RESPONSE = 0x0100
    REQUEST = 0x0200


class Cipher(IntEnum):
    """
    The security layer's cipher byte.  C{NONE} never appears in a security
    layer; it names a plaintext session in the handshake.
    """

    NONE = 0
    AES_256_GCM = 1
    CHACHA20_POLY1305 = 2

    @classmethod
    def describe(cls, cipher):
        """
        The cipher's usual name (C{"AES-256-GCM"}, C{"ChaCha20-Poly1305"},
        C{"none"}), for logs; unknown values read C{UNKNOWN(n)}.
        """
        return _CIPHER_NAMES.get(cipher, "UNKNOWN(%d)" % (cipher,))


_CIPHER_NAMES = {Cipher.NONE: "none", Cipher.AES_256_GCM: "AES-256-GCM",
                 Cipher.CHACHA20_POLY1305: "ChaCha20-Poly1305"}


class Frame:
    """
    One XTMP message as it travels: header fields, the optional security
    layer and the payload bytes on the wire (ciphertext when encrypted).

    @ivar aad: the 80 authenticated bytes (header plus security bytes
        0..47) of an encrypted frame, else L{None}.
    """

    __slots__ = ("type", "flags", "sessionId", "sequence", "checksum",
                 "payload", "cipher", "epoch", "keyId", "nonce", "tag", "aad")

    def __init__(self, type, flags, sessionId, sequence, checksum, payload,
                 cipher=None, epoch=0, keyId=None, nonce=None, tag=None,
                 aad=None):
        self.type = type
        self.flags = flags
        self.sessionId = sessionId
        self.sequence = sequence
        self.checksum = checksum
        self.payload = payload
        self.cipher = cipher
        self.epoch = epoch
        self.keyId = keyId
        self.nonce = nonce
        self.tag = tag
        self.aad = aad

    def __repr__(self):
        return "<Frame type=%#x flags=%#x session=%d seq=%d len=%d>" % (
            self.type, self.flags, self.sessionId, self.sequence,
            len(self.payload))

    def encode(self):
        """
        Serialize this frame.  Encrypted frames need C{cipher}, C{epoch},
        C{keyId}, C{nonce} and C{tag} set; the payload is the ciphertext.
        """
        header = HEADER.pack(MAGIC, VERSION, self.type, self.flags,
                             self.sessionId, self.sequence,
                             len(self.payload), self.checksum)
        if not self.flags & Flags.ENCRYPTED:
            return header + self.payload
        return b"".join([
            header,
            SECURITY_PREFIX.pack(self.cipher, _ZERO3, self.epoch, self.keyId,
                                 self.nonce + _ZERO12),
            self.tag, self.payload])


def encodePlain(messageType, flags, sessionId, sequence, payload):
    """
    Serialize an unencrypted message, computing its checksum.

    @rtype: L{bytes}
    """
    return HEADER.pack(MAGIC, VERSION, messageType, flags, sessionId,
                       sequence, len(payload), _crc32(payload)) + payload


def checkFlags(flags):
    """
    Raise L{BadFlags} unless C{flags} is a valid combination.
    """
    if flags & ~KNOWN_FLAGS:
        raise BadFlags("unknown flag bits %#06x" % (flags & ~KNOWN_FLAGS,))
    if flags & Flags.LAST_FRAGMENT and not flags & Flags.FRAGMENTED:
        raise BadFlags("LAST_FRAGMENT without FRAGMENTED")


class Decoder:
    """
    Incremental XTMP frame decoder: feed it any split of the byte stream.

    Buffering costs O(bytes received): a partial frame smaller than the
    next piece is joined with it (at most twice that piece's size), and a
    larger one is held in a C{bytearray} that grows in place (never
    C{buffer + data} per piece, which copies the whole buffer for every
    small piece).  What is held is at most one
    header, security layer and C{maxPayload} bytes of payload, plus the
    rest of the last chunk appended.

    Frames can be taken one at a time (L{append}, then iterate L{frames}),
    so a caller may change C{maxPayload} between frames: XTMP bounds
    payloads far more tightly before authentication.

    @ivar maxPayload: the largest payload length accepted, checked as soon
        as a header is complete.
    """

    __slots__ = ("maxPayload", "_buffer", "_pos", "_error")

    def __init__(self, maxPayload=DEFAULT_MAX_PAYLOAD):
        self.maxPayload = maxPayload
        self._buffer = b""
        self._pos = 0
        self._error = None

    def raiseIfFailed(self):
        """
        Raise the error found after the frames the last L{feed} returned,
        if any.
        """
        if self._error is not None:
            raise self._error

    @property
    def buffered(self):
        """
        The number of bytes held waiting for the rest of a frame.
        """
        return len(self._buffer) - self._pos

    @property
    def idle(self):
        """
        Whether nothing is held (no partial frame) and no error was found:
        the next bytes start a frame.
        """
        return self._pos >= len(self._buffer) and self._error is None

    def append(self, data):
        """
        Add received bytes without parsing them.
        """
        if not data or self._error is not None:
            return
        buf, pos = self._buffer, self._pos
        held = len(buf) - pos
        if held <= 0:
            # Nothing held: keep the chunk itself, no copy.
            self._buffer = bytes(data)
        elif held <= len(data):
            # Joining costs at most twice this append, and parsing bytes
            # is the fast path.
            with memoryview(buf) as view:
                self._buffer = b"".join((view[pos:], data))
        else:
            # A large partial frame fed small pieces: grow it in place.
            if type(buf) is not bytearray:
                with memoryview(buf) as view:
                    buf = bytearray(view[pos:])
            elif pos:
                del buf[:pos]
            buf += data
            self._buffer = buf
        self._pos = 0

    def frames(self):
        """
        Yield every complete frame held, in order, one at a time: the
        consumer may change C{maxPayload} between frames, and stop early.

        @raise XTMPRemoteError: (a subclass naming the fault) at the first
            invalid frame, after the valid ones before it were yielded; the
            decoder is then failed and raises it again on every later call.
        """
        if self._error is not None:
            raise self._error
        buf, pos = self._buffer, self._pos
        end = len(buf)
        plain = type(buf) is bytes
        unpackHeader = HEADER.unpack_from
        try:
            while end - pos >= HEADER_SIZE:
                (magic, version, mtype, flags, sessionId, sequence, length,
                 checksum) = unpackHeader(buf, pos)
                if magic != MAGIC:
                    raise BadMagic("bad magic %r" % (bytes(magic),))
                if version != VERSION:
                    raise BadVersion("unsupported version %d" % (version,))
                if flags & ~KNOWN_FLAGS or (flags & 0x20 and not flags & 0x10):
                    checkFlags(flags)
                if length > self.maxPayload:
                    raise MessageTooLarge(
                        "payload length %d over the limit %d"
                        % (length, self.maxPayload))
                if flags & 1:
                    total = HEADER_SIZE + SECURITY_SIZE + length
                    if end - pos < total:
                        break
                    cipher, reserved, epoch, keyId, nonce = \
                        SECURITY_PREFIX.unpack_from(buf, pos + HEADER_SIZE)
                    if cipher not in (1, 2):
                        raise MalformedMessage("unknown cipher %d" % (cipher,))
                    if reserved != _ZERO3:
                        raise MalformedMessage("security layer reserved "
                                               "bytes are not zero")
                    if nonce[12:] != _ZERO12:
                        raise MalformedMessage("nonce bytes 12..23 are not "
                                               "zero")
                    start = pos + HEADER_SIZE + SECURITY_SIZE
                    if plain:
                        payload = buf[start:pos + total]
                        tag = buf[start - TAG_SIZE:start]
                        aad = buf[pos:start - TAG_SIZE]
                    else:
                        with memoryview(buf) as view:
                            payload = bytes(view[start:pos + total])
                            tag = bytes(view[start - TAG_SIZE:start])
                            aad = bytes(view[pos:start - TAG_SIZE])
                    frame = Frame(mtype, flags, sessionId, sequence, checksum,
                                  payload, cipher, epoch, keyId, nonce[:12],
                                  tag, aad)
                else:
                    total = HEADER_SIZE + length
                    if end - pos < total:
                        break
                    if plain:
                        payload = buf[pos + HEADER_SIZE:pos + total]
                    else:
                        with memoryview(buf) as view:
                            payload = bytes(view[pos + HEADER_SIZE:pos + total])
                    if _crc32(payload) != checksum:
                        raise ChecksumMismatch(
                            "checksum mismatch in message type %#x seq %d"
                            % (mtype, sequence))
                    frame = Frame(mtype, flags, sessionId, sequence,
                                  checksum, payload)
                pos += total
                self._pos = pos
                yield frame
        except XTMPRemoteError as e:
            self._error = e
            self._buffer = b""
            self._pos = 0
            raise
        self._compact()

    def _compact(self):
        # Keep only the partial frame, not the chunk it came in; nothing at
        # all once everything is consumed.
        buf, pos = self._buffer, self._pos
        if pos >= len(buf):
            self._buffer = b""
        elif pos:
            if type(buf) is bytearray:
                del buf[:pos]
            else:
                with memoryview(buf) as view:
                    self._buffer = bytearray(view[pos:])
        self._pos = 0

    def nextFrame(self):
        """
        The next complete frame, or L{None} until more bytes are appended.

        @raise XTMPRemoteError: as L{frames}.
        """
        for frame in self.frames():
            return frame
        return None

    def feed(self, data):
        """
        Add C{data} and return every frame now complete, in order.

        @raise XTMPRemoteError: (a subclass naming the fault) on the first
            invalid frame; the decoder must then be discarded.  If valid
            frames came before it, they are returned first and the error is
            raised by L{raiseIfFailed} (and by any later call), so a caller
            can act on what arrived intact.
        """
        self.raiseIfFailed()
        self.append(data)
        frames = []
        try:
            frames.extend(self.frames())
        except XTMPRemoteError:
            if not frames:
                raise
        return frames


# -- control payloads ------------------------------------------------------

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def encodeReason(code, reason):
    """
    Error and Disconnect payload: u16 code, then the UTF-8 reason.
    """
    return _U16.pack(code) + reason.encode("utf-8")


def decodeReason(payload):
    """
    Parse an Error or Disconnect payload into C{(code, reason)}.
    """
    if len(payload) < 2:
        raise MalformedMessage("Error/Disconnect payload shorter than 2")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("reason is not UTF-8")
    return _U16.unpack_from(payload)[0], reason


def encodeU64(value):
    """
    An 8-byte big-endian unsigned integer (Ack, Heartbeat payloads).
    """
    return _U64.pack(value)


def decodeU64(payload, what):
    """
    Parse a payload that must be exactly one u64.
    """
    if len(payload) != 8:
        raise MalformedMessage("%s payload must be 8 bytes" % (what,))
    return _U64.unpack(payload)[0]


def encodeU32(value):
    """
    A 4-byte big-endian unsigned integer (KeyUpdate payload).
    """
    return _U32.pack(value)


def decodeU32(payload, what):
    """
    Parse a payload that must be exactly one u32.
    """
    if len(payload) != 4:
        raise MalformedMessage("%s payload must be 4 bytes" % (what,))
    return _U32.unpack(payload)[0]


def encodeName(name):
    """
    A stream name: u16 length, then UTF-8 bytes (Subscribe, Unsubscribe,
    and the prefix of every STREAM_DATA body).
    """
    raw = name.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("stream name too long")
    return _U16.pack(len(raw)) + raw


def decodeName(payload, offset=0):
    """
    Parse a stream name at C{offset}; return C{(name, nextOffset)}.
    """
    if len(payload) - offset < 2:
        raise MalformedMessage("truncated stream name")
    (n,) = _U16.unpack_from(payload, offset)
    end = offset + 2 + n
    if end > len(payload):
        raise MalformedMessage("truncated stream name")
    try:
        return bytes(payload[offset + 2:end]).decode("utf-8"), end
    except UnicodeDecodeError:
        raise MalformedMessage("stream name is not UTF-8")
