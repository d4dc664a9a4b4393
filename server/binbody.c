/* binbody.c — binary answer bodies as segments (see binbody.h).
 *
 * A body is a list of segments, each a run of bytes: the pieces written
 * here live in one text buffer (segments refer to it by offset until the
 * body is complete, as the buffer may move while it grows), the array
 * bytes stay where the engines' results hold them.  MHD asks for the bytes
 * at increasing positions; a cursor remembers the segment of the last
 * position so each call starts where the previous one ended.
 *
 * Relies on: hub.h (hub_array, hub_parts and their release), npy.h (the
 * .npy header), buf.h.
 */
#include "binbody.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "buf.h"
#include "npy.h"

typedef struct segment {
    const unsigned char *data; /* NULL while it is text at `offset` */
    size_t offset;
    size_t len;
} segment;

typedef struct binbody {
    segment *segs;
    size_t nsegs, cap;
    ippc_buf text; /* every piece written here */
    uint64_t total;
    size_t cursor;         /* the segment that holds cursor_start.. */
    uint64_t cursor_start; /* the body position where segs[cursor] starts */
    hub_array *array;      /* released with the body */
    hub_parts *parts;
} binbody;

static void body_free(void *cls)
{
    binbody *b = cls;
    if (!b)
        return;
    if (b->array) {
        hub_array_release(b->array);
        free(b->array);
    }
    if (b->parts) {
        hub_parts_release(b->parts);
        free(b->parts);
    }
    free(b->segs);
    free(b->text.data);
    free(b);
}

static int add_segment(binbody *b, const unsigned char *data, size_t offset, size_t len)
{
    if (b->nsegs == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        segment *segs = realloc(b->segs, cap * sizeof *segs);
        if (!segs)
            return -1;
        b->segs = segs;
        b->cap = cap;
    }
    b->segs[b->nsegs++] = (segment){.data = data, .offset = offset, .len = len};
    b->total += len;
    return 0;
}

/* Borrowed bytes: they outlive the body (the references it releases). */
static int add_borrowed(binbody *b, const unsigned char *data, size_t len)
{
    return add_segment(b, data, 0, len);
}

/* Written bytes, appended to the text buffer. */
static int add_text(binbody *b, const void *bytes, size_t len)
{
    size_t at = b->text.len;
    if (buf_append(&b->text, bytes, len) < 0)
        return -1;
    return add_segment(b, NULL, at, len);
}

static int add_textf(binbody *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_textf(binbody *b, const char *fmt, ...)
{
    size_t at = b->text.len;
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(&b->text, fmt, ap);
    va_end(ap);
    return rc < 0 ? -1 : add_segment(b, NULL, at, b->text.len - at);
}

/* MHD's content reader: up to max bytes from position pos. */
static ssize_t body_read(void *cls, uint64_t pos, char *out, size_t max)
{
    binbody *b = cls;
    if (pos >= b->total)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (pos < b->cursor_start) {
        b->cursor = 0;
        b->cursor_start = 0;
    }
    while (b->cursor < b->nsegs && pos >= b->cursor_start + b->segs[b->cursor].len) {
        b->cursor_start += b->segs[b->cursor].len;
        b->cursor++;
    }
    size_t done = 0, i = b->cursor;
    uint64_t start = b->cursor_start;
    while (done < max && i < b->nsegs) {
        const segment *s = &b->segs[i];
        size_t off = (size_t)(pos + done - start);
        size_t take = s->len - off < max - done ? s->len - off : max - done;
        memcpy(out + done, s->data + off, take);
        done += take;
        if (off + take == s->len) {
            start += s->len;
            i++;
        }
    }
    assert(done > 0); /* pos < total: some segment holds it */
    return (ssize_t)done;
}

/* The response over a complete body (taken). */
static struct MHD_Response *respond(binbody *b, ippc_error *err)
{
    for (size_t i = 0; i < b->nsegs; i++)
        if (!b->segs[i].data)
            b->segs[i].data = (const unsigned char *)b->text.data + b->segs[i].offset;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(b->total, BINBODY_BLOCK, body_read, b, body_free);
    if (!resp) {
        body_free(b);
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    return resp;
}

static void shape_text(const nd_ref *ref, char *out, size_t cap)
{
    out[0] = '\0';
    for (int d = 0; d < ref->ndim; d++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%zu", d ? "," : "", ref->shape[d]);
}

/* The .npy header of ref's array as a text segment; 0 or -1. */
static int add_npy_header(binbody *b, const nd_ref *ref, size_t *len)
{
    unsigned char header[NPY_HEADER_MAX];
    *len = npy_write_header(ref->dtype, ref->ndim, ref->shape, header, sizeof header);
    /* The hub's arrays have valid dtypes and 1..ND_MAX_DIMS dimensions. */
    assert(*len > 0);
    return add_text(b, header, *len);
}

struct MHD_Response *binbody_npy(hub_array *a, ippc_error *err)
{
    binbody *b = calloc(1, sizeof *b);
    if (!b) {
        hub_array_release(a);
        free(a);
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    b->array = a;
    size_t header_len;
    if (add_npy_header(b, &a->ref, &header_len) < 0 || add_borrowed(b, a->data, a->len) < 0) {
        body_free(b);
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    return respond(b, err);
}

/* A random boundary that occurs in no part.  A 128-bit draw colliding is
 * not expected; the check makes it certain. */
static int pick_boundary(const hub_parts *p, char out[64])
{
    for (int attempt = 0; attempt < 8; attempt++) {
        unsigned char r[16];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
            return -1;
        int n = snprintf(out, 64, "ippc-");
        for (size_t i = 0; i < sizeof r; i++)
            n += snprintf(out + n, 64 - (size_t)n, "%02x", r[i]);
        int found = 0;
        for (size_t i = 0; !found && i < p->n; i++)
            found = memmem(p->items[i].data, p->items[i].len, out, (size_t)n) != NULL;
        if (!found)
            return 0;
    }
    return -1;
}

static int add_part(binbody *b, const hub_part *part, int npy, const char *boundary)
{
    if (!part->is_array)
        return add_textf(b,
                         "--%s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                         "X-Ippc-Engine: %d\r\n\r\n",
                         boundary, part->len, part->engine) < 0 ||
                       add_borrowed(b, part->data, part->len) < 0 || add_text(b, "\r\n", 2) < 0
                   ? -1
                   : 0;
    char shape[ND_MAX_DIMS * 21 + 1];
    shape_text(&part->ref, shape, sizeof shape);
    unsigned char header[NPY_HEADER_MAX];
    size_t header_len = npy ? npy_write_header(part->ref.dtype, part->ref.ndim, part->ref.shape,
                                               header, sizeof header)
                            : 0;
    assert(!npy || header_len > 0);
    if (add_textf(b,
                  "--%s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nX-Ippc-Engine: %d\r\n"
                  "X-Ippc-Dtype: %s\r\nX-Ippc-Shape: %s\r\n\r\n",
                  boundary, npy ? "application/x-npy" : "application/octet-stream",
                  header_len + part->len, part->engine, nd_dtype_name(part->ref.dtype), shape) < 0)
        return -1;
    if (npy && add_text(b, header, header_len) < 0)
        return -1;
    return add_borrowed(b, part->data, part->len) < 0 || add_text(b, "\r\n", 2) < 0 ? -1 : 0;
}

struct MHD_Response *binbody_multipart(hub_parts *p, int npy_parts, char *content_type, size_t cap,
                                       ippc_error *err)
{
    assert(cap >= 64);
    binbody *b = calloc(1, sizeof *b);
    char boundary[64];
    if (!b || pick_boundary(p, boundary) < 0) {
        free(b);
        hub_parts_release(p);
        free(p);
        ippc_error_set(err, ERR_INTERNAL, "cannot draw a multipart boundary");
        return NULL;
    }
    b->parts = p;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < p->n; i++)
        rc = add_part(b, &p->items[i], npy_parts, boundary);
    if (rc < 0 || add_textf(b, "--%s--\r\n", boundary) < 0) {
        body_free(b);
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    snprintf(content_type, cap, "multipart/mixed; boundary=%s", boundary);
    return respond(b, err);
}
