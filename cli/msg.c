/* msg.c — terminal and log output of the ippc command (see msg.h). */
#include "msg.h"

#include "cli.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

static FILE *mirror;
static bool timestamps;

void msg_set_mirror(FILE *log)
{
    mirror = log;
}

void msg_set_timestamps(bool on)
{
    timestamps = on;
}

static void stamp(FILE *out)
{
    struct timespec now;
    struct tm local;
    char text[32];

    clock_gettime(CLOCK_REALTIME, &now);
    localtime_r(&now.tv_sec, &local);
    strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &local);
    fprintf(out, "%s.%03ld ", text, now.tv_nsec / 1000000);
}

/* Writes text as lines; with stamped, every line gets the time. */
static void emit(FILE *out, const char *prefix, const char *text, bool stamped)
{
    const char *line = text;

    do {
        size_t len = strcspn(line, "\n");

        if (stamped)
            stamp(out);
        if (line == text)
            fputs(prefix, out);
        (void)fwrite(line, 1, len, out); /* as fputs: a message has nowhere else to go */
        fputc('\n', out);
        line += len;
        if (*line == '\n')
            line++;
    } while (*line != '\0');
    fflush(out);
}

static void say(FILE *out, const char *prefix, const char *fmt, va_list args)
{
    char text[8192];

    /* Longer messages are cut: they are for people, and 8 KiB is plenty. */
    if (vsnprintf(text, sizeof text, fmt, args) < 0)
        return;
    emit(out, prefix, text, timestamps);
    if (mirror != NULL && mirror != out)
        emit(mirror, prefix, text, true);
}

void msg_out(const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    say(stdout, "", fmt, args);
    va_end(args);
}

void msg_err(const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    say(stderr, "ippc: ", fmt, args);
    va_end(args);
}

int cli_usage_error(const char *command, const char *usage_text, const char *fmt, const char *arg)
{
    if (command != NULL)
        fprintf(stderr, "ippc %s: ", command);
    else
        fputs("ippc: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n\n", stderr);
    fputs(usage_text, stderr);
    return CLI_EXIT_USAGE;
}

int cli_bad_option(const char *command, const char *usage_text, int option, const char *text)
{
    if (option == ':')
        return cli_usage_error(command, usage_text, "option '%s' needs a value", text);
    return cli_usage_error(command, usage_text, "unknown option '%s'", text);
}
