/* pympi.c — the core of the Python MPI module (pympi.h): registration of
 * the built-in modules `mpi4py` and `mpi4py.MPI`, their constants and
 * module functions, MPI.Exception, the attribute errors that name what is
 * supported, and the waits: every wait is lmpi's yielding loop with the GIL
 * released; an interrupted one parks what MPI still owns.
 *
 * Module-wide state (world/self states, the parked list) is touched with
 * the GIL held only.
 */
#include "pympi_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lmpi.h"

static const atomic_int *pympi_flag;
static lmpi_commstate *world_state, *self_state; /* NULL without MPI */
PyObject *pympi_exception_type;
PyObject *pympi_in_place;

void pympi_set_interrupt(const atomic_int *flag)
{
    pympi_flag = flag;
}

int pympi_interrupted(void)
{
    return pympi_flag && atomic_load(pympi_flag);
}

/* ------------------------------------------------------------ MPI.Exception */

typedef struct pympi_exc {
    PyBaseExceptionObject base;
    int ierr;
} pympi_exc;

static PyTypeObject exc_type;

static int exc_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"ierr", "message", NULL};
    int ierr = MPI_SUCCESS;
    PyObject *message = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|iU:Exception", kw, &ierr, &message))
        return -1;
    PyObject *base_args =
        message ? Py_BuildValue("(iO)", ierr, message) : Py_BuildValue("(i)", ierr);
    if (!base_args)
        return -1;
    int rc = ((PyTypeObject *)PyExc_RuntimeError)->tp_init(self, base_args, NULL);
    Py_DECREF(base_args);
    ((pympi_exc *)self)->ierr = ierr;
    return rc;
}

static PyObject *error_string(int code)
{
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS || len <= 0)
        len = snprintf(msg, sizeof msg, "MPI error %d", code);
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING] = 0;
    return PyUnicode_FromString(msg);
}

static int error_class(int code)
{
    int cls = code;
    if (MPI_Error_class(code, &cls) != MPI_SUCCESS)
        cls = MPI_ERR_UNKNOWN;
    return cls;
}

static PyObject *exc_str(PyObject *self)
{
    PyObject *args = ((PyBaseExceptionObject *)self)->args;
    if (args && PyTuple_GET_SIZE(args) >= 2 && PyUnicode_Check(PyTuple_GET_ITEM(args, 1)))
        return Py_NewRef(PyTuple_GET_ITEM(args, 1));
    return error_string(((pympi_exc *)self)->ierr);
}

static PyObject *exc_get_code(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(((pympi_exc *)self)->ierr);
}

static PyObject *exc_get_class(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(error_class(((pympi_exc *)self)->ierr));
}

static PyObject *exc_get_string(PyObject *self, PyObject *unused)
{
    return error_string(((pympi_exc *)self)->ierr);
}

static PyObject *exc_getset_code(PyObject *self, void *c)
{
    return exc_get_code(self, NULL);
}
static PyObject *exc_getset_class(PyObject *self, void *c)
{
    return exc_get_class(self, NULL);
}
static PyObject *exc_getset_string(PyObject *self, void *c)
{
    return exc_get_string(self, NULL);
}

static PyObject *exc_int(PyObject *self)
{
    return exc_get_code(self, NULL);
}

static PyObject *exc_richcompare(PyObject *self, PyObject *other, int op)
{
    if (op != Py_EQ && op != Py_NE)
        return Py_NewRef(Py_NotImplemented);
    long a = ((pympi_exc *)self)->ierr, b;
    if (PyObject_TypeCheck(other, &exc_type))
        b = ((pympi_exc *)other)->ierr;
    else if (PyLong_Check(other))
        b = PyLong_AsLong(other);
    else
        return Py_NewRef(Py_NotImplemented);
    if (b == -1 && PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(op == Py_EQ ? a == b : a != b);
}

static Py_hash_t exc_hash(PyObject *self)
{
    Py_hash_t h = ((pympi_exc *)self)->ierr;
    return h == -1 ? -2 : h;
}

static PyObject *exc_repr(PyObject *self)
{
    return PyUnicode_FromFormat("MPI.Exception(%d)", ((pympi_exc *)self)->ierr);
}

static PyMethodDef exc_methods[] = {
    {"Get_error_code", exc_get_code, METH_NOARGS, "The MPI error code."},
    {"Get_error_class", exc_get_class, METH_NOARGS, "The MPI error class of the code."},
    {"Get_error_string", exc_get_string, METH_NOARGS, "MPI's text for the code."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef exc_getset[] = {
    {"error_code", exc_getset_code, NULL, "error code", NULL},
    {"error_class", exc_getset_class, NULL, "error class", NULL},
    {"error_string", exc_getset_string, NULL, "error string", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyNumberMethods exc_number = {.nb_int = exc_int, .nb_index = exc_int};

static PyTypeObject exc_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpi4py.MPI.Exception",
    .tp_basicsize = sizeof(pympi_exc),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "An MPI error (a RuntimeError): Get_error_code(), Get_error_class().",
    .tp_init = exc_init,
    .tp_str = exc_str,
    .tp_repr = exc_repr,
    .tp_richcompare = exc_richcompare,
    .tp_hash = exc_hash,
    .tp_methods = exc_methods,
    .tp_getset = exc_getset,
    .tp_as_number = &exc_number,
};

PyObject *pympi_raise(int rc)
{
    PyObject *e = PyObject_CallFunction(pympi_exception_type, "(i)", rc);
    if (e) {
        PyErr_SetObject(pympi_exception_type, e);
        Py_DECREF(e);
    }
    return NULL;
}

PyObject *pympi_raise_msg(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (!msg)
        return NULL;
    PyObject *e = PyObject_CallFunction(pympi_exception_type, "(iO)", rc, msg);
    Py_DECREF(msg);
    if (e) {
        PyErr_SetObject(pympi_exception_type, e);
        Py_DECREF(e);
    }
    return NULL;
}

int pympi_check(int rc)
{
    if (rc == MPI_SUCCESS)
        return 0;
    pympi_raise(rc);
    return -1;
}

/* ------------------------------------------------------------ operations */

int pympi_op_view(pympi_op *op, Py_buffer *view)
{
    if (op->nviews == PYMPI_OP_VIEWS) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_SystemError, "MPI: too many buffers in one operation");
        return -1;
    }
    op->views[op->nviews++] = *view;
    return 0;
}

int pympi_op_keep(pympi_op *op, PyObject *obj)
{
    if (!op->keep && !(op->keep = PyList_New(0)))
        return -1;
    return PyList_Append(op->keep, obj);
}

void pympi_op_clear(pympi_op *op)
{
    for (int i = 0; i < op->nviews; i++)
        PyBuffer_Release(&op->views[i]);
    op->nviews = 0;
    Py_CLEAR(op->keep);
    PyMem_RawFree(op->raw);
    op->raw = NULL;
}

/* ------------------------------------------------------------ parking */

static lmpi_parking parked; /* the Python module's lot */

/* A parked op's contents live in a block of their own (the lot keeps
 * pointers); released with the GIL held (pympi_reap's callers hold it). */
static void parked_op_free(void *op)
{
    pympi_op_clear(op);
    PyMem_RawFree(op);
}

void pympi_reap(void)
{
    lmpi_parking_reap(&parked);
}

/* If the op's block or the list cannot grow, op's contents are leaked on
 * purpose: releasing memory MPI may still write is worse. */
void pympi_park(lmpi_commstate *cs, MPI_Request req, pympi_op *op, int collective)
{
    pympi_op *held = PyMem_RawMalloc(sizeof *held);
    if (held) {
        *held = *op;
        if (lmpi_parking_add(&parked, cs, req, held, parked_op_free, collective) < 0)
            PyMem_RawFree(held);
    }
    *op = (pympi_op){0};
}

/* ------------------------------------------------------------ waiting */

int pympi_poll(lmpi_step step, void *arg)
{
    PyThreadState *ts = PyEval_SaveThread(); /* the GIL is released */
    int rc = lmpi_poll(step, arg, pympi_flag);
    PyEval_RestoreThread(ts);
    return rc;
}

typedef struct test_arg {
    MPI_Request *req;
    MPI_Status *status;
} test_arg;

/* Each round of a wait also lets lazy irecvs match (pympi_p2p.c). */
static int test_step(void *arg, int *done)
{
    test_arg *t = arg;
    pympi_irecv_service();
    return MPI_Test(t->req, done, t->status);
}

int pympi_wait(lmpi_commstate *cs, MPI_Request *req, MPI_Status *status, pympi_op *op,
               int collective)
{
    test_arg t = {req, status ? status : MPI_STATUS_IGNORE};
    int rc = pympi_poll(test_step, &t);
    if (rc == 0)
        return 0;
    if (rc > 0) {
        pympi_raise(rc);
        return -1;
    }
    if (op) {
        pympi_park(cs, *req, op, collective);
        *req = MPI_REQUEST_NULL;
    }
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    return -1;
}

typedef struct probe_arg {
    int source, tag;
    MPI_Comm comm;
    MPI_Message *msg;
    MPI_Status *status;
} probe_arg;

static int probe_step(void *arg, int *done)
{
    probe_arg *p = arg;
    pympi_irecv_service();
    return MPI_Improbe(p->source, p->tag, p->comm, done, p->msg, p->status);
}

int pympi_probe(lmpi_commstate *cs, int source, int tag, MPI_Message *msg, MPI_Status *status)
{
    probe_arg p = {source, tag, cs->comm, msg, status};
    int rc = pympi_poll(probe_step, &p);
    if (rc == 0)
        return 0;
    if (rc > 0)
        pympi_raise(rc);
    else
        PyErr_SetNone(PyExc_KeyboardInterrupt);
    return -1;
}

lmpi_commstate *pympi_begin(PyObject *self, int collective, const char *what)
{
    lmpi_commstate *cs = ((pympi_comm *)self)->cs;
    if (!cs || !lmpi_active()) {
        pympi_raise_msg(MPI_ERR_COMM, "%s: %s", what,
                        cs ? "MPI is not initialised" : "invalid communicator (MPI.COMM_NULL)");
        return NULL;
    }
    pympi_reap();
    if (pympi_interrupted()) {
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        return NULL;
    }
    if (collective && cs->pending) {
        pympi_raise_msg(MPI_ERR_PENDING,
                        "%s: an interrupted collective on this communicator is still pending "
                        "(the other ranks never made it); their next collective on it completes "
                        "it, then this rank is in step again",
                        what);
        return NULL;
    }
    return cs;
}

/* ------------------------------------------------------------ attribute errors */

/* The public names of obj's type, comma separated (for error messages). */
static PyObject *public_names(PyObject *obj, int skip_constants)
{
    PyObject *names = PyObject_Dir(obj);
    if (!names)
        return NULL;
    PyObject *keep = PyList_New(0);
    for (Py_ssize_t i = 0; keep && i < PyList_GET_SIZE(names); i++) {
        PyObject *n = PyList_GET_ITEM(names, i);
        const char *s = PyUnicode_AsUTF8(n);
        if (!s || s[0] == '_')
            continue;
        int lower = 0;
        for (const char *c = s; *c; c++)
            lower |= (*c >= 'a' && *c <= 'z');
        if (skip_constants && !lower)
            continue;
        if (PyList_Append(keep, n) < 0)
            Py_CLEAR(keep);
    }
    Py_DECREF(names);
    if (!keep)
        return NULL;
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *joined = sep ? PyUnicode_Join(sep, keep) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(keep);
    return joined;
}

/* tp_getattro of every MPI type: a missing attribute says it is not one of
 * ippc's mpi4py names, and which are. */
PyObject *pympi_getattro(PyObject *self, PyObject *name)
{
    PyObject *v = PyObject_GenericGetAttr(self, name);
    if (v || !PyErr_ExceptionMatches(PyExc_AttributeError) || !PyUnicode_Check(name))
        return v;
    const char *s = PyUnicode_AsUTF8(name);
    if (!s || s[0] == '_')
        return NULL;
    PyErr_Clear();
    const char *short_name = strrchr(Py_TYPE(self)->tp_name, '.');
    short_name = short_name ? short_name + 1 : Py_TYPE(self)->tp_name;
    PyObject *names = public_names((PyObject *)Py_TYPE(self), 0);
    if (!names)
        return NULL;
    PyErr_Format(PyExc_AttributeError,
                 "'%s' object has no attribute '%s': ippc's built-in mpi4py does not provide "
                 "%s.%s (see docs/mpi4py.md); %s has: %U",
                 Py_TYPE(self)->tp_name, s, short_name, s, short_name, names);
    Py_DECREF(names);
    return NULL;
}

static PyObject *module_getattr(PyObject *module, PyObject *name)
{
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (!s)
        return NULL;
    if (!strcmp(s, "Init") || !strcmp(s, "Init_thread") || !strcmp(s, "Finalize"))
        return PyErr_Format(PyExc_AttributeError,
                            "module 'mpi4py.MPI' has no attribute '%s': the ippc engine "
                            "initialises and finalises MPI itself (MPI.Is_initialized() is True)",
                            s);
    if (s[0] == '_')
        return PyErr_Format(PyExc_AttributeError, "module 'mpi4py.MPI' has no attribute '%s'", s);
    PyObject *names = public_names(module, 1);
    if (!names)
        return NULL;
    PyErr_Format(PyExc_AttributeError,
                 "module 'mpi4py.MPI' has no attribute '%s': ippc's built-in mpi4py does not "
                 "provide it (see docs/mpi4py.md); it has %U, and constants (dir(MPI))",
                 s, names);
    Py_DECREF(names);
    return NULL;
}

/* ------------------------------------------------------------ module functions */

static PyObject *f_wtime(PyObject *m, PyObject *unused)
{
    if (lmpi_active())
        return PyFloat_FromDouble(MPI_Wtime());
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return PyFloat_FromDouble((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
}

static PyObject *f_wtick(PyObject *m, PyObject *unused)
{
    if (lmpi_active())
        return PyFloat_FromDouble(MPI_Wtick());
    return PyFloat_FromDouble(1e-9);
}

static PyObject *f_is_initialized(PyObject *m, PyObject *unused)
{
    int flag = 0;
    MPI_Initialized(&flag);
    return PyBool_FromLong(flag);
}

static PyObject *f_is_finalized(PyObject *m, PyObject *unused)
{
    int flag = 0;
    MPI_Finalized(&flag);
    return PyBool_FromLong(flag);
}

static PyObject *f_query_thread(PyObject *m, PyObject *unused)
{
    int level = MPI_THREAD_SINGLE;
    if (lmpi_active() && pympi_check(MPI_Query_thread(&level)) < 0)
        return NULL;
    return PyLong_FromLong(level);
}

static PyObject *f_is_thread_main(PyObject *m, PyObject *unused)
{
    int flag = 1;
    if (lmpi_active() && pympi_check(MPI_Is_thread_main(&flag)) < 0)
        return NULL;
    return PyBool_FromLong(flag);
}

static PyObject *f_processor_name(PyObject *m, PyObject *unused)
{
    char name[MPI_MAX_PROCESSOR_NAME + 1];
    int len = 0;
    if (pympi_check(MPI_Get_processor_name(name, &len)) < 0)
        return NULL;
    return PyUnicode_FromStringAndSize(name, len);
}

static PyObject *f_version(PyObject *m, PyObject *unused)
{
    int v = 0, sub = 0;
    if (pympi_check(MPI_Get_version(&v, &sub)) < 0)
        return NULL;
    return Py_BuildValue("(ii)", v, sub);
}

static PyObject *f_library_version(PyObject *m, PyObject *unused)
{
    char text[MPI_MAX_LIBRARY_VERSION_STRING + 1];
    int len = 0;
    if (pympi_check(MPI_Get_library_version(text, &len)) < 0)
        return NULL;
    return PyUnicode_FromStringAndSize(text, len > 0 && text[len - 1] == 0 ? len - 1 : len);
}

static PyObject *f_error_class(PyObject *m, PyObject *arg)
{
    int code = (int)PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(error_class(code));
}

static PyObject *f_error_string(PyObject *m, PyObject *arg)
{
    int code = (int)PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return error_string(code);
}

static PyMethodDef mpi_functions[] = {
    {"Wtime", f_wtime, METH_NOARGS, "Seconds since some time in the past (MPI_Wtime)."},
    {"Wtick", f_wtick, METH_NOARGS, "Resolution of Wtime in seconds."},
    {"Is_initialized", f_is_initialized, METH_NOARGS, "True: the engine initialised MPI."},
    {"Is_finalized", f_is_finalized, METH_NOARGS, "Whether MPI was finalised."},
    {"Query_thread", f_query_thread, METH_NOARGS, "The thread level MPI provides."},
    {"Is_thread_main", f_is_thread_main, METH_NOARGS, "Whether this is MPI's main thread."},
    {"Get_processor_name", f_processor_name, METH_NOARGS, "The host name MPI reports."},
    {"Get_version", f_version, METH_NOARGS, "(version, subversion) of the MPI standard."},
    {"Get_library_version", f_library_version, METH_NOARGS, "The MPI library's version text."},
    {"Get_error_class", f_error_class, METH_O, "The error class of an error code."},
    {"Get_error_string", f_error_string, METH_O, "MPI's text for an error code."},
    {"__getattr__", module_getattr, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------ the modules */

typedef struct pympi_const {
    const char *name;
    long value;
} pympi_const;

static const pympi_const mpi_constants[] = {
    {"ANY_SOURCE", MPI_ANY_SOURCE},
    {"ANY_TAG", MPI_ANY_TAG},
    {"PROC_NULL", MPI_PROC_NULL},
    {"ROOT", MPI_ROOT},
    {"UNDEFINED", MPI_UNDEFINED},
    {"THREAD_SINGLE", MPI_THREAD_SINGLE},
    {"THREAD_FUNNELED", MPI_THREAD_FUNNELED},
    {"THREAD_SERIALIZED", MPI_THREAD_SERIALIZED},
    {"THREAD_MULTIPLE", MPI_THREAD_MULTIPLE},
    {"VERSION", MPI_VERSION},
    {"SUBVERSION", MPI_SUBVERSION},
    {"MAX_PROCESSOR_NAME", MPI_MAX_PROCESSOR_NAME},
    {"MAX_ERROR_STRING", MPI_MAX_ERROR_STRING},
    {"SUCCESS", MPI_SUCCESS},
    {"ERR_BUFFER", MPI_ERR_BUFFER},
    {"ERR_COUNT", MPI_ERR_COUNT},
    {"ERR_TYPE", MPI_ERR_TYPE},
    {"ERR_TAG", MPI_ERR_TAG},
    {"ERR_COMM", MPI_ERR_COMM},
    {"ERR_RANK", MPI_ERR_RANK},
    {"ERR_REQUEST", MPI_ERR_REQUEST},
    {"ERR_ROOT", MPI_ERR_ROOT},
    {"ERR_GROUP", MPI_ERR_GROUP},
    {"ERR_OP", MPI_ERR_OP},
    {"ERR_ARG", MPI_ERR_ARG},
    {"ERR_UNKNOWN", MPI_ERR_UNKNOWN},
    {"ERR_TRUNCATE", MPI_ERR_TRUNCATE},
    {"ERR_OTHER", MPI_ERR_OTHER},
    {"ERR_INTERN", MPI_ERR_INTERN},
    {"ERR_IN_STATUS", MPI_ERR_IN_STATUS},
    {"ERR_PENDING", MPI_ERR_PENDING},
    {"ERR_NO_MEM", MPI_ERR_NO_MEM},
    {"ERR_LASTCODE", MPI_ERR_LASTCODE},
    {NULL, 0},
};

static PyTypeObject in_place_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpi4py.MPI.InPlace",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "MPI.IN_PLACE: the receive buffer is also the send buffer.",
};

static struct PyModuleDef mpi_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mpi4py.MPI",
    .m_doc = "mpi4py-compatible MPI for ippc engines, on the engine's MPICH "
             "(what exists: docs/mpi4py.md).",
    .m_size = -1,
    .m_methods = mpi_functions,
};

static int add_comm(PyObject *m, const char *name, lmpi_commstate *cs, int predefined)
{
    if (cs)
        cs->refs++;
    PyObject *c = pympi_comm_new(cs, predefined);
    if (!c)
        return -1;
    return PyModule_AddObject(m, name, c) < 0 ? (Py_DECREF(c), -1) : 0;
}

/* The progress thread is held from the first import of mpi4py.MPI until
 * Py_FinalizeEx (a Py_AtExit callback: pure C, after the interpreter). */
static int progress_held;

static void release_progress(void)
{
    if (progress_held)
        lmpi_progress_release();
    progress_held = 0;
}

/* Operations parked by an earlier interpreter of this process hold objects
 * of that interpreter: they are never released (MPI may still write their
 * memory, and no interpreter can free them any more), only reaped. */
static void forget_parked_objects(void)
{
    for (size_t i = 0; i < parked.count; i++) {
        pympi_op *op = parked.items[i].op;
        op->nviews = 0;
        op->keep = NULL;
    }
}

static PyObject *mpi_init(void)
{
    forget_parked_objects();
    pympi_exception_type = NULL;
    exc_type.tp_base = (PyTypeObject *)PyExc_RuntimeError;
    if (PyType_Ready(&exc_type) < 0 || PyType_Ready(&in_place_type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&mpi_module);
    if (!m)
        return NULL;
    pympi_exception_type = (PyObject *)&exc_type;
    /* one per interpreter (an earlier one's is left to it) */
    if (!(pympi_in_place = PyType_GenericNew(&in_place_type, NULL, NULL)))
        goto fail;
    if (PyModule_AddObjectRef(m, "Exception", pympi_exception_type) < 0 ||
        PyModule_AddObjectRef(m, "IN_PLACE", pympi_in_place) < 0)
        goto fail;
    for (const pympi_const *c = mpi_constants; c->name; c++)
        if (PyModule_AddIntConstant(m, c->name, c->value) < 0)
            goto fail;
    if (pympi_types_init(m) < 0 || pympi_p2p_init(m) < 0 || pympi_obj_init() < 0)
        goto fail;
    if (pympi_comm_types_init(m) < 0)
        goto fail;
    if (add_comm(m, "COMM_WORLD", world_state, 1) < 0 ||
        add_comm(m, "COMM_SELF", self_state, 1) < 0 || add_comm(m, "COMM_NULL", NULL, 1) < 0)
        goto fail;
    if (world_state && !progress_held && Py_AtExit(release_progress) == 0) {
        lmpi_progress_acquire();
        progress_held = 1;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}

/* The package: mpi4py.rc is accepted and ignored (MPI is already
 * initialised by the engine), and a finder lets `import mpi4py.MPI` reach
 * the built-in submodule (the standard built-in finder only looks at
 * top-level names). */
static const char package_source[] =
    "import sys as _sys, types as _types\n"
    "import importlib.machinery as _machinery\n"
    "rc = _types.SimpleNamespace(initialize=True, threads=True, thread_level='multiple',\n"
    "                            finalize=None, fast_reduce=True, recv_mprobe=True,\n"
    "                            errors='exception')\n"
    "class _BuiltinSubmodule:\n"
    "    @classmethod\n"
    "    def find_spec(cls, fullname, path=None, target=None):\n"
    "        if fullname == 'mpi4py.MPI':\n"
    "            return _machinery.ModuleSpec(fullname, _machinery.BuiltinImporter,\n"
    "                                         origin='built-in')\n"
    "        return None\n"
    "if not any(getattr(f, '__name__', '') == '_BuiltinSubmodule' for f in _sys.meta_path):\n"
    "    _sys.meta_path.insert(0, _BuiltinSubmodule)\n"
    "def __getattr__(name):\n"
    "    raise AttributeError(\"module 'mpi4py' has no attribute %r: ippc's built-in \"\n"
    "                         \"mpi4py has MPI and rc (see docs/mpi4py.md)\" % (name,))\n"
    "del _types\n";

static struct PyModuleDef package_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mpi4py",
    .m_doc = "ippc's built-in mpi4py: `from mpi4py import MPI` (docs/mpi4py.md).",
    .m_size = -1,
};

static PyObject *package_init(void)
{
    PyObject *m = PyModule_Create(&package_module);
    if (!m)
        return NULL;
    PyObject *dict = PyModule_GetDict(m); /* borrowed */
    PyObject *path = PyList_New(0);
    if (!path || PyDict_SetItemString(dict, "__path__", path) < 0 ||
        PyDict_SetItemString(dict, "__builtins__", PyEval_GetBuiltins()) < 0) {
        Py_XDECREF(path);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(path);
    PyObject *r = PyRun_String(package_source, Py_file_input, dict, dict);
    if (!r) {
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(r);
    return m;
}

int pympi_register(void)
{
    if (PyImport_AppendInittab("mpi4py", package_init) < 0 ||
        PyImport_AppendInittab("mpi4py.MPI", mpi_init) < 0)
        return -1;
    if (!lmpi_active() || world_state)
        return 0;
    /* As mpi4py does: errors on the predefined communicators return.  MPICH
     * reports errors of MPI_Test (a truncated receive, a failed collective)
     * to MPI_COMM_WORLD's handler, which would otherwise abort the job. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    /* Private duplicates: user traffic never matches the engine's own. */
    MPI_Comm world = MPI_COMM_NULL, self = MPI_COMM_NULL;
    MPI_Request req;
    int rc = MPI_Comm_idup(MPI_COMM_WORLD, &world, &req);
    if (rc == MPI_SUCCESS)
        rc = lmpi_wait(&req, NULL);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_dup(MPI_COMM_SELF, &self);
    if (rc == MPI_SUCCESS) { /* the names mpi4py users see */
        MPI_Comm_set_name(world, "MPI_COMM_WORLD");
        MPI_Comm_set_name(self, "MPI_COMM_SELF");
    }
    if (rc == MPI_SUCCESS && !(world_state = lmpi_commstate_new(world, 1)))
        rc = MPI_ERR_NO_MEM;
    if (rc == MPI_SUCCESS && !(self_state = lmpi_commstate_new(self, 1)))
        rc = MPI_ERR_NO_MEM;
    if (rc != MPI_SUCCESS) {
        if (world_state)
            lmpi_commstate_release(world_state);
        else if (world != MPI_COMM_NULL)
            MPI_Comm_free(&world);
        if (self != MPI_COMM_NULL)
            MPI_Comm_free(&self);
        world_state = NULL;
        return -1;
    }
    return 0;
}
