/* plugin.c — loading native plugins and calling their kernels (see
 * plugin.h and include/ippc/plugin.h).
 *
 * Nothing that can raise a Lua error runs while plugin code is on the C
 * stack: init only fills a C list of kernels (plugin_lib.h; made into Lua
 * functions after it returned), and a kernel's results are C memory
 * (plugin_call.h) that the wrapper turns into Lua values after the kernel
 * returned.  A longjmp through a plugin's frames would skip its cleanup (or
 * C++ destructors); this way it never happens.
 *
 * Everything a call allocates hangs off a userdata on the stack, so a Lua
 * error while arguments are converted or results pushed leaks nothing.
 */
#include "plugin.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <ippc/plugin.h>
#include <lauxlib.h>

#include "lmpi.h"
#include "nd.h"
#include "plugin_call.h"
#include "plugin_lib.h"

#define PLUGIN_CALL_MT "ippc.plugin.call"

static const char libs_key = 'l';    /* registry: handle -> {names...} */
static const char kernels_key = 'k'; /* registry: name -> function */
static const char fns_key = 'f';     /* registry: function -> name (weak keys) */

static const atomic_int *plugin_interrupt;

_Static_assert((int)IPPC_FLOAT64 == (int)ND_FLOAT64 && (int)IPPC_FLOAT32 == (int)ND_FLOAT32 &&
                   (int)IPPC_INT64 == (int)ND_INT64 && (int)IPPC_INT32 == (int)ND_INT32 &&
                   (int)IPPC_UINT8 == (int)ND_UINT8 && ND_MAX_DIMS == IPPC_MAX_DIMS,
               "plugin dtypes are the wire's");

/* ---------------------------------------------------------- calls */

static int call_gc(lua_State *L)
{
    plugin_call_free(luaL_checkudata(L, 1, PLUGIN_CALL_MT));
    return 0;
}

static int api_interrupted(void)
{
    return plugin_interrupt && atomic_load(plugin_interrupt);
}

/* ---------------------------------------------------------- kernels */

typedef struct plugin_kernel {
    ippc_kernel fn;
    const ippc_api *api;
    char name[PLUGIN_LIB_NAME_MAX];
} plugin_kernel;

/* Converts argument i into v; pushes one value (a contiguous copy of a
 * strided array, or nil). */
static void kernel_arg(lua_State *L, const plugin_kernel *k, int i, ippc_value *v)
{
    MPI_Comm comm;
    memset(v, 0, sizeof *v);
    switch (lua_type(L, i)) {
    case LUA_TNIL: v->kind = IPPC_NIL; break;
    case LUA_TBOOLEAN:
        v->kind = IPPC_BOOLEAN;
        v->u.boolean = lua_toboolean(L, i);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, i)) {
            v->kind = IPPC_INTEGER;
            v->u.integer = (int64_t)lua_tointeger(L, i);
        } else {
            v->kind = IPPC_NUMBER;
            v->u.number = (double)lua_tonumber(L, i);
        }
        break;
    case LUA_TSTRING:
        v->kind = IPPC_STRING;
        v->u.string.data = lua_tolstring(L, i, &v->u.string.len);
        break;
    default:
        if (nd_test(L, i)) {
            nd_array *c = nd_push_contiguous(L, i);
            v->kind = IPPC_ARRAY;
            v->u.array = (ippc_array){nd_data(c), (ippc_dtype)nd_dtype_of(c), nd_ndim(c),
                                      nd_shape(c), nd_count(c)};
            return;
        }
        if (lmpi_test_comm(L, i, &comm)) {
            v->kind = IPPC_COMM;
            v->u.comm = comm;
            break;
        }
        luaL_error(L,
                   "%s: argument %d is a %s; kernels take numbers, booleans, nil, strings, nd "
                   "arrays and communicators",
                   k->name, i, luaL_typename(L, i));
    }
    lua_pushnil(L);
}

static void kernel_push_result(lua_State *L, plugin_call_result *r)
{
    switch (r->kind) {
    case IPPC_BOOLEAN: lua_pushboolean(L, (int)r->integer); break;
    case IPPC_INTEGER: lua_pushinteger(L, (lua_Integer)r->integer); break;
    case IPPC_NUMBER: lua_pushnumber(L, r->number); break;
    case IPPC_STRING: lua_pushlstring(L, (const char *)r->data, r->len); break;
    case IPPC_ARRAY:
        nd_push_adopt(L, (nd_dtype)r->dtype, r->ndim, r->shape, r->data);
        r->data = NULL; /* the array owns it now */
        break;
    default: lua_pushnil(L); break;
    }
}

/* The Lua function of a kernel; upvalue 1: its plugin_kernel. */
static int kernel_call(lua_State *L)
{
    const plugin_kernel *k = lua_touserdata(L, lua_upvalueindex(1));
    int nargs = lua_gettop(L);
    luaL_checkstack(L, nargs + 8, "too many arguments to a kernel");
    ippc_value *args = lua_newuserdatauv(L, sizeof *args * (size_t)(nargs ? nargs : 1), 0);
    for (int i = 1; i <= nargs; i++)
        kernel_arg(L, k, i, &args[i - 1]); /* copies at nargs + 1 + i */
    ippc_call *call = lua_newuserdatauv(L, sizeof *call, 0);
    memset(call, 0, sizeof *call);
    luaL_setmetatable(L, PLUGIN_CALL_MT);
    int rc = k->fn(k->api, call, args, nargs);
    /* Writes into a copy of a strided array go back to the array. */
    for (int i = 1; i <= nargs; i++) {
        nd_array *copy = nd_test(L, nargs + 1 + i), *orig = nd_test(L, i);
        if (copy && orig && copy != orig)
            nd_copy_in(orig, nd_data(copy));
    }
    if (rc != 0 || call->failed)
        return luaL_error(L, "%s: %s", k->name,
                          call->error[0] ? call->error : "the kernel failed (no message)");
    int base = lua_gettop(L);
    luaL_checkstack(L, (int)(call->count < 10000 ? call->count : 10000) + 2, "too many results");
    if (call->count > 10000)
        return luaL_error(L, "%s: too many results", k->name);
    for (size_t i = 0; i < call->count; i++)
        kernel_push_result(L, &call->results[i]);
    return lua_gettop(L) - base;
}

/* ---------------------------------------------------------- loading */

/* Pushes a new api (a userdata: it lives as long as a kernel uses it). */
static ippc_api *api_push(lua_State *L)
{
    ippc_api *api = lua_newuserdatauv(L, sizeof *api, 0);
    plugin_lib_api(api, lmpi_world(L), api_interrupted);
    return api;
}

static void set_global(lua_State *L, const char *name, int value_idx)
{
    value_idx = lua_absindex(L, value_idx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_pushstring(L, name);
    lua_pushvalue(L, value_idx);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Makes the Lua functions of ctx's kernels (api at api_idx), registers and
 * sets them as globals; pushes the list of names. */
static void install_kernels(lua_State *L, const plugin_lib_kernels *ctx, int api_idx)
{
    const ippc_api *api = lua_touserdata(L, api_idx);
    lua_createtable(L, ctx->count, 0);
    int names = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kernels_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &fns_key);
    for (int i = 0; i < ctx->count; i++) {
        plugin_kernel *k = lua_newuserdatauv(L, sizeof *k, 1);
        k->fn = ctx->kernels[i].fn;
        k->api = api;
        snprintf(k->name, sizeof k->name, "%s", ctx->kernels[i].name);
        lua_pushvalue(L, api_idx);
        lua_setiuservalue(L, -2, 1); /* the api lives as long as the kernel */
        lua_pushcclosure(L, kernel_call, 1);
        set_global(L, k->name, -1);
        lua_pushvalue(L, -1);
        lua_setfield(L, names + 1, k->name); /* kernels[name] = f */
        lua_pushstring(L, k->name);
        lua_rawset(L, names + 2); /* fns[f] = name */
        lua_pushstring(L, ctx->kernels[i].name);
        lua_rawseti(L, names, i + 1);
    }
    lua_pop(L, 2);
}

/* Pushes {library = path, kernels = names at names_idx}. */
static void push_load_result(lua_State *L, const char *path, int names_idx)
{
    names_idx = lua_absindex(L, names_idx);
    lua_createtable(L, 0, 2);
    lua_pushstring(L, path);
    lua_setfield(L, -2, "library");
    lua_pushvalue(L, names_idx);
    lua_setfield(L, -2, "kernels");
}

/* A library loaded before: its kernels become globals again. */
static int reload(lua_State *L, const char *path, int names_idx)
{
    names_idx = lua_absindex(L, names_idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kernels_key);
    lua_Integer n = (lua_Integer)lua_rawlen(L, names_idx);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, names_idx, i);
        const char *name = lua_tostring(L, -1);
        lua_getfield(L, -2, name);
        set_global(L, name, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    push_load_result(L, path, names_idx);
    return 0;
}

int plugin_load(lua_State *L, const char *path, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    void *handle = plugin_lib_open(path, err, errlen);
    if (!handle)
        return -1;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &libs_key);
    lua_rawgetp(L, -1, handle);
    if (lua_istable(L, -1)) { /* loaded before: dlopen only counted it again */
        dlclose(handle);
        reload(L, path, -1);
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
        return 0;
    }
    lua_settop(L, top);
    ippc_api *api = api_push(L);
    int api_idx = lua_gettop(L);
    plugin_lib_kernels *ctx = lua_newuserdatauv(L, sizeof *ctx, 0); /* big: not on the C stack */
    memset(ctx, 0, sizeof *ctx);
    if (plugin_lib_init(handle, path, api, ctx, err, errlen) < 0) {
        dlclose(handle);
        lua_settop(L, top);
        return -1;
    }
    install_kernels(L, ctx, api_idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &libs_key);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, handle); /* libs[handle] = names */
    lua_pop(L, 1);
    push_load_result(L, path, -1);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 0;
}

void plugin_install_globals(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kernels_key);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        set_global(L, lua_tostring(L, -2), -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

int plugin_is_kernel(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TFUNCTION)
        return 0;
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &fns_key);
    lua_pushvalue(L, idx);
    int found = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return found;
}

void plugin_open(lua_State *L, const atomic_int *interrupt)
{
    plugin_interrupt = interrupt;
    luaL_newmetatable(L, PLUGIN_CALL_MT);
    lua_pushcfunction(L, call_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &libs_key);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kernels_key);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &fns_key);
}
