/* pyplugin.c — native plugins (include/ippc/plugin.h) in the Python
 * runtime: each kernel becomes a callable (type _ippc.kernel) set in the
 * namespace and kept in rt->kernels (so reset puts it back and list skips
 * it).  Arguments: None, bool, int, float, str and NumPy arrays (a
 * contiguous array is passed in place, so a kernel's writes reach it; a
 * strided one as a contiguous copy); results become None, bool, int,
 * float, str or NumPy arrays over the memory the kernel filled (no copy);
 * several results a tuple.  A kernel's error is a RuntimeError with its
 * message (KeyboardInterrupt when the task was interrupted).
 *
 * No Python runs while plugin code is on the C stack: init only fills a C
 * list (plugin_lib.h), and results are C memory (plugin_call.h) turned into
 * objects after the kernel returned.  Libraries stay loaded for the life of the engine.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ippc/plugin.h>

#include "plugin_call.h"
#include "plugin_lib.h"
#include "pyruntime_impl.h"

#define PYPLUGIN_MAX_LIBS 64

/* ---------------------------------------------------------- interrupts */

static int api_interrupted(void)
{
    py_runtime *rt = py_runtime_current;
    return rt && atomic_load(&rt->interrupt);
}

/* ---------------------------------------------------------- the kernel type */

typedef struct py_kernel {
    PyObject_HEAD ippc_kernel fn;
    const ippc_api *api;
    char name[PLUGIN_LIB_NAME_MAX];
} py_kernel;

/* One argument's C form; views and copies to let go of after the call. */
typedef struct py_arg {
    pyvalue_view view;
    int has_view;
    unsigned char *copy;
    PyObject *keep; /* a str's or a scalar's object */
} py_arg;

static int kernel_arg(const py_kernel *k, PyObject *v, int i, ippc_value *out, py_arg *a)
{
    memset(out, 0, sizeof *out);
    ippc_error err;
    if (v == Py_None) {
        out->kind = IPPC_NIL;
    } else if (PyBool_Check(v)) {
        out->kind = IPPC_BOOLEAN;
        out->u.boolean = v == Py_True;
    } else if (PyLong_Check(v)) {
        int overflow = 0;
        out->kind = IPPC_INTEGER;
        out->u.integer = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            PyErr_Format(PyExc_OverflowError, "%s: argument %d is an integer beyond 64 bits",
                         k->name, i + 1);
            return -1;
        }
    } else if (PyFloat_Check(v)) {
        out->kind = IPPC_NUMBER;
        out->u.number = PyFloat_AS_DOUBLE(v);
    } else if (PyUnicode_Check(v)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (!s)
            return -1;
        out->kind = IPPC_STRING;
        out->u.string.data = s;
        out->u.string.len = (size_t)n;
    } else {
        int r = pyvalue_view_of(v, &a->view, &err);
        if (r < 0) {
            PyErr_Format(PyExc_TypeError, "%s: argument %d: %s", k->name, i + 1, err.message);
            return -1;
        }
        if (r == 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s: argument %d is a %s; kernels take None, bool, int, float, str "
                         "and numpy arrays",
                         k->name, i + 1, Py_TYPE(v)->tp_name);
            return -1;
        }
        a->has_view = 1;
        void *data = a->view.buf.buf;
        if (!PyBuffer_IsContiguous(&a->view.buf, 'C')) {
            a->copy = malloc(a->view.bytes ? a->view.bytes : 1);
            if (!a->copy ||
                PyBuffer_ToContiguous(a->copy, &a->view.buf, (Py_ssize_t)a->view.bytes, 'C') < 0) {
                PyErr_NoMemory();
                return -1;
            }
            data = a->copy;
        }
        out->kind = IPPC_ARRAY;
        out->u.array.data = data;
        out->u.array.dtype = (ippc_dtype)a->view.dtype;
        out->u.array.ndim = a->view.ndim;
        out->u.array.shape = a->view.shape;
        out->u.array.count = a->view.bytes / nd_dtype_size(a->view.dtype);
    }
    return 0;
}

/* A result as a Python object (array data is taken). */
static PyObject *kernel_result(plugin_call_result *r)
{
    switch (r->kind) {
    case IPPC_BOOLEAN: return PyBool_FromLong((long)r->integer);
    case IPPC_INTEGER: return PyLong_FromLongLong((long long)r->integer);
    case IPPC_NUMBER: return PyFloat_FromDouble(r->number);
    case IPPC_STRING:
        return PyUnicode_DecodeUTF8((const char *)r->data, (Py_ssize_t)r->len, "replace");
    case IPPC_ARRAY: {
        unsigned char *data = r->data;
        r->data = NULL;
        return pyvalue_array(data, r->len, (nd_dtype)r->dtype, r->ndim, r->shape);
    }
    default: return Py_NewRef(Py_None);
    }
}

static PyObject *kernel_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    py_kernel *k = (py_kernel *)self;
    if (kwargs && PyDict_Size(kwargs) > 0) {
        PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", k->name);
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n > 64) {
        PyErr_Format(PyExc_TypeError, "%s: more than 64 arguments", k->name);
        return NULL;
    }
    ippc_value vals[64];
    py_arg held[64];
    memset(held, 0, sizeof held);
    ippc_call call;
    memset(&call, 0, sizeof call);
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (kernel_arg(k, PyTuple_GET_ITEM(args, i), (int)i, &vals[i], &held[i]) < 0)
            goto done;
    /* The kernel is C (it never calls Python): other Python threads may run
     * meanwhile; the arguments' buffers are held until it returns. */
    PyThreadState *saved = PyEval_SaveThread();
    int rc = k->fn(k->api, &call, vals, (int)n);
    PyEval_RestoreThread(saved);
    if (rc != 0 || call.failed) {
        if (api_interrupted())
            PyErr_SetString(PyExc_KeyboardInterrupt, "task interrupted");
        else
            PyErr_Format(PyExc_RuntimeError, "%s: %s", k->name,
                         call.error[0] ? call.error : "the kernel failed");
        goto done;
    }
    if (call.count == 0) {
        out = Py_NewRef(Py_None);
    } else if (call.count == 1) {
        out = kernel_result(&call.results[0]);
    } else {
        out = PyTuple_New((Py_ssize_t)call.count);
        for (size_t i = 0; out && i < call.count; i++) {
            PyObject *x = kernel_result(&call.results[i]);
            if (!x) {
                Py_CLEAR(out);
                break;
            }
            PyTuple_SET_ITEM(out, (Py_ssize_t)i, x);
        }
    }
done:
    for (Py_ssize_t i = 0; i < n; i++) {
        if (held[i].has_view)
            PyBuffer_Release(&held[i].view.buf);
        free(held[i].copy);
    }
    plugin_call_free(&call);
    return out;
}

static PyObject *kernel_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<ippc kernel %s>", ((py_kernel *)self)->name);
}

static PyTypeObject kernel_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_ippc.kernel",
    .tp_basicsize = sizeof(py_kernel),
    .tp_call = kernel_call,
    .tp_repr = kernel_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a kernel of a native plugin",
};

int pyplugin_open(void)
{
    return PyType_Ready(&kernel_type);
}

/* ---------------------------------------------------------- loading */

/* The loaded libraries: handle -> its kernels' names (for a second load). */
static struct {
    void *handle;
    PyObject *names; /* list of str */
    ippc_api *api;   /* lives as long as the engine: kernels point to it */
} libs[PYPLUGIN_MAX_LIBS];
static int nlibs;

/* Sets the kernels named in names from rt->kernels into the namespace. */
static int install(py_runtime *rt, PyObject *names)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        PyObject *k = PyDict_GetItem(rt->kernels, name);
        if (k && PyDict_SetItem(rt->ns, name, k) < 0)
            return -1;
    }
    return 0;
}

#define LOAD_FAIL(...)                                                                             \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        goto fail;                                                                                 \
    } while (0)

PyObject *pyplugin_load(py_runtime *rt, const char *path, char *err, size_t errlen)
{
    ippc_api *api = NULL;
    plugin_lib_kernels *ctx = NULL;
    PyObject *names = NULL;
    int kernels_made = 0; /* kernel objects point to api: it must stay then */
    void *handle = plugin_lib_open(path, err, errlen);
    if (!handle)
        return NULL;
    for (int i = 0; i < nlibs; i++)
        if (libs[i].handle == handle) { /* loaded before: dlopen only counted it again */
            dlclose(handle);
            handle = NULL;
            if (install(rt, libs[i].names) < 0)
                LOAD_FAIL("cannot set the kernels of %s", path);
            return Py_NewRef(libs[i].names);
        }
    if (nlibs == PYPLUGIN_MAX_LIBS)
        LOAD_FAIL("cannot load plugin %s: %d libraries are loaded already", path, nlibs);
    api = malloc(sizeof *api);
    ctx = calloc(1, sizeof *ctx);
    if (!api || !ctx)
        LOAD_FAIL("cannot load plugin %s: out of memory", path);
    plugin_lib_api(api, rt->world, api_interrupted);
    if (plugin_lib_init(handle, path, api, ctx, err, errlen) < 0)
        goto fail;
    names = PyList_New(0);
    for (int i = 0; names && i < ctx->count; i++) {
        py_kernel *k = PyObject_New(py_kernel, &kernel_type);
        PyObject *name = k ? PyUnicode_FromString(ctx->kernels[i].name) : NULL;
        if (k) {
            kernels_made = 1;
            k->fn = ctx->kernels[i].fn;
            k->api = api;
            snprintf(k->name, sizeof k->name, "%s", ctx->kernels[i].name);
        }
        if (!name || PyDict_SetItem(rt->kernels, name, (PyObject *)k) < 0 ||
            PyList_Append(names, name) < 0)
            Py_CLEAR(names);
        Py_XDECREF(name);
        Py_XDECREF(k);
    }
    if (!names || install(rt, names) < 0) {
        PyErr_Clear();
        LOAD_FAIL("cannot load plugin %s: out of memory", path);
    }
    libs[nlibs].handle = handle;
    libs[nlibs].api = api;
    libs[nlibs++].names = Py_NewRef(names);
    free(ctx);
    return names;
fail:
    Py_XDECREF(names);
    free(ctx);
    if (!kernels_made) { /* else kernels (in rt->kernels) still point into both */
        free(api);
        if (handle)
            dlclose(handle);
    }
    PyErr_Clear();
    return NULL;
}
