"""
Reading the XTMP server's configuration: a YAML file (PyYAML
C{safe_load}) and command-line values, checked against
L{muxframe.server.schema} (whose docstring states the rules).

L{ServerConfig.fromFile} (or L{ServerConfig.fromMapping}) gives a
L{ServerConfig}: the value of every setting (default, file or option),
where each came from, the handlers, permissions and history subjects, and the design
documents' keys it ignored with their reasons.  Every fault is a
L{ConfigError} naming the key.  Nothing here imports Twisted or user code.
"""

import os
import re

from muxframe.server.errors import ConfigError
from muxframe.server.permissions import Permissions, PermissionTable, Rule
from muxframe.server.schema import (
    ALIASES, CIPHER_NAMES, CONVERSIONS, IGNORED, KEYS, SECTIONS,
    THREAD_RANGES,
)
from muxframe.xtmp.codec import CONTROL_TYPES, Cipher, MessageType

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_HANDLER_KEYS = {"handler", "blocking", "concurrency", "queue"}


def parseMessageType(value, where):
    """
    A message type from C{0x20}, C{32}, C{"0x20"} or C{"BundleSubmit"};
    only application types (not 0x01-0x08 or 0xFE) take handlers.
    """
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if text in MessageType.__members__:
            number = int(MessageType[text])
        else:
            try:
                number = int(text, 0)
            except ValueError:
                pass
    if number is None or not 0 <= number <= 0xFF:
        raise ConfigError(where, "not a message type (0x00-0xFF or a name "
                                 "such as BundleSubmit): %r" % (value,))
    if number in CONTROL_TYPES or number == MessageType.Error:
        raise ConfigError(where, "%#04x is a control type; handlers take "
                                 "application types" % (number,))
    return number


class HandlerSpec:
    """
    A handler named in the configuration.

    @ivar target: C{"module.path:attribute"}.
    @ivar where: the key it came from (for errors when importing it).
    """

    def __init__(self, messageType, target, blocking=False,
                 concurrency=None, queue=None, where="handlers"):
        self.messageType = messageType
        self.target = target
        self.blocking = blocking
        self.concurrency = concurrency
        self.queue = queue
        self.where = where

    def __repr__(self):
        return "<HandlerSpec %#04x %s%s>" % (
            self.messageType, self.target, " blocking" if self.blocking else "")


def _checkKeys(value, where, allowed):
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError("%s.%s" % (where, sorted(unknown)[0]),
                          "unknown key (use %s)" % ", ".join(sorted(allowed)))


def _handlerSpec(messageType, value, where):
    options = {}
    if isinstance(value, dict):
        _checkKeys(value, where, _HANDLER_KEYS)
        options = dict(value)
        value = options.pop("handler", None)
    if not isinstance(value, str) or not _TARGET.match(value):
        raise ConfigError(where, "expected \"package.module:function\", got "
                                 "%r" % (value,))
    parsed = {}
    for name, parse in (("blocking", KEYS["server.allow_anonymous"].parse),
                        ("concurrency", KEYS["router.concurrency"].parse),
                        ("queue", KEYS["router.queue"].parse)):
        if name in options:
            try:
                parsed[name] = parse(options[name])
            except ValueError as e:
                raise ConfigError("%s.%s" % (where, name), str(e))
    return HandlerSpec(messageType, value, where=where, **parsed)


def _patterns(value, where):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str)
                                              for v in value):
        raise ConfigError(where, "expected a list of subject patterns")
    return value


def _rule(value, where):
    if value is None:
        return Rule()
    if isinstance(value, (list, str)):
        value = {"allow": value}
    if not isinstance(value, dict):
        raise ConfigError(where, "expected {allow: [...], deny: [...]}")
    _checkKeys(value, where, {"allow", "deny"})
    allow = value.get("allow")
    try:
        return Rule(None if allow is None
                    else _patterns(allow, where + ".allow"),
                    _patterns(value.get("deny", []), where + ".deny"))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(where, str(e))


class HistorySpec:
    """
    A subject pattern whose publications keep history: the last C{size},
    none older than C{ttl} seconds; a recovery returns at most
    C{maxRecover}.
    """

    def __init__(self, pattern, size=100, ttl=300.0, maxRecover=1000):
        self.pattern = pattern
        self.size = size
        self.ttl = ttl
        self.maxRecover = maxRecover

    def __repr__(self):
        return "<HistorySpec %s size=%d ttl=%g>" % (self.pattern, self.size,
                                                   self.ttl)


_HISTORY_KEYS = {"size", "ttl", "max_recover"}


def parseHistory(mapping, where="history"):
    """
    L{HistorySpec}s from C{{pattern: {size: N, ttl: SECONDS, max_recover:
    N}}} (each key optional), in order: a subject takes the first pattern
    that matches it.
    """
    from muxframe.server.errors import BadSubject
    from muxframe.server.subjects import tokens
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        raise ConfigError(where, "expected a mapping of subject patterns")
    specs = []
    for pattern, value in mapping.items():
        here = "%s.%s" % (where, pattern)
        try:
            tokens(str(pattern))
        except BadSubject as e:
            raise ConfigError(here, e.reason)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(here, "expected {size: N, ttl: SECONDS, "
                                    "max_recover: N}")
        _checkKeys(value, here, _HISTORY_KEYS)
        parsed = {}
        for name, parse, keyword in (
                ("size", KEYS["router.concurrency"].parse, "size"),
                ("ttl", KEYS["server.handshake_timeout"].parse, "ttl"),
                ("max_recover", KEYS["router.concurrency"].parse,
                 "maxRecover")):
            if name in value:
                try:
                    parsed[keyword] = parse(value[name])
                except ValueError as e:
                    raise ConfigError("%s.%s" % (here, name), str(e))
        specs.append(HistorySpec(str(pattern), **parsed))
    return specs


def parsePermissions(mapping, where="permissions"):
    """
    A L{PermissionTable} from C{{identity: {publish: rule, subscribe:
    rule}}}; the identity C{default} applies to identities without an
    entry.  A rule is a list of allowed patterns or C{{allow: [...],
    deny: [...]}}.
    """
    if mapping is None:
        return PermissionTable()
    if not isinstance(mapping, dict):
        raise ConfigError(where, "expected a mapping of identity names")
    entries = {}
    for name, value in mapping.items():
        here = "%s.%s" % (where, name)
        if not isinstance(name, str) or not name:
            raise ConfigError(here, "identity names are strings")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(here, "expected {publish: ..., subscribe: ...}")
        _checkKeys(value, here, {"publish", "subscribe"})
        entries[name] = Permissions(
            _rule(value.get("publish"), here + ".publish"),
            _rule(value.get("subscribe"), here + ".subscribe"))
    default = entries.pop("default", None)
    return PermissionTable(entries, default)


def _uniqueKeysLoader():
    """
    PyYAML's safe loader, refusing a key given twice in one mapping: YAML
    keeps the last silently, so a repeated section or key (a second
    C{permissions:} block, say) would drop what the first one said.
    """
    import yaml

    class UniqueKeysLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for keyNode, _ in node.value:
                key = self.construct_object(keyNode, deep=deep)
                try:
                    first = seen.setdefault(key, keyNode)
                except TypeError:
                    # (An unhashable key: the base class reports it.)
                    continue
                if first is not keyNode:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        "found %r given twice (first on line %d)"
                        % (key, first.start_mark.line + 1),
                        keyNode.start_mark)
            return yaml.SafeLoader.construct_mapping(self, node, deep)

    return UniqueKeysLoader


class ServerConfig:
    """
    The server's settings.

    @ivar values: dotted key -> value, for every key of the schema.
    @ivar origins: dotted key -> where its value came from (C{"default"},
        the file's key, or C{"--option"}).
    @ivar handlers: L{HandlerSpec}s, in order.
    @ivar permissions: the L{PermissionTable}.
    @ivar ignored: C{(key, reason)} for each design-document key ignored.
    @ivar directory: what relative paths in the file are relative to.
    """

    def __init__(self, directory="."):
        self.directory = directory
        self.values = {path: key.default for path, key in KEYS.items()}
        self.origins = dict.fromkeys(KEYS, "default")
        self.handlers = []
        self.permissions = PermissionTable()
        self.permissionSource = {}
        self.history = []
        self.ignored = []

    def __getitem__(self, path):
        return self.values[path]

    @classmethod
    def fromFile(cls, path):
        """
        Read and check a YAML file.
        """
        import yaml
        try:
            with open(path, "rb") as f:
                data = yaml.load(f, Loader=_uniqueKeysLoader())
        except OSError as e:
            raise ConfigError("--config", "cannot read %s: %s"
                              % (path, e.strerror or e))
        except yaml.YAMLError as e:
            raise ConfigError("--config", "%s is not valid YAML: %s"
                              % (path, e))
        return cls.fromMapping(data if data is not None else {},
                               os.path.dirname(os.path.abspath(path)))

    @classmethod
    def fromMapping(cls, data, directory="."):
        """
        Check a parsed configuration mapping.
        """
        config = cls(directory)
        if not isinstance(data, dict):
            raise ConfigError("(top level)", "expected a mapping of sections")
        for section, body in data.items():
            config._section(section, body)
        config.finish()
        return config

    def _section(self, section, body):
        if section not in SECTIONS:
            raise ConfigError(str(section), "unknown section (known: %s)"
                              % ", ".join(SECTIONS))
        if section in IGNORED:
            self.ignored.append((section, IGNORED[section]))
            return
        if section == "handlers":
            self._handlers(body)
            return
        if section == "permissions":
            self.permissions = parsePermissions(body)
            self.permissionSource = body or {}
            return
        if section == "history":
            self.history = parseHistory(body)
            return
        if body is None:
            return
        if not isinstance(body, dict):
            raise ConfigError(section, "expected a mapping of keys")
        for name, value in body.items():
            path = "%s.%s" % (section, name)
            if path in IGNORED:
                self.ignored.append((path, IGNORED[path]))
            elif path in ALIASES:
                target, conversion = ALIASES[path]
                try:
                    converted = CONVERSIONS[conversion](value)
                except ValueError as e:
                    raise ConfigError(path, str(e))
                self._set(target, converted, path, fromFile=True)
            elif path in KEYS:
                self._set(path, value, path, fromFile=True)
            else:
                known = sorted(k.split(".", 1)[1] for k in
                               list(KEYS) + list(ALIASES) + list(IGNORED)
                               if k.startswith(section + "."))
                raise ConfigError(path, "unknown key (known in %s: %s)"
                                  % (section, ", ".join(known)))

    def _set(self, path, value, origin, fromFile=False):
        key = KEYS[path]
        try:
            parsed = key.parse(value)
        except (ValueError, TypeError) as e:
            raise ConfigError(origin, str(e))
        previous = self.origins[path]
        if fromFile and previous != "default" and \
                self.values[path] != parsed:
            raise ConfigError(origin, "conflicts with %s (both set %s)"
                              % (previous, path))
        self.values[path] = parsed
        self.origins[path] = origin

    def _handlers(self, body):
        if body is None:
            return
        if not isinstance(body, dict):
            raise ConfigError("handlers", "expected {message type: "
                                          "\"module:function\"}")
        for key, value in body.items():
            where = "handlers.%s" % (key,)
            if isinstance(key, int):
                where = "handlers.%#04x" % (key,)
            self.addHandler(_handlerSpec(parseMessageType(key, where), value,
                                         where))

    def addHandler(self, spec):
        """
        Add a L{HandlerSpec}; a later one for the same type replaces it.
        """
        self.handlers = [h for h in self.handlers
                         if h.messageType != spec.messageType] + [spec]

    # -- command line ------------------------------------------------------

    def override(self, path, text):
        """
        Set C{path} from a command-line value (it wins over the file).
        """
        self._set(path, text, "--" + KEYS[path].option)

    def overrideHandler(self, text):
        """
        C{--handler TYPE=module:function[,blocking]}.
        """
        where = "--handler"
        kind, sep, rest = text.partition("=")
        if not sep:
            raise ConfigError(where, "expected TYPE=module:function, got %r"
                              % (text,))
        target, _, flags = rest.partition(",")
        options = {"handler": target.strip()}
        for flag in filter(None, (f.strip() for f in flags.split(","))):
            if flag == "blocking":
                options["blocking"] = True
            else:
                raise ConfigError(where, "unknown handler option %r (use "
                                         "blocking)" % (flag,))
        self.addHandler(_handlerSpec(parseMessageType(kind, where), options,
                                     where))

    def overridePermission(self, text):
        """
        C{--permission IDENTITY:publish|subscribe:allow|deny:PATTERN}.
        """
        parts = text.split(":", 3)
        if len(parts) != 4 or parts[1] not in ("publish", "subscribe") or \
                parts[2] not in ("allow", "deny"):
            raise ConfigError("--permission", "expected IDENTITY:publish|"
                              "subscribe:allow|deny:PATTERN, got %r" % (text,))
        name, action, kind, pattern = parts
        source = self.permissionSource
        if not isinstance(source, dict):
            source = {}
        entry = dict(source.get(name) or {})
        rule = entry.get(action)
        if isinstance(rule, (list, str)):
            rule = {"allow": rule}
        rule = dict(rule or {})
        rule[kind] = list(_patterns(rule.get(kind, []), "--permission")) + [
            pattern]
        entry[action] = rule
        source = dict(source)
        source[name] = entry
        self.permissions = parsePermissions(source, "--permission")
        self.permissionSource = source

    # -- derived values ----------------------------------------------------

    def finish(self):
        """
        Check what single keys cannot: required keys, combinations.
        """
        v = self.values
        preferred = v["xtmp_protocol.default_encryption"]
        if preferred:
            names = [n for n in v["server.ciphers"] if n not in preferred]
            v["server.ciphers"] = list(preferred) + names
        if "none" in v["server.ciphers"] and not v["server.allow_plaintext"]:
            raise ConfigError("server.ciphers", "cipher none needs "
                              "server.allow_plaintext (or "
                              "security.require_encryption: false)")
        if v["xtmp_protocol.fragment_size"] > v["xtmp_protocol.max_frame_size"]:
            raise ConfigError("xtmp_protocol.fragment_size",
                              "must not exceed xtmp_protocol.max_frame_size")
        if v["storage.engine"] == "redis" and not v["storage.address"]:
            raise ConfigError("storage.address", "required with "
                              "storage.engine: redis")
        if v["server.identity_password_file"] and \
                v["server.identity_password_env"]:
            raise ConfigError("server.identity_password_file",
                              "give the password by file or by environment "
                              "variable, not both")

    def requireIdentity(self):
        """
        Raise L{ConfigError} unless an identity file is configured.
        """
        if not self.values["server.identity"]:
            raise ConfigError("server.identity", "required: the server's "
                              "Identity PEM file")

    def path(self, key):
        """
        The file named by setting C{key}, resolved: relative to the
        configuration file's directory if it came from the file.
        """
        value = self.values[key]
        if value is None:
            return None
        if self.origins[key].startswith("--"):
            return os.path.abspath(value)
        return os.path.join(self.directory, os.path.expanduser(value))

    def ciphers(self):
        """
        The accepted L{Cipher}s, in order.
        """
        return tuple(CIPHER_NAMES[n] for n in self.values["server.ciphers"])

    def xtmpSettings(self):
        """
        Keyword arguments for L{muxframe.xtmp.Settings}.
        """
        v = self.values
        return {
            "heartbeatInterval": v["xtmp_protocol.heartbeat_interval"],
            "sessionTimeout": v["xtmp_protocol.session_timeout"],
            "handshakeTimeout": v["server.handshake_timeout"],
            "keyUpdateMessages": v["xtmp_protocol.key_update_messages"],
            "keyUpdateInterval": v["xtmp_protocol.key_update_interval"],
            "maxPayload": v["xtmp_protocol.max_frame_size"],
            "fragmentSize": v["xtmp_protocol.fragment_size"],
            "maxMessageSize": v["xtmp_protocol.max_payload_size"],
            "maxQueuedBytes": v["xtmp_protocol.max_queued_bytes"],
            "compressThreshold": v["xtmp_protocol.compress_threshold"],
            "requestTimeout": v["xtmp_protocol.request_timeout"],
        }

    def concurrencyFor(self, messageType):
        """
        The design documents' per-range thread count for C{messageType},
        or L{None}.
        """
        for path, types in THREAD_RANGES.items():
            if messageType in types and self.values[path] is not None:
                return self.values[path]
        return None


__all__ = ["ConfigError", "HandlerSpec", "HistorySpec", "ServerConfig",
           "parseMessageType", "parseHistory", "parsePermissions", "Cipher"]
