/* registry.h — the engines: registration into per-job id blocks, liveness
 * (heartbeats, death), their queue counters, and the one send path to an
 * engine's socket.
 *
 * Owns: engine and job records (engines never move once registered: an
 * engine's id is its index, stable for the controller's life).  Knows nothing
 * of tasks or requests: the task state machine (task_table.c) is the only caller
 * of registry_task_started / registry_task_ended, so an engine's queue and
 * state change in one place.
 *
 * Threads: every function expects the hub lock held (the registry is part of
 * the hub's state).  Memory: the registry owns its arrays; engine pointers
 * are valid until the next registry_register (which may grow the array), so
 * callers never keep one across an unlock.
 */
#ifndef IPPC_REGISTRY_H
#define IPPC_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "clock.h"
#include "error.h"
#include "hub.h"

typedef enum engine_state {
    ENGINE_ABSENT = 0, /* id reserved for a rank that has not registered */
    ENGINE_IDLE,
    ENGINE_BUSY,
    ENGINE_DEAD,
} engine_state;
#define ENGINE_NSTATES 4

typedef struct engine {
    int id;
    engine_state state;
    int rank, size;
    char job[65];
    char host[256];
    long pid;
    char registered[CLOCK_ISO_LEN]; /* ISO 8601 */
    int64_t last_heartbeat_ms;
    hub_engine_link link; /* valid while live */
    size_t queued;        /* tasks sent and not finished (direct and balanced) */
    unsigned lb_load;     /* balanced tasks sent and not finished */
    uint64_t last_used;   /* use counter at its last balanced assignment */
    uint64_t tasks_done;
    size_t max_message; /* the largest message it accepts ("max_message" at register) */
    char runtime[8];    /* "lua" or "python" ("runtime" at register; absent: "lua") */
} engine;

typedef struct job {
    char name[65];
    char runtime[8]; /* every rank of a job runs the same runtime */
    int size;
    int base; /* rank r of this job is engine base + r */
} job;

typedef struct registry {
    engine *engines; /* engines[id]; n_engines ids handed out (some ABSENT) */
    size_t n_engines, cap_engines;
    job *jobs;
    size_t n_jobs, cap_jobs;
    uint64_t use_counter;
    uint64_t bytes_to_engines, bytes_from_engines;
} registry;

void registry_init(registry *r);
void registry_free(registry *r);

const char *engine_state_name(engine_state s);
int engine_is_live(const engine *e);

/* Validates a register message (key compared in constant time) and records
 * the engine: its rank's slot in the job's id block.  The engine, or NULL +
 * err (unauthorized, bad_request, conflict, internal). */
engine *registry_register(registry *r, const json_t *msg, const char *engine_key,
                          const hub_engine_link *link, int64_t now, ippc_error *err);
/* A registered engine (live or dead), or NULL. */
engine *registry_get(registry *r, int engine_id);
/* A live engine, or NULL. */
engine *registry_live(registry *r, int engine_id);
/* The live ids in id order: *ids malloc'd (caller frees).  0, or -1 (OOM). */
int registry_live_ids(const registry *r, int **ids, size_t *n);

/* 1 if some engine of MPI job `name` is dead (its job may be broken: no
 * collective is asked of it then), else 0. */
int registry_job_has_dead(const registry *r, const char *name);

/* Any message from an engine counts as a heartbeat. */
void registry_heard(engine *e, int64_t now);
/* A heartbeat message's own busy flag. */
void registry_heartbeat(engine *e, int busy);
/* Live -> dead (the link is forgotten).  1 if it was live, else 0. */
int registry_mark_dead(engine *e);

/* Queues msg (plus blobs) on the engine's socket and counts the bytes.  0, or
 * -1 if the engine is not live or its socket refused. */
int registry_send(registry *r, engine *e, json_t *msg, ws_blobref **blobs, size_t nblobs);
/* Counts result bytes that arrived from engines. */
void registry_count_received(registry *r, const ippc_blobs *blobs);

/* The engine took / let go of a task (called by task_table.c only).  done: the
 * task ended there (counted in tasks_done), rather than being taken back to
 * run elsewhere. */
void registry_task_started(registry *r, engine *e, int balanced);
void registry_task_ended(engine *e, int balanced, int done);

/* The engine as clients see it. */
json_t *engine_json(const engine *e, int64_t now);
/* Engines by state and the sum of their queues (for metrics). */
void registry_counts(const registry *r, size_t by_state[ENGINE_NSTATES], size_t *queued);

#endif
