/* test_server_wsguard.c — server/wsguard.c: wsguard_scan (frame headers of both directions,
 * in any split: the request head skipped, the HTTP answer read, 7/16/64-bit lengths, mask
 * keys, where an unmasked frame starts, where a frame ends) and the relay on socketpairs
 * (bytes pass unchanged both ways; an unmasked client frame never reaches lws and the
 * client gets close 1002 after lws's current frame, never inside it). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsguard.h"

/* A frame: fin + opcode, payload of n bytes (value fill), masked or not. */
static size_t frame(unsigned char *out, int opcode, size_t n, int masked, unsigned char fill)
{
    size_t at = 0;
    out[at++] = (unsigned char)(0x80 | opcode);
    unsigned char bit = masked ? 0x80 : 0;
    if (n < 126) {
        out[at++] = (unsigned char)(bit | n);
    } else if (n < 65536) {
        out[at++] = bit | 126;
        out[at++] = (unsigned char)(n >> 8);
        out[at++] = (unsigned char)n;
    } else {
        out[at++] = bit | 127;
        for (int i = 7; i >= 0; i--)
            out[at++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    if (masked) {
        memcpy(out + at, "\x11\x22\x33\x44", 4);
        at += 4;
    }
    memset(out + at, fill, n);
    return at + n;
}

/* Scans buf in pieces of `piece` bytes; returns the result and the absolute cut. */
static int scan_in_pieces(wsguard_scan_state *s, const unsigned char *buf, size_t len, size_t piece,
                          int require_mask, int stop, size_t *abs_cut)
{
    size_t at = 0;
    while (at < len) {
        size_t n = len - at < piece ? len - at : piece;
        size_t cut = 0;
        int rc = wsguard_scan(s, buf + at, n, require_mask, stop, &cut);
        assert_true(cut <= n);
        if (rc != WSGUARD_SCAN_OK) {
            *abs_cut = at + cut;
            return rc;
        }
        at += n;
    }
    *abs_cut = len;
    return WSGUARD_SCAN_OK;
}

static void test_scan_masked_frames_pass(void **state)
{
    (void)state;
    static unsigned char buf[200000];
    const char *head = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t len = strlen(head);
    memcpy(buf, head, len);
    len += frame(buf + len, 1, 5, 1, 'a');
    len += frame(buf + len, 2, 300, 1, 'b');
    len += frame(buf + len, 2, 70000, 1, 'c');
    len += frame(buf + len, 9, 0, 1, 0); /* a ping */
    size_t pieces[] = {1, 2, 3, 7, 64, 4096, sizeof buf};
    for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
        wsguard_scan_state s = {.skip = strlen(head)};
        size_t cut = 0;
        assert_int_equal(scan_in_pieces(&s, buf, len, pieces[p], 1, 0, &cut), WSGUARD_SCAN_OK);
        assert_int_equal(cut, len);
    }
}

static void test_scan_finds_unmasked_frame(void **state)
{
    (void)state;
    static unsigned char buf[100000];
    size_t first = frame(buf, 1, 10, 1, 'a');
    size_t second = frame(buf + first, 2, 70000, 1, 'b');
    size_t bad_at = first + second;
    size_t len = bad_at + frame(buf + bad_at, 1, 13, 0, 'x');
    size_t pieces[] = {1, 2, 5, 100, sizeof buf};
    for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
        wsguard_scan_state s = {0};
        size_t cut = 0;
        int rc = scan_in_pieces(&s, buf, len, pieces[p], 1, 0, &cut);
        assert_int_equal(rc, WSGUARD_SCAN_UNMASKED);
        /* Cut at the frame's first byte, or at the start of the piece
         * when that byte went by in an earlier one. */
        assert_true(cut == bad_at || (pieces[p] == 1 && cut == bad_at + 1));
    }
    /* The server's direction has no masks, and none are required. */
    wsguard_scan_state s = {0};
    size_t cut = 0;
    unsigned char server[64];
    size_t n = frame(server, 1, 20, 0, 's');
    assert_int_equal(wsguard_scan(&s, server, n, 0, 0, &cut), WSGUARD_SCAN_OK);
    /* An unmasked control frame is refused as well. */
    memset(&s, 0, sizeof s);
    n = frame(server, 9, 0, 0, 0);
    assert_int_equal(wsguard_scan(&s, server, n, 1, 0, &cut), WSGUARD_SCAN_UNMASKED);
    assert_int_equal(cut, 0);
}

static void test_scan_http_answer_and_boundaries(void **state)
{
    (void)state;
    static unsigned char buf[300000];
    const char *answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    size_t head = strlen(answer);
    memcpy(buf, answer, head);
    size_t f1 = frame(buf + head, 1, 100, 0, 'a');
    size_t f2 = frame(buf + head + f1, 2, 200000, 0, 'b');
    size_t len = head + f1 + f2;

    /* Not at a boundary inside the answer head; at one right after it. */
    wsguard_scan_state s = {.http_answer = 1};
    size_t cut = 0;
    assert_int_equal(wsguard_scan(&s, buf, 10, 0, 1, &cut), WSGUARD_SCAN_OK);
    assert_int_equal(wsguard_scan(&s, buf + 10, len - 10, 0, 1, &cut), WSGUARD_SCAN_BOUNDARY);
    assert_int_equal(10 + cut, head);
    assert_true(s.upgraded);

    /* In the middle of the big frame, the boundary is where it ends. */
    memset(&s, 0, sizeof s);
    s.http_answer = 1;
    assert_int_equal(wsguard_scan(&s, buf, head + f1 + 1000, 0, 0, &cut), WSGUARD_SCAN_OK);
    assert_int_equal(wsguard_scan(&s, buf + head + f1 + 1000, len - head - f1 - 1000, 0, 1, &cut),
                     WSGUARD_SCAN_BOUNDARY);
    assert_int_equal(head + f1 + 1000 + cut, len);
    /* And with nothing more to read, a scanner between frames is at one. */
    assert_int_equal(wsguard_scan(&s, NULL, 0, 0, 1, &cut), WSGUARD_SCAN_BOUNDARY);

    /* An answer other than 101: no frames follow. */
    memset(&s, 0, sizeof s);
    s.http_answer = 1;
    const char *refused = "HTTP/1.0 401 Unauthorized\r\nContent-Length: 3\r\n\r\nno!";
    assert_int_equal(wsguard_scan(&s, (const unsigned char *)refused, strlen(refused), 0, 0, &cut),
                     WSGUARD_SCAN_NOT_UPGRADED);
    assert_int_equal(cut, strlen(refused) - 3);
    assert_false(s.upgraded);
}

/* ------------------------------------------------------------ the relay */

typedef struct relay {
    wsguard *g;
    int client; /* the test's end of the "client" connection */
    int lws;    /* what lws would get */
} relay;

static const char request[] = "GET /ws?token=t HTTP/1.1\r\nHost: x\r\n\r\n";
static const char answer101[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

static void send_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        poll(&pf, 1, 5000);
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        assert_true(k > 0);
        b += k;
        n -= (size_t)k;
    }
}

/* Reads exactly n bytes (5 s at most). */
static void recv_exact(int fd, unsigned char *out, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        assert_true(poll(&pf, 1, 5000) == 1);
        ssize_t k = recv(fd, out + got, n - got, MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        assert_true(k > 0);
        got += (size_t)k;
    }
}

/* Reads until the other end closes (5 s at most); returns the byte count. */
static size_t recv_to_end(int fd, unsigned char *out, size_t cap)
{
    size_t got = 0;
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        assert_true(poll(&pf, 1, 5000) == 1);
        ssize_t k = recv(fd, out + got, cap - got, MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (k <= 0)
            return got;
        got += (size_t)k;
        assert_true(got < cap);
    }
}

static int setup_relay(void **state)
{
    relay *r = calloc(1, sizeof *r);
    ippc_error err = {{0}, {0}};
    int pair[2] = {-1, -1};
    if (!r || socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0)
        goto fail;
    r->g = wsguard_start(&err);
    if (!r->g)
        goto fail;
    r->client = pair[0];
    /* The client's request head, as the acceptor leaves it: unread. */
    send_all(r->client, request, strlen(request));
    r->lws = wsguard_add(r->g, pair[1], strlen(request));
    pair[1] = -1; /* wsguard_add took it, and closed it if it failed */
    if (r->lws < 0)
        goto fail;
    /* lws reads the head and upgrades. */
    unsigned char head[sizeof request];
    recv_exact(r->lws, head, strlen(request));
    assert_memory_equal(head, request, strlen(request));
    send_all(r->lws, answer101, strlen(answer101));
    unsigned char got[sizeof answer101];
    recv_exact(r->client, got, strlen(answer101));
    assert_memory_equal(got, answer101, strlen(answer101));
    *state = r;
    return 0;
fail:
    if (pair[0] >= 0)
        close(pair[0]);
    if (pair[1] >= 0)
        close(pair[1]);
    if (r && r->g)
        wsguard_stop(r->g);
    free(r);
    return -1;
}

static int teardown_relay(void **state)
{
    relay *r = *state;
    close(r->client);
    close(r->lws);
    wsguard_stop(r->g);
    free(r);
    return 0;
}

static void test_relay_passes_frames_both_ways(void **state)
{
    relay *r = *state;
    static unsigned char out[300000], in[300000];
    size_t n = frame(out, 2, 250000, 1, 'm');
    send_all(r->client, out, n);
    recv_exact(r->lws, in, n);
    assert_memory_equal(in, out, n);
    n = frame(out, 1, 200000, 0, 's');
    send_all(r->lws, out, n);
    recv_exact(r->client, in, n);
    assert_memory_equal(in, out, n);
    assert_int_equal(wsguard_connections(r->g), 1);
    /* The client leaves: lws sees the end, then the relay lets go. */
    shutdown(r->client, SHUT_WR);
    assert_int_equal(recv_to_end(r->lws, in, sizeof in), 0);
}

static void expect_close_1002(const unsigned char *p)
{
    assert_int_equal(p[0], 0x88);
    assert_true(p[1] >= 2 && p[1] < 126);
    assert_int_equal(p[2] << 8 | p[3], 1002);
}

/* Regression (issue 8, item 6): libwebsockets 4.1 accepted unmasked client frames. */
static void test_bug_unmasked_frame_closed_1002(void **state)
{
    relay *r = *state;
    unsigned char out[256], in[4096];
    size_t ok = frame(out, 1, 13, 1, 'a');
    size_t bad = frame(out + ok, 1, 13, 0, 'x');
    send_all(r->client, out, ok + bad);
    size_t got = recv_to_end(r->client, in, sizeof in);
    assert_true(got >= 4);
    expect_close_1002(in);
    assert_int_equal(got, 2 + in[1]);
    /* lws sees the connection end; nothing of the unmasked frame reached it
     * (the masked one before it may have, or not: the connection failed). */
    got = recv_to_end(r->lws, in, sizeof in);
    assert_true(got == 0 || got == ok);
    if (got)
        assert_memory_equal(in, out, ok);
}

/* The close goes after the frame lws is writing, never inside it, and nothing of lws's
 * later frames follows it. */
static void test_close_waits_for_the_frame_in_flight(void **state)
{
    relay *r = *state;
    static unsigned char big[150000], in[300000];
    size_t n = frame(big, 2, 140000, 0, 'z');
    send_all(r->lws, big, 1000); /* lws is in the middle of a frame */
    unsigned char bad[64];
    size_t b = frame(bad, 1, 4, 0, 'x');
    send_all(r->client, bad, b);
    usleep(100 * 1000);
    send_all(r->lws, big + 1000, n - 1000);
    unsigned char next[64];
    size_t m = frame(next, 1, 10, 0, 'n');
    (void)send(r->lws, next, m, MSG_NOSIGNAL); /* may fail: the relay drops lws */
    size_t got = recv_to_end(r->client, in, sizeof in);
    assert_true(got >= n + 4);
    assert_memory_equal(in, big, n);
    expect_close_1002(in + n);
    assert_int_equal(got, n + 2 + in[n + 1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_masked_frames_pass),
        cmocka_unit_test(test_scan_finds_unmasked_frame),
        cmocka_unit_test(test_scan_http_answer_and_boundaries),
        cmocka_unit_test_setup_teardown(test_relay_passes_frames_both_ways, setup_relay,
                                        teardown_relay),
        cmocka_unit_test_setup_teardown(test_bug_unmasked_frame_closed_1002, setup_relay,
                                        teardown_relay),
        cmocka_unit_test_setup_teardown(test_close_waits_for_the_frame_in_flight, setup_relay,
                                        teardown_relay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
