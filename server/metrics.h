/* metrics.h — Prometheus text exposition (format 0.0.4) for GET /metrics:
 * one growable buffer, the hub's families from a snapshot of its counters,
 * and histograms (the REST latency one lives in http_api.c's counters).
 *
 * The hub takes its snapshot under its lock (a few dozen integers) and the
 * text is written after unlocking.
 *
 * Threads: a metrics_text belongs to its caller; everything here is pure.
 * Memory: metrics_take hands the text to the caller (free()); on allocation
 * failure the text is cut short, never overrun.
 */
#ifndef IPPC_METRICS_H
#define IPPC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* The text is common/buf.h's growable buffer. */
typedef ippc_buf metrics_text;

void metrics_init(metrics_text *m);
/* Continues text (malloc'd, len bytes, or NULL) that the buffer takes over. */
void metrics_adopt(metrics_text *m, char *text, size_t len);
void metrics_printf(metrics_text *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The "# HELP" and "# TYPE" lines of a family. */
void metrics_family(metrics_text *m, const char *name, const char *type, const char *help);
/* A histogram family: n cumulative buckets (les[n-1] is "+Inf"), sum, count. */
void metrics_histogram(metrics_text *m, const char *name, const char *help, const char *const *les,
                       const uint64_t *buckets, size_t n, double sum, uint64_t count);
/* The text so far (NUL-terminated; caller frees) and its length; the buffer
 * is left empty.  NULL only if nothing could be allocated. */
char *metrics_take(metrics_text *m, size_t *len);
void metrics_free(metrics_text *m);

/* The hub's counters at one moment. */
typedef struct metrics_hub_snapshot {
    size_t engines_idle, engines_busy, engines_dead;
    size_t tasks[7];            /* in memory by state: waiting pending running completed
                                   failed aborted lost */
    const char *task_states[7]; /* their label values */
    size_t queue_depth;         /* tasks sent to engines and not finished */
    size_t unassigned;          /* balanced tasks without an engine */
    uint64_t requests_total, tasks_submitted_total;
    size_t ws_clients;
    uint64_t ws_clients_dropped;
    uint64_t bytes_to_engines, bytes_from_engines;
    size_t kept_result_bytes, keep_results_bytes; /* results in memory, and the bound */
    uint64_t requests_forgotten[3];               /* by reason: count, budget, delivered */
    uint64_t fanout_ops[3]; /* data ops fanned out by MPI: push, scatter, gather */
} metrics_hub_snapshot;

void metrics_hub(metrics_text *m, const metrics_hub_snapshot *s);

#endif
