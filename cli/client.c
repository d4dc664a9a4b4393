/* client.c — finding and reaching a running cluster, for px and status. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "msg.h"
#include "profile.h"
#include "proc.h"
#include "rest.h"

int client_connect(const char *file, const char *ippc_dir, const char *profile,
                   connection_info *info, rest_client *client)
{
    profile_paths paths;
    char err[PATH_MAX + 256];

    if (file == NULL) {
        if (profile_paths_init(&paths, ippc_dir, profile, err, sizeof err) < 0) {
            msg_err("%s", err);
            return -1;
        }
        file = paths.client_file;
    }
    switch (connection_read(file, info, err, sizeof err)) {
    case 0: break;
    case -1:
        if (profile != NULL || ippc_dir != NULL || strstr(file, "profile_") != NULL)
            msg_err("no cluster is running for profile \"%s\" (no connection file %s); "
                    "start one with: ippc cluster start -n 4%s%s",
                    profile != NULL ? profile : "default", file,
                    profile != NULL ? " --profile " : "", profile != NULL ? profile : "");
        else
            msg_err("no connection file %s", file);
        return -1;
    default: msg_err("%s", err); return -1;
    }
    if (rest_client_init(client, info->url, info->token) < 0) {
        msg_err("cannot set up an HTTP client (libcurl)");
        return -1;
    }
    return 0;
}

void client_report_unreachable(const connection_info *info, const char *profile, const char *error)
{
    msg_err("cannot reach the controller at %s: %s", info->url, error);
    if (info->pid > 0 && !proc_is_running(info->pid))
        msg_err("its process (pid %ld) is gone: the connection file is stale; start a "
                "cluster with: ippc cluster start -n 4%s%s",
                (long)info->pid, profile != NULL ? " --profile " : "",
                profile != NULL ? profile : "");
}
