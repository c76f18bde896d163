"""
The XTMP test vectors in tests/vectors/xtmp_vectors.json: recomputed from
their fixed inputs, and checked independently of muxframe's own code with
plain C{cryptography} and C{hashlib}, the way another implementation would.
"""

import hashlib
import hmac
import importlib.util
import json
import os
import struct
import zlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import (
    AESGCM, ChaCha20Poly1305,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from twisted.trial.unittest import SynchronousTestCase

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors")


def load():
    with open(os.path.join(HERE, "xtmp_vectors.json")) as f:
        return json.load(f)


def expand(prk, label, n):
    return HKDFExpand(hashes.SHA256(), n, label.encode()).derive(prk)


def nonce(iv, seq):
    return iv[:4] + (int.from_bytes(iv[4:], "big") ^ seq).to_bytes(8, "big")


def openMessage(aead, iv, wire):
    """
    Decrypt one encrypted message by the spec's tables alone.
    """
    (length,) = struct.unpack(">I", wire[24:28])
    (seq,) = struct.unpack(">Q", wire[16:24])
    sec = wire[32:96]
    assert sec[24:36] == nonce(iv, seq)
    body = aead.decrypt(nonce(iv, seq), wire[96:96 + length] + sec[48:64],
                        wire[:80])
    assert struct.unpack(">I", wire[28:32])[0] == zlib.crc32(body)
    return body


class VectorTests(SynchronousTestCase):
    """
    The vectors file matches what the code produces and what the spec says.
    """

    def setUp(self):
        self.v = load()
        self.h = bytes.fromhex

    def test_recompute(self):
        """
        The generator, run now, produces exactly the committed file.
        """
        spec = importlib.util.spec_from_file_location(
            "make_xtmp_vectors", os.path.join(HERE, "make_xtmp_vectors.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.assertEqual(json.loads(json.dumps(module.compute())), self.v)

    def test_keyScheduleIndependently(self):
        v, h = self.v, self.h
        inputs = v["inputs"]
        kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(
            h(inputs["clientMlkem768Seed"]))
        xc = x25519.X25519PrivateKey.from_private_bytes(
            h(inputs["clientX25519Private"]))
        xs = x25519.X25519PrivateKey.from_private_bytes(
            h(inputs["serverX25519Private"]))
        secret = kem.decapsulate(h(inputs["mlkemCiphertext"])) + \
            xc.exchange(xs.public_key())
        self.assertEqual(secret.hex(), v["sharedSecret"])

        hello, serverHello = h(v["clientHello"]), h(v["serverHello"])
        self.assertEqual(hello[:4] + hello[5:6], b"XTMP\x01")
        thHello = hashlib.sha256(hello[32:] + serverHello[32:]).digest()
        self.assertEqual(thHello.hex(), v["transcriptHashHello"])
        # The server hello echoes SHA-256 of the offer at offset 100.
        self.assertEqual(serverHello[32 + 76:32 + 108],
                         hashlib.sha256(hello[32:]).digest())

        prk = hmac.new(thHello, secret, hashlib.sha256).digest()
        hs = {"c2sKey": expand(prk, "xtmp hs c2s key", 32),
              "c2sIv": expand(prk, "xtmp hs c2s iv", 12),
              "s2cKey": expand(prk, "xtmp hs s2c key", 32),
              "s2cIv": expand(prk, "xtmp hs s2c iv", 12)}
        self.assertEqual({k: x.hex() for k, x in hs.items()},
                         v["handshakeKeys"])

        auth = openMessage(AESGCM(hs["s2cKey"]), hs["s2cIv"],
                           h(v["serverAuth"]))
        self.assertEqual(auth[0], 1)
        serverKey = ed25519.Ed25519PublicKey.from_public_bytes(auth[1:33])
        serverKey.verify(auth[33:],
                         b"XTMP v1 server signature\x00" + thHello)
        seed = ed25519.Ed25519PrivateKey.from_private_bytes(
            h(inputs["serverEd25519Seed"]))
        self.assertEqual(seed.public_key().public_bytes_raw(), auth[1:33])

        thFull = hashlib.sha256(thHello + auth).digest()
        self.assertEqual(thFull.hex(), v["transcriptHashFull"])
        clientAuth = openMessage(AESGCM(hs["c2sKey"]), hs["c2sIv"],
                                 h(v["clientAuth"]))
        self.assertEqual(clientAuth[0], 1)
        ed25519.Ed25519PublicKey.from_public_bytes(clientAuth[2:34]).verify(
            clientAuth[34:], b"XTMP v1 client signature\x00" + thFull)

        prk = hmac.new(thFull, secret, hashlib.sha256).digest()
        t = v["trafficKeys"]
        c2s = expand(prk, "xtmp c2s key", 32)
        self.assertEqual(c2s.hex(), t["c2sKey"])
        self.assertEqual(expand(prk, "xtmp s2c key", 32).hex(), t["s2cKey"])
        self.assertEqual(
            hmac.new(c2s, b"xtmp key id", hashlib.sha256).digest()[:16].hex(),
            t["c2sKeyId"])

        body = openMessage(AESGCM(c2s), expand(prk, "xtmp c2s iv", 12),
                           h(v["firstMessage"]["wire"]))
        self.assertEqual(body, struct.pack(">Q", 1) + b"hello")

        ku = v["keyUpdate"]
        self.assertEqual(expand(c2s, "xtmp traffic update", 32).hex(),
                         ku["key"])
        self.assertEqual(expand(c2s, "xtmp traffic update iv", 12).hex(),
                         ku["iv"])

        # A request right after a KeyUpdate has sequence number 0 under
        # generation 1; the response's body starts with request id 2**32.
        r = v["responseAfterKeyUpdate"]
        wire = h(r["request"])
        keyUpdate, request = wire[:96 + 4], wire[96 + 4:]
        self.assertEqual(keyUpdate[5], 0x06)
        self.assertEqual(openMessage(AESGCM(c2s),
                                     expand(prk, "xtmp c2s iv", 12),
                                     keyUpdate), struct.pack(">I", 1))
        self.assertEqual(struct.unpack(">Q", request[16:24])[0], 0)
        self.assertEqual(struct.unpack(">I", request[36:40])[0], 1)
        self.assertEqual(openMessage(AESGCM(h(ku["key"])), h(ku["iv"]),
                                     request), h(r["requestData"]))
        response = h(r["response"])
        self.assertEqual(struct.unpack(">H", response[6:8])[0],
                         0x0100 | 0x0001)
        self.assertEqual(struct.unpack(">Q", response[16:24])[0], 1)
        body = openMessage(AESGCM(expand(prk, "xtmp s2c key", 32)),
                           expand(prk, "xtmp s2c iv", 12), response)
        self.assertEqual(r["requestId"], "%016x" % (1 << 32,))
        self.assertEqual(body, struct.pack(">Q", 1 << 32)
                         + h(r["responseData"]))

    def test_offerAndChoice(self):
        """
        The offer and the server's choice, read from the hello bytes at
        the offsets docs/xtmp.md gives.
        """
        v, h = self.v, self.h
        hello = h(v["clientHello"])[32:]
        n = hello[0]
        m = hello[1 + n]
        offer = {"versions": list(hello[1:1 + n]),
                 "ciphers": list(hello[2 + n:2 + n + m]),
                 "kem": hello[2 + n + m],
                 "previousSessionId": hello[2 + n + m + 65:
                                            2 + n + m + 73].hex()}
        self.assertEqual(offer, v["offer"])
        self.assertEqual(offer["ciphers"], [1, 2])
        self.assertEqual(len(hello), 2 + n + m + 1 + 32 + 32 + 8 + 2 + 1184)
        ack = h(v["serverHello"])[32:]
        chosen = {"version": ack[0], "cipher": ack[1], "kem": ack[2],
                  "resumed": bool(ack[3] & 1), "sessionId": ack[68:76].hex()}
        self.assertEqual(chosen, v["chosen"])
        self.assertEqual(chosen["sessionId"], v["inputs"]["sessionId"])
        self.assertEqual(h(v["serverHello"])[8:16].hex(), chosen["sessionId"])
        auth = openMessage(AESGCM(h(v["handshakeKeys"]["s2cKey"])),
                           h(v["handshakeKeys"]["s2cIv"]), h(v["serverAuth"]))
        self.assertEqual(auth[:33].hex(), v["serverIdentity"])
        clientAuth = openMessage(AESGCM(h(v["handshakeKeys"]["c2sKey"])),
                                 h(v["handshakeKeys"]["c2sIv"]),
                                 h(v["clientAuth"]))
        self.assertEqual(clientAuth[1:34].hex(), v["clientIdentity"])

    def test_chacha(self):
        m = self.v["chacha20Message"]
        wire = self.h(m["wire"])
        self.assertEqual(wire[32], 2)
        body = openMessage(ChaCha20Poly1305(self.h(m["key"])),
                           self.h(m["iv"]), wire)
        self.assertEqual(body, b"tick")

    def test_controlPayloads(self):
        c = self.v["controlPayloads"]
        self.assertEqual(c["ack7"], "0000000000000007")
        self.assertEqual(c["errorUnauthorized"], "000d6e6f")
        self.assertEqual(c["subscribePrices"], "0006" + b"prices".hex())
