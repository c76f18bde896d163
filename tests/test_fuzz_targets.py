"""
The fuzz targets of L{tests.fuzz.targets} (run for millions of inputs by
atheris, docs/fuzzing.md) under Hypothesis in every test run: each decoder
whole against cut and sliced, and the Multiplexer adapter driven by random
programs.
"""

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from muxframe import bmp, mio
from tests.fuzz.targets import TARGETS, _frame

PROGRAM_OPS = st.sampled_from([0, 1, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9])


def programs():
    """
    Mux programs: operation bytes (mostly well-formed frames) and their
    arguments.
    """
    return st.lists(st.tuples(PROGRAM_OPS, st.integers(0, 255)), max_size=80).map(
        lambda pairs: bytes(b for pair in pairs for b in pair))


def frameStreams(framing):
    """
    Streams of well-formed frames with some garbage, behind two seed bytes.
    """
    piece = st.one_of(
        st.tuples(st.integers(0, 255), st.integers(0, 255)).map(
            lambda ke: _frame(framing, *ke)),
        st.binary(max_size=12))
    return st.tuples(st.binary(min_size=2, max_size=2), st.lists(piece, max_size=40)).map(
        lambda sp: sp[0] + b"".join(sp[1]))


class FuzzTargetTests(SynchronousTestCase):

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frameStreams("mio"))
    def test_mio(self, data):
        TARGETS["mio"](data)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frameStreams("bmp"))
    def test_bmp(self, data):
        TARGETS["bmp"](data)

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=400))
    def test_xtmp(self, data):
        TARGETS["xtmp"](data)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(min_size=2, max_size=2), programs())
    def test_mux(self, seed, program):
        TARGETS["mux"](seed + program)

    def test_seeds(self):
        """
        The targets accept empty and tiny inputs and the byte sequences of the reported defects.
        """
        issue = (mio.encodeHeader(1, 65536, mio.OPEN) + mio.encodeHeader(1, 1, mio.DATA)
                 + b"x" + mio.encodeHeader(1, 0, mio.RESET)
                 + mio.encodeHeader(1, 65536, mio.OPEN))
        for name, target in TARGETS.items():
            for data in (b"", b"\x00", b"\x00\x00", b"\x00\x00" + issue):
                target(data)
        TARGETS["bmp"](b"\x00\x07" + bmp.encodeFrame(bmp.Frame(
            b"io_0", bmp.CREATE, b"0", payload=b"x")) * 3)
