/* proc.c — process helpers for the launcher (see proc.h).
 *
 * Relies on Linux: /proc/PID/{exe,cmdline,stat} and prctl(PR_SET_PDEATHSIG).
 * Between fork and exec the child calls only async-signal-safe functions.
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Child side of proc_spawn: on any failure, write errno to report_fd and die. */
static void spawn_child(char *const argv[], const proc_options *options, pid_t parent,
                        int report_fd)
{
    int saved;
    int null_fd;

    /* Joining a group fails when its leader is already gone: lead our own
     * then (the launcher also signals every child by pid). */
    if (setpgid(0, options->process_group) < 0 && setpgid(0, 0) < 0)
        goto fail;
    if (options->parent_death_signal != 0) {
        if (prctl(PR_SET_PDEATHSIG, options->parent_death_signal) < 0)
            goto fail;
        /* The launcher may have died before prctl: then nobody would signal. */
        if (getppid() != parent)
            _exit(1);
    }
    null_fd = open("/dev/null", O_RDONLY);
    if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0)
        goto fail;
    if (null_fd != STDIN_FILENO)
        close(null_fd);
    if (options->stdout_fd >= 0 && dup2(options->stdout_fd, STDOUT_FILENO) < 0)
        goto fail;
    if (options->stderr_fd >= 0 && dup2(options->stderr_fd, STDERR_FILENO) < 0)
        goto fail;
    /* The launcher ignores SIGPIPE and blocks the signals it waits for;
     * neither must leak into the programs it starts. */
    signal(SIGPIPE, SIG_DFL);
    if (options->sigmask != NULL)
        sigprocmask(SIG_SETMASK, options->sigmask, NULL);
    execv(argv[0], argv);
fail:
    saved = errno;
    if (write(report_fd, &saved, sizeof saved) < 0) {
        /* nothing more to do: the parent will see exit status 127 */
    }
    _exit(127);
}

pid_t proc_spawn(char *const argv[], const proc_options *options, char *err, size_t err_len)
{
    int report[2];
    int child_errno = 0;
    ssize_t got;
    pid_t parent = getpid();
    pid_t pid;

    if (pipe2(report, O_CLOEXEC) < 0) {
        snprintf(err, err_len, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        snprintf(err, err_len, "fork: %s", strerror(errno));
        close(report[0]);
        close(report[1]);
        return -1;
    }
    if (pid == 0) {
        close(report[0]);
        spawn_child(argv, options, parent, report[1]);
    }
    close(report[1]);
    /* Set the group from both sides so it holds before either proceeds. */
    setpgid(pid, options->process_group == 0 ? pid : options->process_group);
    do {
        got = read(report[0], &child_errno, sizeof child_errno);
    } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof child_errno) {
        waitpid(pid, NULL, 0);
        snprintf(err, err_len, "cannot run %s: %s", argv[0], strerror(child_errno));
        return -1;
    }
    return pid;
}

bool proc_is_running(pid_t pid)
{
    char path[64];
    char stat_line[512];
    char *close_paren;
    FILE *file;
    bool zombie = false;

    if (pid <= 0)
        return false;
    if (kill(pid, 0) < 0 && errno != EPERM)
        return false;
    /* kill() succeeds on zombies; their state letter follows "(comm) ". */
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    file = fopen(path, "r");
    if (file == NULL)
        return errno != ENOENT;
    if (fgets(stat_line, sizeof stat_line, file) != NULL) {
        close_paren = strrchr(stat_line, ')');
        if (close_paren != NULL && close_paren[1] == ' ')
            zombie = close_paren[2] == 'Z' || close_paren[2] == 'X';
    }
    (void)fclose(file); /* read only: nothing to lose */
    return !zombie;
}

static bool base_name_starts_with(const char *path, const char *program)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;

    return strncmp(base, program, strlen(program)) == 0;
}

bool proc_runs_program(pid_t pid, const char *program)
{
    char path[64];
    char target[PATH_MAX];
    char argv0[PATH_MAX];
    ssize_t len;
    size_t got;
    FILE *file;
    bool known = false;

    snprintf(path, sizeof path, "/proc/%ld/exe", (long)pid);
    len = readlink(path, target, sizeof target - 1);
    if (len > 0) {
        target[len] = '\0';
        known = true;
        if (base_name_starts_with(target, program))
            return true;
    }
    snprintf(path, sizeof path, "/proc/%ld/cmdline", (long)pid);
    file = fopen(path, "r");
    if (file != NULL) {
        got = fread(argv0, 1, sizeof argv0 - 1, file);
        (void)fclose(file); /* read only: nothing to lose */
        argv0[got] = '\0';  /* cmdline is NUL-separated: this keeps argv[0] */
        if (got > 0) {
            known = true;
            if (base_name_starts_with(argv0, program))
                return true;
        }
    }
    return !known;
}

void proc_describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "ended with wait status %d", status);
}

static bool is_executable_file(const char *path)
{
    struct stat info;

    return stat(path, &info) == 0 && S_ISREG(info.st_mode) && access(path, X_OK) == 0;
}

int proc_find_program(const char *name, char *out, size_t out_len)
{
    const char *path_env = getenv("PATH");
    const char *dir;
    const char *end;
    char candidate[PATH_MAX];
    int written;

    if (name[0] == '\0')
        return -1;
    if (strchr(name, '/') != NULL) {
        if (!is_executable_file(name))
            return -1;
        if (name[0] == '/' || realpath(name, candidate) == NULL)
            written = snprintf(out, out_len, "%s", name);
        else
            written = snprintf(out, out_len, "%s", candidate);
        return written < 0 || (size_t)written >= out_len ? -1 : 0;
    }
    if (path_env == NULL)
        path_env = "/usr/local/bin:/usr/bin:/bin";
    for (dir = path_env; *dir != '\0'; dir = *end != '\0' ? end + 1 : end) {
        end = strchrnul(dir, ':');
        /* An empty PATH entry means the current directory. */
        if (end == dir)
            written = snprintf(candidate, sizeof candidate, "./%s", name);
        else
            written = snprintf(candidate, sizeof candidate, "%.*s/%s", (int)(end - dir), dir, name);
        if (written < 0 || (size_t)written >= sizeof candidate)
            continue;
        if (is_executable_file(candidate)) {
            written = snprintf(out, out_len, "%s", candidate);
            return written < 0 || (size_t)written >= out_len ? -1 : 0;
        }
    }
    return -1;
}

int proc_self_dir(char *out, size_t out_len)
{
    ssize_t len = readlink("/proc/self/exe", out, out_len - 1);
    char *slash;

    if (len <= 0)
        return -1;
    out[len] = '\0';
    slash = strrchr(out, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    return 0;
}

double proc_now(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

void proc_format_command(char *const argv[], char *out, size_t len)
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
