// binpull.test.mjs — the default pull of one name moves big arrays as bytes
// (one multipart/mixed GET for several engines, octet-stream for one),
// against a real controller with 4 MPI engines.  A wrapped fetch records
// every REST request, so each test sees which path a pull took; the JSON
// calls go over REST too (transport 'rest') where a test must see them.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Client, IppcError, NDArray, RemoteError, parseMultipart } from '../ippc.js';
import { Cluster } from './cluster.mjs';

let cluster;
before(async () => {
  cluster = await new Cluster().start();
});
after(async () => {
  const problems = await cluster.stop();
  assert.deepEqual(problems, [], 'the cluster stopped cleanly');
});

const realFetch = globalThis.fetch;

/**
 * A connected client whose REST requests are recorded in `seen` (method,
 * path, Accept).  hooks.before(url, init) runs before a request goes out;
 * hooks.answer(url, init, res) may replace its answer.
 */
async function spied(t, options = {}, hooks = {}) {
  const seen = [];
  const fetch = async (url, init = {}) => {
    const headers = init.headers || {};
    seen.push({ method: init.method || 'GET', path: new URL(String(url)).pathname, accept: headers.Accept });
    if (hooks.before) await hooks.before(String(url), init);
    const res = await realFetch(url, init);
    return hooks.answer ? hooks.answer(String(url), init, res) : res;
  };
  const client = new Client(cluster.url, cluster.token, { transport: 'rest', ...options, fetch });
  await client.connect();
  t.after(() => client.close());
  seen.length = 0;
  return { client, seen };
}

/** The requests that asked for a binary answer, as [Accept, path]. */
const binaryAsks = (seen) => seen.filter((s) => s.accept).map((s) => [s.accept, s.path]);
/** The JSON pull calls (POST .../pull). */
const jsonPulls = (seen) => seen.filter((s) => s.path.endsWith('/pull'));

const bytesOf = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** 1e6 float64 values with the ones a text round trip would spoil. */
function bigFloats(n = 1e6) {
  const big = new Float64Array(n);
  for (let i = 0; i < n; i++) big[i] = Math.sin(i) * 1e300 * (i % 3 ? 1 : -1e-310);
  big[0] = NaN;
  big[1] = -0;
  big[2] = Infinity;
  big[3] = Number.MIN_VALUE;
  return big;
}

test('a plain pull of a 1e6-element Float64Array from 4 engines is one multipart GET, bit-exact per engine', async (t) => {
  const { client, seen } = await spied(t);
  const view = client.view('all');
  const big = bigFloats();
  await view.push({ big });
  seen.length = 0;
  const ar = view.pull('big');
  const arrays = await ar;
  assert.equal(arrays.length, 4);
  for (const a of arrays) {
    assert.ok(a instanceof Float64Array);
    assert.equal(a.length, big.length);
    assert.ok(bytesOf(a).equals(bytesOf(big)), 'bit-exact');
    // A buffer of its own, as a JSON answer's arrays have.
    assert.equal(a.byteOffset, 0);
    assert.equal(a.buffer.byteLength, a.byteLength);
  }
  assert.deepEqual(binaryAsks(seen), [['multipart/mixed', '/api/v1/views/0,1,2,3/vars/big']]);
  assert.deepEqual(jsonPulls(seen), [], 'the JSON pull was not used');
  // The AsyncResult is as a JSON pull's: request id, targets, metadata, get().
  assert.ok(ar.requestId > 0);
  assert.deepEqual(ar.targets, [0, 1, 2, 3]);
  assert.deepEqual(ar.metadata.map((m) => [m.engine_id, m.status, m.request]), [0, 1, 2, 3].map((e) => [e, 'ok', ar.requestId]));
  assert.deepEqual(ar.stdout, ['', '', '', '']);
  assert.equal(ar.successful(), true);
  assert.equal(await ar.get(), arrays);

  // Each engine's own part comes back from its own engine, in target order,
  // over the WebSocket transport too (the default).
  const ws = await spied(t, { transport: 'ws' });
  const whole = new Float64Array(4 * 20000).map((_, i) => i * 0.5 - 7);
  await ws.client.view('all').scatter('part', whole);
  ws.seen.length = 0;
  const parts = await ws.client.view([3, 0, 2]).pull('part');
  assert.deepEqual(
    parts.map((p) => Array.from(p)),
    [3, 0, 2].map((e) => Array.from(whole.subarray(e * 20000, (e + 1) * 20000))),
  );
  assert.deepEqual(binaryAsks(ws.seen), [['multipart/mixed', '/api/v1/views/3,0,2/vars/part']]);
  await view.execute('big = nil part = nil');
});

test('int64 arrays come back as exact BigInt64Arrays and 2-D arrays as NDArrays, as the JSON pull gives them', async (t) => {
  const { client, seen } = await spied(t);
  const view = client.view('all');
  const ints = new BigInt64Array(20000).map((_, i) => (i % 2 ? -1n : 1n) * (2n ** 62n + BigInt(i) * 1234567891n));
  const m = new NDArray(new Float32Array(300 * 100).map((_, i) => i / 3), [300, 100]);
  await view.push({ ints, m });
  seen.length = 0;
  const backInts = await view.pull('ints');
  const backM = await client.view('1:3').pull('m');
  assert.deepEqual(binaryAsks(seen), [
    ['multipart/mixed', '/api/v1/views/0,1,2,3/vars/ints'],
    ['multipart/mixed', '/api/v1/views/1,2/vars/m'],
  ]);
  assert.deepEqual(jsonPulls(seen), []);
  for (const a of backInts) {
    assert.ok(a instanceof BigInt64Array);
    assert.deepEqual(Array.from(a), Array.from(ints));
  }
  assert.equal(backM.length, 2);
  for (const a of backM) {
    assert.ok(a instanceof NDArray);
    assert.deepEqual(a.shape, [300, 100]);
    assert.equal(a.dtype, 'float32');
    assert.ok(bytesOf(a.data).equals(bytesOf(m.data)));
  }
  // The same values as the JSON pull (a list of names) gives them.
  const json = await client.view('1:3').pull(['m', 'ints']);
  assert.deepEqual(backM, json.map((r) => r[0]));
  assert.deepEqual(backInts.slice(1, 3), json.map((r) => r[1]));
  await view.execute('ints, m = nil');
});

test('a single-engine view pulls its array as application/octet-stream, unwrapped', async (t) => {
  const { client, seen } = await spied(t);
  const a = new Float64Array(50000).map((_, i) => i * i);
  await client.view('all').push({ a });
  seen.length = 0;
  const ar = client.view(0).pull('a');
  const one = await ar;
  assert.ok(one instanceof Float64Array);
  assert.ok(bytesOf(one).equals(bytesOf(a)));
  assert.equal(ar.metadata.engine_id, 0);
  assert.equal(ar.metadata.status, 'ok');
  assert.equal(ar.stdout, '');
  // A list of one id, or one engine by index, is a list of one value.
  const listed = await client.view([2]).pull('a');
  const last = await client.view('-1').pull('a');
  assert.equal(listed.length, 1);
  assert.ok(bytesOf(listed[0]).equals(bytesOf(a)));
  assert.ok(bytesOf(last[0]).equals(bytesOf(a)));
  assert.deepEqual(binaryAsks(seen), [
    ['application/octet-stream', '/api/v1/views/0/vars/a'],
    ['application/octet-stream', '/api/v1/views/2/vars/a'],
    ['application/octet-stream', '/api/v1/views/3/vars/a'],
  ]);
  assert.deepEqual(jsonPulls(seen), []);
  await client.view('all').execute('a = nil');
});

test('small arrays, mixed values, lists of names, non-blocking and list-format pulls stay JSON', async (t) => {
  const { client, seen } = await spied(t);
  const view = client.view('all');
  const big = new Float64Array(20000).map((_, i) => i + 0.25);
  const small = new Float64Array(100).map((_, i) => -i);
  await view.push({ big, small, mixed: big });
  await client.view(3).execute('mixed = "text on engine 3"');
  seen.length = 0;

  const smallBack = await view.pull('small');
  assert.deepEqual(smallBack.map((s) => Array.from(s)), Array(4).fill(Array.from(small)));
  assert.ok(smallBack.every((s) => s instanceof Float64Array));
  const mixed = await view.pull('mixed');
  assert.deepEqual(mixed.slice(0, 3).map((s) => Array.from(s)), Array(3).fill(Array.from(big)));
  assert.equal(mixed[3], 'text on engine 3');
  assert.deepEqual(binaryAsks(seen), [], 'no binary request');
  assert.equal(jsonPulls(seen).length, 2);

  // A list of names, and a pull that does not block, ask no listing either.
  seen.length = 0;
  const listed = await view.pull(['big']);
  assert.deepEqual(Array.from(listed[2][0]), Array.from(big));
  const ar = view.pull('big', { block: false });
  assert.deepEqual(Array.from((await ar.get())[1]), Array.from(big));
  assert.ok(ar.requestId > 0);
  const lists = await client.view(1).pull('big', { format: 'list' });
  assert.ok(Array.isArray(lists) && lists.length === big.length && lists[5] === big[5]);
  assert.deepEqual(binaryAsks(seen), []);
  assert.ok(!seen.some((s) => s.path.endsWith('/vars')), 'no listing');
  assert.equal(jsonPulls(seen).length, 3);
  await view.execute('big, small, mixed = nil');
});

test('a value that changes between the listing and the pull: a string part, or a missing name, answers as the JSON pull does', async (t) => {
  // The wrapped fetch makes the change itself, through the real fetch, just
  // before the binary request goes out: the listing saw arrays everywhere.
  const changes = [];
  const { client, seen } = await spied(t, {}, {
    before: async (url, init) => {
      if (!init.headers || !init.headers.Accept || !changes.length) return;
      const [engine, code] = changes.shift();
      const r = await realFetch(`${cluster.url}/api/v1/views/${engine}/execute`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${cluster.token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ code }),
      });
      assert.equal(r.status, 200, await r.text());
    },
  });
  const view = client.view('all');
  const big = new Float64Array(20000).map((_, i) => i);
  await view.push({ moving: big, going: big });
  seen.length = 0;

  changes.push([3, 'moving = "a string now"']);
  const values = await view.pull('moving');
  assert.deepEqual(values.slice(0, 3).map((v) => Array.from(v)), Array(3).fill(Array.from(big)));
  assert.equal(values[3], 'a string now');
  assert.deepEqual(binaryAsks(seen), [['multipart/mixed', '/api/v1/views/0,1,2,3/vars/moving']]);
  assert.equal(jsonPulls(seen).length, 1, 'the JSON pull answered');

  // Gone on engine 1: the controller refuses the binary answer (422), and
  // the JSON pull says which engine failed and why.
  changes.push([1, 'going = nil']);
  const err = await view.pull('going').catch((e) => e);
  assert.ok(err instanceof RemoteError, String(err));
  assert.equal(err.ename, 'NameError');
  assert.equal(err.engine, 1);
  assert.equal(jsonPulls(seen).length, 2);
  await client.view('all').execute('moving, going = nil');
});

/**
 * A client whose binary answers are edited by `edit(text, contentType)`
 * (the body as latin-1 text) before the SDK sees them.
 */
async function editedClient(t, edit) {
  const { client } = await spied(t, {}, { answer: async (url, init, res) => {
    const type = res.headers.get('content-type') || '';
    if (!init.headers || !init.headers.Accept || res.status !== 200) return res;
    const text = Buffer.from(await res.arrayBuffer()).toString('latin1');
    const out = edit(text, type);
    const headers = new Headers(res.headers);
    headers.set('content-type', out.type ?? type);
    headers.delete('content-length');
    return new Response(Buffer.from(out.text, 'latin1'), { status: res.status, headers });
  } });
  return client;
}

test('a malformed multipart answer (cut short, a bad part header) rejects with bad_answer, never a wrong array', async (t) => {
  const { client: setup } = await spied(t);
  const big = bigFloats(100000);
  await setup.view('all').push({ big });
  const cases = [
    ['cut short in the last part', (s) => ({ text: s.slice(0, s.length - 1000) }), /part 4 is cut short/],
    ['cut short in the closing boundary', (s) => ({ text: s.slice(0, s.length - 3) }), /followed by neither/],
    ['a Content-Length that is too small', (s) => ({ text: s.replace('Content-Length: 800000', 'Content-Length: 799992') }), /part 1 is not followed by the boundary/],
    ['a Content-Length that is too large', (s) => ({ text: s.replace('Content-Length: 800000', 'Content-Length: 800008') }), /part 1 is not followed by the boundary/],
    ['no Content-Length', (s) => ({ text: s.replace('Content-Length: 800000\r\n', '') }), /part 1 has no Content-Length/],
    ['a header line without a colon', (s) => ({ text: s.replace('X-Ippc-Shape:', 'X-Ippc-Shape') }), /part 1 has a header line that does not parse/],
    ['a shape that does not fit the bytes', (s) => ({ text: s.replace('X-Ippc-Shape: 100000', 'X-Ippc-Shape: 99999') }), /engine 0: a float64 array of shape \[99999\] is 799992 bytes, not 800000/],
    ['a dtype that is not ippc\'s', (s) => ({ text: s.replace('X-Ippc-Dtype: float64', 'X-Ippc-Dtype: float16') }), /dtype 'float16'/],
    ['parts out of engine order', (s) => ({ text: s.replace('X-Ippc-Engine: 0', 'X-Ippc-Engine: 9') }), /part 1 is engine 9's, not engine 0's/],
    ['a boundary the body does not have', (s, type) => ({ text: s, type: type.replace('boundary=ippc-', 'boundary=other-') }), /does not begin with the boundary/],
    ['bytes after the closing boundary', (s) => ({ text: s + 'trailing' }), /bytes follow the closing boundary/],
  ];
  for (const [what, edit, message] of cases) {
    const client = await editedClient(t, edit);
    const err = await client.view('all').pull('big').catch((e) => e);
    assert.ok(err instanceof IppcError && !(err instanceof RemoteError), `${what}: ${err}`);
    assert.equal(err.code, 'bad_answer', what);
    assert.match(err.message, message, what);
  }
  // One engine's octet-stream answer is checked the same way.
  const client = await editedClient(t, (s) => ({ text: s.slice(0, s.length - 8) }));
  const err = await client.view(2).pull('big').catch((e) => e);
  assert.equal(err.code, 'bad_answer');
  assert.match(err.message, /engine 2: a float64 array of shape \[100000\] is 800000 bytes, not 799992/);
  // Untouched, the same pull is right.
  const good = await editedClient(t, (s) => ({ text: s }));
  for (const a of await good.view('all').pull('big')) assert.ok(bytesOf(a).equals(bytesOf(big)));
  await setup.view('all').execute('big = nil');
});

/** A multipart body from parts {head, data}; `tail` ends it. */
function multipart(boundary, parts, tail = `--${boundary}--\r\n`) {
  const chunks = [];
  for (const p of parts) chunks.push(Buffer.from(`--${boundary}\r\n${p.head}\r\n\r\n`, 'latin1'), Buffer.from(p.data), Buffer.from('\r\n'));
  chunks.push(Buffer.from(tail, 'latin1'));
  return new Uint8Array(Buffer.concat(chunks));
}

test('parseMultipart walks parts by Content-Length and refuses what is not the format', () => {
  const B = 'ippc-0123abcd';
  // A part whose data holds the boundary, even as a whole delimiter line:
  // taken by its length, never searched.
  const tricky = Buffer.from(`x\r\n--${B}\r\nContent-Length: 1\r\n\r\ny`);
  const body = multipart(B, [
    { head: `Content-Type: application/octet-stream\r\nContent-Length: ${tricky.length}\r\nX-Ippc-Engine: 0`, data: tricky },
    { head: 'content-length: 0\r\nX-Ippc-Engine:  5 ', data: Buffer.alloc(0) },
  ]);
  const parts = parseMultipart(`multipart/mixed; boundary="${B}"`, body);
  assert.equal(parts.length, 2);
  assert.ok(Buffer.from(parts[0].body).equals(tricky));
  assert.equal(parts[0].headers.get('content-type'), 'application/octet-stream');
  assert.equal(parts[1].body.length, 0);
  assert.equal(parts[1].headers.get('x-ippc-engine'), '5');
  // Without the CRLF after the closing boundary, too.
  const bare = multipart(B, [{ head: 'Content-Length: 2', data: Buffer.from('ab') }], `--${B}--`);
  assert.equal(parseMultipart(`Multipart/Mixed;boundary=${B}`, bare).length, 1);

  const ok = multipart(B, [{ head: 'Content-Length: 2', data: Buffer.from('ab') }]);
  const type = `multipart/mixed; boundary=${B}`;
  const refused = [
    ['application/json', ok, /not multipart\/mixed/],
    ['multipart/mixed', ok, /no valid boundary/],
    ['multipart/mixed; boundary=', ok, /no valid boundary/],
    [type, ok.subarray(1), /does not begin with the boundary/],
    [type, new Uint8Array(0), /does not begin with the boundary/],
    [type, ok.subarray(0, B.length + 10), /ends inside part 1's headers/],
    [type, multipart(B, [{ head: 'X: ' + 'y'.repeat(5000), data: Buffer.from('') }]), /headers pass 4096 bytes/],
    [type, multipart(B, [{ head: 'Content-Length: -2', data: Buffer.from('ab') }]), /part 1 has a bad \(-2\) Content-Length/],
    [type, multipart(B, [{ head: 'Content-Length: 2\r\nContent-Length: 2', data: Buffer.from('ab') }]), /two content-length headers/],
    [type, multipart(B, [{ head: 'Content-Length 2', data: Buffer.from('ab') }]), /does not parse/],
    [type, multipart(B, [{ head: 'Content-Length: 3', data: Buffer.from('ab') }]), /not followed by the boundary|cut short/],
    [type, multipart(B, [{ head: 'Content-Length: 1', data: Buffer.from('ab') }]), /not followed by the boundary/],
    [type, multipart(B, [{ head: 'Content-Length: 2', data: Buffer.from('ab') }], ''), /cut short/],
    [type, multipart(B, [{ head: 'Content-Length: 2', data: Buffer.from('ab') }], `--${B}`), /neither CRLF nor '--'/],
    [type, multipart(B, [{ head: 'Content-Length: 2', data: Buffer.from('ab') }], `--${B}--\r\nmore`), /bytes follow/],
    [type, multipart(B, [{ head: 'Content-Length: 99999999', data: Buffer.from('ab') }]), /part 1 is cut short: its Content-Length is 99999999/],
  ];
  // Every prefix of a well-formed answer is refused: a body cut anywhere
  // never yields parts.
  const whole = multipart(B, [
    { head: 'Content-Type: application/octet-stream\r\nContent-Length: 16\r\nX-Ippc-Engine: 0', data: Buffer.alloc(16, 7) },
    { head: 'Content-Type: application/json\r\nContent-Length: 4\r\nX-Ippc-Engine: 1', data: Buffer.from('"ab"') },
  ]);
  assert.equal(parseMultipart(type, whole).length, 2);
  for (let cut = 0; cut < whole.length - 2; cut++) {
    assert.throws(() => parseMultipart(type, whole.subarray(0, cut)), (e) => e.code === 'bad_answer', `cut at ${cut}`);
  }
  for (const [ctype, bytes, message] of refused) {
    assert.throws(
      () => parseMultipart(ctype, bytes),
      (e) => e instanceof IppcError && e.code === 'bad_answer' && message.test(e.message),
      `${ctype} / ${Buffer.from(bytes.subarray(0, 60)).toString('latin1')}`,
    );
  }
});
