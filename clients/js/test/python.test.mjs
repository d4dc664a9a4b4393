// python.test.mjs — the SDK against Python engines (--runtime=python): the
// seed's own psum.py, numpy arrays through the binary path, Python errors.
// The SDK does not care which language the engines run.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { Client, RemoteError, ref } from '../ippc.js';
import { Cluster, ROOT } from './cluster.mjs';

let cluster;
let client;
before(async () => {
  cluster = await new Cluster({ profile: 'jspython', engineArgs: ['--runtime', 'python'] }).start();
  client = new Client(cluster.url, cluster.token);
  await client.connect();
});
after(async () => {
  client.close();
  const problems = await cluster.stop();
  assert.deepEqual(problems, [], 'the cluster stopped cleanly');
});

test('the seed with Python engines: psum.py (mpi4py) over a scattered Float64Array gives 120', async () => {
  const view = client.view('all');
  await view.run(path.join(ROOT, 'examples', 'psum.py'));
  // The seed scatters np.arange(16, dtype='float'): psum.py reduces doubles.
  await view.scatter('a', Float64Array.from({ length: 16 }, (_, i) => i));
  const parts = await view.pull('a');
  assert.deepEqual(parts.map((p) => Array.from(p)), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]);
  await view.execute('totalsum = float(psum(a))');
  assert.deepEqual(await view.pull('totalsum'), [120, 120, 120, 120]);
  assert.deepEqual(await view.apply('psum', [ref('a')]).then((v) => v.map(Number)), [120, 120, 120, 120]);
});

test('numpy arrays round-trip bit-exact through raw bytes; Python errors carry their traceback', async () => {
  const big = new Float64Array(1 << 17).map((_, i) => Math.cos(i) / 3);
  await client.view('all').push({ big });
  assert.deepEqual(await client.view('all').execute('import numpy as np\n_ = None'), [null, null, null, null]);
  const doubled = await client.view(1).execute('big2 = big * 2');
  assert.equal(doubled, null);
  const back = await client.view(1).pull('big2', { raw: true });
  assert.ok(back instanceof Float64Array);
  assert.ok(back.every((x, i) => x === big[i] * 2));
  // A plain pull of numpy arrays on every engine reads their bytes too.
  const plain = await client.view('all').pull('big');
  assert.equal(plain.length, 4);
  for (const a of plain) assert.ok(a instanceof Float64Array && a.every((x, i) => Object.is(x, big[i])));
  const err = await client.view(0).execute('def f():\n    raise ValueError("nope")\nf()').catch((e) => e);
  assert.ok(err instanceof RemoteError);
  assert.equal(err.ename, 'ValueError');
  assert.equal(err.evalue, 'nope');
  assert.ok(err.traceback.some((line) => line.includes('f()')), err.traceback.join('\n'));
});
