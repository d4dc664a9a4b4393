/* hub.h — the controller's state: engines, direct-view requests, balanced
 * tasks, and the one task record every unit of engine work is.
 *
 * The hub is the one place where engine, request and task state lives; the
 * REST front end (http_api.c) and the socket layers (ws.c, ws_client.c) only
 * translate into hub calls.  One mutex guards everything in the hub; every
 * hub_* function takes it itself, so callers never hold it.  It guards
 * bookkeeping only: request bodies are decoded before it is taken, answers
 * and store records are rendered after it is released (server/README.md has
 * the module map and the threads).
 *
 * Threads: hub_* functions may be called from any thread.  Callbacks the hub
 * makes (engine sends, waiter wake-ups) are made with the hub lock held: they
 * must only queue work and wake their own loop (lws_cancel_service,
 * MHD_resume_connection), never call back into the hub.
 */
#ifndef IPPC_HUB_H
#define IPPC_HUB_H

#include <stdint.h>
#include <jansson.h>

#include "error.h"
#include "value.h"
#include "wsmsg.h"

typedef struct hub hub;

/* How the hub reaches an engine's socket: queue a message (taking the blobs'
 * references it needs) and wake the socket's service loop.  Provided by ws.c. */
typedef struct hub_engine_link {
    void *conn;
    int (*send)(void *conn, json_t *msg, ws_blobref **blobs, size_t nblobs);
    void (*close)(void *conn, const char *reason);
} hub_engine_link;

enum { HUB_FANOUT_PUSH, HUB_FANOUT_SCATTER, HUB_FANOUT_GATHER };

typedef struct hub_config {
    const char *engine_key;
    const char *profile;
    const char *url;
    const char *ws_url;
    int heartbeat_period_ms;
    int heartbeat_timeout_ms;
    size_t max_requests_kept; /* finished requests remembered for GET /requests */
    /* Bytes of results kept in memory (--keep-results-mb): finished
     * requests' and tasks' results, oldest finished forgotten first.
     * 0: HUB_KEEP_RESULTS_DEFAULT. */
    size_t keep_results_bytes;
    int sched;    /* sched_kind of the load balancer */
    unsigned hwm; /* balanced tasks an engine may hold at once (default 1) */
    /* Data ops fanned out by MPI (common/proto.h): when fanout is set, a
     * push, scatter or gather (index HUB_FANOUT_*) over 2+ live engines of
     * one MPI job with no dead engine, moving at least fanout_min_bytes[op]
     * bytes of arrays (SIZE_MAX: never), sends or takes its data once, to or
     * from the lowest rank.  A gather's size is the one the hub last saw of
     * that name (a push, scatter or gather of it; unknown: 0). */
    int fanout;
    size_t fanout_min_bytes[3];
    /* The largest message the controller takes from an engine (what ws.c
     * tells engines at register; 0: IPPC_MAX_WS_MESSAGE): a gather whose
     * whole array would not fit in one stays per engine. */
    size_t engine_message_max;
    struct store *store;   /* task history; NULL = none (tests) */
    struct events *events; /* event stream; NULL = none (tests) */
} hub_config;

#define HUB_KEEP_RESULTS_DEFAULT ((size_t)512 << 20)

hub *hub_new(const hub_config *cfg);
void hub_free(hub *h);

/* ---- engines (called by ws.c on the lws thread) ---- */

/* Validates a register message; on success records the engine, fills *engine_id
 * and returns 0; -1 + err (unauthorized / bad_request) otherwise. */
int hub_engine_register(hub *h, const json_t *msg, const hub_engine_link *link, int *engine_id,
                        ippc_error *err);
/* A message from a registered engine (heartbeat, result).  Takes blobs. */
void hub_engine_message(hub *h, int engine_id, json_t *msg, ippc_blobs *blobs);
/* The engine's socket closed: the engine is dead, its tasks are lost. */
void hub_engine_closed(hub *h, int engine_id, const char *reason);
/* Periodic work: heartbeat deadlines, request timeouts.  Any thread. */
void hub_tick(hub *h);
/* Asks every engine to shut down (controller stopping). */
void hub_shutdown_engines(hub *h, const char *reason);

/* ---- queries (REST) ---- */
json_t *hub_info(hub *h);
json_t *hub_engines(hub *h);
/* NULL + not_found if unknown. */
json_t *hub_engine(hub *h, int engine_id, ippc_error *err);

/* ---- direct-view requests ---- */

typedef enum hub_op {
    HUB_OP_EXECUTE,
    HUB_OP_RUN,
    HUB_OP_PUSH, /* body {"namespace": {...}} or one var */
    HUB_OP_PULL, /* one name: results are values */
    HUB_OP_PULL_MANY,
    HUB_OP_SCATTER,
    HUB_OP_GATHER,
    HUB_OP_APPLY,
    HUB_OP_LOAD, /* {"library": path} */
    HUB_OP_RESET,
    HUB_OP_DELETE, /* name */
    HUB_OP_LIST,   /* results are each engine's variable listing */
    HUB_OP_MAP,    /* internal: a map over load-balanced tasks */
} hub_op;

typedef struct hub_prepared hub_prepared;

/* A parsed direct-view call.  The hub takes what it needs; args stay owned by
 * the caller (but see `prepared`). */
typedef struct hub_call {
    hub_op op;
    const char *targets; /* target spec */
    const json_t *body;  /* the op's fields (call.c's table) */
    const char *name;    /* PUT/GET vars/{name}, gather/{name} */
    value_format format; /* how pulled arrays are written back */
    /* The caller waits and takes the answer itself: the request is kept
     * for it (not evicted) until hub_request_answered; a pull or gather is
     * released then. */
    int blocking;
    /* PUSH of one variable given in wire form already (raw octet-stream
     * bodies): the skeleton and its blobs, which the hub moves out. */
    const json_t *wire_value;
    ippc_blobs *wire_blobs;
    /* The payload, built earlier by hub_prepare for this call (or NULL):
     * hub_submit then ignores body, wire_value and wire_blobs, and frees it. */
    hub_prepared *prepared;
} hub_call;

/* Builds a call's engine payload ahead of hub_submit: every client value in
 * wire form (a JSON list of a million numbers becomes one array).  That is
 * the costly part of a submit, so it never runs under the hub lock; a caller
 * may run it on another thread first.  Any thread, no lock.  NULL only when
 * out of memory (err set); a call that cannot be built carries its error,
 * which hub_submit reports where it would for an unprepared call (target
 * errors first).  Moves the blobs out of call->wire_blobs. */
hub_prepared *hub_prepare(const hub_call *call, ippc_error *err);
/* Bytes of array data the payload holds (for memory budgets). */
size_t hub_prepared_bytes(const hub_prepared *p);
void hub_prepared_free(hub_prepared *p);

/* Starts a request: one task per target engine, sent at once.  Returns the
 * request id (> 0) or 0 + err.  Frees call->prepared. */
uint64_t hub_submit(hub *h, const hub_call *call, ippc_error *err);

/* Sends an interrupt to every target engine: the task running there ends as
 * "aborted"; queued tasks stay queued.  New {"targets": [...]} or NULL + err. */
json_t *hub_interrupt(hub *h, const char *targets, ippc_error *err);

/* The array of a finished pull of one target or of a gather, for raw
 * (octet-stream) answers, without a copy and without JSON: data points
 * into the engine's result (a reference is held) or into the gathered
 * buffer (one allocation, filled once).  Release it with hub_array_release
 * (any thread, e.g. when the HTTP response is freed). */
typedef struct hub_array {
    const unsigned char *data;
    size_t len;
    nd_ref ref;
    void *hold_;           /* private: the result held */
    unsigned char *owned_; /* private: the gathered buffer */
} hub_array;
/* 1 with *out filled; 0 when the request is not finished (nothing filled:
 * answer its pending JSON); -1 + err (not_found, gone, or invalid_value:
 * it failed, the value is not an array, not one target nor a gather). */
int hub_request_array(hub *h, uint64_t request_id, hub_array *out, ippc_error *err);
void hub_array_release(hub_array *a);

/* The per-engine parts of a finished pull, for multipart answers: each
 * target's array, without a copy (a reference to the engine's result is
 * held), or its value's client JSON text when it is not an array.  Release
 * them with hub_parts_release (any thread). */
typedef struct hub_part {
    int engine;
    int is_array;
    const unsigned char *data; /* the array's bytes, or the JSON text */
    size_t len;
    nd_ref ref; /* is_array */
} hub_part;
typedef struct hub_parts {
    hub_part *items;
    size_t n;
    void *hold_; /* private: what the parts point into */
} hub_parts;
/* 1 with *out filled; 0 when the request is not finished; -1 + err
 * (not_found, gone, or invalid_value: not a pull, or it failed on an
 * engine). */
int hub_request_parts(hub *h, uint64_t request_id, hub_parts *out, ippc_error *err);
void hub_parts_release(hub_parts *p);

/* The request's client view: the blocking answer when done, or a pending body.
 * *done set accordingly.  NULL + not_found if unknown, gone if forgotten
 * (evicted for --keep-results-mb or the count, or a blocking pull released
 * once answered: the message says which). */
json_t *hub_request_json(hub *h, uint64_t request_id, int *done, ippc_error *err);
/* The same with the arrays of its values written as fmt (a value_format)
 * instead of as the call asked; fmt < 0: as the call asked. */
json_t *hub_request_json_as(hub *h, uint64_t request_id, int fmt, int *done, ippc_error *err);

/* The caller a request was kept for (a blocking submit, or hub_wait) has
 * given its answer (done: the finished answer) or gone away: the request may
 * be evicted again, and a blocking pull or gather answered finished is
 * released now (its id then answers 410 gone). */
void hub_request_answered(hub *h, uint64_t request_id, int done);

/* Waiting without a thread: registers wake(arg) to be called once, with the hub
 * lock held, when the request finishes or deadline_ms (monotonic, 0 = none)
 * passes.  Returns 1 if the request is already finished (wake not registered),
 * 0 if registered, -1 if unknown.  `registered` runs with the hub lock held
 * right after registration (so the caller can suspend its connection before any
 * wake can happen).  The request is kept for the caller until
 * hub_request_answered (or a minute after it finished). */
int hub_wait(hub *h, uint64_t request_id, int64_t deadline_ms, void (*wake)(void *arg),
             void (*registered)(void *arg), void *arg);

/* Wakes every waiter now (controller stopping: suspended connections must be
 * resumed before the HTTP daemon stops). */
void hub_wake_all(hub *h);

/* ---- tasks (balanced ones: tasks.c; every kind: task_table.c) ---- */

/* Submits one task object (see api/openapi.yaml, TaskSpec) or, when spec is
 * a list, each of them.  Returns a new {"id": T, "state": ...} for an object,
 * {"ids": [...]} for a list, or NULL + err (nothing is submitted then). */
json_t *hub_task_submit(hub *h, const json_t *spec, uint64_t *first_id, ippc_error *err);
/* The task (direct or balanced) as a client sees it; from memory or the
 * store.  NULL + not_found. */
json_t *hub_task_json(hub *h, uint64_t task_id, int *finished, ippc_error *err);
/* The same with the result's arrays written as fmt (hub_task_json: list). */
json_t *hub_task_json_as(hub *h, uint64_t task_id, value_format fmt, int *finished,
                         ippc_error *err);
/* As hub_wait, for one task of either kind. */
int hub_task_wait(hub *h, uint64_t task_id, int64_t deadline_ms, void (*wake)(void *arg),
                  void (*registered)(void *arg), void *arg);
/* Aborts a pending task; a running one only with force (an interrupt naming
 * it; direct tasks too).  New task JSON or NULL + err (conflict when finished
 * or running). */
json_t *hub_task_abort(hub *h, uint64_t task_id, int force, ippc_error *err);
/* A new balanced task with the same spec; {"id": NEW, ...} or NULL + err
 * (invalid for a direct-view task: its request is what to repeat). */
json_t *hub_task_resubmit(hub *h, uint64_t task_id, ippc_error *err);
/* A map: {"function", "sequences", "chunksize", "ordered"} -> request id. */
uint64_t hub_map_submit(hub *h, const json_t *body, ippc_error *err);
/* Per engine queued/running/completed counts, plus unassigned. */
json_t *hub_queue(hub *h);
/* History query (flushes the store first; runs without the hub lock). */
typedef struct hub_task_filter {
    const char *state; /* NULL = any */
    const char *kind;  /* "direct" | "balanced"; NULL = any */
    uint64_t request;  /* tasks of this request (direct-view or map); 0 = any */
    int engine;        /* -1 = any */
    const char *tag;   /* NULL = any */
    const char *since; /* ISO 8601; NULL = any */
    size_t limit;      /* 1..1000 */
    uint64_t cursor;   /* tasks with id > cursor */
} hub_task_filter;
json_t *hub_task_list(hub *h, const hub_task_filter *filter, ippc_error *err);
/* The same without kind and request. */
json_t *hub_task_query(hub *h, const char *state, int engine, const char *tag, const char *since,
                       size_t limit, uint64_t cursor, ippc_error *err);
/* Purges finished tasks completed before `before` (NULL: all finished). */
json_t *hub_task_purge(hub *h, const char *before, ippc_error *err);

/* ---- streams ---- */

struct events_sink;
struct events_client;
/* Registers a stream client and returns its first message, the snapshot
 * (engines, in-flight balanced tasks, seq), taken atomically with the
 * registration so no event falls between them.  *client is set (NULL on
 * allocation failure). */
json_t *hub_stream_attach(hub *h, const struct events_sink *sink, struct events_client **client);

/* The hub's families for /metrics, as Prometheus text in a new *out (caller
 * frees; server/metrics.h appends more). */
void hub_metrics(hub *h, char **out, size_t *len);

/* Milliseconds of a monotonic clock. */
int64_t hub_now_ms(void);

#endif
