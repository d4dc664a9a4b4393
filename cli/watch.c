/* watch.c — `ippc watch`: the live event stream of a cluster, one line per
 * event (docs/streams.md).
 *
 * One thread, one libwebsockets client context, one connection at a time to
 * the ws_url of the profile's connection file, authenticated with the token as
 * an `Authorization: Bearer` header.  On every (re)connection it sends a
 * `subscribe` with the chosen topics and filter; once the snapshot says where
 * the controller's stream is, a `resume` from the last seq it printed (or
 * --since), so a dropped connection loses nothing the ring still holds.  A
 * new controller pid in the connection file, or a snapshot seq below the last
 * one printed, means a restarted controller whose seqs start again: then it
 * replays the new controller's ring from the start.
 *
 * Events are printed in arrival order, each seq at most once: live events
 * that follow the snapshot may arrive before the replay of older ones, and a
 * replay may repeat them, so the seqs printed are remembered in a window
 * larger than the controller's ring.
 *
 * Writes happen only in the WRITEABLE callback, one lws_write() each (the
 * libwebsockets rule); signals only set a flag and wake the loop with
 * lws_cancel_service().
 *
 * Exit: 0 on cluster.shutdown, SIGINT or SIGTERM; 1 when the first connection
 * fails or the controller refuses the token; 2 on bad usage.
 */
#include <getopt.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cli.h"
#include "jsonout.h"
#include "msg.h"
#include "profile.h"

#define WATCH_SUBPROTOCOL "ippc.client.v1"
/* Snapshots of big clusters are the largest messages; anything over this is
 * not something a terminal tool should buffer. */
#define WATCH_MAX_MESSAGE ((size_t)256 << 20)
#define WATCH_BACKOFF_FIRST_MS 200
#define WATCH_BACKOFF_MAX_MS 5000
#define WATCH_OUTBOX 4
/* Seqs remembered as printed, below the highest one (the ring holds 10,000). */
#define WATCH_SEEN_WINDOW 16384

static const char watch_usage_text[] =
    "usage: ippc watch [options]\n"
    "\n"
    "Print the live events of a running cluster, one line per event: engines\n"
    "registering, their status and death, tasks submitted/started/completed and\n"
    "their output as it is printed.  Reconnects (and resumes) when the controller\n"
    "restarts; Ctrl-C or the cluster's shutdown ends it.\n"
    "      --topics LIST   engines,tasks,stdout (default: all three)\n"
    "      --engines IDS   only events of these engines (and tasks on them): 0,1\n"
    "      --tags TAGS     only task events of tasks with one of these tags: a,b\n"
    "      --tasks IDS     only events of these task ids\n"
    "      --since SEQ     first replay the events after SEQ (from the controller's ring)\n"
    "      --json          print each message as the controller sent it (one JSON line)\n"
    "                      (otherwise: UTC time, event type, its main fields)\n"
    "      --profile P     cluster profile (default: default)\n"
    "      --ippc-dir DIR  where profiles live (default: $IPPC_DIR or ~/.ippc)\n"
    "      --file PATH     connection file to use instead of the profile's\n";

typedef struct watch_state {
    /* What to ask for. */
    json_t *topics; /* array of strings */
    json_t *filter; /* object, maybe empty */
    bool as_json;
    bool colour;
    /* Where: re-read from the connection file before every reconnection,
     * since a restarted controller may have a new port or token. */
    char file[PATH_MAX];
    connection_info info;
    char address[256];
    char path[600];
    int port;
    char auth_header[600];
    /* The connection. */
    struct lws_context *context;
    struct lws *wsi;
    bool ever_connected;
    bool reconnecting; /* an outage is in progress (reported once) */
    int backoff_ms;
    lws_sorted_usec_list_t reconnect_timer;
    char *outbox[WATCH_OUTBOX]; /* messages to send, in order */
    size_t outbox_count, outbox_next;
    ippc_buf rx; /* the message being reassembled */
    bool rx_binary;
    /* The stream. */
    long long last_seq;   /* highest seq printed or resumed from; -1: none yet */
    long long seen_floor; /* every seq up to this one counts as printed */
    unsigned char seen[WATCH_SEEN_WINDOW / 8]; /* seq % window, for seqs in
                                                  (last_seq - window, last_seq] */
    bool had_snapshot;
    pid_t stream_pid; /* the controller whose events were printed (0: unknown) */
    bool done;
    int exit_status;
} watch_state;

static volatile sig_atomic_t watch_stop;
static struct lws_context *watch_signal_context;

static void watch_on_signal(int signum)
{
    (void)signum;
    watch_stop = 1;
    if (watch_signal_context != NULL)
        lws_cancel_service(watch_signal_context);
}

/* ------------------------------------------------------------ options */

/* Splits "a,b,c" into a JSON array of strings, or of non-negative integers
 * when numbers is set.  Returns NULL on an empty item or a bad number. */
static json_t *split_list(const char *text, bool numbers)
{
    json_t *list = json_array();
    const char *item = text;

    while (list != NULL) {
        size_t len = strcspn(item, ",");
        char buf[256];
        char *end;
        long long number;

        if (len == 0 || len >= sizeof buf)
            goto bad;
        memcpy(buf, item, len);
        buf[len] = '\0';
        if (numbers) {
            number = strtoll(buf, &end, 10);
            if (*end != '\0' || number < 0)
                goto bad;
            json_array_append_new(list, json_integer(number));
        } else {
            json_array_append_new(list, json_string(buf));
        }
        if (item[len] == '\0')
            return list;
        item += len + 1;
    }
    return NULL;
bad:
    json_decref(list);
    return NULL;
}

static bool topics_valid(const json_t *topics)
{
    size_t i;
    json_t *topic;

    json_array_foreach(topics, i, topic) {
        const char *name = json_string_value(topic);

        if (strcmp(name, "engines") != 0 && strcmp(name, "tasks") != 0 &&
            strcmp(name, "stdout") != 0)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------ printing */

enum { COLOUR_NONE, COLOUR_RED, COLOUR_GREEN, COLOUR_YELLOW, COLOUR_BLUE, COLOUR_CYAN, COLOUR_DIM };

static const char *const colour_codes[] = {"",         "\033[31m", "\033[32m", "\033[33m",
                                           "\033[34m", "\033[36m", "\033[2m"};

static long long int_field(const json_t *object, const char *key)
{
    return json_integer_value(json_object_get(object, key));
}

static const char *str_field(const json_t *object, const char *key)
{
    const char *value = json_string_value(json_object_get(object, key));

    return value != NULL ? value : "?";
}

/* A JSON value as compact text, cut to limit characters (malloc'd). */
static char *compact(const json_t *value, size_t limit)
{
    char *text = jsonout_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);

    if (text != NULL && strlen(text) > limit)
        strcpy(text + limit - 3, "...");
    return text;
}

/* "engine 2" or "engine -" for a null/absent id. */
static void engine_ref(char *out, size_t len, const json_t *id)
{
    if (json_is_integer(id))
        snprintf(out, len, "engine %lld", (long long)json_integer_value(id));
    else
        snprintf(out, len, "engine -");
}

/* The key fields of an event after its time and type; sets *colour. */
static void describe_event(const char *type, const json_t *event, char *out, size_t len,
                           int *colour)
{
    char engine[48];
    char *text = NULL;

    engine_ref(engine, sizeof engine, json_object_get(event, "engine"));
    *colour = COLOUR_NONE;
    if (strcmp(type, "engine.registered") == 0) {
        const json_t *e = json_object_get(event, "engine");

        *colour = COLOUR_GREEN;
        snprintf(out, len, "engine %lld  rank %lld/%lld  host %s  pid %lld", int_field(e, "id"),
                 int_field(e, "rank"), int_field(e, "size"), str_field(e, "host"),
                 int_field(e, "pid"));
    } else if (strcmp(type, "engine.status") == 0) {
        *colour = COLOUR_DIM;
        snprintf(out, len, "%s  %s  queue %lld  done %lld  heartbeat %.1fs  rss %.1f MiB", engine,
                 str_field(event, "state"), int_field(event, "queue"),
                 int_field(event, "tasks_done"),
                 json_number_value(json_object_get(event, "heartbeat_age")),
                 json_number_value(json_object_get(event, "rss")) / (1024.0 * 1024.0));
    } else if (strcmp(type, "engine.dead") == 0) {
        *colour = COLOUR_RED;
        snprintf(out, len, "%s  %s", engine, str_field(event, "reason"));
    } else if (strcmp(type, "task.submitted") == 0) {
        text = compact(json_object_get(event, "tags"), 200);
        *colour = COLOUR_BLUE;
        snprintf(out, len, "task %lld  %s  %s  tags %s", int_field(event, "task"),
                 str_field(event, "kind"), engine, text != NULL ? text : "[]");
    } else if (strcmp(type, "task.started") == 0) {
        *colour = COLOUR_CYAN;
        snprintf(out, len, "task %lld  %s", int_field(event, "task"), engine);
    } else if (strcmp(type, "task.stdout") == 0) {
        /* JSON quoting keeps a chunk of several lines on one line. */
        text = compact(json_object_get(event, "data"), 2000);
        snprintf(out, len, "task %lld  %s  %s", int_field(event, "task"), engine,
                 text != NULL ? text : "");
    } else if (strcmp(type, "task.completed") == 0) {
        const char *state = str_field(event, "state");
        const json_t *error = json_object_get(event, "error");

        *colour = strcmp(state, "completed") == 0 ? COLOUR_GREEN
                  : strcmp(state, "aborted") == 0 ? COLOUR_YELLOW
                                                  : COLOUR_RED;
        if (json_is_object(error))
            snprintf(out, len, "task %lld  %s  %s  %s: %s", int_field(event, "task"), engine, state,
                     str_field(error, "ename"), str_field(error, "evalue"));
        else if (json_is_true(json_object_get(event, "result_omitted")))
            snprintf(out, len, "task %lld  %s  %s  (result over 64 KiB omitted)",
                     int_field(event, "task"), engine, state);
        else {
            text = compact(json_object_get(event, "result"), 200);
            snprintf(out, len, "task %lld  %s  %s  %s", int_field(event, "task"), engine, state,
                     text != NULL ? text : "null");
        }
    } else if (strcmp(type, "cluster.shutdown") == 0) {
        *colour = COLOUR_YELLOW;
        snprintf(out, len, "%s", str_field(event, "reason"));
    } else {
        text = compact(event, 300);
        snprintf(out, len, "%s", text != NULL ? text : "");
    }
    free(text);
}

/* "00:30:00.123" from the event's ISO time (UTC), else the local clock. */
static void event_clock(const json_t *event, char *out, size_t len)
{
    const char *iso = json_string_value(json_object_get(event, "time"));
    const char *t = iso != NULL ? strchr(iso, 'T') : NULL;
    struct timespec now;
    struct tm local;

    if (t != NULL && strlen(t + 1) >= 12) {
        snprintf(out, len, "%.12s", t + 1);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    localtime_r(&now.tv_sec, &local);
    strftime(out, len, "%H:%M:%S", &local);
    snprintf(out + strlen(out), len - strlen(out), ".%03ld", now.tv_nsec / 1000000);
}

static void print_line(watch_state *w, const json_t *event, const char *type, int colour,
                       const char *details)
{
    char clock[32];

    event_clock(event, clock, sizeof clock);
    if (w->colour && colour != COLOUR_NONE)
        printf("%s %s%-17s %s\033[0m\n", clock, colour_codes[colour], type, details);
    else
        printf("%s %-17s %s\n", clock, type, details);
}

static void print_snapshot(watch_state *w, const json_t *snapshot)
{
    size_t i;
    json_t *engine;
    size_t live = 0;
    char details[256];

    json_array_foreach(json_object_get(snapshot, "engines"), i, engine)
        live += strcmp(str_field(engine, "state"), "dead") != 0;
    snprintf(details, sizeof details, "%zu engines (%zu live), %zu tasks in flight, seq %lld",
             json_array_size(json_object_get(snapshot, "engines")), live,
             json_array_size(json_object_get(snapshot, "tasks")), int_field(snapshot, "seq"));
    print_line(w, snapshot, "snapshot", COLOUR_DIM, details);
}

/* ------------------------------------------------------------ messages */

static void outbox_clear(watch_state *w)
{
    for (size_t i = w->outbox_next; i < w->outbox_count; i++)
        free(w->outbox[i]);
    w->outbox_count = w->outbox_next = 0;
}

static void outbox_add(watch_state *w, json_t *message)
{
    char *text = jsonout_dumps(message, JSON_COMPACT);

    json_decref(message);
    if (text == NULL || w->outbox_count == WATCH_OUTBOX) {
        free(text);
        return;
    }
    w->outbox[w->outbox_count++] = text;
}

/* ------------------------------------------------------------ seqs */

static bool seq_seen(const watch_state *w, long long seq)
{
    if (seq <= w->seen_floor || seq <= w->last_seq - WATCH_SEEN_WINDOW)
        return true;
    if (seq > w->last_seq)
        return false;
    return (w->seen[(seq % WATCH_SEEN_WINDOW) / 8] >> (seq % 8)) & 1;
}

static void seq_mark(watch_state *w, long long seq)
{
    /* Bits of seqs that the window slides over are reused: clear them. */
    for (long long s = w->last_seq + 1; s < seq && s <= w->last_seq + WATCH_SEEN_WINDOW; s++)
        w->seen[(s % WATCH_SEEN_WINDOW) / 8] &= (unsigned char)~(1u << (s % 8));
    if (seq > w->last_seq)
        w->last_seq = seq;
    w->seen[(seq % WATCH_SEEN_WINDOW) / 8] |= (unsigned char)(1u << (seq % 8));
}

/* Everything up to seq counts as printed (a snapshot, --since, a new start). */
static void seq_reset(watch_state *w, long long seq)
{
    memset(w->seen, 0, sizeof w->seen);
    w->seen_floor = seq;
    w->last_seq = seq;
}

/* What every new connection says first: the subscription. */
static void queue_subscribe(watch_state *w)
{
    outbox_clear(w);
    outbox_add(w, json_pack("{s:s, s:O, s:O}", "op", "subscribe", "topics", w->topics, "filter",
                            w->filter));
}

/* After the snapshot: ask for what was missed, if anything. */
static void on_snapshot(watch_state *w, struct lws *wsi, long long snapshot_seq)
{
    bool first = !w->had_snapshot;
    /* A new controller numbers its events from 1 again: its pid (from the
     * connection file, re-read before connecting) or a seq that went back says
     * so; then everything its ring holds is news. */
    bool new_controller =
        !first && (snapshot_seq < w->last_seq ||
                   (w->info.pid != 0 && w->stream_pid != 0 && w->info.pid != w->stream_pid));

    w->had_snapshot = true;
    w->stream_pid = w->info.pid;
    if (w->last_seq < 0) { /* a first connection without --since */
        seq_reset(w, snapshot_seq);
        return;
    }
    if (new_controller) {
        msg_err("the controller was restarted (its event seqs start again); replaying what "
                "its ring holds");
        seq_reset(w, 0);
    }
    if (snapshot_seq > w->last_seq || first) {
        outbox_add(w, json_pack("{s:s, s:I}", "op", "resume", "since", (json_int_t)w->last_seq));
        lws_callback_on_writable(wsi);
    }
}

static void handle_message(watch_state *w, struct lws *wsi, const char *text, size_t len)
{
    json_error_t error;
    json_t *message = json_loadb(text, len, 0, &error);
    const char *type = json_string_value(json_object_get(message, "type"));
    const json_t *seq = json_object_get(message, "seq");
    char details[2400];
    int colour;

    if (type == NULL) {
        msg_err("unexpected message from the controller: %.200s", text);
        json_decref(message);
        return;
    }
    if (strcmp(type, "snapshot") == 0) {
        on_snapshot(w, wsi, json_integer_value(seq));
    } else if (json_is_integer(seq)) {
        if (seq_seen(w, json_integer_value(seq)))
            goto done;
        seq_mark(w, json_integer_value(seq));
    }

    if (w->as_json) {
        (void)fwrite(text, 1, len, stdout); /* as fputc below: no stdout, no one to tell */
        fputc('\n', stdout);
    } else if (strcmp(type, "snapshot") == 0) {
        print_snapshot(w, message);
    } else if (strcmp(type, "gap") == 0) {
        snprintf(details, sizeof details, "events %lld..%lld are gone; replay starts at %lld",
                 int_field(message, "since") + 1, int_field(message, "oldest") - 1,
                 int_field(message, "oldest"));
        print_line(w, message, "gap", COLOUR_YELLOW, details);
    } else if (strcmp(type, "error") == 0) {
        msg_err("the controller says: %s", str_field(json_object_get(message, "error"), "message"));
    } else if (strcmp(type, "slow_consumer") == 0) {
        msg_err("the controller dropped this client as too slow (%s); resuming",
                str_field(message, "message"));
    } else if (strcmp(type, "subscribed") != 0 && strcmp(type, "pong") != 0 &&
               strcmp(type, "reply") != 0) {
        describe_event(type, message, details, sizeof details, &colour);
        print_line(w, message, type, colour, details);
    }
    fflush(stdout);
    if (strcmp(type, "cluster.shutdown") == 0) {
        w->done = true;
        w->exit_status = CLI_EXIT_OK;
    }
done:
    json_decref(message);
}

/* Appends a RECEIVE callback's bytes; handles the message once whole. */
static int receive(watch_state *w, struct lws *wsi, const void *in, size_t len)
{
    if (w->rx.len == 0)
        w->rx_binary = lws_frame_is_binary(wsi);
    if (len > WATCH_MAX_MESSAGE - w->rx.len) {
        msg_err("a message from the controller is over %zu MiB; dropping the connection",
                WATCH_MAX_MESSAGE >> 20);
        return -1;
    }
    if (buf_append(&w->rx, in, len) < 0)
        return -1;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) != 0)
        return 0;
    /* The stream is JSON text; a binary message is not for a watcher. */
    if (!w->rx_binary)
        handle_message(w, wsi, w->rx.data, w->rx.len);
    buf_reset(&w->rx);
    return w->done ? -1 : 0;
}

/* ------------------------------------------------------------ connection */

/* Reads the connection file and splits its ws_url; -1 with a message. */
static int load_target(watch_state *w, bool quiet)
{
    char err[PATH_MAX + 256];
    char url[sizeof w->info.ws_url];
    const char *scheme, *address, *path;
    int rc = connection_read(w->file, &w->info, err, sizeof err);

    if (rc < 0) {
        if (!quiet)
            msg_err("%s", rc == -1 ? "the connection file is gone" : err);
        return -1;
    }
    if (w->info.ws_url[0] != '\0')
        snprintf(url, sizeof url, "%s", w->info.ws_url);
    else /* Older connection files: the WebSocket shares the REST port. */
        snprintf(url, sizeof url, "ws%s/ws",
                 strncmp(w->info.url, "http", 4) == 0 ? w->info.url + 4 : w->info.url);
    if (lws_parse_uri(url, &scheme, &address, &w->port, &path) != 0 || strcmp(scheme, "ws") != 0) {
        msg_err("cannot use the controller's WebSocket URL '%s' (want ws://HOST:PORT/ws)",
                w->info.ws_url);
        return -1;
    }
    snprintf(w->address, sizeof w->address, "%s", address);
    snprintf(w->path, sizeof w->path, "/%s", path);
    snprintf(w->auth_header, sizeof w->auth_header, "Bearer %s", w->info.token);
    return 0;
}

static void connect_now(lws_sorted_usec_list_t *timer);

static void schedule_reconnect(watch_state *w)
{
    w->wsi = NULL;
    buf_reset(&w->rx);
    outbox_clear(w);
    if (w->done || watch_stop)
        return;
    w->backoff_ms = w->backoff_ms != 0 ? w->backoff_ms * 2 : WATCH_BACKOFF_FIRST_MS;
    if (w->backoff_ms > WATCH_BACKOFF_MAX_MS)
        w->backoff_ms = WATCH_BACKOFF_MAX_MS;
    lws_sul_schedule(w->context, 0, &w->reconnect_timer, connect_now,
                     (lws_usec_t)w->backoff_ms * LWS_US_PER_MS);
}

static void on_connection_error(watch_state *w, const char *why);

static void connect_now(lws_sorted_usec_list_t *timer)
{
    watch_state *w = lws_container_of(timer, watch_state, reconnect_timer);
    struct lws_client_connect_info ci;

    if (w->done || watch_stop)
        return;
    if (load_target(w, w->ever_connected) < 0) {
        if (!w->ever_connected) {
            w->done = true;
            w->exit_status = CLI_EXIT_FAIL;
            return;
        }
        schedule_reconnect(w); /* the controller is restarting: no file yet */
        return;
    }
    memset(&ci, 0, sizeof ci);
    ci.context = w->context;
    ci.address = w->address;
    ci.port = w->port;
    ci.path = w->path;
    ci.host = w->address;
    ci.origin = w->address;
    ci.protocol = WATCH_SUBPROTOCOL;
    ci.local_protocol_name = WATCH_SUBPROTOCOL;
    ci.pwsi = &w->wsi;
    /* A failure may already have gone through CONNECTION_ERROR. */
    if (lws_client_connect_via_info(&ci) == NULL && !w->done)
        on_connection_error(w, "cannot start the connection");
}

static void on_connection_error(watch_state *w, const char *why)
{
    /* lws 4.1 says "HS: ws upgrade unauthorized" for a 401/403 answer and
     * "HS: ws upgrade response not 101" for any other refusal. */
    bool unauthorized = why != NULL && strstr(why, "unauthorized") != NULL;
    bool refused = why != NULL && strstr(why, "not 101") != NULL;

    if (unauthorized)
        msg_err("the controller at %s refused the token (HTTP 401): is %s current?", w->info.ws_url,
                w->file);
    else if (!w->ever_connected && refused)
        msg_err("the controller at %s refused the WebSocket upgrade: is it an ippc controller "
                "with /ws?",
                w->info.ws_url);
    else if (!w->ever_connected)
        msg_err("cannot connect to the controller at %s: %s", w->info.ws_url,
                why != NULL ? why : "connection error");
    if (unauthorized || !w->ever_connected) {
        w->done = true;
        w->exit_status = CLI_EXIT_FAIL;
        return;
    }
    schedule_reconnect(w);
}

static int watch_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                          size_t len)
{
    watch_state *w = lws_context_user(lws_get_context(wsi));
    int more;

    (void)user;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        unsigned char **p = in;
        unsigned char *end = *p + len;

        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                         (unsigned char *)w->auth_header,
                                         (int)strlen(w->auth_header), p, end) != 0)
            return -1;
        break;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (w->reconnecting)
            msg_err("reconnected to %s%s", w->info.ws_url, w->last_seq >= 0 ? "; resuming" : "");
        w->ever_connected = true;
        w->reconnecting = false;
        w->backoff_ms = 0;
        buf_reset(&w->rx);
        queue_subscribe(w);
        lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE: return receive(w, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (w->outbox_next < w->outbox_count) {
            char *text = w->outbox[w->outbox_next++];
            size_t n = strlen(text);
            unsigned char *buf = malloc(LWS_PRE + n);
            int written = -1;

            if (buf != NULL) {
                memcpy(buf + LWS_PRE, text, n);
                written = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT);
                free(buf);
            }
            free(text);
            if (written < (int)n)
                return -1;
        }
        more = w->outbox_next < w->outbox_count;
        if (!more)
            w->outbox_count = w->outbox_next = 0;
        else
            lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        on_connection_error(w, in != NULL ? (const char *)in : NULL);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (!w->done && !watch_stop && !w->reconnecting) {
            msg_err("the connection to the controller closed; reconnecting");
            w->reconnecting = true;
        }
        schedule_reconnect(w);
        break;
    default: break;
    }
    return 0;
}

static const struct lws_protocols watch_protocols[] = {
    {WATCH_SUBPROTOCOL, watch_callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Runs the stream until shutdown, a signal or a failure; the exit status. */
static int watch_run(watch_state *w)
{
    struct lws_context_creation_info info;
    struct sigaction action;

    lws_set_log_level(getenv("IPPC_WATCH_DEBUG") != NULL ? LLL_ERR | LLL_WARN | LLL_NOTICE : 0,
                      NULL);
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = watch_protocols;
    info.user = w;
    info.connect_timeout_secs = 10;
    w->context = lws_create_context(&info);
    if (w->context == NULL) {
        msg_err("cannot create a libwebsockets context");
        return CLI_EXIT_FAIL;
    }
    /* No SA_RESTART: the signal must interrupt lws_service's poll(). */
    memset(&action, 0, sizeof action);
    action.sa_handler = watch_on_signal;
    sigemptyset(&action.sa_mask);
    watch_signal_context = w->context;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);

    w->exit_status = CLI_EXIT_OK;
    lws_sul_schedule(w->context, 0, &w->reconnect_timer, connect_now, 1);
    while (!w->done && !watch_stop)
        if (lws_service(w->context, 0) < 0)
            break;
    lws_sul_cancel(&w->reconnect_timer);
    watch_signal_context = NULL;
    lws_context_destroy(w->context);
    fflush(stdout);
    return w->exit_status;
}

int watch_main(int argc, char **argv)
{
    enum {
        OPT_PROFILE = 256,
        OPT_IPPC_DIR,
        OPT_FILE,
        OPT_TOPICS,
        OPT_ENGINES,
        OPT_TAGS,
        OPT_TASKS,
        OPT_SINCE,
        OPT_JSON,
        OPT_HELP
    };
    static const struct option options[] = {
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"ippc-dir", required_argument, NULL, OPT_IPPC_DIR},
        {"file", required_argument, NULL, OPT_FILE},
        {"topics", required_argument, NULL, OPT_TOPICS},
        {"engines", required_argument, NULL, OPT_ENGINES},
        {"tags", required_argument, NULL, OPT_TAGS},
        {"tasks", required_argument, NULL, OPT_TASKS},
        {"since", required_argument, NULL, OPT_SINCE},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    static watch_state w; /* static: lws keeps pointers into it until destroy */
    const char *profile = NULL;
    const char *ippc_dir = NULL;
    const char *file = NULL;
    profile_paths paths;
    char err[PATH_MAX + 256];
    json_t *list;
    char *end;
    long long since;
    int status;
    int option;

    memset(&w, 0, sizeof w);
    w.last_seq = -1;
    w.filter = json_object();
    optind = 0;
    opterr = 0;
    while ((option = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        switch (option) {
        case OPT_PROFILE: profile = optarg; break;
        case OPT_IPPC_DIR: ippc_dir = optarg; break;
        case OPT_FILE: file = optarg; break;
        case OPT_JSON: w.as_json = true; break;
        case OPT_TOPICS:
            json_decref(w.topics);
            w.topics = split_list(optarg, false);
            if (w.topics == NULL || !topics_valid(w.topics))
                return cli_usage_error("watch", watch_usage_text,
                                       "bad --topics '%s' (engines,tasks,stdout)", optarg);
            break;
        case OPT_ENGINES:
        case OPT_TASKS:
            list = split_list(optarg, true);
            if (list == NULL)
                return cli_usage_error("watch", watch_usage_text, "bad id list '%s' (like 0,1,2)",
                                       optarg);
            json_object_set_new(w.filter, option == OPT_ENGINES ? "engines" : "tasks", list);
            break;
        case OPT_TAGS:
            list = split_list(optarg, false);
            if (list == NULL)
                return cli_usage_error("watch", watch_usage_text, "bad --tags '%s' (like a,b)",
                                       optarg);
            json_object_set_new(w.filter, "tags", list);
            break;
        case OPT_SINCE:
            since = strtoll(optarg, &end, 10);
            if (optarg[0] == '\0' || *end != '\0' || since < 0)
                return cli_usage_error("watch", watch_usage_text,
                                       "bad --since '%s' (a seq number, 0 or more)", optarg);
            seq_reset(&w, since);
            break;
        case 'h':
        case OPT_HELP: fputs(watch_usage_text, stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("watch", watch_usage_text, option, argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("watch", watch_usage_text, "unexpected argument '%s'", argv[optind]);
    if (w.topics == NULL)
        w.topics = json_pack("[s,s,s]", "engines", "tasks", "stdout");
    w.colour = isatty(STDOUT_FILENO) && getenv("NO_COLOR") == NULL;

    if (file == NULL) {
        if (profile_paths_init(&paths, ippc_dir, profile, err, sizeof err) < 0) {
            msg_err("%s", err);
            return CLI_EXIT_FAIL;
        }
        file = paths.client_file;
    }
    snprintf(w.file, sizeof w.file, "%s", file);
    switch (connection_read(w.file, &w.info, err, sizeof err)) {
    case 0: break;
    case -1:
        msg_err("no cluster is running for profile \"%s\" (no connection file %s); start one "
                "with: ippc cluster start -n 4%s%s",
                profile != NULL ? profile : "default", w.file, profile != NULL ? " --profile " : "",
                profile != NULL ? profile : "");
        return CLI_EXIT_FAIL;
    default: msg_err("%s", err); return CLI_EXIT_FAIL;
    }

    status = watch_run(&w);
    outbox_clear(&w);
    buf_free(&w.rx);
    json_decref(w.topics);
    json_decref(w.filter);
    return status;
}
