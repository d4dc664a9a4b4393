/* ws_internal.h — state shared by ws.c (engine sockets, the service thread)
 * and ws_client.c (client streams).  Everything here belongs to the lws
 * service thread except what a comment says otherwise. */
#ifndef IPPC_WS_INTERNAL_H
#define IPPC_WS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <libwebsockets.h>

#include "hub.h"
#include "list.h"
#include "ws.h"
#include "wsguard.h"

#define ADOPT_MAX 1024

typedef struct ws_wait ws_wait;

typedef struct client_session {
    int established; /* set by ESTABLISHED; CLOSED (which lws also runs for
                        refused upgrades, on a zeroed session) undoes only
                        what ESTABLISHED did */
    struct lws *wsi;
    ws_server *server;
    budget_account in_account;  /* the message being received (reader) */
    budget_account out_account; /* output queued for the client (q) */
    ws_outq q;                  /* filled from any thread (events), drained here */
    ws_reader reader;
    atomic_int overloaded; /* a queued event was refused by the budget (not by slowness) */
    struct events_client *ec;
    atomic_int close_requested;
    int close_code;
    char close_reason[64];
    list_node waits; /* ws_wait.link: pending blocking ops (under server->wait_lock) */
    list_node link;  /* in ws_server.clients */
} client_session;

typedef struct engine_session engine_session;

struct ws_server {
    hub *h;
    struct events *events;
    char *token;
    char *engine_key;
    budget *budget;
    wsguard *guard; /* relays /ws sockets (its own thread) */
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    pthread_t thread;
    atomic_int stop;
    atomic_int engine_sockets;
    pthread_mutex_t adopt_lock;
    int adopt_fds[ADOPT_MAX];
    int n_adopt;
    list_node sessions;        /* engine_session.link */
    list_node clients;         /* client_session.link */
    pthread_mutex_t wait_lock; /* ws_wait.session, client_session.waits, ready */
    ws_wait *ready;
    lws_sorted_usec_list_t tick;
};

/* ws_client.c */
int ws_client_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);
void ws_client_drain_ready(ws_server *srv);
void ws_client_free_ready(ws_server *srv);

/* ws.c: a WRITEABLE callback's work — one frame (or chunk) of q, another
 * WRITEABLE if more is queued, and the close once everything is out and
 * closing is set.  Returns what the callback returns. */
int ws_writeable(struct lws *wsi, ws_outq *q, int closing, int close_code,
                 const char *close_reason);

/* ws.c: 1 if the request's path (without the query) is path. */
int ws_uri_is(struct lws *wsi, const char *path);

/* ws.c: what every protocol does for the callbacks it does not own (wake-ups
 * from other threads, plain HTTP). */
int ws_common_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);

#endif
