"""
Tests for L{muxframe.allocator}.
"""

import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from muxframe import allocator

# Receives SIZE MiB in reads of 256 KiB over loopback TCP from a forked
# writer, cutting every read in two at a moving point and keeping the last
# two slices (as a BMP receiver cutting reads that cross frames does), and
# prints the minor page faults it took; "warm" calls warmAllocator first.
_RECEIVER = textwrap.dedent("""
    import os, resource, socket, sys
    from muxframe.allocator import warmAllocator
    total = int(sys.argv[2]) << 20
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    if os.fork() == 0:
        out = socket.create_connection(listener.getsockname())
        block = b"x" * (256 * 1024 + 40)
        try:
            while True:
                out.sendall(block)
        except OSError:
            os._exit(0)
    connection, _ = listener.accept()
    if sys.argv[1] == "warm":
        warmAllocator(1 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    got, kept = 0, []
    while got < total:
        data = connection.recv(256 * 1024)
        if not data:
            break
        cut = (got + 1000) % len(data)
        kept.append(data[:cut])
        kept.append(data[cut:])
        del kept[:-2]
        got += len(data)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    connection.close()
""")


class WarmAllocatorTests(SynchronousTestCase):
    """
    L{allocator.warmAllocator}.
    """

    def setUp(self):
        self.patch(allocator, "_warmedTo", 0)

    def test_oncePerSize(self):
        """
        A block is made for a size larger than any before, not again for
        one no larger.
        """
        self.assertTrue(allocator.warmAllocator(1 << 20))
        self.assertFalse(allocator.warmAllocator(1 << 20))
        self.assertFalse(allocator.warmAllocator(4096))
        self.assertTrue(allocator.warmAllocator(2 << 20))

    def faults(self, mode):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(allocator.__file__))]
            + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
        for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
            env.pop(name, None)
        out = subprocess.run([sys.executable, "-c", _RECEIVER, mode, "256"], env=env,
                             capture_output=True, timeout=60, check=True)
        return int(out.stdout.split()[-1])

    def test_fewerPageFaults(self):
        """
        Where the allocator faults fresh pages in for each large read and
        slice (glibc), warming it first takes that away: far fewer minor
        page faults for the same 256 MiB received.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("counts the page faults of glibc's malloc (Linux)")
        # (The slow path depends on where the heap's top lands: a cold run
        # misses it now and then.)
        cold = 0
        for attempt in range(3):
            cold = max(cold, self.faults("cold"))
            if cold >= 8000:
                break
        if cold < 8000:
            raise SkipTest("this allocator takes %d page faults for 256 MiB "
                           "read cold: it has no slow path to avoid" % (cold,))
        warm = self.faults("warm")
        self.assertLess(warm * 4, cold, (warm, cold))
