/* jobspec.h — what an engine job is, and the launcher's control messages.
 *
 * An engine job is one group of engines the launcher starts with one command:
 * an MPI job (mpiexec, optionally over a hostfile), N local MPI singletons, or
 * a batch job (Slurm's sbatch + srun, PBS's qsub + mpiexec).  `ippc cluster
 * start` describes its first job with a jobspec; `ippc cluster add` sends
 * another one to the running launcher over its control socket
 * (profile.h: pid/launcher.sock) as one JSON line:
 *   {"op":"add","spec":{...},"timeout":S}   start a job, answer when its
 *                                           engines registered
 *   {"op":"remove","job":"NAME|NUMBER"}     stop one job
 *   {"op":"jobs"}                           list the jobs
 * The launcher answers one JSON line: {"ok":true,...} or
 * {"ok":false,"error":"..."}.
 *
 * Fields end up in batch scripts and mpiexec's argv, so the parser is strict:
 * no control characters anywhere, partition/account/time from small
 * alphabets, sizes bounded.  Pure functions, any thread; the caller owns what
 * it passes and gets.
 */
#ifndef IPPC_JOBSPEC_H
#define IPPC_JOBSPEC_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum jobspec_kind { JOB_MPI, JOB_LOCAL, JOB_SLURM, JOB_PBS } jobspec_kind;

#define JOBSPEC_MAX_ENGINES 100000
#define JOBSPEC_MAX_DIRECTIVES 16
#define JOBSPEC_REQUEST_MAX 65536 /* bytes of one control line */

typedef struct jobspec {
    jobspec_kind kind;
    long engines;                                 /* 1..JOBSPEC_MAX_ENGINES */
    long ppn;                                     /* engines per host; 0: the MPI's default */
    char hostfile[PATH_MAX];                      /* "" for none (mpi, and pbs/slurm ignore it) */
    char mpiexec_args[1024];                      /* extra mpiexec arguments, split at blanks */
    char partition[128];                          /* slurm --partition, pbs -q; "" for none */
    char time_limit[64];                          /* slurm --time, pbs -l walltime; "" for none */
    char account[128];                            /* slurm --account, pbs -A; "" for none */
    char directives[JOBSPEC_MAX_DIRECTIVES][256]; /* extra #SBATCH / #PBS lines */
    size_t n_directives;
} jobspec;

typedef enum jobspec_op { JOBSPEC_ADD, JOBSPEC_REMOVE, JOBSPEC_LIST } jobspec_op;

typedef struct jobspec_request {
    jobspec_op op;
    jobspec spec;   /* JOBSPEC_ADD */
    double timeout; /* JOBSPEC_ADD: seconds to wait for the engines; 0: default */
    char job[64];   /* JOBSPEC_REMOVE: a job's name or number */
} jobspec_request;

/* "mpi", "local", "slurm", "pbs". */
const char *jobspec_kind_name(jobspec_kind kind);
/* Returns 0 and sets *kind, or -1 for an unknown name. */
int jobspec_kind_parse(const char *name, jobspec_kind *kind);

/* A spec with defaults: kind mpi, engines 0 (to be set), nothing else. */
void jobspec_init(jobspec *spec);

/* Checks every field (see the top).  Returns 0, or -1 with err. */
int jobspec_validate(const jobspec *spec, char *err, size_t err_len);

/* Helpers for option parsers: set one field, validated.  0 or -1 with err. */
int jobspec_set_text(char *field, size_t field_len, const char *what, const char *value,
                     const char *alphabet, char *err, size_t err_len);
int jobspec_add_directive(jobspec *spec, const char *line, char *err, size_t err_len);

/* The spec as the "spec" object of an add request (new reference). */
json_t *jobspec_to_json(const jobspec *spec);

/* Parses one control line (len bytes, not necessarily NUL-terminated).
 * Returns 0, or -1 with err saying what is wrong. */
int jobspec_request_parse(const char *text, size_t len, jobspec_request *out, char *err,
                          size_t err_len);

/* Alphabets of the text fields (NULL in jobspec_set_text: any printable). */
#define JOBSPEC_NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-,@"
#define JOBSPEC_TIME_CHARS "0123456789:-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

#endif
