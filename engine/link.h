/* link.h — the engine's WebSocket connection to the controller over a plain
 * TCP socket (ws:// only): connect, the upgrade handshake, frames in and out.
 *
 * Why not libwebsockets' client: see common/wsframe.h (one byte per call on
 * the receiving side).  The socket is non-blocking after the handshake; the
 * net thread polls link_fd() and calls link_read / link_write.
 *
 * Threads: everything here is for the engine's net thread only.  The outgoing
 * queue (ws_outq) may be filled by any thread; link_write drains it.
 * Ownership: link_connect returns a link the caller frees with link_close.
 */
#ifndef IPPC_ENGINE_LINK_H
#define IPPC_ENGINE_LINK_H

#include <jansson.h>

#include "error.h"
#include "value.h"
#include "wsmsg.h"

typedef struct link_conn link_conn;

typedef struct link_target {
    const char *address; /* host name or address of the controller */
    int port;
    const char *path;     /* e.g. "/engine" */
    const char *protocol; /* the subprotocol to ask for */
    const char *key;      /* sent as "Authorization: Bearer KEY" */
} link_target;

/* Connects and upgrades, waiting at most timeout_ms.  NULL with err set (the
 * controller's answer is quoted when it refused the upgrade). */
link_conn *link_connect(const link_target *t, int timeout_ms, ippc_error *err);
int link_fd(const link_conn *l);

/* A whole message from the controller: msg (a reference) and blobs are the
 * callee's. */
typedef void (*link_message_fn)(void *arg, json_t *msg, ippc_blobs *blobs);

/* Reads what the socket has (bounded per call, so writes get their turn),
 * hands every complete message to fn and queues the answer to a ping.
 * Returns 0 to go on, -1 when the connection is over (err says why: the
 * controller closed it, a protocol error, a refused message). */
int link_read(link_conn *l, ws_reader *r, link_message_fn fn, void *arg, ippc_error *err);

/* Writes what it can: a pending control frame first (at a frame boundary),
 * then the queue.  1 when more is waiting for the socket (poll POLLOUT), 0
 * when everything is out, -1 when the connection failed. */
int link_write(link_conn *l, ws_outq *q);

/* Sends a close frame (best effort) and frees l. */
void link_close(link_conn *l, int code);

#endif
