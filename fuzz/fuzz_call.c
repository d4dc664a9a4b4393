/* fuzz_call.c — libFuzzer entry for server/call.c, the one call decoder.
 *
 * Input: one control byte, then the rest.
 *   mode 0: the rest is a /ws message (JSON text) for call_from_ws;
 *   mode 1: a REST request for call_from_rest: the control byte's high bits
 *           pick the operation, the rest is "targets\nname\nid\nquery\nbody"
 *           (query "k=v&k=v", body JSON or empty for none);
 *   mode 2: the rest is a /ws message; when REST could say the same thing
 *           (targets a spec, an id or a list of ids; options of their JSON
 *           types; only known fields), it is also decoded as that REST
 *           request, and the two must agree: the same call, or the same error
 *           word for word.
 * Besides sanitizer findings, every result is checked against call.h: a
 * decoded call has its op, its targets when the op has them, only the op's
 * fields in its body, options in range; a refusal has a code of status 400
 * or 404 and a message; call_prepare never fails but for memory.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"

static void check_call(const call *c)
{
    const call_def *d = c->def;
    if (!d)
        __builtin_trap();
    if ((d->path & CALL_P_TARGETS) && !c->targets)
        __builtin_trap();
    if ((d->path & CALL_P_ID) && (c->id == 0 || c->id > INT64_MAX))
        __builtin_trap();
    if (c->timeout != -1 && !(c->timeout >= 0 && c->timeout <= 86400.0 * 365))
        __builtin_trap();
    if (!(c->wait >= 0 && c->wait <= 86400.0 * 365))
        __builtin_trap();
    if (c->format < -1 || c->format > VALUE_FORMAT_TYPED || (c->block != 0 && c->block != 1))
        __builtin_trap();
    if ((d->body == CALL_BODY_OBJECT || d->body == CALL_BODY_OPTIONAL) && !c->wire_value) {
        const char *key;
        json_t *value;
        if (!json_is_object(c->body))
            __builtin_trap();
        json_object_foreach(c->body, key, value) {
            int known = 0;
            for (int i = 0; d->fields[i]; i++)
                known |= strcmp(d->fields[i], key) == 0;
            if (!known)
                __builtin_trap();
        }
    }
}

static void check_refusal(const ippc_error *err)
{
    int status = http_status_for(err->code);
    if ((status != 400 && status != 404) || !err->message[0])
        __builtin_trap();
}

static void prepare(call *c)
{
    ippc_error err = {{0}, {0}};
    if (c->def->kind == CALL_VIEW && call_prepare(c, &err) < 0 &&
        strcmp(err.code, ERR_INTERNAL) != 0)
        __builtin_trap();
}

static void run_ws(const char *text, size_t len)
{
    json_error_t jerr;
    json_t *msg = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (!msg)
        return;
    call c;
    ippc_error err = {{0}, {0}};
    if (call_from_ws(&c, msg, &err) == 0) {
        check_call(&c);
        prepare(&c);
    } else {
        check_refusal(&err);
    }
    call_clear(&c);
    json_decref(msg);
}

/* Splits text at the first '\n' (or its end): returns the part, advances. */
static char *next_part(char **text)
{
    char *start = *text;
    char *nl = strchr(start, '\n');
    if (nl) {
        *nl = '\0';
        *text = nl + 1;
    } else {
        *text = start + strlen(start);
    }
    return start;
}

static json_t *query_of(char *text)
{
    json_t *q = json_object();
    char *save = NULL;
    for (char *kv = strtok_r(text, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv || !eq[1])
            continue;
        *eq = '\0';
        if (!json_object_get(q, kv))
            json_object_set_new_nocheck(q, kv, json_string_nocheck(eq + 1));
    }
    return q;
}

static const char *const operations[] = {
    "execute",    "run",         "push",        "pull",        "scatter",   "gather",
    "apply",      "load",        "reset",       "pushVar",     "pullVar",   "deleteVar",
    "listVars",   "interrupt",   "submitTasks", "map",         "abortTask", "getTask",
    "getRequest", "listEngines", "getInfo",     "queueStatus",
};

static void run_rest(uint8_t control, const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    char *rest = text;
    const char *targets = next_part(&rest), *name = next_part(&rest), *id = next_part(&rest);
    char *query_text = next_part(&rest);
    const char *body_text = rest;
    json_t *body = NULL;
    if (*body_text) {
        json_error_t jerr;
        body = json_loads(body_text, JSON_DECODE_ANY, &jerr);
        if (!body) {
            free(text);
            return; /* REST answers malformed JSON before decoding a call */
        }
    }
    json_t *query = query_of(query_text);
    call_rest in = {.operation =
                        operations[(control >> 2) % (sizeof operations / sizeof *operations)],
                    .targets = targets,
                    .name = name,
                    .id = id,
                    .query = query,
                    .body = body};
    call c;
    ippc_error err = {{0}, {0}};
    if (call_from_rest(&c, &in, &err) == 0) {
        check_call(&c);
        prepare(&c);
    } else {
        check_refusal(&err);
    }
    call_clear(&c);
    json_decref(query);
    free(text);
}

/* ---- mode 2: the same call said both ways ---- */

/* The message's targets as a REST path segment, or NULL when REST cannot
 * say it. */
static char *targets_text(const json_t *v)
{
    char *out = NULL;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        /* A path segment is not empty and holds no '/' (the router's). */
        if (*s && !strchr(s, '/') && strlen(s) == json_string_length(v))
            out = strdup(s);
    } else if (json_is_integer(v) && json_integer_value(v) >= 0) {
        out = malloc(24);
        if (out)
            snprintf(out, 24, "%lld", (long long)json_integer_value(v));
    } else if (json_is_array(v) && json_array_size(v) > 0 && json_array_size(v) < 64) {
        out = calloc(json_array_size(v), 21);
        size_t i, len = 0;
        json_t *id;
        json_array_foreach(v, i, id) {
            if (!out || !json_is_integer(id) || json_integer_value(id) < 0) {
                free(out);
                return NULL;
            }
            len += (size_t)sprintf(out + len, "%s%lld", i ? "," : "",
                                   (long long)json_integer_value(id));
        }
    }
    return out;
}

/* An option's JSON value as the query would carry it, or NULL. */
static json_t *option_text(const char *key, const json_t *v)
{
    char buf[64];
    if (strcmp(key, "block") == 0 || strcmp(key, "force") == 0) {
        if (!json_is_boolean(v))
            return NULL;
        return json_string(json_is_true(v) ? "true" : "false");
    }
    if (strcmp(key, "format") == 0) {
        const char *s = json_string_value(v);
        if (!s || !*s || strlen(s) != json_string_length(v))
            return NULL;
        return json_string_nocheck(s);
    }
    if (!json_is_number(v))
        return NULL;
    snprintf(buf, sizeof buf, "%.17g", json_number_value(v));
    return json_string(buf);
}

static int is_in(const char *const *list, const char *key)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], key) == 0)
            return 1;
    return 0;
}

static void run_parity(const char *text, size_t len)
{
    static const char *const options[] = {"block", "timeout", "format", "wait", "force", NULL};
    json_error_t jerr;
    json_t *msg = json_loadb(text, len, 0, &jerr);
    const call_def *d = call_def_ws(json_string_value(json_object_get(msg, "op")));
    char *targets = NULL, id[24] = "";
    json_t *query = json_object(), *body = NULL;
    if (!d)
        goto done;
    if (d->path & CALL_P_TARGETS) {
        if (!(targets = targets_text(json_object_get(msg, "targets"))))
            goto done;
    }
    const char *name = NULL;
    if (d->path & CALL_P_NAME) {
        json_t *v = json_object_get(msg, "name");
        name = json_string_value(v);
        if (!name || !*name || strchr(name, '/') || strlen(name) != json_string_length(v))
            goto done;
    }
    if (d->path & CALL_P_ID) {
        json_t *v = json_object_get(msg, d->id_field);
        if (!json_is_integer(v))
            goto done;
        snprintf(id, sizeof id, "%lld", (long long)json_integer_value(v));
    }
    if (d->body == CALL_BODY_SPEC) {
        json_t *task = json_object_get(msg, "task"), *tasks = json_object_get(msg, "tasks");
        if (!!task == !!tasks || (task && !json_is_object(task)) ||
            (tasks && !json_is_array(tasks)))
            goto done;
        body = json_incref(task ? task : tasks);
    } else if (d->body != CALL_BODY_NONE) {
        body = json_object();
    }
    const char *key;
    json_t *value;
    json_object_foreach(msg, key, value) {
        if (strcmp(key, "op") == 0 || strcmp(key, "id") == 0 ||
            ((d->path & CALL_P_TARGETS) && strcmp(key, "targets") == 0) ||
            ((d->path & CALL_P_NAME) && strcmp(key, "name") == 0) ||
            ((d->path & CALL_P_ID) && strcmp(key, d->id_field) == 0))
            continue;
        int field = 0;
        for (int i = 0; d->fields[i]; i++)
            field |= strcmp(d->fields[i], key) == 0;
        if (field && d->body != CALL_BODY_SPEC) {
            json_object_set(body, key, value);
        } else if (!field && is_in(options, key)) {
            json_t *q = option_text(key, value);
            if (!q)
                goto done;
            json_object_set_new(query, key, q);
        } else if (!field) {
            goto done; /* an unknown field: REST would have nowhere to put it */
        }
    }
    call a, b;
    ippc_error ea = {{0}, {0}}, eb = {{0}, {0}};
    call_rest in = {.operation = d->operation,
                    .targets = targets,
                    .name = name,
                    .id = id,
                    .query = query,
                    .body = body};
    body = NULL; /* taken */
    int ra = call_from_rest(&a, &in, &ea);
    int rb = call_from_ws(&b, msg, &eb);
    if (ra != rb || strcmp(ea.code, eb.code) != 0 || strcmp(ea.message, eb.message) != 0)
        __builtin_trap();
    if (ra == 0) {
        if (a.def != b.def || a.id != b.id || a.block != b.block || a.timeout != b.timeout ||
            a.wait != b.wait || a.format != b.format || a.force != b.force ||
            !!a.targets != !!b.targets || (a.targets && strcmp(a.targets, b.targets) != 0) ||
            !!a.name != !!b.name || (a.name && strcmp(a.name, b.name) != 0) ||
            ((a.body || b.body) && !json_equal(a.body, b.body)))
            __builtin_trap();
        check_call(&a);
    }
    call_clear(&a);
    call_clear(&b);
done:
    free(targets);
    json_decref(body);
    json_decref(query);
    json_decref(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t control = data[0];
    const char *text = (const char *)data + 1;
    switch (control % 3) {
    case 0: run_ws(text, size - 1); break;
    case 1: run_rest(control, data + 1, size - 1); break;
    default: run_parity(text, size - 1); break;
    }
    return 0;
}
