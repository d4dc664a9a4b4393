/* test_server_fanout.c — the controller's half of "data ops fanned out by MPI"
 * (common/proto.h) through hub.h with fake engines: which pushes, scatters and
 * gathers fan out (thresholds, one job, no dead engine, rank order), the
 * messages each participant gets (the root's with the data, the others'
 * without), fan-out ids, the answers (the root's concatenation or its
 * "parts"), and the interrupts sent when a participant is lost or aborted.
 * No sockets, no MPI.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <jansson.h>
#include <libwebsockets.h>

#include "hub.h"
#include "value.h"
#include "fake_engines.h"

#define MAX_LINKS 8

typedef struct fixture {
    hub *h;
    fake_link links[MAX_LINKS];
    int ids[MAX_LINKS];
} fixture;

/* A hub that fans out at min bytes for every op (SIZE_MAX: never). */
static hub *new_hub(size_t push, size_t scatter, size_t gather)
{
    hub_config cfg = {.engine_key = FAKE_ENGINE_KEY,
                      .profile = "default",
                      .url = "http://127.0.0.1:1",
                      .ws_url = "ws://127.0.0.1:1/engine",
                      .fanout = 1,
                      .fanout_min_bytes = {push, scatter, gather}};
    hub *h = hub_new(&cfg);
    assert_non_null(h);
    return h;
}

static fixture *fixture_new(size_t push, size_t scatter, size_t gather)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->h = new_hub(push, scatter, gather);
    return f;
}

/* Job "jobA" of 4 ranks (engines 0..3), registered out of order. */
static void four(fixture *f)
{
    const int order[] = {3, 1, 0, 2};
    for (int i = 0; i < 4; i++)
        f->ids[order[i]] = register_ok(f->h, &f->links[order[i]], "jobA", order[i], 4);
}

static int setup_always(void **state)
{
    fixture *f = fixture_new(0, 0, 0);
    four(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    hub_free(f->h);
    for (int i = 0; i < MAX_LINKS; i++)
        link_clear(&f->links[i]);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    if (!v)
        print_error("bad test JSON: %s: %s\n", text, jerr.text);
    assert_non_null(v);
    return v;
}

static uint64_t submit(fixture *f, hub_op op, const char *targets, const char *body,
                       const char *name)
{
    json_t *b = parse(body ? body : "{}");
    hub_call call = {.op = op, .targets = targets, .body = b, .name = name};
    ippc_error err = {{0}, {0}};
    uint64_t id = hub_submit(f->h, &call, &err);
    if (!id)
        print_error("submit failed: %s: %s\n", err.code, err.message);
    assert_true(id > 0);
    json_decref(b);
    return id;
}

static void expect_json(const json_t *got, const char *want_text)
{
    json_t *want = parse(want_text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        print_error("got  %s\nwant %s\n", g, want_text);
        free(g);
    }
    assert_true(json_equal(got, want));
    json_decref(want);
}

static wire_msg *last_msg(fake_link *l)
{
    assert_true(l->n > 0);
    return &l->msgs[l->n - 1];
}

static json_int_t task_of(fake_link *l)
{
    json_t *t = json_object_get(last_msg(l)->msg, "task");
    assert_true(json_is_integer(t));
    return json_integer_value(t);
}

static const char *op_of(const wire_msg *w)
{
    const char *op = json_string_value(json_object_get(w->msg, "op"));
    assert_non_null(op);
    return op;
}

/* The "fanout" member of w, with its id checked and removed (ids are compared
 * separately), as compact sorted text. */
static json_t *fanout_of(const wire_msg *w, json_int_t *id)
{
    json_t *fo = json_deep_copy(json_object_get(w->msg, "fanout"));
    assert_non_null(fo);
    *id = json_integer_value(json_object_get(fo, "id"));
    assert_true(*id >= 1);
    json_object_del(fo, "id");
    return fo;
}

static void ok_result(fixture *f, int engine, json_t *extra, ippc_blobs *blobs)
{
    json_t *m = json_pack("{s:s, s:s}", "status", "ok", "stdout", "");
    if (extra) {
        json_object_update(m, extra);
        json_decref(extra);
    }
    result_from(f->h, engine, task_of(&f->links[engine]), m, blobs);
}

static json_t *answer(fixture *f, uint64_t id, int want_done)
{
    int done = -1;
    ippc_error err = {{0}, {0}};
    json_t *a = hub_request_json(f->h, id, &done, &err);
    assert_non_null(a);
    assert_int_equal(done, want_done);
    return a;
}

static const char *status_of(const json_t *a)
{
    return json_string_value(json_object_get(a, "status"));
}

/* The hub's ippc_fanout_ops_total{op="op"}. */
static long fanout_count(fixture *f, const char *op)
{
    char *text = NULL;
    size_t len = 0;
    hub_metrics(f->h, &text, &len);
    assert_non_null(text);
    char key[64];
    snprintf(key, sizeof key, "ippc_fanout_ops_total{op=\"%s\"} ", op);
    const char *at = strstr(text, key);
    assert_non_null(at);
    long n = strtol(at + strlen(key), NULL, 10);
    free(text);
    return n;
}

static json_t *int64_placeholder(ippc_blobs *blobs, const int64_t *v, size_t n)
{
    unsigned char *data = malloc(n * 8 + 1);
    assert_non_null(data);
    memcpy(data, v, n * 8);
    long k = blobs_push(blobs, data, n * 8);
    assert_true(k >= 0);
    size_t shape[1] = {n};
    return value_nd_placeholder(ND_INT64, 1, shape, (size_t)k);
}

/* ------------------------------------------------------------------ push */

static void test_push_goes_to_the_root_once(void **state)
{
    fixture *f = *state;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t now_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    uint64_t id = submit(f, HUB_OP_PUSH, "all",
                         "{\"namespace\":{\"a\":[1.5,2.5,3.5],\"b\":{\"k\":[1,2]}}}", NULL);
    json_int_t fid[4];
    for (int i = 0; i < 4; i++) {
        wire_msg *w = last_msg(&f->links[i]);
        assert_int_equal(f->links[i].n, 1);
        assert_string_equal(op_of(w), "push");
        json_t *fo = fanout_of(w, &fid[i]);
        expect_json(fo, "{\"ranks\":[0,1,2,3],\"root\":0}");
        json_decref(fo);
        if (i == 0) {
            /* The root: the namespace and its blobs. */
            assert_int_equal(w->blobs.count, 2);
            assert_non_null(json_object_get(json_object_get(w->msg, "ns"), "a"));
            assert_null(json_object_get(w->msg, "names"));
        } else {
            assert_int_equal(w->blobs.count, 0);
            assert_int_equal(json_integer_value(json_object_get(w->msg, "nbuf")), 0);
            assert_null(json_object_get(w->msg, "ns"));
            json_t *names = json_object_get(w->msg, "names");
            assert_int_equal(json_array_size(names), 2);
        }
        assert_int_equal(fid[i], fid[0]);
    }
    /* ids start above the controller's start time in ms * 2^20 */
    assert_true((uint64_t)fid[0] > (now_ms - 60000) << 20);
    assert_true((uint64_t)fid[0] < (uint64_t)1 << 63);
    assert_int_equal(fanout_count(f, "push"), 1);

    for (int i = 3; i >= 0; i--)
        ok_result(f, i, NULL, NULL);
    json_t *a = answer(f, id, 1);
    assert_string_equal(status_of(a), "ok");
    json_t *results = json_object_get(a, "results");
    assert_int_equal(json_array_size(results), 4);
    for (int i = 0; i < 4; i++) {
        json_t *r = json_array_get(results, i);
        assert_int_equal(json_integer_value(json_object_get(r, "engine")), i);
        assert_string_equal(json_string_value(json_object_get(r, "status")), "ok");
    }
    json_decref(a);

    /* The next data op has a larger id. */
    submit(f, HUB_OP_PUSH, "1,3", "{\"namespace\":{\"c\":1}}", NULL);
    json_int_t next;
    json_t *fo = fanout_of(last_msg(&f->links[3]), &next);
    expect_json(fo, "{\"ranks\":[1,3],\"root\":1}");
    json_decref(fo);
    assert_true(next > fid[0]);
    assert_int_equal(f->links[0].n, 1);
    assert_int_equal(f->links[2].n, 1);
    assert_non_null(json_object_get(last_msg(&f->links[1])->msg, "ns"));
    assert_null(json_object_get(last_msg(&f->links[3])->msg, "ns"));

    /* The tasks' documents say which data op they were part of. */
    int finished = 0;
    ippc_error err = {{0}, {0}};
    json_t *doc = hub_task_json(f->h, (uint64_t)task_of(&f->links[3]), &finished, &err);
    assert_non_null(doc);
    json_t *dfo = json_object_get(doc, "fanout");
    assert_int_equal(json_integer_value(json_object_get(dfo, "id")), next);
    assert_int_equal(json_integer_value(json_object_get(dfo, "root")), 1);
    json_decref(doc);
}

static void test_push_below_threshold_goes_to_each(void **state)
{
    fixture *f = fixture_new(100, 100, 100);
    *state = f;
    four(f);
    submit(f, HUB_OP_PUSH, "all", "{\"namespace\":{\"a\":[1.5,2.5]}}", NULL); /* 16 bytes */
    for (int i = 0; i < 4; i++) {
        wire_msg *w = last_msg(&f->links[i]);
        assert_null(json_object_get(w->msg, "fanout"));
        assert_int_equal(w->blobs.count, 1);
    }
    submit(f, HUB_OP_PUSH, "all", "{\"namespace\":{\"a\":[1,2,3,4,5,6,7,8,9,10,11,12,13]}}",
           NULL); /* 104 bytes */
    assert_non_null(json_object_get(last_msg(&f->links[2])->msg, "fanout"));
    assert_int_equal(last_msg(&f->links[2])->blobs.count, 0);
    /* One engine: nothing to fan out. */
    submit(f, HUB_OP_PUSH, "2", "{\"namespace\":{\"a\":[1,2,3,4,5,6,7,8,9,10,11,12,13]}}", NULL);
    assert_null(json_object_get(last_msg(&f->links[2])->msg, "fanout"));
    assert_int_equal(fanout_count(f, "push"), 1);
}

static void test_no_fanout_when_off(void **state)
{
    fixture *f = fixture_new(SIZE_MAX, SIZE_MAX, SIZE_MAX);
    *state = f;
    four(f);
    submit(f, HUB_OP_PUSH, "all", "{\"namespace\":{\"a\":[1.5,2.5]}}", NULL);
    submit(f, HUB_OP_SCATTER, "all", "{\"name\":\"s\",\"data\":[1,2,3,4]}", NULL);
    submit(f, HUB_OP_GATHER, "all", NULL, "s");
    for (int i = 0; i < 4; i++)
        for (size_t k = 0; k < f->links[i].n; k++)
            assert_null(json_object_get(f->links[i].msgs[k].msg, "fanout"));
    assert_int_equal(
        fanout_count(f, "push") + fanout_count(f, "scatter") + fanout_count(f, "gather"), 0);
}

/* --------------------------------------------------------------- scatter */

static void test_scatter_counts_and_value(void **state)
{
    fixture *f = *state;
    uint64_t id =
        submit(f, HUB_OP_SCATTER, "all", "{\"name\":\"s\",\"data\":[0,1,2,3,4,5,6,7,8,9]}", NULL);
    for (int i = 0; i < 4; i++) {
        wire_msg *w = last_msg(&f->links[i]);
        assert_string_equal(op_of(w), "scatter");
        assert_string_equal(json_string_value(json_object_get(w->msg, "name")), "s");
        expect_json(json_object_get(w->msg, "counts"), "[3,3,2,2]");
        json_int_t fid;
        json_t *fo = fanout_of(w, &fid);
        expect_json(fo, "{\"ranks\":[0,1,2,3],\"root\":0}");
        json_decref(fo);
        json_t *value = json_object_get(w->msg, "value");
        if (i == 0) {
            nd_ref ref;
            ippc_error err = {{0}, {0}};
            assert_int_equal(value_nd_ref(value, &w->blobs, &ref, &err), 1);
            assert_int_equal(ref.count, 10);
            assert_int_equal(ref.dtype, ND_INT64);
        } else {
            assert_null(value);
            assert_int_equal(w->blobs.count, 0);
        }
    }
    for (int i = 0; i < 4; i++)
        ok_result(f, i, NULL, NULL);
    json_t *a = answer(f, id, 1);
    assert_string_equal(status_of(a), "ok");
    assert_int_equal(json_array_size(json_object_get(a, "results")), 4);
    json_decref(a);
    assert_int_equal(fanout_count(f, "scatter"), 1);

    /* A JSON list, on a subset: counts over the subset, the root its lowest rank. */
    submit(f, HUB_OP_SCATTER, "1:", "{\"name\":\"j\",\"data\":[\"a\",null,true,{\"k\":1}]}", NULL);
    expect_json(json_object_get(last_msg(&f->links[1])->msg, "value"),
                "[\"a\",null,true,{\"k\":1}]");
    expect_json(json_object_get(last_msg(&f->links[3])->msg, "counts"), "[2,1,1]");
    assert_null(json_object_get(last_msg(&f->links[2])->msg, "value"));
}

/* Parts follow the targets, the collectives the ranks: targets out of rank
 * order, or a value that cannot be scattered, take the per-engine path. */
static void test_scatter_out_of_order_goes_to_each(void **state)
{
    fixture *f = *state;
    submit(f, HUB_OP_SCATTER, "::-1", "{\"name\":\"s\",\"data\":[0,1,2,3]}", NULL);
    for (int i = 0; i < 4; i++) {
        wire_msg *w = last_msg(&f->links[i]);
        assert_string_equal(op_of(w), "push");
        assert_null(json_object_get(w->msg, "fanout"));
    }
    /* A push to reversed targets is the same op everywhere: it fans out. */
    submit(f, HUB_OP_PUSH, "::-1", "{\"namespace\":{\"a\":1}}", NULL);
    assert_non_null(json_object_get(last_msg(&f->links[0])->msg, "ns"));
    assert_null(json_object_get(last_msg(&f->links[3])->msg, "ns"));
    /* A scalar cannot be scattered: the per-engine path says so. */
    json_t *b = parse("{\"name\":\"s\",\"data\":5}");
    hub_call call = {.op = HUB_OP_SCATTER, .targets = "all", .body = b};
    ippc_error err = {{0}, {0}};
    assert_int_equal(hub_submit(f->h, &call, &err), 0);
    assert_string_equal(err.code, ERR_INVALID);
    json_decref(b);
    assert_int_equal(fanout_count(f, "scatter"), 0);
}

/* ---------------------------------------------------------------- gather */

static void test_gather_answers_from_the_root(void **state)
{
    fixture *f = *state;
    uint64_t id = submit(f, HUB_OP_GATHER, "all", NULL, "g");
    json_int_t fid;
    for (int i = 0; i < 4; i++) {
        wire_msg *w = last_msg(&f->links[i]);
        assert_string_equal(op_of(w), "gather");
        assert_string_equal(json_string_value(json_object_get(w->msg, "name")), "g");
        json_t *fo = fanout_of(w, &fid);
        expect_json(fo, "{\"ranks\":[0,1,2,3],\"root\":0}");
        json_decref(fo);
    }
    for (int i = 1; i < 4; i++)
        ok_result(f, i, NULL, NULL);
    json_t *a = answer(f, id, 0);
    assert_string_equal(status_of(a), "pending");
    json_decref(a);
    ippc_blobs blobs;
    blobs_init(&blobs);
    const int64_t v[6] = {1, 2, 3, 4, 5, 6};
    json_t *skel = int64_placeholder(&blobs, v, 6);
    ok_result(f, 0, json_pack("{s:{s:o}}", "value", "g", skel), &blobs);
    a = answer(f, id, 1);
    assert_string_equal(status_of(a), "ok");
    expect_json(json_object_get(a, "result"), "[1,2,3,4,5,6]");
    json_decref(a);
    /* The raw answer is the root's bytes, held, not copied. */
    hub_array arr;
    ippc_error err = {{0}, {0}};
    assert_int_equal(hub_request_array(f->h, id, &arr, &err), 1);
    assert_int_equal(arr.len, 48);
    assert_memory_equal(arr.data, v, 48);
    assert_non_null(arr.hold_);
    assert_null(arr.owned_);
    hub_array_release(&arr);

    /* "parts" of one dtype: the raw answer is made of them. */
    id = submit(f, HUB_OP_GATHER, "1,3", NULL, "g");
    ok_result(f, 3, NULL, NULL);
    blobs_init(&blobs);
    json_t *q0 = int64_placeholder(&blobs, v, 2);
    json_t *q1 = int64_placeholder(&blobs, v + 2, 4);
    ok_result(f, 1, json_pack("{s:[o, o]}", "parts", q0, q1), &blobs);
    assert_int_equal(hub_request_array(f->h, id, &arr, &err), 1);
    assert_int_equal(arr.len, 48);
    assert_memory_equal(arr.data, v, 48);
    hub_array_release(&arr);

    /* "parts": the root's answer of values that do not make one array. */
    id = submit(f, HUB_OP_GATHER, "0,2", NULL, "g");
    ok_result(f, 2, NULL, NULL);
    blobs_init(&blobs);
    json_t *p0 = int64_placeholder(&blobs, v, 2);
    ok_result(f, 0, json_pack("{s:[o, [s, n]]}", "parts", p0, "x"), &blobs);
    a = answer(f, id, 1);
    assert_string_equal(status_of(a), "ok");
    expect_json(json_object_get(a, "result"), "[1,2,\"x\",null]");
    json_decref(a);

    /* Failures: every participant's error is listed, no result. */
    id = submit(f, HUB_OP_GATHER, "all", NULL, "g");
    for (int i = 0; i < 4; i++)
        result_from(f->h, i, task_of(&f->links[i]),
                    json_pack("{s:s, s:s, s:s, s:s}", "status", "error", "stdout", "", "ename",
                              i == 2 ? "NameError" : "FanoutError", "evalue", "x"),
                    NULL);
    a = answer(f, id, 1);
    assert_string_equal(status_of(a), "error");
    assert_true(json_is_null(json_object_get(a, "result")));
    assert_int_equal(json_array_size(json_object_get(a, "errors")), 4);
    json_decref(a);
    assert_int_equal(fanout_count(f, "gather"), 4);
}

/* A gather's size is not known before it runs: it fans out when the size the
 * hub last saw of its name (push, scatter, gather) reaches the threshold. */
static void test_gather_size_from_what_was_seen(void **state)
{
    fixture *f = fixture_new(SIZE_MAX, SIZE_MAX, 64);
    four(f);
    *state = f;
    /* Never seen: per engine. */
    uint64_t id = submit(f, HUB_OP_GATHER, "all", NULL, "s");
    assert_string_equal(op_of(last_msg(&f->links[0])), "pull");
    /* What came back (4 x 16 bytes) is its size now. */
    for (int i = 0; i < 4; i++) {
        ippc_blobs blobs;
        blobs_init(&blobs);
        const int64_t v[2] = {i, i};
        json_t *skel = int64_placeholder(&blobs, v, 2);
        ok_result(f, i, json_pack("{s:{s:o}}", "value", "s", skel), &blobs);
    }
    json_t *a = answer(f, id, 1);
    expect_json(json_object_get(a, "result"), "[0,0,1,1,2,2,3,3]");
    json_decref(a);
    submit(f, HUB_OP_GATHER, "all", NULL, "s");
    assert_string_equal(op_of(last_msg(&f->links[0])), "gather");
    /* A scatter of 4 items (32 bytes) makes it small again. */
    submit(f, HUB_OP_SCATTER, "all", "{\"name\":\"s\",\"data\":[1,2,3,4]}", NULL);
    submit(f, HUB_OP_GATHER, "all", NULL, "s");
    assert_string_equal(op_of(last_msg(&f->links[1])), "pull");
    /* A push of 16 bytes to 4 engines: 64 bytes to gather. */
    submit(f, HUB_OP_PUSH, "all", "{\"namespace\":{\"p\":[1,2]}}", NULL);
    submit(f, HUB_OP_GATHER, "all", NULL, "p");
    assert_string_equal(op_of(last_msg(&f->links[3])), "gather");
    assert_int_equal(fanout_count(f, "gather"), 2);
}

/* ------------------------------------------------------ jobs, dead engines */

static void test_jobs_and_dead_engines(void **state)
{
    fixture *f = fixture_new(0, 0, 0);
    *state = f;
    for (int r = 0; r < 2; r++)
        f->ids[r] = register_ok(f->h, &f->links[r], "jobA", r, 2);
    for (int r = 0; r < 3; r++)
        f->ids[2 + r] = register_ok(f->h, &f->links[2 + r], "jobB", r, 3);
    /* Across jobs: per engine. */
    submit(f, HUB_OP_PUSH, "all", "{\"namespace\":{\"a\":1}}", NULL);
    for (int i = 0; i < 5; i++)
        assert_null(json_object_get(last_msg(&f->links[i])->msg, "fanout"));
    /* Within one job: ranks are the job's own. */
    submit(f, HUB_OP_PUSH, "3,4", "{\"namespace\":{\"a\":1}}", NULL);
    json_int_t fid;
    json_t *fo = fanout_of(last_msg(&f->links[4]), &fid);
    expect_json(fo, "{\"ranks\":[1,2],\"root\":1}");
    json_decref(fo);
    assert_non_null(json_object_get(last_msg(&f->links[3])->msg, "ns"));
    /* A dead engine in the job (even untargeted): its MPI job may be broken. */
    hub_engine_closed(f->h, 2, "gone");
    size_t before[5];
    for (int i = 0; i < 5; i++)
        before[i] = f->links[i].n;
    submit(f, HUB_OP_PUSH, "3,4", "{\"namespace\":{\"a\":1}}", NULL);
    submit(f, HUB_OP_GATHER, "3,4", NULL, "a");
    for (int i = 3; i < 5; i++) {
        assert_int_equal(f->links[i].n, before[i] + 2);
        for (size_t k = before[i]; k < f->links[i].n; k++)
            assert_null(json_object_get(f->links[i].msgs[k].msg, "fanout"));
    }
    /* The other job still fans out. */
    submit(f, HUB_OP_GATHER, "0,1", NULL, "a");
    assert_string_equal(op_of(last_msg(&f->links[1])), "gather");
    assert_int_equal(fanout_count(f, "push"), 1);
    assert_int_equal(fanout_count(f, "gather"), 1);
}

/* -------------------------------------------------- abandoned data ops */

static int interrupts_for(fake_link *l, json_int_t task)
{
    int n = 0;
    for (size_t k = 0; k < l->n; k++) {
        json_t *m = l->msgs[k].msg;
        if (strcmp(json_string_value(json_object_get(m, "type")), "interrupt") == 0 &&
            json_integer_value(json_object_get(m, "task")) == task)
            n++;
    }
    return n;
}

/* A participant lost (its engine died) or aborted: every other one still
 * running is interrupted once (an engine waiting for it would wait forever). */
static void test_lost_participant_interrupts_the_others(void **state)
{
    fixture *f = *state;
    uint64_t id = submit(f, HUB_OP_PUSH, "all", "{\"namespace\":{\"a\":[1,2,3]}}", NULL);
    json_int_t task[4];
    for (int i = 0; i < 4; i++)
        task[i] = task_of(&f->links[i]);
    ok_result(f, 3, NULL, NULL); /* finished already: not interrupted */
    hub_engine_closed(f->h, 2, "gone");
    assert_int_equal(interrupts_for(&f->links[0], task[0]), 1);
    assert_int_equal(interrupts_for(&f->links[1], task[1]), 1);
    assert_int_equal(interrupts_for(&f->links[3], task[3]), 0);
    for (int i = 0; i < 2; i++)
        result_from(f->h, i, task[i],
                    json_pack("{s:s, s:s, s:s, s:s}", "status", "aborted", "stdout", "", "ename",
                              "Aborted", "evalue", "interrupted"),
                    NULL);
    /* No second round of interrupts for the aborted ones. */
    assert_int_equal(interrupts_for(&f->links[0], task[0]), 1);
    json_t *a = answer(f, id, 1);
    assert_string_equal(status_of(a), "error");
    json_t *r2 = json_array_get(json_object_get(a, "results"), 2);
    assert_string_equal(json_string_value(json_object_get(r2, "status")), "lost");
    json_decref(a);
}

/* An aborted participant (a client's interrupt, a forced abort) does the same. */
static void test_aborted_participant_interrupts_the_others(void **state)
{
    fixture *f = *state;
    uint64_t id = submit(f, HUB_OP_GATHER, "all", NULL, "a");
    json_int_t task[4];
    for (int i = 0; i < 4; i++)
        task[i] = task_of(&f->links[i]);
    result_from(f->h, 1, task[1],
                json_pack("{s:s, s:s, s:s, s:s}", "status", "aborted", "stdout", "", "ename",
                          "Aborted", "evalue", "interrupted"),
                NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(interrupts_for(&f->links[i], task[i]), i == 1 ? 0 : 1);
    for (int i = 0; i < 4; i++)
        if (i != 1)
            result_from(f->h, i, task[i],
                        json_pack("{s:s, s:s, s:s, s:s}", "status", "aborted", "stdout", "",
                                  "ename", "Aborted", "evalue", "interrupted on rank 1"),
                        NULL);
    json_t *a = answer(f, id, 1);
    assert_string_equal(status_of(a), "error");
    assert_int_equal(json_array_size(json_object_get(a, "errors")), 4);
    json_decref(a);
    /* A forced abort of a participant's task interrupts it by id. */
    submit(f, HUB_OP_PUSH, "0:2", "{\"namespace\":{\"a\":1}}", NULL);
    ippc_error err = {{0}, {0}};
    json_t *doc = hub_task_abort(f->h, (uint64_t)task_of(&f->links[1]), 1, &err);
    assert_non_null(doc);
    json_decref(doc);
    json_int_t t1 = json_integer_value(json_object_get(last_msg(&f->links[1])->msg, "task"));
    assert_string_equal(json_string_value(json_object_get(last_msg(&f->links[1])->msg, "type")),
                        "interrupt");
    result_from(f->h, 1, t1, json_pack("{s:s, s:s}", "status", "aborted", "stdout", ""), NULL);
    assert_string_equal(json_string_value(json_object_get(last_msg(&f->links[0])->msg, "type")),
                        "interrupt");
}

/* A participant that cannot be sent its task: the ones sent are interrupted,
 * the ones not sent yet are not sent. */
static void test_unsendable_participant(void **state)
{
    fixture *f = *state;
    f->links[1].fail_send = 1;
    uint64_t id = submit(f, HUB_OP_PUSH, "all", "{\"namespace\":{\"a\":[1,2,3]}}", NULL);
    f->links[1].fail_send = 0;
    assert_int_equal(f->links[0].n, 2); /* its task, then the interrupt */
    json_int_t t0 = json_integer_value(json_object_get(f->links[0].msgs[0].msg, "task"));
    assert_int_equal(interrupts_for(&f->links[0], t0), 1);
    assert_int_equal(f->links[1].n, 0);
    assert_int_equal(f->links[2].n, 0);
    assert_int_equal(f->links[3].n, 0);
    json_t *a = answer(f, id, 0);
    json_decref(a);
    result_from(f->h, 0, t0, json_pack("{s:s, s:s}", "status", "aborted", "stdout", ""), NULL);
    a = answer(f, id, 1);
    assert_string_equal(status_of(a), "error");
    json_t *results = json_object_get(a, "results");
    assert_string_equal(json_string_value(json_object_get(json_array_get(results, 1), "status")),
                        "lost");
    json_t *r3 = json_array_get(results, 3);
    assert_string_equal(json_string_value(json_object_get(r3, "ename")), "FanoutError");
    json_decref(a);
}

/* Registers rank of job (size ranks) on link l, saying it takes at most max
 * bytes in one message. */
static int register_max(fixture *f, fake_link *l, const char *job, int rank, int size,
                        json_int_t max)
{
    json_t *msg = register_msg(FAKE_ENGINE_KEY, job, rank, size);
    json_object_set_new(msg, "max_message", json_integer(max));
    hub_engine_link link = link_of(l);
    int id = -1;
    ippc_error err = {{0}, {0}};
    assert_int_equal(hub_engine_register(f->h, msg, &link, &id, &err), 0);
    json_decref(msg);
    return id;
}

/* The root's task carries all the data: a root that would refuse it makes
 * the op go per engine (each part judged on its own); a participant whose
 * task is refused unsent makes the others stop. */
static void test_message_limits(void **state)
{
    fixture *f = fixture_new(0, 0, 0);
    *state = f;
    register_max(f, &f->links[0], "jobM", 0, 3, 5000);
    register_max(f, &f->links[1], "jobM", 1, 3, 1 << 20);
    register_max(f, &f->links[2], "jobM", 2, 3, 1 << 20);
    register_max(f, &f->links[3], "jobN", 0, 2, 1 << 20);
    register_max(f, &f->links[4], "jobN", 1, 2, 100);
    /* 1000 int64 (8000 bytes) pushed: too large for engine 0, the root. */
    char body[8192] = "{\"namespace\":{\"a\":[";
    for (int i = 0; i < 1000; i++)
        snprintf(body + strlen(body), sizeof body - strlen(body), "%s%d", i ? "," : "", i);
    strcat(body, "]}}");
    uint64_t id = submit(f, HUB_OP_PUSH, "0:3", body, NULL);
    assert_int_equal(f->links[0].n, 0);
    for (int i = 1; i < 3; i++) {
        assert_null(json_object_get(last_msg(&f->links[i])->msg, "fanout"));
        ok_result(f, i, NULL, NULL);
    }
    json_t *a = answer(f, id, 1);
    json_t *r0 = json_array_get(json_object_get(a, "results"), 0);
    assert_string_equal(json_string_value(json_object_get(r0, "ename")), "TooLargeError");
    json_decref(a);
    /* A scatter of them: the root would get all; per engine, engine 0's part
     * (334 items) fits. */
    char sbody[8192] = "{\"name\":\"s\",\"data\":[";
    for (int i = 0; i < 1000; i++)
        snprintf(sbody + strlen(sbody), sizeof sbody - strlen(sbody), "%s%d", i ? "," : "", i);
    strcat(sbody, "]}");
    submit(f, HUB_OP_SCATTER, "0:3", sbody, NULL);
    assert_string_equal(op_of(last_msg(&f->links[0])), "push");
    assert_int_equal(fanout_count(f, "push") + fanout_count(f, "scatter"), 0);
    /* Engines 1 and 2 (root 1 takes it): fanned out. */
    submit(f, HUB_OP_PUSH, "1,2", body, NULL);
    assert_non_null(json_object_get(last_msg(&f->links[2])->msg, "fanout"));
    assert_int_equal(fanout_count(f, "push"), 1);
    /* Engine 4 refuses even its data-less gather task (100 bytes): it fails
     * unsent, and the root's task, sent already, is interrupted. */
    id = submit(f, HUB_OP_GATHER, "3,4", NULL, "g");
    assert_int_equal(f->links[4].n, 0);
    assert_int_equal(f->links[3].n, 2);
    json_int_t t3 = json_integer_value(json_object_get(f->links[3].msgs[0].msg, "task"));
    assert_int_equal(interrupts_for(&f->links[3], t3), 1);
    result_from(f->h, 3, t3, json_pack("{s:s, s:s}", "status", "aborted", "stdout", ""), NULL);
    a = answer(f, id, 1);
    assert_string_equal(status_of(a), "error");
    json_decref(a);
}

/* A gather whose whole array would not fit in one message to the
 * controller stays per engine (each part is its own message). */
static void test_gather_bigger_than_a_message(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    *state = f;
    hub_config cfg = {.engine_key = FAKE_ENGINE_KEY,
                      .profile = "default",
                      .url = "http://127.0.0.1:1",
                      .ws_url = "ws://127.0.0.1:1/engine",
                      .fanout = 1,
                      .engine_message_max = 8192};
    f->h = hub_new(&cfg);
    assert_non_null(f->h);
    four(f);
    /* 3,000 bytes scattered, then gathered: fans out. */
    char body[8192] = "{\"name\":\"s\",\"data\":[";
    for (int i = 0; i < 375; i++)
        snprintf(body + strlen(body), sizeof body - strlen(body), "%s%d", i ? "," : "", i);
    strcat(body, "]}");
    submit(f, HUB_OP_SCATTER, "all", body, NULL);
    submit(f, HUB_OP_GATHER, "all", NULL, "s");
    assert_string_equal(op_of(last_msg(&f->links[0])), "gather");
    /* 3,000 bytes pushed to 4: 12,000 to gather, more than 8 KiB. */
    char pbody[8192] = "{\"namespace\":{\"p\":[";
    for (int i = 0; i < 375; i++)
        snprintf(pbody + strlen(pbody), sizeof pbody - strlen(pbody), "%s%d", i ? "," : "", i);
    strcat(pbody, "]}}");
    submit(f, HUB_OP_PUSH, "all", pbody, NULL);
    submit(f, HUB_OP_GATHER, "all", NULL, "p");
    assert_string_equal(op_of(last_msg(&f->links[0])), "pull");
}

int main(void)
{
#define T(fn, setup) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_push_goes_to_the_root_once, setup_always),
        cmocka_unit_test_teardown(test_push_below_threshold_goes_to_each, teardown),
        cmocka_unit_test_teardown(test_no_fanout_when_off, teardown),
        T(test_scatter_counts_and_value, setup_always),
        T(test_scatter_out_of_order_goes_to_each, setup_always),
        T(test_gather_answers_from_the_root, setup_always),
        cmocka_unit_test_teardown(test_gather_size_from_what_was_seen, teardown),
        cmocka_unit_test_teardown(test_jobs_and_dead_engines, teardown),
        T(test_lost_participant_interrupts_the_others, setup_always),
        T(test_aborted_participant_interrupts_the_others, setup_always),
        T(test_unsendable_participant, setup_always),
        cmocka_unit_test_teardown(test_message_limits, teardown),
        cmocka_unit_test_teardown(test_gather_bigger_than_a_message, teardown),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
