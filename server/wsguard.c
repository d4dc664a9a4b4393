/* wsguard.c — the /ws relay that closes unmasked client frames (see wsguard.h).
 *
 * Each relayed connection is two sockets — the client's TCP socket and the
 * guard's end of the socketpair whose other end lws holds — and two bounded
 * buffers, one per direction; a socket is read only while its buffer has room,
 * so a slow reader on either side slows its writer instead of growing memory.
 * Both directions' frame headers are followed by wsguard_scan: the client's to
 * find an unmasked frame (whose bytes are never passed on), lws's to know where
 * its frames end, so that the close frame the guard sends goes between two
 * frames and not into the middle of one.
 *
 * Closing: when either side ends, what is buffered towards the other side is
 * delivered, then that side's write half is shut, and the guard waits up to
 * LINGER_MS for the peer to finish before closing (closing a socket with
 * unread bytes would reset it and could destroy what was just sent).
 */
#include "wsguard.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub.h"
#include "list.h"

/* ------------------------------------------------------------ scanning */

enum { ST_HEAD, ST_B0, ST_B1, ST_EXT, ST_MASK, ST_PAYLOAD };

/* The payload length is known: a mask key next, or the payload, or (empty
 * payload) the next frame. */
static void after_length(wsguard_scan_state *s)
{
    if (s->masked) {
        s->stage = ST_MASK;
        s->left = 4;
    } else if (s->length) {
        s->stage = ST_PAYLOAD;
        s->left = s->length;
    } else {
        s->stage = ST_B0;
    }
}

static int head_done(wsguard_scan_state *s)
{
    s->stage = ST_B0;
    if (!s->http_answer)
        return 1;
    /* "HTTP/1.1 101 " */
    s->upgraded = s->status_n >= 12 && memcmp(s->status, "HTTP/1.1 101", 12) == 0;
    return s->upgraded;
}

int wsguard_scan(wsguard_scan_state *s, const unsigned char *p, size_t n, int require_mask,
                 int stop_at_boundary, size_t *cut)
{
    size_t i = 0, frame_start = 0;
    if (s->stage == ST_HEAD && !s->skip && !s->http_answer)
        s->stage = ST_B0;
    for (;;) {
        if (s->stage == ST_B0 && stop_at_boundary) {
            *cut = i;
            return WSGUARD_SCAN_BOUNDARY;
        }
        if (i == n)
            break;
        unsigned char b = p[i];
        switch (s->stage) {
        case ST_HEAD:
            if (s->skip) {
                size_t k = n - i < s->skip ? n - i : s->skip;
                s->skip -= k;
                i += k;
                if (!s->skip && !s->http_answer)
                    head_done(s);
                break;
            }
            /* An HTTP answer: up to its blank line. */
            if (s->status_n < sizeof s->status)
                s->status[s->status_n++] = (char)b;
            i++;
            if ((b == '\r' && (s->match == 0 || s->match == 2)) ||
                (b == '\n' && (s->match == 1 || s->match == 3)))
                s->match++;
            else
                s->match = b == '\r' ? 1 : 0;
            if (s->match == 4 && !head_done(s)) {
                *cut = i;
                return WSGUARD_SCAN_NOT_UPGRADED;
            }
            break;
        case ST_B0:
            frame_start = i;
            s->stage = ST_B1;
            i++;
            break;
        case ST_B1:
            s->masked = (b & 0x80) != 0;
            if (require_mask && !s->masked) {
                *cut = frame_start;
                return WSGUARD_SCAN_UNMASKED;
            }
            i++;
            s->length = b & 0x7f;
            if (s->length >= 126) {
                s->stage = ST_EXT;
                s->left = s->length == 126 ? 2 : 8;
                s->length = 0;
            } else {
                after_length(s);
            }
            break;
        case ST_EXT:
            s->length = s->length << 8 | b;
            i++;
            if (--s->left == 0)
                after_length(s);
            break;
        case ST_MASK:
            i++;
            if (--s->left == 0) {
                s->masked = 0; /* the key is read: on to the payload */
                after_length(s);
            }
            break;
        case ST_PAYLOAD: {
            uint64_t k = n - i < s->left ? n - i : s->left;
            i += (size_t)k;
            s->left -= k;
            if (s->left == 0)
                s->stage = ST_B0;
            break;
        }
        }
    }
    *cut = n;
    return WSGUARD_SCAN_OK;
}

/* ------------------------------------------------------------ relaying */

#define BUF_SIZE ((size_t)64 * 1024)
#define LINGER_MS 2000
#define SOCKETPAIR_SNDBUF (4 << 20)

/* RFC 6455 5.5.1: FIN + close, 2-byte code 1002, a reason; unmasked (server). */
static const char close_reason[] = "client frames must be masked";
#define CLOSE_FRAME_LEN (2 + 2 + sizeof close_reason - 1)

typedef struct gconn gconn;

typedef struct endpoint {
    gconn *c;
    int fd;
    int is_client;
    int watched; /* in the epoll set (left out while it has nothing to do: a
                    hung-up socket would otherwise be reported over and over) */
} endpoint;

typedef struct dirbuf {
    unsigned char data[BUF_SIZE];
    size_t start, end; /* bytes [start, end) wait to be written */
    int src_done;      /* nothing more will be read from the source */
    int dst_shut;      /* the destination's write half is shut (or it is closed) */
} dirbuf;

struct gconn {
    endpoint client, lws;
    dirbuf up;   /* client -> lws */
    dirbuf down; /* lws -> client */
    wsguard_scan_state up_scan, down_scan;
    int down_raw; /* lws did not upgrade: its bytes pass unexamined */
    int refusing; /* an unmasked frame came: close 1002 after lws's current frame */
    unsigned char close_frame[CLOSE_FRAME_LEN];
    size_t close_len, close_sent;
    int lingering;       /* everything is sent: reading the client until it ends */
    int64_t deadline_ms; /* for refusing and lingering; 0: none */
    int dead;
    gconn *next;    /* in wsguard.incoming */
    list_node link; /* in wsguard.conns, once taken from incoming */
};

struct wsguard {
    int epfd, wake_fd;
    pthread_t thread;
    atomic_int stop;
    atomic_size_t count;
    pthread_mutex_t lock; /* incoming */
    gconn *incoming;
    list_node conns; /* gconn.link; the relay thread's */
};

static size_t room(const dirbuf *d)
{
    return BUF_SIZE - d->end;
}

static size_t pending(const dirbuf *d)
{
    return d->end - d->start;
}

static void compact(dirbuf *d)
{
    if (d->start == d->end) {
        d->start = d->end = 0;
    } else if (d->start > BUF_SIZE / 2) {
        memmove(d->data, d->data + d->start, d->end - d->start);
        d->end -= d->start;
        d->start = 0;
    }
}

static void endpoint_close(wsguard *g, endpoint *e)
{
    if (e->fd < 0)
        return;
    if (e->watched)
        epoll_ctl(g->epfd, EPOLL_CTL_DEL, e->fd, NULL);
    close(e->fd);
    e->fd = -1;
    e->watched = 0;
}

static void conn_kill(wsguard *g, gconn *c)
{
    endpoint_close(g, &c->client);
    endpoint_close(g, &c->lws);
    c->dead = 1;
}

/* 0 on success; -1 if the socket cannot be watched (the caller kills). */
static int set_interest(wsguard *g, endpoint *e, uint32_t events)
{
    if (e->fd < 0)
        return 0;
    if (!events) {
        if (e->watched)
            epoll_ctl(g->epfd, EPOLL_CTL_DEL, e->fd, NULL);
        e->watched = 0;
        return 0;
    }
    struct epoll_event ev = {.events = events, .data.ptr = e};
    if (epoll_ctl(g->epfd, e->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, e->fd, &ev) < 0)
        return -1;
    e->watched = 1;
    return 0;
}

static void update_interest(wsguard *g, gconn *c)
{
    if (c->dead)
        return;
    uint32_t cl = 0, lw = 0;
    if ((!c->up.src_done && room(&c->up)) || c->lingering)
        cl |= EPOLLIN;
    if (pending(&c->down) || c->close_sent < c->close_len)
        cl |= EPOLLOUT;
    if (!c->down.src_done && room(&c->down))
        lw |= EPOLLIN;
    if (pending(&c->up))
        lw |= EPOLLOUT;
    if (set_interest(g, &c->client, cl) < 0 || set_interest(g, &c->lws, lw) < 0)
        conn_kill(g, c);
}

/* lws's current frame to the client has ended: stop reading lws, drop it
 * (lws sees the socket close), and queue the close frame. */
static void refuse_now(wsguard *g, gconn *c)
{
    c->down.src_done = 1;
    c->up.dst_shut = 1;
    c->up.start = c->up.end = 0;
    endpoint_close(g, &c->lws);
    unsigned char *f = c->close_frame;
    f[0] = 0x88;
    f[1] = (unsigned char)(CLOSE_FRAME_LEN - 2);
    f[2] = 1002 >> 8;
    f[3] = 1002 & 0xff;
    memcpy(f + 4, close_reason, sizeof close_reason - 1);
    c->close_len = CLOSE_FRAME_LEN;
}

/* The client sent an unmasked frame. */
static void start_refusal(wsguard *g, gconn *c, int64_t now)
{
    c->refusing = 1;
    c->up.src_done = 1;
    c->deadline_ms = now + LINGER_MS;
    size_t cut = 0;
    if (c->down_raw) {
        conn_kill(g, c); /* no WebSocket to close properly */
        return;
    }
    if (wsguard_scan(&c->down_scan, NULL, 0, 0, 1, &cut) == WSGUARD_SCAN_BOUNDARY)
        refuse_now(g, c);
}

static void read_client(wsguard *g, gconn *c, int64_t now)
{
    if (c->lingering || c->up.src_done) {
        /* Nothing more goes to lws: read and drop, until the client ends. */
        unsigned char scratch[4096];
        ssize_t n = recv(c->client.fd, scratch, sizeof scratch, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            conn_kill(g, c);
        return;
    }
    dirbuf *d = &c->up;
    compact(d);
    if (!room(d))
        return; /* (a zero-length read would look like the end) */
    ssize_t n = recv(c->client.fd, d->data + d->end, room(d), MSG_DONTWAIT);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_kill(g, c);
        return;
    }
    if (n == 0) {
        d->src_done = 1;
        return;
    }
    size_t cut = 0;
    int rc = wsguard_scan(&c->up_scan, d->data + d->end, (size_t)n, 1, 0, &cut);
    d->end += cut;
    if (rc == WSGUARD_SCAN_UNMASKED)
        start_refusal(g, c, now);
}

static void read_lws(wsguard *g, gconn *c)
{
    dirbuf *d = &c->down;
    compact(d);
    if (!room(d) || d->src_done)
        return; /* (a zero-length read would look like the end) */
    ssize_t n = recv(c->lws.fd, d->data + d->end, room(d), MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        n = 0; /* lws dropped it: end as if it closed */
    }
    if (n == 0) {
        d->src_done = 1;
        c->up.dst_shut = 1; /* nothing more can reach lws */
        c->up.start = c->up.end = 0;
        endpoint_close(g, &c->lws);
        return;
    }
    if (c->down_raw) {
        d->end += (size_t)n;
        return;
    }
    size_t cut = 0;
    int rc = wsguard_scan(&c->down_scan, d->data + d->end, (size_t)n, 0, c->refusing, &cut);
    if (rc == WSGUARD_SCAN_NOT_UPGRADED) {
        /* lws refused the upgrade (defence in depth): its answer passes as is. */
        c->down_raw = 1;
        d->end += (size_t)n;
        if (c->refusing)
            conn_kill(g, c);
        return;
    }
    d->end += cut;
    if (rc == WSGUARD_SCAN_BOUNDARY)
        refuse_now(g, c);
}

static int write_some(gconn *c, endpoint *to, dirbuf *d)
{
    ssize_t n = send(to->fd, d->data + d->start, pending(d), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    d->start += (size_t)n;
    compact(d);
    (void)c;
    return 0;
}

static void write_lws(wsguard *g, gconn *c)
{
    if (c->lws.fd >= 0 && pending(&c->up) && write_some(c, &c->lws, &c->up) < 0) {
        /* lws has gone: the client's bytes have nowhere to go. */
        c->up.start = c->up.end = 0;
        c->up.dst_shut = 1;
    }
    if (c->lws.fd >= 0 && c->up.src_done && !pending(&c->up) && !c->up.dst_shut) {
        shutdown(c->lws.fd, SHUT_WR); /* the client ended: tell lws */
        c->up.dst_shut = 1;
    }
    (void)g;
}

static void write_client(wsguard *g, gconn *c, int64_t now)
{
    if (pending(&c->down) && write_some(c, &c->client, &c->down) < 0) {
        conn_kill(g, c);
        return;
    }
    if (!pending(&c->down) && c->close_sent < c->close_len) {
        ssize_t n = send(c->client.fd, c->close_frame + c->close_sent, c->close_len - c->close_sent,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_kill(g, c);
            return;
        }
        if (n > 0)
            c->close_sent += (size_t)n;
    }
    /* Everything from lws (and our close) is out: end our half, then wait
     * for the client's end. */
    if (c->down.src_done && !pending(&c->down) && c->close_sent == c->close_len &&
        !c->down.dst_shut) {
        shutdown(c->client.fd, SHUT_WR);
        c->down.dst_shut = 1;
        c->lingering = 1;
        if (!c->deadline_ms || c->deadline_ms > now + LINGER_MS)
            c->deadline_ms = now + LINGER_MS;
        if (c->up.src_done && !c->refusing && c->lws.fd < 0)
            conn_kill(g, c); /* the client had ended already */
    }
}

static void conn_free_dead(wsguard *g)
{
    list_for_each_safe(it, &g->conns) {
        gconn *c = list_entry(it, gconn, link);
        if (c->dead) {
            list_remove(&c->link);
            free(c);
            atomic_fetch_sub(&g->count, 1);
        }
    }
}

static void take_incoming(wsguard *g)
{
    uint64_t value;
    ssize_t rc = read(g->wake_fd, &value, sizeof value);
    (void)rc;
    pthread_mutex_lock(&g->lock);
    gconn *in = g->incoming;
    g->incoming = NULL;
    pthread_mutex_unlock(&g->lock);
    while (in) {
        gconn *c = in;
        in = in->next;
        c->next = NULL;
        list_push_front(&g->conns, &c->link);
        update_interest(g, c);
    }
}

static void *relay_main(void *arg)
{
    wsguard *g = arg;
    int64_t next_check = 0;
    while (!atomic_load(&g->stop)) {
        struct epoll_event events[64];
        int n = epoll_wait(g->epfd, events, 64, 100);
        if (n < 0 && errno != EINTR)
            break;
        int64_t now = hub_now_ms();
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                take_incoming(g);
                continue;
            }
            endpoint *e = events[i].data.ptr;
            gconn *c = e->c;
            if (c->dead || e->fd < 0)
                continue;
            uint32_t ev = events[i].events;
            if (e->is_client) {
                if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    read_client(g, c, now);
                if (!c->dead && c->client.fd >= 0 && (ev & EPOLLOUT))
                    write_client(g, c, now);
            } else {
                if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    read_lws(g, c);
                if (!c->dead && c->lws.fd >= 0 && (ev & EPOLLOUT))
                    write_lws(g, c);
            }
            /* A read may have made something writable on the other side. */
            if (!c->dead && c->lws.fd >= 0)
                write_lws(g, c);
            if (!c->dead && c->client.fd >= 0)
                write_client(g, c, now);
            update_interest(g, c);
        }
        if (now >= next_check) {
            list_for_each(it, &g->conns) {
                gconn *c = list_entry(it, gconn, link);
                if (!c->dead && c->deadline_ms && now >= c->deadline_ms)
                    conn_kill(g, c);
            }
            next_check = now + 100;
        }
        conn_free_dead(g);
    }
    return NULL;
}

wsguard *wsguard_start(ippc_error *err)
{
    wsguard *g = calloc(1, sizeof *g);
    if (!g) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&g->lock, NULL);
    list_init(&g->conns);
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    g->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (g->epfd < 0 || g->wake_fd < 0 || epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->wake_fd, &ev) < 0 ||
        pthread_create(&g->thread, NULL, relay_main, g) != 0) {
        ippc_error_set(err, ERR_INTERNAL, "cannot start the /ws relay: %s", strerror(errno));
        if (g->epfd >= 0)
            close(g->epfd);
        if (g->wake_fd >= 0)
            close(g->wake_fd);
        pthread_mutex_destroy(&g->lock);
        free(g);
        return NULL;
    }
    return g;
}

int wsguard_add(wsguard *g, int client_fd, size_t head_len)
{
    int pair[2];
    gconn *c = calloc(1, sizeof *c);
    if (!c || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) < 0) {
        free(c);
        close(client_fd);
        return -1;
    }
    /* lws's end gets as much send buffer as a TCP socket would have had:
     * without it, every burst lws writes would wait for this thread. */
    for (int i = 0; i < 2; i++) {
        int sndbuf = SOCKETPAIR_SNDBUF;
        /* FORCE passes net.core.wmem_max when we may (CAP_NET_ADMIN). */
        if (setsockopt(pair[i], SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0)
            setsockopt(pair[i], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    }
    c->client = (endpoint){.c = c, .fd = client_fd, .is_client = 1};
    c->lws = (endpoint){.c = c, .fd = pair[0], .is_client = 0};
    c->up_scan.skip = head_len; /* the acceptor read the head already */
    c->down_scan.http_answer = 1;
    atomic_fetch_add(&g->count, 1);
    pthread_mutex_lock(&g->lock);
    c->next = g->incoming;
    g->incoming = c;
    pthread_mutex_unlock(&g->lock);
    uint64_t one = 1;
    ssize_t rc = write(g->wake_fd, &one, sizeof one);
    (void)rc;
    return pair[1];
}

size_t wsguard_connections(wsguard *g)
{
    return g ? atomic_load(&g->count) : 0;
}

void wsguard_stop(wsguard *g)
{
    if (!g)
        return;
    atomic_store(&g->stop, 1);
    uint64_t one = 1;
    ssize_t rc = write(g->wake_fd, &one, sizeof one);
    (void)rc;
    pthread_join(g->thread, NULL);
    take_incoming(g);
    list_for_each(it, &g->conns)
        conn_kill(g, list_entry(it, gconn, link));
    conn_free_dead(g);
    close(g->epfd);
    close(g->wake_fd);
    pthread_mutex_destroy(&g->lock);
    free(g);
}
