/* pyruntime_ns.c — the Python runtime's namespace ops: reset, delete, list
 * (%whos-like), load (a native plugin), and the namespace as fanned-out
 * data ops see it (fan_ns, fanout.h).
 *
 * "User names" are told from the engine's own by the copy of __main__'s
 * dict taken at start (__name__, __builtins__, ...): a name is the user's
 * when it is not in that copy or its value differs, and it is not a kernel
 * of a loaded plugin.  reset puts that copy back (and the kernels); modules
 * stay imported (sys.modules), as they do in IPython's %reset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyruntime_impl.h"

static int is_user_name(py_runtime *rt, PyObject *key, PyObject *value)
{
    if (!PyUnicode_Check(key))
        return 0;
    PyObject *base = PyDict_GetItemWithError(rt->baseline, key); /* borrowed */
    if (base == value)
        return 0;
    PyObject *kernel = PyDict_GetItemWithError(rt->kernels, key);
    return kernel != value;
}

void py_op_reset(task_ctx *c)
{
    py_runtime *rt = (py_runtime *)c->rt;
    PyDict_Clear(rt->ns);
    if (PyDict_Update(rt->ns, rt->baseline) < 0 || PyDict_Update(rt->ns, rt->kernels) < 0) {
        py_task_fail(c);
        return;
    }
    PyObject *io = PyObject_CallMethod(rt->boot, "reset_io", NULL); /* print goes to the task */
    Py_XDECREF(io);
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *r = gc ? PyObject_CallMethod(gc, "collect", NULL) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(gc);
    PyErr_Clear();
}

/* op "delete" {"names": [...]}: all names must be defined, else NameError
 * and nothing is removed. */
void py_op_delete(task_ctx *c)
{
    py_runtime *rt = (py_runtime *)c->rt;
    const json_t *names = json_object_get(c->task, "names");
    if (!json_is_array(names)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "delete needs a list 'names'");
        return;
    }
    size_t i;
    const json_t *name;
    json_array_foreach(names, i, name) {
        if (!json_is_string(name)) {
            task_fail(c, TASK_ERROR, "ProtocolError", "delete: names must be strings");
            return;
        }
        if (!PyDict_GetItemString(rt->ns, json_string_value(name))) {
            task_fail(c, TASK_ERROR, "NameError", "name '%s' is not defined",
                      json_string_value(name));
            return;
        }
    }
    json_array_foreach(names, i, name) {
        if (PyDict_DelItemString(rt->ns, json_string_value(name)) < 0)
            PyErr_Clear(); /* listed twice: gone already */
    }
}

/* {"type", ...} of one value, for list. */
static json_t *describe(PyObject *v)
{
    json_t *d = json_object();
    const char *type = Py_TYPE(v)->tp_name;
    ippc_error err;
    pyvalue_view view;
    int r = pyvalue_view_of(v, &view, &err);
    if (r != 0) {
        type = "ndarray";
        PyObject *dt = PyObject_GetAttrString(v, "dtype");
        PyObject *ds = dt ? PyObject_Str(dt) : NULL;
        const char *dname = ds ? PyUnicode_AsUTF8(ds) : NULL;
        json_object_set_new(d, "dtype", json_string(dname ? dname : "?"));
        Py_XDECREF(ds);
        Py_XDECREF(dt);
        PyObject *shape = PyObject_GetAttrString(v, "shape");
        PyObject *nbytes = PyObject_GetAttrString(v, "nbytes");
        json_t *js = json_array();
        for (Py_ssize_t k = 0; shape && PyTuple_Check(shape) && k < PyTuple_GET_SIZE(shape); k++)
            json_array_append_new(js, json_integer(PyLong_AsLongLong(PyTuple_GET_ITEM(shape, k))));
        json_object_set_new(d, "shape", js);
        json_object_set_new(d, "bytes", json_integer(nbytes ? PyLong_AsLongLong(nbytes) : 0));
        Py_XDECREF(shape);
        Py_XDECREF(nbytes);
        if (r > 0)
            PyBuffer_Release(&view.buf);
        PyErr_Clear();
    } else if (PyUnicode_Check(v)) {
        Py_ssize_t n = 0;
        if (PyUnicode_AsUTF8AndSize(v, &n))
            json_object_set_new(d, "bytes", json_integer((json_int_t)n));
        PyErr_Clear();
    } else if (PyList_Check(v) || PyTuple_Check(v) || PyDict_Check(v)) {
        json_object_set_new(d, "length", json_integer((json_int_t)PyObject_Length(v)));
    }
    json_object_set_new(d, "type", json_string(type));
    return d;
}

/* op "list": {name: {"type", ...}} for the user's names. */
void py_op_list(task_ctx *c)
{
    py_runtime *rt = (py_runtime *)c->rt;
    c->value = json_object();
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(rt->ns, &pos, &key, &value)) {
        if (!is_user_name(rt, key, value))
            continue;
        Py_ssize_t klen = 0;
        const char *k = PyUnicode_AsUTF8AndSize(key, &klen);
        if (!k) { /* a lone surrogate: not shown */
            PyErr_Clear();
            continue;
        }
        json_t *d = describe(value);
        if (json_object_setn_new(c->value, k, (size_t)klen, d) < 0)
            json_decref(d);
    }
    PyErr_Clear();
}

/* op "load" {"library": path}: value {"library": path, "kernels": [...]}. */
void py_op_load(task_ctx *c)
{
    const char *path = task_string(c, "library", NULL);
    if (!path)
        return;
    char err[512];
    PyObject *names = pyplugin_load((py_runtime *)c->rt, path, err, sizeof err);
    if (!names) {
        task_fail(c, TASK_ERROR, "PluginError", "%s", err);
        return;
    }
    json_t *list = json_array();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++)
        json_array_append_new(list, json_string(PyUnicode_AsUTF8(PyList_GET_ITEM(names, i))));
    Py_DECREF(names);
    c->value = json_pack("{s:s, s:o}", "library", path, "kernels", list);
}

/* ------------------------------------------------------------ fan_ns */

static void fan_py_assign(void *self, task_ctx *c, const json_t *ns, ippc_blobs *blobs)
{
    (void)self;
    py_push_ns(c, ns, blobs);
}

/* hold[0]: the value (a reference); hold[1]: a Py_buffer of it, or a
 * contiguous copy of a strided array (then data points into it). */
static int fan_py_read(void *self, task_ctx *c, const char *name, fan_value *out)
{
    (void)self;
    PyObject *v = py_task_global(c, name);
    if (!v)
        return -1;
    out->hold[0] = v;
    ippc_error err;
    pyvalue_view *view = malloc(sizeof *view);
    if (!view) {
        task_fail(c, TASK_ERROR, "MemoryError", "gather '%s': out of memory", name);
        return -1;
    }
    int r = pyvalue_view_of(v, view, &err);
    if (r < 0) {
        free(view);
        task_fail(c, TASK_ERROR, "TypeError", "gather '%s': %s", name, err.message);
        return -1;
    }
    if (r == 1 && view->ndim >= 1) {
        out->hold[1] = view;
        out->is_array = 1;
        out->dtype = view->dtype;
        out->ndim = view->ndim;
        for (int d = 0; d < view->ndim; d++)
            out->shape[d] = view->shape[d];
        out->bytes = view->bytes;
        out->data = view->buf.buf;
        if (!PyBuffer_IsContiguous(&view->buf, 'C')) {
            unsigned char *copy = malloc(view->bytes ? view->bytes : 1);
            if (!copy ||
                PyBuffer_ToContiguous(copy, &view->buf, (Py_ssize_t)view->bytes, 'C') < 0) {
                free(copy);
                PyErr_Clear();
                task_fail(c, TASK_ERROR, "MemoryError", "gather '%s': out of memory", name);
                return -1;
            }
            PyBuffer_Release(&view->buf);
            view->buf.obj = NULL;
            view->buf.buf = copy; /* freed at release */
            out->data = copy;
        }
        return 0;
    }
    if (r == 1)
        PyBuffer_Release(&view->buf);
    free(view);
    if (!(out->skel = pyvalue_to_wire(v, &out->blobs, &err))) {
        task_fail(c, TASK_ERROR, "TypeError", "gather '%s': %s", name, err.message);
        return -1;
    }
    return 0;
}

static void fan_py_release(void *self, fan_value *v)
{
    (void)self;
    pyvalue_view *view = v->hold[1];
    if (view) {
        if (view->buf.obj)
            PyBuffer_Release(&view->buf);
        else
            free(view->buf.buf);
        free(view);
    }
    Py_XDECREF((PyObject *)v->hold[0]);
    json_decref(v->skel);
    blobs_free(&v->blobs);
    v->hold[0] = v->hold[1] = NULL;
    v->skel = NULL;
}

void py_op_fanout(task_ctx *c)
{
    py_runtime *rt = (py_runtime *)c->rt;
    const fan_ns ns = {rt, fan_py_assign, fan_py_read, fan_py_release};
    op_fanout(&ns, c, rt->fan);
}
