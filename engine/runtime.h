/* runtime.h — the engine's Lua 5.4 runtime: one namespace, one task at a time.
 *
 * The runtime owns one lua_State whose global table is the user namespace (as
 * IPython's user_ns), with the `nd` and `mpi` modules loaded and `print` /
 * `io.write` captured into the running task's stdout.
 *
 * Threads: runtime_new, runtime_run_task and runtime_free are called from the
 * engine's main thread only (the thread that called MPI_Init_thread).
 * runtime_interrupt may be called from any thread.
 */
#ifndef IPPC_ENGINE_RUNTIME_H
#define IPPC_ENGINE_RUNTIME_H

#include <jansson.h>

#include "error.h"
#include "value.h"

typedef struct runtime runtime;

/* rank/size of MPI_COMM_WORLD (0/1 when MPI is not used).  NULL + err on failure. */
runtime *runtime_new(int rank, int size, ippc_error *err);
void runtime_free(runtime *rt);

/* Runs one task message from the controller (see common/proto.h for the ops:
 * execute, run, push, pull, apply) whose binary attachments are task_blobs (the
 * runtime may steal blob data: it sets items[i].data to NULL when it does).
 * Always returns a new result message
 *   {"type":"result","task":T,"status":"ok"|"error"|"aborted","stdout":"...",
 *    "value": <skeleton>            (ok; op-dependent, may be absent),
 *    "ename","evalue","traceback":[lines]   (error/aborted)}
 * and appends the blobs referenced by "value" to result_blobs (initialised by
 * the caller).  NULL only on allocation failure. */
json_t *runtime_run_task(runtime *rt, const json_t *task, ippc_blobs *task_blobs,
                         ippc_blobs *result_blobs);

/* Asks the running task (if any) to stop; it ends with status "aborted".  Safe
 * from any thread; a no-op when idle (the flag is cleared when a task starts). */
void runtime_interrupt(runtime *rt);

#endif
