// tasks.test.mjs — load-balanced tasks, map, abort and interrupt through the
// SDK against a real controller with 4 MPI engines.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Client, CompositeError, RemoteError } from '../ippc.js';
import { Cluster } from './cluster.mjs';

let cluster;
let client;
before(async () => {
  cluster = await new Cluster().start();
  client = new Client(cluster.url, cluster.token);
  await client.connect();
  await client.view('all').execute(`
    function sq(x) return x * x end
    function add(a, b) return a + b end
    function inv(x) if x == 0 then error("zero") end return 1 / x end
    function spin(seconds)
      local t = os.time() + seconds
      while os.time() < t do end
      return "done"
    end`);
});
after(async () => {
  client.close();
  const problems = await cluster.stop();
  assert.deepEqual(problems, [], 'the cluster stopped cleanly');
});

/** Polls until pred() is true (bounded; no timing assertion). */
async function until(pred, what, ms = 30000) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('submit: a task result, its stdout and record; a batch; task(id); resubmit', async () => {
  const t = client.submit({ function: 'sq', args: [7], tags: ['js-sdk'] });
  const ids = await t.submitted;
  assert.equal(ids.length, 1);
  assert.equal(await t, 49);
  assert.equal(t.id, ids[0]);
  assert.equal(t.state, 'completed');
  assert.ok(Number.isInteger(t.metadata.engine));
  assert.ok(t.metadata.completed);

  const printed = client.submit({ code: 'print("one") print("two") return 3' });
  assert.equal(await printed.get(), 3);
  assert.equal(printed.stdout, 'one\ntwo\n');

  const batch = client.submit([{ code: 'return 1' }, { function: 'add', args: [2, 3] }, { code: 'return "x"' }]);
  assert.deepEqual(await batch, [1, 5, 'x']);
  assert.equal(batch.ids.length, 3);
  assert.deepEqual(batch.state, ['completed', 'completed', 'completed']);

  // An existing task, by id.
  assert.equal(await client.task(t.id).get(), 49);
  // The same task again, with a new id.
  const again = t.resubmit();
  assert.equal(await again, 49);
  assert.notEqual(again.id, t.id);

  // The same through the client's helpers.
  const third = await client.resubmit(t.id).submitted;
  assert.equal((await client.taskRecord(third[0], { wait: 30 })).result, 49);

  // The history query finds it by tag.
  const page = await client.tasks({ tag: 'js-sdk', limit: 10 });
  assert.ok(page.tasks.some((rec) => rec.id === t.id));
});

test('a failing task rejects with its RemoteError; dependencies are honoured', async () => {
  const bad = client.submit({ code: 'error("nope")' });
  const err = await bad.get().catch((e) => e);
  assert.ok(err instanceof RemoteError);
  assert.equal(err.ename, 'RuntimeError');
  assert.match(err.evalue, /nope/);
  assert.ok(err.traceback.length > 0);
  assert.equal(err.task, bad.id);
  assert.equal(bad.state, 'failed');

  // after: the second runs once the first finished; a failed dependency fails it.
  const first = client.submit({ code: 'return 10' });
  const [firstId] = await first.submitted;
  const second = client.submit({ code: 'return 20', after: [firstId] });
  assert.deepEqual([await first, await second], [10, 20]);
  const [badId] = await bad.submitted;
  const dependent = client.submit({ code: 'return 1', after: [badId] });
  const depErr = await dependent.get().catch((e) => e);
  assert.equal(depErr.ename, 'DependencyError');
});

test('map: one result per item, chunks, several sequences, failed items', async () => {
  const m = client.map('sq', [1, 2, 3, 4, 5], { chunksize: 2 });
  assert.deepEqual(await m, [1, 4, 9, 16, 25]);
  assert.equal(m.tasks.length, 3);
  const records = await m.taskRecords();
  assert.ok(records.every((r) => r.state === 'completed'));
  assert.deepEqual(await client.map('add', [1, 2, 3], new Int32Array([10, 20, 30])), [11, 22, 33]);
  const failing = client.map('inv', [1, 2, 0, 4], { chunksize: 2 });
  const err = await failing.get().catch((e) => e);
  assert.ok(err instanceof RemoteError);
  assert.equal(err.index, 2);
  assert.match(err.evalue, /zero/);
  assert.deepEqual(failing.answer.results, [1, 0.5, null, 0.25]);
  const two = await client.map('inv', [0, 0]).get().catch((e) => e);
  assert.ok(two instanceof CompositeError);
  assert.deepEqual(two.errors.map((e) => e.index), [0, 1]);
});

test('abort: a pending task never runs; force stops a running one', async () => {
  const long = client.submit({ function: 'spin', args: [30], targets: [2] });
  const [longId] = await long.submitted;
  await until(async () => {
    const rec = await client._taskRecord(longId, 0);
    return rec.state === 'running';
  }, 'the long task to start');
  const waiting = client.submit({ code: 'return 1', follow: [longId] });
  const [waitingId] = await waiting.submitted;
  await waiting.abort();
  const wErr = await waiting.get().catch((e) => e);
  assert.ok(wErr instanceof RemoteError, String(wErr));
  assert.equal(waiting.state, 'aborted');
  assert.equal((await client._taskRecord(waitingId, 0)).state, 'aborted');
  assert.equal((await client.abort(longId, { force: true })).id, longId);
  const lErr = await long.get().catch((e) => e);
  assert.ok(lErr instanceof RemoteError);
  assert.equal(long.state, 'aborted');
  // The engine is usable afterwards.
  assert.equal(await client.view(2).execute('return 5'), 5);
});

test('interrupt stops a running execute on every engine; they keep their namespace', async () => {
  const view = client.view('all');
  await view.execute('kept = mpi.rank()');
  const ar = view.execute('while true do end', { block: false });
  await until(async () => ar.requestId !== null, 'the request id');
  await until(async () => (await client.tasks({ request: ar.requestId })).tasks.filter((r) => r.state === 'running').length === 4, 'the loops to run');
  assert.equal(ar.ready(), false);
  const answer = await view.interrupt();
  assert.deepEqual(answer.targets, [0, 1, 2, 3]);
  const err = await ar.get().catch((e) => e);
  assert.ok(err instanceof CompositeError, String(err));
  assert.equal(err.errors.length, 4);
  assert.deepEqual(
    ar.metadata.map((m) => m.status),
    ['aborted', 'aborted', 'aborted', 'aborted'],
  );
  assert.deepEqual(await view.pull('kept'), [0, 1, 2, 3]);
});

test('DirectResult.abort with force ends a non-blocking request', async () => {
  const ar = client.view([1]).execute('while true do end', { block: false });
  await until(async () => ar.requestId !== null, 'the request id');
  await until(async () => (await client.tasks({ request: ar.requestId })).tasks.some((r) => r.state === 'running'), 'the loop to run');
  await ar.abort({ force: true });
  const err = await ar.get().catch((e) => e);
  assert.ok(err instanceof RemoteError);
  assert.equal(await client.view(1).execute('return 1'), 1);
});
