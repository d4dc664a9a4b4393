/* call.c — the one call decoder and answer builder (see call.h).
 *
 * Both decoders end in decode(): REST's query parameters arrive as strings
 * and /ws's fields as JSON values, so each option is read by one function
 * that takes either (`from_query` says which) and words its errors alike.
 * The table below is the one list of operations; http_api.c routes REST
 * paths to it by operationId and ws_client.c messages by op.
 *
 * Relies on: hub.h (call_start, call_wait, call_answer only), targets
 * syntax being the hub's business (a spec string is passed on as given).
 */
#include "call.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The longest timeout or wait: a year, as REST always allowed. */
#define MAX_SECONDS (86400.0 * 365)

#define VIEW_OPTIONS (CALL_O_BLOCK | CALL_O_TIMEOUT | CALL_O_FORMAT)

static const call_def call_defs[] = {
    {.ws = "execute",
     .operation = "execute",
     .kind = CALL_VIEW,
     .op = HUB_OP_EXECUTE,
     .path = CALL_P_TARGETS,
     .body = CALL_BODY_OBJECT,
     .fields = {"code"},
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "run",
     .operation = "run",
     .kind = CALL_VIEW,
     .op = HUB_OP_RUN,
     .path = CALL_P_TARGETS,
     .body = CALL_BODY_OBJECT,
     .fields = {"filename", "source"},
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "push",
     .operation = "push",
     .kind = CALL_VIEW,
     .op = HUB_OP_PUSH,
     .path = CALL_P_TARGETS,
     .body = CALL_BODY_OBJECT,
     .fields = {"namespace"},
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "pull",
     .operation = "pull",
     .kind = CALL_VIEW,
     .op = HUB_OP_PULL_MANY,
     .path = CALL_P_TARGETS,
     .body = CALL_BODY_OBJECT,
     .fields = {"names"},
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "scatter",
     .operation = "scatter",
     .kind = CALL_VIEW,
     .op = HUB_OP_SCATTER,
     .path = CALL_P_TARGETS,
     .body = CALL_BODY_OBJECT,
     .raw_ok = 1,
     .fields = {"name", "data"},
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "gather",
     .operation = "gather",
     .kind = CALL_VIEW,
     .op = HUB_OP_GATHER,
     .path = CALL_P_TARGETS | CALL_P_NAME,
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "apply",
     .operation = "apply",
     .kind = CALL_VIEW,
     .op = HUB_OP_APPLY,
     .path = CALL_P_TARGETS,
     .body = CALL_BODY_OBJECT,
     .fields = {"function", "args", "kwargs"},
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "load",
     .operation = "load",
     .kind = CALL_VIEW,
     .op = HUB_OP_LOAD,
     .path = CALL_P_TARGETS,
     .body = CALL_BODY_OBJECT,
     .fields = {"library"},
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "reset",
     .operation = "reset",
     .kind = CALL_VIEW,
     .op = HUB_OP_RESET,
     .path = CALL_P_TARGETS,
     .body = CALL_BODY_OPTIONAL,
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.operation = "pushVar",
     .kind = CALL_VIEW,
     .op = HUB_OP_PUSH,
     .path = CALL_P_TARGETS | CALL_P_NAME,
     .body = CALL_BODY_VALUE,
     .raw_ok = 1,
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.operation = "pullVar",
     .kind = CALL_VIEW,
     .op = HUB_OP_PULL,
     .path = CALL_P_TARGETS | CALL_P_NAME,
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.operation = "deleteVar",
     .kind = CALL_VIEW,
     .op = HUB_OP_DELETE,
     .path = CALL_P_TARGETS | CALL_P_NAME,
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.operation = "listVars",
     .kind = CALL_VIEW,
     .op = HUB_OP_LIST,
     .path = CALL_P_TARGETS,
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "interrupt", .operation = "interrupt", .kind = CALL_INTERRUPT, .path = CALL_P_TARGETS},
    {.ws = "submit",
     .operation = "submitTasks",
     .kind = CALL_SUBMIT,
     .body = CALL_BODY_SPEC,
     .fields = {"task", "tasks"},
     .options = CALL_O_BLOCK | CALL_O_TIMEOUT | CALL_O_FORMAT},
    {.ws = "map",
     .operation = "map",
     .kind = CALL_MAP,
     .body = CALL_BODY_OBJECT,
     .fields = {"function", "sequences", "chunksize", "ordered"},
     .options = VIEW_OPTIONS,
     .block_default = 1},
    {.ws = "abort",
     .operation = "abortTask",
     .kind = CALL_ABORT,
     .path = CALL_P_ID,
     .id_field = "task",
     .options = CALL_O_FORCE},
    {.ws = "task",
     .operation = "getTask",
     .kind = CALL_TASK,
     .path = CALL_P_ID,
     .id_field = "task",
     .options = CALL_O_WAIT | CALL_O_FORMAT},
    {.ws = "request",
     .operation = "getRequest",
     .kind = CALL_REQUEST,
     .path = CALL_P_ID,
     .id_field = "request",
     .options = CALL_O_WAIT | CALL_O_FORMAT},
    {.ws = "engines", .operation = "listEngines", .kind = CALL_ENGINES},
    {.ws = "info", .operation = "getInfo", .kind = CALL_INFO},
    {.ws = "queue", .operation = "queueStatus", .kind = CALL_QUEUE},
};
#define N_DEFS (sizeof call_defs / sizeof call_defs[0])

/* Fields of a /ws message that are the envelope, not the call: the op, the
 * client's id, and the count of binary attachments (wsmsg.h). */
static const char *const envelope[] = {"op", "id", "nbuf", "sizes"};

static const struct {
    unsigned bit;
    const char *name;
} option_names[] = {
    {CALL_O_BLOCK, "block"}, {CALL_O_TIMEOUT, "timeout"}, {CALL_O_FORMAT, "format"},
    {CALL_O_WAIT, "wait"},   {CALL_O_FORCE, "force"},
};
#define N_OPTIONS (sizeof option_names / sizeof option_names[0])

const call_def *call_def_rest(const char *operation)
{
    for (size_t i = 0; operation && i < N_DEFS; i++)
        if (strcmp(call_defs[i].operation, operation) == 0)
            return &call_defs[i];
    return NULL;
}

const call_def *call_def_ws(const char *op)
{
    for (size_t i = 0; op && i < N_DEFS; i++)
        if (call_defs[i].ws && strcmp(call_defs[i].ws, op) == 0)
            return &call_defs[i];
    return NULL;
}

static int is_field(const call_def *d, const char *key)
{
    for (int i = 0; d->fields[i]; i++)
        if (strcmp(d->fields[i], key) == 0)
            return 1;
    return 0;
}

/* A /ws message's field that names a path parameter or an option of d. */
static int is_ws_parameter(const call_def *d, const char *key)
{
    if (((d->path & CALL_P_TARGETS) && strcmp(key, "targets") == 0) ||
        ((d->path & CALL_P_NAME) && strcmp(key, "name") == 0) ||
        ((d->path & CALL_P_ID) && strcmp(key, d->id_field) == 0))
        return 1;
    for (size_t i = 0; i < N_OPTIONS; i++)
        if ((d->options & option_names[i].bit) && strcmp(key, option_names[i].name) == 0)
            return 1;
    return 0;
}

void call_print_ws_ops(FILE *out)
{
    for (size_t i = 0; i < N_DEFS; i++) {
        const call_def *d = &call_defs[i];
        if (!d->ws)
            continue;
        fprintf(out, "%s %s ", d->ws, d->operation);
        const char *sep = "";
        if (d->path & CALL_P_TARGETS) {
            fprintf(out, "%stargets", sep);
            sep = ",";
        }
        if (d->path & CALL_P_NAME) {
            fprintf(out, "%sname", sep);
            sep = ",";
        }
        if (d->path & CALL_P_ID) {
            fprintf(out, "%s%s", sep, d->id_field);
            sep = ",";
        }
        for (int k = 0; d->fields[k]; k++) {
            fprintf(out, "%s%s", sep, d->fields[k]);
            sep = ",";
        }
        for (size_t k = 0; k < N_OPTIONS; k++)
            if (d->options & option_names[k].bit) {
                fprintf(out, "%s%s", sep, option_names[k].name);
                sep = ",";
            }
        fprintf(out, "%s\n", *sep ? "" : "-");
    }
}

/* ------------------------------------------------------------ options */

/* The option `key` of a call: REST gives strings (from_query), /ws any JSON.
 * Each reader returns 0 (absent or read), or -1 + err. */

static int read_bool(const json_t *v, int from_query, const char *key, int *out, ippc_error *err)
{
    if (!v)
        return 0;
    if (from_query) {
        const char *s = json_string_value(v);
        if (s && (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)) {
            *out = 1;
            return 0;
        }
        if (s && (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)) {
            *out = 0;
            return 0;
        }
    } else if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    return ippc_error_set(err, ERR_BAD_REQUEST, "\"%s\" must be true or false", key);
}

static int read_seconds(const json_t *v, int from_query, const char *key, double *out,
                        ippc_error *err)
{
    if (!v)
        return 0;
    double s = NAN;
    if (from_query) {
        const char *text = json_string_value(v);
        char *end = NULL;
        errno = 0;
        double parsed = text ? strtod(text, &end) : NAN;
        if (text && !errno && end != text && !*end)
            s = parsed;
    } else if (json_is_number(v)) {
        s = json_number_value(v);
    }
    if (!isfinite(s) || s < 0 || s > MAX_SECONDS)
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "\"%s\" must be a number of seconds from 0 to %.0f", key,
                              MAX_SECONDS);
    *out = s;
    return 0;
}

static int read_format(const json_t *v, int *out, ippc_error *err)
{
    if (!v)
        return 0;
    const char *s = json_string_value(v);
    if (s && strcmp(s, "list") == 0) {
        *out = VALUE_FORMAT_LIST;
        return 0;
    }
    if (s && strcmp(s, "typed") == 0) {
        *out = VALUE_FORMAT_TYPED;
        return 0;
    }
    if (s && strcmp(s, "raw") == 0)
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "\"format\" must be list or typed (raw bytes: a REST pull or "
                              "gather with Accept: application/octet-stream, "
                              "application/x-npy or multipart/mixed)");
    return ippc_error_set(err, ERR_BAD_REQUEST, "\"format\" must be list or typed");
}

/* An id in its decimal text (a REST path segment, or a message's integer
 * written so): 1 and up; anything else names nothing (404). */
static int read_id_text(const char *text, const char *what, uint64_t *out, ippc_error *err)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = text && *text >= '0' && *text <= '9' ? strtoull(text, &end, 10) : 0;
    if (!text || errno || !end || *end || v == 0 || v > INT64_MAX)
        return ippc_error_set(err, ERR_NOT_FOUND, "no %s with id '%.64s'", what, text ? text : "");
    *out = (uint64_t)v;
    return 0;
}

/* ------------------------------------------------------------ decoding */

/* What the front ends hand to decode(): the call's parameters and options as
 * each gives them. */
typedef struct call_input {
    int from_query;        /* options are query strings (REST) */
    const json_t *options; /* an object holding the options (the query, or the message) */
    const char *id_text;   /* REST: the path's {id} */
    const json_t *fields;  /* REST: the body's fields, to check for unknown ones */
    const json_t *message; /* /ws: the whole message */
} call_input;

static int decode(call *c, const call_input *in, ippc_error *err);

static int decode_options(call *c, const call_input *in, ippc_error *err)
{
    const call_def *d = c->def;
    const json_t *o = in->options;
    c->block = d->block_default;
    c->timeout = -1;
    c->format = -1;
    if ((d->options & CALL_O_BLOCK) &&
        read_bool(json_object_get(o, "block"), in->from_query, "block", &c->block, err) < 0)
        return -1;
    if ((d->options & CALL_O_TIMEOUT) && read_seconds(json_object_get(o, "timeout"), in->from_query,
                                                      "timeout", &c->timeout, err) < 0)
        return -1;
    if ((d->options & CALL_O_FORMAT) &&
        read_format(json_object_get(o, "format"), &c->format, err) < 0)
        return -1;
    if ((d->options & CALL_O_WAIT) &&
        read_seconds(json_object_get(o, "wait"), in->from_query, "wait", &c->wait, err) < 0)
        return -1;
    if ((d->options & CALL_O_FORCE) &&
        read_bool(json_object_get(o, "force"), in->from_query, "force", &c->force, err) < 0)
        return -1;
    return 0;
}

/* A field the op does not take: in a REST body, or anywhere in a message. */
static int check_unknown(const call *c, const call_input *in, ippc_error *err)
{
    const call_def *d = c->def;
    const char *key;
    json_t *value;
    const char *name = d->ws ? d->ws : d->operation;
    if (in->message) {
        json_object_foreach((json_t *)in->message, key, value) {
            int known = is_field(d, key) || is_ws_parameter(d, key);
            for (size_t i = 0; !known && i < sizeof envelope / sizeof *envelope; i++)
                known = strcmp(key, envelope[i]) == 0;
            if (!known)
                return ippc_error_set(err, ERR_BAD_REQUEST, "%s takes no field \"%.64s\"", name,
                                      key);
        }
    }
    if (in->fields) {
        json_object_foreach((json_t *)in->fields, key, value) {
            if (!is_field(d, key))
                return ippc_error_set(err, ERR_BAD_REQUEST, "%s takes no field \"%.64s\"", name,
                                      key);
        }
    }
    return 0;
}

static int oom(ippc_error *err)
{
    return ippc_error_set(err, ERR_INTERNAL, "out of memory");
}

static int set_string(char **into, const char *s, ippc_error *err)
{
    if (!s)
        return 0;
    if (!(*into = strdup(s)))
        return oom(err);
    return 0;
}

void call_clear(call *c)
{
    if (!c)
        return;
    free(c->targets);
    free(c->name);
    json_decref(c->body);
    json_decref(c->wire_value);
    blobs_free(&c->wire_blobs);
    hub_prepared_free(c->prepared);
    memset(c, 0, sizeof *c);
    blobs_init(&c->wire_blobs);
}

static void call_init(call *c, const call_def *d)
{
    memset(c, 0, sizeof *c);
    blobs_init(&c->wire_blobs);
    c->def = d;
    c->timeout = -1;
    c->format = -1;
}

/* A direct-view op without a body still hands the hub an (empty) object. */
static int empty_view_body(call *c, ippc_error *err)
{
    if (c->def->kind == CALL_VIEW && !(c->body = json_object()))
        return oom(err);
    return 0;
}

/* REST: the body the op takes, from what was sent (taken). */
static int rest_body(call *c, const call_rest *in, json_t *body, ippc_error *err)
{
    const call_def *d = c->def;
    switch (d->body) {
    case CALL_BODY_NONE: json_decref(body); return empty_view_body(c, err);
    case CALL_BODY_OPTIONAL:
        if (!body && !(body = json_object()))
            return oom(err);
        break;
    case CALL_BODY_VALUE:
        if (!body)
            break;
        {
            /* One variable's value: the push of a namespace of one.  The name
             * comes from the path, any bytes: not checked as UTF-8 here, the hub
             * refuses what is no variable name (422). */
            json_t *ns = json_object();
            if (!ns) {
                json_decref(body);
                return oom(err);
            }
            if (json_object_set_new_nocheck(ns, in->name ? in->name : "", body) < 0) {
                json_decref(ns);
                return oom(err);
            }
            c->body = json_pack("{s:o}", "namespace", ns);
            return c->body ? 0 : oom(err);
        }
    case CALL_BODY_OBJECT:
    case CALL_BODY_SPEC: break;
    }
    if (!body)
        return ippc_error_set(err, ERR_BAD_REQUEST, "request body is empty; expected JSON");
    c->body = body;
    if (d->body != CALL_BODY_SPEC && !json_is_object(body))
        return ippc_error_set(err, ERR_BAD_REQUEST, "request body must be a JSON object");
    return 0;
}

int call_from_rest(call *c, const call_rest *in, ippc_error *err)
{
    const call_def *d = call_def_rest(in->operation);
    call_init(c, d);
    json_t *body = in->body;
    c->wire_value = in->wire_value;
    if (in->wire_blobs)
        blobs_append_all(&c->wire_blobs, in->wire_blobs);
    if (!d) {
        json_decref(body);
        return ippc_error_set(err, ERR_INTERNAL, "no operation '%.64s'",
                              in->operation ? in->operation : "");
    }
    if (c->wire_value) {
        /* A raw body is the value itself: of the variable named by the path,
         * or, for a scatter, by ?name=. */
        json_decref(body);
        const char *name = in->name;
        if (d->op == HUB_OP_SCATTER) {
            name = json_string_value(json_object_get(in->query, "name"));
            if (!name)
                return ippc_error_set(err, ERR_BAD_REQUEST,
                                      "a raw scatter names its variable with ?name=");
            /* Any bytes, as a path's name: the hub judges the name. */
            if (!(c->body = json_object()) ||
                json_object_set_new(c->body, "name", json_string_nocheck(name)) < 0)
                return oom(err);
        } else if (!(c->body = json_object())) {
            return oom(err);
        }
        if (set_string(&c->name, name, err) < 0)
            return -1;
    } else if (rest_body(c, in, body, err) < 0) {
        return -1;
    }
    if (((d->path & CALL_P_TARGETS) && set_string(&c->targets, in->targets, err) < 0) ||
        (!c->name && (d->path & CALL_P_NAME) && set_string(&c->name, in->name, err) < 0))
        return -1;
    call_input ci = {
        .from_query = 1,
        .options = in->query,
        .id_text = in->id,
        .fields = d->body == CALL_BODY_OBJECT || d->body == CALL_BODY_OPTIONAL ? c->body : NULL};
    return decode(c, &ci, err);
}

#define TARGETS_FORMS                                                                              \
    "a target spec (\"all\", \"0,2\", \"1::2\"), an engine id, or a non-empty list of engine ids"

/* /ws: targets as a spec string, an engine id or a list of ids -> a spec. */
static int ws_targets(call *c, const json_t *v, ippc_error *err)
{
    static const char what[] = "targets are " TARGETS_FORMS;
    if (!v)
        return ippc_error_set(err, ERR_BAD_REQUEST, "targets is required: " TARGETS_FORMS);
    if (json_is_string(v))
        return set_string(&c->targets, json_string_value(v), err);
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0)
            return ippc_error_set(err, ERR_BAD_TARGETS,
                                  "an engine id is an integer >= 0 (for the last engine, "
                                  "give the spec \"-1\")");
        char text[24];
        snprintf(text, sizeof text, "%lld", (long long)json_integer_value(v));
        return set_string(&c->targets, text, err);
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return ippc_error_set(err, ERR_BAD_TARGETS, "%s", what);
    size_t cap = json_array_size(v) * 21 + 1, len = 0;
    char *spec = malloc(cap);
    if (!spec)
        return oom(err);
    size_t i;
    json_t *id;
    json_array_foreach(v, i, id) {
        if (!json_is_integer(id) || json_integer_value(id) < 0) {
            free(spec);
            return ippc_error_set(err, ERR_BAD_TARGETS, "%s", what);
        }
        len += (size_t)snprintf(spec + len, cap - len, "%s%lld", i ? "," : "",
                                (long long)json_integer_value(id));
    }
    c->targets = spec;
    return 0;
}

static int ws_string(const json_t *msg, const char *key, char **into, ippc_error *err)
{
    json_t *v = json_object_get(msg, key);
    if (!v)
        return ippc_error_set(err, ERR_BAD_REQUEST, "%s is required", key);
    if (!json_is_string(v))
        return ippc_error_set(err, ERR_BAD_REQUEST, "\"%s\" must be a string", key);
    return set_string(into, json_string_value(v), err);
}

static int ws_id(call *c, const json_t *msg, ippc_error *err)
{
    const char *key = c->def->id_field;
    json_t *v = json_object_get(msg, key);
    if (!v)
        return ippc_error_set(err, ERR_BAD_REQUEST, "%s is required", key);
    if (!json_is_integer(v))
        return ippc_error_set(err, ERR_BAD_REQUEST, "\"%s\" must be a %s id (an integer)", key,
                              key);
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)json_integer_value(v));
    return read_id_text(text, key, &c->id, err);
}

/* /ws: the body the hub gets — the op's fields of the message, nothing else. */
static int ws_body(call *c, const json_t *msg, ippc_error *err)
{
    const call_def *d = c->def;
    if (d->body == CALL_BODY_NONE)
        return empty_view_body(c, err);
    if (d->body == CALL_BODY_SPEC) {
        json_t *task = json_object_get(msg, "task"), *tasks = json_object_get(msg, "tasks");
        if (task && tasks)
            return ippc_error_set(err, ERR_BAD_REQUEST,
                                  "submit takes \"task\" (one TaskSpec) or \"tasks\" (a list), "
                                  "not both");
        if (!task && !tasks)
            return ippc_error_set(err, ERR_BAD_REQUEST,
                                  "submit needs \"task\" (one TaskSpec) or \"tasks\" (a list)");
        if (task && !json_is_object(task))
            return ippc_error_set(err, ERR_BAD_REQUEST,
                                  "\"task\" must be one TaskSpec (an "
                                  "object); a list goes in \"tasks\"");
        if (tasks && !json_is_array(tasks))
            return ippc_error_set(err, ERR_BAD_REQUEST, "\"tasks\" must be a list of TaskSpecs");
        c->body = json_incref(task ? task : tasks);
        return 0;
    }
    if (!(c->body = json_object()))
        return oom(err);
    for (int i = 0; d->fields[i]; i++) {
        json_t *v = json_object_get(msg, d->fields[i]);
        if (v && json_object_set(c->body, d->fields[i], v) < 0)
            return oom(err);
    }
    return 0;
}

/* What both front ends check, in this order, once the parameters are in c:
 * the options, the id, fields the op does not take; then /ws's body. */
static int decode(call *c, const call_input *in, ippc_error *err)
{
    const call_def *d = c->def;
    if (decode_options(c, in, err) < 0)
        return -1;
    if (d->path & CALL_P_ID) {
        int rc = in->from_query ? read_id_text(in->id_text, d->id_field, &c->id, err)
                                : ws_id(c, in->message, err);
        if (rc < 0)
            return -1;
    }
    if (check_unknown(c, in, err) < 0)
        return -1;
    if (in->message && ws_body(c, in->message, err) < 0)
        return -1;
    if (d->kind == CALL_SUBMIT && c->block && json_is_array(c->body))
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "\"block\": true takes one task, not a batch (a list)");
    return 0;
}

int call_from_ws(call *c, const json_t *msg, ippc_error *err)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    const call_def *d = call_def_ws(op);
    call_init(c, d);
    if (!json_is_object(msg) || !op)
        return ippc_error_set(err, ERR_BAD_REQUEST, "a message is a JSON object with an \"op\"");
    if (!d)
        return ippc_error_set(err, ERR_BAD_REQUEST, "unknown op '%.64s'", op);
    if ((d->path & CALL_P_TARGETS) && ws_targets(c, json_object_get(msg, "targets"), err) < 0)
        return -1;
    if ((d->path & CALL_P_NAME) && ws_string(msg, "name", &c->name, err) < 0)
        return -1;
    call_input ci = {.from_query = 0, .options = msg, .message = msg};
    return decode(c, &ci, err);
}

/* ------------------------------------------------------------ running */

static hub_call hub_call_of(call *c)
{
    return (hub_call){.op = c->def->op,
                      .targets = c->targets,
                      .body = c->body,
                      .name = c->name,
                      .format = c->format >= 0 ? (value_format)c->format : VALUE_FORMAT_LIST,
                      .wire_value = c->wire_value,
                      .wire_blobs = &c->wire_blobs,
                      .prepared = c->prepared,
                      .blocking = c->block && c->timeout != 0};
}

int call_prepare(call *c, ippc_error *err)
{
    if (c->def->kind != CALL_VIEW || c->prepared)
        return 0;
    hub_call hc = hub_call_of(c);
    if (!(c->prepared = hub_prepare(&hc, err)))
        return -1;
    json_decref(c->body);
    json_decref(c->wire_value);
    c->body = c->wire_value = NULL;
    blobs_free(&c->wire_blobs);
    return 0;
}

static json_t *error_answer(const ippc_error *err, int *status)
{
    *status = http_status_for(err->code);
    return ippc_error_json(err);
}

/* What the answer waits for: id, until timeout seconds (< 0: no limit; 0
 * or !block: not at all). */
static int wait_for(call *c, call_wait_kind kind, uint64_t id, int block, double seconds)
{
    c->waits_for = kind;
    c->wait_id = id;
    c->now = !block || seconds == 0;
    c->deadline_ms = !c->now && seconds > 0 ? hub_now_ms() + (int64_t)(seconds * 1000.0) + 1 : 0;
    /* A blocking submit is kept for its answer from the start, a wait from
     * hub_wait on. */
    c->pinned = kind == CALL_WAIT_REQUEST && !c->now;
    return 0;
}

int call_start(hub *h, call *c, int *status, json_t **body)
{
    ippc_error err = {0};
    json_t *out = NULL;
    *status = 200;
    switch (c->def->kind) {
    case CALL_VIEW: {
        hub_call hc = hub_call_of(c);
        c->prepared = NULL; /* hub_submit frees it */
        uint64_t id = hub_submit(h, &hc, &err);
        json_decref(c->body);
        json_decref(c->wire_value);
        c->body = c->wire_value = NULL;
        blobs_free(&c->wire_blobs);
        if (!id)
            break;
        return wait_for(c, CALL_WAIT_REQUEST, id, c->block, c->timeout);
    }
    case CALL_MAP: {
        uint64_t id = hub_map_submit(h, c->body, &err);
        json_decref(c->body);
        c->body = NULL;
        if (!id)
            break;
        return wait_for(c, CALL_WAIT_REQUEST, id, c->block, c->timeout);
    }
    case CALL_SUBMIT: {
        uint64_t first = 0;
        out = hub_task_submit(h, c->body, &first, &err);
        json_decref(c->body);
        c->body = NULL;
        if (out && c->block) {
            json_decref(out);
            return wait_for(c, CALL_WAIT_TASK, first, 1, c->timeout);
        }
        *status = 202;
        break;
    }
    case CALL_TASK: return wait_for(c, CALL_WAIT_TASK, c->id, 1, c->wait);
    case CALL_REQUEST: return wait_for(c, CALL_WAIT_REQUEST, c->id, 1, c->wait);
    case CALL_INTERRUPT: out = hub_interrupt(h, c->targets, &err); break;
    case CALL_ABORT: out = hub_task_abort(h, c->id, c->force, &err); break;
    case CALL_ENGINES: out = hub_engines(h); break;
    case CALL_INFO: out = hub_info(h); break;
    case CALL_QUEUE: out = hub_queue(h); break;
    }
    if (!out) {
        if (!err.code[0])
            oom(&err);
        out = error_answer(&err, status);
    }
    *body = out;
    return 1;
}

int call_wait(hub *h, const call *c, void (*wake)(void *arg), void (*registered)(void *arg),
              void *arg)
{
    if (c->now)
        return 1;
    if (c->waits_for == CALL_WAIT_TASK)
        return hub_task_wait(h, c->wait_id, c->deadline_ms, wake, registered, arg);
    return hub_wait(h, c->wait_id, c->deadline_ms, wake, registered, arg);
}

json_t *call_answer(hub *h, const call *c, int *status)
{
    ippc_error err = {0};
    int done = 0;
    json_t *out;
    if (c->waits_for == CALL_WAIT_TASK) {
        value_format fmt = c->format >= 0 ? (value_format)c->format : VALUE_FORMAT_LIST;
        out = hub_task_json_as(h, c->wait_id, fmt, &done, &err);
    } else {
        /* A request's own format, unless this call names one. */
        int fmt = c->format >= 0 ? c->format : c->def->kind == CALL_REQUEST ? -1 : 0;
        out = hub_request_json_as(h, c->wait_id, fmt, &done, &err);
    }
    if (!out)
        return error_answer(&err, status);
    *status = done ? 200 : 202;
    return out;
}

void call_answered(hub *h, call *c, int done)
{
    if (!c->pinned)
        return;
    c->pinned = 0;
    hub_request_answered(h, c->wait_id, done);
}

/* ------------------------------------------------------------ media */

call_media call_media_of(const char *content_type, int raw_ok, ippc_error *err)
{
    if (!content_type)
        return CALL_MEDIA_JSON;
    /* The media type without parameters or surrounding blanks. */
    const char *start = content_type;
    while (*start == ' ' || *start == '\t')
        start++;
    size_t len = strcspn(start, ";");
    while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
        len--;
    static const char app[] = "application/";
    size_t app_len = sizeof app - 1;
    if (len == 0)
        return CALL_MEDIA_JSON;
    if (len > app_len && strncasecmp(start, app, app_len) == 0) {
        const char *sub = start + app_len;
        size_t sub_len = len - app_len;
        if ((sub_len == 4 && strncasecmp(sub, "json", 4) == 0) ||
            (sub_len > 5 && strncasecmp(sub + sub_len - 5, "+json", 5) == 0) ||
            (sub_len == 21 && strncasecmp(sub, "x-www-form-urlencoded", 21) == 0))
            return CALL_MEDIA_JSON;
        if (raw_ok && sub_len == 12 && strncasecmp(sub, "octet-stream", 12) == 0)
            return CALL_MEDIA_RAW;
        if (raw_ok && sub_len == 5 && strncasecmp(sub, "x-npy", 5) == 0)
            return CALL_MEDIA_NPY;
    }
    ippc_error_set(err, ERR_UNSUPPORTED,
                   "Content-Type '%.*s' is not accepted here: send JSON (application/json)%s",
                   (int)(len > 64 ? 64 : len), start,
                   raw_ok ? ", or an array as application/octet-stream or application/x-npy" : "");
    return CALL_MEDIA_UNSUPPORTED;
}

/* s[0..n) trimmed of blanks on both sides. */
static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

static int token_is(const char *s, size_t n, const char *word)
{
    return n == strlen(word) && strncasecmp(s, word, n) == 0;
}

/* One media range of an Accept header, range[0..n): what it offers (or -1)
 * and its q.  Parameters other than q and multipart's part are ignored. */
static int accept_range(const char *range, size_t n, hub_op op, double *q)
{
    size_t type_len = 0;
    while (type_len < n && range[type_len] != ';')
        type_len++;
    const char *type = range;
    size_t tn = type_len;
    trim(&type, &tn);
    *q = 1.0;
    int part_npy = 0, part_bad = 0;
    /* ;name=value parameters; a quoted value may not hold ';' or ','. */
    size_t at = type_len;
    while (at < n) {
        at++; /* the ';' */
        size_t end = at;
        while (end < n && range[end] != ';')
            end++;
        const char *param = range + at;
        size_t pn = end - at;
        trim(&param, &pn);
        size_t eq = 0;
        while (eq < pn && param[eq] != '=')
            eq++;
        const char *name = param, *value = param + (eq < pn ? eq + 1 : pn);
        size_t name_n = eq, value_n = eq < pn ? pn - eq - 1 : 0;
        trim(&name, &name_n);
        trim(&value, &value_n);
        if (value_n >= 2 && value[0] == '"' && value[value_n - 1] == '"') {
            value++;
            value_n -= 2;
        }
        if (token_is(name, name_n, "q")) {
            char num[16];
            char *stop;
            if (value_n == 0 || value_n >= sizeof num)
                return -1;
            memcpy(num, value, value_n);
            num[value_n] = '\0';
            *q = strtod(num, &stop);
            if (*stop || !(*q >= 0 && *q <= 1))
                return -1;
        } else if (token_is(name, name_n, "part")) {
            part_npy = token_is(value, value_n, "application/x-npy");
            part_bad = !part_npy && !token_is(value, value_n, "application/octet-stream");
        }
        at = end;
    }
    int data_op = op == HUB_OP_PULL || op == HUB_OP_GATHER;
    if (token_is(type, tn, "application/json") || token_is(type, tn, "application/*") ||
        token_is(type, tn, "*/*"))
        return CALL_ANSWER_JSON;
    if (data_op && token_is(type, tn, "application/octet-stream"))
        return CALL_ANSWER_RAW;
    if (data_op && token_is(type, tn, "application/x-npy"))
        return CALL_ANSWER_NPY;
    if (op == HUB_OP_PULL && token_is(type, tn, "multipart/mixed") && !part_bad)
        return part_npy ? CALL_ANSWER_MULTIPART_NPY : CALL_ANSWER_MULTIPART;
    return -1;
}

call_answer_kind call_answer_of(const char *accept, hub_op op)
{
    if (!accept)
        return CALL_ANSWER_JSON;
    int best = CALL_ANSWER_JSON;
    double best_q = 0;
    const char *p = accept;
    while (*p) {
        size_t n = strcspn(p, ",");
        double q;
        int kind = accept_range(p, n, op, &q);
        if (kind >= 0 && q > best_q) {
            best = kind;
            best_q = q;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return (call_answer_kind)best;
}
