/* task_table.c — the task record, its state machine and the task table (see
 * task_table.h).
 *
 * Invariants (under the hub lock):
 *  - Every task in memory is in by_id; t->list names the one list holding it
 *    (-1 none): waiting, pending and running hold exactly the tasks in those
 *    states; finished holds finished tasks that no request holds, oldest
 *    first, at most keep_finished of them.
 *  - counts[s] is the number of tasks in memory in state s.
 *  - A task is running iff it has an engine that counted it in its queue
 *    (registry_task_started without _ended yet).
 *  - t->result is set iff t is finished, and never changes afterwards except
 *    when a released direct task keeps only its outcome.
 *  - t->dirty iff t is on the dirty list: its store record is older than
 *    the task.
 */
#include "task_table.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "registry.h"
#include "store.h"

/* ------------------------------------------------------------ names */

const char *task_kind_name(task_kind kind)
{
    return kind == TASK_DIRECT ? "direct" : "balanced";
}

int task_kind_parse(const char *name)
{
    if (name && strcmp(name, "direct") == 0)
        return TASK_DIRECT;
    if (name && strcmp(name, "balanced") == 0)
        return TASK_BALANCED;
    return -1;
}

const char *task_state_name(task_state s)
{
    static const char *names[TASK_NSTATES] = {"pending", "pending", "running", "completed",
                                              "failed",  "aborted", "lost"};
    return (unsigned)s < TASK_NSTATES ? names[s] : "unknown";
}

const char *task_state_label(task_state s)
{
    return s == TASK_WAITING ? "waiting" : task_state_name(s);
}

int task_state_finished(task_state s)
{
    return s >= TASK_COMPLETED && s < TASK_NSTATES;
}

#define BIT(s) (1u << (s))
#define ENDS (BIT(TASK_COMPLETED) | BIT(TASK_FAILED) | BIT(TASK_ABORTED) | BIT(TASK_LOST))

/* legal[kind][from]: the states a task may go to.  A direct task is sent as
 * soon as it exists, so it is never waiting and never taken back, and fails
 * unsent only when its request could not be made; a balanced task may be
 * failed or aborted before it ran (dependencies, timeouts, abort) and taken
 * back when its engine dies. */
static const unsigned legal[TASK_NKINDS][TASK_NSTATES] = {
    [TASK_DIRECT] =
        {
            [TASK_PENDING] = BIT(TASK_RUNNING) | BIT(TASK_FAILED),
            [TASK_RUNNING] = ENDS,
        },
    [TASK_BALANCED] =
        {
            [TASK_WAITING] = BIT(TASK_PENDING) | BIT(TASK_FAILED) | BIT(TASK_ABORTED),
            [TASK_PENDING] = BIT(TASK_RUNNING) | BIT(TASK_FAILED) | BIT(TASK_ABORTED),
            [TASK_RUNNING] = ENDS | BIT(TASK_PENDING),
        },
};

int task_transition_legal(task_kind kind, task_state from, task_state to)
{
    if ((unsigned)kind >= TASK_NKINDS || (unsigned)from >= TASK_NSTATES ||
        (unsigned)to >= TASK_NSTATES)
        return 0;
    return (legal[kind][from] & BIT(to)) != 0;
}

/* ------------------------------------------------------------ results */

task_result *task_result_new(json_t *msg, ippc_blobs *blobs)
{
    task_result *r = calloc(1, sizeof *r);
    if (!r) {
        json_decref(msg);
        if (blobs)
            blobs_free(blobs);
        return NULL;
    }
    r->refs = 1;
    r->msg = msg;
    blobs_init(&r->blobs);
    if (blobs) {
        r->blobs = *blobs;
        blobs_init(blobs);
    }
    r->bytes = sizeof *r + json_bytes_estimate(msg) + r->blobs.cap * sizeof *r->blobs.items;
    for (size_t i = 0; i < r->blobs.count; i++)
        r->bytes += r->blobs.items[i].len;
    return r;
}

task_result *task_result_ref(task_result *r)
{
    if (r)
        __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
    return r;
}

void task_result_unref(task_result *r)
{
    if (!r || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    json_decref(r->msg);
    blobs_free(&r->blobs);
    free(r);
}

void task_results_drop(task_result **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        task_result_unref(v[i]);
    free(v);
}

/* The table lets go of r (its reference): no longer counted, dropped by the
 * owner after unlocking, or now when the list cannot grow. */
static void result_let_go(task_table *tt, task_result *r)
{
    if (!r)
        return;
    tt->result_bytes -= r->bytes;
    if (tt->ndropped == tt->dropped_cap) {
        size_t cap = tt->dropped_cap ? 2 * tt->dropped_cap : 64;
        task_result **grown = realloc(tt->dropped, cap * sizeof *grown);
        if (!grown) {
            task_result_unref(r);
            return;
        }
        tt->dropped = grown;
        tt->dropped_cap = cap;
    }
    tt->dropped[tt->ndropped++] = r;
}

/* t's result becomes r (taken; NULL for none), counted. */
static void result_set(task_table *tt, task *t, task_result *r)
{
    result_let_go(tt, t->result);
    t->result = r;
    if (r)
        tt->result_bytes += r->bytes;
}

task_result **task_table_take_dropped(task_table *tt, size_t *n)
{
    task_result **v = tt->dropped;
    *n = tt->ndropped;
    tt->dropped = NULL;
    tt->ndropped = tt->dropped_cap = 0;
    return v;
}

/* ------------------------------------------------------------ store records */

struct task_save {
    task_save *next;
    store_record rec;
    char times[3][CLOCK_ISO_LEN];
    task_result *result; /* its value goes into rec at commit */
};

static task_save *save_build(const task *t)
{
    task_save *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    store_record *rec = &s->rec;
    rec->id = t->id;
    rec->request_id = t->request_id;
    rec->kind = task_kind_name(t->kind);
    rec->state = task_state_name(t->state);
    rec->engine = t->engine;
    const char *times[3] = {t->submitted, t->started, t->completed};
    const char **fields[3] = {&rec->submitted, &rec->started, &rec->completed};
    for (int i = 0; i < 3; i++) {
        memcpy(s->times[i], times[i], CLOCK_ISO_LEN);
        *fields[i] = s->times[i][0] ? s->times[i] : NULL;
    }
    const json_t *tags = task_tags(t);
    rec->tags = tags ? json_incref((json_t *)tags) : json_array();
    rec->doc = task_doc(t);
    if (t->kind == TASK_BALANCED)
        json_object_set(rec->doc, "spec", t->spec);
    blobs_init(&rec->blobs);
    int present = 0;
    s->result = task_doc_result(t, &present);
    return s;
}

static void save_free(task_save *s)
{
    json_decref(s->rec.tags);
    json_decref(s->rec.doc);
    json_decref(s->rec.result);
    blobs_free(&s->rec.blobs);
    task_result_unref(s->result);
    free(s);
}

void task_saves_commit(store *st, task_save *s)
{
    while (s) {
        task_save *next = s->next;
        json_t *skel = s->result ? json_object_get(s->result->msg, "value") : NULL;
        if (st && skel) {
            /* The store owns what it is given: a copy of the bytes, so the
             * result stays shared and immutable. */
            s->rec.result = json_incref(skel);
            const ippc_blobs *b = &s->result->blobs;
            for (size_t i = 0; i < b->count; i++) {
                unsigned char *copy = malloc(b->items[i].len ? b->items[i].len : 1);
                if (copy && b->items[i].len)
                    memcpy(copy, b->items[i].data, b->items[i].len);
                blobs_push(&s->rec.blobs, copy, b->items[i].len);
            }
        }
        if (st) {
            store_save(st, &s->rec); /* takes the record's references */
            memset(&s->rec, 0, sizeof s->rec);
        }
        save_free(s);
        s = next;
    }
}

static void dirty_mark(task_table *tt, task *t)
{
    if (!tt->store || t->dirty)
        return;
    t->dirty = 1;
    list_push_front(&tt->dirty, &t->dirty_link);
}

static void dirty_unlink(task_table *tt, task *t)
{
    if (!t->dirty)
        return;
    list_remove(&t->dirty_link);
    t->dirty = 0;
}

task_save *task_table_take_saves(task_table *tt)
{
    task_save *list = tt->saves, **tail = &list;
    while (*tail)
        tail = &(*tail)->next;
    while (!list_empty(&tt->dirty)) {
        task *t = list_entry(list_first(&tt->dirty), task, dirty_link);
        dirty_unlink(tt, t);
        task_save *s = save_build(t);
        if (s) {
            *tail = s;
            tail = &s->next;
        }
    }
    tt->saves = NULL;
    return list;
}

/* ------------------------------------------------------------ lists */

static void list_unlink(task_table *tt, task *t)
{
    if (t->list < 0)
        return;
    list_remove(&t->link);
    tt->lists[t->list].count--;
    t->list = -1;
}

static void list_link(task_table *tt, task *t, int which, int front)
{
    list_unlink(tt, t);
    task_list *l = &tt->lists[which];
    if (front)
        list_push_front(&l->head, &t->link);
    else
        list_push_back(&l->head, &t->link);
    l->count++;
    t->list = which;
}

task *task_list_first(const task_table *tt, int which)
{
    list_node *node = list_first(&tt->lists[which].head);
    return node ? list_entry(node, task, link) : NULL;
}

task *task_list_next(const task_table *tt, const task *t)
{
    if (t->list < 0)
        return NULL;
    const list_node *next = t->link.next;
    return next == &tt->lists[t->list].head ? NULL : list_entry(next, task, link);
}

static void set_state(task_table *tt, task *t, task_state to)
{
    assert(task_transition_legal(t->kind, t->state, to));
    tt->counts[t->state]--;
    tt->counts[to]++;
    t->state = to;
}

/* ------------------------------------------------------------ the table */

void task_table_init(task_table *tt, registry *engines, store *store, events *events,
                     size_t keep_finished)
{
    memset(tt, 0, sizeof *tt);
    idmap_init(&tt->by_id);
    tt->next_id = 1;
    tt->keep_finished = keep_finished ? keep_finished : 1;
    tt->engines = engines;
    tt->store = store;
    tt->events = events;
    for (int k = 0; k < TASK_NLISTS; k++)
        list_init(&tt->lists[k].head);
    list_init(&tt->dirty);
}

static void task_free(task *t)
{
    if (!t)
        return;
    json_decref(t->spec);
    codec_msg_unref(t->msg);
    task_result_unref(t->result);
    waiters_free(&t->waiters);
    if (t->lb) {
        free(t->lb->allowed);
        free(t->lb->deps);
        free(t->lb->dep_state);
        free(t->lb->dep_engine);
        free(t->lb);
    }
    free(t);
}

void task_table_free(task_table *tt)
{
    for (size_t i = 0; i < tt->by_id.cap; i++)
        if (tt->by_id.keys[i] && tt->by_id.keys[i] != UINT64_MAX)
            task_free(tt->by_id.values[i]);
    idmap_free(&tt->by_id);
    task_results_drop(tt->dropped, tt->ndropped);
    task_save *s = tt->saves;
    while (s) {
        task_save *next = s->next;
        save_free(s);
        s = next;
    }
    memset(tt, 0, sizeof *tt);
}

task *task_table_get(const task_table *tt, uint64_t id)
{
    return idmap_get(&tt->by_id, id);
}

/* Takes t out of memory; its last record is built now if it was not saved. */
static void table_remove(task_table *tt, task *t)
{
    if (t->dirty) {
        dirty_unlink(tt, t);
        task_save *s = save_build(t);
        if (s) {
            s->next = tt->saves;
            tt->saves = s;
        }
    }
    list_unlink(tt, t);
    idmap_remove(&tt->by_id, t->id);
    tt->counts[t->state]--;
    if (t->id > tt->max_gone_id)
        __atomic_store_n(&tt->max_gone_id, t->id, __ATOMIC_RELAXED);
    result_set(tt, t, NULL);
    task_free(t);
}

static void evict(task_table *tt)
{
    while (tt->lists[TASK_LIST_FINISHED].count > tt->keep_finished)
        table_remove(tt, task_list_first(tt, TASK_LIST_FINISHED));
}

task *task_new(task_kind kind, json_t *spec, codec_msg *msg)
{
    task *t = calloc(1, sizeof *t);
    if (t && kind == TASK_BALANCED && !(t->lb = calloc(1, sizeof *t->lb))) {
        free(t);
        t = NULL;
    }
    if (!t) {
        json_decref(spec);
        codec_msg_unref(msg);
        return NULL;
    }
    t->kind = kind;
    t->state = kind == TASK_DIRECT ? TASK_PENDING : TASK_WAITING;
    t->engine = -1;
    t->spec = spec;
    t->msg = msg;
    t->list = -1;
    return t;
}

void task_discard(task *t)
{
    assert(!t || t->id == 0);
    task_free(t);
}

const json_t *task_tags(const task *t)
{
    return t->kind == TASK_BALANCED ? json_object_get(t->spec, "tags") : NULL;
}

static void emit(task_table *tt, json_t *event, const task *t)
{
    if (!tt->events) {
        json_decref(event);
        return;
    }
    event_meta meta = {
        .topic = EVENT_TOPIC_TASKS, .engine = t->engine, .task = t->id, .tags = task_tags(t)};
    events_emit(tt->events, event, &meta);
}

static json_t *id_or_null(uint64_t id)
{
    return id ? json_integer((json_int_t)id) : json_null();
}

int task_add(task_table *tt, task *t, task_state initial, uint64_t request_id, size_t index,
             int held)
{
    assert(t->id == 0);
    assert(initial == TASK_PENDING || (t->kind == TASK_BALANCED && initial == TASK_WAITING));
    uint64_t id = tt->next_id;
    if (idmap_put(&tt->by_id, id, t) < 0)
        return -1;
    tt->next_id++;
    t->id = id;
    t->state = initial;
    tt->counts[initial]++;
    t->request_id = request_id;
    t->request_index = index;
    t->held = held;
    clock_iso8601(t->submitted, sizeof t->submitted);
    if (t->lb && t->lb->timeout > 0)
        t->lb->deadline_ms = clock_now_ms() + (int64_t)(t->lb->timeout * 1000.0);
    list_link(tt, t, initial == TASK_WAITING ? TASK_LIST_WAITING : TASK_LIST_PENDING, 0);
    dirty_mark(tt, t);
    if (tt->events) {
        const json_t *tags = task_tags(t);
        json_t *ev = json_pack("{s:s, s:I, s:s}", "type", "task.submitted", "task",
                               (json_int_t)t->id, "kind", task_kind_name(t->kind));
        json_object_set_new(ev, "request", id_or_null(request_id));
        json_object_set_new(ev, "engine", t->engine >= 0 ? json_integer(t->engine) : json_null());
        json_object_set_new(ev, "tags", tags ? json_incref((json_t *)tags) : json_array());
        emit(tt, ev, t);
    }
    return 0;
}

void task_ready(task_table *tt, task *t)
{
    set_state(tt, t, TASK_PENDING);
    list_link(tt, t, TASK_LIST_PENDING, 0);
    dirty_mark(tt, t);
}

static double gib(size_t n)
{
    return (double)n / (double)((size_t)1 << 30);
}

int task_start(task_table *tt, task *t, engine *e)
{
    size_t bytes = codec_msg_bytes(t->msg);
    if (bytes > e->max_message) {
        /* Sent, the engine would close the connection (and lose whatever
         * else it was doing): it never sees it. */
        char why[300];
        snprintf(why, sizeof why,
                 "the task's message takes %.2f GiB; engine %d accepts at most %.2f GiB in one "
                 "message (ippc-engine --max-message-mb)",
                 gib(bytes), e->id, gib(e->max_message));
        t->engine = e->id;
        task_finish(tt, t, TASK_FAILED,
                    task_result_new(codec_synth_result("error", "TooLargeError", why), NULL));
        return -1;
    }
    set_state(tt, t, TASK_RUNNING);
    t->engine = e->id;
    clock_iso8601(t->started, sizeof t->started);
    list_link(tt, t, TASK_LIST_RUNNING, 0);
    registry_task_started(tt->engines, e, t->kind == TASK_BALANCED);
    if (tt->events)
        emit(tt,
             json_pack("{s:s, s:I, s:i}", "type", "task.started", "task", (json_int_t)t->id,
                       "engine", e->id),
             t);
    if (codec_send(tt->engines, e, t->msg, t->id) < 0) {
        task_finish(
            tt, t, TASK_LOST,
            task_result_new(codec_synth_result("lost", "EngineLost", "could not queue the task"),
                            NULL));
        return -1;
    }
    dirty_mark(tt, t);
    return 0;
}

void task_requeue(task_table *tt, task *t)
{
    engine *e = registry_get(tt->engines, t->engine);
    if (e)
        registry_task_ended(e, t->kind == TASK_BALANCED, 0);
    set_state(tt, t, TASK_PENDING);
    t->engine = -1;
    t->started[0] = '\0';
    list_link(tt, t, TASK_LIST_PENDING, 1);
    dirty_mark(tt, t);
}

void task_finish(task_table *tt, task *t, task_state to, task_result *result)
{
    assert(task_state_finished(to));
    if (t->state == TASK_RUNNING) {
        engine *e = registry_get(tt->engines, t->engine);
        if (e)
            registry_task_ended(e, t->kind == TASK_BALANCED, 1);
    }
    set_state(tt, t, to);
    tt->finished_total++;
    t->finish_seq = tt->finished_total;
    result_set(tt, t,
               result
                   ? result
                   : task_result_new(codec_synth_result("error", "Internal", "no result"), NULL));
    clock_iso8601(t->completed, sizeof t->completed);
    if (t->held)
        list_unlink(tt, t);
    else
        list_link(tt, t, TASK_LIST_FINISHED, 0);
    dirty_mark(tt, t);
    if (tt->events) {
        json_t *ev = json_pack("{s:s, s:I, s:s}", "type", "task.completed", "task",
                               (json_int_t)t->id, "state", task_state_name(to));
        json_object_set_new(ev, "engine", t->engine >= 0 ? json_integer(t->engine) : json_null());
        if (t->request_id)
            json_object_set_new(ev, "request", json_integer((json_int_t)t->request_id));
        if (t->result)
            codec_event_outcome(ev, t->result->msg, &t->result->blobs);
        emit(tt, ev, t);
    }
    waiters_wake(&t->waiters);
    /* The message (and the bytes it holds) is not needed any more. */
    codec_msg_unref(t->msg);
    t->msg = NULL;
    if (tt->finished)
        tt->finished(tt->ctx, t);
    evict(tt);
}

void task_complete(task_table *tt, task *t, json_t *msg, ippc_blobs *blobs)
{
    const char *status = codec_result_status(msg);
    task_state to = TASK_FAILED;
    if (status && strcmp(status, "ok") == 0) {
        to = TASK_COMPLETED;
    } else if (t->lb && t->lb->timed_out) {
        char why[96];
        snprintf(why, sizeof why, "task did not finish within its timeout of %g s", t->lb->timeout);
        json_object_set_new(msg, "ename", json_string("TimeoutError"));
        json_object_set_new(msg, "evalue", json_string(why));
    } else if (status && strcmp(status, "aborted") == 0) {
        to = TASK_ABORTED;
    } else if (status && strcmp(status, "lost") == 0) {
        to = TASK_LOST;
    }
    /* From here on the result is shared and never changed. */
    task_finish(tt, t, to, task_result_new(msg, blobs));
}

/* What a direct task keeps once its request is gone: the outcome and stdout
 * its document shows, not the values (those were the request's answer). */
static task_result *outcome_only(const task_result *r)
{
    json_t *msg = json_object();
    const char *keys[] = {"type", "status", "stdout", "ename", "evalue", "traceback"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        json_t *v = json_object_get(r->msg, keys[k]);
        if (v)
            json_object_set(msg, keys[k], v);
    }
    return task_result_new(msg, NULL);
}

void task_release(task_table *tt, task *t)
{
    if (!t->held)
        return;
    t->held = 0;
    if (!task_state_finished(t->state))
        return; /* it joins the finished list when it finishes */
    if (t->kind == TASK_DIRECT && t->result &&
        (t->result->blobs.count || json_object_get(t->result->msg, "value"))) {
        task_result *small = outcome_only(t->result);
        if (small)
            result_set(tt, t, small);
    }
    /* It finished when its request did, before most of what is on the list:
     * at the front, the first to go. */
    list_link(tt, t, TASK_LIST_FINISHED, 1);
    evict(tt);
}

void task_evict(task_table *tt, task *t)
{
    assert(task_state_finished(t->state) && !t->held);
    table_remove(tt, t);
}

void task_forget(task_table *tt, task *t)
{
    assert(task_state_finished(t->state) && !t->held);
    dirty_unlink(tt, t); /* purged: no record to write back */
    table_remove(tt, t);
}

/* ------------------------------------------------------------ documents */

static json_t *ids_json(const uint64_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((json_int_t)ids[i]));
    return a;
}

static json_t *time_json(const char *iso)
{
    return iso[0] ? json_string(iso) : json_null();
}

json_t *task_doc(const task *t)
{
    json_t *doc = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)t->id, "kind",
                            task_kind_name(t->kind), "state", task_state_name(t->state));
    json_object_set_new(doc, "engine", t->engine >= 0 ? json_integer(t->engine) : json_null());
    json_object_set_new(doc, "submitted", time_json(t->submitted));
    json_object_set_new(doc, "started", time_json(t->started));
    json_object_set_new(doc, "completed", time_json(t->completed));
    json_t *out = t->result ? json_object_get(t->result->msg, "stdout") : NULL;
    json_object_set_new(doc, "stdout", json_is_string(out) ? json_incref(out) : json_string(""));
    const char *copy[] = {"op", "function", "code", "tags", "fanout"};
    for (size_t k = 0; k < sizeof copy / sizeof *copy; k++) {
        json_t *v = json_object_get(t->spec, copy[k]);
        if (v && (k > 0 || t->kind == TASK_DIRECT))
            json_object_set(doc, copy[k], v);
    }
    if (!json_object_get(doc, "tags"))
        json_object_set_new(doc, "tags", json_array());
    const task_balanced *lb = t->lb;
    json_object_set_new(doc, "after", lb ? ids_json(lb->deps, lb->n_after) : json_array());
    json_object_set_new(doc, "follow",
                        lb ? ids_json(lb->deps + lb->n_after, lb->n_follow) : json_array());
    json_object_set_new(doc, "retries", json_integer(lb ? lb->retries : 0));
    json_object_set_new(doc, "timeout",
                        lb && lb->timeout > 0 ? json_real(lb->timeout) : json_null());
    if (t->request_id)
        json_object_set_new(doc, "request", json_integer((json_int_t)t->request_id));
    if ((t->state == TASK_FAILED || t->state == TASK_ABORTED || t->state == TASK_LOST) &&
        t->result) {
        json_t *e = json_object();
        codec_copy_error(e, t->result->msg);
        json_object_set_new(doc, "error", e);
    }
    return doc;
}

task_result *task_doc_result(const task *t, int *present)
{
    *present = t->kind == TASK_BALANCED && t->state == TASK_COMPLETED;
    return *present ? task_result_ref(t->result) : NULL;
}

void task_doc_add_result(json_t *doc, const task_result *res, value_format fmt)
{
    json_t *skel = res ? json_object_get(res->msg, "value") : NULL;
    ippc_error err = {0};
    json_t *v = skel ? value_to_client(skel, &res->blobs, fmt, &err) : NULL;
    json_object_set_new(doc, "result", v ? v : json_null());
}
