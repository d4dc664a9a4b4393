/* job.c — starting, watching and stopping one engine job (job.h). */
#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batch.h"
#include "msg.h"
#include "proc.h"

#define BATCH_POLL_S 2.0
#define MAX_ARGV 160

/* ---- children -------------------------------------------------------------- */

void job_child_reap(job_child *c)
{
    int status;

    if (c->pid <= 0 || c->reaped)
        return;
    if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
        c->reaped = true;
        c->status = status;
    }
}

bool job_child_running(const job_child *c)
{
    return c->pid > 0 && !c->reaped;
}

void job_child_signal(const job_child *c, int signo)
{
    if (job_child_running(c))
        kill(c->pid, signo);
}

void job_child_describe_exit(const job_child *c, char *buf, size_t len)
{
    char how[128];

    proc_describe_status(c->status, how, sizeof how);
    snprintf(buf, len, "%s (pid %ld) %s", c->role, (long)c->pid, how);
}

/* ---- the job ----------------------------------------------------------------- */

void job_init(engine_job *job, int number, const jobspec *spec)
{
    memset(job, 0, sizeof *job);
    job->number = number;
    snprintf(job->name, sizeof job->name, "j%d", number);
    job->spec = *spec;
    job->phase = JOB_STARTING;
}

void job_free(engine_job *job)
{
    free(job->locals);
    job->locals = NULL;
    job->local_count = 0;
}

bool job_is_batch(const engine_job *job)
{
    return job->spec.kind == JOB_SLURM || job->spec.kind == JOB_PBS;
}

/* The runtime to name on the engines' command line: only one that is not the
 * engine's default (so the commands and batch scripts of Lua clusters stay
 * as they were), or NULL. */
static const char *job_env_runtime(const job_env *env)
{
    return env->runtime && strcmp(env->runtime, "lua") != 0 ? env->runtime : NULL;
}

/* mpiexec [-f HOSTFILE] [-ppn K] [ARGS...] -n N ippc-engine --file F --job jN.
 * words holds the split --mpiexec-args (argv points into it). */
static int mpi_argv(const engine_job *job, const job_env *env, char *argv[MAX_ARGV], char *words,
                    size_t words_len, char *numbers, size_t numbers_len)
{
    const jobspec *spec = &job->spec;
    size_t argc = 0;
    char *save = NULL;
    char *ppn = numbers;
    char *count = numbers + numbers_len / 2;

    snprintf(ppn, numbers_len / 2, "%ld", spec->ppn);
    snprintf(count, numbers_len / 2, "%ld", spec->engines);
    argv[argc++] = (char *)env->mpiexec_path;
    if (spec->hostfile[0] != '\0') {
        argv[argc++] = "-f";
        argv[argc++] = (char *)spec->hostfile;
    }
    if (spec->ppn > 0) {
        argv[argc++] = "-ppn";
        argv[argc++] = ppn;
    }
    snprintf(words, words_len, "%s", spec->mpiexec_args);
    for (char *word = strtok_r(words, " \t", &save); word != NULL;
         word = strtok_r(NULL, " \t", &save)) {
        if (argc >= MAX_ARGV - 10) {
            msg_err("--mpiexec-args has more than %d words", MAX_ARGV - 10);
            return -1;
        }
        argv[argc++] = word;
    }
    argv[argc++] = "-n";
    argv[argc++] = count;
    argv[argc++] = (char *)env->engine_path;
    argv[argc++] = "--file";
    argv[argc++] = (char *)env->engine_file;
    argv[argc++] = "--job";
    argv[argc++] = (char *)job->name;
    if (job_env_runtime(env)) {
        argv[argc++] = "--runtime";
        argv[argc++] = (char *)env->runtime;
    }
    if (env->real_mpi4py)
        argv[argc++] = "--real-mpi4py";
    argv[argc] = NULL;
    return 0;
}

static int start_mpi(engine_job *job, const job_env *env, proc_options *spawn)
{
    char *argv[MAX_ARGV];
    char words[sizeof job->spec.mpiexec_args];
    char numbers[64];
    char command[4 * PATH_MAX];
    char err[PATH_MAX + 128];

    if (mpi_argv(job, env, argv, words, sizeof words, numbers, sizeof numbers) < 0)
        return -1;
    proc_format_command(argv, command, sizeof command);
    msg_err("starting %ld engine%s (job %s): %s", job->spec.engines,
            job->spec.engines == 1 ? "" : "s", job->name, command);
    snprintf(job->mpiexec.role, sizeof job->mpiexec.role, "mpiexec of job %s", job->name);
    job->mpiexec.pid = proc_spawn(argv, spawn, err, sizeof err);
    if (job->mpiexec.pid < 0) {
        job->mpiexec.pid = 0;
        msg_err("%s", err);
        return -1;
    }
    job->group = job->mpiexec.pid;
    return 0;
}

static int start_local(engine_job *job, const job_env *env, proc_options *spawn)
{
    char *argv[] = {(char *)env->engine_path,
                    "--file",
                    (char *)env->engine_file,
                    "--job",
                    job->name,
                    job_env_runtime(env) ? "--runtime" : NULL,
                    (char *)env->runtime,
                    env->real_mpi4py ? "--real-mpi4py" : NULL,
                    NULL};
    char command[3 * PATH_MAX];
    char err[PATH_MAX + 128];

    job->locals = calloc((size_t)job->spec.engines, sizeof *job->locals);
    if (job->locals == NULL) {
        msg_err("out of memory");
        return -1;
    }
    proc_format_command(argv, command, sizeof command);
    msg_err("starting %ld local engine%s (job %s): %s", job->spec.engines,
            job->spec.engines == 1 ? "" : "s", job->name, command);
    for (long i = 0; i < job->spec.engines; i++) {
        job_child *engine = &job->locals[i];

        snprintf(engine->role, sizeof engine->role, "local engine %ld of job %s", i, job->name);
        spawn->process_group = job->group; /* the first one leads the group */
        engine->pid = proc_spawn(argv, spawn, err, sizeof err);
        if (engine->pid < 0) {
            engine->pid = 0;
            msg_err("%s", err);
            return -1;
        }
        job->local_count++;
        if (job->group == 0)
            job->group = engine->pid;
    }
    return 0;
}

static int start_batch(engine_job *job, const job_env *env)
{
    static char script[64 * 1024];
    char err[PATH_MAX + 512];
    batch_context ctx = {.profile = env->paths->name,
                         .job_name = job->name,
                         .engine_path = env->engine_path,
                         .engine_file = env->engine_file,
                         .runtime = job_env_runtime(env),
                         .real_mpi4py = env->real_mpi4py,
                         .mpiexec_path = env->mpiexec_path,
                         .log_dir = env->paths->log_dir};
    const char *system = batch_system_name(job->spec.kind);
    int fd;
    size_t len;

    if (batch_script(&job->spec, &ctx, script, sizeof script, err, sizeof err) < 0) {
        msg_err("%s", err);
        return -1;
    }
    if (snprintf(job->script_path, sizeof job->script_path, "%.*s/%s.%s", PATH_MAX - 32,
                 env->paths->jobs_dir, job->name,
                 job->spec.kind == JOB_SLURM ? "sbatch" : "pbs") >= (int)sizeof job->script_path) {
        msg_err("the path of the batch script is too long");
        return -1;
    }
    fd = open(job->script_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
    len = strlen(script);
    if (fd < 0 || write(fd, script, len) != (ssize_t)len) {
        msg_err("cannot write %s: %s", job->script_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    if (batch_submit(job->spec.kind, job->script_path, job->batch_id, sizeof job->batch_id, err,
                     sizeof err) < 0) {
        msg_err("submitting %s failed: %s", job->script_path, err);
        return -1;
    }
    snprintf(job->batch_state, sizeof job->batch_state, "submitted");
    msg_err("submitted %s job %s (job %s, %ld engine%s): %s", system, job->batch_id, job->name,
            job->spec.engines, job->spec.engines == 1 ? "" : "s", job->script_path);
    return 0;
}

int job_start(engine_job *job, const job_env *env)
{
    proc_options spawn = {
        .stdout_fd = env->log_fd,
        .stderr_fd = env->log_fd,
        .process_group = 0,
        .parent_death_signal = SIGTERM,
        .sigmask = env->child_mask,
    };

    switch (job->spec.kind) {
    case JOB_MPI: return start_mpi(job, env, &spawn);
    case JOB_LOCAL: return start_local(job, env, &spawn);
    case JOB_SLURM:
    case JOB_PBS: return start_batch(job, env);
    default: return -1;
    }
}

bool job_processes_running(engine_job *job)
{
    bool running;

    job_child_reap(&job->mpiexec);
    running = job_child_running(&job->mpiexec);
    for (size_t i = 0; i < job->local_count; i++) {
        job_child_reap(&job->locals[i]);
        running = running || job_child_running(&job->locals[i]);
    }
    return running;
}

const job_child *job_first_ended(engine_job *job)
{
    job_processes_running(job);
    if (job->mpiexec.pid > 0 && job->mpiexec.reaped)
        return &job->mpiexec;
    for (size_t i = 0; i < job->local_count; i++)
        if (job->locals[i].reaped)
            return &job->locals[i];
    return NULL;
}

bool job_batch_ended(engine_job *job, bool now)
{
    char state[sizeof job->batch_state];

    if (!job_is_batch(job) || job->batch_id[0] == '\0')
        return false;
    if (job->batch_ended || (!now && proc_now() - job->batch_checked_at < BATCH_POLL_S))
        return job->batch_ended;
    job->batch_checked_at = proc_now();
    switch (batch_query(job->spec.kind, job->batch_id, state, sizeof state)) {
    case BATCH_ENDED:
        job->batch_ended = true;
        snprintf(job->batch_state, sizeof job->batch_state, "%s", state);
        break;
    case BATCH_ACTIVE: snprintf(job->batch_state, sizeof job->batch_state, "%s", state); break;
    case BATCH_UNKNOWN:
    default:
        /* Keep the last known state; the batch system may be busy. */
        break;
    }
    return job->batch_ended;
}

void job_signal(engine_job *job, int signo)
{
    /* kill(-group) only while the group exists: then its id is not reused. */
    if (job->group > 0 && kill(-job->group, 0) == 0)
        kill(-job->group, signo);
    job_child_signal(&job->mpiexec, signo);
    for (size_t i = 0; i < job->local_count; i++)
        job_child_signal(&job->locals[i], signo);
}

int job_cancel(engine_job *job)
{
    char err[1024];

    if (!job_is_batch(job) || job->batch_id[0] == '\0' || job_batch_ended(job, true))
        return 0;
    if (batch_cancel(job->spec.kind, job->batch_id, err, sizeof err) < 0) {
        /* It may have ended between the query and the cancel. */
        if (job_batch_ended(job, true))
            return 0;
        msg_err("cancelling %s job %s failed: %s", batch_system_name(job->spec.kind), job->batch_id,
                err);
        return -1;
    }
    msg_err("cancelled %s job %s (job %s)", batch_system_name(job->spec.kind), job->batch_id,
            job->name);
    return 0;
}

bool job_owns_engine(const engine_job *job, const char *engine_job_id)
{
    size_t len = strlen(job->name);

    return strncmp(engine_job_id, job->name, len) == 0 && engine_job_id[len] == '.';
}

void job_describe(const engine_job *job, char *buf, size_t len)
{
    const jobspec *spec = &job->spec;
    const char *plural = spec->engines == 1 ? "" : "s";

    switch (spec->kind) {
    case JOB_MPI:
        snprintf(buf, len, "MPI world of %ld%s%s", spec->engines,
                 spec->hostfile[0] != '\0' ? " on the hosts of " : "", spec->hostfile);
        break;
    case JOB_LOCAL: snprintf(buf, len, "%ld local MPI singleton%s", spec->engines, plural); break;
    case JOB_SLURM:
    case JOB_PBS:
    default:
        snprintf(buf, len, "MPI world of %ld in %s job %s", spec->engines,
                 batch_system_name(spec->kind), job->batch_id);
        break;
    }
}

const char *job_phase_name(job_phase phase)
{
    static const char *const names[] = {"starting", "up", "ended", "removed", "failed"};

    return (size_t)phase < sizeof names / sizeof names[0] ? names[phase] : "unknown";
}

json_t *job_json(const engine_job *job)
{
    json_t *out = json_pack("{s:s, s:i, s:s, s:I, s:s}", "job", job->name, "number", job->number,
                            "kind", jobspec_kind_name(job->spec.kind), "engines",
                            (json_int_t)job->spec.engines, "state", job_phase_name(job->phase));

    if (out == NULL)
        return NULL;
    if (job->ended_why[0] != '\0')
        json_object_set_new(out, "why", json_string(job->ended_why));
    if (job_is_batch(job) && job->batch_id[0] != '\0') {
        json_object_set_new(out, "batch_id", json_string(job->batch_id));
        json_object_set_new(out, "batch_state", json_string(job->batch_state));
    }
    if (job->mpiexec.pid > 0)
        json_object_set_new(out, "pid", json_integer(job->mpiexec.pid));
    return out;
}
