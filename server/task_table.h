/* task_table.h — the one task record and its state machine, and the task table:
 * every unit of engine work, whether one target of a direct-view request
 * (kind "direct") or a load-balanced task (kind "balanced"), is a task here.
 *
 *   waiting ──► pending ──► running ──► completed | failed | aborted | lost
 *      │           │            │
 *      └───────────┴──► failed | aborted (never sent)
 *                  ▲            │
 *                  └────────────┘ (balanced: its engine died, retries left)
 *
 * "waiting" is a balanced task whose dependencies are not met yet; clients
 * see it as "pending".  A direct task goes pending -> running at once (or
 * fails unsent when its request cannot be made).  The finished states are
 * final.  task_transition_legal() is the table, and every
 * state change asserts it.
 *
 * What the state machine does on each change, in one place: the engine's
 * queue counters (registry_task_started / _ended), the times (submitted,
 * started, completed), the task.* events, the store record, the waiters, and
 * the owner's hook for finished tasks (requests.c, tasks.c are told; this
 * module knows neither).
 *
 * Results are immutable once made (task_result) and reference-counted, so an
 * answer can take references under the hub lock and render after unlocking.
 *
 * Store records are not written under the lock: a change marks the task
 * dirty, and task_table_take_saves (under the lock) turns the dirty tasks into
 * records whose bulk (result bytes, JSON text) is built and queued by
 * task_saves_commit after the lock is released.
 *
 * Threads: everything but task_result_* and task_saves_commit expects the
 * hub lock held.  Memory: the table owns its tasks; a task is freed by
 * eviction (finished, not held, beyond keep_finished or the byte budget that
 * requests_trim enforces), purge, or task_table_free.  A held task (one a
 * request answers from) is never evicted until released.  result_bytes
 * counts what every result in memory costs.
 */
#ifndef IPPC_TASK_TABLE_H
#define IPPC_TASK_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "clock.h"
#include "engine_codec.h"
#include "idmap.h"
#include "list.h"
#include "value.h"
#include "waiter.h"

struct registry;
struct engine;
struct store;
struct events;

typedef enum task_kind { TASK_DIRECT = 0, TASK_BALANCED = 1 } task_kind;
#define TASK_NKINDS 2

typedef enum task_state {
    TASK_WAITING = 0, /* balanced, dependencies not met ("pending" to clients) */
    TASK_PENDING,     /* ready, no engine yet */
    TASK_RUNNING,     /* sent to its engine */
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_ABORTED,
    TASK_LOST, /* its engine died under it */
} task_state;
#define TASK_NSTATES 7

const char *task_kind_name(task_kind kind);
/* Parses "direct" / "balanced"; -1 otherwise. */
int task_kind_parse(const char *name);
/* The state as clients see it ("pending" for waiting). */
const char *task_state_name(task_state s);
/* The state's own name ("waiting" for waiting), for metrics. */
const char *task_state_label(task_state s);
int task_state_finished(task_state s);
/* 1 if a task of this kind may go from -> to. */
int task_transition_legal(task_kind kind, task_state from, task_state to);

/* An engine's answer (or one the controller made): the result message and
 * its blobs.  Never changed after task_result_new.  A raw answer serves its
 * array straight from blobs while it holds a reference. */
typedef struct task_result {
    int refs; /* atomic */
    json_t *msg;
    ippc_blobs blobs;
    size_t bytes; /* what keeping it costs: its blobs plus json_bytes_estimate(msg) */
} task_result;

/* Takes msg, moves blobs in (NULL: none).  NULL on OOM (msg freed). */
task_result *task_result_new(json_t *msg, ippc_blobs *blobs);
task_result *task_result_ref(task_result *r);
void task_result_unref(task_result *r); /* any thread; NULL is fine */
/* Drops n references collected under the lock (task_table_take_dropped),
 * and frees v.  Any thread, no lock. */
void task_results_drop(task_result **v, size_t n);

/* What only a balanced task has (scheduling data, owned with the task). */
typedef struct task_balanced {
    int *allowed; /* engine ids from "targets"; NULL = any */
    size_t n_allowed;
    uint64_t *deps; /* after, then follow */
    size_t n_after, n_follow;
    /* Each dependency's outcome once known final (from memory when it
     * finished, or from the store at submit): TASK_NSTATES = not known. */
    task_state *dep_state;
    int *dep_engine;
    int success_only;
    int retries;
    double timeout;      /* seconds; 0 = none */
    int64_t deadline_ms; /* 0 = none */
    int timed_out, abort_requested;
} task_balanced;

typedef struct task {
    uint64_t id;
    task_kind kind;
    task_state state;
    int engine;           /* -1 until started */
    uint64_t request_id;  /* the direct-view request or map it belongs to; 0 none */
    size_t request_index; /* its place there */
    int held;             /* its request answers from it: not evicted */
    char submitted[CLOCK_ISO_LEN], started[CLOCK_ISO_LEN], completed[CLOCK_ISO_LEN];
    /* What it does, immutable: a balanced task's spec as the client gave it
     * (kept for its document and resubmit); a direct task's {"op", ...}. */
    json_t *spec;
    codec_msg *msg;      /* what is sent; dropped once finished */
    task_result *result; /* NULL until finished */
    uint64_t finish_seq; /* the table's finished_total when it finished */
    waiter *waiters;
    task_balanced *lb; /* balanced only */
    /* table bookkeeping */
    int list; /* which of task_table.lists holds it (link); -1 none */
    list_node link;
    int dirty;
    list_node dirty_link; /* in task_table.dirty iff dirty */
} task;

enum { TASK_LIST_WAITING, TASK_LIST_PENDING, TASK_LIST_RUNNING, TASK_LIST_FINISHED, TASK_NLISTS };

typedef struct task_list {
    list_node head; /* task.link, in the order they came */
    size_t count;
} task_list;

typedef struct task_save task_save;

typedef struct task_table {
    idmap by_id;                  /* every task in memory */
    task_list lists[TASK_NLISTS]; /* by state; held finished tasks are in none */
    size_t counts[TASK_NSTATES];  /* tasks in memory by state */
    uint64_t next_id;
    uint64_t finished_total; /* tasks that reached a final state, ever */
    /* No task with a larger id has left memory (ids before this process
     * count as gone).  Written under the lock, read atomically without it:
     * a dependency above it needs no store lookup. */
    uint64_t max_gone_id;
    size_t keep_finished; /* finished, unheld tasks kept in memory */
    /* Bytes of every result in memory (task_result.bytes of each task that
     * has one, held or not): what --keep-results-mb bounds (requests.c
     * trims). */
    size_t result_bytes;
    /* References this table let go of under the lock, dropped by the owner
     * after unlocking (task_table_take_dropped): freeing array bytes can
     * take milliseconds. */
    task_result **dropped;
    size_t ndropped, dropped_cap;
    struct registry *engines;
    struct store *store;
    struct events *events;
    void (*finished)(void *ctx, task *t); /* told when a task reaches a final state */
    void *ctx;
    list_node dirty;  /* task.dirty_link: tasks changed since the last take */
    task_save *saves; /* records built for tasks freed while dirty */
} task_table;

void task_table_init(task_table *tt, struct registry *engines, struct store *store,
                     struct events *events, size_t keep_finished);
/* Frees every task (and drops unsaved records). */
void task_table_free(task_table *tt);
task *task_table_get(const task_table *tt, uint64_t id);
/* The first task of lists[which], or NULL.  Iterating with task_list_next
 * follows the list a task is in when it is called: save the next one before
 * moving t to another list, as with any list. */
task *task_list_first(const task_table *tt, int which);
/* The task after t in the list that holds t now, or NULL (the end, or t is in
 * no list). */
task *task_list_next(const task_table *tt, const task *t);

/* A new task, not in the table yet (id 0): takes spec and the msg
 * reference.  NULL on OOM (both dropped). */
task *task_new(task_kind kind, json_t *spec, codec_msg *msg);
/* Frees a task that was never added. */
void task_discard(task *t);
/* Adds t: its id, submitted time, task.submitted event, store record.
 * initial is TASK_WAITING (balanced) or TASK_PENDING.  request_id (0: none)
 * and held as the owner says.  0, or -1 on OOM (t untouched). */
int task_add(task_table *tt, task *t, task_state initial, uint64_t request_id, size_t index,
             int held);

/* waiting -> pending (dependencies met). */
void task_ready(task_table *tt, task *t);
/* pending -> running on e, and sends it.  0, or -1 if the send failed (the
 * task is then lost: finished), or the message is larger than e accepts
 * (e->max_message: the task fails unsent, TooLargeError, and e is not
 * disturbed). */
int task_start(task_table *tt, task *t, struct engine *e);
/* running -> pending at the front of the queue (balanced retry). */
void task_requeue(task_table *tt, task *t);
/* -> a final state with result (taken; NULL for none). */
void task_finish(task_table *tt, task *t, task_state to, task_result *result);
/* The engine's result message (taken) and blobs (moved) end a running task:
 * completed, failed (a timed-out task as TimeoutError), aborted, lost. */
void task_complete(task_table *tt, task *t, json_t *msg, ippc_blobs *blobs);
/* A held task's request let it go: it joins the finished list (and its
 * eviction); a direct task keeps only its outcome and stdout. */
void task_release(task_table *tt, task *t);
/* Frees a finished, unheld task now (purge). */
void task_forget(task_table *tt, task *t);
/* Takes a finished, unheld task out of memory as the bound does (its store
 * record is still written): the byte budget's eviction. */
void task_evict(task_table *tt, task *t);
/* The references let go of since the last call (caller drops them with
 * task_results_drop after unlocking), *n of them; NULL when none. */
task_result **task_table_take_dropped(task_table *tt, size_t *n);

/* The task as clients see it, without "result". */
json_t *task_doc(const task *t);
/* Whether the document shows a "result" (*present: a completed balanced
 * task), and the result it is made from: a reference for the caller, so the
 * value can be converted after unlocking. */
task_result *task_doc_result(const task *t, int *present);
/* Adds "result" (client JSON, its arrays written as fmt; null without a
 * value) to doc.  Any thread. */
void task_doc_add_result(json_t *doc, const task_result *res, value_format fmt);
/* A balanced task's tags (borrowed), or NULL. */
const json_t *task_tags(const task *t);

/* Store records of the tasks changed since the last call (under the lock);
 * task_saves_commit queues them on the store and frees the list (without
 * the lock).  NULL when nothing changed. */
task_save *task_table_take_saves(task_table *tt);
void task_saves_commit(struct store *store, task_save *saves);

#endif
