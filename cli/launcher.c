/* launcher.c — start, supervise and stop a controller and its engines.
 *
 * The life of a launch (see launcher.h for the promises):
 *   start the controller -> wait for its connection files -> start the engines
 *   -> poll GET /api/v1/engines until N are registered -> check the MPI world
 *   -> print the banner -> (daemon: detach) -> supervise -> tear down.
 * Every step can end early: a stop signal, a child that died, the deadline.
 * All of them lead to launcher_teardown(), which is the only place that stops
 * processes.
 *
 * Children run in their own process groups, so the terminal's Ctrl-C reaches
 * only this process, which then stops the children in order: the controller
 * first (it tells the engines to shut down, so they finish cleanly and mpiexec
 * exits by itself), then SIGTERM to what is left, then SIGKILL.
 */
#include "launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msg.h"
#include "proc.h"
#include "rest.h"
#include "roster.h"

/* Grace periods of a stop: the controller's own shutdown, then SIGTERM. */
#define STOP_GRACE_CONTROLLER 2.0
#define STOP_GRACE_TERM 5.0
#define STOP_GRACE_KILL 2.0
#define POLL_MS 100
#define PROGRESS_REPEAT_S 5.0

typedef struct child {
    pid_t pid; /* 0: never started */
    char role[64];
    bool reaped;
    bool reported; /* its exit was already told to the user */
    int status;
} child;

typedef struct launcher {
    const launch_options *options;
    sigset_t waited;     /* blocked here and waited for with sigtimedwait */
    sigset_t child_mask; /* the mask the launcher started with, for children */
    int stop_signal;     /* the first SIGINT/SIGTERM/SIGHUP, 0 if none */
    bool tearing_down;
    bool hurry; /* a stop signal during teardown: skip the grace periods */

    child controller;
    child mpiexec;
    child *locals; /* LAUNCH_LOCAL: one per engine */
    size_t local_count;
    pid_t engine_group; /* process group of mpiexec or of the local engines */

    /* Engine pids on this host, learned from registrations. */
    pid_t *engine_pids;
    size_t engine_pid_count;
    size_t engine_pid_cap;
    char hostname[256];

    connection_info connection;
    char engine_file[PATH_MAX];
    rest_client api;
    bool api_ready;

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

static void child_reap(child *c)
{
    int status;

    if (c->pid <= 0 || c->reaped)
        return;
    if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
        c->reaped = true;
        c->status = status;
    }
}

static bool child_running(const child *c)
{
    return c->pid > 0 && !c->reaped;
}

static void launcher_reap(launcher *l)
{
    child_reap(&l->controller);
    child_reap(&l->mpiexec);
    for (size_t i = 0; i < l->local_count; i++)
        child_reap(&l->locals[i]);
}

static void child_describe_exit(const child *c, char *buf, size_t len)
{
    char how[128];

    proc_describe_status(c->status, how, sizeof how);
    snprintf(buf, len, "%s (pid %ld) %s", c->role, (long)c->pid, how);
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

static void launcher_learn_engines(launcher *l, const roster *r)
{
    for (size_t i = 0; i < r->count; i++) {
        const roster_engine *engine = &r->engines[i];
        bool known = false;
        pid_t *grown;

        if (engine->pid <= 0 || !same_host(l, engine->host))
            continue;
        for (size_t j = 0; j < l->engine_pid_count; j++)
            known = known || l->engine_pids[j] == (pid_t)engine->pid;
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
        l->engine_pids[l->engine_pid_count++] = (pid_t)engine->pid;
    }
}

/* A learned pid is ours while it runs ippc-engine (pids get reused). */
static bool engine_pid_alive(pid_t pid)
{
    return proc_is_running(pid) && proc_runs_program(pid, "ippc-engine");
}

/* ---- starting ------------------------------------------------------------ */

static void format_command(char *const argv[], char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; argv[i] != NULL && used < len; i++) {
        int written = snprintf(out + used, len - used, "%s%s", i > 0 ? " " : "", argv[i]);

        if (written < 0)
            return;
        used += (size_t)written;
    }
}

static int open_log(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
}

static step_result launcher_start_controller(launcher *l)
{
    const launch_options *o = l->options;
    char *argv[16];
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

    format_command(argv, command, sizeof command);
    msg_err("starting the controller: %s", command);
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
        if (!child_running(&l->controller)) {
            child_describe_exit(&l->controller, why, sizeof why);
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

static step_result launcher_start_engines(launcher *l)
{
    const launch_options *o = l->options;
    char count[32];
    char command[3 * PATH_MAX];
    char err[PATH_MAX + 128];
    proc_options spawn = {
        .stdout_fd = l->engines_log_fd,
        .stderr_fd = l->engines_log_fd,
        .process_group = 0,
        .parent_death_signal = SIGTERM,
        .sigmask = &l->child_mask,
    };

    snprintf(count, sizeof count, "%ld", o->engines);
    if (o->kind == LAUNCH_MPI) {
        char *argv[] = {(char *)o->mpiexec_path,
                        "-n",
                        count,
                        (char *)o->engine_path,
                        "--file",
                        l->engine_file,
                        "--runtime",
                        (char *)o->runtime,
                        o->real_mpi4py ? "--real-mpi4py" : NULL,
                        NULL};

        format_command(argv, command, sizeof command);
        msg_err("starting %ld engine%s: %s", o->engines, o->engines == 1 ? "" : "s", command);
        snprintf(l->mpiexec.role, sizeof l->mpiexec.role, "mpiexec");
        l->mpiexec.pid = proc_spawn(argv, &spawn, err, sizeof err);
        if (l->mpiexec.pid < 0) {
            l->mpiexec.pid = 0;
            msg_err("%s", err);
            return STEP_FAILED;
        }
        l->engine_group = l->mpiexec.pid;
        return STEP_OK;
    }

    char *argv[] = {(char *)o->engine_path,
                    "--file",
                    l->engine_file,
                    "--runtime",
                    (char *)o->runtime,
                    o->real_mpi4py ? "--real-mpi4py" : NULL,
                    NULL};

    l->locals = calloc((size_t)o->engines, sizeof *l->locals);
    if (l->locals == NULL) {
        msg_err("out of memory");
        return STEP_FAILED;
    }
    format_command(argv, command, sizeof command);
    msg_err("starting %ld local engine%s: %s", o->engines, o->engines == 1 ? "" : "s", command);
    for (long i = 0; i < o->engines; i++) {
        child *engine = &l->locals[i];

        snprintf(engine->role, sizeof engine->role, "local engine %ld", i);
        spawn.process_group = l->engine_group; /* the first one leads the group */
        engine->pid = proc_spawn(argv, &spawn, err, sizeof err);
        if (engine->pid < 0) {
            engine->pid = 0;
            msg_err("%s", err);
            return STEP_FAILED;
        }
        l->local_count++;
        if (l->engine_group == 0)
            l->engine_group = engine->pid;
    }
    return STEP_OK;
}

/* A launched engine process that ended before the cluster was up. */
static const child *launcher_first_ended_engine(launcher *l)
{
    launcher_reap(l);
    if (l->mpiexec.pid > 0 && l->mpiexec.reaped)
        return &l->mpiexec;
    for (size_t i = 0; i < l->local_count; i++)
        if (l->locals[i].reaped)
            return &l->locals[i];
    return NULL;
}

/* Polls the engine list until N live engines are registered.  On success
 * registered holds the last list. */
static step_result launcher_wait_for_engines(launcher *l, double deadline, roster *registered)
{
    const launch_options *o = l->options;
    char err[1024];
    char last_problem[1100] = "";
    char why[256];
    char hint[PATH_MAX + 16];
    size_t shown = (size_t)-1;
    double shown_at = 0;
    size_t live = 0;
    rest_reply reply;
    const child *ended;

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

            if (roster_parse(reply.json, &current, err, sizeof err) < 0) {
                snprintf(last_problem, sizeof last_problem, "%s", err);
            } else {
                last_problem[0] = '\0';
                launcher_learn_engines(l, &current);
                live = roster_live_count(&current);
                if (live != shown || proc_now() - shown_at >= PROGRESS_REPEAT_S) {
                    msg_err("waiting for engines: %zu/%ld registered", live, o->engines);
                    shown = live;
                    shown_at = proc_now();
                }
                if (live >= (size_t)o->engines) {
                    *registered = current;
                    rest_reply_free(&reply);
                    return STEP_OK;
                }
                roster_free(&current);
            }
            rest_reply_free(&reply);
        }

        launcher_reap(l);
        if (!child_running(&l->controller)) {
            child_describe_exit(&l->controller, why, sizeof why);
            msg_err("%s while the engines were starting (%zu/%ld registered)%s", why, live,
                    o->engines, launcher_log_hint(l, o->paths->controller_log, hint, sizeof hint));
            l->controller.reported = true;
            return STEP_FAILED;
        }
        ended = launcher_first_ended_engine(l);
        if (ended != NULL) {
            child_describe_exit(ended, why, sizeof why);
            msg_err("%s after %zu of %ld engines registered%s", why, live, o->engines,
                    launcher_log_hint(l, o->paths->engines_log, hint, sizeof hint));
            return STEP_FAILED;
        }
        if (proc_now() >= deadline) {
            msg_err("timed out after %g s waiting for engines: %zu/%ld registered%s%s%s",
                    o->timeout, live, o->engines, last_problem[0] != '\0' ? "; " : "", last_problem,
                    launcher_log_hint(l, o->paths->engines_log, hint, sizeof hint));
            msg_err("%s (pid %ld) still runs but not all of its engines registered; "
                    "--timeout SECONDS allows more time",
                    o->kind == LAUNCH_MPI ? o->mpiexec_path : "each local engine",
                    o->kind == LAUNCH_MPI ? (long)l->mpiexec.pid : (long)l->engine_group);
            return STEP_FAILED;
        }
        launcher_sleep(l, POLL_MS);
    }
}

/* For --engines=mpi the N engines must be ranks 0..N-1 of one world of N. */
static step_result launcher_check_world(launcher *l, const roster *registered)
{
    const launch_options *o = l->options;
    char worlds[1024];

    if (o->kind != LAUNCH_MPI)
        return STEP_OK;
    switch (roster_check_world(registered, o->engines, worlds, sizeof worlds)) {
    case ROSTER_ONE_WORLD: return STEP_OK;
    case ROSTER_SINGLETONS:
        msg_err("the %ld engines started by %s came up as %zu separate MPI worlds of size "
                "1 (rank 0 of 1 each): this mpiexec does not belong to the MPI that "
                "ippc-engine was built with (MPICH); use --mpiexec mpiexec.mpich",
                o->engines, o->mpiexec_path, roster_live_count(registered));
        return STEP_FAILED;
    case ROSTER_SPLIT:
    default:
        msg_err("the %ld engines started by %s did not form one MPI world of %ld (%s)", o->engines,
                o->mpiexec_path, o->engines, worlds);
        return STEP_FAILED;
    }
}

/* Every engine must run the language the cluster was started for: a client
 * of a --runtime=python cluster sends Python, which a Lua engine (say, one
 * that joined by hand) cannot serve. */
static step_result launcher_check_runtime(launcher *l, const roster *registered)
{
    const launch_options *o = l->options;
    for (size_t i = 0; i < registered->count; i++) {
        const roster_engine *e = &registered->engines[i];
        if (roster_engine_live(e) && strcmp(e->runtime, o->runtime) != 0) {
            msg_err("engine %ld (rank %ld of job %s) runs the %s runtime, but this cluster was "
                    "started with --runtime=%s: one cluster serves one language; stop the "
                    "other engines or start it with --runtime=%s",
                    e->id, e->rank, e->job, e->runtime, o->runtime, e->runtime);
            return STEP_FAILED;
        }
    }
    return STEP_OK;
}

static void launcher_print_banner(launcher *l)
{
    const launch_options *o = l->options;
    const char *url = l->connection.url;
    const char *plural = o->engines == 1 ? "" : "s";
    char world[96];

    if (o->kind == LAUNCH_MPI)
        snprintf(world, sizeof world, "MPI world of %ld", o->engines);
    else if (o->engines == 1)
        snprintf(world, sizeof world, "a local MPI singleton");
    else
        snprintf(world, sizeof world, "%ld local MPI singletons", o->engines);

    msg_out("ippc cluster \"%s\": %ld engine%s (%s) on %s", o->paths->name, o->engines, plural,
            world, url);
    msg_out("URL:   %s", url);
    msg_out("Token: %s", l->connection.token);
    /* The token rides in the fragment, which browsers never send; the page
     * moves it to sessionStorage and out of the address bar. */
    msg_out("Dashboard: %s/#token=%s", url, l->connection.token);
    msg_out("Connection file: %s", o->paths->client_file);
    msg_out("Try: curl -H \"Authorization: Bearer $TOKEN\" %s/api/v1/engines", url);
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

/* Returns when a stop was requested (STEP_STOPPED) or the controller died
 * (STEP_FAILED).  Engines that end are reported; the controller keeps serving
 * (more engines can join it by hand). */
static step_result launcher_supervise(launcher *l)
{
    char why[256];
    char hint[PATH_MAX + 16];

    for (;;) {
        launcher_sleep(l, 1000);
        if (l->stop_signal != 0)
            return STEP_STOPPED;
        launcher_reap(l);
        if (!child_running(&l->controller)) {
            child_describe_exit(&l->controller, why, sizeof why);
            msg_err("%s unexpectedly%s; stopping the engines", why,
                    launcher_log_hint(l, l->options->paths->controller_log, hint, sizeof hint));
            l->controller.reported = true;
            return STEP_FAILED;
        }
        if (l->mpiexec.reaped && !l->mpiexec.reported) {
            child_describe_exit(&l->mpiexec, why, sizeof why);
            msg_err("%s: its engines are gone; the controller keeps running (Ctrl-C or "
                    "`ippc cluster stop --profile %s` stops it)",
                    why, l->options->paths->name);
            l->mpiexec.reported = true;
        }
        for (size_t i = 0; i < l->local_count; i++) {
            if (l->locals[i].reaped && !l->locals[i].reported) {
                child_describe_exit(&l->locals[i], why, sizeof why);
                msg_err("%s", why);
                l->locals[i].reported = true;
            }
        }
    }
}

/* ---- stopping ------------------------------------------------------------- */

static bool launcher_all_gone(launcher *l)
{
    launcher_reap(l);
    if (child_running(&l->controller) || child_running(&l->mpiexec))
        return false;
    for (size_t i = 0; i < l->local_count; i++)
        if (child_running(&l->locals[i]))
            return false;
    for (size_t i = 0; i < l->engine_pid_count; i++)
        if (engine_pid_alive(l->engine_pids[i]))
            return false;
    return true;
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

static void child_signal(const child *c, int signo)
{
    if (child_running(c))
        kill(c->pid, signo);
}

/* Signals every engine process: mpiexec and its group, local engines, and
 * the learned pids that still run ippc-engine (for SIGTERM, only once
 * mpiexec is gone). */
static void launcher_signal_engines(launcher *l, int signo)
{
    /* kill(-group) only while the group exists: then its id is not reused. */
    if (l->engine_group > 0 && kill(-l->engine_group, 0) == 0)
        kill(-l->engine_group, signo);
    child_signal(&l->mpiexec, signo);
    for (size_t i = 0; i < l->local_count; i++)
        child_signal(&l->locals[i], signo);
    /* A running mpiexec forwards SIGTERM to its ranks itself; a second
     * SIGTERM straight to a rank would catch it half-way through its exit. */
    if (signo == SIGTERM && child_running(&l->mpiexec))
        return;
    for (size_t i = 0; i < l->engine_pid_count; i++)
        if (engine_pid_alive(l->engine_pids[i]))
            kill(l->engine_pids[i], signo);
}

static void launcher_teardown(launcher *l)
{
    const profile_paths *paths = l->options->paths;
    connection_info info;
    char err[PATH_MAX + 256];
    double start = proc_now();

    l->tearing_down = true;
    /* 1. The controller tells its engines to shut down, then exits.  Without
     * a controller the engines only try to reconnect: no point waiting. */
    launcher_reap(l);
    bool controller_alive = child_running(&l->controller);

    child_signal(&l->controller, SIGTERM);
    if (!controller_alive || !launcher_wait_all_gone(l, start + STOP_GRACE_CONTROLLER, true)) {
        /* 2. What is left gets SIGTERM (mpiexec passes it to its ranks). */
        child_signal(&l->controller, SIGTERM);
        launcher_signal_engines(l, SIGTERM);
        if (!launcher_wait_all_gone(l, start + STOP_GRACE_TERM, true)) {
            /* 3. SIGKILL; mpiexec would leave ranks behind, hence the pids. */
            if (!l->hurry)
                msg_err("some processes did not stop within %g s: killing them", STOP_GRACE_TERM);
            child_signal(&l->controller, SIGKILL);
            launcher_signal_engines(l, SIGKILL);
            launcher_wait_all_gone(l, proc_now() + STOP_GRACE_KILL, false);
        }
    }

    launcher_reap(l);
    if (child_running(&l->controller))
        msg_err("warning: the controller (pid %ld) is still running", (long)l->controller.pid);
    if (child_running(&l->mpiexec))
        msg_err("warning: mpiexec (pid %ld) is still running", (long)l->mpiexec.pid);
    for (size_t i = 0; i < l->local_count; i++)
        if (child_running(&l->locals[i]))
            msg_err("warning: %s (pid %ld) is still running", l->locals[i].role,
                    (long)l->locals[i].pid);
    for (size_t i = 0; i < l->engine_pid_count; i++)
        if (engine_pid_alive(l->engine_pids[i]))
            msg_err("warning: engine pid %ld is still running", (long)l->engine_pids[i]);

    /* A controller that was killed could not remove its connection files. */
    if (l->controller.pid > 0 && !child_running(&l->controller) &&
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
    roster registered = {0};
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
    step = launcher_start_engines(l);
    if (step == STEP_OK)
        step = launcher_wait_for_engines(l, deadline, &registered);
    if (step == STEP_OK)
        step = launcher_check_world(l, &registered);
    if (step == STEP_OK)
        step = launcher_check_runtime(l, &registered);
    roster_free(&registered);
    return step;
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
    snprintf(l.controller.role, sizeof l.controller.role, "the controller");
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
        step = launcher_bring_up(&l);
    }
    if (step == STEP_OK) {
        was_up = true;
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
    free(l.locals);
    free(l.engine_pids);
    if (l.controller_log_fd >= 0)
        close(l.controller_log_fd);
    if (l.engines_log_fd >= 0)
        close(l.engines_log_fd);
    /* The signals stay blocked: a late Ctrl-C must not change the exit status. */
    return exit_status;
}
