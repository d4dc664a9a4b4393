/* test_server_acceptor.c — server/acceptor.c: acceptor_classify, the peek that sends a
 * connection to libwebsockets (1), to libmicrohttpd (0) or waits for more bytes (-1). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "acceptor.h"

static int classify(const char *s)
{
    return acceptor_classify(s, strlen(s));
}

static void expect_kind(const char *s, int want)
{
    int got = classify(s);
    if (got != want)
        print_error("classify(\"%s\") = %d, want %d\n", s, got, want);
    assert_int_equal(got, want);
}

static void test_websocket_paths(void **state)
{
    (void)state;
    expect_kind("GET /engine HTTP/1.1\r\nHost: x\r\n", 1);
    expect_kind("GET /engine HTTP/1.1", 1);
    expect_kind("GET /engine ", 1);
    expect_kind("GET /engine?x=1 HTTP/1.1", 1);
    expect_kind("GET /engine/ HTTP/1.1", 1);
    expect_kind("GET /ws?token=x HTTP/1.1", 1);
    expect_kind("GET /ws?token=x", 1);
    expect_kind("GET /ws/ HTTP/1.1", 1);
    expect_kind("GET /ws/", 1);
    expect_kind("GET /ws HTTP/1.1", 1);
}

/* The acceptor peeks at most 32 bytes: a request line cut anywhere before the
 * character after the path cannot be decided yet. */
static void test_partial_prefixes_wait(void **state)
{
    (void)state;
    const char *lines[] = {"GET /engine HTTP/1.1", "GET /ws?token=x"};
    for (size_t l = 0; l < 2; l++) {
        const char *line = lines[l];
        size_t decide = strcspn(line + 5, " ?/") + 5; /* index of the path's end */
        for (size_t n = 1; n <= decide; n++) {
            int got = acceptor_classify(line, n);
            if (got != -1)
                print_error("classify(\"%.*s\") = %d, want -1\n", (int)n, line, got);
            assert_int_equal(got, -1);
        }
        assert_int_equal(acceptor_classify(line, decide + 1), 1);
    }
    expect_kind("GE", -1);
    expect_kind("G", -1);
    expect_kind("GET", -1);
    expect_kind("GET ", -1);
    expect_kind("GET /", -1);
    expect_kind("GET /eng", -1);
    expect_kind("GET /engine", -1);
    expect_kind("GET /w", -1);
    expect_kind("GET /ws", -1);
}

static void test_http_paths(void **state)
{
    (void)state;
    expect_kind("GET /engines HTTP/1.1", 0);
    expect_kind("GET /engines", 0);
    expect_kind("GET /enginex", 0);
    expect_kind("GET /wss HTTP/1.1", 0);
    expect_kind("GET /ws2", 0);
    expect_kind("POST /engine HTTP/1.1", 0);
    expect_kind("POST /ws HTTP/1.1", 0);
    expect_kind("PUT /ws/ HTTP/1.1", 0);
    expect_kind("GET /api/v1/info HTTP/1.1", 0);
    expect_kind("GET /api/v1/engines HTTP/1.1", 0);
    expect_kind("GET / HTTP/1.1", 0);
    expect_kind("GET /Engine HTTP/1.1", 0);
    expect_kind("get /engine HTTP/1.1", 0);
    expect_kind("GET  /engine HTTP/1.1", 0);
    expect_kind("GET /engine\r\n", 0);
    expect_kind("GET /api/v1/engine HTTP/1.1", 0);
    expect_kind("HEAD /ws HTTP/1.1", 0);
}

static void test_garbage_and_empty(void **state)
{
    (void)state;
    /* No bytes yet: nothing can be decided (the acceptor never asks, but the
     * answer must still be safe). */
    assert_int_equal(acceptor_classify("", 0), -1);
    expect_kind("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0); /* a TLS ClientHello */
    expect_kind("\r\n\r\n", 0);
    expect_kind("xyz", 0);
    expect_kind("SSH-2.0-OpenSSH_9.2", 0);
    const char nul[] = {'G', 'E', 'T', ' ', '/', '\0', 'w', 's', ' '};
    assert_int_equal(acceptor_classify(nul, sizeof nul), 0);
    const char nul_path[] = {'G', 'E', 'T', ' ', '/', 'w', 's', '\0'};
    assert_int_equal(acceptor_classify(nul_path, sizeof nul_path), 0);
    /* Binary noise of every length up to the peek size decides without reading
     * past len (ASan checks the reads). */
    char noise[32];
    for (size_t i = 0; i < sizeof noise; i++)
        noise[i] = (char)(0xA5 ^ (i * 37));
    for (size_t n = 1; n <= sizeof noise; n++)
        assert_int_equal(acceptor_classify(noise, n), 0);
}

/* Exactly-sized heap copies: a read one byte past len would be caught by ASan. */
static void test_reads_stay_within_len(void **state)
{
    (void)state;
    const char *lines[] = {"GET /engine HTTP/1.1", "GET /ws?token=x", "GET /engines", "POST /"};
    for (size_t l = 0; l < 4; l++) {
        size_t len = strlen(lines[l]);
        for (size_t n = 1; n <= len; n++) {
            char *copy = test_malloc(n);
            memcpy(copy, lines[l], n);
            int kind = acceptor_classify(copy, n);
            assert_true(kind >= -1 && kind <= 1);
            test_free(copy);
        }
    }
}

/* ------------------------------------------------ acceptor_run on loopback */

/* What the routes received, in order. */
typedef struct handed {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int fds[16];
    int ws[16];
    int n;
} handed;

static void record(handed *h, int fd, int ws)
{
    pthread_mutex_lock(&h->lock);
    if (h->n < 16) {
        h->fds[h->n] = fd;
        h->ws[h->n] = ws;
        h->n++;
    } else {
        close(fd);
    }
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static void to_http(void *arg, int fd, const struct sockaddr *addr, socklen_t len)
{
    assert_non_null(addr);
    assert_true(len >= (socklen_t)sizeof(struct sockaddr_in));
    assert_int_equal(addr->sa_family, AF_INET);
    record(arg, fd, 0);
}

static void to_ws(void *arg, int fd)
{
    record(arg, fd, 1);
}

/* Waits up to 5 s for the n-th hand-over; returns its index or -1. */
static int wait_handed(handed *h, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&h->lock);
    while (h->n < n)
        if (pthread_cond_timedwait(&h->cond, &h->lock, &until) == ETIMEDOUT)
            break;
    int got = h->n >= n ? n - 1 : -1;
    pthread_mutex_unlock(&h->lock);
    return got;
}

typedef struct run_args {
    int listen_fd, stop_fd;
    acceptor_routes routes;
} run_args;

static void *run_thread(void *arg)
{
    run_args *a = arg;
    acceptor_run(a->listen_fd, a->stop_fd, &a->routes);
    return NULL;
}

typedef struct live_acceptor {
    handed h;
    run_args args;
    int port;
    int stop_pipe[2];
    pthread_t thread;
} live_acceptor;

static int setup_live(void **state)
{
    live_acceptor *l = calloc(1, sizeof *l);
    if (!l)
        return -1;
    pthread_mutex_init(&l->h.lock, NULL);
    pthread_cond_init(&l->h.cond, NULL);
    ippc_error err = {{0}, {0}};
    l->args.listen_fd = acceptor_listen("127.0.0.1", 0, &l->port, &err);
    if (l->args.listen_fd < 0 || l->port <= 0 || pipe(l->stop_pipe) < 0)
        return -1;
    l->args.stop_fd = l->stop_pipe[0];
    l->args.routes = (acceptor_routes){.to_http = to_http, .to_ws = to_ws, .arg = &l->h};
    if (pthread_create(&l->thread, NULL, run_thread, &l->args) != 0)
        return -1;
    *state = l;
    return 0;
}

static int teardown_live(void **state)
{
    live_acceptor *l = *state;
    assert_int_equal(write(l->stop_pipe[1], "x", 1), 1);
    pthread_join(l->thread, NULL);
    close(l->args.listen_fd);
    close(l->stop_pipe[0]);
    close(l->stop_pipe[1]);
    for (int i = 0; i < l->h.n; i++)
        close(l->h.fds[i]);
    pthread_cond_destroy(&l->h.cond);
    pthread_mutex_destroy(&l->h.lock);
    free(l);
    return 0;
}

static int client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void say(int fd, const char *text)
{
    assert_int_equal(send(fd, text, strlen(text), 0), (ssize_t)strlen(text));
}

/* The handed socket still holds every byte the client sent (peeking consumed
 * nothing). */
static void expect_unread(int fd, const char *text)
{
    char buf[256];
    size_t want = strlen(text), got = 0;
    while (got < want) {
        ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            usleep(1000);
            continue;
        }
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_int_equal(got, want);
    assert_memory_equal(buf, text, want);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void test_run_routes_by_request_line(void **state)
{
    live_acceptor *l = *state;
    /* A silent client first: it must not hold up the ones behind it. */
    int silent = client(l->port);
    int gone = client(l->port);
    close(gone); /* closes without a word: dropped, never handed over */

    int rest = client(l->port);
    say(rest, "GET /api/v1/info HTTP/1.1\r\nHost: x\r\n\r\n");
    int i = wait_handed(&l->h, 1);
    assert_int_equal(i, 0);
    assert_int_equal(l->h.ws[i], 0);
    expect_unread(l->h.fds[i], "GET /api/v1/info HTTP/1.1\r\nHost: x\r\n\r\n");

    int engine = client(l->port);
    say(engine, "GET /engine HTTP/1.1\r\n");
    i = wait_handed(&l->h, 2);
    assert_int_equal(i, 1);
    assert_int_equal(l->h.ws[i], 1);
    expect_unread(l->h.fds[i], "GET /engine HTTP/1.1\r\n");

    /* Spoken in pieces: undecided after "GET /e", decided after the path. */
    int slow = client(l->port);
    say(slow, "GET /e");
    sleep_ms(100);
    pthread_mutex_lock(&l->h.lock);
    assert_int_equal(l->h.n, 2);
    pthread_mutex_unlock(&l->h.lock);
    say(slow, "ngine?x=1 HTTP/1.1\r\n");
    i = wait_handed(&l->h, 3);
    assert_int_equal(i, 2);
    assert_int_equal(l->h.ws[i], 1);
    expect_unread(l->h.fds[i], "GET /engine?x=1 HTTP/1.1\r\n");

    int ws = client(l->port);
    say(ws, "GET /ws?token=x HTTP/1.1\r\n");
    i = wait_handed(&l->h, 4);
    assert_int_equal(i, 3);
    assert_int_equal(l->h.ws[i], 1);

    pthread_mutex_lock(&l->h.lock);
    assert_int_equal(l->h.n, 4); /* the silent and the closed one: not handed */
    pthread_mutex_unlock(&l->h.lock);
    close(silent);
    close(rest);
    close(engine);
    close(slow);
    close(ws);
}

/* Regression (was a bug): accepted sockets kept Nagle's algorithm.  An engine message with a
 * blob is a JSON frame then a binary frame, two small writes: the second
 * waits for the engine's delayed ACK, ~40 ms per message (measured by
 * `make bench`: push [1,2,3] 44 ms vs a scalar 0.46 ms; TCP_NODELAY after
 * accept4 in acceptor_run brings it to 0.36 ms). */
static void test_bug_engine_sockets_without_nodelay(void **state)
{
    live_acceptor *l = *state;
    int engine = client(l->port);
    say(engine, "GET /engine HTTP/1.1\r\n");
    int i = wait_handed(&l->h, 1);
    assert_int_equal(i, 0);
    int nodelay = 0;
    socklen_t len = sizeof nodelay;
    assert_int_equal(getsockopt(l->h.fds[i], IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
    close(engine);
    assert_int_not_equal(nodelay, 0);
}

static void test_listen_errors(void **state)
{
    (void)state;
    int port = 0;
    ippc_error err = {{0}, {0}};
    assert_int_equal(acceptor_listen("not-an-ip", 0, &port, &err), -1);
    assert_string_equal(err.code, ERR_INVALID);
    memset(&err, 0, sizeof err);
    assert_int_equal(acceptor_listen("::1", 0, &port, &err), -1);
    assert_string_equal(err.code, ERR_INVALID);

    int fd = acceptor_listen("127.0.0.1", 0, &port, &err);
    assert_true(fd >= 0);
    assert_true(port > 0);
    int port2 = 0;
    memset(&err, 0, sizeof err);
    assert_int_equal(acceptor_listen("127.0.0.1", port, &port2, &err), -1);
    assert_string_equal(err.code, ERR_UNAVAILABLE);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_websocket_paths),
        cmocka_unit_test(test_partial_prefixes_wait),
        cmocka_unit_test(test_http_paths),
        cmocka_unit_test(test_garbage_and_empty),
        cmocka_unit_test(test_reads_stay_within_len),
        cmocka_unit_test(test_listen_errors),
        cmocka_unit_test_setup_teardown(test_run_routes_by_request_line, setup_live, teardown_live),
        cmocka_unit_test_setup_teardown(test_bug_engine_sockets_without_nodelay, setup_live,
                                        teardown_live),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
