// conn.js — the dashboard's one door to the controller: the JavaScript SDK
// (/sdk/ippc.js) for everything it offers, and plain fetch for the few REST
// calls it has no method for (marked below).  Every other module talks to
// the cluster through this one, so the SDK's shapes are known in one place.

import { Client } from '/sdk/ippc.js';

const TOKEN_KEY = 'ippc.token';

/** The token: moved from the URL fragment (#token=...) to sessionStorage,
 * and the fragment removed from the address bar and the history entry. */
export function takeToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) {
    try {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    } catch { /* storage refused: the token is used for this page only */ }
    history.replaceState(null, '', location.pathname + location.search);
    return decodeURIComponent(m[1]);
  }
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function storeToken(token) {
  try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* page-only */ }
}

export function forgetToken() {
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ }
}

/** Why connecting failed, in words a person can act on. */
export function explain(err) {
  const status = err?.status;
  const code = err?.code;
  if (status === 401 || code === 'unauthorized')
    return { auth: true, text: 'The token was not accepted: it is wrong, or the cluster was ' +
      'restarted with a new one. Paste the token `ippc cluster start` printed (or open its ' +
      'Dashboard link again).' };
  return { auth: false, text: 'Cannot reach the controller at ' + location.origin + ': ' +
    (err?.message || String(err)) };
}

export class Conn {
  constructor(token) {
    this.token = token;
    this.client = new Client(location.origin, token);
  }

  /** Checks the token; rejects with the SDK's IppcError (code 'unauthorized'
   * for a wrong one). */
  async connect() {
    return this.client.connect();
  }

  close() {
    try { this.client.close(); } catch { /* already closed */ }
  }

  info() {
    return this.client.infoAtConnect ? Promise.resolve(this.client.infoAtConnect) : this.client.info();
  }

  engines() {
    return this.client.engines();
  }

  /** The newest (at most max) task records submitted in the last `seconds`,
   * oldest first.  The history is paged oldest first, so the pages are
   * walked (at most `pages` of them) and the newest kept. */
  async recentTasks(seconds, max, pages = 10) {
    const since = new Date(Date.now() - seconds * 1000).toISOString();
    let all = [];
    let cursor;
    for (let i = 0; i < pages; i++) {
      const page = await this.client.tasks({ since, limit: 1000, cursor });
      all = all.concat(page.tasks);
      if (all.length > max) all = all.slice(all.length - max);
      if (page.next_cursor == null || page.tasks.length < 1000) break;
      cursor = page.next_cursor;
    }
    return all;
  }

  /** The event stream: handler(event) for the snapshot and every event after
   * it, across reconnects; onStatus('open'|'reconnecting'|'closed').
   * Returns the function that unsubscribes. */
  subscribe(handler, onStatus) {
    return this.client.subscribe(['engines', 'tasks', 'stdout'], handler, { onStatus });
  }

  /** Runs code on targets.  onStdout(engine, text) gets what each engine
   * prints while the run goes on; resolves to the whole answer {targets,
   * results: [{engine, status, stdout, value | ename, evalue, traceback}]},
   * engines' errors included (not thrown); rejects when the controller
   * refused the call (bad targets, no engines, ...). */
  async execute(targets, code, onStdout) {
    const ar = this.client.view(targets).execute(code, { block: false, onStdout });
    await ar.wait();
    if (ar.answer) return ar.answer;
    throw ar.error;
  }

  interrupt(targets) {
    return this.client.view(targets).interrupt();
  }

  /** Per target: {name: {type, dtype, shape, bytes}}. */
  async vars(targets) {
    return await this.client.view(targets).vars();
  }

  /** One engine's array through the binary path (application/octet-stream):
   * {dtype, shape, data: TypedArray}. */
  async pullArray(engine, name, info) {
    const values = await this.client.view([engine]).pull(name, { raw: true });
    return asArray(values[0], info);
  }

  /** Aborts a task (force: interrupts a running one). */
  abort(id, force) {
    return this.client.task(id).abort({ force: !!force });
  }

  /** The same task again; resolves to the new task's id. */
  async resubmit(id) {
    const again = this.client.task(id).resubmit();
    const [newId] = await again.submitted;
    if (newId === undefined) await again.get(); // the resubmit's own error
    return newId;
  }

  /** One task's whole record (code, args, result, stdout, traceback), now:
   * REST, as the SDK's task(id) waits for the task to finish. */
  task(id) {
    return this.rest('GET', '/api/v1/tasks/' + id);
  }

  async rest(method, path, body) {
    const headers = { Authorization: 'Bearer ' + this.token };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(path, { method, headers,
                                  body: body === undefined ? undefined : JSON.stringify(body) });
    const answer = await r.json().catch(() => null);
    if (!r.ok) {
      const err = new Error(answer?.error?.message || 'HTTP ' + r.status);
      err.status = r.status;
      err.code = answer?.error?.code;
      throw err;
    }
    return answer;
  }
}

const TYPED = { float64: Float64Array, float32: Float32Array, int64: BigInt64Array,
                int32: Int32Array, uint8: Uint8Array };

/** {dtype, shape, data} of the SDK's array: a TypedArray (1-D) or an NDArray. */
function asArray(v, info) {
  if (v && ArrayBuffer.isView(v.data)) return { dtype: v.dtype, shape: v.shape, data: v.data };
  if (ArrayBuffer.isView(v)) {
    const dtype = Object.keys(TYPED).find((k) => v instanceof TYPED[k]) || info?.dtype;
    return { dtype, shape: [v.length], data: v };
  }
  throw new Error('the engine did not answer an array');
}
