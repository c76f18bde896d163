"""
The Redis engine's connections, through txredisapi: one command connection
(commands are pipelined on it in order) and one subscriber connection kept
up by a L{ClientService} that re-subscribes every channel and pattern after
a reconnection.  Replies are bytes (no charset) and numbers are not
guessed (convertNumbers off), so binary payloads round-trip.
"""

import hashlib
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.application.internet import ClientService
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger

from muxframe.engines.errors import ConfigError, EngineStopped, StorageError

log = Logger()


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


class Script:
    """
    A Lua script run with EVALSHA, loaded with EVAL when Redis does not
    know it yet.
    """

    def __init__(self, name, source):
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


class _Subscriber(txredisapi.SubscriberProtocol):

    def connectionMade(self):
        d = txredisapi.SubscriberProtocol.connectionMade(self)
        self.factory.client.subscriberReady(self)
        return d

    def connectionLost(self, reason):
        self.factory.client.subscriberLost(self)
        txredisapi.SubscriberProtocol.connectionLost(self, reason)

    def messageReceived(self, pattern, channel, message):
        self.factory.client.messageArrived(pattern, channel, message)


class _SubscriberFactory(protocol.Factory):

    def __init__(self, client, password):
        self.client = client
        self.password = password

    def buildProtocol(self, addr):
        p = _Subscriber(charset=None, password=self.password, convertNumbers=False)
        p.factory = self
        return p

    # BaseRedisProtocol calls these when AUTH fails.
    def stopTrying(self):
        self.client.authFailed()

    def connectionError(self, why):
        log.error("Redis subscriber: {why}", why=why)

    isLazy = False


class RedisClient:
    """
    Commands, scripts and subscriptions on one Redis server.

    @param onMessage: called with C{(pattern, channel, message)} (bytes;
        pattern L{None} for plain subscriptions) for every message.
    @param onResubscribed: called after the subscriber connection came back
        and subscribed again: what was published meanwhile was lost.
    """

    def __init__(self, reactor, address, onMessage, onResubscribed=None):
        self._reactor = reactor
        self.host, self.port, self.db, self._password = parseAddress(address)
        self._onMessage = onMessage
        self._onResubscribed = onResubscribed
        self._commands = None
        self._service = None
        self._subscriber = None
        self._channels = {}
        self._patterns = {}
        self._ready = None

    @defer.inlineCallbacks
    def connect(self):
        """
        Connect both connections; a Deferred firing when both are up.
        """
        self._commands = yield txredisapi.Connection(
            self.host, self.port, dbid=self.db or None, reconnect=True, charset=None,
            password=self._password, convertNumbers=False)
        self._ready = defer.Deferred()
        endpoint = HostnameEndpoint(self._reactor, self.host, self.port)
        self._service = ClientService(endpoint, _SubscriberFactory(self, self._password))
        self._service.startService()
        yield self._ready

    @defer.inlineCallbacks
    def disconnect(self):
        """
        Close both connections.
        """
        if self._service is not None:
            service, self._service = self._service, None
            yield service.stopService()
        if self._commands is not None:
            commands, self._commands = self._commands, None
            yield commands.disconnect()

    def authFailed(self):
        """
        The subscriber's AUTH was refused (from its protocol).
        """
        if self._ready is not None and not self._ready.called:
            self._ready.errback(StorageError("Redis refused the subscriber's AUTH"))

    def subscriberReady(self, subscriber):
        """
        The subscriber connection is up (first time or again): subscribe
        to everything again.
        """
        self._subscriber = subscriber
        # Every channel and pattern again, after a reconnection too.
        done = []
        if self._channels:
            done.append(subscriber.subscribe(list(self._channels)))
        if self._patterns:
            done.append(subscriber.psubscribe(list(self._patterns)))
        if self._ready is not None and not self._ready.called:
            ready, self._ready = self._ready, None
            self._reactor.callLater(0, ready.callback, None)
        elif self._onResubscribed is not None:
            log.info("Redis subscriber reconnected to {host}:{port}", host=self.host,
                     port=self.port)
            d = defer.gatherResults(done, consumeErrors=True)
            d.addCallback(lambda _: self._onResubscribed())
            d.addErrback(lambda f: log.failure("resubscribing failed", f))

    def subscriberLost(self, subscriber):
        """
        The subscriber connection went down.
        """
        if self._subscriber is subscriber:
            self._subscriber = None

    def messageArrived(self, pattern, channel, message):
        """
        A published message reached the subscriber connection.
        """
        try:
            self._onMessage(pattern, channel, message)
        except Exception:
            log.failure("Redis message handler raised for {channel!r}", channel=channel)

    def call(self, *args):
        """
        Run one command; a Deferred of its reply.
        """
        if self._commands is None:
            return defer.fail(EngineStopped("not connected to Redis"))
        return self._commands.execute_command(*args)

    def run(self, script, keys, args):
        """
        Run a L{Script} with C{keys} and C{args}; a Deferred of its reply.
        """
        d = self.call("EVALSHA", script.sha, len(keys), *keys, *args)

        def missing(failure):
            failure.trap(txredisapi.ResponseError)
            if "NOSCRIPT" not in str(failure.value):
                return failure
            return self.call("EVAL", script.source, len(keys), *keys, *args)
        return d.addErrback(missing)

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

    def subscribe(self, channel):
        """
        Subscribe to C{channel} (counted); a Deferred.
        """
        if self._add(self._channels, channel) and self._subscriber is not None:
            return self._subscriber.subscribe(channel)
        return defer.succeed(None)

    def unsubscribe(self, channel):
        """
        Undo one L{subscribe}.
        """
        if self._remove(self._channels, channel) and self._subscriber is not None:
            return self._subscriber.unsubscribe(channel)
        return defer.succeed(None)

    def psubscribe(self, pattern):
        """
        Subscribe to a glob C{pattern} (counted); a Deferred.
        """
        if self._add(self._patterns, pattern) and self._subscriber is not None:
            return self._subscriber.psubscribe(pattern)
        return defer.succeed(None)

    def punsubscribe(self, pattern):
        """
        Undo one L{psubscribe}.
        """
        if self._remove(self._patterns, pattern) and self._subscriber is not None:
            return self._subscriber.punsubscribe(pattern)
        return defer.succeed(None)
