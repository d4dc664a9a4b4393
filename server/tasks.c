/* tasks.c — load-balanced tasks: submission, dependencies, scheduling onto
 * engines, retries, timeouts, map, and the task store (see hub.h).
 *
 * Life of a task (all under hub->lock):
 *   waiting  — some task in after/follow has not finished; re-checked whenever
 *              a task finishes.
 *   pending  — ready, in FIFO order; tasks_schedule_locked hands it to the
 *              engine the scheduler picks among live engines that are allowed
 *              (targets, follow) and below the high-water mark.
 *   running  — sent; ends with the engine's result, a timeout (interrupt, then
 *              "failed" with TimeoutError), a forced abort, or the engine's
 *              death (back to pending while retries remain, else "lost").
 * Every state change is queued to the store (one writer thread), so the
 * request path never waits on the disk.  Finished tasks stay in memory up to
 * KEEP_FINISHED; older ones are answered from the store.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hub_internal.h"
#include "targets.h"

#define KEEP_FINISHED 50000
#define MAX_BATCH 100000
#define MAX_DEPS 4096

static const char *lb_state_name(lb_state s) {
    static const char *names[] = {"pending", "pending", "running", "completed",
                                  "failed",  "aborted", "lost"};
    return names[s];
}

static int lb_finished(lb_state s) { return s >= LB_COMPLETED; }

/* ------------------------------------------------------------ lists */

static lb_list *list_of(hub *h, int which) {
    lb_list *lists[] = {&h->waiting, &h->pending, &h->running, &h->finished};
    return which >= 0 && which < 4 ? lists[which] : NULL;
}

enum { L_WAITING = 0, L_PENDING, L_RUNNING, L_FINISHED };

static void lb_unlink(hub *h, lbtask *t) {
    lb_list *l = list_of(h, t->list);
    if (!l)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        l->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        l->tail = t->prev;
    t->prev = t->next = NULL;
    l->count--;
    t->list = -1;
}

static void lb_link(hub *h, lbtask *t, int which, int front) {
    lb_unlink(h, t);
    lb_list *l = list_of(h, which);
    if (front) {
        t->next = l->head;
        if (l->head)
            l->head->prev = t;
        else
            l->tail = t;
        l->head = t;
    } else {
        t->prev = l->tail;
        if (l->tail)
            l->tail->next = t;
        else
            l->head = t;
        l->tail = t;
    }
    l->count++;
    t->list = which;
}

static void lbtask_free(lbtask *t) {
    json_decref(t->spec);
    json_decref(t->msg);
    ws_blobrefs_release(t->blobs, t->nblobs);
    free(t->allowed);
    free(t->deps);
    json_decref(t->result);
    blobs_free(&t->result_blobs);
    while (t->waiters) {
        waiter *w = t->waiters;
        t->waiters = w->next;
        free(w);
    }
    free(t);
}

void tasks_init_locked(hub *h) {
    idmap_init(&h->lbtasks);
    h->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)hub_now_ms();
    if (h->store) {
        uint64_t max = store_max_id(h->store);
        if (max >= h->next_task_id)
            h->next_task_id = max + 1;
    }
}

void tasks_free_locked(hub *h) {
    /* Every task is in the id map, listed or not (finished map chunks). */
    for (size_t i = 0; i < h->lbtasks.cap; i++)
        if (h->lbtasks.keys[i] && h->lbtasks.keys[i] != UINT64_MAX)
            lbtask_free(h->lbtasks.values[i]);
    memset(&h->waiting, 0, sizeof h->waiting);
    memset(&h->pending, 0, sizeof h->pending);
    memset(&h->running, 0, sizeof h->running);
    memset(&h->finished, 0, sizeof h->finished);
    idmap_free(&h->lbtasks);
}

static void evict_finished(hub *h);

void tasks_map_evicted_locked(hub *h, request *r) {
    for (size_t c = 0; c < r->ntargets; c++) {
        lbtask *t = idmap_get(&h->lbtasks, r->chunk_ids[c]);
        if (!t || t->map != r)
            continue;
        t->map = NULL;
        /* Finished chunks join the other finished tasks (and their eviction). */
        if (t->list == -1 && lb_finished(t->state))
            lb_link(h, t, L_FINISHED, 0);
    }
    evict_finished(h);
}

void tasks_wake_all_locked(hub *h) {
    for (int which = 0; which < 4; which++)
        for (lbtask *t = list_of(h, which)->head; t; t = t->next)
            hub_waiters_wake(&t->waiters);
}

/* ------------------------------------------------------------ documents */

static json_t *result_error(const json_t *res) {
    json_t *e = json_object();
    hub_copy_error(e, res);
    return e;
}

static json_t *ids_json(const uint64_t *ids, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((json_int_t)ids[i]));
    return a;
}

static void set_time(json_t *doc, const char *key, const char *iso) {
    json_object_set_new(doc, key, iso[0] ? json_string(iso) : json_null());
}

/* The task as clients see it, without "result" (added by callers). */
static json_t *task_doc(const lbtask *t) {
    json_t *doc = json_pack("{s:I, s:s}", "id", (json_int_t)t->id, "state",
                            lb_state_name(t->state));
    json_object_set_new(doc, "engine", t->engine >= 0 ? json_integer(t->engine) : json_null());
    set_time(doc, "submitted", t->submitted);
    set_time(doc, "started", t->started);
    set_time(doc, "completed", t->completed);
    json_t *stdout_text = json_object_get(t->result, "stdout");
    json_object_set_new(doc, "stdout", stdout_text ? json_incref(stdout_text) : json_string(""));
    const char *copy[] = {"function", "code", "tags"};
    for (int k = 0; k < 3; k++) {
        json_t *v = json_object_get(t->spec, copy[k]);
        if (v)
            json_object_set(doc, copy[k], v);
    }
    if (!json_object_get(doc, "tags"))
        json_object_set_new(doc, "tags", json_array());
    json_object_set_new(doc, "after", ids_json(t->deps, t->n_after));
    json_object_set_new(doc, "follow", ids_json(t->deps + t->n_after, t->n_follow));
    json_object_set_new(doc, "retries", json_integer(t->retries));
    json_object_set_new(doc, "timeout", t->timeout > 0 ? json_real(t->timeout) : json_null());
    if (t->map_id)
        json_object_set_new(doc, "request", json_integer((json_int_t)t->map_id));
    if (t->state == LB_FAILED || t->state == LB_ABORTED || t->state == LB_LOST)
        json_object_set_new(doc, "error", result_error(t->result));
    return doc;
}

static json_t *task_client_json(const lbtask *t, value_format fmt) {
    json_t *doc = task_doc(t);
    json_t *skel = json_object_get(t->result, "value");
    if (t->state == LB_COMPLETED) {
        ippc_error err = {0};
        json_t *v = skel ? value_to_client(skel, &t->result_blobs, fmt, &err) : NULL;
        json_object_set_new(doc, "result", v ? v : json_null());
    }
    return doc;
}

/* Queues the task's current state to the store (a copy of the result). */
static void persist(hub *h, const lbtask *t) {
    if (!h->store)
        return;
    store_record rec;
    memset(&rec, 0, sizeof rec);
    rec.id = t->id;
    rec.request_id = t->map_id;
    rec.state = lb_state_name(t->state);
    rec.engine = t->engine;
    rec.submitted = t->submitted[0] ? t->submitted : NULL;
    rec.started = t->started[0] ? t->started : NULL;
    rec.completed = t->completed[0] ? t->completed : NULL;
    json_t *tags = json_object_get(t->spec, "tags");
    rec.tags = tags ? json_incref(tags) : json_array();
    rec.doc = task_doc(t);
    json_object_set(rec.doc, "spec", t->spec);
    blobs_init(&rec.blobs);
    json_t *skel = json_object_get(t->result, "value");
    if (t->state == LB_COMPLETED && skel) {
        rec.result = json_incref(skel);
        for (size_t i = 0; i < t->result_blobs.count; i++) {
            size_t n = t->result_blobs.items[i].len;
            unsigned char *copy = malloc(n ? n : 1);
            if (copy)
                memcpy(copy, t->result_blobs.items[i].data, n);
            blobs_push(&rec.blobs, copy, n);
        }
    }
    store_save(h->store, &rec);
}

/* ------------------------------------------------------------ finishing */

static void dependents_check(hub *h);
static void map_on_finished(hub *h, lbtask *t);

static void evict_finished(hub *h) {
    while (h->finished.count > KEEP_FINISHED) {
        lbtask *t = h->finished.head;
        lb_unlink(h, t);
        idmap_remove(&h->lbtasks, t->id);
        lbtask_free(t);
    }
}

/* Records the outcome; result is a new reference, blobs are moved. */
static void lb_finish(hub *h, lbtask *t, lb_state state, json_t *result, ippc_blobs *blobs) {
    if (t->state == LB_RUNNING && t->engine >= 0 && (size_t)t->engine < h->n_engines) {
        engine *e = &h->engines[t->engine];
        if (e->lb_load)
            e->lb_load--;
        if (e->queued)
            e->queued--;
        e->tasks_done++;
    }
    t->state = state;
    json_decref(t->result);
    t->result = result;
    if (blobs) {
        blobs_free(&t->result_blobs);
        t->result_blobs = *blobs;
        blobs_init(blobs);
    }
    hub_iso8601_now(t->completed, sizeof t->completed);
    /* A map's chunks are kept (and freed) with their map request, so a map's
     * answer never loses a chunk to eviction. */
    if (t->map)
        lb_unlink(h, t);
    else
        lb_link(h, t, L_FINISHED, 0);
    persist(h, t);
    if (h->events) {
        json_t *ev = json_pack("{s:s, s:I, s:s}", "type", "task.completed", "task",
                               (json_int_t)t->id, "state", lb_state_name(t->state));
        json_object_set_new(ev, "engine", t->engine >= 0 ? json_integer(t->engine) : json_null());
        hub_event_outcome(ev, t->result, &t->result_blobs);
        hub_emit(h, ev, EVENT_TOPIC_TASKS, t->engine, t->id, json_object_get(t->spec, "tags"));
    }
    hub_waiters_wake(&t->waiters);
    if (t->map)
        map_on_finished(h, t);
    /* The engine message and blobs are not needed any more. */
    json_decref(t->msg);
    t->msg = NULL;
    ws_blobrefs_release(t->blobs, t->nblobs);
    t->blobs = NULL;
    t->nblobs = 0;
    evict_finished(h);
}

static void lb_fail(hub *h, lbtask *t, const char *ename, const char *evalue) {
    lb_finish(h, t, LB_FAILED, hub_synth_result("error", ename, evalue), NULL);
}

int tasks_on_result_locked(hub *h, int engine_id, json_t *msg, ippc_blobs *blobs) {
    json_t *tid = json_object_get(msg, "task");
    lbtask *t = json_is_integer(tid) ? idmap_get(&h->lbtasks, (uint64_t)json_integer_value(tid))
                                     : NULL;
    if (!t || t->state != LB_RUNNING || t->engine != engine_id)
        return 0;
    const char *status = json_string_value(json_object_get(msg, "status"));
    lb_state state = LB_FAILED;
    json_t *result = json_incref(msg);
    if (status && strcmp(status, "ok") == 0) {
        state = LB_COMPLETED;
    } else if (t->timed_out) {
        char why[96];
        snprintf(why, sizeof why, "task did not finish within its timeout of %g s", t->timeout);
        json_object_set_new(result, "ename", json_string("TimeoutError"));
        json_object_set_new(result, "evalue", json_string(why));
    } else if (status && strcmp(status, "aborted") == 0) {
        state = LB_ABORTED;
    }
    lb_finish(h, t, state, result, blobs);
    dependents_check(h);
    tasks_schedule_locked(h);
    return 1;
}

void tasks_on_engine_dead_locked(hub *h, int engine_id) {
    lbtask *t = h->running.head;
    while (t) {
        lbtask *next = t->next;
        if (t->engine == engine_id) {
            if (t->retries > 0 && !t->abort_requested) {
                t->retries--;
                t->timed_out = 0;
                t->state = LB_PENDING;
                t->engine = -1;
                t->started[0] = '\0';
                lb_link(h, t, L_PENDING, 1);
                persist(h, t);
            } else {
                char why[128];
                snprintf(why, sizeof why, "engine %d died while running this task", engine_id);
                lb_finish(h, t, LB_LOST, hub_synth_result("lost", "EngineLost", why), NULL);
            }
        }
        t = next;
    }
    dependents_check(h); /* follow on a dead engine is now impossible */
}

/* ------------------------------------------------------------ dependencies */

typedef enum dep_verdict { DEP_READY, DEP_WAIT, DEP_FAIL } dep_verdict;

/* A finished dependency's state and engine, from memory or the store. */
static int dep_lookup(hub *h, uint64_t id, lb_state *state, int *engine) {
    lbtask *d = idmap_get(&h->lbtasks, id);
    if (d) {
        *state = d->state;
        *engine = d->engine;
        return 1;
    }
    if (!h->store)
        return 0;
    store_record rec;
    ippc_error err = {0};
    if (store_get(h->store, id, &rec, &err) != 1)
        return 0;
    const char *names[] = {"completed", "failed", "aborted", "lost"};
    *state = LB_LOST;
    for (int i = 0; i < 4; i++)
        if (rec.state && strcmp(rec.state, names[i]) == 0)
            *state = (lb_state)(LB_COMPLETED + i);
    *engine = rec.engine;
    store_record_free(&rec);
    return 1;
}

static dep_verdict deps_verdict(hub *h, lbtask *t, int *follow_engine, char *why, size_t why_len) {
    *follow_engine = -1;
    int wait = 0;
    /* Every dependency is looked at, so an impossible one is reported even
     * behind one that has not finished. */
    for (size_t i = 0; i < t->n_after + t->n_follow; i++) {
        int is_follow = i >= t->n_after;
        lb_state st;
        int eng;
        if (!dep_lookup(h, t->deps[i], &st, &eng)) {
            snprintf(why, why_len, "task %llu depends on unknown task %llu",
                     (unsigned long long)t->id, (unsigned long long)t->deps[i]);
            return DEP_FAIL;
        }
        /* Only earlier tasks: this is what makes cycles impossible. */
        if (t->deps[i] >= t->id) {
            snprintf(why, why_len, "task %llu cannot depend on itself or a later task (%llu)",
                     (unsigned long long)t->id, (unsigned long long)t->deps[i]);
            return DEP_FAIL;
        }
        if (!lb_finished(st)) {
            if (is_follow && st == LB_RUNNING) {
                if (*follow_engine >= 0 && *follow_engine != eng)
                    goto two_engines;
                *follow_engine = eng;
            }
            wait = 1;
            continue;
        }
        if (st != LB_COMPLETED && t->success_only) {
            snprintf(why, why_len, "dependency %llu ended %s", (unsigned long long)t->deps[i],
                     lb_state_name(st));
            return DEP_FAIL;
        }
        if (is_follow) {
            if (eng < 0 || (size_t)eng >= h->n_engines || !hub_is_live(&h->engines[eng])) {
                snprintf(why, why_len, "follow: engine %d of task %llu is not alive", eng,
                         (unsigned long long)t->deps[i]);
                return DEP_FAIL;
            }
            if (*follow_engine >= 0 && *follow_engine != eng)
                goto two_engines;
            *follow_engine = eng;
        }
    }
    return wait ? DEP_WAIT : DEP_READY;
two_engines:
    snprintf(why, why_len, "follow names tasks that ran on different engines");
    return DEP_FAIL;
}

/* Settles every waiting task whose dependencies are now decided. */
static void dependents_check(hub *h) {
    int changed;
    do {
        changed = 0;
        lbtask *t = h->waiting.head;
        while (t) {
            lbtask *next = t->next;
            char why[200];
            int fe;
            dep_verdict v = deps_verdict(h, t, &fe, why, sizeof why);
            if (v == DEP_READY) {
                t->state = LB_PENDING;
                lb_link(h, t, L_PENDING, 0);
                changed = 1;
            } else if (v == DEP_FAIL) {
                int impossible = strstr(why, "ended") == NULL;
                lb_fail(h, t, impossible ? "ImpossibleDependency" : "DependencyError", why);
                changed = 1; /* its own dependents may now fail */
            }
            t = next;
        }
    } while (changed);
}

/* ------------------------------------------------------------ scheduling */

static int allowed_on(const lbtask *t, int engine_id) {
    if (!t->allowed)
        return 1;
    for (size_t i = 0; i < t->n_allowed; i++)
        if (t->allowed[i] == engine_id)
            return 1;
    return 0;
}

static void dispatch(hub *h, lbtask *t, engine *e) {
    json_object_set_new(t->msg, "task", json_integer((json_int_t)t->id));
    t->engine = e->id;
    t->state = LB_RUNNING;
    hub_iso8601_now(t->started, sizeof t->started);
    lb_link(h, t, L_RUNNING, 0);
    e->lb_load++;
    e->queued++;
    e->state = ENGINE_BUSY;
    e->last_used = ++h->use_counter;
    for (size_t i = 0; i < t->nblobs; i++)
        h->bytes_to_engines += ws_blobref_len(t->blobs[i]);
    hub_emit(h,
             json_pack("{s:s, s:I, s:i}", "type", "task.started", "task", (json_int_t)t->id,
                       "engine", e->id),
             EVENT_TOPIC_TASKS, e->id, t->id, json_object_get(t->spec, "tags"));
    if (e->link.send(e->link.conn, t->msg, t->blobs, t->nblobs) < 0) {
        lb_finish(h, t, LB_LOST, hub_synth_result("lost", "EngineLost", "could not queue the task"),
                  NULL);
        return;
    }
    persist(h, t);
}

void tasks_schedule_locked(hub *h) {
    if (!h->pending.head)
        return;
    size_t finished_before = h->finished.count;
    sched_engine *cands = malloc((h->n_engines ? h->n_engines : 1) * sizeof *cands);
    int *index = malloc((h->n_engines ? h->n_engines : 1) * sizeof *index);
    if (!cands || !index)
        goto out;
    lbtask *t = h->pending.head;
    while (t) {
        lbtask *next = t->next;
        int fe = -1;
        char why[200];
        if (t->n_follow) {
            dep_verdict v = deps_verdict(h, t, &fe, why, sizeof why);
            if (v == DEP_FAIL) {
                lb_fail(h, t, "ImpossibleDependency", why);
                t = next;
                continue;
            }
        }
        size_t n = 0, n_live_allowed = 0;
        for (size_t i = 0; i < h->n_engines; i++) {
            engine *e = &h->engines[i];
            if (!hub_is_live(e) || !allowed_on(t, e->id) || (fe >= 0 && e->id != fe))
                continue;
            n_live_allowed++;
            if (e->lb_load >= h->hwm)
                continue;
            cands[n] = (sched_engine){.id = e->id, .load = e->lb_load, .last_used = e->last_used};
            index[n++] = (int)i;
        }
        if (n_live_allowed == 0 && t->allowed) {
            lb_fail(h, t, "ImpossibleDependency", "no live engine among the task's targets");
        } else if (n > 0) {
            long k = sched_choose((sched_kind)h->sched, cands, n, &h->rng);
            dispatch(h, t, &h->engines[index[k]]);
        } else if (!t->allowed && fe < 0) {
            break; /* every engine is full: later tasks cannot go anywhere either */
        }
        t = next;
    }
out:
    free(cands);
    free(index);
    /* Tasks failed here may decide their dependents (which may then be
     * scheduled in turn). */
    if (h->finished.count != finished_before && h->waiting.head) {
        size_t pending_before = h->pending.count;
        dependents_check(h);
        if (h->pending.count != pending_before)
            tasks_schedule_locked(h);
    }
}

void tasks_tick_locked(hub *h, int64_t now) {
    lb_list *lists[] = {&h->waiting, &h->pending, &h->running};
    for (int k = 0; k < 3; k++) {
        lbtask *t = lists[k]->head;
        while (t) {
            lbtask *next = t->next;
            hub_waiters_tick(&t->waiters, now);
            if (t->deadline_ms && now >= t->deadline_ms && !t->timed_out) {
                t->timed_out = 1;
                if (t->state == LB_RUNNING) {
                    engine *e = &h->engines[t->engine];
                    json_t *msg = json_pack("{s:s, s:I}", "type", "interrupt", "task",
                                            (json_int_t)t->id);
                    e->link.send(e->link.conn, msg, NULL, 0);
                    json_decref(msg);
                } else {
                    char why[96];
                    snprintf(why, sizeof why, "task did not start within its timeout of %g s",
                             t->timeout);
                    lb_fail(h, t, "TimeoutError", why);
                }
            }
            t = next;
        }
    }
    for (lbtask *t = h->finished.head; t; t = t->next)
        if (t->waiters)
            hub_waiters_tick(&t->waiters, now);
    dependents_check(h);
    tasks_schedule_locked(h);
}

/* ------------------------------------------------------------ submission */

static int parse_ids(const json_t *v, const char *key, uint64_t **out, size_t *n,
                     ippc_error *err) {
    *out = NULL;
    *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        json_t *one = json_pack("[O]", v);
        int rc = parse_ids(one, key, out, n, err);
        json_decref(one);
        return rc;
    }
    if (!json_is_array(v) || json_array_size(v) > MAX_DEPS)
        return ippc_error_set(err, ERR_BAD_REQUEST, "\"%s\" must be a list of task ids", key);
    *out = malloc((json_array_size(v) + 1) * sizeof **out);
    if (!*out)
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_integer(item) || json_integer_value(item) <= 0) {
            free(*out);
            *out = NULL;
            return ippc_error_set(err, ERR_BAD_REQUEST, "\"%s\" must be a list of task ids",
                                  key);
        }
        (*out)[(*n)++] = (uint64_t)json_integer_value(item);
    }
    return 0;
}

/* "targets": a spec string or a list of engine ids -> allowed ids. */
static int parse_targets(hub *h, const json_t *v, lbtask *t, ippc_error *err) {
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        int *live = NULL;
        size_t n_live = 0;
        if (hub_live_ids(h, &live, &n_live) < 0)
            return ippc_error_set(err, ERR_INTERNAL, "out of memory");
        int rc = targets_parse(json_string_value(v), live, n_live, &t->allowed, &t->n_allowed,
                               err);
        free(live);
        return rc;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 65536)
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "\"targets\" must be a target spec or a non-empty list of ids");
    t->allowed = malloc(json_array_size(v) * sizeof *t->allowed);
    if (!t->allowed)
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_integer(item) || json_integer_value(item) < 0 ||
            json_integer_value(item) > INT32_MAX)
            return ippc_error_set(err, ERR_BAD_REQUEST, "\"targets\" holds engine ids");
        t->allowed[t->n_allowed++] = (int)json_integer_value(item);
    }
    return 0;
}

static const char *const SPEC_KEYS[] = {"function", "args",  "kwargs",  "code", "targets",
                                        "after",    "follow", "retries", "timeout", "tags",
                                        "success_only"};

/* The engine message of a spec: apply for "function", execute for "code". */
static json_t *spec_message(const json_t *spec, ippc_blobs *blobs, ippc_error *err) {
    const char *fn = json_string_value(json_object_get(spec, "function"));
    const char *code = json_string_value(json_object_get(spec, "code"));
    if (!fn == !code) {
        ippc_error_set(err, ERR_BAD_REQUEST,
                       "a task has either \"function\" (with \"args\", \"kwargs\") or \"code\"");
        return NULL;
    }
    if (code)
        return json_pack("{s:s, s:s, s:s}", "type", "task", "op", "execute", "code", code);
    if (hub_valid_name(fn, err) < 0)
        return NULL;
    json_t *args = json_object_get(spec, "args"), *kwargs = json_object_get(spec, "kwargs");
    if ((args && !json_is_array(args)) || (kwargs && !json_is_object(kwargs))) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"args\" is a list and \"kwargs\" an object");
        return NULL;
    }
    json_t *wargs = json_array(), *wkwargs = json_object();
    size_t i;
    json_t *v;
    json_array_foreach(args, i, v) {
        json_t *w = value_from_client(v, blobs, err);
        if (!w)
            goto fail;
        json_array_append_new(wargs, w);
    }
    const char *k;
    json_object_foreach((json_t *)kwargs, k, v) {
        json_t *w = value_from_client(v, blobs, err);
        if (!w)
            goto fail;
        json_object_set_new(wkwargs, k, w);
    }
    return json_pack("{s:s, s:s, s:s, s:o, s:o}", "type", "task", "op", "apply", "function", fn,
                     "args", wargs, "kwargs", wkwargs);
fail:
    json_decref(wargs);
    json_decref(wkwargs);
    return NULL;
}

/* Validates and builds one task (not yet registered).  NULL + err.  A map
 * chunk (map_mode) is an apply spec sent as op "map": its args are the
 * chunk's sequences. */
static lbtask *task_build(hub *h, const json_t *spec, int map_mode, ippc_error *err) {
    if (!json_is_object(spec)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "a task must be a JSON object");
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)spec, key, v) {
        int known = 0;
        for (size_t i = 0; i < sizeof SPEC_KEYS / sizeof *SPEC_KEYS; i++)
            known |= strcmp(key, SPEC_KEYS[i]) == 0;
        if (!known) {
            ippc_error_set(err, ERR_BAD_REQUEST, "unknown task field \"%.64s\"", key);
            return NULL;
        }
    }
    lbtask *t = calloc(1, sizeof *t);
    if (!t) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    t->engine = -1;
    t->list = -1;
    t->success_only = 1;
    blobs_init(&t->result_blobs);
    ippc_blobs blobs;
    blobs_init(&blobs);
    uint64_t *after = NULL, *follow = NULL;
    size_t n_after = 0, n_follow = 0;
    json_t *retries = json_object_get(spec, "retries"), *timeout = json_object_get(spec, "timeout");
    json_t *tags = json_object_get(spec, "tags"), *so = json_object_get(spec, "success_only");
    if (retries && (!json_is_integer(retries) || json_integer_value(retries) < 0 ||
                    json_integer_value(retries) > 100)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"retries\" must be an integer 0..100");
        goto fail;
    }
    if (timeout && !json_is_null(timeout) &&
        (!json_is_number(timeout) || !(json_number_value(timeout) > 0) ||
         json_number_value(timeout) > 86400.0 * 365)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"timeout\" must be a positive number of seconds");
        goto fail;
    }
    if (tags) {
        size_t i;
        json_t *tag;
        int ok = json_is_array(tags) && json_array_size(tags) <= 64;
        json_array_foreach(tags, i, tag) ok = ok && json_is_string(tag);
        if (!ok) {
            ippc_error_set(err, ERR_BAD_REQUEST, "\"tags\" must be a list of strings");
            goto fail;
        }
    }
    if (so && !json_is_boolean(so)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"success_only\" must be true or false");
        goto fail;
    }
    if (parse_ids(json_object_get(spec, "after"), "after", &after, &n_after, err) < 0 ||
        parse_ids(json_object_get(spec, "follow"), "follow", &follow, &n_follow, err) < 0 ||
        parse_targets(h, json_object_get(spec, "targets"), t, err) < 0)
        goto fail;
    t->msg = spec_message(spec, &blobs, err);
    if (!t->msg)
        goto fail;
    if (map_mode) {
        json_object_set_new(t->msg, "op", json_string("map"));
        json_object_set(t->msg, "sequences", json_object_get(t->msg, "args"));
        json_object_del(t->msg, "args");
        json_object_del(t->msg, "kwargs");
    }
    t->blobs = ws_blobrefs_take(&blobs, &t->nblobs);
    t->deps = malloc((n_after + n_follow + 1) * sizeof *t->deps);
    if (!t->deps) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if (n_after)
        memcpy(t->deps, after, n_after * sizeof *after);
    if (n_follow)
        memcpy(t->deps + n_after, follow, n_follow * sizeof *follow);
    t->n_after = n_after;
    t->n_follow = n_follow;
    t->retries = retries ? (int)json_integer_value(retries) : 0;
    t->timeout = timeout && json_is_number(timeout) ? json_number_value(timeout) : 0;
    t->success_only = so ? json_is_true(so) : 1;
    t->spec = json_deep_copy(spec);
    if (map_mode) /* not a client key: task_build refuses "$map" from clients */
        json_object_set_new(t->spec, "$map", json_true());
    free(after);
    free(follow);
    return t;
fail:
    free(after);
    free(follow);
    blobs_free(&blobs);
    lbtask_free(t);
    return NULL;
}

/* Registers a built task: id, times, dependencies, queues. */
static void task_enqueue(hub *h, lbtask *t) {
    t->id = h->next_task_id++;
    hub_iso8601_now(t->submitted, sizeof t->submitted);
    if (t->timeout > 0)
        t->deadline_ms = hub_now_ms() + (int64_t)(t->timeout * 1000.0);
    idmap_put(&h->lbtasks, t->id, t);
    t->state = LB_WAITING;
    lb_link(h, t, L_WAITING, 0);
    persist(h, t);
    if (h->events) {
        json_t *tags = json_object_get(t->spec, "tags");
        json_t *ev = json_pack("{s:s, s:I, s:s, s:n, s:o}", "type", "task.submitted", "task",
                               (json_int_t)t->id, "kind", "balanced", "engine", "tags",
                               tags ? json_incref(tags) : json_array());
        json_object_set_new(ev, "request", t->map_id ? json_integer((json_int_t)t->map_id)
                                                     : json_null());
        hub_emit(h, ev, EVENT_TOPIC_TASKS, -1, t->id, tags);
    }
}

static json_t *submit_specs(hub *h, const json_t *spec, int map_mode, uint64_t *first_id,
                            ippc_error *err) {
    int batch = json_is_array(spec);
    size_t n = batch ? json_array_size(spec) : 1;
    if (batch && (n == 0 || n > MAX_BATCH)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "a batch holds 1..%d tasks", MAX_BATCH);
        return NULL;
    }
    lbtask **built = calloc(n, sizeof *built);
    if (!built) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    json_t *out = NULL;
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < n; i++) {
        built[i] = task_build(h, batch ? json_array_get(spec, i) : spec, map_mode, err);
        if (!built[i]) {
            if (batch) {
                char msg[sizeof err->message];
                memcpy(msg, err->message, sizeof msg);
                snprintf(err->message, sizeof err->message, "task %zu: %.400s", i, msg);
            }
            for (size_t j = 0; j < i; j++)
                lbtask_free(built[j]);
            goto out;
        }
    }
    json_t *ids = json_array();
    for (size_t i = 0; i < n; i++) {
        task_enqueue(h, built[i]);
        json_array_append_new(ids, json_integer((json_int_t)built[i]->id));
    }
    *first_id = built[0]->id;
    dependents_check(h);
    tasks_schedule_locked(h);
    if (batch) {
        out = json_pack("{s:o}", "ids", ids);
    } else {
        json_decref(ids);
        lbtask *t = idmap_get(&h->lbtasks, *first_id);
        out = t ? task_client_json(t, VALUE_FORMAT_LIST)
                : json_pack("{s:I}", "id", (json_int_t)*first_id);
    }
out:
    pthread_mutex_unlock(&h->lock);
    free(built);
    return out;
}

json_t *hub_task_submit(hub *h, const json_t *spec, uint64_t *first_id, ippc_error *err) {
    return submit_specs(h, spec, 0, first_id, err);
}

json_t *hub_task_json(hub *h, uint64_t task_id, int *finished, ippc_error *err) {
    return hub_task_json_as(h, task_id, VALUE_FORMAT_LIST, finished, err);
}

json_t *hub_task_json_as(hub *h, uint64_t task_id, value_format fmt, int *finished,
                         ippc_error *err) {
    pthread_mutex_lock(&h->lock);
    lbtask *t = idmap_get(&h->lbtasks, task_id);
    json_t *out = NULL;
    if (t) {
        out = task_client_json(t, fmt);
        *finished = lb_finished(t->state);
    }
    pthread_mutex_unlock(&h->lock);
    if (out || !h->store) {
        if (!out)
            ippc_error_set(err, ERR_NOT_FOUND, "no task with id %llu",
                           (unsigned long long)task_id);
        return out;
    }
    store_record rec;
    int found = store_get(h->store, task_id, &rec, err);
    if (found != 1) {
        if (found == 0)
            ippc_error_set(err, ERR_NOT_FOUND, "no task with id %llu",
                           (unsigned long long)task_id);
        return NULL;
    }
    out = json_deep_copy(rec.doc);
    json_object_del(out, "spec");
    if (rec.result) {
        ippc_error cerr = {0};
        json_t *v = value_to_client(rec.result, &rec.blobs, fmt, &cerr);
        json_object_set_new(out, "result", v ? v : json_null());
    } else if (rec.state && strcmp(rec.state, "completed") == 0) {
        json_object_set_new(out, "result", json_null());
    }
    *finished = 1;
    store_record_free(&rec);
    return out;
}

int hub_task_wait(hub *h, uint64_t task_id, int64_t deadline_ms, void (*wake)(void *arg),
                  void (*registered)(void *arg), void *arg) {
    int rc;
    pthread_mutex_lock(&h->lock);
    lbtask *t = idmap_get(&h->lbtasks, task_id);
    if (!t)
        rc = -1;
    else if (lb_finished(t->state) || hub_waiter_add(&t->waiters, deadline_ms, wake, arg) < 0)
        rc = 1;
    else {
        if (registered)
            registered(arg);
        rc = 0;
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

json_t *hub_task_abort(hub *h, uint64_t task_id, int force, ippc_error *err) {
    json_t *out = NULL;
    pthread_mutex_lock(&h->lock);
    lbtask *t = idmap_get(&h->lbtasks, task_id);
    if (!t) {
        ippc_error_set(err, ERR_NOT_FOUND, "no unfinished task with id %llu",
                       (unsigned long long)task_id);
    } else if (lb_finished(t->state)) {
        ippc_error_set(err, ERR_CONFLICT, "task %llu already %s", (unsigned long long)task_id,
                       lb_state_name(t->state));
    } else if (t->state == LB_RUNNING && !force) {
        ippc_error_set(err, ERR_CONFLICT,
                       "task %llu is running on engine %d; use ?force=true to interrupt it",
                       (unsigned long long)task_id, t->engine);
    } else if (t->state == LB_RUNNING) {
        t->abort_requested = 1;
        engine *e = &h->engines[t->engine];
        json_t *msg = json_pack("{s:s, s:I}", "type", "interrupt", "task", (json_int_t)t->id);
        e->link.send(e->link.conn, msg, NULL, 0);
        json_decref(msg);
        out = task_client_json(t, VALUE_FORMAT_LIST);
    } else {
        lb_finish(h, t, LB_ABORTED, hub_synth_result("aborted", "TaskAborted", "aborted by request"),
                  NULL);
        dependents_check(h);
        out = task_client_json(t, VALUE_FORMAT_LIST);
    }
    pthread_mutex_unlock(&h->lock);
    return out;
}

json_t *hub_task_resubmit(hub *h, uint64_t task_id, ippc_error *err) {
    json_t *spec = NULL;
    pthread_mutex_lock(&h->lock);
    lbtask *t = idmap_get(&h->lbtasks, task_id);
    if (t)
        spec = json_incref(t->spec);
    pthread_mutex_unlock(&h->lock);
    if (!spec && h->store) {
        store_record rec;
        if (store_get(h->store, task_id, &rec, err) == 1) {
            spec = json_incref(json_object_get(rec.doc, "spec"));
            store_record_free(&rec);
        }
    }
    if (!spec) {
        ippc_error_set(err, ERR_NOT_FOUND, "no task with id %llu", (unsigned long long)task_id);
        return NULL;
    }
    uint64_t id = 0;
    int map_mode = json_is_true(json_object_get(spec, "$map"));
    json_t *clean = json_deep_copy(spec);
    json_object_del(clean, "$map");
    json_decref(spec);
    json_t *out = submit_specs(h, clean, map_mode, &id, err);
    json_decref(clean);
    return out;
}

/* ------------------------------------------------------------ map */

static void map_on_finished(hub *h, lbtask *t) {
    request *r = t->map;
    r->done_order[r->nfinished] = t->map_index;
    if (++r->nfinished == r->ntargets)
        hub_request_finish_locked(h, r);
}

uint64_t hub_map_submit(hub *h, const json_t *body, ippc_error *err) {
    const char *fn = json_string_value(json_object_get(body, "function"));
    json_t *seqs = json_object_get(body, "sequences");
    json_t *cs = json_object_get(body, "chunksize"), *ord = json_object_get(body, "ordered");
    if (!fn || hub_valid_name(fn, err) < 0) {
        if (!fn)
            ippc_error_set(err, ERR_BAD_REQUEST, "\"function\" must name a function");
        return 0;
    }
    if (!json_is_array(seqs) || json_array_size(seqs) == 0) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"sequences\" must be a non-empty list of lists");
        return 0;
    }
    size_t n = SIZE_MAX, i;
    json_t *seq;
    json_array_foreach(seqs, i, seq) {
        if (!json_is_array(seq)) {
            ippc_error_set(err, ERR_BAD_REQUEST, "\"sequences\" must be a list of lists");
            return 0;
        }
        if (json_array_size(seq) < n)
            n = json_array_size(seq); /* like zip(): the shortest sequence wins */
    }
    if (n == 0 || n > MAX_BATCH) {
        ippc_error_set(err, ERR_BAD_REQUEST, "a map covers 1..%d items", MAX_BATCH);
        return 0;
    }
    if ((cs && (!json_is_integer(cs) || json_integer_value(cs) < 1)) ||
        (ord && !json_is_boolean(ord))) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"chunksize\" >= 1, \"ordered\" true|false");
        return 0;
    }
    size_t chunk = cs ? (size_t)json_integer_value(cs) : 1;
    size_t nchunks = sched_chunks(n, chunk);
    /* Each chunk is one task: the engine's op "map" applies fn item by item. */
    json_t *specs = json_array();
    for (size_t c = 0; c < nchunks; c++) {
        size_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        json_t *args = json_array();
        json_array_foreach(seqs, i, seq) {
            json_t *part = json_array();
            for (size_t k = lo; k < hi; k++)
                json_array_append(part, json_array_get(seq, k));
            json_array_append_new(args, part);
        }
        json_array_append_new(specs, json_pack("{s:s, s:o}", "function", fn, "args", args));
    }
    uint64_t first = 0;
    json_t *ids = submit_specs(h, specs, 1, &first, err);
    json_decref(specs);
    if (!ids)
        return 0;
    json_decref(ids);
    pthread_mutex_lock(&h->lock);
    request *r = calloc(1, sizeof *r);
    uint64_t id = 0;
    if (r && (r->chunk_ids = calloc(nchunks, sizeof *r->chunk_ids)) &&
        (r->done_order = calloc(nchunks, sizeof *r->done_order))) {
        r->id = h->next_request_id++;
        r->op = HUB_OP_MAP;
        r->ntargets = nchunks;
        r->ordered = ord ? json_is_true(ord) : 1;
        r->map_items = n;
        r->map_chunksize = chunk;
        for (size_t c = 0; c < nchunks; c++) {
            r->chunk_ids[c] = first + c;
            lbtask *t = idmap_get(&h->lbtasks, first + c);
            if (!t)
                continue;
            t->map = r;
            t->map_id = r->id;
            t->map_index = c;
            if (lb_finished(t->state))
                lb_unlink(h, t); /* chunks live with their map from now on */
            if (lb_finished(t->state))
                r->done_order[r->nfinished++] = c;
        }
        idmap_put(&h->requests, r->id, r);
        id = r->id;
        /* Requests live on the open list until done, as direct ones do. */
        hub_request_open_locked(h, r);
        if (r->nfinished == r->ntargets)
            hub_request_finish_locked(h, r);
    } else {
        if (r) {
            free(r->chunk_ids);
            free(r);
        }
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    pthread_mutex_unlock(&h->lock);
    return id;
}

/* The error entry of a map answer for the item at index of "results"
 * (item: its position in the sequences), from an {ename, evalue, traceback}
 * holder. */
static json_t *map_error_entry(uint64_t task_id, size_t index, size_t item, const json_t *from) {
    json_t *e = json_pack("{s:I, s:I, s:I}", "task", (json_int_t)task_id, "index",
                          (json_int_t)index, "item", (json_int_t)item);
    hub_copy_error(e, from);
    return e;
}

/* Appends chunk c's items (items lo .. lo + count - 1) to results, and an
 * entry to errors for each one that has no value, so results always line
 * up with the items.  A chunk that ran has a value per item; an item that
 * failed in it is null, with its own error (the engine's "item_errors"); a
 * chunk that failed as a whole (no such function, interrupted, timed out,
 * engine lost, its value unreadable) gives every item the chunk's error. */
static void map_chunk_answer(const hub *h, const request *r, size_t c, size_t lo, size_t count,
                             value_format fmt, json_t *results, json_t *errors) {
    uint64_t task_id = r->chunk_ids[c];
    lbtask *t = idmap_get((idmap *)&h->lbtasks, task_id);
    const json_t *skel = t ? json_object_get(t->result, "value") : NULL;
    const json_t *item_errors = t ? json_object_get(t->result, "item_errors") : NULL;
    json_t *values = NULL, *chunk_error = NULL;
    if (t && skel && (t->state == LB_COMPLETED || (t->state == LB_FAILED && item_errors))) {
        ippc_error err = {0};
        values = value_to_client(skel, &t->result_blobs, fmt, &err);
        if (!values)
            chunk_error = json_pack("{s:s, s:s, s:[]}", "ename", "ValueError", "evalue",
                                    err.message, "traceback");
    } else if (t && t->state != LB_COMPLETED) {
        chunk_error = result_error(t->result);
    } else if (t) {
        chunk_error = json_pack("{s:s, s:s, s:[]}", "ename", "ProtocolError", "evalue",
                                "the engine sent no map results", "traceback");
    } else {
        chunk_error = json_pack("{s:s, s:s, s:[]}", "ename", "TaskLost", "evalue",
                                "the chunk's task is gone", "traceback");
    }
    if (values && !chunk_error && (!json_is_array(values) || json_array_size(values) != count)) {
        char why[160];
        snprintf(why, sizeof why, "the engine sent %zu map results for %zu items",
                 json_is_array(values) ? json_array_size(values) : (size_t)1, count);
        chunk_error = json_pack("{s:s, s:s, s:[]}", "ename", "ProtocolError", "evalue", why,
                                "traceback");
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
        chunk_error = json_pack("{s:s, s:s, s:[]}", "ename", "MemoryError", "evalue",
                                "out of memory", "traceback");
    for (size_t j = 0; j < count; j++) {
        const json_t *why = chunk_error ? chunk_error : own[j];
        size_t index = json_array_size(results);
        if (!why) {
            json_array_append(results, json_array_get(values, j));
            continue;
        }
        json_array_append_new(results, json_null());
        json_array_append_new(errors, map_error_entry(task_id, index, lo + j, why));
    }
    free(own);
    json_decref(values);
    json_decref(chunk_error);
}

json_t *tasks_map_answer_locked(const hub *h, const request *r, value_format fmt) {
    json_t *out = json_pack("{s:I, s:o}", "request", (json_int_t)r->id, "tasks",
                            ids_json(r->chunk_ids, r->ntargets));
    if (r->nfinished < r->ntargets) {
        json_object_set_new(out, "status", json_string("pending"));
        json_object_set_new(out, "finished", json_integer((json_int_t)r->nfinished));
        return out;
    }
    /* Ordered: chunks in input order; unordered: in the order they finished.
     * Either way each chunk's items stay together, in input order. */
    json_t *results = json_array(), *errors = json_array();
    for (size_t k = 0; k < r->ntargets; k++) {
        size_t c = r->ordered ? k : r->done_order[k];
        size_t lo = c * r->map_chunksize;
        size_t count = lo < r->map_items ? r->map_items - lo : 0;
        if (count > r->map_chunksize)
            count = r->map_chunksize;
        map_chunk_answer(h, r, c, lo, count, fmt, results, errors);
    }
    json_object_set_new(out, "results", results);
    if (json_array_size(errors))
        json_object_set(out, "errors", errors);
    json_object_set_new(out, "status", json_string(json_array_size(errors) ? "error" : "ok"));
    json_decref(errors);
    return out;
}

/* ------------------------------------------------------------ queries */

json_t *hub_queue(hub *h) {
    pthread_mutex_lock(&h->lock);
    json_t *engines = json_object();
    for (size_t i = 0; i < h->n_engines; i++) {
        engine *e = &h->engines[i];
        if (e->state == ENGINE_ABSENT)
            continue;
        char key[16];
        snprintf(key, sizeof key, "%d", e->id);
        json_object_set_new(engines, key,
                            json_pack("{s:I, s:I, s:I, s:s}", "queued",
                                      (json_int_t)(e->queued - e->lb_load), "running",
                                      (json_int_t)e->lb_load, "completed",
                                      (json_int_t)e->tasks_done, "state",
                                      engine_state_name(e->state)));
    }
    json_t *out = json_pack("{s:o, s:I, s:I}", "engines", engines, "unassigned",
                            (json_int_t)(h->pending.count + h->waiting.count), "waiting",
                            (json_int_t)h->waiting.count);
    pthread_mutex_unlock(&h->lock);
    return out;
}

json_t *hub_task_query(hub *h, const char *state, int engine, const char *tag, const char *since,
                       size_t limit, uint64_t cursor, ippc_error *err) {
    if (!h->store) {
        ippc_error_set(err, ERR_UNAVAILABLE, "this controller has no task store");
        return NULL;
    }
    /* A page that silently skipped the records still waiting in memory would
     * look complete: say so instead (tasks still answer by id from memory). */
    if (store_flush(h->store) < 0) {
        store_status st;
        store_get_status(h->store, &st);
        ippc_error_set(err, ERR_UNAVAILABLE,
                       "task history is incomplete while the task store is degraded (%s; %zu "
                       "records not saved yet); GET /api/v1/tasks/{id} still answers",
                       st.error, st.pending);
        return NULL;
    }
    store_query q = {.state = state, .engine = engine, .tag = tag, .since = since,
                     .limit = limit, .cursor = cursor};
    uint64_t next = 0;
    json_t *list = store_query_tasks(h->store, &q, &next, err);
    if (!list)
        return NULL;
    size_t i;
    json_t *doc;
    json_array_foreach(list, i, doc) json_object_del(doc, "spec");
    json_t *out = json_pack("{s:o}", "tasks", list);
    json_object_set_new(out, "next_cursor", next ? json_integer((json_int_t)next) : json_null());
    return out;
}

json_t *hub_task_purge(hub *h, const char *before, ippc_error *err) {
    if (!h->store) {
        ippc_error_set(err, ERR_UNAVAILABLE, "this controller has no task store");
        return NULL;
    }
    store_flush(h->store);
    long n = store_purge(h->store, before, err);
    if (n < 0)
        return NULL;
    /* Forget finished tasks in memory too, except those an unfinished task
     * still depends on (its verdict needs their outcome). */
    pthread_mutex_lock(&h->lock);
    idmap needed;
    idmap_init(&needed);
    lb_list *open_lists[] = {&h->waiting, &h->pending};
    for (int k = 0; k < 2; k++)
        for (lbtask *u = open_lists[k]->head; u; u = u->next)
            for (size_t i = 0; i < u->n_after + u->n_follow; i++)
                idmap_put(&needed, u->deps[i], u);
    lbtask *t = h->finished.head;
    while (t) {
        lbtask *next = t->next;
        if (!t->waiters && !idmap_get(&needed, t->id) &&
            (!before || strcmp(t->completed, before) < 0)) {
            lb_unlink(h, t);
            idmap_remove(&h->lbtasks, t->id);
            lbtask_free(t);
        }
        t = next;
    }
    idmap_free(&needed);
    pthread_mutex_unlock(&h->lock);
    return json_pack("{s:I}", "purged", (json_int_t)n);
}

/* ------------------------------------------------------------ streams */

json_t *tasks_in_flight_locked(hub *h) {
    json_t *list = json_array();
    lb_list *lists[] = {&h->waiting, &h->pending, &h->running};
    for (int k = 0; k < 3; k++)
        for (lbtask *t = lists[k]->head; t; t = t->next)
            json_array_append_new(list, task_doc(t));
    return list;
}

void tasks_count_locked(hub *h, size_t counts[7]) {
    memset(counts, 0, 7 * sizeof *counts);
    counts[0] = h->waiting.count;
    counts[1] = h->pending.count;
    counts[2] = h->running.count;
    for (lbtask *t = h->finished.head; t; t = t->next)
        counts[t->state]++;
}

const json_t *tasks_tags_locked(hub *h, uint64_t task_id) {
    lbtask *t = idmap_get(&h->lbtasks, task_id);
    return t ? json_object_get(t->spec, "tags") : NULL;
}
