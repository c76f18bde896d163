"""
Approval-gated awareness subscriptions.  No I/O.

State table, for one (watcher, target) pair:

  ======================  ==========  ===========  ==========  ==========
  event                   NONE        REQUESTED    APPROVED    DENIED
  ======================  ==========  ===========  ==========  ==========
  watcher requests        REQUESTED*  REQUESTED*   APPROVED    DENIED
  target approves         error       APPROVED*    APPROVED    APPROVED*
  target denies           error       DENIED*      DENIED*     DENIED
  either unsubscribes     NONE        NONE         NONE        NONE
  ======================  ==========  ===========  ==========  ==========

 - C{*}: the other side is told (a request notice to the target, an answer
   notice to the watcher).  A denial is sticky: asking again does not
   bother the target; only the target can change its mind (approve), and
   an unsubscribe clears it.
 - Nobody subscribes to itself.  A watcher holds at most
   C{maxSubscriptions}, a target at most C{maxWatchers}.
 - The book is the whole state: the engines store each pair's state
   durably (embedded: a key/value file; Redis: hashes) and load it back.
"""

from muxframe.engines.errors import LimitExceeded, SubscriptionError
from muxframe.engines.model import SubscriptionState

NONE = SubscriptionState.NONE
REQUESTED = SubscriptionState.REQUESTED
APPROVED = SubscriptionState.APPROVED
DENIED = SubscriptionState.DENIED

#: (event, state) -> (new state, tell the other side)
TRANSITIONS = {
    ("request", NONE): (REQUESTED, True),
    ("request", REQUESTED): (REQUESTED, True),
    ("request", APPROVED): (APPROVED, False),
    ("request", DENIED): (DENIED, False),
    ("approve", REQUESTED): (APPROVED, True),
    ("approve", APPROVED): (APPROVED, False),
    ("approve", DENIED): (APPROVED, True),
    ("deny", REQUESTED): (DENIED, True),
    ("deny", APPROVED): (DENIED, True),
    ("deny", DENIED): (DENIED, False),
}


def transition(event, state):
    """
    Apply C{event} ("request", "approve", "deny", "unsubscribe") to a
    pair in C{state}: return C{(newState, tellOtherSide)}.

    @raise SubscriptionError: for an answer to a request never made.
    """
    if event == "unsubscribe":
        return NONE, False
    try:
        return TRANSITIONS[(event, SubscriptionState(state))]
    except KeyError:
        raise SubscriptionError("cannot %s a subscription in state %s" % (
            event, SubscriptionState.describe(state)))


class SubscriptionBook:
    """
    Every (watcher, target) pair not in state NONE, indexed both ways.
    """

    def __init__(self, maxSubscriptions=10000, maxWatchers=100000):
        self.maxSubscriptions = maxSubscriptions
        self.maxWatchers = maxWatchers
        self._byTarget = {}
        self._byWatcher = {}

    def state(self, watcher, target):
        """
        The pair's L{SubscriptionState}.
        """
        return self._byTarget.get(target, {}).get(watcher, NONE)

    def apply(self, event, watcher, target):
        """
        Apply C{event} to the pair; return C{(newState, tellOtherSide,
        changed)}.

        @raise SubscriptionError: for a subscription to oneself or a
            transition the table refuses.
        @raise LimitExceeded: past C{maxSubscriptions} or C{maxWatchers}.
        """
        if watcher == target:
            raise SubscriptionError("an entity cannot subscribe to itself")
        old = self.state(watcher, target)
        new, tell = transition(event, old)
        if old == NONE and new != NONE:
            if len(self._byWatcher.get(watcher, ())) >= self.maxSubscriptions:
                raise LimitExceeded("%r has %d subscriptions" % (watcher, self.maxSubscriptions),
                                    "maxSubscriptions")
            if len(self._byTarget.get(target, ())) >= self.maxWatchers:
                raise LimitExceeded("%r has %d watchers" % (target, self.maxWatchers),
                                    "maxWatchers")
        self.set(watcher, target, new)
        return new, tell, new != old

    def set(self, watcher, target, state):
        """
        Store a pair's state as loaded from storage (NONE removes it).
        """
        state = SubscriptionState(state)
        if state == NONE:
            for table, a, b in ((self._byTarget, target, watcher),
                                (self._byWatcher, watcher, target)):
                entries = table.get(a)
                if entries is not None:
                    entries.pop(b, None)
                    if not entries:
                        del table[a]
        else:
            self._byTarget.setdefault(target, {})[watcher] = state
            self._byWatcher.setdefault(watcher, {})[target] = state

    def watchers(self, target, state=None):
        """
        A dict watcher -> state of C{target}'s subscribers (only C{state}
        if given).
        """
        entries = self._byTarget.get(target, {})
        if state is None:
            return dict(entries)
        return {w: s for w, s in entries.items() if s == state}

    def subscriptions(self, watcher):
        """
        A dict target -> state of C{watcher}'s subscriptions.
        """
        return dict(self._byWatcher.get(watcher, {}))
