"""
Message handlers for L{muxframe.xtmp.protocol.XTMPProtocol}: dispatching
application messages and answering them.

A handler's exception is the application's bug, not the peer's business:
the traceback is logged at error level and the peer gets
C{APPLICATION_ERROR} with a generic reason, unless the handler raised
L{ApplicationError}, whose reason and code are meant for the peer (as AMP's
registered errors are).  An answer that no longer fits the send buffers
ends the session with C{RATE_LIMITED} (docs/xtmp.md section 9.5).
"""

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from muxframe.xtmp import codec
from muxframe.xtmp.codec import MessageType
from muxframe.xtmp.connection import OPEN
from muxframe.xtmp.errors import (
    ApplicationError, RateLimited, SendQueueFull, SessionNotReady,
    XTMPErrorCode,
)


class HandlersMixin:
    """
    Handler dispatch and answers, mixed into L{XTMPProtocol}.  Needs
    C{self.handlers}, C{self.connection}, C{self.log}, C{self.sessionId},
    C{self._send} and C{self._fail}.
    """

    def messageReceived(self, message):
        """
        Dispatch an application L{Message} to its handler; without one,
        answer Error UNKNOWN_TYPE.  A response that answers no pending
        request (it timed out or was cancelled) is dropped (and counted in
        C{counters.unmatchedResponses}).  Override for other routing.
        """
        if message.requestSequence is not None:
            # A response no pending request awaits (it timed out or was
            # cancelled): the engine counted it in unmatchedResponses; it
            # is not a new message for a handler.
            return
        handler = self.handlers.get(message.type)
        if handler is None:
            self._sendError(message, XTMPErrorCode.UNKNOWN_TYPE,
                            "no handler for message type %#x"
                            % (message.type,))
            return
        # Called directly, not through maybeDeferred: a Deferred per
        # message would cost more than decrypting it.
        try:
            result = handler(self, message)
        except Exception:
            self._handlerFailed(Failure(), message)
            return
        if result is None:
            return
        if isinstance(result, Deferred):
            result.addCallbacks(self._handlerDone, self._handlerFailed,
                                callbackArgs=(message,),
                                errbackArgs=(message,))
        else:
            self._handlerDone(result, message)

    def _handlerDone(self, result, message):
        if result is not None and self.connection.state == OPEN:
            self._reply(message, message.type, result)

    def _handlerFailed(self, failure, message):
        error = failure.value
        if isinstance(error, ApplicationError):
            # Meant for the peer: an answer, not a fault of ours.
            code, reason = error.code, error.reason
            self.log.debug("xtmp handler for type {type:#x} answered "
                           "{code}: {reason}", type=message.type,
                           code=XTMPErrorCode.describe(code), reason=reason)
        else:
            code = XTMPErrorCode.APPLICATION_ERROR
            reason = "the handler for message type %#x failed" % (
                message.type,)
            self.log.failure("xtmp handler for type {type:#x} failed "
                             "(session {sessionId:#x})", failure,
                             LogLevel.error, type=message.type,
                             sessionId=self.sessionId)
        if self.connection.state == OPEN:
            self._sendError(message, code, reason)

    def _streamCallbackFailed(self, message, what):
        self.log.failure("xtmp stream {name!r} {what} failed (type {type:#x})",
                         Failure(), LogLevel.error, name=message.streamName,
                         what=what, type=message.type)

    def _sendError(self, message, code, reason):
        self._reply(message, MessageType.Error,
                    codec.encodeReason(code, reason))

    def _reply(self, message, messageType, payload):
        """
        Answer the peer's C{message}.  A peer whose answers no longer fit
        the send buffers sends requests faster than it reads what they
        return: that ends the session (C{RATE_LIMITED}) rather than
        growing our memory or losing answers in silence.
        """
        try:
            self._send(messageType, payload,
                       requestSequence=message.requestId)
        except SessionNotReady:
            pass
        except SendQueueFull as e:
            self._fail(RateLimited(
                "the peer's requests outrun its reading of the answers: %s"
                % (e,)))

