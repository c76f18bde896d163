"""
Long-term XTMP identities: an Ed25519 key, optionally with an ML-DSA-65
key, loaded from and saved to PEM files.

Wire encodings (used in the handshake):

  public identity: u8 kinds (bit0 Ed25519, always set; bit1 ML-DSA-65),
                   32 bytes Ed25519 public key, [1952 bytes ML-DSA-65 key]
  signature:       64 bytes Ed25519 signature, [3309 bytes ML-DSA-65
                   signature], both over the same message
"""

import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from muxframe.xtmp.errors import HandshakeFailed, MalformedMessage

ED25519_PUBLIC = 32
ED25519_SIGNATURE = 64
MLDSA65_PUBLIC = 1952
MLDSA65_SIGNATURE = 3309
_KIND_ED25519 = 1
_KIND_MLDSA = 2


def _pemBlocks(data):
    return re.findall(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----",
                      data, re.S)


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
    def fromPEM(cls, data):
        """
        Parse what L{toPEM} writes.
        """
        ed = ml = None
        for block in _pemBlocks(data):
            key = serialization.load_pem_public_key(block)
            if isinstance(key, ed25519.Ed25519PublicKey):
                ed = key.public_bytes_raw()
            elif isinstance(key, mldsa.MLDSA65PublicKey):
                ml = key.public_bytes_raw()
        if ed is None:
            raise ValueError("no Ed25519 public key in PEM data")
        return cls(ed, ml)

    @classmethod
    def loadPEM(cls, path):
        """
        Read a public identity from a PEM file.
        """
        with open(path, "rb") as f:
            return cls.fromPEM(f.read())

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
    def fromPEM(cls, data, password=None):
        """
        Parse what L{toPEM} writes.
        """
        ed = ml = None
        for block in _pemBlocks(data):
            key = serialization.load_pem_private_key(block, password)
            if isinstance(key, ed25519.Ed25519PrivateKey):
                ed = key
            elif isinstance(key, mldsa.MLDSA65PrivateKey):
                ml = key
        if ed is None:
            raise ValueError("no Ed25519 private key in PEM data")
        return cls(ed, ml)

    @classmethod
    def loadPEM(cls, path, password=None):
        """
        Read a private identity from a PEM file.
        """
        with open(path, "rb") as f:
            return cls.fromPEM(f.read(), password)

    def savePEM(self, path, password=None):
        """
        Write this identity to a PEM file readable only by its owner.
        """
        import os
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.toPEM(password))


_NAMED_BLOCKS = re.compile(
    rb"^name:[ \t]*(\S[^\r\n]*?)[ \t]*\r?$"
    rb"|-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.S | re.M)


def parseAuthorizedKeys(data):
    """
    Parse an authorized-keys file: concatenated public-key PEM blocks, each
    Ed25519 key (with an ML-DSA-65 key directly after it, if any) one
    identity.  A line C{name: NAME} outside the blocks names the next
    identity; other text outside the blocks is ignored (RFC 7468
    explanatory text).

    @return: a list of C{(name or None, PublicIdentity)}.
    """
    result = []
    name = None
    for match in _NAMED_BLOCKS.finditer(data):
        if match.group(1) is not None:
            name = match.group(1).decode("utf-8")
            continue
        key = serialization.load_pem_public_key(match.group(0))
        if isinstance(key, ed25519.Ed25519PublicKey):
            result.append((name, PublicIdentity(key.public_bytes_raw())))
            name = None
        elif isinstance(key, mldsa.MLDSA65PublicKey) and result:
            last, identity = result[-1]
            result[-1] = (last, PublicIdentity(identity.ed25519,
                                               key.public_bytes_raw()))
    return result


def loadAuthorizedKeys(path):
    """
    Read a file of concatenated public-key PEM blocks; each Ed25519 key
    (with an ML-DSA-65 key directly after it, if any) is one identity
    (see L{parseAuthorizedKeys} for names).
    """
    with open(path, "rb") as f:
        return [identity for _, identity in parseAuthorizedKeys(f.read())]
