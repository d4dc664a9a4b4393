"""test_runtime.py — the engine runtime through REST with 4 real MPI engines:
every mpi collective on numbers, arrays and tables (values checked on every
rank), point-to-point, comm_split, native plugins (psum, the stencil against a
serial Lua computation, bad libraries), interrupts of a spinning loop, of a
blocked mpi.recv and of a mismatched collective, and the namespace ops
(list / delete / reset)."""

import os
import time

from harness import ROOT, BUILD, check, expect
from common import same, show, view, expect_done, expect_task_results, values_of

PLUGINS = os.path.join(BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD), "plugins")


def plugin(name):
    return os.path.join(PLUGINS, "lib%s.so" % name)


def run_all(c, code, what=None):
    """execute on all engines; returns the values in rank order (None where
    the chunk returned nil)."""
    ids = c.ids()
    r = c.api.post(view("all", "execute"), {"code": code})
    results = expect_task_results(r, ids, what or "execute %r" % code[:80])
    return [res.get("value") for res in results]


def wait_request(c, rid, limit=120):
    deadline = time.time() + limit
    r = None
    while time.time() < deadline:
        r = c.api.get("/api/v1/requests/%s?wait=20" % rid)
        if r.status != 202:
            return r
    raise AssertionError("request %s still pending after %d s: %r" % (rid, limit, r))


def start(c, code, targets="all"):
    """execute ?block=false; returns the request id."""
    r = c.api.post(view(targets, "execute") + "?block=false", {"code": code})
    body = expect(r, 202, "execute?block=false %r" % code[:60])
    return body["request"]


def interrupt_until_done(c, rid, targets="all", limit=60):
    """Interrupts targets until the request is done (an interrupt that lands
    before the task started is dropped by design); returns the answer."""
    deadline = time.time() + limit
    while time.time() < deadline:
        expect(c.api.post(view(targets, "interrupt")), 200, "interrupt %s" % targets)
        r = c.api.get("/api/v1/requests/%s?wait=2" % rid)
        if r.status == 200:
            return r
    raise AssertionError("request %s not stopped by interrupts within %d s" % (rid, limit))


# ---------------------------------------------------------------- collectives

def test_collectives_numbers(c):
    p = 4
    check(same(run_all(c, "return mpi.allreduce(mpi.rank())"), [6] * p), "allreduce int")
    check(same(run_all(c, "return mpi.allreduce(mpi.rank() + 0.5)"), [8.0] * p),
          "allreduce float")
    check(same(run_all(c, "return mpi.allreduce(mpi.rank() == 0 and 0.5 or 1)"), [3.5] * p),
          "allreduce of mixed integers and floats is a float")
    for op, want in (("prod", 24), ("min", 1), ("max", 4)):
        check(same(run_all(c, "return mpi.allreduce(mpi.rank() + 1, '%s')" % op), [want] * p),
              "allreduce %s" % op)
    check(same(run_all(c, "return mpi.allreduce(mpi.rank() == 2, 'lor')"), [True] * p), "lor")
    check(same(run_all(c, "return mpi.allreduce(mpi.rank() == 2, 'land')"), [False] * p), "land")
    check(same(run_all(c, "return mpi.reduce(mpi.rank() * 10, 'sum', 2)"), [None, None, 60, None]),
          "reduce to root 2: a value on the root, nil elsewhere")
    check(same(run_all(c, "return mpi.bcast(mpi.rank() == 3 and 42 or nil, 3)"), [42] * p),
          "bcast number")
    check(same(run_all(c, "return mpi.gather(mpi.rank() * 2, 1)"), [None, [0, 2, 4, 6], None, None]),
          "gather to root 1")
    check(same(run_all(c, "return mpi.allgather(mpi.rank() + 0.25)"), [[0.25, 1.25, 2.25, 3.25]] * p),
          "allgather float")
    check(same(run_all(c, "return mpi.scatter(mpi.rank() == 0 and {10, 11, 12, 13} or nil)"),
               [10, 11, 12, 13]), "scatter")
    got = run_all(c, "local l = {} for j = 1, mpi.size() do l[j] = mpi.rank() * 10 + j - 1 end "
                     "return mpi.alltoall(l)")
    check(same(got, [[r + 10 * j for j in range(p)] for r in range(p)]), "alltoall: %s" % show(got))


def test_collectives_arrays(c):
    p = 4
    got = run_all(c, "local r = mpi.allreduce(nd.arange(4) * (mpi.rank() + 1)) "
                     "return {r:dtype(), r:totable()}")
    check(same(got, [["int64", [0, 10, 20, 30]]] * p), "allreduce int64 array: %s" % show(got))
    got = run_all(c, "local r = mpi.allreduce(nd.full({2, 2}, mpi.rank(), 'float32'), 'max') "
                     "return {r:dtype(), r:totable()}")
    check(same(got, [["float32", [[3.0, 3.0], [3.0, 3.0]]]] * p), "allreduce float32 2-D max")
    got = run_all(c, "local r = mpi.reduce(nd.ones(3) * mpi.rank(), 'sum', 1) "
                     "return r and r:totable() or 'none'")
    check(same(got, ["none", [6.0, 6.0, 6.0], "none", "none"]), "reduce array: %s" % show(got))
    got = run_all(c, "local a = mpi.bcast(mpi.rank() == 2 and nd.random({3, 2}, 7) or nil, 2) "
                     "return {a:shape(), a:sum() == nd.random({3, 2}, 7):sum()}")
    check(same(got, [[[3, 2], True]] * p), "bcast array: %s" % show(got))
    got = run_all(c, "local g = mpi.allgather(nd.arange(mpi.rank() + 1, 'int32')) "
                     "local out = {} for i, a in ipairs(g) do out[i] = {a:dtype(), a:totable()} end "
                     "return out")
    want = [["int32", list(range(k + 1))] for k in range(p)]
    check(same(got, [want] * p), "allgather arrays of different lengths: %s" % show(got))
    got = run_all(c, "local g = mpi.gather(nd.full(2, mpi.rank() + 0.5), 3) "
                     "if not g then return 'none' end "
                     "local s = 0 for _, a in ipairs(g) do s = s + a:sum() end return s")
    check(same(got, ["none", "none", "none", 16.0]), "gather arrays: %s" % show(got))
    got = run_all(c, "local l = mpi.rank() == 1 and {nd.zeros(1), nd.ones(2), nd.full(3, 2.0), "
                     "nd.arange(4, 'float64')} or nil local a = mpi.scatter(l, 1) "
                     "return a:totable()")
    check(same(got, [[0.0], [1.0, 1.0], [2.0, 2.0, 2.0], [0.0, 1.0, 2.0, 3.0]]),
          "scatter arrays: %s" % show(got))
    got = run_all(c, "local l = {} for j = 1, mpi.size() do l[j] = nd.full(j, mpi.rank()) end "
                     "local r = mpi.alltoall(l) local out = {} "
                     "for j, a in ipairs(r) do out[j] = a:totable() end return out")
    want = [[[j] * (r + 1) for j in range(p)] for r in range(p)]
    check(same(got, want), "alltoall arrays: %s" % show(got))


def test_collectives_tables(c):
    p = 4
    got = run_all(c, "return mpi.allreduce({mpi.rank(), 1, 0.5})")
    check(same(got, [[6, 4, 2.0]] * p), "allreduce of a table of numbers: %s" % show(got))
    got = run_all(c, "return mpi.bcast(mpi.rank() == 0 and {name = 'x', list = {1, 2, 3}, "
                     "nested = {ok = true}} or nil)")
    check(same(got, [{"name": "x", "list": [1, 2, 3], "nested": {"ok": True}}] * p),
          "bcast table: %s" % show(got))
    got = run_all(c, "return mpi.allgather({rank = mpi.rank(), s = 'r' .. mpi.rank()})")
    want = [{"rank": r, "s": "r%d" % r} for r in range(p)]
    check(same(got, [want] * p), "allgather tables: %s" % show(got))
    got = run_all(c, "return mpi.gather({mpi.rank(), {deep = mpi.rank() * 2}}, 0)")
    check(same(got[0], [[r, {"deep": 2 * r}] for r in range(p)]) and got[1:] == [None] * 3,
          "gather tables: %s" % show(got))
    got = run_all(c, "return mpi.scatter(mpi.rank() == 3 and {{i = 1}, {i = 2}, 'three', true} "
                     "or nil, 3)")
    check(same(got, [{"i": 1}, {"i": 2}, "three", True]), "scatter mixed: %s" % show(got))
    got = run_all(c, "local l = {} for j = 1, mpi.size() do l[j] = {from = mpi.rank(), to = j - 1} "
                     "end return mpi.alltoall(l)")
    want = [[{"from": j, "to": r} for j in range(p)] for r in range(p)]
    check(same(got, want), "alltoall tables: %s" % show(got))
    # A value that cannot travel is an error on every rank, never a hang.
    r = c.api.post(view("all", "execute"),
                   {"code": "return mpi.bcast(mpi.rank() == 0 and print or nil)"})
    body = expect(r, 200, "bcast of a function")
    check(all(x.get("status") == "error" and "cannot send a function" in x.get("evalue", "")
              for x in body.get("results", [])), "bcast of a function fails everywhere: %r" % r)
    check(same(run_all(c, "return mpi.allreduce(1)"), [4] * p), "in step after the failed bcast")


def test_point_to_point(c):
    p = 4
    got = run_all(c, "local r, p = mpi.rank(), mpi.size() local right, left = (r + 1) % p, (r - 1) % p "
                     "if r % 2 == 0 then mpi.send({from = r, a = nd.full(3, r)}, right, 5) "
                     "local v, src, tag = mpi.recv(left, 5) return {v.from, v.a:sum(), src, tag} "
                     "else local v, src, tag = mpi.recv(left, 5) "
                     "mpi.send({from = r, a = nd.full(3, r)}, right, 5) "
                     "return {v.from, v.a:sum(), src, tag} end")
    want = [[(r - 1) % p, 3 * ((r - 1) % p), (r - 1) % p, 5] for r in range(p)]
    check(same(got, want), "ring send/recv: %s" % show(got))
    got = run_all(c, "local r, p = mpi.rank(), mpi.size() "
                     "local v = mpi.sendrecv(nd.arange(100000, 'float64') + r, (r + 1) % p, "
                     "(r - 1) % p) return v[1]")
    check(same(got, [float((r - 1) % p) for r in range(p)]), "sendrecv of 100000 float64")
    got = run_all(c, "local r, p = mpi.rank(), mpi.size() "
                     "local rq = mpi.irecv((r + p - 1) % p, 9) local sq = mpi.isend('m' .. r, (r + 1) % p, 9) "
                     "local v = rq:wait() sq:wait() return v")
    check(same(got, ["m%d" % ((r - 1) % p) for r in range(p)]), "isend/irecv: %s" % show(got))
    got = run_all(c, "local r, p = mpi.rank(), mpi.size() "
                     "local v = mpi.waitall({mpi.irecv(nil, 3), mpi.isend(r, (r + 1) % p, 3)}) "
                     "return v[1]")
    check(same(got, [(r - 1) % p for r in range(p)]), "waitall with any source: %s" % show(got))


def test_comm_split(c):
    got = run_all(c, "local sub = mpi.comm_split(mpi.rank() % 2) "
                     "local out = {sub:rank(), sub:size(), sub:allreduce(mpi.rank()), "
                     "sub:allgather(mpi.rank()), sub:bcast(mpi.rank(), 1)} sub:free() return out")
    want = [[0, 2, 2, [0, 2], 2], [0, 2, 4, [1, 3], 3], [1, 2, 2, [0, 2], 2], [1, 2, 4, [1, 3], 3]]
    check(same(got, want), "comm_split by parity: %s" % show(got))
    got = run_all(c, "local sub = mpi.comm_split(0, -mpi.rank()) "
                     "return {sub:rank(), sub:gather(mpi.rank(), 0) or 'none'}")
    check(same(got, [[3, "none"], [2, "none"], [1, "none"], [0, [3, 2, 1, 0]]]),
          "comm_split with keys reverses the order: %s" % show(got))
    got = run_all(c, "local sub = mpi.comm_split(mpi.rank() < 3 and 0 or 1) "
                     "if sub:size() == 1 then return sub:allreduce(7) end "
                     "if sub:rank() == 0 then sub:send('hi', 2) return 'sent' end "
                     "if sub:rank() == 2 then return sub:recv(0) end return 'b'")
    check(same(got, ["sent", "b", "hi", 7]), "point-to-point in a sub-communicator: %s" % show(got))


# ---------------------------------------------------------------- plugins

def test_plugin_psum(c):
    ids = c.ids()
    r = c.api.post(view("all", "load"), {"library": plugin("psum")})
    results = expect_task_results(r, ids, "load libpsum.so")
    for res in results:
        check(same(res.get("value"), {"library": plugin("psum"), "kernels": ["psum"]}),
              "load answers library and kernels: %r" % r)
    expect_task_results(c.api.post(view("all", "scatter"), {"name": "pa", "data": list(range(16))}),
                        ids, "scatter pa")
    check(same(run_all(c, "return psum(pa)"), [120] * 4), "psum kernel from Lua")
    r = c.api.post(view("all", "apply"), {"function": "psum", "args": [{"$ref": "pa"}]})
    check(same([x.get("value") for x in expect_task_results(r, ids, "apply psum")], [120] * 4),
          "psum through apply: %r" % r)
    check(same(run_all(c, "return psum(nd.ones(3, 'float32'))"), [12.0] * 4), "psum of floats")
    check(same(run_all(c, "local s = mpi.comm_split(mpi.rank() % 2) return psum(mpi.rank(), s)"),
               [2, 4, 2, 4]), "psum over a sub-communicator")
    r = c.api.post(view("all", "execute"), {"code": "return psum('x')"})
    body = expect(r, 200, "psum with a bad argument")
    check(all(x.get("status") == "error" and "psum" in x.get("evalue", "")
              for x in body.get("results", [])), "a failing kernel is an error: %r" % r)


SERIAL_HEAT = """
local u = full:copy()
local n = #u
for s = 1, steps do
  local v = u:copy()
  for i = 2, n - 1 do v[i] = u[i] + alpha * (u[i - 1] - 2 * u[i] + u[i + 1]) end
  u = v
end
return u:totable()
"""


def test_plugin_stencil(c):
    ids = c.ids()
    expect_task_results(c.api.post(view("all", "load"), {"library": plugin("stencil")}),
                        ids, "load libstencil.so")
    n, steps, alpha = 40, 60, 0.25
    init = [100.0 if i == 0 else (50.0 if i == n - 1 else (i % 7) * 1.5) for i in range(n)]
    expect_task_results(c.api.post(view("all", "scatter"), {"name": "hu", "data": init}),
                        ids, "scatter the initial temperatures")
    expect_task_results(c.api.post(view("all", "execute"),
                                   {"code": "hv = heat1d(hu, %d, %s)" % (steps, alpha)}),
                        ids, "heat1d on 4 ranks")
    r = c.api.get(view("all", "gather/hv"))
    body = expect(r, 200, "gather hv")
    parallel = body.get("result")
    check(isinstance(parallel, list) and len(parallel) == n, "gathered result: %r" % r)
    # The same scheme, serially in Lua on one engine.
    first = str(ids[0])
    expect_task_results(c.api.post(view(first, "push"),
                                   {"namespace": {"full": init, "steps": steps, "alpha": alpha}}),
                        [ids[0]], "push the serial inputs")
    serial = values_of(c, SERIAL_HEAT, [ids[0]], what="serial heat")[0]
    worst = max(abs(a - b) for a, b in zip(parallel, serial))
    check(worst < 1e-9, "stencil vs serial Lua: max difference %g\n%s\n%s"
          % (worst, show(parallel), show(serial)))
    check(parallel[0] == 100.0 and parallel[-1] == 50.0, "Dirichlet ends stay fixed")


def test_plugin_bad_library(c):
    ids = c.ids()
    notplugin = "/lib/x86_64-linux-gnu/libm.so.6"
    cases = [("/nonexistent/libnope.so", "No such file"),
             (os.path.join(ROOT, "Makefile"), "cannot load plugin"),
             (notplugin, "not an ippc plugin")]
    for path, needle in cases:
        if not os.path.exists(path) and needle != "No such file":
            continue
        r = c.api.post(view("all", "load"), {"library": path})
        body = expect(r, 200, "load %s" % path)
        check(body.get("status") == "error", "loading %s must fail: %r" % (path, r))
        for res in body.get("results", []):
            check(res.get("status") == "error" and res.get("ename") == "PluginError"
                  and needle in res.get("evalue", ""),
                  "load %s: PluginError mentioning %r: %r" % (path, needle, r))
    check(same(run_all(c, "return 'alive'"), ["alive"] * 4), "engines survive bad libraries")


# ---------------------------------------------------------------- interrupts

def test_interrupt_spin(c):
    rid = start(c, "spun = 1 while true do end")
    time.sleep(0.5)
    r = interrupt_until_done(c, rid)
    body = expect(r, 200, "interrupted spin")
    check(all(x.get("status") == "aborted" for x in body.get("results", [])),
          "every engine aborted: %r" % r)
    check(same(run_all(c, "return spun"), [1] * 4), "namespace kept after the interrupt")
    check(same(run_all(c, "return mpi.allreduce(1)"), [4] * 4), "MPI usable after the interrupt")


def test_interrupt_blocked_recv(c):
    rid = start(c, "return mpi.recv(mpi.rank(), 77)")  # nobody ever sends it
    time.sleep(0.5)
    r = interrupt_until_done(c, rid)
    body = expect(r, 200, "interrupted recv")
    check(all(x.get("status") == "aborted" for x in body.get("results", [])),
          "every blocked recv aborted: %r" % r)
    # No trace left in MPI: the next exchange on that tag gets the new message.
    got = run_all(c, "local r, p = mpi.rank(), mpi.size() "
                     "local q = mpi.isend('new' .. r, r, 77) local v = mpi.recv(r, 77) q:wait() "
                     "return v")
    check(same(got, ["new%d" % r for r in range(4)]), "p2p after the interrupt: %s" % show(got))
    check(same(run_all(c, "return mpi.allreduce(mpi.rank())"), [6] * 4), "collectives after it")


def test_interrupt_mismatched_collective(c):
    ids = c.ids()
    rid = start(c, "if mpi.rank() == 0 then mpi.barrier() end return 'out'")
    time.sleep(1.0)
    r = interrupt_until_done(c, rid, targets=str(ids[0]))
    body = expect(r, 200, "mismatched barrier")
    by = {x["engine"]: x for x in body.get("results", [])}
    check(by[ids[0]].get("status") == "aborted", "rank 0 was stuck and got aborted: %r" % r)
    check(all(by[i].get("status") == "ok" for i in ids[1:]), "other ranks finished: %r" % r)
    # As lmpi.h says: the next collective on the world fails at once on rank
    # 0 (its barrier is still pending) and completes that barrier elsewhere...
    r = c.api.post(view("all", "execute"), {"code": "mpi.barrier() return 'b'"})
    body = expect(r, 200, "the next barrier")
    by = {x["engine"]: x for x in body.get("results", [])}
    check(by[ids[0]].get("status") == "error" and "pending" in by[ids[0]].get("evalue", ""),
          "rank 0 reports the pending collective: %r" % r)
    check(all(by[i].get("value") == "b" for i in ids[1:]), "the others complete it: %r" % r)
    # ... and then everyone is in step again.
    check(same(run_all(c, "return mpi.allreduce(mpi.rank() + 1)"), [10] * 4),
          "in step after one round")


def test_interrupt_kernel(c):
    ids = c.ids()
    expect_task_results(c.api.post(view("all", "load"), {"library": plugin("stencil")}),
                        ids, "load libstencil.so")
    rid = start(c, "return heat1d(nd.zeros(1000), 1000000000, 0.1)")
    time.sleep(1.0)
    r = interrupt_until_done(c, rid)
    body = expect(r, 200, "interrupted heat1d")
    check(all(x.get("status") in ("aborted", "error") and "interrupted" in
              (x.get("evalue", "") + x.get("ename", "")).lower() or x.get("status") == "aborted"
              for x in body.get("results", [])), "heat1d stopped on every rank: %r" % r)
    check(any(x.get("status") == "aborted" for x in body.get("results", [])),
          "at least the interrupted ranks are aborted: %r" % r)
    check(same(run_all(c, "return mpi.allreduce(2)"), [8] * 4), "usable after the kernel stopped")


# ---------------------------------------------------------------- namespace

def test_namespace_ops(c):
    ids = c.ids()
    expect_task_results(c.api.post(view("all", "reset")), ids, "reset first")
    expect_task_results(c.api.post(view("all", "load"), {"library": plugin("psum")}), ids, "load")
    expect_task_results(c.api.post(view("all", "execute"), {
        "code": "ns_a = nd.zeros({2, 3}, 'float32') ns_s = 'hello' ns_i = 3 ns_f = 2.5 "
                "ns_b = true ns_t = {1, 2, 3} function ns_fn() end print = print"}),
        ids, "define variables")
    r = c.api.get(view("all", "vars"))
    body = expect_done(r, 4, "GET vars")
    want = {"ns_a": {"type": "nd", "dtype": "float32", "shape": [2, 3], "bytes": 24},
            "ns_s": {"type": "string", "bytes": 5}, "ns_i": {"type": "integer"},
            "ns_f": {"type": "number"}, "ns_b": {"type": "boolean"},
            "ns_t": {"type": "table", "length": 3}, "ns_fn": {"type": "function"}}
    for listing in body.get("results", []):
        check(isinstance(listing, dict) and same(
            {k: v for k, v in listing.items() if k.startswith("ns_")}, want),
            "listing: %s" % show(listing))
        check("print" not in listing and "psum" not in listing and "mpi" not in listing,
              "the listing holds user globals only: %s" % show(listing))
    r = c.api.call("DELETE", view("all", "vars/ns_s"))
    expect_done(r, 4, "DELETE vars/ns_s")
    r = c.api.call("DELETE", view("all", "vars/ns_s"))
    body = expect(r, 200, "DELETE of a missing name")
    check(body.get("status") == "error" and all(x.get("ename") == "NameError"
                                               for x in body.get("results", [])),
          "a missing name is a NameError: %r" % r)
    expect_task_results(c.api.post(view("all", "reset")), ids, "reset")
    body = expect_done(c.api.get(view("all", "vars")), 4, "GET vars after reset")
    check(all(x == {} or x == [] for x in body.get("results", [])),
          "reset leaves no user global: %s" % show(body))
    check(same(run_all(c, "return type(ns_a) .. type(print) .. type(nd.zeros) .. type(psum)"),
               ["nilfunctionfunctionfunction"] * 4), "reset keeps the library and kernels")


TESTS = [
    ("runtime_collectives_numbers", test_collectives_numbers, "shared"),
    ("runtime_collectives_arrays", test_collectives_arrays, "shared"),
    ("runtime_collectives_tables", test_collectives_tables, "shared"),
    ("runtime_point_to_point", test_point_to_point, "shared"),
    ("runtime_comm_split", test_comm_split, "shared"),
    ("runtime_plugin_psum", test_plugin_psum, "shared"),
    ("runtime_plugin_stencil", test_plugin_stencil, "shared"),
    ("runtime_plugin_bad_library", test_plugin_bad_library, "shared"),
    ("runtime_interrupt_spin", test_interrupt_spin, "shared"),
    ("runtime_interrupt_blocked_recv", test_interrupt_blocked_recv, "shared"),
    ("runtime_interrupt_mismatched_collective", test_interrupt_mismatched_collective, "shared"),
    ("runtime_interrupt_kernel", test_interrupt_kernel, "shared"),
    ("runtime_namespace_ops", test_namespace_ops, "shared"),
]
