// seed.mjs — the seed scenario (using-mpi-with-ipython) with the JavaScript
// SDK against a running ippc cluster:
//
//   make run                                          # or: build/bin/ippc cluster start -n 4
//   node --experimental-websocket examples/seed.mjs   # in another terminal (Node 20)
//
// Reads URL and token from the client connection file
//   $IPPC_DIR/profile_$PROFILE/security/ippc-client.json
// (IPPC_DIR defaults to ~/.ippc, PROFILE to "default"), or from $IPPC_URL and
// $IPPC_TOKEN when both are set.  Ends by printing totalsum: [120,120,120,120].

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from '../clients/js/ippc.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function connection() {
  if (process.env.IPPC_URL && process.env.IPPC_TOKEN) {
    return { url: process.env.IPPC_URL, token: process.env.IPPC_TOKEN };
  }
  const dir = process.env.IPPC_DIR || path.join(os.homedir(), '.ippc');
  const file =
    process.env.IPPC_CONNECTION_FILE ||
    path.join(dir, `profile_${process.env.PROFILE || 'default'}`, 'security', 'ippc-client.json');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    console.error(`seed.mjs: no connection file at ${file} (is a cluster running? try 'make run')`);
    process.exit(1);
  }
}

const { url, token } = connection();
const client = new Client(url, token);
try {
  const info = await client.connect();
  console.log(`cluster at ${url}: ${info.engines} engines`);
  const view = client.view('all');

  // The file every engine runs: psum is an MPI allreduce of local sums.
  await view.run(path.join(here, 'psum.lua'));

  // arange(16) split over the engines: 4 items each with 4 engines.
  await view.scatter('a', Array.from({ length: 16 }, (_, i) => i));
  const parts = await view.pull('a');
  console.log('a:', JSON.stringify(parts.map((p) => Array.from(p, Number))));

  await view.execute('totalsum = psum(a)');
  console.log('totalsum:', JSON.stringify(await view.pull('totalsum')));
} catch (e) {
  console.error(`seed.mjs: ${e.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
