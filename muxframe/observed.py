"""
Observers of a multiplexed endpoint's connections: told when each
multiplexed connection is made and when it is lost, so operator tools
(metrics, health, summaries) can count what every connection carried,
including the ones already gone, without reaching into the endpoint.
"""

from zope.interface import Interface


class IMultiplexerObserver(Interface):
    """
    Told about the multiplexed connections of an endpoint
    (L{muxframe.endpoints.MultiplexedServerEndpoint} or
    L{muxframe.clientendpoint.MultiplexedClientEndpoint}).
    """

    def multiplexerConnected(endpoint, mux):
        """
        C{mux} (a L{muxframe.multiplexer.Multiplexer}) was connected
        through C{endpoint}; its counters start at zero.
        """

    def multiplexerLost(endpoint, mux, reason):
        """
        C{mux} was lost (C{reason}: a Failure); its C{counters} are final.
        """


class MultiplexerObservers:
    """
    The observer list of an endpoint (a mixin).
    """

    _observers = ()

    def addObserver(self, observer):
        """
        Tell C{observer} (an L{IMultiplexerObserver}) about connections
        from now on.
        """
        self._observers = tuple(self._observers) + (observer,)

    def removeObserver(self, observer):
        """
        Stop telling C{observer}.
        """
        self._observers = tuple(o for o in self._observers if o is not observer)

    def _tellConnected(self, mux):
        for observer in self._observers:
            observer.multiplexerConnected(self, mux)

    def _tellLost(self, mux, reason):
        for observer in self._observers:
            observer.multiplexerLost(self, mux, reason)


__all__ = ["IMultiplexerObserver", "MultiplexerObservers"]
