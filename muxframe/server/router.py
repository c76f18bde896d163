"""
The router: application messages to handlers, by message type.

A handler is C{handler(session, message)} (a L{ServerSession} and a
L{muxframe.xtmp.Message}).  It returns bytes (the response), a Deferred
firing with bytes or None, or None (no response).  Raising
L{ApplicationError} (or a Deferred failing with one) answers Error with its
code and reason, meant for the peer; raising anything else answers Error
APPLICATION_ERROR with a generic reason, the traceback logged at error
level (docs/xtmp.md section 9.7).  The server's own handlers raise
L{Refusal}s, answered with their code and reason like ApplicationError.
A message of a type without a handler is answered Error UNKNOWN_TYPE.

Blocking handlers (C{blocking=True}) run in a bounded thread pool
(C{threads}); they must not touch the session or the reactor except
through C{reactor.callFromThread}: return the response instead.

Each type has a L{ConcurrencyGate}: at most C{concurrency} messages of
that type are being handled at once (a handler that returns at once holds
its slot only while it runs; one returning a Deferred, or running in a
thread, until it is done); up to C{queue} more wait in arrival order; a
message beyond that is answered Error BUSY.  Nothing grows without bound.
"""

import importlib

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from muxframe.server.errors import ConfigError, Refusal
from muxframe.server.limits import ConcurrencyGate
from muxframe.server.measures import Histogram
from muxframe.xtmp.codec import MessageType
from muxframe.xtmp.errors import ApplicationError, XTMPErrorCode


def importTarget(target, where):
    """
    Import C{"package.module:attribute"}; raise L{ConfigError} naming
    C{where} if it cannot be imported or is not callable.
    """
    moduleName, _, attribute = target.partition(":")
    try:
        obj = importlib.import_module(moduleName)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except Exception as e:
        raise ConfigError(where, "cannot import %s: %s: %s"
                          % (target, type(e).__name__, e))
    if not callable(obj):
        raise ConfigError(where, "%s is not callable" % (target,))
    return obj


def typeName(messageType):
    """
    C{"BundleSubmit (0x20)"}, or C{"0x80"} for unnamed types.
    """
    try:
        return "%s (%#04x)" % (MessageType(messageType).name, messageType)
    except ValueError:
        return "%#04x" % (messageType,)


class _Outcome:
    """
    A Deferred's result, taken at once if it has one (so a queue of
    handlers returning fired Deferreds is a loop, not a recursion), or
    passed on to C{then} when it comes.
    """

    __slots__ = ("ready", "value", "then")

    def __init__(self):
        self.ready = False
        self.value = self.then = None

    def set(self, value):
        if self.then is not None:
            finish, route, session, message, start = self.then
            finish(value, route, session, message, start)
        else:
            self.ready, self.value = True, value


class Route:
    """
    The handler of one message type and its gate and counters.
    """

    __slots__ = ("messageType", "handler", "blocking", "gate", "counters")

    def __init__(self, messageType, handler, blocking, concurrency, queue):
        self.messageType = messageType
        self.handler = handler
        self.blocking = blocking
        self.gate = ConcurrencyGate(concurrency, queue)
        self.counters = {"received": 0, "responded": 0, "failed": 0,
                         "applicationErrors": 0, "rejected": 0,
                         "queuedTotal": 0}


class Router:
    """
    Handlers per message type, with per-type concurrency caps and a
    thread pool for blocking handlers.

    @param events: the server's L{ServerEvents}.

    @ivar latency: a L{Histogram} of handling times in seconds, from a
        message's dispatch (queueing included) to its handler's outcome.
    """

    def __init__(self, reactor, events, threads=8, concurrency=100,
                 queue=1000):
        self.reactor = reactor
        self.events = events
        self.threads = threads
        self.concurrency = concurrency
        self.queue = queue
        self.unknownTypes = 0
        self.latency = Histogram()
        self._routes = {}
        self._pool = None
        self._idle = []

    def route(self, messageType, handler, blocking=False, concurrency=None,
              queue=None):
        """
        Send messages of C{messageType} to C{handler}, replacing any
        handler it had.  C{concurrency} and C{queue} default to the
        router's (for a blocking handler, C{concurrency} defaults to the
        thread count).
        """
        if concurrency is None:
            concurrency = self.threads if blocking else self.concurrency
        if queue is None:
            queue = self.queue
        self._routes[int(messageType)] = Route(
            int(messageType), handler, blocking, concurrency, queue)
        if blocking and concurrency > self.threads:
            self.threads = concurrency
            if self._pool is not None:
                self._pool.adjustPoolsize(maxthreads=concurrency)

    def load(self, specs, concurrencyFor=lambda messageType: None):
        """
        Route every L{HandlerSpec} of a configuration, importing its
        target (L{ConfigError} naming its key if that fails).
        C{concurrencyFor(type)} gives a default cap for a type.
        """
        for spec in specs:
            handler = importTarget(spec.target, spec.where)
            concurrency = spec.concurrency
            if concurrency is None:
                concurrency = concurrencyFor(spec.messageType)
            self.route(spec.messageType, handler, spec.blocking,
                       concurrency, spec.queue)

    def routes(self):
        """
        C{{type: Route}}.
        """
        return dict(self._routes)

    def dispatch(self, session, message):
        """
        Hand C{message} from C{session} to its handler, or queue it, or
        answer it with an Error.
        """
        route = self._routes.get(message.type)
        if route is None:
            self.unknownTypes += 1
            session.respondError(message, XTMPErrorCode.UNKNOWN_TYPE,
                                 "no handler for message type %#x"
                                 % (message.type,))
            return
        route.counters["received"] += 1
        start = self.reactor.seconds()
        verdict = route.gate.admit((session, message, start))
        if verdict == ConcurrencyGate.RUN:
            self._run(route, session, message, start)
        elif verdict == ConcurrencyGate.QUEUED:
            route.counters["queuedTotal"] += 1
        else:
            route.counters["rejected"] += 1
            self.events.emit(
                "handler_busy", "{type} at its concurrency cap and queue; "
                "refused with {codeName} (session {sessionId:#x})",
                code=XTMPErrorCode.BUSY, type=typeName(message.type),
                sessionId=session.sessionId)
            session.respondError(message, XTMPErrorCode.BUSY,
                                 "%s: too many messages in progress"
                                 % (typeName(message.type),))

    def _run(self, route, session, message, start):
        while True:
            if session.isConnected():
                result = self._call(route, session, message)
                if isinstance(result, Deferred):
                    outcome = _Outcome()
                    result.addBoth(outcome.set)
                    if not outcome.ready:
                        # Finish later; the slot stays held until then.
                        outcome.then = (self._finished, route, session,
                                        message, start)
                        return
                    result = outcome.value
                self._respond(route, session, message, result, start)
            job = route.gate.release()
            if job is None:
                self._checkIdle()
                return
            session, message, start = job

    def _call(self, route, session, message):
        if route.blocking:
            return deferToThreadPool(self.reactor, self._threadPool(),
                                     route.handler, session, message)
        try:
            return route.handler(session, message)
        except Exception:
            return Failure()

    def _finished(self, result, route, session, message, start):
        self._respond(route, session, message, result, start)
        job = route.gate.release()
        if job is not None:
            self._run(route, *job)
        else:
            self._checkIdle()

    def _respond(self, route, session, message, result, start):
        self.latency.observe(self.reactor.seconds() - start)
        if isinstance(result, Failure):
            error = result.value
            if isinstance(error, (ApplicationError, Refusal)):
                # Meant for the peer: an answer, not a fault of ours.
                route.counters["applicationErrors"] += 1
                if session.isConnected():
                    session.respondError(message, error.code, error.reason)
                return
            # Our bug: the traceback is logged, and nothing of the
            # exception reaches the peer (as XTMPProtocol's handlers).
            route.counters["failed"] += 1
            self.events.emit(
                "handler_failed", "handler for {type} failed: {error}",
                level=LogLevel.error, type=typeName(message.type),
                error=result.getErrorMessage(), log_failure=result,
                code=XTMPErrorCode.APPLICATION_ERROR)
            if session.isConnected():
                session.respondError(
                    message, XTMPErrorCode.APPLICATION_ERROR,
                    "the handler for message type %#x failed"
                    % (message.type,))
            return
        if result is None:
            return
        if not isinstance(result, (bytes, bytearray, memoryview)):
            route.counters["failed"] += 1
            if session.isConnected():
                session.respondError(
                    message, XTMPErrorCode.APPLICATION_ERROR,
                    "handler returned %s, not bytes" % (type(result).__name__,))
            return
        route.counters["responded"] += 1
        if session.isConnected():
            session.respond(message, bytes(result))

    def dropSession(self, session):
        """
        Forget the queued messages of C{session} (it ended).
        """
        for route in self._routes.values():
            route.gate.drop(lambda job: job[0] is session)

    # -- lifecycle ---------------------------------------------------------

    def _threadPool(self):
        if self._pool is None:
            self._pool = ThreadPool(0, self.threads, "muxframe-xtmp-handlers")
            self._pool.start()
        return self._pool

    def inFlight(self):
        """
        Messages being handled now, over every type.
        """
        return sum(r.gate.inFlight for r in self._routes.values())

    def whenIdle(self):
        """
        A Deferred firing when no message is being handled.
        """
        if not self.inFlight():
            return succeed(None)
        d = Deferred()
        self._idle.append(d)
        return d

    def _checkIdle(self):
        if self._idle and not self.inFlight():
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def stop(self):
        """
        Stop the thread pool (waits for running blocking handlers).
        """
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def stats(self):
        """
        Per-type counters: C{{type: {received, responded, failed,
        rejected, queuedTotal, inFlight, queued}}}.
        """
        out = {}
        for t, route in self._routes.items():
            row = dict(route.counters)
            row["inFlight"] = route.gate.inFlight
            row["queued"] = route.gate.queued
            out[t] = row
        return out
