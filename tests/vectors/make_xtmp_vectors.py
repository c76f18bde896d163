"""
Generate tests/vectors/xtmp_vectors.json: fixed keys and randoms -> the
exact bytes of an XTMP handshake, key schedule and first messages.

Run from the repository root:  python tests/vectors/make_xtmp_vectors.py
docs/xtmp.md section 11 describes every key of the file.
tests/test_xtmp_vectors.py recomputes everything with L{compute} and
compares, and checks the key schedule independently of muxframe's code.

ML-KEM encapsulation is randomized, so its ciphertext is an input: it was
produced once by encapsulating to the client's fixed ML-KEM-768 key, and
the vector's shared secret is what the client's key decapsulates from it.
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", ".."))

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519  # noqa

from muxframe.xtmp import codec  # noqa: E402
from muxframe.xtmp.codec import Cipher, Decoder, Flags  # noqa: E402
from muxframe.xtmp.connection import Settings, XTMPConnection  # noqa: E402
from muxframe.xtmp.handshake import (  # noqa: E402
    ClientHandshake, ClientHello, ServerHandshake, ServerHello,
)
from muxframe.xtmp.identity import Identity  # noqa: E402
from muxframe.xtmp.keys import TrafficKey  # noqa: E402

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    "xtmp_vectors.json")

INPUTS = {
    "clientEd25519Seed": bytes(range(32, 64)).hex(),
    "serverEd25519Seed": bytes(range(0, 32)).hex(),
    "clientX25519Private": bytes([0x11] * 32).hex(),
    "serverX25519Private": bytes([0x22] * 32).hex(),
    "clientMlkem768Seed": bytes(range(100, 164)).hex(),
    "clientRandom": bytes([0xC1] * 32).hex(),
    "serverRandom": bytes([0x5E] * 32).hex(),
    "sessionId": "0123456789abcdef",
    "mlkemCiphertext": (
    "c8ca0e02ae78534fcdba4903ecaff3865555fd61158cbc4372f1a8c1484340ba"
    "4b994f12a129622ef729996ea51935e1f8d86127da02f36b70269b74b8ef319c"
    "622f97982e72b368a4c9fcb18c6e7bbe08fd22976c193c1c4ebf77998378580e"
    "59903cf0579b96808f2b0389a23ad368806a1892bf07e9f463cfe9ccfb300977"
    "25c3237bd0262b2f26d081fd5595fe3b8bb4a035aacaf4164cc8f06e20881bbc"
    "67223465363de8ad5777ebe7d6d05f8134913357de2e8dc9d6adbee00a613903"
    "a7487a5a2868d5a06f296e695dd0db99d5384ad0bac4161a082a3c6bf2c312a4"
    "fe663176db12d2c98303e8b80b0912b7abf0270637888ab1727ba9e298f9e9e3"
    "cefd3c66feddcdaf616d77f1c0f9f5f0f41ffc8a1ffaa8df26ebaf99e309df63"
    "8bfc717a6cc95f9901b622fe1a0e6c1f6aba8bd8068f089ed082866b97bd9417"
    "29a8bcab182073fbb4c2b7c43dda6f920f8dcabdecdd7ac778cde335a43735c1"
    "1381e502d6e30a2c9cab3e805e057f6ba35181d3eee768e336009559fd30cb12"
    "27f28b2ecf52c5598ff7e6277e44f2cd206bef5d8ee8f03e146a56fa5cb9e442"
    "6df349cd969b4e23f4668ad350aab285824b0a6ced4ff9fe5622740f01ffc3d4"
    "829992039684d435938001b1c986c1ea6d87bb90b4f11ed4369834aa8c308fa1"
    "d9da93ea41d362c89e351835caf2a38de8d228bf0bdb3e6fd213e00a36899eea"
    "36cdf004c6aca6fb5b4005cda2989a41038290219e8d45a28545ccc260b3f256"
    "4d187c793425c23ed4af3743a4b94cb56c3c1a35b18558a6619460e77530618e"
    "08f9677bf9d9c4908a331653094170c3e8a341749842a50e429ae57d34e59fad"
    "1dfd5dbf37c64c0f31f24aff71299b456bf8dcb8ca9520005574218e563fe9b9"
    "f9b1e1bc5cbf71b6c2381a1a91748671b0a9e99e0186626d0da4ee0391c2b6dd"
    "177d1b25bf4389624b81b68a07863f50cbaff7723babdc8c5b666203478bfd87"
    "6b4e03dce653fd877835f96bc5dc529cfcd928371a7774bce0688203f0ebaec8"
    "f614e069fa77654ad627eea8d0b3d4742553f33603f01c43865e648f1631a25f"
    "a46da21302027a494733351ecfdd2aeb21cbe1973f05b00e1cb88a6dc9fcd5ce"
    "0891ac28369b76723908c06ff21aa1a2a12cb5006ad3d3f462024a5cb3a0a26a"
    "5466a1c02e7c385fb30a3db5595a87849352374cec41954f9200d9f0b1846e42"
    "355c1e5b94588e2bac4c4661e4e0e18a8998c324cea5b49f9e0f7a26d56e6b62"
    "b0f7cc4717cefc7cb90ccc1502d1c97b64b226ef04dcad83a7a56f48c11e8367"
    "769174e5e8d8788ab0b9e0e26170c5342c88eed60d5e01530fb65747f1e5fdff"
    "0d16b49d7202d98984d695cc5c83dbc0e45b9224f0d91e4a755215be19d73675"
    "e9fcd07669e4ddfc8e2052e4efa929293a0f9129d9ae32e5092abe7b9586fcd3"
    "521528202dd6702b4eaf32dea190e3b02fed2d151e91f71cfabe2d51a0905d8d"
    "41f2c8496cfb06f99458cafe0d222d591ff1ce669e74c611f572f62c3e324b00"
    ),
}


class _Request:
    """
    A request token, as L{XTMPConnection.sendMessage} takes.
    """

    sequence = None
    cancelled = False


def compute(inputs=INPUTS):
    """
    Run a complete handshake and first messages from C{inputs}; return the
    vector dictionary (hex strings).
    """
    h = bytes.fromhex
    clientIdentity = Identity.fromSeeds(h(inputs["clientEd25519Seed"]))
    serverIdentity = Identity.fromSeeds(h(inputs["serverEd25519Seed"]))
    clientKem = mlkem.MLKEM768PrivateKey.from_seed_bytes(
        h(inputs["clientMlkem768Seed"]))
    ct = h(inputs["mlkemCiphertext"])
    kemSecret = clientKem.decapsulate(ct)
    client = ClientHandshake(
        serverKey=serverIdentity.public, identity=clientIdentity,
        randomBytes=lambda n: h(inputs["clientRandom"]),
        ephemeral=(x25519.X25519PrivateKey.from_private_bytes(
            h(inputs["clientX25519Private"])), clientKem))
    server = ServerHandshake(
        serverIdentity, authorizedKeys=[clientIdentity.public],
        newSessionId=lambda: int(inputs["sessionId"], 16),
        randomBytes=lambda n: h(inputs["serverRandom"]),
        ephemeral=x25519.X25519PrivateKey.from_private_bytes(
            h(inputs["serverX25519Private"])),
        encapsulate=lambda public: (kemSecret, ct))
    c = XTMPConnection(client, Settings())
    s = XTMPConnection(server, Settings())
    out = {"inputs": dict(inputs)}
    c.initiate()
    hello = c.dataToSend()
    out["clientHello"] = hello.hex()
    s.receiveData(hello)
    serverFlight = s.dataToSend()
    ack, auth = Decoder().feed(serverFlight)
    out["serverHello"] = serverFlight[:32 + len(ack.payload)].hex()
    out["serverAuth"] = serverFlight[32 + len(ack.payload):].hex()
    offer = ClientHello.decode(Decoder().feed(hello)[0].payload)
    choice = ServerHello.decode(ack.payload)
    out["offer"] = {"versions": list(offer.versions),
                    "ciphers": list(offer.ciphers), "kem": offer.kem,
                    "previousSessionId": "%016x" % (offer.previousSessionId,)}
    out["chosen"] = {"version": choice.version, "cipher": choice.cipher,
                     "kem": choice.kem, "resumed": bool(choice.flags & 1),
                     "sessionId": "%016x" % (choice.sessionId,)}
    out["serverIdentity"] = serverIdentity.public.encode().hex()
    out["clientIdentity"] = clientIdentity.public.encode().hex()
    helloLength = 32 + len(ack.payload)
    c.receiveData(serverFlight[:helloLength])
    out["transcriptHashHello"] = hashlib.sha256(
        Decoder().feed(hello)[0].payload + ack.payload).hexdigest()
    out["handshakeKeys"] = {
        "c2sKey": client.sendKey.key.hex(), "c2sIv": client.sendKey.iv.hex(),
        "s2cKey": client.receiveKey.key.hex(),
        "s2cIv": client.receiveKey.iv.hex(),
    }
    c.receiveData(serverFlight[helloLength:])
    clientAuth = c.dataToSend()
    out["clientAuth"] = clientAuth.hex()
    s.receiveData(clientAuth)
    r = c.result
    out["sharedSecret"] = (kemSecret + x25519.X25519PrivateKey
                           .from_private_bytes(h(inputs["clientX25519Private"]))
                           .exchange(x25519.X25519PrivateKey
                                     .from_private_bytes(
                                         h(inputs["serverX25519Private"]))
                                     .public_key())).hex()
    out["transcriptHashFull"] = r.transcriptHash.hex()
    out["trafficKeys"] = {
        "c2sKey": r.sendKey.key.hex(), "c2sIv": r.sendKey.iv.hex(),
        "c2sKeyId": r.sendKey.keyId.hex(),
        "s2cKey": r.receiveKey.key.hex(), "s2cIv": r.receiveKey.iv.hex(),
        "s2cKeyId": r.receiveKey.keyId.hex(),
    }
    c.sendMessage(0x10, b"hello", Flags.REQUIRES_ACK)
    first = c.dataToSend()
    out["firstMessage"] = {"type": 0x10, "flags": "REQUIRES_ACK",
                           "data": b"hello".hex(), "wire": first.hex()}
    s.receiveData(first)
    out["ackFromServer"] = s.dataToSend().hex()
    updated = r.sendKey.updated()
    out["keyUpdate"] = {"key": updated.key.hex(), "iv": updated.iv.hex(),
                        "keyId": updated.keyId.hex()}
    # A request sent right after a KeyUpdate (sequence 0 again, generation
    # 1) and the server's response, which names request id 2**32.
    c._keyUpdate()
    c.sendMessage(0x30, b"ping", request=_Request())
    request = c.dataToSend()
    (event,) = s.receiveData(request)
    s.sendMessage(0x30, b"pong", requestSequence=event.message.requestId)
    out["responseAfterKeyUpdate"] = {
        "request": request.hex(), "requestData": b"ping".hex(),
        "requestId": "%016x" % (event.message.requestId,),
        "response": s.dataToSend().hex(), "responseData": b"pong".hex()}
    chacha = TrafficKey(Cipher.CHACHA20_POLY1305, bytes(range(32)),
                        bytes(range(12)))
    chacha.sequence = 5
    out["chacha20Message"] = {
        "key": bytes(range(32)).hex(), "iv": bytes(range(12)).hex(),
        "sequence": 5, "sessionId": 42, "type": 0x41, "data": b"tick".hex(),
        "wire": chacha.seal(0x41, Flags.ENCRYPTED, 42, b"tick").hex()}
    out["controlPayloads"] = {
        "ack7": codec.encodeU64(7).hex(),
        "errorUnauthorized": codec.encodeReason(13, "no").hex(),
        "disconnectGoingAway": codec.encodeReason(18, "bye").hex(),
        "subscribePrices": codec.encodeName("prices").hex(),
        "keyUpdateEpoch1": codec.encodeU32(1).hex(),
    }
    return out


if __name__ == "__main__":
    with open(PATH, "w") as f:
        json.dump(compute(), f, indent=2, sort_keys=True)
        f.write("\n")
    print("wrote", PATH)
