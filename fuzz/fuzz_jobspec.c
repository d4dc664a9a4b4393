/* fuzz_jobspec.c — libFuzzer entry for common/jobspec.c (the launcher's
 * control lines).
 *
 * Input: one control byte, then bytes.  The control byte chooses how the
 * line is made, so that the fuzzer reaches the field checks without having
 * to discover JSON first: 0 the bytes are the line; 1 they are the value of
 * one spec field (chosen by the second byte, with a kind) of an add request,
 * as a JSON string; 2 the job of a remove request; 3 the raw "spec" of an
 * add request.  Besides sanitizer findings, it checks the documented
 * result: an accepted add request holds a spec that validates, and that spec
 * written back as JSON parses to the same spec (nothing is lost or changed
 * on the way from `ippc cluster add` to the launcher).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jobspec.h"

static int spec_equal(const jobspec *a, const jobspec *b)
{
    if (a->kind != b->kind || a->engines != b->engines || a->ppn != b->ppn ||
        a->n_directives != b->n_directives || strcmp(a->hostfile, b->hostfile) != 0 ||
        strcmp(a->mpiexec_args, b->mpiexec_args) != 0 || strcmp(a->partition, b->partition) != 0 ||
        strcmp(a->time_limit, b->time_limit) != 0 || strcmp(a->account, b->account) != 0)
        return 0;
    for (size_t i = 0; i < a->n_directives; i++)
        if (strcmp(a->directives[i], b->directives[i]) != 0)
            return 0;
    return 1;
}

static void check_round_trip(const jobspec_request *request)
{
    char err[512];
    jobspec_request again;
    json_t *line;
    char *text;

    if (jobspec_validate(&request->spec, err, sizeof err) != 0)
        __builtin_trap();
    line = json_pack("{s:s, s:o}", "op", "add", "spec", jobspec_to_json(&request->spec));
    text = line != NULL ? json_dumps(line, JSON_COMPACT) : NULL;
    if (text != NULL) {
        if (jobspec_request_parse(text, strlen(text), &again, err, sizeof err) != 0 ||
            !spec_equal(&again.spec, &request->spec))
            __builtin_trap();
        free(text);
    }
    json_decref(line);
}

static const char *const fields[] = {"hostfile", "mpiexec_args", "partition", "time",
                                     "account",  "directives",   "kind",      "engines"};
static const char *const kinds[] = {"mpi", "local", "slurm", "pbs"};

/* The line to parse (malloc'd), from the control byte and the rest. */
static char *make_line(const uint8_t *data, size_t size, size_t *len)
{
    const char *rest = (const char *)data + 1;
    size_t rest_len = size - 1;
    json_t *line = NULL;
    json_t *value;
    char *text;

    switch (data[0] % 4) {
    case 1: {
        const char *field = fields[rest_len > 0 ? (uint8_t)rest[0] % 8 : 0];
        const char *kind = kinds[rest_len > 0 ? ((uint8_t)rest[0] >> 3) % 4 : 0];

        value = json_stringn_nocheck(rest_len > 1 ? rest + 1 : "", rest_len > 1 ? rest_len - 1 : 0);
        if (strcmp(field, "directives") == 0)
            value = json_pack("[o]", value);
        line = json_pack("{s:s, s:{s:i, s:s, s:o}}", "op", "add", "spec", "engines", 2, "kind",
                         kind, field, value);
        break;
    }
    case 2:
        line = json_pack("{s:s, s:o}", "op", "remove", "job", json_stringn_nocheck(rest, rest_len));
        break;
    case 3: {
        static const char head[] = "{\"op\":\"add\",\"spec\":";
        char *raw = malloc(sizeof head + rest_len + 1);

        if (raw == NULL)
            return NULL;
        memcpy(raw, head, sizeof head - 1);
        memcpy(raw + sizeof head - 1, rest, rest_len);
        raw[sizeof head - 1 + rest_len] = '}';
        *len = sizeof head + rest_len;
        return raw;
    }
    default: {
        char *raw = malloc(rest_len + 1);

        if (raw != NULL)
            memcpy(raw, rest, rest_len);
        *len = rest_len;
        return raw;
    }
    }
    text = line != NULL ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    *len = text != NULL ? strlen(text) : 0;
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jobspec_request request;
    char err[512];
    char *line;
    size_t len = 0;
    int status;

    if (size < 1)
        return 0;
    line = make_line(data, size, &len);
    if (line == NULL)
        return 0;
    status = jobspec_request_parse(line, len, &request, err, sizeof err);
    free(line);
    if (status != 0) {
        if (memchr(err, '\0', sizeof err) == NULL)
            __builtin_trap();
        return 0;
    }
    if (request.op == JOBSPEC_ADD)
        check_round_trip(&request);
    return 0;
}
