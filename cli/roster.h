/* roster.h — the engines a controller reports, and what MPI world they form.
 *
 * A roster is parsed from GET /api/v1/engines.  The launcher uses it to count
 * registered engines, to learn the engines' pids (SIGKILL to mpiexec leaves
 * MPI ranks running, so a forced stop must kill them by pid) and to check that
 * `mpiexec -n N` really produced one MPI world of N ranks — the usual way that
 * goes wrong is an mpiexec from another MPI, which starts N singletons.
 */
#ifndef IPPC_CLI_ROSTER_H
#define IPPC_CLI_ROSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct roster_engine {
    long id;
    long rank;
    long size;
    long pid;
    char job[72];
    char host[256];
    char state[16];
    char runtime[16]; /* "lua" when the engine did not say */
} roster_engine;

typedef struct roster {
    roster_engine *engines; /* owned */
    size_t count;
} roster;

/* Parses {"engines":[...]}.  Returns 0, or -1 with err. */
int roster_parse(const json_t *reply, roster *out, char *err, size_t err_len);
void roster_free(roster *r);

/* The engines of the launcher's job `name` (job ids "NAME.<hex>"), copied
 * into out (free with roster_free).  Returns 0, or -1 (out of memory). */
int roster_select_job(const roster *r, const char *name, roster *out);

bool roster_engine_live(const roster_engine *engine);
size_t roster_live_count(const roster *r);

typedef enum roster_world {
    ROSTER_ONE_WORLD,  /* some job has exactly ranks 0..n-1 of size n */
    ROSTER_SINGLETONS, /* every live engine is rank 0 of a world of 1 */
    ROSTER_SPLIT       /* anything else */
} roster_world;

/* Classifies the live engines against the expectation "one MPI world of n".
 * For ROSTER_SPLIT, describe gets a summary of the worlds that did form. */
roster_world roster_check_world(const roster *r, long n, char *describe, size_t len);

#endif
