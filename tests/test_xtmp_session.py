"""
Tests for the sans-IO XTMP session engine (L{muxframe.xtmp.connection},
L{muxframe.xtmp.session}): integrity, replay and ordering, key updates and
re-handshakes, acknowledgements, fragmentation, compression, priorities,
requests, streams, timers.
"""

import zlib

from twisted.trial.unittest import SynchronousTestCase

from muxframe.xtmp import codec
from muxframe.xtmp.codec import Decoder, Flags, MessageType, encodePlain
from muxframe.xtmp.connection import (
    DisconnectReceived, ErrorReceived, RequestFailed,
    ResponseReceived, SubscribeReceived,
)
from muxframe.xtmp.errors import (
    BadFlags, BadMagic, BadVersion, ChecksumMismatch, DecryptionFailed,
    DowngradeDetected, MalformedMessage, MessageTooLarge, NonceMismatch,
    SendQueueFull, SequenceError, WrongKey, XTMPErrorCode, XTMPRemoteError,
    XTMPTimeout,
)
from muxframe.xtmp.session import (
    OutgoingMessage, Reassembler, ResumptionState, parseBody,
)

from tests.test_xtmp_support import enginePair, exchange, payloads


class Token:
    sequence = None
    cancelled = False


class IntegrityTests(SynchronousTestCase):
    """
    Tampering, replay, reordering and wrong keys are rejected with the
    documented error, and the receive counter does not advance.
    """

    def test_roundTrip(self):
        c, s = enginePair()
        c.sendMessage(0x10, b"hello")
        s.sendMessage(0x11, b"world")
        ce, se = exchange(c, s)
        self.assertEqual(payloads(se), [b"hello"])
        self.assertEqual(payloads(ce), [b"world"])

    def test_everyTamperedByteRejected(self):
        """
        Flipping any single byte of an encrypted message (header, security
        layer or ciphertext) is rejected with a typed error before anything
        reaches the application, and a later valid message cannot repair it.
        """
        expected = {0: BadMagic, 4: BadVersion, 6: BadFlags}
        c, s = enginePair()
        c.sendMessage(0x10, b"x" * 64)
        wire = c.dataToSend()
        self.assertEqual(len(wire), 32 + 64 + 64)
        for offset in range(len(wire)):
            c, s = enginePair()
            c.sendMessage(0x10, b"x" * 64)
            c.sendMessage(0x10, b"y" * 64)
            both = bytearray(c.dataToSend())
            both[offset] ^= 0x01 if offset != 6 else 0x04
            before = s.receiveKey.sequence
            # A corrupted length may make the receiver wait for more bytes;
            # whatever follows, the message is still rejected.
            e = self.assertRaises(XTMPRemoteError, s.receiveData,
                                  bytes(both) + bytes(70000))
            self.assertNotEqual(e.code, XTMPErrorCode.NONE)
            if offset in expected:
                self.assertIsInstance(e, expected[offset])
            self.assertEqual(s.receiveKey.sequence, before,
                             "counter advanced for offset %d" % (offset,))

    def test_tamperedCiphertext(self):
        c, s = enginePair()
        c.sendMessage(0x10, b"x" * 64)
        wire = bytearray(c.dataToSend())
        wire[-1] ^= 0x80
        e = self.assertRaises(DecryptionFailed, s.receiveData, bytes(wire))
        self.assertEqual(e.code, XTMPErrorCode.DECRYPT_FAILED)

    def test_tamperedNonce(self):
        c, s = enginePair()
        c.sendMessage(0x10, b"x")
        wire = bytearray(c.dataToSend())
        wire[32 + 24] ^= 1
        e = self.assertRaises(NonceMismatch, s.receiveData, bytes(wire))
        self.assertEqual(e.code, XTMPErrorCode.BAD_NONCE)

    def test_replay(self):
        c, s = enginePair()
        c.sendMessage(0x10, b"once")
        wire = c.dataToSend()
        self.assertEqual(payloads(s.receiveData(wire)), [b"once"])
        e = self.assertRaises(SequenceError, s.receiveData, wire)
        self.assertEqual(e.code, XTMPErrorCode.BAD_SEQUENCE)

    def test_intactMessagesBeforeFault(self):
        """
        Messages before a corrupted one in the same read are reported with
        the error, so the application gets what was marked delivered.
        """
        c, s = enginePair()
        c.sendMessage(0x10, b"good", Flags.REQUIRES_ACK)
        c.sendMessage(0x10, b"bad", Flags.REQUIRES_ACK)
        wire = bytearray(c.dataToSend())
        wire[-1] ^= 1
        e = self.assertRaises(DecryptionFailed, s.receiveData, bytes(wire))
        self.assertEqual(payloads(e.events), [b"good"])
        self.assertEqual(s.resumption.highestDelivered, 1)

    def test_reorder(self):
        c, s = enginePair()
        c.sendMessage(0x10, b"first")
        first = c.dataToSend()
        c.sendMessage(0x10, b"second")
        second = c.dataToSend()
        self.assertRaises(SequenceError, s.receiveData, second)
        self.assertEqual(s.receiveKey.sequence, 0)

    def test_wrongKey(self):
        c, s = enginePair()
        other, _ = enginePair()
        other.sessionId = c.sessionId
        other.sendMessage(0x10, b"forged")
        e = self.assertRaises(WrongKey, s.receiveData, other.dataToSend())
        self.assertEqual(e.code, XTMPErrorCode.WRONG_KEY)

    def test_plaintextInEncryptedSession(self):
        c, s = enginePair()
        raw = encodePlain(0x10, 0, c.sessionId, 0, b"sneaky")
        e = self.assertRaises(DowngradeDetected, s.receiveData, raw)
        self.assertEqual(e.code, XTMPErrorCode.DOWNGRADE)

    def test_oversizedLength(self):
        c, s = enginePair(serverSettings=dict(maxPayload=2000,
                                              fragmentSize=1000))
        raw = codec.HEADER.pack(b"XTMP", 1, 0x10, 1, s.sessionId, 0, 2001, 0)
        self.assertRaises(MessageTooLarge, s.receiveData, raw)

    def test_sessionIdMismatch(self):
        c, s = enginePair()
        c.sessionId ^= 1
        c.sendMessage(0x10, b"x")
        self.assertRaises(MalformedMessage, s.receiveData, c.dataToSend())

    def test_checksumCheckedAfterDecryption(self):
        """
        A sender whose checksum is wrong (but whose AEAD is right) is caught.
        """
        c, s = enginePair()
        k = c.sendKey
        wire = bytearray(k.seal(0x10, Flags.ENCRYPTED, c.sessionId, b"abc"))
        k2 = s.receiveKey
        # Re-seal with a wrong CRC in the authenticated header.
        from muxframe.xtmp.codec import HEADER, SECURITY_PREFIX
        nonce = k.nonce(0)
        aad = HEADER.pack(b"XTMP", 1, 0x10, 1, c.sessionId, 0, 3, 12345) + \
            SECURITY_PREFIX.pack(k.cipher, bytes(3), 0, k.keyId,
                                 nonce + bytes(12))
        out = k._aead.encrypt(nonce, b"abc", aad)
        wire = aad + out[-16:] + out[:-16]
        self.assertRaises(ChecksumMismatch, s.receiveData, wire)
        self.assertEqual(k2.sequence, 0)

    def test_plaintextSession(self):
        from muxframe.xtmp.codec import Cipher
        c, s = enginePair(c_ciphers=(Cipher.NONE,), c_allowPlaintext=True,
                          s_ciphers=(Cipher.NONE,), s_allowPlaintext=True)
        c.sendMessage(0x10, b"clear")
        wire = c.dataToSend()
        self.assertIn(b"clear", wire)
        self.assertEqual(payloads(s.receiveData(wire)), [b"clear"])
        self.assertRaises(SequenceError, s.receiveData, wire)


class KeyRotationTests(SynchronousTestCase):
    """
    KeyUpdate by count and by time; full re-handshake.
    """

    def test_keyUpdateCountsEveryFrame(self):
        """
        keyUpdateMessages counts every frame sealed under the key: control
        messages (a Heartbeat here) and each fragment too; the KeyUpdate
        is the next frame, with sequence number keyUpdateMessages.
        """
        c, s = enginePair(clientSettings=dict(keyUpdateMessages=4,
                                              fragmentSize=100))
        c.sendControl(MessageType.Heartbeat, codec.encodeU64(5))
        c.sendMessage(0x10, b"x" * 250)      # three fragments
        c.sendMessage(0x10, b"after")
        wire = c.dataToSend()
        got = [(f.type, f.sequence, f.epoch) for f in Decoder().feed(wire)]
        self.assertEqual(got, [
            (MessageType.Heartbeat, 0, 0), (0x10, 1, 0), (0x10, 2, 0),
            (0x10, 3, 0), (MessageType.KeyUpdate, 4, 0), (0x10, 0, 1)])
        self.assertEqual(payloads(s.receiveData(wire)),
                         [b"x" * 250, b"after"])

    def test_keyUpdateByCount(self):
        c, s = enginePair(clientSettings=dict(keyUpdateMessages=3))
        for i in range(10):
            c.sendMessage(0x10, b"%d" % i)
        wire = c.dataToSend()
        types = [f.type for f in Decoder().feed(wire)]
        self.assertEqual(types.count(MessageType.KeyUpdate), 3)
        got = payloads(s.receiveData(wire))
        self.assertEqual(got, [b"%d" % i for i in range(10)])
        self.assertEqual(s.receiveKey.epoch, 3)
        self.assertEqual(s.receiveKey.key, c.sendKey.key)
        self.assertEqual(c.counters.keyUpdates, 3)
        self.assertEqual(c.counters.messagesSent, 10)
        self.assertEqual(s.counters.messagesReceived, 10)
        self.assertEqual(s.counters.bytesReceived, c.counters.bytesSent)

    def test_keyUpdateByTime(self):
        c, s = enginePair(serverSettings=dict(keyUpdateInterval=100,
                                              heartbeatInterval=1000,
                                              sessionTimeout=10000))
        old = s.sendKey.key
        s.tick(100)
        ce, _ = exchange(c, s, 100)
        self.assertEqual(c.receiveKey.epoch, 1)
        self.assertNotEqual(s.sendKey.key, old)
        s.sendMessage(0x10, b"after")
        ce, _ = exchange(c, s, 100)
        self.assertEqual(payloads(ce), [b"after"])

    def test_deadlineAfterTimedKeyUpdate(self):
        """
        After a timed KeyUpdate the next deadline is in the future (no
        busy timer).
        """
        c, s = enginePair(serverSettings=dict(keyUpdateInterval=100,
                                              heartbeatInterval=1000))
        s.tick(100)
        exchange(c, s, 100)
        self.assertEqual(s.sendKey.epoch, 1)
        self.assertGreater(s.nextDeadline(100), 1)

    def test_rehandshake(self):
        """
        At the rotation interval the client runs a fresh handshake inside
        the session; traffic continues both ways under new keys, and
        messages in flight under the old keys are still accepted.
        """
        settings = dict(rotationInterval=50, heartbeatInterval=1000,
                        keyUpdateInterval=1000, sessionTimeout=10000)
        c, s = enginePair(clientSettings=settings, serverSettings=settings)
        oldSend, oldReceive = c.sendKey.key, c.receiveKey.key
        c.tick(50)
        c.sendMessage(0x10, b"in flight")
        ce, se = exchange(c, s, 50)
        self.assertEqual(payloads(se), [b"in flight"])
        self.assertNotEqual(c.sendKey.key, oldSend)
        self.assertNotEqual(c.receiveKey.key, oldReceive)
        c.sendMessage(0x10, b"c2s")
        s.sendMessage(0x10, b"s2c")
        ce, se = exchange(c, s, 51)
        self.assertEqual((payloads(ce), payloads(se)), ([b"s2c"], [b"c2s"]))
        self.assertEqual(s.receiveKey.key, c.sendKey.key)


class RehandshakeValidationTests(SynchronousTestCase):
    """
    An in-session hello or answer that does not keep version 1, the
    cipher and the session id is DOWNGRADE.
    """

    def test_helloVersion(self):
        from muxframe.xtmp.handshake import ClientHello
        from muxframe.xtmp.rekey import RekeyOffer, answerRekey
        offer = RekeyOffer(1, 1, 77)
        hello = ClientHello.decode(offer.hello)
        hello.versions = (2,)
        self.assertRaises(DowngradeDetected, answerRekey, hello.encode(), 1,
                          77, 0)
        ack, _, _ = answerRekey(offer.hello, 1, 77, 0)
        offer.finish(ack, 0)
        for offset, value in ((0, 2), (3, 1)):
            bad = bytearray(ack)
            bad[offset] = value
            self.assertRaises(DowngradeDetected, offer.finish, bytes(bad), 0)


class RequestIdTests(SynchronousTestCase):
    """
    Request ids (docs/xtmp.md section 9.4): key generation in the high 32
    bits, sequence number in the low 32, counted alike on both sides
    across KeyUpdates and re-handshakes.
    """

    def assertGenerationsAgree(self, c, s):
        self.assertEqual(s.receiveKey.key, c.sendKey.key)
        self.assertEqual(c.receiveKey.key, s.sendKey.key)
        self.assertEqual(s.receiveKey.generation, c.sendKey.generation)
        self.assertEqual(c.receiveKey.generation, s.sendKey.generation)

    def test_generationsAcrossKeyChanges(self):
        """
        KeyUpdates (by either side) and re-handshakes each advance the
        generation of the directions they change; epochs restart at 0
        after a re-handshake, generations do not.
        """
        c, s = enginePair()
        c._keyUpdate()
        c._keyUpdate()
        s._keyUpdate()
        exchange(c, s)
        self.assertGenerationsAgree(c, s)
        self.assertEqual((c.sendKey.generation, s.sendKey.generation), (2, 1))
        self.assertTrue(c.startRehandshake())
        exchange(c, s)
        c.sendMessage(0x10, b"switch")
        exchange(c, s)
        self.assertGenerationsAgree(c, s)
        self.assertEqual((c.sendKey.epoch, s.sendKey.epoch), (0, 0))
        self.assertEqual((c.sendKey.generation, s.sendKey.generation), (3, 2))

    def test_keyUpdatesDuringRehandshake(self):
        """
        KeyUpdates either side sends while a re-handshake is in flight
        (before its keys are switched to) count on both sides alike.
        """
        c, s = enginePair()
        self.assertTrue(c.startRehandshake())
        c._keyUpdate()
        s.receiveData(c.dataToSend())
        # The server has switched its send key: a KeyUpdate now is under
        # the new one; the client's are still under the old one.
        s._keyUpdate()
        c._keyUpdate()
        s.receiveData(c.dataToSend())
        c.receiveData(s.dataToSend())
        c.sendMessage(0x10, b"new key")
        exchange(c, s)
        self.assertGenerationsAgree(c, s)
        self.assertEqual((c.sendKey.generation, s.sendKey.generation), (3, 2))

    def test_requestIdAfterKeyChanges(self):
        """
        A message's C{requestId} is its generation and sequence number, and
        a response naming it matches the request.
        """
        c, s = enginePair()
        c._keyUpdate()
        token = Token()
        c.sendMessage(0x30, b"q", request=token)
        _, (ev,) = exchange(c, s)
        self.assertEqual(ev.message.sequence, 0)
        self.assertEqual(ev.message.requestId, (1 << 32) | 0)
        self.assertEqual(token.sequence, ev.message.requestId)
        s.sendMessage(0x30, b"a", requestSequence=ev.message.sequence)
        (wrong,), _ = exchange(c, s)
        self.assertNotIsInstance(wrong, ResponseReceived)
        self.assertEqual(c.counters.unmatchedResponses, 1)
        s.sendMessage(0x30, b"a", requestSequence=ev.message.requestId)
        (right,), _ = exchange(c, s)
        self.assertIsInstance(right, ResponseReceived)
        self.assertIs(right.request, token)

    def test_fragmentedRequestAcrossKeyUpdate(self):
        """
        A fragmented request's id is its first fragment's, even when a
        KeyUpdate comes between its fragments.
        """
        c, s = enginePair(clientSettings=dict(fragmentSize=100,
                                              keyUpdateMessages=2))
        token = Token()
        c.sendMessage(0x30, b"x" * 250, request=token)
        _, (ev,) = exchange(c, s)
        self.assertEqual(c.counters.keyUpdates, 1)
        self.assertEqual(ev.message.requestId, 0)
        self.assertEqual(s.receiveKey.generation, 1)
        s.sendMessage(0x30, b"a", requestSequence=ev.message.requestId)
        (right,), _ = exchange(c, s)
        self.assertIs(right.request, token)

    def test_plaintextRequestId(self):
        """
        A plaintext session never changes keys: the request id is the
        sequence number.
        """
        from muxframe.xtmp.codec import Cipher
        c, s = enginePair(c_ciphers=(Cipher.NONE,), c_allowPlaintext=True,
                          s_ciphers=(Cipher.NONE,), s_allowPlaintext=True)
        c.sendMessage(0x10, b"a")
        token = Token()
        c.sendMessage(0x30, b"q", request=token)
        _, (_, ev) = exchange(c, s)
        self.assertEqual(ev.message.requestId, 1)
        s.sendMessage(0x30, b"a", requestSequence=ev.message.requestId)
        (right,), _ = exchange(c, s)
        self.assertIs(right.request, token)

    def test_sequenceBelow2To32(self):
        """
        A peer that does not update its key before sequence number 2**32
        is C{BAD_SEQUENCE}: request ids would be ambiguous.
        """
        c, s = enginePair()
        c.sendKey.sequence = s.receiveKey.sequence = (1 << 32) - 1
        c.sendMessage(0x10, b"last")
        self.assertEqual(payloads(s.receiveData(c.dataToSend())), [b"last"])
        c.sendMessage(0x10, b"too far")
        e = self.assertRaises(SequenceError, s.receiveData, c.dataToSend())
        self.assertEqual(e.code, XTMPErrorCode.BAD_SEQUENCE)

    def test_keyUpdateMessagesBounded(self):
        """
        C{keyUpdateMessages} keeps sequence numbers below 2**32.
        """
        from muxframe.xtmp.connection import Settings
        self.assertEqual(Settings(keyUpdateMessages=(1 << 32) - 1)
                         .keyUpdateMessages, (1 << 32) - 1)
        for bad in (0, 1 << 32):
            self.assertRaises(ValueError, Settings, keyUpdateMessages=bad)


class AckTests(SynchronousTestCase):
    """
    REQUIRES_ACK: acknowledgement, duplicate suppression, bounds.
    """

    def test_ackReleases(self):
        c, s = enginePair()
        c.sendMessage(0x10, b"a", Flags.REQUIRES_ACK)
        c.sendMessage(0x10, b"b", Flags.REQUIRES_ACK)
        self.assertEqual(len(c.resumption.pending()), 2)
        ce, se = exchange(c, s)
        self.assertEqual(payloads(se), [b"a", b"b"])
        self.assertEqual(len(c.resumption.unacked), 0)
        self.assertEqual(c.resumption.unackedBytes, 0)
        self.assertEqual(s.resumption.highestDelivered, 2)

    def test_duplicateSuppressed(self):
        c, s = enginePair()
        m = c.sendMessage(0x10, b"a", Flags.REQUIRES_ACK)
        exchange(c, s)
        # Resend the same delivery id as a reconnect would.
        c._enqueue(m)
        ce, se = exchange(c, s)
        self.assertEqual(payloads(se), [])

    def test_ackForUnsentId(self):
        c, s = enginePair()
        s.sendControl(MessageType.Ack, codec.encodeU64(5))
        self.assertRaises(MalformedMessage, c.receiveData, s.dataToSend())

    def test_resumptionState(self):
        r = ResumptionState()
        ms = [OutgoingMessage(0x10, 0, b"x") for _ in range(3)]
        for m in ms:
            r.assign(m)
        self.assertEqual([m.deliveryId for m in ms], [1, 2, 3])
        self.assertEqual(r.acknowledge(2), 2)
        self.assertEqual(list(r.unacked), [3])
        self.assertFalse(r.isDuplicate(1))
        self.assertTrue(r.isDuplicate(1))

    def test_sendQueueBounded(self):
        c, s = enginePair(clientSettings=dict(maxQueuedBytes=1000))
        c.sendMessage(0x10, b"x" * 500, Flags.REQUIRES_ACK)
        e = self.assertRaises(SendQueueFull, c.sendMessage, 0x10, b"x" * 500)
        self.assertIn("1000", str(e))
        exchange(c, s)
        c.sendMessage(0x10, b"x" * 500)


class FragmentationTests(SynchronousTestCase):
    """
    Large messages travel as fragments with bounded reassembly.
    """

    def test_fragmented(self):
        c, s = enginePair(clientSettings=dict(fragmentSize=1000))
        data = bytes(range(256)) * 20
        c.sendMessage(0x10, data, Flags.REQUIRES_ACK)
        wire = c.dataToSend()
        fs = Decoder().feed(wire)
        self.assertEqual(len(fs), 6)
        self.assertTrue(all(f.flags & Flags.FRAGMENTED for f in fs))
        self.assertEqual([bool(f.flags & Flags.LAST_FRAGMENT) for f in fs],
                         [False] * 5 + [True])
        events = s.receiveData(wire)
        self.assertEqual(payloads(events), [data])
        self.assertEqual(events[0].message.sequence, 0)

    def test_maxMessageSize(self):
        c, s = enginePair(clientSettings=dict(fragmentSize=1000),
                          serverSettings=dict(maxMessageSize=3000))
        c.sendMessage(0x10, b"z" * 5000)
        e = self.assertRaises(MessageTooLarge, s.receiveData, c.dataToSend())
        self.assertEqual(e.code, XTMPErrorCode.MESSAGE_TOO_LARGE)
        self.assertLessEqual(s._reassembler.buffered, 3000)

    def test_defaultLimit(self):
        c, s = enginePair()
        self.assertEqual(s.settings.maxMessageSize, 16 * 1024 * 1024)

    def test_interleavedMessageRejected(self):
        r = Reassembler(100)
        self.assertIsNone(r.add(0x10, Flags.FRAGMENTED, 0, b"ab"))
        self.assertRaises(MalformedMessage, r.add, 0x11,
                          Flags.FRAGMENTED | Flags.LAST_FRAGMENT, 1, b"c")

    def test_appMessageBetweenFragments(self):
        c, s = enginePair()
        c._seal(0x10, Flags.FRAGMENTED, b"part")
        raw = c._seal(0x10, Flags.FRAGMENTED, b"part")
        c2, s2 = enginePair()
        wire = c2._seal(0x10, Flags.FRAGMENTED, b"part") + \
            c2._seal(0x11, 0, b"whole")
        self.assertRaises(MalformedMessage, s2.receiveData, wire)
        del raw


class CompressionTests(SynchronousTestCase):
    """
    COMPRESSED only when it shrinks; decompression bounded.
    """

    def test_compressedWhenSmaller(self):
        c, s = enginePair()
        c.sendMessage(0x10, b"a" * 10000, Flags.COMPRESSED)
        wire = c.dataToSend()
        (f,) = Decoder().feed(wire)
        self.assertTrue(f.flags & Flags.COMPRESSED)
        self.assertLess(len(wire), 1000)
        self.assertEqual(payloads(s.receiveData(wire)), [b"a" * 10000])

    def test_notCompressedWhenLarger(self):
        c, s = enginePair()
        c.sendMessage(0x10, b"\x8f\x12", Flags.COMPRESSED)
        (f,) = Decoder().feed(c.dataToSend())
        self.assertFalse(f.flags & Flags.COMPRESSED)

    def test_threshold(self):
        c, s = enginePair(clientSettings=dict(compressThreshold=100))
        c.sendMessage(0x10, b"b" * 200)
        (f,) = Decoder().feed(c.dataToSend())
        self.assertTrue(f.flags & Flags.COMPRESSED)

    def test_trailingBytesAfterCompressedData(self):
        """
        Bytes after the end of the zlib stream are PROTOCOL_ERROR, not
        silently dropped.
        """
        body = zlib.compress(b"a" * 100) + b"junk"
        e = self.assertRaises(MalformedMessage, parseBody, 0x10,
                              Flags.COMPRESSED, body, 0, 1 << 20)
        self.assertIn("after the compressed", str(e))

    def test_bomb(self):
        bomb = zlib.compress(b"\0" * 100000)
        self.assertRaises(MessageTooLarge, parseBody, 0x10,
                          Flags.COMPRESSED, bomb, 0, 1000)
        self.assertRaises(MalformedMessage, parseBody, 0x10,
                          Flags.COMPRESSED, b"not zlib", 0, 1000)


class PriorityTests(SynchronousTestCase):
    """
    EMERGENCY, then PRIORITY_HIGH, then the rest; order kept per class.
    """

    def test_order(self):
        c, s = enginePair()
        for data, flags in [(b"n1", 0), (b"h1", Flags.PRIORITY_HIGH),
                            (b"e1", Flags.EMERGENCY), (b"n2", 0),
                            (b"h2", Flags.PRIORITY_HIGH),
                            (b"e2", Flags.EMERGENCY | Flags.PRIORITY_HIGH)]:
            c.sendMessage(0x10, data, flags)
        got = payloads(s.receiveData(c.dataToSend()))
        self.assertEqual(got, [b"e1", b"e2", b"h1", b"h2", b"n1", b"n2"])

    def test_limitKeepsRest(self):
        c, s = enginePair()
        for i in range(10):
            c.sendMessage(0x10, b"x" * 100)
        first = c.dataToSend(limit=300)
        self.assertEqual(len(payloads(s.receiveData(first))), 3)
        self.assertTrue(c.hasQueued())


class RequestAndControlTests(SynchronousTestCase):
    """
    Requests, Error, Disconnect, Subscribe, timers.
    """

    def test_heartbeatLength(self):
        """
        A Heartbeat's data is exactly one u64: 3 or 9 bytes is
        PROTOCOL_ERROR.
        """
        for data in (b"abc", b"123456789", b""):
            c, s = enginePair()
            c.sendControl(MessageType.Heartbeat, data)
            e = self.assertRaises(MalformedMessage, s.receiveData,
                                  c.dataToSend())
            self.assertEqual(e.code, XTMPErrorCode.PROTOCOL_ERROR)
            self.assertIn("Heartbeat", str(e))
        c, s = enginePair()
        c.sendControl(MessageType.Heartbeat, bytes(8))
        self.assertEqual(s.receiveData(c.dataToSend()), [])

    def test_ackAndKeyUpdateLengths(self):
        """
        An Ack's data is exactly 8 bytes and a KeyUpdate's exactly 4
        (docs/xtmp.md section 6); any other length is PROTOCOL_ERROR.
        """
        cases = [(MessageType.Ack, n, "Ack") for n in (0, 7, 9, 16)] + [
            (MessageType.KeyUpdate, n, "KeyUpdate") for n in (0, 3, 5, 8)]
        for mtype, length, name in cases:
            c, s = enginePair()
            c.sendControl(mtype, b"\x00" * (length - 1) + b"\x01"
                          if length else b"")
            e = self.assertRaises(MalformedMessage, s.receiveData,
                                  c.dataToSend())
            self.assertEqual(e.code, XTMPErrorCode.PROTOCOL_ERROR)
            self.assertIn("%s payload must be" % (name,), str(e))

    def test_controlFlags(self):
        """
        Control messages carry no flag but ENCRYPTED (Subscribe and
        Unsubscribe: never REQUIRES_ACK or STREAM_DATA); anything else is
        PROTOCOL_ERROR, and no delivery id is consumed by it.
        """
        cases = [(MessageType.Heartbeat, Flags.REQUIRES_ACK, bytes(16)),
                 (MessageType.Ack, Flags.PRIORITY_HIGH, bytes(8)),
                 (MessageType.KeyUpdate, Flags.RESPONSE, bytes(12)),
                 (MessageType.Heartbeat, Flags.FRAGMENTED, bytes(8)),
                 (MessageType.Subscribe, Flags.REQUIRES_ACK,
                  bytes(8) + codec.encodeName("x")),
                 (MessageType.Unsubscribe, Flags.STREAM_DATA,
                  codec.encodeName("x") + codec.encodeName("y"))]
        for mtype, flags, body in cases:
            c, s = enginePair()
            wire = c.sendKey.seal(mtype, flags | Flags.ENCRYPTED,
                                  c.sessionId, body)
            e = self.assertRaises(MalformedMessage, s.receiveData, wire)
            self.assertIn("not allowed on control", str(e))
            self.assertEqual(s.resumption.highestDelivered, 0)

    def test_closeBytesOnce(self):
        """
        After L{closeWithError} returned the closing bytes, L{dataToSend}
        does not return them again.
        """
        c, s = enginePair()
        wire = s.closeWithError(XTMPErrorCode.UNAUTHORIZED, "no")
        self.assertTrue(wire)
        self.assertEqual(s.dataToSend(), b"")

    def test_requestResponse(self):
        c, s = enginePair()
        token = Token()
        c.sendMessage(0x30, b"q", request=token)
        _, se = exchange(c, s)
        (req,) = [e.message for e in se]
        s.sendMessage(0x30, b"answer", requestSequence=req.requestId)
        ce, _ = exchange(c, s)
        (ev,) = ce
        self.assertIsInstance(ev, ResponseReceived)
        self.assertIs(ev.request, token)
        self.assertEqual(ev.message.payload, b"answer")
        self.assertEqual(ev.message.requestSequence, token.sequence)

    def test_errorResponse(self):
        c, s = enginePair()
        token = Token()
        c.sendMessage(0x30, b"q", request=token)
        _, (ev,) = exchange(c, s)
        s.sendMessage(MessageType.Error, codec.encodeReason(17, "boom"),
                      requestSequence=ev.message.requestId)
        (fail,), _ = exchange(c, s)
        self.assertIsInstance(fail, RequestFailed)
        self.assertEqual((fail.code, fail.reason), (17, "boom"))

    def test_unsolicitedError(self):
        c, s = enginePair()
        s.sendMessage(MessageType.Error, codec.encodeReason(16, "what"))
        (ev,), _ = exchange(c, s)
        self.assertIsInstance(ev, ErrorReceived)

    def test_subscribe(self):
        c, s = enginePair()
        c.sendMessage(MessageType.Subscribe, codec.encodeName("prices"))
        _, (ev,) = exchange(c, s)
        self.assertIsInstance(ev, SubscribeReceived)
        self.assertEqual(ev.name, "prices")

    def test_streamData(self):
        c, s = enginePair()
        c.sendMessage(MessageType.EventStream, b"tick", streamName="prices")
        _, (ev,) = exchange(c, s)
        self.assertEqual(ev.message.streamName, "prices")
        self.assertTrue(ev.message.flags & Flags.STREAM_DATA)

    def test_closeWithError(self):
        c, s = enginePair()
        wire = s.closeWithError(XTMPErrorCode.UNAUTHORIZED, "go away")
        events = c.receiveData(wire)
        self.assertIsInstance(events[0], ErrorReceived)
        self.assertIsInstance(events[1], DisconnectReceived)
        self.assertEqual(events[1].code, XTMPErrorCode.UNAUTHORIZED)
        self.assertEqual(c.state, "CLOSED")

    def test_heartbeat(self):
        c, s = enginePair()
        c.tick(30)
        (f,) = Decoder().feed(c.dataToSend(now=30))
        self.assertEqual(f.type, MessageType.Heartbeat)

    def test_silentPeer(self):
        c, s = enginePair()
        c.tick(59)
        self.assertRaises(XTMPTimeout, c.tick, 60)

    def test_idleTimeout(self):
        c, s = enginePair(clientSettings=dict(sessionTimeout=100,
                                              heartbeatInterval=30))
        for t in range(30, 100, 30):
            c.tick(t)
            s.tick(t)
            exchange(c, s, t)
        e = self.assertRaises(XTMPTimeout, c.tick, 100)
        self.assertIn("idle", str(e))

    def test_errorsAreNotActivity(self):
        """
        Errors, sent or received, do not keep a session from its idle
        timeout (docs/xtmp.md section 9.2): a peer answering every message
        with an Error is idle.
        """
        c, s = enginePair(clientSettings=dict(sessionTimeout=100,
                                              heartbeatInterval=30),
                          serverSettings=dict(sessionTimeout=100,
                                              heartbeatInterval=30))
        for t in range(10, 100, 10):
            s.sendMessage(MessageType.Error, codec.encodeReason(16, "no"),
                          now=t)
            exchange(c, s, t)
            c.tick(t)
            s.tick(t)
            exchange(c, s, t)
        self.assertRaises(XTMPTimeout, s.tick, 100)
        self.assertRaises(XTMPTimeout, c.tick, 100)

    def test_handshakeTimeout(self):
        from muxframe.xtmp.connection import XTMPConnection
        from muxframe.xtmp.handshake import ServerHandshake
        from tests.test_xtmp_support import SERVER_IDENTITY
        s = XTMPConnection(ServerHandshake(SERVER_IDENTITY), now=0)
        self.assertEqual(s.nextDeadline(0), 10)
        s.tick(9)
        self.assertRaises(XTMPTimeout, s.tick, 10)

    def test_nextDeadline(self):
        c, s = enginePair()
        self.assertEqual(c.nextDeadline(0), 30)


class EnginePropertyTests(SynchronousTestCase):
    """
    Whatever arrives after the handshake, the engine raises only typed
    XTMP errors, and never gives a corrupted message to the application.
    """

    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.binary(max_size=300))
    def test_garbage(self, data):
        c, s = enginePair()
        try:
            events = s.receiveData(data)
        except XTMPRemoteError:
            return
        self.assertEqual(events, [])

    @settings(max_examples=80, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 10000), st.integers(1, 255)),
                    min_size=1, max_size=4))
    def test_mutations(self, flips):
        """
        Only unmodified messages before the first modified byte are
        delivered; the modified one and all after it never are.
        """
        c, s = enginePair()
        sent = [b"m%d" % i * 20 for i in range(3)]
        for data in sent:
            c.sendMessage(0x10, data, Flags.COMPRESSED)
        original = c.dataToSend()
        wire = bytearray(original)
        for pos, mask in flips:
            wire[pos % len(wire)] ^= mask
        frameSize = len(original) // 3
        firstChange = next((i for i in range(len(wire))
                            if wire[i] != original[i]), len(wire))
        intact = firstChange // frameSize
        try:
            events = s.receiveData(bytes(wire))
        except XTMPRemoteError as e:
            events = e.events
        got = payloads(events)
        self.assertEqual(got, sent[:len(got)])
        self.assertLessEqual(len(got), intact)


class EngineRoundTripProperty(SynchronousTestCase):
    """
    Any sequence of messages (types, flags, sizes across the fragment
    size, compression) arrives unchanged, in priority order, however the
    bytes are split.
    """

    from hypothesis import given, settings, strategies as st

    messages = st.lists(st.tuples(
        st.integers(0x10, 0xFD),
        st.sampled_from([0, Flags.REQUIRES_ACK, Flags.PRIORITY_HIGH,
                         Flags.EMERGENCY, Flags.COMPRESSED,
                         Flags.REQUIRES_ACK | Flags.COMPRESSED,
                         Flags.REQUIRES_ACK | Flags.PRIORITY_HIGH,
                         Flags.REQUIRES_ACK | Flags.EMERGENCY]),
        st.one_of(st.binary(max_size=300),
                  st.integers(0, 2500).map(lambda n: b"ab" * n))),
        min_size=1, max_size=8)

    @settings(max_examples=60, deadline=None)
    @given(messages, st.integers(1, 700))
    def test_roundTrip(self, specs, chunk):
        c, s = enginePair(clientSettings=dict(fragmentSize=1024))
        for mtype, flags, data in specs:
            c.sendMessage(mtype, data, flags)
        wire = c.dataToSend()
        got = []
        for i in range(0, len(wire), chunk):
            got.extend(e.message for e in s.receiveData(wire[i:i + chunk]))
        def rank(spec):
            if spec[1] & Flags.EMERGENCY:
                return 0
            return 1 if spec[1] & Flags.PRIORITY_HIGH else 2

        expected = sorted(specs, key=rank)
        self.assertEqual([(m.type, m.payload) for m in got],
                         [(t, d) for t, f, d in expected])
        # Delivery ids increase in wire order whatever the priorities (the
        # receiver's cumulative duplicate check depends on it).
        acked = [m.deliveryId for m in got if m.deliveryId is not None]
        self.assertEqual(acked, list(range(1, len(acked) + 1)))


class EngineFootprintTests(SynchronousTestCase):
    """
    A server holds one engine per idle session: it keeps its state in
    slots, mixins included.
    """

    def test_noInstanceDict(self):
        c, s = enginePair()
        for engine in (c, s):
            self.assertFalse(hasattr(engine, "__dict__"))


class HeartbeatPathTests(SynchronousTestCase):
    """
    An idle session's round (a probe, its answer) goes by short paths: a
    received Heartbeat skips the general message parsing, a flush with
    nothing to send writes nothing, a ChaCha20-Poly1305 key keeps its AEAD
    object.  The bytes and the checks are the general path's.
    """

    def _round(self, c, s, probeAt, answerAt):
        # The server probes, the client answers; return the wire bytes.
        import copy
        s.tick(probeAt)
        probe = s.dataToSend(now=probeAt)
        clientKey = copy.copy(c.sendKey)
        self.assertEqual(c.receiveData(probe, probeAt + 0.1), [])
        answer = c.dataToSend(now=probeAt + 0.1)
        self.assertEqual(s.receiveData(answer, answerAt), [])
        return probe, answer, clientKey

    def test_answerBytes(self):
        """
        A probe is answered with exactly the Heartbeat the general path
        seals (its clock with the answer bit, under the next sequence
        number); the answer measures the rtt, is not answered, and counts
        as received.
        """
        from muxframe.xtmp.connection import HEARTBEAT_ANSWER
        c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
        probe, answer, clientKey = self._round(c, s, 30.0, 30.25)
        (f,) = Decoder().feed(probe)
        self.assertEqual(f.type, MessageType.Heartbeat)
        value = int(30.0 * 1e6)
        expected = clientKey.seal(MessageType.Heartbeat, Flags.ENCRYPTED,
                                  c.sessionId,
                                  codec.encodeU64(value | HEARTBEAT_ANSWER))
        self.assertEqual(answer, expected)
        self.assertEqual(c.counters.heartbeatsAnswered, 1)
        self.assertAlmostEqual(s.rtt, 0.25)
        self.assertEqual(s.lastReceived, 30.25)
        self.assertEqual(s.receiveKey.sequence, c.sendKey.sequence)
        self.assertEqual(s.dataToSend(now=30.25), b"")
        self.assertEqual(s.counters.heartbeatsAnswered, 0)

    def test_flaggedHeartbeat(self):
        """
        A Heartbeat with a flag is still PROTOCOL_ERROR before it is
        acted on (here RESPONSE, with a request id before the u64).
        """
        c, s = enginePair()
        c.sendControl(MessageType.Heartbeat, bytes(8), requestSequence=1)
        e = self.assertRaises(MalformedMessage, s.receiveData,
                              c.dataToSend())
        self.assertEqual(e.code, XTMPErrorCode.PROTOCOL_ERROR)
        self.assertIn("flags", str(e))
        self.assertEqual(s.counters.heartbeatsAnswered, 0)

    def test_hasOutput(self):
        """
        C{hasOutput} is false exactly when an open session's
        L{dataToSend} would return nothing whatever its limit (with a limit
        of 0 queued messages stay queued).
        """
        c, s = enginePair()
        self.assertFalse(c.hasOutput())
        self.assertEqual(c.dataToSend(), b"")
        c.sendControl(MessageType.Heartbeat, bytes(8))
        self.assertTrue(c.hasOutput())
        self.assertNotEqual(c.dataToSend(), b"")
        self.assertFalse(c.hasOutput())
        c.sendMessage(0x80, b"x" * 100)
        self.assertTrue(c.hasOutput())
        # A paused transport's limit of 0 leaves it queued.
        self.assertEqual(c.dataToSend(0), b"")
        self.assertTrue(c.hasOutput())
        self.assertNotEqual(c.dataToSend(), b"")
        self.assertFalse(c.hasOutput())
        # A resent message, an empty one among them, counts.
        c.sendMessage(0x80, b"", flags=Flags.REQUIRES_ACK)
        self.assertTrue(c.hasOutput())
        self.assertNotEqual(c.dataToSend(), b"")
        self.assertFalse(c.hasOutput())

    def test_nextDeadline(self):
        """
        The next deadline is the earliest of the heartbeat, silence, idle,
        key update and (client) rotation times.
        """
        cases = [
            dict(heartbeatInterval=30),
            dict(heartbeatInterval=30, heartbeatLead=2),
            dict(heartbeatInterval=100, sessionTimeout=20),
            dict(heartbeatInterval=100, keyUpdateInterval=7),
            dict(heartbeatInterval=100, rotationInterval=5),
        ]
        for settings in cases:
            c, s = enginePair(clientSettings=settings,
                              serverSettings=settings, now=3.0)
            c.lastReceived = 2.0
            for engine in (c, s):
                st = engine.settings
                due = [engine.lastSent + st.heartbeatInterval
                       - st.heartbeatLead,
                       engine.lastReceived + 2 * st.heartbeatInterval,
                       engine.lastActivity + st.sessionTimeout,
                       engine.sendKey.createdAt + st.keyUpdateInterval]
                if engine.isClient:
                    due.append(engine.keysAt + st.rotationInterval)
                for now in (3.0, 10.0, 1000.0):
                    self.assertEqual(engine.nextDeadline(now),
                                     max(0.0, min(due) - now))

    def test_chachaKeepsItsAEAD(self):
        """
        After an idle round a ChaCha20-Poly1305 session's keys keep their
        AEAD objects (about 20 bytes each), an AES-256-GCM session's drop
        theirs (2.4 KiB each); the rounds after go on the same.
        """
        from muxframe.xtmp.codec import Cipher
        for cipher, kept in ((Cipher.CHACHA20_POLY1305, True),
                             (Cipher.AES_256_GCM, False)):
            c, s = enginePair(serverSettings=dict(heartbeatInterval=30),
                              c_ciphers=(cipher,))
            self.assertEqual(s.sendKey.cipher, cipher)
            for n in range(1, 4):
                self._round(c, s, 30.0 * n, 30.0 * n + 0.5)
                for key in (s.sendKey, s.receiveKey):
                    self.assertEqual(key._aead is not None, kept)
                self.assertEqual(s.counters.heartbeatsSent, n)
                self.assertAlmostEqual(s.rtt, 0.5)


class AnswerLaterEngineTests(SynchronousTestCase):
    """
    An engine whose server handshake answers the ClientHello later
    (C{answerLater}) keeps the frames behind the hello until its next
    L{XTMPConnection.receiveData}, which answers first.
    """

    def pair(self):
        from muxframe.xtmp.connection import XTMPConnection
        from muxframe.xtmp.handshake import ClientHandshake, ServerHandshake
        from tests.test_xtmp_support import CLIENT_IDENTITY, SERVER_IDENTITY
        self.asked = []
        client = XTMPConnection(ClientHandshake(
            serverKey=SERVER_IDENTITY.public, identity=CLIENT_IDENTITY))
        server = XTMPConnection(ServerHandshake(
            SERVER_IDENTITY, authorizedKeys=[CLIENT_IDENTITY.public],
            answerLater=lambda: self.asked.append(1)))
        client.initiate()
        return client, server

    def test_framesBehindTheHelloWait(self):
        """
        A frame behind the hello in the same read is not decoded while
        the answer is due; the next read (even of no bytes) answers, then
        decodes it, in the handshake's next state.
        """
        client, server = self.pair()
        error = encodePlain(MessageType.Error, 0, 0, 0,
                            codec.encodeReason(XTMPErrorCode.BUSY, "later"))
        self.assertEqual(server.receiveData(client.dataToSend() + error), [])
        self.assertEqual((self.asked, server.dataToSend()), ([1], b""))
        from muxframe.xtmp.errors import PeerError
        self.assertRaises(PeerError, server.receiveData, b"")
        answer = [f.type for f in Decoder().feed(server.dataToSend())]
        self.assertEqual(answer, [MessageType.HandshakeAck] * 2)

    def test_handshakeCompletes(self):
        """
        Answered on the next read, the handshake completes as usual.
        """
        client, server = self.pair()
        server.receiveData(client.dataToSend())
        server.receiveData(b"")
        exchange(client, server)
        self.assertEqual((client.state, server.state), ("OPEN", "OPEN"))
        self.assertEqual(client.sessionId, server.sessionId)

    def test_refusalWhileAnswerDue(self):
        """
        Closed while the answer is due, the server sends a plaintext Error
        for session 0 (the client has no keys yet), which the client reads.
        """
        client, server = self.pair()
        server.receiveData(client.dataToSend())
        out = server.closeWithError(XTMPErrorCode.BUSY, "shutting down")
        # As a refusal of the hello itself: one plaintext Error.
        self.assertEqual([(f.type, f.flags, f.sessionId)
                          for f in Decoder().feed(out)],
                         [(MessageType.Error, 0, 0)])
        from muxframe.xtmp.errors import PeerError
        e = self.assertRaises(PeerError, client.receiveData, out)
        self.assertEqual(e.code, XTMPErrorCode.BUSY)
