/* test_server_metrics.c — server/metrics.c: the growable Prometheus text
 * buffer (far past any fixed size), histograms, and the hub's families. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (; *text; text++)
        n += *text == '\n';
    return n;
}

/* Thousands of lines, each measured before it is written. */
static void test_grows(void **state)
{
    (void)state;
    metrics_text m;
    metrics_init(&m);
    for (int i = 0; i < 5000; i++)
        metrics_printf(&m, "line_%d{label=\"%0200d\"} %d\n", i, i, i);
    size_t len = 0;
    char *text = metrics_take(&m, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_int_equal(count_lines(text), 5000);
    assert_non_null(strstr(text, "line_4999{"));
    free(text);
    assert_null(m.data); /* taken: the buffer is empty again */
    text = metrics_take(&m, &len);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);
}

static void test_histogram_after_adopted_text(void **state)
{
    (void)state;
    char *first = strdup("# HELP a A.\n# TYPE a gauge\na 1\n");
    metrics_text m;
    metrics_adopt(&m, first, strlen(first));
    static const char *const les[3] = {"0.1", "1", "+Inf"};
    const uint64_t buckets[3] = {1, 4, 9};
    metrics_histogram(&m, "h_seconds", "Latency.", les, buckets, 3, 2.5, 9);
    size_t len;
    char *text = metrics_take(&m, &len);
    assert_string_equal(text, "# HELP a A.\n# TYPE a gauge\na 1\n"
                              "# HELP h_seconds Latency.\n# TYPE h_seconds histogram\n"
                              "h_seconds_bucket{le=\"0.1\"} 1\nh_seconds_bucket{le=\"1\"} 4\n"
                              "h_seconds_bucket{le=\"+Inf\"} 9\nh_seconds_sum 2.500000\n"
                              "h_seconds_count 9\n");
    free(text);
}

static void test_hub_families(void **state)
{
    (void)state;
    metrics_hub_snapshot s = {.engines_idle = 3,
                              .engines_busy = 1,
                              .queue_depth = 5,
                              .tasks_submitted_total = 12,
                              .bytes_to_engines = 1ULL << 40};
    static const char *const states[7] = {"waiting", "pending", "running", "completed",
                                          "failed",  "aborted", "lost"};
    for (int k = 0; k < 7; k++) {
        s.tasks[k] = (size_t)k;
        s.task_states[k] = states[k];
    }
    metrics_text m;
    metrics_init(&m);
    metrics_hub(&m, &s);
    size_t len;
    char *text = metrics_take(&m, &len);
    const char *want[] = {"ippc_engines{state=\"idle\"} 3\n",
                          "ippc_tasks{state=\"lost\"} 6\n",
                          "# TYPE ippc_queue_depth gauge\nippc_queue_depth 5\n",
                          "ippc_tasks_submitted_total 12\n",
                          "ippc_bytes_total{direction=\"to_engines\"} 1099511627776\n",
                          "# TYPE ippc_ws_clients_dropped_total counter\n"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        if (!strstr(text, want[i]))
            print_error("missing %s in:\n%s", want[i], text);
        assert_non_null(strstr(text, want[i]));
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows),
        cmocka_unit_test(test_histogram_after_adopted_text),
        cmocka_unit_test(test_hub_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
