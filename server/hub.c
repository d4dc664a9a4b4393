/* hub.c — engines, direct-view requests and tasks (see hub.h).
 *
 * Invariants (all under h->lock):
 *  - engines[id] exists for every id < n_engines; slots of ranks that have not
 *    registered yet have state ENGINE_ABSENT and are never listed.
 *  - An MPI job owns the id block [base, base + size): rank r is id base + r,
 *    so a view over ids lists ranks in order.
 *  - Every task that is not finished is in h->tasks (task id -> task); a task
 *    leaves the map exactly once, when its result arrives or its engine dies.
 *  - A request is finished when nfinished == ntargets; then its waiters have
 *    been woken and the list is empty.
 *  - Finished requests are kept, oldest first, in the done list (bounded by
 *    max_requests_kept) so GET /requests/{id} works after the fact.
 */
#include "hub.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "hub_internal.h"
#include "jsonout.h"
#include "proto.h"
#include "secret.h"
#include "targets.h"

const char *engine_state_name(engine_state s) {
    switch (s) {
    case ENGINE_IDLE: return "idle";
    case ENGINE_BUSY: return "busy";
    case ENGINE_DEAD: return "dead";
    default: return "absent";
    }
}

int64_t hub_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hub_emit(hub *h, json_t *event, int topic, int engine, uint64_t task, const json_t *tags) {
    if (!h->events) {
        json_decref(event);
        return;
    }
    event_meta meta = {.topic = topic, .engine = engine, .task = task, .tags = tags};
    events_emit(h->events, event, &meta);
}

#define EVENT_RESULT_MAX (64 * 1024)

void hub_copy_error(json_t *into, const json_t *result) {
    const char *keys[] = {"ename", "evalue", "traceback"};
    for (int k = 0; k < 3; k++) {
        json_t *v = json_object_get(result, keys[k]);
        if (v)
            json_object_set(into, keys[k], v);
    }
}

void hub_event_outcome(json_t *event, const json_t *result, const ippc_blobs *blobs) {
    const char *status = json_string_value(json_object_get(result, "status"));
    if (!status || strcmp(status, "ok") != 0) {
        json_t *e = json_object();
        hub_copy_error(e, result);
        json_object_set_new(event, "error", e);
        return;
    }
    json_t *skel = json_object_get(result, "value");
    if (!skel)
        return;
    size_t bytes = 0;
    for (size_t i = 0; i < blobs->count; i++)
        bytes += blobs->items[i].len;
    ippc_error err = {0};
    json_t *v = bytes <= EVENT_RESULT_MAX ? value_to_client(skel, blobs, VALUE_FORMAT_LIST, &err)
                                          : NULL;
    char *text = v ? jsonout_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (v && text && strlen(text) <= EVENT_RESULT_MAX)
        json_object_set(event, "result", v);
    else
        json_object_set_new(event, "result_omitted", json_true());
    free(text);
    json_decref(v);
}

void hub_iso8601_now(char *buf, size_t size) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%06ldZ", base, (long)tv.tv_usec);
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

hub *hub_new(const hub_config *cfg) {
    hub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->lock, NULL);
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
    hub_iso8601_now(h->started, sizeof h->started);
    h->started_ms = hub_now_ms();
    h->next_request_id = 1;
    h->next_task_id = 1;
    idmap_init(&h->requests);
    idmap_init(&h->tasks);
    h->sched = cfg->sched;
    h->hwm = cfg->hwm ? cfg->hwm : 1;
    h->store = cfg->store;
    h->events = cfg->events;
    tasks_init_locked(h);
    return h;
}

static void request_free(request *r) {
    for (size_t i = 0; r->tasks && i < r->ntargets; i++) { /* maps have no tasks here */
        json_decref(r->tasks[i].result);
        blobs_free(&r->tasks[i].blobs);
    }
    while (r->waiters) {
        waiter *w = r->waiters;
        r->waiters = w->next;
        free(w);
    }
    free(r->tasks);
    free(r->chunk_ids);
    free(r->done_order);
    free(r->targets);
    free(r->name);
    json_decref(r->names);
    free(r);
}

static void list_append(req_list *l, request *r) {
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->count++;
}

static void list_remove(req_list *l, request *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->count--;
}

void hub_free(hub *h) {
    if (!h)
        return;
    req_list *lists[2] = {&h->open, &h->done};
    for (int i = 0; i < 2; i++) {
        while (lists[i]->head) {
            request *r = lists[i]->head;
            list_remove(lists[i], r);
            request_free(r);
        }
    }
    tasks_free_locked(h);
    idmap_free(&h->requests);
    idmap_free(&h->tasks);
    free(h->engines);
    free(h->jobs);
    free(h->engine_key);
    free(h->profile);
    free(h->url);
    free(h->ws_url);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* ------------------------------------------------------------------ engines */

int hub_is_live(const engine *e) { return e->state == ENGINE_IDLE || e->state == ENGINE_BUSY; }

static const char *str_field(const json_t *msg, const char *key, size_t max) {
    const char *s = json_string_value(json_object_get(msg, key));
    return s && strlen(s) <= max ? s : NULL;
}

static int int_field(const json_t *msg, const char *key, json_int_t lo, json_int_t hi, json_int_t *out) {
    json_t *v = json_object_get(msg, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -1;
    *out = json_integer_value(v);
    return 0;
}

static job *job_find_or_add(hub *h, const char *name, int size) {
    for (size_t i = 0; i < h->n_jobs; i++)
        if (strcmp(h->jobs[i].name, name) == 0)
            return &h->jobs[i];
    if (h->n_jobs == h->cap_jobs) {
        size_t cap = h->cap_jobs ? h->cap_jobs * 2 : 8;
        job *jobs = realloc(h->jobs, cap * sizeof *jobs);
        if (!jobs)
            return NULL;
        h->jobs = jobs;
        h->cap_jobs = cap;
    }
    size_t need = h->n_engines + (size_t)size;
    if (need > h->cap_engines) {
        size_t cap = h->cap_engines ? h->cap_engines : 16;
        while (cap < need)
            cap *= 2;
        engine *engines = realloc(h->engines, cap * sizeof *engines);
        if (!engines)
            return NULL;
        h->engines = engines;
        h->cap_engines = cap;
    }
    /* Reserve the whole id block now, so ids follow ranks whatever order the
     * ranks register in. */
    memset(h->engines + h->n_engines, 0, (size_t)size * sizeof *h->engines);
    for (int r = 0; r < size; r++)
        h->engines[h->n_engines + (size_t)r].id = (int)h->n_engines + r;
    job *j = &h->jobs[h->n_jobs++];
    snprintf(j->name, sizeof j->name, "%s", name);
    j->size = size;
    j->base = (int)h->n_engines;
    h->n_engines = need;
    return j;
}

int hub_engine_register(hub *h, const json_t *msg, const hub_engine_link *link, int *engine_id,
                        ippc_error *err) {
    const char *key = str_field(msg, "key", 256);
    if (!key || !secret_equal(key, h->engine_key))
        return ippc_error_set(err, ERR_UNAUTHORIZED, "wrong or missing engine key");
    const char *job_name = str_field(msg, "job", 64);
    const char *host = str_field(msg, "host", 255);
    json_int_t rank, size, pid;
    if (!job_name || !*job_name || !host || int_field(msg, "size", 1, 1 << 20, &size) < 0 ||
        int_field(msg, "rank", 0, size - 1, &rank) < 0 ||
        int_field(msg, "pid", 0, INT32_MAX, &pid) < 0)
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "register needs job, host, pid, size >= 1 and 0 <= rank < size");

    pthread_mutex_lock(&h->lock);
    int rc = -1;
    job *j = job_find_or_add(h, job_name, (int)size);
    if (!j) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        goto out;
    }
    if (j->size != size) {
        ippc_error_set(err, ERR_CONFLICT, "job %s was registered with size %d, not %d", job_name,
                       j->size, (int)size);
        goto out;
    }
    engine *e = &h->engines[j->base + rank];
    if (hub_is_live(e)) {
        ippc_error_set(err, ERR_CONFLICT, "rank %d of job %s is already registered as engine %d",
                       (int)rank, job_name, e->id);
        goto out;
    }
    e->state = ENGINE_IDLE;
    e->rank = (int)rank;
    e->size = (int)size;
    snprintf(e->job, sizeof e->job, "%s", job_name);
    snprintf(e->host, sizeof e->host, "%s", host);
    e->pid = (long)pid;
    hub_iso8601_now(e->registered, sizeof e->registered);
    e->last_heartbeat_ms = hub_now_ms();
    e->link = *link;
    e->queued = 0;
    e->lb_load = 0;
    *engine_id = e->id;
    rc = 0;
    hub_emit(h, json_pack("{s:s, s:o}", "type", "engine.registered", "engine",
                          hub_engine_json(e, hub_now_ms())),
             EVENT_TOPIC_ENGINES, e->id, 0, NULL);
    tasks_schedule_locked(h);
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

json_t *hub_engine_json(const engine *e, int64_t now) {
    double age = hub_is_live(e) ? (double)(now - e->last_heartbeat_ms) / 1000.0 : -1;
    return json_pack("{s:i, s:i, s:i, s:s, s:s, s:I, s:s, s:s, s:f, s:I, s:I}", "id", e->id,
                     "rank", e->rank, "size", e->size, "job", e->job, "host", e->host, "pid",
                     (json_int_t)e->pid, "state", engine_state_name(e->state), "registered",
                     e->registered, "heartbeat_age", age, "queue", (json_int_t)e->queued,
                     "tasks_done", (json_int_t)e->tasks_done);
}

json_t *hub_engines(hub *h) {
    json_t *list = json_array();
    pthread_mutex_lock(&h->lock);
    int64_t now = hub_now_ms();
    for (size_t i = 0; i < h->n_engines; i++)
        if (h->engines[i].state != ENGINE_ABSENT)
            json_array_append_new(list, hub_engine_json(&h->engines[i], now));
    pthread_mutex_unlock(&h->lock);
    return json_pack("{s:o}", "engines", list);
}

json_t *hub_engine(hub *h, int engine_id, ippc_error *err) {
    json_t *out = NULL;
    pthread_mutex_lock(&h->lock);
    if (engine_id >= 0 && (size_t)engine_id < h->n_engines &&
        h->engines[engine_id].state != ENGINE_ABSENT)
        out = hub_engine_json(&h->engines[engine_id], hub_now_ms());
    pthread_mutex_unlock(&h->lock);
    if (!out)
        ippc_error_set(err, ERR_NOT_FOUND, "no engine with id %d", engine_id);
    return out;
}

json_t *hub_info(hub *h) {
    pthread_mutex_lock(&h->lock);
    int live = 0;
    for (size_t i = 0; i < h->n_engines; i++)
        live += hub_is_live(&h->engines[i]);
    json_t *info = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:f, s:i, s:I}", "version",
                             IPPC_VERSION, "profile", h->profile, "url", h->url, "ws_url",
                             h->ws_url, "engines", live, "started", h->started, "uptime",
                             (double)(hub_now_ms() - h->started_ms) / 1000.0, "requests_open",
                             (int)h->open.count, "requests_total",
                             (json_int_t)(h->next_request_id - 1));
    pthread_mutex_unlock(&h->lock);
    /* The store has its own lock (never taken inside the hub's here). */
    if (h->store)
        json_object_set_new(info, "store", store_status_json(h->store));
    return info;
}

/* ----------------------------------------------------------------- requests */

void hub_waiters_wake(waiter **list) {
    while (*list) {
        waiter *w = *list;
        *list = w->next;
        w->wake(w->arg);
        free(w);
    }
}

int hub_waiter_add(waiter **list, int64_t deadline_ms, void (*wake)(void *arg), void *arg) {
    waiter *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->deadline_ms = deadline_ms;
    w->wake = wake;
    w->arg = arg;
    w->next = *list;
    *list = w;
    return 0;
}

void hub_waiters_tick(waiter **list, int64_t now) {
    while (*list) {
        waiter *w = *list;
        if (w->deadline_ms && now >= w->deadline_ms) {
            *list = w->next;
            w->wake(w->arg);
            free(w);
        } else {
            list = &w->next;
        }
    }
}

static void evict_done(hub *h) {
    request *r = h->done.head;
    while (r && h->done.count > h->cfg.max_requests_kept) {
        request *next = r->next;
        if (!r->waiters) {
            list_remove(&h->done, r);
            idmap_remove(&h->requests, r->id);
            if (r->op == HUB_OP_MAP)
                tasks_map_evicted_locked(h, r);
            request_free(r);
        }
        r = next;
    }
}

/* Records a task's outcome; finishes the request when it was the last one. */
static void task_finish(hub *h, task *t, json_t *result, ippc_blobs *blobs) {
    request *r = t->req;
    idmap_remove(&h->tasks, t->id);
    t->state = TASK_DONE;
    t->result = result;
    if (blobs) {
        t->blobs = *blobs;
        blobs_init(blobs);
    }
    if (h->events) {
        const char *st = json_string_value(json_object_get(result, "status"));
        const char *state = !st ? "failed"
                            : strcmp(st, "ok") == 0 ? "completed"
                            : strcmp(st, "error") == 0 ? "failed"
                            : st; /* aborted, lost */
        json_t *ev = json_pack("{s:s, s:I, s:i, s:s, s:I}", "type", "task.completed", "task",
                               (json_int_t)t->id, "engine", t->engine_id, "state", state,
                               "request", (json_int_t)r->id);
        hub_event_outcome(ev, result, &t->blobs);
        hub_emit(h, ev, EVENT_TOPIC_TASKS, t->engine_id, t->id, NULL);
    }
    if ((size_t)t->engine_id < h->n_engines) {
        engine *e = &h->engines[t->engine_id];
        if (e->queued)
            e->queued--;
        e->tasks_done++;
    }
    if (++r->nfinished == r->ntargets)
        hub_request_finish_locked(h, r);
}

void hub_request_open_locked(hub *h, request *r) { list_append(&h->open, r); }

void hub_request_finish_locked(hub *h, request *r) {
    list_remove(&h->open, r);
    list_append(&h->done, r);
    hub_waiters_wake(&r->waiters);
    evict_done(h);
}

json_t *hub_synth_result(const char *status, const char *ename, const char *evalue) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s]}", "type", "result", "status", status,
                     "stdout", "", "ename", ename, "evalue", evalue, "traceback", evalue);
}

static void engine_mark_dead(hub *h, engine *e, const char *reason) {
    if (!hub_is_live(e))
        return;
    e->state = ENGINE_DEAD;
    e->link.conn = NULL;
    hub_emit(h, json_pack("{s:s, s:i, s:s}", "type", "engine.dead", "engine", e->id, "reason",
                          reason),
             EVENT_TOPIC_ENGINES, e->id, 0, NULL);
    char why[300];
    snprintf(why, sizeof why, "engine %d died while running this task (%s)", e->id, reason);
    /* Every unfinished task of this engine is lost. */
    request *r = h->open.head;
    while (r) {
        request *next = r->next; /* task_finish may move r to the done list */
        for (size_t i = 0; r->tasks && i < r->ntargets; i++) { /* maps have no tasks here */
            task *t = &r->tasks[i];
            if (t->engine_id == e->id && t->state == TASK_SENT)
                task_finish(h, t, hub_synth_result("lost", "EngineLost", why), NULL);
        }
        r = next;
    }
    e->queued = 0;
    tasks_on_engine_dead_locked(h, e->id);
    e->lb_load = 0;
    tasks_schedule_locked(h);
}

void hub_engine_closed(hub *h, int engine_id, const char *reason) {
    pthread_mutex_lock(&h->lock);
    if (engine_id >= 0 && (size_t)engine_id < h->n_engines)
        engine_mark_dead(h, &h->engines[engine_id], reason ? reason : "connection closed");
    pthread_mutex_unlock(&h->lock);
}

void hub_engine_message(hub *h, int engine_id, json_t *msg, ippc_blobs *blobs) {
    const char *type = json_string_value(json_object_get(msg, "type"));
    pthread_mutex_lock(&h->lock);
    if (engine_id < 0 || (size_t)engine_id >= h->n_engines || !hub_is_live(&h->engines[engine_id]))
        goto out;
    engine *e = &h->engines[engine_id];
    e->last_heartbeat_ms = hub_now_ms();
    if (type && strcmp(type, "heartbeat") == 0) {
        e->state = json_is_true(json_object_get(msg, "busy")) ? ENGINE_BUSY : ENGINE_IDLE;
        json_t *rss = json_object_get(msg, "rss");
        hub_emit(h,
                 json_pack("{s:s, s:i, s:s, s:I, s:I, s:f, s:O}", "type", "engine.status",
                           "engine", e->id, "state", engine_state_name(e->state), "queue",
                           (json_int_t)e->queued, "tasks_done", (json_int_t)e->tasks_done,
                           "heartbeat_age", 0.0, "rss", json_is_integer(rss) ? rss : json_null()),
                 EVENT_TOPIC_ENGINES, e->id, 0, NULL);
    } else if (type && strcmp(type, "stdout") == 0) {
        json_t *tid = json_object_get(msg, "task"), *data = json_object_get(msg, "data");
        if (json_is_integer(tid) && json_is_string(data))
            hub_emit(h,
                     json_pack("{s:s, s:O, s:i, s:O}", "type", "task.stdout", "task", tid,
                               "engine", e->id, "data", data),
                     EVENT_TOPIC_STDOUT, e->id, (uint64_t)json_integer_value(tid),
                     tasks_tags_locked(h, (uint64_t)json_integer_value(tid)));
    } else if (type && strcmp(type, "result") == 0) {
        for (size_t i = 0; i < blobs->count; i++)
            h->bytes_from_engines += blobs->items[i].len;
        json_t *tid = json_object_get(msg, "task");
        task *t = json_is_integer(tid) ? idmap_get(&h->tasks, (uint64_t)json_integer_value(tid))
                                       : NULL;
        if (t && t->engine_id == engine_id) {
            task_finish(h, t, json_incref(msg), blobs);
        } else if (!t) {
            tasks_on_result_locked(h, engine_id, msg, blobs);
        }
        if (e->queued == 0)
            e->state = ENGINE_IDLE;
    }
out:
    pthread_mutex_unlock(&h->lock);
    json_decref(msg);
    blobs_free(blobs);
}

void hub_tick(hub *h) {
    pthread_mutex_lock(&h->lock);
    int64_t now = hub_now_ms();
    for (size_t i = 0; i < h->n_engines; i++) {
        engine *e = &h->engines[i];
        if (hub_is_live(e) && now - e->last_heartbeat_ms > h->cfg.heartbeat_timeout_ms) {
            hub_engine_link link = e->link;
            engine_mark_dead(h, e, "no heartbeat");
            if (link.close)
                link.close(link.conn, "heartbeat timeout");
        }
    }
    for (request *r = h->open.head; r; r = r->next)
        hub_waiters_tick(&r->waiters, now);
    tasks_tick_locked(h, now);
    pthread_mutex_unlock(&h->lock);
}

void hub_wake_all(hub *h) {
    pthread_mutex_lock(&h->lock);
    for (request *r = h->open.head; r; r = r->next)
        hub_waiters_wake(&r->waiters);
    tasks_wake_all_locked(h);
    pthread_mutex_unlock(&h->lock);
}

void hub_shutdown_engines(hub *h, const char *reason) {
    pthread_mutex_lock(&h->lock);
    hub_emit(h, json_pack("{s:s, s:s}", "type", "cluster.shutdown", "reason", reason),
             EVENT_TOPIC_ALWAYS, -1, 0, NULL);
    for (size_t i = 0; i < h->n_engines; i++) {
        engine *e = &h->engines[i];
        if (!hub_is_live(e))
            continue;
        json_t *msg = json_pack("{s:s, s:s}", "type", "shutdown", "reason", reason);
        e->link.send(e->link.conn, msg, NULL, 0);
        json_decref(msg);
    }
    pthread_mutex_unlock(&h->lock);
}

/* ------------------------------------------------------------ submit path */

int hub_valid_name(const char *name, ippc_error *err) {
    size_t n = name ? strlen(name) : 0;
    int ok = n > 0 && n <= 128 &&
             (name[0] == '_' || ((name[0] | 32) >= 'a' && (name[0] | 32) <= 'z'));
    for (size_t i = 1; ok && i < n; i++) {
        char c = name[i];
        ok = c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
    }
    if (!ok)
        return ippc_error_set(err, ERR_INVALID,
                              "'%.64s' is not a valid variable name (letters, digits, _; "
                              "not starting with a digit)",
                              name ? name : "");
    return 0;
}

static const char *body_string(const json_t *body, const char *key, int required, ippc_error *err) {
    json_t *v = json_object_get(body, key);
    if (!v && !required)
        return NULL;
    if (!json_is_string(v)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "field \"%s\" must be a string", key);
        return NULL;
    }
    return json_string_value(v);
}

/* The per-engine payload of a request: the task message template (without
 * "task") plus the blobs it references.  Scatter builds one per target. */
typedef struct payload {
    json_t *msg;
    ws_blobref **blobs;
    size_t nblobs;
} payload;

static void payload_clear(payload *p) {
    json_decref(p->msg);
    ws_blobrefs_release(p->blobs, p->nblobs);
    memset(p, 0, sizeof *p);
}

static int payload_set(payload *p, json_t *msg, ippc_blobs *blobs, ippc_error *err) {
    p->msg = msg;
    p->blobs = ws_blobrefs_take(blobs, &p->nblobs);
    if (blobs && blobs->count && !p->blobs)
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    return 0;
}

/* Client namespace object -> push message with skeletons. */
static json_t *push_message(const json_t *ns, ippc_blobs *blobs, ippc_error *err) {
    if (!json_is_object(ns) || json_object_size(ns) == 0) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"namespace\" must be a non-empty object");
        return NULL;
    }
    json_t *wire = json_object();
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)ns, key, value) {
        json_t *skel = NULL;
        if (hub_valid_name(key, err) < 0 || !(skel = value_from_client(value, blobs, err))) {
            json_decref(wire);
            return NULL;
        }
        json_object_set_new(wire, key, skel);
    }
    return json_pack("{s:s, s:s, s:o}", "type", "task", "op", "push", "ns", wire);
}

static json_t *pull_message(json_t *names) {
    return json_pack("{s:s, s:s, s:o}", "type", "task", "op", "pull", "names", names);
}

/* Builds the shared payload (all ops but scatter). */
static int build_payload(const hub_call *c, payload *p, ippc_error *err) {
    const json_t *b = c->body;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *msg = NULL;
    switch (c->op) {
    case HUB_OP_EXECUTE: {
        const char *code = body_string(b, "code", 1, err);
        if (!code)
            return -1;
        msg = json_pack("{s:s, s:s, s:s}", "type", "task", "op", "execute", "code", code);
        break;
    }
    case HUB_OP_RUN: {
        const char *source = body_string(b, "source", 1, err);
        if (!source)
            return -1;
        const char *filename = body_string(b, "filename", 0, err);
        if (!filename && json_object_get(b, "filename"))
            return -1;
        msg = json_pack("{s:s, s:s, s:s, s:s}", "type", "task", "op", "run", "filename",
                        filename ? filename : "<run>", "source", source);
        break;
    }
    case HUB_OP_PUSH:
        if (c->wire_value) {
            if (hub_valid_name(c->name, err) < 0)
                return -1;
            msg = json_pack("{s:s, s:s, s:{s:O}}", "type", "task", "op", "push", "ns", c->name,
                            c->wire_value);
            blobs_append_all(&blobs, c->wire_blobs);
        } else {
            msg = push_message(json_object_get(b, "namespace"), &blobs, err);
        }
        break;
    case HUB_OP_LOAD: {
        const char *lib = body_string(b, "library", 1, err);
        if (!lib)
            return -1;
        if (!*lib || strlen(lib) > 4096)
            return ippc_error_set(err, ERR_INVALID, "\"library\" must be a path to a .so");
        msg = json_pack("{s:s, s:s, s:s}", "type", "task", "op", "load", "library", lib);
        break;
    }
    case HUB_OP_RESET:
        msg = json_pack("{s:s, s:s}", "type", "task", "op", "reset");
        break;
    case HUB_OP_LIST:
        msg = json_pack("{s:s, s:s}", "type", "task", "op", "list");
        break;
    case HUB_OP_DELETE:
        if (hub_valid_name(c->name, err) < 0)
            return -1;
        msg = json_pack("{s:s, s:s, s:[s]}", "type", "task", "op", "delete", "names", c->name);
        break;
    case HUB_OP_PULL:
    case HUB_OP_GATHER:
        if (hub_valid_name(c->name, err) < 0)
            return -1;
        msg = pull_message(json_pack("[s]", c->name));
        break;
    case HUB_OP_PULL_MANY: {
        json_t *names = json_object_get(b, "names");
        if (!json_is_array(names) || json_array_size(names) == 0)
            return ippc_error_set(err, ERR_BAD_REQUEST, "\"names\" must be a non-empty list");
        size_t i;
        json_t *n;
        json_array_foreach(names, i, n) {
            if (!json_is_string(n))
                return ippc_error_set(err, ERR_BAD_REQUEST, "\"names\" must hold strings");
            if (hub_valid_name(json_string_value(n), err) < 0)
                return -1;
        }
        msg = pull_message(json_deep_copy(names));
        break;
    }
    case HUB_OP_APPLY: {
        const char *fn = body_string(b, "function", 1, err);
        if (!fn || hub_valid_name(fn, err) < 0)
            return -1;
        json_t *args = json_object_get(b, "args"), *kwargs = json_object_get(b, "kwargs");
        if (args && !json_is_array(args))
            return ippc_error_set(err, ERR_BAD_REQUEST, "\"args\" must be a list");
        if (kwargs && !json_is_object(kwargs))
            return ippc_error_set(err, ERR_BAD_REQUEST, "\"kwargs\" must be an object");
        /* Each argument is a value of its own: a list of numbers given as one
         * argument becomes an ndarray, the args list itself stays a list. */
        json_t *wargs = json_array();
        size_t i;
        json_t *arg;
        json_array_foreach(args, i, arg) {
            json_t *w = value_from_client(arg, &blobs, err);
            if (!w)
                break;
            json_array_append_new(wargs, w);
        }
        json_t *wkwargs = json_object();
        const char *kw;
        json_t *kv;
        if (json_array_size(wargs) == json_array_size(args)) {
            json_object_foreach(kwargs, kw, kv) {
                json_t *w = value_from_client(kv, &blobs, err);
                if (!w)
                    break;
                json_object_set_new(wkwargs, kw, w);
            }
        }
        if (json_array_size(wargs) != json_array_size(args) ||
            json_object_size(wkwargs) != json_object_size(kwargs)) {
            json_decref(wargs);
            json_decref(wkwargs);
            blobs_free(&blobs);
            return -1;
        }
        msg = json_pack("{s:s, s:s, s:s, s:o, s:o}", "type", "task", "op", "apply", "function",
                        fn, "args", wargs, "kwargs", wkwargs);
        break;
    }
    case HUB_OP_SCATTER:
    case HUB_OP_MAP:
        return ippc_error_set(err, ERR_INTERNAL, "not a single-payload view operation");
    }
    if (!msg) {
        blobs_free(&blobs);
        if (!err->code[0])
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    return payload_set(p, msg, &blobs, err);
}

/* ------------------------------------------------------------ prepared */

struct hub_prepared {
    hub_op op;
    int failed;     /* the call cannot be built: err says why */
    int body_error; /* ... because its body is not an object (reported first) */
    ippc_error err;
    payload single; /* every op but scatter */
    /* scatter: the whole value, split once the number of targets is known */
    json_t *skel;
    ippc_blobs blobs;
    char *name;
    json_t *names; /* pull of several names: the names, for the answer */
    size_t bytes;
};

/* Scatter: the value in wire form, not yet split. */
static int prepare_scatter(const hub_call *c, hub_prepared *p, ippc_error *err)
{
    const char *name = body_string(c->body, "name", 1, err);
    if (!name || hub_valid_name(name, err) < 0)
        return -1;
    json_t *data = json_object_get(c->body, "data");
    if (!data && !c->wire_value)
        return ippc_error_set(err, ERR_BAD_REQUEST, "field \"data\" is required");
    if (!(p->name = strdup(name)))
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    if (c->wire_value) {
        p->skel = json_deep_copy(c->wire_value);
        blobs_append_all(&p->blobs, c->wire_blobs);
        if (!p->skel)
            return ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return 0;
    }
    p->skel = value_from_client(data, &p->blobs, err);
    return p->skel ? 0 : -1;
}

hub_prepared *hub_prepare(const hub_call *c, ippc_error *err)
{
    hub_prepared *p = calloc(1, sizeof *p);
    if (!p) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    p->op = c->op;
    blobs_init(&p->blobs);
    int rc;
    if (!json_is_object(c->body)) {
        p->body_error = 1;
        rc = ippc_error_set(&p->err, ERR_BAD_REQUEST, "request body must be a JSON object");
    } else if (c->op == HUB_OP_SCATTER) {
        rc = prepare_scatter(c, p, &p->err);
    } else {
        rc = build_payload(c, &p->single, &p->err);
        if (rc == 0 && c->op == HUB_OP_PULL_MANY &&
            !(p->names = json_deep_copy(json_object_get(c->body, "names"))))
            rc = ippc_error_set(&p->err, ERR_INTERNAL, "out of memory");
    }
    p->failed = rc < 0;
    for (size_t k = 0; k < p->single.nblobs; k++)
        p->bytes += ws_blobref_len(p->single.blobs[k]);
    for (size_t k = 0; k < p->blobs.count; k++)
        p->bytes += p->blobs.items[k].len;
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
    payload_clear(&p->single);
    json_decref(p->skel);
    blobs_free(&p->blobs);
    free(p->name);
    json_decref(p->names);
    free(p);
}

/* Scatter: split once into p parts, one push payload per target. */
static int split_scatter(const hub_prepared *prep, size_t p, payload *out, ippc_error *err)
{
    json_t **parts = calloc(p, sizeof *parts);
    ippc_blobs *part_blobs = calloc(p, sizeof *part_blobs);
    int rc = -1;
    if (!parts || !part_blobs) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < p; i++)
        blobs_init(&part_blobs[i]);
    if (value_scatter(prep->skel, &prep->blobs, p, parts, part_blobs, err) < 0)
        goto done;
    rc = 0;
    for (size_t i = 0; i < p; i++) {
        json_t *msg = json_pack("{s:s, s:s, s:{s:o}}", "type", "task", "op", "push", "ns",
                                prep->name, parts[i]);
        parts[i] = NULL;
        if (rc == 0 && payload_set(&out[i], msg, &part_blobs[i], err) < 0)
            rc = -1;
    }
done:
    for (size_t i = 0; parts && part_blobs && i < p; i++) {
        json_decref(parts[i]);
        blobs_free(&part_blobs[i]);
    }
    free(parts);
    free(part_blobs);
    return rc;
}

static void payloads_free(payload *payloads, size_t n)
{
    for (size_t i = 0; payloads && i < n; i++)
        payload_clear(&payloads[i]);
    free(payloads);
}

int hub_live_ids(hub *h, int **ids, size_t *n) {
    *ids = malloc((h->n_engines ? h->n_engines : 1) * sizeof **ids);
    if (!*ids)
        return -1;
    *n = 0;
    for (size_t i = 0; i < h->n_engines; i++)
        if (hub_is_live(&h->engines[i]))
            (*ids)[(*n)++] = (int)i;
    return 0;
}

/* The live engines c_targets names, under the hub lock. */
static int resolve_targets(hub *h, const char *spec, int **targets, size_t *n, ippc_error *err)
{
    int *live = NULL;
    size_t n_live = 0;
    if (hub_live_ids(h, &live, &n_live) < 0)
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    int rc = targets_parse(spec, live, n_live, targets, n, err);
    free(live);
    return rc;
}

/* Splitting a scatter copies the whole array, so it runs without the lock
 * for the number of targets just seen, and again if engines came or went
 * meanwhile; after this many tries, under the lock. */
#define SPLIT_TRIES 3

uint64_t hub_submit(hub *h, const hub_call *c, ippc_error *err) {
    hub_prepared *prep = c->prepared;
    if (!prep && !json_is_object(c->body)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "request body must be a JSON object");
        return 0;
    }
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
    payload *split = NULL; /* scatter: one payload per target */
    size_t split_for = 0;
    request *r = NULL;

    pthread_mutex_lock(&h->lock);
    for (int tries = 0;; tries++) {
        free(targets);
        targets = NULL;
        if (resolve_targets(h, c->targets, &targets, &n, err) < 0)
            goto done;
        if (prep->failed) {
            *err = prep->err;
            goto done;
        }
        if (prep->op != HUB_OP_SCATTER || (split && split_for == n))
            break;
        int unlocked = tries < SPLIT_TRIES;
        if (unlocked)
            pthread_mutex_unlock(&h->lock);
        payloads_free(split, split_for);
        split = calloc(n, sizeof *split);
        split_for = n;
        int rc = split ? split_scatter(prep, n, split, err)
                       : ippc_error_set(err, ERR_INTERNAL, "out of memory");
        if (unlocked)
            pthread_mutex_lock(&h->lock);
        if (rc < 0)
            goto done;
    }

    r = calloc(1, sizeof *r);
    if (!r || !(r->tasks = calloc(n, sizeof *r->tasks))) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        goto done;
    }
    r->id = h->next_request_id++;
    r->op = c->op;
    r->ntargets = n;
    r->targets = targets;
    targets = NULL;
    r->format = c->format;
    if (c->name)
        r->name = strdup(c->name);
    if (c->op == HUB_OP_PULL_MANY) {
        r->names = prep->names;
        prep->names = NULL;
    }
    idmap_put(&h->requests, r->id, r);
    list_append(&h->open, r);

    for (size_t i = 0; i < n; i++) {
        task *t = &r->tasks[i];
        engine *e = &h->engines[r->targets[i]];
        payload *p = split ? &split[i] : &prep->single;
        t->id = h->next_task_id++;
        t->req = r;
        t->engine_id = e->id;
        blobs_init(&t->blobs);
        idmap_put(&h->tasks, t->id, t);
        json_object_set_new(p->msg, "task", json_integer((json_int_t)t->id));
        e->queued++;
        e->state = ENGINE_BUSY;
        if (h->events) {
            hub_emit(h,
                     json_pack("{s:s, s:I, s:s, s:I, s:i, s:[]}", "type", "task.submitted",
                               "task", (json_int_t)t->id, "kind", "direct", "request",
                               (json_int_t)r->id, "engine", e->id, "tags"),
                     EVENT_TOPIC_TASKS, e->id, t->id, NULL);
            hub_emit(h,
                     json_pack("{s:s, s:I, s:i}", "type", "task.started", "task",
                               (json_int_t)t->id, "engine", e->id),
                     EVENT_TOPIC_TASKS, e->id, t->id, NULL);
        }
        for (size_t k = 0; k < p->nblobs; k++)
            h->bytes_to_engines += ws_blobref_len(p->blobs[k]);
        if (e->link.send(e->link.conn, p->msg, p->blobs, p->nblobs) < 0)
            task_finish(h, t, hub_synth_result("lost", "EngineLost", "could not queue the task"), NULL);
    }
    id = r->id;
    r = NULL;
done:
    if (r)
        request_free(r);
    free(targets);
    pthread_mutex_unlock(&h->lock);
    /* Dropping the payload's last references frees array bytes: after the
     * unlock. */
    payloads_free(split, split_for);
    hub_prepared_free(prep);
    return id;
}

/* --------------------------------------------------------------- answers */

static json_t *error_entry(int engine_id, const json_t *res) {
    json_t *e = json_pack("{s:i}", "engine", engine_id);
    hub_copy_error(e, res);
    return e;
}

static int result_ok(const json_t *res) {
    const char *s = json_string_value(json_object_get(res, "status"));
    return s && strcmp(s, "ok") == 0;
}

/* One value of a pull result, converted for the client; NULL + err. */
static json_t *pulled_value(const task *t, const char *name, value_format fmt, ippc_error *err) {
    json_t *skel = json_object_get(json_object_get(t->result, "value"), name);
    if (!skel) {
        ippc_error_set(err, ERR_INTERNAL, "engine %d sent no value for %s", t->engine_id, name);
        return NULL;
    }
    return value_to_client(skel, &t->blobs, fmt, err);
}

/* Converts a failure to convert into an error entry of the answer. */
static void add_conversion_error(json_t *errors, int engine_id, const ippc_error *err) {
    json_array_append_new(errors, json_pack("{s:i, s:s, s:s, s:[]}", "engine", engine_id, "ename",
                                            "ValueError", "evalue", err->message, "traceback"));
}

static json_t *task_entry(const task *t, value_format fmt, json_t *errors) {
    json_t *res = t->result;
    const char *status = json_string_value(json_object_get(res, "status"));
    const char *out = json_string_value(json_object_get(res, "stdout"));
    json_t *e = json_pack("{s:i, s:s, s:s}", "engine", t->engine_id, "status",
                          status ? status : "error", "stdout", out ? out : "");
    json_t *skel = json_object_get(res, "value");
    if (skel && result_ok(res)) {
        ippc_error cerr = {0};
        json_t *v = value_to_client(skel, &t->blobs, fmt, &cerr);
        if (v)
            json_object_set_new(e, "value", v);
        else
            add_conversion_error(errors, t->engine_id, &cerr);
    }
    if (!result_ok(res))
        hub_copy_error(e, res);
    return e;
}

static json_t *gather_result(const request *r, value_format fmt, json_t *errors) {
    json_t **parts = calloc(r->ntargets, sizeof *parts);
    ippc_blobs *blobs = calloc(r->ntargets, sizeof *blobs);
    json_t *out = NULL;
    ippc_error err = {0};
    if (!parts || !blobs)
        goto done;
    for (size_t i = 0; i < r->ntargets; i++) {
        parts[i] = json_object_get(json_object_get(r->tasks[i].result, "value"), r->name);
        blobs[i] = r->tasks[i].blobs; /* shallow: value_gather only reads */
        if (!parts[i]) {
            ippc_error_set(&err, ERR_INTERNAL, "engine %d sent no value for %s",
                           r->tasks[i].engine_id, r->name);
            add_conversion_error(errors, r->tasks[i].engine_id, &err);
            goto done;
        }
    }
    ippc_blobs out_blobs;
    blobs_init(&out_blobs);
    json_t *skel = value_gather(parts, blobs, r->ntargets, &out_blobs, &err);
    if (skel)
        out = value_to_client(skel, &out_blobs, fmt, &err);
    json_decref(skel);
    blobs_free(&out_blobs);
    if (!out)
        add_conversion_error(errors, -1, &err);
done:
    free(parts);
    free(blobs);
    return out ? out : json_null();
}

/* Ops whose results are values (failures go to "errors"), not task entries. */
static int pull_like(hub_op op) {
    return op == HUB_OP_PULL || op == HUB_OP_PULL_MANY || op == HUB_OP_GATHER ||
           op == HUB_OP_LIST;
}

static json_t *request_answer(const hub *h, const request *r, value_format fmt) {
    if (r->op == HUB_OP_MAP)
        return tasks_map_answer_locked(h, r, fmt);
    json_t *targets = json_array();
    for (size_t i = 0; i < r->ntargets; i++)
        json_array_append_new(targets, json_integer(r->targets[i]));
    json_t *out = json_pack("{s:I, s:o}", "request", (json_int_t)r->id, "targets", targets);
    if (r->nfinished < r->ntargets) {
        json_object_set_new(out, "status", json_string("pending"));
        json_object_set_new(out, "finished", json_integer((json_int_t)r->nfinished));
        return out;
    }
    json_t *errors = json_array();
    json_t *results = json_array();
    int failed = 0;
    for (size_t i = 0; i < r->ntargets; i++) {
        const task *t = &r->tasks[i];
        int ok = result_ok(t->result);
        if (!ok && pull_like(r->op))
            json_array_append_new(errors, error_entry(t->engine_id, t->result));
        switch (r->op) {
        case HUB_OP_PULL: {
            ippc_error err = {0};
            json_t *v = ok ? pulled_value(t, r->name, fmt, &err) : NULL;
            if (ok && !v)
                add_conversion_error(errors, t->engine_id, &err);
            json_array_append_new(results, v ? v : json_null());
            break;
        }
        case HUB_OP_PULL_MANY: {
            json_t *vals = NULL;
            if (ok) {
                vals = json_array();
                size_t k;
                json_t *n;
                json_array_foreach(r->names, k, n) {
                    ippc_error err = {0};
                    json_t *v = pulled_value(t, json_string_value(n), fmt, &err);
                    if (!v)
                        add_conversion_error(errors, t->engine_id, &err);
                    json_array_append_new(vals, v ? v : json_null());
                }
            }
            json_array_append_new(results, vals ? vals : json_null());
            break;
        }
        case HUB_OP_GATHER:
            break;
        case HUB_OP_LIST: {
            json_t *listing = json_object_get(t->result, "value");
            json_array_append(results, ok && listing ? listing : json_null());
            break;
        }
        default:
            json_array_append_new(results, task_entry(t, fmt, errors));
            break;
        }
        failed |= !ok;
    }
    if (r->op == HUB_OP_GATHER) {
        json_object_set_new(out, "result",
                            json_array_size(errors) ? json_null() : gather_result(r, fmt, errors));
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

json_t *hub_request_json(hub *h, uint64_t request_id, int *done, ippc_error *err) {
    return hub_request_json_as(h, request_id, -1, done, err);
}

json_t *hub_request_json_as(hub *h, uint64_t request_id, int fmt, int *done, ippc_error *err) {
    json_t *out = NULL;
    pthread_mutex_lock(&h->lock);
    request *r = idmap_get(&h->requests, request_id);
    if (r) {
        *done = r->nfinished == r->ntargets;
        out = request_answer(h, r, fmt < 0 ? r->format : (value_format)fmt);
    }
    pthread_mutex_unlock(&h->lock);
    if (!r)
        ippc_error_set(err, ERR_NOT_FOUND, "no request with id %llu",
                       (unsigned long long)request_id);
    return out;
}

json_t *hub_interrupt(hub *h, const char *targets, ippc_error *err) {
    pthread_mutex_lock(&h->lock);
    int *live = NULL, *ids = NULL;
    size_t n_live = 0, n = 0;
    json_t *out = NULL;
    if (hub_live_ids(h, &live, &n_live) < 0) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
    } else if (targets_parse(targets, live, n_live, &ids, &n, err) == 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++) {
            engine *e = &h->engines[ids[i]];
            json_t *msg = json_pack("{s:s}", "type", "interrupt");
            e->link.send(e->link.conn, msg, NULL, 0);
            json_decref(msg);
            json_array_append_new(list, json_integer(e->id));
        }
        out = json_pack("{s:o, s:s}", "targets", list, "status", "ok");
    }
    free(live);
    free(ids);
    pthread_mutex_unlock(&h->lock);
    return out;
}

/* The one array a finished request holds, as a skeleton + blobs (borrowed or
 * owned via *owned), or NULL + err. */
static const json_t *request_array_skel(const request *r, ippc_blobs *owned,
                                        const ippc_blobs **blobs, ippc_error *err) {
    if (r->op == HUB_OP_MAP) {
        ippc_error_set(err, ERR_INVALID, "a map's answer is JSON, not one array");
        return NULL;
    }
    if (r->nfinished < r->ntargets) {
        ippc_error_set(err, ERR_CONFLICT, "request %llu is not finished",
                       (unsigned long long)r->id);
        return NULL;
    }
    for (size_t i = 0; i < r->ntargets; i++)
        if (!result_ok(r->tasks[i].result)) {
            ippc_error_set(err, ERR_INVALID, "engine %d: %s", r->tasks[i].engine_id,
                           json_string_value(json_object_get(r->tasks[i].result, "evalue")));
            return NULL;
        }
    if (r->op == HUB_OP_PULL && r->ntargets == 1) {
        *blobs = &r->tasks[0].blobs;
        return json_object_get(json_object_get(r->tasks[0].result, "value"), r->name);
    }
    if (r->op == HUB_OP_GATHER) {
        json_t **parts = calloc(r->ntargets, sizeof *parts);
        ippc_blobs *pb = calloc(r->ntargets, sizeof *pb);
        json_t *skel = NULL;
        if (parts && pb) {
            for (size_t i = 0; i < r->ntargets; i++) {
                parts[i] = json_object_get(json_object_get(r->tasks[i].result, "value"), r->name);
                pb[i] = r->tasks[i].blobs;
            }
            skel = value_gather(parts, pb, r->ntargets, owned, err);
        }
        free(parts);
        free(pb);
        *blobs = owned;
        return skel; /* new reference: the caller drops it */
    }
    ippc_error_set(err, ERR_INVALID,
                   "raw (application/octet-stream) answers need one target, or a gather");
    return NULL;
}

int hub_request_array(hub *h, uint64_t request_id, unsigned char **data, size_t *len,
                      nd_ref *ref, ippc_error *err) {
    int rc = -1;
    ippc_blobs owned;
    blobs_init(&owned);
    pthread_mutex_lock(&h->lock);
    request *r = idmap_get(&h->requests, request_id);
    const ippc_blobs *blobs = NULL;
    const json_t *skel = r ? request_array_skel(r, &owned, &blobs, err) : NULL;
    if (!r)
        ippc_error_set(err, ERR_NOT_FOUND, "no request with id %llu",
                       (unsigned long long)request_id);
    if (skel) {
        int is_nd = value_nd_ref(skel, blobs, ref, err);
        if (is_nd == 0)
            ippc_error_set(err, ERR_INVALID, "the value is not an array");
        if (is_nd == 1) {
            *len = blobs->items[ref->blob].len;
            *data = malloc(*len ? *len : 1);
            if (*data) {
                memcpy(*data, blobs->items[ref->blob].data, *len);
                rc = 0;
            } else {
                ippc_error_set(err, ERR_INTERNAL, "out of memory");
            }
        }
        if (r->op == HUB_OP_GATHER)
            json_decref((json_t *)skel);
    }
    pthread_mutex_unlock(&h->lock);
    blobs_free(&owned);
    return rc;
}

int hub_wait(hub *h, uint64_t request_id, int64_t deadline_ms, void (*wake)(void *arg),
             void (*registered)(void *arg), void *arg) {
    int rc;
    pthread_mutex_lock(&h->lock);
    request *r = idmap_get(&h->requests, request_id);
    if (!r) {
        rc = -1;
    } else if (r->nfinished == r->ntargets) {
        rc = 1;
    } else {
        if (hub_waiter_add(&r->waiters, deadline_ms, wake, arg) < 0) {
            rc = 1; /* cannot wait: answer with the pending body */
        } else {
            if (registered)
                registered(arg);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

json_t *hub_stream_attach(hub *h, const events_sink *sink, events_client **client) {
    pthread_mutex_lock(&h->lock);
    json_t *engines = json_array();
    int64_t now = hub_now_ms();
    for (size_t i = 0; i < h->n_engines; i++)
        if (h->engines[i].state != ENGINE_ABSENT)
            json_array_append_new(engines, hub_engine_json(&h->engines[i], now));
    *client = h->events ? events_client_add(h->events, sink) : NULL;
    json_t *tasks = tasks_in_flight_locked(h);
    for (request *r = h->open.head; r; r = r->next)
        for (size_t i = 0; r->tasks && i < r->ntargets; i++)
            if (r->tasks[i].state == TASK_SENT)
                json_array_append_new(tasks,
                                      json_pack("{s:I, s:s, s:s, s:i, s:I}", "id",
                                                (json_int_t)r->tasks[i].id, "kind", "direct",
                                                "state", "running", "engine",
                                                r->tasks[i].engine_id, "request",
                                                (json_int_t)r->id));
    json_t *snap = json_pack("{s:s, s:I, s:o, s:o, s:[sss]}", "type", "snapshot", "seq",
                             (json_int_t)(h->events ? events_seq(h->events) : 0), "engines",
                             engines, "tasks", tasks, "topics", "engines", "tasks", "stdout");
    pthread_mutex_unlock(&h->lock);
    char when[40];
    hub_iso8601_now(when, sizeof when);
    json_object_set_new(snap, "time", json_string(when));
    return snap;
}

/* Appends printf-formatted text to a growing buffer. */
static void out_printf(char **out, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void out_printf(char **out, size_t *len, size_t *cap, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*out ? *out + *len : NULL, *out ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (*out && *len + (size_t)n < *cap) {
            *len += (size_t)n;
            return;
        }
        size_t ncap = (*cap ? *cap * 2 : 4096) + (size_t)n;
        char *grown = realloc(*out, ncap);
        if (!grown)
            return;
        *out = grown;
        *cap = ncap;
    }
}

void hub_metrics(hub *h, char **out, size_t *len) {
    size_t cap = 0;
    *out = NULL;
    *len = 0;
    pthread_mutex_lock(&h->lock);
    size_t by_state[4] = {0}, queued = 0;
    for (size_t i = 0; i < h->n_engines; i++) {
        by_state[h->engines[i].state]++;
        queued += h->engines[i].queued;
    }
    size_t tasks[7];
    tasks_count_locked(h, tasks);
    out_printf(out, len, &cap,
               "# HELP ippc_engines Engines by state.\n# TYPE ippc_engines gauge\n"
               "ippc_engines{state=\"idle\"} %zu\nippc_engines{state=\"busy\"} %zu\n"
               "ippc_engines{state=\"dead\"} %zu\n",
               by_state[ENGINE_IDLE], by_state[ENGINE_BUSY], by_state[ENGINE_DEAD]);
    static const char *names[] = {"waiting", "pending", "running", "completed",
                                  "failed",  "aborted", "lost"};
    out_printf(out, len, &cap,
               "# HELP ippc_tasks Load-balanced tasks in memory by state.\n"
               "# TYPE ippc_tasks gauge\n");
    for (int k = 0; k < 7; k++)
        out_printf(out, len, &cap, "ippc_tasks{state=\"%s\"} %zu\n", names[k], tasks[k]);
    out_printf(out, len, &cap,
               "# HELP ippc_queue_depth Tasks sent to engines and not finished.\n"
               "# TYPE ippc_queue_depth gauge\nippc_queue_depth %zu\n"
               "# HELP ippc_unassigned_tasks Balanced tasks waiting for an engine.\n"
               "# TYPE ippc_unassigned_tasks gauge\nippc_unassigned_tasks %zu\n"
               "# HELP ippc_requests_total Direct-view requests submitted.\n"
               "# TYPE ippc_requests_total counter\nippc_requests_total %llu\n"
               "# HELP ippc_tasks_submitted_total Task ids handed out.\n"
               "# TYPE ippc_tasks_submitted_total counter\nippc_tasks_submitted_total %llu\n"
               "# HELP ippc_ws_clients Stream clients connected.\n"
               "# TYPE ippc_ws_clients gauge\nippc_ws_clients %zu\n"
               "# HELP ippc_ws_clients_dropped_total Stream clients cut off as slow.\n"
               "# TYPE ippc_ws_clients_dropped_total counter\n"
               "ippc_ws_clients_dropped_total %llu\n"
               "# HELP ippc_bytes_total Bytes of task messages and results.\n"
               "# TYPE ippc_bytes_total counter\n"
               "ippc_bytes_total{direction=\"to_engines\"} %llu\n"
               "ippc_bytes_total{direction=\"from_engines\"} %llu\n",
               queued, h->pending.count + h->waiting.count,
               (unsigned long long)(h->next_request_id - 1),
               (unsigned long long)(h->next_task_id - 1), events_clients(h->events),
               (unsigned long long)events_dropped_clients(h->events),
               (unsigned long long)h->bytes_to_engines, (unsigned long long)h->bytes_from_engines);
    pthread_mutex_unlock(&h->lock);
}
