#!/usr/bin/python3
"""bench_peer.py — ippc side by side with IPython Parallel, in one run (issue 10, item 6).

    BUILD=build /usr/bin/python3 bench/bench_peer.py [--smoke] [--json PATH]
    BUILD=build /usr/bin/python3 bench/bench_peer.py --perf [--json PATH]

Starts an ippc cluster (ippc-controller + `mpiexec.mpich -n 4 ippc-engine`, via
tests/integration/harness.py) and, when Debian's python3-ipyparallel and
python3-numpy import, an IPython Parallel cluster of 4 local engines
(`ipp.Cluster(n=4)`: ipcontroller + 4 ipengines, in a private IPYTHONDIR), and runs
the same workloads on both, alternating (per repetition and workload: ippc then IPP,
the next repetition IPP then ippc).  Every figure is the median over repetitions:

  start-up          from launch until all 4 engines are registered (s)
  apply round trip  one engine: ippc POST /views/0/apply of a Lua function;
                    IPP view.apply_sync of a Python function (ms; median of many)
  execute on all    ippc POST /views/all/execute `x = 1`; IPP dview.execute (ms)
  tiny tasks        N no-op load-balanced tasks: ippc one POST /api/v1/tasks with a
                    list of N; IPP N lview.apply_async calls; until all are done (tasks/s)
  map               N items, chunksize 1 on both (the default of both) (items/s)
  push to all       float64 array to all 4: ippc PUT /views/all/vars/a, raw
                    application/octet-stream; IPP dview.push({'a': ndarray})
  pull from all     ippc: 4 raw GETs (one per engine, Accept: application/octet-stream,
                    in parallel on 4 keep-alive connections), one GET /views/all/vars/a
                    ?format=typed (base64 in JSON, decoded), and one GET with
                    Accept: multipart/mixed (one binary part per engine,
                    docs/binary.md; skipped by a controller that does not offer
                    it); IPP dview.pull('a')
  scatter / gather  1e7 float64: ippc raw body / raw answer; IPP dview.scatter/gather
  memory            PSS (/proc/PID/smaps_rollup) of the controller (its process and
                    any children: IPP's schedulers) and of the 4 engines summed, idle
                    (after warm-up) and after the data workloads

Payload is counted as IPython Parallel's own benchmarks count it: push/pull to all
= 4 x array bytes; scatter/gather = array bytes.  MB = 10^6 bytes.

Limits measured in the same run, before the clusters start, for the same byte
counts (C programs in $BUILD/bench/): bench_loopback (one TCP stream over
127.0.0.1 between two threads, and memcpy into a reused buffer) and
bench_mpi_bcast (MPI_Ibcast among 4 ranks with a yielding wait).  Each ippc data
figure is also printed as a share of one loopback stream: "link share" = (array
bytes / ippc seconds) / loopback MB/s for the same bytes.  For push/pull to all
that is the payload MB/s per controller<->engine link (payload / 4 links); for
scatter/gather the client<->controller link, which carries the whole array.

Output: one table on stdout and the same as JSON (--json, default
$BUILD/bench/peer.json; --smoke writes $BUILD/bench/peer-smoke.json).  Without
IPython Parallel (or NumPy) the ippc half runs and the table says "not installed".
--smoke: tiny sizes, one repetition, for tests/integration/test_bench_smoke.py.
--perf: ippc only; `perf record -g` on the controller during rounds of 1e7 push
+ 4 raw pulls, then the top symbols (perf report, self time).  Pulled arrays are
compared with the pushed ones (and gathers with scatters) on both sides; a
mismatch is recorded in the JSON "checks" and makes the exit status 1.

Everything started is stopped at the end (also on errors, SIGTERM/SIGINT and the
time budget): the ippc cluster by harness.Cluster.stop(); IPython Parallel by
stop_cluster_sync(), then every process that carries this run's marker in its
environment is signalled by pid (SIGTERM, then SIGKILL).

Before every timed data operation (push, each pull, scatter, gather) of either side,
the run waits until the machine is quiet — under 15 % of its CPUs busy over 100 ms, at
most 5 s — so one side's clean-up (IPython Parallel's garbage collection, ippc's
engines freeing arrays, the checks of the last answer) is not timed against the other.

Environment: BUILD, BENCH_PEER_REPS (repetitions, default 3), BENCH_PEER_BUDGET
(seconds, default 900; the run stops itself after it), BENCH_KEEP=1 (keep temp
folders), BENCH_PEER_IPPC_ARGS (more ippc-controller options, split on spaces, e.g.
--no-fanout), BENCH_PEER_DATA_ONLY=1 (only the data workloads and memory, one
start-up each).  BLAS/OpenMP threads are set to 1 for every process started.
"""

import base64
import concurrent.futures
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# One BLAS/OpenMP thread per process, for numpy here and in every engine started.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
BUILD_DIR = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
BENCH_BIN = os.path.join(BUILD_DIR, "bench")
MPIEXEC = os.environ.get("IPPC_BENCH_MPIEXEC", "mpiexec.mpich")

SMOKE = "--smoke" in sys.argv
PERF = "--perf" in sys.argv
if SMOKE:
    CFG = dict(n_small=1000, n_large=20000, reps=1, rtt_runs=5, tasks=100, map_n=100,
               startup_reps=1, limit_reps=1, budget=150)
else:
    CFG = dict(n_small=10 ** 6, n_large=10 ** 7, reps=3, rtt_runs=200, tasks=10000,
               map_n=10000, startup_reps=3, limit_reps=5, budget=900)
CFG["reps"] = int(os.environ.get("BENCH_PEER_REPS", CFG["reps"]))
# Only the data workloads (push, pull, scatter, gather) and memory; one start-up.
DATA_ONLY = os.environ.get("BENCH_PEER_DATA_ONLY") == "1"
if DATA_ONLY:
    CFG["startup_reps"] = 1
CFG["budget"] = float(os.environ.get("BENCH_PEER_BUDGET", CFG["budget"]))

# The ippc controller: --db memory (IPython Parallel's default hub store is in
# memory too).  Raw array bodies have their own limit, --max-raw-mb (8 GiB by
# default), so an 80 MB raw body needs no option.
IPPC_CONTROLLER_ARGS = ["--db", "memory"]
# More controller options for a run, e.g. BENCH_PEER_IPPC_ARGS=--no-fanout to measure
# the per-engine data path beside the fanned-out one (bench/NOTES.md).
IPPC_CONTROLLER_ARGS += os.environ.get("BENCH_PEER_IPPC_ARGS", "").split()

START = time.monotonic()


def log(msg):
    print("[%6.1fs] %s" % (time.monotonic() - START, msg), file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class Stop(BaseException):
    pass


def _ipp_available():
    try:
        import numpy  # noqa: F401
        import ipyparallel  # noqa: F401
    except ImportError as e:
        return None, "not installed (%s; scripts/install-deps bench)" % e
    return ipyparallel.__version__, None


# ---------------------------------------------------------------- small helpers

def cpu_busy_fraction(seconds):
    """Share of all CPUs busy over `seconds` (/proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def settle(limit=5.0):
    """Waits until the machine is quiet (see the top), at most `limit` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and cpu_busy_fraction(0.1) > 0.15:
        pass


def median(xs):
    return statistics.median(xs)


def pss_mb(pids):
    """Sum of PSS over pids (MB = 10^6 bytes); a vanished pid counts 0."""
    total_kb = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return total_kb * 1024 / 1e6


def tree(pid):
    return {pid} | harness.descendants([pid])


def make_array(n):
    """n float64 as (bytes, numpy array or None)."""
    try:
        import numpy as np
        a = np.arange(n, dtype=np.float64) * 0.5 + 1.0
        return a.tobytes(), a
    except ImportError:
        import array
        a = array.array("d", (i * 0.5 + 1.0 for i in range(n)))
        return a.tobytes(), None


# ---------------------------------------------------------------- HTTP for ippc

class Http:
    """One keep-alive HTTP/1.1 connection to the controller, with the token."""

    def __init__(self, url, token, timeout=300):
        host, _, port = url.split("://", 1)[1].rstrip("/").partition(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self.auth = "Bearer " + token
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """Returns (status, headers as a lower-case dict, body bytes)."""
        hdrs = {"Authorization": self.auth}
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # an idle keep-alive connection the server closed: once more
                self.close()
                if attempt:
                    raise
        rh = {k.lower(): v for k, v in resp.getheaders()}
        if rh.get("connection", "").lower() == "close":
            self.close()
        return resp.status, rh, data

    def json(self, method, path, body=None, want=200, headers=None):
        status, _, data = self.request(method, path, body, headers)
        if status != want:
            raise BenchError("%s %s -> HTTP %d: %s" % (method, path, status, data[:400]))
        doc = json.loads(data) if data else None
        if isinstance(doc, dict) and doc.get("status") not in (None, "ok"):
            raise BenchError("%s %s: %s" % (method, path, data[:400]))
        return doc

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class FastApi(harness.Api):
    """harness.Api polling for engines every 20 ms (start-up is timed with it)."""

    def wait_engines(self, n, timeout=harness.START_TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                live = self.live_engines()
                if len(live) >= n:
                    return live
            except (harness.HarnessError, OSError):
                pass
            time.sleep(0.02)
        raise harness.HarnessError("%d engines did not register within %.0f s" % (n, timeout))


class PeerCluster(harness.Cluster):
    def _start_controller(self):
        super()._start_controller()
        self.api = FastApi(self.api.url, self.api.token)


def parse_multipart(content_type, data):
    """Bodies of a multipart/mixed answer of ippc, in order, as memoryviews of data
    (no copies): each part is found by its Content-Length, as a client in a hurry
    reads them (docs/binary.md); the delimiters are checked on the way."""
    boundary = None
    for part in content_type.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if not boundary:
        raise BenchError("multipart answer without a boundary: %s" % content_type)
    delim = b"--" + boundary.encode()
    view = memoryview(data)
    bodies, pos = [], 0
    while True:
        if not data.startswith(delim, pos):
            raise BenchError("malformed multipart answer: no delimiter at %d" % pos)
        pos += len(delim)
        if data.startswith(b"--", pos):
            return bodies
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise BenchError("malformed multipart answer: a part without headers")
        length = None
        for line in data[pos:head_end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise BenchError("malformed multipart answer: a part without Content-Length")
        bodies.append(view[head_end + 4:head_end + 4 + length])
        pos = head_end + 4 + length
        if not data.startswith(b"\r\n", pos):
            raise BenchError("malformed multipart answer: no CRLF after a part")
        pos += 2


# ---------------------------------------------------------------- ippc side

class IppcSide:
    name = "ippc"

    def __init__(self):
        self.cluster = None
        self.http = None
        self.pullers = []
        self.pool = None
        self.ids = []
        self.multipart = False
        self.startup = None

    def start(self):
        t0 = time.perf_counter()
        self.cluster = PeerCluster(n=4, profile="peer", controller_args=IPPC_CONTROLLER_ARGS)
        self.cluster.start()
        self.startup = time.perf_counter() - t0
        api = self.cluster.api
        self.http = Http(api.url, api.token)
        self.ids = self.cluster.ids()
        self.pullers = [Http(api.url, api.token) for _ in self.ids]
        self.pool = concurrent.futures.ThreadPoolExecutor(len(self.ids))
        self.http.json("POST", "/api/v1/views/all/execute",
                       {"code": "function f(x) return x end\nfunction noop(x) return x end"})
        return self.startup

    def stop(self):
        for h in [self.http] + self.pullers:
            if h is not None:
                h.close()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        return self.cluster.stop() if self.cluster is not None else []

    def controller_pids(self):
        return tree(self.cluster.controller.pid)

    def engine_pids(self):
        return set(self.cluster.engine_pids.values())

    def other_pids(self):
        """mpiexec and its hydra proxies."""
        out = set()
        for p in self.cluster.mpiexecs:
            out |= tree(p.pid)
        return out - self.engine_pids()

    # --- workloads: each returns its figure's raw measurement
    def apply_rtt(self, runs):
        body = json.dumps({"function": "f", "args": [1]}).encode()
        hdr = {"Content-Type": "application/json"}
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            status, _, data = self.http.request("POST", "/api/v1/views/0/apply", body, hdr)
            times.append(time.perf_counter() - t0)
            if status != 200 or json.loads(data)["results"][0].get("value") != 1:
                raise BenchError("apply: HTTP %d %s" % (status, data[:300]))
        return median(times)

    def execute_all(self, runs):
        body = json.dumps({"code": "x = 1"}).encode()
        hdr = {"Content-Type": "application/json"}
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            status, _, data = self.http.request("POST", "/api/v1/views/all/execute", body, hdr)
            times.append(time.perf_counter() - t0)
            if status != 200:
                raise BenchError("execute: HTTP %d %s" % (status, data[:300]))
        return median(times)

    def _queue_completed(self):
        q = self.http.json("GET", "/api/v1/queue")
        busy = q.get("unassigned", 0) + sum(e.get("queued", 0) + e.get("running", 0)
                                            for e in q["engines"].values())
        return busy, sum(e.get("completed", 0) for e in q["engines"].values())

    def tasks(self, n):
        _, before = self._queue_completed()
        body = json.dumps([{"function": "noop", "args": [i]} for i in range(n)]).encode()
        t0 = time.perf_counter()
        status, _, data = self.http.request("POST", "/api/v1/tasks", body,
                                            {"Content-Type": "application/json"})
        if status != 202:
            raise BenchError("POST /api/v1/tasks (%d): HTTP %d %s" % (n, status, data[:300]))
        ids = json.loads(data)["ids"]
        deadline = time.monotonic() + 300
        while True:
            busy, done = self._queue_completed()
            if not busy and done - before >= n:
                break
            if time.monotonic() > deadline:
                raise BenchError("tasks not done after 300 s: %d of %d" % (done - before, n))
            time.sleep(0.002)
        dt = time.perf_counter() - t0
        for k in sorted({0, n // 2, n - 1}):
            doc = self.http.json("GET", "/api/v1/tasks/%d" % ids[k])
            if doc.get("state") != "completed" or doc.get("result") != k:
                raise BenchError("task %d: %s" % (ids[k], json.dumps(doc)[:300]))
        return n / dt

    def map(self, n):
        items = list(range(n))
        body = json.dumps({"function": "noop", "sequences": [items], "chunksize": 1}).encode()
        t0 = time.perf_counter()
        status, _, data = self.http.request("POST", "/api/v1/map", body,
                                            {"Content-Type": "application/json"})
        dt = time.perf_counter() - t0
        if status != 200 or json.loads(data).get("results") != items:
            raise BenchError("map: HTTP %d %s" % (status, data[:300]))
        return n / dt

    def push(self, name, raw, n):
        t0 = time.perf_counter()
        self.http.json("PUT", "/api/v1/views/all/vars/%s?dtype=float64&shape=%d" % (name, n),
                       raw, headers={"Content-Type": "application/octet-stream"})
        return time.perf_counter() - t0

    def _raw_get(self, h, path):
        status, hdrs, data = h.request("GET", path, headers={"Accept": "application/octet-stream"})
        if status != 200 or not hdrs.get("content-type", "").startswith("application/octet"):
            raise BenchError("GET %s -> HTTP %d %s" % (path, status, data[:300]))
        return data

    def pull_raw(self, name):
        """4 raw GETs in parallel; returns (seconds, [bytes per engine])."""
        t0 = time.perf_counter()
        futs = [self.pool.submit(self._raw_get, h, "/api/v1/views/%d/vars/%s" % (i, name))
                for h, i in zip(self.pullers, self.ids)]
        arrays = [f.result() for f in futs]
        return time.perf_counter() - t0, arrays

    def pull_typed(self, name):
        t0 = time.perf_counter()
        doc = self.http.json("GET", "/api/v1/views/all/vars/%s?format=typed" % name)
        arrays = [base64.b64decode(r["data"]) for r in doc["results"]]
        return time.perf_counter() - t0, arrays

    def probe_multipart(self):
        """Does a pull from all answer multipart/mixed today?  Tried on a tiny value."""
        self.http.json("PUT", "/api/v1/views/all/vars/probe", [1.5, 2.5])
        status, hdrs, data = self.http.request("GET", "/api/v1/views/all/vars/probe",
                                               headers={"Accept": "multipart/mixed"})
        self.multipart = status == 200 and hdrs.get("content-type", "").startswith("multipart/")
        return self.multipart

    def pull_multipart(self, name):
        t0 = time.perf_counter()
        status, hdrs, data = self.http.request("GET", "/api/v1/views/all/vars/%s" % name,
                                               headers={"Accept": "multipart/mixed"})
        if status != 200:
            raise BenchError("multipart pull: HTTP %d %s" % (status, data[:300]))
        arrays = parse_multipart(hdrs.get("content-type", ""), data)
        return time.perf_counter() - t0, arrays

    def scatter(self, name, raw, n):
        t0 = time.perf_counter()
        self.http.json("POST", "/api/v1/views/all/scatter?name=%s&dtype=float64&shape=%d"
                       % (name, n), raw, headers={"Content-Type": "application/octet-stream"})
        return time.perf_counter() - t0

    def gather(self, name):
        t0 = time.perf_counter()
        data = self._raw_get(self.http, "/api/v1/views/all/gather/%s" % name)
        return time.perf_counter() - t0, data


# ---------------------------------------------------------------- IPython Parallel side

def _ipp_f(x):
    return x


def _ipp_noop(x):
    return x


class IppSide:
    name = "IPython Parallel"

    def __init__(self, base):
        self.base = base
        self.ipython_dir = os.path.join(base, "ipython")
        self.marker = os.path.join(base, "ipp-processes")   # in the env of what IPP starts
        self.tracker = harness.ProcessTracker(self.marker)
        self.cluster = None
        self.rc = None
        self.startup = None
        self.engine_pid_set = set()
        self.controller_pid = None

    def start(self):
        import ipyparallel as ipp
        import logging
        os.makedirs(self.ipython_dir, exist_ok=True)
        os.environ["IPPC_PEER_IPP_MARKER"] = self.marker
        try:
            t0 = time.perf_counter()
            self.cluster = ipp.Cluster(
                n=4, profile_dir=os.path.join(self.ipython_dir, "profile_peer"),
                log_level=logging.WARNING, shutdown_atexit=True)
            self.rc = self.cluster.start_and_connect_sync()
            self.rc.wait_for_engines(4, timeout=120, interactive=False)
            self.startup = time.perf_counter() - t0
        finally:
            del os.environ["IPPC_PEER_IPP_MARKER"]
        self.dv = self.rc[:]
        self.dv.block = True
        self.e0 = self.rc[self.rc.ids[0]]
        self.lv = self.rc.load_balanced_view()
        self.controller_pid = self.cluster.controller.pid
        self.engine_pid_set = set(self.dv.apply_sync(os.getpid))
        self.tracker.snapshot()
        return self.startup

    def stop(self):
        problems = []
        if self.rc is not None:
            try:
                self.rc.close()
            except Exception as e:  # closing sockets must not stop the cleanup
                problems.append("client close: %s" % e)
        if self.cluster is not None:
            done = threading.Event()

            def stop_cluster():
                try:
                    self.cluster.stop_cluster_sync()
                except Exception as e:
                    problems.append("stop_cluster_sync: %s" % e)
                done.set()

            threading.Thread(target=stop_cluster, daemon=True).start()
            if not done.wait(30):
                problems.append("stop_cluster_sync did not return within 30 s")
        # Whatever is left (engines that outlive their nanny for a moment, or
        # anything a failed stop left), by pid.
        left = harness.wait_gone(self.tracker.all_alive(), 10)
        if left:
            stubborn = self.tracker.kill_all(grace=5)
            if stubborn:
                problems.append("IPython Parallel processes needed SIGKILL: "
                                + harness.describe(stubborn))
        still = self.tracker.all_alive()
        if still:
            problems.append("IPython Parallel processes still alive: " + harness.describe(still))
        return problems

    def controller_pids(self):
        return tree(self.controller_pid)

    def engine_pids(self):
        return set(self.engine_pid_set)

    def other_pids(self):
        return self.tracker.all_alive() - self.controller_pids() - self.engine_pids()

    def apply_rtt(self, runs):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            r = self.e0.apply_sync(_ipp_f, 1)
            times.append(time.perf_counter() - t0)
            if r != 1:
                raise BenchError("IPP apply: %r" % r)
        return median(times)

    def execute_all(self, runs):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.dv.execute("x = 1", block=True)
            times.append(time.perf_counter() - t0)
        return median(times)

    def tasks(self, n):
        t0 = time.perf_counter()
        ars = [self.lv.apply_async(_ipp_noop, i) for i in range(n)]
        results = [ar.get(timeout=300) for ar in ars]
        dt = time.perf_counter() - t0
        if results != list(range(n)):
            raise BenchError("IPP tasks: wrong results")
        return n / dt

    def map(self, n):
        t0 = time.perf_counter()
        results = self.lv.map_sync(_ipp_noop, range(n), chunksize=1)
        dt = time.perf_counter() - t0
        if list(results) != list(range(n)):
            raise BenchError("IPP map: wrong results")
        return n / dt

    def push(self, name, arr, n):
        t0 = time.perf_counter()
        self.dv.push({name: arr}, block=True)
        return time.perf_counter() - t0

    def pull(self, name):
        t0 = time.perf_counter()
        arrays = self.dv.pull(name, block=True)
        return time.perf_counter() - t0, arrays

    def scatter(self, name, arr, n):
        t0 = time.perf_counter()
        self.dv.scatter(name, arr, block=True)
        return time.perf_counter() - t0

    def gather(self, name):
        t0 = time.perf_counter()
        arr = self.dv.gather(name, block=True)
        return time.perf_counter() - t0, arr


# ---------------------------------------------------------------- limits (C programs)

def run_limits(sizes, reps):
    """{bytes: {"loopback": doc, "memcpy": doc, "mpi_bcast": doc}} from the C programs."""
    out = {b: {} for b in sizes}
    problems = []
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
    progs = [
        ([os.path.join(BENCH_BIN, "bench_loopback")], "bench_loopback"),
        ([MPIEXEC, "-n", "4", os.path.join(BENCH_BIN, "bench_mpi_bcast")], "bench_mpi_bcast"),
    ]
    for cmd, name in progs:
        if not os.access(cmd[-1], os.X_OK):
            problems.append("%s not built (make bench builds it)" % cmd[-1])
            continue
        env["MPIEXEC_TIMEOUT"] = "120"
        try:
            p = subprocess.run(cmd + ["-r", str(reps)] + [str(b) for b in sizes], env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=150,
                               start_new_session=True)
        except subprocess.TimeoutExpired:
            problems.append("%s timed out" % name)
            continue
        for line in p.stdout.decode().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("bytes") in out:
                out[doc["bytes"]][doc["what"]] = doc
        if p.returncode != 0:
            problems.append("%s exited %d: %s" % (name, p.returncode, p.stderr.decode()[-300:]))
    return out, problems


# ---------------------------------------------------------------- the run

class Run:
    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="ippc-peer-")
        self.ipp_version, self.ipp_missing = _ipp_available()
        self.ippc = None
        self.ipp = None
        self.samples = {}          # key -> {"ippc": [...], "ipp": [...]}
        self.checks = {}           # name -> bool
        self.problems = []
        self.mem = {}

    def add(self, key, side, value):
        self.samples.setdefault(key, {"ippc": [], "ipp": []})[side].append(value)

    def check(self, name, ok):
        self.checks[name] = bool(self.checks.get(name, True) and ok)
        if not ok:
            log("CHECK FAILED: %s" % name)

    def sides(self, rep):
        both = [("ippc", self.ippc)] + ([("ipp", self.ipp)] if self.ipp else [])
        return both if rep % 2 == 0 else both[::-1]

    # --- start-up, alternating; the last start of each side is the cluster measured
    def start_clusters(self):
        for i in range(CFG["startup_reps"]):
            last = i == CFG["startup_reps"] - 1
            order = ["ippc", "ipp"] if i % 2 == 0 else ["ipp", "ippc"]
            for side in order:
                if side == "ipp" and self.ipp_missing:
                    continue
                obj = IppcSide() if side == "ippc" else IppSide(
                    os.path.join(self.base, "ipp%d" % i))
                if side == "ippc":
                    self.ippc = obj
                else:
                    self.ipp = obj
                t = obj.start()
                self.add("startup", side, t)
                log("%s: 4 engines registered after %.2f s" % (obj.name, t))
                if not last:
                    self.problems += obj.stop()
                    if side == "ippc":
                        self.ippc = None
                    else:
                        self.ipp = None

    def warm_up(self):
        raw, arr = make_array(64)
        self.ippc.apply_rtt(2)
        self.ippc.execute_all(2)
        self.ippc.tasks(8)
        self.ippc.map(8)
        self.ippc.push("w", raw, 64)
        self.ippc.pull_raw("w")
        self.ippc.pull_typed("w")
        self.ippc.scatter("ws", raw, 64)
        self.ippc.gather("ws")
        if self.ippc.probe_multipart():
            self.ippc.pull_multipart("w")
        if self.ipp:
            self.ipp.apply_rtt(2)
            self.ipp.execute_all(2)
            self.ipp.tasks(8)
            self.ipp.map(8)
            self.ipp.push("w", arr, 64)
            self.ipp.pull("w")
            self.ipp.scatter("ws", arr, 64)
            self.ipp.gather("ws")

    def memory(self, when):
        for side, obj in (("ippc", self.ippc), ("ipp", self.ipp)):
            if obj is None:
                continue
            self.mem[(when, side)] = {"controller": pss_mb(obj.controller_pids()),
                                      "engines": pss_mb(obj.engine_pids()),
                                      "other": pss_mb(obj.other_pids())}

    def data_round(self, rep, size_key, n, raw, arr):
        import_np = None
        if self.ipp:
            import numpy as import_np
        name = "a_" + size_key
        for side, obj in self.sides(rep):
            if side == "ippc":
                settle()
                self.add("push_all_" + size_key, side, obj.push(name, raw, n))
                settle()
                t, got = obj.pull_raw(name)
                self.check("ippc pull (raw GETs) gives the pushed array",
                           len(got) == 4 and all(g == raw for g in got))
                self.add("pull_all_raw_" + size_key, side, t)
                got = None
                settle()
                t, got = obj.pull_typed(name)
                self.check("ippc pull (?format=typed) gives the pushed array",
                           len(got) == 4 and all(g == raw for g in got))
                self.add("pull_all_typed_" + size_key, side, t)
                if obj.multipart:
                    got = None
                    settle()
                    t, got = obj.pull_multipart(name)
                    self.check("ippc pull (multipart) gives the pushed array",
                               len(got) == 4 and all(g == raw for g in got))
                    self.add("pull_all_multipart_" + size_key, side, t)
            else:
                settle()
                self.add("push_all_" + size_key, side, obj.push(name, arr, n))
                settle()
                t, got = obj.pull(name)
                self.check("IPP pull gives the pushed array",
                           len(got) == 4 and all(import_np.array_equal(g, arr) for g in got))
                forms = ("raw", "typed") + (("multipart",) if self.ippc.multipart else ())
                for form in forms:  # the same IPP figure beside each ippc pull form
                    self.add("pull_all_%s_%s" % (form, size_key), side, t)

    def scatter_round(self, rep, n, raw, arr):
        import_np = None
        if self.ipp:
            import numpy as import_np
        for side, obj in self.sides(rep):
            if side == "ippc":
                settle()
                self.add("scatter_large", side, obj.scatter("s_large", raw, n))
                settle()
                t, got = obj.gather("s_large")
                self.check("ippc gather gives the scattered array", got == raw)
            else:
                settle()
                self.add("scatter_large", side, obj.scatter("s_large", arr, n))
                settle()
                t, got = obj.gather("s_large")
                self.check("IPP gather gives the scattered array",
                           import_np.array_equal(got, arr))
            self.add("gather_large", side, t)

    def run(self):
        sizes = {"small": CFG["n_small"], "large": CFG["n_large"]}
        log("limits: bench_loopback and bench_mpi_bcast for %s bytes"
            % ", ".join(str(8 * n) for n in sizes.values()))
        self.limits, probs = run_limits([8 * n for n in sizes.values()], CFG["limit_reps"])
        self.problems += probs
        if self.ipp_missing:
            log("IPython Parallel %s: running the ippc half only" % self.ipp_missing)
        self.start_clusters()
        self.warm_up()
        self.memory("idle")
        arrays = {k: make_array(n) for k, n in sizes.items()}
        for rep in range(CFG["reps"]):
            log("repetition %d of %d" % (rep + 1, CFG["reps"]))
            for side, obj in self.sides(rep) if not DATA_ONLY else ():
                self.add("apply_rtt", side, obj.apply_rtt(CFG["rtt_runs"]))
            for side, obj in self.sides(rep) if not DATA_ONLY else ():
                self.add("execute_all", side, obj.execute_all(CFG["rtt_runs"]))
            for side, obj in self.sides(rep) if not DATA_ONLY else ():
                self.add("tasks", side, obj.tasks(CFG["tasks"]))
            for side, obj in self.sides(rep) if not DATA_ONLY else ():
                self.add("map", side, obj.map(CFG["map_n"]))
            for key, n in sizes.items():
                raw, arr = arrays[key]
                self.data_round(rep, key, n, raw, arr)
            raw, arr = arrays["large"]
            self.scatter_round(rep, sizes["large"], raw, arr)
        self.memory("after")

    def stop(self):
        for obj in (self.ippc, self.ipp):
            if obj is not None:
                try:
                    self.problems += obj.stop()
                except Exception as e:
                    self.problems.append("stopping %s: %s" % (obj.name, e))
        import shutil
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.base, ignore_errors=True)


# ---------------------------------------------------------------- the table

def fmt(v, unit):
    if v is None:
        return "-"
    if unit in ("s",):
        return "%.2f" % v
    if unit == "ms":
        return "%.2f" % v
    if v >= 100:
        return "{:,.0f}".format(v)
    return "%.1f" % v


def build_rows(run):
    """Rows: key, metric, unit, better ("higher"/"lower"), ippc, ipp, ratio,
    share (% of the loopback limit, data rows), limit bytes."""
    rows = []
    n_s, n_l = CFG["n_small"], CFG["n_large"]

    def med(key, side):
        xs = run.samples.get(key, {}).get(side) or []
        return median(xs) if xs else None

    def add(key, metric, unit, better, conv, payload=None, array_bytes=None):
        ip = med(key, "ippc")
        pp = med(key, "ipp")
        ip, pp = (conv(ip) if ip is not None else None), (conv(pp) if pp is not None else None)
        ratio = None
        if ip and pp:
            ratio = ip / pp if better == "higher" else pp / ip
        share = None
        if array_bytes is not None and ip:
            lb = run.limits.get(array_bytes, {}).get("loopback")
            if lb:
                # ip is payload MB/s; per-link (array) MB/s over loopback MB/s
                share = 100.0 * (ip * array_bytes / payload) / lb["mb_s"]
        rows.append({"key": key, "metric": metric, "unit": unit, "better": better,
                     "ippc": ip, "ipp": pp, "ratio": ratio, "share_pct": share,
                     "array_bytes": array_bytes, "payload_bytes": payload})

    def n_txt(n):
        return "1e%d" % (len(str(n)) - 1) if str(n).strip("0") == "1" else str(n)

    add("startup", "start-up: launch until 4 engines registered", "s", "lower", lambda s: s)
    add("apply_rtt", "apply round trip, one engine", "ms", "lower", lambda s: s * 1e3)
    add("execute_all", "execute `x = 1` on all 4", "ms", "lower", lambda s: s * 1e3)
    add("tasks", "%s tiny load-balanced tasks (ippc: 1 POST of a list)" % "{:,}".format(
        CFG["tasks"]), "tasks/s", "higher", lambda r: r)
    add("map", "map of %s items, chunksize 1" % "{:,}".format(CFG["map_n"]), "items/s",
        "higher", lambda r: r)
    for key, n in (("small", n_s), ("large", n_l)):
        b = 8 * n
        mbps = (lambda payload: (lambda s: payload / s / 1e6))(4 * b)
        add("push_all_" + key, "push %s float64 to all 4 (ippc raw PUT)" % n_txt(n), "MB/s",
            "higher", mbps, 4 * b, b)
        add("pull_all_raw_" + key, "pull %s from all 4 (ippc: 4 raw GETs in parallel)"
            % n_txt(n), "MB/s", "higher", mbps, 4 * b, b)
        add("pull_all_typed_" + key, "pull %s from all 4 (ippc: 1 GET ?format=typed)"
            % n_txt(n), "MB/s", "higher", mbps, 4 * b, b)
        if run.ippc is not None and run.ippc.multipart:
            add("pull_all_multipart_" + key, "pull %s from all 4 (ippc: 1 GET multipart)"
                % n_txt(n), "MB/s", "higher", mbps, 4 * b, b)
    b = 8 * n_l
    add("scatter_large", "scatter %s float64 to 4 (ippc raw body)" % n_txt(n_l), "MB/s",
        "higher", lambda s: b / s / 1e6, b, b)
    add("gather_large", "gather %s float64 from 4 (ippc raw answer)" % n_txt(n_l), "MB/s",
        "higher", lambda s: b / s / 1e6, b, b)
    for when, text in (("idle", "idle"), ("after", "after the data workloads")):
        for part, ptext in (("controller", "controller PSS"), ("engines", "engines PSS (4 summed)")):
            ip = run.mem.get((when, "ippc"), {}).get(part)
            pp = run.mem.get((when, "ipp"), {}).get(part)
            rows.append({"key": "%s_pss_%s" % (part, when), "metric": "%s, %s" % (ptext, text),
                         "unit": "MB", "better": "lower", "ippc": ip, "ipp": pp,
                         "ratio": (pp / ip) if ip and pp else None, "share_pct": None,
                         "array_bytes": None, "payload_bytes": None})
    for when in ("idle", "after"):
        ip = run.mem.get((when, "ippc"), {}).get("other")
        pp = run.mem.get((when, "ipp"), {}).get("other")
        rows.append({"key": "support_pss_%s" % when,
                     "metric": "support processes PSS, %s (ippc: mpiexec + hydra proxies; "
                               "IPP: engine nannies)" % when,
                     "unit": "MB", "better": "lower", "ippc": ip, "ipp": pp,
                     "ratio": (pp / ip) if ip and pp else None, "share_pct": None,
                     "array_bytes": None, "payload_bytes": None})
    return rows


def print_table(run, rows):
    ipp_col = "IPython Parallel" + (" %s" % run.ipp_version if run.ipp_version else "")
    print()
    print("ippc vs IPython Parallel, side by side (%s run, %d repetition(s), the two alternating, medians; "
          "4 engines each, %d CPUs)" % ("smoke" if SMOKE else "full", CFG["reps"],
                                        os.cpu_count() or 0))
    print("ratio: how many times better ippc does, >1 = ippc better "
          "(rates: ippc/IPP; times and memory: IPP/ippc).")
    print("payload: push/pull to all = 4 x array bytes, scatter/gather = array bytes; MB = 1e6 B.")
    print("link %: (array bytes / ippc seconds) / loopback MB/s of the same bytes = payload MB/s "
          "per link (push/pull: 4 controller<->engine links; scatter/gather: the client link).")
    hdr = ("metric", "unit", "ippc", ipp_col, "ratio", "link %")
    table = []
    for r in rows:
        pp = fmt(r["ipp"], r["unit"]) if r["ipp"] is not None else (
            "not installed" if run.ipp_missing else "-")
        table.append((r["metric"], r["unit"], fmt(r["ippc"], r["unit"]), pp,
                      "%.2f" % r["ratio"] if r["ratio"] else "-",
                      "%.1f" % r["share_pct"] if r["share_pct"] is not None else ""))
    widths = [max(len(str(x[i])) for x in table + [hdr]) for i in range(len(hdr))]
    line = " | ".join("%-*s" % (w, h) for w, h in zip(widths, hdr))
    print(line)
    print("-|-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(("%-*s" if i < 2 else "%*s") % (w, c)
                         for i, (w, c) in enumerate(zip(widths, row))))
    print()
    print("limits measured in this run (C programs, same bytes):")
    for b in sorted(run.limits):
        lim = run.limits[b]

        def g(what):
            d = lim.get(what)
            return ("%s MB/s (%.1f ms)" % ("{:,.0f}".format(d["mb_s"]), d["median_s"] * 1e3)
                    if d else "not measured")
        ideal = ""
        if lim.get("loopback") and lim.get("mpi_bcast"):
            t = lim["loopback"]["median_s"] + lim["mpi_bcast"]["median_s"]
            ideal = "; one link + Ibcast = push to all at %s MB/s payload" % "{:,.0f}".format(
                4 * b / t / 1e6)
        print("  %s bytes: loopback TCP %s; memcpy %s; MPI_Ibcast 4 ranks %s%s"
              % ("{:,}".format(b), g("loopback"), g("memcpy"), g("mpi_bcast"), ideal))
    if run.ipp_missing:
        print("IPython Parallel: %s" % run.ipp_missing)
    bad = [k for k, v in run.checks.items() if not v]
    print("checks: %s" % ("all passed (%d)" % len(run.checks) if not bad
                          else "FAILED: " + "; ".join(bad)))


def write_json(run, rows, path):
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    doc = {
        "bench": "bench_peer", "mode": "smoke" if SMOKE else "full",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version()},
        "ippc_commit": commit, "ippc_controller_args": IPPC_CONTROLLER_ARGS,
        "ipp_version": run.ipp_version, "ipp_missing": run.ipp_missing,
        "config": CFG, "rows": rows,
        "limits": {str(b): v for b, v in run.limits.items()},
        "samples": run.samples, "checks": run.checks, "problems": run.problems,
        "multipart_pull": bool(run.ippc and run.ippc.multipart),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------- perf mode

def perf_profile(out_json):
    """ippc only: perf record -g on the controller during 1e7 push + pull rounds."""
    n = CFG["n_large"]
    rounds = int(os.environ.get("BENCH_PEER_PERF_ROUNDS", "3"))
    raw, _ = make_array(n)
    side = IppcSide()
    os.makedirs(BENCH_BIN, exist_ok=True)
    data = os.path.join(BENCH_BIN, "peer-perf.data")
    top = []
    try:
        side.start()
        side.push("a", raw[:8000], 1000)  # warm-up
        side.pull_raw("a")
        callgraph = os.environ.get("BENCH_PEER_CALLGRAPH", "fp")  # or dwarf
        perf = subprocess.Popen(["perf", "record", "--call-graph", callgraph, "-o", data, "-p",
                                 str(side.cluster.controller.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        t0 = time.perf_counter()
        for _ in range(rounds):
            side.push("a", raw, n)
            side.pull_raw("a")
        dt = time.perf_counter() - t0
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                              "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.5"],
                             capture_output=True, text=True, timeout=300).stdout
        for line in rep.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0].endswith("%") and parts[2] in ("[.]", "[k]"):
                sym = " ".join(p for p in parts[3:] if p != "-")
                top.append((parts[0], "%s (%s)" % (sym, parts[1])))
        print("%d rounds of push 1e7 float64 to all + 4 raw pulls: %.2f s" % (rounds, dt))
        print("controller, top symbols by self time (perf record --call-graph %s; perf report "
              "--no-children, data in %s):" % (callgraph, os.path.relpath(data)))
        for pct, sym in top[:15]:
            print("  %7s  %s" % (pct, sym))
    finally:
        problems = side.stop()
        if problems:
            print("stop problems: %s" % problems)
    with open(out_json, "w") as f:
        json.dump({"top": top[:30]}, f, indent=1)
    return 0


# ---------------------------------------------------------------- main

def main():
    sys.stdout.reconfigure(line_buffering=True)
    out = None
    if "--json" in sys.argv:
        out = sys.argv[sys.argv.index("--json") + 1]
    if PERF:
        return perf_profile(out or os.path.join(BENCH_BIN, "peer-perf.json"))
    out = out or os.path.join(BENCH_BIN, "peer-smoke.json" if SMOKE else "peer.json")

    def on_signal(signum, frame):
        raise Stop("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(CFG["budget"]))
    run = Run()
    rc = 0
    try:
        run.run()
    except (BenchError, harness.HarnessError, OSError, http.client.HTTPException) as e:
        run.problems.append("bench failed: %s" % e)
        rc = 1
    except Stop as e:
        run.problems.append("bench interrupted (%s)" % e)
        rc = 130
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        run.stop()
    rows = build_rows(run)
    print_table(run, rows)
    write_json(run, rows, out)
    for p in run.problems:
        print("problem: %s" % p, file=sys.stderr)
    if any(not v for v in run.checks.values()):
        rc = rc or 1
    if run.problems and not rc:
        rc = 1
    print("wrote %s; total %.1f s" % (os.path.relpath(out, os.getcwd()),
                                      time.monotonic() - START))
    return rc


if __name__ == "__main__":
    sys.exit(main())
