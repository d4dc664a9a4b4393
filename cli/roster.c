/* roster.c — parsing the engine list and checking the MPI world (see roster.h). */
#include "roster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long integer_field(const json_t *object, const char *key, long fallback)
{
    const json_t *value = json_object_get(object, key);

    return json_is_integer(value) ? (long)json_integer_value(value) : fallback;
}

static void string_field(const json_t *object, const char *key, char *out, size_t len)
{
    const json_t *value = json_object_get(object, key);

    if (json_is_string(value))
        snprintf(out, len, "%s", json_string_value(value));
    else if (json_is_integer(value)) /* a job id might come as a number */
        snprintf(out, len, "%lld", (long long)json_integer_value(value));
    else
        snprintf(out, len, "%s", "");
}

int roster_parse(const json_t *reply, roster *out, char *err, size_t err_len)
{
    const json_t *list = json_object_get(reply, "engines");
    const json_t *item;
    size_t index;

    out->engines = NULL;
    out->count = 0;
    if (!json_is_array(list)) {
        snprintf(err, err_len, "the controller's engine list has no \"engines\" array");
        return -1;
    }
    /* never a NULL array, even for no engines: the loop below indexes it */
    out->engines = calloc(json_array_size(list) + 1, sizeof *out->engines);
    if (out->engines == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    json_array_foreach(list, index, item) {
        roster_engine *engine = &out->engines[out->count];

        if (!json_is_object(item))
            continue;
        engine->id = integer_field(item, "id", -1);
        engine->rank = integer_field(item, "rank", -1);
        engine->size = integer_field(item, "size", -1);
        engine->pid = integer_field(item, "pid", 0);
        string_field(item, "job", engine->job, sizeof engine->job);
        string_field(item, "host", engine->host, sizeof engine->host);
        string_field(item, "state", engine->state, sizeof engine->state);
        string_field(item, "runtime", engine->runtime, sizeof engine->runtime);
        if (engine->runtime[0] == '\0')
            snprintf(engine->runtime, sizeof engine->runtime, "lua");
        out->count++;
    }
    return 0;
}

void roster_free(roster *r)
{
    free(r->engines);
    r->engines = NULL;
    r->count = 0;
}

int roster_select_job(const roster *r, const char *name, roster *out)
{
    size_t len = strlen(name);

    out->count = 0;
    out->engines = calloc(r->count + 1, sizeof *out->engines);
    if (out->engines == NULL)
        return -1;
    for (size_t i = 0; i < r->count; i++)
        if (strncmp(r->engines[i].job, name, len) == 0 && r->engines[i].job[len] == '.')
            out->engines[out->count++] = r->engines[i];
    return 0;
}

bool roster_engine_live(const roster_engine *engine)
{
    return strcmp(engine->state, "dead") != 0;
}

size_t roster_live_count(const roster *r)
{
    size_t live = 0;

    for (size_t i = 0; i < r->count; i++)
        live += roster_engine_live(&r->engines[i]);
    return live;
}

/* True when the live engines of job are exactly ranks 0..n-1 of a world of n. */
static bool job_is_world(const roster *r, const char *job, long n)
{
    bool *seen = calloc((size_t)n, sizeof *seen);
    long members = 0;
    bool ok = seen != NULL;

    for (size_t i = 0; ok && i < r->count; i++) {
        const roster_engine *engine = &r->engines[i];

        if (!roster_engine_live(engine) || strcmp(engine->job, job) != 0)
            continue;
        if (engine->size != n || engine->rank < 0 || engine->rank >= n || seen[engine->rank])
            ok = false;
        else
            seen[engine->rank] = true;
        members++;
    }
    free(seen);
    return ok && members == n;
}

/* Appends "job J: size S, ranks a,b,c" for each distinct job to describe. */
static void describe_worlds(const roster *r, char *out, size_t len)
{
    size_t used = 0;
    int written;

    out[0] = '\0';
    for (size_t i = 0; i < r->count; i++) {
        const roster_engine *engine = &r->engines[i];
        bool first_of_job = true;

        if (!roster_engine_live(engine))
            continue;
        for (size_t j = 0; j < i; j++)
            if (roster_engine_live(&r->engines[j]) && strcmp(r->engines[j].job, engine->job) == 0)
                first_of_job = false;
        if (!first_of_job)
            continue;
        written = snprintf(out + used, len - used, "%sjob %s: size %ld, ranks",
                           used > 0 ? "; " : "", engine->job, engine->size);
        if (written < 0 || (size_t)written >= len - used)
            return;
        used += (size_t)written;
        for (size_t j = i; j < r->count; j++) {
            const roster_engine *member = &r->engines[j];

            if (!roster_engine_live(member) || strcmp(member->job, engine->job) != 0)
                continue;
            written = snprintf(out + used, len - used, "%s%ld", j == i ? " " : ",", member->rank);
            if (written < 0 || (size_t)written >= len - used)
                return;
            used += (size_t)written;
        }
    }
}

roster_world roster_check_world(const roster *r, long n, char *describe, size_t len)
{
    bool all_singletons = true;

    describe[0] = '\0';
    for (size_t i = 0; i < r->count; i++) {
        const roster_engine *engine = &r->engines[i];

        if (!roster_engine_live(engine))
            continue;
        if (job_is_world(r, engine->job, n))
            return ROSTER_ONE_WORLD;
        if (engine->size != 1 || engine->rank != 0)
            all_singletons = false;
    }
    if (all_singletons && roster_live_count(r) > 0)
        return ROSTER_SINGLETONS;
    describe_worlds(r, describe, len);
    return ROSTER_SPLIT;
}
