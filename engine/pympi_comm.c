/* pympi_comm.c — MPI.Comm and MPI.Intracomm over the communicator states
 * they share with parked operations (lmpi_commstate, lmpi.h): rank/size,
 * Barrier, Split, Dup, Free, and the one method table made of every part's
 * methods (this file's, the buffer collectives', the pickle collectives',
 * point-to-point's).
 *
 * Communicators that this module creates (COMM_WORLD's and COMM_SELF's
 * duplicates, Split, Dup) are freed when their last user goes: the object
 * (Free or garbage collection) and every parked operation that used it.
 */
#include "pympi_impl.h"

#include <stdlib.h>

#include "lmpi.h"

PyObject *pympi_comm_new(lmpi_commstate *cs, int predefined)
{
    PyTypeObject *t = cs ? &pympi_intracomm_type : &pympi_comm_type;
    pympi_comm *c = PyObject_New(pympi_comm, t);
    if (!c) {
        lmpi_commstate_release(cs);
        return NULL;
    }
    c->cs = cs;
    c->predefined = predefined;
    return (PyObject *)c;
}

static void comm_dealloc(PyObject *self)
{
    lmpi_commstate_release(((pympi_comm *)self)->cs);
    PyObject_Free(self);
}

static lmpi_commstate *comm_state(PyObject *self, const char *what)
{
    lmpi_commstate *cs = ((pympi_comm *)self)->cs;
    if (!cs)
        pympi_raise_msg(MPI_ERR_COMM, "%s: invalid communicator (MPI.COMM_NULL)", what);
    return cs;
}

static PyObject *comm_get_rank(PyObject *self, PyObject *unused)
{
    lmpi_commstate *cs = comm_state(self, "Get_rank");
    return cs ? PyLong_FromLong(cs->rank) : NULL;
}

static PyObject *comm_get_size(PyObject *self, PyObject *unused)
{
    lmpi_commstate *cs = comm_state(self, "Get_size");
    return cs ? PyLong_FromLong(cs->size) : NULL;
}

static PyObject *comm_rank(PyObject *self, void *c)
{
    return comm_get_rank(self, NULL);
}

static PyObject *comm_size(PyObject *self, void *c)
{
    return comm_get_size(self, NULL);
}

static PyObject *comm_get_name(PyObject *self, PyObject *unused)
{
    lmpi_commstate *cs = comm_state(self, "Get_name");
    char name[MPI_MAX_OBJECT_NAME + 1];
    int len = 0;
    if (!cs || pympi_check(MPI_Comm_get_name(cs->comm, name, &len)) < 0)
        return NULL;
    return PyUnicode_FromStringAndSize(name, len);
}

static PyObject *comm_is_inter(PyObject *self, PyObject *unused)
{
    if (!comm_state(self, "Is_inter"))
        return NULL;
    return Py_NewRef(Py_False);
}

static PyObject *comm_is_intra(PyObject *self, PyObject *unused)
{
    if (!comm_state(self, "Is_intra"))
        return NULL;
    return Py_NewRef(Py_True);
}

static PyObject *comm_barrier(PyObject *self, PyObject *unused)
{
    lmpi_commstate *cs = pympi_begin(self, 1, "Barrier");
    if (!cs)
        return NULL;
    MPI_Request req;
    if (pympi_check(MPI_Ibarrier(cs->comm, &req)) < 0)
        return NULL;
    pympi_op op = {0};
    if (pympi_wait(cs, &req, NULL, &op, 1) < 0)
        return NULL;
    return Py_NewRef(Py_None);
}

/* Split(color=0, key=0): the (color, key) pairs are exchanged with a
 * yielding allgather first, so that when the blocking MPI_Comm_split runs
 * every rank is known to be in it (a fast call, not a spinning wait). */
static PyObject *comm_split(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"color", "key", NULL};
    int color = 0, key = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|ii:Split", kw, &color, &key))
        return NULL;
    lmpi_commstate *cs = pympi_begin(self, 1, "Split");
    if (!cs)
        return NULL;
    if (color < 0 && color != MPI_UNDEFINED)
        return pympi_raise_msg(MPI_ERR_ARG, "Split: color must be >= 0 or MPI.UNDEFINED");
    PyObject *pairs = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sizeof(int) * 2 * (cs->size + 1));
    if (!pairs)
        return NULL;
    int *p = (int *)PyBytes_AS_STRING(pairs);
    p[0] = color;
    p[1] = key;
    pympi_op op = {0};
    MPI_Request req;
    if (pympi_op_keep(&op, pairs) < 0 ||
        pympi_check(MPI_Iallgather(p, 2, MPI_INT, p + 2, 2, MPI_INT, cs->comm, &req)) < 0 ||
        pympi_wait(cs, &req, NULL, &op, 1) < 0) {
        pympi_op_clear(&op);
        Py_DECREF(pairs);
        return NULL;
    }
    pympi_op_clear(&op);
    Py_DECREF(pairs);
    MPI_Comm comm = MPI_COMM_NULL;
    if (pympi_check(MPI_Comm_split(cs->comm, color, key, &comm)) < 0)
        return NULL;
    if (comm == MPI_COMM_NULL)
        return pympi_comm_new(NULL, 0);
    lmpi_commstate *ns = lmpi_commstate_new(comm, 1);
    if (!ns) {
        MPI_Comm_free(&comm);
        return PyErr_NoMemory();
    }
    return pympi_comm_new(ns, 0);
}

/* Dup(): MPI_Comm_idup waited the yielding way.  An interrupted Dup parks
 * the request; the new communicator is then never handed out (MPI frees
 * nothing of it: a leak of one communicator per interrupted Dup). */
static PyObject *comm_dup(PyObject *self, PyObject *unused)
{
    lmpi_commstate *cs = pympi_begin(self, 1, "Dup");
    if (!cs)
        return NULL;
    MPI_Comm *comm = PyMem_RawMalloc(sizeof *comm);
    if (!comm)
        return PyErr_NoMemory();
    MPI_Request req;
    pympi_op op = {0};
    if (pympi_check(MPI_Comm_idup(cs->comm, comm, &req)) < 0) {
        PyMem_RawFree(comm);
        return NULL;
    }
    if (pympi_wait(cs, &req, NULL, &op, 1) < 0) {
        /* MPI may still write *comm when interrupted: it stays allocated. */
        if (!PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
            PyMem_RawFree(comm);
        return NULL;
    }
    MPI_Comm c = *comm;
    PyMem_RawFree(comm);
    lmpi_commstate *ns = lmpi_commstate_new(c, 1);
    if (!ns) {
        MPI_Comm_free(&c);
        return PyErr_NoMemory();
    }
    return pympi_comm_new(ns, 0);
}

static PyObject *comm_free(PyObject *self, PyObject *unused)
{
    pympi_comm *c = (pympi_comm *)self;
    if (!comm_state(self, "Free"))
        return NULL;
    if (c->predefined)
        return pympi_raise_msg(MPI_ERR_COMM, "Free: cannot free a predefined communicator");
    lmpi_commstate_release(c->cs);
    c->cs = NULL;
    return Py_NewRef(Py_None);
}

static PyObject *comm_richcompare(PyObject *a, PyObject *b, int op)
{
    if (!PyObject_TypeCheck(b, &pympi_comm_type) || (op != Py_EQ && op != Py_NE))
        return Py_NewRef(Py_NotImplemented);
    lmpi_commstate *x = ((pympi_comm *)a)->cs, *y = ((pympi_comm *)b)->cs;
    MPI_Comm cx = x ? x->comm : MPI_COMM_NULL, cy = y ? y->comm : MPI_COMM_NULL;
    return PyBool_FromLong(op == Py_EQ ? cx == cy : cx != cy);
}

static Py_hash_t comm_hash(PyObject *self)
{
    lmpi_commstate *cs = ((pympi_comm *)self)->cs;
    Py_hash_t h = cs ? (Py_hash_t)cs->comm : (Py_hash_t)MPI_COMM_NULL;
    return h == -1 ? -2 : h;
}

static int comm_bool(PyObject *self)
{
    return ((pympi_comm *)self)->cs != NULL;
}

static PyObject *comm_repr(PyObject *self)
{
    lmpi_commstate *cs = ((pympi_comm *)self)->cs;
    if (!cs)
        return PyUnicode_FromString("<mpi4py.MPI.Comm COMM_NULL>");
    return PyUnicode_FromFormat("<mpi4py.MPI.Intracomm rank %d of %d>", cs->rank, cs->size);
}

static PyObject *comm_tp_new(PyTypeObject *t, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Comm", kw))
        return NULL;
    return pympi_comm_new(NULL, 0);
}

static PyMethodDef comm_own_methods[] = {
    {"Get_rank", comm_get_rank, METH_NOARGS, "This process's rank."},
    {"Get_size", comm_get_size, METH_NOARGS, "The number of processes."},
    {"Get_name", comm_get_name, METH_NOARGS, "MPI's name of the communicator."},
    {"Is_inter", comm_is_inter, METH_NOARGS, "False: only intracommunicators here."},
    {"Is_intra", comm_is_intra, METH_NOARGS, "True."},
    {"Barrier", comm_barrier, METH_NOARGS, "Blocks until every rank called it."},
    {"barrier", comm_barrier, METH_NOARGS, "Barrier()."},
    {"Split", PYMPI_KW(comm_split), METH_VARARGS | METH_KEYWORDS,
     "Split(color=0, key=0): new communicators by color (UNDEFINED: COMM_NULL)."},
    {"Dup", comm_dup, METH_NOARGS, "A duplicate communicator."},
    {"Clone", comm_dup, METH_NOARGS, "Dup()."},
    {"Free", comm_free, METH_NOARGS, "Frees the communicator (it becomes COMM_NULL)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef comm_getset[] = {
    {"rank", comm_rank, NULL, "Get_rank()", NULL},
    {"size", comm_size, NULL, "Get_size()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Filled by comm_methods_init from every part's table. */
static PyMethodDef comm_methods[128];

static int comm_methods_init(void)
{
    const PyMethodDef *parts[] = {comm_own_methods, pympi_coll_methods, pympi_obj_methods,
                                  pympi_p2p_methods};
    size_t n = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        for (const PyMethodDef *m = parts[i]; m->ml_name; m++) {
            if (n + 1 >= sizeof comm_methods / sizeof comm_methods[0]) {
                PyErr_SetString(PyExc_SystemError, "MPI.Comm: method table too small");
                return -1;
            }
            comm_methods[n++] = *m;
        }
    comm_methods[n] = (PyMethodDef){NULL, NULL, 0, NULL};
    return 0;
}

static PyNumberMethods comm_number = {.nb_bool = comm_bool};

PyTypeObject pympi_comm_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpi4py.MPI.Comm",
    .tp_basicsize = sizeof(pympi_comm),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "An MPI communicator.",
    .tp_new = comm_tp_new,
    .tp_dealloc = comm_dealloc,
    .tp_repr = comm_repr,
    .tp_richcompare = comm_richcompare,
    .tp_hash = comm_hash,
    .tp_methods = comm_methods,
    .tp_getset = comm_getset,
    .tp_getattro = pympi_getattro,
    .tp_as_number = &comm_number,
};

PyTypeObject pympi_intracomm_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpi4py.MPI.Intracomm",
    .tp_basicsize = sizeof(pympi_comm),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "An MPI intracommunicator (COMM_WORLD, COMM_SELF, Split and Dup results).",
    .tp_base = &pympi_comm_type,
    .tp_dealloc = comm_dealloc,
    .tp_getattro = pympi_getattro,
};

int pympi_comm_types_init(PyObject *m)
{
    if (!comm_methods[0].ml_name && comm_methods_init() < 0)
        return -1;
    if (PyType_Ready(&pympi_comm_type) < 0 || PyType_Ready(&pympi_intracomm_type) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Comm", (PyObject *)&pympi_comm_type) < 0 ||
        PyModule_AddObjectRef(m, "Intracomm", (PyObject *)&pympi_intracomm_type) < 0)
        return -1;
    return 0;
}
