/* wsmsg.c — ippc message framing over libwebsockets (see wsmsg.h).
 *
 * Outbound: each frame is either a copied JSON text or a retained blobref.  A
 * frame larger than WS_CHUNK is written as a fragmented WebSocket message, one
 * chunk per WRITEABLE callback, so one big array never starves the loop nor
 * needs a second full-size buffer.  The chunk is copied into a scratch buffer
 * with LWS_PRE bytes of headroom, which lws_write requires.
 */
#include "wsmsg.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define WS_CHUNK (256 * 1024)

struct ws_blobref {
    atomic_size_t refs;
    unsigned char *data;
    size_t len;
};

ws_blobref *ws_blobref_new(unsigned char *data, size_t len) {
    ws_blobref *b = malloc(sizeof *b);
    if (!b) {
        free(data);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->data = data;
    b->len = len;
    return b;
}

ws_blobref *ws_blobref_retain(ws_blobref *b) {
    atomic_fetch_add(&b->refs, 1);
    return b;
}

void ws_blobref_release(ws_blobref *b) {
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->data);
        free(b);
    }
}

size_t ws_blobref_len(const ws_blobref *b) { return b->len; }

ws_blobref **ws_blobrefs_take(ippc_blobs *blobs, size_t *count) {
    *count = 0;
    if (!blobs || blobs->count == 0)
        return NULL;
    ws_blobref **refs = calloc(blobs->count, sizeof *refs);
    if (!refs)
        return NULL;
    size_t n = blobs->count;
    for (size_t i = 0; i < n; i++) {
        refs[i] = ws_blobref_new(blobs->items[i].data, blobs->items[i].len);
        blobs->items[i].data = NULL;
        if (!refs[i]) {
            ws_blobrefs_release(refs, i);
            blobs_free(blobs);
            blobs_init(blobs);
            return NULL;
        }
    }
    blobs_free(blobs);
    blobs_init(blobs);
    *count = n;
    return refs;
}

void ws_blobrefs_release(ws_blobref **refs, size_t count) {
    for (size_t i = 0; i < count; i++)
        ws_blobref_release(refs[i]);
    free(refs);
}

struct ws_frame {
    ws_frame *next;
    int binary;
    char *text;        /* text frames: owned copy */
    ws_blobref *blob;  /* binary frames: retained */
    size_t len;
    size_t sent;
};

void ws_outq_init(ws_outq *q) {
    pthread_mutex_init(&q->lock, NULL);
    q->head = q->tail = NULL;
    q->bytes = 0;
    q->frames = 0;
}

static void frame_free(ws_frame *f) {
    free(f->text);
    if (f->blob)
        ws_blobref_release(f->blob);
    free(f);
}

void ws_outq_clear(ws_outq *q) {
    pthread_mutex_lock(&q->lock);
    ws_frame *f = q->head;
    /* A message already partly on the wire must be finished first, or the
     * next frame would break the stream (RFC 6455 fragments). */
    ws_frame *keep = f && f->sent > 0 ? f : NULL;
    if (keep) {
        f = keep->next;
        keep->next = NULL;
        q->head = q->tail = keep;
        q->bytes = keep->len - keep->sent;
        q->frames = 1;
    } else {
        q->head = q->tail = NULL;
        q->bytes = 0;
        q->frames = 0;
    }
    pthread_mutex_unlock(&q->lock);
    while (f) {
        ws_frame *next = f->next;
        frame_free(f);
        f = next;
    }
}

void ws_outq_destroy(ws_outq *q) {
    ws_outq_clear(q);
    pthread_mutex_destroy(&q->lock);
}

int ws_outq_push(ws_outq *q, json_t *msg, ws_blobref **blobs, size_t nblobs) {
    json_object_set_new(msg, "nbuf", json_integer((json_int_t)nblobs));
    char *text = jsonout_dumps(msg, JSON_COMPACT);
    if (!text)
        return -1;
    ws_frame *first = calloc(1, sizeof *first), *last = first;
    if (!first) {
        free(text);
        return -1;
    }
    first->text = text;
    first->len = strlen(text);
    size_t bytes = first->len;
    for (size_t i = 0; i < nblobs; i++) {
        ws_frame *f = calloc(1, sizeof *f);
        if (!f)
            goto fail;
        f->binary = 1;
        f->blob = ws_blobref_retain(blobs[i]);
        f->len = blobs[i]->len;
        bytes += f->len;
        last->next = f;
        last = f;
    }
    pthread_mutex_lock(&q->lock);
    if (q->tail)
        q->tail->next = first;
    else
        q->head = first;
    q->tail = last;
    q->bytes += bytes;
    q->frames += nblobs + 1;
    pthread_mutex_unlock(&q->lock);
    return 0;
fail:
    while (first) {
        ws_frame *next = first->next;
        frame_free(first);
        first = next;
    }
    return -1;
}

static int push_text(ws_outq *q, const char *text, size_t len, int front) {
    ws_frame *f = calloc(1, sizeof *f);
    char *copy = malloc(len + 1);
    if (!f || !copy) {
        free(f);
        free(copy);
        return -1;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    f->text = copy;
    f->len = len;
    pthread_mutex_lock(&q->lock);
    /* In front only of a frame not yet started: never split a message. */
    if (front && (!q->head || q->head->sent == 0)) {
        f->next = q->head;
        q->head = f;
        if (!q->tail)
            q->tail = f;
    } else if (q->tail) {
        q->tail->next = f;
        q->tail = f;
    } else {
        q->head = q->tail = f;
    }
    q->bytes += len;
    q->frames++;
    pthread_mutex_unlock(&q->lock);
    return 0;
}

int ws_outq_push_text(ws_outq *q, const char *text, size_t len) {
    return push_text(q, text, len, 0);
}

int ws_outq_push_front_text(ws_outq *q, const char *text, size_t len) {
    return push_text(q, text, len, 1);
}

int ws_outq_push_blobs(ws_outq *q, json_t *msg, ippc_blobs *blobs) {
    size_t n = 0;
    ws_blobref **refs = ws_blobrefs_take(blobs, &n);
    if (blobs && n == 0 && blobs->count)
        return -1;
    int rc = ws_outq_push(q, msg, refs, n);
    ws_blobrefs_release(refs, n);
    return rc;
}

int ws_outq_empty(ws_outq *q) {
    pthread_mutex_lock(&q->lock);
    int empty = q->head == NULL;
    pthread_mutex_unlock(&q->lock);
    return empty;
}

int ws_outq_write(ws_outq *q, struct lws *wsi) {
    static _Thread_local unsigned char scratch[LWS_PRE + WS_CHUNK];
    /* The lock is held across the write: other threads may clear the queue
     * at any time, and the head frame must not vanish under lws_write. */
    pthread_mutex_lock(&q->lock);
    ws_frame *f = q->head;
    if (!f) {
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    size_t chunk = f->len - f->sent;
    if (chunk > WS_CHUNK)
        chunk = WS_CHUNK;
    const unsigned char *src = f->binary ? f->blob->data : (const unsigned char *)f->text;
    if (chunk)
        memcpy(scratch + LWS_PRE, src + f->sent, chunk);
    int first = f->sent == 0;
    int final = f->sent + chunk == f->len;
    int flags = lws_write_ws_flags(f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT, first, final);
    int n = lws_write(wsi, scratch + LWS_PRE, chunk, (enum lws_write_protocol)flags);
    if (n < (int)chunk) {
        pthread_mutex_unlock(&q->lock);
        return -1;
    }
    f->sent += chunk;
    q->bytes -= chunk;
    if (final) {
        q->head = f->next;
        if (!q->head)
            q->tail = NULL;
        q->frames--;
    }
    int more = q->head != NULL;
    pthread_mutex_unlock(&q->lock);
    if (final)
        frame_free(f);
    return more;
}

void ws_reader_init(ws_reader *r, size_t max_message) {
    memset(r, 0, sizeof *r);
    r->max_message = max_message;
    blobs_init(&r->blobs);
}

void ws_reader_free(ws_reader *r) {
    free(r->buf);
    json_decref(r->pending);
    blobs_free(&r->blobs);
    memset(r, 0, sizeof *r);
}

static int reader_append(ws_reader *r, const void *in, size_t len, ippc_error *err) {
    if (len > r->max_message - r->len)
        return ippc_error_set(err, ERR_TOO_LARGE, "message larger than %zu bytes", r->max_message);
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + len)
            cap *= 2;
        unsigned char *buf = realloc(r->buf, cap);
        if (!buf)
            return ippc_error_set(err, ERR_INTERNAL, "out of memory");
        r->buf = buf;
        r->cap = cap;
    }
    if (len)
        memcpy(r->buf + r->len, in, len);
    r->len += len;
    return 0;
}

static int reader_deliver(ws_reader *r, json_t **msg, ippc_blobs *blobs) {
    *msg = r->pending;
    r->pending = NULL;
    *blobs = r->blobs;
    blobs_init(&r->blobs);
    return 1;
}

int ws_reader_feed(ws_reader *r, struct lws *wsi, const void *in, size_t len, json_t **msg,
                   ippc_blobs *blobs, ippc_error *err) {
    if (reader_append(r, in, len, err) < 0)
        return -1;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
        return 0;

    int binary = lws_frame_is_binary(wsi);
    if (binary) {
        if (!r->pending || r->want == 0)
            return ippc_error_set(err, ERR_BAD_REQUEST, "binary frame without a message");
        /* Hand the buffer itself to the blob list: no copy of bulk data. */
        unsigned char *data = r->buf;
        size_t n = r->len;
        if (!data) {
            data = malloc(1);
            if (!data)
                return ippc_error_set(err, ERR_INTERNAL, "out of memory");
        }
        r->buf = NULL;
        r->len = r->cap = 0;
        if (blobs_push(&r->blobs, data, n) < 0)
            return ippc_error_set(err, ERR_INTERNAL, "out of memory");
        if (--r->want == 0)
            return reader_deliver(r, msg, blobs);
        return 0;
    }

    if (r->pending)
        return ippc_error_set(err, ERR_BAD_REQUEST, "text frame while %zu binary frames are due",
                              r->want);
    json_error_t jerr;
    json_t *m = json_loadb((const char *)r->buf, r->len, JSON_REJECT_DUPLICATES, &jerr);
    r->len = 0;
    if (!m || !json_is_object(m)) {
        json_decref(m);
        return ippc_error_set(err, ERR_BAD_REQUEST, "message is not a JSON object: %s",
                              m ? "wrong type" : jerr.text);
    }
    json_t *nbuf = json_object_get(m, "nbuf");
    json_int_t want = json_is_integer(nbuf) ? json_integer_value(nbuf) : 0;
    if (want < 0 || want > 4096) {
        json_decref(m);
        return ippc_error_set(err, ERR_BAD_REQUEST, "bad nbuf");
    }
    r->pending = m;
    r->want = (size_t)want;
    if (r->want == 0)
        return reader_deliver(r, msg, blobs);
    return 0;
}
