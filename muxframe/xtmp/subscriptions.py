"""
Publish/subscribe for L{muxframe.xtmp.protocol.XTMPProtocol}: the
protocol-side half of named streams (the registry is
L{muxframe.xtmp.streams.StreamRegistry}, held by the factory).
"""

from muxframe.xtmp import codec
from muxframe.xtmp.codec import MessageType
from muxframe.xtmp.errors import XTMPErrorCode


class StreamsMixin:
    """
    Subscribe, Unsubscribe and STREAM_DATA handling, mixed into
    L{XTMPProtocol}.  Needs C{self.factory} (with C{streams},
    C{relayStreams}, C{publish}, C{authorizeSubscribe}), C{self.connection},
    C{self.handlers}, C{self._request}, C{self._send}, C{self._reply},
    C{self._sendError} and C{self._streamCallbackFailed} (called inside
    the C{except} clause, to log the exception).

    @ivar streamCallbacks: stream name -> callables given to L{subscribe}.
    """

    def _subscribeReceived(self, event):
        if self.factory.authorizeSubscribe(self, event.name) and \
                self.factory.streams.subscribe(event.name, self):
            self._reply(event.message, MessageType.Subscribe, b"")
        else:
            self._sendError(event.message, XTMPErrorCode.UNAUTHORIZED,
                            "subscription to %r refused" % (event.name,))

    def _streamData(self, message):
        # Stream data answers nothing: a failing callback or handler is
        # logged (our bug), and neither the peer nor the session suffers.
        for callback in list(self.streamCallbacks.get(message.streamName, ())):
            try:
                callback(message)
            except Exception:
                self._streamCallbackFailed(message, "callback")
        if self.factory.relayStreams:
            self.factory.publish(message.streamName, message.payload,
                                 message.type, message.flags, exclude=self)
        handler = self.handlers.get(message.type)
        if handler is not None:
            try:
                handler(self, message)
            except Exception:
                self._streamCallbackFailed(message, "handler")

    def subscribe(self, name, callback):
        """
        Subscribe to the peer's stream C{name}; C{callback(message)} gets
        every STREAM_DATA message for it.

        @return: a L{Deferred} firing when the peer confirms, or failing
            with L{PeerError} if it refuses.
        """
        self.streamCallbacks.setdefault(name, []).append(callback)
        return self._request(MessageType.Subscribe, codec.encodeName(name))

    def unsubscribe(self, name):
        """
        Stop receiving stream C{name}; returns a L{Deferred} of the peer's
        confirmation.
        """
        self.streamCallbacks.pop(name, None)
        return self._request(MessageType.Unsubscribe, codec.encodeName(name))

    def publish(self, name, payload, messageType=MessageType.EventStream,
                flags=0):
        """
        Send C{payload} on stream C{name} (a STREAM_DATA message).
        """
        self._send(messageType, payload, flags, streamName=name)
