/* store.h — the task store: task history in SQLite (WAL), written by one
 * writer thread in batched transactions, so the request path never waits on
 * fsync.
 *
 * A record is one task as the client sees it (doc) plus its result in wire
 * form: a skeleton and its blobs (array bytes stored raw, never as JSON
 * numbers).  The hub converts back to client JSON on read.
 *
 * Files: store_open(path) with path NULL or "memory" keeps everything in a
 * private in-memory database.  Opening migrates the schema (versioned with
 * PRAGMA user_version) and marks tasks that were pending or running when the
 * previous controller died as "lost".  A corrupt, unreadable or locked file is
 * a clear error (err), never a crash.  While a file store is open no other
 * process can open its database (not even to read): see store.c for why.
 *
 * Storage faults.  A write that fails after the store is open (a full disk,
 * a file made immutable, the database file removed) never stops
 * the controller: the store turns "degraded" (one line on stderr per change
 * of state, and store_get_status), keeps the records it could not write in
 * memory, newest snapshot per task, and the writer thread retries with
 * back-off (STORE_RETRY_FIRST_MS doubling to STORE_RETRY_MAX_MS).  When a
 * retry commits, the state is "ok" again and nothing was lost.  The records
 * held are bounded (STORE_PENDING_MAX, store_set_pending_max): past the bound
 * the oldest are dropped, counted in `dropped` and reported once per fault.
 * Records still unsaved when the store closes are dropped the same way after
 * a few last attempts.  A record that can never be stored (a result larger
 * than SQLite accepts) is dropped at once and counted too.
 *
 * Threads: every function may be called from any thread.  store_save queues
 * and returns at once; store_flush waits until everything queued before it is
 * committed (or returns at once, -1, while degraded); reads see committed
 * data.
 */
#ifndef IPPC_STORE_H
#define IPPC_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "error.h"
#include "value.h"

typedef struct store store;

typedef struct store_record {
    uint64_t id;                                 /* task id, > 0 */
    uint64_t request_id;                         /* 0 if none */
    const char *kind;                            /* "direct" or "balanced"; NULL = balanced */
    const char *state;                           /* pending running completed failed aborted lost */
    int engine;                                  /* -1 if none */
    const char *submitted, *started, *completed; /* ISO 8601 UTC or NULL */
    json_t *tags;                                /* list of strings or NULL */
    json_t *doc;                                 /* the task's client JSON (without "result") */
    json_t *result;                              /* result skeleton or NULL */
    ippc_blobs blobs;                            /* the skeleton's blobs */
} store_record;

/* Fills *lost_on_open with how many unfinished tasks were marked lost. */
store *store_open(const char *path, size_t *lost_on_open, ippc_error *err);
void store_close(store *s); /* flushes, stops the writer, closes */

/* Queues an insert-or-replace of rec->id.  Takes ownership of every field's
 * references (tags, doc, result) and moves the blobs; copies the strings.
 * Returns 0, or -1 if the store is closing / out of memory (rec freed). */
int store_save(store *s, store_record *rec);
/* Waits until every save queued before this call is committed: 0.  -1 when
 * the store is degraded (some of them are still waiting in memory); it never
 * waits for a fault to clear. */
int store_flush(store *s);

#define STORE_PENDING_MAX 100000 /* unsaved records held while degraded */
#define STORE_RETRY_FIRST_MS 100 /* first retry after a failed write */
#define STORE_RETRY_MAX_MS 2000  /* back-off cap */
#define STORE_ERROR_LEN 512      /* as ippc_error.message */
#define STORE_TIME_LEN 48

typedef struct store_status {
    int degraded;                /* 0 ok, 1 degraded */
    char error[STORE_ERROR_LEN]; /* why it is degraded ("" when ok) */
    char since[STORE_TIME_LEN];  /* ISO 8601 UTC: when this state began */
    size_t pending;              /* saves accepted and not yet committed */
    uint64_t dropped;            /* records given up since store_open */
} store_status;

/* A consistent snapshot of the store's health (memory stores are always ok). */
void store_get_status(store *s, store_status *out);
/* The same as the client JSON object {"state": "ok"|"degraded", "error": str
 * or null, "since", "pending", "dropped"}: a new reference, NULL on OOM. */
json_t *store_status_json(store *s);
/* Changes the bound on unsaved records (>= 1; tests use small ones). */
void store_set_pending_max(store *s, size_t max);

/* Reads one task; 1 found (rec filled: caller frees with store_record_free),
 * 0 not found, -1 error. */
int store_get(store *s, uint64_t id, store_record *rec, ippc_error *err);
void store_record_free(store_record *rec);
/* Only a task's state and engine (a dependency check needs no more): 1 found
 * (state: "pending" ... "lost", copied into state[size]), 0 not found, -1
 * error. */
int store_get_state(store *s, uint64_t id, char *state, size_t size, int *engine, ippc_error *err);

typedef struct store_query {
    const char *state;   /* NULL = any */
    const char *kind;    /* "direct" | "balanced"; NULL = any */
    uint64_t request_id; /* tasks of this request; 0 = any */
    int engine;          /* -1 = any */
    const char *tag;     /* NULL = any: tasks whose tags contain this string */
    const char *since;   /* ISO 8601; submitted >= since; NULL = any */
    size_t limit;        /* 1..1000 */
    uint64_t cursor;     /* return tasks with id > cursor; 0 = from the start */
} store_query;

/* Tasks matching q in id order: a new JSON list of docs (with "result" in
 * client form, VALUE_FORMAT_LIST) and *next_cursor (0 when no more). */
json_t *store_query_tasks(store *s, const store_query *q, uint64_t *next_cursor, ippc_error *err);

/* Deletes finished tasks completed before `before` (ISO 8601; NULL = all
 * finished).  Returns how many, or -1. */
long store_purge(store *s, const char *before, ippc_error *err);

/* The highest task id stored (so a restarted controller continues after it). */
uint64_t store_max_id(store *s);

#endif
