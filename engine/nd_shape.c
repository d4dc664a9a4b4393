/* nd_shape.c — nd's geometry: #a, a[i] and a[i] = x, slices, reshape, T,
 * copy, astype, totable and the shape/dtype queries.
 *
 * Views (a row, a slice, a transpose, a reshape of a contiguous array)
 * share the parent's buffer and only compute new shape/strides/offset; a
 * view's offset may be below its parent's when a stride is negative, but it
 * always addresses elements inside the buffer.
 */
#include "nd_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------- queries */

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

static int m_ndim(lua_State *L)
{
    lua_pushinteger(L, nd_check(L, 1)->ndim);
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

int nd_mm_len(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    if (a->ndim == 0)
        return luaL_error(L, "nd: length of a 0-d array");
    lua_pushinteger(L, (lua_Integer)a->shape[0]);
    return 1;
}

/* ---------------------------------------------------------- a[i] */

/* 1-based index along axis 0 (negative from the end) -> 0-based, or raises. */
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
    lua_Integer n = (lua_Integer)a->shape[0], pos = i < 0 ? i + n + 1 : i;
    if (pos < 1 || pos > n)
        luaL_error(L,
                   "nd: index %I out of range for axis 1 with size %I "
                   "(indices are 1-based; -1 is the last)",
                   (LUAI_UACINT)i, (LUAI_UACINT)n);
    return (size_t)(pos - 1);
}

/* Pushes the view of row i (n-D) sharing a's memory. */
static nd_array *nd_push_row(lua_State *L, nd_array *a, size_t i)
{
    ptrdiff_t off =
        (ptrdiff_t)a->offset + (ptrdiff_t)i * a->strides[0] * (ptrdiff_t)nd_dtype_size(a->dtype);
    return nd_push_view(L, a, a->ndim - 1, a->shape + 1, a->strides + 1, (size_t)off);
}

static unsigned char *nd_elem_ptr(nd_array *a, size_t i)
{
    return nd_ptr(a) + (ptrdiff_t)i * a->strides[0] * (ptrdiff_t)nd_dtype_size(a->dtype);
}

int nd_mm_index(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1)); /* methods */
        return 1;
    }
    size_t i = nd_check_index(L, a, 2);
    if (a->ndim == 1)
        nd_push_at(L, nd_elem_ptr(a, i), a->dtype);
    else
        nd_push_row(L, a, i);
    return 1;
}

int nd_mm_newindex(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    if (lua_type(L, 2) != LUA_TNUMBER)
        return luaL_error(L, "nd: cannot set field '%s' of an nd array",
                          lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : luaL_typename(L, 2));
    size_t i = nd_check_index(L, a, 2);
    if (a->ndim == 1) {
        nd_store_lua(L, nd_elem_ptr(a, i), a->dtype, 0, 3);
        return 0;
    }
    if (!nd_test(L, 3) && lua_type(L, 3) != LUA_TNUMBER)
        return luaL_error(L, "nd: a row can be set from a number or an nd array, not %s",
                          luaL_typename(L, 3));
    nd_array *row = nd_push_row(L, a, i);
    nd_assign(L, row, 3);
    return 0;
}

/* ---------------------------------------------------------- slices */

/* Resolves string.sub-like bounds on an axis of length n into a first index
 * and a count (both 0-based / plain). */
static void nd_slice_bounds(lua_State *L, lua_Integer n, lua_Integer step, size_t *first,
                            size_t *count)
{
    lua_Integer lo, hi; /* 1-based, inclusive, in the direction of step */
    if (step > 0) {
        lo = luaL_optinteger(L, 2, 1);
        hi = luaL_optinteger(L, 3, n);
    } else {
        lo = luaL_optinteger(L, 2, n);
        hi = luaL_optinteger(L, 3, 1);
    }
    if (lo < 0)
        lo += n + 1;
    if (hi < 0)
        hi += n + 1;
    if (step > 0) {
        lo = lo < 1 ? 1 : lo;
        hi = hi > n ? n : hi;
    } else {
        lo = lo > n ? n : lo;
        hi = hi < 1 ? 1 : hi;
    }
    *first = 0;
    *count = 0;
    if (n == 0 || (step > 0 ? lo > hi : lo < hi))
        return;
    lua_Unsigned span = step > 0 ? (lua_Unsigned)(hi - lo) : (lua_Unsigned)(lo - hi);
    lua_Unsigned ustep = step > 0 ? (lua_Unsigned)step : (lua_Unsigned)0 - (lua_Unsigned)step;
    *first = (size_t)(lo - 1);
    *count = (size_t)(span / ustep + 1);
}

/* a:slice(start, stop [, step [, axis]]) -> a view. */
static int m_slice(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    if (a->ndim == 0)
        return luaL_error(L, "nd: cannot slice a 0-d array");
    lua_Integer step = luaL_optinteger(L, 4, 1);
    if (step == 0)
        return luaL_argerror(L, 4, "step must not be zero");
    int axis = lua_isnoneornil(L, 5) ? 0 : nd_check_axis(L, 5, a->ndim);
    size_t first, count;
    nd_slice_bounds(L, (lua_Integer)a->shape[axis], step, &first, &count);
    size_t shape[ND_MAX_DIMS];
    ptrdiff_t strides[ND_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    memcpy(strides, a->strides, sizeof strides);
    shape[axis] = count;
    strides[axis] = a->strides[axis] * (ptrdiff_t)step;
    ptrdiff_t off = (ptrdiff_t)a->offset +
                    (ptrdiff_t)first * a->strides[axis] * (ptrdiff_t)nd_dtype_size(a->dtype);
    nd_push_view(L, a, a->ndim, shape, strides, count ? (size_t)off : a->offset);
    return 1;
}

/* a:T() (also a:transpose()): the axes reversed, a view. */
static int m_transpose(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    size_t shape[ND_MAX_DIMS];
    ptrdiff_t strides[ND_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) {
        shape[d] = a->shape[a->ndim - 1 - d];
        strides[d] = a->strides[a->ndim - 1 - d];
    }
    nd_push_view(L, a, a->ndim, shape, strides, a->offset);
    return 1;
}

/* ---------------------------------------------------------- reshape */

/* Reads reshape's dimensions (a table, or the arguments from 2 on). */
static int nd_reshape_dims(lua_State *L, long long *dims)
{
    int ndim = 0;
    if (lua_istable(L, 2)) {
        lua_Unsigned len = lua_rawlen(L, 2);
        if (len > ND_MAX_DIMS)
            luaL_argerror(L, 2, "too many dimensions");
        for (int d = 0; d < (int)len; d++) {
            lua_rawgeti(L, 2, d + 1);
            int isnum;
            dims[ndim++] = (long long)lua_tointegerx(L, -1, &isnum);
            if (!isnum)
                luaL_argerror(L, 2, "shape entries must be integers");
            lua_pop(L, 1);
        }
        return ndim;
    }
    int top = lua_gettop(L);
    if (top - 1 > ND_MAX_DIMS)
        luaL_error(L, "reshape: too many dimensions");
    for (int i = 2; i <= top; i++)
        dims[ndim++] = (long long)luaL_checkinteger(L, i);
    return ndim;
}

/* a:reshape({d0, d1, ...}) or a:reshape(d0, d1, ...); one entry may be -1.
 * A view of a contiguous array; a strided one is copied first (as numpy). */
static int m_reshape(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    long long dims[ND_MAX_DIMS];
    int ndim = nd_reshape_dims(L, dims);
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
    nd_array *src = nd_push_contiguous(L, 1);
    ptrdiff_t strides[ND_MAX_DIMS];
    nd_c_strides(ndim, shape, strides);
    nd_push_view(L, src, ndim, shape, strides, src->offset);
    return 1;
}

/* ---------------------------------------------------------- copies */

static int m_copy(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    nd_array *c = nd_push_uninit(L, a->dtype, a->ndim, a->shape);
    nd_copy_out(a, nd_ptr(c));
    return 1;
}

static int m_astype(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    nd_dtype t = nd_check_dtype(L, 2, ND_DTYPE_COUNT);
    if (t == ND_DTYPE_COUNT)
        return luaL_argerror(L, 2, "dtype expected");
    nd_array *c = nd_push_uninit(L, t, a->ndim, a->shape);
    const void *p = nd_elements_in(L, a, t, 0);
    memcpy(nd_ptr(c), p, nd_bytes(c));
    lua_pop(L, 1);
    return 1;
}

static void nd_totable_rec(lua_State *L, const nd_array *a, int dim, const unsigned char *p)
{
    size_t n = a->shape[dim];
    ptrdiff_t step = a->strides[dim] * (ptrdiff_t)nd_dtype_size(a->dtype);
    lua_createtable(L, (int)(n < INT32_MAX ? n : 0), 0);
    for (size_t i = 0; i < n; i++) {
        const unsigned char *q = p + (ptrdiff_t)i * step;
        if (dim + 1 < a->ndim)
            nd_totable_rec(L, a, dim + 1, q);
        else
            nd_push_at(L, q, a->dtype);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* a:totable(): nested Lua tables (a number for a 0-d array). */
static int m_totable(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    luaL_checkstack(L, ND_MAX_DIMS + 4, NULL);
    if (a->ndim == 0)
        nd_push_at(L, nd_ptr(a), a->dtype);
    else
        nd_totable_rec(L, a, 0, nd_ptr(a));
    return 1;
}

void nd_shape_methods(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"shape", m_shape},         {"ndim", m_ndim},       {"dtype", m_dtype},
        {"size", m_size},           {"slice", m_slice},     {"T", m_transpose},
        {"transpose", m_transpose}, {"reshape", m_reshape}, {"copy", m_copy},
        {"astype", m_astype},       {"totable", m_totable}, {NULL, NULL},
    };
    luaL_setfuncs(L, methods, 0);
}
