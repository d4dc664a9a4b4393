/* msg.h — what ippc says to the person at the terminal.
 *
 * msg_out() writes results to stdout (the cluster banner, px output, "stopped");
 * msg_err() writes "ippc: ..." lines (progress, warnings, errors) to stderr.
 * A daemonizing launcher mirrors both into its log file while it still has a
 * terminal (msg_set_mirror), and once detached, when stdout and stderr are the
 * log itself, stamps every line with the time (msg_set_timestamps).
 *
 * Thread-safety: the launcher and the client commands are single-threaded;
 * these functions keep process-wide state and are not meant for threads.
 */
#ifndef IPPC_CLI_MSG_H
#define IPPC_CLI_MSG_H

#include <stdbool.h>
#include <stdio.h>

/* A line (or lines) to stdout.  A trailing newline is added when missing. */
void msg_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "ippc: " + message to stderr.  A trailing newline is added when missing. */
void msg_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Also copy every message into log (not owned; NULL stops mirroring). */
void msg_set_mirror(FILE *log);

/* Prefix each line with a local timestamp (for log files). */
void msg_set_timestamps(bool on);

/* A usage error of a command: "ippc COMMAND: " (just "ippc: " when command is
 * NULL), then fmt with its one string argument, a blank line and usage_text,
 * all on stderr.  Returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *command, const char *usage_text, const char *fmt, const char *arg);

/* Maps getopt's complaints (optstring starting with ':') about the option
 * text (argv[optind - 1]) to usage errors: "option '...' needs a value" when
 * option is ':', else "unknown option '...'".  Returns CLI_EXIT_USAGE. */
int cli_bad_option(const char *command, const char *usage_text, int option, const char *text);

#endif
