/* test_wsframe.c — common/wsframe.c: client frame headers (lengths in their three forms, the
 * zero mask), server frames decoded in one piece and byte by byte, payload handed out as whole
 * runs, control frames between fragments, every protocol error, and the decoder feeding the
 * message reader (JSON + "sizes" + a binary frame) as the engine's link does. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "wsframe.h"

/* A server frame (unmasked) with the given first byte and payload. */
static size_t server_frame(unsigned char *out, unsigned char b0, const void *payload, size_t len)
{
    size_t n = wsframe_server_header(out, b0 & 0x0f, len);
    out[0] = b0;
    memcpy(out + n, payload, len);
    return n + len;
}

typedef struct seen {
    unsigned char data[200000];
    size_t len;
    int datas, pings, pongs, closes, firsts, finals;
    const char *error;
} seen;

/* Feeds in[0..len) in pieces of `step` bytes; records what came out. */
static void decode(wsframe_rx *rx, const unsigned char *in, size_t len, size_t step, seen *s)
{
    for (size_t at = 0; at < len && !s->error;) {
        size_t n = len - at < step ? len - at : step;
        size_t off = 0;
        while (off < n && !s->error) {
            size_t used = 0, plen = 0;
            const unsigned char *piece = NULL;
            ws_fragment f;
            const char *why = NULL;
            wsframe_event ev =
                wsframe_next(rx, in + at + off, n - off, &used, &piece, &plen, &f, &why);
            off += used;
            switch (ev) {
            case WSFRAME_MORE: assert_int_equal(off, n); break;
            case WSFRAME_DATA:
                memcpy(s->data + s->len, piece, plen);
                s->len += plen;
                s->datas++;
                s->firsts += f.first;
                s->finals += f.final && f.remaining == 0;
                break;
            case WSFRAME_PING: s->pings++; break;
            case WSFRAME_PONG: s->pongs++; break;
            case WSFRAME_CLOSE: s->closes++; break;
            case WSFRAME_ERROR: s->error = why; break;
            }
        }
        at += n;
    }
}

static void test_client_headers(void **state)
{
    (void)state;
    unsigned char h[14];
    assert_int_equal(wsframe_client_header(h, WSFRAME_OP_TEXT, 0), 6);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 0x80);
    assert_int_equal(wsframe_client_header(h, WSFRAME_OP_BINARY, 125), 6);
    assert_int_equal(h[1], 0x80 | 125);
    assert_int_equal(wsframe_client_header(h, WSFRAME_OP_BINARY, 126), 8);
    assert_int_equal(h[1], 0x80 | 126);
    assert_int_equal(h[2] << 8 | h[3], 126);
    assert_int_equal(wsframe_client_header(h, WSFRAME_OP_BINARY, 65535), 8);
    assert_int_equal(wsframe_client_header(h, WSFRAME_OP_BINARY, 65536), 14);
    assert_int_equal(h[0], 0x82);
    assert_int_equal(h[1], 0x80 | 127);
    assert_int_equal(h[7], 1); /* 65536 = 0x10000, big-endian */
    assert_int_equal(h[8] | h[9], 0);
    assert_int_equal(h[10] | h[11] | h[12] | h[13], 0); /* the zero mask key */
    assert_int_equal(wsframe_server_header(h, WSFRAME_OP_BINARY, (uint64_t)1 << 33), 10);
    assert_int_equal(h[1], 127);
    assert_int_equal(h[5], 2);
}

static void test_frames_whole_and_byte_by_byte(void **state)
{
    (void)state;
    static unsigned char in[300000];
    static unsigned char big[70000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7);
    size_t n = 0;
    n += server_frame(in + n, 0x81, "hello", 5);         /* text */
    n += server_frame(in + n, 0x02, big, 30000);         /* binary, not final */
    n += server_frame(in + n, 0x89, "p", 1);             /* a ping between fragments */
    n += server_frame(in + n, 0x80, big + 30000, 40000); /* continuation, final */
    n += server_frame(in + n, 0x82, "", 0);              /* an empty binary message */
    size_t steps[] = {1, 3, 1000, sizeof in};
    for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
        wsframe_rx rx;
        wsframe_rx_init(&rx);
        seen *s = calloc(1, sizeof *s);
        assert_non_null(s);
        decode(&rx, in, n, steps[k], s);
        assert_null(s->error);
        assert_int_equal(s->len, 5 + 70000);
        assert_memory_equal(s->data, "hello", 5);
        assert_memory_equal(s->data + 5, big, 70000);
        assert_int_equal(s->pings, 1);
        assert_int_equal(s->firsts, 3); /* text, binary, the empty one */
        assert_int_equal(s->finals, 3);
        if (steps[k] == sizeof in)
            assert_int_equal(s->datas, 4); /* one run per frame when all is there */
        free(s);
    }
}

static void test_protocol_errors(void **state)
{
    (void)state;
    struct {
        unsigned char bytes[16];
        size_t len;
        const char *why;
    } cases[] = {
        {{0x81, 0x81, 0, 0, 0, 0, 'x'}, 7, "masked"},
        {{0xc1, 0x01, 'x'}, 3, "reserved"},
        {{0x83, 0x00}, 2, "opcode"},
        {{0x09, 0x00}, 2, "control"},        /* a fragmented ping */
        {{0x89, 126, 0, 126}, 4, "control"}, /* a 126-byte ping */
        {{0x80, 0x01, 'x'}, 3, "continuation"},
        {{0x01, 0x01, 'x', 0x81, 0x01, 'y'}, 6, "inside"},
        {{0x82, 126, 0, 5}, 4, "shortest"},
        {{0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 10, "shortest"},
        {{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, 10, "top bit"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        wsframe_rx rx;
        wsframe_rx_init(&rx);
        seen *s = calloc(1, sizeof *s);
        assert_non_null(s);
        decode(&rx, cases[i].bytes, cases[i].len, 1, s);
        assert_non_null(s->error);
        assert_non_null(strstr(s->error, cases[i].why));
        free(s);
    }
}

/* The decoder and the reader together, as the engine's link uses them. */
static void test_feeds_the_reader(void **state)
{
    (void)state;
    static unsigned char in[4096];
    const char *json = "{\"type\":\"task\",\"nbuf\":1,\"sizes\":[1000]}";
    unsigned char blob[1000];
    memset(blob, 0x5a, sizeof blob);
    size_t n = server_frame(in, 0x81, json, strlen(json));
    n += server_frame(in + n, 0x82, blob, sizeof blob);
    wsframe_rx rx;
    wsframe_rx_init(&rx);
    ws_reader r;
    ws_reader_init(&r, 1 << 20, NULL);
    json_t *msg = NULL;
    ippc_blobs blobs;
    blobs_init(&blobs);
    for (size_t at = 0; at < n;) {
        size_t step = n - at < 7 ? n - at : 7, off = 0;
        while (off < step) {
            size_t used = 0, plen = 0;
            const unsigned char *piece = NULL;
            ws_fragment f;
            const char *why = NULL;
            wsframe_event ev =
                wsframe_next(&rx, in + at + off, step - off, &used, &piece, &plen, &f, &why);
            off += used;
            if (ev == WSFRAME_DATA) {
                ippc_error err = {0};
                int rc = ws_reader_push(&r, &f, piece, plen, &msg, &blobs, &err);
                assert_true(rc >= 0);
            } else {
                assert_int_equal(ev, WSFRAME_MORE);
            }
        }
        at += step;
    }
    assert_non_null(msg);
    assert_string_equal(json_string_value(json_object_get(msg, "type")), "task");
    assert_int_equal(blobs.count, 1);
    assert_int_equal(blobs.items[0].len, 1000);
    assert_memory_equal(blobs.items[0].data, blob, 1000);
    json_decref(msg);
    blobs_free(&blobs);
    ws_reader_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_headers),
        cmocka_unit_test(test_frames_whole_and_byte_by_byte),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_feeds_the_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
