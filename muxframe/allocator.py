"""
Keeping large reads off the C allocator's slow path.

glibc's malloc serves a block of M_MMAP_THRESHOLD bytes or more (128 KiB
at start) with its own mmap, and when such a block is freed it raises the
threshold to that block's size and the heap's trim threshold to twice it
(mallopt(3), "dynamic mmap threshold").  A connection that reads 256 KiB
at a time (BMP's read size) and cuts reads crossing frames into slices of
any size up to that allocates and frees blocks on both sides of a
threshold that has settled just above one read: the heap's top grows and
is trimmed back again and again, and each read and slice is written into
freshly faulted pages.  Measured here: 57,000-163,000 minor page faults per
GiB received and 0.37-0.66 s of CPU, against about 1,000 faults and 0.15 s
once one block of a few reads' size has been freed.

Rules:
  - L{warmAllocator} allocates and frees one block of C{size} bytes, once
    per process for the largest size asked for so far: glibc's thresholds
    then sit above every read and slice smaller than it; the heap may keep
    up to twice C{size} free instead of returning it to the system;
  - other allocators do what they do with one large block allocated and
    freed: nothing lasting.
"""

_warmedTo = 0


def warmAllocator(size):
    """
    Lift the C allocator's mmap threshold past blocks of C{size} bytes, if
    no earlier call lifted it as far (see the module docstring).

    @param size: bytes; reads and slices smaller than this are kept off
        the allocator's mmap and trim path.
    @return: C{True} if a block was allocated and freed now.
    """
    global _warmedTo
    if size <= _warmedTo:
        return False
    _warmedTo = size
    # Freed as soon as it is made: what counts is that it was mmapped.
    bytearray(size)
    return True
