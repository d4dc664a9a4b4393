"""test_launcher.py — what `ippc` and the controller's options promise, end to
end: the launcher's refusal of N MPI singletons (an mpiexec of another MPI),
--engines=local, --mpiexec, --db memory, `ippc px` and `ippc status` output,
the schedulers and --hwm, and --metrics-public.

Launches go through `ippc cluster start` in the foreground, in a private
IPPC_DIR whose path every process inherits (IPPC_TEST_MARKER), and must leave
nothing running; the controller options the launcher does not pass on
(--scheduler, --hwm, --metrics-public) are given to a harness Cluster."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from harness import (CLI, ENGINE, MPIEXEC, Api, Cluster, Failure, ProcessTracker, check,
                     describe, expect, expect_error, http, proc_cmdline, wait_gone)
from common import view
from test_cli import Reader, cli_env, parse_banner

BUSY_FOREVER = "while true do end"


# ---------------------------------------------------------------- launches

class Launch:
    """`ippc cluster start ARGS` in the foreground, in a private IPPC_DIR
    (self.tmp).  As a context manager it kills (by pid) whatever is left at
    the end, and fails the test if anything was."""

    def __init__(self, name):
        self.tmp = tempfile.mkdtemp(prefix="ippc-itest-%s-" % name)
        self.tracker = ProcessTracker(self.tmp)
        self.args = []
        self.proc = None
        self.out = None

    def __enter__(self):
        return self

    def start(self, args):
        self.args = list(args)
        self.proc = subprocess.Popen([CLI, "cluster", "start"] + self.args,
                                     env=cli_env(self.tmp), cwd=self.tmp,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.tracker.add_popen(self.proc)
        self.out = Reader(self.proc.stdout)
        return self

    def __exit__(self, exc_type, exc, tb):
        stubborn = self.tracker.kill_all(grace=5)
        if not self.tracker.all_alive():
            shutil.rmtree(self.tmp, ignore_errors=True)
        if stubborn and exc is None:
            raise Failure("processes of `ippc cluster start %s` had to be killed: %s"
                          % (" ".join(self.args), describe(stubborn)))
        return False

    def text(self):
        return self.out.text()

    def wait_up(self, engines, timeout=120):
        """Waits for the banner; returns an Api with `engines` registered."""
        deadline = time.time() + timeout
        while True:
            url, token = parse_banner(self.text())
            if url and token and "Ctrl-C" in self.text():
                break
            check(self.proc.poll() is None, "ippc cluster start exited with %s:\n%s"
                  % (self.proc.returncode, self.text()))
            check(time.time() < deadline, "no banner within %d s:\n%s" % (timeout, self.text()))
            time.sleep(0.2)
        api = Api(url, token)
        live = api.wait_engines(engines, 30)
        check(len(live) == engines, "%d engines expected: %s" % (engines, live))
        return api

    def ours(self, api=None):
        """Every process of this launch now (engines learned from the API)."""
        if api is not None:
            for e in api.engines():
                self.tracker.pids.add(e["pid"])
        return self.tracker.snapshot()

    def stop(self, sig, ours, want_status=0):
        """sig to the launcher; it must exit with want_status and take every
        process of the cluster with it."""
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise Failure("ippc cluster start still running 60 s after signal %d:\n%s"
                          % (sig, self.text()))
        check(rc == want_status, "ippc cluster start exited %s after signal %d, not %d:\n%s"
              % (rc, sig, want_status, self.text()))
        left = wait_gone(ours, 20)
        check(not left, "still running after the launcher stopped: %s\n%s"
              % (describe(left), self.text()))
        later = self.tracker.all_alive()
        check(not later, "processes of the cluster still running: %s" % describe(later))

    def profile_dir(self, profile):
        return os.path.join(self.tmp, "profile_" + profile)


def write_script(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


# A stand-in for the mpiexec of another MPI: asked for -n N, it starts N
# separate copies of the program, each of which comes up as an MPI singleton.
FAKE_MPIEXEC = """#!/bin/sh
printf '%s\n' "$*" >> "$0.args"
[ "$1" = "-n" ] || { echo "fake mpiexec: expected -n N" >&2; exit 2; }
n=$2
shift 2
i=0
while [ "$i" -lt "$n" ]; do
    "$@" &
    i=$((i + 1))
done
wait
"""

# An mpiexec that records how it was called, then is MPICH's.
WRAPPED_MPIEXEC = """#!/bin/sh
printf '%s\n' "$*" >> "$0.args"
exec REAL_MPIEXEC "$@"
"""


def test_refuses_singletons(_):
    with Launch("single") as launch:
        fake = write_script(os.path.join(launch.tmp, "other-mpiexec"), FAKE_MPIEXEC)
        launch.start(["-n", "3", "--profile", "single", "--mpiexec", fake])
        try:
            rc = launch.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise Failure("the launcher did not give up on 3 singletons within 120 s:\n%s"
                          % launch.text())
        text = launch.text()
        check(os.path.exists(fake + ".args") and open(fake + ".args").read().startswith(
            "-n 3 %s --file " % ENGINE), "the launcher ran the given --mpiexec as `-n 3 "
              "ippc-engine --file ...`: %r" % (open(fake + ".args").read()
                                                if os.path.exists(fake + ".args") else None))
        check(rc == 1, "exit status 1 when the engines are 3 singletons, not %s:\n%s"
              % (rc, text))
        check(re.search(r"came up as 3 separate MPI worlds of size 1", text)
              and "use --mpiexec mpiexec.mpich" in text and fake in text,
              "the launcher says the engines are singletons, names the mpiexec and the fix:\n%s"
              % text)
        check("Token:" not in text, "no banner for a cluster that is not usable:\n%s" % text)
        left = wait_gone(launch.tracker.snapshot(), 20)
        check(not left, "after the refusal these still run: %s\n%s" % (describe(left), text))
        client_file = os.path.join(launch.profile_dir("single"), "security", "ippc-client.json")
        check(not os.path.exists(client_file), "the connection file is gone: %s" % client_file)
    return []


def test_local_engines_db_memory(_):
    """--engines=local: N engines without mpiexec, each rank 0 of its own
    world; --db memory: tasks are queryable while the cluster runs, and no
    task database file is written."""
    with Launch("local") as launch:
        launch.start(["-n", "2", "--engines=local", "--db", "memory", "--profile", "local"])
        api = launch.wait_up(2)
        text = launch.text()
        check("2 local MPI singletons" in text, "the banner says what runs:\n%s" % text)
        engines = sorted(api.engines(), key=lambda e: e["id"])
        check([(e["rank"], e["size"]) for e in engines] == [(0, 1), (0, 1)]
              and engines[0]["job"] != engines[1]["job"],
              "two local engines: rank 0 of 1 each, separate jobs: %s" % engines)
        ours = launch.ours(api)
        check(not [p for p in ours if "mpiexec" in proc_cmdline(p)],
              "--engines=local starts no mpiexec: %s" % describe(ours))
        controller = api.get("/api/v1/info")
        pid = json.load(open(os.path.join(launch.profile_dir("local"), "security",
                                          "ippc-client.json")))["pid"]
        check("--db memory" in proc_cmdline(pid), "the controller got --db memory: %s"
              % proc_cmdline(pid))
        expect(controller, 200, "info")

        r = api.post("/api/v1/tasks?block=true", {"code": "return 'mem'", "tags": ["dbmem"]})
        done = expect(r, 200, "a task")
        check(done.get("result") == "mem", "task result: %r" % r)
        q = expect(api.get("/api/v1/tasks?tag=dbmem"), 200, "history query")
        check([t["id"] for t in q.get("tasks", [])] == [done["id"]]
              and q["tasks"][0]["state"] == "completed", "the task is queryable: %r" % q)
        again = expect(api.get("/api/v1/tasks/%d" % done["id"]), 200, "task by id")
        check(again.get("result") == "mem", "task by id: %r" % again)
        files = [os.path.join(d, f) for d, _, fs in os.walk(launch.tmp) for f in fs
                 if f.startswith("tasks.db") or f.endswith((".db", ".db-wal", ".db-shm"))]
        check(not files, "--db memory wrote a database: %s" % files)
        launch.stop(signal.SIGINT, ours)
    return []


def test_mpiexec_option(_):
    """--mpiexec PATH is the mpiexec that starts the engines: one world of N;
    SIGTERM to the launcher stops everything, exit 0."""
    real = shutil.which(MPIEXEC)
    check(real is not None, "%s not found" % MPIEXEC)
    with Launch("mpx") as launch:
        wrapper = write_script(os.path.join(launch.tmp, "my-mpiexec"),
                               WRAPPED_MPIEXEC.replace("REAL_MPIEXEC", real))
        launch.start(["-n", "2", "--profile", "mpx", "--mpiexec", wrapper])
        api = launch.wait_up(2)
        text = launch.text()
        check("MPI world of 2" in text and wrapper in text,
              "the banner and the progress name the world and the mpiexec:\n%s" % text)
        calls = open(wrapper + ".args").read().splitlines()
        check(len(calls) == 1 and calls[0].startswith("-n 2 %s --file " % ENGINE),
              "the given mpiexec was called once as `-n 2 ippc-engine --file ...`: %s" % calls)
        engines = sorted(api.engines(), key=lambda e: e["id"])
        check([(e["rank"], e["size"]) for e in engines] == [(0, 2), (1, 2)]
              and engines[0]["job"] == engines[1]["job"], "one world of 2: %s" % engines)
        r = api.post(view("all", "execute"), {"code": "return mpi.allreduce(1, 'sum')"})
        body = expect(r, 200, "allreduce")
        check([x.get("value") for x in body["results"]] == [2, 2], "allreduce: %r" % r)
        launch.stop(signal.SIGTERM, launch.ours(api))
        check(launch.text().rstrip().endswith("stopped"), "the launcher says it stopped:\n%s"
              % launch.text())
    return []


# ---------------------------------------------------------------- px, status

def run_cli(c, args, stdin=None):
    p = subprocess.run([CLI] + args, env=c.env(), cwd=c.dir, input=stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def test_px_output(c):
    ids = c.ids()
    rank = {e["id"]: e["rank"] for e in c.api.engines()}
    prof = ["--profile", c.profile]
    rc, out, err = run_cli(c, ["px"] + prof + ["print(mpi.rank())"])
    want = "".join("[stdout:%d] %d\n" % (i, rank[i]) for i in ids)
    check(rc == 0 and out == want, "ippc px 'print(mpi.rank())': exit %s, expected\n%s"
          "got\n%s%s" % (rc, want, out, err))

    rc, out, err = run_cli(c, ["px", "--targets", "1::2"] + prof + ["print('a')", "print('b')"])
    want = "".join("[stdout:%d] \na\nb\n" % i for i in ids[1::2])
    check(rc == 0 and out == want, "several lines on engines 1::2: exit %s, expected\n%r\n"
          "got\n%r %s" % (rc, want, out, err))

    rc, out, err = run_cli(c, ["px"] + prof + ["-"], stdin=b"x_px = 6 * 7\nprint(x_px)\n")
    check(rc == 0 and out == "".join("[stdout:%d] 42\n" % i for i in ids),
          "code from stdin: exit %s: %r %s" % (rc, out, err))

    rc, out, err = run_cli(c, ["px", "-t", str(ids[0])] + prof + ["error('pxboom')"])
    check(rc == 1, "a failing engine makes ippc px exit 1, not %s: %r %r" % (rc, out, err))
    check(re.search(r"^\[%d:RuntimeError\] .*pxboom" % ids[0], err, re.M) and out == "",
          "the error is printed as [ID:ENAME] message on stderr: %r %r" % (out, err))

    rc, out, err = run_cli(c, ["px", "--profile", "no-such-profile", "return 1"])
    check(rc == 1 and "no cluster is running" in err,
          "no cluster: exit 1 with a message: %s %r" % (rc, err))
    return []


def test_status_output(c):
    prof = ["--profile", c.profile]
    engines = {e["id"]: e for e in c.api.engines()}
    rc, out, err = run_cli(c, ["status"] + prof)
    check(rc == 0, "ippc status exit %s: %s" % (rc, err))
    lines = out.splitlines()
    head = 'cluster "%s" at %s (controller pid %d): %d engines, %d live' % (
        c.profile, c.client_info["url"], c.controller.pid, len(engines),
        len([e for e in engines.values() if e["state"] != "dead"]))
    check(lines and lines[0] == head, "first line %r, expected %r" % (lines[:1], head))
    check(lines[1].split() == ["ID", "RANK", "JOB", "HOST", "PID", "STATE", "RUNTIME"],
          "column header: %r" % lines[1:2])
    rows = [l.split() for l in lines[2:]]
    check(len(rows) == len(engines), "one row per engine: %s" % lines)
    for row in rows:
        e = engines.get(int(row[0]))
        check(e is not None and row[1] == "%d/%d" % (e["rank"], e["size"])
              and row[2] == str(e["job"])[:10] and row[3] == e["host"]
              and int(row[4]) == e["pid"] and row[5] in ("idle", "busy")
              and row[6] == e["runtime"] == "lua",
              "row %s does not match the engine %s" % (row, e))
    rc, out, err = run_cli(c, ["status", "--json"] + prof)
    doc = json.loads(out) if rc == 0 else None
    check(isinstance(doc, dict) and sorted((e["id"], e["pid"]) for e in doc["engines"])
          == sorted((i, e["pid"]) for i, e in engines.items()),
          "ippc status --json is the engine list: %s %s" % (rc, out[:500]))
    return []


# ---------------------------------------------------------------- schedulers, --hwm

def tasks_by_tag(api, tag, n):
    """The engines of the n tasks tagged tag, in submission order."""
    body = expect(api.get("/api/v1/tasks?tag=%s&limit=1000" % tag), 200, "tasks tagged " + tag)
    tasks = sorted(body["tasks"], key=lambda t: t["id"])
    check(len(tasks) == n and all(t["state"] == "completed" for t in tasks),
          "%d completed tasks tagged %s: %s" % (n, tag, tasks[:3]))
    return [t["engine"] for t in tasks]


def batch_engines(api, tag, n=60):
    r = api.post("/api/v1/tasks", [{"code": "return 0", "tags": [tag]}] * n, timeout=120)
    ids = expect(r, 202, "a batch of %d" % n)["ids"]
    expect(api.get("/api/v1/tasks/%d?wait=60" % ids[-1], timeout=90), 200, "last of the batch")
    for i in ids:  # the others are done too once the history has them
        expect(api.get("/api/v1/tasks/%d?wait=60" % i, timeout=90), 200, "task %d" % i)
    return tasks_by_tag(api, tag, n)


def cycles(seq, k):
    """True when seq repeats its first k (distinct) items in order."""
    return len(set(seq[:k])) == k and all(seq[i] == seq[i % k] for i in range(len(seq)))


def task_state(api, tid):
    return expect(api.get("/api/v1/tasks/%d" % tid), (200, 202), "task %d" % tid)


def load_scenario(c):
    """Engine a holds 3 endless tasks (used longest ago among a, b), b one
    quick task (used last).  A task for [a, b] then goes to a under lru (the
    least recently used) and to b under leastload (the least loaded).
    Returns (a, b, the task's engine, the endless tasks)."""
    api = c.api
    a, b = c.ids()[:2]
    held = [expect(api.post("/api/v1/tasks", {"code": BUSY_FOREVER, "targets": [a]}), 202,
                   "endless on %d" % a)["id"] for _ in range(3)]
    quick = expect(api.post("/api/v1/tasks?block=true", {"code": "return 1", "targets": [b]}),
                   200, "quick on %d" % b)
    check(quick.get("engine") == b, "quick task on %d: %r" % (b, quick))
    x = expect(api.post("/api/v1/tasks", {"code": "return 'x'", "targets": [a, b]}), 202,
               "task for [a, b]")
    return a, b, task_state(api, x["id"]).get("engine"), held


def release(api, held):
    """Force-aborts the endless tasks (queued ones end before they start)."""
    for tid in held:
        r = api.call("DELETE", "/api/v1/tasks/%d?force=true" % tid)
        check(r.status in (200, 409), "abort %d: %r" % (tid, r))
    for tid in held:
        t = expect(api.get("/api/v1/tasks/%d?wait=60" % tid, timeout=90), 200, "aborted %d" % tid)
        check(t["state"] in ("aborted", "completed"), "task %d: %r" % (tid, t))


def test_schedulers_and_hwm(_):
    notes = []
    # leastload (the default) with --hwm 4: the load scenario, then the mark.
    with Cluster(n=3, profile="sched-leastload",
                 controller_args=["--scheduler", "leastload", "--hwm", "4"]) as c:
        c.start()
        api = c.api
        a, b, went, held = load_scenario(c)
        check(went == b, "leastload: the task for [a, b] goes to the less loaded %d, not %s"
              % (b, went))
        # a holds 3 of its 4; one more fits, the next must wait for a slot.
        fits = expect(api.post("/api/v1/tasks", {"code": BUSY_FOREVER, "targets": [a]}), 202,
                      "4th task on a")["id"]
        waits = expect(api.post("/api/v1/tasks", {"code": "return 5", "targets": [a]}), 202,
                       "5th task on a")["id"]
        held += [fits]
        check(task_state(api, fits)["state"] == "running"
              and task_state(api, fits)["engine"] == a, "--hwm 4: a 4th task is sent to a: %r"
              % task_state(api, fits))
        check(task_state(api, waits)["state"] == "pending", "--hwm 4: a 5th task waits: %r"
              % task_state(api, waits))
        q = expect(api.get("/api/v1/queue"), 200, "queue")
        check(q["engines"][str(a)]["running"] == 4 and q["unassigned"] == 1,
              "queue with --hwm 4 and 5 tasks for a: %r" % q)
        release(api, held)
        done = expect(api.get("/api/v1/tasks/%d?wait=60" % waits, timeout=90), 200, "5th")
        check(done["state"] == "completed" and done["engine"] == a, "the 5th runs once a slot "
              "frees: %r" % done)

    with Cluster(n=3, profile="sched-lru",
                 controller_args=["--scheduler", "lru", "--hwm", "1000"]) as c:
        c.start()
        seq = batch_engines(c.api, "lru")
        check(cycles(seq, 3), "lru: a batch goes round the 3 engines in turn: %s" % seq)
        a, b, went, held = load_scenario(c)
        check(went == a, "lru: the task for [a, b] goes to the least recently used %d (though it"
              " holds 3 tasks), not %s" % (a, went))
        release(c.api, held)

    with Cluster(n=3, profile="sched-twobin",
                 controller_args=["--scheduler", "twobin", "--hwm", "1000"]) as c:
        c.start()
        seq = batch_engines(c.api, "twobin")
        check(all(x != y for x, y in zip(seq, seq[1:])),
              "twobin picks the less recently used of two engines, so never the same engine "
              "twice in a row: %s" % seq)
        check(not cycles(seq, 3), "twobin: 60 random pairs gave exactly lru's round robin: %s"
              % seq)

    with Cluster(n=3, profile="sched-random",
                 controller_args=["--scheduler", "random", "--hwm", "1000"]) as c:
        c.start()
        seq = batch_engines(c.api, "random")
        check(any(x == y for x, y in zip(seq, seq[1:])) and len(set(seq)) == 3,
              "random: 60 uniform picks among 3 engines repeat an engine somewhere and use "
              "all three: %s" % seq)

    with Cluster(n=3, profile="sched-weighted",
                 controller_args=["--scheduler", "weighted", "--hwm", "1000"]) as c:
        c.start()
        seq = batch_engines(c.api, "weighted")
        counts = sorted(seq.count(i) for i in set(seq))
        check(not cycles(seq, 3) and len(counts) == 3,
              "weighted: random draws, not a round robin, over all 3 engines: %s" % seq)
        notes.append("weighted: tasks per engine %s" % counts)
    return notes


# ---------------------------------------------------------------- /metrics

def test_metrics_public(_):
    """GET /metrics needs the token unless --metrics-public; /api/v1 always
    needs it."""
    with Cluster(jobs=[], profile="metrics-default") as c:
        c.start()
        expect_error(http("GET", c.api.url + "/metrics"), 401, "unauthorized",
                     "/metrics without the token by default")
        r = c.api.get("/metrics")
        check(r.status == 200 and b"# TYPE ippc_engines gauge" in r.raw,
              "/metrics with the token: %r" % r)
    with Cluster(jobs=[], profile="metrics-public", controller_args=["--metrics-public"]) as c:
        c.start()
        r = http("GET", c.api.url + "/metrics")
        check(r.status == 200 and b"# TYPE ippc_engines gauge" in r.raw
              and r.headers.get("Content-Type", "").startswith("text/plain"),
              "--metrics-public: /metrics without the token: %r" % r)
        check(c.api.get("/metrics").status == 200, "and with it")
        expect_error(http("GET", c.api.url + "/api/v1/info"), 401, "unauthorized",
                     "--metrics-public leaves /api/v1 behind the token")
    return []


TESTS = [
    ("cli_px_output", test_px_output, "shared"),
    ("cli_status_output", test_status_output, "shared"),
    ("launcher_refuses_singletons", test_refuses_singletons, "own"),
    ("launcher_engines_local_db_memory", test_local_engines_db_memory, "own"),
    ("launcher_mpiexec_option", test_mpiexec_option, "own"),
    ("controller_schedulers_and_hwm", test_schedulers_and_hwm, "own"),
    ("controller_metrics_public", test_metrics_public, "own"),
]
