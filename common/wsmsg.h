/* wsmsg.h — ippc messages over libwebsockets: an outbound queue and an inbound
 * reassembler, shared by the controller (server side) and the engine (client).
 *
 * A message is one JSON text frame followed by "nbuf" binary frames (see
 * proto.h).  Blob bytes are held by refcounted ws_blobref objects so that one
 * array pushed to many engines is kept once in memory and sent to each.
 *
 * Memory a peer makes us hold is counted (budget.h): a ws_reader charges what
 * it buffers of the message being received (JSON text and every binary frame
 * so far) to an optional budget_account and gives it back when it hands the
 * message over or drops it; a ws_outq with an account charges what is queued
 * until it is written.  The engine passes no account (its peer is the
 * controller).
 *
 * Threads: a ws_outq may be filled from any thread (it has its own mutex) and
 * is drained only by the lws service thread, from the WRITEABLE callback, one
 * lws_write() per call.  A ws_reader belongs to one connection and is used only
 * by the lws service thread (ws_reader_push is pure apart from malloc and the
 * account's atomics: unit tests and the fuzzer drive it directly).
 */
#ifndef IPPC_WSMSG_H
#define IPPC_WSMSG_H

#include <pthread.h>
#include <stddef.h>
#include <jansson.h>
#include <libwebsockets.h>

#include "budget.h"
#include "error.h"
#include "value.h"

/* Refcounted immutable bytes. */
typedef struct ws_blobref ws_blobref;
/* Takes ownership of data (malloc'd); NULL on allocation failure (data freed). */
ws_blobref *ws_blobref_new(unsigned char *data, size_t len);
/* A blobref for len bytes of parent from off (off + len <= parent's len):
 * it shares the parent's bytes and holds a reference to the parent until it
 * is released, so a scatter sends slices of one body without copying it.
 * NULL on allocation failure (parent untouched). */
ws_blobref *ws_blobref_slice(ws_blobref *parent, size_t off, size_t len);
ws_blobref *ws_blobref_retain(ws_blobref *b);
void ws_blobref_release(ws_blobref *b);
size_t ws_blobref_len(const ws_blobref *b);
const unsigned char *ws_blobref_data(const ws_blobref *b);

/* Moves every blob of blobs into a new array of blobrefs (blobs is left empty).
 * Returns the array (count = the former blobs->count; NULL with count 0). */
ws_blobref **ws_blobrefs_take(ippc_blobs *blobs, size_t *count);
void ws_blobrefs_release(ws_blobref **refs, size_t count); /* releases and frees array */

typedef struct ws_frame ws_frame;
typedef struct ws_outq {
    pthread_mutex_t lock;
    ws_frame *head, *tail;
    size_t bytes;            /* queued bytes not yet written */
    size_t frames;           /* queued frames */
    budget_account *account; /* NULL: nothing is charged */
    int direct;              /* ws_outq_set_direct */
} ws_outq;

void ws_outq_init(ws_outq *q);
/* From now on, queued frames are charged to account (the caller's; it must
 * outlive q) until written or dropped.  Call before the first push. */
void ws_outq_set_account(ws_outq *q, budget_account *account);
/* From now on, ws_outq_write sends a large binary frame as one whole frame
 * written straight from its blob to the socket (no copy into a chunk buffer,
 * no fragments), whenever libwebsockets has nothing of its own buffered.
 * Only for a peer that never pings (lws would answer a ping by itself, in the
 * middle of such a frame): the controller's engine sockets. */
void ws_outq_set_direct(ws_outq *q);
void ws_outq_clear(ws_outq *q); /* drops everything queued; q stays usable */
/* The same, the frame partly written included: for a new connection. */
void ws_outq_reset(ws_outq *q);
void ws_outq_destroy(ws_outq *q);
/* Queues msg (sets msg["nbuf"] = nblobs and serialises it) and then the blobs
 * (retained, not copied).  0, or -1 on allocation failure or when the account
 * refuses the bytes (nothing is queued then). */
int ws_outq_push(ws_outq *q, json_t *msg, ws_blobref **blobs, size_t nblobs);
/* Queues one text frame (copied), at the end or at the front.  0, or -1 with
 * err (if non-NULL) filled: ERR_OVERLOADED / ERR_TOO_LARGE from the account,
 * ERR_INTERNAL when out of memory. */
int ws_outq_push_text(ws_outq *q, const char *text, size_t len, ippc_error *err);
int ws_outq_push_front_text(ws_outq *q, const char *text, size_t len, ippc_error *err);
/* Queues a short text frame without charging the account: the notice that
 * says why something else was refused must still get out.  len <= 4096. */
int ws_outq_push_notice(ws_outq *q, const char *text, size_t len);
/* Same, with the blobs of an ippc_blobs moved in (left empty). */
int ws_outq_push_blobs(ws_outq *q, json_t *msg, ippc_blobs *blobs);
int ws_outq_empty(ws_outq *q);
/* Writes (part of) the head frame: call from LWS_CALLBACK_*_WRITEABLE.  Returns
 * 1 if more is queued (ask for another WRITEABLE), 0 if the queue is empty, -1
 * if lws_write failed (close the connection). */
int ws_outq_write(ws_outq *q, struct lws *wsi);
/* The engine's writer (engine/link.c, no libwebsockets): writes queued frames
 * to the non-blocking socket fd as whole client frames (wsframe.h: one frame
 * per queued frame, its payload straight from the blob, no copy), as much as
 * the socket takes.  Returns 0 when the queue is empty, 1 when the socket is
 * full (wait for POLLOUT), -1 on an error (errno; close the connection).
 * Do not mix with ws_outq_write on one queue. */
int ws_outq_send(ws_outq *q, int fd);
/* 1 while the head frame is partly written (a control frame must wait). */
int ws_outq_mid_frame(ws_outq *q);

/* Inbound reassembly of fragments and of JSON + binary attachments.
 *
 * A message counts as a whole against max_message: its JSON text plus every
 * binary frame it announces, checked as soon as a frame header says how big
 * the frame will be (before its bytes are buffered).  "nbuf" is at most
 * WS_MAX_NBUF.  When the JSON also carries "sizes" (one byte length per
 * binary frame, as ws_outq_push writes it), each binary frame is allocated
 * whole when its first bytes arrive, instead of growing as its fragments come;
 * a frame whose length differs from its announced size is refused. */
#define WS_MAX_NBUF 4096
#define WS_NOT_ANNOUNCED SIZE_MAX

typedef struct ws_reader {
    unsigned char *buf; /* the frame being received */
    size_t len, cap;
    size_t max_message;
    budget_account *account; /* NULL: nothing is charged */
    size_t charged;          /* bytes charged to account: cap + blob_charge + json_charge */
    size_t blob_charge;      /* of it, for the binary frames in blobs */
    size_t json_charge;      /* of it, for pending (its text length) */
    size_t message_bytes;    /* of the message so far, for max_message: JSON + blobs */
    json_t *pending;         /* a JSON message still waiting for its binary frames */
    size_t want;             /* binary frames still expected for pending */
    size_t announced;        /* the binary frame being received: its size from
                                pending's "sizes", or WS_NOT_ANNOUNCED */
    ippc_blobs blobs;
    int in_message;     /* a WebSocket message has begun and not ended */
    int skipping;       /* dropping the rest of a refused WebSocket message */
    int protocol_error; /* the fragment flags contradicted each other */
} ws_reader;

/* What libwebsockets says about the bytes of one RECEIVE callback. */
typedef struct ws_fragment {
    int first;        /* the first bytes of a WebSocket message */
    int final;        /* the last frame of the message, and nothing of it remains */
    int binary;       /* the message is binary (else text) */
    size_t remaining; /* bytes of the current frame still to come */
} ws_fragment;

/* account may be NULL; it must outlive the reader. */
void ws_reader_init(ws_reader *r, size_t max_message, budget_account *account);
/* Frees what the reader holds and credits its charges; r can be init'ed again. */
void ws_reader_free(ws_reader *r);
/* Feeds the bytes of one fragment.  Returns 1 when a whole message is ready
 * (*msg a new reference, *blobs filled: the caller must have initialised it
 * and owns it; the reader's charges for it are credited), 0 if more is
 * needed, -1 when the message is refused (err set).  After -1 the reader has
 * dropped what it held of the message and skips the rest of that WebSocket
 * message, so the connection may go on — unless err->code is ERR_TOO_LARGE
 * (over max_message or the account's cap: close 1009) or ERR_OVERLOADED (the
 * process-wide budget: close 1013), ERR_INTERNAL (out of memory: 1011), or
 * the fragment flags contradict each other (r->protocol_error: close 1002);
 * ws_reader_fatal() tells. */
int ws_reader_push(ws_reader *r, const ws_fragment *f, const void *in, size_t len, json_t **msg,
                   ippc_blobs *blobs, ippc_error *err);
/* The same for an lws RECEIVE callback (flags from wsi). */
int ws_reader_feed(ws_reader *r, struct lws *wsi, const void *in, size_t len, json_t **msg,
                   ippc_blobs *blobs, ippc_error *err);
/* After -1: the WebSocket close code (1002, 1009, 1011, 1013) when the
 * connection should be closed, 0 when it may go on. */
int ws_reader_fatal(const ws_reader *r, const ippc_error *err);

#endif
