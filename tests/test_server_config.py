"""
Tests for the XTMP server's configuration: the documented example and the
design documents' own example load; every design-document key is mapped
or ignored with a reason; unknown keys and bad values are errors naming
the key; options override the file.
"""

import os

import yaml
from twisted.trial.unittest import SynchronousTestCase

from muxframe.server.config import ServerConfig, parseMessageType
from muxframe.server.errors import ConfigError
from muxframe.server.schema import ALIASES, IGNORED, KEYS, SCHEMA
from muxframe.xtmp.codec import Cipher


ISSUE_EXAMPLE = """
server:
  endpoint: "tcp:8090:interface=127.0.0.1"
  identity: server.pem
  authorized_keys: authorized_keys
  max_connections: 10000
  max_connections_per_client: 10
xtmp_protocol:
  heartbeat_interval: 30
  session_timeout: 3600
  max_payload_size: 16777216
security:
  key_rotation_interval: 86400
  max_failed_attempts: 3
handlers:
  0x20: "myapp.bundles:submit"
"""

# The design documents' "Configuration" section (002), verbatim.
DESIGN_EXAMPLE = """
xtmp_protocol:
  version: 1
  magic_bytes: "XTMP"
  default_encryption: "aes256gcm"
  session_timeout: 3600
  heartbeat_interval: 30
  max_payload_size: 16777216  # 16MB

connection_management:
  max_connections_per_client: 10
  connection_pool_size: 1000
  tcp_keepalive: true
  udp_buffer_size: 65536

security:
  require_encryption: true
  key_rotation_interval: 86400
  authentication_required: true
  max_failed_attempts: 3

bpci_xtmp_server:
  bind_address: "0.0.0.0:8090"
  max_connections: 10000
  connection_timeout: 300
  heartbeat_interval: 30
  enable_compression: true
  enable_real_time_streams: true

message_routing:
  wallet_handler_threads: 4
  bundle_handler_threads: 8
  registry_handler_threads: 2
  stream_handler_threads: 4

performance:
  message_buffer_size: 1024
  batch_processing: true
  async_processing: true
  connection_pooling: true

http_cage_protocol:
  supported_protocols: ["HTTP", "HTTPS", "WebSocket", "httpcg"]
  httpcg_version: "1.0"
  security_headers:
    - "X-httpcg-Protocol"
    - "X-BPI-Security-Level"
    - "X-Request-ID"

protocol_transformation:
  enable_onion_layering: true
  security_level: "high"
  header_injection: true
  request_validation: true
"""


def load(text, directory="/etc/xtmp"):
    return ServerConfig.fromMapping(yaml.safe_load(text), directory)


class ExampleTests(SynchronousTestCase):
    def test_issueExample(self):
        c = load(ISSUE_EXAMPLE)
        self.assertEqual(c["server.endpoint"], ["tcp:8090:interface=127.0.0.1"])
        self.assertEqual(c.path("server.identity"), "/etc/xtmp/server.pem")
        self.assertEqual(c["server.max_connections_per_client"], 10)
        self.assertEqual(c["xtmp_protocol.key_update_interval"], 86400)
        self.assertEqual(c.xtmpSettings()["maxMessageSize"], 16777216)
        self.assertEqual([(h.messageType, h.target) for h in c.handlers],
                         [(0x20, "myapp.bundles:submit")])

    def test_designExampleLoads(self):
        """
        The design documents' configuration loads; each key is mapped to a
        setting or ignored with a reason.
        """
        c = load(DESIGN_EXAMPLE)
        self.assertEqual(c["server.endpoint"], ["tcp:8090:interface=0.0.0.0"])
        self.assertEqual(c["xtmp_protocol.compress_threshold"], 1024)
        self.assertTrue(c["server.tcp_keepalive"])
        self.assertFalse(c["server.allow_plaintext"])
        self.assertFalse(c["server.allow_anonymous"])
        self.assertEqual(c["router.queue"], 1024)
        self.assertEqual(c.concurrencyFor(0x21), 8)
        self.assertEqual(c.ciphers()[0], Cipher.AES_256_GCM)
        ignored = dict(c.ignored)
        for key in ("connection_management.connection_pool_size",
                    "connection_management.udp_buffer_size",
                    "bpci_xtmp_server.connection_timeout",
                    "performance.batch_processing", "http_cage_protocol",
                    "protocol_transformation"):
            self.assertIn(key, ignored)
            self.assertTrue(ignored[key])
        data = yaml.safe_load(DESIGN_EXAMPLE)
        for section, body in data.items():
            if section in IGNORED:
                continue
            for key in body:
                path = "%s.%s" % (section, key)
                self.assertTrue(path in KEYS or path in ALIASES
                                or path in IGNORED, path)


class ErrorTests(SynchronousTestCase):
    def assertKeyError(self, text, key):
        e = self.assertRaises(ConfigError, load, text)
        self.assertEqual(e.key, key)
        self.assertIn(key, str(e))
        return e

    def test_unknownKeyAndSection(self):
        e = self.assertKeyError("server:\n  max_conections: 5\n",
                                "server.max_conections")
        self.assertIn("max_connections", str(e))
        self.assertKeyError("srever:\n  endpoint: tcp:1\n", "srever")

    def test_badValues(self):
        for text, key in [
                ("server:\n  max_connections: many\n", "server.max_connections"),
                ("server:\n  max_connections: -1\n", "server.max_connections"),
                ("server:\n  allow_anonymous: maybe\n", "server.allow_anonymous"),
                ("xtmp_protocol:\n  heartbeat_interval: 0\n",
                 "xtmp_protocol.heartbeat_interval"),
                ("xtmp_protocol:\n  version: 2\n", "xtmp_protocol.version"),
                ("server:\n  ciphers: [rot13]\n", "server.ciphers"),
                ("bpci_xtmp_server:\n  bind_address: nowhere\n",
                 "bpci_xtmp_server.bind_address"),
                ("server:\n  max_connections: true\n", "server.max_connections")]:
            self.assertKeyError(text, key)

    def test_conflict(self):
        e = self.assertKeyError(
            "xtmp_protocol:\n  heartbeat_interval: 30\n"
            "bpci_xtmp_server:\n  heartbeat_interval: 10\n",
            "bpci_xtmp_server.heartbeat_interval")
        self.assertIn("xtmp_protocol.heartbeat_interval", str(e))

    def test_combinations(self):
        self.assertKeyError("server:\n  ciphers: [none]\n", "server.ciphers")
        load("server:\n  ciphers: [none]\nsecurity:\n  require_encryption: false\n")
        self.assertKeyError("xtmp_protocol:\n  fragment_size: 2000000\n",
                            "xtmp_protocol.fragment_size")

    def test_handlers(self):
        c = load("handlers:\n  BundleStatus: {handler: 'a.b:c', blocking: true, "
                 "concurrency: 2, queue: 0}\n  '0x22': x.y:z\n  35: m:f\n")
        specs = {h.messageType: h for h in c.handlers}
        self.assertEqual(sorted(specs), [0x21, 0x22, 0x23])
        self.assertTrue(specs[0x21].blocking)
        self.assertEqual((specs[0x21].concurrency, specs[0x21].queue), (2, 0))
        self.assertKeyError("handlers:\n  0x20: not-a-target\n", "handlers.0x20")
        self.assertKeyError("handlers:\n  0x03: a:b\n", "handlers.0x03")
        self.assertKeyError("handlers:\n  Nonsense: a:b\n", "handlers.Nonsense")
        self.assertKeyError("handlers:\n  0x20: {handler: a:b, threads: 3}\n",
                            "handlers.0x20.threads")
        self.assertKeyError("handlers:\n  0x20: {handler: a:b, queue: -1}\n",
                            "handlers.0x20.queue")

    def test_permissions(self):
        c = load("permissions:\n  alice:\n    publish: ['a.>']\n"
                 "    subscribe: {allow: ['b.*'], deny: ['b.x']}\n"
                 "  default:\n    publish: {deny: ['>']}\n")
        alice = c.permissions.forIdentity("alice")
        self.assertTrue(alice.canPublish(("a", "b")))
        self.assertFalse(c.permissions.forIdentity("zed").canPublish(("a",)))
        self.assertKeyError("permissions:\n  alice:\n    publsh: [a]\n",
                            "permissions.alice.publsh")
        self.assertKeyError("permissions:\n  alice:\n    publish: {allow: ['a..b']}\n",
                            "permissions.alice.publish")
        self.assertKeyError("permissions:\n  alice:\n    publish: {alow: [a]}\n",
                            "permissions.alice.publish.alow")

    def test_notYaml(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("server: [unclosed\n")
        e = self.assertRaises(ConfigError, ServerConfig.fromFile, path)
        self.assertIn("not valid YAML", str(e))
        e = self.assertRaises(ConfigError, ServerConfig.fromFile, path + ".no")
        self.assertIn("cannot read", str(e))


    def test_keyGivenTwice(self):
        """
        A section or key given twice is an error naming it and both lines
        (YAML would keep the last: a second permissions block would drop
        the first one's deny rule).
        """
        for text, key, first, second in [
            ("permissions:\n  bob:\n    publish: {deny: ['orders.>']}\n"
             "server:\n  max_connections: 5\n"
             "permissions:\n  alice:\n    publish: {allow: ['>']}\n",
             "permissions", 1, 6),
            ("server:\n  max_connections: 5\n  max_connections: 6\n",
             "max_connections", 2, 3),
        ]:
            path = self.mktemp()
            with open(path, "w") as f:
                f.write(text)
            e = self.assertRaises(ConfigError, ServerConfig.fromFile, path)
            self.assertIn("found %r given twice (first on line %d)"
                          % (key, first), str(e))
            self.assertIn("line %d" % (second,), str(e))


class OverrideTests(SynchronousTestCase):
    def test_optionsWin(self):
        c = load(ISSUE_EXAMPLE)
        c.override("server.max_connections", "5")
        c.override("server.identity", "other.pem")
        self.assertEqual(c["server.max_connections"], 5)
        self.assertEqual(c.origins["server.max_connections"], "--max-connections")
        self.assertEqual(c.path("server.identity"), os.path.abspath("other.pem"))
        e = self.assertRaises(ConfigError, c.override, "server.max_connections",
                              "x")
        self.assertEqual(e.key, "--max-connections")

    def test_handlerAndPermissionOptions(self):
        c = load(ISSUE_EXAMPLE)
        c.overrideHandler("0x21=pkg.mod:f,blocking")
        c.overrideHandler("0x20=pkg.mod:g")
        self.assertEqual({(h.messageType, h.target, h.blocking)
                          for h in c.handlers},
                         {(0x20, "pkg.mod:g", False), (0x21, "pkg.mod:f", True)})
        c.overridePermission("bob:publish:allow:x.>")
        c.overridePermission("bob:publish:deny:x.y")
        bob = c.permissions.forIdentity("bob")
        self.assertTrue(bob.canPublish(("x", "z")))
        self.assertFalse(bob.canPublish(("x", "y")))
        for bad in ("bob:write:allow:x", "bob:publish:maybe:x", "bob"):
            self.assertRaises(ConfigError, c.overridePermission, bad)
        self.assertRaises(ConfigError, c.overrideHandler, "0x21")
        self.assertRaises(ConfigError, c.overrideHandler, "0x21=a:b,fast")

    def test_everyKeyHasAnOptionAndDoc(self):
        options = [k.option for k in SCHEMA]
        self.assertEqual(len(options), len(set(options)))
        for key in SCHEMA:
            self.assertTrue(key.doc and key.unit, key.path)
            # The default passes the key's own check.
            if key.default is not None:
                key.parse(key.default)

    def test_messageTypes(self):
        self.assertEqual(parseMessageType("BundleSubmit", "x"), 0x20)
        self.assertEqual(parseMessageType(0x80, "x"), 0x80)
        self.assertRaises(ConfigError, parseMessageType, "0x1FF", "x")
        self.assertRaises(ConfigError, parseMessageType, "Error", "x")
