/* task.c — one task's outcome and its result message, and the parts of the
 * ops that do not depend on the runtime's language (task.h). */
#include "task.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

/* A JSON string for arbitrary bytes: invalid UTF-8 becomes U+FFFD. */
json_t *json_text(const char *s, size_t n)
{
    json_t *j = json_stringn(s ? s : "", s ? n : 0);
    if (j || !s)
        return j;
    if (n > SIZE_MAX / 3)
        return NULL;
    char *clean = malloc(n * 3 + 1);
    if (!clean)
        return NULL;
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode(u + i, n - i, &cp);
        if (len) {
            memcpy(clean + o, u + i, len);
            o += len;
            i += len;
        } else {
            memcpy(clean + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(clean, o);
    free(clean);
    return j;
}

void task_fail(task_ctx *c, task_status status, const char *ename, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = vasprintf(&msg, fmt, ap);
    va_end(ap);
    c->status = status;
    snprintf(c->ename, sizeof c->ename, "%s", ename);
    json_decref(c->evalue);
    json_decref(c->traceback);
    c->evalue = json_text(len >= 0 ? msg : "out of memory", len >= 0 ? (size_t)len : 13);
    c->traceback = json_array();
    if (len >= 0 && c->traceback) {
        char *line = NULL;
        if (asprintf(&line, "%s: %s", ename, msg) >= 0) {
            json_array_append_new(c->traceback, json_text(line, strlen(line)));
            free(line);
        }
    }
    if (len >= 0)
        free(msg);
}

const char *task_string(task_ctx *c, const char *key, size_t *len)
{
    const json_t *v = json_object_get(c->task, key);
    if (!json_is_string(v)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "task needs a string '%s'", key);
        return NULL;
    }
    if (len)
        *len = json_string_length(v);
    return json_string_value(v);
}

void task_item_failed(task_ctx *c, long long index)
{
    json_t *e = json_pack("{s:I, s:s}", "index", (json_int_t)index, "ename", c->ename);
    if (e) {
        json_object_set_new(e, "evalue", c->evalue ? c->evalue : json_string(""));
        json_object_set_new(e, "traceback", c->traceback ? c->traceback : json_array());
        c->evalue = c->traceback = NULL;
    }
    json_array_append_new(c->item_errors, e);
    json_decref(c->evalue);
    json_decref(c->traceback);
    c->evalue = c->traceback = NULL;
    c->ename[0] = '\0';
    c->status = TASK_OK;
}

void task_items_settle(task_ctx *c)
{
    if (json_array_size(c->item_errors) == 0) {
        json_decref(c->item_errors);
        c->item_errors = NULL;
        return;
    }
    json_t *first = json_array_get(c->item_errors, 0);
    c->status = TASK_ERROR;
    snprintf(c->ename, sizeof c->ename, "%s", json_string_value(json_object_get(first, "ename")));
    json_decref(c->evalue);
    json_decref(c->traceback);
    c->evalue = json_incref(json_object_get(first, "evalue"));
    c->traceback = json_incref(json_object_get(first, "traceback"));
}

int task_start(task_ctx *c, runtime *rt, const atomic_int *interrupt, const json_t *task,
               ippc_blobs *task_blobs, ippc_blobs *result_blobs, taskout *out)
{
    const json_t *task_id = json_is_object(task) ? json_object_get(task, "task") : NULL;
    taskout_begin(out, json_is_integer(task_id) ? (uint64_t)json_integer_value(task_id) : 0);
    *c = (task_ctx){.rt = rt, .interrupt = interrupt, .task = task, .status = TASK_OK};
    blobs_init(&c->no_task_blobs);
    blobs_init(&c->own_results);
    c->task_blobs = task_blobs ? task_blobs : &c->no_task_blobs;
    c->result_blobs = result_blobs ? result_blobs : &c->own_results;
    c->first_blob = c->result_blobs->count;
    if (!json_is_object(task)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "a task must be a JSON object");
        return 0;
    }
    return 1;
}

json_t *task_finish(task_ctx *c, taskout *out)
{
    taskout_stream(out, 1); /* the sink sees every byte before the result exists */
    json_t *res = task_result(c, out);
    blobs_free(&c->own_results);
    taskout_end(out);
    return res;
}

int task_is_ref(const json_t *v)
{
    return json_is_object(v) && json_object_size(v) == 1 &&
           json_is_string(json_object_get(v, "$ref"));
}

int task_apply_args(task_ctx *c, const json_t **args, const json_t **kwargs)
{
    *args = json_object_get(c->task, "args");
    *kwargs = json_object_get(c->task, "kwargs");
    if ((*args && !json_is_array(*args) && !json_is_null(*args)) ||
        (*kwargs && !json_is_object(*kwargs) && !json_is_null(*kwargs))) {
        task_fail(c, TASK_ERROR, "ProtocolError",
                  "apply: 'args' must be a list, 'kwargs' an object");
        return -1;
    }
    return 0;
}

const json_t *task_map_sequences(task_ctx *c)
{
    const json_t *seqs = json_object_get(c->task, "sequences");
    if (!json_is_array(seqs) || json_array_size(seqs) == 0 || json_array_size(seqs) > 64) {
        task_fail(c, TASK_ERROR, "ProtocolError", "map: 'sequences' must be a list of 1..64");
        return NULL;
    }
    return seqs;
}

void task_map_begin(task_ctx *c)
{
    c->value = json_array();
    c->item_errors = json_array();
}

int task_map_item(task_ctx *c, long long index, json_t *v)
{
    if (c->status == TASK_ABORTED) { /* interrupted: the chunk ends here */
        json_decref(v);
        json_decref(c->value);
        json_decref(c->item_errors);
        c->value = c->item_errors = NULL;
        return -1;
    }
    if (c->status != TASK_OK) {
        task_item_failed(c, index);
        json_decref(v);
        v = json_null();
    }
    json_array_append_new(c->value, v);
    return 0;
}

void task_pull(task_ctx *c, task_pull_get get, void *arg)
{
    const json_t *names = json_object_get(c->task, "names");
    json_t *one = NULL;
    if (json_is_string(names)) { /* tolerate a single name */
        one = json_pack("[O]", names);
        names = one;
    }
    if (!json_is_array(names)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "pull needs a list 'names'");
        return;
    }
    c->value = json_object();
    size_t i;
    const json_t *item;
    json_array_foreach(names, i, item) {
        if (!json_is_string(item)) {
            task_fail(c, TASK_ERROR, "ProtocolError", "pull: names must be strings");
            break;
        }
        json_t *v = get(c, json_string_value(item), json_string_length(item), arg);
        if (!v)
            break;
        json_object_set_new(c->value, json_string_value(item), v);
    }
    json_decref(one);
}

static const char *const status_names[] = {"ok", "error", "aborted"};

json_t *task_result(task_ctx *c, const taskout *out)
{
    const json_t *task = c->task;
    json_t *res = json_object();
    if (!res)
        goto oom;
    json_object_set_new(res, "type", json_string("result"));
    json_object_set(res, "task",
                    json_is_object(task) && json_object_get(task, "task")
                        ? json_object_get(task, "task")
                        : json_null());
    json_object_set_new(res, "status", json_string(status_names[c->status]));
    json_object_set_new(res, "stdout", json_text(out->out.data ? out->out.data : "", out->out.len));
    /* A map chunk with failed items keeps its value (and its blobs). */
    int keep_value = c->status == TASK_OK || (c->status == TASK_ERROR && c->item_errors);
    if (keep_value && c->value)
        json_object_set_new(res, "value", c->value);
    else
        json_decref(c->value);
    c->value = NULL;
    if (c->status == TASK_OK && c->parts) /* a fanned-out gather's root */
        json_object_set_new(res, "parts", c->parts);
    else
        json_decref(c->parts);
    c->parts = NULL;
    if (c->status != TASK_OK) {
        json_object_set_new(res, "ename", json_string(c->ename));
        json_object_set_new(res, "evalue", c->evalue ? c->evalue : json_string(""));
        json_object_set_new(res, "traceback", c->traceback ? c->traceback : json_array());
        c->evalue = c->traceback = NULL;
        if (keep_value && c->item_errors)
            json_object_set(res, "item_errors", c->item_errors);
        else
            while (c->result_blobs->count > c->first_blob) /* nothing refers to them now */
                free(c->result_blobs->items[--c->result_blobs->count].data);
    }
    if (!json_object_get(res, "stdout") || !json_object_get(res, "status")) {
        json_decref(res);
        res = NULL;
    }
oom:
    json_decref(c->value);
    json_decref(c->parts);
    json_decref(c->evalue);
    json_decref(c->traceback);
    json_decref(c->item_errors);
    c->value = c->parts = c->evalue = c->traceback = c->item_errors = NULL;
    return res;
}
