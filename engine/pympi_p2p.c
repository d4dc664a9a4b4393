/* pympi_p2p.c — point-to-point for MPI.Comm (Send/Recv/Sendrecv/Isend/
 * Irecv/Probe/Iprobe on buffers; send/recv/sendrecv/isend/irecv/probe/
 * iprobe on pickled objects), MPI.Request and MPI.Status.
 *
 * Blocking receives wait in a matched probe (MPI_Improbe, polled the
 * yielding way) and only then receive (MPI_Imrecv): an interrupted receive
 * has not touched MPI, and an object arrives whole whatever its size.  An
 * irecv of an object has no buffer to post: it is a "lazy" receive, kept
 * in a list in the order they were made, and every wait of the module (and
 * every test) first tries to match the lazy receives in that order
 * (pympi_irecv_service).  So while this rank is inside any MPI call of the
 * module its irecvs take their messages as a posted receive would, in
 * posting order, before a later recv can; `req = irecv(); send(big);
 * req.wait()` on every rank does not deadlock.  Irecv of a buffer is posted
 * at once (MPI_Irecv).
 *
 * The lazy list is guarded by lazy_lock (waits run without the GIL);
 * everything else here runs with the GIL, or (request_step) on the thread
 * waiting for that request.
 *
 * A Request keeps every buffer of its operation until it completes; a
 * Request dropped while MPI still owns its operation is parked (pympi.c).
 */
#include "pympi_impl.h"

#include <pthread.h>
#include <string.h>

#include "lmpi.h"

/* ------------------------------------------------------------ Status */

static PyObject *status_tp_new(PyTypeObject *t, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Status", kw))
        return NULL;
    pympi_status *s = (pympi_status *)t->tp_alloc(t, 0);
    if (s) {
        s->status.MPI_SOURCE = MPI_ANY_SOURCE;
        s->status.MPI_TAG = MPI_ANY_TAG;
        s->status.MPI_ERROR = MPI_SUCCESS;
        MPI_Status_set_elements_x(&s->status, MPI_BYTE, 0);
    }
    return (PyObject *)s;
}

static PyObject *status_source(PyObject *self, void *c)
{
    return PyLong_FromLong(((pympi_status *)self)->status.MPI_SOURCE);
}
static PyObject *status_tag(PyObject *self, void *c)
{
    return PyLong_FromLong(((pympi_status *)self)->status.MPI_TAG);
}
static PyObject *status_error(PyObject *self, void *c)
{
    return PyLong_FromLong(((pympi_status *)self)->status.MPI_ERROR);
}

static PyObject *status_get_source(PyObject *self, PyObject *unused)
{
    return status_source(self, NULL);
}
static PyObject *status_get_tag(PyObject *self, PyObject *unused)
{
    return status_tag(self, NULL);
}
static PyObject *status_get_error(PyObject *self, PyObject *unused)
{
    return status_error(self, NULL);
}

static PyObject *status_count_of(PyObject *self, PyObject *args, PyObject *kwds, int elements)
{
    static char *kw[] = {"datatype", NULL};
    PyObject *dt = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, elements ? "O!:Get_elements" : "|O!:Get_count", kw,
                                     &pympi_datatype_type, &dt))
        return NULL;
    MPI_Datatype type = dt ? ((pympi_datatype *)dt)->type : MPI_BYTE;
    MPI_Count n = 0;
    if (type == MPI_DATATYPE_NULL)
        return pympi_raise_msg(MPI_ERR_TYPE, "invalid datatype (MPI.DATATYPE_NULL)");
    MPI_Status *st = &((pympi_status *)self)->status;
    if (pympi_check(elements ? MPI_Get_elements_c(st, type, &n) : MPI_Get_count_c(st, type, &n)) <
        0)
        return NULL;
    return PyLong_FromLongLong((long long)n);
}

static PyObject *status_get_count(PyObject *self, PyObject *args, PyObject *kwds)
{
    return status_count_of(self, args, kwds, 0);
}

static PyObject *status_get_elements(PyObject *self, PyObject *args, PyObject *kwds)
{
    return status_count_of(self, args, kwds, 1);
}

static PyObject *status_count(PyObject *self, void *c)
{
    PyObject *args = PyTuple_New(0);
    PyObject *r = args ? status_count_of(self, args, NULL, 0) : NULL;
    Py_XDECREF(args);
    return r;
}

static PyMethodDef status_methods[] = {
    {"Get_source", status_get_source, METH_NOARGS, "The sender's rank."},
    {"Get_tag", status_get_tag, METH_NOARGS, "The message's tag."},
    {"Get_error", status_get_error, METH_NOARGS, "The error code."},
    {"Get_count", PYMPI_KW(status_get_count), METH_VARARGS | METH_KEYWORDS,
     "Get_count(datatype=BYTE): entries received (UNDEFINED if not whole)."},
    {"Get_elements", PYMPI_KW(status_get_elements), METH_VARARGS | METH_KEYWORDS,
     "Get_elements(datatype): basic elements received."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef status_getset[] = {
    {"source", status_source, NULL, "Get_source()", NULL},
    {"tag", status_tag, NULL, "Get_tag()", NULL},
    {"error", status_error, NULL, "Get_error()", NULL},
    {"count", status_count, NULL, "Get_count()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject pympi_status_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpi4py.MPI.Status",
    .tp_basicsize = sizeof(pympi_status),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Status of a receive: Get_source(), Get_tag(), Get_count(datatype).",
    .tp_new = status_tp_new,
    .tp_methods = status_methods,
    .tp_getset = status_getset,
    .tp_getattro = pympi_getattro,
};

int pympi_status_fill(PyObject *status_obj, const MPI_Status *st)
{
    if (!status_obj || status_obj == Py_None)
        return 0;
    if (!PyObject_TypeCheck(status_obj, &pympi_status_type)) {
        PyErr_Format(PyExc_TypeError, "status must be an MPI.Status or None, not '%s'",
                     Py_TYPE(status_obj)->tp_name);
        return -1;
    }
    /* MPI leaves MPI_ERROR unset for single completions; as in mpi4py it
     * reads SUCCESS after a call that returned normally. */
    ((pympi_status *)status_obj)->status = *st;
    ((pympi_status *)status_obj)->status.MPI_ERROR = MPI_SUCCESS;
    return 0;
}

static int status_arg_ok(PyObject *status_obj)
{
    if (!status_obj || status_obj == Py_None || PyObject_TypeCheck(status_obj, &pympi_status_type))
        return 1;
    PyErr_Format(PyExc_TypeError, "status must be an MPI.Status or None, not '%s'",
                 Py_TYPE(status_obj)->tp_name);
    return 0;
}

/* ------------------------------------------------------------ Request */

typedef enum { REQ_NULL, REQ_PLAIN, REQ_OBJ_RECV } req_kind;

typedef struct pympi_request {
    PyObject_HEAD MPI_Request req;
    req_kind kind;
    lmpi_commstate *cs; /* a reference while the request is active */
    pympi_op op;        /* what MPI reads or writes (op.raw: an irecv's bytes) */
    int matched;        /* REQ_OBJ_RECV: the message is matched, Imrecv started */
    int source, tag;    /* REQ_OBJ_RECV: what to match */
    MPI_Count nbytes;   /* REQ_OBJ_RECV: the matched message's size */
    int done;           /* MPI completed it (or it failed) */
    int failed;         /* REQ_OBJ_RECV: an MPI error while matching */
    int counted;        /* counted by lmpi_outstanding_add */
    MPI_Status status;
    PyObject *result; /* REQ_OBJ_RECV: the object, until wait()/test() returns it */
} pympi_request;

/* ------------------------------------------------------------ lazy irecvs */

static pthread_mutex_t lazy_lock = PTHREAD_MUTEX_INITIALIZER;
static pympi_request **lazy; /* unmatched object irecvs, oldest first */
static size_t lazy_count, lazy_cap;
static atomic_size_t lazy_size; /* lazy_count, read without the lock */

static int lazy_add(pympi_request *r)
{
    pthread_mutex_lock(&lazy_lock);
    int rc = 0;
    if (lazy_count == lazy_cap) {
        size_t cap = lazy_cap ? lazy_cap * 2 : 16;
        pympi_request **p = PyMem_RawRealloc(lazy, cap * sizeof *p);
        if (p) {
            lazy = p;
            lazy_cap = cap;
        } else {
            rc = -1;
        }
    }
    if (rc == 0) {
        lazy[lazy_count++] = r;
        atomic_store(&lazy_size, lazy_count);
    }
    pthread_mutex_unlock(&lazy_lock);
    return rc;
}

/* Removes lazy[i], keeping the order (lock held). */
static void lazy_remove_at(size_t i)
{
    memmove(&lazy[i], &lazy[i + 1], (lazy_count - i - 1) * sizeof *lazy);
    lazy_count--;
    atomic_store(&lazy_size, lazy_count);
}

static void lazy_remove(pympi_request *r)
{
    pthread_mutex_lock(&lazy_lock);
    for (size_t i = 0; i < lazy_count; i++)
        if (lazy[i] == r) {
            lazy_remove_at(i);
            break;
        }
    pthread_mutex_unlock(&lazy_lock);
}

/* Tries to match r's message and start its receive (lock held). */
static int lazy_match(pympi_request *r)
{
    MPI_Message msg;
    MPI_Status st;
    int flag = 0;
    int rc = MPI_Improbe(r->source, r->tag, r->cs->comm, &flag, &msg, &st);
    if (rc != MPI_SUCCESS || !flag)
        return rc;
    MPI_Count n = 0;
    MPI_Get_count_c(&st, MPI_BYTE, &n);
    void *raw = PyMem_RawMalloc(n > 0 ? (size_t)n : 1);
    r->matched = 1;
    if (!raw) {
        /* The matched message must still be received: it is dropped. */
        char one;
        MPI_Mrecv_c(&one, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        r->failed = MPI_ERR_NO_MEM;
        return MPI_SUCCESS;
    }
    r->op.raw = raw;
    r->nbytes = n;
    rc = MPI_Imrecv_c(raw, n, MPI_BYTE, &msg, &r->req);
    if (rc != MPI_SUCCESS)
        r->failed = rc;
    return MPI_SUCCESS;
}

/* Whether r's message is matched: another thread's wait may have matched
 * it (and written r->req) under the lock. */
static int lazy_matched(pympi_request *r)
{
    pthread_mutex_lock(&lazy_lock);
    int matched = r->matched;
    pthread_mutex_unlock(&lazy_lock);
    return matched;
}

void pympi_irecv_service(void)
{
    if (atomic_load(&lazy_size) == 0)
        return;
    pthread_mutex_lock(&lazy_lock);
    for (size_t i = 0; i < lazy_count;) {
        pympi_request *r = lazy[i];
        int rc = lazy_match(r);
        if (rc != MPI_SUCCESS && !r->failed) {
            r->matched = 1;
            r->failed = rc;
        }
        if (r->matched)
            lazy_remove_at(i);
        else
            i++;
    }
    pthread_mutex_unlock(&lazy_lock);
}

static pympi_request *request_new(lmpi_commstate *cs, req_kind kind)
{
    pympi_request *r = PyObject_New(pympi_request, &pympi_request_type);
    if (!r)
        return NULL;
    r->req = MPI_REQUEST_NULL;
    r->kind = kind;
    r->cs = cs;
    if (cs)
        cs->refs++;
    r->op = (pympi_op){0};
    r->matched = 0;
    r->source = MPI_ANY_SOURCE;
    r->tag = MPI_ANY_TAG;
    r->nbytes = 0;
    r->done = kind == REQ_NULL;
    r->counted = 0;
    r->failed = 0;
    r->result = NULL;
    r->status.MPI_SOURCE = MPI_ANY_SOURCE;
    r->status.MPI_TAG = MPI_ANY_TAG;
    r->status.MPI_ERROR = MPI_SUCCESS;
    return r;
}

/* An active MPI request now belongs to r: it keeps the rank progressing. */
static void request_started(pympi_request *r)
{
    r->counted = 1;
    lmpi_outstanding_add(1);
}

static PyObject *request_tp_new(PyTypeObject *t, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Request", kw))
        return NULL;
    return (PyObject *)request_new(NULL, REQ_NULL);
}

static void request_dealloc(PyObject *self)
{
    pympi_request *r = (pympi_request *)self;
    if (r->kind == REQ_OBJ_RECV && !r->done)
        lazy_remove(r);
    if (!r->done && r->req != MPI_REQUEST_NULL && r->cs)
        pympi_park(r->cs, r->req, &r->op, 0);
    if (r->counted)
        lmpi_outstanding_add(-1);
    pympi_op_clear(&r->op);
    Py_CLEAR(r->result);
    lmpi_commstate_release(r->cs);
    PyObject_Free(self);
}

/* One step of a wait, without the GIL: lets the lazy irecvs (this one
 * included) match their messages, then tests. */
static int request_step(void *arg, int *done)
{
    pympi_request *r = arg;
    *done = r->done;
    if (r->done)
        return MPI_SUCCESS;
    pympi_irecv_service();
    if (r->kind == REQ_OBJ_RECV && !lazy_matched(r))
        return MPI_SUCCESS;
    if (r->failed) {
        r->done = 1;
        return r->failed;
    }
    int rc = MPI_Test(&r->req, done, &r->status);
    if (rc != MPI_SUCCESS || *done)
        r->done = 1;
    return rc;
}

/* After request_step reported completion or an error (GIL held): the
 * result of an object irecv, buffers released.  0, or -1 + exception. */
static int request_finish(pympi_request *r, int rc)
{
    if (r->counted) {
        lmpi_outstanding_add(-1);
        r->counted = 0;
    }
    if (rc == MPI_SUCCESS && r->kind == REQ_OBJ_RECV && !r->result) {
        if (r->nbytes == 0) /* from MPI.PROC_NULL */
            r->result = Py_NewRef(Py_None);
        else
            r->result = pympi_loads(r->op.raw, (Py_ssize_t)r->nbytes);
        if (!r->result)
            rc = -1;
    }
    pympi_op_clear(&r->op);
    lmpi_commstate_release(r->cs);
    r->cs = NULL;
    if (rc > 0)
        pympi_raise(rc);
    return rc == MPI_SUCCESS ? 0 : -1;
}

/* Waits for r (GIL released): 0 done, -1 + exception (KeyboardInterrupt
 * leaves r active). */
static int request_wait(pympi_request *r)
{
    if (r->done && !r->cs)
        return 0;
    pympi_reap();
    int rc = pympi_poll(request_step, r);
    if (rc < 0) {
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        return -1;
    }
    return request_finish(r, rc);
}

/* Tests r once (GIL held): 1 done, 0 not yet, -1 + exception. */
static int request_test(pympi_request *r)
{
    if (r->done && !r->cs)
        return 1;
    int done = 0;
    int rc = request_step(r, &done);
    if (rc == MPI_SUCCESS && !done)
        return 0;
    return request_finish(r, rc) < 0 ? -1 : 1;
}

/* The object of a completed request, handed out once (then None). */
static PyObject *request_take(pympi_request *r)
{
    PyObject *v = r->result ? r->result : Py_NewRef(Py_None);
    r->result = NULL;
    return v;
}

/* Wait and wait: parses (status=None) for the method fmt names, waits for
 * the request and fills status; NULL with an exception. */
static pympi_request *wait_common(PyObject *self, PyObject *args, PyObject *kwds, const char *fmt)
{
    static char *kw[] = {"status", NULL};
    PyObject *st = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kw, &st) || !status_arg_ok(st))
        return NULL;
    pympi_request *r = (pympi_request *)self;
    if (request_wait(r) < 0 || pympi_status_fill(st, &r->status) < 0)
        return NULL;
    return r;
}

/* Test and test: as wait_common, testing once; 1 done (status filled), 0
 * not yet, -1 with an exception. */
static int test_common(PyObject *self, PyObject *args, PyObject *kwds, const char *fmt)
{
    static char *kw[] = {"status", NULL};
    PyObject *st = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kw, &st) || !status_arg_ok(st))
        return -1;
    pympi_request *r = (pympi_request *)self;
    int done = request_test(r);
    if (done < 0 || (done && pympi_status_fill(st, &r->status) < 0))
        return -1;
    return done;
}

static PyObject *req_Wait(PyObject *self, PyObject *args, PyObject *kwds)
{
    return wait_common(self, args, kwds, "|O:Wait") ? Py_NewRef(Py_True) : NULL;
}

static PyObject *req_wait(PyObject *self, PyObject *args, PyObject *kwds)
{
    pympi_request *r = wait_common(self, args, kwds, "|O:wait");
    return r ? request_take(r) : NULL;
}

static PyObject *req_Test(PyObject *self, PyObject *args, PyObject *kwds)
{
    int done = test_common(self, args, kwds, "|O:Test");
    return done < 0 ? NULL : PyBool_FromLong(done);
}

static PyObject *req_test(PyObject *self, PyObject *args, PyObject *kwds)
{
    int done = test_common(self, args, kwds, "|O:test");
    if (done < 0)
        return NULL;
    if (!done)
        return Py_BuildValue("(OO)", Py_False, Py_None);
    PyObject *v = request_take((pympi_request *)self);
    PyObject *t = Py_BuildValue("(OO)", Py_True, v);
    Py_DECREF(v);
    return t;
}

/* The requests of a list argument: a new list of Request objects. */
static PyObject *request_list(PyObject *requests)
{
    PyObject *list = PySequence_List(requests);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
        if (!PyObject_TypeCheck(PyList_GET_ITEM(list, i), &pympi_request_type)) {
            PyErr_Format(PyExc_TypeError, "expecting a list of MPI.Request, item %zd is '%s'", i,
                         Py_TYPE(PyList_GET_ITEM(list, i))->tp_name);
            Py_DECREF(list);
            return NULL;
        }
    return list;
}

/* statuses (a list or None): item i becomes request i's status. */
static int fill_statuses(PyObject *statuses, PyObject *list)
{
    if (!statuses || statuses == Py_None)
        return 0;
    if (!PyList_Check(statuses)) {
        PyErr_SetString(PyExc_TypeError, "statuses must be a list or None");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        const MPI_Status *st = &((pympi_request *)PyList_GET_ITEM(list, i))->status;
        if (i < PyList_GET_SIZE(statuses)) {
            if (pympi_status_fill(PyList_GET_ITEM(statuses, i), st) < 0)
                return -1;
            continue;
        }
        PyObject *s = PyObject_CallNoArgs((PyObject *)&pympi_status_type);
        if (!s)
            return -1;
        ((pympi_status *)s)->status = *st;
        int rc = PyList_Append(statuses, s);
        Py_DECREF(s);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Waitall / waitall (objects: a list of results). */
static PyObject *waitall_common(PyObject *args, PyObject *kwds, int objects)
{
    static char *kw[] = {"requests", "statuses", NULL};
    PyObject *requests, *statuses = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, objects ? "O|O:waitall" : "O|O:Waitall", kw,
                                     &requests, &statuses))
        return NULL;
    PyObject *list = request_list(requests);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
        if (request_wait((pympi_request *)PyList_GET_ITEM(list, i)) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    if (fill_statuses(statuses, list) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    if (!objects) {
        Py_DECREF(list);
        return Py_NewRef(Py_True);
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *v = request_take((pympi_request *)PyList_GET_ITEM(list, i));
        PyList_SetItem(list, i, v);
    }
    return list;
}

static PyObject *req_Waitall(PyObject *cls, PyObject *args, PyObject *kwds)
{
    return waitall_common(args, kwds, 0);
}

static PyObject *req_waitall(PyObject *cls, PyObject *args, PyObject *kwds)
{
    return waitall_common(args, kwds, 1);
}

/* Testall / testall: every request tested once; True when all are done. */
static PyObject *testall_common(PyObject *args, PyObject *kwds, int objects)
{
    static char *kw[] = {"requests", "statuses", NULL};
    PyObject *requests, *statuses = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, objects ? "O|O:testall" : "O|O:Testall", kw,
                                     &requests, &statuses))
        return NULL;
    PyObject *list = request_list(requests);
    if (!list)
        return NULL;
    int all = 1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        int done = request_test((pympi_request *)PyList_GET_ITEM(list, i));
        if (done < 0) {
            Py_DECREF(list);
            return NULL;
        }
        all &= done;
    }
    if (all && fill_statuses(statuses, list) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    if (!objects) {
        Py_DECREF(list);
        return PyBool_FromLong(all);
    }
    if (!all) {
        Py_DECREF(list);
        return Py_BuildValue("(OO)", Py_False, Py_None);
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
        PyList_SetItem(list, i, request_take((pympi_request *)PyList_GET_ITEM(list, i)));
    PyObject *t = Py_BuildValue("(OO)", Py_True, list);
    Py_DECREF(list);
    return t;
}

static PyObject *req_Testall(PyObject *cls, PyObject *args, PyObject *kwds)
{
    return testall_common(args, kwds, 0);
}

static PyObject *req_testall(PyObject *cls, PyObject *args, PyObject *kwds)
{
    return testall_common(args, kwds, 1);
}

typedef struct any_arg {
    pympi_request **reqs;
    Py_ssize_t n, index;
} any_arg;

static int any_step(void *arg, int *done)
{
    any_arg *a = arg;
    for (Py_ssize_t i = 0; i < a->n; i++) {
        int rc = request_step(a->reqs[i], done);
        if (rc != MPI_SUCCESS || *done) {
            a->index = i;
            return rc;
        }
    }
    return MPI_SUCCESS;
}

/* Waitany(requests, status=None): index of a completed request (UNDEFINED
 * when none is active). */
static PyObject *req_Waitany(PyObject *cls, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"requests", "status", NULL};
    PyObject *requests, *st = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:Waitany", kw, &requests, &st) ||
        !status_arg_ok(st))
        return NULL;
    PyObject *list = request_list(requests);
    if (!list)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list), active = 0;
    pympi_request **reqs = PyMem_Malloc(sizeof *reqs * (size_t)(n ? n : 1));
    Py_ssize_t *index = PyMem_Malloc(sizeof *index * (size_t)(n ? n : 1));
    PyObject *res = NULL;
    if (!reqs || !index) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        pympi_request *r = (pympi_request *)PyList_GET_ITEM(list, i);
        if (r->cs) { /* active: not finished, not REQUEST_NULL */
            index[active] = i;
            reqs[active++] = r;
        }
    }
    if (active == 0) {
        res = PyLong_FromLong(MPI_UNDEFINED);
        goto done;
    }
    any_arg a = {reqs, active, -1};
    int rc = pympi_poll(any_step, &a);
    if (rc < 0) {
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        goto done;
    }
    if (request_finish(reqs[a.index], rc) < 0 || pympi_status_fill(st, &reqs[a.index]->status) < 0)
        goto done;
    res = PyLong_FromSsize_t(index[a.index]);
done:
    PyMem_Free(reqs);
    PyMem_Free(index);
    Py_DECREF(list);
    return res;
}

static int request_bool(PyObject *self)
{
    return ((pympi_request *)self)->kind != REQ_NULL;
}

static PyMethodDef request_methods[] = {
    {"Wait", PYMPI_KW(req_Wait), METH_VARARGS | METH_KEYWORDS,
     "Wait(status=None): True when done."},
    {"Test", PYMPI_KW(req_Test), METH_VARARGS | METH_KEYWORDS, "Test(status=None): done?"},
    {"wait", PYMPI_KW(req_wait), METH_VARARGS | METH_KEYWORDS,
     "wait(status=None): the received object (irecv) or None."},
    {"test", PYMPI_KW(req_test), METH_VARARGS | METH_KEYWORDS,
     "test(status=None): (done, object or None)."},
    {"Waitall", PYMPI_KW(req_Waitall), METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Waitall(requests, statuses=None)."},
    {"waitall", PYMPI_KW(req_waitall), METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "waitall(requests, statuses=None): list of received objects."},
    {"Testall", PYMPI_KW(req_Testall), METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Testall(requests, statuses=None): all done?"},
    {"testall", PYMPI_KW(req_testall), METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "testall(requests, statuses=None): (all done, list of objects or None)."},
    {"Waitany", PYMPI_KW(req_Waitany), METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Waitany(requests, status=None): index of a completed request."},
    {NULL, NULL, 0, NULL},
};

static PyNumberMethods request_number = {.nb_bool = request_bool};

PyTypeObject pympi_request_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpi4py.MPI.Request",
    .tp_basicsize = sizeof(pympi_request),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A nonblocking operation: Wait(), Test(), wait(), test(), Request.Waitall(...).",
    .tp_new = request_tp_new,
    .tp_dealloc = request_dealloc,
    .tp_methods = request_methods,
    .tp_getattro = pympi_getattro,
    .tp_as_number = &request_number,
};

int pympi_p2p_init(PyObject *m)
{
    /* Lazy irecvs of an earlier interpreter (leaked at its end) stop
     * matching messages. */
    pthread_mutex_lock(&lazy_lock);
    lazy_count = 0;
    atomic_store(&lazy_size, 0);
    pthread_mutex_unlock(&lazy_lock);
    if (PyType_Ready(&pympi_status_type) < 0 || PyType_Ready(&pympi_request_type) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Status", (PyObject *)&pympi_status_type) < 0 ||
        PyModule_AddObjectRef(m, "Request", (PyObject *)&pympi_request_type) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------ buffers */

/* The buffer message for a peer; as in mpi4py, none is read for
 * MPI.PROC_NULL (nothing moves). */
static int p2p_msg(PyObject *buf, int flags, int peer, pympi_op *op, pympi_msg *m)
{
    if (peer == MPI_PROC_NULL) {
        *m = (pympi_msg){.buf = NULL, .count = 0, .type = MPI_BYTE};
        return 0;
    }
    return pympi_msg_parse(buf, flags, 1, op, m);
}

static PyObject *p_send(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"buf", "dest", "tag", NULL};
    PyObject *buf;
    int dest, tag = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi|i:Send", kw, &buf, &dest, &tag))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, "Send");
    if (!cs)
        return NULL;
    pympi_op op = {0};
    pympi_msg m;
    MPI_Request req;
    if (p2p_msg(buf, 0, dest, &op, &m) < 0 ||
        pympi_check(MPI_Isend_c(m.buf, m.count, m.type, dest, tag, cs->comm, &req)) < 0 ||
        pympi_wait(cs, &req, NULL, &op, 0) < 0) {
        pympi_op_clear(&op);
        return NULL;
    }
    pympi_op_clear(&op);
    return Py_NewRef(Py_None);
}

/* Receives the message matching source/tag into m (probe first).  A
 * message larger than m is received whole into scratch memory and raises
 * MPI.Exception ERR_TRUNCATE (MPICH's own truncation error on a matched
 * message would go to MPI_COMM_WORLD's handler, which aborts). */
static int recv_into(lmpi_commstate *cs, const pympi_msg *m, pympi_op *op, int source, int tag,
                     MPI_Status *st)
{
    MPI_Message msg;
    if (pympi_probe(cs, source, tag, &msg, st) < 0)
        return -1;
    MPI_Count have = 0, size = 0, n = 0;
    MPI_Get_count_c(st, MPI_BYTE, &n);
    if (m->buf && MPI_Type_size_c(m->type, &size) == MPI_SUCCESS)
        have = m->count * size;
    if (n > have) {
        pympi_op scratch = {0};
        scratch.raw = PyMem_RawMalloc((size_t)n);
        MPI_Request req;
        int rc = scratch.raw ? MPI_Imrecv_c(scratch.raw, n, MPI_BYTE, &msg, &req) : MPI_ERR_NO_MEM;
        if (!scratch.raw) {
            char one;
            MPI_Mrecv_c(&one, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        }
        if (pympi_check(rc) == 0 && pympi_wait(cs, &req, NULL, &scratch, 0) == 0)
            pympi_raise_msg(MPI_ERR_TRUNCATE,
                            "Message truncated: %lld bytes arrived, the receive buffer holds %lld",
                            (long long)n, (long long)have);
        pympi_op_clear(&scratch);
        return -1;
    }
    MPI_Request req;
    if (pympi_check(MPI_Imrecv_c(m->buf, m->count, m->type, &msg, &req)) < 0)
        return -1;
    return pympi_wait(cs, &req, st, op, 0);
}

static PyObject *p_recv(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"buf", "source", "tag", "status", NULL};
    PyObject *buf, *st = NULL;
    int source = MPI_ANY_SOURCE, tag = MPI_ANY_TAG;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|iiO:Recv", kw, &buf, &source, &tag, &st) ||
        !status_arg_ok(st))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, "Recv");
    if (!cs)
        return NULL;
    pympi_op op = {0};
    pympi_msg m;
    MPI_Status status;
    int rc = p2p_msg(buf, PYMPI_MSG_WRITE, source, &op, &m);
    if (rc == 0)
        rc = recv_into(cs, &m, &op, source, tag, &status);
    pympi_op_clear(&op);
    if (rc < 0 || pympi_status_fill(st, &status) < 0)
        return NULL;
    return Py_NewRef(Py_None);
}

static PyObject *p_sendrecv(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"sendbuf", "dest",    "sendtag", "recvbuf",
                         "source",  "recvtag", "status",  NULL};
    PyObject *sendbuf, *recvbuf = Py_None, *st = NULL;
    int dest, sendtag = 0, source = MPI_ANY_SOURCE, recvtag = MPI_ANY_TAG;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi|iOiiO:Sendrecv", kw, &sendbuf, &dest, &sendtag,
                                     &recvbuf, &source, &recvtag, &st) ||
        !status_arg_ok(st))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, "Sendrecv");
    if (!cs)
        return NULL;
    pympi_op sop = {0}, rop = {0};
    pympi_msg s, r;
    MPI_Status status;
    MPI_Request sreq = MPI_REQUEST_NULL;
    int rc = -1;
    if (p2p_msg(sendbuf, 0, dest, &sop, &s) < 0 ||
        p2p_msg(recvbuf, PYMPI_MSG_WRITE, source, &rop, &r) < 0 ||
        pympi_check(MPI_Isend_c(s.buf, s.count, s.type, dest, sendtag, cs->comm, &sreq)) < 0)
        goto done;
    if (recv_into(cs, &r, &rop, source, recvtag, &status) < 0) {
        pympi_park(cs, sreq, &sop, 0); /* the send goes on; its buffer stays */
        goto done;
    }
    rc = pympi_wait(cs, &sreq, NULL, &sop, 0);
done:
    pympi_op_clear(&sop);
    pympi_op_clear(&rop);
    if (rc < 0 || pympi_status_fill(st, &status) < 0)
        return NULL;
    return Py_NewRef(Py_None);
}

/* Isend (buf, dest, tag=0) and Irecv (buf, source=ANY_SOURCE,
 * tag=ANY_TAG): a started Request, or NULL with an exception. */
static PyObject *start_plain(PyObject *self, PyObject *args, PyObject *kwds, int send)
{
    static char *kw_send[] = {"buf", "dest", "tag", NULL};
    static char *kw_recv[] = {"buf", "source", "tag", NULL};
    PyObject *buf;
    int peer = MPI_ANY_SOURCE, tag = send ? 0 : MPI_ANY_TAG;
    int ok =
        send ? PyArg_ParseTupleAndKeywords(args, kwds, "Oi|i:Isend", kw_send, &buf, &peer, &tag)
             : PyArg_ParseTupleAndKeywords(args, kwds, "O|ii:Irecv", kw_recv, &buf, &peer, &tag);
    if (!ok)
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, send ? "Isend" : "Irecv");
    if (!cs)
        return NULL;
    pympi_request *r = request_new(cs, REQ_PLAIN);
    pympi_msg m;
    if (!r)
        return NULL;
    if (p2p_msg(buf, send ? 0 : PYMPI_MSG_WRITE, peer, &r->op, &m) < 0 ||
        pympi_check(send ? MPI_Isend_c(m.buf, m.count, m.type, peer, tag, cs->comm, &r->req)
                         : MPI_Irecv_c(m.buf, m.count, m.type, peer, tag, cs->comm, &r->req)) < 0) {
        r->done = 1;
        Py_DECREF(r);
        return NULL;
    }
    request_started(r);
    return (PyObject *)r;
}

static PyObject *p_isend(PyObject *self, PyObject *args, PyObject *kwds)
{
    return start_plain(self, args, kwds, 1);
}

static PyObject *p_irecv(PyObject *self, PyObject *args, PyObject *kwds)
{
    return start_plain(self, args, kwds, 0);
}

typedef struct iprobe_arg {
    int source, tag;
    MPI_Comm comm;
    MPI_Status *status;
} iprobe_arg;

static int iprobe_step(void *arg, int *done)
{
    iprobe_arg *p = arg;
    pympi_irecv_service();
    return MPI_Iprobe(p->source, p->tag, p->comm, done, p->status);
}

/* Probe / probe (wait) and Iprobe / iprobe (once). */
static PyObject *probe_common(PyObject *self, PyObject *args, PyObject *kwds, int wait,
                              const char *what)
{
    static char *kw[] = {"source", "tag", "status", NULL};
    PyObject *st = NULL;
    int source = MPI_ANY_SOURCE, tag = MPI_ANY_TAG;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|iiO", kw, &source, &tag, &st) ||
        !status_arg_ok(st))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, what);
    if (!cs)
        return NULL;
    MPI_Status status;
    iprobe_arg p = {source, tag, cs->comm, &status};
    int flag = 0, rc;
    if (wait) {
        rc = pympi_poll(iprobe_step, &p);
        flag = rc == 0;
        if (rc < 0) {
            PyErr_SetNone(PyExc_KeyboardInterrupt);
            return NULL;
        }
    } else {
        rc = iprobe_step(&p, &flag);
    }
    if (pympi_check(rc) < 0 || (flag && pympi_status_fill(st, &status) < 0))
        return NULL;
    return PyBool_FromLong(flag);
}

static PyObject *p_probe(PyObject *self, PyObject *args, PyObject *kwds)
{
    return probe_common(self, args, kwds, 1, "Probe");
}

static PyObject *p_iprobe(PyObject *self, PyObject *args, PyObject *kwds)
{
    return probe_common(self, args, kwds, 0, "Iprobe");
}

/* ------------------------------------------------------------ objects */

static PyObject *o_send(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"obj", "dest", "tag", NULL};
    PyObject *obj;
    int dest, tag = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi|i:send", kw, &obj, &dest, &tag))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, "send");
    if (!cs)
        return NULL;
    PyObject *data = pympi_dumps(obj);
    if (!data)
        return NULL;
    pympi_op op = {0};
    MPI_Request req;
    int rc = pympi_op_keep(&op, data);
    if (rc == 0)
        rc = pympi_check(MPI_Isend_c(PyBytes_AS_STRING(data), (MPI_Count)PyBytes_GET_SIZE(data),
                                     MPI_BYTE, dest, tag, cs->comm, &req));
    if (rc == 0)
        rc = pympi_wait(cs, &req, NULL, &op, 0);
    Py_DECREF(data);
    pympi_op_clear(&op);
    if (rc < 0)
        return NULL;
    return Py_NewRef(Py_None);
}

/* Receives one pickled object (probe, then a receive of its exact size). */
static PyObject *recv_object(lmpi_commstate *cs, int source, int tag, MPI_Status *st)
{
    MPI_Message msg;
    if (pympi_probe(cs, source, tag, &msg, st) < 0)
        return NULL;
    MPI_Count n = 0;
    MPI_Get_count_c(st, MPI_BYTE, &n);
    pympi_op op = {0};
    op.raw = PyMem_RawMalloc(n > 0 ? (size_t)n : 1);
    if (!op.raw) {
        char one;
        MPI_Mrecv_c(&one, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        return PyErr_NoMemory();
    }
    MPI_Request req;
    PyObject *obj = NULL;
    if (pympi_check(MPI_Imrecv_c(op.raw, n, MPI_BYTE, &msg, &req)) == 0 &&
        pympi_wait(cs, &req, st, &op, 0) == 0)
        obj = n == 0 ? Py_NewRef(Py_None) : pympi_loads(op.raw, (Py_ssize_t)n);
    pympi_op_clear(&op);
    return obj;
}

static PyObject *o_recv(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"buf", "source", "tag", "status", NULL};
    PyObject *buf = Py_None, *st = NULL;
    int source = MPI_ANY_SOURCE, tag = MPI_ANY_TAG;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OiiO:recv", kw, &buf, &source, &tag, &st) ||
        !status_arg_ok(st))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, "recv");
    if (!cs)
        return NULL;
    MPI_Status status;
    PyObject *obj = recv_object(cs, source, tag, &status);
    if (obj && pympi_status_fill(st, &status) < 0)
        Py_CLEAR(obj);
    return obj;
}

static PyObject *o_sendrecv(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"sendobj", "dest",    "sendtag", "recvbuf",
                         "source",  "recvtag", "status",  NULL};
    PyObject *obj, *recvbuf = Py_None, *st = NULL;
    int dest, sendtag = 0, source = MPI_ANY_SOURCE, recvtag = MPI_ANY_TAG;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi|iOiiO:sendrecv", kw, &obj, &dest, &sendtag,
                                     &recvbuf, &source, &recvtag, &st) ||
        !status_arg_ok(st))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, "sendrecv");
    if (!cs)
        return NULL;
    PyObject *data = pympi_dumps(obj), *res = NULL;
    if (!data)
        return NULL;
    pympi_op sop = {0};
    MPI_Request sreq;
    MPI_Status status;
    if (pympi_op_keep(&sop, data) < 0 ||
        pympi_check(MPI_Isend_c(PyBytes_AS_STRING(data), (MPI_Count)PyBytes_GET_SIZE(data),
                                MPI_BYTE, dest, sendtag, cs->comm, &sreq)) < 0)
        goto done;
    res = recv_object(cs, source, recvtag, &status);
    if (!res) {
        pympi_park(cs, sreq, &sop, 0);
        goto done;
    }
    if (pympi_wait(cs, &sreq, NULL, &sop, 0) < 0 || pympi_status_fill(st, &status) < 0)
        Py_CLEAR(res);
done:
    Py_DECREF(data);
    pympi_op_clear(&sop);
    return res;
}

static PyObject *o_isend(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"obj", "dest", "tag", NULL};
    PyObject *obj;
    int dest, tag = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi|i:isend", kw, &obj, &dest, &tag))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, "isend");
    if (!cs)
        return NULL;
    PyObject *data = pympi_dumps(obj);
    if (!data)
        return NULL;
    pympi_request *r = request_new(cs, REQ_PLAIN);
    int rc = r ? pympi_op_keep(&r->op, data) : -1;
    if (rc == 0)
        rc = pympi_check(MPI_Isend_c(PyBytes_AS_STRING(data), (MPI_Count)PyBytes_GET_SIZE(data),
                                     MPI_BYTE, dest, tag, cs->comm, &r->req));
    Py_DECREF(data);
    if (rc < 0) {
        if (r) {
            r->done = 1;
            Py_DECREF(r);
        }
        return NULL;
    }
    request_started(r);
    return (PyObject *)r;
}

static PyObject *o_irecv(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"buf", "source", "tag", NULL};
    PyObject *buf = Py_None;
    int source = MPI_ANY_SOURCE, tag = MPI_ANY_TAG;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Oii:irecv", kw, &buf, &source, &tag))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 0, "irecv");
    if (!cs)
        return NULL;
    if (source != MPI_ANY_SOURCE && source != MPI_PROC_NULL && (source < 0 || source >= cs->size))
        return pympi_raise_msg(MPI_ERR_RANK, "irecv: invalid source rank %d (size %d)", source,
                               cs->size);
    pympi_request *r = request_new(cs, REQ_OBJ_RECV);
    if (!r)
        return NULL;
    r->source = source;
    r->tag = tag;
    if (lazy_add(r) < 0) {
        r->done = 1;
        Py_DECREF(r);
        return PyErr_NoMemory();
    }
    return (PyObject *)r;
}

PyMethodDef pympi_p2p_methods[] = {
    {"Send", PYMPI_KW(p_send), METH_VARARGS | METH_KEYWORDS, "Send(buf, dest, tag=0)."},
    {"Recv", PYMPI_KW(p_recv), METH_VARARGS | METH_KEYWORDS,
     "Recv(buf, source=ANY_SOURCE, tag=ANY_TAG, status=None)."},
    {"Sendrecv", PYMPI_KW(p_sendrecv), METH_VARARGS | METH_KEYWORDS,
     "Sendrecv(sendbuf, dest, sendtag=0, recvbuf=None, source=ANY_SOURCE, recvtag=ANY_TAG, "
     "status=None)."},
    {"Isend", PYMPI_KW(p_isend), METH_VARARGS | METH_KEYWORDS,
     "Isend(buf, dest, tag=0) -> Request."},
    {"Irecv", PYMPI_KW(p_irecv), METH_VARARGS | METH_KEYWORDS,
     "Irecv(buf, source=ANY_SOURCE, tag=ANY_TAG) -> Request."},
    {"Probe", PYMPI_KW(p_probe), METH_VARARGS | METH_KEYWORDS,
     "Probe(source=ANY_SOURCE, tag=ANY_TAG, status=None): waits for a message."},
    {"Iprobe", PYMPI_KW(p_iprobe), METH_VARARGS | METH_KEYWORDS,
     "Iprobe(source=ANY_SOURCE, tag=ANY_TAG, status=None): is a message there?"},
    {"send", PYMPI_KW(o_send), METH_VARARGS | METH_KEYWORDS, "send(obj, dest, tag=0) (pickled)."},
    {"recv", PYMPI_KW(o_recv), METH_VARARGS | METH_KEYWORDS,
     "recv(buf=None, source=ANY_SOURCE, tag=ANY_TAG, status=None) -> object."},
    {"sendrecv", PYMPI_KW(o_sendrecv), METH_VARARGS | METH_KEYWORDS,
     "sendrecv(sendobj, dest, sendtag=0, recvbuf=None, source=ANY_SOURCE, recvtag=ANY_TAG, "
     "status=None) -> object."},
    {"isend", PYMPI_KW(o_isend), METH_VARARGS | METH_KEYWORDS,
     "isend(obj, dest, tag=0) -> Request."},
    {"irecv", PYMPI_KW(o_irecv), METH_VARARGS | METH_KEYWORDS,
     "irecv(buf=None, source=ANY_SOURCE, tag=ANY_TAG) -> Request; wait() returns the object."},
    {"probe", PYMPI_KW(p_probe), METH_VARARGS | METH_KEYWORDS, "probe(...): Probe."},
    {"iprobe", PYMPI_KW(p_iprobe), METH_VARARGS | METH_KEYWORDS, "iprobe(...): Iprobe."},
    {NULL, NULL, 0, NULL},
};
