/* main.c — the ippc command: launcher (`ippc cluster`) and command-line client
 * (`ippc px`, `ippc status`, `ippc watch`) of an ippc cluster.
 *
 * This file only dispatches to the subcommands (cli.h) and prints the top-level
 * usage; every subcommand parses its own options.  Exit statuses: 0 success,
 * 1 failure (a message was printed), 2 bad usage (usage on stderr).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "msg.h"
#include "proto.h"
#include "rest.h"

static const char usage_text[] =
    "usage: ippc <command> [options]\n"
    "\n"
    "Start and use an ippc cluster: a controller (HTTP/JSON + WebSocket) and MPI\n"
    "engines running Lua.\n"
    "\n"
    "commands:\n"
    "  cluster start -n N [--engines=mpi|local|slurm|pbs] [--daemonize] ...\n"
    "                    start a controller and N engines; Ctrl-C stops them\n"
    "  cluster add -n N [--engines=mpi|local|slurm|pbs] ...\n"
    "                    another engine job (its own MPI world) on a running cluster\n"
    "  cluster jobs | cluster remove --job J\n"
    "                    list the cluster's engine jobs / stop one\n"
    "  cluster stop [--profile P]\n"
    "                    stop a cluster (e.g. one started with --daemonize)\n"
    "  px [--targets T] CODE\n"
    "                    execute Lua code on the engines and print their output\n"
    "  status            list the engines of a running cluster\n"
    "  watch [--topics engines,tasks,stdout] [--json] ...\n"
    "                    print the live events of a cluster (engines, tasks, output)\n"
    "\n"
    "options:\n"
    "  -h, --help        this help; `ippc <command> --help` for a command's options\n"
    "  -V, --version     the version of ippc\n"
    "\n"
    "example:\n"
    "  ippc cluster start -n 4 --daemonize\n"
    "  ippc px 'print(mpi.rank())'\n"
    "  ippc cluster stop\n";

int main(int argc, char **argv)
{
    const char *command;

    if (argc < 2)
        return cli_usage_error(NULL, usage_text, "%s", "missing command");
    command = argv[1];
    if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 ||
        strcmp(command, "help") == 0) {
        fputs(usage_text, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(command, "--version") == 0 || strcmp(command, "-V") == 0 ||
        strcmp(command, "version") == 0) {
        printf("ippc %s\n", IPPC_VERSION);
        return CLI_EXIT_OK;
    }
    if (rest_global_init() < 0) {
        msg_err("cannot initialise libcurl");
        return CLI_EXIT_FAIL;
    }
    if (strcmp(command, "cluster") == 0)
        return cluster_main(argc - 1, argv + 1);
    if (strcmp(command, "px") == 0)
        return px_main(argc - 1, argv + 1);
    if (strcmp(command, "status") == 0)
        return status_main(argc - 1, argv + 1);
    if (strcmp(command, "watch") == 0)
        return watch_main(argc - 1, argv + 1);
    if (command[0] == '-')
        return cli_usage_error(NULL, usage_text, "unknown option '%s'", command);
    return cli_usage_error(NULL, usage_text, "unknown command '%s'", command);
}
