/* cluster.c — `ippc cluster start` and `ippc cluster stop`.
 *
 * start: parses options, finds the programs, makes sure no cluster of the
 * profile is running (a lock held by the launcher for its whole life, plus the
 * pids named in the profile's files), removes stale files, optionally splits
 * into a front process and a daemon, and hands over to launcher_run().
 *
 * --daemonize forks before anything is started, so that the daemon is the
 * parent of the controller and the engines (waitpid and PR_SET_PDEATHSIG need
 * that).  The daemon calls setsid() at once and still writes its progress and
 * the banner to the terminal; the front process only waits for the daemon's
 * one-byte "cluster is up" message (or its exit) and forwards Ctrl-C to it, so
 * `ippc cluster start --daemonize` returns only when the cluster is up, with
 * the status of the start.
 *
 * stop: SIGTERM to the launcher named in pid/launcher.pid (or, with no
 * launcher, to the controller named in the connection file) and waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "launcher.h"
#include "msg.h"
#include "proc.h"
#include "pidfile.h"
#include "profile.h"

#define STOP_WAIT_DEFAULT 10.0

static const char cluster_usage_text[] =
    "usage: ippc cluster start -n N [options]\n"
    "       ippc cluster stop [--profile P]\n"
    "\n"
    "ippc cluster start: start a controller and N engines, wait until all N are\n"
    "registered, print how to reach them, and supervise them until Ctrl-C.\n"
    "  -n, --n N              number of engines (required)\n"
    "      --engines=mpi      one MPI job: MPIEXEC -n N ippc-engine (default)\n"
    "      --engines=local    N separate ippc-engine processes (MPI singletons)\n"
    "      --runtime=lua      the engines run Lua (default)\n"
    "      --runtime=python   the engines run Python (CPython, NumPy, mpi4py.MPI)\n"
    "      --real-mpi4py      with --runtime=python: the engines import an installed\n"
    "                         mpi4py built for MPICH instead of their own\n"
    "      --profile P        cluster profile (default: default)\n"
    "      --ippc-dir DIR     where profiles live (default: $IPPC_DIR or ~/.ippc)\n"
    "      --ip ADDR          address the controller binds (default: 127.0.0.1)\n"
    "      --port PORT        port of the controller (default: 0, a free one)\n"
    "      --db memory|PATH   the controller's task store\n"
    "      --mpiexec PATH     mpiexec to use (default: $IPPC_MPIEXEC, else\n"
    "                         mpiexec.mpich on PATH, else mpiexec)\n"
    "      --timeout SECONDS  how long to wait for the cluster to come up (60)\n"
    "      --daemonize        run in the background once the cluster is up; logs\n"
    "                         go to $IPPC_DIR/profile_P/log/\n"
    "\n"
    "ippc cluster stop: stop the cluster of a profile and wait until it is gone.\n"
    "      --profile P        cluster profile (default: default)\n"
    "      --ippc-dir DIR     where profiles live\n"
    "      --timeout SECONDS  how long to wait (10)\n";

static bool parse_seconds(const char *text, double *out)
{
    char *end;
    double value;

    errno = 0;
    value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(value) || value <= 0 || value > 1e6)
        return false;
    *out = value;
    return true;
}

static bool parse_long(const char *text, long min, long max, long *out)
{
    char *end;
    long value;

    errno = 0;
    value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        return false;
    *out = value;
    return true;
}

/* ---- start ---------------------------------------------------------------- */

typedef struct start_args {
    long engines;
    const char *engines_kind;
    const char *profile;
    const char *ippc_dir;
    const char *ip;
    const char *port;
    const char *db;
    const char *mpiexec;
    const char *runtime;
    double timeout;
    bool daemonize;
    bool real_mpi4py;
} start_args;

static int parse_start(int argc, char **argv, start_args *args)
{
    enum {
        OPT_ENGINES = 256,
        OPT_PROFILE,
        OPT_IPPC_DIR,
        OPT_IP,
        OPT_PORT,
        OPT_DB,
        OPT_MPIEXEC,
        OPT_TIMEOUT,
        OPT_DAEMONIZE,
        OPT_RUNTIME,
        OPT_REAL_MPI4PY,
        OPT_HELP
    };
    static const struct option options[] = {
        {"n", required_argument, NULL, 'n'},
        {"engines", required_argument, NULL, OPT_ENGINES},
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"ippc-dir", required_argument, NULL, OPT_IPPC_DIR},
        {"ip", required_argument, NULL, OPT_IP},
        {"port", required_argument, NULL, OPT_PORT},
        {"db", required_argument, NULL, OPT_DB},
        {"mpiexec", required_argument, NULL, OPT_MPIEXEC},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"daemonize", no_argument, NULL, OPT_DAEMONIZE},
        {"runtime", required_argument, NULL, OPT_RUNTIME},
        {"real-mpi4py", no_argument, NULL, OPT_REAL_MPI4PY},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    long port;
    int option;
    bool have_n = false;

    memset(args, 0, sizeof *args);
    args->engines_kind = "mpi";
    args->runtime = "lua";
    args->timeout = 60;
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, ":n:h", options, NULL)) != -1) {
        switch (option) {
        case 'n':
            if (!parse_long(optarg, 1, 100000, &args->engines))
                return cli_usage_error("cluster", cluster_usage_text,
                                       "-n needs a number of engines >= 1, not '%s'", optarg);
            have_n = true;
            break;
        case OPT_ENGINES:
            if (strcmp(optarg, "mpi") != 0 && strcmp(optarg, "local") != 0)
                return cli_usage_error("cluster", cluster_usage_text,
                                       "--engines must be mpi or local, not '%s'", optarg);
            args->engines_kind = optarg;
            break;
        case OPT_PROFILE: args->profile = optarg; break;
        case OPT_IPPC_DIR: args->ippc_dir = optarg; break;
        case OPT_IP: args->ip = optarg; break;
        case OPT_PORT:
            if (!parse_long(optarg, 0, 65535, &port))
                return cli_usage_error("cluster", cluster_usage_text,
                                       "--port needs a port number 0-65535, not '%s'", optarg);
            args->port = optarg;
            break;
        case OPT_DB: args->db = optarg; break;
        case OPT_MPIEXEC: args->mpiexec = optarg; break;
        case OPT_TIMEOUT:
            if (!parse_seconds(optarg, &args->timeout))
                return cli_usage_error("cluster", cluster_usage_text,
                                       "--timeout needs a positive number of seconds, "
                                       "not '%s'",
                                       optarg);
            break;
        case OPT_DAEMONIZE: args->daemonize = true; break;
        case OPT_RUNTIME:
            if (strcmp(optarg, "lua") != 0 && strcmp(optarg, "python") != 0)
                return cli_usage_error("cluster", cluster_usage_text,
                                       "--runtime must be lua or python, not '%s'", optarg);
            args->runtime = optarg;
            break;
        case OPT_REAL_MPI4PY: args->real_mpi4py = true; break;
        case 'h':
        case OPT_HELP: fputs(cluster_usage_text, stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("cluster", cluster_usage_text, option, argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("cluster", cluster_usage_text, "unexpected argument '%s'",
                               argv[optind]);
    if (!have_n)
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "-n N (the number of engines) is required");
    /* Lua engines have no mpi4py to choose: refuse rather than ignore it. */
    if (args->real_mpi4py && strcmp(args->runtime, "python") != 0)
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "--real-mpi4py picks the mpi4py of Python engines: add "
                               "--runtime=python");
    return -1; /* parsed: go on */
}

/* ippc-controller and ippc-engine are installed next to ippc. */
static int find_sibling(const char *name, char *out, size_t len)
{
    char dir[PATH_MAX];

    if (proc_self_dir(dir, sizeof dir) < 0) {
        msg_err("cannot find the ippc executable's folder (/proc/self/exe)");
        return -1;
    }
    if (snprintf(out, len, "%s/%s", dir, name) >= (int)len || access(out, X_OK) < 0) {
        msg_err("cannot find %s next to ippc (looked for %s/%s); build it with `make`", name, dir,
                name);
        return -1;
    }
    return 0;
}

static int find_mpiexec(const char *given, char *out, size_t len)
{
    const char *env = getenv("IPPC_MPIEXEC");

    if (given != NULL) {
        if (proc_find_program(given, out, len) == 0)
            return 0;
        msg_err("--mpiexec %s: no such executable%s", given,
                strchr(given, '/') == NULL ? " on PATH" : "");
        return -1;
    }
    if (env != NULL && env[0] != '\0') {
        if (proc_find_program(env, out, len) == 0)
            return 0;
        msg_err("IPPC_MPIEXEC=%s: no such executable", env);
        return -1;
    }
    if (proc_find_program("mpiexec.mpich", out, len) == 0 ||
        proc_find_program("mpiexec", out, len) == 0)
        return 0;
    msg_err("no mpiexec found: neither mpiexec.mpich nor mpiexec is on PATH; install "
            "MPICH (apt-get install mpich), pass --mpiexec PATH, or use --engines=local");
    return -1;
}

static void refuse_running(const profile_paths *paths, pid_t pid)
{
    msg_err("a cluster is already running for profile %s (pid %ld); ippc cluster stop "
            "--profile %s",
            paths->name, (long)pid, paths->name);
}

/* Takes the profile's launcher lock (kept for this process's life, and the
 * daemon's: a forked child shares it), refuses when a cluster of the profile
 * runs, removes the stale files of one that did not end cleanly.  Returns the
 * lock's fd or -1. */
static int claim_profile(const profile_paths *paths)
{
    connection_info info;
    char err[PATH_MAX + 256];
    pid_t launcher = pidfile_read(paths->launcher_pid_file);
    int lock_fd;

    lock_fd = open(paths->launcher_lock_file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0) {
        msg_err("cannot open %s: %s", paths->launcher_lock_file, strerror(errno));
        return -1;
    }
    if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            refuse_running(paths, launcher);
        else
            msg_err("cannot lock %s: %s", paths->launcher_lock_file, strerror(errno));
        close(lock_fd);
        return -1;
    }

    switch (connection_read(paths->client_file, &info, err, sizeof err)) {
    case 0:
        if (proc_is_running(info.pid) && proc_runs_program(info.pid, "ippc-controller")) {
            refuse_running(paths, info.pid);
            close(lock_fd);
            return -1;
        }
        msg_err("removing stale connection files of profile %s (controller pid %ld is "
                "gone)",
                paths->name, (long)info.pid);
        if (info.engine_file[0] != '\0')
            unlink(info.engine_file);
        break;
    case -2: msg_err("removing an unreadable connection file: %s", err); break;
    default: break;
    }
    unlink(paths->client_file);
    unlink(paths->engine_file);
    unlink(paths->launcher_pid_file);
    return lock_fd;
}

static volatile sig_atomic_t front_signal;

static void front_on_signal(int signo)
{
    front_signal = signo;
}

/* The front process of --daemonize: waits for the daemon's ready byte (exit
 * 0) or its exit (its status), forwarding Ctrl-C as SIGTERM meanwhile. */
static int front_wait(pid_t daemon_pid, int ready_fd)
{
    struct sigaction action;
    struct pollfd wait_ready = {.fd = ready_fd, .events = POLLIN};
    unsigned char ready;
    ssize_t got;
    int status;

    memset(&action, 0, sizeof action);
    action.sa_handler = front_on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; /* no SA_RESTART: poll must return on a signal */
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGHUP, &action, NULL);

    for (;;) {
        if (front_signal != 0) {
            front_signal = 0;
            kill(daemon_pid, SIGTERM);
        }
        if (poll(&wait_ready, 1, 100) <= 0)
            continue;
        got = read(ready_fd, &ready, 1);
        if (got == 1)
            return ready;
        if (got == 0 || errno != EINTR)
            break;
    }
    /* The daemon closed the pipe without a ready byte: it is exiting. */
    while (waitpid(daemon_pid, &status, 0) < 0) {
        if (errno != EINTR)
            return CLI_EXIT_FAIL;
        if (front_signal != 0) {
            front_signal = 0;
            kill(daemon_pid, SIGTERM);
        }
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    msg_err("the background launcher was killed by signal %d", WTERMSIG(status));
    return CLI_EXIT_FAIL;
}

static int cluster_start(int argc, char **argv)
{
    start_args args;
    launch_options launch;
    profile_paths paths;
    char err[PATH_MAX + 256];
    int lock_fd;
    int ready[2];
    pid_t daemon_pid;
    int status = parse_start(argc, argv, &args);

    if (status >= 0)
        return status;
    memset(&launch, 0, sizeof launch);
    if (profile_paths_init(&paths, args.ippc_dir, args.profile, err, sizeof err) < 0) {
        msg_err("%s", err);
        return CLI_EXIT_FAIL;
    }
    launch.paths = &paths;
    launch.engines = args.engines;
    launch.kind = strcmp(args.engines_kind, "local") == 0 ? LAUNCH_LOCAL : LAUNCH_MPI;
    launch.ip = args.ip;
    launch.port = args.port;
    launch.db = args.db;
    launch.timeout = args.timeout;
    launch.runtime = args.runtime;
    launch.real_mpi4py = args.real_mpi4py;
    launch.daemonize = args.daemonize;
    launch.ready_fd = -1;
    if (find_sibling("ippc-controller", launch.controller_path, PATH_MAX) < 0 ||
        find_sibling("ippc-engine", launch.engine_path, PATH_MAX) < 0)
        return CLI_EXIT_FAIL;
    if (launch.kind == LAUNCH_MPI && find_mpiexec(args.mpiexec, launch.mpiexec_path, PATH_MAX) < 0)
        return CLI_EXIT_FAIL;
    if (launch.kind == LAUNCH_LOCAL && args.mpiexec != NULL)
        msg_err("note: --mpiexec is not used with --engines=local");
    if (profile_make_dirs(&paths, err, sizeof err) < 0) {
        msg_err("%s", err);
        return CLI_EXIT_FAIL;
    }
    lock_fd = claim_profile(&paths);
    if (lock_fd < 0)
        return CLI_EXIT_FAIL;

    if (args.daemonize) {
        if (pipe2(ready, O_CLOEXEC) < 0) {
            msg_err("pipe: %s", strerror(errno));
            return CLI_EXIT_FAIL;
        }
        fflush(stdout);
        fflush(stderr);
        daemon_pid = fork();
        if (daemon_pid < 0) {
            msg_err("fork: %s", strerror(errno));
            return CLI_EXIT_FAIL;
        }
        if (daemon_pid > 0) {
            close(ready[1]);
            close(lock_fd); /* the daemon keeps the lock */
            return front_wait(daemon_pid, ready[0]);
        }
        close(ready[0]);
        launch.ready_fd = ready[1];
        /* Out of the terminal's session: no Ctrl-C, no SIGHUP from it. */
        setsid();
        launch.launcher_log = fopen(paths.launcher_log, "we");
        if (launch.launcher_log == NULL) {
            msg_err("cannot open %s: %s", paths.launcher_log, strerror(errno));
            return CLI_EXIT_FAIL;
        }
        msg_set_mirror(launch.launcher_log);
    }

    if (pidfile_write(paths.launcher_pid_file, getpid(), err, sizeof err) < 0) {
        msg_err("%s", err);
        return CLI_EXIT_FAIL;
    }
    status = launcher_run(&launch);
    pidfile_remove_if_owned(paths.launcher_pid_file, getpid());
    if (launch.launcher_log != NULL && fclose(launch.launcher_log) != 0)
        msg_err("the launcher's log may have lost its last lines: %s", strerror(errno));
    close(lock_fd);
    return status;
}

/* ---- stop ----------------------------------------------------------------- */

/* SIGTERM to pid, then wait until it is gone.  Returns 0 when it is. */
static int stop_and_wait(pid_t pid, const char *what, double timeout)
{
    double deadline = proc_now() + timeout;
    struct timespec tick = {0, 100 * 1000000L};

    if (kill(pid, SIGTERM) < 0 && errno != ESRCH) {
        msg_err("cannot signal %s (pid %ld): %s", what, (long)pid, strerror(errno));
        return -1;
    }
    while (proc_is_running(pid)) {
        if (proc_now() >= deadline) {
            msg_err("%s (pid %ld) is still running after %g s", what, (long)pid, timeout);
            return -1;
        }
        nanosleep(&tick, NULL);
    }
    return 0;
}

static int cluster_stop(int argc, char **argv)
{
    enum { OPT_PROFILE = 256, OPT_IPPC_DIR, OPT_TIMEOUT, OPT_HELP };
    static const struct option options[] = {
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"ippc-dir", required_argument, NULL, OPT_IPPC_DIR},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *profile = NULL;
    const char *ippc_dir = NULL;
    double timeout = STOP_WAIT_DEFAULT;
    profile_paths paths;
    connection_info info;
    char err[PATH_MAX + 256];
    char what[64];
    pid_t launcher;
    int option;

    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        switch (option) {
        case OPT_PROFILE: profile = optarg; break;
        case OPT_IPPC_DIR: ippc_dir = optarg; break;
        case OPT_TIMEOUT:
            if (!parse_seconds(optarg, &timeout))
                return cli_usage_error("cluster", cluster_usage_text,
                                       "--timeout needs a positive number of seconds, "
                                       "not '%s'",
                                       optarg);
            break;
        case 'h':
        case OPT_HELP: fputs(cluster_usage_text, stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("cluster", cluster_usage_text, option, argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("cluster", cluster_usage_text, "unexpected argument '%s'",
                               argv[optind]);
    if (profile_paths_init(&paths, ippc_dir, profile, err, sizeof err) < 0) {
        msg_err("%s", err);
        return CLI_EXIT_FAIL;
    }

    launcher = pidfile_read(paths.launcher_pid_file);
    if (launcher > 0 && proc_is_running(launcher) && proc_runs_program(launcher, "ippc")) {
        msg_err("stopping cluster \"%s\" (launcher pid %ld)", paths.name, (long)launcher);
        if (stop_and_wait(launcher, "the launcher", timeout) < 0) {
            msg_err("see %s", paths.launcher_log);
            return CLI_EXIT_FAIL;
        }
        msg_out("stopped");
        return CLI_EXIT_OK;
    }
    if (launcher > 0) {
        msg_err("removing the stale pid file %s (pid %ld is gone)", paths.launcher_pid_file,
                (long)launcher);
        unlink(paths.launcher_pid_file);
    }

    /* No launcher: a controller may still run (started by hand, or its
     * launcher was killed); stopping it also stops its engines. */
    if (connection_read(paths.client_file, &info, err, sizeof err) == 0 &&
        proc_is_running(info.pid) && proc_runs_program(info.pid, "ippc-controller")) {
        msg_err("no launcher runs for profile \"%s\"; stopping the controller (pid %ld) "
                "named in %s",
                paths.name, (long)info.pid, paths.client_file);
        snprintf(what, sizeof what, "the controller");
        if (stop_and_wait(info.pid, what, timeout) < 0)
            return CLI_EXIT_FAIL;
        msg_out("stopped");
        return CLI_EXIT_OK;
    }
    msg_out("no cluster is running for profile \"%s\"; nothing to stop", paths.name);
    return CLI_EXIT_OK;
}

int cluster_main(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "missing subcommand: start or stop");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(cluster_usage_text, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "start") == 0)
        return cluster_start(argc - 1, argv + 1);
    if (strcmp(argv[1], "stop") == 0)
        return cluster_stop(argc - 1, argv + 1);
    return cli_usage_error("cluster", cluster_usage_text,
                           "unknown subcommand '%s' (use start or stop)", argv[1]);
}
