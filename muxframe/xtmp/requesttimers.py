"""
Request timeouts: one reactor call per session, not one per request.

A reactor call costs a C{DelayedCall}, its insertion into the reactor's
heap and its cancellation, about 2.5 us, where a requester's whole request
costs 20; a pipelined client has every request's timer armed and nearly
every one cancelled.  Rules:

  - a request waiting with a timeout has an entry C{(deadline, order,
    request)} in a heap, C{order} counting up, so equal deadlines keep the
    order the requests were made in; the session's one reactor call is
    armed for the earliest deadline in the heap;
  - a request answered, failed or cancelled is marked done (its
    C{deadline} set to L{None}) and its entry left where it is: skipped
    when it reaches the top, and dropped when done entries make the heap
    longer than three times the waiting requests plus 64 (the heap is
    rebuilt), so the heap is bounded by the requests waiting;
  - when no request waits, the heap is emptied and the call cancelled;
  - when the call fires, every request whose deadline has passed is marked
    done and handed to C{expired}, earliest first; then the call is armed
    for the next deadline, if a request still waits.
"""

import heapq
from itertools import count

#: Done entries a heap may hold beyond twice its waiting requests.
_SLACK = 64


class RequestTimers:
    """
    The timeouts of one session's requests (see the module's rules).  A
    request is any object with a writable C{deadline} attribute.
    """

    def __init__(self, clock, expired):
        """
        @param clock: callable returning the C{IReactorTime} to use (looked
            up at each use: a session finds its reactor late).
        @param expired: callable(request) for a request whose deadline
            passed, already marked done.
        """
        self._clock = clock
        self._expired = expired
        self._heap = []
        self._waiting = 0
        self._order = count()
        self._call = None
        self._callAt = None

    def __len__(self):
        """
        The requests waiting.
        """
        return self._waiting

    def add(self, request, timeout):
        """
        Time C{request} out after C{timeout} seconds unless L{done} first.
        """
        reactor = self._clock()
        deadline = reactor.seconds() + timeout
        request.deadline = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), request))
        self._waiting += 1
        if self._call is None or deadline < self._callAt:
            self._arm(reactor, deadline)

    def done(self, request):
        """
        C{request} no longer waits (answered, failed, cancelled); nothing
        if it was not waiting.
        """
        if request.deadline is None:
            return
        request.deadline = None
        self._waiting -= 1
        if not self._waiting:
            self._heap = []
            self._cancel()
        elif len(self._heap) > 3 * self._waiting + _SLACK:
            self._heap = [e for e in self._heap if e[2].deadline is not None]
            heapq.heapify(self._heap)

    def _arm(self, reactor, deadline):
        self._cancel()
        self._callAt = deadline
        self._call = reactor.callLater(max(0.0, deadline - reactor.seconds()),
                                       self._due)

    def _cancel(self):
        call = self._call
        if call is not None:
            self._call = None
            if call.active():
                call.cancel()

    def _due(self):
        self._call = None
        reactor = self._clock()
        now = reactor.seconds()
        try:
            while self._waiting:
                # (self._heap afresh each time: an expiry's callbacks may
                # add, finish or rebuild.)
                heap = self._heap
                deadline, _, request = heap[0]
                if request.deadline is None:
                    heapq.heappop(heap)
                    continue
                if deadline > now:
                    break
                heapq.heappop(heap)
                request.deadline = None
                self._waiting -= 1
                self._expired(request)
        finally:
            # Armed for what still waits even if an expiry raised: the
            # others' timeouts must not depend on it.
            self._rearm(reactor)

    def _rearm(self, reactor):
        if not self._waiting:
            self._heap = []
            self._cancel()
            return
        heap = self._heap
        while heap[0][2].deadline is None:
            heapq.heappop(heap)
        deadline = heap[0][0]
        if self._call is None or deadline < self._callAt:
            self._arm(reactor, deadline)
