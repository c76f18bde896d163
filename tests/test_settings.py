"""
Tests for L{muxframe.settings} and the factory's validation of them.
"""

from twisted.trial.unittest import SynchronousTestCase

from muxframe import MultiplexerFactory
from muxframe.settings import SETTINGS, Settings, coerce


class SettingsTests(SynchronousTestCase):

    def test_defaults(self):
        """
        Every setting has its documented default.
        """
        settings = Settings()
        for name, spec in SETTINGS.items():
            self.assertEqual(getattr(settings, name), spec[1])

    def test_stringsCoerced(self):
        """
        Values from endpoint strings are converted.
        """
        self.assertEqual(Settings(maxStreams="500").maxStreams, 500)
        self.assertEqual(Settings(ackTimeout="2.5").ackTimeout, 2.5)

    def test_errorsNameTheFault(self):
        """
        Unknown names, non-numbers and out-of-range values raise ValueError
        naming the setting.
        """
        cases = [
            ({"maxStream": 5}, "maxStream"),
            ({"maxStreams": "lots"}, "maxStreams must be an integer"),
            ({"maxStreams": 0}, "maxStreams=0 is out of range"),
            ({"windowSize": 1 << 24}, "windowSize"),
            ({"maxFrameSize": 1.5}, "maxFrameSize"),
            ({"idleTimeout": -1}, "idleTimeout=-1 is out of range"),
            ({"keepaliveInterval": True}, "keepaliveInterval must be a number"),
            ({"maxStreamBuffer": 5}, "replaced by maxStreamSendBuffer"),
        ]
        for kwargs, text in cases:
            with self.assertRaises(ValueError) as caught:
                Settings(**kwargs)
            self.assertIn(text, str(caught.exception))

    def test_noSendLimitByDefault(self):
        """
        A stream's send buffer has no hard limit unless one is set.
        """
        self.assertEqual(Settings().maxStreamSendBuffer, 0)
        self.assertEqual(Settings(maxStreamSendBuffer="1048576").maxStreamSendBuffer, 1 << 20)

    def test_coerceUnknown(self):
        self.assertRaises(ValueError, coerce, "nope", 1)

    def test_factoryValidates(self):
        """
        MultiplexerFactory rejects a bad framing, role or setting at once.
        """
        self.assertRaises(ValueError, MultiplexerFactory, None, framing="http")
        self.assertRaises(ValueError, MultiplexerFactory, None, role="peer")
        self.assertRaises(ValueError, MultiplexerFactory, None, maxStreams=-3)
        factory = MultiplexerFactory(None, framing="bmp", role="client", maxInFlight=4)
        self.assertEqual(factory.settings.maxInFlight, 4)
        self.assertEqual(factory.buildProtocol(None).framing, "bmp")
