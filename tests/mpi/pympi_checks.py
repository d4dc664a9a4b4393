"""The Python MPI module's checks, run on every rank by pympi_host under
`mpiexec.mpich -n 4` (tests/mpi/run.py).  Each check prints
`rank R ok NAME` or `rank R FAIL NAME: traceback`; run.py counts a check as
passed when every rank printed ok.  Arguments: names of checks to run
(default: all).

Every expected value is computed independently of the module (closed forms
over the ranks), so a wrong answer on any rank fails its check.
"""
import pickle
import sys
import traceback

import numpy as np

import mpi4py
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
CHECKS = []


def check(f):
    CHECKS.append(f)
    return f


def raises(exc, f, *args, **kwargs):
    """The exception f(*args, **kwargs) raises, which must be an exc."""
    try:
        f(*args, **kwargs)
    except exc as e:
        return e
    except BaseException as e:  # noqa: B902 - report what was raised instead
        raise AssertionError(f"{f.__name__} raised {type(e).__name__}: {e}, not {exc}") from e
    raise AssertionError(f"{getattr(f, '__name__', f)} raised nothing, expected {exc}")


def eq(a, b):
    assert np.array_equal(np.asarray(a), np.asarray(b)), f"{a!r} != {b!r}"


# ------------------------------------------------------------------ basics


@check
def module_and_names():
    import mpi4py.MPI as again
    assert again is MPI and mpi4py.MPI is MPI
    assert size == 4 and 0 <= rank < 4
    assert comm.rank == rank and comm.size == size and comm.Get_size() == 4
    assert isinstance(comm, MPI.Intracomm) and isinstance(comm, MPI.Comm)
    assert MPI.COMM_SELF.Get_rank() == 0 and MPI.COMM_SELF.size == 1
    assert MPI.Is_initialized() is True and MPI.Is_finalized() is False
    assert MPI.Query_thread() == MPI.THREAD_MULTIPLE
    t0 = MPI.Wtime()
    assert isinstance(t0, float) and MPI.Wtime() >= t0 and 0 < MPI.Wtick() < 1
    assert "MPICH" in MPI.Get_library_version()
    assert MPI.Get_version()[0] >= 3 and isinstance(MPI.Get_processor_name(), str)
    assert mpi4py.rc.initialize is True
    assert MPI.ANY_SOURCE == -2 and MPI.ANY_TAG == -1 and MPI.PROC_NULL == -1
    assert MPI.COMM_NULL != comm and not MPI.COMM_NULL and comm
    assert comm == MPI.COMM_WORLD and comm != MPI.COMM_SELF
    assert comm.Get_name() == "MPI_COMM_WORLD" and MPI.COMM_SELF.Get_name() == "MPI_COMM_SELF"


@check
def seed_psum():
    # The seed's psum.py, as written, over scatter(arange(16)) on 4 ranks.
    def psum(a):
        locsum = np.sum(a)
        rcvBuf = np.array(0.0, 'd')
        MPI.COMM_WORLD.Allreduce([locsum, MPI.DOUBLE],
                                 [rcvBuf, MPI.DOUBLE],
                                 op=MPI.SUM)
        return rcvBuf

    a = np.arange(16, dtype='float')[rank * 4:(rank + 1) * 4]
    total = psum(a)
    assert isinstance(total, np.ndarray) and total.shape == () and total == 120.0
    assert comm.allreduce(np.sum(a)) == 120.0


@check
def datatypes():
    sizes = {MPI.DOUBLE: 8, MPI.FLOAT: 4, MPI.INT: 4, MPI.LONG: 8, MPI.INT64_T: 8,
             MPI.INT32_T: 4, MPI.CHAR: 1, MPI.BYTE: 1, MPI.C_BOOL: 1, MPI.BOOL: 1,
             MPI.UNSIGNED: 4, MPI.UNSIGNED_LONG: 8, MPI.UINT8_T: 1, MPI.SHORT: 2,
             MPI.C_DOUBLE_COMPLEX: 16, MPI.LONG_LONG: 8}
    for t, n in sizes.items():
        assert t.Get_size() == n and t.size == n, (t, n)
    assert MPI.DOUBLE.Get_extent() == (0, 8) and MPI.DOUBLE.extent == 8
    assert MPI.DOUBLE.Get_name() == "MPI_DOUBLE" and MPI.DOUBLE == MPI.DOUBLE
    assert MPI.DOUBLE != MPI.FLOAT and MPI.TWOINT == MPI.INT_INT
    assert MPI.DOUBLE_INT.extent == 16
    e = raises(MPI.Exception, MPI.DATATYPE_NULL.Get_size)
    assert e.Get_error_class() == MPI.ERR_TYPE


@check
def ops_on_objects():
    assert MPI.SUM(1, 2) == 3 and MPI.PROD(3, 4) == 12
    assert MPI.MAX(1, 2) == 2 and MPI.MIN(1, 2) == 1
    assert MPI.LAND(1, 0) == 0 and MPI.LOR(0, 5) == 5 and MPI.LXOR(1, 1) is False
    assert MPI.BAND(6, 3) == 2 and MPI.BOR(6, 3) == 7 and MPI.BXOR(6, 3) == 5
    assert MPI.MAXLOC((1, 3), (1, 2)) == (1, 2) and MPI.MAXLOC((2, 3), (1, 2)) == (2, 3)
    assert MPI.MINLOC((1, 3), (0, 9)) == (0, 9)
    assert MPI.SUM.Is_commutative() and MPI.SUM == MPI.SUM and MPI.SUM != MPI.PROD
    # predefined ops and datatypes travel by name, as in mpi4py
    assert pickle.loads(pickle.dumps(MPI.MAX)) is MPI.MAX
    assert pickle.loads(pickle.dumps(MPI.INT64_T)) is MPI.INT64_T
    assert comm.bcast(MPI.PROD if rank == 0 else None) is MPI.PROD


# ------------------------------------------------------------------ buffer collectives

DTYPES = ["f8", "f4", "i8", "i4", "i2", "u1", "u8", "c16", "?"]


@check
def Bcast_arrays_and_specs():
    for dt in DTYPES:
        want = (np.arange(10) % 2 == 1) if dt == "?" else np.arange(10).astype(dt)
        buf = want.copy() if rank == 1 else np.zeros(10, dt)
        comm.Bcast(buf, root=1)
        eq(buf, want)
    buf = np.arange(6.0) if rank == 0 else np.zeros(6)
    comm.Bcast([buf, MPI.DOUBLE])
    eq(buf, np.arange(6.0))
    buf = np.full(6, 7.0) if rank == 0 else np.zeros(6)
    comm.Bcast([buf, 3, MPI.DOUBLE], root=0)  # only the first 3 move
    eq(buf, [7, 7, 7, 7, 7, 7] if rank == 0 else [7, 7, 7, 0, 0, 0])
    buf = np.arange(4, dtype="i4") * (rank == 2)
    comm.Bcast([buf, "i"], root=2)
    eq(buf, np.arange(4))
    ba = bytearray(b"hello" if rank == 3 else b"     ")
    comm.Bcast(ba, root=3)
    assert ba == bytearray(b"hello")
    two_d = np.arange(12.0).reshape(3, 4) if rank == 0 else np.zeros((3, 4))
    comm.Bcast(two_d)
    eq(two_d, np.arange(12.0).reshape(3, 4))


@check
def Reduce_and_Allreduce_ops():
    p = size
    ranks = np.arange(p)
    x = np.array([rank + 1, 2 * rank, 5 - rank], dtype="f8")
    cases = [(MPI.SUM, lambda v: v.sum(0)), (MPI.PROD, lambda v: v.prod(0)),
             (MPI.MIN, lambda v: v.min(0)), (MPI.MAX, lambda v: v.max(0))]
    allx = np.array([[r + 1, 2 * r, 5 - r] for r in ranks], dtype="f8")
    for dt in ["f8", "f4", "i8", "i4"]:
        for op, f in cases:
            out = np.zeros(3, dt)
            comm.Allreduce(x.astype(dt), out, op=op)
            eq(out, f(allx.astype(dt)))
            out = np.full(3, -1, dt)
            comm.Reduce(x.astype(dt), out if rank == 3 else None, op=op, root=3)
            eq(out, f(allx.astype(dt)) if rank == 3 else np.full(3, -1, dt))
    flags = np.array([True, rank > 0, rank == 2, False])
    land, lor = np.zeros(4, bool), np.zeros(4, bool)
    comm.Allreduce(flags, land, op=MPI.LAND)
    comm.Allreduce(flags, lor, op=MPI.LOR)
    eq(land, [True, False, False, False])
    eq(lor, [True, True, True, False])
    bits = np.array([1 << rank, 0xFF ^ (1 << rank)], "i4")
    out = np.zeros(2, "i4")
    comm.Allreduce(bits, out, op=MPI.BOR)
    eq(out, [(1 << p) - 1, 0xFF])
    comm.Allreduce(bits, out, op=MPI.BAND)
    eq(out, [0, 0xFF ^ ((1 << p) - 1)])
    comm.Allreduce(bits, out, op=MPI.BXOR)
    eq(out, [(1 << p) - 1, (0xFF * (p % 2)) ^ ((1 << p) - 1)])
    # MAXLOC over (double, int) pairs
    pair = np.zeros(1, dtype=np.dtype([("v", "f8"), ("i", "i4")], align=True))
    pair["v"], pair["i"] = float((rank * 3) % 4), rank
    res = np.zeros_like(pair)
    comm.Allreduce([pair, MPI.DOUBLE_INT], [res, MPI.DOUBLE_INT], op=MPI.MAXLOC)
    best = max(range(p), key=lambda r: ((r * 3) % 4, -r))
    assert res["v"][0] == (best * 3) % 4 and res["i"][0] == best
    # a NumPy scalar is a read-only send buffer
    total = np.zeros(1, "i8")
    comm.Allreduce(np.int64(rank), total)
    assert total[0] == p * (p - 1) // 2


@check
def IN_PLACE():
    p = size
    a = np.array([rank, 1.0])
    comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)
    eq(a, [p * (p - 1) / 2, p])
    b = np.array([rank + 1.0])
    if rank == 0:
        comm.Reduce(MPI.IN_PLACE, b, op=MPI.PROD, root=0)
        assert b[0] == np.prod(np.arange(1, p + 1))
    else:
        comm.Reduce(b, None, op=MPI.PROD, root=0)
    g = np.full(p * 2, -1, "i8")
    g[2 * rank:2 * rank + 2] = [rank, 10 * rank]
    comm.Allgather(MPI.IN_PLACE, g)
    eq(g, np.array([[r, 10 * r] for r in range(p)]).ravel())
    if rank == 1:
        g = np.full(p, -1, "i4")
        g[1] = 1
        comm.Gather(MPI.IN_PLACE, g, root=1)
        eq(g, np.arange(p))
    else:
        comm.Gather(np.array([rank], "i4"), None, root=1)
    if rank == 2:
        s = np.arange(p, dtype="f8") * 3
        comm.Scatter(s, MPI.IN_PLACE, root=2)
        eq(s, np.arange(p) * 3)
    else:
        r = np.zeros(1)
        comm.Scatter(None, r, root=2)
        assert r[0] == rank * 3
    t = np.array([rank * 10 + j for j in range(p)], "i8")
    comm.Alltoall(MPI.IN_PLACE, t)
    eq(t, [j * 10 + rank for j in range(p)])
    e = raises(ValueError, comm.Allreduce, a, MPI.IN_PLACE)
    assert "IN_PLACE" in str(e)
    a = np.array([rank + 1])
    comm.Allreduce(None, a, op=MPI.MAX)  # None is IN_PLACE where that is allowed
    assert a[0] == p
    raises(TypeError, comm.Allreduce, np.zeros(1), None)


@check
def Gather_Scatter_Allgather_Alltoall():
    p = size
    mine = np.array([rank, rank * rank], "f8")
    allv = np.array([[r, r * r] for r in range(p)], "f8")
    out = np.zeros((p, 2)) if rank == 0 else None
    comm.Gather(mine, out, root=0)
    if rank == 0:
        eq(out, allv)
    out = np.zeros(2 * p)
    comm.Allgather([mine, MPI.DOUBLE], [out, MPI.DOUBLE])
    eq(out, allv.ravel())
    send = np.arange(3 * p, dtype="i4") if rank == p - 1 else None
    recv = np.zeros(3, "i4")
    comm.Scatter(send, recv, root=p - 1)
    eq(recv, np.arange(3 * rank, 3 * rank + 3))
    send = np.array([100 * rank + j for j in range(p)], "i8")
    recv = np.zeros(p, "i8")
    comm.Alltoall(send, recv)
    eq(recv, [100 * j + rank for j in range(p)])
    sent = np.array([rank + 1], "i8")
    inc, exc = np.zeros(1, "i8"), np.zeros(1, "i8")
    comm.Scan(sent, inc)
    comm.Exscan(sent, exc)
    assert inc[0] == (rank + 1) * (rank + 2) // 2
    if rank > 0:
        assert exc[0] == rank * (rank + 1) // 2


@check
def vector_collectives():
    p = size
    counts = [r + 1 for r in range(p)]  # rank r has r + 1 items
    displs = [sum(counts[:r]) for r in range(p)]
    total = sum(counts)
    mine = np.full(rank + 1, float(rank))
    want = np.concatenate([np.full(r + 1, float(r)) for r in range(p)])
    out = np.zeros(total) if rank == 1 else None
    comm.Gatherv(mine, [out, counts, displs, MPI.DOUBLE] if rank == 1 else None, root=1)
    if rank == 1:
        eq(out, want)
    out = np.zeros(total)
    comm.Allgatherv(mine, [out, counts])  # displacements follow the counts
    eq(out, want)
    # ipyparallel's uneven split of arange(10) over 4 ranks: 3, 3, 2, 2
    n = 10
    sc = [n // p + (1 if r < n % p else 0) for r in range(p)]
    sd = [sum(sc[:r]) for r in range(p)]
    send = np.arange(n, dtype="i8") if rank == 0 else None
    got = np.zeros(sc[rank], "i8")
    comm.Scatterv([send, sc, sd, MPI.INT64_T] if rank == 0 else None, got, root=0)
    eq(got, np.arange(sd[rank], sd[rank] + sc[rank]))
    if rank == 0:  # and back, the root's part in place
        whole = np.zeros(n, "i8")
        whole[:sc[0]] = got
        comm.Gatherv(MPI.IN_PLACE, [whole, sc, sd, MPI.INT64_T], root=0)
        eq(whole, np.arange(n))
    else:
        comm.Gatherv(got, None, root=0)
    # holes: a (counts, displs) pair leaving every other slot alone, and
    # the same with a stride
    for spec in (([1] * p, [2 * r for r in range(p)]), (1, 2)):
        out = np.full(2 * p, -1.0)
        comm.Allgatherv(np.array([rank * 1.5]), [out, spec, MPI.DOUBLE])
        eq(out[0::2], [r * 1.5 for r in range(p)])
        eq(out[1::2], [-1.0] * p)
    # no counts: split as evenly as it goes, the first ranks one more
    out = np.zeros(n, "i8")
    comm.Allgatherv(np.arange(sd[rank], sd[rank] + sc[rank], dtype="i8"), out)
    eq(out, np.arange(n))
    # Alltoallv: rank r sends j + 1 items of value r to rank j
    send = np.concatenate([np.full(j + 1, rank, "i4") for j in range(p)])
    recv = np.zeros((rank + 1) * p, "i4")
    comm.Alltoallv([send, [j + 1 for j in range(p)]], [recv, rank + 1])
    eq(recv, np.repeat(np.arange(p), rank + 1))
    out = np.zeros(2 * p)  # no counts: equal blocks
    comm.Allgatherv(np.array([rank, -rank], "f8"), out)
    eq(out, np.array([[r, -r] for r in range(p)]).ravel())
    e = raises(ValueError, comm.Allgatherv, mine, [np.zeros(3), counts])
    assert "beyond" in str(e)
    e = raises(ValueError, comm.Allgatherv, mine, [np.zeros(total), counts[:2]])
    assert "expecting 4 counts" in str(e)
    raises(ValueError, comm.Allgatherv, mine, [bytearray(7), MPI.DOUBLE])  # not whole items
    e = raises(ValueError, comm.Allgatherv, mine, [np.zeros(total), tuple(counts)])
    assert "(counts, displacements)" in str(e)


# ------------------------------------------------------------------ point-to-point


@check
def Send_Recv_Sendrecv_Status():
    p = size
    right, left = (rank + 1) % p, (rank - 1) % p
    if rank % 2 == 0:
        comm.Send(np.arange(5.0) + rank, dest=right, tag=11)
        buf = np.zeros(5)
        st = MPI.Status()
        comm.Recv(buf, source=left, tag=12, status=st)
    else:
        buf = np.zeros(5)
        st = MPI.Status()
        comm.Recv([buf, MPI.DOUBLE], source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=st)
        comm.Send([np.arange(5.0) + rank, 5, MPI.DOUBLE], dest=right, tag=12)
    eq(buf, np.arange(5.0) + left)
    assert st.Get_source() == left and st.source == left
    assert st.Get_tag() == (11 if rank % 2 else 12) and st.Get_count(MPI.DOUBLE) == 5
    assert st.Get_count() == 40 and st.Get_error() == MPI.SUCCESS
    got = np.zeros(3, "i4")
    st = MPI.Status()
    comm.Sendrecv(np.full(3, rank, "i4"), dest=right, sendtag=rank, recvbuf=got, source=left,
                  recvtag=MPI.ANY_TAG, status=st)
    eq(got, [left] * 3)
    assert st.tag == left and st.Get_elements(MPI.INT) == 3
    # PROC_NULL: nothing moves, the call returns
    comm.Send(np.zeros(1), dest=MPI.PROC_NULL)
    comm.Recv(np.zeros(1), source=MPI.PROC_NULL)
    comm.Send(None, dest=MPI.PROC_NULL)  # as in mpi4py: no buffer is read
    comm.Sendrecv("not a buffer", MPI.PROC_NULL, recvbuf=None, source=MPI.PROC_NULL)
    assert comm.Irecv(None, source=MPI.PROC_NULL).Wait()
    # Probe / Iprobe
    comm.Barrier()
    if rank == 0:
        comm.Send(np.arange(7, dtype="i8"), dest=1, tag=21)
    if rank == 1:
        st = MPI.Status()
        assert comm.Probe(source=0, tag=21, status=st) is True
        assert st.Get_count(MPI.INT64_T) == 7 and comm.Iprobe(source=0, tag=21) is True
        buf = np.zeros(7, "i8")
        comm.Recv(buf, 0, 21)
        eq(buf, np.arange(7))
        assert comm.Iprobe(source=0, tag=21) is False


@check
def Isend_Irecv_requests():
    p = size
    bufs = [np.zeros(4) for _ in range(p)]
    reqs = [comm.Irecv(bufs[src], source=src, tag=5) for src in range(p)]
    sends = [comm.Isend(np.full(4, float(rank)), dest=dst, tag=5) for dst in range(p)]
    assert isinstance(reqs[0], MPI.Request)
    statuses = []
    assert MPI.Request.Waitall(reqs, statuses) is True
    MPI.Request.Waitall(sends)
    for src in range(p):
        eq(bufs[src], [src] * 4)
        assert statuses[src].Get_source() == src and statuses[src].Get_tag() == 5
    # Wait / Test on one request, Testall and Waitany
    r = comm.Irecv(bufs[0], source=(rank + 1) % p, tag=6)
    s = comm.Isend(np.full(4, 9.0), dest=(rank - 1) % p, tag=6)
    assert r.Wait() is True and s.Wait() is True
    assert r.Test() is True  # a completed request stays complete
    eq(bufs[0], [9] * 4)
    r = comm.Irecv(bufs[1], source=(rank + 1) % p, tag=7)
    comm.Barrier()
    assert MPI.Request.Testall([r]) is False  # nobody sent yet
    comm.Barrier()
    comm.Send(np.full(4, 3.0), dest=(rank - 1) % p, tag=7)
    assert MPI.Request.Waitany([r]) == 0
    eq(bufs[1], [3] * 4)
    assert MPI.Request.Waitany([MPI.Request()]) == MPI.UNDEFINED


# ------------------------------------------------------------------ objects


@check
def object_collectives():
    p = size
    obj = {"from": 2, "list": [1, 2.5, "x"], "arr": np.arange(3.0)} if rank == 2 else None
    got = comm.bcast(obj, root=2)
    assert got["from"] == 2 and got["list"] == [1, 2.5, "x"]
    eq(got["arr"], np.arange(3.0))
    assert comm.bcast("world") == "world"
    g = comm.gather((rank, "r%d" % rank), root=1)
    assert g == ([(r, "r%d" % r) for r in range(p)] if rank == 1 else None)
    assert comm.allgather(rank * 2) == [2 * r for r in range(p)]
    items = [{"i": i} for i in range(p)] if rank == 0 else None
    assert comm.scatter(items, root=0) == {"i": rank}
    assert comm.alltoall([(rank, j) for j in range(p)]) == [(j, rank) for j in range(p)]
    assert comm.reduce(rank + 1, root=3) == (p * (p + 1) // 2 if rank == 3 else None)
    assert comm.allreduce(rank + 1) == p * (p + 1) // 2
    assert comm.allreduce(rank + 1, op=MPI.PROD) == np.prod(np.arange(1, p + 1))
    assert comm.allreduce(rank, op=MPI.MAX) == p - 1 and comm.allreduce(rank, MPI.MIN) == 0
    assert comm.allreduce(rank > 0, op=MPI.LAND) is False
    assert comm.allreduce(rank == 1, op=MPI.LOR) is True
    assert comm.allreduce([rank]) == list(range(p))  # SUM is + : lists concatenate
    assert comm.allreduce((rank % 2, rank), op=MPI.MAXLOC) == (1, 1)
    assert comm.allreduce((rank % 2, rank), op=MPI.MINLOC) == (0, 0)
    assert comm.allreduce(rank, op=lambda a, b: a * 10 + b) == int("".join(map(str, range(p))))
    assert comm.scan(rank + 1) == (rank + 1) * (rank + 2) // 2
    assert comm.exscan(rank + 1) == (None if rank == 0 else rank * (rank + 1) // 2)
    assert comm.scan([rank], op=MPI.SUM) == list(range(rank + 1))
    arr = comm.allreduce(np.arange(3) * rank)
    eq(arr, np.arange(3) * (p * (p - 1) // 2))
    big = np.random.default_rng(rank).random(300_000)  # 2.4 MB: not an eager message
    allbig = comm.allgather(big)
    for r in range(p):
        eq(allbig[r], np.random.default_rng(r).random(300_000))
    comm.barrier()


@check
def object_point_to_point():
    p = size
    right, left = (rank + 1) % p, (rank - 1) % p
    if rank % 2 == 0:
        comm.send({"n": rank}, dest=right, tag=3)
        got = comm.recv(source=left, tag=4)
    else:
        st = MPI.Status()
        got = comm.recv(source=MPI.ANY_SOURCE, tag=3, status=st)
        assert st.Get_source() == left and st.Get_tag() == 3 and st.Get_count() > 0
        comm.send({"n": rank}, dest=right, tag=4)
    assert got == {"n": left}
    assert comm.sendrecv(("hi", rank), dest=right, source=left) == ("hi", left)
    big = np.arange(500_000.0) + rank
    assert np.array_equal(comm.sendrecv(big, dest=right, source=left), np.arange(500_000.0) + left)
    reqs = [comm.isend([rank, j], dest=j, tag=8) for j in range(p)]
    recvs = [comm.irecv(source=j, tag=8) for j in range(p)]
    assert MPI.Request.waitall(recvs) == [[j, rank] for j in range(p)]
    MPI.Request.waitall(reqs)
    r = comm.irecv(source=left, tag=9)
    comm.barrier()
    flag, val = r.test()
    assert (flag, val) == (False, None)
    comm.barrier()
    s = comm.isend("ping%d" % rank, dest=right, tag=9)
    assert r.wait() == "ping%d" % left and s.wait() is None
    r = comm.irecv(source=left, tag=10)
    comm.send(np.full(200_000, rank), dest=right, tag=10)  # large: needs the wait
    eq(r.wait(), np.full(200_000, left))
    reqs = [comm.isend(1, dest=rank, tag=12)]
    assert comm.recv(source=rank, tag=12) == 1
    done = False
    while not done:  # the send completes now that it was received
        done, vals = MPI.Request.testall(reqs)
    assert vals == [None]
    assert comm.recv(source=MPI.PROC_NULL) is None
    comm.send("nothing", dest=MPI.PROC_NULL)


# ------------------------------------------------------------------ communicators


@check
def Split_Dup_Free():
    p = size
    sub = comm.Split(color=rank % 2, key=-rank)
    assert sub.size == (p + 1 - rank % 2) // 2
    members = [r for r in range(p) if r % 2 == rank % 2]
    assert sub.rank == sorted(members, reverse=True).index(rank)  # key=-rank reverses
    assert sub.allgather(rank) == sorted(members, reverse=True)
    out = np.zeros(1)
    sub.Allreduce(np.array([float(rank)]), out)
    assert out[0] == sum(members)
    dup = comm.Dup()
    assert dup.size == p and dup.rank == rank and dup != comm
    assert dup.bcast(rank, root=3) == 3
    clone = dup.Clone()
    assert clone.allreduce(1) == p
    for c in (sub, dup, clone):
        c.Free()
        assert c == MPI.COMM_NULL
    e = raises(MPI.Exception, sub.Barrier)
    assert e.Get_error_class() == MPI.ERR_COMM
    none = comm.Split(MPI.UNDEFINED if rank == 0 else 1, 0)
    assert (none == MPI.COMM_NULL) == (rank == 0)
    if rank != 0:
        assert none.size == p - 1
        none.Free()
    e = raises(MPI.Exception, comm.Free)
    assert e.Get_error_class() == MPI.ERR_COMM
    e = raises(MPI.Exception, MPI.COMM_SELF.Free)
    assert comm.allreduce(1) == p


# ------------------------------------------------------------------ errors


@check
def mpi4py_exceptions():
    assert issubclass(MPI.Exception, RuntimeError)
    e = MPI.Exception(MPI.ERR_RANK)
    assert e.Get_error_code() == MPI.ERR_RANK and e.error_class == MPI.ERR_RANK
    assert int(e) == MPI.ERR_RANK and e == MPI.ERR_RANK and "rank" in str(e).lower()
    e = raises(MPI.Exception, comm.Send, np.zeros(1), dest=size)
    assert e.Get_error_class() == MPI.ERR_RANK
    e = raises(MPI.Exception, comm.send, 1, dest=-5)
    assert e.Get_error_class() == MPI.ERR_RANK
    e = raises(MPI.Exception, comm.Bcast, np.zeros(1), root=size + 3)
    assert e.Get_error_class() == MPI.ERR_ROOT
    raises(MPI.Exception, comm.bcast, 1, root=-1)
    e = raises(TypeError, comm.Send, 5, dest=0)
    assert "buffer" in str(e)
    raises(TypeError, comm.Allreduce, np.zeros(2), np.zeros(2), op="sum")
    e = raises(ValueError, comm.Allreduce, np.zeros(3), np.zeros(2))
    assert "count" in str(e)
    raises(ValueError, comm.Allreduce, np.zeros(2, "f8"), np.zeros(2, "f4"))
    raises(TypeError, comm.Bcast, [np.zeros(3), 3, 7])  # 7 is no datatype
    e = raises(ValueError, comm.Bcast, [np.zeros(3), 1, 0, MPI.DOUBLE, 5])
    assert "2 to 4 items" in str(e)
    raises(ValueError, comm.Bcast, [np.zeros(3), 4, MPI.DOUBLE])
    raises(ValueError, comm.Bcast, [np.zeros(3), 2 ** 62, MPI.DOUBLE])  # no overflow
    raises(ValueError, comm.Bcast, [np.zeros(3), 1, 2 ** 62, MPI.DOUBLE])
    raises(OverflowError, comm.Bcast, [np.zeros(3), 2 ** 64, MPI.DOUBLE])
    raises(ValueError, comm.Bcast, [np.zeros(3), -1, MPI.DOUBLE])
    huge = ([1] * size, [2 ** 62] * size)
    raises(ValueError, comm.Allgatherv, np.zeros(1), [np.zeros(4), huge, MPI.DOUBLE])
    e = raises(ValueError, comm.Bcast, [bytearray(7), MPI.DOUBLE])
    assert "multiple" in str(e)
    e = raises(ValueError, comm.Gather, np.zeros(1), np.zeros(size + 1), root=rank)
    ro = np.zeros(2)
    ro.setflags(write=False)
    raises(ValueError, comm.Recv, ro, source=rank)  # NumPy's own error, before any wait
    raises(BufferError, comm.Recv, b"xx", source=rank)
    e = raises(ValueError, comm.Bcast, np.zeros(2, ">f8"))  # big-endian
    assert "byte order" in str(e)
    raises(KeyError, comm.Bcast, np.zeros(2, "e"))  # half floats: none either
    e = raises(ValueError, comm.Bcast, np.zeros((4, 4))[:, 0])  # NumPy: not contiguous
    assert "contiguous" in str(e)
    raises(TypeError, comm.Recv, np.zeros(1), source=rank, status="no")
    # truncation: a message bigger than the receive buffer
    right, left = (rank + 1) % size, (rank - 1) % size
    req = comm.Isend(np.zeros(10), dest=right, tag=31)
    e = raises(MPI.Exception, comm.Recv, np.zeros(5), source=left, tag=31)
    assert e.Get_error_class() == MPI.ERR_TRUNCATE and "80 bytes" in str(e)
    req.Wait()
    small = comm.Irecv(np.zeros(2), source=left, tag=32)
    comm.Send(np.zeros(4), dest=right, tag=32)
    e = raises(MPI.Exception, small.Wait)
    assert e.Get_error_class() == MPI.ERR_TRUNCATE
    comm.Barrier()


@check
def pickling_errors_keep_ranks_in_step():
    bad = (lambda: 0) if rank == 1 else rank
    e = raises((pickle.PicklingError, AttributeError, TypeError, MPI.Exception),
               comm.allgather, bad)
    if rank != 1:
        assert isinstance(e, MPI.Exception) and "rank 1" in str(e)
    e = raises(Exception, comm.bcast, (lambda: 0) if rank == 0 else None, root=0)
    assert isinstance(e, MPI.Exception) == (rank != 0)
    e = raises(Exception, comm.scatter, [1, 2] if rank == 0 else None, root=0)
    assert isinstance(e, ValueError if rank == 0 else MPI.Exception)
    e = raises(Exception, comm.alltoall, [1] * size if rank != 2 else [lambda: 0] * size)
    assert isinstance(e, MPI.Exception) == (rank != 2)
    raises(TypeError, comm.reduce, 1, op=5)
    # and the ranks are still in step:
    assert comm.allgather(rank) == list(range(size))


@check
def missing_names_are_attribute_errors():
    e = raises(AttributeError, getattr, MPI, "Iallreduce")
    assert "ippc" in str(e) and "Wtime" in str(e) and "docs/mpi4py.md" in str(e)
    e = raises(AttributeError, getattr, MPI, "Finalize")
    assert "engine" in str(e)
    assert not hasattr(MPI, "Init") and not hasattr(MPI, "Init_thread")
    e = raises(AttributeError, getattr, comm, "Ialltoallv")
    assert "Allreduce" in str(e) and "Ialltoallv" in str(e)
    raises(AttributeError, getattr, MPI.Op, "Create")
    raises(AttributeError, getattr, MPI.DOUBLE, "Commit")
    raises(AttributeError, getattr, MPI.Request(), "Cancel")
    raises(AttributeError, getattr, MPI.Status(), "Set_source")
    raises(AttributeError, getattr, mpi4py, "get_include")
    raises(ImportError, __import__, "mpi4py.futures")


def report(out, rank_, name, ok, detail=""):
    line = f"rank {rank_} {'ok' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else "")
    print(line, flush=True)
    out.write(line + "\n")
    out.flush()


def run_checks(checks, comm_, rank_):
    """Runs each check on this rank; results go to $PYMPI_RESULTS/rank-R.txt
    (one line per check) and to stdout."""
    import os
    only = set(sys.argv[1:])
    chosen = [f for f in checks if not only or f.__name__ in only]
    path = os.path.join(os.environ.get("PYMPI_RESULTS", "."), f"rank-{rank_}.txt")
    with open(path, "w") as out:
        out.write("checks: " + " ".join(f.__name__ for f in chosen) + "\n")
        for f in chosen:
            try:
                f()
                report(out, rank_, f.__name__, True)
            except BaseException:  # noqa: B902 - a check's failure is reported, not fatal
                tb = traceback.format_exc().strip().replace("\n", " | ")
                report(out, rank_, f.__name__, False, tb)
            comm_.barrier()


if __name__ == "__main__":
    run_checks(CHECKS, comm, rank)
