/* taskout.h — a task's captured stdout: the buffer that print writes into,
 * capped, and the streaming of its new bytes to a sink while the task runs.
 *
 * Both runtimes (Lua, Python) own one taskout; their print functions call
 * taskout_add, which streams on the runtime's thread: the first output of a
 * task at once, then at most every ~100 ms, or sooner when 64 KiB are
 * waiting; taskout_flush gives the sink whatever it has not seen before the
 * result is built.  So the sink sees every byte of the task's stdout exactly
 * once, in order (up to TASKOUT_CAP, the truncation note included).  The
 * sink contract is runtime_set_stdout_sink's (runtime.h).
 *
 * Threads: the runtime's thread only.
 */
#ifndef IPPC_ENGINE_TASKOUT_H
#define IPPC_ENGINE_TASKOUT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "runtime.h"

#define TASKOUT_CAP ((size_t)8 << 20)

typedef struct taskout {
    ippc_buf out;
    int truncated;
    runtime_stdout_sink sink; /* NULL: no streaming */
    void *sink_arg;
    uint64_t task_id;
    size_t streamed;       /* bytes of out already given to the sink */
    int64_t last_flush_ms; /* 0: nothing flushed yet in this task */
} taskout;

/* Empties the buffer for the task with this id (0: none). */
void taskout_begin(taskout *t, uint64_t task_id);
/* Appends n bytes (past the cap: the truncation note once, then nothing). */
void taskout_add(taskout *t, const char *s, size_t n);
/* Gives the sink what it has not seen, when due (force: now). */
void taskout_stream(taskout *t, int force);
/* After the result was built: keeps a chatty task's buffer from pinning memory. */
void taskout_end(taskout *t);
void taskout_free(taskout *t);

#endif
