// cluster.mjs — start and stop a real ippc cluster for the SDK tests.
//
// One ippc-controller on a free port (--port 0) with a private IPPC_DIR, and
// one `mpiexec.mpich -n N ippc-engine --file <ippc-engine.json>` job, both in
// their own process group.  stop() asks the controller to end (SIGTERM, which
// tells the engines to shut down), then SIGTERMs and finally SIGKILLs every
// process that still carries the cluster's marker (its temp directory, in the
// environment or on the command line) — found through /proc, so ranks that
// mpiexec left behind are caught too.  Processes are only signalled by pid.
// An exit handler does the same synchronously if the test process ends
// without calling stop().
//
// Binaries come from $BUILD/bin (BUILD defaults to build/ at the repository
// root); IPPC_TEST_CONTROLLER, IPPC_TEST_ENGINE and IPPC_TEST_MPIEXEC replace
// them one by one, as in tests/integration/harness.py.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..', '..');
const BUILD = process.env.BUILD || 'build';
const BIN = path.join(path.isAbsolute(BUILD) ? BUILD : path.join(ROOT, BUILD), 'bin');
const CONTROLLER = process.env.IPPC_TEST_CONTROLLER || path.join(BIN, 'ippc-controller');
const ENGINE = process.env.IPPC_TEST_ENGINE || path.join(BIN, 'ippc-engine');
const MPIEXEC = process.env.IPPC_TEST_MPIEXEC || 'mpiexec.mpich';
const START_TIMEOUT_MS = Number(process.env.IPPC_TEST_START_TIMEOUT || 60) * 1000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A sleep that does not keep the process alive (for races with an exit). */
const unrefSleep = (ms) => new Promise((r) => setTimeout(r, ms).unref());

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null; // absent or being written
  }
}

/** Live pids (not this process) whose environ or cmdline contains marker. */
function pidsWithMarker(marker) {
  const found = [];
  const needle = Buffer.from(marker);
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    for (const part of ['environ', 'cmdline']) {
      let data;
      try {
        data = fs.readFileSync(`/proc/${name}/${part}`);
      } catch {
        continue;
      }
      if (data.includes(needle)) {
        if (alive(Number(name))) found.push(Number(name));
        break;
      }
    }
  }
  return found;
}

function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat[stat.lastIndexOf(')') + 2];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function signal(pid, sig) {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone already */
  }
}

async function waitGone(pids, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0 || Date.now() >= deadline) return left;
    await sleep(100);
  }
}

const running = new Set();
process.on('exit', () => {
  // Last resort, synchronous: whatever a test did not stop.
  for (const c of running) c.killNow();
});
// A runner that times out or is interrupted signals the test process; its
// clusters go with it ('exit' is not emitted for a signal).
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => {
    for (const c of running) c.killNow();
    process.exit(128 + (sig === 'SIGHUP' ? 1 : sig === 'SIGINT' ? 2 : 15));
  });
}

export class Cluster {
  /** @param {{engines?: number, profile?: string, controllerArgs?: string[], engineArgs?: string[]}} [opts] */
  constructor(opts = {}) {
    this.n = opts.engines ?? 4;
    this.profile = opts.profile || 'jstest';
    this.controllerArgs = opts.controllerArgs || [];
    this.engineArgs = opts.engineArgs || []; // after ippc-engine --file FILE
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ippc-jstest-'));
    this.children = [];
    this.enginePids = [];
    this.url = null;
    this.token = null;
  }

  get securityDir() {
    return path.join(this.dir, `profile_${this.profile}`, 'security');
  }

  env() {
    return { ...process.env, IPPC_DIR: this.dir, IPPC_TEST_MARKER: this.dir };
  }

  spawn(cmd, args, log) {
    const out = fs.openSync(path.join(this.dir, log), 'a');
    const child = spawn(cmd, args, {
      cwd: this.dir,
      env: this.env(),
      stdio: ['ignore', out, out],
      detached: true, // own process group, as the harness does
    });
    fs.closeSync(out);
    child.on('error', () => {}); // a missing binary shows as a start failure
    this.children.push(child);
    return child;
  }

  async start() {
    running.add(this);
    try {
      for (const exe of [CONTROLLER, ENGINE]) {
        if (!fs.existsSync(exe)) throw new Error(`missing binary ${exe} (run make)`);
      }
      this.controller = this.spawn(
        CONTROLLER,
        ['--port', '0', '--profile', this.profile, ...this.controllerArgs],
        'controller.log',
      );
      const clientFile = path.join(this.securityDir, 'ippc-client.json');
      const engineFile = path.join(this.securityDir, 'ippc-engine.json');
      const deadline = Date.now() + 30000;
      let info = null;
      while (!(info = readJson(clientFile)) || !readJson(engineFile)) {
        if (this.controller.exitCode !== null) {
          throw new Error(`ippc-controller exited (${this.controller.exitCode})\n${this.logs()}`);
        }
        if (Date.now() > deadline) throw new Error(`no connection file\n${this.logs()}`);
        await sleep(50);
      }
      this.url = info.url;
      this.token = info.token;
      this.mpiexec = this.spawn(
        MPIEXEC,
        ['-n', String(this.n), ENGINE, '--file', engineFile, ...this.engineArgs],
        'engines.log',
      );
      await this.waitEngines(this.n);
      return this;
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  /** GET with the token; the parsed JSON body. */
  async api(pathname) {
    const res = await fetch(this.url + pathname, {
      headers: { Authorization: `Bearer ${this.token}` },
    });
    return res.json();
  }

  async liveEngines() {
    const body = await this.api('/api/v1/engines');
    return (body.engines || []).filter((e) => e.state !== 'dead');
  }

  async waitEngines(n, ms = START_TIMEOUT_MS) {
    const deadline = Date.now() + ms;
    let last = null;
    while (Date.now() < deadline) {
      try {
        last = await this.liveEngines();
        if (last.length >= n) {
          for (const e of last) if (!this.enginePids.includes(e.pid)) this.enginePids.push(e.pid);
          return last;
        }
      } catch (e) {
        last = e;
      }
      await sleep(200);
    }
    throw new Error(`${n} engines did not register: ${JSON.stringify(last)}\n${this.logs()}`);
  }

  /**
   * Waits until no request is open and no task queued or running, so a test
   * does not hand its leftovers to the next.  Returns null or the problem.
   */
  async settle(ms = 30000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const info = await this.api('/api/v1/info');
      const queue = await this.api('/api/v1/queue');
      const busy = Object.values(queue.engines || {}).some((q) => q.queued || q.running);
      if (!busy && !queue.unassigned && !info.requests_open) return null;
      if (Date.now() > deadline) return `still busy: ${JSON.stringify({ info, queue })}`;
      await sleep(100);
    }
  }

  logs(limit = 3000) {
    return ['controller.log', 'engines.log']
      .map((f) => {
        let text = '';
        try {
          text = fs.readFileSync(path.join(this.dir, f), 'utf8');
        } catch {
          /* not written */
        }
        return `--- ${f} (tail) ---\n${text.slice(-limit)}`;
      })
      .join('\n');
  }

  ours() {
    const pids = new Set([...this.enginePids, ...pidsWithMarker(this.dir)]);
    for (const c of this.children) if (c.pid && c.exitCode === null) pids.add(c.pid);
    return [...pids].filter(alive);
  }

  /**
   * Stops everything; returns a list of problems (empty when clean): a
   * controller that exited non-zero on SIGTERM, processes that needed
   * SIGKILL.
   */
  async stop() {
    const problems = [];
    const exited = (child) =>
      child.exitCode !== null || child.signalCode !== null
        ? Promise.resolve()
        : new Promise((r) => child.once('exit', r));
    if (this.controller && this.controller.exitCode === null && this.controller.signalCode === null) {
      signal(this.controller.pid, 'SIGTERM');
      const done = await Promise.race([exited(this.controller).then(() => true), unrefSleep(15000)]);
      if (!done) problems.push('controller ignored SIGTERM for 15 s');
      else if (this.controller.exitCode !== 0) {
        problems.push(`controller exited with ${this.controller.exitCode ?? this.controller.signalCode}`);
      }
    }
    if (this.mpiexec) await Promise.race([exited(this.mpiexec), unrefSleep(10000)]);
    let left = this.ours();
    for (const pid of left) signal(pid, 'SIGTERM');
    left = await waitGone(left, 5000);
    if (left.length) {
      problems.push(`had to SIGKILL ${left.join(', ')}`);
      for (const pid of left) signal(pid, 'SIGKILL');
      await waitGone(left, 5000);
    }
    const log = this.logs(1e9);
    for (const mark of ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:']) {
      if (log.includes(mark)) problems.push(`sanitizer report in the logs:\n${log}`);
    }
    if (this.ours().length === 0 && !process.env.IPPC_TEST_KEEP) {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
    running.delete(this);
    return problems;
  }

  /** Synchronous SIGKILL of everything (the exit and signal handlers). */
  killNow() {
    for (const pid of this.ours()) signal(pid, 'SIGKILL');
    if (!process.env.IPPC_TEST_KEEP) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
