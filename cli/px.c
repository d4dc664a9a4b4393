/* px.c — `ippc px CODE`: execute Lua code on a view and print the results the
 * way ipyparallel's %px does:
 *   [stdout:0] one line of output
 *   [stdout:1]
 *   several
 *   lines
 *   [0:RuntimeError] message      (+ the traceback, on stderr)
 * Exit status 1 when any engine failed or the request did. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "msg.h"
#include "buf.h"
#include "profile.h"
#include "rest.h"

static const char px_usage_text[] =
    "usage: ippc px [options] [--] CODE...\n"
    "\n"
    "Execute Lua CODE on the engines of a running cluster and print each engine's\n"
    "output, like ipyparallel's %px.  Several CODE words are joined with spaces;\n"
    "CODE '-' reads the code from stdin.  Exit status 1 if any engine failed.\n"
    "  -t, --targets T     engines: all (default), 3, 0,2,5, 0:4, 1::2, -1\n"
    "      --profile P     cluster profile (default: default)\n"
    "      --ippc-dir DIR  where profiles live (default: $IPPC_DIR or ~/.ippc)\n"
    "      --file PATH     connection file to use instead of the profile's\n";

/* ipyparallel's _display_stream: the prefix goes on a line of its own when
 * the text has several lines. */
static void print_stream(FILE *out, const char *kind, long engine, const char *text)
{
    size_t len = strlen(text);
    bool ends_with_newline = len > 0 && text[len - 1] == '\n';
    size_t newlines = 0;

    if (len == 0)
        return;
    for (const char *c = text; *c != '\0'; c++)
        newlines += *c == '\n';
    fprintf(out, "[%s:%ld] ", kind, engine);
    if (newlines > (size_t)ends_with_newline && text[0] != '\n')
        fputc('\n', out);
    fputs(text, out);
    if (!ends_with_newline)
        fputc('\n', out);
}

/* Prints one engine's result; returns true when it failed. */
static bool print_result(const json_t *result)
{
    long engine = (long)json_integer_value(json_object_get(result, "engine"));
    const char *status = json_string_value(json_object_get(result, "status"));
    const char *text;
    const json_t *traceback;
    const json_t *line;
    size_t index;
    bool failed = status == NULL || strcmp(status, "ok") != 0;

    text = json_string_value(json_object_get(result, "stdout"));
    if (text != NULL)
        print_stream(stdout, "stdout", engine, text);
    text = json_string_value(json_object_get(result, "stderr"));
    if (text != NULL) {
        fflush(stdout);
        print_stream(stderr, "stderr", engine, text);
    }
    if (!failed)
        return false;

    const char *ename = json_string_value(json_object_get(result, "ename"));
    const char *evalue = json_string_value(json_object_get(result, "evalue"));

    fflush(stdout);
    fprintf(stderr, "[%ld:%s] %s\n", engine, ename != NULL ? ename : (status ? status : "error"),
            evalue != NULL ? evalue : "");
    traceback = json_object_get(result, "traceback");
    json_array_foreach(traceback, index, line) {
        const char *entry = json_string_value(line);
        size_t entry_len;

        /* Lua tracebacks often repeat the message just printed. */
        if (entry == NULL || (index == 0 && evalue != NULL && strcmp(entry, evalue) == 0))
            continue;
        entry_len = strlen(entry);
        fputs(entry, stderr);
        if (entry_len == 0 || entry[entry_len - 1] != '\n')
            fputc('\n', stderr);
    }
    return true;
}

/* Target specs are made of digits, ',', ':', '-' and words like "all": all
 * valid in a URL path segment as they are.  Anything else is percent-encoded
 * so that it reaches the controller as one segment (and is refused there). */
static int encode_targets(const char *targets, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t used = 0;

    for (const unsigned char *c = (const unsigned char *)targets; *c != '\0'; c++) {
        bool plain = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
                     (*c >= 'A' && *c <= 'Z') || strchr(",:-_.~", *c) != NULL;

        if (used + 4 > len)
            return -1;
        if (plain) {
            out[used++] = (char)*c;
        } else {
            out[used++] = '%';
            out[used++] = hex[*c >> 4];
            out[used++] = hex[*c & 15];
        }
    }
    out[used] = '\0';
    return 0;
}

static char *read_all(FILE *in)
{
    ippc_buf text = {0};
    char chunk[4096];
    size_t got;

    while ((got = fread(chunk, 1, sizeof chunk, in)) > 0) {
        if (buf_append(&text, chunk, got) < 0) {
            buf_free(&text);
            return NULL;
        }
    }
    return buf_take(&text, NULL);
}

static char *join_words(int count, char **words)
{
    size_t len = 1;
    char *text;

    for (int i = 0; i < count; i++)
        len += strlen(words[i]) + 1;
    text = malloc(len);
    if (text == NULL)
        return NULL;
    text[0] = '\0';
    for (int i = 0; i < count; i++) {
        if (i > 0)
            strcat(text, " ");
        strcat(text, words[i]);
    }
    return text;
}

int px_main(int argc, char **argv)
{
    enum { OPT_PROFILE = 256, OPT_IPPC_DIR, OPT_FILE, OPT_HELP };
    static const struct option options[] = {
        {"targets", required_argument, NULL, 't'},
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"ippc-dir", required_argument, NULL, OPT_IPPC_DIR},
        {"file", required_argument, NULL, OPT_FILE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *targets = "all";
    const char *profile = NULL;
    const char *ippc_dir = NULL;
    const char *file = NULL;
    connection_info info;
    rest_client client;
    rest_reply reply = {0};
    char err[1024];
    char encoded[256];
    char path[512];
    char *code = NULL;
    json_t *body = NULL;
    const json_t *results;
    const json_t *result;
    size_t index;
    bool any_failed = false;
    int status = CLI_EXIT_FAIL;
    int option;

    optind = 0;
    opterr = 0;
    /* '+': stop at the code, which may contain anything, dashes included. */
    while ((option = getopt_long(argc, argv, "+:t:h", options, NULL)) != -1) {
        switch (option) {
        case 't': targets = optarg; break;
        case OPT_PROFILE: profile = optarg; break;
        case OPT_IPPC_DIR: ippc_dir = optarg; break;
        case OPT_FILE: file = optarg; break;
        case 'h':
        case OPT_HELP: fputs(px_usage_text, stdout); return CLI_EXIT_OK;
        case ':': return cli_bad_option("px", px_usage_text, option, argv[optind - 1]);
        default:
            return cli_usage_error("px", px_usage_text, "unknown option '%s' (put code after --)",
                                   argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cli_usage_error("px", px_usage_text, "%s", "missing the code to execute");
    if (targets[0] == '\0')
        return cli_usage_error("px", px_usage_text, "%s", "--targets needs a value");

    if (argc - optind == 1 && strcmp(argv[optind], "-") == 0)
        code = read_all(stdin);
    else
        code = join_words(argc - optind, argv + optind);
    if (code == NULL) {
        msg_err("out of memory");
        return CLI_EXIT_FAIL;
    }
    body = json_pack("{s:s}", "code", code);
    if (body == NULL) {
        msg_err("the code is not valid UTF-8 text");
        free(code);
        return CLI_EXIT_FAIL;
    }
    if (client_connect(file, ippc_dir, profile, &info, &client) < 0) {
        json_decref(body);
        free(code);
        return CLI_EXIT_FAIL;
    }
    if (encode_targets(targets, encoded, sizeof encoded) < 0 ||
        snprintf(path, sizeof path, "/api/v1/views/%s/execute", encoded) >= (int)sizeof path) {
        msg_err("--targets is too long");
        goto done;
    }
    /* No overall timeout: code may run as long as it likes; Ctrl-C ends ippc. */
    if (rest_call(&client, "POST", path, body, 0, &reply, err, sizeof err) < 0) {
        client_report_unreachable(&info, profile, err);
        goto done;
    }

    results = json_object_get(reply.json, "results");
    json_array_foreach(results, index, result) {
        if (print_result(result))
            any_failed = true;
    }
    fflush(stdout);
    if (reply.http_status >= 400 && !json_is_array(results)) {
        rest_describe_error(&reply, err, sizeof err);
        msg_err("%s", err);
        goto done;
    }
    if (!json_is_array(results)) {
        msg_err("the controller's reply has no \"results\" (HTTP %ld)", reply.http_status);
        goto done;
    }
    status = any_failed || reply.http_status >= 400 ? CLI_EXIT_FAIL : CLI_EXIT_OK;

done:
    rest_reply_free(&reply);
    rest_client_free(&client);
    json_decref(body);
    free(code);
    return status;
}
