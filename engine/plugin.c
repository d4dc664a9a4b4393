/* plugin.c — loading native plugins and calling their kernels (see
 * plugin.h and include/ippc/plugin.h).
 *
 * Nothing that can raise a Lua error runs while plugin code is on the C
 * stack: init only fills a C list of kernels (made into Lua functions after
 * it returned), and a kernel's results are C memory (return_array callocs)
 * that the wrapper turns into Lua values after the kernel returned.  A
 * longjmp through a plugin's frames would skip its cleanup (or C++
 * destructors); this way it never happens.
 *
 * Everything a call allocates hangs off a userdata on the stack, so a Lua
 * error while arguments are converted or results pushed leaks nothing.
 */
#include "plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ippc/plugin.h>
#include <lauxlib.h>

#include "lmpi.h"
#include "nd.h"
#include "proto.h"

#define PLUGIN_CALL_MT "ippc.plugin.call"
#define PLUGIN_MAX_KERNELS 256
#define PLUGIN_NAME_MAX 64

static const char libs_key = 'l';    /* registry: handle -> {names...} */
static const char kernels_key = 'k'; /* registry: name -> function */
static const char fns_key = 'f';     /* registry: function -> name (weak keys) */

static const atomic_int *plugin_interrupt;

_Static_assert((int)IPPC_FLOAT64 == (int)ND_FLOAT64 && (int)IPPC_FLOAT32 == (int)ND_FLOAT32 &&
                   (int)IPPC_INT64 == (int)ND_INT64 && (int)IPPC_INT32 == (int)ND_INT32 &&
                   (int)IPPC_UINT8 == (int)ND_UINT8 && ND_MAX_DIMS == IPPC_MAX_DIMS,
               "plugin dtypes are the wire's");

/* ---------------------------------------------------------- calls */

typedef struct plugin_result {
    ippc_kind kind;
    int64_t integer;
    double number;
    unsigned char *data; /* strings and arrays; NULL once Lua owns it */
    size_t len;
    ippc_dtype dtype;
    int ndim;
    size_t shape[IPPC_MAX_DIMS];
} plugin_result;

struct ippc_call {
    int failed;
    char error[512];
    plugin_result *results;
    size_t count, cap;
};

static int call_gc(lua_State *L)
{
    ippc_call *call = luaL_checkudata(L, 1, PLUGIN_CALL_MT);
    for (size_t i = 0; i < call->count; i++)
        free(call->results[i].data);
    free(call->results);
    call->results = NULL;
    call->count = 0;
    return 0;
}

static plugin_result *call_add(ippc_call *call, ippc_kind kind)
{
    if (call->count == call->cap) {
        size_t cap = call->cap ? call->cap * 2 : 4;
        plugin_result *r = realloc(call->results, cap * sizeof *r);
        if (!r)
            return NULL;
        call->results = r;
        call->cap = cap;
    }
    plugin_result *r = &call->results[call->count++];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    return r;
}

static int api_return_nil(ippc_call *call)
{
    return call_add(call, IPPC_NIL) ? 0 : -1;
}

static int api_return_boolean(ippc_call *call, int value)
{
    plugin_result *r = call_add(call, IPPC_BOOLEAN);
    if (!r)
        return -1;
    r->integer = value != 0;
    return 0;
}

static int api_return_integer(ippc_call *call, int64_t value)
{
    plugin_result *r = call_add(call, IPPC_INTEGER);
    if (!r)
        return -1;
    r->integer = value;
    return 0;
}

static int api_return_number(ippc_call *call, double value)
{
    plugin_result *r = call_add(call, IPPC_NUMBER);
    if (!r)
        return -1;
    r->number = value;
    return 0;
}

static int api_return_string(ippc_call *call, const char *data, size_t len)
{
    unsigned char *copy = malloc(len ? len : 1);
    plugin_result *r = copy ? call_add(call, IPPC_STRING) : NULL;
    if (!r) {
        free(copy);
        return -1;
    }
    if (len)
        memcpy(copy, data, len);
    r->data = copy;
    r->len = len;
    return 0;
}

static void *api_return_array(ippc_call *call, ippc_dtype dtype, int ndim, const size_t *shape)
{
    size_t es = ippc_dtype_size(dtype), count = 1;
    if (es == 0 || ndim < 0 || ndim > IPPC_MAX_DIMS || (ndim > 0 && !shape))
        return NULL;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] && count > (SIZE_MAX / 4) / es / shape[d])
            return NULL;
        count *= shape[d];
    }
    unsigned char *data = calloc(count ? count * es : 1, 1);
    plugin_result *r = data ? call_add(call, IPPC_ARRAY) : NULL;
    if (!r) {
        free(data);
        return NULL;
    }
    r->data = data;
    r->len = count * es;
    r->dtype = dtype;
    r->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        r->shape[d] = shape[d];
    return data;
}

static int api_error(ippc_call *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->error, sizeof call->error, fmt ? fmt : "error", ap);
    va_end(ap);
    call->failed = 1;
    return -1;
}

static int api_interrupted(void)
{
    return plugin_interrupt && atomic_load(plugin_interrupt);
}

/* ---------------------------------------------------------- kernels */

typedef struct plugin_kernel {
    ippc_kernel fn;
    const ippc_api *api;
    char name[PLUGIN_NAME_MAX];
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

static void kernel_push_result(lua_State *L, plugin_result *r)
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

typedef struct load_ctx {
    int count;
    struct {
        char name[PLUGIN_NAME_MAX];
        ippc_kernel fn;
    } kernels[PLUGIN_MAX_KERNELS];
    char error[256];
} load_ctx;

static int valid_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= PLUGIN_NAME_MAX || (name[0] >= '0' && name[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

static int api_register(const ippc_api *api, const char *name, ippc_kernel fn, const char *doc)
{
    (void)doc;
    load_ctx *ctx = api->host;
    if (!ctx) /* after init: too late */
        return -1;
    if (!valid_name(name) || !fn) {
        snprintf(ctx->error, sizeof ctx->error, "register_kernel: invalid kernel name '%.64s'",
                 name ? name : "(null)");
        return -1;
    }
    if (ctx->count == PLUGIN_MAX_KERNELS) {
        snprintf(ctx->error, sizeof ctx->error, "more than %d kernels", PLUGIN_MAX_KERNELS);
        return -1;
    }
    snprintf(ctx->kernels[ctx->count].name, PLUGIN_NAME_MAX, "%s", name);
    ctx->kernels[ctx->count++].fn = fn;
    return 0;
}

static int api_init_error(const ippc_api *api, const char *message)
{
    load_ctx *ctx = api->host;
    if (ctx)
        snprintf(ctx->error, sizeof ctx->error, "%s", message ? message : "init failed");
    return -1;
}

/* Pushes a new api (a userdata: it lives as long as a kernel uses it). */
static ippc_api *api_push(lua_State *L)
{
    ippc_api *api = lua_newuserdatauv(L, sizeof *api, 0);
    memset(api, 0, sizeof *api);
    api->abi_version = IPPC_PLUGIN_ABI_VERSION;
    api->size = sizeof *api;
    api->engine_version = IPPC_VERSION;
    api->world = lmpi_world(L);
    api->register_kernel = api_register;
    api->interrupted = api_interrupted;
    api->return_nil = api_return_nil;
    api->return_boolean = api_return_boolean;
    api->return_integer = api_return_integer;
    api->return_number = api_return_number;
    api->return_string = api_return_string;
    api->return_array = api_return_array;
    api->error = api_error;
    api->init_error = api_init_error;
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
static void install_kernels(lua_State *L, const load_ctx *ctx, int api_idx)
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

#define LOAD_FAIL(...)                                                                             \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        goto fail;                                                                                 \
    } while (0)

int plugin_load(lua_State *L, const char *path, char *err, size_t errlen)
{
    struct stat st;
    void *handle = NULL;
    int top = lua_gettop(L);
    if (!path || !path[0])
        LOAD_FAIL("cannot load a plugin: empty library path");
    if (stat(path, &st) != 0)
        LOAD_FAIL("cannot load plugin %s: %s", path, strerror(errno));
    dlerror();
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        LOAD_FAIL("cannot load plugin %s: %s", path, why ? why : "dlopen failed");
    }
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
    const uint32_t *abi = dlsym(handle, "ippc_plugin_abi");
    if (!abi)
        LOAD_FAIL("%s is not an ippc plugin: it does not define ippc_plugin_abi "
                  "(IPPC_PLUGIN_DEFINE() from ippc/plugin.h)",
                  path);
    if (*abi != IPPC_PLUGIN_ABI_VERSION)
        LOAD_FAIL("%s was built for plugin ABI version %u; this engine implements version %u "
                  "(rebuild it against this ippc's include/ippc/plugin.h)",
                  path, (unsigned)*abi, (unsigned)IPPC_PLUGIN_ABI_VERSION);
    int (*init)(const ippc_api *);
    *(void **)(&init) = dlsym(handle, "ippc_plugin_init");
    if (!init)
        LOAD_FAIL("%s is not an ippc plugin: it does not define ippc_plugin_init", path);

    ippc_api *api = api_push(L);
    int api_idx = lua_gettop(L);
    load_ctx *ctx = lua_newuserdatauv(L, sizeof *ctx, 0); /* big: not on the C stack */
    memset(ctx, 0, sizeof *ctx);
    api->host = ctx;
    int rc = init(api);
    api->host = NULL;
    if (rc != 0)
        LOAD_FAIL("ippc_plugin_init of %s failed: %s", path,
                  ctx->error[0] ? ctx->error : "it returned non-zero");
    install_kernels(L, ctx, api_idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &libs_key);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, handle); /* libs[handle] = names */
    lua_pop(L, 1);
    push_load_result(L, path, -1);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 0;
fail:
    if (handle)
        dlclose(handle);
    lua_settop(L, top);
    return -1;
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
