// The JS client's handshake in Node: wall time of connect() to a muxframe
// server (argv: url, server identity hex, rounds), and the client-side CPU
// of the handshake alone (the test vectors' server flight, no I/O).
// Prints one JSON line. Used by bench/bench_web.py.

import WebSocket from 'ws';

import { ClientSession, connect } from '../src/index.js';
import { VECTORS, h, vectorHandshake } from '../test/helpers.js';

const [url, serverKey, roundsText] = process.argv.slice(2);
const rounds = Number(roundsText || 20);

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const wall = [];
for (let i = 0; i < rounds; i++) {
  const start = performance.now();
  const client = await connect(url, { WebSocket, serverKey });
  wall.push(performance.now() - start);
  await client.close();
}

const flight = h(VECTORS.serverHello + VECTORS.serverAuth);
const cpu = [];
for (let i = 0; i < Math.max(rounds, 5); i++) {
  const before = process.cpuUsage();
  const session = new ClientSession(vectorHandshake());
  session.initiate(0);
  session.dataToSend();
  const events = session.receiveData(flight, 0);
  if (events[0].type !== 'handshake') throw new Error('the vector handshake failed');
  const used = process.cpuUsage(before);
  cpu.push((used.user + used.system) / 1000);
}

console.log(JSON.stringify({
  rounds, node: process.version,
  wall_ms_median: median(wall), wall_ms_min: Math.min(...wall), wall_ms_max: Math.max(...wall),
  client_cpu_ms_median: median(cpu),
}));
