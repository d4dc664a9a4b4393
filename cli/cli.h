/* cli.h — the subcommands of the ippc command and their shared conventions.
 *
 * Each subcommand gets argv starting at its own name (argv[0] = "start",
 * "px", ...) and returns the process exit status:
 *   0  success
 *   1  the operation failed (a message was printed)
 *   2  bad usage (usage printed on stderr)
 */
#ifndef IPPC_CLI_CLI_H
#define IPPC_CLI_CLI_H

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

/* ippc cluster {start,stop} ... (cluster.c) */
int cluster_main(int argc, char **argv);

/* ippc px [--targets T] CODE (px.c) */
int px_main(int argc, char **argv);

/* ippc status (status.c) */
int status_main(int argc, char **argv);

/* ippc watch [--topics ...] [--json]: the live event stream (watch.c) */
int watch_main(int argc, char **argv);

/* Shared by the client commands (client.c): open the REST client for the
 * cluster named by --file or --profile/--ippc-dir.  Prints a clear message and
 * returns -1 when there is no running cluster to talk to. */
struct rest_client;
struct connection_info;
int client_connect(const char *file, const char *ippc_dir, const char *profile,
                   struct connection_info *info, struct rest_client *client);

/* Prints a transport failure of a call to the controller, with a hint. */
void client_report_unreachable(const struct connection_info *info, const char *profile,
                               const char *error);

#endif
