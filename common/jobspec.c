/* jobspec.c — engine job specs and the launcher's control lines (jobspec.h). */
#include "jobspec.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const kind_names[] = {"mpi", "local", "slurm", "pbs"};

const char *jobspec_kind_name(jobspec_kind kind)
{
    assert((size_t)kind < sizeof kind_names / sizeof kind_names[0]);
    return kind_names[kind];
}

int jobspec_kind_parse(const char *name, jobspec_kind *kind)
{
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++) {
        if (strcmp(name, kind_names[i]) == 0) {
            *kind = (jobspec_kind)i;
            return 0;
        }
    }
    return -1;
}

void jobspec_init(jobspec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->kind = JOB_MPI;
}

/* Printable ASCII only: these strings end up in scripts and argv, where a
 * newline would start a new command. */
static bool text_ok(const char *value, const char *alphabet)
{
    for (const char *c = value; *c != '\0'; c++) {
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            return false;
        if (alphabet != NULL && strchr(alphabet, *c) == NULL)
            return false;
    }
    return true;
}

int jobspec_set_text(char *field, size_t field_len, const char *what, const char *value,
                     const char *alphabet, char *err, size_t err_len)
{
    if (strlen(value) >= field_len) {
        snprintf(err, err_len, "%s is longer than %zu characters", what, field_len - 1);
        return -1;
    }
    if (!text_ok(value, alphabet)) {
        snprintf(err, err_len, "%s '%.64s' has characters that are not allowed there%s%s", what,
                 value, alphabet != NULL ? " (allowed: " : " (control characters)",
                 alphabet != NULL ? "letters, digits and ._-,@:)" : "");
        return -1;
    }
    snprintf(field, field_len, "%s", value);
    return 0;
}

int jobspec_add_directive(jobspec *spec, const char *line, char *err, size_t err_len)
{
    if (spec->n_directives == JOBSPEC_MAX_DIRECTIVES) {
        snprintf(err, err_len, "at most %d batch directives", JOBSPEC_MAX_DIRECTIVES);
        return -1;
    }
    if (line[0] == '\0') {
        snprintf(err, err_len, "an empty batch directive");
        return -1;
    }
    if (jobspec_set_text(spec->directives[spec->n_directives], sizeof spec->directives[0],
                         "a batch directive", line, NULL, err, err_len) < 0)
        return -1;
    spec->n_directives++;
    return 0;
}

int jobspec_validate(const jobspec *spec, char *err, size_t err_len)
{
    char copy[PATH_MAX];

    if ((size_t)spec->kind >= sizeof kind_names / sizeof kind_names[0]) {
        snprintf(err, err_len, "unknown kind of engine job");
        return -1;
    }
    if (spec->engines < 1 || spec->engines > JOBSPEC_MAX_ENGINES) {
        snprintf(err, err_len, "the number of engines must be 1..%d", JOBSPEC_MAX_ENGINES);
        return -1;
    }
    if (spec->ppn < 0 || spec->ppn > 4096) {
        snprintf(err, err_len, "engines per host (ppn) must be 1..4096");
        return -1;
    }
    if (spec->n_directives > JOBSPEC_MAX_DIRECTIVES) {
        snprintf(err, err_len, "at most %d batch directives", JOBSPEC_MAX_DIRECTIVES);
        return -1;
    }
    /* Re-check the texts: a spec may come from a control line. */
    if (jobspec_set_text(copy, sizeof spec->hostfile, "the hostfile", spec->hostfile, NULL, err,
                         err_len) < 0 ||
        jobspec_set_text(copy, sizeof spec->mpiexec_args, "the mpiexec arguments",
                         spec->mpiexec_args, NULL, err, err_len) < 0 ||
        jobspec_set_text(copy, sizeof spec->partition, "the partition", spec->partition,
                         JOBSPEC_NAME_CHARS, err, err_len) < 0 ||
        jobspec_set_text(copy, sizeof spec->account, "the account", spec->account,
                         JOBSPEC_NAME_CHARS, err, err_len) < 0 ||
        jobspec_set_text(copy, sizeof spec->time_limit, "the time limit", spec->time_limit,
                         JOBSPEC_TIME_CHARS, err, err_len) < 0)
        return -1;
    for (size_t i = 0; i < spec->n_directives; i++)
        if (spec->directives[i][0] == '\0' ||
            jobspec_set_text(copy, sizeof spec->directives[0], "a batch directive",
                             spec->directives[i], NULL, err, err_len) < 0) {
            if (spec->directives[i][0] == '\0')
                snprintf(err, err_len, "an empty batch directive");
            return -1;
        }
    if (spec->hostfile[0] != '\0' && spec->kind != JOB_MPI) {
        snprintf(err, err_len,
                 "a hostfile is for --engines=mpi (a batch system places the "
                 "engines itself)");
        return -1;
    }
    return 0;
}

json_t *jobspec_to_json(const jobspec *spec)
{
    json_t *directives = json_array();
    json_t *out;

    for (size_t i = 0; i < spec->n_directives && directives != NULL; i++)
        json_array_append_new(directives, json_string(spec->directives[i]));
    out = json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:o*}", "kind",
                    jobspec_kind_name(spec->kind), "engines", (json_int_t)spec->engines, "ppn",
                    (json_int_t)spec->ppn, "hostfile", spec->hostfile, "mpiexec_args",
                    spec->mpiexec_args, "partition", spec->partition, "time", spec->time_limit,
                    "account", spec->account, "directives", directives);
    return out;
}

static int text_field(const json_t *object, const char *key, char *field, size_t field_len,
                      char *err, size_t err_len)
{
    const json_t *value = json_object_get(object, key);

    if (value == NULL) {
        field[0] = '\0';
        return 0;
    }
    if (!json_is_string(value)) {
        snprintf(err, err_len, "\"%s\" must be a string", key);
        return -1;
    }
    if (json_string_length(value) != strlen(json_string_value(value))) {
        snprintf(err, err_len, "\"%s\" holds a NUL character", key);
        return -1;
    }
    return jobspec_set_text(field, field_len, key, json_string_value(value), NULL, err, err_len);
}

static int integer_field(const json_t *object, const char *key, long min, long max, long *out,
                         char *err, size_t err_len)
{
    const json_t *value = json_object_get(object, key);

    if (value == NULL)
        return 0;
    if (!json_is_integer(value) || json_integer_value(value) < min ||
        json_integer_value(value) > max) {
        snprintf(err, err_len, "\"%s\" must be an integer %ld..%ld", key, min, max);
        return -1;
    }
    *out = (long)json_integer_value(value);
    return 0;
}

static int only_keys(const json_t *object, const char *const *keys, char *err, size_t err_len)
{
    const char *key;
    const json_t *value;

    json_object_foreach((json_t *)object, key, value) {
        bool known = false;

        for (size_t i = 0; keys[i] != NULL; i++)
            known = known || strcmp(keys[i], key) == 0;
        if (!known) {
            snprintf(err, err_len, "unknown field \"%.64s\"", key);
            return -1;
        }
    }
    return 0;
}

static int spec_from_json(const json_t *object, jobspec *spec, char *err, size_t err_len)
{
    static const char *const keys[] = {"kind",         "engines",   "ppn",  "hostfile",
                                       "mpiexec_args", "partition", "time", "account",
                                       "directives",   NULL};
    const json_t *kind = json_object_get(object, "kind");
    const json_t *directives = json_object_get(object, "directives");
    const json_t *line;
    size_t index;

    jobspec_init(spec);
    if (!json_is_object(object)) {
        snprintf(err, err_len, "\"spec\" must be an object");
        return -1;
    }
    if (only_keys(object, keys, err, err_len) < 0)
        return -1;
    if (kind != NULL &&
        (!json_is_string(kind) || jobspec_kind_parse(json_string_value(kind), &spec->kind) < 0)) {
        snprintf(err, err_len, "\"kind\" must be mpi, local, slurm or pbs");
        return -1;
    }
    if (json_object_get(object, "engines") == NULL) {
        snprintf(err, err_len, "\"engines\" is required");
        return -1;
    }
    if (integer_field(object, "engines", 1, JOBSPEC_MAX_ENGINES, &spec->engines, err, err_len) <
            0 ||
        integer_field(object, "ppn", 0, 4096, &spec->ppn, err, err_len) < 0 ||
        text_field(object, "hostfile", spec->hostfile, sizeof spec->hostfile, err, err_len) < 0 ||
        text_field(object, "mpiexec_args", spec->mpiexec_args, sizeof spec->mpiexec_args, err,
                   err_len) < 0 ||
        text_field(object, "partition", spec->partition, sizeof spec->partition, err, err_len) <
            0 ||
        text_field(object, "time", spec->time_limit, sizeof spec->time_limit, err, err_len) < 0 ||
        text_field(object, "account", spec->account, sizeof spec->account, err, err_len) < 0)
        return -1;
    if (directives != NULL) {
        if (!json_is_array(directives)) {
            snprintf(err, err_len, "\"directives\" must be a list of strings");
            return -1;
        }
        json_array_foreach(directives, index, line) {
            if (!json_is_string(line) ||
                json_string_length(line) != strlen(json_string_value(line))) {
                snprintf(err, err_len, "\"directives\" must be a list of strings");
                return -1;
            }
            if (jobspec_add_directive(spec, json_string_value(line), err, err_len) < 0)
                return -1;
        }
    }
    return jobspec_validate(spec, err, err_len);
}

int jobspec_request_parse(const char *text, size_t len, jobspec_request *out, char *err,
                          size_t err_len)
{
    json_error_t jerr;
    json_t *root;
    const json_t *op;
    int status = -1;

    memset(out, 0, sizeof *out);
    if (len > JOBSPEC_REQUEST_MAX) {
        snprintf(err, err_len, "a control request is at most %d bytes", JOBSPEC_REQUEST_MAX);
        return -1;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, err_len, "not JSON: %s", jerr.text);
        return -1;
    }
    op = json_object_get(root, "op");
    if (!json_is_object(root) || !json_is_string(op)) {
        snprintf(err, err_len, "a control request is an object with \"op\"");
    } else if (strcmp(json_string_value(op), "add") == 0) {
        static const char *const keys[] = {"op", "spec", "timeout", NULL};
        const json_t *timeout = json_object_get(root, "timeout");

        out->op = JOBSPEC_ADD;
        if (only_keys(root, keys, err, err_len) == 0 &&
            spec_from_json(json_object_get(root, "spec"), &out->spec, err, err_len) == 0) {
            if (timeout != NULL &&
                (!json_is_number(timeout) || !isfinite(json_number_value(timeout)) ||
                 json_number_value(timeout) <= 0 || json_number_value(timeout) > 1e6))
                snprintf(err, err_len, "\"timeout\" must be a number of seconds, 0 < t <= 1e6");
            else {
                out->timeout = timeout != NULL ? json_number_value(timeout) : 0;
                status = 0;
            }
        }
    } else if (strcmp(json_string_value(op), "remove") == 0) {
        static const char *const keys[] = {"op", "job", NULL};
        const json_t *job = json_object_get(root, "job");

        out->op = JOBSPEC_REMOVE;
        if (only_keys(root, keys, err, err_len) < 0)
            ;
        else if (!json_is_string(job) || json_string_length(job) == 0)
            snprintf(err, err_len, "\"job\" must be a job's name or number");
        else if (jobspec_set_text(out->job, sizeof out->job, "job", json_string_value(job),
                                  JOBSPEC_NAME_CHARS, err, err_len) == 0)
            status = 0;
    } else if (strcmp(json_string_value(op), "jobs") == 0) {
        static const char *const keys[] = {"op", NULL};

        out->op = JOBSPEC_LIST;
        if (only_keys(root, keys, err, err_len) == 0)
            status = 0;
    } else {
        snprintf(err, err_len, "unknown op \"%.32s\" (add, remove or jobs)", json_string_value(op));
    }
    json_decref(root);
    return status;
}
