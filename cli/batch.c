/* batch.c — Slurm and PBS job scripts, submission, state, cancel (batch.h). */
#include "batch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

#define BATCH_COMMAND_TIMEOUT 30.0

const char *batch_system_name(jobspec_kind kind)
{
    return kind == JOB_PBS ? "PBS" : "Slurm";
}

/* ---- scripts -------------------------------------------------------------- */

typedef struct script {
    char *out;
    size_t len, used;
    bool full;
} script;

static void emit(script *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(script *s, const char *fmt, ...)
{
    va_list args;
    int written;

    if (s->full)
        return;
    va_start(args, fmt);
    written = vsnprintf(s->out + s->used, s->len - s->used, fmt, args);
    va_end(args);
    if (written < 0 || (size_t)written >= s->len - s->used) {
        s->full = true;
        return;
    }
    s->used += (size_t)written;
}

/* A word for sh: single quotes, each ' as '\''. */
static void emit_quoted(script *s, const char *word)
{
    emit(s, "'");
    for (const char *c = word; *c != '\0'; c++) {
        if (*c == '\'')
            emit(s, "'\\''");
        else
            emit(s, "%c", *c);
    }
    emit(s, "'");
}

/* --mpiexec-args, split at blanks, each word quoted. */
static void emit_extra_args(script *s, const char *args)
{
    char copy[sizeof((jobspec *)0)->mpiexec_args];
    char *save = NULL;

    snprintf(copy, sizeof copy, "%s", args);
    for (char *word = strtok_r(copy, " \t", &save); word != NULL;
         word = strtok_r(NULL, " \t", &save)) {
        emit(s, " ");
        emit_quoted(s, word);
    }
}

static void emit_engine(script *s, const batch_context *ctx)
{
    emit(s, " ");
    emit_quoted(s, ctx->engine_path);
    emit(s, " --file ");
    emit_quoted(s, ctx->engine_file);
    emit(s, " --job %s", ctx->job_name);
    if (ctx->runtime)
        emit(s, " --runtime %s", ctx->runtime);
    if (ctx->real_mpi4py)
        emit(s, " --real-mpi4py");
    emit(s, "\n");
}

static void slurm_script(script *s, const jobspec *spec, const batch_context *ctx)
{
    emit(s, "#SBATCH --job-name=ippc-%s-%s\n", ctx->profile, ctx->job_name);
    emit(s, "#SBATCH --ntasks=%ld\n", spec->engines);
    if (spec->ppn > 0)
        emit(s, "#SBATCH --ntasks-per-node=%ld\n", spec->ppn);
    if (spec->partition[0] != '\0')
        emit(s, "#SBATCH --partition=%s\n", spec->partition);
    if (spec->time_limit[0] != '\0')
        emit(s, "#SBATCH --time=%s\n", spec->time_limit);
    if (spec->account[0] != '\0')
        emit(s, "#SBATCH --account=%s\n", spec->account);
    emit(s, "#SBATCH --output=%s/slurm-%s-%%j.out\n", ctx->log_dir, ctx->job_name);
    for (size_t i = 0; i < spec->n_directives; i++)
        emit(s, "#SBATCH %s\n", spec->directives[i]);
    emit(s, "\n# One MPI job: srun starts the ranks through PMI-2 (MPICH).\n");
    emit(s, "exec srun --mpi=pmi2");
    emit_extra_args(s, spec->mpiexec_args);
    emit_engine(s, ctx);
}

static void pbs_script(script *s, const jobspec *spec, const batch_context *ctx)
{
    long per_chunk = spec->ppn > 0 ? spec->ppn : 1;
    long chunks = (spec->engines + per_chunk - 1) / per_chunk;

    /* PBS job names are at most 15 characters. */
    emit(s, "#PBS -N ippc-%.10s\n", ctx->job_name);
    emit(s, "#PBS -l select=%ld:ncpus=%ld:mpiprocs=%ld\n", chunks, per_chunk, per_chunk);
    if (spec->partition[0] != '\0')
        emit(s, "#PBS -q %s\n", spec->partition);
    if (spec->time_limit[0] != '\0')
        emit(s, "#PBS -l walltime=%s\n", spec->time_limit);
    if (spec->account[0] != '\0')
        emit(s, "#PBS -A %s\n", spec->account);
    emit(s, "#PBS -V\n#PBS -j oe\n#PBS -o %s/pbs-%s.out\n", ctx->log_dir, ctx->job_name);
    for (size_t i = 0; i < spec->n_directives; i++)
        emit(s, "#PBS %s\n", spec->directives[i]);
    emit(s, "\n# One MPI job: MPICH's mpiexec inside the allocation, on its nodes.\n");
    emit(s, "exec ");
    emit_quoted(s, ctx->mpiexec_path);
    emit(s, " ${PBS_NODEFILE:+-f \"$PBS_NODEFILE\"} -n %ld", spec->engines);
    if (spec->ppn > 0)
        emit(s, " -ppn %ld", spec->ppn);
    emit_extra_args(s, spec->mpiexec_args);
    emit_engine(s, ctx);
}

int batch_script(const jobspec *spec, const batch_context *ctx, char *out, size_t len, char *err,
                 size_t err_len)
{
    script s = {.out = out, .len = len};

    if (spec->kind != JOB_SLURM && spec->kind != JOB_PBS) {
        snprintf(err, err_len, "not a batch job");
        return -1;
    }
    emit(&s, "#!/bin/sh\n# ippc engine job %s of cluster \"%s\" (%ld engines), written by ippc\n",
         ctx->job_name, ctx->profile, spec->engines);
    if (spec->kind == JOB_SLURM)
        slurm_script(&s, spec, ctx);
    else
        pbs_script(&s, spec, ctx);
    if (s.full) {
        snprintf(err, err_len, "the batch script is longer than %zu bytes", len);
        return -1;
    }
    return 0;
}

/* ---- running the batch system's commands --------------------------------- */

/* Runs argv (argv[0] looked up on PATH) with stdout and stderr into out
 * (NUL-terminated, truncated to len).  Returns its wait status, or -1 with
 * err when it could not run or did not end within the time limit (then it
 * is killed). */
static int run_command(char *const argv[], char *out, size_t len, char *err, size_t err_len)
{
    char path[PATH_MAX];
    char *exec_argv[16];
    int pipe_fds[2];
    size_t used = 0;
    double deadline = proc_now() + BATCH_COMMAND_TIMEOUT;
    sigset_t no_signals_blocked;
    proc_options spawn = {.stdout_fd = -1, .stderr_fd = -1, .process_group = 0};
    pid_t pid;
    int status;

    /* The launcher blocks SIGTERM and friends; a command (and whatever it
     * leaves running, such as a stand-in qsub's job) must not inherit that. */
    sigemptyset(&no_signals_blocked);
    spawn.sigmask = &no_signals_blocked;

    out[0] = '\0';
    if (proc_find_program(argv[0], path, sizeof path) < 0) {
        snprintf(err, err_len, "%s is not on PATH: is this a %s login node?", argv[0],
                 strncmp(argv[0], "q", 1) == 0 ? "PBS" : "Slurm");
        return -1;
    }
    for (size_t i = 0; i < 15; i++) {
        exec_argv[i] = i == 0 ? path : argv[i];
        if (argv[i] == NULL)
            break;
    }
    exec_argv[15] = NULL;
    if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
        snprintf(err, err_len, "pipe: %s", strerror(errno));
        return -1;
    }
    spawn.stdout_fd = pipe_fds[1];
    spawn.stderr_fd = pipe_fds[1];
    pid = proc_spawn(exec_argv, &spawn, err, err_len);
    close(pipe_fds[1]);
    if (pid < 0) {
        close(pipe_fds[0]);
        return -1;
    }
    for (;;) {
        struct pollfd readable = {.fd = pipe_fds[0], .events = POLLIN};
        char chunk[512];
        ssize_t got;
        int ready = poll(&readable, 1, 100);

        if (ready < 0 && errno != EINTR)
            break;
        if (ready > 0) {
            got = read(pipe_fds[0], chunk, sizeof chunk);
            if (got <= 0)
                break; /* end of output: the command is exiting */
            for (ssize_t i = 0; i < got && used + 1 < len; i++)
                out[used++] = chunk[i];
            out[used] = '\0';
        }
        if (proc_now() >= deadline) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            close(pipe_fds[0]);
            snprintf(err, err_len, "%s did not answer within %g s", argv[0], BATCH_COMMAND_TIMEOUT);
            return -1;
        }
    }
    close(pipe_fds[0]);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            snprintf(err, err_len, "waitpid: %s", strerror(errno));
            return -1;
        }
    }
    return status;
}

static void trim(char *text)
{
    size_t len = strlen(text);

    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
}

static bool succeeded(int status)
{
    return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int batch_submit(jobspec_kind kind, const char *script_path, char *job_id, size_t id_len, char *err,
                 size_t err_len)
{
    char *slurm[] = {"sbatch", "--parsable", (char *)script_path, NULL};
    char *pbs[] = {"qsub", (char *)script_path, NULL};
    char output[1024];
    int status = run_command(kind == JOB_SLURM ? slurm : pbs, output, sizeof output, err, err_len);
    size_t id_end;

    if (status < 0)
        return -1;
    trim(output);
    if (!succeeded(status)) {
        char how[128];

        proc_describe_status(status, how, sizeof how);
        snprintf(err, err_len, "%s %s: %s", kind == JOB_SLURM ? "sbatch" : "qsub", how,
                 output[0] != '\0' ? output : "(no output)");
        return -1;
    }
    /* sbatch --parsable: "ID" or "ID;CLUSTER"; qsub: "ID.SERVER" (the last
     * line: some sites print notices first). */
    const char *last = strrchr(output, '\n');
    last = last != NULL ? last + 1 : output;
    id_end = strcspn(last, kind == JOB_SLURM ? "; \t" : " \t");
    if (id_end == 0 || id_end >= id_len) {
        snprintf(err, err_len, "cannot read a job id from %s's answer: %s",
                 kind == JOB_SLURM ? "sbatch" : "qsub", output);
        return -1;
    }
    snprintf(job_id, id_len, "%.*s", (int)id_end, last);
    for (const char *c = job_id; *c != '\0'; c++) {
        if (strchr(JOBSPEC_NAME_CHARS "[]", *c) == NULL) {
            snprintf(err, err_len, "unexpected job id from the batch system: %s", output);
            return -1;
        }
    }
    return 0;
}

/* The value of "KEY=VALUE" (Slurm) or "KEY = VALUE" (PBS) in text. */
static bool find_value(const char *text, const char *key, char *out, size_t len)
{
    const char *at = text;
    size_t key_len = strlen(key);

    while ((at = strstr(at, key)) != NULL) {
        const char *value = at + key_len;
        bool starts_word = at == text || at[-1] == ' ' || at[-1] == '\n' || at[-1] == '\t';

        at += key_len;
        if (!starts_word)
            continue;
        while (*value == ' ')
            value++;
        if (*value != '=')
            continue;
        value++;
        while (*value == ' ')
            value++;
        snprintf(out, len, "%.*s", (int)strcspn(value, " \t\r\n"), value);
        return out[0] != '\0';
    }
    return false;
}

static bool slurm_state_ended(const char *state)
{
    static const char *const active[] = {"PENDING",     "CONFIGURING", "RUNNING",   "COMPLETING",
                                         "RESIZING",    "SUSPENDED",   "REQUEUED",  "REQUEUE_HOLD",
                                         "REQUEUE_FED", "SIGNALING",   "STAGE_OUT", NULL};

    for (size_t i = 0; active[i] != NULL; i++)
        if (strcmp(state, active[i]) == 0)
            return false;
    return true; /* COMPLETED, CANCELLED, FAILED, TIMEOUT, NODE_FAIL, ... */
}

batch_state batch_query(jobspec_kind kind, const char *job_id, char *state_text, size_t len)
{
    char *slurm[] = {"scontrol", "show", "job", "-o", (char *)job_id, NULL};
    char *pbs[] = {"qstat", "-f", (char *)job_id, NULL};
    char output[8192];
    char err[512];
    int status =
        run_command(kind == JOB_SLURM ? slurm : pbs, output, sizeof output, err, sizeof err);

    if (status < 0) {
        snprintf(state_text, len, "%s", err);
        return BATCH_UNKNOWN;
    }
    if (kind == JOB_SLURM) {
        if (find_value(output, "JobState", state_text, len))
            return slurm_state_ended(state_text) ? BATCH_ENDED : BATCH_ACTIVE;
        if (strstr(output, "Invalid job id") != NULL) {
            snprintf(state_text, len, "gone (no longer known to Slurm)");
            return BATCH_ENDED;
        }
    } else {
        if (succeeded(status) && find_value(output, "job_state", state_text, len))
            return strcmp(state_text, "C") == 0 || strcmp(state_text, "F") == 0 ? BATCH_ENDED
                                                                                : BATCH_ACTIVE;
        /* "Unknown Job Id", or PBS Pro's "Job has finished, use -x". */
        if (strstr(output, "Unknown Job") != NULL || strstr(output, "has finished") != NULL) {
            snprintf(state_text, len, "gone (no longer known to PBS)");
            return BATCH_ENDED;
        }
    }
    trim(output);
    snprintf(state_text, len, "%s", output[0] != '\0' ? output : "no answer");
    return BATCH_UNKNOWN;
}

int batch_cancel(jobspec_kind kind, const char *job_id, char *err, size_t err_len)
{
    char *slurm[] = {"scancel", (char *)job_id, NULL};
    char *pbs[] = {"qdel", (char *)job_id, NULL};
    char output[1024];
    int status = run_command(kind == JOB_SLURM ? slurm : pbs, output, sizeof output, err, err_len);

    if (status < 0)
        return -1;
    if (!succeeded(status)) {
        trim(output);
        snprintf(err, err_len, "%s %s: %s", kind == JOB_SLURM ? "scancel" : "qdel", job_id, output);
        return -1;
    }
    return 0;
}
