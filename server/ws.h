/* ws.h — the controller's WebSocket side (libwebsockets) on sockets handed
 * over by the acceptor: the engine endpoint /engine (subprotocol
 * ippc.engine.v1) and the client stream /ws (ippc.client.v1, docs/streams.md):
 * events, subscriptions, resume, and every REST operation as a message.
 *
 * The acceptor has authenticated every socket before it gets here; the
 * protocol callbacks check the credentials again (defence in depth).  An
 * /engine socket that has not registered within ENGINE_REGISTER_TIMEOUT_S is
 * closed.  Limits: a /ws message (JSON and its binary frames) is at most
 * 16 MiB, an /engine message IPPC_MAX_WS_MESSAGE; both, and output queued for
 * /ws clients, draw on the budget (close 1009 over a connection's limit, an
 * "overloaded" error and close 1013 when the budget is spent).
 *
 * Threads: ws_start creates the lws service thread, which owns every lws
 * object, and the /ws relay's thread (wsguard.h).  ws_adopt and ws_stop may be called from any
 * thread; they queue work and wake the service loop with lws_cancel_service.  The service thread
 * also runs hub_tick every 200 ms.
 */
#ifndef IPPC_WS_H
#define IPPC_WS_H

#include "budget.h"
#include "hub.h"

#define ENGINE_REGISTER_TIMEOUT_S 5

typedef struct ws_server ws_server;

struct events;

typedef struct ws_config {
    const char *token;      /* the client bearer token /ws requires (copied) */
    const char *engine_key; /* the key /engine requires as Authorization: Bearer (copied) */
    budget *budget;         /* what WebSocket peers make the controller hold (messages being
                               received, output queued for clients) is charged here; NULL:
                               not counted.  Not owned; it must outlive the server. */
} ws_config;

ws_server *ws_start(hub *h, struct events *ev, const ws_config *cfg, ippc_error *err);
/* Hands over an accepted socket whose request head (head_len bytes, still
 * unread) the acceptor checked (acceptor.h): an authenticated upgrade to /ws
 * (client = 1) or /engine.  A /ws socket reaches lws through the relay of
 * wsguard.h.  The socket is closed on failure. */
void ws_adopt(ws_server *s, int fd, int client, size_t head_len);
/* Number of engine sockets still open (for a graceful shutdown). */
int ws_engine_connections(ws_server *s);
void ws_stop(ws_server *s);

#endif
