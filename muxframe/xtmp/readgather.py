"""
Gathering the writes XTMP sessions make while one read is handled.

A read of many messages (a pipelined client's 64 requests) makes writes on
the reading session (its answers) and on others (a server forwarding each
request to the session that serves its subject).  Through
C{transport.write} all of them leave on the next reactor turn, after the
whole read is handled, so a chain of processes runs in lockstep: each
stage waits for the previous one's whole batch (a convoy, the machine
half idle).  Sent one by one to the socket they would cost a system call
a message.

L{ReadGather} sits between the two, under these rules:

  - while a session handles a read (L{ReadGather.handling}), what any
    direct-capable session (L{muxframe.directsend.directSocket}) writes is
    gathered per session, in the order written;
  - the handling session sends what is gathered every C{EVENTS_PER_SEND}
    events (L{ReadGather.send}), so the next stage starts on the first
    messages of a read while this one handles the rest, and at the end of
    the outermost handling;
  - outside a handling (a timer, a Deferred fired later, a thread's
    result), a session's first write of a reactor turn is sent at once
    (a heartbeat probe, a lone reply: no turn's delay); what it writes
    after that in the same turn is gathered and sent as the turn ends (a
    C{callLater(0)} on the global reactor, which runs before the reactor
    next waits for events), so a burst is a few sends, not one a message;
  - a session's gathered bytes are sent at once when they reach
    C{GATHER_LIMIT}, so the gather is bounded per session;
  - while a read is handled a session may also leave what its engine
    encoded unflushed (L{ReadGather.flushLater}): it is flushed at the next
    send point, before anything gathered is sent, and by L{sendFor}; the
    session bounds what it leaves so (C{GATHER_LIMIT} bytes), so a read of
    64 requests makes one flush per session, not 64;
  - sending follows L{muxframe.directsend.sendOrWrite}: to the socket while
    the transport buffers nothing, else (and for what the kernel does not
    take) through the transport, so order and backpressure are Twisted's;
  - a session sends its gathered bytes before it closes its transport
    (L{ReadGather.sendFor}), and one that lost its connection has them
    dropped (L{ReadGather.discard}).

One gather serves the process (L{readGather}): sessions of one reactor
share the reactor's thread, and a read handled by one session writes to
others.
"""

from muxframe.directsend import sendOrWrite

#: Events a read's handling may produce before what they wrote is sent.
EVENTS_PER_SEND = 16
#: Bytes gathered for one session at which they are sent at once.
GATHER_LIMIT = 1 << 16


class ReadGather:
    """
    The writes of direct-capable sessions, gathered while a read is handled
    (see the module's rules).
    """

    def __init__(self, reactor=None):
        """
        @param reactor: what the turn's end is scheduled on (an
            C{IReactorTime}); by default the global reactor, which is the
            one driving the TCP connections this gathers for.
        """
        self._depth = 0
        # key -> [socket, transport, chunks, bytes], in first-write order.
        self._pending = {}
        # key -> its flush, for sessions whose engine holds what they sent
        # while a read was handled (flushLater), in first-call order.
        self._dirty = {}
        # Sessions that sent at once this turn, outside a handling.
        self._sentThisTurn = set()
        self._reactor = reactor
        self._turnEnd = None

    @property
    def gathering(self):
        """
        Whether a read is being handled (writes are gathered).
        """
        return self._depth > 0

    def handling(self, method, *args):
        """
        Call C{method(*args)} gathering the writes it makes; send them as
        the outermost such call returns (or raises).

        @return: what C{method} returns.
        """
        self._depth += 1
        try:
            return method(*args)
        finally:
            try:
                if self._depth == 1:
                    # Still gathering, so what the flushes write is
                    # gathered and sent below, not sent as outside a read.
                    self._flushDirty()
            finally:
                # (Even if a flush raised: the gather must not stay on.)
                self._depth -= 1
                if not self._depth:
                    self.send()

    def flushLater(self, key, flush):
        """
        While a read is handled: call C{flush()} (which writes C{key}'s
        encoded output) at the next send point instead of now; outside
        one, call it now.
        """
        if not self._depth:
            flush()
        elif key not in self._dirty:
            self._dirty[key] = flush

    def _flushDirty(self):
        # One at a time, in first-call order: a flush that raises leaves
        # the others for the next send point (the exception goes on to the
        # handling's caller, as a write raising there would).
        # (Over a list of the keys, as send: popping a dict's first key
        # again and again is quadratic.)
        dirty = self._dirty
        while dirty:
            for key in list(dirty):
                flush = dirty.pop(key, None)
                if flush is not None:
                    flush()

    def write(self, key, sock, transport, data):
        """
        Write C{data} for C{key} (a session) whose connection is
        C{transport}, with socket C{sock}: gathered while a read is
        handled; outside one, sent at once if it is the session's first
        write of the turn, else gathered until the turn ends.
        """
        if not data:
            return
        if not self._depth:
            if self._turnEnd is None:
                self._armTurnEnd()
            if key not in self._sentThisTurn and key not in self._pending:
                self._sentThisTurn.add(key)
                sendOrWrite(sock, transport, data)
                return
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = [sock, transport, [data], len(data)]
        else:
            entry[2].append(data)
            entry[3] += len(data)
        if entry[3] >= GATHER_LIMIT:
            self.sendFor(key)

    def sendFor(self, key):
        """
        Flush C{key} if it left its output for later, then send what is
        gathered for it, if anything.
        """
        flush = self._dirty.pop(key, None)
        if flush is not None:
            flush()
        entry = self._pending.pop(key, None)
        if entry is not None:
            sock, transport, chunks, _ = entry
            sendOrWrite(sock, transport,
                        chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def discard(self, key):
        """
        Drop what is gathered for C{key} (its connection is lost).
        """
        self._dirty.pop(key, None)
        self._pending.pop(key, None)
        self._sentThisTurn.discard(key)

    def send(self):
        """
        Flush the sessions that left their output for later, then send
        everything gathered, session by session in first-write order.
        """
        self._flushDirty()
        while self._pending:
            # (A list of the keys: popping the first key of a dict again
            # and again is quadratic.  A write made while sending joins its
            # session's entry, or makes a new one for the next pass.)
            for key in list(self._pending):
                self.sendFor(key)

    def _armTurnEnd(self):
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        self._turnEnd = reactor.callLater(0, self._endTurn)

    def _endTurn(self):
        self._turnEnd = None
        self._sentThisTurn.clear()
        self.send()


#: The process's gather.
readGather = ReadGather()
