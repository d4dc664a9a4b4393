/* hub.c — the hub's lock and its public entry points (see hub.h).
 *
 * The hub is made of parts that know nothing of this file:
 *   registry.c  engines, jobs, liveness, the send path       (registry)
 *   task_table.c task records, their state machine, the table (task_table)
 *   requests.c  direct-view and map requests, answers       (requests)
 *   tasks.c     balanced scheduling, dependencies, retries  (balancer)
 * Each hub_* function here takes the lock, calls into them, and releases
 * it; work that need not be under the lock is done before (decoding a
 * body, encoding engine messages) or after (rendering answers, writing store
 * records: see hub_unlock).  This file is also where engine messages are
 * routed: a result goes to its task by id through the one task table.
 *
 * Lock order: h->lock, then h->save_lock, then the store's and the events'
 * own locks.  Nothing takes h->lock while holding another of these.
 */
#include "hub.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine_codec.h"
#include "events.h"
#include "metrics.h"
#include "proto.h"
#include "registry.h"
#include "requests.h"
#include "store.h"
#include "targets.h"
#include "task_table.h"
#include "tasks.h"

/* Finished tasks no request holds, kept in memory (older ones are answered
 * from the store). */
#define KEEP_FINISHED 50000
/* Variables whose size the hub remembers (for gathers to fan out). */
#define SIZE_MEMO 64

struct hub {
    pthread_mutex_t lock;
    /* Held from the end of one critical section until its store records are
     * queued, so records reach the store in the order the changes were made. */
    pthread_mutex_t save_lock;
    hub_config cfg;
    char *engine_key, *profile, *url, *ws_url;
    char started[CLOCK_ISO_LEN];
    int64_t started_ms;
    registry engines;
    task_table tasks;
    requests requests;
    balancer lb;
    store *store;
    events *events;
    /* The last fan-out id handed out: ids start above the controller's start
     * time in ms * 2^20, so a restarted controller continues above them. */
    uint64_t fanout_last;
    uint64_t fanout_ops[3]; /* fanned-out pushes, scatters, gathers */
    /* The bytes of arrays the hub last saw a variable take over the engines
     * it was moved to (a push: its bytes times the targets; a scatter: its
     * bytes; a gather: what came back), the least recently used forgotten:
     * what a gather's size is guessed from. */
    struct size_memo {
        char name[129];
        size_t bytes;
        uint64_t used;
    } sizes[SIZE_MEMO];
    uint64_t sizes_clock;
};

int64_t hub_now_ms(void)
{
    return clock_now_ms();
}

static void hub_lock(hub *h)
{
    pthread_mutex_lock(&h->lock);
}

/* Releases the lock.  First what is kept is trimmed to its bounds
 * (--keep-results-mb, the request count); then the store records of what
 * changed are written (serialised, result bytes copied) and the results let
 * go of are freed, outside it. */
static void hub_unlock(hub *h)
{
    requests_trim(&h->requests);
    size_t ndropped = 0;
    task_result **dropped = task_table_take_dropped(&h->tasks, &ndropped);
    task_save *saves = task_table_take_saves(&h->tasks);
    if (!saves) {
        pthread_mutex_unlock(&h->lock);
    } else {
        pthread_mutex_lock(&h->save_lock);
        pthread_mutex_unlock(&h->lock);
        task_saves_commit(h->store, saves);
        pthread_mutex_unlock(&h->save_lock);
    }
    task_results_drop(dropped, ndropped);
}

/* Waits until every critical section that ended before now has queued its
 * records on the store. */
static void saves_sync(hub *h)
{
    pthread_mutex_lock(&h->save_lock);
    pthread_mutex_unlock(&h->save_lock);
}

static void emit(hub *h, json_t *event, int topic, int engine)
{
    if (!h->events) {
        json_decref(event);
        return;
    }
    event_meta meta = {.topic = topic, .engine = engine};
    events_emit(h->events, event, &meta);
}

/* The size last seen of variable name (0: not seen). */
static size_t size_recall(hub *h, const char *name)
{
    for (size_t i = 0; name && i < SIZE_MEMO; i++)
        if (h->sizes[i].used && strcmp(h->sizes[i].name, name) == 0) {
            h->sizes[i].used = ++h->sizes_clock;
            return h->sizes[i].bytes;
        }
    return 0;
}

static void size_note(hub *h, const char *name, size_t bytes)
{
    if (!name || strlen(name) >= sizeof h->sizes[0].name)
        return;
    struct size_memo *slot = &h->sizes[0];
    for (size_t i = 0; i < SIZE_MEMO; i++) {
        if (h->sizes[i].used && strcmp(h->sizes[i].name, name) == 0) {
            slot = &h->sizes[i];
            break;
        }
        if (h->sizes[i].used < slot->used)
            slot = &h->sizes[i];
    }
    snprintf(slot->name, sizeof slot->name, "%s", name);
    slot->bytes = bytes;
    slot->used = ++h->sizes_clock;
}

/* A gather request finished: what came back is its variable's size. */
static void size_note_gather(hub *h, const request *r)
{
    size_t bytes = 0;
    for (size_t i = 0; i < r->ntasks; i++) {
        const task_result *res = r->tasks[i] ? r->tasks[i]->result : NULL;
        for (size_t k = 0; res && k < res->blobs.count; k++)
            bytes += res->blobs.items[k].len;
    }
    size_note(h, r->name, bytes);
}

/* The task table's hook: a finished task's request counts it. */
static void on_task_finished(void *ctx, task *t)
{
    hub *h = ctx;
    if (!t->request_id)
        return;
    requests_task_finished(&h->requests, t);
    const request *r = requests_get(&h->requests, t->request_id);
    if (r && r->op == HUB_OP_GATHER && request_done(r))
        size_note_gather(h, r);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

hub *hub_new(const hub_config *cfg)
{
    hub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->save_lock, NULL);
    h->cfg = *cfg;
    h->engine_key = dup_or_empty(cfg->engine_key);
    h->profile = dup_or_empty(cfg->profile);
    h->url = dup_or_empty(cfg->url);
    h->ws_url = dup_or_empty(cfg->ws_url);
    h->cfg.engine_key = h->engine_key;
    h->cfg.profile = h->profile;
    h->cfg.url = h->url;
    h->cfg.ws_url = h->ws_url;
    if (h->cfg.heartbeat_period_ms <= 0)
        h->cfg.heartbeat_period_ms = IPPC_HEARTBEAT_PERIOD_MS;
    if (h->cfg.heartbeat_timeout_ms <= 0)
        h->cfg.heartbeat_timeout_ms = IPPC_HEARTBEAT_TIMEOUT_MS;
    if (!h->cfg.max_requests_kept)
        h->cfg.max_requests_kept = 10000;
    clock_iso8601(h->started, sizeof h->started);
    h->started_ms = clock_now_ms();
    h->fanout_last = (uint64_t)clock_wall_ms() << 20;
    h->store = cfg->store;
    h->events = cfg->events;
    registry_init(&h->engines);
    task_table_init(&h->tasks, &h->engines, h->store, h->events, KEEP_FINISHED);
    h->tasks.finished = on_task_finished;
    h->tasks.ctx = h;
    if (h->store) {
        /* A restarted controller continues after the ids it handed out. */
        uint64_t max = store_max_id(h->store);
        if (max >= h->tasks.next_id)
            h->tasks.next_id = max + 1;
    }
    h->tasks.max_gone_id = h->tasks.next_id - 1;
    if (!h->cfg.keep_results_bytes)
        h->cfg.keep_results_bytes = HUB_KEEP_RESULTS_DEFAULT;
    requests_init(&h->requests, &h->tasks, &h->engines, h->cfg.max_requests_kept,
                  h->cfg.keep_results_bytes);
    tasks_init(&h->lb, (sched_kind)cfg->sched, cfg->hwm, &h->tasks, &h->engines, &h->requests,
               h->store);
    return h;
}

void hub_free(hub *h)
{
    if (!h)
        return;
    task_saves_commit(h->store, task_table_take_saves(&h->tasks));
    requests_free(&h->requests);
    task_table_free(&h->tasks);
    registry_free(&h->engines);
    free(h->engine_key);
    free(h->profile);
    free(h->url);
    free(h->ws_url);
    pthread_mutex_destroy(&h->save_lock);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* ------------------------------------------------------------ engines */

int hub_engine_register(hub *h, const json_t *msg, const hub_engine_link *link, int *engine_id,
                        ippc_error *err)
{
    hub_lock(h);
    int64_t now = clock_now_ms();
    engine *e = registry_register(&h->engines, msg, h->engine_key, link, now, err);
    if (e) {
        *engine_id = e->id;
        emit(h, json_pack("{s:s, s:o}", "type", "engine.registered", "engine", engine_json(e, now)),
             EVENT_TOPIC_ENGINES, e->id);
        tasks_settle(&h->lb);
    }
    hub_unlock(h);
    return e ? 0 : -1;
}

/* The engine is dead: every task it was running is lost, or taken back to
 * run elsewhere when it has retries left. */
static void engine_died(hub *h, engine *e, const char *reason)
{
    if (!registry_mark_dead(e))
        return;
    emit(h, json_pack("{s:s, s:i, s:s}", "type", "engine.dead", "engine", e->id, "reason", reason),
         EVENT_TOPIC_ENGINES, e->id);
    char why[300];
    snprintf(why, sizeof why, "engine %d died while running this task (%s)", e->id, reason);
    task *t = task_list_first(&h->tasks, TASK_LIST_RUNNING);
    while (t) {
        task *next = task_list_next(&h->tasks, t);
        if (t->engine == e->id && !tasks_retry(&h->lb, t))
            task_finish(&h->tasks, t, TASK_LOST,
                        task_result_new(codec_synth_result("lost", "EngineLost", why), NULL));
        t = next;
    }
    tasks_settle(&h->lb); /* follow on a dead engine is now impossible */
}

void hub_engine_closed(hub *h, int engine_id, const char *reason)
{
    hub_lock(h);
    engine *e = registry_get(&h->engines, engine_id);
    if (e)
        engine_died(h, e, reason ? reason : "connection closed");
    hub_unlock(h);
}

void hub_engine_message(hub *h, int engine_id, json_t *msg, ippc_blobs *blobs)
{
    const char *type = json_string_value(json_object_get(msg, "type"));
    json_t *tid = json_object_get(msg, "task");
    hub_lock(h);
    engine *e = registry_live(&h->engines, engine_id);
    if (!e || !type)
        goto out;
    registry_heard(e, clock_now_ms());
    if (strcmp(type, "heartbeat") == 0) {
        registry_heartbeat(e, json_is_true(json_object_get(msg, "busy")));
        json_t *rss = json_object_get(msg, "rss");
        emit(h,
             json_pack("{s:s, s:i, s:s, s:I, s:I, s:f, s:O}", "type", "engine.status", "engine",
                       e->id, "state", engine_state_name(e->state), "queue", (json_int_t)e->queued,
                       "tasks_done", (json_int_t)e->tasks_done, "heartbeat_age", 0.0, "rss",
                       json_is_integer(rss) ? rss : json_null()),
             EVENT_TOPIC_ENGINES, e->id);
    } else if (strcmp(type, "stdout") == 0) {
        json_t *data = json_object_get(msg, "data");
        if (json_is_integer(tid) && json_is_string(data) && h->events) {
            const task *t = task_table_get(&h->tasks, (uint64_t)json_integer_value(tid));
            event_meta meta = {.topic = EVENT_TOPIC_STDOUT,
                               .engine = e->id,
                               .task = (uint64_t)json_integer_value(tid),
                               .tags = t ? task_tags(t) : NULL};
            events_emit(h->events,
                        json_pack("{s:s, s:O, s:i, s:O}", "type", "task.stdout", "task", tid,
                                  "engine", e->id, "data", data),
                        &meta);
        }
    } else if (strcmp(type, "result") == 0) {
        registry_count_received(&h->engines, blobs);
        /* One map routes every result: task id -> task record. */
        task *t = json_is_integer(tid)
                      ? task_table_get(&h->tasks, (uint64_t)json_integer_value(tid))
                      : NULL;
        if (t && t->state == TASK_RUNNING && t->engine == engine_id) {
            task_complete(&h->tasks, t, json_incref(msg), blobs);
            tasks_settle(&h->lb);
        }
    }
out:
    hub_unlock(h);
    json_decref(msg);
    blobs_free(blobs);
}

void hub_tick(hub *h)
{
    hub_lock(h);
    int64_t now = clock_now_ms();
    for (size_t i = 0; i < h->engines.n_engines; i++) {
        engine *e = &h->engines.engines[i];
        if (engine_is_live(e) && now - e->last_heartbeat_ms > h->cfg.heartbeat_timeout_ms) {
            hub_engine_link link = e->link;
            engine_died(h, e, "no heartbeat");
            if (link.close)
                link.close(link.conn, "heartbeat timeout");
        }
    }
    requests_tick(&h->requests, now);
    tasks_tick(&h->lb, now);
    hub_unlock(h);
}

void hub_wake_all(hub *h)
{
    hub_lock(h);
    requests_wake_all(&h->requests);
    for (int k = 0; k < TASK_NLISTS; k++)
        for (task *t = task_list_first(&h->tasks, k); t; t = task_list_next(&h->tasks, t))
            waiters_wake(&t->waiters);
    hub_unlock(h);
}

void hub_shutdown_engines(hub *h, const char *reason)
{
    hub_lock(h);
    emit(h, json_pack("{s:s, s:s}", "type", "cluster.shutdown", "reason", reason),
         EVENT_TOPIC_ALWAYS, -1);
    for (size_t i = 0; i < h->engines.n_engines; i++) {
        engine *e = &h->engines.engines[i];
        if (!engine_is_live(e))
            continue;
        json_t *msg = codec_shutdown(reason);
        registry_send(&h->engines, e, msg, NULL, 0);
        json_decref(msg);
    }
    hub_unlock(h);
}

/* ------------------------------------------------------------ queries */

json_t *hub_engines(hub *h)
{
    json_t *list = json_array();
    hub_lock(h);
    int64_t now = clock_now_ms();
    for (size_t i = 0; i < h->engines.n_engines; i++)
        if (h->engines.engines[i].state != ENGINE_ABSENT)
            json_array_append_new(list, engine_json(&h->engines.engines[i], now));
    hub_unlock(h);
    return json_pack("{s:o}", "engines", list);
}

json_t *hub_engine(hub *h, int engine_id, ippc_error *err)
{
    hub_lock(h);
    engine *e = registry_get(&h->engines, engine_id);
    json_t *out = e ? engine_json(e, clock_now_ms()) : NULL;
    hub_unlock(h);
    if (!out)
        ippc_error_set(err, ERR_NOT_FOUND, "no engine with id %d", engine_id);
    return out;
}

json_t *hub_info(hub *h)
{
    hub_lock(h);
    int live = 0;
    for (size_t i = 0; i < h->engines.n_engines; i++)
        live += engine_is_live(&h->engines.engines[i]);
    json_t *info = json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:s, s:f, s:i, s:I}", "version", IPPC_VERSION, "profile",
        h->profile, "url", h->url, "ws_url", h->ws_url, "engines", live, "started", h->started,
        "uptime", (double)(clock_now_ms() - h->started_ms) / 1000.0, "requests_open",
        (int)h->requests.open.count, "requests_total", (json_int_t)(h->requests.next_id - 1));
    hub_unlock(h);
    /* The store has its own lock (never taken inside the hub's here). */
    if (h->store)
        json_object_set_new(info, "store", store_status_json(h->store));
    return info;
}

/* ------------------------------------------------------------ direct views */

/* A call decoded ahead of hub_submit (hub.h): the engine message(s) it
 * becomes, or the error it carries until the targets have been checked. */
struct hub_prepared {
    hub_op op;
    int failed;     /* the call cannot be built: err says why */
    int body_error; /* ... because its body is not an object (reported first) */
    ippc_error err;
    codec_msg *single;     /* every op but scatter */
    codec_scatter scatter; /* split once the number of targets is known */
    json_t *names;         /* pull of several names: the names, for the answer */
    size_t bytes;
};

hub_prepared *hub_prepare(const hub_call *c, ippc_error *err)
{
    hub_prepared *p = calloc(1, sizeof *p);
    if (!p) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    p->op = c->op;
    blobs_init(&p->scatter.view);
    int rc = 0;
    if (!json_is_object(c->body)) {
        p->body_error = 1;
        rc = ippc_error_set(&p->err, ERR_BAD_REQUEST, "request body must be a JSON object");
    } else if (c->op == HUB_OP_MAP) {
        rc = ippc_error_set(&p->err, ERR_INTERNAL, "a map is submitted with hub_map_submit");
    } else if (c->op == HUB_OP_SCATTER) {
        rc = codec_scatter_decode(c, &p->scatter, &p->err);
    } else if (!(p->single = codec_view_call(c, &p->err))) {
        rc = -1;
    } else if (c->op == HUB_OP_PULL_MANY &&
               !(p->names = json_deep_copy(json_object_get(c->body, "names")))) {
        rc = ippc_error_set(&p->err, ERR_INTERNAL, "out of memory");
    }
    p->failed = rc < 0;
    for (size_t k = 0; p->single && k < p->single->nblobs; k++)
        p->bytes += ws_blobref_len(p->single->blobs[k]);
    for (size_t k = 0; k < p->scatter.view.count; k++)
        p->bytes += p->scatter.view.items[k].len;
    return p;
}

size_t hub_prepared_bytes(const hub_prepared *p)
{
    return p ? p->bytes : 0;
}

void hub_prepared_free(hub_prepared *p)
{
    if (!p)
        return;
    codec_msg_unref(p->single);
    codec_scatter_clear(&p->scatter);
    json_decref(p->names);
    free(p);
}

static void msgs_free(codec_msg **msgs, size_t n)
{
    for (size_t i = 0; msgs && i < n; i++)
        codec_msg_unref(msgs[i]);
    free(msgs);
}

/* ------------------------------------------------------------ fan-out */

/* What a push or scatter about to be sent to n engines tells of its
 * variable's size. */
static void size_note_call(hub *h, const hub_call *c, const hub_prepared *p, size_t n)
{
    if (p->failed)
        return;
    if (p->op == HUB_OP_SCATTER) {
        size_note(h, p->scatter.name, p->bytes);
    } else if (p->op == HUB_OP_PUSH && p->single) {
        json_t *ns = json_object_get(p->single->msg, "ns");
        if (json_object_size(ns) == 1) {
            void *it = json_object_iter(ns);
            size_note(h, json_object_iter_key(it), p->bytes * n);
        }
    }
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Whether a data op MPI fans out (common/proto.h): a push, scatter or gather
 * of 2+ targets, all live engines of one MPI job in which no engine is dead,
 * moving at least its op's fanout_min_bytes of arrays (a gather: the size
 * last seen of its name), and for scatter and gather targets in rank order
 * (the parts follow the targets, the collectives follow the ranks).  Fills
 * ranks[0..n) (ascending) and *root (the index in targets of the lowest
 * rank). */
static int fanout_plan(hub *h, const hub_call *c, const hub_prepared *p, const int *targets,
                       size_t n, int *ranks, size_t *root)
{
    if (!h->cfg.fanout || n < 2 || p->failed)
        return 0;
    const size_t *min = h->cfg.fanout_min_bytes;
    size_t items;
    switch (p->op) {
    case HUB_OP_PUSH:
        if (min[HUB_FANOUT_PUSH] == SIZE_MAX || p->bytes < min[HUB_FANOUT_PUSH] || !p->single ||
            !json_is_object(json_object_get(p->single->msg, "ns")))
            return 0;
        break;
    case HUB_OP_SCATTER:
        if (min[HUB_FANOUT_SCATTER] == SIZE_MAX || p->bytes < min[HUB_FANOUT_SCATTER] ||
            codec_scatter_items(&p->scatter, &items) < 0)
            return 0;
        break;
    case HUB_OP_GATHER: {
        /* Its size: the one last seen.  The root answers the whole array in
         * one message, which must fit what the controller takes. */
        size_t seen = size_recall(h, c->name);
        size_t max = h->cfg.engine_message_max ? h->cfg.engine_message_max : IPPC_MAX_WS_MESSAGE;
        if (min[HUB_FANOUT_GATHER] == SIZE_MAX || !p->single || seen < min[HUB_FANOUT_GATHER] ||
            seen + 4096 > max)
            return 0;
        break;
    }
    default: return 0;
    }
    const engine *first = registry_live(&h->engines, targets[0]);
    if (!first || registry_job_has_dead(&h->engines, first->job))
        return 0;
    *root = 0;
    for (size_t i = 0; i < n; i++) {
        const engine *e = registry_live(&h->engines, targets[i]);
        if (!e || strcmp(e->job, first->job) != 0)
            return 0;
        if (i > 0 && p->op != HUB_OP_PUSH && targets[i] < targets[i - 1])
            return 0;
        ranks[i] = e->rank;
        if (e->rank < ranks[*root])
            *root = i;
    }
    /* The root's task carries all the data: one it would refuse goes per
     * engine (where each part may fit, or each says TooLargeError). */
    const engine *re = registry_live(&h->engines, targets[*root]);
    size_t root_bytes = p->op == HUB_OP_PUSH      ? codec_msg_bytes(p->single)
                        : p->op == HUB_OP_SCATTER ? p->bytes + json_bytes_estimate(p->scatter.skel)
                                                  : 0;
    if (root_bytes + 64 + 24 * n > re->max_message)
        return 0;
    qsort(ranks, n, sizeof *ranks, cmp_int);
    return 1;
}

/* Submits a planned fan-out: the root's task with the data, the others' the
 * same op without it, all queued now (under the lock, so every engine gets its
 * data ops in the order of their ids).  The messages are left in *root_msg and
 * *others for the caller to drop after unlocking.  Request id, or 0 + err. */
static uint64_t submit_fanout(hub *h, const hub_call *c, hub_prepared *p, const int *targets,
                              size_t n, const int *ranks, size_t root, codec_msg **root_msg,
                              codec_msg **others, ippc_error *err)
{
    codec_fanout f = {.id = ++h->fanout_last, .ranks = ranks, .n = n, .root = ranks[0]};
    int rc = -1, kind = 0;
    switch (p->op) {
    case HUB_OP_PUSH:
        rc = codec_fanout_push(p->single, &f, others, err);
        *root_msg = rc == 0 ? codec_msg_ref(p->single) : NULL;
        break;
    case HUB_OP_SCATTER:
        kind = 1;
        rc = codec_fanout_scatter(&p->scatter, &f, root_msg, others, err);
        break;
    default:
        kind = 2;
        *others = codec_fanout_gather(c->name, &f, err);
        *root_msg = codec_msg_ref(*others);
        rc = *others ? 0 : -1;
        break;
    }
    codec_msg **msgs = rc == 0 ? calloc(n ? n : 1, sizeof *msgs) : NULL;
    if (!msgs) {
        if (rc == 0)
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        msgs[i] = i == root ? *root_msg : *others;
    uint64_t id = requests_submit_fanout(&h->requests, c, targets, n, msgs, root, f.id, err);
    free(msgs);
    if (id)
        h->fanout_ops[kind]++;
    return id;
}

/* Splitting a scatter copies the whole array, so it runs without the lock
 * for the number of targets just seen, and again if engines came or went
 * meanwhile; after this many tries, under the lock. */
#define SPLIT_TRIES 3

uint64_t hub_submit(hub *h, const hub_call *c, ippc_error *err)
{
    /* Decoding the body (values, base64) is done before the lock. */
    hub_prepared *prep = c->prepared;
    if (!prep && !(prep = hub_prepare(c, err)))
        return 0;
    if (prep->body_error) {
        *err = prep->err;
        hub_prepared_free(prep);
        return 0;
    }
    uint64_t id = 0;
    int *targets = NULL;
    size_t n = 0;
    codec_msg **split = NULL; /* scatter: one message per target */
    size_t split_for = 0;
    int *ranks = NULL; /* a fan-out's participants */
    size_t root = 0;
    codec_msg *fan_root = NULL, *fan_others = NULL;
    hub_lock(h);
    for (int tries = 0;; tries++) {
        free(targets);
        targets = NULL;
        int *live = NULL;
        size_t n_live = 0;
        int rc = registry_live_ids(&h->engines, &live, &n_live) < 0
                     ? ippc_error_set(err, ERR_INTERNAL, "out of memory")
                     : targets_parse(c->targets, live, n_live, &targets, &n, err);
        free(live);
        if (rc < 0)
            goto unlock;
        if (prep->failed) {
            *err = prep->err;
            goto unlock;
        }
        free(ranks);
        if (!(ranks = malloc((n ? n : 1) * sizeof *ranks))) {
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
            goto unlock;
        }
        if (tries == 0)
            size_note_call(h, c, prep, n);
        if (fanout_plan(h, c, prep, targets, n, ranks, &root)) {
            id = submit_fanout(h, c, prep, targets, n, ranks, root, &fan_root, &fan_others, err);
            goto unlock;
        }
        if (prep->op != HUB_OP_SCATTER || (split && split_for == n))
            break;
        int unlocked = tries < SPLIT_TRIES;
        if (unlocked)
            hub_unlock(h);
        msgs_free(split, split_for);
        assert(n > 0); /* targets were resolved: at least one engine */
        split = calloc(n, sizeof *split);
        split_for = n;
        rc = split ? codec_scatter_split(&prep->scatter, n, split, err)
                   : ippc_error_set(err, ERR_INTERNAL, "out of memory");
        if (unlocked)
            hub_lock(h);
        if (rc < 0)
            goto unlock;
    }
    json_t *names = prep->names;
    prep->names = NULL;
    id = split ? requests_submit(&h->requests, c, targets, n, split, n, names, err)
               : requests_submit(&h->requests, c, targets, n, &prep->single, 1, names, err);
unlock:
    hub_unlock(h);
    /* Dropping the messages' last references frees array bytes: after the
     * unlock. */
    msgs_free(split, split_for);
    codec_msg_unref(fan_root);
    codec_msg_unref(fan_others);
    hub_prepared_free(prep);
    free(targets);
    free(ranks);
    return id;
}

json_t *hub_interrupt(hub *h, const char *targets, ippc_error *err)
{
    hub_lock(h);
    int *live = NULL, *ids = NULL;
    size_t n_live = 0, n = 0;
    json_t *out = NULL;
    if (registry_live_ids(&h->engines, &live, &n_live) < 0) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
    } else if (targets_parse(targets, live, n_live, &ids, &n, err) == 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++) {
            engine *e = &h->engines.engines[ids[i]];
            json_t *msg = codec_interrupt(0);
            registry_send(&h->engines, e, msg, NULL, 0);
            json_decref(msg);
            json_array_append_new(list, json_integer(e->id));
        }
        out = json_pack("{s:o, s:s}", "targets", list, "status", "ok");
    }
    free(live);
    free(ids);
    hub_unlock(h);
    return out;
}

json_t *hub_request_json(hub *h, uint64_t request_id, int *done, ippc_error *err)
{
    return hub_request_json_as(h, request_id, -1, done, err);
}

json_t *hub_request_json_as(hub *h, uint64_t request_id, int fmt, int *done, ippc_error *err)
{
    hub_lock(h);
    request_view *v = requests_view(&h->requests, request_id, err);
    hub_unlock(h);
    if (!v)
        return NULL;
    *done = request_view_done(v);
    json_t *out = request_view_json(v, fmt);
    request_view_free(v);
    return out;
}

/* The view of a finished request: 1 and *v (freed by the caller), 0 while
 * it is running, -1 + err when there is none. */
static int done_view(hub *h, uint64_t request_id, request_view **v, ippc_error *err)
{
    hub_lock(h);
    *v = requests_view(&h->requests, request_id, err);
    hub_unlock(h);
    if (!*v)
        return -1;
    if (!request_view_done(*v)) {
        request_view_free(*v);
        *v = NULL;
        return 0;
    }
    return 1;
}

int hub_request_array(hub *h, uint64_t request_id, hub_array *out, ippc_error *err)
{
    memset(out, 0, sizeof *out);
    request_view *v;
    int found = done_view(h, request_id, &v, err);
    if (found <= 0)
        return found;
    request_array a;
    int rc = request_view_array(v, &a, err);
    request_view_free(v);
    if (rc < 0)
        return -1;
    *out =
        (hub_array){.data = a.data, .len = a.len, .ref = a.ref, .hold_ = a.hold, .owned_ = a.owned};
    return 1;
}

void hub_array_release(hub_array *a)
{
    if (!a)
        return;
    request_array r = {.hold = a->hold_, .owned = a->owned_};
    request_array_release(&r);
    memset(a, 0, sizeof *a);
}

int hub_request_parts(hub *h, uint64_t request_id, hub_parts *out, ippc_error *err)
{
    memset(out, 0, sizeof *out);
    request_view *v;
    int found = done_view(h, request_id, &v, err);
    if (found <= 0)
        return found;
    request_part *parts;
    size_t n;
    int rc = request_view_parts(v, &parts, &n, err);
    request_view_free(v);
    if (rc < 0)
        return -1;
    hub_part *items = calloc(n ? n : 1, sizeof *items);
    if (!items) {
        request_parts_free(parts, n);
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        items[i] = (hub_part){.engine = parts[i].engine,
                              .is_array = parts[i].is_array,
                              .data = parts[i].data,
                              .len = parts[i].len,
                              .ref = parts[i].ref};
    *out = (hub_parts){.items = items, .n = n, .hold_ = parts};
    return 1;
}

void hub_parts_release(hub_parts *p)
{
    if (!p)
        return;
    request_parts_free(p->hold_, p->n);
    free(p->items);
    memset(p, 0, sizeof *p);
}

void hub_request_answered(hub *h, uint64_t request_id, int done)
{
    hub_lock(h);
    requests_answered(&h->requests, request_id, done);
    hub_unlock(h);
}

int hub_wait(hub *h, uint64_t request_id, int64_t deadline_ms, void (*wake)(void *arg),
             void (*registered)(void *arg), void *arg)
{
    hub_lock(h);
    int rc = requests_wait(&h->requests, request_id, deadline_ms, wake, registered, arg);
    hub_unlock(h);
    return rc;
}

/* ------------------------------------------------------------ balanced tasks */

/* Adds a built batch; the answer for one task or the ids of a list. */
static json_t *enqueue_and_answer(hub *h, tasks_batch *batch, uint64_t *first_id, ippc_error *err)
{
    int is_list = batch->is_list;
    size_t n = batch->n;
    json_t *out = NULL;
    task_result *res = NULL;
    int present = 0;
    hub_lock(h);
    int ok = tasks_enqueue(&h->lb, batch, NULL, first_id, err) == 0;
    if (ok) {
        tasks_settle(&h->lb);
        const task *t = is_list ? NULL : task_table_get(&h->tasks, *first_id);
        if (t) {
            out = task_doc(t);
            res = task_doc_result(t, &present);
        }
    }
    hub_unlock(h);
    tasks_batch_clear(batch);
    if (!ok)
        return NULL;
    if (is_list) {
        json_t *ids = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(ids, json_integer((json_int_t)*first_id + (json_int_t)i));
        return json_pack("{s:o}", "ids", ids);
    }
    if (!out) /* already gone again (evicted): the id is what there is */
        return json_pack("{s:I}", "id", (json_int_t)*first_id);
    if (present)
        task_doc_add_result(out, res, VALUE_FORMAT_LIST);
    task_result_unref(res);
    return out;
}

json_t *hub_task_submit(hub *h, const json_t *spec, uint64_t *first_id, ippc_error *err)
{
    tasks_batch batch;
    if (tasks_build(&h->lb, spec, 0, &batch, err) < 0)
        return NULL;
    return enqueue_and_answer(h, &batch, first_id, err);
}

/* A stored task as a client sees it ("spec" is internal). */
static json_t *stored_task_json(hub *h, uint64_t task_id, value_format fmt, ippc_error *err)
{
    store_record rec;
    int found = store_get(h->store, task_id, &rec, err);
    if (found != 1) {
        if (found == 0)
            ippc_error_set(err, ERR_NOT_FOUND, "no task with id %llu", (unsigned long long)task_id);
        return NULL;
    }
    json_t *out = json_deep_copy(rec.doc);
    json_object_del(out, "spec");
    if (rec.result) {
        ippc_error cerr = {0};
        json_t *v = value_to_client(rec.result, &rec.blobs, fmt, &cerr);
        json_object_set_new(out, "result", v ? v : json_null());
    } else if (rec.state && strcmp(rec.state, "completed") == 0 && rec.kind &&
               strcmp(rec.kind, "balanced") == 0) {
        json_object_set_new(out, "result", json_null());
    }
    store_record_free(&rec);
    return out;
}

json_t *hub_task_json(hub *h, uint64_t task_id, int *finished, ippc_error *err)
{
    return hub_task_json_as(h, task_id, VALUE_FORMAT_LIST, finished, err);
}

json_t *hub_task_json_as(hub *h, uint64_t task_id, value_format fmt, int *finished, ippc_error *err)
{
    json_t *out = NULL;
    task_result *res = NULL;
    int present = 0;
    hub_lock(h);
    const task *t = task_table_get(&h->tasks, task_id);
    if (t) {
        out = task_doc(t);
        res = task_doc_result(t, &present);
        *finished = task_state_finished(t->state);
    }
    hub_unlock(h);
    if (out) {
        if (present)
            task_doc_add_result(out, res, fmt);
        task_result_unref(res);
        return out;
    }
    if (!h->store) {
        ippc_error_set(err, ERR_NOT_FOUND, "no task with id %llu", (unsigned long long)task_id);
        return NULL;
    }
    out = stored_task_json(h, task_id, fmt, err);
    if (out)
        *finished = 1;
    return out;
}

int hub_task_wait(hub *h, uint64_t task_id, int64_t deadline_ms, void (*wake)(void *arg),
                  void (*registered)(void *arg), void *arg)
{
    int rc;
    hub_lock(h);
    task *t = task_table_get(&h->tasks, task_id);
    if (!t) {
        rc = -1;
    } else if (task_state_finished(t->state) ||
               waiters_add(&t->waiters, deadline_ms, wake, arg) < 0) {
        rc = 1;
    } else {
        if (registered)
            registered(arg);
        rc = 0;
    }
    hub_unlock(h);
    return rc;
}

json_t *hub_task_abort(hub *h, uint64_t task_id, int force, ippc_error *err)
{
    json_t *out = NULL;
    hub_lock(h);
    task *t = task_table_get(&h->tasks, task_id);
    if (!t)
        ippc_error_set(err, ERR_NOT_FOUND, "no unfinished task with id %llu",
                       (unsigned long long)task_id);
    else if (tasks_abort(&h->lb, t, force, err) == 0) {
        out = task_doc(t); /* before settling, which may evict it */
        tasks_settle(&h->lb);
    }
    hub_unlock(h);
    return out;
}

json_t *hub_task_resubmit(hub *h, uint64_t task_id, ippc_error *err)
{
    json_t *spec = NULL;
    int direct = 0;
    hub_lock(h);
    const task *t = task_table_get(&h->tasks, task_id);
    if (t) {
        spec = json_incref(t->spec); /* immutable */
        direct = t->kind == TASK_DIRECT;
    }
    hub_unlock(h);
    if (!t && h->store) {
        store_record rec;
        if (store_get(h->store, task_id, &rec, err) == 1) {
            spec = json_incref(json_object_get(rec.doc, "spec"));
            direct = rec.kind && strcmp(rec.kind, "direct") == 0;
            store_record_free(&rec);
        }
    }
    if (direct) {
        json_decref(spec);
        ippc_error_set(err, ERR_INVALID,
                       "task %llu is a direct-view task: repeat its request instead",
                       (unsigned long long)task_id);
        return NULL;
    }
    if (!spec) {
        ippc_error_set(err, ERR_NOT_FOUND, "no task with id %llu", (unsigned long long)task_id);
        return NULL;
    }
    int map_mode = json_is_true(json_object_get(spec, "$map"));
    json_t *clean = json_deep_copy(spec);
    json_object_del(clean, "$map");
    json_decref(spec);
    tasks_batch batch;
    uint64_t id = 0;
    json_t *out = tasks_build(&h->lb, clean, map_mode, &batch, err) == 0
                      ? enqueue_and_answer(h, &batch, &id, err)
                      : NULL;
    json_decref(clean);
    return out;
}

uint64_t hub_map_submit(hub *h, const json_t *body, ippc_error *err)
{
    tasks_batch batch;
    tasks_map_shape shape;
    if (tasks_build_map(&h->lb, body, &batch, &shape, err) < 0)
        return 0;
    uint64_t id = 0, first = 0;
    hub_lock(h);
    request *r =
        requests_open_map(&h->requests, batch.n, shape.ordered, shape.items, shape.chunksize);
    if (!r)
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
    else if (tasks_enqueue(&h->lb, &batch, r, &first, err) == 0)
        id = r->id;
    tasks_settle(&h->lb);
    hub_unlock(h);
    tasks_batch_clear(&batch);
    return id;
}

json_t *hub_queue(hub *h)
{
    hub_lock(h);
    json_t *out = tasks_queue_json(&h->lb);
    hub_unlock(h);
    return out;
}

json_t *hub_task_list(hub *h, const hub_task_filter *f, ippc_error *err)
{
    if (!h->store) {
        ippc_error_set(err, ERR_UNAVAILABLE, "this controller has no task store");
        return NULL;
    }
    /* A page that silently skipped the records still waiting in memory would
     * look complete: say so instead (tasks still answer by id from memory). */
    saves_sync(h);
    if (store_flush(h->store) < 0) {
        store_status st;
        store_get_status(h->store, &st);
        ippc_error_set(err, ERR_UNAVAILABLE,
                       "task history is incomplete while the task store is degraded (%s; %zu "
                       "records not saved yet); GET /api/v1/tasks/{id} still answers",
                       st.error, st.pending);
        return NULL;
    }
    store_query q = {.state = f->state,
                     .kind = f->kind,
                     .request_id = f->request,
                     .engine = f->engine,
                     .tag = f->tag,
                     .since = f->since,
                     .limit = f->limit,
                     .cursor = f->cursor};
    uint64_t next = 0;
    json_t *list = store_query_tasks(h->store, &q, &next, err);
    if (!list)
        return NULL;
    size_t i;
    json_t *doc;
    json_array_foreach(list, i, doc)
        json_object_del(doc, "spec");
    json_t *out = json_pack("{s:o}", "tasks", list);
    json_object_set_new(out, "next_cursor", next ? json_integer((json_int_t)next) : json_null());
    return out;
}

json_t *hub_task_query(hub *h, const char *state, int engine, const char *tag, const char *since,
                       size_t limit, uint64_t cursor, ippc_error *err)
{
    hub_task_filter f = {.state = state,
                         .engine = engine,
                         .tag = tag,
                         .since = since,
                         .limit = limit,
                         .cursor = cursor};
    return hub_task_list(h, &f, err);
}

json_t *hub_task_purge(hub *h, const char *before, ippc_error *err)
{
    if (!h->store) {
        ippc_error_set(err, ERR_UNAVAILABLE, "this controller has no task store");
        return NULL;
    }
    saves_sync(h);
    store_flush(h->store);
    long n = store_purge(h->store, before, err);
    if (n < 0)
        return NULL;
    hub_lock(h);
    tasks_forget_finished(&h->lb, before);
    hub_unlock(h);
    return json_pack("{s:I}", "purged", (json_int_t)n);
}

/* ------------------------------------------------------------ streams, metrics */

json_t *hub_stream_attach(hub *h, const events_sink *sink, events_client **client)
{
    hub_lock(h);
    json_t *engines = json_array();
    int64_t now = clock_now_ms();
    for (size_t i = 0; i < h->engines.n_engines; i++)
        if (h->engines.engines[i].state != ENGINE_ABSENT)
            json_array_append_new(engines, engine_json(&h->engines.engines[i], now));
    *client = h->events ? events_client_add(h->events, sink) : NULL;
    json_t *tasks = json_array();
    const int lists[] = {TASK_LIST_WAITING, TASK_LIST_PENDING, TASK_LIST_RUNNING};
    for (int k = 0; k < 3; k++)
        for (const task *t = task_list_first(&h->tasks, lists[k]); t;
             t = task_list_next(&h->tasks, t))
            json_array_append_new(tasks, task_doc(t));
    json_t *snap = json_pack("{s:s, s:I, s:o, s:o, s:[sss]}", "type", "snapshot", "seq",
                             (json_int_t)(h->events ? events_seq(h->events) : 0), "engines",
                             engines, "tasks", tasks, "topics", "engines", "tasks", "stdout");
    hub_unlock(h);
    char when[CLOCK_ISO_LEN];
    clock_iso8601(when, sizeof when);
    json_object_set_new(snap, "time", json_string(when));
    return snap;
}

void hub_metrics(hub *h, char **out, size_t *len)
{
    metrics_hub_snapshot s;
    memset(&s, 0, sizeof s);
    size_t by_state[ENGINE_NSTATES];
    hub_lock(h);
    registry_counts(&h->engines, by_state, &s.queue_depth);
    for (int k = 0; k < TASK_NSTATES; k++) {
        s.tasks[k] = h->tasks.counts[k];
        s.task_states[k] = task_state_label((task_state)k);
    }
    s.unassigned =
        h->tasks.lists[TASK_LIST_PENDING].count + h->tasks.lists[TASK_LIST_WAITING].count;
    s.requests_total = h->requests.next_id - 1;
    s.tasks_submitted_total = h->tasks.next_id - 1;
    s.ws_clients = h->events ? events_clients(h->events) : 0;
    s.ws_clients_dropped = h->events ? events_dropped_clients(h->events) : 0;
    s.bytes_to_engines = h->engines.bytes_to_engines;
    s.bytes_from_engines = h->engines.bytes_from_engines;
    s.kept_result_bytes = h->tasks.result_bytes;
    s.keep_results_bytes = h->requests.keep_bytes;
    _Static_assert(GONE_NREASONS == sizeof s.requests_forgotten / sizeof s.requests_forgotten[0],
                   "one metrics counter per reason a request is forgotten");
    for (int k = 0; k < GONE_NREASONS; k++)
        s.requests_forgotten[k] = h->requests.gone_total[k];
    memcpy(s.fanout_ops, h->fanout_ops, sizeof s.fanout_ops);
    hub_unlock(h);
    s.engines_idle = by_state[ENGINE_IDLE];
    s.engines_busy = by_state[ENGINE_BUSY];
    s.engines_dead = by_state[ENGINE_DEAD];
    metrics_text m;
    metrics_init(&m);
    metrics_hub(&m, &s);
    *out = metrics_take(&m, len);
}
