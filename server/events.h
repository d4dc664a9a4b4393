/* events.h — the cluster's event stream: numbering, a bounded ring for
 * resume, and fan-out to subscribed WebSocket clients (docs/streams.md).
 *
 * The hub emits events with its lock held; events has its own lock, always
 * taken after the hub's (never the other way round).  Delivery only queues
 * text on a client's send queue and wakes the socket loop: a slow client is
 * cut off (slow_consumer) instead of slowing the emitter.
 *
 * Threads: events_emit from any thread (the hub's callers); client functions
 * from the lws service thread.
 */
#ifndef IPPC_EVENTS_H
#define IPPC_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "error.h"

typedef struct events events;
typedef struct events_client events_client;

enum {
    EVENT_TOPIC_ENGINES = 1,
    EVENT_TOPIC_TASKS = 2,
    EVENT_TOPIC_STDOUT = 4,
    EVENT_TOPIC_ALWAYS = 8, /* cluster.shutdown */
    EVENT_TOPICS_ALL = 7,
};

/* What filters look at, besides the topic. */
typedef struct event_meta {
    int topic;
    int engine;         /* -1 if none */
    uint64_t task;      /* 0 if none */
    const json_t *tags; /* list of strings or NULL */
} event_meta;

/* How events reach a client: queue text (return -1 when its buffer is over
 * the limit) and wake its loop; cut it off with a notice. */
typedef struct events_sink {
    void *conn;
    int (*send)(void *conn, const char *text, size_t len);
    void (*cut)(void *conn, const char *notice_json);
} events_sink;

events *events_new(size_t ring_size);
void events_free(events *ev);

/* Adds seq and time to event (taken) and delivers it. */
void events_emit(events *ev, json_t *event, const event_meta *meta);
/* The seq of the last event emitted. */
uint64_t events_seq(events *ev);

/* A new client subscribed to every topic; registered at once, so call it
 * under the hub lock together with the snapshot (then no event falls between
 * them).  NULL on allocation failure. */
events_client *events_client_add(events *ev, const events_sink *sink);
void events_client_remove(events *ev, events_client *c);
/* Applies a subscribe/unsubscribe message; returns the "subscribed" answer or
 * NULL + err. */
json_t *events_client_subscribe(events *ev, events_client *c, const json_t *msg, int unsubscribe,
                                ippc_error *err);
/* Replays to the client the matching events with seq > since (a "gap"
 * message first if the ring lost some). */
void events_client_resume(events *ev, events_client *c, uint64_t since);

/* Counters for /metrics. */
size_t events_clients(events *ev);
uint64_t events_dropped_clients(events *ev);

#endif
