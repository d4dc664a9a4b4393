/* batch.h — engines as a batch job: Slurm (sbatch + srun) and PBS (qsub +
 * mpiexec inside the allocation).
 *
 * batch_script() writes the job script from a jobspec (pure: the tests compare
 * it with expected files); batch_submit(), batch_query() and batch_cancel()
 * run the batch system's own commands (sbatch/squeue-free scontrol/scancel,
 * qsub/qstat/qdel) found on PATH, with a time limit, and report what they
 * said.  Nothing here keeps state: the launcher (launcher.c) owns the job ids.
 *
 * Single-threaded (the launcher's thread).  Children are waited for by pid,
 * so the launcher's own children are never reaped here.
 */
#ifndef IPPC_CLI_BATCH_H
#define IPPC_CLI_BATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "jobspec.h"

/* What the script runs, besides the spec. */
typedef struct batch_context {
    const char *profile;      /* cluster profile, for the batch job's name */
    const char *job_name;     /* the launcher's name of this job ("j1") */
    const char *engine_path;  /* ippc-engine */
    const char *engine_file;  /* ippc-engine.json (on a shared file system) */
    const char *mpiexec_path; /* PBS: the mpiexec run inside the allocation */
    const char *log_dir;      /* where the batch system writes the job's output */
    const char *runtime;      /* the engines' --runtime, or NULL for the default */
    bool real_mpi4py;         /* the engines get --real-mpi4py */
} batch_context;

/* The script for spec (kind JOB_SLURM or JOB_PBS) into out.  Returns 0, or -1
 * when it does not fit (err says so). */
int batch_script(const jobspec *spec, const batch_context *ctx, char *out, size_t len, char *err,
                 size_t err_len);

/* "Slurm" or "PBS". */
const char *batch_system_name(jobspec_kind kind);

/* Submits script_path; fills job_id ("123", "45.server").  Returns 0, or -1
 * with what the submit command said in err. */
int batch_submit(jobspec_kind kind, const char *script_path, char *job_id, size_t id_len, char *err,
                 size_t err_len);

typedef enum batch_state {
    BATCH_ACTIVE,  /* queued, starting or running */
    BATCH_ENDED,   /* finished, failed, cancelled, or no longer known */
    BATCH_UNKNOWN, /* the query itself failed (batch system unreachable) */
} batch_state;

/* Asks the batch system about job_id; state_text gets its word for the
 * state ("RUNNING", "CANCELLED", "R", "F", "gone"), or for BATCH_UNKNOWN what
 * went wrong. */
batch_state batch_query(jobspec_kind kind, const char *job_id, char *state_text, size_t len);

/* scancel / qdel job_id.  Returns 0, or -1 with err. */
int batch_cancel(jobspec_kind kind, const char *job_id, char *err, size_t err_len);

#endif
