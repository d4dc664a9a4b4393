/* pympi_coll.c — the buffer-based collectives of MPI.Comm: Bcast, Reduce,
 * Allreduce, Scan, Exscan, Gather, Scatter, Allgather, Alltoall and their
 * v-forms, on
 * buffer messages (NumPy arrays, NumPy scalars, bytearrays, [buf, type]
 * specs; pympi_msg_parse) with MPI.IN_PLACE where MPI allows it.
 *
 * Gatherv, Scatterv, Allgatherv and Alltoallv take vector messages
 * (pympi_msgv_parse) on their per-rank side.
 *
 * Each starts MPI's nonblocking form and waits with pympi_wait (yielding,
 * GIL released); the buffer views stay in the op, so an interrupted
 * collective keeps them until MPI completes it.  As in mpi4py, a root's
 * receive buffer (Gather) or send buffer (Scatter) is read on the root
 * only, and other ranks may pass None.
 */
#include "pympi_impl.h"

/* Waits for req and releases op: Py_None (a new reference) or NULL. */
static PyObject *finish(lmpi_commstate *cs, MPI_Request *req, pympi_op *op)
{
    int rc = pympi_wait(cs, req, NULL, op, 1);
    pympi_op_clear(op);
    if (rc < 0)
        return NULL;
    return Py_NewRef(Py_None);
}

/* Starting failed (rc is not MPI_SUCCESS, or an exception is set). */
static PyObject *fail(pympi_op *op, int rc)
{
    pympi_op_clear(op);
    if (rc != MPI_SUCCESS)
        pympi_raise(rc);
    return NULL;
}

static int same_shape(const pympi_msg *s, const pympi_msg *r)
{
    if (s->count != r->count) {
        PyErr_Format(PyExc_ValueError, "mismatch in send count %lld and receive count %lld",
                     (long long)s->count, (long long)r->count);
        return 0;
    }
    if (s->type != r->type) {
        PyErr_SetString(PyExc_ValueError, "mismatch in send and receive MPI datatypes");
        return 0;
    }
    return 1;
}

static PyObject *c_bcast(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"buf", "root", NULL};
    PyObject *buf;
    int root = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|i:Bcast", kw, &buf, &root))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 1, "Bcast");
    if (!cs)
        return NULL;
    pympi_op op = {0};
    pympi_msg m;
    if (pympi_msg_parse(buf, cs->rank == root ? 0 : PYMPI_MSG_WRITE, 1, &op, &m) < 0)
        return fail(&op, MPI_SUCCESS);
    MPI_Request req;
    int rc = MPI_Ibcast_c(m.buf, m.count, m.type, root, cs->comm, &req);
    return rc != MPI_SUCCESS ? fail(&op, rc) : finish(cs, &req, &op);
}

typedef enum { R_REDUCE, R_ALLREDUCE, R_SCAN, R_EXSCAN } reduce_kind;

/* Reduce(sendbuf, recvbuf, op=SUM, root=0) and the root-less forms. */
static PyObject *reduce_common(PyObject *self, PyObject *args, PyObject *kwds, reduce_kind kind,
                               const char *what)
{
    static char *kw_root[] = {"sendbuf", "recvbuf", "op", "root", NULL};
    static char *kw[] = {"sendbuf", "recvbuf", "op", NULL};
    PyObject *sendbuf, *recvbuf = Py_None, *opobj = NULL;
    int root = 0, ok;
    if (kind == R_REDUCE)
        ok = PyArg_ParseTupleAndKeywords(args, kwds, "OO|Oi", kw_root, &sendbuf, &recvbuf, &opobj,
                                         &root);
    else
        ok = PyArg_ParseTupleAndKeywords(args, kwds, "OO|O", kw, &sendbuf, &recvbuf, &opobj);
    if (!ok)
        return NULL;
    MPI_Op mop = opobj ? pympi_op_of(opobj) : MPI_SUM;
    if (mop == MPI_OP_NULL)
        return opobj && PyErr_Occurred()
                   ? NULL
                   : pympi_raise_msg(MPI_ERR_OP, "%s: invalid op (MPI.OP_NULL)", what);
    lmpi_commstate *cs = pympi_begin(self, 1, what);
    if (!cs)
        return NULL;
    int receives = kind != R_REDUCE || cs->rank == root;
    pympi_op op = {0};
    pympi_msg s, r = {0};
    if (pympi_msg_parse(sendbuf, receives ? PYMPI_MSG_IN_PLACE : 0, 1, &op, &s) < 0)
        return fail(&op, MPI_SUCCESS);
    if (receives) {
        if (pympi_msg_parse(recvbuf, PYMPI_MSG_WRITE, 1, &op, &r) < 0 ||
            (!s.in_place && !same_shape(&s, &r)))
            return fail(&op, MPI_SUCCESS);
    } else {
        r = (pympi_msg){.buf = NULL, .count = s.count, .type = s.type};
    }
    MPI_Count count = r.count;
    MPI_Datatype type = r.type;
    MPI_Request req;
    int rc;
    switch (kind) {
    case R_REDUCE: rc = MPI_Ireduce_c(s.buf, r.buf, count, type, mop, root, cs->comm, &req); break;
    case R_ALLREDUCE: rc = MPI_Iallreduce_c(s.buf, r.buf, count, type, mop, cs->comm, &req); break;
    case R_SCAN: rc = MPI_Iscan_c(s.buf, r.buf, count, type, mop, cs->comm, &req); break;
    default: rc = MPI_Iexscan_c(s.buf, r.buf, count, type, mop, cs->comm, &req); break;
    }
    return rc != MPI_SUCCESS ? fail(&op, rc) : finish(cs, &req, &op);
}

static PyObject *c_reduce(PyObject *self, PyObject *args, PyObject *kwds)
{
    return reduce_common(self, args, kwds, R_REDUCE, "Reduce");
}

static PyObject *c_allreduce(PyObject *self, PyObject *args, PyObject *kwds)
{
    return reduce_common(self, args, kwds, R_ALLREDUCE, "Allreduce");
}

static PyObject *c_scan(PyObject *self, PyObject *args, PyObject *kwds)
{
    return reduce_common(self, args, kwds, R_SCAN, "Scan");
}

static PyObject *c_exscan(PyObject *self, PyObject *args, PyObject *kwds)
{
    return reduce_common(self, args, kwds, R_EXSCAN, "Exscan");
}

/* The (sendbuf, recvbuf[, root=0]) arguments of the gather/scatter
 * family (rooted: with root) and the start of a collective call on self;
 * the communicator state, or NULL with an exception. */
static lmpi_commstate *buffers_begin(PyObject *self, PyObject *args, PyObject *kwds, int rooted,
                                     const char *what, PyObject **sendbuf, PyObject **recvbuf,
                                     int *root)
{
    static char *kw_root[] = {"sendbuf", "recvbuf", "root", NULL};
    static char *kw[] = {"sendbuf", "recvbuf", NULL};
    int ok;
    if (rooted)
        ok = PyArg_ParseTupleAndKeywords(args, kwds, "OO|i", kw_root, sendbuf, recvbuf, root);
    else
        ok = PyArg_ParseTupleAndKeywords(args, kwds, "OO", kw, sendbuf, recvbuf);
    return ok ? pympi_begin(self, 1, what) : NULL;
}

typedef enum { G_GATHER, G_SCATTER, G_ALLGATHER, G_ALLTOALL } gather_kind;

/* Gather / Scatter (sendbuf, recvbuf, root=0), Allgather, Alltoall. */
static PyObject *gather_common(PyObject *self, PyObject *args, PyObject *kwds, gather_kind kind,
                               const char *what)
{
    PyObject *sendbuf, *recvbuf;
    int root = 0;
    lmpi_commstate *cs = buffers_begin(self, args, kwds, kind == G_GATHER || kind == G_SCATTER,
                                       what, &sendbuf, &recvbuf, &root);
    if (!cs)
        return NULL;
    int is_root = cs->rank == root, p = cs->size;
    pympi_op op = {0};
    pympi_msg s = {.type = MPI_BYTE}, r = {.type = MPI_BYTE};
    int sflags = 0, rflags = PYMPI_MSG_WRITE;
    MPI_Count sblocks = 1, rblocks = 1;
    int use_send = 1, use_recv = 1;
    switch (kind) {
    case G_GATHER:
        sflags = is_root ? PYMPI_MSG_IN_PLACE : 0;
        rblocks = p;
        use_recv = is_root;
        break;
    case G_SCATTER:
        sblocks = p;
        rflags |= is_root ? PYMPI_MSG_IN_PLACE : 0;
        use_send = is_root;
        break;
    case G_ALLGATHER:
        sflags = PYMPI_MSG_IN_PLACE;
        rblocks = p;
        break;
    default:
        sflags = PYMPI_MSG_IN_PLACE;
        sblocks = rblocks = p;
        break;
    }
    if (use_send && pympi_msg_parse(sendbuf, sflags, sblocks, &op, &s) < 0)
        return fail(&op, MPI_SUCCESS);
    if (use_recv && pympi_msg_parse(recvbuf, rflags, rblocks, &op, &r) < 0)
        return fail(&op, MPI_SUCCESS);
    MPI_Request req;
    int rc;
    switch (kind) {
    case G_GATHER:
        rc = MPI_Igather_c(s.buf, s.count, s.type, r.buf, r.count, r.type, root, cs->comm, &req);
        break;
    case G_SCATTER:
        rc = MPI_Iscatter_c(s.buf, s.count, s.type, r.buf, r.count, r.type, root, cs->comm, &req);
        break;
    case G_ALLGATHER:
        rc = MPI_Iallgather_c(s.buf, s.count, s.type, r.buf, r.count, r.type, cs->comm, &req);
        break;
    default:
        rc = MPI_Ialltoall_c(s.buf, s.count, s.type, r.buf, r.count, r.type, cs->comm, &req);
        break;
    }
    return rc != MPI_SUCCESS ? fail(&op, rc) : finish(cs, &req, &op);
}

static PyObject *c_gather(PyObject *self, PyObject *args, PyObject *kwds)
{
    return gather_common(self, args, kwds, G_GATHER, "Gather");
}

static PyObject *c_scatter(PyObject *self, PyObject *args, PyObject *kwds)
{
    return gather_common(self, args, kwds, G_SCATTER, "Scatter");
}

static PyObject *c_allgather(PyObject *self, PyObject *args, PyObject *kwds)
{
    return gather_common(self, args, kwds, G_ALLGATHER, "Allgather");
}

static PyObject *c_alltoall(PyObject *self, PyObject *args, PyObject *kwds)
{
    return gather_common(self, args, kwds, G_ALLTOALL, "Alltoall");
}

typedef enum { V_GATHER, V_SCATTER, V_ALLGATHER, V_ALLTOALL } vector_kind;

/* Gatherv / Scatterv (sendbuf, recvbuf, root=0), Allgatherv, Alltoallv:
 * the rooted side's buffer (both for Alltoallv) is a vector message. */
static PyObject *vector_common(PyObject *self, PyObject *args, PyObject *kwds, vector_kind kind,
                               const char *what)
{
    PyObject *sendbuf, *recvbuf;
    int root = 0;
    lmpi_commstate *cs = buffers_begin(self, args, kwds, kind == V_GATHER || kind == V_SCATTER,
                                       what, &sendbuf, &recvbuf, &root);
    if (!cs)
        return NULL;
    int is_root = cs->rank == root, p = cs->size;
    pympi_op op = {0};
    pympi_msg s = {.type = MPI_BYTE}, r = {.type = MPI_BYTE};
    pympi_msgv sv = {.type = MPI_BYTE}, rv = {.type = MPI_BYTE};
    MPI_Request req;
    int rc;
    switch (kind) {
    case V_GATHER:
        if (pympi_msg_parse(sendbuf, is_root ? PYMPI_MSG_IN_PLACE : 0, 1, &op, &s) < 0 ||
            (is_root && pympi_msgv_parse(recvbuf, PYMPI_MSG_WRITE, p, &op, &rv) < 0))
            return fail(&op, MPI_SUCCESS);
        rc = MPI_Igatherv_c(s.buf, s.count, s.type, rv.buf, rv.counts, rv.displs, rv.type, root,
                            cs->comm, &req);
        break;
    case V_SCATTER:
        if ((is_root && pympi_msgv_parse(sendbuf, 0, p, &op, &sv) < 0) ||
            pympi_msg_parse(recvbuf, PYMPI_MSG_WRITE | (is_root ? PYMPI_MSG_IN_PLACE : 0), 1, &op,
                            &r) < 0)
            return fail(&op, MPI_SUCCESS);
        rc = MPI_Iscatterv_c(sv.buf, sv.counts, sv.displs, sv.type, r.buf, r.count, r.type, root,
                             cs->comm, &req);
        break;
    case V_ALLGATHER:
        if (pympi_msg_parse(sendbuf, PYMPI_MSG_IN_PLACE, 1, &op, &s) < 0 ||
            pympi_msgv_parse(recvbuf, PYMPI_MSG_WRITE, p, &op, &rv) < 0)
            return fail(&op, MPI_SUCCESS);
        rc = MPI_Iallgatherv_c(s.buf, s.count, s.type, rv.buf, rv.counts, rv.displs, rv.type,
                               cs->comm, &req);
        break;
    default:
        if (pympi_msgv_parse(sendbuf, PYMPI_MSG_IN_PLACE, p, &op, &sv) < 0 ||
            pympi_msgv_parse(recvbuf, PYMPI_MSG_WRITE, p, &op, &rv) < 0)
            return fail(&op, MPI_SUCCESS);
        rc = MPI_Ialltoallv_c(sv.buf, sv.counts, sv.displs, sv.type, rv.buf, rv.counts, rv.displs,
                              rv.type, cs->comm, &req);
        break;
    }
    return rc != MPI_SUCCESS ? fail(&op, rc) : finish(cs, &req, &op);
}

static PyObject *c_gatherv(PyObject *self, PyObject *args, PyObject *kwds)
{
    return vector_common(self, args, kwds, V_GATHER, "Gatherv");
}

static PyObject *c_scatterv(PyObject *self, PyObject *args, PyObject *kwds)
{
    return vector_common(self, args, kwds, V_SCATTER, "Scatterv");
}

static PyObject *c_allgatherv(PyObject *self, PyObject *args, PyObject *kwds)
{
    return vector_common(self, args, kwds, V_ALLGATHER, "Allgatherv");
}

static PyObject *c_alltoallv(PyObject *self, PyObject *args, PyObject *kwds)
{
    return vector_common(self, args, kwds, V_ALLTOALL, "Alltoallv");
}

PyMethodDef pympi_coll_methods[] = {
    {"Bcast", PYMPI_KW(c_bcast), METH_VARARGS | METH_KEYWORDS,
     "Bcast(buf, root=0): root's buffer into every rank's."},
    {"Reduce", PYMPI_KW(c_reduce), METH_VARARGS | METH_KEYWORDS,
     "Reduce(sendbuf, recvbuf, op=SUM, root=0)."},
    {"Allreduce", PYMPI_KW(c_allreduce), METH_VARARGS | METH_KEYWORDS,
     "Allreduce(sendbuf, recvbuf, op=SUM)."},
    {"Scan", PYMPI_KW(c_scan), METH_VARARGS | METH_KEYWORDS,
     "Scan(sendbuf, recvbuf, op=SUM): inclusive prefix reduction."},
    {"Exscan", PYMPI_KW(c_exscan), METH_VARARGS | METH_KEYWORDS,
     "Exscan(sendbuf, recvbuf, op=SUM): exclusive prefix reduction."},
    {"Gather", PYMPI_KW(c_gather), METH_VARARGS | METH_KEYWORDS,
     "Gather(sendbuf, recvbuf, root=0)."},
    {"Scatter", PYMPI_KW(c_scatter), METH_VARARGS | METH_KEYWORDS,
     "Scatter(sendbuf, recvbuf, root=0)."},
    {"Allgather", PYMPI_KW(c_allgather), METH_VARARGS | METH_KEYWORDS,
     "Allgather(sendbuf, recvbuf)."},
    {"Alltoall", PYMPI_KW(c_alltoall), METH_VARARGS | METH_KEYWORDS, "Alltoall(sendbuf, recvbuf)."},
    {"Gatherv", PYMPI_KW(c_gatherv), METH_VARARGS | METH_KEYWORDS,
     "Gatherv(sendbuf, [recvbuf, counts, displs, datatype], root=0)."},
    {"Scatterv", PYMPI_KW(c_scatterv), METH_VARARGS | METH_KEYWORDS,
     "Scatterv([sendbuf, counts, displs, datatype], recvbuf, root=0)."},
    {"Allgatherv", PYMPI_KW(c_allgatherv), METH_VARARGS | METH_KEYWORDS,
     "Allgatherv(sendbuf, [recvbuf, counts, displs, datatype])."},
    {"Alltoallv", PYMPI_KW(c_alltoallv), METH_VARARGS | METH_KEYWORDS,
     "Alltoallv([sendbuf, counts, displs, datatype], [recvbuf, counts, displs, datatype])."},
    {NULL, NULL, 0, NULL},
};
