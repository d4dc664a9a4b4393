/* fanout_lua.c — the Lua runtime's namespace as fanned-out data ops see it
 * (fan_ns, fanout.h): globals assigned and read under lua_pcall, so no Lua
 * error unwinds through an exchange that other engines wait for.
 *
 * A read value stays on the Lua stack (hold[0] records the stack top to
 * restore) until release, so its nd bytes stay alive while MPI sends them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "fanout.h"
#include "luavalue.h"
#include "nd.h"
#include "runtime_impl.h"

typedef struct lua_assign {
    task_ctx *c;
    const json_t *ns;
    ippc_blobs *blobs;
} lua_assign;

/* Runs fn with arg as its light userdata, protected; nres results stay on
 * the stack.  -1 (error recorded) when it raised. */
static int fan_lua_pcall(lua_State *L, task_ctx *c, lua_CFunction fn, void *arg, int nres)
{
    const char *what = json_string_value(json_object_get(c->task, "op"));
    if (!lua_checkstack(L, 4)) {
        task_fail(c, TASK_ERROR, "MemoryError", "%s: Lua stack overflow", what ? what : "?");
        return -1;
    }
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, arg);
    int st = lua_pcall(L, 1, nres, 0);
    if (st == LUA_OK)
        return 0;
    const char *msg = lua_tostring(L, -1);
    task_fail(c, TASK_ERROR, st == LUA_ERRMEM ? "MemoryError" : "RuntimeError", "%s: %s",
              what ? what : "?", msg ? msg : "error");
    lua_pop(L, 1);
    return -1;
}

static int assign_globals(lua_State *L)
{
    lua_assign *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    rt_push_ns(L, a->c, a->ns, a->blobs);
    return 0;
}

static void lua_ns_assign(void *self, task_ctx *c, const json_t *ns, ippc_blobs *blobs)
{
    lua_assign a = {c, ns, blobs};
    fan_lua_pcall(self, c, assign_globals, &a, 0);
}

typedef struct lua_read {
    task_ctx *c;
    const char *name;
} lua_read;

static int read_global(lua_State *L)
{
    lua_read *r = lua_touserdata(L, 1);
    lua_settop(L, 0);
    if (!task_global(L, r->c, r->name, strlen(r->name)))
        lua_pushnil(L); /* a NameError is recorded */
    return 1;
}

static int lua_ns_read(void *self, task_ctx *c, const char *name, fan_value *out)
{
    lua_State *L = self;
    out->hold[0] = (void *)(intptr_t)(lua_gettop(L) + 1); /* + 1: nonzero even at top 0 */
    lua_read r = {c, name};
    if (fan_lua_pcall(L, c, read_global, &r, 1) < 0 || c->status != TASK_OK)
        return -1;
    int slot = lua_gettop(L);
    nd_array *a = nd_test(L, slot);
    if (a && nd_ndim(a) >= 1) {
        out->is_array = 1;
        out->dtype = nd_dtype_of(a);
        out->ndim = nd_ndim(a);
        for (int d = 0; d < nd_ndim(a); d++)
            out->shape[d] = nd_shape(a)[d];
        out->bytes = nd_bytes(a);
        out->data = nd_data(a);
        if (!nd_is_contiguous(a)) {
            unsigned char *copy = malloc(out->bytes ? out->bytes : 1);
            if (!copy) {
                task_fail(c, TASK_ERROR, "MemoryError", "gather '%s': out of memory", name);
                return -1;
            }
            nd_copy_out(a, copy);
            out->data = copy;
            out->hold[1] = copy;
        }
        return 0;
    }
    ippc_error err;
    if (!(out->skel = luavalue_to_wire(L, slot, &out->blobs, &err))) {
        task_fail(c, TASK_ERROR, "TypeError", "gather '%s': %s", name, err.message);
        return -1;
    }
    return 0;
}

static void lua_ns_release(void *self, fan_value *v)
{
    if (v->hold[0])
        lua_settop(self, (int)(intptr_t)v->hold[0] - 1);
    free(v->hold[1]);
    json_decref(v->skel);
    blobs_free(&v->blobs);
    v->hold[0] = v->hold[1] = NULL;
    v->skel = NULL;
}

void fanout_lua_run(lua_State *L, task_ctx *c, fanout *f)
{
    const fan_ns ns = {L, lua_ns_assign, lua_ns_read, lua_ns_release};
    op_fanout(&ns, c, f);
}
