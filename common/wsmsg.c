/* wsmsg.c — ippc message framing over libwebsockets (see wsmsg.h).
 *
 * Outbound: each frame is either a copied JSON text or a retained blobref.  A
 * frame larger than WS_CHUNK is written as a fragmented WebSocket message, one
 * chunk per WRITEABLE callback, so one big array never starves the loop nor
 * needs a second full-size buffer.  The chunk is copied into a scratch buffer
 * with LWS_PRE bytes of headroom, which lws_write requires.
 */
#include "wsmsg.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "bigmem.h"
#include "buf.h"
#include "wsframe.h"

#define WS_CHUNK ((size_t)256 * 1024)

struct ws_blobref {
    atomic_size_t refs;
    unsigned char *data; /* owned, or inside parent's */
    size_t len;
    ws_blobref *parent; /* a slice: the blobref that owns data */
};

ws_blobref *ws_blobref_new(unsigned char *data, size_t len)
{
    ws_blobref *b = malloc(sizeof *b);
    if (!b) {
        free(data);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->data = data;
    b->len = len;
    b->parent = NULL;
    return b;
}

ws_blobref *ws_blobref_slice(ws_blobref *parent, size_t off, size_t len)
{
    assert(off <= parent->len && len <= parent->len - off);
    ws_blobref *b = malloc(sizeof *b);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->data = parent->data + off;
    b->len = len;
    b->parent = ws_blobref_retain(parent);
    return b;
}

ws_blobref *ws_blobref_retain(ws_blobref *b)
{
    atomic_fetch_add(&b->refs, 1);
    return b;
}

void ws_blobref_release(ws_blobref *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        if (b->parent)
            ws_blobref_release(b->parent);
        else
            bigmem_free(b->data);
        free(b);
    }
}

size_t ws_blobref_len(const ws_blobref *b)
{
    return b->len;
}

const unsigned char *ws_blobref_data(const ws_blobref *b)
{
    return b->data;
}

ws_blobref **ws_blobrefs_take(ippc_blobs *blobs, size_t *count)
{
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

void ws_blobrefs_release(ws_blobref **refs, size_t count)
{
    for (size_t i = 0; i < count; i++)
        ws_blobref_release(refs[i]);
    free(refs);
}

struct ws_frame {
    ws_frame *next;
    int binary;
    char *text;       /* text frames: owned copy */
    ws_blobref *blob; /* binary frames: retained */
    size_t len;
    size_t sent;
    size_t charged; /* bytes charged to the queue's account for this frame */
    /* ws_outq_send only: the frame's header and how much of it went out */
    unsigned char hdr[14];
    size_t hdr_len, hdr_sent;
};

void ws_outq_init(ws_outq *q)
{
    pthread_mutex_init(&q->lock, NULL);
    q->head = q->tail = NULL;
    q->bytes = 0;
    q->frames = 0;
    q->account = NULL;
    q->direct = 0;
}

void ws_outq_set_direct(ws_outq *q)
{
    pthread_mutex_lock(&q->lock);
    q->direct = 1;
    pthread_mutex_unlock(&q->lock);
}

void ws_outq_set_account(ws_outq *q, budget_account *account)
{
    pthread_mutex_lock(&q->lock);
    assert(!q->head); /* frames queued before have no charge to give back */
    q->account = account;
    pthread_mutex_unlock(&q->lock);
}

static void frame_free(ws_outq *q, ws_frame *f)
{
    if (f->charged)
        budget_give(q->account, f->charged);
    free(f->text);
    if (f->blob)
        ws_blobref_release(f->blob);
    free(f);
}

/* Pops the head frame once it is all out; returns it (to be freed outside
 * the lock) or NULL.  Called with the lock held. */
static ws_frame *outq_pop_sent(ws_outq *q)
{
    ws_frame *f = q->head;
    if (!f || f->sent < f->len || !f->hdr_len || f->hdr_sent < f->hdr_len)
        return NULL;
    q->head = f->next;
    if (!q->head)
        q->tail = NULL;
    q->frames--;
    return f;
}

static void outq_drop(ws_outq *q, int keep_started)
{
    pthread_mutex_lock(&q->lock);
    ws_frame *f = q->head;
    /* A message already partly on the wire must be finished first, or the
     * next frame would break the stream (RFC 6455 fragments). */
    ws_frame *keep = keep_started && f && (f->sent > 0 || f->hdr_sent > 0) ? f : NULL;
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
        frame_free(q, f);
        f = next;
    }
}

void ws_outq_clear(ws_outq *q)
{
    outq_drop(q, 1);
}

void ws_outq_reset(ws_outq *q)
{
    outq_drop(q, 0);
}

void ws_outq_destroy(ws_outq *q)
{
    ws_outq_reset(q);
    pthread_mutex_destroy(&q->lock);
}

int ws_outq_push(ws_outq *q, json_t *msg, ws_blobref **blobs, size_t nblobs)
{
    json_object_set_new(msg, "nbuf", json_integer((json_int_t)nblobs));
    /* The receiver allocates each binary frame once from "sizes" instead of
     * growing a buffer as the fragments come (docs/streams.md). */
    if (nblobs) {
        json_t *sizes = json_array();
        for (size_t i = 0; sizes && i < nblobs; i++)
            json_array_append_new(sizes, json_integer((json_int_t)blobs[i]->len));
        if (!sizes || json_array_size(sizes) != nblobs ||
            json_object_set_new(msg, "sizes", sizes) < 0)
            return -1;
    } else {
        json_object_del(msg, "sizes");
    }
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
    /* Each frame carries its own charge, given back as it leaves. */
    if (q->account) {
        if (budget_take(q->account, bytes, "queued output", NULL) < 0)
            goto fail;
        for (ws_frame *f = first; f; f = f->next)
            f->charged = f->len;
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
        frame_free(q, first);
        first = next;
    }
    return -1;
}

static int push_text(ws_outq *q, const char *text, size_t len, int front, int charge,
                     ippc_error *err)
{
    if (charge && q->account && budget_take(q->account, len, "queued output", err) < 0)
        return -1;
    ws_frame *f = calloc(1, sizeof *f);
    char *copy = malloc(len + 1);
    if (!f || !copy) {
        free(f);
        free(copy);
        if (charge && q->account)
            budget_give(q->account, len);
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    f->text = copy;
    f->len = len;
    f->charged = charge && q->account ? len : 0;
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

int ws_outq_push_text(ws_outq *q, const char *text, size_t len, ippc_error *err)
{
    return push_text(q, text, len, 0, 1, err);
}

int ws_outq_push_front_text(ws_outq *q, const char *text, size_t len, ippc_error *err)
{
    return push_text(q, text, len, 1, 1, err);
}

int ws_outq_push_notice(ws_outq *q, const char *text, size_t len)
{
    assert(len <= 4096); /* uncharged: only for short notices */
    return push_text(q, text, len, 0, 0, NULL);
}

int ws_outq_push_blobs(ws_outq *q, json_t *msg, ippc_blobs *blobs)
{
    size_t n = 0;
    ws_blobref **refs = ws_blobrefs_take(blobs, &n);
    if (blobs && n == 0 && blobs->count)
        return -1;
    int rc = ws_outq_push(q, msg, refs, n);
    ws_blobrefs_release(refs, n);
    return rc;
}

int ws_outq_empty(ws_outq *q)
{
    pthread_mutex_lock(&q->lock);
    int empty = q->head == NULL;
    pthread_mutex_unlock(&q->lock);
    return empty;
}

/* Sends what is left of f (its header, then its payload) with one sendmsg,
 * without blocking; accounts what went.  Called with the lock held.  The
 * bytes sent, or -1 with errno (EAGAIN: the socket is full). */
static ssize_t frame_sendmsg(ws_outq *q, ws_frame *f, int fd)
{
    const unsigned char *src = f->binary ? f->blob->data : (const unsigned char *)f->text;
    struct iovec iov[2];
    int n = 0;
    if (f->hdr_sent < f->hdr_len)
        iov[n++] = (struct iovec){f->hdr + f->hdr_sent, f->hdr_len - f->hdr_sent};
    if (f->sent < f->len)
        iov[n++] = (struct iovec){(void *)(src + f->sent), f->len - f->sent};
    if (n == 0)
        return 0;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t w;
    do
        w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return -1;
    size_t k = (size_t)w, h = f->hdr_len - f->hdr_sent;
    if (h > k)
        h = k;
    f->hdr_sent += h;
    f->sent += k - h;
    q->bytes -= k - h;
    return w;
}

/* ws_outq_write's way for a large binary frame on a direct queue: the header
 * and then the blob itself, written to the socket as it takes them.  Called
 * with the lock held; the same return values. */
static int outq_write_direct(ws_outq *q, ws_frame *f, struct lws *wsi)
{
    if (!f->hdr_len)
        f->hdr_len = wsframe_server_header(f->hdr, WSFRAME_OP_BINARY, f->len);
    int fd = lws_get_socket_fd(wsi);
    while (f->hdr_sent < f->hdr_len || f->sent < f->len) {
        if (frame_sendmsg(q, f, fd) < 0) {
            pthread_mutex_unlock(&q->lock);
            return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
        }
    }
    ws_frame *done = outq_pop_sent(q);
    assert(done == f);
    int more = q->head != NULL;
    pthread_mutex_unlock(&q->lock);
    frame_free(q, done);
    return more;
}

int ws_outq_write(ws_outq *q, struct lws *wsi)
{
    static _Thread_local unsigned char scratch[LWS_PRE + WS_CHUNK];
    /* The lock is held across the write: other threads may clear the queue
     * at any time, and the head frame must not vanish under lws_write. */
    pthread_mutex_lock(&q->lock);
    ws_frame *f = q->head;
    if (!f) {
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    /* A direct frame, once begun, is finished the same way. */
    if (f->hdr_sent ||
        (q->direct && f->binary && f->len > WS_CHUNK && f->sent == 0 && !lws_partial_buffered(wsi)))
        return outq_write_direct(q, f, wsi);
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
        frame_free(q, f);
    return more;
}

void ws_reader_init(ws_reader *r, size_t max_message, budget_account *account)
{
    memset(r, 0, sizeof *r);
    r->max_message = max_message;
    r->account = account;
    r->announced = WS_NOT_ANNOUNCED;
    blobs_init(&r->blobs);
}

/* Every byte the reader holds is charged before it is allocated and credited
 * when it is freed or handed over; r->charged is the running total. */
static int reader_charge(ws_reader *r, size_t n, ippc_error *err)
{
    if (!r->account || n == 0)
        return 0;
    if (budget_take(r->account, n, "a WebSocket message", err) < 0)
        return -1;
    r->charged += n;
    return 0;
}

static void reader_credit(ws_reader *r, size_t n)
{
    if (!r->account || n == 0)
        return;
    assert(n <= r->charged);
    budget_give(r->account, n);
    r->charged -= n;
}

/* A buffer bigger than this is not kept for the next message. */
#define READER_KEEP ((size_t)64 * 1024)

static void reader_drop_buffer(ws_reader *r)
{
    free(r->buf);
    reader_credit(r, r->cap);
    r->buf = NULL;
    r->len = r->cap = 0;
}

/* Drops what is held of the current message (JSON, binary frames, the frame
 * being received); the reader is ready for the next message. */
static void reader_drop_message(ws_reader *r)
{
    json_decref(r->pending);
    r->pending = NULL;
    r->want = 0;
    blobs_free(&r->blobs);
    blobs_init(&r->blobs);
    reader_credit(r, r->blob_charge + r->json_charge);
    r->blob_charge = r->json_charge = 0;
    r->message_bytes = 0;
    r->len = 0;
    r->announced = WS_NOT_ANNOUNCED;
    if (r->cap > READER_KEEP)
        reader_drop_buffer(r);
}

void ws_reader_free(ws_reader *r)
{
    reader_drop_message(r);
    reader_drop_buffer(r);
    assert(r->charged == 0);
    memset(r, 0, sizeof *r);
}

/* The message is refused: drop it, and skip the rest of this WebSocket
 * message unless this fragment ended it.  Returns -1 (err is set). */
static int reader_refuse(ws_reader *r, const ws_fragment *f)
{
    reader_drop_message(r);
    if (f->final && f->remaining == 0) {
        r->in_message = 0;
        r->skipping = 0;
    } else {
        r->skipping = 1;
    }
    return -1;
}

static int reader_protocol_error(ws_reader *r, ippc_error *err, const char *what)
{
    reader_drop_message(r);
    r->in_message = r->skipping = 0;
    r->protocol_error = 1;
    return ippc_error_set(err, ERR_BAD_REQUEST, "WebSocket protocol error: %s", what);
}

/* Room for len more bytes of a frame with `remaining` bytes after them: the
 * buffer doubles (few copies for a frame that arrives in many pieces) but never
 * past the end the frame header announced, so a buffer is as big as its frame
 * and not twice that. */
static int reader_reserve(ws_reader *r, size_t len, size_t remaining, ippc_error *err)
{
    size_t need = r->len + len;
    /* A binary frame the JSON announced ("sizes") is allocated whole, once,
     * in fresh memory (bigmem_alloc) rather than grown from the text's. */
    int announced = r->announced != WS_NOT_ANNOUNCED && need <= r->announced;
    if (announced && r->len == 0 && r->buf && r->cap != r->announced)
        reader_drop_buffer(r);
    if (need <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap * 2 : 4096;
    if (announced)
        cap = r->announced;
    size_t frame_end = need + remaining; /* <= max_message: checked by the caller */
    if (cap > frame_end && r->announced == WS_NOT_ANNOUNCED)
        cap = frame_end;
    if (cap < need)
        cap = need;
    if (reader_charge(r, cap - r->cap, err) < 0)
        return -1;
    /* A frame's first allocation is usually its whole size ("sizes"). */
    unsigned char *buf = r->buf ? realloc(r->buf, cap) : bigmem_alloc(cap);
    if (!buf) {
        reader_credit(r, cap - r->cap);
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    r->buf = buf;
    r->cap = cap;
    return 0;
}

static int reader_deliver(ws_reader *r, json_t **msg, ippc_blobs *blobs)
{
    *msg = r->pending;
    r->pending = NULL;
    *blobs = r->blobs;
    blobs_init(&r->blobs);
    /* The caller holds it now. */
    reader_credit(r, r->blob_charge + r->json_charge);
    r->blob_charge = r->json_charge = 0;
    r->message_bytes = 0;
    r->want = 0;
    return 1;
}

/* A binary frame is complete: its buffer itself becomes the next blob (no copy
 * of bulk data), its charge moves along with it. */
static int reader_end_binary(ws_reader *r, const ws_fragment *f, json_t **msg, ippc_blobs *blobs,
                             ippc_error *err)
{
    unsigned char *data = r->buf;
    size_t n = r->len, charge = r->cap;
    if (r->announced != WS_NOT_ANNOUNCED && n != r->announced) {
        ippc_error_set(err, ERR_BAD_REQUEST,
                       "binary frame %zu is %zu bytes long, but \"sizes\" announced %zu",
                       r->blobs.count + 1, n, r->announced);
        return reader_refuse(r, f);
    }
    r->announced = WS_NOT_ANNOUNCED;
    if (!data) {
        if (reader_charge(r, 1, err) < 0)
            return reader_refuse(r, f);
        data = malloc(1);
        charge = 1;
        if (!data) {
            reader_credit(r, 1);
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
            return reader_refuse(r, f);
        }
    }
    r->buf = NULL;
    r->len = r->cap = 0;
    r->blob_charge += charge;
    r->message_bytes += n;
    if (blobs_push(&r->blobs, data, n) < 0) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return reader_refuse(r, f);
    }
    if (--r->want == 0)
        return reader_deliver(r, msg, blobs);
    return 0;
}

/* "sizes" must be one byte length per announced binary frame, and the whole
 * message must fit max_message (so no announced size can make the reader
 * allocate past it). */
static int reader_check_sizes(const ws_reader *r, const json_t *sizes, const json_t *nbuf,
                              size_t text, ippc_error *err)
{
    size_t n = nbuf ? (size_t)json_integer_value(nbuf) : 0;
    if (!json_is_array(sizes) || json_array_size(sizes) != n)
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "\"sizes\" must be an array of \"nbuf\" byte lengths");
    size_t total = text;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(sizes, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return ippc_error_set(err, ERR_BAD_REQUEST,
                                  "\"sizes\" must hold byte lengths (integers >= 0)");
        size_t len = (size_t)json_integer_value(v);
        if (len > r->max_message - total)
            return ippc_error_set(err, ERR_TOO_LARGE,
                                  "message larger than %zu bytes (JSON and its binary frames "
                                  "together)",
                                  r->max_message);
        total += len;
    }
    return 0;
}

static int reader_end_text(ws_reader *r, const ws_fragment *f, json_t **msg, ippc_blobs *blobs,
                           ippc_error *err)
{
    json_error_t jerr;
    json_t *m = json_loadb((const char *)r->buf, r->len, JSON_REJECT_DUPLICATES, &jerr);
    size_t text = r->len;
    r->len = 0;
    if (r->cap > READER_KEEP)
        reader_drop_buffer(r);
    if (!m || !json_is_object(m)) {
        json_decref(m);
        ippc_error_set(err, ERR_BAD_REQUEST, "message is not a JSON object: %s",
                       m ? "wrong type" : jerr.text);
        return reader_refuse(r, f);
    }
    json_t *nbuf = json_object_get(m, "nbuf");
    if (nbuf && (!json_is_integer(nbuf) || json_integer_value(nbuf) < 0 ||
                 json_integer_value(nbuf) > WS_MAX_NBUF)) {
        json_decref(m);
        ippc_error_set(err, ERR_BAD_REQUEST, "\"nbuf\" must be an integer from 0 to %d",
                       WS_MAX_NBUF);
        return reader_refuse(r, f);
    }
    json_t *sizes = json_object_get(m, "sizes");
    if (sizes && reader_check_sizes(r, sizes, nbuf, text, err) < 0) {
        json_decref(m);
        return reader_refuse(r, f);
    }
    /* The parsed JSON is held until its binary frames are in: it keeps the
     * charge of its text (the buffer's charge went with the buffer). */
    if (reader_charge(r, text, err) < 0) {
        json_decref(m);
        return reader_refuse(r, f);
    }
    r->json_charge = text;
    r->message_bytes = text;
    r->pending = m;
    r->want = nbuf ? (size_t)json_integer_value(nbuf) : 0;
    if (r->want == 0)
        return reader_deliver(r, msg, blobs);
    return 0;
}

int ws_reader_push(ws_reader *r, const ws_fragment *f, const void *in, size_t len, json_t **msg,
                   ippc_blobs *blobs, ippc_error *err)
{
    if (f->first) {
        if (r->in_message)
            return reader_protocol_error(r, err, "a message began inside another one");
        r->in_message = 1;
        r->skipping = 0;
        r->len = 0;
        if (f->binary && (!r->pending || r->want == 0)) {
            ippc_error_set(err, ERR_BAD_REQUEST,
                           "a binary frame must follow a JSON message that announces it "
                           "(\"nbuf\")");
            return reader_refuse(r, f);
        }
        if (f->binary) {
            json_t *sizes = json_object_get(r->pending, "sizes");
            r->announced = sizes ? (size_t)json_integer_value(json_array_get(sizes, r->blobs.count))
                                 : WS_NOT_ANNOUNCED;
        }
        if (!f->binary && r->pending) {
            ippc_error_set(err, ERR_BAD_REQUEST,
                           "a text message came while %zu binary frames were due; both are "
                           "dropped",
                           r->want);
            return reader_refuse(r, f);
        }
    } else if (!r->in_message) {
        return reader_protocol_error(r, err, "a continuation without a message");
    }
    if (r->skipping) {
        if (f->final && f->remaining == 0)
            r->in_message = r->skipping = 0;
        return 0;
    }

    /* The whole message counts: what is held of it, these bytes, and the rest
     * of this frame as its header announced it. */
    size_t held = r->message_bytes + r->len;
    assert(held <= r->max_message);
    size_t room = r->max_message - held;
    if (len > room || f->remaining > room - len) {
        ippc_error_set(err, ERR_TOO_LARGE,
                       "message larger than %zu bytes (JSON and its binary frames together)",
                       r->max_message);
        return reader_refuse(r, f);
    }
    if (r->announced != WS_NOT_ANNOUNCED && len > r->announced - r->len) {
        ippc_error_set(err, ERR_BAD_REQUEST,
                       "binary frame %zu is longer than the %zu bytes \"sizes\" announced",
                       r->blobs.count + 1, r->announced);
        return reader_refuse(r, f);
    }
    if (reader_reserve(r, len, f->remaining, err) < 0)
        return reader_refuse(r, f);
    if (len)
        memcpy(r->buf + r->len, in, len);
    r->len += len;
    if (!f->final || f->remaining)
        return 0;

    r->in_message = 0;
    return f->binary ? reader_end_binary(r, f, msg, blobs, err)
                     : reader_end_text(r, f, msg, blobs, err);
}

int ws_reader_feed(ws_reader *r, struct lws *wsi, const void *in, size_t len, json_t **msg,
                   ippc_blobs *blobs, ippc_error *err)
{
    ws_fragment f = {.first = lws_is_first_fragment(wsi),
                     .final = lws_is_final_fragment(wsi),
                     .binary = lws_frame_is_binary(wsi),
                     .remaining = lws_remaining_packet_payload(wsi)};
    return ws_reader_push(r, &f, in, len, msg, blobs, err);
}

int ws_reader_fatal(const ws_reader *r, const ippc_error *err)
{
    if (r->protocol_error)
        return 1002;
    if (strcmp(err->code, ERR_TOO_LARGE) == 0)
        return 1009;
    if (strcmp(err->code, ERR_INTERNAL) == 0)
        return 1011;
    if (strcmp(err->code, ERR_OVERLOADED) == 0)
        return 1013;
    return 0;
}

int ws_outq_send(ws_outq *q, int fd)
{
    for (;;) {
        pthread_mutex_lock(&q->lock);
        ws_frame *f = q->head;
        if (!f) {
            pthread_mutex_unlock(&q->lock);
            return 0;
        }
        if (!f->hdr_len)
            f->hdr_len = wsframe_client_header(
                f->hdr, f->binary ? WSFRAME_OP_BINARY : WSFRAME_OP_TEXT, f->len);
        if (frame_sendmsg(q, f, fd) < 0) {
            pthread_mutex_unlock(&q->lock);
            return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
        }
        ws_frame *done = outq_pop_sent(q);
        pthread_mutex_unlock(&q->lock);
        if (done)
            frame_free(q, done);
    }
}

int ws_outq_mid_frame(ws_outq *q)
{
    pthread_mutex_lock(&q->lock);
    int mid = q->head && (q->head->sent > 0 || q->head->hdr_sent > 0);
    pthread_mutex_unlock(&q->lock);
    return mid;
}
