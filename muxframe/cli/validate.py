"""
C{validate}: decode a file of XTMP messages (one or more frames, as the
wire carries them, such as C{capture --save} writes) and show each one's
header and security-layer fields, its checksum, and for plaintext
messages its body; every fault is named by the codec's own error
(C{BadMagic}, C{BadVersion}, C{BadFlags}, C{MessageTooLarge},
C{MalformedMessage}, C{ChecksumMismatch}) or C{Truncated}.

An encrypted message's checksum covers its plaintext, and its tag the
header and ciphertext: neither can be checked without the session's keys,
which only its two ends have; the security layer's own rules (cipher,
reserved bytes, nonce padding) are checked.
"""

import zlib

from muxframe.cli.common import CLIError, emitJSON, payloadBytes, say
from muxframe.xtmp import codec
from muxframe.xtmp.codec import (
    HEADER, HEADER_SIZE, SECURITY_PREFIX, SECURITY_SIZE, TAG_SIZE, Cipher,
    Flags,
)


def addValidate(subparsers):
    parser = subparsers.add_parser(
        "validate", help="decode and check a file of XTMP messages",
        description="Decode each message of FILE: header (magic, version, "
                    "type, flags, session, sequence, length, checksum), "
                    "security layer (cipher, epoch, key id, nonce, tag), the "
                    "checksum, and plaintext bodies.  Exit 0 when every "
                    "message is valid, 1 naming the first fault.")
    parser.add_argument("file", help="the message file ('-': stdin)")
    parser.add_argument("--max-payload", type=payloadBytes,
                        default=codec.DEFAULT_MAX_PAYLOAD,
                        help="largest payload accepted (default 1 MiB)")
    parser.add_argument("--show-headers", action="store_true", default=True,
                        help="show every field (the default)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=validate)


def _typeName(value):
    try:
        return "%s (%#04x)" % (codec.MessageType(value).name, value)
    except ValueError:
        return "%#04x" % (value,)


def _flagNames(value):
    names = [f.name for f in Flags if f.value and value & f.value]
    unknown = value & ~codec.KNOWN_FLAGS
    if unknown:
        names.append("unknown %#06x" % (unknown,))
    return names


class Truncated(Exception):
    """
    The file ends inside a message.
    """


def decodeOne(data, offset, maxPayload):
    """
    Describe the message at C{offset}; return C{(description, end, error)}.
    """
    info = {"offset": offset}
    rest = len(data) - offset
    if rest < HEADER_SIZE:
        return info, len(data), Truncated(
            "the file ends inside a header (%d of %d bytes)" % (rest, HEADER_SIZE))
    magic, version, mtype, flags, sessionId, sequence, length, checksum = \
        HEADER.unpack_from(data, offset)
    info["header"] = {
        "magic": magic.decode("latin-1"), "version": version,
        "type": mtype, "typeName": _typeName(mtype), "flags": flags,
        "flagNames": _flagNames(flags), "sessionId": "%#x" % (sessionId,),
        "sequence": sequence, "payloadLength": length,
        "checksum": "%#010x" % (checksum,)}
    encrypted = bool(flags & Flags.ENCRYPTED)
    total = HEADER_SIZE + (SECURITY_SIZE if encrypted else 0) + length
    if encrypted and rest >= HEADER_SIZE + SECURITY_SIZE:
        cipher, reserved, epoch, keyId, nonce = SECURITY_PREFIX.unpack_from(
            data, offset + HEADER_SIZE)
        tagAt = offset + HEADER_SIZE + SECURITY_SIZE - TAG_SIZE
        info["security"] = {
            "cipher": cipher, "cipherName": Cipher.describe(cipher),
            "reserved": reserved.hex(), "epoch": epoch, "keyId": keyId.hex(),
            "nonce": nonce[:12].hex(), "noncePadding": nonce[12:].hex(),
            "tag": data[tagAt:tagAt + TAG_SIZE].hex()}
    # The codec's own checks, in its order, on exactly this message.
    decoder = codec.Decoder(maxPayload)
    decoder.append(data[offset:offset + total])
    try:
        frames = list(decoder.frames())
    except Exception as e:  # the codec's typed errors
        return info, min(len(data), offset + total), e
    if not frames:
        return info, len(data), Truncated(
            "the file ends inside message payload: %d of %d bytes"
            % (rest, total))
    payload = frames[0].payload
    if encrypted:
        info["checksum"] = ("not checkable without the session keys (it covers "
                            "the plaintext; the tag covers header and "
                            "ciphertext)")
    else:
        info["checksum"] = "ok (CRC-32 %#010x of the payload)" % (
            zlib.crc32(payload),)
        info["body"] = _body(mtype, flags, payload, sequence, maxPayload)
    info["size"] = total
    return info, offset + total, None


def _body(mtype, flags, payload, sequence, maxPayload):
    from muxframe.xtmp.session import parseBody
    if mtype in (codec.MessageType.Handshake, codec.MessageType.HandshakeAck):
        return {"kind": "handshake", "bytes": len(payload)}
    try:
        message = parseBody(mtype, flags, payload, sequence, maxPayload)
    except Exception as e:
        return {"error": "%s: %s" % (type(e).__name__, e)}
    body = {"bytes": len(message.payload)}
    if message.requestSequence is not None:
        body["respondsTo"] = message.requestSequence
    if message.deliveryId is not None:
        body["deliveryId"] = message.deliveryId
    if message.streamName is not None:
        body["subject"] = message.streamName
    if mtype == codec.MessageType.Error:
        try:
            code, reason = codec.decodeReason(message.payload)
        except Exception as e:
            body["error"] = "%s: %s" % (type(e).__name__, e)
        else:
            from muxframe.xtmp.errors import XTMPErrorCode
            body["code"] = XTMPErrorCode.describe(code)
            body["reason"] = reason
    return body


def validate(args):
    import sys
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(args.file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise CLIError("cannot read %s: %s" % (args.file, e.strerror or e))
    if not data:
        raise CLIError("%s is empty" % (args.file,))
    messages, error, offset = [], None, 0
    while offset < len(data) and error is None:
        info, offset, error = decodeOne(data, offset, args.max_payload)
        if error is not None:
            info["error"] = {"name": type(error).__name__, "message": str(error)}
            code = getattr(error, "code", None)
            if code is not None:
                from muxframe.xtmp.errors import XTMPErrorCode
                info["error"]["code"] = XTMPErrorCode.describe(code)
        messages.append(info)
    if args.json:
        emitJSON({"file": args.file, "valid": error is None,
                  "messages": messages})
    else:
        for number, info in enumerate(messages, 1):
            _show(number, info)
        if error is None:
            say("valid: %d message%s, %d bytes" % (
                len(messages), "" if len(messages) == 1 else "s", len(data)))
    if error is not None:
        say("invalid: message %d at offset %d: %s: %s" % (
            len(messages), messages[-1]["offset"], type(error).__name__, error),
            sys.stderr)
        return 1
    return 0


def _show(number, info):
    h = info.get("header")
    say("message %d at offset %d%s" % (
        number, info["offset"], ": %d bytes" % (info["size"],)
        if "size" in info else ""))
    if h is not None:
        say("  header: magic %r, version %d, type %s, flags %#06x (%s), "
            "session %s, sequence %d, payload %d bytes, checksum %s" % (
                h["magic"], h["version"], h["typeName"], h["flags"],
                ", ".join(h["flagNames"]) or "none", h["sessionId"],
                h["sequence"], h["payloadLength"], h["checksum"]))
    s = info.get("security")
    if s is not None:
        say("  security layer: cipher %s, reserved %s, epoch %d, key id %s, "
            "nonce %s (padding %s), tag %s" % (
                s["cipherName"], s["reserved"], s["epoch"], s["keyId"],
                s["nonce"], s["noncePadding"], s["tag"]))
    elif h is not None and "error" not in info:
        say("  security layer: none (plaintext)")
    if "checksum" in info:
        say("  checksum: %s" % (info["checksum"],))
    body = info.get("body")
    if body:
        say("  body: " + ", ".join("%s %s" % item for item in sorted(body.items())))
    if "error" in info:
        say("  error: %s: %s" % (info["error"]["name"], info["error"]["message"]))


__all__ = ["addValidate", "decodeOne", "validate"]
