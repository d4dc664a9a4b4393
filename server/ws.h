/* ws.h — the controller's WebSocket side (libwebsockets) on sockets handed
 * over by the acceptor: the engine endpoint /engine (subprotocol
 * ippc.engine.v1) and the client stream /ws (ippc.client.v1, docs/streams.md):
 * events, subscriptions, resume, and every REST operation as a message.
 *
 * Threads: ws_start creates the lws service thread, which owns every lws
 * object.  ws_adopt and ws_stop may be called from any thread; they queue work
 * and wake the service loop with lws_cancel_service.  The service thread also
 * runs hub_tick every 200 ms.
 */
#ifndef IPPC_WS_H
#define IPPC_WS_H

#include "hub.h"

typedef struct ws_server ws_server;

struct events;
/* token: the client bearer token that /ws requires. */
ws_server *ws_start(hub *h, struct events *ev, const char *token, ippc_error *err);
/* Hands over an accepted socket whose request line is for /engine or /ws.
 * The socket is closed on failure. */
void ws_adopt(ws_server *s, int fd);
/* Number of engine sockets still open (for a graceful shutdown). */
int ws_engine_connections(ws_server *s);
void ws_stop(ws_server *s);

#endif
