"""
The Redis engine's connections, through txredisapi's protocols: one command
connection (commands are pipelined on it in order) and one subscriber
connection, each kept up by a L{_Link} that connects again after a failure
or a loss, with a growing delay.  Replies are bytes (no charset) and
numbers are not guessed (convertNumbers off), so binary payloads
round-trip.

Outages (L{RedisClient}'s rules):

  - While the command connection is down, every command fails at once with
    L{StorageUnavailable} naming the address, since when and why: nothing
    waits in memory for Redis to come back.  A command in flight when the
    connection goes fails with it too.
  - A connection counts as up once Redis answered its AUTH, SELECT and a
    PING, so a Redis that accepts connections but does not answer (stopped,
    loading) is not taken for one that works.
  - A command connection that leaves commands unanswered for
    C{commandTimeout} seconds (a stopped or wedged Redis, a cut network) is
    closed: its commands fail, and it is connected again.  The subscriber
    connection, which sends nothing of itself, is sent a PING every quarter
    of C{commandTimeout} and closed likewise when one stays unanswered that
    long: a cut network (or a Redis that dropped the connection unseen)
    would otherwise leave it silent for good, every notice lost.
  - An error reply is a L{StorageError} naming Redis and its words (out of
    memory, a read-only replica, a script error), or L{StorageUnavailable}
    when they say that Redis cannot serve for now (loading, busy).
  - The outage is logged once when it begins (the first connection lost or
    attempt failed) and once when both connections are up again, not at
    every attempt; then the subscriptions are made again and
    C{onReconnected} is called.
"""

import hashlib
import random
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from muxframe.engines.errors import (
    ConfigError, EngineStopped, StorageError, StorageUnavailable)
from muxframe.logthrottle import LogThrottle, logger, throttled

log = logger("muxframe.engines.redisconn")

#: Seconds before the first attempt to connect again, and the most between
#: two attempts (the delay doubles, with +-25 % of jitter).
RECONNECT_INITIAL = 0.5
RECONNECT_MAX = 10.0
#: Seconds a command connection may leave commands unanswered before it is
#: closed (and a new connection must answer a PING within as long).
COMMAND_TIMEOUT = 30.0
#: Seconds a TCP connection attempt may take.
CONNECT_TIMEOUT = 10.0
#: Error replies that say Redis cannot serve now, rather than that the
#: command was wrong: they fail as L{StorageUnavailable}.
_TRANSIENT = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def parseAddress(address):
    """
    Parse a Redis address: C{redis://[:password@]host[:port][/db]},
    C{tcp:host:port} or C{host:port}.

    @return: C{(host, port, db, password)}.
    @raise ConfigError: naming the fault.
    """
    if not isinstance(address, str) or not address:
        raise ConfigError("address", "must be a non-empty string")
    if address.startswith("tcp:"):
        parts = address[4:].split(":")
        if len(parts) != 2:
            raise ConfigError("address", "tcp:HOST:PORT expected, not %r" % (address,))
        address = "redis://%s:%s" % tuple(parts)
    elif "://" not in address:
        address = "redis://" + address
    url = urlsplit(address)
    if url.scheme != "redis":
        raise ConfigError("address", "scheme must be redis://, not %r" % (url.scheme,))
    try:
        port = url.port or 6379
    except ValueError:
        raise ConfigError("address", "bad port in %r" % (address,))
    db = 0
    if url.path.strip("/"):
        try:
            db = int(url.path.strip("/"))
        except ValueError:
            raise ConfigError("address", "database must be a number in %r" % (address,))
    password = unquote(url.password) if url.password else None
    return url.hostname or "localhost", port, db, password


class _NoScript(StorageError):
    """
    Redis does not know a script (yet): L{RedisClient.run} sends it.
    """


class Script:
    """
    A Lua script run with EVALSHA, loaded with EVAL when Redis does not
    know it yet.
    """

    def __init__(self, name, source):
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


class _LinkedProtocol:
    """
    What both connections tell their L{_Link}: made, ready (AUTH, SELECT
    and a PING answered), lost.
    """

    def connectionMade(self):
        self.factory.link.made(self)
        d = self._baseProtocol.connectionMade(self)
        return d.addCallback(self._authenticated)

    def _authenticated(self, _):
        if not self.connected:
            # AUTH or SELECT refused: the factory was told, and the
            # connection is closing.
            return None
        d = self.execute_command("PING")
        d.addCallbacks(lambda _: self.factory.link.ready(self), lambda _: None)
        return d

    def connectionLost(self, reason):
        # The link first: a command issued by a failing command's errback
        # must meet a connection that is down.
        self.factory.link.lost(self, reason)
        self._baseProtocol.connectionLost(self, reason)


class _Commands(_LinkedProtocol, txredisapi.RedisProtocol):
    _baseProtocol = txredisapi.RedisProtocol


class _Subscriber(_LinkedProtocol, txredisapi.SubscriberProtocol):
    _baseProtocol = txredisapi.SubscriberProtocol

    def messageReceived(self, pattern, channel, message):
        self.factory.link.client.messageArrived(pattern, channel, message)


class _Factory(protocol.Factory):
    """
    Builds one kind of connection for a L{_Link}; answers what txredisapi's
    protocols ask of their factory when AUTH or SELECT is refused.
    """

    noisy = False
    isLazy = False
    #: Set by txredisapi before 1.5 when AUTH is refused (the link decides).
    continueTrying = True

    def __init__(self, protocolClass, password, db):
        self.protocolClass = protocolClass
        self.password = password
        self.db = db
        self.link = None

    def buildProtocol(self, addr):
        p = self.protocolClass(charset=None, password=self.password, dbid=self.db,
                               convertNumbers=False)
        p.factory = self
        return p

    def stopTrying(self):
        """
        txredisapi 1.5 and later call this when AUTH or SELECT is refused;
        the link goes on trying (the password may be fixed meanwhile) and
        says so through L{connectionError}.
        """

    def connectionError(self, why):
        """
        AUTH or SELECT was refused: C{why} says which.
        """
        self.link.refused(why)


class _Link:
    """
    One connection to Redis kept up for a L{RedisClient}: connected again
    after a failed attempt or a loss, after a delay growing from
    L{RECONNECT_INITIAL} to L{RECONNECT_MAX} seconds.

    @ivar protocol: the connection while it is up (ready), else L{None}.
    @ivar lastError: what the last failure or loss was, as text.
    """

    def __init__(self, client, name, endpoint, factory):
        self.client = client
        self.name = name
        self.endpoint = endpoint
        self.factory = factory
        factory.link = self
        self.protocol = None
        self.lastError = None
        self.attempts = 0
        self.stopped = True
        self._connection = None
        self._attempt = None
        self._retry = None
        self._deadline = None
        self._aborted = None
        self._closing = []

    def start(self):
        """
        Connect, and keep connecting until L{stop}.
        """
        self.stopped = False
        self._connect()

    def _connect(self):
        self._retry = None
        d = self._attempt = self.endpoint.connect(self.factory)
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, connection):
        self._attempt = None

    def _failed(self, failure):
        self._attempt = None
        if self.stopped:
            return
        self.lastError = failure.getErrorMessage().rstrip(".")
        self.client.linkDown(self)
        self._again()

    def _again(self):
        if self.stopped or self._retry is not None:
            return
        self.attempts += 1
        self._retry = self.client.reactor.callLater(self.client.retryDelay(self.attempts),
                                                    self._connect)

    def made(self, connection):
        """
        A TCP connection is made: it must be ready within the command
        timeout.
        """
        self._connection = connection
        self._deadline = self.client.reactor.callLater(
            self.client.commandTimeout, self._tooSlow, connection)

    def _tooSlow(self, connection):
        self._deadline = None
        self.abort("no answer to AUTH, SELECT or PING within %g s" % (
            self.client.commandTimeout,))

    def abort(self, why):
        """
        Close the connection at once, C{why} being the reason given.
        """
        if self._connection is not None:
            self._aborted = why
            self._connection.transport.abortConnection()

    def _cancelDeadline(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def ready(self, connection):
        """
        C{connection} answered: the link is up.
        """
        if self.stopped or connection is not self._connection:
            # (Stopping: the deadline L{stop} set, or the first, stays.)
            connection.transport.loseConnection()
            return
        self._cancelDeadline()
        self.protocol = connection
        self.attempts = 0
        self.client.linkUp(self)

    def refused(self, why):
        """
        Redis refused AUTH or SELECT (C{why}); the connection is closing.
        """
        self.lastError = self._aborted = why
        self.client.linkRefused(self, why)

    def lost(self, connection, reason):
        """
        C{connection} is closed.
        """
        if connection is not self._connection:
            return
        self._cancelDeadline()
        self._connection = None
        self.protocol = None
        closing, self._closing = self._closing, []
        for d in closing:
            d.callback(None)
        if self.stopped:
            return
        self.lastError = self._aborted or reason.getErrorMessage().rstrip(".")
        self._aborted = None
        self.client.linkDown(self)
        self._again()

    def stop(self):
        """
        Stop connecting and close the connection; a Deferred firing once
        it is closed.  The connection is aborted (what it has not written
        yet dropped) if it is not closed within the command timeout: a
        clean close waits until everything written reached Redis, without
        end while Redis reads nothing (stopped, a cut network).
        """
        self.stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        connection = self._connection
        if connection is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._closing.append(d)
        if self._deadline is None:
            self._deadline = self.client.reactor.callLater(
                self.client.commandTimeout, connection.transport.abortConnection)
        connection.transport.loseConnection()
        return d


class RedisClient:
    """
    Commands, scripts and subscriptions on one Redis server (see the
    module's rules for outages).

    @param onMessage: called with C{(pattern, channel, message)} (bytes;
        pattern L{None} for plain subscriptions) for every message.
    @param onResubscribed: called after the subscriber connection came back
        and subscribed again: what was published meanwhile was lost.
    @param onReconnected: called once both connections are up again after
        an outage.
    @param commandTimeout: seconds a command may wait for its answer
        before its connection is closed (L{COMMAND_TIMEOUT}).

    @ivar downSince: when the current outage began (reactor seconds), or
        L{None} while both connections are up.
    @ivar outages: how many outages began.
    @ivar longestOutage: the longest of the outages that ended since the
        last L{forgetOutages} (seconds).
    """

    retryInitial = RECONNECT_INITIAL
    retryMax = RECONNECT_MAX
    #: Seconds before a failed resubscription handler (not an outage: a
    #: Redis error reply, say BUSY) runs again, doubling up to
    #: C{resyncRetryMax}.
    resyncRetryInitial = 1.0
    resyncRetryMax = 60.0

    def __init__(self, reactor, address, onMessage, onResubscribed=None,
                 onReconnected=None, commandTimeout=COMMAND_TIMEOUT):
        self.reactor = reactor
        self.host, self.port, self.db, self._password = parseAddress(address)
        self.address = "%s:%d" % (self.host, self.port)
        self.commandTimeout = commandTimeout
        self._onMessage = onMessage
        self._onResubscribed = onResubscribed
        self._onReconnected = onReconnected
        self._commands = None
        self._subscriber = None
        self._channels = {}
        self._patterns = {}
        self._ready = None
        self._watchdog = None
        self._outstanding = 0
        self._progress = 0.0
        self._resyncDue = False
        self._resyncRetry = None
        self._resyncDelay = 0.0
        self._pinged = None
        self._throttle = LogThrottle(perInterval=5, interval=300.0)
        self.downSince = None
        self.outages = 0
        self.longestOutage = 0.0

    def outageLength(self):
        """
        The longest outage since the last L{forgetOutages}, the one going on
        included (seconds, so far).
        """
        ongoing = 0.0
        if self.downSince is not None:
            ongoing = self.reactor.seconds() - self.downSince
        return max(self.longestOutage, ongoing)

    def forgetOutages(self):
        """
        Start L{outageLength} afresh (after the outages so far were acted
        on).
        """
        self.longestOutage = 0.0

    def connect(self):
        """
        Connect both connections; a Deferred firing when both are up (Redis
        down at first is waited for), or failing when Redis refuses AUTH or
        SELECT.
        """
        endpoint = HostnameEndpoint(self.reactor, self.host, self.port, timeout=CONNECT_TIMEOUT)
        self._commands = _Link(self, "command", endpoint,
                               _Factory(_Commands, self._password, self.db or None))
        self._subscriber = _Link(self, "subscriber", endpoint,
                                 _Factory(_Subscriber, self._password, None))
        self._ready = defer.Deferred()
        ready = self._ready
        self._watchdog = LoopingCall(self._checkAnswers)
        self._watchdog.clock = self.reactor
        self._watchdog.start(max(0.05, self.commandTimeout / 4.0), now=False)
        self._commands.start()
        self._subscriber.start()

        def failed(failure):
            return self.disconnect().addCallback(lambda _: failure)
        return ready.addErrback(failed)

    def disconnect(self):
        """
        Close both connections (and stop connecting); a Deferred.  A
        L{connect} still waiting for Redis fails with L{EngineStopped}.
        """
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._cancelResyncRetry()
        links = [link for link in (self._commands, self._subscriber) if link is not None]
        self._commands = self._subscriber = None
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.errback(EngineStopped("stopped before Redis at %s was reached" % (
                self.address,)))
        return defer.gatherResults([link.stop() for link in links], consumeErrors=True)

    def retryDelay(self, attempt):
        """
        Seconds before connection attempt C{attempt} (from 1) of an outage.
        """
        delay = min(self.retryMax, self.retryInitial * 2 ** min(attempt - 1, 32))
        return delay * random.uniform(0.75, 1.25)

    # -- state ----------------------------------------------------------------

    def isDown(self):
        """
        Whether an outage is going on.
        """
        return self.downSince is not None

    def linkUp(self, link):
        """
        C{link} (from L{_Link}) is up.
        """
        if link is self._subscriber:
            self._subscribeAll(link.protocol)
        else:
            self._resync()
        if self._commands is None or self._commands.protocol is None or \
                self._subscriber is None or self._subscriber.protocol is None:
            return
        if self._ready is not None:
            ready, self._ready = self._ready, None
            if self.downSince is not None:
                self._logBack()
            self.reactor.callLater(0, ready.callback, None)
            return
        if self.downSince is not None:
            self._logBack()
            if self._onReconnected is not None:
                try:
                    self._onReconnected()
                except Exception:
                    log.failure("Redis reconnection handler raised")

    def _logBack(self):
        seconds = self.reactor.seconds() - self.downSince
        self.downSince = None
        self.longestOutage = max(self.longestOutage, seconds)
        throttled(log, self._throttle, self.reactor.seconds(), LogLevel.info, "back",
                  "Redis at {address} is reachable again after {seconds:.1f} s",
                  address=self.address, seconds=seconds)

    def linkDown(self, link):
        """
        C{link} lost its connection, or an attempt failed.
        """
        if self.downSince is not None:
            return
        self.downSince = self.reactor.seconds()
        self.outages += 1
        throttled(log, self._throttle, self.downSince, LogLevel.error, "down",
                  "Redis at {address} is unreachable ({link} connection: {why}): presence, "
                  "queue and history requests fail until it is back; connecting again "
                  "every {most:g} s at most", address=self.address, link=link.name,
                  why=link.lastError, most=self.retryMax)

    def linkRefused(self, link, why):
        """
        Redis refused C{link}'s AUTH or SELECT.
        """
        if self._ready is not None:
            ready, self._ready = self._ready, None
            ready.errback(StorageError("Redis at %s refused the %s connection: %s" % (
                self.address, link.name, why)))
            return
        throttled(log, self._throttle, self.reactor.seconds(), LogLevel.error, "refused",
                  "Redis at {address} refused the {link} connection: {why}",
                  address=self.address, link=link.name, why=why)

    def problems(self):
        """
        What is wrong with the connections now, as sentences (none when
        both are up).
        """
        out = []
        now = self.reactor.seconds()
        for link, what in ((self._commands, "commands fail"),
                           (self._subscriber, "notices from other nodes are lost")):
            if link is not None and link.protocol is None:
                since = "" if self.downSince is None else " for %d s" % (now - self.downSince,)
                out.append("Redis at %s: the %s connection is down%s (%s): %s" % (
                    self.address, link.name, since, link.lastError or "connecting", what))
        return out

    def unavailable(self):
        """
        The L{StorageUnavailable} (or L{EngineStopped}) a command meets
        while the command connection is down.
        """
        link = self._commands
        if link is None:
            return EngineStopped("not connected to Redis")
        since = self.downSince
        how = "" if since is None else " for %.1f s" % (self.reactor.seconds() - since,)
        return StorageUnavailable("Redis at %s is unreachable%s: %s" % (
            self.address, how, link.lastError or "not connected yet"), self.address, since)

    def _checkAnswers(self):
        self._checkSubscriber()
        link = self._commands
        if link is None or link.protocol is None or not self._outstanding:
            return
        waited = self.reactor.seconds() - self._progress
        if waited < self.commandTimeout:
            return
        throttled(log, self._throttle, self.reactor.seconds(), LogLevel.error, "slow",
                  "Redis at {address} answered none of {count} commands for {seconds:.1f} s: "
                  "closing the connection", address=self.address, count=self._outstanding,
                  seconds=waited)
        link.abort("%d commands unanswered for %.1f s" % (self._outstanding, waited))

    def _checkSubscriber(self):
        link = self._subscriber
        connection = link.protocol if link is not None else None
        if connection is None:
            self._pinged = None
            return
        now = self.reactor.seconds()
        if self._pinged is not None:
            sentAt, to = self._pinged
            if to is connection:
                if now - sentAt >= self.commandTimeout:
                    self._pinged = None
                    link.abort("no answer to PING for %.1f s" % (now - sentAt,))
                return
        self._pinged = (now, connection)

        def answered(_):
            if self._pinged is not None and self._pinged[1] is connection:
                self._pinged = None
        connection.execute_command("PING").addCallbacks(answered, lambda _: None)

    # -- commands -------------------------------------------------------------

    def call(self, *args):
        """
        Run one command; a Deferred of its reply, failing with
        L{StorageUnavailable} while Redis cannot be reached.
        """
        link = self._commands
        connection = link.protocol if link is not None else None
        if connection is None:
            return defer.fail(self.unavailable())
        try:
            d = connection.execute_command(*args)
        except txredisapi.ConnectionError:
            return defer.fail(self.unavailable())
        if not self._outstanding:
            self._progress = self.reactor.seconds()
        self._outstanding += 1
        return d.addBoth(self._answered)

    def _answered(self, result):
        self._outstanding -= 1
        self._progress = self.reactor.seconds()
        if isinstance(result, Failure):
            if result.check(txredisapi.ConnectionError):
                return Failure(self.unavailable())
            if result.check(txredisapi.ResponseError):
                return Failure(self._refused(str(result.value)))
        return result

    def _refused(self, text):
        if text.startswith("NOSCRIPT"):
            # (L{run} loads the script.)
            return _NoScript(text)
        if "@user_script" in text and ": -" in text:
            # A command of a script refused: its words, not the script's
            # name and line.
            text = text.rsplit(": -", 1)[-1]
        text = text.rstrip(".")
        if text.startswith(_TRANSIENT):
            return StorageUnavailable("Redis at %s cannot serve now: %s" % (
                self.address, text), self.address)
        return StorageError("Redis at %s refused a command: %s" % (self.address, text))

    def run(self, script, keys, args):
        """
        Run a L{Script} with C{keys} and C{args}; a Deferred of its reply.
        """
        d = self.call("EVALSHA", script.sha, len(keys), *keys, *args)

        def missing(failure):
            failure.trap(_NoScript)
            return self.call("EVAL", script.source, len(keys), *keys, *args)
        return d.addErrback(missing)

    # -- subscriptions --------------------------------------------------------

    def _subscribeAll(self, subscriber):
        # Every channel and pattern again, after a reconnection too: one
        # command each.  Redis answers a SUBSCRIBE of N channels with N
        # replies, and txredisapi gives all but the first to whatever
        # command waits behind it: a subscription made meanwhile (a Bind's
        # watch) would be confirmed before Redis had it, a PING answered
        # by another's reply.
        done = []
        for channel in list(self._channels):
            done.append(subscriber.subscribe(channel))
        for pattern in list(self._patterns):
            done.append(subscriber.psubscribe(pattern))
        for d in done:
            d.addErrback(self._subscribeFailed)
        if self._ready is None and self._onResubscribed is not None:
            d = defer.gatherResults(done, consumeErrors=True)
            d.addCallback(self._resubscribed, subscriber)

    def _resubscribed(self, _, subscriber):
        # Told once the command connection is up too: the handler reads
        # what the notices lost meanwhile were about.
        if self._subscriberConnection() is subscriber:
            self._resyncDue = True
            self._resync()

    def _resync(self):
        link = self._commands
        if not self._resyncDue or link is None or link.protocol is None:
            return
        self._resyncDue = False
        # (Run now, by a reconnection: not again when a retry is due.)
        self._cancelResyncRetry()
        d = defer.maybeDeferred(self._onResubscribed)
        d.addCallbacks(self._resynced, self._resyncFailed)

    def _resynced(self, _):
        self._resyncDelay = 0.0

    def _resyncFailed(self, failure):
        if failure.check(StorageUnavailable):
            # Down again: done again when it is back.
            self._resyncDue = True
            return
        if failure.check(EngineStopped):
            # Stopped meanwhile: nothing to resynchronise.
            return
        # Anything else (a Redis error reply with the connections up, such
        # as BUSY or LOADING, or a fault of the handler's): done again
        # later, backing off, since no reconnection will come to do it;
        # the watchers would otherwise keep what they missed for good.
        self._resyncDelay = min(self.resyncRetryMax, max(
            self.resyncRetryInitial, 2 * self._resyncDelay))
        log.failure("the handler of a resubscription failed; again in "
                    "{delay:g}s", failure, delay=self._resyncDelay)
        self._resyncDue = True
        self._resyncRetry = self.reactor.callLater(self._resyncDelay,
                                                   self._retryResync)

    def _cancelResyncRetry(self):
        retry, self._resyncRetry = self._resyncRetry, None
        if retry is not None and retry.active():
            retry.cancel()

    def _retryResync(self):
        self._resyncRetry = None
        self._resync()

    def messageArrived(self, pattern, channel, message):
        """
        A published message reached the subscriber connection.
        """
        try:
            self._onMessage(pattern, channel, message)
        except Exception:
            log.failure("Redis message handler raised for {channel!r}", channel=channel)

    @staticmethod
    def _add(table, name):
        table[name] = table.get(name, 0) + 1
        return table[name] == 1

    @staticmethod
    def _remove(table, name):
        count = table.get(name, 0)
        if count > 1:
            table[name] = count - 1
            return False
        table.pop(name, None)
        return count == 1

    @staticmethod
    def _subscribeFailed(failure):
        # The connection went meanwhile: the table is subscribed again
        # when it is back.
        failure.trap(txredisapi.ConnectionError)

    def _subscriberConnection(self):
        link = self._subscriber
        return link.protocol if link is not None else None

    def subscribe(self, channel):
        """
        Subscribe to C{channel} (counted); a Deferred.
        """
        subscriber = self._subscriberConnection()
        if self._add(self._channels, channel) and subscriber is not None:
            return subscriber.subscribe(channel).addErrback(self._subscribeFailed)
        return defer.succeed(None)

    def unsubscribe(self, channel):
        """
        Undo one L{subscribe}.
        """
        subscriber = self._subscriberConnection()
        if self._remove(self._channels, channel) and subscriber is not None:
            return subscriber.unsubscribe(channel).addErrback(self._subscribeFailed)
        return defer.succeed(None)

    def psubscribe(self, pattern):
        """
        Subscribe to a glob C{pattern} (counted); a Deferred.
        """
        subscriber = self._subscriberConnection()
        if self._add(self._patterns, pattern) and subscriber is not None:
            return subscriber.psubscribe(pattern).addErrback(self._subscribeFailed)
        return defer.succeed(None)

    def punsubscribe(self, pattern):
        """
        Undo one L{psubscribe}.
        """
        subscriber = self._subscriberConnection()
        if self._remove(self._patterns, pattern) and subscriber is not None:
            return subscriber.punsubscribe(pattern).addErrback(self._subscribeFailed)
        return defer.succeed(None)
