/* requests.c — direct-view and map requests: bookkeeping, waiting, answers
 * (see requests.h).
 *
 * Invariants (under the hub lock):
 *  - A request is in by_id and on exactly one of open / done; it is done iff
 *    nfinished == ntasks, and then its waiters have been woken.
 *  - tasks[i] is held (t->held) with t->request_id == id and
 *    t->request_index == i for as long as the request is kept.
 *  - done_order[0..nfinished) are the indexes of the finished tasks, in the
 *    order they finished.
 *  - After requests_trim, the done list holds at most max_kept requests and
 *    the task table's result_bytes is at most keep_bytes, except for what
 *    pinned requests and held tasks keep.
 *  - The done list is in finish order (finish_seq ascending).
 */
#include "requests.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "registry.h"

void requests_init(requests *rq, task_table *tasks, registry *engines, size_t max_kept,
                   size_t keep_bytes)
{
    memset(rq, 0, sizeof *rq);
    idmap_init(&rq->by_id);
    rq->next_id = 1;
    rq->max_kept = max_kept ? max_kept : 1;
    rq->keep_bytes = keep_bytes ? keep_bytes : SIZE_MAX;
    rq->tasks = tasks;
    rq->engines = engines;
    list_init(&rq->open.head);
    list_init(&rq->done.head);
}

static void request_list_append(request_list *l, request *r)
{
    list_push_back(&l->head, &r->link);
    l->count++;
}

static void request_list_remove(request_list *l, request *r)
{
    list_remove(&r->link);
    l->count--;
}

static request *request_of(list_node *node)
{
    return list_entry(node, request, link);
}

static void request_free(request *r)
{
    waiters_free(&r->waiters);
    free(r->tasks);
    free(r->done_order);
    free(r->name);
    json_decref(r->names);
    free(r);
}

/* Lets the request's tasks go to the task table's own bound, and frees it;
 * its id answers ERR_GONE for why from now on. */
static void request_forget(requests *rq, request *r, request_gone why)
{
    rq->forgotten[rq->forgotten_next].id = r->id;
    rq->forgotten[rq->forgotten_next].why = why;
    rq->forgotten_next = (rq->forgotten_next + 1) % REQUESTS_FORGOTTEN;
    rq->gone_total[why]++;
    idmap_remove(&rq->by_id, r->id);
    for (size_t i = 0; i < r->ntasks; i++)
        if (r->tasks[i])
            task_release(rq->tasks, r->tasks[i]);
    request_free(r);
}

void requests_free(requests *rq)
{
    /* The task table is freed with the hub: only the requests go here. */
    request_list *lists[2] = {&rq->open, &rq->done};
    for (int i = 0; i < 2; i++)
        while (!list_empty(&lists[i]->head)) {
            request *r = request_of(list_first(&lists[i]->head));
            request_list_remove(lists[i], r);
            request_free(r);
        }
    idmap_free(&rq->by_id);
}

static request *request_new(requests *rq, hub_op op, size_t ntasks)
{
    request *r = calloc(1, sizeof *r);
    if (!r || !(r->tasks = calloc(ntasks ? ntasks : 1, sizeof *r->tasks)) ||
        !(r->done_order = calloc(ntasks ? ntasks : 1, sizeof *r->done_order)) ||
        idmap_put(&rq->by_id, rq->next_id, r) < 0) {
        if (r) {
            free(r->tasks);
            free(r->done_order);
            free(r);
        }
        return NULL;
    }
    r->id = rq->next_id++;
    r->op = op;
    r->ntasks = ntasks;
    r->ordered = 1;
    request_list_append(&rq->open, r);
    return r;
}

int request_done(const request *r)
{
    return r->nfinished == r->ntasks;
}

static void request_finish(requests *rq, request *r)
{
    if (r->finished)
        return;
    r->finished = 1;
    r->finish_seq = rq->tasks->finished_total;
    if (r->waiters)
        r->awaited = 1; /* the woken will read it */
    if (r->awaited)
        r->pin_until_ms = clock_now_ms() + PIN_GRACE_MS;
    request_list_remove(&rq->open, r);
    request_list_append(&rq->done, r);
    waiters_wake(&r->waiters);
}

static int pinned(const request *r, int64_t *now)
{
    if (!r->awaited)
        return 0;
    if (!*now)
        *now = clock_now_ms();
    return *now < r->pin_until_ms;
}

void requests_trim(requests *rq)
{
    task_table *tt = rq->tasks;
    int64_t now = 0;
    list_node *it = list_first(&rq->done.head); /* the oldest not yet looked at */
    for (;;) {
        int over_count = rq->done.count > rq->max_kept;
        int over_bytes = tt->result_bytes > rq->keep_bytes;
        if (!over_count && !over_bytes)
            return;
        while (it && pinned(request_of(it), &now))
            it = it->next == &rq->done.head ? NULL : it->next;
        request *r = it ? request_of(it) : NULL;
        task *t = over_bytes ? task_list_first(tt, TASK_LIST_FINISHED) : NULL;
        if (!r && !t)
            return; /* only pinned requests and held tasks are left */
        if (r && (!t || r->finish_seq <= t->finish_seq)) {
            it = it->next == &rq->done.head ? NULL : it->next;
            request_list_remove(&rq->done, r);
            request_forget(rq, r, over_count ? GONE_COUNT : GONE_BYTES);
        } else {
            task_evict(tt, t);
        }
    }
}

/* Ops whose answers are values (failures go to "errors"), not task entries. */
static int pull_like(hub_op op)
{
    return op == HUB_OP_PULL || op == HUB_OP_PULL_MANY || op == HUB_OP_GATHER || op == HUB_OP_LIST;
}

void requests_answered(requests *rq, uint64_t id, int done)
{
    request *r = idmap_get(&rq->by_id, id);
    if (!r)
        return;
    r->awaited = 0;
    if (!r->blocking)
        return;
    if (!done) { /* the caller got "pending": it fetches the answer later */
        r->blocking = 0;
        return;
    }
    if (r->finished && r->op != HUB_OP_LIST && pull_like(r->op)) {
        request_list_remove(&rq->done, r);
        request_forget(rq, r, GONE_DELIVERED);
    }
}

/* A participant of a fanned-out data op ended without it (aborted, lost,
 * or failed before it was sent: too large for its engine): the others may be
 * waiting for it in the op, so each one still running is interrupted (a
 * queued one is then dropped by its engine, answered "aborted").  Once per
 * request. */
static void fanout_abandon(requests *rq, request *r, const task *t)
{
    int unsent = t->state == TASK_FAILED && !t->started[0];
    if (!r->fanout || r->fanout_abandoned ||
        (t->state != TASK_ABORTED && t->state != TASK_LOST && !unsent))
        return;
    r->fanout_abandoned = 1;
    for (size_t i = 0; i < r->ntasks; i++) {
        task *u = r->tasks[i];
        engine *e =
            u && u != t && u->state == TASK_RUNNING ? registry_live(rq->engines, u->engine) : NULL;
        if (!e)
            continue;
        json_t *msg = codec_interrupt(u->id);
        registry_send(rq->engines, e, msg, NULL, 0);
        json_decref(msg);
    }
}

void requests_task_finished(requests *rq, task *t)
{
    request *r = idmap_get(&rq->by_id, t->request_id);
    if (!r || t->request_index >= r->ntasks || r->tasks[t->request_index] != t)
        return; /* not (or no longer) one of a kept request's tasks */
    fanout_abandon(rq, r, t);
    r->done_order[r->nfinished++] = t->request_index;
    if (request_done(r))
        request_finish(rq, r);
}

static const char *op_name(hub_op op)
{
    static const char *names[] = {
        [HUB_OP_EXECUTE] = "execute", [HUB_OP_RUN] = "run",        [HUB_OP_PUSH] = "push",
        [HUB_OP_PULL] = "pull",       [HUB_OP_PULL_MANY] = "pull", [HUB_OP_SCATTER] = "scatter",
        [HUB_OP_GATHER] = "gather",   [HUB_OP_APPLY] = "apply",    [HUB_OP_LOAD] = "load",
        [HUB_OP_RESET] = "reset",     [HUB_OP_DELETE] = "delete",  [HUB_OP_LIST] = "list",
        [HUB_OP_MAP] = "map",
    };
    return (unsigned)op < sizeof names / sizeof *names && names[op] ? names[op] : "unknown";
}

/* What a direct task's document says it does: the op, the code or function
 * its message carries, and the data op it is part of (fanout: shared). */
static json_t *direct_spec(hub_op op, const codec_msg *m, json_t *fanout)
{
    json_t *spec = json_pack("{s:s}", "op", op_name(op));
    if (fanout)
        json_object_set(spec, "fanout", fanout);
    const char *key = op == HUB_OP_EXECUTE ? "code" : op == HUB_OP_APPLY ? "function" : NULL;
    json_t *v = key ? json_object_get(m->msg, key) : NULL;
    if (json_is_string(v))
        json_object_set(spec, key, v); /* shared, never changed */
    return spec;
}

/* What fans out, for submit(): the root's task index and the op's id. */
typedef struct fanout_info {
    size_t root;
    uint64_t id;
} fanout_info;

static uint64_t submit(requests *rq, const hub_call *c, const int *targets, size_t n,
                       codec_msg *const *msgs, size_t nmsgs, json_t *names, const fanout_info *fo,
                       ippc_error *err)
{
    request *r = request_new(rq, c->op, n);
    if (r) {
        r->names = names;
        names = NULL;
    }
    if (!r || (c->name && !(r->name = strdup(c->name))) ||
        (c->op == HUB_OP_PULL_MANY && !r->names)) {
        json_decref(names);
        if (r) {
            request_list_remove(&rq->open, r);
            idmap_remove(&rq->by_id, r->id);
            rq->next_id--;
            request_free(r);
        }
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return 0;
    }
    r->format = c->format;
    json_t *fanout = NULL;
    if (fo) {
        r->fanout = 1;
        r->fanout_id = fo->id;
        r->fanout_root = fo->root;
        fanout = json_pack("{s:I, s:i}", "id", (json_int_t)fo->id, "root", targets[fo->root]);
    }
    r->blocking = r->awaited = c->blocking != 0;
    /* Every task exists (and is attached) before the first is sent: a send
     * that fails finishes its task, and the request counts it. */
    size_t made = 0;
    for (; made < n; made++) {
        codec_msg *m = msgs[nmsgs == 1 ? 0 : made];
        task *t = task_new(TASK_DIRECT, direct_spec(c->op, m, fanout), codec_msg_ref(m));
        if (t)
            t->engine = targets[made];
        if (!t || task_add(rq->tasks, t, TASK_PENDING, r->id, made, 1) < 0) {
            task_discard(t);
            break;
        }
        r->tasks[made] = t;
    }
    json_decref(fanout);
    if (made < n) {
        /* Out of memory: what was made fails unsent, and the request ends. */
        r->ntasks = made;
        for (size_t i = 0; i < made; i++)
            task_finish(
                rq->tasks, r->tasks[i], TASK_FAILED,
                task_result_new(codec_synth_result("error", "MemoryError", "out of memory"), NULL));
        requests_attached(rq, r, made);
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return 0;
    }
    uint64_t id = r->id;
    for (size_t i = 0; i < n; i++) {
        task *t = r->tasks[i];
        engine *e = registry_get(rq->engines, t->engine);
        if (r->fanout_abandoned) /* a participant could not be sent its part */
            task_finish(rq->tasks, t, TASK_FAILED,
                        task_result_new(codec_synth_result("error", "FanoutError",
                                                           "not sent: another participant of "
                                                           "this data op could not be reached"),
                                        NULL));
        else if (e)
            task_start(rq->tasks, t, e); /* a failed send finishes it as lost */
    }
    return id;
}

uint64_t requests_submit(requests *rq, const hub_call *c, const int *targets, size_t n,
                         codec_msg *const *msgs, size_t nmsgs, json_t *names, ippc_error *err)
{
    return submit(rq, c, targets, n, msgs, nmsgs, names, NULL, err);
}

uint64_t requests_submit_fanout(requests *rq, const hub_call *c, const int *targets, size_t n,
                                codec_msg *const *msgs, size_t root_index, uint64_t fanout_id,
                                ippc_error *err)
{
    fanout_info fo = {.root = root_index, .id = fanout_id};
    return submit(rq, c, targets, n, msgs, n, NULL, &fo, err);
}

request *requests_open_map(requests *rq, size_t nchunks, int ordered, size_t items,
                           size_t chunksize)
{
    request *r = request_new(rq, HUB_OP_MAP, nchunks);
    if (r) {
        r->ordered = ordered;
        r->map_items = items;
        r->map_chunksize = chunksize ? chunksize : 1;
    }
    return r;
}

void requests_attach(request *r, size_t index, task *t)
{
    r->tasks[index] = t;
}

void requests_attached(requests *rq, request *r, size_t n)
{
    r->ntasks = n;
    if (request_done(r))
        request_finish(rq, r);
}

request *requests_get(requests *rq, uint64_t id)
{
    return idmap_get(&rq->by_id, id);
}

int requests_wait(requests *rq, uint64_t id, int64_t deadline_ms, void (*wake)(void *arg),
                  void (*registered)(void *arg), void *arg)
{
    request *r = idmap_get(&rq->by_id, id);
    if (!r)
        return -1;
    r->awaited = 1;
    if (r->finished)
        r->pin_until_ms = clock_now_ms() + PIN_GRACE_MS;
    if (request_done(r) || waiters_add(&r->waiters, deadline_ms, wake, arg) < 0)
        return 1; /* done, or cannot wait: answer with what there is */
    if (registered)
        registered(arg);
    return 0;
}

void requests_tick(requests *rq, int64_t now)
{
    list_for_each(it, &rq->open.head)
        waiters_tick(&request_of(it)->waiters, now);
}

void requests_wake_all(requests *rq)
{
    list_for_each(it, &rq->open.head)
        waiters_wake(&request_of(it)->waiters);
}

/* ------------------------------------------------------------ views */

typedef struct view_item {
    uint64_t task;
    int engine;
    task_state state;
    task_result *result; /* NULL until finished */
} view_item;

struct request_view {
    uint64_t id;
    hub_op op;
    size_t n, nfinished;
    int ordered;
    size_t map_items, map_chunksize;
    value_format format;
    int fanout; /* a fanned-out gather answers from the root's task */
    size_t fanout_root;
    char *name;
    json_t *names;
    view_item *items;
    size_t *done_order;
};

void request_view_free(request_view *v)
{
    if (!v)
        return;
    for (size_t i = 0; v->items && i < v->n; i++)
        task_result_unref(v->items[i].result);
    free(v->items);
    free(v->done_order);
    free(v->name);
    json_decref(v->names);
    free(v);
}

/* Why id is not here: never handed out (not_found), or forgotten (gone). */
static void request_gone_error(const requests *rq, uint64_t id, ippc_error *err)
{
    if (id == 0 || id >= rq->next_id) {
        ippc_error_set(err, ERR_NOT_FOUND, "no request with id %" PRIu64, id);
        return;
    }
    int why = -1;
    for (size_t i = 0; i < REQUESTS_FORGOTTEN && why < 0; i++)
        if (rq->forgotten[i].id == id)
            why = (int)rq->forgotten[i].why;
    switch (why) {
    case GONE_BYTES:
        ippc_error_set(err, ERR_GONE,
                       "request %" PRIu64 " was evicted to stay within --keep-results-mb (%zu "
                       "MiB of results kept); fetch answers sooner or raise the limit",
                       id, rq->keep_bytes == SIZE_MAX ? (size_t)0 : rq->keep_bytes >> 20);
        break;
    case GONE_COUNT:
        ippc_error_set(err, ERR_GONE,
                       "request %" PRIu64 " was evicted: only the last %zu finished requests are "
                       "kept",
                       id, rq->max_kept);
        break;
    case GONE_DELIVERED:
        ippc_error_set(err, ERR_GONE,
                       "request %" PRIu64 " was a blocking pull or gather: its answer was "
                       "delivered and released (ask with ?block=false to fetch it later)",
                       id);
        break;
    default:
        ippc_error_set(err, ERR_GONE,
                       "request %" PRIu64 " is no longer kept (finished requests are kept within "
                       "--keep-results-mb and the last %zu)",
                       id, rq->max_kept);
    }
}

request_view *requests_view(requests *rq, uint64_t id, ippc_error *err)
{
    request *r = idmap_get(&rq->by_id, id);
    if (!r) {
        request_gone_error(rq, id, err);
        return NULL;
    }
    request_view *v = calloc(1, sizeof *v);
    if (!v || !(v->items = calloc(r->ntasks ? r->ntasks : 1, sizeof *v->items)) ||
        !(v->done_order = calloc(r->ntasks ? r->ntasks : 1, sizeof *v->done_order)) ||
        (r->name && !(v->name = strdup(r->name)))) {
        request_view_free(v);
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    v->id = r->id;
    v->op = r->op;
    v->n = r->ntasks;
    v->nfinished = r->nfinished;
    v->ordered = r->ordered;
    v->map_items = r->map_items;
    v->map_chunksize = r->map_chunksize;
    v->format = r->format;
    v->fanout = r->fanout;
    v->fanout_root = r->fanout_root;
    v->names = json_incref(r->names); /* never changed after submit */
    memcpy(v->done_order, r->done_order, r->nfinished * sizeof *v->done_order);
    for (size_t i = 0; i < r->ntasks; i++) {
        const task *t = r->tasks[i];
        v->items[i] = (view_item){.task = t->id,
                                  .engine = t->engine,
                                  .state = t->state,
                                  .result = task_result_ref(t->result)};
    }
    return v;
}

int request_view_done(const request_view *v)
{
    return v->nfinished == v->n;
}

static const json_t *item_msg(const view_item *it)
{
    return it->result ? it->result->msg : NULL;
}

static const ippc_blobs *item_blobs(const view_item *it)
{
    static const ippc_blobs none = {0};
    return it->result ? &it->result->blobs : &none;
}

static json_t *error_entry(int engine_id, const json_t *res)
{
    json_t *e = json_pack("{s:i}", "engine", engine_id);
    codec_copy_error(e, res);
    return e;
}

/* A value that could not be converted becomes an error entry of the answer. */
static void add_conversion_error(json_t *errors, int engine_id, const ippc_error *err)
{
    json_array_append_new(errors, json_pack("{s:i, s:s, s:s, s:[]}", "engine", engine_id, "ename",
                                            "ValueError", "evalue", err->message, "traceback"));
}

/* One value of a pull result, converted for the client; NULL + err. */
static json_t *pulled_value(const view_item *it, const char *name, value_format fmt,
                            ippc_error *err)
{
    json_t *skel = json_object_get(json_object_get(item_msg(it), "value"), name);
    if (!skel) {
        ippc_error_set(err, ERR_INTERNAL, "engine %d sent no value for %s", it->engine, name);
        return NULL;
    }
    return value_to_client(skel, item_blobs(it), fmt, err);
}

static json_t *task_entry(const view_item *it, value_format fmt, json_t *errors)
{
    const json_t *res = item_msg(it);
    const char *status = codec_result_status(res);
    const char *out = json_string_value(json_object_get(res, "stdout"));
    json_t *e = json_pack("{s:i, s:s, s:s}", "engine", it->engine, "status",
                          status ? status : "error", "stdout", out ? out : "");
    json_t *skel = json_object_get(res, "value");
    if (skel && codec_result_ok(res)) {
        ippc_error cerr = {0};
        json_t *v = value_to_client(skel, item_blobs(it), fmt, &cerr);
        if (v)
            json_object_set_new(e, "value", v);
        else
            add_conversion_error(errors, it->engine, &cerr);
    }
    if (!codec_result_ok(res))
        codec_copy_error(e, res);
    return e;
}

/* A fanned-out gather's value: the root's concatenation as it is (its
 * blobs), or its "parts" (one per participant, numbering the root's blobs)
 * concatenated here as per-engine pulls would be.  NULL + err. */
static json_t *fanout_gather_skel(const request_view *v, ippc_blobs *out_blobs,
                                  const ippc_blobs **blobs_used, int *bad, ippc_error *err)
{
    const view_item *root = &v->items[v->fanout_root];
    const json_t *res = item_msg(root);
    json_t *skel = json_object_get(json_object_get(res, "value"), v->name);
    json_t *parts = json_object_get(res, "parts");
    *bad = root->engine;
    if (skel) {
        *blobs_used = item_blobs(root);
        return json_incref(skel);
    }
    if (!json_is_array(parts) || json_array_size(parts) != v->n) {
        ippc_error_set(err, ERR_INTERNAL, "engine %d sent no gathered value for %s", root->engine,
                       v->name);
        return NULL;
    }
    json_t **each = calloc(v->n ? v->n : 1, sizeof *each);
    ippc_blobs *blobs = calloc(v->n ? v->n : 1, sizeof *blobs);
    if (!each || !blobs) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
    } else {
        for (size_t i = 0; i < v->n; i++) {
            each[i] = json_array_get(parts, i);
            blobs[i] = *item_blobs(root); /* shallow: every part numbers the root's blobs */
        }
        skel = value_gather(each, blobs, v->n, out_blobs, err);
        *blobs_used = out_blobs;
    }
    free(each);
    free(blobs);
    return skel;
}

/* The gathered value's skeleton (new reference) and the blobs it numbers
 * (*blobs_used: out_blobs, filled, or a result's), or NULL + err (failing
 * engine in *bad). */
static json_t *gather_skel(const request_view *v, ippc_blobs *out_blobs,
                           const ippc_blobs **blobs_used, int *bad, ippc_error *err)
{
    if (v->fanout)
        return fanout_gather_skel(v, out_blobs, blobs_used, bad, err);
    json_t **parts = calloc(v->n ? v->n : 1, sizeof *parts);
    ippc_blobs *blobs = calloc(v->n ? v->n : 1, sizeof *blobs);
    json_t *skel = NULL;
    *bad = -1;
    *blobs_used = out_blobs;
    if (!parts || !blobs) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < v->n; i++) {
        parts[i] = json_object_get(json_object_get(item_msg(&v->items[i]), "value"), v->name);
        blobs[i] = *item_blobs(&v->items[i]); /* shallow: value_gather only reads */
        if (!parts[i]) {
            *bad = v->items[i].engine;
            ippc_error_set(err, ERR_INTERNAL, "engine %d sent no value for %s", *bad, v->name);
            goto done;
        }
    }
    skel = value_gather(parts, blobs, v->n, out_blobs, err);
done:
    free(parts);
    free(blobs);
    return skel;
}

static json_t *gather_result(const request_view *v, value_format fmt, json_t *errors)
{
    ippc_blobs out_blobs;
    blobs_init(&out_blobs);
    ippc_error err = {0};
    int bad = -1;
    const ippc_blobs *blobs = &out_blobs;
    json_t *skel = gather_skel(v, &out_blobs, &blobs, &bad, &err);
    json_t *out = skel ? value_to_client(skel, blobs, fmt, &err) : NULL;
    json_decref(skel);
    blobs_free(&out_blobs);
    if (!out)
        add_conversion_error(errors, bad, &err);
    return out ? out : json_null();
}

static json_t *ids_json(const request_view *v)
{
    json_t *a = json_array();
    for (size_t i = 0; i < v->n; i++)
        json_array_append_new(a, json_integer((json_int_t)v->items[i].task));
    return a;
}

/* The error entry of a map answer for the item at index of "results"
 * (item: its position in the sequences), from an {ename, evalue, traceback}
 * holder. */
static json_t *map_error_entry(uint64_t task_id, size_t index, size_t item, const json_t *from)
{
    json_t *e = json_pack("{s:I, s:I, s:I}", "task", (json_int_t)task_id, "index",
                          (json_int_t)index, "item", (json_int_t)item);
    codec_copy_error(e, from);
    return e;
}

static json_t *made_error(const char *ename, const char *evalue)
{
    return json_pack("{s:s, s:s, s:[]}", "ename", ename, "evalue", evalue, "traceback");
}

/* Appends a chunk's items (items lo .. lo + count - 1) to results, and an
 * entry to errors for each one that has no value, so results always line
 * up with the items.  A chunk that ran has a value per item; an item that
 * failed in it is null, with its own error (the engine's "item_errors"); a
 * chunk that failed as a whole (no such function, interrupted, timed out,
 * engine lost, its value unreadable) gives every item the chunk's error. */
static void map_chunk_answer(const view_item *it, size_t lo, size_t count, value_format fmt,
                             json_t *results, json_t *errors)
{
    const json_t *res = item_msg(it);
    const json_t *skel = json_object_get(res, "value");
    const json_t *item_errors = json_object_get(res, "item_errors");
    json_t *values = NULL, *chunk_error = NULL;
    if (skel && (it->state == TASK_COMPLETED || (it->state == TASK_FAILED && item_errors))) {
        ippc_error err = {0};
        values = value_to_client(skel, item_blobs(it), fmt, &err);
        if (!values)
            chunk_error = made_error("ValueError", err.message);
    } else if (it->state != TASK_COMPLETED) {
        chunk_error = json_object();
        codec_copy_error(chunk_error, res);
    } else {
        chunk_error = made_error("ProtocolError", "the engine sent no map results");
    }
    if (values && !chunk_error && (!json_is_array(values) || json_array_size(values) != count)) {
        char why[160];
        snprintf(why, sizeof why, "the engine sent %zu map results for %zu items",
                 json_is_array(values) ? json_array_size(values) : (size_t)1, count);
        chunk_error = made_error("ProtocolError", why);
    }
    /* own[j]: item j's error when it failed alone ("index" is within the chunk) */
    const json_t **own = count ? calloc(count, sizeof *own) : NULL;
    size_t k;
    json_t *e;
    json_array_foreach(item_errors, k, e) {
        json_t *at = json_object_get(e, "index");
        if (own && json_is_integer(at) && json_integer_value(at) >= 0 &&
            (uint64_t)json_integer_value(at) < count)
            own[json_integer_value(at)] = e;
    }
    if (count && !own && !chunk_error) /* out of memory: no item is vouched for */
        chunk_error = made_error("MemoryError", "out of memory");
    for (size_t j = 0; j < count; j++) {
        const json_t *why = chunk_error ? chunk_error : own ? own[j] : NULL;
        size_t index = json_array_size(results);
        if (!why) {
            json_array_append(results, json_array_get(values, j));
            continue;
        }
        json_array_append_new(results, json_null());
        json_array_append_new(errors, map_error_entry(it->task, index, lo + j, why));
    }
    free(own);
    json_decref(values);
    json_decref(chunk_error);
}

static json_t *map_answer(const request_view *v, value_format fmt)
{
    json_t *out = json_pack("{s:I, s:o}", "request", (json_int_t)v->id, "tasks", ids_json(v));
    if (!request_view_done(v)) {
        json_object_set_new(out, "status", json_string("pending"));
        json_object_set_new(out, "finished", json_integer((json_int_t)v->nfinished));
        return out;
    }
    /* Ordered: chunks in input order; unordered: in the order they finished.
     * Either way each chunk's items stay together, in input order. */
    json_t *results = json_array(), *errors = json_array();
    for (size_t k = 0; k < v->n; k++) {
        size_t c = v->ordered ? k : v->done_order[k];
        size_t lo = c * v->map_chunksize;
        size_t count = lo < v->map_items ? v->map_items - lo : 0;
        if (count > v->map_chunksize)
            count = v->map_chunksize;
        map_chunk_answer(&v->items[c], lo, count, fmt, results, errors);
    }
    json_object_set_new(out, "results", results);
    if (json_array_size(errors))
        json_object_set(out, "errors", errors);
    json_object_set_new(out, "status", json_string(json_array_size(errors) ? "error" : "ok"));
    json_decref(errors);
    return out;
}

json_t *request_view_json(const request_view *v, int as)
{
    value_format fmt = as < 0 ? v->format : (value_format)as;
    if (v->op == HUB_OP_MAP)
        return map_answer(v, fmt);
    json_t *targets = json_array();
    for (size_t i = 0; i < v->n; i++)
        json_array_append_new(targets, json_integer(v->items[i].engine));
    json_t *out = json_pack("{s:I, s:o}", "request", (json_int_t)v->id, "targets", targets);
    if (!request_view_done(v)) {
        json_object_set_new(out, "status", json_string("pending"));
        json_object_set_new(out, "finished", json_integer((json_int_t)v->nfinished));
        return out;
    }
    json_t *errors = json_array();
    json_t *results = json_array();
    int failed = 0;
    for (size_t i = 0; i < v->n; i++) {
        const view_item *it = &v->items[i];
        const json_t *res = item_msg(it);
        int ok = codec_result_ok(res);
        if (!ok && pull_like(v->op))
            json_array_append_new(errors, error_entry(it->engine, res));
        switch (v->op) {
        case HUB_OP_PULL: {
            ippc_error err = {0};
            json_t *val = ok ? pulled_value(it, v->name, fmt, &err) : NULL;
            if (ok && !val)
                add_conversion_error(errors, it->engine, &err);
            json_array_append_new(results, val ? val : json_null());
            break;
        }
        case HUB_OP_PULL_MANY: {
            json_t *vals = NULL;
            if (ok) {
                vals = json_array();
                size_t k;
                json_t *n;
                json_array_foreach(v->names, k, n) {
                    ippc_error err = {0};
                    json_t *val = pulled_value(it, json_string_value(n), fmt, &err);
                    if (!val)
                        add_conversion_error(errors, it->engine, &err);
                    json_array_append_new(vals, val ? val : json_null());
                }
            }
            json_array_append_new(results, vals ? vals : json_null());
            break;
        }
        case HUB_OP_GATHER: break;
        case HUB_OP_LIST: {
            json_t *listing = json_object_get(res, "value");
            json_array_append(results, ok && listing ? listing : json_null());
            break;
        }
        default: json_array_append_new(results, task_entry(it, fmt, errors)); break;
        }
        failed |= !ok;
    }
    if (v->op == HUB_OP_GATHER) {
        json_object_set_new(out, "result",
                            json_array_size(errors) ? json_null() : gather_result(v, fmt, errors));
        json_decref(results);
    } else {
        json_object_set_new(out, "results", results);
    }
    /* Pull-like answers list failures in "errors"; execute-like answers carry
     * them inside each result, and "errors" only for values that could not be
     * converted. */
    if (json_array_size(errors)) {
        failed = 1;
        json_object_set(out, "errors", errors);
    }
    json_decref(errors);
    json_object_set_new(out, "status", json_string(failed ? "error" : "ok"));
    return out;
}

void request_array_release(request_array *a)
{
    if (!a)
        return;
    task_result_unref(a->hold);
    free(a->owned);
    memset(a, 0, sizeof *a);
}

/* A gather's parts as one array: every part must be an array (checked
 * before value_gather, which would build JSON lists for anything else); the
 * result is one buffer, filled once, that out owns.  0 or -1 + err. */
/* A fanned-out gather's raw answer: the root's concatenated array (held, not
 * copied), or its parts made into one here. */
static int fanout_gather_array(const request_view *v, request_array *out, ippc_error *err)
{
    const view_item *root = &v->items[v->fanout_root];
    const json_t *skel = json_object_get(json_object_get(item_msg(root), "value"), v->name);
    if (skel) {
        int is_nd = value_nd_ref(skel, item_blobs(root), &out->ref, err);
        if (is_nd < 0)
            return -1;
        const ippc_blobs *rb = item_blobs(root);
        if (is_nd == 0 || !rb->items || out->ref.blob >= rb->count)
            return ippc_error_set(err, ERR_INVALID, "the value of %s is not an array", v->name);
        out->data = rb->items[out->ref.blob].data;
        out->len = rb->items[out->ref.blob].len;
        out->hold = task_result_ref(root->result);
        return 0;
    }
    /* "parts", in target order: each must be an array, as per-engine parts
     * must; then they are made into one below. */
    const json_t *parts = json_object_get(item_msg(root), "parts");
    for (size_t i = 0; i < json_array_size(parts) && i < v->n; i++) {
        nd_ref ref;
        int rc = value_nd_ref(json_array_get(parts, i), item_blobs(root), &ref, err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return ippc_error_set(err, ERR_INVALID, "the value of %s on engine %d is not an array",
                                  v->name, v->items[i].engine);
    }
    return -2;
}

static int gather_array(const request_view *v, request_array *out, ippc_error *err)
{
    if (v->fanout) {
        int rc = fanout_gather_array(v, out, err);
        if (rc != -2)
            return rc;
    }
    /* (A fanned-out gather's parts come from its root: value_gather below
     * says whether they make one array.) */
    for (size_t i = 0; !v->fanout && i < v->n; i++) {
        const json_t *part =
            json_object_get(json_object_get(item_msg(&v->items[i]), "value"), v->name);
        nd_ref ref;
        int rc = part ? value_nd_ref(part, item_blobs(&v->items[i]), &ref, err) : 0;
        if (rc < 0)
            return -1;
        if (rc == 0)
            return ippc_error_set(err, ERR_INVALID, "the value of %s on engine %d is not an array",
                                  v->name, v->items[i].engine);
    }
    ippc_blobs owned;
    blobs_init(&owned);
    int bad;
    const ippc_blobs *blobs = &owned;
    json_t *skel = gather_skel(v, &owned, &blobs, &bad, err);
    int rc = -1;
    int is_nd = skel && blobs == &owned ? value_nd_ref(skel, &owned, &out->ref, err) : -1;
    if (is_nd == 0)
        ippc_error_set(err, ERR_INVALID,
                       "the parts of %s do not make one array (dtypes or trailing shapes "
                       "differ)",
                       v->name);
    if (is_nd == 1) {
        ippc_blob *b = &owned.items[out->ref.blob];
        out->owned = b->data ? b->data : malloc(1);
        out->data = out->owned;
        out->len = b->len;
        b->data = NULL; /* now out's */
        b->len = 0;
        rc = out->owned ? 0 : ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    json_decref(skel);
    blobs_free(&owned);
    return rc;
}

/* Every engine of a finished request succeeded, or -1 + err naming the
 * first that did not. */
static int all_ok(const request_view *v, ippc_error *err)
{
    if (!request_view_done(v))
        return ippc_error_set(err, ERR_CONFLICT, "request %llu is not finished",
                              (unsigned long long)v->id);
    for (size_t i = 0; i < v->n; i++)
        if (!codec_result_ok(item_msg(&v->items[i])))
            return ippc_error_set(
                err, ERR_INVALID, "engine %d: %s", v->items[i].engine,
                json_string_value(json_object_get(item_msg(&v->items[i]), "evalue")));
    return 0;
}

void request_parts_free(request_part *parts, size_t n)
{
    for (size_t i = 0; parts && i < n; i++) {
        task_result_unref(parts[i].hold);
        free(parts[i].json);
    }
    free(parts);
}

/* One target's part: its array by reference, or its value as JSON text. */
static int view_part(const request_view *v, const view_item *it, request_part *part,
                     ippc_error *err)
{
    part->engine = it->engine;
    const json_t *skel = json_object_get(json_object_get(item_msg(it), "value"), v->name);
    if (!skel)
        return ippc_error_set(err, ERR_INTERNAL, "engine %d sent no value for %s", it->engine,
                              v->name);
    int is_nd = value_nd_ref(skel, item_blobs(it), &part->ref, err);
    if (is_nd < 0)
        return -1;
    if (is_nd) {
        /* value_nd_ref checked the blob index against the blobs it was given. */
        const ippc_blobs *blobs = item_blobs(it);
        assert(blobs->items && part->ref.blob < blobs->count);
        const ippc_blob *b = &blobs->items[part->ref.blob];
        part->is_array = 1;
        part->data = b->data;
        part->len = b->len;
        part->hold = task_result_ref(it->result);
        return 0;
    }
    json_t *value = value_to_client(skel, item_blobs(it), VALUE_FORMAT_LIST, err);
    part->json = value ? jsonout_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(value);
    if (!part->json)
        return value ? ippc_error_set(err, ERR_INTERNAL, "out of memory") : -1;
    part->data = (const unsigned char *)part->json;
    part->len = strlen(part->json);
    return 0;
}

int request_view_parts(const request_view *v, request_part **parts, size_t *n, ippc_error *err)
{
    *parts = NULL;
    *n = 0;
    if (v->op != HUB_OP_PULL)
        return ippc_error_set(err, ERR_INVALID,
                              "multipart answers are for pulls of one variable (GET vars/{name})");
    if (all_ok(v, err) < 0)
        return -1;
    request_part *out = calloc(v->n ? v->n : 1, sizeof *out);
    if (!out)
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < v->n; i++) {
        if (view_part(v, &v->items[i], &out[i], err) < 0) {
            request_parts_free(out, v->n);
            return -1;
        }
    }
    *parts = out;
    *n = v->n;
    return 0;
}

int request_view_array(const request_view *v, request_array *out, ippc_error *err)
{
    memset(out, 0, sizeof *out);
    if (v->op == HUB_OP_MAP)
        return ippc_error_set(err, ERR_INVALID, "a map's answer is JSON, not one array");
    if (all_ok(v, err) < 0)
        return -1;
    if (v->op == HUB_OP_GATHER)
        return gather_array(v, out, err);
    if (v->op != HUB_OP_PULL || v->n != 1)
        return ippc_error_set(err, ERR_INVALID,
                              "one array (application/octet-stream or application/x-npy) is "
                              "the answer of a pull of one target, or of a gather; a pull "
                              "from several engines answers in binary as multipart/mixed");
    const view_item *it = &v->items[0];
    const json_t *skel = json_object_get(json_object_get(item_msg(it), "value"), v->name);
    int is_nd = skel ? value_nd_ref(skel, item_blobs(it), &out->ref, err) : 0;
    if (is_nd < 0)
        return -1;
    if (is_nd == 0)
        return ippc_error_set(err, ERR_INVALID, "the value is not an array");
    /* value_nd_ref checked the blob index against the blobs it was given. */
    assert(out->ref.blob < item_blobs(it)->count);
    const ippc_blob *b = &item_blobs(it)->items[out->ref.blob];
    out->data = b->data;
    out->len = b->len;
    out->hold = task_result_ref(it->result);
    return 0;
}
