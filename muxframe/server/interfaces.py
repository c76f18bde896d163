"""
The seams of the XTMP server, as zope interfaces.

Operator tools (an admin HTTP API, Prometheus metrics, a command line)
read and act through L{ISessionRegistry}, L{IServerEvents} and the
C{counters} of the broker and router, never through private state.
Cross-process fan-out (a Redis engine) plugs in as an L{IBrokerEngine}
under the local L{IBroker}.
"""

from zope.interface import Attribute, Interface


class ISession(Interface):
    """
    A live, authenticated session as the registry shows it.
    """

    sessionId = Attribute("The 64-bit session id.")
    peer = Attribute("The peer's address as text (host:port, or what the "
                     "transport gives).")
    source = Attribute("The source address limits are counted by (host).")
    identity = Attribute("The L{SessionIdentity} it authenticated as.")
    connectedAt = Attribute("When its handshake completed (seconds, the "
                            "reactor's clock).")
    lastActivity = Attribute("When it last sent or received an application "
                             "message.")
    rtt = Attribute("Heartbeat round-trip time in seconds, or None.")
    counters = Attribute("A dict of its message and byte counters.")

    def subscriptions():
        """
        The subject patterns (with queue groups) it is subscribed to: a
        list of C{(pattern, group or None)}.
        """

    def disconnect(code, reason):
        """
        Close it: Error (for a failure code) and Disconnect with C{code}
        and C{reason}.
        """


class ISessionRegistry(Interface):
    """
    Every live session of one server.
    """

    def __len__():
        """
        The number of live sessions.
        """

    def list(identity=None):
        """
        The live L{ISession}s, oldest first; with C{identity}, only those
        whose identity name or fingerprint is it.
        """

    def get(sessionId):
        """
        The L{ISession} with C{sessionId}, or None.
        """

    def disconnect(sessionId, code, reason):
        """
        Disconnect a session; return whether it was live.
        """

    def describe(session):
        """
        A JSON-ready dict of C{session}: id, peer, identity, connectedAt,
        lastActivity, rtt, counters, subscriptions.
        """

    def addObserver(observer):
        """
        Call C{observer.sessionAdded(session)} and
        C{observer.sessionRemoved(session, reason)} from now on (an
        L{IRegistryObserver}).
        """

    def removeObserver(observer):
        """
        Stop calling C{observer}.
        """


class IRegistryObserver(Interface):
    """
    Told when sessions come and go.
    """

    def sessionAdded(session):
        """
        C{session} completed its handshake.
        """

    def sessionRemoved(session, reason):
        """
        C{session} ended; C{reason} is the exception it ended with.
        """


class IServerEvents(Interface):
    """
    The server's notable events (defences, slow consumers, reloads),
    counted by name and passed to observers as they happen.
    """

    counts = Attribute("A dict: event name -> how many so far.")

    def addObserver(observer):
        """
        Call C{observer(name, fields)} for every event from now on.
        """

    def removeObserver(observer):
        """
        Stop calling C{observer}.
        """


class IBroker(Interface):
    """
    Subjects between sessions: subscriptions, publishing, queue groups,
    broadcast and request/reply, on one server process.
    """

    counters = Attribute("A dict of the broker's counters.")

    def subscribe(session, pattern, group=None):
        """
        Subscribe C{session} to C{pattern} (in queue group C{group});
        raise a L{muxframe.server.errors.Refusal} to refuse.
        """

    def unsubscribe(session, pattern):
        """
        Remove C{session}'s subscriptions to C{pattern}.
        """

    def removeSession(session):
        """
        C{session} ended: drop its subscriptions.
        """

    def publish(subject, payload, messageType, flags=0, origin=None):
        """
        Deliver C{payload} on C{subject} to its subscribers; return how
        many sessions it was queued for on this process.
        """

    def broadcast(payload, messageType, subject="broadcast"):
        """
        Deliver C{payload} to every session; return how many.
        """

    def request(session, message):
        """
        Route C{message} (a STREAM_DATA request from C{session}) to the
        subject's responders and relay the first answer.
        """


class IBrokerEngine(Interface):
    """
    How published messages travel between server processes ("nodes").
    The embedded engine keeps everything in this process; the cluster
    engine (L{muxframe.server.cluster}) fans out through a storage
    engine's broker (Redis) so several processes act as one.  The local
    broker delivers to its own sessions itself and hands each published
    message to the engine too.
    """

    def attach(broker):
        """
        Start: what other processes publish, broadcast or request reaches
        this process through C{broker.deliver(delivery)},
        C{broker.deliverBroadcast(delivery)} and
        C{broker.serveRequest(delivery)} (a Deferred of the answer).
        """

    def interest(pattern, group, present):
        """
        This process gained (C{present} true) its first or lost its last
        local subscription to C{pattern} in queue group C{group} (L{None}
        for plain subscriptions), so the engine can subscribe upstream
        and choose queue-group members across processes.
        """

    def plan(delivery):
        """
        Decide, before C{delivery} (a L{muxframe.server.hub.Delivery}) is
        delivered here, which of the matching queue groups this process
        serves: set C{delivery.groups} (L{None}: all of them); return an
        opaque plan for L{published} and L{forward}.
        """

    def published(delivery, plan):
        """
        C{delivery} was published on this process; send it to the others
        as C{plan} says (the embedded engine does nothing).
        """

    def broadcast(delivery):
        """
        C{delivery} was broadcast on this process; send it to the others.
        """

    def forward(delivery, plan):
        """
        Send the request C{delivery} to the other processes with
        recipients for it; return a list of Deferreds, one per process,
        each firing with the first answer there (an object with C{type}
        and C{payload}) or failing (L{muxframe.xtmp.PeerError} from a
        responder, L{muxframe.server.errors.Refusal} NO_RESPONDERS).  A
        Deferred may be cancelled: its answer is then not wanted.
        """

    def detach():
        """
        Stop; return a Deferred (or None) fired when stopped.
        """
