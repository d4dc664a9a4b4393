"""test_tasks.py — load-balanced tasks: submit, batch, dependencies, map,
timeouts, abort, retries and loss when an engine dies, history in SQLite that
survives a controller killed with SIGKILL."""

import os
import signal
import time

from harness import Cluster, check, expect, expect_error
from common import same, view


def wait_task(api, tid, what, timeout=60):
    r = api.get("/api/v1/tasks/%d?wait=%d" % (tid, timeout), timeout=timeout + 30)
    body = expect(r, 200, what)
    return body


def submit(api, spec, what, status=202):
    return expect(api.post("/api/v1/tasks", spec), status, what)


def test_task_function_and_code(c):
    api = c.api
    r = api.post(view("all", "execute"), {"code": "function sq(x) return x * x end"})
    expect(r, 200, "define sq")
    t = submit(api, {"function": "sq", "args": [7], "tags": ["itest", "sq"]}, "submit sq(7)")
    check(isinstance(t.get("id"), int) and t.get("state") in ("pending", "running", "completed"),
          "submit answer: %r" % t)
    done = wait_task(api, t["id"], "wait sq(7)")
    check(done["state"] == "completed" and same(done.get("result"), 49),
          "sq(7) should complete with 49: %r" % done)
    for key in ("submitted", "started", "completed"):
        check(isinstance(done.get(key), str) and done[key].endswith("Z") and "." in done[key],
              "%s must be ISO 8601 UTC with microseconds: %r" % (key, done))
    check(isinstance(done.get("engine"), int), "engine recorded: %r" % done)
    check(done.get("tags") == ["itest", "sq"], "tags kept: %r" % done)

    r = api.post("/api/v1/tasks?block=true", {"code": "print('hi'); return 6 * 7"})
    body = expect(r, 200, "blocking code task")
    check(same(body.get("result"), 42) and body.get("stdout") == "hi\n",
          "code task returns its chunk's value and stdout: %r" % body)

    r = api.post("/api/v1/tasks?block=true", {"code": "error('boom')"})
    body = expect(r, 200, "failing task")
    check(body["state"] == "failed" and body["error"]["ename"] == "RuntimeError"
          and "boom" in body["error"]["evalue"], "failed task carries the error: %r" % body)


def test_task_bad_input(c):
    api = c.api
    expect_error(api.post("/api/v1/tasks", {"nope": 1}), 400, "bad_request", "unknown field")
    expect_error(api.post("/api/v1/tasks", {"function": "f", "code": "x"}), 400, "bad_request",
                 "function and code")
    expect_error(api.post("/api/v1/tasks", {"code": "x", "retries": -1}), 400, "bad_request",
                 "negative retries")
    expect_error(api.post("/api/v1/tasks", {"code": "x", "timeout": "soon"}), 400,
                 "bad_request", "timeout not a number")
    expect_error(api.post("/api/v1/tasks", {"code": "x", "after": ["a"]}), 400, "bad_request",
                 "after not ids")
    expect_error(api.post("/api/v1/tasks", []), 400, "bad_request", "empty batch")
    expect_error(api.post("/api/v1/tasks", [{"code": "x"}, 5]), 400, "bad_request",
                 "batch with a non-object")
    expect_error(api.post("/api/v1/tasks", raw=b"{", headers={}), 400, "bad_request",
                 "malformed JSON")
    expect_error(api.get("/api/v1/tasks/999999999"), 404, "not_found", "unknown task")
    expect_error(api.get("/api/v1/tasks/abc"), 404, "not_found", "non-numeric task id")
    expect_error(api.get("/api/v1/tasks?state=weird"), 400, "bad_request", "bad state filter")
    expect_error(api.get("/api/v1/tasks?limit=0"), 400, "bad_request", "bad limit")
    expect_error(api.post("/api/v1/map", {"function": "f"}), 400, "bad_request",
                 "map without sequences")
    expect_error(api.call("DELETE", "/api/v1/tasks/999999999"), 404, "not_found",
                 "abort unknown")
    r = api.post("/api/v1/tasks?block=true", {"code": "return 1", "targets": "7,8"})
    expect_error(r, 422, "no_engines", "targets naming no live engine")


def test_many_tasks_batch(c):
    api = c.api
    expect(api.post(view("all", "execute"), {"code": "function inc(x) return x + 1 end"}), 200,
           "define inc")
    n = 10000
    r = api.post("/api/v1/tasks", [{"function": "inc", "args": [i]} for i in range(n)],
                 timeout=120)
    ids = expect(r, 202, "batch of %d" % n).get("ids")
    check(isinstance(ids, list) and len(ids) == n, "batch answer lists %d ids" % n)
    last = wait_task(api, ids[-1], "last of the batch", timeout=120)
    check(last["state"] == "completed", "last task completed: %r" % last)
    # Every result, through the history query (pages of 1000).
    results, cursor = {}, 0
    while True:
        r = api.get("/api/v1/tasks?limit=1000&cursor=%d" % cursor, timeout=60)
        body = expect(r, 200, "history page")
        for t in body["tasks"]:
            results[t["id"]] = t
        if not body.get("next_cursor"):
            break
        cursor = body["next_cursor"]
    missing = [i for i in ids if i not in results]
    check(not missing, "history lacks %d of the batch, e.g. %s" % (len(missing), missing[:5]))
    wrong = [i for k, i in enumerate(ids)
             if results[i]["state"] != "completed" or not same(results[i].get("result"), k + 1)]
    check(not wrong, "%d tasks wrong, e.g. %r" % (len(wrong), [results[i] for i in wrong[:3]]))
    q = expect(api.get("/api/v1/queue"), 200, "queue")
    check(isinstance(q.get("engines"), dict) and len(q["engines"]) >= 4, "queue: %r" % q)


def test_dependencies(c):
    api = c.api
    first = submit(api, {"code": "local t = mpi.wtime(); while mpi.wtime() - t < 0.3 do end "
                                 "return mpi.rank()"}, "slow first")
    after = submit(api, {"code": "return 'after'", "after": [first["id"]]}, "after")
    follow = submit(api, {"code": "return mpi.rank()", "follow": [first["id"]]}, "follow")
    a = wait_task(api, after["id"], "after done")
    f = wait_task(api, follow["id"], "follow done")
    fst = wait_task(api, first["id"], "first done")
    check(a["state"] == "completed" and a["started"] >= fst["completed"],
          "after started only once first completed: %r / %r" % (a, fst))
    check(f["engine"] == fst["engine"], "follow ran on the same engine: %r / %r" % (f, fst))

    bad = submit(api, {"code": "error('no')"}, "failing dependency")
    dep = submit(api, {"code": "return 1", "after": [bad["id"]]}, "dependent of a failure")
    d = wait_task(api, dep["id"], "dependent settles")
    check(d["state"] == "failed" and d["error"]["ename"] == "DependencyError",
          "dependent of a failed task fails with DependencyError: %r" % d)
    ok = submit(api, {"code": "return 2", "after": [bad["id"]], "success_only": False},
                "success_only false")
    o = wait_task(api, ok["id"], "success_only false settles")
    check(o["state"] == "completed" and same(o.get("result"), 2), "runs anyway: %r" % o)
    imp = submit(api, {"code": "return 1", "after": [987654321]}, "unknown dependency")
    i = wait_task(api, imp["id"], "unknown dependency settles")
    check(i["state"] == "failed" and i["error"]["ename"] == "ImpossibleDependency",
          "unknown dependency is impossible, not a wait: %r" % i)


def test_map(c):
    api = c.api
    expect(api.post(view("all", "execute"), {"code": "function add(a, b) return a + b end"}),
           200, "define add")
    r = api.post("/api/v1/map", {"function": "add", "sequences": [list(range(100)),
                                                                   list(range(100, 200))],
                                 "chunksize": 7}, timeout=120)
    body = expect(r, 200, "map add")
    check(body.get("status") == "ok" and same(body.get("results"),
                                               [a + a + 100 for a in range(100)]),
          "map results in input order: %r" % body)
    check(len(body.get("tasks", [])) == 15, "100 items in chunks of 7 are 15 tasks: %r" % body)
    again = expect(api.get("/api/v1/requests/%d" % body["request"]), 200, "map via requests")
    check(same(again.get("results"), body["results"]), "GET /requests gives the map back")


INV = "function inv(x) if x == 0 then error('zero') end return 1/x end"


def map_errors(body):
    """The map answer's errors by position in "results"."""
    errors = body.get("errors") or []
    check(all(isinstance(e.get("index"), int) for e in errors),
          "every map error names its position in results: %r" % body)
    return {e["index"]: e for e in errors}


def test_map_errors_line_up(c):
    """A failing item leaves null at its own position (and an entry in
    "errors" naming it), in ordered and completion-order maps, with chunks of
    one and of several items: results always line up with the items."""
    api = c.api
    expect(api.post(view("all", "execute"), {"code": INV}), 200, "define inv")
    items = [1, 2, 0, 4]
    for chunksize in (1, 2, 3, 4):
        what = "ordered map of inv, chunksize %d" % chunksize
        body = expect(api.post("/api/v1/map", {"function": "inv", "sequences": [items],
                                               "chunksize": chunksize}), 200, what)
        check(body.get("status") == "error" and same(body.get("results"), [1.0, 0.5, None, 0.25]),
              "%s: results must line up with the items: %r" % (what, body))
        errors = map_errors(body)
        check(list(errors) == [2], "%s: one error, at index 2: %r" % (what, body))
        e = errors[2]
        check(e.get("item") == 2 and e.get("ename") == "RuntimeError" and "zero" in e.get("evalue", "")
              and isinstance(e.get("traceback"), list) and isinstance(e.get("task"), int)
              and e["task"] in body["tasks"],
              "%s: the error names item 2, its task and the Lua error: %r" % (what, body))
        again = expect(api.get("/api/v1/requests/%d" % body["request"]), 200, what + " again")
        check(same(again.get("results"), body["results"]) and again.get("errors") == body["errors"],
              "%s: GET /requests gives the same answer: %r" % (what, again))

        what = "unordered map of inv, chunksize %d" % chunksize
        body = expect(api.post("/api/v1/map", {"function": "inv", "sequences": [items],
                                               "chunksize": chunksize, "ordered": False}), 200, what)
        results = body.get("results")
        check(isinstance(results, list) and len(results) == 4, "%s: 4 results: %r" % (what, body))
        errors = map_errors(body)
        check(len(errors) == 1, "%s: one error: %r" % (what, body))
        (k, e), = errors.items()
        check(results[k] is None and e.get("item") == 2 and "zero" in e.get("evalue", ""),
              "%s: null where the failed item is, the error names item 2: %r" % (what, body))
        check(sorted(v for v in results if v is not None) == [0.25, 0.5, 1.0],
              "%s: every other item has its result: %r" % (what, body))

    # A chunk that fails as a whole (no such function): every item has an error.
    what = "map of an undefined function"
    body = expect(api.post("/api/v1/map", {"function": "no_such_fn", "sequences": [[1, 2, 3]],
                                           "chunksize": 2}), 200, what)
    errors = map_errors(body)
    check(body.get("status") == "error" and body.get("results") == [None, None, None]
          and sorted(errors) == [0, 1, 2]
          and all(e.get("ename") == "NameError" for e in errors.values()),
          "%s: one NameError per item: %r" % (what, body))
    # A result that cannot be sent fails that item only.
    expect(api.post(view("all", "execute"),
                    {"code": "function fn_or_num(x) if x == 2 then return print end return x end"}),
           200, "define fn_or_num")
    what = "map with an unsendable result"
    body = expect(api.post("/api/v1/map", {"function": "fn_or_num", "sequences": [[1, 2, 3]],
                                           "chunksize": 3}), 200, what)
    errors = map_errors(body)
    check(same(body.get("results"), [1, None, 3]) and list(errors) == [1]
          and errors[1].get("ename") == "TypeError",
          "%s: the item whose result cannot be sent fails alone: %r" % (what, body))
    # The chunk task of a map with a failing item is failed, with that item's error.
    t = wait_task(api, body["tasks"][0], "chunk task of a partly failed map")
    check(t["state"] == "failed" and t["error"].get("ename") == "TypeError",
          "a chunk with a failing item is a failed task: %r" % t)


def test_timeout_and_abort(c):
    api = c.api
    t = submit(api, {"code": "while true do end", "timeout": 1}, "endless with timeout")
    done = wait_task(api, t["id"], "timeout fires")
    check(done["state"] == "failed" and done["error"]["ename"] == "TimeoutError",
          "timeout ends the task as failed/TimeoutError: %r" % done)
    # The engine is usable afterwards.
    r = api.post("/api/v1/tasks?block=true", {"code": "return 5", "targets": [done["engine"]]})
    check(expect(r, 200, "after timeout").get("result") == 5, "engine usable: %r" % r)

    # Fill every engine, then abort a queued task and force-abort a running one.
    ids = c.ids()
    runners = [submit(api, {"code": "while true do end", "targets": [e]}, "busy %d" % e)
               for e in ids]
    queued = submit(api, {"code": "return 1", "targets": [ids[0]]}, "queued behind")
    r = api.call("DELETE", "/api/v1/tasks/%d" % queued["id"])
    check(expect(r, 200, "abort queued")["state"] == "aborted", "queued task aborted: %r" % r)
    time.sleep(0.3)
    r = api.call("DELETE", "/api/v1/tasks/%d" % runners[0]["id"])
    expect_error(r, 409, "conflict", "abort running without force")
    for t in runners:
        expect(api.call("DELETE", "/api/v1/tasks/%d?force=true" % t["id"]), 200, "force abort")
    for t in runners:
        d = wait_task(api, t["id"], "forced abort settles")
        check(d["state"] == "aborted", "force-aborted task: %r" % d)
    r = api.call("DELETE", "/api/v1/tasks/%d" % runners[0]["id"])
    expect_error(r, 409, "conflict", "abort of a finished task")
    r = api.post("/api/v1/tasks/%d/resubmit" % queued["id"])
    new = expect(r, 202, "resubmit")
    check(new["id"] != queued["id"], "resubmit makes a new task")
    n = wait_task(api, new["id"], "resubmitted")
    check(n["state"] == "completed" and same(n.get("result"), 1), "resubmitted runs: %r" % n)


def test_abort_right_after_start(c):
    """A forced abort that lands while the engine is starting the task (the
    window between taking it from its inbox and the runtime starting it)
    still stops it: rounds of submit + immediate abort, each followed by a
    task on the same engine that must run."""
    api = c.api
    e = c.ids()[0]
    for i in range(25):
        t = submit(api, {"code": "while true do end", "targets": [e]}, "spin %d" % i)
        if i % 5:
            time.sleep(0.001 * (i % 5))  # sweep the moment the abort lands
        expect(api.call("DELETE", "/api/v1/tasks/%d?force=true" % t["id"]), 200, "abort %d" % i)
        d = wait_task(api, t["id"], "abort %d settles" % i, timeout=20)
        check(d["state"] == "aborted", "round %d: aborted: %r" % (i, d))
        n = submit(api, {"code": "return %d" % i, "targets": [e]}, "round %d: next task" % i)
        d = wait_task(api, n["id"], "round %d: next task" % i, timeout=20)
        check(d["state"] == "completed" and same(d.get("result"), i),
              "round %d: the engine runs the next task: %r" % (i, d))


def direct_tasks(api, request, what):
    """The stored tasks of a direct-view request, in engine order."""
    q = expect(api.get("/api/v1/tasks?kind=direct&request=%d" % request), 200, what)
    return sorted(q["tasks"], key=lambda t: t["engine"])


def test_direct_tasks_in_store(c):
    """Direct-view work is tasks too: one task of kind "direct" per target,
    in the history with times, engine, outcome and stdout, and answered by
    id."""
    api = c.api
    ids = c.ids()
    r = api.post(view("all", "execute"), {"code": "print('hello ' .. mpi.rank()); return 1"})
    req = expect(r, 200, "direct execute")["request"]
    tasks = direct_tasks(api, req, "history of a direct request")
    check([t["engine"] for t in tasks] == ids, "one task per target: %r" % tasks)
    for t in tasks:
        check(t["kind"] == "direct" and t["request"] == req and t["state"] == "completed"
              and t.get("op") == "execute" and t.get("code", "").startswith("print")
              and t["stdout"].startswith("hello ") and "result" not in t,
              "a direct task's record: %r" % t)
        for key in ("submitted", "started", "completed"):
            check(isinstance(t.get(key), str) and t[key].endswith("Z"), "%s set: %r" % (key, t))
        one = expect(api.get("/api/v1/tasks/%d" % t["id"]), 200, "direct task by id")
        check(one["id"] == t["id"] and one["kind"] == "direct" and one["stdout"] == t["stdout"],
              "GET by id answers a direct task: %r" % one)
    q = expect(api.get("/api/v1/tasks?kind=balanced&request=%d" % req), 200, "balanced filter")
    check(q["tasks"] == [], "no balanced task belongs to a direct request: %r" % q)
    # A failure is the task's outcome.
    r = api.post(view(str(ids[0]), "execute"), {"code": "error('direct boom')"})
    req = expect(r, 200, "failing direct execute")["request"]
    (t,) = direct_tasks(api, req, "history of a failed direct request")
    check(t["state"] == "failed" and t["error"]["ename"] == "RuntimeError"
          and "direct boom" in t["error"]["evalue"], "a failed direct task: %r" % t)
    expect_error(api.post("/api/v1/tasks/%d/resubmit" % t["id"]), 422, "invalid_value",
                 "resubmit of a direct task")
    # A map's chunks are found by their request too.
    expect(api.post(view("all", "execute"), {"code": "function twice(x) return 2 * x end"}),
           200, "define twice")
    m = expect(api.post("/api/v1/map", {"function": "twice", "sequences": [[1, 2, 3]]}), 200,
               "map")
    q = expect(api.get("/api/v1/tasks?request=%d" % m["request"]), 200, "map chunks")
    check(sorted(t["id"] for t in q["tasks"]) == sorted(m["tasks"])
          and all(t["kind"] == "balanced" for t in q["tasks"]), "map chunks by request: %r" % q)
    expect_error(api.get("/api/v1/tasks?kind=weird"), 400, "bad_request", "bad kind filter")
    expect_error(api.get("/api/v1/tasks?request=0"), 400, "bad_request", "bad request filter")


def wait_running_on(api, tid, engine, what, timeout=60):
    """Polls until the task runs on engine; returns it."""
    deadline = time.time() + timeout
    while True:
        t = expect(api.get("/api/v1/tasks/%d" % tid), (200, 202), what)
        if t["state"] == "running" and t.get("engine") == engine:
            return t
        check(t["state"] in ("pending", "running") and time.time() < deadline,
              "%s: expected it running on engine %d: %r" % (what, engine, t))
        time.sleep(0.1)


def test_engine_death_retry_and_lost(_unused=None):
    """Two tasks run on engines that are then SIGKILLed: the one with
    retries=1 runs again on the surviving engine and completes, the one with
    retries=0 ends lost.  Three 1-rank jobs, so a kill takes no MPI peer
    along."""
    with Cluster(jobs=[1, 1, 1], profile="tasks-death",
                 controller_args=["--heartbeat-timeout", "3"]) as c:
        c.start()
        api = c.api
        survivor, victim, doomed_on = c.ids()
        busy = "local t = mpi.wtime(); while mpi.wtime() - t < %g do end return %s"
        # The survivor is busy, so the retry candidate must start on the victim.
        blocker = submit(api, {"code": busy % (3, "'blocker'"), "targets": [survivor]},
                         "blocker on the survivor")
        wait_running_on(api, blocker["id"], survivor, "blocker")
        retried = submit(api, {"code": busy % (1, "'retried'"), "retries": 1,
                               "targets": [victim, survivor]}, "retry candidate")
        first = wait_running_on(api, retried["id"], victim, "retry candidate on the victim")
        check(first.get("retries") == 1, "retries before the kill: %r" % first)
        lost = submit(api, {"code": busy % (30, "1"), "retries": 0, "targets": [doomed_on]},
                      "task without retries")
        wait_running_on(api, lost["id"], doomed_on, "task without retries running")
        os.kill(c.engine_pids[victim], signal.SIGKILL)
        os.kill(c.engine_pids[doomed_on], signal.SIGKILL)

        l = wait_task(api, lost["id"], "lost task settles")
        check(l["state"] == "lost" and l["error"]["ename"] == "EngineLost"
              and l.get("engine") == doomed_on,
              "the task with retries=0 on the killed engine is lost: %r" % l)
        r = wait_task(api, retried["id"], "retried task settles")
        check(r["state"] == "completed" and same(r.get("result"), "retried"),
              "the task with retries=1 completes after its engine died: %r" % r)
        check(r.get("engine") == survivor,
              "it ran again on the surviving engine %d: %r" % (survivor, r))
        check(r.get("retries") == 0, "the retry used up its one retry: %r" % r)
        check(r["started"] > first["started"], "it started again after the kill: %r vs %r"
              % (r, first))
        b = wait_task(api, blocker["id"], "blocker settles")
        check(b["state"] == "completed", "the survivor's own task completes: %r" % b)
    return []


def test_history_survives_restart(_unused=None):
    with Cluster(n=2, profile="tasks-restart") as c:
        c.start()
        api = c.api
        done = expect(api.post("/api/v1/tasks?block=true",
                               {"code": "return {x = 1, y = 'two'}", "tags": ["keep"]}),
                      200, "task before the crash")
        check(done["state"] == "completed", "completed before the crash: %r" % done)
        arr = expect(api.post("/api/v1/tasks?block=true", {"code": "return nd.arange(5)"}),
                     200, "array result")
        direct = expect(api.post(view("all", "execute"), {"code": "return 7"}), 200,
                        "direct request before the crash")["request"]
        direct_ids = [t["id"] for t in direct_tasks(api, direct, "direct tasks before the crash")]
        check(len(direct_ids) == 2, "two direct tasks: %r" % direct_ids)
        running = submit(api, {"code": "while true do end"}, "running at the crash")
        time.sleep(0.5)
        c.kill_controller(signal.SIGKILL)
        old = c.client_info
        c.restart_controller()
        api = c.api
        check(c.client_info["url"] == old["url"] and c.client_info["token"] == old["token"],
              "a restarted controller keeps its URL and token: %r vs %r" % (c.client_info, old))
        r = expect(api.post("/api/v1/tasks?block=true", {"code": "return 'back'"}), 200,
                   "engines reconnected to the restarted controller")
        check(r.get("result") == "back", "a task runs after the restart: %r" % r)
        again = expect(api.get("/api/v1/tasks/%d" % done["id"]), 200, "after restart")
        check(same(again.get("result"), {"x": 1, "y": "two"}) and again["state"] == "completed",
              "completed task survives a SIGKILL of the controller: %r" % again)
        a2 = expect(api.get("/api/v1/tasks/%d" % arr["id"]), 200, "array after restart")
        check(same(a2.get("result"), [0, 1, 2, 3, 4]), "array result kept raw: %r" % a2)
        r = expect(api.get("/api/v1/tasks/%d" % running["id"]), 200, "running after restart")
        check(r["state"] == "lost", "a task running at the crash is lost, not forgotten: %r" % r)
        for tid in direct_ids:
            d = expect(api.get("/api/v1/tasks/%d" % tid), 200, "direct task after restart")
            check(d["kind"] == "direct" and d["state"] == "completed" and d["request"] == direct,
                  "a direct task survives a SIGKILL of the controller: %r" % d)
        q = expect(api.get("/api/v1/tasks?tag=keep"), 200, "query by tag")
        check([t["id"] for t in q["tasks"]] == [done["id"]], "tag query: %r" % q)
        p = expect(api.call("DELETE", "/api/v1/tasks"), 200, "purge")
        check(p.get("purged", 0) >= 2, "purge removes finished tasks: %r" % p)
        expect_error(api.get("/api/v1/tasks/%d" % done["id"]), 404, "not_found", "purged")
    return []


TESTS = [
    ("task_function_and_code", test_task_function_and_code, "shared"),
    ("task_bad_input", test_task_bad_input, "shared"),
    ("tasks_10000_batch", test_many_tasks_batch, "shared"),
    ("task_dependencies", test_dependencies, "shared"),
    ("task_map", test_map, "shared"),
    ("task_map_errors_line_up", test_map_errors_line_up, "shared"),
    ("task_timeout_abort_resubmit", test_timeout_and_abort, "shared"),
    ("task_abort_right_after_start", test_abort_right_after_start, "shared"),
    ("task_direct_in_store", test_direct_tasks_in_store, "shared"),
    ("task_engine_death_retry_lost", test_engine_death_retry_and_lost, "own"),
    ("task_history_survives_restart", test_history_survives_restart, "own"),
]


def test_corrupt_store_is_a_clear_error(_unused=None):
    """A task database that is not one stops the controller at start-up with
    a message naming the file, and no crash."""
    import subprocess
    import tempfile
    import shutil
    from harness import CONTROLLER
    d = tempfile.mkdtemp(prefix="ippc-itest-db-")
    try:
        db = os.path.join(d, "tasks.db")
        with open(db, "wb") as f:
            f.write(b"this is not a database" * 100)
        p = subprocess.run([CONTROLLER, "--port", "0", "--db", db],
                           env=dict(os.environ, IPPC_DIR=d), capture_output=True, timeout=30)
        err = p.stderr.decode(errors="replace")
        check(p.returncode == 1, "exit status 1 expected, got %d: %s" % (p.returncode, err))
        check(db in err and "task store" in err, "the message names the file: %r" % err)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return []


TESTS.append(("task_store_corrupt_file", test_corrupt_store_is_a_clear_error, "own"))
