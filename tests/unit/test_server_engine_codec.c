/* test_server_engine_codec.c — server/engine_codec.c: the one encoder of
 * task messages (every direct-view op, a balanced task's code or function,
 * a map chunk, scatter's split), control messages, and the reading of
 * results.  The apply of a direct view and a balanced "function" task must
 * be the same message. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "engine_codec.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!v)
        print_error("bad test JSON %s: %s\n", text, jerr.text);
    assert_non_null(v);
    return v;
}

static codec_msg *call(hub_op op, const char *body, const char *name, const char *code)
{
    json_t *b = parse(body);
    hub_call c = {.op = op, .targets = "all", .body = b, .name = name};
    ippc_error err = {{0}, {0}};
    codec_msg *m = codec_view_call(&c, &err);
    if (code) {
        assert_null(m);
        assert_string_equal(err.code, code);
    } else {
        if (!m) {
            print_error("%s: %s\n", body, err.message);
            fail();
            return NULL;
        }
        assert_string_equal(json_string_value(json_object_get(m->msg, "type")), "task");
        assert_null(json_object_get(m->msg, "task")); /* set at send */
    }
    json_decref(b);
    return m;
}

static const char *op_of(const codec_msg *m)
{
    return json_string_value(json_object_get(m->msg, "op"));
}

static void test_view_ops(void **state)
{
    (void)state;
    codec_msg *m = call(HUB_OP_EXECUTE, "{\"code\": \"x = 1\"}", NULL, NULL);
    assert_string_equal(op_of(m), "execute");
    codec_msg_unref(m);
    m = call(HUB_OP_RUN, "{\"source\": \"s\"}", NULL, NULL);
    assert_string_equal(json_string_value(json_object_get(m->msg, "filename")), "<run>");
    codec_msg_unref(m);
    m = call(HUB_OP_PUSH, "{\"namespace\": {\"a\": [1, 2], \"b\": \"t\"}}", NULL, NULL);
    assert_string_equal(op_of(m), "push");
    assert_int_equal(m->nblobs, 1); /* [1, 2] is an int64 array */
    codec_msg_unref(m);
    m = call(HUB_OP_PULL, "{}", "a", NULL);
    json_t *names = json_object_get(m->msg, "names");
    assert_int_equal(json_array_size(names), 1);
    assert_string_equal(json_string_value(json_array_get(names, 0)), "a");
    codec_msg_unref(m);
    m = call(HUB_OP_DELETE, "{}", "a", NULL);
    assert_string_equal(op_of(m), "delete");
    codec_msg_unref(m);
    m = call(HUB_OP_LOAD, "{\"library\": \"/x.so\"}", NULL, NULL);
    assert_string_equal(op_of(m), "load");
    codec_msg_unref(m);
    m = call(HUB_OP_RESET, "{}", NULL, NULL);
    codec_msg_unref(m);
    m = call(HUB_OP_LIST, "{}", NULL, NULL);
    codec_msg_unref(m);
    call(HUB_OP_EXECUTE, "{}", NULL, ERR_BAD_REQUEST);
    call(HUB_OP_PULL, "{}", "1bad", ERR_INVALID);
    call(HUB_OP_PULL_MANY, "{\"names\": [\"a\", 3]}", NULL, ERR_BAD_REQUEST);
    call(HUB_OP_LOAD, "{\"library\": \"\"}", NULL, ERR_INVALID);
    call(HUB_OP_APPLY, "{\"function\": \"f\", \"args\": 3}", NULL, ERR_BAD_REQUEST);
    call(HUB_OP_SCATTER, "{}", NULL, ERR_INTERNAL);
}

/* One encoder: the view's apply and a balanced function task are equal. */
static void test_apply_is_one_message(void **state)
{
    (void)state;
    codec_msg *view = call(
        HUB_OP_APPLY, "{\"function\": \"f\", \"args\": [[1, 2], \"s\"], \"kwargs\": {\"k\": 1}}",
        NULL, NULL);
    json_t *args = parse("[[1, 2], \"s\"]"), *kwargs = parse("{\"k\": 1}");
    ippc_error err = {{0}, {0}};
    codec_msg *lb = codec_apply("f", args, kwargs, &err);
    assert_non_null(lb);
    assert_true(json_equal(view->msg, lb->msg));
    assert_int_equal(view->nblobs, 1);
    assert_int_equal(lb->nblobs, 1);
    codec_msg_unref(view);
    codec_msg_unref(lb);
    codec_msg *map = codec_map("f", args, &err);
    assert_non_null(map);
    assert_string_equal(op_of(map), "map");
    assert_int_equal(json_array_size(json_object_get(map->msg, "sequences")), 2);
    assert_null(json_object_get(map->msg, "args"));
    codec_msg_unref(map);
    assert_null(codec_apply("not valid", args, NULL, &err));
    assert_string_equal(err.code, ERR_INVALID);
    json_decref(args);
    json_decref(kwargs);
}

static void test_scatter_split(void **state)
{
    (void)state;
    json_t *b = parse("{\"name\": \"a\", \"data\": [1, 2, 3, 4, 5]}");
    hub_call c = {.op = HUB_OP_SCATTER, .targets = "all", .body = b};
    codec_scatter s;
    ippc_error err = {{0}, {0}};
    assert_int_equal(codec_scatter_decode(&c, &s, &err), 0);
    codec_msg *parts[2] = {NULL, NULL};
    assert_int_equal(codec_scatter_split(&s, 2, parts, &err), 0);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(op_of(parts[i]), "push");
        assert_int_equal(parts[i]->nblobs, 1);
        assert_int_equal(ws_blobref_len(parts[i]->blobs[0]), (i == 0 ? 3 : 2) * 8);
        codec_msg_unref(parts[i]);
        parts[i] = NULL;
    }
    codec_scatter_clear(&s);
    json_decref(b);
    b = parse("{\"name\": \"a\", \"data\": 5}");
    c.body = b;
    assert_int_equal(codec_scatter_decode(&c, &s, &err), 0);
    assert_int_equal(codec_scatter_split(&s, 2, parts, &err), -1);
    assert_null(parts[0]);
    codec_scatter_clear(&s);
    json_decref(b);
}

/* The parts of an array are slices of its one buffer, in order, with the
 * rows scatter_partition gives each; a split can be made again (the targets
 * changed) and the parts outlive the decoded scatter. */
static void test_scatter_slices(void **state)
{
    (void)state;
    json_t *b =
        parse("{\"name\": \"m\", \"data\": {\"dtype\": \"int32\", \"shape\": [5, 2], \"data\":"
              " \"AAAAAAEAAAACAAAAAwAAAAQAAAAFAAAABgAAAAcAAAAIAAAACQAAAA==\"}}" /* 0..9 */);
    hub_call c = {.op = HUB_OP_SCATTER, .targets = "all", .body = b};
    codec_scatter s;
    ippc_error err = {{0}, {0}};
    assert_int_equal(codec_scatter_decode(&c, &s, &err), 0);
    assert_int_equal(s.nrefs, 1);
    const unsigned char *whole = ws_blobref_data(s.refs[0]);

    codec_msg *parts[7] = {NULL};
    assert_int_equal(codec_scatter_split(&s, 2, parts, &err), 0); /* first try: 2 targets */
    for (int i = 0; i < 2; i++)
        codec_msg_unref(parts[i]);
    assert_int_equal(codec_scatter_split(&s, 7, parts, &err), 0); /* the targets changed: again */
    /* 5 rows over 7 parts: 1,1,1,1,1,0,0 */
    for (int i = 0; i < 7; i++) {
        json_t *v = json_object_get(json_object_get(parts[i]->msg, "ns"), "m");
        nd_ref ref;
        ippc_blobs view = {.items =
                               &(ippc_blob){(unsigned char *)ws_blobref_data(parts[i]->blobs[0]),
                                            ws_blobref_len(parts[i]->blobs[0])},
                           .count = 1,
                           .cap = 1};
        assert_int_equal(value_nd_ref(v, &view, &ref, &err), 1);
        size_t rows = i < 5 ? 1 : 0;
        assert_int_equal(ref.ndim, 2);
        assert_int_equal(ref.shape[0], rows);
        assert_int_equal(ref.shape[1], 2);
        assert_int_equal(ws_blobref_len(parts[i]->blobs[0]), rows * 2 * sizeof(int32_t));
        if (rows) {
            /* no copy: the part's bytes are the body's, at row i */
            assert_ptr_equal(ws_blobref_data(parts[i]->blobs[0]),
                             whole + (size_t)i * 2 * sizeof(int32_t));
        }
    }
    /* given up for a fan-out after a split: the root's task shares the bytes */
    int ranks[3] = {0, 1, 2};
    codec_fanout f = {.id = 9, .ranks = ranks, .n = 3, .root = 0};
    codec_msg *root = NULL, *others = NULL;
    assert_int_equal(codec_fanout_scatter(&s, &f, &root, &others, &err), 0);
    assert_int_equal(root->nblobs, 1);
    assert_ptr_equal(ws_blobref_data(root->blobs[0]), whole);
    assert_int_equal(others->nblobs, 0);
    codec_msg_unref(others);
    /* the decoded scatter goes; the parts keep the bytes alive */
    codec_scatter_clear(&s);
    json_decref(b);
    int32_t row[2];
    memcpy(row, ws_blobref_data(parts[3]->blobs[0]), sizeof row);
    assert_int_equal(row[0], 6);
    assert_int_equal(row[1], 7);
    for (int i = 0; i < 7; i++)
        codec_msg_unref(parts[i]);
    assert_int_equal(ws_blobref_len(root->blobs[0]), 40);
    codec_msg_unref(root);

    /* a list with an array in it: the part that gets it gets its own copy */
    b = parse("{\"name\": \"l\", \"data\": [\"a\", [1.5, 2.5], 3]}");
    c.body = b;
    assert_int_equal(codec_scatter_decode(&c, &s, &err), 0);
    assert_int_equal(codec_scatter_split(&s, 2, parts, &err), 0);
    assert_int_equal(parts[0]->nblobs, 1);
    assert_int_equal(parts[1]->nblobs, 0);
    assert_int_equal(ws_blobref_len(parts[0]->blobs[0]), 16);
    assert_ptr_not_equal(ws_blobref_data(parts[0]->blobs[0]), ws_blobref_data(s.refs[0]));
    codec_msg_unref(parts[0]);
    codec_msg_unref(parts[1]);
    codec_scatter_clear(&s);
    json_decref(b);
}

static void test_control_and_results(void **state)
{
    (void)state;
    json_t *i = codec_interrupt(7);
    assert_int_equal(json_integer_value(json_object_get(i, "task")), 7);
    json_decref(i);
    i = codec_interrupt(0);
    assert_null(json_object_get(i, "task"));
    json_decref(i);
    json_t *r = codec_synth_result("lost", "EngineLost", "gone");
    assert_string_equal(codec_result_status(r), "lost");
    assert_false(codec_result_ok(r));
    json_t *ev = json_object();
    codec_event_outcome(ev, r, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ev, "error"), "ename")),
                        "EngineLost");
    json_decref(ev);
    json_decref(r);
    r = parse("{\"status\": \"ok\", \"value\": [1, 2]}");
    ev = json_object();
    codec_event_outcome(ev, r, NULL);
    assert_true(json_equal(json_object_get(ev, "result"), json_object_get(r, "value")));
    json_decref(ev);
    json_decref(r);
    /* Over 64 KiB: omitted, not copied into every event. */
    ippc_blobs blobs;
    blobs_init(&blobs);
    unsigned char *big = calloc(1, 80000);
    blobs_push(&blobs, big, 80000);
    r = json_pack("{s:s, s:o}", "status", "ok", "value",
                  value_nd_placeholder(ND_UINT8, 1, (size_t[]){80000}, 0));
    ev = json_object();
    codec_event_outcome(ev, r, &blobs);
    assert_true(json_is_true(json_object_get(ev, "result_omitted")));
    json_decref(ev);
    json_decref(r);
    blobs_free(&blobs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_ops),
        cmocka_unit_test(test_apply_is_one_message),
        cmocka_unit_test(test_scatter_split),
        cmocka_unit_test(test_scatter_slices),
        cmocka_unit_test(test_control_and_results),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
