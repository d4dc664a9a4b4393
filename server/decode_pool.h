/* decode_pool.h — big JSON request bodies decoded off the MHD thread, within a
 * memory budget.
 *
 * Parsing tens of megabytes of JSON takes seconds and builds a tree 20-40
 * times the size of the text (jansson allocates one json_t per number).  Done
 * on libmicrohttpd's one polling thread, that stalls every other REST call.
 * The pool runs such decodes on a few worker threads, one job at a time per
 * worker, while the requesting connection is suspended.
 *
 * Every allocation jansson makes while a worker parses is counted (the pool
 * installs json_set_alloc_funcs with a thread-local meter; other threads
 * allocate through plain malloc) and charged to the job's budget_account in
 * steps.  Past the account's cap the parse stops with ERR_TOO_LARGE; when the
 * process-wide budget is spent, with ERR_OVERLOADED.  The tree stays charged
 * to the account after the job: the caller gives the bytes back when it frees
 * the tree (budget_account_release).
 *
 * Threads: decode_pool_start/stop on one thread (the controller's main);
 * decode_pool_submit from any thread.  A job's `then` and `done` run on a
 * worker (or, for jobs still queued at stop, on the stopping thread).  The
 * job's memory belongs to the submitter; the pool never touches a job after
 * calling its done().
 */
#ifndef IPPC_DECODE_POOL_H
#define IPPC_DECODE_POOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <jansson.h>

#include "budget.h"
#include "error.h"

typedef struct decode_pool decode_pool;
typedef struct decode_job decode_job;

struct decode_job {
    /* set by the submitter */
    const char *text; /* not owned; must live until done() */
    size_t len;
    budget_account *account; /* charged for the tree (its cap ends the parse) */
    /* Optional, on the worker after a good parse: more work on job->value
     * (converting values, freeing the tree).  0, or -1 with job->err set. */
    int (*then)(decode_job *job);
    /* Last call the pool makes with this job: hand the result back. */
    void (*done)(decode_job *job);
    void *arg;
    /* results: value (new reference) or failed + err */
    json_t *value;
    int failed;
    ippc_error err;
    size_t peak;      /* most bytes the tree held while parsing */
    decode_job *next; /* the pool's queue */
};

/* Starts `workers` threads and installs the metering allocator for jansson
 * (process-wide; it is plain malloc/free on every thread but the workers).
 * NULL + err on failure. */
decode_pool *decode_pool_start(int workers, ippc_error *err);
/* Queues a job.  -1 (nothing queued, done() not called) when stopping. */
int decode_pool_submit(decode_pool *p, decode_job *job);
/* Jobs still queued fail with ERR_UNAVAILABLE; running parses are cut short
 * (their next allocation fails).  Returns once every job's done() has run. */
void decode_pool_stop(decode_pool *p);

/* The parse a worker runs, on the calling thread: JSON text (any value) ->
 * job->value, metered against job->account.  0, or -1 with job->err: bad
 * JSON is ERR_BAD_REQUEST, the cap ERR_TOO_LARGE, the budget ERR_OVERLOADED.
 * cancel, if not NULL, is polled at every allocation. */
int decode_json_metered(decode_job *job, const atomic_int *cancel);

#endif
