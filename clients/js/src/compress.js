// zlib (RFC 1950) for COMPRESSED messages, synchronous and bounded.
// fflate: browsers only offer DecompressionStream, which is asynchronous
// and cannot stop at a size limit.

import { Unzlib, zlibSync } from 'fflate';

import { concat } from './bytes.js';
import { ErrorCode } from './constants.js';
import { fail } from './errors.js';

// 1 KiB of deflate input inflates to at most about 1 MiB, so checking the
// total after each slice bounds memory to the limit plus about 1 MiB.
const SLICE = 1024;

export function inflate(data, limit) {
  const parts = [];
  let total = 0;
  let ended = false;
  const stream = new Unzlib((chunk, final) => {
    total += chunk.length;
    if (total > limit) {
      throw fail(ErrorCode.MESSAGE_TOO_LARGE, `decompressed body over ${limit} bytes`);
    }
    parts.push(chunk);
    if (final) ended = true;
  });
  try {
    for (let offset = 0; offset < data.length; offset += SLICE) {
      const end = Math.min(offset + SLICE, data.length);
      stream.push(data.subarray(offset, end), end === data.length);
    }
    if (data.length === 0) stream.push(new Uint8Array(0), true);
  } catch (e) {
    if (e.code === ErrorCode.MESSAGE_TOO_LARGE) throw e;
    throw fail(ErrorCode.PROTOCOL_ERROR, `invalid zlib stream: ${e.message}`);
  }
  if (!ended) throw fail(ErrorCode.PROTOCOL_ERROR, 'truncated zlib stream');
  return parts.length === 1 ? parts[0] : concat(...parts);
}

export function deflate(data) {
  return zlibSync(data);
}
