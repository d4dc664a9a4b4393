/* acceptor.h — the controller's one listening socket and the first request of
 * every connection.
 *
 * The acceptor accepts connections and peeks (MSG_PEEK, never consuming) at
 * each one's request head — the request line and headers, at most
 * IPPC_MAX_REQUEST_HEAD bytes — until it is complete.  Then:
 *   - GET /ws and GET /engine with a valid WebSocket upgrade and the right
 *     credential (client token / engine key) go to libwebsockets;
 *   - everything else that is a well-formed request goes to libmicrohttpd;
 *   - anything else is refused here with a JSON HTTP/1.1 answer
 *     ({"error":{"code","message"}}, Connection: close): 400 malformed, 401
 *     (WWW-Authenticate: Bearer), 404 unknown path under /ws or /engine, 405,
 *     414 request line > IPPC_MAX_REQUEST_LINE, 426 no upgrade or another
 *     WebSocket version, 431 head > IPPC_MAX_REQUEST_HEAD.
 * So no peer reaches a library's own error pages on its first request, and no
 * unauthenticated peer reaches the WebSocket code at all.
 *
 * Nothing blocks: sockets are non-blocking, watched with edge-triggered epoll;
 * a refusal is written without blocking and the connection dropped if the peer
 * does not read it.  A connection has head_timeout_ms to send its complete
 * head.  Waiting connections are capped in all (max_pending) and per client
 * address (max_pending_per_ip); a newcomer is never refused: when a cap is hit
 * the oldest silent connection (then the oldest that spoke but is incomplete,
 * then the oldest being refused) of that address — or of any, for the total —
 * is dropped.
 *
 * Threads: acceptor_run runs on the caller's thread (the controller's main
 * thread) until stop_fd becomes readable.  acceptor_classify and
 * acceptor_answer are pure.
 */
#ifndef IPPC_ACCEPTOR_H
#define IPPC_ACCEPTOR_H

#include <stddef.h>
#include <sys/socket.h>

#include "error.h"

#define ACCEPTOR_HEAD_TIMEOUT_MS 5000
#define ACCEPTOR_MAX_PENDING 1024
#define ACCEPTOR_MAX_PENDING_PER_IP 256
/* Time to write a refusal and see the peer close after it. */
#define ACCEPTOR_ANSWER_TIMEOUT_MS 2000

/* What the acceptor checks credentials against (NUL-terminated; not copied:
 * they must outlive the acceptor). */
typedef struct acceptor_secrets {
    const char *token;      /* the client token /ws requires */
    const char *engine_key; /* the key /engine requires */
} acceptor_secrets;

typedef enum acceptor_kind {
    ACCEPTOR_NEED_MORE = -1, /* the head is not complete yet */
    ACCEPTOR_HTTP = 0,       /* a well-formed request for libmicrohttpd */
    ACCEPTOR_WS_CLIENT = 1,  /* an authenticated upgrade to /ws */
    ACCEPTOR_WS_ENGINE = 2,  /* an authenticated upgrade to /engine */
    ACCEPTOR_REFUSE = 3,     /* answer status/code/message and close */
} acceptor_kind;

typedef struct acceptor_verdict {
    acceptor_kind kind;
    size_t head_len;           /* HTTP, WS_*: bytes of the head, blank line included */
    int status;                /* REFUSE: HTTP status */
    const char *code;          /* REFUSE: error code (error.h) */
    char message[160];         /* REFUSE: for people */
    const char *extra_headers; /* REFUSE: "" or header lines, each ending in CRLF */
} acceptor_verdict;

/* Classifies the first len bytes a connection sent (exactly what MSG_PEEK
 * shows).  A verdict other than ACCEPTOR_NEED_MORE is final: more bytes never
 * change it.  Pure; reads nothing past len. */
acceptor_kind acceptor_classify(const char *bytes, size_t len, const acceptor_secrets *secrets,
                                acceptor_verdict *v);

/* Writes the JSON HTTP/1.1 answer of a refusal into out; returns its length,
 * or 0 if cap is too small (1024 bytes always suffice).  Pure. */
size_t acceptor_answer(const acceptor_verdict *v, char *out, size_t cap);

typedef struct acceptor_routes {
    void (*to_http)(void *arg, int fd, const struct sockaddr *addr, socklen_t len);
    /* v->kind is ACCEPTOR_WS_CLIENT or ACCEPTOR_WS_ENGINE; v->head_len is the
     * request head still unread on fd. */
    void (*to_ws)(void *arg, int fd, const acceptor_verdict *v);
    void *arg;
} acceptor_routes;

typedef struct acceptor_config {
    acceptor_secrets secrets;
    size_t max_pending;        /* 0: ACCEPTOR_MAX_PENDING (lowered to fit RLIMIT_NOFILE) */
    size_t max_pending_per_ip; /* 0: ACCEPTOR_MAX_PENDING_PER_IP */
    int head_timeout_ms;       /* 0: ACCEPTOR_HEAD_TIMEOUT_MS */
} acceptor_config;

/* Binds ip:port (port 0 = any free port) and listens; returns the fd and fills
 * *bound_port, or -1 + err. */
int acceptor_listen(const char *ip, int port, int *bound_port, ippc_error *err);

/* Serves until stop_fd is readable.  The listening socket stays open; every
 * connection not handed over yet is closed on return. */
void acceptor_run(int listen_fd, int stop_fd, const acceptor_routes *routes,
                  const acceptor_config *cfg);

#endif
