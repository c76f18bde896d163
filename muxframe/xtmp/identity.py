"""
Long-term XTMP identities: an Ed25519 key, optionally with an ML-DSA-65
key, loaded from and saved to PEM files.

Wire encodings (used in the handshake):

  public identity: u8 kinds (bit0 Ed25519, always set; bit1 ML-DSA-65),
                   32 bytes Ed25519 public key, [1952 bytes ML-DSA-65 key]
  signature:       64 bytes Ed25519 signature, [3309 bytes ML-DSA-65
                   signature], both over the same message

Ed25519 is RFC 8032 "pure" Ed25519 (not Ed25519ph or Ed25519ctx).  ML-DSA-65
is FIPS 204 ML-DSA (not HashML-DSA) with the empty context string.

PEM files (docs/xtmp.md section 7.6): a public identity is a "PUBLIC KEY"
(SubjectPublicKeyInfo) block of the Ed25519 key, then optionally one of the
ML-DSA-65 key; a private identity the same with PKCS#8 "PRIVATE KEY" (or
"ENCRYPTED PRIVATE KEY") blocks; an authorized-keys file is any number of
public identities one after another.  Text outside the blocks is ignored.
"""

import hashlib
import re

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from muxframe.xtmp.errors import HandshakeFailed, MalformedMessage

ED25519_PUBLIC = 32
ED25519_SIGNATURE = 64
MLDSA65_PUBLIC = 1952
MLDSA65_SIGNATURE = 3309
_KIND_ED25519 = 1
_KIND_MLDSA = 2


_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.S)
_PUBLIC_LABELS = (b"PUBLIC KEY",)
_PRIVATE_LABELS = (b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY")


def _keys(data, labels, load, what):
    """
    Parse each PEM block of C{data} with C{load}; yield C{(number, key)}.
    Blocks are numbered from 1 for error messages.
    """
    for number, match in enumerate(_PEM_BLOCK.finditer(data), 1):
        label = match.group(1)
        if label not in labels:
            raise ValueError("%s: PEM block %d is %r, expected %s" % (
                what, number, label.decode("ascii"),
                " or ".join(repr(x.decode("ascii")) for x in labels)))
        try:
            key = load(match.group(0))
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise ValueError("%s: PEM block %d: %s" % (what, number, e))
        yield number, key


def _identities(data, labels, load, kinds, what):
    """
    Group the keys of C{data} into identities: each Ed25519 key starts
    one, and an ML-DSA-65 key directly after it completes it.

    @param kinds: C{(Ed25519 class, ML-DSA-65 class)}.
    @return: a list of C{[ed25519Key, mldsaKeyOrNone]}.
    """
    edType, mlType = kinds
    result = []
    for number, key in _keys(data, labels, load, what):
        if isinstance(key, edType):
            result.append([key, None])
        elif isinstance(key, mlType):
            if not result or result[-1][1] is not None:
                raise ValueError(
                    "%s: PEM block %d: an ML-DSA-65 key must directly "
                    "follow the Ed25519 key of its identity" % (what, number))
            result[-1][1] = key
        else:
            raise ValueError("%s: PEM block %d: %s is not an Ed25519 or "
                             "ML-DSA-65 key" % (what, number,
                                                type(key).__name__))
    return result


def _one(identities, what):
    if len(identities) != 1:
        raise ValueError("%s: expected one identity (an Ed25519 key, "
                         "optionally then an ML-DSA-65 key), found %d"
                         % (what, len(identities)))
    return identities[0]


class PublicIdentity:
    """
    A peer's long-term public identity.

    @ivar ed25519: the raw 32-byte Ed25519 public key.
    @ivar mldsa: the raw ML-DSA-65 public key, or L{None}.
    """

    __slots__ = ("ed25519", "mldsa", "_edKey", "_mlKey")

    def __init__(self, ed25519Public, mldsaPublic=None):
        self.ed25519 = bytes(ed25519Public)
        self.mldsa = bytes(mldsaPublic) if mldsaPublic is not None else None
        self._edKey = ed25519.Ed25519PublicKey.from_public_bytes(self.ed25519)
        self._mlKey = (mldsa.MLDSA65PublicKey.from_public_bytes(self.mldsa)
                       if self.mldsa is not None else None)

    def __eq__(self, other):
        if not isinstance(other, PublicIdentity):
            return NotImplemented
        return self.encode() == other.encode()

    def __hash__(self):
        return hash(self.encode())

    def __repr__(self):
        return "<PublicIdentity %s%s>" % (
            self.fingerprint[:16], " +ML-DSA-65" if self.mldsa else "")

    @property
    def fingerprint(self):
        """
        Hex SHA-256 of the encoded identity.
        """
        return hashlib.sha256(self.encode()).hexdigest()

    def encode(self):
        """
        The wire encoding (see the module docstring).
        """
        if self.mldsa is None:
            return bytes([_KIND_ED25519]) + self.ed25519
        return bytes([_KIND_ED25519 | _KIND_MLDSA]) + self.ed25519 + self.mldsa

    @classmethod
    def decode(cls, data, offset=0):
        """
        Parse an encoded identity at C{offset}; return C{(identity, end)}.
        """
        if offset >= len(data):
            raise MalformedMessage("truncated identity")
        kinds = data[offset]
        if kinds not in (1, 3):
            raise MalformedMessage("unknown identity kinds %#x" % (kinds,))
        end = offset + 1 + ED25519_PUBLIC
        if kinds & _KIND_MLDSA:
            end += MLDSA65_PUBLIC
        if end > len(data):
            raise MalformedMessage("truncated identity")
        ed = data[offset + 1:offset + 1 + ED25519_PUBLIC]
        ml = data[offset + 1 + ED25519_PUBLIC:end] if kinds & 2 else None
        try:
            return cls(ed, ml), end
        except ValueError as e:
            raise MalformedMessage("invalid identity key: %s" % (e,))

    def signatureLength(self):
        """
        The length of this identity's signature blob.
        """
        return ED25519_SIGNATURE + (MLDSA65_SIGNATURE if self.mldsa else 0)

    def verify(self, message, signature):
        """
        Check C{signature} over C{message}; both keys must verify.

        @raise HandshakeFailed: it does not.
        """
        if len(signature) != self.signatureLength():
            raise HandshakeFailed("signature has the wrong length")
        try:
            self._edKey.verify(signature[:ED25519_SIGNATURE], message)
            if self._mlKey is not None:
                self._mlKey.verify(signature[ED25519_SIGNATURE:], message)
        except InvalidSignature:
            raise HandshakeFailed("transcript signature does not verify")

    def toPEM(self):
        """
        SubjectPublicKeyInfo PEM: the Ed25519 key, then the ML-DSA-65 key.
        """
        out = self._edKey.public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo)
        if self._mlKey is not None:
            out += self._mlKey.public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo)
        return out

    @classmethod
    def fromPEM(cls, data, what="public identity"):
        """
        Parse what L{toPEM} writes.

        @raise ValueError: naming the fault, unless C{data} holds exactly
            one Ed25519 key, optionally followed by one ML-DSA-65 key.
        """
        ed, ml = _one(_publicIdentities(data, what), what)
        return cls(ed.public_bytes_raw(),
                   ml.public_bytes_raw() if ml is not None else None)

    @classmethod
    def loadPEM(cls, path):
        """
        Read a public identity from a PEM file.
        """
        with open(path, "rb") as f:
            return cls.fromPEM(f.read(), path)

    def savePEM(self, path):
        """
        Write this public identity to a PEM file.
        """
        with open(path, "wb") as f:
            f.write(self.toPEM())


class Identity:
    """
    A long-term private identity: Ed25519, optionally also ML-DSA-65.
    """

    def __init__(self, ed25519Key, mldsaKey=None):
        self.ed25519Key = ed25519Key
        self.mldsaKey = mldsaKey
        self.public = PublicIdentity(
            ed25519Key.public_key().public_bytes_raw(),
            mldsaKey.public_key().public_bytes_raw() if mldsaKey else None)

    @classmethod
    def generate(cls, withMLDSA=False):
        """
        Make a new random identity.
        """
        return cls(ed25519.Ed25519PrivateKey.generate(),
                   mldsa.MLDSA65PrivateKey.generate() if withMLDSA else None)

    @classmethod
    def fromSeeds(cls, ed25519Seed, mldsaSeed=None):
        """
        A deterministic identity from a 32-byte Ed25519 seed and optional
        32-byte ML-DSA-65 seed (test vectors).
        """
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(ed25519Seed),
                   mldsa.MLDSA65PrivateKey.from_seed_bytes(mldsaSeed)
                   if mldsaSeed is not None else None)

    def sign(self, message):
        """
        The signature blob over C{message}.
        """
        sig = self.ed25519Key.sign(message)
        if self.mldsaKey is not None:
            sig += self.mldsaKey.sign(message)
        return sig

    def toPEM(self, password=None):
        """
        PKCS#8 PEM of the private keys (encrypted when C{password} given).
        """
        enc = (serialization.BestAvailableEncryption(password) if password
               else serialization.NoEncryption())
        out = b""
        for key in (self.ed25519Key, self.mldsaKey):
            if key is not None:
                out += key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         enc)
        return out

    @classmethod
    def fromPEM(cls, data, password=None, what="private identity"):
        """
        Parse what L{toPEM} writes.

        @raise ValueError: naming the fault, unless C{data} holds exactly
            one Ed25519 private key, optionally followed by one ML-DSA-65
            private key (or the password is wrong).
        """
        identities = _identities(
            data, _PRIVATE_LABELS,
            lambda block: serialization.load_pem_private_key(block, password),
            (ed25519.Ed25519PrivateKey, mldsa.MLDSA65PrivateKey), what)
        return cls(*_one(identities, what))

    @classmethod
    def loadPEM(cls, path, password=None):
        """
        Read a private identity from a PEM file.
        """
        with open(path, "rb") as f:
            return cls.fromPEM(f.read(), password, path)

    def savePEM(self, path, password=None):
        """
        Write this identity to a PEM file readable only by its owner.
        """
        import os
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.toPEM(password))


def _publicIdentities(data, what):
    return _identities(data, _PUBLIC_LABELS, serialization.load_pem_public_key,
                       (ed25519.Ed25519PublicKey, mldsa.MLDSA65PublicKey),
                       what)


def loadAuthorizedKeys(path):
    """
    Read a file of public identities one after another, as
    L{PublicIdentity.savePEM} writes them: each Ed25519 "PUBLIC KEY" block
    starts an identity, and an ML-DSA-65 block directly after it belongs
    to it.  Text outside the blocks (comments) is ignored.

    @return: a list of L{PublicIdentity}, in file order.
    @raise ValueError: naming the file and block, for a block that is not
        a public key, a key of another type, or an ML-DSA-65 key with no
        Ed25519 key of its own before it.
    """
    with open(path, "rb") as f:
        data = f.read()
    return [PublicIdentity(ed.public_bytes_raw(),
                           ml.public_bytes_raw() if ml is not None else None)
            for ed, ml in _publicIdentities(data, path)]
