/* launcher.h — the supervising process behind `ippc cluster start`.
 *
 * launcher_run() starts a controller and a first engine job (job.h: mpiexec,
 * local engines, or a Slurm/PBS batch job), waits until its engines are
 * registered, checks the MPI world they form, prints how to reach the cluster
 * and then supervises it until SIGINT/SIGTERM/SIGHUP or until the controller
 * dies.  While it supervises, `ippc cluster add/remove/jobs` talk to it over
 * its control socket (profile.h: pid/launcher.sock; jobspec.h has the
 * protocol): more engine jobs on the same controller, each its own MPI world.
 * Whatever happens, before it returns every process it started is gone: the
 * controller, each mpiexec (and its process group) or local engine, every
 * engine pid learned at registration (SIGKILL to mpiexec leaves MPI ranks
 * running, so a forced stop kills the ranks by pid), and each batch job still
 * queued or running is cancelled.
 *
 * It blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD and waits for them with
 * sigtimedwait(), so signals are plain events in its loops, never handlers.
 */
#ifndef IPPC_CLI_LAUNCHER_H
#define IPPC_CLI_LAUNCHER_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>

#include "jobspec.h"
#include "profile.h"

typedef struct launch_options {
    const profile_paths *paths;
    jobspec spec;         /* the first engine job */
    const char *ip;       /* NULL: the controller's default */
    const char *location; /* NULL: the controller's default (from --ip) */
    const char *port;     /* NULL: the controller's default (0: a free port) */
    const char *db;       /* NULL: the controller's default */
    double timeout;       /* seconds for the controller and a job's engines to come up */
    const char *runtime;  /* every job's engines: "lua" or "python" (--runtime) */
    bool real_mpi4py;     /* python: every job's engines get --real-mpi4py */
    char controller_path[PATH_MAX];
    char engine_path[PATH_MAX];
    char mpiexec_path[PATH_MAX]; /* JOB_MPI, JOB_PBS; "" if not found */

    /* Daemon mode: children's output goes to log files, and once the cluster is
     * up the launcher points its stdio at launcher_log, writes one status byte
     * to ready_fd and closes it. */
    bool daemonize;
    FILE *launcher_log;
    int ready_fd;
} launch_options;

/* Returns the exit status for `ippc cluster start`: 0 after a requested stop
 * of a cluster that came up, 1 when it failed to come up, was interrupted
 * while starting, or when the controller died by itself. */
int launcher_run(const launch_options *options);

#endif
