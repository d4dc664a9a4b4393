/* nd_new.c — nd's constructors: array, zeros, ones, empty, full, arange,
 * linspace, random (see nd.h for their Lua signatures).
 *
 * nd.random is xoshiro256** seeded through splitmix64, so equal seeds give
 * equal arrays on every rank and every platform; doubles take the top 53
 * bits (uniform on [0, 1)).  Without a seed each call continues one stream
 * per process, itself seeded from the clock and the pid.
 */
#include "nd_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------- filled ones */

static void nd_fill_number(lua_State *L, nd_array *a, int value_idx)
{
    unsigned char *p = nd_ptr(a);
    size_t es = nd_dtype_size(a->dtype);
    if (a->count == 0)
        return;
    nd_store_lua(L, p, a->dtype, 0, value_idx);
    for (size_t i = 1; i < a->count; i++)
        memcpy(p + i * es, p, es);
}

static int l_zeros(lua_State *L)
{
    size_t shape[ND_MAX_DIMS];
    int ndim = nd_check_shape(L, 1, shape);
    nd_push_new(L, nd_check_dtype(L, 2, ND_FLOAT64), ndim, shape);
    return 1;
}

static int l_empty(lua_State *L)
{
    size_t shape[ND_MAX_DIMS];
    int ndim = nd_check_shape(L, 1, shape);
    nd_push_uninit(L, nd_check_dtype(L, 2, ND_FLOAT64), ndim, shape);
    return 1;
}

static int l_ones(lua_State *L)
{
    size_t shape[ND_MAX_DIMS];
    int ndim = nd_check_shape(L, 1, shape);
    nd_array *a = nd_push_uninit(L, nd_check_dtype(L, 2, ND_FLOAT64), ndim, shape);
    lua_pushinteger(L, 1);
    nd_fill_number(L, a, lua_gettop(L));
    lua_pop(L, 1);
    return 1;
}

/* nd.full(shape, value [, dtype]): dtype int64 for an integer value,
 * float64 otherwise, unless given. */
static int l_full(lua_State *L)
{
    size_t shape[ND_MAX_DIMS];
    int ndim = nd_check_shape(L, 1, shape);
    luaL_checknumber(L, 2);
    nd_dtype dflt = lua_isinteger(L, 2) ? ND_INT64 : ND_FLOAT64;
    nd_array *a = nd_push_uninit(L, nd_check_dtype(L, 3, dflt), ndim, shape);
    nd_fill_number(L, a, 2);
    return 1;
}

/* ---------------------------------------------------------- ranges */

static int nd_arange_int(lua_State *L, int nnum, nd_dtype dtype)
{
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
    size_t n = (size_t)cnt;
    nd_array *a = nd_push_uninit(L, dtype, 1, &n);
    void *p = nd_ptr(a);
    for (size_t i = 0; i < n; i++)
        nd_store_i(p, dtype, i, (int64_t)((uint64_t)start + (uint64_t)i * (uint64_t)step));
    return 1;
}

static int nd_arange_float(lua_State *L, int nnum, nd_dtype dtype)
{
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
    const size_t max_count = ND_MAX_BYTES / 8; /* elements of the widest dtype, rounded down */
    if (cnt > (double)max_count)
        return luaL_error(L, "nd.arange: too many elements");
    size_t n = (size_t)cnt;
    nd_array *a = nd_push_uninit(L, dtype, 1, &n);
    void *p = nd_ptr(a);
    for (size_t i = 0; i < n; i++)
        nd_store_f(p, dtype, i, start + (double)i * step);
    return 1;
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
    return all_int ? nd_arange_int(L, nnum, dtype) : nd_arange_float(L, nnum, dtype);
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
    nd_array *a = nd_push_uninit(L, ND_FLOAT64, 1, &count);
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

/* ---------------------------------------------------------- nd.array */

/* Shape of a nested table from its first elements, checked in full by
 * nd_table_scan. */
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
        luaL_error(L, "nd.array: ragged nested table (axis %d: expected %I elements, got %I)",
                   dim + 1, (LUAI_UACINT)shape[dim], (LUAI_UACINT)lua_rawlen(L, idx));
    for (size_t i = 0; i < shape[dim]; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        if (dim + 1 < ndim) {
            if (lua_type(L, -1) != LUA_TTABLE || nd_test(L, -1))
                luaL_error(L, "nd.array: ragged nested table (axis %d)", dim + 2);
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
        nd_array *a = nd_push_uninit(L, t, src->ndim, src->shape);
        const void *p = nd_elements_in(L, src, t, 0);
        memcpy(nd_ptr(a), p, nd_bytes(a));
        lua_pop(L, 1);
        return 1;
    }
    if (lua_type(L, 1) == LUA_TNUMBER) { /* 0-d array */
        nd_dtype t = nd_check_dtype(L, 2, lua_isinteger(L, 1) ? ND_INT64 : ND_FLOAT64);
        nd_array *a = nd_push_new(L, t, 0, NULL);
        nd_store_lua(L, nd_ptr(a), t, 0, 1);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t shape[ND_MAX_DIMS] = {0};
    int ndim = nd_table_shape(L, 1, shape);
    int all_int = 1;
    nd_table_scan(L, 1, 0, ndim, shape, &all_int);
    size_t count = nd_shape_count(L, ND_FLOAT64, ndim, shape);
    nd_dtype t = nd_check_dtype(L, 2, (all_int && count > 0) ? ND_INT64 : ND_FLOAT64);
    nd_array *a = nd_push_new(L, t, ndim, shape);
    size_t pos = 0;
    if (count > 0)
        nd_table_fill(L, 1, 0, ndim, shape, nd_ptr(a), t, &pos);
    return 1;
}

/* ---------------------------------------------------------- nd.random */

typedef struct nd_rng {
    uint64_t s[4];
} nd_rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void nd_rng_seed(nd_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t nd_rng_next(nd_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* The unseeded stream: one per process (one Lua state per engine). */
static nd_rng nd_default_rng;
static int nd_default_rng_ready;

/* nd.random(shape [, seed]) -> float64 uniform on [0, 1). */
static int l_random(lua_State *L)
{
    size_t shape[ND_MAX_DIMS];
    int ndim = nd_check_shape(L, 1, shape);
    nd_rng seeded, *rng = &seeded;
    if (!lua_isnoneornil(L, 2)) {
        nd_rng_seed(&seeded, (uint64_t)luaL_checkinteger(L, 2));
    } else {
        if (!nd_default_rng_ready) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            nd_rng_seed(&nd_default_rng, (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                                             ((uint64_t)getpid() << 40));
            nd_default_rng_ready = 1;
        }
        rng = &nd_default_rng;
    }
    nd_array *a = nd_push_uninit(L, ND_FLOAT64, ndim, shape);
    double *p = nd_data(a);
    for (size_t i = 0; i < a->count; i++)
        p[i] = (double)(nd_rng_next(rng) >> 11) * 0x1.0p-53;
    return 1;
}

void nd_new_register(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"array", l_array},       {"zeros", l_zeros},   {"ones", l_ones},
        {"empty", l_empty},       {"full", l_full},     {"arange", l_arange},
        {"linspace", l_linspace}, {"random", l_random}, {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}
