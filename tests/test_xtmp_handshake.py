"""
Tests for the XTMP handshake (L{muxframe.xtmp.handshake}), identities and
key schedule.
"""

import hashlib
import os

from twisted.trial.unittest import SynchronousTestCase

from muxframe.xtmp.codec import Cipher, Decoder, Flags, MessageType, encodePlain
from muxframe.xtmp.errors import (
    DecryptionFailed, DowngradeDetected, HandshakeFailed, PeerError,
    Unauthorized, Unsupported, WrongKey, XTMPErrorCode, XTMPLocalError,
)
from muxframe.xtmp.handshake import (
    KEM, ClientHandshake, ClientHello, ServerHandshake, ServerHello,
)
from muxframe.xtmp.identity import Identity, PublicIdentity, loadAuthorizedKeys
from muxframe.xtmp.keys import TrafficKey, expand, keyId

SERVER = Identity.generate()
CLIENT = Identity.generate()


def frames(data):
    return Decoder().feed(data)


def runHandshake(client, server, tamperHello=None, tamperAck=None):
    """
    Drive both sides to completion; return (clientResult, serverResult).
    """
    hello = client.start()
    if tamperHello:
        hello = tamperHello(hello)
    out, _ = server.receiveFrame(frames(hello)[0])
    if tamperAck:
        out = tamperAck(out)
    ack, auth = frames(out)
    client.receiveFrame(ack)
    clientAuth, clientResult = client.receiveFrame(auth)
    _, serverResult = server.receiveFrame(frames(clientAuth)[0])
    return clientResult, serverResult


def forgedClientAuth(body):
    """
    Run a handshake up to the ClientAuth, then give the server C{body} as
    the ClientAuth (under the client's handshake key, in place of the
    genuine one); return the server and that frame.
    """
    client, server = pair()
    out, _ = server.receiveFrame(frames(client.start())[0])
    ack, auth = frames(out)
    client.receiveFrame(ack)
    handshakeKey = client.sendKey
    client.receiveFrame(auth)
    handshakeKey.sequence = 0
    wire = handshakeKey.seal(MessageType.Handshake, Flags.ENCRYPTED,
                             client.sessionId, body)
    return server, frames(wire)[0]


def pair(**kw):
    clientKw = dict(serverKey=SERVER.public, identity=CLIENT)
    serverKw = dict(authorizedKeys=[CLIENT.public])
    for k, v in kw.items():
        if k.startswith("c_"):
            clientKw[k[2:]] = v
        else:
            serverKw[k[2:]] = v
    return ClientHandshake(**clientKw), ServerHandshake(SERVER, **serverKw)


class HandshakeSuccessTests(SynchronousTestCase):
    """
    Handshakes that complete agree on everything.
    """

    def assertAgree(self, c, s):
        self.assertEqual(c.sessionId, s.sessionId)
        self.assertNotEqual(c.sessionId, 0)
        self.assertEqual(c.transcriptHash, s.transcriptHash)
        self.assertEqual(c.sendKey.key, s.receiveKey.key)
        self.assertEqual(c.sendKey.iv, s.receiveKey.iv)
        self.assertEqual(c.receiveKey.key, s.sendKey.key)
        self.assertNotEqual(c.sendKey.key, c.receiveKey.key)
        self.assertEqual((c.sendKey.sequence, c.sendKey.epoch), (0, 0))

    def test_identities(self):
        c, s = runHandshake(*pair())
        self.assertAgree(c, s)
        self.assertEqual(c.peerIdentity, SERVER.public)
        self.assertEqual(s.peerIdentity, CLIENT.public)
        self.assertEqual(c.cipher, Cipher.AES_256_GCM)
        self.assertFalse(c.resumed)

    def test_chachaPreferred(self):
        c, s = runHandshake(*pair(c_ciphers=(Cipher.CHACHA20_POLY1305,
                                             Cipher.AES_256_GCM)))
        self.assertEqual((c.cipher, s.cipher), (2, 2))
        self.assertAgree(c, s)

    def test_mlkem1024(self):
        client, server = pair(c_kem=KEM.MLKEM1024)
        hello = client.start()
        self.assertEqual(len(ClientHello.decode(frames(hello)[0].payload)
                             .kemKey), 1568)
        client.state = "START"
        c, s = runHandshake(client, server)
        self.assertAgree(c, s)

    def test_mldsa(self):
        server = Identity.generate(withMLDSA=True)
        client = Identity.generate(withMLDSA=True)
        c, s = runHandshake(
            ClientHandshake(serverKey=server.public, identity=client),
            ServerHandshake(server, authorizedKeys=[client.public]))
        self.assertEqual(c.peerIdentity.mldsa, server.public.mldsa)
        self.assertEqual(s.peerIdentity, client.public)

    def test_token(self):
        seen = []

        def check(token):
            seen.append(token)
            return token == b"secret"

        c, s = runHandshake(*pair(c_identity=None, c_token=b"secret",
                                  s_checkToken=check))
        self.assertEqual(seen, [b"secret"])
        self.assertEqual(s.token, b"secret")
        self.assertIsNone(s.peerIdentity)

    def test_verifyServerCallback(self):
        seen = []
        c, s = runHandshake(*pair(
            c_serverKey=None, c_verifyServer=lambda k: seen.append(k) or True))
        self.assertEqual(seen, [SERVER.public])

    def test_plaintextWhenBothAllow(self):
        c, s = runHandshake(*pair(c_ciphers=(Cipher.NONE,),
                                  c_allowPlaintext=True,
                                  s_ciphers=(Cipher.NONE,
                                             Cipher.AES_256_GCM),
                                  s_allowPlaintext=True))
        self.assertEqual(c.cipher, Cipher.NONE)
        self.assertIsNone(c.sendKey)
        self.assertEqual(s.peerIdentity, CLIENT.public)

    def test_resume(self):
        c, s = runHandshake(*pair(c_previousSessionId=77,
                                  s_resume=lambda sid: sid == 77))
        self.assertEqual((c.sessionId, s.sessionId), (77, 77))
        self.assertTrue(c.resumed and s.resumed)

    def test_resumeUnknown(self):
        c, s = runHandshake(*pair(c_previousSessionId=77,
                                  s_resume=lambda sid: False))
        self.assertNotEqual(c.sessionId, 77)
        self.assertFalse(c.resumed)


class AnswerLaterTests(SynchronousTestCase):
    """
    A server handshake with C{answerLater} answers a ClientHello in two
    steps: the frame does the key agreement, L{ServerHandshake.answer} the
    rest.
    """

    def test_twoSteps(self):
        """
        The hello's frame sends nothing and asks for its answer once;
        the answer completes a handshake both sides agree on.
        """
        asked = []
        client, server = pair(s_answerLater=lambda: asked.append(1))
        out, result = server.receiveFrame(frames(client.start())[0])
        self.assertEqual((out, result, asked), (b"", None, [1]))
        self.assertTrue(server.answerDue)
        self.assertIsNone(server.sendKey)
        ack, auth = frames(server.answer())
        self.assertFalse(server.answerDue)
        client.receiveFrame(ack)
        clientAuth, clientResult = client.receiveFrame(auth)
        _, serverResult = server.receiveFrame(frames(clientAuth)[0])
        self.assertEqual(clientResult.sendKey.key,
                         serverResult.receiveKey.key)
        self.assertEqual(clientResult.transcriptHash,
                         serverResult.transcriptHash)
        self.assertEqual(asked, [1])

    def test_noFrameWhileAnswerDue(self):
        """
        No frame is taken while the answer is due, and there is nothing to
        answer before a hello or after the answer.
        """
        client, server = pair(s_answerLater=lambda: None)
        self.assertRaises(HandshakeFailed, server.answer)
        hello = frames(client.start())[0]
        server.receiveFrame(hello)
        self.assertRaises(HandshakeFailed, server.receiveFrame, hello)
        server.answer()
        self.assertRaises(HandshakeFailed, server.answer)

    def test_refusedHelloAsksNothing(self):
        """
        A hello refused by its checks or by the admission hook raises as
        before and asks for no answer.
        """
        from muxframe.xtmp.errors import RateLimited
        asked = []

        def admit(hello):
            raise RateLimited("no")
        client, server = pair(s_answerLater=lambda: asked.append(1),
                              s_admit=admit)
        self.assertRaises(RateLimited, server.receiveFrame,
                          frames(client.start())[0])
        self.assertEqual((asked, server.answerDue), ([], False))


class HandshakeRejectionTests(SynchronousTestCase):
    """
    Every failure raises the documented error.
    """

    def test_unauthorizedClient(self):
        other = Identity.generate()
        e = self.assertRaises(Unauthorized, runHandshake,
                              *pair(c_identity=other))
        self.assertEqual(e.code, XTMPErrorCode.UNAUTHORIZED)

    def test_badToken(self):
        self.assertRaises(Unauthorized, runHandshake,
                          *pair(c_identity=None, c_token=b"nope",
                                s_checkToken=lambda t: t == b"secret"))

    def test_anonymousRefused(self):
        self.assertRaises(Unauthorized, runHandshake, *pair(c_identity=None))

    def test_anonymousAllowed(self):
        c, s = runHandshake(*pair(c_identity=None, s_allowAnonymous=True))
        self.assertIsNone(s.peerIdentity)

    def test_pinnedKeyMismatch(self):
        e = self.assertRaises(Unauthorized, runHandshake,
                              *pair(c_serverKey=Identity.generate().public))
        self.assertIn("pinned", str(e))

    def test_verifyServerRejects(self):
        self.assertRaises(Unauthorized, runHandshake,
                          *pair(c_serverKey=None,
                                c_verifyServer=lambda k: False))

    def test_clientNeedsTrustAnchor(self):
        self.assertRaises(XTMPLocalError, ClientHandshake)

    def test_plaintextNeedsOptIn(self):
        self.assertRaises(XTMPLocalError, ClientHandshake,
                          serverKey=SERVER.public, ciphers=(Cipher.NONE,))
        self.assertRaises(XTMPLocalError, ServerHandshake, SERVER,
                          ciphers=(Cipher.NONE,))

    def test_plaintextRefusedByServer(self):
        e = self.assertRaises(Unsupported, runHandshake,
                              *pair(c_ciphers=(Cipher.NONE,),
                                    c_allowPlaintext=True))
        self.assertEqual(e.code, XTMPErrorCode.UNSUPPORTED)

    def test_downgradeOfferStripped(self):
        """
        A man in the middle strips AES from the offer so the server picks
        ChaCha20; the client sees its offer was altered.
        """
        def strip(raw):
            f = frames(raw)[0]
            h = ClientHello.decode(f.payload)
            h.ciphers = (Cipher.CHACHA20_POLY1305,)
            return encodePlain(f.type, f.flags, 0, 0, h.encode())

        client, server = pair()
        e = self.assertRaises(DowngradeDetected, runHandshake, client, server,
                              tamperHello=strip)
        self.assertEqual(e.code, XTMPErrorCode.DOWNGRADE)
        self.assertEqual(server.cipher, Cipher.CHACHA20_POLY1305)

    def test_downgradeToPlaintext(self):
        """
        A forged server hello choosing plaintext is refused by a client
        that did not offer it.
        """
        def forge(raw):
            ack, auth = frames(raw)
            sh = ServerHello.decode(ack.payload)
            sh.cipher = Cipher.NONE
            return encodePlain(ack.type, 0, ack.sessionId, 0,
                               sh.encode()) + auth.encode()

        self.assertRaises(DowngradeDetected, runHandshake, *pair(),
                          tamperAck=forge)

    def test_noCommonCipher(self):
        self.assertRaises(Unsupported, runHandshake,
                          *pair(c_ciphers=(Cipher.CHACHA20_POLY1305,),
                                s_ciphers=(Cipher.AES_256_GCM,)))

    def test_truncatedHello(self):
        client, server = pair()
        f = frames(client.start())[0]
        for cut in (0, 1, 5, 40, len(f.payload) - 1):
            raw = encodePlain(MessageType.Handshake, 0, 0, 0, f.payload[:cut])
            fresh = ServerHandshake(SERVER)
            self.assertRaises(HandshakeFailed, fresh.receiveFrame,
                              frames(raw)[0])

    def test_truncatedServerHello(self):
        client, server = pair()
        ack = frames(server.receiveFrame(frames(client.start())[0])[0])[0]
        raw = encodePlain(ack.type, 0, ack.sessionId, 0, ack.payload[:-10])
        self.assertRaises(HandshakeFailed, client.receiveFrame,
                          frames(raw)[0])

    def test_serverHelloUnknownFlags(self):
        client, server = pair()
        out, _ = server.receiveFrame(frames(client.start())[0])
        ack = frames(out)[0]
        payload = bytearray(ack.payload)
        payload[3] |= 0x80
        forged = frames(encodePlain(MessageType.HandshakeAck, 0,
                                    ack.sessionId, 0, bytes(payload)))[0]
        e = self.assertRaises(HandshakeFailed, client.receiveFrame, forged)
        self.assertIn("flags", str(e))

    def test_serverHelloFaultCodes(self):
        """
        docs/xtmp.md section 7.6, the client's ServerHello checks in order:
        header (type, flags including ENCRYPTED, sequence) and layout and
        flags HANDSHAKE_FAILED; then the echo and choices DOWNGRADE; then
        the session id (0, or not the header's) and the ciphertext length
        HANDSHAKE_FAILED.  The client's Error names no session (id 0).
        """
        from muxframe.xtmp.connection import XTMPConnection

        def case(edit=None, header=None):
            client, server = pair()
            out, _ = server.receiveFrame(frames(client.start())[0])
            ack = frames(out)[0]
            hello = ServerHello.decode(ack.payload)
            if edit:
                edit(hello)
            fields = dict(type=MessageType.HandshakeAck, flags=0,
                          sessionId=ack.sessionId, sequence=0)
            fields.update(header or {})
            return client, encodePlain(fields["type"], fields["flags"],
                                       fields["sessionId"], fields["sequence"],
                                       hello.encode())

        def offer(h):
            h.offerHash = bytes(32)
        ml1024 = b"c" * 1568
        cases = [
            (dict(header=dict(sequence=1)), XTMPErrorCode.HANDSHAKE_FAILED),
            (dict(header=dict(flags=Flags.PRIORITY_HIGH)),
             XTMPErrorCode.HANDSHAKE_FAILED),
            (dict(edit=lambda h: setattr(h, "flags", 2)),
             XTMPErrorCode.HANDSHAKE_FAILED),
            # Unknown flags are found before a tampered echo.
            (dict(edit=lambda h: (setattr(h, "flags", 2), offer(h))),
             XTMPErrorCode.HANDSHAKE_FAILED),
            (dict(edit=offer), XTMPErrorCode.DOWNGRADE),
            (dict(edit=lambda h: setattr(h, "cipher", 0)),
             XTMPErrorCode.DOWNGRADE),
            # A tampered echo is found before a bad session id.
            (dict(edit=lambda h: (offer(h), setattr(h, "sessionId", 0)),
                  header=dict(sessionId=0)), XTMPErrorCode.DOWNGRADE),
            (dict(edit=lambda h: setattr(h, "sessionId", 0),
                  header=dict(sessionId=0)), XTMPErrorCode.HANDSHAKE_FAILED),
            (dict(header=dict(sessionId=12345)),
             XTMPErrorCode.HANDSHAKE_FAILED),
            (dict(edit=lambda h: setattr(h, "ciphertext", ml1024)),
             XTMPErrorCode.HANDSHAKE_FAILED),
        ]
        for kw, code in cases:
            client, raw = case(**kw)
            e = self.assertRaises(HandshakeFailed, client.receiveFrame,
                                  frames(raw)[0])
            self.assertEqual(e.code, code, (kw, e))
        # ENCRYPTED on the ServerHello, through the engine: HANDSHAKE_FAILED,
        # and the client's Error is one plaintext message, session id 0.
        hs, server = pair()
        conn = XTMPConnection(hs)
        conn.initiate()
        out, _ = server.receiveFrame(frames(conn.dataToSend())[0])
        ack = frames(out)[0]
        forged = TrafficKey(Cipher.AES_256_GCM, b"k" * 32, b"i" * 12).seal(
            ack.type, Flags.ENCRYPTED, ack.sessionId, ack.payload)
        e = self.assertRaises(HandshakeFailed, conn.receiveData, forged)
        self.assertEqual(e.code, XTMPErrorCode.HANDSHAKE_FAILED)
        (error,) = frames(conn.closeWithError(e.code, str(e)))
        self.assertEqual((error.type, error.flags, error.sessionId,
                          error.sequence), (MessageType.Error, 0, 0, 0))

    def test_lowOrderX25519Key(self):
        """
        An X25519 key giving an all-zero shared secret is refused.
        """
        client, server = pair()
        f = frames(client.start())[0]
        hello = ClientHello.decode(f.payload)
        hello.x25519Public = bytes(32)
        raw = encodePlain(1, 0, 0, 0, hello.encode())
        e = self.assertRaises(HandshakeFailed, server.receiveFrame,
                              frames(raw)[0])
        self.assertIn("X25519", str(e))

    def test_badKemKey(self):
        client, server = pair()
        f = frames(client.start())[0]
        hello = ClientHello.decode(f.payload)
        hello.kemKey = hello.kemKey[:-1]
        raw = encodePlain(1, 0, 0, 0, hello.encode())
        self.assertRaises(HandshakeFailed, server.receiveFrame,
                          frames(raw)[0])

    def test_wrongMessageType(self):
        client, server = pair()
        client.start()
        self.assertRaises(HandshakeFailed, client.receiveFrame,
                          frames(encodePlain(0x10, 0, 1, 0, b"x"))[0])

    def test_serverError(self):
        client, _ = pair()
        client.start()
        e = self.assertRaises(
            PeerError, client.receiveFrame,
            frames(encodePlain(MessageType.Error, 0, 0, 0,
                               b"\x00\x0fno common cipher"))[0])
        self.assertEqual(e.code, XTMPErrorCode.UNSUPPORTED)

    def test_clientErrorAfterServerHello(self):
        """
        A client that refuses the server after ServerHello (here: not the
        pinned key) sends its Error under its handshake key; the server
        reads it as the client's code, not as a malformed ClientAuth.
        """
        from muxframe.xtmp.connection import XTMPConnection
        client = XTMPConnection(ClientHandshake(
            serverKey=Identity.generate().public, identity=CLIENT))
        server = XTMPConnection(ServerHandshake(
            SERVER, authorizedKeys=[CLIENT.public]))
        client.initiate()
        server.receiveData(client.dataToSend())
        e = self.assertRaises(Unauthorized, client.receiveData,
                              server.dataToSend())
        wire = client.closeWithError(e.code, str(e))
        (error, disconnect) = frames(wire)
        self.assertEqual((error.type, error.sequence, disconnect.sequence),
                         (MessageType.Error, 0, 1))
        self.assertEqual(error.flags, Flags.ENCRYPTED)
        theirs = self.assertRaises(PeerError, server.receiveData, wire)
        self.assertEqual(theirs.code, XTMPErrorCode.UNAUTHORIZED)
        self.assertIn("pinned", theirs.reason)

    def test_forgedErrorInPlaceOfClientAuth(self):
        """
        An encrypted Error the handshake key does not open is
        DECRYPT_FAILED, not a way to inject a code.
        """
        client, server = pair()
        out, _ = server.receiveFrame(frames(client.start())[0])
        forged = TrafficKey(Cipher.AES_256_GCM, b"k" * 32, b"i" * 12)
        wire = forged.seal(MessageType.Error, Flags.ENCRYPTED,
                           server.sessionId, b"\x00\x0dno")
        self.assertRaises(WrongKey, server.receiveFrame, frames(wire)[0])

    def test_tamperedServerAuthKeepsCounter(self):
        """
        A tampered encrypted handshake message fails authentication and
        does not advance the receive counter.
        """
        client, server = pair()
        out, _ = server.receiveFrame(frames(client.start())[0])
        ack, auth = frames(out)
        client.receiveFrame(ack)
        auth.payload = bytes([auth.payload[0] ^ 1]) + auth.payload[1:]
        self.assertRaises(DecryptionFailed, client.receiveFrame, auth)
        self.assertEqual(client.receiveKey.sequence, 0)

    def test_clientHelloMustBePlaintext(self):
        client, server = pair()
        f = frames(client.start())[0]
        raw = encodePlain(f.type, Flags.PRIORITY_HIGH, 0, 0, f.payload)
        self.assertRaises(HandshakeFailed, server.receiveFrame, frames(raw)[0])


class IdentityTests(SynchronousTestCase):
    """
    Identities load from and save to PEM files.
    """

    def test_privateRoundTrip(self):
        path = self.mktemp()
        ident = Identity.generate(withMLDSA=True)
        ident.savePEM(path, password=b"pw")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        loaded = Identity.loadPEM(path, password=b"pw")
        self.assertEqual(loaded.public, ident.public)
        loaded.public.verify(b"m", ident.sign(b"m"))

    def test_publicRoundTrip(self):
        path = self.mktemp()
        CLIENT.public.savePEM(path)
        self.assertEqual(PublicIdentity.loadPEM(path), CLIENT.public)

    def test_authorizedKeysFile(self):
        path = self.mktemp()
        a, b = Identity.generate(), Identity.generate(withMLDSA=True)
        with open(path, "wb") as f:
            f.write(a.public.toPEM() + b.public.toPEM())
        self.assertEqual(loadAuthorizedKeys(path), [a.public, b.public])

    def test_authorizedKeysLayout(self):
        """
        Comments between blocks are ignored; each Ed25519 block starts an
        identity and an ML-DSA-65 block completes the one before it.
        """
        path = self.mktemp()
        a = Identity.generate(withMLDSA=True)
        b, c = Identity.generate(), Identity.generate(withMLDSA=True)
        with open(path, "wb") as f:
            f.write(b"# alice\n" + a.public.toPEM() + b"\n# bob\n"
                    + b.public.toPEM() + c.public.toPEM())
        self.assertEqual(loadAuthorizedKeys(path),
                         [a.public, b.public, c.public])

    def test_authorizedKeysFaults(self):
        """
        A file that does not follow the layout is refused with the block
        at fault named (it used to be read silently: a stray ML-DSA-65 key
        dropped or replacing another, other keys skipped).
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        ed = Identity.generate()
        both = Identity.generate(withMLDSA=True)
        mldsaOnly = both.public.toPEM()[len(PublicIdentity(
            both.public.ed25519).toPEM()):]
        other = ec.generate_private_key(ec.SECP256R1()).public_key()
        otherPEM = other.public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo)
        cases = [
            (mldsaOnly + ed.public.toPEM(), "block 1: an ML-DSA-65 key"),
            (both.public.toPEM() + mldsaOnly, "block 3: an ML-DSA-65 key"),
            (ed.public.toPEM() + otherPEM, "block 2: "),
            (ed.public.toPEM() + ed.toPEM(), "block 2 is 'PRIVATE KEY'"),
        ]
        for data, message in cases:
            path = self.mktemp()
            with open(path, "wb") as f:
                f.write(data)
            e = self.assertRaises(ValueError, loadAuthorizedKeys, path)
            self.assertIn(path, str(e))
            self.assertIn(message, str(e))

    def test_authorizedKeysNames(self):
        """
        A C{name:} line names the identity after it; names that name no
        identity, come between an Ed25519 key and its ML-DSA-65 key, are
        empty, not UTF-8 or given twice are refused with the line named.
        """
        from muxframe.xtmp import parseAuthorizedKeys
        a = Identity.generate(withMLDSA=True).public
        b = Identity.generate().public
        edOnly = PublicIdentity(a.ed25519).toPEM()
        mldsaOnly = a.toPEM()[len(edOnly):]
        self.assertEqual(
            parseAuthorizedKeys(b"name: alice\n" + a.toPEM() + b"# c\n"
                                + b.toPEM(), "keys"),
            [("alice", a), (None, b)])
        cases = [
            (b"name: x\nname: y\n" + b.toPEM(), "line 1: name 'x' names no"),
            (b.toPEM() + b"\nname: z\n", "line 5: name 'z' names no key"),
            (edOnly + b"name: x\n" + mldsaOnly, "block 2: an ML-DSA-65 key"),
            (b"name:  \n" + b.toPEM(), "line 1: 'name:' without a name"),
            (b"name: \xff\n" + b.toPEM(), "line 1: the name is not UTF-8"),
            (b"name: x\n" + a.toPEM() + b"name: x\n" + b.toPEM(),
             "name 'x' is given to more than one identity"),
        ]
        for data, message in cases:
            e = self.assertRaises(ValueError, parseAuthorizedKeys, data,
                                  "keys")
            self.assertIn("keys: ", str(e))
            self.assertIn(message, str(e))

    def test_identityFileFaults(self):
        """
        A public or private identity file holds exactly one identity.
        """
        a, b = Identity.generate(), Identity.generate()
        self.assertRaises(ValueError, PublicIdentity.fromPEM,
                          a.public.toPEM() + b.public.toPEM())
        self.assertRaises(ValueError, PublicIdentity.fromPEM, b"")
        self.assertRaises(ValueError, Identity.fromPEM, a.toPEM() + b.toPEM())
        self.assertRaises(ValueError, Identity.fromPEM, a.public.toPEM())
        e = self.assertRaises(ValueError, Identity.fromPEM,
                              a.toPEM(b"pw"), b"wrong")
        self.assertIn("block 1", str(e))

    def test_mldsaVariant(self):
        """
        ML-DSA-65 signatures are pure ML-DSA with the empty context
        (docs/xtmp.md section 7.4): they verify with context b"" and not
        with another.
        """
        from cryptography.exceptions import InvalidSignature
        i = Identity.generate(withMLDSA=True)
        signature = i.sign(b"m")[64:]
        i.mldsaKey.public_key().verify(signature, b"m", b"")
        self.assertRaises(InvalidSignature, i.mldsaKey.public_key().verify,
                          signature, b"m", b"xtmp")

    def test_verifyRejectsOtherMessage(self):
        self.assertRaises(HandshakeFailed, CLIENT.public.verify, b"a",
                          CLIENT.sign(b"b"))

    def test_unknownKinds(self):
        """
        Identity kinds other than 0x01 and 0x03 (0x02: ML-DSA-65 alone,
        higher bits: reserved) are malformed; in a ClientAuth that is
        HANDSHAKE_FAILED.
        """
        from muxframe.xtmp.errors import MalformedMessage
        encoded = CLIENT.public.encode()
        for kinds in (0x00, 0x02, 0x05, 0x81):
            e = self.assertRaises(MalformedMessage, PublicIdentity.decode,
                                  bytes([kinds]) + encoded[1:])
            self.assertIn("kinds", str(e))
        server, frame = forgedClientAuth(b"\x01\x02" + encoded[1:]
                                         + bytes(64))
        e = self.assertRaises(HandshakeFailed, server.receiveFrame, frame)
        self.assertEqual(e.code, XTMPErrorCode.HANDSHAKE_FAILED)

    def test_fingerprint(self):
        self.assertEqual(CLIENT.public.fingerprint,
                         hashlib.sha256(CLIENT.public.encode()).hexdigest())


class Ed25519StrictnessTests(SynchronousTestCase):
    """
    docs/xtmp.md section 7.4: Ed25519 keys must be canonical encodings of
    points not of small order (OpenSSL alone accepts both, and a small-order
    key "verifies" a signature over any message); S below the group order
    and a canonical R in signatures.
    """

    SMALL_ORDER = [
        "01" + "00" * 31, "ec" + "ff" * 30 + "7f", "00" * 32, "00" * 31 + "80",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ]
    NOT_CANONICAL = [
        "ee" + "ff" * 30 + "7f",            # y = p + 1
        "ed" + "ff" * 30 + "7f",            # y = p
        "01" + "00" * 30 + "80",            # y = 1, x = 0 with the sign bit
    ]

    def test_keysRefused(self):
        from muxframe.xtmp.errors import MalformedMessage
        for h in self.SMALL_ORDER + self.NOT_CANONICAL:
            key = bytes.fromhex(h)
            e = self.assertRaises(ValueError, PublicIdentity, key)
            self.assertIn("Ed25519 public key", str(e))
            self.assertRaises(MalformedMessage, PublicIdentity.decode,
                              b"\x01" + key)

    def test_smallOrderClientAuth(self):
        """
        A ClientAuth presenting the identity point with the signature
        R = identity, S = 0 (which OpenSSL verifies for every message) is
        HANDSHAKE_FAILED at decoding.
        """
        point = bytes.fromhex(self.SMALL_ORDER[0])
        server, frame = forgedClientAuth(b"\x01\x01" + point + point
                                         + bytes(32))
        e = self.assertRaises(HandshakeFailed, server.receiveFrame, frame)
        self.assertEqual(e.code, XTMPErrorCode.HANDSHAKE_FAILED)
        self.assertIn("small order", str(e))

    def test_nonCanonicalS(self):
        """
        A signature whose S is not below the group order L (S + L) does
        not verify.
        """
        order = 2 ** 252 + 27742317777372353535851937790883648493
        signature = CLIENT.sign(b"m")
        S = int.from_bytes(signature[32:], "little")
        self.assertRaises(HandshakeFailed, CLIENT.public.verify, b"m",
                          signature[:32] + (S + order).to_bytes(32, "little"))


class KeyScheduleTests(SynchronousTestCase):
    """
    Key update and nonce construction.
    """

    def test_keyUpdate(self):
        k = TrafficKey(Cipher.AES_256_GCM, b"k" * 32, b"i" * 12)
        k.sequence = 9
        n = k.updated()
        self.assertEqual(n.key, expand(b"k" * 32, "xtmp traffic update", 32))
        self.assertEqual(n.iv, expand(b"k" * 32, "xtmp traffic update iv",
                                      12))
        self.assertEqual((n.epoch, n.sequence), (1, 0))
        self.assertEqual(n.keyId, keyId(n.key))

    def test_nonce(self):
        k = TrafficKey(1, b"k" * 32, bytes(range(12)))
        self.assertEqual(k.nonce(0), bytes(range(12)))
        self.assertEqual(k.nonce(0x0102),
                         bytes(range(10)) + bytes([10 ^ 1, 11 ^ 2]))

    def test_sealMany(self):
        """
        sealMany gives the bytes of seal for each body, in order, and
        advances the sequence and count the same, for both ciphers and
        from any sequence number.
        """
        from muxframe.xtmp.codec import F
        from muxframe.xtmp.connection import PreparedBody
        bodies = [PreparedBody(0x41 + n % 3, F.STREAM_DATA | n % 2,
                               b"\x00\x04feed" + b"b" * (n * 7))
                  for n in range(9)]
        for cipher in (Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305):
            one = TrafficKey(cipher, b"k" * 32, bytes(range(12)))
            many = TrafficKey(cipher, b"k" * 32, bytes(range(12)))
            for key in (one, many):
                key.sequence = key.count = 0xFFFFFFF0
            expected = b"".join(
                one.seal(p.type, p.sealedFlags, 77, p.body) for p in bodies)
            self.assertEqual(many.sealMany(bodies, 77), expected)
            self.assertEqual((many.sequence, many.count),
                             (one.sequence, one.count))
            self.assertEqual(many.sealMany([], 77), b"")
            self.assertEqual(many.sequence, one.sequence)

    def test_sealManyCountsWhatFailed(self):
        """
        A body that cannot be sealed fails sealMany, and the sequence
        numbers of the bodies before it stay used: no nonce is used
        twice for different bytes.
        """
        from muxframe.xtmp.codec import F
        from muxframe.xtmp.connection import PreparedBody
        good = PreparedBody(0x41, F.STREAM_DATA, b"x")
        bad = PreparedBody(0x41, F.STREAM_DATA, b"y")
        bad.body = None
        k = TrafficKey(Cipher.AES_256_GCM, b"k" * 32, bytes(range(12)))
        self.assertRaises(TypeError, k.sealMany, [good, good, bad], 1)
        self.assertEqual((k.sequence, k.count), (2, 2))
