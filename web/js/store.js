// store.js — what the dashboard knows about the cluster, kept up to date from
// the event stream (docs/streams.md).  Applying an event is O(1) and touches no
// DOM; it returns the names of the views that changed, which frame.js renders
// once per frame.

const MAX_TASKS = 5000;        // tasks kept in memory (the newest; the store has the rest)
const STDOUT_MAX = 256 * 1024; // characters of one task's stdout kept
export const HISTORY_SECONDS = 300; // throughput history

export class Store {
  constructor() {
    /** @type {Map<number, object>} engine id -> engine */
    this.engines = new Map();
    /** @type {Map<number, object>} task id -> task (insertion order = id order mostly) */
    this.tasks = new Map();
    /** @type {Map<number, {id:number, tasks:Set<number>, done:number, failed:number, first:number, last:number}>} */
    this.maps = new Map();
    // Per second over the last HISTORY_SECONDS: tasks finished, busy engines.
    this.history = [];
    this.lastEventMs = 0;
    this.seq = 0;
    this.stdoutListeners = new Set();
    this.taskListeners = new Set();
  }

  /** Engines in id order. */
  engineList() {
    return [...this.engines.values()].sort((a, b) => a.id - b.id);
  }

  setEngines(list) {
    this.engines.clear();
    for (const e of list) this.engines.set(e.id, { ...e, seen: performance.now() });
  }

  /** Tasks from a query (oldest first), merged without losing live state. */
  addTasks(list) {
    for (const t of list) this.upsertTask(t.id, taskFromRecord(t));
  }

  upsertTask(id, fields) {
    let t = this.tasks.get(id);
    if (!t) {
      t = { id, state: 'pending', engine: null, tags: [], stdout: '', kind: null, request: null,
            submittedMs: null, startedMs: null, completedMs: null };
      this.tasks.set(id, t);
      if (this.tasks.size > MAX_TASKS) this.trimTasks();
    }
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) t[k] = v;
    if (t.kind === 'balanced' && t.request !== null && t.request !== undefined) this.noteMap(t);
    return t;
  }

  trimTasks() {
    // Oldest finished first; running and pending ones stay.
    for (const [id, t] of this.tasks) {
      if (this.tasks.size <= MAX_TASKS * 0.9) break;
      if (t.state !== 'pending' && t.state !== 'running') this.tasks.delete(id);
    }
  }

  noteMap(t) {
    let m = this.maps.get(t.request);
    if (!m) {
      m = { id: t.request, tasks: new Set(), done: 0, failed: 0, first: performance.now(), last: 0 };
      this.maps.set(t.request, m);
    }
    m.tasks.add(t.id);
  }

  /** Applies one event; returns the names of the views it changes. */
  apply(ev) {
    if (typeof ev.seq === 'number') this.seq = ev.seq;
    const at = ev.time ? Date.parse(ev.time) : Date.now();
    this.lastEventMs = at;
    switch (ev.type) {
      case 'snapshot':
        if (Array.isArray(ev.engines)) this.setEngines(ev.engines);
        if (Array.isArray(ev.tasks)) this.addTasks(ev.tasks);
        return ['engines', 'tasks', 'timeline', 'throughput'];
      case 'engine.registered': {
        const e = ev.engine;
        if (e && typeof e.id === 'number') this.engines.set(e.id, { ...e, seen: performance.now() });
        return ['engines', 'timeline', 'targets'];
      }
      case 'engine.status': {
        const e = this.engines.get(ev.engine);
        if (!e) return [];
        if (e.state !== 'dead') e.state = ev.state;
        for (const k of ['queue', 'tasks_done', 'heartbeat_age', 'rss'])
          if (ev[k] !== undefined) e[k] = ev[k];
        e.seen = performance.now();
        return ['engines'];
      }
      case 'engine.dead': {
        const e = this.engines.get(ev.engine);
        if (!e) return [];
        e.state = 'dead';
        e.reason = ev.reason;
        e.heartbeat_age = -1;
        return ['engines', 'targets', 'timeline'];
      }
      case 'task.submitted':
        this.upsertTask(ev.task, { kind: ev.kind, request: ev.request ?? null,
                                   engine: ev.engine ?? null, tags: ev.tags || [],
                                   state: 'pending', submittedMs: at });
        return ['tasks', 'maps'];
      case 'task.started':
        this.upsertTask(ev.task, { engine: ev.engine, state: 'running', startedMs: at });
        return ['tasks', 'timeline'];
      case 'task.stdout': {
        const t = this.upsertTask(ev.task, { engine: ev.engine });
        t.stdout = (t.stdout + (ev.data || '')).slice(-STDOUT_MAX);
        for (const f of this.stdoutListeners) f(t, ev.data || '');
        return ['details'];
      }
      case 'task.completed': {
        const t = this.upsertTask(ev.task, { engine: ev.engine, state: ev.state,
                                             completedMs: at });
        if (t.startedMs === null) t.startedMs = at;
        if ('result' in ev) t.result = ev.result;
        if (ev.result_omitted) t.resultOmitted = true;
        if (ev.error) t.error = ev.error;
        this.countFinished(at);
        if (t.kind === 'balanced' && t.request !== null) {
          const m = this.maps.get(t.request);
          if (m) {
            m.done++;
            if (ev.state !== 'completed') m.failed++;
            m.last = performance.now();
          }
        }
        for (const f of this.taskListeners) f(t);
        return ['tasks', 'timeline', 'maps', 'details'];
      }
      default:
        return [];
    }
  }

  /** The history bucket of second `sec` (epoch seconds), made if missing. */
  bucket(sec) {
    const h = this.history;
    const last = h.length ? h[h.length - 1] : null;
    if (last && last.sec === sec) return last;
    if (last && sec < last.sec) {
      // An event timestamped a little in the past: its own bucket if kept.
      for (let i = h.length - 1; i >= 0; i--) if (h[i].sec === sec) return h[i];
      return last;
    }
    const b = { sec, finished: 0, busy: null };
    h.push(b);
    while (h.length && h[0].sec < sec - HISTORY_SECONDS) h.shift();
    return b;
  }

  countFinished(atMs) {
    this.bucket(Math.floor(atMs / 1000)).finished++;
  }

  /** Called once a second: how many engines are busy now. */
  sampleBusy(nowMs) {
    let busy = 0;
    for (const e of this.engines.values()) if (e.state === 'busy') busy++;
    const b = this.bucket(Math.floor(nowMs / 1000));
    b.busy = Math.max(b.busy ?? 0, busy);
  }
}

/** A task record of GET /api/v1/tasks (or a snapshot) in the store's shape. */
export function taskFromRecord(r) {
  const ms = (s) => (s ? Date.parse(s) : null);
  return {
    kind: r.kind, state: r.state, engine: r.engine ?? null, tags: r.tags || [],
    request: r.request ?? null, op: r.op, code: r.code, function: r.function, args: r.args,
    kwargs: r.kwargs, stdout: r.stdout ?? undefined, result: r.result, error: r.error,
    submittedMs: ms(r.submitted), startedMs: ms(r.started), completedMs: ms(r.completed),
  };
}
