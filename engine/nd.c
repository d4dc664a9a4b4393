/* nd.c — the `nd` ndarray module (see nd.h).
 *
 * Representation: an nd_array userdata holds dtype, shape and a pointer into a
 * reference-counted nd_buffer (plus a byte offset, so a row view `m[i]` shares
 * its parent's memory).  Every array is row-major and contiguous from
 * nd_data(a) for nd_bytes(a) bytes; nothing here handles strides.
 *
 * Element memory is malloc'd, not Lua's: blobs received from the controller
 * are adopted as they are (zero-copy) and MPI may keep using a buffer after
 * its Lua object is gone.  Lua's collector does not see that memory, so
 * nd_buffer_new runs a full collection when a lot of it was allocated since
 * the last one (otherwise a loop making big temporaries grows without bound).
 *
 * Arithmetic follows numpy's promotion for these five dtypes, with Lua
 * numbers as "weak" scalars: int array + Lua integer keeps the array's
 * dtype; a Lua float makes an integer array float64; `/` is true division.
 * Integer overflow wraps (computed in unsigned arithmetic: no UB).
 */
#include "nd.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

struct nd_buffer {
    size_t refs;
    size_t bytes;
    unsigned char *data;
};

struct nd_array {
    nd_dtype dtype;
    int ndim;
    size_t shape[ND_MAX_DIMS];
    size_t count;
    nd_buffer *buf; /* NULL only while being built */
    size_t offset;  /* bytes from buf->data to element 0 */
};

/* Registry key (its address) of the metatable, so nd_test never allocates. */
static const char nd_registry_key = 'n';

/* Bytes of element memory alive and allocated since the last collection we
 * caused.  One Lua state per engine process, used from its thread only. */
static size_t nd_live_bytes;
static size_t nd_bytes_since_gc;
static size_t nd_live_after_gc;
#define ND_GC_MIN_BYTES ((size_t)64 << 20)

/* Refuse arrays whose byte size does not fit comfortably in size_t/ptrdiff_t. */
#define ND_MAX_BYTES ((size_t)PTRDIFF_MAX / 2)

/* Repr shows at most this many elements before summarising with "...". */
#define ND_REPR_THRESHOLD 1000
#define ND_REPR_EDGE 3

/* ---------------------------------------------------------------- buffers */

static nd_buffer *nd_buffer_alloc(lua_State *L, size_t bytes, unsigned char *data)
{
    nd_buffer *b = malloc(sizeof *b);
    if (!b)
        return NULL;
    b->refs = 1;
    b->bytes = bytes;
    b->data = data;
    nd_live_bytes += bytes;
    nd_bytes_since_gc += bytes;
    return b;
}

/* Called with the new array safely on the stack (reachable). */
static void nd_maybe_collect(lua_State *L)
{
    size_t threshold = nd_live_after_gc > ND_GC_MIN_BYTES ? nd_live_after_gc : ND_GC_MIN_BYTES;
    if (nd_bytes_since_gc < threshold)
        return;
    nd_bytes_since_gc = 0;
    lua_gc(L, LUA_GCCOLLECT);
    nd_live_after_gc = nd_live_bytes;
}

nd_buffer *nd_buffer_retain(nd_array *a)
{
    a->buf->refs++;
    return a->buf;
}

void nd_buffer_release(nd_buffer *b)
{
    if (!b || --b->refs > 0)
        return;
    nd_live_bytes -= b->bytes;
    free(b->data);
    free(b);
}

/* ---------------------------------------------------------------- C API */

void *nd_data(const nd_array *a)
{
    return a->buf->data + a->offset;
}
nd_dtype nd_dtype_of(const nd_array *a)
{
    return a->dtype;
}
int nd_ndim(const nd_array *a)
{
    return a->ndim;
}
const size_t *nd_shape(const nd_array *a)
{
    return a->shape;
}
size_t nd_count(const nd_array *a)
{
    return a->count;
}
size_t nd_bytes(const nd_array *a)
{
    return a->count * nd_dtype_size(a->dtype);
}

nd_array *nd_test(lua_State *L, int idx)
{
    void *p = lua_touserdata(L, idx);
    if (!p || lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
        return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &nd_registry_key);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}

nd_array *nd_check(lua_State *L, int idx)
{
    nd_array *a = nd_test(L, idx);
    if (!a)
        luaL_typeerror(L, idx, "nd array");
    return a;
}

/* Element count of a shape; raises if the byte size would be unreasonable. */
static size_t nd_shape_count(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape)
{
    if (ndim < 0 || ndim > ND_MAX_DIMS)
        luaL_error(L, "nd: %d dimensions (at most %d)", ndim, ND_MAX_DIMS);
    if ((int)dtype < 0 || dtype >= ND_DTYPE_COUNT)
        luaL_error(L, "nd: invalid dtype %d", (int)dtype);
    size_t count = 1, limit = ND_MAX_BYTES / nd_dtype_size(dtype);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] != 0 && count > limit / shape[d])
            luaL_error(L, "nd: array too large");
        count *= shape[d];
    }
    return count;
}

/* Pushes an array userdata with no buffer yet (buf NULL until attached). */
static nd_array *nd_push_shell(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape,
                               size_t count)
{
    nd_array *a = lua_newuserdatauv(L, sizeof *a, 0);
    memset(a, 0, sizeof *a);
    a->dtype = dtype;
    a->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        a->shape[d] = shape[d];
    a->count = count;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &nd_registry_key);
    lua_setmetatable(L, -2);
    return a;
}

nd_array *nd_push_new(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape)
{
    size_t count = nd_shape_count(L, dtype, ndim, shape);
    size_t bytes = count * nd_dtype_size(dtype);
    nd_array *a = nd_push_shell(L, dtype, ndim, shape, count);
    unsigned char *data = calloc(bytes ? bytes : 1, 1);
    if (!data)
        luaL_error(L, "nd: not enough memory for %I bytes", (LUAI_UACINT)bytes);
    a->buf = nd_buffer_alloc(L, bytes, data);
    if (!a->buf) {
        free(data);
        luaL_error(L, "nd: not enough memory");
    }
    nd_maybe_collect(L);
    return a;
}

nd_array *nd_push_adopt(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape,
                        unsigned char *data)
{
    size_t count = nd_shape_count(L, dtype, ndim, shape);
    size_t bytes = count * nd_dtype_size(dtype);
    nd_array *a = nd_push_shell(L, dtype, ndim, shape, count);
    unsigned char *placeholder = NULL; /* ours, for an empty array given NULL */
    if (!data) {
        if (bytes)
            luaL_error(L, "nd: adopting NULL data for %I bytes", (LUAI_UACINT)bytes);
        data = placeholder = malloc(1);
        if (!data)
            luaL_error(L, "nd: not enough memory");
    }
    nd_buffer *b = nd_buffer_alloc(L, bytes, data);
    if (!b) {
        free(placeholder);
        luaL_error(L, "nd: not enough memory"); /* data is still the caller's */
    }
    a->buf = b; /* owned from here on */
    nd_maybe_collect(L);
    return a;
}

/* Pushes a view of `base` sharing its buffer. */
static nd_array *nd_push_view(lua_State *L, nd_array *base, int ndim, const size_t *shape,
                              size_t offset)
{
    size_t count = nd_shape_count(L, base->dtype, ndim, shape);
    nd_array *v = nd_push_shell(L, base->dtype, ndim, shape, count);
    v->buf = nd_buffer_retain(base);
    v->offset = offset;
    return v;
}

/* ------------------------------------------------------- element helpers */

#define ND_CASES(X)                                                                                \
    X(ND_FLOAT64, double)                                                                          \
    X(ND_FLOAT32, float)                                                                           \
    X(ND_INT64, int64_t)                                                                           \
    X(ND_INT32, int32_t)                                                                           \
    X(ND_UINT8, uint8_t)

static int nd_is_float(nd_dtype t)
{
    return t == ND_FLOAT64 || t == ND_FLOAT32;
}

/* Float -> int64 without UB: truncates toward zero, saturates, NaN -> 0. */
static int64_t nd_f2i(double v)
{
    if (isnan(v))
        return 0;
    if (v >= 9223372036854775807.0)
        return INT64_MAX;
    if (v <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)v;
}

/* Stores one value into element i of raw storage of dtype t.  Narrowing
 * integer conversions wrap (GCC/Clang define them as modulo). */
static void nd_store_i(void *p, nd_dtype t, size_t i, int64_t v)
{
    switch (t) {
    case ND_FLOAT64: ((double *)p)[i] = (double)v; break;
    case ND_FLOAT32: ((float *)p)[i] = (float)v; break;
    case ND_INT64: ((int64_t *)p)[i] = v; break;
    case ND_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
    case ND_UINT8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    default: break;
    }
}

static void nd_store_f(void *p, nd_dtype t, size_t i, double v)
{
    switch (t) {
    case ND_FLOAT64: ((double *)p)[i] = v; break;
    case ND_FLOAT32: ((float *)p)[i] = (float)v; break;
    default: nd_store_i(p, t, i, nd_f2i(v)); break;
    }
}

/* Stores the Lua number at idx; raises if it is not a number. */
static void nd_store_lua(lua_State *L, void *p, nd_dtype t, size_t i, int idx)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "nd: element must be a number, got %s", luaL_typename(L, idx));
    if (lua_isinteger(L, idx))
        nd_store_i(p, t, i, (int64_t)lua_tointeger(L, idx));
    else
        nd_store_f(p, t, i, (double)lua_tonumber(L, idx));
}

static void nd_push_elem(lua_State *L, const void *p, nd_dtype t, size_t i)
{
    switch (t) {
    case ND_FLOAT64: lua_pushnumber(L, ((const double *)p)[i]); break;
    case ND_FLOAT32: lua_pushnumber(L, ((const float *)p)[i]); break;
    case ND_INT64: lua_pushinteger(L, ((const int64_t *)p)[i]); break;
    case ND_INT32: lua_pushinteger(L, ((const int32_t *)p)[i]); break;
    case ND_UINT8: lua_pushinteger(L, ((const uint8_t *)p)[i]); break;
    default: lua_pushnil(L); break;
    }
}

/* Converts n elements from (src, st) into (dst, dt): one typed loop per
 * pair.  Float -> integer goes through nd_f2i (no UB); integer narrowing
 * wraps. */
#define ND_CONV_LOOP(DT, ST, EXPR)                                                                 \
    do {                                                                                           \
        DT *d = dst;                                                                               \
        const ST *s = src;                                                                         \
        for (size_t i = 0; i < n; i++) {                                                           \
            ST v = s[i];                                                                           \
            d[i] = (DT)(EXPR);                                                                     \
        }                                                                                          \
    } while (0)

#define ND_CONV_FROM(ST, IS_FLOAT_SRC)                                                             \
    switch (dt) {                                                                                  \
    case ND_FLOAT64: ND_CONV_LOOP(double, ST, v); break;                                           \
    case ND_FLOAT32: ND_CONV_LOOP(float, ST, v); break;                                            \
    case ND_INT64: ND_CONV_LOOP(int64_t, ST, IS_FLOAT_SRC ? nd_f2i((double)v) : (int64_t)v);       \
        break;                                                                                     \
    case ND_INT32: ND_CONV_LOOP(int32_t, ST, IS_FLOAT_SRC ? nd_f2i((double)v) : (int64_t)v);       \
        break;                                                                                     \
    case ND_UINT8: ND_CONV_LOOP(uint8_t, ST, IS_FLOAT_SRC ? nd_f2i((double)v) : (int64_t)v);       \
        break;                                                                                     \
    default: break;                                                                                \
    }

static void nd_convert(void *dst, nd_dtype dt, const void *src, nd_dtype st, size_t n)
{
    if (dt == st) {
        memcpy(dst, src, n * nd_dtype_size(dt));
        return;
    }
    switch (st) {
    case ND_FLOAT64: ND_CONV_FROM(double, 1); break;
    case ND_FLOAT32: ND_CONV_FROM(float, 1); break;
    case ND_INT64: ND_CONV_FROM(int64_t, 0); break;
    case ND_INT32: ND_CONV_FROM(int32_t, 0); break;
    case ND_UINT8: ND_CONV_FROM(uint8_t, 0); break;
    default: break;
    }
}

static nd_dtype nd_check_dtype(lua_State *L, int idx, nd_dtype dflt)
{
    if (lua_isnoneornil(L, idx))
        return dflt;
    const char *name = luaL_checkstring(L, idx);
    int t = nd_dtype_parse(name);
    if (t < 0)
        luaL_argerror(
            L, idx,
            lua_pushfstring(L, "unknown dtype '%s' (float64, float32, int64, int32, uint8)", name));
    return (nd_dtype)t;
}

/* Reads a shape: a non-negative integer n (-> {n}) or a table of them. */
static int nd_check_shape(lua_State *L, int idx, size_t *shape)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer n;
        int isnum;
        n = lua_tointegerx(L, idx, &isnum);
        if (!isnum || n < 0)
            luaL_argerror(L, idx, "size must be a non-negative integer");
        shape[0] = (size_t)n;
        return 1;
    }
    if (!lua_istable(L, idx))
        luaL_typeerror(L, idx, "integer or shape table");
    lua_Unsigned len = lua_rawlen(L, idx);
    if (len > ND_MAX_DIMS)
        luaL_argerror(L, idx, "too many dimensions");
    for (int d = 0; d < (int)len; d++) {
        lua_rawgeti(L, idx, d + 1);
        int isnum;
        lua_Integer n = lua_tointegerx(L, -1, &isnum);
        if (!isnum || n < 0)
            luaL_argerror(L, idx, "shape entries must be non-negative integers");
        shape[d] = (size_t)n;
        lua_pop(L, 1);
    }
    return (int)len;
}

/* Writes "(4, 2)" style shape text into buf. */
static const char *nd_shape_text(const nd_array *a, char *buf, size_t size)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, size - n, "(");
    for (int d = 0; d < a->ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, d ? ", %zu" : "%zu", a->shape[d]);
    if (n < size)
        snprintf(buf + n, size - n, a->ndim == 1 ? ",)" : ")");
    return buf;
}

/* ------------------------------------------------------- constructors */

static int nd_fill_value(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape, int one)
{
    nd_array *a = nd_push_new(L, dtype, ndim, shape);
    if (one) {
        void *p = nd_data(a);
        for (size_t i = 0; i < a->count; i++)
            nd_store_i(p, dtype, i, 1);
    }
    return 1;
}

static int l_zeros(lua_State *L)
{
    size_t shape[ND_MAX_DIMS];
    int ndim = nd_check_shape(L, 1, shape);
    return nd_fill_value(L, nd_check_dtype(L, 2, ND_FLOAT64), ndim, shape, 0);
}

static int l_ones(lua_State *L)
{
    size_t shape[ND_MAX_DIMS];
    int ndim = nd_check_shape(L, 1, shape);
    return nd_fill_value(L, nd_check_dtype(L, 2, ND_FLOAT64), ndim, shape, 1);
}

/* nd.arange([start,] stop [, step] [, dtype]) */
static int l_arange(lua_State *L)
{
    int top = lua_gettop(L), nnum = top;
    if (top >= 1 && lua_type(L, top) == LUA_TSTRING)
        nnum = top - 1;
    if (nnum < 1 || nnum > 3)
        return luaL_error(L, "nd.arange([start,] stop [, step] [, dtype])");
    int all_int = 1;
    for (int i = 1; i <= nnum; i++) {
        luaL_checknumber(L, i);
        all_int &= lua_isinteger(L, i);
    }
    nd_dtype dtype = nd_check_dtype(L, nnum + 1, all_int ? ND_INT64 : ND_FLOAT64);
    size_t n;
    if (all_int) {
        lua_Integer start = nnum >= 2 ? lua_tointeger(L, 1) : 0;
        lua_Integer stop = nnum >= 2 ? lua_tointeger(L, 2) : lua_tointeger(L, 1);
        lua_Integer step = nnum >= 3 ? lua_tointeger(L, 3) : 1;
        if (step == 0)
            return luaL_argerror(L, 3, "step must not be zero");
        /* Distances in unsigned arithmetic cannot overflow. */
        uint64_t span, ustep;
        if (step > 0) {
            span = stop > start ? (uint64_t)stop - (uint64_t)start : 0;
            ustep = (uint64_t)step;
        } else {
            span = start > stop ? (uint64_t)start - (uint64_t)stop : 0;
            ustep = (uint64_t)0 - (uint64_t)step;
        }
        uint64_t cnt = span / ustep + (span % ustep != 0);
        if (cnt > ND_MAX_BYTES / 8)
            return luaL_error(L, "nd.arange: too many elements");
        n = (size_t)cnt;
        nd_array *a = nd_push_new(L, dtype, 1, &n);
        void *p = nd_data(a);
        for (size_t i = 0; i < n; i++)
            nd_store_i(p, dtype, i, (int64_t)((uint64_t)start + (uint64_t)i * (uint64_t)step));
        return 1;
    }
    double start = nnum >= 2 ? lua_tonumber(L, 1) : 0;
    double stop = nnum >= 2 ? lua_tonumber(L, 2) : lua_tonumber(L, 1);
    double step = nnum >= 3 ? lua_tonumber(L, 3) : 1;
    if (step == 0)
        return luaL_argerror(L, 3, "step must not be zero");
    double cnt = ceil((stop - start) / step);
    if (isnan(cnt))
        return luaL_error(L, "nd.arange: arguments must be finite");
    if (cnt < 0)
        cnt = 0;
    if (cnt > (double)(ND_MAX_BYTES / 8))
        return luaL_error(L, "nd.arange: too many elements");
    n = (size_t)cnt;
    nd_array *a = nd_push_new(L, dtype, 1, &n);
    void *p = nd_data(a);
    for (size_t i = 0; i < n; i++)
        nd_store_f(p, dtype, i, start + (double)i * step);
    return 1;
}

/* nd.linspace(a, b [, n=50]) */
static int l_linspace(lua_State *L)
{
    double lo = luaL_checknumber(L, 1), hi = luaL_checknumber(L, 2);
    lua_Integer n = luaL_optinteger(L, 3, 50);
    if (n < 0)
        return luaL_argerror(L, 3, "number of samples must be non-negative");
    if ((uint64_t)n > ND_MAX_BYTES / 8)
        return luaL_argerror(L, 3, "too many samples");
    size_t count = (size_t)n;
    nd_array *a = nd_push_new(L, ND_FLOAT64, 1, &count);
    double *p = nd_data(a);
    if (count == 1)
        p[0] = lo;
    else if (count > 1) {
        double step = (hi - lo) / (double)(count - 1);
        for (size_t i = 0; i < count; i++)
            p[i] = lo + (double)i * step;
        p[count - 1] = hi;
    }
    return 1;
}

/* nd.array: shape of a nested table from its first elements, checked in full
 * by nd_table_scan. */
static int nd_table_shape(lua_State *L, int idx, size_t *shape)
{
    int ndim = 0;
    lua_pushvalue(L, idx);
    while (lua_type(L, -1) == LUA_TTABLE && !nd_test(L, -1)) {
        if (ndim == ND_MAX_DIMS)
            luaL_error(L, "nd.array: more than %d dimensions", ND_MAX_DIMS);
        shape[ndim++] = (size_t)lua_rawlen(L, -1);
        if (shape[ndim - 1] == 0)
            break;
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return ndim;
}

/* Checks that the table at idx is a rectangular nest of numbers of the given
 * shape; clears *all_int if it meets a float. */
static void nd_table_scan(lua_State *L, int idx, int dim, int ndim, const size_t *shape,
                          int *all_int)
{
    luaL_checkstack(L, 4, "nd.array: nesting too deep");
    if ((size_t)lua_rawlen(L, idx) != shape[dim])
        luaL_error(L, "nd.array: ragged nested table (axis %d: expected %I elements, got %I)", dim,
                   (LUAI_UACINT)shape[dim], (LUAI_UACINT)lua_rawlen(L, idx));
    for (size_t i = 0; i < shape[dim]; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        if (dim + 1 < ndim) {
            if (lua_type(L, -1) != LUA_TTABLE || nd_test(L, -1))
                luaL_error(L, "nd.array: ragged nested table (axis %d)", dim + 1);
            nd_table_scan(L, lua_gettop(L), dim + 1, ndim, shape, all_int);
        } else if (lua_type(L, -1) != LUA_TNUMBER) {
            luaL_error(L, "nd.array: elements must be numbers, got %s", luaL_typename(L, -1));
        } else if (!lua_isinteger(L, -1)) {
            *all_int = 0;
        }
        lua_pop(L, 1);
    }
}

static void nd_table_fill(lua_State *L, int idx, int dim, int ndim, const size_t *shape, void *p,
                          nd_dtype t, size_t *pos)
{
    for (size_t i = 0; i < shape[dim]; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        if (dim + 1 < ndim)
            nd_table_fill(L, lua_gettop(L), dim + 1, ndim, shape, p, t, pos);
        else
            nd_store_lua(L, p, t, (*pos)++, -1);
        lua_pop(L, 1);
    }
}

static int l_array(lua_State *L)
{
    nd_array *src = nd_test(L, 1);
    if (src) { /* copy, possibly converting */
        nd_dtype t = nd_check_dtype(L, 2, src->dtype);
        nd_array *a = nd_push_new(L, t, src->ndim, src->shape);
        nd_convert(nd_data(a), t, nd_data(src), src->dtype, src->count);
        return 1;
    }
    if (lua_type(L, 1) == LUA_TNUMBER) { /* 0-d array */
        nd_dtype t = nd_check_dtype(L, 2, lua_isinteger(L, 1) ? ND_INT64 : ND_FLOAT64);
        nd_array *a = nd_push_new(L, t, 0, NULL);
        nd_store_lua(L, nd_data(a), t, 0, 1);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t shape[ND_MAX_DIMS];
    int ndim = nd_table_shape(L, 1, shape);
    int all_int = 1;
    nd_table_scan(L, 1, 0, ndim, shape, &all_int);
    size_t count = nd_shape_count(L, ND_FLOAT64, ndim, shape);
    nd_dtype t = nd_check_dtype(L, 2, (all_int && count > 0) ? ND_INT64 : ND_FLOAT64);
    nd_array *a = nd_push_new(L, t, ndim, shape);
    size_t pos = 0;
    if (count > 0)
        nd_table_fill(L, 1, 0, ndim, shape, nd_data(a), t, &pos);
    return 1;
}

/* ---------------------------------------------------------- reductions */

static int m_sum(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    const void *p = nd_data(a);
    size_t n = a->count;
    switch (a->dtype) {
#define SUM_CASE(TAG, T)                                                                           \
    case TAG: {                                                                                    \
        const T *s = p;                                                                            \
        if (nd_is_float(TAG)) {                                                                    \
            double acc = 0;                                                                        \
            for (size_t i = 0; i < n; i++)                                                         \
                acc += (double)s[i];                                                               \
            lua_pushnumber(L, acc);                                                                \
        } else {                                                                                   \
            uint64_t acc = 0; /* wraps like numpy's int64 sum */                                   \
            for (size_t i = 0; i < n; i++)                                                         \
                acc += (uint64_t)(int64_t)s[i];                                                    \
            lua_pushinteger(L, (lua_Integer)acc);                                                  \
        }                                                                                          \
        break;                                                                                     \
    }
        ND_CASES(SUM_CASE)
#undef SUM_CASE
    default: lua_pushnil(L); break;
    }
    return 1;
}

static int nd_minmax(lua_State *L, int want_max)
{
    nd_array *a = nd_check(L, 1);
    const void *p = nd_data(a);
    size_t n = a->count;
    if (n == 0)
        return luaL_error(L, "nd: %s of an empty array", want_max ? "max" : "min");
    switch (a->dtype) {
#define MINMAX_CASE(TAG, T)                                                                        \
    case TAG: {                                                                                    \
        const T *s = p;                                                                            \
        T best = s[0];                                                                             \
        for (size_t i = 1; i < n; i++) {                                                           \
            T v = s[i];                                                                            \
            if (nd_is_float(TAG) && isnan((double)v)) { /* NaN propagates, as numpy */             \
                best = v;                                                                          \
                break;                                                                             \
            }                                                                                      \
            if (want_max ? v > best : v < best)                                                    \
                best = v;                                                                          \
        }                                                                                          \
        if (nd_is_float(TAG))                                                                      \
            lua_pushnumber(L, (lua_Number)best);                                                   \
        else                                                                                       \
            lua_pushinteger(L, (lua_Integer)best);                                                 \
        break;                                                                                     \
    }
        ND_CASES(MINMAX_CASE)
#undef MINMAX_CASE
    default: lua_pushnil(L); break;
    }
    return 1;
}

static int m_min(lua_State *L)
{
    return nd_minmax(L, 0);
}
static int m_max(lua_State *L)
{
    return nd_minmax(L, 1);
}

static int m_mean(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    const void *p = nd_data(a);
    size_t n = a->count;
    double acc = 0;
    switch (a->dtype) {
#define MEAN_CASE(TAG, T)                                                                          \
    case TAG: {                                                                                    \
        const T *s = p;                                                                            \
        for (size_t i = 0; i < n; i++)                                                             \
            acc += (double)s[i];                                                                   \
        break;                                                                                     \
    }
        ND_CASES(MEAN_CASE)
#undef MEAN_CASE
    default: break;
    }
    lua_pushnumber(L, n ? acc / (double)n : NAN);
    return 1;
}

/* ------------------------------------------------------------ methods */

static int m_shape(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    lua_createtable(L, a->ndim, 0);
    for (int d = 0; d < a->ndim; d++) {
        lua_pushinteger(L, (lua_Integer)a->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

static int m_dtype(lua_State *L)
{
    lua_pushstring(L, nd_dtype_name(nd_check(L, 1)->dtype));
    return 1;
}

static int m_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)nd_check(L, 1)->count);
    return 1;
}

static void nd_totable_rec(lua_State *L, const nd_array *a, int dim, size_t *pos)
{
    const void *p = nd_data(a);
    lua_createtable(L, (int)(a->shape[dim] < INT32_MAX ? a->shape[dim] : 0), 0);
    for (size_t i = 0; i < a->shape[dim]; i++) {
        if (dim + 1 < a->ndim)
            nd_totable_rec(L, a, dim + 1, pos);
        else
            nd_push_elem(L, p, a->dtype, (*pos)++);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int m_totable(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    luaL_checkstack(L, ND_MAX_DIMS + 4, NULL);
    if (a->ndim == 0) {
        nd_push_elem(L, nd_data(a), a->dtype, 0);
        return 1;
    }
    size_t pos = 0;
    nd_totable_rec(L, a, 0, &pos);
    return 1;
}

static int m_copy(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    nd_array *c = nd_push_new(L, a->dtype, a->ndim, a->shape);
    memcpy(nd_data(c), nd_data(a), nd_bytes(a));
    return 1;
}

static int m_astype(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    nd_dtype t = nd_check_dtype(L, 2, ND_DTYPE_COUNT);
    if (t == ND_DTYPE_COUNT)
        return luaL_argerror(L, 2, "dtype expected");
    nd_array *c = nd_push_new(L, t, a->ndim, a->shape);
    nd_convert(nd_data(c), t, nd_data(a), a->dtype, a->count);
    return 1;
}

/* a:reshape({d0, d1, ...}) or a:reshape(d0, d1, ...); one entry may be -1. */
static int m_reshape(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    long long dims[ND_MAX_DIMS];
    int ndim = 0;
    if (lua_istable(L, 2)) {
        lua_Unsigned len = lua_rawlen(L, 2);
        if (len > ND_MAX_DIMS)
            return luaL_argerror(L, 2, "too many dimensions");
        for (int d = 0; d < (int)len; d++) {
            lua_rawgeti(L, 2, d + 1);
            int isnum;
            dims[ndim++] = (long long)lua_tointegerx(L, -1, &isnum);
            if (!isnum)
                return luaL_argerror(L, 2, "shape entries must be integers");
            lua_pop(L, 1);
        }
    } else {
        int top = lua_gettop(L);
        if (top - 1 > ND_MAX_DIMS)
            return luaL_error(L, "reshape: too many dimensions");
        for (int i = 2; i <= top; i++)
            dims[ndim++] = (long long)luaL_checkinteger(L, i);
    }
    size_t shape[ND_MAX_DIMS], known = 1;
    int infer = -1;
    for (int d = 0; d < ndim; d++) {
        if (dims[d] == -1 && infer < 0) {
            infer = d;
            continue;
        }
        if (dims[d] < 0)
            return luaL_error(L, "reshape: invalid dimension %d", (int)dims[d]);
        shape[d] = (size_t)dims[d];
        if (shape[d] && known > SIZE_MAX / shape[d])
            return luaL_error(L, "reshape: shape too large");
        known *= shape[d];
    }
    if (infer >= 0) {
        if (known == 0 || a->count % known)
            return luaL_error(L, "reshape: cannot infer a dimension for %I elements",
                              (LUAI_UACINT)a->count);
        shape[infer] = a->count / known;
        known = a->count;
    }
    if (known != a->count)
        return luaL_error(L, "reshape: cannot reshape %I elements into %I", (LUAI_UACINT)a->count,
                          (LUAI_UACINT)known);
    nd_push_view(L, a, ndim, shape, a->offset);
    return 1;
}

/* -------------------------------------------------------- metamethods */

static int mm_gc(lua_State *L)
{
    nd_array *a = nd_test(L, 1);
    if (a && a->buf) {
        nd_buffer_release(a->buf);
        a->buf = NULL;
    }
    return 0;
}

static int mm_len(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    if (a->ndim == 0)
        return luaL_error(L, "nd: length of a 0-d array");
    lua_pushinteger(L, (lua_Integer)a->shape[0]);
    return 1;
}

/* 1-based index along axis 0 -> 0-based position, or raises. */
static size_t nd_check_index(lua_State *L, nd_array *a, int idx)
{
    if (a->ndim == 0)
        luaL_error(L, "nd: cannot index a 0-d array");
    int isnum;
    lua_Integer i = lua_tointegerx(L, idx, &isnum);
    if (!isnum)
        luaL_error(L, "nd: index must be an integer, got %s",
                   lua_type(L, idx) == LUA_TNUMBER ? "a non-integral number"
                                                   : luaL_typename(L, idx));
    if (i < 1 || (lua_Unsigned)i > a->shape[0])
        luaL_error(L, "nd: index %I out of range for axis 0 with size %I (indices are 1-based)",
                   (LUAI_UACINT)i, (LUAI_UACINT)a->shape[0]);
    return (size_t)(i - 1);
}

static size_t nd_row_count(const nd_array *a)
{
    size_t n = 1;
    for (int d = 1; d < a->ndim; d++)
        n *= a->shape[d];
    return n;
}

static int mm_index(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1)); /* methods */
        return 1;
    }
    size_t i = nd_check_index(L, a, 2);
    if (a->ndim == 1) {
        nd_push_elem(L, nd_data(a), a->dtype, i);
        return 1;
    }
    /* n-D: a view of row i, sharing memory. */
    size_t rows = nd_row_count(a);
    nd_push_view(L, a, a->ndim - 1, a->shape + 1, a->offset + i * rows * nd_dtype_size(a->dtype));
    return 1;
}

static int mm_newindex(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    if (lua_type(L, 2) != LUA_TNUMBER)
        return luaL_error(L, "nd: cannot set field '%s' of an nd array",
                          lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : luaL_typename(L, 2));
    size_t i = nd_check_index(L, a, 2);
    if (a->ndim == 1) {
        nd_store_lua(L, nd_data(a), a->dtype, i, 3);
        return 0;
    }
    size_t rows = nd_row_count(a), esize = nd_dtype_size(a->dtype);
    unsigned char *row = (unsigned char *)nd_data(a) + i * rows * esize;
    nd_array *v = nd_test(L, 3);
    if (v) {
        int same = v->ndim == a->ndim - 1 && v->count == rows;
        for (int d = 0; same && d < v->ndim; d++)
            same = v->shape[d] == a->shape[d + 1];
        if (!same)
            return luaL_error(L, "nd: row assignment needs an array of the row's shape");
        /* memmove semantics: the source may be a view of this very row. */
        if (v->dtype == a->dtype)
            memmove(row, nd_data(v), rows * esize);
        else
            nd_convert(row, a->dtype, nd_data(v), v->dtype, rows);
        return 0;
    }
    if (lua_type(L, 3) != LUA_TNUMBER)
        return luaL_error(L, "nd: a row can be set from a number or an nd array, not %s",
                          luaL_typename(L, 3));
    for (size_t k = 0; k < rows; k++)
        nd_store_lua(L, row, a->dtype, k, 3);
    return 0;
}

/* ---- repr */

static void nd_repr_elem(luaL_Buffer *b, const void *p, nd_dtype t, size_t i)
{
    char s[64];
    if (nd_is_float(t)) {
        double v = t == ND_FLOAT64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
        if (isnan(v))
            snprintf(s, sizeof s, "nan");
        else if (isinf(v))
            snprintf(s, sizeof s, v > 0 ? "inf" : "-inf");
        else {
            snprintf(s, sizeof s, t == ND_FLOAT64 ? "%.14g" : "%.7g", v);
            if (!strpbrk(s, ".e"))
                strcat(s, ".0");
        }
    } else {
        int64_t v = t == ND_INT64   ? ((const int64_t *)p)[i]
                    : t == ND_INT32 ? ((const int32_t *)p)[i]
                                    : ((const uint8_t *)p)[i];
        snprintf(s, sizeof s, "%" PRId64, v);
    }
    luaL_addstring(b, s);
}

static void nd_repr_rec(luaL_Buffer *b, const nd_array *a, int dim, size_t base, int summarise)
{
    size_t stride = 1;
    for (int d = dim + 1; d < a->ndim; d++)
        stride *= a->shape[d];
    size_t n = a->shape[dim];
    luaL_addchar(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (summarise && n > 2 * ND_REPR_EDGE && i == ND_REPR_EDGE) {
            luaL_addstring(b, "..., ");
            i = n - ND_REPR_EDGE;
        }
        if (dim + 1 < a->ndim)
            nd_repr_rec(b, a, dim + 1, base + i * stride, summarise);
        else
            nd_repr_elem(b, nd_data(a), a->dtype, base + i);
        if (i + 1 < n)
            luaL_addstring(b, ", ");
    }
    luaL_addchar(b, ']');
}

static int mm_tostring(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "nd.array(");
    if (a->ndim == 0)
        nd_repr_elem(&b, nd_data(a), a->dtype, 0);
    else
        nd_repr_rec(&b, a, 0, 0, a->count > ND_REPR_THRESHOLD);
    if (a->count == 0 && a->ndim > 1) { /* shape is not visible in "[]" */
        char s[160];
        luaL_addstring(&b, ", shape=");
        luaL_addstring(&b, nd_shape_text(a, s, sizeof s));
    }
    luaL_addstring(&b, ", dtype=");
    luaL_addstring(&b, nd_dtype_name(a->dtype));
    luaL_addchar(&b, ')');
    luaL_pushresult(&b);
    return 1;
}

/* ---- arithmetic */

typedef enum nd_op { ND_ADD, ND_SUB, ND_MUL, ND_DIV } nd_op;

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
    /* both integer, different: the wider one (all are signed but uint8,
     * which fits in either signed type) */
    if (x == ND_INT64 || y == ND_INT64)
        return ND_INT64;
    return ND_INT32;
}

/* Integer arithmetic that wraps without UB. */
static inline int64_t nd_wrap_i64(uint64_t v)
{
    return (int64_t)v;
}

#define ND_BINLOOP(T, EXPR)                                                                        \
    do {                                                                                           \
        const T *xs = x, *ys = y;                                                                  \
        T *os = out;                                                                               \
        if (sx && sy)                                                                              \
            for (size_t i = 0; i < n; i++) {                                                       \
                T X = xs[i], Y = ys[i];                                                            \
                os[i] = (EXPR);                                                                    \
            }                                                                                      \
        else if (sx)                                                                               \
            for (size_t i = 0; i < n; i++) {                                                       \
                T X = xs[i], Y = ys[0];                                                            \
                os[i] = (EXPR);                                                                    \
            }                                                                                      \
        else                                                                                       \
            for (size_t i = 0; i < n; i++) {                                                       \
                T X = xs[0], Y = ys[i];                                                            \
                os[i] = (EXPR);                                                                    \
            }                                                                                      \
    } while (0)

#define ND_OPS(T, ADD, SUB, MUL, DIV)                                                              \
    switch (op) {                                                                                  \
    case ND_ADD: ND_BINLOOP(T, ADD); break;                                                        \
    case ND_SUB: ND_BINLOOP(T, SUB); break;                                                        \
    case ND_MUL: ND_BINLOOP(T, MUL); break;                                                        \
    case ND_DIV: ND_BINLOOP(T, DIV); break;                                                        \
    }

/* out[i] = x[i*sx] op y[i*sy] for i < n, all of dtype t; sx/sy are 0 for a
 * scalar operand.  Division is only reached for float dtypes. */
static void nd_binop_kernel(nd_op op, nd_dtype t, void *out, const void *x, int sx, const void *y,
                            int sy, size_t n)
{
    switch (t) {
    case ND_FLOAT64: ND_OPS(double, X + Y, X - Y, X * Y, X / Y); break;
    case ND_FLOAT32: ND_OPS(float, X + Y, X - Y, X * Y, X / Y); break;
    case ND_INT64:
        ND_OPS(int64_t, nd_wrap_i64((uint64_t)X + (uint64_t)Y),
               nd_wrap_i64((uint64_t)X - (uint64_t)Y), nd_wrap_i64((uint64_t)X * (uint64_t)Y),
               ((void)X, (void)Y, 0));
        break;
    case ND_INT32:
        ND_OPS(int32_t, (int32_t)((int64_t)X + Y), (int32_t)((int64_t)X - Y),
               (int32_t)((int64_t)X * Y), ((void)X, (void)Y, 0));
        break;
    case ND_UINT8:
        ND_OPS(uint8_t, (uint8_t)(X + Y), (uint8_t)(X - Y), (uint8_t)((unsigned)X * Y),
               ((void)X, (void)Y, 0));
        break;
    default: break;
    }
}

static const char *const nd_op_names[] = {"+", "-", "*", "/"};

/* An operand: an array (p, stride 1) or a Lua number turned into one element
 * of the result dtype (stride 0). */
static int nd_arith(lua_State *L, nd_op op)
{
    nd_array *a = nd_test(L, 1), *b = nd_test(L, 2);
    for (int i = 1; i <= 2; i++)
        if (!nd_test(L, i) && lua_type(L, i) != LUA_TNUMBER)
            return luaL_error(L, "nd: cannot apply '%s' to an nd array and a %s value",
                              nd_op_names[op], luaL_typename(L, i));
    nd_dtype t;
    const nd_array *shape_of;
    if (a && b) {
        int same = a->ndim == b->ndim;
        for (int d = 0; same && d < a->ndim; d++)
            same = a->shape[d] == b->shape[d];
        if (!same) {
            char sa[160], sb[160];
            return luaL_error(L, "nd: shape mismatch for '%s': %s vs %s", nd_op_names[op],
                              nd_shape_text(a, sa, sizeof sa), nd_shape_text(b, sb, sizeof sb));
        }
        t = nd_promote(a->dtype, b->dtype);
        shape_of = a;
    } else {
        const nd_array *arr = a ? a : b;
        int scalar_idx = a ? 2 : 1;
        t = arr->dtype;
        if (!nd_is_float(t) && !lua_isinteger(L, scalar_idx))
            t = ND_FLOAT64;
        shape_of = arr;
    }
    if (op == ND_DIV && !nd_is_float(t))
        t = ND_FLOAT64;

    nd_array *r = nd_push_new(L, t, shape_of->ndim, shape_of->shape);
    size_t n = r->count, esize = nd_dtype_size(t);
    /* Scalars as one element of dtype t; arrays of another dtype converted
     * into temporaries (malloc'd: no Lua call may raise while they live). */
    unsigned char sx_buf[8], sy_buf[8];
    const void *xp, *yp;
    void *tmp_x = NULL, *tmp_y = NULL;
    if (a) {
        if (a->dtype != t && n) {
            tmp_x = malloc(n * esize);
            if (!tmp_x)
                return luaL_error(L, "nd: not enough memory");
            nd_convert(tmp_x, t, nd_data(a), a->dtype, n);
        }
        xp = tmp_x ? tmp_x : nd_data(a);
    } else {
        nd_store_lua(L, sx_buf, t, 0, 1);
        xp = sx_buf;
    }
    if (b) {
        if (b->dtype != t && n) {
            tmp_y = malloc(n * esize);
            if (!tmp_y) {
                free(tmp_x);
                return luaL_error(L, "nd: not enough memory");
            }
            nd_convert(tmp_y, t, nd_data(b), b->dtype, n);
        }
        yp = tmp_y ? tmp_y : nd_data(b);
    } else {
        nd_store_lua(L, sy_buf, t, 0, 2);
        yp = sy_buf;
    }
    nd_binop_kernel(op, t, nd_data(r), xp, a != NULL, yp, b != NULL, n);
    free(tmp_x);
    free(tmp_y);
    return 1;
}

static int mm_add(lua_State *L)
{
    return nd_arith(L, ND_ADD);
}
static int mm_sub(lua_State *L)
{
    return nd_arith(L, ND_SUB);
}
static int mm_mul(lua_State *L)
{
    return nd_arith(L, ND_MUL);
}
static int mm_div(lua_State *L)
{
    return nd_arith(L, ND_DIV);
}

static int mm_unm(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    nd_array *r = nd_push_new(L, a->dtype, a->ndim, a->shape);
    size_t n = a->count;
    switch (a->dtype) {
#define UNM_CASE(TAG, T, EXPR)                                                                     \
    case TAG: {                                                                                    \
        const T *s = nd_data(a);                                                                   \
        T *o = nd_data(r);                                                                         \
        for (size_t i = 0; i < n; i++) {                                                           \
            T X = s[i];                                                                            \
            o[i] = (EXPR);                                                                         \
        }                                                                                          \
        break;                                                                                     \
    }
        UNM_CASE(ND_FLOAT64, double, -X)
        UNM_CASE(ND_FLOAT32, float, -X)
        UNM_CASE(ND_INT64, int64_t, nd_wrap_i64((uint64_t)0 - (uint64_t)X))
        UNM_CASE(ND_INT32, int32_t, (int32_t)(-(int64_t)X))
        UNM_CASE(ND_UINT8, uint8_t, (uint8_t)(0u - X))
#undef UNM_CASE
    default: break;
    }
    return 1;
}

/* ------------------------------------------------------------ module */

static const luaL_Reg nd_methods[] = {
    {"sum", m_sum},     {"min", m_min},       {"max", m_max},         {"mean", m_mean},
    {"shape", m_shape}, {"dtype", m_dtype},   {"size", m_size},       {"totable", m_totable},
    {"copy", m_copy},   {"astype", m_astype}, {"reshape", m_reshape}, {NULL, NULL},
};

static const luaL_Reg nd_metamethods[] = {
    {"__gc", mm_gc},   {"__len", mm_len}, {"__newindex", mm_newindex}, {"__tostring", mm_tostring},
    {"__add", mm_add}, {"__sub", mm_sub}, {"__mul", mm_mul},           {"__div", mm_div},
    {"__unm", mm_unm}, {NULL, NULL},
};

static const luaL_Reg nd_functions[] = {
    {"array", l_array},   {"zeros", l_zeros},       {"ones", l_ones},
    {"arange", l_arange}, {"linspace", l_linspace}, {NULL, NULL},
};

int luaopen_nd(lua_State *L)
{
    luaL_newmetatable(L, ND_METATABLE);
    luaL_setfuncs(L, nd_metamethods, 0);
    lua_pushliteral(L, "nd array"); /* shown by luaL_typeerror / tostring fallbacks */
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "nd array");
    lua_setfield(L, -2, "__metatable"); /* getmetatable(a) cannot reach the real one */
    luaL_newlib(L, nd_methods);
    lua_pushcclosure(L, mm_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nd_registry_key);
    lua_pop(L, 1);

    luaL_newlib(L, nd_functions);
    return 1;
}
