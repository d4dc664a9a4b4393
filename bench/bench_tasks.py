#!/usr/bin/python3
"""bench_tasks.py — load-balanced task figures of one ippc cluster (issue 4):
a controller plus `mpiexec.mpich -n 4` engines, driven over REST on one
keep-alive connection, once with `--db memory` and once with the default
SQLite store (PROFILE_DIR/tasks.db), so that the two can be compared.

    BUILD=build /usr/bin/python3 bench/bench_tasks.py     (run by scripts/run-bench)

Standard library only; the cluster start/stop and HTTP helpers are
bench_seed.py's.  The no-op is `function noop(x) return x end`, defined on
all engines first.  It starts one fresh cluster per store and repeat
(BENCH_TASKS_REPS, default 5), alternating the stores, measures on each, and
prints per store the median over its clusters (with the lowest-highest range
of the main rates, since a small machine is noisy) and ratios where there is a
baseline:

  (1) 10,000 tasks submitted one POST /api/v1/tasks each, sequentially on one
      keep-alive connection: submission rate (requests/s) and completion rate
      (first submit until the last id is finished, GET ?wait=, and the queue
      is empty);
  (2) the same 10,000 as one JSON array (one request): submission and
      completion rates, and the ratio batch / individual;
  (3) POST /api/v1/map of 10,000 items, chunksize 1 and chunksize 100: items/s
      (the request blocks until all results are in; they are checked);
  (4) one blocking task (POST /api/v1/tasks?block=true): median and p90 round
      trip over 200 runs, interleaved with 200 blocking direct-view executes
      on engine 0 (POST /api/v1/views/0/execute), and the ratio task/execute.

Also per run: the controller's and the engines' CPU seconds (/proc), the
controller's per thread in creation order (as server/main.c starts them
today: main, store writer, HTTP (libmicrohttpd), WebSocket), and the
store writer's backlog when the queue is empty (GET /api/v1/tasks first waits
for the writer to commit everything queued).  Then (5) each figure of the
SQLite file store divided by the --db memory one's (note: --db memory is an
in-memory SQLite database fed by the same writer thread, so the ratio is the
cost of the file, WAL and disk, not of having a store at all).  Results
are checked: every task id of a run must be finished (queue completed counts
grow by exactly N, nothing left queued), a sample of task results and every
map result must equal its argument.

Everything started is stopped at the end, also on errors and SIGTERM/SIGINT
(see bench_seed.Cluster.stop), and then /proc is scanned for any process left
in the sessions of the controller and mpiexec or among the engine pids.  The
whole run is bounded: BENCH_TASKS_BUDGET seconds (default 120) for all
clusters; repeats are dropped when the budget runs short.

Environment: BUILD, IPPC_BENCH_MPIEXEC, BENCH_ENGINES, BENCH_KEEP (as in
bench_seed.py), BENCH_TASKS_BUDGET, BENCH_TASKS_N (tasks per run, default
10000), BENCH_TASKS_REPS (clusters per store, default 5), BENCH_TASKS_STORES
(default "memory,sqlite").  A full run takes about 50 s on 2 CPUs.
"""

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_seed as bs  # noqa: E402  (cluster start/stop, HTTP client, statistics)
from bench_seed import BenchError, Stop, log, median, pct, ms  # noqa: E402

BUDGET = float(os.environ.get("BENCH_TASKS_BUDGET", "120"))
bs.BUDGET = BUDGET  # bs.left() and the signal alarm follow this script's budget
N = int(os.environ.get("BENCH_TASKS_N", "10000"))
REPS = int(os.environ.get("BENCH_TASKS_REPS", "5"))
STORES = [s for s in os.environ.get("BENCH_TASKS_STORES", "memory,sqlite").split(",") if s]
LAT_RUNS = 200
NOOP = "function noop(x) return x end"


class TaskCluster(bs.Cluster):
    """bench_seed's Cluster with extra controller options (--db)."""

    def __init__(self, controller_args):
        super().__init__()
        self.controller_args = list(controller_args)

    def start(self):
        # Same as bs.Cluster.start, with self.controller_args on the
        # controller's command line.
        for exe in (bs.CONTROLLER, bs.ENGINE):
            if not os.access(exe, os.X_OK):
                raise BenchError("missing %s (run make all)" % exe)
        out = open(os.path.join(self.dir, "controller.log"), "ab")
        self.controller = subprocess.Popen(
            [bs.CONTROLLER, "--port", "0", "--profile", "bench"] + self.controller_args,
            env=self.env(), cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        sec = os.path.join(self.dir, "profile_bench", "security")
        self.info = bs.wait_json_file(os.path.join(sec, "ippc-client.json"), self.controller, 20)
        engine_file = os.path.join(sec, "ippc-engine.json")
        bs.wait_json_file(engine_file, self.controller, 20)
        out = open(os.path.join(self.dir, "engines.log"), "ab")
        self.mpiexec = subprocess.Popen(
            [bs.MPIEXEC, "-n", str(bs.N_ENGINES), bs.ENGINE, "--file", engine_file],
            env=self.env(), cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.client = bs.Client(self.info["url"], self.info["token"])
        t0 = time.monotonic()
        while True:
            engines = self.client.json("GET", "/api/v1/engines")["engines"]
            for e in engines:
                if isinstance(e.get("pid"), int):
                    self.engine_pids.add(e["pid"])
            live = [e for e in engines if e.get("state") in ("idle", "busy")]
            if len(live) >= bs.N_ENGINES:
                log("%d engines live after %.2f s at %s"
                    % (len(live), time.monotonic() - t0, self.info["url"]))
                return
            if self.mpiexec.poll() is not None:
                raise BenchError("mpiexec exited (%s) before %d engines registered; see %s"
                                 % (self.mpiexec.returncode, bs.N_ENGINES, self.dir))
            if time.monotonic() - t0 > 30:
                raise BenchError("only %d of %d engines live after 30 s"
                                 % (len(live), bs.N_ENGINES))
            time.sleep(0.05)


def session_leftovers(leaders, pids):
    """Live processes whose session or process group is one of `leaders`
    (the controller's and mpiexec's: both were started in a new session),
    or whose pid is in `pids`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        try:
            rest = stat[stat.rindex(")") + 2:].split()
            state, pgrp, sid = rest[0], int(rest[2]), int(rest[3])
        except (ValueError, IndexError):
            continue
        if state in "ZX":
            continue
        pid = int(name)
        if pgrp in leaders or sid in leaders or pid in pids:
            found.append(pid)
    return found


# ------------------------------------------------------------------ helpers

def queue(c):
    return c.json("GET", "/api/v1/queue")


def completed_total(q):
    return sum(e.get("completed", 0) for e in q["engines"].values())


def queue_busy(q):
    return q.get("unassigned", 0) + sum(e.get("queued", 0) + e.get("running", 0)
                                        for e in q["engines"].values())


def wait_task(c, task_id, timeout=60):
    """Long-polls until the task is finished; returns its document."""
    deadline = time.monotonic() + timeout
    while True:
        status, data = c.raw("GET", "/api/v1/tasks/%d?wait=%g"
                             % (task_id, max(1.0, min(20.0, deadline - time.monotonic()))))
        if status == 200:
            return json.loads(data)
        if status != 202:
            raise BenchError("GET task %d: HTTP %d %s" % (task_id, status, data[:300]))
        if time.monotonic() > deadline:
            raise BenchError("task %d not finished after %.0f s" % (task_id, timeout))


def wait_drained(c, before, n, timeout=60):
    """After the last task of a run is finished: waits until the queue has
    nothing queued or running and `n` more tasks were completed than
    `before`.  Returns the time it was seen so (perf_counter)."""
    deadline = time.monotonic() + timeout
    while True:
        q = queue(c)
        done = completed_total(q) - before
        if queue_busy(q) == 0 and done >= n:
            if done != n:
                raise BenchError("queue completed count grew by %d, expected %d" % (done, n))
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise BenchError("queue not drained: %d of %d completed, %s"
                             % (done, n, json.dumps(q)[:300]))
        time.sleep(0.002)


def check_results(c, ids, args, sample=20):
    picks = [0, len(ids) - 1] + random.sample(range(len(ids)), min(sample, len(ids)))
    for k in picks:
        doc = wait_task(c, ids[k], 10)
        if doc.get("state") != "completed" or doc.get("result") != args[k]:
            raise BenchError("task %d: state %s result %r, expected %r"
                             % (ids[k], doc.get("state"), doc.get("result"), args[k]))


# ------------------------------------------------------------------ figures

def run_individual(c, n):
    """(1): n tasks, one POST each on the keep-alive connection."""
    before = completed_total(queue(c))
    bodies = [json.dumps({"function": "noop", "args": [i]}).encode() for i in range(n)]
    ids = []
    t0 = time.perf_counter()
    for body in bodies:
        status, data = c.raw("POST", "/api/v1/tasks", body)
        if status != 202:
            raise BenchError("POST /api/v1/tasks: HTTP %d %s" % (status, data[:300]))
        ids.append(json.loads(data)["id"])
    t_sub = time.perf_counter()
    wait_task(c, ids[-1])
    t_last = time.perf_counter()
    t_done = wait_drained(c, before, n)
    check_results(c, ids, list(range(n)))
    return {"submit": n / (t_sub - t0), "last": n / (t_last - t0), "complete": n / (t_done - t0)}


def run_batch(c, n):
    """(2): the same n tasks as one JSON array."""
    before = completed_total(queue(c))
    body = json.dumps([{"function": "noop", "args": [i]} for i in range(n)]).encode()
    t0 = time.perf_counter()
    status, data = c.raw("POST", "/api/v1/tasks", body)
    t_sub = time.perf_counter()
    if status != 202:
        raise BenchError("POST /api/v1/tasks (batch of %d): HTTP %d %s" % (n, status, data[:300]))
    ids = json.loads(data)["ids"]
    if len(ids) != n:
        raise BenchError("batch of %d answered %d ids" % (n, len(ids)))
    wait_task(c, ids[-1])
    t_last = time.perf_counter()
    t_done = wait_drained(c, before, n)
    check_results(c, ids, list(range(n)))
    return {"submit": n / (t_sub - t0), "last": n / (t_last - t0), "complete": n / (t_done - t0),
            "submit_s": t_sub - t0}


def run_map(c, n, chunksize):
    """(3): a blocking map of n items."""
    items = list(range(n))
    body = json.dumps({"function": "noop", "sequences": [items],
                       "chunksize": chunksize}).encode()
    t0 = time.perf_counter()
    status, data = c.raw("POST", "/api/v1/map", body)
    dt = time.perf_counter() - t0
    if status != 200:
        raise BenchError("POST /api/v1/map (chunksize %d): HTTP %d %s"
                         % (chunksize, status, data[:300]))
    doc = json.loads(data)
    if doc.get("status") != "ok" or doc.get("results") != items:
        raise BenchError("map chunksize %d: status %s, %s results, errors %s"
                         % (chunksize, doc.get("status"), len(doc.get("results") or []),
                            json.dumps(doc.get("errors"))[:300]))
    return n / dt


def run_latency(c, runs):
    """(4): blocking task vs blocking execute on engine 0, interleaved."""
    task_body = json.dumps({"function": "noop", "args": [1]}).encode()
    exec_body = json.dumps({"code": "y = noop(1)"}).encode()

    def task():
        t0 = time.perf_counter()
        status, data = c.raw("POST", "/api/v1/tasks?block=true", task_body)
        dt = time.perf_counter() - t0
        if status != 200:
            raise BenchError("blocking task: HTTP %d %s" % (status, data[:300]))
        doc = json.loads(data)
        if doc.get("state") != "completed" or doc.get("result") != 1:
            raise BenchError("blocking task: %s" % data[:300])
        return dt

    def execute():
        t0 = time.perf_counter()
        status, data = c.raw("POST", "/api/v1/views/0/execute", exec_body)
        dt = time.perf_counter() - t0
        if status != 200:
            raise BenchError("execute on engine 0: HTTP %d %s" % (status, data[:300]))
        return dt

    for _ in range(20):  # warm-up
        task()
        execute()
    tt, et = [], []
    for _ in range(runs):
        tt.append(task())
        et.append(execute())
    return tt, et


def cpu_seconds(pids):
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
            rest = stat[stat.rindex(")") + 2:].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """utime + stime of each thread of pid, in seconds, by tid (creation order)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
            rest = stat[stat.rindex(")") + 2:].split()
            out[int(tid)] = (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return out


def store_flush_time(c):
    """GET /api/v1/tasks?limit=1 first waits until the store's writer has
    committed everything queued (store_flush): the time it takes is the
    writer's backlog at that moment."""
    t0 = time.perf_counter()
    c.json("GET", "/api/v1/tasks?limit=1")
    return time.perf_counter() - t0


def bench_store(store):
    """Starts a cluster with this store, measures (1)-(4) once, stops it and
    checks that nothing it started is left.  Returns the figures."""
    args = ["--db", "memory"] if store == "memory" else []
    cluster = TaskCluster(args)
    fig = {}
    try:
        cluster.start()
        c = cluster.client
        ctl = [cluster.controller.pid]
        engines = sorted(cluster.engine_pids)
        bs.expect_ok(c.json("POST", "/api/v1/views/all/execute", json.dumps({"code": NOOP})),
                     "define noop")
        # Warm-up: a few hundred tasks through every path.
        run_individual(c, 200)
        run_batch(c, 200)
        run_map(c, 200, 1)
        store_flush_time(c)

        def phase(name, fn):
            cpu0, ecpu0, th0 = cpu_seconds(ctl), cpu_seconds(engines), thread_cpu(ctl[0])
            fig[name] = fn()
            fig[name + "_flush"] = store_flush_time(c)  # the writer's work counts too
            fig[name + "_cpu"] = cpu_seconds(ctl) - cpu0
            fig[name + "_ecpu"] = cpu_seconds(engines) - ecpu0
            th1 = thread_cpu(ctl[0])
            fig[name + "_threads"] = [th1[t] - th0.get(t, 0) for t in sorted(th1)]

        phase("ind", lambda: run_individual(c, N))
        phase("batch", lambda: run_batch(c, N))
        phase("map1", lambda: run_map(c, N, 1))
        phase("map100", lambda: run_map(c, N, 100))
        fig["lat_task"], fig["lat_exec"] = run_latency(c, LAT_RUNS)
        return fig
    finally:
        forced, survivors = cluster.stop()
        leaders = {p.pid for p in (cluster.controller, cluster.mpiexec) if p is not None}
        leftovers = sorted(set(survivors) | set(session_leftovers(leaders, cluster.engine_pids)))
        for pid in leftovers:
            bs.signal_pid(pid, signal.SIGKILL)
        leftovers = bs.wait_gone(leftovers, 3)
        STOPPED.append((store, len(cluster.engine_pids), len(forced), leftovers))


# The controller's threads in creation order, as server/main.c starts them.
THREAD_NAMES = ["main", "store writer", "HTTP", "WS"]
STOPPED = []  # (store, engine pids, pids that needed SIGKILL, pids still alive)


def vals(runs, key, sub=None):
    return [r[key][sub] if sub else r[key] for r in runs]


def med(runs, key, sub=None):
    return median(vals(runs, key, sub))


def spread(runs, key, sub=None):
    """ "lowest-highest" of the per-cluster values (rates), to show the noise."""
    v = vals(runs, key, sub)
    return "%.0f-%.0f" % (min(v), max(v))


def report(store, runs):
    reps = len(runs)
    print("--- store %s (%s), median of %d cluster(s)"
          % (store, "--db memory" if store == "memory" else "default: SQLite file "
             "PROFILE_DIR/tasks.db", reps))
    print("(1) %d tasks, one POST each (keep-alive): submit %.0f req/s, complete %.0f tasks/s"
          " (%s; last id done at %.0f/s)"
          % (N, med(runs, "ind", "submit"), med(runs, "ind", "complete"),
             spread(runs, "ind", "complete"), med(runs, "ind", "last")))
    print("(2) %d tasks in one batch POST: submit %.0f tasks/s (%s for the request), "
          "complete %.0f tasks/s (%s)"
          % (N, med(runs, "batch", "submit"), ms(med(runs, "batch", "submit_s")),
             med(runs, "batch", "complete"), spread(runs, "batch", "complete")))
    print("    batch / individual: submission %.1fx, completion %.2fx"
          % (med(runs, "batch", "submit") / med(runs, "ind", "submit"),
             med(runs, "batch", "complete") / med(runs, "ind", "complete")))
    print("(3) map of %d items: chunksize 1 %.0f items/s (%s), chunksize 100 %.0f items/s"
          " (%s)" % (N, med(runs, "map1"), spread(runs, "map1"), med(runs, "map100"),
                     spread(runs, "map100")))
    print("    chunksize 100 / 1: %.1fx; chunksize 1 / batch completion: %.2fx"
          % (med(runs, "map100") / med(runs, "map1"),
             med(runs, "map1") / med(runs, "batch", "complete")))
    print("    CPU per %d tasks, controller / %d engines: individual %.2f / %.2f s, batch "
          "%.2f / %.2f s, map chunksize 1 %.2f / %.2f s"
          % (N, bs.N_ENGINES, med(runs, "ind_cpu"), med(runs, "ind_ecpu"), med(runs, "batch_cpu"),
             med(runs, "batch_ecpu"), med(runs, "map1_cpu"), med(runs, "map1_ecpu")))
    for key, what in (("ind", "individual"), ("batch", "batch")):
        per = [r[key + "_threads"] for r in runs]
        if per and all(len(p) == len(per[0]) for p in per):
            names = (THREAD_NAMES if len(per[0]) == len(THREAD_NAMES)
                     else ["thread %d" % k for k in range(len(per[0]))])
            print("    controller CPU by thread, %s: %s" % (what, ", ".join(
                "%s %.2f s" % (names[k], median([p[k] for p in per]))
                for k in range(len(per[0])))))
    print("    store backlog once the queue is empty (GET /api/v1/tasks waits for it): "
          "individual %s, batch %s, map chunksize 1 %s"
          % (ms(med(runs, "ind_flush")), ms(med(runs, "batch_flush")),
             ms(med(runs, "map1_flush"))))
    tm = [median(r["lat_task"]) for r in runs]
    tp = [pct(r["lat_task"], 90) for r in runs]
    em = [median(r["lat_exec"]) for r in runs]
    ep = [pct(r["lat_exec"], 90) for r in runs]
    print("(4) blocking task (?block=true): median %s, p90 %s; execute on engine 0: "
          "median %s, p90 %s  (%d runs each per cluster, interleaved; per-cluster task "
          "medians %s-%s)" % (ms(median(tm)), ms(median(tp)), ms(median(em)), ms(median(ep)),
                              LAT_RUNS, ms(min(tm)), ms(max(tm))))
    print("    task / execute: %.2fx (median), %.2fx (p90)"
          % (median(tm) / median(em), median(tp) / median(ep)))
    return {"tm": median(tm), "em": median(em)}


def compare(runs, lat):
    m, s = runs["memory"], runs["sqlite"]
    rows = [
        ("(1) individual submit req/s", med(m, "ind", "submit"), med(s, "ind", "submit")),
        ("(1) individual complete tasks/s", med(m, "ind", "complete"), med(s, "ind", "complete")),
        ("(2) batch submit tasks/s", med(m, "batch", "submit"), med(s, "batch", "submit")),
        ("(2) batch complete tasks/s", med(m, "batch", "complete"), med(s, "batch", "complete")),
        ("(3) map chunksize 1 items/s", med(m, "map1"), med(s, "map1")),
        ("(3) map chunksize 100 items/s", med(m, "map100"), med(s, "map100")),
    ]
    print("(5) SQLite file store / --db memory (rates: 1.00 = the file costs nothing):")
    for name, a, b in rows:
        print("    %-34s memory %9.0f  sqlite %9.0f  sqlite/memory %.2f" % (name, a, b, b / a))
    for name, key in (("(4) blocking task median", "tm"), ("(4) execute engine 0 median", "em")):
        a, b = lat["memory"][key], lat["sqlite"][key]
        print("    %-34s memory %9s  sqlite %9s  sqlite/memory %.2f (latency)"
              % (name, ms(a), ms(b), b / a))
    print("    controller CPU per %d individual tasks: memory %.2f s, sqlite %.2f s"
          % (N, med(m, "ind_cpu"), med(s, "ind_cpu")))


def main():
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, bs.on_signal)
    signal.signal(signal.SIGINT, bs.on_signal)
    signal.signal(signal.SIGALRM, bs.on_signal)
    signal.alarm(int(BUDGET) + 15)  # a hung request cannot outlive the budget
    print("ippc task bench: %d engines (%s), %d tasks per run, stores %s, %d CPUs"
          % (bs.N_ENGINES, bs.MPIEXEC, N, ",".join(STORES), os.cpu_count() or 0))
    runs = {store: [] for store in STORES}
    rc = 0
    try:
        for store in STORES:
            if store not in ("memory", "sqlite"):
                raise BenchError("unknown store %r (memory or sqlite)" % store)
        # One cluster per store and repeat, alternating the stores so that a
        # drift of the machine's load does not favour one of them.
        for r in range(REPS):
            if r > 0 and bs.left() < 30:
                log("%d repeat(s) only (time budget)" % r)
                break
            for store in STORES:
                runs[store].append(bench_store(store))
                log("store %s: repeat %d done" % (store, r + 1))
        lat = {store: report(store, runs[store]) for store in STORES}
        if "memory" in runs and "sqlite" in runs:
            compare(runs, lat)
    except (BenchError, OSError, http.client.HTTPException, ValueError, KeyError) as e:
        print("bench failed: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        rc = 1
    except Stop as e:
        print("bench interrupted (%s)" % e, file=sys.stderr)
        rc = 130
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        left = []
        for store, n_engines, n_forced, leftovers in STOPPED:
            left += leftovers
            print("stopped %s cluster: controller, mpiexec and %d engine pids%s"
                  % (store, n_engines, " (%d needed SIGKILL)" % n_forced if n_forced else ""))
        if left:
            print("bench: processes still alive: %s" % left, file=sys.stderr)
            rc = rc or 1
        else:
            print("no process left")
        print("total %.1f s" % (time.monotonic() - bs.START))
    return rc


if __name__ == "__main__":
    sys.exit(main())
