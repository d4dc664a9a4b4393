/* status.c — `ippc status`: the engines of a running cluster, as a table. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "jsonout.h"
#include "msg.h"
#include "profile.h"
#include "rest.h"
#include "roster.h"

static const char status_usage_text[] =
    "usage: ippc status [options]\n"
    "\n"
    "List the engines of a running cluster: id, MPI rank/size, job, host, pid, state,\n"
    "runtime (lua or python).\n"
    "      --profile P     cluster profile (default: default)\n"
    "      --ippc-dir DIR  where profiles live (default: $IPPC_DIR or ~/.ippc)\n"
    "      --file PATH     connection file to use instead of the profile's\n"
    "      --json          print the controller's JSON instead of a table\n";

static void print_table(const connection_info *info, const roster *r)
{
    size_t live = roster_live_count(r);
    int host_width = 4;

    for (size_t i = 0; i < r->count; i++) {
        int len = (int)strlen(r->engines[i].host);

        if (len > host_width)
            host_width = len;
    }
    printf("cluster \"%s\" at %s (controller pid %ld): %zu engine%s, %zu live\n",
           info->profile[0] != '\0' ? info->profile : "?", info->url, (long)info->pid, r->count,
           r->count == 1 ? "" : "s", live);
    if (r->count == 0)
        return;
    printf("%4s  %-9s  %-10s  %-*s  %8s  %-5s  %s\n", "ID", "RANK", "JOB", host_width, "HOST",
           "PID", "STATE", "RUNTIME");
    for (size_t i = 0; i < r->count; i++) {
        const roster_engine *engine = &r->engines[i];
        char rank[48];

        snprintf(rank, sizeof rank, "%ld/%ld", engine->rank, engine->size);
        printf("%4ld  %-9s  %-10.10s  %-*s  %8ld  %-5s  %s\n", engine->id, rank, engine->job,
               host_width, engine->host, engine->pid, engine->state, engine->runtime);
    }
}

int status_main(int argc, char **argv)
{
    enum { OPT_PROFILE = 256, OPT_IPPC_DIR, OPT_FILE, OPT_JSON, OPT_HELP };
    static const struct option options[] = {
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"ippc-dir", required_argument, NULL, OPT_IPPC_DIR},
        {"file", required_argument, NULL, OPT_FILE},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *profile = NULL;
    const char *ippc_dir = NULL;
    const char *file = NULL;
    bool as_json = false;
    connection_info info;
    rest_client client;
    rest_reply reply = {0};
    roster engines = {0};
    char err[1024];
    int status = CLI_EXIT_FAIL;
    int option;

    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        switch (option) {
        case OPT_PROFILE: profile = optarg; break;
        case OPT_IPPC_DIR: ippc_dir = optarg; break;
        case OPT_FILE: file = optarg; break;
        case OPT_JSON: as_json = true; break;
        case 'h':
        case OPT_HELP: fputs(status_usage_text, stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("status", status_usage_text, option, argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("status", status_usage_text, "unexpected argument '%s'",
                               argv[optind]);

    if (client_connect(file, ippc_dir, profile, &info, &client) < 0)
        return CLI_EXIT_FAIL;
    if (rest_call(&client, "GET", "/api/v1/engines", NULL, 10000, &reply, err, sizeof err) < 0) {
        client_report_unreachable(&info, profile, err);
        goto done;
    }
    if (reply.http_status != 200) {
        rest_describe_error(&reply, err, sizeof err);
        msg_err("GET /api/v1/engines failed: %s", err);
        goto done;
    }
    if (as_json) {
        jsonout_dumpf(reply.json, stdout, JSON_INDENT(2));
        putchar('\n');
        status = CLI_EXIT_OK;
        goto done;
    }
    if (roster_parse(reply.json, &engines, err, sizeof err) < 0) {
        msg_err("%s", err);
        goto done;
    }
    print_table(&info, &engines);
    status = CLI_EXIT_OK;

done:
    roster_free(&engines);
    rest_reply_free(&reply);
    rest_client_free(&client);
    return status;
}
