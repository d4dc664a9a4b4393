/* test_server_registry.c — server/registry.c on its own: id blocks per MPI
 * job, refused registrations, liveness, the queue counters the task state
 * machine keeps, and the send path (bytes counted, dead engines refused). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "registry.h"
#include "fake_engines.h"

typedef struct fixture {
    registry reg;
    fake_link links[6];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    registry_init(&f->reg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    registry_free(&f->reg);
    for (int i = 0; i < 6; i++)
        link_clear(&f->links[i]);
    free(f);
    return 0;
}

static engine *reg(fixture *f, int link, const char *job, int rank, int size, const char *code)
{
    json_t *msg = register_msg(FAKE_ENGINE_KEY, job, rank, size);
    hub_engine_link l = link_of(&f->links[link]);
    ippc_error err = {{0}, {0}};
    engine *e = registry_register(&f->reg, msg, FAKE_ENGINE_KEY, &l, 1000, &err);
    json_decref(msg);
    if (code) {
        assert_null(e);
        assert_string_equal(err.code, code);
    } else {
        assert_non_null(e);
    }
    return e;
}

/* Ranks registering out of order still get ids in rank order; a second
 * job gets the next block. */
static void test_id_blocks(void **state)
{
    fixture *f = *state;
    assert_int_equal(reg(f, 2, "a", 2, 3, NULL)->id, 2);
    assert_int_equal(reg(f, 0, "a", 0, 3, NULL)->id, 0);
    assert_null(registry_get(&f->reg, 1)); /* reserved, not registered */
    assert_int_equal(reg(f, 3, "b", 1, 2, NULL)->id, 4);
    assert_int_equal(reg(f, 1, "a", 1, 3, NULL)->id, 1);
    int *ids = NULL;
    size_t n = 0;
    assert_int_equal(registry_live_ids(&f->reg, &ids, &n), 0);
    assert_int_equal(n, 4);
    const int want[4] = {0, 1, 2, 4};
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    json_t *j = engine_json(registry_get(&f->reg, 4), 1500);
    assert_int_equal(json_integer_value(json_object_get(j, "rank")), 1);
    assert_string_equal(json_string_value(json_object_get(j, "job")), "b");
    assert_string_equal(json_string_value(json_object_get(j, "state")), "idle");
    json_decref(j);
}

static void test_refusals(void **state)
{
    fixture *f = *state;
    reg(f, 0, "a", 0, 2, NULL);
    reg(f, 1, "a", 0, 2, ERR_CONFLICT); /* rank taken */
    reg(f, 1, "a", 1, 3, ERR_CONFLICT); /* size differs */
    json_t *msg = register_msg("wrong", "a", 1, 2);
    hub_engine_link l = link_of(&f->links[1]);
    ippc_error err = {{0}, {0}};
    assert_null(registry_register(&f->reg, msg, FAKE_ENGINE_KEY, &l, 0, &err));
    assert_string_equal(err.code, ERR_UNAUTHORIZED);
    json_decref(msg);
    msg = json_pack("{s:s, s:s}", "key", FAKE_ENGINE_KEY, "job", "a");
    assert_null(registry_register(&f->reg, msg, FAKE_ENGINE_KEY, &l, 0, &err));
    assert_string_equal(err.code, ERR_BAD_REQUEST);
    json_decref(msg);
    /* A dead rank may register again. */
    assert_int_equal(registry_mark_dead(registry_get(&f->reg, 0)), 1);
    assert_int_equal(registry_mark_dead(registry_get(&f->reg, 0)), 0);
    assert_null(registry_live(&f->reg, 0));
    assert_non_null(registry_get(&f->reg, 0));
    assert_int_equal(reg(f, 2, "a", 0, 2, NULL)->id, 0);
}

/* The counters: queued counts every task, lb_load the balanced ones; busy
 * while it holds any; a task taken back is not counted done. */
static void test_counters(void **state)
{
    fixture *f = *state;
    engine *e = reg(f, 0, "a", 0, 1, NULL);
    registry_task_started(&f->reg, e, 0);
    registry_task_started(&f->reg, e, 1);
    assert_int_equal(e->queued, 2);
    assert_int_equal(e->lb_load, 1);
    assert_int_equal(e->state, ENGINE_BUSY);
    assert_true(e->last_used > 0);
    registry_task_ended(e, 1, 0);
    assert_int_equal(e->tasks_done, 0);
    assert_int_equal(e->lb_load, 0);
    registry_task_ended(e, 0, 1);
    assert_int_equal(e->queued, 0);
    assert_int_equal(e->tasks_done, 1);
    assert_int_equal(e->state, ENGINE_IDLE);
    registry_task_ended(e, 1, 1); /* never below zero */
    assert_int_equal(e->queued, 0);
    assert_int_equal(e->lb_load, 0);
    size_t by_state[ENGINE_NSTATES], queued = 9;
    registry_counts(&f->reg, by_state, &queued);
    assert_int_equal(by_state[ENGINE_IDLE], 1);
    assert_int_equal(queued, 0);
    registry_heartbeat(e, 1);
    assert_int_equal(e->state, ENGINE_BUSY);
    registry_heard(e, 5000);
    assert_int_equal(e->last_heartbeat_ms, 5000);
}

static void test_send(void **state)
{
    fixture *f = *state;
    engine *e = reg(f, 0, "a", 0, 1, NULL);
    unsigned char *bytes = malloc(10);
    memset(bytes, 7, 10);
    ws_blobref *b = ws_blobref_new(bytes, 10);
    json_t *msg = json_pack("{s:s}", "type", "interrupt");
    assert_int_equal(registry_send(&f->reg, e, msg, &b, 1), 0);
    assert_int_equal(f->reg.bytes_to_engines, 10);
    assert_int_equal(f->links[0].n, 1);
    registry_mark_dead(e);
    assert_int_equal(registry_send(&f->reg, e, msg, &b, 1), -1);
    assert_int_equal(f->links[0].n, 1);
    json_decref(msg);
    ws_blobref_release(b);
    ippc_blobs in;
    blobs_init(&in);
    blobs_push(&in, malloc(4), 4);
    registry_count_received(&f->reg, &in);
    assert_int_equal(f->reg.bytes_from_engines, 4);
    blobs_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_id_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
