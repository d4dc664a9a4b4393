// ippc.js — the JavaScript SDK of ippc: one ES module, no build step, for
// browsers and Node.js >= 20 (run Node 20 with --experimental-websocket, or
// pass a WebSocket class in the options).
//
// It is thin over the controller's REST API and its /ws socket
// (api/openapi.yaml, docs/streams.md):
//   - JSON calls go over one WebSocket (the request channel) when it is open,
//     so a browser page is not held to its six HTTP connections per host by
//     calls that wait; otherwise, or when a message would pass the socket's
//     16 MiB limit, over REST (fetch).
//   - Array bytes go over REST as application/octet-stream, dtype and shape
//     beside them (the "binary path"): a TypedArray pushed or scattered is
//     sent as its bytes; a blocking pull of one name reads big arrays back
//     as bytes (one multipart/mixed answer for all targets), and
//     pull/gather with {raw: true} read bytes back.
//     Smaller arrays inside JSON travel typed ({dtype, shape, data: base64}),
//     never as JSON numbers; every call asks for typed answers.
//   - Events: each subscribe() has a socket of its own with its topics and
//     filter on the server, and resumes from the last event it delivered
//     after a reconnect (the controller keeps a ring of recent events).
//
// Results are AsyncResult objects shaped like IPython Parallel's: ready(),
// wait(timeout), get(timeout), stdout, metadata — and they are thenables, so
// `await view.execute(code)` gives the values.  Timeouts are in seconds, as
// in IPython Parallel.

/** SDK version. */
export const VERSION = '0.1.0';

const API = '/api/v1';
/** Longest single wait asked of the controller; longer waits loop. */
const WAIT_CHUNK_S = 30;
/** A REST read that waits W seconds and has no answer after W + this is dead. */
const REST_READ_MARGIN_S = 15;
/** Larger JSON messages go over REST: /ws takes at most 16 MiB. */
const WS_MESSAGE_MAX = 8 << 20;
/** Arrays from this many bytes travel as raw bodies: in a push, and in the answer of a pull. */
const RAW_MIN_BYTES = 64 << 10;
const DONE_TASK_STATES = new Set(['completed', 'failed', 'aborted', 'lost']);

// ------------------------------------------------------------------ errors

/**
 * An error the controller answered (`code` is its error code, such as
 * 'unauthorized', 'no_engines', 'bad_request'), or one of the SDK's own:
 * 'network' (no answer), 'disconnected' (the socket closed before the
 * answer), 'closed' (the client was closed), 'timeout' (see TimeoutError).
 */
export class IppcError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, status?: number, body?: any, cause?: any}} [info]
   */
  constructor(message, info = {}) {
    super(message, info.cause ? { cause: info.cause } : undefined);
    this.name = 'IppcError';
    /** @type {string} */
    this.code = info.code || 'error';
    /** @type {number|undefined} HTTP status, when there was an answer */
    this.status = info.status;
    /** @type {any} the answer's body */
    this.body = info.body;
  }
}

/** A get(timeout) whose result was not ready in time (the work goes on). */
export class TimeoutError extends IppcError {
  /** @param {string} message */
  constructor(message) {
    super(message, { code: 'timeout' });
    this.name = 'TimeoutError';
  }
}

/**
 * An error raised on an engine: a Lua error, a failing kernel, an abort.
 * Like IPython Parallel's RemoteError.
 */
export class RemoteError extends IppcError {
  /**
   * @param {{ename?: string, evalue?: string, traceback?: string[], engine?: number|null, task?: number}} info
   */
  constructor(info) {
    const ename = info.ename || 'RemoteError';
    const evalue = info.evalue || '';
    const where = info.engine != null ? `[engine ${info.engine}] ` : '';
    super(`${where}${ename}: ${evalue}`, { code: 'remote_error' });
    this.name = 'RemoteError';
    /** @type {string} */
    this.ename = ename;
    /** @type {string} */
    this.evalue = evalue;
    /** @type {string[]} */
    this.traceback = info.traceback || [];
    /** @type {number|null} */
    this.engine = info.engine ?? null;
    /** @type {number|undefined} */
    this.task = info.task;
  }
}

/**
 * Several engines (or map items) failed.  `errors` holds one RemoteError
 * each; ename, evalue and traceback are the first one's.
 */
export class CompositeError extends RemoteError {
  /** @param {RemoteError[]} errors */
  constructor(errors) {
    super(errors[0] || {});
    this.name = 'CompositeError';
    /** @type {RemoteError[]} */
    this.errors = errors;
    this.message = `${errors.length} error(s): ` + errors.map((e) => e.message).join('; ');
  }
}

// ------------------------------------------------------------------ values

/** @typedef {'float64'|'float32'|'int64'|'int32'|'uint8'} Dtype */
/** @typedef {Float64Array|Float32Array|BigInt64Array|Int32Array|Uint8Array} TypedArrayLike */

const DTYPE_CLASS = {
  float64: Float64Array,
  float32: Float32Array,
  int64: BigInt64Array,
  int32: Int32Array,
  uint8: Uint8Array,
};

/**
 * The dtype of a TypedArray, or null when it has none on the wire.
 * @param {any} data
 * @returns {Dtype|null}
 */
export function dtypeOf(data) {
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof BigInt64Array) return 'int64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof Uint8Array || data instanceof Uint8ClampedArray) return 'uint8';
  return null;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * An n-dimensional array: a TypedArray in row-major order with a shape.
 * Values with one dimension come back as plain TypedArrays; others as
 * NDArray.  Push an NDArray to give an array a shape.
 */
export class NDArray {
  /**
   * @param {TypedArrayLike} data row-major elements
   * @param {number[]} [shape] default [data.length]
   */
  constructor(data, shape) {
    const dtype = dtypeOf(data);
    if (!dtype) throw new TypeError('NDArray data must be a Float64Array, Float32Array, BigInt64Array, Int32Array or Uint8Array');
    const dims = shape ? Array.from(shape, Number) : [data.length];
    const count = dims.reduce((a, b) => a * b, 1);
    if (!dims.every((d) => Number.isInteger(d) && d >= 0) || count !== data.length) {
      throw new RangeError(`shape [${dims}] does not hold ${data.length} elements`);
    }
    /** @type {TypedArrayLike} */
    this.data = data;
    /** @type {number[]} */
    this.shape = dims;
    /** @type {Dtype} */
    this.dtype = dtype;
  }

  get ndim() {
    return this.shape.length;
  }

  get size() {
    return this.data.length;
  }

  /** The element at the given (0-based) indices. */
  at(...index) {
    let flat = 0;
    for (let k = 0; k < this.shape.length; k++) flat = flat * this.shape[k] + (index[k] ?? 0);
    return this.data[flat];
  }

  /** Nested JS arrays (int64 elements as BigInt). */
  toArray() {
    const build = (dim, offset) => {
      if (dim === this.shape.length) return this.data[offset];
      const stride = this.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, offset + i * stride));
    };
    return this.shape.length === 0 ? this.data[0] : build(0, 0);
  }
}

/**
 * Shorthand for new NDArray(data, shape).
 * @param {TypedArrayLike} data
 * @param {number[]} [shape]
 */
export function ndarray(data, shape) {
  return new NDArray(data, shape);
}

/** An engine's own variable as an apply argument (IPython Parallel's Reference). */
export class Reference {
  /** @param {string} name */
  constructor(name) {
    /** @type {string} */
    this.name = name;
  }

  toJSON() {
    return { $ref: this.name };
  }
}

/**
 * A reference to the engine's global `name`, for apply and map arguments:
 * `view.apply('psum', [ref('a')])`.
 * @param {string} name
 */
export function ref(name) {
  return new Reference(name);
}

/** Node's Buffer when there is one (fast base64), else undefined. */
const NodeBuffer = /** @type {any} */ (globalThis).Buffer;

/** @param {Uint8Array} bytes */
function bytesToBase64(bytes) {
  const u8 = /** @type {any} */ (bytes);
  if (typeof u8.toBase64 === 'function') return u8.toBase64();
  if (NodeBuffer) return NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

/**
 * Decodes base64 into a fresh, aligned buffer (a TypedArray of any element
 * size can view it).
 * @param {string} text
 */
function base64ToBytes(text) {
  const U8 = /** @type {any} */ (Uint8Array);
  if (typeof U8.fromBase64 === 'function') return U8.fromBase64(text);
  if (NodeBuffer) {
    const b = NodeBuffer.from(text, 'base64');
    const out = new Uint8Array(b.length);
    out.set(b);
    return out;
  }
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** @param {ArrayBufferView} view */
function viewBytes(view) {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

function checkEndian() {
  if (!LITTLE_ENDIAN) throw new IppcError('ippc arrays are little-endian; this platform is not', { code: 'unsupported' });
}

/**
 * An array from its wire form: bytes (aligned), dtype, shape.  One
 * dimension gives a TypedArray, others an NDArray.
 * @param {Uint8Array|ArrayBuffer} bytes
 * @param {string} dtype
 * @param {number[]} shape
 */
function arrayFromBytes(bytes, dtype, shape) {
  checkEndian();
  /** @type {any} */
  const Cls = DTYPE_CLASS[/** @type {Dtype} */ (dtype)];
  if (!Cls) throw new IppcError(`unknown dtype '${dtype}'`, { code: 'invalid_value' });
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let data;
  if (u8.byteOffset % Cls.BYTES_PER_ELEMENT === 0 && u8.byteLength % Cls.BYTES_PER_ELEMENT === 0) {
    data = new Cls(u8.buffer, u8.byteOffset, u8.byteLength / Cls.BYTES_PER_ELEMENT);
  } else {
    const copy = new Uint8Array(u8.byteLength);
    copy.set(u8);
    data = new Cls(copy.buffer, 0, Math.floor(copy.byteLength / Cls.BYTES_PER_ELEMENT));
  }
  return shape.length === 1 ? data : new NDArray(data, shape);
}

function isTypedArray(v) {
  return ArrayBuffer.isView(v) && !(v instanceof DataView);
}

/** Plain arrays of numbers from this length on are sent as arrays' bytes. */
const PACK_MIN_ITEMS = 1024;

/**
 * A long plain array of finite numbers as the TypedArray the controller
 * would make of it as a JSON list (int64 when every number is an integer,
 * else float64), so it travels as bytes, not JSON numbers.  Anything else
 * is returned as it is.
 * @param {any} v
 */
function packNumbers(v) {
  if (!Array.isArray(v) || v.length < PACK_MIN_ITEMS) return v;
  let integers = true;
  for (const x of v) {
    if (typeof x !== 'number' || !Number.isFinite(x)) return v;
    if (integers && !Number.isSafeInteger(x)) integers = false;
  }
  if (!integers) return Float64Array.from(v);
  const out = new BigInt64Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = BigInt(v[i]);
  return out;
}

/** A TypedArray or NDArray: its dtype, shape and bytes.  Throws for other views. */
function arrayParts(v) {
  checkEndian();
  if (v instanceof NDArray) return { dtype: v.dtype, shape: v.shape, bytes: viewBytes(v.data) };
  const dtype = dtypeOf(v);
  if (!dtype) {
    throw new TypeError(`${v.constructor.name} has no ippc dtype: use Float64Array, Float32Array, BigInt64Array, Int32Array or Uint8Array`);
  }
  return { dtype, shape: [v.length], bytes: viewBytes(v) };
}

/**
 * A JS value in its JSON wire form: TypedArrays and NDArrays become typed
 * objects {dtype, shape, data: base64}, references {"$ref": name}.
 * @param {any} v
 * @returns {any}
 */
export function encodeValue(v) {
  if (v === undefined) return null;
  if (v === null || typeof v !== 'object') {
    if (typeof v === 'bigint') {
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new RangeError(`${v} does not fit a JSON number exactly: send it in a BigInt64Array`);
      }
      return Number(v);
    }
    return v;
  }
  if (v instanceof Reference) return v.toJSON();
  if (v instanceof NDArray || isTypedArray(v)) {
    const p = arrayParts(v);
    return { dtype: p.dtype, shape: p.shape, data: bytesToBase64(p.bytes) };
  }
  if (Array.isArray(v)) return v.map(encodeValue);
  if (typeof v.toJSON === 'function') return v.toJSON();
  const out = {};
  for (const [k, x] of Object.entries(v)) out[k] = encodeValue(x);
  return out;
}

function isTypedWire(v) {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
  const keys = Object.keys(v);
  return (
    keys.length === 3 &&
    typeof v.data === 'string' &&
    Object.prototype.hasOwnProperty.call(DTYPE_CLASS, v.dtype) &&
    Array.isArray(v.shape)
  );
}

/**
 * A wire value as JS: typed arrays become TypedArrays (one dimension) or
 * NDArrays; everything else is as JSON gives it.
 * @param {any} v
 * @returns {any}
 */
export function decodeValue(v) {
  if (v === null || typeof v !== 'object') return v;
  if (isTypedWire(v)) return arrayFromBytes(base64ToBytes(v.data), v.dtype, v.shape);
  if (Array.isArray(v)) return v.map(decodeValue);
  const out = {};
  for (const [k, x] of Object.entries(v)) out[k] = decodeValue(x);
  return out;
}

// ------------------------------------------------------------------ binary answers

/** A part's headers take at most this many bytes: the search for their end stops there. */
const PART_HEAD_MAX = 4096;
const CRLF = Uint8Array.of(13, 10);
const DASH_DASH = Uint8Array.of(45, 45);
/** RFC 2046's boundary: 1 to 70 of these characters, not ending in a space. */
const BOUNDARY_RE = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;

/** @param {string} what */
function badAnswer(what) {
  return new IppcError(`malformed binary answer: ${what}`, { code: 'bad_answer' });
}

/** Whether buf holds pattern at offset at. */
function bytesAt(buf, at, pattern) {
  if (at < 0 || at + pattern.length > buf.length) return false;
  for (let i = 0; i < pattern.length; i++) if (buf[at + i] !== pattern[i]) return false;
  return true;
}

/** The offset of the first CRLF CRLF in buf[from, to), or -1. */
function headEnd(buf, from, to) {
  for (let i = from; i + 4 <= to; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

/**
 * The parts of a multipart/mixed answer (docs/binary.md), in order, each
 * `{headers, body}`: headers a Map from lower-case names to values, body a
 * view of the answer's bytes.  Each part is taken by its Content-Length and
 * the boundary is checked where the part must end: the parts' bytes are
 * never searched.  Throws an IppcError with code 'bad_answer' for anything
 * else (a wrong content type or boundary, a part cut short, a part header
 * that is missing or does not parse, bytes after the closing boundary).
 * @param {string} contentType the answer's Content-Type
 * @param {Uint8Array} body the answer's bytes
 * @returns {{headers: Map<string, string>, body: Uint8Array}[]}
 */
export function parseMultipart(contentType, body) {
  const [type, ...params] = String(contentType).split(';');
  if (type.trim().toLowerCase() !== 'multipart/mixed') throw badAnswer(`content type '${contentType}' is not multipart/mixed`);
  let boundary = null;
  for (const param of params) {
    const eq = param.indexOf('=');
    if (eq > 0 && param.slice(0, eq).trim().toLowerCase() === 'boundary') boundary = param.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
  }
  if (boundary === null || !BOUNDARY_RE.test(boundary)) throw badAnswer(`content type '${contentType}' has no valid boundary`);
  const delim = Uint8Array.from('--' + boundary, (c) => c.charCodeAt(0));
  if (!bytesAt(body, 0, delim) || !bytesAt(body, delim.length, CRLF)) throw badAnswer('the body does not begin with the boundary');
  let at = delim.length + 2;
  const parts = [];
  for (;;) {
    const n = parts.length + 1;
    const end = headEnd(body, at, Math.min(body.length, at + PART_HEAD_MAX));
    if (end < 0) {
      throw badAnswer(body.length < at + PART_HEAD_MAX ? `the body ends inside part ${n}'s headers` : `part ${n}'s headers pass ${PART_HEAD_MAX} bytes`);
    }
    const headers = new Map();
    for (const line of String.fromCharCode(...body.subarray(at, end)).split('\r\n')) {
      const colon = line.indexOf(':');
      const name = colon > 0 ? line.slice(0, colon).trim().toLowerCase() : '';
      if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) throw badAnswer(`part ${n} has a header line that does not parse: '${line.slice(0, 80)}'`);
      if (headers.has(name)) throw badAnswer(`part ${n} has two ${name} headers`);
      headers.set(name, line.slice(colon + 1).trim());
    }
    const lengthText = headers.get('content-length');
    if (lengthText === undefined || !/^\d{1,15}$/.test(lengthText)) {
      throw badAnswer(`part ${n} has ${lengthText === undefined ? 'no' : `a bad (${lengthText})`} Content-Length`);
    }
    const length = Number(lengthText);
    const start = end + 4;
    if (start + length + 2 + delim.length > body.length) {
      throw badAnswer(`part ${n} is cut short: its Content-Length is ${length}, and the body ends ${Math.max(0, body.length - start)} bytes after its headers`);
    }
    parts.push({ headers, body: body.subarray(start, start + length) });
    at = start + length;
    if (!bytesAt(body, at, CRLF) || !bytesAt(body, at + 2, delim)) throw badAnswer(`part ${n} is not followed by the boundary (a wrong Content-Length?)`);
    at += 2 + delim.length;
    if (bytesAt(body, at, DASH_DASH)) {
      at += 2;
      if (at === body.length || (at + 2 === body.length && bytesAt(body, at, CRLF))) return parts;
      throw badAnswer('bytes follow the closing boundary');
    }
    if (!bytesAt(body, at, CRLF)) throw badAnswer(`the boundary after part ${n} is followed by neither CRLF nor '--'`);
    at += 2;
  }
}

/**
 * An array from an answer's bytes and its X-Ippc-Dtype/X-Ippc-Shape
 * headers, checked against each other (a wrong length never becomes an
 * array); as arrayFromBytes gives it.
 * @param {Uint8Array} bytes
 * @param {string|null} dtype
 * @param {string|null} shapeText
 * @param {string} where what the bytes are, for the error
 */
function arrayFromAnswer(bytes, dtype, shapeText, where) {
  if (!dtype || !Object.prototype.hasOwnProperty.call(DTYPE_CLASS, dtype)) throw badAnswer(`${where}: dtype '${dtype}' is not one of ippc's`);
  if (!shapeText || !/^\d{1,15}(,\d{1,15})*$/.test(shapeText)) throw badAnswer(`${where}: shape '${shapeText}' does not parse`);
  const shape = shapeText.split(',').map(Number);
  const size = shape.reduce((a, b) => a * b, 1) * DTYPE_CLASS[/** @type {Dtype} */ (dtype)].BYTES_PER_ELEMENT;
  if (size !== bytes.byteLength) throw badAnswer(`${where}: a ${dtype} array of shape [${shape}] is ${size} bytes, not ${bytes.byteLength}`);
  return arrayFromBytes(bytes, dtype, shape);
}

/**
 * The engine ids of a vars listing when every target holds an array of
 * ippc's dtypes of RAW_MIN_BYTES or more under name; else null.
 * @param {any} listing a GET .../vars answer
 * @param {string} name
 * @returns {number[]|null}
 */
function bigArrayTargets(listing, name) {
  const ids = listing && listing.targets;
  const results = listing && listing.results;
  if (!listing || listing.status !== 'ok' || !Array.isArray(ids) || !ids.length || !Array.isArray(results) || results.length !== ids.length) return null;
  for (const r of results) {
    const info = r && typeof r === 'object' && Object.prototype.hasOwnProperty.call(r, name) ? r[name] : null;
    if (!info || typeof info !== 'object' || !Object.prototype.hasOwnProperty.call(DTYPE_CLASS, info.dtype)) return null;
    if (!(typeof info.bytes === 'number' && info.bytes >= RAW_MIN_BYTES)) return null;
  }
  return ids;
}

/**
 * The arrays of a multipart pull of the engines ids, in their order; null
 * when a part is not an array (the JSON pull answers then).  Each array has
 * a buffer of its own, as a JSON answer's have.
 * @param {string} contentType
 * @param {Uint8Array} body
 * @param {number[]} ids
 * @param {string} where the request, for errors
 */
function multipartArrays(contentType, body, ids, where) {
  const parts = parseMultipart(contentType, body);
  if (parts.length !== ids.length) throw badAnswer(`${where}: ${parts.length} part(s) for ${ids.length} engine(s)`);
  const arrays = [];
  for (const [i, part] of parts.entries()) {
    const engine = part.headers.get('x-ippc-engine');
    if (engine !== String(ids[i])) throw badAnswer(`${where}: part ${i + 1} is engine ${engine}'s, not engine ${ids[i]}'s`);
    const type = (part.headers.get('content-type') || '').split(';')[0].trim().toLowerCase();
    if (type === 'application/json') return null;
    if (type !== 'application/octet-stream') throw badAnswer(`${where}: part ${i + 1} is '${type}', not raw bytes`);
    const label = `${where}, engine ${engine}`;
    arrays.push(arrayFromAnswer(part.body.slice(), part.headers.get('x-ippc-dtype') ?? null, part.headers.get('x-ippc-shape') ?? null, label));
  }
  return arrays;
}

/** A pull answer's values, already decoded, when its arrays came as bytes. */
const BINARY_VALUES = Symbol('ippc.binaryValues');

// ------------------------------------------------------------------ targets

/**
 * A view's targets as REST's path segment.
 * @param {Targets} t
 */
function targetsPath(t) {
  if (Array.isArray(t)) return t.join(',');
  return encodeURIComponent(String(t));
}

/**
 * The engine ids a target spec names among the live ids (ascending), as the
 * controller reads it (common/targets.c): "all", ids, negative indices, and
 * Python slices over the live ids, comma-separated.
 * @param {Targets} spec
 * @param {number[]} live ascending live ids
 * @returns {number[]}
 */
export function resolveTargets(spec, live) {
  const ids = [];
  const seen = new Set();
  const add = (pos) => {
    if (!seen.has(pos)) {
      seen.add(pos);
      ids.push(live[pos]);
    }
  };
  const n = live.length;
  const addInt = (v) => {
    const pos = v >= 0 ? live.indexOf(v) : v + n;
    if (pos < 0 || pos >= n) {
      throw new IppcError(v >= 0 ? `engine ${v} is not live` : `index ${v} is out of range for the live engines`, { code: 'no_engines', status: 422 });
    }
    add(pos);
  };
  const bad = () => new IppcError(`bad targets '${spec}'`, { code: 'bad_targets', status: 400 });
  if (typeof spec === 'number') addInt(spec);
  else if (Array.isArray(spec)) spec.forEach(addInt);
  else {
    const text = String(spec).trim();
    if (text === 'all') live.forEach((_, i) => add(i));
    else {
      for (const raw of text.split(',')) {
        const item = raw.trim();
        if (!item.includes(':')) {
          if (!/^[+-]?\d+$/.test(item)) throw bad();
          addInt(Number(item));
          continue;
        }
        const parts = item.split(':').map((s) => s.trim());
        if (parts.length > 3 || !parts.every((s) => s === '' || /^[+-]?\d+$/.test(s))) throw bad();
        const step = parts[2] ? Number(parts[2]) : 1;
        if (step === 0) throw new IppcError('slice step cannot be zero', { code: 'bad_targets', status: 400 });
        const clamp = (b) => (b < 0 ? (b + n < 0 ? (step < 0 ? -1 : 0) : b + n) : b >= n ? (step < 0 ? n - 1 : n) : b);
        const start = parts[0] ? clamp(Number(parts[0])) : step < 0 ? n - 1 : 0;
        const stop = parts[1] ? clamp(Number(parts[1])) : step < 0 ? -1 : n;
        for (let i = start; step > 0 ? i < stop : i > stop; i += step) add(i);
      }
    }
  }
  if (ids.length === 0) throw new IppcError(`targets '${spec}' name no live engine`, { code: 'no_engines', status: 422 });
  return ids;
}

// ------------------------------------------------------------------ helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A timer that does not keep Node.js alive. */
function unrefTimer(fn, ms) {
  /** @type {any} */
  const t = setTimeout(fn, ms);
  if (t && typeof t === 'object' && typeof t.unref === 'function') t.unref();
  return t;
}

function errorFromBody(status, body, fallback) {
  const e = body && typeof body === 'object' && body.error;
  if (e && typeof e === 'object') return new IppcError(e.message || e.code, { code: e.code, status, body });
  return new IppcError(fallback || `HTTP ${status}`, { code: 'http_' + status, status, body });
}

function isNode() {
  const proc = /** @type {any} */ (globalThis).process;
  return !!(proc && proc.versions && proc.versions.node);
}

/**
 * Node's built-in WebSocket shares undici's connection pool with fetch and
 * may send an upgrade over a kept-alive REST connection, which the
 * controller serves as HTTP (its acceptor routes a connection by its first
 * request).  Its sockets get a pool of their own here.
 */
let nodeWsDispatcher;
function wsInitFor(WS, protocols) {
  if (!isNode() || WS !== globalThis.WebSocket) return protocols;
  if (nodeWsDispatcher === undefined) nodeWsDispatcher = newNodePool();
  return nodeWsDispatcher ? { protocols, dispatcher: nodeWsDispatcher } : protocols;
}

/**
 * A connection pool of its own for Node's built-in fetch/WebSocket (an
 * undici Agent, made from the global one's class), or null elsewhere.
 * @returns {any}
 */
function newNodePool() {
  if (!isNode()) return null;
  void globalThis.fetch; // Node loads undici, and so sets its global pool, lazily
  const global = globalThis[Symbol.for('undici.globalDispatcher.1')];
  try {
    return global ? new global.constructor() : null;
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------ the socket

/**
 * One /ws connection: JSON messages in and out, replies matched by id.
 * Reconnecting is its owner's business.
 */
class Socket {
  /**
   * @param {Client} client
   * @param {{onMessage: (msg: any) => void, onClose: (ev: {code: number, reason: string}) => void}} hooks
   */
  constructor(client, hooks) {
    this.client = client;
    this.hooks = hooks;
    this.ws = null;
    this.open = false;
    this.pending = new Map();
    this.nextId = 1;
    this.beatTimer = null;
    this.beat = null;
  }

  /**
   * Pings every `interval` ms; onDead() when a pong takes longer than
   * `timeout` ms (a half-open connection never reports its own death).
   * @param {number} interval
   * @param {number} timeout
   * @param {() => void} onDead
   */
  heartbeat(interval, timeout, onDead) {
    this.beat = () => {
      clearTimeout(this.beatTimer);
      this.beatTimer = unrefTimer(() => {
        if (!this.open) return;
        this.send({ op: 'ping', id: 'heartbeat' });
        this.beatTimer = unrefTimer(() => {
          if (this.open) onDead();
        }, timeout);
      }, interval);
    };
    this.beat();
  }

  /** Resolves once open; rejects if the connection fails. */
  connect() {
    const WS = this.client._WebSocket;
    if (!WS) return Promise.reject(new IppcError('no WebSocket class: run Node 20 with --experimental-websocket, or pass {WebSocket}', { code: 'unsupported' }));
    const url = this.client.url.replace(/^http/, 'ws') + '/ws';
    const token = this.client.token;
    // Browsers cannot set headers on a WebSocket: the token rides in the
    // subprotocol list when it is a valid protocol name, else in the query.
    const asProtocol = /^[A-Za-z0-9._-]+$/.test(token) && token.length < 100;
    const protocols = asProtocol ? ['ippc.client.v1', 'ippc.token.' + token] : ['ippc.client.v1'];
    const full = asProtocol ? url : `${url}?token=${encodeURIComponent(token)}`;
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WS(full, wsInitFor(WS, protocols));
      } catch (e) {
        reject(new IppcError(`cannot open ${url}: ${e.message}`, { code: 'network', cause: e }));
        return;
      }
      this.ws = ws;
      let settled = false;
      ws.onopen = () => {
        this.open = true;
        settled = true;
        resolve();
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data !== 'string') return; // the controller sends text only
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (msg && msg.type === 'pong' && msg.id === 'heartbeat') {
          if (this.beat) this.beat();
          return;
        }
        if (msg && msg.type === 'reply' && this.pending.has(msg.id)) {
          const p = this.pending.get(msg.id);
          this.pending.delete(msg.id);
          p.resolve({ status: msg.status, body: msg.body });
          return;
        }
        this.hooks.onMessage(msg);
      };
      ws.onerror = () => {
        if (!settled) {
          settled = true;
          reject(new IppcError(`cannot open ${url} (refused, or a wrong token)`, { code: 'network' }));
        }
      };
      ws.onclose = (ev) => {
        const was = this.open;
        this.open = false;
        clearTimeout(this.beatTimer);
        if (!settled) {
          settled = true;
          reject(new IppcError(`cannot open ${url}: closed (${ev.code})`, { code: 'network' }));
        }
        for (const p of this.pending.values()) {
          p.reject(new IppcError('the socket closed before the answer came', { code: 'disconnected' }));
        }
        this.pending.clear();
        if (was) this.hooks.onClose({ code: ev.code, reason: ev.reason });
      };
    });
  }

  /** @param {object} msg */
  send(msg) {
    if (this.open) this.ws.send(JSON.stringify(msg));
  }

  /**
   * A request-channel call: resolves with {status, body}; null (nothing
   * sent) when the message is too big for the socket.
   * @param {object} msg without id
   * @returns {Promise<{status: number, body: any}>|null}
   */
  call(msg) {
    const id = this.nextId++;
    const text = JSON.stringify({ ...msg, id });
    // A UTF-16 unit is at most 3 UTF-8 bytes: count exactly only near the limit.
    if (text.length * 3 > WS_MESSAGE_MAX && new TextEncoder().encode(text).length > WS_MESSAGE_MAX) return null; // REST takes it
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(text);
    });
  }

  close(code = 1000) {
    this.open = false;
    clearTimeout(this.beatTimer);
    this.beat = null;
    for (const p of this.pending.values()) p.reject(new IppcError('the client closed the socket', { code: 'closed' }));
    this.pending.clear();
    try {
      if (this.ws) this.ws.close(code);
    } catch {
      /* already closed */
    }
  }

  /**
   * Gives up on a socket that stopped answering: nothing it still delivers
   * is seen, waiting calls reject now, and its close is not waited for (a
   * half-open connection may never finish the closing handshake).
   */
  abandon() {
    this.hooks = { onMessage: () => {}, onClose: () => {} };
    for (const p of this.pending.values()) {
      p.reject(new IppcError('the socket stopped answering', { code: 'disconnected' }));
    }
    this.pending.clear();
    this.close(4000);
  }
}

// ------------------------------------------------------------------ results

/**
 * A result that may not have arrived yet, shaped like IPython Parallel's
 * AsyncResult.  It is a thenable: `await ar` is `await ar.get()`.
 * @template T
 */
export class AsyncResult {
  /**
   * @param {Client} client
   * @param {(self: AsyncResult<T>) => Promise<T>} run
   */
  constructor(client, run) {
    /** @protected */
    this._client = client;
    this._ready = false;
    /** @type {T|undefined} */
    this._value = undefined;
    /** @type {any} */
    this._error = undefined;
    this._started = Date.now();
    /** @type {number|null} seconds from creation to the answer */
    this.elapsed = null;
    /** @type {Promise<void>} never rejects */
    this._done = Promise.resolve()
      .then(() => run(this))
      .then(
        (v) => {
          this._value = v;
        },
        (e) => {
          this._error = e;
        },
      )
      .finally(() => {
        this._ready = true;
        this.elapsed = (Date.now() - this._started) / 1000;
      });
  }

  /** True once the result (or its error) arrived. */
  ready() {
    return this._ready;
  }

  /** True when ready without an error; undefined before. */
  successful() {
    return this._ready ? this._error === undefined : undefined;
  }

  /**
   * Waits until ready, at most timeout seconds (default: no limit).
   * @param {number} [timeout] seconds
   * @returns {Promise<boolean>} ready()
   */
  async wait(timeout) {
    if (timeout == null || timeout < 0) {
      await this._done;
      return true;
    }
    let timer;
    await Promise.race([this._done, new Promise((r) => (timer = setTimeout(r, timeout * 1000)))]);
    clearTimeout(timer);
    return this._ready;
  }

  /**
   * The result; rejects with its RemoteError/CompositeError/IppcError, or
   * with a TimeoutError when not ready within timeout seconds.
   * @param {number} [timeout] seconds
   * @returns {Promise<T>}
   */
  async get(timeout) {
    if (!(await this.wait(timeout))) throw new TimeoutError(`result not ready after ${timeout} s`);
    if (this._error !== undefined) throw this._error;
    return /** @type {T} */ (this._value);
  }

  /** The error, once ready (undefined when it succeeded or is not ready). */
  get error() {
    return this._error;
  }

  /**
   * @template R1, R2
   * @param {((value: T) => R1 | PromiseLike<R1>) | null} [onFulfilled]
   * @param {((reason: any) => R2 | PromiseLike<R2>) | null} [onRejected]
   * @returns {Promise<R1 | R2>}
   */
  then(onFulfilled, onRejected) {
    return this.get().then(onFulfilled, onRejected);
  }

  /** @param {(reason: any) => any} onRejected */
  catch(onRejected) {
    return this.get().catch(onRejected);
  }

  /** @param {() => void} f */
  finally(f) {
    return this.get().finally(f);
  }
}

/**
 * The answer of a direct-view call (execute, run, push, pull, scatter,
 * gather, apply, load, reset, vars).  get() gives one value per target (a
 * single value for a view made from one engine id): the chunk's or
 * function's return value, the pulled values, the listing, the gathered
 * array, or null for calls that return nothing.
 * @extends {AsyncResult<any>}
 */
export class DirectResult extends AsyncResult {
  /**
   * @param {Client} client
   * @param {{single: boolean, values: (answer: any) => any[]|any, perTarget?: boolean}} shape
   * @param {(pending: (body: any) => void) => Promise<any>} fetchAnswer the
   *   finished answer; calls pending(body) with a 202's body first
   */
  constructor(client, shape, fetchAnswer) {
    super(client, async (self) => {
      const answer = await fetchAnswer((body) => /** @type {DirectResult} */ (self)._pending(body));
      /** @type {DirectResult} */ (self)._take(answer);
      const values = shape.values(answer);
      const errs = directErrors(answer);
      if (errs.length) throw shape.single || errs.length === 1 ? errs[0] : new CompositeError(errs);
      return shape.single && shape.perTarget !== false ? values[0] : values;
    });
    this._shape = shape;
    /** @type {number|null} the controller's request id, once known */
    this.requestId = null;
    /** @type {number[]|null} the engines, in target order, once known */
    this.targets = null;
    /** @type {any} the controller's whole answer */
    this.answer = null;
    /** @type {Map<number, string>} engine -> what it printed so far (onStdout) */
    this._live = new Map();
    /** @type {((engine: number, text: string) => void)|null} */
    this._onStdout = null;
  }

  /** @private */
  _pending(body) {
    if (body && body.request) this.requestId = body.request;
    if (body && body.targets) this.targets = body.targets;
    if (this._onStdout && this.requestId) {
      const hub = this._client._stdout();
      const request = this.requestId;
      hub.watchRequest(request, (engine, text) => {
        this._live.set(engine, (this._live.get(engine) || '') + text);
        this._onStdout(engine, text);
      });
      this._done.then(() => hub.unwatchRequest(request));
    }
  }

  /** @private */
  _take(answer) {
    this.answer = answer;
    this.requestId = answer.request ?? this.requestId;
    this.targets = answer.targets || null;
  }

  /**
   * Per target, what the engine printed (a string for a one-engine view).
   * With onStdout, it grows while the call runs.
   */
  get stdout() {
    let out;
    if (this.answer) {
      const results = this.answer.results || [];
      out = results.map((r) => (r && typeof r === 'object' && typeof r.stdout === 'string' ? r.stdout : ''));
    } else {
      out = (this.targets || [...this._live.keys()]).map((engine) => this._live.get(engine) || '');
    }
    return this._shape.single ? out[0] ?? '' : out;
  }

  /**
   * Per target: engine_id, status, stdout and, on error, ename, evalue,
   * traceback (one object for a one-engine view).
   */
  get metadata() {
    if (!this.answer) return this._shape.single ? null : [];
    const targets = this.answer.targets || [];
    const results = this.answer.results || [];
    const errors = new Map((this.answer.errors || []).map((e) => [e.engine, e]));
    const md = targets.map((engine, i) => {
      const r = results[i];
      const e = errors.get(engine) || (r && r.status && r.status !== 'ok' ? r : null);
      return {
        engine_id: engine,
        request: this.answer.request,
        status: e ? (r && r.status) || 'error' : 'ok',
        stdout: r && typeof r.stdout === 'string' ? r.stdout : '',
        ename: e ? e.ename : undefined,
        evalue: e ? e.evalue : undefined,
        traceback: e ? e.traceback : undefined,
      };
    });
    return this._shape.single ? md[0] ?? null : md;
  }

  /**
   * This request's tasks' records, one per target (state, engine,
   * submitted/started/completed times, ...), as the task store has them now.
   * @returns {Promise<any[]>}
   */
  async taskRecords() {
    if (!this.requestId) await this._done; // a blocking call learns it with its answer
    if (!this.requestId) return [];
    const page = await this._client.tasks({ request: this.requestId, kind: 'direct', limit: 1000 });
    return page.tasks;
  }

  /**
   * Aborts this request's tasks that have not finished (force: interrupts
   * running ones too).  Resolves with the abort answers.
   * @param {{force?: boolean}} [opts]
   */
  async abort(opts = {}) {
    if (!this.requestId) throw new IppcError('the request id is not known yet (use {block: false})', { code: 'bad_request' });
    const page = await this._client.tasks({ request: this.requestId, kind: 'direct', limit: 1000 });
    const open = page.tasks.filter((t) => !DONE_TASK_STATES.has(t.state));
    return Promise.all(open.map((t) => this._client._abort(t.id, !!opts.force)));
  }
}

/** The RemoteErrors of a direct-view answer. */
function directErrors(answer) {
  if (!answer || answer.status === 'ok') return [];
  if (Array.isArray(answer.errors) && answer.errors.length) return answer.errors.map((e) => new RemoteError(e));
  const out = [];
  for (const r of answer.results || []) {
    if (r && typeof r === 'object' && r.status && r.status !== 'ok') out.push(new RemoteError(r));
  }
  if (!out.length && answer.status === 'error') out.push(new RemoteError({ ename: 'Error', evalue: 'the request failed' }));
  return out;
}

/**
 * One load-balanced task, or a batch of them (client.submit, client.task).
 * get() gives the task's result (a list for a batch); a failed, aborted or
 * lost task rejects with its RemoteError.
 * @extends {AsyncResult<any>}
 */
export class TaskResult extends AsyncResult {
  /**
   * @param {Client} client
   * @param {() => Promise<{ids: number[], records: any[]}>} submit
   * @param {boolean} batch
   */
  constructor(client, submit, batch) {
    let resolveIds;
    const idsKnown = new Promise((r) => (resolveIds = r));
    super(client, async (self) => {
      const t = /** @type {TaskResult} */ (self);
      let first;
      try {
        first = await submit();
      } catch (e) {
        resolveIds([]);
        throw e;
      }
      t.ids = first.ids;
      t.records = first.records.slice();
      resolveIds(first.ids);
      if (t._onStdout) {
        const hub = client._stdout();
        first.ids.forEach((id, i) =>
          hub.watchTask(id, (engine, text) => {
            t._live[i] = (t._live[i] || '') + text;
            t._onStdout(engine, text, id);
          }),
        );
      }
      await Promise.all(
        first.ids.map(async (id, i) => {
          let rec = t.records[i];
          while (!rec || !DONE_TASK_STATES.has(rec.state)) {
            rec = await client._retrying(() => client._taskRecord(id, WAIT_CHUNK_S));
            t.records[i] = rec;
          }
        }),
      );
      const errors = [];
      const values = t.records.map((rec) => {
        if (rec.state === 'completed') return decodeValue(rec.result ?? null);
        const e = rec.error || {};
        errors.push(new RemoteError({ ename: e.ename || rec.state, evalue: e.evalue || `task ${rec.id} ${rec.state}`, traceback: e.traceback, engine: rec.engine, task: rec.id }));
        return null;
      });
      if (errors.length) throw batch ? (errors.length === 1 ? errors[0] : new CompositeError(errors)) : errors[0];
      return batch ? values : values[0];
    });
    this._batch = batch;
    /** @type {number[]|null} the task ids, once submitted */
    this.ids = null;
    /** @type {any[]} the latest task records (GET /api/v1/tasks/{id}) */
    this.records = [];
    /** @type {Promise<number[]>} the task ids (empty if the submit failed) */
    this.submitted = idsKnown;
    /** @type {string[]} per task, what it printed so far (onStdout) */
    this._live = [];
    /** @type {((engine: number, text: string, task: number) => void)|null} */
    this._onStdout = null;
  }

  /** The first (or only) task id, once submitted. */
  get id() {
    return this.ids ? this.ids[0] : null;
  }

  /** What the task printed (a list for a batch). */
  get stdout() {
    const n = Math.max(this.records.length, this._live.length);
    const out = Array.from({ length: n }, (_, i) => {
      const r = this.records[i];
      return r && DONE_TASK_STATES.has(r.state) ? r.stdout || '' : this._live[i] || (r && r.stdout) || '';
    });
    return this._batch ? out : out[0] ?? '';
  }

  /** The task record(s): state, engine, submitted/started/completed, ... */
  get metadata() {
    return this._batch ? this.records : this.records[0] ?? null;
  }

  /** The (latest known) state of the task, or of each task of a batch. */
  get state() {
    const s = this.records.map((r) => r && r.state);
    return this._batch ? s : s[0] ?? 'pending';
  }

  /**
   * Aborts the task(s): pending ones never run; with force, a running one
   * is interrupted.
   * @param {{force?: boolean}} [opts]
   */
  async abort(opts = {}) {
    const ids = await this.submitted;
    return Promise.all(ids.map((id) => this._client._abort(id, !!opts.force)));
  }

  /** Submits the same task again (a new id); a TaskResult for it. */
  resubmit() {
    return this._client._resubmit(this);
  }
}

/**
 * A map (client.map): get() gives one result per item; failed items make it
 * reject with a CompositeError whose errors carry `index` and `item`.
 * @extends {AsyncResult<any[]>}
 */
export class MapResult extends AsyncResult {
  /**
   * @param {Client} client
   * @param {() => Promise<any>} fetchAnswer
   */
  constructor(client, fetchAnswer) {
    super(client, async (self) => {
      const answer = await fetchAnswer();
      /** @type {MapResult} */ (self).answer = answer;
      /** @type {MapResult} */ (self).requestId = answer.request;
      /** @type {MapResult} */ (self).tasks = answer.tasks;
      if (answer.status !== 'ok') {
        const errs = (answer.errors || []).map((e) => Object.assign(new RemoteError(e), { index: e.index, item: e.item }));
        throw errs.length === 1 ? errs[0] : new CompositeError(errs.length ? errs : [new RemoteError({ ename: 'Error', evalue: 'the map failed' })]);
      }
      return decodeValue(answer.results);
    });
    /** @type {number|null} */
    this.requestId = null;
    /** @type {number[]|null} the chunk tasks' ids */
    this.tasks = null;
    /** @type {any} */
    this.answer = null;
  }

  /** Once answered: the chunk tasks' records (state, engine, times, ...). */
  async taskRecords() {
    await this._done;
    return Promise.all((this.tasks || []).map((id) => this._client._taskRecord(id, 0)));
  }
}

// ------------------------------------------------------------------ views

/**
 * @typedef {'all'|string|number|number[]} Targets
 * 'all', an engine id, a list of ids, or a spec string such as '0:2',
 * '1::2', '-1', '0,2'.
 */

/**
 * @typedef {object} CallOptions
 * @property {boolean} [block] true (default): the controller answers when
 *   done; false: it answers at once and the result is fetched when ready.
 *   Either way the call returns an AsyncResult.
 * @property {'typed'|'list'} [format] how arrays come back: 'typed'
 *   (default: TypedArrays) or 'list' (JSON lists of numbers).
 * @property {(engine: number, text: string) => void} [onStdout] called with
 *   each engine's output while the call runs (execute, run, apply); the
 *   result's stdout grows meanwhile
 */

/**
 * A set of engines that every call goes to, like IPython Parallel's
 * DirectView.  Make one with client.view(targets).
 */
export class DirectView {
  /**
   * @param {Client} client
   * @param {Targets} targets
   * @param {{block?: boolean}} [opts]
   */
  constructor(client, targets, opts = {}) {
    if (typeof targets === 'number' && !(Number.isInteger(targets) && targets >= 0)) {
      throw new TypeError('an engine id is an integer >= 0 (for the last engine, use "-1")');
    }
    if (Array.isArray(targets) && (targets.length === 0 || !targets.every((t) => Number.isInteger(t) && t >= 0))) {
      throw new TypeError('a target list is a non-empty list of engine ids');
    }
    this.client = client;
    /** @type {Targets} */
    this.targets = targets;
    /** One engine id: values come back unwrapped, as in IPython Parallel. */
    this.single = typeof targets === 'number';
    /** Default for the calls' block option. */
    this.block = opts.block ?? true;
  }

  /** @private */
  _call(op, fields, opts, values, perTarget = true) {
    const shape = { single: this.single, values, perTarget };
    return this._streamed(
      new DirectResult(this.client, shape, (pending) =>
        this._started(opts).then(() =>
          this.client._viewCall(op, this.targets, fields, this._options(opts), pending),
        ),
      ),
      opts,
    );
  }

  /** @private Call options; a call that streams stdout learns its request id at once. */
  _options(opts) {
    return { block: opts.onStdout ? false : opts.block ?? this.block, format: opts.format };
  }

  /** @private Resolves when stdout events of a new call will be seen. */
  _started(opts) {
    return opts.onStdout ? this.client._stdout().ready : Promise.resolve();
  }

  /** @private */
  _streamed(ar, opts) {
    if (opts.onStdout) ar._onStdout = opts.onStdout;
    return ar;
  }

  /**
   * Runs a Lua chunk on every target; get() gives each chunk's return value
   * (null when none).
   * @param {string} code
   * @param {CallOptions} [opts]
   */
  execute(code, opts = {}) {
    return this._call('execute', { code }, opts, returnValues);
  }

  /**
   * Runs a file's text on every target (tracebacks name the file).  In
   * Node.js the file is read when source is not given.
   * @param {string} filename
   * @param {string} [source]
   * @param {CallOptions} [opts]
   */
  run(filename, source, opts = {}) {
    if (source && typeof source === 'object') [source, opts] = [undefined, source];
    const shape = { single: this.single, values: returnValues };
    const ar = new DirectResult(this.client, shape, async (pending) => {
      const text = source ?? (await readFileText(filename));
      await this._started(opts);
      return this.client._viewCall('run', this.targets, { filename, source: text }, this._options(opts), pending);
    });
    return this._streamed(ar, opts);
  }

  /**
   * Sets variables on every target.  TypedArrays and NDArrays of 64 KiB and
   * more go as raw bytes (one request each), the rest in one JSON call.  A
   * plain array of 1024 or more numbers is sent as the array the engines
   * would make of it (int64 if all are integers, else float64).
   * @param {Record<string, any>} namespace
   * @param {CallOptions} [opts]
   */
  push(namespace, opts = {}) {
    if (!namespace || typeof namespace !== 'object') throw new TypeError('push takes an object of name: value');
    const raw = [];
    const json = {};
    for (const [name, given] of Object.entries(namespace)) {
      const v = packNumbers(given);
      if ((v instanceof NDArray || isTypedArray(v)) && arrayParts(v).bytes.byteLength >= RAW_MIN_BYTES) raw.push([name, v]);
      else json[name] = encodeValue(v);
    }
    const shape = { single: this.single, values: nullValues };
    const block = opts.block ?? this.block;
    return new DirectResult(this.client, shape, async () => {
      const parts = [];
      if (Object.keys(json).length || raw.length === 0) {
        parts.push(this.client._viewCall('push', this.targets, { namespace: json }, { block }));
      }
      for (const [name, v] of raw) parts.push(this.client._rawPush(this.targets, name, v, block));
      const answers = await Promise.all(parts);
      return answers.find((a) => a.status !== 'ok') || answers[0];
    });
  }

  /**
   * Reads variables from every target.  One name: one value per target;
   * a list of names: per target, the values in that order.
   *
   * A blocking pull of one name (the default; not with block: false,
   * onStdout or format: 'list') moves big arrays as bytes: it lists the
   * targets' variables first, and when every target holds an array of
   * 64 KiB or more under the name, one GET answers them all as
   * multipart/mixed (application/octet-stream for one target).  The values
   * are the same TypedArrays and NDArrays the JSON answer gives.  Anything
   * else (small arrays, other values, an engine failing) is the JSON pull,
   * where arrays travel as typed base64.  An answer that is not well formed
   * rejects with an IppcError whose code is 'bad_answer'.
   *
   * With {raw: true} (one name holding an array on every target) the bytes
   * come as application/octet-stream, one request per target, and a value
   * that is not an array is an error.
   * @param {string|string[]} names
   * @param {CallOptions & {raw?: boolean}} [opts]
   */
  pull(names, opts = {}) {
    const one = typeof names === 'string';
    if (opts.raw) {
      if (!one) throw new TypeError('pull with {raw: true} takes one name');
      const shape = { single: this.single, values: (a) => a.values };
      return new DirectResult(this.client, shape, () => this.client._rawPull(this.targets, names));
    }
    const list = one ? [names] : Array.from(names);
    const values = (a) =>
      a[BINARY_VALUES] || (a.results || []).map((r) => (r == null ? null : one ? decodeValue(r[0]) : decodeValue(r)));
    const blocking = !opts.onStdout && (opts.block ?? this.block);
    if (one && blocking && (opts.format ?? 'typed') === 'typed') {
      const shape = { single: this.single, values };
      return new DirectResult(this.client, shape, (pending) => this.client._binaryPull(this.targets, names, pending));
    }
    return this._call('pull', { names: list }, opts, values);
  }

  /**
   * Splits data over the targets (the first n % p get one more item).
   * A TypedArray or NDArray goes as raw bytes (split along its first axis),
   * as does a plain array of 1024 or more numbers.
   * @param {string} name
   * @param {any[]|TypedArrayLike|NDArray} given
   * @param {CallOptions} [opts]
   */
  scatter(name, given, opts = {}) {
    const shape = { single: this.single, values: nullValues };
    const block = opts.block ?? this.block;
    const data = packNumbers(given);
    if (data instanceof NDArray || isTypedArray(data)) {
      return new DirectResult(this.client, shape, () => this.client._rawScatter(this.targets, name, data, block));
    }
    return this._call('scatter', { name, data: encodeValue(Array.from(data)) }, opts, nullValues);
  }

  /**
   * The targets' parts of name concatenated in target order.  With
   * {raw: true} (arrays) the bytes come as application/octet-stream.
   * @param {string} name
   * @param {CallOptions & {raw?: boolean}} [opts]
   */
  gather(name, opts = {}) {
    const shape = { single: this.single, values: (a) => decodeValue(a.result ?? null), perTarget: false };
    if (opts.raw) {
      return new DirectResult(this.client, { ...shape, values: (a) => a.result }, () => this.client._rawGather(this.targets, name));
    }
    return new DirectResult(this.client, shape, (pending) =>
      this.client._viewCall('gather', this.targets, { name }, { block: opts.block ?? this.block, format: opts.format }, pending),
    );
  }

  /**
   * Calls the global Lua function fname on every target; args may hold
   * ref('name') for the engine's own variables.  get(): the return values.
   * @param {string} fname
   * @param {any[]} [args]
   * @param {Record<string, any>} [kwargs]
   * @param {CallOptions} [opts]
   */
  apply(fname, args = [], kwargs = {}, opts = {}) {
    return this._call('apply', { function: fname, args: encodeValue(args), kwargs: encodeValue(kwargs) }, opts, returnValues);
  }

  /**
   * Loads a native plugin (a shared library path on the engines' hosts).
   * @param {string} library
   * @param {CallOptions} [opts]
   */
  load(library, opts = {}) {
    return this._call('load', { library }, opts, returnValues);
  }

  /**
   * Clears the namespace of every target.
   * @param {CallOptions} [opts]
   */
  reset(opts = {}) {
    return this._call('reset', {}, opts, nullValues);
  }

  /**
   * Removes a variable from every target.
   * @param {string} name
   * @param {CallOptions} [opts]
   */
  delete(name, opts = {}) {
    const shape = { single: this.single, values: nullValues };
    return new DirectResult(this.client, shape, () =>
      this.client._restView('DELETE', this.targets, `/vars/${encodeURIComponent(name)}`, { block: opts.block ?? this.block }),
    );
  }

  /**
   * Per target, its variables: {name: {type, dtype?, shape?, bytes?}}.
   * @param {CallOptions} [opts]
   */
  vars(opts = {}) {
    const shape = { single: this.single, values: (a) => a.results || [] };
    return new DirectResult(this.client, shape, () =>
      this.client._restView('GET', this.targets, '/vars', { block: opts.block ?? this.block }),
    );
  }

  /**
   * Stops the task running on each target (it ends 'aborted'); the engines
   * keep their namespaces.  Resolves with {targets, status}.
   */
  async interrupt() {
    return this.client._call('interrupt', { targets: this.targets });
  }
}

const returnValues = (a) => (a.results || []).map((r) => (r && typeof r === 'object' && 'value' in r ? decodeValue(r.value) : null));
const nullValues = (a) => (a.results || a.targets || []).map(() => null);

async function readFileText(filename) {
  if (!isNode()) throw new TypeError('run(filename) needs the source in a browser: run(filename, source)');
  // A computed name: browsers and bundlers never try to load it.
  const name = 'node:fs/promises';
  const fs = await import(name);
  return fs.readFile(filename, 'utf8');
}

// ------------------------------------------------------------------ events

/**
 * @typedef {object} SubscribeOptions
 * @property {{engines?: number[], tags?: string[], tasks?: number[]}} [filter]
 *   the controller's event filter (docs/streams.md)
 * @property {(state: 'open'|'reconnecting'|'closed', info?: any) => void} [onStatus]
 *   told 'open' once a socket's snapshot came (from then on every later
 *   event reaches the handler across drops, or a gap says it is gone),
 *   'reconnecting' when a socket drops or cannot be had, 'closed' when
 *   unsubscribed
 * @property {number} [since] resume from this event seq instead of starting
 *   with a snapshot
 */

/**
 * One subscription: a socket of its own, resumed after every drop.  The
 * handler sees an unbroken stream in seq order, each event once: the
 * snapshot first, then events.  When the controller no longer has the
 * events missed (its ring moved on, or it restarted) the handler gets a
 * {type: 'gap'} event and then a fresh snapshot.
 */
class Subscription {
  /**
   * @param {Client} client
   * @param {string[]} topics
   * @param {(event: any) => void} handler
   * @param {SubscribeOptions} opts
   */
  constructor(client, topics, handler, opts) {
    this.client = client;
    this.topics = topics;
    this.handler = handler;
    this.filter = opts.filter;
    this.onStatus = opts.onStatus || (() => {});
    /** seq of the last event delivered (null: nothing yet) */
    this.lastSeq = opts.since ?? null;
    this.closed = false;
    this.reconnects = 0;
    this.backoff = client.options.reconnectMin;
    this.socket = null;
    this._start();
  }

  _deliver(ev) {
    try {
      this.handler(ev);
    } catch (e) {
      console.error('ippc: an event handler threw', e);
    }
  }

  async _start() {
    while (!this.closed) {
      const sock = new Socket(this.client, { onMessage: (m) => this._onMessage(m), onClose: (ev) => this._onClose(ev) });
      this.socket = sock;
      this.syncing = true;
      this.subscribed = false;
      this.buffer = [];
      this.snapshot = null;
      try {
        await sock.connect();
        if (this.closed) {
          sock.close();
          return;
        }
        const opts = this.client.options;
        sock.heartbeat(opts.heartbeatInterval, opts.heartbeatTimeout, () => {
          sock.abandon();
          this._onClose({ code: 4000, reason: 'no answer to a ping' });
        });
        // 'open' waits for the snapshot (_onMessage): until it comes this
        // subscription may have no seq to resume from, and a socket lost
        // now would take the events since it opened along with it.
        return;
      } catch (e) {
        if (this.closed) return;
        this.onStatus('reconnecting', e);
        await sleep(this.backoff);
        this.backoff = Math.min(this.backoff * 2, this.client.options.reconnectMax);
      }
    }
  }

  _onMessage(msg) {
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'snapshot':
        this.snapshot = msg;
        if (this.lastSeq === null || msg.seq < this.lastSeq) {
          // First connection, or a controller that restarted (its seq began again).
          if (this.lastSeq !== null) this._deliver({ type: 'gap', since: this.lastSeq, oldest: null, reason: 'restart' });
          this._deliver(msg);
          this.lastSeq = msg.seq;
        }
        this.socket.send({ op: 'subscribe', topics: this.topics, ...(this.filter ? { filter: this.filter } : {}) });
        this.socket.send({ op: 'resume', since: this.lastSeq });
        this.socket.send({ op: 'ping', id: 'synced' });
        // lastSeq is set: whatever happens to this socket now, the next
        // one resumes from here.
        this.onStatus('open');
        return;
      case 'subscribed':
        // Events before this answer were not filtered yet; the replay has
        // every one of them that matches.
        this.subscribed = true;
        return;
      case 'gap':
        // The events since lastSeq are gone: say so, start again from the snapshot.
        this._deliver({ type: 'gap', since: msg.since, oldest: msg.oldest });
        if (this.snapshot) {
          this._deliver(this.snapshot);
          this.lastSeq = this.snapshot.seq;
        }
        return;
      case 'pong':
        if (msg.id === 'synced') {
          // A working session: the next drop reconnects quickly again.
          this.backoff = this.client.options.reconnectMin;
          this.syncing = false;
          this.buffer.sort((a, b) => a.seq - b.seq);
          for (const ev of this.buffer) this._event(ev);
          this.buffer = [];
        }
        return;
      case 'reply':
        if (msg.status >= 400) console.error('ippc: the controller refused a subscription message:', msg.body);
        return;
      case 'error':
      case 'slow_consumer':
        this.lastRefusal = msg; // the close that follows reconnects
        return;
      default:
        if (typeof msg.seq !== 'number') return;
        if (this.syncing) {
          if (this.subscribed) this.buffer.push(msg);
          return;
        }
        this._event(msg);
    }
  }

  _event(ev) {
    if (ev.seq <= this.lastSeq) return;
    this.lastSeq = ev.seq;
    this._deliver(ev);
  }

  _onClose(ev) {
    if (this.closed) return;
    this.reconnects++;
    this.onStatus('reconnecting', { ...ev, refusal: this.lastRefusal });
    this.lastRefusal = undefined;
    // A socket dropped before it was in sync (say, refused as overloaded)
    // waits longer each time.
    setTimeout(() => this._start(), this.syncing ? this.backoff : 0);
    if (this.syncing) this.backoff = Math.min(this.backoff * 2, this.client.options.reconnectMax);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.socket) this.socket.close();
    this.client._subscriptions.delete(this);
    this.onStatus('closed');
  }
}

/** How much output of tasks nobody claimed yet is kept for a late claim. */
const STDOUT_KEEP_BYTES = 1 << 20;
const STDOUT_KEEP_TASKS = 10000;

/**
 * Routes task.stdout events to the onStdout callbacks of calls and tasks:
 * one subscription (tasks + stdout) per client, made on first use.  A call
 * learns its request or task ids only when the controller answers, and its
 * tasks may print before that: output of tasks nobody claimed yet is kept
 * (bounded) and handed over when they are claimed.
 */
class StdoutHub {
  /** @param {Client} client */
  constructor(client) {
    /** @type {Map<number, number>} task id -> request id (task.submitted) */
    this.taskRequest = new Map();
    /** @type {Map<number, {engine: number, text: string}[]>} unclaimed output */
    this.kept = new Map();
    this.keptBytes = 0;
    /** @type {Map<number, Function>} */
    this.byRequest = new Map();
    /** @type {Map<number, Function>} */
    this.byTask = new Map();
    let ready;
    /**
     * Resolves once events of tasks submitted from now on will be seen, or
     * when the stream cannot be had (no WebSockets): calls then go ahead,
     * and their output comes with their answers only.
     */
    this.ready = new Promise((r) => (ready = r));
    this.unsubscribe = client.subscribe(
      ['tasks', 'stdout'],
      (ev) => {
        if (ev.type === 'snapshot') ready();
        else this._event(ev);
      },
      { onStatus: (state) => state !== 'open' && ready() },
    );
  }

  _event(ev) {
    if (ev.type === 'task.submitted' && ev.request != null) {
      this.taskRequest.set(ev.task, ev.request);
      if (this.taskRequest.size > STDOUT_KEEP_TASKS) this.taskRequest.delete(this.taskRequest.keys().next().value);
      const fn = this.byRequest.get(ev.request);
      if (fn) this._claim(ev.task, fn);
    } else if (ev.type === 'task.stdout') {
      const fn = this.byTask.get(ev.task) || this.byRequest.get(this.taskRequest.get(ev.task));
      if (fn) fn(ev.engine, ev.data);
      else this._keep(ev.task, ev.engine, ev.data);
    } else if (ev.type === 'task.completed') {
      // Its output came before this (one socket, seq order).  Unclaimed
      // output stays: the call may learn its ids after the task ended.
      this.byTask.delete(ev.task);
    }
  }

  _keep(task, engine, text) {
    if (!this.kept.has(task)) this.kept.set(task, []);
    this.kept.get(task).push({ engine, text });
    this.keptBytes += text.length;
    while (this.keptBytes > STDOUT_KEEP_BYTES && this.kept.size) {
      const [oldest, chunks] = this.kept.entries().next().value;
      this.kept.delete(oldest);
      for (const c of chunks) this.keptBytes -= c.text.length;
    }
  }

  _claim(task, fn) {
    this.byTask.set(task, fn);
    const chunks = this.kept.get(task);
    if (!chunks) return;
    this.kept.delete(task);
    for (const c of chunks) {
      this.keptBytes -= c.text.length;
      fn(c.engine, c.text);
    }
  }

  /** Output of the tasks of a direct-view request goes to fn(engine, text). */
  watchRequest(request, fn) {
    this.byRequest.set(request, fn);
    for (const [task, r] of this.taskRequest) if (r === request) this._claim(task, fn);
  }

  /** The request's call is answered; output still on its way is dropped soon. */
  unwatchRequest(request) {
    unrefTimer(() => this.byRequest.delete(request), 5000);
  }

  /** Output of one task goes to fn(engine, text). */
  watchTask(task, fn) {
    this._claim(task, fn);
  }
}

// ------------------------------------------------------------------ client

/**
 * @typedef {object} ClientOptions
 * @property {any} [WebSocket] a WebSocket class (default globalThis.WebSocket;
 *   in Node 20 run with --experimental-websocket, or pass the `ws` package's)
 * @property {typeof fetch} [fetch] a fetch function (default globalThis.fetch)
 * @property {'ws'|'rest'} [transport] how JSON calls travel: 'ws' (default when a
 *   WebSocket class exists) or 'rest'
 * @property {number} [reconnectMin] ms before the first reconnect (100)
 * @property {number} [reconnectMax] longest ms between reconnects (5000)
 * @property {number} [heartbeatInterval] ms between pings of a quiet socket (15000)
 * @property {number} [heartbeatTimeout] ms to wait for the pong (10000)
 * @property {number} [retryFor] ms for which waiting on a task or request
 *   goes on through connection failures before it gives up (30000)
 */

/**
 * A connection to one ippc controller.
 *
 *   const client = new Client(url, token);
 *   await client.connect();
 *   const view = client.view('all');
 *   await view.execute('x = mpi.rank()');
 *   console.log(await view.pull('x'));   // [0, 1, 2, 3]
 *   client.close();
 */
export class Client {
  /**
   * @param {string} url the controller, http://HOST:PORT
   * @param {string} token the client token (ippc-client.json)
   * @param {ClientOptions} [options]
   */
  constructor(url, token, options = {}) {
    if (typeof url !== 'string' || !/^https?:\/\//.test(url)) throw new TypeError('url must be http://HOST:PORT');
    if (typeof token !== 'string' || !token) throw new TypeError('token must be a non-empty string');
    /** @type {string} */
    this.url = url.replace(/\/+$/, '');
    /** @type {string} */
    this.token = token;
    /** @type {Required<Omit<ClientOptions, 'WebSocket'|'fetch'>>} */
    this.options = {
      transport: options.transport || 'ws',
      reconnectMin: options.reconnectMin ?? 100,
      reconnectMax: options.reconnectMax ?? 5000,
      heartbeatInterval: options.heartbeatInterval ?? 15000,
      heartbeatTimeout: options.heartbeatTimeout ?? 10000,
      retryFor: options.retryFor ?? 30000,
    };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._fetch = options.fetch || globalThis.fetch.bind(globalThis);
    // In Node, REST has a pool of its own that can be thrown away when the
    // network path dies: requests stuck on its dead connections fail then
    // (and waits are asked again) instead of hanging until TCP gives up.
    // Browsers manage their connections themselves.
    this._ownFetch = !options.fetch;
    this._restPool = this._ownFetch ? newNodePool() : null;
    /** @type {number[]} the live engine ids, kept current while connected */
    this.ids = [];
    /** @type {Map<number, any>} engine id -> latest Engine record */
    this.engineTable = new Map();
    /** @type {any} GET /api/v1/info at connect */
    this.infoAtConnect = null;
    this._main = null;
    this._mainOpening = null;
    this._mainRetryAt = 0;
    this._closed = false;
    this._aborter = new AbortController();
    /** @type {Set<Subscription>} */
    this._subscriptions = new Set();
    /** @type {StdoutHub|null} */
    this._stdoutHub = null;
  }

  /**
   * Checks the token (GET /api/v1/info) and opens the request channel.
   * Rejects with an IppcError whose code is the controller's, e.g.
   * 'unauthorized' for a wrong token.
   * @returns {Promise<any>} the controller's info
   */
  async connect() {
    if (this._ownFetch && !this._restPool) this._restPool = newNodePool();
    this._closed = false;
    const info = await this._restJson('GET', `${API}/info`);
    this.infoAtConnect = info;
    await this.engines();
    if (this.options.transport === 'ws' && this._WebSocket) {
      // Without the socket (a proxy that refuses WebSockets, say) calls go
      // over REST; the token is known to be good already.
      await this._openMain().catch(() => {});
    }
    return info;
  }

  /** Closes every socket; calls still waiting reject with code 'closed'. */
  close() {
    this._closed = true;
    this._stdoutHub = null;
    if (this._restPool) this._restPool.close().catch(() => {});
    this._restPool = null;
    for (const s of [...this._subscriptions]) s.close();
    if (this._main) this._main.close();
    this._main = null;
    this._aborter.abort();
    this._aborter = new AbortController();
  }

  /** True while the request channel's socket is open. */
  get socketOpen() {
    return !!(this._main && this._main.open);
  }

  /** @returns {Promise<any>} GET /api/v1/info */
  info() {
    return this._call('info', {});
  }

  /**
   * The engines (GET /api/v1/engines), dead ones included; updates ids.
   * @returns {Promise<any[]>}
   */
  async engines() {
    const body = await this._call('engines', {});
    const list = body.engines || [];
    this.engineTable = new Map(list.map((e) => [e.id, e]));
    this._updateIds();
    return list;
  }

  /** @returns {Promise<any>} GET /api/v1/queue */
  queue() {
    return this._call('queue', {});
  }

  /**
   * A view on targets (default 'all').
   * @param {Targets} [targets]
   * @param {{block?: boolean}} [opts]
   */
  view(targets = 'all', opts = {}) {
    return new DirectView(this, targets, opts);
  }

  /**
   * Submits a load-balanced task ({function, args, kwargs} or {code}, with
   * targets, after, follow, retries, timeout, tags), or a list of them.
   * Returns at once; the TaskResult learns its ids when the controller
   * answers (`await t.submitted`).
   * @param {object|object[]} spec
   * @param {{onStdout?: (engine: number, text: string, task: number) => void}} [opts]
   *   onStdout: called with the task's output while it runs
   */
  submit(spec, opts = {}) {
    const batch = Array.isArray(spec);
    const wire = encodeValue(spec);
    const t = new TaskResult(
      this,
      async () => {
        if (opts.onStdout) await this._stdout().ready;
        const body = await this._call('submit', batch ? { tasks: wire } : { task: wire }, { format: 'typed' });
        if (batch) return { ids: body.ids, records: [] };
        return { ids: [body.id], records: [body] };
      },
      batch,
    );
    if (opts.onStdout) t._onStdout = opts.onStdout;
    return t;
  }

  /**
   * A TaskResult for a task that exists already.
   * @param {number} id
   */
  task(id) {
    return new TaskResult(this, async () => ({ ids: [id], records: [await this._taskRecord(id, 0)] }), false);
  }

  /**
   * One task's record (GET /api/v1/tasks/{id}), after waiting up to `wait`
   * seconds for it to finish (default: answer at once).
   * @param {number} id
   * @param {{wait?: number}} [opts]
   * @returns {Promise<any>}
   */
  taskRecord(id, opts = {}) {
    return this._taskRecord(id, opts.wait ?? 0);
  }

  /**
   * Aborts a task: a pending one never runs; with force a running one is
   * interrupted.  Resolves with the task record.
   * @param {number} id
   * @param {{force?: boolean}} [opts]
   */
  abort(id, opts = {}) {
    return this._abort(id, !!opts.force);
  }

  /**
   * Submits a task again (a new id); a TaskResult for the new one.
   * @param {number} id
   */
  resubmit(id) {
    return new TaskResult(
      this,
      async () => {
        const rec = await this._restJson('POST', `${API}/tasks/${id}/resubmit`);
        return { ids: [rec.id], records: [rec] };
      },
      false,
    );
  }

  /**
   * A direct-view request's or map's answer by its id (GET
   * /api/v1/requests/{id}), after waiting up to `wait` seconds for it to
   * finish; arrays typed.  A blocking pull or gather is not kept after its
   * answer (410 gone).
   * @param {number} id
   * @param {{wait?: number}} [opts]
   * @returns {Promise<any>}
   */
  requestAnswer(id, opts = {}) {
    return this._call('request', { request: id }, { wait: opts.wait ?? 0, format: 'typed' });
  }

  /**
   * IPython Parallel's LoadBalancedView.map: fname applied to the items of
   * the sequences (several sequences: one argument from each), in chunks of
   * `chunksize` items per task.  The last argument may be the options.
   *   client.map('sq', [1, 2, 3])
   *   client.map('add', [1, 2], [10, 20], {chunksize: 2})
   * @param {string} fname
   * @param {...any} rest sequences, then optionally {chunksize, ordered, block}
   */
  map(fname, ...rest) {
    let opts = {};
    const last = rest[rest.length - 1];
    if (last && typeof last === 'object' && !Array.isArray(last) && !isTypedArray(last)) opts = rest.pop();
    if (rest.length === 0) throw new TypeError('map needs at least one sequence');
    const sequences = rest.map((s) => encodeValue(Array.from(s)));
    const fields = { function: fname, sequences };
    if (opts.chunksize != null) fields.chunksize = opts.chunksize;
    if (opts.ordered != null) fields.ordered = opts.ordered;
    return new MapResult(this, () => this._waitedCall('map', fields, { block: opts.block ?? true, format: opts.format }));
  }

  /**
   * The task history (GET /api/v1/tasks): {tasks, next_cursor}.
   * @param {{state?: string, engine?: number, tag?: string, since?: string, limit?: number, cursor?: number, kind?: 'direct'|'balanced', request?: number}} [query]
   */
  tasks(query = {}) {
    return this._restJson('GET', `${API}/tasks`, { query });
  }

  /**
   * Subscribes to events: topics 'engines', 'tasks', 'stdout' (a list, one
   * name, or 'all').  The handler gets the snapshot, then every event in
   * order, across reconnects.  Returns the function that unsubscribes (it
   * also has `.lastSeq` and `.reconnects`).
   * @param {string|string[]} topics
   * @param {(event: any) => void} handler
   * @param {SubscribeOptions} [opts]
   * @returns {(() => void) & {lastSeq: number|null, reconnects: number}}
   */
  subscribe(topics, handler, opts = {}) {
    if (!this._WebSocket) throw new IppcError('subscribe needs a WebSocket class: run Node 20 with --experimental-websocket, or pass {WebSocket}', { code: 'unsupported' });
    if (typeof handler !== 'function') throw new TypeError('subscribe(topics, handler): handler must be a function');
    const list = topics == null || topics === 'all' ? ['engines', 'tasks', 'stdout'] : Array.isArray(topics) ? topics : [topics];
    const sub = new Subscription(this, list, handler, opts);
    this._subscriptions.add(sub);
    const unsubscribe = () => sub.close();
    Object.defineProperty(unsubscribe, 'lastSeq', { get: () => sub.lastSeq });
    Object.defineProperty(unsubscribe, 'reconnects', { get: () => sub.reconnects });
    return /** @type {any} */ (unsubscribe);
  }

  // -------------------------------------------------------------- internals

  /** The stream that routes task output to onStdout callbacks (made on first use). */
  _stdout() {
    if (!this._stdoutHub) this._stdoutHub = new StdoutHub(this);
    return this._stdoutHub;
  }

  _updateIds() {
    this.ids = [...this.engineTable.values()]
      .filter((e) => e.state !== 'dead')
      .map((e) => e.id)
      .sort((a, b) => a - b);
  }

  /** Keeps ids and engineTable current from the request channel's events. */
  _onMainMessage(msg) {
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'snapshot') {
      this.engineTable = new Map((msg.engines || []).map((e) => [e.id, e]));
    } else if (msg.type === 'engine.registered' && msg.engine) {
      this.engineTable.set(msg.engine.id, msg.engine);
    } else if (msg.type === 'engine.dead') {
      const e = this.engineTable.get(msg.engine);
      if (e) this.engineTable.set(msg.engine, { ...e, state: 'dead' });
    } else if (msg.type === 'engine.status') {
      const e = this.engineTable.get(msg.engine);
      if (e) this.engineTable.set(msg.engine, { ...e, state: msg.state, queue: msg.queue, tasks_done: msg.tasks_done, heartbeat_age: msg.heartbeat_age });
      return;
    } else {
      return;
    }
    this._updateIds();
  }

  async _openMain() {
    if (this._main && this._main.open) return this._main;
    if (this._mainOpening) return this._mainOpening;
    if (Date.now() < this._mainRetryAt) throw new IppcError('the socket failed recently', { code: 'network' });
    const dropped = () => {
      if (this._main !== sock) return;
      this._main = null;
      // Reopened soon, so ids stay current; calls meanwhile take REST.
      setTimeout(() => {
        if (!this._closed && !this._main) this._openMain().catch(() => {});
      }, this.options.reconnectMin);
    };
    const sock = new Socket(this, { onMessage: (m) => this._onMainMessage(m), onClose: dropped });
    this._mainOpening = (async () => {
      // A failed upgrade is retried a few times before calls fall back to REST.
      let last;
      for (let attempt = 0; attempt < 3 && !this._closed; attempt++) {
        try {
          await sock.connect();
          sock.send({ op: 'subscribe', topics: ['engines'] });
          sock.heartbeat(this.options.heartbeatInterval, this.options.heartbeatTimeout, () => {
            // The path to the controller died silently: REST's pooled
            // connections with it.  Waiting calls reject; reads are asked again.
            this._renewRestPool();
            sock.abandon();
            dropped();
          });
          this._main = sock;
          return sock;
        } catch (e) {
          last = e;
          await sleep(50 * (attempt + 1));
        }
      }
      // Calls take REST for a while rather than wait for a socket each time.
      this._mainRetryAt = Date.now() + this.options.reconnectMax;
      throw last || new IppcError('client closed', { code: 'closed' });
    })();
    try {
      return await this._mainOpening;
    } finally {
      this._mainOpening = null;
    }
  }

  /**
   * One call by its /ws op name: over the socket when it is open, else
   * REST.  Resolves with the answer body (200 or 202); rejects with an
   * IppcError for 4xx/5xx.
   * @param {string} op
   * @param {object} fields
   * @param {{block?: boolean, format?: string, wait?: number, force?: boolean, timeout?: number}} [options]
   * @returns {Promise<any>}
   */
  async _call(op, fields, options = {}) {
    const r = await this._callStatus(op, fields, options);
    if (r.status >= 400) throw errorFromBody(r.status, r.body);
    return r.body;
  }

  async _callStatus(op, fields, options = {}) {
    if (this._closed) throw new IppcError('the client is closed', { code: 'closed' });
    const msg = { op, ...fields };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) msg[k] = v;
    if (this.options.transport === 'ws' && this._WebSocket && !this._closed) {
      let sock = this._main;
      if (!sock || !sock.open) {
        try {
          sock = await this._openMain();
        } catch {
          sock = null; // REST below
        }
      }
      if (sock && sock.open) {
        const p = sock.call(msg);
        if (p) {
          try {
            return await p;
          } catch (e) {
            // Reads can be asked again; anything else might have run.
            if (e.code !== 'disconnected' || !READ_OPS.has(op)) throw e;
          }
        }
      }
    }
    return this._restCall(op, msg);
  }

  /** A call through REST, from its /ws message. */
  async _restCall(op, msg) {
    const { op: _op, targets, ...rest } = msg;
    const q = {};
    for (const k of ['block', 'timeout', 'format', 'wait', 'force']) {
      if (rest[k] !== undefined) {
        q[k] = rest[k];
        delete rest[k];
      }
    }
    let method = 'POST';
    let path;
    let body;
    switch (op) {
      case 'execute':
      case 'run':
      case 'push':
      case 'pull':
      case 'scatter':
      case 'apply':
      case 'load':
      case 'reset':
      case 'interrupt':
        path = `${API}/views/${targetsPath(targets)}/${op}`;
        body = op === 'interrupt' ? undefined : rest;
        break;
      case 'gather':
        method = 'GET';
        path = `${API}/views/${targetsPath(targets)}/gather/${encodeURIComponent(rest.name)}`;
        break;
      case 'submit':
        path = `${API}/tasks`;
        body = rest.task !== undefined ? rest.task : rest.tasks;
        break;
      case 'map':
        path = `${API}/map`;
        body = rest;
        break;
      case 'abort':
        method = 'DELETE';
        path = `${API}/tasks/${rest.task}`;
        break;
      case 'task':
        method = 'GET';
        path = `${API}/tasks/${rest.task}`;
        break;
      case 'request':
        method = 'GET';
        path = `${API}/requests/${rest.request}`;
        break;
      case 'engines':
      case 'info':
      case 'queue':
        method = 'GET';
        path = `${API}/${op}`;
        break;
      default:
        throw new IppcError(`unknown op '${op}'`, { code: 'bad_request' });
    }
    // A read that waits gets its wait and a margin; a longer silence means
    // the connection is dead, and the read is asked again.
    const timeoutMs = op === 'task' || op === 'request' ? ((q.wait || 0) + REST_READ_MARGIN_S) * 1000 : undefined;
    return this._rest(method, path, { query: q, json: body, timeoutMs });
  }

  /**
   * One REST request.  Resolves with {status, body} (body: parsed JSON);
   * for an octet-stream answer, {status, bytes, dtype, shape, request,
   * headers}; for a multipart/mixed one, {status, multipart (the body's
   * bytes), contentType, request}.
   * @param {string} method
   * @param {string} path
   * @param {{query?: object, json?: any, bytes?: Uint8Array, accept?: string, timeoutMs?: number}} [o]
   */
  async _rest(method, path, o = {}) {
    if (this._closed) throw new IppcError('the client is closed', { code: 'closed' });
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(o.query || {})) if (v !== undefined && v !== null) params.set(k, String(v));
    const qs = params.toString();
    const headers = { Authorization: `Bearer ${this.token}` };
    let body;
    if (o.bytes) {
      headers['Content-Type'] = 'application/octet-stream';
      body = o.bytes;
    } else if (o.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(o.json);
    }
    if (o.accept) headers.Accept = o.accept;
    // The request ends when the client closes, or after o.timeoutMs.
    const abort = new AbortController();
    const onClose = () => abort.abort();
    const closing = this._aborter.signal;
    closing.addEventListener('abort', onClose);
    const timer = o.timeoutMs ? setTimeout(() => abort.abort(), o.timeoutMs) : null;
    /** @type {any} */
    const init = { method, headers, body, signal: abort.signal };
    if (this._restPool) init.dispatcher = this._restPool;
    let res;
    try {
      res = await this._fetch(this.url + path + (qs ? '?' + qs : ''), init);
    } catch (e) {
      if (this._closed) throw new IppcError('the client is closed', { code: 'closed' });
      throw new IppcError(`${method} ${path}: ${abort.signal.aborted ? 'no answer in time' : e.message}`, { code: 'network', cause: e });
    } finally {
      clearTimeout(timer);
      closing.removeEventListener('abort', onClose);
    }
    const type = res.headers.get('content-type') || '';
    if (type.startsWith('application/octet-stream')) {
      const shapeText = res.headers.get('x-ippc-shape') || '';
      return {
        status: res.status,
        bytes: new Uint8Array(await res.arrayBuffer()),
        dtype: res.headers.get('x-ippc-dtype') || 'float64',
        shape: shapeText === '' ? [] : shapeText.split(',').map(Number),
        request: Number(res.headers.get('x-ippc-request')) || null,
        headers: res.headers,
      };
    }
    if (/^multipart\/mixed\s*(;|$)/i.test(type)) {
      return {
        status: res.status,
        multipart: new Uint8Array(await res.arrayBuffer()),
        contentType: type,
        request: Number(res.headers.get('x-ippc-request')) || null,
      };
    }
    const text = await res.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    return { status: res.status, body: parsed };
  }

  /** REST, JSON answer; rejects for 4xx/5xx. */
  async _restJson(method, path, o) {
    const r = await this._rest(method, path, o);
    if (r.status >= 400) throw errorFromBody(r.status, r.body);
    return r.body;
  }

  /**
   * A call whose answer may come later (direct-view calls, map): waits for
   * a 202 through the request op until it is done.
   */
  /**
   * @param {string} op
   * @param {object} fields
   * @param {{block?: boolean, format?: string}} options
   * @param {(body: any) => void} [pending]
   */
  async _waitedCall(op, fields, { block, format }, pending) {
    const options = { block, format: format || 'typed' };
    const body = await this._call(op, fields, options);
    return this._finish(body, options.format, pending);
  }

  async _finish(body, format, pending) {
    if (pending && body && body.status === 'pending') pending(body);
    while (body && body.status === 'pending' && body.request) {
      const request = body.request;
      body = await this._retrying(() => this._call('request', { request }, { wait: WAIT_CHUNK_S, format }));
    }
    return body;
  }

  /** A direct-view call's finished answer. */
  /**
   * @param {string} op
   * @param {Targets} targets
   * @param {object} fields
   * @param {{block?: boolean, format?: string}} options
   * @param {(body: any) => void} [pending]
   */
  _viewCall(op, targets, fields, { block, format }, pending) {
    return this._waitedCall(op, { targets, ...fields }, { block, format }, pending);
  }

  /** A REST-only view route (vars listing, delete), finished. */
  async _restView(method, targets, suffix, { block }) {
    const body = await this._restJson(method, `${API}/views/${targetsPath(targets)}${suffix}`, { query: { block, format: 'typed' } });
    return this._finish(body, 'typed');
  }

  async _rawPush(targets, name, value, block) {
    const p = arrayParts(value);
    const body = await this._restJson('PUT', `${API}/views/${targetsPath(targets)}/vars/${encodeURIComponent(name)}`, {
      query: { dtype: p.dtype, shape: p.shape.join(','), block },
      bytes: p.bytes,
    });
    return this._finish(body, 'typed');
  }

  async _rawScatter(targets, name, value, block) {
    const p = arrayParts(value);
    const body = await this._restJson('POST', `${API}/views/${targetsPath(targets)}/scatter`, {
      query: { name, dtype: p.dtype, shape: p.shape.join(','), block },
      bytes: p.bytes,
    });
    return this._finish(body, 'typed');
  }

  /** One raw GET per target, in parallel; an answer with `values`. */
  async _rawPull(targets, name) {
    let ids;
    if (typeof targets === 'number') ids = [targets];
    else if (Array.isArray(targets)) ids = [...new Set(targets)];
    else {
      // A spec names engines among the live ones: ask which are live now.
      await this.engines();
      ids = resolveTargets(targets, this.ids);
    }
    const parts = await Promise.all(
      ids.map(async (id) => {
        const r = await this._rest('GET', `${API}/views/${id}/vars/${encodeURIComponent(name)}`, { accept: 'application/octet-stream' });
        if (r.bytes) return { ok: true, value: arrayFromBytes(r.bytes, r.dtype, r.shape), request: r.request };
        return { ok: false, error: rawFailure(r, id) };
      }),
    );
    const errors = parts.filter((p) => !p.ok).map((p) => p.error);
    return {
      request: parts.length === 1 && parts[0].ok ? parts[0].request : null,
      targets: ids,
      status: errors.length ? 'error' : 'ok',
      errors,
      results: parts.map((p) => (p.ok ? p.value : null)),
      values: parts.map((p) => (p.ok ? p.value : null)),
    };
  }

  /**
   * A blocking pull of one name whose big arrays come as bytes (DirectView
   * pull): the vars listing first; when every target holds an array of
   * RAW_MIN_BYTES or more under name, one GET answers them, multipart/mixed
   * (octet-stream for one target), and the answer has the JSON pull's shape
   * with the decoded values under BINARY_VALUES.  Otherwise, on a 422 (an
   * engine failed: the JSON pull says which) and when a part is not an
   * array, the JSON pull's own answer.
   */
  async _binaryPull(targets, name, pending) {
    const jsonPull = () => this._viewCall('pull', targets, { names: [name] }, { block: true }, pending);
    let listing;
    try {
      listing = await this._restView('GET', targets, '/vars', { block: true });
    } catch (e) {
      if (this._closed) throw e;
      return jsonPull(); // whatever refused the listing refuses the pull, as it always did
    }
    const ids = bigArrayTargets(listing, name);
    if (!ids) return jsonPull();
    const one = ids.length === 1;
    const path = `${API}/views/${ids.join(',')}/vars/${encodeURIComponent(name)}`;
    const r = await this._rest('GET', path, { query: { block: true, format: 'typed' }, accept: one ? 'application/octet-stream' : 'multipart/mixed' });
    if (r.status === 422) return jsonPull();
    if (r.status >= 400) throw errorFromBody(r.status, r.body);
    const where = `GET ${path}`;
    let arrays;
    if (one && r.bytes) {
      arrays = [arrayFromAnswer(r.bytes, r.headers.get('x-ippc-dtype'), r.headers.get('x-ippc-shape'), `${where}, engine ${ids[0]}`)];
    } else if (!one && r.multipart) {
      arrays = multipartArrays(r.contentType, r.multipart, ids, where);
      if (!arrays) return jsonPull();
    } else if (r.bytes || r.multipart) {
      throw badAnswer(`${where}: ${one ? 'multipart/mixed' : 'application/octet-stream'} for ${ids.length} engine(s)`);
    } else {
      return this._finish(r.body, 'typed', pending); // JSON after all: not done in time (202)
    }
    return { request: r.request, targets: ids, status: 'ok', results: arrays.map((a) => [a]), [BINARY_VALUES]: arrays };
  }

  async _rawGather(targets, name) {
    const r = await this._rest('GET', `${API}/views/${targetsPath(targets)}/gather/${encodeURIComponent(name)}`, { accept: 'application/octet-stream' });
    if (r.bytes) return { request: r.request, status: 'ok', result: arrayFromBytes(r.bytes, r.dtype, r.shape) };
    return { status: 'error', errors: [rawFailure(r, null)] };
  }

  /** A task record, waiting up to `wait` seconds for it to finish. */
  /** Throws the REST pool away (its requests fail) and starts a new one. */
  _renewRestPool() {
    if (!this._restPool) return;
    const old = this._restPool;
    this._restPool = newNodePool();
    old.destroy().catch(() => {});
  }

  /**
   * A read that waits for something to finish, asked again when the
   * connection fails (a network blip, a controller restarting) until it
   * has failed for options.retryFor ms in a row.
   * @template T
   * @param {() => Promise<T>} read
   * @returns {Promise<T>}
   */
  async _retrying(read) {
    let since = 0;
    let pause = this.options.reconnectMin;
    for (;;) {
      try {
        return await read();
      } catch (e) {
        const transient = e instanceof IppcError && (e.code === 'network' || e.code === 'disconnected');
        if (!transient || this._closed) throw e;
        since = since || Date.now();
        if (Date.now() - since > this.options.retryFor) throw e;
        await sleep(pause);
        pause = Math.min(pause * 2, this.options.reconnectMax);
      }
    }
  }

  _taskRecord(id, wait) {
    return this._call('task', { task: id }, { wait, format: 'typed' });
  }

  _abort(id, force) {
    return this._call('abort', { task: id }, force ? { force: true } : {});
  }

  _resubmit(prev) {
    return new TaskResult(
      this,
      async () => {
        const ids = await prev.submitted;
        const records = await Promise.all(ids.map((id) => this._restJson('POST', `${API}/tasks/${id}/resubmit`)));
        return { ids: records.map((r) => r.id), records };
      },
      prev._batch,
    );
  }
}

/**
 * Why a raw (octet-stream) answer carries no array: the value is not one,
 * or an engine failed ('invalid_value': a RemoteError's fields); any other
 * refusal of the controller is thrown as an IppcError.
 */
function rawFailure(r, engine) {
  const e = r.body && r.body.error;
  if (r.status < 400) return { engine, ename: 'Error', evalue: 'the answer holds no array', traceback: [] };
  if (!e || e.code !== 'invalid_value') throw errorFromBody(r.status, r.body);
  const m = /^engine (\d+): (.*)$/s.exec(e.message || '');
  return { engine: m ? Number(m[1]) : engine, ename: e.code, evalue: m ? m[2] : e.message, traceback: [] };
}

/** Ops that only read: asked again over REST when the socket drops. */
const READ_OPS = new Set(['task', 'request', 'engines', 'info', 'queue']);

export default Client;
