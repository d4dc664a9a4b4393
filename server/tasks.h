/* tasks.h — load-balanced work: task specs, dependencies (after, follow),
 * scheduling onto engines under the high-water mark, retries, timeouts,
 * abort, and map (chunks of one function over sequences).
 *
 * The records and their states are task_table.c's; this module decides when a
 * balanced task moves: waiting -> pending when its dependencies are met (or
 * failed when they cannot be), pending -> running on the engine the
 * scheduler (sched.c) picks, running -> pending when its engine died with
 * retries left.
 *
 * Submitting is two steps so that decoding stays outside the hub lock:
 * tasks_build (no lock: validates, encodes the engine messages, looks the
 * dependencies that are no longer in memory up in the store) and
 * tasks_enqueue (lock: targets, ids, queues).
 *
 * Depends on the task table, the registry, requests (a map is a request) and
 * the store; nothing depends on it but hub.c.  Threads: functions marked
 * "no lock" run without the hub lock; the others expect it held.
 */
#ifndef IPPC_TASKS_H
#define IPPC_TASKS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "error.h"
#include "requests.h"
#include "sched.h"
#include "task_table.h"

struct registry;
struct store;

typedef struct balancer {
    sched_kind sched;
    unsigned hwm; /* balanced tasks an engine may hold at once */
    uint64_t rng; /* xorshift state for the random schedulers */
    task_table *tasks;
    struct registry *engines;
    requests *requests;
    struct store *store;
} balancer;

void tasks_init(balancer *b, sched_kind sched, unsigned hwm, task_table *tasks,
                struct registry *engines, requests *requests, struct store *store);

/* Built tasks, not in the table yet. */
typedef struct tasks_batch {
    task **items;
    json_t **target_specs; /* a "targets" spec string still to resolve, or NULL */
    size_t n;
    int is_list; /* the client sent a list */
} tasks_batch;

/* No lock: one task object, or each of a list (a batch, all or nothing).
 * map_mode: each spec is a map chunk (op "map" over its "args").  0, or -1 +
 * err (nothing built). */
int tasks_build(const balancer *b, const json_t *spec, int map_mode, tasks_batch *out,
                ippc_error *err);
/* No lock: the chunk tasks of a map body {"function", "sequences",
 * "chunksize", "ordered"}; what the map request needs to line results up
 * with the items in *shape.  0, or -1 + err. */
typedef struct tasks_map_shape {
    int ordered;
    size_t items, chunksize;
} tasks_map_shape;
int tasks_build_map(const balancer *b, const json_t *body, tasks_batch *out, tasks_map_shape *shape,
                    ippc_error *err);
/* Frees what is still in the batch (no lock). */
void tasks_batch_clear(tasks_batch *batch);

/* Adds the batch's tasks (consecutive ids from *first_id) as waiting; with
 * map, as its held chunks.  The batch is emptied.  0, or -1 + err (nothing
 * added). */
int tasks_enqueue(balancer *b, tasks_batch *batch, request *map, uint64_t *first_id,
                  ippc_error *err);
/* Settles what changed: waiting tasks whose dependencies are decided become
 * pending (or fail), pending tasks go to engines with room. */
void tasks_settle(balancer *b);
/* t's engine died under it: 1 if it was taken back to run elsewhere
 * (retries left), 0 if it is the caller's to end as lost. */
int tasks_retry(balancer *b, task *t);
/* Deadlines: timeouts (interrupt a running task, fail a waiting one) and
 * waiters; then settles. */
void tasks_tick(balancer *b, int64_t now);
/* Aborts t: pending -> aborted; running only with force (an interrupt naming
 * it).  0, or -1 + err (conflict). */
int tasks_abort(balancer *b, task *t, int force, ippc_error *err);
/* Forgets finished tasks completed before `before` (NULL: all) that no
 * waiting task still depends on and nobody waits for. */
void tasks_forget_finished(balancer *b, const char *before);
/* Per engine queued/running/completed counts, plus unassigned. */
json_t *tasks_queue_json(balancer *b);

#endif
