/* pympi_obj.c — the pickle-based (lower-case) collectives of MPI.Comm:
 * bcast, gather, scatter, allgather, alltoall, reduce, allreduce, scan,
 * exscan (barrier is pympi_comm.c's).
 *
 * Every one is two rounds: first the pickle lengths (int64), then the
 * bytes with the large-count v-forms.  A rank whose object cannot be
 * pickled announces length -1 instead: every rank then skips the second
 * round and raises (that rank its pickling error, the others
 * MPI.Exception naming it), so no rank is left waiting.  As in mpi4py,
 * every result is unpickled (the root's own item too), and reduce folds
 * the gathered objects in rank order with the op applied to Python objects
 * (SUM: x + y, MAX: y if y > x else x, ..., or any callable).
 */
#include "pympi_impl.h"

#include <string.h>

static PyObject *pickle_dumps, *pickle_loads, *pickle_protocol;

int pympi_obj_init(void)
{
    if (pickle_dumps)
        return 0;
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (!pickle)
        return -1;
    pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
    pickle_loads = PyObject_GetAttrString(pickle, "loads");
    pickle_protocol = PyObject_GetAttrString(pickle, "HIGHEST_PROTOCOL");
    Py_DECREF(pickle);
    if (!pickle_dumps || !pickle_loads || !pickle_protocol) {
        Py_CLEAR(pickle_dumps);
        Py_CLEAR(pickle_loads);
        Py_CLEAR(pickle_protocol);
        return -1;
    }
    return 0;
}

PyObject *pympi_dumps(PyObject *obj)
{
    PyObject *b = PyObject_CallFunctionObjArgs(pickle_dumps, obj, pickle_protocol, NULL);
    if (b && !PyBytes_Check(b)) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_TypeError, "pickle.dumps did not return bytes");
        return NULL;
    }
    return b;
}

PyObject *pympi_loads(const char *data, Py_ssize_t len)
{
    PyObject *view = PyMemoryView_FromMemory((char *)data, len, PyBUF_READ);
    if (!view)
        return NULL;
    PyObject *obj = PyObject_CallOneArg(pickle_loads, view);
    Py_DECREF(view);
    return obj;
}

/* ------------------------------------------------------------ helpers */

/* The raised exception as one object (its traceback attached); clears it. */
static PyObject *err_take(void)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* Pickles obj for sending: a bytes object, or NULL with the pickling error
 * kept in *err (not raised) so the collective can still tell the others. */
static PyObject *dumps_or_keep(PyObject *obj, PyObject **err)
{
    PyObject *b = pympi_dumps(obj);
    if (!b && !*err)
        *err = err_take();
    else if (!b)
        PyErr_Clear();
    return b;
}

/* Raises for a round in which some rank announced -1: this rank's own
 * error if it has one, else MPI.Exception naming the first failing rank. */
static PyObject *raise_failed(const char *what, PyObject *own_err, int failed_rank)
{
    if (own_err) {
        PyErr_SetObject((PyObject *)Py_TYPE(own_err), own_err);
        Py_DECREF(own_err);
        return NULL;
    }
    return pympi_raise_msg(MPI_ERR_OTHER, "%s: rank %d could not pickle its object", what,
                           failed_rank);
}

/* Storage that MPI reads or writes: a bytes object kept by op. */
static char *op_bytes(pympi_op *op, Py_ssize_t len)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, len);
    if (!b)
        return NULL;
    int rc = pympi_op_keep(op, b);
    Py_DECREF(b);
    return rc < 0 ? NULL : PyBytes_AS_STRING(b);
}

/* Runs one started collective to completion (0) or raises (-1). */
static int run(lmpi_commstate *cs, int rc, MPI_Request *req, pympi_op *op)
{
    if (pympi_check(rc) < 0)
        return -1;
    return pympi_wait(cs, req, NULL, op, 1);
}

/* A list of the p objects pickled in data at displs/lens. */
static PyObject *unpickle_all(const char *data, const MPI_Count *lens, const MPI_Aint *displs,
                              int p)
{
    PyObject *list = PyList_New(p);
    for (int i = 0; list && i < p; i++) {
        PyObject *o = pympi_loads(data + displs[i], (Py_ssize_t)lens[i]);
        if (!o)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, o);
    }
    return list;
}

/* Lengths (int64) -> counts and displacements; index of a -1, or -1. */
static int layout(const int64_t *lens, int p, MPI_Count *counts, MPI_Aint *displs, MPI_Aint *total)
{
    int failed = -1;
    MPI_Aint at = 0;
    for (int i = 0; i < p; i++) {
        if (lens[i] < 0 && failed < 0)
            failed = i;
        counts[i] = lens[i] < 0 ? 0 : (MPI_Count)lens[i];
        displs[i] = at;
        at += (MPI_Aint)counts[i];
    }
    *total = at;
    return failed;
}

/* ------------------------------------------------------------ bcast */

static PyObject *o_bcast(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"obj", "root", NULL};
    PyObject *obj = Py_None, *err = NULL, *res = NULL;
    int root = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Oi:bcast", kw, &obj, &root))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 1, "bcast");
    if (!cs)
        return NULL;
    pympi_op op = {0};
    int64_t *len = (int64_t *)op_bytes(&op, sizeof(int64_t));
    PyObject *data = NULL;
    if (!len)
        goto done;
    *len = 0;
    if (cs->rank == root) {
        data = dumps_or_keep(obj, &err);
        *len = data ? (int64_t)PyBytes_GET_SIZE(data) : -1;
    }
    MPI_Request req;
    if (run(cs, MPI_Ibcast(len, 1, MPI_INT64_T, root, cs->comm, &req), &req, &op) < 0)
        goto done;
    if (*len < 0) {
        raise_failed("bcast", err, root);
        err = NULL;
        goto done;
    }
    MPI_Count n = (MPI_Count)*len;
    char *buf = data ? PyBytes_AS_STRING(data) : op_bytes(&op, (Py_ssize_t)n);
    if (!buf || (data && pympi_op_keep(&op, data) < 0))
        goto done;
    if (run(cs, MPI_Ibcast_c(buf, n, MPI_BYTE, root, cs->comm, &req), &req, &op) < 0)
        goto done;
    res = pympi_loads(buf, (Py_ssize_t)n);
done:
    Py_XDECREF(err);
    Py_XDECREF(data);
    pympi_op_clear(&op);
    return res;
}

/* ------------------------------------------------------------ gather family */

typedef enum { O_GATHER, O_ALLGATHER, O_REDUCE, O_ALLREDUCE, O_SCAN, O_EXSCAN } ogather_kind;

/* Gathers every rank's pickled obj to root (or to all): a list on the
 * receiving ranks, Py_None elsewhere (new references); NULL + exception. */
static PyObject *gather_objects(lmpi_commstate *cs, PyObject *obj, int root, int all,
                                const char *what)
{
    int p = cs->size, receives = all || cs->rank == root;
    PyObject *err = NULL, *res = NULL;
    pympi_op op = {0};
    PyObject *data = dumps_or_keep(obj, &err);
    /* lens[p] counts[p] displs[p], and this rank's length last */
    char *meta = op_bytes(&op, (Py_ssize_t)(sizeof(int64_t) * (size_t)(p + 1) +
                                            (sizeof(MPI_Count) + sizeof(MPI_Aint)) * (size_t)p));
    if (!meta || (data && pympi_op_keep(&op, data) < 0))
        goto done;
    int64_t *lens = (int64_t *)meta, *mine = lens + p;
    MPI_Count *counts = (MPI_Count *)(lens + p + 1);
    MPI_Aint *displs = (MPI_Aint *)(counts + p);
    *mine = data ? (int64_t)PyBytes_GET_SIZE(data) : -1;
    MPI_Request req;
    /* Everyone learns every length (also of a failed rank), so that every
     * rank takes the same branch below. */
    if (run(cs, MPI_Iallgather(mine, 1, MPI_INT64_T, lens, 1, MPI_INT64_T, cs->comm, &req), &req,
            &op) < 0)
        goto done;
    MPI_Aint total = 0;
    int failed = layout(lens, p, counts, displs, &total);
    if (failed >= 0) {
        raise_failed(what, err, failed);
        err = NULL;
        goto done;
    }
    char *rbuf = receives ? op_bytes(&op, (Py_ssize_t)total) : NULL;
    if (receives && !rbuf)
        goto done;
    const char *sbuf = PyBytes_AS_STRING(data);
    MPI_Count scount = (MPI_Count)*mine;
    int rc = all ? MPI_Iallgatherv_c(sbuf, scount, MPI_BYTE, rbuf, counts, displs, MPI_BYTE,
                                     cs->comm, &req)
                 : MPI_Igatherv_c(sbuf, scount, MPI_BYTE, rbuf, counts, displs, MPI_BYTE, root,
                                  cs->comm, &req);
    if (run(cs, rc, &req, &op) < 0)
        goto done;
    res = receives ? unpickle_all(rbuf, counts, displs, p) : Py_NewRef(Py_None);
done:
    Py_XDECREF(err);
    Py_XDECREF(data);
    pympi_op_clear(&op);
    return res;
}

/* Folds the first n items of list in rank order with op (NULL: SUM); a
 * new reference (None when n is 0). */
static PyObject *fold(PyObject *list, Py_ssize_t n, PyObject *opobj)
{
    if (n == 0)
        return Py_NewRef(Py_None);
    PyObject *acc = Py_NewRef(PyList_GET_ITEM(list, 0));
    for (Py_ssize_t i = 1; acc && i < n; i++) {
        PyObject *next = pympi_op_apply(opobj, acc, PyList_GET_ITEM(list, i));
        Py_DECREF(acc);
        acc = next;
    }
    return acc;
}

static PyObject *ogather_common(PyObject *self, PyObject *args, PyObject *kwds, ogather_kind kind,
                                const char *what)
{
    static char *kw_gather[] = {"sendobj", "root", NULL};
    static char *kw_allgather[] = {"sendobj", NULL};
    static char *kw_reduce[] = {"sendobj", "op", "root", NULL};
    static char *kw_allreduce[] = {"sendobj", "op", NULL}; /* and scan, exscan */
    PyObject *obj, *opobj = NULL;
    int root = 0, ok;
    switch (kind) {
    case O_GATHER:
        ok = PyArg_ParseTupleAndKeywords(args, kwds, "O|i", kw_gather, &obj, &root);
        break;
    case O_ALLGATHER: ok = PyArg_ParseTupleAndKeywords(args, kwds, "O", kw_allgather, &obj); break;
    case O_REDUCE:
        ok = PyArg_ParseTupleAndKeywords(args, kwds, "O|Oi", kw_reduce, &obj, &opobj, &root);
        break;
    default: ok = PyArg_ParseTupleAndKeywords(args, kwds, "O|O", kw_allreduce, &obj, &opobj); break;
    }
    if (!ok)
        return NULL;
    if (opobj && !PyObject_TypeCheck(opobj, &pympi_op_type) && !PyCallable_Check(opobj))
        return PyErr_Format(PyExc_TypeError, "%s: op must be an MPI.Op or a callable, not '%s'",
                            what, Py_TYPE(opobj)->tp_name);
    lmpi_commstate *cs = pympi_begin(self, 1, what);
    if (!cs)
        return NULL;
    if ((kind == O_GATHER || kind == O_REDUCE) && (root < 0 || root >= cs->size))
        return pympi_raise_msg(MPI_ERR_ROOT, "%s: invalid root %d (communicator size %d)", what,
                               root, cs->size);
    int all = kind != O_GATHER && kind != O_REDUCE;
    PyObject *list = gather_objects(cs, obj, root, all, what);
    if (!list || list == Py_None || kind == O_GATHER || kind == O_ALLGATHER)
        return list;
    /* reductions fold every rank's object, scan those up to this rank's,
     * exscan those before it (None on rank 0), as in mpi4py */
    Py_ssize_t n = kind == O_SCAN     ? cs->rank + 1
                   : kind == O_EXSCAN ? cs->rank
                                      : PyList_GET_SIZE(list);
    PyObject *sum = fold(list, n, opobj);
    Py_DECREF(list);
    return sum;
}

static PyObject *o_gather(PyObject *self, PyObject *args, PyObject *kwds)
{
    return ogather_common(self, args, kwds, O_GATHER, "gather");
}

static PyObject *o_allgather(PyObject *self, PyObject *args, PyObject *kwds)
{
    return ogather_common(self, args, kwds, O_ALLGATHER, "allgather");
}

static PyObject *o_reduce(PyObject *self, PyObject *args, PyObject *kwds)
{
    return ogather_common(self, args, kwds, O_REDUCE, "reduce");
}

static PyObject *o_allreduce(PyObject *self, PyObject *args, PyObject *kwds)
{
    return ogather_common(self, args, kwds, O_ALLREDUCE, "allreduce");
}

static PyObject *o_scan(PyObject *self, PyObject *args, PyObject *kwds)
{
    return ogather_common(self, args, kwds, O_SCAN, "scan");
}

static PyObject *o_exscan(PyObject *self, PyObject *args, PyObject *kwds)
{
    return ogather_common(self, args, kwds, O_EXSCAN, "exscan");
}

/* ------------------------------------------------------------ scatter, alltoall */

/* Pickles the p items of seq (p exactly) into one bytes object with their
 * lengths in lens[0..p).  NULL with the error kept in *err. */
static PyObject *dumps_items(PyObject *seq, int p, int64_t *lens, PyObject **err, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, "");
    if (!fast || PySequence_Fast_GET_SIZE(fast) != p) {
        if (fast || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s: expecting a sequence of %d items", what, p);
        }
        Py_XDECREF(fast);
        *err = err_take();
        return NULL;
    }
    PyObject *parts = PyList_New(p);
    for (int i = 0; parts && i < p; i++) {
        PyObject *b = pympi_dumps(PySequence_Fast_GET_ITEM(fast, i));
        if (!b) {
            Py_CLEAR(parts);
            break;
        }
        lens[i] = (int64_t)PyBytes_GET_SIZE(b);
        PyList_SET_ITEM(parts, i, b);
    }
    Py_DECREF(fast);
    PyObject *joined = NULL;
    if (parts) {
        PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
        joined = empty ? PyObject_CallMethod(empty, "join", "O", parts) : NULL;
        Py_XDECREF(empty);
        Py_DECREF(parts);
    }
    if (!joined)
        *err = err_take();
    return joined;
}

static PyObject *o_scatter(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"sendobj", "root", NULL};
    PyObject *obj = Py_None, *err = NULL, *res = NULL, *data = NULL;
    int root = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Oi:scatter", kw, &obj, &root))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 1, "scatter");
    if (!cs)
        return NULL;
    if (root < 0 || root >= cs->size)
        return pympi_raise_msg(MPI_ERR_ROOT, "scatter: invalid root %d (communicator size %d)",
                               root, cs->size);
    int p = cs->size, is_root = cs->rank == root;
    pympi_op op = {0};
    char *meta = op_bytes(&op, (Py_ssize_t)(sizeof(int64_t) * (size_t)(p + 1) +
                                            (sizeof(MPI_Count) + sizeof(MPI_Aint)) * (size_t)p));
    if (!meta)
        goto done;
    int64_t *lens = (int64_t *)meta, *mine = lens + p;
    MPI_Count *counts = (MPI_Count *)(lens + p + 1);
    MPI_Aint *displs = (MPI_Aint *)(counts + p);
    if (is_root) {
        data = dumps_items(obj, p, lens, &err, "scatter");
        if (!data)
            for (int i = 0; i < p; i++)
                lens[i] = -1;
        if (data && pympi_op_keep(&op, data) < 0)
            goto done;
    }
    MPI_Request req;
    if (run(cs, MPI_Iscatter(lens, 1, MPI_INT64_T, mine, 1, MPI_INT64_T, root, cs->comm, &req),
            &req, &op) < 0)
        goto done;
    if (*mine < 0 || (is_root && !data)) { /* the root told everyone */
        raise_failed("scatter", err, root);
        err = NULL;
        goto done;
    }
    MPI_Aint total = 0;
    if (is_root)
        layout(lens, p, counts, displs, &total);
    char *rbuf = op_bytes(&op, (Py_ssize_t)*mine);
    if (!rbuf)
        goto done;
    if (run(cs,
            MPI_Iscatterv_c(is_root ? PyBytes_AS_STRING(data) : NULL, counts, displs, MPI_BYTE,
                            rbuf, (MPI_Count)*mine, MPI_BYTE, root, cs->comm, &req),
            &req, &op) < 0)
        goto done;
    res = pympi_loads(rbuf, (Py_ssize_t)*mine);
done:
    Py_XDECREF(err);
    Py_XDECREF(data);
    pympi_op_clear(&op);
    return res;
}

static PyObject *o_alltoall(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"sendobj", NULL};
    PyObject *obj, *err = NULL, *res = NULL, *data = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:alltoall", kw, &obj))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 1, "alltoall");
    if (!cs)
        return NULL;
    int p = cs->size;
    pympi_op op = {0};
    size_t per = sizeof(int64_t) + sizeof(MPI_Count) + sizeof(MPI_Aint);
    char *meta = op_bytes(&op, (Py_ssize_t)(2 * per * (size_t)p));
    if (!meta)
        goto done;
    int64_t *slens = (int64_t *)meta, *rlens = slens + p;
    MPI_Count *scounts = (MPI_Count *)(rlens + p), *rcounts = scounts + p;
    MPI_Aint *sdispls = (MPI_Aint *)(rcounts + p), *rdispls = sdispls + p;
    data = dumps_items(obj, p, slens, &err, "alltoall");
    if (!data)
        for (int i = 0; i < p; i++)
            slens[i] = -1;
    if (data && pympi_op_keep(&op, data) < 0)
        goto done;
    MPI_Request req;
    if (run(cs, MPI_Ialltoall(slens, 1, MPI_INT64_T, rlens, 1, MPI_INT64_T, cs->comm, &req), &req,
            &op) < 0)
        goto done;
    MPI_Aint stotal = 0, rtotal = 0;
    layout(slens, p, scounts, sdispls, &stotal);
    int failed = layout(rlens, p, rcounts, rdispls, &rtotal);
    if (!data || failed >= 0) {
        /* A failing rank told everyone; it skips the second round too. */
        raise_failed("alltoall", err, failed >= 0 ? failed : cs->rank);
        err = NULL;
        goto done;
    }
    char *rbuf = op_bytes(&op, (Py_ssize_t)rtotal);
    if (!rbuf)
        goto done;
    if (run(cs,
            MPI_Ialltoallv_c(PyBytes_AS_STRING(data), scounts, sdispls, MPI_BYTE, rbuf, rcounts,
                             rdispls, MPI_BYTE, cs->comm, &req),
            &req, &op) < 0)
        goto done;
    res = unpickle_all(rbuf, rcounts, rdispls, p);
done:
    Py_XDECREF(err);
    Py_XDECREF(data);
    pympi_op_clear(&op);
    return res;
}

PyMethodDef pympi_obj_methods[] = {
    {"bcast", PYMPI_KW(o_bcast), METH_VARARGS | METH_KEYWORDS,
     "bcast(obj, root=0): root's object on every rank (pickled)."},
    {"gather", PYMPI_KW(o_gather), METH_VARARGS | METH_KEYWORDS,
     "gather(sendobj, root=0): list of every rank's object on root, None elsewhere."},
    {"allgather", PYMPI_KW(o_allgather), METH_VARARGS | METH_KEYWORDS,
     "allgather(sendobj): list of every rank's object."},
    {"scatter", PYMPI_KW(o_scatter), METH_VARARGS | METH_KEYWORDS,
     "scatter(sendobj, root=0): item [rank] of root's sequence."},
    {"alltoall", PYMPI_KW(o_alltoall), METH_VARARGS | METH_KEYWORDS,
     "alltoall(sendobj): item [i] of rank i's sequence, for every i."},
    {"reduce", PYMPI_KW(o_reduce), METH_VARARGS | METH_KEYWORDS,
     "reduce(sendobj, op=SUM, root=0): objects folded with op on root, None elsewhere."},
    {"allreduce", PYMPI_KW(o_allreduce), METH_VARARGS | METH_KEYWORDS,
     "allreduce(sendobj, op=SUM): objects folded with op, on every rank."},
    {"scan", PYMPI_KW(o_scan), METH_VARARGS | METH_KEYWORDS,
     "scan(sendobj, op=SUM): the objects of ranks 0..rank folded with op."},
    {"exscan", PYMPI_KW(o_exscan), METH_VARARGS | METH_KEYWORDS,
     "exscan(sendobj, op=SUM): the objects of ranks 0..rank-1 folded (None on rank 0)."},
    {NULL, NULL, 0, NULL},
};
