"""
docs/presence-and-queues.md section 9's claims, checked: its client
example runs against a real server, every byte example is the encoding
it describes, its schema lists every field of the codec, and the server
codes it names have those numbers.
"""

import os
import re
import subprocess
import sys

from twisted.trial.unittest import TestCase

from muxframe.engines.model import Address
from muxframe.messaging import wire
from muxframe.messaging.wire import CLASSES, encodeField
from muxframe.server.queues import storedMessage
from muxframe.xtmp import XTMPErrorCode

from tests.test_engines_docs import ROOT, read


def section9():
    text = read()
    return text[text.index("## 9. "):text.index("## 10. ")]


def shown(hexText):
    return bytes.fromhex(" ".join(hexText.split()))


class WireDocTests(TestCase):
    def test_clientExampleRuns(self):
        code = re.findall(r"```python\n(.*?)```", section9(), re.S)[0]
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        out = result.stdout.decode()
        self.assertIn("alice got b'hello' from bob", out)
        self.assertIn("bob's receipts: ['delivered', 'read']", out)
        self.assertIn("alice is ['phone'] status 1", out)

    def test_byteExamples(self):
        text = " ".join(section9().split())
        T = 1700000000000
        examples = [
            wire.Bind(identity=wire.Identity(eid="", device="phone")).encode(),
            wire.Bind(identity=wire.Identity(eid="alice", device="phone", node="node-a"),
                      status=1, delivered=2, read=1, next_offset=4, timestamp=T).encode(),
            wire.Awareness(id="a1", type=1, status=3, details="lunch").encode(),
            wire.Awareness(from_=wire.Identity(eid="alice", device="phone"), type=2,
                           status=3, location_sharing=2, details="lunch", timestamp=T,
                           visibility=1, version=T * 1000).encode(),
            wire.AwarenessVisibility(type=2).encode(),
            wire.LocationStream(latitude=52.5, longitude=13.4, location_sharing=1).encode(),
            wire.AwarenessSubscription(type=1, action=1,
                                       to=wire.Identity(eid="alice")).encode(),
            wire.Message(id="m1", to=wire.Identity(eid="alice"), payload=b"hi").encode(),
            storedMessage(wire.Message(id="m1", to=wire.Identity(eid="alice"), payload=b"hi"),
                          Address("bob", "laptop"), "alice"),
            wire.Signal(id="m1", signal_offset=3, user_offset=7, status=1, timestamp=T,
                        from_=wire.Identity(eid="bob", device="laptop"),
                        to=wire.Identity(eid="alice"), type=2, signal_type=1,
                        signal_lifecycle_state="sent",
                        signal_ack_state=wire.SignalAckState(send=True),
                        signal_request=2).encode(),
            encodeField(2, wire.UINT64, 3) + encodeField(7, wire.INT64, T)
            + encodeField(12, wire.INT32, 3) + encodeField(14, wire.INT32, 2),
            wire.Signal(signal_offset=3, status=1, type=1,
                        signal_ack_state=wire.SignalAckState(delivered=True)).encode(),
            wire.Signal(status=7, type=1).encode(),
            wire.ChannelHistory(subject="chat.room", type=1, offset=5, epoch="e1",
                                recover=True).encode(),
        ]
        for data in examples:
            self.assertIn(data.hex(" "), text)

    def test_schemaListsEveryField(self):
        block = re.search(r"```proto\n(.*?)```", section9(), re.S).group(1)
        for cls in set(CLASSES.values()) | {wire.Identity, wire.SignalAckState, wire.Device,
                                            wire.ActivityEntry, wire.SubscriptionEntry,
                                            wire.Publication}:
            body = re.search(r"message %s \{(.*?)\n?\}" % (cls.__name__,), block, re.S)
            self.assertIsNotNone(body, cls.__name__)
            for number, name, kind, repeated, optional in cls.FIELDS:
                protoName = {"from_": "from", "device": "connection_resource_id"}.get(
                    name, name) if cls is wire.Identity or name == "from_" else name
                self.assertRegex(body.group(1), r"\b%s = %d;" % (protoName, number),
                                 "%s.%s" % (cls.__name__, name))

    def test_codes(self):
        for name, number in re.findall(r"`([A-Z_]+)` \((\d+)\)", section9()):
            self.assertEqual(XTMPErrorCode[name], int(number), name)
