/* luavalue.c — wire skeleton + blobs <-> Lua values (see luavalue.h).
 *
 * Both directions are recursive walks bounded by LUAVALUE_MAX_DEPTH, and both
 * keep the Lua stack balanced on every path, success or error.
 *
 * luavalue_push builds Lua values top-down (each table is on the stack, and
 * so owned by Lua, before its children are made), so a Lua memory error
 * thrown half-way leaks nothing; a blob's bytes change owner only once
 * nd_push_adopt has returned.
 *
 * luavalue_to_wire uses only raw, non-allocating Lua calls (lua_next,
 * lua_rawgeti, lua_rawgetp, lua_tolstring on strings, lua_checkstack) so it
 * never raises and can run outside protected mode; the JSON it builds is
 * plain C memory.
 *
 * null: a Lua table cannot hold nil, so a JSON null inside a list or an
 * object becomes one sentinel value (a userdata kept in the registry and
 * published as the global `null`), which keeps its place; it turns back into
 * null on the way out.  A null that is the whole value stays nil (a pushed
 * variable, an argument), as Lua code expects of "no value".
 */
#include "luavalue.h"
#include "bigmem.h"
#include "buf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "nd.h"

/* ------------------------------------------------------------ null */

static const char null_key = 'n'; /* registry: the null sentinel */

static int null_tostring(lua_State *L)
{
    lua_pushliteral(L, "null");
    return 1;
}

void luavalue_push_null(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &null_key) == LUA_TUSERDATA)
        return;
    lua_pop(L, 1);
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "null");
    lua_setfield(L, -2, "__name"); /* error messages say "got null" */
    lua_pushliteral(L, "null");
    lua_setfield(L, -2, "__metatable"); /* and user code cannot change it */
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &null_key);
}

int luavalue_is_null(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_checkstack(L, 1))
        return 0;
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &null_key);
    int is_null = lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    return is_null;
}

void luavalue_open(lua_State *L)
{
    luavalue_push_null(L);
    lua_setglobal(L, "null");
}

/* ------------------------------------------------------------ JSON -> Lua */

static int push_rec(lua_State *L, const json_t *v, ippc_blobs *blobs, int depth, ippc_error *err);

static int push_nd(lua_State *L, const nd_ref *ref, ippc_blobs *blobs, ippc_error *err)
{
    ippc_blob *blob = &blobs->items[ref->blob];
    size_t bytes = ref->count * nd_dtype_size(ref->dtype);
    if (bytes == 0) {
        nd_push_new(L, ref->dtype, ref->ndim, ref->shape);
        return 0;
    }
    if (!blob->data)
        return ippc_error_set(err, ERR_INVALID, "blob %zu is referenced twice", ref->blob);
    nd_push_adopt(L, ref->dtype, ref->ndim, ref->shape, blob->data);
    blob->data = NULL; /* the array owns it now */
    return 0;
}

static int push_list(lua_State *L, const json_t *v, ippc_blobs *blobs, int depth, ippc_error *err)
{
    size_t n = json_array_size(v);
    lua_createtable(L, n < (size_t)INT32_MAX ? (int)n : 0, 0);
    for (size_t i = 0; i < n; i++) {
        if (push_rec(L, json_array_get(v, i), blobs, depth + 1, err) < 0) {
            lua_pop(L, 1);
            return -1;
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 0;
}

static int push_object(lua_State *L, const json_t *v, ippc_blobs *blobs, int depth, ippc_error *err)
{
    size_t n = json_object_size(v);
    lua_createtable(L, 0, n < (size_t)INT32_MAX ? (int)n : 0);
    for (void *it = json_object_iter((json_t *)v); it;
         it = json_object_iter_next((json_t *)v, it)) {
        const json_t *item = json_object_iter_value(it);
        lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
        if (push_rec(L, item, blobs, depth + 1, err) < 0) {
            lua_pop(L, 2);
            return -1;
        }
        lua_rawset(L, -3);
    }
    return 0;
}

static int push_rec(lua_State *L, const json_t *v, ippc_blobs *blobs, int depth, ippc_error *err)
{
    if (!lua_checkstack(L, 4))
        return ippc_error_set(err, ERR_INTERNAL, "Lua stack overflow");
    switch (json_typeof(v)) {
    case JSON_NULL:
        if (depth > 1) /* inside a list or an object: keep the place */
            luavalue_push_null(L);
        else
            lua_pushnil(L);
        return 0;
    case JSON_TRUE: lua_pushboolean(L, 1); return 0;
    case JSON_FALSE: lua_pushboolean(L, 0); return 0;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(v)); return 0;
    case JSON_REAL: lua_pushnumber(L, (lua_Number)json_real_value(v)); return 0;
    case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); return 0;
    case JSON_ARRAY:
    case JSON_OBJECT: {
        nd_ref ref;
        int r = json_is_object(v) ? value_nd_ref(v, blobs, &ref, err) : 0;
        if (r < 0)
            return -1;
        if (r == 1)
            return push_nd(L, &ref, blobs, err);
        /* Containers count, leaves do not: as value.c, so whatever the
         * controller accepted, the engine accepts. */
        if (depth > LUAVALUE_MAX_DEPTH)
            return ippc_error_set(err, ERR_INVALID, "value nested deeper than %d levels",
                                  LUAVALUE_MAX_DEPTH);
        return json_is_array(v) ? push_list(L, v, blobs, depth, err)
                                : push_object(L, v, blobs, depth, err);
    }
    }
    return ippc_error_set(err, ERR_INVALID, "unknown JSON value");
}

int luavalue_push(lua_State *L, const json_t *skel, ippc_blobs *blobs, ippc_error *err)
{
    if (!skel)
        return ippc_error_set(err, ERR_INVALID, "missing value");
    return push_rec(L, skel, blobs, 1, err);
}

/* ------------------------------------------------------------ Lua -> JSON */

typedef struct wire_walk {
    lua_State *L;
    ippc_blobs *blobs;
    ippc_error *err;
    const void *path[LUAVALUE_MAX_DEPTH + 1]; /* tables being serialised: cycle check */
} wire_walk;

static json_t *wire_rec(wire_walk *w, int idx, int depth);

static json_t *wire_fail(wire_walk *w, const char *fmt, const char *what)
{
    ippc_error_set(w->err, ERR_INVALID, fmt, what);
    return NULL;
}

static json_t *wire_nd(wire_walk *w, nd_array *a)
{
    if (nd_ndim(a) == 0) { /* the wire has no 0-d arrays: send the number */
        const void *p = nd_data(a);
        switch (nd_dtype_of(a)) {
        case ND_FLOAT64: return json_real(*(const double *)p);
        case ND_FLOAT32: return json_real(*(const float *)p);
        case ND_INT64: return json_integer(*(const int64_t *)p);
        case ND_INT32: return json_integer(*(const int32_t *)p);
        case ND_UINT8: return json_integer(*(const uint8_t *)p);
        default: return wire_fail(w, "invalid %s", "nd array");
        }
    }
    size_t bytes = nd_bytes(a);
    unsigned char *copy = bigmem_alloc(bytes);
    if (!copy)
        return wire_fail(w, "out of memory copying an %s", "nd array");
    nd_copy_out(a, copy);                           /* row-major, whatever a's strides */
    long index = blobs_push(w->blobs, copy, bytes); /* frees copy on failure */
    if (index < 0)
        return wire_fail(w, "out of memory copying an %s", "nd array");
    json_t *ph = value_nd_placeholder(nd_dtype_of(a), nd_ndim(a), nd_shape(a), (size_t)index);
    if (!ph)
        return wire_fail(w, "out of memory copying an %s", "nd array");
    return ph;
}

/* Counts the keys of the table at idx into *count.  Returns 1, with the list
 * length in *len, if the table reads as a list: every key a positive integer
 * and the largest, *len, at most twice their count.  The missing keys (nil
 * items, which Lua does not store) then come out as null, and a table that
 * is mostly holes ({[1000000] = 1}) stays an object instead of a huge list. */
static int table_as_list(lua_State *L, int idx, size_t *count, size_t *len)
{
    size_t total = 0;
    lua_Integer max = 0;
    int positive_ints = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        total++;
        if (positive_ints && lua_type(L, -2) == LUA_TNUMBER && lua_isinteger(L, -2)) {
            lua_Integer k = lua_tointeger(L, -2);
            if (k < 1)
                positive_ints = 0;
            else if (k > max)
                max = k;
        } else {
            positive_ints = 0;
        }
        lua_pop(L, 1);
    }
    *count = total;
    *len = (size_t)max;
    /* distinct keys in 1..max: max >= total, and max - total are the holes */
    return positive_ints && total > 0 && (size_t)max - total <= total;
}

static json_t *wire_list(wire_walk *w, int idx, size_t n, int depth)
{
    json_t *list = json_array();
    if (!list)
        return wire_fail(w, "out of memory (%s)", "list");
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(w->L, idx, (lua_Integer)i);
        json_t *item = wire_rec(w, lua_gettop(w->L), depth + 1);
        lua_pop(w->L, 1);
        if (!item || json_array_append_new(list, item) < 0) {
            if (item)
                wire_fail(w, "out of memory (%s)", "list");
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static json_t *wire_object(wire_walk *w, int idx, int depth)
{
    lua_State *L = w->L;
    json_t *obj = json_object();
    if (!obj)
        return wire_fail(w, "out of memory (%s)", "object");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        char numkey[32];
        const char *key;
        size_t keylen;
        if (lua_type(L, -2) == LUA_TSTRING) {
            key = lua_tolstring(L, -2, &keylen); /* a string already: no conversion */
        } else if (lua_type(L, -2) == LUA_TNUMBER && lua_isinteger(L, -2)) {
            keylen = (size_t)snprintf(numkey, sizeof numkey, LUA_INTEGER_FMT,
                                      (LUAI_UACINT)lua_tointeger(L, -2));
            key = numkey;
        } else {
            const char *what =
                lua_type(L, -2) == LUA_TNUMBER ? "non-integer number" : luaL_typename(L, -2);
            lua_pop(L, 2);
            json_decref(obj);
            return wire_fail(w, "cannot send a table with a %s key", what);
        }
        if (json_object_getn(obj, key, keylen)) {
            ippc_error_set(w->err, ERR_INVALID,
                           "cannot send a table with key '%.64s' twice "
                           "(once as a string, once as an integer)",
                           key);
            lua_pop(L, 2);
            json_decref(obj);
            return NULL;
        }
        json_t *item = wire_rec(w, lua_gettop(L), depth + 1);
        if (!item) {
            lua_pop(L, 2);
            json_decref(obj);
            return NULL;
        }
        if (json_object_setn_new(obj, key, keylen, item) < 0) { /* bad UTF-8 in key */
            lua_pop(L, 2);
            json_decref(obj);
            return wire_fail(w, "cannot send a table key that is not valid UTF-8%s", "");
        }
        lua_pop(L, 1);
    }
    return obj;
}

static json_t *wire_table(wire_walk *w, int idx, int depth)
{
    if (depth > LUAVALUE_MAX_DEPTH) {
        ippc_error_set(w->err, ERR_INVALID, "cannot send tables nested deeper than %d levels",
                       LUAVALUE_MAX_DEPTH);
        return NULL;
    }
    const void *self = lua_topointer(w->L, idx);
    for (int d = 0; d < depth - 1; d++)
        if (w->path[d] == self)
            return wire_fail(w, "cannot send a table that contains itself (%s)", "a cycle");
    if (!lua_checkstack(w->L, 6))
        return wire_fail(w, "Lua stack overflow (%s)", "table");
    w->path[depth - 1] = self;
    size_t n, len;
    if (table_as_list(w->L, idx, &n, &len))
        return wire_list(w, idx, len, depth);
    if (n == 0) {
        json_t *empty = json_array();
        return empty ? empty : wire_fail(w, "out of memory (%s)", "list");
    }
    return wire_object(w, idx, depth);
}

static json_t *wire_rec(wire_walk *w, int idx, int depth)
{
    lua_State *L = w->L;
    json_t *out = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: out = json_null(); break;
    case LUA_TBOOLEAN: out = json_boolean(lua_toboolean(L, idx)); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            out = json_integer((json_int_t)lua_tointeger(L, idx));
        else {
            double d = (double)lua_tonumber(L, idx);
            out = isfinite(d) ? json_real(d) : json_null();
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        out = json_stringn(s, len);
        if (!out)
            return wire_fail(w, "cannot send a string that is not valid UTF-8%s", "");
        break;
    }
    case LUA_TTABLE: return wire_table(w, idx, depth);
    case LUA_TUSERDATA: {
        if (luavalue_is_null(L, idx)) {
            out = json_null();
            break;
        }
        nd_array *a = nd_test(L, idx);
        if (a)
            return wire_nd(w, a);
        return wire_fail(w, "cannot send a %s value", luaL_typename(L, idx));
    }
    default: return wire_fail(w, "cannot send a %s value", luaL_typename(L, idx));
    }
    if (!out)
        return wire_fail(w, "out of memory (%s)", "value");
    return out;
}

json_t *luavalue_to_wire(lua_State *L, int idx, ippc_blobs *blobs, ippc_error *err)
{
    wire_walk w = {.L = L, .blobs = blobs, .err = err};
    size_t first_blob = blobs->count;
    int top = lua_gettop(L);
    json_t *out = wire_rec(&w, lua_absindex(L, idx), 1);
    lua_settop(L, top);
    if (!out)
        while (blobs->count > first_blob) /* leave no blob behind on failure */
            free(blobs->items[--blobs->count].data);
    return out;
}
