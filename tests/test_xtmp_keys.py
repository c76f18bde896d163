"""
The key schedule's HKDF (L{muxframe.xtmp.keys}), written over
C{hmac.digest}, against C{cryptography}'s HKDF and RFC 5869.
"""

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from muxframe.xtmp.keys import expand, extract, keyId


class HKDFTests(SynchronousTestCase):
    """
    L{extract} and L{expand} are HKDF-SHA256.
    """

    def test_rfc5869Case1(self):
        """
        RFC 5869 appendix A.1's PRK.  (Its info is not ASCII, which XTMP's
        labels are, so L{expand} is checked against C{cryptography} below.)
        """
        ikm = bytes.fromhex("0b" * 22)
        salt = bytes.fromhex("000102030405060708090a0b0c")
        self.assertEqual(extract(salt, ikm).hex(),
                         "077709362c2e32df0ddc3f0dc47bba63"
                         "90b6c73bb50f9c3122ec844ad7c2b3e5")

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=80), st.binary(min_size=1, max_size=80),
           st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
           st.integers(min_value=1, max_value=200))
    def test_matchesCryptography(self, salt, ikm, label, length):
        """
        For any salt, input, ASCII label and length (one block and
        several), the results are C{cryptography}'s HKDF's.
        """
        info = label.encode("ascii")
        self.assertEqual(
            expand(extract(salt, ikm), label, length),
            HKDF(hashes.SHA256(), length, salt, info).derive(ikm))

    def test_longest(self):
        """
        255 blocks is the most HKDF-Expand gives; one byte more is a
        L{ValueError}.
        """
        prk = bytes(32)
        self.assertEqual(
            expand(prk, "x", 255 * 32),
            HKDFExpand(hashes.SHA256(), 255 * 32, b"x").derive(prk))
        self.assertRaises(ValueError, expand, prk, "x", 255 * 32 + 1)

    def test_keyId(self):
        """
        A key id is the first 16 bytes of HMAC-SHA256(key, "xtmp key id").
        """
        import hashlib
        import hmac
        key = bytes(range(32))
        self.assertEqual(keyId(key), hmac.new(key, b"xtmp key id",
                                              hashlib.sha256).digest()[:16])
