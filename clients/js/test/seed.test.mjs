// seed.test.mjs — the seed scenario, values and errors through the SDK
// against a real controller with 4 MPI engines.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  Client,
  CompositeError,
  IppcError,
  NDArray,
  RemoteError,
  TimeoutError,
  decodeValue,
  encodeValue,
  ref,
  resolveTargets,
} from '../ippc.js';
import { Cluster, ROOT } from './cluster.mjs';

const PSUM = path.join(ROOT, 'examples', 'psum.lua');

let cluster;
before(async () => {
  cluster = await new Cluster().start();
});
after(async () => {
  const problems = await cluster.stop();
  assert.deepEqual(problems, [], 'the cluster stopped cleanly');
});

/** A connected client; closed after the test. */
async function connected(t, options) {
  const client = new Client(cluster.url, cluster.token, options);
  await client.connect();
  t.after(() => client.close());
  return client;
}

for (const transport of ['ws', 'rest']) {
  test(`seed flow over ${transport}: run psum.lua, scatter arange(16), psum gives 120 on every engine`, async (t) => {
    const client = await connected(t, { transport });
    assert.equal(client.socketOpen, transport === 'ws');
    assert.deepEqual(client.ids, [0, 1, 2, 3]);
    const view = client.view('all');
    await view.reset();
    await view.run(PSUM); // the file is read by the SDK (Node.js)
    await view.scatter('a', Array.from({ length: 16 }, (_, i) => i));
    const parts = await view.pull('a');
    assert.equal(parts.length, 4);
    assert.deepEqual(
      parts.map((p) => Array.from(p, Number)),
      [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]],
    );
    await view.execute('totalsum = psum(a)');
    assert.deepEqual(await view.pull('totalsum'), [120, 120, 120, 120]);
    // The same sum through apply with a reference to each engine's own `a`.
    assert.deepEqual(await view.apply('psum', [ref('a')]), [120, 120, 120, 120]);
    const whole = await view.gather('a');
    assert.deepEqual(Array.from(whole, Number), Array.from({ length: 16 }, (_, i) => i));
  });
}

test('load: a native plugin becomes callable (the seed psum in C); a missing one is a PluginError', async (t) => {
  const client = await connected(t);
  const build = process.env.BUILD || 'build';
  const lib = path.join(path.isAbsolute(build) ? build : path.join(ROOT, build), 'plugins', 'libpsum.so');
  const view = client.view('all');
  await view.load(lib);
  await view.push({ c: new Float64Array([1, 2, 3]) });
  // psum now is the plugin's kernel: an MPI_Allreduce in C.
  assert.deepEqual(await view.apply('psum', [ref('c')]), [24, 24, 24, 24]);
  const err = await client.view(0).load('/nonexistent/libnothing.so').catch((e) => e);
  assert.ok(err instanceof RemoteError);
  assert.equal(err.ename, 'PluginError');
  await view.execute('c = nil psum = nil');
});

test('examples/seed.mjs, run as a user would, prints totalsum: [120,120,120,120]', async () => {
  const { execFile } = await import('node:child_process');
  const flags = typeof WebSocket === 'undefined' ? ['--experimental-websocket'] : [];
  const out = await new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [...flags, path.join(ROOT, 'examples', 'seed.mjs')],
      { env: { ...process.env, IPPC_DIR: cluster.dir, PROFILE: cluster.profile }, timeout: 60000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stdout}${stderr}`)) : resolve(stdout)),
    );
  });
  assert.match(out, /^totalsum: \[120,120,120,120\]$/m);
  assert.match(out, /^a: \[\[0,1,2,3\],\[4,5,6,7\],\[8,9,10,11\],\[12,13,14,15\]\]$/m);
});

test('execute: per-engine values, stdout and metadata; a one-engine view unwraps', async (t) => {
  const client = await connected(t);
  const ar = client.view('all').execute('print("rank", mpi.rank()) return mpi.rank() * 10');
  assert.deepEqual(await ar, [0, 10, 20, 30]);
  assert.equal(ar.ready(), true);
  assert.equal(ar.successful(), true);
  assert.deepEqual(ar.stdout, ['rank\t0\n', 'rank\t1\n', 'rank\t2\n', 'rank\t3\n']);
  assert.deepEqual(
    ar.metadata.map((m) => [m.engine_id, m.status]),
    [[0, 'ok'], [1, 'ok'], [2, 'ok'], [3, 'ok']],
  );
  assert.ok(ar.requestId > 0);
  const records = await ar.taskRecords();
  assert.deepEqual(records.map((r) => [r.engine, r.state, r.op]).sort(), [0, 1, 2, 3].map((e) => [e, 'completed', 'execute']));
  assert.ok(records.every((r) => r.started && r.completed && r.request === ar.requestId));
  const one = client.view(2).execute('print("hi") return mpi.rank()');
  assert.equal(await one.get(), 2);
  assert.equal(one.stdout, 'hi\n');
  assert.equal(one.metadata.engine_id, 2);
  // Slices and lists name engines as the controller does.
  assert.deepEqual(await client.view('0:2').execute('return mpi.rank()'), [0, 1]);
  assert.deepEqual(await client.view([3, 1]).execute('return mpi.rank()'), [3, 1]);
  assert.deepEqual(await client.view('-1').execute('return mpi.rank()'), [3]);
});

test('non-blocking calls: the request id comes first, get/wait later', async (t) => {
  const client = await connected(t);
  const ar = client.view('all').execute('local t = os.clock() while os.clock() - t < 0.3 do end return 1', { block: false });
  assert.equal(ar.ready(), false);
  // get with a short timeout rejects with TimeoutError; the work goes on.
  await assert.rejects(ar.get(0.01), TimeoutError);
  assert.equal(await ar.wait(), true);
  assert.deepEqual(await ar.get(), [1, 1, 1, 1]);
  assert.ok(ar.requestId > 0);
  assert.ok(ar.elapsed >= 0);
  // A non-blocking request's answer is kept: it can be read again by id.
  const again = await client.requestAnswer(ar.requestId);
  assert.deepEqual(again.results.map((r) => r.value), [1, 1, 1, 1]);
});

test('a 1e6-element Float64Array pushed and pulled back bit-exact through raw bytes', async (t) => {
  const client = await connected(t);
  const n = 1e6;
  const big = new Float64Array(n);
  for (let i = 0; i < n; i++) big[i] = Math.sin(i) * 1e300 * (i % 3 ? 1 : -1e-310);
  big[0] = NaN;
  big[1] = -0;
  big[2] = Infinity;
  big[3] = Number.MIN_VALUE;
  const seen = [];
  const realFetch = globalThis.fetch;
  const spy = (url, init) => {
    seen.push({ url: String(url), type: init && init.headers && init.headers['Content-Type'], accept: init && init.headers && init.headers.Accept });
    return realFetch(url, init);
  };
  const c2 = await connected(t, { fetch: spy });
  const view = c2.view('all');
  await view.push({ big });
  // The bytes went as one raw body, not JSON.
  assert.ok(seen.some((s) => s.type === 'application/octet-stream' && s.url.includes('/vars/big')));
  const sums = await client.view('all').execute('return #big');
  assert.deepEqual(sums, [n, n, n, n]);
  for (const target of [0, '1:3', [3, 2]]) {
    const back = await c2.view(target).pull('big', { raw: true });
    const arrays = target === 0 ? [back] : back;
    assert.equal(arrays.length, target === 0 ? 1 : 2);
    for (const a of arrays) {
      assert.ok(a instanceof Float64Array);
      assert.equal(a.length, n);
      assert.deepEqual(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(big.buffer));
    }
  }
  assert.ok(seen.some((s) => s.accept === 'application/octet-stream'));
  // A gather of the raw-scattered array comes back whole, as bytes.
  await c2.view('all').scatter('part', big);
  const lens = await c2.view('all').execute('return #part');
  assert.deepEqual(lens, [n / 4, n / 4, n / 4, n / 4]);
  const gathered = await c2.view('all').gather('part', { raw: true });
  assert.deepEqual(Buffer.from(gathered.buffer), Buffer.from(big.buffer));
  await c2.view('all').execute('big = nil part = nil');
});

test('typed arrays of every dtype and shaped arrays round-trip through JSON', async (t) => {
  const client = await connected(t);
  const view = client.view(1);
  const values = {
    f64: new Float64Array([1.5, -2.25, 1e-300]),
    f32: new Float32Array([0.5, 3.25]),
    i64: new BigInt64Array([-(2n ** 62n), 7n, 2n ** 62n]),
    i32: new Int32Array([-2147483648, 0, 2147483647]),
    u8: new Uint8Array([0, 128, 255]),
    m: new NDArray(new Float64Array([1, 2, 3, 4, 5, 6]), [2, 3]),
    mixed: { list: [1, 'two', true], nested: { x: 1 } },
  };
  await view.push(values);
  const back = await view.pull(Object.keys(values));
  for (const [i, name] of Object.keys(values).entries()) {
    const got = back[i];
    if (name === 'm') {
      assert.ok(got instanceof NDArray);
      assert.deepEqual(got.shape, [2, 3]);
      assert.equal(got.at(1, 2), 6);
      assert.deepEqual(got.toArray(), [[1, 2, 3], [4, 5, 6]]);
    } else if (name === 'mixed') {
      assert.deepEqual(got, values.mixed);
    } else {
      assert.equal(got.constructor, values[name].constructor, name);
      assert.deepEqual(Array.from(got), Array.from(values[name]), name);
    }
  }
  // The engines see the dtypes and shape that were sent.
  const listing = await view.vars();
  assert.equal(listing.m.dtype, 'float64');
  assert.deepEqual(listing.m.shape, [2, 3]);
  assert.equal(listing.i64.dtype, 'int64');
  assert.equal(listing.u8.dtype, 'uint8');
  // {format: 'list'} answers plain JSON lists.
  assert.deepEqual(await view.execute('return nd.arange(3)', { format: 'list' }), [0, 1, 2]);
  await view.execute('f64, f32, i64, i32, u8, m, mixed = nil');
});

test('long plain arrays of numbers travel as bytes, with the dtype the controller would give them', async (t) => {
  const seen = [];
  const realFetch = globalThis.fetch;
  const client = await connected(t, { fetch: (url, init) => (seen.push(init && init.headers && init.headers['Content-Type']), realFetch(url, init)) });
  const view = client.view('all');
  const ints = Array.from({ length: 10000 }, (_, i) => i - 5000);
  const reals = Array.from({ length: 10000 }, (_, i) => i / 7);
  await view.push({ ints, reals });
  await view.scatter('part', ints);
  assert.equal(seen.filter((t) => t === 'application/octet-stream').length, 3);
  const listing = await client.view(0).vars();
  assert.equal(listing.ints.dtype, 'int64');
  assert.equal(listing.reals.dtype, 'float64');
  assert.deepEqual(listing.part.shape, [2500]);
  const back = await client.view(3).pull(['reals', 'part']);
  assert.deepEqual(Array.from(back[0]), reals);
  assert.deepEqual(Array.from(back[1], Number), ints.slice(7500));
  // Short ones, and lists with other values, stay JSON lists.
  await view.push({ few: [1, 2, 3], mixed: Array.from({ length: 2000 }, (_, i) => (i ? i : 'x')) });
  assert.equal(seen.filter((t) => t === 'application/octet-stream').length, 3);
  const listing2 = await client.view(0).vars();
  assert.equal(listing2.few.dtype, 'int64');
  assert.equal(listing2.mixed.type, 'table');
  await view.execute('ints, reals, part, few, mixed = nil');
});

test('a JSON call too big for the socket (over 8 MiB) goes over REST', async (t) => {
  const seen = [];
  const realFetch = globalThis.fetch;
  const client = await connected(t, { fetch: (url, init) => (seen.push(String(url)), realFetch(url, init)) });
  assert.equal(client.socketOpen, true);
  const text = 'é'.repeat(5 << 20); // 5 Mi characters, 10 MiB of UTF-8
  await client.view(0).push({ text });
  assert.ok(seen.some((u) => u.endsWith('/views/0/push?block=true&format=typed')), seen.join(' '));
  assert.equal(await client.view(0).execute('return #text'), 10 << 20);
  await client.view(0).execute('text = nil');
});

test('the value codec: encodeValue/decodeValue and references', () => {
  const wire = encodeValue({ a: new Int32Array([1, 2]), r: ref('x'), n: 5n, s: 'x' });
  assert.deepEqual(wire, { a: { dtype: 'int32', shape: [2], data: 'AQAAAAIAAAA=' }, r: { $ref: 'x' }, n: 5, s: 'x' });
  const back = decodeValue(wire);
  assert.deepEqual(Array.from(back.a), [1, 2]);
  assert.throws(() => encodeValue(new Int16Array(2)), TypeError);
  assert.throws(() => encodeValue(2n ** 60n), RangeError);
  assert.throws(() => new NDArray(new Float64Array(5), [2, 3]), RangeError);
});

test('resolveTargets reads specs as the controller does', () => {
  const live = [0, 1, 2, 5];
  assert.deepEqual(resolveTargets('all', live), [0, 1, 2, 5]);
  assert.deepEqual(resolveTargets('1::2', live), [1, 5]);
  assert.deepEqual(resolveTargets('::-1', live), [5, 2, 1, 0]);
  assert.deepEqual(resolveTargets('-1', live), [5]);
  assert.deepEqual(resolveTargets('5,0,5', live), [5, 0]);
  assert.deepEqual(resolveTargets([2, 0], live), [2, 0]);
  assert.throws(() => resolveTargets('3', live), (e) => e.code === 'no_engines');
  assert.throws(() => resolveTargets('x', live), (e) => e.code === 'bad_targets');
  assert.throws(() => resolveTargets('::0', live), (e) => e.code === 'bad_targets');
});

test('a Lua error rejects with a RemoteError carrying the traceback; the engine stays usable', async (t) => {
  const client = await connected(t);
  const err = await client
    .view(0)
    .run('boom.lua', 'local function f()\n  error("kaboom")\nend\nf()\n')
    .then(
      () => null,
      (e) => e,
    );
  assert.ok(err instanceof RemoteError, String(err));
  assert.equal(err.ename, 'RuntimeError');
  assert.match(err.evalue, /kaboom/);
  assert.equal(err.engine, 0);
  assert.ok(err.traceback.some((line) => line.includes('boom.lua')), err.traceback.join('\n'));
  assert.equal(await client.view(0).execute('return 1 + 1'), 2);
  // Several engines failing: a CompositeError with one RemoteError each.
  const ar = client.view('all').execute('if mpi.rank() % 2 == 1 then error("odd") end return 0');
  const comp = await ar.get().catch((e) => e);
  assert.ok(comp instanceof CompositeError);
  assert.deepEqual(comp.errors.map((e) => e.engine), [1, 3]);
  assert.equal(ar.successful(), false);
  assert.deepEqual(
    ar.metadata.map((m) => m.status),
    ['ok', 'error', 'ok', 'error'],
  );
  // A missing variable: NameError from the pull.
  const missing = await client.view(1).pull('no_such_var').catch((e) => e);
  assert.ok(missing instanceof RemoteError);
  assert.equal(missing.ename, 'NameError');
  // A raw pull of something missing, or not an array, says so.
  const notThere = await client.view(1).pull('no_such_var', { raw: true }).catch((e) => e);
  assert.ok(notThere instanceof RemoteError);
  assert.match(notThere.evalue, /not defined/);
  assert.equal(notThere.engine, 1);
  await client.view('all').execute('scalar = 1');
  const notArray = await client.view('0:2').pull('scalar', { raw: true }).catch((e) => e);
  assert.ok(notArray instanceof CompositeError);
  assert.match(notArray.evalue, /not an array/);
  // A raw pull from an engine that does not exist is the controller's refusal.
  const none = await client.view(7).pull('scalar', { raw: true }).catch((e) => e);
  assert.ok(none instanceof IppcError && !(none instanceof RemoteError));
  assert.equal(none.code, 'no_engines');
});

test('bad tokens, targets and requests reject with the controller error codes', async (t) => {
  const bad = new Client(cluster.url, 'not-the-token');
  const err = await bad.connect().catch((e) => e);
  assert.ok(err instanceof IppcError);
  assert.equal(err.code, 'unauthorized');
  assert.equal(err.status, 401);
  bad.close();
  const client = await connected(t);
  for (const transport of ['ws', 'rest']) {
    const c = await connected(t, { transport });
    const none = await c.view(42).execute('return 1').catch((e) => e);
    assert.equal(none.code, 'no_engines', transport);
    assert.equal(none.status, 422);
    const spec = await c.view('zz').execute('return 1').catch((e) => e);
    assert.equal(spec.code, 'bad_targets', transport);
    const task = await c.task(999999).get().catch((e) => e);
    assert.equal(task.code, 'not_found', transport);
  }
  assert.throws(() => client.view(-1), TypeError);
  assert.throws(() => client.view([]), TypeError);
  assert.throws(() => new Client('localhost:1', 'x'), TypeError);
  // A closed client refuses calls with code 'closed'.
  const c = new Client(cluster.url, cluster.token);
  await c.connect();
  c.close();
  assert.equal((await c.info().catch((e) => e)).code, 'closed');
});

test('info, engines, queue and ids', async (t) => {
  const client = await connected(t);
  const info = await client.info();
  assert.equal(info.engines, 4);
  const engines = await client.engines();
  assert.deepEqual(
    engines.map((e) => [e.id, e.rank, e.size]),
    [[0, 0, 4], [1, 1, 4], [2, 2, 4], [3, 3, 4]],
  );
  assert.deepEqual(client.ids, [0, 1, 2, 3]);
  const queue = await client.queue();
  assert.deepEqual(Object.keys(queue.engines).sort(), ['0', '1', '2', '3']);
});
