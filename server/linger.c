/* linger.c — drains refused sockets before closing them (see linger.h).
 *
 * One thread polls the lingering sockets and an eventfd that linger_add and
 * linger_stop write.  A socket is closed at EOF or a read error, after
 * LINGER_IDLE_MS without data, LINGER_TOTAL_MS after it was added, or once
 * max_bytes were read from it.
 */
#include "linger.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define LINGER_IDLE_MS 2000
#define LINGER_TOTAL_MS 10000

typedef struct lingering {
    int fd;
    size_t read;
    int64_t idle_until, end;
} lingering;

struct linger {
    pthread_t thread;
    int wake_fd;
    size_t max_bytes;
    pthread_mutex_t lock;
    int added[LINGER_MAX]; /* handed over, not yet polled; -1: free */
    int stopping;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads and forgets what is there; 1 when the socket is done with. */
static int drain(linger *l, lingering *s, int64_t now)
{
    static char sink[64 * 1024]; /* only the linger thread reads into it */
    for (;;) {
        ssize_t n = read(s->fd, sink, sizeof sink);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0) /* the client closed, or the socket failed */
            return 1;
        s->read += (size_t)n;
        s->idle_until = now + LINGER_IDLE_MS;
        if (s->read >= l->max_bytes)
            return 1;
    }
}

static void *linger_main(void *arg)
{
    linger *l = arg;
    lingering socks[LINGER_MAX];
    struct pollfd fds[LINGER_MAX + 1];
    size_t n = 0;
    for (;;) {
        int64_t now = now_ms();
        pthread_mutex_lock(&l->lock);
        int stopping = l->stopping;
        for (int i = 0; i < LINGER_MAX; i++) {
            if (l->added[i] < 0)
                continue;
            if (n < LINGER_MAX)
                socks[n++] =
                    (lingering){l->added[i], 0, now + LINGER_IDLE_MS, now + LINGER_TOTAL_MS};
            else
                close(l->added[i]);
            l->added[i] = -1;
        }
        pthread_mutex_unlock(&l->lock);
        if (stopping)
            break;
        int64_t next = now + LINGER_TOTAL_MS;
        for (size_t i = 0; i < n; i++) {
            fds[i] = (struct pollfd){.fd = socks[i].fd, .events = POLLIN};
            int64_t until = socks[i].idle_until < socks[i].end ? socks[i].idle_until : socks[i].end;
            if (until < next)
                next = until;
        }
        fds[n] = (struct pollfd){.fd = l->wake_fd, .events = POLLIN};
        int timeout = next > now ? (int)(next - now) : 0;
        if (poll(fds, n + 1, timeout) < 0 && errno != EINTR)
            break;
        if (fds[n].revents) {
            uint64_t count;
            ssize_t rc = read(l->wake_fd, &count, sizeof count);
            (void)rc;
        }
        now = now_ms();
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            int done = (fds[i].revents && drain(l, &socks[i], now)) || now >= socks[i].idle_until ||
                       now >= socks[i].end;
            if (done)
                close(socks[i].fd);
            else
                socks[kept++] = socks[i];
        }
        n = kept;
    }
    for (size_t i = 0; i < n; i++)
        close(socks[i].fd);
    return NULL;
}

linger *linger_start(size_t max_bytes, ippc_error *err)
{
    linger *l = calloc(1, sizeof *l);
    if (!l) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    l->max_bytes = max_bytes;
    for (int i = 0; i < LINGER_MAX; i++)
        l->added[i] = -1;
    pthread_mutex_init(&l->lock, NULL);
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->wake_fd < 0 || pthread_create(&l->thread, NULL, linger_main, l) != 0) {
        ippc_error_set(err, ERR_INTERNAL, "cannot start the linger thread");
        if (l->wake_fd >= 0)
            close(l->wake_fd);
        pthread_mutex_destroy(&l->lock);
        free(l);
        return NULL;
    }
    pthread_setname_np(l->thread, "ippc-linger");
    return l;
}

void linger_add(linger *l, int fd)
{
    int taken = 0;
    pthread_mutex_lock(&l->lock);
    for (int i = 0; !l->stopping && i < LINGER_MAX && !taken; i++) {
        if (l->added[i] < 0) {
            l->added[i] = fd;
            taken = 1;
        }
    }
    pthread_mutex_unlock(&l->lock);
    if (!taken) {
        close(fd);
        return;
    }
    uint64_t one = 1;
    ssize_t rc = write(l->wake_fd, &one, sizeof one);
    (void)rc;
}

void linger_stop(linger *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    l->stopping = 1;
    pthread_mutex_unlock(&l->lock);
    uint64_t one = 1;
    ssize_t rc = write(l->wake_fd, &one, sizeof one);
    (void)rc;
    pthread_join(l->thread, NULL);
    for (int i = 0; i < LINGER_MAX; i++)
        if (l->added[i] >= 0)
            close(l->added[i]);
    close(l->wake_fd);
    pthread_mutex_destroy(&l->lock);
    free(l);
}
