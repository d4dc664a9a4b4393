"""test_views.py — target forms, execute (values, stdout), Lua errors, and
non-blocking requests."""

import os
import threading
import time

from harness import check, expect, expect_error
from common import same, show, view, expect_done, expect_task_results, values_of


def test_target_forms(c):
    ids = c.ids()
    check(len(ids) == 4, "expected 4 live engines: %s" % ids)
    rank_of = {e["id"]: e["rank"] for e in c.api.engines()}
    forms = [
        ("all", ids),
        (str(ids[0]), [ids[0]]),
        ("%d,%d" % (ids[1], ids[3]), [ids[1], ids[3]]),
        ("0:2", ids[0:2]),
        ("1::2", ids[1::2]),
        ("-1", [ids[-1]]),
        (":", ids),
        ("::-1", ids[::-1]),
        ("-2:", ids[-2:]),
    ]
    for spec, want in forms:
        r = c.api.post(view(spec, "execute"), {"code": "return mpi.rank()"})
        results = expect_task_results(r, want, "targets %r" % spec)
        got = [x.get("value") for x in results]
        check(got == [rank_of[i] for i in want],
              "targets %r: each result must come from its engine (ranks %s): %r"
              % (spec, [rank_of[i] for i in want], r))


def test_execute_value_and_stdout(c):
    ids = c.ids()
    rank_of = {e["id"]: e["rank"] for e in c.api.engines()}
    check(same(values_of(c, "return 6 * 7"), [42] * 4), "return 6*7")
    check(same(values_of(c, "return 'str'"), ["str"] * 4), "return a string")
    check(same(values_of(c, "return {1, 'a', true}"), [[1, "a", True]] * 4), "return a table")

    r = c.api.post(view("all", "execute"),
                   {"code": 'print("hello from", mpi.rank())\nprint("second line")'})
    results = expect_task_results(r, ids, "execute with print")
    for res in results:
        rank = rank_of[res["engine"]]
        check(res.get("stdout") == "hello from\t%d\nsecond line\n" % rank,
              "stdout of engine %s must be Lua print output: %r" % (res["engine"], r))
        check("value" not in res, "no return, no value: %r" % r)

    # stdout is per task: the next task starts empty.
    r = c.api.post(view("all", "execute"), {"code": "x_quiet = 1"})
    for res in expect_task_results(r, ids, "quiet execute"):
        check(res.get("stdout") == "", "stdout must be empty for a quiet task: %r" % r)

    # Output printed before an error is kept.
    r = c.api.post(view("all", "execute"), {"code": 'print("before"); error("after print")'})
    body = expect(r, 200, "print then error")
    for res in body.get("results", []):
        check(res.get("status") == "error" and "before" in res.get("stdout", ""),
              "stdout before an error must be kept: %r" % r)

    # State persists between tasks in the engine's namespace.
    expect_task_results(c.api.post(view("all", "execute"), {"code": "counter = (counter or 0) + 1"}),
                        ids, "counter 1")
    expect_task_results(c.api.post(view("all", "execute"), {"code": "counter = counter + 1"}),
                        ids, "counter 2")
    check(same(values_of(c, "return counter"), [2] * 4), "namespace must persist across tasks")


def check_error_result(r, ename, needle, what):
    body = expect(r, 200, what)
    check(body.get("status") == "error", "%s: overall status must be error: %r" % (what, r))
    results = body.get("results")
    check(isinstance(results, list) and len(results) == 4, "%s: 4 results: %r" % (what, r))
    for res in results:
        check(res.get("status") == "error", "%s: result status error: %r" % (what, r))
        check(res.get("ename") == ename, "%s: ename must be %s: %r" % (what, ename, r))
        check(isinstance(res.get("evalue"), str) and needle in res["evalue"],
              "%s: evalue must mention %r: %r" % (what, needle, r))
        tb = res.get("traceback")
        check(isinstance(tb, list) and tb and all(isinstance(x, str) for x in tb),
              "%s: traceback must be a non-empty list of strings: %r" % (what, r))
        check(isinstance(res.get("stdout"), str), "%s: stdout must be a string: %r" % (what, r))


def test_lua_error(c):
    ids = c.ids()
    r = c.api.post(view("all", "execute"), {"code": "error('boom')"})
    check_error_result(r, "RuntimeError", "boom", "execute error('boom')")
    check(same(values_of(c, "return 1 + 1"), [2] * 4), "engines must work after a Lua error")

    r = c.api.post(view("all", "execute"), {"code": "x = = 1"})
    check_error_result(r, "SyntaxError", "", "execute 'x = = 1'")
    check(same(values_of(c, "return 2 + 2"), [4] * 4), "engines must work after a syntax error")

    # An error deep in a function defined by run: traceback, engine survives.
    r = c.api.post(view("all", "run"), {"filename": "bad.lua", "source":
                   "function inner(t) return t.field.x end\nfunction outer() return inner({}) end\n"})
    expect_task_results(r, ids, "run bad.lua")
    r = c.api.post(view("all", "execute"), {"code": "outer()"})
    check_error_result(r, "RuntimeError", "", "calling outer() that indexes nil")
    tb = "\n".join(r.body["results"][0]["traceback"])
    check("inner" in tb or "bad.lua" in tb, "traceback should show where the error happened: %r" % r)

    # error() with a non-string value.
    r = c.api.post(view("all", "execute"), {"code": "error({code = 42})"})
    body = expect(r, 200, "error with a table value")
    check(body.get("status") == "error" and all(x.get("status") == "error" for x in body["results"]),
          "error(table) must be an error result: %r" % r)

    # Error on one engine only: the others are ok, in target order.
    rank_of = {e["id"]: e["rank"] for e in c.api.engines()}
    r = c.api.post(view("all", "execute"),
                   {"code": 'if mpi.rank() == 1 then error("only rank one") end return "fine"'})
    body = expect(r, 200, "error on rank 1 only")
    check(body.get("status") == "error", "one failing engine makes status error: %r" % r)
    for res in body.get("results", []):
        if rank_of[res["engine"]] == 1:
            check(res.get("status") == "error" and "only rank one" in res.get("evalue", ""),
                  "rank 1 must fail: %r" % r)
        else:
            check(res.get("status") == "ok" and res.get("value") == "fine",
                  "other ranks must succeed: %r" % r)
    check(same(values_of(c, "return mpi.rank()"), [0, 1, 2, 3]), "engines usable afterwards")


def wait_request(c, rid, limit=120):
    """GET /requests/{id}?wait= until 200; returns the response."""
    deadline = time.time() + limit
    r = None
    while time.time() < deadline:
        r = c.api.get("/api/v1/requests/%s?wait=30" % rid)
        if r.status != 202:
            return r
        check(isinstance(r.body, dict) and r.body.get("status") == "pending",
              "202 must carry status pending: %r" % r)
    raise AssertionError("request %s still pending after %d s: %r" % (rid, limit, r))


def expect_pending(r, targets, what):
    body = expect(r, 202, what)
    check("request" in body and body.get("targets") == targets and body.get("status") == "pending",
          "%s: expected {request, targets %s, status pending}: %r" % (what, targets, r))
    return body["request"]


# Busy for at least 3 s of wall-clock time (os.time has 1 s resolution).
SLOW = 'local t0 = os.time() while os.time() - t0 < 4 do end return "slow"'


def test_nonblocking_requests(c):
    ids = c.ids()
    r = c.api.post(view("all", "execute") + "?block=false", {"code": "nb = 5 return nb * 2"})
    if r.status == 200:
        # Answered at once, as the contract says, when every engine had
        # answered already (a quick task on idle engines can be that fast).
        expect_task_results(r, ids, "execute?block=false, already done")
        rid = r.body["request"]
    else:
        rid = expect_pending(r, ids, "execute?block=false")
        r = wait_request(c, rid)
    results = expect_task_results(r, ids, "GET /requests/%s" % rid)
    check(same([x.get("value") for x in results], [10] * 4), "request result values: %r" % r)
    # Done requests stay readable.
    r2 = c.api.get("/api/v1/requests/%s" % rid)
    check(r2.status == 200 and r2.body == r.body, "a done request reads the same again: %r" % r2)

    # A slow task: block=false, immediate GET is pending, ?wait= short is pending.
    r = c.api.post(view("all", "execute") + "?block=false", {"code": SLOW})
    rid = expect_pending(r, ids, "slow execute?block=false")
    r = c.api.get("/api/v1/requests/%s" % rid)
    expect_pending(r, ids, "GET /requests/{id} of a running task")
    t0 = time.time()
    r = c.api.get("/api/v1/requests/%s?wait=0.5" % rid)
    expect_pending(r, ids, "GET /requests/{id}?wait=0.5 of a running task")
    check(time.time() - t0 >= 0.45, "?wait=0.5 answered pending after %.2f s, without waiting"
          % (time.time() - t0))
    r = wait_request(c, rid)
    results = expect_task_results(r, ids, "slow request result")
    check(same([x.get("value") for x in results], ["slow"] * 4), "slow values: %r" % r)

    # ?timeout= answers 202 pending when the tasks outlast it.
    r = c.api.post(view("all", "execute") + "?timeout=1", {"code": SLOW})
    rid = expect_pending(r, ids, "slow execute?timeout=1")
    r = wait_request(c, rid)
    expect_task_results(r, ids, "timed-out request, later")

    # ?timeout= long enough: the normal blocking answer.
    r = c.api.post(view("all", "execute") + "?timeout=120", {"code": "return 3"})
    expect_task_results(r, ids, "execute?timeout=120")

    # Non-blocking works for other verbs too.
    r = c.api.get(view("all", "vars/nb") + "?block=false")
    if r.status != 200:  # 200 at once when every engine answered already
        r = wait_request(c, expect_pending(r, ids, "GET vars?block=false"))
    body = expect_done(r, 4, "vars request")
    check(same(body.get("results"), [5] * 4), "vars request results: %s" % show(body))

    expect_error(c.api.get("/api/v1/requests/999999999"), 404, "not_found", "unknown request")


def test_interrupt(c):
    """POST /views/{t}/interrupt stops a running task (status aborted) and
    the engine stays usable."""
    ids = c.ids()
    r = c.api.post(view("all", "execute") + "?block=false", {"code": "while true do end"})
    rid = expect_pending(r, ids, "endless loop, block=false")
    time.sleep(1.0)
    r = c.api.post(view("all", "interrupt"))
    body = expect(r, 200, "interrupt")
    check(body.get("targets") == ids, "interrupt names its targets: %r" % r)
    r = wait_request(c, rid, limit=60)
    body = expect(r, 200, "the interrupted request")
    check(body.get("status") == "error", "an aborted task makes status error: %r" % r)
    for res in body.get("results", []):
        check(res.get("status") == "aborted", "interrupted task must be aborted: %r" % r)
    check(same(values_of(c, "return 'alive'"), ["alive"] * 4), "engines usable after interrupt")
    # Interrupting idle engines is harmless.
    expect(c.api.post(view("all", "interrupt")), 200, "interrupt idle engines")
    check(same(values_of(c, "return 'still'"), ["still"] * 4), "engines usable after idle interrupt")


def controller_threads(pid):
    """The Threads: line of /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/%d/status" % pid)


def controller_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_waiting_requests_hold_no_threads(c):
    """100 clients long-polling a request that cannot finish by itself: the
    controller has their 100 connections open but not 100 more threads
    (suspend/resume, not a blocked thread per request), and answers /info
    while every one of them is still waiting.  Then an interrupt ends the
    request and all 100 get the same answer."""
    ids = c.ids()
    pid = c.controller.pid
    n = 100
    threads_before, fds_before = controller_threads(pid), controller_fds(pid)
    r = c.api.post(view("all", "execute") + "?block=false", {"code": "while true do end"})
    rid = expect_pending(r, ids, "endless execute?block=false")
    answers = [None] * n

    def wait(i):
        try:
            answers[i] = c.api.get("/api/v1/requests/%s?wait=120" % rid, timeout=180)
        except Exception as e:  # reported below
            answers[i] = e

    clients = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(n)]
    try:
        for t in clients:
            t.start()
        # The waiters' connections are open in the controller (one socket
        # each; a few fds counted before may have been connections closing)
        # before anything is measured.
        deadline = time.time() + 60
        while controller_fds(pid) < fds_before + n - 5:
            check(time.time() < deadline, "the controller never had the %d waiters' connections"
                  " open: %d fds, %d before" % (n, controller_fds(pid), fds_before))
            time.sleep(0.2)
        time.sleep(1.0)  # let the last requests be read and suspended
        threads_during = max(controller_threads(pid) for _ in range(5))
        check(threads_during - threads_before <= 8,
              "controller threads went from %d to %d with %d waiting requests: a thread per "
              "waiting request?" % (threads_before, threads_during, n))
        t0 = time.time()
        info = expect(c.api.get("/api/v1/info", timeout=60), 200, "info while %d requests wait" % n)
        took = time.time() - t0
        check(info.get("requests_open", 0) >= 1, "the endless request is open: %s" % info)
        early = [a for a in answers if a is not None]
        check(not early, "%d waiters were answered before the request ended: %r"
              % (len(early), early[:2]))
        check(took < 30, "/info took %.1f s while %d requests waited" % (took, n))
    finally:
        expect(c.api.post(view("all", "interrupt")), 200, "interrupt the endless request")
        for t in clients:
            t.join(120)
    bad = [a for a in answers if not (hasattr(a, "status") and a.status == 200)]
    check(not bad, "%d of %d waiting clients did not get 200: %r" % (len(bad), n, bad[:3]))
    check(all(a.body == answers[0].body for a in answers), "all waiters get the same answer")
    check(answers[0].body.get("request") == rid and answers[0].body.get("status") == "error"
          and all(x.get("status") == "aborted" for x in answers[0].body.get("results", [])),
          "the interrupted request: %r" % answers[0])


def test_concurrent_requests(c):
    """40 clients at once, each with its own blocking execute: every answer
    carries that client's own values (no crossed requests)."""
    ids = c.ids()
    answers = [None] * 40

    def go(i):
        try:
            answers[i] = c.api.post(view("all", "execute"), {"code": "return %d" % i}, timeout=180)
        except Exception as e:  # reported below
            answers[i] = e

    clients = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(40)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(200)
    for i, r in enumerate(answers):
        check(hasattr(r, "status"), "client %d: %r" % (i, r))
        results = expect_task_results(r, ids, "concurrent execute %d" % i)
        check(same([x.get("value") for x in results], [i] * 4), "client %d got %r" % (i, r))
    check(len({r.body["request"] for r in answers}) == 40, "40 distinct request ids")


TESTS = [
    ("target_forms", test_target_forms, "shared"),
    ("execute_value_and_stdout", test_execute_value_and_stdout, "shared"),
    ("lua_error", test_lua_error, "shared"),
    ("nonblocking_requests", test_nonblocking_requests, "shared"),
    ("interrupt", test_interrupt, "shared"),
    ("waiting_requests_hold_no_threads", test_waiting_requests_hold_no_threads, "shared"),
    ("concurrent_requests", test_concurrent_requests, "shared"),
]
