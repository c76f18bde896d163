// One error family: XTMPError carries the wire code (docs/xtmp.md section 10).

import { describeCode, ErrorCode } from './constants.js';

export class XTMPError extends Error {
  constructor(code, message) {
    super(message || describeCode(code));
    this.name = 'XTMPError';
    this.code = code;
    this.codeName = describeCode(code);
  }
}

// The peer sent Error(code, reason) answering our request, or closed the
// session with Disconnect(code, reason).
export class PeerError extends XTMPError {
  constructor(code, reason) {
    super(code, `peer error ${describeCode(code)}: ${reason}`);
    this.name = 'PeerError';
    this.reason = reason;
  }
}

export class PeerDisconnected extends XTMPError {
  constructor(code, reason) {
    super(code, `peer disconnected: ${describeCode(code)}: ${reason}`);
    this.name = 'PeerDisconnected';
    this.reason = reason;
  }
}

export class RequestTimeout extends XTMPError {
  constructor(seconds) {
    super(ErrorCode.TIMEOUT, `no response within ${seconds}s`);
    this.name = 'RequestTimeout';
  }
}

// Local misuse: the session is not open, or the send buffer is full.
export class SessionClosed extends XTMPError {
  constructor(message) {
    super(ErrorCode.NONE, message || 'the session is closed');
    this.name = 'SessionClosed';
  }
}

export class SendQueueFull extends XTMPError {
  constructor(message) {
    super(ErrorCode.NONE, message || 'the send buffer is full');
    this.name = 'SendQueueFull';
  }
}

export class ConnectionLost extends XTMPError {
  constructor(message) {
    super(ErrorCode.NONE, message || 'the connection was lost');
    this.name = 'ConnectionLost';
  }
}

export function fail(code, message) {
  return new XTMPError(code, message);
}
