/* nd.c — the core of the `nd` module (see nd.h): buffers, the array object,
 * views, the C API, dtype conversion, argument parsing and luaopen_nd.  The
 * operations live in nd_new.c (constructors), nd_shape.c (indexing, slices,
 * reshape), nd_ops.c (elementwise), nd_reduce.c (reductions, dot) and
 * nd_repr.c (tostring).
 *
 * Element memory is malloc'd, not Lua's: blobs received from the controller
 * are adopted as they are (zero-copy) and MPI may keep using a buffer after
 * its Lua object is gone.  Lua's collector does not see that memory, so
 * nd_maybe_collect runs a full collection when a lot of it was allocated
 * since the last one (otherwise a loop making big temporaries grows without
 * bound).
 */
#include "nd_impl.h"
#include "bigmem.h"
#include "buf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Registry key (its address) of the metatable, so nd_test never allocates. */
static const char nd_registry_key = 'n';

/* Bytes of element memory alive and allocated since the last collection we
 * caused.  One Lua state per engine process, used from its thread only. */
static size_t nd_live_bytes;
static size_t nd_bytes_since_gc;
static size_t nd_live_after_gc;
#define ND_GC_MIN_BYTES ((size_t)64 << 20)

/* ---------------------------------------------------------------- buffers */

/* malloc / calloc for element memory.  An expression like `y = a * x + y`
 * makes two large temporaries per evaluation; bigmem hands the blocks of the
 * last evaluation out again instead of fresh memory (a page fault per 4 KiB,
 * more than the arithmetic). */
static unsigned char *nd_alloc_bytes(size_t bytes, int zero)
{
    return zero ? bigmem_calloc(bytes) : bigmem_alloc(bytes);
}

nd_buffer *nd_buffer_wrap(unsigned char *data, size_t bytes)
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

unsigned char *nd_buffer_data(nd_buffer *buf)
{
    return buf->data;
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

nd_buffer *nd_buffer_share(nd_buffer *b)
{
    b->refs++;
    return b;
}

nd_buffer *nd_buffer_of(const nd_array *a)
{
    return a->buf;
}

void nd_buffer_release(nd_buffer *b)
{
    if (!b || --b->refs > 0)
        return;
    nd_live_bytes -= b->bytes;
    bigmem_free(b->data);
    free(b);
}

/* ---------------------------------------------------------------- C API */

void *nd_data(const nd_array *a)
{
    return nd_ptr(a);
}
int nd_is_contiguous(const nd_array *a)
{
    return a->contiguous;
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
const ptrdiff_t *nd_strides(const nd_array *a)
{
    return a->strides;
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

/* Copies one row of n elements of size es between strided and contiguous
 * layouts; `stride` is in elements on the strided side. */
#define ND_ROW_COPY(T, DST, DSTEP, SRC, SSTEP)                                                     \
    do {                                                                                           \
        T *d_ = (T *)(DST); /* NOLINT(bugprone-macro-parentheses): T is a type */                  \
        const T *s_ = (const T *)(SRC);                                                            \
        for (size_t j = 0; j < n; j++)                                                             \
            d_[(ptrdiff_t)j * (DSTEP)] = s_[(ptrdiff_t)j * (SSTEP)];                               \
    } while (0)

static void nd_row_copy(unsigned char *dst, ptrdiff_t dstep, const unsigned char *src,
                        ptrdiff_t sstep, size_t n, size_t es)
{
    switch (es) {
    case 8: ND_ROW_COPY(uint64_t, dst, dstep, src, sstep); break;
    case 4: ND_ROW_COPY(uint32_t, dst, dstep, src, sstep); break;
    default: ND_ROW_COPY(uint8_t, dst, dstep, src, sstep); break;
    }
}

/* Walks a's rows; to_array selects the direction of the copy. */
static void nd_copy_rows(const nd_array *a, unsigned char *flat, int to_array)
{
    size_t es = nd_dtype_size(a->dtype);
    if (a->contiguous || a->count == 0) {
        if (to_array)
            memmove(nd_ptr(a), flat, a->count * es);
        else
            memmove(flat, nd_ptr(a), a->count * es);
        return;
    }
    int nd = a->ndim;
    size_t n = a->shape[nd - 1], rows = a->count / n, idx[ND_MAX_DIMS] = {0};
    ptrdiff_t off = 0, step = a->strides[nd - 1];
    unsigned char *base = nd_ptr(a);
    for (size_t r = 0; r < rows; r++) {
        unsigned char *row = base + off * (ptrdiff_t)es;
        if (to_array)
            nd_row_copy(row, step, flat, 1, n, es);
        else
            nd_row_copy(flat, 1, row, step, n, es);
        flat += n * es;
        nd_next_row(nd, a->shape, idx, 1, &off, (const ptrdiff_t(*)[ND_MAX_DIMS])a->strides);
    }
}

void nd_copy_out(const nd_array *a, void *dst)
{
    nd_copy_rows(a, dst, 0);
}

void nd_copy_in(nd_array *a, const void *src)
{
    nd_copy_rows(a, (unsigned char *)(uintptr_t)src, 1);
}

ptrdiff_t nd_offset_of(const nd_array *a, size_t k)
{
    ptrdiff_t off = 0;
    for (int d = a->ndim - 1; d >= 0; d--) {
        size_t n = a->shape[d];
        off += (ptrdiff_t)(k % n) * a->strides[d];
        k /= n;
    }
    return off * (ptrdiff_t)nd_dtype_size(a->dtype);
}

/* ---------------------------------------------------------- construction */

size_t nd_shape_count(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape)
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

void nd_c_strides(int ndim, const size_t *shape, ptrdiff_t *strides)
{
    ptrdiff_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        s *= (ptrdiff_t)(shape[d] ? shape[d] : 1);
    }
}

void nd_update_contiguous(nd_array *a)
{
    /* Axes of length 1 never move, whatever their stride. */
    ptrdiff_t s = 1;
    a->contiguous = 1;
    if (a->count == 0)
        return;
    for (int d = a->ndim - 1; d >= 0; d--) {
        if (a->shape[d] != 1 && a->strides[d] != s) {
            a->contiguous = 0;
            return;
        }
        s *= (ptrdiff_t)a->shape[d];
    }
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
    nd_c_strides(ndim, shape, a->strides);
    a->contiguous = 1;
    a->count = count;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &nd_registry_key);
    lua_setmetatable(L, -2);
    return a;
}

static nd_array *nd_push_alloc(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape,
                               int zero)
{
    size_t count = nd_shape_count(L, dtype, ndim, shape);
    size_t bytes = count * nd_dtype_size(dtype);
    nd_array *a = nd_push_shell(L, dtype, ndim, shape, count);
    unsigned char *data = nd_alloc_bytes(bytes, zero);
    if (!data)
        luaL_error(L, "nd: not enough memory for %I bytes", (LUAI_UACINT)bytes);
    a->buf = nd_buffer_wrap(data, bytes);
    if (!a->buf) {
        bigmem_free(data);
        luaL_error(L, "nd: not enough memory");
    }
    nd_maybe_collect(L);
    return a;
}

nd_array *nd_push_new(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape)
{
    return nd_push_alloc(L, dtype, ndim, shape, 1);
}

nd_array *nd_push_uninit(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape)
{
    return nd_push_alloc(L, dtype, ndim, shape, 0);
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
    nd_buffer *b = nd_buffer_wrap(data, bytes);
    if (!b) {
        free(placeholder);
        luaL_error(L, "nd: not enough memory"); /* data is still the caller's */
    }
    a->buf = b; /* owned from here on */
    nd_maybe_collect(L);
    return a;
}

nd_array *nd_push_buffer_view(lua_State *L, nd_buffer *buf, size_t offset, nd_dtype dtype, int ndim,
                              const size_t *shape)
{
    size_t count = nd_shape_count(L, dtype, ndim, shape);
    if (offset > buf->bytes || count * nd_dtype_size(dtype) > buf->bytes - offset)
        luaL_error(L, "nd: view outside its buffer");
    nd_array *a = nd_push_shell(L, dtype, ndim, shape, count);
    buf->refs++;
    a->buf = buf;
    a->offset = offset;
    return a;
}

nd_array *nd_push_view(lua_State *L, nd_array *base, int ndim, const size_t *shape,
                       const ptrdiff_t *strides, size_t offset)
{
    size_t count = nd_shape_count(L, base->dtype, ndim, shape);
    nd_array *v = nd_push_shell(L, base->dtype, ndim, shape, count);
    for (int d = 0; d < ndim; d++)
        v->strides[d] = strides[d];
    nd_update_contiguous(v);
    v->buf = nd_buffer_retain(base);
    v->offset = offset;
    return v;
}

nd_array *nd_push_contiguous(lua_State *L, int idx)
{
    nd_array *a = nd_check(L, idx);
    if (a->contiguous) {
        lua_pushvalue(L, idx);
        return a;
    }
    nd_array *c = nd_push_uninit(L, a->dtype, a->ndim, a->shape);
    nd_copy_out(a, nd_ptr(c));
    return c;
}

/* ------------------------------------------------------- element helpers */

int64_t nd_f2i(double v)
{
    if (isnan(v))
        return 0;
    if (v >= 9223372036854775807.0)
        return INT64_MAX;
    if (v <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)v;
}

/* Narrowing integer conversions wrap (GCC/Clang define them as modulo). */
void nd_store_i(void *p, nd_dtype t, size_t i, int64_t v)
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

void nd_store_f(void *p, nd_dtype t, size_t i, double v)
{
    switch (t) {
    case ND_FLOAT64: ((double *)p)[i] = v; break;
    case ND_FLOAT32: ((float *)p)[i] = (float)v; break;
    default: nd_store_i(p, t, i, nd_f2i(v)); break;
    }
}

void nd_store_lua(lua_State *L, void *p, nd_dtype t, size_t i, int idx)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "nd: element must be a number, got %s", luaL_typename(L, idx));
    if (lua_isinteger(L, idx))
        nd_store_i(p, t, i, (int64_t)lua_tointeger(L, idx));
    else
        nd_store_f(p, t, i, (double)lua_tonumber(L, idx));
}

void nd_push_at(lua_State *L, const void *p, nd_dtype t)
{
    switch (t) {
    case ND_FLOAT64: lua_pushnumber(L, *(const double *)p); break;
    case ND_FLOAT32: lua_pushnumber(L, *(const float *)p); break;
    case ND_INT64: lua_pushinteger(L, *(const int64_t *)p); break;
    case ND_INT32: lua_pushinteger(L, *(const int32_t *)p); break;
    case ND_UINT8: lua_pushinteger(L, *(const uint8_t *)p); break;
    default: lua_pushnil(L); break;
    }
}

/* One typed loop per (destination, source) pair.  Float -> integer goes
 * through nd_f2i (no UB); integer narrowing wraps. */
#define ND_CONV_LOOP(DT, ST, EXPR)                                                                 \
    do {                                                                                           \
        DT *d = dst; /* NOLINT(bugprone-macro-parentheses): DT is a type */                        \
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
    case ND_INT64:                                                                                 \
        ND_CONV_LOOP(int64_t, ST, (IS_FLOAT_SRC) ? nd_f2i((double)v) : (int64_t)v);                \
        break;                                                                                     \
    case ND_INT32:                                                                                 \
        ND_CONV_LOOP(int32_t, ST, (IS_FLOAT_SRC) ? nd_f2i((double)v) : (int64_t)v);                \
        break;                                                                                     \
    case ND_UINT8:                                                                                 \
        ND_CONV_LOOP(uint8_t, ST, (IS_FLOAT_SRC) ? nd_f2i((double)v) : (int64_t)v);                \
        break;                                                                                     \
    default: break;                                                                                \
    }

void nd_convert(void *dst, nd_dtype dt, const void *src, nd_dtype st, size_t n)
{
    if (dt == st) {
        memmove(dst, src, n * nd_dtype_size(dt));
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

const void *nd_elements_in(lua_State *L, const nd_array *a, nd_dtype t, int copy)
{
    if (a->contiguous && a->dtype == t && !copy) {
        lua_pushnil(L);
        return nd_ptr(a);
    }
    size_t n = a->count;
    unsigned char *out = lua_newuserdatauv(L, (n ? n : 1) * nd_dtype_size(t), 0);
    if (a->contiguous) {
        nd_convert(out, t, nd_ptr(a), a->dtype, n);
    } else if (a->dtype == t) {
        nd_copy_out(a, out);
    } else {
        unsigned char *flat = lua_newuserdatauv(L, (n ? n : 1) * nd_dtype_size(a->dtype), 0);
        nd_copy_out(a, flat);
        nd_convert(out, t, flat, a->dtype, n);
        lua_pop(L, 1);
    }
    return out;
}

/* ------------------------------------------------------------ arguments */

nd_dtype nd_check_dtype(lua_State *L, int idx, nd_dtype dflt)
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

int nd_check_shape(lua_State *L, int idx, size_t *shape)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        int isnum;
        lua_Integer n = lua_tointegerx(L, idx, &isnum);
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

const char *nd_shape_text(int ndim, const size_t *shape, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "(");
    for (int d = 0; d < ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, d ? ", %zu" : "%zu", shape[d]);
    if (n < size)
        snprintf(buf + n, size - n, ndim == 1 ? ",)" : ")");
    return buf;
}

int nd_check_axis(lua_State *L, int idx, int ndim)
{
    lua_Integer axis = luaL_checkinteger(L, idx);
    if (axis < 0)
        axis += ndim + 1;
    if (axis < 1 || axis > ndim)
        luaL_argerror(L, idx,
                      lua_pushfstring(L,
                                      "axis %I out of range for %d dimensions (axes are 1-based)",
                                      (LUAI_UACINT)luaL_checkinteger(L, idx), ndim));
    return (int)axis - 1;
}

/* ------------------------------------------------------------ module */

static int mm_gc(lua_State *L)
{
    nd_array *a = nd_test(L, 1);
    if (a && a->buf) {
        nd_buffer_release(a->buf);
        a->buf = NULL;
    }
    return 0;
}

int luaopen_nd(lua_State *L)
{
    luaL_newmetatable(L, ND_METATABLE);
    lua_pushcfunction(L, mm_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, nd_mm_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, nd_mm_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, nd_mm_tostring);
    lua_setfield(L, -2, "__tostring");
    nd_ops_metamethods(L);
    lua_pushliteral(L, "nd array"); /* shown by luaL_typeerror / tostring fallbacks */
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "nd array");
    lua_setfield(L, -2, "__metatable"); /* getmetatable(a) cannot reach the real one */
    lua_newtable(L);                    /* methods */
    nd_shape_methods(L);
    nd_ops_methods(L);
    nd_reduce_methods(L);
    lua_pushcclosure(L, nd_mm_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nd_registry_key);
    lua_pop(L, 1);

    lua_newtable(L);
    nd_new_register(L);
    nd_ops_functions(L);
    nd_reduce_functions(L);
    return 1;
}
