"""
C{connect}, C{send}, C{request} and C{subscribe}: an XTMP session of the
command's own (C{docs/xtmp.md}), to a server whose key is pinned.
"""

import time

from twisted.internet.defer import Deferred, inlineCallbacks

from muxframe.xtmp.connection import CLOSED

from muxframe.cli.common import (
    CLIError, addConnectArguments, addPayloadArguments, close, connect,
    countOrNone, emitJSON, parseFlags, parseType, payloadJSON, ping,
    positiveCount, readPayload, runTwisted, say, secondsOrNone,
    serverClosed, showPayload, withTimeout,
)


def _describeSession(protocol, handshake, rtts):
    from muxframe.xtmp.codec import Cipher
    result = protocol.result
    peer = protocol.peerIdentity
    return {
        "session_id": "%#x" % (protocol.sessionId,),
        "connection_status": "established",
        "cipher": Cipher.describe(result.cipher),
        "encryption_enabled": result.cipher != Cipher.NONE,
        "resumed": bool(getattr(result, "resumed", False)),
        "server_fingerprint": peer.fingerprint if peer is not None else None,
        "handshake_ms": round(handshake * 1000, 3),
        "rtt_ms": round(min(rtts) * 1000, 3) if rtts else None,
        "rtt_avg_ms": round(sum(rtts) / len(rtts) * 1000, 3) if rtts else None,
    }


def addConnect(subparsers):
    parser = subparsers.add_parser(
        "connect", help="handshake with a server and show the session",
        description="Connect, complete the hybrid handshake, measure the "
                    "round trip, print the session id, cipher and RTT, and "
                    "disconnect.")
    addConnectArguments(parser)
    parser.add_argument("--pings", type=positiveCount, default=3,
                        help="round trips to measure (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=lambda args: runTwisted(_connect, args))


@inlineCallbacks
def _connect(reactor, args):
    started = time.perf_counter()
    protocol = yield connect(reactor, args)
    handshake = time.perf_counter() - started
    rtts = []
    for _ in range(args.pings):
        # The server confirms: the handshake (our authentication too) held.
        rtt = yield withTimeout(reactor, ping(protocol), args.timeout, "ping")
        rtts.append(rtt)
    info = _describeSession(protocol, handshake, rtts)
    yield close(protocol)
    if args.json:
        emitJSON(info)
    else:
        # All of it: --server-fingerprint takes nothing shorter.
        say("connected: session %s, %s, server %s" % (
            info["session_id"], info["cipher"],
            info["server_fingerprint"] or "?"))
        say("handshake %.1f ms, rtt %.3f ms (min of %d; avg %.3f ms)" % (
            info["handshake_ms"], info["rtt_ms"], len(rtts),
            info["rtt_avg_ms"]))
    return 0


def _addMessageArguments(parser):
    parser.add_argument("--type", "-t", required=True,
                        help="the message type: a name (BundleSubmit) or a "
                             "number (0x20)")
    addPayloadArguments(parser)
    parser.add_argument("--flags", default="",
                        help="comma-separated: ENCRYPTED (check the session "
                             "is), REQUIRES_ACK, PRIORITY_HIGH, EMERGENCY, "
                             "COMPRESSED")
    parser.add_argument("--json", action="store_true", help="print JSON")


def addSend(subparsers):
    parser = subparsers.add_parser(
        "send", help="send one message",
        description="Connect, send one message (waiting for its "
                    "acknowledgement with REQUIRES_ACK), and disconnect.")
    addConnectArguments(parser)
    _addMessageArguments(parser)
    parser.set_defaults(run=lambda args: runTwisted(_send, args))


@inlineCallbacks
def _openForMessage(reactor, args):
    """
    The message of the options, and a session to send it on:
    C{(type, flags, payload, protocol)}.
    """
    from muxframe.xtmp.codec import Cipher
    messageType = parseType(args.type)
    flags, encrypted = parseFlags(args.flags)
    payload = readPayload(args)
    protocol = yield connect(reactor, args)
    if encrypted and protocol.result.cipher == Cipher.NONE:
        yield close(protocol)
        raise CLIError("--flags ENCRYPTED: the session is not encrypted")
    return messageType, flags, payload, protocol


@inlineCallbacks
def _send(reactor, args):
    from muxframe.xtmp.codec import Flags
    messageType, flags, payload, protocol = yield _openForMessage(reactor, args)
    started = time.perf_counter()
    protocol.send(messageType, payload, flags)
    acked = None
    if flags & Flags.REQUIRES_ACK:
        yield withTimeout(reactor, _whenAcknowledged(reactor, protocol),
                          args.timeout, "waiting for the acknowledgement")
        acked = round((time.perf_counter() - started) * 1000, 3)
    else:
        # The server confirms the round trip: what we sent before it was read.
        yield withTimeout(reactor, ping(protocol), args.timeout, "ping")
    yield close(protocol)
    info = {"session_id": "%#x" % (protocol.sessionId,), "type": messageType,
            "bytes": len(payload), "flags": int(flags), "acked_ms": acked}
    if args.json:
        emitJSON(info)
    else:
        say("sent %d bytes of type %#04x on session %s%s" % (
            len(payload), messageType, info["session_id"],
            "" if acked is None else ", acknowledged in %.1f ms" % (acked,)))
    return 0


def _whenAcknowledged(reactor, protocol):
    """
    A Deferred firing once nothing sent with REQUIRES_ACK is unacknowledged
    (failing if the session ends first).
    """
    d = Deferred()

    def check():
        if d.called:
            return
        conn = protocol.connection
        if conn.resumption is None or not conn.resumption.pending():
            d.callback(None)
        else:
            reactor.callLater(0.01, check)

    protocol.whenClosed().addCallback(
        lambda why: None if d.called else d.errback(
            CLIError("the session ended before the acknowledgement: %s"
                     % (serverClosed(protocol, why),))))
    check()
    return d


def addRequest(subparsers):
    parser = subparsers.add_parser(
        "request", help="send a request and print the response",
        description="Connect, send a request (to the server's handler for "
                    "--type, or with --subject to a session serving that "
                    "subject), print the response, and disconnect.  An Error "
                    "answer is a failure (exit 1) naming its code.")
    addConnectArguments(parser)
    _addMessageArguments(parser)
    parser.add_argument("--subject", "-s",
                        help="route the request to a subject's responder")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write the response payload to FILE ('-': raw "
                             "to stdout)")
    parser.set_defaults(run=lambda args: runTwisted(_request, args))


@inlineCallbacks
def _request(reactor, args):
    messageType, flags, payload, protocol = yield _openForMessage(reactor, args)
    started = time.perf_counter()
    try:
        reply = yield protocol.request(messageType, payload, flags,
                                       timeout=args.timeout,
                                       subject=args.subject)
    finally:
        yield close(protocol)
    rtt = (time.perf_counter() - started) * 1000
    info = {"session_id": "%#x" % (protocol.sessionId,), "type": reply.type,
            "rtt_ms": round(rtt, 3)}
    info.update(payloadJSON(reply.payload))
    if args.output == "-":
        import sys
        sys.stdout.buffer.write(reply.payload)
        sys.stdout.flush()
    elif args.output:
        with open(args.output, "wb") as f:
            f.write(reply.payload)
    if args.json:
        emitJSON(info)
    elif args.output != "-":
        say("response type %#04x, %d bytes, %.1f ms: %s" % (
            reply.type, len(reply.payload), rtt, showPayload(reply.payload)))
    return 0


def addSubscribe(subparsers):
    parser = subparsers.add_parser(
        "subscribe", help="print the messages of subjects as they come",
        description="Subscribe to subjects (wildcards * and > allowed) and "
                    "print each message as it arrives, one line each, until "
                    "--count messages, --duration seconds, or SIGINT/SIGTERM.")
    addConnectArguments(parser)
    parser.add_argument("subjects", nargs="+", metavar="SUBJECT")
    parser.add_argument("--group", "-g", help="join this queue group")
    parser.add_argument("--count", "-c", type=countOrNone, default=0,
                        help="stop after this many messages (default 0: "
                             "no limit)")
    parser.add_argument("--duration", type=secondsOrNone, default=0,
                        help="stop after this many seconds (default 0: no "
                             "limit)")
    parser.add_argument("--json", action="store_true",
                        help="print each message as a line of JSON")
    parser.set_defaults(run=lambda args: runTwisted(_subscribe, args))


@inlineCallbacks
def _subscribe(reactor, args):
    protocol = yield connect(reactor, args)
    done = Deferred()
    seen = [0]

    def show(message):
        seen[0] += 1
        if args.json:
            out = {"subject": message.streamName, "type": message.type,
                   "n": seen[0], "time": time.time()}
            out.update(payloadJSON(message.payload))
            emitJSON(out)
        else:
            say("%s type=%#04x %d bytes: %s" % (
                message.streamName, message.type, len(message.payload),
                showPayload(message.payload)))
        if args.count and seen[0] >= args.count and not done.called:
            done.callback(None)

    for subject in args.subjects:
        yield withTimeout(reactor, protocol.subscribe(subject, show,
                                                      group=args.group),
                          args.timeout, "subscribing to %s" % (subject,))
    if not args.json:
        say("subscribed to %s; waiting for messages" % (", ".join(args.subjects),))
    else:
        emitJSON({"subscribed": args.subjects, "group": args.group,
                  "session_id": "%#x" % (protocol.sessionId,)})

    def ended(why):
        # Closed before --count, --duration or a signal asked: the server
        # ended it, even cleanly (GOING_AWAY: a drain, an admin's
        # disconnect), so the messages stop short of what was asked.
        if not done.called:
            done.errback(serverClosed(protocol, why))

    protocol.whenClosed().addCallback(ended)
    if args.duration:
        timer = reactor.callLater(args.duration, lambda: None if done.called
                                  else done.callback(None))
        done.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
    finished = Deferred()

    def stopping():
        # SIGINT/SIGTERM: end like --count does, and let the reactor wait
        # for the clean close.
        if not done.called:
            done.callback(None)
        return finished

    stop = reactor.addSystemEventTrigger("before", "shutdown", stopping)
    try:
        yield done
        if protocol.connection.state != CLOSED:
            yield close(protocol)
    finally:
        finished.callback(None)
        try:
            reactor.removeSystemEventTrigger(stop)
        except (KeyError, ValueError):
            pass  # it ran: the reactor is stopping
    return 0


__all__ = ["addConnect", "addRequest", "addSend", "addSubscribe"]
