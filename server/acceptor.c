/* acceptor.c — accept, peek at the request line, hand over (see acceptor.h). */
#include "acceptor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hub.h"

#define MAX_PENDING 1024

typedef struct pending_conn {
    int fd;
    int64_t deadline_ms;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int partial; /* spoke, but too little to decide: re-peek on a short timer,
                    since poll() would report the unread bytes forever */
} pending_conn;

int acceptor_listen(const char *ip, int port, int *bound_port, ippc_error *err)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return ippc_error_set(err, ERR_INVALID, "'%s' is not an IPv4 address", ip);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return ippc_error_set(err, ERR_INTERNAL, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 512) < 0) {
        ippc_error_set(err, ERR_UNAVAILABLE, "cannot listen on %s:%d: %s", ip, port,
                       strerror(errno));
        close(fd);
        return -1;
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *bound_port = ntohs(sa.sin_port);
    return fd;
}

static int path_prefix(const char *bytes, size_t len, const char *path)
{
    /* "GET " + path, then ' ', '?' or '/' ends the path. */
    char want[32];
    int n = snprintf(want, sizeof want, "GET %s", path);
    size_t cmp = len < (size_t)n ? len : (size_t)n;
    if (memcmp(bytes, want, cmp) != 0)
        return 0;
    if (len <= (size_t)n)
        return -1;
    char c = bytes[n];
    return c == ' ' || c == '?' || c == '/' ? 1 : 0;
}

int acceptor_classify(const char *bytes, size_t len)
{
    int a = path_prefix(bytes, len, "/engine");
    int b = path_prefix(bytes, len, "/ws");
    if (a == 1 || b == 1)
        return 1;
    if (a == -1 || b == -1)
        return -1;
    return 0;
}

static void hand_over(pending_conn *p, int ws, const acceptor_routes *r)
{
    if (ws)
        r->to_ws(r->arg, p->fd);
    else
        r->to_http(r->arg, p->fd, (struct sockaddr *)&p->addr, p->addr_len);
}

void acceptor_run(int listen_fd, int stop_fd, const acceptor_routes *routes)
{
    static pending_conn pending[MAX_PENDING];
    static struct pollfd fds[MAX_PENDING + 2];
    size_t n_pending = 0;
    for (;;) {
        fds[0] = (struct pollfd){.fd = stop_fd, .events = POLLIN};
        fds[1] = (struct pollfd){.fd = listen_fd, .events = n_pending < MAX_PENDING ? POLLIN : 0};
        int any_partial = 0;
        for (size_t i = 0; i < n_pending; i++) {
            fds[i + 2] =
                (struct pollfd){.fd = pending[i].fd, .events = pending[i].partial ? 0 : POLLIN};
            any_partial |= pending[i].partial;
        }
        int rc = poll(fds, n_pending + 2, any_partial ? 10 : n_pending ? 100 : 1000);
        if (rc < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        int64_t now = hub_now_ms();

        /* Decide for pending connections that spoke, timed out or closed. */
        size_t kept = 0;
        for (size_t i = 0; i < n_pending; i++) {
            pending_conn p = pending[i];
            int decided = 0;
            if (fds[i + 2].revents || p.partial) {
                char buf[32];
                ssize_t got = recv(p.fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
                if (got <= 0 && !(got < 0 && (errno == EAGAIN || errno == EINTR))) {
                    close(p.fd);
                    decided = 1;
                } else if (got > 0) {
                    int kind = acceptor_classify(buf, (size_t)got);
                    if (kind >= 0) {
                        hand_over(&p, kind, routes);
                        decided = 1;
                    } else {
                        p.partial = 1;
                    }
                }
            }
            if (!decided && now >= p.deadline_ms) {
                close(p.fd);
                decided = 1;
            }
            if (!decided)
                pending[kept++] = p;
        }
        n_pending = kept;

        if (fds[1].revents & POLLIN) {
            while (n_pending < MAX_PENDING) {
                pending_conn *p = &pending[n_pending];
                p->addr_len = sizeof p->addr;
                int fd = accept4(listen_fd, (struct sockaddr *)&p->addr, &p->addr_len,
                                 SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0)
                    break;
                /* Messages are a JSON frame plus binary frames: without
                 * NODELAY the second small write waits for a delayed ACK. */
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                p->fd = fd;
                p->partial = 0;
                p->deadline_ms = now + ACCEPTOR_PEEK_TIMEOUT_MS;
                n_pending++;
            }
        }
    }
    for (size_t i = 0; i < n_pending; i++)
        close(pending[i].fd);
}
