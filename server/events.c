/* events.c — event numbering, the resume ring and fan-out (see events.h).
 *
 * Invariants (under ev->lock): ring holds the last min(emitted, ring_size)
 * events, oldest at ring_start; entry k has seq first_seq + k.  A client is
 * in the list from events_client_add until events_client_remove; a client
 * that was cut off stays listed (its socket closes soon) but gets nothing.
 */
#include "events.h"
#include "clock.h"
#include "jsonout.h"
#include "list.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FILTER_MAX 1024

typedef struct ring_entry {
    char *text;
    size_t len;
    int topic;
    int engine;
    uint64_t task;
    json_t *tags;
} ring_entry;

struct events_client {
    events_sink sink;
    int topics;
    int *engines;
    size_t n_engines;
    uint64_t *tasks;
    size_t n_tasks;
    json_t *tags; /* list of strings or NULL */
    int cut;
    list_node link; /* in events.clients */
};

struct events {
    pthread_mutex_t lock;
    ring_entry *ring;
    size_t ring_size, ring_count, ring_start;
    uint64_t seq;      /* last emitted */
    list_node clients; /* events_client.link, newest first */
    atomic_size_t n_clients;
    atomic_ullong dropped;
};

events *events_new(size_t ring_size)
{
    events *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL;
    ev->ring_size = ring_size ? ring_size : 10000;
    ev->ring = calloc(ev->ring_size, sizeof *ev->ring);
    if (!ev->ring) {
        free(ev);
        return NULL;
    }
    pthread_mutex_init(&ev->lock, NULL);
    list_init(&ev->clients);
    return ev;
}

static void client_filters_free(events_client *c)
{
    free(c->engines);
    free(c->tasks);
    json_decref(c->tags);
    c->engines = NULL;
    c->tasks = NULL;
    c->tags = NULL;
    c->n_engines = c->n_tasks = 0;
}

void events_free(events *ev)
{
    if (!ev)
        return;
    for (size_t i = 0; i < ev->ring_count; i++) {
        ring_entry *e = &ev->ring[(ev->ring_start + i) % ev->ring_size];
        free(e->text);
        json_decref(e->tags);
    }
    list_for_each_safe(it, &ev->clients) {
        events_client *c = list_entry(it, events_client, link);
        list_remove(it);
        client_filters_free(c);
        free(c);
    }
    free(ev->ring);
    pthread_mutex_destroy(&ev->lock);
    free(ev);
}

uint64_t events_seq(events *ev)
{
    pthread_mutex_lock(&ev->lock);
    uint64_t s = ev->seq;
    pthread_mutex_unlock(&ev->lock);
    return s;
}

size_t events_clients(events *ev)
{
    return ev ? atomic_load(&ev->n_clients) : 0;
}
uint64_t events_dropped_clients(events *ev)
{
    return ev ? atomic_load(&ev->dropped) : 0;
}

static int tags_meet(const json_t *a, const json_t *b)
{
    size_t i, j;
    json_t *x, *y;
    json_array_foreach(a, i, x) {
        json_array_foreach(b, j, y) {
            if (json_equal(x, y))
                return 1;
        }
    }
    return 0;
}

static int wants(const events_client *c, int topic, int engine, uint64_t task, const json_t *tags)
{
    if (c->cut)
        return 0;
    if (topic == EVENT_TOPIC_ALWAYS)
        return 1;
    if (!(c->topics & topic))
        return 0;
    if (c->n_engines) {
        int hit = 0;
        for (size_t i = 0; i < c->n_engines; i++)
            hit |= c->engines[i] == engine;
        if (!hit)
            return 0;
    }
    if (c->n_tasks) {
        int hit = 0;
        for (size_t i = 0; i < c->n_tasks; i++)
            hit |= c->tasks[i] == task;
        if (!hit)
            return 0;
    }
    if (c->tags && topic != EVENT_TOPIC_ENGINES && !(tags && tags_meet(c->tags, tags)))
        return 0;
    return 1;
}

static void cut_off(events *ev, events_client *c)
{
    c->cut = 1;
    atomic_fetch_add(&ev->dropped, 1);
    c->sink.cut(c->sink.conn,
                "{\"type\":\"slow_consumer\",\"message\":\"this client fell more than its send "
                "buffer behind the event stream and is disconnected; reconnect and resume\"}");
}

static void deliver(events *ev, events_client *c, const char *text, size_t len)
{
    if (c->sink.send(c->sink.conn, text, len) < 0)
        cut_off(ev, c);
}

void events_emit(events *ev, json_t *event, const event_meta *meta)
{
    if (!ev || !event) {
        json_decref(event);
        return;
    }
    char when[40];
    clock_iso8601(when, sizeof when);
    pthread_mutex_lock(&ev->lock);
    uint64_t seq = ++ev->seq;
    json_object_set_new(event, "seq", json_integer((json_int_t)seq));
    json_object_set_new(event, "time", json_string(when));
    char *text = jsonout_dumps(event, JSON_COMPACT);
    json_decref(event);
    if (!text) {
        pthread_mutex_unlock(&ev->lock);
        return;
    }
    size_t len = strlen(text);
    list_for_each(it, &ev->clients) {
        events_client *c = list_entry(it, events_client, link);
        if (wants(c, meta->topic, meta->engine, meta->task, meta->tags))
            deliver(ev, c, text, len);
    }
    /* Into the ring, evicting the oldest. */
    ring_entry *slot;
    if (ev->ring_count == ev->ring_size) {
        slot = &ev->ring[ev->ring_start];
        free(slot->text);
        json_decref(slot->tags);
        ev->ring_start = (ev->ring_start + 1) % ev->ring_size;
    } else {
        slot = &ev->ring[(ev->ring_start + ev->ring_count) % ev->ring_size];
        ev->ring_count++;
    }
    *slot = (ring_entry){.text = text,
                         .len = len,
                         .topic = meta->topic,
                         .engine = meta->engine,
                         .task = meta->task,
                         .tags = meta->tags ? json_deep_copy(meta->tags) : NULL};
    pthread_mutex_unlock(&ev->lock);
}

events_client *events_client_add(events *ev, const events_sink *sink)
{
    events_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->sink = *sink;
    c->topics = EVENT_TOPICS_ALL;
    pthread_mutex_lock(&ev->lock);
    list_push_front(&ev->clients, &c->link);
    atomic_fetch_add(&ev->n_clients, 1);
    pthread_mutex_unlock(&ev->lock);
    return c;
}

void events_client_remove(events *ev, events_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&ev->lock);
    list_remove(&c->link);
    atomic_fetch_sub(&ev->n_clients, 1);
    pthread_mutex_unlock(&ev->lock);
    client_filters_free(c);
    free(c);
}

static int parse_topics(const json_t *topics, int *mask, ippc_error *err)
{
    static const char *names[] = {"engines", "tasks", "stdout"};
    *mask = 0;
    if (!json_is_array(topics))
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "\"topics\" must be a list of engines, tasks, stdout");
    size_t i;
    json_t *t;
    json_array_foreach(topics, i, t) {
        int bit = 0;
        for (int k = 0; k < 3; k++)
            if (json_is_string(t) && strcmp(json_string_value(t), names[k]) == 0)
                bit = 1 << k;
        if (!bit)
            return ippc_error_set(err, ERR_BAD_REQUEST,
                                  "unknown topic: topics are engines, tasks, stdout");
        *mask |= bit;
    }
    return 0;
}

static json_t *topics_json(int mask)
{
    static const char *names[] = {"engines", "tasks", "stdout"};
    json_t *a = json_array();
    for (int k = 0; k < 3; k++)
        if (mask & (1 << k))
            json_array_append_new(a, json_string(names[k]));
    return a;
}

/* Reads an optional list of non-negative integers into *out. */
static int id_list(const json_t *v, const char *key, uint64_t **out, size_t *n, ippc_error *err)
{
    *out = NULL;
    *n = 0;
    if (!v)
        return 0;
    if (!json_is_array(v) || json_array_size(v) > FILTER_MAX)
        return ippc_error_set(err, ERR_BAD_REQUEST, "filter \"%s\" must be a list of ids", key);
    *out = malloc((json_array_size(v) + 1) * sizeof **out);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) < 0) {
            free(*out);
            *out = NULL;
            return ippc_error_set(err, ERR_BAD_REQUEST, "filter \"%s\" must be a list of ids", key);
        }
        (*out)[(*n)++] = (uint64_t)json_integer_value(x);
    }
    return 0;
}

json_t *events_client_subscribe(events *ev, events_client *c, const json_t *msg, int unsubscribe,
                                ippc_error *err)
{
    int mask;
    if (parse_topics(json_object_get(msg, "topics"), &mask, err) < 0)
        return NULL;
    const json_t *filter = json_object_get(msg, "filter");
    uint64_t *engines = NULL, *tasks = NULL;
    size_t n_engines = 0, n_tasks = 0;
    const json_t *tags = json_object_get(filter, "tags");
    if (filter && !json_is_object(filter)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"filter\" must be an object");
        return NULL;
    }
    if (tags) {
        size_t i;
        json_t *t;
        int ok = json_is_array(tags) && json_array_size(tags) <= FILTER_MAX;
        json_array_foreach(tags, i, t)
            ok = ok && json_is_string(t);
        if (!ok) {
            ippc_error_set(err, ERR_BAD_REQUEST, "filter \"tags\" must be a list of strings");
            return NULL;
        }
    }
    if (id_list(json_object_get(filter, "engines"), "engines", &engines, &n_engines, err) < 0 ||
        id_list(json_object_get(filter, "tasks"), "tasks", &tasks, &n_tasks, err) < 0) {
        free(engines);
        return NULL;
    }
    pthread_mutex_lock(&ev->lock);
    if (unsubscribe) {
        c->topics &= ~mask;
        free(engines);
        free(tasks);
    } else {
        client_filters_free(c);
        c->topics = mask;
        c->engines = malloc((n_engines + 1) * sizeof *c->engines);
        for (size_t i = 0; c->engines && i < n_engines; i++)
            c->engines[i] = (int)engines[i];
        c->n_engines = c->engines ? n_engines : 0;
        free(engines);
        c->tasks = tasks;
        c->n_tasks = n_tasks;
        c->tags = tags ? json_deep_copy(tags) : NULL;
    }
    json_t *answer =
        json_pack("{s:s, s:o}", "type", "subscribed", "topics", topics_json(c->topics));
    json_t *f = json_object();
    if (c->n_engines) {
        json_t *a = json_array();
        for (size_t i = 0; i < c->n_engines; i++)
            json_array_append_new(a, json_integer(c->engines[i]));
        json_object_set_new(f, "engines", a);
    }
    if (c->n_tasks) {
        json_t *a = json_array();
        for (size_t i = 0; i < c->n_tasks; i++)
            json_array_append_new(a, json_integer((json_int_t)c->tasks[i]));
        json_object_set_new(f, "tasks", a);
    }
    if (c->tags)
        json_object_set(f, "tags", c->tags);
    json_object_set_new(answer, "filter", f);
    pthread_mutex_unlock(&ev->lock);
    return answer;
}

void events_client_resume(events *ev, events_client *c, uint64_t since)
{
    pthread_mutex_lock(&ev->lock);
    if (c->cut) { /* cut off already: it gets nothing more */
        pthread_mutex_unlock(&ev->lock);
        return;
    }
    uint64_t first = ev->seq - ev->ring_count + 1; /* seq of the oldest kept */
    if (since + 1 < first) {
        char gap[128];
        int n = snprintf(gap, sizeof gap, "{\"type\":\"gap\",\"since\":%llu,\"oldest\":%llu}",
                         (unsigned long long)since, (unsigned long long)first);
        deliver(ev, c, gap, (size_t)n);
    }
    for (size_t i = 0; i < ev->ring_count; i++) {
        uint64_t seq = first + i;
        if (seq <= since)
            continue;
        ring_entry *e = &ev->ring[(ev->ring_start + i) % ev->ring_size];
        if (wants(c, e->topic, e->engine, e->task, e->tags))
            deliver(ev, c, e->text, e->len);
    }
    pthread_mutex_unlock(&ev->lock);
}
