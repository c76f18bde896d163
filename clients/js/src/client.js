// XTMPClient: one XTMP session over a WebSocket (the browser's, Node's
// built-in one, or the `ws` package's), driving the sans-IO ClientSession.
//
//   const client = await connect('ws://127.0.0.1:8092/xtmp', {
//     serverFingerprint: '…', token: 'secret' });
//   const reply = await client.request(0x30, 'hello', { timeout: 5 });
//   await client.subscribe('prices', (message) => console.log(message.text));
//   await client.close();

import { concat, toBytes } from './bytes.js';
import { encodeName } from './codec.js';
import { ErrorCode, Flags, MessageType } from './constants.js';
import { ConnectionLost, SessionClosed, XTMPError } from './errors.js';
import { ClientHandshake } from './handshake.js';
import { ClientSession } from './session.js';

const decoder = new TextDecoder();
// Frames queued in one turn are joined into WebSocket messages of at most
// this many bytes (muxframe's server accepts 2 MiB by default).
const MAX_WS_MESSAGE = 256 * 1024;

function monotonic() {
  return (globalThis.performance ? performance.now() : Date.now()) / 1000;
}

async function webSocketClass(given) {
  if (given) return given;
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  // Node 20 without --experimental-websocket: the `ws` package.
  const module = await import('ws');
  return module.WebSocket || module.default;
}

// A received message as the application sees it.
export class Message {
  constructor(raw) {
    this.type = raw.type;
    this.flags = raw.flags;
    this.data = raw.data;
    this.requestId = raw.requestId;
    this.respondsTo = raw.respondsTo;
    this.deliveryId = raw.deliveryId;
    this.streamName = raw.streamName;
  }

  get text() {
    return decoder.decode(this.data);
  }

  get isResponse() {
    return (this.flags & Flags.RESPONSE) !== 0;
  }
}

export class XTMPClient {
  constructor(socket, session, options = {}) {
    this.socket = socket;
    this.session = session;
    this.options = options;
    this.rtt = null;
    this.lastRtt = null;
    this._handlers = new Map();
    this._streams = new Map();
    this._listeners = new Map();
    this._timer = null;
    this._ready = new Promise((resolve, reject) => {
      this._readyResolve = resolve;
      this._readyReject = reject;
    });
    this._ready.catch(() => {});
    this.closed = new Promise((resolve) => { this._closedResolve = resolve; });
    this._socketClosed = false;
    this._closeAfterFlush = null;
  }

  // -- state -------------------------------------------------------------

  get sessionId() { return this.session.sessionId; }
  get cipher() { return this.session.cipher; }
  get cipherName() { return this.session.cipherName; }
  get peerIdentity() { return this.session.peerIdentity; }
  get counters() { return this.session.counters; }
  get isOpen() { return this.session.isOpen && !this._socketClosed; }
  get bufferedAmount() { return this.socket.bufferedAmount || 0; }

  // Events: 'message' (message without a handler), 'error' (an Error
  // message from the server), 'close' (the session ended: error or null).
  on(name, listener) {
    if (!this._listeners.has(name)) this._listeners.set(name, []);
    this._listeners.get(name).push(listener);
    return this;
  }

  _notify(name, ...args) {
    for (const listener of this._listeners.get(name) || []) {
      try {
        listener(...args);
      } catch (e) {
        queueMicrotask(() => { throw e; });
      }
    }
  }

  // handler(message, client) answers requests of `type`: a returned value
  // (bytes, string, or a Promise of one) is the response; a throw or a
  // rejection answers Error APPLICATION_ERROR. Without a handler (and no
  // 'message' listener) a message is answered Error UNKNOWN_TYPE.
  onMessage(type, handler) {
    this._handlers.set(type, handler);
    return this;
  }

  // -- sending -----------------------------------------------------------

  _now() { return monotonic(); }

  _guard() {
    if (this._socketClosed) throw new SessionClosed('the connection is closed');
    this.session.checkQueue(this.bufferedAmount);
  }

  // Send a message. With { requireAck: true } returns a Promise resolving
  // when the server acknowledges it (REQUIRES_ACK).
  send(type, payload, options = {}) {
    this._guard();
    let flags = options.flags || 0;
    if (options.requireAck) flags |= Flags.REQUIRES_ACK;
    if (options.compress) flags |= Flags.COMPRESSED;
    const sent = this.session.send(type, toBytes(payload), { flags }, this._now());
    this._flush();
    return sent.acked || undefined;
  }

  // Send a request; resolves with the response Message, rejects with
  // PeerError (the server answered Error), RequestTimeout, or the reason
  // the session ended.
  request(type, payload, options = {}) {
    try {
      this._guard();
      let flags = options.flags || 0;
      if (options.requireAck) flags |= Flags.REQUIRES_ACK;
      const request = this.session.request(type, toBytes(payload),
        { flags, timeout: options.timeout }, this._now());
      this._flush();
      return request.promise;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  respond(message, payload, options = {}) {
    this._guard();
    this.session.respond(message, toBytes(payload), options, this._now());
    this._flush();
  }

  // Subscribe to the server's stream `name`; callback(message) gets every
  // STREAM_DATA message on it. Resolves when the server confirms.
  async subscribe(name, callback) {
    if (!this._streams.has(name)) this._streams.set(name, []);
    this._streams.get(name).push(callback);
    try {
      await this.request(MessageType.Subscribe, encodeName(name));
    } catch (e) {
      const callbacks = this._streams.get(name) || [];
      const i = callbacks.indexOf(callback);
      if (i >= 0) callbacks.splice(i, 1);
      if (!callbacks.length) this._streams.delete(name);
      throw e;
    }
  }

  async unsubscribe(name) {
    this._streams.delete(name);
    await this.request(MessageType.Unsubscribe, encodeName(name));
  }

  // Send `payload` on stream `name` (a STREAM_DATA message; the server
  // relays it to the stream's subscribers if it is configured to).
  publish(name, payload, options = {}) {
    this._guard();
    this.session.send(options.type ?? MessageType.EventStream, toBytes(payload),
      { flags: options.flags || 0, streamName: name }, this._now());
    this._flush();
  }

  // Clean close: Disconnect(code, reason), then the WebSocket closes.
  // Resolves once the connection is gone.
  close(code = ErrorCode.GOING_AWAY, reason = '') {
    if (!this._socketClosed) {
      this._handle(this.session.close(code, reason, this._now()));
      this._flush();
    }
    return this.closed;
  }

  // -- the WebSocket -----------------------------------------------------

  _start() {
    const socket = this.socket;
    socket.binaryType = 'arraybuffer';
    socket.onmessage = (event) => this._received(event.data);
    socket.onclose = (event) => this._socketGone(event);
    socket.onerror = () => {};
    this.session.initiate(this._now());
    this._flush();
  }

  _received(data) {
    if (typeof data === 'string') {
      this._handle(this.session.abort(ErrorCode.PROTOCOL_ERROR, 'text WebSocket message', this._now()));
      this._flush();
      return;
    }
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : toBytes(data);
    this._handle(this.session.receiveData(bytes, this._now()));
    this._flush();
  }

  _socketGone(event) {
    this._socketClosed = true;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    if (this.session.state !== 'closed') {
      const lost = new ConnectionLost(`WebSocket closed (${event.code}${event.reason ? ': ' + event.reason : ''})`);
      this._handle(this.session.connectionLost(lost, this._now()));
    }
    this._readyReject(this.session.closeError || new SessionClosed('closed before the handshake'));
    this._closedResolve(this.session.closeError);
  }

  _closeSocket(code, reason) {
    try {
      this.socket.close(code, reason);
    } catch (e) {
      // already closing
    }
  }

  _flush() {
    const frames = this.session.dataToSend();
    if (frames.length && !this._socketClosed) {
      // Join small frames into fewer WebSocket messages.
      let batch = [];
      let size = 0;
      const push = () => {
        if (!batch.length) return;
        const message = batch.length === 1 ? batch[0] : concat(...batch);
        this.socket.send(message);
        batch = [];
        size = 0;
      };
      for (const frame of frames) {
        if (size + frame.length > MAX_WS_MESSAGE) push();
        batch.push(frame);
        size += frame.length;
      }
      push();
    }
    if (this._closeAfterFlush) {
      this._closeSocket(1000, this._closeAfterFlush);
      return;
    }
    this._schedule();
  }

  _schedule() {
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    if (this._socketClosed || this.session.state === 'closed') return;
    const delay = Math.max(this.session.nextDeadline(this._now()) - this._now(), 0.001);
    if (!Number.isFinite(delay)) return;
    this._timer = setTimeout(() => {
      this._timer = null;
      this._handle(this.session.tick(this._now()));
      this._flush();
    }, Math.min(delay * 1000, 2 ** 31 - 1));
    if (this._timer.unref && this.options.unrefTimers) this._timer.unref();
  }

  // -- events --------------------------------------------------------------

  _handle(events) {
    for (const event of events) {
      switch (event.type) {
        case 'handshake':
          this._sample(event.rtt);
          this._readyResolve(this);
          break;
        case 'response':
          this._sample(event.rtt);
          event.request.resolve(new Message(event.message));
          break;
        case 'requestFailed':
          event.request.reject(event.error);
          break;
        case 'stream': {
          const message = new Message(event.message);
          for (const callback of this._streams.get(message.streamName) || []) callback(message, this);
          break;
        }
        case 'message':
          this._dispatch(new Message(event.message));
          break;
        case 'error':
          this._notify('error', event);
          break;
        case 'disconnect':
          break;
        case 'closed':
          // The socket closes once the session's last frames (Error,
          // Disconnect) are sent, at the next _flush.
          this._closeAfterFlush = event.error ? event.error.codeName : 'closed';
          this._notify('close', event.error);
          break;
        default:
          break;
      }
    }
  }

  _sample(rtt) {
    this.lastRtt = rtt;
    this.rtt = this.rtt === null ? rtt : 0.875 * this.rtt + 0.125 * rtt;
  }

  _dispatch(message) {
    const handler = this._handlers.get(message.type);
    if (!handler) {
      if ((this._listeners.get('message') || []).length) {
        this._notify('message', message);
      } else if (this.isOpen) {
        this.session.sendError(message, ErrorCode.UNKNOWN_TYPE,
          `no handler for message type 0x${message.type.toString(16)}`, this._now());
        this._flush();
      }
      return;
    }
    const answer = (value) => {
      if (value !== undefined && value !== null && this.isOpen) this.respond(message, value);
    };
    const failed = (e) => {
      if (this.isOpen) {
        this.session.sendError(message, ErrorCode.APPLICATION_ERROR, String(e && e.message || e), this._now());
        this._flush();
      }
    };
    let result;
    try {
      result = handler(message, this);
    } catch (e) {
      failed(e);
      return;
    }
    if (result && typeof result.then === 'function') result.then(answer, failed);
    else answer(result);
  }
}

// Open a WebSocket to `url`, complete the handshake, resolve with the
// ready XTMPClient. Options: serverKey | serverFingerprint | verifyServer;
// identity | token; ciphers; kem; settings (docs/xtmp.md section 12
// names); WebSocket (a constructor; default: the global one, else `ws`);
// protocols (WebSocket subprotocols); connectTimeout (seconds).
export async function connect(url, options = {}) {
  const WebSocketClass = await webSocketClass(options.WebSocket);
  const handshake = new ClientHandshake(options);
  const session = new ClientSession(handshake, options.settings || {});
  const socket = options.protocols ? new WebSocketClass(url, options.protocols) : new WebSocketClass(url);
  const client = new XTMPClient(socket, session, options);
  await new Promise((resolve, reject) => {
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => resolve();
    socket.onerror = () => {};
    socket.onclose = (event) => reject(new ConnectionLost(
      `WebSocket to ${url} failed (${event.code}${event.reason ? ': ' + event.reason : ''})`));
  });
  client._start();
  await client._ready;
  return client;
}

export { XTMPError };
