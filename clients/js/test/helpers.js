// Shared by the tests: the vectors and a deterministic session built from
// their inputs.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { concat } from '../src/bytes.js';
import {
  ClientHandshake, ClientSession, Identity, fromHex,
} from '../src/index.js';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = join(HERE, '..', '..', '..');
export const VECTORS = JSON.parse(readFileSync(join(REPO, 'tests', 'vectors', 'xtmp_vectors.json'), 'utf8'));

export const inputs = VECTORS.inputs;
export const h = fromHex;

export function serverIdentity() {
  return new Identity(h(inputs.serverEd25519Seed));
}

export function clientIdentity() {
  return new Identity(h(inputs.clientEd25519Seed));
}

export function vectorHandshake(extra = {}) {
  return new ClientHandshake({
    serverKey: serverIdentity().public,
    identity: clientIdentity(),
    random: inputs.clientRandom,
    x25519Private: inputs.clientX25519Private,
    kemSeed: inputs.clientMlkem768Seed,
    ...extra,
  });
}

// A session that has completed the vectors' handshake at time 0.
export function openSession(settings = {}) {
  const session = new ClientSession(vectorHandshake(), settings);
  session.initiate(0);
  session.dataToSend();
  const events = session.receiveData(h(VECTORS.serverHello + VECTORS.serverAuth), 0);
  session.dataToSend();
  return { session, events };
}

export function joined(frames) {
  return concat(...frames);
}
