"""
Tests for L{muxframe.xtmp.codec}: header and security layer layout, enums,
the incremental decoder and its limits, control payloads.
"""

import struct
import zlib

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from muxframe.errors import RemoteProtocolError
from muxframe.xtmp import codec
from muxframe.xtmp.codec import (
    HEADER, HEADER_SIZE, SECURITY_SIZE, Cipher, Decoder, Flags, Frame,
    MessageType, decodeName, decodeReason, encodeName, encodePlain,
    encodeReason,
)
from muxframe.xtmp.errors import (
    BadFlags, BadMagic, BadVersion, ChecksumMismatch, MalformedMessage,
    MessageTooLarge, XTMPErrorCode, XTMPRemoteError,
)


def encryptedFrame(payload=b"ciphertext", cipher=1, epoch=3, sequence=9):
    return Frame(0x10, Flags.ENCRYPTED | Flags.REQUIRES_ACK, 0x0102030405060708,
                 sequence, 0xDEADBEEF, payload, cipher, epoch, b"K" * 16,
                 b"N" * 12, b"T" * 16).encode()


class HeaderLayoutTests(SynchronousTestCase):
    """
    The header and security layer match the spec's tables byte for byte.
    """

    def test_header(self):
        """
        magic, version, type, flags, session id, sequence, length, CRC-32
        at offsets 0, 4, 5, 6, 8, 16, 24, 28, big-endian.
        """
        raw = encodePlain(0x21, Flags.PRIORITY_HIGH | Flags.STREAM_DATA,
                          0x1122334455667788, 0x99AABBCCDDEEFF00, b"abc")
        self.assertEqual(HEADER.size, 32)
        self.assertEqual(raw[0:4], b"XTMP")
        self.assertEqual(raw[4], 1)
        self.assertEqual(raw[5], 0x21)
        self.assertEqual(raw[6:8], b"\x00\x44")
        self.assertEqual(raw[8:16], bytes.fromhex("1122334455667788"))
        self.assertEqual(raw[16:24], bytes.fromhex("99AABBCCDDEEFF00"))
        self.assertEqual(raw[24:28], b"\x00\x00\x00\x03")
        self.assertEqual(raw[28:32], struct.pack(">I", zlib.crc32(b"abc")))
        self.assertEqual(raw[32:], b"abc")

    def test_securityLayer(self):
        """
        cipher, 3 reserved zero bytes, epoch, key id, 24-byte nonce with
        bytes 12..23 zero, tag; then the ciphertext.
        """
        raw = encryptedFrame()
        sec = raw[HEADER_SIZE:HEADER_SIZE + SECURITY_SIZE]
        self.assertEqual(len(sec), 64)
        self.assertEqual(sec[0], 1)
        self.assertEqual(sec[1:4], b"\0\0\0")
        self.assertEqual(sec[4:8], b"\0\0\0\x03")
        self.assertEqual(sec[8:24], b"K" * 16)
        self.assertEqual(sec[24:36], b"N" * 12)
        self.assertEqual(sec[36:48], bytes(12))
        self.assertEqual(sec[48:64], b"T" * 16)
        self.assertEqual(raw[96:], b"ciphertext")
        self.assertEqual(raw[24:28], struct.pack(">I", len(b"ciphertext")))

    def test_enums(self):
        """
        Message types and flags have the spec's values.
        """
        self.assertEqual(
            [MessageType.Handshake, MessageType.HandshakeAck,
             MessageType.Heartbeat, MessageType.Disconnect, MessageType.Ack,
             MessageType.KeyUpdate, MessageType.Subscribe,
             MessageType.Unsubscribe, MessageType.WalletRegister,
             MessageType.BundleSync, MessageType.RegistryStamp,
             MessageType.LiveUpdates, MessageType.MetricsStream,
             MessageType.Error, MessageType.Unknown],
            [1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0x23, 0x32, 0x40, 0x42, 0xFE,
             0xFF])
        self.assertEqual(
            [int(f) for f in (Flags.ENCRYPTED, Flags.COMPRESSED,
                              Flags.PRIORITY_HIGH, Flags.REQUIRES_ACK,
                              Flags.FRAGMENTED, Flags.LAST_FRAGMENT,
                              Flags.STREAM_DATA, Flags.EMERGENCY,
                              Flags.RESPONSE)],
            [1 << i for i in range(9)])
        self.assertEqual((Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305),
                         (1, 2))


class DecoderTests(SynchronousTestCase):
    """
    L{Decoder} yields frames from any split and names every fault.
    """

    def test_roundTripPlain(self):
        raw = encodePlain(0x30, Flags.REQUIRES_ACK, 5, 7, b"payload")
        (f,) = Decoder().feed(raw)
        self.assertEqual((f.type, f.flags, f.sessionId, f.sequence, f.payload),
                         (0x30, Flags.REQUIRES_ACK, 5, 7, b"payload"))
        self.assertIsNone(f.aad)

    def test_roundTripEncrypted(self):
        raw = encryptedFrame()
        (f,) = Decoder().feed(raw)
        self.assertEqual((f.cipher, f.epoch, f.keyId, f.nonce, f.tag,
                          f.payload, f.checksum),
                         (1, 3, b"K" * 16, b"N" * 12, b"T" * 16,
                          b"ciphertext", 0xDEADBEEF))
        self.assertEqual(f.aad, raw[:80])
        self.assertEqual(f.encode(), raw)

    def test_byteByByte(self):
        raw = encodePlain(0x10, 0, 1, 0, b"x" * 10) + encryptedFrame()
        d = Decoder()
        out = []
        for i in range(len(raw)):
            out.extend(d.feed(raw[i:i + 1]))
        self.assertEqual([f.type for f in out], [0x10, 0x10])
        self.assertEqual(d.buffered, 0)

    def test_framesBeforeFaultReturnedFirst(self):
        """
        Valid frames ahead of an invalid one are returned; the error is
        raised by raiseIfFailed and by the next feed.
        """
        good = encodePlain(0x10, 0, 1, 0, b"ok")
        d = Decoder()
        (f,) = d.feed(good + b"XTMQ" + good[4:])
        self.assertEqual(f.payload, b"ok")
        self.assertRaises(BadMagic, d.raiseIfFailed)
        self.assertRaises(BadMagic, d.feed, good)

    def test_badMagic(self):
        raw = b"XTMQ" + encodePlain(1, 0, 0, 0, b"")[4:]
        e = self.assertRaises(BadMagic, Decoder().feed, raw)
        self.assertEqual(e.code, XTMPErrorCode.BAD_MAGIC)

    def test_badVersion(self):
        raw = bytearray(encodePlain(1, 0, 0, 0, b""))
        raw[4] = 2
        e = self.assertRaises(BadVersion, Decoder().feed, bytes(raw))
        self.assertEqual(e.code, XTMPErrorCode.BAD_VERSION)

    def test_unknownFlags(self):
        e = self.assertRaises(BadFlags, Decoder().feed,
                              encodePlain(1, 0x0400, 0, 0, b""))
        self.assertEqual(e.code, XTMPErrorCode.BAD_FLAGS)
        self.assertIn("0x0400", str(e))

    def test_lastFragmentAlone(self):
        self.assertRaises(BadFlags, Decoder().feed,
                          encodePlain(1, Flags.LAST_FRAGMENT, 0, 0, b""))

    def test_oversizedLengthRejectedFromHeaderAlone(self):
        """
        The length is checked as soon as the 32 header bytes arrive, so the
        decoder never buffers toward an oversized payload.
        """
        header = HEADER.pack(b"XTMP", 1, 0x10, 0, 0, 0, 1025, 0)
        e = self.assertRaises(MessageTooLarge, Decoder(maxPayload=1024).feed,
                              header)
        self.assertEqual(e.code, XTMPErrorCode.MESSAGE_TOO_LARGE)
        self.assertIn("1025", str(e))

    def test_checksumMismatch(self):
        raw = bytearray(encodePlain(0x10, 0, 0, 0, b"hello"))
        raw[-1] ^= 1
        e = self.assertRaises(ChecksumMismatch, Decoder().feed, bytes(raw))
        self.assertEqual(e.code, XTMPErrorCode.CHECKSUM_MISMATCH)

    def test_badCipher(self):
        self.assertRaises(MalformedMessage, Decoder().feed,
                          encryptedFrame(cipher=3))

    def test_reservedNonZero(self):
        raw = bytearray(encryptedFrame())
        raw[33] = 1
        self.assertRaises(MalformedMessage, Decoder().feed, bytes(raw))

    def test_nonceTailNonZero(self):
        raw = bytearray(encryptedFrame())
        raw[32 + 40] = 1
        self.assertRaises(MalformedMessage, Decoder().feed, bytes(raw))

    def test_errorsAreRemoteProtocolErrors(self):
        self.assertTrue(issubclass(XTMPRemoteError, RemoteProtocolError))


class ControlPayloadTests(SynchronousTestCase):
    """
    Control payload helpers.
    """

    def test_reason(self):
        self.assertEqual(encodeReason(13, "nope"), b"\x00\x0dnope")
        self.assertEqual(decodeReason(b"\x00\x0dnope"), (13, "nope"))
        self.assertRaises(MalformedMessage, decodeReason, b"\x00")
        self.assertRaises(MalformedMessage, decodeReason, b"\x00\x01\xff")

    def test_name(self):
        self.assertEqual(encodeName("né"), b"\x00\x03n\xc3\xa9")
        self.assertEqual(decodeName(b"\x00\x03n\xc3\xa9rest"), ("né", 5))
        self.assertRaises(MalformedMessage, decodeName, b"\x00\x05ab")

    def test_u64(self):
        self.assertEqual(codec.decodeU64(codec.encodeU64(2 ** 64 - 1), "x"),
                         2 ** 64 - 1)
        self.assertRaises(MalformedMessage, codec.decodeU64, b"\0" * 7, "x")


frames = st.lists(
    st.tuples(st.integers(0, 255), st.sampled_from([0, 4, 8, 0x48, 0x100]),
              st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 64 - 1),
              st.binary(max_size=200)),
    min_size=1, max_size=8)


class CodecPropertyTests(SynchronousTestCase):
    """
    Hypothesis properties of the decoder.
    """

    @settings(max_examples=150, deadline=None)
    @given(frames, st.lists(st.integers(1, 400), max_size=20))
    def test_anyChunking(self, specs, cuts):
        """
        Any split of the stream yields the same frames as one feed.
        """
        raw = b"".join(encodePlain(*s) for s in specs)
        d = Decoder()
        out = []
        pos = 0
        for n in cuts:
            out.extend(d.feed(raw[pos:pos + n]))
            pos += n
        out.extend(d.feed(raw[pos:]))
        self.assertEqual(
            [(f.type, f.flags, f.sessionId, f.sequence, f.payload)
             for f in out], [tuple(s) for s in specs])

    @settings(max_examples=100, deadline=None)
    @given(st.integers(0, 255), st.integers(0, 2 ** 16 - 1),
           st.binary(max_size=100), st.integers(0, 2 ** 32 - 1))
    def test_encryptedRoundTrip(self, mtype, epoch, payload, crc):
        raw = Frame(mtype, Flags.ENCRYPTED, 1, 2, crc, payload, 2, epoch,
                    b"k" * 16, b"n" * 12, b"t" * 16).encode()
        (f,) = Decoder().feed(raw)
        self.assertEqual(f.encode(), raw)

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=600), st.booleans())
    def test_garbage(self, data, withMagic):
        """
        Random bytes raise only typed errors, and memory stays bounded by
        the limit.
        """
        if withMagic:
            data = b"XTMP\x01" + data
        d = Decoder(maxPayload=256)
        try:
            d.feed(data)
        except XTMPRemoteError:
            pass
        self.assertLessEqual(d.buffered, HEADER_SIZE + SECURITY_SIZE + 256)


class SansIOTests(SynchronousTestCase):
    """
    The protocol core imports nothing from Twisted (DESIGN.md section 1).
    """

    def test_noTwistedImports(self):
        import ast
        import os
        import muxframe.xtmp
        here = os.path.dirname(muxframe.xtmp.__file__)
        core = ["codec", "connection", "errors", "events", "handshake",
                "identity", "keys", "rekey", "session", "streams",
                "subscriptions"]
        for name in core:
            with open(os.path.join(here, name + ".py")) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    modules = [node.module or ""]
                else:
                    continue
                for module in modules:
                    self.assertFalse(module.startswith("twisted"),
                                     "%s imports %s" % (name, module))
