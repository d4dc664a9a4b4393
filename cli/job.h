/* job.h — one engine job the launcher started, and the child processes it
 * supervises.
 *
 * An engine job is one command that starts engines (jobspec.h): mpiexec
 * (optionally over a hostfile), N local singletons, or a Slurm/PBS batch job.
 * The launcher (launcher.c) owns a list of them — the first from `ippc cluster
 * start`, more from `ippc cluster add` — and this module knows how to start
 * one, whether its processes or batch job still run, how to signal or cancel
 * it, and how to describe it.  Each job is named jN (N its number, 0 for the
 * first); its engines run `ippc-engine --job jN`, so their job id at the
 * controller is "jN.<hex>" and GET /api/v1/engines tells whose they are.
 *
 * Single-threaded: the launcher's thread only.  An engine_job owns its locals
 * array (job_free).
 */
#ifndef IPPC_CLI_JOB_H
#define IPPC_CLI_JOB_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

#include "jobspec.h"
#include "profile.h"

/* A process the launcher started and waits for. */
typedef struct job_child {
    pid_t pid; /* 0: never started */
    char role[64];
    bool reaped;
    bool reported; /* its exit was already told to the user */
    int status;
} job_child;

void job_child_reap(job_child *c);
bool job_child_running(const job_child *c);
void job_child_signal(const job_child *c, int signo);
/* "mpiexec (pid 12) exited with status 1". */
void job_child_describe_exit(const job_child *c, char *buf, size_t len);

/* What every job's command needs (owned by the launcher). */
typedef struct job_env {
    const profile_paths *paths;
    const char *engine_path;
    const char *mpiexec_path;
    const char *engine_file;
    const char *runtime;        /* the engines' language: NULL or "lua" (default), "python" */
    bool real_mpi4py;           /* python: the engines get --real-mpi4py */
    int log_fd;                 /* engines' output in daemon mode; -1: inherit */
    const sigset_t *child_mask; /* the children's signal mask */
} job_env;

typedef enum job_phase {
    JOB_STARTING, /* started, engines not all registered yet */
    JOB_UP,       /* all its engines registered */
    JOB_ENDED,    /* its processes or batch job ended by themselves */
    JOB_REMOVED,  /* stopped by `ippc cluster remove` */
    JOB_FAILED,   /* did not come up */
} job_phase;

typedef struct engine_job {
    int number;
    char name[16]; /* "j<number>" */
    jobspec spec;
    job_phase phase;
    char ended_why[256]; /* JOB_ENDED / JOB_FAILED: what happened */

    job_child mpiexec; /* JOB_MPI */
    job_child *locals; /* JOB_LOCAL: spec.engines of them */
    size_t local_count;
    pid_t group; /* process group of mpiexec or of the locals */

    char batch_id[64]; /* JOB_SLURM, JOB_PBS: the batch system's id */
    char batch_state[160];
    bool batch_ended;
    double batch_checked_at;
    char script_path[PATH_MAX];
} engine_job;

/* A job numbered number for spec (copied). */
void job_init(engine_job *job, int number, const jobspec *spec);
void job_free(engine_job *job);

/* Starts it (a batch job: writes its script and submits it).  Progress and
 * errors go through msg_err.  Returns 0 or -1. */
int job_start(engine_job *job, const job_env *env);

/* Reaps its children; true while any of them runs. */
bool job_processes_running(engine_job *job);
/* A child of the job that ended, or NULL. */
const job_child *job_first_ended(engine_job *job);
/* Batch jobs: asks the batch system (at most every 2 s unless now) and
 * returns true once the job ended; batch_state says how. */
bool job_batch_ended(engine_job *job, bool now);
bool job_is_batch(const engine_job *job);

/* Signals mpiexec and its group, or the local engines. */
void job_signal(engine_job *job, int signo);
/* scancel / qdel, unless it already ended.  0 or -1 (reported). */
int job_cancel(engine_job *job);

/* Whether an engine's job id ("j1.3fa2...") belongs to this job. */
bool job_owns_engine(const engine_job *job, const char *engine_job_id);

/* "MPI job of 4 (mpiexec)", "Slurm job 12 of 4". */
void job_describe(const engine_job *job, char *buf, size_t len);
const char *job_phase_name(job_phase phase);
/* {"job","number","kind","engines","state",...} for `ippc cluster jobs`. */
json_t *job_json(const engine_job *job);

#endif
