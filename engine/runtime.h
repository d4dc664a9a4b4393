/* runtime.h — the engine's runtime: one namespace, one task at a time.
 *
 * Two implementations behind one interface (runtime_class.h):
 *   RUNTIME_LUA     (runtime.c, the default) one lua_State whose global table
 *                   is the user namespace (as IPython's user_ns), with the
 *                   `nd` and `mpi` modules loaded;
 *   RUNTIME_PYTHON  (pyruntime*.c) the embedded CPython interpreter whose
 *                   __main__ dict is the namespace, with NumPy and the
 *                   mpi4py-compatible `mpi4py.MPI` (docs/python.md).
 * Both capture print into the running task's stdout, take the same task
 * messages and answer the same result messages; what is said below of Lua
 * globals holds for Python's namespace alike (docs/python.md has the
 * differences: Python values and NumPy arrays instead of Lua tables and nd).
 * Only one runtime exists per engine process (CPython is per process).
 *
 * Threads: runtime_new, runtime_run_task and runtime_free are called from the
 * engine's main thread only (the thread that called MPI_Init_thread).
 * runtime_interrupt may be called from any thread.
 */
#ifndef IPPC_ENGINE_RUNTIME_H
#define IPPC_ENGINE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "error.h"
#include "value.h"

typedef struct runtime runtime;

typedef enum runtime_kind { RUNTIME_LUA = 0, RUNTIME_PYTHON, RUNTIME_KIND_COUNT } runtime_kind;

/* "lua", "python"; NULL for another value. */
const char *runtime_kind_name(runtime_kind kind);
/* Parses a runtime name; -1 if unknown. */
int runtime_kind_parse(const char *name);

/* rank/size of MPI_COMM_WORLD (0/1 when MPI is not used).  NULL + err on
 * failure.  With MPI every rank must create the same kind, in the same order
 * (both duplicate MPI_COMM_WORLD). */
runtime *runtime_new(runtime_kind kind, int rank, int size, ippc_error *err);
void runtime_free(runtime *rt);
runtime_kind runtime_kind_of(const runtime *rt);

/* Python only, before runtime_new: on, `import mpi4py` finds an installed
 * mpi4py built for MPICH (ippc-engine --real-mpi4py; runtime_new fails,
 * saying why, when there is none) instead of the engine's own module. */
void runtime_python_real_mpi4py(int on);

/* Runs one task message from the controller (see common/proto.h for the ops:
 * execute, run, push, pull, apply, map, and these namespace ops:
 *   "load"   {"library": path} -> value {"library": path, "kernels": [names]};
 *            the kernels become Lua globals (and apply targets); a missing
 *            file, a non-plugin, another ABI version or a failing init is an
 *            error with ename "PluginError" (see engine/plugin.h)
 *   "reset"  -> the namespace as at start: every user global removed, the
 *            standard library, nd, mpi and our print etc. restored, loaded
 *            kernels kept (and set as globals again); no value
 *   "delete" {"names": [...]} -> removes those globals; any undefined name
 *            is an error "NameError" and then nothing is removed
 *   "list"   -> value {name: {"type": "nd"|"number"|"integer"|"string"|
 *            "boolean"|"table"|"function"|"userdata"|"thread", "dtype",
 *            "shape", "bytes" (nd), "bytes" (string), "length" (table, its
 *            border #t)}} for the user's globals only (not the setup's own
 *            values, not kernels), like %whos)
 * and push, scatter and gather with a "fanout" member (one data op over
 * several engines of the job, moved by MPI: engine/fanout.h, the messages
 * in common/proto.h; a fanned-out gather's root may answer "parts"),
 * whose binary attachments are task_blobs (the
 * runtime may steal blob data: it sets items[i].data to NULL when it does).
 * Always returns a new result message
 *   {"type":"result","task":T,"status":"ok"|"error"|"aborted","stdout":"...",
 *    "value": <skeleton>            (ok; op-dependent, may be absent),
 *    "parts": [<skeleton>...]       (ok; a fanned-out gather's root only),
 *    "ename","evalue","traceback":[lines]   (error/aborted)}
 * except for a "map" chunk in which some items failed: it is "error" with
 * the first failed item's ename/evalue/traceback, and keeps "value" (a list
 * with null at the failed items) plus "item_errors": [{"index" (0-based in
 * the chunk), "ename", "evalue", "traceback"}], one per failed item.
 * and appends the blobs referenced by "value" to result_blobs (initialised by
 * the caller).  NULL only on allocation failure. */
json_t *runtime_run_task(runtime *rt, const json_t *task, ippc_blobs *task_blobs,
                         ippc_blobs *result_blobs);

/* Streaming stdout.  While a task runs, its new stdout (print, io.write,
 * io.stdout:write) is passed to sink(arg, task, data, len) from the main
 * thread, inside those calls: the first output of a task at once, then at
 * most every ~100 ms, or sooner when 64 KiB are waiting; whatever the sink
 * has not seen is passed once more just before runtime_run_task builds its
 * result.  So the sink sees every byte of the task's stdout exactly once, in
 * order (up to the 8 MiB cap, the truncation note included), and the
 * result's "stdout" still carries all of it.  `task` is the task message's
 * "task" id (0 if it has none); data is valid only during the call.  The
 * sink must not call back into the runtime.  NULL turns streaming off.
 * Main thread only. */
typedef void (*runtime_stdout_sink)(void *arg, uint64_t task, const char *data, size_t len);
void runtime_set_stdout_sink(runtime *rt, runtime_stdout_sink sink, void *arg);

/* Asks the running task (if any) to stop; it ends with status "aborted".  Safe
 * from any thread and async-signal-safe (engine/main.c calls it from its
 * SIGTERM handler); a no-op when idle (the flag is cleared when a task
 * starts). */
void runtime_interrupt(runtime *rt);

#endif
