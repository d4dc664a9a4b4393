/* wsmsg.h — ippc messages over libwebsockets: an outbound queue and an inbound
 * reassembler, shared by the controller (server side) and the engine (client).
 *
 * A message is one JSON text frame followed by "nbuf" binary frames (see
 * proto.h).  Blob bytes are held by refcounted ws_blobref objects so that one
 * array pushed to many engines is kept once in memory and sent to each.
 *
 * Threads: a ws_outq may be filled from any thread (it has its own mutex) and
 * is drained only by the lws service thread, from the WRITEABLE callback, one
 * lws_write() per call.  A ws_reader belongs to one connection and is used only
 * by the lws service thread.
 */
#ifndef IPPC_WSMSG_H
#define IPPC_WSMSG_H

#include <pthread.h>
#include <stddef.h>
#include <jansson.h>
#include <libwebsockets.h>

#include "error.h"
#include "value.h"

/* Refcounted immutable bytes. */
typedef struct ws_blobref ws_blobref;
/* Takes ownership of data (malloc'd); NULL on allocation failure (data freed). */
ws_blobref *ws_blobref_new(unsigned char *data, size_t len);
ws_blobref *ws_blobref_retain(ws_blobref *b);
void ws_blobref_release(ws_blobref *b);
size_t ws_blobref_len(const ws_blobref *b);

/* Moves every blob of blobs into a new array of blobrefs (blobs is left empty).
 * Returns the array (count = the former blobs->count; NULL with count 0). */
ws_blobref **ws_blobrefs_take(ippc_blobs *blobs, size_t *count);
void ws_blobrefs_release(ws_blobref **refs, size_t count); /* releases and frees array */

typedef struct ws_frame ws_frame;
typedef struct ws_outq {
    pthread_mutex_t lock;
    ws_frame *head, *tail;
    size_t bytes;  /* queued bytes not yet written */
    size_t frames; /* queued frames */
} ws_outq;

void ws_outq_init(ws_outq *q);
void ws_outq_clear(ws_outq *q); /* drops everything queued; q stays usable */
void ws_outq_destroy(ws_outq *q);
/* Queues msg (sets msg["nbuf"] = nblobs and serialises it) and then the blobs
 * (retained, not copied).  0 or -1 on allocation failure. */
int ws_outq_push(ws_outq *q, json_t *msg, ws_blobref **blobs, size_t nblobs);
/* Queues one text frame (copied), at the end or at the front. */
int ws_outq_push_text(ws_outq *q, const char *text, size_t len);
int ws_outq_push_front_text(ws_outq *q, const char *text, size_t len);
/* Same, with the blobs of an ippc_blobs moved in (left empty). */
int ws_outq_push_blobs(ws_outq *q, json_t *msg, ippc_blobs *blobs);
int ws_outq_empty(ws_outq *q);
/* Writes (part of) the head frame: call from LWS_CALLBACK_*_WRITEABLE.  Returns
 * 1 if more is queued (ask for another WRITEABLE), 0 if the queue is empty, -1
 * if lws_write failed (close the connection). */
int ws_outq_write(ws_outq *q, struct lws *wsi);

/* Inbound reassembly of fragments and of JSON + binary attachments. */
typedef struct ws_reader {
    unsigned char *buf;
    size_t len, cap;
    size_t max_message;
    json_t *pending; /* a JSON message still waiting for its binary frames */
    size_t want;     /* binary frames still expected for pending */
    ippc_blobs blobs;
} ws_reader;

void ws_reader_init(ws_reader *r, size_t max_message);
void ws_reader_free(ws_reader *r);
/* Feeds one RECEIVE callback's bytes.  Returns 1 when a whole message is ready
 * (*msg new reference, *blobs filled: the caller must have initialised it and
 * owns it), 0 if more is needed, -1 on a protocol error (err set; close). */
int ws_reader_feed(ws_reader *r, struct lws *wsi, const void *in, size_t len, json_t **msg,
                   ippc_blobs *blobs, ippc_error *err);

#endif
