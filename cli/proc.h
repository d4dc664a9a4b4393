/* proc.h — starting, watching and identifying processes for the launcher.
 *
 * proc_spawn() is fork + exec with the few things a supervisor needs: the
 * child's own process group (so the terminal's Ctrl-C reaches only the
 * launcher, which then stops everything in order), redirected stdio, an
 * optional parent-death signal, the signal mask restored, and exec failures
 * reported to the caller instead of surfacing as a mysterious exit 127.
 *
 * The other functions answer questions about pids the launcher did not start
 * itself (MPI ranks, a launcher or controller named in a file): "is it still
 * running?" (zombies count as gone) and "is it really that program?" (pids get
 * reused, so a stale file must never make us signal a stranger).
 *
 * Everything here is for the single-threaded ippc process.
 */
#ifndef IPPC_CLI_PROC_H
#define IPPC_CLI_PROC_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct proc_options {
    int stdout_fd;           /* -1: inherit */
    int stderr_fd;           /* -1: inherit */
    pid_t process_group;     /* 0: a new group led by the child; >0: join it */
    int parent_death_signal; /* 0: none; else sent when the launcher dies */
    const sigset_t *sigmask; /* the child's signal mask (NULL: unchanged) */
} proc_options;

/* Starts argv[0] (a path) with argv; stdin is /dev/null.  Returns the child's
 * pid, or -1 with a message in err when fork or exec failed. */
pid_t proc_spawn(char *const argv[], const proc_options *options, char *err, size_t err_len);

/* True while pid exists and is not a zombie. */
bool proc_is_running(pid_t pid);

/* True when pid's executable or argv[0] is named program (a prefix match on
 * the base name, so "ippc-engine" matches "/x/ippc-engine (deleted)"); also
 * true when /proc cannot tell (another user's process). */
bool proc_runs_program(pid_t pid, const char *program);

/* "exited with status 1", "was killed by signal 9 (Killed)". */
void proc_describe_status(int status, char *buf, size_t len);

/* Absolute path of name: as given when it contains a '/', else the first
 * executable match on $PATH.  Returns 0, or -1 when there is none. */
int proc_find_program(const char *name, char *out, size_t out_len);

/* The directory holding the running executable (from /proc/self/exe). */
int proc_self_dir(char *out, size_t out_len);

/* Seconds on the monotonic clock. */
double proc_now(void);

/* argv joined with blanks into out (len bytes, truncated when longer), for
 * messages that say what was started. */
void proc_format_command(char *const argv[], char *out, size_t len);

#endif
