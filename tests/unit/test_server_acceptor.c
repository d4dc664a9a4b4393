/* test_server_acceptor.c — server/acceptor.c: acceptor_classify (the first request head:
 * hand to libmicrohttpd, to libwebsockets, refuse, or wait for more), acceptor_answer (the
 * JSON refusal), and acceptor_run on loopback (routing, refusals on the wire, the head
 * timeout, the caps that drop the oldest silent connection and never the newcomer). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <jansson.h>

#include "acceptor.h"
#include "proto.h"

#define TOKEN "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
#define KEY "e46e0000e46e0000e46e0000e46e0000e46e0000e46e0000e46e0000e46e0000"
#define WSKEY "dGhlIHNhbXBsZSBub25jZQ=="

static const acceptor_secrets secrets = {.token = TOKEN, .engine_key = KEY};

static acceptor_kind classify(const char *s, acceptor_verdict *v)
{
    return acceptor_classify(s, strlen(s), &secrets, v);
}

/* A WebSocket upgrade to path with extra header lines (each ending in CRLF). */
static char *upgrade(const char *path, const char *extra)
{
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: " WSKEY "\r\n"
             "Sec-WebSocket-Version: 13\r\n%s\r\n",
             path, extra);
    return buf;
}

static void expect_status(const char *request, int status, const char *code)
{
    acceptor_verdict v;
    acceptor_kind kind = classify(request, &v);
    if (kind != ACCEPTOR_REFUSE || v.status != status)
        print_error("classify(%s) = kind %d status %d (%s), want %d\n", request, kind, v.status,
                    v.message, status);
    assert_int_equal(kind, ACCEPTOR_REFUSE);
    assert_int_equal(v.status, status);
    assert_string_equal(v.code, code);
    assert_true(strlen(v.message) > 10);
}

static void expect_kind(const char *request, acceptor_kind want)
{
    acceptor_verdict v;
    acceptor_kind kind = classify(request, &v);
    if (kind != want)
        print_error("classify(%s) = %d (%d %s), want %d\n", request, kind, v.status, v.message,
                    want);
    assert_int_equal(kind, want);
    if (want == ACCEPTOR_HTTP || want == ACCEPTOR_WS_CLIENT || want == ACCEPTOR_WS_ENGINE)
        assert_int_equal(v.head_len, strlen(request));
}

static void test_client_upgrade_with_each_credential(void **state)
{
    (void)state;
    expect_kind(upgrade("/ws", "Authorization: Bearer " TOKEN "\r\n"), ACCEPTOR_WS_CLIENT);
    /* The scheme in any case (RFC 7235), spaces around the credential. */
    expect_kind(upgrade("/ws", "authorization: bearer   " TOKEN "  \r\n"), ACCEPTOR_WS_CLIENT);
    expect_kind(upgrade("/ws", "AUTHORIZATION: BEARER " TOKEN "\r\n"), ACCEPTOR_WS_CLIENT);
    expect_kind(upgrade("/ws?token=" TOKEN, ""), ACCEPTOR_WS_CLIENT);
    expect_kind(upgrade("/ws?x=1&token=" TOKEN "&y", ""), ACCEPTOR_WS_CLIENT);
    char path[160];
    snprintf(path, sizeof path, "/ws?token=%%63%s", TOKEN + 1); /* %63 = 'c' */
    expect_kind(upgrade(path, ""), ACCEPTOR_WS_CLIENT);
    expect_kind(upgrade("/ws", "Sec-WebSocket-Protocol: ippc.client.v1, ippc.token." TOKEN "\r\n"),
                ACCEPTOR_WS_CLIENT);
    expect_kind(upgrade("/ws", "Sec-WebSocket-Protocol: ippc.client.v1\r\nAuthorization: "
                               "Bearer " TOKEN "\r\n"),
                ACCEPTOR_WS_CLIENT);
    /* LF-only line ends are tolerated. */
    expect_kind("GET /ws?token=" TOKEN " HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: "
                "keep-alive, Upgrade\nSec-WebSocket-Key: " WSKEY "\nSec-WebSocket-Version: 13\n\n",
                ACCEPTOR_WS_CLIENT);
}

static void test_engine_upgrade_needs_the_key(void **state)
{
    (void)state;
    const char *prot = "Sec-WebSocket-Protocol: ippc.engine.v1\r\n";
    char extra[512];
    snprintf(extra, sizeof extra, "%sAuthorization: Bearer " KEY "\r\n", prot);
    expect_kind(upgrade("/engine", extra), ACCEPTOR_WS_ENGINE);
    expect_status(upgrade("/engine", prot), 401, ERR_UNAUTHORIZED);
    snprintf(extra, sizeof extra, "%sAuthorization: Bearer " TOKEN "\r\n", prot);
    expect_status(upgrade("/engine", extra), 401, ERR_UNAUTHORIZED); /* the client token */
    snprintf(extra, sizeof extra, "%sAuthorization: Bearer " KEY "0\r\n", prot);
    expect_status(upgrade("/engine", extra), 401, ERR_UNAUTHORIZED);
    /* Without its subprotocol lws would give it to the client protocol. */
    expect_status(upgrade("/engine", "Authorization: Bearer " KEY "\r\n"), 400, ERR_BAD_REQUEST);
    /* The 401 carries the challenge. */
    acceptor_verdict v;
    classify(upgrade("/engine", prot), &v);
    assert_non_null(strstr(v.extra_headers, "WWW-Authenticate: Bearer"));
}

/* Regression (issue 8, items 1 and 3): the curl of the report — an upgrade naming the engine
 * subprotocol on /ws with no credential — reached libwebsockets.  Now refused before. */
static void test_bug_engine_subprotocol_without_credential(void **state)
{
    (void)state;
    expect_status(upgrade("/ws", "Sec-WebSocket-Protocol: ippc.engine.v1\r\n"), 401,
                  ERR_UNAUTHORIZED);
    expect_status(upgrade("/ws", "Sec-WebSocket-Protocol: ippc.engine.v1\r\nAuthorization: "
                                 "Bearer " TOKEN "\r\n"),
                  400, ERR_BAD_REQUEST);
    expect_status(upgrade("/ws", ""), 401, ERR_UNAUTHORIZED);
    expect_status(upgrade("/ws", "Authorization: Bearer " KEY "\r\n"), 401, ERR_UNAUTHORIZED);
    expect_status(upgrade("/ws", "Authorization: Basic " TOKEN "\r\n"), 401, ERR_UNAUTHORIZED);
    expect_status(upgrade("/ws", "Authorization: Bearer\r\n"), 401, ERR_UNAUTHORIZED);
    expect_status(upgrade("/ws?token=", ""), 401, ERR_UNAUTHORIZED);
    expect_status(upgrade("/ws?token=" TOKEN "0", ""), 401, ERR_UNAUTHORIZED);
    expect_status(upgrade("/ws?token=%zz", ""), 401, ERR_UNAUTHORIZED);
}

static void test_subprotocol_lists(void **state)
{
    (void)state;
    /* lws 4.1 reads at most 63 bytes per entry before the one it knows, and
     * 127 in all; it drops the connection without an answer otherwise. */
    expect_status(upgrade("/ws?token=" TOKEN,
                          "Sec-WebSocket-Protocol: ippc.token." TOKEN ", ippc.client.v1\r\n"),
                  400, ERR_BAD_REQUEST);
    expect_status(upgrade("/ws", "Sec-WebSocket-Protocol: ippc.token." TOKEN "\r\n"), 400,
                  ERR_BAD_REQUEST);
    expect_status(upgrade("/ws?token=" TOKEN, "Sec-WebSocket-Protocol: chat\r\n"), 400,
                  ERR_BAD_REQUEST);
    expect_status(upgrade("/ws?token=" TOKEN, "Sec-WebSocket-Protocol: 1x, ippc.client.v1\r\n"),
                  400, ERR_BAD_REQUEST);
    expect_status(upgrade("/ws?token=" TOKEN, "Sec-WebSocket-Protocol: ippc.client.v1\r\n"
                                              "Sec-WebSocket-Protocol: ippc.client.v1\r\n"),
                  400, ERR_BAD_REQUEST);
    char longlist[400];
    snprintf(longlist, sizeof longlist,
             "Sec-WebSocket-Protocol: ippc.client.v1, ippc.token." TOKEN ", x" TOKEN "\r\n");
    expect_status(upgrade("/ws?token=" TOKEN, longlist), 400, ERR_BAD_REQUEST);
    expect_kind(upgrade("/ws?token=" TOKEN, "Sec-WebSocket-Protocol: chat, ippc.client.v1\r\n"),
                ACCEPTOR_WS_CLIENT);
}

static void test_bad_upgrades(void **state)
{
    (void)state;
    /* Regression (issue 8, item 7): a plain GET /ws got libwebsockets' HTML 404. */
    expect_status("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426, ERR_UPGRADE_REQUIRED);
    expect_status("GET /ws?token=" TOKEN " HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n", 426,
                  ERR_UPGRADE_REQUIRED);
    expect_status("GET /engine HTTP/1.1\r\nHost: x\r\n\r\n", 426, ERR_UPGRADE_REQUIRED);
    expect_status("GET /ws/x HTTP/1.1\r\nHost: x\r\n\r\n", 404, ERR_NOT_FOUND);
    expect_status(upgrade("/engine/", ""), 404, ERR_NOT_FOUND);
    expect_status(upgrade("/ws/stream?token=" TOKEN, ""), 404, ERR_NOT_FOUND);
    expect_status("POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, ERR_METHOD);
    expect_status("HEAD /engine HTTP/1.1\r\nHost: x\r\n\r\n", 405, ERR_METHOD);
    const char *auth = "Authorization: Bearer " TOKEN "\r\n";
    char req[2048];
    snprintf(req, sizeof req,
             "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " WSKEY "\r\nSec-WebSocket-Version: 8\r\n%s\r\n",
             auth);
    expect_status(req, 426, ERR_UPGRADE_REQUIRED);
    snprintf(req, sizeof req,
             "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
             "Sec-WebSocket-Key: " WSKEY "\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             auth);
    expect_status(req, 400, ERR_BAD_REQUEST);
    snprintf(req, sizeof req,
             "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\n%s\r\n",
             auth);
    expect_status(req, 400, ERR_BAD_REQUEST); /* no key */
    const char *bad_keys[] = {"abc", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZR==",
                              "dGhlIHNhbXBsZSBub25jZ*==", "dGhlIHNhbXBsZSBub25jZQ==x"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
        snprintf(req, sizeof req,
                 "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                 bad_keys[i], auth);
        expect_status(req, 400, ERR_BAD_REQUEST);
    }
    snprintf(req, sizeof req,
             "GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " WSKEY "\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             auth);
    expect_status(req, 400, ERR_BAD_REQUEST);
    snprintf(req, sizeof req,
             "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " WSKEY "\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             auth);
    expect_status(req, 400, ERR_BAD_REQUEST); /* no Host */
    snprintf(req, sizeof req, "%sAuthorization: Bearer " TOKEN "\r\n", auth);
    expect_status(upgrade("/ws", req), 400, ERR_BAD_REQUEST); /* Authorization twice */
}

static void test_http_requests(void **state)
{
    (void)state;
    expect_kind("GET /api/v1/info HTTP/1.1\r\nHost: x\r\n\r\n", ACCEPTOR_HTTP);
    expect_kind("GET /api/v1/info HTTP/1.0\r\n\r\n", ACCEPTOR_HTTP);
    expect_kind("POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n",
                ACCEPTOR_HTTP);
    expect_kind("GET / HTTP/1.1\r\nhost: x\r\nX-Empty:\r\nX-Tab:\ta\tb\r\n\r\n", ACCEPTOR_HTTP);
    expect_kind("GET /wss HTTP/1.1\r\nHost: x\r\n\r\n", ACCEPTOR_HTTP);
    expect_kind("GET /engines HTTP/1.1\r\nHost: x\r\n\r\n", ACCEPTOR_HTTP);
    expect_kind("GET /Ws HTTP/1.1\r\nHost: x\r\n\r\n", ACCEPTOR_HTTP);
    expect_kind("GET /api/v1/engine HTTP/1.1\r\nHost: x\r\n\r\n", ACCEPTOR_HTTP);
    /* Bytes after the head (a body, a pipelined request) are the handler's. */
    acceptor_verdict v;
    const char *req = "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    assert_int_equal(classify(req, &v), ACCEPTOR_HTTP);
    assert_int_equal(v.head_len, strlen(req) - 3);
}

static void test_malformed_heads(void **state)
{
    (void)state;
    const char *bad[] = {
        "GET  /x HTTP/1.1\r\n\r\n",
        "GET /x  HTTP/1.1\r\n\r\n",
        "GET /x HTTP/1.1 \r\n\r\n",
        "GET /x\r\n\r\n",
        "GET /x HTTP/2.0\r\nHost: x\r\n\r\n",
        "GET /x HTTP/1.2\r\nHost: x\r\n\r\n",
        "GET /x http/1.1\r\n\r\n",
        " GET /x HTTP/1.1\r\n\r\n",
        "\r\nGET /x HTTP/1.1\r\n\r\n",
        "G(T /x HTTP/1.1\r\n\r\n",
        "GET /a\rb HTTP/1.1\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost\r\n\r\n",
        "GET /x HTTP/1.1\r\n: x\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\x01\r\n\r\n",
        "GET /x HTTP/1.1\r\n\r\r\n\r\n",
        "GET /x HTTP/1.1\r\n\r\n", /* HTTP/1.1 without Host */
        "GET /x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS ClientHello */
        "SSH-2.0-OpenSSH_9.2\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect_status(bad[i], 400, ERR_BAD_REQUEST);
    /* Decided as soon as the bytes are wrong, without waiting for more. */
    expect_status("\x16\x03", 400, ERR_BAD_REQUEST);
    expect_status("GET /x\x01", 400, ERR_BAD_REQUEST);
    const char nul[] = {'G', 'E', 'T', ' ', '/', '\0', 'w', 's', ' '};
    acceptor_verdict v;
    assert_int_equal(acceptor_classify(nul, sizeof nul, &secrets, &v), ACCEPTOR_REFUSE);
    assert_int_equal(v.status, 400);
}

static void test_limits(void **state)
{
    (void)state;
    size_t n = IPPC_MAX_REQUEST_HEAD + 4096;
    char *req = malloc(n + 1);
    assert_non_null(req);
    acceptor_verdict v;

    /* A request line of exactly IPPC_MAX_REQUEST_LINE bytes passes; one more is 414,
     * decided before the line ends. */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t line = IPPC_MAX_REQUEST_LINE + extra;
        memcpy(req, "GET /", 5);
        memset(req + 5, 'a', line - 5 - 9);
        memcpy(req + line - 9, " HTTP/1.1", 9);
        strcpy(req + line, "\r\nHost: x\r\n\r\n");
        acceptor_kind kind = acceptor_classify(req, strlen(req), &secrets, &v);
        if (extra == 0) {
            assert_int_equal(kind, ACCEPTOR_HTTP);
        } else {
            assert_int_equal(kind, ACCEPTOR_REFUSE);
            assert_int_equal(v.status, 414);
            assert_string_equal(v.code, ERR_URI_TOO_LONG);
            /* No terminator at all, as soon as the line cannot fit. */
            assert_int_equal(acceptor_classify(req, IPPC_MAX_REQUEST_LINE, &secrets, &v),
                             ACCEPTOR_NEED_MORE);
            assert_int_equal(acceptor_classify(req, IPPC_MAX_REQUEST_LINE + 1, &secrets, &v),
                             ACCEPTOR_REFUSE);
            assert_int_equal(v.status, 414);
        }
    }

    /* A head of exactly IPPC_MAX_REQUEST_HEAD bytes passes; one more is 431. */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t head = IPPC_MAX_REQUEST_HEAD + extra;
        const char *start = "GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        size_t sl = strlen(start);
        memcpy(req, start, sl);
        memset(req + sl, 'p', head - sl - 4);
        memcpy(req + head - 4, "\r\n\r\n", 5);
        acceptor_kind kind = acceptor_classify(req, head, &secrets, &v);
        if (extra == 0) {
            assert_int_equal(kind, ACCEPTOR_HTTP);
            assert_int_equal(v.head_len, head);
        } else {
            assert_int_equal(kind, ACCEPTOR_REFUSE);
            assert_int_equal(v.status, 431);
            assert_string_equal(v.code, ERR_HEADERS_TOO_LARGE);
        }
    }
    /* Many short headers count the same. */
    size_t at = (size_t)sprintf(req, "GET /x HTTP/1.1\r\nHost: x\r\n");
    while (at < IPPC_MAX_REQUEST_HEAD + 100)
        at += (size_t)sprintf(req + at, "X-A: b\r\n");
    assert_int_equal(acceptor_classify(req, at, &secrets, &v), ACCEPTOR_REFUSE);
    assert_int_equal(v.status, 431);
    free(req);
}

/* Every prefix of a request waits (or, for a bad one, already refuses the same way); the
 * acceptor relies on a verdict never changing as more bytes come. */
static void test_prefixes_wait_or_agree(void **state)
{
    (void)state;
    const char *requests[] = {
        upgrade("/ws?token=" TOKEN, ""),       "GET /api/v1/info HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "GET /x HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET /x HTTP/1.1\nHost: x\n\n",
    };
    for (size_t r = 0; r < sizeof requests / sizeof *requests; r++) {
        char whole_copy[4096];
        snprintf(whole_copy, sizeof whole_copy, "%s", requests[r]);
        acceptor_verdict whole, part;
        size_t len = strlen(whole_copy);
        acceptor_kind want = acceptor_classify(whole_copy, len, &secrets, &whole);
        assert_true(want != ACCEPTOR_NEED_MORE);
        for (size_t n = 0; n < len; n++) {
            char *copy = test_malloc(n ? n : 1);
            memcpy(copy, whole_copy, n);
            acceptor_kind kind = acceptor_classify(copy, n, &secrets, &part);
            test_free(copy);
            if (kind != ACCEPTOR_NEED_MORE && (kind != want || part.status != whole.status))
                print_error("prefix %zu of request %zu: %d/%d, whole: %d/%d\n", n, r, kind,
                            part.status, want, whole.status);
            assert_true(kind == ACCEPTOR_NEED_MORE ||
                        (kind == want && part.status == whole.status));
        }
    }
    acceptor_verdict v;
    assert_int_equal(acceptor_classify("", 0, &secrets, &v), ACCEPTOR_NEED_MORE);
    assert_int_equal(classify("GET /ws HTTP/1.1\r\nHost: x\r\n", &v), ACCEPTOR_NEED_MORE);
    assert_int_equal(classify("GET /ws HTTP/1.1\r\nHost: x\r\n\r", &v), ACCEPTOR_NEED_MORE);
}

/* The refusal on the wire: HTTP/1.1, JSON error body of the stated length, close. */
static void check_answer(const char *request, int status)
{
    acceptor_verdict v;
    assert_int_equal(classify(request, &v), ACCEPTOR_REFUSE);
    char out[1024];
    size_t n = acceptor_answer(&v, out, sizeof out);
    assert_true(n > 0 && n < sizeof out);
    out[n] = '\0';
    char first[64];
    snprintf(first, sizeof first, "HTTP/1.1 %d ", status);
    assert_memory_equal(out, first, strlen(first));
    assert_non_null(strstr(out, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
    const char *body = strstr(out, "\r\n\r\n");
    assert_non_null(body);
    body += 4;
    const char *cl = strstr(out, "Content-Length: ");
    assert_non_null(cl);
    assert_int_equal(strtol(cl + 16, NULL, 10), (long)strlen(body));
    json_error_t jerr;
    json_t *doc = json_loads(body, 0, &jerr);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "error"), "code")),
                        v.code);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(doc, "error"), "message")), v.message);
    json_decref(doc);
    if (status == 401)
        assert_non_null(strstr(out, "\r\nWWW-Authenticate: Bearer"));
    if (status == 426)
        assert_non_null(strstr(out, "\r\nUpgrade: websocket\r\n"));
    /* Too small a buffer: nothing half-written. */
    assert_int_equal(acceptor_answer(&v, out, 40), 0);
}

static void test_answers(void **state)
{
    (void)state;
    check_answer(upgrade("/ws", ""), 401);
    check_answer("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426);
    check_answer("GET /ws/x HTTP/1.1\r\nHost: x\r\n\r\n", 404);
    check_answer("POST /ws HTTP/1.1\r\nHost: x\r\n\r\n", 405);
    check_answer("GET /x\x01", 400);
    acceptor_verdict v = {.kind = ACCEPTOR_REFUSE, .status = 400, .code = ERR_BAD_REQUEST};
    snprintf(v.message, sizeof v.message, "quote \" backslash \\ tab \t bell \a high \xc3\xa9");
    char out[1024];
    size_t n = acceptor_answer(&v, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    json_t *doc = json_loads(strstr(out, "\r\n\r\n") + 4, 0, NULL);
    assert_non_null(doc); /* escaped into valid JSON */
    json_decref(doc);
}

/* ------------------------------------------------ acceptor_run on loopback */

/* What the routes received, in order. */
typedef struct handed {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int fds[64];
    int kind[64];
    int n;
} handed;

static void record(handed *h, int fd, int kind)
{
    pthread_mutex_lock(&h->lock);
    if (h->n < 64) {
        h->fds[h->n] = fd;
        h->kind[h->n] = kind;
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
    record(arg, fd, ACCEPTOR_HTTP);
}

static void to_ws(void *arg, int fd, const acceptor_verdict *v)
{
    assert_true(v->kind == ACCEPTOR_WS_CLIENT || v->kind == ACCEPTOR_WS_ENGINE);
    assert_true(v->head_len > 0);
    record(arg, fd, v->kind);
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
    acceptor_config cfg;
} run_args;

static void *run_thread(void *arg)
{
    run_args *a = arg;
    acceptor_run(a->listen_fd, a->stop_fd, &a->routes, &a->cfg);
    return NULL;
}

typedef struct live_acceptor {
    handed h;
    run_args args;
    int port;
    int stop_pipe[2];
    pthread_t thread;
} live_acceptor;

static int start_live(void **state, size_t max_pending, size_t per_ip, int timeout_ms)
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
    l->args.cfg = (acceptor_config){.secrets = secrets,
                                    .max_pending = max_pending,
                                    .max_pending_per_ip = per_ip,
                                    .head_timeout_ms = timeout_ms};
    if (pthread_create(&l->thread, NULL, run_thread, &l->args) != 0)
        return -1;
    *state = l;
    return 0;
}

static int setup_live(void **state)
{
    return start_live(state, 0, 0, 0);
}

/* Small caps and a short head timeout, to see them work. */
static int setup_small(void **state)
{
    return start_live(state, 8, 4, 400);
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
    assert_int_equal(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

/* The handed socket still holds every byte the client sent (peeking consumed
 * nothing). */
static void expect_unread(int fd, const char *text)
{
    char buf[2048];
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

/* Everything the server sends until it closes (up to 5 s); returns the length
 * or -1 if it did not close. */
static ssize_t read_to_close(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (int spins = 0; spins < 500; spins++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10) <= 0)
            continue;
        ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n <= 0) {
            buf[got] = '\0';
            return (ssize_t)got;
        }
        got += (size_t)n;
    }
    return -1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int handed_count(handed *h)
{
    pthread_mutex_lock(&h->lock);
    int n = h->n;
    pthread_mutex_unlock(&h->lock);
    return n;
}

static void test_run_routes_by_head(void **state)
{
    live_acceptor *l = *state;
    /* A silent client first: it must not hold up the ones behind it. */
    int silent = client(l->port);
    int gone = client(l->port);
    close(gone); /* closes without a word: dropped, never handed over */

    const char *rest_req = "GET /api/v1/info HTTP/1.1\r\nHost: x\r\n\r\n";
    int rest = client(l->port);
    say(rest, rest_req);
    int i = wait_handed(&l->h, 1);
    assert_int_equal(i, 0);
    assert_int_equal(l->h.kind[i], ACCEPTOR_HTTP);
    expect_unread(l->h.fds[i], rest_req);

    char engine_req[4096];
    snprintf(engine_req, sizeof engine_req, "%s",
             upgrade("/engine", "Sec-WebSocket-Protocol: ippc.engine.v1\r\nAuthorization: "
                                "Bearer " KEY "\r\n"));
    int engine = client(l->port);
    say(engine, engine_req);
    i = wait_handed(&l->h, 2);
    assert_int_equal(i, 1);
    assert_int_equal(l->h.kind[i], ACCEPTOR_WS_ENGINE);
    expect_unread(l->h.fds[i], engine_req);

    /* Spoken in pieces: undecided until the blank line. */
    char ws_req[4096];
    snprintf(ws_req, sizeof ws_req, "%s", upgrade("/ws?token=" TOKEN, ""));
    size_t cut = strlen(ws_req) - 3;
    int slow = client(l->port);
    char first[4096];
    snprintf(first, sizeof first, "%.*s", (int)cut, ws_req);
    say(slow, first);
    sleep_ms(100);
    assert_int_equal(handed_count(&l->h), 2);
    say(slow, ws_req + cut);
    i = wait_handed(&l->h, 3);
    assert_int_equal(i, 2);
    assert_int_equal(l->h.kind[i], ACCEPTOR_WS_CLIENT);
    expect_unread(l->h.fds[i], ws_req);

    assert_int_equal(handed_count(&l->h), 3); /* the silent and the closed one: not handed */
    close(silent);
    close(rest);
    close(engine);
    close(slow);
}

/* Regression (issue 8, items 3 and 7): refusals are the acceptor's, as JSON HTTP/1.1,
 * and the connection is closed after the answer; nothing is handed over. */
static void test_run_answers_refusals(void **state)
{
    live_acceptor *l = *state;
    struct {
        const char *request;
        const char *status_line;
    } cases[] = {
        {"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 426 "},
        {"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: " WSKEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 401 "},
        {"GET /ws/x HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 "},
        {"\x16\x03\x01\x02\x00", "HTTP/1.1 400 "},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int fd = client(l->port);
        say(fd, cases[c].request);
        char buf[4096];
        ssize_t n = read_to_close(fd, buf, sizeof buf);
        close(fd);
        assert_true(n > 0);
        assert_memory_equal(buf, cases[c].status_line, strlen(cases[c].status_line));
        assert_non_null(strstr(buf, "\r\n\r\n{\"error\":{\"code\":"));
    }
    /* A request line over the limit, sent in one piece with its body. */
    size_t big = IPPC_MAX_REQUEST_LINE + 100;
    char *req = malloc(big + 64);
    assert_non_null(req);
    memcpy(req, "GET /", 5);
    memset(req + 5, 'a', big);
    strcpy(req + 5 + big, " HTTP/1.1\r\nHost: x\r\n\r\n");
    int fd = client(l->port);
    say(fd, req);
    free(req);
    char buf[4096];
    assert_true(read_to_close(fd, buf, sizeof buf) > 0);
    close(fd);
    assert_memory_equal(buf, "HTTP/1.1 414 ", 13);
    assert_int_equal(handed_count(&l->h), 0);
}

/* A connection gets head_timeout_ms to send its head, silent or half-spoken. */
static void test_run_head_timeout(void **state)
{
    live_acceptor *l = *state;
    int silent = client(l->port);
    int partial = client(l->port);
    say(partial, "GET /api/v1/info HTTP/1.1\r\nHo");
    char buf[64];
    assert_true(read_to_close(silent, buf, sizeof buf) == 0); /* closed, nothing said */
    /* A peer that spoke but never finished its head is told why: 408. */
    char answer[512];
    ssize_t n = read_to_close(partial, answer, sizeof answer - 1);
    assert_true(n > 0);
    answer[n] = '\0';
    assert_non_null(strstr(answer, "HTTP/1.1 408 Request Timeout\r\n"));
    assert_non_null(strstr(answer, "\"code\":\"request_timeout\""));
    close(silent);
    close(partial);
    assert_int_equal(handed_count(&l->h), 0);
}

/* 1 if the server has closed fd (EOF or reset) within wait_ms. */
static int closed_by_server(int fd, int wait_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0)
        return 0;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* Regression (issue 8, item 4): 1,024 silent connections filled the acceptor and every
 * newcomer waited (10 s each).  Now a full acceptor drops its oldest silent connection
 * and serves the newcomer at once. */
static void test_bug_silent_connections_stall_everyone(void **state)
{
    live_acceptor *l = *state; /* max 8 waiting, 4 per address, 400 ms */
    enum { N = 12 };
    int silent[N];
    for (int i = 0; i < N; i++)
        silent[i] = client(l->port);
    sleep_ms(50);
    /* All from 127.0.0.1: only the 4 newest are still waiting, the oldest went. */
    assert_true(closed_by_server(silent[0], 200));
    assert_false(closed_by_server(silent[N - 1], 0));
    const char *req = "GET /api/v1/info HTTP/1.1\r\nHost: x\r\n\r\n";
    int rest = client(l->port);
    say(rest, req);
    int i = wait_handed(&l->h, 1);
    assert_int_equal(i, 0);
    expect_unread(l->h.fds[i], req);
    /* The newcomer made room by dropping a silent connection, not one that spoke. */
    int speaking = client(l->port);
    say(speaking, "GET /api/v1/info HTTP/1.1\r\n");
    for (int k = 0; k < 6; k++)
        close(client(l->port));
    int quiet[6];
    for (int k = 0; k < 6; k++)
        quiet[k] = client(l->port);
    sleep_ms(50);
    assert_false(closed_by_server(speaking, 0));
    say(speaking, "Host: x\r\n\r\n");
    assert_true(wait_handed(&l->h, 2) == 1);
    for (int k = 0; k < 6; k++)
        close(quiet[k]);
    for (int k = 0; k < N; k++)
        close(silent[k]);
    close(rest);
    close(speaking);
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
    say(engine, upgrade("/engine", "Sec-WebSocket-Protocol: ippc.engine.v1\r\nAuthorization: "
                                   "Bearer " KEY "\r\n"));
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
        cmocka_unit_test(test_client_upgrade_with_each_credential),
        cmocka_unit_test(test_engine_upgrade_needs_the_key),
        cmocka_unit_test(test_bug_engine_subprotocol_without_credential),
        cmocka_unit_test(test_subprotocol_lists),
        cmocka_unit_test(test_bad_upgrades),
        cmocka_unit_test(test_http_requests),
        cmocka_unit_test(test_malformed_heads),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_prefixes_wait_or_agree),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_listen_errors),
        cmocka_unit_test_setup_teardown(test_run_routes_by_head, setup_live, teardown_live),
        cmocka_unit_test_setup_teardown(test_run_answers_refusals, setup_live, teardown_live),
        cmocka_unit_test_setup_teardown(test_run_head_timeout, setup_small, teardown_live),
        cmocka_unit_test_setup_teardown(test_bug_silent_connections_stall_everyone, setup_small,
                                        teardown_live),
        cmocka_unit_test_setup_teardown(test_bug_engine_sockets_without_nodelay, setup_live,
                                        teardown_live),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
