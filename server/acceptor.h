/* acceptor.h — the controller's one listening socket.
 *
 * The acceptor accepts connections, peeks (MSG_PEEK, never consuming) at each
 * one's request line and hands the socket to libwebsockets for "GET /engine"
 * and "GET /ws", to libmicrohttpd for everything else.  A connection that says
 * nothing for ACCEPTOR_PEEK_TIMEOUT_MS is closed; peeking is non-blocking and
 * many connections are watched at once, so a silent client stalls no one.
 *
 * Threads: acceptor_run runs on the caller's thread (the controller's main
 * thread) until stop_fd becomes readable.
 */
#ifndef IPPC_ACCEPTOR_H
#define IPPC_ACCEPTOR_H

#include <sys/socket.h>

#include "error.h"

#define ACCEPTOR_PEEK_TIMEOUT_MS 10000

typedef struct acceptor_routes {
    void (*to_http)(void *arg, int fd, const struct sockaddr *addr, socklen_t len);
    void (*to_ws)(void *arg, int fd);
    void *arg;
} acceptor_routes;

/* Binds ip:port (port 0 = any free port) and listens; returns the fd and fills
 * *bound_port, or -1 + err. */
int acceptor_listen(const char *ip, int port, int *bound_port, ippc_error *err);

/* Serves until stop_fd is readable.  Closes nothing it does not own: the
 * listening socket stays open. */
void acceptor_run(int listen_fd, int stop_fd, const acceptor_routes *routes);

/* 1 if the peeked bytes are a WebSocket path (/engine or /ws), 0 if they are
 * something else, -1 if more bytes are needed to tell.  Pure; for tests. */
int acceptor_classify(const char *bytes, size_t len);

#endif
