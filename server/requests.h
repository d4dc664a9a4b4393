/* requests.h — direct-view requests (one task of kind "direct" per target)
 * and map requests (one balanced chunk task per chunk, made by tasks.c):
 * their bookkeeping, waiting, and their answers.
 *
 * A request holds its task records (task_table.h, held: never evicted while the
 * request is kept); it counts them as they finish (requests_task_finished,
 * the task table's hook) and, once all have, is done: its waiters are woken
 * and it joins the done list.
 *
 * What is kept.  requests_trim (the hub calls it at the end of every
 * critical section) keeps the done list within max_kept requests and every
 * result in memory (the task table's result_bytes: done requests' results
 * and the finished tasks no request holds) within keep_bytes, forgetting
 * the oldest finished first, requests and unheld tasks alike (a forgotten
 * request's tasks are released to the task table, a direct one keeping its
 * outcome only).  A request whose answer a caller is about to take is
 * pinned: a blocking submit, or one a waiter waits for, until
 * requests_answered or PIN_GRACE_MS after it finished.  A blocking pull or
 * gather whose finished answer was delivered is forgotten at once
 * (requests_answered): its arrays were the answer.  Forgotten ids answer
 * ERR_GONE, saying why (the last REQUESTS_FORGOTTEN of them by id, older
 * ones in general).
 *
 * Answers are made in two steps so that no value is converted under the hub
 * lock: requests_view (lock held) copies the little the answer needs and
 * takes references to the immutable results; request_view_json /
 * request_view_array (no lock) render it; request_view_free drops it.
 *
 * Depends on the task table and the registry, never the other way round.
 * Threads: every function but the request_view_* ones expects the hub lock
 * held.  Memory: the table owns its requests; a view owns its references.
 */
#ifndef IPPC_REQUESTS_H
#define IPPC_REQUESTS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "engine_codec.h"
#include "hub.h"
#include "idmap.h"
#include "list.h"
#include "task_table.h"
#include "waiter.h"

struct registry;

typedef struct request {
    uint64_t id;
    hub_op op; /* HUB_OP_MAP: a map over balanced chunk tasks */
    size_t ntasks;
    task **tasks; /* held, in target (map: chunk) order */
    size_t nfinished;
    size_t *done_order; /* task indexes in the order they finished */
    int ordered;        /* map: results in input order (else completion order) */
    /* map: chunk c holds items [c * map_chunksize, min((c + 1) *
     * map_chunksize, map_items)) of the sequences */
    size_t map_items, map_chunksize;
    char *name;    /* PULL, GATHER */
    json_t *names; /* PULL_MANY */
    value_format format;
    /* A push, scatter or gather fanned out by MPI (requests_submit_fanout):
     * its id, the index of the root's task, and whether it was abandoned (a
     * participant's task aborted or lost: the others were interrupted). */
    int fanout;
    uint64_t fanout_id;
    size_t fanout_root;
    int fanout_abandoned;
    waiter *waiters;
    int finished;         /* moved to the done list */
    uint64_t finish_seq;  /* the task table's finished_total then */
    int blocking;         /* a blocking call: released once its answer is given */
    int awaited;          /* pinned: a caller will take the answer */
    int64_t pin_until_ms; /* once done, the pin lapses then */
    list_node link;       /* in the open or done list */
} request;

typedef struct request_list {
    list_node head; /* request.link, oldest first */
    size_t count;
} request_list;

/* Why a request id was forgotten. */
typedef enum request_gone {
    GONE_COUNT = 0, /* more than max_kept done requests */
    GONE_BYTES,     /* results over keep_bytes */
    GONE_DELIVERED, /* a blocking pull's answer was given */
    GONE_NREASONS
} request_gone;

/* Forgotten request ids remembered with their reason. */
#define REQUESTS_FORGOTTEN 4096
/* How long after it finished a pinned request stays pinned at most. */
#define PIN_GRACE_MS 60000

typedef struct requests {
    idmap by_id; /* open and done */
    request_list open, done;
    uint64_t next_id;
    size_t max_kept;   /* done requests remembered */
    size_t keep_bytes; /* every result in memory (task_table.result_bytes) */
    task_table *tasks;
    struct registry *engines;
    struct {
        uint64_t id;
        request_gone why;
    } forgotten[REQUESTS_FORGOTTEN]; /* a ring */
    size_t forgotten_next;
    uint64_t gone_total[GONE_NREASONS];
} requests;

/* keep_bytes 0: no byte bound. */
void requests_init(requests *rq, task_table *tasks, struct registry *engines, size_t max_kept,
                   size_t keep_bytes);
void requests_free(requests *rq);
/* Forgets done requests and unheld finished tasks, oldest finished first,
 * until both bounds hold (or only pinned requests and held tasks are left). */
void requests_trim(requests *rq);
/* The caller that a request was pinned for took its answer (done: the answer
 * given was the finished one) or gave up: the pin goes; a blocking pull or
 * gather answered finished is forgotten now. */
void requests_answered(requests *rq, uint64_t id, int done);

/* A direct-view request: one direct task per target (live engine ids, in
 * order), each sent at once.  msgs holds one message for every target, or
 * one shared by all (nmsgs 1); the tasks take their own references.  names
 * (PULL_MANY: the names pulled, for the answer) is taken; call->body is not
 * read (it may be gone: a prepared call).  Pinned when call->blocking.  The
 * request id, or 0 + err. */
uint64_t requests_submit(requests *rq, const hub_call *call, const int *targets, size_t ntargets,
                         codec_msg *const *msgs, size_t nmsgs, json_t *names, ippc_error *err);

/* The same for a data op fanned out by MPI (common/proto.h): msgs holds one
 * message per target (the root's, at root_index, carries the data), each
 * already with its "fanout" member of id fanout_id.  Once one of its tasks
 * ends aborted or lost, every other one still running is interrupted (an
 * engine waiting in the op would wait for it forever), and one not sent yet
 * is not sent. */
uint64_t requests_submit_fanout(requests *rq, const hub_call *call, const int *targets, size_t n,
                                codec_msg *const *msgs, size_t root_index, uint64_t fanout_id,
                                ippc_error *err);

/* A map request over nchunks chunk tasks that the caller adds with
 * task_add(..., r->id, index, held 1) and requests_attach, then
 * requests_attached.  NULL on OOM. */
request *requests_open_map(requests *rq, size_t nchunks, int ordered, size_t items,
                           size_t chunksize);
void requests_attach(request *r, size_t index, task *t);
/* Every chunk is attached (n of them: fewer than planned after OOM). */
void requests_attached(requests *rq, request *r, size_t n);

/* The task table's hook: t (of request t->request_id) reached a final state. */
void requests_task_finished(requests *rq, task *t);

request *requests_get(requests *rq, uint64_t id);
int request_done(const request *r);
/* As hub_wait; pins the request (not when unknown). */
int requests_wait(requests *rq, uint64_t id, int64_t deadline_ms, void (*wake)(void *arg),
                  void (*registered)(void *arg), void *arg);
void requests_tick(requests *rq, int64_t now);
void requests_wake_all(requests *rq);

/* ---- answers ---- */

typedef struct request_view request_view;
/* What the answer of request id needs, or NULL + err (not_found; gone: a
 * forgotten id, the message says why; internal). */
request_view *requests_view(requests *rq, uint64_t id, ippc_error *err);
int request_view_done(const request_view *v);
/* The client answer: the blocking answer when done, else a pending body.
 * Its values' arrays are written as fmt (a value_format: every answer that
 * carries values, maps' too); fmt < 0: as the request's call asked. */
json_t *request_view_json(const request_view *v, int fmt);
/* The one array of a finished pull of one target or of a gather, without a
 * copy: a pull's bytes are the engine's result blob, held by a reference; a
 * gather's are one buffer filled once from the parts.  No JSON is built. */
typedef struct request_array {
    const unsigned char *data;
    size_t len;
    nd_ref ref;
    task_result *hold;    /* a pull: the result data points into */
    unsigned char *owned; /* a gather: the concatenated buffer */
} request_array;
/* Fills *out (release it with request_array_release, any thread).  -1 +
 * err (conflict: not finished; invalid_value: failed, not an array, or not
 * one target or a gather). */
int request_view_array(const request_view *v, request_array *out, ippc_error *err);
void request_array_release(request_array *a);
/* One target's part of a finished pull, for a multipart answer: its array
 * (the engine's result blob, held by a reference: no copy) or, when the
 * value is not an array, its client JSON text (list format). */
typedef struct request_part {
    int engine;
    int is_array;
    const unsigned char *data; /* the array's bytes, or the JSON text */
    size_t len;
    nd_ref ref;        /* is_array */
    task_result *hold; /* is_array: the result data points into */
    char *json;        /* !is_array: the text data points to (owned) */
} request_part;
/* Fills *parts (n of them, in target order; free with request_parts_free,
 * any thread).  -1 + err (conflict: not finished; invalid_value: not a
 * pull, or the pull failed on an engine: the message names it). */
int request_view_parts(const request_view *v, request_part **parts, size_t *n, ippc_error *err);
void request_parts_free(request_part *parts, size_t n);
void request_view_free(request_view *v);

#endif
