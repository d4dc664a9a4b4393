/* wsguard.h — a relay in front of libwebsockets for /ws client sockets, for
 * the one frame check lws 4.1 does not make: a client's frames must be masked
 * (RFC 6455 section 5.1; the server must close the connection, 1002).
 *
 * lws 4.1.6 reads the mask bit (ops-ws.c, LWS_RXPS_04_FRAME_HDR_LEN) into a
 * private field and goes on: an unmasked frame is delivered like a masked one,
 * no option or callback sees the bit, and once delivered an unmasked frame and
 * one masked with a zero key are the same bytes.  (lws closes unmasked client
 * frames with 1002 from v5.0.0 on.)  By the time a client sends its first
 * frame the socket belongs to lws, so nothing in front of lws can look at it
 * either — unless lws does not hold the client's socket.  So lws is given one
 * end of a socketpair, and this module relays bytes between it and the
 * client's TCP socket, reading the frame headers of both directions as they
 * pass (never the payloads).  On an unmasked client frame it stops reading
 * the client, lets lws's current frame to the client finish, sends a close
 * frame 1002 "client frames must be masked", and closes both sides (lws sees
 * an ordinary disconnect).
 *
 * Only /ws clients are relayed: engines are authenticated peers built from
 * this tree and carry bulk arrays, which a relay would copy once more.
 *
 * Threads: wsguard_start creates one relay thread (epoll), which owns every
 * relayed socket.  wsguard_add may be called from any thread; wsguard_stop
 * from the thread that started it.  wsguard_scan is pure (for tests).
 */
#ifndef IPPC_WSGUARD_H
#define IPPC_WSGUARD_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct wsguard wsguard;

wsguard *wsguard_start(ippc_error *err);
/* Takes client_fd (a /ws socket whose head_len bytes of request head the
 * acceptor checked, still unread) and returns the socket to give to lws in
 * its place, or -1 (client_fd is closed then). */
int wsguard_add(wsguard *g, int client_fd, size_t head_len);
/* Closes every relayed socket and joins the thread.  NULL is fine. */
void wsguard_stop(wsguard *g);
/* Relayed connections (for tests and /metrics). */
size_t wsguard_connections(wsguard *g);

/* One direction's reader of frame headers.  Pure state; zero it, then set
 * skip (upstream: the request head) or http_answer (downstream: an HTTP
 * answer comes first). */
typedef struct wsguard_scan_state {
    size_t skip;     /* bytes to pass before the first frame */
    int http_answer; /* an HTTP answer head comes first */
    int upgraded;    /* downstream: that answer was 101 */
    int stage;       /* internal: where in a frame header or payload */
    uint64_t left;   /* internal: bytes left in this stage */
    uint64_t length; /* internal: payload length being read */
    int masked;      /* internal: the current frame's mask bit */
    unsigned match;  /* internal: how much of "\r\n\r\n" was just seen */
    char status[16]; /* internal: the first bytes of the HTTP answer */
    size_t status_n;
} wsguard_scan_state;

enum {
    WSGUARD_SCAN_OK = 0,          /* all n bytes passed */
    WSGUARD_SCAN_UNMASKED = 1,    /* an unmasked frame starts at *cut */
    WSGUARD_SCAN_BOUNDARY = 2,    /* stop_at_boundary: a frame ended at *cut */
    WSGUARD_SCAN_NOT_UPGRADED = 3 /* the HTTP answer was not 101: no frames follow */
};

/* Reads n more bytes of a stream.  require_mask: frames must be masked (the
 * client's direction).  stop_at_boundary: report the first point where a
 * frame ends (or where no frame is under way).  *cut: the offset in p up to
 * which bytes may pass. */
int wsguard_scan(wsguard_scan_state *s, const unsigned char *p, size_t n, int require_mask,
                 int stop_at_boundary, size_t *cut);

#endif
