/* profile.h — the one place that knows where a profile's files live (the
 * controller, the engine and the `ippc` launcher all use it).
 *
 * A profile NAME (letters, digits, '_', '-', '.'; not starting with '.' or
 * '-') is a folder $IPPC_DIR/profile_NAME (IPPC_DIR: --ippc-dir, else
 * $IPPC_DIR, else ~/.ippc) with
 *   security/ippc-client.json   written by the controller: url, token, pid...
 *   security/ippc-engine.json   written by the controller: engine url and key
 *   tasks.db                    the controller's task store (SQLite)
 *   controller.lock             flock()ed by the controller for its whole life
 *   log/                        launcher.log, controller.log, engines.log
 *   pid/launcher.pid            the supervising `ippc cluster start` process
 *   pid/launcher.lock           flock()ed by that process for its whole life
 *   pid/launcher.sock           that process's control socket (ippc cluster
 *                               add/remove/jobs; AF_UNIX, in a 0700 folder)
 *   jobs/                       the batch scripts it wrote (Slurm, PBS)
 * All paths are absolute (a daemonized launcher changes directory to /).
 * Thread-safety: pure except for reading the environment and the cwd.
 */
#ifndef IPPC_PROFILE_H
#define IPPC_PROFILE_H

#include <stdbool.h>

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#define PROFILE_NAME_MAX 64

typedef struct profile_paths {
    char name[PROFILE_NAME_MAX];
    char ippc_dir[PATH_MAX];
    char dir[PATH_MAX];
    char security_dir[PATH_MAX];
    char log_dir[PATH_MAX];
    char pid_dir[PATH_MAX];
    char client_file[PATH_MAX];
    char engine_file[PATH_MAX];
    char tasks_db_file[PATH_MAX];
    char controller_lock_file[PATH_MAX];
    char launcher_pid_file[PATH_MAX];
    char launcher_lock_file[PATH_MAX];
    char launcher_socket[PATH_MAX];
    char jobs_dir[PATH_MAX];
    char launcher_log[PATH_MAX];
    char controller_log[PATH_MAX];
    char engines_log[PATH_MAX];
} profile_paths;

/* Whether name is a valid profile name (see the top). */
bool profile_name_valid(const char *name);

/* Fills paths for profile name (NULL: "default") under ippc_dir (NULL: the
 * default).  Returns 0, or -1 with a message in err (bad name, no home). */
int profile_paths_init(profile_paths *paths, const char *ippc_dir, const char *name, char *err,
                       size_t err_len);

/* Creates the profile's folders (mode 0700).  Returns 0 or -1 with err. */
int profile_make_dirs(const profile_paths *paths, char *err, size_t err_len);

/* Creates only the security folder (and its parents), mode 0700: what the
 * controller needs.  Returns 0 or -1 with err. */
int profile_make_security_dir(const profile_paths *paths, char *err, size_t err_len);

/* The fields of ippc-client.json that ippc uses. */
typedef struct connection_info {
    char url[512];
    char ws_url[512];
    char token[512];
    char profile[PROFILE_NAME_MAX];
    char engine_file[PATH_MAX]; /* empty when the file does not say */
    pid_t pid;                  /* the controller's; 0 when absent */
} connection_info;

/* Reads a connection file.  Returns 0; -1 when it does not exist (errno
 * ENOENT); -2 when it is unreadable or not a valid connection file (err). */
int connection_read(const char *path, connection_info *info, char *err, size_t err_len);

/* The fields of ippc-engine.json (written by the controller, read by
 * ippc-engine --file). */
typedef struct engine_connection_info {
    char url[512]; /* ws://HOST:PORT/engine */
    char key[256];
} engine_connection_info;

/* Reads an engine connection file.  Returns 0, or -1 with a message in err
 * (unreadable, not JSON, no "url" or "key"). */
int engine_connection_read(const char *path, engine_connection_info *info, char *err,
                           size_t err_len);

#endif
