/* pidfile.h — the launcher's pid files (where they live: profile.h). */
#ifndef IPPC_CLI_PIDFILE_H
#define IPPC_CLI_PIDFILE_H

#include <stddef.h>
#include <sys/types.h>

/* pid in a pid file; 0 when the file is missing or holds no valid pid. */
pid_t pidfile_read(const char *path);

/* Writes pid atomically (temporary file + rename), mode 0644. */
int pidfile_write(const char *path, pid_t pid, char *err, size_t err_len);

/* Removes the pid file only if it still holds pid (a successor may own it). */
void pidfile_remove_if_owned(const char *path, pid_t pid);

#endif
