/* test_engine_nd.c — the `nd` module: constructors, reductions, indexing,
 * arithmetic, repr, bad arguments, and the C API the engine uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lualib.h>
#include <mpi.h>

#include "nd.h"

static int setup(void **state)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nd", luaopen_nd, 1);
    lua_pop(L, 1);
    *state = L;
    return 0;
}

static int teardown(void **state)
{
    lua_close(*state);
    return 0;
}

/* Runs Lua code that uses assert(); fails the test with Lua's message. */
static void lua_ok(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK)
        fail_msg("Lua error: %s\n--- in:\n%s", lua_tostring(L, -1), code);
    lua_settop(L, 0);
}

/* Runs Lua code that must raise an error mentioning needle. */
static void lua_fails(lua_State *L, const char *code, const char *needle)
{
    if (luaL_dostring(L, code) == LUA_OK)
        fail_msg("expected an error from: %s", code);
    const char *msg = lua_tostring(L, -1);
    if (!msg || !strstr(msg, needle))
        fail_msg("error '%s' does not mention '%s' (code: %s)", msg ? msg : "(null)", needle, code);
    lua_settop(L, 0);
}

static void test_constructors(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local a = nd.zeros(4)\n"
              "assert(a:dtype() == 'float64' and #a == 4 and a:sum() == 0)\n"
              "local s = nd.zeros({2, 3}, 'int32'):shape()\n"
              "assert(#s == 2 and s[1] == 2 and s[2] == 3)\n"
              "local o = nd.ones(3, 'uint8')\n"
              "assert(o:dtype() == 'uint8' and o:sum() == 3 and math.type(o:sum()) == 'integer')\n"
              "assert(nd.ones({2, 2}):sum() == 4.0)\n");
    lua_ok(L, "local a = nd.arange(16)\n"
              "assert(a:dtype() == 'int64' and #a == 16 and a[1] == 0 and a[16] == 15)\n"
              "local t = nd.arange(5, 0, -2):totable()\n"
              "assert(#t == 3 and t[1] == 5 and t[2] == 3 and t[3] == 1)\n"
              "local f = nd.arange(0, 1, 0.25)\n"
              "assert(f:dtype() == 'float64' and #f == 4 and f[4] == 0.75)\n"
              "assert(#nd.arange(3, 3) == 0 and #nd.arange(5, 1) == 0)\n"
              "assert(nd.arange(4, 'float32'):dtype() == 'float32')\n");
    lua_ok(L, "local l = nd.linspace(0, 1, 5):totable()\n"
              "assert(#l == 5 and l[1] == 0 and l[2] == 0.25 and l[5] == 1)\n"
              "assert(#nd.linspace(0, 1, 0) == 0 and nd.linspace(2, 3, 1)[1] == 2)\n");
    lua_ok(L, "local a = nd.array({1, 2, 3})\n"
              "assert(a:dtype() == 'int64' and a:sum() == 6)\n"
              "assert(nd.array({1, 2.5}):dtype() == 'float64')\n"
              "assert(nd.array({1, 2}, 'float32'):dtype() == 'float32')\n"
              "assert(nd.array({1.9, -1.9}, 'int32'):totable()[2] == -1)\n"
              "local m = nd.array({{1, 2, 3}, {4, 5, 6}})\n"
              "local s = m:shape()\n"
              "assert(#s == 2 and s[1] == 2 and s[2] == 3 and m:sum() == 21)\n"
              "local t = m:totable()\n"
              "assert(t[2][3] == 6 and math.type(t[2][3]) == 'integer')\n"
              "local e = nd.array({})\n"
              "assert(#e == 0 and e:dtype() == 'float64')\n"
              "local c = nd.array(a, 'float64')\n"
              "assert(c:dtype() == 'float64' and c[3] == 3.0)\n"
              "c[1] = 100\n"
              "assert(a[1] == 1)  -- a copy, not a view\n");
}

static void test_reductions(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local s = nd.arange(16):sum()\n"
              "assert(s == 120 and math.type(s) == 'integer')\n"
              "local f = nd.linspace(0, 1, 5):sum()\n"
              "assert(f == 2.5 and math.type(f) == 'float')\n"
              "assert(nd.array({0.5, 0.25}, 'float32'):sum() == 0.75)\n"
              "assert(nd.array({3, -7, 5}):min() == -7 and nd.array({3, -7, 5}):max() == 5)\n"
              "assert(math.type(nd.array({3, -7}):min()) == 'integer')\n"
              "assert(nd.array({1.5, -2.5}):min() == -2.5)\n"
              "assert(nd.arange(5):mean() == 2.0)\n"
              "assert(nd.array({1, 2}, 'uint8'):mean() == 1.5)\n"
              "local m = nd.array({1, 0/0, 3}):max()\n"
              "assert(m ~= m)  -- NaN propagates\n"
              "assert(nd.ones({3, 4}, 'int32'):sum() == 12)\n"
              "local n = nd.zeros(0):mean()\n"
              "assert(n ~= n)\n");
    lua_fails(L, "return nd.zeros(0):min()", "empty");
    lua_fails(L, "return nd.zeros(0):max()", "empty");
}

static void test_indexing(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local a = nd.arange(4)\n"
              "assert(a[1] == 0 and a[4] == 3 and math.type(a[2]) == 'integer')\n"
              "a[2] = 10\n"
              "assert(a[2] == 10 and a:sum() == 15)\n"
              "a[3] = 2.0\n"
              "assert(a[3] == 2 and math.type(a[3]) == 'integer')\n"
              "local f = nd.zeros(2)\n"
              "f[1] = 7\n"
              "assert(f[1] == 7.0 and math.type(f[1]) == 'float')\n"
              "local u = nd.zeros(1, 'uint8')\n"
              "u[1] = 257\n"
              "assert(u[1] == 1)  -- wraps like a C cast\n"
              "assert(a.nosuchmethod == nil)\n");
    lua_fails(L, "local a = nd.arange(4) return a[0]", "out of range");
    lua_fails(L, "local a = nd.arange(4) return a[5]", "out of range");
    lua_fails(L, "local a = nd.arange(4) return a[-5]", "out of range");
    lua_fails(L, "local a = nd.arange(4) a[5] = 1", "out of range");
    lua_fails(L, "local a = nd.arange(4) return a[1.5]", "integer");
    lua_fails(L, "local a = nd.arange(4) return a[true]", "integer");
    lua_fails(L, "local a = nd.arange(4) a[1] = 'x'", "number");
    lua_fails(L, "local a = nd.arange(4) a.x = 1", "cannot set field");
    lua_fails(L, "return #nd.array(3)", "0-d");

    /* n-D: a[i] is a view of row i, sharing memory */
    lua_ok(L, "local m = nd.arange(6):reshape(2, 3)\n"
              "local r = m[2]\n"
              "assert(#r == 3 and r[1] == 3 and r:sum() == 12)\n"
              "r[1] = 30\n"
              "assert(m[2][1] == 30)\n"
              "m[1] = 0\n"
              "assert(m:sum() == 30 + 4 + 5)\n"
              "m[1] = nd.array({1, 2, 3}, 'float64')\n"
              "assert(m[1][3] == 3)\n"
              "m = nil r = nil collectgarbage()\n");
    lua_fails(L, "local m = nd.zeros({2, 3}) m[1] = nd.zeros(2)", "broadcast");
}

static void test_arithmetic(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local a = nd.arange(4)\n"
              "local b = a + 1\n"
              "assert(b:dtype() == 'int64' and b:sum() == 10)\n"
              "local c = a + 1.5\n"
              "assert(c:dtype() == 'float64' and c[1] == 1.5)\n"
              "assert((a * a):sum() == 14 and (a * a):dtype() == 'int64')\n"
              "local d = a / 2\n"
              "assert(d:dtype() == 'float64' and d[2] == 0.5)\n"
              "local e = 10 - a\n"
              "assert(e[1] == 10 and e[4] == 7)\n"
              "assert((2 * a)[4] == 6 and (12 / (a + 1))[4] == 3.0)\n"
              "assert((a - a):sum() == 0)\n"
              "assert((-a)[4] == -3)\n"
              "assert((a + nd.arange(4, 'int32')):dtype() == 'int64')\n"
              "assert((nd.arange(4, 'int32') + 1):dtype() == 'int32')\n"
              "assert((nd.arange(4, 'float32') + 1.0):dtype() == 'float32')\n"
              "assert((nd.arange(4, 'float32') + nd.arange(4)):dtype() == 'float64')\n"
              "assert((nd.arange(4, 'uint8') + nd.arange(4, 'float32')):dtype() == 'float32')\n"
              "assert((a + nd.linspace(0, 3, 4)):dtype() == 'float64')\n"
              "local u = nd.array({250}, 'uint8') + 10\n"
              "assert(u[1] == 4)  -- wraps\n"
              "local big = nd.array({math.maxinteger}) + 1\n"
              "assert(big[1] == math.mininteger)  -- wraps, no UB\n"
              "local m = nd.ones({2, 2}) * nd.ones({2, 2})\n"
              "assert(m:sum() == 4)\n");
    lua_fails(L, "return nd.arange(4) + nd.arange(3)", "cannot be broadcast");
    lua_fails(L, "return nd.zeros({2, 2}) + nd.zeros(4)", "cannot be broadcast");
    lua_fails(L, "return nd.arange(4) + 'x'", "string");
    lua_fails(L, "return {} * nd.arange(4)", "table");
}

static void test_tostring(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "assert(tostring(nd.arange(4)) == 'nd.array([0, 1, 2, 3])')\n"
              "assert(tostring(nd.array({0.5, 1})) == 'nd.array([0.5, 1. ])')\n"
              "assert(tostring(nd.array({{1, 2}, {3, 4}}, 'int32')) ==\n"
              "       'nd.array([[1, 2],\\n          [3, 4]], dtype=int32)')\n"
              "assert(tostring(nd.zeros(0)) == 'nd.array([], dtype=float64)')\n"
              "assert(tostring(nd.array(5)) == 'nd.array(5)')\n"
              "assert(tostring(nd.array({1/0, -1/0, 0/0})) == 'nd.array([ inf, -inf,  nan])')\n"
              "local s = tostring(nd.arange(5000))\n"
              "assert(s == 'nd.array([   0,    1,    2, ..., 4997, 4998, 4999])', s)\n");
}

static void test_methods(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local a = nd.arange(12)\n"
              "local m = a:reshape({3, 4})\n"
              "assert(m:shape()[1] == 3 and m:shape()[2] == 4 and m:size() == 12)\n"
              "assert(a:reshape(2, -1):shape()[2] == 6)\n"
              "m[1][1] = 99\n"
              "assert(a[1] == 99)  -- reshape is a view\n"
              "local c = a:copy()\n"
              "c[1] = 0\n"
              "assert(a[1] == 99)\n"
              "local f = a:astype('float32')\n"
              "assert(f:dtype() == 'float32' and f[2] == 1.0)\n"
              "assert(getmetatable(a) == 'nd array')\n");
    lua_fails(L, "return nd.arange(12):reshape(5, 3)", "reshape");
    lua_fails(L, "return nd.arange(12):reshape(5, -1)", "infer");
    lua_fails(L, "return nd.arange(4):astype('complex128')", "unknown dtype");
}

static void test_bad_arguments(void **state)
{
    lua_State *L = *state;
    lua_fails(L, "return nd.zeros(-1)", "non-negative");
    lua_fails(L, "return nd.zeros('x')", "shape");
    lua_fails(L, "return nd.zeros(3, 'complex')", "unknown dtype 'complex'");
    lua_fails(L, "return nd.zeros({1, 2, 3, 4, 5, 6, 7, 8, 9})", "too many dimensions");
    lua_fails(L, "return nd.zeros({1.5})", "non-negative integers");
    lua_fails(L, "return nd.zeros({1e9, 1e9, 1e9})", "too large");
    lua_fails(L, "return nd.zeros({1000000000, 1000000000, 1000000000})", "too large");
    lua_fails(L, "return nd.arange(0, 10, 0)", "step");
    lua_fails(L, "return nd.arange()", "arange");
    lua_fails(L, "return nd.arange(0, 1/0, 0.5)", "too many");
    lua_fails(L, "return nd.arange(0/0)", "finite");
    lua_fails(L, "return nd.linspace(0, 1, -1)", "non-negative");
    lua_fails(L, "return nd.array({1, 'x'})", "numbers");
    lua_fails(L, "return nd.array({{1, 2}, {3}})", "ragged");
    lua_fails(L, "return nd.array({{1, 2}, 3})", "ragged");
    lua_fails(L, "return nd.array(true)", "table expected");
    lua_fails(L, "local t = {} t[1] = t return nd.array(t)", "dimensions");
    lua_fails(L, "return nd.arange(4).sum()", "nd array expected");
    lua_fails(L, "return nd.arange(4).sum({})", "nd array expected");
}

static void test_c_api(void **state)
{
    lua_State *L = *state;
    size_t shape[2] = {2, 3};
    nd_array *a = nd_push_new(L, ND_INT32, 2, shape);
    assert_non_null(a);
    assert_ptr_equal(nd_test(L, -1), a);
    assert_int_equal(nd_dtype_of(a), ND_INT32);
    assert_int_equal(nd_ndim(a), 2);
    assert_int_equal(nd_shape(a)[1], 3);
    assert_int_equal(nd_count(a), 6);
    assert_int_equal(nd_bytes(a), 24);
    int32_t *p = nd_data(a);
    for (int i = 0; i < 6; i++)
        assert_int_equal(p[i], 0);
    lua_setglobal(L, "m");

    size_t n = 4;
    double *data = malloc(4 * sizeof *data);
    for (int i = 0; i < 4; i++)
        data[i] = i * 0.5;
    nd_array *b = nd_push_adopt(L, ND_FLOAT64, 1, &n, (unsigned char *)data);
    assert_ptr_equal(nd_data(b), data); /* zero-copy */
    lua_setglobal(L, "b");
    lua_ok(L, "assert(b:sum() == 3.0 and b[4] == 1.5 and m:dtype() == 'int32')");

    lua_pushinteger(L, 3);
    assert_null(nd_test(L, -1));
    lua_newtable(L);
    assert_null(nd_test(L, -1));
    lua_newuserdatauv(L, 16, 0);
    assert_null(nd_test(L, -1));
    lua_settop(L, 0);

    /* a retained buffer outlives its array */
    lua_getglobal(L, "b");
    nd_array *bb = nd_test(L, -1);
    nd_buffer *buf = nd_buffer_retain(bb);
    double *keep = nd_data(bb);
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_setglobal(L, "b");
    lua_gc(L, LUA_GCCOLLECT);
    assert_true(keep[3] == 1.5);
    nd_buffer_release(buf);

    /* adopt of an empty array may take NULL */
    size_t zero = 0;
    nd_array *e = nd_push_adopt(L, ND_UINT8, 1, &zero, NULL);
    assert_int_equal(nd_count(e), 0);
    lua_settop(L, 0);
}

static void test_gc_pressure(void **state)
{
    /* 200 x 8 MiB temporaries: the collector must run because of nd memory */
    lua_ok(*state, "for i = 1, 200 do local a = nd.zeros(1024 * 1024) end");
}

int main(void)
{
    MPI_Init(NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_constructors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reductions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indexing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arithmetic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tostring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_c_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_pressure, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Finalize();
    return failed;
}
