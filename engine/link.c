/* link.c — the engine's WebSocket connection to the controller (see link.h). */
#include "link.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <libwebsockets.h>

#include "wsframe.h"

/* One read takes at most this much: big enough that an array arrives in few
 * system calls, small enough to stay in the cache while it is copied on. */
#define LINK_READ_SIZE ((size_t)1 << 20)
/* Bytes read per link_read call at most, so queued results still go out. */
#define LINK_READ_BUDGET ((size_t)64 << 20)
/* The controller's answer to the upgrade: its head must fit. */
#define LINK_HEAD_MAX 16384

struct link_conn {
    int fd;
    wsframe_rx rx;
    unsigned char *in;               /* LINK_READ_SIZE bytes */
    size_t in_len;                   /* unparsed bytes at in[0..in_len) */
    unsigned char ctrl[2 + 125 + 4]; /* a control frame waiting to go out */
    size_t ctrl_len, ctrl_sent;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 ? -1 : n > 0;
    }
}

static int connect_tcp(const link_target *t, int64_t deadline, ippc_error *err)
{
    char port[16];
    snprintf(port, sizeof port, "%d", t->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(t->address, port, &hints, &res);
    if (gai != 0)
        return ippc_error_set(err, ERR_UNAVAILABLE, "cannot resolve %s: %s", t->address,
                              gai_strerror(gai));
    int fd = -1, why = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            why = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            why = errno;
        } else {
            int ready = wait_fd(fd, POLLOUT, deadline);
            socklen_t n = sizeof why;
            if (ready <= 0)
                why = ready == 0 ? ETIMEDOUT : errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &why, &n) < 0)
                why = errno;
            if (!why)
                continue; /* connected */
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return ippc_error_set(err, ERR_UNAVAILABLE, "cannot connect to %s:%d: %s", t->address,
                              t->port, strerror(why ? why : ECONNREFUSED));
    int one = 1;
    /* A result is a JSON frame plus binary frames: the small one must not
     * wait for a delayed ACK. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline) <= 0)
                return -1;
            continue;
        }
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The value of header `name` in the response head (NUL-terminated), copied
 * into out; 0, or -1 when it is absent. */
static int head_value(const char *head, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nl) != 0 || line[nl] != ':')
            continue;
        const char *v = line + nl + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t len = strcspn(v, "\r\n");
        while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
            len--;
        if (len >= cap)
            return -1;
        memcpy(out, v, len);
        out[len] = '\0';
        return 0;
    }
    return -1;
}

/* Sends the upgrade and checks the answer; bytes after the answer's head
 * (frames the controller sent at once) are left in l->in. */
static int handshake(link_conn *l, const link_target *t, int64_t deadline, ippc_error *err)
{
    unsigned char nonce[16];
    if (getrandom(nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        return ippc_error_set(err, ERR_INTERNAL, "no random bytes for the upgrade key");
    char key[32];
    lws_b64_encode_string((const char *)nonce, sizeof nonce, key, sizeof key);
    int v6 = strchr(t->address, ':') != NULL;
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n"
                     "Authorization: Bearer %s\r\n\r\n",
                     t->path, v6 ? "[" : "", t->address, v6 ? "]" : "", t->port, key, t->protocol,
                     t->key);
    if (n < 0 || (size_t)n >= sizeof req)
        return ippc_error_set(err, ERR_BAD_REQUEST, "the upgrade request is too long");
    if (send_all(l->fd, req, (size_t)n, deadline) < 0)
        return ippc_error_set(err, ERR_UNAVAILABLE, "cannot send the upgrade: %s",
                              errno ? strerror(errno) : "timed out");

    char head[LINK_HEAD_MAX + 1];
    size_t got = 0;
    char *end = NULL;
    while (!end) {
        if (got == LINK_HEAD_MAX)
            return ippc_error_set(err, ERR_BAD_REQUEST, "the controller's answer head is too long");
        ssize_t r = recv(l->fd, head + got, LINK_HEAD_MAX - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(l->fd, POLLIN, deadline) <= 0)
                return ippc_error_set(err, ERR_UNAVAILABLE, "no answer to the upgrade");
            continue;
        }
        if (r <= 0)
            return ippc_error_set(err, ERR_UNAVAILABLE,
                                  "the controller closed the connection "
                                  "during the upgrade");
        got += (size_t)r;
        head[got] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    size_t head_len = (size_t)(end - head) + 4;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        /* Quote the status line and the start of the body (a JSON error). */
        size_t line = strcspn(head, "\r\n");
        const char *body = head + head_len;
        size_t blen = got - head_len;
        return ippc_error_set(
            err, ERR_UNAUTHORIZED, "the controller refused the upgrade: %.*s %.*s",
            (int)(line < 120 ? line : 120), head, (int)(blen < 200 ? blen : 200), body);
    }
    head[head_len] = '\0';
    char accept[64], proto[64];
    char mix[sizeof key + 40];
    snprintf(mix, sizeof mix, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char sha[20];
    char want[64];
    lws_SHA1((const unsigned char *)mix, strlen(mix), sha);
    lws_b64_encode_string((const char *)sha, sizeof sha, want, sizeof want);
    if (head_value(head, "Sec-WebSocket-Accept", accept, sizeof accept) < 0 ||
        strcmp(accept, want) != 0)
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "the controller's upgrade answer has a wrong "
                              "Sec-WebSocket-Accept");
    if (head_value(head, "Sec-WebSocket-Protocol", proto, sizeof proto) < 0 ||
        strcmp(proto, t->protocol) != 0)
        return ippc_error_set(err, ERR_BAD_REQUEST, "the controller did not accept subprotocol %s",
                              t->protocol);
    l->in_len = got - head_len;
    memcpy(l->in, head + head_len, l->in_len);
    return 0;
}

link_conn *link_connect(const link_target *t, int timeout_ms, ippc_error *err)
{
    int64_t deadline = mono_ms() + timeout_ms;
    link_conn *l = calloc(1, sizeof *l);
    if (l)
        l->in = malloc(LINK_READ_SIZE);
    if (!l || !l->in) {
        if (l)
            free(l->in);
        free(l);
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    wsframe_rx_init(&l->rx);
    l->fd = connect_tcp(t, deadline, err);
    if (l->fd < 0 || handshake(l, t, deadline, err) < 0) {
        if (l->fd >= 0)
            close(l->fd);
        free(l->in);
        free(l);
        return NULL;
    }
    return l;
}

int link_fd(const link_conn *l)
{
    return l->fd;
}

/* Queues a control frame (pong, close) to go out at the next frame boundary. */
static void queue_control(link_conn *l, int opcode, const unsigned char *payload, size_t len)
{
    if (l->ctrl_len > l->ctrl_sent)
        return; /* one at a time: a newer ping needs only the newest pong */
    if (len > 125)
        len = 125;
    l->ctrl_len = wsframe_client_header(l->ctrl, opcode, len);
    memcpy(l->ctrl + l->ctrl_len, payload, len);
    l->ctrl_len += len;
    l->ctrl_sent = 0;
}

/* Parses l->in[0..in_len); keeps an incomplete header's bytes for later. */
static int parse(link_conn *l, ws_reader *r, link_message_fn fn, void *arg, ippc_error *err)
{
    size_t at = 0;
    while (at < l->in_len) {
        size_t used = 0, len = 0;
        const unsigned char *piece = NULL;
        ws_fragment frag;
        const char *why = NULL;
        wsframe_event ev =
            wsframe_next(&l->rx, l->in + at, l->in_len - at, &used, &piece, &len, &frag, &why);
        at += used;
        switch (ev) {
        case WSFRAME_MORE: break;
        case WSFRAME_ERROR:
            return ippc_error_set(err, ERR_BAD_REQUEST,
                                  "WebSocket protocol error from the "
                                  "controller: %s",
                                  why);
        case WSFRAME_CLOSE:
            return ippc_error_set(err, ERR_UNAVAILABLE,
                                  "the controller closed "
                                  "the connection");
        case WSFRAME_PING: queue_control(l, WSFRAME_OP_PONG, l->rx.ctrl, l->rx.ctrl_len); break;
        case WSFRAME_PONG: break;
        case WSFRAME_DATA: {
            json_t *msg = NULL;
            ippc_blobs blobs;
            blobs_init(&blobs);
            int rc = ws_reader_push(r, &frag, piece, len, &msg, &blobs, err);
            if (rc < 0)
                return -1;
            if (rc == 1)
                fn(arg, msg, &blobs);
            break;
        }
        }
    }
    l->in_len = 0;
    return 0;
}

int link_read(link_conn *l, ws_reader *r, link_message_fn fn, void *arg, ippc_error *err)
{
    /* Bytes left from the handshake first. */
    if (l->in_len && parse(l, r, fn, arg, err) < 0)
        return -1;
    size_t total = 0;
    while (total < LINK_READ_BUDGET) {
        ssize_t n = recv(l->fd, l->in, LINK_READ_SIZE, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n < 0)
            return ippc_error_set(err, ERR_UNAVAILABLE, "connection to the controller failed: %s",
                                  strerror(errno));
        if (n == 0)
            return ippc_error_set(err, ERR_UNAVAILABLE, "the controller closed the connection");
        l->in_len = (size_t)n;
        total += (size_t)n;
        if (parse(l, r, fn, arg, err) < 0)
            return -1;
    }
    return 0;
}

int link_write(link_conn *l, ws_outq *q)
{
    if (l->ctrl_sent < l->ctrl_len && !ws_outq_mid_frame(q)) {
        ssize_t w = send(l->fd, l->ctrl + l->ctrl_sent, l->ctrl_len - l->ctrl_sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        if (w > 0)
            l->ctrl_sent += (size_t)w;
        if (l->ctrl_sent < l->ctrl_len)
            return 1;
    }
    /* A pong queued while a frame was half out waits for its end. */
    if (l->ctrl_sent < l->ctrl_len)
        return ws_outq_send(q, l->fd) < 0 ? -1 : 1;
    return ws_outq_send(q, l->fd);
}

void link_close(link_conn *l, int code)
{
    if (!l)
        return;
    unsigned char payload[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    unsigned char frame[8];
    size_t n = wsframe_client_header(frame, WSFRAME_OP_CLOSE, sizeof payload);
    memcpy(frame + n, payload, sizeof payload);
    (void)send(l->fd, frame, n + sizeof payload, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(l->fd);
    free(l->in);
    free(l);
}
