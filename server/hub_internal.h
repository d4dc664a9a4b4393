/* hub_internal.h — the hub's private state, shared by hub.c (engines, direct
 * views) and tasks.c (load-balanced tasks, map, the task store).  Everything
 * here is guarded by hub->lock; functions named *_locked expect it held.
 */
#ifndef IPPC_HUB_INTERNAL_H
#define IPPC_HUB_INTERNAL_H

#include <pthread.h>

#include "hub.h"
#include "idmap.h"
#include "sched.h"
#include "events.h"
#include "store.h"

typedef enum lb_state {
    LB_WAITING = 0, /* dependencies not met yet */
    LB_PENDING,     /* ready, queued for an engine */
    LB_RUNNING,     /* sent to an engine */
    LB_COMPLETED,
    LB_FAILED,
    LB_ABORTED,
    LB_LOST,
} lb_state;

struct waiter;
struct request;

typedef struct lbtask {
    uint64_t id;
    lb_state state;
    int engine; /* -1 until dispatched */
    json_t *spec; /* the client's task object, kept for docs and resubmit */
    json_t *msg;  /* engine task message template (no "task" yet) */
    ws_blobref **blobs;
    size_t nblobs;
    int *allowed; /* engine ids from "targets"; NULL = any */
    size_t n_allowed;
    uint64_t *deps; /* after then follow */
    size_t n_after, n_follow;
    int success_only;
    int retries;
    double timeout;
    int64_t deadline_ms; /* 0 = none */
    int timed_out, abort_requested;
    char submitted[40], started[40], completed[40];
    json_t *result; /* the engine's result message, or a synthesised one */
    ippc_blobs result_blobs;
    struct waiter *waiters;
    struct request *map; /* the map this chunk belongs to while it is kept, or NULL */
    uint64_t map_id;     /* that map's request id (0 if none); outlives the request */
    size_t map_index;
    int list; /* which lb_list holds it: -1 none */
    struct lbtask *prev, *next;
} lbtask;

typedef struct lb_list {
    lbtask *head, *tail;
    size_t count;
} lb_list;

typedef enum engine_state { ENGINE_ABSENT = 0, ENGINE_IDLE, ENGINE_BUSY, ENGINE_DEAD } engine_state;

typedef struct engine {
    int id;
    engine_state state;
    int rank, size;
    char job[65];
    char host[256];
    long pid;
    char registered[40]; /* ISO 8601 */
    int64_t last_heartbeat_ms;
    hub_engine_link link; /* valid while state is IDLE or BUSY */
    size_t queued;        /* tasks sent and not finished (direct and balanced) */
    unsigned lb_load;     /* load-balanced tasks sent and not finished */
    uint64_t last_used;   /* hub use counter at its last balanced assignment */
    uint64_t tasks_done;
} engine;

typedef struct job {
    char name[65];
    int size;
    int base;
} job;

typedef enum task_state { TASK_SENT = 0, TASK_DONE } task_state;

struct request;

typedef struct task {
    uint64_t id;
    struct request *req;
    int engine_id;
    task_state state;
    json_t *result; /* the engine's result message, or a synthesised "lost" one */
    ippc_blobs blobs;
} task;

typedef struct waiter {
    struct waiter *next;
    int64_t deadline_ms;
    void (*wake)(void *arg);
    void *arg;
} waiter;

typedef struct request {
    uint64_t id;
    hub_op op;        /* HUB_OP_MAP: a map over load-balanced chunk tasks */
    size_t ntargets;
    int *targets;
    task *tasks;
    size_t nfinished;
    char *name;       /* PULL, GATHER */
    json_t *names;    /* PULL_MANY */
    value_format format;
    waiter *waiters;
    struct request *prev, *next; /* open list or done list */
    /* map only: chunk task ids in input order, completion order so far;
     * chunk c holds items [c * map_chunksize, min((c + 1) * map_chunksize,
     * map_items)) */
    uint64_t *chunk_ids;
    size_t *done_order;
    int ordered;
    size_t map_items, map_chunksize;
} request;

typedef struct req_list {
    request *head, *tail;
    size_t count;
} req_list;

struct hub {
    pthread_mutex_t lock;
    hub_config cfg;
    char *engine_key, *profile, *url, *ws_url;
    char started[40];
    int64_t started_ms;

    engine *engines;
    size_t n_engines, cap_engines;
    job *jobs;
    size_t n_jobs, cap_jobs;

    uint64_t next_request_id, next_task_id;
    idmap requests; /* id -> request (open and done) */
    idmap tasks;    /* id -> task, unfinished only */
    req_list open, done;

    /* load-balanced tasks (tasks.c) */
    idmap lbtasks;  /* id -> lbtask, everything in memory */
    lb_list waiting, pending, running, finished;
    sched_kind sched;
    unsigned hwm;
    uint64_t rng, use_counter;
    store *store;
    events *events;
    uint64_t bytes_to_engines, bytes_from_engines;
};


const char *engine_state_name(engine_state s);
int hub_is_live(const engine *e);
void hub_iso8601_now(char *buf, size_t size);
int hub_valid_name(const char *name, ippc_error *err);
int hub_live_ids(hub *h, int **ids, size_t *n);
void hub_waiters_wake(struct waiter **list);
int hub_waiter_add(struct waiter **list, int64_t deadline_ms, void (*wake)(void *arg), void *arg);
void hub_waiters_tick(struct waiter **list, int64_t now);
void hub_request_open_locked(hub *h, request *r);
/* Emits an event (taken), with the hub lock held.  Every event is numbered
 * and kept in the ring whether or not a client listens, so clients can
 * resume after a disconnect. */
void hub_emit(hub *h, json_t *event, int topic, int engine, uint64_t task, const json_t *tags);
json_t *hub_engine_json(const engine *e, int64_t now);
/* Copies ename, evalue and traceback (those present) of a result into `into`. */
void hub_copy_error(json_t *into, const json_t *result);
/* A result message the hub makes itself (lost, aborted, failed before it
 * ran): status, empty stdout, ename, evalue, a one-line traceback. */
json_t *hub_synth_result(const char *status, const char *ename, const char *evalue);
/* For task.completed: adds "result" (client JSON, left out over 64 KiB) or
 * "error" from an engine result message. */
void hub_event_outcome(json_t *event, const json_t *result, const ippc_blobs *blobs);
void hub_request_finish_locked(hub *h, request *r);

/* tasks.c, with the lock held */
void tasks_init_locked(hub *h);
void tasks_free_locked(hub *h);
/* A result for a balanced task: 1 if it was one (msg borrowed, blobs moved). */
int tasks_on_result_locked(hub *h, int engine_id, json_t *msg, ippc_blobs *blobs);
void tasks_on_engine_dead_locked(hub *h, int engine_id);
void tasks_schedule_locked(hub *h);
void tasks_tick_locked(hub *h, int64_t now);
json_t *tasks_map_answer_locked(const hub *h, const request *r, value_format fmt);
json_t *tasks_in_flight_locked(hub *h);
/* The tags of a balanced task (borrowed), or NULL. */
const json_t *tasks_tags_locked(hub *h, uint64_t task_id);
void tasks_count_locked(hub *h, size_t counts[7]);
void tasks_wake_all_locked(hub *h);
/* A finished map request is being forgotten: its chunk tasks become
 * ordinary tasks (finished ones join the finished list). */
void tasks_map_evicted_locked(hub *h, request *r);

#endif
