// run.mjs — runs the SDK's test files with Node's test runner, one file at a
// time (each starts its own cluster), and ends with the summary line
// scripts/run-tests reads:  js-sdk: N passed, N failed
//
//   node clients/js/test/run.mjs [test files...]     (BUILD=... picks the binaries)
//
// Node 20 needs --experimental-websocket for its WebSocket; newer ones have
// it on by default.  A runner that dies or prints no summary counts as one
// failed test; so does a cancelled test (a file whose hooks failed).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const [major, minor] = process.versions.node.split('.').map(Number);

function finish(passed, failed, why) {
  if (why) console.log(`--- js-sdk: ${why}`);
  console.log(`js-sdk: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

if (major < 20 || (major === 20 && minor < 10)) {
  finish(0, 1, `Node.js ${process.versions.node} has no WebSocket; the SDK tests need Node.js >= 20.10`);
}

const files = process.argv.slice(2).length
  ? process.argv.slice(2)
  : fs
      .readdirSync(HERE)
      .filter((f) => f.endsWith('.test.mjs'))
      .sort()
      .map((f) => path.join(HERE, f));

const flags = typeof globalThis.WebSocket === 'undefined' ? ['--experimental-websocket'] : [];
// Node's notice that WebSocket is experimental says nothing about the tests.
// Both flags came with Node 20.11.
const since2011 = major > 20 || (major === 20 && minor >= 11);
if (since2011) flags.push('--disable-warning=ExperimentalWarning');
// A test that hangs fails alone (generous: 2 cores, 4 ranks, sanitizer builds).
if (since2011) flags.push('--test-timeout=120000');
const child = spawn(
  process.execPath,
  [...flags, '--test', '--test-reporter=tap', '--test-concurrency=1', ...files],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);

let tail = '';
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  tail = (tail + chunk).slice(-4096);
});
const stop = (sig) => child.kill(sig);
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

child.on('exit', (code, signal) => {
  const count = (key) => {
    const m = tail.match(new RegExp(`^# ${key} (\\d+)$`, 'm'));
    return m ? Number(m[1]) : null;
  };
  const pass = count('pass');
  const fail = count('fail');
  if (pass === null || fail === null) finish(pass || 0, (fail || 0) + 1, `the test runner ended (${signal || code}) without a summary`);
  const failed = fail + (count('cancelled') || 0) + (count('skipped') || 0) + (count('todo') || 0);
  if (code !== 0 && failed === 0) finish(pass, 1, `the test runner exited with ${signal || code} and no failed test`);
  finish(pass, failed);
});
