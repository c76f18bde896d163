"""
The presence, queue and history messages' codec (muxframe.messaging.wire):
proto3 encodings byte for byte, decoding rules (order, unknown fields,
merging by concatenation), and malformed input as WireError only.
"""

import struct

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from muxframe.messaging import wire
from muxframe.messaging.wire import (
    CLASSES, UINT64, StanzaType, WireError, decodeStanza, encodeField)


class VarintTests(SynchronousTestCase):
    def test_known(self):
        for value, encoded in [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"),
                               (300, "ac02"), (2 ** 64 - 1, "ffffffffffffffffff01")]:
            self.assertEqual(wire.encodeVarint(value).hex(), encoded)
            self.assertEqual(wire.decodeVarint(bytes.fromhex(encoded), 0),
                             (value, len(encoded) // 2))

    def test_truncatedAndTooLong(self):
        self.assertRaises(WireError, wire.decodeVarint, b"\x80", 0)
        self.assertRaises(WireError, wire.decodeVarint, b"\xff" * 11, 0)


class EncodingTests(SynchronousTestCase):
    def test_messageBytes(self):
        """
        The Message of docs/presence-and-queues.md section 9.3, byte for
        byte: fields in number order, defaults left out.
        """
        m = wire.Message(id="m1", to=wire.Identity(eid="alice"), payload=b"hi")
        self.assertEqual(m.encode().hex(), "0a026d312a070a05616c69636542026869")
        self.assertEqual(wire.Message.decode(m.encode()), m)

    def test_bindBytes(self):
        b = wire.Bind(identity=wire.Identity(eid="", device="phone"))
        # The optional device is written; the empty eid is not.
        self.assertEqual(b.encode().hex(), "0a07120570686f6e65")

    def test_signedAndDouble(self):
        a = wire.Awareness(status=1, latitude=-33.5, timestamp=-1)
        data = a.encode()
        self.assertIn(b"\x39" + struct.pack("<d", -33.5), data)
        # A negative int64 is ten bytes, two's complement.
        self.assertIn(b"\x58" + b"\xff" * 9 + b"\x01", data)
        self.assertEqual(wire.Awareness.decode(data), a)

    def test_uint64Offsets(self):
        s = wire.Signal(signal_offset=2 ** 64 - 1, user_offset=2 ** 40)
        self.assertEqual(wire.Signal.decode(s.encode()).signal_offset, 2 ** 64 - 1)

    def test_repeated(self):
        q = wire.PresenceQuery(devices=[wire.Device(device="a"), wire.Device(device="b",
                                                                            status=3)])
        self.assertEqual([d.device for d in wire.PresenceQuery.decode(q.encode()).devices],
                         ["a", "b"])

    def test_everyClassRoundTrips(self):
        for messageType, cls in CLASSES.items():
            self.assertIsInstance(decodeStanza(messageType, cls().encode()), cls)
            self.assertEqual(cls().encode(), b"")


class DecodingTests(SynchronousTestCase):
    def test_unknownFieldsSkipped(self):
        m = wire.Message(id="x")
        extra = (encodeField(99, UINT64, 5) + encodeField(98, wire.STRING, "y")
                 + b"\x85\x06" + b"abcd" + b"\x89\x06" + b"12345678")
        self.assertEqual(wire.Message.decode(m.encode() + extra), m)

    def test_anyOrderLastScalarWins(self):
        data = encodeField(2, UINT64, 3) + encodeField(1, wire.STRING, "a") + \
            encodeField(2, UINT64, 9)
        m = wire.Message.decode(data)
        self.assertEqual((m.id, m.signal_offset), ("a", 9))

    def test_embeddedMessagesMerge(self):
        """
        A push is the stored Message plus appended fields: concatenation
        merges embedded messages and keeps the last scalars.
        """
        stored = wire.Message(id="m", from_=wire.Identity(eid="bob")).encode()
        extra = wire.Message(from_=wire.Identity(eid="", device="phone"),
                             signal_offset=4).encode()
        m = wire.Message.decode(stored + extra)
        self.assertEqual((m.from_.eid, m.from_.device, m.signal_offset),
                         ("bob", "phone", 4))

    def test_faults(self):
        for data, why in [
                (b"\x0a\x05ab", "runs past the end"),
                (b"\x0a", "truncated varint"),
                (b"\x10", "truncated varint"),
                (b"\x39\x00", "truncated 64-bit"),
                (b"\x0b", "wire type 3"),
                (b"\x08\x01", "wire type 0"),
                (b"\x0a\x02\xff\xfe", "not valid UTF-8"),
                (b"\x00\x01", "field number 0"),
                (b"\x12\x01x", "has wire type 2")]:
            with self.assertRaises(WireError) as e:
                wire.Message.decode(data)
            self.assertIn(why, str(e.exception))

    def test_depthAndType(self):
        self.assertRaises(WireError, wire.Identity.decode, b"", wire.MAX_DEPTH + 1)
        self.assertRaises(WireError, decodeStanza, 0x20, b"")

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(sorted(CLASSES)), st.binary(max_size=200))
    def test_garbageIsWireErrorOnly(self, messageType, data):
        try:
            decodeStanza(messageType, data)
        except WireError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=20), st.integers(0, 2 ** 64 - 1), st.binary(max_size=50),
           st.booleans(), st.integers(-2 ** 31, 2 ** 31 - 1))
    def test_roundTrip(self, text, offset, payload, flag, number):
        m = wire.Message(id=text, signal_offset=offset, payload=payload, no_receipts=flag,
                         signal_type=number, to=wire.Identity(eid=text, device=text))
        self.assertEqual(wire.Message.decode(m.encode()), m)

    def test_stanzaTypes(self):
        self.assertEqual({int(t) for t in StanzaType},
                         {0x50, 0x52, 0x54, 0x56, 0x57, 0x59, 0x5D, 0x5E, 0x5F})
