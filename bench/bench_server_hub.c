/* bench_server_hub.c — how long the hub lock is held, seen from outside:
 * while one thread does heavy hub work, a probe thread calls hub_info() (a
 * few microseconds of work under the lock) in a loop and records how long
 * each call took; the probe's tail latency is the time it waited for the
 * lock.  Uses only hub.h and store.h, so the same file builds against any
 * version of the hub.  Engines are fake links that answer nothing
 * themselves (no sockets, no MPI).
 *
 *   build/bench/bench_server_hub [seconds per scenario, default 2]
 *
 * Scenarios (each prints work done and the probe's p50 / p99 / max in us):
 *   answers   — a finished pull of a 200,000-number JSON list from each of 4
 *               engines, its answer rendered again and again (GET
 *               /api/v1/requests/{id} in a loop);
 *   results   — balanced tasks answered with a 1 MB array each, with a
 *               memory task store (every result is a store record);
 *   deps      — 2,000 tasks waiting on a task known only to the store (a
 *               restarted controller) and on a running one, while 200 other
 *               tasks complete one by one: time per result.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "hub.h"
#include "store.h"

#define KEY "bench-key"
#define MAX_SENT 1000000

/* What the fake engines were sent: task ids, per engine. */
static uint64_t sent_task[8][64];
static atomic_int sent_n[8];
static atomic_ullong last_sent[8];

static int fake_send(void *conn, json_t *msg, ws_blobref **blobs, size_t nblobs)
{
    (void)blobs;
    (void)nblobs;
    int e = (int)(intptr_t)conn;
    json_t *t = json_object_get(msg, "task");
    if (json_is_integer(t)) {
        atomic_store(&last_sent[e], (unsigned long long)json_integer_value(t));
        int n = atomic_fetch_add(&sent_n[e], 1);
        sent_task[e][n % 64] = (uint64_t)json_integer_value(t);
    }
    return 0;
}

static void fake_close(void *conn, const char *reason)
{
    (void)conn;
    (void)reason;
}

static hub *new_hub(store *st, int engines)
{
    hub_config cfg = {.engine_key = KEY, .store = st, .hwm = 1};
    hub *h = hub_new(&cfg);
    for (int r = 0; r < engines; r++) {
        json_t *msg =
            json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:i}", "type", "register", "key", KEY, "job",
                      "bench", "rank", r, "size", engines, "host", "h", "pid", 1);
        hub_engine_link link = {
            .conn = (void *)(intptr_t)r, .send = fake_send, .close = fake_close};
        int id;
        ippc_error err = {0};
        if (hub_engine_register(h, msg, &link, &id, &err) != 0) {
            fprintf(stderr, "register: %s\n", err.message);
            exit(1);
        }
        json_decref(msg);
    }
    return h;
}

static void answer(hub *h, int engine, uint64_t task, json_t *value, ippc_blobs *blobs)
{
    json_t *msg = json_pack("{s:s, s:I, s:s, s:s}", "type", "result", "task", (json_int_t)task,
                            "status", "ok", "stdout", "");
    if (value)
        json_object_set_new(msg, "value", value);
    ippc_blobs none;
    blobs_init(&none);
    hub_engine_message(h, engine, msg, blobs ? blobs : &none);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* ------------------------------------------------------------ the probe */

typedef struct probe {
    hub *h;
    atomic_int stop;
    double *lat;
    size_t n, cap;
} probe;

static void *probe_main(void *arg)
{
    probe *p = arg;
    while (!atomic_load(&p->stop)) {
        double t0 = now_us();
        json_decref(hub_info(p->h));
        double dt = now_us() - t0;
        if (p->n < p->cap)
            p->lat[p->n++] = dt;
        struct timespec pause = {0, 200L * 1000}; /* 200 us between probes */
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void probe_start(probe *p, hub *h, pthread_t *t)
{
    memset(p, 0, sizeof *p);
    p->h = h;
    p->cap = 1000000;
    p->lat = malloc(p->cap * sizeof *p->lat);
    if (!p->lat || pthread_create(t, NULL, probe_main, p) != 0) {
        fprintf(stderr, "bench_server_hub: cannot start the probe thread\n");
        exit(1);
    }
}

static void probe_report(probe *p, pthread_t t, const char *what)
{
    atomic_store(&p->stop, 1);
    pthread_join(t, NULL);
    qsort(p->lat, p->n, sizeof *p->lat, cmp_double);
    if (p->n)
        printf("  %-44s probe hub_info: n %zu  p50 %.1f us  p99 %.1f us  max %.1f us\n", what, p->n,
               p->lat[p->n / 2], p->lat[p->n * 99 / 100], p->lat[p->n - 1]);
    free(p->lat);
}

/* ------------------------------------------------------------ scenarios */

static void bench_answers(double seconds)
{
    hub *h = new_hub(NULL, 4);
    json_t *body = json_object();
    hub_call call = {.op = HUB_OP_PULL, .targets = "all", .body = body, .name = "a"};
    ippc_error err = {0};
    uint64_t req = hub_submit(h, &call, &err);
    json_decref(body);
    for (int e = 0; e < 4; e++) {
        json_t *list = json_array();
        for (int i = 0; i < 200000; i++)
            json_array_append_new(list, json_string("x")); /* stays a JSON list */
        answer(h, e, atomic_load(&last_sent[e]), json_pack("{s:o}", "a", list), NULL);
    }
    probe p;
    pthread_t t;
    probe_start(&p, h, &t);
    double t0 = now_us();
    int renders = 0;
    while (now_us() - t0 < seconds * 1e6) {
        int done;
        json_decref(hub_request_json(h, req, &done, &err));
        renders++;
    }
    char what[96];
    snprintf(what, sizeof what, "answers: %.1f renders/s of 800k items", renders / seconds);
    probe_report(&p, t, what);
    hub_free(h);
}

static void bench_results(double seconds)
{
    ippc_error err = {0};
    store *st = store_open("memory", NULL, &err);
    hub *h = new_hub(st, 1);
    probe p;
    pthread_t t;
    probe_start(&p, h, &t);
    double t0 = now_us();
    int results = 0;
    while (now_us() - t0 < seconds * 1e6) {
        json_t *spec = json_pack("{s:s}", "code", "x");
        uint64_t id = 0;
        json_decref(hub_task_submit(h, spec, &id, &err));
        json_decref(spec);
        ippc_blobs blobs;
        blobs_init(&blobs);
        size_t n = 1 << 17; /* 1 MiB of int64 */
        blobs_push(&blobs, calloc(n, 8), n * 8);
        answer(h, 0, id, value_nd_placeholder(ND_INT64, 1, &n, 0), &blobs);
        results++;
    }
    char what[96];
    snprintf(what, sizeof what, "results: %.0f results/s of 1 MiB, memory store",
             results / seconds);
    probe_report(&p, t, what);
    hub_free(h);
    store_close(st);
}

static void bench_deps(void)
{
    ippc_error err = {0};
    store *st = store_open("memory", NULL, &err);
    /* A task finished by an earlier controller, with a 64 KiB result. */
    hub *h = new_hub(st, 1);
    json_t *spec = json_pack("{s:s}", "code", "old");
    uint64_t old = 0;
    json_decref(hub_task_submit(h, spec, &old, &err));
    json_decref(spec);
    ippc_blobs blobs;
    blobs_init(&blobs);
    size_t n = 8192;
    blobs_push(&blobs, calloc(n, 8), n * 8);
    answer(h, 0, old, value_nd_placeholder(ND_INT64, 1, &n, 0), &blobs);
    hub_free(h);
    store_flush(st);

    h = new_hub(st, 2);
    spec = json_pack("{s:s, s:[i]}", "code", "block", "targets", 0);
    uint64_t blocker = 0;
    json_decref(hub_task_submit(h, spec, &blocker, &err));
    json_decref(spec);
    json_t *batch = json_array();
    for (int i = 0; i < 2000; i++)
        json_array_append_new(batch, json_pack("{s:s, s:[I, I]}", "code", "w", "after",
                                               (json_int_t)old, (json_int_t)blocker));
    uint64_t first = 0;
    json_decref(hub_task_submit(h, batch, &first, &err));
    json_decref(batch);
    double t0 = now_us();
    for (int i = 0; i < 200; i++) {
        spec = json_pack("{s:s, s:[i]}", "code", "quick", "targets", 1);
        uint64_t id = 0;
        json_decref(hub_task_submit(h, spec, &id, &err));
        json_decref(spec);
        answer(h, 1, id, NULL, NULL);
    }
    double per = (now_us() - t0) / 200;
    printf("  %-44s %.1f us per result (2,000 waiting)\n",
           "deps: dependency known only to the store", per);
    hub_free(h);
    store_close(st);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 2.0;
    if (seconds <= 0)
        seconds = 2.0;
    printf("bench_server_hub (%.1f s per scenario)\n", seconds);
    bench_answers(seconds);
    bench_results(seconds);
    bench_deps();
    return 0;
}
