/* fuzz_requests.c — libFuzzer entry for the hub's request parsers:
 * hub_submit (server/hub.c: every direct-view op), hub_task_submit and
 * hub_map_submit (server/tasks.c), and the answers built from what they
 * accepted (hub_request_json, hub_task_json, hub_request_array).
 *
 * Input: a target spec and a JSON body, as the REST and WS front ends hand
 * them to the hub.  The spec is the input's first bytes: up to a NUL among
 * the first 33 bytes, and then the JSON is what follows the NUL (so a valid
 * spec can meet a valid body); with no NUL there, the spec is the first 32
 * bytes and the JSON the whole input.  Every op runs once with that spec and
 * once with "all".  The input's last byte chooses how the fake engines then
 * answer the tasks they were sent, so that any JSON text can end with it:
 * ' ' not at all, '\t' "error", '\n' "aborted", '\r' engine 0 dies first and
 * the others answer "ok", anything else "ok".
 *
 * Each input gets a hub of its own (4 engines of one job, no store, no
 * events) that is freed at the end, so nothing is carried between inputs and
 * libFuzzer's leak check points at the input that leaked.  Measured under
 * ASan: a hub with its engines costs about 50 us, a fifth of an average
 * input's 250 us on a grown corpus; a shared hub would be faster but would
 * carry unanswered tasks from input to input and blur the checks below.
 *
 * Besides sanitizer findings, it checks: a failed submit fills the error; an
 * answered request is finished; no engine's queue count goes negative, and
 * once every task is answered no engine holds any.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"

#define N_ENGINES 4
#define MAX_SENT 65536
#define MAX_IDS 64

enum answer_mode { ANSWER_NONE, ANSWER_OK, ANSWER_ERROR, ANSWER_ABORTED, ANSWER_AFTER_DEATH };

/* Tasks the hub sent, in order, so they can be answered: the message itself
 * is dropped (send returns 0 and keeps no reference). */
typedef struct sent_task {
    int engine_id;
    uint64_t task_id;
} sent_task;

static sent_task sent[MAX_SENT];
static size_t n_sent;

static int fake_send(void *conn, json_t *msg, ws_blobref **blobs, size_t nblobs)
{
    (void)blobs;
    (void)nblobs;
    const char *type = json_string_value(json_object_get(msg, "type"));
    json_t *task = json_object_get(msg, "task");
    if (type && strcmp(type, "task") == 0 && json_is_integer(task) && n_sent < MAX_SENT)
        sent[n_sent++] = (sent_task){(int)(intptr_t)conn, (uint64_t)json_integer_value(task)};
    return 0;
}

static void fake_close(void *conn, const char *reason)
{
    (void)conn;
    (void)reason;
}

static hub *fuzz_hub_new(void)
{
    hub_config cfg = {.engine_key = "k"};
    hub *h = hub_new(&cfg);
    if (!h)
        return NULL;
    for (int rank = 0; rank < N_ENGINES; rank++) {
        json_t *msg =
            json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:i}", "type", "register", "key", "k", "job",
                      "j", "rank", rank, "size", N_ENGINES, "host", "h", "pid", 1);
        hub_engine_link link = {
            .conn = (void *)(intptr_t)rank, .send = fake_send, .close = fake_close};
        int engine_id = -1;
        ippc_error err = {0};
        /* One job registered first: rank r is engine r (hub.c's id blocks). */
        if (hub_engine_register(h, msg, &link, &engine_id, &err) < 0 || engine_id != rank)
            __builtin_trap();
        json_decref(msg);
    }
    return h;
}

/* The engine's answer to one task, as ws.c would hand it to the hub. */
static void answer_task(hub *h, const sent_task *t, int mode)
{
    json_t *msg = json_pack("{s:s, s:I, s:s}", "type", "result", "task", (json_int_t)t->task_id,
                            "stdout", "out\n");
    if (mode == ANSWER_ERROR) {
        json_object_set_new(msg, "status", json_string("error"));
        json_object_set_new(msg, "ename", json_string("ValueError"));
        json_object_set_new(msg, "evalue", json_string("bad"));
        json_object_set_new(msg, "traceback", json_pack("[s]", "line 1"));
    } else if (mode == ANSWER_ABORTED) {
        json_object_set_new(msg, "status", json_string("aborted"));
    } else {
        /* Names a fuzzer finds easily: a scalar and a list for pull/gather. */
        json_object_set_new(msg, "status", json_string("ok"));
        json_object_set_new(msg, "value", json_pack("{s:f, s:[i,i,i]}", "x", 1.5, "y", 1, 2, 3));
    }
    ippc_blobs blobs;
    blobs_init(&blobs);
    hub_engine_message(h, t->engine_id, msg, &blobs);
}

/* Answers everything sent so far and whatever that lets the scheduler send. */
static void answer_all(hub *h, int mode)
{
    if (mode == ANSWER_AFTER_DEATH) {
        hub_engine_closed(h, 0, "fuzz: engine 0 died");
        mode = ANSWER_OK;
    }
    for (size_t i = 0; i < n_sent; i++)
        answer_task(h, &sent[i], mode);
}

/* Engine queue counts: never negative; all zero once everything is answered. */
static void check_queue(hub *h, int all_answered)
{
    json_t *q = hub_queue(h);
    json_t *engines = json_object_get(q, "engines");
    for (void *it = json_object_iter(engines); it; it = json_object_iter_next(engines, it)) {
        json_t *e = json_object_iter_value(it);
        json_int_t queued = json_integer_value(json_object_get(e, "queued"));
        json_int_t running = json_integer_value(json_object_get(e, "running"));
        if (queued < 0 || running < 0)
            __builtin_trap();
        if (all_answered && (queued || running))
            __builtin_trap();
    }
    json_decref(q);
}

/* is_map: hub_request_array is only asked about direct-view requests, as
 * http_api.c does (raw answers of pull and gather). */
static void read_request(hub *h, uint64_t id, int is_map, int must_be_done)
{
    int done = 0;
    ippc_error err = {0};
    json_t *answer = hub_request_json(h, id, &done, &err);
    if (!answer)
        __builtin_trap(); /* it was accepted, so it is known */
    if (must_be_done && !done)
        __builtin_trap();
    json_decref(answer);

    if (is_map)
        return;
    hub_array a;
    ippc_error aerr = {0};
    if (hub_request_array(h, id, &a, &aerr) == 1) {
        if (a.len && !a.data)
            __builtin_trap();
        hub_array_release(&a);
    }
}

static void read_task(hub *h, uint64_t id)
{
    int finished = 0;
    ippc_error err = {0};
    json_t *doc = hub_task_json(h, id, &finished, &err);
    json_decref(doc);
}

static int answer_mode_of(uint8_t last)
{
    switch (last) {
    case ' ': return ANSWER_NONE;
    case '\t': return ANSWER_ERROR;
    case '\n': return ANSWER_ABORTED;
    case '\r': return ANSWER_AFTER_DEATH;
    default: return ANSWER_OK;
    }
}

static const hub_op view_ops[] = {
    HUB_OP_EXECUTE, HUB_OP_RUN,   HUB_OP_PUSH, HUB_OP_PULL,  HUB_OP_PULL_MANY, HUB_OP_SCATTER,
    HUB_OP_GATHER,  HUB_OP_APPLY, HUB_OP_LOAD, HUB_OP_RESET, HUB_OP_DELETE,    HUB_OP_LIST,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char spec[33];
    const uint8_t *text = data;
    size_t text_len = size;
    const uint8_t *nul = memchr(data, 0, size < sizeof spec ? size : sizeof spec);
    if (nul) {
        memcpy(spec, data, (size_t)(nul - data) + 1);
        text = nul + 1;
        text_len = size - (size_t)(text - data);
    } else {
        size_t n = size < sizeof spec - 1 ? size : sizeof spec - 1;
        memcpy(spec, data, n);
        spec[n] = '\0';
    }
    int mode = answer_mode_of(data[size - 1]);

    json_t *body = json_loadb((const char *)text, text_len, JSON_DECODE_ANY, NULL);
    if (!body)
        return 0;
    hub *h = fuzz_hub_new();
    if (!h) {
        json_decref(body);
        return 0;
    }
    n_sent = 0;

    uint64_t request_ids[MAX_IDS], task_ids[2];
    size_t n_requests = 0, n_tasks = 0;

    /* As ws_client.c does: the whole message is the body, "name" and
     * "format" come from it. */
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *format = json_string_value(json_object_get(body, "format"));
    const char *specs[2] = {spec, "all"};
    for (size_t s = 0; s < 2; s++) {
        for (size_t k = 0; k < sizeof view_ops / sizeof *view_ops; k++) {
            hub_call call = {.op = view_ops[k],
                             .targets = specs[s],
                             .body = body,
                             .name = name,
                             .format = format && strcmp(format, "typed") == 0 ? VALUE_FORMAT_TYPED
                                                                              : VALUE_FORMAT_LIST};
            ippc_error err = {0};
            uint64_t id = hub_submit(h, &call, &err);
            if (!id && !err.code[0])
                __builtin_trap();
            if (id && n_requests < MAX_IDS)
                request_ids[n_requests++] = id;
        }
    }

    ippc_error err = {0};
    uint64_t first = 0;
    json_t *submitted = hub_task_submit(h, body, &first, &err);
    if (submitted) {
        if (!json_object_get(submitted, "id") && !json_object_get(submitted, "ids"))
            __builtin_trap();
        task_ids[n_tasks++] = first;
        json_decref(submitted);
    } else if (!err.code[0]) {
        __builtin_trap();
    }

    ippc_error map_err = {0};
    uint64_t map_id = hub_map_submit(h, body, &map_err);
    if (map_id && n_requests < MAX_IDS)
        request_ids[n_requests++] = map_id;
    else if (!map_id && !map_err.code[0])
        __builtin_trap();

    if (n_tasks) {
        /* A resubmit parses the stored spec again; an abort of a running
         * task goes through the interrupt path. */
        ippc_error rerr = {0};
        uint64_t again = 0;
        json_t *resubmitted = hub_task_resubmit(h, task_ids[0], &rerr);
        json_t *id = json_object_get(resubmitted, "id");
        if (json_is_integer(id))
            again = (uint64_t)json_integer_value(id);
        json_decref(resubmitted);
        if (again)
            task_ids[n_tasks++] = again;
        ippc_error aerr = {0};
        json_decref(hub_task_abort(h, task_ids[0], mode & 1, &aerr));
    }

    hub_tick(h); /* a "timeout" under 1 ms is already over: those tasks time out here */
    for (size_t i = 0; i < n_requests; i++)
        read_request(h, request_ids[i], request_ids[i] == map_id, 0);
    for (size_t i = 0; i < n_tasks; i++)
        read_task(h, task_ids[i]);
    check_queue(h, 0);

    if (mode != ANSWER_NONE) {
        answer_all(h, mode);
        for (size_t i = 0; i < n_requests; i++)
            read_request(h, request_ids[i], request_ids[i] == map_id, 1);
        for (size_t i = 0; i < n_tasks; i++)
            read_task(h, task_ids[i]);
        check_queue(h, n_sent < MAX_SENT);
    }

    hub_free(h);
    json_decref(body);
    return 0;
}
