// events.test.mjs — subscribe, filters, and resume after the socket drops,
// against a real controller with 4 MPI engines.  Drops are real: the SDK
// talks to the controller through a TCP relay (proxy.mjs) that the test
// cuts or freezes.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { Client, IppcError } from '../ippc.js';
import { Cluster } from './cluster.mjs';
import { Proxy } from './proxy.mjs';

let cluster;
let direct; // a client that talks to the controller directly
before(async () => {
  cluster = await new Cluster().start();
  direct = new Client(cluster.url, cluster.token);
  await direct.connect();
});
after(async () => {
  direct.close();
  const problems = await cluster.stop();
  assert.deepEqual(problems, [], 'the cluster stopped cleanly');
});

async function until(pred, what, ms = 30000, detail = null) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${detail ? ` (${detail().slice(-1500)})` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Submits small tasks one after the other (through the direct client) until
 * stopped; ids lists them.
 */
function startLoad(tags) {
  let running = true;
  const ids = [];
  const done = (async () => {
    let i = 0;
    while (running) {
      const task = direct.submit({ code: `return ${i}`, tags: [tags[i % tags.length]] });
      i++;
      const [id] = await task.submitted;
      ids.push(id);
      await task;
    }
  })();
  return {
    ids,
    stop: () => {
      running = false;
      return done;
    },
  };
}

/** The events of task id, by type. */
function ofTask(events, id) {
  return events.filter((e) => e.task === id).map((e) => e.type);
}

/** Every event after the first snapshot has the next seq: none lost, none twice. */
function assertUnbroken(events) {
  assert.equal(events[0].type, 'snapshot');
  let seq = events[0].seq;
  for (const e of events.slice(1)) {
    assert.equal(e.seq, seq + 1, `event ${JSON.stringify(e).slice(0, 200)} after seq ${seq}`);
    seq = e.seq;
  }
}

test('subscribe: the snapshot, then task events with stdout as it is printed', async (t) => {
  const events = [];
  const unsubscribe = direct.subscribe('all', (e) => events.push(e));
  t.after(unsubscribe);
  await until(() => events.length > 0, 'the snapshot');
  assert.equal(events[0].type, 'snapshot');
  assert.deepEqual(
    events[0].engines.map((e) => e.id),
    [0, 1, 2, 3],
  );
  const task = direct.submit({ code: 'print("a") print("b") return 1', tags: ['ev'] });
  const [id] = await task.submitted;
  await task;
  await until(() => ofTask(events, id).includes('task.completed'), 'task.completed');
  const types = ofTask(events, id);
  assert.deepEqual(types.filter((x) => x !== 'task.stdout'), ['task.submitted', 'task.started', 'task.completed']);
  const printed = events.filter((e) => e.task === id && e.type === 'task.stdout').map((e) => e.data).join('');
  assert.equal(printed, 'a\nb\n');
  const done = events.find((e) => e.task === id && e.type === 'task.completed');
  assert.equal(done.state, 'completed');
  assert.equal(done.result, 1);
  assertUnbroken(events);
  assert.equal(unsubscribe.lastSeq, events[events.length - 1].seq);
});

/**
 * Lua that prints `first`, waits (up to 60 s) until the file flag exists,
 * then prints `second`: output seen before the flag is made was streamed.
 */
function printWaitPrint(flag) {
  return `
    print("first " .. mpi.rank())
    local deadline = mpi.wtime() + 60
    while mpi.wtime() < deadline do
      local f = io.open(${JSON.stringify(flag)})
      if f then f:close() break end
    end
    print("second")
    return mpi.rank()`;
}

test('onStdout: the output of a call arrives while it runs, per engine', async (t) => {
  const flag = path.join(os.tmpdir(), `ippc-js-flag-${process.pid}-direct`);
  t.after(() => fs.rmSync(flag, { force: true }));
  const seen = [];
  const ar = direct.view('all').execute(printWaitPrint(flag), {
    onStdout: (engine, text) => seen.push([engine, text]),
  });
  await until(() => new Set(seen.map(([e]) => e)).size === 4, 'the first line of every engine');
  assert.equal(ar.ready(), false);
  assert.deepEqual(
    [...ar.stdout].sort(),
    ['first 0\n', 'first 1\n', 'first 2\n', 'first 3\n'],
  );
  fs.writeFileSync(flag, '');
  assert.deepEqual(await ar, [0, 1, 2, 3]);
  assert.deepEqual(ar.stdout, [0, 1, 2, 3].map((r) => `first ${r}\nsecond\n`));
  await until(() => seen.length >= 8, 'the second lines');
  for (const engine of [0, 1, 2, 3]) {
    const text = seen.filter(([e]) => e === engine).map(([, x]) => x).join('');
    assert.equal(text, `first ${engine}\nsecond\n`);
  }
});

test('onStdout: the output of a task arrives while it runs', async (t) => {
  const flag = path.join(os.tmpdir(), `ippc-js-flag-${process.pid}-task`);
  t.after(() => fs.rmSync(flag, { force: true }));
  const seen = [];
  const task = direct.submit({ code: printWaitPrint(flag) }, { onStdout: (engine, text, id) => seen.push([engine, text, id]) });
  await until(() => seen.length > 0, 'the first line');
  assert.equal(task.ready(), false);
  assert.match(task.stdout, /^first \d\n$/);
  fs.writeFileSync(flag, '');
  await task;
  assert.match(task.stdout, /^first \d\nsecond\n$/);
  await until(() => seen.map(([, x]) => x).join('') === task.stdout, 'the second line');
  assert.ok(seen.every(([engine, , id]) => engine === task.metadata.engine && id === task.id));
});

test('topics and filters are the controller’s: only tagged tasks, no engine events', async (t) => {
  const events = [];
  const unsubscribe = direct.subscribe(['tasks'], (e) => events.push(e), { filter: { tags: ['watched'] } });
  t.after(unsubscribe);
  await until(() => events.length > 0, 'the snapshot');
  const other = direct.submit({ code: 'return 1', tags: ['other'] });
  const watched = direct.submit({ code: 'return 2', tags: ['watched'] });
  await Promise.all([other, watched]);
  await until(() => ofTask(events, watched.id).includes('task.completed'), 'the watched task');
  // Give an unfiltered event time to show up if it were delivered.
  await direct.view('all').execute('return 0');
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(ofTask(events, other.id), []);
  assert.ok(events.every((e) => e.type === 'snapshot' || e.type.startsWith('task.')));
  unsubscribe();
  const count = events.length;
  await direct.submit({ code: 'return 3', tags: ['watched'] });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(events.length, count, 'nothing after unsubscribe');
});

test('a dropped socket reconnects and resumes: every event once, in order, none lost', async (t) => {
  const proxy = new Proxy(cluster.url);
  const url = await proxy.listen();
  t.after(() => proxy.close());
  const client = new Client(url, cluster.token, { reconnectMin: 50, reconnectMax: 200 });
  await client.connect();
  t.after(() => client.close());
  const events = [];
  const statuses = [];
  const unsubscribe = client.subscribe('all', (e) => events.push(e), { onStatus: (s) => statuses.push(s) });
  t.after(unsubscribe);
  await until(() => statuses.includes('open') && events.length > 0, 'the subscription');
  const before = direct.submit({ code: 'return "before"' });
  await before;
  await until(() => ofTask(events, before.id).includes('task.completed'), 'the first task');

  // The network goes away (no close frame) while tasks run and print, and
  // a steady load keeps events coming while the socket reconnects, so live
  // events and the replay overlap.
  const load = startLoad(['load']);
  t.after(() => load.stop());
  proxy.down();
  await until(() => statuses.includes('reconnecting'), 'the drop to be noticed');
  const during = [];
  for (let i = 0; i < 3; i++) during.push(direct.submit({ code: `print("during ${i}") return ${i}` }));
  assert.deepEqual(await Promise.all(during), [0, 1, 2]);
  await direct.view('all').execute('print("direct")');
  proxy.up();

  for (const task of during) {
    await until(() => ofTask(events, task.id).includes('task.completed'), `task ${task.id} after the reconnect`);
    const types = ofTask(events, task.id);
    assert.deepEqual(types, ['task.submitted', 'task.started', 'task.stdout', 'task.completed']);
  }
  // Events of the load that came after the reconnect, too.
  const seen = load.ids.length;
  await until(() => load.ids.length > seen + 5, 'more load');
  await load.stop();
  const last = load.ids[load.ids.length - 1];
  await until(() => ofTask(events, last).includes('task.completed'), 'the last load task');
  assert.ok(unsubscribe.reconnects >= 1);
  assert.equal(events.filter((e) => e.type === 'snapshot').length, 1, 'resumed, not restarted');
  assertUnbroken(events);

  // The request channel came back too (or its calls went over REST).
  assert.deepEqual(await client.view('all').execute('return 1'), [1, 1, 1, 1]);
});

test('a filtered subscription resumes with its filter: each matching event once, nothing else', async (t) => {
  const proxy = new Proxy(cluster.url);
  const url = await proxy.listen();
  t.after(() => proxy.close());
  const client = new Client(url, cluster.token, { transport: 'rest', reconnectMin: 20, reconnectMax: 50 });
  await client.connect();
  t.after(() => client.close());
  const events = [];
  const statuses = [];
  const unsubscribe = client.subscribe(['tasks', 'stdout'], (e) => events.push(e), {
    filter: { tags: ['watched'] },
    onStatus: (s) => statuses.push(s),
  });
  t.after(unsubscribe);
  await until(() => statuses.includes('open'), 'the subscription');
  const load = startLoad(['watched', 'other']);
  t.after(() => load.stop());
  for (let drop = 0; drop < 3; drop++) {
    const n = load.ids.length;
    await until(() => load.ids.length > n + 4, 'some load');
    proxy.drop();
    await until(() => statuses.filter((s) => s === 'open').length > drop + 1, 'the reconnect');
  }
  const n = load.ids.length;
  await until(() => load.ids.length > n + 4, 'load after the last reconnect');
  await load.stop();
  const watched = load.ids.filter((_, i) => i % 2 === 0);
  const other = load.ids.filter((_, i) => i % 2 === 1);
  const lastWatched = watched[watched.length - 1];
  await until(() => ofTask(events, lastWatched).includes('task.completed'), 'the last watched task');
  for (const id of watched) assert.deepEqual(ofTask(events, id), ['task.submitted', 'task.started', 'task.completed'], `task ${id}`);
  for (const id of other) assert.deepEqual(ofTask(events, id), [], `task ${id}`);
  assert.ok(events.every((e) => e.type === 'snapshot' || e.type.startsWith('task.')), 'no engine events');
  const seqs = events.slice(1).map((e) => e.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'in order');
  assert.equal(new Set(seqs).size, seqs.length, 'each once');
  assert.ok(unsubscribe.reconnects >= 3);
});

test('when the missed events are gone from the ring, the handler gets a gap and a fresh snapshot', async (t) => {
  const proxy = new Proxy(cluster.url);
  const url = await proxy.listen();
  t.after(() => proxy.close());
  const client = new Client(url, cluster.token, { transport: 'rest', reconnectMin: 20, reconnectMax: 50 });
  await client.connect();
  t.after(() => client.close());
  const events = [];
  const statuses = [];
  const unsubscribe = client.subscribe(['tasks'], (e) => events.push(e), { onStatus: (s) => statuses.push(s) });
  t.after(unsubscribe);
  await until(() => statuses.includes('open') && events.length === 1, 'the subscription');
  proxy.down();
  await until(() => statuses.includes('reconnecting'), 'the drop to be noticed');
  // More than the ring's 10,000 events while away: 3 per task.
  await direct.view('all').execute('function sq(x) return x * x end');
  const squares = await direct.map('sq', Array.from({ length: 3500 }, (_, i) => i));
  assert.equal(squares.length, 3500);
  proxy.up();
  await until(() => events.some((e) => e.type === 'gap'), 'the gap');
  const gapAt = events.findIndex((e) => e.type === 'gap');
  assert.equal(gapAt, 1, 'right after the first snapshot');
  assert.equal(events[gapAt].since, events[0].seq);
  assert.ok(events[gapAt].oldest > events[0].seq + 1);
  // The state after the gap is a new snapshot; the events it already
  // covers are not delivered, later ones are.
  await until(() => events.length > gapAt + 1, 'the snapshot');
  const snapshot = events[gapAt + 1];
  assert.equal(snapshot.type, 'snapshot');
  assert.ok(snapshot.seq > events[gapAt].oldest);
  const marker = direct.submit({ code: 'return "after"' });
  await marker;
  await until(() => ofTask(events, marker.id).includes('task.completed'), 'the marker task');
  const after = events.slice(gapAt + 2);
  assert.ok(after.every((e, i) => e.seq > snapshot.seq && (i === 0 || e.seq > after[i - 1].seq)));
  assert.deepEqual(ofTask(events, marker.id), ['task.submitted', 'task.started', 'task.completed']);
  assert.equal(events.filter((e) => e.type === 'task.completed').length, 1, 'nothing from before the snapshot');
});

test('a silent (half-open) socket is noticed by its heartbeat and replaced', async (t) => {
  const proxy = new Proxy(cluster.url);
  const url = await proxy.listen();
  t.after(() => proxy.close());
  const client = new Client(url, cluster.token, {
    transport: 'rest',
    reconnectMin: 50,
    reconnectMax: 200,
    // Short enough to notice the freeze soon, long enough that a sanitizer
    // build's controller on 2 busy cores answers a ping in time (300 ms was
    // not: the new socket was given up again and again).
    heartbeatInterval: 300,
    heartbeatTimeout: 2000,
  });
  await client.connect();
  t.after(() => client.close());
  const events = [];
  const statuses = [];
  const unsubscribe = client.subscribe(['tasks'], (e) => events.push(e), { onStatus: (s) => statuses.push(s) });
  t.after(unsubscribe);
  // 'open' comes after the snapshot: the subscription has a seq to resume
  // from (freezing earlier would leave it none, and the next socket would
  // start afresh after the task).
  await until(() => statuses.includes('open'), 'the subscription');
  proxy.freeze();
  const task = direct.submit({ code: 'return "frozen"' });
  await task;
  await until(() => statuses.includes('reconnecting'), 'the heartbeat to give up');
  proxy.up();
  await until(() => ofTask(events, task.id).includes('task.completed'), 'the task after the reconnect',
    30000, () => `statuses ${JSON.stringify(statuses)}, events ${JSON.stringify(events.map((x) => [x.type, x.seq]))}`);
  assert.deepEqual(ofTask(events, task.id), ['task.submitted', 'task.started', 'task.completed']);
  assert.equal(events.filter((e) => e.type === 'snapshot').length, 1, 'resumed, not restarted');
  assert.ok(unsubscribe.reconnects >= 1);
});

test("'open' waits for the snapshot: a socket lost before it was never open, and events after 'open' arrive", async (t) => {
  const proxy = new Proxy(cluster.url);
  const url = await proxy.listen();
  t.after(() => proxy.close());
  const client = new Client(url, cluster.token, { transport: 'rest', reconnectMin: 50, reconnectMax: 200, heartbeatInterval: 300, heartbeatTimeout: 2000 });
  await client.connect();
  t.after(() => client.close());
  // The first socket opens but its snapshot is held back; its first ping
  // gets it cut.  Had it been told 'open', a task submitted then would be
  // lost: the next socket has no seq to resume from and starts afresh.
  proxy.silenceNextWebSocket();
  const events = [];
  const statuses = [];
  const unsubscribe = client.subscribe(['tasks'], (e) => events.push(e), {
    onStatus: (s) => statuses.push(s === 'open' ? [s, events.map((e) => e.type)] : [s]),
  });
  t.after(unsubscribe);
  await until(() => statuses.some(([s]) => s === 'open'), 'the subscription');
  assert.deepEqual(statuses[0], ['reconnecting'], 'the silenced socket was never open');
  assert.equal(proxy.silenced, 1, 'the first socket opened and was cut');
  assert.deepEqual(statuses[statuses.length - 1], ['open', ['snapshot']], "'open' after the snapshot");
  const task = direct.submit({ code: 'return "after open"' });
  await task;
  await until(() => ofTask(events, task.id).includes('task.completed'), 'the task');
  assert.deepEqual(ofTask(events, task.id), ['task.submitted', 'task.started', 'task.completed']);
});

test('a silent request socket is noticed too; a task wait goes on through the outage', async (t) => {
  const proxy = new Proxy(cluster.url);
  const url = await proxy.listen();
  t.after(() => proxy.close());
  const client = new Client(url, cluster.token, { reconnectMin: 50, reconnectMax: 200, heartbeatInterval: 300, heartbeatTimeout: 2000 });
  await client.connect();
  t.after(() => client.close());
  assert.equal(client.socketOpen, true);
  const flag = path.join(os.tmpdir(), `ippc-js-flag-${process.pid}-outage`);
  t.after(() => fs.rmSync(flag, { force: true }));
  const task = client.submit({ code: printWaitPrint(flag) });
  await task.submitted;
  proxy.freeze();
  await until(() => !client.socketOpen, 'the heartbeat to give up on the request socket');
  proxy.up();
  fs.writeFileSync(flag, '');
  assert.equal(typeof (await task), 'number');
  assert.equal(task.state, 'completed');
  await until(() => client.socketOpen, 'the request socket to reopen');
  assert.deepEqual(await client.view('all').execute('return 2'), [2, 2, 2, 2]);
});

test('a request waiting on a socket that drops rejects with code disconnected; reads are retried', async (t) => {
  const proxy = new Proxy(cluster.url);
  const url = await proxy.listen();
  t.after(() => proxy.close());
  const client = new Client(url, cluster.token);
  await client.connect();
  t.after(() => client.close());
  assert.equal(client.socketOpen, true);
  const ar = client.view(0).execute('local t = os.time() + 2 while os.time() < t do end return 1');
  await new Promise((r) => setTimeout(r, 200));
  proxy.drop();
  const err = await ar.get().catch((e) => e);
  assert.ok(err instanceof IppcError);
  assert.equal(err.code, 'disconnected');
  // A task wait (a read) survives the drop: it is asked again.
  const task = client.submit({ code: 'local t = os.time() + 2 while os.time() < t do end return 9' });
  await task.submitted;
  await new Promise((r) => setTimeout(r, 200));
  proxy.drop();
  assert.equal(await task, 9);
});

test('without WebSockets (a proxy refuses them) calls go over REST; subscriptions keep trying', async (t) => {
  const proxy = new Proxy(cluster.url);
  proxy.noWebSockets = true;
  const url = await proxy.listen();
  t.after(() => proxy.close());
  const client = new Client(url, cluster.token, { reconnectMin: 20, reconnectMax: 50 });
  await client.connect();
  t.after(() => client.close());
  assert.equal(client.socketOpen, false);
  assert.deepEqual(await client.view('all').execute('return mpi.size()'), [4, 4, 4, 4]);
  assert.equal(await client.submit({ code: 'return 6 * 7' }), 42);
  // onStdout cannot stream: the call goes ahead; its output comes with the answer.
  const streamed = [];
  const ar = client.view(0).execute('print("hello") return 1', { onStdout: (e, text) => streamed.push(text) });
  assert.equal(await ar, 1);
  assert.equal(ar.stdout, 'hello\n');
  assert.deepEqual(streamed, []);
  const statuses = [];
  const unsubscribe = client.subscribe('all', () => {}, { onStatus: (s) => statuses.push(s) });
  await until(() => statuses.filter((s) => s === 'reconnecting').length >= 2, 'the refusals');
  // Once WebSockets pass again, the subscription opens.
  proxy.noWebSockets = false;
  await until(() => statuses.includes('open'), 'the subscription');
  unsubscribe();
});

test('subscribe with a wrong token keeps trying and says so; it can be stopped', async (t) => {
  const bad = new Client(cluster.url, 'wrong', { reconnectMin: 20, reconnectMax: 50 });
  const statuses = [];
  const unsubscribe = bad.subscribe('all', () => {}, { onStatus: (s) => statuses.push(s) });
  await until(() => statuses.filter((s) => s === 'reconnecting').length >= 2, 'the refusals');
  unsubscribe();
  assert.equal(statuses[statuses.length - 1], 'closed');
  assert.ok(!statuses.includes('open'));
  bad.close();
});
