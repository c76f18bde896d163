"""
Publish/subscribe for L{muxframe.xtmp.protocol.XTMPProtocol}: the
protocol-side half of named streams (the registry is
L{muxframe.xtmp.streams.StreamRegistry}, held by the factory).

Stream names may be subjects: tokens separated by C{.}.  A local
subscription whose name has a C{*} token (any one token) or ends in a C{>}
token (one or more tokens) is a wildcard: STREAM_DATA for any matching name
reaches its callbacks, so a client subscribed through the XTMP server to
C{orders.*} sees C{orders.new} (L{subjectMatches}).  Every matching local
callback runs once per message, whichever subscription the peer delivered
it for.
"""

from muxframe.xtmp import codec
from muxframe.xtmp.codec import MessageType
from muxframe.xtmp.errors import XTMPErrorCode


def isWildcard(name):
    """
    Whether stream name C{name} has a C{*} or C{>} token.
    """
    return ("*" in name or ">" in name) and any(
        token in ("*", ">") for token in name.split("."))


def subjectMatches(pattern, subject):
    """
    Whether C{subject} matches C{pattern}: tokens are separated by C{.};
    a C{*} token matches any one token, a final C{>} token one or more.
    """
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">" and index == len(wanted) - 1:
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


class StreamsMixin:
    """
    Subscribe, Unsubscribe and STREAM_DATA handling, mixed into
    L{XTMPProtocol}.  Needs C{self.factory} (with C{streams},
    C{relayStreams}, C{publish}, C{authorizeSubscribe}), C{self.connection},
    C{self.handlers}, C{self._request}, C{self._send}, C{self._reply},
    C{self._sendError} and C{self._streamCallbackFailed} (called inside
    the C{except} clause, to log the exception).

    The receiving side's L{subscribeReceived}, L{unsubscribeReceived} and
    L{streamReceived} are the points a server overrides to route streams
    its own way (C{muxframe.server} does).

    @ivar streamCallbacks: stream name -> callables given to L{subscribe}.
    """

    _wildcardNames = ()

    def subscribeReceived(self, name, message, group=None):
        """
        The peer asks to subscribe to C{name} (in queue group C{group}, if
        given; this default treats it as a plain subscription): confirm or
        refuse with Error UNAUTHORIZED.
        """
        if self.factory.authorizeSubscribe(self, name) and \
                self.factory.streams.subscribe(name, self):
            self._reply(message, MessageType.Subscribe, b"")
        else:
            self._sendError(message, XTMPErrorCode.UNAUTHORIZED,
                            "subscription to %r refused" % (name,))

    def unsubscribeReceived(self, name, message):
        """
        The peer unsubscribes from C{name}: forget it and confirm.
        """
        self.factory.streams.unsubscribe(name, self)
        self._reply(message, MessageType.Unsubscribe, b"")

    def streamReceived(self, message):
        """
        A STREAM_DATA L{Message} arrived: run the local callbacks subscribed
        to its name (wildcards included), relay it if the factory relays
        streams, and give it to the handler of its type, if any.
        """
        # Stream data answers nothing: a failing callback or handler is
        # logged (our bug), and neither the peer nor the session suffers.
        name = message.streamName
        callbacks = list(self.streamCallbacks.get(name, ()))
        for pattern in self._wildcardNames:
            if pattern != name and subjectMatches(pattern, name):
                callbacks.extend(self.streamCallbacks.get(pattern, ()))
        for callback in callbacks:
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

    def subscribe(self, name, callback, group=None):
        """
        Subscribe to the peer's stream C{name}; C{callback(message)} gets
        every STREAM_DATA message for it (for a wildcard C{name}, for every
        matching name).  With C{group}, join that queue group: the XTMP
        server gives each message of C{name} to one member of the group.

        @return: a L{Deferred} firing when the peer confirms, or failing
            with L{PeerError} if it refuses.
        """
        self.streamCallbacks.setdefault(name, []).append(callback)
        if isWildcard(name) and name not in self._wildcardNames:
            self._wildcardNames = tuple(self._wildcardNames) + (name,)
        payload = codec.encodeName(name)
        if group is not None:
            payload += codec.encodeName(group)
        return self._request(MessageType.Subscribe, payload)

    def unsubscribe(self, name):
        """
        Stop receiving stream C{name}; returns a L{Deferred} of the peer's
        confirmation.
        """
        self.streamCallbacks.pop(name, None)
        if name in self._wildcardNames:
            self._wildcardNames = tuple(
                n for n in self._wildcardNames if n != name)
        return self._request(MessageType.Unsubscribe, codec.encodeName(name))

    def publish(self, name, payload, messageType=MessageType.EventStream,
                flags=0):
        """
        Send C{payload} on stream C{name} (a STREAM_DATA message).
        """
        self._send(messageType, payload, flags, streamName=name)
