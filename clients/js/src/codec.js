// XTMP wire codec (docs/xtmp.md sections 2-6): frames from a byte stream,
// message bodies, control payloads. No I/O.

import {
  concat, fromUtf8, isZero, readU16, readU32, readU64, u16, u32, u64, utf8,
} from './bytes.js';
import {
  Cipher, ErrorCode, Flags, HEADER_SIZE, KNOWN_FLAGS, MAGIC, SECURITY_SIZE, VERSION,
} from './constants.js';
import { crc32 } from './crc32.js';
import { fail } from './errors.js';
import { encodeHeader } from './keys.js';

// A plaintext message (handshake messages, plaintext Errors).
export function encodePlain(type, flags, sessionId, sequence, body) {
  return concat(encodeHeader(type, flags, sessionId, sequence, body.length, crc32(body)), body);
}

// Incremental frame parser: feed() bytes, get complete frames. Every check
// of the header is made before the payload is buffered.
export class Decoder {
  constructor(maxPayload = 1048576) {
    this.maxPayload = maxPayload;
    this._chunks = [];
    this._length = 0;
    this._need = null; // total size of the frame being read, once known
  }

  get buffered() {
    return this._length;
  }

  _take(n) {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this._chunks[0];
      const want = n - filled;
      if (chunk.length <= want) {
        out.set(chunk, filled);
        filled += chunk.length;
        this._chunks.shift();
      } else {
        out.set(chunk.subarray(0, want), filled);
        this._chunks[0] = chunk.subarray(want);
        filled += want;
      }
    }
    this._length -= n;
    return out;
  }

  _peekHeader() {
    if (this._chunks[0].length >= HEADER_SIZE) return this._chunks[0].subarray(0, HEADER_SIZE);
    const all = concat(...this._chunks);
    this._chunks = [all];
    return all.subarray(0, HEADER_SIZE);
  }

  feed(data) {
    if (data.length) {
      this._chunks.push(data);
      this._length += data.length;
    }
    const frames = [];
    for (;;) {
      if (this._need === null) {
        if (this._length < HEADER_SIZE) break;
        this._need = checkHeader(this._peekHeader(), this.maxPayload);
      }
      if (this._length < this._need) break;
      frames.push(parseFrame(this._take(this._need)));
      this._need = null;
    }
    return frames;
  }
}

// Validate a header; return the frame's total size.
function checkHeader(header, maxPayload) {
  for (let i = 0; i < 4; i++) {
    if (header[i] !== MAGIC[i]) throw fail(ErrorCode.BAD_MAGIC, 'magic is not XTMP');
  }
  if (header[4] !== VERSION) throw fail(ErrorCode.BAD_VERSION, `version ${header[4]} is not 1`);
  const flags = readU16(header, 6);
  if (flags & ~KNOWN_FLAGS) throw fail(ErrorCode.BAD_FLAGS, `unknown flag bits ${flags.toString(16)}`);
  if ((flags & Flags.LAST_FRAGMENT) && !(flags & Flags.FRAGMENTED)) {
    throw fail(ErrorCode.BAD_FLAGS, 'LAST_FRAGMENT without FRAGMENTED');
  }
  const length = readU32(header, 24);
  if (length > maxPayload) {
    throw fail(ErrorCode.MESSAGE_TOO_LARGE, `payload of ${length} bytes is over ${maxPayload}`);
  }
  return HEADER_SIZE + (flags & Flags.ENCRYPTED ? SECURITY_SIZE : 0) + length;
}

function parseFrame(bytes) {
  const header = bytes.subarray(0, HEADER_SIZE);
  const flags = readU16(header, 6);
  let security = null;
  let offset = HEADER_SIZE;
  if (flags & Flags.ENCRYPTED) {
    security = bytes.subarray(HEADER_SIZE, HEADER_SIZE + SECURITY_SIZE);
    offset += SECURITY_SIZE;
    if (security[0] !== Cipher.AES_256_GCM && security[0] !== Cipher.CHACHA20_POLY1305) {
      throw fail(ErrorCode.PROTOCOL_ERROR, `unknown cipher ${security[0]} in the security layer`);
    }
    if (!isZero(security.subarray(1, 4)) || !isZero(security.subarray(36, 48))) {
      throw fail(ErrorCode.PROTOCOL_ERROR, 'security layer reserved or nonce tail bytes not zero');
    }
  }
  return {
    type: header[5],
    flags,
    sessionId: readU64(header, 8),
    sequence: readU64(header, 16),
    checksum: readU32(header, 28),
    header,
    security,
    payload: bytes.subarray(offset),
  };
}

// Check a plaintext frame's CRC; return its payload.
export function plainBody(frame) {
  if (crc32(frame.payload) !== frame.checksum) {
    throw fail(ErrorCode.CHECKSUM_MISMATCH, 'CRC-32 of the payload differs');
  }
  return frame.payload;
}

// -- bodies (section 5) ----------------------------------------------------

export function encodeName(name) {
  const bytes = utf8(name);
  if (bytes.length > 0xffff) throw new RangeError('name longer than 65535 bytes');
  return concat(u16(bytes.length), bytes);
}

export function decodeName(bytes, offset = 0) {
  if (bytes.length < offset + 2) throw fail(ErrorCode.PROTOCOL_ERROR, 'truncated name');
  const length = readU16(bytes, offset);
  const end = offset + 2 + length;
  if (bytes.length < end) throw fail(ErrorCode.PROTOCOL_ERROR, 'truncated name');
  let name;
  try {
    name = fromUtf8(bytes.subarray(offset + 2, end));
  } catch (e) {
    throw fail(ErrorCode.PROTOCOL_ERROR, 'name is not valid UTF-8');
  }
  return [name, end];
}

// Body parts in order: [u64 request id][u64 delivery id][name] data.
export function encodeBody(flags, { requestId, deliveryId, streamName, data }) {
  const parts = [];
  if (flags & Flags.RESPONSE) parts.push(u64(requestId));
  if (flags & Flags.REQUIRES_ACK) parts.push(u64(deliveryId));
  if (flags & Flags.STREAM_DATA) parts.push(encodeName(streamName));
  parts.push(data);
  return parts.length === 1 ? data : concat(...parts);
}

export function parseBody(flags, body) {
  let offset = 0;
  const out = { requestId: null, deliveryId: null, streamName: null, data: null };
  if (flags & Flags.RESPONSE) {
    if (body.length < offset + 8) throw fail(ErrorCode.PROTOCOL_ERROR, 'truncated request id');
    out.requestId = readU64(body, offset);
    offset += 8;
  }
  if (flags & Flags.REQUIRES_ACK) {
    if (body.length < offset + 8) throw fail(ErrorCode.PROTOCOL_ERROR, 'truncated delivery id');
    out.deliveryId = readU64(body, offset);
    offset += 8;
  }
  if (flags & Flags.STREAM_DATA) {
    [out.streamName, offset] = decodeName(body, offset);
  }
  out.data = body.subarray(offset);
  return out;
}

// -- control payloads (section 6) ------------------------------------------

export function encodeReason(code, reason = '') {
  return concat(u16(code), utf8(reason));
}

export function decodeReason(data) {
  if (data.length < 2) throw fail(ErrorCode.PROTOCOL_ERROR, 'truncated error code');
  let reason;
  try {
    reason = fromUtf8(data.subarray(2));
  } catch (e) {
    throw fail(ErrorCode.PROTOCOL_ERROR, 'reason is not valid UTF-8');
  }
  return { code: readU16(data, 0), reason };
}

export function decodeU64(data, what) {
  if (data.length !== 8) throw fail(ErrorCode.PROTOCOL_ERROR, `${what} payload must be 8 bytes`);
  return readU64(data, 0);
}

export function decodeU32(data, what) {
  if (data.length !== 4) throw fail(ErrorCode.PROTOCOL_ERROR, `${what} payload must be 4 bytes`);
  return readU32(data, 0);
}

export { u32, u64 };
