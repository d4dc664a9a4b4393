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
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "batch.h"
#include "jobspec.h"
#include "launcher.h"
#include "msg.h"
#include "proc.h"
#include "pidfile.h"
#include "profile.h"

#define STOP_WAIT_DEFAULT 10.0

static const char cluster_usage_text[] =
    "usage: ippc cluster start -n N [options]\n"
    "       ippc cluster add -n N [job options] [--profile P]\n"
    "       ippc cluster remove --job J [--profile P]\n"
    "       ippc cluster jobs [--profile P]\n"
    "       ippc cluster stop [--profile P]\n"
    "\n"
    "ippc cluster start: start a controller and N engines, wait until all N are\n"
    "registered, print how to reach them, and supervise them until Ctrl-C.\n"
    "  -n, --n N              number of engines (required)\n"
    "      --profile P        cluster profile (default: default)\n"
    "      --ippc-dir DIR     where profiles live (default: $IPPC_DIR or ~/.ippc)\n"
    "      --ip ADDR          address the controller binds (default: 127.0.0.1;\n"
    "                         0.0.0.0: every interface)\n"
    "      --location HOST    host written into the connection files (default: the\n"
    "                         --ip address; for 0.0.0.0 this host's first non-loopback\n"
    "                         IPv4 address)\n"
    "      --port PORT        port of the controller (default: 0, a free one)\n"
    "      --db memory|PATH   the controller's task store\n"
    "      --mpiexec PATH     mpiexec to use (default: $IPPC_MPIEXEC, else\n"
    "                         mpiexec.mpich on PATH, else mpiexec)\n"
    "      --timeout SECONDS  how long to wait for the cluster to come up (60)\n"
    "      --daemonize        run in the background once the cluster is up; logs\n"
    "                         go to $IPPC_DIR/profile_P/log/\n"
    "      --print-script     print the batch script of --engines=slurm|pbs and exit\n"
    "      --runtime=lua      the engines run Lua (default)\n"
    "      --runtime=python   the engines run Python (CPython, NumPy, mpi4py.MPI); every\n"
    "                         job the cluster adds runs the same\n"
    "      --real-mpi4py      with --runtime=python: the engines import an installed\n"
    "                         mpi4py built for MPICH instead of their own\n"
    "\n"
    "job options (start and add):\n"
    "      --engines=mpi      one MPI job: MPIEXEC -n N ippc-engine (default)\n"
    "      --engines=local    N separate ippc-engine processes (MPI singletons)\n"
    "      --engines=slurm    a Slurm batch job: sbatch a script running\n"
    "                         srun --mpi=pmi2 ippc-engine; stop: scancel\n"
    "      --engines=pbs      a PBS batch job: qsub a script running MPIEXEC inside\n"
    "                         the allocation; stop: qdel\n"
    "      --hostfile FILE    mpi: the hosts to start engines on (mpiexec -f FILE)\n"
    "      --ppn K            engines per host (mpiexec -ppn, --ntasks-per-node,\n"
    "                         PBS select chunks of K)\n"
    "      --mpiexec-args 'A B'  more arguments for mpiexec (slurm: for srun),\n"
    "                         split at blanks\n"
    "      --partition P      slurm --partition / pbs -q\n"
    "      --time T           slurm --time / pbs -l walltime=\n"
    "      --account A        slurm --account / pbs -A\n"
    "      --batch-directive LINE  one more #SBATCH / #PBS line (repeatable)\n"
    "\n"
    "ippc cluster add: another engine job on the running cluster (its own MPI\n"
    "world; its engines get the next ids).  --timeout SECONDS (default 60).\n"
    "ippc cluster remove --job J: stop job J (jN or N, as `ippc cluster jobs` shows).\n"
    "ippc cluster jobs: the cluster's engine jobs and their states (--json).\n"
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
    jobspec spec;
    const char *profile;
    const char *ippc_dir;
    const char *ip;
    const char *location;
    const char *port;
    const char *db;
    const char *mpiexec;
    double timeout;
    bool daemonize;
    bool print_script;
    const char *runtime;
    bool real_mpi4py;
} start_args;

/* Options that describe an engine job, shared by start and add. */
enum {
    OPT_ENGINES = 256,
    OPT_HOSTFILE,
    OPT_PPN,
    OPT_MPIEXEC_ARGS,
    OPT_PARTITION,
    OPT_TIME,
    OPT_ACCOUNT,
    OPT_DIRECTIVE,
    OPT_PROFILE,
    OPT_IPPC_DIR,
    OPT_IP,
    OPT_LOCATION,
    OPT_PORT,
    OPT_DB,
    OPT_MPIEXEC,
    OPT_TIMEOUT,
    OPT_DAEMONIZE,
    OPT_PRINT_SCRIPT,
    OPT_RUNTIME,
    OPT_REAL_MPI4PY,
    OPT_JOB,
    OPT_JSON,
    OPT_HELP
};

#define JOB_LONG_OPTIONS                                                                           \
    {"n", required_argument, NULL, 'n'}, {"engines", required_argument, NULL, OPT_ENGINES},        \
        {"hostfile", required_argument, NULL, OPT_HOSTFILE},                                       \
        {"ppn", required_argument, NULL, OPT_PPN},                                                 \
        {"mpiexec-args", required_argument, NULL, OPT_MPIEXEC_ARGS},                               \
        {"partition", required_argument, NULL, OPT_PARTITION},                                     \
        {"time", required_argument, NULL, OPT_TIME},                                               \
        {"account", required_argument, NULL, OPT_ACCOUNT},                                         \
    {                                                                                              \
        "batch-directive", required_argument, NULL, OPT_DIRECTIVE                                  \
    }

#define NOT_THIS_KIND_OF_OPTION (-2)

/* Handles one job option into spec.  Returns 0 when handled,
 * NOT_THIS_KIND_OF_OPTION, or the exit status of a usage error (2) or of a
 * failure (1, a message was printed). */
static int parse_job_option(int option, const char *arg, jobspec *spec)
{
    char err[512];
    int status = 0;

    switch (option) {
    case 'n':
        if (!parse_long(arg, 1, JOBSPEC_MAX_ENGINES, &spec->engines))
            return cli_usage_error("cluster", cluster_usage_text,
                                   "-n needs a number of engines >= 1, not '%s'", arg);
        return 0;
    case OPT_ENGINES:
        if (jobspec_kind_parse(arg, &spec->kind) < 0)
            return cli_usage_error("cluster", cluster_usage_text,
                                   "--engines must be mpi, local, slurm or pbs, not '%s'", arg);
        return 0;
    case OPT_PPN:
        if (!parse_long(arg, 1, 4096, &spec->ppn))
            return cli_usage_error("cluster", cluster_usage_text,
                                   "--ppn needs a number of engines per host 1-4096, not '%s'",
                                   arg);
        return 0;
    case OPT_HOSTFILE: {
        char absolute[PATH_MAX];

        if (realpath(arg, absolute) == NULL) {
            msg_err("--hostfile %s: %s", arg, strerror(errno));
            return CLI_EXIT_FAIL;
        }
        status = jobspec_set_text(spec->hostfile, sizeof spec->hostfile, "--hostfile", absolute,
                                  NULL, err, sizeof err);
        break;
    }
    case OPT_MPIEXEC_ARGS:
        status = jobspec_set_text(spec->mpiexec_args, sizeof spec->mpiexec_args, "--mpiexec-args",
                                  arg, NULL, err, sizeof err);
        break;
    case OPT_PARTITION:
        status = jobspec_set_text(spec->partition, sizeof spec->partition, "--partition", arg,
                                  JOBSPEC_NAME_CHARS, err, sizeof err);
        break;
    case OPT_TIME:
        status = jobspec_set_text(spec->time_limit, sizeof spec->time_limit, "--time", arg,
                                  JOBSPEC_TIME_CHARS, err, sizeof err);
        break;
    case OPT_ACCOUNT:
        status = jobspec_set_text(spec->account, sizeof spec->account, "--account", arg,
                                  JOBSPEC_NAME_CHARS, err, sizeof err);
        break;
    case OPT_DIRECTIVE: status = jobspec_add_directive(spec, arg, err, sizeof err); break;
    default: return NOT_THIS_KIND_OF_OPTION;
    }
    if (status < 0)
        return cli_usage_error("cluster", cluster_usage_text, "%s", err);
    return 0;
}

/* After parsing: the whole spec must make sense. */
static int check_job_spec(const jobspec *spec)
{
    char err[512];

    if (jobspec_validate(spec, err, sizeof err) < 0)
        return cli_usage_error("cluster", cluster_usage_text, "%s", err);
    if (spec->kind != JOB_SLURM && spec->kind != JOB_PBS &&
        (spec->partition[0] != '\0' || spec->time_limit[0] != '\0' || spec->account[0] != '\0' ||
         spec->n_directives > 0))
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "--partition, --time, --account and --batch-directive are for "
                               "--engines=slurm or pbs");
    if (spec->kind == JOB_LOCAL && (spec->ppn > 0 || spec->mpiexec_args[0] != '\0'))
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "--ppn and --mpiexec-args are not for --engines=local");
    return -1;
}

static int parse_start(int argc, char **argv, start_args *args)
{
    static const struct option options[] = {
        JOB_LONG_OPTIONS,
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"ippc-dir", required_argument, NULL, OPT_IPPC_DIR},
        {"ip", required_argument, NULL, OPT_IP},
        {"location", required_argument, NULL, OPT_LOCATION},
        {"port", required_argument, NULL, OPT_PORT},
        {"db", required_argument, NULL, OPT_DB},
        {"mpiexec", required_argument, NULL, OPT_MPIEXEC},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"daemonize", no_argument, NULL, OPT_DAEMONIZE},
        {"print-script", no_argument, NULL, OPT_PRINT_SCRIPT},
        {"runtime", required_argument, NULL, OPT_RUNTIME},
        {"real-mpi4py", no_argument, NULL, OPT_REAL_MPI4PY},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    long port;
    int option;
    int status;

    memset(args, 0, sizeof *args);
    jobspec_init(&args->spec);
    args->timeout = 60;
    args->runtime = "lua";
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, ":n:h", options, NULL)) != -1) {
        status = parse_job_option(option, optarg, &args->spec);
        if (status != NOT_THIS_KIND_OF_OPTION) {
            if (status != 0)
                return status;
            continue;
        }
        switch (option) {
        case OPT_PROFILE: args->profile = optarg; break;
        case OPT_IPPC_DIR: args->ippc_dir = optarg; break;
        case OPT_IP: args->ip = optarg; break;
        case OPT_LOCATION: args->location = optarg; break;
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
        case OPT_PRINT_SCRIPT: args->print_script = true; break;
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
    if (args->spec.engines == 0)
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "-n N (the number of engines) is required");
    if (args->print_script && args->spec.kind != JOB_SLURM && args->spec.kind != JOB_PBS)
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "--print-script is for --engines=slurm or pbs");
    /* Lua engines have no mpi4py to choose: refuse rather than ignore it. */
    if (args->real_mpi4py && strcmp(args->runtime, "python") != 0)
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "--real-mpi4py picks the mpi4py of Python engines: add "
                               "--runtime=python");
    return check_job_spec(&args->spec); /* -1: parsed, go on */
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

/* --print-script: the batch script start would submit, on stdout. */
static int print_script(const launch_options *launch)
{
    static char script[64 * 1024];
    char err[512];
    batch_context ctx = {
        .profile = launch->paths->name,
        .job_name = "j0",
        .engine_path = launch->engine_path,
        .engine_file = launch->paths->engine_file,
        .mpiexec_path = launch->mpiexec_path,
        .log_dir = launch->paths->log_dir,
        .runtime = launch->runtime && strcmp(launch->runtime, "lua") != 0 ? launch->runtime : NULL,
        .real_mpi4py = launch->real_mpi4py};

    if (batch_script(&launch->spec, &ctx, script, sizeof script, err, sizeof err) < 0) {
        msg_err("%s", err);
        return CLI_EXIT_FAIL;
    }
    fputs(script, stdout);
    return CLI_EXIT_OK;
}

/* Engines on other hosts cannot reach a controller on 127.0.0.1. */
static void warn_unreachable(const launch_options *launch)
{
    bool elsewhere = launch->spec.hostfile[0] != '\0' || launch->spec.kind == JOB_SLURM ||
                     launch->spec.kind == JOB_PBS;
    const char *ip = launch->ip != NULL ? launch->ip : "127.0.0.1";

    if (elsewhere && launch->location == NULL && strncmp(ip, "127.", 4) == 0)
        msg_err("warning: the controller binds %s, which engines on other hosts cannot reach; "
                "give --ip (e.g. 0.0.0.0 or this host's address) when engines run elsewhere",
                ip);
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
    launch.spec = args.spec;
    launch.ip = args.ip;
    launch.location = args.location;
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
    if (launch.spec.kind == JOB_MPI || launch.spec.kind == JOB_PBS) {
        if (find_mpiexec(args.mpiexec, launch.mpiexec_path, PATH_MAX) < 0)
            return CLI_EXIT_FAIL;
    } else if (args.mpiexec != NULL) {
        msg_err("note: --mpiexec is not used with --engines=%s",
                jobspec_kind_name(launch.spec.kind));
    } else if (find_mpiexec(NULL, launch.mpiexec_path, PATH_MAX) < 0) {
        launch.mpiexec_path[0] = '\0'; /* only `ippc cluster add --engines=mpi` needs it */
    }
    if (args.print_script)
        return print_script(&launch);
    warn_unreachable(&launch);
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

/* ---- add, remove, jobs: requests to the running launcher ------------------ */

/* Sends request (one JSON line) to the profile's launcher and returns its
 * parsed answer, or NULL (a message was printed). */
static json_t *ask_launcher(const profile_paths *paths, json_t *request, double timeout)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    char *line = json_dumps(request, JSON_COMPACT);
    static char answer[1 << 20];
    size_t used = 0;
    double deadline = proc_now() + timeout;
    json_error_t jerr;
    json_t *reply;
    int fd;

    json_decref(request);
    if (line == NULL) {
        msg_err("out of memory");
        return NULL;
    }
    if (strlen(paths->launcher_socket) >= sizeof address.sun_path) {
        msg_err("%s is too long for a socket path (use a shorter --ippc-dir)",
                paths->launcher_socket);
        free(line);
        return NULL;
    }
    memcpy(address.sun_path, paths->launcher_socket, strlen(paths->launcher_socket) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        msg_err("no launcher of profile \"%s\" answers on %s (%s): is a cluster started with "
                "`ippc cluster start` running?",
                paths->name, paths->launcher_socket, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(line);
        return NULL;
    }
    if (write(fd, line, strlen(line)) != (ssize_t)strlen(line) || write(fd, "\n", 1) != 1) {
        msg_err("cannot send the request to the launcher: %s", strerror(errno));
        close(fd);
        free(line);
        return NULL;
    }
    free(line);
    while (used < sizeof answer - 1) {
        struct pollfd readable = {.fd = fd, .events = POLLIN};
        ssize_t got;

        if (proc_now() >= deadline) {
            msg_err("the launcher did not answer within %g s", timeout);
            close(fd);
            return NULL;
        }
        if (poll(&readable, 1, 200) <= 0)
            continue;
        got = read(fd, answer + used, sizeof answer - 1 - used);
        if (got <= 0)
            break;
        used += (size_t)got;
        if (memchr(answer, '\n', used) != NULL)
            break;
    }
    close(fd);
    reply = json_loadb(answer, used, JSON_DISABLE_EOF_CHECK, &jerr);
    if (!json_is_object(reply)) {
        msg_err("the launcher's answer is not what ippc expects: %.200s", answer);
        json_decref(reply);
        return NULL;
    }
    return reply;
}

/* Prints the answer's error; CLI_EXIT_OK when it is ok. */
static int launcher_answer_status(const json_t *reply)
{
    if (json_is_true(json_object_get(reply, "ok")))
        return CLI_EXIT_OK;
    msg_err("%s", json_string_value(json_object_get(reply, "error")) != NULL
                      ? json_string_value(json_object_get(reply, "error"))
                      : "the launcher refused the request");
    return CLI_EXIT_FAIL;
}

typedef struct client_args {
    const char *profile;
    const char *ippc_dir;
    double timeout;
    const char *job;
    bool json;
} client_args;

static int parse_client_option(int option, client_args *args)
{
    switch (option) {
    case OPT_PROFILE: args->profile = optarg; return 0;
    case OPT_IPPC_DIR: args->ippc_dir = optarg; return 0;
    case OPT_TIMEOUT:
        if (!parse_seconds(optarg, &args->timeout))
            return cli_usage_error("cluster", cluster_usage_text,
                                   "--timeout needs a positive number of seconds, not '%s'",
                                   optarg);
        return 0;
    case OPT_JOB: args->job = optarg; return 0;
    case OPT_JSON: args->json = true; return 0;
    default: return NOT_THIS_KIND_OF_OPTION;
    }
}

static int cluster_add(int argc, char **argv)
{
    static const struct option options[] = {
        JOB_LONG_OPTIONS,
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"ippc-dir", required_argument, NULL, OPT_IPPC_DIR},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    client_args args = {.timeout = 60};
    jobspec spec;
    profile_paths paths;
    char err[PATH_MAX + 256];
    json_t *reply;
    int option;
    int status;

    jobspec_init(&spec);
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, ":n:h", options, NULL)) != -1) {
        if (option == 'h' || option == OPT_HELP) {
            fputs(cluster_usage_text, stdout);
            return CLI_EXIT_OK;
        }
        status = parse_job_option(option, optarg, &spec);
        if (status == NOT_THIS_KIND_OF_OPTION)
            status = parse_client_option(option, &args);
        if (status == NOT_THIS_KIND_OF_OPTION)
            return cli_bad_option("cluster", cluster_usage_text, option, argv[optind - 1]);
        if (status != 0)
            return status;
    }
    if (optind < argc)
        return cli_usage_error("cluster", cluster_usage_text, "unexpected argument '%s'",
                               argv[optind]);
    if (spec.engines == 0)
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "-n N (the number of engines) is required");
    status = check_job_spec(&spec);
    if (status >= 0)
        return status;
    if (profile_paths_init(&paths, args.ippc_dir, args.profile, err, sizeof err) < 0) {
        msg_err("%s", err);
        return CLI_EXIT_FAIL;
    }
    reply = ask_launcher(&paths,
                         json_pack("{s:s, s:o, s:f}", "op", "add", "spec", jobspec_to_json(&spec),
                                   "timeout", args.timeout),
                         args.timeout + 30);
    if (reply == NULL)
        return CLI_EXIT_FAIL;
    status = launcher_answer_status(reply);
    if (status == CLI_EXIT_OK) {
        char *ids = json_dumps(json_object_get(reply, "ids"), JSON_COMPACT);

        msg_out("job %s: %ld engine%s (%s), ids %s",
                json_string_value(json_object_get(reply, "job")), spec.engines,
                spec.engines == 1 ? "" : "s",
                json_string_value(json_object_get(reply, "description")) != NULL
                    ? json_string_value(json_object_get(reply, "description"))
                    : "",
                ids != NULL ? ids : "[]");
        free(ids);
    }
    json_decref(reply);
    return status;
}

static int cluster_remove_or_jobs(int argc, char **argv, bool remove)
{
    static const struct option options[] = {
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"ippc-dir", required_argument, NULL, OPT_IPPC_DIR},
        {"job", required_argument, NULL, OPT_JOB},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    client_args args = {.timeout = 60};
    profile_paths paths;
    char err[PATH_MAX + 256];
    json_t *reply;
    int option;
    int status;

    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        if (option == 'h' || option == OPT_HELP) {
            fputs(cluster_usage_text, stdout);
            return CLI_EXIT_OK;
        }
        status = parse_client_option(option, &args);
        if (status == NOT_THIS_KIND_OF_OPTION || (option == OPT_JOB && !remove) ||
            (option == OPT_JSON && remove))
            return cli_bad_option("cluster", cluster_usage_text, option, argv[optind - 1]);
        if (status != 0)
            return status;
    }
    if (optind < argc)
        return cli_usage_error("cluster", cluster_usage_text, "unexpected argument '%s'",
                               argv[optind]);
    if (remove && args.job == NULL)
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "--job J (a job's name or number) is required");
    if (profile_paths_init(&paths, args.ippc_dir, args.profile, err, sizeof err) < 0) {
        msg_err("%s", err);
        return CLI_EXIT_FAIL;
    }
    reply = ask_launcher(&paths,
                         remove ? json_pack("{s:s, s:s}", "op", "remove", "job", args.job)
                                : json_pack("{s:s}", "op", "jobs"),
                         args.timeout);
    if (reply == NULL)
        return CLI_EXIT_FAIL;
    status = launcher_answer_status(reply);
    if (status == CLI_EXIT_OK && remove) {
        msg_out("job %s removed", json_string_value(json_object_get(reply, "job")));
    } else if (status == CLI_EXIT_OK && args.json) {
        char *text = json_dumps(json_object_get(reply, "jobs"), JSON_INDENT(2));

        msg_out("%s", text != NULL ? text : "[]");
        free(text);
    } else if (status == CLI_EXIT_OK) {
        const json_t *job;
        size_t index;

        msg_out("%-5s %-6s %8s  %-8s %s", "JOB", "KIND", "ENGINES", "STATE", "DETAILS");
        json_array_foreach(json_object_get(reply, "jobs"), index, job) {
            const char *batch = json_string_value(json_object_get(job, "batch_id"));
            const char *why = json_string_value(json_object_get(job, "why"));

            char details[1024] = "";

            if (batch != NULL)
                snprintf(details, sizeof details, "%s job %s: %s",
                         strcmp(json_string_value(json_object_get(job, "kind")), "pbs") == 0
                             ? "PBS"
                             : "Slurm",
                         batch, json_string_value(json_object_get(job, "batch_state")));
            /* A batch job's end is its state, already said; other reasons are not. */
            if (why != NULL &&
                (batch == NULL ||
                 strcmp(json_string_value(json_object_get(job, "state")), "ended") != 0))
                snprintf(details + strlen(details), sizeof details - strlen(details), "%s%s",
                         details[0] != '\0' ? "; " : "", why);
            msg_out("%-5s %-6s %8lld  %-8s %s", json_string_value(json_object_get(job, "job")),
                    json_string_value(json_object_get(job, "kind")),
                    (long long)json_integer_value(json_object_get(job, "engines")),
                    json_string_value(json_object_get(job, "state")), details);
        }
    }
    json_decref(reply);
    return status;
}

int cluster_main(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("cluster", cluster_usage_text, "%s",
                               "missing subcommand: start, add, remove, jobs or stop");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(cluster_usage_text, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "start") == 0)
        return cluster_start(argc - 1, argv + 1);
    if (strcmp(argv[1], "stop") == 0)
        return cluster_stop(argc - 1, argv + 1);
    if (strcmp(argv[1], "add") == 0)
        return cluster_add(argc - 1, argv + 1);
    if (strcmp(argv[1], "remove") == 0)
        return cluster_remove_or_jobs(argc - 1, argv + 1, true);
    if (strcmp(argv[1], "jobs") == 0)
        return cluster_remove_or_jobs(argc - 1, argv + 1, false);
    return cli_usage_error("cluster", cluster_usage_text,
                           "unknown subcommand '%s' (use start, add, remove, jobs or stop)",
                           argv[1]);
}
