/* pyvalue.h — wire values (skeleton + blobs, see value.h) <-> Python objects.
 *
 * wire -> Python: null -> None (also inside lists and dicts), booleans ->
 * bool, integers -> int, reals -> float, strings -> str, lists -> list,
 * objects -> dict; an ndarray placeholder -> a NumPy array over the blob's
 * bytes: the blob's data is stolen (items[k].data becomes NULL) and owned by
 * a small buffer object that the array keeps as its base, so no byte is
 * copied and the memory goes when the last array using it goes.
 * Python -> wire: None -> null, bool, int (within int64), float (NaN/Inf ->
 * null, as the Lua runtime), str (valid UTF-8), list and tuple -> list, dict
 * with str keys (int keys as decimal strings) -> object, NumPy arrays of
 * float64, float32, int64, int32, uint8 (bool as uint8) -> placeholder + a
 * contiguous copy of the bytes as a new blob; 0-d arrays and NumPy scalars
 * -> their Python scalar (so psum's 0-d result reads back as 120.0).
 * Anything else (functions, modules, sets, bytes, other dtypes), cycles and
 * nesting deeper than VALUE_MAX_DEPTH are errors.
 *
 * Threads: the thread that holds the GIL (the runtime's).  pyvalue_open
 * once after Py_Initialize (imports numpy).
 */
#ifndef IPPC_ENGINE_PYVALUE_H
#define IPPC_ENGINE_PYVALUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <jansson.h>

#include "error.h"
#include "value.h"

/* Imports numpy and readies the blob type; 0, or -1 with a Python error. */
int pyvalue_open(void);

/* A new reference to the Python value of skel, or NULL with err set
 * (ERR_INVALID: malformed placeholder, a blob used twice, too deep; or the
 * Python error's message) and no Python error pending.  Placeholders steal
 * their blob's data; blob ownership stays consistent on failure. */
PyObject *pyvalue_from_wire(const json_t *skel, ippc_blobs *blobs, ippc_error *err);

/* New skeleton for v; arrays are copied into new blobs appended to blobs.
 * NULL with err set if v cannot be sent (blobs appended by this call are
 * removed again); no Python error pending afterwards. */
json_t *pyvalue_to_wire(PyObject *v, ippc_blobs *blobs, ippc_error *err);

/* A NumPy array of dtype and shape over data (len bytes, malloc'd), which it
 * takes (freed with the array, or now on failure).  NULL + Python error. */
PyObject *pyvalue_array(unsigned char *data, size_t len, nd_dtype dtype, int ndim,
                        const size_t *shape);

/* 1 if v is a NumPy ndarray. */
int pyvalue_is_ndarray(PyObject *v);

/* An ndarray's bytes as the wire has them: dtype (bool as uint8), shape and
 * a view of its elements (PyObject_GetBuffer, strides allowed).  1 with view
 * filled (release with PyBuffer_Release), 0 if v is not an ndarray, -1 with
 * err set for an ndarray the wire cannot carry (another dtype, > 8 dims). */
typedef struct pyvalue_view {
    Py_buffer buf;
    nd_dtype dtype;
    int ndim;
    size_t shape[ND_MAX_DIMS];
    size_t bytes;
} pyvalue_view;
int pyvalue_view_of(PyObject *v, pyvalue_view *view, ippc_error *err);

/* The Python error pending as "Type: message" in err (cleared). */
void pyvalue_error_from_python(ippc_error *err, const char *prefix);

#endif
