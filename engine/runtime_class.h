/* runtime_class.h — how a runtime implementation plugs into runtime.h.
 *
 * A runtime's own struct starts with `runtime base`, whose class holds its
 * functions; runtimes.c dispatches runtime_* to them.  The functions keep
 * the threading rules of runtime.h (interrupt: any thread, signal-safe).
 */
#ifndef IPPC_ENGINE_RUNTIME_CLASS_H
#define IPPC_ENGINE_RUNTIME_CLASS_H

#include "runtime.h"

typedef struct runtime_class {
    const char *name;
    runtime_kind kind;
    runtime *(*create)(int rank, int size, ippc_error *err);
    void (*destroy)(runtime *rt);
    json_t *(*run_task)(runtime *rt, const json_t *task, ippc_blobs *task_blobs,
                        ippc_blobs *result_blobs);
    void (*set_stdout_sink)(runtime *rt, runtime_stdout_sink sink, void *arg);
    void (*interrupt)(runtime *rt);
} runtime_class;

struct runtime {
    const runtime_class *cls;
};

extern const runtime_class runtime_lua_class;    /* runtime.c */
extern const runtime_class runtime_python_class; /* pyruntime.c */

#endif
