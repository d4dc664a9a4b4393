/* task.h — one task's outcome, shared by both runtimes: what an op records
 * (status, error, value, parts, item errors) and the result message built
 * from it (the shape is runtime_run_task's, runtime.h); and the parts of
 * running a task that do not depend on the language: its start and finish
 * (stdout, blobs), the checks of the ops' arguments, op "pull" over a
 * runtime's own lookup, and the per-item outcomes of op "map".  What a
 * value or a global is stays the runtime's (runtime.c, pyruntime.c).
 *
 * A task_ctx owns everything it holds, so an error unwinding through an op
 * (a Lua error) leaks nothing; task_result hands it all to the message.
 *
 * Threads: the runtime's thread only.
 */
#ifndef IPPC_ENGINE_TASK_H
#define IPPC_ENGINE_TASK_H

#include <stdatomic.h>
#include <stddef.h>

#include <jansson.h>

#include "runtime.h"
#include "taskout.h"
#include "value.h"

typedef enum { TASK_OK, TASK_ERROR, TASK_ABORTED } task_status;

typedef struct task_ctx {
    runtime *rt;
    const atomic_int *interrupt; /* the runtime's: set when the task is to stop */
    const json_t *task;
    ippc_blobs *task_blobs;
    ippc_blobs *result_blobs;
    size_t first_blob; /* result_blobs->count when the task started */
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
    ippc_blobs no_task_blobs; /* task_blobs when the task came with none */
    ippc_blobs own_results;   /* result_blobs when the caller keeps none */
} task_ctx;

/* Starts c for task on rt (interrupt: the runtime's flag): out begins the
 * task's stdout, task_blobs and result_blobs may be NULL (c uses empty ones
 * of its own).  1 when the op is to run; 0 when task is not a JSON object
 * (a ProtocolError recorded).  c must not move until task_finish. */
int task_start(task_ctx *c, runtime *rt, const atomic_int *interrupt, const json_t *task,
               ippc_blobs *task_blobs, ippc_blobs *result_blobs, taskout *out);
/* Ends c: out's last bytes go to the sink (before the result exists), the
 * result message is built (task_result) and out is emptied.  NULL only
 * when out of memory. */
json_t *task_finish(task_ctx *c, taskout *out);

/* Records a failure with a one-line traceback "ename: evalue". */
void task_fail(task_ctx *c, task_status status, const char *ename, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The task's string field key, or NULL after recording a ProtocolError. */
const char *task_string(task_ctx *c, const char *key, size_t *len);
/* A JSON string for arbitrary bytes (invalid UTF-8 becomes U+FFFD). */
json_t *json_text(const char *s, size_t n);
/* Moves the failure recorded in c to c->item_errors as item index (0-based
 * within a map chunk) and clears it, so the chunk goes on. */
void task_item_failed(task_ctx *c, long long index);
/* After a map chunk: when items failed, the chunk reads as failed with its
 * first failed item's error (and keeps its value). */
void task_items_settle(task_ctx *c);
/* An apply/map argument {"$ref": NAME}: the global NAME, not a value. */
int task_is_ref(const json_t *v);
/* op "apply"'s "args" (a list, may be absent or null) and "kwargs" (an
 * object, may be absent or null); 0, or -1 with a ProtocolError recorded. */
int task_apply_args(task_ctx *c, const json_t **args, const json_t **kwargs);
/* op "map"'s "sequences": a list of 1..64, or NULL with a ProtocolError. */
const json_t *task_map_sequences(task_ctx *c);
/* Before a map chunk's first item: value and item_errors become lists. */
void task_map_begin(task_ctx *c);
/* After item index (0-based) left its result v (NULL when it failed) or
 * the failure in c: appends v, or null and an item error.  -1 when the
 * task was interrupted (c keeps no value then: the chunk ends), else 0. */
int task_map_item(task_ctx *c, long long index, json_t *v);
/* The wire value of the global name (len bytes) for op "pull", or NULL
 * with the failure recorded in c. */
typedef json_t *(*task_pull_get)(task_ctx *c, const char *name, size_t len, void *arg);
/* op "pull" {"names": [name, ...] or name}: c->value = {name: get(name)},
 * up to the first failure. */
void task_pull(task_ctx *c, task_pull_get get, void *arg);
/* The result message of c (runtime.h) with out's text as "stdout"; moves
 * c's values into it and frees the rest of c (result blobs that no value
 * refers to any more included).  NULL only when out of memory. */
json_t *task_result(task_ctx *c, const taskout *out);

#endif
