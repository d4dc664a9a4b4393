/* nd_ops.c — nd's elementwise operations: + - * / // % ^, comparisons to
 * uint8 masks, unary minus, the math functions, fill/assign and axpy.
 *
 * A binary operation: (1) pick the compute dtype (numpy promotion, Lua
 * numbers weak, see nd.h) and the result dtype (uint8 for comparisons);
 * (2) broadcast the shapes; (3) bring each operand to contiguous elements of
 * the compute dtype (its own memory when it already is, else a Lua-owned
 * temporary, so an error anywhere leaks nothing); (4) merge axes that need
 * no broadcasting into one, so that equal shapes are a single flat loop;
 * (5) run one typed kernel per remaining row.  After step 3 every
 * operand's innermost stride is 1, or 0 where it repeats, which is all the
 * kernels handle.
 */
#include "nd_impl.h"

#include <math.h>
#include <string.h>

typedef enum nd_op {
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_IDIV,
    OP_MOD,
    OP_POW,
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_COUNT
} nd_op;

static const char *const nd_op_names[OP_COUNT] = {
    "+", "-", "*", "/", "//", "%", "^", "eq", "ne", "lt", "le", "gt", "ge",
};

static int nd_op_is_comparison(nd_op op)
{
    return op >= OP_EQ;
}

/* -------------------------------------------------- integer arithmetic */

/* Floor division and modulo as numpy (and Lua): by zero gives 0; the one
 * overflowing case INT64_MIN / -1 wraps. */
static inline int64_t nd_idiv(int64_t x, int64_t y)
{
    if (y == 0)
        return 0;
    if (y == -1)
        return (int64_t)((uint64_t)0 - (uint64_t)x);
    int64_t q = x / y;
    if ((x % y != 0) && ((x < 0) != (y < 0)))
        q--;
    return q;
}

static inline int64_t nd_imod(int64_t x, int64_t y)
{
    if (y == 0 || y == -1)
        return 0;
    int64_t r = x % y;
    if (r != 0 && ((r < 0) != (y < 0)))
        r += y;
    return r;
}

/* x^y by squaring, wrapping; a negative exponent sets *bad. */
static inline int64_t nd_ipow(int64_t x, int64_t y, int *bad)
{
    if (y < 0) {
        *bad = 1;
        return 0;
    }
    uint64_t base = (uint64_t)x, acc = 1;
    for (uint64_t e = (uint64_t)y; e; e >>= 1) {
        if (e & 1)
            acc *= base;
        base *= base;
    }
    return (int64_t)acc;
}

static inline double nd_fmod(double x, double y)
{
    double r = fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0)))
        r += y;
    return r != 0 ? r : copysign(0, y); /* a zero takes the divisor's sign */
}

static inline float nd_fmodf(float x, float y)
{
    float r = fmodf(x, y);
    if (r != 0 && ((r < 0) != (y < 0)))
        r += y;
    return r != 0 ? r : copysignf(0, y); /* a zero takes the divisor's sign */
}

/* Wrapping add/sub/mul for every integer type, through uint64_t. */
#define WRAP(T, E) ((T)(int64_t)(E))
#define U(X) ((uint64_t)(int64_t)(X))

/* ---------------------------------------------------------- kernels */

typedef void (*nd_kernel)(void *out, const void *x, ptrdiff_t sx, const void *y, ptrdiff_t sy,
                          size_t n, int *flag);

/* out[i] = EXPR(X = x[i*sx], Y = y[i*sy]) with sx, sy in {0, 1}. */
#define ND_KERNEL(NAME, TI, TO, EXPR)                                                              \
    static void NAME(void *out_, const void *x_, ptrdiff_t sx, const void *y_, ptrdiff_t sy,       \
                     size_t n, int *flag)                                                          \
    {                                                                                              \
        TO *o = out_; /* NOLINT(bugprone-macro-parentheses): TO is a type */                       \
        const TI *xs = x_, *ys = y_;                                                               \
        (void)flag;                                                                                \
        if (sx && sy) {                                                                            \
            for (size_t i = 0; i < n; i++) {                                                       \
                TI X = xs[i], Y = ys[i];                                                           \
                o[i] = (TO)(EXPR);                                                                 \
            }                                                                                      \
        } else if (sx) {                                                                           \
            TI Y = ys[0];                                                                          \
            for (size_t i = 0; i < n; i++) {                                                       \
                TI X = xs[i];                                                                      \
                o[i] = (TO)(EXPR);                                                                 \
            }                                                                                      \
        } else if (sy) {                                                                           \
            TI X = xs[0];                                                                          \
            for (size_t i = 0; i < n; i++) {                                                       \
                TI Y = ys[i];                                                                      \
                o[i] = (TO)(EXPR);                                                                 \
            }                                                                                      \
        } else {                                                                                   \
            TI X = xs[0], Y = ys[0];                                                               \
            TO v = (TO)(EXPR);                                                                     \
            for (size_t i = 0; i < n; i++)                                                         \
                o[i] = v;                                                                          \
        }                                                                                          \
    }

#define ND_CMP_KERNELS(S, T)                                                                       \
    ND_KERNEL(eq_##S, T, uint8_t, X == Y)                                                          \
    ND_KERNEL(ne_##S, T, uint8_t, X != Y)                                                          \
    ND_KERNEL(lt_##S, T, uint8_t, X < Y)                                                           \
    ND_KERNEL(le_##S, T, uint8_t, X <= Y)                                                          \
    ND_KERNEL(gt_##S, T, uint8_t, X > Y)                                                           \
    ND_KERNEL(ge_##S, T, uint8_t, X >= Y)

#define ND_FLOAT_KERNELS(S, T, FLOOR, FMOD, POW)                                                   \
    ND_KERNEL(add_##S, T, T, X + Y)                                                                \
    ND_KERNEL(sub_##S, T, T, X - Y)                                                                \
    ND_KERNEL(mul_##S, T, T, X *Y)                                                                 \
    ND_KERNEL(div_##S, T, T, X / Y)                                                                \
    ND_KERNEL(idiv_##S, T, T, FLOOR(X / Y))                                                        \
    ND_KERNEL(mod_##S, T, T, FMOD(X, Y))                                                           \
    ND_KERNEL(pow_##S, T, T, POW(X, Y))                                                            \
    ND_CMP_KERNELS(S, T)

#define ND_INT_KERNELS(S, T)                                                                       \
    ND_KERNEL(add_##S, T, T, WRAP(T, U(X) + U(Y)))                                                 \
    ND_KERNEL(sub_##S, T, T, WRAP(T, U(X) - U(Y)))                                                 \
    ND_KERNEL(mul_##S, T, T, WRAP(T, U(X) * U(Y)))                                                 \
    ND_KERNEL(idiv_##S, T, T, nd_idiv((int64_t)X, (int64_t)Y))                                     \
    ND_KERNEL(mod_##S, T, T, nd_imod((int64_t)X, (int64_t)Y))                                      \
    ND_KERNEL(pow_##S, T, T, nd_ipow((int64_t)X, (int64_t)Y, flag))                                \
    ND_CMP_KERNELS(S, T)

ND_FLOAT_KERNELS(f64, double, floor, nd_fmod, pow)
ND_FLOAT_KERNELS(f32, float, floorf, nd_fmodf, powf)
ND_INT_KERNELS(i64, int64_t)
ND_INT_KERNELS(i32, int32_t)
ND_INT_KERNELS(u8, uint8_t)

#define ND_ROW(S, DIV)                                                                             \
    {                                                                                              \
        add_##S, sub_##S, mul_##S, DIV, idiv_##S, mod_##S, pow_##S, eq_##S, ne_##S, lt_##S,        \
            le_##S, gt_##S, ge_##S,                                                                \
    }

/* [dtype][op]; integer division is never reached (it computes in float64). */
static const nd_kernel nd_kernels[ND_DTYPE_COUNT][OP_COUNT] = {
    [ND_FLOAT64] = ND_ROW(f64, div_f64), [ND_FLOAT32] = ND_ROW(f32, div_f32),
    [ND_INT64] = ND_ROW(i64, NULL),      [ND_INT32] = ND_ROW(i32, NULL),
    [ND_UINT8] = ND_ROW(u8, NULL),
};

/* ---------------------------------------------------------- promotion */

static nd_dtype nd_promote(nd_dtype x, nd_dtype y)
{
    if (x == y)
        return x;
    if (x == ND_FLOAT64 || y == ND_FLOAT64)
        return ND_FLOAT64;
    if (x == ND_FLOAT32 || y == ND_FLOAT32) {
        nd_dtype other = x == ND_FLOAT32 ? y : x;
        return other == ND_UINT8 ? ND_FLOAT32 : ND_FLOAT64;
    }
    /* both integer, different: the wider one (uint8 fits in either signed) */
    if (x == ND_INT64 || y == ND_INT64)
        return ND_INT64;
    return ND_INT32;
}

/* Compute dtype for an operation on the values at 1 and 2 (one at least an
 * array, the other an array or a Lua number). */
static nd_dtype nd_compute_dtype(lua_State *L, nd_op op, nd_array *a, nd_array *b)
{
    nd_dtype t;
    if (a && b) {
        t = nd_promote(a->dtype, b->dtype);
    } else {
        t = (a ? a : b)->dtype;
        if (!nd_is_float(t) && !lua_isinteger(L, a ? 2 : 1))
            t = ND_FLOAT64; /* a Lua float makes an integer array float64 */
    }
    if (op == OP_DIV && !nd_is_float(t))
        t = ND_FLOAT64;
    return t;
}

/* ---------------------------------------------------------- broadcasting */

typedef struct nd_operand {
    const unsigned char *p;
    int ndim;
    size_t shape[ND_MAX_DIMS];
    unsigned char cell[8]; /* a Lua number as one element */
} nd_operand;

/* Operand at idx as contiguous elements of dtype t; pushes one value. */
static void nd_operand_get(lua_State *L, int idx, nd_dtype t, nd_operand *o)
{
    nd_array *a = nd_test(L, idx);
    if (!a) {
        o->ndim = 0;
        nd_store_lua(L, o->cell, t, 0, idx);
        o->p = o->cell;
        lua_pushnil(L);
        return;
    }
    o->ndim = a->ndim;
    memcpy(o->shape, a->shape, sizeof o->shape);
    o->p = nd_elements_in(L, a, t, 0);
}

/* Output shape of x and y broadcast; 0, or -1 if they cannot be. */
static int nd_broadcast(int nx, const size_t *sx, int ny, const size_t *sy, int *nout, size_t *out)
{
    int n = nx > ny ? nx : ny;
    for (int k = 1; k <= n; k++) {
        size_t dx = k <= nx ? sx[nx - k] : 1, dy = k <= ny ? sy[ny - k] : 1;
        if (dx != dy && dx != 1 && dy != 1)
            return -1;
        out[n - k] = dx == 1 ? dy : dx;
    }
    *nout = n;
    return 0;
}

/* Element strides of an operand of shape (nd, shape) broadcast to (n, out). */
static void nd_broadcast_strides(int nd, const size_t *shape, int n, const size_t *out,
                                 ptrdiff_t *st)
{
    ptrdiff_t own[ND_MAX_DIMS];
    nd_c_strides(nd, shape, own);
    for (int d = 0; d < n; d++) {
        int k = d - (n - nd); /* the operand's axis, if any */
        st[d] = (k >= 0 && shape[k] != 1 && out[d] != 1) ? own[k] : 0;
    }
}

/* Merges axis d into d+1 wherever no operand needs them apart. */
static int nd_coalesce(int n, size_t *shape, int k, ptrdiff_t (*st)[ND_MAX_DIMS])
{
    int m = 0;
    for (int d = 0; d < n; d++) {
        if (m > 0) {
            int merge = 1;
            for (int j = 0; j < k && merge; j++)
                merge = st[j][m - 1] == st[j][d] * (ptrdiff_t)shape[d];
            if (merge) {
                shape[m - 1] *= shape[d];
                for (int j = 0; j < k; j++)
                    st[j][m - 1] = st[j][d];
                continue;
            }
        }
        shape[m] = shape[d];
        for (int j = 0; j < k; j++)
            st[j][m] = st[j][d];
        m++;
    }
    return m;
}

static void nd_shape_error(lua_State *L, const char *what, int nx, const size_t *sx, int ny,
                           const size_t *sy)
{
    char a[160], b[160];
    luaL_error(L, "nd: shapes %s and %s cannot be broadcast for '%s'",
               nd_shape_text(nx, sx, a, sizeof a), nd_shape_text(ny, sy, b, sizeof b), what);
}

/* Runs kernel over the broadcast operands into the contiguous out. */
static void nd_run_kernel(nd_kernel kernel, unsigned char *out, size_t out_es, const nd_operand *x,
                          const nd_operand *y, size_t in_es, int n, const size_t *oshape, int *flag)
{
    size_t shape[ND_MAX_DIMS + 1];
    ptrdiff_t st[3][ND_MAX_DIMS];
    memcpy(shape, oshape, sizeof(size_t) * (size_t)n);
    nd_c_strides(n, shape, st[0]);
    nd_broadcast_strides(x->ndim, x->shape, n, shape, st[1]);
    nd_broadcast_strides(y->ndim, y->shape, n, shape, st[2]);
    n = nd_coalesce(n, shape, 3, st);
    if (n == 0) { /* a single element */
        shape[0] = 1;
        st[0][0] = st[1][0] = st[2][0] = 0;
        n = 1;
    }
    size_t len = shape[n - 1], rows = 1, idx[ND_MAX_DIMS] = {0};
    for (int d = 0; d < n - 1; d++)
        rows *= shape[d];
    if (len == 0)
        return;
    ptrdiff_t off[3] = {0, 0, 0};
    for (size_t r = 0; r < rows; r++) {
        kernel(out + off[0] * (ptrdiff_t)out_es, x->p + off[1] * (ptrdiff_t)in_es, st[1][n - 1],
               y->p + off[2] * (ptrdiff_t)in_es, st[2][n - 1], len, flag);
        nd_next_row(n, shape, idx, 3, off, (const ptrdiff_t(*)[ND_MAX_DIMS])st);
    }
}

/* The binary operation op on the values at 1 and 2; pushes the result. */
static int nd_binary(lua_State *L, nd_op op)
{
    nd_array *a = nd_test(L, 1), *b = nd_test(L, 2);
    for (int i = 1; i <= 2; i++)
        if (!nd_test(L, i) && lua_type(L, i) != LUA_TNUMBER)
            return luaL_error(L, "nd: cannot apply '%s' to an nd array and a %s value",
                              nd_op_names[op], luaL_typename(L, i));
    lua_settop(L, 2);
    nd_dtype t = nd_compute_dtype(L, op, a, b);
    nd_dtype rt = nd_op_is_comparison(op) ? ND_UINT8 : t;
    size_t shape[ND_MAX_DIMS];
    int n;
    if (nd_broadcast(a ? a->ndim : 0, a ? a->shape : NULL, b ? b->ndim : 0, b ? b->shape : NULL, &n,
                     shape) < 0)
        nd_shape_error(L, nd_op_names[op], a->ndim, a->shape, b->ndim, b->shape);
    nd_operand x, y;
    nd_operand_get(L, 1, t, &x);
    nd_operand_get(L, 2, t, &y);
    nd_array *r = nd_push_uninit(L, rt, n, shape);
    int flag = 0;
    nd_run_kernel(nd_kernels[t][op], nd_ptr(r), nd_dtype_size(rt), &x, &y, nd_dtype_size(t), n,
                  shape, &flag);
    if (flag)
        return luaL_error(L, "nd: integers to negative integer powers are not allowed");
    return 1;
}

static int mm_add(lua_State *L)
{
    return nd_binary(L, OP_ADD);
}
static int mm_sub(lua_State *L)
{
    return nd_binary(L, OP_SUB);
}
static int mm_mul(lua_State *L)
{
    return nd_binary(L, OP_MUL);
}
static int mm_div(lua_State *L)
{
    return nd_binary(L, OP_DIV);
}
static int mm_idiv(lua_State *L)
{
    return nd_binary(L, OP_IDIV);
}
static int mm_mod(lua_State *L)
{
    return nd_binary(L, OP_MOD);
}
static int mm_pow(lua_State *L)
{
    return nd_binary(L, OP_POW);
}

/* Comparison methods: a:lt(b) etc. (a must be the array). */
static int nd_compare(lua_State *L, nd_op op)
{
    nd_check(L, 1);
    luaL_checkany(L, 2);
    return nd_binary(L, op);
}
static int m_eq(lua_State *L)
{
    return nd_compare(L, OP_EQ);
}
static int m_ne(lua_State *L)
{
    return nd_compare(L, OP_NE);
}
static int m_lt(lua_State *L)
{
    return nd_compare(L, OP_LT);
}
static int m_le(lua_State *L)
{
    return nd_compare(L, OP_LE);
}
static int m_gt(lua_State *L)
{
    return nd_compare(L, OP_GT);
}
static int m_ge(lua_State *L)
{
    return nd_compare(L, OP_GE);
}

/* ---------------------------------------------------------- unary */

static int mm_unm(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    const void *src = nd_elements_in(L, a, a->dtype, 0);
    nd_array *r = nd_push_uninit(L, a->dtype, a->ndim, a->shape);
    size_t n = a->count;
    switch (a->dtype) {
#define UNM_CASE(TAG, T, EXPR)                                                                     \
    case TAG: {                                                                                    \
        const T *s = src;                                                                          \
        T *o = nd_data(r); /* NOLINT(bugprone-macro-parentheses): T is a type */                   \
        for (size_t i = 0; i < n; i++) {                                                           \
            T X = s[i];                                                                            \
            o[i] = (EXPR);                                                                         \
        }                                                                                          \
        break;                                                                                     \
    }
        UNM_CASE(ND_FLOAT64, double, -X)
        UNM_CASE(ND_FLOAT32, float, -X)
        UNM_CASE(ND_INT64, int64_t, WRAP(int64_t, (uint64_t)0 - U(X)))
        UNM_CASE(ND_INT32, int32_t, WRAP(int32_t, (uint64_t)0 - U(X)))
        UNM_CASE(ND_UINT8, uint8_t, WRAP(uint8_t, (uint64_t)0 - U(X)))
#undef UNM_CASE
    default: break;
    }
    return 1;
}

typedef double (*nd_fn64)(double);
typedef float (*nd_fn32)(float);

/* nd.F(x): x an array (float result; float32 stays float32) or a number. */
static int nd_math(lua_State *L, nd_fn64 f64, nd_fn32 f32)
{
    nd_array *a = nd_test(L, 1);
    if (!a) {
        lua_pushnumber(L, f64(luaL_checknumber(L, 1)));
        return 1;
    }
    nd_dtype t = a->dtype == ND_FLOAT32 ? ND_FLOAT32 : ND_FLOAT64;
    const void *src = nd_elements_in(L, a, t, 0);
    nd_array *r = nd_push_uninit(L, t, a->ndim, a->shape);
    size_t n = a->count;
    if (t == ND_FLOAT32) {
        const float *s = src;
        float *o = nd_data(r);
        for (size_t i = 0; i < n; i++)
            o[i] = f32(s[i]);
    } else {
        const double *s = src;
        double *o = nd_data(r);
        for (size_t i = 0; i < n; i++)
            o[i] = f64(s[i]);
    }
    return 1;
}

#define ND_MATH(NAME)                                                                              \
    static double NAME##_64(double v)                                                              \
    {                                                                                              \
        return NAME(v);                                                                            \
    }                                                                                              \
    static float NAME##_32(float v)                                                                \
    {                                                                                              \
        return NAME##f(v);                                                                         \
    }                                                                                              \
    static int fn_##NAME(lua_State *L)                                                             \
    {                                                                                              \
        return nd_math(L, NAME##_64, NAME##_32);                                                   \
    }

ND_MATH(sqrt)
ND_MATH(exp)
ND_MATH(log)
ND_MATH(log10)
ND_MATH(sin)
ND_MATH(cos)
ND_MATH(tan)
ND_MATH(floor)
ND_MATH(ceil)

/* nd.abs keeps the dtype (integers wrap at their minimum, as numpy). */
static int l_abs(lua_State *L)
{
    nd_array *a = nd_test(L, 1);
    if (!a) {
        if (lua_isinteger(L, 1)) {
            lua_Integer v = lua_tointeger(L, 1);
            lua_pushinteger(L, v < 0 ? (lua_Integer)((lua_Unsigned)0 - (lua_Unsigned)v) : v);
        } else {
            lua_pushnumber(L, fabs(luaL_checknumber(L, 1)));
        }
        return 1;
    }
    if (nd_is_float(a->dtype))
        return nd_math(L, fabs, fabsf);
    const void *src = nd_elements_in(L, a, ND_INT64, 0);
    nd_array *r = nd_push_uninit(L, ND_INT64, a->ndim, a->shape);
    const int64_t *s = src;
    int64_t *o = nd_data(r);
    for (size_t i = 0; i < a->count; i++)
        o[i] = s[i] < 0 ? WRAP(int64_t, (uint64_t)0 - U(s[i])) : s[i];
    if (a->dtype != ND_INT64) { /* back to the array's own dtype */
        nd_array *c = nd_push_uninit(L, a->dtype, a->ndim, a->shape);
        nd_convert(nd_data(c), a->dtype, o, ND_INT64, a->count);
    }
    return 1;
}

/* ---------------------------------------------------------- in place */

/* Copies n elements of size es from a source with stride s (0 or 1) to a
 * strided destination row. */
static void nd_put_row(unsigned char *dst, ptrdiff_t dstep, const unsigned char *src, ptrdiff_t s,
                       size_t n, size_t es)
{
    for (size_t j = 0; j < n; j++)
        memcpy(dst + (ptrdiff_t)j * dstep * (ptrdiff_t)es, src + (ptrdiff_t)j * s * (ptrdiff_t)es,
               es);
}

void nd_assign(lua_State *L, nd_array *dst, int src_idx)
{
    src_idx = lua_absindex(L, src_idx);
    nd_operand x;
    nd_array *s = nd_test(L, src_idx);
    if (s) {
        size_t shape[ND_MAX_DIMS];
        int n;
        if (s->ndim > dst->ndim ||
            nd_broadcast(dst->ndim, dst->shape, s->ndim, s->shape, &n, shape) < 0 ||
            n != dst->ndim || memcmp(shape, dst->shape, sizeof(size_t) * (size_t)n) != 0) {
            char a[160], b[160];
            luaL_error(L, "nd: cannot broadcast an array of shape %s into shape %s",
                       nd_shape_text(s->ndim, s->shape, a, sizeof a),
                       nd_shape_text(dst->ndim, dst->shape, b, sizeof b));
        }
        x.ndim = s->ndim;
        memcpy(x.shape, s->shape, sizeof x.shape);
        /* A copy when both share memory: the source may overlap dst. */
        x.p = nd_elements_in(L, s, dst->dtype, s->buf == dst->buf);
    } else {
        nd_operand_get(L, src_idx, dst->dtype, &x);
    }
    if (dst->count == 0) {
        lua_pop(L, 1);
        return;
    }
    int n = dst->ndim ? dst->ndim : 1;
    size_t one = 1, es = nd_dtype_size(dst->dtype);
    const size_t *shape = dst->ndim ? dst->shape : &one;
    ptrdiff_t st[2][ND_MAX_DIMS] = {{0}};
    memcpy(st[0], dst->strides, sizeof st[0]);
    nd_broadcast_strides(x.ndim, x.shape, n, shape, st[1]);
    size_t len = shape[n - 1], rows = dst->count / len, idx[ND_MAX_DIMS] = {0};
    ptrdiff_t off[2] = {0, 0};
    for (size_t r = 0; r < rows; r++) {
        nd_put_row(nd_ptr(dst) + off[0] * (ptrdiff_t)es, st[0][n - 1], x.p + off[1] * (ptrdiff_t)es,
                   st[1][n - 1], len, es);
        nd_next_row(n, shape, idx, 2, off, (const ptrdiff_t(*)[ND_MAX_DIMS])st);
    }
    lua_pop(L, 1);
}

/* a:fill(x): every element of a (a view writes through) set from x. */
static int m_fill(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    if (!nd_test(L, 2) && lua_type(L, 2) != LUA_TNUMBER)
        return luaL_typeerror(L, 2, "number or nd array");
    nd_assign(L, a, 2);
    lua_settop(L, 1);
    return 1;
}

/* y:axpy(alpha, x): y = alpha * x + y in place, returns y.  One pass and no
 * temporary for contiguous float64 arrays of one shape. */
static int m_axpy(lua_State *L)
{
    nd_array *y = nd_check(L, 1);
    double alpha = luaL_checknumber(L, 2);
    nd_array *x = nd_check(L, 3);
    int same =
        x->ndim == y->ndim && memcmp(x->shape, y->shape, sizeof(size_t) * (size_t)x->ndim) == 0;
    if (same && y->dtype == ND_FLOAT64 && y->contiguous && x->buf != y->buf) {
        const double *xs = nd_elements_in(L, x, ND_FLOAT64, 0);
        double *ys = nd_data(y);
        for (size_t i = 0; i < y->count; i++)
            ys[i] += alpha * xs[i];
        lua_settop(L, 1);
        return 1;
    }
    /* General case: (alpha * x + y), then written back through y. */
    lua_settop(L, 3);
    lua_pushcfunction(L, mm_mul);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_call(L, 2, 1);
    lua_pushcfunction(L, mm_add);
    lua_insert(L, -2);
    lua_pushvalue(L, 1);
    lua_call(L, 2, 1);
    nd_assign(L, y, -1);
    lua_settop(L, 1);
    return 1;
}

/* ---------------------------------------------------------- registration */

void nd_ops_metamethods(lua_State *L)
{
    static const luaL_Reg mms[] = {
        {"__add", mm_add}, {"__sub", mm_sub},   {"__mul", mm_mul},
        {"__div", mm_div}, {"__idiv", mm_idiv}, {"__mod", mm_mod},
        {"__pow", mm_pow}, {"__unm", mm_unm},   {NULL, NULL},
    };
    luaL_setfuncs(L, mms, 0);
}

void nd_ops_methods(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"eq", m_eq}, {"ne", m_ne},     {"lt", m_lt},     {"le", m_le}, {"gt", m_gt},
        {"ge", m_ge}, {"fill", m_fill}, {"axpy", m_axpy}, {NULL, NULL},
    };
    luaL_setfuncs(L, methods, 0);
}

void nd_ops_functions(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"sqrt", fn_sqrt},   {"exp", fn_exp},   {"log", fn_log}, {"log10", fn_log10},
        {"sin", fn_sin},     {"cos", fn_cos},   {"tan", fn_tan}, {"abs", l_abs},
        {"floor", fn_floor}, {"ceil", fn_ceil}, {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}
