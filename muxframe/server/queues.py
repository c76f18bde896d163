"""
The queue messages of the XTMP server (C{docs/presence-and-queues.md}
section 9): sending to an entity with a durable "sent" answer, each bound
device's queue pushed to it in order, acknowledgements and receipts.

Rules:

  - A Message (0x56) to entity R from device D of entity S is appended,
    in one durable step (one group commit), to R's queue and, as a copy
    for S's devices (no receipts), to S's queue; only then does the
    sender get its answer, a Signal (0x57) SENT naming both offsets.  A
    resend with the same id from the same device stores nothing and gets
    the same offsets (C{duplicate} set): the sender resends until it has
    the answer.  The record stored is the Message as the server rebuilt
    it (C{from} the bound device, C{to} R, the client's id, payload and
    encryption fields), so a push is the stored bytes plus the fields of
    the record (offset, timestamp, signal type).
  - Each bound session gets its device's queue from one past its
    delivered position, in offset order: MESSAGE records as Message
    pushes, RECEIPT records as Signal pushes.  At most
    C{storage.delivery_window} records (and about a MiB) are sent and
    not yet acknowledged; acknowledgements (Signal ACK with delivered or
    read, of the record's C{signal_offset}) open the window again.  A
    Signal RESUME (or a Bind again) sends everything again from the
    durable position, whatever a fetch in flight then finds.
    What a session was sent but did not acknowledge is sent again to the
    device's next session: the client drops offsets it already gave its
    application (exactly once to the application).
  - An acknowledgement is not answered unless it fails (Error
    BAD_REQUEST: an offset never handed out, past the pending window).
  - The Messages of one reactor turn, from every session, are appended
    together: one L{IQueueStore.appendMany} (one durable step, one
    Deferred) for all of them, each answered when it is durable.  Each
    is checked first, so one bad message fails only itself; so does one
    to an entity without a queue when the engine keeps C{max_queues}
    (BUSY: the engine refuses that message's records alone, and stores
    the turn's others in the same step, in order); a storage failure
    fails the turn's messages (those stored before it are deduplicated
    when their senders resend).
  - Any bound session may send to any entity name (1 to 255 bytes):
    there are no per-recipient permissions.  What bounds the queues such
    names make is the engine's C{max_queues} and retention.
"""

from twisted.internet.defer import Deferred

from muxframe.logthrottle import logger
from muxframe.engines import logformat
from muxframe.engines.errors import EngineUsageError
from muxframe.engines.model import (
    Address, QueueMessage, ReceiptKind, RecordKind, checkName)
from muxframe.messaging import wire
from muxframe.messaging.wire import (
    ACK, DEVICE, INT32, INT64, PUSH, RECEIVER, RESPONSE, RESUME, SENDER, UINT64,
    StanzaType, encodeField)
from muxframe.server.errors import Refusal
from muxframe.server.storage import logEngineFailure, raiseRefusal, refusalFor
from muxframe.server.turnbatch import TurnBatch
from muxframe.xtmp.errors import XTMPErrorCode

log = logger("muxframe.server.queues")

_PUSH_TAIL = encodeField(14, INT32, PUSH)
_AS_DEVICE = encodeField(12, INT32, DEVICE)
_AS_RECEIVER = encodeField(12, INT32, RECEIVER)
_LIFECYCLE = {ReceiptKind.DELIVERED: "delivered", ReceiptKind.READ: "read"}
#: Bytes sent and not acknowledged per session, at most (beyond one record).
WINDOW_BYTES = 1 << 20
_FETCH = 100


def storedMessage(request, sender, to):
    """
    The bytes stored for a client's Message C{request}: its id, payload
    and encryption fields, with C{from} the bound L{Address} C{sender}.
    """
    return wire.Message(
        id=request.id, from_=wire.Identity(eid=sender.entity, device=sender.device or None),
        to=wire.Identity(eid=to), payload=request.payload,
        encryption_type=request.encryption_type, encrypted=request.encrypted,
        signature=request.signature, owner=request.owner).encode()


def messagePush(record, holder):
    """
    The Message push (bytes) of a MESSAGE record of C{holder}'s queue.
    """
    own = record.sender is not None and record.sender.entity == holder
    return b"".join((record.payload, encodeField(2, UINT64, record.offset),
                     encodeField(7, INT64, record.timestamp),
                     _AS_DEVICE if own else _AS_RECEIVER, _PUSH_TAIL))


def receiptPush(record, holder):
    """
    The Signal push (bytes) of a RECEIPT record of C{holder}'s queue.
    """
    receipt = record.receipt
    kind = receipt.kind
    return wire.Signal(
        id=receipt.messageId, signal_offset=record.offset, user_offset=receipt.offset,
        status=ACK, timestamp=record.timestamp,
        from_=wire.Identity(eid=receipt.entity, device=receipt.device or None),
        to=wire.Identity(eid=holder), type=RESPONSE, signal_type=SENDER,
        signal_lifecycle_state=_LIFECYCLE.get(kind, "delivered"),
        signal_ack_state=wire.SignalAckState(delivered=kind == ReceiptKind.DELIVERED,
                                             read=kind == ReceiptKind.READ),
        signal_request=PUSH).encode()


class DevicePump:
    """
    Sends one bound session its device's queue in order, within the
    window.
    """

    def __init__(self, handlers, binding, window):
        self.handlers = handlers
        self.binding = binding
        self.window = window
        self.cursor = None
        self.known = 0
        self.probe = False
        self.unacked = {}
        self.unackedBytes = 0
        self.fetching = False
        self.stopped = False
        self._retry = None
        self._asked = 0
        #: Bumped by every L{start}: a fetch begun before it is stale.
        self.generation = 0

    def start(self, position):
        """
        Send from one past C{position.delivered}; what a fetch in flight
        finds is dropped (it began at the old cursor).
        """
        self.generation += 1
        self.cursor = position.delivered + 1
        # One fetch whatever is known: records appended before the queue
        # watch began are found too.
        self.probe = True
        self.known = max(self.known, position.nextOffset - 1)
        self.unacked.clear()
        self.unackedBytes = 0
        self.pump()

    def appended(self, lastOffset):
        """
        Records up to C{lastOffset} are durable in the queue.
        """
        if lastOffset > self.known:
            self.known = lastOffset
        self.pump()

    def acknowledged(self, offset):
        """
        The session acknowledged C{offset}.
        """
        size = self.unacked.pop(offset, None)
        if size is not None:
            self.unackedBytes -= size
            self.pump()

    def pump(self):
        """
        Fetch and send what the window allows.
        """
        if self.stopped or self.fetching or self.cursor is None or self._retry:
            return
        room = self.window - len(self.unacked)
        if room <= 0 or (self.cursor > self.known and not self.probe) or (
                self.unacked and self.unackedBytes >= WINDOW_BYTES):
            return
        self.fetching = True
        self.probe = False
        engine = self.handlers.storage.engine.queues
        self._asked = min(room, _FETCH)
        d = engine.fetch(self.binding.entity, self.cursor, self._asked, WINDOW_BYTES)
        d.addCallbacks(self._fetched, self._failed, callbackArgs=(self.generation,),
                       errbackArgs=(self.generation,))

    def _fetched(self, records, generation):
        self.fetching = False
        if self.stopped:
            return
        if generation != self.generation:
            # Started again meanwhile (RESUME, a Bind again): fetch from
            # the new cursor.
            self.probe = True
            self.pump()
            return
        holder = self.binding.entity
        session = self.binding.session
        for record in records:
            if record.offset < self.cursor:
                continue
            if record.kind == RecordKind.RECEIPT:
                messageType, payload = StanzaType.Signal, receiptPush(record, holder)
            else:
                messageType, payload = StanzaType.Message, messagePush(record, holder)
            if not session.isConnected():
                return
            try:
                session.send(messageType, payload)
            except Exception as e:
                # The session's buffers are full: try again shortly.
                log.debug("queue push to {entity}/{device} deferred: {error}",
                          entity=holder, device=self.binding.device, error=e)
                self._retry = self.handlers.storage.reactor.callLater(0.1, self._again)
                return
            self.unacked[record.offset] = len(payload)
            self.unackedBytes += len(payload)
            self.cursor = record.offset + 1
        if records:
            self.known = max(self.known, records[-1].offset)
            # A full batch: there may be more than the watch told of.
            self.probe = len(records) >= self._asked
            self.pump()

    def _again(self):
        self._retry = None
        self.pump()

    def _failed(self, failure, generation):
        self.fetching = False
        logEngineFailure(log, failure, "queue fetch for {entity} failed",
                         entity=self.binding.entity)
        if not self.stopped and self._retry is None:
            self._retry = self.handlers.storage.reactor.callLater(1.0, self._again)

    def stop(self):
        """
        The session ended.
        """
        self.stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None


class QueueHandlers:
    """
    The queue stanzas on a L{Storage}.
    """

    def __init__(self, storage):
        self.storage = storage
        self.counters = dict.fromkeys(["sent", "duplicates", "acknowledged",
                                       "resumes", "batches"], 0)
        # Every Message of a reactor turn is stored in one appendMany; one
        # to an entity without a queue when no more can be made fails
        # alone (each Message's records are one of the batch's groups).
        self._batch = TurnBatch(storage.reactor, lambda: self._engine.appendMany,
                                onBatch=self._batched)

    def routes(self):
        """
        C{{stanza type: handler(session, message)}}.
        """
        return {StanzaType.Message: self.message, StanzaType.Signal: self.signal}

    @property
    def _engine(self):
        return self.storage.engine.queues

    # -- bindings --------------------------------------------------------------

    def started(self, binding, position):
        """
        C{binding} is ready: its pump starts once the Bind is answered.
        """
        binding.pump = DevicePump(self, binding, self.storage.deliveryWindow)

    def resume(self, binding, position):
        """
        Send C{binding}'s device its queue from C{position}.
        """
        if binding.pump is not None and not binding.pump.stopped:
            binding.pump.start(position)

    def stopped(self, binding):
        """
        C{binding}'s session ended.
        """
        if binding.pump is not None:
            binding.pump.stop()

    def appended(self, entity, lastOffset):
        """
        A queue watch: C{entity}'s queue has durable records up to
        C{lastOffset}.
        """
        for binding in self.storage.bindingsOf(entity):
            if binding.pump is not None:
                binding.pump.appended(lastOffset)

    # -- sending ---------------------------------------------------------------

    def message(self, session, message):
        """
        Message (0x56): append to the recipient's queue and the sender's,
        then answer Signal SENT.
        """
        binding = self.storage.bound(session)
        try:
            request = wire.Message.decode(message.payload)
        except wire.WireError as e:
            raise Refusal(str(e), XTMPErrorCode.BAD_REQUEST)
        self.storage.checkFrom(binding, request.from_)
        if request.to is None or not request.to.eid:
            raise Refusal("a Message needs to.eid", XTMPErrorCode.BAD_REQUEST)
        if not request.id:
            raise Refusal("a Message needs an id (the sender's, for deduplication)",
                          XTMPErrorCode.BAD_REQUEST)
        try:
            self._enqueue(request.to.eid, request, Address(binding.entity, binding.device),
                          self._sent, self._notSent, (session, message, request, binding))
        except EngineUsageError as e:
            raise Refusal(str(e), XTMPErrorCode.BAD_REQUEST)
        # Answered when durable; the router's slot is free at once.
        return None

    def send(self, to, request, sender):
        """
        Append a wire Message C{request} from L{Address} C{sender} to
        C{to}'s queue and (a copy) to the sender's; a Deferred firing with
        C{(recipient's Appended, sender's Appended)} once both are durable.
        Server code may call it with C{sender} any entity's device.
        """
        d = Deferred()
        try:
            self._enqueue(to, request, sender, lambda pair: d.callback(pair),
                          lambda failure: d.errback(failure), ())
        except EngineUsageError:
            d.errback()
        return d

    def _enqueue(self, to, request, sender, done, failed, args):
        # Checked here, so that a bad message fails alone, not the batch.
        checkName(to, "entity")
        checkName(request.id, "message id")
        stored = storedMessage(request, sender, to)
        if len(stored) > logformat.MAX_PAYLOAD:
            raise EngineUsageError("message of %d bytes (at most %d)" % (
                len(stored), logformat.MAX_PAYLOAD))
        items = [(to, QueueMessage(request.id, stored, sender, not request.no_receipts))]
        if to != sender.entity:
            items.append((sender.entity, QueueMessage(request.id, stored, sender, False)))
        self._batch.add(items, done, failed, args)

    def _batched(self, d):
        self.counters["batches"] += 1
        self.storage.track(d)

    def flushNow(self):
        """
        Append what waits for the end of the reactor turn now.
        """
        self._batch.flush()

    def _notSent(self, failure, session, message, request, binding):
        refusal = refusalFor(failure)
        if session.isConnected():
            session.respondError(message, refusal.code, refusal.reason)

    def _sent(self, appended, session, message, request, binding):
        recipient, copy = appended
        self.counters["duplicates" if recipient.duplicate else "sent"] += 1
        if session.isConnected():
            session.respond(message, wire.Signal(
                id=request.id, signal_offset=recipient.offset, user_offset=copy.offset,
                status=ACK, timestamp=recipient.timestamp,
                from_=binding.identity(), to=wire.Identity(eid=request.to.eid),
                type=RESPONSE, signal_type=SENDER, signal_lifecycle_state="sent",
                signal_ack_state=wire.SignalAckState(send=True), signal_request=PUSH,
                duplicate=recipient.duplicate).encode(), messageType=StanzaType.Signal)
        return None

    # -- acknowledgements --------------------------------------------------------

    def signal(self, session, message):
        """
        Signal (0x57): acknowledge a record (ACK with delivered or read) or
        ask for everything again (RESUME).
        """
        binding = self.storage.bound(session)
        try:
            request = wire.Signal.decode(message.payload)
        except wire.WireError as e:
            raise Refusal(str(e), XTMPErrorCode.BAD_REQUEST)
        self.storage.checkFrom(binding, request.from_)
        if request.status == RESUME:
            self.counters["resumes"] += 1
            d = self._engine.position(binding.entity, binding.device)
            d.addCallbacks(lambda position: self.resume(binding, position), raiseRefusal)
            return d.addCallback(lambda _: None)
        if request.status != ACK:
            raise Refusal("signal status must be 1 (ACK) or 7 (RESUME), not %d"
                          % (request.status,), XTMPErrorCode.BAD_REQUEST)
        state = request.signal_ack_state
        if state is not None and state.read:
            kind = ReceiptKind.READ
        elif state is not None and state.delivered:
            kind = ReceiptKind.DELIVERED
        else:
            raise Refusal("an acknowledgement needs signal_ack_state delivered or read",
                          XTMPErrorCode.BAD_REQUEST)
        offset = request.signal_offset
        if binding.pump is not None:
            binding.pump.acknowledged(offset)
        self.counters["acknowledged"] += 1
        d = self._engine.acknowledge(binding.entity, binding.device, offset, kind)
        return d.addCallbacks(lambda _: None, raiseRefusal)

    def stats(self):
        """
        The queue counters.
        """
        return dict(self.counters)
