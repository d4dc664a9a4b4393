/* fuzz_events.c — libFuzzer entry for the event stream (server/events.c):
 * the subscribe / unsubscribe / resume messages a stream client sends.
 *
 * Input: two control bytes, then JSON text.  Byte 0 sets the resume ring's
 * size (1..16, so it wraps and resume reports gaps); byte 1 the first
 * client's send-buffer limit (0..1020 bytes, so it is cut off as a slow
 * consumer), the second client never fills up.  The JSON is each message in
 * turn, between emits of a few fixed events that differ in topic, engine,
 * task and tags; "since" for resume is read from it as ws_client.c does, and
 * 0 and the current seq are tried too.  A new events object per input, freed
 * at the end.
 *
 * Besides sanitizer findings, it checks what events.h promises a client:
 * every text delivered is a JSON object with a "type"; seqs of live events
 * rise (a resume replays, so it starts a new run); a cut-off client gets
 * nothing more, and is cut once; a subscribe answer is {"type":"subscribed"}
 * with topics and filter, and a failed one fills the error.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"

/* A stream client as ws_client.c keeps it, reduced to what events sees: a
 * send queue with a byte limit (checked before queueing, as sink_send does)
 * and the cut-off notice. */
typedef struct fake_client {
    char buf[4096]; /* the first bytes queued, for the record */
    size_t queued;  /* bytes queued in all */
    size_t limit;
    int cuts;
    uint64_t last_seq;
} fake_client;

static int fake_send(void *conn, const char *text, size_t len)
{
    fake_client *fc = conn;
    if (fc->cuts)
        __builtin_trap(); /* events.c: a cut-off client "gets nothing" */
    if (fc->queued > fc->limit)
        return -1;
    json_t *msg = json_loadb(text, len, 0, NULL);
    if (!json_is_object(msg) || !json_is_string(json_object_get(msg, "type")))
        __builtin_trap();
    json_t *seq = json_object_get(msg, "seq");
    if (seq) {
        if (!json_is_integer(seq) || (uint64_t)json_integer_value(seq) <= fc->last_seq)
            __builtin_trap();
        fc->last_seq = (uint64_t)json_integer_value(seq);
    }
    json_decref(msg);
    if (fc->queued < sizeof fc->buf) {
        size_t room = sizeof fc->buf - fc->queued;
        memcpy(fc->buf + fc->queued, text, len < room ? len : room);
    }
    fc->queued += len;
    return 0;
}

static void fake_cut(void *conn, const char *notice_json)
{
    fake_client *fc = conn;
    json_t *notice = json_loads(notice_json, 0, NULL);
    if (!json_is_object(notice) || ++fc->cuts > 1)
        __builtin_trap();
    json_decref(notice);
}

/* The fixed events, one of each kind the hub emits, by topic. */
static void emit(events *ev, int which)
{
    json_t *tags = json_pack("[s,s]", "a", "b");
    event_meta metas[] = {
        {.topic = EVENT_TOPIC_ENGINES, .engine = 1, .task = 0, .tags = NULL},
        {.topic = EVENT_TOPIC_TASKS, .engine = 2, .task = 7, .tags = tags},
        {.topic = EVENT_TOPIC_STDOUT, .engine = 2, .task = 7, .tags = tags},
        {.topic = EVENT_TOPIC_TASKS, .engine = -1, .task = 8, .tags = NULL},
        {.topic = EVENT_TOPIC_ALWAYS, .engine = -1, .task = 0, .tags = NULL},
    };
    const char *types[] = {"engine.status", "task.completed", "task.stdout", "task.submitted",
                           "cluster.shutdown"};
    size_t k = (size_t)which % (sizeof metas / sizeof *metas);
    json_t *event = json_pack("{s:s, s:i, s:s}", "type", types[k], "engine", metas[k].engine,
                              "data", "some text that takes up room in a send buffer");
    events_emit(ev, event, &metas[k]);
    json_decref(tags);
}

static void subscribe(events *ev, events_client *c, const json_t *msg, int unsubscribe)
{
    ippc_error err = {0};
    json_t *answer = events_client_subscribe(ev, c, msg, unsubscribe, &err);
    if (answer) {
        const char *type = json_string_value(json_object_get(answer, "type"));
        if (!type || strcmp(type, "subscribed") != 0 ||
            !json_is_array(json_object_get(answer, "topics")) ||
            !json_is_object(json_object_get(answer, "filter")))
            __builtin_trap();
        json_decref(answer);
    } else if (!err.code[0]) {
        __builtin_trap();
    }
}

/* A resume replays older events: the seq order starts over after since (or
 * after the last seq, if since is beyond it: those seqs come live later). */
static void resume(events *ev, events_client *c, fake_client *fc, uint64_t since)
{
    uint64_t last = events_seq(ev);
    fc->last_seq = since < last ? since : last;
    events_client_resume(ev, c, since);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t ring_size = 1 + data[0] % 16;
    json_t *msg = json_loadb((const char *)data + 2, size - 2, JSON_DECODE_ANY, NULL);
    if (!msg)
        return 0;
    /* As ws_client.c: "since" must be a non-negative integer, else no resume. */
    json_t *since = json_object_get(msg, "since");
    int has_since = json_is_integer(since) && json_integer_value(since) >= 0;

    events *ev = events_new(ring_size);
    if (!ev) {
        json_decref(msg);
        return 0;
    }
    static fake_client slow, roomy;
    memset(&slow, 0, sizeof slow);
    memset(&roomy, 0, sizeof roomy);
    slow.limit = (size_t)data[1] * 4;
    roomy.limit = SIZE_MAX;
    events_sink slow_sink = {.conn = &slow, .send = fake_send, .cut = fake_cut};
    events_sink roomy_sink = {.conn = &roomy, .send = fake_send, .cut = fake_cut};

    emit(ev, 0);
    events_client *a = events_client_add(ev, &slow_sink);
    events_client *b = events_client_add(ev, &roomy_sink);
    if (!a || !b)
        __builtin_trap();
    emit(ev, 1);
    subscribe(ev, a, msg, 0);
    subscribe(ev, b, msg, 0);
    for (int i = 0; i < 6; i++)
        emit(ev, i);
    if (has_since) {
        resume(ev, a, &slow, (uint64_t)json_integer_value(since));
        resume(ev, b, &roomy, (uint64_t)json_integer_value(since));
    }
    resume(ev, b, &roomy, 0);
    subscribe(ev, a, msg, 1);
    subscribe(ev, b, msg, 1);
    for (int i = 0; i < 5; i++)
        emit(ev, i + 2);
    resume(ev, a, &slow, 0);
    resume(ev, b, &roomy, events_seq(ev));
    subscribe(ev, b, msg, 0);
    events_client_remove(ev, b);
    emit(ev, 4);
    if (events_clients(ev) != 1)
        __builtin_trap();

    events_free(ev);
    json_decref(msg);
    return 0;
}
