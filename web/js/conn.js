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
  const status = err?.status ?? err?.httpStatus ?? err?.response?.status;
  const code = err?.code ?? err?.error?.code;
  if (status === 401 || code === 'unauthorized' || /\b401\b|unauthori[sz]ed|token/i.test(String(err?.message)))
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

  async connect() {
    await this.client.connect();
  }

  close() {
    try { this.client.close?.(); } catch { /* already closed */ }
  }

  async engines() {
    const r = await this.client.engines();
    return Array.isArray(r) ? r : r.engines;
  }

  /** Task records, newest last. */
  async tasks(query) {
    const r = await this.client.tasks(query);
    return Array.isArray(r) ? r : r.tasks;
  }

  /** Subscribes to the event stream; handler(event) per event; returns the
   * function that unsubscribes. */
  subscribe(handler) {
    return this.client.subscribe(['engines', 'tasks', 'stdout'], handler);
  }

  /** Starts code on targets.  Returns {started, done}: started resolves to
   * {request, targets} as soon as the controller took the request (stdout
   * events of its tasks carry that request id), done to the answer
   * {targets, results: [{engine, status, stdout, value | ename, evalue,
   * traceback}]}, errors on engines included (not thrown). */
  execute(targets, code) {
    const ar = this.client.view(targets).execute(code, { block: false });
    const started = Promise.resolve(ar.metadata ?? ar.submitted ?? ar).then((m) => ({
      request: ar.request ?? m?.request, targets: ar.targets ?? m?.targets }));
    const done = (async () => {
      try {
        if (typeof ar.wait === 'function') await ar.wait();
        const v = typeof ar.get === 'function' ? await ar.get() : await ar;
        return v && Array.isArray(v.results) ? v : { results: v, targets: ar.targets };
      } catch (err) {
        // A remote error: the answer with every engine's part, when the SDK
        // kept it.
        const body = err.body ?? err.answer ?? err.response;
        if (body && Array.isArray(body.results)) return body;
        throw err;
      }
    })();
    // Whoever awaits them sees a failure; one nobody awaits (the answer when
    // the start already failed) is not reported as unhandled.
    started.catch(() => {});
    done.catch(() => {});
    return { started, done };
  }

  interrupt(targets) {
    return this.client.view(targets).interrupt();
  }

  /** Per target: {name: {type, dtype, shape, bytes}}. */
  async vars(targets) {
    const r = await this.client.view(targets).vars();
    return resultsOf(r);
  }

  /** One engine's array through the binary path: {dtype, shape, data: TypedArray}. */
  async pullArray(engine, name, info) {
    const r = await this.client.view([engine]).pull(name);
    let v = resultsOf(r);
    if (Array.isArray(v) && v.length === 1) v = v[0];
    return asArray(v, info);
  }

  abort(id, force) {
    return this.client.task(id).abort({ force });
  }

  /** One task's whole record (code, args, result, stdout, traceback). */
  async task(id) {
    return this.rest('GET', '/api/v1/tasks/' + id);
  }

  /** Resubmits a task: the REST route (the SDK has no method for it). */
  async resubmit(id) {
    return this.rest('POST', '/api/v1/tasks/' + id + '/resubmit');
  }

  async rest(method, path) {
    const r = await fetch(path, { method, headers: { Authorization: 'Bearer ' + this.token } });
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const err = new Error(body?.error?.message || 'HTTP ' + r.status);
      err.status = r.status;
      err.code = body?.error?.code;
      throw err;
    }
    return body;
  }
}

/** The per-target values of an SDK answer (an AsyncResult, a body, or an array). */
function resultsOf(r) {
  if (r && typeof r.get === 'function' && !(r instanceof Map)) r = r.get();
  if (r && Array.isArray(r.results)) return r.results;
  return r;
}

const TYPED = { float64: Float64Array, float32: Float32Array, int64: BigInt64Array,
                int32: Int32Array, uint8: Uint8Array };

/** {dtype, shape, data} from whatever the SDK gives for an array. */
function asArray(v, info) {
  if (v && ArrayBuffer.isView(v.data)) return { dtype: v.dtype, shape: v.shape, data: v.data };
  if (ArrayBuffer.isView(v)) {
    const dtype = v.dtype || Object.keys(TYPED).find((k) => v instanceof TYPED[k]);
    return { dtype, shape: v.shape || info?.shape || [v.length], data: v };
  }
  if (Array.isArray(v)) {
    const flat = v.flat(Infinity);
    const shape = Array.isArray(v[0]) ? [v.length, v[0].length] : [v.length];
    return { dtype: info?.dtype || 'float64', shape, data: Float64Array.from(flat.map(Number)) };
  }
  throw new Error('not an array');
}
