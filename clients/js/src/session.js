// The client's XTMP session engine (docs/xtmp.md sections 7-10), sans-IO:
// receiveData(bytes, now) -> events; send*(...) queue frames; dataToSend()
// returns them; tick(now) runs timers; nextDeadline(now) says when to tick.
// Time is passed in (seconds, monotonic); nothing here touches a socket.
//
// Rules:
//  - States: new -> helloSent -> awaitAuth -> open -> closed.
//  - Every received frame under a key must carry exactly that key's next
//    sequence number; checks in the order of section 8.2.
//  - A fatal error queues Error(code) then Disconnect(code) (encrypted once
//    traffic keys exist, else plaintext with the session id known so far),
//    fails pending requests and ends with a 'closed' event; events for
//    messages that arrived intact before the fault are returned first.
//  - Request ids are (generation << 32) | sequence of the request's first
//    frame; the send generation grows by one per KeyUpdate (section 9.4).
//  - REQUIRES_ACK messages from the server are delivered once (delivery id
//    above the highest delivered) and acknowledged cumulatively once per
//    receiveData call; ours get delivery ids from 1 when encoded.

import { concat, u32, u64 } from './bytes.js';
import {
  CipherName, DEFAULT_SETTINGS, ErrorCode, Flags, MessageType, isControlType,
} from './constants.js';
import {
  Decoder, decodeName, decodeReason, decodeU32, decodeU64, encodeBody, encodePlain, encodeReason, parseBody, plainBody,
} from './codec.js';
import { deflate, inflate } from './compress.js';
import { PeerDisconnected, PeerError, RequestTimeout, SendQueueFull, SessionClosed, XTMPError, fail } from './errors.js';

const MAX_TRAFFIC_SEQUENCE = 2 ** 32;
const SENDABLE_FLAGS = Flags.COMPRESSED | Flags.PRIORITY_HIGH | Flags.REQUIRES_ACK | Flags.EMERGENCY;

export class Counters {
  constructor() {
    this.bytesSent = 0;
    this.bytesReceived = 0;
    this.messagesSent = 0;
    this.messagesReceived = 0;
    this.duplicatesDropped = 0;
    this.keyUpdates = 0;
    this.unmatchedResponses = 0;
    this.heartbeatsSent = 0;
  }
}

export class ClientSession {
  constructor(handshake, settings = {}) {
    this.handshake = handshake;
    this.settings = { ...DEFAULT_SETTINGS, ...settings };
    const s = this.settings;
    if (!(s.keyUpdateMessages >= 1 && s.keyUpdateMessages < MAX_TRAFFIC_SEQUENCE)) {
      throw new RangeError('keyUpdateMessages must be in 1..2^32-1');
    }
    this.state = 'new';
    this.sessionId = 0n;
    this.cipher = null;
    this.peerIdentity = null;
    this.resumed = false;
    this.closeError = null;
    this.counters = new Counters();
    this.pending = new Map(); // request id (BigInt) -> request
    this._decoder = new Decoder(s.maxPayload);
    this._out = [];
    this._sendKey = null;
    this._recvKey = null;
    this._sendGeneration = 0n;
    this._recvGeneration = 0n;
    this._plainSequence = 0;
    this._nextDeliveryId = 1n;
    this._highestAcked = 0n;
    this._unacked = new Map(); // delivery id -> { resolve, reject }
    this._highestDelivered = 0n;
    this._fragments = null;
  }

  get isOpen() {
    return this.state === 'open';
  }

  get cipherName() {
    return this.cipher === null ? null : CipherName[this.cipher];
  }

  // -- starting --------------------------------------------------------

  initiate(now) {
    if (this.state !== 'new') throw new SessionClosed('already started');
    this._startedAt = now;
    this._lastReceived = now;
    const hello = this.handshake.hello();
    this._plain(MessageType.Handshake, hello, now);
    this.state = 'helloSent';
    this.helloSentAt = now;
  }

  // -- output ----------------------------------------------------------

  dataToSend() {
    const out = this._out;
    this._out = [];
    return out;
  }

  _emit(frame, now) {
    this._out.push(frame);
    this.counters.bytesSent += frame.length;
    if (now !== undefined) this._lastSent = now;
  }

  _plain(type, body, now) {
    this._emit(encodePlain(type, 0, this.sessionId, this._plainSequence++, body), now);
  }

  _seal(type, flags, body, now) {
    // KeyUpdate by count: the KeyUpdate itself carries sequence number
    // keyUpdateMessages at most.
    if (type !== MessageType.KeyUpdate && this._sendKey.sequence >= this.settings.keyUpdateMessages) {
      this._keyUpdate(now);
    }
    const sequence = this._sendKey.sequence;
    const generation = this._sendGeneration;
    this._emit(this._sendKey.seal(type, flags | Flags.ENCRYPTED, this.sessionId, body), now);
    return (generation << 32n) | BigInt(sequence);
  }

  _keyUpdate(now) {
    const next = this._sendKey.epoch + 1;
    this._seal(MessageType.KeyUpdate, 0, u32(next), now);
    this._sendKey = this._sendKey.updated();
    this._sendGeneration += 1n;
    this._keyUpdatedAt = now;
    this.counters.keyUpdates++;
  }

  // Send a message: returns { requestId, deliveryId, acked } (acked: a
  // Promise when REQUIRES_ACK). Options: flags, respondTo (request id
  // answered), streamName, request (a request record to register).
  send(type, data, options = {}, now) {
    if (this.state !== 'open') throw new SessionClosed(`cannot send: the session is ${this.state}`);
    let flags = (options.flags || 0);
    if (flags & ~SENDABLE_FLAGS) throw new TypeError('flags may only be COMPRESSED, PRIORITY_HIGH, REQUIRES_ACK, EMERGENCY');
    if (options.respondTo !== undefined && options.respondTo !== null) flags |= Flags.RESPONSE;
    if (options.streamName !== undefined && options.streamName !== null) flags |= Flags.STREAM_DATA;
    if (flags & Flags.COMPRESSED) {
      const packed = deflate(data);
      if (packed.length < data.length) data = packed;
      else flags &= ~Flags.COMPRESSED;
    }
    let deliveryId = null;
    let acked = null;
    if (flags & Flags.REQUIRES_ACK) {
      deliveryId = this._nextDeliveryId++;
      acked = new Promise((resolve, reject) => this._unacked.set(deliveryId, { resolve, reject }));
      acked.catch(() => {});
    }
    const body = encodeBody(flags, { requestId: options.respondTo, deliveryId, streamName: options.streamName, data });
    if (body.length > this.settings.maxMessageSize) {
      throw new RangeError(`message body of ${body.length} bytes is over maxMessageSize`);
    }
    let requestId;
    const size = this.settings.fragmentSize;
    if (body.length <= size) {
      requestId = this._seal(type, flags, body, now);
    } else {
      for (let offset = 0; offset < body.length; offset += size) {
        const last = offset + size >= body.length;
        const id = this._seal(type, flags | Flags.FRAGMENTED | (last ? Flags.LAST_FRAGMENT : 0),
          body.subarray(offset, offset + size), now);
        if (offset === 0) requestId = id;
      }
    }
    if (!isControlType(type) && type !== MessageType.Error) {
      this.counters.messagesSent++;
      this._lastApplication = now;
    }
    if (options.request) {
      const request = options.request;
      request.id = requestId;
      request.sentAt = now;
      request.deadline = request.timeout > 0 ? now + request.timeout : Infinity;
      this.pending.set(requestId, request);
    }
    return { requestId, deliveryId, acked };
  }

  // A request: returns a record whose promise settles with the response
  // Message or fails with PeerError / RequestTimeout / the session's end.
  request(type, data, options = {}, now) {
    const request = { timeout: options.timeout ?? this.settings.requestTimeout };
    request.promise = new Promise((resolve, reject) => {
      request.resolve = resolve;
      request.reject = reject;
    });
    this.send(type, data, { ...options, request }, now);
    return request;
  }

  cancelRequest(request) {
    if (request.id !== undefined) this.pending.delete(request.id);
  }

  respond(message, data, options = {}, now) {
    return this.send(options.type ?? message.type, data, { flags: options.flags, respondTo: message.requestId }, now);
  }

  sendError(message, code, reason, now) {
    return this.send(MessageType.Error, encodeReason(code, reason), { respondTo: message.requestId }, now);
  }

  // Clean close: Disconnect(code, reason); the caller closes the socket.
  close(code = ErrorCode.GOING_AWAY, reason = '', now) {
    if (this.state === 'closed') return [];
    if (this.state === 'open') {
      this._seal(MessageType.Disconnect, 0, encodeReason(code, reason), now);
    }
    return this._closed(null, now);
  }

  // Fail the session with `code` (the transport broke the rules, say):
  // queues Error and Disconnect; returns the events.
  abort(code, reason, now) {
    if (this.state === 'closed') return [];
    return this._fatal(fail(code, reason), now);
  }

  // The transport is gone: fail what waits; returns the events.
  connectionLost(error, now) {
    if (this.state === 'closed') return [];
    return this._closed(error, now);
  }

  // -- input -----------------------------------------------------------

  receiveData(data, now) {
    if (this.state === 'closed') return [];
    this.counters.bytesReceived += data.length;
    this._lastReceived = now;
    const events = [];
    this._ackOwed = false;
    try {
      for (const frame of this._decoder.feed(data)) {
        this._frame(frame, events, now);
        if (this.state === 'closed') return events;
      }
      if (this._ackOwed && this.state === 'open') {
        this._seal(MessageType.Ack, 0, u64(this._highestDelivered), now);
      }
    } catch (e) {
      if (!(e instanceof XTMPError)) throw e;
      events.push(...this._fatal(e, now));
    }
    return events;
  }

  _frame(frame, events, now) {
    if (this.state === 'helloSent') return this._serverHello(frame, events, now);
    if (frame.sessionId !== this.sessionId) {
      throw fail(ErrorCode.PROTOCOL_ERROR, `session id ${frame.sessionId} is not ${this.sessionId}`);
    }
    if (!(frame.flags & Flags.ENCRYPTED)) {
      throw fail(ErrorCode.DOWNGRADE, 'unencrypted message in an encrypted session');
    }
    if (this.state === 'awaitAuth') return this._serverAuth(frame, events, now);
    const body = this._recvKey.open(frame, MAX_TRAFFIC_SEQUENCE);
    const requestId = (this._recvGeneration << 32n) | frame.sequence;
    let flags = frame.flags;
    let whole = body;
    let firstId = requestId;
    if (flags & Flags.FRAGMENTED) {
      const f = this._fragments;
      if (f === null) {
        this._fragments = { type: frame.type, flags: flags & ~Flags.LAST_FRAGMENT, chunks: [body], size: body.length, id: requestId };
      } else {
        if (f.type !== frame.type || f.flags !== (flags & ~Flags.LAST_FRAGMENT)) {
          throw fail(ErrorCode.PROTOCOL_ERROR, 'fragment of another message');
        }
        f.size += body.length;
        if (f.size > this.settings.maxMessageSize) {
          throw fail(ErrorCode.MESSAGE_TOO_LARGE, `reassembled body over ${this.settings.maxMessageSize} bytes`);
        }
        f.chunks.push(body);
      }
      if (!(flags & Flags.LAST_FRAGMENT)) return;
      const f2 = this._fragments;
      this._fragments = null;
      whole = concat(...f2.chunks);
      firstId = f2.id;
      flags &= ~(Flags.FRAGMENTED | Flags.LAST_FRAGMENT);
    } else if (this._fragments !== null && !isControlType(frame.type)) {
      throw fail(ErrorCode.PROTOCOL_ERROR, 'message between the fragments of another');
    }
    this._message(frame.type, flags, whole, firstId, frame.sequence, events, now);
  }

  _message(type, flags, body, requestId, sequence, events, now) {
    const parts = parseBody(flags, body);
    let data = parts.data;
    if (flags & Flags.COMPRESSED) data = inflate(data, this.settings.maxMessageSize);
    const message = {
      type, flags, data, sequence, requestId,
      respondsTo: parts.requestId, deliveryId: parts.deliveryId, streamName: parts.streamName,
    };
    switch (type) {
      case MessageType.Heartbeat:
        message.clock = decodeU64(data, 'Heartbeat');
        return;
      case MessageType.Disconnect: {
        const { code, reason } = decodeReason(data);
        events.push({ type: 'disconnect', code, reason });
        const clean = code === ErrorCode.NONE || code === ErrorCode.GOING_AWAY;
        events.push(...this._closed(clean ? null : new PeerDisconnected(code, reason), now, { code, reason }));
        return;
      }
      case MessageType.Ack:
        return this._ack(decodeU64(data, 'Ack'));
      case MessageType.KeyUpdate: {
        const epoch = decodeU32(data, 'KeyUpdate');
        if (epoch !== this._recvKey.epoch + 1) {
          throw fail(ErrorCode.PROTOCOL_ERROR, `KeyUpdate to epoch ${epoch}, expected ${this._recvKey.epoch + 1}`);
        }
        this._recvKey = this._recvKey.updated();
        this._recvGeneration += 1n;
        return;
      }
      case MessageType.Handshake:
      case MessageType.HandshakeAck:
        throw fail(ErrorCode.PROTOCOL_ERROR, 'unexpected handshake message in an open session');
      case MessageType.Subscribe:
      case MessageType.Unsubscribe:
        if (flags & Flags.RESPONSE) return this._response(message, events, now);
        // The server asking to subscribe to our streams: we offer none.
        decodeName(data);
        this.sendError(message, ErrorCode.UNAUTHORIZED, 'this client publishes no streams', now);
        return;
      case MessageType.Error: {
        const { code, reason } = decodeReason(data);
        if (flags & Flags.RESPONSE) {
          const request = this.pending.get(message.respondsTo);
          if (request) {
            this.pending.delete(message.respondsTo);
            events.push({ type: 'requestFailed', request, error: new PeerError(code, reason) });
          } else {
            this.counters.unmatchedResponses++;
            events.push({ type: 'error', code, reason, unmatched: true });
          }
        } else {
          events.push({ type: 'error', code, reason });
        }
        return;
      }
      default:
        break;
    }
    this._lastApplication = now;
    if (flags & Flags.REQUIRES_ACK) {
      this._ackOwed = true;
      if (message.deliveryId <= this._highestDelivered) {
        this.counters.duplicatesDropped++;
        return;
      }
      this._highestDelivered = message.deliveryId;
    }
    if (flags & Flags.RESPONSE) return this._response(message, events, now);
    this.counters.messagesReceived++;
    events.push({ type: message.streamName !== null ? 'stream' : 'message', message });
  }

  _response(message, events, now) {
    const request = this.pending.get(message.respondsTo);
    if (!request) {
      this.counters.unmatchedResponses++;
      return;
    }
    this.pending.delete(message.respondsTo);
    this.counters.messagesReceived++;
    events.push({ type: 'response', request, message, rtt: now - request.sentAt });
  }

  _ack(deliveryId) {
    if (deliveryId >= this._nextDeliveryId) {
      throw fail(ErrorCode.PROTOCOL_ERROR, `Ack for delivery id ${deliveryId}, never sent`);
    }
    if (deliveryId <= this._highestAcked) return;
    for (let id = this._highestAcked + 1n; id <= deliveryId; id++) {
      const waiter = this._unacked.get(id);
      if (waiter) {
        this._unacked.delete(id);
        waiter.resolve(id);
      }
    }
    this._highestAcked = deliveryId;
  }

  get unacknowledged() {
    return this._unacked.size;
  }

  // -- handshake ---------------------------------------------------------

  _serverHello(frame, events, now) {
    if (frame.flags & Flags.ENCRYPTED) {
      throw fail(ErrorCode.HANDSHAKE_FAILED, 'encrypted message before the ServerHello');
    }
    const payload = plainBody(frame);
    if (frame.type === MessageType.Error || frame.type === MessageType.Disconnect) {
      const { code, reason } = decodeReason(payload);
      events.push(...this._closed(new PeerError(code, reason), now, { code, reason }));
      return;
    }
    if (frame.type !== MessageType.HandshakeAck || frame.sequence !== 0n) {
      throw fail(ErrorCode.HANDSHAKE_FAILED, `expected the ServerHello, got type ${frame.type}`);
    }
    const hello = this.handshake.serverHello(payload, frame.sessionId);
    this.sessionId = hello.sessionId;
    this.cipher = hello.cipher;
    this.resumed = hello.resumed;
    this._handshakeKeys = hello.keys;
    this._recvKey = hello.keys.s2c;
    this.handshakeRtt = now - this.helloSentAt;
    this.state = 'awaitAuth';
  }

  _serverAuth(frame, events, now) {
    const plaintext = this._recvKey.open(frame);
    if (frame.type === MessageType.Error || frame.type === MessageType.Disconnect) {
      const { code, reason } = decodeReason(parseBody(frame.flags, plaintext).data);
      events.push(...this._closed(new PeerError(code, reason), now, { code, reason }));
      return;
    }
    if (frame.type !== MessageType.HandshakeAck) {
      throw fail(ErrorCode.HANDSHAKE_FAILED, `expected the ServerAuth, got type ${frame.type}`);
    }
    const auth = this.handshake.serverAuth(plaintext);
    this._sendKey = this._handshakeKeys.c2s;
    this._seal(MessageType.Handshake, 0, auth.clientAuth, now);
    this._sendKey = auth.keys.c2s;
    this._recvKey = auth.keys.s2c;
    this._handshakeKeys = null;
    this.peerIdentity = auth.peerIdentity;
    this.state = 'open';
    this._keyUpdatedAt = now;
    this._lastApplication = now;
    events.push({
      type: 'handshake', sessionId: this.sessionId, cipher: this.cipher, resumed: this.resumed,
      peerIdentity: auth.peerIdentity, rtt: this.handshakeRtt,
    });
  }

  // -- timers ------------------------------------------------------------

  nextDeadline(now) {
    if (this.state === 'closed') return Infinity;
    const s = this.settings;
    if (this.state !== 'open') return this._startedAt + s.handshakeTimeout;
    let next = Math.min(
      this._lastSent + s.heartbeatInterval,
      this._lastReceived + 2 * s.heartbeatInterval,
      this._lastApplication + s.sessionTimeout,
      this._keyUpdatedAt + s.keyUpdateInterval);
    for (const request of this.pending.values()) next = Math.min(next, request.deadline);
    return next;
  }

  tick(now) {
    if (this.state === 'closed') return [];
    const s = this.settings;
    if (this.state !== 'open') {
      if (now >= this._startedAt + s.handshakeTimeout) {
        return this._fatal(fail(ErrorCode.TIMEOUT, `handshake not complete within ${s.handshakeTimeout}s`), now);
      }
      return [];
    }
    if (now >= this._lastReceived + 2 * s.heartbeatInterval) {
      return this._fatal(fail(ErrorCode.TIMEOUT, `nothing from the server for ${2 * s.heartbeatInterval}s`), now);
    }
    if (now >= this._lastApplication + s.sessionTimeout) {
      return this._fatal(fail(ErrorCode.IDLE_TIMEOUT, `no application message for ${s.sessionTimeout}s`), now);
    }
    const events = [];
    for (const [id, request] of this.pending) {
      if (now >= request.deadline) {
        this.pending.delete(id);
        events.push({ type: 'requestFailed', request, error: new RequestTimeout(request.timeout) });
      }
    }
    if (now >= this._keyUpdatedAt + s.keyUpdateInterval) this._keyUpdate(now);
    if (now >= this._lastSent + s.heartbeatInterval) {
      this._seal(MessageType.Heartbeat, 0, u64(BigInt(Math.floor(now * 1e6))), now);
      this.counters.heartbeatsSent++;
    }
    return events;
  }

  // -- ending --------------------------------------------------------------

  _fatal(error, now) {
    const body = encodeReason(error.code, error.message);
    if (this.state === 'open') {
      this._seal(MessageType.Error, 0, body, now);
      this._seal(MessageType.Disconnect, 0, body, now);
    } else if (this.state !== 'closed') {
      this._plain(MessageType.Error, body, now);
      this._plain(MessageType.Disconnect, body, now);
    }
    return this._closed(error, now);
  }

  _closed(error, now, peer = null) {
    this.state = 'closed';
    this.closeError = error;
    const why = error || new SessionClosed(peer ? `closed by the server: ${peer.reason}` : 'closed');
    const events = [];
    for (const request of this.pending.values()) events.push({ type: 'requestFailed', request, error: why });
    this.pending.clear();
    for (const waiter of this._unacked.values()) waiter.reject(why);
    this._unacked.clear();
    events.push({ type: 'closed', error, peer });
    return events;
  }

  // Bytes queued but not sent on the wire, for backpressure checks.
  checkQueue(buffered) {
    if (buffered > this.settings.maxQueuedBytes) {
      throw new SendQueueFull(`${buffered} bytes wait to be sent (maxQueuedBytes ${this.settings.maxQueuedBytes})`);
    }
  }
}
