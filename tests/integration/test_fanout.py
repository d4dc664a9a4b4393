"""test_fanout.py — pushes, scatters and gathers fanned out by MPI (the data
crosses the controller->engine link once, to the lowest targeted rank, and the
engines move it among themselves; common/proto.h "Data ops fanned out by MPI").

- The same data through a controller that fans out everything
  (--fanout-min-bytes 0) and one that never does (--no-fanout) gives the same
  answers: arrays (1-D, 2-D, several dtypes, raw octet-stream and JSON) and
  JSON values, to all engines and to subsets.
- Concurrent pushes, scatters and gathers from several threads on overlapping
  target sets (all, 0:2, 1:3, 2:4) never deadlock: every answer is right and
  the cluster is idle afterwards.
- Targets that span MPI jobs, and a job with a dead engine, take the
  per-engine path; a participant lost while the others wait in the op makes
  the controller interrupt them.
- An interrupt of the view while engines wait in a fanned-out op (one
  participant still busy with an earlier task) aborts it everywhere, and the
  engines work afterwards.
"""

import base64
import os
import signal
import struct
import threading
import time

from harness import Cluster, check, expect
from common import same, show, view, expect_task_results

OCTET = {"Content-Type": "application/octet-stream"}
RAW = {"Accept": "application/octet-stream"}
FAN = ["--db", "memory", "--fanout-min-bytes", "0"]
PER = ["--db", "memory", "--no-fanout"]


def typed(dtype, fmt, values, shape):
    return {"dtype": dtype, "shape": shape,
            "data": base64.b64encode(struct.pack("<%d%s" % (len(values), fmt), *values)).decode()}


def fanout_counts(c):
    """ippc_fanout_ops_total by op."""
    r = c.api.get("/metrics")
    check(r.status == 200, "GET /metrics: %r" % r)
    out = {}
    for line in r.raw.decode().splitlines():
        if line.startswith("ippc_fanout_ops_total{op=\""):
            op = line.split('"')[1]
            out[op] = int(float(line.split()[-1]))
    check(set(out) == {"push", "scatter", "gather"}, "fan-out metrics: %s" % out)
    return out


def wait_request(c, rid, limit=120):
    deadline = time.time() + limit
    r = None
    while time.time() < deadline:
        r = c.api.get("/api/v1/requests/%s?wait=20" % rid)
        if r.status != 202:
            return r
    raise AssertionError("request %s still pending after %d s: %r" % (rid, limit, r))


def wait_dead(c, engine_id, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        r = c.api.get("/api/v1/engines/%d" % engine_id)
        if r.status == 200 and r.body.get("state") == "dead":
            return
        time.sleep(0.25)
    check(False, "engine %d is not dead %d s after SIGKILL" % (engine_id, limit))


def without_request(body):
    """An answer without its request id (the two controllers number apart)."""
    return {k: v for k, v in body.items() if k != "request"} if isinstance(body, dict) else body


def idle(c, what):
    problem = c.health_problem(settle=30)
    check(problem is None, "%s: the cluster must be idle afterwards: %s" % (what, problem))


# ------------------------------------------------------------ same answers

def both(pair, method, path, body=None, raw=None, headers=None, what=""):
    """The same request to both controllers; both answers, checked equal
    (status, JSON without the request id, raw bytes and their headers)."""
    got = []
    for c in pair:
        got.append(c.api.call(method, path, body=body, raw=raw, headers=headers))
    fan, per = got
    check(fan.status == per.status,
          "%s: HTTP %s fanned out, %s per engine:\n  %r\n  %r" % (what, fan.status, per.status,
                                                                 fan, per))
    if per.body is not None:
        check(same(without_request(fan.body), without_request(per.body)),
              "%s: answers differ:\n  fan-out    %s\n  per engine %s"
              % (what, show(fan.body), show(per.body)))
    else:
        check(fan.raw == per.raw, "%s: raw answers differ (%d / %d bytes)"
              % (what, len(fan.raw), len(per.raw)))
        for h in ("X-Ippc-Dtype", "X-Ippc-Shape"):
            check(fan.headers.get(h) == per.headers.get(h), "%s: %s differs: %s / %s"
                  % (what, h, fan.headers.get(h), per.headers.get(h)))
    return fan


def pulls_agree(pair, targets, name, what):
    for q in ("", "?format=typed"):
        r = both(pair, "GET", view(targets, "vars/%s" % name) + q, what="%s: pull%s" % (what, q))
        expect(r, 200, "%s: pull" % what)
        check(r.body.get("status") == "ok", "%s: pull of %s: %r" % (what, name, r))


def gathers_agree(pair, targets, name, what, status="ok"):
    r = both(pair, "GET", view(targets, "gather/%s" % name), what="%s: gather" % what)
    body = expect(r, 200, "%s: gather" % what)
    check(body.get("status") == status, "%s: gather %s status %s: %r" % (what, name, status, r))
    for q in ("?format=typed",):
        both(pair, "GET", view(targets, "gather/%s" % name) + q, what="%s: gather%s" % (what, q))
    if status == "ok":
        both(pair, "GET", view(targets, "gather/%s" % name), headers=RAW,
             what="%s: raw gather" % what)
    return body


def test_same_answers(_):
    fan = Cluster(n=4, profile="fanout-on", controller_args=FAN)
    per = Cluster(n=4, profile="fanout-off", controller_args=PER)
    with fan, per:
        fan.start()
        per.start()
        pair = (fan, per)
        before = fanout_counts(fan)
        f64 = [i * 0.25 - 3 for i in range(30)]
        pushes = [
            ("a1", {"namespace": {"a1": f64}}),
            ("a2", {"namespace": {"a2": [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]}}),
            ("a3", {"namespace": {"a3": typed("int32", "i", list(range(-6, 6)), [3, 4])}}),
            ("a4", {"namespace": {"a4": typed("uint8", "B", list(range(7)), [7])}}),
            ("j1", {"namespace": {"j1": {"k": [1, "two", None, True], "n": {"x": 1.5}}}}),
            ("j2", {"namespace": {"j2": "text"}}),
            ("j3", {"namespace": {"j3": [1, "a", None, 2.5, [1, 2], {"x": 1}]}}),
            ("m1", {"namespace": {"m1": 7, "m2": [1.5, 2.5]}}),
        ]
        for targets in ("all", "0:2", "1:3", "1,3", "::-1", "2"):
            for name, body in pushes:
                what = "push %s to %s" % (name, targets)
                r = both(pair, "POST", view(targets, "push"), body=body, what=what)
                expect(r, 200, what)
                check(r.body.get("status") == "ok", "%s: %r" % (what, r))
                pulls_agree(pair, targets, name, what)
        # Raw bodies: 1-D and 2-D.
        raw = struct.pack("<12d", *[i / 3 for i in range(12)])
        for targets in ("all", "1:"):
            for shape in ("12", "3,4", "4,3"):
                what = "raw push %s to %s" % (shape, targets)
                r = both(pair, "PUT", view(targets, "vars/r") + "?dtype=float64&shape=" + shape,
                         raw=raw, headers=OCTET, what=what)
                check(r.status == 200 and r.body.get("status") == "ok", "%s: %r" % (what, r))
                pulls_agree(pair, targets, "r", what)
                both(pair, "GET", view(targets.split(":")[0] if targets != "all" else "0",
                                       "vars/r"), headers=RAW, what=what + ": raw pull")

        # Scatters and the gathers of what was scattered.
        scatters = [
            ("s1", list(range(17))),
            ("s2", [0.5, 1.5, 2.5]),
            ("s3", [1, 2]),                                    # fewer items than engines
            ("s4", [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]),  # 2-D
            ("s5", typed("float32", "f", [i * 1.5 for i in range(12)], [6, 2])),
            ("s6", ["w%d" % i for i in range(6)]),
            ("s7", [1, "a", None, 2.5, [1, 2], {"x": 1}, True]),
            ("s8", []),
        ]
        for targets in ("all", "0:3", "1:", "1,3"):
            for name, data in scatters:
                what = "scatter %s over %s" % (name, targets)
                r = both(pair, "POST", view(targets, "scatter"), body={"name": name, "data": data},
                         what=what)
                check(r.status == 200 and r.body.get("status") == "ok", "%s: %r" % (what, r))
                pulls_agree(pair, targets, name, what)
                gathers_agree(pair, targets, name, what)
        raw = struct.pack("<10q", *range(100, 110))
        for shape in ("10", "5,2"):
            what = "raw scatter %s" % shape
            r = both(pair, "POST", view("all", "scatter") + "?name=rs&dtype=int64&shape=" + shape,
                     raw=raw, headers=OCTET, what=what)
            check(r.status == 200 and r.body.get("status") == "ok", "%s: %r" % (what, r))
            pulls_agree(pair, "all", "rs", what)
            g = gathers_agree(pair, "all", "rs", what)
            r = fan.api.get(view("all", "gather/rs"), headers=RAW)
            check(r.raw == raw, "%s: raw gather must give the bytes back: %r" % (what, r))
            check(g.get("status") == "ok", what)

        # Gathers of values the engines made: one array of a dtype, arrays
        # of two dtypes (the root's "parts"), lists and scalars.
        code = ("ga = nd.arange(mpi.rank() + 2) * 1.5\n"
                "gb = mpi.rank() % 2 == 0 and nd.arange(3) or {mpi.rank(), 'x'}\n"
                "gc = mpi.rank() * 10\n"
                "gd = {a = mpi.rank()}\n")
        for c in pair:
            expect(c.api.post(view("all", "execute"), {"code": code}), 200, "make ga..gd")
        for targets in ("all", "1:", "0,2"):
            for name in ("ga", "gb", "gc", "gd"):
                gathers_agree(pair, targets, name, "gather %s over %s" % (name, targets))

        # Errors: the op fails as a whole on every participant; the answer
        # has the same shape (status error, result null, the failing engine
        # listed with its error).
        for c in pair:
            expect(c.api.post(view("0", "execute"), {"code": "only0 = nd.arange(3)"}), 200, "only0")
        for c in pair:
            r = c.api.get(view("all", "gather/only0"))
            body = expect(r, 200, "gather of a name engine 1..3 lack")
            check(body.get("status") == "error" and body.get("result") is None,
                  "gather only0: %r" % r)
            names = {e.get("engine"): e.get("ename") for e in body.get("errors", [])}
            check(all(names.get(i) == "NameError" for i in (1, 2, 3))
                  and names.get(0, "FanoutError") == "FanoutError",
                  "gather only0 errors: %r" % r)
        r = both(pair, "GET", view("all", "gather/never_set"), what="gather of an unknown name")
        check(r.body.get("status") == "error" and r.body.get("result") is None, "%r" % r)

        # The fan-out did happen on one side only, and the task records say so.
        after = fanout_counts(fan)
        for op in ("push", "scatter", "gather"):
            check(after[op] > before[op], "no %s was fanned out: %s -> %s" % (op, before, after))
        check(fanout_counts(per) == {"push": 0, "scatter": 0, "gather": 0},
              "--no-fanout fanned out: %s" % fanout_counts(per))
        r = fan.api.post(view("all", "push"), {"namespace": {"t": 1}})
        body = expect(r, 200, "push t")
        rid = body["request"]
        r = fan.api.get("/api/v1/tasks?request=%d&limit=10" % rid)
        tasks = expect(r, 200, "tasks of the push").get("tasks", [])
        check(len(tasks) == 4 and all(isinstance(t.get("fanout"), dict) and t["fanout"].get("root")
                                      == 0 for t in tasks), "task records: %s" % show(tasks))
        idle(fan, "same answers")


# ------------------------------------------------------------ concurrency

def test_concurrent_overlap(_):
    """Threads issue pushes, scatters and gathers to overlapping target sets
    at once, each checking its answers; fan-out ids order them the same way
    on every engine, so none waits for an op another engine will never run."""
    rounds = int(os.environ.get("IPPC_TEST_FANOUT_ROUNDS", "30"))
    with Cluster(n=4, profile="fanout-race", controller_args=FAN) as c:
        c.start()
        forms = {"all": [0, 1, 2, 3], "0:2": [0, 1], "1:3": [1, 2], "2:4": [2, 3]}
        errors = []
        done = [0]
        lock = threading.Lock()

        def worker(k, targets):
            ids = forms[targets]
            try:
                for i in range(rounds):
                    if errors:
                        return
                    m = 1 + (i * 7 + k) % 40
                    vals = [k * 1000 + i + j * 0.5 for j in range(m)]
                    raw = struct.pack("<%dd" % m, *vals)
                    shape = "%d" % m if m % 2 else "%d,2" % (m // 2)
                    r = c.api.call("PUT", view(targets, "vars/p%d" % k)
                                   + "?dtype=float64&shape=" + shape, raw=raw, headers=OCTET,
                                   timeout=120)
                    expect_task_results(r, ids, "thread %d round %d push" % (k, i))
                    data = list(range(k * 100 + i, k * 100 + i + m))
                    r = c.api.post(view(targets, "scatter"), {"name": "s%d" % k, "data": data},
                                   timeout=120)
                    expect_task_results(r, ids, "thread %d round %d scatter" % (k, i))
                    r = c.api.get(view(targets, "gather/s%d" % k), timeout=120)
                    body = expect(r, 200, "thread %d round %d gather" % (k, i))
                    check(body.get("status") == "ok" and same(body.get("result"), data),
                          "thread %d round %d: gather gave %s, scattered %s"
                          % (k, i, show(body), show(data)))
                    r = c.api.get(view(targets, "gather/p%d" % k), headers=RAW, timeout=120)
                    check(r.status == 200 and r.raw == raw * len(ids),
                          "thread %d round %d: gather of the pushed array: %r" % (k, i, r))
                    with lock:
                        done[0] += 1
            except Exception as e:  # noqa: BLE001 — reported below
                errors.append("thread %d (%s): %s" % (k, targets, e))

        threads = [threading.Thread(target=worker, args=(k, t), daemon=True)
                   for k, t in enumerate(forms)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        check(not any(t.is_alive() for t in threads),
              "threads still running after 600 s (a deadlock?): %d rounds done" % done[0])
        check(not errors, "; ".join(errors[:3]))
        check(done[0] == rounds * len(forms), "rounds done: %d" % done[0])
        counts = fanout_counts(c)
        n = rounds * len(forms)
        check(counts["push"] >= n and counts["scatter"] >= n and counts["gather"] >= 2 * n,
              "every op fanned out: %s" % counts)
        idle(c, "concurrent fan-outs")
        r = c.api.post(view("all", "execute"), {"code": "return mpi.allreduce(1)"})
        check(same([x.get("value") for x in expect_task_results(r, [0, 1, 2, 3], "allreduce")],
                   [4] * 4), "MPI after the concurrent fan-outs: %r" % r)
        return ["%d rounds x %d threads in %.1f s" % (rounds, len(forms), time.time() - t0)]


# ------------------------------------------------------------ fallbacks

def test_two_jobs(_):
    """Targets across two MPI jobs go per engine; within one job they fan out."""
    with Cluster(jobs=[2, 2], profile="fanout-jobs", controller_args=FAN) as c:
        c.start()
        engines = sorted(c.api.engines(), key=lambda e: e["id"])
        check([e["rank"] for e in engines] == [0, 1, 0, 1], "two jobs of 2: %s" % engines)
        vals = [float(i) for i in range(8)]
        raw = struct.pack("<8d", *vals)

        def push_and_check(targets, ids, fanned):
            before = fanout_counts(c)
            r = c.api.call("PUT", view(targets, "vars/x") + "?dtype=float64&shape=8", raw=raw,
                           headers=OCTET)
            expect_task_results(r, ids, "push to %s" % targets)
            r = c.api.get(view(targets, "vars/x"))
            body = expect(r, 200, "pull %s" % targets)
            check(body.get("results") == [vals] * len(ids), "pull x from %s: %r" % (targets, r))
            r = c.api.post(view(targets, "scatter"), {"name": "y", "data": list(range(9))})
            expect_task_results(r, ids, "scatter over %s" % targets)
            r = c.api.get(view(targets, "gather/y"))
            check(expect(r, 200, "gather").get("result") == list(range(9)),
                  "gather y from %s: %r" % (targets, r))
            after = fanout_counts(c)
            grew = {op: after[op] - before[op] for op in after}
            want = {"push": 1, "scatter": 1, "gather": 1} if fanned else \
                {"push": 0, "scatter": 0, "gather": 0}
            check(grew == want, "targets %s: fanned out %s, want %s" % (targets, grew, want))

        push_and_check("all", [0, 1, 2, 3], False)
        push_and_check("1,2", [1, 2], False)
        push_and_check("0:2", [0, 1], True)
        push_and_check("2:4", [2, 3], True)
        idle(c, "two jobs")


def test_lost_participant_and_dead_engine(_):
    """A participant that dies (to the controller: SIGSTOP, then the heartbeat
    timeout) while the others wait for it in a fanned-out push: its task is
    lost, the controller interrupts the others (aborted) and they work
    afterwards; while the job has a dead engine, data ops go per engine; once
    it is back, they fan out again.  (SIGSTOP rather than SIGKILL: a killed
    rank may take its MPI job down, which is MPI's doing, not ours.)"""
    with Cluster(n=3, profile="fanout-dead",
                 controller_args=FAN + ["--heartbeat-timeout", "3"]) as c:
        c.start()
        victim = [e for e in c.api.engines() if e["id"] == 2][0]
        r = c.api.post(view("2", "execute") + "?block=false", {"code": "while true do end"})
        busy = expect(r, 202, "spin on engine 2")["request"]
        raw = struct.pack("<4d", 1, 2, 3, 4)
        r = c.api.call("PUT", view("all", "vars/z") + "?dtype=float64&shape=4&block=false",
                       raw=raw, headers=OCTET)
        rid = expect(r, 202, "push to all, not blocking")["request"]
        time.sleep(1.0)
        check(c.api.get("/api/v1/requests/%s" % rid).status == 202,
              "engines 0 and 1 must wait for engine 2")
        os.kill(victim["pid"], signal.SIGSTOP)
        try:
            wait_dead(c, 2)
            body = expect(wait_request(c, rid), 200, "the push after engine 2 died")
            states = [x.get("status") for x in body.get("results", [])]
            check(states == ["aborted", "aborted", "lost"],
                  "participants interrupted, the dead one lost: %s" % show(body))
            check(expect(wait_request(c, busy), 200, "spin").get("status") == "error",
                  "the spin is lost")
            before = fanout_counts(c)
            r = c.api.call("PUT", view("all", "vars/z") + "?dtype=float64&shape=4", raw=raw,
                           headers=OCTET)
            expect_task_results(r, [0, 1], "push with engine 2 dead")
            r = c.api.get(view("all", "gather/z"), headers=RAW)
            check(r.status == 200 and r.raw == raw * 2, "gather with engine 2 dead: %r" % r)
            r = c.api.post(view("all", "scatter"), {"name": "w", "data": [1, 2, 3]})
            expect_task_results(r, [0, 1], "scatter with engine 2 dead")
            check(fanout_counts(c) == before, "a job with a dead engine must not fan out: "
                  "%s -> %s" % (before, fanout_counts(c)))
            r = c.api.post(view("all", "execute"), {"code": "return w"})
            vals = [x.get("value") for x in expect_task_results(r, [0, 1], "survivors work")]
            check(vals == [[1, 2], [3]], "scatter per engine: %s" % vals)
        finally:
            os.kill(victim["pid"], signal.SIGCONT)
        # Engine 2 reconnects (still spinning the task the controller gave up
        # on): interrupt it until it is idle, then data ops fan out again.
        deadline = time.time() + 60
        while time.time() < deadline:
            e = c.api.get("/api/v1/engines/2").body or {}
            if e.get("state") in ("idle", "busy"):
                break
            time.sleep(0.25)
        check(e.get("state") in ("idle", "busy"), "engine 2 did not come back: %s" % e)
        deadline = time.time() + 60
        while time.time() < deadline:
            expect(c.api.post(view("2", "interrupt")), 200, "interrupt engine 2")
            r = c.api.post(view("2", "execute") + "?timeout=2", {"code": "return 1"})
            if r.status == 200 and r.body.get("status") == "ok":
                break
        check(r.status == 200 and r.body.get("status") == "ok", "engine 2 works again: %r" % r)
        before = fanout_counts(c)
        r = c.api.call("PUT", view("all", "vars/z") + "?dtype=float64&shape=4", raw=raw,
                       headers=OCTET)
        expect_task_results(r, [0, 1, 2], "push with engine 2 back")
        r = c.api.get(view("all", "gather/z"), headers=RAW)
        check(r.status == 200 and r.raw == raw * 3, "gather with engine 2 back: %r" % r)
        after = fanout_counts(c)
        check(after["push"] == before["push"] + 1 and after["gather"] == before["gather"] + 1,
              "fan-out again once every engine is live: %s -> %s" % (before, after))
        idle(c, "engine 2 back")


# ------------------------------------------------------------ interrupts

def test_interrupt_waiting_participants(_):
    """Engine 2 spins in an earlier task; a fanned-out push to all waits for
    it on the others; interrupting the view aborts the spin and the push on
    every participant, and the engines work afterwards."""
    with Cluster(n=4, profile="fanout-intr", controller_args=FAN) as c:
        c.start()
        r = c.api.post(view("2", "execute") + "?block=false", {"code": "while true do end"})
        spin = expect(r, 202, "spin on engine 2")["request"]
        raw = struct.pack("<6d", *range(6))
        r = c.api.call("PUT", view("all", "vars/q") + "?dtype=float64&shape=6&block=false",
                       raw=raw, headers=OCTET)
        rid = expect(r, 202, "push to all, not blocking")["request"]
        r = c.api.post(view("all", "scatter") + "?block=false",
                       {"name": "q2", "data": list(range(8))})
        rid2 = expect(r, 202, "scatter queued behind it")["request"]
        time.sleep(1.0)
        check(c.api.get("/api/v1/requests/%s" % rid).status == 202,
              "the push must wait for engine 2")
        expect(c.api.post(view("all", "interrupt")), 200, "interrupt all")
        body = expect(wait_request(c, rid), 200, "the interrupted push")
        states = [x.get("status") for x in body.get("results", [])]
        check(states == ["aborted"] * 4, "every participant aborted: %s" % show(body))
        body = expect(wait_request(c, spin), 200, "the spin")
        check(body["results"][0].get("status") == "aborted", "spin aborted: %s" % show(body))
        # The scatter queued after the push ends too: normally, or aborted on
        # every participant when the view's interrupt reached an engine that
        # had already moved on to it (an interrupt stops whatever runs).
        body = expect(wait_request(c, rid2), 200, "the scatter after it")
        states = [x.get("status") for x in body.get("results", [])]
        check(states in (["ok"] * 4, ["aborted"] * 4),
              "the scatter after the interrupted push: %s" % show(body))
        if states == ["aborted"] * 4:
            expect_task_results(c.api.post(view("all", "scatter"),
                                           {"name": "q2", "data": list(range(8))}),
                                [0, 1, 2, 3], "scatter again")
        # Nothing was pushed; the engines work, and so does the next fan-out.
        r = c.api.post(view("all", "execute"), {"code": "return q == nil"})
        check([x.get("value") for x in expect_task_results(r, [0, 1, 2, 3], "q unset")]
              == [True] * 4, "an aborted push sets nothing: %r" % r)
        r = c.api.call("PUT", view("all", "vars/q") + "?dtype=float64&shape=6", raw=raw,
                       headers=OCTET)
        expect_task_results(r, [0, 1, 2, 3], "push after the interrupt")
        r = c.api.get(view("all", "gather/q"), headers=RAW)
        check(r.status == 200 and r.raw == raw * 4, "gather after the interrupt: %r" % r)
        r = c.api.get(view("all", "gather/q2"))
        check(expect(r, 200, "gather q2").get("result") == list(range(8)), "q2: %r" % r)
        idle(c, "interrupted fan-out")


TESTS = [
    ("fanout_same_answers", test_same_answers, "own"),
    ("fanout_concurrent_overlap", test_concurrent_overlap, "own"),
    ("fanout_two_jobs", test_two_jobs, "own"),
    ("fanout_lost_participant_and_dead_engine", test_lost_participant_and_dead_engine, "own"),
    ("fanout_interrupt_waiting_participants", test_interrupt_waiting_participants, "own"),
]
