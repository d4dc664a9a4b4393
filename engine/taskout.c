/* taskout.c — a task's captured stdout and its streaming (taskout.h). */
#include "taskout.h"

#include <time.h>

#define TASKOUT_NOTE "\n[stdout truncated]\n"
#define TASKOUT_PERIOD_MS 100
#define TASKOUT_STREAM_BYTES ((size_t)64 << 10)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void taskout_begin(taskout *t, uint64_t task_id)
{
    buf_reset(&t->out);
    t->truncated = 0;
    t->streamed = 0;
    t->last_flush_ms = 0;
    t->task_id = task_id;
}

void taskout_add(taskout *t, const char *s, size_t n)
{
    if (t->truncated || n == 0)
        return;
    size_t room = TASKOUT_CAP - t->out.len, take = n < room ? n : room;
    size_t note = take < n ? sizeof TASKOUT_NOTE - 1 : 0;
    if (buf_reserve(&t->out, take + note) < 0) {
        t->truncated = 1; /* keep what we have */
        return;
    }
    buf_append(&t->out, s, take); /* cannot fail: reserved */
    if (note) {
        buf_append(&t->out, TASKOUT_NOTE, note);
        t->truncated = 1;
    }
}

/* When forced (end of task), when TASKOUT_STREAM_BYTES are waiting, or when
 * TASKOUT_PERIOD_MS passed since the last time (the first output of a task
 * goes at once). */
void taskout_stream(taskout *t, int force)
{
    size_t fresh = t->out.len - t->streamed;
    if (!t->sink || fresh == 0)
        return;
    int64_t now = now_ms();
    if (!force && fresh < TASKOUT_STREAM_BYTES && t->last_flush_ms != 0 &&
        now - t->last_flush_ms < TASKOUT_PERIOD_MS)
        return;
    t->sink(t->sink_arg, t->task_id, t->out.data + t->streamed, fresh);
    t->streamed = t->out.len;
    t->last_flush_ms = now ? now : 1;
}

void taskout_end(taskout *t)
{
    if (t->out.cap > ((size_t)1 << 20))
        buf_free(&t->out);
    buf_reset(&t->out);
}

void taskout_free(taskout *t)
{
    buf_free(&t->out);
}
