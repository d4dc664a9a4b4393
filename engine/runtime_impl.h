/* runtime_impl.h — what runtime.c shares with runtime_ns.c (the namespace
 * ops: load, reset, delete, list) and fanout*.c (data ops fanned out by
 * MPI); not for the rest of the engine.
 *
 * A task's outcome is built in a task_ctx that owns everything it holds, so
 * a Lua error unwinding through an op leaks nothing.
 */
#ifndef IPPC_ENGINE_RUNTIME_IMPL_H
#define IPPC_ENGINE_RUNTIME_IMPL_H

#include <jansson.h>
#include <lua.h>

#include "runtime.h"

typedef enum { TASK_OK, TASK_ERROR, TASK_ABORTED } task_status;

typedef struct task_ctx {
    runtime *rt;
    const json_t *task;
    ippc_blobs *task_blobs;
    ippc_blobs *result_blobs;
    task_status status;
    char ename[32];
    json_t *evalue;
    json_t *traceback; /* list of lines */
    json_t *value;     /* result value, NULL if none */
    json_t *parts;     /* result "parts" (a fanned-out gather's root), NULL if none */
    /* op "map": the items that failed, [{"index", "ename", "evalue",
     * "traceback"}]; when set, the result keeps "value" (null at those
     * items) although status is "error". */
    json_t *item_errors;
} task_ctx;

/* Records a failure with a one-line traceback "ename: evalue". */
void task_fail(task_ctx *c, task_status status, const char *ename, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The task's string field key, or NULL after recording a ProtocolError. */
const char *task_string(task_ctx *c, const char *key, size_t *len);
/* Converts the Lua value at idx for the result; 0, or -1 with c failed. */
int task_wire(lua_State *L, task_ctx *c, int idx, const char *what, json_t **out);
/* A JSON string for arbitrary bytes (invalid UTF-8 becomes U+FFFD). */
json_t *json_text(const char *s, size_t n);
/* Pushes the global name (raw); 1 if it is defined, else pushes nothing,
 * records a NameError and returns 0. */
int task_global(lua_State *L, task_ctx *c, const char *name, size_t len);
/* Assigns the globals of ns (name -> skeleton over blobs, whose arrays are
 * adopted); converts everything first, so a bad value changes no global
 * (then a ValueError is recorded).  May raise a Lua memory error. */
void rt_push_ns(lua_State *L, task_ctx *c, const json_t *ns, ippc_blobs *blobs);

/* runtime_ns.c: called by rt_setup once the standard globals exist. */
void rt_ns_snapshot(lua_State *L);
/* runtime_ns.c: the ops. */
void op_load(lua_State *L, task_ctx *c);
void op_reset(lua_State *L, task_ctx *c);
void op_delete(lua_State *L, task_ctx *c);
void op_list(lua_State *L, task_ctx *c);

#endif
