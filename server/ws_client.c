/* ws_client.c — the client stream /ws (docs/streams.md): the snapshot,
 * subscriptions, resume, and the request channel.  Every operation is a hub
 * call, as in http_api.c; this file only turns messages into those calls and
 * answers into reply messages.
 *
 * The acceptor authenticated the upgrade already; FILTER checks the token
 * again.  Memory: the reader's message and the queued output are charged to
 * the session's two budget accounts (in_account, out_account); a refusal is
 * told to the client with a short uncharged notice, then, when the reader or
 * the events say so, the socket is closed with the matching code (1002,
 * 1008, 1009, 1011, 1013).  Frames reach lws through wsguard.c, which has
 * already closed the connection on an unmasked one.
 *
 * Requests: a message that is not a stream op (subscribe, unsubscribe,
 * resume, ping) is a call, decoded by call_from_ws — the decoder REST's calls
 * go through too (call.h) — and answered with call.c's status and body in a
 * reply, so a reply is what REST would answer.
 *
 * Waiting without blocking the loop: a call that waits registers a hub
 * waiter whose wake callback (any thread, hub lock held) only moves a
 * ws_wait to the server's ready list and wakes the loop; the loop then builds
 * the answer.  A session that closes first orphans its waits (w->session =
 * NULL under wait_lock); the wake then just frees them.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "events.h"
#include "secret.h"
#include "ws_internal.h"

#define CLIENT_MAX_MESSAGE ((size_t)16 << 20)
#define CLIENT_SEND_LIMIT ((size_t)8 << 20)

struct ws_wait {
    ws_server *server;
    client_session *session; /* NULL once orphaned (under server->wait_lock) */
    call call;               /* what the answer is made of */
    json_t *client_id;
    list_node link;      /* in the session's waits while session is set */
    ws_wait *ready_next; /* the server's ready list */
};

/* ------------------------------------------------------------ sending */

/* The client's id to echo (a new reference), null when it sent none. */
static json_t *echo_id(const json_t *cid)
{
    return cid ? json_deep_copy(cid) : json_null();
}

/* Queues a short notice that does not count against the budget: the message
 * that says why something was refused must get out.  An id too big for a
 * notice is left out. */
static void client_send_notice(client_session *s, json_t *notice)
{
    char *text = jsonout_dumps(notice, JSON_COMPACT);
    if (text && strlen(text) > 4096 && json_object_get(notice, "id")) {
        free(text);
        json_object_set_new(notice, "id", json_null());
        text = jsonout_dumps(notice, JSON_COMPACT);
    }
    json_decref(notice);
    if (text && strlen(text) <= 4096)
        ws_outq_push_notice(&s->q, text, strlen(text));
    free(text);
    lws_callback_on_writable(s->wsi);
}

static void client_send_error(client_session *s, const ippc_error *err)
{
    json_t *body = ippc_error_json(err);
    client_send_notice(
        s, json_pack("{s:s, s:O}", "type", "error", "error", json_object_get(body, "error")));
    json_decref(body);
}

/* Queues a message, charged to the client's output budget.  When the budget
 * refuses it, the client gets an error in its place: a reply with the same id
 * and the error's status, or an error message. */
static void client_send_json(client_session *s, json_t *msg)
{
    ippc_error err = {0};
    char *text = jsonout_dumps(msg, JSON_COMPACT);
    if (!text)
        ippc_error_set(&err, ERR_INTERNAL, "out of memory");
    if (!text || ws_outq_push_text(&s->q, text, strlen(text), &err) < 0) {
        const char *type = json_string_value(json_object_get(msg, "type"));
        if (type && strcmp(type, "reply") == 0) {
            json_t *notice = json_pack("{s:s, s:i, s:o}", "type", "reply", "status",
                                       http_status_for(err.code), "body", ippc_error_json(&err));
            json_object_set(notice, "id", json_object_get(msg, "id"));
            client_send_notice(s, notice);
        } else {
            client_send_error(s, &err);
        }
    }
    free(text);
    json_decref(msg);
    lws_callback_on_writable(s->wsi);
}

static void reply(client_session *s, const json_t *client_id, int status, json_t *body)
{
    json_t *msg = json_pack("{s:s, s:i, s:o}", "type", "reply", "status", status, "body",
                            body ? body : json_null());
    json_object_set_new(msg, "id", echo_id(client_id));
    client_send_json(s, msg);
}

static void reply_error(client_session *s, const json_t *client_id, const ippc_error *err)
{
    reply(s, client_id, http_status_for(err->code), ippc_error_json(err));
}

/* events_sink: called with the events lock held, from any thread. */
static int sink_send(void *conn, const char *text, size_t len)
{
    client_session *s = conn;
    pthread_mutex_lock(&s->q.lock);
    size_t queued = s->q.bytes;
    pthread_mutex_unlock(&s->q.lock);
    if (queued > CLIENT_SEND_LIMIT)
        return -1;
    ippc_error err = {0};
    if (ws_outq_push_text(&s->q, text, len, &err) < 0) {
        /* Not this client's slowness: the controller as a whole is out of
         * budget.  The cut that follows says so. */
        atomic_store(&s->overloaded, 1);
        return -1;
    }
    lws_cancel_service(s->server->ctx);
    return 0;
}

static void sink_cut(void *conn, const char *notice)
{
    client_session *s = conn;
    ws_outq_clear(&s->q);
    if (atomic_load(&s->overloaded)) {
        static const char overloaded[] =
            "{\"type\":\"error\",\"error\":{\"code\":\"" ERR_OVERLOADED
            "\",\"message\":\"the controller's memory budget is spent: events for this "
            "client cannot be queued; it is disconnected (reconnect and resume later)\"}}";
        ws_outq_push_notice(&s->q, overloaded, strlen(overloaded));
        s->close_code = 1013; /* Try Again Later (RFC 6455 section 11.7, IANA) */
        snprintf(s->close_reason, sizeof s->close_reason, "overloaded");
    } else {
        ws_outq_push_notice(&s->q, notice, strlen(notice));
        s->close_code = LWS_CLOSE_STATUS_POLICY_VIOLATION;
        snprintf(s->close_reason, sizeof s->close_reason, "slow consumer");
    }
    atomic_store(&s->close_requested, 1);
    lws_cancel_service(s->server->ctx);
}

/* ------------------------------------------------------------ waits */

static void wait_unlink_locked(ws_wait *w)
{
    client_session *s = w->session;
    if (!s)
        return;
    list_remove(&w->link);
}

static void wait_free(ws_wait *w)
{
    call_clear(&w->call);
    json_decref(w->client_id);
    free(w);
}

/* Hub wake callback: hub lock held, any thread. */
static void on_wait_wake(void *arg)
{
    ws_wait *w = arg;
    ws_server *srv = w->server;
    pthread_mutex_lock(&srv->wait_lock);
    if (!w->session) {
        pthread_mutex_unlock(&srv->wait_lock);
        wait_free(w);
        return;
    }
    w->ready_next = srv->ready;
    srv->ready = w;
    pthread_mutex_unlock(&srv->wait_lock);
    lws_cancel_service(srv->ctx);
}

static void answer_wait(client_session *s, ws_wait *w)
{
    int status = 0;
    json_t *body = call_answer(s->server->h, &w->call, &status);
    reply(s, w->client_id, status, body);
    call_answered(s->server->h, &w->call, status != 202); /* kept for this reply until now */
}

/* Service thread: answers every wait that woke. */
void ws_client_drain_ready(ws_server *srv)
{
    pthread_mutex_lock(&srv->wait_lock);
    ws_wait *w = srv->ready;
    srv->ready = NULL;
    /* Reverse to answer in wake order. */
    ws_wait *ordered = NULL;
    while (w) {
        ws_wait *next = w->ready_next;
        w->ready_next = ordered;
        ordered = w;
        w = next;
    }
    for (w = ordered; w; w = w->ready_next)
        wait_unlink_locked(w);
    pthread_mutex_unlock(&srv->wait_lock);
    while (ordered) {
        ws_wait *next = ordered->ready_next;
        if (ordered->session)
            answer_wait(ordered->session, ordered);
        else
            call_answered(srv->h, &ordered->call, 0); /* its client is gone */
        wait_free(ordered);
        ordered = next;
    }
}

void ws_client_free_ready(ws_server *srv)
{
    while (srv->ready) {
        ws_wait *w = srv->ready;
        srv->ready = w->ready_next;
        wait_free(w);
    }
}

/* Waits for what a started call's answer is made of, or answers at once
 * (no wait asked, done already, or unknown).  Takes the call. */
static void wait_or_reply(client_session *s, call *c, const json_t *client_id)
{
    ws_wait *w = calloc(1, sizeof *w);
    if (!w) {
        call_answered(s->server->h, c, 0);
        call_clear(c);
        ippc_error err;
        ippc_error_set(&err, ERR_INTERNAL, "out of memory");
        reply_error(s, client_id, &err);
        return;
    }
    w->server = s->server;
    w->session = s;
    w->call = *c;
    memset(c, 0, sizeof *c);
    w->client_id = client_id ? json_deep_copy(client_id) : NULL;
    /* Listed before the hub can wake it, so a close in between orphans it. */
    pthread_mutex_lock(&s->server->wait_lock);
    list_push_front(&s->waits, &w->link);
    pthread_mutex_unlock(&s->server->wait_lock);
    if (call_wait(s->server->h, &w->call, on_wait_wake, NULL, w) != 0) {
        pthread_mutex_lock(&s->server->wait_lock);
        wait_unlink_locked(w);
        pthread_mutex_unlock(&s->server->wait_lock);
        answer_wait(s, w);
        wait_free(w);
    }
}

/* A request-channel message: decoded as REST's calls are, answered alike. */
static void on_call(client_session *s, const json_t *msg, const json_t *cid)
{
    call c;
    ippc_error err = {0};
    if (call_from_ws(&c, msg, &err) < 0) {
        call_clear(&c);
        reply_error(s, cid, &err);
        return;
    }
    int status = 0;
    json_t *body = NULL;
    if (call_start(s->server->h, &c, &status, &body)) {
        call_clear(&c);
        reply(s, cid, status, body);
        return;
    }
    wait_or_reply(s, &c, cid);
}

static void on_client_message(client_session *s, json_t *msg)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    const json_t *cid = json_object_get(msg, "id");
    ippc_error err = {0};
    if (!json_is_object(msg) || !op) {
        client_send_json(s, json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "code",
                                      ERR_BAD_REQUEST, "message",
                                      "a message is a JSON object with an \"op\""));
        return;
    }
    if (strcmp(op, "subscribe") == 0 || strcmp(op, "unsubscribe") == 0) {
        json_t *ans =
            s->ec ? events_client_subscribe(s->server->events, s->ec, msg, op[0] == 'u', &err)
                  : NULL;
        if (ans) {
            json_object_set_new(ans, "id", echo_id(cid));
            client_send_json(s, ans);
        } else {
            reply_error(s, cid, &err);
        }
        return;
    }
    if (strcmp(op, "resume") == 0) {
        json_t *since = json_object_get(msg, "since");
        if (!json_is_integer(since) || json_integer_value(since) < 0) {
            ippc_error_set(&err, ERR_BAD_REQUEST, "resume needs \"since\": a sequence number");
            reply_error(s, cid, &err);
        } else if (s->ec) {
            events_client_resume(s->server->events, s->ec, (uint64_t)json_integer_value(since));
            lws_callback_on_writable(s->wsi);
        }
        return;
    }
    if (strcmp(op, "ping") == 0) {
        json_t *pong = json_pack("{s:s}", "type", "pong");
        json_object_set_new(pong, "id", echo_id(cid));
        client_send_json(s, pong);
        return;
    }
    on_call(s, msg, cid);
}

/* ------------------------------------------------------------ lws */

/* The token from Authorization, ?token= or a Sec-WebSocket-Protocol entry.
 * The acceptor checked it already; this second look costs nothing. */
static int client_authorized(struct lws *wsi, const char *want)
{
    char buf[512];
    int n = lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n > 0 && secret_bearer_equal(buf, (size_t)n, want))
        return 1;
    const char *arg = lws_get_urlarg_by_name(wsi, "token=", buf, sizeof buf);
    if (arg && secret_equal_n(arg, strlen(arg), want))
        return 1;
    n = lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_PROTOCOL);
    return n > 0 && secret_protocol_token_equal(buf, (size_t)n, want);
}

static const char *close_reason_for(int code)
{
    switch (code) {
    case 1002: return "protocol error";
    case 1009: return "message too large";
    case 1013: return "overloaded";
    default: return "internal error";
    }
}

int ws_client_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    client_session *s = user;
    ws_server *srv = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (!ws_uri_is(wsi, "/ws"))
            return 1;
        if (!client_authorized(wsi, srv->token)) {
            lws_return_http_status(wsi, HTTP_STATUS_UNAUTHORIZED, NULL);
            return 1;
        }
        return 0;
    case LWS_CALLBACK_ESTABLISHED: {
        assert(!s->established);
        memset(s, 0, sizeof *s);
        s->established = 1;
        s->wsi = wsi;
        s->server = srv;
        list_init(&s->waits);
        /* The message cap is the reader's (CLIENT_MAX_MESSAGE); output has
         * no cap of its own (a reply is as big as its REST answer) beyond the
         * slow-consumer limit on events; both draw on the budget. */
        budget_account_init(&s->in_account, srv->budget, 0);
        budget_account_init(&s->out_account, srv->budget, 0);
        ws_outq_init(&s->q);
        ws_outq_set_account(&s->q, &s->out_account);
        ws_reader_init(&s->reader, CLIENT_MAX_MESSAGE, &s->in_account);
        list_push_front(&srv->clients, &s->link);
        events_sink sink = {.conn = s, .send = sink_send, .cut = sink_cut};
        json_t *snap = hub_stream_attach(srv->h, &sink, &s->ec);
        /* The snapshot goes first, ahead of any event queued since. */
        char *text = jsonout_dumps(snap, JSON_COMPACT);
        json_decref(snap);
        ippc_error err = {0};
        if (!text || ws_outq_push_front_text(&s->q, text, strlen(text), &err) < 0) {
            if (!text)
                ippc_error_set(&err, ERR_INTERNAL, "out of memory");
            client_send_error(s, &err);
            s->close_code = strcmp(err.code, ERR_OVERLOADED) == 0 ? 1013 : 1011;
            snprintf(s->close_reason, sizeof s->close_reason, "%s",
                     close_reason_for(s->close_code));
            atomic_store(&s->close_requested, 1);
        }
        free(text);
        lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_RECEIVE: {
        assert(s->established); /* lws only reads frames on an open WebSocket */
        if (atomic_load(&s->close_requested))
            break; /* closing: what still arrives is dropped unread */
        json_t *msg = NULL;
        ippc_blobs blobs;
        blobs_init(&blobs);
        ippc_error err = {0};
        int rc = ws_reader_feed(&s->reader, wsi, in, len, &msg, &blobs, &err);
        if (rc < 0) {
            /* The reader dropped the message (and skips the rest of it);
             * some refusals end the connection too. */
            client_send_error(s, &err);
            int code = ws_reader_fatal(&s->reader, &err);
            if (code) {
                s->close_code = code;
                snprintf(s->close_reason, sizeof s->close_reason, "%s", close_reason_for(code));
                atomic_store(&s->close_requested, 1);
            }
            break;
        }
        if (rc == 1) {
            blobs_free(&blobs);
            on_client_message(s, msg);
            json_decref(msg);
        }
        break;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE:
        assert(s->established);
        return ws_writeable(wsi, &s->q, atomic_load(&s->close_requested), s->close_code,
                            s->close_reason);
    case LWS_CALLBACK_CLOSED:
        if (!s || !s->established)
            break; /* a refused upgrade (401...): never linked, nothing to undo */
        assert(s->wsi == wsi && s->server == srv);
        s->established = 0;
        if (s->ec)
            events_client_remove(srv->events, s->ec);
        pthread_mutex_lock(&srv->wait_lock);
        list_for_each_safe(it, &s->waits) {
            list_remove(it);
            list_entry(it, ws_wait, link)->session = NULL;
        }
        pthread_mutex_unlock(&srv->wait_lock);
        list_remove(&s->link);
        ws_outq_destroy(&s->q);
        ws_reader_free(&s->reader);
        budget_account_release(&s->in_account);
        budget_account_release(&s->out_account);
        break;
    default: return ws_common_callback(wsi, reason, user, in, len);
    }
    return 0;
}
