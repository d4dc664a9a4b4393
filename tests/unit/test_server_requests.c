/* test_server_requests.c — server/requests.c with a real task table and
 * registry (fake engine links): a direct-view request's tasks are direct
 * task records it holds; views taken under the lock render later, even
 * after the request finished or was forgotten; forgotten requests release
 * their tasks to the table; map requests answer from their chunk tasks;
 * what is kept stays within the byte budget, oldest finished first, counted
 * byte for byte; pinned requests wait for their answer; forgotten ids say
 * why (410 gone); raw answers hold the engine's bytes, never a copy. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "registry.h"
#include "requests.h"
#include "task_table.h"
#include "fake_engines.h"

typedef struct fixture {
    registry reg;
    task_table tt;
    requests rq;
    fake_link links[2];
    int woken;
} fixture;

static void on_finished(void *ctx, task *t)
{
    fixture *f = ctx;
    if (t->request_id)
        requests_task_finished(&f->rq, t);
}

static int setup_kept(void **state, size_t kept)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    registry_init(&f->reg);
    task_table_init(&f->tt, &f->reg, NULL, NULL, 100);
    f->tt.finished = on_finished;
    f->tt.ctx = f;
    requests_init(&f->rq, &f->tt, &f->reg, kept, 0);
    for (int rank = 0; rank < 2; rank++) {
        json_t *msg = register_msg(FAKE_ENGINE_KEY, "job", rank, 2);
        hub_engine_link link = link_of(&f->links[rank]);
        ippc_error err = {{0}, {0}};
        assert_non_null(registry_register(&f->reg, msg, FAKE_ENGINE_KEY, &link, 0, &err));
        json_decref(msg);
    }
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_kept(state, 10);
}

static int setup_kept1(void **state)
{
    return setup_kept(state, 1);
}

static int teardown(void **state)
{
    fixture *f = *state;
    requests_free(&f->rq);
    task_table_free(&f->tt);
    registry_free(&f->reg);
    for (int i = 0; i < 2; i++)
        link_clear(&f->links[i]);
    free(f);
    return 0;
}

static uint64_t submit(fixture *f, hub_op op, const char *body_text, const char *name)
{
    json_t *body = json_loads(body_text, 0, NULL);
    hub_call c = {.op = op, .targets = "all", .body = body, .name = name};
    ippc_error err = {{0}, {0}};
    codec_msg *m = codec_view_call(&c, &err);
    assert_non_null(m);
    const int targets[2] = {0, 1};
    uint64_t id = requests_submit(&f->rq, &c, targets, 2, &m, 1, NULL, &err);
    assert_true(id > 0);
    codec_msg_unref(m);
    json_decref(body);
    return id;
}

/* Engine e answers the last task it got with status and value (may be NULL). */
static void answer(fixture *f, int e, json_t *value)
{
    fake_link *l = &f->links[e];
    uint64_t id = (uint64_t)json_integer_value(json_object_get(l->msgs[l->n - 1].msg, "task"));
    task *t = task_table_get(&f->tt, id);
    assert_non_null(t);
    json_t *msg = json_pack("{s:s, s:s, s:s}", "type", "result", "status", "ok", "stdout", "o");
    if (value)
        json_object_set_new(msg, "value", value);
    task_complete(&f->tt, t, msg, NULL);
}

static json_t *render(request_view *v, int want_done)
{
    assert_int_equal(request_view_done(v), want_done);
    return request_view_json(v, -1);
}

static void on_wake(void *arg)
{
    (*(int *)arg)++;
}

static void test_direct_request(void **state)
{
    fixture *f = *state;
    uint64_t id = submit(f, HUB_OP_EXECUTE, "{\"code\": \"return 1\"}", NULL);
    request *r = requests_get(&f->rq, id);
    assert_int_equal(r->ntasks, 2);
    for (int i = 0; i < 2; i++) {
        task *t = r->tasks[i];
        assert_int_equal(t->kind, TASK_DIRECT);
        assert_int_equal(t->state, TASK_RUNNING);
        assert_int_equal(t->engine, i);
        assert_true(t->held);
        assert_int_equal(t->request_id, id);
        assert_int_equal(f->links[i].n, 1);
    }
    assert_int_equal(requests_wait(&f->rq, id, 0, on_wake, NULL, &f->woken), 0);
    ippc_error err = {{0}, {0}};
    request_view *pending = requests_view(&f->rq, id, &err);
    answer(f, 1, json_integer(11));
    answer(f, 0, json_integer(10));
    assert_int_equal(f->woken, 1);
    assert_true(request_done(r));
    assert_int_equal(r->done_order[0], 1);
    /* The view taken before still shows what was true then. */
    json_t *a = render(pending, 0);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "pending");
    json_decref(a);
    request_view_free(pending);
    request_view *done = requests_view(&f->rq, id, &err);
    a = render(done, 1);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "ok");
    json_t *r0 = json_array_get(json_object_get(a, "results"), 0);
    assert_int_equal(json_integer_value(json_object_get(r0, "value")), 10);
    json_decref(a);
    request_view_free(done);
    assert_int_equal(requests_wait(&f->rq, id, 0, on_wake, NULL, &f->woken), 1);
    assert_null(requests_view(&f->rq, id + 1, &err));
    assert_string_equal(err.code, ERR_NOT_FOUND);
}

/* A view holds its results: it renders after its request is forgotten; the
 * forgotten request's tasks stay in the table, released, outcome only. */
static void test_view_outlives_request(void **state)
{
    fixture *f = *state; /* max_kept 1 */
    uint64_t first = submit(f, HUB_OP_PULL, "{}", "a");
    answer(f, 0, json_pack("{s:i}", "a", 1));
    answer(f, 1, json_pack("{s:i}", "a", 2));
    ippc_error err = {{0}, {0}};
    request_view *v = requests_view(&f->rq, first, &err);
    uint64_t task0 = requests_get(&f->rq, first)->tasks[0]->id;
    uint64_t second = submit(f, HUB_OP_EXECUTE, "{\"code\": \"x\"}", NULL);
    answer(f, 0, NULL);
    answer(f, 1, NULL);
    assert_non_null(requests_get(&f->rq, first)); /* until the trim */
    requests_trim(&f->rq);
    assert_null(requests_get(&f->rq, first));
    assert_null(requests_view(&f->rq, first, &err));
    assert_string_equal(err.code, ERR_GONE);
    assert_non_null(strstr(err.message, "last 1 finished"));
    assert_non_null(requests_get(&f->rq, second));
    json_t *a = render(v, 1);
    json_t *want = json_pack("[i, i]", 1, 2);
    assert_true(json_equal(json_object_get(a, "results"), want));
    json_decref(want);
    json_decref(a);
    request_view_free(v);
    task *t = task_table_get(&f->tt, task0);
    assert_non_null(t);
    assert_false(t->held);
    assert_int_equal(t->list, TASK_LIST_FINISHED);
    assert_null(json_object_get(t->result->msg, "value"));
}

/* A pull of one target answered by engine 0 with an int64 array of n
 * elements 0, 1, ... (or, as_list, a JSON list); the request id. */
static uint64_t pull_array(fixture *f, const char *name, size_t n, int as_list, int blocking)
{
    json_t *body = json_object();
    hub_call c = {
        .op = HUB_OP_PULL, .targets = "0", .body = body, .name = name, .blocking = blocking};
    ippc_error err = {{0}, {0}};
    codec_msg *m = codec_view_call(&c, &err);
    const int target = 0;
    uint64_t id = requests_submit(&f->rq, &c, &target, 1, &m, 1, NULL, &err);
    assert_true(id > 0);
    codec_msg_unref(m);
    json_decref(body);
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *value;
    if (as_list) {
        value = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(value, json_integer((json_int_t)i));
    } else {
        int64_t *data = malloc(n * sizeof *data);
        for (size_t i = 0; i < n; i++)
            data[i] = (int64_t)i;
        blobs_push(&blobs, (unsigned char *)data, n * sizeof *data);
        value = value_nd_placeholder(ND_INT64, 1, (size_t[]){n}, 0);
    }
    task *t = requests_get(&f->rq, id)->tasks[0];
    task_complete(
        &f->tt, t,
        json_pack("{s:s, s:s, s:{s:o}}", "type", "result", "status", "ok", "value", name, value),
        &blobs);
    return id;
}

/* The one array of a pull of one target: the view points into the engine's
 * result blob (no copy) and holds it after the request is gone. */
static void test_view_array(void **state)
{
    fixture *f = *state;
    uint64_t id = pull_array(f, "a", 2, 0, 0);
    const unsigned char *blob = requests_get(&f->rq, id)->tasks[0]->result->blobs.items[0].data;
    ippc_error err = {{0}, {0}};
    request_view *v = requests_view(&f->rq, id, &err);
    request_array a;
    assert_int_equal(request_view_array(v, &a, &err), 0);
    request_view_free(v);
    assert_int_equal(a.len, 16);
    assert_ptr_equal(a.data, blob); /* the engine's bytes themselves */
    assert_int_equal(a.ref.dtype, ND_INT64);
    assert_non_null(a.hold);
    /* The request is forgotten and its task keeps its outcome only: the
     * bytes live on in the answer's reference. */
    f->rq.max_kept = 1;
    pull_array(f, "b", 1, 0, 0);
    requests_trim(&f->rq);
    assert_null(requests_get(&f->rq, id));
    assert_int_equal(((const int64_t *)a.data)[1], 1);
    request_array_release(&a);
    assert_null(a.hold);

    /* Not an array: a clear error, nothing held. */
    uint64_t listed = pull_array(f, "l", 3, 1, 0);
    v = requests_view(&f->rq, listed, &err);
    assert_int_equal(request_view_array(v, &a, &err), -1);
    assert_string_equal(err.code, ERR_INVALID);
    assert_null(a.hold);
    request_view_free(v);
}

/* A pull's multipart parts: an array part points into the engine's result
 * blob (no copy) and holds it; a value that is not an array is its client
 * JSON text; a failure on any engine, or an op that is not a pull, is a
 * clear error with nothing held. */
static void test_view_parts(void **state)
{
    fixture *f = *state;
    uint64_t id = submit(f, HUB_OP_PULL, "{}", "p");
    ippc_blobs blobs;
    blobs_init(&blobs);
    int32_t *data = malloc(3 * sizeof *data);
    for (int i = 0; i < 3; i++)
        data[i] = 7 * i;
    blobs_push(&blobs, (unsigned char *)data, 3 * sizeof *data);
    task_complete(&f->tt, requests_get(&f->rq, id)->tasks[0],
                  json_pack("{s:s, s:s, s:{s:o}}", "type", "result", "status", "ok", "value", "p",
                            value_nd_placeholder(ND_INT32, 1, (size_t[]){3}, 0)),
                  &blobs);
    answer(f, 1, json_pack("{s:[s, i]}", "p", "x", 1));
    ippc_error err = {{0}, {0}};
    request_view *v = requests_view(&f->rq, id, &err);
    request_part *parts = NULL;
    size_t n = 0;
    assert_int_equal(request_view_parts(v, &parts, &n, &err), 0);
    request_view_free(v);
    assert_int_equal(n, 2);
    assert_int_equal(parts[0].engine, 0);
    assert_true(parts[0].is_array);
    assert_ptr_equal(parts[0].data, (const unsigned char *)data); /* the engine's bytes */
    assert_int_equal(parts[0].len, 12);
    assert_int_equal(parts[0].ref.dtype, ND_INT32);
    assert_non_null(parts[0].hold);
    assert_int_equal(parts[1].engine, 1);
    assert_false(parts[1].is_array);
    assert_null(parts[1].hold);
    assert_int_equal(parts[1].len, strlen("[\"x\",1]"));
    assert_memory_equal(parts[1].data, "[\"x\",1]", parts[1].len);
    /* The request forgotten, the bytes live on in the parts' references. */
    f->rq.max_kept = 1;
    submit(f, HUB_OP_EXECUTE, "{\"code\": \"x\"}", NULL);
    answer(f, 0, NULL);
    answer(f, 1, NULL);
    requests_trim(&f->rq);
    assert_null(requests_get(&f->rq, id));
    assert_int_equal(((const int32_t *)parts[0].data)[2], 14);
    request_parts_free(parts, n);

    /* A failure on engine 1: the error names it. */
    uint64_t failed = submit(f, HUB_OP_PULL, "{}", "q");
    answer(f, 0, json_pack("{s:i}", "q", 1));
    fake_link *l = &f->links[1];
    task *t = task_table_get(
        &f->tt, (uint64_t)json_integer_value(json_object_get(l->msgs[l->n - 1].msg, "task")));
    task_complete(&f->tt, t,
                  json_pack("{s:s, s:s, s:s, s:s}", "type", "result", "status", "error", "ename",
                            "NameError", "evalue", "name 'q' is not defined"),
                  NULL);
    v = requests_view(&f->rq, failed, &err);
    assert_int_equal(request_view_parts(v, &parts, &n, &err), -1);
    assert_string_equal(err.code, ERR_INVALID);
    assert_non_null(strstr(err.message, "engine 1"));
    assert_null(parts);
    request_view_free(v);

    /* Not a pull. */
    uint64_t executed = submit(f, HUB_OP_EXECUTE, "{\"code\": \"x\"}", NULL);
    answer(f, 0, NULL);
    answer(f, 1, NULL);
    v = requests_view(&f->rq, executed, &err);
    assert_int_equal(request_view_parts(v, &parts, &n, &err), -1);
    assert_string_equal(err.code, ERR_INVALID);
    request_view_free(v);
}

/* A gather's parts become one buffer the answer owns; parts that are not
 * arrays are refused before any list is built. */
static void test_view_array_gather(void **state)
{
    fixture *f = *state;
    json_t *body = json_object();
    hub_call c = {.op = HUB_OP_GATHER, .targets = "all", .body = body, .name = "g"};
    ippc_error err = {{0}, {0}};
    codec_msg *m = codec_view_call(&c, &err);
    const int targets[2] = {0, 1};
    uint64_t id = requests_submit(&f->rq, &c, targets, 2, &m, 1, NULL, &err);
    codec_msg_unref(m);
    json_decref(body);
    for (int e = 0; e < 2; e++) {
        ippc_blobs blobs;
        blobs_init(&blobs);
        double *d = malloc(3 * sizeof *d);
        for (int i = 0; i < 3; i++)
            d[i] = 10.0 * e + i;
        blobs_push(&blobs, (unsigned char *)d, 3 * sizeof *d);
        task *t = requests_get(&f->rq, id)->tasks[e];
        task_complete(&f->tt, t,
                      json_pack("{s:s, s:s, s:{s:o}}", "type", "result", "status", "ok", "value",
                                "g", value_nd_placeholder(ND_FLOAT64, 1, (size_t[]){3}, 0)),
                      &blobs);
    }
    request_view *v = requests_view(&f->rq, id, &err);
    request_array a;
    assert_int_equal(request_view_array(v, &a, &err), 0);
    request_view_free(v);
    assert_int_equal(a.len, 6 * sizeof(double));
    assert_int_equal(a.ref.shape[0], 6);
    assert_ptr_equal(a.data, a.owned);
    assert_null(a.hold);
    double d[6];
    memcpy(d, a.data, sizeof d);
    assert_true(d[0] == 0.0 && d[2] == 2.0 && d[3] == 10.0 && d[5] == 12.0);
    request_array_release(&a);
}

/* The budget counts every result byte (blobs + the JSON estimate), and
 * evicts the oldest finished first — requests and unheld tasks alike —
 * until what is kept fits; pinned requests stay. */
static void test_byte_budget_order(void **state)
{
    fixture *f = *state;
    assert_int_equal(f->tt.result_bytes, 0);
    uint64_t a = pull_array(f, "a", 1000, 0, 0); /* 8000 bytes of array */
    task_result *ra = requests_get(&f->rq, a)->tasks[0]->result;
    assert_true(ra->bytes >= 8000 + json_bytes_estimate(ra->msg));
    assert_int_equal(f->tt.result_bytes, ra->bytes);
    size_t one = ra->bytes;
    /* A balanced task finished after a, before b: unheld, in the table only. */
    ippc_error err = {{0}, {0}};
    task *lb = task_new(TASK_BALANCED, json_object(), codec_execute("x", &err));
    assert_int_equal(task_add(&f->tt, lb, TASK_PENDING, 0, 0, 0), 0);
    task_start(&f->tt, lb, registry_get(&f->reg, 1));
    ippc_blobs blobs;
    blobs_init(&blobs);
    blobs_push(&blobs, calloc(1, 8000), 8000);
    task_complete(&f->tt, lb,
                  json_pack("{s:s, s:s, s:o}", "type", "result", "status", "ok", "value",
                            value_nd_placeholder(ND_UINT8, 1, (size_t[]){8000}, 0)),
                  &blobs);
    uint64_t lb_id = lb->id;
    size_t lb_bytes = lb->result->bytes;
    uint64_t b = pull_array(f, "b", 1000, 0, 0);
    uint64_t c = pull_array(f, "c", 1000, 0, 1); /* blocking: pinned */
    assert_int_equal(f->tt.result_bytes, 3 * one + lb_bytes);
    requests_trim(&f->rq); /* no bound: nothing goes */
    assert_non_null(requests_get(&f->rq, a));

    /* Room for about two arrays: a goes first, then the balanced task;
     * b fits; c is pinned. */
    f->rq.keep_bytes = 2 * one + one / 2;
    requests_trim(&f->rq);
    assert_null(requests_get(&f->rq, a));
    assert_null(task_table_get(&f->tt, lb_id));
    assert_non_null(requests_get(&f->rq, b));
    assert_non_null(requests_get(&f->rq, c));
    assert_true(f->tt.result_bytes <= f->rq.keep_bytes);
    assert_int_equal(f->rq.gone_total[GONE_BYTES], 1);
    assert_null(requests_view(&f->rq, a, &err));
    assert_string_equal(err.code, ERR_GONE);
    assert_non_null(strstr(err.message, "--keep-results-mb"));

    /* Room for less than one: b goes, the pinned c stays over the bound. */
    f->rq.keep_bytes = one / 2;
    requests_trim(&f->rq);
    assert_null(requests_get(&f->rq, b));
    assert_non_null(requests_get(&f->rq, c));
    /* Its caller answers it (the finished answer): a blocking pull is
     * released at once, whatever the budget. */
    f->rq.keep_bytes = SIZE_MAX;
    requests_answered(&f->rq, c, 1);
    assert_null(requests_get(&f->rq, c));
    assert_null(requests_view(&f->rq, c, &err));
    assert_string_equal(err.code, ERR_GONE);
    assert_non_null(strstr(err.message, "delivered"));
    assert_int_equal(f->rq.gone_total[GONE_DELIVERED], 1);
    /* What is left: the released direct tasks' outcomes, a few hundred
     * bytes each, and nothing of the arrays. */
    assert_true(f->tt.result_bytes < (size_t)3 * 1024);
    size_t n = 0;
    task_result **dropped = task_table_take_dropped(&f->tt, &n);
    assert_true(n >= 4); /* a, b, c's results and the balanced task's */
    task_results_drop(dropped, n);

    /* Unknown ids stay 404. */
    assert_null(requests_view(&f->rq, f->rq.next_id, &err));
    assert_string_equal(err.code, ERR_NOT_FOUND);
}

/* A blocking call answered "pending" (its timeout) becomes one to fetch
 * later: answered finished by GET /requests, it is kept; the pin of a
 * waiter lapses PIN_GRACE_MS after the request finished. */
static void test_pins(void **state)
{
    fixture *f = *state;
    uint64_t id = pull_array(f, "a", 10, 0, 1);
    requests_answered(&f->rq, id, 0); /* the caller got 202 */
    requests_answered(&f->rq, id, 1); /* later, GET /requests answered it */
    assert_non_null(requests_get(&f->rq, id));
    f->rq.keep_bytes = 1;
    assert_int_equal(requests_wait(&f->rq, id, 0, on_wake, NULL, &f->woken), 1);
    requests_trim(&f->rq);
    assert_non_null(requests_get(&f->rq, id));  /* pinned by the wait */
    requests_get(&f->rq, id)->pin_until_ms = 1; /* a minute passed */
    requests_trim(&f->rq);
    assert_null(requests_get(&f->rq, id));
}

/* An int64 array [5, 6] in new blobs, and its skeleton. */
static json_t *int64_pair(ippc_blobs *blobs)
{
    blobs_init(blobs);
    int64_t *data = malloc(16);
    data[0] = 5;
    data[1] = 6;
    blobs_push(blobs, (unsigned char *)data, 16);
    return value_nd_placeholder(ND_INT64, 1, (size_t[]){2}, 0);
}

static int is_typed(const json_t *v)
{
    return json_is_object(v) && json_object_get(v, "dtype") != NULL;
}

/* A view renders in the format asked for (fmt < 0: its call's): a pull's
 * values and a map's results alike. */
static void test_view_format(void **state)
{
    fixture *f = *state;
    json_t *body = json_object();
    hub_call c = {
        .op = HUB_OP_PULL, .targets = "0", .body = body, .name = "a", .format = VALUE_FORMAT_TYPED};
    ippc_error err = {{0}, {0}};
    codec_msg *m = codec_view_call(&c, &err);
    const int target = 0;
    uint64_t id = requests_submit(&f->rq, &c, &target, 1, &m, 1, NULL, &err);
    codec_msg_unref(m);
    json_decref(body);
    ippc_blobs blobs;
    json_t *skel = int64_pair(&blobs);
    task_complete(
        &f->tt, requests_get(&f->rq, id)->tasks[0],
        json_pack("{s:s, s:s, s:{s:o}}", "type", "result", "status", "ok", "value", "a", skel),
        &blobs);
    request_view *v = requests_view(&f->rq, id, &err);
    json_t *own = request_view_json(v, -1), *list = request_view_json(v, VALUE_FORMAT_LIST);
    assert_true(is_typed(json_array_get(json_object_get(own, "results"), 0)));
    json_t *want = json_pack("[[i, i]]", 5, 6);
    assert_true(json_equal(json_object_get(list, "results"), want));
    json_decref(own);
    json_decref(list);
    request_view_free(v);

    request *r = requests_open_map(&f->rq, 1, 1, 1, 1);
    assert_non_null(r);
    task *t = task_new(TASK_BALANCED, json_object(), codec_execute("x", &err));
    assert_int_equal(task_add(&f->tt, t, TASK_WAITING, r->id, 0, 1), 0);
    requests_attach(r, 0, t);
    task_ready(&f->tt, t);
    task_start(&f->tt, t, registry_get(&f->reg, 1));
    requests_attached(&f->rq, r, 1);
    skel = int64_pair(&blobs);
    task_complete(&f->tt, t,
                  json_pack("{s:s, s:s, s:[o]}", "type", "result", "status", "ok", "value", skel),
                  &blobs);
    v = requests_view(&f->rq, r->id, &err);
    own = request_view_json(v, -1);
    json_t *typed = request_view_json(v, VALUE_FORMAT_TYPED);
    assert_true(json_equal(json_object_get(own, "results"), want)); /* a map's own: list */
    assert_true(is_typed(json_array_get(json_object_get(typed, "results"), 0)));
    json_decref(own);
    json_decref(typed);
    json_decref(want);
    request_view_free(v);
}

/* A map over chunk tasks added by their owner: answers in input order or
 * completion order. */
static void test_map_request(void **state)
{
    fixture *f = *state;
    for (int ordered = 1; ordered >= 0; ordered--) {
        request *r = requests_open_map(&f->rq, 2, ordered, 2, 1);
        assert_non_null(r);
        uint64_t id = r->id;
        for (size_t c = 0; c < 2; c++) {
            ippc_error err = {{0}, {0}};
            task *t = task_new(TASK_BALANCED, json_object(), codec_execute("x", &err));
            assert_int_equal(task_add(&f->tt, t, TASK_WAITING, r->id, c, 1), 0);
            requests_attach(r, c, t);
            task_ready(&f->tt, t);
            task_start(&f->tt, t, registry_get(&f->reg, (int)c));
        }
        requests_attached(&f->rq, r, 2);
        answer(f, 1, json_pack("[s]", "b"));
        answer(f, 0, json_pack("[s]", "a"));
        ippc_error err = {{0}, {0}};
        request_view *v = requests_view(&f->rq, id, &err);
        json_t *a = render(v, 1);
        json_t *want = ordered ? json_pack("[s, s]", "a", "b") : json_pack("[s, s]", "b", "a");
        assert_true(json_equal(json_object_get(a, "results"), want));
        assert_int_equal(json_array_size(json_object_get(a, "tasks")), 2);
        json_decref(want);
        json_decref(a);
        request_view_free(v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_direct_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_outlives_request, setup_kept1, teardown),
        cmocka_unit_test_setup_teardown(test_view_array, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_array_gather, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_budget_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_format, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
