"""
atheris fuzz harnesses for muxframe's decoders and its Multiplexer adapter
(see docs/fuzzing.md).  The targets are in L{tests.fuzz.targets}.
"""
