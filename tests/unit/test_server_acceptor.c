/* test_server_acceptor.c — server/acceptor.c: acceptor_classify, the peek that sends a
 * connection to libwebsockets (1), to libmicrohttpd (0) or waits for more bytes (-1). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_websocket_paths),
        cmocka_unit_test(test_partial_prefixes_wait),
        cmocka_unit_test(test_http_paths),
        cmocka_unit_test(test_garbage_and_empty),
        cmocka_unit_test(test_reads_stay_within_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
