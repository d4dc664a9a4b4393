/* launcher.c — start, supervise and stop a controller and its engine jobs.
 *
 * The life of a launch (see launcher.h for the promises):
 *   start the controller -> wait for its connection files -> start the first
 *   engine job -> poll GET /api/v1/engines until its engines are registered
 *   -> check the MPI world -> print the banner -> (daemon: detach) ->
 *   supervise (and serve the control socket: add/remove/jobs) -> tear down.
 * Every step can end early: a stop signal, a child that died, a batch job
 * that ended, the deadline.  All of them lead to launcher_teardown(), which
 * (with launcher_remove_job for one job) is the only place that stops
 * processes.
 *
 * Children run in their own process groups, so the terminal's Ctrl-C reaches
 * only this process, which then stops the children in order: the controller
 * first (it tells the engines to shut down, so they finish cleanly and mpiexec
 * exits by itself), then SIGTERM to what is left, then SIGKILL; batch jobs
 * still queued or running are cancelled (scancel, qdel).
 */
#include "launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batch.h"
#include "job.h"
#include "msg.h"
#include "proc.h"
#include "rest.h"
#include "roster.h"

/* Grace periods of a stop: the controller's own shutdown, then SIGTERM. */
#define STOP_GRACE_CONTROLLER 2.0
#define STOP_GRACE_TERM 5.0
#define STOP_GRACE_KILL 2.0
#define POLL_MS 100
#define SUPERVISE_MS 200
#define PROGRESS_REPEAT_S 5.0
#define CONTROL_READ_S 5.0

/* An engine process on this host, learned from its registration. */
typedef struct engine_pid {
    pid_t pid;
    int job_number;
} engine_pid;

typedef struct launcher {
    const launch_options *options;
    sigset_t waited;     /* blocked here and waited for with sigtimedwait */
    sigset_t child_mask; /* the mask the launcher started with, for children */
    int stop_signal;     /* the first SIGINT/SIGTERM/SIGHUP, 0 if none */
    bool tearing_down;
    bool hurry; /* a stop signal during teardown: skip the grace periods */

    job_child controller;
    engine_job **jobs; /* every job started, in number order (never removed) */
    size_t n_jobs, cap_jobs;
    job_env env;

    engine_pid *engine_pids;
    size_t engine_pid_count;
    size_t engine_pid_cap;
    char hostname[256];

    connection_info connection;
    char engine_file[PATH_MAX];
    rest_client api;
    bool api_ready;
    int control_fd; /* the listening control socket; -1 if none */

    int controller_log_fd; /* daemon mode; -1 otherwise */
    int engines_log_fd;
} launcher;

typedef enum step_result { STEP_OK, STEP_FAILED, STEP_STOPPED } step_result;

/* ---- signals and children ---------------------------------------------- */

static void launcher_note_signal(launcher *l, int signo)
{
    if (signo != SIGINT && signo != SIGTERM && signo != SIGHUP)
        return; /* SIGCHLD only wakes us up */
    if (l->tearing_down)
        l->hurry = true;
    else if (l->stop_signal == 0)
        l->stop_signal = signo;
}

/* Sleeps up to ms milliseconds; any waited-for signal ends the sleep early. */
static void launcher_sleep(launcher *l, long ms)
{
    struct timespec span = {ms / 1000, (ms % 1000) * 1000000L};
    siginfo_t info;
    int signo = sigtimedwait(&l->waited, &info, &span);

    if (signo > 0)
        launcher_note_signal(l, signo);
    /* Collect what else is pending, without waiting. */
    span.tv_sec = 0;
    span.tv_nsec = 0;
    while ((signo = sigtimedwait(&l->waited, &info, &span)) > 0)
        launcher_note_signal(l, signo);
}

static void launcher_reap(launcher *l)
{
    job_child_reap(&l->controller);
    for (size_t i = 0; i < l->n_jobs; i++)
        job_processes_running(l->jobs[i]);
}

/* In daemon mode the children's output is in log files: say where. */
static const char *launcher_log_hint(const launcher *l, const char *log_path, char *buf, size_t len)
{
    if (!l->options->daemonize)
        return "";
    snprintf(buf, len, " (see %s)", log_path);
    return buf;
}

/* ---- engine pids learned from registration ----------------------------- */

static bool same_host(const launcher *l, const char *host)
{
    size_t short_len = strcspn(l->hostname, ".");

    if (strcmp(host, l->hostname) == 0 || strcmp(host, "localhost") == 0)
        return true;
    /* "node1" and "node1.cluster.example" are the same machine. */
    return strncmp(host, l->hostname, short_len) == 0 &&
           (host[short_len] == '\0' || host[short_len] == '.');
}

static engine_job *launcher_job_of_engine(launcher *l, const char *engine_job_id)
{
    for (size_t i = 0; i < l->n_jobs; i++)
        if (job_owns_engine(l->jobs[i], engine_job_id))
            return l->jobs[i];
    return NULL;
}

/* Remembers the pids of our jobs' engines on this host (engines that joined
 * by hand are not ours to kill). */
static void launcher_learn_engines(launcher *l, const roster *r)
{
    for (size_t i = 0; i < r->count; i++) {
        const roster_engine *engine = &r->engines[i];
        const engine_job *job = launcher_job_of_engine(l, engine->job);
        bool known = false;
        engine_pid *grown;

        if (job == NULL || engine->pid <= 0 || !same_host(l, engine->host))
            continue;
        for (size_t j = 0; j < l->engine_pid_count; j++)
            known = known || l->engine_pids[j].pid == (pid_t)engine->pid;
        if (known)
            continue;
        if (l->engine_pid_count == l->engine_pid_cap) {
            size_t cap = l->engine_pid_cap != 0 ? l->engine_pid_cap * 2 : 16;

            grown = realloc(l->engine_pids, cap * sizeof *grown);
            if (grown == NULL)
                return; /* we still have mpiexec's group and SIGTERM */
            l->engine_pids = grown;
            l->engine_pid_cap = cap;
        }
        l->engine_pids[l->engine_pid_count].pid = (pid_t)engine->pid;
        l->engine_pids[l->engine_pid_count].job_number = job->number;
        l->engine_pid_count++;
    }
}

/* A learned pid is ours while it runs ippc-engine (pids get reused). */
static bool engine_pid_alive(pid_t pid)
{
    return proc_is_running(pid) && proc_runs_program(pid, "ippc-engine");
}

/* job_number < 0: every job. */
static bool launcher_engine_pids_alive(const launcher *l, int job_number)
{
    for (size_t i = 0; i < l->engine_pid_count; i++)
        if ((job_number < 0 || l->engine_pids[i].job_number == job_number) &&
            engine_pid_alive(l->engine_pids[i].pid))
            return true;
    return false;
}

static void launcher_kill_engine_pids(const launcher *l, int job_number, int signo)
{
    for (size_t i = 0; i < l->engine_pid_count; i++)
        if ((job_number < 0 || l->engine_pids[i].job_number == job_number) &&
            engine_pid_alive(l->engine_pids[i].pid))
            kill(l->engine_pids[i].pid, signo);
}

/* ---- starting ------------------------------------------------------------ */

static int open_log(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
}

static step_result launcher_start_controller(launcher *l)
{
    const launch_options *o = l->options;
    char *argv[20];
    size_t argc = 0;
    char command[2 * PATH_MAX];
    char err[PATH_MAX + 128];
    proc_options spawn = {
        .stdout_fd = l->controller_log_fd,
        .stderr_fd = l->controller_log_fd,
        .process_group = 0,
        .parent_death_signal = SIGTERM,
        .sigmask = &l->child_mask,
    };

    argv[argc++] = (char *)o->controller_path;
    if (o->ip != NULL) {
        argv[argc++] = "--ip";
        argv[argc++] = (char *)o->ip;
    }
    if (o->location != NULL) {
        argv[argc++] = "--location";
        argv[argc++] = (char *)o->location;
    }
    if (o->port != NULL) {
        argv[argc++] = "--port";
        argv[argc++] = (char *)o->port;
    }
    argv[argc++] = "--profile";
    argv[argc++] = (char *)o->paths->name;
    argv[argc++] = "--ippc-dir";
    argv[argc++] = (char *)o->paths->ippc_dir;
    if (o->db != NULL) {
        argv[argc++] = "--db";
        argv[argc++] = (char *)o->db;
    }
    argv[argc] = NULL;

    proc_format_command(argv, command, sizeof command);
    msg_err("starting the controller: %s", command);
    snprintf(l->controller.role, sizeof l->controller.role, "the controller");
    l->controller.pid = proc_spawn(argv, &spawn, err, sizeof err);
    if (l->controller.pid < 0) {
        l->controller.pid = 0;
        msg_err("%s", err);
        return STEP_FAILED;
    }
    return STEP_OK;
}
/* The controller writes ippc-client.json (and ippc-engine.json) once it has
 * bound its port.  Wait for both, and for the client file to name our child:
 * a file left by another controller must not be mistaken for ours. */
static step_result launcher_wait_for_controller(launcher *l, double deadline)
{
    const profile_paths *paths = l->options->paths;
    char err[PATH_MAX + 256];
    char why[256];
    char hint[PATH_MAX + 16];
    connection_info info;
    int read_status = -1;

    for (;;) {
        if (l->stop_signal != 0)
            return STEP_STOPPED;
        read_status = connection_read(paths->client_file, &info, err, sizeof err);
        if (read_status == 0 && info.pid == l->controller.pid) {
            snprintf(l->engine_file, sizeof l->engine_file, "%s",
                     info.engine_file[0] != '\0' ? info.engine_file : paths->engine_file);
            if (access(l->engine_file, R_OK) == 0) {
                l->connection = info;
                return STEP_OK;
            }
        }
        launcher_reap(l);
        if (!job_child_running(&l->controller)) {
            job_child_describe_exit(&l->controller, why, sizeof why);
            msg_err("%s before writing its connection file %s%s", why, paths->client_file,
                    launcher_log_hint(l, paths->controller_log, hint, sizeof hint));
            l->controller.reported = true;
            return STEP_FAILED;
        }
        if (proc_now() >= deadline) {
            if (read_status == 0 && info.pid != l->controller.pid)
                msg_err("timed out after %g s: %s names pid %ld, not the controller "
                        "started here (pid %ld); is another controller using profile "
                        "\"%s\"?",
                        l->options->timeout, paths->client_file, (long)info.pid,
                        (long)l->controller.pid, paths->name);
            else if (read_status == 0)
                msg_err("timed out after %g s waiting for the controller to write %s",
                        l->options->timeout, l->engine_file);
            else
                msg_err("timed out after %g s waiting for the controller (pid %ld) to "
                        "write %s%s",
                        l->options->timeout, (long)l->controller.pid, paths->client_file,
                        launcher_log_hint(l, paths->controller_log, hint, sizeof hint));
            return STEP_FAILED;
        }
        launcher_sleep(l, 50);
    }
}

/* ---- engine jobs --------------------------------------------------------- */

static engine_job *launcher_new_job(launcher *l, const jobspec *spec)
{
    engine_job *job;

    if (l->n_jobs == l->cap_jobs) {
        size_t cap = l->cap_jobs != 0 ? l->cap_jobs * 2 : 4;
        engine_job **grown = realloc(l->jobs, cap * sizeof *grown);

        if (grown == NULL)
            return NULL;
        l->jobs = grown;
        l->cap_jobs = cap;
    }
    job = malloc(sizeof *job);
    if (job == NULL)
        return NULL;
    job_init(job, (int)l->n_jobs, spec);
    l->jobs[l->n_jobs++] = job;
    return job;
}

/* Why a starting job will not come up: a process of it ended, or its batch
 * job did.  Fills why and returns true. */
static bool launcher_job_gone(launcher *l, engine_job *job, char *why, size_t len)
{
    const job_child *ended = job_first_ended(job);
    char hint[PATH_MAX + 16];

    if (ended != NULL) {
        char exit_text[256];

        job_child_describe_exit(ended, exit_text, sizeof exit_text);
        snprintf(why, len, "%s%s", exit_text,
                 launcher_log_hint(l, l->options->paths->engines_log, hint, sizeof hint));
        return true;
    }
    if (job_batch_ended(job, false)) {
        snprintf(why, len, "%s job %s ended: %s (its output: %s)",
                 batch_system_name(job->spec.kind), job->batch_id, job->batch_state,
                 l->options->paths->log_dir);
        return true;
    }
    return false;
}

/* Polls the engine list until the job's engines are registered.  On success
 * registered holds the job's engines. */
static step_result launcher_wait_for_job(launcher *l, engine_job *job, double deadline,
                                         double timeout, roster *registered)
{
    const launch_options *o = l->options;
    long want = job->spec.engines;
    char err[1024];
    char last_problem[1100] = "";
    char why[PATH_MAX + 512];
    char hint[PATH_MAX + 16];
    size_t shown = (size_t)-1;
    double shown_at = 0;
    size_t live = 0;
    rest_reply reply;

    for (;;) {
        if (l->stop_signal != 0)
            return STEP_STOPPED;
        if (rest_call(&l->api, "GET", "/api/v1/engines", NULL, 2000, &reply, err, sizeof err) < 0) {
            snprintf(last_problem, sizeof last_problem, "the controller did not answer: %s", err);
        } else if (reply.http_status != 200) {
            rest_describe_error(&reply, err, sizeof err);
            snprintf(last_problem, sizeof last_problem, "GET /api/v1/engines failed: %s", err);
            if (reply.http_status == 401) {
                msg_err("the controller rejected the token from %s (%s)", o->paths->client_file,
                        err);
                rest_reply_free(&reply);
                return STEP_FAILED;
            }
            rest_reply_free(&reply);
        } else {
            roster current;
            roster mine;

            if (roster_parse(reply.json, &current, err, sizeof err) < 0) {
                snprintf(last_problem, sizeof last_problem, "%s", err);
            } else if (roster_select_job(&current, job->name, &mine) < 0) {
                roster_free(&current);
                snprintf(last_problem, sizeof last_problem, "out of memory");
            } else {
                last_problem[0] = '\0';
                launcher_learn_engines(l, &current);
                roster_free(&current);
                live = roster_live_count(&mine);
                if (live != shown || proc_now() - shown_at >= PROGRESS_REPEAT_S) {
                    if (job_is_batch(job))
                        msg_err("waiting for engines of job %s: %zu/%ld registered (%s job %s: "
                                "%s)",
                                job->name, live, want, batch_system_name(job->spec.kind),
                                job->batch_id, job->batch_state);
                    else
                        msg_err("waiting for engines of job %s: %zu/%ld registered", job->name,
                                live, want);
                    shown = live;
                    shown_at = proc_now();
                }
                if (live >= (size_t)want) {
                    *registered = mine;
                    rest_reply_free(&reply);
                    return STEP_OK;
                }
                roster_free(&mine);
            }
            rest_reply_free(&reply);
        }

        launcher_reap(l);
        if (!job_child_running(&l->controller)) {
            job_child_describe_exit(&l->controller, why, sizeof why);
            msg_err("%s while the engines were starting (%zu/%ld registered)%s", why, live, want,
                    launcher_log_hint(l, o->paths->controller_log, hint, sizeof hint));
            l->controller.reported = true;
            return STEP_FAILED;
        }
        if (launcher_job_gone(l, job, why, sizeof why)) {
            msg_err("%s after %zu of %ld engines of job %s registered", why, live, want, job->name);
            snprintf(job->ended_why, sizeof job->ended_why, "%.*s", (int)sizeof job->ended_why - 1,
                     why);
            return STEP_FAILED;
        }
        if (proc_now() >= deadline) {
            msg_err("timed out after %g s waiting for engines of job %s: %zu/%ld registered%s%s%s",
                    timeout, job->name, live, want, last_problem[0] != '\0' ? "; " : "",
                    last_problem, launcher_log_hint(l, o->paths->engines_log, hint, sizeof hint));
            if (job_is_batch(job))
                msg_err("%s job %s is %s; --timeout SECONDS allows more time (a queued job "
                        "may wait long)",
                        batch_system_name(job->spec.kind), job->batch_id, job->batch_state);
            else
                msg_err("job %s still runs but not all of its engines registered; --timeout "
                        "SECONDS allows more time",
                        job->name);
            snprintf(job->ended_why, sizeof job->ended_why, "timed out: %zu/%ld registered", live,
                     want);
            return STEP_FAILED;
        }
        launcher_sleep(l, POLL_MS);
    }
}

/* Engines of an MPI job must be ranks 0..N-1 of one world of N. */
static step_result launcher_check_world(launcher *l, engine_job *job, const roster *registered)
{
    char worlds[1024];
    const char *starter = job->spec.kind == JOB_MPI     ? l->options->mpiexec_path
                          : job->spec.kind == JOB_SLURM ? "srun"
                                                        : "the PBS job's mpiexec";

    if (job->spec.kind == JOB_LOCAL)
        return STEP_OK;
    switch (roster_check_world(registered, job->spec.engines, worlds, sizeof worlds)) {
    case ROSTER_ONE_WORLD: return STEP_OK;
    case ROSTER_SINGLETONS:
        msg_err("the %ld engines started by %s came up as %zu separate MPI worlds of size "
                "1 (rank 0 of 1 each): this mpiexec does not belong to the MPI that "
                "ippc-engine was built with (MPICH); use --mpiexec mpiexec.mpich%s",
                job->spec.engines, starter, roster_live_count(registered),
                job->spec.kind == JOB_SLURM ? " (under Slurm: srun --mpi=pmi2)" : "");
        snprintf(job->ended_why, sizeof job->ended_why,
                 "its engines came up as MPI singletons (an mpiexec of another MPI)");
        return STEP_FAILED;
    case ROSTER_SPLIT:
    default:
        msg_err("the %ld engines started by %s did not form one MPI world of %ld (%s)",
                job->spec.engines, starter, job->spec.engines, worlds);
        snprintf(job->ended_why, sizeof job->ended_why, "its engines did not form one MPI world");
        return STEP_FAILED;
    }
}

/* Every engine must run the language the cluster was started for: a client
 * of a --runtime=python cluster sends Python, which a Lua engine (say, one
 * that joined by hand) cannot serve. */
static step_result launcher_check_runtime(launcher *l, const roster *registered)
{
    const char *want = l->options->runtime ? l->options->runtime : "lua";
    for (size_t i = 0; i < registered->count; i++) {
        const roster_engine *e = &registered->engines[i];
        if (roster_engine_live(e) && strcmp(e->runtime, want) != 0) {
            msg_err("engine %ld (rank %ld of job %s) runs the %s runtime, but this cluster was "
                    "started with --runtime=%s: one cluster serves one language; stop the "
                    "other engines or start it with --runtime=%s",
                    e->id, e->rank, e->job, e->runtime, want, e->runtime);
            return STEP_FAILED;
        }
    }
    return STEP_OK;
}

/* Starts a job and waits for its engines.  On success the job is JOB_UP
 * and ids (if not NULL) gets a new list of its engine ids. */
static step_result launcher_bring_up_job(launcher *l, engine_job *job, double timeout, json_t **ids)
{
    roster registered = {0};
    step_result step = STEP_FAILED;

    if (job_start(job, &l->env) == 0)
        step = launcher_wait_for_job(l, job, proc_now() + timeout, timeout, &registered);
    else
        snprintf(job->ended_why, sizeof job->ended_why, "could not be started");
    if (step == STEP_OK)
        step = launcher_check_world(l, job, &registered);
    if (step == STEP_OK)
        step = launcher_check_runtime(l, &registered);
    if (step == STEP_OK) {
        job->phase = JOB_UP;
        if (ids != NULL) {
            *ids = json_array();
            for (size_t i = 0; i < registered.count && *ids != NULL; i++)
                json_array_append_new(*ids, json_integer(registered.engines[i].id));
        }
    } else {
        job->phase = JOB_FAILED;
    }
    roster_free(&registered);
    return step;
}

/* Stops one job's processes (or cancels its batch job): SIGTERM to mpiexec
 * (it passes it on to its ranks) or the local engines, then SIGKILL to what
 * is left, ranks by pid.  Returns true when nothing of it runs here. */
static bool launcher_stop_job(launcher *l, engine_job *job)
{
    double deadline = proc_now() + STOP_GRACE_TERM;

    if (job_is_batch(job))
        job_cancel(job);
    job_signal(job, SIGTERM);
    if (!job_child_running(&job->mpiexec))
        launcher_kill_engine_pids(l, job->number, SIGTERM);
    while ((job_processes_running(job) || launcher_engine_pids_alive(l, job->number)) &&
           proc_now() < deadline && !l->hurry)
        launcher_sleep(l, 50);
    if (job_processes_running(job) || launcher_engine_pids_alive(l, job->number)) {
        job_signal(job, SIGKILL);
        launcher_kill_engine_pids(l, job->number, SIGKILL);
        deadline = proc_now() + STOP_GRACE_KILL;
        while ((job_processes_running(job) || launcher_engine_pids_alive(l, job->number)) &&
               proc_now() < deadline)
            launcher_sleep(l, 50);
    }
    return !job_processes_running(job) && !launcher_engine_pids_alive(l, job->number);
}

/* ---- the control socket (ippc cluster add/remove/jobs) ------------------ */

static void launcher_control_open(launcher *l)
{
    const char *path = l->options->paths->launcher_socket;
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd;

    l->control_fd = -1;
    if (strlen(path) >= sizeof address.sun_path) {
        msg_err("warning: %s is too long for a socket path: `ippc cluster add/remove/jobs` "
                "will not reach this cluster (use a shorter --ippc-dir)",
                path);
        return;
    }
    memcpy(address.sun_path, path, strlen(path) + 1); /* fits: checked above */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    unlink(path); /* ours: the launcher lock is held, so no other launcher uses it */
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || chmod(path, 0600) < 0 ||
        listen(fd, 8) < 0) {
        msg_err("warning: cannot listen on %s (%s): `ippc cluster add/remove/jobs` will not "
                "reach this cluster",
                path, strerror(errno));
        close(fd);
        return;
    }
    l->control_fd = fd;
}

static void launcher_control_close(launcher *l)
{
    if (l->control_fd < 0)
        return;
    close(l->control_fd);
    l->control_fd = -1;
    unlink(l->options->paths->launcher_socket);
}

/* Reads one line (the request) within CONTROL_READ_S.  Returns its length,
 * -1 (no line in time, or an error) or -2 (longer than cap). */
static ssize_t control_read_line(int fd, char *buf, size_t cap)
{
    size_t used = 0;
    double deadline = proc_now() + CONTROL_READ_S;

    while (used < cap) {
        struct pollfd readable = {.fd = fd, .events = POLLIN};
        ssize_t got;

        if (proc_now() >= deadline || poll(&readable, 1, 100) < 0)
            return -1;
        got = recv(fd, buf + used, cap - used, MSG_DONTWAIT);
        if (got == 0)
            return (ssize_t)used; /* the peer shut down its side: that is the line */
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -1;
        }
        for (ssize_t i = 0; i < got; i++)
            if (buf[used + (size_t)i] == '\n')
                return (ssize_t)used + i;
        used += (size_t)got;
    }
    return -2; /* longer than JOBSPEC_REQUEST_MAX */
}

static void control_reply(int fd, json_t *reply)
{
    char *text = reply != NULL ? json_dumps(reply, JSON_COMPACT) : NULL;
    const char *line = text != NULL ? text : "{\"ok\":false,\"error\":\"out of memory\"}";
    size_t len = strlen(line);
    size_t sent = 0;
    int blocking = fcntl(fd, F_GETFL) & ~O_NONBLOCK;

    fcntl(fd, F_SETFL, blocking);
    while (sent < len) {
        ssize_t n = send(fd, line + sent, len - sent, MSG_NOSIGNAL);

        if (n <= 0)
            break; /* the client went away: nothing to tell */
        sent += (size_t)n;
    }
    (void)send(fd, "\n", 1, MSG_NOSIGNAL);
    free(text);
    json_decref(reply);
}

static json_t *control_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *control_error(const char *fmt, ...)
{
    char message[1024];
    va_list args;

    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    return json_pack("{s:b, s:s}", "ok", 0, "error", message);
}

static engine_job *launcher_find_job(launcher *l, const char *which)
{
    for (size_t i = 0; i < l->n_jobs; i++) {
        engine_job *job = l->jobs[i];
        char number[16];

        snprintf(number, sizeof number, "%d", job->number);
        if (strcmp(which, job->name) == 0 || strcmp(which, number) == 0 ||
            job_owns_engine(job, which))
            return job;
    }
    return NULL;
}

static json_t *launcher_control_add(launcher *l, const jobspec_request *request)
{
    const jobspec *spec = &request->spec;
    double timeout = request->timeout > 0 ? request->timeout : l->options->timeout;
    json_t *ids = NULL;
    engine_job *job;
    char description[PATH_MAX + 64];
    step_result step;

    if ((spec->kind == JOB_MPI || spec->kind == JOB_PBS) && l->options->mpiexec_path[0] == '\0')
        return control_error("no mpiexec was found when the cluster started; it cannot start "
                             "--engines=%s jobs",
                             jobspec_kind_name(spec->kind));
    job = launcher_new_job(l, spec);
    if (job == NULL)
        return control_error("out of memory");
    msg_err("adding job %s: %ld %s engine%s", job->name, spec->engines,
            jobspec_kind_name(spec->kind), spec->engines == 1 ? "" : "s");
    step = launcher_bring_up_job(l, job, timeout, &ids);
    if (step != STEP_OK) {
        launcher_stop_job(l, job);
        return control_error("job %s did not come up: %s", job->name,
                             step == STEP_STOPPED        ? "the cluster is stopping"
                             : job->ended_why[0] != '\0' ? job->ended_why
                                                         : "see the launcher's output");
    }
    job_describe(job, description, sizeof description);
    msg_err("job %s is up: %ld engine%s (%s)", job->name, spec->engines,
            spec->engines == 1 ? "" : "s", description);
    return json_pack("{s:b, s:s, s:o, s:s}", "ok", 1, "job", job->name, "ids",
                     ids != NULL ? ids : json_array(), "description", description);
}

static json_t *launcher_control_remove(launcher *l, const char *which)
{
    engine_job *job = launcher_find_job(l, which);
    bool stopped;

    if (job == NULL)
        return control_error("no job %s in this cluster (`ippc cluster jobs` lists them)", which);
    if (job->phase == JOB_REMOVED)
        return control_error("job %s was already removed", job->name);
    msg_err("removing job %s", job->name);
    stopped = launcher_stop_job(l, job);
    job->phase = JOB_REMOVED;
    if (!stopped)
        return control_error("job %s: some of its processes are still running", job->name);
    msg_err("job %s removed", job->name);
    return json_pack("{s:b, s:s}", "ok", 1, "job", job->name);
}

static json_t *launcher_control_jobs(launcher *l)
{
    json_t *jobs = json_array();

    for (size_t i = 0; i < l->n_jobs && jobs != NULL; i++) {
        if (job_is_batch(l->jobs[i]) && l->jobs[i]->phase == JOB_UP)
            job_batch_ended(l->jobs[i], false);
        json_array_append_new(jobs, job_json(l->jobs[i]));
    }
    return json_pack("{s:b, s:o*}", "ok", 1, "jobs", jobs);
}

/* Serves the control connections waiting now, one at a time. */
static void launcher_control_serve(launcher *l)
{
    static char line[JOBSPEC_REQUEST_MAX + 1];

    while (l->control_fd >= 0 && l->stop_signal == 0) {
        struct sockaddr_un from;
        socklen_t from_len = sizeof from;
        int fd = accept4(l->control_fd, (struct sockaddr *)&from, &from_len,
                         SOCK_CLOEXEC | SOCK_NONBLOCK);
        struct ucred peer;
        socklen_t peer_len = sizeof peer;
        jobspec_request request;
        char err[512];
        ssize_t len;
        json_t *reply;

        if (fd < 0)
            return;
        /* The folder is 0700 already; a root-owned socket checks anyway. */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) < 0 ||
            (peer.uid != getuid() && peer.uid != 0)) {
            close(fd);
            continue;
        }
        len = control_read_line(fd, line, sizeof line - 1);
        if (len == -2)
            reply = control_error("a control request is at most %d bytes", JOBSPEC_REQUEST_MAX);
        else if (len < 0)
            reply = control_error("no request line within %g s", CONTROL_READ_S);
        else if (jobspec_request_parse(line, (size_t)len, &request, err, sizeof err) < 0)
            reply = control_error("bad request: %s", err);
        else if (request.op == JOBSPEC_ADD)
            reply = launcher_control_add(l, &request);
        else if (request.op == JOBSPEC_REMOVE)
            reply = launcher_control_remove(l, request.job);
        else
            reply = launcher_control_jobs(l);
        control_reply(fd, reply);
        close(fd);
    }
}

/* ---- banner and detach --------------------------------------------------- */

static void launcher_print_banner(launcher *l)
{
    const launch_options *o = l->options;
    const char *url = l->connection.url;
    const char *plural = o->spec.engines == 1 ? "" : "s";
    char world[PATH_MAX + 64];

    job_describe(l->jobs[0], world, sizeof world);
    msg_out("ippc cluster \"%s\": %ld engine%s (%s) on %s", o->paths->name, o->spec.engines, plural,
            world, url);
    msg_out("URL:   %s", url);
    msg_out("Token: %s", l->connection.token);
    /* The token rides in the fragment, which browsers never send; the page
     * moves it to sessionStorage and out of the address bar. */
    msg_out("Dashboard: %s/#token=%s", url, l->connection.token);
    msg_out("Connection file: %s", o->paths->client_file);
    msg_out("Try: curl -H \"Authorization: Bearer $TOKEN\" %s/api/v1/engines", url);
    msg_out("More engines: ippc cluster add -n N --profile %s", o->paths->name);
    if (o->daemonize)
        msg_out("Running in the background (launcher pid %ld, logs in %s).\n"
                "Stop with: ippc cluster stop --profile %s",
                (long)getpid(), o->paths->log_dir, o->paths->name);
    else
        msg_out("Press Ctrl-C to stop.");
}

/* Daemon mode, cluster up: stdio to the log, tell the waiting front process. */
static void launcher_detach(launcher *l)
{
    const launch_options *o = l->options;
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int log_fd = fileno(o->launcher_log);
    unsigned char ready = 0;

    fflush(stdout);
    fflush(stderr);
    if (null_fd >= 0) {
        (void)dup2(null_fd, STDIN_FILENO); /* if not, stdin stays the terminal's: never read */
        close(null_fd);
    }
    if (dup2(log_fd, STDOUT_FILENO) < 0 || dup2(log_fd, STDERR_FILENO) < 0)
        msg_err("cannot send the launcher's output to its log (%s); it stays on this terminal",
                strerror(errno));
    msg_set_mirror(NULL);
    msg_set_timestamps(true);
    if (chdir("/") < 0) {
        /* harmless: we only hold the old directory open */
    }
    if (write(o->ready_fd, &ready, 1) != 1)
        msg_err("could not tell the starting terminal that the cluster is up: %s", strerror(errno));
    close(o->ready_fd);
}

/* ---- supervising ---------------------------------------------------------- */

/* A job that was up and ended by itself is reported once. */
static void launcher_check_job(launcher *l, engine_job *job)
{
    char why[PATH_MAX + 512];

    if (job->phase != JOB_UP || !launcher_job_gone(l, job, why, sizeof why))
        return;
    job->phase = JOB_ENDED;
    snprintf(job->ended_why, sizeof job->ended_why, "%.*s", (int)sizeof job->ended_why - 1, why);
    msg_err("job %s ended: %s; its engines are gone, the controller keeps running (Ctrl-C or "
            "`ippc cluster stop --profile %s` stops it)",
            job->name, why, l->options->paths->name);
}

/* Returns when a stop was requested (STEP_STOPPED) or the controller died
 * (STEP_FAILED).  Jobs that end are reported; the controller keeps serving
 * (more engines can join it: `ippc cluster add`, or by hand). */
static step_result launcher_supervise(launcher *l)
{
    char why[256];
    char hint[PATH_MAX + 16];

    for (;;) {
        launcher_sleep(l, SUPERVISE_MS);
        if (l->stop_signal != 0)
            return STEP_STOPPED;
        launcher_reap(l);
        if (!job_child_running(&l->controller)) {
            job_child_describe_exit(&l->controller, why, sizeof why);
            msg_err("%s unexpectedly%s; stopping the engines", why,
                    launcher_log_hint(l, l->options->paths->controller_log, hint, sizeof hint));
            l->controller.reported = true;
            return STEP_FAILED;
        }
        for (size_t i = 0; i < l->n_jobs; i++)
            launcher_check_job(l, l->jobs[i]);
        launcher_control_serve(l);
    }
}

/* ---- stopping ------------------------------------------------------------- */

static bool launcher_all_gone(launcher *l)
{
    launcher_reap(l);
    if (job_child_running(&l->controller))
        return false;
    for (size_t i = 0; i < l->n_jobs; i++)
        if (job_processes_running(l->jobs[i]))
            return false;
    return !launcher_engine_pids_alive(l, -1);
}

/* Waits until everything is gone or the deadline passes; a grace period
 * (grace true) also ends when the user hurries. */
static bool launcher_wait_all_gone(launcher *l, double deadline, bool grace)
{
    while (!launcher_all_gone(l)) {
        if ((grace && l->hurry) || proc_now() >= deadline)
            return false;
        launcher_sleep(l, 50);
    }
    return true;
}

/* Signals every engine process of every job, and the learned pids that
 * still run ippc-engine (for SIGTERM, only those whose mpiexec is gone: a
 * running mpiexec forwards SIGTERM itself, and a second one straight to a
 * rank would catch it half-way through its exit). */
static void launcher_signal_engines(launcher *l, int signo)
{
    for (size_t i = 0; i < l->n_jobs; i++) {
        engine_job *job = l->jobs[i];

        job_signal(job, signo);
        if (signo != SIGTERM || !job_child_running(&job->mpiexec))
            launcher_kill_engine_pids(l, job->number, signo);
    }
}

static void launcher_teardown(launcher *l)
{
    const profile_paths *paths = l->options->paths;
    connection_info info;
    char err[PATH_MAX + 256];
    double start = proc_now();

    l->tearing_down = true;
    launcher_control_close(l);
    /* 1. The controller tells its engines to shut down, then exits.  Without
     * a controller the engines only try to reconnect: no point waiting. */
    launcher_reap(l);
    bool controller_alive = job_child_running(&l->controller);

    job_child_signal(&l->controller, SIGTERM);
    if (!controller_alive || !launcher_wait_all_gone(l, start + STOP_GRACE_CONTROLLER, true)) {
        /* 2. What is left gets SIGTERM (mpiexec passes it to its ranks). */
        job_child_signal(&l->controller, SIGTERM);
        launcher_signal_engines(l, SIGTERM);
        if (!launcher_wait_all_gone(l, start + STOP_GRACE_TERM, true)) {
            /* 3. SIGKILL; mpiexec would leave ranks behind, hence the pids. */
            if (!l->hurry)
                msg_err("some processes did not stop within %g s: killing them", STOP_GRACE_TERM);
            job_child_signal(&l->controller, SIGKILL);
            launcher_signal_engines(l, SIGKILL);
            launcher_wait_all_gone(l, proc_now() + STOP_GRACE_KILL, false);
        }
    }
    /* 4. Batch jobs run elsewhere: whatever is still queued or running is
     * cancelled (their engines were told to stop; a queued job would start
     * engines for a controller that is gone). */
    for (size_t i = 0; i < l->n_jobs; i++)
        if (job_is_batch(l->jobs[i]) && l->jobs[i]->phase != JOB_REMOVED)
            job_cancel(l->jobs[i]);

    launcher_reap(l);
    if (job_child_running(&l->controller))
        msg_err("warning: the controller (pid %ld) is still running", (long)l->controller.pid);
    for (size_t i = 0; i < l->n_jobs; i++) {
        engine_job *job = l->jobs[i];

        if (job_child_running(&job->mpiexec))
            msg_err("warning: mpiexec of job %s (pid %ld) is still running", job->name,
                    (long)job->mpiexec.pid);
        for (size_t k = 0; k < job->local_count; k++)
            if (job_child_running(&job->locals[k]))
                msg_err("warning: %s (pid %ld) is still running", job->locals[k].role,
                        (long)job->locals[k].pid);
    }
    for (size_t i = 0; i < l->engine_pid_count; i++)
        if (engine_pid_alive(l->engine_pids[i].pid))
            msg_err("warning: engine pid %ld is still running", (long)l->engine_pids[i].pid);

    /* A controller that was killed could not remove its connection files. */
    if (l->controller.pid > 0 && !job_child_running(&l->controller) &&
        connection_read(paths->client_file, &info, err, sizeof err) == 0 &&
        info.pid == l->controller.pid) {
        unlink(paths->client_file);
        unlink(info.engine_file[0] != '\0' ? info.engine_file : paths->engine_file);
    }
}

/* ---- the whole launch ----------------------------------------------------- */

static step_result launcher_bring_up(launcher *l)
{
    const launch_options *o = l->options;
    double deadline = proc_now() + o->timeout;
    engine_job *first;
    step_result step;

    step = launcher_start_controller(l);
    if (step == STEP_OK)
        step = launcher_wait_for_controller(l, deadline);
    if (step != STEP_OK)
        return step;
    if (rest_client_init(&l->api, l->connection.url, l->connection.token) < 0) {
        msg_err("cannot set up an HTTP client (libcurl)");
        return STEP_FAILED;
    }
    l->api_ready = true;
    l->env.engine_file = l->engine_file;
    l->env.runtime = o->runtime;
    l->env.real_mpi4py = o->real_mpi4py;
    first = launcher_new_job(l, &o->spec);
    if (first == NULL) {
        msg_err("out of memory");
        return STEP_FAILED;
    }
    /* What is left of the start's time limit, and at least a little. */
    return launcher_bring_up_job(l, first, deadline - proc_now() > 1 ? deadline - proc_now() : 1,
                                 NULL);
}

static int launcher_open_logs(launcher *l)
{
    const profile_paths *paths = l->options->paths;

    l->controller_log_fd = open_log(paths->controller_log);
    if (l->controller_log_fd < 0) {
        msg_err("cannot open %s: %s", paths->controller_log, strerror(errno));
        return -1;
    }
    l->engines_log_fd = open_log(paths->engines_log);
    if (l->engines_log_fd < 0) {
        msg_err("cannot open %s: %s", paths->engines_log, strerror(errno));
        return -1;
    }
    return 0;
}

int launcher_run(const launch_options *options)
{
    launcher l;
    step_result step;
    bool was_up = false;
    int exit_status = 1;

    memset(&l, 0, sizeof l);
    l.options = options;
    l.controller_log_fd = -1;
    l.engines_log_fd = -1;
    l.control_fd = -1;
    if (gethostname(l.hostname, sizeof l.hostname - 1) < 0)
        snprintf(l.hostname, sizeof l.hostname, "localhost");

    sigemptyset(&l.waited);
    sigaddset(&l.waited, SIGINT);
    sigaddset(&l.waited, SIGTERM);
    sigaddset(&l.waited, SIGHUP);
    sigaddset(&l.waited, SIGCHLD);
    sigprocmask(SIG_BLOCK, &l.waited, &l.child_mask);
    /* Writing to a closed terminal or pipe must not kill the supervisor. */
    signal(SIGPIPE, SIG_IGN);

    if (options->daemonize && launcher_open_logs(&l) < 0) {
        step = STEP_FAILED;
    } else {
        l.env = (job_env){.paths = options->paths,
                          .engine_path = options->engine_path,
                          .mpiexec_path = options->mpiexec_path,
                          .engine_file = l.engine_file,
                          .log_fd = l.engines_log_fd,
                          .child_mask = &l.child_mask};
        step = launcher_bring_up(&l);
    }
    if (step == STEP_OK) {
        was_up = true;
        launcher_control_open(&l);
        launcher_print_banner(&l);
        if (options->daemonize)
            launcher_detach(&l);
        step = launcher_supervise(&l);
    }

    if (step == STEP_STOPPED) {
        msg_err("SIG%s: stopping cluster \"%s\"%s", sigabbrev_np(l.stop_signal),
                options->paths->name, options->daemonize ? "" : " (Ctrl-C again to kill at once)");
        launcher_teardown(&l);
        msg_out("stopped");
        /* A stop before the cluster was up means the start did not succeed. */
        exit_status = was_up ? 0 : 1;
    } else {
        bool something_runs = !launcher_all_gone(&l);

        launcher_teardown(&l);
        if (something_runs)
            msg_err("stopped the processes started for cluster \"%s\"", options->paths->name);
        exit_status = 1;
    }

    if (l.api_ready)
        rest_client_free(&l.api);
    for (size_t i = 0; i < l.n_jobs; i++) {
        job_free(l.jobs[i]);
        free(l.jobs[i]);
    }
    free(l.jobs);
    free(l.engine_pids);
    if (l.controller_log_fd >= 0)
        close(l.controller_log_fd);
    if (l.engines_log_fd >= 0)
        close(l.engines_log_fd);
    /* The signals stay blocked: a late Ctrl-C must not change the exit status. */
    return exit_status;
}
