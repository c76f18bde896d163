"""
Tests for L{muxframe.server.router}: handlers per type, their results,
per-type concurrency caps that queue or refuse with BUSY, handlers loaded
by dotted name, and blocking handlers in the thread pool (real reactor).
"""

import threading

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from muxframe.server.config import HandlerSpec
from muxframe.server.errors import ConfigError
from muxframe.server.events import ServerEvents
from muxframe.server.router import Router, importTarget
from muxframe.xtmp import XTMPErrorCode
from muxframe.xtmp.session import Message

from tests.test_server_support import ALICE, Harness, config, result


class FakeSession:
    sessionId = 7

    def __init__(self):
        self.responses = []
        self.errors = []
        self.connected = True

    def isConnected(self):
        return self.connected

    def respond(self, message, payload, messageType=None):
        self.responses.append((message.payload, payload))

    def respondError(self, message, code, reason):
        self.errors.append((message.payload, code, reason))


def message(kind, payload=b""):
    return Message(kind, 0, payload, 0)


def echo(session, message):
    return b"echo:" + message.payload


#: Not callable: importTarget must refuse it.
notCallable = 42


class RouterTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.router = Router(self.clock, ServerEvents(self.clock),
                             concurrency=2, queue=1)
        self.session = FakeSession()

    def test_results(self):
        r, s = self.router, self.session
        r.route(0x20, echo)
        r.route(0x21, lambda s, m: None)
        r.route(0x22, lambda s, m: 1 / 0)
        r.route(0x23, lambda s, m: "text")
        r.route(0x24, lambda s, m: succeed(b"later"))
        for t in (0x20, 0x21, 0x22, 0x23, 0x24, 0x99):
            r.dispatch(s, message(t, b"%x" % t))
        self.assertEqual(s.responses, [(b"20", b"echo:20"), (b"24", b"later")])
        self.assertEqual([(p, c) for p, c, _ in s.errors], [
            (b"22", XTMPErrorCode.APPLICATION_ERROR),
            (b"23", XTMPErrorCode.APPLICATION_ERROR),
            (b"99", XTMPErrorCode.UNKNOWN_TYPE)])
        self.assertEqual(r.stats()[0x22]["failed"], 1)
        self.assertEqual(r.unknownTypes, 1)
        self.assertEqual(r.inFlight(), 0)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_handlerErrorsKeptFromThePeer(self):
        """
        An exception's text is not sent to the peer (a generic reason;
        the traceback is logged); an ApplicationError's code and reason
        are, synchronous or from a Deferred.
        """
        from twisted.internet.defer import fail
        from muxframe.xtmp import ApplicationError
        r, s = self.router, self.session
        r.route(0x20, lambda s, m: {}["secret internal detail"])
        r.route(0x21, lambda s, m: fail(RuntimeError("db password xyz")))

        def refuse(session, message):
            raise ApplicationError("no such bundle", 0x1001)
        r.route(0x22, refuse)
        r.route(0x23, lambda s, m: fail(ApplicationError("later no")))
        for t in (0x20, 0x21, 0x22, 0x23):
            r.dispatch(s, message(t, b"%x" % t))
        self.assertEqual(s.errors, [
            (b"20", XTMPErrorCode.APPLICATION_ERROR,
             "the handler for message type 0x20 failed"),
            (b"21", XTMPErrorCode.APPLICATION_ERROR,
             "the handler for message type 0x21 failed"),
            (b"22", 0x1001, "no such bundle"),
            (b"23", XTMPErrorCode.APPLICATION_ERROR, "later no")])
        stats = r.stats()
        self.assertEqual((stats[0x20]["failed"], stats[0x22]["failed"],
                          stats[0x22]["applicationErrors"]), (1, 0, 1))
        self.assertEqual(len(self.flushLoggedErrors(KeyError, RuntimeError)),
                         2)

    def test_capQueuesThenRejects(self):
        """
        Two in flight, one queued, the fourth refused with BUSY; when one
        finishes the queued one runs.
        """
        pending = []

        def slow(session, message):
            d = Deferred()
            pending.append((d, message.payload))
            return d

        r, s = self.router, self.session
        r.route(0x30, slow)
        for n in range(4):
            r.dispatch(s, message(0x30, b"%d" % n))
        self.assertEqual([p for _, p in pending], [b"0", b"1"])
        self.assertEqual([(p, c) for p, c, _ in s.errors],
                         [(b"3", XTMPErrorCode.BUSY)])
        self.assertEqual(r.stats()[0x30]["queued"], 1)
        idle = r.whenIdle()
        pending[0][0].callback(b"r0")
        self.assertEqual([p for _, p in pending], [b"0", b"1", b"2"])
        pending[1][0].callback(b"r1")
        pending[2][0].callback(b"r2")
        self.assertEqual([x for _, x in s.responses], [b"r0", b"r1", b"r2"])
        self.assertIsNone(result(idle))
        self.assertEqual(r.inFlight(), 0)

    def test_queuedJobOfGoneSessionSkipped(self):
        pending = []
        r = self.router
        r.route(0x30, lambda s, m: pending.append(Deferred()) or pending[-1])
        gone, live = FakeSession(), FakeSession()
        r.dispatch(live, message(0x30, b"a"))
        r.dispatch(live, message(0x30, b"b"))
        r.dispatch(gone, message(0x30, b"c"))
        gone.connected = False
        pending[0].callback(b"x")
        self.assertEqual(len(pending), 2)
        self.assertEqual(r.stats()[0x30]["queued"], 0)

    def test_manyQueuedFiredDeferredsDoNotRecurse(self):
        """
        A long queue of handlers returning already-fired Deferreds drains
        in a loop (no recursion limit).
        """
        gate = Deferred()
        calls = []
        router = Router(self.clock, ServerEvents(self.clock), concurrency=1,
                        queue=5000)

        def handler(session, message):
            calls.append(1)
            return gate if len(calls) == 1 else succeed(b"ok")

        router.route(0x30, handler)
        for _ in range(3000):
            router.dispatch(self.session, message(0x30))
        gate.callback(b"first")
        self.assertEqual(len(self.session.responses), 3000)

    def test_loadByName(self):
        self.router.load([HandlerSpec(0x20, "tests.test_server_router:echo",
                                      where="handlers.0x20")])
        self.router.dispatch(self.session, message(0x20, b"x"))
        self.assertEqual(self.session.responses, [(b"x", b"echo:x")])

    def test_loadErrorsNameTheKey(self):
        for target in ("no.such.module:f", "tests.test_server_router:nothing",
                       "tests.test_server_router:notCallable"):
            e = self.assertRaises(ConfigError, importTarget, target,
                                  "handlers.0x20")
            self.assertEqual(e.key, "handlers.0x20")

    def test_designDocumentThreadsCapTypes(self):
        c = config(message_routing__bundle_handler_threads=3,
                   handlers__={0x20: "tests.test_server_router:echo",
                               0x40: "tests.test_server_router:echo"})
        self.router.load(c.handlers, c.concurrencyFor)
        self.assertEqual(self.router.routes()[0x20].gate.limit, 3)
        self.assertEqual(self.router.routes()[0x40].gate.limit, 2)


def blockingWork(session, message):
    return ("%s:%s" % (message.payload.decode(),
                       threading.current_thread().name)).encode()


class BlockingTests(TestCase):
    """
    Blocking handlers run in the router's thread pool and their result is
    the response (a real reactor, since threads report through it).
    """

    @inlineCallbacks
    def test_threadPool(self):
        router = Router(reactor, ServerEvents(reactor), threads=2)
        self.addCleanup(router.stop)
        router.route(0x20, blockingWork, blocking=True)
        session = FakeSession()
        for n in range(5):
            router.dispatch(session, message(0x20, b"%d" % n))
        self.assertLessEqual(router.inFlight(), 2)
        yield router.whenIdle()
        self.assertEqual(sorted(p for p, _ in session.responses),
                         [b"%d" % n for n in range(5)])
        for _, response in session.responses:
            self.assertIn(b"muxframe-xtmp-handlers", response)


class ServerRoutingTests(SynchronousTestCase):
    def test_handlersFromConfigThroughSessions(self):
        """
        A configured handler answers a client's request; a type without
        one is UNKNOWN_TYPE.
        """
        h = Harness(config(handlers__={"BundleSubmit":
                                       "tests.test_server_router:echo"}))
        h.server.setHandler(0x22, lambda s, m: b"set:" + m.payload)
        client, _, _ = h.connect(ALICE)
        s = client.request(0x22, b"x", timeout=5)
        d = client.request(0x20, b"b1", timeout=5)
        u = client.request(0x31, b"?", timeout=5)
        h.flush()
        self.assertEqual(result(d).payload, b"echo:b1")
        self.assertEqual(result(u).value.code, XTMPErrorCode.UNKNOWN_TYPE)
        self.assertEqual(result(s).payload, b"set:x")
