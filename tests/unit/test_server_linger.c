/* test_server_linger.c — server/linger.c: a lingering socket is drained until
 * its peer closes, falls silent or sends too much, and only then closed; the
 * peer sees that as EOF (or a failed write once the byte limit is passed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "linger.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 1 once the other end of peer is closed (EOF), within seconds. */
static int peer_sees_close(int peer, double seconds)
{
    double end = now() + seconds;
    while (now() < end) {
        struct pollfd p = {.fd = peer, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) {
            char c;
            ssize_t n = recv(peer, &c, 1, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN))
                return 1;
        }
    }
    return 0;
}

static void pair(int fds[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
}

/* Everything the peer sends is read; its close ends the lingering at once. */
static void test_drains_until_the_peer_closes(void **state)
{
    (void)state;
    ippc_error err;
    linger *l = linger_start((size_t)64 << 20, &err);
    assert_non_null(l);
    int fds[2];
    pair(fds);
    linger_add(l, fds[0]);
    static char block[256 * 1024];
    size_t sent = 0;
    double end = now() + 10;
    while (sent < ((size_t)8 << 20) && now() < end) {
        ssize_t n = send(fds[1], block, sizeof block, MSG_DONTWAIT);
        if (n > 0)
            sent += (size_t)n;
        else
            usleep(1000);
    }
    assert_true(sent >= ((size_t)8 << 20)); /* the linger side kept reading */
    shutdown(fds[1], SHUT_WR);
    assert_true(peer_sees_close(fds[1], 1.5)); /* well before the idle timeout */
    close(fds[1]);
    linger_stop(l);
}

/* A silent peer is let go after the idle time. */
static void test_silent_peer_is_closed(void **state)
{
    (void)state;
    ippc_error err;
    linger *l = linger_start((size_t)1 << 20, &err);
    int fds[2];
    pair(fds);
    double start = now();
    linger_add(l, fds[0]);
    assert_true(peer_sees_close(fds[1], 5));
    assert_true(now() - start >= 1.5);
    close(fds[1]);
    linger_stop(l);
}

/* Past the byte limit the socket is closed: the peer's writes fail. */
static void test_byte_limit(void **state)
{
    (void)state;
    ippc_error err;
    linger *l = linger_start((size_t)64 * 1024, &err);
    int fds[2];
    pair(fds);
    linger_add(l, fds[0]);
    static char block[16 * 1024];
    int failed = 0;
    double end = now() + 5;
    while (!failed && now() < end) {
        ssize_t n = send(fds[1], block, sizeof block, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN)
            failed = 1;
        else if (n < 0)
            usleep(1000);
    }
    assert_true(failed);
    close(fds[1]);
    linger_stop(l);
}

/* Stopping closes what still lingers. */
static void test_stop_closes_everything(void **state)
{
    (void)state;
    ippc_error err;
    linger *l = linger_start((size_t)1 << 20, &err);
    int a[2], b[2];
    pair(a);
    pair(b);
    linger_add(l, a[0]);
    linger_add(l, b[0]);
    linger_stop(l);
    assert_true(peer_sees_close(a[1], 1));
    assert_true(peer_sees_close(b[1], 1));
    close(a[1]);
    close(b[1]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drains_until_the_peer_closes),
        cmocka_unit_test(test_silent_peer_is_closed),
        cmocka_unit_test(test_byte_limit),
        cmocka_unit_test(test_stop_closes_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
