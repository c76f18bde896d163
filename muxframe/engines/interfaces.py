"""
The engine contract, as zope interfaces.

An engine (L{IEngine}) is four parts, split the way Centrifugo splits its
broker and presence manager, so a server talks to each part and never to a
storage layout:

 - L{IBroker}: fan-out of publications between server processes ("nodes").
 - L{IPresenceManager}: entities, devices, statuses, activities, location,
   visibility and approval-gated awareness subscriptions.
 - L{IQueueStore}: durable per-entity queues with per-device offsets,
   acknowledgements, receipts and deduplication.
 - L{IHistoryStore}: per-channel history with offsets and an epoch, and
   recovery from an offset.

Every method that touches storage returns a L{Deferred}; it fires once the
change is as durable as the engine makes it (for the embedded engine: on
disk, after fsync) and fails with an L{muxframe.engines.errors.EngineError}
naming the fault.  Callbacks given to C{watch} and C{setReceiver} are called
on the reactor thread, once per delivery; an exception they raise is logged
and does not stop delivery to others.
"""

from zope.interface import Attribute, Interface


class IWatch(Interface):
    """
    A registration made by C{watch()}; cancel it when the watcher goes.
    """

    def cancel():
        """
        Stop the callbacks.  Idempotent.
        """

    def whenActive():
        """
        A L{Deferred} firing once notices from every node reach the
        callback: at once in the embedded engine; with Redis, once the
        subscription the entity's first watch made is in effect (what
        other nodes publish before is not received).
        """


class IBroker(Interface):
    """
    Publish/subscribe between nodes.  Every node sets one receiver; a
    publication on a subject reaches every node (the publisher's included)
    that declared an interest matching it, once per publication whatever
    the number of matching interests.  Subjects are tokens separated by
    C{.}; interests may use C{*} (one token) and C{>} (one or more trailing
    tokens), as NATS subjects do.
    """

    nodeId = Attribute("This node's id (a str unique among the nodes).")

    def setReceiver(callback):
        """
        Deliver every publication reaching this node to
        C{callback(delivery)} (a L{muxframe.engines.model.Delivery}).
        """

    def addInterest(pattern):
        """
        Make publications on subjects matching C{pattern} reach this node.
        Counted: two calls need two L{removeInterest}.

        @return: a L{Deferred} firing when the interest is in effect
            everywhere.
        """

    def removeInterest(pattern):
        """
        Undo one L{addInterest}; returns a L{Deferred}.
        """

    def publish(subject, payload):
        """
        Deliver C{payload} (bytes) to every node interested in C{subject}.

        @return: a L{Deferred} firing with the number of nodes it went to
            where the engine knows it (Redis), else L{None}.
        """

    def broadcast(payload):
        """
        Deliver C{payload} to every node, interest or not.
        """

    def sendToNode(nodeId, payload):
        """
        Deliver C{payload} to node C{nodeId} only (replies routed to the
        node holding the requester's session).
        """


class IPresenceManager(Interface):
    """
    Presence of entities and their devices, and who may see it.

    An entity is offline when it has no online device.  A device goes
    offline when L{disconnect} is called for it or when nothing was heard
    from it (L{connect}, L{heartbeat}, a status change) for
    C{deviceTimeout} seconds: the server's ping interval times the
    number of missed pings it tolerates.  Changes go, as
    L{muxframe.engines.model.PresenceNotice}s, to the entities whose
    subscription the changed entity approved (and to a hidden entity's
    watchers only as OFFLINE).
    """

    deviceTimeout = Attribute("Seconds of silence after which a device is offline.")

    def watch(entity, callback):
        """
        Call C{callback(notice)} for every notice addressed to C{entity},
        from any node.  Returns an L{IWatch}.
        """

    def connect(entity, device, status=None, details=""):
        """
        A session of C{entity}'s C{device} began on this node; the device is
        online with C{status} (default ONLINE).  Returns a L{Deferred}
        firing with the entity's L{EntityPresence} after the change.
        """

    def heartbeat(entity, device):
        """
        The device answered a ping: it stays online for another
        C{deviceTimeout}.  Returns a L{Deferred} firing with whether the
        device was online.
        """

    def disconnect(entity, device, node=None):
        """
        The device's session ended (or missed its pings); when it was the
        entity's last device, the entity goes offline.  With C{node}, only
        if the device is online through that node (a session of the same
        device that began on another node since owns it now).  Returns a
        L{Deferred} firing with the entity's L{EntityPresence}.
        """

    def setStatus(entity, device, status, details=""):
        """
        Set a device's presence status (ONLINE, AWAY, BUSY, DND).
        """

    def setActivity(entity, device, status, ttl, to=None):
        """
        An ephemeral TYPING or RECORDING activity lasting C{ttl} seconds,
        directed at entity C{to} (told directly) or at the watchers.
        Receivers expire it at its timestamp + ttl; nothing is sent when
        it ends.
        """

    def setLocation(entity, device, latitude, longitude, sharing):
        """
        Record a device's location; shown to watchers only with
        C{sharing} ON.
        """

    def setVisibility(entity, visibility):
        """
        Make C{entity} VISIBLE or HIDDEN (durable).  Hiding tells the
        watchers OFFLINE; showing tells them the true state.
        """

    def requestSubscription(watcher, target):
        """
        C{watcher} asks to see C{target}'s awareness (durable).  The target
        gets a SUBSCRIPTION_REQUEST notice.  Returns a L{Deferred} firing
        with the L{SubscriptionState} after the request (an approved or
        denied subscription stays as it is).
        """

    def answerSubscription(target, watcher, approve):
        """
        C{target} approves or denies C{watcher}'s request (durable); the
        watcher gets a SUBSCRIPTION_ANSWER notice and, when approved, the
        target's current awareness.
        """

    def unsubscribe(watcher, target):
        """
        Remove the subscription whatever its state (durable), by either
        side.
        """

    def subscription(watcher, target):
        """
        A L{Deferred} firing with the L{SubscriptionState} of C{watcher}'s
        subscription to C{target}.
        """

    def watchers(target, state=None):
        """
        A L{Deferred} firing with a dict watcher -> L{SubscriptionState}
        (only those in C{state} if given).
        """

    def subscriptions(watcher):
        """
        A L{Deferred} firing with a dict target -> L{SubscriptionState}.
        """

    def presence(entity, viewer=None):
        """
        A L{Deferred} firing with C{entity}'s L{EntityPresence} as
        C{viewer} may see it (the entity itself, or L{None} for the server,
        see everything; others see a hidden entity offline, and no location
        that is not shared).
        """


class IQueueStore(Interface):
    """
    Durable per-entity queues.

    Each entity has one queue of records with contiguous offsets from 1.
    Each of its devices has its own position (delivered and read
    offsets), stored apart from the records.  A record stays until every
    known device of the entity acknowledged it, or retention drops it
    (L{muxframe.engines.model.QueueRetention}).  An append with a
    C{(sender, messageId)} already in the queue stores nothing and answers
    with the original's offset, so a sender may resend until it has an
    acknowledgement: exactly once to the application.
    """

    retention = Attribute("The L{QueueRetention} applied to every queue.")

    def append(entity, message):
        """
        Append a L{QueueMessage} to C{entity}'s queue.

        @return: a L{Deferred} firing with L{Appended} once the record is
            durable (the "sent" receipt), never before.
        """

    def appendMany(items, groups=None):
        """
        Append several C{(entity, QueueMessage)} pairs, in order, with one
        acknowledgement: a L{Deferred} firing with the list of L{Appended}
        once all are durable (a message sent to many entities, the sender's
        own copy beside the recipient's).  Every item is checked first (a
        bad one stores nothing); if storing fails midway (a limit), those
        before it are stored and the Deferred fails.

        A message to an entity without a queue when C{maxQueues} are kept
        fails the whole batch with L{LimitExceeded} (C{maxQueues}), nothing
        of it stored, unless C{groups} is given: a list of C{(first, last)}
        index ranges of C{items} (inclusive, in order, covering them all;
        each one caller's records, such as a message and its sender's
        copy).  Then a group meeting that limit is refused alone: nothing of
        it is stored and, in the list, each of its items is the
        L{LimitExceeded} instead of an L{Appended}; the other groups are
        stored as usual, in order, so that no retry (landing after a later
        batch) is needed for them.
        """

    def fetch(entity, fromOffset, limit=100, maxBytes=1048576):
        """
        A L{Deferred} firing with a list of L{QueuedRecord}s from
        C{fromOffset} on, in offset order (from the oldest kept if
        C{fromOffset} was dropped), at most C{limit} records and about
        C{maxBytes} of payload (always at least one record if any).  Only
        durable records are returned.
        """

    def position(entity, device):
        """
        A L{Deferred} firing with the device's L{ConsumerPosition} (a device
        never seen starts at the oldest kept record).
        """

    def acknowledge(entity, device, offset, kind):
        """
        The device had the record at C{offset} (kind DELIVERED or READ;
        READ implies DELIVERED).  Positions advance contiguously: an
        acknowledgement past a gap waits until the gap is filled.  For
        every record newly covered that asked for receipts, a RECEIPT
        record goes to its sender's queue (once per entity and kind).

        @return: a L{Deferred} firing with the device's
            L{ConsumerPosition} once it is durable.
        """

    def forget(entity, device):
        """
        Drop a device's position (a device removed for good); its
        unacknowledged records no longer hold retention back.
        """

    def knownDevices(entity):
        """
        A L{Deferred} firing with the list of C{entity}'s known devices
        (those with a position), least recently seen first.  At most
        C{maxKnownDevices} are known: registering one more forgets the
        least recently seen offline ones, as L{forget} does (see
        L{muxframe.engines.queuestate}).
        """

    def watch(entity, callback):
        """
        Call C{callback(entity, lastOffset)} whenever a durable record is
        appended to C{entity}'s queue, on any node.  Returns an L{IWatch}.
        """

    def applyRetention():
        """
        Run a retention pass now (engines also run one every
        C{retentionInterval} seconds); a L{Deferred}.
        """


class IHistoryStore(Interface):
    """
    Per-channel history: the last N publications, none older than T
    seconds, with contiguous offsets and an epoch that changes whenever
    the history is lost, so a subscriber coming back with its last
    L{StreamPosition} either gets exactly what it missed or learns that it
    cannot.
    """

    def add(channel, payload, options):
        """
        Append C{payload} to C{channel}'s history under L{HistoryOptions}
        C{options}; a L{Deferred} firing with the L{Publication}.
        """

    def position(channel):
        """
        A L{Deferred} firing with the channel's current L{StreamPosition}
        (offset 0 and a fresh epoch for a channel never published).
        """

    def recover(channel, since, limit=None):
        """
        A L{Deferred} firing with L{Recovered} (the publications after
        C{since}, a L{StreamPosition}), or failing with
        L{RecoveryImpossible} naming why.
        """

    def recent(channel, limit):
        """
        A L{Deferred} firing with the last C{limit} publications (oldest
        first) and the position: L{Recovered}.
        """


class IEngine(Interface):
    """
    One storage engine: the four parts, started and stopped together.
    """

    nodeId = Attribute("This node's id.")
    broker = Attribute("The L{IBroker}.")
    presence = Attribute("The L{IPresenceManager}.")
    queues = Attribute("The L{IQueueStore}.")
    history = Attribute("The L{IHistoryStore}.")

    def start():
        """
        Open the storage (recovering it) and connect; a L{Deferred} firing
        when every part is usable.
        """

    def stop():
        """
        Flush what is pending, stop timers and threads, close files and
        connections; a L{Deferred}.  Operations after it fail with
        L{EngineStopped}.
        """
