/* registry.c — engines, jobs and their id blocks (see registry.h).
 *
 * Invariants (under the hub lock):
 *  - engines[id].id == id for every id < n_engines; slots of ranks that have
 *    not registered yet are ENGINE_ABSENT and are never listed.
 *  - An MPI job owns the id block [base, base + size): rank r is id base + r,
 *    so a view over ids lists ranks in order, whatever order ranks register in.
 *  - lb_load <= queued: balanced tasks are a part of what an engine holds.
 */
#include "registry.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "proto.h"
#include "secret.h"
#include "wsmsg.h"

void registry_init(registry *r)
{
    memset(r, 0, sizeof *r);
}

void registry_free(registry *r)
{
    free(r->engines);
    free(r->jobs);
    memset(r, 0, sizeof *r);
}

const char *engine_state_name(engine_state s)
{
    switch (s) {
    case ENGINE_IDLE: return "idle";
    case ENGINE_BUSY: return "busy";
    case ENGINE_DEAD: return "dead";
    default: return "absent";
    }
}

int engine_is_live(const engine *e)
{
    return e->state == ENGINE_IDLE || e->state == ENGINE_BUSY;
}

static const char *str_field(const json_t *msg, const char *key, size_t max)
{
    const char *s = json_string_value(json_object_get(msg, key));
    return s && strlen(s) <= max ? s : NULL;
}

static int int_field(const json_t *msg, const char *key, json_int_t lo, json_int_t hi,
                     json_int_t *out)
{
    json_t *v = json_object_get(msg, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -1;
    *out = json_integer_value(v);
    return 0;
}

static job *job_find(registry *r, const char *name)
{
    for (size_t i = 0; i < r->n_jobs; i++)
        if (strcmp(r->jobs[i].name, name) == 0)
            return &r->jobs[i];
    return NULL;
}

/* A new job with its whole id block reserved now, so ids follow ranks. */
static job *job_add(registry *r, const char *name, int size)
{
    if (r->n_jobs == r->cap_jobs) {
        size_t cap = r->cap_jobs ? r->cap_jobs * 2 : 8;
        job *jobs = realloc(r->jobs, cap * sizeof *jobs);
        if (!jobs)
            return NULL;
        r->jobs = jobs;
        r->cap_jobs = cap;
    }
    size_t need = r->n_engines + (size_t)size;
    if (need > r->cap_engines) {
        size_t cap = r->cap_engines ? r->cap_engines : 16;
        while (cap < need)
            cap *= 2;
        engine *engines = realloc(r->engines, cap * sizeof *engines);
        if (!engines)
            return NULL;
        r->engines = engines;
        r->cap_engines = cap;
    }
    memset(r->engines + r->n_engines, 0, (size_t)size * sizeof *r->engines);
    for (int k = 0; k < size; k++)
        r->engines[r->n_engines + (size_t)k].id = (int)r->n_engines + k;
    job *j = &r->jobs[r->n_jobs++];
    snprintf(j->name, sizeof j->name, "%s", name);
    j->runtime[0] = '\0'; /* its first rank's register says */
    j->size = size;
    j->base = (int)r->n_engines;
    r->n_engines = need;
    return j;
}

engine *registry_register(registry *r, const json_t *msg, const char *engine_key,
                          const hub_engine_link *link, int64_t now, ippc_error *err)
{
    const char *key = str_field(msg, "key", 256);
    if (!key || !secret_equal(key, engine_key)) {
        ippc_error_set(err, ERR_UNAUTHORIZED, "wrong or missing engine key");
        return NULL;
    }
    const char *job_name = str_field(msg, "job", 64);
    const char *host = str_field(msg, "host", 255);
    json_int_t rank, size, pid;
    if (!job_name || !*job_name || !host || int_field(msg, "size", 1, 1 << 20, &size) < 0 ||
        int_field(msg, "rank", 0, size - 1, &rank) < 0 ||
        int_field(msg, "pid", 0, INT32_MAX, &pid) < 0) {
        ippc_error_set(err, ERR_BAD_REQUEST,
                       "register needs job, host, pid, size >= 1 and 0 <= rank < size");
        return NULL;
    }
    const json_t *rt = json_object_get(msg, "runtime");
    const char *runtime = rt ? json_string_value(rt) : "lua"; /* engines before it: Lua */
    if (!runtime || (strcmp(runtime, "lua") != 0 && strcmp(runtime, "python") != 0)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "register: runtime must be \"lua\" or \"python\"");
        return NULL;
    }
    job *j = job_find(r, job_name);
    if (!j && !(j = job_add(r, job_name, (int)size))) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (j->size != size) {
        ippc_error_set(err, ERR_CONFLICT, "job %s was registered with size %d, not %d", job_name,
                       j->size, (int)size);
        return NULL;
    }
    if (!j->runtime[0])
        snprintf(j->runtime, sizeof j->runtime, "%s", runtime);
    if (strcmp(j->runtime, runtime) != 0) {
        ippc_error_set(err, ERR_CONFLICT, "job %s runs the %s runtime, rank %d says %s", job_name,
                       j->runtime, (int)rank, runtime);
        return NULL;
    }
    engine *e = &r->engines[j->base + rank];
    if (engine_is_live(e)) {
        ippc_error_set(err, ERR_CONFLICT, "rank %d of job %s is already registered as engine %d",
                       (int)rank, job_name, e->id);
        return NULL;
    }
    e->state = ENGINE_IDLE;
    e->rank = (int)rank;
    e->size = (int)size;
    snprintf(e->job, sizeof e->job, "%s", job_name);
    snprintf(e->host, sizeof e->host, "%s", host);
    e->pid = (long)pid;
    snprintf(e->runtime, sizeof e->runtime, "%s", runtime);
    clock_iso8601(e->registered, sizeof e->registered);
    e->last_heartbeat_ms = now;
    e->link = *link;
    e->queued = 0;
    e->lb_load = 0;
    /* An engine that does not say takes what the protocol allows. */
    json_t *max = json_object_get(msg, "max_message");
    e->max_message = json_is_integer(max) && json_integer_value(max) > 0 &&
                             (uint64_t)json_integer_value(max) < IPPC_MAX_WS_MESSAGE
                         ? (size_t)json_integer_value(max)
                         : IPPC_MAX_WS_MESSAGE;
    return e;
}

engine *registry_get(registry *r, int engine_id)
{
    if (engine_id < 0 || (size_t)engine_id >= r->n_engines)
        return NULL;
    engine *e = &r->engines[engine_id];
    return e->state == ENGINE_ABSENT ? NULL : e;
}

engine *registry_live(registry *r, int engine_id)
{
    engine *e = registry_get(r, engine_id);
    return e && engine_is_live(e) ? e : NULL;
}

int registry_live_ids(const registry *r, int **ids, size_t *n)
{
    *ids = malloc((r->n_engines ? r->n_engines : 1) * sizeof **ids);
    *n = 0;
    if (!*ids)
        return -1;
    for (size_t i = 0; i < r->n_engines; i++)
        if (engine_is_live(&r->engines[i]))
            (*ids)[(*n)++] = (int)i;
    return 0;
}

int registry_job_has_dead(const registry *r, const char *name)
{
    for (size_t i = 0; i < r->n_jobs; i++) {
        const job *j = &r->jobs[i];
        if (strcmp(j->name, name) != 0)
            continue;
        for (int k = 0; k < j->size; k++)
            if (r->engines[j->base + k].state == ENGINE_DEAD)
                return 1;
        return 0;
    }
    return 0;
}

void registry_heard(engine *e, int64_t now)
{
    e->last_heartbeat_ms = now;
}

void registry_heartbeat(engine *e, int busy)
{
    e->state = busy ? ENGINE_BUSY : ENGINE_IDLE;
}

int registry_mark_dead(engine *e)
{
    if (!engine_is_live(e))
        return 0;
    e->state = ENGINE_DEAD;
    e->link.conn = NULL;
    return 1;
}

int registry_send(registry *r, engine *e, json_t *msg, ws_blobref **blobs, size_t nblobs)
{
    if (!engine_is_live(e) || !e->link.send)
        return -1;
    for (size_t k = 0; k < nblobs; k++)
        r->bytes_to_engines += ws_blobref_len(blobs[k]);
    return e->link.send(e->link.conn, msg, blobs, nblobs);
}

void registry_count_received(registry *r, const ippc_blobs *blobs)
{
    for (size_t i = 0; i < blobs->count; i++)
        r->bytes_from_engines += blobs->items[i].len;
}

void registry_task_started(registry *r, engine *e, int balanced)
{
    e->queued++;
    if (balanced) {
        e->lb_load++;
        e->last_used = ++r->use_counter;
    }
    if (e->state == ENGINE_IDLE)
        e->state = ENGINE_BUSY;
}

void registry_task_ended(engine *e, int balanced, int done)
{
    if (e->queued)
        e->queued--;
    if (balanced && e->lb_load)
        e->lb_load--;
    if (done)
        e->tasks_done++;
    if (e->queued == 0 && e->state == ENGINE_BUSY)
        e->state = ENGINE_IDLE;
}

json_t *engine_json(const engine *e, int64_t now)
{
    double age = engine_is_live(e) ? (double)(now - e->last_heartbeat_ms) / 1000.0 : -1;
    return json_pack("{s:i, s:i, s:i, s:s, s:s, s:I, s:s, s:s, s:s, s:f, s:I, s:I}", "id", e->id,
                     "rank", e->rank, "size", e->size, "job", e->job, "host", e->host, "pid",
                     (json_int_t)e->pid, "runtime", e->runtime[0] ? e->runtime : "lua", "state",
                     engine_state_name(e->state), "registered", e->registered, "heartbeat_age", age,
                     "queue", (json_int_t)e->queued, "tasks_done", (json_int_t)e->tasks_done);
}

void registry_counts(const registry *r, size_t by_state[ENGINE_NSTATES], size_t *queued)
{
    memset(by_state, 0, ENGINE_NSTATES * sizeof *by_state);
    *queued = 0;
    for (size_t i = 0; i < r->n_engines; i++) {
        by_state[r->engines[i].state]++;
        *queued += r->engines[i].queued;
    }
}
