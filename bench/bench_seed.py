#!/usr/bin/python3
"""bench_seed.py — end-to-end figures of one ippc cluster: a controller plus
`mpiexec.mpich -n 4` engines, driven over REST on keep-alive connections.

    BUILD=build /usr/bin/python3 bench/bench_seed.py      (what `make bench` runs)

Standard library only.  Measures, and prints one line per figure (medians over
repeated runs, and the ratio to a baseline where there is one):

  (a) blocking execute of `x=1` on all 4 engines: median and p90 over 200 runs;
  (b) GET /api/v1/info, the REST floor (nothing reaches an engine): execute/info;
      and execute on a new connection per request: new/keep-alive;
      push of [1,2,3] (JSON + one binary frame) vs a scalar (JSON only);
  (c) scatter of 1e6 float64 sent as a typed base64 array, and gather back with
      ?format=typed: MB/s of array data (8 MB each way);
  (d) PUT of a 1e6-element variable as a JSON list vs as typed base64: list/typed;
  (e) the seed sequence (run psum.lua, scatter 0..15, execute psum, pull) end
      to end, median over 20, against 4 blocking execute round trips;
  (f) the same with Python engines (a second cluster, --runtime python): the
      seed's own psum.py and arange(16.0), against (e).

Everything it starts runs in its own session and is stopped at the end, also
on errors and SIGTERM/SIGINT: the controller by SIGTERM (it tells the engines
to shut down), the mpiexec process group by SIGTERM, and the engine pids that
/api/v1/engines reported (SIGKILL to mpiexec would leave ranks running, see
PLATFORM.md).  The whole run is bounded (BENCH_BUDGET seconds, default 100).

Environment: BUILD (build folder, default "build"), IPPC_BENCH_MPIEXEC
(default mpiexec.mpich), BENCH_ENGINES (default 4), BENCH_BUDGET,
BENCH_KEEP=1 keeps the temp folder (logs).
"""

import array
import base64
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD), "bin")
CONTROLLER = os.path.join(BIN, "ippc-controller")
ENGINE = os.path.join(BIN, "ippc-engine")
MPIEXEC = os.environ.get("IPPC_BENCH_MPIEXEC", "mpiexec.mpich")
N_ENGINES = int(os.environ.get("BENCH_ENGINES", "4"))
BUDGET = float(os.environ.get("BENCH_BUDGET", "100"))
PSUM = os.path.join(ROOT, "examples", "psum.lua")
PSUM_PY = os.path.join(ROOT, "examples", "psum.py")

START = time.monotonic()


class BenchError(Exception):
    pass


class Stop(BaseException):
    """Raised by the SIGTERM/SIGINT handler so that cleanup runs."""


def log(msg):
    print("[%5.1fs] %s" % (time.monotonic() - START, msg), file=sys.stderr, flush=True)


def left():
    return BUDGET - (time.monotonic() - START)


# ------------------------------------------------------------------ statistics

def median(xs):
    return statistics.median(xs)


def pct(xs, p):
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k]


def ms(seconds):
    return "%.2f ms" % (seconds * 1e3)


# ------------------------------------------------------------------ HTTP

class Client:
    """One keep-alive HTTP/1.1 connection with the bearer token."""

    def __init__(self, url, token, timeout=60):
        rest = url.split("://", 1)[1].rstrip("/")
        host, _, port = rest.partition(":")
        self.host, self.port = host, int(port or 80)
        self.headers = {"Authorization": "Bearer " + token}
        self.timeout = timeout
        self.conn = None
        self.connect()

    def connect(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.connect()

    def raw(self, method, path, body=None):
        """Sends one request; returns (status, body bytes).  body: bytes or
        str, sent as application/json."""
        headers = dict(self.headers)
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (http.client.HTTPException, OSError):
            # The server may close an idle keep-alive connection: retry once.
            self.connect()
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            self.connect()
        return resp.status, data

    def json(self, method, path, body=None, want=200):
        status, data = self.raw(method, path, body)
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            doc = None
        if status != want:
            raise BenchError("%s %s -> HTTP %d: %s" % (method, path, status, data[:500]))
        return doc

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def expect_ok(doc, what):
    if not isinstance(doc, dict) or doc.get("status") != "ok":
        raise BenchError("%s: not ok: %s" % (what, json.dumps(doc)[:800]))
    return doc


# ------------------------------------------------------------------ processes

def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2] not in "ZX"
    except (OSError, ValueError, IndexError):
        return False


def signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while True:
        still = [p for p in pids if alive(p)]
        if not still or time.monotonic() >= deadline:
            return still
        time.sleep(0.05)


def wait_json_file(path, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError("ippc-controller exited (%s) before writing %s"
                             % (proc.returncode, path))
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.05)
    raise BenchError("%s not written within %.0f s" % (path, timeout))


class Cluster:
    def __init__(self, engine_args=()):
        self.engine_args = list(engine_args)
        self.dir = tempfile.mkdtemp(prefix="ippc-bench-")
        self.controller = None
        self.mpiexec = None
        self.engine_pids = set()
        self.client = None
        self.info = None

    def env(self):
        env = dict(os.environ)
        env["IPPC_DIR"] = self.dir
        return env

    def start(self):
        for exe in (CONTROLLER, ENGINE):
            if not os.access(exe, os.X_OK):
                raise BenchError("missing %s (run make all)" % exe)
        out = open(os.path.join(self.dir, "controller.log"), "ab")
        self.controller = subprocess.Popen(
            [CONTROLLER, "--port", "0", "--profile", "bench"], env=self.env(), cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        sec = os.path.join(self.dir, "profile_bench", "security")
        self.info = wait_json_file(os.path.join(sec, "ippc-client.json"), self.controller, 20)
        engine_file = os.path.join(sec, "ippc-engine.json")
        wait_json_file(engine_file, self.controller, 20)
        out = open(os.path.join(self.dir, "engines.log"), "ab")
        self.mpiexec = subprocess.Popen(
            [MPIEXEC, "-n", str(N_ENGINES), ENGINE, "--file", engine_file] + self.engine_args,
            env=self.env(),
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        self.client = Client(self.info["url"], self.info["token"])
        t0 = time.monotonic()
        while True:
            engines = self.client.json("GET", "/api/v1/engines")["engines"]
            for e in engines:
                if isinstance(e.get("pid"), int):
                    self.engine_pids.add(e["pid"])
            live = [e for e in engines if e.get("state") in ("idle", "busy")]
            if len(live) >= N_ENGINES:
                log("%d engines live after %.2f s at %s"
                    % (len(live), time.monotonic() - t0, self.info["url"]))
                return
            if self.mpiexec.poll() is not None:
                raise BenchError("mpiexec exited (%s) before %d engines registered; see %s"
                                 % (self.mpiexec.returncode, N_ENGINES, self.dir))
            if time.monotonic() - t0 > 30:
                raise BenchError("only %d of %d engines live after 30 s" % (len(live), N_ENGINES))
            time.sleep(0.05)

    def stop(self):
        """Stops everything; returns the pids that survived (should be none)."""
        if self.client is not None:
            try:
                for e in self.client.json("GET", "/api/v1/engines")["engines"]:
                    if isinstance(e.get("pid"), int):
                        self.engine_pids.add(e["pid"])
            except (BenchError, OSError, http.client.HTTPException, ValueError, KeyError):
                pass
            self.client.close()
        ours = []
        if self.controller is not None:
            ours.append(self.controller.pid)
            if self.controller.poll() is None:
                signal_pid(self.controller.pid, signal.SIGTERM)
        if self.mpiexec is not None:
            ours.append(self.mpiexec.pid)
            if self.mpiexec.poll() is None:
                try:
                    os.killpg(self.mpiexec.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        pids = ours + sorted(self.engine_pids)
        for pid in self.engine_pids:
            signal_pid(pid, signal.SIGTERM)
        still = wait_gone(pids, 5)
        for pid in still:
            signal_pid(pid, signal.SIGKILL)
        if self.mpiexec is not None and self.mpiexec.poll() is None:
            try:
                os.killpg(self.mpiexec.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in (self.controller, self.mpiexec):
            if p is not None:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        survivors = wait_gone(pids, 3)
        if os.environ.get("BENCH_KEEP"):
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return still, survivors


# ------------------------------------------------------------------ figures

def timed(fn, n, warmup=0):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_execute_and_info(c):
    body = json.dumps({"code": "x=1"})
    expect_ok(c.json("POST", "/api/v1/views/all/execute", body), "execute x=1")

    def execute():
        status, data = c.raw("POST", "/api/v1/views/all/execute", body)
        if status != 200:
            raise BenchError("execute: HTTP %d %s" % (status, data[:300]))

    def info():
        status, _ = c.raw("GET", "/api/v1/info")
        if status != 200:
            raise BenchError("info: HTTP %d" % status)

    def execute_new_connection():
        conn = http.client.HTTPConnection(c.host, c.port, timeout=c.timeout)
        headers = dict(c.headers, Connection="close")
        headers["Content-Type"] = "application/json"
        conn.request("POST", "/api/v1/views/all/execute", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 200:
            raise BenchError("execute (new connection): HTTP %d" % resp.status)

    ex = timed(execute, 200, warmup=20)
    inf = timed(info, 500, warmup=50)
    fresh = timed(execute_new_connection, 50, warmup=5)
    print("execute all (%d engines): median %s, p90 %s  (200 runs, keep-alive)"
          % (N_ENGINES, ms(median(ex)), ms(pct(ex, 90))))
    print("GET /api/v1/info (REST floor): median %s, p90 %s  (500 runs)"
          % (ms(median(inf)), ms(pct(inf, 90))))
    print("  execute / info: %.1fx" % (median(ex) / median(inf)))
    print("execute all, new connection per request: median %s, p90 %s  (50 runs)"
          % (ms(median(fresh)), ms(pct(fresh, 90))))
    print("  new connection / keep-alive: %.1fx" % (median(fresh) / median(ex)))
    return median(ex)


def bench_small_blob(c):
    """A 3-element array travels as JSON + one binary WebSocket frame; a scalar
    as JSON only.  Both should cost about one execute: a large ratio means the
    second frame waits (e.g. Nagle + delayed ACK on the engine socket)."""
    def put(path, body):
        def run():
            status, out = c.raw("PUT", path, body)
            if status != 200:
                raise BenchError("push: HTTP %d %s" % (status, out[:300]))
        return run

    scalar = timed(put("/api/v1/views/all/vars/s", "5"), 30, warmup=3)
    small = timed(put("/api/v1/views/all/vars/v", "[1,2,3]"), 30, warmup=3)
    print("push scalar (JSON frame only): median %s; push [1,2,3] (+1 binary frame): median %s"
          % (ms(median(scalar)), ms(median(small))))
    print("  small array / scalar: %.1fx" % (median(small) / median(scalar)))


N_BIG = 1000000


def bench_scatter_gather(c, reps):
    data = array.array("d", (i * 0.5 for i in range(N_BIG)))
    raw = data.tobytes()
    typed = {"dtype": "float64", "shape": [N_BIG], "data": base64.b64encode(raw).decode()}
    body = json.dumps({"name": "big", "data": typed}).encode()
    mb = len(raw) / 1e6

    # One checked round trip first: the gathered bytes must be the sent ones.
    expect_ok(c.json("POST", "/api/v1/views/all/scatter", body), "scatter 1e6")
    doc = expect_ok(c.json("GET", "/api/v1/views/all/gather/big?format=typed"), "gather 1e6")
    res = doc.get("result") or {}
    if res.get("dtype") != "float64" or res.get("shape") != [N_BIG] or \
            base64.b64decode(res.get("data", "")) != raw:
        raise BenchError("gather did not give back the scattered array")

    def scatter():
        status, out = c.raw("POST", "/api/v1/views/all/scatter", body)
        if status != 200:
            raise BenchError("scatter: HTTP %d %s" % (status, out[:300]))

    def gather():
        status, out = c.raw("GET", "/api/v1/views/all/gather/big?format=typed")
        if status != 200:
            raise BenchError("gather: HTTP %d %s" % (status, out[:300]))

    sc = timed(scatter, reps)
    ga = timed(gather, reps)
    print("scatter 1e6 float64 (typed base64, %.1f MB body) over %d: median %s = %.0f MB/s"
          % (len(body) / 1e6, N_ENGINES, ms(median(sc)), mb / median(sc)))
    print("gather  1e6 float64 (?format=typed): median %s = %.0f MB/s  (%d runs each)"
          % (ms(median(ga)), mb / median(ga), reps))
    print("  scatter+gather round trip: %.0f MB/s" % (2 * mb / (median(sc) + median(ga))))
    return raw


def bench_push_list_vs_typed(c, raw, reps):
    values = array.array("d")
    values.frombytes(raw)
    list_body = json.dumps(values.tolist()).encode()
    typed_body = json.dumps({"dtype": "float64", "shape": [N_BIG],
                             "data": base64.b64encode(raw).decode()}).encode()
    expect_ok(c.json("PUT", "/api/v1/views/all/vars/pl", list_body), "push list")
    expect_ok(c.json("PUT", "/api/v1/views/all/vars/pt", typed_body), "push typed")

    def put(path, body):
        def run():
            status, out = c.raw("PUT", path, body)
            if status != 200:
                raise BenchError("push: HTTP %d %s" % (status, out[:300]))
        return run

    lt = timed(put("/api/v1/views/all/vars/pl", list_body), reps)
    tt = timed(put("/api/v1/views/all/vars/pt", typed_body), reps)
    print("push 1e6 float64 as JSON list (%.1f MB): median %s"
          % (len(list_body) / 1e6, ms(median(lt))))
    print("push 1e6 float64 as typed base64 (%.1f MB): median %s  (%d runs each)"
          % (len(typed_body) / 1e6, ms(median(tt)), reps))
    print("  list / typed: %.1fx" % (median(lt) / median(tt)))


def bench_seed(c, execute_median, reps, python=False):
    """The seed sequence; returns its median.  python: psum.py, arange(16.0)
    and [120.0] * 4 on Python engines."""
    with open(PSUM_PY if python else PSUM) as f:
        run_body = json.dumps({"filename": "psum.py" if python else "psum.lua",
                               "source": f.read()})
    data = [float(i) for i in range(16)] if python else list(range(16))
    scatter_body = json.dumps({"name": "a", "data": data})
    want = [120.0 if python else 120] * N_ENGINES
    exec_body = json.dumps({"code": "totalsum = psum(a)"})

    steps = {"run": [], "scatter": [], "execute": [], "pull": []}

    def step(name, method, path, body=None):
        t0 = time.perf_counter()
        doc = expect_ok(c.json(method, path, body), name)
        steps[name].append(time.perf_counter() - t0)
        return doc

    def seed():
        step("run", "POST", "/api/v1/views/all/run", run_body)
        step("scatter", "POST", "/api/v1/views/all/scatter", scatter_body)
        step("execute", "POST", "/api/v1/views/all/execute", exec_body)
        doc = step("pull", "GET", "/api/v1/views/all/vars/totalsum")
        if doc.get("results") != want:
            raise BenchError("totalsum: %s" % doc.get("results"))

    seed()  # warm-up, not counted
    for v in steps.values():
        v.clear()
    t = timed(seed, reps)
    print("seed sequence%s (run, scatter, execute psum, pull): median %s, p90 %s  (%d runs)"
          % (" in Python" if python else "", ms(median(t)), ms(pct(t, 90)), reps))
    print("  steps (medians): " + ", ".join("%s %s" % (k, ms(median(v)))
                                             for k, v in steps.items()))
    print("  seed / (4 x execute x=1): %.1fx" % (median(t) / (4 * execute_median)))
    return median(t)


def bench_seed_python(lua_seed):
    """(f): a second cluster of Python engines, the seed as written."""
    cluster = Cluster(["--runtime", "python"])
    try:
        cluster.start()
        c = cluster.client
        body = json.dumps({"code": "x = 1"})
        t = timed(lambda: expect_ok(c.json("POST", "/api/v1/views/all/execute", body),
                                    "execute x = 1 in Python"), 50, warmup=3)
        print("execute x = 1 on %d Python engines: median %s" % (N_ENGINES, ms(median(t))))
        py_seed = bench_seed(c, median(t), 20, python=True)
        print("  seed in Python / seed in Lua: %.1fx" % (py_seed / lua_seed))
        return 0
    finally:
        forced, survivors = cluster.stop()
        if survivors:
            print("bench: Python engines still alive after SIGKILL: %s" % survivors,
                  file=sys.stderr)


# ------------------------------------------------------------------ main

def on_signal(signum, frame):
    raise Stop("signal %d" % signum)


def main():
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(BUDGET) + 15)  # a hung request cannot outlive the budget
    cluster = Cluster()
    rc = 0
    try:
        cluster.start()
        c = cluster.client
        print("ippc bench: %d engines (mpiexec.mpich), controller at %s, %d CPUs"
              % (N_ENGINES, cluster.info["url"], os.cpu_count() or 0))
        execute_median = bench_execute_and_info(c)
        bench_small_blob(c)
        reps = 5 if left() > 60 else 3
        raw = bench_scatter_gather(c, reps)
        if left() > 30:
            bench_push_list_vs_typed(c, raw, reps)
        else:
            print("push list vs typed: skipped (time budget)")
        if left() > 10:
            lua_seed = bench_seed(c, execute_median, 20)
            if left() > 10:
                rc = bench_seed_python(lua_seed)
            else:
                print("seed sequence in Python: skipped (time budget)")
        else:
            print("seed sequence: skipped (time budget)")
    except (BenchError, OSError, http.client.HTTPException) as e:
        print("bench failed: %s" % e, file=sys.stderr)
        rc = 1
    except Stop as e:
        print("bench interrupted (%s)" % e, file=sys.stderr)
        rc = 130
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        forced, survivors = cluster.stop()
        if survivors:
            print("bench: processes still alive after SIGKILL: %s" % survivors, file=sys.stderr)
            rc = rc or 1
        else:
            print("stopped controller, mpiexec and %d engine pids%s; no process left"
                  % (len(cluster.engine_pids), " (%d needed SIGKILL)" % len(forced)
                     if forced else ""))
        print("total %.1f s" % (time.monotonic() - START))
    return rc


if __name__ == "__main__":
    sys.exit(main())
