"""test_python_mpi.py — mpi4py inside real Python engines (ippc-engine
--runtime python under mpiexec -n 4), driven through the REST API only.

python_mpi_calls: each engine runs mpi4py calls (buffer calls on NumPy
arrays, scalars and [buf, MPI.DOUBLE] specs, IN_PLACE, the object calls,
Isend/Irecv with Wait/Waitall, Split/Dup, Wtime, the ops SUM PROD MIN MAX LAND
LOR, a caught MPI.Exception, an AttributeError for a name that does not
exist) and keeps what it got in its namespace; the test pulls those values
from every engine (typed, so dtype and bytes are checked) and compares each
rank's with what that rank must hold, computed here.  Then the checks of
tests/mpi/pympi_checks.py (the module's own suite, otherwise run under a
small host program) run inside the engines, one execute per check, and
every rank must report each of them ok.  Then interrupts of ranks blocked in
a buffer Recv: the task ends aborted, the engine, its namespace and its MPI
messages survive.

python_big_array_rss: 1e7 float64 (80 MB of random bits) pushed raw to 4
Python engines and pulled back bit-exact; in each engine the array lies over
the received buffer (no copy), and the engine's peak RSS during the push
grew by about one array, not two (see big_array for the bound).
"""

import base64
import hashlib
import os
import struct
import time

from harness import BUILD, Cluster, ROOT, check, expect, proc_rss_kb
from common import show, view, expect_done, expect_task_results
from test_runtime import start, interrupt_until_done

PY = ["--runtime", "python"]
P = 4
CHECKS_FILE = os.path.join(ROOT, "tests", "mpi", "pympi_checks.py")


def run_all(c, code, what, timeout=120):
    """execute on every engine; the values in rank order.  A chunk still
    running after timeout (ranks out of step in a collective) is
    interrupted and fails the test instead of hanging it."""
    r = c.api.post(view("all", "execute") + "?timeout=%d" % timeout, {"code": code},
                   timeout=timeout + 60)
    if r.status == 202:
        interrupt_until_done(c, r.body["request"])
        raise AssertionError("%s: still running after %d s (interrupted): %r" % (what, timeout, r))
    return [res.get("value") for res in expect_task_results(r, c.ids(), what)]


def typed(v):
    """A pulled value with typed arrays decoded to (dtype, shape, list)."""
    if isinstance(v, dict) and set(v) == {"dtype", "shape", "data"}:
        fmt = {"float64": "d", "float32": "f", "int64": "q", "int32": "i", "uint8": "B"}[v["dtype"]]
        raw = base64.b64decode(v["data"])
        n = len(raw) // struct.calcsize(fmt)
        return (v["dtype"], v["shape"], list(struct.unpack("<%d%s" % (n, fmt), raw)))
    if isinstance(v, dict):
        return {k: typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [typed(x) for x in v]
    return v


def arr(dtype, values, shape=None):
    return (dtype, shape if shape is not None else [len(values)], list(values))


# ---------------------------------------------------------------- the calls, value by value

# Every engine runs these chunks in order; each leaves its answers in the
# namespace.  They are separate tasks so that one that goes wrong is named.
SETUP = """\
from mpi4py import MPI
import numpy as np
comm = MPI.COMM_WORLD
r, p = comm.Get_rank(), comm.Get_size()
right, left = (r + 1) % p, (r - 1) % p
ident = [r, p, comm.rank, comm.size, MPI.COMM_WORLD.Get_size()]
comm.Barrier()
t0 = MPI.Wtime()
comm.Barrier()
wtime = [type(t0).__name__, MPI.Wtime() >= t0, 0 < MPI.Wtick() < 1]
"""

COLLECTIVES = """\
bc = np.arange(5.0) * 7 if r == 2 else np.zeros(5)
comm.Bcast(bc, root=2)
bc_spec = np.arange(3, dtype='i4') + 10 if r == 0 else np.zeros(3, 'i4')
comm.Bcast([bc_spec, MPI.INT])
red = np.full(3, -1.0)
comm.Reduce(np.array([r, r * r, 1.0]), red if r == 1 else None, op=MPI.SUM, root=1)
ops = {}
for name in ('SUM', 'PROD', 'MIN', 'MAX'):
    out = np.zeros(2)
    comm.Allreduce(np.array([r + 1.0, 4.0 - r]), out, op=getattr(MPI, name))
    ops[name] = out
    out = np.zeros(2, 'i8')
    comm.Allreduce([np.array([r + 1, 4 - r], 'i8'), MPI.INT64_T], [out, MPI.INT64_T],
                   op=getattr(MPI, name))
    ops[name + '_i8'] = out
flags = np.array([True, r > 0, r == 2])
land, lor = np.zeros(3, bool), np.zeros(3, bool)
comm.Allreduce(flags, land, op=MPI.LAND)
comm.Allreduce(flags, lor, op=MPI.LOR)
scalar = np.zeros(1)
comm.Allreduce(np.float64(r + 0.5), scalar)
seed = np.array(0.0, 'd')
comm.Allreduce([np.sum(np.arange(4.0) + 4 * r), MPI.DOUBLE], [seed, MPI.DOUBLE], op=MPI.SUM)
in_place = np.array([r, 1.0])
comm.Allreduce(MPI.IN_PLACE, in_place, op=MPI.SUM)
ga = np.zeros((p, 2)) if r == 3 else None
comm.Gather(np.array([r, 10.0 * r]), ga, root=3)
sc = np.zeros(2, 'i8')
comm.Scatter(np.arange(2 * p, dtype='i8') * 3 if r == 0 else None, sc, root=0)
ag = np.zeros(p, 'i4')
comm.Allgather(np.array([r * r], 'i4'), ag)
ag_ip = np.full(p, -1.0)
ag_ip[r] = r / 2
comm.Allgather(MPI.IN_PLACE, [ag_ip, MPI.DOUBLE])
a2a = np.zeros(p, 'i8')
comm.Alltoall(np.array([10 * r + j for j in range(p)], 'i8'), a2a)
"""

POINT_TO_POINT = """\
rv = np.zeros(4)
if r % 2 == 0:
    comm.Send([np.arange(4.0) + 100 * r, MPI.DOUBLE], dest=right, tag=5)
    comm.Recv([rv, MPI.DOUBLE], source=left, tag=5)
else:
    st = MPI.Status()
    comm.Recv(rv, source=MPI.ANY_SOURCE, tag=5, status=st)
    assert st.Get_source() == left and st.Get_count(MPI.DOUBLE) == 4
    comm.Send(np.arange(4.0) + 100 * r, dest=right, tag=5)
sr = np.zeros(2, 'i4')
comm.Sendrecv(np.array([r, -r], 'i4'), dest=right, sendtag=6, recvbuf=sr, source=left, recvtag=6)
ibufs = [np.zeros(2) for _ in range(p)]
reqs = [comm.Irecv(ibufs[s], source=s, tag=9) for s in range(p)]
reqs += [comm.Isend(np.array([float(r), float(s)]), dest=s, tag=9) for s in range(p)]
MPI.Request.Waitall(reqs)
inbox = np.concatenate(ibufs)
wbuf = np.zeros(3)
w = comm.Irecv(wbuf, source=left, tag=10)
s = comm.Isend(np.full(3, r * 1.5), dest=right, tag=10)
waited = [w.Wait(), s.Wait()]
"""

OBJECTS = """\
ob = {}
ob['bcast'] = comm.bcast({'from': r, 'list': [1, 'two', None]} if r == 1 else None, root=1)
ob['reduce'] = comm.reduce(r + 1, op=MPI.PROD, root=2)
ob['allreduce'] = [comm.allreduce(r + 1, op=o) for o in (MPI.SUM, MPI.PROD, MPI.MIN, MPI.MAX)]
ob['allreduce_logic'] = [comm.allreduce(r > 0, op=MPI.LAND), comm.allreduce(r == 3, op=MPI.LOR)]
ob['allreduce_array'] = comm.allreduce(np.arange(3) * r)
ob['gather'] = comm.gather({'r': r}, root=0)
ob['scatter'] = comm.scatter([['item', i] for i in range(p)] if r == 3 else None, root=3)
ob['allgather'] = comm.allgather('r%d' % r)
if r % 2 == 0:
    comm.send({'from': r}, dest=right, tag=3)
    ob['recv'] = comm.recv(source=left, tag=3)
else:
    ob['recv'] = comm.recv(source=left, tag=3)
    comm.send({'from': r}, dest=right, tag=3)
ob['sendrecv'] = comm.sendrecv(('hi', r), dest=right, source=left)
req = comm.irecv(source=left, tag=4)
sreq = comm.isend([r, 'isend'], dest=right, tag=4)
ob['irecv'] = req.wait()
sreq.wait()
rs = [comm.irecv(source=j, tag=8) for j in range(p)]
ss = [comm.isend(r * 100 + j, dest=j, tag=8) for j in range(p)]
ob['waitall'] = MPI.Request.waitall(rs)
MPI.Request.waitall(ss)
"""

COMMUNICATORS = """\
sub = comm.Split(color=r % 2, key=-r)
split = [sub.Get_size(), sub.Get_rank(), sub.allgather(r)]
out = np.zeros(1)
sub.Allreduce(np.array([float(r)]), out, op=MPI.SUM)
split.append(float(out[0]))
dup = comm.Dup()
dup_info = [dup.size, dup.rank, dup.bcast(r, root=3), dup != comm, dup.allreduce(1)]
sub.Free()
dup.Free()
"""

ERRORS = """\
try:
    comm.Send(np.zeros(1), dest=p)
    mpi_exc = 'nothing raised'
except MPI.Exception as e:
    mpi_exc = [type(e).__name__, isinstance(e, RuntimeError),
               e.Get_error_class() == MPI.ERR_RANK]
try:
    comm.bcast(1, root=p + 3)
    mpi_exc_root = 'nothing raised'
except MPI.Exception as e:
    mpi_exc_root = e.Get_error_class() == MPI.ERR_ROOT
try:
    MPI.Iallreduce
    missing = 'no error'
except AttributeError as e:
    missing = str(e)
try:
    comm.Ialltoallv
    missing_comm = 'no error'
except AttributeError as e:
    missing_comm = str(e)
comm.allreduce(1)
"""

NAMES = ["ident", "wtime", "bc", "bc_spec", "red", "ops", "land", "lor", "scalar", "seed",
         "in_place", "ga", "sc", "ag", "ag_ip", "a2a", "rv", "sr", "inbox", "wbuf", "waited", "ob",
         "split", "dup_info", "mpi_exc", "mpi_exc_root"]


def expected(r):
    """What rank r must hold after the chunks above, computed without MPI."""
    p = P
    left = (r - 1) % p
    ranks = range(p)
    x = [[q + 1.0, 4.0 - q] for q in ranks]

    def fold(f):
        return [f(v[i] for v in x) for i in range(2)]

    def prod(vs):
        out = 1
        for v in vs:
            out *= v
        return out

    folded = {"SUM": fold(sum), "PROD": fold(prod), "MIN": fold(min), "MAX": fold(max)}
    ops = {}
    for name, vals in folded.items():
        ops[name] = arr("float64", vals)
        ops[name + "_i8"] = arr("int64", [int(v) for v in vals])
    flags = [[True, q > 0, q == 2] for q in ranks]
    land = [int(all(f[i] for f in flags)) for i in range(3)]
    lor = [int(any(f[i] for f in flags)) for i in range(3)]
    evens = [q for q in ranks if q % 2 == r % 2]
    return {
        "ident": [r, p, r, p, p],
        "wtime": ["float", True, True],
        "bc": arr("float64", [0.0, 7.0, 14.0, 21.0, 28.0]),
        "bc_spec": arr("int32", [10, 11, 12]),
        "red": arr("float64", [6.0, 14.0, 4.0] if r == 1 else [-1.0] * 3),
        "ops": ops,
        "land": arr("uint8", land),
        "lor": arr("uint8", lor),
        "scalar": arr("float64", [sum(q + 0.5 for q in ranks)]),
        "seed": 120.0,  # the seed's psum: a 0-d array reads back as its number
        "in_place": arr("float64", [6.0, 4.0]),
        "ga": arr("float64", [v for q in ranks for v in (q, 10.0 * q)], [p, 2]) if r == 3 else None,
        "sc": arr("int64", [6 * r, 6 * r + 3]),
        "ag": arr("int32", [q * q for q in ranks]),
        "ag_ip": arr("float64", [q / 2 for q in ranks]),
        "a2a": arr("int64", [10 * j + r for j in ranks]),
        "rv": arr("float64", [100.0 * left + i for i in range(4)]),
        "sr": arr("int32", [left, -left]),
        "inbox": arr("float64", [v for s in ranks for v in (float(s), float(r))]),
        "wbuf": arr("float64", [left * 1.5] * 3),
        "waited": [True, True],
        "ob": {
            "bcast": {"from": 1, "list": [1, "two", None]},
            "reduce": 24 if r == 2 else None,
            "allreduce": [10, 24, 1, 4],
            "allreduce_logic": [False, True],
            "allreduce_array": arr("int64", [0, 6, 12]),
            "gather": [{"r": q} for q in ranks] if r == 0 else None,
            "scatter": ["item", r],
            "allgather": ["r%d" % q for q in ranks],
            "recv": {"from": left},
            "sendrecv": ["hi", left],
            "irecv": [left, "isend"],
            "waitall": [j * 100 + r for j in ranks],
        },
        "split": [len(evens), sorted(evens, reverse=True).index(r), sorted(evens, reverse=True),
                  float(sum(evens))],
        "dup_info": [p, r, 3, True, p],
        "mpi_exc": ["Exception", True, True],
        "mpi_exc_root": True,
    }


def calls_value_by_value(c):
    for name, chunk in (("setup", SETUP), ("collectives", COLLECTIVES),
                        ("point-to-point", POINT_TO_POINT), ("objects", OBJECTS),
                        ("communicators", COMMUNICATORS), ("errors", ERRORS)):
        run_all(c, chunk + "\nNone", "mpi4py %s on every rank" % name)
    r = c.api.post(view("all", "pull") + "?format=typed", {"names": NAMES})
    body = expect_done(r, P, "pull the mpi4py results")
    for rank, got in enumerate(body["results"]):
        check(isinstance(got, list) and len(got) == len(NAMES), "rank %d: %s" % (rank, show(got)))
        want = expected(rank)
        for name, value in zip(NAMES, got):
            check(typed(value) == want[name], "rank %d, %s: expected %r, got %r"
                  % (rank, name, want[name], typed(value)))
    r = c.api.post(view("all", "pull"), {"names": ["missing", "missing_comm"]})
    body = expect_done(r, P, "pull the AttributeError messages")
    for rank, (top, on_comm) in enumerate(body["results"]):
        check("Iallreduce" in top and "docs/mpi4py.md" in top and "Ialltoallv" in on_comm,
              "rank %d: a missing name is an AttributeError that says so: %r %r"
              % (rank, top, on_comm))


def uncaught_errors(c):
    """mpi4py's errors that escape a task are the task's Python error, on
    every rank, and the ranks stay in step."""
    r = c.api.post(view("all", "execute"), {"code": "comm.Send(np.zeros(1), dest=-7)"})
    body = expect_done(r, P, "an MPI error escapes", status="error")
    for res in body["results"]:
        check(res.get("ename") == "Exception" and "rank" in res.get("evalue", "").lower()
              and any("<execute-" in line for line in res.get("traceback", [])),
              "an uncaught MPI.Exception is the task's error: %s" % show(res))
    r = c.api.post(view("all", "execute"), {"code": "MPI.Comm.Ineighbor_alltoall"})
    body = expect_done(r, P, "a missing name", status="error")
    check(all(res.get("ename") == "AttributeError" for res in body["results"]),
          "a missing name is an AttributeError: %s" % show(body))
    check(run_all(c, "comm.allreduce(r)", "allreduce after the errors") == [6] * P,
          "the ranks are in step after the errors")


# ---------------------------------------------------------------- tests/mpi's checks, in engines

LOADER = """\
import sys, types
_checks = types.ModuleType('pympi_checks')
_checks.__file__ = 'tests/mpi/pympi_checks.py'
sys.modules['pympi_checks'] = _checks
exec(compile(_checks_source, _checks.__file__, 'exec'), _checks.__dict__)
del _checks_source
pympi_results = {}

def _run_check(name):
    import traceback
    f = {g.__name__: g for g in _checks.CHECKS}[name]
    try:
        f()
        pympi_results[name] = 'ok'
    except BaseException:
        pympi_results[name] = traceback.format_exc()
    _checks.comm.barrier()
    return pympi_results[name]

[g.__name__ for g in _checks.CHECKS]
"""

# What the suite must contain at least: the calls the issue lists.  (A check
# added there later runs here too.)
REQUIRED_CHECKS = {
    "module_and_names", "seed_psum", "datatypes", "ops_on_objects", "Bcast_arrays_and_specs",
    "Reduce_and_Allreduce_ops", "IN_PLACE", "Gather_Scatter_Allgather_Alltoall",
    "vector_collectives", "Send_Recv_Sendrecv_Status", "Isend_Irecv_requests",
    "object_collectives", "object_point_to_point", "Split_Dup_Free", "mpi4py_exceptions",
    "pickling_errors_keep_ranks_in_step", "missing_names_are_attribute_errors",
}


def checks_of_tests_mpi(c):
    with open(CHECKS_FILE) as f:
        source = f.read()
    expect_task_results(c.api.post(view("all", "push"), {"namespace": {"_checks_source": source}}),
                        c.ids(), "push pympi_checks.py's source")
    names = run_all(c, LOADER, "load pympi_checks.py in the engines")
    check(all(n == names[0] for n in names) and REQUIRED_CHECKS <= set(names[0]),
          "every engine has the suite's checks: %s" % show(names))
    for name in names[0]:
        got = run_all(c, "_run_check(%r)" % name, "check %s" % name)
        check(got == ["ok"] * P, "check %s on every rank:\n%s" % (
            name, "\n".join("rank %d: %s" % (i, g) for i, g in enumerate(got) if g != "ok")))
    body = expect_done(c.api.get(view("all", "vars/pympi_results")), P, "pull pympi_results")
    for rank, res in enumerate(body["results"]):
        check(res == {n: "ok" for n in names[0]}, "rank %d's results: %s" % (rank, show(res)))


# ---------------------------------------------------------------- interrupts in Recv

def interrupted_Recv(c):
    """One rank blocked in a buffer Recv nobody sends to, then every rank:
    interrupts end the tasks aborted; the engines keep their namespaces,
    their MPI state (the message sent later arrives whole, in the next Recv)
    and stay in step."""
    run_all(c, "kept_mpi = 'still here'\nNone", "kept_mpi")
    rid = start(c, "buf77 = np.zeros(4)\ncomm.Recv(buf77, source=1, tag=77)", targets="0")
    body = expect_done(interrupt_until_done(c, rid, targets="0"), 1, "interrupted Recv",
                       status="error")
    check(body["results"][0]["status"] == "aborted", "the Recv ends aborted: %s" % show(body))
    check(run_all(c, "kept_mpi", "kept_mpi after") == ["still here"] * P,
          "every namespace survives the interrupt")
    code = ("got77 = np.zeros(4)\n"
            "if r == 1:\n    comm.Send(np.arange(4.0), dest=0, tag=77)\n"
            "if r == 0:\n    comm.Recv(got77, source=1, tag=77)\n"
            "comm.allreduce(r)")
    check(run_all(c, code, "Send/Recv after the interrupt") == [6] * P,
          "the ranks are in step after the interrupt")
    body = expect_done(c.api.get(view("0", "vars/got77")), 1, "pull got77")
    check(body["results"] == [[0.0, 1.0, 2.0, 3.0]], "the later message arrived whole: %s"
          % show(body))
    rid = start(c, "comm.Recv(np.zeros(2), source=right, tag=78)")
    body = expect_done(interrupt_until_done(c, rid), P, "every rank in Recv", status="error")
    check(all(x["status"] == "aborted" for x in body["results"]),
          "every rank's Recv ends aborted: %s" % show(body))
    check(run_all(c, "comm.allreduce(1)", "allreduce after") == [P] * P,
          "and they are in step again")


STEPS = [calls_value_by_value, uncaught_errors, interrupted_Recv, checks_of_tests_mpi]


def test_python_mpi_calls(_):
    with Cluster(n=P, profile="python-mpi", engine_args=PY).start() as c:
        engines = c.api.engines()
        check([(e["rank"], e.get("runtime")) for e in engines] == [(i, "python") for i in range(P)],
              "4 Python engines in rank order: %s" % show(engines))
        for step in STEPS:
            try:
                step(c)
            except Exception as e:
                raise type(e)("%s: %s" % (step.__name__, e)) from e


# ---------------------------------------------------------------- 1e7 float64, no copy

def proc_status_kb(pid, field):
    """A field of /proc/PID/status in KiB (VmHWM: the peak resident set)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, pid))


def reset_peak(pid):
    """Resets the process's peak RSS (VmHWM) to its current RSS (Linux >=
    4.0: writing 5 to clear_refs; the engines are ours, same user)."""
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")


def big_array(c):
    n = 10 ** 7
    size = 8 * n
    mb = size / 1024.0
    raw = os.urandom(size)  # random bits: NaNs with payloads too, all must come back
    digest = hashlib.sha256(raw).hexdigest()
    pids = [c.engine_pids[i] for i in c.ids()]
    run_all(c, "import hashlib\nimport numpy as np\nNone", "imports")
    before = {}
    for pid in pids:
        reset_peak(pid)
        before[pid] = proc_rss_kb(pid)
    r = c.api.put(view("all", "vars/big") + "?dtype=float64&shape=%d" % n, raw=raw,
                  headers={"Content-Type": "application/octet-stream"}, timeout=300)
    expect(r, 200, "raw PUT of 1e7 float64")
    # Measured before any other task runs in the engines.  What the push
    # must cost an engine: the array's bytes, received once (over the
    # WebSocket on the rank the controller sends to, by MPI_Ibcast on the
    # others) into the buffer that becomes the array.  One more copy
    # anywhere on the way (a staging buffer, a copy into NumPy) would hold
    # two arrays at once: the peak would grow by >= 2 x 80 MB.  So: the peak
    # grew by less than 1.5 arrays (the half array is slack for the
    # allocator, the message's JSON, a task's few MB), and the resident set
    # still holds at least 0.9 of one array (the bytes are really there, so
    # this measurement would see a copy).
    for pid in pids:
        peak, now = proc_status_kb(pid, "VmHWM"), proc_rss_kb(pid)
        check(peak - before[pid] < 1.5 * mb,
              "engine pid %d: peak RSS grew %.0f MB during the push of one %.0f MB array "
              "(before %.0f MB): a copy was made" % (pid, (peak - before[pid]) / 1024.0,
                                                     mb / 1024.0, before[pid] / 1024.0))
        check(now - before[pid] > 0.9 * mb,
              "engine pid %d: RSS grew only %.0f MB with the array pushed"
              % (pid, (now - before[pid]) / 1024.0))
    code = ("b = big\nwhile getattr(b, 'base', None) is not None:\n    b = b.base\n"
            "[type(b).__name__, big.flags.owndata, memoryview(b).nbytes, str(big.dtype),\n"
            " list(big.shape), big.flags.writeable, hashlib.sha256(big).hexdigest()]")
    check(run_all(c, code, "the pushed array") ==
          [["blob", False, size, "float64", [n], True, digest]] * P,
          "on every engine big is a writable NumPy array over the whole received buffer (the "
          "engine's blob, not a copy) with the pushed bytes")
    # The pull: one contiguous snapshot of the array goes into the outgoing
    # message (the namespace may change while it is sent) and is freed once
    # sent: the engine's peak grows by at most about one array, and its RSS
    # comes back.
    after_push = {}
    for pid in pids:
        reset_peak(pid)
        after_push[pid] = proc_rss_kb(pid)
    for e in c.ids():
        r = c.api.get(view(str(e), "vars/big"), headers={"Accept": "application/octet-stream"},
                      timeout=300)
        check(r.status == 200 and r.headers.get("X-Ippc-Dtype") == "float64"
              and len(r.raw) == size and r.raw == raw,
              "1e7 float64 pulled bit-exact from engine %d (%s, %d bytes)"
              % (e, r.status, len(r.raw or b"")))
    for pid in pids:
        peak = proc_status_kb(pid, "VmHWM")
        check(peak - after_push[pid] < 1.5 * mb,
              "engine pid %d: the pull's peak grew %.0f MB: more than the one outgoing copy"
              % (pid, (peak - after_push[pid]) / 1024.0))
    deadline = time.time() + 30
    while True:
        grown = [pid for pid in pids if proc_rss_kb(pid) - after_push[pid] > 0.5 * mb]
        if not grown or time.time() > deadline:
            break
        time.sleep(0.2)
    check(not grown, "the outgoing copies are freed once sent: %s" %
          ["pid %d: %+.0f MB" % (pid, (proc_rss_kb(pid) - after_push[pid]) / 1024.0)
           for pid in grown])
    run_all(c, "del big, b\nNone", "del big")


class FreeingCluster(Cluster):
    """In a sanitizer build ASan keeps freed memory in quarantine (up to 256
    MiB), so a freed copy would stay resident: these engines run without
    one, and what they free goes back to the system as in a normal build."""

    def env(self):
        env = super().env()
        if os.path.basename(os.path.normpath(BUILD)) == "san":
            given = env.get("ASAN_OPTIONS", "")
            env["ASAN_OPTIONS"] = (given + ":" if given else "") + "quarantine_size_mb=0"
        return env


def test_python_big_array_rss(_):
    with FreeingCluster(n=P, profile="python-big", engine_args=PY).start() as c:
        big_array(c)


# ---------------------------------------------------------------- ippc cluster start --real-mpi4py

# An mpiexec that gives its engines a PYTHONPATH of the test's choosing,
# then is MPICH's.
PYPATH_MPIEXEC = """#!/bin/sh
PYTHONPATH=PATH_HERE
export PYTHONPATH
exec REAL_MPIEXEC "$@"
"""


def fake_mpi4py(root):
    """A package mpi4py whose MPI extension is a shared library linked to
    libmpich (what the engine's check reads) but no Python module: importing
    mpi4py works, importing mpi4py.MPI does not."""
    import subprocess
    import sysconfig
    pkg = os.path.join(root, "mpi4py")
    os.makedirs(pkg)
    open(os.path.join(pkg, "__init__.py"), "w").close()
    src = os.path.join(root, "empty.c")
    with open(src, "w") as f:
        f.write("int fake_mpi4py_extension;\n")
    libs = subprocess.run(["pkg-config", "--libs", "mpich"], capture_output=True, text=True,
                          check=True).stdout.split()
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,--no-as-needed", "-o",
                    os.path.join(pkg, "MPI" + sysconfig.get_config_var("EXT_SUFFIX")), src] + libs,
                   check=True, capture_output=True)


def test_cli_python_real_mpi4py(_):
    """ippc cluster start --real-mpi4py: refused without --runtime=python;
    with it the engines get --real-mpi4py: with no mpi4py installed they do
    not start and the launcher says why; with one built for MPICH on the
    engines' PYTHONPATH the cluster comes up and `import mpi4py` is that one.
    batch scripts (--print-script) pass it on too.  ippc status shows the
    engines' runtime."""
    import signal
    import subprocess
    from harness import CLI, MPIEXEC, wait_gone, describe
    from test_launcher import Launch, write_script
    from test_cli import cli_env
    with Launch("realmpi4py") as launch:
        for args in (["--real-mpi4py"], ["--runtime=lua", "--real-mpi4py"]):
            p = subprocess.run([CLI, "cluster", "start", "-n", "1"] + args, env=cli_env(launch.tmp),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            out = p.stdout.decode("utf-8", "replace")
            check(p.returncode == 2 and "--real-mpi4py picks the mpi4py of Python engines: add "
                  "--runtime=python" in out, "%s is a usage error (exit %s):\n%s"
                  % (" ".join(args), p.returncode, out))
        p = subprocess.run([CLI, "cluster", "start", "-n", "2", "--engines=slurm", "--runtime=python",
                            "--real-mpi4py", "--print-script"], env=cli_env(launch.tmp),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        out = p.stdout.decode("utf-8", "replace")
        check(p.returncode == 0 and any("srun --mpi=pmi2" in line and line.endswith(
            " --runtime python --real-mpi4py") for line in out.splitlines()),
              "a batch script's engines get --real-mpi4py too (exit %s):\n%s" % (p.returncode, out))
        empty = os.path.join(launch.tmp, "nothing")
        os.makedirs(empty)
        fake = os.path.join(launch.tmp, "fake")
        os.makedirs(fake)
        fake_mpi4py(fake)
        for profile, path in (("nompi4py", empty), ("fakempi4py", fake)):
            write_script(os.path.join(launch.tmp, profile + "-mpiexec"),
                         PYPATH_MPIEXEC.replace("PATH_HERE", path).replace("REAL_MPIEXEC", MPIEXEC))
        launch.start(["-n", "2", "--profile", "nompi4py", "--runtime=python", "--real-mpi4py",
                      "--mpiexec", os.path.join(launch.tmp, "nompi4py-mpiexec")])
        try:
            rc = launch.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("the launcher did not give up within 120 s:\n%s" % launch.text())
        text = launch.text()
        check(rc == 1 and "--runtime python --real-mpi4py" in text
              and "--real-mpi4py: no mpi4py is installed for this Python" in text
              and "Token:" not in text,
              "without an mpi4py the engines say why and the start fails (exit %s):\n%s"
              % (rc, text))
        left = wait_gone(launch.tracker.snapshot(), 20)
        check(not left, "after the failed start these still run: %s" % describe(left))

        launch.start(["-n", "2", "--profile", "fakempi4py", "--runtime=python", "--real-mpi4py",
                      "--mpiexec", os.path.join(launch.tmp, "fakempi4py-mpiexec")])
        api = launch.wait_up(2)
        ours = launch.ours(api)
        r = api.post(view("all", "execute"), {"code": "import mpi4py\nmpi4py.__file__"})
        res = expect_task_results(r, [e["id"] for e in api.engines()], "import mpi4py")
        check([x.get("value") for x in res] == [os.path.join(fake, "mpi4py", "__init__.py")] * 2,
              "import mpi4py is the installed one: %s" % show(res))
        r = api.post(view("all", "execute"), {"code": "from mpi4py import MPI"})
        body = expect_done(r, 2, "from mpi4py import MPI", status="error")
        check(all(x.get("ename") == "ImportError" for x in body["results"]),
              "the engines' own MPI module is not there to fall back on: %s" % show(body))
        p = subprocess.run([CLI, "status", "--profile", "fakempi4py"], env=cli_env(launch.tmp),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        lines = p.stdout.decode("utf-8", "replace").splitlines()
        check(p.returncode == 0 and len(lines) == 4 and lines[1].split()[-1] == "RUNTIME"
              and all(line.split()[-1] == "python" for line in lines[2:]),
              "ippc status shows the runtime of each engine: %s" % lines)
        launch.stop(signal.SIGINT, ours)
    return []


TESTS = [
    ("python_mpi_calls", test_python_mpi_calls, "own"),
    ("python_big_array_rss", test_python_big_array_rss, "own"),
    ("cli_python_real_mpi4py", test_cli_python_real_mpi4py, "own"),
]
