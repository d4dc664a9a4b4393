/* http_api.h — the REST API over libmicrohttpd: routing, auth, bodies, JSON
 * answers.  A route with a body or a /ws twin is a call: decoded by
 * call_from_rest and answered by call.c, as the /ws request channel's are
 * (call.h); the few REST-only routes call the hub themselves.
 *
 * Threads: libmicrohttpd's internal polling thread runs every handler.  A
 * request that waits is suspended (MHD_suspend_connection) and resumed by the
 * hub's wake callback, so waiting clients hold no thread.  A JSON body over
 * 256 KiB is decoded (and a direct-view call's values converted) by a small
 * decode pool (decode_pool.h, started and stopped here) while its connection
 * is suspended, so no decode stalls the polling thread.  http_add_connection
 * may be called from any thread (the acceptor's).
 *
 * Dashboard files: every path outside /api and /metrics names a static file
 * (webroot.h), served without the token; only GET and HEAD.
 *
 * Memory: every request body byte is charged to a per-request budget account
 * (cap: max_body for JSON, max_raw for application/octet-stream arrays)
 * drawing from cfg->held before it is stored; a decoded body and its arrays
 * to another (cap: decode_cap).  A request whose
 * body would pass either cap is refused with 413, one that would pass held's
 * limit with 503 "overloaded" — before its body is read when Content-Length
 * tells the size.
 */
#ifndef IPPC_HTTP_API_H
#define IPPC_HTTP_API_H

#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#include "budget.h"
#include "hub.h"
#include "webroot.h"

typedef struct http_api http_api;

typedef struct http_config {
    const char *token;    /* client bearer token */
    size_t max_body;      /* bytes of a JSON body; larger ones get 413 */
    size_t max_raw;       /* bytes of a raw (octet-stream) body; 0: max_body */
    size_t decode_cap;    /* memory one JSON decode may use; 0: a quarter of held's limit */
    int metrics_public;   /* GET /metrics without the token */
    budget *held;         /* process-wide byte budget (outlives the API); NULL: no limit */
    const webroot *files; /* the dashboard's files (outlives the API); NULL: none served */
} http_config;

http_api *http_start(hub *h, const http_config *cfg, ippc_error *err);
/* Hands over an accepted socket; closed on failure. */
void http_add_connection(http_api *api, int fd, const struct sockaddr *addr, socklen_t len);
/* Ends decodes and waits, resumes every suspended connection, stops. */
void http_stop(http_api *api);

/* Prints the route table, one "METHOD /path/{param}" per line. */
void http_print_routes(FILE *out);

#endif
