/* test_server_task_table.c — server/task_table.c on its own: the legal and
 * illegal transitions of the task state machine, what each transition does
 * (engine counters, times, events-free bookkeeping, the finished hook), held
 * tasks and eviction, shared immutable results, and the store records of
 * both kinds of task (memory SQLite).
 *
 * The engines are a real registry (server/registry.c) whose links are the
 * fake engines of fake_engines.h, so a started task's message is checked as
 * an engine would receive it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "engine_codec.h"
#include "registry.h"
#include "store.h"
#include "task_table.h"
#include "fake_engines.h"

typedef struct fixture {
    registry reg;
    task_table tt;
    store *st;
    fake_link links[2];
    task *finished[16];
    size_t n_finished;
} fixture;

static void on_finished(void *ctx, task *t)
{
    fixture *f = ctx;
    assert_true(f->n_finished < 16);
    f->finished[f->n_finished++] = t;
}

static engine *add_engine(fixture *f, int rank)
{
    json_t *msg = register_msg(FAKE_ENGINE_KEY, "job", rank, 2);
    hub_engine_link link = link_of(&f->links[rank]);
    ippc_error err = {{0}, {0}};
    engine *e = registry_register(&f->reg, msg, FAKE_ENGINE_KEY, &link, clock_now_ms(), &err);
    json_decref(msg);
    assert_non_null(e);
    return e;
}

static int setup_with(void **state, int with_store, size_t keep)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    registry_init(&f->reg);
    if (with_store) {
        ippc_error err = {{0}, {0}};
        f->st = store_open("memory", NULL, &err);
        assert_non_null(f->st);
    }
    task_table_init(&f->tt, &f->reg, f->st, NULL, keep);
    f->tt.finished = on_finished;
    f->tt.ctx = f;
    add_engine(f, 0);
    add_engine(f, 1);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, 0, 100);
}

static int setup_store(void **state)
{
    return setup_with(state, 1, 100);
}

static int setup_keep2(void **state)
{
    return setup_with(state, 0, 2);
}

static int teardown(void **state)
{
    fixture *f = *state;
    task_saves_commit(f->st, task_table_take_saves(&f->tt));
    task_table_free(&f->tt);
    registry_free(&f->reg);
    if (f->st)
        store_close(f->st);
    for (int i = 0; i < 2; i++)
        link_clear(&f->links[i]);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static task *direct_task(fixture *f, int engine_id, uint64_t request, size_t index)
{
    ippc_error err = {{0}, {0}};
    task *t = task_new(TASK_DIRECT, json_pack("{s:s, s:s}", "op", "execute", "code", "x = 1"),
                       codec_execute("x = 1", &err));
    assert_non_null(t);
    t->engine = engine_id;
    assert_int_equal(task_add(&f->tt, t, TASK_PENDING, request, index, 1), 0);
    return t;
}

static task *balanced_task(fixture *f, const char *code)
{
    ippc_error err = {{0}, {0}};
    task *t = task_new(TASK_BALANCED, json_pack("{s:s, s:[s]}", "code", code, "tags", "tag"),
                       codec_execute(code, &err));
    assert_non_null(t);
    assert_int_equal(task_add(&f->tt, t, TASK_WAITING, 0, 0, 0), 0);
    return t;
}

static void reply(fixture *f, task *t, const char *status, json_t *value)
{
    json_t *msg = json_pack("{s:s, s:I, s:s, s:s}", "type", "result", "task", (json_int_t)t->id,
                            "status", status, "stdout", "out");
    if (value)
        json_object_set_new(msg, "value", value);
    if (strcmp(status, "ok") != 0) {
        json_object_set_new(msg, "ename", json_string("E"));
        json_object_set_new(msg, "evalue", json_string("v"));
    }
    (void)f;
    task_complete(&f->tt, t, msg, NULL);
}

static engine *eng(fixture *f, int id)
{
    engine *e = registry_get(&f->reg, id);
    assert_non_null(e);
    return e;
}

/* ----------------------------------------------------------- the machine */

/* Every (kind, from, to): legal exactly when the diagram in task_table.h
 * says so; finished states have no way out. */
static void test_transitions(void **state)
{
    (void)state;
    enum {
        W = TASK_WAITING,
        P = TASK_PENDING,
        R = TASK_RUNNING,
        C = TASK_COMPLETED,
        F = TASK_FAILED,
        A = TASK_ABORTED,
        L = TASK_LOST
    };
    static const int direct[][2] = {{P, R}, {P, F}, {R, C}, {R, F}, {R, A}, {R, L}};
    static const int balanced[][2] = {{W, P}, {W, F}, {W, A}, {P, R}, {P, F}, {P, A},
                                      {R, C}, {R, F}, {R, A}, {R, L}, {R, P}};
    for (int kind = 0; kind < TASK_NKINDS; kind++) {
        const int(*legal)[2] = kind == TASK_DIRECT ? direct : balanced;
        size_t n = kind == TASK_DIRECT ? sizeof direct / sizeof *direct
                                       : sizeof balanced / sizeof *balanced;
        size_t seen = 0;
        for (int from = 0; from < TASK_NSTATES; from++)
            for (int to = 0; to < TASK_NSTATES; to++) {
                int want = 0;
                for (size_t k = 0; k < n; k++)
                    want |= legal[k][0] == from && legal[k][1] == to;
                int got = task_transition_legal((task_kind)kind, (task_state)from, (task_state)to);
                if (got != want)
                    print_error("%s %s -> %s: legal %d, want %d\n", task_kind_name((task_kind)kind),
                                task_state_label((task_state)from),
                                task_state_label((task_state)to), got, want);
                assert_int_equal(got, want);
                seen += got;
                if (task_state_finished((task_state)from))
                    assert_false(got);
            }
        assert_int_equal(seen, n);
    }
    /* Out-of-range values are never legal. */
    assert_false(task_transition_legal(TASK_BALANCED, TASK_NSTATES, TASK_PENDING));
    assert_false(task_transition_legal(TASK_BALANCED, TASK_RUNNING, TASK_NSTATES));
    assert_false(task_transition_legal((task_kind)2, TASK_PENDING, TASK_RUNNING));
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(task_state_name(TASK_WAITING), "pending");
    assert_string_equal(task_state_label(TASK_WAITING), "waiting");
    assert_string_equal(task_state_name(TASK_LOST), "lost");
    assert_string_equal(task_kind_name(TASK_DIRECT), "direct");
    assert_int_equal(task_kind_parse("balanced"), TASK_BALANCED);
    assert_int_equal(task_kind_parse("direct"), TASK_DIRECT);
    assert_int_equal(task_kind_parse("other"), -1);
    assert_int_equal(task_kind_parse(NULL), -1);
}

/* A direct task: pending, running on its engine (counted there, message
 * sent with its id), completed (counted done, engine idle again, hook told). */
static void test_direct_life(void **state)
{
    fixture *f = *state;
    task *t = direct_task(f, 1, 42, 0);
    assert_int_equal(t->id, 1);
    assert_int_equal(t->state, TASK_PENDING);
    assert_true(t->submitted[0] && !t->started[0]);
    assert_int_equal(f->tt.counts[TASK_PENDING], 1);
    assert_ptr_equal(task_table_get(&f->tt, 1), t);

    assert_int_equal(task_start(&f->tt, t, eng(f, 1)), 0);
    assert_int_equal(t->state, TASK_RUNNING);
    assert_true(t->started[0] != '\0');
    assert_int_equal(eng(f, 1)->queued, 1);
    assert_int_equal(eng(f, 1)->lb_load, 0);
    assert_int_equal(eng(f, 1)->state, ENGINE_BUSY);
    assert_int_equal(f->links[1].n, 1);
    json_t *sent = f->links[1].msgs[0].msg;
    assert_string_equal(json_string_value(json_object_get(sent, "op")), "execute");
    assert_int_equal(json_integer_value(json_object_get(sent, "task")), 1);

    reply(f, t, "ok", json_integer(5));
    assert_int_equal(t->state, TASK_COMPLETED);
    assert_true(t->completed[0] != '\0');
    assert_null(t->msg);
    assert_int_equal(eng(f, 1)->queued, 0);
    assert_int_equal(eng(f, 1)->tasks_done, 1);
    assert_int_equal(eng(f, 1)->state, ENGINE_IDLE);
    assert_int_equal(f->n_finished, 1);
    assert_ptr_equal(f->finished[0], t);
    assert_int_equal(f->tt.finished_total, 1);
    /* Held: in no list, never evicted. */
    assert_int_equal(t->list, -1);
    assert_int_equal(f->tt.lists[TASK_LIST_FINISHED].count, 0);

    json_t *doc = task_doc(t);
    assert_string_equal(json_string_value(json_object_get(doc, "kind")), "direct");
    assert_string_equal(json_string_value(json_object_get(doc, "op")), "execute");
    assert_string_equal(json_string_value(json_object_get(doc, "stdout")), "out");
    assert_int_equal(json_integer_value(json_object_get(doc, "request")), 42);
    assert_int_equal(json_integer_value(json_object_get(doc, "engine")), 1);
    json_decref(doc);
    int present = -1;
    assert_null(task_doc_result(t, &present));
    assert_int_equal(present, 0); /* a direct task's values are its request's */
}

/* A balanced task taken back after its engine died: the engine lets it go
 * without counting it done, it goes to the front of the queue, and runs
 * again elsewhere; an engine's death without retries loses it. */
static void test_balanced_requeue_then_lost(void **state)
{
    fixture *f = *state;
    task *other = balanced_task(f, "b");
    task *t = balanced_task(f, "a");
    task_ready(&f->tt, other);
    task_ready(&f->tt, t);
    assert_ptr_equal(task_list_first(&f->tt, TASK_LIST_PENDING), other);
    assert_int_equal(task_start(&f->tt, t, eng(f, 0)), 0);
    assert_int_equal(eng(f, 0)->lb_load, 1);
    assert_int_equal(eng(f, 0)->queued, 1);
    task_requeue(&f->tt, t);
    assert_int_equal(t->state, TASK_PENDING);
    assert_int_equal(t->engine, -1);
    assert_false(t->started[0]);
    assert_ptr_equal(task_list_first(&f->tt, TASK_LIST_PENDING), t);
    assert_int_equal(eng(f, 0)->lb_load, 0);
    assert_int_equal(eng(f, 0)->queued, 0);
    assert_int_equal(eng(f, 0)->tasks_done, 0);

    assert_int_equal(task_start(&f->tt, t, eng(f, 1)), 0);
    task_finish(&f->tt, t, TASK_LOST,
                task_result_new(codec_synth_result("lost", "EngineLost", "gone"), NULL));
    assert_int_equal(t->state, TASK_LOST);
    assert_int_equal(eng(f, 1)->tasks_done, 1);
    assert_int_equal(t->list, TASK_LIST_FINISHED);
    json_t *doc = task_doc(t);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "error"), "ename")),
                        "EngineLost");
    assert_string_equal(json_string_value(json_object_get(doc, "kind")), "balanced");
    json_decref(doc);
}

/* A send that fails loses the task at once. */
static void test_send_failure_is_lost(void **state)
{
    fixture *f = *state;
    f->links[0].fail_send = 1;
    task *t = direct_task(f, 0, 1, 0);
    assert_int_equal(task_start(&f->tt, t, eng(f, 0)), -1);
    assert_int_equal(t->state, TASK_LOST);
    assert_int_equal(eng(f, 0)->queued, 0);
    assert_int_equal(f->n_finished, 1);
    assert_string_equal(json_string_value(json_object_get(t->result->msg, "ename")), "EngineLost");
}

/* Results: a timed-out balanced task's interrupted result reads as
 * TimeoutError; "aborted" and "lost" statuses map to their states. */
static void test_outcomes(void **state)
{
    fixture *f = *state;
    task *a = balanced_task(f, "a"), *b = balanced_task(f, "b"), *c = direct_task(f, 1, 1, 0);
    task_ready(&f->tt, a);
    task_ready(&f->tt, b);
    task_start(&f->tt, a, eng(f, 0));
    task_start(&f->tt, b, eng(f, 0));
    task_start(&f->tt, c, eng(f, 1));
    a->lb->timed_out = 1;
    a->lb->timeout = 0.5;
    reply(f, a, "aborted", NULL);
    assert_int_equal(a->state, TASK_FAILED);
    assert_string_equal(json_string_value(json_object_get(a->result->msg, "ename")),
                        "TimeoutError");
    reply(f, b, "aborted", NULL);
    assert_int_equal(b->state, TASK_ABORTED);
    reply(f, c, "error", NULL);
    assert_int_equal(c->state, TASK_FAILED);
    assert_int_equal(f->tt.counts[TASK_FAILED], 2);
    assert_int_equal(f->tt.counts[TASK_ABORTED], 1);
}

/* Results are shared and immutable: a reference taken for an answer stays
 * whole when the table lets the direct task keep only its outcome. */
static void test_results_shared(void **state)
{
    fixture *f = *state;
    task *t = direct_task(f, 0, 9, 0);
    task_start(&f->tt, t, eng(f, 0));
    reply(f, t, "ok", json_pack("{s:[i, i]}", "a", 1, 2));
    task_result *ref = task_result_ref(t->result);
    task_release(&f->tt, t);
    assert_int_equal(t->held, 0);
    assert_int_equal(t->list, TASK_LIST_FINISHED);
    assert_ptr_not_equal(t->result, ref);
    assert_null(json_object_get(t->result->msg, "value"));
    assert_string_equal(json_string_value(json_object_get(t->result->msg, "stdout")), "out");
    assert_non_null(json_object_get(ref->msg, "value"));
    /* The table's own reference is dropped by its owner after unlocking,
     * and no longer counted. */
    assert_int_equal(ref->refs, 2);
    assert_int_equal(f->tt.result_bytes, t->result->bytes);
    size_t n = 0;
    task_result **dropped = task_table_take_dropped(&f->tt, &n);
    assert_int_equal(n, 1);
    assert_ptr_equal(dropped[0], ref);
    task_results_drop(dropped, n);
    assert_int_equal(ref->refs, 1);
    task_result_unref(ref);
}

/* Finished tasks beyond the bound are evicted, oldest first; held ones only
 * once released, and then by when they finished (at the front of the list,
 * as the request that held them is forgotten when it is the oldest). */
static void test_eviction(void **state)
{
    fixture *f = *state; /* keep_finished 2 */
    task *held = direct_task(f, 0, 1, 0);
    task_start(&f->tt, held, eng(f, 0));
    reply(f, held, "ok", NULL);
    uint64_t ids[3];
    for (int i = 0; i < 3; i++) {
        task *t = balanced_task(f, "x");
        ids[i] = t->id;
        task_ready(&f->tt, t);
        task_start(&f->tt, t, eng(f, 1));
        reply(f, t, "ok", NULL);
    }
    assert_null(task_table_get(&f->tt, ids[0]));
    assert_non_null(task_table_get(&f->tt, ids[1]));
    assert_non_null(task_table_get(&f->tt, held->id));
    assert_int_equal(f->tt.counts[TASK_COMPLETED], 3);
    uint64_t held_id = held->id;
    task_release(&f->tt, held); /* joins the list: the oldest finished goes */
    assert_null(task_table_get(&f->tt, held_id));
    assert_non_null(task_table_get(&f->tt, ids[1]));
    assert_non_null(task_table_get(&f->tt, ids[2]));
    assert_int_equal(f->tt.lists[TASK_LIST_FINISHED].count, 2);
    /* Every result in memory is counted, and nothing else. */
    size_t bytes = 0;
    for (int i = 1; i < 3; i++)
        bytes += task_table_get(&f->tt, ids[i])->result->bytes;
    assert_int_equal(f->tt.result_bytes, bytes);
}

/* Aborted or failed before it ran: no engine was ever counted. */
static void test_finished_unsent(void **state)
{
    fixture *f = *state;
    task *w = balanced_task(f, "w"), *p = balanced_task(f, "p");
    task_ready(&f->tt, p);
    task_finish(&f->tt, w, TASK_FAILED,
                task_result_new(codec_synth_result("error", "DependencyError", "d"), NULL));
    task_finish(&f->tt, p, TASK_ABORTED,
                task_result_new(codec_synth_result("aborted", "TaskAborted", "a"), NULL));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(eng(f, i)->queued, 0);
        assert_int_equal(eng(f, i)->tasks_done, 0);
    }
    assert_int_equal(w->engine, -1);
    assert_false(p->started[0]);
}

/* Every task reaches the store, direct ones too, with kind, request, times,
 * engine, outcome and stdout; a balanced task's value with it; several
 * changes in one critical section make one record. */
static void test_store_records(void **state)
{
    fixture *f = *state;
    task *d = direct_task(f, 1, 77, 0);
    task_start(&f->tt, d, eng(f, 1));
    reply(f, d, "ok", json_pack("{s:i}", "x", 3));
    task *b = balanced_task(f, "b");
    task_ready(&f->tt, b);
    task_start(&f->tt, b, eng(f, 0));
    reply(f, b, "ok", json_pack("[i, i]", 1, 2));
    task *w = balanced_task(f, "w"); /* still waiting */
    task_saves_commit(f->st, task_table_take_saves(&f->tt));
    assert_null(task_table_take_saves(&f->tt)); /* nothing changed since */
    assert_int_equal(store_flush(f->st), 0);

    store_record rec;
    ippc_error err = {{0}, {0}};
    assert_int_equal(store_get(f->st, d->id, &rec, &err), 1);
    assert_string_equal(rec.kind, "direct");
    assert_int_equal(rec.request_id, 77);
    assert_string_equal(rec.state, "completed");
    assert_int_equal(rec.engine, 1);
    assert_non_null(rec.submitted);
    assert_non_null(rec.started);
    assert_non_null(rec.completed);
    assert_null(rec.result);
    assert_string_equal(json_string_value(json_object_get(rec.doc, "stdout")), "out");
    assert_string_equal(json_string_value(json_object_get(rec.doc, "op")), "execute");
    assert_null(json_object_get(rec.doc, "spec"));
    store_record_free(&rec);

    assert_int_equal(store_get(f->st, b->id, &rec, &err), 1);
    assert_string_equal(rec.kind, "balanced");
    assert_int_equal(rec.request_id, 0);
    assert_non_null(rec.result);
    assert_non_null(json_object_get(rec.doc, "spec"));
    store_record_free(&rec);

    assert_int_equal(store_get(f->st, w->id, &rec, &err), 1);
    assert_string_equal(rec.state, "pending");
    store_record_free(&rec);

    store_query q = {.kind = "direct", .engine = -1, .limit = 10};
    uint64_t next = 0;
    json_t *list = store_query_tasks(f->st, &q, &next, &err);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    q = (store_query){.request_id = 77, .engine = -1, .limit = 10};
    list = store_query_tasks(f->st, &q, &next, &err);
    assert_int_equal(json_array_size(list), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(list, 0), "id")),
                     (json_int_t)d->id);
    json_decref(list);
    char st[32];
    int engine = -2;
    assert_int_equal(store_get_state(f->st, b->id, st, sizeof st, &engine, &err), 1);
    assert_string_equal(st, "completed");
    assert_int_equal(engine, 0);
    assert_int_equal(store_get_state(f->st, 999, st, sizeof st, &engine, &err), 0);
}

/* A task evicted before its record was written still gets it written; a
 * purged one does not come back. */
static void test_store_evicted_and_forgotten(void **state)
{
    fixture *f = *state;
    f->tt.keep_finished = 1;
    task *a = balanced_task(f, "a"), *b = balanced_task(f, "b");
    uint64_t a_id = a->id, b_id = b->id;
    task_finish(&f->tt, a, TASK_ABORTED,
                task_result_new(codec_synth_result("aborted", "TaskAborted", "x"), NULL));
    task_finish(&f->tt, b, TASK_ABORTED,
                task_result_new(codec_synth_result("aborted", "TaskAborted", "x"), NULL));
    assert_null(task_table_get(&f->tt, a_id)); /* evicted while unsaved */
    task_forget(&f->tt, b);                    /* purged while unsaved */
    task_saves_commit(f->st, task_table_take_saves(&f->tt));
    assert_int_equal(store_flush(f->st), 0);
    store_record rec;
    ippc_error err = {{0}, {0}};
    assert_int_equal(store_get(f->st, a_id, &rec, &err), 1);
    assert_string_equal(rec.state, "aborted");
    store_record_free(&rec);
    assert_int_equal(store_get(f->st, b_id, &rec, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transitions),
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_direct_life, setup, teardown),
        cmocka_unit_test_setup_teardown(test_balanced_requeue_then_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_failure_is_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_results_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eviction, setup_keep2, teardown),
        cmocka_unit_test_setup_teardown(test_finished_unsent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_records, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_store_evicted_and_forgotten, setup_store, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
