/* fake_engines.h — fake engines for the server unit tests that drive server/hub.c
 * through its public API (test_server_hub.c, test_server_tasks.c).  No sockets,
 * no MPI.
 *
 * A fake engine is a fake_link handed to the hub as its hub_engine_link.  It
 * records every message the hub sends as it would appear on the wire: send()
 * queues the message on a real ws_outq (common/wsmsg.c, as ws.c does) and
 * drains it at once through lws_write(), which this header defines, so what a
 * fake engine "received" is exactly the frames a real one would get — the JSON
 * text frame, then one binary frame per blob.  The real ws_outq path (framing,
 * fragmentation, blob references) is exercised rather than a shortcut that
 * hands the json_t over directly.  (The linker resolves wsmsg.o's lws_write to
 * this definition before the shared libwebsockets.)
 *
 * The tests register fake engines with register_msg()/register_ok(), read what
 * each one received from fake_link.msgs, and answer as the engine with
 * result_from().
 *
 * Include it from exactly one file of a test binary: lws_write is an external
 * definition, and the rest are static functions for that file.
 */
#ifndef IPPC_FAKE_ENGINES_H
#define IPPC_FAKE_ENGINES_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <libwebsockets.h>

#include "hub.h"
#include "value.h"
#include "wsmsg.h"

/* The engine key the hubs under test are configured with. */
#define FAKE_ENGINE_KEY "sekrit-engine-key"

/* One message as an engine would receive it. */
typedef struct wire_msg {
    json_t *msg;
    ippc_blobs blobs;
} wire_msg;

/* One fake engine's end of its link: what it received, and how it behaves. */
typedef struct fake_link {
    wire_msg *msgs;
    size_t n, cap;
    int fail_send; /* send() returns -1 */
    int closes;    /* close() calls */
    char close_reason[128];
} fake_link;

/* lws_write writes frames here; a frame ends when NO_FIN is clear. */
typedef struct frame_capture {
    unsigned char **frames;
    size_t *lens;
    int *binary;
    size_t n, cap;
    int open; /* the last frame is still receiving continuations */
} frame_capture;

/* Stands in for libwebsockets' lws_write: wsi is a frame_capture. */
int lws_write(struct lws *wsi, unsigned char *buf, size_t len, enum lws_write_protocol protocol)
{
    frame_capture *c = (frame_capture *)(void *)wsi;
    int flags = (int)protocol;
    if (!c->open) {
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 8;
            c->frames = realloc(c->frames, c->cap * sizeof *c->frames);
            c->lens = realloc(c->lens, c->cap * sizeof *c->lens);
            c->binary = realloc(c->binary, c->cap * sizeof *c->binary);
            assert_non_null(c->frames);
            assert_non_null(c->lens);
            assert_non_null(c->binary);
        }
        assert_true((flags & 0x3) == LWS_WRITE_TEXT || (flags & 0x3) == LWS_WRITE_BINARY);
        c->frames[c->n] = NULL;
        c->lens[c->n] = 0;
        c->binary[c->n] = (flags & 0x3) == LWS_WRITE_BINARY;
        c->n++;
    } else {
        assert_int_equal(flags & 0x3, LWS_WRITE_CONTINUATION);
    }
    size_t i = c->n - 1;
    unsigned char *grown = realloc(c->frames[i], c->lens[i] + len + 1);
    assert_non_null(grown);
    if (len)
        memcpy(grown + c->lens[i], buf, len);
    c->frames[i] = grown;
    c->lens[i] += len;
    c->open = (flags & LWS_WRITE_NO_FIN) != 0;
    return (int)len;
}

/* hub_engine_link.send: the message goes through a ws_outq onto the wire,
 * and the frames written are parsed back into a wire_msg on link conn. */
static int fake_send(void *conn, json_t *msg, ws_blobref **blobs, size_t nblobs)
{
    fake_link *l = conn;
    if (l->fail_send)
        return -1;
    ws_outq q;
    ws_outq_init(&q);
    assert_int_equal(ws_outq_push(&q, msg, blobs, nblobs), 0);
    frame_capture c = {0};
    while (ws_outq_write(&q, (struct lws *)(void *)&c) == 1)
        ;
    assert_true(ws_outq_empty(&q));
    ws_outq_destroy(&q);
    assert_false(c.open);
    assert_int_equal(c.n, nblobs + 1);

    /* Frame 0 is the JSON text; then exactly "nbuf" binary frames. */
    assert_false(c.binary[0]);
    json_error_t jerr;
    json_t *m = json_loadb((const char *)c.frames[0], c.lens[0], 0, &jerr);
    assert_non_null(m);
    assert_int_equal(json_integer_value(json_object_get(m, "nbuf")), (json_int_t)nblobs);
    free(c.frames[0]);
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->msgs = realloc(l->msgs, l->cap * sizeof *l->msgs);
        assert_non_null(l->msgs);
    }
    wire_msg *w = &l->msgs[l->n++];
    w->msg = m;
    blobs_init(&w->blobs);
    for (size_t i = 1; i < c.n; i++) {
        assert_true(c.binary[i]);
        assert_int_equal(c.lens[i], ws_blobref_len(blobs[i - 1]));
        assert_true(blobs_push(&w->blobs, c.frames[i], c.lens[i]) >= 0);
    }
    free(c.frames);
    free(c.lens);
    free(c.binary);
    return 0;
}

/* hub_engine_link.close: counted, with the last reason kept. */
static void fake_close(void *conn, const char *reason)
{
    fake_link *l = conn;
    l->closes++;
    snprintf(l->close_reason, sizeof l->close_reason, "%s", reason ? reason : "");
}

/* Frees what link l received and zeroes it. */
static void link_clear(fake_link *l)
{
    for (size_t i = 0; i < l->n; i++) {
        json_decref(l->msgs[i].msg);
        blobs_free(&l->msgs[i].blobs);
    }
    free(l->msgs);
    memset(l, 0, sizeof *l);
}

static hub_engine_link link_of(fake_link *l)
{
    return (hub_engine_link){.conn = l, .send = fake_send, .close = fake_close};
}

/* A well-formed register message for job/rank of size with key. */
static json_t *register_msg(const char *key, const char *job, int rank, int size)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:i, s:s}", "type", "register", "key", key,
                     "job", job, "rank", rank, "size", size, "host", "node1", "pid", 4000 + rank,
                     "version", "0.1.0");
}

/* Registers job/rank on link l with hub h; returns the engine id (asserts
 * success). */
__attribute__((unused)) static int register_ok(hub *h, fake_link *l, const char *job, int rank,
                                               int size)
{
    json_t *msg = register_msg(FAKE_ENGINE_KEY, job, rank, size);
    hub_engine_link link = link_of(l);
    int id = -1;
    ippc_error err = {{0}, {0}};
    int rc = hub_engine_register(h, msg, &link, &id, &err);
    if (rc != 0)
        print_error("register %s/%d failed: %s: %s\n", job, rank, err.code, err.message);
    assert_int_equal(rc, 0);
    json_decref(msg);
    return id;
}

/* Engine engine_id sends {"type":"result","task":task} plus the fields of
 * extra (consumed; may be NULL) and blobs (moved; may be NULL) to hub h. */
__attribute__((unused)) static void result_from(hub *h, int engine_id, json_int_t task,
                                                json_t *extra, ippc_blobs *blobs)
{
    json_t *msg = json_pack("{s:s, s:I}", "type", "result", "task", task);
    if (extra) {
        json_object_update(msg, extra);
        json_decref(extra);
    }
    ippc_blobs none;
    blobs_init(&none);
    hub_engine_message(h, engine_id, msg, blobs ? blobs : &none);
}

#endif
