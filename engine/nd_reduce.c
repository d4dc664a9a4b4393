/* nd_reduce.c — reductions (sum, prod, min, max, mean, std, argmin,
 * argmax; whole array or along one axis) and dot / matmul.
 *
 * Every reduction works in one of two domains: float64 (float arrays, and
 * mean/std of anything) or int64 (sum/prod/min/max/arg* of integer arrays,
 * which wrap like numpy's int64).  The input is first brought to contiguous
 * elements of the domain (its own memory when it already is), then viewed as
 * (outer, n, inner) around the reduced axis (1, count, 1 for the whole
 * array) and swept in memory order, accumulating into outer*inner slots.
 * Whole-array float sums use eight partial sums: faster than one running
 * sum (no dependency chain) and more accurate.
 *
 * NaN propagates through min/max and is what argmin/argmax report (its first
 * position), as numpy.  Indices from argmin/argmax are 1-based.
 */
#include "nd_impl.h"

#include <math.h>
#include <string.h>

typedef enum nd_red { R_SUM, R_PROD, R_MIN, R_MAX, R_MEAN, R_STD, R_ARGMIN, R_ARGMAX } nd_red;

static const char *const nd_red_names[] = {"sum",  "prod", "min",    "max",
                                           "mean", "std",  "argmin", "argmax"};

typedef struct nd_geom {
    size_t outer, n, inner;
} nd_geom;

static int nd_red_needs_elements(nd_red op)
{
    return op == R_MIN || op == R_MAX || op == R_ARGMIN || op == R_ARGMAX;
}

/* ---------------------------------------------------------- float64 */

static double nd_sum_f64(const double *s, size_t n)
{
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            a[k] += s[i + k];
    for (; i < n; i++)
        tail += s[i];
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + tail;
}

/* Visits v = element j of slot k (k = o * inner + i) in memory order. */
#define ND_SWEEP(T, BODY)                                                                          \
    for (size_t o = 0; o < g.outer; o++)                                                           \
        for (size_t j = 0; j < g.n; j++) {                                                         \
            const T *row = s + (o * g.n + j) * g.inner;                                            \
            for (size_t i = 0; i < g.inner; i++) {                                                 \
                T v = row[i];                                                                      \
                size_t k = o * g.inner + i;                                                        \
                BODY;                                                                              \
            }                                                                                      \
        }

static void nd_sum_slots_f64(const double *s, nd_geom g, double *acc)
{
    size_t m = g.outer * g.inner;
    if (g.inner == 1) {
        for (size_t o = 0; o < g.outer; o++)
            acc[o] = nd_sum_f64(s + o * g.n, g.n);
    } else {
        memset(acc, 0, m * sizeof *acc);
        ND_SWEEP(double, acc[k] += v)
    }
}

static void nd_std_f64(const double *s, nd_geom g, double *acc, double *ss, double ddof)
{
    size_t m = g.outer * g.inner;
    nd_sum_slots_f64(s, g, acc);
    for (size_t k = 0; k < m; k++) {
        acc[k] /= (double)g.n;
        ss[k] = 0;
    }
    ND_SWEEP(double, double d = v - acc[k]; ss[k] += d * d)
    double dof = (double)g.n - ddof;
    for (size_t k = 0; k < m; k++)
        acc[k] = dof > 0 ? sqrt(ss[k] / dof) : NAN;
}

/* Reduces s into acc (and arg for argmin/argmax); ss: scratch for std. */
static void nd_reduce_f64(nd_red op, const double *s, nd_geom g, double *acc, int64_t *arg,
                          double *ss, double ddof)
{
    size_t m = g.outer * g.inner;
    for (size_t k = 0; k < m; k++) {
        acc[k] = op == R_PROD ? 1 : 0;
        if (nd_red_needs_elements(op)) /* the first element of each slot */
            acc[k] = s[(k / g.inner) * g.n * g.inner + k % g.inner];
        arg[k] = 0;
    }
    switch (op) {
    case R_SUM: nd_sum_slots_f64(s, g, acc); break;
    case R_MEAN:
        nd_sum_slots_f64(s, g, acc);
        for (size_t k = 0; k < m; k++)
            acc[k] /= (double)g.n;
        break;
    case R_STD: nd_std_f64(s, g, acc, ss, ddof); break;
    case R_PROD: ND_SWEEP(double, acc[k] *= v) break;
    case R_MIN: ND_SWEEP(double, if (v < acc[k] || v != v) acc[k] = v) break;
    case R_MAX: ND_SWEEP(double, if (v > acc[k] || v != v) acc[k] = v) break;
    case R_ARGMIN:
        ND_SWEEP(
            double, if (acc[k] == acc[k] && (v < acc[k] || v != v)) {
                acc[k] = v;
                arg[k] = (int64_t)j;
            })
        break;
    case R_ARGMAX:
        ND_SWEEP(
            double, if (acc[k] == acc[k] && (v > acc[k] || v != v)) {
                acc[k] = v;
                arg[k] = (int64_t)j;
            })
        break;
    }
}

/* ---------------------------------------------------------- int64 */

static void nd_reduce_i64(nd_red op, const int64_t *s, nd_geom g, int64_t *acc, int64_t *arg)
{
    size_t m = g.outer * g.inner;
    uint64_t *u = (uint64_t *)acc; /* sums and products wrap */
    for (size_t k = 0; k < m; k++) {
        acc[k] = op == R_PROD ? 1 : 0;
        if (nd_red_needs_elements(op))
            acc[k] = s[(k / g.inner) * g.n * g.inner + k % g.inner];
        arg[k] = 0;
    }
    switch (op) {
    case R_SUM: ND_SWEEP(int64_t, u[k] += (uint64_t)v) break;
    case R_PROD: ND_SWEEP(int64_t, u[k] *= (uint64_t)v) break;
    case R_MIN: ND_SWEEP(int64_t, if (v < acc[k]) acc[k] = v) break;
    case R_MAX: ND_SWEEP(int64_t, if (v > acc[k]) acc[k] = v) break;
    case R_ARGMIN:
        ND_SWEEP(
            int64_t, if (v < acc[k]) {
                acc[k] = v;
                arg[k] = (int64_t)j;
            })
        break;
    case R_ARGMAX:
        ND_SWEEP(
            int64_t, if (v > acc[k]) {
                acc[k] = v;
                arg[k] = (int64_t)j;
            })
        break;
    default: break;
    }
}

/* ---------------------------------------------------------- driver */

/* Result dtype of op along an axis of an array of dtype t. */
static nd_dtype nd_red_dtype(nd_red op, nd_dtype t)
{
    switch (op) {
    case R_ARGMIN:
    case R_ARGMAX: return ND_INT64;
    case R_MIN:
    case R_MAX: return t;
    case R_MEAN:
    case R_STD: return t == ND_FLOAT32 ? ND_FLOAT32 : ND_FLOAT64;
    default: return nd_is_float(t) ? t : ND_INT64;
    }
}

/* Pushes the whole-array result from slot 0. */
static void nd_push_scalar(lua_State *L, nd_red op, int in_f64, const void *acc, const int64_t *arg)
{
    if (op == R_ARGMIN || op == R_ARGMAX)
        lua_pushinteger(L, (lua_Integer)arg[0] + 1);
    else if (in_f64)
        lua_pushnumber(L, *(const double *)acc);
    else
        lua_pushinteger(L, (lua_Integer) * (const int64_t *)acc);
}

/* a:OP([axis]) and a:std([axis [, ddof]]). */
static int nd_reduce(lua_State *L, nd_red op)
{
    nd_array *a = nd_check(L, 1);
    int axis = lua_isnoneornil(L, 2) ? -1 : nd_check_axis(L, 2, a->ndim);
    double ddof = op == R_STD ? luaL_optnumber(L, 3, 0) : 0;
    lua_settop(L, 1);
    nd_geom g = {1, a->count, 1};
    if (axis >= 0) {
        g.n = a->shape[axis];
        for (int d = 0; d < axis; d++)
            g.outer *= a->shape[d];
        for (int d = axis + 1; d < a->ndim; d++)
            g.inner *= a->shape[d];
    }
    if (g.n == 0 && nd_red_needs_elements(op) && (axis < 0 || g.outer * g.inner > 0))
        return luaL_error(L, "nd: %s of an empty array", nd_red_names[op]);
    int in_f64 = nd_is_float(a->dtype) || op == R_MEAN || op == R_STD;
    const void *s = nd_elements_in(L, a, in_f64 ? ND_FLOAT64 : ND_INT64, 0);
    size_t m = g.outer * g.inner, slots = m ? m : 1;
    void *acc = lua_newuserdatauv(L, slots * 8, 0);
    int64_t *arg = lua_newuserdatauv(L, slots * 8, 0);
    double *ss = op == R_STD ? lua_newuserdatauv(L, slots * 8, 0) : NULL;
    if (in_f64)
        nd_reduce_f64(op, s, g, acc, arg, ss, ddof);
    else
        nd_reduce_i64(op, s, g, acc, arg);
    if (axis < 0) {
        nd_push_scalar(L, op, in_f64, acc, arg);
        return 1;
    }
    size_t shape[ND_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < a->ndim; d++)
        if (d != axis)
            shape[nd++] = a->shape[d];
    nd_dtype rt = nd_red_dtype(op, a->dtype);
    nd_array *r = nd_push_uninit(L, rt, nd, shape);
    if (op == R_ARGMIN || op == R_ARGMAX) {
        int64_t *o = nd_data(r);
        for (size_t k = 0; k < m; k++)
            o[k] = arg[k] + 1;
    } else {
        nd_convert(nd_data(r), rt, acc, in_f64 ? ND_FLOAT64 : ND_INT64, m);
    }
    return 1;
}

static int m_sum(lua_State *L)
{
    return nd_reduce(L, R_SUM);
}
static int m_prod(lua_State *L)
{
    return nd_reduce(L, R_PROD);
}
static int m_min(lua_State *L)
{
    return nd_reduce(L, R_MIN);
}
static int m_max(lua_State *L)
{
    return nd_reduce(L, R_MAX);
}
static int m_mean(lua_State *L)
{
    return nd_reduce(L, R_MEAN);
}
static int m_std(lua_State *L)
{
    return nd_reduce(L, R_STD);
}
static int m_argmin(lua_State *L)
{
    return nd_reduce(L, R_ARGMIN);
}
static int m_argmax(lua_State *L)
{
    return nd_reduce(L, R_ARGMAX);
}

/* ---------------------------------------------------------- dot */

/* C (m x n) = A (m x k) B (k x n), row-major; i-p-j order keeps B and C
 * rows streaming. */
static void nd_gemm_f64(const double *A, const double *B, double *C, size_t m, size_t k, size_t n)
{
    memset(C, 0, m * n * sizeof *C);
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < k; p++) {
            double aip = A[i * k + p];
            const double *b = B + p * n;
            double *c = C + i * n;
            for (size_t j = 0; j < n; j++)
                c[j] += aip * b[j];
        }
}

static void nd_gemm_i64(const int64_t *A, const int64_t *B, int64_t *C, size_t m, size_t k,
                        size_t n)
{
    uint64_t *c0 = (uint64_t *)C;
    memset(C, 0, m * n * sizeof *C);
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < k; p++) {
            uint64_t aip = (uint64_t)A[i * k + p];
            const int64_t *b = B + p * n;
            uint64_t *c = c0 + i * n;
            for (size_t j = 0; j < n; j++)
                c[j] += aip * (uint64_t)b[j];
        }
}

static nd_dtype nd_dot_dtype(nd_dtype x, nd_dtype y)
{
    if (x == y)
        return x;
    if (nd_is_float(x) || nd_is_float(y))
        return (x == ND_FLOAT64 || y == ND_FLOAT64 || x == ND_INT64 || y == ND_INT64 ||
                x == ND_INT32 || y == ND_INT32)
                   ? ND_FLOAT64
                   : ND_FLOAT32;
    return x == ND_INT64 || y == ND_INT64 ? ND_INT64 : ND_INT32;
}

/* nd.dot(a, b) / nd.matmul(a, b) for 1-D and 2-D arrays (1-D . 1-D is a
 * number).  what: the function's name for errors. */
static int nd_dot(lua_State *L, const char *what)
{
    nd_array *a = nd_check(L, 1), *b = nd_check(L, 2);
    lua_settop(L, 2);
    if (a->ndim < 1 || a->ndim > 2 || b->ndim < 1 || b->ndim > 2)
        return luaL_error(L, "nd.%s: only 1-D and 2-D arrays (got %d-D and %d-D)", what, a->ndim,
                          b->ndim);
    size_t m = a->ndim == 2 ? a->shape[0] : 1, k = a->shape[a->ndim - 1];
    size_t kb = b->shape[0], n = b->ndim == 2 ? b->shape[1] : 1;
    if (k != kb) {
        char sa[160], sb[160];
        return luaL_error(L, "nd.%s: shapes %s and %s are not aligned (%I != %I)", what,
                          nd_shape_text(a->ndim, a->shape, sa, sizeof sa),
                          nd_shape_text(b->ndim, b->shape, sb, sizeof sb), (LUAI_UACINT)k,
                          (LUAI_UACINT)kb);
    }
    nd_dtype t = nd_dot_dtype(a->dtype, b->dtype), dom = nd_is_float(t) ? ND_FLOAT64 : ND_INT64;
    const void *A = nd_elements_in(L, a, dom, 0);
    const void *B = nd_elements_in(L, b, dom, 0);
    size_t cells = m * n > 0 ? m * n : 1;
    void *C = lua_newuserdatauv(L, cells * 8, 0);
    if (dom == ND_FLOAT64)
        nd_gemm_f64(A, B, C, m, k, n);
    else
        nd_gemm_i64(A, B, C, m, k, n);
    if (a->ndim == 1 && b->ndim == 1) {
        nd_push_scalar(L, R_SUM, dom == ND_FLOAT64, C, NULL);
        return 1;
    }
    size_t shape[2];
    int nd = 0;
    if (a->ndim == 2)
        shape[nd++] = m;
    if (b->ndim == 2)
        shape[nd++] = n;
    nd_array *r = nd_push_uninit(L, t, nd, shape);
    nd_convert(nd_data(r), t, C, dom, m * n);
    return 1;
}

static int l_dot(lua_State *L)
{
    return nd_dot(L, "dot");
}
static int l_matmul(lua_State *L)
{
    return nd_dot(L, "matmul");
}

void nd_reduce_methods(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"sum", m_sum},   {"prod", m_prod},     {"min", m_min},       {"max", m_max},
        {"mean", m_mean}, {"std", m_std},       {"argmin", m_argmin}, {"argmax", m_argmax},
        {"dot", l_dot},   {"matmul", l_matmul}, {NULL, NULL},
    };
    luaL_setfuncs(L, methods, 0);
}

void nd_reduce_functions(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"dot", l_dot},
        {"matmul", l_matmul},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}
