"""
L{muxframe.xtmp.requesttimers}: a session's request timeouts on one
reactor call, on a fake clock.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from muxframe.xtmp.requesttimers import RequestTimers


class Request:
    def __init__(self, name):
        self.name = name
        self.deadline = None


class RequestTimersTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.expired = []
        self.timers = RequestTimers(lambda: self.clock, self.expired.append)

    def test_expiresInDeadlineOrder(self):
        """
        Requests time out at their deadlines, earliest first, equal
        deadlines in the order they were added, on one reactor call at a
        time.
        """
        a, b, c, d = (Request(n) for n in "abcd")
        self.timers.add(a, 5)
        self.timers.add(b, 2)
        self.timers.add(c, 5)
        self.timers.add(d, 9)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.9)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.expired, [b])
        self.clock.advance(3)
        self.assertEqual(self.expired, [b, a, c])
        self.assertEqual([r.deadline for r in (a, b, c)], [None] * 3)
        self.assertEqual(len(self.timers), 1)
        self.clock.advance(4)
        self.assertEqual(self.expired, [b, a, c, d])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_doneNeverExpires(self):
        """
        A request marked done does not time out; when none waits, the
        reactor call is cancelled.
        """
        a, b = Request("a"), Request("b")
        self.timers.add(a, 1)
        self.timers.add(b, 2)
        self.timers.done(a)
        self.timers.done(a)  # (twice: nothing more)
        self.clock.advance(1.5)
        self.assertEqual(self.expired, [])
        self.timers.done(b)
        self.assertEqual(len(self.timers), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.expired, [])

    def test_earlierDeadlineRearms(self):
        """
        A request added with an earlier deadline than the armed one moves
        the reactor call earlier.
        """
        late, early = Request("late"), Request("early")
        self.timers.add(late, 60)
        self.timers.add(early, 1)
        self.clock.advance(1)
        self.assertEqual(self.expired, [early])
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()],
                         [60])

    def test_bounded(self):
        """
        Many requests made and answered while one waits leave the heap no
        longer than three times the waiting requests plus 64.
        """
        waiting = Request("waiting")
        self.timers.add(waiting, 60)
        for n in range(10000):
            r = Request(n)
            self.timers.add(r, 60)
            self.timers.done(r)
            self.assertLessEqual(len(self.timers._heap), 3 * 1 + 64 + 1)
        self.assertEqual(len(self.timers), 1)
        self.clock.advance(60)
        self.assertEqual(self.expired, [waiting])

    def test_expiryAddsAndFinishes(self):
        """
        What an expiry's callback does (add a request, finish another) is
        kept: the new one is timed, the finished one never expires.
        """
        a, b, c = Request("a"), Request("b"), Request("c")

        def expired(request):
            self.expired.append(request)
            if request is a:
                self.timers.done(b)
                self.timers.add(c, 1)

        self.timers = RequestTimers(lambda: self.clock, expired)
        self.timers.add(a, 1)
        self.timers.add(b, 1)
        self.clock.advance(1)
        self.assertEqual(self.expired, [a])
        self.clock.advance(1)
        self.assertEqual(self.expired, [a, c])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_expiryRaises(self):
        """
        An expiry that raises does not stop the others: the call is armed
        again for what still waits (due ones on the next turn).
        """
        a, b, c = Request("a"), Request("b"), Request("c")

        def expired(request):
            self.expired.append(request)
            if request is a:
                raise RuntimeError("a callback's bug")

        self.timers = RequestTimers(lambda: self.clock, expired)
        self.timers.add(a, 1)
        self.timers.add(b, 1)
        self.timers.add(c, 3)
        self.assertRaises(RuntimeError, self.clock.advance, 1)
        self.assertEqual(self.expired, [a])
        self.clock.advance(0)
        self.assertEqual(self.expired, [a, b])
        self.clock.advance(2)
        self.assertEqual(self.expired, [a, b, c])
        self.assertEqual(self.clock.getDelayedCalls(), [])
