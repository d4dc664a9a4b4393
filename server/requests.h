/* requests.h — direct-view requests (one task of kind "direct" per target)
 * and map requests (one balanced chunk task per chunk, made by tasks.c):
 * their bookkeeping, waiting, and their answers.
 *
 * A request holds its task records (task_table.h, held: never evicted while the
 * request is kept); it counts them as they finish (requests_task_finished,
 * the task table's hook) and, once all have, is done: its waiters are woken
 * and it joins the done list, bounded by max_kept, oldest forgotten first
 * (then its tasks are released to the task table's own bound).
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
    char *name;         /* PULL, GATHER */
    json_t *names;      /* PULL_MANY */
    value_format format;
    /* A push, scatter or gather fanned out by MPI (requests_submit_fanout):
     * its id, the index of the root's task, and whether it was abandoned (a
     * participant's task aborted or lost: the others were interrupted). */
    int fanout;
    uint64_t fanout_id;
    size_t fanout_root;
    int fanout_abandoned;
    waiter *waiters;
    int finished;                /* moved to the done list */
    struct request *prev, *next; /* open or done list */
} request;

typedef struct request_list {
    request *head, *tail;
    size_t count;
} request_list;

typedef struct requests {
    idmap by_id; /* open and done */
    request_list open, done;
    uint64_t next_id;
    size_t max_kept; /* done requests remembered */
    task_table *tasks;
    struct registry *engines;
} requests;

void requests_init(requests *rq, task_table *tasks, struct registry *engines, size_t max_kept);
void requests_free(requests *rq);

/* A direct-view request: one direct task per target (live engine ids, in
 * order), each sent at once.  msgs holds one message for every target, or
 * one shared by all (nmsgs 1); the tasks take their own references.  names
 * (PULL_MANY: the names pulled, for the answer) is taken; call->body is not
 * read (it may be gone: a prepared call).  The request id, or 0 + err. */
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
/* As hub_wait. */
int requests_wait(requests *rq, uint64_t id, int64_t deadline_ms, void (*wake)(void *arg),
                  void (*registered)(void *arg), void *arg);
void requests_tick(requests *rq, int64_t now);
void requests_wake_all(requests *rq);

/* ---- answers ---- */

typedef struct request_view request_view;
/* What the answer of request id needs, or NULL + err (not_found, internal). */
request_view *requests_view(requests *rq, uint64_t id, ippc_error *err);
int request_view_done(const request_view *v);
/* The client answer: the blocking answer when done, else a pending body.
 * Its values' arrays are written as fmt (a value_format: every answer that
 * carries values, maps' too); fmt < 0: as the request's call asked. */
json_t *request_view_json(const request_view *v, int fmt);
/* The one array of a finished pull of one target or of a gather: a copy of
 * its bytes (*data, caller frees) and its description.  -1 + err. */
int request_view_array(const request_view *v, unsigned char **data, size_t *len, nd_ref *ref,
                       ippc_error *err);
void request_view_free(request_view *v);

#endif
