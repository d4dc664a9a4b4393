/* tasks.c — load-balanced tasks: specs, dependencies, scheduling, retries,
 * timeouts, abort, map (see tasks.h).
 *
 * Life of a balanced task (task_table.c does the moving, this module decides):
 *   waiting  — some task in after/follow has not finished; re-checked on
 *              every settle (after any change).
 *   pending  — ready, in FIFO order; the scheduler hands it to an engine it
 *              may use (targets, follow) that is below the high-water mark.
 *   running  — sent; ends with the engine's result, a timeout (interrupt,
 *              then "failed" with TimeoutError), a forced abort, or the
 *              engine's death (back to pending while retries remain, else
 *              "lost").
 *
 * Dependencies never read the store under the hub lock: a dependency's
 * outcome comes from the task table while the task is in memory, and is
 * copied into the dependent (lb->dep_state) as soon as it is seen final, so
 * eviction or purge cannot take it away; dependencies already gone from
 * memory at submit are read from the store by tasks_build, before the lock.
 */
#include "tasks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"
#include "store.h"
#include "targets.h"

#define MAX_BATCH 100000
#define MAX_DEPS 4096

void tasks_init(balancer *b, sched_kind sched, unsigned hwm, task_table *tasks, registry *engines,
                requests *requests, store *store)
{
    memset(b, 0, sizeof *b);
    b->sched = sched;
    b->hwm = hwm ? hwm : 1;
    b->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)clock_now_ms();
    b->tasks = tasks;
    b->engines = engines;
    b->requests = requests;
    b->store = store;
}

static void fail(balancer *b, task *t, const char *ename, const char *evalue)
{
    task_finish(b->tasks, t, TASK_FAILED,
                task_result_new(codec_synth_result("error", ename, evalue), NULL));
}

/* ------------------------------------------------------------ dependencies */

typedef enum dep_verdict { DEP_READY, DEP_WAIT, DEP_FAIL } dep_verdict;

/* Dependency i's state and engine: from the table, else from what was
 * recorded when it was last seen final.  0 if unknown. */
static int dep_lookup(balancer *b, task *t, size_t i, task_state *state, int *engine)
{
    task_balanced *lb = t->lb;
    const task *d = task_table_get(b->tasks, lb->deps[i]);
    if (d) {
        *state = d->state;
        *engine = d->engine;
        if (task_state_finished(d->state)) {
            lb->dep_state[i] = d->state;
            lb->dep_engine[i] = d->engine;
        }
        return 1;
    }
    if (lb->dep_state[i] == TASK_NSTATES)
        return 0;
    *state = lb->dep_state[i];
    *engine = lb->dep_engine[i];
    return 1;
}

static dep_verdict deps_verdict(balancer *b, task *t, int *follow_engine, char *why, size_t why_len)
{
    task_balanced *lb = t->lb;
    *follow_engine = -1;
    int wait = 0;
    /* Every dependency is looked at, so an impossible one is reported even
     * behind one that has not finished. */
    for (size_t i = 0; i < lb->n_after + lb->n_follow; i++) {
        int is_follow = i >= lb->n_after;
        task_state st;
        int eng;
        if (!dep_lookup(b, t, i, &st, &eng)) {
            snprintf(why, why_len, "task %llu depends on unknown task %llu",
                     (unsigned long long)t->id, (unsigned long long)lb->deps[i]);
            return DEP_FAIL;
        }
        /* Only earlier tasks: this is what makes cycles impossible. */
        if (lb->deps[i] >= t->id) {
            snprintf(why, why_len, "task %llu cannot depend on itself or a later task (%llu)",
                     (unsigned long long)t->id, (unsigned long long)lb->deps[i]);
            return DEP_FAIL;
        }
        if (!task_state_finished(st)) {
            if (is_follow && st == TASK_RUNNING) {
                if (*follow_engine >= 0 && *follow_engine != eng)
                    goto two_engines;
                *follow_engine = eng;
            }
            wait = 1;
            continue;
        }
        if (st != TASK_COMPLETED && lb->success_only) {
            snprintf(why, why_len, "dependency %llu ended %s", (unsigned long long)lb->deps[i],
                     task_state_name(st));
            return DEP_FAIL;
        }
        if (is_follow) {
            if (!registry_live(b->engines, eng)) {
                snprintf(why, why_len, "follow: engine %d of task %llu is not alive", eng,
                         (unsigned long long)lb->deps[i]);
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
static void dependents_check(balancer *b)
{
    int changed;
    do {
        changed = 0;
        task *t = task_list_first(b->tasks, TASK_LIST_WAITING);
        while (t) {
            task *next = task_list_next(b->tasks, t);
            char why[200];
            int fe;
            dep_verdict v = deps_verdict(b, t, &fe, why, sizeof why);
            if (v == DEP_READY) {
                task_ready(b->tasks, t);
                changed = 1;
            } else if (v == DEP_FAIL) {
                int impossible = strstr(why, "ended") == NULL;
                fail(b, t, impossible ? "ImpossibleDependency" : "DependencyError", why);
                changed = 1; /* its own dependents may now fail */
            }
            t = next;
        }
    } while (changed);
}

/* ------------------------------------------------------------ scheduling */

static int allowed_on(const task *t, int engine_id)
{
    if (!t->lb->allowed)
        return 1;
    for (size_t i = 0; i < t->lb->n_allowed; i++)
        if (t->lb->allowed[i] == engine_id)
            return 1;
    return 0;
}

static void schedule(balancer *b)
{
    registry *r = b->engines;
    if (!task_list_first(b->tasks, TASK_LIST_PENDING))
        return;
    sched_engine *cands = malloc((r->n_engines ? r->n_engines : 1) * sizeof *cands);
    if (!cands)
        return;
    task *t = task_list_first(b->tasks, TASK_LIST_PENDING);
    while (t) {
        task *next = task_list_next(b->tasks, t);
        int fe = -1;
        char why[200];
        if (t->lb->n_follow && deps_verdict(b, t, &fe, why, sizeof why) == DEP_FAIL) {
            fail(b, t, "ImpossibleDependency", why);
            t = next;
            continue;
        }
        size_t n = 0, n_live_allowed = 0;
        for (size_t i = 0; i < r->n_engines; i++) {
            engine *e = &r->engines[i];
            if (!engine_is_live(e) || !allowed_on(t, e->id) || (fe >= 0 && e->id != fe))
                continue;
            n_live_allowed++;
            if (e->lb_load >= b->hwm)
                continue;
            cands[n++] = (sched_engine){.id = e->id, .load = e->lb_load, .last_used = e->last_used};
        }
        if (n_live_allowed == 0 && t->lb->allowed) {
            fail(b, t, "ImpossibleDependency", "no live engine among the task's targets");
        } else if (n > 0) {
            long k = sched_choose(b->sched, cands, n, &b->rng);
            task_start(b->tasks, t, &r->engines[cands[k].id]);
        } else if (!t->lb->allowed && fe < 0) {
            break; /* every engine is full: later tasks cannot go anywhere either */
        }
        t = next;
    }
    free(cands);
}

void tasks_settle(balancer *b)
{
    /* A task failed while scheduling (an impossible follow, a lost send) may
     * decide its dependents, which may then be scheduled in turn. */
    for (;;) {
        uint64_t finished = b->tasks->finished_total;
        dependents_check(b);
        schedule(b);
        if (b->tasks->finished_total == finished)
            break;
    }
}

int tasks_retry(balancer *b, task *t)
{
    if (t->kind != TASK_BALANCED || t->lb->retries <= 0 || t->lb->abort_requested)
        return 0;
    t->lb->retries--;
    t->lb->timed_out = 0;
    task_requeue(b->tasks, t);
    return 1;
}

static void send_interrupt(balancer *b, task *t)
{
    engine *e = registry_live(b->engines, t->engine);
    if (!e)
        return;
    json_t *msg = codec_interrupt(t->id);
    registry_send(b->engines, e, msg, NULL, 0);
    json_decref(msg);
}

void tasks_tick(balancer *b, int64_t now)
{
    const int lists[] = {TASK_LIST_WAITING, TASK_LIST_PENDING, TASK_LIST_RUNNING};
    for (int k = 0; k < 3; k++) {
        task *t = task_list_first(b->tasks, lists[k]);
        while (t) {
            task *next = task_list_next(b->tasks, t);
            waiters_tick(&t->waiters, now);
            task_balanced *lb = t->lb;
            if (lb && lb->deadline_ms && now >= lb->deadline_ms && !lb->timed_out) {
                lb->timed_out = 1;
                if (t->state == TASK_RUNNING) {
                    send_interrupt(b, t);
                } else {
                    char why[96];
                    snprintf(why, sizeof why, "task did not start within its timeout of %g s",
                             lb->timeout);
                    fail(b, t, "TimeoutError", why);
                }
            }
            t = next;
        }
    }
    tasks_settle(b);
}

int tasks_abort(balancer *b, task *t, int force, ippc_error *err)
{
    if (task_state_finished(t->state))
        return ippc_error_set(err, ERR_CONFLICT, "task %llu already %s", (unsigned long long)t->id,
                              task_state_name(t->state));
    if (t->state == TASK_RUNNING && !force)
        return ippc_error_set(err, ERR_CONFLICT,
                              "task %llu is running on engine %d; use ?force=true to interrupt it",
                              (unsigned long long)t->id, t->engine);
    if (t->state == TASK_RUNNING) {
        /* The engine's "aborted" result ends it; its death loses it (no retry). */
        if (t->lb)
            t->lb->abort_requested = 1;
        send_interrupt(b, t);
        return 0;
    }
    task_finish(
        b->tasks, t, TASK_ABORTED,
        task_result_new(codec_synth_result("aborted", "TaskAborted", "aborted by request"), NULL));
    return 0;
}

void tasks_forget_finished(balancer *b, const char *before)
{
    /* A dependency an unfinished task still needs stays (its outcome is in
     * the dependent's record too, but it may not have looked yet). */
    idmap needed;
    idmap_init(&needed);
    const int open_lists[] = {TASK_LIST_WAITING, TASK_LIST_PENDING};
    for (int k = 0; k < 2; k++)
        for (task *u = task_list_first(b->tasks, open_lists[k]); u; u = task_list_next(b->tasks, u))
            for (size_t i = 0; u->lb && i < u->lb->n_after + u->lb->n_follow; i++)
                idmap_put(&needed, u->lb->deps[i], u);
    task *t = task_list_first(b->tasks, TASK_LIST_FINISHED);
    while (t) {
        task *next = task_list_next(b->tasks, t);
        if (!t->waiters && !idmap_get(&needed, t->id) &&
            (!before || strcmp(t->completed, before) < 0))
            task_forget(b->tasks, t);
        t = next;
    }
    idmap_free(&needed);
}

json_t *tasks_queue_json(balancer *b)
{
    registry *r = b->engines;
    json_t *engines = json_object();
    for (size_t i = 0; i < r->n_engines; i++) {
        engine *e = &r->engines[i];
        if (e->state == ENGINE_ABSENT)
            continue;
        char key[16];
        snprintf(key, sizeof key, "%d", e->id);
        json_object_set_new(
            engines, key,
            json_pack("{s:I, s:I, s:I, s:s}", "queued", (json_int_t)(e->queued - e->lb_load),
                      "running", (json_int_t)e->lb_load, "completed", (json_int_t)e->tasks_done,
                      "state", engine_state_name(e->state)));
    }
    size_t waiting = b->tasks->lists[TASK_LIST_WAITING].count;
    size_t pending = b->tasks->lists[TASK_LIST_PENDING].count;
    return json_pack("{s:o, s:I, s:I}", "engines", engines, "unassigned",
                     (json_int_t)pending + (json_int_t)waiting, "waiting", (json_int_t)waiting);
}

/* ------------------------------------------------------------ building */

static int parse_ids(const json_t *v, const char *key, uint64_t **out, size_t *n, ippc_error *err)
{
    *out = NULL;
    *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        json_t *one = json_pack("[O]", v);
        if (!one) /* not "no dependencies": the task would run too early */
            return ippc_error_set(err, ERR_INTERNAL, "out of memory");
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
            *n = 0;
            (void)ippc_error_set(err, ERR_BAD_REQUEST, "\"%s\" must be a list of task ids", key);
            return -1;
        }
        (*out)[(*n)++] = (uint64_t)json_integer_value(item);
    }
    return 0;
}

/* "targets" as a list of engine ids (a spec string waits for the lock). */
static int parse_target_ids(const json_t *v, task_balanced *lb, ippc_error *err)
{
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 65536)
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "\"targets\" must be a target spec or a non-empty list of ids");
    lb->allowed = malloc(json_array_size(v) * sizeof *lb->allowed);
    if (!lb->allowed)
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_integer(item) || json_integer_value(item) < 0 ||
            json_integer_value(item) > INT32_MAX)
            return ippc_error_set(err, ERR_BAD_REQUEST, "\"targets\" holds engine ids");
        lb->allowed[lb->n_allowed++] = (int)json_integer_value(item);
    }
    return 0;
}

static const char *const SPEC_KEYS[] = {"function", "args",  "kwargs",      "code",
                                        "targets",  "after", "follow",      "retries",
                                        "timeout",  "tags",  "success_only"};

/* The engine message of a spec: apply for "function", execute for "code",
 * map for a map chunk. */
static codec_msg *spec_message(const json_t *spec, int map_mode, ippc_error *err)
{
    const char *fn = json_string_value(json_object_get(spec, "function"));
    const char *code = json_string_value(json_object_get(spec, "code"));
    if (!fn == !code) {
        ippc_error_set(err, ERR_BAD_REQUEST,
                       "a task has either \"function\" (with \"args\", \"kwargs\") or \"code\"");
        return NULL;
    }
    if (code)
        return codec_execute(code, err);
    if (map_mode)
        return codec_map(fn, json_object_get(spec, "args"), err);
    return codec_apply(fn, json_object_get(spec, "args"), json_object_get(spec, "kwargs"), err);
}

/* Validates and builds one task (not added).  A "targets" spec string is
 * left in *target_spec for the lock.  NULL + err. */
static task *build_one(const json_t *spec, int map_mode, json_t **target_spec, ippc_error *err)
{
    *target_spec = NULL;
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
    json_t *retries = json_object_get(spec, "retries"), *timeout = json_object_get(spec, "timeout");
    json_t *tags = json_object_get(spec, "tags"), *so = json_object_get(spec, "success_only");
    json_t *targets = json_object_get(spec, "targets");
    if (retries && (!json_is_integer(retries) || json_integer_value(retries) < 0 ||
                    json_integer_value(retries) > 100)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"retries\" must be an integer 0..100");
        return NULL;
    }
    if (timeout && !json_is_null(timeout) &&
        (!json_is_number(timeout) || !(json_number_value(timeout) > 0) ||
         json_number_value(timeout) > 86400.0 * 365)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"timeout\" must be a positive number of seconds");
        return NULL;
    }
    if (tags) {
        size_t i;
        json_t *tag;
        int ok = json_is_array(tags) && json_array_size(tags) <= 64;
        json_array_foreach(tags, i, tag)
            ok = ok && json_is_string(tag);
        if (!ok) {
            ippc_error_set(err, ERR_BAD_REQUEST, "\"tags\" must be a list of strings");
            return NULL;
        }
    }
    if (so && !json_is_boolean(so)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"success_only\" must be true or false");
        return NULL;
    }
    json_t *own = json_deep_copy(spec);
    if (own && map_mode) /* not a client key: clients cannot send "$map" */
        json_object_set_new(own, "$map", json_true());
    task *t = own ? task_new(TASK_BALANCED, own, NULL) : NULL;
    if (!t) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    task_balanced *lb = t->lb;
    uint64_t *after = NULL, *follow = NULL;
    size_t n_after = 0, n_follow = 0;
    if (parse_ids(json_object_get(spec, "after"), "after", &after, &n_after, err) < 0 ||
        parse_ids(json_object_get(spec, "follow"), "follow", &follow, &n_follow, err) < 0)
        goto fail;
    if (json_is_string(targets))
        *target_spec = json_incref(targets);
    else if (targets && !json_is_null(targets) && parse_target_ids(targets, lb, err) < 0)
        goto fail;
    if (!(t->msg = spec_message(spec, map_mode, err)))
        goto fail;
    size_t n_deps = n_after + n_follow;
    lb->deps = malloc((n_deps + 1) * sizeof *lb->deps);
    lb->dep_state = malloc((n_deps + 1) * sizeof *lb->dep_state);
    lb->dep_engine = malloc((n_deps + 1) * sizeof *lb->dep_engine);
    if (!lb->deps || !lb->dep_state || !lb->dep_engine) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if (n_after)
        memcpy(lb->deps, after, n_after * sizeof *after);
    if (n_follow)
        memcpy(lb->deps + n_after, follow, n_follow * sizeof *follow);
    for (size_t i = 0; i < n_deps; i++) {
        lb->dep_state[i] = TASK_NSTATES;
        lb->dep_engine[i] = -1;
    }
    lb->n_after = n_after;
    lb->n_follow = n_follow;
    lb->retries = retries ? (int)json_integer_value(retries) : 0;
    lb->timeout = timeout && json_is_number(timeout) ? json_number_value(timeout) : 0;
    lb->success_only = so ? json_is_true(so) : 1;
    free(after);
    free(follow);
    return t;
fail:
    free(after);
    free(follow);
    json_decref(*target_spec);
    *target_spec = NULL;
    task_discard(t);
    return NULL;
}

/* Dependencies that may have left memory already are read from the store
 * now, without the hub lock.  Only ids at or below the table's max_gone_id
 * can have: any later one is in memory (or never existed). */
static void deps_from_store(const balancer *b, tasks_batch *batch)
{
    if (!b->store)
        return;
    uint64_t max = __atomic_load_n(&b->tasks->max_gone_id, __ATOMIC_RELAXED);
    /* A record still queued is not readable yet: a miss is retried once
     * after the queue is committed. */
    for (int round = 0; round < 2; round++) {
        int missed = 0;
        for (size_t k = 0; k < batch->n; k++) {
            task_balanced *lb = batch->items[k]->lb;
            for (size_t i = 0; i < lb->n_after + lb->n_follow; i++) {
                char state[32];
                int engine = -1;
                ippc_error err = {0};
                if (lb->deps[i] > max || lb->dep_state[i] != TASK_NSTATES)
                    continue;
                if (store_get_state(b->store, lb->deps[i], state, sizeof state, &engine, &err) == 1)
                    for (task_state s = TASK_COMPLETED; s < TASK_NSTATES; s++)
                        if (strcmp(state, task_state_name(s)) == 0) {
                            lb->dep_state[i] = s;
                            lb->dep_engine[i] = engine;
                        }
                /* Not there, or an older snapshot (its final one still queued). */
                missed |= lb->dep_state[i] == TASK_NSTATES;
            }
        }
        if (!missed || round == 1 || store_flush(b->store) < 0)
            break;
    }
}

void tasks_batch_clear(tasks_batch *batch)
{
    for (size_t i = 0; i < batch->n; i++) {
        task_discard(batch->items ? batch->items[i] : NULL);
        json_decref(batch->target_specs ? batch->target_specs[i] : NULL);
    }
    free(batch->items);
    free(batch->target_specs);
    memset(batch, 0, sizeof *batch);
}

int tasks_build(const balancer *b, const json_t *spec, int map_mode, tasks_batch *out,
                ippc_error *err)
{
    memset(out, 0, sizeof *out);
    out->is_list = json_is_array(spec);
    size_t n = out->is_list ? json_array_size(spec) : 1;
    if (out->is_list && (n == 0 || n > MAX_BATCH))
        return ippc_error_set(err, ERR_BAD_REQUEST, "a batch holds 1..%d tasks", MAX_BATCH);
    out->items = calloc(n, sizeof *out->items);
    out->target_specs = calloc(n, sizeof *out->target_specs);
    if (!out->items || !out->target_specs) {
        tasks_batch_clear(out);
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *one = out->is_list ? json_array_get(spec, i) : spec;
        out->items[i] = build_one(one, map_mode, &out->target_specs[i], err);
        if (!out->items[i]) {
            if (out->is_list) {
                char msg[sizeof err->message];
                memcpy(msg, err->message, sizeof msg);
                snprintf(err->message, sizeof err->message, "task %zu: %.400s", i, msg);
            }
            tasks_batch_clear(out);
            return -1;
        }
    }
    deps_from_store(b, out);
    return 0;
}

int tasks_build_map(const balancer *b, const json_t *body, tasks_batch *out, tasks_map_shape *shape,
                    ippc_error *err)
{
    memset(out, 0, sizeof *out);
    const char *fn = json_string_value(json_object_get(body, "function"));
    json_t *seqs = json_object_get(body, "sequences");
    json_t *cs = json_object_get(body, "chunksize"), *ord = json_object_get(body, "ordered");
    if (!fn)
        return ippc_error_set(err, ERR_BAD_REQUEST, "\"function\" must name a function");
    if (codec_valid_name(fn, err) < 0)
        return -1;
    if (!json_is_array(seqs) || json_array_size(seqs) == 0)
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "\"sequences\" must be a non-empty list of lists");
    size_t n = SIZE_MAX, i;
    json_t *seq;
    json_array_foreach(seqs, i, seq) {
        if (!json_is_array(seq))
            return ippc_error_set(err, ERR_BAD_REQUEST, "\"sequences\" must be a list of lists");
        if (json_array_size(seq) < n)
            n = json_array_size(seq); /* like zip(): the shortest sequence wins */
    }
    if (n == 0 || n > MAX_BATCH)
        return ippc_error_set(err, ERR_BAD_REQUEST, "a map covers 1..%d items", MAX_BATCH);
    if ((cs && (!json_is_integer(cs) || json_integer_value(cs) < 1)) ||
        (ord && !json_is_boolean(ord)))
        return ippc_error_set(err, ERR_BAD_REQUEST, "\"chunksize\" >= 1, \"ordered\" true|false");
    size_t chunk = cs ? (size_t)json_integer_value(cs) : 1;
    size_t nchunks = sched_chunks(n, chunk);
    shape->ordered = ord ? json_is_true(ord) : 1;
    shape->items = n;
    shape->chunksize = chunk;
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
    int rc = tasks_build(b, specs, 1, out, err);
    json_decref(specs);
    return rc;
}

int tasks_enqueue(balancer *b, tasks_batch *batch, request *map, uint64_t *first_id,
                  ippc_error *err)
{
    /* Targets given as a spec string name the engines live now. */
    for (size_t i = 0; i < batch->n; i++) {
        if (!batch->target_specs[i])
            continue;
        int *live = NULL;
        size_t n_live = 0;
        task_balanced *lb = batch->items[i]->lb;
        int rc = registry_live_ids(b->engines, &live, &n_live) < 0
                     ? ippc_error_set(err, ERR_INTERNAL, "out of memory")
                     : targets_parse(json_string_value(batch->target_specs[i]), live, n_live,
                                     &lb->allowed, &lb->n_allowed, err);
        free(live);
        if (rc < 0) {
            if (batch->is_list) {
                char msg[sizeof err->message];
                memcpy(msg, err->message, sizeof msg);
                snprintf(err->message, sizeof err->message, "task %zu: %.400s", i, msg);
            }
            if (map)
                requests_attached(b->requests, map, 0);
            return -1;
        }
    }
    size_t added = 0;
    for (; added < batch->n; added++) {
        task *t = batch->items[added];
        if (task_add(b->tasks, t, TASK_WAITING, map ? map->id : 0, added, map != NULL) < 0)
            break;
        batch->items[added] = NULL;
        if (map)
            requests_attach(map, added, t);
        if (added == 0)
            *first_id = t->id;
    }
    if (added < batch->n) {
        /* Out of memory half-way: what was added ends at once. */
        task_list *waiting = &b->tasks->lists[TASK_LIST_WAITING];
        for (size_t k = 0; k < added; k++) {
            task *t = task_table_get(b->tasks, *first_id + k);
            if (t && t->list == TASK_LIST_WAITING && waiting->count)
                task_finish(
                    b->tasks, t, TASK_ABORTED,
                    task_result_new(codec_synth_result("aborted", "MemoryError", "out of memory"),
                                    NULL));
        }
        if (map)
            requests_attached(b->requests, map, added);
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    if (map)
        requests_attached(b->requests, map, added);
    return 0;
}
