/* runtime_impl.h — what runtime.c shares with runtime_ns.c (the namespace
 * ops: load, reset, delete, list) and fanout*.c (data ops fanned out by
 * MPI); not for the rest of the engine.
 *
 * A task's outcome is built in a task_ctx (task.h) that owns everything it
 * holds, so a Lua error unwinding through an op leaks nothing.
 */
#ifndef IPPC_ENGINE_RUNTIME_IMPL_H
#define IPPC_ENGINE_RUNTIME_IMPL_H

#include <jansson.h>
#include <lua.h>

#include "runtime.h"
#include "task.h"

/* Converts the Lua value at idx for the result; 0, or -1 with c failed. */
int task_wire(lua_State *L, task_ctx *c, int idx, const char *what, json_t **out);
/* Pushes the global name (raw); 1 if it is defined, else pushes nothing,
 * records a NameError and returns 0. */
int task_global(lua_State *L, task_ctx *c, const char *name, size_t len);
/* Assigns the globals of ns (name -> skeleton over blobs, whose arrays are
 * adopted); converts everything first, so a bad value changes no global
 * (then a ValueError is recorded).  May raise a Lua memory error. */
void rt_push_ns(lua_State *L, task_ctx *c, const json_t *ns, ippc_blobs *blobs);

/* fanout_lua.c: the data op of c (with "fanout") over the Lua globals. */
struct fanout;
void fanout_lua_run(lua_State *L, task_ctx *c, struct fanout *f);

/* runtime_ns.c: called by rt_setup once the standard globals exist. */
void rt_ns_snapshot(lua_State *L);
/* runtime_ns.c: the ops. */
void op_load(lua_State *L, task_ctx *c);
void op_reset(lua_State *L, task_ctx *c);
void op_delete(lua_State *L, task_ctx *c);
void op_list(lua_State *L, task_ctx *c);

#endif
