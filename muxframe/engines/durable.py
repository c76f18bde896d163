"""
Files made durable: a runner for blocking file work off the reactor
thread, group commit, atomic whole-file replacement, and the key/value
file (consumer offsets, subscriptions).

Group commit: callers ask L{GroupCommitter.commit} for a Deferred; while one
flush (write + fsync) is running, later callers wait together for the next
one, so one fsync covers every record that arrived meanwhile.  Commits made
while a flush's Deferreds fire (a callback appending again) also wait until
all of them fired, then share the next flush.  The reactor
thread only copies bytes into a buffer; writes and fsyncs run in a thread.
A failed write or fsync is fatal for the file (as in PostgreSQL since
"fsyncgate": after a failed fsync the kernel may have dropped the dirty
pages, so retrying would report data durable that is not): every pending
and later commit fails with L{StorageError} until the engine is restarted
and recovers from what is on disk.
"""

import os

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from muxframe.engines import logformat
from muxframe.engines.errors import EngineStopped, StorageError

log = Logger()

_fdatasync = getattr(os, "fdatasync", os.fsync)


class ThreadRunner:
    """
    Runs blocking callables in a thread pool, as Deferreds.
    """

    def __init__(self, reactor, pool):
        self._reactor = reactor
        self._pool = pool

    def __call__(self, f, *args):
        return deferToThreadPool(self._reactor, self._pool, f, *args)


def inlineRunner(f, *args):
    """
    Runs blocking callables at once, on the calling thread (tests, tools).
    """
    return defer.maybeDeferred(f, *args)


def fsyncDirectory(path):
    """
    fsync a directory, so a file created, renamed or removed in it stays so.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeAll(fd, data):
    """
    os.write until every byte of C{data} is written.
    """
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomicWrite(path, data):
    """
    Replace C{path} with C{data}: write a temporary file, fsync it, rename it
    over C{path}, fsync the directory.  Blocking.
    """
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        writeAll(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsyncDirectory(os.path.dirname(os.path.abspath(path)))


class GroupCommitter:
    """
    One flush at a time; commits that arrive during a flush share the next.

    @param runner: runs the blocking job (L{ThreadRunner} or L{inlineRunner}).
    @param prepare: called on the reactor thread when a flush starts;
        returns the blocking job (a callable) or L{None} if there is
        nothing to write.
    @param what: a name for logs.
    @param flushed: called on the reactor thread with the job's result
        after each successful flush, before the waiting commits fire.
    """

    def __init__(self, runner, prepare, what, flushed=None):
        self._runner = runner
        self._prepare = prepare
        self._what = what
        self._flushed = flushed
        self._waiting = []
        self._values = []
        self._flushing = False
        self.failure = None
        self.flushes = 0

    @property
    def busy(self):
        """
        Whether a flush is running or waiting.
        """
        return self._flushing or bool(self._waiting)

    def commit(self, value=None):
        """
        A Deferred firing with C{value} once everything written before this
        call is durable.
        """
        if self.failure is not None:
            return defer.fail(StorageError("%s is unusable since a failed flush: %s" % (
                self._what, self.failure)))
        d = defer.Deferred()
        self._waiting.append(d)
        self._values.append(value)
        if not self._flushing:
            self._kick()
        return d

    def _kick(self):
        while not self._flushing and self._waiting:
            # Parallel lists, not (Deferred, value) tuples: one object less
            # per commit for the allocator and the GC.
            waiting = (self._waiting, self._values)
            self._waiting, self._values = [], []
            try:
                job = self._prepare()
            except Exception as e:
                self._fail(waiting, e)
                return
            if job is not None:
                self._flushing = True
                self._runner(job).addCallbacks(self._done, self._failed,
                                               callbackArgs=(waiting,), errbackArgs=(waiting,))
                return
            self._fire(waiting)

    def _fire(self, waiting):
        # Commits made by the callbacks wait until every callback ran, then
        # share one flush: not one flush for the first of them and the next
        # for all the others.
        self._flushing = True
        try:
            for d, value in zip(*waiting):
                d.callback(value)
        finally:
            self._flushing = False

    def _done(self, result, waiting):
        self.flushes += 1
        if self._flushed is not None:
            self._flushed(result)
        self._fire(waiting)
        self._kick()

    def _failed(self, failure, waiting):
        self._flushing = False
        self._fail(waiting, failure.value)

    def _fail(self, waiting, error):
        self.failure = "%s: %s" % (type(error).__name__, error)
        log.critical("flush of {what} failed, no more writes accepted: {error}",
                     what=self._what, error=self.failure)
        deferreds = waiting[0] + self._waiting
        self._waiting, self._values = [], []
        for d in deferreds:
            d.errback(StorageError("%s flush failed: %s" % (self._what, self.failure)))


class KeyValueFile:
    """
    A durable table of bytes keys to bytes values: an append-only file of
    key/value records (L{muxframe.engines.logformat}), replayed on open,
    rewritten atomically when it holds more than twice what is live.

    Reads come from memory.  L{put} and L{delete} change memory at once and
    return a Deferred firing once the change is on disk.
    """

    def __init__(self, path, runner, compactAbove=1024 * 1024):
        self.path = path
        self._runner = runner
        self.compactAbove = compactAbove
        self._table = {}
        self._buffer = []
        self._fd = None
        self._size = 0
        self._liveBytes = 0
        self._compacting = False
        self._committer = GroupCommitter(runner, self._prepare, path)
        self.recovered = None

    def open(self):
        """
        Replay the file (blocking; truncating a torn tail).  Returns the
        number of bytes dropped from the tail.
        """
        dropped = 0
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                data = f.read()
            table, goodEnd, fault = logformat.replayKeyValues(data)
            if fault is not None:
                dropped = len(data) - goodEnd
                log.warn("{path}: dropped {dropped} bytes of torn tail ({fault})",
                         path=self.path, dropped=dropped, fault=fault)
            self._table = table
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            if goodEnd < len(data):
                os.ftruncate(self._fd, max(goodEnd, logformat.MAGIC_SIZE))
                os.fsync(self._fd)
            self._size = max(goodEnd, logformat.MAGIC_SIZE)
            if goodEnd < logformat.MAGIC_SIZE:
                os.ftruncate(self._fd, 0)
                writeAll(self._fd, logformat.KV_MAGIC)
                os.fsync(self._fd)
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            writeAll(self._fd, logformat.KV_MAGIC)
            os.fsync(self._fd)
            fsyncDirectory(os.path.dirname(os.path.abspath(self.path)))
            self._size = logformat.MAGIC_SIZE
        self._liveBytes = sum(len(k) + len(v) + 15 for k, v in self._table.items())
        self.recovered = dropped
        return dropped

    @property
    def isOpen(self):
        """
        Whether the file is open for changes.
        """
        return self._fd is not None

    def close(self):
        """
        Close the file (after L{flush}).
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def get(self, key, default=None):
        """
        The value of C{key}.
        """
        return self._table.get(key, default)

    def items(self, prefix=b""):
        """
        The C{(key, value)} pairs whose key starts with C{prefix}.
        """
        return [(k, v) for k, v in self._table.items() if k.startswith(prefix)]

    def _append(self, record):
        if not self.isOpen:
            raise EngineStopped("%s is closed" % (self.path,))
        self._buffer.append(record)
        self._size += len(record)
        return self._committer.commit()

    def put(self, key, value):
        """
        Set C{key} to C{value}; a Deferred firing once durable.
        """
        old = self._table.get(key)
        if old is not None:
            self._liveBytes -= len(key) + len(old) + 15
        self._table[key] = value
        self._liveBytes += len(key) + len(value) + 15
        return self._append(logformat.encodeKeyValue(logformat.KV_PUT, key, value))

    def delete(self, key):
        """
        Remove C{key}; a Deferred firing once durable.
        """
        old = self._table.pop(key, None)
        if old is None:
            return defer.succeed(None)
        self._liveBytes -= len(key) + len(old) + 15
        return self._append(logformat.encodeKeyValue(logformat.KV_DELETE, key))

    def flush(self):
        """
        A Deferred firing once every change so far is durable.
        """
        return self._committer.commit()

    def _prepare(self):
        if self._size > self.compactAbove and self._size > 2 * self._liveBytes:
            return self._compactJob()
        if not self._buffer:
            return None
        data, self._buffer = b"".join(self._buffer), []
        fd = self._fd

        def job():
            writeAll(fd, data)
            _fdatasync(fd)
        return job

    def _compactJob(self):
        # The whole table is rewritten from memory, which already holds the
        # buffered changes: the buffer is dropped, not written.
        self._buffer = []
        data = logformat.KV_MAGIC + b"".join(
            logformat.encodeKeyValue(logformat.KV_PUT, k, v) for k, v in self._table.items())
        self._size = len(data)
        oldFd, path = self._fd, self.path

        def job():
            atomicWrite(path, data)
            os.close(oldFd)
            # Set from the thread: the reactor thread reads it only in the
            # next _prepare, which runs after this job's result arrives.
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        return job
