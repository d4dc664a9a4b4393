/* pyvalue.c — wire values <-> Python objects (pyvalue.h).
 *
 * Arrays are NumPy's own (numpy.frombuffer over a pyvalue blob object, then
 * reshaped): the engine needs none of NumPy's C headers, only its Python
 * API, and the blob object is the one owner of the received bytes.
 */
#include "pyvalue.h"
#include "bigmem.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* numpy.frombuffer, numpy.ndarray, numpy.generic (new references, kept) */
static PyObject *np_frombuffer, *np_ndarray, *np_generic;

/* ------------------------------------------------------------ the blob type */

/* Owns bytes that NumPy arrays look at through the buffer protocol. */
typedef struct py_blob {
    PyObject_HEAD unsigned char *data;
    Py_ssize_t len;
} py_blob;

static int blob_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    py_blob *b = (py_blob *)self;
    return PyBuffer_FillInfo(view, self, b->data, b->len, 0, flags);
}

static void blob_dealloc(PyObject *self)
{
    bigmem_free(((py_blob *)self)->data);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs blob_as_buffer = {.bf_getbuffer = blob_getbuffer};

static PyTypeObject blob_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_ippc.blob",
    .tp_basicsize = sizeof(py_blob),
    .tp_dealloc = blob_dealloc,
    .tp_as_buffer = &blob_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "bytes received by the engine, owned here, seen by NumPy arrays",
};

int pyvalue_open(void)
{
    if (PyType_Ready(&blob_type) < 0)
        return -1;
    PyObject *np = PyImport_ImportModule("numpy");
    if (!np)
        return -1;
    np_frombuffer = PyObject_GetAttrString(np, "frombuffer");
    np_ndarray = PyObject_GetAttrString(np, "ndarray");
    np_generic = PyObject_GetAttrString(np, "generic");
    Py_DECREF(np);
    return np_frombuffer && np_ndarray && np_generic ? 0 : -1;
}

int pyvalue_is_ndarray(PyObject *v)
{
    return np_ndarray && PyObject_TypeCheck(v, (PyTypeObject *)np_ndarray);
}

PyObject *pyvalue_array(unsigned char *data, size_t len, nd_dtype dtype, int ndim,
                        const size_t *shape)
{
    py_blob *b = PyObject_New(py_blob, &blob_type);
    if (!b) {
        free(data);
        return NULL;
    }
    b->data = data;
    b->len = (Py_ssize_t)len;
    PyObject *flat =
        PyObject_CallFunction(np_frombuffer, "Os", (PyObject *)b, nd_dtype_name(dtype));
    Py_DECREF(b); /* the array holds it now */
    if (!flat)
        return NULL;
    PyObject *dims = PyTuple_New(ndim);
    for (int d = 0; dims && d < ndim; d++)
        PyTuple_SET_ITEM(dims, d, PyLong_FromSize_t(shape[d]));
    PyObject *arr = dims ? PyObject_CallMethod(flat, "reshape", "O", dims) : NULL;
    Py_XDECREF(dims);
    Py_DECREF(flat);
    return arr;
}

void pyvalue_error_from_python(ippc_error *err, const char *prefix)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    const char *tname = type ? ((PyTypeObject *)type)->tp_name : "Error";
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    ippc_error_set(err, ERR_INVALID, "%s%s%s: %s", prefix ? prefix : "", prefix ? ": " : "", tname,
                   msg ? msg : "?");
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
}

/* ------------------------------------------------------------ wire -> Python */

static PyObject *from_wire(const json_t *v, ippc_blobs *blobs, int depth, ippc_error *err)
{
    if (depth > VALUE_MAX_DEPTH) {
        ippc_error_set(err, ERR_INVALID, "value nested deeper than %d levels", VALUE_MAX_DEPTH);
        return NULL;
    }
    PyObject *out = NULL;
    switch (json_typeof(v)) {
    case JSON_NULL: return Py_NewRef(Py_None);
    case JSON_TRUE: return Py_NewRef(Py_True);
    case JSON_FALSE: return Py_NewRef(Py_False);
    case JSON_INTEGER: out = PyLong_FromLongLong((long long)json_integer_value(v)); break;
    case JSON_REAL: out = PyFloat_FromDouble(json_real_value(v)); break;
    case JSON_STRING:
        out = PyUnicode_FromStringAndSize(json_string_value(v), (Py_ssize_t)json_string_length(v));
        break;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        out = PyList_New((Py_ssize_t)n);
        for (size_t i = 0; out && i < n; i++) {
            PyObject *x = from_wire(json_array_get(v, i), blobs, depth + 1, err);
            if (!x) {
                Py_CLEAR(out);
                return NULL;
            }
            PyList_SET_ITEM(out, (Py_ssize_t)i, x);
        }
        break;
    }
    case JSON_OBJECT: {
        nd_ref ref;
        int r = value_nd_ref(v, blobs, &ref, err);
        if (r < 0)
            return NULL;
        if (r == 1) {
            ippc_blob *b = &blobs->items[ref.blob];
            if (!b->data) {
                ippc_error_set(err, ERR_INVALID, "array blob %zu is used twice", ref.blob);
                return NULL;
            }
            unsigned char *data = b->data;
            b->data = NULL; /* ours now: pyvalue_array frees it, even on failure */
            out = pyvalue_array(data, b->len, ref.dtype, ref.ndim, ref.shape);
            break;
        }
        out = PyDict_New();
        const char *key;
        json_t *x;
        json_object_foreach((json_t *)v, key, x) {
            if (!out)
                break;
            PyObject *item = from_wire(x, blobs, depth + 1, err);
            if (!item) {
                Py_CLEAR(out);
                return NULL;
            }
            int rc = PyDict_SetItemString(out, key, item);
            Py_DECREF(item);
            if (rc < 0)
                Py_CLEAR(out);
        }
        break;
    }
    }
    if (!out)
        pyvalue_error_from_python(err, NULL);
    return out;
}

PyObject *pyvalue_from_wire(const json_t *skel, ippc_blobs *blobs, ippc_error *err)
{
    ippc_blobs none;
    blobs_init(&none);
    return from_wire(skel, blobs ? blobs : &none, 0, err);
}

/* ------------------------------------------------------------ Python -> wire */

/* The wire dtype of a buffer format ("d", "<f8"-like prefixes stripped). */
static int dtype_of_format(const char *fmt, size_t itemsize)
{
    if (!fmt)
        return ND_UINT8;
    if (*fmt == '@' || *fmt == '=' || *fmt == '<')
        fmt++;
    if (fmt[0] == '\0' || fmt[1] != '\0')
        return -1;
    switch (fmt[0]) {
    case 'd': return itemsize == 8 ? ND_FLOAT64 : -1;
    case 'f': return itemsize == 4 ? ND_FLOAT32 : -1;
    case 'l':
    case 'q': return itemsize == 8 ? ND_INT64 : -1;
    case 'i': return itemsize == 4 ? ND_INT32 : -1;
    case 'B':
    case '?': return itemsize == 1 ? ND_UINT8 : -1;
    default: return -1;
    }
}

int pyvalue_view_of(PyObject *v, pyvalue_view *view, ippc_error *err)
{
    if (!pyvalue_is_ndarray(v))
        return 0;
    memset(view, 0, sizeof *view);
    if (PyObject_GetBuffer(v, &view->buf, PyBUF_RECORDS_RO) < 0) {
        pyvalue_error_from_python(err, "cannot read the array");
        return -1;
    }
    int dtype = dtype_of_format(view->buf.format, (size_t)view->buf.itemsize);
    if (dtype < 0 || view->buf.ndim > ND_MAX_DIMS) {
        PyObject *d = PyObject_GetAttrString(v, "dtype");
        PyObject *ds = d ? PyObject_Str(d) : NULL;
        const char *name = ds ? PyUnicode_AsUTF8(ds) : NULL;
        if (dtype < 0)
            ippc_error_set(err, ERR_INVALID,
                           "cannot send a numpy array of dtype %s (float64, float32, int64, "
                           "int32, uint8 and bool travel)",
                           name ? name : "?");
        else
            ippc_error_set(err, ERR_INVALID, "cannot send an array of more than %d dimensions",
                           ND_MAX_DIMS);
        Py_XDECREF(ds);
        Py_XDECREF(d);
        PyErr_Clear();
        PyBuffer_Release(&view->buf);
        return -1;
    }
    view->dtype = (nd_dtype)dtype;
    view->ndim = view->buf.ndim;
    for (int d = 0; d < view->ndim; d++)
        view->shape[d] = (size_t)view->buf.shape[d];
    view->bytes = (size_t)view->buf.len;
    return 1;
}

static json_t *to_wire(PyObject *v, ippc_blobs *blobs, int depth, ippc_error *err);

static json_t *array_to_wire(PyObject *v, ippc_blobs *blobs, ippc_error *err)
{
    pyvalue_view view;
    int r = pyvalue_view_of(v, &view, err);
    if (r == 0)
        ippc_error_set(err, ERR_INVALID, "cannot send a %s value", Py_TYPE(v)->tp_name);
    if (r != 1)
        return NULL;
    if (view.ndim == 0) { /* a 0-d array is its scalar */
        PyBuffer_Release(&view.buf);
        PyObject *item = PyObject_CallMethod(v, "item", NULL);
        if (!item) {
            pyvalue_error_from_python(err, NULL);
            return NULL;
        }
        json_t *out = to_wire(item, blobs, 0, err);
        Py_DECREF(item);
        return out;
    }
    unsigned char *copy = malloc(view.bytes ? view.bytes : 1);
    if (!copy || PyBuffer_ToContiguous(copy, &view.buf, (Py_ssize_t)view.bytes, 'C') < 0) {
        free(copy);
        PyBuffer_Release(&view.buf);
        PyErr_Clear();
        ippc_error_set(err, ERR_INTERNAL, "out of memory for %zu bytes", view.bytes);
        return NULL;
    }
    PyBuffer_Release(&view.buf);
    long k = blobs_push(blobs, copy, view.bytes); /* takes copy */
    if (k < 0) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    json_t *ph = value_nd_placeholder(view.dtype, view.ndim, view.shape, (size_t)k);
    if (!ph)
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
    return ph;
}

static json_t *sequence_to_wire(PyObject *v, ippc_blobs *blobs, int depth, ippc_error *err)
{
    PyObject *seq = PySequence_Fast(v, "not a sequence");
    if (!seq) {
        pyvalue_error_from_python(err, NULL);
        return NULL;
    }
    json_t *out = json_array();
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        json_t *x = to_wire(PySequence_Fast_GET_ITEM(seq, i), blobs, depth + 1, err);
        if (!x || json_array_append_new(out, x) < 0) {
            json_decref(out);
            out = NULL;
        }
    }
    Py_DECREF(seq);
    return out;
}

static json_t *dict_to_wire(PyObject *v, ippc_blobs *blobs, int depth, ippc_error *err)
{
    json_t *out = json_object();
    PyObject *key, *item;
    Py_ssize_t pos = 0;
    while (out && PyDict_Next(v, &pos, &key, &item)) {
        char num[32];
        const char *k = NULL;
        Py_ssize_t klen = 0;
        if (PyUnicode_Check(key)) {
            k = PyUnicode_AsUTF8AndSize(key, &klen);
            if (!k) {
                pyvalue_error_from_python(err, "a dict key");
                goto fail;
            }
        } else if (PyLong_Check(key) && !PyBool_Check(key)) {
            int overflow = 0;
            long long x = PyLong_AsLongLongAndOverflow(key, &overflow);
            if (overflow || (x == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                ippc_error_set(err, ERR_INVALID, "a dict key is an integer beyond 64 bits");
                goto fail;
            }
            klen = snprintf(num, sizeof num, "%lld", x);
            k = num;
        } else {
            ippc_error_set(err, ERR_INVALID,
                           "cannot send a dict with a %s key (str or int keys travel)",
                           Py_TYPE(key)->tp_name);
            goto fail;
        }
        json_t *x = to_wire(item, blobs, depth + 1, err);
        if (!x || json_object_setn_new(out, k, (size_t)klen, x) < 0) {
            if (x)
                ippc_error_set(err, ERR_INVALID, "a dict key is not valid UTF-8");
            goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static json_t *to_wire(PyObject *v, ippc_blobs *blobs, int depth, ippc_error *err)
{
    if (depth > VALUE_MAX_DEPTH) {
        ippc_error_set(err, ERR_INVALID, "value nested deeper than %d levels (or a cycle)",
                       VALUE_MAX_DEPTH);
        return NULL;
    }
    json_t *out = NULL;
    if (v == Py_None)
        return json_null();
    if (PyBool_Check(v))
        return json_boolean(v == Py_True);
    if (PyLong_Check(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            ippc_error_set(err, ERR_INVALID, "cannot send an integer beyond 64 bits");
            return NULL;
        }
        out = json_integer((json_int_t)x);
    } else if (PyFloat_Check(v)) {
        double x = PyFloat_AS_DOUBLE(v);
        out = isfinite(x) ? json_real(x) : json_null();
    } else if (PyUnicode_Check(v)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (!s) {
            pyvalue_error_from_python(err, "cannot send a str");
            return NULL;
        }
        out = json_stringn(s, (size_t)n);
    } else if (pyvalue_is_ndarray(v)) {
        return array_to_wire(v, blobs, err);
    } else if (np_generic && PyObject_TypeCheck(v, (PyTypeObject *)np_generic)) {
        PyObject *item = PyObject_CallMethod(v, "item", NULL);
        if (!item) {
            pyvalue_error_from_python(err, NULL);
            return NULL;
        }
        if (PyObject_TypeCheck(item, (PyTypeObject *)np_generic) || item == v) {
            ippc_error_set(err, ERR_INVALID, "cannot send a %s value", Py_TYPE(v)->tp_name);
            Py_DECREF(item);
            return NULL;
        }
        out = to_wire(item, blobs, depth, err);
        Py_DECREF(item);
        return out;
    } else if (PyList_Check(v) || PyTuple_Check(v)) {
        return sequence_to_wire(v, blobs, depth, err);
    } else if (PyDict_Check(v)) {
        return dict_to_wire(v, blobs, depth, err);
    } else {
        ippc_error_set(err, ERR_INVALID, "cannot send a %s value", Py_TYPE(v)->tp_name);
        return NULL;
    }
    if (!out)
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
    return out;
}

json_t *pyvalue_to_wire(PyObject *v, ippc_blobs *blobs, ippc_error *err)
{
    size_t first = blobs->count;
    json_t *out = to_wire(v, blobs, 0, err);
    if (!out)
        while (blobs->count > first) /* nothing refers to them */
            free(blobs->items[--blobs->count].data);
    return out;
}
