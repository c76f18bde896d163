"""
A stream as a Twisted transport: L{StreamTransport} behaves like a TCP
transport, so any existing protocol runs on a stream unchanged.

States of one stream as its child sees them:

  open            write, loseWriteConnection, loseConnection, abortConnection
  write-closed    after loseWriteConnection: writes are dropped
                  (writeConnectionLost once the end of stream is on the wire)
  read-closed     after the peer's end of stream (readConnectionLost for
                  IHalfCloseableProtocol children; other children have
                  loseConnection called for them, as TCP does)
  disconnected    connectionLost, exactly once: ConnectionDone when both
                  directions ended, else the StreamError or connection
                  failure that ended it
"""

from collections import deque

from zope.interface import implementer

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.python.failure import Failure

# Reasons a child's producer is paused; it resumes when none is left.
PAUSED_BY_BUFFER = 1
PAUSED_BY_TRANSPORT = 2

# Data held for a paused child is joined into buffers of up to this many
# bytes, so a flood of tiny frames costs its bytes, not an object per frame.
JOIN_LIMIT = 64 * 1024
# A held piece's deque slot, beyond the object's own size.
SLOT_COST = 8


def heldCost(item):
    """
    Return the memory a held piece of data costs, honestly: the object
    (header and payload, a bytearray's spare capacity included) and its slot.
    """
    return item.__sizeof__() + SLOT_COST


@implementer(IAddress)
class StreamAddress:
    """
    The address of one stream: the connection's address plus the stream id.

    @ivar address: the underlying connection's address (host or peer).
    @ivar streamId: the stream's id (an int for MIO, bytes for BMP).
    @ivar framing: C{"mio"} or C{"bmp"}.
    """

    __slots__ = ("address", "streamId", "framing")

    def __init__(self, address, streamId, framing):
        self.address = address
        self.streamId = streamId
        self.framing = framing

    def __eq__(self, other):
        if not isinstance(other, StreamAddress):
            return NotImplemented
        return (self.address, self.streamId, self.framing) == (
            other.address, other.streamId, other.framing
        )

    def __hash__(self):
        return hash((self.address, self.streamId, self.framing))

    def __repr__(self):
        return "StreamAddress(%r, %r, %r)" % (self.address, self.streamId, self.framing)


@implementer(ITransport, IConsumer, IPushProducer)
class StreamTransport:
    """
    The transport of one multiplexed stream.

    As on TCP, C{write()} and C{writeSequence()} accept whatever they are
    given and never raise for the amount buffered: a protocol that writes
    200 MiB at once from C{connectionMade} works unchanged.  Backpressure is
    the producer's: past C{streamBufferSize} unsent bytes a registered
    producer is paused, and resumed below half of it.  Only where the
    C{maxStreamSendBuffer} setting sets a hard limit does buffering past it
    end the stream, with L{muxframe.errors.StreamBufferOverflow} delivered
    to C{connectionLost}.  Pausing this transport (as a producer) stops the
    peer's credit for this stream only.
    """

    __slots__ = (
        "_mux", "streamId", "protocol", "connected", "disconnecting",
        "disconnected", "_writeClosed", "_readClosed", "_readPaused",
        "_pending", "_producer", "_streaming", "_pausedBy", "_discard",
        "_writeLostPending",
    )

    def __init__(self, mux, streamId, protocol=None):
        self._mux = mux
        self.streamId = streamId
        self.protocol = protocol
        self.connected = True
        self.disconnecting = False
        self.disconnected = False
        self._writeClosed = False
        self._readClosed = False
        self._readPaused = False
        self._pending = None
        self._producer = None
        self._streaming = False
        self._pausedBy = 0
        self._discard = False
        self._writeLostPending = False

    def __repr__(self):
        return "<StreamTransport %s %r>" % (self._mux.framing, self.streamId)

    # -- ITransport -----------------------------------------------------

    def write(self, data):
        """
        Send C{data} (bytes) on this stream.
        """
        if type(data) is not bytes:
            if not isinstance(data, bytes):
                raise TypeError(
                    "Data must be bytes, not %s" % (type(data).__name__,)
                )
            data = bytes(data)
        if self._writeClosed or self.disconnected or not data:
            return
        self._mux._streamWrite(self, data)

    def writeSequence(self, data):
        """
        Send each of C{data}'s byte strings on this stream.
        """
        data = list(data)
        for item in data:
            if not isinstance(item, bytes):
                raise TypeError(
                    "Data must be bytes, not %s" % (type(item).__name__,)
                )
        if self._writeClosed or self.disconnected:
            return
        joined = b"".join(data)
        if joined:
            self._mux._streamWrite(self, joined)

    def loseConnection(self):
        """
        Send what is buffered, end this side of the stream and stop
        delivering data; C{connectionLost(ConnectionDone)} follows once the
        peer has ended its side too.
        """
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self._discard = True
        self._dropPending()
        if not self._writeClosed:
            self._writeClosed = True
            self._mux._streamEnd(self)

    def loseWriteConnection(self):
        """
        Half-close: send what is buffered, then the end of stream; reading
        goes on.  An L{IHalfCloseableProtocol} child is told
        C{writeConnectionLost} once the end is sent.
        """
        if self._writeClosed or self.disconnected:
            return
        self._writeClosed = True
        self._writeLostPending = True
        self._mux._streamEnd(self)

    def abortConnection(self):
        """
        Reset the stream now, discarding buffered data; the peer's child sees
        a non-clean C{connectionLost}, this child C{ConnectionAborted}.
        """
        if self.disconnected:
            return
        self._resetLocally()
        self._mux._streamAbort(self)

    def getPeer(self):
        """
        Return the L{StreamAddress} of the peer's end of this stream.
        """
        return StreamAddress(self._mux.transport.getPeer(), self.streamId, self._mux.framing)

    def getHost(self):
        """
        Return the L{StreamAddress} of this end of the stream.
        """
        return StreamAddress(self._mux.transport.getHost(), self.streamId, self._mux.framing)

    # -- IConsumer ------------------------------------------------------

    def registerProducer(self, producer, streaming):
        """
        Register a producer of this stream's outgoing data; it is paused
        while the stream's buffer is full or the connection cannot write.
        """
        if self._producer is not None:
            raise RuntimeError(
                "Cannot register producer %s, because producer %s was never "
                "unregistered." % (producer, self._producer)
            )
        if self.disconnected:
            producer.stopProducing()
            return
        if not streaming:
            from twisted.internet._producer_helpers import _PullToPush
            producer = _PullToPush(producer, self)
        self._producer = producer
        self._streaming = streaming
        self._mux._producers.add(self)
        if self._mux._transportPaused:
            self._pausedBy |= PAUSED_BY_TRANSPORT
        if self._mux.engine.sendBuffered(self.streamId) >= self._mux.settings.streamBufferSize:
            self._pausedBy |= PAUSED_BY_BUFFER
            self._mux._bufferPaused.add(self)
        if self._pausedBy:
            producer.pauseProducing()
        if not streaming:
            producer.startStreaming()

    def unregisterProducer(self):
        """
        Forget the registered producer.
        """
        producer = self._producer
        if producer is None:
            return
        self._producer = None
        self._pausedBy = 0
        self._mux._producers.discard(self)
        self._mux._bufferPaused.discard(self)
        if not self._streaming:
            producer.stopStreaming()

    # -- IPushProducer (the stream's incoming data) ---------------------

    def pauseProducing(self):
        """
        Stop delivering data to the child; the peer's credit for this
        stream is withheld until L{resumeProducing}.
        """
        self._readPaused = True

    def resumeProducing(self):
        """
        Deliver held data and resume returning credit.
        """
        if not self._readPaused:
            return
        self._readPaused = False
        if self._pending:
            self._mux._deliverPending(self)

    def stopProducing(self):
        """
        The consumer of this stream's data gave up: close the stream.
        """
        self.loseConnection()

    # -- called by the Multiplexer --------------------------------------

    def _resetLocally(self):
        # This side ended the stream: writes are dropped from now on, and
        # connectionLost follows.
        self._writeClosed = True
        self.disconnecting = True

    def _pauseProducer(self, reason):
        was = self._pausedBy
        self._pausedBy = was | reason
        if not was and self._producer is not None:
            self._producer.pauseProducing()

    def _unpauseProducer(self, reason):
        was = self._pausedBy
        self._pausedBy = was & ~reason
        if was and not self._pausedBy and self._producer is not None:
            self._producer.resumeProducing()

    def _hold(self, item):
        """
        Keep C{item} (data, or the end or close marker) for when the child
        reads again; return the memory it costs (0 for markers).  Small
        pieces of data are joined.
        """
        pending = self._pending
        if pending is None:
            pending = self._pending = deque()
        if type(item) is not bytes:
            pending.append(item)
            return 0
        size = len(item)
        if pending and size < JOIN_LIMIT:
            last = pending[-1]
            if type(last) is bytearray and len(last) + size <= JOIN_LIMIT:
                before = last.__sizeof__()
                last += item
                return last.__sizeof__() - before
        if size < JOIN_LIMIT // 2:
            item = bytearray(item)
        pending.append(item)
        return heldCost(item)

    def _heldBytes(self):
        """
        Return how many bytes of data are held for the child.
        """
        pending = self._pending
        if not pending:
            return 0
        return sum(len(item) for item in pending if type(item) in (bytes, bytearray))

    def _dropPending(self):
        pending = self._pending
        if pending:
            size = cost = 0
            keep = deque()
            for item in pending:
                if type(item) in (bytes, bytearray):
                    size += len(item)
                    cost += heldCost(item)
                else:
                    keep.append(item)
            self._pending = keep
            self._mux._released(self, size, cost)

    def _readEnded(self):
        if self._readClosed:
            return
        self._readClosed = True
        protocol = self.protocol
        if self.disconnecting:
            return
        if IHalfCloseableProtocol.providedBy(protocol):
            protocol.readConnectionLost()
        else:
            self.loseConnection()

    def _writeEnded(self):
        self._writeLostPending = False
        if not self.disconnected and IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.writeConnectionLost()

    def _lost(self, reason):
        if self.disconnected:
            return
        self.disconnected = True
        self.connected = False
        self.disconnecting = False
        self._writeClosed = True
        self._pending = None
        producer = self._producer
        if producer is not None:
            self.unregisterProducer()
            producer.stopProducing()
        protocol = self.protocol
        self.protocol = None
        if protocol is not None:
            protocol.connectionLost(reason)


def closedReason(error):
    """
    Return the C{connectionLost} reason for a stream that ended with
    C{error} (C{None} for a clean end).
    """
    if error is None:
        return Failure(ConnectionDone())
    return Failure(error)


def abortedReason():
    """
    Return the C{connectionLost} reason for a stream this side aborted.
    """
    return Failure(ConnectionAborted())
