/* test_server_tasks.c — server/tasks.c (load-balanced tasks) driven through the
 * hub's public API with fake engines: scheduling under the high-water mark,
 * targets, after/follow dependencies, retries, timeouts, abort, resubmit,
 * batches, map, queue status, and the task store (memory SQLite).
 * No sockets, no MPI.
 *
 * The fake engines (fake_engines.h, shared with test_server_hub.c): what the
 * hub sends goes through a real ws_outq (common/wsmsg.c, as ws.c does) and a
 * stand-in lws_write(), so what a fake engine "received" is exactly the frames
 * a real one would get.
 *
 * Tests named test_bug_* are regression tests of bugs found and fixed; the
 * comment above each says what went wrong.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "hub.h"
#include "sched.h"
#include "store.h"
#include "value.h"
#include "fake_engines.h"

#define KEY FAKE_ENGINE_KEY
#define MAX_LINKS 8
/* tasks.c keeps this many finished tasks in memory (KEEP_FINISHED). */
#define KEEP_FINISHED 50000

/* ------------------------------------------ what the fake engines received */

static const char *msg_type(const json_t *m)
{
    const char *t = json_string_value(json_object_get(m, "type"));
    return t ? t : "";
}

/* How many messages of type ("task", "interrupt") link l received. */
static size_t count_type(const fake_link *l, const char *type)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += strcmp(msg_type(l->msgs[i].msg), type) == 0;
    return n;
}

/* The last task message for task id that link l received, or NULL. */
static wire_msg *task_msg(fake_link *l, uint64_t id)
{
    for (size_t i = l->n; i-- > 0;) {
        json_t *m = l->msgs[i].msg;
        if (strcmp(msg_type(m), "task") == 0 &&
            json_integer_value(json_object_get(m, "task")) == (json_int_t)id)
            return &l->msgs[i];
    }
    return NULL;
}

/* The task id of the last task message link l received. */
static uint64_t last_task(const fake_link *l)
{
    for (size_t i = l->n; i-- > 0;) {
        json_t *m = l->msgs[i].msg;
        if (strcmp(msg_type(m), "task") == 0) {
            json_t *t = json_object_get(m, "task");
            assert_true(json_is_integer(t));
            return (uint64_t)json_integer_value(t);
        }
    }
    fail_msg("link received no task");
    return 0;
}

/* --------------------------------------------------------------- fixtures */

typedef struct fixture {
    hub *h;
    store *st;
    int n_engines;
    fake_link links[MAX_LINKS];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    hub_free(f->h);
    if (f->st)
        store_close(f->st);
    for (int i = 0; i < MAX_LINKS; i++)
        link_clear(&f->links[i]);
    free(f);
    return 0;
}

typedef struct hub_opts {
    int sched;
    unsigned hwm;
    int engines;    /* of job "jobA", ranks 0..engines-1 -> engine ids 0..engines-1 */
    int with_store; /* a store_open("memory") store */
    size_t max_requests_kept;
} hub_opts;

static void start(fixture *f, hub_opts o)
{
    if (o.with_store) {
        ippc_error err = {{0}, {0}};
        size_t lost = 99;
        f->st = store_open("memory", &lost, &err);
        if (!f->st)
            fail_msg("store_open(memory): %s", err.message);
        assert_int_equal(lost, 0);
    }
    hub_config cfg = {.engine_key = KEY,
                      .profile = "default",
                      .url = "http://127.0.0.1:1",
                      .ws_url = "ws://127.0.0.1:1/engine",
                      .max_requests_kept = o.max_requests_kept,
                      .sched = o.sched,
                      .hwm = o.hwm,
                      .store = f->st};
    f->h = hub_new(&cfg);
    assert_non_null(f->h);
    assert_true(o.engines <= MAX_LINKS);
    f->n_engines = o.engines;
    for (int i = 0; i < o.engines; i++)
        assert_int_equal(register_ok(f->h, &f->links[i], "jobA", i, o.engines), i);
}

/* ---------------------------------------------------------------- helpers */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!v)
        print_error("bad test JSON: %s: %s\n", text, jerr.text);
    assert_non_null(v);
    return v;
}

static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* printf into a JSON text; the caller frees. */
static char *fmt_json(const char *fmt, va_list ap)
{
    char *text = NULL;
    assert_true(vasprintf(&text, fmt, ap) >= 0);
    return text;
}

/* Submits a task spec (printf-style JSON); asserts success; returns its id. */
static uint64_t submit(fixture *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = fmt_json(fmt, ap);
    va_end(ap);
    json_t *spec = parse(text);
    ippc_error err = {{0}, {0}};
    uint64_t id = 0;
    json_t *out = hub_task_submit(f->h, spec, &id, &err);
    if (!out)
        print_error("submit %s: %s: %s\n", text, err.code, err.message);
    assert_non_null(out);
    assert_true(id > 0);
    if (json_is_object(spec))
        assert_int_equal(json_integer_value(json_object_get(out, "id")), (json_int_t)id);
    json_decref(out);
    json_decref(spec);
    free(text);
    return id;
}

/* Expects the submit to fail with code, leaving err's message in msg. */
static void submit_fails(fixture *f, const char *code, char *msg, size_t msg_len, const char *fmt,
                         ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = fmt_json(fmt, ap);
    va_end(ap);
    json_t *spec = parse(text);
    ippc_error err = {{0}, {0}};
    uint64_t id = 0;
    json_t *out = hub_task_submit(f->h, spec, &id, &err);
    if (out || strcmp(err.code, code) != 0) {
        char *o = out ? dump(out) : NULL;
        print_error("submit %s: got %s / %s (%s), want %s\n", text, o ? o : "NULL", err.code,
                    err.message, code);
        free(o);
    }
    assert_null(out);
    assert_string_equal(err.code, code);
    assert_true(err.message[0] != '\0');
    if (msg)
        snprintf(msg, msg_len, "%s", err.message);
    json_decref(spec);
    free(text);
}

/* The task as a client sees it (asserts found); *finished if asked. */
static json_t *task_json(fixture *f, uint64_t id, int *finished)
{
    int fin = -1;
    ippc_error err = {{0}, {0}};
    json_t *doc = hub_task_json(f->h, id, &fin, &err);
    if (!doc)
        print_error("task %llu: %s: %s\n", (unsigned long long)id, err.code, err.message);
    assert_non_null(doc);
    assert_true(fin == 0 || fin == 1);
    assert_int_equal(json_integer_value(json_object_get(doc, "id")), (json_int_t)id);
    if (finished)
        *finished = fin;
    return doc;
}

static void task_not_found(fixture *f, uint64_t id)
{
    int fin = -1;
    ippc_error err = {{0}, {0}};
    json_t *doc = hub_task_json(f->h, id, &fin, &err);
    if (doc) {
        char *d = dump(doc);
        print_error("task %llu still answers: %s\n", (unsigned long long)id, d);
        free(d);
    }
    assert_null(doc);
    assert_string_equal(err.code, ERR_NOT_FOUND);
}

static void expect_state(fixture *f, uint64_t id, const char *state)
{
    int fin = -1;
    json_t *doc = task_json(f, id, &fin);
    const char *got = json_string_value(json_object_get(doc, "state"));
    if (!got || strcmp(got, state) != 0) {
        char *d = dump(doc);
        print_error("task %llu: want state %s, got %s\n", (unsigned long long)id, state, d);
        free(d);
    }
    assert_non_null(got);
    assert_string_equal(got, state);
    int want_fin = strcmp(state, "pending") != 0 && strcmp(state, "running") != 0;
    assert_int_equal(fin, want_fin);
    json_decref(doc);
}

/* The task ended in state with error.ename; returns nothing, checks evalue
 * contains `evalue_has` when given. */
static void expect_error(fixture *f, uint64_t id, const char *state, const char *ename,
                         const char *evalue_has)
{
    expect_state(f, id, state);
    json_t *doc = task_json(f, id, NULL);
    json_t *e = json_object_get(doc, "error");
    const char *got = json_string_value(json_object_get(e, "ename"));
    const char *evalue = json_string_value(json_object_get(e, "evalue"));
    if (!got || strcmp(got, ename) != 0 ||
        (evalue_has && (!evalue || !strstr(evalue, evalue_has)))) {
        char *d = dump(doc);
        print_error("task %llu: want %s (%s), got %s\n", (unsigned long long)id, ename,
                    evalue_has ? evalue_has : "-", d);
        free(d);
    }
    assert_non_null(got);
    assert_string_equal(got, ename);
    if (evalue_has) {
        assert_non_null(evalue);
        assert_non_null(strstr(evalue, evalue_has));
    }
    assert_null(json_object_get(doc, "result"));
    json_decref(doc);
}

/* The engine id the task document names, -1 for null. */
static int engine_of(fixture *f, uint64_t id)
{
    json_t *doc = task_json(f, id, NULL);
    json_t *e = json_object_get(doc, "engine");
    int out = json_is_integer(e) ? (int)json_integer_value(e) : -1;
    assert_true(json_is_integer(e) || json_is_null(e));
    json_decref(doc);
    return out;
}

/* Which fake engines received a task message for id: a bit mask. */
static unsigned receivers(fixture *f, uint64_t id)
{
    unsigned mask = 0;
    for (int i = 0; i < MAX_LINKS; i++)
        if (task_msg(&f->links[i], id))
            mask |= 1u << i;
    return mask;
}

static size_t total_task_msgs(fixture *f)
{
    size_t n = 0;
    for (int i = 0; i < MAX_LINKS; i++)
        n += count_type(&f->links[i], "task");
    return n;
}

/* Engine engine_id answers task with status and (consumed, may be NULL)
 * extra fields. */
static void reply(fixture *f, int engine_id, uint64_t task, const char *status, json_t *extra)
{
    json_t *fields = json_pack("{s:s, s:s}", "status", status, "stdout", "");
    if (extra) {
        json_object_update(fields, extra);
        json_decref(extra);
    }
    result_from(f->h, engine_id, (json_int_t)task, fields, NULL);
}

/* An "ok" result whose value is the JSON text value_text. */
static void reply_ok(fixture *f, int engine_id, uint64_t task, const char *value_text)
{
    reply(f, engine_id, task, "ok", json_pack("{s:o}", "value", parse(value_text)));
}

static void reply_error(fixture *f, int engine_id, uint64_t task)
{
    reply(f, engine_id, task, "error",
          json_pack("{s:s, s:s, s:[s]}", "ename", "ValueError", "evalue", "boom", "traceback",
                    "boom"));
}

static void reply_aborted(fixture *f, int engine_id, uint64_t task)
{
    reply(f, engine_id, task, "aborted",
          json_pack("{s:s, s:s, s:[s]}", "ename", "Aborted", "evalue", "task interrupted",
                    "traceback", "task interrupted"));
}

static void expect_result(fixture *f, uint64_t id, const char *value_text)
{
    expect_state(f, id, "completed");
    json_t *doc = task_json(f, id, NULL);
    json_t *want = parse(value_text);
    json_t *got = json_object_get(doc, "result");
    if (!json_equal(got, want)) {
        char *d = dump(doc);
        print_error("task %llu: want result %s, got %s\n", (unsigned long long)id, value_text, d);
        free(d);
    }
    assert_true(json_equal(got, want));
    assert_null(json_object_get(doc, "error"));
    json_decref(want);
    json_decref(doc);
}

static json_int_t int_at(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) {
        char *d = dump(obj);
        print_error("no integer \"%s\" in %s\n", key, d);
        free(d);
    }
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

/* hub_queue()'s counts for engine id. */
static void expect_engine_queue(fixture *f, int id, json_int_t queued, json_int_t running,
                                json_int_t completed, const char *state)
{
    json_t *q = hub_queue(f->h);
    char key[16];
    snprintf(key, sizeof key, "%d", id);
    json_t *e = json_object_get(json_object_get(q, "engines"), key);
    if (!e || int_at(e, "queued") != queued || int_at(e, "running") != running ||
        int_at(e, "completed") != completed ||
        strcmp(json_string_value(json_object_get(e, "state")), state) != 0) {
        char *d = dump(q);
        print_error("engine %d: want queued %lld running %lld completed %lld %s; queue %s\n", id,
                    (long long)queued, (long long)running, (long long)completed, state, d);
        free(d);
    }
    assert_non_null(e);
    assert_int_equal(int_at(e, "queued"), queued);
    assert_int_equal(int_at(e, "running"), running);
    assert_int_equal(int_at(e, "completed"), completed);
    assert_string_equal(json_string_value(json_object_get(e, "state")), state);
    json_decref(q);
}

static void expect_unassigned(fixture *f, json_int_t unassigned, json_int_t waiting)
{
    json_t *q = hub_queue(f->h);
    assert_int_equal(int_at(q, "unassigned"), unassigned);
    assert_int_equal(int_at(q, "waiting"), waiting);
    json_decref(q);
}

/* The request's answer (map); *done is checked against want_done. */
static json_t *request_answer(fixture *f, uint64_t id, int want_done)
{
    int done = -1;
    ippc_error err = {{0}, {0}};
    json_t *a = hub_request_json(f->h, id, &done, &err);
    if (!a)
        print_error("request %llu: %s: %s\n", (unsigned long long)id, err.code, err.message);
    assert_non_null(a);
    assert_int_equal(done, want_done);
    assert_int_equal(int_at(a, "request"), (json_int_t)id);
    return a;
}

static void expect_json(const json_t *got, const char *want_text)
{
    json_t *want = parse(want_text);
    if (!json_equal(got, want)) {
        char *g = dump(got);
        print_error("got  %s\nwant %s\n", g, want_text);
        free(g);
    }
    assert_true(json_equal(got, want));
    json_decref(want);
}

static uint64_t map_submit(fixture *f, const char *body_text)
{
    json_t *body = parse(body_text);
    ippc_error err = {{0}, {0}};
    uint64_t id = hub_map_submit(f->h, body, &err);
    if (!id)
        print_error("map %s: %s: %s\n", body_text, err.code, err.message);
    assert_true(id > 0);
    json_decref(body);
    return id;
}

static void map_fails(fixture *f, const char *body_text, const char *code)
{
    json_t *body = parse(body_text);
    ippc_error err = {{0}, {0}};
    uint64_t id = hub_map_submit(f->h, body, &err);
    if (id || strcmp(err.code, code) != 0)
        print_error("map %s: id %llu, %s (%s), want %s\n", body_text, (unsigned long long)id,
                    err.code, err.message, code);
    assert_int_equal(id, 0);
    assert_string_equal(err.code, code);
    json_decref(body);
}

/* ----------------------------------------------------- scheduling, hwm */

/* leastload, hwm 1: four tasks go one to each engine (ties fall to the lower
 * id); the fifth waits, unsent, until an engine finishes, and then goes there. */
static void test_leastload_hwm1_spreads_then_holds(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.sched = SCHED_LEASTLOAD, .hwm = 1, .engines = 4});
    uint64_t t[5];
    for (int i = 0; i < 5; i++)
        t[i] = submit(f, "{\"code\": \"return %d\"}", i);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(count_type(&f->links[i], "task"), 1);
        assert_int_equal(receivers(f, t[i]), 1u << i);
        assert_int_equal(engine_of(f, t[i]), i);
        expect_state(f, t[i], "running");
        wire_msg *m = task_msg(&f->links[i], t[i]);
        assert_string_equal(json_string_value(json_object_get(m->msg, "op")), "execute");
        char code[32];
        snprintf(code, sizeof code, "return %d", i);
        assert_string_equal(json_string_value(json_object_get(m->msg, "code")), code);
    }
    expect_state(f, t[4], "pending");
    assert_int_equal(engine_of(f, t[4]), -1);
    assert_int_equal(receivers(f, t[4]), 0);
    expect_unassigned(f, 1, 0);

    reply_ok(f, 2, t[2], "2");
    expect_result(f, t[2], "2");
    assert_int_equal(receivers(f, t[4]), 1u << 2);
    expect_state(f, t[4], "running");
    assert_int_equal(engine_of(f, t[4]), 2);
    expect_unassigned(f, 0, 0);
    assert_int_equal(total_task_msgs(f), 5);

    /* A stray result for an unknown task or from the wrong engine changes nothing. */
    reply_ok(f, 1, t[0], "9");
    reply_ok(f, 1, 999999, "9");
    expect_state(f, t[0], "running");
    reply_ok(f, 0, t[0], "[1, 2]");
    expect_result(f, t[0], "[1, 2]");
    json_t *doc = task_json(f, t[0], NULL);
    assert_string_equal(json_string_value(json_object_get(doc, "stdout")), "");
    assert_true(json_is_string(json_object_get(doc, "submitted")));
    assert_true(json_is_string(json_object_get(doc, "started")));
    assert_true(json_is_string(json_object_get(doc, "completed")));
    json_decref(doc);
}

/* hwm 2: each engine holds two tasks before anything waits. */
static void test_hwm2_lets_an_engine_hold_two(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.sched = SCHED_LEASTLOAD, .hwm = 2, .engines = 2});
    uint64_t t[5];
    for (int i = 0; i < 5; i++)
        t[i] = submit(f, "{\"code\": \"x = %d\"}", i);
    assert_int_equal(count_type(&f->links[0], "task"), 2);
    assert_int_equal(count_type(&f->links[1], "task"), 2);
    /* leastload alternates: both are empty, then both hold one. */
    assert_int_equal(engine_of(f, t[0]), 0);
    assert_int_equal(engine_of(f, t[1]), 1);
    assert_int_equal(engine_of(f, t[2]), 0);
    assert_int_equal(engine_of(f, t[3]), 1);
    expect_state(f, t[4], "pending");
    expect_engine_queue(f, 0, 0, 2, 0, "busy");
    expect_engine_queue(f, 1, 0, 2, 0, "busy");

    reply_ok(f, 1, t[3], "null");
    assert_int_equal(engine_of(f, t[4]), 1);
    expect_engine_queue(f, 1, 0, 2, 1, "busy");
    expect_unassigned(f, 0, 0);
}

/* With the given scheduler, hwm 1 and engines 1 and 3 dead, 300 rounds of
 * three tasks: every task goes to a live engine with room, one per engine,
 * and the third waits for the first result. */
static void only_live_below_hwm(void **state, int sched)
{
    fixture *f = *state;
    start(f, (hub_opts){.sched = sched, .hwm = 1, .engines = 4});
    hub_engine_closed(f->h, 1, "test");
    hub_engine_closed(f->h, 3, "test");
    int used[4] = {0};
    for (int round = 0; round < 300; round++) {
        uint64_t a = submit(f, "{\"code\": \"a\"}");
        uint64_t b = submit(f, "{\"code\": \"b\"}");
        uint64_t c = submit(f, "{\"code\": \"c\"}");
        unsigned ra = receivers(f, a), rb = receivers(f, b);
        assert_true(ra == 1u || ra == 4u);
        assert_true(rb == 1u || rb == 4u);
        assert_true(ra != rb);
        assert_int_equal(receivers(f, c), 0);
        expect_state(f, c, "pending");
        int ea = engine_of(f, a);
        used[ea]++;
        reply_ok(f, ea, a, "1");
        int ec = engine_of(f, c);
        assert_int_equal(ec, ea); /* the only engine with room */
        reply_ok(f, engine_of(f, b), b, "1");
        reply_ok(f, ec, c, "1");
        expect_unassigned(f, 0, 0);
    }
    assert_int_equal(count_type(&f->links[1], "task"), 0);
    assert_int_equal(count_type(&f->links[3], "task"), 0);
    assert_int_equal(used[0] + used[2], 300);
    if (sched == SCHED_RANDOM || sched == SCHED_TWOBIN || sched == SCHED_WEIGHTED) {
        /* random choices reach both live engines */
        assert_true(used[0] > 30);
        assert_true(used[2] > 30);
    }
}

static void test_lru_only_live_below_hwm(void **state)
{
    only_live_below_hwm(state, SCHED_LRU);
}

static void test_random_only_live_below_hwm(void **state)
{
    only_live_below_hwm(state, SCHED_RANDOM);
}

static void test_twobin_only_live_below_hwm(void **state)
{
    only_live_below_hwm(state, SCHED_TWOBIN);
}

static void test_weighted_only_live_below_hwm(void **state)
{
    only_live_below_hwm(state, SCHED_WEIGHTED);
}

/* lru: with every engine free again, the next task goes to the engine whose
 * last assignment is oldest, not to the lowest id. */
static void test_lru_prefers_oldest_assignment(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.sched = SCHED_LRU, .hwm = 1, .engines = 3});
    uint64_t t0 = submit(f, "{\"code\": \"a\"}");
    uint64_t t1 = submit(f, "{\"code\": \"b\"}");
    uint64_t t2 = submit(f, "{\"code\": \"c\"}");
    assert_int_equal(engine_of(f, t0), 0);
    assert_int_equal(engine_of(f, t1), 1);
    assert_int_equal(engine_of(f, t2), 2);
    reply_ok(f, 1, t1, "1");
    reply_ok(f, 0, t0, "1");
    reply_ok(f, 2, t2, "1");
    /* Used order: 0, 1, 2 -> next goes to 0, then 1 even if 0 is free again. */
    uint64_t t3 = submit(f, "{\"code\": \"d\"}");
    assert_int_equal(engine_of(f, t3), 0);
    reply_ok(f, 0, t3, "1");
    uint64_t t4 = submit(f, "{\"code\": \"e\"}");
    assert_int_equal(engine_of(f, t4), 1);
}

/* ---------------------------------------------------------------- targets */

/* A spec string restricts the task to the engines it names; a task whose
 * allowed engines are full does not hold back tasks that may go elsewhere. */
static void test_targets_spec_string(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 4});
    uint64_t a = submit(f, "{\"code\": \"a\", \"targets\": \"1::2\"}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"targets\": \"1::2\"}");
    uint64_t c = submit(f, "{\"code\": \"c\", \"targets\": \"1::2\"}");
    assert_int_equal(receivers(f, a), 1u << 1);
    assert_int_equal(receivers(f, b), 1u << 3);
    expect_state(f, c, "pending");
    uint64_t d = submit(f, "{\"code\": \"d\"}");
    assert_int_equal(receivers(f, d), 1u << 0);
    uint64_t e = submit(f, "{\"code\": \"e\", \"targets\": \"-2\"}"); /* engine 2 */
    assert_int_equal(receivers(f, e), 1u << 2);
    /* Engine 0 frees up: c still may not go there. */
    reply_ok(f, 0, d, "0");
    expect_state(f, c, "pending");
    assert_int_equal(count_type(&f->links[0], "task"), 1);
    reply_ok(f, 3, b, "0");
    assert_int_equal(receivers(f, c), 1u << 3);
}

/* A list of ids restricts the task to those engines. */
static void test_targets_id_list(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 4});
    uint64_t a = submit(f, "{\"code\": \"a\", \"targets\": [2]}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"targets\": [3, 2]}");
    uint64_t c = submit(f, "{\"code\": \"c\", \"targets\": [2, 3]}");
    assert_int_equal(receivers(f, a), 1u << 2);
    assert_int_equal(receivers(f, b), 1u << 3);
    expect_state(f, c, "pending");
    json_t *doc = task_json(f, c, NULL);
    assert_null(json_object_get(doc, "error"));
    json_decref(doc);
    reply_ok(f, 2, a, "0");
    assert_int_equal(receivers(f, c), 1u << 2);
    assert_int_equal(count_type(&f->links[0], "task") + count_type(&f->links[1], "task"), 0);
}

/* Targets naming only dead (or never seen) engines: the task fails with
 * ImpossibleDependency, never waits; one that waits for a full target fails
 * as soon as that target dies.  A spec string is resolved against the live
 * engines at submit, so one naming no live engine is rejected outright. */
static void test_targets_dead_engines(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 4});
    hub_engine_closed(f->h, 2, "test");
    uint64_t a = submit(f, "{\"code\": \"a\", \"targets\": [2]}");
    expect_error(f, a, "failed", "ImpossibleDependency", "no live engine");
    uint64_t b = submit(f, "{\"code\": \"b\", \"targets\": [7]}");
    expect_error(f, b, "failed", "ImpossibleDependency", NULL);
    uint64_t c = submit(f, "{\"code\": \"c\", \"targets\": [2, 3]}");
    assert_int_equal(receivers(f, c), 1u << 3);
    assert_int_equal(count_type(&f->links[2], "task"), 0);

    /* d waits for engine 3, which then dies. */
    uint64_t d = submit(f, "{\"code\": \"d\", \"targets\": [3]}");
    expect_state(f, d, "pending");
    hub_engine_closed(f->h, 3, "test");
    expect_error(f, c, "lost", "EngineLost", NULL);
    expect_error(f, d, "failed", "ImpossibleDependency", NULL);
    assert_int_equal(receivers(f, d), 0);
    expect_unassigned(f, 0, 0);

    /* Spec strings: no live engine named -> no_engines, nothing created. */
    uint64_t before = submit(f, "{\"code\": \"x\"}");
    char msg[512];
    submit_fails(f, ERR_NO_ENGINES, msg, sizeof msg, "{\"code\": \"y\", \"targets\": \"2\"}");
    submit_fails(f, ERR_NO_ENGINES, msg, sizeof msg, "{\"code\": \"y\", \"targets\": \"2,3\"}");
    submit_fails(f, ERR_BAD_TARGETS, msg, sizeof msg, "{\"code\": \"y\", \"targets\": \"::0\"}");
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "{\"code\": \"y\", \"targets\": []}");
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "{\"code\": \"y\", \"targets\": [-1]}");
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "{\"code\": \"y\", \"targets\": [\"0\"]}");
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "{\"code\": \"y\", \"targets\": 0}");
    uint64_t after = submit(f, "{\"code\": \"z\"}");
    assert_int_equal(after, before + 1);
}

/* ----------------------------------------------------------- dependencies */

/* after: B waits (unsent, although engines are free) until A completes. */
static void test_after_waits_for_completion(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2});
    uint64_t a = submit(f, "{\"code\": \"a\"}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"after\": [%llu]}", (unsigned long long)a);
    expect_state(f, b, "pending");
    assert_int_equal(receivers(f, b), 0);
    expect_unassigned(f, 1, 1);
    json_t *doc = task_json(f, b, NULL);
    char want[64];
    snprintf(want, sizeof want, "[%llu]", (unsigned long long)a);
    expect_json(json_object_get(doc, "after"), want);
    expect_json(json_object_get(doc, "follow"), "[]");
    json_decref(doc);
    /* A single id is accepted as well as a list. */
    uint64_t c = submit(f, "{\"code\": \"c\", \"after\": %llu}", (unsigned long long)a);
    expect_state(f, c, "pending");

    reply_ok(f, engine_of(f, a), a, "1");
    expect_state(f, b, "running");
    expect_state(f, c, "running");
    assert_int_equal(total_task_msgs(f), 3);
    expect_unassigned(f, 0, 0);
    /* after a task that is already complete: ready at once. */
    reply_ok(f, engine_of(f, b), b, "1");
    uint64_t d = submit(f, "{\"code\": \"d\", \"after\": [%llu, %llu]}", (unsigned long long)a,
                        (unsigned long long)b);
    expect_state(f, d, "running");
}

/* A failed dependency fails its dependents with DependencyError, unsent. */
static void test_after_failed_dependency(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2});
    uint64_t a = submit(f, "{\"code\": \"a\"}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"after\": [%llu]}", (unsigned long long)a);
    uint64_t c = submit(f, "{\"code\": \"c\", \"after\": [%llu], \"success_only\": true}",
                        (unsigned long long)a);
    reply_error(f, engine_of(f, a), a);
    expect_error(f, a, "failed", "ValueError", "boom");
    char why[64];
    snprintf(why, sizeof why, "dependency %llu ended failed", (unsigned long long)a);
    expect_error(f, b, "failed", "DependencyError", why);
    expect_error(f, c, "failed", "DependencyError", why);
    assert_int_equal(total_task_msgs(f), 1);

    /* An aborted dependency counts as unsuccessful too. */
    uint64_t busy0 = submit(f, "{\"code\": \"x\"}");
    uint64_t busy1 = submit(f, "{\"code\": \"y\"}");
    expect_state(f, busy0, "running");
    expect_state(f, busy1, "running");
    uint64_t p = submit(f, "{\"code\": \"p\"}"); /* pending: both engines are busy */
    uint64_t q = submit(f, "{\"code\": \"q\", \"after\": [%llu]}", (unsigned long long)p);
    ippc_error err = {{0}, {0}};
    json_t *r = hub_task_abort(f->h, p, 0, &err);
    assert_non_null(r);
    json_decref(r);
    expect_error(f, q, "failed", "DependencyError", "ended aborted");
    assert_int_equal(receivers(f, p) | receivers(f, q), 0);
}

/* success_only false: B runs after A whatever A's outcome. */
static void test_after_success_only_false(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2});
    uint64_t a = submit(f, "{\"code\": \"a\"}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"after\": [%llu], \"success_only\": false}",
                        (unsigned long long)a);
    expect_state(f, b, "pending");
    reply_error(f, engine_of(f, a), a);
    expect_state(f, b, "running");
    assert_int_equal(total_task_msgs(f), 2);
}

/* follow: B goes to A's engine only, even when others are idle; and a task
 * held for that engine does not block others. */
static void test_follow_same_engine(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 4});
    uint64_t a = submit(f, "{\"code\": \"a\", \"targets\": [2]}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"follow\": [%llu]}", (unsigned long long)a);
    expect_state(f, b, "pending");
    assert_int_equal(receivers(f, b), 0);
    reply_ok(f, 2, a, "1");
    assert_int_equal(receivers(f, b), 1u << 2);

    /* c follows a too but engine 2 is full; d may go anywhere. */
    uint64_t c = submit(f, "{\"code\": \"c\", \"follow\": %llu}", (unsigned long long)a);
    uint64_t d = submit(f, "{\"code\": \"d\"}");
    expect_state(f, c, "pending");
    assert_int_equal(receivers(f, d), 1u << 0);
    reply_ok(f, 0, d, "1");
    expect_state(f, c, "pending"); /* engine 0 is free, but not c's */
    reply_ok(f, 2, b, "1");
    assert_int_equal(receivers(f, c), 1u << 2);
    assert_int_equal(count_type(&f->links[2], "task"), 3);
    json_t *doc = task_json(f, c, NULL);
    char want[64];
    snprintf(want, sizeof want, "[%llu]", (unsigned long long)a);
    expect_json(json_object_get(doc, "follow"), want);
    json_decref(doc);
}

/* follow of a task whose engine died: ImpossibleDependency, whether the
 * follower is submitted afterwards or was waiting for room on that engine. */
static void test_follow_dead_engine_is_impossible(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 3});
    uint64_t a = submit(f, "{\"code\": \"a\", \"targets\": [0]}");
    reply_ok(f, 0, a, "1");
    uint64_t busy = submit(f, "{\"code\": \"busy\", \"targets\": [0]}");
    uint64_t waiting = submit(f, "{\"code\": \"w\", \"follow\": [%llu]}", (unsigned long long)a);
    expect_state(f, waiting, "pending");
    hub_engine_closed(f->h, 0, "test");
    expect_error(f, busy, "lost", "EngineLost", NULL);
    expect_error(f, waiting, "failed", "ImpossibleDependency", "not alive");
    uint64_t late = submit(f, "{\"code\": \"l\", \"follow\": [%llu]}", (unsigned long long)a);
    expect_error(f, late, "failed", "ImpossibleDependency", "not alive");
    assert_int_equal(count_type(&f->links[1], "task") + count_type(&f->links[2], "task"), 0);
}

/* An unknown id in after or follow is reported at once. */
static void test_unknown_dependency_is_impossible(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    uint64_t a = submit(f, "{\"code\": \"a\", \"after\": [987654]}");
    expect_error(f, a, "failed", "ImpossibleDependency", "unknown task 987654");
    uint64_t b = submit(f, "{\"code\": \"b\", \"follow\": [987655]}");
    expect_error(f, b, "failed", "ImpossibleDependency", "unknown task 987655");
    /* one known and finished, one unknown */
    uint64_t c = submit(f, "{\"code\": \"c\"}");
    reply_ok(f, 0, c, "1");
    uint64_t d = submit(f, "{\"code\": \"d\", \"after\": [%llu, 987656]}", (unsigned long long)c);
    expect_error(f, d, "failed", "ImpossibleDependency", "987656");
    assert_int_equal(total_task_msgs(f), 1);
    char msg[512];
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "{\"code\": \"x\", \"after\": [0]}");
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "{\"code\": \"x\", \"after\": [-3]}");
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "{\"code\": \"x\", \"after\": \"1\"}");
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "{\"code\": \"x\", \"follow\": [1.5]}");
}

/* A -> B -> C; A fails: B and C fail with DependencyError, never sent. */
static void test_chain_failure_propagates(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2});
    uint64_t a = submit(f, "{\"code\": \"a\"}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"after\": [%llu]}", (unsigned long long)a);
    uint64_t c = submit(f, "{\"code\": \"c\", \"after\": [%llu]}", (unsigned long long)b);
    uint64_t d = submit(f, "{\"code\": \"d\", \"follow\": [%llu]}", (unsigned long long)c);
    expect_unassigned(f, 3, 3);
    reply_error(f, engine_of(f, a), a);
    expect_error(f, b, "failed", "DependencyError", NULL);
    expect_error(f, c, "failed", "DependencyError", NULL);
    expect_error(f, d, "failed", "DependencyError", NULL);
    expect_unassigned(f, 0, 0);
    assert_int_equal(total_task_msgs(f), 1);

    /* The same chain with success: each runs in turn. */
    uint64_t x = submit(f, "{\"code\": \"x\"}");
    uint64_t y = submit(f, "{\"code\": \"y\", \"after\": [%llu]}", (unsigned long long)x);
    uint64_t z = submit(f, "{\"code\": \"z\", \"after\": [%llu]}", (unsigned long long)y);
    reply_ok(f, engine_of(f, x), x, "1");
    expect_state(f, y, "running");
    expect_state(f, z, "pending");
    reply_ok(f, engine_of(f, y), y, "2");
    reply_ok(f, engine_of(f, z), z, "3");
    expect_result(f, z, "3");
}

/* ------------------------------------------------------ retries, timeouts */

/* retries 1: the engine dies with the task running -> it runs elsewhere
 * (same task id); a second death loses it. */
static void test_retry_goes_to_another_engine(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 3});
    uint64_t a = submit(f, "{\"code\": \"a\", \"retries\": 1}");
    assert_int_equal(engine_of(f, a), 0);
    hub_engine_closed(f->h, 0, "killed");
    expect_state(f, a, "running");
    int second = engine_of(f, a);
    assert_true(second == 1 || second == 2);
    assert_int_equal(receivers(f, a), 1u | (1u << second));
    json_t *doc = task_json(f, a, NULL);
    assert_int_equal(int_at(doc, "retries"), 0);
    json_decref(doc);
    expect_engine_queue(f, 0, 0, 0, 0, "dead");

    hub_engine_closed(f->h, second, "killed again");
    expect_error(f, a, "lost", "EngineLost", NULL);
    int third = second == 1 ? 2 : 1;
    assert_int_equal(count_type(&f->links[third], "task"), 0);

    /* A retried task completes normally where it lands. */
    uint64_t b = submit(f, "{\"code\": \"b\", \"retries\": 3}");
    assert_int_equal(engine_of(f, b), third);
    uint64_t c = submit(f, "{\"code\": \"c\", \"retries\": 3}"); /* pending */
    expect_state(f, c, "pending");
    reply_ok(f, third, b, "7");
    expect_result(f, b, "7");
    assert_int_equal(engine_of(f, c), third);
}

/* retries 0: the engine's death loses the task (EngineLost); nothing is
 * resent, and a task waiting for room is unaffected. */
static void test_no_retry_loses_task(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2});
    uint64_t a = submit(f, "{\"code\": \"a\"}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"retries\": 0}");
    uint64_t c = submit(f, "{\"code\": \"c\"}");
    hub_engine_closed(f->h, 0, "killed");
    expect_error(f, a, "lost", "EngineLost", "engine 0");
    assert_int_equal(receivers(f, a), 1u);
    expect_state(f, b, "running");
    expect_state(f, c, "pending");
    hub_engine_closed(f->h, 1, "killed");
    expect_error(f, b, "lost", "EngineLost", "engine 1");
    expect_state(f, c, "pending"); /* no engines: waits for one */
    json_t *q = hub_queue(f->h);
    assert_int_equal(int_at(q, "unassigned"), 1);
    json_decref(q);
}

/* A running task past its deadline: the engine gets an interrupt; the
 * "aborted" result that follows makes the task failed with TimeoutError. */
static void test_timeout_running(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    int64_t submitted_ms = hub_now_ms();
    uint64_t a = submit(f, "{\"code\": \"while true do end\", \"timeout\": 0.05}");
    expect_state(f, a, "running");
    json_t *doc = task_json(f, a, NULL);
    assert_true(json_is_number(json_object_get(doc, "timeout")));
    json_decref(doc);
    hub_tick(f->h);
    /* No interrupt before the deadline (unless this machine stalled past it). */
    if (hub_now_ms() - submitted_ms < 40)
        assert_int_equal(count_type(&f->links[0], "interrupt"), 0);
    sleep_ms(80);
    hub_tick(f->h);
    assert_int_equal(count_type(&f->links[0], "interrupt"), 1);
    assert_string_equal(msg_type(f->links[0].msgs[f->links[0].n - 1].msg), "interrupt");
    expect_state(f, a, "running");
    hub_tick(f->h); /* only one interrupt per timeout */
    assert_int_equal(count_type(&f->links[0], "interrupt"), 1);
    reply_aborted(f, 0, a);
    expect_error(f, a, "failed", "TimeoutError", "0.05");
    expect_engine_queue(f, 0, 0, 0, 1, "idle");
}

/* A pending task past its deadline fails with TimeoutError, never sent. */
static void test_timeout_pending(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    uint64_t a = submit(f, "{\"code\": \"a\"}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"timeout\": 0.05}");
    uint64_t c =
        submit(f, "{\"code\": \"c\", \"after\": [%llu], \"timeout\": 0.05}", (unsigned long long)a);
    expect_state(f, b, "pending");
    sleep_ms(80);
    hub_tick(f->h);
    expect_error(f, b, "failed", "TimeoutError", "did not start");
    expect_error(f, c, "failed", "TimeoutError", "did not start");
    assert_int_equal(count_type(&f->links[0], "interrupt"), 0);
    reply_ok(f, 0, a, "1");
    assert_int_equal(total_task_msgs(f), 1);
    assert_int_equal(receivers(f, b), 0);
    expect_unassigned(f, 0, 0);
}

/* ---------------------------------------------------------- abort, resubmit */

static json_t *abort_task(fixture *f, uint64_t id, int force, const char *want_code)
{
    ippc_error err = {{0}, {0}};
    json_t *out = hub_task_abort(f->h, id, force, &err);
    if (want_code) {
        if (out || strcmp(err.code, want_code) != 0)
            print_error("abort %llu: %s (%s), want %s\n", (unsigned long long)id, err.code,
                        err.message, want_code);
        assert_null(out);
        assert_string_equal(err.code, want_code);
        return NULL;
    }
    if (!out)
        print_error("abort %llu: %s: %s\n", (unsigned long long)id, err.code, err.message);
    assert_non_null(out);
    return out;
}

static void test_abort(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    uint64_t run = submit(f, "{\"code\": \"r\"}");
    uint64_t pend = submit(f, "{\"code\": \"p\"}");
    uint64_t dep = submit(f, "{\"code\": \"d\", \"after\": [%llu]}", (unsigned long long)run);

    /* pending -> aborted, never sent */
    json_t *out = abort_task(f, pend, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(out, "state")), "aborted");
    json_decref(out);
    expect_error(f, pend, "aborted", "TaskAborted", NULL);
    /* waiting (dependencies) -> aborted too */
    out = abort_task(f, dep, 0, NULL);
    json_decref(out);
    expect_state(f, dep, "aborted");

    /* running without force -> conflict, nothing sent */
    abort_task(f, run, 0, ERR_CONFLICT);
    assert_int_equal(count_type(&f->links[0], "interrupt"), 0);
    expect_state(f, run, "running");
    /* with force -> interrupt; the engine's "aborted" result ends it aborted */
    out = abort_task(f, run, 1, NULL);
    assert_string_equal(json_string_value(json_object_get(out, "state")), "running");
    json_decref(out);
    assert_int_equal(count_type(&f->links[0], "interrupt"), 1);
    reply_aborted(f, 0, run);
    expect_error(f, run, "aborted", "Aborted", NULL);

    /* finished -> conflict; unknown -> not_found */
    abort_task(f, run, 1, ERR_CONFLICT);
    abort_task(f, pend, 0, ERR_CONFLICT);
    abort_task(f, 424242, 1, ERR_NOT_FOUND);
    assert_int_equal(total_task_msgs(f), 1);
    assert_int_equal(receivers(f, pend) | receivers(f, dep), 0);
}

/* A running task aborted with force whose engine dies before answering is
 * lost, not retried elsewhere, even with retries left. */
static void test_forced_abort_then_engine_death(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2});
    uint64_t a = submit(f, "{\"code\": \"a\", \"retries\": 2}");
    assert_int_equal(engine_of(f, a), 0);
    json_t *out = abort_task(f, a, 1, NULL);
    json_decref(out);
    hub_engine_closed(f->h, 0, "killed");
    expect_error(f, a, "lost", "EngineLost", NULL);
    assert_int_equal(count_type(&f->links[1], "task"), 0);
}

/* resubmit: a new id, the same spec, run again. */
static void test_resubmit(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    uint64_t a = submit(f, "{\"function\": \"f\", \"args\": [1, \"two\"], \"kwargs\": {\"k\": 3}, "
                           "\"tags\": [\"t1\"], \"retries\": 2}");
    wire_msg *first = task_msg(&f->links[0], a);
    assert_non_null(first);
    assert_string_equal(json_string_value(json_object_get(first->msg, "op")), "apply");
    assert_string_equal(json_string_value(json_object_get(first->msg, "function")), "f");
    expect_json(json_object_get(first->msg, "args"), "[1, \"two\"]");
    expect_json(json_object_get(first->msg, "kwargs"), "{\"k\": 3}");
    reply_error(f, 0, a);

    ippc_error err = {{0}, {0}};
    json_t *out = hub_task_resubmit(f->h, a, &err);
    assert_non_null(out);
    uint64_t b = (uint64_t)int_at(out, "id");
    json_decref(out);
    assert_true(b > a);
    wire_msg *second = task_msg(&f->links[0], b);
    assert_non_null(second);
    json_t *m1 = json_deep_copy(first->msg), *m2 = json_deep_copy(second->msg);
    json_object_del(m1, "task");
    json_object_del(m2, "task");
    assert_true(json_equal(m1, m2));
    json_decref(m1);
    json_decref(m2);
    json_t *da = task_json(f, a, NULL), *db = task_json(f, b, NULL);
    assert_true(json_equal(json_object_get(da, "tags"), json_object_get(db, "tags")));
    assert_true(json_equal(json_object_get(da, "function"), json_object_get(db, "function")));
    assert_int_equal(int_at(db, "retries"), 2);
    json_decref(da);
    json_decref(db);
    expect_state(f, a, "failed"); /* the original is untouched */
    reply_ok(f, 0, b, "\"fine\"");
    expect_result(f, b, "\"fine\"");

    out = hub_task_resubmit(f->h, 777777, &err);
    assert_null(out);
    assert_string_equal(err.code, ERR_NOT_FOUND);
}

/* ------------------------------------------------------------------ batches */

static void test_batch_of_1000(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 4});
    json_t *specs = json_array();
    for (int i = 0; i < 1000; i++)
        json_array_append_new(specs, json_pack("{s:s, s:[i]}", "function", "f", "args", i));
    ippc_error err = {{0}, {0}};
    uint64_t first = 0;
    json_t *out = hub_task_submit(f->h, specs, &first, &err);
    assert_non_null(out);
    json_t *ids = json_object_get(out, "ids");
    assert_int_equal(json_array_size(ids), 1000);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(json_integer_value(json_array_get(ids, i)), (json_int_t)(first + i));
    json_decref(out);
    json_decref(specs);
    assert_int_equal(total_task_msgs(f), 4);
    expect_unassigned(f, 996, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(engine_of(f, first + (uint64_t)i), i);
    expect_state(f, first + 999, "pending");

    /* Drain: each result lets the next pending task in, in FIFO order. */
    for (uint64_t k = 0; k < 1000; k++) {
        uint64_t id = first + k;
        int e = engine_of(f, id);
        assert_true(e >= 0);
        reply_ok(f, e, id, "0");
    }
    assert_int_equal(total_task_msgs(f), 1000);
    expect_unassigned(f, 0, 0);
    for (int i = 0; i < 4; i++)
        expect_engine_queue(f, i, 0, 0, 250, "idle");
}

/* A bad item rejects the whole batch: no task is created or sent. */
static void test_batch_bad_item_rejects_all(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2});
    uint64_t before = submit(f, "{\"code\": \"x\"}");
    char msg[512];
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg,
                 "[{\"code\": \"a\"}, {\"code\": \"b\"}, {\"code\": 3}]");
    assert_non_null(strstr(msg, "task 2"));
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg,
                 "[{\"code\": \"a\"}, {\"code\": \"b\", \"colour\": 1}]");
    assert_non_null(strstr(msg, "task 1"));
    submit_fails(f, ERR_NO_ENGINES, msg, sizeof msg,
                 "[{\"code\": \"a\"}, {\"code\": \"b\", \"targets\": \"5\"}]");
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "[]");
    submit_fails(f, ERR_BAD_REQUEST, msg, sizeof msg, "[{\"code\": \"a\"}, 7]");
    assert_int_equal(total_task_msgs(f), 1);
    expect_unassigned(f, 0, 0);
    uint64_t after = submit(f, "{\"code\": \"y\"}");
    assert_int_equal(after, before + 1);
    task_not_found(f, before + 2);

    /* Each malformed spec alone. */
    const char *bad[] = {
        "{}",
        "{\"code\": \"a\", \"function\": \"f\"}",
        "{\"function\": \"f\", \"args\": {}}",
        "{\"function\": \"f\", \"kwargs\": []}",
        "{\"code\": \"a\", \"retries\": -1}",
        "{\"code\": \"a\", \"retries\": 101}",
        "{\"code\": \"a\", \"retries\": 1.5}",
        "{\"code\": \"a\", \"timeout\": 0}",
        "{\"code\": \"a\", \"timeout\": -1}",
        "{\"code\": \"a\", \"timeout\": \"5\"}",
        "{\"code\": \"a\", \"tags\": \"t\"}",
        "{\"code\": \"a\", \"tags\": [1]}",
        "{\"code\": \"a\", \"success_only\": 1}",
        "\"code\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        submit_fails(f, ERR_BAD_REQUEST, NULL, 0, "%s", bad[i]);
    submit_fails(f, ERR_INVALID, NULL, 0, "{\"function\": \"no such name!\"}");
    uint64_t z = submit(f, "{\"code\": \"z\"}");
    assert_int_equal(z, after + 1);
    reply_ok(f, 0, before, "1");
    reply_ok(f, 1, after, "1");
    assert_int_equal(engine_of(f, z), 0);
    /* An empty argument list and no kwargs are fine. */
    uint64_t g = submit(f, "{\"function\": \"g\", \"args\": [], \"timeout\": null}");
    wire_msg *m = task_msg(&f->links[1], g);
    assert_non_null(m);
    expect_json(json_object_get(m->msg, "args"), "[]");
    expect_json(json_object_get(m->msg, "kwargs"), "{}");
}

/* -------------------------------------------------------------------- map */

/* Submits the map {"function": "f", "sequences": [["s0".."s9"]], "chunksize": 3}
 * (plus extra_fields) and checks the 4 chunk tasks the engines received. */
static uint64_t map_10_by_3(fixture *f, const char *extra_fields, uint64_t chunk_ids[4])
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"function\": \"f\", \"sequences\": [[\"s0\", \"s1\", \"s2\", \"s3\", \"s4\", "
             "\"s5\", \"s6\", \"s7\", \"s8\", \"s9\"], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], "
             "\"chunksize\": 3%s}",
             extra_fields);
    uint64_t req = map_submit(f, body);
    json_t *a = request_answer(f, req, 0);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "pending");
    json_t *tasks = json_object_get(a, "tasks");
    assert_int_equal(json_array_size(tasks), 4);
    const size_t want_len[4] = {3, 3, 3, 1};
    for (size_t c = 0; c < 4; c++) {
        chunk_ids[c] = (uint64_t)json_integer_value(json_array_get(tasks, c));
        int e = engine_of(f, chunk_ids[c]);
        assert_int_equal(e, (int)c);
        wire_msg *m = task_msg(&f->links[e], chunk_ids[c]);
        assert_non_null(m);
        assert_string_equal(json_string_value(json_object_get(m->msg, "op")), "map");
        assert_string_equal(json_string_value(json_object_get(m->msg, "function")), "f");
        assert_null(json_object_get(m->msg, "args"));
        json_t *seqs = json_object_get(m->msg, "sequences");
        assert_int_equal(json_array_size(seqs), 2);
        /* the strings stay a JSON list ... */
        json_t *strs = json_array_get(seqs, 0);
        assert_true(json_is_array(strs));
        assert_int_equal(json_array_size(strs), want_len[c]);
        for (size_t k = 0; k < want_len[c]; k++) {
            char want[8];
            snprintf(want, sizeof want, "s%zu", c * 3 + k);
            assert_string_equal(json_string_value(json_array_get(strs, k)), want);
        }
        /* ... the numbers travel as an int64 array cut at the shortest length */
        json_t *nums = json_array_get(seqs, 1);
        json_t *shape = json_object_get(nums, "shape");
        assert_int_equal(json_integer_value(json_array_get(shape, 0)), (json_int_t)want_len[c]);
        assert_int_equal(m->blobs.count, 1);
        assert_int_equal(m->blobs.items[0].len, want_len[c] * 8);
        int64_t first;
        memcpy(&first, m->blobs.items[0].data, 8);
        assert_int_equal(first, (int64_t)(c * 3));
        json_t *doc = task_json(f, chunk_ids[c], NULL);
        assert_int_equal(int_at(doc, "request"), (json_int_t)req);
        json_decref(doc);
    }
    json_decref(a);
    return req;
}

/* Engine c answers chunk c of map_10_by_3 with ["r<i>" for each item]. */
static void answer_chunk(fixture *f, const uint64_t chunk_ids[4], int c)
{
    char value[128] = "[";
    size_t lo = (size_t)c * 3, hi = lo + 3;
    if (hi > 10)
        hi = 10;
    for (size_t i = lo; i < hi; i++)
        snprintf(value + strlen(value), sizeof value - strlen(value), "%s\"r%zu\"",
                 i > lo ? ", " : "", i);
    strcat(value, "]");
    reply_ok(f, c, chunk_ids[c], value);
}

static void test_map_ordered(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 4});
    uint64_t chunks[4];
    uint64_t req = map_10_by_3(f, "", chunks);
    const int order[4] = {3, 1, 0, 2};
    for (int k = 0; k < 4; k++) {
        json_t *a = request_answer(f, req, 0);
        assert_int_equal(int_at(a, "finished"), k);
        json_decref(a);
        answer_chunk(f, chunks, order[k]);
    }
    json_t *a = request_answer(f, req, 1);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "ok");
    expect_json(json_object_get(a, "results"),
                "[\"r0\",\"r1\",\"r2\",\"r3\",\"r4\",\"r5\",\"r6\",\"r7\",\"r8\",\"r9\"]");
    assert_null(json_object_get(a, "errors"));
    json_decref(a);
}

static void test_map_unordered(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 4});
    uint64_t chunks[4];
    uint64_t req = map_10_by_3(f, ", \"ordered\": false", chunks);
    const int order[4] = {3, 1, 0, 2};
    for (int k = 0; k < 4; k++)
        answer_chunk(f, chunks, order[k]);
    json_t *a = request_answer(f, req, 1);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "ok");
    expect_json(json_object_get(a, "results"),
                "[\"r9\",\"r3\",\"r4\",\"r5\",\"r0\",\"r1\",\"r2\",\"r6\",\"r7\",\"r8\"]");
    json_decref(a);
}

/* More chunks than engines: they queue like any task; a failed chunk makes
 * the map's status "error", leaves null at its item and names the chunk. */
static void test_map_queues_and_reports_errors(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2});
    uint64_t req = map_submit(f, "{\"function\": \"g\", \"sequences\": [[\"a\", \"b\", \"c\", "
                                 "\"d\", \"e\"]]}"); /* chunksize 1 -> 5 chunks */
    json_t *a = request_answer(f, req, 0);
    json_t *tasks = json_deep_copy(json_object_get(a, "tasks"));
    json_decref(a);
    assert_int_equal(json_array_size(tasks), 5);
    assert_int_equal(total_task_msgs(f), 2);
    expect_unassigned(f, 3, 0);
    for (size_t c = 0; c < 5; c++) {
        uint64_t id = (uint64_t)json_integer_value(json_array_get(tasks, c));
        int e = engine_of(f, id);
        assert_true(e == 0 || e == 1);
        if (c == 2)
            reply_error(f, e, id);
        else
            reply(f, e, id, "ok", json_pack("{s:[i]}", "value", (int)c));
    }
    a = request_answer(f, req, 1);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "error");
    expect_json(json_object_get(a, "results"), "[0, 1, null, 3, 4]");
    json_t *errors = json_object_get(a, "errors");
    assert_int_equal(json_array_size(errors), 1);
    json_t *e0 = json_array_get(errors, 0);
    assert_int_equal(int_at(e0, "task"), json_integer_value(json_array_get(tasks, 2)));
    assert_int_equal(int_at(e0, "index"), 2);
    assert_int_equal(int_at(e0, "item"), 2);
    assert_string_equal(json_string_value(json_object_get(e0, "ename")), "ValueError");
    json_decref(a);
    json_decref(tasks);
}

/* Engine 1 answers chunk 1 (items 3..5) with item 4 failed alone, engine 3
 * chunk 3 (item 9) with a failure of the whole chunk, the others succeed. */
static void answer_chunks_with_failures(fixture *f, const uint64_t chunks[4], const int order[4])
{
    for (int k = 0; k < 4; k++) {
        int c = order[k];
        if (c == 1)
            reply(f, 1, chunks[1], "error",
                  json_pack("{s:s, s:s, s:[s], s:[s, n, s], s:[{s:i, s:s, s:s, s:[s]}]}", "ename",
                            "RuntimeError", "evalue", "zero", "traceback", "zero", "value", "r3",
                            "r5", "item_errors", "index", 1, "ename", "RuntimeError", "evalue",
                            "zero", "traceback", "zero"));
        else if (c == 3)
            reply_error(f, 3, chunks[3]);
        else
            answer_chunk(f, chunks, c);
    }
}

static void expect_map_error(const json_t *errors, size_t k, uint64_t task, json_int_t index,
                             json_int_t item, const char *ename)
{
    json_t *e = json_array_get(errors, k);
    assert_non_null(e);
    assert_int_equal(int_at(e, "task"), (json_int_t)task);
    assert_int_equal(int_at(e, "index"), index);
    assert_int_equal(int_at(e, "item"), item);
    assert_string_equal(json_string_value(json_object_get(e, "ename")), ename);
    assert_true(json_is_string(json_object_get(e, "evalue")));
    assert_true(json_is_array(json_object_get(e, "traceback")));
}

/* Was a bug: a failed chunk dropped its items from "results", so results no
 * longer lined up with the items ([1, 2, 0, 4] under 1/x gave 3 results).
 * Now every item has a result or null with an error naming its position in
 * "results" (index) and in the sequences (item); an item that failed alone
 * leaves the rest of its chunk alone. */
static void test_map_results_line_up_with_items(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 4});
    uint64_t chunks[4];
    const int order[4] = {3, 1, 0, 2};
    uint64_t req = map_10_by_3(f, "", chunks);
    answer_chunks_with_failures(f, chunks, order);
    json_t *a = request_answer(f, req, 1);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "error");
    expect_json(json_object_get(a, "results"),
                "[\"r0\",\"r1\",\"r2\",\"r3\",null,\"r5\",\"r6\",\"r7\",\"r8\",null]");
    json_t *errors = json_object_get(a, "errors");
    assert_int_equal(json_array_size(errors), 2);
    expect_map_error(errors, 0, chunks[1], 4, 4, "RuntimeError");
    expect_map_error(errors, 1, chunks[3], 9, 9, "ValueError");
    json_decref(a);
    /* The chunk with a failed item is a failed task with that item's error. */
    json_t *doc = task_json(f, chunks[1], NULL);
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "failed");
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "error"), "ename")),
                        "RuntimeError");
    json_decref(doc);

    /* Completion order: chunks as they finished (3, 1, 0, 2), items in order
     * within each; index is the position in results, item the input's. */
    req = map_10_by_3(f, ", \"ordered\": false", chunks);
    answer_chunks_with_failures(f, chunks, order);
    a = request_answer(f, req, 1);
    expect_json(json_object_get(a, "results"),
                "[null,\"r3\",null,\"r5\",\"r0\",\"r1\",\"r2\",\"r6\",\"r7\",\"r8\"]");
    errors = json_object_get(a, "errors");
    assert_int_equal(json_array_size(errors), 2);
    expect_map_error(errors, 0, chunks[3], 0, 9, "ValueError");
    expect_map_error(errors, 1, chunks[1], 2, 4, "RuntimeError");
    json_decref(a);
}

/* A chunk that fails as a whole gives each of its items the chunk's error:
 * lost with its engine, aborted, or answered with the wrong number of
 * results. */
static void test_map_whole_chunk_failures(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 4});
    uint64_t chunks[4];
    uint64_t req = map_10_by_3(f, "", chunks);
    answer_chunk(f, chunks, 0);
    reply_ok(f, 1, chunks[1], "[\"only one\"]"); /* 3 items, 1 result */
    reply_aborted(f, 2, chunks[2]);
    hub_engine_closed(f->h, 3, "test"); /* chunk 3 is lost */
    json_t *a = request_answer(f, req, 1);
    expect_json(json_object_get(a, "results"),
                "[\"r0\",\"r1\",\"r2\",null,null,null,null,null,null,null]");
    json_t *errors = json_object_get(a, "errors");
    assert_int_equal(json_array_size(errors), 7);
    for (json_int_t i = 3; i < 10; i++) {
        uint64_t task = chunks[i / 3];
        const char *ename = i < 6 ? "ProtocolError" : i < 9 ? "Aborted" : "EngineLost";
        expect_map_error(errors, (size_t)(i - 3), task, i, i, ename);
    }
    json_decref(a);
}

static void test_map_bad_bodies(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    map_fails(f, "{\"sequences\": [[1]]}", ERR_BAD_REQUEST);
    map_fails(f, "{\"function\": \"f\"}", ERR_BAD_REQUEST);
    map_fails(f, "{\"function\": \"f\", \"sequences\": []}", ERR_BAD_REQUEST);
    map_fails(f, "{\"function\": \"f\", \"sequences\": [1, 2]}", ERR_BAD_REQUEST);
    map_fails(f, "{\"function\": \"f\", \"sequences\": [[1], []]}", ERR_BAD_REQUEST);
    map_fails(f, "{\"function\": \"f\", \"sequences\": [[1]], \"chunksize\": 0}", ERR_BAD_REQUEST);
    map_fails(f, "{\"function\": \"f\", \"sequences\": [[1]], \"chunksize\": 1.5}",
              ERR_BAD_REQUEST);
    map_fails(f, "{\"function\": \"f\", \"sequences\": [[1]], \"ordered\": 1}", ERR_BAD_REQUEST);
    map_fails(f, "{\"function\": \"bad name\", \"sequences\": [[1]]}", ERR_INVALID);
    assert_int_equal(total_task_msgs(f), 0);
    expect_unassigned(f, 0, 0);
    /* chunksize larger than the sequence: one chunk */
    uint64_t req = map_submit(f, "{\"function\": \"f\", \"sequences\": [[\"a\", \"b\"]], "
                                 "\"chunksize\": 100}");
    assert_int_equal(total_task_msgs(f), 1);
    reply_ok(f, 0, last_task(&f->links[0]), "[\"A\", \"B\"]");
    json_t *a = request_answer(f, req, 1);
    expect_json(json_object_get(a, "results"), "[\"A\", \"B\"]");
    json_decref(a);
}

/* ------------------------------------------------------------------ queue */

static void test_queue_counts(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 2, .engines = 3});
    hub_engine_closed(f->h, 2, "test");
    uint64_t t[5];
    for (int i = 0; i < 5; i++)
        t[i] = submit(f, "{\"code\": \"q%d\"}", i);
    uint64_t w = submit(f, "{\"code\": \"w\", \"after\": [%llu]}", (unsigned long long)t[4]);
    expect_engine_queue(f, 0, 0, 2, 0, "busy");
    expect_engine_queue(f, 1, 0, 2, 0, "busy");
    expect_engine_queue(f, 2, 0, 0, 0, "dead");
    expect_unassigned(f, 2, 1);

    /* A direct-view task on engine 0 counts as queued, not running. */
    json_t *body = parse("{\"code\": \"direct\"}");
    hub_call call = {.op = HUB_OP_EXECUTE, .targets = "0", .body = body};
    ippc_error err = {{0}, {0}};
    uint64_t req = hub_submit(f->h, &call, &err);
    assert_true(req > 0);
    json_decref(body);
    expect_engine_queue(f, 0, 1, 2, 0, "busy");

    reply_ok(f, 1, t[1], "1");
    expect_engine_queue(f, 1, 0, 2, 1, "busy"); /* t[4] moved in */
    expect_unassigned(f, 1, 1);
    reply_ok(f, 1, t[4], "1");
    expect_state(f, w, "running");
    expect_unassigned(f, 0, 0);
    reply_ok(f, 0, last_task(&f->links[0]), "1"); /* the direct task */
    expect_engine_queue(f, 0, 0, 2, 1, "busy");
    assert_int_equal(engine_of(f, w), 1);
    reply_ok(f, 0, t[0], "1");
    reply_ok(f, 0, t[2], "1");
    reply_ok(f, 1, t[3], "1");
    reply_ok(f, 1, w, "1");
    expect_engine_queue(f, 0, 0, 0, 3, "idle"); /* t0, t2, the direct task */
    expect_engine_queue(f, 1, 0, 0, 4, "idle"); /* t1, t3, t4, w */
}

/* ------------------------------------------------------------------ store */

/* Four finished tasks with tags, on two engines, and one still running. */
typedef struct history {
    uint64_t t1, t2, t3, t4, t5;
} history;

static history make_history(fixture *f)
{
    history h;
    h.t1 = submit(f, "{\"code\": \"1\", \"tags\": [\"alpha\"], \"targets\": [0]}");
    h.t2 = submit(f, "{\"code\": \"2\", \"tags\": [\"beta\"], \"targets\": [1]}");
    reply_ok(f, 0, h.t1, "[1, 2, 3]");
    h.t3 = submit(f, "{\"code\": \"3\", \"tags\": [\"alpha\", \"beta\"], \"targets\": [0]}");
    reply_error(f, 1, h.t2);
    reply_ok(f, 0, h.t3, "{\"x\": 3}");
    h.t4 = submit(f,
                  "{\"code\": \"4\", \"tags\": [\"alpha\"], \"after\": [%llu], "
                  "\"targets\": [1]}",
                  (unsigned long long)h.t2); /* fails: t2 failed */
    h.t5 = submit(f, "{\"code\": \"5\", \"tags\": [\"alpha\"], \"targets\": [1]}");
    expect_state(f, h.t5, "running");
    return h;
}

/* ids of a query's tasks, as a JSON text like "[1,3]"; also its next cursor. */
static char *query_ids(fixture *f, const char *st, int engine, const char *tag, size_t limit,
                       uint64_t cursor, uint64_t *next)
{
    ippc_error err = {{0}, {0}};
    json_t *out = hub_task_query(f->h, st, engine, tag, NULL, limit, cursor, &err);
    if (!out)
        print_error("query: %s: %s\n", err.code, err.message);
    assert_non_null(out);
    json_t *ids = json_array();
    size_t i;
    json_t *doc;
    json_array_foreach(json_object_get(out, "tasks"), i, doc) {
        assert_null(json_object_get(doc, "spec"));
        json_array_append(ids, json_object_get(doc, "id"));
    }
    json_t *nc = json_object_get(out, "next_cursor");
    assert_true(json_is_null(nc) || json_is_integer(nc));
    if (next)
        *next = json_is_integer(nc) ? (uint64_t)json_integer_value(nc) : 0;
    char *text = dump(ids);
    json_decref(ids);
    json_decref(out);
    return text;
}

static void expect_query(fixture *f, const char *st, int engine, const char *tag, size_t limit,
                         uint64_t cursor, const char *want_ids, uint64_t want_next)
{
    uint64_t next = 0;
    char *got = query_ids(f, st, engine, tag, limit, cursor, &next);
    json_t *g = parse(got), *w = parse(want_ids);
    if (!json_equal(g, w) || next != want_next)
        print_error("query state=%s engine=%d tag=%s limit=%zu cursor=%llu: %s next %llu, want "
                    "%s next %llu\n",
                    st ? st : "-", engine, tag ? tag : "-", limit, (unsigned long long)cursor, got,
                    (unsigned long long)next, want_ids, (unsigned long long)want_next);
    assert_true(json_equal(g, w));
    assert_int_equal(next, want_next);
    json_decref(g);
    json_decref(w);
    free(got);
}

static void ids_text(char *buf, size_t size, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    snprintf(buf, size, "[");
    for (int i = 0; i < n; i++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s%llu", i ? "," : "",
                 (unsigned long long)va_arg(ap, uint64_t));
    snprintf(buf + strlen(buf), size - strlen(buf), "]");
    va_end(ap);
}

static void test_store_query(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2, .with_store = 1});
    history h = make_history(f);
    char want[128];
    ids_text(want, sizeof want, 2, h.t1, h.t3);
    expect_query(f, "completed", -1, NULL, 100, 0, want, 0);
    ids_text(want, sizeof want, 2, h.t2, h.t4);
    expect_query(f, "failed", -1, NULL, 100, 0, want, 0);
    ids_text(want, sizeof want, 1, h.t5);
    expect_query(f, "running", -1, NULL, 100, 0, want, 0);
    ids_text(want, sizeof want, 2, h.t1, h.t3);
    expect_query(f, NULL, 0, NULL, 100, 0, want, 0);
    ids_text(want, sizeof want, 2, h.t2, h.t5);
    expect_query(f, NULL, 1, NULL, 100, 0, want, 0);
    ids_text(want, sizeof want, 2, h.t2, h.t3);
    expect_query(f, NULL, -1, "beta", 100, 0, want, 0);
    ids_text(want, sizeof want, 1, h.t3);
    expect_query(f, "completed", 0, "beta", 100, 0, want, 0);
    expect_query(f, NULL, -1, "gamma", 100, 0, "[]", 0);

    /* Pagination by cursor: alpha is t1, t3, t4, t5. */
    ids_text(want, sizeof want, 2, h.t1, h.t3);
    expect_query(f, NULL, -1, "alpha", 2, 0, want, h.t3);
    ids_text(want, sizeof want, 2, h.t4, h.t5);
    expect_query(f, NULL, -1, "alpha", 2, h.t3, want, 0);
    ids_text(want, sizeof want, 1, h.t4);
    expect_query(f, NULL, -1, "alpha", 1, h.t3, want, h.t4);

    /* Documents carry the client view with results. */
    ippc_error err = {{0}, {0}};
    json_t *out = hub_task_query(f->h, "completed", 0, "alpha", NULL, 1, 0, &err);
    assert_non_null(out);
    json_t *doc = json_array_get(json_object_get(out, "tasks"), 0);
    assert_int_equal(int_at(doc, "id"), (json_int_t)h.t1);
    expect_json(json_object_get(doc, "result"), "[1, 2, 3]");
    expect_json(json_object_get(doc, "tags"), "[\"alpha\"]");
    assert_int_equal(int_at(doc, "engine"), 0);
    json_decref(out);
    out = hub_task_query(f->h, "failed", -1, NULL, NULL, 10, h.t2, &err);
    assert_non_null(out);
    doc = json_array_get(json_object_get(out, "tasks"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "error"), "ename")),
                        "DependencyError");
    json_decref(out);
}

static void test_query_and_purge_need_a_store(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    ippc_error err = {{0}, {0}};
    assert_null(hub_task_query(f->h, NULL, -1, NULL, NULL, 10, 0, &err));
    assert_string_equal(err.code, ERR_UNAVAILABLE);
    memset(&err, 0, sizeof err);
    assert_null(hub_task_purge(f->h, NULL, &err));
    assert_string_equal(err.code, ERR_UNAVAILABLE);
}

/* purge removes finished tasks from the store and from memory; unfinished
 * ones stay; a "before" time keeps the tasks completed at or after it. */
static void test_store_purge(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2, .with_store = 1});
    history h = make_history(f);
    /* t1 completed first; purge strictly before t3's completion keeps t3. */
    json_t *d3 = task_json(f, h.t3, NULL);
    char before[64];
    snprintf(before, sizeof before, "%s", json_string_value(json_object_get(d3, "completed")));
    json_decref(d3);
    ippc_error err = {{0}, {0}};
    json_t *out = hub_task_purge(f->h, before, &err);
    assert_non_null(out);
    assert_int_equal(int_at(out, "purged"), 2); /* t1 and t2 */
    json_decref(out);
    task_not_found(f, h.t1);
    task_not_found(f, h.t2);
    expect_result(f, h.t3, "{\"x\": 3}");
    char want[128];
    ids_text(want, sizeof want, 3, h.t3, h.t4, h.t5);
    expect_query(f, NULL, -1, NULL, 100, 0, want, 0);

    out = hub_task_purge(f->h, NULL, &err);
    assert_non_null(out);
    assert_int_equal(int_at(out, "purged"), 2); /* t3 and t4 */
    json_decref(out);
    task_not_found(f, h.t3);
    task_not_found(f, h.t4);
    expect_state(f, h.t5, "running");
    ids_text(want, sizeof want, 1, h.t5);
    expect_query(f, NULL, -1, NULL, 100, 0, want, 0);
    reply_ok(f, 1, h.t5, "5");
    expect_result(f, h.t5, "5");
    ippc_error rerr = {{0}, {0}};
    assert_null(hub_task_resubmit(f->h, h.t1, &rerr));
    assert_string_equal(rerr.code, ERR_NOT_FOUND);
}

/* Builds `finished` finished tasks quickly: one engine kept busy by a blocker
 * task, a batch that stays pending, each aborted.  Returns the blocker. */
static uint64_t finish_many(fixture *f, size_t finished)
{
    uint64_t blocker = submit(f, "{\"code\": \"block\"}");
    expect_state(f, blocker, "running");
    json_t *specs = json_array();
    for (size_t i = 0; i < finished; i++)
        json_array_append_new(specs, json_pack("{s:s}", "code", "n"));
    ippc_error err = {{0}, {0}};
    uint64_t first = 0;
    json_t *out = hub_task_submit(f->h, specs, &first, &err);
    assert_non_null(out);
    json_decref(out);
    json_decref(specs);
    for (size_t i = 0; i < finished; i++) {
        json_t *a = hub_task_abort(f->h, first + i, 0, &err);
        assert_non_null(a);
        json_decref(a);
    }
    return blocker;
}

/* A finished task pushed out of memory (more than KEEP_FINISHED finished
 * since) is answered from the store, and still counts as a dependency. */
static void test_evicted_task_answered_from_store(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1, .with_store = 1});
    uint64_t old = submit(f, "{\"code\": \"old\", \"tags\": [\"keep\"]}");
    reply_ok(f, 0, old, "[4, 5]");
    uint64_t blocker = finish_many(f, KEEP_FINISHED);
    int fin = -1;
    json_t *doc = task_json(f, old, &fin);
    assert_int_equal(fin, 1);
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "completed");
    expect_json(json_object_get(doc, "result"), "[4, 5]");
    expect_json(json_object_get(doc, "tags"), "[\"keep\"]");
    assert_null(json_object_get(doc, "spec"));
    json_decref(doc);
    /* still a dependency: */
    uint64_t dep = submit(f, "{\"code\": \"d\", \"after\": [%llu]}", (unsigned long long)old);
    expect_state(f, dep, "pending");
    reply_ok(f, 0, blocker, "0");
    expect_state(f, dep, "running");
    /* and resubmittable: */
    ippc_error err = {{0}, {0}};
    json_t *out = hub_task_resubmit(f->h, old, &err);
    assert_non_null(out);
    json_decref(out);
}

/* The same without a store: the evicted task is gone. */
static void test_evicted_task_without_store_is_gone(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    uint64_t old = submit(f, "{\"code\": \"old\"}");
    reply_ok(f, 0, old, "1");
    uint64_t recent = old + 2; /* the first of the batch */
    finish_many(f, KEEP_FINISHED);
    task_not_found(f, old);
    expect_state(f, recent, "aborted");
}

/* ------------------------------------------------- one task model */

static char *list_ids(fixture *f, const hub_task_filter *filter)
{
    ippc_error err = {{0}, {0}};
    json_t *out = hub_task_list(f->h, filter, &err);
    if (!out)
        print_error("list: %s: %s\n", err.code, err.message);
    assert_non_null(out);
    json_t *ids = json_array();
    size_t i;
    json_t *doc;
    json_array_foreach(json_object_get(out, "tasks"), i, doc)
        json_array_append(ids, json_object_get(doc, "id"));
    char *text = dump(ids);
    json_decref(ids);
    json_decref(out);
    return text;
}

/* Direct-view work is task records too: in the store with kind and request,
 * answered by id, aborted by id, never resubmitted. */
static void test_direct_tasks_are_tasks(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2, .with_store = 1});
    uint64_t balanced = submit(f, "{\"code\": \"b\"}");
    json_t *body = parse("{\"code\": \"d = 1\"}");
    hub_call call = {.op = HUB_OP_EXECUTE, .targets = "all", .body = body};
    ippc_error err = {{0}, {0}};
    uint64_t req = hub_submit(f->h, &call, &err);
    assert_true(req > 0);
    json_decref(body);
    uint64_t d0 = last_task(&f->links[0]), d1 = last_task(&f->links[1]);
    assert_true(d0 > balanced && d1 > balanced);
    expect_state(f, d0, "running");
    json_t *doc = task_json(f, d0, NULL);
    assert_string_equal(json_string_value(json_object_get(doc, "kind")), "direct");
    assert_string_equal(json_string_value(json_object_get(doc, "op")), "execute");
    assert_int_equal(int_at(doc, "request"), (json_int_t)req);
    json_decref(doc);
    /* Aborting a running direct task interrupts exactly it. */
    json_t *out = hub_task_abort(f->h, d1, 1, &err);
    assert_non_null(out);
    json_decref(out);
    json_t *intr = f->links[1].msgs[f->links[1].n - 1].msg;
    assert_string_equal(msg_type(intr), "interrupt");
    assert_int_equal(json_integer_value(json_object_get(intr, "task")), (json_int_t)d1);
    reply_aborted(f, 1, d1);
    reply(f, 0, d0, "ok", json_pack("{s:s}", "stdout", "hello"));
    doc = task_json(f, d0, NULL);
    assert_string_equal(json_string_value(json_object_get(doc, "stdout")), "hello");
    assert_null(json_object_get(doc, "result"));
    json_decref(doc);
    expect_state(f, d1, "aborted");

    char want[64];
    hub_task_filter filter = {.kind = "direct", .engine = -1, .limit = 100};
    ids_text(want, sizeof want, 2, d0, d1);
    char *got = list_ids(f, &filter);
    assert_string_equal(got, want);
    free(got);
    filter = (hub_task_filter){.request = req, .engine = -1, .limit = 100};
    got = list_ids(f, &filter);
    assert_string_equal(got, want);
    free(got);
    filter = (hub_task_filter){.kind = "balanced", .engine = -1, .limit = 100};
    ids_text(want, sizeof want, 1, balanced);
    got = list_ids(f, &filter);
    assert_string_equal(got, want);
    free(got);
    filter = (hub_task_filter){.kind = "direct", .state = "aborted", .engine = -1, .limit = 100};
    ids_text(want, sizeof want, 1, d1);
    got = list_ids(f, &filter);
    assert_string_equal(got, want);
    free(got);

    memset(&err, 0, sizeof err);
    assert_null(hub_task_resubmit(f->h, d0, &err));
    assert_string_equal(err.code, ERR_INVALID);
}

/* A dependency that is only in the store (a restarted controller) is read
 * from it at submit, outside the hub lock, and still decides. */
static void test_dependency_known_only_to_the_store(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1, .with_store = 1});
    uint64_t ok = submit(f, "{\"code\": \"a\"}");
    reply_ok(f, 0, ok, "1");
    uint64_t bad = submit(f, "{\"code\": \"b\"}");
    reply_error(f, 0, bad);
    hub_free(f->h);
    link_clear(&f->links[0]);
    hub_config cfg = {.engine_key = KEY, .hwm = 1, .store = f->st};
    f->h = hub_new(&cfg);
    register_ok(f->h, &f->links[0], "jobA", 0, 1);
    uint64_t after_ok = submit(f, "{\"code\": \"c\", \"after\": [%llu]}", (unsigned long long)ok);
    assert_true(after_ok > bad);
    expect_state(f, after_ok, "running");
    uint64_t after_bad = submit(f, "{\"code\": \"d\", \"after\": [%llu]}", (unsigned long long)bad);
    expect_error(f, after_bad, "failed", "DependencyError", "ended failed");
}

/* ------------------------------------------------------------ known bugs */

/* Was a bug: a map request evicted from the finished-request list (max_requests_kept)
 * is freed while its chunk tasks still point at it (lbtask.map): task_doc()
 * then reads t->map->id from freed memory (heap-use-after-free under ASan;
 * a garbage "request" id otherwise), and evict_finished()/persist() would read
 * it too.  Reproduction: max_requests_kept=1; map M1 (1 item) answered; map
 * M2 answered (M1 evicted); hub_task_json(chunk of M1). */
static void test_bug_evicted_map_request_leaves_dangling_chunks(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1, .max_requests_kept = 1});
    uint64_t m1 = map_submit(f, "{\"function\": \"f\", \"sequences\": [[\"a\"]]}");
    uint64_t c1 = last_task(&f->links[0]);
    reply_ok(f, 0, c1, "[\"A\"]");
    uint64_t m2 = map_submit(f, "{\"function\": \"f\", \"sequences\": [[\"b\"]]}");
    reply_ok(f, 0, last_task(&f->links[0]), "[\"B\"]");
    json_t *a2 = request_answer(f, m2, 1);
    json_decref(a2);
    json_t *doc = task_json(f, c1, NULL); /* reads the freed request */
    assert_int_equal(int_at(doc, "request"), (json_int_t)m1);
    json_decref(doc);
}

/* Was a bug: a task that depends on itself (or a batch whose tasks depend on each
 * other) waits forever: deps_verdict() only sees an unfinished dependency and
 * answers DEP_WAIT; nothing detects the cycle, although issue 4 says an
 * impossible dependency "is reported, never waits forever".  Reproduction:
 * submit {"code":"x"} (id N), then {"code":"y","after":[N+1]} (gets id N+1);
 * or the batch [{"code":"a","after":[N+3]},{"code":"b","after":[N+2]}]. */
static void test_bug_dependency_cycle_waits_forever(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    uint64_t n = submit(f, "{\"code\": \"x\"}");
    uint64_t self = submit(f, "{\"code\": \"y\", \"after\": [%llu]}", (unsigned long long)n + 1);
    assert_int_equal(self, n + 1);
    reply_ok(f, 0, n, "1");
    hub_tick(f->h);
    expect_error(f, self, "failed", "ImpossibleDependency", NULL);
}

/* Was a bug: deps_verdict() returns DEP_WAIT at the first unfinished dependency, so
 * a dependency later in the list that already makes the task impossible (an
 * unknown id, or a failed task with success_only) is only reported once the
 * earlier ones finish -- never, if they never do (e.g. a task pending with
 * no engine).  Reproduction: one engine, hwm 1; C {"code":"c"} runs, then
 * D {"code":"d","after":[C, 987656]} stays "pending" until C finishes; the
 * same with after [C, F] where F already failed. */
static void test_bug_impossible_dependency_after_unfinished_one(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    uint64_t failed = submit(f, "{\"code\": \"f\"}");
    reply_error(f, 0, failed);
    uint64_t c = submit(f, "{\"code\": \"c\"}");
    uint64_t d = submit(f, "{\"code\": \"d\", \"after\": [%llu, 987656]}", (unsigned long long)c);
    uint64_t e = submit(f, "{\"code\": \"e\", \"after\": [%llu, %llu]}", (unsigned long long)c,
                        (unsigned long long)failed);
    hub_tick(f->h);
    expect_error(f, d, "failed", "ImpossibleDependency", "987656");
    expect_error(f, e, "failed", "DependencyError", NULL);
}

/* Was a bug: with hwm >= 2 an engine holds tasks in its own FIFO queue, but a
 * timeout (or hub_task_abort with force) sends a bare {"type":"interrupt"}
 * that names no task.  The engine (engine/main.c) interrupts whatever runs,
 * i.e. the task ahead in its queue: that innocent task ends "aborted" while
 * the timed-out one runs on.  Reproduction: hwm=2, one engine; submit A
 * {"code":"a"} then B {"code":"b","timeout":0.05}; both go to engine 0; after
 * 50 ms hub_tick sends {"type":"interrupt"} to engine 0, which is running A. */
static void test_bug_interrupt_hits_the_task_ahead(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 2, .engines = 1});
    uint64_t a = submit(f, "{\"code\": \"a\"}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"timeout\": 0.05}");
    assert_int_equal(engine_of(f, a), 0);
    assert_int_equal(engine_of(f, b), 0);
    sleep_ms(80);
    hub_tick(f->h);
    /* Either no interrupt while B is not the task the engine runs, or one that
     * names B, so the engine can tell. */
    fake_link *l = &f->links[0];
    for (size_t i = 0; i < l->n; i++) {
        json_t *m = l->msgs[i].msg;
        if (strcmp(msg_type(m), "interrupt") != 0)
            continue;
        json_t *t = json_object_get(m, "task");
        if (!json_is_integer(t) || json_integer_value(t) != (json_int_t)b) {
            /* What the real engine does next: A, the running task, is interrupted. */
            reply_aborted(f, 0, a);
            json_t *doc = task_json(f, a, NULL);
            print_error("interrupt for B=%llu names no task; A=%llu ended %s\n",
                        (unsigned long long)b, (unsigned long long)a,
                        json_string_value(json_object_get(doc, "state")));
            json_decref(doc);
            fail_msg("the interrupt meant for task %llu does not name it", (unsigned long long)b);
        }
    }
}

/* Was a bug: resubmitting a map chunk task sends it as op "apply" with the chunk's
 * sequences as positional arguments (fn(seq_part_1, ...)) instead of op "map"
 * over the items: task_build() knows map_mode only at hub_map_submit time and
 * the stored spec does not say it was a chunk.  Reproduction: hub_map_submit
 * {"function":"f","sequences":[["a","b"]],"chunksize":2}; answer it;
 * hub_task_resubmit(chunk id) -> the engine receives op "apply", args [["a","b"]]. */
static void test_bug_resubmit_map_chunk_is_apply(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1});
    map_submit(f, "{\"function\": \"f\", \"sequences\": [[\"a\", \"b\"]], \"chunksize\": 2}");
    uint64_t chunk = last_task(&f->links[0]);
    reply_ok(f, 0, chunk, "[\"A\", \"B\"]");
    ippc_error err = {{0}, {0}};
    json_t *out = hub_task_resubmit(f->h, chunk, &err);
    assert_non_null(out);
    uint64_t again = (uint64_t)int_at(out, "id");
    json_decref(out);
    wire_msg *m = task_msg(&f->links[0], again);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m->msg, "op")), "map");
    expect_json(json_object_get(m->msg, "sequences"), "[[\"a\", \"b\"]]");
}

/* Was a bug: purging history breaks dependencies that are still waiting: a
 * dependent of a completed, then purged, task fails with ImpossibleDependency
 * ("depends on unknown task") once its other dependencies finish, although
 * the dependency did complete (ipyparallel keeps dependency state apart from
 * its results database).  Reproduction (memory store): A completes; C runs;
 * B {"after":[A, C]} waits; hub_task_purge(NULL); C completes -> B failed. */
static void test_bug_purge_fails_waiting_dependents(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 2, .with_store = 1});
    uint64_t a = submit(f, "{\"code\": \"a\"}");
    reply_ok(f, engine_of(f, a), a, "1");
    uint64_t c = submit(f, "{\"code\": \"c\"}");
    uint64_t b = submit(f, "{\"code\": \"b\", \"after\": [%llu, %llu]}", (unsigned long long)a,
                        (unsigned long long)c);
    expect_state(f, b, "pending");
    ippc_error err = {{0}, {0}};
    json_t *out = hub_task_purge(f->h, NULL, &err);
    assert_non_null(out);
    json_decref(out);
    reply_ok(f, engine_of(f, c), c, "1");
    expect_state(f, b, "running");
}

/* Was a bug: a finished map's answer turns into an error once its chunk tasks are
 * pushed out of memory (KEEP_FINISHED later finished tasks):
 * tasks_map_answer_locked() only looks in memory, so every evicted chunk
 * becomes an error entry {"task": id} with no ename, status "error", and the
 * results are gone -- even though the store holds every chunk's result.
 * Reproduction (memory store): map of 1 item, answered ["A"]; 50000 more
 * tasks finish; hub_request_json(map). */
static void test_bug_map_answer_after_chunk_eviction(void **state)
{
    fixture *f = *state;
    start(f, (hub_opts){.hwm = 1, .engines = 1, .with_store = 1});
    uint64_t m = map_submit(f, "{\"function\": \"f\", \"sequences\": [[\"a\"]]}");
    uint64_t chunk = last_task(&f->links[0]);
    reply_ok(f, 0, chunk, "[\"A\"]");
    json_t *a = request_answer(f, m, 1);
    expect_json(json_object_get(a, "results"), "[\"A\"]");
    json_decref(a);
    finish_many(f, KEEP_FINISHED);
    expect_result(f, chunk, "[\"A\"]"); /* the store still has it */
    a = request_answer(f, m, 1);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "ok");
    expect_json(json_object_get(a, "results"), "[\"A\"]");
    json_decref(a);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_leastload_hwm1_spreads_then_holds),
        T(test_hwm2_lets_an_engine_hold_two),
        T(test_lru_only_live_below_hwm),
        T(test_random_only_live_below_hwm),
        T(test_twobin_only_live_below_hwm),
        T(test_weighted_only_live_below_hwm),
        T(test_lru_prefers_oldest_assignment),
        T(test_targets_spec_string),
        T(test_targets_id_list),
        T(test_targets_dead_engines),
        T(test_after_waits_for_completion),
        T(test_after_failed_dependency),
        T(test_after_success_only_false),
        T(test_follow_same_engine),
        T(test_follow_dead_engine_is_impossible),
        T(test_unknown_dependency_is_impossible),
        T(test_chain_failure_propagates),
        T(test_retry_goes_to_another_engine),
        T(test_no_retry_loses_task),
        T(test_timeout_running),
        T(test_timeout_pending),
        T(test_abort),
        T(test_forced_abort_then_engine_death),
        T(test_resubmit),
        T(test_batch_of_1000),
        T(test_batch_bad_item_rejects_all),
        T(test_map_ordered),
        T(test_map_unordered),
        T(test_map_queues_and_reports_errors),
        T(test_map_results_line_up_with_items),
        T(test_map_whole_chunk_failures),
        T(test_map_bad_bodies),
        T(test_queue_counts),
        T(test_store_query),
        T(test_query_and_purge_need_a_store),
        T(test_store_purge),
        T(test_evicted_task_answered_from_store),
        T(test_evicted_task_without_store_is_gone),
        T(test_direct_tasks_are_tasks),
        T(test_dependency_known_only_to_the_store),
        T(test_bug_evicted_map_request_leaves_dangling_chunks),
        T(test_bug_dependency_cycle_waits_forever),
        T(test_bug_impossible_dependency_after_unfinished_one),
        T(test_bug_interrupt_hits_the_task_ahead),
        T(test_bug_resubmit_map_chunk_is_apply),
        T(test_bug_purge_fails_waiting_dependents),
        T(test_bug_map_answer_after_chunk_eviction),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
