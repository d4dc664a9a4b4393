/* pympi_types.c — MPI.Datatype and MPI.Op with their predefined instances,
 * the mapping from buffer formats (NumPy dtypes) to MPI datatypes, the
 * parsing of buffer messages in mpi4py's forms, and Op applied to Python
 * objects (what the pickle-based reductions fold with).
 *
 * Predefined datatypes and ops are process-wide MPI handles: no state here
 * but the Python objects the module holds.
 */
#include "pympi_impl.h"

#include <string.h>

/* ------------------------------------------------------------ Datatype */

typedef struct named_type {
    const char *name;
    MPI_Datatype type;
} named_type;

/* mpi4py's names; aliases name the same handle. */
static const named_type datatypes[] = {
    {"DATATYPE_NULL", MPI_DATATYPE_NULL},
    {"BYTE", MPI_BYTE},
    {"PACKED", MPI_PACKED},
    {"CHAR", MPI_CHAR},
    {"WCHAR", MPI_WCHAR},
    {"SIGNED_CHAR", MPI_SIGNED_CHAR},
    {"SHORT", MPI_SHORT},
    {"INT", MPI_INT},
    {"LONG", MPI_LONG},
    {"LONG_LONG", MPI_LONG_LONG},
    {"LONG_LONG_INT", MPI_LONG_LONG_INT},
    {"UNSIGNED_CHAR", MPI_UNSIGNED_CHAR},
    {"UNSIGNED_SHORT", MPI_UNSIGNED_SHORT},
    {"UNSIGNED", MPI_UNSIGNED},
    {"UNSIGNED_INT", MPI_UNSIGNED},
    {"UNSIGNED_LONG", MPI_UNSIGNED_LONG},
    {"UNSIGNED_LONG_LONG", MPI_UNSIGNED_LONG_LONG},
    {"FLOAT", MPI_FLOAT},
    {"DOUBLE", MPI_DOUBLE},
    {"LONG_DOUBLE", MPI_LONG_DOUBLE},
    {"C_BOOL", MPI_C_BOOL},
    {"BOOL", MPI_CXX_BOOL},
    {"INT8_T", MPI_INT8_T},
    {"INT16_T", MPI_INT16_T},
    {"INT32_T", MPI_INT32_T},
    {"INT64_T", MPI_INT64_T},
    {"UINT8_T", MPI_UINT8_T},
    {"UINT16_T", MPI_UINT16_T},
    {"UINT32_T", MPI_UINT32_T},
    {"UINT64_T", MPI_UINT64_T},
    {"C_COMPLEX", MPI_C_COMPLEX},
    {"C_FLOAT_COMPLEX", MPI_C_FLOAT_COMPLEX},
    {"C_DOUBLE_COMPLEX", MPI_C_DOUBLE_COMPLEX},
    {"C_LONG_DOUBLE_COMPLEX", MPI_C_LONG_DOUBLE_COMPLEX},
    {"AINT", MPI_AINT},
    {"OFFSET", MPI_OFFSET},
    {"COUNT", MPI_COUNT},
    {"SHORT_INT", MPI_SHORT_INT},
    {"INT_INT", MPI_2INT},
    {"TWOINT", MPI_2INT},
    {"LONG_INT", MPI_LONG_INT},
    {"FLOAT_INT", MPI_FLOAT_INT},
    {"DOUBLE_INT", MPI_DOUBLE_INT},
    {"LONG_DOUBLE_INT", MPI_LONG_DOUBLE_INT},
    {NULL, MPI_DATATYPE_NULL},
};

static PyObject *datatype_new_obj(PyTypeObject *t, MPI_Datatype type)
{
    pympi_datatype *d = PyObject_New(pympi_datatype, t);
    if (d)
        d->type = type;
    return (PyObject *)d;
}

static PyObject *datatype_tp_new(PyTypeObject *t, PyObject *args, PyObject *kwds)
{
    PyObject *other = NULL;
    if (!PyArg_ParseTuple(args, "|O!:Datatype", &pympi_datatype_type, &other))
        return NULL;
    return datatype_new_obj(t, other ? ((pympi_datatype *)other)->type : MPI_DATATYPE_NULL);
}

static int datatype_valid(pympi_datatype *d)
{
    if (d->type != MPI_DATATYPE_NULL)
        return 1;
    pympi_raise_msg(MPI_ERR_TYPE, "invalid datatype (MPI.DATATYPE_NULL)");
    return 0;
}

static PyObject *datatype_get_size(PyObject *self, PyObject *unused)
{
    pympi_datatype *d = (pympi_datatype *)self;
    MPI_Count size = 0;
    if (!datatype_valid(d) || pympi_check(MPI_Type_size_c(d->type, &size)) < 0)
        return NULL;
    return PyLong_FromLongLong((long long)size);
}

static PyObject *datatype_get_extent(PyObject *self, PyObject *unused)
{
    pympi_datatype *d = (pympi_datatype *)self;
    MPI_Count lb = 0, extent = 0;
    if (!datatype_valid(d) || pympi_check(MPI_Type_get_extent_c(d->type, &lb, &extent)) < 0)
        return NULL;
    return Py_BuildValue("(LL)", (long long)lb, (long long)extent);
}

static PyObject *datatype_get_name(PyObject *self, PyObject *unused)
{
    pympi_datatype *d = (pympi_datatype *)self;
    char name[MPI_MAX_OBJECT_NAME + 1];
    int len = 0;
    if (!datatype_valid(d) || pympi_check(MPI_Type_get_name(d->type, name, &len)) < 0)
        return NULL;
    return PyUnicode_FromStringAndSize(name, len);
}

static PyObject *datatype_size(PyObject *self, void *c)
{
    return datatype_get_size(self, NULL);
}

static PyObject *datatype_extent_item(PyObject *self, Py_ssize_t i)
{
    PyObject *t = datatype_get_extent(self, NULL);
    if (!t)
        return NULL;
    PyObject *v = Py_NewRef(PyTuple_GET_ITEM(t, i));
    Py_DECREF(t);
    return v;
}

static PyObject *datatype_extent(PyObject *self, void *c)
{
    return datatype_extent_item(self, 1);
}

static PyObject *datatype_lb(PyObject *self, void *c)
{
    return datatype_extent_item(self, 0);
}

static PyObject *datatype_name(PyObject *self, void *c)
{
    return datatype_get_name(self, NULL);
}

static PyObject *datatype_richcompare(PyObject *a, PyObject *b, int op)
{
    if (!PyObject_TypeCheck(b, &pympi_datatype_type) || (op != Py_EQ && op != Py_NE))
        return Py_NewRef(Py_NotImplemented);
    int eq = ((pympi_datatype *)a)->type == ((pympi_datatype *)b)->type;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t datatype_hash(PyObject *self)
{
    Py_hash_t h = (Py_hash_t)((pympi_datatype *)self)->type;
    return h == -1 ? -2 : h;
}

static PyObject *datatype_repr(PyObject *self)
{
    pympi_datatype *d = (pympi_datatype *)self;
    for (const named_type *n = datatypes; n->name; n++)
        if (n->type == d->type)
            return PyUnicode_FromFormat("<mpi4py.MPI.Datatype %s>", n->name);
    return PyUnicode_FromString("<mpi4py.MPI.Datatype>");
}

static int datatype_bool(PyObject *self)
{
    return ((pympi_datatype *)self)->type != MPI_DATATYPE_NULL;
}

/* Predefined datatypes pickle by name (mpi4py.MPI.DOUBLE). */
static PyObject *datatype_reduce(PyObject *self, PyObject *unused)
{
    pympi_datatype *d = (pympi_datatype *)self;
    for (const named_type *n = datatypes; n->name; n++)
        if (n->type == d->type)
            return PyUnicode_FromString(n->name);
    PyErr_SetString(PyExc_TypeError, "cannot pickle this MPI.Datatype");
    return NULL;
}

static PyMethodDef datatype_methods[] = {
    {"__reduce__", datatype_reduce, METH_NOARGS, NULL},
    {"Get_size", datatype_get_size, METH_NOARGS, "Bytes of one element's data."},
    {"Get_extent", datatype_get_extent, METH_NOARGS, "(lb, extent) in bytes."},
    {"Get_name", datatype_get_name, METH_NOARGS, "MPI's name of the datatype."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef datatype_getset[] = {
    {"size", datatype_size, NULL, "Get_size()", NULL},
    {"extent", datatype_extent, NULL, "the extent", NULL},
    {"lb", datatype_lb, NULL, "the lower bound", NULL},
    {"name", datatype_name, NULL, "Get_name()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyNumberMethods datatype_number = {.nb_bool = datatype_bool};

PyTypeObject pympi_datatype_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpi4py.MPI.Datatype",
    .tp_basicsize = sizeof(pympi_datatype),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An MPI datatype (predefined ones only: MPI.DOUBLE, MPI.INT, ...).",
    .tp_new = datatype_tp_new,
    .tp_repr = datatype_repr,
    .tp_richcompare = datatype_richcompare,
    .tp_hash = datatype_hash,
    .tp_methods = datatype_methods,
    .tp_getset = datatype_getset,
    .tp_getattro = pympi_getattro,
    .tp_as_number = &datatype_number,
};

/* ------------------------------------------------------------ formats */

/* A buffer format without byte-order prefix -> MPI datatype.  A prefix of
 * '@' (or none) means native C types; '=' and '<' mean standard sizes (on
 * this little-endian platform), mapped by kind and size; '>' and '!' are
 * big-endian, which MPI cannot reduce here: no datatype. */
MPI_Datatype pympi_format_type(const char *format)
{
    if (!format)
        return MPI_UNSIGNED_CHAR;
    int native = 1;
    if (*format == '@') {
        format++;
    } else if (*format == '=' || *format == '<') {
        native = 0;
        format++;
    } else if (*format == '>' || *format == '!') {
        return MPI_DATATYPE_NULL;
    }
    if (format[0] == 'Z' && format[1] && !format[2]) {
        switch (format[1]) {
        case 'f': return MPI_C_FLOAT_COMPLEX;
        case 'd': return MPI_C_DOUBLE_COMPLEX;
        case 'g': return native ? MPI_C_LONG_DOUBLE_COMPLEX : MPI_DATATYPE_NULL;
        default: return MPI_DATATYPE_NULL;
        }
    }
    if (!format[0] || format[1])
        return MPI_DATATYPE_NULL;
    switch (format[0]) {
    case '?': return MPI_C_BOOL;
    case 'c': return MPI_CHAR;
    case 'b': return MPI_SIGNED_CHAR;
    case 'B': return MPI_UNSIGNED_CHAR;
    case 'h': return native ? MPI_SHORT : MPI_INT16_T;
    case 'H': return native ? MPI_UNSIGNED_SHORT : MPI_UINT16_T;
    case 'i': return native ? MPI_INT : MPI_INT32_T;
    case 'I': return native ? MPI_UNSIGNED : MPI_UINT32_T;
    case 'l': return native ? MPI_LONG : MPI_INT32_T;
    case 'L': return native ? MPI_UNSIGNED_LONG : MPI_UINT32_T;
    case 'q': return native ? MPI_LONG_LONG : MPI_INT64_T;
    case 'Q': return native ? MPI_UNSIGNED_LONG_LONG : MPI_UINT64_T;
    case 'f': return MPI_FLOAT;
    case 'd': return MPI_DOUBLE;
    case 'g': return native ? MPI_LONG_DOUBLE : MPI_DATATYPE_NULL;
    default: return MPI_DATATYPE_NULL;
    }
}

/* ------------------------------------------------------------ Op */

typedef struct named_op {
    const char *name;
    MPI_Op op;
    pympi_opkind kind;
} named_op;

static const named_op ops[] = {
    {"SUM", MPI_SUM, PYMPI_SUM},
    {"PROD", MPI_PROD, PYMPI_PROD},
    {"MAX", MPI_MAX, PYMPI_MAX},
    {"MIN", MPI_MIN, PYMPI_MIN},
    {"LAND", MPI_LAND, PYMPI_LAND},
    {"LOR", MPI_LOR, PYMPI_LOR},
    {"LXOR", MPI_LXOR, PYMPI_LXOR},
    {"BAND", MPI_BAND, PYMPI_BAND},
    {"BOR", MPI_BOR, PYMPI_BOR},
    {"BXOR", MPI_BXOR, PYMPI_BXOR},
    {"MAXLOC", MPI_MAXLOC, PYMPI_MAXLOC},
    {"MINLOC", MPI_MINLOC, PYMPI_MINLOC},
    {"REPLACE", MPI_REPLACE, PYMPI_REPLACE},
    {"NO_OP", MPI_NO_OP, PYMPI_NO_OP},
    {"OP_NULL", MPI_OP_NULL, PYMPI_OP_NULL},
    {NULL, MPI_OP_NULL, PYMPI_OP_NULL},
};

static PyObject *op_repr(PyObject *self)
{
    pympi_opobj *o = (pympi_opobj *)self;
    return PyUnicode_FromFormat("<mpi4py.MPI.Op %s>", ops[o->kind].name);
}

/* x or y by truth, as Python's `x and y` / `x or y`. */
static PyObject *truth_pick(PyObject *x, PyObject *y, int want)
{
    int t = PyObject_IsTrue(x);
    if (t < 0)
        return NULL;
    return Py_NewRef(t == want ? y : x);
}

/* (value, index) pairs of MAXLOC/MINLOC; 0 or -1. */
static int loc_pair(PyObject *p, PyObject **v, PyObject **i)
{
    if (!PySequence_Check(p) || PySequence_Size(p) != 2) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "MAXLOC/MINLOC expect (value, index) pairs");
        return -1;
    }
    *v = PySequence_GetItem(p, 0);
    *i = *v ? PySequence_GetItem(p, 1) : NULL;
    if (!*i) {
        Py_CLEAR(*v);
        return -1;
    }
    return 0;
}

static PyObject *loc_apply(PyObject *x, PyObject *y, int better)
{
    PyObject *u = NULL, *i = NULL, *v = NULL, *j = NULL, *res = NULL;
    if (loc_pair(x, &u, &i) < 0 || loc_pair(y, &v, &j) < 0)
        goto done;
    int a = PyObject_RichCompareBool(u, v, better); /* u beats v */
    int b = a == 0 ? PyObject_RichCompareBool(v, u, better) : 0;
    int c = a == 0 && b == 0 ? PyObject_RichCompareBool(j, i, Py_LT) : 0;
    if (a < 0 || b < 0 || c < 0)
        goto done;
    res = a ? PyTuple_Pack(2, u, i) : (b || c) ? PyTuple_Pack(2, v, j) : PyTuple_Pack(2, u, i);
done:
    Py_XDECREF(u);
    Py_XDECREF(i);
    Py_XDECREF(v);
    Py_XDECREF(j);
    return res;
}

static PyObject *op_kind_apply(pympi_opkind kind, PyObject *x, PyObject *y)
{
    int t;
    switch (kind) {
    case PYMPI_SUM: return PyNumber_Add(x, y);
    case PYMPI_PROD: return PyNumber_Multiply(x, y);
    case PYMPI_MAX:
    case PYMPI_MIN:
        t = PyObject_RichCompareBool(y, x, kind == PYMPI_MAX ? Py_GT : Py_LT);
        return t < 0 ? NULL : Py_NewRef(t ? y : x);
    case PYMPI_LAND: return truth_pick(x, y, 1);
    case PYMPI_LOR: return truth_pick(x, y, 0);
    case PYMPI_LXOR: {
        int a = PyObject_IsTrue(x), b = a < 0 ? -1 : PyObject_IsTrue(y);
        return b < 0 ? NULL : PyBool_FromLong(a != b);
    }
    case PYMPI_BAND: return PyNumber_And(x, y);
    case PYMPI_BOR: return PyNumber_Or(x, y);
    case PYMPI_BXOR: return PyNumber_Xor(x, y);
    case PYMPI_MAXLOC: return loc_apply(x, y, Py_GT);
    case PYMPI_MINLOC: return loc_apply(x, y, Py_LT);
    case PYMPI_REPLACE: return Py_NewRef(y);
    case PYMPI_NO_OP: return Py_NewRef(x);
    case PYMPI_OP_NULL:
    default: break;
    }
    pympi_raise_msg(MPI_ERR_OP, "invalid operation (MPI.OP_NULL)");
    return NULL;
}

PyObject *pympi_op_apply(PyObject *op, PyObject *x, PyObject *y)
{
    if (!op)
        return PyNumber_Add(x, y);
    if (PyObject_TypeCheck(op, &pympi_op_type))
        return op_kind_apply(((pympi_opobj *)op)->kind, x, y);
    if (PyCallable_Check(op))
        return PyObject_CallFunctionObjArgs(op, x, y, NULL);
    PyErr_Format(PyExc_TypeError, "op must be an MPI.Op or a callable, not '%s'",
                 Py_TYPE(op)->tp_name);
    return NULL;
}

MPI_Op pympi_op_of(PyObject *op)
{
    if (PyObject_TypeCheck(op, &pympi_op_type))
        return ((pympi_opobj *)op)->op;
    PyErr_Format(PyExc_TypeError, "op must be an MPI.Op (MPI.SUM, MPI.MAX, ...), not '%s'",
                 Py_TYPE(op)->tp_name);
    return MPI_OP_NULL;
}

static PyObject *op_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"x", "y", NULL};
    PyObject *x, *y;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Op", kw, &x, &y))
        return NULL;
    return op_kind_apply(((pympi_opobj *)self)->kind, x, y);
}

static PyObject *op_richcompare(PyObject *a, PyObject *b, int cmp)
{
    if (!PyObject_TypeCheck(b, &pympi_op_type) || (cmp != Py_EQ && cmp != Py_NE))
        return Py_NewRef(Py_NotImplemented);
    int eq = ((pympi_opobj *)a)->op == ((pympi_opobj *)b)->op;
    return PyBool_FromLong(cmp == Py_EQ ? eq : !eq);
}

static Py_hash_t op_hash(PyObject *self)
{
    Py_hash_t h = (Py_hash_t)((pympi_opobj *)self)->op;
    return h == -1 ? -2 : h;
}

static PyObject *op_is_commutative(PyObject *self, PyObject *unused)
{
    pympi_opobj *o = (pympi_opobj *)self;
    int commute = 0;
    if (o->op == MPI_OP_NULL)
        return pympi_raise_msg(MPI_ERR_OP, "invalid operation (MPI.OP_NULL)");
    if (pympi_check(MPI_Op_commutative(o->op, &commute)) < 0)
        return NULL;
    return PyBool_FromLong(commute);
}

/* Predefined ops pickle by name (mpi4py.MPI.SUM). */
static PyObject *op_reduce(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(ops[((pympi_opobj *)self)->kind].name);
}

static PyMethodDef op_methods[] = {
    {"__reduce__", op_reduce, METH_NOARGS, NULL},
    {"Is_commutative", op_is_commutative, METH_NOARGS, "Whether the op commutes."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject pympi_op_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mpi4py.MPI.Op",
    .tp_basicsize = sizeof(pympi_opobj),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A predefined MPI reduction (MPI.SUM, ...); op(x, y) applies it to objects.",
    .tp_repr = op_repr,
    .tp_call = op_call,
    .tp_richcompare = op_richcompare,
    .tp_hash = op_hash,
    .tp_methods = op_methods,
    .tp_getattro = pympi_getattro,
};

int pympi_types_init(PyObject *m)
{
    if (PyType_Ready(&pympi_datatype_type) < 0 || PyType_Ready(&pympi_op_type) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Datatype", (PyObject *)&pympi_datatype_type) < 0 ||
        PyModule_AddObjectRef(m, "Op", (PyObject *)&pympi_op_type) < 0)
        return -1;
    for (const named_type *n = datatypes; n->name; n++) {
        PyObject *d = datatype_new_obj(&pympi_datatype_type, n->type);
        if (!d || PyModule_AddObject(m, n->name, d) < 0) {
            Py_XDECREF(d);
            return -1;
        }
    }
    for (const named_op *n = ops; n->name; n++) {
        pympi_opobj *o = PyObject_New(pympi_opobj, &pympi_op_type);
        if (!o)
            return -1;
        o->op = n->op;
        o->kind = n->kind;
        if (PyModule_AddObject(m, n->name, (PyObject *)o) < 0) {
            Py_DECREF(o);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ messages */

/* The items of a list/tuple message (a fast sequence), as mpi4py reads
 * them: [data, type], [data, count(s)], [data, count(s), type] or [data,
 * count(s), displacement(s), type]; 0 or -1 with mpi4py's error. */
static int msg_items(PyObject *fast, PyObject **data, PyObject **count, PyObject **displ,
                     PyObject **type)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    *data = items[0];
    if (n == 2) {
        if (PyObject_TypeCheck(items[1], &pympi_datatype_type) || PyUnicode_Check(items[1]))
            *type = items[1];
        else
            *count = items[1];
    } else if (n == 3) {
        *count = items[1];
        *type = items[2];
    } else if (n == 4) {
        *count = items[1];
        *displ = items[2];
        *type = items[3];
    } else {
        PyErr_Format(PyExc_ValueError, "message: expecting 2 to 4 items, got %zd", n);
        return -1;
    }
    return 0;
}

/* The parts of a list/tuple message; 0 or -1 with mpi4py's errors. */
static int msg_split(PyObject *obj, PyObject **data, PyObject **count, PyObject **displ,
                     PyObject **type)
{
    if (msg_items(obj, data, count, displ, type) < 0)
        return -1;
    if (*count && PyTuple_Check(*count) && PyTuple_GET_SIZE(*count) == 2 && !*displ) {
        *displ = PyTuple_GET_ITEM(*count, 1);
        *count = PyTuple_GET_ITEM(*count, 0);
    }
    return 0;
}

static int msg_type(PyObject *type_obj, const Py_buffer *view, MPI_Datatype *type)
{
    if (!type_obj) {
        if (view->format && (view->format[0] == '>' || view->format[0] == '!')) {
            PyErr_Format(PyExc_ValueError, "format string '%s' with non-native byte order",
                         view->format);
            return -1;
        }
        *type = pympi_format_type(view->format);
        MPI_Count size = 0;
        if (*type != MPI_DATATYPE_NULL && MPI_Type_size_c(*type, &size) == MPI_SUCCESS &&
            size == view->itemsize)
            return 0;
        PyErr_Format(PyExc_KeyError,
                     "message: cannot infer an MPI datatype from the buffer format '%s' "
                     "(itemsize %zd): give one, as [buf, MPI.DOUBLE]",
                     view->format ? view->format : "B", view->itemsize);
        return -1;
    }
    if (PyObject_TypeCheck(type_obj, &pympi_datatype_type)) {
        *type = ((pympi_datatype *)type_obj)->type;
        if (*type != MPI_DATATYPE_NULL)
            return 0;
        pympi_raise_msg(MPI_ERR_TYPE, "message: invalid datatype (MPI.DATATYPE_NULL)");
        return -1;
    }
    if (PyUnicode_Check(type_obj)) {
        const char *s = PyUnicode_AsUTF8(type_obj);
        if (!s)
            return -1;
        *type = pympi_format_type(s);
        if (*type != MPI_DATATYPE_NULL)
            return 0;
        PyErr_Format(PyExc_KeyError, "message: unknown datatype typechar '%s'", s);
        return -1;
    }
    PyErr_Format(PyExc_TypeError, "message: expecting an MPI.Datatype, not '%s'",
                 Py_TYPE(type_obj)->tp_name);
    return -1;
}

static int msg_int(PyObject *o, const char *what, MPI_Count *out)
{
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "message: negative %s %lld", what, v);
        return -1;
    }
    *out = (MPI_Count)v;
    return 0;
}

typedef int (*msg_split_fn)(PyObject *fast, PyObject **data, PyObject **count, PyObject **displ,
                            PyObject **type);

/* The buffer of message obj (a buffer, or a list/tuple that split reads):
 * its view (held by op, writable for PYMPI_MSG_WRITE), datatype and
 * extent; *count and *displ as split found them (borrowed from *fast, the
 * list's fast sequence or NULL, which the caller releases).  NULL with an
 * exception when the message is not one. */
static Py_buffer *msg_view(PyObject *obj, int flags, msg_split_fn split, pympi_op *op,
                           PyObject **fast, PyObject **count, PyObject **displ, MPI_Datatype *type,
                           MPI_Count *extent)
{
    PyObject *data = obj, *type_obj = NULL;
    *fast = NULL;
    if (PyList_Check(obj) || PyTuple_Check(obj)) {
        if (!(*fast = PySequence_Fast(obj, "message")))
            return NULL;
        if (PySequence_Fast_GET_SIZE(*fast) == 0) {
            PyErr_SetString(PyExc_ValueError, "message: expecting 2 to 4 items, got 0");
            return NULL;
        }
        if (split(*fast, &data, count, displ, &type_obj) < 0)
            return NULL;
    }
    if (!PyObject_CheckBuffer(data)) {
        PyErr_Format(PyExc_TypeError, "message: expecting buffer or list/tuple, not '%s'",
                     Py_TYPE(data)->tp_name);
        return NULL;
    }
    Py_buffer view;
    int pflags =
        PyBUF_ANY_CONTIGUOUS | PyBUF_FORMAT | ((flags & PYMPI_MSG_WRITE) ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(data, &view, pflags) < 0 || pympi_op_view(op, &view) < 0)
        return NULL;
    Py_buffer *v = &op->views[op->nviews - 1];
    MPI_Count lb = 0;
    if (msg_type(type_obj, v, type) < 0 ||
        pympi_check(MPI_Type_get_extent_c(*type, &lb, extent)) < 0)
        return NULL;
    return v;
}

int pympi_msg_parse(PyObject *obj, int flags, MPI_Count blocks, pympi_op *op, pympi_msg *msg)
{
    *msg = (pympi_msg){.buf = NULL, .count = 0, .type = MPI_BYTE};
    /* as in mpi4py, None stands for IN_PLACE where IN_PLACE is allowed */
    if (obj == pympi_in_place || (obj == Py_None && (flags & PYMPI_MSG_IN_PLACE))) {
        if (!(flags & PYMPI_MSG_IN_PLACE)) {
            PyErr_SetString(PyExc_ValueError, "message: MPI.IN_PLACE is not allowed here");
            return -1;
        }
        msg->in_place = 1;
        msg->buf = MPI_IN_PLACE;
        return 0;
    }
    if (obj == Py_None && (flags & PYMPI_MSG_NONE)) {
        msg->none = 1;
        return 0;
    }
    PyObject *count_obj = NULL, *displ_obj = NULL, *fast = NULL;
    MPI_Count extent = 0, count = 0, displ = 0;
    Py_buffer *v =
        msg_view(obj, flags, msg_split, op, &fast, &count_obj, &displ_obj, &msg->type, &extent);
    if (!v)
        goto fail;
    if (count_obj && count_obj != Py_None && msg_int(count_obj, "count", &count) < 0)
        goto fail;
    if (displ_obj && displ_obj != Py_None && msg_int(displ_obj, "displacement", &displ) < 0)
        goto fail;
    MPI_Count nbytes = (MPI_Count)v->len;
    if (!count_obj || count_obj == Py_None) {
        MPI_Count items = extent > 0 ? nbytes / extent - displ : 0;
        if (extent > 0 && nbytes % extent) {
            PyErr_Format(PyExc_ValueError,
                         "message: cannot infer count, buffer length %lld is not a multiple "
                         "of datatype extent %lld",
                         (long long)nbytes, (long long)extent);
            goto fail;
        }
        if (items < 0 || items % blocks) {
            PyErr_Format(PyExc_ValueError,
                         "message: cannot infer count, number of entries %lld is not a "
                         "multiple of required number of blocks %lld",
                         (long long)items, (long long)blocks);
            goto fail;
        }
        count = items / blocks;
    } else {
        /* fits: displ + count * blocks <= the buffer's items, computed so
         * that no user-given number can overflow */
        MPI_Count items = extent > 0 ? nbytes / extent : 0;
        if (displ > items || count > (items - displ) / blocks) {
            PyErr_Format(PyExc_ValueError,
                         "message: buffer of %lld items of extent %lld is too small for count "
                         "%lld x %lld blocks at displacement %lld",
                         (long long)items, (long long)extent, (long long)count, (long long)blocks,
                         (long long)displ);
            goto fail;
        }
    }
    msg->buf = (char *)v->buf + displ * extent;
    msg->count = count;
    Py_XDECREF(fast);
    return 0;
fail:
    Py_XDECREF(fast);
    return -1;
}

/* ------------------------------------------------------------ vector messages */

/* Displacements are read into the MPI_Aint array as MPI_Count values. */
_Static_assert(sizeof(MPI_Aint) == sizeof(MPI_Count), "MPI_Aint and MPI_Count differ in size");

/* counts/displs: None, an int (counts only: the same for every block) or a
 * sequence of `blocks` non-negative ints, into out. */
static int msgv_ints(PyObject *o, const char *what, int blocks, MPI_Count *out)
{
    if (PyLong_Check(o) && strcmp(what, "counts") == 0) {
        MPI_Count v;
        if (msg_int(o, "count", &v) < 0)
            return -1;
        for (int i = 0; i < blocks; i++)
            out[i] = v;
        return 0;
    }
    PyObject *fast = PySequence_Fast(o, "message: counts and displacements must be sequences");
    if (!fast)
        return -1;
    int rc = 0;
    if (PySequence_Fast_GET_SIZE(fast) != blocks) {
        PyErr_Format(PyExc_ValueError, "message: expecting %d %s, got %zd", blocks, what,
                     PySequence_Fast_GET_SIZE(fast));
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < blocks; i++)
        rc = msg_int(PySequence_Fast_GET_ITEM(fast, i), what, &out[i]);
    Py_DECREF(fast);
    return rc;
}

/* The parts of a list/tuple vector message. */
static int msgv_split(PyObject *fast, PyObject **data, PyObject **counts, PyObject **displs,
                      PyObject **type)
{
    if (msg_items(fast, data, counts, displs, type) < 0)
        return -1;
    /* as in mpi4py, a tuple there is (counts, displs); a list is counts */
    if (*counts && !*displs && PyTuple_Check(*counts)) {
        if (PyTuple_GET_SIZE(*counts) != 2) {
            PyErr_SetString(PyExc_ValueError,
                            "message: expecting (counts, displacements), a tuple of 2 items");
            return -1;
        }
        *displs = PyTuple_GET_ITEM(*counts, 1);
        *counts = PyTuple_GET_ITEM(*counts, 0);
    }
    return 0;
}

int pympi_msgv_parse(PyObject *obj, int flags, int blocks, pympi_op *op, pympi_msgv *msg)
{
    *msg = (pympi_msgv){.buf = NULL, .type = MPI_BYTE};
    if (obj == pympi_in_place || (obj == Py_None && (flags & PYMPI_MSG_IN_PLACE))) {
        if (!(flags & PYMPI_MSG_IN_PLACE)) {
            PyErr_SetString(PyExc_ValueError, "message: MPI.IN_PLACE is not allowed here");
            return -1;
        }
        msg->in_place = 1;
        msg->buf = MPI_IN_PLACE;
    }
    /* counts and displacements live as long as the operation */
    PyObject *store = PyBytes_FromStringAndSize(
        NULL, (Py_ssize_t)((sizeof(MPI_Count) + sizeof(MPI_Aint)) * (size_t)blocks));
    if (!store)
        return -1;
    int kept = pympi_op_keep(op, store);
    msg->counts = (MPI_Count *)PyBytes_AS_STRING(store);
    msg->displs = (MPI_Aint *)(msg->counts + blocks);
    Py_DECREF(store); /* op holds it */
    if (kept < 0)
        return -1;
    if (msg->in_place)
        return 0;
    PyObject *counts_obj = NULL, *displs_obj = NULL, *fast = NULL;
    MPI_Count extent = 0;
    Py_buffer *v =
        msg_view(obj, flags, msgv_split, op, &fast, &counts_obj, &displs_obj, &msg->type, &extent);
    if (!v)
        goto fail;
    MPI_Count items = extent > 0 ? (MPI_Count)v->len / extent : 0;
    if (!counts_obj || counts_obj == Py_None) {
        /* as mpi4py: items / blocks each, the first items % blocks one more */
        if (extent > 0 && (MPI_Count)v->len % extent) {
            PyErr_Format(PyExc_ValueError,
                         "message: cannot infer count, buffer length %zd is not a multiple of "
                         "datatype extent %lld",
                         v->len, (long long)extent);
            goto fail;
        }
        for (int i = 0; i < blocks; i++)
            msg->counts[i] = items / blocks + (items % blocks > i);
    } else if (msgv_ints(counts_obj, "counts", blocks, msg->counts) < 0) {
        goto fail;
    }
    if (!displs_obj || displs_obj == Py_None) {
        MPI_Aint at = 0;
        for (int i = 0; i < blocks; i++) {
            msg->displs[i] = at;
            at += (MPI_Aint)msg->counts[i];
        }
    } else if (PyLong_Check(displs_obj)) { /* a stride: block i at i * stride */
        MPI_Count stride;
        if (msg_int(displs_obj, "displacement", &stride) < 0)
            goto fail;
        if (blocks > 1 && stride > items / (blocks - 1)) {
            PyErr_Format(PyExc_ValueError, "message: stride %lld is past the buffer's %lld items",
                         (long long)stride, (long long)items);
            goto fail;
        }
        for (int i = 0; i < blocks; i++)
            msg->displs[i] = (MPI_Aint)(stride * i);
    } else {
        if (msgv_ints(displs_obj, "displacements", blocks, (MPI_Count *)msg->displs) < 0)
            goto fail;
    }
    for (int i = 0; i < blocks; i++)
        if (msg->counts[i] > items || (MPI_Count)msg->displs[i] > items - msg->counts[i]) {
            PyErr_Format(PyExc_ValueError,
                         "message: block %d (displacement %lld, count %lld) ends beyond the "
                         "buffer's %lld items",
                         i, (long long)msg->displs[i], (long long)msg->counts[i], (long long)items);
            goto fail;
        }
    msg->buf = v->buf;
    Py_XDECREF(fast);
    return 0;
fail:
    Py_XDECREF(fast);
    return -1;
}
