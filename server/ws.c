/* ws.c — engine sockets over libwebsockets, and the service thread (see ws.h).
 *
 * Per connection: an outbound queue (filled by the hub from any thread, drained
 * in SERVER_WRITEABLE) and a reader that reassembles messages, charging what
 * it holds to the connection's budget account.  The hub keeps a pointer to the
 * session only while the engine is live; CLOSED tells the hub first (under its
 * lock) and frees the session after, so the hub never sees a freed session.
 * Until its register message, a socket is only given ENGINE_REGISTER_TIMEOUT_S
 * (an lws timeout, cleared on registration).
 */
#include "ws.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bigmem.h"
#include "events.h"
#include "proto.h"
#include "secret.h"
#include "ws_internal.h"

#define TICK_US (200 * LWS_US_PER_MS)
/* How long a connection being closed may take to read what is still sent. */
#define CLOSE_FLUSH_TIMEOUT_S 30

typedef struct engine_session session;

struct engine_session {
    struct lws *wsi;
    ws_server *server;
    budget_account in_account; /* the message being received */
    ws_outq q;
    ws_reader reader;
    int established; /* set by ESTABLISHED: lws zeroes the session when it binds
                        the protocol and runs CLOSED even for upgrades that were
                        refused, so CLOSED undoes only what this flag says was done */
    int engine_id;   /* -1 until registered */
    atomic_int close_requested;
    char close_reason[128];
    list_node link; /* in ws_server.sessions */
};

static int engine_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len);

/* Bytes lws reads from a socket at once and hands an engine's RECEIVE. */
#define WS_READ_SIZE ((size_t)1024 * 1024)
/* Chunks (wsmsg.c: 256 KiB each) written per WRITEABLE at most. */
#define WS_WRITES_PER_ROUND 16

/* The client protocol comes first: lws gives upgrades without a subprotocol
 * to the first one, and plain engines always name theirs. */
static const struct lws_protocols protocols[] = {
    {IPPC_CLIENT_SUBPROTOCOL, ws_client_callback, sizeof(client_session), 65536, 0, NULL, 0},
    {IPPC_ENGINE_SUBPROTOCOL, engine_callback, sizeof(session), WS_READ_SIZE, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static int session_send(void *conn, json_t *msg, ws_blobref **blobs, size_t nblobs)
{
    session *s = conn;
    int rc = ws_outq_push(&s->q, msg, blobs, nblobs);
    lws_cancel_service(s->server->ctx);
    return rc;
}

static void session_close(void *conn, const char *reason)
{
    session *s = conn;
    snprintf(s->close_reason, sizeof s->close_reason, "%.120s", reason ? reason : "");
    atomic_store(&s->close_requested, 1);
    lws_cancel_service(s->server->ctx);
}

static void send_now(session *s, json_t *msg)
{
    ws_outq_push(&s->q, msg, NULL, 0);
    json_decref(msg);
    lws_callback_on_writable(s->wsi);
}

static void on_message(session *s, json_t *msg, ippc_blobs *blobs)
{
    if (s->engine_id >= 0) {
        hub_engine_message(s->server->h, s->engine_id, msg, blobs);
        return;
    }
    ippc_error err = {0};
    const char *type = json_string_value(json_object_get(msg, "type"));
    hub_engine_link link = {.conn = s, .send = session_send, .close = session_close};
    int id = -1;
    if (!type || strcmp(type, "register") != 0)
        ippc_error_set(&err, ERR_BAD_REQUEST, "the first message must be a register message");
    else if (hub_engine_register(s->server->h, msg, &link, &id, &err) == 0)
        s->engine_id = id;
    json_decref(msg);
    blobs_free(blobs);
    if (s->engine_id >= 0) {
        lws_set_timeout(s->wsi, NO_PENDING_TIMEOUT, 0);
        lwsl_user("engine %d registered\n", id);
        /* What this side takes in one message: a result over the whole
         * budget could never be held. */
        size_t max = IPPC_MAX_WS_MESSAGE;
        budget *b = s->server->budget;
        if (b && b->limit && b->limit < max)
            max = b->limit;
        send_now(s, json_pack("{s:s, s:i, s:i, s:I}", "type", "registered", "id", id,
                              "heartbeat_period", IPPC_HEARTBEAT_PERIOD_MS, "max_message",
                              (json_int_t)max));
    } else {
        lwsl_warn("engine registration refused: %s\n", err.message);
        send_now(s, json_pack("{s:s, s:s, s:s}", "type", "error", "code", err.code, "message",
                              err.message));
        session_close(s, err.message);
    }
}

int ws_uri_is(struct lws *wsi, const char *path)
{
    char uri[256];
    if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0)
        return 0;
    return strcmp(uri, path) == 0;
}

/* The acceptor checked the key already; a second look costs nothing. */
static int engine_authorized(struct lws *wsi, const char *key)
{
    char buf[512];
    int n = lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_AUTHORIZATION);
    return n > 0 && secret_bearer_equal(buf, (size_t)n, key);
}

static void drain_adoptions(ws_server *srv)
{
    int fds[ADOPT_MAX];
    pthread_mutex_lock(&srv->adopt_lock);
    int n = srv->n_adopt;
    memcpy(fds, srv->adopt_fds, (size_t)n * sizeof *fds);
    srv->n_adopt = 0;
    pthread_mutex_unlock(&srv->adopt_lock);
    for (int i = 0; i < n; i++) {
        lws_sock_file_fd_type fd = {.sockfd = fds[i]};
        if (!lws_adopt_descriptor_vhost(srv->vhost, LWS_ADOPT_SOCKET | LWS_ADOPT_HTTP, fd, NULL,
                                        NULL))
            close(fds[i]); /* lws closes it on most failures; this is the rest */
    }
}

static int engine_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    session *s = user;
    ws_server *srv = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (!ws_uri_is(wsi, "/engine"))
            return 1;
        if (!engine_authorized(wsi, srv->engine_key)) {
            lws_return_http_status(wsi, HTTP_STATUS_UNAUTHORIZED, NULL);
            return 1;
        }
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
        assert(!s->established);
        memset(s, 0, sizeof *s);
        s->established = 1;
        s->wsi = wsi;
        s->server = srv;
        s->engine_id = -1;
        /* Engines are authenticated: their cap is the protocol's, but what
         * they make us hold still comes out of the process-wide budget. */
        budget_account_init(&s->in_account, srv->budget, 0);
        ws_outq_init(&s->q);
        ws_outq_set_direct(&s->q); /* engines never ping */
        ws_reader_init(&s->reader, IPPC_MAX_WS_MESSAGE, &s->in_account);
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, ENGINE_REGISTER_TIMEOUT_S);
        list_push_front(&srv->sessions, &s->link);
        atomic_fetch_add(&srv->engine_sockets, 1);
        break;
    case LWS_CALLBACK_RECEIVE: {
        assert(s->established); /* lws only reads frames on an open WebSocket */
        json_t *msg = NULL;
        ippc_blobs blobs;
        blobs_init(&blobs);
        ippc_error err = {0};
        int rc = ws_reader_feed(&s->reader, wsi, in, len, &msg, &blobs, &err);
        if (rc < 0) {
            /* An engine that sends what it should not is not trusted further. */
            int code = ws_reader_fatal(&s->reader, &err);
            lwsl_warn("engine %d: %s\n", s->engine_id, err.message);
            lws_close_reason(wsi, (enum lws_close_status)(code ? code : 1008),
                             (unsigned char *)err.message, strnlen(err.message, 120));
            return -1;
        }
        if (rc == 1)
            on_message(s, msg, &blobs);
        break;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE:
        assert(s->established);
        return ws_writeable(wsi, &s->q, atomic_load(&s->close_requested),
                            LWS_CLOSE_STATUS_POLICY_VIOLATION, s->close_reason);
    case LWS_CALLBACK_CLOSED:
        if (!s || !s->established)
            break; /* a refused upgrade: nothing was linked or registered */
        assert(s->wsi == wsi && s->server == srv);
        s->established = 0;
        if (s->engine_id >= 0)
            hub_engine_closed(srv->h, s->engine_id, "connection closed");
        list_remove(&s->link);
        ws_outq_destroy(&s->q);
        ws_reader_free(&s->reader);
        budget_account_release(&s->in_account);
        atomic_fetch_sub(&srv->engine_sockets, 1);
        break;
    default: return ws_common_callback(wsi, reason, user, in, len);
    }
    return 0;
}

int ws_writeable(struct lws *wsi, ws_outq *q, int closing, int close_code, const char *close_reason)
{
    /* Several chunks per WRITEABLE while the socket takes them: a client
     * following the event stream must get out at least as fast as engines
     * get in (lws reads up to WS_READ_SIZE from each engine per round). */
    int rc = ws_outq_write(q, wsi);
    for (int n = 1; rc > 0 && n < WS_WRITES_PER_ROUND && !lws_send_pipe_choked(wsi); n++)
        rc = ws_outq_write(q, wsi);
    if (rc < 0)
        return -1;
    if (rc > 0) {
        lws_callback_on_writable(wsi);
    } else if (closing && lws_partial_buffered(wsi)) {
        /* lws still holds part of what was written (the peer reads
         * slowly): closing now would drop it — the notice saying why
         * included.  Close on a later WRITEABLE, once it is out, or
         * when a peer that stopped reading runs out of time. */
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, CLOSE_FLUSH_TIMEOUT_S);
        lws_callback_on_writable(wsi);
    } else if (closing) {
        lws_close_reason(wsi, (enum lws_close_status)close_code, (unsigned char *)close_reason,
                         strlen(close_reason));
        return -1;
    }
    return 0;
}

int ws_common_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    ws_server *srv = lws_context_user(lws_get_context(wsi));
    if (reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED && srv) {
        /* Other threads queued work: adopt sockets, answer woken waits,
         * flush queues, close.  (Delivered to every protocol: act once.) */
        const struct lws_protocols *p = lws_get_protocol(wsi);
        if (!p || !p->name || strcmp(p->name, protocols[0].name) != 0)
            return 0;
        drain_adoptions(srv);
        ws_client_drain_ready(srv);
        list_for_each(it, &srv->sessions) {
            session *s = list_entry(it, session, link);
            if (!ws_outq_empty(&s->q) || atomic_load(&s->close_requested))
                lws_callback_on_writable(s->wsi);
        }
        list_for_each(it, &srv->clients) {
            client_session *c = list_entry(it, client_session, link);
            if (!ws_outq_empty(&c->q) || atomic_load(&c->close_requested))
                lws_callback_on_writable(c->wsi);
        }
        return 0;
    }
    if (reason == LWS_CALLBACK_HTTP) {
        /* A plain HTTP request reached lws (the acceptor only sends upgrades):
         * refuse it rather than hang. */
        lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
        return -1;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static void on_tick(lws_sorted_usec_list_t *sul)
{
    ws_server *srv = lws_container_of(sul, ws_server, tick);
    hub_tick(srv->h);
    bigmem_trim(0); /* array memory nobody reused within BIGMEM_KEEP_MS goes back */
    lws_sul_schedule(srv->ctx, 0, &srv->tick, on_tick, TICK_US);
}

static void *service_main(void *arg)
{
    ws_server *srv = arg;
    lws_sul_schedule(srv->ctx, 0, &srv->tick, on_tick, TICK_US);
    while (!atomic_load(&srv->stop))
        if (lws_service(srv->ctx, 0) < 0)
            break;
    return NULL;
}

ws_server *ws_start(hub *h, struct events *ev, const ws_config *cfg, ippc_error *err)
{
    ws_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    srv->h = h;
    srv->events = ev;
    list_init(&srv->sessions);
    list_init(&srv->clients);
    srv->token = strdup(cfg->token ? cfg->token : "");
    srv->engine_key = strdup(cfg->engine_key ? cfg->engine_key : "");
    srv->budget = cfg->budget;
    if (!srv->token || !srv->engine_key) {
        free(srv->token);
        free(srv->engine_key);
        free(srv);
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&srv->adopt_lock, NULL);
    pthread_mutex_init(&srv->wait_lock, NULL);
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.user = srv;
    info.timeout_secs = 20;
    /* lws keeps the head in a table of this many bytes: as big as the head
     * the acceptor lets through, or lws would drop a head the acceptor
     * passed (a browser's cookies can be long). */
    info.max_http_header_data = IPPC_MAX_REQUEST_HEAD;
    /* lws reads a socket this much at a time: engines' arrays come in a few
     * large reads instead of one per 4 KiB (bench/NOTES.md, issue 10 item 1). */
    info.pt_serv_buf_size = WS_READ_SIZE;
    srv->ctx = lws_create_context(&info);
    if (!srv->ctx)
        goto fail;
    info.protocols = protocols;
    info.vhost_name = "ippc";
    srv->vhost = lws_create_vhost(srv->ctx, &info);
    if (!srv->vhost)
        goto fail;
    srv->guard = wsguard_start(err);
    if (!srv->guard)
        goto fail;
    if (pthread_create(&srv->thread, NULL, service_main, srv) != 0)
        goto fail;
    return srv;
fail:
    ippc_error_set(err, ERR_INTERNAL, "cannot start the WebSocket service");
    wsguard_stop(srv->guard);
    if (srv->ctx)
        lws_context_destroy(srv->ctx);
    pthread_mutex_destroy(&srv->adopt_lock);
    pthread_mutex_destroy(&srv->wait_lock);
    free(srv->token);
    free(srv->engine_key);
    free(srv);
    return NULL;
}

void ws_adopt(ws_server *srv, int fd, int client, size_t head_len)
{
    if (client) {
        /* lws gets the relay's end; the relay keeps the client's socket. */
        fd = wsguard_add(srv->guard, fd, head_len);
        if (fd < 0)
            return;
    }
    pthread_mutex_lock(&srv->adopt_lock);
    int queued = srv->n_adopt < ADOPT_MAX;
    if (queued)
        srv->adopt_fds[srv->n_adopt++] = fd;
    pthread_mutex_unlock(&srv->adopt_lock);
    if (!queued)
        close(fd);
    lws_cancel_service(srv->ctx);
}

int ws_engine_connections(ws_server *srv)
{
    return atomic_load(&srv->engine_sockets);
}

void ws_stop(ws_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->stop, 1);
    lws_cancel_service(srv->ctx);
    pthread_join(srv->thread, NULL);
    lws_context_destroy(srv->ctx);
    wsguard_stop(srv->guard);
    pthread_mutex_lock(&srv->adopt_lock);
    for (int i = 0; i < srv->n_adopt; i++)
        close(srv->adopt_fds[i]);
    pthread_mutex_unlock(&srv->adopt_lock);
    pthread_mutex_destroy(&srv->adopt_lock);
    ws_client_free_ready(srv);
    pthread_mutex_destroy(&srv->wait_lock);
    free(srv->token);
    free(srv->engine_key);
    free(srv);
}
