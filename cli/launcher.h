/* launcher.h — the supervising process behind `ippc cluster start`.
 *
 * launcher_run() starts a controller and N engines, waits until all N are
 * registered, checks the MPI world they form, prints how to reach the cluster
 * and then supervises it until SIGINT/SIGTERM/SIGHUP or until the controller
 * dies.  Whatever happens, before it returns every process it started is gone:
 * the controller, mpiexec (and its process group) or the local engines, and
 * every engine pid learned at registration (SIGKILL to mpiexec leaves MPI ranks
 * running, so a forced stop kills the ranks by pid).
 *
 * It blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD and waits for them with
 * sigtimedwait(), so signals are plain events in its loops, never handlers.
 */
#ifndef IPPC_CLI_LAUNCHER_H
#define IPPC_CLI_LAUNCHER_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>

#include "profile.h"

typedef enum launch_kind { LAUNCH_MPI, LAUNCH_LOCAL } launch_kind;

typedef struct launch_options {
    const profile_paths *paths;
    long engines; /* N >= 1 */
    launch_kind kind;
    const char *ip;      /* NULL: the controller's default */
    const char *port;    /* NULL: the controller's default (0: a free port) */
    const char *db;      /* NULL: the controller's default */
    double timeout;      /* seconds for the controller and all N engines to come up */
    const char *runtime; /* the engines' language: "lua" or "python" (--runtime) */
    bool real_mpi4py;    /* python: engines get --real-mpi4py (an installed mpi4py) */
    char controller_path[PATH_MAX];
    char engine_path[PATH_MAX];
    char mpiexec_path[PATH_MAX]; /* LAUNCH_MPI only */

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
