"""
Engine benchmarks, each beside a baseline measured in the same
run:

  1. embedded-engine appends per second with durable acknowledgements
     (messages of 256 bytes, a window of appends in flight over several
     queues; target >= 50,000/s; also 16 per appendMany acknowledgement,
     and as the XTMP server makes them: one appendMany per reactor turn,
     through the server's L{TurnBatch})
     and the fsyncs per second it needs, against
     a plain loop writing the same framed records and fdatasync'ing once per
     batch (and, for scale, one fdatasync per message), and the same append
     loop against a store that keeps nothing (what the loop, the
     Deferreds and their garbage cost by themselves);
  2. replay: one device fetching every record of its queue back in order
     (target >= 200,000/s; also with ten queues interleaved in the
     journal), and recovery (restart on the same directory), against
     reading and CRC-scanning the segment files raw (1 and 2 also report
     the process's CPU time per record, every thread counted: on a loaded
     machine it moves far less than wall time);
  3. presence updates fanned out per second (one entity, many approved
     watchers), against calling the same number of callbacks in a loop;
  4. the same over the Redis engine (a redis-server started here on
     127.0.0.1 with appendonly and appendfsync always), against raw
     pipelined XADDs of the same payloads through txredisapi.

The process runs with the garbage collector settings the xtmp twistd role
applies once started (L{muxframe.server.collector}: start-up objects
frozen, a youngest-generation threshold of 10,000); --python-gc keeps
Python's defaults instead.

Usage:  python3 -m bench.bench_engines [--quick] [--json PATH] [--no-redis]
                                       [--python-gc]
Benchmarks live here, not in tests: no test asserts a timing.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

from twisted.internet import defer, task, threads

from muxframe.engines import logformat
from muxframe.engines.embedded import EmbeddedEngine
from muxframe.engines.model import (
    Address, Appended, QueueMessage, QueueRetention, Status)
from muxframe.server.collector import YOUNG_THRESHOLD, applyServerCollector
from muxframe.server.turnbatch import TurnBatch

PAYLOAD = b"x" * 256
NO_RETENTION = QueueRetention(maxAge=None, maxMessages=None, deleteAcknowledged=False)


def baselineWrites(directory, count, batch):
    """
    Write C{count} framed journal records of 256 bytes to one file,
    fdatasync'ing every C{batch}; return (msgs/s, fsyncs/s).
    """
    path = os.path.join(directory, "baseline.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    syncs = 0
    start = time.perf_counter()
    try:
        pending = []
        for i in range(count):
            pending.append(logformat.encodeJournalRecord(
                1, 1, i + 1, i + 1, 0, "q%d" % (i % 100), "m%d" % i, "bob", "phone", PAYLOAD))
            if len(pending) == batch or i == count - 1:
                os.write(fd, b"".join(pending))
                os.fdatasync(fd)
                syncs += 1
                pending = []
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return count / elapsed, syncs / elapsed


def rawScan(directory):
    """
    Read and CRC-scan every segment file of a journal; return records/s.
    """
    journal = os.path.join(directory, "journal")
    start = time.perf_counter()
    records = 0
    for name in sorted(os.listdir(journal)):
        if name.endswith(".log"):
            with open(os.path.join(journal, name), "rb") as f:
                bodies, _, _ = logformat.scanFrames(f.read(), logformat.MAGIC_SIZE)
            records += len(bodies)
    return records / (time.perf_counter() - start)


def inFlight(count, window, issue, counted=None):
    """
    Keep C{window} messages in flight until C{count} are acknowledged:
    C{issue(i, acked, failed)} sends messages from the C{i}th on and
    returns how many it sent, C{acked(result)} being called once they are
    durable (C{counted(result)} of them; one if C{counted} is None).
    Return a Deferred firing with the seconds it took.
    """
    done = defer.Deferred()
    state = {"next": 0, "acked": 0, "pumping": False}

    def acked(result):
        state["acked"] += 1 if counted is None else counted(result)
        if state["acked"] == count:
            done.callback(None)
        else:
            pump()

    def pump():
        if state["pumping"]:
            return
        state["pumping"] = True
        while state["next"] < count and state["next"] - state["acked"] < window:
            state["next"] += issue(state["next"], acked, done.errback)
        state["pumping"] = False
    start = time.perf_counter()
    pump()
    return done.addCallback(lambda _: time.perf_counter() - start)


# A server makes a session's sender address once.
SENDER = Address("bob", "phone")


def appendWindow(engine, count, window, queues):
    """
    Keep C{window} appends in flight until C{count} are acknowledged;
    a Deferred firing with seconds.
    """
    append = engine.queues.append

    def issue(i, acked, failed):
        append("q%d" % (i % queues), QueueMessage("m%d" % i, PAYLOAD, SENDER, False)
               ).addCallbacks(acked, failed)
        return 1
    return inFlight(count, window, issue)


def appendTurns(reactor, engine, count, window, queues):
    """
    As L{appendWindow}, the appends of each reactor turn made as one
    L{appendMany} through the server's own L{TurnBatch} (as the XTMP
    server makes them); a Deferred firing with seconds.
    """
    batch = TurnBatch(reactor, lambda: engine.queues.appendMany)

    def issue(i, acked, failed):
        batch.add([("q%d" % (i % queues), QueueMessage("t%d" % i, PAYLOAD, SENDER, False))],
                  acked, failed)
        return 1
    return inFlight(count, window, issue)


class NullQueues:
    """
    A queue store that stores nothing: each append makes its Deferred and
    L{Appended} and fires them a flush later, in batches after a hop to the
    thread pool, as group commit does.  What L{appendWindow} costs on its
    own (its loop, the Deferreds, their callbacks and garbage), without
    checking, encoding, indexing or disk.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._waiting = []
        self._flushing = False
        self._next = 1

    def append(self, entity, message):
        d = defer.Deferred()
        self._waiting.append((d, Appended(self._next, 0)))
        self._next += 1
        if not self._flushing:
            self._kick()
        return d

    def _kick(self):
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        self._flushing = True

        def flushed(_):
            self._flushing = False
            for d, value in batch:
                d.callback(value)
            self._kick()
        threads.deferToThread(lambda: None).addCallback(flushed)


class NullEngine:
    """
    Just enough of an engine for L{appendWindow}: L{NullQueues}.
    """

    def __init__(self, reactor):
        self.queues = NullQueues(reactor)


def appendBatches(engine, count, window, queues, batch):
    """
    As L{appendWindow}, C{batch} messages per L{appendMany} call (one
    acknowledgement each); a Deferred firing with seconds.
    """
    def issue(first, acked, failed):
        last = min(count, first + batch)
        items = [("q%d" % (i % queues), QueueMessage("b%d" % i, PAYLOAD, SENDER, False))
                 for i in range(first, last)]
        engine.queues.appendMany(items).addCallbacks(acked, failed)
        return last - first
    return inFlight(count, window, issue, counted=len)


@defer.inlineCallbacks
def replay(engine, queues):
    """
    Fetch every record of every queue from offset 1; return (records, s).
    """
    start = time.perf_counter()
    total = 0
    for q in range(queues):
        offset = 1
        while True:
            batch = yield engine.queues.fetch("q%d" % q, offset, limit=5000, maxBytes=10 ** 9)
            if not batch:
                break
            total += len(batch)
            offset = batch[-1].offset + 1
    return total, time.perf_counter() - start


@defer.inlineCallbacks
def fanout(engine, watchers, changes, settle=None):
    """
    One entity with C{watchers} approved watchers; C{changes} status
    changes; return (notices delivered, s) once every notice arrived.
    """
    received = [0]
    expected = watchers * changes
    done = defer.Deferred()

    def heard(notice):
        received[0] += 1
        if received[0] == expected and not done.called:
            done.callback(None)
    for w in range(watchers):
        engine.presence.watch("w%d" % w, heard)
        yield engine.presence.requestSubscription("w%d" % w, "star")
        yield engine.presence.answerSubscription("star", "w%d" % w, True)
    yield engine.presence.connect("star", "phone")
    if settle is not None:
        yield settle()
    received[0] = 0
    statuses = [Status.AWAY, Status.ONLINE]
    start = time.perf_counter()
    for i in range(changes):
        yield engine.presence.setStatus("star", "phone", statuses[i % 2])
    yield done
    return expected, time.perf_counter() - start


def baselineCallbacks(watchers, changes):
    """
    Call C{watchers * changes} callbacks in a loop; return calls/s.
    """
    received = [0]

    def heard(notice):
        received[0] += 1
    callbacks = [heard] * watchers
    start = time.perf_counter()
    for i in range(changes):
        for callback in callbacks:
            callback(i)
    return watchers * changes / (time.perf_counter() - start)


@defer.inlineCallbacks
def benchEmbedded(reactor, args, results):
    directory = tempfile.mkdtemp(prefix="muxframe-bench-", dir=args.dir)
    try:
        results["baseline_batch_msgs_per_s"], results["baseline_batch_fsyncs_per_s"] = \
            baselineWrites(directory, args.messages, args.batch)
        results["baseline_fsync_each_msgs_per_s"], _ = baselineWrites(
            directory, args.fsyncEach, 1)
        # Warm-up on a scratch engine (first-use costs: allocator growth,
        # caches), not measured.
        scratch = EmbeddedEngine(os.path.join(directory, "warmup"), retention=NO_RETENTION,
                                 retentionInterval=0)
        yield scratch.start()
        yield appendWindow(scratch, args.warmup, args.window, args.queues)
        yield scratch.stop()
        shutil.rmtree(os.path.join(directory, "warmup"), ignore_errors=True)
        null = NullEngine(reactor)
        yield appendWindow(null, args.warmup, args.window, args.queues)
        cpu = time.process_time()
        seconds = yield appendWindow(null, args.messages, args.window, args.queues)
        results["baseline_null_append_cpu_us"] = (
            time.process_time() - cpu) / args.messages * 1e6
        results["baseline_null_append_msgs_per_s"] = args.messages / seconds
        engine = EmbeddedEngine(os.path.join(directory, "many"), retention=NO_RETENTION,
                                retentionInterval=0)
        yield engine.start()
        flushes = engine.journal.flushes
        cpu = time.process_time()
        seconds = yield appendWindow(engine, args.messages, args.window, args.queues)
        results["embedded_append_cpu_us"] = (time.process_time() - cpu) / args.messages * 1e6
        flushes = engine.journal.flushes - flushes
        results["embedded_append_msgs_per_s"] = args.messages / seconds
        results["embedded_fsyncs_per_s"] = flushes / seconds
        results["embedded_records_per_fsync"] = args.messages / max(1, flushes)
        seconds = yield appendBatches(engine, args.messages, args.window, args.queues, 16)
        results["embedded_append_batched_msgs_per_s"] = args.messages / seconds
        flushes = engine.journal.flushes
        cpu = time.process_time()
        seconds = yield appendTurns(reactor, engine, args.messages, args.window, args.queues)
        results["embedded_append_turns_cpu_us"] = (
            time.process_time() - cpu) / args.messages * 1e6
        results["embedded_append_turns_msgs_per_s"] = args.messages / seconds
        results["embedded_append_turns_records_per_fsync"] = args.messages / max(
            1, engine.journal.flushes - flushes)
        total, seconds = yield replay(engine, args.queues)
        results["embedded_replay_interleaved_msgs_per_s"] = total / seconds
        yield engine.stop()
        # One device catching up on one queue: the replay figure.
        one = EmbeddedEngine(os.path.join(directory, "one"), retention=NO_RETENTION,
                             retentionInterval=0)
        yield one.start()
        seconds = yield appendWindow(one, args.messages, args.window, 1)
        results["embedded_append_one_queue_msgs_per_s"] = args.messages / seconds
        cpu = time.process_time()
        total, seconds = yield replay(one, 1)
        results["embedded_replay_cpu_us"] = (time.process_time() - cpu) / total * 1e6
        results["embedded_replay_msgs_per_s"] = total / seconds
        yield one.stop()
        results["baseline_scan_msgs_per_s"] = rawScan(os.path.join(directory, "one"))
        again = EmbeddedEngine(os.path.join(directory, "one"), retention=NO_RETENTION,
                               retentionInterval=0)
        start, cpu = time.perf_counter(), time.process_time()
        yield again.start()
        results["embedded_recovery_msgs_per_s"] = again.recovery.records / (
            time.perf_counter() - start)
        results["embedded_recovery_cpu_us"] = (time.process_time() - cpu) / max(
            1, again.recovery.records) * 1e6
        notices, seconds = yield fanout(again, args.watchers, args.changes)
        results["embedded_fanout_notices_per_s"] = notices / seconds
        results["baseline_callbacks_per_s"] = baselineCallbacks(args.watchers, args.changes)
        yield again.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@defer.inlineCallbacks
def rawXadd(client, count, window):
    """
    Pipelined XADDs of the same payloads (no Lua, no dedup); return s.
    """
    done = defer.Deferred()
    state = {"next": 0, "acked": 0}

    def acked(_):
        state["acked"] += 1
        if state["acked"] == count:
            done.callback(None)
        else:
            pump()

    def pump():
        while state["next"] < count and state["next"] - state["acked"] < window:
            i = state["next"]
            state["next"] += 1
            client.call("XADD", "raw:q%d" % (i % 100), "*", "p", PAYLOAD).addCallbacks(
                acked, done.errback)
    start = time.perf_counter()
    pump()
    yield done
    return time.perf_counter() - start


@defer.inlineCallbacks
def benchRedis(reactor, args, results):
    from muxframe.engines.redisengine import RedisEngine
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.redisserver import RedisServer, findRedisServer
    if findRedisServer() is None:
        results["redis"] = "skipped: no redis-server binary"
        return
    server = RedisServer(appendonly=True).start()
    try:
        engine = RedisEngine(server.address, retention=NO_RETENTION, retentionInterval=0)
        yield engine.start()
        count = args.redisMessages
        seconds = yield rawXadd(engine.client, count, args.window)
        results["redis_baseline_xadd_msgs_per_s"] = count / seconds
        seconds = yield appendWindow(engine, count, args.window, args.queues)
        results["redis_append_msgs_per_s"] = count / seconds
        total, seconds = yield replay(engine, args.queues)
        results["redis_replay_msgs_per_s"] = total / seconds
        notices, seconds = yield fanout(
            engine, args.watchers, args.changes,
            settle=lambda: task.deferLater(reactor, 0.2, lambda: None))
        results["redis_fanout_notices_per_s"] = notices / seconds
        results["redis_server"] = server.binary
        yield engine.stop()
    finally:
        server.stop()


def printTable(results):
    r = results
    rows = [
        ("embedded appends/s, durable acks (>=50k)", "embedded_append_msgs_per_s",
         "baseline_batch_msgs_per_s"),
        ("embedded fsyncs/s needed", "embedded_fsyncs_per_s", "baseline_batch_fsyncs_per_s"),
        ("embedded appends/s, appendMany of 16", "embedded_append_batched_msgs_per_s",
         "baseline_batch_msgs_per_s"),
        ("embedded appends/s as the server makes them", "embedded_append_turns_msgs_per_s",
         "baseline_batch_msgs_per_s"),
        ("embedded records per fsync", "embedded_records_per_fsync", None),
        ("appends/s to a store keeping nothing (loop)", "baseline_null_append_msgs_per_s",
         None),
        ("one fsync per message, msgs/s (scale)", "baseline_fsync_each_msgs_per_s", None),
        ("embedded appends/s, one queue", "embedded_append_one_queue_msgs_per_s",
         "baseline_batch_msgs_per_s"),
        ("embedded replay msgs/s, one queue (>=200k)", "embedded_replay_msgs_per_s",
         "baseline_scan_msgs_per_s"),
        ("embedded replay msgs/s, 10 queues interleaved",
         "embedded_replay_interleaved_msgs_per_s", "baseline_scan_msgs_per_s"),
        ("embedded recovery records/s", "embedded_recovery_msgs_per_s",
         "baseline_scan_msgs_per_s"),
        ("embedded presence notices/s", "embedded_fanout_notices_per_s",
         "baseline_callbacks_per_s"),
        ("redis appends/s", "redis_append_msgs_per_s", "redis_baseline_xadd_msgs_per_s"),
        ("redis replay msgs/s", "redis_replay_msgs_per_s", None),
        ("redis presence notices/s", "redis_fanout_notices_per_s", "baseline_callbacks_per_s"),
    ]
    print("%-44s %14s %14s %8s" % ("measure", "engine", "baseline", "ratio"))
    for name, key, base in rows:
        if key not in r:
            continue
        value = r[key]
        baseline = r.get(base) if base else None
        print("%-44s %14.1f %14s %8s" % (
            name, value, "%.1f" % baseline if baseline else "-",
            "%.2f" % (value / baseline) if baseline else "-"))
    # CPU time of the whole process (every thread) per record: what a
    # loaded machine changes least, for comparing trees.
    cpu = [(label, r[key]) for label, key in (
        ("append", "embedded_append_cpu_us"),
        ("append to a store keeping nothing", "baseline_null_append_cpu_us"),
        ("append as the server makes them", "embedded_append_turns_cpu_us"),
        ("replay", "embedded_replay_cpu_us"),
        ("recovery", "embedded_recovery_cpu_us")) if key in r]
    if cpu:
        print("embedded process CPU per record: " + ", ".join(
            "%s %.2f us" % item for item in cpu))
    print("garbage collector: %s" % (r.get("gc"),))
    if isinstance(r.get("redis"), str):
        print("redis: %s" % (r["redis"],))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis engine")
    parser.add_argument("--dir", default=None, help="where the files go (default: /tmp)")
    parser.add_argument("--python-gc", action="store_true",
                        help="keep Python's garbage collector settings, not the server's")
    args = parser.parse_args(argv)
    args.messages = 3000 if args.quick else 200000
    args.warmup = 1000 if args.quick else 20000
    args.redisMessages = 1000 if args.quick else 50000
    args.fsyncEach = 50 if args.quick else 1000
    args.batch = 256
    args.window = 2000
    args.queues = 10
    args.watchers = 50 if args.quick else 1000
    args.changes = 5 if args.quick else 50
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "platform": platform.platform()},
               "quick": args.quick, "messages": args.messages, "warmup": args.warmup,
               "payload": len(PAYLOAD),
               "window": args.window, "queues": args.queues, "watchers": args.watchers,
               "changes": args.changes}

    results["gc"] = "python" if args.python_gc else "server (threshold %d, start-up frozen)" % (
        YOUNG_THRESHOLD,)

    @defer.inlineCallbacks
    def run(reactor):
        if not args.python_gc:
            # What the xtmp role does once started.
            applyServerCollector()
        yield benchEmbedded(reactor, args, results)
        if not args.no_redis:
            yield benchRedis(reactor, args, results)
        _report(results, args.json)
    task.react(lambda reactor: run(reactor))


def _report(results, path):
    printTable(results)
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
