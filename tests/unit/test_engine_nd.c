/* test_engine_nd.c — the `nd` module: constructors, reductions (whole and
 * along an axis), indexing, slices and views, broadcasting arithmetic,
 * comparisons, math functions, dot/matmul, fill/axpy, repr, bad arguments,
 * the big-block cache, and the C API the engine uses. */
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

#include "bigmem.h"
#include "nd.h"

#include "engine_harness.h"

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

static void test_more_constructors(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local f = nd.full({2, 3}, 7)\n"
              "assert(f:dtype() == 'int64' and f:sum() == 42 and f:shape()[2] == 3)\n"
              "assert(nd.full(3, 0.5):dtype() == 'float64' and nd.full(3, 0.5):sum() == 1.5)\n"
              "assert(nd.full(2, 300, 'uint8')[1] == 44)  -- wraps like a C cast\n"
              "assert(nd.full(0, 1):size() == 0)\n"
              "local e = nd.empty({4, 2}, 'int32')\n"
              "assert(e:dtype() == 'int32' and e:size() == 8)\n"
              "assert(nd.empty(3):dtype() == 'float64')\n"
              "local r = nd.random({100, 10}, 42)\n"
              "assert(r:dtype() == 'float64' and r:shape()[1] == 100)\n"
              "assert(r:min() >= 0 and r:max() < 1 and math.abs(r:mean() - 0.5) < 0.05)\n"
              "assert(nd.random(5, 42):eq(nd.random(5, 42)):sum() == 5, 'same seed')\n"
              "assert(nd.random(5, 42):eq(nd.random(5, 43)):sum() == 0, 'other seed')\n"
              "assert(nd.random(4):size() == 4 and nd.random(4):ne(nd.random(4)):sum() > 0)\n"
              "assert(nd.random(3, 1):totable()[1] == nd.random(3, 1):totable()[1])\n"
              "local a = nd.arange(2, 11, 3)\n"
              "assert(#a == 3 and a[3] == 8)\n"
              "local neg = nd.arange(-1.0, -2.0, -0.25)\n"
              "assert(#neg == 4 and neg[4] == -1.75)\n"
              "assert(#nd.arange(0) == 0 and nd.linspace(1, 1, 3):sum() == 3)\n"
              "local z = nd.array(2.5) assert(z:ndim() == 0 and z:size() == 1)\n");
    lua_fails(L, "return nd.full(3)", "number expected");
    lua_fails(L, "return nd.full(3, 1, 'x')", "unknown dtype");
    lua_fails(L, "return nd.random(3, 'x')", "number expected");
    lua_fails(L, "return nd.empty(-2)", "non-negative");
}

static void test_axis_reductions(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local m = nd.arange(12):reshape(3, 4)  -- [[0..3],[4..7],[8..11]]\n"
              "local s1, s2 = m:sum(1), m:sum(2)\n"
              "assert(s1:dtype() == 'int64' and #s1 == 4 and s1[1] == 12 and s1[4] == 21)\n"
              "assert(#s2 == 3 and s2[1] == 6 and s2[3] == 38)\n"
              "assert(m:sum(-1)[2] == 22, 'negative axis')\n"
              "local p = m:prod(2)\n"
              "assert(p[1] == 0 and p[2] == 840 and p[3] == 7920)\n"
              "assert(m:min(1)[3] == 2 and m:max(2)[2] == 7)\n"
              "assert(m:min(2):dtype() == 'int64' and nd.ones({2, 2}, 'uint8'):max(1):dtype() == "
              "'uint8')\n"
              "local mean = m:mean(1)\n"
              "assert(mean:dtype() == 'float64' and mean[1] == 4.0 and mean[4] == 7.0)\n"
              "assert(math.abs(m:std(1)[1] - math.sqrt(32 / 3)) < 1e-12)\n"
              "assert(math.abs(m:std(1, 1)[1] - 4.0) < 1e-12, 'ddof 1')\n"
              "assert(math.abs(m:std() - 3.452052529534663) < 1e-12)\n"
              "assert(math.abs(nd.array({1, 2, 3, 4}):std(nil, 1) - 1.2909944487358056) < 1e-12)\n"
              "local am = nd.array({{3, 9, 1}, {7, 2, 8}})\n"
              "assert(am:argmax() == 2 and am:argmin() == 3, '1-based flat indices')\n"
              "local a1, a2 = am:argmax(1), am:argmin(2)\n"
              "assert(a1:dtype() == 'int64' and a1[1] == 2 and a1[2] == 1 and a1[3] == 2)\n"
              "assert(a2[1] == 3 and a2[2] == 2)\n"
              "local f32 = nd.ones({2, 3}, 'float32')\n"
              "assert(f32:sum(1):dtype() == 'float32' and f32:mean(2):dtype() == 'float32')\n"
              "assert(f32:sum(2)[1] == 3.0)\n"
              "assert(nd.ones(3, 'int32'):sum(1) :ndim() == 0 and nd.ones(3, "
              "'int32'):sum(1):totable() == 3)\n"
              "local cube = nd.arange(24):reshape(2, 3, 4)\n"
              "local c2 = cube:sum(2)\n"
              "assert(c2:shape()[1] == 2 and c2:shape()[2] == 4 and c2[2][4] == 15 + 19 + 23)\n"
              "assert(cube:max(3)[2][3] == 23 and cube:argmin(1)[3][4] == 1)\n"
              "local t = m:T()  -- strided input\n"
              "assert(t:sum(1)[3] == 38 and t:sum(2)[1] == 12)\n"
              "local nan = nd.array({{1, 0/0}, {3, 4}})\n"
              "local mx = nan:max(2) assert(mx[1] ~= mx[1] and mx[2] == 4)\n"
              "assert(nan:argmax(2)[1] == 2, 'NaN is what argmax reports')\n"
              "local big = nd.array({math.maxinteger, 1}) assert(big:sum() == math.mininteger)\n"
              "assert(nd.zeros({0, 3}):sum(1):size() == 3 and nd.zeros({0, 3}):sum(1)[1] == 0)\n"
              "assert(nd.zeros({2, 0}):prod(2)[1] == 1)\n"
              "local e = nd.zeros(0):std() assert(e ~= e)\n");
    lua_fails(L, "return nd.arange(4):sum(2)", "axis 2 out of range");
    lua_fails(L, "return nd.arange(4):sum(0)", "axes are 1-based");
    lua_fails(L, "return nd.zeros({3, 0}):max(2)", "empty");
    lua_fails(L, "return nd.zeros(0):argmin()", "empty");
    lua_fails(L, "return nd.arange(4):sum('x')", "number expected");
}

static void test_slices_and_views(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local a = nd.arange(10)\n"
              "local s = a:slice(2, 5)\n"
              "assert(#s == 4 and s[1] == 1 and s[4] == 4, 'inclusive 1-based bounds')\n"
              "s[1] = 100 assert(a[2] == 100, 'a slice is a view') a[2] = 1\n"
              "local st = a:slice(1, 10, 3)\n"
              "assert(#st == 4 and st[2] == 3 and st[4] == 9)\n"
              "st:fill(-1) assert(a[4] == -1 and a[5] == 4 and a:sum() == 45 - 0 - 3 - 6 - 9 - 4)\n"
              "a = nd.arange(10)\n"
              "local r = a:slice(nil, nil, -1)\n"
              "assert(r[1] == 9 and r[10] == 0 and r:sum() == 45)\n"
              "assert(#a:slice(-3) == 3 and a:slice(-3)[1] == 7)\n"
              "assert(#a:slice(5, 1) == 0 and #a:slice(100, 200) == 0)\n"
              "assert(#a:slice(-100, 3) == 3, 'clamped like string.sub')\n"
              "assert(#a:slice(8, 2, -2) == 4 and a:slice(8, 2, -2)[4] == 1)\n"
              "local m = nd.arange(12):reshape(3, 4)\n"
              "local cols = m:slice(2, 3, 1, 2)\n"
              "assert(cols:shape()[1] == 3 and cols:shape()[2] == 2 and cols[3][2] == 10)\n"
              "cols:fill(0) assert(m:sum() == 66 - (1 + 2 + 5 + 6 + 9 + 10))\n"
              "m = nd.arange(12):reshape(3, 4)\n"
              "local t = m:T()\n"
              "assert(t:shape()[1] == 4 and t:shape()[2] == 3 and t[2][3] == 9)\n"
              "t[4][1] = 77 assert(m[1][4] == 77, 'T shares memory')\n"
              "local tt = t:T() assert(tt[1][4] == 77 and tt:shape()[1] == 3)\n"
              "local row = t[3] assert(#row == 3 and row[2] == 6 and row:sum() == 18)\n"
              "local flat = t:reshape(-1) assert(#flat == 12 and flat[2] == 0 + 4)\n"
              "flat[1] = 5 assert(m[1][1] == 0, 'reshape of a strided array copies')\n"
              "local c = t:copy() c[1][1] = 9 assert(m[1][1] == 0)\n"
              "local tb = t:totable() assert(tb[4][1] == 77 and #tb == 4 and #tb[1] == 3)\n"
              "assert(nd.array(t):totable()[4][1] == 77 and t:astype('float32')[4][1] == 77)\n"
              "local v = nd.arange(6):reshape(2, 3)[2]\n"
              "v[-1] = 50 assert(v[3] == 50)\n"
              "assert(nd.zeros({3, 4}):T():T():sum() == 0)\n"
              "local ss = nd.arange(20):slice(1, 20, 2):slice(2, 10, 3)\n"
              "assert(ss:totable()[1] == 2 and ss:totable()[3] == 14, 'slice of a slice')\n");
    lua_fails(L, "return nd.arange(4):slice(1, 2, 0)", "step");
    lua_fails(L, "return nd.array(3):slice(1, 2)", "0-d");
    lua_fails(L, "return nd.arange(4):slice(1, 2, 1, 3)", "axis");
    lua_fails(L, "return nd.arange(4):slice('a')", "number expected");
}

static void test_broadcasting(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local col = nd.arange(3):reshape(3, 1)\n"
              "local row = nd.arange(4)\n"
              "local g = col * 10 + row\n"
              "assert(g:shape()[1] == 3 and g:shape()[2] == 4 and g[3][4] == 23)\n"
              "local m = nd.ones({2, 3}) + nd.array({1, 2, 3})\n"
              "assert(m[2][3] == 4.0 and m:sum() == 2 * (2 + 3 + 4))\n"
              "assert((nd.arange(3) + nd.array(10)):totable()[3] == 12, '0-d array')\n"
              "assert((nd.array({5}) - nd.arange(3))[3] == 3, 'one-element array')\n"
              "local cube = nd.zeros({2, 3, 4}) + nd.arange(4)\n"
              "assert(cube[2][3][4] == 3 and cube:sum() == 6 * 6)\n"
              "local t = nd.arange(6):reshape(2, 3):T() + nd.array({100, 200})\n"
              "assert(t[3][2] == 205, 'strided operand')\n"
              "local z = nd.zeros({0, 3}) + nd.arange(3) assert(z:size() == 0)\n");
    lua_fails(L, "return nd.ones({2, 3}) + nd.ones(2)", "(2, 3) and (2,) cannot be broadcast");
    lua_fails(L, "return nd.ones({2, 3}) * nd.ones({3, 2})", "cannot be broadcast for '*'");
    lua_fails(L, "return nd.ones({2, 3}):fill(nd.ones(3, 'int32'):reshape(3, 1))", "broadcast");
}

static void test_more_arithmetic(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local a = nd.arange(-5, 5)\n"
              "local q, r = a // 3, a % 3\n"
              "assert(q:dtype() == 'int64' and q[1] == -2 and q[10] == 1, 'floor division')\n"
              "assert(r[1] == 1 and r[3] == 0 and r[10] == 1, 'modulo takes the divisor sign')\n"
              "for i = 1, #a do assert(q[i] * 3 + r[i] == a[i]) end\n"
              "assert((a % -3)[1] == -2 and (a // -3)[1] == 1)\n"
              "local f = nd.arange(-5.0, 5)\n"
              "assert((f % 3)[1] == 1.0 and (f // 3)[1] == -2.0 and (f % 3):dtype() == 'float64')\n"
              "assert((f % 3)[3] == 0 and 1 / (f % 3)[3] > 0, 'zero remainder is +0 for a positive "
              "divisor')\n"
              "local z = nd.arange(5) // 0 assert(z:sum() == 0, 'integer // 0 gives 0')\n"
              "assert((nd.arange(5) % 0):sum() == 0)\n"
              "assert((nd.array({math.mininteger}) // -1)[1] == math.mininteger, 'wraps')\n"
              "assert((nd.array({7}) % -1)[1] == 0)\n"
              "local fz = nd.ones(2) / 0 assert(fz[1] == math.huge)\n"
              "local p = nd.arange(5) ^ 2\n"
              "assert(p:dtype() == 'int64' and p[5] == 16)\n"
              "assert((nd.array({2}, 'uint8') ^ 9)[1] == 0, 'uint8 power wraps')\n"
              "assert((nd.array({3}, 'int32') ^ 3):dtype() == 'int32')\n"
              "local fp = nd.arange(4) ^ 0.5\n"
              "assert(fp:dtype() == 'float64' and fp[5 - 1] == math.sqrt(3))\n"
              "assert((2 ^ nd.arange(4))[4] == 8 and (2.0 ^ nd.arange(4)):dtype() == 'float64')\n"
              "assert((nd.arange(4, 'float32') ^ 2):dtype() == 'float32')\n"
              "assert((nd.arange(3) ^ nd.array({3, 2, 1}))[2] == 1)\n"
              "assert((7 // nd.array({2}))[1] == 3 and (7 % nd.array({4}))[1] == 3)\n"
              "local u = -nd.array({1}, 'uint8') assert(u[1] == 255)\n"
              "local i32 = -nd.array({-2147483648}, 'int32') assert(i32[1] == -2147483648)\n"
              "assert((nd.array({1}, 'int32') / 2):dtype() == 'float64')\n"
              "assert((nd.array({1}, 'float32') / 2):dtype() == 'float32')\n"
              "assert((nd.array({1}, 'int32') + nd.array({1}, 'uint8')):dtype() == 'int32')\n"
              "assert((nd.array({1}, 'int32') * 1.5):dtype() == 'float64')\n");
    lua_fails(L, "return nd.arange(3) ^ -1", "negative integer powers");
    lua_fails(L, "return nd.arange(3) ^ nd.array({1, -1, 2})", "negative integer powers");
    lua_fails(L, "return nd.arange(3) // 'x'", "string");
    lua_fails(L, "return nd.arange(3) % {}", "table");
}

static void test_comparisons(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local a = nd.arange(5)\n"
              "local m = a:gt(2)\n"
              "assert(m:dtype() == 'uint8' and m:sum() == 2 and m[4] == 1 and m[3] == 0)\n"
              "assert(a:ge(2):sum() == 3 and a:lt(2):sum() == 2 and a:le(2):sum() == 3)\n"
              "assert(a:eq(3):sum() == 1 and a:ne(3):sum() == 4)\n"
              "assert(a:eq(a:astype('float32')):sum() == 5, 'mixed dtypes compare as values')\n"
              "assert(a:lt(2.5):sum() == 3)\n"
              "local nan = nd.array({0/0, 1})\n"
              "assert(nan:eq(nan):sum() == 1 and nan:ne(nan):sum() == 1, 'NaN is unequal')\n"
              "local g = nd.arange(6):reshape(2, 3):ge(nd.array({0, 2, 6}))\n"
              "assert(g:shape()[1] == 2 and g[1][1] == 1 and g[1][2] == 0 and g[2][3] == 0)\n"
              "local sel = (a * a:gt(1)):sum() assert(sel == 2 + 3 + 4, 'a mask as weights')\n"
              "assert(a == a and a ~= nd.arange(5), 'Lua == is identity')\n");
    lua_fails(L, "return nd.arange(3):lt('x')", "string");
    lua_fails(L, "return nd.arange(3):lt()", "value expected");
    lua_fails(L, "return nd.arange(3):lt(nd.arange(2))", "broadcast");
}

static void test_math_functions(void **state)
{
    lua_State *L = *state;
    lua_ok(
        L,
        "local s = nd.sqrt(nd.array({4, 9}))\n"
        "assert(s:dtype() == 'float64' and s[2] == 3.0)\n"
        "assert(nd.sqrt(nd.array({4}, 'float32')):dtype() == 'float32')\n"
        "assert(nd.sqrt(16) == 4.0 and math.type(nd.sqrt(16)) == 'float')\n"
        "assert(math.abs(nd.exp(nd.zeros(2))[2] - 1) < 1e-15)\n"
        "assert(math.abs(nd.log(nd.array({math.exp(2)}))[1] - 2) < 1e-12)\n"
        "assert(nd.log10(nd.array({1000}))[1] == 3.0 and nd.log10(100) == 2.0)\n"
        "assert(nd.sin(nd.zeros(1))[1] == 0 and nd.cos(nd.zeros(1))[1] == 1)\n"
        "assert(math.abs(nd.tan(nd.array({math.pi / 4}))[1] - 1) < 1e-12)\n"
        "assert(nd.floor(nd.array({-1.5, 1.5}))[1] == -2 and nd.ceil(nd.array({-1.5}))[1] == -1)\n"
        "local ab = nd.abs(nd.array({-3, 4}))\n"
        "assert(ab:dtype() == 'int64' and ab[1] == 3 and nd.abs(-2) == 2 and nd.abs(-2.5) == 2.5)\n"
        "assert(nd.abs(nd.array({-3}, 'int32')):dtype() == 'int32')\n"
        "assert(nd.abs(nd.array({-1.5}, 'float32'))[1] == 1.5)\n"
        "assert(nd.abs(nd.array({math.mininteger}))[1] == math.mininteger, 'wraps as numpy')\n"
        "local l = nd.log(nd.array({-1, 0})) assert(l[1] ~= l[1] and l[2] == -math.huge)\n"
        "local t = nd.sqrt(nd.arange(12):reshape(3, 4):T())\n"
        "assert(t:shape()[1] == 4 and t[2][2] == math.sqrt(5), 'strided input')\n");
    lua_fails(L, "return nd.sqrt('x')", "number expected");
    lua_fails(L, "return nd.exp({})", "number expected");
}

static void test_dot_matmul(void **state)
{
    lua_State *L = *state;
    lua_ok(
        L,
        "local a = nd.array({{1, 2}, {3, 4}})\n"
        "local b = nd.array({{5, 6}, {7, 8}})\n"
        "local c = nd.matmul(a, b)\n"
        "assert(c:dtype() == 'int64' and c[1][1] == 19 and c[1][2] == 22 and c[2][1] == 43 and "
        "c[2][2] == 50)\n"
        "assert(nd.dot(a, b):eq(c):sum() == 4 and a:dot(b):eq(c):sum() == 4)\n"
        "local v = nd.dot(a, nd.array({1, 1}))\n"
        "assert(v:ndim() == 1 and v[1] == 3 and v[2] == 7)\n"
        "local w = nd.dot(nd.array({1, 1}), a) assert(w[1] == 4 and w[2] == 6)\n"
        "local s = nd.dot(nd.arange(4), nd.arange(4)) assert(s == 14 and math.type(s) == "
        "'integer')\n"
        "local f = nd.dot(nd.ones(3), nd.ones(3)) assert(f == 3.0 and math.type(f) == 'float')\n"
        "local r = nd.matmul(nd.ones({2, 3}), nd.ones({3, 4}))\n"
        "assert(r:shape()[1] == 2 and r:shape()[2] == 4 and r:sum() == 24)\n"
        "assert(nd.matmul(nd.ones({2, 2}, 'float32'), nd.ones({2, 2}, 'float32')):dtype() == "
        "'float32')\n"
        "assert(nd.dot(nd.ones(2, 'int32'), nd.ones(2, 'float32')) == 2.0)\n"
        "local t = nd.matmul(a:T(), a) assert(t[1][1] == 10 and t[1][2] == 14, 'strided operand')\n"
        "local e = nd.matmul(nd.zeros({2, 0}), nd.zeros({0, 3}))\n"
        "assert(e:shape()[2] == 3 and e:sum() == 0)\n");
    lua_fails(L, "return nd.dot(nd.ones({2, 3}), nd.ones({2, 3}))", "not aligned (3 != 2)");
    lua_fails(L, "return nd.matmul(nd.ones({2, 2, 2}), nd.ones(2))", "only 1-D and 2-D");
    lua_fails(L, "return nd.dot(nd.array(1), nd.ones(1))", "only 1-D and 2-D");
    lua_fails(L, "return nd.dot(nd.ones(2), 3)", "nd array expected");
}

static void test_fill_and_axpy(void **state)
{
    lua_State *L = *state;
    lua_ok(L,
           "local a = nd.zeros({2, 3})\n"
           "assert(a:fill(2) == a and a:sum() == 12)\n"
           "a:fill(nd.array({1, 2, 3})) assert(a[2][3] == 3 and a:sum() == 12)\n"
           "a[1] = nd.array({9, 9, 9}, 'int32') assert(a[1][2] == 9.0)\n"
           "local i = nd.zeros(3, 'int32') i:fill(2.9) assert(i[1] == 2, 'truncates like astype')\n"
           "local b = nd.arange(6) b:slice(1, 5):fill(b:slice(2, 6)) assert(b[1] == 1 and b[5] == "
           "5, 'overlap')\n"
           "local y = nd.ones(4) y:axpy(2, nd.arange(4, 'float64'))\n"
           "assert(y[4] == 7.0 and y:sum() == 4 + 2 * 6)\n"
           "local yi = nd.ones(3, 'int64') yi:axpy(2, nd.arange(3)) assert(yi[3] == 5 and "
           "yi:dtype() == 'int64')\n"
           "local ys = nd.ones({2, 2}):T() ys:axpy(1, nd.ones({2, 2})) assert(ys:sum() == 8, "
           "'strided y')\n"
           "local self = nd.ones(3) self:axpy(1, self) assert(self:sum() == 6)\n"
           "local z = nd.zeros(0) z:fill(3) assert(z:size() == 0)\n");
    lua_fails(L, "return nd.zeros(2):fill('x')", "number or nd array expected");
    lua_fails(L, "return nd.zeros(2):fill(nd.zeros(3))", "broadcast");
    lua_fails(L, "return nd.zeros(2):axpy(1, nd.zeros(3))", "broadcast");
    lua_fails(L, "return nd.zeros(2):axpy('a', nd.zeros(2))", "number expected");
}

static void test_repr_layout(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "assert(tostring(nd.array(0.5)) == 'nd.array(0.5)')\n"
              "assert(tostring(nd.array(1, 'float32')) == 'nd.array(1., dtype=float32)')\n"
              "assert(tostring(nd.array({1e-5, 1})) == 'nd.array([1.e-05, 1.e+00])')\n"
              "assert(tostring(nd.array({1.5e-5, 1})) == 'nd.array([1.5e-05, 1.0e+00])')\n"
              "assert(tostring(nd.array({1.25, 10.5, -3})) == 'nd.array([ 1.25, 10.5 , -3.  ])')\n"
              "assert(tostring(nd.zeros({0, 3})) == 'nd.array([], shape=(0, 3), dtype=float64)')\n"
              "assert(tostring(nd.ones(2, 'uint8')) == 'nd.array([1, 1], dtype=uint8)')\n"
              "local s = tostring(nd.arange(30))\n"
              "assert(s:find('\\n', 1, true) and s:find('\\n          16,', 1, true), s)\n"
              "local c = tostring(nd.arange(8):reshape(2, 2, 2))\n"
              "assert(c == 'nd.array([[[0, 1],\\n           [2, 3]],\\n\\n          [[4, 5],\\n    "
              "       [6, 7]]])', c)\n"
              "local big = tostring(nd.arange(2000):reshape(2, 1000))\n"
              "assert(big:find('[   0,    1,    2, ...,  997,  998,  999]', 1, true), big)\n"
              "local rows = tostring(nd.arange(3300):reshape(1100, 3))\n"
              "assert(rows:find('\\n          ...,\\n', 1, true), rows)\n"
              "assert(tostring(nd.arange(6):reshape(2, 3):T()) ==\n"
              "  'nd.array([[0, 3],\\n          [1, 4],\\n          [2, 5]])')\n"
              "assert(tostring(nd.linspace(0, 1, 3)) == 'nd.array([0. , 0.5, 1. ])')\n"
              "assert(tostring(nd.array({1/3})) == 'nd.array([0.33333333])')\n");
}

static void test_big_array_cache(void **state)
{
    lua_State *L = *state;
    /* temporaries of 16 MiB come back from the cache: values stay right */
    lua_ok(L, "local x = nd.ones(2 * 1024 * 1024) local y = nd.zeros(2 * 1024 * 1024)\n"
              "for i = 1, 20 do y = 0.5 * x + y end\n"
              "assert(y:sum() == 10 * 2 * 1024 * 1024)\n"
              "local z = nd.zeros(2 * 1024 * 1024) assert(z:sum() == 0, 'zeroed when reused')\n");
    bigmem_trim(1);
    lua_ok(L, "assert(nd.zeros(3 * 1024 * 1024):max() == 0)");
    bigmem_trim(1);
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

/* Calls nd_push_buffer_view(L, buf, 8, float64, {n}) protected; 1 if it
 * did not raise. */
static int view_outside(lua_State *L)
{
    nd_buffer *buf = lua_touserdata(L, 1);
    size_t n = (size_t)lua_tointeger(L, 2);
    nd_push_buffer_view(L, buf, 8, ND_FLOAT64, 1, &n);
    return 1;
}

static int lua_cpcall_view_outside(lua_State *L, nd_buffer *buf, size_t n)
{
    lua_pushcfunction(L, view_outside);
    lua_pushlightuserdata(L, buf);
    lua_pushinteger(L, (lua_Integer)n);
    int ok = lua_pcall(L, 2, 1, 0) == LUA_OK;
    if (!ok)
        assert_non_null(strstr(lua_tostring(L, -1), "outside its buffer"));
    lua_pop(L, 1);
    return ok;
}

static void test_c_api_views(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "m = nd.arange(6, 'int32'):reshape(2, 3) t = m:T()");
    lua_getglobal(L, "t");
    nd_array *t = nd_test(L, -1);
    assert_int_equal(nd_is_contiguous(t), 0);
    assert_int_equal(nd_strides(t)[0], 1);
    assert_int_equal(nd_strides(t)[1], 3);
    int32_t flat[6];
    nd_copy_out(t, flat); /* row-major through the strides: 0 3 1 4 2 5 */
    int32_t want[6] = {0, 3, 1, 4, 2, 5};
    assert_memory_equal(flat, want, sizeof want);
    nd_array *c = nd_push_contiguous(L, -1);
    assert_true(c != t && nd_is_contiguous(c));
    assert_memory_equal(nd_data(c), want, sizeof want);
    int32_t back[6] = {10, 13, 11, 14, 12, 15};
    nd_copy_in(t, back); /* writes through to m */
    lua_settop(L, 0);
    lua_ok(L, "assert(m[1][1] == 10 and m[1][2] == 11 and m[2][3] == 15)");
    lua_getglobal(L, "m");
    nd_array *pushed = nd_push_contiguous(L, -1);
    assert_ptr_equal(pushed, nd_test(L, -2)); /* itself */
    lua_settop(L, 0);

    /* an array viewing a shared buffer at an offset (as a received message) */
    unsigned char *data = calloc(1, 64);
    double v = 2.5;
    memcpy(data + 16, &v, sizeof v);
    nd_buffer *buf = nd_buffer_wrap(data, 64);
    assert_non_null(buf);
    size_t n = 2;
    nd_array *view = nd_push_buffer_view(L, buf, 16, ND_FLOAT64, 1, &n);
    assert_ptr_equal(nd_data(view), data + 16);
    assert_ptr_equal(nd_buffer_of(view), buf);
    nd_buffer_release(buf); /* the view keeps it alive */
    lua_setglobal(L, "bv");
    lua_ok(L, "assert(bv[1] == 2.5 and bv[2] == 0) bv = nil collectgarbage()");
    nd_buffer *b2 = nd_buffer_wrap(calloc(1, 8), 8);
    size_t big = 2;
    if (lua_cpcall_view_outside(L, b2, big))
        fail_msg("a view outside its buffer must raise");
    nd_buffer_release(b2);
}

static void test_gc_pressure(void **state)
{
    /* 200 x 8 MiB temporaries: the collector must run because of nd memory */
    lua_ok(*state, "for i = 1, 200 do local a = nd.zeros(1024 * 1024) end");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_constructors, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_reductions, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_indexing, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_arithmetic, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_tostring, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_methods, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_more_constructors, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_axis_reductions, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_slices_and_views, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_broadcasting, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_more_arithmetic, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_comparisons, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_math_functions, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_dot_matmul, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_fill_and_axpy, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_repr_layout, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_big_array_cache, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_c_api, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_c_api_views, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_gc_pressure, lua_setup, lua_teardown),
    };
    return run_tests_with_mpi(MPI_THREAD_SINGLE, tests, NULL, NULL);
}
