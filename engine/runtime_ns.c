/* runtime_ns.c — the namespace ops of the runtime: load (a native plugin),
 * reset, delete and list (%whos-like).
 *
 * "User globals" are told from the engine's own by a snapshot of the global
 * table taken when the runtime was set up (the standard library, nd, mpi,
 * our print etc.): a global is the user's when its name is not in the
 * snapshot or its value differs from the snapshot's.  Kernels of loaded
 * plugins are the engine's too: reset keeps them (they are put back as
 * globals), list does not show them.  reset restores the snapshot's values
 * (so `print = nil` is undone) but not what user code did inside those
 * tables (string.x = 1 stays); it also forgets modules that `require`
 * loaded since.
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "nd.h"
#include "plugin.h"
#include "runtime_impl.h"

static const char baseline_key = 'b'; /* registry: name -> value at setup */
static const char loaded_key = 'p';   /* registry: package.loaded names at setup */

static void copy_table(lua_State *L, int src)
{
    src = lua_absindex(L, src);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, src)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
}

void rt_ns_snapshot(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    copy_table(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &baseline_key);
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    copy_table(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &loaded_key);
    lua_pop(L, 1);
}

/* 1 if the global at key (stack -2) with value (stack -1) is the user's:
 * not the setup's own value and not a plugin kernel. */
static int is_user_global(lua_State *L, int baseline)
{
    if (lua_type(L, -2) != LUA_TSTRING)
        return 0;
    if (plugin_is_kernel(L, -1))
        return 0;
    lua_pushvalue(L, -2);
    lua_rawget(L, baseline);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    return !same;
}

/* Removes every key of t (stack index) that snapshot does not have. */
static void drop_new_keys(lua_State *L, int t, int snapshot)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, snapshot) == LUA_TNIL) {
            lua_pushvalue(L, -2);
            lua_pushnil(L);
            lua_rawset(L, t); /* clearing a field during next is allowed */
        }
        lua_pop(L, 1);
    }
}

/* op "reset": the namespace as it was at start (plus loaded kernels). */
void op_reset(lua_State *L, task_ctx *c)
{
    (void)c;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    int g = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &baseline_key);
    int b = lua_gettop(L);
    drop_new_keys(L, g, b);
    lua_pushnil(L);
    while (lua_next(L, b)) { /* put the setup's values back */
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, g);
    }
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &loaded_key);
    drop_new_keys(L, lua_gettop(L) - 1, lua_gettop(L));
    lua_settop(L, top);
    plugin_install_globals(L);
    lua_gc(L, LUA_GCCOLLECT);
}

/* op "delete" {"names": [...]}: all names must be defined, else NameError
 * and nothing is removed. */
void op_delete(lua_State *L, task_ctx *c)
{
    const json_t *names = json_object_get(c->task, "names");
    if (!json_is_array(names)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "delete needs a list 'names'");
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    int g = lua_gettop(L);
    size_t i;
    const json_t *name;
    json_array_foreach(names, i, name) {
        if (!json_is_string(name)) {
            task_fail(c, TASK_ERROR, "ProtocolError", "delete: names must be strings");
            lua_settop(L, g - 1);
            return;
        }
        lua_pushlstring(L, json_string_value(name), json_string_length(name));
        int missing = lua_rawget(L, g) == LUA_TNIL;
        lua_pop(L, 1);
        if (missing) {
            task_fail(c, TASK_ERROR, "NameError", "name '%s' is not defined",
                      json_string_value(name));
            lua_settop(L, g - 1);
            return;
        }
    }
    json_array_foreach(names, i, name) {
        lua_pushlstring(L, json_string_value(name), json_string_length(name));
        lua_pushnil(L);
        lua_rawset(L, g);
    }
    lua_settop(L, g - 1);
}

/* Description of the value on top, for list. */
static json_t *describe(lua_State *L)
{
    json_t *d = json_object();
    const char *type = luaL_typename(L, -1);
    nd_array *a = nd_test(L, -1);
    size_t len;
    if (a) {
        type = "nd";
        json_t *shape = json_array();
        for (int k = 0; k < nd_ndim(a); k++)
            json_array_append_new(shape, json_integer((json_int_t)nd_shape(a)[k]));
        json_object_set_new(d, "dtype", json_string(nd_dtype_name(nd_dtype_of(a))));
        json_object_set_new(d, "shape", shape);
        json_object_set_new(d, "bytes", json_integer((json_int_t)nd_bytes(a)));
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
        type = lua_isinteger(L, -1) ? "integer" : "number";
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        lua_tolstring(L, -1, &len);
        json_object_set_new(d, "bytes", json_integer((json_int_t)len));
    } else if (lua_type(L, -1) == LUA_TTABLE) {
        json_object_set_new(d, "length", json_integer((json_int_t)lua_rawlen(L, -1)));
    }
    json_object_set_new(d, "type", json_string(type));
    return d;
}

/* op "list": {name: {"type", ...}} for the user's globals. */
void op_list(lua_State *L, task_ctx *c)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    int g = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &baseline_key);
    int b = lua_gettop(L);
    c->value = json_object();
    lua_pushnil(L);
    while (lua_next(L, g)) {
        if (is_user_global(L, b)) {
            size_t klen;
            const char *key = lua_tolstring(L, -2, &klen); /* a string: no conversion */
            json_t *d = describe(L);
            if (json_object_setn_new(c->value, key, klen, d) < 0) /* not UTF-8: skipped */
                json_decref(d);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, g - 1);
}

/* op "load" {"library": path}: value {"library": path, "kernels": [...]}. */
void op_load(lua_State *L, task_ctx *c)
{
    const char *path = task_string(c, "library", NULL);
    if (!path)
        return;
    char err[512];
    if (plugin_load(L, path, err, sizeof err) < 0) {
        task_fail(c, TASK_ERROR, "PluginError", "%s", err);
        return;
    }
    task_wire(L, c, -1, NULL, &c->value);
    lua_pop(L, 1);
}
