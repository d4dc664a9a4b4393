/* pidfile.c — pid files (see pidfile.h). */
#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

pid_t pidfile_read(const char *path)
{
    FILE *file = fopen(path, "r");
    long pid = 0;

    if (file == NULL)
        return 0;
    char line[32];
    char *end = NULL;
    if (fgets(line, sizeof line, file)) {
        errno = 0;
        pid = strtol(line, &end, 10);
        if (end == line || errno != 0 || (*end != '\0' && *end != '\n'))
            pid = 0;
    }
    if (pid <= 0 || pid > INT_MAX)
        pid = 0;
    (void)fclose(file); /* opened for reading: nothing to lose */
    return (pid_t)pid;
}

int pidfile_write(const char *path, pid_t pid, char *err, size_t err_len)
{
    char temporary[PATH_MAX + 32];
    char text[32];
    int fd;
    int len;

    if (snprintf(temporary, sizeof temporary, "%s.%ld.tmp", path, (long)getpid()) >=
        (int)sizeof temporary) {
        snprintf(err, err_len, "pid file path too long");
        return -1;
    }
    len = snprintf(text, sizeof text, "%ld\n", (long)pid);
    fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, text, (size_t)len) != len || fsync(fd) < 0) {
        snprintf(err, err_len, "cannot write %s: %s", temporary, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(temporary);
        }
        return -1;
    }
    close(fd);
    if (rename(temporary, path) < 0) {
        snprintf(err, err_len, "cannot rename %s to %s: %s", temporary, path, strerror(errno));
        unlink(temporary);
        return -1;
    }
    return 0;
}

void pidfile_remove_if_owned(const char *path, pid_t pid)
{
    if (pidfile_read(path) == pid)
        unlink(path);
}
