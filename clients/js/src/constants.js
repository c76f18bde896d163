// XTMP v1 constants (docs/xtmp.md sections 2-4 and 10).

export const MAGIC = Uint8Array.of(0x58, 0x54, 0x4d, 0x50); // "XTMP"
export const VERSION = 1;
export const HEADER_SIZE = 32;
export const SECURITY_SIZE = 64;

export const MessageType = Object.freeze({
  Handshake: 0x01,
  HandshakeAck: 0x02,
  Heartbeat: 0x03,
  Disconnect: 0x04,
  Ack: 0x05,
  KeyUpdate: 0x06,
  Subscribe: 0x07,
  Unsubscribe: 0x08,
  WalletRegister: 0x10,
  WalletAuth: 0x11,
  WalletBalance: 0x12,
  WalletTransaction: 0x13,
  BundleSubmit: 0x20,
  BundleStatus: 0x21,
  BundleConfirm: 0x22,
  BundleSync: 0x23,
  RegistryQuery: 0x30,
  RegistryUpdate: 0x31,
  RegistryStamp: 0x32,
  LiveUpdates: 0x40,
  EventStream: 0x41,
  MetricsStream: 0x42,
  Error: 0xfe,
  Unknown: 0xff,
});

// Types 0x01-0x08 are consumed by the session.
export function isControlType(type) {
  return type >= 0x01 && type <= 0x08;
}

export const Flags = Object.freeze({
  ENCRYPTED: 0x0001,
  COMPRESSED: 0x0002,
  PRIORITY_HIGH: 0x0004,
  REQUIRES_ACK: 0x0008,
  FRAGMENTED: 0x0010,
  LAST_FRAGMENT: 0x0020,
  STREAM_DATA: 0x0040,
  EMERGENCY: 0x0080,
  RESPONSE: 0x0100,
});
export const KNOWN_FLAGS = 0x01ff;

export const Cipher = Object.freeze({
  NONE: 0,
  AES_256_GCM: 1,
  CHACHA20_POLY1305: 2,
});

export const CipherName = Object.freeze({
  0: 'none',
  1: 'AES-256-GCM',
  2: 'ChaCha20-Poly1305',
});

export const KEM = Object.freeze({ MLKEM768: 1, MLKEM1024: 2 });

export const ErrorCode = Object.freeze({
  NONE: 0,
  PROTOCOL_ERROR: 1,
  BAD_MAGIC: 2,
  BAD_VERSION: 3,
  BAD_FLAGS: 4,
  MESSAGE_TOO_LARGE: 5,
  CHECKSUM_MISMATCH: 6,
  DECRYPT_FAILED: 7,
  BAD_SEQUENCE: 8,
  BAD_NONCE: 9,
  WRONG_KEY: 10,
  HANDSHAKE_FAILED: 11,
  DOWNGRADE: 12,
  UNAUTHORIZED: 13,
  TIMEOUT: 14,
  UNSUPPORTED: 15,
  UNKNOWN_TYPE: 16,
  APPLICATION_ERROR: 17,
  GOING_AWAY: 18,
  IDLE_TIMEOUT: 19,
  INTERNAL: 20,
});

const CODE_NAMES = Object.fromEntries(
  Object.entries(ErrorCode).map(([name, code]) => [code, name]));

export function describeCode(code) {
  return CODE_NAMES[code] ?? `UNKNOWN(${code})`;
}

// Defaults of docs/xtmp.md section 12 (seconds, bytes).
export const DEFAULT_SETTINGS = Object.freeze({
  heartbeatInterval: 30,
  sessionTimeout: 3600,
  handshakeTimeout: 10,
  keyUpdateMessages: 1048576,
  keyUpdateInterval: 3600,
  maxPayload: 1048576,
  fragmentSize: 65536,
  maxMessageSize: 16777216,
  maxQueuedBytes: 8388608,
  requestTimeout: 30,
});
