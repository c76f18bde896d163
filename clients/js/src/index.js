// @muxframe/xtmp: the XTMP client (docs/xtmp.md, docs/web.md).

export { connect, Message, XTMPClient } from './client.js';
export { ClientSession, Counters } from './session.js';
export { ClientHandshake, AuthMethod } from './handshake.js';
export { Identity, PublicIdentity } from './identity.js';
export { TrafficKey, deriveKeys, expand, extract, keyId, nonce } from './keys.js';
export {
  Decoder, decodeName, decodeReason, encodeBody, encodeName, encodePlain, encodeReason, parseBody,
} from './codec.js';
export {
  Cipher, CipherName, DEFAULT_SETTINGS, ErrorCode, Flags, KEM, MessageType, describeCode,
} from './constants.js';
export {
  ConnectionLost, PeerDisconnected, PeerError, RequestTimeout, SendQueueFull, SessionClosed, XTMPError,
} from './errors.js';
export { crc32 } from './crc32.js';
export { fromHex, hex, utf8 } from './bytes.js';
