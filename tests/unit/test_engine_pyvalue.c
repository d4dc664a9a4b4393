/* test_engine_pyvalue.c — wire values <-> Python objects (engine/pyvalue.c)
 * in an embedded interpreter with NumPy. */
#include "pyvalue.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static PyObject *eval(const char *expr)
{
    PyObject *main = PyImport_AddModule("__main__");
    PyObject *g = PyModule_GetDict(main);
    PyObject *v = PyRun_String(expr, Py_eval_input, g, g);
    assert_non_null(v);
    return v;
}

static void json_round_trip(void **state)
{
    (void)state;
    const char *text = "{\"s\":\"h\\u00e9\",\"l\":[1,null,true,2.5],\"d\":{\"k\":{}},\"n\":null,"
                       "\"i\":-9223372036854775808}";
    json_t *in = json_loads(text, 0, NULL);
    ippc_error err;
    ippc_blobs blobs;
    blobs_init(&blobs);
    PyObject *v = pyvalue_from_wire(in, &blobs, &err);
    assert_non_null(v);
    assert_true(PyDict_Check(v));
    assert_true(PyList_GET_ITEM(PyDict_GetItemString(v, "l"), 1) == Py_None);
    json_t *out = pyvalue_to_wire(v, &blobs, &err);
    assert_non_null(out);
    assert_true(json_equal(in, out));
    assert_int_equal(blobs.count, 0);
    json_decref(out);
    json_decref(in);
    Py_DECREF(v);
}

/* An array placeholder steals its blob; the NumPy array sees those bytes,
 * and going back copies them into a new blob. */
static void array_steals_blob(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    double *data = malloc(6 * sizeof *data);
    for (int i = 0; i < 6; i++)
        data[i] = i * 1.5;
    blobs_push(&blobs, (unsigned char *)data, 6 * sizeof *data);
    size_t shape[2] = {2, 3};
    json_t *ph = value_nd_placeholder(ND_FLOAT64, 2, shape, 0);
    ippc_error err;
    PyObject *a = pyvalue_from_wire(ph, &blobs, &err);
    assert_non_null(a);
    assert_null(blobs.items[0].data); /* stolen, not copied */
    PyObject *main = PyModule_GetDict(PyImport_AddModule("__main__"));
    PyDict_SetItemString(main, "a", a);
    PyObject *check = eval("(a.shape, str(a.dtype), float(a[1, 2]), a.flags.writeable)");
    PyObject *want = eval("((2, 3), 'float64', 7.5, True)");
    assert_int_equal(PyObject_RichCompareBool(check, want, Py_EQ), 1);
    ippc_blobs out;
    blobs_init(&out);
    json_t *w = pyvalue_to_wire(a, &out, &err);
    assert_non_null(w);
    assert_int_equal(out.count, 1);
    assert_int_equal(out.items[0].len, 6 * sizeof(double));
    double last;
    memcpy(&last, out.items[0].data + 5 * sizeof last, sizeof last);
    assert_true(last == 7.5);
    /* a second use of the same blob is an error, not a double free */
    PyObject *again = pyvalue_from_wire(ph, &blobs, &err);
    assert_null(again);
    assert_non_null(strstr(err.message, "used twice"));
    json_decref(w);
    json_decref(ph);
    blobs_free(&out);
    blobs_free(&blobs);
    Py_DECREF(check);
    Py_DECREF(want);
    Py_DECREF(a);
    PyDict_DelItemString(main, "a");
}

static void scalars_and_errors(void **state)
{
    (void)state;
    ippc_error err;
    ippc_blobs blobs;
    blobs_init(&blobs);
    PyObject *v = eval("(__import__('numpy').array(120.0), __import__('numpy').int32(7), "
                       "float('nan'), (1, 2))");
    json_t *w = pyvalue_to_wire(v, &blobs, &err);
    assert_non_null(w);
    json_t *want = json_loads("[120.0, 7, null, [1, 2]]", 0, NULL);
    assert_true(json_equal(w, want));
    json_decref(want);
    json_decref(w);
    Py_DECREF(v);
    const char *bad[] = {"{1, 2}",    "b'x'",    "2 ** 70",
                         "{(1,): 2}", "[print]", "__import__('numpy').zeros(2, 'complex')"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        v = eval(bad[i]);
        assert_null(pyvalue_to_wire(v, &blobs, &err));
        assert_false(PyErr_Occurred());
        assert_int_equal(blobs.count, 0);
        Py_DECREF(v);
    }
    v = eval("[[1, 2], __import__('numpy').ones(3), [print]]"); /* the array's blob is undone */
    assert_null(pyvalue_to_wire(v, &blobs, &err));
    assert_int_equal(blobs.count, 0);
    Py_DECREF(v);
    v = eval("(lambda l: (l.append(l), l)[1])([])"); /* a cycle */
    assert_null(pyvalue_to_wire(v, &blobs, &err));
    assert_non_null(strstr(err.message, "deeper"));
    Py_DECREF(v);
    blobs_free(&blobs);
}

int main(void)
{
    Py_InitializeEx(0);
    if (pyvalue_open() < 0) {
        PyErr_Print();
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_round_trip),
        cmocka_unit_test(array_steals_blob),
        cmocka_unit_test(scalars_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
