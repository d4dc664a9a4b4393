/* metrics.c — Prometheus text (see metrics.h).  Every write goes through
 * metrics_printf, which measures first and grows the buffer (common/buf.h),
 * so no sum of snprintf results can run past its end. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void metrics_init(metrics_text *m)
{
    buf_init(m);
}

void metrics_adopt(metrics_text *m, char *text, size_t len)
{
    buf_init(m);
    if (text) {
        m->data = text;
        m->len = len;
        m->cap = len + 1; /* the NUL is there */
    }
}

void metrics_printf(metrics_text *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)buf_vprintf(m, fmt, ap); /* on failure the text is cut short */
    va_end(ap);
}

void metrics_family(metrics_text *m, const char *name, const char *type, const char *help)
{
    metrics_printf(m, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_histogram(metrics_text *m, const char *name, const char *help, const char *const *les,
                       const uint64_t *buckets, size_t n, double sum, uint64_t count)
{
    metrics_family(m, name, "histogram", help);
    for (size_t i = 0; i < n; i++)
        metrics_printf(m, "%s_bucket{le=\"%s\"} %llu\n", name, les[i],
                       (unsigned long long)buckets[i]);
    metrics_printf(m, "%s_sum %.6f\n%s_count %llu\n", name, sum, name, (unsigned long long)count);
}

char *metrics_take(metrics_text *m, size_t *len)
{
    char *text = buf_take(m, len);
    if (!text)
        *len = 0;
    return text;
}

void metrics_free(metrics_text *m)
{
    buf_free(m);
}

static void gauge(metrics_text *m, const char *name, const char *help, size_t value)
{
    metrics_family(m, name, "gauge", help);
    metrics_printf(m, "%s %zu\n", name, value);
}

static void counter(metrics_text *m, const char *name, const char *help, uint64_t value)
{
    metrics_family(m, name, "counter", help);
    metrics_printf(m, "%s %llu\n", name, (unsigned long long)value);
}

void metrics_hub(metrics_text *m, const metrics_hub_snapshot *s)
{
    metrics_family(m, "ippc_engines", "gauge", "Engines by state.");
    metrics_printf(m,
                   "ippc_engines{state=\"idle\"} %zu\nippc_engines{state=\"busy\"} %zu\n"
                   "ippc_engines{state=\"dead\"} %zu\n",
                   s->engines_idle, s->engines_busy, s->engines_dead);
    metrics_family(m, "ippc_tasks", "gauge", "Tasks in memory (direct and balanced) by state.");
    for (int k = 0; k < 7; k++)
        metrics_printf(m, "ippc_tasks{state=\"%s\"} %zu\n", s->task_states[k], s->tasks[k]);
    gauge(m, "ippc_queue_depth", "Tasks sent to engines and not finished.", s->queue_depth);
    gauge(m, "ippc_unassigned_tasks", "Balanced tasks waiting for an engine.", s->unassigned);
    counter(m, "ippc_requests_total", "Direct-view requests submitted.", s->requests_total);
    counter(m, "ippc_tasks_submitted_total", "Task ids handed out.", s->tasks_submitted_total);
    gauge(m, "ippc_ws_clients", "Stream clients connected.", s->ws_clients);
    counter(m, "ippc_ws_clients_dropped_total", "Stream clients cut off as slow.",
            s->ws_clients_dropped);
    metrics_family(m, "ippc_bytes_total", "counter", "Bytes of task messages and results.");
    metrics_printf(m,
                   "ippc_bytes_total{direction=\"to_engines\"} %llu\n"
                   "ippc_bytes_total{direction=\"from_engines\"} %llu\n",
                   (unsigned long long)s->bytes_to_engines,
                   (unsigned long long)s->bytes_from_engines);
    gauge(m, "ippc_kept_result_bytes",
          "Bytes of results kept in memory (finished requests and tasks).", s->kept_result_bytes);
    gauge(m, "ippc_keep_results_bytes", "Bound on ippc_kept_result_bytes (--keep-results-mb).",
          s->keep_results_bytes);
    metrics_family(m, "ippc_requests_forgotten_total", "counter",
                   "Finished requests forgotten: over the count kept, over --keep-results-mb, "
                   "or a blocking pull released once answered.");
    static const char *const why[3] = {"count", "budget", "delivered"};
    for (int k = 0; k < 3; k++)
        metrics_printf(m, "ippc_requests_forgotten_total{reason=\"%s\"} %llu\n", why[k],
                       (unsigned long long)s->requests_forgotten[k]);
    metrics_family(m, "ippc_fanout_ops_total", "counter",
                   "Pushes, scatters and gathers whose data went to one engine of an MPI job "
                   "and was fanned out by MPI.");
    static const char *const ops[3] = {"push", "scatter", "gather"};
    for (int k = 0; k < 3; k++)
        metrics_printf(m, "ippc_fanout_ops_total{op=\"%s\"} %llu\n", ops[k],
                       (unsigned long long)s->fanout_ops[k]);
}
