"""
An idle session's heartbeat round by its short paths
(L{XTMPConnection.idleProbe}, L{XTMPConnection.receiveHeartbeat} and the
protocol's use of them): the same bytes, counters and checks as the
general path (L{XTMPConnection.tick}, L{XTMPConnection.receiveData}), and
anything else left to the general path untouched.
"""

import copy

from twisted.trial.unittest import SynchronousTestCase

from muxframe.xtmp import codec
from muxframe.xtmp.codec import Flags, MessageType
from muxframe.xtmp.connection import (
    HEARTBEAT_ANSWER, HEARTBEAT_FRAME_SIZE, XTMPConnection, XTMPTimeout,
)
from muxframe.xtmp.errors import (
    ChecksumMismatch, DecryptionFailed, MalformedMessage, NonceMismatch,
    SequenceError, WrongKey,
)
from tests.test_server_support import ALICE, Harness, config
from tests.test_xtmp_support import enginePair

_HB = MessageType.Heartbeat
_ENC = Flags.ENCRYPTED


def _twin(*conns):
    """
    Deep copies of C{conns}, sharing their keys' AEAD objects (immutable,
    and not copyable).
    """
    memo = {}
    for conn in conns:
        for key in (conn.sendKey, conn.receiveKey):
            if key is not None and key._aead is not None:
                memo[id(key._aead)] = key._aead
    copies = copy.deepcopy(conns, memo)
    return copies if len(copies) > 1 else copies[0]


def _state(conn):
    # What a round may change on the engine.
    c = conn.counters
    return (conn.lastSent, conn.lastReceived, conn.rtt,
            conn.sendKey.sequence, conn.sendKey.count,
            conn.receiveKey.sequence, conn.receiveKey.count,
            c.heartbeatsSent, c.heartbeatsAnswered, c.bytesSent,
            c.bytesReceived, c.controlReceived, conn.hasOutput())


class IdleProbeTests(SynchronousTestCase):
    """
    L{XTMPConnection.idleProbe} sends the probe L{tick} would, when that
    probe is all that is due, and nothing otherwise.
    """

    def test_probe(self):
        """
        A due probe is the Heartbeat the send key seals (the clock in
        microseconds under the next sequence number), counted as sent, as
        bytes sent and as the last send; the general path at the same
        moment sends the same bytes and counts the same.
        """
        c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
        c2, s2 = _twin(c, s)
        key = _twin(s).sendKey
        probe = s.idleProbe(30.0)
        self.assertEqual(probe, key.seal(_HB, _ENC, s.sessionId,
                                         codec.encodeU64(int(30e6))))
        self.assertEqual(len(probe), HEARTBEAT_FRAME_SIZE)
        s2.tick(30.0)
        self.assertEqual(s2.dataToSend(now=30.0), probe)
        self.assertEqual(_state(s), _state(s2))
        self.assertEqual(s.counters.heartbeatsSent, 1)
        self.assertEqual(s.lastSent, 30.0)

    def test_notDue(self):
        """
        Before the interval has passed there is nothing to send.
        """
        c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
        before = _state(s)
        self.assertIsNone(s.idleProbe(29.0))
        self.assertEqual(_state(s), before)

    def test_otherWorkDue(self):
        """
        When anything else is due or waiting (queued messages, a control
        message, a silent peer, the idle timeout, a key update by time or
        by count) it returns L{None} and changes nothing; L{tick} then
        does what is due.
        """
        cases = {
            "queued": lambda s: s.sendMessage(0x80, b"x"),
            "control": lambda s: s.sendControl(MessageType.Ack, bytes(8)),
            "silent": lambda s: setattr(s, "lastReceived", -31.0),
            "idle": lambda s: setattr(s.settings, "sessionTimeout", 30.0),
            "keyTime": lambda s: setattr(s.settings, "keyUpdateInterval",
                                         30.0),
            "keyCount": lambda s: setattr(s.sendKey, "count",
                                          s.settings.keyUpdateMessages),
        }
        for name, setUp in cases.items():
            c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
            setUp(s)
            before = _state(s)
            self.assertIsNone(s.idleProbe(30.0), name)
            self.assertEqual(_state(s), before, name)
            if name in ("silent", "idle"):
                self.assertRaises(XTMPTimeout, s.tick, 30.0)
            else:
                s.tick(30.0)
                self.assertTrue(s.hasOutput(), name)

    def test_queuedOrHeld(self):
        """
        A message waiting in any priority class, a held fan-out body or a
        message to resend goes before the probe: the general path's.
        """
        from collections import deque
        from muxframe.xtmp.connection import PreparedBody
        from muxframe.xtmp.session import OutgoingMessage
        cases = {
            "emergency": lambda s: s.sendMessage(0x80, b"x",
                                                 flags=Flags.EMERGENCY),
            "high": lambda s: s.sendMessage(0x80, b"x",
                                            flags=Flags.PRIORITY_HIGH),
            "held": lambda s: s.holdPrepared(
                PreparedBody(0x80, 0, b"x"), 0.0),
            "resend": lambda s: setattr(s, "_resendQueue", deque(
                [OutgoingMessage(0x80, 0, b"x")])),
        }
        for name, setUp in cases.items():
            c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
            setUp(s)
            self.assertTrue(s.hasOutput(), name)
            before = _state(s)
            self.assertIsNone(s.idleProbe(30.0), name)
            self.assertEqual(_state(s), before, name)

    def test_clientRotationDue(self):
        """
        A client whose re-handshake is due starts it (L{tick}), with no
        probe by the short path.
        """
        c, s = enginePair(clientSettings=dict(heartbeatInterval=30,
                                              rotationInterval=30))
        self.assertIsNone(c.idleProbe(30.0))
        self.assertEqual(c.counters.heartbeatsSent, 0)
        c.tick(30.0)
        self.assertTrue(c.hasOutput())

    def test_notOpen(self):
        """
        A session handshaking or closed has no probe, though one would be
        due by time.
        """
        for state in ("HANDSHAKING", "CLOSED"):
            c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
            s.state = state
            self.assertIsNone(s.idleProbe(30.0), state)
            self.assertEqual(s.counters.heartbeatsSent, 0)

    def test_plaintext(self):
        """
        A plaintext session (no keys) probes by the general path.
        """
        from muxframe.xtmp.codec import Cipher
        c, s = enginePair(serverSettings=dict(heartbeatInterval=30),
                          c_ciphers=(Cipher.NONE,), c_allowPlaintext=True,
                          s_ciphers=(Cipher.NONE,), s_allowPlaintext=True)
        self.assertIsNone(s.sendKey)
        self.assertIsNone(s.idleProbe(30.0))
        s.tick(30.0)
        self.assertEqual(c.receiveData(s.dataToSend(now=30.0), 30.0), [])
        self.assertEqual(c.counters.heartbeatsAnswered, 1)


class HeartbeatReceivedTests(SynchronousTestCase):
    """
    L{XTMPConnection.receiveHeartbeat} takes exactly one valid Heartbeat
    as L{receiveData} would, and leaves anything else to it untouched.
    """

    def _answer(self, c, s, at=30.0):
        probe = s.idleProbe(at)
        self.assertEqual(c.receiveData(probe, at + 0.1), [])
        return c.dataToSend(now=at + 0.1)

    def test_answer(self):
        """
        A probe's answer measures the rtt, counts as received and as a
        control frame, advances the receive key, and is not answered: the
        same state as the general path's.
        """
        c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
        answer = self._answer(c, s)
        s2 = _twin(s)
        self.assertTrue(s.receiveHeartbeat(answer, 30.25))
        self.assertEqual(s2.receiveData(answer, 30.25), [])
        self.assertEqual(_state(s), _state(s2))
        self.assertAlmostEqual(s.rtt, 0.25)
        self.assertEqual(s.counters.controlReceived, 1)
        self.assertFalse(s.hasOutput())

    def test_probe(self):
        """
        A peer's probe is answered as the general path answers it: the
        answer waits (L{hasOutput}) and is the same bytes.
        """
        c, s = enginePair()
        c.sendControl(_HB, codec.encodeU64(12345))
        probe = c.dataToSend(now=1.0)
        s2 = _twin(s)
        key = _twin(s).sendKey
        self.assertTrue(s.receiveHeartbeat(probe, 1.0))
        self.assertEqual(s2.receiveData(probe, 1.0), [])
        self.assertTrue(s.hasOutput())
        answer = s.dataToSend(now=1.0)
        self.assertEqual(answer, key.seal(_HB, _ENC, s.sessionId,
                                          codec.encodeU64(
                                              12345 | HEARTBEAT_ANSWER)))
        self.assertEqual(s2.dataToSend(now=1.0), answer)
        self.assertEqual(s.counters.heartbeatsAnswered, 1)

    def test_othersLeftToReceiveData(self):
        """
        Bytes that are not exactly one valid next Heartbeat are refused
        with nothing changed, and L{receiveData} then names the fault (or
        takes them): another length; a changed byte; authentic frames (the
        peer's key seals them) with another session id, sequence number,
        epoch or nonce, a checksum that does not match, a flag, another
        type.
        """
        c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
        answer = self._answer(c, s)

        def flip(data, at):
            return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]

        # Frames the peer's key seals, so their tags verify: only the
        # checks before and after decryption can refuse them.
        key = _twin(c).sendKey
        key.sequence -= 1
        body = codec.encodeU64(int(30e6) | HEARTBEAT_ANSWER)

        def sealed(type=_HB, flags=_ENC, sessionId=c.sessionId,
                   body=body, **change):
            k = copy.copy(key)
            checksum = change.pop("checksum", None)
            for name, value in change.items():
                setattr(k, name, value)
            return k.seal(type, flags, sessionId, body, checksum=checksum)

        wrongEpoch = copy.copy(key)
        wrongEpoch.__init__(key.cipher, key.key, key.iv, epoch=1)
        cases = {
            "longer": (answer + b"x", None),
            "shorter": (answer[:-1], None),
            "flipped tag": (flip(answer, 85), DecryptionFailed),
            "flipped ciphertext": (flip(answer, 100), DecryptionFailed),
            "flipped header": (flip(answer, 15), MalformedMessage),
            "session": (sealed(sessionId=c.sessionId + 1), MalformedMessage),
            "sequence": (sealed(sequence=key.sequence + 1), SequenceError),
            "epoch": (wrongEpoch.seal(_HB, _ENC, c.sessionId, body),
                      WrongKey),
            "nonce": (sealed(_ivTail=key._ivTail ^ 1), NonceMismatch),
            "checksum": (sealed(checksum=7), ChecksumMismatch),
            "flagged": (sealed(flags=_ENC | Flags.PRIORITY_HIGH),
                        MalformedMessage),
            "another type": (sealed(type=MessageType.Ack), MalformedMessage),
        }
        for name, (data, error) in cases.items():
            s2 = _twin(s)
            before = _state(s2)
            if name not in ("longer", "shorter"):
                self.assertEqual(len(data), HEARTBEAT_FRAME_SIZE, name)
            self.assertFalse(s2.receiveHeartbeat(data, 30.25), name)
            self.assertEqual(_state(s2), before, name)
            if error is None:
                s2.receiveData(data, 30.25)
            else:
                self.assertRaises(error, s2.receiveData, data, 30.25)
        # The original, untouched by all that, is taken.
        self.assertTrue(s.receiveHeartbeat(answer, 30.25))

    def test_partialFrameBuffered(self):
        """
        Behind a partial frame the bytes belong to that frame: refused.
        """
        c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
        answer = self._answer(c, s)
        s.receiveData(answer[:10], 30.2)
        self.assertFalse(s.receiveHeartbeat(answer, 30.25))
        self.assertEqual(s.counters.controlReceived, 0)

    def test_closed(self):
        """
        A closed session takes nothing by the short path, and answers no
        probe (L{receiveData} ignores what a closed session reads).
        """
        c, s = enginePair()
        c.sendControl(_HB, codec.encodeU64(1))
        probe = c.dataToSend(now=1.0)
        s.closeWithError(0x01, "bye")
        self.assertFalse(s.receiveHeartbeat(probe, 1.0))
        self.assertEqual(s.receiveData(probe, 1.0), [])
        self.assertEqual(s.counters.heartbeatsAnswered, 0)

    def test_sequenceLimit(self):
        """
        A Heartbeat numbered 2**32 is not taken: the general path refuses
        it as a sequence error (request ids would overlap the next key's).
        """
        from muxframe.xtmp.session import SEQUENCE_LIMIT
        c, s = enginePair()
        c.sendKey.sequence = s.receiveKey.sequence = SEQUENCE_LIMIT
        c.sendControl(_HB, codec.encodeU64(1))
        probe = c.dataToSend(now=1.0)
        self.assertEqual(len(probe), HEARTBEAT_FRAME_SIZE)
        self.assertFalse(s.receiveHeartbeat(probe, 1.0))
        self.assertRaises(SequenceError, s.receiveData, probe, 1.0)

    def test_releasedKeyStaysReleased(self):
        """
        A refused frame does not remake the cipher context an idle
        session's key dropped.
        """
        c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
        answer = self._answer(c, s)
        s.receiveKey.release()
        bad = answer[:85] + bytes([answer[85] ^ 1]) + answer[86:]
        self.assertFalse(s.receiveHeartbeat(bad, 30.25))
        self.assertIsNone(s.receiveKey._aead)

    def test_secondAnswerOutOfOrder(self):
        """
        A replayed answer (its sequence number already used) is refused,
        and the general path calls it a sequence error.
        """
        c, s = enginePair(serverSettings=dict(heartbeatInterval=30))
        answer = self._answer(c, s)
        self.assertTrue(s.receiveHeartbeat(answer, 30.25))
        self.assertFalse(s.receiveHeartbeat(answer, 30.5))
        self.assertRaises(SequenceError, s.receiveData, answer, 30.5)


class ProtocolIdleRoundTests(SynchronousTestCase):
    """
    A server session's idle round goes by the short paths: its timer
    writes the probe without L{XTMPConnection.tick}, and the answer is
    read without L{XTMPConnection.receiveData}.
    """

    def _session(self):
        h = Harness(config(xtmp_protocol__heartbeat_interval=30,
                           xtmp_protocol__session_timeout=1e9))
        client, server, pump = h.connect(ALICE)
        h.flush()
        return h, client, server

    def test_roundByShortPaths(self):
        """
        The server's probe is written without the engine's C{tick} and its
        answer read without C{receiveData}; a message still goes by
        C{receiveData}.
        """
        h = Harness(config(xtmp_protocol__heartbeat_interval=30,
                           xtmp_protocol__session_timeout=1e9))
        client, server, pump = h.connect(ALICE)
        h.flush()
        conn = server.connection
        calls = []

        def refuse(name):
            general = getattr(XTMPConnection, name)

            def f(self, *a, **kw):
                if self is conn:
                    calls.append(name)
                return general(self, *a, **kw)
            return f
        self.patch(XTMPConnection, "tick", refuse("tick"))
        self.patch(XTMPConnection, "receiveData", refuse("receiveData"))
        h.clock.advance(31)
        h.flush()
        self.assertEqual(calls, [])
        self.assertEqual(conn.counters.heartbeatsSent, 1)
        self.assertIsNotNone(server.rtt)
        self.assertEqual(client.connection.counters.heartbeatsAnswered, 1)
        # Messages still go by the general path.
        client.send(0x80, b"x")
        h.flush()
        self.assertEqual(calls, ["receiveData"])
        self.assertEqual(conn.counters.messagesReceived, 1)

    def test_deliveryPaused(self):
        """
        While delivery is paused (the rate limit, a backed-up connection),
        a Heartbeat is held with the rest, not answered or measured.
        """
        h, client, server = self._session()
        server.pauseDelivery()
        h.clock.advance(31)
        h.flush()
        conn = server.connection
        self.assertEqual(conn.counters.heartbeatsSent, 1)
        self.assertIsNone(server.rtt)
        self.assertEqual(conn.counters.controlReceived, 0)
        held = len(b"".join(server._heldData))
        self.assertTrue(held and held % HEARTBEAT_FRAME_SIZE == 0, held)
        server.resumeDelivery()
        self.assertIsNotNone(server.rtt)
        self.assertEqual(conn.counters.controlReceived,
                         held // HEARTBEAT_FRAME_SIZE)
