/* test_wsmsg.c — common/wsmsg.c: the reader (reassembly of fragments, JSON with its binary
 * frames, nbuf, the whole-message limit, budget charges and credits, bad JSON and protocol
 * errors, skipping the rest of a refused message) driven through ws_reader_push, and the send
 * queue's budget account (charged on push, credited as frames are written or dropped). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "wsmsg.h"

/* ------------------------------------------------------------ helpers */

typedef struct feed {
    ws_reader *r;
    json_t *msg;
    ippc_blobs blobs;
    ippc_error err;
    int rc;
} feed;

/* One fragment of a message: first/final/binary/remaining as lws reports them. */
static int push(feed *f, int first, int final, int binary, size_t remaining, const void *data,
                size_t len)
{
    ws_fragment frag = {.first = first, .final = final, .binary = binary, .remaining = remaining};
    json_decref(f->msg);
    f->msg = NULL;
    blobs_free(&f->blobs);
    blobs_init(&f->blobs);
    memset(&f->err, 0, sizeof f->err);
    f->rc = ws_reader_push(f->r, &frag, data, len, &f->msg, &f->blobs, &f->err);
    return f->rc;
}

/* A whole text message in one frame. */
static int text(feed *f, const char *s)
{
    return push(f, 1, 1, 0, 0, s, strlen(s));
}

/* A whole binary message of n bytes (value fill) in one frame. */
static int binary(feed *f, size_t n, unsigned char fill)
{
    unsigned char *data = malloc(n ? n : 1);
    assert_non_null(data);
    memset(data, fill, n);
    int rc = push(f, 1, 1, 1, 0, data, n);
    free(data);
    return rc;
}

static void feed_init(feed *f, ws_reader *r)
{
    memset(f, 0, sizeof *f);
    f->r = r;
    blobs_init(&f->blobs);
}

static void feed_done(feed *f)
{
    json_decref(f->msg);
    blobs_free(&f->blobs);
}

/* ------------------------------------------------------------ reader */

static void test_json_alone_and_with_binary_frames(void **state)
{
    (void)state;
    ws_reader r;
    ws_reader_init(&r, 1 << 20, NULL);
    feed f;
    feed_init(&f, &r);
    assert_int_equal(text(&f, "{\"op\":\"ping\"}"), 1);
    assert_string_equal(json_string_value(json_object_get(f.msg, "op")), "ping");
    assert_int_equal(f.blobs.count, 0);

    assert_int_equal(text(&f, "{\"op\":\"push\",\"nbuf\":2}"), 0);
    assert_int_equal(binary(&f, 10, 0xAB), 0);
    assert_int_equal(binary(&f, 0, 0), 1); /* an empty blob counts too */
    assert_string_equal(json_string_value(json_object_get(f.msg, "op")), "push");
    assert_int_equal(f.blobs.count, 2);
    assert_int_equal(f.blobs.items[0].len, 10);
    assert_int_equal(f.blobs.items[0].data[9], 0xAB);
    assert_int_equal(f.blobs.items[1].len, 0);
    feed_done(&f);
    ws_reader_free(&r);
}

static void test_fragments_reassemble(void **state)
{
    (void)state;
    ws_reader r;
    ws_reader_init(&r, 1 << 20, NULL);
    feed f;
    feed_init(&f, &r);
    /* One frame delivered in three callbacks (remaining counts down), then
     * a message in two frames (FIN only on the second). */
    const char *msg = "{\"op\":\"execute\",\"code\":\"return 1\"}";
    size_t n = strlen(msg);
    assert_int_equal(push(&f, 1, 0, 0, n - 5, msg, 5), 0);
    assert_int_equal(push(&f, 0, 0, 0, n - 20, msg + 5, 15), 0);
    assert_int_equal(push(&f, 0, 1, 0, 0, msg + 20, n - 20), 1);
    assert_string_equal(json_string_value(json_object_get(f.msg, "code")), "return 1");

    assert_int_equal(push(&f, 1, 0, 0, 0, "{\"op\":", 6), 0);
    assert_int_equal(push(&f, 0, 1, 0, 0, "\"x\",\"nbuf\":1}", 13), 0);
    assert_int_equal(push(&f, 1, 0, 1, 0, "ab", 2), 0);
    assert_int_equal(push(&f, 0, 0, 1, 3, "cd", 2), 0);
    assert_int_equal(push(&f, 0, 1, 1, 0, "efg", 3), 1);
    assert_int_equal(f.blobs.count, 1);
    assert_int_equal(f.blobs.items[0].len, 7);
    assert_memory_equal(f.blobs.items[0].data, "abcdefg", 7);
    feed_done(&f);
    ws_reader_free(&r);
}

static void test_nbuf_is_checked(void **state)
{
    (void)state;
    ws_reader r;
    ws_reader_init(&r, 1 << 20, NULL);
    feed f;
    feed_init(&f, &r);
    const char *bad[] = {"{\"nbuf\":-1}", "{\"nbuf\":4097}", "{\"nbuf\":1.5}", "{\"nbuf\":\"2\"}",
                         "{\"nbuf\":99999999999999999}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(text(&f, bad[i]), -1);
        assert_string_equal(f.err.code, ERR_BAD_REQUEST);
        assert_int_equal(ws_reader_fatal(&r, &f.err), 0); /* the connection may go on */
    }
    assert_int_equal(text(&f, "{\"nbuf\":4096}"), 0);
    assert_int_equal(r.want, WS_MAX_NBUF);
    feed_done(&f);
    ws_reader_free(&r);
}

static void test_bad_json_and_unannounced_binary(void **state)
{
    (void)state;
    ws_reader r;
    ws_reader_init(&r, 1 << 20, NULL);
    feed f;
    feed_init(&f, &r);
    assert_int_equal(text(&f, "not json {"), -1);
    assert_string_equal(f.err.code, ERR_BAD_REQUEST);
    assert_int_equal(text(&f, "[1,2,3]"), -1);
    assert_int_equal(text(&f, "{\"a\":1,\"a\":2}"), -1); /* duplicate keys */
    assert_int_equal(push(&f, 1, 1, 0, 0, "", 0), -1);   /* empty text */
    assert_int_equal(text(&f, "{\"ok\":true}"), 1);      /* and the next one is fine */

    /* A binary message nobody announced is refused at its first bytes and the
     * rest of it is skipped (not buffered). */
    assert_int_equal(push(&f, 1, 0, 1, 1000, "xx", 2), -1);
    assert_string_equal(f.err.code, ERR_BAD_REQUEST);
    assert_int_equal(ws_reader_fatal(&r, &f.err), 0);
    assert_int_equal(push(&f, 0, 0, 1, 500, "yy", 2), 0);
    assert_int_equal(push(&f, 0, 1, 1, 0, "zz", 2), 0);
    assert_int_equal(r.len, 0);
    assert_int_equal(text(&f, "{\"after\":1}"), 1);

    /* A text message while binary frames are due drops both. */
    assert_int_equal(text(&f, "{\"nbuf\":2}"), 0);
    assert_int_equal(binary(&f, 3, 1), 0);
    assert_int_equal(text(&f, "{\"next\":1}"), -1);
    assert_null(r.pending);
    assert_int_equal(binary(&f, 3, 1), -1); /* its frames are unannounced now */
    assert_int_equal(text(&f, "{\"again\":1}"), 1);
    feed_done(&f);
    ws_reader_free(&r);
}

static void test_contradictory_flags_are_protocol_errors(void **state)
{
    (void)state;
    ws_reader r;
    ws_reader_init(&r, 1 << 20, NULL);
    feed f;
    feed_init(&f, &r);
    assert_int_equal(push(&f, 0, 1, 0, 0, "{}", 2), -1); /* a continuation first */
    assert_int_equal(ws_reader_fatal(&r, &f.err), 1002);
    ws_reader_free(&r);
    ws_reader_init(&r, 1 << 20, NULL);
    assert_int_equal(push(&f, 1, 0, 0, 0, "{", 1), 0);
    assert_int_equal(push(&f, 1, 1, 0, 0, "{}", 2), -1); /* a new message inside one */
    assert_int_equal(ws_reader_fatal(&r, &f.err), 1002);
    feed_done(&f);
    ws_reader_free(&r);
}

/* Regression (issue 8, item 5): {"op":"ping","nbuf":4096} and then binary frames of 15 MiB
 * each were all kept (480 MB held for one 16 MiB connection): the limit applied to each
 * frame.  Now the JSON and every binary frame count together. */
static void test_bug_limit_counts_the_whole_message(void **state)
{
    (void)state;
    const size_t max = 1000;
    ws_reader r;
    ws_reader_init(&r, max, NULL);
    feed f;
    feed_init(&f, &r);
    const char *json = "{\"op\":\"ping\",\"nbuf\":4096}";
    assert_int_equal(text(&f, json), 0);
    int rc = 0;
    size_t frames = 0;
    while ((rc = binary(&f, 300, 7)) == 0)
        frames++;
    assert_int_equal(rc, -1);
    assert_string_equal(f.err.code, ERR_TOO_LARGE);
    assert_int_equal(ws_reader_fatal(&r, &f.err), 1009);
    assert_int_equal(frames, (max - strlen(json)) / 300); /* the JSON, then 3 frames fit */
    assert_int_equal(r.blobs.count, 0);                   /* and nothing is held any more */
    assert_int_equal(r.len, 0);
    feed_done(&f);
    ws_reader_free(&r);
}

/* The frame header announces its size: a frame that cannot fit is refused at its first
 * bytes, before any of it is buffered; so is a text message growing past the limit. */
static void test_limit_before_buffering(void **state)
{
    (void)state;
    ws_reader r;
    ws_reader_init(&r, 100, NULL);
    feed f;
    feed_init(&f, &r);
    assert_int_equal(push(&f, 1, 0, 0, 1 << 30, "{", 1), -1);
    assert_string_equal(f.err.code, ERR_TOO_LARGE);
    assert_int_equal(r.cap, 0);
    assert_int_equal(push(&f, 0, 1, 0, 0, "}", 1), 0); /* the rest is skipped */
    char chunk[40];
    memset(chunk, ' ', sizeof chunk);
    chunk[0] = '{';
    assert_int_equal(push(&f, 1, 0, 0, 0, chunk, 40), 0);
    assert_int_equal(push(&f, 0, 0, 0, 0, chunk + 1, 39), 0);
    assert_int_equal(push(&f, 0, 0, 0, 0, chunk + 1, 39), -1); /* 118 > 100 */
    assert_string_equal(f.err.code, ERR_TOO_LARGE);
    assert_int_equal(push(&f, 0, 1, 0, 0, "", 0), 0); /* its end, skipped */
    /* Exactly the limit is fine. */
    char exact[101];
    memset(exact, ' ', 100);
    exact[0] = '{';
    exact[99] = '}';
    exact[100] = '\0';
    assert_int_equal(push(&f, 1, 1, 0, 0, exact, 100), 1);
    feed_done(&f);
    ws_reader_free(&r);
}

static void test_budget_charges_and_credits(void **state)
{
    (void)state;
    budget b;
    budget_init(&b, 0);
    budget_account a;
    budget_account_init(&a, &b, 0);
    ws_reader r;
    ws_reader_init(&r, 1 << 20, &a);
    feed f;
    feed_init(&f, &r);

    /* While a message is being received, what it holds is charged... */
    assert_int_equal(text(&f, "{\"op\":\"push\",\"nbuf\":2}"), 0);
    size_t after_json = budget_used(&b);
    assert_true(after_json >= strlen("{\"op\":\"push\",\"nbuf\":2}"));
    assert_int_equal(push(&f, 1, 0, 1, 5000, "0123456789", 10), 0);
    assert_int_equal(budget_used(&b), budget_account_held(&a));
    unsigned char *big = calloc(1, 5000);
    assert_non_null(big);
    assert_int_equal(push(&f, 0, 1, 1, 0, big, 5000), 0);
    /* the JSON (its text) and the frame's 5010 bytes */
    assert_true(budget_used(&b) >= strlen("{\"op\":\"push\",\"nbuf\":2}") + 5010);
    assert_int_equal(binary(&f, 100, 1), 1);
    /* ... and handing it over gives it back (the caller holds it now). */
    assert_true(budget_used(&b) <= (size_t)64 * 1024); /* at most the kept buffer */
    assert_int_equal(f.blobs.count, 2);

    /* A refused message gives back what it held. */
    assert_int_equal(text(&f, "{\"nbuf\":1}"), 0);
    assert_int_equal(push(&f, 1, 0, 1, 100, big, 100), 0);
    assert_true(budget_used(&b) > 0);
    assert_int_equal(push(&f, 1, 1, 0, 0, "{}", 2), -1); /* protocol error: dropped */
    ws_reader_free(&r);
    assert_int_equal(budget_used(&b), 0);
    assert_int_equal(budget_account_held(&a), 0);
    free(big);
    feed_done(&f);
}

static void test_budget_refusals(void **state)
{
    (void)state;
    budget b;
    budget_init(&b, 10000);
    budget_account a, other;
    budget_account_init(&a, &b, 0);
    budget_account_init(&other, &b, 0);
    ippc_error err = {{0}, {0}};
    assert_int_equal(budget_take(&other, 8000, "x", &err), 0);

    ws_reader r;
    ws_reader_init(&r, 1 << 20, &a);
    feed f;
    feed_init(&f, &r);
    assert_int_equal(text(&f, "{\"nbuf\":1}"), 0);
    unsigned char *big = calloc(1, 5000);
    assert_non_null(big);
    assert_int_equal(push(&f, 1, 1, 1, 0, big, 5000), -1);
    assert_string_equal(f.err.code, ERR_OVERLOADED);
    assert_int_equal(ws_reader_fatal(&r, &f.err), 1013);
    assert_int_equal(budget_account_held(&a), budget_used(&b) - 8000);
    budget_give(&other, 8000);
    assert_int_equal(text(&f, "{\"nbuf\":1}"), 0);
    assert_int_equal(push(&f, 1, 1, 1, 0, big, 5000), 1);

    /* The account's own cap reads as "too large". */
    ws_reader_free(&r);
    budget_account capped;
    budget_account_init(&capped, &b, 2000);
    ws_reader_init(&r, 1 << 20, &capped);
    assert_int_equal(text(&f, "{\"nbuf\":1}"), 0);
    assert_int_equal(push(&f, 1, 1, 1, 0, big, 5000), -1);
    assert_string_equal(f.err.code, ERR_TOO_LARGE);
    assert_int_equal(ws_reader_fatal(&r, &f.err), 1009);
    ws_reader_free(&r);
    assert_int_equal(budget_account_held(&capped), 0);
    free(big);
    feed_done(&f);
    budget_account_release(&a);
    assert_int_equal(budget_used(&b), 0);
}

/* ------------------------------------------------------------ send queue */

/* Stands in for libwebsockets' lws_write (wsmsg.o's calls resolve here): accepts everything. */
int lws_write(struct lws *wsi, unsigned char *buf, size_t len, enum lws_write_protocol protocol)
{
    (void)wsi;
    (void)buf;
    (void)protocol;
    return (int)len;
}

static void test_outq_charges_until_written(void **state)
{
    (void)state;
    budget b;
    budget_init(&b, 1000);
    budget_account a;
    budget_account_init(&a, &b, 0);
    ws_outq q;
    ws_outq_init(&q);
    ws_outq_set_account(&q, &a);
    ippc_error err = {{0}, {0}};
    char text[600];
    memset(text, 'x', sizeof text);
    assert_int_equal(ws_outq_push_text(&q, text, 600, &err), 0);
    assert_int_equal(budget_used(&b), 600);
    assert_int_equal(ws_outq_push_text(&q, text, 500, &err), -1);
    assert_string_equal(err.code, ERR_OVERLOADED);
    assert_int_equal(q.frames, 1);
    /* A notice is not charged: the reason for a refusal always gets out. */
    assert_int_equal(ws_outq_push_notice(&q, "{\"type\":\"error\"}", 16), 0);
    assert_int_equal(budget_used(&b), 600);
    assert_int_equal(ws_outq_push_front_text(&q, text, 300, &err), 0);
    assert_int_equal(budget_used(&b), 900);
    /* Written frames give their charge back. */
    while (ws_outq_write(&q, (struct lws *)&q) == 1)
        ;
    assert_true(ws_outq_empty(&q));
    assert_int_equal(budget_used(&b), 0);

    /* So do dropped ones, and a JSON + blob message is charged whole. */
    json_t *msg = json_pack("{s:s}", "type", "x");
    unsigned char *data = malloc(200);
    assert_non_null(data);
    ws_blobref *blob = ws_blobref_new(data, 200);
    assert_int_equal(ws_outq_push(&q, msg, &blob, 1), 0);
    assert_true(budget_used(&b) > 200);
    ws_outq_clear(&q);
    assert_int_equal(budget_used(&b), 0);
    assert_int_equal(ws_outq_push(&q, msg, &blob, 1), 0);
    ws_outq_destroy(&q);
    assert_int_equal(budget_used(&b), 0);
    ws_blobref_release(blob);
    json_decref(msg);
}

/* "sizes" announces each binary frame: it is allocated whole at its first
 * bytes, and a frame of another length is refused. */
static void test_sizes_allocate_once(void **state)
{
    (void)state;
    ws_reader r;
    ws_reader_init(&r, 1 << 20, NULL);
    feed f;
    feed_init(&f, &r);
    assert_int_equal(text(&f, "{\"op\":\"x\",\"nbuf\":2,\"sizes\":[7,3]}"), 0);
    assert_int_equal(push(&f, 1, 0, 1, 0, "ab", 2), 0);
    assert_int_equal(r.cap, 7); /* the whole frame at once, not doubled to it */
    assert_int_equal(push(&f, 0, 1, 1, 0, "cdefg", 5), 0);
    assert_int_equal(push(&f, 1, 1, 1, 0, "xyz", 3), 1);
    assert_int_equal(f.blobs.count, 2);
    assert_memory_equal(f.blobs.items[0].data, "abcdefg", 7);
    assert_memory_equal(f.blobs.items[1].data, "xyz", 3);

    /* Shorter than announced: refused at its end; longer: at once. */
    assert_int_equal(text(&f, "{\"nbuf\":1,\"sizes\":[4]}"), 0);
    assert_int_equal(push(&f, 1, 1, 1, 0, "abc", 3), -1);
    assert_string_equal(f.err.code, ERR_BAD_REQUEST);
    assert_non_null(strstr(f.err.message, "announced"));
    assert_int_equal(text(&f, "{\"nbuf\":1,\"sizes\":[2]}"), 0);
    assert_int_equal(push(&f, 1, 0, 1, 10, "abc", 3), -1);
    assert_string_equal(f.err.code, ERR_BAD_REQUEST);
    assert_int_equal(ws_reader_fatal(&r, &f.err), 0);
    assert_int_equal(push(&f, 0, 1, 1, 0, "0123456789", 10), 0); /* skipped */
    assert_int_equal(text(&f, "{\"ok\":1}"), 1);                 /* and the next is fine */

    /* Malformed "sizes". */
    const char *bad[] = {"{\"nbuf\":2,\"sizes\":[1]}", "{\"nbuf\":1,\"sizes\":[-1]}",
                         "{\"nbuf\":1,\"sizes\":[1.5]}", "{\"nbuf\":1,\"sizes\":\"7\"}",
                         "{\"sizes\":[1]}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(text(&f, bad[i]), -1);
        assert_string_equal(f.err.code, ERR_BAD_REQUEST);
    }
    /* Announcing more than the limit is refused before anything is held. */
    assert_int_equal(text(&f, "{\"nbuf\":2,\"sizes\":[1048000,1000]}"), -1);
    assert_string_equal(f.err.code, ERR_TOO_LARGE);
    assert_int_equal(text(&f, "{\"nbuf\":1,\"sizes\":[18446744073709551615]}"), -1);
    feed_done(&f);
    ws_reader_free(&r);
}

/* What ws_outq_push writes, the reader takes: "sizes" matches the blobs. */
static void test_outq_announces_sizes(void **state)
{
    (void)state;
    ws_outq q;
    ws_outq_init(&q);
    unsigned char *a = malloc(5), *b = malloc(1);
    assert_non_null(a);
    assert_non_null(b);
    ws_blobref *refs[2] = {ws_blobref_new(a, 5), ws_blobref_new(b, 0)};
    json_t *msg = json_pack("{s:s}", "type", "result");
    assert_int_equal(ws_outq_push(&q, msg, refs, 2), 0);
    json_t *sizes = json_object_get(msg, "sizes");
    assert_int_equal(json_array_size(sizes), 2);
    assert_int_equal(json_integer_value(json_array_get(sizes, 0)), 5);
    assert_int_equal(json_integer_value(json_array_get(sizes, 1)), 0);
    assert_int_equal(ws_outq_push(&q, msg, NULL, 0), 0); /* reused: no stale sizes */
    assert_null(json_object_get(msg, "sizes"));
    json_decref(msg);
    ws_blobref_release(refs[0]);
    ws_blobref_release(refs[1]);
    ws_outq_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_alone_and_with_binary_frames),
        cmocka_unit_test(test_fragments_reassemble),
        cmocka_unit_test(test_nbuf_is_checked),
        cmocka_unit_test(test_bad_json_and_unannounced_binary),
        cmocka_unit_test(test_contradictory_flags_are_protocol_errors),
        cmocka_unit_test(test_bug_limit_counts_the_whole_message),
        cmocka_unit_test(test_limit_before_buffering),
        cmocka_unit_test(test_budget_charges_and_credits),
        cmocka_unit_test(test_budget_refusals),
        cmocka_unit_test(test_outq_charges_until_written),
        cmocka_unit_test(test_sizes_allocate_once),
        cmocka_unit_test(test_outq_announces_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
